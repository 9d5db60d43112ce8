"""3D stacks (Z, Y, X[, C]): plane by plane with object ids linked across planes, and propagation of prompted objects
through the stack.

Propagation follows micro-sam's volumetric annotator (``segment_mask_in_volume``): an object segmented on one plane
prompts its neighbour with its mask (the mask's box, grown a little since objects may widen; plus the mask's most
interior point for segmenters trained with points), and so on outwards in both directions until the object ends:
its mask vanishes, its overlap (IoU) with the previous plane's mask falls below a threshold, or the decoder's score
drops. All objects still alive on a plane are decoded together, so each plane is embedded once.
No Qt, no napari.
"""

from __future__ import annotations

import math
import operator
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..errors import CancelledError, NothingFoundError, PromptsegError
from ..models.preprocessing import (
    ACCEPTED_SHAPES,
    SPLIT_TIME_POINTS,
    Normalization,
    full_resolution,
    is_lazy,
    read_axes,
    to_numpy,
)
from ..models.protocols import PromptableSegmenter
from ..tiling import WorkingScale, box_object_size

ProgressCallback = Callable[[float, str], None]

#: an object stops where its mask overlaps the previous plane's by less than this (IoU)
STOP_IOU = 0.5
#: ... or where the decoder's own quality estimate (predicted IoU) falls below this
MIN_SCORE = 0.5
#: ... or where its mask shrinks below this fraction of its seed-plane area
MIN_AREA_FRACTION = 0.02
#: the box carried to the next plane is the mask's box grown by this fraction of its side on every side
BOX_MARGIN = 0.1
#: plane by plane: objects of consecutive planes overlapping at least this much (IoU) are one object
LINK_IOU = 0.3


def as_stack(
    image: object, *, channel_axis: int | None = None, name: str = "image", axes: str | None = None
) -> tuple[object, list[str]]:
    """``image`` as a (Z, Y, X) or (Z, Y, X, C) stack (channels last), or ``None`` for a single 2D image, and
    warnings about how it was read.

    3D arrays are 2D images when their last axis holds colours or channels (1-4 values; 2 only with at least 8 px
    per side, as :func:`..models.preprocessing.as_channels_last` reads them), when ``channel_axis`` is given, or
    when their planes would be too thin to be images (under 8 px: channels last, which the 2D functions ask about);
    any other 3D array is a stack of planes along its first axis. 4D arrays are stacks with channels last or at
    ``channel_axis``. Dask arrays stay lazy; zarr arrays are read lazily too, and a list or tuple of planes is
    stacked. ``axes``: the input's axis order when its file's metadata names it (e.g. "zyx" of an OME-Zarr, see
    :class:`..io.multiscale.MultiscaleImage`); a first axis named z is planes by the file's word, without the
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
                "holds channels, say so: channel_axis=0 (CLI: --channel-axis 0; widgets: channel axis 0)"
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
            f"{SPLIT_TIME_POINTS}; for channels, say which axis holds them: channel_axis (CLI: --channel-axis; "
            "widgets: channel axis)"
        )
    raise PromptsegError(
        f"{name}: {ndim}D array of shape {shape}, its axes read as {read_axes(shape)}. Accepted: {ACCEPTED_SHAPES}. "
        f"{SPLIT_TIME_POINTS}"
    )


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


def _stack(volume: object, channel_axis: int | None, name: str, axes: str | None = None) -> tuple[object, list[str]]:
    vol, warnings = as_stack(volume, channel_axis=channel_axis, name=name, axes=axes)
    if vol is None:
        raise PromptsegError(f"{name}: a 2D image of shape {tuple(np.shape(volume))}; expected a (Z, Y, X[, C]) stack")
    check_finite(vol, name)
    return vol, warnings


def check_finite(stack: object, name: str = "stack") -> None:
    """Refuse an in-memory float stack with NaN or infinite values, naming the planes, before any plane is
    segmented (found on the way, it would throw away the planes done before). A lazy stack is checked plane by
    plane as it is read: reading it whole here would cost a second pass over the disk."""
    if not isinstance(stack, np.ndarray) or stack.dtype.kind not in "fc":
        return
    bad = [z for z in range(stack.shape[0]) if not np.isfinite(stack[z]).all()]  # a plane at a time: memory
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise PromptsegError(
            f"{name}: NaN or infinite values on plane(s) {shown} of {stack.shape[0]}; fill or mask them first"
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
    from ..io.images import is_mask, label_objects

    arr = np.asarray(plane)
    if arr.dtype.kind not in "biuf":
        raise PromptsegError(f"{name}: gave {arr.dtype} values; expected labels (integers) or a mask (bool/float)")
    if arr.dtype.kind in "bf":
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise PromptsegError(f"{name}: gave NaN or infinite values; expected labels or a mask")
        arr = label_objects(arr) if components else (arr > 0) if is_mask(arr) else arr
        if arr.dtype.kind == "f" and not np.array_equal(arr, np.round(arr)):
            raise PromptsegError(f"{name}: gave fractional values above 1; expected labels (whole numbers) or a mask")
    return np.where(arr > 0, arr, 0).astype(np.int64)


def plane_warnings(per_plane: Iterable[tuple[int, str]], name: str = "") -> list[str]:
    """The warnings of a stack's planes, each naming its planes once: ``per_plane`` holds (plane, a 2D method's
    warning). A method given the plane's name ("stack.tif plane 3") begins its warnings with it; that naming is taken
    apart, so "stack.tif plane 3: box 1 ..." reads "stack.tif: plane 3: box 1 ...", not "plane 3: stack.tif plane
    3: box 1 ...". A warning several planes gave alike is one, listing them ("stack.tif: planes 2, 5-7: ..."), in
    the order the warnings first came. ``name``: the stack's, for methods that begin their warnings with it."""
    planes: dict[tuple[str, str], list[int]] = {}
    for z, message in per_plane:
        planes.setdefault(_named_plane(z, message, name), []).append(z)
    return [
        f"{head}: {plane_list(zs)}: {rest}" if head else f"{plane_list(zs)}: {rest}"
        for (head, rest), zs in planes.items()
    ]


def plane_list(planes: Iterable[int]) -> str:
    """ "plane 3", "planes 2, 5-7" (runs of three or more as a range)."""
    zs = sorted(set(planes))
    runs: list[list[int]] = []
    for z in zs:
        if runs and z == runs[-1][-1] + 1:
            runs[-1].append(z)
        else:
            runs.append([z])
    parts = [f"{run[0]}-{run[-1]}" if len(run) >= 3 else ", ".join(map(str, run)) for run in runs]
    return f"plane{'s' if len(zs) > 1 else ''} {', '.join(parts)}"


def _named_plane(z: int, message: str, name: str) -> tuple[str, str]:
    """(whose, what): a plane's warning without its naming of plane ``z`` ("NAME plane Z: ", "NAME: plane Z: ",
    "plane Z: ") or of the stack (``name``), and the name it began with ("" when none)."""
    found = re.match(rf"(?:(?P<head>.*?)[:\s]\s*)?\bplane {z}: (?P<rest>.*)", message, re.S)
    if found:
        return (found["head"] or "").rstrip(": "), found["rest"]
    if name and message.startswith(f"{name}: "):
        return name, message[len(name) + 2 :]
    return "", message


@dataclass
class StackResult:
    """Instance labels of a stack, one id per object across its planes."""

    labels: np.ndarray  # (Z, Y, X) uint16/uint32, 0 background
    extents: dict[int, tuple[int, int]]  # id -> first and last plane
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def objects(self) -> int:
        return len(self.extents)


def segment_stack(
    volume: object,
    segment_plane: Callable[[np.ndarray, int], object] | Callable[[np.ndarray], object],
    *,
    channel_axis: int | None = None,
    link_iou: float = LINK_IOU,
    name: str = "stack",
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
    axes: str | None = None,
) -> StackResult:
    """Segment every plane of a (Z, Y, X[, C]) stack with ``segment_plane(plane, z)``, or ``segment_plane(plane)``
    when it takes one required argument (any 2D method: it returns labels, or a result with ``.labels`` and
    ``.warnings``; :func:`plane_function`) and link the planes' objects: an object overlapping one
    of the previous plane by IoU >= ``link_iou`` (best match first, one to one) keeps its id. Integer labels keep
    their objects (values <= 0 are background); a bool or float mask's objects are its connected components.
    ``volume`` may also be a list of planes; a float stack in memory with NaN/inf is refused before any work.
    ``axes``: the input's axis order when its file names it (:func:`as_stack`).

    Example: ``segment_stack(vol, lambda plane: segment_text(plane, "nuclei"))``.
    """
    segment_plane = plane_function(segment_plane)
    vol, warnings = _stack(volume, channel_axis, name, axes)
    report = progress or (lambda fraction, message: None)
    n = vol.shape[0]
    labels = np.zeros(vol.shape[:3], np.uint32)
    next_id = 1
    per_plane: list[tuple[int, str]] = []  # said once at the end: a warning every plane gives is one warning
    t0 = time.perf_counter()
    for z in range(n):
        if cancel is not None and cancel():
            raise CancelledError("cancelled")
        report(z / n, f"{name}: plane {z + 1}/{n}")
        out = segment_plane(to_numpy(vol[z]), z)
        per_plane += [(z, message) for message in getattr(out, "warnings", [])]
        plane = np.asarray(getattr(out, "labels", out))
        if plane.shape != labels.shape[1:]:
            raise PromptsegError(
                f"{name}: plane {z} gave labels of shape {plane.shape}, not the plane's {labels.shape[1:]}"
            )
        ids = _as_ids(plane, f"{name}: plane {z}", components=True)
        # ids 0..M: a method's sparse ids (e.g. 10**9) would otherwise size the lookup table of _link
        dense = np.unique(np.concatenate([[0], ids.ravel()]), return_inverse=True)[1][1:].reshape(ids.shape)
        labels[z], next_id = _link(labels[z - 1] if z else None, dense, next_id, link_iou)
    report(1.0, f"{name}: {next_id - 1} object(s)")
    warnings += plane_warnings(per_plane, name)
    return StackResult(_compact(labels), object_extents(labels), {"total_s": time.perf_counter() - t0}, warnings)


def plane_function(
    segment_plane: Callable[[np.ndarray, int], object] | Callable[[np.ndarray], object],
) -> Callable[[np.ndarray, int], object]:
    """``segment_plane`` called as ``(plane, z)``: a function of two required positional arguments (or ``*args``)
    gets z too, any other the plane alone (``lambda plane: ...``, failed with "takes 1 positional argument but 2 were
    given"; z must not land in a parameter with a default, e.g. ``threshold_otsu(image, nbins=256)``'s)."""
    import inspect

    if not callable(segment_plane):
        raise PromptsegError(f"segment_plane: expected a function of a plane, got {type(segment_plane).__name__}")
    try:
        parameters = inspect.signature(segment_plane).parameters.values()
    except (TypeError, ValueError):  # no readable signature (some builtins): both, as always
        return segment_plane  # type: ignore[return-value]
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = sum(p.kind in positional and p.default is inspect.Parameter.empty for p in parameters)
    if required >= 2 or any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return segment_plane  # type: ignore[return-value]
    return lambda plane, z: segment_plane(plane)  # type: ignore[call-arg]


def _link(previous: np.ndarray | None, plane: np.ndarray, next_id: int, min_iou: float) -> tuple[np.ndarray, int]:
    """``plane``'s objects renumbered: the id of the previous plane's object each overlaps best (IoU >= min_iou, one
    to one, best pairs first), else a new id from ``next_id``."""
    local = np.unique(plane[plane > 0])
    mapping: dict[int, int] = {}
    if previous is not None and len(local):
        for a, b, _ in _pairs_by_iou(previous, plane, min_iou):
            if b not in mapping and a not in mapping.values():
                mapping[b] = a
    for b in local:
        if int(b) not in mapping:
            mapping[int(b)] = next_id
            next_id += 1
    lut = np.zeros(int(plane.max(initial=0)) + 1, np.uint32)
    for b, a in mapping.items():
        lut[b] = a
    return lut[plane], next_id


def _pairs_by_iou(a: np.ndarray, b: np.ndarray, min_iou: float) -> list[tuple[int, int, float]]:
    """Object pairs (id in a, id in b, IoU) with IoU >= min_iou, best first."""
    both = (a > 0) & (b > 0)
    if not both.any():
        return []
    a_ids, b_ids = a[both].astype(np.int64), b[both].astype(np.int64)
    width = int(b_ids.max()) + 1
    keys, inter = np.unique(a_ids * width + b_ids, return_counts=True)
    area_a = np.bincount(a.ravel().astype(np.int64))
    area_b = np.bincount(b.ravel().astype(np.int64))
    pa, pb = keys // width, keys % width
    iou = inter / (area_a[pa] + area_b[pb] - inter)
    order = np.argsort(-iou, kind="stable")
    return [(int(pa[i]), int(pb[i]), float(iou[i])) for i in order if iou[i] >= min_iou]


def _compact(labels: np.ndarray) -> np.ndarray:
    return labels.astype(np.uint16) if labels.max(initial=0) < 2**16 else labels


#: labels with ids up to this have their extents found by ``ndimage.find_objects`` (a slot per id up to the largest)
DENSE_IDS = 2**20


def object_extents(labels: np.ndarray) -> dict[int, tuple[int, int]]:
    """First and last plane of every object of (Z, Y, X) labels, by increasing id. Sparse ids (a seed's id of 10**9
    from a user's labels) are found plane by plane among the ids present: ``find_objects`` would keep a slot for
    every id up to the largest (seconds and gigabytes)."""
    if labels.max(initial=0) <= DENSE_IDS:
        slices = ndimage.find_objects(labels)
        return {k: (int(sl[0].start), int(sl[0].stop - 1)) for k, sl in enumerate(slices, start=1) if sl is not None}
    extents: dict[int, tuple[int, int]] = {}
    for z in range(labels.shape[0]):
        for k in np.unique(labels[z]):
            if k > 0:
                first = extents.get(int(k), (z, z))[0]
                extents[int(k)] = (first, z)
    return dict(sorted(extents.items()))


@dataclass
class PropagationResult:
    """Objects carried from a seed plane through the stack."""

    labels: np.ndarray  # (Z, Y, X) uint16/uint32; ids are the seed's (boxes: 1..N in box order)
    seed_plane: int
    extents: dict[int, tuple[int, int]]  # id -> first and last plane
    stops: dict[int, dict[str, str]]  # id -> {"up": why it ended above the seed, "down": below}
    # id -> mean score over its planes: the decoder's, and the seed method's on the seed plane when known (else
    # over the decoded planes only; None when the object was decoded on no other plane)
    scores: dict[int, float | None]
    scale: WorkingScale | None = None
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def objects(self) -> int:
        return len(self.extents)


def propagate_through_stack(
    volume: object,
    plane: int,
    *,
    boxes: Sequence[Sequence[float]] = (),
    positive_points: Sequence[Sequence[float]] = (),
    negative_points: Sequence[Sequence[float]] = (),
    labels: np.ndarray | None = None,
    seed_scores: Mapping[int, float] | None = None,
    segmenter: PromptableSegmenter | None = None,
    object_size: float | None = None,
    channel_axis: int | None = None,
    channels: list[int] | None = None,
    normalize: Normalization = "auto",
    stop_iou: float = STOP_IOU,
    min_score: float = MIN_SCORE,
    name: str = "stack",
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
    axes: str | None = None,
) -> PropagationResult:
    """Segment objects on ``plane`` of a (Z, Y, X[, C]) stack and carry each through the stack in both directions.

    The seed is ``boxes`` (x0, y0, x1, y1 on that plane; one object each), refined by ``positive_points`` and
    ``negative_points`` (x, y on that plane; grouped with the boxes as
    :func:`..interactive.segment_prompts` groups them: positive points outside every box are one more object), or
    ``labels`` (not both), a (Y, X) label image of that plane (or the stack's (Z, Y, X) labels, of which that plane
    is read) from any method (one-shot, text, a user's drawing; ids kept, values <= 0 background, a bool mask is
    object 1) with, when the method gives them, ``seed_scores`` (id -> score). No object on the seed plane raises
    :class:`NothingFoundError`. On every further plane each live object is
    prompted with the previous plane's mask (see the module's docstring) and ends where its IoU with that mask falls
    below ``stop_iou``, its score below ``min_score``, or its area below a fiftieth of its seed area. The working
    scale stays the seed's (``object_size`` or the boxes' size), so objects shrinking at their ends are seen alike.
    ``axes``: the input's axis order when its file names it (:func:`as_stack`).
    """
    from ..models import load_segmenter
    from .interactive import segment_prompts

    vol, warnings = _stack(volume, channel_axis, name, axes)
    n = vol.shape[0]
    plane = _plane_index(plane, n, name)
    # None is no prompt, as for segment (boxes=None beside labels=...)
    boxes, positive_points, negative_points = (
        () if p is None else p for p in (boxes, positive_points, negative_points)
    )
    if labels is not None and (len(boxes) or len(positive_points) or len(negative_points)):
        # one seed or the other: the labels won, and the boxes and points were dropped without a word
        raise PromptsegError(
            f"{name}: give the seed plane's objects as boxes and points, or as labels, not both (the prompts would "
            "not be used); to seed with both, segment the prompts and add their labels to yours"
        )
    if segmenter is None:
        segmenter = load_segmenter()
    report = progress or (lambda fraction, message: None)
    # as_stack moved the channels last (given, or named by the file)
    plane_channels = -1 if channel_axis is not None or named_channel_axis(axes) is not None else None
    timings: dict[str, float] = {}

    def segment(z: int, prompt_boxes, points, size, negative=()):
        result = segment_prompts(
            to_numpy(vol[z]),
            segmenter,
            boxes=prompt_boxes,
            positive_points=points,
            negative_points=negative,
            object_size=size,
            channel_axis=plane_channels,
            channels=channels,
            normalize=normalize,
            name=f"{name} plane {z}",
        )
        for key, seconds in result.timings.items():
            timings[key] = timings.get(key, 0.0) + seconds
        return result

    report(0.0, f"{name}: seed plane {plane}")
    scale = None
    if labels is not None:
        seed = np.asarray(full_resolution(labels))
        if seed.shape == tuple(vol.shape[:3]):
            # the stack's labels layer, (Z, Y, X) as napari holds it: its seed plane; refused before, though the
            # plane to take is the one given
            others = np.count_nonzero(seed) - np.count_nonzero(seed[plane])
            seed = seed[plane]
            if others:
                warnings.append(
                    f"{name}: the labels of the whole stack were given: plane {plane}'s labels seed the propagation, "
                    f"and the {others} labelled pixel(s) of other planes are not used"
                )
        if seed.shape != tuple(vol.shape[1:3]):
            raise PromptsegError(f"{name}: seed labels of shape {seed.shape} do not match a plane {vol.shape[1:3]}")
        seed = _as_ids(seed, f"{name}: seed labels", components=False)
        if seed.max(initial=0) > np.iinfo(np.uint32).max:  # would wrap onto other ids of the uint32 result
            raise PromptsegError(
                f"{name}: seed labels hold id {int(seed.max())}, above the largest id of the result "
                f"({np.iinfo(np.uint32).max}); number the objects from 1 (skimage.segmentation.relabel_sequential)"
            )
        seed = seed.astype(np.uint32)
        # a score only where the seed method gave one: a made-up 1.0 would hide an object that stopped at once
        known = {int(k): float(v) for k, v in (seed_scores or {}).items() if v is not None and np.isfinite(v)}
        seed_scores = {int(k): known.get(int(k)) for k in np.unique(seed[seed > 0])}
    elif len(boxes) or len(positive_points):
        result = segment(plane, boxes, positive_points, object_size, negative_points)
        seed, scale = result.labels.astype(np.uint32), result.scale
        seed_scores = {k + 1: float(s) for k, s in enumerate(result.scores)}
        warnings += plane_warnings(((plane, w) for w in result.warnings), name)
    else:
        raise PromptsegError(
            f"{name}: give boxes (or positive points) on plane {plane}, or that plane's labels, to propagate"
        )
    ids = [int(k) for k in np.unique(seed[seed > 0])]
    empty = sorted(set(seed_scores) - set(ids))
    if empty:
        warnings.append(f"{name}: object(s) {empty} have an empty mask on the seed plane and were not propagated")
    if not ids:  # an answer (nothing there), not bad input: callers give an empty result
        raise NothingFoundError(f"{name}: nothing to propagate: the seed plane {plane} has no object")
    # the seed's own working scale: boxes and the masks decoded from them differ in size (masks are tighter), and a
    # scale taken from the masks would decode the next plane at another scale than the seed (measured on identical
    # planes of a DSB image: 7 of 40 nuclei stopped at the first step, IoU 0.37-0.48)
    size = object_size or (scale.object_size if scale is not None else box_object_size(_boxes(seed, ids)))
    out = np.zeros(vol.shape[:3], np.uint32)
    out[plane] = seed
    seed_area = {k: int((seed == k).sum()) for k in ids}
    scores = {k: [seed_scores[k]] if seed_scores.get(k) is not None else [] for k in ids}
    stops: dict[int, dict[str, str]] = {k: {} for k in ids}
    done, total = 0, n - 1
    for direction, side in ((1, "up"), (-1, "down")):
        alive = {k: seed == k for k in ids}
        z = plane + direction
        while alive and 0 <= z < n:
            if cancel is not None and cancel():
                raise CancelledError("cancelled")
            done += 1
            report(done / max(total, 1), f"{name}: plane {z} ({len(alive)} object(s), {side} from {plane})")
            keys = list(alive)
            prompt_boxes = [_grown_box(alive[k], BOX_MARGIN) for k in keys]
            points = [_interior_point(alive[k]) for k in keys] if segmenter.points_reliable else []
            result = segment(z, prompt_boxes, points, size)
            for i, k in enumerate(keys):
                mask = result.labels == i + 1
                reason = _stop_reason(alive[k], mask, float(result.scores[i]), seed_area[k], stop_iou, min_score)
                if reason:
                    stops[k][side] = f"{reason} at plane {z}"
                    del alive[k]
                    continue
                out[z][mask] = k
                alive[k] = mask
                scores[k].append(float(result.scores[i]))
            z += direction
        for k in alive:
            stops[k][side] = "reached the end of the stack"
        done = n - 1 - plane  # the planes above count as done, however early the objects ended there
    report(1.0, f"{name}: {len(ids)} object(s) propagated")
    return PropagationResult(
        labels=_compact(out),
        seed_plane=plane,
        extents=object_extents(out),
        stops=stops,
        scores={k: float(np.mean(v)) if v else None for k, v in scores.items()},
        scale=scale,
        timings=timings,
        warnings=warnings,
    )


def _stop_reason(
    previous: np.ndarray, mask: np.ndarray, score: float, seed_area: int, stop_iou: float, min_score: float
) -> str | None:
    area = int(mask.sum())
    if area == 0 or area < MIN_AREA_FRACTION * seed_area:
        return "vanished"
    inter = int((previous & mask).sum())
    iou = inter / (int(previous.sum()) + area - inter)
    if iou < stop_iou:
        return f"IoU with the previous plane {_floor3(iou)} < {stop_iou}"
    if score < min_score:
        return f"score {_floor3(score)} < {min_score}"
    return None


def _floor3(value: float) -> str:
    """``value`` cut (not rounded) to 3 decimals: 0.4996 reads 0.499, never a 0.500 that contradicts "< 0.5"."""
    return f"{math.floor(value * 1000) / 1000:.3f}"


def _boxes(labels: np.ndarray, ids: Sequence[int]) -> np.ndarray:
    return np.array([_box(labels == k) for k in ids])


def _box(mask: np.ndarray) -> tuple[float, float, float, float]:
    rows, cols = np.nonzero(mask)
    return float(cols.min()), float(rows.min()), float(cols.max()), float(rows.max())


def _grown_box(mask: np.ndarray, margin: float) -> tuple[float, float, float, float]:
    """The mask's box (x0, y0, x1, y1) grown by ``margin`` of its side (at least a pixel), clipped to the plane."""
    x0, y0, x1, y1 = _box(mask)
    h, w = mask.shape
    dx, dy = max(1.0, margin * (x1 - x0 + 1)), max(1.0, margin * (y1 - y0 + 1))
    return max(0.0, x0 - dx), max(0.0, y0 - dy), min(w - 1.0, x1 + dx), min(h - 1.0, y1 + dy)


def _interior_point(mask: np.ndarray) -> tuple[float, float]:
    """The pixel (x, y) deepest inside the mask."""
    x0, y0, x1, y1 = (int(v) for v in _box(mask))
    crop = np.pad(mask[y0 : y1 + 1, x0 : x1 + 1], 1)
    dist = ndimage.distance_transform_edt(crop)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(x0 + x), float(y0 + y)
