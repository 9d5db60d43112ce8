"""`promptseg segment`: boxes and points, or every object like the boxed ones (--find-all)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import PromptsegError
from ._common import (
    _expand_images,
    _finish_image,
    _instances_record,
    _model_parameters,
    _print_progress,
    _run_batch,
    _write_report,
)


def cmd_segment(args: argparse.Namespace) -> int:
    if not args.box and not args.point:
        raise PromptsegError("give at least one --box X0 Y0 X1 Y1 or --point X Y")
    if args.find_all and not args.box:
        raise PromptsegError("--find-all needs the boxes of a few example objects (--box X0 Y0 X1 Y1, repeated)")
    images = _expand_images(args.images)
    t0 = time.perf_counter()
    args.output.mkdir(parents=True, exist_ok=True)
    outcome, code = _run_batch(args, images, _setup, _process)
    meta = outcome.meta
    _write_report(
        args.output,
        command="segment",
        model=meta.get("model", args.model),
        route="find all like the boxed objects" if args.find_all else "box/point prompts",
        parameters={
            "boxes": args.box,
            "points": args.point,
            "negative_points": args.negative_point,
            "find_all": args.find_all,
            "object_size": args.object_size,
            **_model_parameters(args, meta),
        },
        images=outcome.records,
        timings_s={"model_load": meta.get("setup_s"), "total": round(time.perf_counter() - t0, 4)},
        batch=outcome.summary,
    )
    outcome.finish()
    return code


def _setup(args: argparse.Namespace) -> tuple[object, dict]:
    """Once per worker: the segmenter."""
    from ..models import load_segmenter

    segmenter = load_segmenter(args.model, weights=args.weights, device=args.device, progress=_print_progress)
    return segmenter, {"model": segmenter.name, "device": str(segmenter.device)}


def _process(args: argparse.Namespace, segmenter, path: Path, image) -> dict:
    from ..io import write_labels
    from ..methods.instances import find_all_like
    from ..methods.interactive import segment_prompts

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
