"""Registration from a text prompt answered offline by the reference library, on real chest X-rays with a known affine.

For each of several patients' X-rays (Shenzhen set, ../shared/data/lungs_cxr_shenzhen), the moving image is the
X-ray pulled through a known affine; registration with ``prompts="lungs"`` (library route: one entry "lung" made from
another patient's X-ray and its ground-truth mask, SAT on both images), with a one-shot reference as the prompt, and
with the automatic regions, all ``method="prompts"`` (region pairs only, no intensity stage). Error = mean distance on
a 64 px grid of fixed points between where the transform maps the true moving position and the fixed point.

    python benchmarks/bench_registration_text.py --output benchmarks/results [--images 6]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_promptseg.io import read_image, read_mask
from napari_promptseg.io.library import ReferenceLibrary
from napari_promptseg.methods.prompt_regions import OneShotRegions
from napari_promptseg.methods.registration import register
from napari_promptseg.methods.warp import Deformation
from napari_promptseg.models import load_segmenter

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "lungs_cxr_shenzhen"
#: the same known affine as tests/test_registration_text.py (fixed pixel -> moving pixel)
AFFINE = np.array([[0.95, -0.10, 25.0], [0.08, 1.03, -15.0], [0.0, 0.0, 1.0]])


def grid_errors(result, s: Deformation, shape, step: int = 64) -> tuple[float, float, float]:
    ys, xs = np.mgrid[step // 2 : shape[0] : step, step // 2 : shape[1] : step]
    fixed_xy = np.stack([xs.ravel(), ys.ravel()], 1).astype(float)
    true_moving = s.points_to_fixed(fixed_xy)
    before = np.linalg.norm(true_moving - fixed_xy, axis=1)
    after = np.linalg.norm(result.moving_points_to_fixed(true_moving) - fixed_xy, axis=1)
    return float(before.mean()), float(after.mean()), float(after.max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--images", type=int, default=6, help="fixed X-rays (patients 2..n+1; patient 1 = exemplar)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    with open(DATA / "pairs.csv") as fh:
        pairs = [(DATA / r["image"], DATA / r["mask"]) for r in csv.DictReader(fh)]
    segmenter = load_segmenter("litemedsam", device="cpu")
    reference, reference_mask = read_image(pairs[0][0])[..., 0], read_mask(pairs[0][1])
    library = ReferenceLibrary.open(Path(tempfile.mkdtemp()) / "library")
    library.add("lung", reference, reference_mask, description="lung fields of a chest X-ray", source=pairs[0][0].name)
    routes = {
        "text 'lungs' (library)": lambda: "lungs",
        "one-shot reference": lambda: OneShotRegions(reference, reference_mask, name="lung", segmenter=segmenter),
        "automatic regions": lambda: None,
    }
    records = []
    for image_path, _ in pairs[1 : 1 + args.images]:
        fixed = read_image(image_path)[..., 0]
        s = Deformation.from_pixel_affine(AFFINE, fixed.shape, fixed.shape)
        moving = s.warp_image(fixed)
        record = {"image": image_path.name, "shape": list(fixed.shape), "routes": {}}
        for name, prompts in routes.items():
            t0 = time.perf_counter()
            try:
                result = register(fixed, moving, prompts(), method="prompts", segmenter=segmenter, library=library)
            except Exception as exc:  # noqa: BLE001 - a failed route is a result of the benchmark
                record["routes"][name] = {"error": str(exc)}
                continue
            before, after, worst = grid_errors(result, s, fixed.shape)
            record["routes"][name] = {
                "grid_error_before_px": round(before, 2),
                "grid_error_after_px": round(after, 2),
                "grid_error_max_px": round(worst, 2),
                "pairs": [p.prompt for p in result.pairs],
                "text_route": result.text_route,
                "seconds": round(time.perf_counter() - t0, 2),
            }
            print(image_path.name, name, record["routes"][name], flush=True)
        records.append(record)
    summary = {}
    for name in routes:
        ok = [r["routes"][name] for r in records if "error" not in r["routes"][name]]
        summary[name] = {
            "images": len(records),
            "failed": len(records) - len(ok),
            "grid_error_after_px_mean": round(float(np.mean([o["grid_error_after_px"] for o in ok])), 2)
            if ok
            else None,
            "grid_error_after_px_max": round(float(np.max([o["grid_error_after_px"] for o in ok])), 2) if ok else None,
            "seconds_mean": round(float(np.mean([o["seconds"] for o in ok])), 2) if ok else None,
        }
    out = {
        "benchmark": "registration from text / one-shot / automatic region prompts, known affine on chest X-rays",
        "affine_fixed_to_moving_px": AFFINE.tolist(),
        "exemplar": pairs[0][0].name,
        "method": "prompts",
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "load": os.getloadavg()},
        "summary": summary,
        "images": records,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / "bench_registration_text.json"
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
