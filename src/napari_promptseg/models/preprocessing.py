"""Image and coordinate transforms shared by every SAM-family segmenter.

Any 2D input (uint8/uint16/float, gray/RGB/multichannel, any size) becomes a padded square tensor of the model's
input size; the :class:`ResizeTransform` maps prompts into that frame and masks back to the original pixels.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np

from ..errors import PromptsegError

if TYPE_CHECKING:  # torch is imported by what runs a model, not by a batch's driver (models/protocols.py)
    import torch

Normalization = Literal["auto", "percentile", "minmax", "none"]
NORMALIZATIONS: tuple[str, ...] = ("auto", "percentile", "minmax", "none")

#: Larger inputs are refused with a clear message instead of exhausting memory (about 12k x 12k pixels).
DEFAULT_MAX_PIXELS = 150_000_000
#: Robust intensity window for non-uint8 data (fluorescence, MRI, CT): a few hot pixels must not wash out the image.
PERCENTILES = (0.5, 99.5)
#: the input shapes the methods take, for messages about an input of another shape
ACCEPTED_SHAPES = "a 2D image (Y, X), a 2D image with channels (Y, X, C), or a 3D stack (Z, Y, X[, C])"
#: what to do with a time-lapse (T > 1), which no method takes whole
SPLIT_TIME_POINTS = (
    "A time-lapse (T > 1) is not taken whole: split it into one image per time point (a file or a layer each, a 2D "
    "image or a 3D stack) and give those"
)


def read_axes(shape: Sequence[int]) -> str:
    """How an input of more axes than an image's reads, for messages: "(T=3, Z=5, Y=64, X=64)". Y and X are the
    last two axes, or the two before a last axis of 1-4 values (channels, C); before them come Z or T (one axis),
    T and Z (two), T, Z and C (three, when the channels are not last), and '?' for any more."""
    shape = tuple(int(s) for s in shape)
    channels_last = len(shape) >= 3 and shape[-1] <= 4
    tail = ["Y", "X", "C"] if channels_last else ["Y", "X"]
    known = ["T", "Z"] if channels_last else ["T", "Z", "C"]
    lead = max(0, len(shape) - len(tail))
    if lead == 1:
        names = ["Z or T"]
    elif lead <= len(known):
        names = known[:lead]
    else:
        names = ["?"] * (lead - len(known)) + known
    axes = [*names, *tail][-len(shape) :] if shape else []
    return "(" + ", ".join(f"{a}={n}" for a, n in zip(axes, shape, strict=True)) + ")"


def is_single_plane(shape: Sequence[int]) -> bool:
    """Whether an image of ``shape`` is one 2D plane behind a leading axis of one, (1, H, W): a TIFF's or a layer's
    singleton plane or channel axis, read as that plane (:func:`as_channels_last`); (1, W, 3) is a row of colours."""
    return len(shape) == 3 and shape[0] == 1 and shape[-1] not in (1, 3, 4)


def as_channels_last(
    image: np.ndarray,
    *,
    channel_axis: int | None = None,
    channels: Sequence[int] | None = None,
    name: str = "image",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Validate a 2D image and return it as (H, W, C) with C in {1, 2, 3}, in its original dtype.

    ``(H, W)`` is gray, and ``(1, H, W)``; ``(H, W, 3|4)`` is RGB(A) (alpha dropped); ``(H, W, 2)`` is two channels.
    Any other 3D array needs ``channel_axis`` (refused for a 2D image: it has none); ``channels`` picks up to three
    channels (e.g. nuclei + membrane) to feed the model's three colour inputs (refused for a 2D image too). A
    pyramid (a multiscale layer's data, levels largest first) is read at its full resolution
    (:func:`full_resolution`). A dask array (an OME-Zarr or pyramidal TIFF level) stays lazy: the tiled methods read
    it tile by tile (its values are checked for NaN tile by tile, not here), so ``max_pixels`` does not apply to it:
    read whole, :func:`in_memory` refuses it past :data:`DEFAULT_MAX_PIXELS`.
    """
    check_pixels(image, name)
    full = full_resolution(image)
    levels = len(image) if full is not image else 0  # a pyramid's, for the advice on a level too big
    image = full
    if isinstance(image, (list, tuple)) and len({np.shape(part) for part in image}) > 1:
        shapes = ", ".join(str(np.shape(part)) for part in image)
        raise PromptsegError(
            f"{name}: a list of arrays of shapes {shapes}; expected one image (a pyramid's levels go largest first)"
        )
    lazy = is_lazy(image)
    arr = image if lazy else np.asarray(image)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.dtype.kind not in "uif":
        raise PromptsegError(f"{name}: unsupported pixel type {arr.dtype}; expected integers or floats")
    if not arr.dtype.isnative:  # big-endian TIFFs: torch only takes native byte order
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.size == 0 or 0 in arr.shape:
        raise PromptsegError(f"{name}: image is empty (shape {arr.shape})")
    if arr.ndim == 2:
        if channel_axis is not None:  # ignored, it hid a wrong image (one channel of several) or a wrong setting
            raise PromptsegError(
                f"{name}: channel_axis={channel_axis} given for a 2D image of shape {arr.shape} (gray: it has no "
                "channel axis); drop channel_axis (CLI: --channel-axis), or pass the image with its channels"
            )
        if channels is not None:  # channels=[0] was taken: the user thought they picked a channel of another image
            raise PromptsegError(
                f"{name}: channels={list(channels)} given for a 2D image of shape {arr.shape} (gray: it has no "
                "channel axis); drop channels (CLI: --channels), or pass the image with its channels"
            )
        arr = arr[..., None]
    elif arr.ndim == 3:
        if channel_axis is not None:
            if not -3 <= channel_axis < 3:
                raise PromptsegError(f"{name}: channel_axis {channel_axis} out of range for shape {arr.shape}")
            arr = arr.transpose([a for a in range(3) if a != channel_axis % 3] + [channel_axis % 3])
        elif arr.shape[-1] in (1, 3, 4):  # gray with a trailing axis, RGB, RGBA
            arr = arr[..., :3]
        elif arr.shape[-1] == 2 and min(arr.shape[:2]) >= 8:
            # two channels last (e.g. nuclei + membrane, or this function's own output): a stack of two planes
            # would be (2, H, W), so this reading is the only sensible one and keeps the function idempotent
            pass
        elif is_single_plane(arr.shape):  # one plane, or one channel first (a singleton axis): alike
            arr = arr[0][..., None]
        else:
            raise PromptsegError(
                f"{name}: 3D array of shape {arr.shape} is ambiguous; pass channel_axis for a multichannel image, "
                "or for a stack segment one 2D plane at a time (a whole stack: segment_stack, or "
                "propagate_through_stack from one plane's prompts, in napari_promptseg.methods.volume)"
            )
    else:
        raise PromptsegError(
            f"{name}: expected a 2D image (Y, X), (Y, X, RGB) or (Y, X, C) with channel_axis; got {arr.ndim}D "
            f"shape {arr.shape}, its axes read as {read_axes(arr.shape)}. Select a single 2D plane first, or use "
            "the stack functions of napari_promptseg.methods.volume (segment_stack, propagate_through_stack) for a "
            f"3D stack (Z, Y, X[, C]). {SPLIT_TIME_POINTS}."
        )
    h, w, c = arr.shape
    if min(h, w) < 2:
        raise PromptsegError(f"{name}: image of {h}x{w} pixels is too small (at least 2 pixels along each side)")
    if h * w > max_pixels and not lazy:  # a lazy one is read tile by tile; read whole, in_memory refuses it
        # raising max_pixels is advised to a caller that set it: no console function, command or widget takes it
        _refuse_too_large(h, w, max_pixels, name, levels, raisable=max_pixels != DEFAULT_MAX_PIXELS)
    if channel_axis is not None and not lazy:
        # contiguous (once its size is checked): float sums over a strided view differ in their last bits, and so
        # did the labels of a (C, Y, X) image from those of the same image given channels last
        arr = np.ascontiguousarray(arr)
    if channels is not None:
        channels = list(channels)
        if not all(isinstance(ch, numbers.Integral) for ch in channels):  # compared with ints: a TypeError
            raise PromptsegError(f"{name}: channels must be channel indices (whole numbers), got {channels}")
        if not 1 <= len(channels) <= 3:
            raise PromptsegError(f"{name}: choose 1 to 3 channels, got {channels}")
        bad = [ch for ch in channels if not -c <= ch < c]
        if bad:
            raise PromptsegError(f"{name}: channel index {bad} out of range for {c} channels")
        arr = arr[..., channels]
    elif arr.shape[-1] > 3:
        raise PromptsegError(
            f"{name}: {arr.shape[-1]} channels; choose up to three with channels=[...] (CLI: --channels; widgets: "
            "the channels field beside the channel axis)"
        )
    if not lazy:  # a lazy one is checked where it is read (tile by tile, or whole by in_memory)
        _refuse_non_finite(arr, name)
    return arr


def _refuse_too_large(h: int, w: int, max_pixels: int, name: str, levels: int = 0, raisable: bool = True) -> None:
    """Refuse an image of ``h`` x ``w`` pixels above ``max_pixels`` held in memory whole, naming it (and, for a
    pyramid of ``levels`` levels, its coarser levels). ``raisable``: the caller's ``max_pixels`` may be raised (not
    :func:`in_memory`'s limit, which none sets)."""
    if h * w <= max_pixels:
        return
    coarser = (
        f"; a pyramid of {levels} levels: pass a coarser one (data[1], ...) with coordinates in its pixels"
        if levels > 1
        else ""
    )
    raise_it = " (or raise max_pixels if you have the memory)" if raisable else ""
    raise PromptsegError(
        f"{name}: {h}x{w} = {h * w:,} pixels exceeds the limit of {max_pixels:,}; downsample or tile the image"
        f"{raise_it}{coarser}"
    )


def _refuse_non_finite(arr: np.ndarray, name: str) -> None:
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise PromptsegError(f"{name}: contains NaN or infinite values; fill or mask them first")


def is_blank(image_hwc: np.ndarray) -> bool:
    """Whether an (H, W, C) image (or a gray (H, W) one) holds one value everywhere in every channel (an empty
    canvas, a blank plane of a stack): no object to segment, nothing to tell an object from its background."""
    arr = np.asarray(image_hwc)
    flat = arr.reshape(-1, arr.shape[-1] if arr.ndim == 3 else 1)
    return bool(np.all(flat.min(axis=0) == flat.max(axis=0)))


def is_lazy(image: object) -> bool:
    """A dask array (read chunk by chunk when indexed), not an in-memory one."""
    return hasattr(image, "dask") and hasattr(image, "compute")


def check_pixels(image: object, name: str = "image") -> None:
    """Refuse a file name or None given for an image: numpy reads a path as a 0-d array of text, refused as
    'unsupported pixel type <U9' or 'shape () (0D)', and None as one of 'pixel type object'."""
    if image is None:
        raise PromptsegError(f"{name}: None, not pixels; give the image's array or napari layer")
    if isinstance(image, (str, bytes, os.PathLike)):
        raise PromptsegError(
            f"{name}: a file name ({os.fsdecode(image)}), not pixels; read it first: "
            "napari_promptseg.io.read_image(path)"
        )


def full_resolution(image: object, *, planes: bool = False) -> object:
    """A pyramid's full-resolution level, any other input as it is. A pyramid is a multiscale napari layer's data
    (``MultiScaleData``: a sequence of levels with the ``shape`` and ``dtype`` of its first) or a list or tuple of
    arrays of one number of axes, largest first, whose shapes differ. Why: numpy reads ``MultiScaleData`` as its
    *coarsest* level, so boxes drawn on the layer (in full-resolution pixels) would fall on the wrong pixels and the
    labels would not fit the layer. ``planes``: the caller takes a list of planes too (a stack), so a list of 2D
    images, or of (Y, X, C) ones, is never a pyramid there (a list of planes of different shapes is its error)."""
    if isinstance(image, (np.ndarray, str, bytes)) or is_lazy(image) or not isinstance(image, Sequence):
        return image
    if not len(image) or not all(hasattr(level, "shape") for level in image):
        return image
    shapes = [tuple(level.shape) for level in image]
    if hasattr(image, "shape") and hasattr(image, "dtype"):  # napari's MultiScaleData, whatever its levels
        return image[0]
    if len(set(shapes)) == 1 or len({len(s) for s in shapes}) > 1 or len(shapes[0]) < 2:
        return image
    if planes and (len(shapes[0]) == 2 or (len(shapes[0]) == 3 and shapes[0][-1] <= 4)):
        return image
    pairs = zip(shapes[:-1], shapes[1:], strict=True)
    return image[0] if all(_is_coarser_level(big, small) for big, small in pairs) else image


def _is_coarser_level(big: tuple[int, ...], small: tuple[int, ...]) -> bool:
    """Whether ``small`` is ``big`` downsampled by one factor along every axis that shrinks (each size rounded
    either way), the others kept (channels; a 3D pyramid's planes). Two unrelated images, the second smaller (a
    list of targets, 520 x 696 and 256 x 320), were read as a pyramid: the second one's result silently dropped."""
    if any(b > a for a, b in zip(big, small, strict=True)):
        return False
    low, high = 1.0, np.inf  # the factors every shrinking axis allows
    for a, b in zip(big, small, strict=True):
        if b < a:
            low, high = max(low, a / (b + 1)), min(high, a / (b - 1) if b > 1 else np.inf)
    return low <= high


def pyramid_levels(image: object) -> list | None:
    """A pyramid's levels, largest first (see :func:`full_resolution`); None for any other input."""
    return list(image) if full_resolution(image) is not image else None


class PyramidRead(NamedTuple):
    """A 2D pyramid read at one level: its array, how many times coarser than full resolution it is, the full
    resolution's (rows, columns), which results come back to, and the level's index (0 = full resolution)."""

    array: Any
    factor: float
    full_shape: tuple[int, int]
    index: int = 0
    #: along columns and rows (x, y): they differ where the level's sizes were rounded (a 1201 x 1280 slide's 4x
    #: level is 301 x 320: rows 3.99, columns 4.0); None: ``factor`` along both
    xy_factors: tuple[float, float] | None = None

    def to_level(self, coords: object) -> np.ndarray:
        """Points (x, y) or boxes (x0, y0, x1, y1) in full-resolution pixels -> in the level's
        (:func:`~napari_promptseg.tiling.full_to_level`), each axis by its own factor (by the rows' along both, a
        box on a slide's last column ended past the level's, and was clipped with a warning)."""
        from ..tiling import full_to_level  # tiling imports this module

        return full_to_level(coords, self._factors(coords))

    def to_full(self, coords: object) -> np.ndarray:
        """Points or boxes found on the level -> in full-resolution pixels
        (:func:`~napari_promptseg.tiling.level_to_full`, the rule the labels come back by)."""
        from ..tiling import level_to_full  # tiling imports this module

        return level_to_full(coords, self._factors(coords))

    def _factors(self, coords: object) -> float | np.ndarray:
        """The factor of each value of a point (x, y) or box (x0, y0, x1, y1) of ``coords``."""
        width = np.shape(coords)[-1] if np.ndim(coords) else 0
        if self.xy_factors is None or width not in (2, 4):
            return self.factor
        return np.tile(np.asarray(self.xy_factors, np.float64), width // 2)

    def labels_to_full(self, labels: np.ndarray) -> np.ndarray:
        """Labels found on the level -> the full-resolution grid (as the CLI writes them)."""
        from ..tiling import upsample_labels  # tiling imports this module

        return upsample_labels(labels, self.full_shape)


def read_pyramid_level(
    image: object, scale_for: Callable[[tuple[int, int]], float], channel_axis: int | None = None
) -> PyramidRead | None:
    """A 2D pyramid (a multiscale layer's data, levels largest first) at its coarsest level that still has the
    working scale ``scale_for(full-resolution (rows, columns))`` (model-input pixels per full-resolution pixel;
    :func:`~napari_promptseg.tiling.pyramid_level`, as the CLI reads an OME-Zarr). None for any other input, for a
    pyramid whose planes are not plain (a stack's, an ambiguous 3D one's: read whole, its error is
    :func:`as_channels_last`'s) and when that level is full resolution (read as such, refused naming its levels when
    too big)."""
    from ..tiling import level_factors, pyramid_level  # tiling imports this module

    levels = pyramid_levels(image)
    if levels is None:
        return None
    shape = tuple(np.shape(levels[0]))
    if len(shape) == 2 or (len(shape) == 3 and channel_axis is None and shape[-1] <= 4):
        plane = (0, 1)
    elif len(shape) == 3 and channel_axis is not None and -3 <= channel_axis < 3:
        plane = tuple(a for a in range(3) if a != channel_axis % 3)
    else:
        return None
    shapes = [(int(np.shape(level)[plane[0]]), int(np.shape(level)[plane[1]])) for level in levels]
    index, factor = pyramid_level(shapes, scale_for(shapes[0]))
    if index == 0:
        return None
    rows, cols = level_factors(shapes[0], shapes[index])
    return PyramidRead(levels[index], factor, shapes[0], index, (cols, rows))


def in_memory(image_hwc: object, name: str = "image") -> np.ndarray:
    """An image from :func:`as_channels_last` read whole, for a model that takes it whole: a lazy one is refused past
    :data:`DEFAULT_MAX_PIXELS` (as an in-memory one is by as_channels_last), computed and checked for NaN and
    infinite values as an in-memory one is (a dask array's values are checked where it is read; unchecked, a NaN
    reached the encoder and an image of one tile came back with no object, without a word)."""
    if not is_lazy(image_hwc):
        return image_hwc
    # as_channels_last left it lazy, whatever its max_pixels: the default limit, which no caller raises here
    _refuse_too_large(*np.shape(image_hwc)[:2], DEFAULT_MAX_PIXELS, name, raisable=False)
    arr = to_numpy(image_hwc)
    _refuse_non_finite(arr, name)
    return arr


def as_tensor(pixels: np.ndarray, dtype: np.dtype | type | None = None) -> torch.Tensor:
    """A tensor over ``pixels`` (as ``dtype``), copied only when it must be: a read-only array (a memory map, a
    broadcast view, a layer's data read from a file) is copied too, else torch warned the user "The given NumPy array
    is not writable, and PyTorch does not support non-writable tensors"."""
    import torch

    return torch.from_numpy(np.require(pixels, dtype, requirements=("C", "W")))


def to_numpy(pixels: object) -> np.ndarray:
    """An in-memory array of ``pixels``; a dask array is computed in this thread (no worker pool under the tiles'
    own torch threads, and deterministic)."""
    if is_lazy(pixels):
        return np.asarray(pixels.compute(scheduler="synchronous"))
    return np.asarray(pixels)


#: how far float pixels given with normalize="none" may lie outside [0, 1] (rounding of a resampled tile) before
#: they are refused
UNIT_RANGE_SLACK = 1e-3


def check_unit_range(pixels: np.ndarray, normalize: str, name: str = "image") -> None:
    """Refuse float pixels outside [0, 1] given with ``normalize="none"`` (used as they are): they were clamped
    without a word, so a float image of 0-255 values became white everywhere and nothing was found. Integer pixels
    are scaled by their type's maximum, as ``none`` says."""
    if normalize != "none" or np.dtype(pixels.dtype).kind != "f" or not np.size(pixels):
        return
    lo, hi = float(np.min(pixels)), float(np.max(pixels))
    if lo < -UNIT_RANGE_SLACK or hi > 1 + UNIT_RANGE_SLACK:
        raise PromptsegError(
            f"{name}: normalize='none' takes float pixels in [0, 1], used as they are; these span [{lo:.4g}, "
            f"{hi:.4g}]: choose normalize='auto', 'percentile' or 'minmax' (CLI: --normalize), or scale the image to "
            "[0, 1] first"
        )


def normalize_intensity(x: torch.Tensor, *, source_dtype: np.dtype, mode: Normalization = "auto") -> torch.Tensor:
    """Map a (C, h, w) float tensor to [0, 1].

    ``none``: float data is taken as it is (callers refuse data outside [0, 1]: :func:`check_unit_range`), integer
    data is divided by its type's maximum. ``auto``: uint8 data is min-max scaled over the whole image (what
    LiteMedSAM's reference inference does); other dtypes get a percentile window, robust to hot pixels and 12/16-bit
    ranges: per channel for 1-2 channels (fluorescence), one window for all three channels of colour data (keeps the
    colour balance).
    """
    import torch

    if mode not in NORMALIZATIONS:
        raise PromptsegError(f"normalize must be one of {NORMALIZATIONS}, got {mode!r}")
    if mode == "none":
        scaled = x if np.dtype(source_dtype).kind == "f" else x / float(np.iinfo(source_dtype).max)
        return scaled.clamp(0, 1)  # signed integers may be negative
    if mode == "minmax" or (mode == "auto" and np.dtype(source_dtype) == np.uint8):
        lo, hi = x.min(), x.max()
        return (x - lo) / torch.clamp(hi - lo, min=1e-8)
    flat = x.reshape(1, -1) if x.shape[0] == 3 else x.reshape(x.shape[0], -1)
    q = torch.tensor([p / 100 for p in PERCENTILES], dtype=x.dtype)
    lo_hi = torch.quantile(flat, q, dim=1)  # (2, 1 or C)
    lo, hi = lo_hi[0][:, None, None], lo_hi[1][:, None, None]
    return ((x - lo) / torch.clamp(hi - lo, min=1e-8)).clamp(0, 1)


@dataclass(frozen=True)
class ResizeTransform:
    """Resize-longest-side-then-pad-bottom-right, as in SAM and LiteMedSAM."""

    original_shape: tuple[int, int]
    input_size: int

    @property
    def resized_shape(self) -> tuple[int, int]:
        h, w = self.original_shape
        scale = self.input_size / max(h, w)
        # at least one pixel: a 2 x 5000 strip must not resize to nothing (SAM's own rounding would give 0)
        return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))

    def coords_to_input(self, xy: np.ndarray) -> np.ndarray:
        """Pixel (x=column, y=row) coordinates in the original image -> model input frame."""
        xy = np.asarray(xy, dtype=np.float32)
        (h, w), (nh, nw) = self.original_shape, self.resized_shape
        out = xy.copy()
        out[..., 0] = xy[..., 0] * (nw / w)
        out[..., 1] = xy[..., 1] * (nh / h)
        return out

    def boxes_to_input(self, boxes: np.ndarray) -> np.ndarray:
        boxes = np.asarray(boxes, dtype=np.float32)
        return self.coords_to_input(boxes.reshape(-1, 2, 2)).reshape(boxes.shape)

    def image_to_input(self, image_hwc: np.ndarray, normalize: Normalization = "auto") -> torch.Tensor:
        """(H, W, C) array -> (1, 3, S, S) float tensor in [0, 1], zero padded."""
        import torch
        import torch.nn.functional as F

        nh, nw = self.resized_shape
        x = as_tensor(image_hwc).permute(2, 0, 1).float()[None]
        if (nh, nw) != tuple(x.shape[-2:]):
            # antialias: a 4000 px slide shrunk to 256 must average, not alias
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        x = normalize_intensity(x[0], source_dtype=image_hwc.dtype, mode=normalize)
        if x.shape[0] == 1:
            x = x.expand(3, -1, -1)
        elif x.shape[0] == 2:  # two channels -> red/green, blue empty
            x = torch.cat([x, torch.zeros_like(x[:1])], 0)
        padded = x.new_zeros((3, self.input_size, self.input_size))
        padded[:, :nh, :nw] = x
        return padded[None]

    def logits_to_original(self, low_res_logits: torch.Tensor) -> torch.Tensor:
        """(N, K, s, s) low-resolution mask logits -> (N, K, H, W) logits on the original pixel grid."""
        import torch.nn.functional as F

        x = low_res_logits
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        nh, nw = self.resized_shape
        x = x[..., :nh, :nw]
        return F.interpolate(x, size=self.original_shape, mode="bilinear", align_corners=False)


def to_rgb_uint8(image_hwc: np.ndarray, normalize: Normalization = "auto", name: str = "image") -> np.ndarray:
    """(H, W, 3) uint8 for models trained on 8-bit photographs (GroundingDINO, CLIPSeg, CLIP).

    ``image_hwc`` comes from :func:`as_channels_last`. With ``auto``, uint8 data keeps its raw values (those
    models were trained on raw 0-255 colours); other dtypes get :func:`normalize_intensity`'s window. Gray is
    repeated to three channels; a second channel fills green with blue empty (a two-stain fluorescence overlay).
    """
    check_unit_range(image_hwc, normalize, name)
    if normalize == "auto" and image_hwc.dtype == np.uint8:
        rgb = image_hwc
    else:
        import torch

        x = as_tensor(image_hwc).permute(2, 0, 1).float()
        scaled = normalize_intensity(x, source_dtype=image_hwc.dtype, mode=normalize)
        rgb = (scaled * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    c = rgb.shape[2]
    if c == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    elif c == 2:
        rgb = np.concatenate([rgb, np.zeros_like(rgb[..., :1])], axis=2)
    return np.ascontiguousarray(rgb[..., :3])
