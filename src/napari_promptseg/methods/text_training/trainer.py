"""Training loop of the fusion text segmenter: seeded, validated every epoch, early stopping, best weights kept,
progress with ETA, cancel and resume.

Output directory (a model directory, :mod:`...models.text_segmenter`)::

    MODEL_DIR/text_segmenter.json   what the model is, the training settings, the history, the best epoch
    MODEL_DIR/model.safetensors     the best epoch's decoder weights (by validation Dice)
    MODEL_DIR/last/                 the last finished step: weights, optimizer moments, state.json (:mod:`.resume`)
    MODEL_DIR/cache/                the frozen image features (default cache location)

Repeatable: the decoder's initial weights, the batch order of every epoch and the RecLMIS masking of every step
are drawn from generators seeded by (seed, epoch, step), so a run resumed from ``last/`` continues exactly as an
uninterrupted one (same thread count assumed: CPU reductions depend on it).
"""

from __future__ import annotations

import functools
import json
import math
import numbers
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...callbacks import ProgressCallback
from ...disk_errors import OUTPUT_DISK_REFUSES
from ...errors import CancelledError, PromptsegError
from ...io._files import ensure_writable_dir
from ...models.text_decoder import DecoderConfig, TextPromptDecoder
from ...models.text_segmenter import (
    WEIGHTS_FILE,
    TextTokens,
    load_decoder_weights,
    save_model,
)
from .data import (
    ArrayTriplet,
    FeatureStore,
    Sample,
    Triplet,
    files_left_out,
    format_eta,
    refuse_fraction_beside_split,
    split_fingerprint,
    split_triplets,
    training_channels,
    training_triplets,
)
from .losses import LOSSES, Batch, batch_loss, dice_ce
from .presence import PresenceFit, refit_command, refit_if_not_worse
from .resume import (
    check_same_rows,
    held_model_files,
    load_resume_state,
    read_resume_state,
    refuse_inside_model,
    resumed_config,
    save_resume_state,
    saved_cache_dir,
)
from .row_checks import check_rows, split_record, split_said
from .sampling import (
    check_class_names,
    check_negatives_possible,
    epoch_samples,
    texts_per_image,
    validation_negatives,
)

#: share of the progress bar the feature pass takes when nothing is cached (the rest is training)
FEATURE_SHARE = 0.2


#: the share of the images held out for validation when the data has no split of its own (both trainers)
DEFAULT_VAL_FRACTION = 0.2
#: whole-number settings and their least value
_WHOLE = {"epochs": 1, "batch_size": 1, "patience": 1, "seed": 0, "threads": 1}
#: the other checked settings: what they must be, and the test (NaN fails every comparison)
_RANGES = {
    "lr": ("be a finite number above 0", lambda v: 0 < v < math.inf),
    "decoder_lr": ("be a finite number from 0 up (0 freezes the decoder)", lambda v: 0 <= v < math.inf),
    "val_fraction": ("lie from 0 to 1", lambda v: 0 <= v <= 1),
}
_CHECKED = (*_WHOLE, *_RANGES)


def check_settings(given: Mapping[str, object], name: Callable[[str], str] = str) -> None:
    """The ranges of the settings in ``given`` (those it holds), named by ``name`` (the caller's words: the CLI's
    flags, the widget's labels): one check for the CLI, the widget and Python, before anything loads. Why: a
    Python caller's batch_size=2.0 failed in the first step, after the encoders, and --seed -1 in numpy."""
    for key, value in given.items():
        if key in _WHOLE:
            least = _WHOLE[key]
            if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= least):
                raise PromptsegError(f"{name(key)} must be a whole number, at least {least}, got {value}")
        elif key in _RANGES:
            said, within = _RANGES[key]
            number = isinstance(value, numbers.Real)  # text was compared with a number: a TypeError
            if not (number and within(value)):
                raise PromptsegError(f"{name(key)} must {said}, got {value if number else repr(value)}")


@dataclass(frozen=True)
class TrainingConfig:
    """Settings of one training run; recorded in the model's JSON config."""

    loss: str = "dicece"  # dicece (medvlsm) | tmca | reclmis
    epochs: int = 8
    batch_size: int = 8
    lr: float = 1e-3  # new modules (text projections, fusion, seed-paper heads); constant (cosine decay: no better)
    decoder_lr: float = 1e-4  # the pretrained SAM mask decoder; 0 keeps it frozen
    weight_decay: float = 1e-3  # medvlsm's AdamW weight decay
    patience: int = 3  # epochs without a better validation Dice before stopping (no validation: every epoch runs)
    seed: int = 0
    #: held out when the CSV has no train/val split; 0: none (the last epoch is kept)
    val_fraction: float = DEFAULT_VAL_FRACTION
    image_encoder: str = "litemedsam"  # a SAM-family segmenter from the registry
    text_encoder: str = "all_minilm_l6_v2"  # a BERT-family sentence model from the registry
    normalize: str = "auto"
    low_level: bool = True  # fuse the encoder's first-stage features
    enhance: bool = True  # TMCA's language-guided target enhancement (loss tmca only)
    threshold: float = 0.5  # on the sigmoid, as medvlsm
    balance: bool = False  # every distinct text equally often per epoch (class-name texts; see .sampling)
    negatives: float = 0.0  # negative pairs (image, a text it is not paired with, empty mask) per training sample
    #: target-presence head gating the mask (models.text_decoder); None = when the run has negative pairs or
    #: empty training masks (a wrong name must give nothing)
    presence: bool | None = None
    #: after training, refit the presence head alone on every (image, text) pair (.presence), chosen on validation
    presence_refit: bool = True
    #: torch threads of the run, fixed and not the machine's: another count sums gradients in another order, and
    #: training amplifies that into another model (Kvasir, dicece: test Dice 0.854 at one thread, 0.832 at two)
    threads: int = 1

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise PromptsegError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        check_settings({name: getattr(self, name) for name in _CHECKED})
        if not 0 <= self.negatives <= 4:
            raise PromptsegError(f"negatives is a share of the training samples in [0, 4], got {self.negatives}")

    def decoder_config(self, text_dim: int, low_level_dim: int, presence: bool = False) -> DecoderConfig:
        return DecoderConfig(
            text_dim=text_dim,
            low_level_dim=low_level_dim if self.low_level else 0,
            alignment=self.loss == "tmca",
            enhance=self.loss == "tmca" and self.enhance,
            interaction=self.loss == "reclmis",
            presence=presence if self.presence is None else self.presence,
        )


@dataclass
class TrainingResult:
    path: Path  # the model directory
    best_epoch: int  # without validation (val fraction 0): the last epoch, whose weights are kept
    best_val_dice: float | None  # None without validation
    epochs_run: int
    stopped_early: bool
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    feature_cache: dict = field(default_factory=dict)  # hits / misses of the disk cache
    presence_refit: dict = field(default_factory=dict)  # the presence head's refit (.presence), if it ran
    warnings: list[str] = field(default_factory=list)  # what the run did that the user did not ask for
    split: dict = field(default_factory=dict)  # rows and images trained and validated on (data.split_record)


Data = str | Path | Sequence[Triplet | ArrayTriplet | tuple]


def _restores_torch_threads(train: Callable[..., TrainingResult]) -> Callable[..., TrainingResult]:
    """``train`` sets the run's torch threads (``TrainingConfig.threads``); the caller's are put back after."""

    @functools.wraps(train)
    def run(*args: Any, **kwargs: Any) -> TrainingResult:
        previous = torch.get_num_threads()
        try:
            return train(*args, **kwargs)
        finally:
            torch.set_num_threads(previous)

    return run


@_restores_torch_threads
def train_text_segmenter(
    data: Data,
    output_dir: str | Path,
    *,
    config: TrainingConfig | None = None,
    cache_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    columns: dict[str, str] | None = None,
    channel_axis: int | None = None,
    channels: Sequence[int] | None = None,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
    **overrides,
) -> TrainingResult:
    """Train a text-conditioned segmenter on image-mask-text triplets and save it in ``output_dir``.

    ``data``: a triplet CSV (``columns`` maps ``image_col``/``mask_col``/``text_col``/``split_col`` to other
    names) or triplets (:class:`Triplet`, :class:`ArrayTriplet` for arrays such as napari layers, or plain
    ``(image, mask, text[, split])`` tuples of arrays or of file paths); ``channel_axis`` and ``channels`` read every
    image given without its own (``channel_axis=0``: multichannel (C, Y, X) images; a file's in its order). ``config``
    and keyword ``overrides`` (e.g. ``loss="tmca", epochs=4``) set the run. ``resume`` continues from
    ``output_dir/last`` with the settings saved there. ``progress(fraction, message)`` reports with an ETA;
    ``cancel()`` returning True stops after the current step, keeping ``last/`` for a resume. ``overwrite``
    trains over a model in ``output_dir``, which stays until the first epoch's model replaces it.
    """
    from ...models import load_segmenter, load_text_embedder

    report = progress or (lambda fraction, message: None)
    stop = cancel or (lambda: False)
    out = Path(output_dir)
    refuse_inside_model(out)
    unknown = sorted(set(overrides) - {f.name for f in fields(TrainingConfig)})
    if unknown:
        raise PromptsegError(f"unknown training setting(s) {', '.join(unknown)}")
    state = read_resume_state(out) if resume else None
    if state is not None:
        saved = TrainingConfig(**{"presence": False, **state["config"]})  # runs from before the presence head
        config = resumed_config(out, state, saved, overrides)
    else:
        config = replace(config or TrainingConfig(), **overrides)
    torch.set_num_threads(config.threads)  # before the features too: the same bytes whatever the machine
    held = held_model_files(out) if state is None else []
    if held and not overwrite:
        raise PromptsegError(
            f"{out} already holds a trained model; resume it (CLI --resume; widget: resume), overwrite it (CLI "
            "--overwrite; widget: overwrite) or choose another output directory"
        )
    triplets = training_triplets(data, columns, channel_axis=channel_axis, channels=channels)
    if state is None:  # a resume keeps its run's split
        refuse_fraction_beside_split(triplets, overrides.get("val_fraction"))
    train_set, val_set = split_triplets(triplets, val_fraction=config.val_fraction, seed=config.seed)
    if config.balance or config.negatives > 0:  # class names: one spelling each
        check_class_names([*train_set, *val_set])
    check_negatives_possible(train_set, triplets, config.negatives)
    rows = split_fingerprint(train_set, val_set)
    if state is not None:
        check_same_rows(out, state, rows)
    split = split_record(triplets, train_set, val_set, val_fraction=config.val_fraction, seed=config.seed)
    report(0.0, split_said(split))
    left_out = files_left_out(triplets)  # a TIFF's images after its first: trained on by nothing
    for warning in left_out:
        report(0.0, f"warning: {warning}")
    ensure_writable_dir(out, "the model")  # said before the models load, not after an epoch
    # every bad row, before the models load; the channel counts fed, which inference holds images to
    channel_counts = check_rows([*train_set, *val_set], progress=report, cancel=stop)
    t_start = time.perf_counter()

    report(0.0, f"loading {config.image_encoder} and {config.text_encoder}")
    segmenter = load_segmenter(config.image_encoder, device=device)
    if not hasattr(segmenter, "mask_decoder"):
        raise PromptsegError(f"{config.image_encoder}: not a SAM-family segmenter; its decoder cannot be trained")
    embedder = load_text_embedder(config.text_encoder, device=device)
    cut = cut_texts_warning(embedder, config.text_encoder, [t.text for t in triplets])
    for warning in cut:  # said at the start, not after the hours of training
        report(0.0, f"warning: {warning}")
    warnings = [*left_out, *cut]
    if cache_dir is None and state is not None:  # the run's own cache: a resume encoded every image again
        cache_dir = saved_cache_dir(out, state)
    cache = Path(cache_dir or out / "cache").absolute()
    store = FeatureStore(cache, segmenter, normalize=config.normalize, low=config.low_level)

    def feature_progress(fraction: float, message: str) -> None:
        report(FEATURE_SHARE * fraction, message)

    # one pass over both splits, so the progress bar counts the validation images too
    samples = store.samples([*train_set, *val_set], progress=feature_progress, cancel=stop)
    train, val = samples[: len(train_set)], samples[len(train_set) :]
    if not any(s.target.any() for s in train):
        raise PromptsegError(
            f"every training mask is empty ({len(train)} rows): nothing to learn; check the masks (a CSV's mask "
            "column; napari: the Labels layers) (masks are read as non-zero = target)"
        )
    texts = sorted({s.text for s in train})
    paired = texts_per_image(triplets)  # a text paired with an image in any split is never its negative
    val_negatives = validation_negatives(val, texts, seed=config.seed, negatives=config.negatives, paired=paired)
    text = TextTokens(embedder)
    low_dim = 0 if train[0].low is None else int(train[0].low.shape[0])

    torch.manual_seed(config.seed)
    has_empty = any(not s.target.any() for s in train)
    decoder = TextPromptDecoder(config.decoder_config(embedder.dim, low_dim, config.negatives > 0 or has_empty))
    decoder.init_from_segmenter(segmenter)
    decoder.to(segmenter.device)
    optimizer = _optimizer(decoder, config)
    epoch0, step0, best, history = 0, 0, {"epoch": 0, "val_dice": -1.0}, []
    if state is not None:
        epoch0, step0, best, history = state["epoch"], state["step"], state["best"], state["history"]
        load_resume_state(out, decoder, optimizer, state)
    model_info = {
        "kind": "fusion",
        "encoders": {"image": config.image_encoder, "text": config.text_encoder},
        "decoder": decoder.config.to_dict(),
        "training": {
            **asdict(config),
            "data": str(data) if isinstance(data, (str, Path)) else f"{len(triplets)} triplets",
            "train": len(train),
            "val": len(val),
            "val_negatives": len(val_negatives),
            "texts": len(texts),
            # class names (or one text): what the model can tell apart, checked against a prompt at inference;
            # captions are not recorded (a new sentence is how such a model is asked)
            "vocabulary": texts if config.balance or config.negatives > 0 or len(texts) == 1 else None,
            "cache_dir": str(cache),  # read at inference: images trained on are not encoded again
            # a run repeats exactly at the same thread count only: other counts sum in another order, and training
            # amplifies that (Kvasir, dicece: test Dice 0.854 at one thread, 0.832 at two; benchmarks/README.md)
            "torch_threads": torch.get_num_threads(),
            "encoder_precision": segmenter.precision,  # the features it learnt from (auto: bfloat16 if native)
            "image_channels": training_channels(triplets),  # a multichannel run's reading, applied at inference
            "image_channel_counts": channel_counts,  # gray/colour or 2 channels: another kind is refused at inference
        },
        "threshold": config.threshold,
    }
    val_positives, val = val, val + val_negatives
    dev = segmenter.device
    epoch_length = len(train) + int(round(config.negatives * len(train)))
    steps_per_epoch = math.ceil(epoch_length / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    done_steps = epoch0 * steps_per_epoch + step0
    t_train, first_step = time.perf_counter(), done_steps
    stopped_early = False
    epoch = epoch0
    # model.safetensors holds the best epoch's own weights once this run saved them; a resumed run's may hold the
    # head its earlier run refitted, whose Dice is not the best epoch's record
    saved_here = False
    for epoch in range(epoch0, config.epochs):
        seen = epoch_samples(
            train, epoch, seed=config.seed, balance=config.balance, negatives=config.negatives, paired=paired
        )
        decoder.train()
        start = step0 if epoch == epoch0 else 0
        # the loss sums of the steps before a cancel come back with the resume, so the epoch's record is the same
        parts_sum: dict[str, float] = dict(state.get("partial", {})) if state is not None and start else {}
        for step in range(start, steps_per_epoch):
            if stop():
                save_resume_state(
                    out, decoder, optimizer, config, epoch, step, best, history, rows, parts_sum, cache=cache
                )
                kept = ""  # the model a finished epoch saved is whole and answers: said, not only the resume
                if best["epoch"]:
                    dice_said = "" if best.get("val_dice") is None else f", val Dice {best['val_dice']:.3f}"
                    kept = f"; the best epoch so far (epoch {best['epoch']}{dice_said}) is the model in {out}"
                raise CancelledError(f"cancelled at epoch {epoch + 1}, step {step}{kept}; resume from {out / 'last'}")
            batch = make_batch(seen[step * config.batch_size : (step + 1) * config.batch_size], text, dev)
            generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch * 10_007 + step)
            loss, parts = batch_loss(config.loss, decoder, batch, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v
            done_steps += 1
            rate = (time.perf_counter() - t_train) / max(1, done_steps - first_step)
            eta = rate * (total_steps - done_steps) * 1.1  # + validation
            report(
                FEATURE_SHARE + (1 - FEATURE_SHARE) * done_steps / total_steps,
                f"epoch {epoch + 1}/{config.epochs}, step {step + 1}/{steps_per_epoch}, loss {parts['loss']:.3f}, "
                f"ETA {format_eta(eta)}",
            )
        record = {"epoch": epoch + 1, **{f"train_{k}": round(v / steps_per_epoch, 5) for k, v in parts_sum.items()}}
        if val:
            record.update(validate(decoder, val, text, dev, config.threshold))
        history.append(record)
        # without validation images every epoch is the best so far: the last is kept and patience never stops it
        improved = not val or record["val_dice"] > best["val_dice"]
        kept = best  # the model in out until this epoch's is saved
        try:
            # an old model (--overwrite) stays until this run's first replaces it, weights and record together: a
            # run failed, cancelled or killed before (or during) that save still has a whole model
            weights = None  # not better: the weights there stay, the record gains this epoch
            if improved:
                best = {"epoch": epoch + 1, "val_dice": record.get("val_dice"), "val_loss": record.get("val_loss")}
                weights = decoder.state_dict()
            save_model(out, {**model_info, "best": best, "history": history}, weights)
            saved_here = saved_here or improved
            kept = best  # the model in out is now this epoch's, whole and described
            save_resume_state(out, decoder, optimizer, config, epoch + 1, 0, best, history, rows, cache=cache)
        except OSError as exc:
            if exc.errno not in OUTPUT_DISK_REFUSES:
                raise
            raise PromptsegError(_disk_refused(exc, out, epoch + 1, kept)) from exc
        report(
            FEATURE_SHARE + (1 - FEATURE_SHARE) * done_steps / total_steps,
            f"epoch {epoch + 1}: val Dice {record['val_dice']:.3f} (best {best['val_dice']:.3f} at epoch "
            f"{best['epoch']})"
            if val
            else f"epoch {epoch + 1}: no validation images (validation fraction 0), this epoch's weights kept",
        )
        if epoch + 1 - best["epoch"] >= config.patience:
            stopped_early = epoch + 1 < config.epochs
            break
    refit: dict = {}
    if decoder.config.presence and config.presence_refit and best["epoch"] > 0:
        if val:  # without validation images the refit is skipped (refit_if_not_worse says so in the result)
            report(0.99, "refitting the presence head on every image-text pair")
        load_decoder_weights(decoder, out / WEIGHTS_FILE, str(out))
        try:
            refit = refit_if_not_worse(
                decoder,
                train,
                val_positives,
                val,
                texts,
                text,
                PresenceFit(seed=config.seed),
                paired=paired,
                threshold=config.threshold,
                # of the weights just loaded, on the same validation samples; else measured on them
                val_dice=best["val_dice"] if saved_here else None,
                cancel=stop,
            )
        except CancelledError:
            command = refit_command(data, out, columns=columns, channel_axis=channel_axis, channels=channels)
            raise CancelledError(
                f"cancelled while refitting the presence head; {out} holds the model as trained (its jointly "
                f"trained head): `{command}` finishes it"
            ) from None
        kept_refit = decoder.state_dict() if refit.get("kept") else None
        save_model(out, {**model_info, "best": best, "history": history, "presence_refit": refit}, kept_refit)
    report(
        1.0,
        f"done: best val Dice {best['val_dice']:.3f} at epoch {best['epoch']}"
        if val
        else f"done: {best['epoch']} epoch(s) without validation, the last kept",
    )
    return TrainingResult(
        path=out,
        best_epoch=int(best["epoch"]),
        best_val_dice=None if best["val_dice"] is None else float(best["val_dice"]),
        epochs_run=len(history),
        stopped_early=stopped_early,
        history=history,
        seconds=time.perf_counter() - t_start,
        feature_cache={"hits": store.hits, "misses": store.misses},
        presence_refit=refit,
        warnings=warnings,
        split=split,
    )


def _disk_refused(exc: OSError, out: Path, epoch: int, kept: dict) -> str:
    """What a disk that fills up (or turns read-only) at the end of ``epoch`` leaves: the best epoch so far, ``kept``,
    is a whole model in ``out``, and ``out/last`` the last epoch saved, from which a resume goes on. Why: it said only
    "No space left on device", as if the hours of training were lost."""
    where = f"{exc.filename}: " if exc.filename else f"writing into {out}: "
    said = f"{where}{exc.strerror or exc} at the end of epoch {epoch}"
    if kept["epoch"]:
        dice = "" if kept.get("val_dice") is None else f", val Dice {kept['val_dice']:.3f}"
        said += f"; {out} holds the best epoch so far (epoch {kept['epoch']}{dice})"
    try:
        saved = json.loads((out / "last" / "state.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError, TypeError):
        saved = 0
    if saved:
        return f"{said}; make room, then --resume (widget: resume) goes on from the end of epoch {saved}"
    return f"{said}; make room, then train again"


def cut_texts_warning(embedder, name: str, texts: Sequence[str]) -> list[str]:
    """A warning naming how many of ``texts`` the sentence model cuts (none: no warning): it reads only its first
    ``max_seq_length`` tokens of each, so what follows cannot tell two texts apart."""
    unique = list(dict.fromkeys(texts))
    cut = embedder.too_long(unique)
    if not cut:
        return []
    return [
        f"{len(cut)} of {len(unique)} text(s) are longer than {name}'s {embedder.max_seq_length} tokens and are cut "
        f"to their first {embedder.max_seq_length} (the model never reads the rest), e.g. {cut[0][:60]!r}..."
    ]


def make_batch(samples: Sequence[Sample], text: TextTokens, device: torch.device) -> Batch:
    words, word_mask, sentence = text.get([s.text for s in samples])
    low = None if samples[0].low is None else torch.stack([s.low for s in samples]).float().to(device)
    return Batch(
        features=torch.stack([s.features for s in samples]).float().to(device),
        low=low,
        target=torch.stack([s.target for s in samples]).float().unsqueeze(1).to(device),
        valid=torch.stack([s.valid for s in samples]).unsqueeze(1).to(device),
        words=words.to(device),
        word_mask=word_mask.to(device),
        sentence=sentence.to(device),
        texts=[s.text for s in samples],
    )


@torch.no_grad()
def validate(
    decoder: TextPromptDecoder, samples: Sequence[Sample], text: TextTokens, device, threshold: float = 0.5
) -> dict:
    """Mean Dice (at ``threshold``, in the model frame) and Dice + CE loss over ``samples``."""
    decoder.eval()
    dices, losses = [], []
    cut = math.log(threshold / (1 - threshold))
    for start in range(0, len(samples), 8):
        batch = make_batch(samples[start : start + 8], text, device)
        logits = decoder(batch.features, batch.low, batch.words, batch.word_mask, batch.sentence).logits
        loss, _ = dice_ce(logits, batch.target, batch.valid)
        losses.append(float(loss) * len(batch.texts))
        pred = (logits > cut) & batch.valid
        truth = (batch.target > 0.5) & batch.valid
        inter = (pred & truth).sum((1, 2, 3)).float()
        total = (pred.sum((1, 2, 3)) + truth.sum((1, 2, 3))).float()
        dices.extend(torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total)).tolist())
    decoder.train()
    return {"val_dice": round(float(np.mean(dices)), 5), "val_loss": round(sum(losses) / len(samples), 5)}


def _optimizer(decoder: TextPromptDecoder, config: TrainingConfig) -> torch.optim.AdamW:
    sam = list(decoder.mask_decoder.parameters())
    sam_ids = {id(p) for p in sam}
    new = [p for p in decoder.parameters() if id(p) not in sam_ids]
    groups = [{"params": new, "lr": config.lr}]
    if config.decoder_lr > 0:
        groups.append({"params": sam, "lr": config.decoder_lr})
    else:
        decoder.mask_decoder.requires_grad_(False)
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay)
