"""Pieces every subcommand shares: model options, input expansion, per-image tail, report.json, and the batch
loop that never loses work."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .. import __version__
from ..errors import CancelledError, PromptsegError, WeightsError
from ._stacks import _labels_shape, _stack_for, _stem, _write_output


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="litemedsam", help="name from `promptseg models` (default: %(default)s)")
    parser.add_argument("--weights", help="explicit weights file (e.g. a fine-tuned checkpoint)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: %(default)s)")
    parser.add_argument("--channel-axis", type=int, help="axis of the channels in a multichannel image")
    parser.add_argument("--channels", type=int, nargs="+", help="up to three channels to use (after --channel-axis)")
    parser.add_argument(
        "--normalize", default="auto", choices=["auto", "percentile", "minmax", "none"], help="intensity scaling"
    )


def _model_parameters(args: argparse.Namespace, segmenter: object) -> dict:
    """The model options of report.json's parameters, as every segmenting subcommand records them."""
    return {
        "weights": args.weights,
        "device": str(getattr(segmenter, "device", args.device)),
        "channel_axis": args.channel_axis,
        "channels": args.channels,
        "normalize": args.normalize,
    }


def _print_progress(done: int, total: int | None) -> None:
    mb = done / 2**20
    text = f"\rdownloading weights: {mb:.1f} MB" + (f" / {total / 2**20:.1f} MB" if total else "")
    print(text, end="", file=sys.stderr, flush=True)


def _mean_or_none(values: Sequence[float]) -> float | None:
    return round(float(sum(values) / len(values)), 4) if values else None


IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


def _expand_images(paths: list[Path]) -> list[Path]:
    from ..io.multiscale import is_ome_zarr

    out = []
    for path in paths:
        if is_ome_zarr(path):
            out.append(path)
        elif path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES or is_ome_zarr(p)))
        elif path.is_file():
            out.append(path)
        else:
            raise PromptsegError(f"input image not found: {path}")
    if not out:
        raise PromptsegError(f"no image files in {', '.join(map(str, paths))}")
    return out


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
    args: argparse.Namespace, path: Path, image: object, labels: object, record: dict, summary: str
) -> None:
    """Per-image tail shared by the segmenting subcommands: optional overlay, warnings, one summary line."""
    import numpy as np

    from ..io import write_overlay

    if args.overlay:
        if np.ndim(labels) == 3:  # a stack: the overlay shows the seed plane, or the middle one
            z = getattr(args, "plane", None)
            z = np.shape(labels)[0] // 2 if z is None else z
            image, labels = _stack_for(args, image)[z], labels[z]
        record["overlay"] = str(write_overlay(args.output / f"{_stem(path)}_overlay.png", image, labels))
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
    may be empty: see each record's ``status``), 1 when an input could not be read and so has no output, 2 when
    every input failed. With a single input, its error is the run's error (exit 2, one line, no report)."""
    from ..io import read_image

    records, unwritten = [], 0
    for path in paths:
        image = None
        try:
            image = read_image(path)
            record = process(path, image)
            record.setdefault("status", "ok" if record.get("objects", 1) else "empty")
        except (CancelledError, KeyboardInterrupt):
            raise
        except (PromptsegError, WeightsError):
            if len(paths) == 1:
                raise  # one input: its error is the run's (exit 2, one line, no report)
            record = _failed(args, path, image, sys.exc_info()[1])
        except Exception as exc:  # noqa: BLE001 - one bad target must not stop the batch
            record = _failed(args, path, image, exc)
        if record["status"] == "failed" and "output" not in record:
            unwritten += 1
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


def _failed(args: argparse.Namespace, path: Path, image: object, exc: BaseException) -> dict:
    """The record of a target that failed, with an empty label image where its shape is known."""
    import numpy as np

    from ..io import write_labels

    reason = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, (PromptsegError, WeightsError)):
        reason = f"{type(exc).__name__}: {reason}"
    record = {"input": str(path), "status": "failed", "reason": reason}
    if image is not None and np.ndim(image) >= 2:
        empty = np.zeros(_labels_shape(args, image), np.uint16)
        record["output"] = str(write_labels(args.output / f"{_stem(path)}.tif", empty))
        record["shape"] = list(np.shape(image))
        print(f"{path} -> {record['output']} (empty: {reason})", file=sys.stderr)
    else:
        print(f"{path}: no output: {reason}", file=sys.stderr)
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
