"""`promptseg register`: read and check the inputs, :func:`~...methods.registration.register`, write the outputs
and report.json together."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import PromptsegError
from .._inputs import _say_images_left_out
from .._outputs import _make_output_dir, absolute_output
from .._progress_line import route_progress, weights_progress
from .._report import _mean_or_none, _write_report
from .inputs import (
    _checked_labels,
    _checked_prompts,
    _pair_axis,
    _registered_level,
    _spatial_shape,
    _without_alpha,
)
from .outputs import (
    ANNOTATIONS_WARPED,
    LABELS_WARPED,
    _check_earlier_outputs,
    _file_sha256,
    _is_earlier_text_output,
    _stale,
    grid_tiff_options,
)

if TYPE_CHECKING:
    from ...batch.progress import StepLine
    from ...methods.registration import RegistrationOptions


def register_settings(args: argparse.Namespace) -> tuple[RegistrationOptions, dict[str, Any]]:
    """The options and text options register() runs with for these arguments, built by the rules the Registration widget
    builds its own with (:func:`~...methods.registration.user_options`,
    :func:`~...methods.registration.text_prompt_options`)."""
    from ...methods.registration import text_prompt_options, user_options

    options = user_options(similarity=args.similarity, smoothness=args.smoothness, dense=not args.no_dense)
    text_options = text_prompt_options(
        box_threshold=args.box_threshold,
        text_threshold=args.text_threshold,
        heatmap_threshold=args.heatmap_threshold,
        device=args.device,
        weights=args.text_weights,  # the text route's weights, as `promptseg text --text-weights` gives them
    )
    return options, text_options


def unused_settings(args: argparse.Namespace, method: str, text_prompts: bool = False) -> list[str]:
    """What the run will not use of the settings given, said as the Registration widget greys them out: the region
    route's (--similarity, --smoothness, --no-dense) with --method intensity, --smoothness with --no-dense, and the
    text routes' thresholds without ``text_prompts`` (--prompt); they were ignored without a word."""
    from ...methods.defaults import BOX_THRESHOLD, HEATMAP_THRESHOLD, PAIR_SIMILARITY, TEXT_THRESHOLD

    def given(*pairs: tuple[str, bool]) -> list[str]:
        return [flag for flag, is_given in pairs if is_given]

    def ignored(flags: list[str]) -> str:  # one option is "it": "--similarity ignored: they set" read wrongly
        return f"{', '.join(flags)} ignored: {'it sets' if len(flags) == 1 else 'they set'}"

    said = []
    region = given(
        ("--similarity", args.similarity != PAIR_SIMILARITY),
        ("--smoothness", args.smoothness is not None),
        ("--no-dense", args.no_dense),
    )
    if method == "intensity" and region:
        said.append(f"{ignored(region)} the region route (--method prompts or prompts+intensity)")
    elif args.no_dense and args.smoothness is not None:
        said.append("--smoothness ignored: it weighs the dense field, which --no-dense leaves out")
    thresholds = given(
        ("--box-threshold", args.box_threshold != BOX_THRESHOLD),
        ("--text-threshold", args.text_threshold != TEXT_THRESHOLD),
        ("--heatmap-threshold", args.heatmap_threshold != HEATMAP_THRESHOLD),
        ("--text-weights", args.text_weights is not None),
    )
    if thresholds and not text_prompts:
        said.append(f"{ignored(thresholds)} how text prompts (--prompt) are answered")
    return said


def _check_roles(args: argparse.Namespace) -> None:
    """Refuse one file in two roles (by any name: a link is the file): fixed and moving (nothing to register; a
    TRE of 0 that says nothing, as the widget refuses one layer for both), or an image as --moving-labels (a photo's
    colours were read as thousands of object ids and carried over without a word)."""
    fixed, moving = args.fixed.resolve(), args.moving.resolve()
    if fixed == moving:
        raise PromptsegError(
            f"fixed and moving are the same file {args.fixed}: give the image to register onto it as the moving one "
            "(a copy registers as the identity, if that is what is wanted)"
        )
    if args.moving_labels is not None:
        labels = args.moving_labels.resolve()
        for role, image in (("moving", moving), ("fixed", fixed)):
            if labels == image:
                raise PromptsegError(
                    f"--moving-labels {args.moving_labels} is the {role} image: give a label image drawn on the moving "
                    "image (an integer id per object, 0 for none); the moving image itself is warped to "
                    "moving_warped.tif"
                )


#: the share of the run's steps shown on stderr that register() takes (the warp and the outputs come after)
REGISTER_SHARE = 0.9


def cmd_register(args: argparse.Namespace) -> int:
    """The run, its steps on stderr as segment's are (a large pair was minutes of silence); the step line is
    cleared however the run ends, before what is said next."""
    from ...batch.progress import StepLine

    steps = StepLine()
    try:
        return _run(args, steps)
    finally:
        steps.close()


def _run(args: argparse.Namespace, steps: StepLine) -> int:
    import tifffile

    from ...io._files import replacing_together, undo_interrupted_replacing
    from ...io.annotations import read_annotations, write_annotations
    from ...io.calibration import in_micrometres, level_pixel_size, pixel_size, pixel_sizes_in_one_unit
    from ...io.images import (
        DISPLACEMENT_FILE,
        REGISTER_LABELS_MARKER,
        REGISTER_MARKER,
        REGISTER_MARKERS,
        is_own_output,
        needs_bigtiff,
    )
    from ...io.landmarks import index_order, is_bigwarp_csv, paired_landmarks, read_landmark_pair, write_landmarks
    from ...io.layer_data import layer_pixel_size
    from ...io.multiscale import moved_channel_position
    from ...methods.registration import (
        image_diagonal,
        landmark_errors,
        landmarks_outside,
        placed_before,
        register,
        resolve_method,
    )
    from ...methods.registration.options import TRE_UNIT, level_record
    from ...methods.registration.pipeline import REGION_PRECISION, pair_channel_axis
    from ...methods.registration.quality import quality_line
    from ...tiling import upsample_labels

    # report.json and the lines printed name the files wherever they are read from, as the other subcommands do
    for key in ("fixed", "moving", "moving_labels", "moving_annotations", "landmarks_fixed", "landmarks_moving"):
        if getattr(args, key) is not None:
            setattr(args, key, getattr(args, key).absolute())
    absolute_output(args)
    for given, other in (("landmarks_fixed", "landmarks_moving"), ("landmarks_moving", "landmarks_fixed")):
        path = getattr(args, given)
        if getattr(args, other) is None and path is not None and is_bigwarp_csv(path):
            setattr(args, other, path)  # a BigWarp landmark file holds both sets
    if (args.landmarks_fixed is None) != (args.landmarks_moving is None):
        raise PromptsegError("give both --landmarks-fixed and --landmarks-moving, or neither")
    _check_roles(args)
    same_file = args.landmarks_fixed is not None and args.landmarks_fixed.resolve() == args.landmarks_moving.resolve()
    # a TRE of one set against itself means nothing
    if same_file and not is_bigwarp_csv(args.landmarks_fixed):
        raise PromptsegError(
            f"--landmarks-fixed and --landmarks-moving are the same file {args.landmarks_fixed}: give each image's own "
            "landmarks (a BigWarp file, which holds both sets, may be given to both)"
        )
    prompts = _checked_prompts(args.prompt)
    method = resolve_method(args.method, prompts or None)
    if prompts and method == "intensity":
        raise PromptsegError(f"--prompt {prompts[0]!r} needs --method prompts or prompts+intensity, not intensity")
    setting_warnings = unused_settings(args, method, text_prompts=bool(prompts))
    for warning in setting_warnings:
        print(f"warning: {warning}", file=sys.stderr)
    # before the work: -o must be a directory, and what register writes there must not replace an input
    _make_output_dir(args.output)
    written = (
        "moving_warped.tif",
        DISPLACEMENT_FILE,
        LABELS_WARPED,
        "landmarks_warped.csv",
        ANNOTATIONS_WARPED,
        "report.json",
    )
    outputs = {(args.output / name).resolve() for name in written}
    inputs = [
        args.fixed,
        args.moving,
        args.landmarks_fixed,
        args.landmarks_moving,
        args.moving_labels,
        args.moving_annotations,
    ]
    for path in (p for p in inputs if p is not None):
        if path.resolve() in outputs:
            raise PromptsegError(f"{path}: -o {args.output} would overwrite this input; give another output directory")
    # a run killed while replacing its files left a mix of two runs: put back the earlier one before judging it
    restored = undo_interrupted_replacing(args.output)
    if restored:
        print(
            f"-o {args.output}: an earlier run was stopped while replacing its files; put back the ones before it "
            f"({', '.join(restored)})",
            file=sys.stderr,
        )
    earlier_run = _check_earlier_outputs(
        args.output,
        landmarks_given=args.landmarks_fixed is not None,
        labels_given=args.moving_labels is not None,
        annotations_given=args.moving_annotations is not None,
        pair=(args.fixed, args.moving),
    )
    annotations = None if args.moving_annotations is None else read_annotations(args.moving_annotations)
    t0 = time.perf_counter()
    (fixed, fixed_at, fixed_channels, fixed_axis), (moving, moving_at, moving_channels, moving_axis) = (
        _registered_level(p, args.channel_axis) for p in (args.fixed, args.moving)
    )
    fixed_moved, moving_moved = (
        None if args.channel_axis is not None else moved_channel_position(path, image)
        for path, image in ((args.fixed, fixed), (args.moving, moving))
    )
    # a Fiji composite's or a pyramid's channels, named by its file, were read last (as every command reads them):
    # registered there
    fixed_named, moving_named = fixed_moved is not None or fixed_channels, moving_moved is not None or moving_channels
    channel_axis = _pair_axis(args.channel_axis, (args.fixed, fixed, fixed_axis), (args.moving, moving, moving_axis))
    if channel_axis is None and (fixed_named or moving_named):
        channel_axis = -1
        # the other image's channel axis is not this one's: an RGBA image is RGB, as when registered alone
        if not fixed_named:
            fixed, fixed_at = _without_alpha(fixed), fixed_at._replace(array=_without_alpha(fixed_at.array))
        if not moving_named:
            moving, moving_at = _without_alpha(moving), moving_at._replace(array=_without_alpha(moving_at.array))
    left_out = _say_images_left_out(
        [("", args.fixed), ("", args.moving), ("--moving-labels", args.moving_labels)]
    )  # a TIFF's images after its first: registered by nothing
    moving_labels = None
    if args.moving_labels is not None:
        moving_axis = pair_channel_axis(moving.shape, channel_axis)
        moving_labels = _checked_labels(args.moving_labels, moving.shape, moving_axis)
        level_shape = np.shape(moving_at.array)
        registered_shape = _spatial_shape(level_shape, pair_channel_axis(level_shape, channel_axis))
        if moving_labels.shape != registered_shape:  # onto the level registered (nearest pixel, ids kept)
            if moving_labels.shape != _spatial_shape(moving.shape, moving_axis):
                print(
                    f"--moving-labels {args.moving_labels}: drawn at {moving_labels.shape[0]} x "
                    f"{moving_labels.shape[1]} px, scaled (nearest pixel) onto the moving image",
                    file=sys.stderr,
                )
            moving_labels = upsample_labels(moving_labels, registered_shape)
    landmarks = None
    landmark_warnings: list[str] = []
    if args.landmarks_fixed is not None:
        # in pixels of each image (a BigWarp file, which holds both sets, is in their calibrated units)
        lm_fixed, lm_moving, bigwarp_pixel_sizes, calibration_warnings = read_landmark_pair(
            args.landmarks_fixed, args.landmarks_moving, args.fixed, args.moving
        )
        for warning in calibration_warnings:
            landmark_warnings.append(warning)
            print(f"warning: {warning}", file=sys.stderr)
        n_fixed, n_moving = len(lm_fixed.xy), len(lm_moving.xy)
        if n_fixed != n_moving and not args.truncate_landmarks:  # named by file (the library's message cannot)
            raise PromptsegError(
                f"landmark count mismatch: {args.landmarks_fixed} has {n_fixed}, {args.landmarks_moving} has "
                f"{n_moving}; pass --truncate-landmarks to compare the first {min(n_fixed, n_moving)} points"
            )
        landmarks = paired_landmarks(lm_fixed, lm_moving, allow_truncate=args.truncate_landmarks)
        if index_order(lm_fixed, lm_moving) is not None:  # said: ANHIR pairs by row
            print(
                f"landmarks paired by their index column: {args.landmarks_moving} lists them in another order than "
                f"{args.landmarks_fixed}",
                file=sys.stderr,
            )
        full_shapes = []  # rows, columns of each image at full resolution: the landmarks' pixels
        for points, path, image, image_path in (
            (lm_fixed, args.landmarks_fixed, fixed, args.fixed),
            (lm_moving, args.landmarks_moving, moving, args.moving),
        ):
            shape = np.shape(image)
            full_shapes.append(_spatial_shape(shape, pair_channel_axis(shape, channel_axis, str(image_path))))
            warning = landmarks_outside(points.xy, full_shapes[-1], str(path))
            if warning is not None:  # said before the work: a wrong file is worth stopping for
                landmark_warnings.append(warning)
                print(f"warning: {warning}", file=sys.stderr)
    options, text_options = register_settings(args)
    segmenter = None
    load_s = 0.0
    if method != "intensity":
        from ...models import load_segmenter

        t_load = time.perf_counter()  # the loading alone (t0 is before the images were read), as other commands'
        segmenter = load_segmenter(
            args.model, weights=args.weights, device=args.device, progress=weights_progress(args.model)
        )
        load_s = time.perf_counter() - t_load
    result = register(
        fixed_at.array,
        moving_at.array,
        prompts or None,
        segmenter=segmenter,
        method=method,
        options=options,
        channel_axis=channel_axis,
        fixed_name=str(args.fixed),
        moving_name=str(args.moving),
        text_route=args.text_route,
        downloads=route_progress,  # a named text route's model download, told on the CLI's line
        library=args.library,
        text_options=text_options,
        progress=lambda fraction, message: steps(
            REGISTER_SHARE * fraction, "registered" if message == "done" else message
        ),
    )
    # register() was given the levels' arrays, which it takes as level 0: the result says the levels read (a Python
    # user of it, and report.json below, see which level and factors its grids are at)
    result.registered_level = {
        name: level_record(at.index, at.factors) for name, at in (("fixed", fixed_at), ("moving", moving_at))
    }
    # channels stay where --channel-axis put them: the warped image has the moving image's layout
    steps(REGISTER_SHARE, "warping the moving image")
    warped = result.warp_image(moving_at.array, channel_axis=pair_channel_axis(moving.shape, channel_axis))
    if moving_moved is not None:  # the moving file's own order, as its channels were named
        warped = np.ascontiguousarray(np.moveaxis(warped, -1, moving_moved))
    # one run's files replace the earlier run's together or not at all (io._files.replacing_together: written to
    # temporary files, then renamed under a journal, report.json last; a stopped or killed run is undone)
    # an earlier run's files this run has none of: removed with this run's replacement (what was done, said after)
    stale: list[str | None] = []
    # the pixels of the grid the TIFFs are on: the fixed image's, times its registered level's factors, recorded so
    # they open over the fixed image (in the unit of its layer: an OME-Zarr's own, as napari-ome-zarr scales it);
    # none for an uncalibrated image's full resolution
    grid_size = level_pixel_size(layer_pixel_size(args.fixed), fixed_at.factors)
    with replacing_together(args.output, "report.json") as temp:
        # marked as register's (not as a segmentation's labels: a later run may take them as its inputs); a rerun may
        # replace them; BigTIFF past classic TIFF's 4 GiB (a slide-sized fixed image's labels and displacement)
        def write_tiff(name: str, data: np.ndarray, marker: str = REGISTER_MARKER, **options: object) -> None:
            big = needs_bigtiff(data.nbytes)
            options = grid_tiff_options(name, data, result.deformation.fixed_shape, grid_size, options)
            tifffile.imwrite(temp(name), data, compression="zlib", software=marker, bigtiff=big, **options)

        # channels first: colour planes, as tifffile guesses today and has said it will stop guessing
        colour_planes = warped.ndim == 3 and warped.shape[0] in (3, 4) and warped.shape[-1] not in (3, 4)
        steps(0.95, "writing the outputs")
        write_tiff(
            "moving_warped.tif", warped, **({"photometric": "rgb", "planarconfig": "separate"} if colour_planes else {})
        )
        write_tiff(DISPLACEMENT_FILE, result.displacement)
        steps.close()  # the lines below start on a line of their own
        labels_record = None
        if moving_labels is not None:
            warped_labels = result.warp_labels(moving_labels)
            # marked as labels, which the reader opens as a Labels layer
            write_tiff(LABELS_WARPED, warped_labels, REGISTER_LABELS_MARKER, photometric="minisblack")
            labels_record = {
                "moving_labels": str(args.moving_labels),
                "labels_warped": str(args.output / LABELS_WARPED),
                # ids mapped outside the fixed image are lost: how many are left
                "ids_before": int(np.count_nonzero(np.unique(moving_labels))),
                "ids_after": int(np.count_nonzero(np.unique(warped_labels))),
            }
            print(
                f"{args.moving_labels} -> {args.output / LABELS_WARPED} ({labels_record['ids_after']} of "
                f"{labels_record['ids_before']} ids inside the fixed image)"
            )
        else:
            labels_path = args.output / LABELS_WARPED
            earlier_labels = ((earlier_run or {}).get("labels") or {}).get("labels_warped")
            stale.append(
                _stale(
                    temp,
                    labels_path,
                    bool(earlier_labels) and is_own_output(labels_path, REGISTER_MARKERS),
                    "--moving-labels",
                )
            )
        record: dict[str, object] = {}

        def to_fixed(xy: np.ndarray) -> np.ndarray:
            """Moving landmarks (full-resolution pixels, x y) mapped to the fixed image's full-resolution pixels."""
            return result.moving_points_to_fixed(xy, moving_factors=moving_at.factors, fixed_factors=fixed_at.factors)

        if landmarks is not None:
            fixed_xy, moving_xy = landmarks  # paired: in the fixed file's order
            mapped = to_fixed(moving_xy)
            # every row of the moving file, in its order (unpaired extra points too): the file keeps every input row
            warped_csv = write_landmarks(temp("landmarks_warped.csv"), lm_moving.with_xy(to_fixed(lm_moving.xy)))
            diagonal = image_diagonal(np.multiply(result.deformation.fixed_shape, fixed_at.factors))  # full resolution
            # the moving points as they lie over the fixed image unregistered, in its pixels (by the pixel sizes, or
            # a rescaled copy's size): the moving image's own pixel coordinates made a 10 % copy over a 5 % one 14x off
            fixed_size = pixel_size(args.fixed)
            placed, placement = placed_before(
                moving_xy, *full_shapes, pixel_sizes=pixel_sizes_in_one_unit(fixed_size, pixel_size(args.moving))
            )
            before, after = landmark_errors(fixed_xy, placed, diagonal), landmark_errors(fixed_xy, mapped, diagonal)
            um = in_micrometres(fixed_size)
            record = {
                "landmarks_fixed": str(args.landmarks_fixed),
                "landmarks_moving": str(args.landmarks_moving),
                "landmarks_warped": str(args.output / "landmarks_warped.csv"),
                # a CSV carries no mark: a rerun replaces or removes it only while it still has these contents
                "landmarks_warped_sha256": _file_sha256(warped_csv),
                # a BigWarp file's sets divided by their image's pixel size (by role): its coordinates were in its units
                **({"bigwarp_pixel_size": bigwarp_pixel_sizes} if bigwarp_pixel_sizes else {}),
                "pairs_compared": len(fixed_xy),
                "image_diagonal": round(diagonal, 2),
                "unit": TRE_UNIT,
                "before_placement": placement,
                "before": before,
                "after": after,
                **({"fixed_pixel_size": str(fixed_size)} if fixed_size is not None else {}),
                # in µm too when the fixed image's pixel is one (its pixels' x and y sizes alike)
                **(
                    {"tre_mean_um": {k: v["tre_mean"] * um[0] for k, v in (("before", before), ("after", after))}}
                    if um is not None and np.isclose(um[0], um[1])
                    else {}
                ),
            }
        else:
            csv_path = args.output / "landmarks_warped.csv"
            stale.append(
                _stale(
                    temp,
                    csv_path,
                    _is_earlier_text_output(csv_path, earlier_run, "landmarks", "landmarks_warped_sha256"),
                    "landmarks",
                    kept_why="edited since an earlier run, or not promptseg's; ",
                )
            )
        annotations_path = args.output / ANNOTATIONS_WARPED
        annotations_record = None
        if annotations is not None:
            mapped_annotations, counts = result.warp_annotations(
                annotations, moving_factors=moving_at.factors, fixed_factors=fixed_at.factors
            )
            warped_annotations = write_annotations(temp(ANNOTATIONS_WARPED), mapped_annotations)
            annotations_record = {
                "moving_annotations": str(args.moving_annotations),
                "annotations_warped": str(annotations_path),
                # a GeoJSON file carries no mark: a rerun replaces or removes it only while it has these contents
                "annotations_warped_sha256": _file_sha256(warped_annotations),
                **counts,
            }
            outside = counts["geometries_outside"]
            print(
                f"{args.moving_annotations} -> {annotations_path} ({counts['geometries']} geometries"
                + (f", {outside} of them outside the fixed image" if outside else "")
                + ")"
            )
        else:
            stale.append(
                _stale(
                    temp,
                    annotations_path,
                    _is_earlier_text_output(annotations_path, earlier_run, "annotations", "annotations_warped_sha256"),
                    "--moving-annotations",
                    kept_why="edited since an earlier run, or not promptseg's; ",
                )
            )
        for warning in result.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        summary = f"{args.moving} -> {args.output / 'moving_warped.tif'} ({result.method}"
        if result.method != "intensity":
            summary += f", {len(result.pairs)} pairs"
        if record:
            summary += f", TRE {record['before']['tre_mean']:.2f} -> {record['after']['tre_mean']:.2f} px"
            if record["pairs_compared"] < max(n_fixed, n_moving):  # --truncate-landmarks, as the widget says it
                summary += f" over the first {record['pairs_compared']} of {max(n_fixed, n_moving)} landmarks"
            summary += " (pixels of the fixed image"
            if "tre_mean_um" in record:
                summary += f"; {record['tre_mean_um']['before']:.2f} -> {record['tre_mean_um']['after']:.2f} µm"
            summary += ")"
            if record["before_placement"] != "pixel for pixel":  # the moving points are not where their file has them
                summary += f"; before: moving landmarks {record['before_placement']}"
        print(summary + ")")
        if fixed_at.index or moving_at.index:
            print(
                f"registered at pyramid level {fixed_at.index} of {args.fixed} and {moving_at.index} of {args.moving}: "
                f"the outputs are on the fixed level's {result.deformation.fixed_shape[0]} x "
                f"{result.deformation.fixed_shape[1]} px grid, landmarks in full-resolution pixels"
            )
        if result.quality:
            print(quality_line(result.quality))
        if result.text_route:
            print(f"text prompts answered by {result.text_route}: {result.text_reason}")
        _write_report(
            args.output,
            into=temp("report.json"),
            device=args.device,
            auto_precision=REGION_PRECISION,  # what register() runs its encoder at when the precision is auto
            command="register",
            model=None if segmenter is None else segmenter.name,
            route=result.method,
            parameters={
                "fixed": str(args.fixed),
                "moving": str(args.moving),
                "prompts": prompts or (["auto"] if result.method != "intensity" else []),
                "text_route": args.text_route,
                "library": None if args.library is None else str(args.library),
                "text_weights": args.text_weights,
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
            "pixel (x, y) corresponds to moving pixel (x + dx, y + dy); moving_warped = moving(x + u(x)), with the "
            "moving image's axis order (channels on --channel-axis); "
            "landmarks_warped = moving landmarks mapped into the fixed frame (solving x + u(x) = p); "
            "a pyramid (OME-Zarr, pyramidal TIFF) is registered at one level (registered_level): the grids and pixels "
            "above are that level's, landmarks and TRE stay in full-resolution pixels",
            shapes={"fixed": list(fixed.shape), "moving": list(moving.shape)},
            # the pyramid level each image was registered at (0: full resolution), and how many times coarser it is
            # along (rows, columns): the result's record (RegistrationResult), as register() keeps it for a pyramid
            registered_level=result.registered_level,
            region_pairs={
                "count": len(result.pairs),
                # the prompt (text phrase, "<phrase> (all)" for a phrase's union; None: automatic) of each pair
                "prompts": [p.prompt for p in result.pairs],
                "pairing": None if result.pairing is None else vars(result.pairing),
                "dice_before_mean": _mean_or_none(result.pair_dice_before),
                "dice_after_mean": _mean_or_none(result.pair_dice_after),
            },
            landmarks=record or None,
            # --moving-labels on the fixed grid (nearest neighbour, ids and dtype kept) and how many ids are left
            labels=labels_record,
            # --moving-annotations in the fixed frame (full-resolution pixels): geometries, vertices before and after
            # densifying, and how many geometries ended with no vertex inside the fixed image
            annotations=annotations_record,
            # which start won the image-similarity (NMI) choice, and every start's score
            start={"chosen": result.start, "scores": {k: round(v, 4) for k, v in result.start_scores.items()}},
            # the joint refinement after the intensity stage: kept only when the image score (NMI) rose
            refinement={k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.refinement.items()} or None,
            # each stage that was checked, accepted or rejected (a degenerate stage gives way to the one before, why
            # here)
            stages=result.stages,
            # read without landmarks: image similarity (NMI) before/after, Jacobian range, stages rejected, verdict
            quality=result.quality,
            # text prompts: the route that answered them and why (None for automatic/given regions), per prompt below
            text_route={"route": result.text_route, "reason": result.text_reason} if result.text_route else None,
            prompt_sources=result.prompt_sources,
            warnings=[*setting_warnings, *left_out, *landmark_warnings, *result.warnings],
            timings_s={
                **{k: round(v, 4) for k, v in result.timings.items()},
                "model_load": round(load_s, 4),
                "total": round(time.perf_counter() - t0, 4),
            },
        )
    for message in stale:  # said once done: a run stopped before kept the earlier run whole
        if message:
            print(message, file=sys.stderr)
    return 0
