"""Sentence embeddings for matching typed prompts to reference-library entries (all-MiniLM-L6-v2, offline).

The model directory is a sentence-transformers export (``modules.json``: Transformer -> Pooling -> Normalize).
We run the same recipe with plain ``transformers`` so no sentence-transformers install is needed: BERT tokens
(truncated at ``max_seq_length`` from ``sentence_bert_config.json``, 256 for all-MiniLM-L6-v2), the last hidden
state averaged over the attention mask (``1_Pooling/config.json``: ``pooling_mode_mean_tokens``), then L2
normalisation, so the dot product of two embeddings is their cosine similarity.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import WeightsError
from .tokens import CutText, cut_text

DEFAULT_MAX_SEQ_LENGTH = 256


def _pooling_mode(model_dir: Path) -> str:
    """'mean' or 'cls' from the sentence-transformers pooling config (mean when there is none, as for MiniLM)."""
    config = model_dir / "1_Pooling" / "config.json"
    if not config.is_file():
        return "mean"
    pooling = json.loads(config.read_text())
    if pooling.get("pooling_mode_mean_tokens"):
        return "mean"
    if pooling.get("pooling_mode_cls_token"):
        return "cls"
    raise WeightsError(f"{config}: only mean or CLS pooling is supported, got {pooling}")


def _normalizes(model_dir: Path) -> bool:
    """True when the export ends with a Normalize module (all-MiniLM-L6-v2 does); cosine matching needs it anyway."""
    modules = model_dir / "modules.json"
    if not modules.is_file():
        return True
    return any(m.get("type", "").endswith("Normalize") for m in json.loads(modules.read_text()))


class SentenceEmbedder:
    """Text -> (N, dim) float32 unit vectors; ``embed(a) @ embed(b).T`` is the cosine similarity."""

    def __init__(self, model_dir: str | os.PathLike, *, device: str | torch.device = "cpu", name: str = "") -> None:
        try:
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging
        except ImportError as exc:
            raise WeightsError(
                f"{name or 'sentence model'}: the text route needs 'transformers' (pip install transformers)"
            ) from exc

        self.model_dir = Path(model_dir)
        self.name = name or self.model_dir.name
        self.device = torch.device(device)
        if not (self.model_dir / "config.json").is_file():
            raise WeightsError(f"{self.name}: {self.model_dir} is not a transformers model directory (no config.json)")
        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a 90 MB local load needs no bar in the CLI's stderr or the console
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
            self.model = AutoModel.from_pretrained(self.model_dir, local_files_only=True).to(self.device).eval()
        except (OSError, ValueError) as exc:
            raise WeightsError(f"{self.name}: cannot load the sentence model from {self.model_dir} ({exc})") from exc
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        config = self.model_dir / "sentence_bert_config.json"
        self.max_seq_length = (
            int(json.loads(config.read_text()).get("max_seq_length", DEFAULT_MAX_SEQ_LENGTH))
            if config.is_file()
            else DEFAULT_MAX_SEQ_LENGTH
        )
        self.pooling = _pooling_mode(self.model_dir)
        self.normalize = _normalizes(self.model_dir)
        self.dim = int(self.model.config.hidden_size)
        # a tokenizer is not safe to share between threads (widget worker + console)
        self._lock = threading.Lock()

    @torch.inference_mode()
    def embed(self, texts: str | Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """(N, dim) float32 embeddings, L2-normalised; one string gives (1, dim)."""
        items = [texts] if isinstance(texts, str) else list(texts)
        if not items:
            return np.zeros((0, self.dim), np.float32)
        out = []
        with self._lock:
            for start in range(0, len(items), batch_size):
                batch = self.tokenizer(
                    items[start : start + batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self.max_seq_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state  # (B, T, dim)
                if self.pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    weights = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
                if self.normalize:
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out.append(pooled.float().cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)

    @torch.inference_mode()
    def encode_tokens(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token states for text-conditioned decoders: ``hidden`` (N, T, dim) float32 last hidden states (zero
        past each text's end), ``mask`` (N, T) bool (True = a real token, [CLS] and [SEP] included) and
        ``pooled`` (N, dim), the sentence embedding :meth:`embed` returns. On the CPU."""
        items = list(texts)
        with self._lock:
            batch = self.tokenizer(
                items, padding=True, truncation=True, max_length=self.max_seq_length, return_tensors="pt"
            ).to(self.device)
            hidden = self.model(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].bool()
        hidden = hidden * mask.unsqueeze(-1)
        mean = hidden.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        pooled = hidden[:, 0] if self.pooling == "cls" else mean
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return hidden.cpu(), mask.cpu(), pooled.cpu()

    def too_long(self, texts: Sequence[str]) -> list[str]:
        """The texts longer than ``max_seq_length`` tokens ([CLS] and [SEP] counted): :meth:`embed` and
        :meth:`encode_tokens` read only their first ``max_seq_length`` tokens, the rest is cut."""
        items = list(dict.fromkeys(texts))
        if not items:
            return []
        with self._lock:  # verbose=False: no transformers warning about the model's own maximum for a long text
            ids = self.tokenizer(items, truncation=False, verbose=False)["input_ids"]
        return [text for text, tokens in zip(items, ids, strict=True) if len(tokens) > self.max_seq_length]

    def cut_prompt(self, text: str) -> CutText | None:
        """What of ``text`` the model reads when it is longer than ``max_seq_length`` tokens, else None."""
        with self._lock:
            return cut_text(self.tokenizer, text, self.max_seq_length)

    def similarity(self, a: str | Sequence[str], b: str | Sequence[str]) -> np.ndarray:
        """(len(a), len(b)) cosine similarities."""
        return self.embed(a) @ self.embed(b).T


def load_sentence_embedder(
    path: str | os.PathLike, *, device: str | torch.device = "cpu", name: str = ""
) -> SentenceEmbedder:
    """Registry adapter (backend ``sentence_minilm``): a sentence-transformers export directory -> embedder."""
    return SentenceEmbedder(path, device=device, name=name)
