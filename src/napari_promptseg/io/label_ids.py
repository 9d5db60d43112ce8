"""What a label or mask file's values mean: instance ids, a mask's objects, a colour label image's regions; and
what ids a label file can hold. No file is read here (:mod:`.images` reads them)."""

from __future__ import annotations

from typing import Literal

import numpy as np

from ..errors import PromptsegError
from ..models.preprocessing import full_resolution, is_lazy

#: a blurred binary mask's foreground lies within this many grey levels of its top value (JPEG masks of GlaS, Shenzhen,
#: Kvasir: at least 90 % of it within 31 of 255), a label image's ids do not (255 ids: 1/8 of them)
MASK_TOP_BAND = 31
MASK_NEAR_TOP_SHARE = 0.75

#: where a mask's values come from, which decides what they mean (:func:`mask_foreground`): "lossy", a file stored
#: with lossy compression (JPEG, a JPEG-compressed TIFF: blurred, cut at a threshold); "exact", stored as they were
#: made (PNG, TIFF, BMP, a napari Labels layer: every non-zero value is an object's); "unknown", an array of unknown
#: origin (given in a script), told by its values
MaskSource = Literal["lossy", "exact", "unknown"]
MASK_SOURCES: tuple[str, ...] = ("lossy", "exact", "unknown")


#: a soft mask's (a probability map's) foreground: its values from this one up
SOFT_MASK_CUT = 0.5


def is_soft_mask(mask: np.ndarray) -> bool:
    """Whether ``mask`` is a soft one: floats in [0, 1], their non-zero values of more than one, some between 0 and 1
    (a model's probability map, a mask resized with interpolation). A mask of one non-zero value (0.3 or 0.8 on its
    object) is a mask of that object, whatever the value."""
    if np.dtype(mask.dtype).kind != "f" or not mask.size or np.nanmin(mask) < 0:
        return False
    foreground = mask[mask > 0]
    return bool(foreground.size and foreground.max() <= 1 and foreground.min() < min(foreground.max(), 1))


def mask_pixels(mask: np.ndarray) -> np.ndarray:
    """A mask's foreground: its non-zero pixels; a soft mask's (:func:`is_soft_mask`) those of
    :data:`SOFT_MASK_CUT` and up. Why: a probability map is above 0 nearly everywhere, and was read as a mask of
    every pixel (a reference "labelling everything", a training row whose target was the whole image)."""
    return mask >= SOFT_MASK_CUT if is_soft_mask(mask) else mask > 0


def is_mask(labels: np.ndarray) -> bool:
    """Whether a label image is a mask (its objects are its connected components) rather than instance ids: bool,
    values up to 1 (0/1, or a soft 0..1 map), or a single non-zero value (a 0/255 PNG). Values <= 0 are background."""
    labels = np.asarray(full_resolution(labels))
    if labels.dtype == bool:
        return True
    # read block by block: a copy of the whole (a bool per pixel, then every object pixel) took 26 MiB to decide for
    # a 4200 x 4400 label image; the answer is settled at the first block with two values and one above 1
    low = high = None
    for block in _blocks(labels):
        foreground = block[block > 0]
        if not foreground.size:
            continue
        block_low, block_high = foreground.min(), foreground.max()
        low = block_low if low is None else min(low, block_low)
        high = block_high if high is None else max(high, block_high)
        if high > 1 and low != high:
            return False
    return True


#: elements of a label image :func:`is_mask` reads at once (a bool and a copy of each: a few MiB at most)
_BLOCK_ELEMENTS = 1 << 18


def _blocks(array: np.ndarray):
    """Views of ``array`` of about :data:`_BLOCK_ELEMENTS` elements that together hold each element once: slabs
    along its first axis, a row longer than that cut along the next axes."""
    if array.ndim == 0:
        yield array.reshape(1)
        return
    row = int(np.prod(array.shape[1:], dtype=np.int64))
    if array.ndim == 1 or row <= _BLOCK_ELEMENTS:
        step = max(1, _BLOCK_ELEMENTS // max(row, 1))
        for start in range(0, array.shape[0], step):
            yield array[start : start + step]
        return
    for sub in array:
        yield from _blocks(sub)


def label_objects(labels: np.ndarray) -> np.ndarray:
    """Instance labels of a label image (its ids, kept; negatives are background) or of a mask (its connected
    components, :func:`mask_pixels`; see :func:`is_mask`)."""
    from scipy import ndimage

    labels = np.asarray(full_resolution(labels))
    if is_mask(labels):
        return ndimage.label(mask_pixels(labels))[0]
    return labels if labels.min() >= 0 else np.where(labels > 0, labels, 0)


def label_plane(labels: np.ndarray) -> np.ndarray:
    """A label image saved with axes of one dropped: (1, Y, X) (a stack of one plane, a channel axis of one), and
    (Y, X, 1), as numpy arrays are saved by tifffile without naming their axes; any other array as it is (a colour
    label image (Y, X, 3) stays one)."""
    while labels.ndim > 2 and labels.shape[0] == 1 and not (labels.ndim == 3 and labels.shape[-1] in (3, 4)):
        labels = labels[0]
    if labels.ndim == 3 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    return labels


def label_image_2d(mask: np.ndarray, name: str = "labels") -> np.ndarray:
    """A reference mask or label image as one 2D array of ids (0 = background); axes of one dropped
    (:func:`label_plane`). An RGB(A) image whose channels differ is a colour label image: each separate region of one
    colour is one id (black or transparent: background; an exporter's few colours are reused by many objects); a
    grey one (equal channels) is its first channel, 0 where it is transparent. Whole-number float ids are integer
    ids; fractional ones above 1 (labels resized with interpolation) are refused, a soft mask (0..1, a probability
    map) is its pixels of 0.5 and up (:func:`mask_pixels`), as uint8 0/1. Values that are no ids are refused
    (:func:`check_label_values`)."""
    mask = label_plane(np.asarray(full_resolution(mask)))  # a multiscale labels layer: its full-resolution level
    if mask.ndim == 3 and mask.shape[-1] in (3, 4):
        rgb = mask[..., :3]
        if (rgb == rgb[..., :1]).all():  # grey: its first channel, none where it is transparent (as a colour one)
            mask = mask_values(mask) if mask.shape[-1] == 4 else rgb[..., 0]
        else:
            mask = _colour_ids(mask)
    check_label_values(mask, name)
    if is_soft_mask(mask):
        return (mask >= SOFT_MASK_CUT).astype(np.uint8)  # mask_pixels without telling it soft again
    if mask.dtype.kind == "f" and mask.size and mask.max() > 1:  # ids, not a soft mask
        mask = file_labels(mask, name)  # integer ids (regionprops refuses float ones); fractions refused
    return mask


def check_label_values(labels: np.ndarray, name: str) -> None:
    """Refuse a mask or label image whose values are no ids, naming ``name``: not numbers (complex ones were read
    as a mask of every non-zero pixel), NaN or inf (NaN was read as background, inf as an object), negative
    (:func:`refuse_negative_ids`)."""
    if labels.dtype.kind not in "biuf":
        raise PromptsegError(f"{name}: {labels.dtype} values; expected label ids (whole numbers) or a mask")
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        raise PromptsegError(
            f"{name}: the mask contains NaN or infinite values; set them to 0 (background) or to an object's id"
        )
    refuse_negative_ids(labels, name)


def refuse_negative_ids(labels: np.ndarray, name: str) -> None:
    """Refuse labels or a mask holding negative values, naming ``name``: neither an object nor clearly background
    (a signed 8-bit file holds ids above 127 as negatives: 255 nuclei read as a mask lost 128 of them)."""
    if labels.dtype.kind in "if" and labels.size and labels.min() < 0:
        signed_bytes = labels.dtype == np.int8
        wrapped = "; a signed 8-bit file? its ids above 127 wrap to negative: save it unsigned" if signed_bytes else ""
        raise PromptsegError(
            f"{name}: negative label id {labels.min():g}; ids are 0 (background) and positive numbers, one per "
            f"object{wrapped}"
        )


def _colour_ids(rgba: np.ndarray) -> np.ndarray:
    """Ids of a colour label image (Y, X, 3 or 4): each 4-connected region of one colour one id, 1..N; black or
    transparent pixels background. By region, not by colour: label2rgb's 7 colours and a viewer's palette are reused
    by many objects (349 nuclei were read as 10)."""
    from skimage.measure import label

    rgb = rgba[..., :3]
    background = ~rgb.any(axis=-1) | ((rgba[..., 3] == 0) if rgba.shape[-1] == 4 else False)
    packed = np.ascontiguousarray(rgb).view(np.dtype((np.void, rgb.dtype.itemsize * 3)))[..., 0]
    _, colour = np.unique(packed[~background], return_inverse=True)
    colours = np.zeros(rgba.shape[:2], np.int64)
    colours[~background] = colour.ravel() + 1
    regions = label(colours, background=0, connectivity=1)  # neighbours of one colour only
    return regions.astype(np.uint16 if regions.max() < 2**16 else np.uint32)


def mask_foreground(mask: np.ndarray, threshold: int = 127, source: MaskSource = "unknown") -> np.ndarray:
    """A mask's target, by what is known of where its values come from (``source``, :data:`MaskSource`): a lossy
    file's 8-bit values are cut at ``threshold`` (JPEG compression blurs a 0/255 mask: faint values around its
    objects, grey edges); exact values (a PNG or TIFF, a napari Labels layer) are every non-zero one, never cut (a
    label image of ids 1 and 250 is two objects, not one), a soft mask's (a probability map) those of 0.5 and up
    (:func:`mask_pixels`); values of unknown origin (an array given in a script) are
    told by themselves: a blurred mask's foreground lies mostly near its top value (:data:`MASK_TOP_BAND`), a label
    image's ids are spread over the range (an 8-bit label image of 255 nuclei lost ids 1..127 when any foreground
    mostly above ``threshold`` was cut there)."""
    if source not in MASK_SOURCES:
        raise ValueError(f"mask_foreground: source {source!r}; expected one of {', '.join(MASK_SOURCES)}")
    if source == "exact" or mask.dtype != np.uint8 or not mask.size or mask.max() <= threshold:
        return mask_pixels(mask)
    if source == "lossy":
        return mask > threshold
    foreground = mask[mask > 0]
    near_top = foreground >= int(foreground.max()) - MASK_TOP_BAND
    return mask > threshold if np.count_nonzero(near_top) > MASK_NEAR_TOP_SHARE * foreground.size else mask > 0


def mask_values(mask: np.ndarray) -> np.ndarray:
    """A colour mask (Y, X, 2..4) as one plane: its target in any colour channel (the brightest; green on black was
    read as empty from red), and background where an RGBA mask is transparent (a transparent background need not be
    black). Two samples are grey and alpha: the grey, background where transparent. A mask of one plane as it is."""
    if mask.ndim != 3 or mask.shape[-1] not in (2, 3, 4):
        return mask
    values = mask[..., :3].max(axis=-1) if mask.shape[-1] != 2 else mask[..., 0]
    if mask.shape[-1] in (2, 4):  # the last sample is alpha
        values = np.where(mask[..., -1] > 0, values, 0).astype(values.dtype, copy=False)
    return values


def file_labels(labels: np.ndarray, name: str = "labels", *, lazy: bool = False) -> np.ndarray:
    """``labels`` as a label file stores them: uint16, or uint32 past 65535 ids. Ids a file cannot hold are refused,
    not wrapped: a cast made a negative id 65535, id 2**32 + 1 object 1, and a float 1.7 object 1 (merged with it)."""
    labels = full_resolution(labels)
    if lazy and is_lazy(labels) and labels.dtype.kind in "biu":
        # ``lazy``: lazy integer labels (a stack's found on a pyramid level, back at full resolution) checked and
        # cast block by block for a writer that writes them so, never held whole (5 planes of 16k x 16k: 2.5 GB)
        import dask

        low, high = dask.compute(labels.min(), labels.max()) if labels.size else (0, 0)
        return _checked_ids(labels, low, high, name)
    labels = np.asarray(labels)
    if labels.dtype.kind not in "biuf":
        raise PromptsegError(f"{name}: {labels.dtype} values; expected label ids (whole numbers) or a mask")
    if labels.dtype.kind == "f" and labels.size:
        if not np.isfinite(labels).all():
            raise PromptsegError(f"{name}: NaN or infinite values; expected label ids (whole numbers)")
        if not np.array_equal(labels, np.round(labels)):
            raise PromptsegError(
                f"{name}: fractional values; expected label ids (whole numbers): labels resized with interpolation? "
                "resize them with nearest neighbour"
            )
    low, high = (labels.min(), labels.max()) if labels.size else (0, 0)
    return _checked_ids(labels, low, high, name)


def _checked_ids(labels: object, low: float, high: float, name: str) -> object:
    """:func:`file_labels`' refusal of ids a file cannot hold (``low``, ``high``: the labels' extremes) and its cast."""
    if low < 0:
        raise PromptsegError(f"{name}: negative id {low:g}; ids are 0 (background) and positive numbers")
    if high >= 2**32:
        raise PromptsegError(
            f"{name}: id {high:g} is above the largest a label file holds ({2**32 - 1}); number the objects from 1 "
            "(skimage.segmentation.relabel_sequential)"
        )
    return labels.astype(np.uint16 if high < 2**16 else np.uint32, copy=False)
