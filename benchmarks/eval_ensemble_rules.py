"""How SAT's per-reference masks are best combined: ensemble rules judged on the rotation protocol's pairs.

    python benchmarks/eval_ensemble_rules.py [--maps DIR] [--sets polyps_kvasir_text:5 ...] [-o benchmarks/results]

Every reference of a set (the rotation protocol of ``eval_oneshot.py --rotate``: the same references, targets and
LiteMedSAM encoder features) segments every target once; its probability map (the default selection rule's
candidate) and score are kept in ``--maps`` (one .npz per target, reused when present). Each rule then combines
groups of references offline: the README's rolling groups of 2 and 4 (``ensemble_groups``) and every combination
of 1-6 references (at most 30 per size, evenly taken), whose mean is less noisy. Results:
``results/eval_ensemble_rules.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch

from napari_promptseg.methods.metrics import dice
from napari_promptseg.methods.oneshot_rotation import _segment_each, ensemble_groups
from napari_promptseg.models import load_segmenter
from oneshot_rotation_report import rotation_set

#: the README's rotation protocol: set -> targets (6 references, 10 train-split ones for the Kvasir triplets)
SETS = {
    "lungs_cxr_shenzhen": 8,
    "polyps_kvasir_text": 5,
    "glands_glas": 5,
    "em_isbi2012": 8,
    "nuclei_dsb2018": 5,
    "nuclei_monuseg_train_text": 5,
    "polyps_kvasir_triplets": 12,
}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def consensus(p: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Soft vote over the references whose mask overlaps the medoid's (mean IoU to the others; ties to the higher
    score) at IoU >= 0.5: a reference that found another object is left out."""
    masks = p > 0.5
    k = len(p)
    iou = np.array([[_iou(masks[i], masks[j]) for j in range(k)] for i in range(k)])
    agreement = (iou.sum(1) - 1) / max(k - 1, 1)
    medoid = max(range(k), key=lambda i: (round(float(agreement[i]), 9), s[i]))
    used = [i for i in range(k) if iou[medoid, i] >= 0.5]
    return p[used].mean(0) > 0.5


RULES = {
    "vote (mean > 0.5, the default)": lambda p, s: p.mean(0) > 0.5,
    "consensus (medoid's agreeing references)": consensus,
    "score-weighted vote": lambda p, s: (p * (s + 1e-6)[:, None, None]).sum(0) / (s.sum() + 1e-6 * len(s)) > 0.5,
    "mean > 0.6": lambda p, s: p.mean(0) > 0.6,
    "mean > 0.7": lambda p, s: p.mean(0) > 0.7,
    "every reference (intersection)": lambda p, s: (p > 0.5).all(0),
    "any reference (union)": lambda p, s: (p > 0.5).any(0),
}


def dump_maps(name: str, n_targets: int, maps: Path, segmenter) -> list[Path]:
    data = rotation_set(name, 6, n_targets, 10)
    refs = data["references"]
    segmenter.cache.maxsize = max(segmenter.cache.maxsize, len(refs) + 2)
    images, masks = [data["images"][r] for r in refs], [data["masks"][r] for r in refs]
    out = []
    for t in data["targets"]:
        path = maps / f"{name}__{data['names'][t]}.npz"
        if not path.is_file():
            t0 = time.perf_counter()
            results = _segment_each(
                images, masks, data["images"][t], segmenter=segmenter, strategy="sat", names=[data["names"][t]]
            )
            truth = np.asarray(data["masks"][t], bool)
            probs = np.stack([np.zeros(truth.shape) if r is None else r.probability for r in results])
            scores = np.array([0.0 if r is None else r.score for r in results])
            np.savez_compressed(path, probs=probs.astype(np.float16), scores=scores, truth=truth)
            print(f"  {name} {data['names'][t]} {time.perf_counter() - t0:.0f} s", flush=True)
        out.append(path)
    return out


def judge(files: list[Path]) -> dict:
    targets = [np.load(f) for f in files]
    out: dict = {}
    for rule, combine in RULES.items():
        rolling: dict[str, list] = {"1": [], "2": [], "4": []}
        every: dict[str, list] = {str(k): [] for k in range(1, 7)}
        for t in targets:
            p, s, truth = t["probs"].astype(np.float32), t["scores"], t["truth"]
            n = len(p)
            rolling["1"].append(np.mean([dice(p[i] > 0.5, truth) for i in range(n)]))
            for k in (2, 4):
                rolling[str(k)].append(
                    np.mean([dice(combine(p[list(g)], s[list(g)]), truth) for g in ensemble_groups(n, k)])
                )
            for k in range(1, min(n, 6) + 1):
                groups = list(itertools.combinations(range(n), k))
                groups = groups[:: max(1, len(groups) // 30)]
                every[str(k)].append(np.mean([dice(combine(p[list(g)], s[list(g)]), truth) for g in groups]))
        out[rule] = {
            "rolling": {k: round(float(np.mean(v)), 4) for k, v in rolling.items()},
            "every_combination": {k: round(float(np.mean(v)), 4) for k, v in every.items() if v},
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--maps", type=Path, default=Path("ensemble_maps"), help="per-target maps (reused)")
    parser.add_argument("--sets", nargs="+", help="NAME:TARGETS (default: the README's rotation protocol)")
    parser.add_argument("-o", "--output", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    sets = dict((s.split(":")[0], int(s.split(":")[1])) for s in args.sets) if args.sets else SETS
    args.maps.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    segmenter = load_segmenter(device="cpu")
    results = {"protocol": "eval_oneshot.py --rotate 6 --kvasir-references 10, SAT, default selection rule", "sets": {}}
    for name, n_targets in sets.items():
        results["sets"][name] = judge(dump_maps(name, n_targets, args.maps, segmenter))
        for rule, r in results["sets"][name].items():
            curve = " / ".join(f"{100 * v:.1f}" for v in r["rolling"].values())
            every = " / ".join(f"{100 * v:.1f}" for v in r["every_combination"].values())
            print(f"{name:28s} {rule:42s} rolling 1/2/4: {curve}   every combination 1-6: {every}", flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "eval_ensemble_rules.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
