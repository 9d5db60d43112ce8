"""Scale-aware tiling: one layer under every method, so any 2D size reaches the model at a scale it segments well.

SAM-family models see a fixed square input (LiteMedSAM 256 px, SAM 1024 px). Squeezing a whole 2000 px image into
it shrinks nuclei to a pixel or two. Instead:

1. the **working scale** (model-input pixels per image pixel) is chosen from the prompt so that a typical object
   spans :data:`OBJECT_FRACTION` of the model input: the reference objects' size (one-shot, library entries), the
   boxes the user drew (interactive) or an explicit object size. The whole image is never shown smaller than it
   would be resized to fit the input (``fit scale``), and never enlarged more than :data:`MAX_UPSCALE` times;
2. the image is cut into square **tiles** of ``input_size / scale`` image pixels with an overlap of a few object
   sizes; every tile is embedded by the segmenter at exactly the working scale (its own resize transform maps
   prompts in and masks out), and the segmenter's embedding cache keeps the embeddings;
3. **stitching**: each tile owns the objects whose centre lies in its *core* (the tile less half the overlap on
   every side it shares with a neighbour); since the overlap exceeds an object, an owned object lies whole inside its
   tile, so nothing is lost or doubled at a seam (a duplicate check by overlap catches the rest). Semantic maps are
   blended with weights that fall linearly across the overlap.

Tiles are read one at a time from the caller's array (which may be a memory-mapped or dask-backed array), normalised
with one intensity window measured on the whole image (so tiles agree on what "bright" is), and dropped after use.
No module here imports Qt or napari.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import numpy.ma  # noqa: F401 - np.median imports it on its first call: ~15 ms added to the first prompt's mask
import torch

from .errors import PromptsegError
from .io.images import label_objects  # the one rule for masks and label images (torch-free, the library uses it)
from .models.preprocessing import PERCENTILES, Normalization, as_tensor, check_unit_range, to_numpy

#: a typical object should span this fraction of the model input (LiteMedSAM: 20 of 256 px, 5 feature cells).
#: 0.1 gave the same or lower instance F1 on every nuclei set with 1.5-4x the tiles (benchmarks/README.md)
OBJECT_FRACTION = 0.08
#: never enlarge the image more than this (tiny objects in a small image are not made up by interpolation)
MAX_UPSCALE = 4.0
#: the overlap between tiles in typical-object sizes (an owned object must lie whole inside its tile)
OVERLAP_OBJECTS = 2.5
#: tiles may be up to this much larger than ideal (objects this much smaller) when that saves tiles
SCALE_SLACK = 1.35
SLACK_STEPS = tuple(1 + (SCALE_SLACK - 1) * k / 8 for k in range(9))
#: more pixels than this at exactly the minimum value are padding, left out of the intensity window
PADDING_FRACTION = 0.05
#: pixels sampled to measure the global intensity window of a large image
WINDOW_SAMPLE = 2_000_000


@dataclass(frozen=True)
class WorkingScale:
    """Where the working scale came from and what it is; goes into results and report.json."""

    scale: float  # model-input pixels per image pixel
    object_size: float | None  # typical object diameter in image pixels (None: whole image)
    source: str  # "reference objects", "boxes", "object size", "whole image"
    tile: int  # tile side in image pixels
    overlap: int  # overlap between neighbouring tiles in image pixels
    tiles: int = 1  # number of tiles over the image
    requested_scale: float | None = None  # what the object size asked for, before the MAX_UPSCALE cap
    #: whether MAX_UPSCALE kept the scale below what the object size asked for, decided where the scale was chosen
    #: (:func:`choose_scale`): recomputed from a pyramid level's scale in full-resolution pixels
    #: (:meth:`at_full_resolution`), 6.8x asked for on a 1/2 level read as 3.4x, under the cap
    capped: bool = False

    @property
    def object_size_used(self) -> float | None:
        """The object size (image pixels) the working scale suits: the requested one, up to the tiles' slack, unless
        the scale was capped."""
        if self.object_size is None or self.requested_scale is None:
            return self.object_size
        return self.object_size * self.requested_scale / self.scale

    def cap_warning(self, name: str) -> str | None:
        """What the cap changed, for the result's warnings (None when it changed nothing)."""
        if not self.capped:
            return None
        return (
            f"{name}: objects of {self.object_size:g} px ({self.source}) ask for {self.requested_scale:.1f}x "
            f"enlargement, above the cap of {MAX_UPSCALE:g}x (interpolation adds no detail); worked at "
            f"{self.scale:.2f}x, as for objects of about {self.object_size_used:.1f} px: objects much smaller than "
            "that may be missed or merged"
        )

    def at_full_resolution(self, factor: float) -> WorkingScale:
        """This scale, chosen on a pyramid level ``factor`` times smaller than the image, in the full-resolution
        image's pixels: what a report beside the full-resolution labels and shape says (a slide's objects of 40 px
        read as '10 px' at scale 0.64 on its 1/4 level, which the user's image does not show)."""
        if factor == 1.0:
            return self
        return replace(
            self,
            scale=self.scale / factor,
            object_size=None if self.object_size is None else self.object_size * factor,
            tile=round(self.tile * factor),
            overlap=round(self.overlap * factor),
            requested_scale=None if self.requested_scale is None else self.requested_scale / factor,
        )

    def summary(self) -> dict:
        out = asdict(self)
        del out["capped"]  # reported as scale_capped, with an object size
        out["scale"] = round(self.scale, 4)
        if self.object_size is not None:
            out["object_size"] = round(self.object_size, 1)
            out["object_size_used"] = round(self.object_size_used, 1)
            out["scale_capped"] = self.capped
        if self.requested_scale is not None:
            out["requested_scale"] = round(self.requested_scale, 4)
        return out


def typical_object_size(labels: np.ndarray) -> float:
    """Median equivalent diameter (pixels) of the labelled objects (ids, or connected components of a mask)."""
    labels = label_objects(labels)
    _, areas = np.unique(labels[labels > 0], return_counts=True)
    if len(areas) == 0:
        raise PromptsegError("no labelled object to measure the object size from")
    return float(np.sqrt(4 * np.median(areas) / np.pi))


def box_object_size(boxes: np.ndarray) -> float:
    """Typical object diameter from user boxes (x0, y0, x1, y1): the median of the boxes' geometric mean side."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        raise PromptsegError("no box to measure the object size from")
    sides = np.sqrt(np.maximum(boxes[:, 2] - boxes[:, 0], 1) * np.maximum(boxes[:, 3] - boxes[:, 1], 1))
    return float(np.median(sides))


def choose_scale(
    image_shape: Sequence[int],
    input_size: int,
    object_size: float | None,
    *,
    source: str = "object size",
    object_fraction: float | None = None,
) -> WorkingScale:
    """The working scale for an image of ``image_shape`` (H, W, ...) and objects of ``object_size`` pixels."""
    h, w = int(image_shape[0]), int(image_shape[1])
    fit = input_size / max(h, w)
    if object_size is None:
        return WorkingScale(fit, None, "whole image", max(h, w), 0, 1)
    if not isinstance(object_size, numbers.Real) or not np.isfinite(object_size) or object_size <= 0:
        shown = object_size if isinstance(object_size, numbers.Real) else repr(object_size)  # '20': text, not 20
        raise PromptsegError(f"object size must be a positive number of pixels, got {shown}")
    fraction = OBJECT_FRACTION if object_fraction is None else object_fraction
    requested = max(fit, fraction * input_size / float(object_size))
    ideal = min(MAX_UPSCALE, requested)
    overlap_px = math.ceil(OVERLAP_OBJECTS * object_size)
    best = None
    # tiles up to SCALE_SLACK x larger than ideal (objects that much smaller) when that saves tiles: a 300 px
    # working image is one tile, not four
    for tile in sorted({max(2, min(int(math.floor(input_size * f / ideal)), max(h, w))) for f in SLACK_STEPS}):
        overlap = 0 if tile >= max(h, w) else int(min(tile // 2, max(tile // 8, overlap_px)))
        n = len(TileGrid((h, w), tile, overlap))
        if best is None or n < best[0]:
            best = (n, tile, overlap)
    n, tile, overlap = best
    scale = input_size / tile  # what the model really sees: a tile of `tile` pixels resized to the input
    # an image smaller than the model's input is enlarged to fill it whatever the cap (a 32 px patch: 8x): it asked
    # for that much and got it, and was warned 'above the cap of 4x ... worked at 8.00x', a contradiction
    capped = requested > MAX_UPSCALE and scale < requested * (1 - 1e-9)
    return WorkingScale(scale, float(object_size), source, tile, overlap, n, requested, capped)


@dataclass(frozen=True)
class Tile:
    """One tile: image rows ``y0:y1`` and columns ``x0:x1``, and the core it owns objects in."""

    index: int
    y0: int
    y1: int
    x0: int
    x1: int
    core: tuple[float, float, float, float]  # cy0, cy1, cx0, cx1 (half-open, image pixels)

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0

    def owns(self, x: np.ndarray, y: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """Which image points (x = column, y = row) lie in this tile's core, grown by ``margin`` pixels."""
        cy0, cy1, cx0, cx1 = self.core
        return (y >= cy0 - margin) & (y < cy1 + margin) & (x >= cx0 - margin) & (x < cx1 + margin)


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if tile >= length:
        return [0]
    n = math.ceil((length - overlap) / (tile - overlap))
    # spread evenly: the overlap is at least the requested one, the last tile ends at the border
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def _cores(starts: list[int], tile: int, length: int) -> list[tuple[float, float]]:
    bounds = [0.0] + [(starts[i] + tile + starts[i + 1]) / 2 for i in range(len(starts) - 1)] + [float(length)]
    return [(bounds[i], bounds[i + 1]) for i in range(len(starts))]


class TileGrid:
    """Square tiles of ``tile`` pixels over an (H, W) image, neighbours overlapping by at least ``overlap``."""

    def __init__(self, image_shape: Sequence[int], tile: int, overlap: int = 0) -> None:
        h, w = int(image_shape[0]), int(image_shape[1])
        if tile < 2 or overlap < 0 or overlap >= tile:
            raise PromptsegError(f"invalid tiling: tile {tile} px with overlap {overlap} px")
        self.shape = (h, w)
        self.tile, self.overlap = tile, overlap
        ys, xs = _starts(h, tile, overlap), _starts(w, tile, overlap)
        cys, cxs = _cores(ys, tile, h), _cores(xs, tile, w)
        self.tiles = [
            Tile(i * len(xs) + j, y, min(y + tile, h), x, min(x + tile, w), (*cys[i], *cxs[j]))
            for i, y in enumerate(ys)
            for j, x in enumerate(xs)
        ]

    def __len__(self) -> int:
        return len(self.tiles)

    def __iter__(self) -> Iterator[Tile]:
        return iter(self.tiles)

    def blend_weights(self, tile: Tile) -> np.ndarray:
        """(h, w) weights rising linearly across the overlap on the sides shared with a neighbour (sum > 0)."""
        h, w = tile.shape

        def ramp(n: int, start: int, stop: int, length: int) -> np.ndarray:
            r = np.ones(n, np.float32)
            if self.overlap > 0:
                k = np.arange(n, dtype=np.float32) + 0.5
                if start > 0:
                    r = np.minimum(r, k / self.overlap)
                if stop < length:
                    r = np.minimum(r, (n - k) / self.overlap)
            return np.clip(r, 1e-3, 1.0)

        return np.outer(ramp(h, tile.y0, tile.y1, self.shape[0]), ramp(w, tile.x0, tile.x1, self.shape[1]))


@dataclass(frozen=True)
class IntensityWindow:
    """One intensity window for a whole image, so every tile is normalised alike (see ``normalize_intensity``)."""

    lo: np.ndarray  # (C,) or (1,)
    hi: np.ndarray
    dtype: str
    mean: np.ndarray | None = None  # (C,) mean and spread of the normalised image, per channel
    std: np.ndarray | None = None
    median: np.ndarray | None = None  # (C,) median of the raw image, per channel

    @classmethod
    def measure(
        cls, image_hwc: np.ndarray, mode: Normalization = "auto", background: bool = False, name: str = "image"
    ) -> IntensityWindow:
        """The window ``normalize_intensity`` would use on the whole image, measured on at most a few million
        pixels (a regular subsample of a large image). ``background``: also measure the median for
        :meth:`background_level` (it doubles the cost on a large image, so only the callers that use it ask).
        ``none`` refuses float pixels outside [0, 1] (:func:`check_unit_range`, on the subsample), naming ``name``."""
        arr = image_hwc
        step = max(1, int(math.sqrt(arr.shape[0] * arr.shape[1] / WINDOW_SAMPLE)))
        sample = to_numpy(arr[::step, ::step]).astype(np.float32)
        c = sample.shape[-1]
        if mode == "none":
            if np.dtype(arr.dtype).kind == "f":
                check_unit_range(sample, mode, name)
                lo, hi = np.zeros(c, np.float32), np.ones(c, np.float32)
            else:
                lo, hi = np.zeros(c, np.float32), np.full(c, float(np.iinfo(arr.dtype).max), np.float32)
        elif mode == "minmax" or (mode == "auto" and np.dtype(arr.dtype) == np.uint8):
            lo, hi = np.full(c, sample.min(), np.float32), np.full(c, sample.max(), np.float32)
        elif mode in ("auto", "percentile"):
            flat = sample.reshape(-1, 1) if c == 3 else sample.reshape(-1, c)
            lo, hi = np.empty(flat.shape[1], np.float32), np.empty(flat.shape[1], np.float32)
            for k in range(flat.shape[1]):
                values = flat[:, k]
                # a mosaic's or a slide's empty fill (many pixels at exactly the minimum) is not signal: the window
                # of a 16-bit image with a zero border must not stretch down to zero
                floor = values.min()
                if (values == floor).mean() > PADDING_FRACTION and (values > floor).any():
                    values = values[values > floor]
                lo[k], hi[k] = np.percentile(values, PERCENTILES)
            if c == 3:
                lo, hi = np.repeat(lo, 3), np.repeat(hi, 3)
        else:
            raise PromptsegError(f"unknown normalisation {mode!r}")
        scaled = np.clip((sample - lo) / np.maximum(hi - lo, 1e-8), 0, 1).reshape(-1, c)
        median = np.median(sample.reshape(-1, c), axis=0).astype(np.float32) if background else None
        return cls(lo=lo, hi=hi, dtype=str(arr.dtype), mean=scaled.mean(0), std=scaled.std(0), median=median)

    def background_level(self) -> np.ndarray:
        """(C,) the background in normalised units of a dark-background image (its median, when that lies in the
        lower half of the window: bright objects on a dark field, as in fluorescence, where the median pixel is
        background); 0 for other images."""
        if self.median is None:
            return np.zeros_like(self.lo)
        level = (self.median - self.lo) / np.maximum(self.hi - self.lo, 1e-8)
        return np.where(level < 0.5, np.clip(level, 0.0, None), 0.0).astype(np.float32)

    def with_background(self, normalized: np.ndarray, level: np.ndarray) -> np.ndarray:
        """Normalised pixels shifted so that this image's background lies at ``level`` (another image's
        :meth:`background_level`)."""
        shift = self.background_level() - np.asarray(level, np.float32)
        return np.clip(normalized - shift, 0.0, 1.0).astype(np.float32)

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """(h, w, C) pixels -> float32 in [0, 1] with this window."""
        x = np.asarray(pixels, np.float32)
        return np.clip((x - self.lo) / np.maximum(self.hi - self.lo, 1e-8), 0.0, 1.0)

    def standardize(self, normalized: np.ndarray) -> np.ndarray:
        """Normalised pixels -> zero mean, unit spread per channel over the whole image: what a pixel classifier
        sees, so slides with another stain strength or exposure look alike to it."""
        if self.mean is None or self.std is None:
            return normalized
        return ((normalized - self.mean) / np.maximum(self.std, 1e-3)).astype(np.float32)


def pyramid_level(level_shapes: Sequence[Sequence[int]], scale: float) -> tuple[int, float]:
    """The level of an image pyramid to read for a working scale (model-input pixels per full-resolution pixel):
    the coarsest level that still has at least the working resolution, and its downsampling factor. A 40k px
    slide whose nuclei need a scale of 0.3 is read at its 1/2 level, not at full resolution."""
    base = float(level_shapes[0][0])
    best, factor = 0, 1.0
    for k, shape in enumerate(level_shapes):
        f = base / float(shape[0])
        if f <= 1.0 / scale + 1e-6 and f > factor:
            best, factor = k, f
    return best, factor


def level_to_full(coords: object, factor: float | np.ndarray) -> np.ndarray:
    """Pixel coordinates on a pyramid level ``factor`` times coarser than full resolution (per axis when an array)
    -> full-resolution pixel coordinates. The one rule of every level read (labels, heatmaps, points, boxes, result
    layers): a level pixel stands for the ``factor`` x ``factor`` full-resolution pixels it covers, its centre at
    theirs (level pixel i at i * factor + (factor - 1) / 2), as a pyramid averaged block by block is built and as
    :func:`upsample_labels` puts labels back. (Level pixel i at i * factor put a 4x level's results 1.5 px up and
    left of their pixels.)"""
    return np.asarray(coords, np.float64) * factor + (np.asarray(factor, np.float64) - 1) / 2


def full_to_level(coords: object, factor: float | np.ndarray) -> np.ndarray:
    """Full-resolution pixel coordinates -> on a pyramid level ``factor`` times coarser (:func:`level_to_full`
    undone)."""
    return (np.asarray(coords, np.float64) - (np.asarray(factor, np.float64) - 1) / 2) / factor


def level_factors(full_shape: Sequence[int], level_shape: Sequence[int]) -> tuple[float, float]:
    """How many times coarser than the full-resolution plane of ``full_shape`` (rows, columns, ...) a pyramid level's
    plane of ``level_shape`` is, along its rows and along its columns: they differ where the level's sizes were
    rounded (10001 x 7003 -> 2500 x 1750: rows 4.0004, columns 4.0017), and napari displays each axis by its own."""
    return float(full_shape[0]) / float(level_shape[0]), float(full_shape[1]) / float(level_shape[1])


def prompts_to_level(
    coords: object, width: int, xy_factors: Sequence[float], xy_shift: Sequence[float] = (0.0, 0.0)
) -> np.ndarray:
    """Full-resolution prompts (boxes x0, y0, x1, y1: ``width`` 4; points x, y: 2) -> on a pyramid level
    ``xy_factors`` times coarser along x and y (:func:`full_to_level`, each axis by its own factor: by the rows',
    a box at a slide's far column lay a few pixels right of its object), in a crop of the level whose top-left is
    ``xy_shift`` there. The one rule of the CLI and the Interactive widget."""
    factors = np.tile(np.asarray(xy_factors, np.float64), width // 2)
    level = full_to_level(np.asarray(coords, np.float64).reshape(-1, width), factors)
    return level - np.tile(np.asarray(xy_shift, np.float64), width // 2)


def level_placement(factor: float | Sequence[float], ndim: int = 2) -> dict[str, tuple[float, ...]]:
    """``scale`` and ``translate`` that lay an array found on a pyramid level ``factor`` times coarser (per axis
    when a sequence: a level of an odd-sized image is not exactly half along both) over the full-resolution pixels
    it stands for (:func:`level_to_full`), in the pixels of the full-resolution labels:
    ``viewer.add_image(result.heatmap, **level_placement(result.heatmap_factor))``."""
    factors = np.broadcast_to(np.asarray(factor, np.float64), (ndim,))
    return {"scale": tuple(map(float, factors)), "translate": tuple(map(float, level_to_full(0.0, factors)))}


def upsample_labels(labels: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Labels computed on a pyramid level -> the full-resolution (..., H, W) grid, nearest pixel centre (each
    full-resolution pixel takes the level pixel that covers it: :func:`level_to_full`)."""
    h, w = labels.shape[-2:]
    rows = np.minimum(((np.arange(shape[-2]) + 0.5) * h / shape[-2]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(shape[-1]) + 0.5) * w / shape[-1]).astype(np.int64), w - 1)
    return labels[..., rows[:, None], cols[None, :]]


#: the attribute of a lazy array made by :func:`sampled_labels` that holds its source and index arrays
SAMPLING = "promptseg_sampling"


def sampled_labels(source: np.ndarray, index: Sequence[np.ndarray], chunk: int = 1024) -> object:
    """Labels whose pixel (i, j, ...) is ``source[index[0][i], index[1][j], ...]`` (an index of -1: background), as
    a lazy dask array computed a block of at most ``chunk`` x ``chunk`` pixels of one plane at a time (the OME-Zarr
    labels' chunks). It keeps its source and index (:data:`SAMPLING`), so a nearest resampling of it (a labels
    pyramid's level: :func:`sampled_again`) samples the source again rather than the large array. uint16 when the
    ids fit."""
    import dask.array as da

    source = np.asarray(source)
    if source.dtype.kind in "iu" and source.size and source.min() >= 0 and source.max() < 2**16:
        source = source.astype(np.uint16, copy=False)  # as a label file stores them: its cast is then no copy
    index = tuple(np.asarray(i, np.int64) for i in index)
    shape = tuple(len(i) for i in index)

    def block(block_info=None) -> np.ndarray:
        taken = [i[a:b] for i, (a, b) in zip(index, block_info[None]["array-location"], strict=True)]
        values = source[np.ix_(*(np.maximum(t, 0) for t in taken))]
        for axis, t in enumerate(taken):
            if (t < 0).any():
                values[(slice(None),) * axis + (t < 0,)] = 0
        return values

    lead = len(shape) - 2
    chunks = da.core.normalize_chunks((*(1,) * lead, min(chunk, shape[-2]), min(chunk, shape[-1])), shape)
    labels = da.map_blocks(block, dtype=source.dtype, chunks=chunks)
    setattr(labels, SAMPLING, (source, index))
    return labels


def sampled_again(labels: object, taken: Sequence[np.ndarray]) -> object | None:
    """``labels`` made by :func:`sampled_labels`, sampled at ``taken`` (an index array per axis) from their source,
    lazily; None for any other array."""
    sampling = getattr(labels, SAMPLING, None)
    if sampling is None:
        return None
    source, index = sampling
    return sampled_labels(source, [i[np.asarray(t, np.int64)] for i, t in zip(index, taken, strict=True)])


def lazy_upsampled_labels(labels: np.ndarray, shape: Sequence[int], lead: Sequence[np.ndarray] | None = None) -> object:
    """:func:`upsample_labels` as a lazy dask array (:func:`sampled_labels`): a stack's labels found on a pyramid
    level, back at full resolution without holding the full-resolution stack (5 planes of 16k x 16k: 2.5 GB as
    uint16). uint16 when the ids fit, as a label file stores them. ``lead``: an index array per leading axis (-1:
    background), e.g. one plane's labels placed in a stack whose other planes are empty; default: as they are."""
    labels = np.asarray(labels)
    h, w = labels.shape[-2:]
    rows = np.minimum(((np.arange(shape[-2]) + 0.5) * h / shape[-2]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(shape[-1]) + 0.5) * w / shape[-1]).astype(np.int64), w - 1)
    lead = [np.arange(n) for n in labels.shape[:-2]] if lead is None else list(lead)
    return sampled_labels(labels, [*lead, rows, cols])


def read_tile(image_hwc: np.ndarray, tile: Tile, window: IntensityWindow) -> np.ndarray:
    """The tile's pixels, normalised with the image's window: (h, w, C) float32 in [0, 1]."""
    return window.apply(to_numpy(image_hwc[tile.slices]))


def to_working(tile_pixels: np.ndarray, scale: float) -> np.ndarray:
    """(h, w, C) tile pixels resized by ``scale`` -> (h', w', C) float32."""
    h, w = tile_pixels.shape[:2]
    return resize_pixels(tile_pixels, (max(1, round(h * scale)), max(1, round(w * scale))))


def resize_pixels(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w, C) pixels -> (size, C) float32, bilinear and antialiased as the segmenters resize their input."""
    if tuple(size) == pixels.shape[:2]:
        return np.ascontiguousarray(pixels, np.float32)
    x = as_tensor(pixels, np.float32).permute(2, 0, 1)[None]
    x = torch.nn.functional.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return x[0].permute(1, 2, 0).numpy()
