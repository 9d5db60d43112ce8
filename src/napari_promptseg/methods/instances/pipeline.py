"""Tile by tile: candidates, one box prompt each, masks fused with the foreground, stitched into instance labels.

One tile's objects (candidates, decoding, back to tile pixels) are :mod:`.tile_objects`; this module runs the tiles
over the image, stitches their objects and holds the public entry points.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from ...callbacks import ProgressCallback
from ...errors import CancelledError, PromptsegError
from ...models.preprocessing import Normalization, PyramidRead, as_channels_last, read_pyramid_level
from ...models.protocols import PromptableSegmenter
from ...tiling import (
    IntensityWindow,
    TileGrid,
    WorkingScale,
    choose_scale,
)
from ..labelling_advice import few_labels_warning
from .exemplars import (
    ExemplarModel,
    _check_reference_labels,
    _classifier_input,
    _tile_inputs,
    _Timer,
    count_objects,
    estimate_object_size,
    fit_exemplars,
    known_near,
    known_near_labels,
    level_object_size,
)

# DECODE_BATCH and CandidateMode stay importable from here, where they were before tile_objects was split off
from .tile_objects import DECODE_BATCH as DECODE_BATCH
from .tile_objects import CandidateMode as CandidateMode
from .tile_objects import Refinement, _reads_features, _segment_tile

if TYPE_CHECKING:
    from ..volume import StackResult

REFINEMENTS: tuple[str, ...] = ("fused", "sam", "none")


#: a tile decodes the candidates whose centre lies within this many object sizes of its core (the neighbour decodes
#: the rest); a decoded mask's centre can move from its candidate's when the decoder grows or trims it
CLAIM_MARGIN_OBJECTS = 0.5

#: objects below this fraction of the smallest whole exemplar are not kept (noise, or slivers cut by a border)
MIN_AREA_FRACTION = 0.25


@dataclass
class InstanceResult:
    labels: np.ndarray  # (H, W) uint16/uint32 instance labels, 0 background
    boxes: np.ndarray  # (N, 4) the box of every kept object, x0, y0, x1, y1 (image pixels)
    scores: np.ndarray  # (N,) confidence of every kept object (decoder IoU or mean foreground probability)
    candidates: int  # candidate objects before duplicate/size filtering
    scale: WorkingScale | None = None
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    blank_tiles: int = 0  # tiles of one flat value (empty canvas), skipped without an encoder pass
    low_confidence: int = 0  # decoded objects not kept: smaller and less certain than every whole reference object


class _Painter:
    """Instance labels of the whole image, painted object by object with a duplicate check."""

    def __init__(self, shape: tuple[int, int], min_area: float, duplicate_overlap: float) -> None:
        self.labels = np.zeros(shape, np.uint32)
        self.min_area, self.duplicate_overlap = min_area, duplicate_overlap
        self.boxes: list[np.ndarray] = []
        self.scores: list[float] = []

    def paint(self, mask: np.ndarray, y0: int, x0: int, score: float) -> bool:
        area = int(mask.sum())
        if area < self.min_area:
            return False
        view = self.labels[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]]
        free = mask & (view == 0)
        n_free = int(free.sum())
        if n_free < (1 - self.duplicate_overlap) * area or n_free < self.min_area:
            return False
        view[free] = len(self.scores) + 1
        rows, cols = np.nonzero(free)
        self.boxes.append(np.array([x0 + cols.min(), y0 + rows.min(), x0 + cols.max(), y0 + rows.max()], np.float32))
        self.scores.append(score)
        return True

    def result(self) -> np.ndarray:
        n = len(self.scores)
        return self.labels.astype(np.uint16) if n < 2**16 else self.labels


def segment_with_exemplars(
    segmenter: PromptableSegmenter,
    model: ExemplarModel,
    image: np.ndarray,
    *,
    refine: Refinement = "fused",
    object_size: float | None = None,
    size_source: str = "object size",
    duplicate_overlap: float = 0.5,
    min_area_fraction: float = MIN_AREA_FRACTION,
    max_area_factor: float = 4.0,
    local_decoding: bool = True,
    name: str = "target",
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
    timer: _Timer | None = None,
) -> InstanceResult:
    """Every object like the exemplars in ``image`` (H, W, C), tile by tile at the working scale of the objects'
    size: ``object_size`` (pixels) when given, else the exemplars' size, or the target's own when its objects are
    measurably larger or smaller (:func:`estimate_object_size`); ``size_source`` names where a given ``object_size``
    came from (the working scale's ``source``). ``local_decoding``: decode each candidate's box
    from the tile's tokens near it (the segmenter's ``local``; ~4x faster, benchmarks/README.md)."""
    if refine not in REFINEMENTS:
        raise PromptsegError(f"refine must be one of {REFINEMENTS}, got {refine!r}")
    timer = timer or _Timer()
    image = as_channels_last(image, name=name)  # (H, W) or (H, W, C): the console passes either
    report = progress or (lambda fraction, message: None)
    if max(model.channels) >= image.shape[-1]:
        raise PromptsegError(
            f"{name}: {image.shape[-1]} channel(s), but the exemplars were colour images with "
            f"{max(model.channels) + 1}; use targets of the exemplars' kind"
        )
    # a grey reference's background level has one value per channel it was stored with (3 for grey saved as RGB):
    # a target of another count (a 2-channel fluorescence image) failed deep inside with numpy's broadcast error
    stored = 0 if model.background is None else np.size(model.background)
    if stored > 1 and image.shape[-1] not in (1, stored):
        raise PromptsegError(
            f"{name}: {image.shape[-1]} channels, but the exemplars were learnt on a grey image stored with {stored}; "
            "choose the channel to segment with channels=[...] (CLI: --channels; widgets: the channels field beside "
            "the channel axis), or use targets of the exemplars' kind"
        )
    h, w = image.shape[:2]
    window = IntensityWindow.measure(image, model.normalize, background=True, name=name)
    t0 = time.perf_counter()
    if object_size is None:
        object_size, source = estimate_object_size(model, image, segmenter.input_size, window)
    else:
        source = size_source
    timer.add("object_size_s", t0)
    if object_size != model.object_size:
        # the exemplars' objects, seen at the target's magnification
        r2 = (object_size / model.object_size) ** 2
        model = replace(
            model,
            object_size=object_size,
            min_area=model.min_area * r2,
            max_area=model.max_area * r2,
            median_area=model.median_area * r2,
        )
    scale = choose_scale(image.shape, segmenter.input_size, object_size, source=source)
    grid = TileGrid((h, w), scale.tile, scale.overlap)
    painter = _Painter((h, w), max(4.0, min_area_fraction * model.min_area), duplicate_overlap)
    max_area = max_area_factor * model.max_area
    candidates = blank_tiles = low_confidence = 0
    embed = _reads_features(model, refine)
    for n, tile in enumerate(grid):
        if cancel is not None and cancel():
            raise CancelledError("cancelled")
        report(n / len(grid), f"{name}: tile {n + 1}/{len(grid)}")
        t0 = time.perf_counter()
        inputs = _tile_inputs(segmenter, image, tile, window, name, skip_blank=True, embed=embed)
        timer.add("embed_s", t0)
        if inputs is None:
            blank_tiles += 1
            continue
        embedding, working = inputs
        objects = _segment_tile(
            segmenter,
            model,
            embedding,
            _classifier_input(window, working, model.standardize, model.background, model.stain),
            tile.shape,
            refine,
            min_area_fraction,
            scale.scale,
            timer,
            local_decoding,
            # near the core's edge both tiles decode and the owner is decided on the decoded mask (below)
            claimed=lambda rows, cols, tile=tile: tile.owns(
                tile.x0 + cols, tile.y0 + rows, margin=CLAIM_MARGIN_OBJECTS * model.object_size
            ),
        )
        candidates += len(objects)
        t0 = time.perf_counter()
        for mask, oy, ox, score in sorted(objects, key=lambda o: -o[3]):
            area = int(mask.sum())
            if area > max_area:
                continue
            rows, cols = np.nonzero(mask)
            cy, cx = tile.y0 + oy + rows.mean(), tile.x0 + ox + cols.mean()
            if not tile.owns(np.array(cx), np.array(cy)):
                continue  # a neighbouring tile holds this object whole and paints it
            # smaller and less certain than every whole reference object: unlike anything the reference taught (the
            # confidence alone also dropped large true glands: GlaS Dice 0.88 -> 0.86; benchmarks/README.md)
            if refine != "none" and score < model.min_score and area < model.min_area:
                low_confidence += int(area >= painter.min_area)  # counted when nothing else would drop it
                continue
            painter.paint(mask, tile.y0 + oy, tile.x0 + ox, score)
        timer.add("paint_s", t0)
    report(1.0, f"{name}: {len(painter.scores)} objects")
    labels = painter.result()
    warnings = [] if painter.scores else [f"{name}: no object like the exemplars was found"]
    if scale.capped:
        warnings.append(scale.cap_warning(name))
    if blank_tiles == len(grid):
        warnings = [f"{name}: the image holds one value everywhere: nothing to segment"]
    elif low_confidence > len(painter.scores):
        warnings.append(
            f"{name}: {low_confidence} objects were left out as smaller and less certain than any whole object of the "
            f"reference (decoder confidence < {model.min_score:.2f}), more than were kept ({len(painter.scores)}); if "
            "this image differs from the reference (stain, modality, magnification), use a reference like it"
        )
    return InstanceResult(
        labels=labels,
        boxes=np.array(painter.boxes, np.float32).reshape(-1, 4),
        scores=np.array(painter.scores, np.float32),
        candidates=candidates,
        scale=scale,
        timings=dict(timer.timings),
        warnings=warnings,
        blank_tiles=blank_tiles,
        low_confidence=low_confidence,
    )


def segment_instances_like(
    reference: np.ndarray,
    reference_labels: np.ndarray,
    target: np.ndarray,
    *,
    segmenter: PromptableSegmenter | None = None,
    object_size: float | None = None,
    refine: Refinement = "fused",
    use_encoder: bool = True,
    duplicate_overlap: float = 0.5,
    min_area_fraction: float = MIN_AREA_FRACTION,
    channel_axis: int | None = None,
    channels: list[int] | None = None,
    normalize: Normalization = "auto",
    name: str = "target",
    model: ExemplarModel | None = None,
    partial: bool = False,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
) -> InstanceResult | StackResult:
    """Instance labels of every object in ``target`` like the labelled objects of ``reference``.

    ``object_size``: typical object diameter in pixels (default: the reference objects' median); it sets the
    working scale. ``model``: an :class:`ExemplarModel` from :func:`fit_exemplars` to reuse across targets.
    ``partial``: the reference labels only some of its objects; background is then learned only near them (as
    :func:`find_all_like` does), where by default every unlabelled pixel is taught as background.

    A pyramid target (a multiscale layer's data, levels largest first) is read at the coarsest level that still has
    the objects' working scale, as the CLI reads an OME-Zarr; the labels and boxes come back at full resolution.

    A stack layer ((Z, Y, X), an RGB (Z, Y, X, 3), with ``channel_axis`` a multichannel one) as the target is
    segmented as ``promptseg oneshot`` segments a stack: plane by plane at one object size (``object_size``, else
    measured on its middle plane), ids linked across planes (:mod:`.stack_planes`); a
    :class:`~..volume.StackResult` is returned, its ``labels`` the layer's (Z, Y, X) and ``planes`` each plane's
    :class:`InstanceResult`. A stack layer as the reference gives the plane its (Z, Y, X) labels mark. A multiscale
    stack layer is read at the level ``promptseg oneshot`` reads it at (:class:`~..volume.StackResult`'s fields).

    Example (in napari's console: the sample *Nuclei with ground truth* as the reference, the sample *Nuclei for a
    text prompt* as the target)::

        result = segment_instances_like(
            viewer.layers["nuclei"], viewer.layers["nuclei ground truth"], viewer.layers["nuclei (text prompt)"]
        )
        viewer.add_labels(result.labels, name="nuclei like the reference")

    Example (in napari's console, over a (Z, Y, X) stack whose nuclei of one plane are labelled)::

        stack = viewer.layers["stack"]
        result = segment_instances_like(stack, viewer.layers["nuclei of plane 1"], stack)
        viewer.add_labels(result.labels, name="nuclei in 3D", **layer_placement(stack))
    """
    from ...io.layer_objects import layer_pixels
    from ..oneshot.stack_layers import reference_planes
    from ..volume import is_stack_layer

    # a stack reference layer: the plane its labels mark, as promptseg oneshot --reference STACK takes it
    reference, reference_labels, reference_axis = reference_planes(reference, reference_labels, channel_axis)
    stack = target if is_stack_layer(target, channel_axis) else None
    name = target.name if stack is not None and name == "target" else name
    reference, target = layer_pixels(reference, "reference"), layer_pixels(target, "target")
    reference_labels = layer_pixels(reference_labels, "reference_labels")
    if segmenter is None:
        from ...models import load_segmenter

        segmenter = load_segmenter()
    timer = _Timer()
    advice = None  # about the reference's labelling, when it is fitted here
    if model is None:
        ref_hwc = as_channels_last(reference, channel_axis=reference_axis, channels=channels, name="reference")
        ref_labels = _check_reference_labels(ref_hwc, reference_labels)
        model = fit_exemplars(
            segmenter,
            ref_hwc,
            ref_labels,
            known=known_near_labels(ref_labels) if partial else None,
            object_size=object_size,
            use_encoder=use_encoder,
            normalize=normalize,
            timer=timer,
        )
        advice = few_labels_warning(count_objects(ref_labels), partial, "pass partial=True")
    if stack is not None:  # plane by plane at one size, ids linked: the CLI's oneshot on a stack
        from .stack_planes import instances_over_stack, stack_planes

        def planes_of(pixels: object, plane_axis: int | None, factor: float):
            # on a stack pyramid's level the objects are sought at their size there (as the CLI's), not measured
            return stack_planes(
                segmenter,
                model,
                pixels,
                object_size=level_object_size(model, object_size, factor),
                size_source="object size" if object_size else "reference objects",
                channel_axis=plane_axis,
                channels=channels,
                refine=refine,
            )

        def plane_scale(plane_shape: tuple[int, int]) -> float:
            # the level a 2D target pyramid is read at for these objects (the CLI's choice too)
            return choose_scale(plane_shape, segmenter.input_size, object_size or model.object_size).scale

        result = instances_over_stack(planes_of, stack, channel_axis, name, progress, cancel, plane_scale)
        result.warnings[:0] = [advice] if advice else []
        return result
    # the level of the objects' size, known once the exemplars are fitted (the CLI's choice too)
    objects = object_size or model.object_size
    level = read_pyramid_level(
        target, lambda shape: choose_scale(shape, segmenter.input_size, objects).scale, channel_axis
    )
    size = object_size
    if level is not None:  # the objects sought at their size on the level
        target, size = level.array, level_object_size(model, object_size, level.factor)
    hwc = as_channels_last(target, channel_axis=channel_axis, channels=channels, name=name)
    result = segment_with_exemplars(
        segmenter,
        model,
        hwc,
        refine=refine,
        object_size=size,
        duplicate_overlap=duplicate_overlap,
        min_area_fraction=min_area_fraction,
        name=name,
        progress=progress,
        cancel=cancel,
        timer=timer,
    )
    if advice:
        result.warnings.insert(0, advice)
    return _instances_at_full_resolution(result, level)


def _instances_at_full_resolution(result: InstanceResult, level: PyramidRead | None) -> InstanceResult:
    """Instances found on a pyramid level with their labels and boxes on the full-resolution grid (as the CLI
    writes and reports them)."""
    if level is not None:
        result.labels = level.labels_to_full(result.labels)
        result.boxes = level.to_full(result.boxes).astype(np.float32)
    return result


def find_all_like(
    image: np.ndarray,
    boxes: np.ndarray | list,
    *,
    segmenter: PromptableSegmenter | None = None,
    object_size: float | None = None,
    refine: Refinement = "fused",
    channel_axis: int | None = None,
    channels: list[int] | None = None,
    normalize: Normalization = "auto",
    name: str = "image",
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
) -> InstanceResult | StackResult:
    """Every object in ``image`` like the few the user boxed ("find all like these"; SAM3's exemplar prompts).

    The boxed objects are segmented first (at the boxes' working scale) and become the exemplars. Unlabelled
    objects are everywhere in the image, so background is learned only near the exemplars: inside each box outside
    its object, and in a ring of half a box around it. Returns the boxed objects and all the others as instances.

    A pyramid (a multiscale layer's data, levels largest first; boxes in full-resolution pixels) is read at the
    coarsest level that still has the boxes' working scale, as the CLI reads an OME-Zarr; the labels and boxes come
    back at full resolution. napari layers are taken as they are: an Image layer, and a Shapes layer of boxes read
    in its pixels (as :func:`napari_promptseg.segment` reads them).

    A stack layer ((Z, Y, X), an RGB (Z, Y, X, 3), with ``channel_axis`` a multichannel one) with boxes drawn on one
    of its planes (a Shapes layer of the stack's axes): the boxed objects are learnt on that plane, and every plane
    is segmented with them at the boxes' size, ids linked across planes, as ``promptseg oneshot`` segments a stack
    (:mod:`.stack_planes`); a :class:`~..volume.StackResult` is returned, ``planes`` each plane's
    :class:`InstanceResult`. A multiscale stack layer is read at the level the boxes' objects need
    (:class:`~..volume.StackResult`'s ``pyramid_level``; its ``labels`` back at full resolution lazily).

    Example (in napari's console, over the sample *Nuclei with ground truth*, a few nuclei boxed on a Shapes
    layer)::

        result = find_all_like(viewer.layers["nuclei"], viewer.layers["Shapes"])
        viewer.add_labels(result.labels, name="all nuclei")

    Example (in napari's console, over a (Z, Y, X) stack, a few nuclei boxed on one plane)::

        result = find_all_like(viewer.layers["stack"], viewer.layers["boxes on plane 1"])
        viewer.add_labels(result.labels, name="all nuclei in 3D", **layer_placement(viewer.layers["stack"]))
    """
    from ...io.layer_objects import layer_pixels, layer_prompts
    from ..interactive import prompt_list, prompts_working_scale
    from ..volume import is_stack_layer

    prompts = layer_prompts(image, boxes, (), ())  # a Shapes layer's rectangles, in the image's pixels
    boxes = prompts.boxes
    if segmenter is None:
        from ...models import load_segmenter

        segmenter = load_segmenter()
    if is_stack_layer(image, channel_axis):
        from .stack_planes import find_all_over_stack

        options = {"object_size": object_size, "refine": refine, "channels": channels, "normalize": normalize}
        name = image.name if name == "image" else name
        return find_all_over_stack(
            segmenter, image, prompts.plane, boxes, channel_axis, name, progress, cancel, options
        )
    image = layer_pixels(image)
    boxes = prompt_list(boxes, 4, "boxes")
    level = read_pyramid_level(
        image,
        lambda shape: prompts_working_scale(shape, segmenter.input_size, boxes, object_size),
        channel_axis,
    )
    if level is not None:  # boxes and object size in the level's pixels
        image, boxes = level.array, [level.to_level(box) for box in boxes]  # a malformed box: check_box says so
        object_size = None if object_size is None else object_size / level.factor
    report = progress or (lambda fraction, message: None)
    hwc = as_channels_last(image, channel_axis=channel_axis, channels=channels, name=name)
    timer = _Timer()
    examples = learn_examples(segmenter, hwc, boxes, object_size, normalize, name, report, cancel, timer)

    def sub(fraction: float, message: str) -> None:
        report(0.2 + 0.8 * fraction, message)

    result = segment_with_exemplars(
        segmenter,
        examples.model,
        hwc,
        refine=refine,
        object_size=examples.size,
        size_source=examples.source,
        name=name,
        progress=sub,
        cancel=cancel,
        timer=timer,
    )
    result.warnings.extend(w for w in examples.warnings if w not in result.warnings)
    return _instances_at_full_resolution(result, level)


@dataclass
class BoxedExamples:
    """What find-all learns from the boxed objects: the exemplars, the size of the objects sought and where it came
    from, and what to say of the boxes (clipped, outliers, repeats, boxes that gave nothing)."""

    model: ExemplarModel
    size: float
    source: str
    warnings: list[str]


def learn_examples(
    segmenter: PromptableSegmenter,
    hwc: np.ndarray,
    boxes: list,
    object_size: float | None,
    normalize: Normalization,
    name: str,
    report: ProgressCallback,
    cancel: Callable[[], bool] | None,
    timer: _Timer,
) -> BoxedExamples:
    """The boxed objects of ``hwc`` (H, W, C) segmented and learnt as exemplars, background learnt only near the
    boxes (find-all's first 20 % of ``report``); a 2D image's and a stack's plane's (the planes then all segmented
    with them, :mod:`.stack_planes`)."""
    from ..interactive import NO_OBJECT, check_box, prompt_list, segment_prompts

    h, w = hwc.shape[:2]
    clipped: list[str] = []
    checked = [check_box(b, (h, w), f"box {i + 1}", clipped) for i, b in enumerate(prompt_list(boxes, 4, "boxes"))]
    checked = np.array(checked, np.float32).reshape(-1, 4)
    if len(checked) == 0:
        raise PromptsegError("find all: box at least one example object")
    t0 = time.perf_counter()
    report(0.0, f"segmenting the {len(checked)} example(s)")
    examples = segment_prompts(
        hwc, segmenter, boxes=checked, object_size=object_size, normalize=normalize, name=name, channel_axis=-1
    )
    timer.add("examples_s", t0)
    if not (examples.labels > 0).any():
        # why (boxes on blank pixels, or on no object), not only advice for loose boxes, which these may not be
        why = "; ".join(w.removeprefix(f"{name}: ") for w in examples.warnings)
        raise PromptsegError(
            f"{name}: the boxed examples gave no object" + (f" ({why})" if why else "") + "; box objects in the image"
        )
    size = examples.scale.object_size  # the given size, else the boxes' (segment_prompts chose the scale from it)
    known = known_near(checked, (h, w), 0.5 * size)
    if cancel is not None and cancel():
        raise CancelledError("cancelled")
    report(0.1, "learning the examples")
    model = fit_exemplars(
        segmenter,
        hwc,
        examples.labels,
        known=known,
        object_size=size,
        normalize=normalize,
        name=name,
        timer=timer,
        progress=lambda fraction, message: report(0.1 + 0.1 * fraction, f"learning the examples: {message}"),
        cancel=cancel,
    )
    warnings = [f"{name}: {warning}" for warning in clipped] + _outlier_boxes(checked, object_size)
    # what the examples' segmentation said (e.g. a box over an empty canvas, left empty), and which examples gave
    # nothing to learn from: they were left out without a word
    # (an example without an object is said below, in find-all's words)
    warnings.extend(w for w in examples.warnings if w not in warnings and NO_OBJECT not in w)
    found = {int(k) for k in np.unique(examples.labels)}
    empty = sorted(set(range(1, len(checked) + 1)) - found)
    # a box drawn twice (or nearly) gives its object to the first one: it repeats that box, it did not miss
    repeats = {k: _repeated_box(checked, k, found) for k in empty}
    for k, of in repeats.items():
        if of is not None:
            warnings.append(f"{name}: example box {k} repeats box {of} (the same object): learned from once")
    empty = [k for k in empty if repeats[k] is None]
    if empty:
        warnings.append(
            f"{name}: example box(es) {', '.join(map(str, empty))} gave no object and were not learned from; "
            "box objects like the others"
        )
    return BoxedExamples(model, size, examples.scale.source, warnings)


#: an example box overlapping one that gave an object by this much (intersection over union) is a repeat of it
REPEATED_BOX_IOU = 0.7


def _repeated_box(boxes: np.ndarray, k: int, found: set[int]) -> int | None:
    """The box (1-based, one that gave an object) that box ``k`` (1-based) repeats, or None."""
    x0, y0, x1, y1 = boxes[k - 1]
    for j in sorted(found - {0, k}):
        a0, b0, a1, b1 = boxes[j - 1]
        inter = max(0.0, min(x1, a1) - max(x0, a0)) * max(0.0, min(y1, b1) - max(y0, b0))
        union = (x1 - x0) * (y1 - y0) + (a1 - a0) * (b1 - b0) - inter
        if union > 0 and inter / union >= REPEATED_BOX_IOU:
            return j
    return None


#: an example box this many times the typical example's side holds something else than one object like them
OUTLIER_BOX = 3.0


def _outlier_boxes(boxes: np.ndarray, object_size: float | None = None) -> list[str]:
    """Warnings for example boxes far larger than the others (three boxes at least; of two, when one is far larger
    than the other and no ``object_size`` was given): one such box skews the object size and the background that
    are learnt (measured: a box over most of the nuclei sample beside 4 nuclei boxes, F1 0.45 -> 0.18); or for an
    ``object_size`` far from the boxes' size, which sets both in their place."""
    sides = np.sqrt(np.maximum(boxes[:, 2] - boxes[:, 0], 1) * np.maximum(boxes[:, 3] - boxes[:, 1], 1))
    typical = float(np.median(sides))
    unlike = []
    if object_size is not None and not 1 / OUTLIER_BOX <= object_size / typical <= OUTLIER_BOX:
        # the size given, not the examples', sets the scale and the ring of background learnt around the boxes (ten
        # times the nuclei's: about the whole image, 11 of 50 nuclei found instead of 44)
        unlike = [
            f"object size {object_size:g} px is {object_size / typical:.2g} times the example boxes' (typically "
            f"{typical:.0f} px a side): objects of {object_size:g} px are looked for, and background learnt within "
            f"{object_size / 2:g} px of the boxes; give the boxed objects' size, or none to take theirs"
        ]
    if len(sides) == 2 and object_size is None and sides.max() > OUTLIER_BOX * sides.min():
        # no third box to tell which one is unlike: the size learnt lies between them, like neither (a nucleus and a
        # box over most of the sample: 5 objects found instead of 39)
        return [
            f"example boxes 1 and 2 differ in size ({sides[0]:.0f} and {sides[1]:.0f} px a side): objects of "
            f"{typical:.0f} px are looked for, like neither; box objects of one kind, or give the object size"
        ]
    return unlike + [
        f"example box {k + 1} ({side:.0f} px a side) is far larger than the others (typically {typical:.0f} px): "
        "each example box should hold one object like the others; remove it, or box one object"
        for k, side in enumerate(sides)
        if len(sides) >= 3 and side > OUTLIER_BOX * typical
    ]
