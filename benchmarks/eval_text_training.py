"""Language-guided segmenters trained on image-mask-text triplets: loss ablation, prompt templates, text sensitivity.

All models: frozen LiteMedSAM image encoder + frozen MiniLM text encoder + the trained fusion decoder
(:mod:`napari_promptseg.models.text_decoder`). Image features are computed once into ``--cache-dir``.

1. **Kvasir-SEG triplets** (medvlsm's split: train 260 / val 99 / test 97, text = medvlsm p6): references (the
   untrained decoder; LiteMedSAM given the ground-truth box, an oracle prompt), then the loss ablation (dicece,
   dicece with the SAM decoder frozen, without the low-level fusion, tmca, tmca without target enhancement,
   reclmis). Each model is chosen on val (best epoch by val Dice); test Dice at the original resolution.
2. **Prompt templates** (medvlsm p0 = empty ... p9), dicece, fewer epochs.
3. **Text sensitivity**: one model trained on polyps, lungs, glands and nuclei with their names (plus, per image,
   a wrong name with an empty mask); right-name Dice against single-target models trained on the same images,
   wrong-name Dice (prediction vs the true target) and how often a wrong name gives an empty mask.
4. **Cost**: encoder time per image (the cache), training time, inference time per image, peak memory.

    OMP_NUM_THREADS=1 python benchmarks/eval_text_training.py [--epochs 5] [--sections kvasir,templates,multi,cost]

Results accumulate in ``results/eval_text_training.json`` (a finished run is not repeated unless ``--fresh``).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from napari_promptseg.methods.interactive import boxes_from_labels
from napari_promptseg.methods.text_training import dice, read_triplets, train_text_segmenter
from napari_promptseg.methods.text_training.data import FeatureStore, Triplet
from napari_promptseg.methods.text_training.trainer import TrainingConfig, make_batch
from napari_promptseg.models import load_segmenter, load_text_embedder, load_text_segmenter
from napari_promptseg.models.preprocessing import ResizeTransform
from napari_promptseg.models.protocols import Embedding
from napari_promptseg.models.text_decoder import TextPromptDecoder
from napari_promptseg.models.text_segmenter import TextTokens, TrainedTextSegmenter, encode_levels

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
KVASIR = DATA / "polyps_kvasir_triplets" / "pairs.csv"
#: section "kvasir": the three objectives and the frozen-decoder variant; section "extras": two more ablations
ABLATION = {
    "dicece": {"loss": "dicece"},
    "tmca": {"loss": "tmca"},
    "reclmis": {"loss": "reclmis"},
    "dicece_frozen_decoder": {"loss": "dicece", "decoder_lr": 0.0},
}
EXTRAS = {
    "dicece_no_low_level": {"loss": "dicece", "low_level": False},
    "tmca_no_enhance": {"loss": "tmca", "enhance": False},
}
TEMPLATES = ("p0", "p1", "p3", "p6", "p9")
#: multi-target set: name -> (folder, image/mask pairs as (train, val, test) counts)
TARGETS = {
    "polyp": ("polyps_kvasir_triplets", (40, 10, 30)),
    "lung": ("lungs_cxr_shenzhen", (20, 4, 8)),
    "gland": ("glands_glas", (14, 3, 5)),
    "nuclei": ("nuclei_dsb2018", (20, 5, 8)),
}


def kvasir_split(text_col: str = "text") -> dict[str, list[Triplet]]:
    rows = read_triplets(KVASIR, text_col="text")
    if text_col != "text":
        import csv

        with open(KVASIR, newline="") as fh:
            texts = {r["image"]: r for r in csv.DictReader(fh)}
        rows = [replace(t, text=_template_text(texts[f"images/{t.image.name}"], text_col)) for t in rows]
    return {s: [t for t in rows if t.split == s] for s in ("train", "val", "test")}


def _template_text(row: dict, level: str) -> str:
    if level == "p0":
        return ""  # medvlsm's p0: no text
    value = row[level]
    return json.loads(value)[0] if value.startswith("[") else value  # p7-p9: five descriptions, the first


def test_dice(
    decoder: TextPromptDecoder, samples, text: TextTokens, texts: list[str] | None = None, refine_with=None
) -> list[float]:
    """Dice at the original resolution, from cached features (same maths as the inference path). ``refine_with``:
    a segmenter that decodes a box around each predicted component (the CLIPSeg route's SAM refinement)."""
    scores = []
    decoder.eval()
    with torch.no_grad():
        for k, s in enumerate(samples):
            if texts is not None:
                s = replace(s, text=texts[k])
            _, mask = s.triplet.load()
            batch = make_batch([s], text, torch.device("cpu"))
            logits = decoder(batch.features, batch.low, batch.words, batch.word_mask, batch.sentence).logits
            pred = (ResizeTransform(mask.shape, 256).logits_to_original(logits)[0, 0] > 0).numpy()
            if refine_with is not None and pred.any():
                pred = box_decode(refine_with, s, mask.shape, boxes_from_labels(pred, min_area=64))
            scores.append(dice(pred, mask))
    return scores


def box_decode(segmenter, sample, shape, boxes) -> np.ndarray:
    """LiteMedSAM's masks for boxes on a cached embedding, united."""
    if not len(boxes):
        return np.zeros(shape, bool)
    emb = Embedding(
        sample.features.float()[None],
        ResizeTransform(shape, segmenter.input_size),
        segmenter.name,
        f"cached-{id(sample)}",
    )
    return segmenter.predict(emb, boxes=np.asarray(boxes, np.float32)).masks()[:, 0].any(0)


def summary(scores: list[float]) -> dict:
    a = np.asarray(scores)
    return {"mean": round(float(a.mean()), 4), "median": round(float(np.median(a)), 4), "n": len(a)}


def untrained_decoder(segmenter) -> TextPromptDecoder:
    torch.manual_seed(0)
    decoder = TextPromptDecoder(TrainingConfig().decoder_config(384, 128))
    decoder.init_from_segmenter(segmenter)
    return decoder


def box_oracle(segmenter, samples) -> list[float]:
    """LiteMedSAM given a box around each ground-truth component (an oracle prompt: the ceiling of the encoder)."""
    scores = []
    for s in samples:
        _, mask = s.triplet.load()
        scores.append(dice(box_decode(segmenter, s, mask.shape, boxes_from_labels(mask, min_area=50)), mask))
    return scores


def train_run(name: str, data, args, **settings) -> dict:
    out = Path(args.models) / name
    t0 = time.perf_counter()
    result = train_text_segmenter(
        data,
        out,
        cache_dir=args.cache_dir,
        overwrite=True,
        device="cpu",
        epochs=settings.pop("epochs", args.epochs),
        patience=2,
        progress=lambda f, m: print(f"  [{name}] {m}", flush=True) if "val Dice" in m else None,
        **settings,
    )
    return {
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "best_val_dice": round(result.best_val_dice, 4),
        "train_seconds": round(time.perf_counter() - t0, 1),
        "history": result.history,
        "model": str(out),
    }


def section_kvasir(args, results: dict, segmenter, store, text, runs: dict = ABLATION) -> None:
    split = kvasir_split()
    test = store.samples(split["test"])
    refs = results.setdefault("kvasir_references", {})
    if "untrained" not in refs:
        refs["untrained"] = summary(test_dice(untrained_decoder(segmenter), test, text))
    if "litemedsam_gt_box" not in refs:
        refs["litemedsam_gt_box"] = summary(box_oracle(segmenter, test))
    save(args, results)
    ablation = results.setdefault("kvasir_ablation", {})
    for name, settings in runs.items():
        if name in ablation:
            continue
        run = train_run(f"kvasir_{name}", split["train"] + split["val"], args, **settings)
        decoder = load_text_segmenter(run["model"], device="cpu").decoder
        run["test_dice"] = summary(test_dice(decoder, test, text))
        run["test_dice_box_refined"] = summary(test_dice(decoder, test, text, refine_with=segmenter))
        ablation[name] = {"settings": dict(settings), **run}
        save(args, results)


def section_templates(args, results: dict, store, text) -> None:
    runs = results.setdefault("kvasir_templates", {})
    for level in TEMPLATES:
        if level in runs:
            continue
        split = kvasir_split(level)
        run = train_run(f"kvasir_template_{level}", split["train"] + split["val"], args, epochs=args.template_epochs)
        decoder = load_text_segmenter(run["model"], device="cpu").decoder
        run["test_dice"] = summary(test_dice(decoder, store.samples(split["test"]), text))
        run["example"] = split["test"][0].text
        runs[level] = run
        save(args, results)


def _target_triplets(name: str) -> dict[str, list[Triplet]]:
    folder, (n_train, n_val, n_test) = TARGETS[name]
    root = DATA / folder
    if name == "polyp":
        split = kvasir_split()
        chosen = {"train": split["train"][:n_train], "val": split["val"][:n_val], "test": split["test"][:n_test]}
    else:
        if (root / "pairs.csv").is_file():
            rows = read_triplets(root / "pairs.csv", text_col="image", split_col="-")
        else:  # nuclei_dsb2018: images/X.png with labels/X.tif
            rows = [
                Triplet(p, root / "labels" / f"{p.stem}.tif", "", "", 0) for p in sorted((root / "images").iterdir())
            ]
        chosen = {
            "train": rows[:n_train],
            "val": rows[n_train : n_train + n_val],
            "test": rows[n_train + n_val : n_train + n_val + n_test],
        }
    return {s: [replace(t, text=name, split=s) for t in ts] for s, ts in chosen.items()}


def section_multi(args, results: dict, store, text) -> None:
    """One model for four targets named by text, with wrong names trained to give nothing."""
    import tempfile

    import imageio.v3 as iio

    multi = results.setdefault("multi_target", {})
    sets = {name: _target_triplets(name) for name in TARGETS}
    names = list(TARGETS)
    empty_dir = Path(tempfile.mkdtemp(prefix="empty-masks-"))
    rng = np.random.default_rng(0)
    mixed = []
    for name, split in sets.items():
        for t in split["train"] + split["val"]:
            mixed.append(t)
            image, _ = t.load()
            empty = empty_dir / f"{t.image.stem}_{name}.png"
            if not empty.exists():
                iio.imwrite(empty, np.zeros(image.shape[:2], np.uint8))
            wrong = names[(names.index(name) + 1 + rng.integers(len(names) - 1)) % len(names)]
            mixed.append(replace(t, text=wrong, mask=empty))
    if "model" not in multi:
        multi["model"] = train_run("multi_target", mixed, args)
        save(args, results)
    decoder = load_text_segmenter(multi["model"]["model"], device="cpu").decoder
    per_target = multi.setdefault("targets", {})
    for name, split in sets.items():
        if name in per_target:
            continue
        test = store.samples(split["test"])
        single = train_run(f"single_{name}", split["train"] + split["val"], args)
        single_decoder = load_text_segmenter(single["model"], device="cpu").decoder
        right = test_dice(decoder, test, text)
        wrong_names = [n for n in names if n != name]
        wrong = [test_dice(decoder, test, text, [w] * len(test)) for w in wrong_names]
        empty_rate = []
        with torch.no_grad():
            for w in wrong_names:
                for s in test:
                    batch = make_batch([replace(s, text=w)], text, torch.device("cpu"))
                    logits = decoder(batch.features, batch.low, batch.words, batch.word_mask, batch.sentence).logits
                    empty_rate.append(bool(((logits > 0) & batch.valid).sum() < 16))
        single_dice = summary(test_dice(single_decoder, test, text))
        right_dice = summary(right)
        per_target[name] = {
            "right_name": right_dice,
            "single_target": single_dice,
            "ratio_to_single": round(right_dice["mean"] / max(single_dice["mean"], 1e-6), 3),
            "wrong_name": summary([x for w in wrong for x in w]),
            "wrong_name_empty_fraction": round(float(np.mean(empty_rate)), 3),
            "single_model": single,
        }
        save(args, results)


def section_cost(args, results: dict, segmenter, embedder) -> None:
    cost = results.setdefault("cost", {})
    test = kvasir_split()["test"][:10]
    images = [t.load()[0] for t in test]
    t0 = time.perf_counter()
    for image in images:
        encode_levels(segmenter, image)
    cost["encode_s_per_image"] = round((time.perf_counter() - t0) / len(images), 3)
    model_dir = results.get("kvasir_ablation", {}).get("dicece", {}).get("model")
    if model_dir:
        trained = load_text_segmenter(model_dir, device="cpu")
        model = TrainedTextSegmenter(trained.decoder, segmenter, embedder)  # an empty feature cache
        t0 = time.perf_counter()
        for image, t in zip(images, test, strict=True):
            model.mask_logits(image, [t.text])
        cost["inference_s_per_image"] = round((time.perf_counter() - t0) / len(images), 3)
        run = results["kvasir_ablation"]["dicece"]
        cost["dicece_train_seconds_cached_features"] = run["train_seconds"]
        cost["dicece_epochs_run"] = run["epochs_run"]
        cost["train_plus_cache_359_estimate_s"] = round(run["train_seconds"] + 359 * cost["encode_s_per_image"], 1)
    cost["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def save(args, results: dict) -> None:
    results["environment"] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "epochs": args.epochs,
        "template_epochs": args.template_epochs,
        "note": "2-core CPU shared with other jobs: times are inflated by the load",
    }
    path = Path(args.output) / "eval_text_training.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--template-epochs", type=int, default=3)
    parser.add_argument("--sections", default="kvasir,templates,multi,extras,cost")
    parser.add_argument("--cache-dir", default="/tmp/promptseg-text-features")
    parser.add_argument("--models", default="/tmp/promptseg-text-models")
    parser.add_argument("-o", "--output", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--fresh", action="store_true", help="forget earlier results")
    args = parser.parse_args()
    path = Path(args.output) / "eval_text_training.json"
    results = {} if args.fresh or not path.is_file() else json.loads(path.read_text())
    segmenter = load_segmenter("litemedsam", device="cpu")
    embedder = load_text_embedder(device="cpu")
    store = FeatureStore(args.cache_dir, segmenter)
    text = TextTokens(embedder)
    sections = args.sections.split(",")
    if "kvasir" in sections:
        section_kvasir(args, results, segmenter, store, text)
    if "templates" in sections:
        section_templates(args, results, store, text)
    if "multi" in sections:
        section_multi(args, results, store, text)
    if "extras" in sections:
        section_kvasir(args, results, segmenter, store, text, EXTRAS)
    if "cost" in sections:
        section_cost(args, results, segmenter, embedder)
    save(args, results)
    print(json.dumps({k: v for k, v in results.items() if k != "environment"}, indent=1)[:4000])


if __name__ == "__main__":
    main()
