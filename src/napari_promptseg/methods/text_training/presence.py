"""Refit of the decoder's target-presence head (:class:`...models.text_decoder.PresenceHead`) on every pair of a
training image with a training text, after the decoder has trained.

Why a refit: trained jointly with the mask path, the head sees each image with one right and one drawn wrong text
per epoch, sharing ~100 steps with the mask loss in a 4-epoch run of ~100 images; a minority look of a target (DSB's
bright-field / H&E-like nuclei tiles among fluorescence ones, next to GlaS H&E images taught "nuclei" absent) is not
fitted even on the training images, and is gated out (benchmarks/README.md, "presence classifier refitted"). The
head reads the frozen image features and the frozen sentence only, so it can be refitted alone: the images' pooled
features are computed once, and every (image, text) pair is one row (positive where the image is paired with the
text and its mask is not empty, negative where the text is never paired with it), a few hundred rows for class-name
data, many epochs in seconds. The BCE weighs each text's positives and negatives equally (a text that names a
quarter of the images is otherwise three quarters negative), and the epoch is chosen on the validation pairs
(balanced accuracy per text, then BCE), starting from the jointly trained head, which is kept if no epoch does
better. The mask path is not touched.

``refit_presence_head`` does this for a model directory trained earlier (``promptseg train-text --refit-presence``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import CancelledError, PromptsegError
from ...models.text_decoder import TextPromptDecoder
from ...models.text_segmenter import TextTokens
from .data import Sample
from .sampling import _image_id, texts_per_image, validation_negatives


@dataclass(frozen=True)
class PresenceFit:
    """Settings of the head's refit (recorded in the model's JSON config)."""

    epochs: int = 300  # at most; chosen on the validation pairs
    patience: int = 20  # epochs without a better validation score before stopping
    #: a lower validation BCE at equal accuracy counts as better only by this much (once the pairs are separated,
    #: the BCE keeps falling as the logits grow, and would keep the refit running for nothing)
    min_delta: float = 1e-3
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 32
    balance: bool = True  # each text's positives weigh as much as its negatives
    max_negatives: int = 16  # wrong texts per image at most (caption data: every other caption is a text)
    restart: bool = False  # a freshly initialised head instead of the jointly trained one
    seed: int = 0


@dataclass
class PresencePairs:
    """Rows (image, text, label) over images pooled once."""

    pooled: torch.Tensor  # (N_images, P)
    image: torch.Tensor  # (M,) long
    text: torch.Tensor  # (M,) long, into ``texts``
    label: torch.Tensor  # (M,) float 0 / 1
    texts: list[str]


def presence_pairs(
    decoder: TextPromptDecoder,
    samples: Sequence[Sample],
    texts: Sequence[str],
    *,
    max_negatives: int,
    seed: int,
    paired: Mapping[object, set[str]] | None = None,
) -> PresencePairs:
    """Every image of ``samples`` with each of ``texts`` (at most ``max_negatives`` wrong ones, drawn seeded) and
    with its own texts; label 1 where the image's mask for the text is not empty. ``paired``: every image's texts
    over all rows (:func:`.sampling.texts_per_image`); a text paired with the image in another split is neither."""
    texts = list(texts)
    groups: dict[object, list[Sample]] = {}
    for s in samples:
        groups.setdefault(_image_id(s), []).append(s)
    rng = np.random.default_rng([seed, 2])
    pooled, image, text, label = [], [], [], []
    with torch.no_grad():
        for k, group in enumerate(groups.values()):
            first = group[0]
            levels = [first.features.float()[None]] + ([] if first.low is None else [first.low.float()[None]])
            pooled.append(decoder.presence_head.pool(levels)[0])
            own = {}
            for s in group:  # a text with several masks on one image is present if any is not empty
                own[s.text] = own.get(s.text, False) or bool(s.target.any())
            elsewhere = (paired or {}).get(_image_id(first), set())
            wrong = [t for t in texts if t not in own and t not in elsewhere]
            if len(wrong) > max_negatives:
                wrong = [wrong[i] for i in sorted(rng.choice(len(wrong), max_negatives, replace=False))]
            for t, present in list(own.items()) + [(t, False) for t in wrong]:
                if t not in texts:
                    texts.append(t)
                image.append(k)
                text.append(texts.index(t))
                label.append(float(present))
    return PresencePairs(torch.stack(pooled), torch.tensor(image), torch.tensor(text), torch.tensor(label), texts)


def _weights(pairs: PresencePairs, balance: bool) -> torch.Tensor:
    if not balance:
        return torch.ones_like(pairs.label)
    w = torch.zeros_like(pairs.label)
    for t in pairs.text.unique():
        for y in (0.0, 1.0):
            rows = (pairs.text == t) & (pairs.label == y)
            if rows.any():
                w[rows] = 1.0 / rows.sum()
    return w * len(w) / w.sum()


def balanced_accuracy(logits: torch.Tensor, pairs: PresencePairs) -> float:
    """Mean over texts of the mean of the true-positive and true-negative rates (classes the text has)."""
    said = logits >= 0
    scores = []
    for t in pairs.text.unique():
        rates = []
        for y in (0.0, 1.0):
            rows = (pairs.text == t) & (pairs.label == y)
            if rows.any():
                rates.append(float((said[rows] == bool(y)).float().mean()))
        scores.append(np.mean(rates))
    return float(np.mean(scores))


def fit_presence_head(
    decoder: TextPromptDecoder,
    train: Sequence[Sample],
    val: Sequence[Sample],
    texts: Sequence[str],
    text: TextTokens,
    fit: PresenceFit | None = None,
    *,
    paired: Mapping[object, set[str]] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> dict:
    """Refit ``decoder.presence_head`` in place on the (image, text) pairs of ``train``, choosing the epoch on those
    of ``val``; returns a record of the refit (validation scores before and after). ``paired``: see
    :func:`presence_pairs`. Without both present and absent pairs in training and in validation there is nothing
    to choose by: the head is kept as it is, and the record says why."""
    if not decoder.config.presence:
        raise PromptsegError("this decoder has no presence head (trained without negative pairs or empty masks)")
    fit = fit or PresenceFit()
    stop = cancel or (lambda: False)
    head = decoder.presence_head
    device = next(head.parameters()).device
    pairing = {"max_negatives": fit.max_negatives, "seed": fit.seed, "paired": paired}
    train_pairs = presence_pairs(decoder, train, texts, **pairing)
    val_pairs = presence_pairs(decoder, val, train_pairs.texts, **pairing)
    for name, pairs in (("training", train_pairs), ("validation", val_pairs)):
        if len(pairs.label) == 0 or pairs.label.min() == pairs.label.max():
            # e.g. one text and no empty validation mask: accuracy would reward saying "present" everywhere
            return {"skipped": f"no {name} pairs of both kinds (present and absent); the head is kept as trained"}
    names = val_pairs.texts  # train's texts first, then texts only validation images have
    sentences = text.get(names)[2].to(device)
    train_pairs, val_pairs = (_to(p, device) for p in (train_pairs, val_pairs))
    weights, val_weights = _weights(train_pairs, fit.balance), _weights(val_pairs, fit.balance)
    if fit.restart:
        torch.manual_seed(fit.seed)
        for module in head.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def score() -> tuple[float, float]:
        with torch.no_grad():
            logits = head.classify(val_pairs.pooled[val_pairs.image], sentences[val_pairs.text])
            bce = F.binary_cross_entropy_with_logits(logits, val_pairs.label, weight=val_weights)
        return balanced_accuracy(logits, val_pairs), float(bce)

    was_training = head.training
    head.train()
    start_acc, start_bce = score()
    best = {"epoch": 0, "val_accuracy": start_acc, "val_bce": start_bce}
    best_state = copy.deepcopy(head.state_dict())
    optimizer = torch.optim.AdamW(head.parameters(), lr=fit.lr, weight_decay=fit.weight_decay)
    epoch = 0
    for epoch in range(1, fit.epochs + 1):
        if stop():
            raise CancelledError(f"cancelled while refitting the presence head (epoch {epoch})")
        order = torch.randperm(len(train_pairs.label), generator=torch.Generator().manual_seed(fit.seed * 7919 + epoch))
        for lo in range(0, len(order), fit.batch_size):
            rows = order[lo : lo + fit.batch_size].to(device)
            logits = head.classify(train_pairs.pooled[train_pairs.image[rows]], sentences[train_pairs.text[rows]])
            loss = F.binary_cross_entropy_with_logits(logits, train_pairs.label[rows], weight=weights[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        acc, bce = score()
        if acc > best["val_accuracy"] or (acc == best["val_accuracy"] and bce < best["val_bce"] - fit.min_delta):
            best = {"epoch": epoch, "val_accuracy": acc, "val_bce": bce}
            best_state = copy.deepcopy(head.state_dict())
        elif epoch - best["epoch"] >= fit.patience:
            break
    head.load_state_dict(best_state)
    head.train(was_training)
    return {
        "settings": asdict(fit),
        "train_pairs": int(len(train_pairs.label)),
        "val_pairs": int(len(val_pairs.label)),
        "epochs_run": epoch,
        "best_epoch": best["epoch"],
        "val_accuracy_before": round(start_acc, 4),
        "val_bce_before": round(start_bce, 4),
        "val_accuracy": round(best["val_accuracy"], 4),
        "val_bce": round(best["val_bce"], 4),
    }


def _to(pairs: PresencePairs, device) -> PresencePairs:
    return PresencePairs(
        pairs.pooled.to(device), pairs.image.to(device), pairs.text.to(device), pairs.label.to(device), pairs.texts
    )


def refit_if_not_worse(
    decoder: TextPromptDecoder,
    train: Sequence[Sample],
    val_positives: Sequence[Sample],
    val: Sequence[Sample],
    texts: Sequence[str],
    text: TextTokens,
    fit: PresenceFit,
    *,
    paired: Mapping[object, set[str]] | None,
    threshold: float,
    val_dice: float | None = None,
    cancel: Callable[[], bool] | None = None,
) -> dict:
    """:func:`fit_presence_head`, kept only if validation Dice (on ``val``: its positives and negative pairs, as
    every epoch was judged) does not fall; otherwise the head is put back. The gate decides which masks come out,
    so its refit must not cost masks. Training and ``promptseg train-text --refit-presence`` both go through here.
    ``val_dice``: the decoder's validation Dice on ``val`` as it is, when the caller has just measured it."""
    from .trainer import validate  # the epochs' own judge (trainer imports this module)

    if not val:  # trained with a validation fraction of 0: nothing to tell a worse head by, so the trained one stays
        return {"skipped": "no validation images (validation fraction 0) to check a refit against"}
    device = next(decoder.parameters()).device
    before = val_dice if val_dice is not None else validate(decoder, val, text, device, threshold)["val_dice"]
    saved = copy.deepcopy(decoder.presence_head.state_dict())
    record = fit_presence_head(decoder, train, val_positives, texts, text, fit, paired=paired, cancel=cancel)
    if "skipped" in record:
        return record
    record.update(validate(decoder, val, text, device, threshold))
    record["val_dice_before"] = before
    record["kept"] = record["val_dice"] >= before - 1e-4
    if not record["kept"]:
        decoder.presence_head.load_state_dict(saved)
    return record


def refit_presence_head(
    model_dir: str | Path,
    data,
    *,
    fit: PresenceFit | None = None,
    cache_dir: str | Path | None = None,
    device: str = "auto",
    columns: dict[str, str] | None = None,
) -> dict:
    """Refit the presence head of the trained model in ``model_dir`` on its training ``data`` (the CSV or triplets
    it was trained on; the train/val split is drawn again from its saved settings); the mask path is unchanged.
    Rewrites ``model.safetensors`` when the refit is kept (validation Dice did not fall, as in training) and records
    the refit in the JSON config; returns that record."""
    from ...models.text_segmenter import load_fusion_model, read_config, save_model, undo_stopped_save
    from .data import FeatureStore, split_fingerprint, split_triplets, training_triplets

    out = Path(model_dir)
    if out.is_dir():
        undo_stopped_save(out)  # a save killed midway: refit the earlier model, not its mix with the new weights
    info = read_config(out)
    training = info.get("training", {})
    if info.get("kind") != "fusion":
        raise PromptsegError(f"{out}: not a fusion text model (only those have a presence head)")
    if info.get("decoder", {}).get("presence") is False:  # said before the models load (40 s on a laptop CPU)
        raise PromptsegError(f"{out}: the model has no presence head (it was trained without negative pairs)")
    model = load_fusion_model(out, info, device=device)  # its own copy: a loaded model is not changed under its users
    decoder = model.decoder
    if not decoder.config.presence:
        raise PromptsegError(f"{out}: the model has no presence head (it was trained without negative pairs)")
    triplets = training_triplets(data, columns)
    seed = int(training.get("seed", 0))
    train_set, val_set = split_triplets(triplets, val_fraction=training.get("val_fraction", 0.2), seed=seed)
    recorded = training.get("cache_dir")  # the training run's cache, if it is still there (else the model's own)
    cache = Path(cache_dir or (recorded if recorded and Path(recorded).is_dir() else out / "cache"))
    store = FeatureStore(
        cache, model.segmenter, normalize=training.get("normalize", "auto"), low=bool(decoder.config.low_level_dim)
    )
    if (len(train_set), len(val_set)) != (training.get("train"), training.get("val")):
        raise PromptsegError(
            f"{data if isinstance(data, (str, Path)) else 'the triplets'}: {len(train_set)} training and "
            f"{len(val_set)} validation rows, but {out} was trained on {training.get('train')} and "
            f"{training.get('val')}; give the data it was trained on"
        )
    saved = _saved_rows(out)
    if saved is not None and saved != split_fingerprint(train_set, val_set):  # as a resume checks its data
        raise PromptsegError(
            f"{data if isinstance(data, (str, Path)) else 'the triplets'}: other rows than {out} was trained on "
            "(another CSV, rows changed or texts other, or its files moved: files are known by their full path); "
            "give the data it was trained on"
        )
    train, val = store.samples(train_set), store.samples(val_set)
    texts = sorted({s.text for s in train})
    paired = texts_per_image(triplets)
    negatives = validation_negatives(val, texts, seed=seed, negatives=training.get("negatives", 0.0), paired=paired)
    record = refit_if_not_worse(
        decoder,
        train,
        val,
        val + negatives,
        texts,
        model.text,
        fit or PresenceFit(seed=seed),
        paired=paired,
        threshold=float(info.get("threshold", 0.5)),
    )
    if "skipped" in record:
        return record
    kept = {k: v for k, v in info.items() if k not in ("format", "format_version")}
    save_model(out, {**kept, "presence_refit": record}, decoder.state_dict() if record["kept"] else None)
    return record


def _saved_rows(model_dir: Path) -> str | None:
    """The fingerprint of the rows the model's run trained and validated on (its last/state.json), None when that
    state is gone (deleted, copied without it) or predates the fingerprint."""
    import json

    try:
        rows = json.loads((model_dir / "last" / "state.json").read_text()).get("rows")
    except (OSError, ValueError, AttributeError):
        return None
    return rows if isinstance(rows, str) else None


#: how :func:`.data.read_triplets` names the columns when not told (a refit command repeats the others)
_DEFAULT_COLUMNS = {"image_col": "image", "mask_col": "mask", "text_col": "text", "split_col": None}


def refit_command(
    data: object,
    output_dir: str | Path,
    *,
    columns: Mapping[str, str | None] | None = None,
    channel_axis: int | None = None,
    channels: Sequence[int] | None = None,
) -> str:
    """The `promptseg train-text ... --refit-presence` that refits ``output_dir``'s presence head on ``data`` (a
    CSV's path; else ``DATA``), reading its rows as the training did: its columns and channels repeated as options
    (a refit suggested without them read other columns or pixels: "no column 'text'", other rows)."""
    import shlex

    source = shlex.quote(str(data)) if isinstance(data, (str, Path)) else "DATA"
    flags = [
        f"--{key.replace('_', '-')} {shlex.quote(value)}"
        for key, value in (columns or {}).items()
        if value is not None and value != _DEFAULT_COLUMNS.get(key)
    ]
    if channel_axis is not None:
        flags.append(f"--channel-axis {channel_axis}")
    if channels is not None:
        flags.append("--channels " + " ".join(map(str, channels)))
    return " ".join(["promptseg train-text", source, "-o", shlex.quote(str(output_dir)), *flags, "--refit-presence"])
