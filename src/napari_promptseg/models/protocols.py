"""Model roles. Methods depend on these protocols, never on a concrete backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from .preprocessing import Normalization, ResizeTransform

if TYPE_CHECKING:  # torch is imported where models run, not where a batch is only driven (Dask's client)
    import torch


@dataclass(frozen=True)
class Embedding:
    """Image features of one 2D image plus the transform that maps prompts in and masks out."""

    features: torch.Tensor  # (1, C, h, w)
    transform: ResizeTransform
    model_name: str
    key: str  # content + model + preprocessing hash; equal keys mean equal features


@dataclass(frozen=True)
class Prediction:
    """Decoder output for N prompts with K masks each."""

    low_res_logits: torch.Tensor  # (N, K, s, s) in the padded model-input frame
    scores: np.ndarray  # (N, K) predicted IoU
    transform: ResizeTransform

    def __len__(self) -> int:
        return int(self.low_res_logits.shape[0])

    def logits(self, index: slice | list[int] | None = None) -> torch.Tensor:
        """(n, K, H, W) logits on the original image grid; select prompts to bound memory on big images."""
        x = self.low_res_logits if index is None else self.low_res_logits[index]
        return self.transform.logits_to_original(x)

    def masks(self, index: slice | list[int] | None = None) -> np.ndarray:
        return (self.logits(index) > 0).numpy()


@runtime_checkable
class PromptableSegmenter(Protocol):
    """Points/boxes/mask prompts -> masks (SAM and its variants)."""

    name: str
    input_size: int
    #: True when the model was trained with point prompts (LiteMedSAM was trained on boxes only)
    points_reliable: bool

    def embed(
        self,
        image: np.ndarray,
        *,
        channel_axis: int | None = None,
        channels: list[int] | None = None,
        normalize: Normalization = "auto",
    ) -> Embedding: ...

    def predict(
        self,
        embedding: Embedding,
        *,
        boxes: np.ndarray | None = None,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        mask_input: torch.Tensor | None = None,
        multimask: bool = False,
        local: bool = False,
    ) -> Prediction:
        """``local``: the adapter may decode each box from the image near it only (faster for small boxes)."""
        ...


@dataclass(frozen=True)
class Detections:
    """Boxes a text grounder found for one prompt, in the original image's pixel frame."""

    boxes: np.ndarray  # (N, 4) float x0, y0, x1, y1 (x = column, y = row), clipped to the image
    scores: np.ndarray  # (N,) box confidence in [0, 1]
    phrases: list[str]  # (N,) the part of the prompt each box answers
    prompt: str  # the caption the model saw (after normalisation, e.g. "gland . nuclei .")

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


@runtime_checkable
class TextGrounder(Protocol):
    """Text -> boxes (GroundingDINO and its ports)."""

    name: str

    def boxes(
        self,
        image: np.ndarray,
        prompt: str,
        *,
        box_threshold: float = 0.35,
        text_threshold: float = 0.25,
        normalize: Normalization = "auto",
    ) -> Detections: ...


@runtime_checkable
class TextHeatmapper(Protocol):
    """Text -> per-pixel probability (CLIPSeg and medvlsm-style fine-tuned vision-language segmenters)."""

    name: str

    def heatmap(self, image: np.ndarray, prompt: str, *, normalize: Normalization = "auto") -> np.ndarray:
        """(H, W) float32 probabilities in [0, 1] on the original image grid."""
        ...


@runtime_checkable
class TextSegmenter(Protocol):
    """Image + text -> mask logits (a trained fusion decoder over frozen encoders, or a fine-tuned CLIPSeg)."""

    name: str

    def mask_logits(
        self, image: np.ndarray, prompts: Sequence[str], *, normalize: Normalization = "auto"
    ) -> np.ndarray:
        """(P, H, W) float32 logits on the original image grid, one map per prompt; logit > 0 is the mask."""
        ...

    def heatmaps(self, image: np.ndarray, prompts: Sequence[str], *, normalize: Normalization = "auto") -> np.ndarray:
        """(P, H, W) float32 probabilities (the sigmoid of :meth:`mask_logits`)."""
        ...
