"""Language-guided segmenters trained on image-mask-text triplets: loss ablation, prompt templates, text sensitivity.

All models: frozen LiteMedSAM image encoder + frozen MiniLM text encoder + the trained fusion decoder
(:mod:`napari_promptseg.models.text_decoder`). Image features are computed once into ``--cache-dir``.

1. **Kvasir-SEG triplets** (medvlsm's split: train 260 / val 99 / test 97, text = medvlsm p6): references (the
   untrained decoder; LiteMedSAM given the ground-truth box, an oracle prompt), then the loss ablation (dicece,
   dicece with the SAM decoder frozen, without the low-level fusion, tmca, tmca without target enhancement,
   reclmis). Each model is chosen on val (best epoch by val Dice); test Dice at the original resolution.
2. **Prompt templates** (medvlsm p0 = empty ... p9), dicece, fewer epochs.
3. **Text sensitivity**: one model trained on polyps, lungs, glands and nuclei with their names, wrong names
   trained to give nothing (``MULTI_RUNS``: static extra triplets, or the trainer's balanced texts and negative
   pairs, with or without the presence classifier); right-name Dice against single-target models trained on the
   same images, and for each wrong name the Dice against the true target and how often the mask is empty.
4. **Cost**: inference stage by stage and per image, and (``--train-cost``) a whole training run on the 359 Kvasir
   train+val triplets from an empty feature cache, at ``--threads`` threads, with the load average.

    OMP_NUM_THREADS=1 python benchmarks/eval_text_training.py [--epochs 5] [--sections kvasir,templates,multi,cost]
    python benchmarks/eval_text_training.py --sections cost --threads 2 --train-cost

Results accumulate in ``results/eval_text_training.json`` (a finished run is not repeated unless ``--fresh``).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from napari_promptseg.methods.interactive import boxes_from_labels
from napari_promptseg.methods.text import TextRoute, segment_text
from napari_promptseg.methods.text_training import dice, read_triplets, train_text_segmenter
from napari_promptseg.methods.text_training.data import FeatureStore, Triplet
from napari_promptseg.methods.text_training.presence import refit_presence_head
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
        cache_dir=settings.pop("cache_dir", args.cache_dir),
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
            rows = read_triplets(root / "pairs.csv", text_col="image", split_col="")  # its split is not used here
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


#: multi-target training settings. "static": one wrong name per image, drawn once, as extra triplets with an empty
#: mask file (the first run); "balanced": the trainer's own options, every text equally often per epoch and one
#: negative pair per training sample drawn again every epoch (all wrong names over the epochs)
MULTI_RUNS = {
    "static": {"presence": False},
    "balanced": {"balance": True, "negatives": 1.0, "presence": False},
    # the "balanced" run continued for two more epochs (its validation Dice was still rising)
    "balanced_6_epochs": {"balance": True, "negatives": 1.0, "epochs": 6, "resume_from": "balanced"},
    # + the decoder's image-text presence classifier gating the mask (the default with negative pairs)
    "presence": {"balance": True, "negatives": 1.0, "presence": True, "presence_refit": False},
    # that model with its presence head refitted alone on every image-name pair (what train-text now ends with;
    # the mask path is the same, so the decoder is not trained again: benchmarks/eval_presence_head.py)
    "presence_refit": {"balance": True, "negatives": 1.0, "presence": True, "refit_from": "presence"},
}


def _static_negatives(sets: dict[str, dict[str, list[Triplet]]]) -> list[Triplet]:
    import tempfile

    import imageio.v3 as iio

    empty_dir = Path(tempfile.mkdtemp(prefix="empty-masks-"))
    rng = np.random.default_rng(0)
    names = list(sets)
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
    return mixed


def text_sensitivity(decoder: TextPromptDecoder, sets, store, text) -> dict:
    """Per target: Dice with its own name; with each wrong name, Dice against the true target and how often the
    prediction is empty (< 16 pixels in the 256 px frame)."""
    names = list(sets)
    out = {}
    for name, split in sets.items():
        test = store.samples(split["test"])
        entry = {"right_name": summary(test_dice(decoder, test, text)), "wrong_names": {}}
        wrong_all, empty_all = [], []
        for w in (n for n in names if n != name):
            scores = test_dice(decoder, test, text, [w] * len(test))
            empty = []
            with torch.no_grad():
                for s in test:
                    batch = make_batch([replace(s, text=w)], text, torch.device("cpu"))
                    logits = decoder(batch.features, batch.low, batch.words, batch.word_mask, batch.sentence).logits
                    empty.append(bool(((logits > 0) & batch.valid).sum() < 16))
            entry["wrong_names"][w] = {
                "dice": round(float(np.mean(scores)), 4),
                "empty": round(float(np.mean(empty)), 3),
            }
            wrong_all += scores
            empty_all += empty
        entry["wrong_name"] = summary(wrong_all)
        entry["wrong_name_empty_fraction"] = round(float(np.mean(empty_all)), 3)
        out[name] = entry
    return out


def section_multi(args, results: dict, store, text) -> None:
    """One model for four targets named by text (wrong names trained to give nothing), against single-target
    models trained on the same images."""
    multi = results.setdefault("multi_target", {})
    sets = {name: _target_triplets(name) for name in TARGETS}
    runs = multi.setdefault("runs", {})
    for setting, options in MULTI_RUNS.items():
        if args.multi_runs and setting not in args.multi_runs.split(","):
            continue
        epochs = options.get("epochs", args.epochs)
        single = multi.setdefault("single_target", {}).setdefault(f"{epochs}_epochs", {})  # as many epochs at most
        for name, split in sets.items():
            if name not in single and args.singles != "no":
                run = train_run(f"single_{name}_{epochs}", split["train"] + split["val"], args, epochs=epochs)
                decoder = load_text_segmenter(run["model"], device="cpu").decoder
                single[name] = {"test_dice": summary(test_dice(decoder, store.samples(split["test"]), text)), **run}
                save(args, results)
        if args.singles == "only":
            continue
        run = runs.get(setting)
        if run is None and "refit_from" in options:  # a copy of that run's model directory, its head refitted
            source = runs[options["refit_from"]]
            target = Path(args.models) / f"multi_target_{setting}"
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source["model"], target)
            positives = [t for split in sets.values() for t in split["train"] + split["val"]]
            refit = refit_presence_head(target, positives, cache_dir=args.cache_dir, device="cpu")
            run = {
                "settings": options,
                **{k: source[k] for k in ("best_epoch", "epochs_run", "best_val_dice", "history")},
                "presence_refit": refit,
                "model": str(target),
            }
        elif run is None and "resume_from" in options:  # a copy of that run's model directory, trained on
            source = Path(runs[options["resume_from"]]["model"])
            target = Path(args.models) / f"multi_target_{setting}"
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target)
            positives = [t for split in sets.values() for t in split["train"] + split["val"]]
            result = train_text_segmenter(
                positives, target, resume=True, epochs=epochs, cache_dir=args.cache_dir, device="cpu"
            )
            config = json.loads((target / "text_segmenter.json").read_text())
            run = {
                "settings": options,
                "best_epoch": result.best_epoch,
                "epochs_run": result.epochs_run,
                "best_val_dice": round(result.best_val_dice, 4),
                "history": config["history"],
                "model": str(target),
            }
        elif run is None:
            if setting != "static":
                positives = [t for split in sets.values() for t in split["train"] + split["val"]]
                run = {"settings": options, **train_run(f"multi_target_{setting}", positives, args, **dict(options))}
            else:
                run = {"settings": options, **train_run("multi_target", _static_negatives(sets), args, **options)}
        if "wrong_names" not in next(iter(run.get("targets", {}).values()), {}):  # (re)evaluate, no retraining
            decoder = load_text_segmenter(run["model"], device="cpu").decoder
            run["targets"] = text_sensitivity(decoder, sets, store, text)
            for name, entry in run["targets"].items():
                entry["ratio_to_single"] = (
                    round(entry["right_name"]["mean"] / max(single[name]["test_dice"]["mean"], 1e-6), 3)
                    if name in single
                    else None
                )
        runs[setting] = run
        save(args, results)


class Clock:
    """Wall and CPU seconds (all threads of the process) of a block: on a loaded machine the CPU time is what the
    work costs, the wall time what it took."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu

    def per(self, n: int) -> dict:
        return {"wall_s": round(self.wall / n, 4), "cpu_s": round(self.cpu / n, 4)}


def _timed(fn, repeats: int) -> dict:
    """Mean wall and CPU seconds of ``repeats`` calls (after one call that warms up)."""
    fn()
    with Clock() as clock:
        for _ in range(repeats):
            fn()
    return clock.per(repeats)


def training_estimate(args, segmenter, embedder, text) -> dict:
    """Per-item costs of a training run, measured on a few items, and the run on the 359 Kvasir train+val triplets
    they add up to (``args.epochs`` epochs; CPU seconds = the wall time of an idle machine at this thread count)."""
    import tempfile

    from napari_promptseg.methods.text_training.losses import batch_loss
    from napari_promptseg.methods.text_training.trainer import _optimizer, validate

    split = kvasir_split()
    with tempfile.TemporaryDirectory() as tmp, Clock() as feature_pass:
        FeatureStore(tmp, segmenter).samples(split["train"][:6])  # read, encode, write the cache entry
    samples = FeatureStore(args.cache_dir, segmenter).samples(split["train"][:24])
    config = TrainingConfig()
    torch.manual_seed(0)
    decoder = TextPromptDecoder(config.decoder_config(embedder.dim, int(samples[0].low.shape[0])))
    decoder.init_from_segmenter(segmenter)
    optimizer = _optimizer(decoder, config)
    batches = [make_batch(samples[k : k + 8], text, torch.device("cpu")) for k in range(0, 24, 8)]

    def step(batch) -> None:
        loss, _ = batch_loss("dicece", decoder, batch, torch.Generator().manual_seed(0))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step(batches[0])
    with Clock() as training:
        step(batches[1])
        step(batches[2])
    with Clock() as validation:
        validate(decoder, samples[:16], text, torch.device("cpu"))
    per = {
        "feature_pass_per_image": feature_pass.per(6),
        "training_per_sample": training.per(16),
        "validation_per_sample": validation.per(16),
    }
    n_train, n_val, epochs = len(split["train"]), len(split["val"]), args.epochs
    for kind in ("wall_s", "cpu_s"):
        features = (n_train + n_val) * per["feature_pass_per_image"][kind]
        train = epochs * (n_train * per["training_per_sample"][kind] + n_val * per["validation_per_sample"][kind])
        per[f"run_{kind}"] = {"feature_pass": round(features, 1), "training": round(train, 1), "epochs": epochs}
    return per


def encoder_alone(segmenter, image) -> None:
    with segmenter.encoder_autocast():  # at the segmenter's precision, as embed() runs it
        segmenter._encoder()(segmenter.preprocess(image, "auto")[0])


def section_cost(args, results: dict, segmenter, embedder, text) -> None:
    """Where the time goes at inference (stage by stage), and (``--train-cost``) a whole training run on the 359
    Kvasir train+val triplets from an empty feature cache, at this process's torch threads, with the load."""
    import os

    cost = results.setdefault("cost", {})
    threads = torch.get_num_threads()
    # float32 entries keep their old key; the encoder's default (auto) is bfloat16 on CPUs with native bfloat16
    precision = "" if segmenter.precision == "float32" else f"_{segmenter.precision}"
    entry = cost.setdefault(f"threads_{threads}{precision}", {})
    entry["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
    test = kvasir_split()["test"][:10]
    images = [t.load()[0] for t in test]
    trained = load_text_segmenter(results["kvasir_ablation"]["dicece"]["model"], device="cpu")
    model = TrainedTextSegmenter(trained.decoder, segmenter, embedder)  # no feature cache
    levels = encode_levels(segmenter, images[0])
    words = [f"{t.text} ({k})" for k, t in enumerate(test * 20)]  # a new text every call: not memoised
    w, m, sent = model.text.get([test[0].text])
    with torch.inference_mode():
        entry["inference_stages"] = {
            "encoder_with_first_stage_hook": _timed(lambda: encode_levels(segmenter, images[0]), 5),
            "encoder_alone": _timed(lambda: encoder_alone(segmenter, images[0]), 5),
            "text_new_prompt": _timed(lambda: model.text.get([words.pop()]), 5),
            "decoder": _timed(lambda: model.decoder(levels.features, levels.low, w, m, sent), 5),
            "to_original_grid": _timed(lambda: levels.transform.logits_to_original(torch.zeros(1, 1, 256, 256)), 5),
        }
    with Clock() as clock:
        for image, t in zip(images, test, strict=True):
            model.mask_logits(image, [t.text])  # a new image and a new prompt: encoder + text + decoder
    entry["inference_per_image"] = clock.per(len(images))
    with Clock() as clock:
        for image in images[-4:]:  # the model keeps the features of the last 4 images: one more prompt each
            model.mask_logits(image, ["polyp"])
    entry["inference_per_prompt_features_cached"] = clock.per(4)
    # what `promptseg text PROMPT IMAGES --text-model DIR` does per image once the models are loaded: encode,
    # decode, threshold, objects (one prompt, memoised after the first image)
    route = TextRoute("trained", model, "kvasir_dicece")
    segment_text(images[0], test[0].text, route=route)  # warm-up (and the prompt's text tokens)
    model._levels.clear()
    with Clock() as clock:
        for image in images[1:]:
            segment_text(image, test[0].text, route=route)
    entry["segment_text_per_image"] = clock.per(len(images) - 1)
    save(args, results)
    if args.inference_only:
        entry["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        return
    entry["training_359_estimate"] = training_estimate(args, segmenter, embedder, text)
    save(args, results)
    if args.train_cost:  # the whole run from nothing: feature pass (cache), then training
        split = kvasir_split()
        cache = Path(args.models) / f"cost_cache_{threads}"
        shutil.rmtree(cache, ignore_errors=True)
        data = split["train"] + split["val"]
        with Clock() as features:
            FeatureStore(cache, segmenter).samples(data)
        with Clock() as training:
            run = train_run(f"cost_dicece_{threads}", data, args, cache_dir=cache)
        entry["train_359"] = {
            "feature_pass": features.per(1),
            "training": training.per(1),
            "total_wall_s": round(features.wall + training.wall, 1),
            "total_cpu_s": round(features.cpu + training.cpu, 1),
            **{k: run[k] for k in ("best_epoch", "epochs_run", "best_val_dice")},
        }
        decoder = load_text_segmenter(run["model"], device="cpu").decoder
        entry["train_359"]["test_dice"] = summary(
            test_dice(decoder, FeatureStore(args.cache_dir, segmenter).samples(split["test"]), text)
        )
    entry["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    entry["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


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
    parser.add_argument(
        "--threads", type=int, help="torch threads (default: torch's, i.e. the cores or OMP_NUM_THREADS)"
    )
    parser.add_argument("--multi-runs", default="", help="multi: only these settings of MULTI_RUNS (comma-separated)")
    parser.add_argument("--singles", default="yes", choices=["yes", "no", "only"], help="multi: single-target models")
    parser.add_argument("--train-cost", action="store_true", help="cost: also time a whole training run (~15 min)")
    parser.add_argument("--inference-only", action="store_true", help="cost: inference only, no training estimate")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
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
        section_cost(args, results, segmenter, embedder, text)
    save(args, results)
    print(json.dumps({k: v for k, v in results.items() if k != "environment"}, indent=1)[:4000])


if __name__ == "__main__":
    main()
