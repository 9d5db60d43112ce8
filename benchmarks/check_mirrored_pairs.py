"""The real lesion pairs with their moving image mirrored (a section mounted upside down): is the mirror found, how
far are the landmarks, and by how much does the mirrored start beat the best unmirrored one (the quality report's
``mirror_margin``; "good" needs 0.02)?

    python benchmarks/check_mirrored_pairs.py [-o benchmarks/results/mirrored_pairs.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench_registration import dev_pairs
from napari_promptseg.io import read_image
from napari_promptseg.io.landmarks import read_landmarks
from napari_promptseg.methods.registration import image_diagonal, landmark_errors, register

PAIRS = ("Izd2-29-041-w35", "cima-lung-lesion-1-5pc")
QUALITY_KEYS = ("mirrored", "mirror_margin", "verdict")


def mirrored_pair(name: str) -> dict:
    fixed_path, moving_path, fixed_landmarks, moving_landmarks = dev_pairs()[name]
    fixed, moving = read_image(fixed_path), read_image(moving_path)
    fixed_xy, moving_xy = read_landmarks(fixed_landmarks).xy, read_landmarks(moving_landmarks).xy
    width = moving.shape[1]
    moving = np.ascontiguousarray(moving[:, ::-1])
    moving_xy = np.stack([width - 1 - moving_xy[:, 0], moving_xy[:, 1]], 1)
    n = min(len(fixed_xy), len(moving_xy))  # as ANHIR: the first min(n) correspond
    t0 = time.perf_counter()
    result = register(fixed, moving)
    seconds = time.perf_counter() - t0
    mapped = result.moving_points_to_fixed(moving_xy[:n])
    errors = landmark_errors(fixed_xy[:n], mapped, image_diagonal(result.deformation.fixed_shape))
    return {
        **{key: result.quality.get(key) for key in QUALITY_KEYS},
        "start": result.start,
        "rtre_median": round(errors["rtre_median"], 5),
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, default=Path(__file__).parent / "results" / "mirrored_pairs.json")
    args = parser.parse_args()
    results = {}
    for name in PAIRS:
        results[name] = mirrored_pair(name)
        print(name, results[name], flush=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
