"""Patch feature extractors: an image -> an L2-normalised (h, w, c) grid of patch features at a known stride.

Two backends implement :class:`PatchFeatureExtractor`:

- :class:`SegmenterFeatures` reuses the promptable segmenter's own image encoder (offline default; PerSAM's choice).
  The encoding is the segmenter's cached :class:`~.protocols.Embedding`, so SAT's matching and the final decoding
  share one encoder pass. LiteMedSAM gives a 64x64x256 grid of its 256 px padded input, i.e. one cell per 4 input
  pixels = ``max(H, W) / 64`` image pixels; cells that fall entirely in the zero padding are cropped off.
- :class:`Dinov2Features` runs a DINOv2 ViT through ``transformers`` (SAT/GBMSeg's choice; any local directory or
  hub id, or a ready ``Dinov2Model``). The image is resized so its longer side is ``image_size`` and each side a
  multiple of the 14 px patch, keeping the aspect ratio; stride = image pixels per patch along each axis.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import PromptsegError, WeightsError
from .device import resolve_device
from .hub import Progress
from .preprocessing import (
    Normalization,
    as_channels_last,
    as_tensor,
    check_unit_range,
    in_memory,
    normalize_intensity,
)
from .protocols import Embedding, PromptableSegmenter

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PatchFeatures:
    """L2-normalised patch features of one 2D image.

    ``grid[i, j]`` describes image pixels rows ``[i*sy, (i+1)*sy)`` x columns ``[j*sx, (j+1)*sx)`` with
    ``(sy, sx) = stride``; the grid covers the whole image (the last row/column may extend past its border).
    """

    grid: torch.Tensor  # (h, w, c) float32, unit norm along c
    stride: tuple[float, float]  # (rows, columns) image pixels per cell
    image_shape: tuple[int, int]
    extractor: str

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.grid.shape[0]), int(self.grid.shape[1])

    def flat(self) -> torch.Tensor:
        """(h*w, c) in row-major cell order."""
        return self.grid.reshape(-1, self.grid.shape[-1])

    def centres_xy(self) -> np.ndarray:
        """(h*w, 2) pixel coordinates (x = column, y = row) of the cell centres, clipped into the image."""
        (gh, gw), (sy, sx), (h, w) = self.shape, self.stride, self.image_shape
        ys = np.minimum((np.arange(gh) + 0.5) * sy, h - 1)
        xs = np.minimum((np.arange(gw) + 0.5) * sx, w - 1)
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        return np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float32)

    def cell_fraction(self, mask: np.ndarray) -> np.ndarray:
        """(h, w) fraction of each cell's image pixels inside a binary mask of the image's shape."""
        mask = np.asarray(mask, bool)
        if mask.shape != self.image_shape:
            raise PromptsegError(f"mask of shape {mask.shape} does not match the image shape {self.image_shape}")
        (gh, gw), (sy, sx) = self.shape, self.stride
        rows = np.minimum((np.arange(mask.shape[0]) / sy).astype(np.int64), gh - 1)
        cols = np.minimum((np.arange(mask.shape[1]) / sx).astype(np.int64), gw - 1)
        cell = (rows[:, None] * gw + cols[None, :]).ravel()
        inside = np.bincount(cell, weights=mask.ravel().astype(np.float64), minlength=gh * gw)
        total = np.bincount(cell, minlength=gh * gw).astype(np.float64)
        return (inside / np.maximum(total, 1)).reshape(gh, gw)


@runtime_checkable
class PatchFeatureExtractor(Protocol):
    """Image -> :class:`PatchFeatures` at a known stride, for any 2D image size."""

    name: str

    def features(
        self,
        image: np.ndarray,
        *,
        channel_axis: int | None = None,
        channels: list[int] | None = None,
        normalize: Normalization = "auto",
        name: str = "image",
    ) -> PatchFeatures: ...


def _check_grid(
    gh: int, gw: int, stride: tuple[float, float], shape: tuple[int, int], name: str, min_cells: int, min_side: float
) -> None:
    # a target smaller than one native patch (or than one grid cell) carries no patch feature of its own
    patch = max(max(stride), min_side)
    if min(shape) < patch:  # its stride is then below a pixel: "0.0x0.0 px per patch" was said
        raise PromptsegError(
            f"{name}: {shape[1]}x{shape[0]} pixels (width x height) is smaller than a patch along one side (a patch "
            f"of its features spans {patch:.0f} px). Use a larger image."
        )
    if min(gh, gw) < min_cells:
        raise PromptsegError(
            f"{name}: {shape[1]}x{shape[0]} pixels (width x height) gives a {gw}x{gh} feature grid at "
            f"{stride[1]:.1f}x{stride[0]:.1f} px per patch; the image is smaller than a patch along one side "
            f"(need at least {min_cells} patches per side). Use a larger or less elongated image."
        )


#: mirror views for test-time augmentation: name -> the image axes each extra view flips (0 = rows, 1 = columns)
FLIP_VIEWS: dict[str, tuple[tuple[int, ...], ...]] = {
    "": (),
    "flip": ((1,),),  # the left-right mirror image
    "flip4": ((1,), (0,), (0, 1)),  # left-right, up-down and both (a half turn)
}


class SegmenterFeatures:
    """Patch features from a SAM-family segmenter's image encoder (shares the segmenter's embedding cache).

    ``flip``: test-time augmentation — the features of the image and of its mirror image(s) (mirrored back) are
    averaged, so a patch is described by what every view of it looks like; ``True`` or ``"flip"``: the left-right
    mirror (one more encoder pass per image), ``"flip4"``: also up-down and both (three more). The mirrored views are
    ordinary images to the embedding cache (keyed by content). Where the encoder's padded input leaves a partial
    last cell, a mirrored view's cells sit up to 3/4 of a cell off the original's: a slight blur, not a shift.
    """

    def __init__(self, segmenter: PromptableSegmenter, *, min_cells: int = 2, flip: bool | str = False) -> None:
        mode = "flip" if flip is True else (flip or "")
        if mode not in FLIP_VIEWS:
            raise PromptsegError(f"flip must be one of {sorted(k for k in FLIP_VIEWS if k)} or a bool, got {flip!r}")
        self.segmenter = segmenter
        self.flip = mode
        self.name = f"{segmenter.name}-encoder" + (f"+{mode}" if mode else "")
        self.min_cells = min_cells

    def features(
        self,
        image: np.ndarray,
        *,
        channel_axis: int | None = None,
        channels: list[int] | None = None,
        normalize: Normalization = "auto",
        name: str = "image",
    ) -> PatchFeatures:
        hwc = in_memory(as_channels_last(image, channel_axis=channel_axis, channels=channels, name=name), name)
        embedding = self.segmenter.embed(hwc, normalize=normalize, name=name)
        feats = embedding_patch_features(embedding, name=name, min_cells=self.min_cells, extractor=self.name)
        if not self.flip:
            return feats
        grid = feats.grid
        for axes in FLIP_VIEWS[self.flip]:
            mirrored = self.segmenter.embed(np.ascontiguousarray(np.flip(hwc, axes)), normalize=normalize, name=name)
            grid = grid + embedding_patch_features(mirrored, name=name, min_cells=self.min_cells).grid.flip(axes)
        grid = F.normalize(grid, dim=-1).contiguous()
        return PatchFeatures(grid=grid, stride=feats.stride, image_shape=feats.image_shape, extractor=self.name)


def embedding_patch_features(
    embedding: Embedding, *, name: str = "image", min_cells: int = 1, extractor: str | None = None
) -> PatchFeatures:
    """The unit-norm patch features of a SAM-family embedding, without the cells that are all padding."""
    feats = embedding.features[0].float()  # (C, g, g) over the padded square input
    grid_size = feats.shape[-1]
    transform = embedding.transform
    h, w = transform.original_shape
    nh, nw = transform.resized_shape
    per_cell = transform.input_size / grid_size  # input pixels per cell
    gh, gw = math.ceil(nh / per_cell), math.ceil(nw / per_cell)  # drop cells that are all padding
    stride = max(h, w) / grid_size
    _check_grid(gh, gw, (stride, stride), (h, w), name, min_cells, per_cell)
    grid = F.normalize(feats[:, :gh, :gw].permute(1, 2, 0), dim=-1).contiguous().cpu()
    return PatchFeatures(
        grid=grid, stride=(stride, stride), image_shape=(h, w), extractor=extractor or f"{embedding.model_name}-encoder"
    )


class Dinov2Features:
    """DINOv2 patch tokens through ``transformers.Dinov2Model`` (ViT-S/B/L/G, any local dir or hub id).

    ``image_size``: target length of the longer side before rounding each side to a multiple of the patch size
    (GBMSeg resizes to a 560x560 square, Matcher to 518; we keep the aspect ratio so non-square images are not
    distorted — ``keep_aspect=False`` reproduces GBMSeg's square resize). ``progress(done_bytes, total_bytes)``
    hears about a download of the weights, as the other models' loaders (:func:`~.download_progress` makes one
    that reports to a task and raises :class:`~..errors.CancelledError` on cancel).
    """

    def __init__(
        self,
        model: str | os.PathLike | torch.nn.Module = "facebook/dinov2-small",
        *,
        image_size: int = 518,
        keep_aspect: bool = True,
        device: str | torch.device = "cpu",
        min_cells: int = 2,
        progress: Progress | None = None,
    ) -> None:
        if isinstance(model, torch.nn.Module):
            self.model = model
            self.name = f"dinov2:{type(model).__name__}"
        else:
            try:
                from transformers import Dinov2Model
            except ImportError as exc:  # pragma: no cover - depends on the environment
                raise PromptsegError(
                    "DINOv2 features need `transformers`: pip install 'napari-promptseg[dino]'"
                ) from exc
            from ._native import load_triton_safely
            from .checkpoint import WEIGHT_FILES, check_model_directory, hub_load_errors
            from .registry import resolve_weights

            load_triton_safely()
            # a local directory, or a hub id through the Hugging Face cache (facebook/dinov2-small: pinned revision)
            path = resolve_weights("dinov2_small", model, progress=progress)
            # another model's folder loaded as a DINOv2 of default size with random weights, without a word
            weights = ("the weights (model.safetensors or pytorch_model.bin)", [[f] for f in WEIGHT_FILES])
            check_model_directory(path, (weights,), model_type="dinov2", what="DINOv2", name="dinov2_small")
            try:
                self.model = Dinov2Model.from_pretrained(path, local_files_only=True)
            except hub_load_errors() as exc:
                reason = " ".join(str(exc).split())[:200]
                raise WeightsError(f"dinov2_small: cannot load DINOv2 from {path} ({reason})") from exc
            self.name = f"dinov2:{os.fspath(model)}"
        self.device = resolve_device(device)
        self.model = self.model.eval().to(self.device)
        self.patch_size = int(self.model.config.patch_size)
        self.num_register_tokens = int(getattr(self.model.config, "num_register_tokens", 0) or 0)
        self.image_size = image_size
        self.keep_aspect = keep_aspect
        self.min_cells = min_cells

    def _input_shape(self, h: int, w: int) -> tuple[int, int]:
        p = self.patch_size
        if not self.keep_aspect:
            side = max(p, round(self.image_size / p) * p)
            return side, side
        scale = self.image_size / max(h, w)
        return max(p, round(h * scale / p) * p), max(p, round(w * scale / p) * p)

    @torch.inference_mode()
    def features(
        self,
        image: np.ndarray,
        *,
        channel_axis: int | None = None,
        channels: list[int] | None = None,
        normalize: Normalization = "auto",
        name: str = "image",
    ) -> PatchFeatures:
        hwc = in_memory(as_channels_last(image, channel_axis=channel_axis, channels=channels, name=name), name)
        check_unit_range(hwc, normalize, name)
        h, w = hwc.shape[:2]
        ih, iw = self._input_shape(h, w)
        gh, gw = ih // self.patch_size, iw // self.patch_size
        stride = (h / gh, w / gw)
        _check_grid(gh, gw, stride, (h, w), name, self.min_cells, self.patch_size)
        x = as_tensor(hwc).permute(2, 0, 1).float()
        x = normalize_intensity(x, source_dtype=hwc.dtype, mode=normalize)
        if x.shape[0] == 1:
            x = x.expand(3, -1, -1)
        elif x.shape[0] == 2:
            x = torch.cat([x, torch.zeros_like(x[:1])], 0)
        x = F.interpolate(x[None], size=(ih, iw), mode="bilinear", align_corners=False, antialias=True)
        x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        out = self.model(pixel_values=x.to(self.device)).last_hidden_state[0]
        tokens = out[1 + self.num_register_tokens :].float().cpu()  # drop CLS and register tokens
        grid = F.normalize(tokens.reshape(gh, gw, -1), dim=-1).contiguous()
        return PatchFeatures(grid=grid, stride=stride, image_shape=(h, w), extractor=self.name)


def load_feature_extractor(
    name: str,
    *,
    segmenter: PromptableSegmenter | None = None,
    device: str = "cpu",
    image_size: int = 518,
    progress: Progress | None = None,
) -> PatchFeatureExtractor:
    """``"segmenter"`` (the segmenter's encoder; ``"segmenter+flip"``/``"+flip4"``: with mirror views averaged, see
    :class:`SegmenterFeatures`) or ``"dinov2:<local dir or hub id>"`` (``progress``: of its weights' download)."""
    base, _, flip = name.partition("+")
    if base in ("segmenter", "encoder", "") and flip in FLIP_VIEWS:
        if segmenter is None:
            raise PromptsegError("feature extractor 'segmenter' needs a segmenter")
        return SegmenterFeatures(segmenter, flip=flip)
    if name.startswith("dinov2:"):
        return Dinov2Features(name.split(":", 1)[1], device=device, image_size=image_size, progress=progress)
    raise PromptsegError(
        f"unknown feature extractor {name!r}; use 'segmenter' (optionally '+flip' or '+flip4') or "
        "'dinov2:<directory or hub id>'"
    )
