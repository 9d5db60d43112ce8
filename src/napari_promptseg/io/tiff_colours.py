"""TIFFs whose stored samples are not what a viewer shows: palette (colour-map) images, whose samples are indices
into the file's colour map, MinIsWhite grey images (photometric 0), whose 0 is white, and CMYK images (ink).

An *image* is read as shown (Pillow's reading: the palette's RGB colours, the grey inverted), which is what the
models and the eye must see; a *labels* or mask file keeps its stored values: a label image saved with a colour map
(Fiji's glasbey LUT) holds its ids as indices, and ImageJ's binary mask with an inverting LUT holds its objects as
255 stored (shown black). The callers decide by the file's role (:func:`.images.read_image`'s ``role``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import tifffile

#: what a file is read as: an image (as shown) or labels (as stored)
Role = Literal["image", "labels"]
ROLES = ("image", "labels")


def palette_colours(tif: tifffile.TiffFile) -> np.ndarray | None:
    """(N, 3) RGB colours of the indices of a palette TIFF's first series, as Pillow shows them: 8-bit for indices
    of up to 8 bits (the colour map's 16-bit values / 256, as Pillow takes them; a map written with 8-bit values as
    they are), 16-bit for 16-bit indices; None for any other TIFF (one sample per pixel only)."""
    if not len(tif.pages) or not tif.series:
        return None
    page = tif.pages.first
    if page.photometric != tifffile.PHOTOMETRIC.PALETTE or page.colormap is None or page.samplesperpixel != 1:
        return None
    if not np.issubdtype(page.dtype, np.unsignedinteger):
        return None
    colours = np.asarray(page.colormap).T  # (3, N) in the file
    if page.bitspersample <= 8:
        return (colours // 256 if colours.max() > 255 else colours).astype(np.uint8)
    return colours.astype(np.uint16)


def min_is_white_top(tif: tifffile.TiffFile) -> int | None:
    """The stored value of black in a MinIsWhite grey TIFF's first series (2**bits - 1; 1 for one bit per pixel,
    read as bool), which a stored value is subtracted from to show it; None for any other TIFF (and for float or
    signed samples, which no viewer agrees on)."""
    if not len(tif.pages) or not tif.series:
        return None
    page = tif.pages.first
    if page.photometric != tifffile.PHOTOMETRIC.MINISWHITE or page.samplesperpixel != 1:
        return None
    if page.dtype == np.bool_ or np.issubdtype(page.dtype, np.unsignedinteger):
        return 2 ** int(page.bitspersample) - 1
    return None


def as_shown(image, colours: np.ndarray | None, top: int | None):
    """``image`` (stored samples, numpy or dask) as a viewer shows it: ``colours`` of its palette indices (a colour
    axis added last), or inverted from ``top`` (:func:`palette_colours`, :func:`min_is_white_top`); itself when both
    are None. A dask array stays lazy."""
    if colours is not None:
        if isinstance(image, np.ndarray):
            return colours[np.minimum(image, len(colours) - 1)]
        return image.map_blocks(
            lambda block: colours[np.minimum(block, len(colours) - 1)],
            new_axis=image.ndim,
            chunks=(*image.chunks, (3,)),
            dtype=colours.dtype,
        )
    if top is not None:
        if image.dtype == np.bool_:
            return ~image
        return (top - image).astype(image.dtype)
    return image


def shown_shape(shape: tuple[int, ...], dtype: np.dtype, tif: tifffile.TiffFile) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype an image of stored ``shape`` and ``dtype`` in ``tif`` is read with (:func:`as_shown`)."""
    colours = palette_colours(tif)
    if colours is None:
        return shape, dtype
    return (*shape, 3), colours.dtype


def cmyk_sample_axis(tif: tifffile.TiffFile, ndim: int) -> int | None:
    """The axis of the ink samples of a CMYK TIFF (photometric separated, four samples of CMYK ink, no alpha) whose
    first series is read with ``ndim`` axes; None for any other TIFF (other inks, a float CMYK: left as they are)."""
    if not len(tif.pages) or not tif.series:
        return None
    page, axes = tif.pages.first, tif.series[0].axes
    ink = page.tags.get("InkSet")  # 1 (the default): CMYK; 2: other inks, named by the file
    if (
        page.photometric != tifffile.PHOTOMETRIC.SEPARATED
        or page.samplesperpixel != 4
        or len(page.extrasamples or ())
        or (ink is not None and int(ink.value) != 1)
        or not np.issubdtype(page.dtype, np.unsignedinteger)
        or "S" not in axes
        or len(axes) != ndim
    ):
        return None
    return axes.index("S")


def cmyk_to_rgb(image: np.ndarray, axis: int = -1) -> np.ndarray:
    """CMYK ink values (unsigned integers, along ``axis``) as RGB of the same dtype and axis, as Pillow converts
    them: each colour the white left by the black ink, less the share its own ink takes of it. A dask array stays
    lazy."""
    top = float(np.iinfo(image.dtype).max)
    ink = [image[(slice(None),) * (axis % image.ndim) + (k,)].astype(np.float32) for k in range(4)]
    white = top - ink[3]
    rgb = np.stack([white - ink[k] * white / top for k in range(3)], axis=axis)
    return rgb.round().astype(image.dtype)
