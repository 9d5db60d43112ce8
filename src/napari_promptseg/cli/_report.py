"""What a run says of its inputs: each image's record (and its overlay, its summary line) and OUT/report.json with
the model options and encoder precision the run had."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from ..io._files import replacing
from ._outputs import _write_output
from ._stacks import _plane_channel_axis


def _model_parameters(args: argparse.Namespace, meta: dict) -> dict:
    """The model options of report.json's parameters, as every segmenting subcommand records them (``meta``: what
    the workers' setup reported)."""
    return {
        "weights": args.weights,
        "device": meta.get("device", args.device),
        "channel_axis": args.channel_axis,
        "channels": args.channels,
        "normalize": args.normalize,
    }


def _mean_or_none(values: Sequence[float]) -> float | None:
    return round(float(sum(values) / len(values)), 4) if values else None


def _instances_record(args: argparse.Namespace, path: Path, image, found) -> dict:
    """Write one many-instances result and describe it for report.json (oneshot, segment --find-all)."""
    import numpy as np

    out = _write_output(args, path, found.labels)
    record = {
        "input": str(path),
        "output": str(out),
        "shape": list(np.shape(image)),
        "objects": int(len(found.scores)),
        "candidates": found.candidates,
        "working_scale": found.scale.summary() if found.scale is not None else None,
        "blank_tiles": found.blank_tiles,
        "low_confidence": found.low_confidence,
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


def _finish_image(
    args: argparse.Namespace,
    path: Path,
    image: object,
    labels: object,
    record: dict,
    summary: str,
    *,
    stack: object | None = None,
) -> None:
    """Per-image tail shared by the segmenting subcommands: a warning for stack options a 2D input ignored, the
    optional overlay (its failure is a warning: the labels are written) and the summary the driver prints (private
    ``_`` keys stay out of report.json). ``stack``: a stack input as its planes were read (its overlay's plane),
    given with stack labels."""
    import numpy as np

    from ..io import output_stem, write_overlay

    warnings = record.setdefault("warnings", [])
    if np.ndim(labels) == 2:
        ignored = [
            option
            for option, given in (
                ("--plane", getattr(args, "plane", None) is not None),
                ("--propagate", getattr(args, "propagate", False)),
                ("--stop-iou", getattr(args, "stop_iou_given", False)),
            )
            if given
        ]
        if ignored:
            warnings.append(f"a 2D image, not a (Z, Y, X) stack: {', '.join(ignored)} ignored")
    if args.overlay:
        channel_axis = args.channel_axis
        try:
            if np.ndim(labels) == 3:  # a stack: the overlay shows the seed plane, or the middle one
                z = getattr(args, "plane", None)
                z = np.shape(labels)[0] // 2 if z is None else z
                image = stack[z]  # _stack_record passes the planes as it read them
                labels = labels[z]
                channel_axis = _plane_channel_axis(args)
            overlay = args.output / f"{output_stem(path, getattr(args, 'output_stems', None))}_overlay.png"
            options = {"channel_axis": channel_axis, "channels": args.channels}
            record["overlay"] = str(write_overlay(overlay, image, labels, **options))
        except Exception as exc:  # noqa: BLE001 - a quick look must not cost the labels already written
            warnings.append(f"overlay not written: {' '.join(str(exc).split()) or type(exc).__name__}")
    record["_summary"] = summary


def _write_report(
    output: Path,
    *,
    device: str = "auto",
    auto_precision: str | None = None,
    encoder_precision: str | None = None,
    into: Path | None = None,
    **report: object,
) -> Path:
    """OUT/report.json, replaced whole (a resumed run reads it), or written ``into`` a temporary file that the
    caller renames to it with the run's other files (:func:`~..io._files.replacing_together`). It says the encoder
    precision the run had: ``encoder_precision`` as the batch's workers ran it (:func:`_segmenter_meta`), else resolved
    here from ``device`` (the run's ``--device``), ``auto_precision`` (what auto meant in the method, if it pins it)
    and ``--precision`` / ``$PROMPTSEG_PRECISION`` (auto by default)."""
    path = output / "report.json"
    precision = encoder_precision or _resolved_precision(device, auto_precision)
    text = json.dumps({"version": __version__, "encoder_precision": precision, **report}, indent=2)
    if into is not None:
        into.write_text(text)
        return path
    with replacing(path) as temp:
        temp.write_text(text)
    return path


def _resolved_precision(device: str, auto_precision: str | None = None) -> str:
    """The encoder's precision in this process (imports torch: auto depends on the CPU and the device)."""
    from ..models import sam_family
    from ..models.device import resolve_device

    with sam_family.auto_precision(auto_precision) if auto_precision else contextlib.nullcontext():
        return sam_family.resolve_precision(None, resolve_device(device))


def _segmenter_meta(segmenter: object) -> dict:
    """The run-level fields every batch setup reports from its worker: the model, its device and the encoder
    precision it runs at there (the driver of a Dask batch runs no model: it takes these from the workers)."""
    meta = {"model": segmenter.name, "device": str(segmenter.device)}
    precision = getattr(segmenter, "precision", None)
    return meta if precision is None else {**meta, "encoder_precision": precision}
