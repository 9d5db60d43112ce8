"""Where DSB fluorescence nuclei are lost to merges, and what splitting them could win (issue 10; a diagnosis that
reads the ground truth, not a method).

    python benchmarks/diagnose_merges.py            # -> results/diagnose_merges.json

The default many-instances pipeline segments every target of the set from its reference (as eval_instances.py).
A *merge* is a predicted object holding at least half of each of two or more true nuclei. Measured:
- the F1@IoU0.5 if every merge were split exactly along the true nuclei (the ceiling of any splitting);
- whether the smoothed intensity has a separate maximum in each merged nucleus (seeds from intensity peaks);
- splitting the large merges (area >= 1.5x the image's median object) with the ground truth choosing which to split
  (an oracle of the choice, not of the cut): cut by k-means of the pixel coordinates (k = 2, or 3 from 2.5x the
  median), the parts kept as they are, or each part's box given to the decoder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from scipy.cluster.vq import kmeans2
from skimage.feature import peak_local_max

from eval_instances import load_set
from napari_promptseg.methods.instances import fit_exemplars, segment_with_exemplars
from napari_promptseg.methods.interactive import segment_prompts
from napari_promptseg.methods.metrics import match_instances
from napari_promptseg.models import load_segmenter
from napari_promptseg.models.preprocessing import as_channels_last


def merged_nuclei(pred: np.ndarray, truth: np.ndarray) -> dict[int, list[int]]:
    """Predicted id -> the true ids it holds at least half of, for predictions holding two or more."""
    out = {}
    true_areas = np.bincount(truth.ravel())
    for p, sl in enumerate(ndimage.find_objects(pred), start=1):
        if sl is None:
            continue
        ids, counts = np.unique(truth[sl][pred[sl] == p], return_counts=True)
        inside = [int(g) for g, c in zip(ids, counts, strict=True) if g > 0 and c >= 0.5 * true_areas[g]]
        if len(inside) >= 2:
            out[p] = inside
    return out


def intensity_peaks(image: np.ndarray, pred: np.ndarray, truth: np.ndarray, merges: dict, size: float) -> dict:
    """How many merges the smoothed intensity's maxima separate (every nucleus gets one / some / at most one)."""
    counts = {"all": 0, "some": 0, "none": 0}
    smooth = ndimage.gaussian_filter(image.mean(-1), max(1.0, 0.1 * size))
    for p, inside in merges.items():
        mask = pred == p
        peaks = peak_local_max(
            np.where(mask, smooth, 0), min_distance=max(2, int(0.35 * size)), labels=mask.astype(int)
        )
        hit = {int(truth[r, c]) for r, c in peaks}
        got = sum(g in hit for g in inside)
        counts["all" if got == len(inside) else "some" if got > 1 else "none"] += 1
    return counts


def split_large_merges(image, pred, truth, merges, size, segmenter) -> tuple[np.ndarray, np.ndarray]:
    """The large merges cut by k-means: (labels with the parts as they are, labels with each part's decoded box)."""
    areas = np.bincount(pred.ravel())[1:]
    median = float(np.median(areas[areas > 0]))
    h, w = pred.shape
    pad = max(2.0, 0.1 * size)
    parts_labels, decoded_labels = pred.astype(np.int64), pred.astype(np.int64)
    next_id = int(pred.max()) + 1
    for p in merges:
        mask = pred == p
        ratio = mask.sum() / median
        if ratio < 1.5:
            continue
        coords = np.argwhere(mask)
        _, which = kmeans2(coords.astype(float), 2 if ratio < 2.5 else 3, seed=0, minit="++")
        parts_labels[mask] = decoded_labels[mask] = 0
        for j in np.unique(which):
            rows, cols = coords[which == j].T
            if len(rows) < 5:
                continue
            parts_labels[rows, cols] = next_id
            box = [max(0, cols.min() - pad), max(0, rows.min() - pad), min(w - 1, cols.max() + pad)]
            box.append(min(h - 1, rows.max() + pad))
            decoded = (segment_prompts(image, segmenter, boxes=[box], object_size=size).labels > 0) & mask
            decoded_labels[decoded & (decoded_labels == 0)] = next_id
            next_id += 1
    return parts_labels, decoded_labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=Path(__file__).parent / "results" / "diagnose_merges.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names, images, truths = load_set("dsb_fluorescence")
    segmenter = load_segmenter()
    model = fit_exemplars(segmenter, as_channels_last(images[0]), truths[0])
    rows = []
    for name, image, truth in zip(names[1:], images[1:], truths[1:], strict=True):
        image = as_channels_last(image)
        result = segment_with_exemplars(segmenter, model, image)
        pred, size = result.labels, result.scale.object_size
        merges = merged_nuclei(pred, truth)
        exact = pred.astype(np.int64)
        next_id = int(pred.max()) + 1
        for p, inside in merges.items():
            mask = pred == p
            exact[mask] = 0
            for g in inside:
                exact[mask & (truth == g)] = next_id
                next_id += 1
        parts, decoded = split_large_merges(image, pred, truth, merges, size, segmenter)
        row = {
            "image": name,
            "true_objects": int(len(np.unique(truth)) - 1),
            "merges": len(merges),
            "nuclei_in_merges": sum(len(v) for v in merges.values()),
            "f1": match_instances(pred, truth)["f1"],
            "f1_merges_split_exactly": match_instances(exact, truth)["f1"],
            "f1_large_merges_kmeans_parts": match_instances(parts, truth)["f1"],
            "f1_large_merges_kmeans_decoded": match_instances(decoded, truth)["f1"],
            "intensity_peaks_separate": intensity_peaks(image, pred, truth, merges, size),
        }
        rows.append(row)
        print(name[:12], {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items() if k != "image"})
    summary = {
        key: float(np.mean([r[key] for r in rows]))
        for key in ("f1", "f1_merges_split_exactly", "f1_large_merges_kmeans_parts", "f1_large_merges_kmeans_decoded")
    }
    summary["merges"] = sum(r["merges"] for r in rows)
    summary["nuclei_in_merges"] = sum(r["nuclei_in_merges"] for r in rows)
    summary["true_objects"] = sum(r["true_objects"] for r in rows)
    summary["intensity_peaks_separate"] = {
        k: sum(r["intensity_peaks_separate"][k] for r in rows) for k in ("all", "some", "none")
    }
    args.output.write_text(json.dumps({"summary": summary, "per_image": rows}, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
