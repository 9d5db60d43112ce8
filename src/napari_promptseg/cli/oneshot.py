"""`promptseg oneshot`: segment what a labelled reference shows (SAT one region, or many instances)."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import PromptsegError
from ..methods.labelling_advice import few_labels_warning
from ._batch import _run_batch
from ._inputs import _expand_images, _say_images_left_out
from ._options import (
    EXIT_CODES_HELP,
    OUTPUT_HELP,
    _add_batch_options,
    _add_model_options,
    _add_stack_options,
    images_help,
)
from ._outputs import _prepare_outputs
from ._progress_line import weights_progress
from ._reference import _reference_labels, stack_reference_plane
from ._report import _finish_image, _model_parameters, _segmenter_meta, _write_report
from ._stacks import (
    _input_stack,
    _instances_level_record,
    _level_record,
    _plane_channel_axis,
    _stack_record,
    plane_name,
)


def _add_oneshot_parser(sub: argparse._SubParsersAction) -> None:
    one = sub.add_parser(
        "oneshot",
        help="segment in TARGETs what a labelled reference shows (SAT one-shot; PerSAM-/Matcher-style)",
        description="Writes OUT/<stem>.tif (labels) per target and OUT/report.json (chosen prompts, scheme scores, "
        "timings). Repeat --reference/--reference-mask for an ensemble over several references.",
        epilog=EXIT_CODES_HELP,
    )
    one.add_argument(
        "targets",
        nargs="+",
        type=Path,
        help=images_help("targets"),
    )
    one.add_argument("-o", "--output", type=Path, required=True, help=OUTPUT_HELP)
    one.add_argument("--reference", type=Path, action="append", required=True, help="reference image (repeatable)")
    one.add_argument(
        "--reference-mask",
        type=Path,
        action="append",
        required=True,
        help="the mask/labels of the --reference of the same rank (non-zero = object; repeatable, one per reference)",
    )
    one.add_argument(
        "--reference-plane",
        type=int,
        metavar="Z",
        help="a stack reference (Z, Y, X[, C]; a time-lapse's frames): the plane its objects are taken from, as the "
        "One-shot widget takes the plane shown (default: the one plane its (Z, Y, X) mask labels; needed for a "
        "plane's (Y, X) mask, or a mask labelling several planes)",
    )
    one.add_argument(
        "--strategy",
        default="sat",
        choices=["sat", "persam", "matcher"],
        help="the one-region method: sat (Segment Any Tissue: a bank of prompt schemes from the reference's matched "
        "features, the best-scored mask kept), persam (PerSAM-style: a location prior from the reference's mean "
        "feature, refined), matcher (Matcher-style: matched patches, sampled prompts, the top masks united) "
        "(default: sat; the many-instances mode has none)",
    )
    one.add_argument(
        "--features",
        default="segmenter",
        help="patch features matched between reference and target: 'segmenter' (the model's encoder) or "
        "'dinov2:<dir or hub id>' (default: %(default)s)",
    )
    one.add_argument(
        "--ensemble",
        default="vote",
        choices=["vote", "union"],
        help="combining several references: vote keeps the pixels whose mean probability is above 0.5, union any "
        "reference's mask (default: %(default)s)",
    )
    one.add_argument("--keep-largest", action="store_true", help="keep only the largest connected component")
    one.add_argument(
        "--use-points",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add the prompt schemes' points to their boxes (default: the model's: off for litemedsam, trained on "
        "boxes only; on for SAM)",
    )
    one.add_argument(
        "--instances",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="many-instances mode: every object like the reference's labelled objects, as instance labels "
        "(default: on when the reference labels hold 3 or more objects, ids or separate components, or with "
        "--partial-labels)",
    )
    one.add_argument(
        "--partial-labels",
        action="store_true",
        help="the reference mask labels only some of its objects (examples): background is learned only near them, "
        "as segment --find-all does, and every object like them is found (many instances). Without it every "
        "unlabelled pixel of the reference is taught as background: label all its objects",
    )
    one.add_argument(
        "--object-size",
        type=float,
        metavar="PX",
        help="typical object diameter in pixels; sets the working scale (default: measured on the reference's "
        "objects, and on each target when its objects differ)",
    )
    one.add_argument("--overlay", action="store_true", help="also write OUT/<stem>_overlay.png")
    _add_stack_options(one, seeds="segment the reference's objects")
    _add_model_options(one)
    _add_batch_options(one)
    one.set_defaults(func=cmd_oneshot)


def cmd_oneshot(args: argparse.Namespace) -> int:
    if len(args.reference) != len(args.reference_mask):
        raise PromptsegError(
            f"{len(args.reference)} --reference but {len(args.reference_mask)} --reference-mask; give one mask each"
        )
    if args.partial_labels and args.instances is False:
        # refused as `promptseg library add` refuses it: the one region of SAT would drop --partial-labels unsaid
        raise PromptsegError(
            "--partial-labels (the reference labels only some of its objects) applies to the many-instances mode, "
            "and --no-instances asks for one region; drop one of them"
        )
    targets = _expand_images(args.targets)
    args.reference = [p.absolute() for p in args.reference]  # workers may run in another directory
    args.reference_mask = [p.absolute() for p in args.reference_mask]
    targets = _without_reference_masks(targets, args.reference_mask)
    t0 = time.perf_counter()
    _prepare_outputs(args, targets, also_read=[*args.reference, *args.reference_mask])
    # a reference TIFF's images after its first: learned from by nothing (a target's are said in its record)
    warnings = _say_images_left_out(
        [("--reference", p) for p in args.reference] + [("--reference-mask", p) for p in args.reference_mask]
    )
    outcome, code = _run_batch(args, targets, _setup, _process)
    meta = outcome.meta
    instances = meta.get("instances", args.instances)
    mode = "instances" if instances else args.strategy
    objects = meta.get("exemplar_objects")
    few = objects is not None and few_labels_warning(objects, args.partial_labels, "pass --partial-labels")
    if few:
        warnings.append(few)
        print(f"warning: {few}", file=sys.stderr)
    ignored = _one_region_options(args) if instances else []
    if ignored:  # the instances pipeline has no strategy, points or feature extractor: they were dropped unsaid
        said = f"{', '.join(ignored)} ignored: {'it sets' if len(ignored) == 1 else 'they set'} the one-region route"
        said += ", and the many-instances mode ran (--no-instances for one region)"
        warnings.append(said)
        print(f"warning: {said}", file=sys.stderr)
    if args.reference_plane is not None and not any(z is not None for z in meta.get("reference_planes") or [None]):
        said = "--reference-plane ignored: it picks a stack reference's plane, and the references are 2D images"
        warnings.append(said)
        print(f"warning: {said}", file=sys.stderr)
    # SAT reads the whole image: the size was dropped unsaid (--propagate decodes its planes at it)
    if not instances and args.object_size is not None and not args.propagate:
        said = "--object-size ignored: it sets the many-instances mode's working scale, and one region ran"
        warnings.append(said)
        print(f"warning: {said}", file=sys.stderr)
    _write_report(
        args.output,
        device=args.device,
        command="oneshot",
        model=meta.get("model", args.model),
        encoder_precision=meta.get("encoder_precision"),
        route=f"one-shot reference ({mode}, features: {meta.get('features', args.features)})",
        parameters={
            "references": [str(p) for p in args.reference],
            "reference_masks": [str(p) for p in args.reference_mask],
            "reference_planes": meta.get("reference_planes"),
            "mode": mode,
            "instances": instances,
            "instances_chosen_by": (
                "flag"
                if args.instances is not None
                else "--partial-labels"
                if args.partial_labels
                else "reference labels"
            ),
            "partial_labels": args.partial_labels,
            "object_size": args.object_size,
            **{k: v for k, v in meta.items() if k.startswith("exemplar_")},
            "strategy": args.strategy,
            "features": args.features,
            "ensemble": args.ensemble,
            "keep_largest": args.keep_largest,
            "use_points": args.use_points,
            "plane": args.plane,
            "time": args.time,
            "propagate": args.propagate,
            "stop_iou": args.stop_iou,
            "output_format": args.output_format,
            "labels_name": args.labels_name,
            **_model_parameters(args, meta),
        },
        images=outcome.records,
        warnings=warnings,
        timings_s={"model_load": meta.get("setup_s"), "total": round(time.perf_counter() - t0, 4)},
        batch=outcome.summary,
    )
    outcome.finish()
    return code


def _without_reference_masks(targets: list[Path], masks: list[Path]) -> list[Path]:
    """The targets without the reference masks (kept beside the targets, a folder of them named them too): a mask
    is no image to segment."""
    known = {m.resolve() for m in masks}
    skipped = [t for t in targets if t.resolve() in known]
    for mask in skipped:
        print(f"skipped the --reference-mask {mask.absolute()} among the targets: a mask, no target", file=sys.stderr)
    kept = [t for t in targets if t not in skipped]
    if not kept:
        raise PromptsegError(f"no target: {', '.join(map(str, targets))} named only the --reference-mask")
    return kept


@dataclass
class _OneShot:
    """What every worker prepares once: models, references, and the exemplars of the many-instances mode."""

    segmenter: object
    extractor: object | None  # None in the many-instances mode
    references: list
    masks: list
    exemplars: object | None


def _setup(args: argparse.Namespace) -> tuple[_OneShot, dict]:
    import numpy as np

    from ..batch.engine import method_progress
    from ..io import read_image
    from ..io.multiscale import read_channel_axis, read_image_named
    from ..methods.instances import fit_exemplars, is_many_objects, known_near_labels, reference_objects
    from ..methods.labelling_advice import FEW_EXEMPLARS
    from ..models import load_segmenter
    from ..models.features import load_feature_extractor
    from ..models.preprocessing import as_channels_last

    segmenter = load_segmenter(
        args.model, weights=args.weights, device=args.device, progress=weights_progress(args.model)
    )
    # a Fiji composite's named channel axis (C, Y, X), as the targets read it
    # a given --channel-axis counts in each file's order (a pyramid's is read channels last): every reference's
    # channels go last, as a target's do where it is compared with them (_segment), so one axis fits them all
    read_axes = [read_channel_axis(p, args.channel_axis) for p in args.reference]
    references = [read_image_named(p, axis) for p, axis in zip(args.reference, read_axes, strict=True)]
    # contiguous: float sums over a strided view differ in their last bits, and so would the result
    references = [
        r if axis is None else np.ascontiguousarray(np.moveaxis(r, axis, -1))
        for r, axis in zip(references, read_axes, strict=True)
    ]
    reference_axes = [None if axis is None else -1 for axis in read_axes]
    # a stack reference: its labelled plane (or --reference-plane), as the One-shot widget takes a stack layer's
    planes = [
        stack_reference_plane(p, m, r, read_image(m, role="labels"), axis, args.reference_plane)
        for p, m, r, axis in zip(args.reference, args.reference_mask, references, reference_axes, strict=True)
    ]
    references = [r for r, _, _ in planes]
    # every pair is checked before the mode is chosen: a bad second mask is reported as such
    reference_labels = [
        _reference_labels(mask, r, m, p, axis, args.channels)
        for p, m, r, axis, (_, mask, _) in zip(
            args.reference, args.reference_mask, references, reference_axes, planes, strict=True
        )
    ]
    # a reference whose labels hold many objects asks for every such object: instances without a flag
    instances = (
        args.instances if args.instances is not None else args.partial_labels or is_many_objects(reference_labels[0])
    )
    if instances and len(references) > 1:  # said why that mode, and the way on (it was chosen unasked from the labels)
        why = "--instances" if args.instances else "--partial-labels" if args.partial_labels else None
        why = why or f"--reference-mask {args.reference_mask[0]} holds several objects"
        way = "" if args.instances or args.partial_labels else ", or --no-instances for one region from them all"
        raise PromptsegError(
            f"the many-instances mode ({why}) takes one --reference (with its instance labels): give one{way}"
        )
    # the one region's patch features: the many-instances mode reads none (DINOv2's missing weights failed its run)
    extractor = None
    if not instances:
        extractor = load_feature_extractor(
            args.features, segmenter=segmenter, device=args.device, progress=weights_progress(args.features)
        )
    exemplars = None
    if instances:
        exemplars = fit_exemplars(
            segmenter,
            as_channels_last(references[0], channel_axis=reference_axes[0], channels=args.channels, name="reference"),
            reference_labels[0],
            known=known_near_labels(reference_labels[0]) if args.partial_labels else None,
            object_size=args.object_size,
            normalize=args.normalize,
            progress=method_progress(),
        )
    meta = {
        **_segmenter_meta(segmenter),
        "reference_planes": [z for _, _, z in planes],  # None: a 2D reference
        "instances": bool(instances),
        "features": "pixel classifier" if instances else extractor.name,
        "exemplar_object_size_px": None if exemplars is None else round(exemplars.object_size, 2),
    }
    if exemplars is not None:  # what decides which target objects are kept (benchmarks/README.md, eval_instances)
        objects = [i for i in np.unique(reference_objects(reference_labels[0])) if i]
        meta |= {
            "exemplar_objects": len(objects),
            # fewer than that and the classifier is regularised as for a few examples (methods.instances)
            "exemplar_few_objects": len(objects) < FEW_EXEMPLARS,
            "exemplar_candidates": exemplars.candidates,
            # heavier when the reference's objects touch: its labels teach splitting touching objects
            "exemplar_interior_weight": exemplars.interior_weight,
            "exemplar_min_area_px": round(exemplars.min_area, 1),
            "exemplar_min_confidence": round(exemplars.min_score, 4),
        }
    masks = [labels > 0 for labels in reference_labels]
    return _OneShot(segmenter, extractor, references, masks, exemplars), meta


def _one_region_options(args: argparse.Namespace) -> list[str]:
    """The options given that only SAT's one region uses (the many-instances mode ignores them)."""
    given = [
        (f"--strategy {args.strategy}", args.strategy != "sat"),
        (f"--features {args.features}", args.features != "segmenter"),
        ("--keep-largest", args.keep_largest),
        ("--use-points" if args.use_points else "--no-use-points", args.use_points is not None),
    ]
    return [option for option, on in given if on]


def _segment(
    args: argparse.Namespace,
    one: _OneShot,
    image,
    name: str,
    channel_axis: int | None,
    factor=1.0,
):
    """One 2D target (a pyramid level ``factor`` times smaller than full resolution); a stack's planes in many-instances
    mode are :func:`_stack_planes`'s."""
    import numpy as np

    from ..batch.engine import method_progress
    from ..methods.instances import level_object_size, segment_with_exemplars
    from ..methods.oneshot import segment_like
    from ..models.preprocessing import as_channels_last

    progress = method_progress()
    if one.exemplars is not None:
        hwc = as_channels_last(image, channel_axis=channel_axis, channels=args.channels, name=name)
        size = level_object_size(one.exemplars, args.object_size, factor)
        source = "object size" if args.object_size else "reference objects"
        return segment_with_exemplars(
            one.segmenter, one.exemplars, hwc, object_size=size, size_source=source, name=name, progress=progress
        )
    if channel_axis is not None:  # channels last, as the references were read (_setup): one axis for them all
        image, channel_axis = np.moveaxis(image, channel_axis, -1), -1
    return segment_like(
        one.references,
        one.masks,
        image,
        segmenter=one.segmenter,
        extractor=one.extractor,
        strategy=args.strategy,
        ensemble=args.ensemble,
        keep_largest=args.keep_largest,
        use_points=args.use_points,
        warn_many=False,  # one region was chosen (--no-instances, or several references)
        channel_axis=channel_axis,
        channels=args.channels,
        normalize=args.normalize,
        names=[name],
        progress=progress,
    )[0]


def _stack_planes(args: argparse.Namespace, one: _OneShot, stack, stack_axis: str | None):
    """Many instances over a stack's planes: --object-size, else one size for them all
    (:func:`..methods.instances.stack_planes.stack_planes`, as the console's and the One-shot widget's stacks)."""
    from ..methods.instances.stack_planes import stack_planes

    return stack_planes(
        one.segmenter,
        one.exemplars,
        stack,
        object_size=args.object_size,
        channel_axis=_plane_channel_axis(args),
        channels=args.channels,
        stack_axis=stack_axis,
    )


def _process(args: argparse.Namespace, one: _OneShot, path: Path, image) -> dict:
    import numpy as np

    from ..methods.oneshot import target_file_level, target_scale
    from ..tiling import level_to_full

    if (stacked := _input_stack(args, image, path)) is not None:
        stack, axes = stacked
        planes: list = []  # the stack's planes at full resolution: one object size, measured once

        def plane_labels(plane, z: int, factor: float = 1.0):
            # the result, with its warnings; on a stack pyramid's level, the objects sought at the reference's size
            # there, as a 2D pyramid's level is (not measured on a full-resolution plane)
            name = plane_name(path, z, axes)
            if one.exemplars is not None and factor == 1.0:
                from ..batch.engine import method_progress

                if not planes:
                    planes.append(_stack_planes(args, one, stack, axes.planes))
                return planes[0].segment(plane, name, method_progress())
            return _segment(args, one, plane, name, _plane_channel_axis(args), factor)

        def plane_scale(plane_shape: tuple[int, int]) -> float:
            # a stack pyramid's planes read at the level a 2D target pyramid of their size is read at
            objects = one.exemplars.object_size if one.exemplars is not None else None
            return target_scale(plane_shape, one.segmenter.input_size, objects)

        return _stack_record(args, path, image, plane_labels, one.segmenter, axes=axes, plane_scale=plane_scale)
    # a pyramid is read at the level of the objects' working scale (many instances), else of the whole image
    size = one.exemplars.object_size if one.exemplars is not None else None  # --object-size, else the objects'
    level, index, factor = target_file_level(path, image, one.segmenter.input_size, size)
    result = _segment(args, one, level, str(path), args.channel_axis, factor)
    if one.exemplars is not None:
        return _instances_level_record(args, path, image, result, index, factor)
    record, labels = _level_record(args, path, image, result.labels, index, factor)
    record |= {
        "objects": int(result.mask.any()),
        "area_px": int((labels > 0).sum()),
        "score": round(float(result.score), 4),
        "transfer": round(float(result.transfer), 4),  # 0: the reference does not look like this image's kind
        "positive_points_xy": np.round(level_to_full(result.positives, factor), 1).tolist(),
        "negative_points_xy": np.round(level_to_full(result.negatives, factor), 1).tolist(),
        "boxes_xyxy": np.round(level_to_full(result.boxes, factor), 1).tolist(),
        "schemes": result.schemes,
        "timings_s": {k: round(v, 4) for k, v in result.timings.items()},
        "warnings": result.warnings,
    }
    if not result.mask.any():
        record["reason"] = "; ".join(result.warnings) or "the chosen prompts gave an empty mask"
    _finish_image(args, path, image, labels, record, f"{record['area_px']} px, score {record['score']}")
    return record
