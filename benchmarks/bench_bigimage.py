"""An 8k x 8k OME-Zarr in, labels OME-Zarr out: peak memory (RSS), time and F1 of `promptseg oneshot` on a mosaic of
real nuclei frames.

The mosaic tiles the Cell Tracking Challenge GOWT1 frames of ``../shared/data/nuclei_ctc_fluo_instances`` (the first
frame is the one-shot reference, the others are tiled as eval_instances.py does) and is written once as an OME-Zarr
pyramid (full resolution, 1/2, 1/4, 1/8; ``--single-level``: full resolution only, so it is processed as is). The
CLI runs in a child process (its peak RSS is the child's ``ru_maxrss``), reads the mosaic lazily at the pyramid level
the objects' working scale needs and writes its labels into the mosaic's ``labels/promptseg`` group; they are then
compared with the mosaic's ground truth (instance F1 at IoU 0.5). ``--object-size`` overrides the reference's
object size (fewer tiles, lower F1: a time saver, reported as such). Results are merged into
``results/bench_bigimage.json`` under the run's name.

    python benchmarks/bench_bigimage.py [--side 8192] [--single-level] [--object-size PX] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import tifffile
import zarr

from eval_instances import load_set, mosaic
from napari_promptseg.methods.instances import match_instances
from napari_promptseg.tiling import typical_object_size

RESULTS = Path(__file__).parent / "results" / "bench_bigimage.json"


def build(workdir: Path, side: int, levels: int) -> tuple[Path, dict]:
    """The mosaic as an OME-Zarr (and its ground truth as .npy), the reference image and labels as TIFFs."""
    from ome_zarr.format import FormatV04

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from ome_zarr.writer import write_image

    names, images, truths = load_set("ctc_gowt1")
    workdir.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(workdir / "reference.tif", images[0])
    tifffile.imwrite(workdir / "reference_labels.tif", truths[0].astype(np.uint16))
    big, big_truth, placed = mosaic([i[..., None] for i in images[1:]], truths[1:], side)
    path = workdir / f"gowt1_{side}_{levels}levels.ome.zarr"
    if not path.exists():
        root = zarr.open_group(str(path), mode="w", zarr_format=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            write_image(
                big[..., 0],
                root,
                axes="yx",
                fmt=FormatV04(),
                scale_factors=[2**k for k in range(1, levels)],
                scale={"y": 0.24, "x": 0.24},  # the GOWT1 frames' pixel size in micrometres (CTC)
                storage_options={"chunks": (1024, 1024)},
            )
    np.save(workdir / f"truth_{side}.npy", big_truth)
    info = {
        "frames": len(placed),
        "true_objects": int(len(np.unique(big_truth)) - 1),
        "reference": names[0],
        "reference_object_size_px": round(typical_object_size(truths[0]), 1),
    }
    return path, info


def run_cli(path: Path, workdir: Path, object_size: float | None) -> dict:
    """`promptseg oneshot` in a child process: its wall time, peak RSS and report."""
    out = workdir / "out"
    cmd = [
        sys.executable,
        "-c",
        "import sys; from napari_promptseg.cli import main; sys.exit(main(sys.argv[1:]))",
        "oneshot",
        str(path),
        "--reference",
        str(workdir / "reference.tif"),
        "--reference-mask",
        str(workdir / "reference_labels.tif"),
        "-o",
        str(out),
    ]
    if object_size:
        cmd += ["--object-size", str(object_size)]
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"promptseg oneshot failed with exit code {os.waitstatus_to_exitcode(status)}")
    report = json.loads((out / "report.json").read_text())
    return {"seconds": round(seconds, 1), "peak_rss_gb": round(usage.ru_maxrss / 2**20, 3), "report": report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=8192)
    parser.add_argument("--single-level", action="store_true", help="no pyramid: the full resolution is processed")
    parser.add_argument("--object-size", type=float, help="override the reference's object size (fewer tiles)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/promptseg_bench_bigimage"))
    args = parser.parse_args()
    levels = 1 if args.single_level else 4
    path, info = build(args.workdir, args.side, levels)
    run = run_cli(path, args.workdir, args.object_size)
    record = run["report"]["images"][0]
    labels = np.asarray(zarr.open_group(str(path / "labels" / "promptseg"), mode="r")["s0"])
    truth = np.load(args.workdir / f"truth_{args.side}.npy")
    metrics = match_instances(labels, truth)
    name = f"{args.side}px_{levels}levels" + (f"_object{args.object_size:g}" if args.object_size else "")
    result = {
        **info,
        "shape": [args.side, args.side],
        "pyramid_levels": levels,
        "object_size_override": args.object_size,
        "pyramid_level_read": record["pyramid_level"],
        "level_factor": record["level_factor"],
        "working_scale": record["working_scale"],
        "found": record["objects"],
        "seconds": run["seconds"],
        "peak_rss_gb": run["peak_rss_gb"],
        "timings_s": record["timings_s"],
        "f1": round(metrics["f1"], 4),
        "precision": round(metrics["precision"], 4),
        "recall": round(metrics["recall"], 4),
        "labels": record["output"],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "note": "run while other jobs shared the 2 cores (load 4-7): seconds are several times idle",
    }
    print(json.dumps(result, indent=1))
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"runs": {}}
    results["runs"][name] = result
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
