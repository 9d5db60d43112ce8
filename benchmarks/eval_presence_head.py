"""Presence head of the multi-target text model: why "nuclei" is gated out, and which refit of the head fixes it.

The multi-target model of ``eval_text_training.py`` (run ``presence``: polyp / lung / gland / nuclei, balanced
names, negative pairs, 4 epochs) is loaded and its mask path kept as it is; only the presence head is refitted
(:mod:`napari_promptseg.methods.text_training.presence`) on the cached features of the same training images, one
variant of the refit at a time, each chosen on the validation pairs. Since the gate empties the mask exactly where
the presence logit is negative, the gated Dice of every (image, name) pair is the ungated mask's Dice where the head
says present and 0 (the target is never empty here) where it says absent: the mask path runs once per pair.

Reported per variant: the presence decisions' balanced accuracy per name (validation, 4-fold cross-validation over
the training images, test) and the gated right-name / wrong-name Dice per target on validation and test. The
variant is chosen on validation and cross-validation only; test is reported.

    OMP_NUM_THREADS=1 python benchmarks/eval_presence_head.py [--model DIR] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from eval_text_training import TARGETS, _target_triplets
from napari_promptseg.methods.text_training import dice
from napari_promptseg.methods.text_training.data import FeatureStore
from napari_promptseg.methods.text_training.presence import (
    PresenceFit,
    fit_presence_head,
)
from napari_promptseg.methods.text_training.trainer import make_batch
from napari_promptseg.models.preprocessing import ResizeTransform
from napari_promptseg.models.text_segmenter import load_fusion_model, read_config

#: variant -> refit settings; None: the jointly trained head; "calibrate": that head, its gate moved on validation
VARIANTS = {
    "joint head (as trained)": None,
    "joint head, gate calibrated on val": "calibrate",
    "refit (the trainer's default)": PresenceFit(),
    "refit, unbalanced BCE": PresenceFit(balance=False),
    "refit, fresh head": PresenceFit(restart=True),
    "refit, weight decay 0.1": PresenceFit(weight_decay=0.1),
    "refit, 10 epochs": PresenceFit(epochs=10),
    "refit, 30 epochs": PresenceFit(epochs=30),
    "refit, 300 epochs (min_delta 0)": PresenceFit(min_delta=0.0, patience=300),
}


def mask_outcomes(decoder, samples, names, text) -> dict:
    """(image index, name) -> (Dice of the ungated mask against the image's target, mask empty)."""
    out = {}
    decoder.eval()
    with torch.no_grad():
        for i, s in enumerate(samples):
            _, truth = s.triplet.load()
            for name in names:
                batch = make_batch([replace(s, text=name)], text, torch.device("cpu"))
                res = decoder(batch.features, batch.low, batch.words, batch.word_mask, batch.sentence)
                logits = res.mask_logits
                pred = (ResizeTransform(truth.shape, 256).logits_to_original(logits)[0, 0] > 0).numpy()
                out[i, name] = (dice(pred, truth), bool(((logits > 0) & batch.valid).sum() < 16))
    return out


def presence_logits(decoder, samples, names, text) -> np.ndarray:
    """(images, names) presence logits of the decoder's current head."""
    sentences = text.get(list(names))[2]
    rows = []
    with torch.no_grad():
        for s in samples:
            levels = [s.features.float()[None], s.low.float()[None]]
            pooled = decoder.presence_head.pool(levels)
            rows.append(decoder.presence_head.classify(pooled.expand(len(names), -1), sentences).numpy())
    return np.stack(rows)


def scores(logits: np.ndarray, samples, names, outcomes) -> dict:
    """Presence accuracy per name and gated Dice per target (right name; wrong names against the true target)."""
    truth = np.array([[s.text == n for n in names] for s in samples])
    said = logits >= 0
    per_name = {}
    for j, n in enumerate(names):
        tpr = float(said[truth[:, j], j].mean()) if truth[:, j].any() else float("nan")
        tnr = float((~said[~truth[:, j], j]).mean())
        per_name[n] = {"recall": round(tpr, 3), "specificity": round(tnr, 3)}
    balanced = float(np.mean([np.nanmean([v["recall"], v["specificity"]]) for v in per_name.values()]))
    if outcomes is None:  # decisions only
        return {"balanced_accuracy": balanced}
    targets = {}
    for t in names:
        rows = [i for i, s in enumerate(samples) if s.text == t]
        if not rows:
            continue
        right = [outcomes[i, t][0] if said[i, names.index(t)] else 0.0 for i in rows]
        wrong = {
            w: float(np.mean([outcomes[i, w][0] if said[i, names.index(w)] else 0.0 for i in rows]))
            for w in names
            if w != t
        }
        targets[t] = {
            "right": round(float(np.mean(right)), 4),
            "wrong": round(float(np.mean(list(wrong.values()))), 4),
            "worst_wrong": max(wrong, key=wrong.get),
            "worst_wrong_dice": round(max(wrong.values()), 4),
            "positive_logits": [round(float(x), 2) for x in logits[rows, names.index(t)]],
        }
    return {"balanced_accuracy": round(balanced, 4), "names": per_name, "targets": targets}


def calibrated_threshold(logits: np.ndarray, samples, names) -> float:
    """The logit threshold of best balanced accuracy on ``samples`` (the closest to 0 among equals)."""
    values = np.unique(logits)
    cuts = np.concatenate([[0.0], (values[1:] + values[:-1]) / 2])
    accuracy = [scores(logits - c, samples, names, None)["balanced_accuracy"] for c in cuts]
    best = max(accuracy)
    return float(min((c for c, a in zip(cuts, accuracy, strict=True) if a == best), key=abs))


def cross_validated(decoder, joint_state, fit, train, val, names, text, folds: int = 4) -> dict:
    """Presence decisions on each quarter of the training images by a head refitted on the other three quarters
    (epoch chosen on the validation pairs, as the refit does)."""
    order = np.random.default_rng(0).permutation(len(train))
    logits = np.zeros((len(train), len(names)))
    for k in range(folds):
        held = set(order[k::folds].tolist())
        decoder.presence_head.load_state_dict(joint_state)
        fit_presence_head(decoder, [s for i, s in enumerate(train) if i not in held], val, names, text, fit)
        rows = sorted(held)
        logits[rows] = presence_logits(decoder, [train[i] for i in rows], names, text)
    truth = np.array([[s.text == n for n in names] for s in train])
    per_name = [
        np.mean([(logits[truth[:, j], j] >= 0).mean(), (logits[~truth[:, j], j] < 0).mean()]) for j in range(len(names))
    ]
    recall = {n: round(float((logits[truth[:, j], j] >= 0).mean()), 3) for j, n in enumerate(names)}
    return {"balanced_accuracy": round(float(np.mean(per_name)), 4), "recall": recall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="/tmp/promptseg-text-models/multi_target_presence")
    parser.add_argument("--cache-dir", default="/tmp/promptseg-text-features")
    parser.add_argument("--variants", default="", help="only these variants (comma-separated names)")
    parser.add_argument("-o", "--output", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    model_dir = Path(args.model)
    if not (model_dir / "model.safetensors").is_file():
        raise SystemExit(
            f"{model_dir}: no model; train it with eval_text_training.py --sections multi --multi-runs presence"
        )
    model = load_fusion_model(model_dir, read_config(model_dir), device="cpu")
    decoder, text = model.decoder, model.text
    store = FeatureStore(args.cache_dir, model.segmenter)
    names = sorted(TARGETS)  # the trainer's texts: sorted training names
    sets = {n: _target_triplets(n) for n in TARGETS}
    samples = {part: store.samples([t for s in sets.values() for t in s[part]]) for part in ("train", "val", "test")}
    t0 = time.perf_counter()
    outcomes = {part: mask_outcomes(decoder, samples[part], names, text) for part in ("val", "test")}
    print(f"mask path on every val/test pair: {time.perf_counter() - t0:.0f} s", flush=True)
    joint_state = copy.deepcopy(decoder.presence_head.state_dict())
    path = Path(args.output) / "eval_presence_head.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    runs = results.setdefault("variants", {})
    for variant, fit in VARIANTS.items():
        if args.variants and variant not in args.variants.split(","):
            continue
        decoder.presence_head.load_state_dict(joint_state)
        t0 = time.perf_counter()
        record = None
        if isinstance(fit, PresenceFit):
            record = fit_presence_head(decoder, samples["train"], samples["val"], names, text, fit)
        entry = {"refit": record, "fit_seconds": round(time.perf_counter() - t0, 2)}
        logits = {part: presence_logits(decoder, samples[part], names, text) for part in ("val", "test")}
        if fit == "calibrate":
            entry["threshold"] = calibrated_threshold(logits["val"], samples["val"], names)
            logits = {part: x - entry["threshold"] for part, x in logits.items()}
        for part in ("val", "test"):
            entry[part] = scores(logits[part], samples[part], names, outcomes[part])
        if isinstance(fit, PresenceFit):
            entry["cross_validation"] = cross_validated(
                decoder, joint_state, fit, samples["train"], samples["val"], names, text
            )
        runs[variant] = entry
        brief = {
            p: (entry[p]["balanced_accuracy"], {t: v["right"] for t, v in entry[p]["targets"].items()})
            for p in ("val", "test")
        }
        print(variant, brief, entry.get("cross_validation"), flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=1))
    results["pairs"] = {
        "train_images": len(samples["train"]),
        "val_images": len(samples["val"]),
        "test_images": len(samples["test"]),
        "names": names,
    }
    path.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
