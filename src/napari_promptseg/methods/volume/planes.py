"""Plane by plane: a 2D method run on every plane of a stack, its objects linked across planes by overlap. No Qt, no
napari."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from ...callbacks import ProgressCallback
from ...errors import CancelledError, NothingFoundError, PromptsegError
from ...models.preprocessing import to_numpy
from .stacks import _as_ids, _stack, plane_warnings, plane_word

#: plane by plane: objects of consecutive planes overlapping at least this much (IoU) are one object
LINK_IOU = 0.3


@dataclass
class StackResult:
    """Instance labels of a stack, one id per object across its planes."""

    labels: np.ndarray  # (Z, Y, X) uint16/uint32, 0 background
    extents: dict[int, tuple[int, int]]  # id -> first and last plane
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: each plane's result as the 2D method returned it (a plane where it found nothing: None), e.g. a
    #: ``TextResult`` with its route, boxes and heatmap; its labels are the plane's before the ids were linked
    planes: list = field(default_factory=list)
    #: a stack pyramid's level every plane was read at (0: full resolution; :func:`~.levels.segment_stack_at_level`),
    #: its planes' factors (rows, columns) and the labels found there; ``labels`` are then those labels at full
    #: resolution, a lazy dask array, and each of ``planes`` is in the level's pixels
    pyramid_level: int = 0
    level_factors: tuple[float, float] = (1.0, 1.0)
    level_labels: np.ndarray | None = None

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
    stack_axis: str | None = None,
) -> StackResult:
    """Segment every plane of a (Z, Y, X[, C]) stack with ``segment_plane(plane, z)``, or ``segment_plane(plane)``
    when it takes one required argument (any 2D method: it returns labels, or a result with ``.labels`` and
    ``.warnings``; :func:`plane_function`) and link the planes' objects: an object overlapping one
    of the previous plane by IoU >= ``link_iou`` (best match first, one to one) keeps its id. Integer labels keep
    their objects (values <= 0 are background); a bool or float mask's objects are its connected components.
    ``volume`` may also be a list of planes; a float stack in memory with NaN/inf is refused before any work.
    ``axes``: the input's axis order when its file names it (:func:`~.stacks.as_stack`). A plane where the method finds
    nothing (:class:`~napari_promptseg.errors.NothingFoundError`) is left empty, its reason among the warnings.
    ``stack_axis``: "t" when the planes are a time-lapse's frames (default: when ``axes`` begins with t), which the
    progress and the warnings then call frames; ``segment_plane`` names a plane so too (``plane_word``).

    Example: ``segment_stack(vol, lambda plane: segment_text(plane, "nuclei"))``; ``vol`` may be a napari Image
    layer (its pixels).
    """
    from ...io.layer_objects import is_layer, layer_pixels

    name = volume.name if is_layer(volume) and name == "stack" else name
    volume = layer_pixels(volume, "volume")
    segment_plane = plane_function(segment_plane)
    if stack_axis is None and (axes or "").startswith("t"):
        stack_axis = "t"
    word = plane_word(stack_axis)
    vol, warnings = _stack(volume, channel_axis, name, axes, stack_axis)
    report = progress or (lambda fraction, message: None)
    n = vol.shape[0]
    labels = np.zeros(vol.shape[:3], np.uint32)
    next_id = 1
    per_plane: list[tuple[int, str]] = []  # said once at the end: a warning every plane gives is one warning
    outputs: list = []
    t0 = time.perf_counter()
    for z in range(n):
        if cancel is not None and cancel():
            raise CancelledError("cancelled")
        report(z / n, f"{name}: {word} {z + 1}/{n}")
        try:
            out = segment_plane(to_numpy(vol[z]), z)
        except NothingFoundError as exc:
            # a plane with nothing like the prompt is empty, and says why, as the CLI's stacks: failing here threw away
            # the planes that matched (the One-shot and Text widgets' stacks, the console's)
            out = _Nothing(np.zeros(labels.shape[1:], np.uint8), [str(exc)])
        outputs.append(None if isinstance(out, _Nothing) else out)
        per_plane += [(z, message) for message in getattr(out, "warnings", [])]
        plane = np.asarray(getattr(out, "labels", out))
        if plane.shape != labels.shape[1:]:
            raise PromptsegError(
                f"{name}: {word} {z} gave labels of shape {plane.shape}, not the {word}'s {labels.shape[1:]}"
            )
        ids = _as_ids(plane, f"{name}: {word} {z}", components=True)
        # ids 0..M: a method's sparse ids (e.g. 10**9) would otherwise size the lookup table of _link
        dense = np.unique(np.concatenate([[0], ids.ravel()]), return_inverse=True)[1][1:].reshape(ids.shape)
        labels[z], next_id = _link(labels[z - 1] if z else None, dense, next_id, link_iou)
    report(1.0, f"{name}: {next_id - 1} object(s)")
    warnings += plane_warnings(per_plane, name, stack_axis)
    timings = {"total_s": time.perf_counter() - t0}
    return StackResult(_compact(labels), object_extents(labels), timings, warnings, outputs)


def is_stack_layer(image: object, channel_axis: int | None = None) -> bool:
    """Whether ``image`` is a napari Image layer over a stack of 2D planes, as napari shows it with a slider: (Z, Y,
    X) grey, (Z, Y, X, 3) RGB, and, with ``channel_axis`` given, a multichannel (C, Z, Y, X) or (Z, Y, X, C). The
    console's whole-image functions segment such a layer plane by plane (:func:`segment_stack`), as the CLI and the
    widgets segment a stack; a bare 3D array stays theirs to ask about (planes or channels?)."""
    from ...io.layer_objects import is_layer

    if not is_layer(image) or type(image).__name__ != "Image":
        return False
    # napari's ndim leaves out an RGB layer's colours
    return int(image.ndim) > 2 + (channel_axis is not None and not getattr(image, "rgb", False))


def stack_layer_data(layer: Any, channel_axis: int | None) -> tuple[Any, int | None]:
    """A stack layer's pixels as :func:`~..volume.segment_stack` takes them, and their channel axis: a (C, Z, Y, X)
    layer's (channel axis 0, as the widgets read it) with its channels last."""
    data = layer.data
    if channel_axis is None or layer.rgb or channel_axis % (layer.ndim + 1) != 0:
        return data, channel_axis
    if layer.multiscale:
        return [np.moveaxis(level, 0, -1) for level in data], -1
    return np.moveaxis(data, 0, -1), -1


@dataclass
class _Nothing:
    """A plane where the method found nothing: empty labels, and the method's reason as the plane's warning."""

    labels: np.ndarray
    warnings: list[str]


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
