"""The offline text route: a reference library (one exemplar per shared dataset) answers typed prompts.

1. Builds a fresh library (in a temporary directory) with one exemplar per dataset: the first image and its mask
   (nuclei: the first fluorescence image with >= 20 nuclei, as in eval_oneshot.py), under a name and description.
2. Matches prompt variants per dataset ("lungs", "colon polyp", "glands", "nuclei", ...) and unrelated prompts with
   the bundled all-MiniLM-L6-v2; the chosen entry must be the dataset's own (unrelated prompts: none).
3. Segments the next ``--targets`` images of each dataset through ``segment_with_library`` (SAT with the cropped
   library exemplar) and, side by side, ``segment_like`` with the whole reference image (what the crop costs).
4. Records the cosine similarities of synonym and unrelated word pairs behind ``min_similarity``.

    python benchmarks/eval_library.py [--targets 6] [-o benchmarks/results]

Writes ``library_route.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_oneshot import dataset_pairs, load, nuclei_subset  # noqa: E402
from napari_promptseg.io import read_image  # noqa: E402
from napari_promptseg.io.library import DEFAULT_MARGIN, ReferenceLibrary  # noqa: E402
from napari_promptseg.methods.instances import match_instances  # noqa: E402
from napari_promptseg.methods.library import (  # noqa: E402
    DEFAULT_MAX_GAP,
    DEFAULT_MIN_SIMILARITY,
    match_library,
    rank_library,
    segment_with_library,
)
from napari_promptseg.methods.metrics import dice  # noqa: E402
from napari_promptseg.methods.oneshot import segment_like  # noqa: E402
from napari_promptseg.models import load_segmenter, load_text_embedder  # noqa: E402

#: dataset -> (entry name, description, prompts a user might type)
ENTRIES = {
    "lungs_cxr_shenzhen": ("lung", "lung field on a chest X-ray", ["lungs", "lung fields", "chest x-ray lungs"]),
    "polyps_kvasir_text": ("polyp", "colon polyp in colonoscopy", ["polyps", "colon polyp", "colorectal polyp"]),
    "glands_glas": ("gland", "colon gland in H&E histology", ["glands", "colon glands", "glandular structures"]),
    "em_isbi2012": (
        "cell interior",
        "neuron, neural tissue in electron microscopy",
        ["cell interior", "neurons", "neural cells"],
    ),
    "nuclei_dsb2018": ("nucleus", "fluorescent cell nucleus", ["nuclei", "cell nuclei", "nucleus"]),
}
#: entries saved with "many instances": a prompt finds every object like the exemplar's (instance labels)
INSTANCE_ENTRIES = {"nuclei_dsb2018"}
UNRELATED_PROMPTS = ["kidney", "bone", "tumor", "background", "membranes", "blood vessels"]
#: word pairs behind the threshold: (a, b, related?)
PAIRS = [
    ("glands", "gland", True),
    ("colon polyp", "polyp", True),
    ("cell nuclei", "nucleus", True),
    ("nuclei", "nucleus", True),
    ("lungs", "lung", True),
    ("neurons", "neuron", True),
    ("lung fields", "lung", True),
    ("colorectal polyp", "polyp", True),
    ("lung", "polyp", False),
    ("nucleus", "lung", False),
    ("gland", "polyp", False),
    ("kidney", "lung", False),
    ("liver", "gland", False),
    ("tumor", "gland", False),
    ("membrane", "cell interior", False),
    ("bone", "nucleus", False),
]


def build_library(path: Path, max_targets: int) -> tuple[ReferenceLibrary, dict]:
    library = ReferenceLibrary.open(path)
    data = {}
    for dataset, (name, description, _) in ENTRIES.items():
        pairs = dataset_pairs(dataset)
        loaded = [load(dataset, i, m) for i, m in pairs]
        if dataset == "nuclei_dsb2018":
            pairs, loaded = nuclei_subset(pairs, loaded)
        (ref, ref_mask), targets = loaded[0], loaded[1 : 1 + max_targets]
        entry = library.add(
            name, ref, ref_mask, description, source=pairs[0][0].name, instances=dataset in INSTANCE_ENTRIES
        )
        data[dataset] = {
            "entry": entry,
            "reference": (ref, ref_mask),
            "targets": targets,
            "target_names": [p.name for p, _ in pairs[1 : 1 + max_targets]],
            "target_labels": [p for _, p in pairs[1 : 1 + max_targets]],
        }
    return library, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=6, help="target images per dataset (%(default)s)")
    parser.add_argument("--datasets", nargs="+", choices=list(ENTRIES), help="subset of datasets")
    parser.add_argument("-o", "--output", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    datasets = args.datasets or list(ENTRIES)

    t0 = time.perf_counter()
    embedder = load_text_embedder(device="cpu")
    segmenter = load_segmenter(device="cpu")
    segmenter.cache.maxsize = 64
    load_s = time.perf_counter() - t0

    sims = embedder.similarity([a for a, _, _ in PAIRS], [b for _, b, _ in PAIRS]).diagonal()
    pair_rows = [
        {"a": a, "b": b, "related": related, "similarity": round(float(s), 4)}
        for (a, b, related), s in zip(PAIRS, sims, strict=True)
    ]
    related = [r["similarity"] for r in pair_rows if r["related"]]
    unrelated = [r["similarity"] for r in pair_rows if not r["related"]]

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        library, data = build_library(Path(tmp) / "library", args.targets)
        build_s = time.perf_counter() - t0
        library_bytes = sum(p.stat().st_size for p in (Path(tmp) / "library").rglob("*") if p.is_file())

        matching = []
        for dataset, (_, _, prompts) in ENTRIES.items():
            for prompt in prompts:
                t = time.perf_counter()
                chosen = match_library(prompt, library, embedder)
                ms = 1000 * (time.perf_counter() - t)
                ranked = rank_library(prompt, library, embedder)
                matching.append(
                    {
                        "prompt": prompt,
                        "expected": data[dataset]["entry"].name,
                        "chosen": [m.entry.name for m in chosen],
                        "similarity": [round(m.similarity, 4) for m in chosen],
                        "matched_text": [m.matched_text for m in chosen],
                        "runner_up": [ranked[1].entry.name, round(ranked[1].similarity, 4)],
                        "correct": [m.entry.id for m in chosen] == [data[dataset]["entry"].id],
                        "match_ms": round(ms, 2),
                    }
                )
        for prompt in UNRELATED_PROMPTS:
            chosen = match_library(prompt, library, embedder)
            ranked = rank_library(prompt, library, embedder)
            matching.append(
                {
                    "prompt": prompt,
                    "expected": None,
                    "chosen": [m.entry.name for m in chosen],
                    "closest": [ranked[0].entry.name, round(ranked[0].similarity, 4)],
                    "correct": not chosen,
                }
            )

        results = {}
        for dataset in datasets:
            d = data[dataset]
            prompt = ENTRIES[dataset][2][0]
            rows = []
            for (target, truth), labels_path in zip(d["targets"], d["target_labels"], strict=True):
                t = time.perf_counter()
                answer = segment_with_library(target, prompt, library, segmenter=segmenter, embedder=embedder)
                route_s = time.perf_counter() - t
                t = time.perf_counter()
                whole = segment_like(*d["reference"], target, segmenter=segmenter)[0]
                whole_s = time.perf_counter() - t
                rows.append(
                    {
                        "dice_library": round(dice(answer.mask, truth), 4),
                        "dice_whole_reference": round(dice(whole.mask, truth), 4),
                        "route_s": round(route_s, 3),
                        "whole_reference_s": round(whole_s, 3),
                        "reason": answer.reason,
                    }
                )
                if d["entry"].instances:  # instance F1 against the ground-truth instance labels
                    f1 = match_instances(answer.labels, read_image(labels_path))
                    rows[-1]["f1_iou50"] = round(f1["f1"], 4)
            for row, name in zip(rows, d["target_names"], strict=True):
                row["image"] = name
            entry = d["entry"]
            results[dataset] = {
                "prompt": prompt,
                "entry": {"name": entry.name, "id": entry.id, "shape": list(entry.shape), "crop": list(entry.crop)},
                "reference_shape": list(d["reference"][0].shape),
                "mean_dice_library": round(float(np.mean([r["dice_library"] for r in rows])), 4),
                "mean_dice_whole_reference": round(float(np.mean([r["dice_whole_reference"] for r in rows])), 4),
                "mean_route_s": round(float(np.mean([r["route_s"] for r in rows])), 3),
                "instances": entry.instances,
                "mean_f1_iou50": round(float(np.mean([r["f1_iou50"] for r in rows])), 4) if entry.instances else None,
                "targets": rows,
            }
            print(f"{dataset}: Dice {results[dataset]['mean_dice_library']:.3f}", flush=True)

    out = {
        "min_similarity": DEFAULT_MIN_SIMILARITY,
        "max_gap": DEFAULT_MAX_GAP,
        "crop_margin": DEFAULT_MARGIN,
        "word_pairs": pair_rows,
        "related_min": min(related),
        "unrelated_max": max(unrelated),
        "matching": matching,
        "matching_correct": f"{sum(m['correct'] for m in matching)}/{len(matching)}",
        "datasets": results,
        "library_build_s": round(build_s, 3),
        "library_bytes": library_bytes,
        "model_load_s": round(load_s, 3),
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
        },
    }
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / "library_route.json"
    path.write_text(json.dumps(out, indent=2) + "\n")

    print(f"\nthreshold {DEFAULT_MIN_SIMILARITY}: related >= {min(related):.2f}, unrelated <= {max(unrelated):.2f}")
    print(f"matching: {out['matching_correct']} prompts chose the right entry (or none for unrelated prompts)\n")
    print("| dataset | prompt | entry (similarity) | crop / reference | Dice library route | Dice whole reference |")
    print("|---|---|---|---|---:|---:|")
    for dataset, r in results.items():
        reason = r["targets"][0]["reason"].removeprefix("library entry ")
        crop = (
            "x".join(map(str, r["entry"]["shape"][:2][::-1]))
            + " / "
            + "x".join(map(str, r["reference_shape"][:2][::-1]))
        )
        print(
            f"| {dataset} | {r['prompt']} | {reason} | {crop} | {r['mean_dice_library']:.3f} | "
            f"{r['mean_dice_whole_reference']:.3f} |"
        )
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
