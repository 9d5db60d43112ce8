"""What a file's metadata says of its axes (an OME or ImageJ TIFF's header, an OME-Zarr's attributes): which axis
holds channels, stack planes or time points, and how every command reads an image with them (channels last). Split
from :mod:`.multiscale`, which reads the pixels; no Qt, no napari."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import PromptsegError
from .images import TIFF_SUFFIXES, read_image

#: tifffile's axis codes -> OME names (S = samples of an RGB pixel; I and Q = a sequence of unnamed planes)
TIFF_AXES = {"X": "x", "Y": "y", "Z": "z", "T": "t", "C": "c", "S": "c", "I": "z", "Q": "z"}


def tiff_axis_names(path: str | Path) -> list[str | None] | None:
    """The axes an OME or ImageJ TIFF's metadata names for its first series (:data:`TIFF_AXES` names, None for
    another kind), in the file's order; so does tifffile's own JSON description when it was written with
    ``metadata={"axes": ...}`` (a time-lapse saved from Python: "TYXS"), and an RGB image's tags when another
    program stored it plane by plane ("SYX"). None for any other file (its axes are a guess: tifffile calls unnamed
    ones Q or I)."""
    return _tiff_header(path)[0]


def _tiff_header(path: str | Path) -> tuple[list[str | None] | None, bool]:
    """A TIFF's :func:`tiff_axis_names` and whether its first series is a pyramid, from one read of its header;
    (None, False) for any other file."""
    import tifffile

    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES or not path.is_file():
        return None, False
    try:
        with tifffile.TiffFile(path) as tif:
            pyramid = len(tif.series[0].levels) > 1
            shaped = tif.shaped_metadata if tif.is_shaped else None
            codes = tif.series[0].axes
            # an RGB image stored plane by plane names its colour samples by its tags (the plugin opens it as RGB);
            # not one tifffile wrote with its own description: that is tifffile's guess for any (3 or 4, Y, X) array
            # (which it says it will stop making), a stack of planes to napari's reader and ours
            planar_rgb = codes == "SYX" and tif.pages[0].photometric == tifffile.PHOTOMETRIC.RGB and not shaped
            if not (tif.is_ome or tif.is_imagej or (shaped and "axes" in shaped[0]) or planar_rgb):
                return None, pyramid
    except Exception:  # noqa: BLE001 - not a readable TIFF: the reader says why
        return None, False
    return [TIFF_AXES.get(code) for code in codes], pyramid


class StackAxes(NamedTuple):
    """What an input's metadata says of its axes as a stack (:func:`stack_axes`): read once per input, for reading
    it as a stack and for naming its labels' axes."""

    #: the axis order the input is read in, when its metadata names it (methods.volume.as_stack's ``axes``): an
    #: OME-Zarr's axes; an OME or ImageJ TIFF's whose first axis is Z or T (read as "z"), its channels last as they
    #: are read; else None
    read: str | None = None
    #: the axis its planes lie along, by the file's word: "z", or "t" (a time-lapse of 2D frames); None when unnamed
    planes: str | None = None

    @property
    def labels(self) -> str:
        """The axes of the input's (Z, Y, X) labels, as :func:`.images.write_labels` names them: a time-lapse's
        frames "TYX", else "ZYX"."""
        return "TYX" if self.planes == "t" else "ZYX"


def stack_axes(path: str | Path) -> StackAxes:
    """:class:`StackAxes` of input ``path``: metadata only (a TIFF's header, an OME-Zarr's attributes), no pixel
    read."""
    from .multiscale import is_ome_zarr, open_multiscale  # lazy: multiscale imports this module

    if is_ome_zarr(path):
        image = open_multiscale(path)
        return StackAxes(image.axes, image.stack_axis) if image.axes_named else StackAxes()
    names, pyramid = _tiff_header(path)
    if names is None or names[0] not in ("z", "t"):  # a pyramidal TIFF's Q or I axis is read as z, a guess
        return StackAxes()
    if pyramid:  # a pyramid is read in the order (z, y, x[, c]), not in the file's
        return StackAxes(open_multiscale(path).axes, names[0])
    position = named_channel_position(names)
    read = names
    if position is not None:  # read with its channels last (batch.engine: named_channels_last)
        read = [*names[:position], *names[position + 1 :], "c"]
    return StackAxes("z" + "".join(name or "?" for name in read[1:]), names[0])


def labels_axes(path: str | Path, ndim: int) -> str | None:
    """The axes of the labels (``ndim`` dimensions) of input ``path``, as :func:`.images.write_labels` names them:
    a stack's first axis as the input's metadata names it (a time-lapse's frames: "TYX"), else "ZYX"; None for 2D
    labels (write_labels's own "YX")."""
    return stack_axes(path).labels if ndim == 3 else None


def named_channel_position(names: Sequence[str | None] | None) -> int | None:
    """Where a file's named channel axis is when it is not last, in a 2D image or 3D stack ((C, Y, X) or
    (Z, C, Y, X), as Fiji saves every multichannel image); else None."""
    if names is None or len(names) not in (3, 4) or names.count("c") != 1 or names[-1] == "c":
        return None
    return names.index("c")


def named_channels_last(path: str | Path, image: object) -> object:
    """A TIFF's pixels (read whole, in the file's order) with the channel axis its metadata names moved last, as a
    pyramidal TIFF is read (:func:`_open_tiff`): a Fiji composite (C, Y, X) was read as a stack of 2 planes, and a
    (Z, C, Y, X) hyperstack as a time-lapse. For runs given no channel axis (a given one counts in the file's order);
    any other input as it is."""
    position = moved_channel_position(path, image)
    return image if position is None else np.ascontiguousarray(np.moveaxis(image, position, -1))


def moved_channel_position(path: str | Path, image: object) -> int | None:
    """The file's position of the channel axis :func:`named_channels_last` moves last in ``image`` (read from
    ``path``; the same before and after the move), None when it moves nothing."""
    if not isinstance(image, np.ndarray):
        return None
    names = tiff_axis_names(path)
    position = named_channel_position(names)
    return None if position is None or len(names) != image.ndim else position


def read_channel_axis(path: str | Path, channel_axis: int | None) -> int | None:
    """A channel axis given in the file's own order (an OME-Zarr's ``c`` comes before ``y`` and ``x``), as the image
    is read: a lazily read pyramid's levels have their channels last (-1; None when its one channel was dropped), so
    the file's order must not be applied to them; any other file is read in its own order: ``channel_axis`` itself.
    The one mapping of every command (segment, oneshot, text, register)."""
    from .multiscale import is_lazy_image, open_multiscale  # lazy: multiscale imports this module

    if channel_axis is None or not is_lazy_image(path):
        return channel_axis
    pyramid = open_multiscale(path, keep_time=True)  # its axes alone: a time-lapse of volumes' are read too
    axes = pyramid.source_axes
    if not -len(axes) <= channel_axis < len(axes) or axes[channel_axis] != "c":
        named = ", ".join(f"{k}: {a}" for k, a in enumerate(axes))
        raise PromptsegError(
            f"{path}: channel axis {channel_axis} is not its channel axis; its axes are ({named})"
            + (f": give {axes.index('c')}, or none (its channels are named)" if "c" in axes else ", no channels")
        )
    return -1 if pyramid.axes.endswith("c") else None


def read_image_named(path: str | Path, channel_axis: int | None = None, *, keep_time: bool = False) -> object:
    """:func:`.images.read_image`, with the channel axis an OME or ImageJ TIFF names moved last
    (:func:`named_channels_last`) when no ``channel_axis`` is given (a given one counts in the file's order): how every
    command reads an image file (batch targets, one-shot references, library entries, registration pairs, training
    rows), so a Fiji composite (C, Y, X) is one multichannel image to all of them, not a stack of C planes to some.
    ``keep_time``: a lazily read time-lapse of volumes is opened whole (the commands' --time takes one time point)."""
    image = read_image(path, keep_time=keep_time)
    return named_channels_last(path, image) if channel_axis is None else image


def time_lapse_channels_last(path: str | Path, image: object, channel_axis: int | None) -> tuple[object, int | None]:
    """A (T, Z, Y, X, C) time-lapse of volumes as the commands' --time takes it, from a 5-axis TIFF read whole in its
    own order: the channel axis given (``channel_axis``, in the file's order) or the one its metadata names (an
    ImageJ hyperstack's TZCYX) moved last. Returns the image and its channel axis as read (-1). Any other input as
    it is (a pyramid's channels are last already). Refused naming the file: a given axis the file's names say is no
    channel axis, the time axis, and an unnamed 5-axis array whose last axis holds more than 4 values."""
    if not isinstance(image, np.ndarray) or image.ndim != 5:
        return image, channel_axis
    names = tiff_axis_names(path)
    names = names if names is not None and len(names) == 5 else None
    named = names.index("c") if names is not None and names.count("c") == 1 else None
    if channel_axis is not None:
        if not -5 <= channel_axis < 5:
            raise PromptsegError(f"{path}: channel axis {channel_axis} is outside its 5 axes {image.shape}")
        axis = channel_axis % 5
        if names is not None and names[axis] != "c":
            listed = ", ".join(f"{k}: {a}" for k, a in enumerate(names))
            raise PromptsegError(
                f"{path}: channel axis {channel_axis} is not its channel axis; its axes are ({listed})"
                + (f": give {named}, or none (its channels are named)" if named is not None else ", no channels")
            )
        if axis == 0:
            raise PromptsegError(
                f"{path}: the first axis of a time-lapse of volumes holds its time points, not channels; its other "
                "axes are read as Z, Y, X and the channel axis given"
            )
    elif named is not None:
        axis = named
    elif image.shape[-1] <= 4:  # channels last, as an unnamed (T, Z, Y, X, C) array is read
        axis = 4
    else:
        raise PromptsegError(
            f"{path}: a 5-axis array of shape {image.shape} whose file names no axis; give the axis of its channels "
            "(--channel-axis, in the file's order): the others are read as T, Z, Y, X"
        )
    return (image if axis == 4 else np.moveaxis(image, axis, -1)), -1
