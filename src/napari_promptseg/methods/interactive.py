"""Interactive prompting: boxes and positive/negative points -> one instance per object.

Coordinates are pixels of the 2D image: x = column, y = row (napari stores (row, col); the widget converts).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..callbacks import ProgressCallback
from ..errors import CancelledError, PromptsegError
from ..models.preprocessing import Normalization, as_channels_last, full_resolution, read_pyramid_level, to_numpy
from ..models.protocols import Embedding, Prediction, PromptableSegmenter
from ..tiling import (
    IntensityWindow,
    Tile,
    TileGrid,
    WorkingScale,
    box_object_size,
    choose_scale,
    read_tile,
)


@dataclass
class ObjectPrompt:
    """Prompts for one object: an optional box and any number of points (label 1 positive, 0 negative)."""

    box: tuple[float, float, float, float] | None = None
    points: list[tuple[float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.points) != len(self.labels):
            raise PromptsegError(f"{len(self.points)} points but {len(self.labels)} point labels")
        if self.box is None and not any(label == 1 for label in self.labels):
            raise PromptsegError("an object needs a box or at least one positive point")


@dataclass
class SegmentationResult:
    labels: np.ndarray  # (H, W) uint16/uint32, 0 background, objects 1..N in prompt order
    scores: np.ndarray  # (N,) predicted IoU per object
    timings: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    scale: WorkingScale | None = None  # the working scale the boxes chose (None: whole image, no box)


def check_box(
    box: Sequence[float], shape: tuple[int, int], name: str = "box", warnings: list[str] | None = None
) -> tuple[float, float, float, float]:
    """Validate x0, y0, x1, y1 against the image; a box partly outside is clipped (said in ``warnings``, when given,
    if it reached more than a pixel past the image's edge), one fully outside is an error."""
    if np.ndim(box) != 1:
        raise PromptsegError(
            f"{name}: expected 4 numbers x0 y0 x1 y1, got an array of shape {np.shape(box)}; a napari Shapes "
            "rectangle holds 4 corners, (row, column) last (a layer over a stack: (plane, row, column)): its box is "
            "(c[:, -1].min(), c[:, -2].min(), c[:, -1].max(), c[:, -2].max())"
        )
    if len(box) != 4:
        raise PromptsegError(f"{name}: expected 4 numbers x0 y0 x1 y1, got {len(box)}")
    x0, y0, x1, y1 = _numbers(box, f"{name}: expected 4 numbers x0 y0 x1 y1")
    if not np.isfinite([x0, y0, x1, y1]).all():
        raise PromptsegError(f"{name}: coordinates must be finite, got {box}")
    if x1 <= x0 or y1 <= y0:
        raise PromptsegError(
            f"{name}: corners in the wrong order or zero size ({x0:g}, {y0:g}, {x1:g}, {y1:g}); "
            "expected x0 < x1 and y0 < y1 (x = column, y = row)"
        )
    h, w = shape
    # the last pixel ends half a pixel past its centre: a box starting beyond that holds none of the image
    if x1 <= 0 or y1 <= 0 or x0 >= w - 0.5 or y0 >= h - 0.5:
        raise PromptsegError(
            f"{name}: ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the {w}x{h} image (width x height)"
        )
    # clipped to the pixel centres; a box starting on the last pixel keeps it, one pixel thin (boxes_from_labels' box
    # of an object on the last row): clipping its end alone turned a start past the centre into corners the wrong
    # way round
    clipped = (
        min(max(x0, 0.0), w - 1.0),
        min(max(y0, 0.0), h - 1.0),
        min(x1, w - 1.0),
        min(y1, h - 1.0),
    )
    # a box drawn to the edge may end on it (x1 = w) or half a pixel out (napari): not worth a word
    if warnings is not None and (x0 < -1 or y0 < -1 or x1 > w or y1 > h):
        kept = (clipped[2] - clipped[0]) * (clipped[3] - clipped[1]) / ((x1 - x0) * (y1 - y0))
        warnings.append(
            f"{name} ({x0:g}, {y0:g}, {x1:g}, {y1:g}) reaches past the {w}x{h} image (width x height): clipped to "
            f"({clipped[0]:g}, {clipped[1]:g}, {clipped[2]:g}, {clipped[3]:g}), {kept:.0%} of its area"
        )
    return clipped


def boxes_from_labels(labels: np.ndarray, min_area: int = 1) -> list[tuple[int, int, int, int]]:
    """One box (x0, y0, x1, y1, inclusive pixel bounds) per labelled object or connected component of a binary mask.

    Turns an existing Labels layer or a ground-truth mask into prompts; objects one pixel thin get a box one pixel
    wide so that every box has x0 < x1 and y0 < y1.
    """
    from skimage.measure import label, regionprops

    labels = np.asarray(full_resolution(labels))
    if labels.dtype == bool or labels.max(initial=0) <= 1:
        labels = label(labels > 0)
    boxes = []
    for region in regionprops(labels):
        if region.area < min_area:
            continue
        y0, x0, y1, x1 = region.bbox  # exclusive ends
        boxes.append((x0, y0, max(x1 - 1, x0 + 1), max(y1 - 1, y0 + 1)))
    return boxes


def check_point(point: Sequence[float], shape: tuple[int, int], name: str = "point") -> tuple[float, float]:
    """Validate x, y against the image. Pixel 0 spans -0.5 to 0.5 (napari puts pixel centres on whole numbers), so a
    click on the first row's or column's outer half is that pixel's (moved to 0), not outside the image."""
    if np.ndim(point) != 1 or len(point) != 2:
        # a napari Points layer over a stack holds (plane, row, column): reversed whole, as a 2D layer's, it is 3
        hint = (
            ": a 3D Points layer's point is (plane, row, column); x y are its last two numbers reversed "
            "(data[:, -1:-3:-1]), of the points on the plane segmented"
            if np.ndim(point) == 1 and len(point) == 3
            else ""
        )
        raise PromptsegError(f"{name}: expected 2 numbers x y, got {_count(point)}{hint}")
    x, y = _numbers(point, f"{name}: expected 2 numbers x y")
    h, w = shape
    if not (np.isfinite([x, y]).all() and -0.5 <= x < w and -0.5 <= y < h):
        raise PromptsegError(f"{name}: ({x:g}, {y:g}) lies outside the {w}x{h} image (width x height)")
    return max(x, 0.0), max(y, 0.0)


def _numbers(values: Sequence, expected: str) -> list[float]:
    """``values`` as floats; text or complex numbers refused, ``expected`` saying what was wanted (float() raised
    "could not convert string to float: 'a'", naming no prompt)."""
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        raise PromptsegError(f"{expected}, got {tuple(values)}") from None


def _count(value: object) -> str:
    return f"{len(value)}" if np.ndim(value) == 1 else f"an array of shape {np.shape(value)}"


def prompt_list(values: Sequence | None, size: int, what: str) -> list:
    """``values`` as a list of prompts of ``size`` numbers each. One flat box ``(x0, y0, x1, y1)`` or point
    ``(x, y)``, as typed in the console (``boxes=(x0, y0, x1, y1)``), is that one prompt: taken as a list, each of
    its numbers was a box, and the error a bare TypeError; any other flat list of numbers is refused, naming it.
    None is no prompt (``boxes=None``: "'NoneType' object is not iterable")."""
    form, one = ("(x0, y0, x1, y1)", "box") if size == 4 else ("(x, y)", "point")
    if isinstance(values, (str, bytes)):  # its characters were read as numbers: "boxes: 11 numbers"
        raise PromptsegError(f"{what}: the text {values!r} is no list of {form}; give numbers, one {form} per {one}")
    try:
        items = [] if values is None else list(values)  # a (N, size) array: its rows
    except TypeError:  # a number: "'int' object is not iterable"
        raise PromptsegError(f"{what}: {values!r} is no list of {form}; give one {form} per {one}") from None
    if items and all(np.ndim(v) == 0 for v in items):
        if len(items) == size:
            return [items]
        raise PromptsegError(f"{what}: {len(items)} numbers; expected a list of {form}, one per {one}")
    return items


def group_prompts(
    shape: tuple[int, int],
    boxes: Sequence[Sequence[float]] = (),
    positive_points: Sequence[Sequence[float]] = (),
    negative_points: Sequence[Sequence[float]] = (),
    warnings: list[str] | None = None,
) -> list[ObjectPrompt]:
    """Turn flat prompt lists into objects (boxes partly outside the image clipped, said in ``warnings``).

    Each box is one object; a point inside boxes refines the smallest box that contains it. Points outside every box
    form one further object (when at least one of them is positive), the usual click-to-segment case; negative
    points outside every box without a positive one refine nothing (said in ``warnings``).
    """
    boxes = prompt_list(boxes, 4, "boxes")
    positive_points = prompt_list(positive_points, 2, "positive points")
    negative_points = prompt_list(negative_points, 2, "negative points")
    objects = [ObjectPrompt(box=check_box(b, shape, f"box {i + 1}", warnings)) for i, b in enumerate(boxes)]
    loose_points: list[tuple[float, float]] = []
    loose_labels: list[int] = []
    loose_names: list[str] = []
    tagged = [(p, 1, f"positive point {i + 1}") for i, p in enumerate(positive_points)]
    tagged += [(p, 0, f"negative point {i + 1}") for i, p in enumerate(negative_points)]
    for p, label, point_name in tagged:
        x, y = check_point(p, shape, point_name)
        inside = [o for o in objects if o.box[0] <= x <= o.box[2] and o.box[1] <= y <= o.box[3]]
        if inside:
            target = min(inside, key=lambda o: (o.box[2] - o.box[0]) * (o.box[3] - o.box[1]))
            target.points.append((x, y))
            target.labels.append(label)
        else:
            loose_points.append((x, y))
            loose_labels.append(label)
            loose_names.append(point_name)
    if 1 in loose_labels:
        objects.append(ObjectPrompt(points=loose_points, labels=loose_labels))
    elif loose_labels and not objects:
        raise PromptsegError("only negative points given: add a box or a positive point")
    elif loose_labels and warnings is not None:  # they refine no object: said, not dropped without a word
        warnings.extend(
            f"{point_name} ({x:g}, {y:g}) lies outside every box and goes with no positive point: not used (a "
            "negative point refines the box it lies in)"
            for point_name, (x, y) in zip(loose_names, loose_points, strict=True)
        )
    if not objects:
        raise PromptsegError("no prompt: give at least one box or positive point")
    return objects


#: Half-sizes (fraction of the longest image side) of the boxes tried around clicks for box-trained models.
CLICK_BOX_FRACTIONS = (0.04, 0.07, 0.1, 0.14, 0.2, 0.28, 0.4)


def click_to_box_candidates(obj: ObjectPrompt, shape: tuple[int, int]) -> list[ObjectPrompt]:
    """Boxes of several sizes around an object's positive clicks, each keeping the clicks.

    Box-trained models (LiteMedSAM) give tiny blobs for a click alone; a box search around the click, choosing the
    candidate with the best predicted IoU that contains every positive and no negative click, recovers the object
    (measured on the shared datasets: mean Dice of one central click 0.14 -> about 0.45; see tests).
    """
    h, w = shape
    pos = np.array([p for p, label in zip(obj.points, obj.labels, strict=True) if label == 1], dtype=np.float32)
    (x0, y0), (x1, y1) = pos.min(0), pos.max(0)
    side = max(h, w)
    candidates = []
    for fraction in CLICK_BOX_FRACTIONS:
        pad = fraction * side
        box = (max(x0 - pad, 0.0), max(y0 - pad, 0.0), min(x1 + pad, w - 1.0), min(y1 + pad, h - 1.0))
        candidates.append(ObjectPrompt(box=box, points=list(obj.points), labels=list(obj.labels)))
    return candidates


def _decode(
    segmenter: PromptableSegmenter, embedding: Embedding, objects: Sequence[ObjectPrompt]
) -> tuple[torch.Tensor, np.ndarray]:
    """Decode objects of one structure (all with a box, or none) in one batched call; (n, 1, s, s), (n,)."""
    with_box = objects[0].box is not None
    n_pts = max(len(o.points) for o in objects)
    boxes = np.array([o.box for o in objects], dtype=np.float32) if with_box else None
    points = labels = None
    if n_pts:  # pad with SAM's "not a point" label -1
        points = np.zeros((len(objects), n_pts, 2), dtype=np.float32)
        labels = -np.ones((len(objects), n_pts), dtype=np.int64)
        for row, o in enumerate(objects):
            if o.points:
                points[row, : len(o.points)] = o.points
                labels[row, : len(o.points)] = o.labels
    pred = segmenter.predict(embedding, boxes=boxes, points=points, point_labels=labels)
    return pred.low_res_logits[:, :1], pred.scores[:, 0]


def _best_click_candidate(obj: ObjectPrompt, logits: torch.Tensor, scores: np.ndarray, embedding: Embedding) -> int:
    """Index of the candidate mask with the best predicted IoU that honours every click (or just the best IoU)."""
    full = embedding.transform.logits_to_original(logits)[:, 0] > 0
    h, w = full.shape[-2:]
    ok = []
    for i in range(len(full)):
        # clicks outside this tile (an object's negative clicks elsewhere in a tiled image) neither honour nor break
        # a candidate; a negative index would have read the far side of the tile
        hits = [
            bool(full[i, min(max(int(y), 0), h - 1), min(max(int(x), 0), w - 1)]) == (label == 1)
            for (x, y), label in zip(obj.points, obj.labels, strict=True)
            if -1 <= x <= w and -1 <= y <= h
        ]
        if all(hits):
            ok.append(i)
    return max(ok or range(len(full)), key=lambda i: scores[i])


def predict_objects(
    segmenter: PromptableSegmenter, embedding: Embedding, objects: Sequence[ObjectPrompt]
) -> tuple[list[torch.Tensor], np.ndarray]:
    """Decode every object; returns low-res logits per object (1, s, s) in object order and their scores.

    Objects with and without a box are decoded in separate batches (SAM's prompt encoder needs one structure per
    batch). For models trained on boxes only, click-only objects go through :func:`click_to_box_candidates`.
    """
    logits: list[torch.Tensor] = [torch.empty(0)] * len(objects)
    scores = np.zeros(len(objects), dtype=np.float32)
    boxed = [i for i, o in enumerate(objects) if o.box is not None]
    clicked = [i for i, o in enumerate(objects) if o.box is None]
    if boxed:
        low, sc = _decode(segmenter, embedding, [objects[i] for i in boxed])
        for row, i in enumerate(boxed):
            logits[i], scores[i] = low[row], sc[row]
    if clicked and segmenter.points_reliable:
        low, sc = _decode(segmenter, embedding, [objects[i] for i in clicked])
        for row, i in enumerate(clicked):
            logits[i], scores[i] = low[row], sc[row]
    elif clicked:
        shape = embedding.transform.original_shape
        for i in clicked:
            candidates = click_to_box_candidates(objects[i], shape)
            low, sc = _decode(segmenter, embedding, candidates)
            best = _best_click_candidate(objects[i], low, sc, embedding)
            logits[i], scores[i] = low[best], sc[best]
    return logits, scores


def paint_instances(prediction: Prediction, *, chunk: int = 8, cancel: Callable[[], bool] | None = None) -> np.ndarray:
    """Instance labels 1..N from N masks; where masks overlap the pixel goes to the most confident logit."""
    n = len(prediction)
    h, w = prediction.transform.original_shape
    labels = np.zeros((h, w), dtype=np.uint16 if n < 2**16 else np.uint32)
    best = np.zeros((h, w), dtype=np.float32)  # logits > 0 mean foreground
    for start in range(0, n, chunk):
        if cancel is not None and cancel():
            raise CancelledError("cancelled")
        block = prediction.logits(slice(start, start + chunk))[:, 0].numpy()
        for offset, logit in enumerate(block):
            win = logit > best
            labels[win] = start + offset + 1
            best[win] = logit[win]
    return labels


def segment_prompts(
    image: np.ndarray,
    segmenter: PromptableSegmenter,
    *,
    boxes: Sequence[Sequence[float]] = (),
    positive_points: Sequence[Sequence[float]] = (),
    negative_points: Sequence[Sequence[float]] = (),
    object_size: float | None = None,
    channel_axis: int | None = None,
    channels: list[int] | None = None,
    normalize: Normalization = "auto",
    name: str = "image",
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
) -> SegmentationResult:
    """Segment one 2D image from boxes/points; one instance label per object (see :func:`group_prompts`).

    The working scale comes from ``object_size`` (pixels) or the boxes' size (:mod:`..tiling`): when the objects
    are small for the whole image, each object is decoded in the tile around it at that scale instead of in the
    whole image squeezed into the model's input. Click-only prompts use the whole image.

    A pyramid (a multiscale layer's data, levels largest first; prompts in full-resolution pixels) is read at the
    coarsest level that still has the working scale's resolution, as the CLI reads an OME-Zarr, and the labels come
    back at full resolution (:func:`~..models.preprocessing.read_pyramid_level`).
    """
    level = read_pyramid_level(
        image,
        lambda shape: prompts_working_scale(shape, segmenter.input_size, boxes, object_size),
        channel_axis,
    )
    if level is not None:  # prompts and object size in the level's pixels; labels back at full resolution
        image = level.array
        # one prompt at a time: a malformed one reaches group_prompts, which refuses it naming it
        boxes, positive_points, negative_points = (
            [level.to_level(p) for p in prompt_list(prompts, size, what)]
            for prompts, size, what in (
                (boxes, 4, "boxes"),
                (positive_points, 2, "positive points"),
                (negative_points, 2, "negative points"),
            )
        )
        object_size = None if object_size is None else object_size / level.factor
    hwc = as_channels_last(image, channel_axis=channel_axis, channels=channels, name=name)
    clipped: list[str] = []
    objects = group_prompts(hwc.shape[:2], boxes, positive_points, negative_points, clipped)
    result = segment_objects(
        hwc,
        segmenter,
        objects,
        object_size=object_size,
        normalize=normalize,
        name=name,
        progress=progress,
        cancel=cancel,
    )
    result.warnings = [*(f"{name}: {warning}" for warning in clipped), *result.warnings]
    if level is not None:
        result.labels = level.labels_to_full(result.labels)
    return result


def segment_objects(
    hwc: np.ndarray,
    segmenter: PromptableSegmenter,
    objects: Sequence[ObjectPrompt],
    *,
    object_size: float | None = None,
    normalize: Normalization = "auto",
    name: str = "image",
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
) -> SegmentationResult:
    """:func:`segment_prompts` of prompts already grouped into ``objects`` (label ``i + 1`` for ``objects[i]``) on
    an (H, W, C) image: each object's box decoded with its own clicks, as a propagation carries them (grouped by
    :func:`group_prompts`, a click inside a smaller box of another object refines that one)."""
    warnings: list[str] = []
    if not segmenter.points_reliable and any(o.box is None for o in objects):
        warnings.append(
            f"{segmenter.name} was trained on box prompts: clicks without a box were answered by searching boxes "
            "around them; draw a box for a reliable mask"
        )
    boxed = [o.box for o in objects if o.box is not None]
    size = object_size if object_size is not None else (box_object_size(np.array(boxed)) if boxed else None)
    scale = choose_scale(hwc.shape, segmenter.input_size, size, source="object size" if object_size else "boxes")
    if scale.capped:
        warnings.append(scale.cap_warning(name))
    report = progress or (lambda fraction, message: None)
    h, w = hwc.shape[:2]
    grid = TileGrid((h, w), scale.tile, scale.overlap)
    window = IntensityWindow.measure(hwc, normalize, name=name) if len(grid) > 1 else None
    # a box over pixels of one value holds nothing, whatever the decoder would draw there (an empty canvas, a blank
    # plane): it is not decoded, and its object stays empty
    flat = [i for i, obj in enumerate(objects) if obj.box is not None and _is_flat(hwc, obj.box)]
    if flat:
        numbers = ", ".join(str(i + 1) for i in flat)
        warnings.append(f"{name}: box {numbers} covers pixels of one value: nothing to segment there (left empty)")
    # each object goes to the tile whose core holds its centre (the box's, else its first positive click)
    by_tile: dict[int, list[int]] = {}
    for i, obj in enumerate(objects):
        if i in flat:
            continue
        x, y = _centre(obj)
        tile = next(t for t in grid if t.owns(np.array(x), np.array(y)))
        if obj.box is not None and not _fits(obj.box, tile):
            tile = None  # far larger than the boxes that set the scale: decoded in the whole image
        by_tile.setdefault(-1 if tile is None else tile.index, []).append(i)
    labels = np.zeros((h, w), np.uint16 if len(objects) < 2**16 else np.uint32)
    scores = np.zeros(len(objects), np.float32)
    timings = {"embed_s": 0.0, "decode_s": 0.0, "paint_s": 0.0}
    painted: set[int] = set()  # ids that got pixels
    taken_from: set[int] = set()  # ids whose pixels a more confident object of a later tile took
    decoded: set[int] = set()  # ids whose own mask was not empty
    for n, (index, members) in enumerate(sorted(by_tile.items())):
        tile = grid.tiles[index] if index >= 0 else Tile(-1, 0, h, 0, w, (0.0, h, 0.0, w))
        report(
            0.9 * n / len(by_tile),
            f"encoding {name} with {segmenter.name}" + (f" (tile {n + 1}/{len(by_tile)})" if len(grid) > 1 else ""),
        )
        t0 = time.perf_counter()
        if window is None or index < 0:
            embedding = segmenter.embed(hwc, normalize=normalize, name=name)
        else:
            embedding = segmenter.embed(read_tile(hwc, tile, window), normalize="none", name=f"{name} tile")
        timings["embed_s"] += time.perf_counter() - t0
        if cancel is not None and cancel():
            raise CancelledError("cancelled")
        t0 = time.perf_counter()
        local = [_shifted(objects[i], -tile.x0, -tile.y0) for i in members]
        logits, tile_scores = predict_objects(segmenter, embedding, local)
        scores[members] = tile_scores
        timings["decode_s"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        stacked = Prediction(torch.stack(logits), tile_scores[:, None], embedding.transform)
        tile_labels = paint_instances(stacked, cancel=cancel)
        ids = np.zeros(len(members) + 1, labels.dtype)
        ids[1:] = np.array(members) + 1
        view = labels[tile.slices]
        claimed = ids[tile_labels]
        # a pixel an object of an earlier tile holds goes to the more confident of the two, as within a tile: the
        # order the tiles are decoded in decided it, and the warning said the more confident one took it
        by_id = np.concatenate([[-np.inf], scores]).astype(np.float32)
        take = (claimed > 0) & (by_id[claimed] > by_id[view])
        taken_from.update(int(k) for k in np.unique(view[take & (view > 0)]))
        view[take] = claimed[take]
        painted.update(int(k) for k in np.unique(claimed[take]))
        decoded.update(i + 1 for i, logit in zip(members, logits, strict=True) if bool((logit > 0).any()))
        timings["paint_s"] += time.perf_counter() - t0
    if taken_from:  # those left with no pixel: one pass over the labels (find_objects reads the ids as stored)
        from scipy import ndimage

        present = {k + 1 for k, found in enumerate(ndimage.find_objects(labels)) if found is not None}
        painted -= taken_from - present
    warnings += [f"{name}: {said}" for said in empty_objects(objects, set(flat), painted, decoded)]
    report(1.0, "done")
    return SegmentationResult(
        labels=labels, scores=scores, timings=timings, warnings=warnings, scale=scale if size else None
    )


#: the words of :func:`empty_objects` (find-all says its examples' own way)
NO_OBJECT = "gave no object"


def empty_objects(objects: Sequence[ObjectPrompt], flat: set[int], painted: set[int], decoded: set[int]) -> list[str]:
    """Why objects (ids = index + 1; boxes first, as :func:`group_prompts` orders them) came back without a pixel:
    the objects of boxes overlapping theirs took them (a box given twice), or the model found nothing. Objects over
    pixels of one value (``flat``) were said already."""
    said = []
    for i, obj in enumerate(objects):
        if i + 1 in painted or i in flat:
            continue
        what = f"box {i + 1}" if obj.box is not None else "the clicks outside every box"
        takers = [] if obj.box is None else [j for j in sorted(painted) if _overlap(obj.box, objects[j - 1].box)]
        if i + 1 not in decoded:
            said.append(f"{what} {NO_OBJECT}: the model found none there")
            continue
        whose = "other objects"
        if len(takers) == 1:
            whose = f"the object of box {takers[0]}, which overlaps it"
        elif takers:
            whose = f"the objects of boxes {', '.join(map(str, takers))}, which overlap it"
        said.append(
            f"{what} {NO_OBJECT}: its pixels went to {whose} (where objects overlap, the more confident one takes "
            "the pixel)"
        )
    return said


def _overlap(box: tuple[float, float, float, float], other: tuple[float, float, float, float] | None) -> bool:
    return other is not None and box[0] < other[2] and other[0] < box[2] and box[1] < other[3] and other[1] < box[3]


def prompts_working_scale(
    shape: Sequence[int],
    input_size: int,
    boxes: Sequence[Sequence[float]] | None,
    object_size: float | None,
) -> float:
    """The working scale of box/point prompts on an image of ``shape`` (rows, columns, ...): from ``object_size``,
    else the boxes' size, else the whole image. A pyramid is read at the level this scale needs (the CLI's level of
    an OME-Zarr, the console's of a multiscale layer's data)."""
    # a malformed box is left to check_box, which refuses it naming it (here numpy's reshape error came first, and a
    # NaN corner gave "object size must be a positive number of pixels, got nan")
    boxes = np.array([b for b in prompt_list(boxes, 4, "boxes") if np.size(b) == 4], np.float64).reshape(-1, 4)
    boxes = boxes[np.isfinite(boxes).all(axis=1)]
    size = object_size if object_size is not None else (box_object_size(boxes) if len(boxes) else None)
    return choose_scale(shape, input_size, size).scale


def _is_flat(hwc: np.ndarray, box: tuple[float, float, float, float]) -> bool:
    """Whether every channel holds one value inside the box (a uniform colour too; NaN was refused earlier)."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    region = to_numpy(hwc[y0 : y1 + 1, x0 : x1 + 1]).reshape(-1, hwc.shape[-1])
    return region.size > 0 and bool(np.all(region.min(axis=0) == region.max(axis=0)))


def _fits(box: tuple[float, float, float, float], tile: Tile) -> bool:
    return box[0] >= tile.x0 and box[1] >= tile.y0 and box[2] <= tile.x1 - 1 and box[3] <= tile.y1 - 1


def _centre(obj: ObjectPrompt) -> tuple[float, float]:
    if obj.box is not None:
        x0, y0, x1, y1 = obj.box
        return (x0 + x1) / 2, (y0 + y1) / 2
    return next(p for p, label in zip(obj.points, obj.labels, strict=True) if label == 1)


def _shifted(obj: ObjectPrompt, dx: float, dy: float) -> ObjectPrompt:
    """The same prompt in a tile's frame."""
    box = None if obj.box is None else (obj.box[0] + dx, obj.box[1] + dy, obj.box[2] + dx, obj.box[3] + dy)
    return ObjectPrompt(box=box, points=[(x + dx, y + dy) for x, y in obj.points], labels=list(obj.labels))
