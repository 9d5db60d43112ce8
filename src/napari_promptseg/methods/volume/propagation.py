"""Propagation of prompted objects through a stack (micro-sam's volumetric annotator, see the package docstring). No
Qt, no napari."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ...callbacks import ProgressCallback
from ...errors import CancelledError, NothingFoundError, PromptsegError, check_fraction
from ...models.preprocessing import Normalization, as_channels_last, full_resolution, to_numpy
from ...models.protocols import PromptableSegmenter
from ...tiling import WorkingScale, box_object_size, lazy_upsampled_labels
from .levels import StackLevel, choose_stack_level, stack_pyramid
from .planes import _compact, object_extents
from .stacks import (
    _as_ids,
    _plane_index,
    _stack,
    named_channel_axis,
    plane_list,
    plane_warnings,
    plane_word,
    time_point_volume,
)

#: an object stops where its mask overlaps the previous plane's by less than this (IoU)
STOP_IOU = 0.5
#: ... or where the decoder's own quality estimate (predicted IoU) falls below this
MIN_SCORE = 0.5
#: ... or where its mask shrinks below this fraction of its seed-plane area
MIN_AREA_FRACTION = 0.02
#: the box carried to the next plane is the mask's box grown by this fraction of its side on every side
BOX_MARGIN = 0.1


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
    #: the planes a cancel left unsegmented (empty: the propagation ran to its end); their labels are 0
    not_reached: list[int] = field(default_factory=list)
    #: a stack pyramid's level the objects were carried at (0: full resolution), its planes' factors (rows, columns)
    #: and the labels found there; ``labels`` are then those labels at full resolution, a lazy dask array
    pyramid_level: int = 0
    level_factors: tuple[float, float] = (1.0, 1.0)
    level_labels: np.ndarray | None = None

    @property
    def objects(self) -> int:
        return len(self.extents)

    @property
    def partial(self) -> bool:
        """Whether a cancel stopped the propagation part-way: the planes done are kept, ``not_reached`` are not."""
        return bool(self.not_reached)


class PropagationCancelled(CancelledError):
    """A propagation cancelled part-way (its ``cancel`` returned True): ``partial`` holds the planes finished so far
    (the seed plane and those carried to), a :class:`PropagationResult` whose ``not_reached`` lists the others. A
    cancelled run threw them away: a user who cancels after 40 of 60 planes keeps those 40."""

    def __init__(self, message: str, partial: PropagationResult) -> None:
        super().__init__(message)
        self.partial = partial


def propagate_through_stack(
    volume: object,
    plane: int,
    *,
    boxes: Sequence[Sequence[float]] = (),
    points: Sequence[Sequence[float]] = (),
    negative_points: Sequence[Sequence[float]] = (),
    labels: np.ndarray | None = None,
    seed_scores: Mapping[int, float] | None = None,
    seed_warnings: Sequence[str] = (),
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
    stack_axis: str | None = None,
    time_point: int | None = None,
) -> PropagationResult:
    """Segment objects on ``plane`` of a (Z, Y, X[, C]) stack and carry each through the stack in both directions.

    The seed is ``boxes`` (x0, y0, x1, y1 on that plane; one object each), refined by ``points`` (positive clicks,
    named as :func:`napari_promptseg.segment` names them) and ``negative_points`` (x, y on that plane; grouped with
    the boxes as
    :func:`..interactive.segment_prompts` groups them: positive points outside every box are one more object), or
    ``labels`` (not both), a (Y, X) label image of that plane (or the stack's (Z, Y, X) labels, of which that plane
    is read) from any method (one-shot, text, a user's drawing; ids kept, values <= 0 background, a bool mask is
    object 1) with, when the method gives them, ``seed_scores`` (id -> score) and ``seed_warnings`` (what it said
    about that plane; returned with the result's warnings). No object on the seed plane raises
    :class:`NothingFoundError` naming the plane and why (what the prompts or the seed method said about it, e.g.
    "box 1 covers pixels of one value"). On every further plane each live object is
    prompted with the previous plane's mask (see the module's docstring) and ends where its IoU with that mask falls
    below ``stop_iou``, its score below ``min_score``, or its area below a fiftieth of its seed area, decoded alone
    (a plane's objects are decoded together, and where their masks overlap the more confident takes the pixel). The
    working scale stays the seed's (``object_size`` or the boxes' size), so objects shrinking at their ends are seen
    alike.
    ``axes``: the input's axis order when its file names it (:func:`~.stacks.as_stack`). ``stack_axis``: "t" when
    the planes are a time-lapse's frames (default: when ``axes`` begins with t): its progress, warnings and stops
    say frame.
    ``time_point``: ``volume`` is a (T, Z, Y, X[, C]) time-lapse of volumes, and the objects are carried through Z
    of that time point's volume (:func:`~.stacks.time_point_volume`, as the Interactive widget takes the time point
    shown; the CLI's --time).
    A stack pyramid (a multiscale layer's data or a z-stack OME-Zarr's levels, largest first, Z kept at every level;
    prompts and seed labels at full resolution) is read at the coarsest level that still has the working scale's
    resolution, as a 2D slide is (:mod:`.levels`): ``labels`` come back at full resolution as a lazy dask array,
    ``level_labels`` hold them at ``pyramid_level``.
    A cancel (``cancel`` returning True, checked before each plane) raises :class:`PropagationCancelled`, a
    :class:`CancelledError` holding the planes finished so far as a partial result.
    napari layers are taken as they are: an Image layer of the stack, a Labels layer as ``labels``, and Shapes
    (boxes) and Points (clicks) layers read into the stack's pixels as :func:`napari_promptseg.segment` reads them
    (prompts drawn on another plane than ``plane`` are refused, naming it).

    Example (in napari's console: an Image layer "stack" of (Z, Y, X) planes and a Shapes layer boxing a few
    objects on its plane 2, drawn while the viewer showed that plane)::

        result = propagate_through_stack(viewer.layers["stack"], 2, boxes=viewer.layers["Shapes"])
        viewer.add_labels(result.labels, name="objects in 3D", **layer_placement(viewer.layers["stack"]))
    """
    from ...io.layer_objects import is_layer, layer_pixels, prompt_layers_on_plane

    check_fraction(stop_iou, "stop_iou")  # the CLI's --stop-iou is refused so as it is parsed
    check_fraction(min_score, "min_score")
    boxes, points, negative_points = prompt_layers_on_plane(volume, plane, boxes, points, negative_points)
    name = volume.name if is_layer(volume) and name == "stack" else name
    volume, labels = layer_pixels(volume, "volume"), layer_pixels(labels, "labels")
    from ...models import load_segmenter
    from ..interactive import ObjectPrompt, check_box, segment_objects, segment_prompts

    if segmenter is None:
        segmenter = load_segmenter()
    if stack_axis is None and time_point is None and (axes or "").startswith("t"):
        stack_axis = "t"
    pyramid = stack_pyramid(volume, channel_axis=channel_axis, axes=axes, time_point=time_point, name=name)
    if pyramid is not None:
        level = choose_stack_level(
            pyramid,
            segmenter.input_size,
            object_size=object_size,
            boxes=None if boxes is None else [b for b in boxes if np.size(b) == 4],
            labels=None if labels is None else full_resolution(labels),
        )
        if level.index > 0:
            at_level = (
                () if p is None else level.prompts(p, w) for p, w in ((boxes, 4), (points, 2), (negative_points, 2))
            )
            level_boxes, level_points, level_negative = at_level
            try:
                result = propagate_through_stack(
                    level.stack,
                    plane,
                    boxes=level_boxes,
                    points=level_points,
                    negative_points=level_negative,
                    labels=None if labels is None else level.seed(full_resolution(labels)),
                    seed_scores=seed_scores,
                    seed_warnings=seed_warnings,
                    segmenter=segmenter,
                    object_size=None if object_size is None else object_size / level.factor,
                    channel_axis=-1 if np.ndim(level.stack) == 4 else None,
                    channels=channels,
                    normalize=normalize,
                    stop_iou=stop_iou,
                    min_score=min_score,
                    name=name,
                    progress=progress,
                    cancel=cancel,
                    # the level's stack: planes first, channels last (as_stack)
                    axes=None
                    if axes is None
                    else ("t" if stack_axis == "t" else "z") + "yx" + "c" * (np.ndim(level.stack) == 4),
                    stack_axis=stack_axis,
                )
            except PropagationCancelled as exc:
                _at_full_resolution(exc.partial, level)
                raise
            return _at_full_resolution(result, level)

    if time_point is not None:
        volume, channel_axis = time_point_volume(volume, time_point, name=name, channel_axis=channel_axis)
        if axes is not None and len(axes) == np.ndim(volume) + 1:  # the file's names, without its time axis
            axes = axes[1:]
    if stack_axis is None and (axes or "").startswith("t"):
        stack_axis = "t"
    word = plane_word(stack_axis)
    vol, warnings = _stack(volume, channel_axis, name, axes, stack_axis)
    n = vol.shape[0]
    plane = _plane_index(plane, n, name)
    # None is no prompt, as for segment (boxes=None beside labels=...)
    boxes, points, negative_points = (() if p is None else p for p in (boxes, points, negative_points))
    if labels is not None and (len(boxes) or len(points) or len(negative_points)):
        # one seed or the other: the labels won, and the boxes and points were dropped without a word
        raise PromptsegError(
            f"{name}: give the seed plane's objects as boxes and points, or as labels, not both (the prompts would "
            "not be used); to seed with both, segment the prompts and add their labels to yours"
        )
    report = progress or (lambda fraction, message: None)
    # as_stack moved the channels last (given, or named by the file)
    plane_channels = -1 if channel_axis is not None or named_channel_axis(axes) is not None else None
    timings: dict[str, float] = {}

    def timed(result):
        for key, seconds in result.timings.items():
            timings[key] = timings.get(key, 0.0) + seconds
        return result

    def segment(z: int, prompt_boxes, clicks, size, negative=()):
        """The seed plane's objects from the user's prompts, grouped as a plane's prompts are."""
        return timed(
            segment_prompts(
                to_numpy(vol[z]),
                segmenter,
                boxes=prompt_boxes,
                positive_points=clicks,
                negative_points=negative,
                object_size=size,
                channel_axis=plane_channels,
                channels=channels,
                normalize=normalize,
                name=f"{name} {word} {z}",
            )
        )

    def read_plane(z: int) -> np.ndarray:
        return as_channels_last(
            to_numpy(vol[z]), channel_axis=plane_channels, channels=channels, name=f"{name} {word} {z}"
        )

    def carry(plane: np.ndarray, z: int, masks: list[np.ndarray], size: float):
        """The live objects on ``plane`` (plane ``z``, ``read_plane``), each prompted with its previous mask's
        box grown, and, for a segmenter that takes clicks, that mask's most interior point: its own (a user's clicks
        refine the smallest box that holds them, and the cortex's point, inside the box of the white matter it wraps,
        refined the white matter)."""
        boxes = [check_box(_grown_box(mask, BOX_MARGIN), mask.shape) for mask in masks]
        objects = [
            ObjectPrompt(box=box, points=[_interior_point(mask)], labels=[1])
            if segmenter.points_reliable
            else ObjectPrompt(box=box)
            for box, mask in zip(boxes, masks, strict=True)
        ]
        return timed(
            segment_objects(plane, segmenter, objects, object_size=size, normalize=normalize, name=f"{name} {word} {z}")
        )

    report(0.0, f"{name}: seed {word} {plane}")
    scale = None
    warnings += list(seed_warnings)
    if labels is not None:
        seed = np.asarray(full_resolution(labels))
        if seed.shape == tuple(vol.shape[:3]):
            # the stack's labels layer, (Z, Y, X) as napari holds it: its seed plane; refused before, though the
            # plane to take is the one given
            others = np.count_nonzero(seed) - np.count_nonzero(seed[plane])
            seed = seed[plane]
            if others:
                warnings.append(
                    f"{name}: the labels of the whole stack were given: {word} {plane}'s labels seed the propagation, "
                    f"and the {others} labelled pixel(s) of other planes are not used"
                )
        if seed.shape != tuple(vol.shape[1:3]):
            raise PromptsegError(f"{name}: seed labels of shape {seed.shape} do not match a {word} {vol.shape[1:3]}")
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
    elif len(boxes) or len(points):
        result = segment(plane, boxes, points, object_size, negative_points)
        seed, scale = result.labels.astype(np.uint32), result.scale
        seed_scores = {k + 1: float(s) for k, s in enumerate(result.scores)}
        seed_warnings = plane_warnings(((plane, w) for w in result.warnings), name, stack_axis)
        warnings += seed_warnings
    else:
        raise PromptsegError(
            f"{name}: give boxes (or positive points) on {word} {plane}, or that {word}'s labels, to propagate"
        )
    ids = [int(k) for k in np.unique(seed[seed > 0])]
    empty = sorted(set(seed_scores) - set(ids))
    if empty:
        warnings.append(f"{name}: object(s) {empty} have an empty mask on the seed {word} and were not propagated")
    if not ids:  # an answer (nothing there), not bad input: callers give an empty result, with this reason
        said = [w.removeprefix(f"{name}: ").removeprefix(f"{word} {plane}: ") for w in seed_warnings]  # named here
        why = f" ({'; '.join(said)})" if said else ""
        # labels with the seed method's warnings were a prompt's answer (the CLI's text, one-shot, find-all)
        found = "its labels are empty" if labels is not None and not said else "the prompts found nothing there"
        raise NothingFoundError(f"{name}: nothing to propagate: the seed {word} {plane} has no object: {found}{why}")
    # the seed's own working scale: boxes and the masks decoded from them differ in size (masks are tighter), and a
    # scale taken from the masks would decode the next plane at another scale than the seed (measured on identical
    # planes of a DSB image: 7 of 40 nuclei stopped at the first step, IoU 0.37-0.48)
    size = object_size or (scale.object_size if scale is not None else box_object_size(_boxes(seed, ids)))
    out = np.zeros(vol.shape[:3], np.uint32)
    out[plane] = seed
    seed_area = {k: int((seed == k).sum()) for k in ids}
    scores = {k: [seed_scores[k]] if seed_scores.get(k) is not None else [] for k in ids}
    stops: dict[int, dict[str, str]] = {k: {} for k in ids}

    def ends(previous: np.ndarray, mask: np.ndarray, score: float, k: int) -> str | None:
        return _stop_reason(previous, mask, score, seed_area[k], stop_iou, min_score, word)

    def step(z: int, live: dict[int, np.ndarray]) -> tuple[dict[int, np.ndarray], dict[int, float], dict[int, str]]:
        """The objects ``live`` (id -> previous mask) on plane ``z``: the masks and scores of those carried on, and
        why the others end there. They are decoded together (one embedding), and where masks overlap the more
        confident takes the pixel: the left cortex, whose box gives a blob over the hemisphere on the next plane,
        took the thalamus' pixels there, and both ended (the thalamus at IoU 0.485, Dice 0.61 where alone it
        reaches 0.88). So an object ends only if it ends decoded alone too, and the others are decoded again
        without those that end."""
        keys, ended = list(live), {}
        plane = read_plane(z)  # once: the decodes below all read it (a lazy stack's plane came from disk each time)
        while True:
            result = carry(plane, z, [live[k] for k in keys], size)
            masks = {k: result.labels == i + 1 for i, k in enumerate(keys)}
            found = {k: float(result.scores[i]) for i, k in enumerate(keys)}
            ending = {k: why for k in keys if (why := ends(live[k], masks[k], found[k], k))}
            if not ending:
                return masks, found, ended
            if len(keys) > 1:  # each alone: its own mask, no other's pixels taken
                alone = {k: carry(plane, z, [live[k]], size) for k in ending}
                confirmed = {
                    k: why for k, r in alone.items() if (why := ends(live[k], r.labels == 1, float(r.scores[0]), k))
                }
                ending = confirmed or ending  # they end only beside each other: the decode together decides
            ended |= ending
            keys = [k for k in keys if k not in ending]
            if not keys:
                return {}, {}, ended

    def result(not_reached: list[int] = ()) -> PropagationResult:
        return PropagationResult(
            labels=_compact(out),
            seed_plane=plane,
            extents=object_extents(out),
            stops=stops,
            scores={k: float(np.mean(v)) if v else None for k, v in scores.items()},
            scale=scale,
            timings=timings,
            warnings=warnings,
            not_reached=list(not_reached),
        )

    def cancelled(z: int, direction: int, alive: Mapping[int, np.ndarray]) -> PropagationCancelled:
        """The planes done when a cancel came before plane ``z`` (going ``direction``), as a partial result."""
        not_reached = [*range(z, n), *range(plane)] if direction == 1 else list(range(z + 1))
        for k in ids:  # the objects still carried, and every object on the side not begun (its first plane)
            if "up" not in stops[k] and k in alive:
                stops[k]["up"] = f"cancelled before {word} {z}"
            if "down" not in stops[k] and (k in alive or direction == 1):
                below = z if direction == -1 else plane - 1
                stops[k]["down"] = f"cancelled before {word} {below}" if below >= 0 else "reached the end of the stack"
        missing = plane_list(not_reached, stack_axis)
        warnings.append(f"{name}: propagation cancelled: {missing} not segmented; the result is partial")
        finished = n - len(not_reached)
        return PropagationCancelled(
            f"cancelled after {finished} of {n} {word}s; {missing} not segmented", result(not_reached)
        )

    done, total = 0, n - 1
    for direction, side in ((1, "up"), (-1, "down")):
        alive = {k: seed == k for k in ids}
        z = plane + direction
        while alive and 0 <= z < n:
            if cancel is not None and cancel():
                raise cancelled(z, direction, alive)
            done += 1
            report(done / max(total, 1), f"{name}: {word} {z} ({len(alive)} object(s), {side} from {plane})")
            masks, plane_scores, ended = step(z, alive)
            for k, reason in ended.items():
                stops[k][side] = f"{reason} at {word} {z}"
                del alive[k]
            for k, mask in masks.items():
                out[z][mask] = k
                alive[k] = mask
                scores[k].append(plane_scores[k])
            z += direction
        for k in alive:
            stops[k][side] = "reached the end of the stack"
        done = n - 1 - plane  # the planes above count as done, however early the objects ended there
    report(1.0, f"{name}: {len(ids)} object(s) propagated")
    return result()


def _at_full_resolution(result: PropagationResult, level: StackLevel) -> PropagationResult:
    """A propagation run on a stack pyramid's ``level``: its labels back at full resolution (lazily), those found
    kept as ``level_labels``, and its working scale in full-resolution pixels."""
    result.level_labels = result.labels
    result.labels = lazy_upsampled_labels(result.labels, level.full_shape)
    result.pyramid_level, result.level_factors = level.index, level.factors
    if result.scale is not None:
        result.scale = result.scale.at_full_resolution(level.factor)
    return result


def _stop_reason(
    previous: np.ndarray,
    mask: np.ndarray,
    score: float,
    seed_area: int,
    stop_iou: float,
    min_score: float,
    word: str = "plane",
) -> str | None:
    area = int(mask.sum())
    if area == 0 or area < MIN_AREA_FRACTION * seed_area:
        return "vanished"
    inter = int((previous & mask).sum())
    iou = inter / (int(previous.sum()) + area - inter)
    if iou < stop_iou:
        return f"IoU with the previous {word} {_floor3(iou)} < {stop_iou}"
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
