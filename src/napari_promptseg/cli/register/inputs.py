"""`promptseg register`'s inputs: the images (a pyramid's level), their channel axis, the prompts and the moving
labels, each checked and refused by name before any work."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...errors import PromptsegError
from ...models.preprocessing import is_single_plane
from .._reference import _mask_file_labels

if TYPE_CHECKING:
    from ...io.multiscale import PyramidLevel


def _registered_level(path: Path, channel_axis: int | None) -> tuple[object, PyramidLevel, bool, int | None]:
    """The input at full resolution (lazily for a pyramid), the plane register reads, with its factors along
    (rows, columns), whether that plane is a pyramid's with the channels its file names, read last, and the given
    ``channel_axis`` (the file's order) counted in the axes read (a 5-D OME-Zarr's c, its axis 1, is axis 0 of the
    (c, y, x) read; None: no channels read): an OME-Zarr
    or pyramidal TIFF's coarsest level with :data:`~...io.multiscale.REGISTER_SIDE` px along its longest side (only
    that level is read: a slide's full resolution peaked at 4.6 GB), any other image whole (a Fiji composite by its
    named axes, channels last, as the other commands read it)."""
    import dask.array as da

    from ...io.multiscale import (
        REGISTER_SIDE,
        PyramidLevel,
        is_lazy_image,
        open_multiscale,
        read_channel_axis,
        read_image_named,
    )

    if not is_lazy_image(path):
        image = read_image_named(path, channel_axis)  # says what is wrong with a folder that is not an image
        return image, PyramidLevel(0, image, np.ones(2)), False, channel_axis
    pyramid = open_multiscale(path)
    image = pyramid.levels[0]
    if pyramid.stack_axis is not None:  # register() refuses it by its shape: nothing to choose
        return image, PyramidLevel(0, image, np.ones(2)), False, channel_axis
    index, array, factors = pyramid.level_for_side(REGISTER_SIDE)
    channels = pyramid.axes.endswith("c")
    read_axis = None
    if read_channel_axis(path, channel_axis) == -1:  # the file's own channel axis, else refused naming its axes
        # the levels are read channels last: they go back where the file has them (the warped image keeps them there)
        # (among the axes kept: an OME-Zarr's singleton t and z are not read)
        position = [a for a in pyramid.source_axes if a in ("c", "y", "x")].index("c")
        image, array = (da.moveaxis(a, -1, position) for a in (image, array))
        read_axis = position
    return image, PyramidLevel(index, array, factors[-2:]), channels, read_axis  # factors: (rows, columns)


def _pair_axis(given: int | None, *images: tuple[Path, object, int | None]) -> int | None:
    """The one channel axis register() takes for the pair: ``given`` (--channel-axis, in each file's order) as
    counted in each image read ((path, image, its axis read), see :func:`_registered_level`); refused when the two
    images have their channels on different axes. Gray and RGB images, which have none there, follow the other."""
    from ...methods.registration.pipeline import pair_channel_axis

    if given is None:
        return None
    read = {}
    for path, image, axis in images:
        shape = np.shape(image)
        if axis is not None and pair_channel_axis(shape, axis, str(path)) is not None:
            read[path] = axis % len(shape)
    if len(set(read.values())) > 1:
        (fixed, a), (moving, b) = read.items()
        raise PromptsegError(
            f"--channel-axis {given}: the channels of {fixed} are its axis {a} as read, those of {moving} its axis "
            f"{b}; save them with their channels on one axis"
        )
    return next(iter(read.values()), given)


def _without_alpha(image: object) -> object:
    """An RGBA image's RGB (its alpha is not a channel to register); any other image as it is."""
    return image[..., :3] if np.ndim(image) == 3 and np.shape(image)[-1] == 4 else image


def _checked_prompts(given: list[str]) -> list[str]:
    """The --prompt values as text prompts (none: 'auto' alone), refused before any model loads when one names
    nothing or 'auto' is mixed with text."""
    from ...methods.text import split_phrases

    for prompt in given:
        try:
            split_phrases(prompt)
        except PromptsegError:
            raise PromptsegError(
                f"--prompt {prompt!r} is empty: name what to pair on both images (e.g. --prompt lungs), or leave "
                "--prompt out to register the images alone"
            ) from None
    prompts = [p for p in given if p.strip() != "auto"]
    if prompts and len(prompts) < len(given):
        raise PromptsegError(
            f"--prompt auto (automatic regions) stands alone; it does not mix with --prompt {prompts[0]!r}"
        )
    return prompts


def _checked_labels(path: Path, moving_shape: tuple[int, ...], channel_axis: int | None) -> np.ndarray:
    """--moving-labels read and checked against the moving image: 2D, integer or boolean, its height and width."""
    from ...io import read_image
    from ...io.images import file_labels

    # as oneshot's and the library's masks: a JPEG mask thresholded, a grey RGB one its first channel, colours ids
    labels = _mask_file_labels(read_image(path, role="labels"), path, f"--moving-labels {path}")
    if labels.dtype == bool:  # a JPEG mask: one object, id 1 (labels_warped.tif is an integer label image)
        labels = labels.astype(np.uint8)
    spatial = _spatial_shape(moving_shape, channel_axis)
    if is_single_plane(labels.shape):  # a stack of one plane: its plane, as the image's
        labels = labels[0]
    if labels.ndim != 2:
        raise PromptsegError(f"--moving-labels {path}: shape {labels.shape}, not a 2D label image")
    if labels.dtype.kind == "f":
        # whole-number ids stored as floats (voxelmorph's segmentations, a float export): ids, as warp_labels takes
        # them (io.images.file_labels, the one conversion: a fraction is refused, as a label file's writing does)
        labels = file_labels(labels, f"--moving-labels {path}")
    if labels.dtype.kind not in "uib":
        raise PromptsegError(f"--moving-labels {path}: {labels.dtype} values; labels are integer ids (or a mask)")
    if labels.shape != spatial[:2] and not _same_picture_scaled(labels.shape, spatial[:2]):
        raise PromptsegError(
            f"--moving-labels {path}: {labels.shape[0]} x {labels.shape[1]} px, the moving image is {spatial[0]} x "
            f"{spatial[1]} px; the labels must be drawn on the moving image (or on a version of it scaled alike "
            "along both axes)"
        )
    return labels


def _spatial_shape(shape: tuple[int, ...], channel_axis: int | None) -> tuple[int, ...]:
    """Height and width of an image of ``shape`` (its channel axis, if any, left out; a (1, H, W) plane's last two,
    as register() reads it)."""
    if channel_axis is None and is_single_plane(shape):
        return tuple(shape[1:])
    return tuple(n for axis, n in enumerate(shape) if channel_axis is None or axis != channel_axis % len(shape))[:2]


def _same_picture_scaled(labels_shape: tuple[int, ...], image_shape: tuple[int, ...]) -> bool:
    """Whether labels of ``labels_shape`` are drawn on the image scaled by one factor along both axes (a pyramid
    level, the 5 % / 10 % copies of a slide), each side rounded to whole pixels; labels that keep one side of the
    image and lose a row of the other are a crop or a mistake, not a scaled copy."""
    (lh, lw), (h, w) = labels_shape[:2], image_shape[:2]
    if lh == h or lw == w or min(lh, lw) < 2:
        return False
    # the factors each side allows when it was rounded to within one pixel; a common one must exist
    low = max(h / (lh + 1), w / (lw + 1))
    high = min(h / (lh - 1), w / (lw - 1))
    return low <= high
