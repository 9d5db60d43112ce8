"""Embeddings computed ahead of prompting, so the disk cache answers the first click or batch at once."""

from __future__ import annotations

import numpy as np

from ..models.preprocessing import Normalization, as_channels_last
from ..models.protocols import Embedding, PromptableSegmenter
from ..tiling import IntensityWindow, TileGrid, choose_scale, read_tile


def precompute_embeddings(
    image: np.ndarray,
    segmenter: PromptableSegmenter,
    *,
    object_size: float | None = None,
    channel_axis: int | None = None,
    channels: list[int] | None = None,
    normalize: Normalization = "auto",
    name: str = "image",
) -> list[Embedding]:
    """The embeddings the methods ask for on this image, computed once (or found in the caches): the whole image,
    and with ``object_size`` (pixels) every tile at that working scale, as box prompts, find-all and one-shot
    instances embed them when given the same ``object_size`` (:mod:`..tiling`; without it they work at the boxes'
    or the target's measured size, other tiles). With a disk cache configured (:mod:`..models.embedding_cache`) they are
    written there for any later process."""
    hwc = as_channels_last(image, channel_axis=channel_axis, channels=channels, name=name)
    out = [segmenter.embed(hwc, normalize=normalize, name=name)]
    if object_size is not None:
        scale = choose_scale(hwc.shape, segmenter.input_size, object_size)
        window = IntensityWindow.measure(hwc, normalize, name=name)
        for tile in TileGrid(hwc.shape[:2], scale.tile, scale.overlap):
            pixels = read_tile(hwc, tile, window)
            out.append(segmenter.embed(pixels, normalize="none", name=f"{name} tile {tile.index}"))
    return out
