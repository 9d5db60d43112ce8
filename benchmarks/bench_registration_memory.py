"""Peak memory of a registration and its warp, per pixel: where :data:`FIXED_BYTES_PER_PIXEL` and
:data:`MOVING_BYTES_PER_PIXEL` (``methods/registration/pipeline.py``) come from.

Each case runs in a child process: the BIRL artificial pair (``../shared/data/registration_birl``, 800 x 600 px RGB)
is resized to the case's sizes (grey: its mean), then ``register()`` (method "intensity", the default without prompts)
and ``warp_image`` run on it. The memory a registration needs is the child's peak RSS (``ru_maxrss``) minus its RSS
just before ``register()`` (imports done, both images in memory: what ``check_memory`` sees as already used). The
per-pixel figures are a least-squares fit of that extra over the cases' fixed and moving pixels and a fixed part.

    python benchmarks/bench_registration_memory.py            # all cases, a table and the fit
    python benchmarks/bench_registration_memory.py --child FH FW MH MW C [--method prompts+intensity]
    python benchmarks/bench_registration_memory.py --parts    # the part of any size: what a first run loads

``--parts``: the part of any size is paid once per process. Each case, in a child process, runs what it says before
(nothing, an "intensity" registration, loading LiteMedSAM), then resets the peak (``/proc/self/clear_refs``) and
measures one registration and warp of a 300 x 400 px RGB pair (VmHWM minus VmRSS before it). The text routes'
models (GroundingDINO, CLIPSeg) are not measured: ``check_memory`` does not count them.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BIRL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "registration_birl" / "data-images" / "images"
#: (fixed rows, fixed columns, moving rows, moving columns, channels)
CASES = [
    (1500, 2000, 1500, 2000, 3),
    (3000, 4000, 3000, 4000, 3),
    (3000, 4000, 1500, 2000, 3),
    (1500, 2000, 3000, 4000, 3),
    (1500, 2000, 1500, 2000, 1),
    (3000, 4000, 3000, 4000, 1),
]


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def child(fh: int, fw: int, mh: int, mw: int, channels: int, method: str = "intensity") -> dict:
    from PIL import Image

    from napari_promptseg.methods.registration import register

    def load(name: str, h: int, w: int) -> np.ndarray:
        image = np.asarray(Image.open(BIRL / f"{name}.jpg").convert("RGB").resize((w, h), Image.BILINEAR))
        return image if channels == 3 else image.mean(-1).astype(np.uint8)

    fixed, moving = load("artificial_reference", fh, fw), load("artificial_moving-affine", mh, mw)
    before = _rss()
    t0 = time.perf_counter()
    result = register(fixed, moving, method=method)
    warped = result.warp_image(moving)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert warped.shape[:2] == (fh, fw)
    return {"case": [fh, fw, mh, mw, channels], "method": method, "extra_bytes": peak - before, "seconds": seconds}


#: --parts: (name, method, what runs before the measured one)
PARTS = [
    ("intensity, first", "intensity", ()),
    ("intensity, after one", "intensity", ("intensity",)),
    ("prompts+intensity, first of both", "prompts+intensity", ()),
    ("prompts+intensity, segmenter loaded", "prompts+intensity", ("load",)),
    ("prompts+intensity, after an intensity run", "prompts+intensity", ("intensity",)),
    ("prompts+intensity, after an intensity run, segmenter loaded", "prompts+intensity", ("intensity", "load")),
    ("prompts+intensity, after one", "prompts+intensity", ("load", "prompts+intensity")),
]


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))


def part_child(index: int) -> dict:
    from PIL import Image

    from napari_promptseg.methods.registration import register

    name, method, before = PARTS[index]

    def load(stem: str) -> np.ndarray:
        return np.asarray(Image.open(BIRL / f"{stem}.jpg").convert("RGB").resize((400, 300), Image.BILINEAR))

    fixed, moving = load("artificial_reference"), load("artificial_moving-affine")
    segmenter = None
    for step in before:
        if step == "load":
            from napari_promptseg.models import load_segmenter

            segmenter = load_segmenter()
        else:
            register(fixed, moving, method=step, segmenter=segmenter).warp_image(moving)
    with open("/proc/self/clear_refs", "w") as f:  # the peak so far forgotten: VmHWM starts again at VmRSS
        f.write("5")
    rss = _status("VmRSS")
    register(fixed, moving, method=method, segmenter=segmenter).warp_image(moving)
    return {"case": name, "extra_bytes": _status("VmHWM") - rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=5, type=int)
    parser.add_argument("--method", default="intensity", help="a child's method (prompts+intensity: LiteMedSAM)")
    parser.add_argument("--parts", action="store_true", help="the part of any size, paid once per process")
    parser.add_argument("--part-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part_child is not None:
        print(json.dumps(part_child(args.part_child)))
        return
    if args.parts:
        for index in range(len(PARTS)):
            command = [sys.executable, __file__, "--part-child", str(index)]
            out = subprocess.run(command, capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{row['case']}: {row['extra_bytes'] / 1e9:.2f} GB", flush=True)
        return
    if args.child:
        print(json.dumps(child(*args.child, method=args.method)))
        return
    rows = []
    for case in CASES:
        out = subprocess.run(
            [sys.executable, __file__, "--child", *map(str, case)], capture_output=True, text=True, check=True
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        fh, fw, mh, mw, c = case
        row["per_pixel_of_both"] = row["extra_bytes"] / (fh * fw + mh * mw)
        rows.append(row)
        print(json.dumps(row), flush=True)
    fixed = np.array([r["case"][0] * r["case"][1] for r in rows], float)
    moving = np.array([r["case"][2] * r["case"][3] for r in rows], float)
    extra = np.array([r["extra_bytes"] for r in rows], float)
    # the extra is a fixed part (the stages' own small images, torch's and SimpleITK's buffers) and bytes per pixel
    for name, channels in (("RGB", 3), ("grey", 1)):
        kind = np.array([r["case"][4] == channels for r in rows])
        design = np.stack([fixed, moving, np.ones_like(fixed)], 1)[kind]
        if len(np.unique(design[:, :2], axis=0)) < 3:  # grey: same-size pairs only, one per pixel of both
            design = np.stack([fixed + moving, np.ones_like(fixed)], 1)[kind]
        coef, *_ = np.linalg.lstsq(design, extra[kind], rcond=None)
        print(f"{name} fit: bytes per pixel (fixed, moving or both) and fixed part", np.round(coef, 1).tolist())


if __name__ == "__main__":
    main()
