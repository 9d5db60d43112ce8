"""3D stacks: propagation from one plane's box vs. the per-plane ground-truth-box bound, on the real MRI volume and on
stacks built from real nuclei images; plane-by-plane one-shot instances with ids linked across planes.

MRI (``../shared/data/brain_mri_1vol``, planes along the first axis): for each compact FreeSurfer structure (the
subcortical ones, ventricles, brainstem, cerebellum; not cortex, white matter or choroid plexus, whose shapes no box
describes), the seed is the ground-truth box on the plane where the structure is largest, carried through the volume
by ``propagate_through_stack`` with its defaults (and, for sensitivity, other stop thresholds). The bound prompts every
plane of the structure with its own ground-truth box. Target: Dice >= 0.8 x the bound.

Nuclei stacks: DSB2018 fluorescence images (the eval_instances reference first) made into 9-plane stacks: each
nucleus a spheroid whose cross-section shrinks away from its own centre plane (real texture inside, the image's
background outside; 3D ground-truth ids). Propagation seeds every nucleus' box on the middle plane; the bound boxes
every nucleus on every plane; plane-by-plane runs one-shot instances (reference: the first image) on every plane and
links ids by overlap. Measures: 3D instance F1 at IoU 0.5 and foreground Dice.

    python benchmarks/bench_volume.py [--structures 10 49 ...] [--stacks N]

Writes ``results/bench_volume.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from eval_instances import DATA, load_set
from napari_promptseg._sample_data import spheroid_stack
from napari_promptseg.methods.instances import fit_exemplars, match_instances, segment_with_exemplars
from napari_promptseg.methods.interactive import segment_prompts
from napari_promptseg.methods.metrics import dice
from napari_promptseg.methods.volume import STOP_IOU, propagate_through_stack, segment_stack
from napari_promptseg.models import load_segmenter
from napari_promptseg.models.preprocessing import as_channels_last

RESULTS = Path(__file__).parent / "results" / "bench_volume.json"
#: FreeSurfer ids of compact structures (left/right): lateral ventricle, thalamus, caudate, putamen, pallidum,
#: hippocampus, amygdala, ventral DC, cerebellum white matter and cortex; brainstem, 3rd and 4th ventricle
STRUCTURES = {
    4: "L lateral ventricle",
    43: "R lateral ventricle",
    10: "L thalamus",
    49: "R thalamus",
    11: "L caudate",
    50: "R caudate",
    12: "L putamen",
    51: "R putamen",
    13: "L pallidum",
    52: "R pallidum",
    17: "L hippocampus",
    53: "R hippocampus",
    18: "L amygdala",
    54: "R amygdala",
    28: "L ventral DC",
    60: "R ventral DC",
    7: "L cerebellum WM",
    46: "R cerebellum WM",
    8: "L cerebellum cortex",
    47: "R cerebellum cortex",
    16: "brainstem",
    14: "3rd ventricle",
    15: "4th ventricle",
}
SENSITIVITY = (0.3, 0.7)  # other stop thresholds, for the table


def gt_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    rows, cols = np.nonzero(mask)
    return cols.min(), rows.min(), max(cols.max(), cols.min() + 1), max(rows.max(), rows.min() + 1)


def mri(segmenter, labels: list[int]) -> dict:
    scan = np.load(DATA / "brain_mri_1vol" / "test_scan.npz")
    vol, seg = scan["vol"].astype(np.float32), scan["seg"].astype(np.int32)
    rows = {}
    for lab in labels:
        truth = seg == lab
        areas = truth.sum((1, 2))
        seed = int(np.argmax(areas))
        t0 = time.perf_counter()
        result = propagate_through_stack(vol, seed, boxes=[gt_box(truth[seed])], segmenter=segmenter, name="mri")
        seconds = time.perf_counter() - t0
        bound = np.zeros_like(truth)
        for z in np.nonzero(areas)[0]:
            bound[z] = segment_prompts(vol[z], segmenter, boxes=[gt_box(truth[z])], name="mri").labels > 0
        first, last = result.extents.get(1, (seed, seed))
        row = {
            "name": STRUCTURES.get(lab, str(lab)),
            "planes_true": [int(np.nonzero(areas)[0].min()), int(np.nonzero(areas)[0].max())],
            "planes_found": [first, last],
            "seed_plane": seed,
            "dice": dice(result.labels > 0, truth),
            "bound": dice(bound, truth),
            "seconds": round(seconds, 2),
            "stops": result.stops.get(1, {}),
        }
        row["ratio"] = row["dice"] / max(row["bound"], 1e-6)
        for stop in SENSITIVITY:
            other = propagate_through_stack(
                vol, seed, boxes=[gt_box(truth[seed])], segmenter=segmenter, stop_iou=stop, name="mri"
            )
            row[f"dice_stop{stop}"] = dice(other.labels > 0, truth)
        rows[lab] = row
        print(
            f"{lab:3d} {row['name']:22s} dice {row['dice']:.3f} bound {row['bound']:.3f} ratio {row['ratio']:.2f}"
            f" planes {row['planes_found']} of {row['planes_true']}",
            flush=True,
        )
    return rows


def nuclei(segmenter, n_stacks: int, planes: int = 9) -> dict:
    names, images, truths = load_set("dsb_fluorescence")
    reference = as_channels_last(images[0])
    model = fit_exemplars(segmenter, reference, truths[0])
    rows = []
    for k in range(1, n_stacks + 1):
        image = as_channels_last(images[k])[..., 0]
        stack, truth = spheroid_stack(image, truths[k].astype(np.int64), planes, seed=k)
        middle = planes // 2
        ids = [int(i) for i in np.unique(truth[middle]) if i]
        boxes = [gt_box(truth[middle] == i) for i in ids]
        t0 = time.perf_counter()
        propagated = propagate_through_stack(stack, middle, boxes=boxes, segmenter=segmenter, name=names[k])
        propagate_s = time.perf_counter() - t0
        bound = np.zeros_like(truth)
        for z in range(planes):
            present = [int(i) for i in np.unique(truth[z]) if i]
            if present:
                found = segment_prompts(stack[z], segmenter, boxes=[gt_box(truth[z] == i) for i in present]).labels
                lut = np.array([0, *present])
                bound[z] = lut[found]
        t0 = time.perf_counter()
        planewise = segment_stack(
            stack, lambda plane, z: segment_with_exemplars(segmenter, model, plane[..., None], name=f"plane {z}")
        )
        planewise_s = time.perf_counter() - t0
        seeded = np.isin(truth, ids)  # propagation can only find the nuclei present on its seed plane
        row = {"image": names[k], "nuclei": int(len(np.unique(truth)) - 1), "seeded_nuclei": len(ids)}
        for name, labels, truth_k in (
            ("propagated", propagated.labels, np.where(seeded, truth, 0)),
            ("bound", bound, np.where(seeded, truth, 0)),
            ("bound_all", bound, truth),
            ("planewise", planewise.labels, truth),
        ):
            m = match_instances(labels, truth_k)
            row[name] = {"f1": m["f1"], "dice": dice(labels > 0, truth_k > 0)}
        row["seconds"] = {"propagated": round(propagate_s, 1), "planewise": round(planewise_s, 1)}
        rows.append(row)
        print(row, flush=True)
    mean = {
        key: {m: float(np.mean([r[key][m] for r in rows])) for m in ("f1", "dice")}
        for key in ("propagated", "bound", "bound_all", "planewise")
    }
    return {"reference": names[0], "planes": planes, "stacks": rows, "mean": mean}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structures", type=int, nargs="*", default=list(STRUCTURES), help="none: skip the MRI")
    parser.add_argument("--stacks", type=int, default=4, help="nuclei stacks (DSB fluorescence images); 0: skip")
    args = parser.parse_args()
    segmenter = load_segmenter("litemedsam", device="cpu")
    segmenter.cache.maxsize = 256  # the MRI planes are embedded once, for the bound and every propagation
    # a part that is not run keeps its earlier results
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results.update(
        model=segmenter.name,
        stop_iou=STOP_IOU,
        machine=f"{platform.machine()}, {os.cpu_count()} cores",
        note="run while other jobs shared the 2 cores (load 4-8): seconds are several times idle",
    )
    if args.structures:
        results["mri"] = mri(segmenter, args.structures)
        rows = results["mri"].values()
        ratios = [r["ratio"] for r in rows]
        results["mri_summary"] = {
            "structures": len(ratios),
            "mean_ratio": float(np.mean(ratios)),
            "median_ratio": float(np.median(ratios)),
            "at_least_0.8": int(sum(r >= 0.8 for r in ratios)),
            "mean_dice": float(np.mean([r["dice"] for r in rows])),
            "mean_bound": float(np.mean([r["bound"] for r in rows])),
        }
        print(json.dumps(results["mri_summary"], indent=1))
    if args.stacks:
        results["nuclei"] = nuclei(segmenter, args.stacks)
        print(json.dumps(results["nuclei"]["mean"], indent=1))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
