"""Accuracy of box and click prompts on the shared datasets (ground truth -> prompts -> Dice).

For every image: boxes of the ground-truth components (the model's upper bound with perfect boxes), and one click
at a central pixel of the largest component, answered with and without the box search that box-trained models
need. Writes JSON and prints a markdown table.

    python benchmarks/eval_prompts.py --output benchmarks/results [--limit N]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from skimage.measure import label, regionprops

from napari_promptseg.io import read_image, read_mask
from napari_promptseg.methods import interactive
from napari_promptseg.methods.interactive import ObjectPrompt, boxes_from_labels, segment_prompts
from napari_promptseg.methods.metrics import dice
from napari_promptseg.models import load_segmenter

REPO = Path(__file__).resolve().parents[1]
DATASETS = ["lungs_cxr_shenzhen", "polyps_kvasir_text", "glands_glas", "em_isbi2012"]


def pairs(root: Path) -> list[tuple[Path, Path]]:
    if (root / "pairs.csv").is_file():
        with open(root / "pairs.csv") as fh:
            return [(root / r["image"], root / r["mask"]) for r in csv.DictReader(fh)]
    return [(p, root / "masks" / p.name) for p in sorted((root / "images").iterdir())]


def click_dice(segmenter, image: np.ndarray, truth: np.ndarray, box_search: bool) -> float:
    components = label(truth)
    obj = max(regionprops(components), key=lambda r: r.area)
    y, x = (int(v) for v in obj.coords[len(obj.coords) // 2])
    if box_search:
        labels = segment_prompts(image, segmenter, positive_points=[(x, y)]).labels
    else:  # the plain decoder call that a box-trained model gets without the search
        embedding = segmenter.embed(image)
        logits, _ = interactive._decode(segmenter, embedding, [ObjectPrompt(points=[(x, y)], labels=[1])])
        labels = (embedding.transform.logits_to_original(logits)[0, 0] > 0).numpy()
    return dice(labels > 0, components == obj.label)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--model", default="litemedsam")
    parser.add_argument("--limit", type=int, default=None, help="images per dataset")
    args = parser.parse_args()
    segmenter = load_segmenter(args.model, device="cpu")
    results: dict = {
        "model": args.model,
        "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform()},
        "datasets": {},
    }
    for name in DATASETS:
        rows = []
        for image_path, mask_path in pairs(args.data / name)[: args.limit]:
            image, truth = read_image(image_path), read_mask(mask_path)
            t0 = time.perf_counter()
            boxed = segment_prompts(image, segmenter, boxes=boxes_from_labels(truth, min_area=50)).labels
            rows.append(
                {
                    "image": image_path.name,
                    "box_dice": dice(boxed > 0, truth),
                    "click_dice_box_search": click_dice(segmenter, image, truth, True),
                    "click_dice_plain": click_dice(segmenter, image, truth, False),
                    "seconds": time.perf_counter() - t0,
                }
            )
        results["datasets"][name] = {
            "images": len(rows),
            **{k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "image"},
            "per_image": rows,
        }
    args.output.mkdir(parents=True, exist_ok=True)
    out = args.output / f"eval_prompts_{args.model}.json"
    out.write_text(json.dumps(results, indent=2))
    print("| dataset | images | Dice, GT boxes | Dice, one click + box search | Dice, one click plain |")
    print("|---|---|---|---|---|")
    for name, r in results["datasets"].items():
        print(
            f"| {name} | {r['images']} | {r['box_dice']:.3f} | {r['click_dice_box_search']:.3f} | "
            f"{r['click_dice_plain']:.3f} |"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
