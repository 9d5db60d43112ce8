"""`promptseg segment`: boxes and points, or every object like the boxed ones (--find-all)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import PromptsegError
from ._batch import _run_batch
from ._inputs import _expand_images
from ._outputs import _prepare_outputs
from ._progress_line import weights_progress
from ._report import _finish_image, _model_parameters, _segmenter_meta, _write_report
from ._stacks import (
    _input_stack,
    _instances_level_record,
    _level_record,
    _plane_channel_axis,
    _stack_record,
    plane_name,
)


def cmd_segment(args: argparse.Namespace) -> int:
    if args.seed_labels is not None:
        _check_seed_labels(args)
    elif not args.box and not args.point:
        raise PromptsegError(
            "give at least one --box X0 Y0 X1 Y1 or --point X Y (for --propagate, or the seed plane's objects as "
            "--seed-labels)"
        )
    if args.find_all and not args.box:
        raise PromptsegError("--find-all needs the boxes of a few example objects (--box X0 Y0 X1 Y1, repeated)")
    if args.find_all and (args.point or args.negative_point):
        raise PromptsegError(
            "--find-all learns from the boxed examples only; --point and --negative-point would not be used: drop them"
        )
    images = _expand_images(args.images)
    if args.seed_labels is not None and len(images) > 1:
        raise PromptsegError(
            f"--seed-labels {args.seed_labels} are one stack's objects; give that one stack, not {len(images)} inputs"
        )
    t0 = time.perf_counter()
    _prepare_outputs(args, images)
    outcome, code = _run_batch(args, images, _setup, _process)
    meta = outcome.meta
    _write_report(
        args.output,
        device=args.device,
        command="segment",
        model=meta.get("model", args.model),
        encoder_precision=meta.get("encoder_precision"),
        route=_route(args),
        parameters={
            "boxes": args.box,
            "points": args.point,
            "negative_points": args.negative_point,
            "find_all": args.find_all,
            "object_size": args.object_size,
            "plane": args.plane,
            "time": args.time,
            "propagate": args.propagate,
            "seed_labels": None if args.seed_labels is None else str(args.seed_labels),
            "stop_iou": args.stop_iou,
            "output_format": args.output_format,
            "labels_name": args.labels_name,
            **_model_parameters(args, meta),
        },
        images=outcome.records,
        timings_s={"model_load": meta.get("setup_s"), "total": round(time.perf_counter() - t0, 4)},
        batch=outcome.summary,
    )
    outcome.finish()
    return code


def _route(args: argparse.Namespace) -> str:
    """report.json's route: what gave the objects (a --seed-labels run was "box/point prompts", with none given)."""
    if args.seed_labels is not None:
        return "seed labels"
    return "find all like the boxed objects" if args.find_all else "box/point prompts"


def _check_seed_labels(args: argparse.Namespace) -> None:
    """--seed-labels seeds a propagation, and is its only seed."""
    if not args.propagate:
        raise PromptsegError(f"--seed-labels {args.seed_labels} seed a propagation through a stack: add --propagate")
    if args.box or args.point or args.negative_point or args.find_all:
        raise PromptsegError(
            "give the seed plane's objects as prompts (--box, --point, --find-all) or as --seed-labels, not both (the "
            "prompts would not be used)"
        )
    if not args.seed_labels.exists():
        raise PromptsegError(f"--seed-labels {args.seed_labels}: no such file")


def _setup(args: argparse.Namespace) -> tuple[object, dict]:
    """Once per worker: the segmenter."""
    from ..models import load_segmenter

    segmenter = load_segmenter(
        args.model, weights=args.weights, device=args.device, progress=weights_progress(args.model)
    )
    return segmenter, _segmenter_meta(segmenter)


def _segment(
    args: argparse.Namespace,
    segmenter,
    image,
    name: str,
    channel_axis: int | None,
    factor: float = 1.0,
    xy_factors: tuple[float, float] | None = None,
):
    """The boxes and points (or find-all) on one 2D image (a pyramid level ``factor`` times smaller than full
    resolution; ``xy_factors``: along columns and rows, which differ where the level's sizes were rounded); prompts
    are given in full-resolution pixels."""

    from ..batch.engine import method_progress
    from ..methods.instances import find_all_like
    from ..methods.interactive import segment_prompts
    from ..tiling import prompts_to_level

    xy = xy_factors if xy_factors is not None else (factor, factor)
    boxes = prompts_to_level(args.box, 4, xy)
    size = None if args.object_size is None else args.object_size / factor
    options = {"channel_axis": channel_axis, "channels": args.channels, "normalize": args.normalize}
    if args.find_all:
        return find_all_like(
            image, boxes, segmenter=segmenter, object_size=size, name=name, progress=method_progress(), **options
        )
    return segment_prompts(
        image,
        segmenter,
        boxes=boxes,
        positive_points=prompts_to_level(args.point, 2, xy),
        negative_points=prompts_to_level(args.negative_point, 2, xy),
        object_size=size,
        name=name,
        **options,
    )


def _process(args: argparse.Namespace, segmenter, path: Path, image) -> dict:
    import numpy as np
    from scipy import ndimage

    from ..io.multiscale import file_level
    from ..methods.interactive import prompts_working_scale
    from ..methods.volume.levels import StackLevel, choose_stack_level
    from ..tiling import level_factors

    if (stacked := _input_stack(args, image, path)) is not None:
        stack, axes = stacked
        if args.plane is None and np.shape(stack)[0] > 1:  # one plane: the boxes can only be on it
            # seed labels: the plane their objects are on (boxes were asked for, and --propagate, already given)
            n = np.shape(stack)[0]
            # 2-4 grey planes the file does not call planes may be a channels-first image: as_stack's caution,
            # which this refusal came before (a (2, Y, X) two-channel image was told only to give --plane)
            channels = n <= 4 and np.ndim(stack) == 3 and axes.planes is None
            # a time-lapse's planes are its frames, along T (its file says so)
            stack_of, plane, through = (
                (f"a time-lapse of {n} frames; give --plane T", "frame", "frames")
                if axes.planes == "t"
                else (f"a stack of {n} planes; give --plane Z", "plane", "stack")
            )
            raise PromptsegError(
                f"{path}: {stack_of}, "
                + (
                    f"the {plane} whose objects --seed-labels {args.seed_labels} holds"
                    if args.seed_labels is not None
                    else f"the {plane} the boxes were drawn on (and --propagate to carry the objects through the "
                    f"{through})"
                )
                + ("; or, if its first axis holds channels, --channel-axis 0" if channels else "")
            )

        def plane_labels(plane, z: int):
            # with its warnings; a stack pyramid's plane is its own pyramid, read at the level of the boxes
            return _segment(args, segmenter, plane, plane_name(path, z, axes), _plane_channel_axis(args))

        def plane_level(pyramid: list) -> StackLevel:
            # the level segment_prompts and find_all_like read a plane's pyramid at (prompts_working_scale)
            return choose_stack_level(pyramid, segmenter.input_size, object_size=args.object_size, boxes=args.box)

        stack_options = {"axes": axes, "plane_level": plane_level}

        if args.seed_labels is not None:
            from ..io.images import read_image

            seed = read_image(args.seed_labels, role="labels")
            return _stack_record(args, path, image, plane_labels, segmenter, seed_labels=seed, **stack_options)
        if not args.propagate or args.find_all:  # the plane's own method (find-all) seeds the propagation
            return _stack_record(args, path, image, plane_labels, segmenter, **stack_options)
        points = {
            "positive_points": np.asarray(args.point, np.float64).reshape(-1, 2),
            "negative_points": np.asarray(args.negative_point, np.float64).reshape(-1, 2),
        }
        boxes = np.asarray(args.box, np.float64).reshape(-1, 4)
        return _stack_record(args, path, image, plane_labels, segmenter, boxes=boxes, **stack_options, **points)
    if args.seed_labels is not None:
        raise PromptsegError(
            f"{path}: a 2D image (shape {np.shape(image)}); --seed-labels and --propagate carry objects through the "
            "planes of a 3D stack"
        )
    # a pyramid is read at the level of the boxes' working scale
    scale = prompts_working_scale(np.shape(image), segmenter.input_size, args.box, args.object_size)
    level, index, factor = file_level(path, image, scale)
    # each axis by its own factor: a 1201 x 1280 slide's 4x level is 301 x 320 (rows 3.99, columns 4.0), and a box
    # on its last column, taken by the rows' factor, ended past the level's ("clipped", of a box inside the slide)
    plane = [a for a in range(np.ndim(image)) if args.channel_axis is None or a != args.channel_axis % np.ndim(image)]
    full_plane, level_plane = (tuple(np.shape(a)[k] for k in plane[:2]) for a in (image, level))
    xy = level_factors(full_plane, level_plane)[::-1]
    result = _segment(args, segmenter, level, str(path), args.channel_axis, factor, xy)
    if args.find_all:
        return _instances_level_record(args, path, image, result, index, factor)
    record, labels = _level_record(args, path, image, result.labels, index, factor)
    record |= {
        # a prompt may leave its object empty; find_objects reads the ids as they are stored (bincount made an
        # int64 copy of the labels: 8 bytes per pixel, 4x a slide level's uint16 labels)
        "objects": sum(found is not None for found in ndimage.find_objects(result.labels)),
        "working_scale": result.scale.at_full_resolution(factor).summary() if result.scale is not None else None,
        "predicted_iou": [round(float(s), 4) for s in result.scores],
        "timings_s": {k: round(v, 4) for k, v in result.timings.items()},
        "warnings": result.warnings,
    }
    summary = f"{record['objects']} object(s), {sum(result.timings.values()):.2f} s"
    _finish_image(args, path, image, labels, record, summary)
    return record
