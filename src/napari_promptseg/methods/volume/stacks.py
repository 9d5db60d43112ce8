"""Reading 3D stacks (Z, Y, X[, C]) and their labels: axes, channels, planes, finite values; the words that name a
plane in warnings. No Qt, no napari."""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable, Sequence

import numpy as np

from ...errors import PromptsegError
from ...models.preprocessing import ACCEPTED_SHAPES, SPLIT_TIME_POINTS, full_resolution, is_lazy, read_axes


def as_stack(
    image: object, *, channel_axis: int | None = None, name: str = "image", axes: str | None = None
) -> tuple[object, list[str]]:
    """``image`` as a (Z, Y, X) or (Z, Y, X, C) stack (channels last), or ``None`` for a single 2D image, and
    warnings about how it was read.

    3D arrays are 2D images when their last axis holds colours or channels (1-4 values; 2 only with at least 8 px
    per side, as :func:`...models.preprocessing.as_channels_last` reads them), when ``channel_axis`` is given, or
    when their planes would be too thin to be images (under 8 px: channels last, which the 2D functions ask about);
    any other 3D array is a stack of planes along its first axis. 4D arrays are stacks with channels last or at
    ``channel_axis``. Dask arrays stay lazy; zarr arrays are read lazily too, and a list or tuple of planes is
    stacked. ``axes``: the input's axis order when its file's metadata names it (e.g. "zyx" of an OME-Zarr, see
    :class:`...io.multiscale.MultiscaleImage`); a first axis named z is planes by the file's word, without the
    caution that a few planes might be channels; a 4D file's named channel axis (ZCYX) is its channel axis.
    """
    image = full_resolution(image, planes=True)  # a 3D pyramid: its full-resolution stack
    planes_given = isinstance(image, (list, tuple))  # a stack by the caller's word: no "read as a stack" caution
    if planes_given:
        image = _from_planes(image, name)
    image, channel_axis, axes = _without_leading_singletons(image, channel_axis, axes)
    shape = tuple(np.shape(image))
    ndim = len(shape)
    if ndim == 2:
        return None, []
    if ndim == 3:
        colours = shape[-1] in (1, 3, 4) or (shape[-1] == 2 and min(shape[:2]) >= 8)
        if channel_axis is not None or colours or min(shape[1:]) < 8:
            return None, []
        warnings = []
        # one plane is one channel too: nothing to caution
        if 1 < shape[0] <= 4 and not planes_given and not (axes or "").startswith("z"):  # nor by the file's
            warnings.append(
                f"{name}: read as a stack of {shape[0]} planes of {shape[1]}x{shape[2]} pixels; if the first axis "
                "holds channels, say so: channel_axis=0 (CLI: --channel-axis 0; the Interactive, One-shot, Text and "
                "Registration widgets: channel axis 0)"
            )
        return image, warnings
    if ndim == 4:
        if channel_axis is None:
            channel_axis = named_channel_axis(axes)
        if channel_axis is not None:
            if not -4 <= channel_axis < 4:
                raise PromptsegError(f"{name}: channel_axis {channel_axis} out of range for shape {shape}")
            axis = channel_axis % 4
            if axis == 0:
                raise PromptsegError(f"{name}: the first axis of a (Z, Y, X, C) stack holds the planes, not channels")
            return _lazy_if_foreign(image).transpose([a for a in range(4) if a != axis] + [axis]), []
        if shape[-1] <= 4:
            return image, []
        # (T, Z, Y, X) or (Z, C, Y, X): no last axis of channels
        raise PromptsegError(
            f"{name}: 4D array of shape {shape}, its axes read as {read_axes(shape)}: a time-lapse of 3D stacks, or "
            f"a stack with its channels on an axis other than the last. Accepted: {ACCEPTED_SHAPES}. "
            f"{SPLIT_TIME_POINTS}; for channels, say which axis holds them: channel_axis (CLI: --channel-axis; the "
            "Interactive, One-shot and Text widgets take a (C, Z, Y, X) layer's first axis: channel axis 0)"
        )
    raise PromptsegError(
        f"{name}: {ndim}D array of shape {shape}, its axes read as {read_axes(shape)}. Accepted: {ACCEPTED_SHAPES}. "
        f"{SPLIT_TIME_POINTS}"
    )


def time_point_volume(
    image: object, time_point: object, *, name: str = "image", channel_axis: int | None = None
) -> tuple[object, int | None]:
    """The (Z, Y, X[, C]) volume at ``time_point`` of a (T, Z, Y, X) time-lapse of volumes ((T, Z, Y, X, C) with
    channels last or at ``channel_axis``), as the Interactive widget holds the time point shown, and the channel
    axis of that volume (``channel_axis`` one axis earlier). Nothing is read (a lazy array stays lazy). Refused
    naming ``name``: an array of other dimensions, a 4D array whose last axis reads as channels (a (Z, Y, X, C)
    stack, no time-lapse), or a time point outside the time-lapse."""
    shape = tuple(np.shape(image))
    ndim = len(shape)
    try:
        if isinstance(time_point, (bool, np.bool_)):
            raise TypeError
        t = operator.index(time_point)
    except TypeError:
        raise PromptsegError(f"{name}: the time point must be a whole number, got {time_point!r}") from None
    channels_last = ndim == 4 and channel_axis is None and shape[-1] <= 4
    if ndim not in (4, 5) or channels_last or (ndim == 4 and channel_axis is not None):
        why = " (its last axis of <= 4 values reads as channels: a (Z, Y, X, C) stack)" if channels_last else ""
        raise PromptsegError(
            f"{name}: a time point ({t}) is taken from a time-lapse of volumes (T, Z, Y, X[, C]); this is a {ndim}D "
            f"array of shape {shape}{why}, its axes read as {read_axes(shape)}: give it without a time point"
        )
    if channel_axis is not None and channel_axis % ndim == 0:
        raise PromptsegError(
            f"{name}: the first axis of a (T, Z, Y, X, C) time-lapse holds its time points, not channels"
        )
    if not 0 <= t < shape[0]:
        raise PromptsegError(
            f"{name}: time point {t} is outside the time-lapse's {shape[0]} time points (0-{shape[0] - 1})"
        )
    if channel_axis is not None:
        channel_axis = channel_axis % ndim - 1
    return image[t], channel_axis


def reference_plane(
    marks: np.ndarray,
    planes: int,
    chosen: int | None,
    *,
    labels_name: str,
    image_name: str,
    stack_axis: str | None = None,
    chosen_as: str = "the displayed {word} {plane}",
    to_choose: str = "move the slider to the {word} to use",
    explicit: bool = True,
) -> int:
    """Which plane of a stack of ``planes`` planes a reference's labels ``marks`` ((Z, Y, X), or one plane's (Y, X))
    mark as the one-shot reference: the one plane they mark, else ``chosen`` (the Interactive and One-shot widgets'
    displayed plane, the CLI's --reference-plane), which must be one they mark (any, for a plane's labels). A choice
    needed and not given, or outside the stack, or labels on other planes only, are refused naming the labels
    (``labels_name``) and the image (``image_name``), the choice as ``chosen_as`` and the way on as ``to_choose``
    ({word}: plane, a time-lapse's (``stack_axis`` "t") frame; {plane}: ``chosen``). ``explicit`` False: ``chosen``
    is only where the user stands (a widget's slider), and labels on one plane mark that plane wherever it is."""
    word = plane_word(stack_axis)
    if chosen is not None and not 0 <= chosen < planes:
        raise PromptsegError(
            f"{chosen_as.format(word=word, plane=chosen)} is outside the {planes} {word}s of {image_name} "
            f"(0-{planes - 1})"
        )
    marked = np.flatnonzero(marks.reshape(len(marks), -1).any(axis=1)) if marks.ndim == 3 else None
    if marked is not None and len(marked) == 1 and (chosen in (None, int(marked[0])) or not explicit):
        return int(marked[0])
    if marked is not None and len(marked) and chosen not in marked:
        listed = ", ".join(map(str, marked[:8])) + (", ..." if len(marked) > 8 else "")
        which = "" if chosen is None else f", none of them {chosen_as.format(word=word, plane=chosen)}"
        raise PromptsegError(
            f"{labels_name} mark {word}{'s' if len(marked) > 1 else ''} {listed} of {image_name}{which}: "
            f"{to_choose.format(word=word)}"
        )
    if chosen is None:  # a plane's labels over a stack (or no labelled plane): which plane they are is the user's
        raise PromptsegError(
            f"{labels_name} hold one {word}'s labels {tuple(marks.shape[-2:])} and {image_name} is a stack of {planes} "
            f"{word}s: {to_choose.format(word=word)}"
        )
    return chosen


def _without_leading_singletons(
    image: object, channel_axis: int | None, axes: str | None
) -> tuple[object, int | None, str | None]:
    """An array without its leading axes of one value ((1, Z, Y, X), (1, 1, Z, Y, X) as converters save a stack: it
    was refused as a time-lapse of "T=1"), down to 3 axes; ``channel_axis`` (kept) and ``axes`` follow."""
    ndim, dropped = np.ndim(image), 0
    while ndim - dropped > 3 and np.shape(image)[0] == 1 and channel_axis not in (dropped, dropped - ndim):
        image, dropped = image[0], dropped + 1
    if dropped and channel_axis is not None and channel_axis >= 0:
        channel_axis -= dropped
    if dropped and axes is not None and len(axes) == ndim:
        axes = axes[dropped:]
    return image, channel_axis, axes


def named_channel_axis(axes: str | None) -> int | None:
    """The channel axis ``axes`` names in a 4D stack of planes first (ZCYX, as Fiji saves a hyperstack), else None."""
    if axes is None or len(axes) != 4 or axes[0] != "z" or axes.count("c") != 1:
        return None
    return axes.index("c")


def _from_planes(planes: Sequence[object], name: str) -> object:
    """A list or tuple of planes as one array (a dask array when any plane is lazy, so nothing is read)."""
    if not planes:
        raise PromptsegError(f"{name}: an empty sequence of planes")
    shapes = {tuple(np.shape(p)) for p in planes}
    if len(shapes) > 1:
        raise PromptsegError(f"{name}: planes of different shapes {sorted(shapes)}; every plane needs one shape")
    if any(is_lazy(p) for p in planes):
        import dask.array as da

        return da.stack([p if is_lazy(p) else da.from_array(np.asarray(p)) for p in planes])
    return np.stack([np.asarray(p) for p in planes])


def _lazy_if_foreign(image: object) -> object:
    """numpy and dask arrays as they are; any other array (a zarr.Array, which cannot transpose) as a lazy dask
    array over it, so a big stack is still read plane by plane."""
    if isinstance(image, np.ndarray) or is_lazy(image):
        return image
    import dask.array as da

    return da.from_array(image, chunks=getattr(image, "chunks", "auto"))


def labels_shape(image: object, *, channel_axis: int | None = None) -> tuple[int, ...]:
    """The shape of an image's labels: (Z, Y, X) for a stack, else (Y, X) (also for an input whose shape is no
    image's: its first two axes)."""
    try:
        stack = as_stack(image, channel_axis=channel_axis)[0]
    except PromptsegError:
        stack = None
    return tuple(np.shape(stack)[:3]) if stack is not None else tuple(np.shape(image)[:2])


def _stack(
    volume: object, channel_axis: int | None, name: str, axes: str | None = None, stack_axis: str | None = None
) -> tuple[object, list[str]]:
    vol, warnings = as_stack(volume, channel_axis=channel_axis, name=name, axes=axes)
    if vol is None:
        raise PromptsegError(f"{name}: a 2D image of shape {tuple(np.shape(volume))}; expected a (Z, Y, X[, C]) stack")
    check_finite(vol, name, stack_axis)
    return vol, warnings


def check_finite(stack: object, name: str = "stack", stack_axis: str | None = None) -> None:
    """Refuse an in-memory float stack with NaN or infinite values, naming the planes (a time-lapse's, ``stack_axis``
    "t": frames), before any plane is segmented (found on the way, it would throw away the planes done before). A
    lazy stack is checked plane by plane as it is read: reading it whole here would cost a second pass over the
    disk."""
    if not isinstance(stack, np.ndarray) or stack.dtype.kind not in "fc":
        return
    bad = [z for z in range(stack.shape[0]) if not np.isfinite(stack[z]).all()]  # a plane at a time: memory
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise PromptsegError(
            f"{name}: NaN or infinite values on {plane_word(stack_axis)}(s) {shown} of {stack.shape[0]}; fill or mask "
            "them first"
        )


def _plane_index(plane: object, n: int, name: str) -> int:
    """``plane`` as an index into ``n`` planes: a whole number (not a float, not a bool) within the stack."""
    try:
        if isinstance(plane, (bool, np.bool_)):
            raise TypeError
        z = operator.index(plane)
    except TypeError:
        raise PromptsegError(f"{name}: plane must be a whole number (a plane index), got {plane!r}") from None
    if not 0 <= z < n:
        raise PromptsegError(f"{name}: plane {z} is outside the stack's {n} planes (0-{n - 1})")
    return z


def _as_ids(plane: object, name: str, *, components: bool) -> np.ndarray:
    """A 2D method's answer as object ids (int64, 0 background): integer labels keep their ids (values <= 0 are
    background); bool and float masks become their connected components when ``components`` (else a mask is
    object 1); float labels must hold whole numbers."""
    from ...io.images import is_mask, label_objects, mask_pixels

    arr = np.asarray(plane)
    if arr.dtype.kind not in "biuf":
        raise PromptsegError(f"{name}: gave {arr.dtype} values; expected labels (integers) or a mask (bool/float)")
    if arr.dtype.kind in "bf":
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise PromptsegError(f"{name}: gave NaN or infinite values; expected labels or a mask")
        # a soft mask (a probability map) is its pixels of 0.5 and up: every one above 0 was the whole plane
        arr = label_objects(arr) if components else mask_pixels(arr) if is_mask(arr) else arr
        if arr.dtype.kind == "f" and not np.array_equal(arr, np.round(arr)):
            raise PromptsegError(f"{name}: gave fractional values above 1; expected labels (whole numbers) or a mask")
    return np.where(arr > 0, arr, 0).astype(np.int64)


def plane_warnings(per_plane: Iterable[tuple[int, str]], name: str = "", stack_axis: str | None = None) -> list[str]:
    """The warnings of a stack's planes, each naming its planes once: ``per_plane`` holds (plane, a 2D method's
    warning). A method given the plane's name ("stack.tif plane 3", a time-lapse's "movie.tif frame 3") begins its
    warnings with it; that naming is taken apart, so "stack.tif plane 3: box 1 ..." reads "stack.tif: plane 3: box 1
    ...", not "plane 3: stack.tif plane 3: box 1 ...". A warning several planes gave alike is one, listing them
    ("stack.tif: planes 2, 5-7: ..."), in the order the warnings first came. ``name``: the stack's, for methods that
    begin their warnings with it; ``stack_axis``: "t" for a time-lapse, whose planes are said to be frames."""
    word = plane_word(stack_axis)
    planes: dict[tuple[str, str], list[int]] = {}
    for z, message in per_plane:
        planes.setdefault(_named_plane(z, message, name, word), []).append(z)
    return [
        f"{head}: {plane_list(zs, stack_axis)}: {rest}" if head else f"{plane_list(zs, stack_axis)}: {rest}"
        for (head, rest), zs in planes.items()
    ]


def plane_word(stack_axis: str | None) -> str:
    """What one plane of a stack is called: a time-lapse's (``stack_axis`` "t") a frame, any other's a plane."""
    return "frame" if stack_axis == "t" else "plane"


def stack_extent(count: int, stack_axis: str | None) -> str:
    """ "3 plane(s) of one stack", a time-lapse's "3 frame(s) of one time-lapse": how the widgets' summaries count a
    stack's planes (the One-shot's and the Text widget's said it in two ways)."""
    return f"{count} {plane_word(stack_axis)}(s) of one {'time-lapse' if stack_axis == 't' else 'stack'}"


def plane_list(planes: Iterable[int], stack_axis: str | None = None) -> str:
    """ "plane 3", "planes 2, 5-7" (runs of three or more as a range); a time-lapse's "frame 3", "frames 2, 5-7"."""
    zs = sorted(set(planes))
    runs: list[list[int]] = []
    for z in zs:
        if runs and z == runs[-1][-1] + 1:
            runs[-1].append(z)
        else:
            runs.append([z])
    parts = [f"{run[0]}-{run[-1]}" if len(run) >= 3 else ", ".join(map(str, run)) for run in runs]
    return f"{plane_word(stack_axis)}{'s' if len(zs) > 1 else ''} {', '.join(parts)}"


def _named_plane(z: int, message: str, name: str, word: str = "plane") -> tuple[str, str]:
    """(whose, what): a plane's warning without its naming of plane ``z`` ("NAME plane Z: ", "NAME: plane Z: ",
    "plane Z: "; ``word`` "frame": a time-lapse's "NAME frame Z: ") or of the stack (``name``), and the name it
    began with ("" when none)."""
    found = re.match(rf"(?:(?P<head>.*?)[:\s]\s*)?\b{word} {z}: (?P<rest>.*)", message, re.S)
    if found:
        return (found["head"] or "").rstrip(": "), found["rest"]
    if name and message.startswith(f"{name}: "):
        return name, message[len(name) + 2 :]
    return "", message
