"""`promptseg` command line. Every subcommand calls the same functions as the Python API and the widgets.

Output convention (all subcommands): ``-o OUT`` is a directory; each input image gives ``OUT/<stem>.tif``
(uint16/uint32 instance labels, 0 = background) and the run writes ``OUT/report.json``. Bad input exits
non-zero with a one-line reason.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
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
    seg.add_argument("--overlay", action="store_true", help="also write OUT/<stem>_overlay.png")
    _add_model_options(seg)
    seg.set_defaults(func=cmd_segment)
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
        print(f"{row['name']:<12} {row['role']:<10} {mark:<15} {row['description']}")
        print(f"{'':<12} {'':<10} {'':<15} {row['path']}")
    return 0


def _print_progress(done: int, total: int | None) -> None:
    mb = done / 2**20
    text = f"\rdownloading weights: {mb:.1f} MB" + (f" / {total / 2**20:.1f} MB" if total else "")
    print(text, end="", file=sys.stderr, flush=True)


def cmd_segment(args: argparse.Namespace) -> int:
    from .io import read_image, write_labels, write_overlay
    from .methods.interactive import segment_prompts
    from .models import load_segmenter

    if not args.box and not args.point:
        raise PromptsegError("give at least one --box X0 Y0 X1 Y1 or --point X Y")
    missing = [str(p) for p in args.images if not p.is_file()]
    if missing:
        raise PromptsegError(f"input image not found: {', '.join(missing)}")
    t0 = time.perf_counter()
    segmenter = load_segmenter(args.model, weights=args.weights, device=args.device, progress=_print_progress)
    load_s = time.perf_counter() - t0
    args.output.mkdir(parents=True, exist_ok=True)
    records = []
    for path in args.images:
        image = read_image(path)
        result = segment_prompts(
            image,
            segmenter,
            boxes=args.box,
            positive_points=args.point,
            negative_points=args.negative_point,
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
            "predicted_iou": [round(float(s), 4) for s in result.scores],
            "timings_s": {k: round(v, 4) for k, v in result.timings.items()},
            "warnings": result.warnings,
        }
        if args.overlay:
            record["overlay"] = str(write_overlay(args.output / f"{path.stem}_overlay.png", image, result.labels))
        for warning in result.warnings:
            print(f"warning: {path}: {warning}", file=sys.stderr)
        print(f"{path} -> {out} ({record['objects']} object(s), {sum(result.timings.values()):.2f} s)")
        records.append(record)
    _write_report(
        args.output,
        command="segment",
        model=segmenter.name,
        route="box/point prompts",
        parameters={
            "boxes": args.box,
            "points": args.point,
            "negative_points": args.negative_point,
            "weights": args.weights,
            "device": str(getattr(segmenter, "device", args.device)),
            "channel_axis": args.channel_axis,
            "channels": args.channels,
            "normalize": args.normalize,
        },
        images=records,
        timings_s={"model_load": round(load_s, 4), "total": round(time.perf_counter() - t0, 4)},
    )
    return 0


def _write_report(output: Path, **report: object) -> Path:
    path = output / "report.json"
    path.write_text(json.dumps({"version": __version__, **report}, indent=2))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (PromptsegError, WeightsError) as exc:
        print(f"promptseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except CancelledError:
        print(f"promptseg {args.command}: cancelled", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"\npromptseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
