"""Embeddings computed ahead of prompting, so the disk cache answers the first click or batch at once."""

from __future__ import annotations

import numpy as np

from ..callbacks import ProgressCallback
from ..models.preprocessing import (
    Normalization,
    PyramidRead,
    as_channels_last,
    full_resolution,
    read_pyramid_level,
)
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
    progress: ProgressCallback | None = None,
) -> list[Embedding]:
    """The embeddings the methods ask for on this image, computed once (or found in the caches): the whole image,
    and with ``object_size`` (pixels) every tile at that working scale, as box prompts, find-all and one-shot
    instances embed them when given the same ``object_size`` (:mod:`..tiling`; without it they work at the boxes'
    or the target's measured size, other tiles). With a disk cache configured (:mod:`..models.embedding_cache`) they are
    written there for any later process.

    A pyramid (a multiscale layer's data, levels largest first; ``object_size`` in full-resolution pixels) is embedded
    at the levels the console functions read it (`promptseg embed` gives it a pyramid file's levels): the whole image
    at the level of ``segment_text`` and SAT one-shot (>= 1024 px), the tiles at the level of their working scale
    (:func:`precompute_levels` says which). Its full resolution was embedded whole: entries no prompt asked for, and
    all of a slide read into memory. ``progress`` is told before each embedding (a caller's cancel stops there)."""
    options = {"channel_axis": channel_axis, "channels": channels, "normalize": normalize, "name": name}
    options["progress"] = progress or (lambda fraction, message: None)
    whole, tiles = _pyramid_reads(image, segmenter.input_size, object_size, channel_axis)
    out = []
    whole_factor = 1.0 if whole is None else whole.factor
    if object_size is not None:
        level, factor = (full_resolution(image), 1.0) if tiles is None else (tiles.array, tiles.factor)
        out += _embed_level(level, segmenter, object_size=object_size / factor, **options)
        if factor == whole_factor:  # that level's whole embedding is the one whole-image methods read
            return out
    level = full_resolution(image) if whole is None else whole.array
    return [_embed_level(level, segmenter, **options)[0], *out]


def precompute_levels(
    image: object, input_size: int, *, object_size: float | None = None, channel_axis: int | None = None
) -> dict[str, int]:
    """The pyramid levels :func:`precompute_embeddings` embeds ``image`` at, given the same arguments (the model's
    ``input_size``): ``"whole_image"``, and with ``object_size`` ``"tiles"``, each a level index (0 = full resolution,
    as for any image that is no pyramid). Only shapes are looked at: no pixel is read."""
    whole, tiles = _pyramid_reads(image, input_size, object_size, channel_axis)
    levels = {"whole_image": 0 if whole is None else whole.index}
    if object_size is not None:
        levels["tiles"] = 0 if tiles is None else tiles.index
    return levels


def _pyramid_reads(
    image: object, input_size: int, object_size: float | None, channel_axis: int | None
) -> tuple[PyramidRead | None, PyramidRead | None]:
    """Where a pyramid is read for its whole-image embedding and, with ``object_size``, for its tiles (None: full
    resolution, and for any image that is no pyramid)."""
    from ..io.multiscale import whole_image_scale

    whole = read_pyramid_level(image, whole_image_scale, channel_axis)
    if object_size is None:
        return whole, None
    tiles = read_pyramid_level(image, lambda shape: choose_scale(shape, input_size, object_size).scale, channel_axis)
    return whole, tiles


def _embed_level(
    image: np.ndarray,
    segmenter: PromptableSegmenter,
    *,
    object_size: float | None = None,
    channel_axis: int | None,
    channels: list[int] | None,
    normalize: Normalization,
    name: str,
    progress: ProgressCallback,
) -> list[Embedding]:
    """One array's embeddings: the whole of it, and with ``object_size`` (its pixels) its tiles at that scale."""
    hwc = as_channels_last(image, channel_axis=channel_axis, channels=channels, name=name)
    progress(0.0, f"{name}: whole image")
    out = [segmenter.embed(hwc, normalize=normalize, name=name)]
    if object_size is None:
        return out
    scale = choose_scale(hwc.shape, segmenter.input_size, object_size)
    grid = TileGrid(hwc.shape[:2], scale.tile, scale.overlap)
    window = IntensityWindow.measure(hwc, normalize, name=name)
    for k, tile in enumerate(grid, start=1):
        progress(k / (len(grid) + 1), f"{name}: tile {k}/{len(grid)}")
        pixels = read_tile(hwc, tile, window)
        out.append(segmenter.embed(pixels, normalize="none", name=f"{name} tile {tile.index}"))
    return out
