"""`promptseg` command line. Every subcommand calls the same functions as the Python API and the widgets.

Output convention (all subcommands): ``-o OUT`` is a directory; each input image gives ``OUT/<stem>.tif``
(uint16/uint32 instance labels, 0 = background) and the run writes ``OUT/report.json``.

Exit codes: 0 every output was written (an input where nothing was found, or whose processing failed, gets an empty
label image and its reason in report.json); 1 some input could not be read, so it has no output (the others do);
2 bad invocation, input that stops the whole run, or every input failed (one-line reason); 130 cancelled.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__
from .errors import CancelledError, PromptsegError, WeightsError


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="litemedsam", help="name from `promptseg models` (default: %(default)s)")
    parser.add_argument("--weights", help="explicit weights file (e.g. a fine-tuned checkpoint)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: %(default)s)")
    parser.add_argument("--channel-axis", type=int, help="axis of the channels in a multichannel image")
    parser.add_argument("--channels", type=int, nargs="+", help="up to three channels to use (after --channel-axis)")
    parser.add_argument(
        "--normalize", default="auto", choices=["auto", "percentile", "minmax", "none"], help="intensity scaling"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="promptseg", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="list models and whether their weights are available")
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.set_defaults(func=cmd_models)

    seg = sub.add_parser("segment", help="segment images from boxes and points (pixel x = column, y = row)")
    seg.add_argument("images", nargs="+", type=Path, help="2D image files")
    seg.add_argument("-o", "--output", type=Path, required=True, help="output directory")
    seg.add_argument("--box", nargs=4, type=float, action="append", default=[], metavar=("X0", "Y0", "X1", "Y1"))
    seg.add_argument("--point", nargs=2, type=float, action="append", default=[], metavar=("X", "Y"))
    seg.add_argument("--negative-point", nargs=2, type=float, action="append", default=[], metavar=("X", "Y"))
    seg.add_argument(
        "--find-all",
        action="store_true",
        help="find every object like the boxed ones (the boxes are examples; needs a few --box)",
    )
    seg.add_argument(
        "--object-size",
        type=float,
        metavar="PX",
        help="typical object diameter in pixels; sets the working scale (default: from the boxes)",
    )
    seg.add_argument("--overlay", action="store_true", help="also write OUT/<stem>_overlay.png")
    _add_model_options(seg)
    seg.set_defaults(func=cmd_segment)

    reg = sub.add_parser(
        "register",
        help="register MOVING onto FIXED from corresponding regions (Tell2Reg) and/or intensity (SimpleITK)",
        description="Writes OUT/moving_warped.tif, OUT/displacement.tif ((H, W, 2) float32 dx, dy in pixels on the "
        "fixed grid: fixed pixel x corresponds to moving pixel x + u(x)), OUT/landmarks_warped.csv (moving landmarks "
        "mapped into the fixed frame) and OUT/report.json (TRE/rTRE before and after).",
    )
    reg.add_argument("fixed", type=Path, help="fixed (target) 2D image")
    reg.add_argument("moving", type=Path, help="moving (source) 2D image, warped onto the fixed grid")
    reg.add_argument("-o", "--output", type=Path, required=True, help="output directory")
    reg.add_argument(
        "--prompt",
        action="append",
        default=[],
        help="text prompt naming regions to pair (repeatable: --prompt gland --prompt nuclei; 'gland, nuclei' is "
        "two phrases of one prompt); 'auto' (default) = automatic regions matched by embedding similarity",
    )
    reg.add_argument(
        "--text-route",
        default="auto",
        choices=["auto", "groundingdino", "clipseg", "library"],
        help="what answers the text prompts: the first available of GroundingDINO, CLIPSeg, the reference library "
        "(default: %(default)s)",
    )
    reg.add_argument("--library", type=Path, help="reference library directory (default: the user library)")
    reg.add_argument("--box-threshold", type=float, default=0.35, help="GroundingDINO box threshold (%(default)s)")
    reg.add_argument("--text-threshold", type=float, default=0.25, help="GroundingDINO text threshold (%(default)s)")
    reg.add_argument("--heatmap-threshold", type=float, default=0.5, help="CLIPSeg threshold (%(default)s)")
    reg.add_argument(
        "--method",
        default="prompts+intensity",  # = methods.registration.DEFAULT_METHOD (not imported here: torch is slow)
        choices=["prompts", "prompts+intensity", "intensity"],
        help="prompts: corresponding regions (Tell2Reg); intensity: SimpleITK; prompts+intensity: SimpleITK from "
        "the region start and from its own, the better by mutual information (default: %(default)s)",
    )
    reg.add_argument("--landmarks-fixed", type=Path, help="fixed-image landmarks (ANHIR CSV ',X,Y' or .pts)")
    reg.add_argument("--landmarks-moving", type=Path, help="moving-image landmarks, same order as the fixed ones")
    reg.add_argument(
        "--truncate-landmarks",
        action="store_true",
        help="compare the first min(n) landmarks when the counts differ (as ANHIR does)",
    )
    reg.add_argument("--similarity", type=float, default=0.8, help="region-pair cosine threshold (%(default)s)")
    reg.add_argument("--smoothness", type=float, help="bending-energy weight of the dense field")
    reg.add_argument("--no-dense", action="store_true", help="affine only (no dense field) for the prompt method")
    _add_model_options(reg)
    reg.set_defaults(func=cmd_register)
    _add_oneshot_parser(sub)
    _add_text_parser(sub)
    _add_library_parser(sub)
    return parser


def cmd_models(args: argparse.Namespace) -> int:
    from .models.registry import MODELS, cache_dir, weights_status

    rows = []
    for card in MODELS.values():
        status, path = weights_status(card)
        rows.append(
            {
                "name": card.name,
                "role": card.role,
                "weights": status,
                "path": str(path) if path else str(cache_dir() / card.filename),
                "size": card.size,
                "sha256": card.sha256,
                "licence": card.licence,
                "source": card.url or (card.package_resource[0] if card.package_resource else None),
                "description": card.description,
                "citation": card.citation,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"weights cache: {cache_dir()}")
    for row in rows:
        mark = "available" if row["weights"] != "missing" else "not downloaded"
        print(f"{row['name']:<24} {row['role']:<13} {mark:<15} {row['description']}")
        print(f"{'':<24} {'':<13} {'':<15} {row['path']}")
    return 0


def _print_progress(done: int, total: int | None) -> None:
    mb = done / 2**20
    text = f"\rdownloading weights: {mb:.1f} MB" + (f" / {total / 2**20:.1f} MB" if total else "")
    print(text, end="", file=sys.stderr, flush=True)


def cmd_segment(args: argparse.Namespace) -> int:
    from .io import write_labels
    from .methods.instances import find_all_like
    from .methods.interactive import segment_prompts
    from .models import load_segmenter

    if not args.box and not args.point:
        raise PromptsegError("give at least one --box X0 Y0 X1 Y1 or --point X Y")
    if args.find_all and not args.box:
        raise PromptsegError("--find-all needs the boxes of a few example objects (--box X0 Y0 X1 Y1, repeated)")
    missing = [str(p) for p in args.images if not p.is_file()]
    if missing:
        raise PromptsegError(f"input image not found: {', '.join(missing)}")
    t0 = time.perf_counter()
    segmenter = load_segmenter(args.model, weights=args.weights, device=args.device, progress=_print_progress)
    load_s = time.perf_counter() - t0
    args.output.mkdir(parents=True, exist_ok=True)

    def process(path: Path, image) -> dict:
        if args.find_all:
            found = find_all_like(
                image,
                args.box,
                segmenter=segmenter,
                object_size=args.object_size,
                channel_axis=args.channel_axis,
                channels=args.channels,
                normalize=args.normalize,
                name=str(path),
            )
            return _instances_record(args, path, image, found)
        result = segment_prompts(
            image,
            segmenter,
            boxes=args.box,
            positive_points=args.point,
            negative_points=args.negative_point,
            object_size=args.object_size,
            channel_axis=args.channel_axis,
            channels=args.channels,
            normalize=args.normalize,
            name=str(path),
        )
        out = write_labels(args.output / f"{path.stem}.tif", result.labels)
        record = {
            "input": str(path),
            "output": str(out),
            "shape": list(image.shape),
            "objects": int(len(result.scores)),
            "working_scale": result.scale.summary() if result.scale is not None else None,
            "predicted_iou": [round(float(s), 4) for s in result.scores],
            "timings_s": {k: round(v, 4) for k, v in result.timings.items()},
            "warnings": result.warnings,
        }
        summary = f"{record['objects']} object(s), {sum(result.timings.values()):.2f} s"
        _finish_image(args, path, image, result.labels, record, summary)
        return record

    records, code = _run_batch(args, args.images, process)
    _write_report(
        args.output,
        command="segment",
        model=segmenter.name,
        route="find all like the boxed objects" if args.find_all else "box/point prompts",
        parameters={
            "boxes": args.box,
            "points": args.point,
            "negative_points": args.negative_point,
            "find_all": args.find_all,
            "object_size": args.object_size,
            "weights": args.weights,
            "device": str(getattr(segmenter, "device", args.device)),
            "channel_axis": args.channel_axis,
            "channels": args.channels,
            "normalize": args.normalize,
        },
        images=records,
        timings_s={"model_load": round(load_s, 4), "total": round(time.perf_counter() - t0, 4)},
    )
    return code


def cmd_register(args: argparse.Namespace) -> int:
    import tifffile

    from .io import read_image
    from .io.landmarks import paired_landmarks, read_landmarks, write_landmarks
    from .methods.registration import RegistrationOptions, image_diagonal, landmark_errors, register

    for path in (args.fixed, args.moving):
        if not path.is_file():
            raise PromptsegError(f"input image not found: {path}")
    if (args.landmarks_fixed is None) != (args.landmarks_moving is None):
        raise PromptsegError("give both --landmarks-fixed and --landmarks-moving, or neither")
    if args.channels is not None or args.normalize != "auto":
        raise PromptsegError("register does not support --channels/--normalize yet; use --channel-axis or RGB images")
    prompts = [p for p in args.prompt if p != "auto"]
    if prompts and args.method == "intensity":
        raise PromptsegError(f"--prompt {prompts[0]!r} needs --method prompts or prompts+intensity, not intensity")
    t0 = time.perf_counter()
    fixed, moving = read_image(args.fixed), read_image(args.moving)
    landmarks = None
    if args.landmarks_fixed is not None:
        lm_fixed, lm_moving = read_landmarks(args.landmarks_fixed), read_landmarks(args.landmarks_moving)
        landmarks = paired_landmarks(lm_fixed, lm_moving, allow_truncate=args.truncate_landmarks)
    options = RegistrationOptions(similarity_threshold=args.similarity, dense=not args.no_dense)
    if args.smoothness is not None:
        options.smoothness = args.smoothness
    segmenter = None
    load_s = 0.0
    if args.method != "intensity":
        from .models import load_segmenter

        segmenter = load_segmenter(args.model, weights=args.weights, device=args.device, progress=_print_progress)
        load_s = time.perf_counter() - t0
    result = register(
        fixed,
        moving,
        prompts or None,
        segmenter=segmenter,
        method=args.method,
        options=options,
        channel_axis=args.channel_axis,
        fixed_name=str(args.fixed),
        moving_name=str(args.moving),
        text_route=args.text_route,
        library=args.library,
        text_options={
            "box_threshold": args.box_threshold,
            "text_threshold": args.text_threshold,
            "heatmap_threshold": args.heatmap_threshold,
            "device": args.device,
        },
    )
    args.output.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(args.output / "moving_warped.tif", result.warp_image(moving), compression="zlib")
    tifffile.imwrite(args.output / "displacement.tif", result.displacement, compression="zlib")
    record: dict[str, object] = {}
    if landmarks is not None:
        fixed_xy, moving_xy = landmarks
        mapped = result.moving_points_to_fixed(moving_xy)
        full = lm_moving.xy.copy()
        full[: len(mapped)] = mapped
        if len(full) > len(mapped):  # unpaired extra points are mapped too: the file keeps every input row
            full[len(mapped) :] = result.moving_points_to_fixed(lm_moving.xy[len(mapped) :])
        write_landmarks(args.output / "landmarks_warped.csv", lm_moving.with_xy(full))
        diagonal = image_diagonal(fixed.shape)
        record = {
            "landmarks_fixed": str(args.landmarks_fixed),
            "landmarks_moving": str(args.landmarks_moving),
            "landmarks_warped": str(args.output / "landmarks_warped.csv"),
            "pairs_compared": len(fixed_xy),
            "image_diagonal": round(diagonal, 2),
            "before": landmark_errors(fixed_xy, moving_xy, diagonal),
            "after": landmark_errors(fixed_xy, mapped, diagonal),
        }
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    summary = f"{args.moving} -> {args.output / 'moving_warped.tif'} ({result.method}, {len(result.pairs)} pairs"
    if record:
        summary += f", TRE {record['before']['tre_mean']:.2f} -> {record['after']['tre_mean']:.2f} px"
    print(summary + ")")
    if result.text_route:
        print(f"text prompts answered by {result.text_route}: {result.text_reason}")
    _write_report(
        args.output,
        command="register",
        model=None if segmenter is None else segmenter.name,
        route=result.method,
        parameters={
            "fixed": str(args.fixed),
            "moving": str(args.moving),
            "prompts": prompts or ["auto"],
            "text_route": args.text_route,
            "library": None if args.library is None else str(args.library),
            "box_threshold": args.box_threshold,
            "text_threshold": args.text_threshold,
            "heatmap_threshold": args.heatmap_threshold,
            "method": args.method,
            "similarity": args.similarity,
            "smoothness": options.smoothness,
            "dense": options.dense,
            "weights": args.weights,
            "device": args.device,
        },
        convention="displacement.tif is (H, W, 2) float32 on the fixed grid, last axis (dx, dy) in pixels: fixed "
        "pixel (x, y) corresponds to moving pixel (x + dx, y + dy); moving_warped = moving(x + u(x)); "
        "landmarks_warped = moving landmarks mapped into the fixed frame (solving x + u(x) = p)",
        shapes={"fixed": list(fixed.shape), "moving": list(moving.shape)},
        region_pairs={
            "count": len(result.pairs),
            # the prompt (text phrase, "<phrase> (all)" for a phrase's union; None: automatic) of each pair
            "prompts": [p.prompt for p in result.pairs],
            "pairing": None if result.pairing is None else vars(result.pairing),
            "dice_before_mean": _mean_or_none(result.pair_dice_before),
            "dice_after_mean": _mean_or_none(result.pair_dice_after),
        },
        landmarks=record or None,
        # which start won the image-similarity (NMI) choice, and every start's score
        start={"chosen": result.start, "scores": {k: round(v, 4) for k, v in result.start_scores.items()}},
        # the joint refinement after the intensity stage: kept only when the image score (NMI) rose
        refinement={k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.refinement.items()} or None,
        # each stage that was checked, accepted or rejected (a degenerate stage gives way to the one before, why here)
        stages=result.stages,
        # text prompts: the route that answered them and why (None for automatic/given regions), per prompt below
        text_route={"route": result.text_route, "reason": result.text_reason} if result.text_route else None,
        prompt_sources=result.prompt_sources,
        warnings=result.warnings,
        timings_s={
            **{k: round(v, 4) for k, v in result.timings.items()},
            "model_load": round(load_s, 4),
            "total": round(time.perf_counter() - t0, 4),
        },
    )
    return 0


def _mean_or_none(values: Sequence[float]) -> float | None:
    return round(float(sum(values) / len(values)), 4) if values else None


IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


def _add_oneshot_parser(sub: argparse._SubParsersAction) -> None:
    one = sub.add_parser(
        "oneshot",
        help="segment in TARGETs what a labelled reference shows (SAT one-shot; PerSAM-/Matcher-style)",
        description="Writes OUT/<stem>.tif (labels) per target and OUT/report.json (chosen prompts, scheme scores, "
        "timings). Repeat --reference/--reference-mask for an ensemble over several references.",
    )
    one.add_argument("targets", nargs="+", type=Path, help="target 2D images or folders of images")
    one.add_argument("-o", "--output", type=Path, required=True, help="output directory")
    one.add_argument("--reference", type=Path, action="append", required=True, help="reference image (repeatable)")
    one.add_argument(
        "--reference-mask", type=Path, action="append", required=True, help="its mask/labels (non-zero = object)"
    )
    one.add_argument("--strategy", default="sat", choices=["sat", "persam", "matcher"])
    one.add_argument(
        "--features", default="segmenter", help="'segmenter' (the model's encoder) or 'dinov2:<dir or hub id>'"
    )
    one.add_argument("--ensemble", default="vote", choices=["vote", "union"], help="combining several references")
    one.add_argument("--keep-largest", action="store_true", help="keep only the largest connected component")
    one.add_argument("--use-points", action=argparse.BooleanOptionalAction, default=None, help="add points to boxes")
    one.add_argument(
        "--instances",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="many-instances mode: every object like the reference's labelled objects, as instance labels "
        "(default: on when the reference labels hold several objects, ids or separate components)",
    )
    one.add_argument(
        "--object-size",
        type=float,
        metavar="PX",
        help="typical object diameter in pixels; sets the working scale (default: measured on the reference's "
        "objects, and on each target when its objects differ)",
    )
    one.add_argument("--overlay", action="store_true", help="also write OUT/<stem>_overlay.png")
    _add_model_options(one)
    one.set_defaults(func=cmd_oneshot)


def _expand_images(paths: list[Path]) -> list[Path]:
    out = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            out.append(path)
        else:
            raise PromptsegError(f"input image not found: {path}")
    if not out:
        raise PromptsegError(f"no image files in {', '.join(map(str, paths))}")
    return out


def cmd_oneshot(args: argparse.Namespace) -> int:
    import numpy as np

    from .io import read_image, write_labels
    from .methods.instances import fit_exemplars, is_many_objects, segment_with_exemplars
    from .methods.oneshot import segment_like
    from .models import load_segmenter
    from .models.features import load_feature_extractor
    from .models.preprocessing import as_channels_last

    if len(args.reference) != len(args.reference_mask):
        raise PromptsegError(
            f"{len(args.reference)} --reference but {len(args.reference_mask)} --reference-mask; give one mask each"
        )
    targets = _expand_images(args.targets)
    t0 = time.perf_counter()
    segmenter = load_segmenter(args.model, weights=args.weights, device=args.device, progress=_print_progress)
    extractor = load_feature_extractor(args.features, segmenter=segmenter, device=args.device)
    load_s = time.perf_counter() - t0
    references = [read_image(p) for p in args.reference]
    reference_labels = [
        _reference_labels(read_image(m), r, m) for m, r in zip(args.reference_mask, references, strict=True)
    ]
    masks = [labels > 0 for labels in reference_labels]
    # a reference whose labels hold many objects asks for every such object: instances without a flag
    instances = args.instances if args.instances is not None else is_many_objects(reference_labels[0])
    if instances and len(references) > 1:
        raise PromptsegError("the many-instances mode takes one --reference (with its instance labels)")
    args.output.mkdir(parents=True, exist_ok=True)
    exemplars = None
    if instances:
        exemplars = fit_exemplars(
            segmenter,
            as_channels_last(references[0], channel_axis=args.channel_axis, channels=args.channels, name="reference"),
            reference_labels[0],
            object_size=args.object_size,
            normalize=args.normalize,
        )

    def process(path: Path, image) -> dict:
        if exemplars is not None:
            hwc = as_channels_last(image, channel_axis=args.channel_axis, channels=args.channels, name=str(path))
            found = segment_with_exemplars(segmenter, exemplars, hwc, object_size=args.object_size, name=str(path))
            return _instances_record(args, path, image, found)
        result = segment_like(
            references,
            masks,
            image,
            segmenter=segmenter,
            extractor=extractor,
            strategy=args.strategy,
            ensemble=args.ensemble,
            keep_largest=args.keep_largest,
            use_points=args.use_points,
            channel_axis=args.channel_axis,
            channels=args.channels,
            normalize=args.normalize,
            names=[str(path)],
        )[0]
        out = write_labels(args.output / f"{path.stem}.tif", result.labels)
        record = {
            "input": str(path),
            "output": str(out),
            "shape": list(image.shape),
            "objects": int(result.mask.any()),
            "area_px": int(result.mask.sum()),
            "score": round(float(result.score), 4),
            "positive_points_xy": np.round(result.positives, 1).tolist(),
            "negative_points_xy": np.round(result.negatives, 1).tolist(),
            "boxes_xyxy": np.round(result.boxes, 1).tolist(),
            "schemes": result.schemes,
            "timings_s": {k: round(v, 4) for k, v in result.timings.items()},
            "warnings": result.warnings,
        }
        if not result.mask.any():
            record["reason"] = "; ".join(result.warnings) or "the chosen prompts gave an empty mask"
        _finish_image(args, path, image, result.labels, record, f"{record['area_px']} px, score {record['score']}")
        return record

    records, code = _run_batch(args, targets, process)
    mode = "instances" if instances else args.strategy
    _write_report(
        args.output,
        command="oneshot",
        model=segmenter.name,
        route=f"one-shot reference ({mode}, features: {'pixel classifier' if instances else extractor.name})",
        parameters={
            "references": [str(p) for p in args.reference],
            "reference_masks": [str(p) for p in args.reference_mask],
            "mode": mode,
            "instances": instances,
            "instances_chosen_by": "flag" if args.instances is not None else "reference labels",
            "object_size": args.object_size,
            "exemplar_object_size_px": None if exemplars is None else round(exemplars.object_size, 2),
            "strategy": args.strategy,
            "features": args.features,
            "ensemble": args.ensemble,
            "keep_largest": args.keep_largest,
            "use_points": args.use_points,
            "weights": args.weights,
            "device": str(getattr(segmenter, "device", args.device)),
            "channel_axis": args.channel_axis,
            "channels": args.channels,
            "normalize": args.normalize,
        },
        images=records,
        timings_s={"model_load": round(load_s, 4), "total": round(time.perf_counter() - t0, 4)},
    )
    return code


def _instances_record(args: argparse.Namespace, path: Path, image, found) -> dict:
    """Write one many-instances result and describe it for report.json (oneshot, segment --find-all)."""
    import numpy as np

    from .io import write_labels

    out = write_labels(args.output / f"{path.stem}.tif", found.labels)
    record = {
        "input": str(path),
        "output": str(out),
        "shape": list(np.shape(image)),
        "objects": int(len(found.scores)),
        "candidates": found.candidates,
        "working_scale": found.scale.summary() if found.scale is not None else None,
        "boxes_xyxy": np.round(found.boxes, 1).tolist(),
        "scores": [round(float(s), 4) for s in found.scores],
        "timings_s": {k: round(v, 4) for k, v in found.timings.items()},
        "warnings": found.warnings,
    }
    if not len(found.scores):
        record["reason"] = "; ".join(found.warnings) or "no object found"
    scale = f", scale {found.scale.scale:.2f} in {found.scale.tiles} tile(s)" if found.scale is not None else ""
    _finish_image(args, path, image, found.labels, record, f"{record['objects']} object(s){scale}")
    return record


def _reference_labels(mask: np.ndarray, image: np.ndarray, path: Path) -> np.ndarray:  # noqa: F821 (lazy numpy)
    """Reference mask/labels as 2D (0 = background, ids kept); JPEG masks are thresholded at 127 (compression blurs
    their edges), so they come back as one binary object."""
    import numpy as np

    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[:2] == image.shape[:2]:
        mask = mask[..., 0]
    if mask.dtype == np.uint8 and path.suffix.lower() in (".jpg", ".jpeg"):
        return mask > 127
    return mask


def _add_text_parser(sub: argparse._SubParsersAction) -> None:
    text = sub.add_parser(
        "text",
        help="segment what a text prompt names (GroundingDINO + SAM, CLIPSeg, or the offline reference library)",
        description="Writes OUT/<stem>.tif (instance labels) per image and OUT/report.json (route, why, boxes, "
        "phrases). The route is the first that can answer: GroundingDINO, CLIPSeg, then the reference library "
        "(`promptseg library add`), unless --route picks one.",
    )
    text.add_argument("prompt", help="what to segment, e.g. 'nuclei' or 'gland, stroma' (phrases split on , . ;)")
    text.add_argument("images", nargs="+", type=Path, help="2D images or folders of images")
    text.add_argument("-o", "--output", type=Path, required=True, help="output directory")
    text.add_argument("--route", default="auto", choices=["auto", "groundingdino", "clipseg", "library"])
    text.add_argument("--grounder", help="GroundingDINO model name from `promptseg models` (default: any available)")
    text.add_argument("--heatmapper", help="CLIPSeg model name from `promptseg models` (default: any available)")
    text.add_argument("--text-weights", help="weights of the text model (checkpoint file or model directory)")
    text.add_argument("--library", type=Path, help="reference library directory (default: the user library)")
    text.add_argument(
        "--template", default="p1", choices=[f"p{i}" for i in range(10)], help="medvlsm prompt level (%(default)s)"
    )
    text.add_argument("--shape", help="prompt attribute for templates p2+, e.g. 'round'")
    text.add_argument("--colour", "--color", dest="colour", help="prompt attribute for templates p3+, e.g. 'pink'")
    text.add_argument("--description", help="prompt attribute for templates p7-p9")
    text.add_argument("--box-threshold", type=float, default=0.35, help="GroundingDINO box threshold (%(default)s)")
    text.add_argument("--text-threshold", type=float, default=0.25, help="GroundingDINO text threshold (%(default)s)")
    text.add_argument("--heatmap-threshold", type=float, default=0.5, help="CLIPSeg threshold (%(default)s)")
    text.add_argument("--no-refine", action="store_true", help="CLIPSeg: threshold only, no SAM refinement")
    text.add_argument("--top-k", type=int, default=3, help="library: exemplars to ensemble (%(default)s)")
    text.add_argument("--min-similarity", type=float, help="library: lowest prompt-to-entry similarity accepted")
    text.add_argument("--overlay", action="store_true", help="also write OUT/<stem>_overlay.png")
    _add_model_options(text)
    text.set_defaults(func=cmd_text)


def cmd_text(args: argparse.Namespace) -> int:
    from .io import write_labels
    from .methods.prompt_templates import PromptAttributes
    from .methods.text import choose_route, segment_text
    from .models import load_segmenter

    images = _expand_images(args.images)
    t0 = time.perf_counter()
    route = choose_route(
        args.route,
        grounder=args.grounder,
        heatmapper=args.heatmapper,
        library=args.library,
        weights=args.text_weights,
        device=args.device,
    )
    segmenter = load_segmenter(args.model, weights=args.weights, device=args.device, progress=_print_progress)
    load_s = time.perf_counter() - t0
    attributes = PromptAttributes(shape=args.shape, colour=args.colour, description=args.description)
    args.output.mkdir(parents=True, exist_ok=True)

    def process(path: Path, image) -> dict:
        result = segment_text(
            image,
            args.prompt,
            route=route,
            segmenter=segmenter,
            template=args.template,
            attributes=attributes,
            box_threshold=args.box_threshold,
            text_threshold=args.text_threshold,
            heatmap_threshold=args.heatmap_threshold,
            refine=not args.no_refine,
            top_k=args.top_k,
            min_similarity=args.min_similarity,
            channel_axis=args.channel_axis,
            channels=args.channels,
            normalize=args.normalize,
            name=str(path),
        )
        out = write_labels(args.output / f"{path.stem}.tif", result.labels)
        record = {"input": str(path), "output": str(out), "shape": list(image.shape), **result.summary()}
        if not record.get("objects"):
            record["reason"] = "; ".join(result.warnings) or f"nothing answered '{args.prompt}'"
        _finish_image(args, path, image, result.labels, record, f"{record['objects']} object(s); {result.reason}")
        return record

    records, code = _run_batch(args, images, process)
    _write_report(
        args.output,
        command="text",
        model=segmenter.name,
        route=route.route,
        text_model=route.name,
        parameters={
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("func", "images", "output", "command")
        },
        images=records,
        timings_s={"model_load": round(load_s, 4), "total": round(time.perf_counter() - t0, 4)},
    )
    return code


def _add_library_parser(sub: argparse._SubParsersAction) -> None:
    lib = sub.add_parser(
        "library",
        help="manage the reference library: named exemplars that answer text prompts offline",
        description="Named one-shot exemplars (image crop + mask + description). `promptseg text --route library` "
        "matches a prompt to their names/descriptions and segments with SAT. Default location: $PROMPTSEG_LIBRARY, "
        "else the user data directory.",
    )
    lib_sub = lib.add_subparsers(dest="library_command", required=True)
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--library", type=Path, help="library directory (default: $PROMPTSEG_LIBRARY or the user one)")

    add = lib_sub.add_parser("add", parents=[where], help="save an exemplar: an image and the mask of one structure")
    add.add_argument("name", help="what the structure is called, e.g. 'gland' (matched against text prompts)")
    add.add_argument("--image", type=Path, required=True, help="2D image file")
    add.add_argument("--mask", type=Path, required=True, help="its mask/labels (non-zero = the structure)")
    add.add_argument("--description", default="", help="optional text; synonyms separated by ',' are matched too")
    add.add_argument("--channel-axis", type=int, help="axis of the channels in a multichannel image")
    add.add_argument("--channels", type=int, nargs="+", help="up to three channels to keep (after --channel-axis)")
    add.add_argument("--pixel-size", type=float, nargs=2, metavar=("DY", "DX"), help="physical pixel size")
    add.add_argument(
        "--instances",
        action="store_true",
        help="the mask marks many objects (e.g. nuclei): a prompt finds every object like them, as instance labels",
    )
    add.add_argument(
        "--margin", type=float, default=None, help="crop margin around the mask, x its box's longer side (default 1.0)"
    )
    add.add_argument("--min-crop", type=int, default=1024, help="smallest crop side in pixels (%(default)s)")
    add.add_argument("--no-crop", action="store_true", help="keep the whole image instead of a crop around the mask")
    add.set_defaults(func=cmd_library_add)

    listing = lib_sub.add_parser("list", parents=[where], help="list the entries")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=cmd_library_list)

    remove = lib_sub.add_parser("remove", parents=[where], help="remove an entry by id or name")
    remove.add_argument("name", help="entry id, or name")
    remove.add_argument("--all", action="store_true", help="remove every entry with this name")
    remove.set_defaults(func=cmd_library_remove)

    export = lib_sub.add_parser("export", parents=[where], help="write the library to one zip file")
    export.add_argument("zip", type=Path, help="FILE.zip to write")
    export.add_argument("--force", action="store_true", help="overwrite FILE.zip if it exists")
    export.set_defaults(func=cmd_library_export)

    imp = lib_sub.add_parser("import", parents=[where], help="merge an exported zip into the library")
    imp.add_argument("zip", type=Path, help="FILE.zip written by `promptseg library export`")
    imp.set_defaults(func=cmd_library_import)

    starter = lib_sub.add_parser(
        "starter",
        parents=[where],
        help="add the starter exemplars built from the bundled samples ('nucleus'); a new default library gets them "
        "on its first text prompt",
    )
    starter.set_defaults(func=cmd_library_starter)


def cmd_library_add(args: argparse.Namespace) -> int:
    from .io import read_image
    from .io.library import DEFAULT_MARGIN, ReferenceLibrary

    for path in (args.image, args.mask):
        if not path.is_file():
            raise PromptsegError(f"input file not found: {path}")
    if args.no_crop and args.margin is not None:
        raise PromptsegError("give --margin or --no-crop, not both")
    image = read_image(args.image)
    mask = _reference_labels(read_image(args.mask), image, args.mask)
    library = ReferenceLibrary.open(args.library)
    entry = library.add(
        args.name,
        image,
        mask,
        args.description,
        source=str(args.image),
        channel_axis=args.channel_axis,
        channels=args.channels,
        pixel_size=args.pixel_size,
        instances=args.instances,
        margin=None if args.no_crop else (DEFAULT_MARGIN if args.margin is None else args.margin),
        min_crop=args.min_crop,
    )
    size = "x".join(str(s) for s in entry.shape[:2][::-1])
    print(f"added '{entry.name}' (id {entry.id}, {size} px crop) to {library.path}")
    return 0


def cmd_library_list(args: argparse.Namespace) -> int:
    from .io.library import ReferenceLibrary

    library = ReferenceLibrary.open(args.library)
    rows = [{k: v for k, v in e.to_json().items() if k != "sha256"} for e in library.entries]
    if args.json:
        print(json.dumps({"library": str(library.path), "entries": rows}, indent=2))
        return 0
    print(f"reference library: {library.path} ({len(rows)} entries)")
    for e in library.entries:
        size = "x".join(str(s) for s in e.shape[:2][::-1])
        described = f"  {e.description}" if e.description else ""
        print(f"{e.name:<20} {e.id:<28} {size:>9} px  {e.source or '-'}{described}")
    return 0


def cmd_library_starter(args: argparse.Namespace) -> int:
    from .io.library import ReferenceLibrary
    from .io.starter import STARTER, add_starter

    library = ReferenceLibrary.open(args.library)
    added = add_starter(library)
    for entry in added:
        print(f"added '{entry.name}' (id {entry.id}, {'many instances' if entry.instances else 'one object'})")
    kept = len(STARTER) - len(added)
    print(f"reference library: {library.path}" + (f" ({kept} starter exemplar(s) already there)" if kept else ""))
    return 0


def cmd_library_remove(args: argparse.Namespace) -> int:
    from .io.library import ReferenceLibrary

    library = ReferenceLibrary.open(args.library)
    for entry in library.remove(args.name, all_with_name=args.all):
        print(f"removed '{entry.name}' (id {entry.id})")
    return 0


def cmd_library_export(args: argparse.Namespace) -> int:
    from .io.library import ReferenceLibrary

    library = ReferenceLibrary.open(args.library)
    path = library.export(args.zip, overwrite=args.force)
    print(f"exported {len(library)} entries from {library.path} to {path}")
    return 0


def cmd_library_import(args: argparse.Namespace) -> int:
    from .io.library import ReferenceLibrary

    result = ReferenceLibrary.import_zip(args.zip, into=args.library)
    for entry in result.added:
        print(f"imported '{entry.name}' (id {entry.id})")
    if result.skipped:
        print(f"skipped (already in the library): {', '.join(result.skipped)}")
    print(f"{len(result.added)} entries added to {result.library.path}")
    return 0


def _finish_image(
    args: argparse.Namespace, path: Path, image: object, labels: object, record: dict, summary: str
) -> None:
    """Per-image tail shared by the segmenting subcommands: optional overlay, warnings, one summary line."""
    from .io import write_overlay

    if args.overlay:
        record["overlay"] = str(write_overlay(args.output / f"{path.stem}_overlay.png", image, labels))
    for warning in record.get("warnings", []):
        print(f"warning: {path}: {warning}", file=sys.stderr)
    print(f"{path} -> {record['output']} ({summary})")


def _write_report(output: Path, **report: object) -> Path:
    path = output / "report.json"
    path.write_text(json.dumps({"version": __version__, **report}, indent=2))
    return path


def _run_batch(
    args: argparse.Namespace, paths: Sequence[Path], process: Callable[[Path, object], dict]
) -> tuple[list[dict], int]:
    """Run ``process(path, image) -> record`` on every input and never lose work: a target that fails (bad file,
    nothing found, an error in a method) gets an empty label image where its shape is known, a record with the
    reason, and the batch goes on. Returns the records and the exit code: 0 when every output was written (some
    may be empty: see each record's ``status``), 1 when an input could not be read and so has no output."""
    import numpy as np

    from .io import read_image, write_labels

    records, unwritten = [], 0
    for path in paths:
        image = None
        try:
            image = read_image(path)
            record = process(path, image)
            record.setdefault("status", "ok" if record.get("objects", 1) else "empty")
        except (CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - one bad target must not stop the batch
            reason = " ".join(str(exc).split()) or type(exc).__name__
            if not isinstance(exc, (PromptsegError, WeightsError)):
                reason = f"{type(exc).__name__}: {reason}"
            record = {"input": str(path), "status": "failed", "reason": reason}
            if image is not None and np.ndim(image) >= 2:
                shape = np.shape(image)[:2]
                record["output"] = str(write_labels(args.output / f"{path.stem}.tif", np.zeros(shape, np.uint16)))
                record["shape"] = list(np.shape(image))
                print(f"{path} -> {record['output']} (empty: {reason})", file=sys.stderr)
            else:
                unwritten += 1
                print(f"{path}: no output: {reason}", file=sys.stderr)
        records.append(record)
    failed = [r for r in records if r["status"] == "failed"]
    empty = [r for r in records if r["status"] == "empty"]
    if failed or empty:
        print(
            f"{len(records)} input(s): {len(records) - len(failed) - len(empty)} segmented, {len(empty)} with no "
            f"object, {len(failed)} failed ({unwritten} without output); reasons in report.json",
            file=sys.stderr,
        )
    if records and len(failed) == len(records):
        print(f"every input failed; the first: {failed[0]['reason']}", file=sys.stderr)
        return records, 2
    return records, (1 if unwritten else 0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (PromptsegError, WeightsError) as exc:
        reason = " ".join(str(exc).split())  # one line, even when a reader's own message has several
        print(f"promptseg {args.command}: error: {reason}", file=sys.stderr)
        return 2
    except CancelledError:
        print(f"promptseg {args.command}: cancelled", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"\npromptseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
