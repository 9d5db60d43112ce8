"""medvlsm's own route: fine-tune CLIPSeg (transformers) on image-mask-text triplets with the paper's recipe.

Recipe (medvlsm, MIDL 2024, and its ``configs/experiment/clipseg.yaml``): the whole model trained (encoders not
frozen), AdamW lr 2e-4, weight decay 1e-3, Dice + CE (1 : 0.2 as the paper reports), gradient norm clipped at
0.5, the image squashed to the processor's square input (352 px) with ImageNet statistics, the mask resized the
same way; prediction = sigmoid > 0.5. Validation Dice every epoch, early stopping, the best epoch saved in the
transformers layout (``save_pretrained``: config, safetensors weights, processor and tokenizer files) plus
``text_segmenter.json`` (kind ``clipseg``), so the directory loads with :func:`...models.load_text_segmenter`,
``promptseg text --text-model`` and as a ``--heatmapper`` checkpoint.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...callbacks import ProgressCallback
from ...errors import CancelledError, PromptsegError
from ...io._files import default_file_mode, replacing_together
from ...models.preprocessing import to_rgb_uint8
from ...models.text_segmenter import CONFIG_FILE, config_text, write_config
from .data import (
    ArrayTriplet,
    Triplet,
    files_left_out,
    format_eta,
    refuse_fraction_beside_split,
    split_triplets,
    training_channels,
    training_triplets,
)
from .losses import dice_ce
from .resume import drop_resume_state, refuse_inside_model
from .row_checks import check_rows, split_record, split_said
from .trainer import DEFAULT_VAL_FRACTION, TrainingResult, check_settings

#: what the fine-tune's save_pretrained writes over, besides the processor's files
MODEL_FILES = ("config.json", "model.safetensors", "pytorch_model.bin")


def _prepare(model, processor, items: Sequence[Triplet | ArrayTriplet]) -> list[tuple[torch.Tensor, torch.Tensor, str]]:
    """(pixels (3, s, s), mask (s, s) float, text) per triplet in the processor's square frame."""
    out = []
    for t in items:
        image, mask = t.load()
        rgb = to_rgb_uint8(image)
        pixels = processor.image_processor(images=[rgb], return_tensors="pt", input_data_format="channels_last")
        pixels = pixels.pixel_values[0]
        target = F.interpolate(
            torch.from_numpy(mask.astype(np.float32))[None, None], size=pixels.shape[-2:], mode="nearest-exact"
        )[0, 0]
        out.append((pixels, target, t.text))
    return out


def _logits(model, processor, pixels: torch.Tensor, texts: list[str], max_length: int) -> torch.Tensor:
    tokens = processor.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    logits = model(pixel_values=pixels, input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).logits
    return logits.reshape(len(texts), 1, *logits.shape[-2:])  # transformers squeezes a batch of one


def finetune_clipseg(
    data: str | Path | Sequence[Triplet | ArrayTriplet | tuple],
    output_dir: str | Path,
    *,
    weights: str | Path | None = None,
    epochs: int = 20,
    batch_size: int = 8,
    lr: float = 2e-4,
    weight_decay: float = 1e-3,
    patience: int = 5,
    seed: int = 0,
    val_fraction: float | None = None,
    overwrite: bool = False,
    columns: dict[str, str] | None = None,
    channel_axis: int | None = None,
    channels: Sequence[int] | None = None,
    device: str = "auto",
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
    weights_option: str = "--clipseg-weights",
) -> TrainingResult:
    """Fine-tune CLIPSeg (registry ``clipseg_rd64_refined``, or the checkpoint directory ``weights``).
    ``val_fraction``: the share of the images held out for validation when the data has no split of its own (None:
    :data:`~.trainer.DEFAULT_VAL_FRACTION`); given for data whose split marks val rows, it is refused.
    ``weights_option`` names ``weights`` where missing weights are told (the CLI's flag, the widget's field).
    ``channel_axis`` and ``channels``: how every image given without its own is read
    (:func:`.data.training_triplets`)."""
    from ...models import download_progress, resolve_device, resolve_weights
    from ...models.clipseg import load_clipseg

    given = dict(epochs=epochs, batch_size=batch_size, lr=lr, patience=patience, seed=seed, val_fraction=val_fraction)
    check_settings({key: value for key, value in given.items() if value is not None})
    report = progress or (lambda fraction, message: None)
    stop = cancel or (lambda: False)
    out = Path(output_dir)
    refuse_inside_model(out)
    # save_pretrained writes config.json and model.safetensors: a CLIPSeg (the base given with --clipseg-weights)
    # or any transformers model in the folder was replaced without a word
    held = [name for name in (CONFIG_FILE, *MODEL_FILES) if (out / name).exists()]
    if held and not overwrite:
        raise PromptsegError(
            f"{out} already holds a model ({', '.join(held)}); choose another directory or overwrite it (CLI "
            "--overwrite; widget: overwrite)"
        )
    triplets = training_triplets(data, columns, channel_axis=channel_axis, channels=channels)
    image_channels = training_channels(triplets)  # a multichannel run's reading, recorded for inference
    refuse_fraction_beside_split(triplets, val_fraction)  # as the fusion decoder: it was ignored without a word
    fraction = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
    train_set, val_set = split_triplets(triplets, val_fraction=fraction, seed=seed)
    split = split_record(triplets, train_set, val_set, val_fraction=fraction, seed=seed)
    report(0.0, split_said(split))
    left_out = files_left_out(triplets)  # a TIFF's images after its first: trained on by nothing
    for warning in left_out:
        report(0.0, f"warning: {warning}")
    # every bad row, before CLIPSeg loads; the channel counts fed, which inference holds images to (as a fusion model)
    channel_counts = check_rows([*train_set, *val_set], progress=report, cancel=stop)
    t_start = time.perf_counter()
    report(0.0, "loading CLIPSeg")
    # a download is told (and cancelled) as every other step: huggingface_hub's own bars were all a user saw
    source = resolve_weights(
        "clipseg_rd64_refined",
        weights,
        progress=download_progress(report, stop, "clipseg_rd64_refined"),
        option=weights_option,
    )
    dev = resolve_device(device)
    base = load_clipseg(
        source, device=dev, name="clipseg_rd64_refined"
    )  # a private copy: the registry's stays untouched
    model, processor = base.model, base.processor
    max_length = base.max_text_length
    train, val = _prepare(model, processor, train_set), _prepare(model, processor, val_set)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = math.ceil(len(train) / batch_size)
    best = {"epoch": 0, "val_dice": -1.0}
    history: list[dict] = []
    t_train, done = time.perf_counter(), 0
    stopped_early = False
    for epoch in range(epochs):
        model.train()
        order = np.random.default_rng([seed, epoch]).permutation(len(train))
        total = 0.0
        for step in range(steps):
            if stop():
                # before its first epoch ends nothing of the fine-tune is saved: it said "the best epoch so far is in"
                kept = (
                    f"the best epoch so far (epoch {best['epoch']}) is the model in {out}"
                    if best["epoch"]
                    else f"no epoch had finished, so nothing of this fine-tune is saved in {out}"
                )
                raise CancelledError(f"cancelled at epoch {epoch + 1}; {kept} (a CLIPSeg fine-tune does not resume)")
            items = [train[i] for i in order[step * batch_size : (step + 1) * batch_size]]
            pixels = torch.stack([p for p, _, _ in items]).to(dev)
            target = torch.stack([m for _, m, _ in items]).unsqueeze(1).to(dev)
            logits = _logits(model, processor, pixels, [t for _, _, t in items], max_length)
            loss, _ = dice_ce(logits, target, torch.ones_like(target, dtype=torch.bool))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            optimizer.step()
            total += float(loss.detach())
            done += 1
            eta = (time.perf_counter() - t_train) / done * (steps * epochs - done)
            message = f"epoch {epoch + 1}/{epochs}, loss {float(loss.detach()):.3f}, ETA {format_eta(eta)}"
            report(done / (steps * epochs), message)
        record = {
            "epoch": epoch + 1,
            "train_loss": round(total / steps, 5),
            **(_validate(model, processor, val, dev, max_length) if val else {}),
        }
        history.append(record)
        # without validation images (val_fraction 0) every epoch is kept over the last: patience never stops it
        if not val or record["val_dice"] > best["val_dice"]:
            if best["epoch"] == 0:  # this run's first model: an old fusion run's state goes with the old model
                drop_resume_state(out)
            best = {"epoch": epoch + 1, "val_dice": record.get("val_dice")}
        config = {
            "kind": "clipseg",
            "training": {
                "recipe": "medvlsm",
                "lr": lr,
                "weight_decay": weight_decay,
                "epochs": epochs,
                "batch_size": batch_size,
                "seed": seed,
                "train": len(train),
                "val": len(val),
                "base": str(source),
                "image_channels": image_channels,
                "image_channel_counts": channel_counts,  # gray/colour or 2 channels: the other refused
            },
            "threshold": 0.5,
            "best": best,
            "history": history,
        }
        if best["epoch"] == epoch + 1:
            _save_model(model, processor, out, config)
        else:
            write_config(out, config)
        if epoch + 1 - best["epoch"] >= patience:
            stopped_early = epoch + 1 < epochs
            break
    model.eval()
    return TrainingResult(
        out,
        int(best["epoch"]),
        None if best["val_dice"] is None else float(best["val_dice"]),
        len(history),
        stopped_early,
        history,
        time.perf_counter() - t_start,
        warnings=left_out,
        split=split,
    )


#: the folder in MODEL_DIR a save writes into before its files are renamed into place
_SAVE_FOLDER = re.compile(r"\.clipseg-save\.\w+\.tmp")


def _save_model(model, processor, out: Path, config: dict) -> None:
    """Save the fine-tuned model in ``out`` whole or not at all: transformers' files (config, weights, processor) are
    written into a folder beside them, then renamed into place with ``config`` (:data:`CONFIG_FILE`, last) as one
    replacement (:func:`~...io._files.replacing_together`). Why: save_pretrained wrote them one by one into ``out``,
    so a second Ctrl+C or a kill during the save left the new epoch's weights beside the previous epoch's files and
    record, which a later load took for the model. A model file of an earlier model this save has none of (a
    ``pytorch_model.bin`` beside the new safetensors) goes with the replacement."""
    out.mkdir(parents=True, exist_ok=True)
    for left in out.iterdir():  # a save killed outright (SIGKILL: its cleanup never ran) left its folder
        if _SAVE_FOLDER.fullmatch(left.name) and left.is_dir() and not left.is_symlink():
            shutil.rmtree(left, ignore_errors=True)
    scratch = Path(tempfile.mkdtemp(prefix=".clipseg-save.", suffix=".tmp", dir=out))
    try:
        model.save_pretrained(scratch)
        processor.save_pretrained(scratch)
        # safetensors writes its files private (0600): as readable as the folder's others, for a lab's share
        mode = default_file_mode(out)
        for weights in scratch.glob("*.safetensors"):
            os.chmod(weights, mode)
        written = sorted(p for p in scratch.iterdir() if p.is_file())
        with replacing_together(out, CONFIG_FILE) as temp:
            for file in written:
                os.replace(file, temp(file.name))
            for name in set(MODEL_FILES) - {p.name for p in written}:
                temp.remove(name)
            temp(CONFIG_FILE).write_text(config_text(config))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@torch.no_grad()
def _validate(model, processor, val, dev, max_length: int) -> dict:
    model.eval()
    dices = []
    for start in range(0, len(val), 8):
        items = val[start : start + 8]
        pixels = torch.stack([p for p, _, _ in items]).to(dev)
        target = torch.stack([m for _, m, _ in items]).unsqueeze(1).to(dev) > 0.5
        pred = _logits(model, processor, pixels, [t for _, _, t in items], max_length) > 0
        inter = (pred & target).sum((1, 2, 3)).float()
        total = (pred.sum((1, 2, 3)) + target.sum((1, 2, 3))).float()
        dices.extend(torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total)).tolist())
    model.train()
    return {"val_dice": round(float(np.mean(dices)), 5)}
