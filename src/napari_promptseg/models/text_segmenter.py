"""Trained text-conditioned segmenter (implements ``TextSegmenter``): frozen image and text encoders + a trained
:class:`~.text_decoder.TextPromptDecoder`, saved as a directory anyone can load without pickle.

A model directory holds ``text_segmenter.json`` (what the model is: kind, encoders by registry name, decoder
architecture, training settings and validation metrics) and ``model.safetensors`` (the decoder's weights). The
encoders are not copied: they resolve through the registry (LiteMedSAM and MiniLM are bundled), so a model
directory is a few MB. ``kind: clipseg`` marks a fine-tuned CLIPSeg, stored in the transformers layout in the same
directory (:func:`~napari_promptseg.models.load_text_segmenter` loads both).
"""

from __future__ import annotations

import errno
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import PromptsegError, WeightsError
from ..io._files import REPLACING_JOURNAL, replacing, replacing_together, undo_interrupted_replacing
from .cache import content_key
from .preprocessing import Normalization, ResizeTransform, as_channels_last, in_memory
from .text_decoder import DecoderConfig, TextPromptDecoder

CONFIG_FILE = "text_segmenter.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "napari-promptseg/text-segmenter"
FORMAT_VERSION = 1
#: bump when the cached features change meaning (which levels, pooling, dtype)
FEATURE_VERSION = "levels-v1"
_HOOK_LOCK = threading.Lock()


@dataclass(frozen=True)
class ImageLevels:
    """Frozen image features of one image, as the decoder takes them."""

    features: torch.Tensor  # (1, C, g, g) image embedding
    low: torch.Tensor | None  # (1, C_low, g, g) first-stage features average-pooled to the embedding grid
    transform: ResizeTransform
    key: str


def _first_stage(encoder: torch.nn.Module) -> torch.nn.Module | None:
    """The module whose output is the encoder's first-stage features (TinyViT: fast or reference), else None."""
    stages = getattr(encoder, "stages", None)  # FastTinyViT
    if stages is not None:
        return stages[0]
    if type(encoder).__name__ == "TinyViT":
        return encoder.layers[0]
    return None


def _as_grid(x: torch.Tensor) -> torch.Tensor:
    """(B, h, w, C) channels-last or (B, h w, C) tokens -> (B, C, h, w)."""
    if x.ndim == 3:
        side = int(round(x.shape[1] ** 0.5))
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], side, side)
    return x.permute(0, 3, 1, 2)


@torch.inference_mode()
def encode_levels(segmenter, hwc: np.ndarray, normalize: Normalization = "auto", *, low: bool = True) -> ImageLevels:
    """Image embedding (+ first-stage features pooled to its grid) of a validated (H, W, C) image."""
    x, transform = segmenter.preprocess(hwc, normalize)
    encoder = segmenter._encoder()
    stage = _first_stage(encoder) if low else None
    captured: list[torch.Tensor] = []
    with _HOOK_LOCK:  # a hook sees every forward of the module: one encode at a time (widget worker + console)
        handle = None if stage is None else stage.register_forward_hook(lambda m, i, o: captured.append(o) and None)
        try:
            with segmenter.encoder_autocast():
                features = encoder(x.to(segmenter.device)).float()
        finally:
            if handle is not None:
                handle.remove()
    low_grid = None
    if captured:
        low_grid = _as_grid(captured[0]).float()
        if low_grid.shape[-1] != features.shape[-1]:
            low_grid = F.adaptive_avg_pool2d(low_grid, features.shape[-2:])
        low_grid = low_grid.contiguous()
    key = content_key(hwc, segmenter.feature_name, normalize, FEATURE_VERSION)
    return ImageLevels(features.contiguous(), low_grid, transform, key)


def _as_stored(x: torch.Tensor | None) -> torch.Tensor | None:
    """Features rounded to float16 as the training cache stores them (the decoder was trained on those), so an image
    answers the same whether its features come from the cache or from the encoder."""
    return None if x is None else x.half().float()


class TextTokens:
    """The frozen text encoder's token states, memoised per text (training sees the same prompts every epoch)."""

    def __init__(self, embedder, maxsize: int = 4096) -> None:
        self.embedder = embedder
        self.dim = int(embedder.dim)
        self._memo: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self.maxsize = maxsize
        self._lock = threading.Lock()

    def get(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(words (N, T, dim), mask (N, T) bool, sentence (N, dim)) padded to the longest text."""
        with self._lock:  # the widget's worker and the console may share a model
            for text in dict.fromkeys(t for t in texts if t not in self._memo):
                # one text at a time: batched with others it is padded, and its states change in the last bits with
                # the batch (1e-7), so a resumed training run, meeting texts in another order, ended elsewhere
                hidden, mask, pooled = self.embedder.encode_tokens([text])
                self._memo[text] = (hidden[0, mask[0]].clone(), pooled[0].clone())
            items = [self._memo[t] for t in texts]
            while len(self._memo) > self.maxsize:
                self._memo.popitem(last=False)
        length = max(h.shape[0] for h, _ in items)
        words = torch.zeros(len(items), length, self.dim)
        mask = torch.zeros(len(items), length, dtype=torch.bool)
        for k, (h, _) in enumerate(items):
            words[k, : h.shape[0]] = h
            mask[k, : h.shape[0]] = True
        return words, mask, torch.stack([p for _, p in items])


class TrainedTextSegmenter:
    """Image + text -> mask logits with a trained fusion decoder (implements ``TextSegmenter``)."""

    def __init__(
        self,
        decoder: TextPromptDecoder,
        segmenter,
        embedder,
        *,
        name: str = "trained",
        info: dict | None = None,
        feature_dirs: Sequence[str | os.PathLike] = (),
    ) -> None:
        self.decoder = decoder.eval().to(segmenter.device)
        #: feature caches of training runs (read only): an image trained on is not encoded again
        self.feature_dirs = [Path(d) for d in feature_dirs]
        self.segmenter = segmenter
        self.text = TextTokens(embedder)
        self.name = name
        self.info = info or {}
        self.device = segmenter.device
        self._levels: OrderedDict[str, ImageLevels] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TrainedTextSegmenter(name={self.name!r}, encoder={self.segmenter.name!r})"

    def levels(self, hwc: np.ndarray, normalize: Normalization = "auto") -> ImageLevels:
        key = content_key(hwc, self.segmenter.feature_name, normalize, FEATURE_VERSION)
        with self._lock:
            if key in self._levels:
                self._levels.move_to_end(key)
                return self._levels[key]
        levels = self._stored_levels(hwc, key)
        if levels is None:
            fresh = encode_levels(self.segmenter, hwc, normalize, low=bool(self.decoder.config.low_level_dim))
            levels = ImageLevels(_as_stored(fresh.features), _as_stored(fresh.low), fresh.transform, key)
        with self._lock:
            self._levels[key] = levels
            while len(self._levels) > 4:
                self._levels.popitem(last=False)
        return levels

    def _stored_levels(self, hwc: np.ndarray, key: str) -> ImageLevels | None:
        """The image's features from a training run's cache, or None."""
        low = bool(self.decoder.config.low_level_dim)
        for directory in self.feature_dirs:
            path = directory / f"{key}.safetensors"
            if not path.is_file():
                continue
            try:
                tensors = load_tensors(path, "feature cache")
            except WeightsError:  # a damaged entry: encode instead
                continue
            if low and "low" not in tensors:
                continue
            return ImageLevels(
                tensors["features"][None].float().to(self.device),
                tensors["low"][None].float().to(self.device) if low else None,
                ResizeTransform(hwc.shape[:2], self.segmenter.input_size),
                key,
            )
        return None

    @torch.inference_mode()
    def low_res_logits(self, levels: ImageLevels, prompts: Sequence[str]) -> torch.Tensor:
        """(P, 1, s, s) logits in the padded model frame, one per prompt."""
        words, mask, sentence = self.text.get(list(prompts))
        n = len(prompts)
        dev = self.device
        low = None if levels.low is None else levels.low.expand(n, -1, -1, -1)
        out = self.decoder(levels.features.expand(n, -1, -1, -1), low, words.to(dev), mask.to(dev), sentence.to(dev))
        return out.logits.float().cpu()

    def mask_logits(
        self,
        image: np.ndarray,
        prompts: Sequence[str],
        *,
        channel_axis: int | None = None,
        channels: list[int] | None = None,
        normalize: Normalization = "auto",
        name: str = "image",
    ) -> np.ndarray:
        """(P, H, W) float32 logits on the original image grid; sigmoid > 0.5 (logit > 0) is the mask."""
        prompts = _check_prompts(prompts)
        hwc = in_memory(as_channels_last(image, channel_axis=channel_axis, channels=channels, name=name), name)
        refuse_other_channels(hwc.shape[-1], (self.info.get("training") or {}).get("image_channel_counts"), self, name)
        # too small for the encoder's grid: refused as embed() refuses it (the encoder is called here, not embed)
        self.segmenter.check_enough_pixels(hwc.shape[:2], name)
        levels = self.levels(hwc, normalize)
        low_res = self.low_res_logits(levels, prompts)
        return np.stack(
            [levels.transform.logits_to_original(low_res[i : i + 1])[0, 0].numpy() for i in range(len(prompts))]
        )

    def heatmaps(self, image: np.ndarray, prompts: Sequence[str], **kwargs) -> np.ndarray:
        """(P, H, W) float32 probabilities (the ``TextHeatmapper`` view of the model)."""
        logits = self.mask_logits(image, prompts, **kwargs)
        return (1.0 / (1.0 + np.exp(-np.clip(logits, -60, 60)))).astype(np.float32)

    def heatmap(self, image: np.ndarray, prompt: str, **kwargs) -> np.ndarray:
        return self.heatmaps(image, [prompt], **kwargs)[0]


def refuse_other_channels(fed: int, trained: Sequence[int] | None, model: object, name: str) -> None:
    """Refuse an image fed with ``fed`` channels to a model ``trained`` on images of other channel counts (as
    :func:`...methods.text_training.row_checks.check_rows` recorded them; None: a model from before, not checked): 2
    channels (two stains) against gray or colour (1 or 3, one kind: gray is fed as colour), either way. Why: a colour
    model answered a 2-channel image without a word, its channels fed as red and green."""
    if not trained:
        return
    two = fed == 2
    if any((count == 2) == two for count in trained):
        return
    label = getattr(model, "name", "") or "trained"
    where = "" if name == "image" else f"{name}: "  # the CLI and the widget name the file or layer before it
    if two:
        raise PromptsegError(
            f"{where}the image has 2 channels, but the text model {label} was trained on gray or colour images: give "
            "one channel to read as gray (CLI --channels 0; widget: channels; Python: channels=[0]), or train a model "
            "on 2-channel images"
        )
    raise PromptsegError(
        f"{where}{'a gray' if fed == 1 else 'a colour'} image, but the text model {label} was trained on 2-channel "
        "images: give the image's two channels (CLI --channels A B; widget: channels; Python: channels=[a, b]), or "
        "train a model on gray or colour images"
    )


def _check_prompts(prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, str):
        raise PromptsegError("prompts: give a list of strings")
    prompts = list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise PromptsegError("prompts: give one or more strings")
    return prompts


# -- model directories -----------------------------------------------------------------------------------------------


def config_text(config: dict) -> str:
    """The text of a model directory's :data:`CONFIG_FILE` describing ``config``."""
    return json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **config}, indent=2)


def write_config(directory: Path, config: dict) -> Path:
    path = Path(directory) / CONFIG_FILE
    with replacing(path) as tmp:  # a reader never sees half a file
        tmp.write_text(config_text(config))
    return path


def save_model(directory: Path, config: dict, tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Save a trained text decoder in ``directory``: its weights ``tensors`` (:data:`WEIGHTS_FILE`; None: the
    weights there stay) and ``config`` (:data:`CONFIG_FILE`) replace the earlier files as one replacement
    (:func:`~..io._files.replacing_together`, the record last). Why: written one after the other, a second Ctrl+C or
    a kill between them left new weights described by the earlier record, which a load or --resume took for the
    model; now the folder holds the earlier model or this one, whole."""
    directory = Path(directory)
    data = None if tensors is None else _tensor_bytes(tensors)
    with replacing_together(directory, CONFIG_FILE) as temp:
        if data is not None:
            temp(WEIGHTS_FILE).write_bytes(data)
        temp(CONFIG_FILE).write_text(config_text(config))
    return directory / CONFIG_FILE


def undo_stopped_save(directory: Path) -> list[str]:
    """Put back the model from before a save into ``directory`` that was killed between its renames (SIGKILL, a
    power cut: its journal, :data:`~..io._files.REPLACING_JOURNAL`, stays) before the folder is read. Why: only the
    next save undid it, so a load before that read the new weights beside the earlier record as the model. Returns
    the names put back; raises WeightsError naming the folder where it cannot be written (a read-only share)."""
    if not (directory / REPLACING_JOURNAL).exists():
        return []
    try:
        if not os.access(directory, os.W_OK):
            raise PermissionError(errno.EACCES, "the folder cannot be written", str(directory))
        return undo_interrupted_replacing(directory)
    except OSError as exc:
        raise WeightsError(
            f"text model {directory}: a save into it was stopped while replacing its files (its journal "
            f"{REPLACING_JOURNAL} is there), so it may hold the new weights beside the earlier record; loading puts "
            f"the earlier model back, but the folder cannot be written ({exc}). Make it writable (or copy it to a "
            "folder that is) and load it again"
        ) from exc


def _tensor_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    path = Path(path)
    data = _tensor_bytes(tensors, metadata)
    with replacing(path) as tmp:
        # written into the file replacing() made (safetensors' save_file makes its own, private 0600: a model in
        # a lab's shared folder was unreadable to the others)
        tmp.write_bytes(data)
    return path


def load_tensors(path: Path, name: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise WeightsError(f"{name}: {path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{name}: {path} is not a readable safetensors file ({exc})") from exc


def model_directory(path: str | os.PathLike) -> Path:
    """The model directory ``path`` names: the directory itself, or the directory of one of its own files
    (``model.safetensors``, ``text_segmenter.json``). Why: users give "the checkpoint", the weights file, and were
    told it was not a directory and to train one."""
    path = Path(path).expanduser()
    if path.name in (CONFIG_FILE, WEIGHTS_FILE) and path.is_file() and (path.parent / CONFIG_FILE).is_file():
        return path.parent
    return path


def is_text_model(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a text model of ``promptseg train-text`` (its directory or one of its files)."""
    try:
        return (model_directory(path) / CONFIG_FILE).is_file()
    except (OSError, TypeError, ValueError):
        return False


def read_config(path: str | os.PathLike) -> dict:
    """The JSON config of a model directory (or of the directory of its weights or config file, see
    :func:`model_directory`), checked; raises WeightsError naming the directory."""
    directory = model_directory(path)
    config_path = directory / CONFIG_FILE
    if not directory.is_dir():
        raise WeightsError(f"text model {directory}: not a directory (train one with `promptseg train-text`)")
    if not config_path.is_file():
        if (directory.parent / CONFIG_FILE).is_file():  # last/ (the resume state) or cache/ of a model
            raise WeightsError(
                f"text model {directory}: a folder inside the text model {directory.parent}; give that directory"
            )
        if (directory / "last" / "state.json").is_file():  # a run stopped (cancelled, failed) in its first epoch
            raise WeightsError(
                f"text model {directory}: its training stopped before its first epoch ended, so no model was saved "
                f"yet (its state is in {directory / 'last'}); resume it: `promptseg train-text DATA -o {directory} "
                "--resume` (widget: Train text model, resume)"
            )
        raise WeightsError(
            f"text model {directory}: no {CONFIG_FILE}; is it the output directory of `promptseg train-text`?"
        )
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"text model {config_path}: not readable JSON ({exc})") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise WeightsError(f"text model {config_path}: not a napari-promptseg text model config")
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise WeightsError(f"text model {config_path}: written by a newer napari-promptseg; update to load it")
    return config


def build_decoder(config: dict, name: str) -> TextPromptDecoder:
    try:
        return TextPromptDecoder(DecoderConfig.from_dict(config["decoder"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{name}: bad decoder settings in {CONFIG_FILE} ({exc})") from exc


def load_decoder_weights(decoder: TextPromptDecoder, path: Path, name: str) -> None:
    state = load_tensors(path, name)
    expected = decoder.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise WeightsError(
            f"{name}: {path} does not fit the decoder in {CONFIG_FILE} "
            f"({len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} of another shape)"
        )
    decoder.load_state_dict(state)


def missing_weights(directory: Path) -> None:
    """Refuse a text model folder whose weights file is gone (its config still there), saying so and what to do;
    it was only '.../model.safetensors does not exist'."""
    if (directory / WEIGHTS_FILE).is_file():
        return
    last = directory / "last" / WEIGHTS_FILE
    kept = (
        f"; its last epoch's weights (not necessarily the best) are in {last}: copying that file into the folder "
        "gives that epoch's model"
        if last.is_file()
        else ""
    )
    raise WeightsError(
        f"text model {directory}: its weights file {WEIGHTS_FILE} is missing ({CONFIG_FILE} is there, the model "
        f"is not): copy it back into the folder if you have it, or train the model again: `promptseg train-text "
        f"DATA -o {directory} --overwrite` (widget: Train text model){kept}"
    )


def load_fusion_model(directory: Path, config: dict, *, device: str = "auto") -> TrainedTextSegmenter:
    from . import load_segmenter, load_text_embedder

    name = directory.name
    decoder = build_decoder(config, str(directory))
    missing_weights(directory)
    load_decoder_weights(decoder, directory / WEIGHTS_FILE, str(directory))
    encoders = config.get("encoders", {})
    segmenter = load_segmenter(encoders.get("image", "litemedsam"), device=device)
    embedder = load_text_embedder(encoders.get("text", "all_minilm_l6_v2"), device=device)
    if embedder.dim != decoder.config.text_dim:
        raise WeightsError(
            f"{directory}: the text encoder gives {embedder.dim}-d tokens, the decoder takes {decoder.config.text_dim}"
        )
    caches = [directory / "cache", config.get("training", {}).get("cache_dir") or directory / "cache"]
    feature_dirs = [Path(d) for d in dict.fromkeys(map(str, caches)) if Path(d).is_dir()]
    return TrainedTextSegmenter(decoder, segmenter, embedder, name=name, info=config, feature_dirs=feature_dirs)
