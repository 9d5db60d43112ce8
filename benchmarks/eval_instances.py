"""Many instances from one reference image, side by side with Otsu + watershed and the GT-box bound, in one run.

Sets (``../shared/data``), one reference each, every other image a target:

- ``dsb_fluorescence``: DSB2018 fluorescence images; reference the first with >= 20 nuclei (as eval_oneshot.py);
- ``ctc_gowt1`` / ``ctc_hela``: Cell Tracking Challenge frames, reference the first frame of the cell line;
- ``monuseg``: H&E nuclei, 1000 px, touching nuclei merged in the masks (Dice is the measure that counts);
- ``glas``: H&E glands, object F1 on mask components;
- ``mosaic``: the DSB fluorescence targets (or CTC frames) tiled into one 4096 px mosaic, to check that stitching
  loses nothing (F1 within 0.02 of the same images one by one) and time/memory on a large image.

Methods: ``ours`` with each refinement (fused = decoder + classifier, sam = decoder alone, none = watershed regions),
``ours-no-encoder`` (filters only), Otsu + distance-transform watershed (polarity and split distance from the
reference), and the GT-box bound (the segmenter prompted with every ground-truth object's box at the same working
scale and tiles). Writes ``results/eval_instances.json`` and prints markdown tables.

    python benchmarks/eval_instances.py [--sets dsb_fluorescence ctc_gowt1 ...] [--max-targets N] [--no-mosaic]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.measure import label
from skimage.segmentation import watershed

from eval_oneshot import DATA, dataset_pairs, load, nuclei_subset
from napari_promptseg.io import read_image
from napari_promptseg.methods.instances import (
    fit_exemplars,
    segment_with_exemplars,
)
from napari_promptseg.methods.instances.exemplars import _Timer
from napari_promptseg.methods.metrics import dice, glas_object_f1, match_instances, pooled_f1
from napari_promptseg.methods.oneshot_rotation import gray
from napari_promptseg.models import load_segmenter
from napari_promptseg.models.preprocessing import as_channels_last
from napari_promptseg.tiling import IntensityWindow, TileGrid, choose_scale, read_tile, typical_object_size

SETS = ("dsb_fluorescence", "ctc_gowt1", "ctc_hela", "monuseg", "glas")
VARIANTS = {
    "fused": {"refine": "fused", "use_encoder": True},
    "fused-whole-image": {"refine": "fused", "use_encoder": True, "local_decoding": False},
    "sam": {"refine": "sam", "use_encoder": True},
    "none": {"refine": "none", "use_encoder": True},
    "fused-no-encoder": {"refine": "fused", "use_encoder": False},
    "none-no-encoder": {"refine": "none", "use_encoder": False},
    "none-fixed-size": {"refine": "none", "use_encoder": True, "fixed_size": True},
    # diagnosis only (reads the ground truth): the target's true median object diameter as the object size
    "fused-true-size": {"refine": "fused", "use_encoder": True, "true_size": True},
}


#: variants that read the ground truth: run only when named
DIAGNOSES = {"fused-true-size"}


def load_set(name: str) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """(names, images, instance labels), the reference first."""
    if name == "dsb_fluorescence":
        pairs = dataset_pairs("nuclei_dsb2018")
        loaded = [load("nuclei_dsb2018", i, m) for i, m in pairs]
        pairs, loaded = nuclei_subset(pairs, loaded)
        return [p.name for p, _ in pairs], [img for img, _ in loaded], [read_image(m) for _, m in pairs]
    if name.startswith("ctc_"):
        line = {"ctc_gowt1": "GOWT1", "ctc_hela": "HeLa"}[name]
        root = DATA / "nuclei_ctc_fluo_instances"
        with open(root / "pairs.csv") as fh:
            pairs = [(root / r["image"], root / r["label"]) for r in csv.DictReader(fh) if line in r["image"]]
        return [p.name for p, _ in pairs], [read_image(p) for p, _ in pairs], [read_image(m) for _, m in pairs]
    folder = {"monuseg": "nuclei_monuseg_train_text", "glas": "glands_glas"}[name]
    pairs = dataset_pairs(folder)
    loaded = [load(folder, i, m) for i, m in pairs]
    return [p.name for p, _ in pairs], [img for img, _ in loaded], [label(m) for _, m in loaded]


def glas_counts(prediction: np.ndarray, truth: np.ndarray) -> dict:
    """The GlaS challenge's object F1 of one image, and its matched count (to pool the set's objects)."""
    glas = glas_object_f1(prediction, truth)
    return {"glas_f1": glas["f1"], "glas_matched": glas["matched"]}


def otsu_watershed(image: np.ndarray, bright: bool, object_size: float) -> np.ndarray:
    """Baseline: Otsu foreground (polarity from the reference), split by a distance-transform watershed whose
    seeds are at least 0.4 typical diameters apart (the reference's size), objects below 1/16 of typical dropped."""
    g = ndimage.gaussian_filter(gray(image), 1.0)
    fg = g > threshold_otsu(g) if bright else g <= threshold_otsu(g)
    fg = ndimage.binary_opening(fg)
    dist = ndimage.distance_transform_edt(fg)
    peaks = peak_local_max(dist, min_distance=max(2, int(0.4 * object_size)), labels=label(fg), exclude_border=False)
    markers = np.zeros(fg.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-dist, markers, mask=fg)
    areas = np.bincount(labels.ravel())
    small = areas < (object_size**2) * np.pi / 4 / 16
    small[0] = False
    labels[small[labels]] = 0
    return labels


def otsu_bright(reference: np.ndarray, labels: np.ndarray) -> bool:
    g = gray(reference)
    bright = g > threshold_otsu(g)
    return dice(bright, labels > 0) >= dice(~bright, labels > 0)


def gt_box_bound(segmenter, image: np.ndarray, truth: np.ndarray, object_size: float, normalize="auto") -> np.ndarray:
    """The segmenter prompted with every true object's box, in the tile that owns its centre, at the working scale."""
    hwc = as_channels_last(image)
    scale = choose_scale(hwc.shape, segmenter.input_size, object_size)
    grid = TileGrid(hwc.shape, scale.tile, scale.overlap)
    window = IntensityWindow.measure(hwc, normalize)
    out = np.zeros(truth.shape, np.int32)
    slices = ndimage.find_objects(truth)
    for tile in grid:
        owned = []
        for i, sl in enumerate(slices, start=1):
            if sl is None:
                continue
            cy, cx = (sl[0].start + sl[0].stop) / 2, (sl[1].start + sl[1].stop) / 2
            if tile.owns(np.array(cx), np.array(cy)) and sl[0].start >= tile.y0 and sl[1].start >= tile.x0:
                owned.append((i, sl))
        if not owned:
            continue
        emb = segmenter.embed(read_tile(hwc, tile, window), normalize="none")
        boxes = np.array(
            [
                (s[1].start - tile.x0, s[0].start - tile.y0, s[1].stop - 1 - tile.x0, s[0].stop - 1 - tile.y0)
                for _, s in owned
            ],
            np.float32,
        )
        pred = segmenter.predict(emb, boxes=boxes)
        for start in range(0, len(owned), 16):
            masks = pred.masks(slice(start, start + 16))[:, 0]
            for (i, _), m in zip(owned[start : start + 16], masks, strict=True):
                view = out[tile.slices]
                view[m & (view == 0)] = i
    return out


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def evaluate_set(segmenter, name: str, max_targets: int, variants: list[str]) -> dict:
    names, images, truths = load_set(name)
    last = min(len(names), max_targets + 1) if max_targets else len(names)
    ref_img, ref_lab = as_channels_last(images[0]), truths[0]
    object_size = typical_object_size(ref_lab)
    bright = otsu_bright(images[0], ref_lab)
    models, fit_s = {}, {}
    for enc in sorted({VARIANTS[v]["use_encoder"] for v in variants}):
        timer = _Timer()
        t0 = time.perf_counter()
        models[enc] = fit_exemplars(segmenter, ref_img, ref_lab, use_encoder=enc, timer=timer)
        fit_s[enc] = time.perf_counter() - t0
    rows = []
    for k in range(1, last):
        img, truth = as_channels_last(images[k]), truths[k]
        row = {"image": names[k], "true_objects": int(len(np.unique(truth)) - 1), "methods": {}}
        segmenter.cache.clear()  # the first variant pays for the embeddings, as a user would
        for v in variants:
            opts = VARIANTS[v]
            model = models[opts["use_encoder"]]
            t0 = time.perf_counter()
            res = segment_with_exemplars(
                segmenter,
                model,
                img,
                refine=opts["refine"],
                object_size=(
                    typical_object_size(truth)
                    if opts.get("true_size")
                    else model.object_size
                    if opts.get("fixed_size")
                    else None
                ),
                local_decoding=opts.get("local_decoding", True),
            )
            seconds = time.perf_counter() - t0
            row["methods"][v] = {
                **match_instances(res.labels, truth),
                **glas_counts(res.labels, truth),
                "dice": dice(res.labels > 0, truth > 0),
                "seconds": seconds,
                "timings_s": {k2: round(v2, 3) for k2, v2 in res.timings.items()},
                "tiles": res.scale.tiles,
                "scale": round(res.scale.scale, 3),
                "object_size": round(res.scale.object_size, 1),
                "true_object_size": round(typical_object_size(truth), 1),
            }
        t0 = time.perf_counter()
        ows = otsu_watershed(img, bright, object_size)
        row["methods"]["otsu_watershed"] = {
            **match_instances(ows, truth),
            **glas_counts(ows, truth),
            "dice": dice(ows > 0, truth > 0),
            "seconds": time.perf_counter() - t0,
        }
        t0 = time.perf_counter()
        gtb = gt_box_bound(segmenter, img, truth, object_size)
        row["methods"]["gt_boxes"] = {
            **match_instances(gtb, truth),
            **glas_counts(gtb, truth),
            "dice": dice(gtb > 0, truth > 0),
            "seconds": time.perf_counter() - t0,
        }
        rows.append(row)
        print(
            name,
            names[k],
            {m: (round(r["f1"], 3), round(r["dice"], 3), round(r["seconds"], 2)) for m, r in row["methods"].items()},
            flush=True,
        )
    methods = list(rows[0]["methods"]) if rows else []
    mean = {
        m: {
            key: float(np.mean([r["methods"][m][key] for r in rows]))
            for key in ("f1", "glas_f1", "precision", "recall", "dice", "seconds")
        }
        for m in methods
    }
    for m in methods:  # the set's objects counted together, as the GlaS challenge counts them
        counts = [r["methods"][m] for r in rows]
        mean[m]["f1_pooled"] = pooled_f1(counts)
        mean[m]["glas_f1_pooled"] = pooled_f1([{**c, "matched": c["glas_matched"]} for c in counts])
    return {
        "reference": names[0],
        "reference_objects": int(len(np.unique(ref_lab)) - 1),
        "object_size_px": round(object_size, 1),
        "fit_s": {("encoder" if k else "filters"): round(v, 3) for k, v in fit_s.items()},
        "candidates": {("encoder" if k else "filters"): m.candidates for k, m in models.items()},
        "candidate_scores_on_reference": {
            ("encoder" if k else "filters"): {c: round(f, 3) for c, f in m.candidate_scores.items()}
            for k, m in models.items()
        },
        "targets": len(rows),
        "mean": mean,
        "per_image": rows,
    }


def mosaic(images: list[np.ndarray], truths: list[np.ndarray], side: int = 4096) -> tuple[np.ndarray, np.ndarray, list]:
    """Tile images (cropped/padded cells of equal size) into a side x side mosaic; labels follow with new ids."""
    ch, cw = max(i.shape[0] for i in images), max(i.shape[1] for i in images)
    c = images[0].shape[-1]
    out = np.zeros((side, side, c), images[0].dtype)
    lab = np.zeros((side, side), np.uint32)
    placed, offset, k = [], 0, 0
    for r in range(side // ch):
        for q in range(side // cw):
            img, t = images[k % len(images)], truths[k % len(truths)]
            y, x = r * ch, q * cw
            out[y : y + img.shape[0], x : x + img.shape[1]] = img
            lab[y : y + t.shape[0], x : x + t.shape[1]] = np.where(t > 0, t.astype(np.uint32) + offset, 0)
            offset += int(t.max())
            placed.append((k % len(images), y, x))
            k += 1
    return out, lab, placed


def evaluate_mosaic(segmenter, variant: str = "fused", side: int = 4096) -> dict:
    """CTC HeLa frames (one acquisition) tiled into a side x side mosaic: time, memory, and F1 against the same
    frames processed one by one (the reference's object size for both, so only the stitching differs)."""
    names, images, truths = load_set("ctc_hela")
    ref_img, ref_lab = as_channels_last(images[0]), truths[0]
    targets = [as_channels_last(i) for i in images[1:]]
    big, big_truth, placed = mosaic(targets, truths[1:], side)
    opts = VARIANTS[variant]
    model = fit_exemplars(segmenter, ref_img, ref_lab, use_encoder=opts["use_encoder"])
    segmenter.cache.clear()
    segmenter.cache.maxsize = 8
    t0 = time.perf_counter()
    res = segment_with_exemplars(segmenter, model, big, refine=opts["refine"], object_size=model.object_size)
    seconds = time.perf_counter() - t0
    big_metrics = {**match_instances(res.labels, big_truth), "dice": dice(res.labels > 0, big_truth > 0)}
    singles = {}
    for idx in sorted({p[0] for p in placed}):
        singles[idx] = segment_with_exemplars(
            segmenter, model, targets[idx], refine=opts["refine"], object_size=model.object_size
        ).labels
    one_by_one = np.zeros_like(big_truth)
    offset = 0
    for idx, y, x in placed:
        s = singles[idx]
        one_by_one[y : y + s.shape[0], x : x + s.shape[1]] = np.where(s > 0, s.astype(np.uint32) + offset, 0)
        offset += int(s.max())
    single_metrics = {**match_instances(one_by_one, big_truth), "dice": dice(one_by_one > 0, big_truth > 0)}
    return {
        "variant": variant,
        "shape": list(big.shape),
        "frames": len(placed),
        "true_objects": int(len(np.unique(big_truth)) - 1),
        "found": int(len(res.scores)),
        "seconds": seconds,
        "timings_s": {k: round(v, 2) for k, v in res.timings.items()},
        "scale": res.scale.summary(),
        "blank_tiles": res.blank_tiles,
        "peak_rss_gb": round(peak_rss_gb(), 2),
        "mosaic": big_metrics,
        "one_by_one": single_metrics,
    }


def evaluate_speed(segmenter, sets: list[str], side: int = 512, repeats: int = 3) -> dict:
    """Seconds per ``side``-px image, end to end from a cold embedding cache: the centre crop of every target of
    ``sets`` whose sides are both >= ``side`` (the reference of each set fits the model once, not timed)."""
    out: dict = {"side": side, "repeats": repeats, "images": []}
    for name in sets:
        names, images, truths = load_set(name)
        model = fit_exemplars(segmenter, as_channels_last(images[0]), truths[0])
        for k in range(1, len(names)):
            img, truth = as_channels_last(images[k]), truths[k]
            h, w = truth.shape
            if min(h, w) < side:
                continue
            y, x = (h - side) // 2, (w - side) // 2
            crop, crop_truth = (
                np.ascontiguousarray(img[y : y + side, x : x + side]),
                truth[y : y + side, x : x + side],
            )
            times, res = [], None
            for _ in range(repeats):
                segmenter.cache.clear()
                t0 = time.perf_counter()
                res = segment_with_exemplars(segmenter, model, crop)
                times.append(time.perf_counter() - t0)
            row = {
                "set": name,
                "image": names[k],
                "true_objects": int(len(np.unique(crop_truth)) - 1),
                "found": int(len(res.scores)),
                "f1": match_instances(res.labels, crop_truth)["f1"],
                "seconds_median": float(np.median(times)),
                "seconds": [round(t, 3) for t in times],
                "timings_s": {k2: round(v2, 3) for k2, v2 in res.timings.items()},
                "tiles": res.scale.tiles,
                "load_average_1min": os.getloadavg()[0],
            }
            out["images"].append(row)
            print("speed", {k2: v2 for k2, v2 in row.items() if k2 != "timings_s"}, flush=True)
    secs = [r["seconds_median"] for r in out["images"]]
    out["median_seconds"] = float(np.median(secs)) if secs else None
    out["max_seconds"] = float(np.max(secs)) if secs else None
    return out


def markdown(results: dict) -> str:
    sets = results["sets"]
    methods = list(next(iter(sets.values()))["mean"]) if sets else []
    lines = [
        "| set | targets | " + " | ".join(f"{m} F1 / Dice / s" for m in methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    for name, s in sets.items():
        cells = [
            f"{s['mean'][m]['f1']:.3f} / {s['mean'][m]['dice']:.3f} / {s['mean'][m]['seconds']:.2f}" for m in methods
        ]
        lines.append(f"| {name} | {s['targets']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> dict:
    """Threads, and the encoder precision that ran (``auto``: bfloat16 on CPUs with native bfloat16, float32
    elsewhere)."""
    from napari_promptseg.models.sam_family import cpu_has_native_bfloat16, resolve_precision

    return {
        "threads": torch.get_num_threads(),
        "cpu_has_native_bfloat16": cpu_has_native_bfloat16(),
        "encoder_precision": resolve_precision(None, torch.device("cpu")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument(
        "--variants", nargs="+", default=[v for v in VARIANTS if v not in DIAGNOSES], choices=list(VARIANTS)
    )
    parser.add_argument("--max-targets", type=int, default=0, help="targets per set (0 = all)")
    parser.add_argument("--no-mosaic", action="store_true")
    parser.add_argument("--only-mosaic", action="store_true")
    parser.add_argument("--mosaic-side", type=int, default=4096)
    parser.add_argument(
        "--speed", action="store_true", help="only time 512 px centre crops of the targets (eval_instances_speed.json)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--name", default="eval_instances", help="name of the JSON written to --output")
    parser.add_argument("-o", "--output", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    segmenter = load_segmenter(device="cpu")
    segmenter.cache.maxsize = 256
    args.output.mkdir(parents=True, exist_ok=True)
    if args.speed:
        load_before = os.getloadavg()
        speed = evaluate_speed(segmenter, args.sets)
        speed["machine"] = {**machine(), "load_average": [load_before, os.getloadavg()]}
        path = args.output / f"{'eval_instances_speed' if args.name == 'eval_instances' else args.name}.json"
        path.write_text(json.dumps(speed, indent=2))
        print(f"median {speed['median_seconds']} s, worst {speed['max_seconds']} s; written {path}")
        return
    results = {"sets": {}, "variants": {v: VARIANTS[v] for v in args.variants}}
    for name in [] if args.only_mosaic else args.sets:
        t0 = time.perf_counter()
        results["sets"][name] = evaluate_set(segmenter, name, args.max_targets, args.variants)
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    if not args.no_mosaic:
        results["mosaic"] = evaluate_mosaic(segmenter, args.variants[0], args.mosaic_side)
        print("mosaic", json.dumps(results["mosaic"], indent=1), flush=True)
    results["machine"] = {**machine(), "python": platform.python_version(), "load_average_1min": os.getloadavg()[0]}
    path = args.output / f"{args.name}.json"
    path.write_text(json.dumps(results, indent=2))
    print(markdown(results))
    print(f"written {path}")


if __name__ == "__main__":
    main()
