"""Tile by tile: candidates, one box prompt each, masks fused with the foreground, stitched into instance labels.

One tile's objects (candidates, decoding, back to tile pixels) are :mod:`.tile_objects`; this module runs the tiles
over the image, stitches their objects and holds the public entry points (find-all of boxed examples:
:mod:`.find_all`).
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
