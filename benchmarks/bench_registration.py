"""Registration accuracy and speed on every dev pair with landmarks, ours against itk-elastix and ANTs in one run.

Pairs: BIRL (3 synthetic + rat kidney HE/PanCytokeratin + lesions HE/proSPC) and CIMA lung-lesion_1 (HE vs CC10 at
5 % and 10 %). Methods, each timed on the same pair in the same run (the machine's load affects all alike):

* ``ours``: :func:`register` with its defaults (Python, CLI and widget route; no prompts, so "auto" runs the
  intensity route);
* ``elastix``: itk-elastix with its default rigid + affine + B-spline parameter maps;
* ``ants``: ANTsPy ``registration(type_of_transform="SyN")`` with its defaults, run in its own venv
  (``--ants-python``; antspyx needs numpy < 2.4, see ``benchmarks/ants_worker.py``);
* ablations of ours (``--ablations``): one part switched off or changed at a time.

Elastix and ANTs get the same gray images as our intensity stages (:func:`to_gray`, full resolution). Every
method's transform becomes a :class:`~napari_promptseg.methods.warp.Deformation` (elastix and ANTs through their
dense fixed -> moving maps), so landmarks are evaluated one way for all: moving landmarks mapped into the fixed
frame, TRE there, rTRE = TRE / fixed-image diagonal (ANHIR); min Jacobian relative to the orientation on the fixed
grid (<= 0: folding). The rat-kidney pair has 71 vs 69 landmarks: the first 69 correspond.

    python benchmarks/bench_registration.py [--pairs ...] [--methods ours,elastix,ants] [--ablations ...]
        [--ants-python /tmp/ants/bin/python]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from napari_promptseg.io import read_image
from napari_promptseg.io.landmarks import paired_landmarks, read_landmarks
from napari_promptseg.methods.registration import (
    DEFAULT_METHOD,
    RegistrationOptions,
    image_diagonal,
    landmark_errors,
    register,
    to_gray,
)
from napari_promptseg.methods.warp import Deformation
from napari_promptseg.models import load_segmenter

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
METHODS = ["unregistered", "ours", "elastix", "ants"]
REAL_PAIRS = ("Rat-Kidney", "Izd2-29-041-w35", "cima-lung-lesion-1-5pc", "cima-lung-lesion-1-10pc")
#: (method, options changes); most change one part of the region route (prompts+intensity) as it was measured in
#: v2-v4, when it was the default; the default itself (DEFAULT_METHOD, "auto") runs the intensity route here
ABLATIONS: dict[str, tuple[str, dict]] = {
    "no region pairs (intensity route)": ("intensity", {}),
    "no region Dice in refinement": ("prompts+intensity", {"refine_dice": 0.0}),
    "no global search": ("prompts+intensity", {"global_search": False}),
    "coarse-first starts": ("prompts+intensity", {"coarse_first": True}),
    "no SimpleITK B-spline": ("prompts+intensity", {"intensity_bspline": False}),
    "no joint refinement": ("prompts+intensity", {"joint_refinement": False}),
    "optical density gray": ("prompts+intensity", {"gray": "od"}),
    "MIND refinement": ("prompts+intensity", {"refine_similarity": "mind"}),
    "refinement up to 1024 px": (
        "prompts+intensity",
        {"refine_levels": (256, 512, 1024), "refine_iterations": (40, 20, 10)},
    ),
    "refinement up to 1024 px without region Dice": (
        "prompts+intensity",
        {"refine_levels": (256, 512, 1024), "refine_iterations": (40, 20, 10), "refine_dice": 0.0},
    ),
    "no SimpleITK B-spline; refinement from 128 px": (
        "prompts+intensity",
        {"intensity_bspline": False, "refine_levels": (128, 256, 512), "refine_iterations": (60, 40, 20)},
    ),
    "no SimpleITK B-spline; refinement from 128 to 1024 px": (
        "prompts+intensity",
        {
            "intensity_bspline": False,
            "refine_levels": (128, 256, 512, 1024),
            "refine_iterations": (60, 40, 20, 10),
        },
    ),
    "refinement from 128 px": (
        "prompts+intensity",
        {"refine_levels": (128, 256, 512), "refine_iterations": (60, 40, 20)},
    ),
    "SimpleITK baseline (v1 intensity)": ("intensity", {"global_search": False, "joint_refinement": False}),
    "automatic region starts (prompts+intensity)": ("prompts+intensity", {}),
    "regions; regular-step affine; B-spline at 192 and 384 px (the default before session 11)": (
        "prompts+intensity",
        {"affine_optimizer": "regular_step", "bspline_shrink": (2, 1)},
    ),
    "B-spline at 192 and 384 px": (DEFAULT_METHOD, {"bspline_shrink": (2, 1)}),
    "intensity route; no SimpleITK B-spline; refinement from 128 px": (
        "intensity",
        {"intensity_bspline": False, "refine_levels": (128, 256, 512), "refine_iterations": (60, 40, 20)},
    ),
    "intensity route with near-identity search": ("intensity", {"search_near_identity": True}),
    "intensity route; MIND refinement": ("intensity", {"refine_similarity": "mind"}),
    "intensity route; optical density gray": ("intensity", {"gray": "od"}),
}


def dev_pairs() -> dict[str, tuple[Path, Path, Path, Path]]:
    out = {}
    birl = DATA / "registration_birl" / "data-images"
    with open(birl / "pairs-imgs-lnds_mix.csv") as fh:
        for row in csv.DictReader(fh):
            keys = ("Target image", "Source image", "Target landmarks", "Source landmarks")
            paths = [birl.parent / row[k] for k in keys]
            stem = paths[1].stem
            name = stem.replace("artificial_moving-", "synthetic-") if "artificial" in stem else stem.split("_")[0]
            out[name] = tuple(paths)
    cima = DATA / "registration_cima_lung_lesion_1"
    with open(cima / "pairs.csv") as fh:
        for row in csv.DictReader(fh):
            keys = ("fixed_image", "moving_image", "fixed_landmarks", "moving_landmarks")
            paths = [cima / row[k] for k in keys]
            out[f"cima-lung-lesion-1-{paths[0].parent.name.split('-')[1]}"] = tuple(paths)
    return out


def map_to_deformation(map_xy: np.ndarray, fixed_shape, moving_shape) -> tuple[Deformation, np.ndarray]:
    """Dense fixed -> moving pixel map (H, W, 2; NaN where undefined, filled from the nearest defined pixel) and
    the mask of where it was defined."""
    invalid = ~np.isfinite(map_xy).all(-1)
    if invalid.any():
        index = ndimage.distance_transform_edt(invalid, return_distances=False, return_indices=True)
        map_xy = map_xy[index[0], index[1]]
    hm, wm = moving_shape
    grid = np.stack([(2 * map_xy[..., 0] + 1) / wm - 1, (2 * map_xy[..., 1] + 1) / hm - 1], -1)
    return Deformation.from_norm_grid(grid, fixed_shape, moving_shape), ~invalid


def run_elastix(
    fixed_gray: np.ndarray, moving_gray: np.ndarray
) -> tuple[tuple[Deformation, np.ndarray], float, float | None]:
    import itk

    fixed_img, moving_img = itk.GetImageFromArray(fixed_gray), itk.GetImageFromArray(moving_gray)
    parameters = itk.ParameterObject.New()
    for name in ("rigid", "affine", "bspline"):
        parameters.AddParameterMap(parameters.GetDefaultParameterMap(name))
    t0, c0 = time.perf_counter(), time.process_time()
    _, transform = itk.elastix_registration_method(
        fixed_img, moving_img, parameter_object=parameters, log_to_console=False
    )
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    # displacement on the fixed grid in physical units = pixels (spacing 1, origin 0), (dx, dy)
    with tempfile.TemporaryDirectory() as tmp:  # transformix writes deformationField.nii there (else: the cwd)
        field = itk.transformix_deformation_field(moving_img, transform, output_directory=tmp)
    field = itk.GetArrayFromImage(field).astype(np.float64)
    h, w = fixed_gray.shape
    ys, xs = np.mgrid[0:h, 0:w]
    map_xy = np.stack([xs + field[..., 0], ys + field[..., 1]], -1)
    return map_to_deformation(map_xy, fixed_gray.shape, moving_gray.shape), seconds, cpu_seconds


def run_ants(
    fixed_gray: np.ndarray, moving_gray: np.ndarray, python: str
) -> tuple[tuple[Deformation, np.ndarray], float, float | None]:
    with tempfile.TemporaryDirectory() as tmp:
        pair, out = Path(tmp) / "pair.npz", Path(tmp) / "out.npz"
        np.savez(pair, fixed=fixed_gray, moving=moving_gray)
        subprocess.run([python, str(REPO / "benchmarks" / "ants_worker.py"), str(pair), str(out)], check=True)
        result = np.load(out)
        map_xy = np.stack([result["x"], result["y"]], -1).astype(np.float64)
        seconds = float(result["seconds"])
    return map_to_deformation(map_xy, fixed_gray.shape, moving_gray.shape), seconds, None  # its own process


def min_jacobian(deformation: Deformation, defined: np.ndarray | None = None) -> float:
    """Over the fixed pixels mapped inside the moving image (and where the map was defined, 1 px in from its edge:
    ANTs leaves pixels that sample outside the moving image undefined, and their nearest-value fill is flat)."""
    jacobian = deformation.orientation * deformation.jacobian_determinant(deformation.fixed_shape)
    inside = (deformation.norm_map().abs() < 1).all(-1).numpy()
    if defined is not None:
        inside &= ndimage.binary_erosion(defined, iterations=2)
    return float(jacobian[inside].min())


def evaluate_pair(paths, methods, ablations, segmenter, ants_python) -> dict:
    fixed_path, moving_path, lf, lm = paths
    fixed, moving = read_image(fixed_path), read_image(moving_path)
    fixed_xy, moving_xy = paired_landmarks(read_landmarks(lf), read_landmarks(lm), allow_truncate=True)
    diagonal = image_diagonal(fixed.shape)
    record = {
        "fixed": str(fixed_path.relative_to(DATA)),
        "moving": str(moving_path.relative_to(DATA)),
        "fixed_shape": list(fixed.shape),
        "moving_shape": list(moving.shape),
        "landmarks": len(fixed_xy),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "methods": {},
    }
    grays = None
    runs = [(m, None) for m in methods] + [(f"ours: {a}", ABLATIONS[a]) for a in ablations]
    for name, ablation in runs:
        entry: dict = {}
        if name == "unregistered":
            record["methods"][name] = {**landmark_errors(fixed_xy, moving_xy, diagonal), "seconds": 0.0}
            continue
        if name in ("elastix", "ants"):
            if grays is None:
                grays = (to_gray(fixed[..., None] if fixed.ndim == 2 else fixed),)
                grays += (to_gray(moving[..., None] if moving.ndim == 2 else moving),)
            if name == "ants" and not ants_python:
                continue
            (deformation, defined), seconds, cpu_seconds = (
                run_elastix(*grays) if name == "elastix" else run_ants(*grays, ants_python)
            )
        else:
            method, changes = ablation or (DEFAULT_METHOD, {})
            segmenter.cache.clear()  # every run encodes its images: the timing is that of a first registration
            t0, c0 = time.perf_counter(), time.process_time()
            result = register(
                fixed, moving, segmenter=segmenter, method=method, options=replace(RegistrationOptions(), **changes)
            )
            seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
            deformation = result.deformation
            defined = None
            entry["timings"] = {k: round(v, 3) for k, v in result.timings.items()}
            entry["start"] = result.start
            entry["start_scores"] = {k: round(v, 4) for k, v in result.start_scores.items()}
            entry["stages"] = [f"{s['stage']}: {'kept' if s['accepted'] else 'rejected'}" for s in result.stages]
            entry["quality"] = result.quality
        mapped = deformation.points_to_fixed(moving_xy)
        entry = {
            **landmark_errors(fixed_xy, mapped, diagonal),
            "seconds": round(seconds, 3),
            # CPU time of this process (all its threads): less dependent on the load than the wall time, as the
            # kernel shares the cores between sessions (autogroup), not between threads
            **({"cpu_seconds": round(cpu_seconds, 3)} if cpu_seconds is not None else {}),
            "min_jacobian": round(min_jacobian(deformation, defined), 4),
            **entry,
        }
        record["methods"][name] = entry
        print(
            f"  {name:<40} rTRE median {entry['rtre_median']:.4f} mean {entry['rtre_mean']:.4f}"
            f"  {seconds:6.1f} s (cpu {entry.get('cpu_seconds', float('nan')):5.1f} s)"
            f"  min J {entry['min_jacobian']:.3f}  {entry.get('start', '')}",
            flush=True,
        )
    return record


def summary(results: dict) -> dict:
    """Median over the real pairs of each method's per-pair median rTRE, and its median time."""
    out = {}
    names = {m for rec in results["pairs"].values() for m in rec["methods"]}
    for m in sorted(names):
        recs = [results["pairs"][p]["methods"].get(m) for p in REAL_PAIRS if p in results["pairs"]]
        recs = [r for r in recs if r is not None]
        if recs:
            out[m] = {
                "median_rtre_real": round(float(np.median([r["rtre_median"] for r in recs])), 5),
                "median_seconds_real": round(float(np.median([r["seconds"] for r in recs])), 2),
                **(
                    {"median_cpu_seconds_real": round(float(np.median([r["cpu_seconds"] for r in recs])), 2)}
                    if all("cpu_seconds" in r for r in recs)
                    else {}
                ),
                "pairs": len(recs),
            }
    return out


def markdown(results: dict) -> str:
    names = list(dict.fromkeys(m for rec in results["pairs"].values() for m in rec["methods"]))
    lines = ["| pair | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for pair, rec in results["pairs"].items():
        cells = []
        for m in names:
            e = rec["methods"].get(m)
            if e is None:
                cells.append("–")
                continue
            cell = f"{e['rtre_median']:.4f} ({e['seconds']:.1f} s"
            cell += f", J≥{e['min_jacobian']:.2f})" if "min_jacobian" in e else ")"
            cells.append(cell)
        lines.append(f"| {pair} ({rec['landmarks']} lm) | " + " | ".join(cells) + " |")
    med = results["summary"]
    lines.append(
        "| **median of the real pairs** | "
        + " | ".join(
            f"**{med[m]['median_rtre_real']:.4f}** ({med[m]['median_seconds_real']:.1f} s)" if m in med else "–"
            for m in names
        )
        + " |"
    )
    lines += [
        "",
        "Cells: median rTRE of the pair's landmarks (wall time of the registration call, min Jacobian determinant "
        "on the fixed grid). rTRE = TRE / fixed-image diagonal.",
        f"1-minute load average on the 2-core machine: {results['machine']['load_average_1min']} (start, end).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--pairs", help="comma-separated subset of pair names")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--ablations", default="", help="comma-separated names of ABLATIONS, or 'all'")
    parser.add_argument("--ants-python", default="", help="python of a venv with antspyx (empty: skip ANTs)")
    parser.add_argument("--name", default="bench_registration_v4")
    args = parser.parse_args()
    load_start = round(os.getloadavg()[0], 2)
    segmenter = load_segmenter(device="cpu")
    pairs = dev_pairs()
    if args.pairs:
        pairs = {k: v for k, v in pairs.items() if k in args.pairs.split(",")}
    ablations = list(ABLATIONS) if args.ablations == "all" else [a for a in args.ablations.split(",") if a]
    results: dict = {
        "machine": {
            "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "PROMPTSEG_PRECISION": os.environ.get("PROMPTSEG_PRECISION", "(unset)"),
        },
        "model": segmenter.name,
        "methods": args.methods.split(","),
        "ablations": {a: {"method": ABLATIONS[a][0], "options": ABLATIONS[a][1]} for a in ablations},
        "pairs": {},
    }
    args.output.mkdir(parents=True, exist_ok=True)
    for name, paths in pairs.items():
        print(name, flush=True)
        results["pairs"][name] = evaluate_pair(paths, args.methods.split(","), ablations, segmenter, args.ants_python)
        results["machine"]["load_average_1min"] = [load_start, round(os.getloadavg()[0], 2)]
        results["summary"] = summary(results)
        # after every pair: a run stopped early keeps what it measured
        (args.output / f"{args.name}.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    (args.output / f"{args.name}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
