"""Tile by tile: candidates, one box prompt each, masks fused with the foreground, stitched into instance labels."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import torch
from scipy import ndimage

from ...errors import CancelledError, PromptsegError
from ...models.preprocessing import Normalization, as_channels_last
from ...models.protocols import Embedding, PromptableSegmenter
from ...tiling import (
    IntensityWindow,
    TileGrid,
    WorkingScale,
    choose_scale,
)
from ..labelling_advice import few_labels_warning
from .correspondence import margin_pixels, margin_regions
from .exemplars import (
    INTERIOR_WEIGHT,
    ExemplarModel,
    ProgressCallback,
    _check_reference_labels,
    _classifier_input,
    _pixel_features,
    _tile_inputs,
    _Timer,
    count_objects,
    estimate_object_size,
    fit_exemplars,
    known_near,
    known_near_labels,
)

Refinement = Literal["fused", "sam", "none"]
CandidateMode = Literal["watershed", "components", "both", "correspondence"]


REFINEMENTS: tuple[str, ...] = ("fused", "sam", "none")


#: prompts decoded per call (bounds the (n, 256, 256) logits in memory)
DECODE_BATCH = 32
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


def _candidates(
    proba: np.ndarray, diameter: float, mode: CandidateMode = "watershed", interior_weight: float = INTERIOR_WEIGHT
) -> _Candidates:
    """Candidate objects over working pixels from class probabilities.

    ``watershed``: seeds at the maxima of the foreground's distance transform plus the interior probability,
    at least a third of a typical object (``diameter`` working pixels) apart; watershed of that score inside the
    foreground (``interior_weight``: the interior probability's weight per diameter, ``ExemplarModel``'s). Holes
    are filled first, so textured nuclei are not cut along their texture; foreground without a seed becomes a
    candidate of its own. (Seeds from interior-class components did worse: benchmarks/README.md.)
    ``components``: every connected foreground component is one candidate (objects that touch are one object, as
    in glands annotated as a binary mask). ``both``: the watershed's parts, and the whole of every component it
    split; the decoder's confidence decides between them when painting.
    """
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    fg, p_in = proba[..., 0] < 0.5, proba[..., 1]
    fg = ndimage.binary_opening(ndimage.binary_fill_holes(fg))
    comps, n = ndimage.label(fg)
    if n == 0 or mode == "components":
        return _Candidates(comps.astype(np.int32), n, comps.astype(np.int32))
    dist = ndimage.distance_transform_edt(np.pad(fg, 1))[1:-1, 1:-1]
    # the classifier's edge class runs between touching objects, where the foreground has no neck for the distance
    # transform to split
    score = ndimage.gaussian_filter(dist, max(1.0, 0.1 * diameter)) + interior_weight * diameter * (
        ndimage.gaussian_filter(p_in, 1.0)
    )
    peaks = peak_local_max(
        score,
        min_distance=max(2, int(0.35 * diameter)),
        threshold_abs=0.1 * diameter,
        labels=comps,
        exclude_border=False,
    )
    markers = np.zeros(fg.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    regions = watershed(-score, markers, mask=fg) if len(peaks) else np.zeros(fg.shape, np.int32)
    orphans, m = ndimage.label(fg & (regions == 0))
    if m:
        regions = np.where(orphans > 0, orphans + regions.max(), regions)
    regions = regions.astype(np.int32)
    if mode == "watershed":
        return _Candidates(regions, int(regions.max()), comps.astype(np.int32))
    # components split into several parts come back whole, with ids after the parts'
    parts_per_comp = ndimage.maximum(regions, comps, np.arange(1, n + 1)) - ndimage.minimum(
        regions, comps, np.arange(1, n + 1)
    )
    split = np.flatnonzero(np.asarray(parts_per_comp) > 0) + 1
    whole_ids = np.zeros(n + 1, np.int32)
    whole_ids[split] = np.arange(1, len(split) + 1)
    whole = whole_ids[comps]
    return _Candidates(regions, int(regions.max()), comps.astype(np.int32), whole, len(split))


@dataclass
class _Candidates:
    """Candidate objects of one tile: ``parts`` (labels 1..n) and, with mode ``both``, ``whole`` components
    (labels 1..m) that overlap the parts; ``foreground`` labels the foreground's components."""

    parts: np.ndarray
    n: int
    foreground: np.ndarray
    whole: np.ndarray | None = None
    m: int = 0

    def masks(self) -> list[tuple[tuple[slice, slice], np.ndarray]]:
        """(bounding slices, own mask within them) of every candidate, parts first."""
        out = []
        for labels in (self.parts, self.whole):
            if labels is None:
                continue
            for i, sl in enumerate(ndimage.find_objects(labels), start=1):
                if sl is not None:
                    out.append((sl, labels[sl] == i))
        return out


def _to_image(
    soft: np.ndarray, win: tuple[int, int, int, int], factors: tuple[float, float], tile_shape: tuple[int, int]
) -> tuple[np.ndarray, int, int]:
    """A soft mask over working window (wy0, wy1, wx0, wx1) -> binary mask over tile pixels, and its origin."""
    wy0, wy1, wx0, wx1 = win
    fy, fx = factors  # working pixels per tile pixel
    oy0, oy1 = max(0, int(np.floor(wy0 / fy)) - 1), min(tile_shape[0], int(np.ceil(wy1 / fy)) + 1)
    ox0, ox1 = max(0, int(np.floor(wx0 / fx)) - 1), min(tile_shape[1], int(np.ceil(wx1 / fx)) + 1)
    ys = (np.arange(oy0, oy1) + 0.5) * fy - 0.5 - wy0
    xs = (np.arange(ox0, ox1) + 0.5) * fx - 0.5 - wx0
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    values = ndimage.map_coordinates(soft.astype(np.float32), [yy, xx], order=1, mode="nearest")
    return values > 0.5, oy0, ox0


def _segment_tile(
    segmenter: PromptableSegmenter,
    model: ExemplarModel,
    embedding: Embedding | None,
    working: np.ndarray,
    tile_shape: tuple[int, int],
    refine: Refinement,
    min_area_fraction: float,
    scale: float,
    timer: _Timer,
    local_decoding: bool = True,
    claimed: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> list[tuple[np.ndarray, int, int, float]]:
    """Objects of one tile (``tile_shape`` pixels): (mask over tile pixels, row origin, column origin, score).
    ``claimed(rows, cols)``: which candidate centres (tile pixels) this tile may own; the others are not decoded.
    ``embedding``: None when nothing reads it (:func:`_reads_features`)."""
    # candidates far smaller than the smallest exemplar are noise: not worth a decoder pass
    min_area = min_area_fraction * model.min_area * scale * scale
    margin = None
    if model.candidates == "correspondence":
        t0 = time.perf_counter()
        margin = margin_pixels(model.patch_reference, embedding, working.shape[:2])
        items = margin_regions(margin, model.median_area * scale * scale, model.object_size * scale)
        p_fg = foreground = None
        timer.add("seeds_s", t0)
    else:
        t0 = time.perf_counter()
        feats = _pixel_features(model.filter_channels, model.projection, embedding, working, model.use_encoder)
        proba = model.classifier.predict(feats)
        p_fg = 1.0 - proba[..., 0]
        timer.add("classify_s", t0)
        t0 = time.perf_counter()
        cands = _candidates(proba, model.object_size * scale, model.candidates, model.interior_weight)
        items = cands.masks()
        foreground = cands.foreground
        timer.add("seeds_s", t0)
    items = [(sl, own) for sl, own in items if own.sum() >= min_area]
    wh, ww = working.shape[:2]
    th, tw = tile_shape
    factors = (wh / th, ww / tw)
    if claimed is not None and items:
        # a candidate whose centre a neighbouring tile owns is decoded there, not here too
        centres = np.array([np.add(ndimage.center_of_mass(own), (sl[0].start, sl[1].start)) for sl, own in items])
        keep = claimed((centres[:, 0] + 0.5) / factors[0] - 0.5, (centres[:, 1] + 0.5) / factors[1] - 0.5)
        items = [item for item, k in zip(items, keep, strict=True) if k]
    if not items:
        return []
    # similar sizes decode together: a batch's token window is as large as its largest box (local decoding)
    items.sort(key=lambda item: max(item[1].shape))
    pad = max(2.0, 0.1 * model.object_size * scale)
    boxes_w = np.array(
        [
            (
                max(0.0, sl[1].start - pad),
                max(0.0, sl[0].start - pad),
                min(ww - 1.0, sl[1].stop - 1 + pad),
                min(wh - 1.0, sl[0].stop - 1 + pad),
            )
            for sl, _ in items
        ],
        np.float32,
    )
    objects = []
    t0 = time.perf_counter()
    for start in range(0, len(items), DECODE_BATCH):
        batch = items[start : start + DECODE_BATCH]
        bw = boxes_w[start : start + DECODE_BATCH]
        probs, scores = None, None
        if refine != "none":
            boxes_tile = bw / np.array([factors[1], factors[0], factors[1], factors[0]], np.float32)
            pred = segmenter.predict(embedding, boxes=boxes_tile, local=local_decoding)
            low = pred.low_res_logits[:, :1]
            size = embedding.transform.input_size
            if low.shape[-1] != size:
                low = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
            probs = torch.sigmoid(low[:, 0, :wh, :ww]).numpy()
            scores = pred.scores[:, 0]
        for k, (own_sl, own_mask) in enumerate(batch):
            x0, y0, x1, y1 = bw[k]
            win = (int(y0), int(y1) + 1, int(x0), int(x1) + 1)
            sl = (slice(win[0], win[1]), slice(win[2], win[3]))
            own = np.zeros((win[1] - win[0], win[3] - win[2]), bool)
            oy, ox = own_sl[0].start - win[0], own_sl[1].start - win[2]
            own[oy : oy + own_mask.shape[0], ox : ox + own_mask.shape[1]] = own_mask
            if refine == "none":
                soft = own.astype(np.float32)
                score = float((p_fg[sl] if margin is None else margin[sl] > 0)[own].mean())
            elif margin is not None:
                # the decoder's whole mask: a region's box may hold a whole object that the margin cut short
                soft = probs[k][sl]
                inside = soft > 0.5
                if not inside.any() or margin[sl][inside].mean() <= 0:
                    continue  # more like the reference background than its objects
                score = float(scores[k])
            else:
                free = own | (foreground[sl] == 0)  # pixels no other candidate claims
                sam = probs[k][sl]
                soft = (0.5 * (sam + p_fg[sl]) if refine == "fused" else sam) * free
                score = float(scores[k])
            mask, my, mx = _to_image(soft, win, factors, (th, tw))
            if mask.any():
                objects.append((mask, my, mx, score))
    timer.add("decode_s" if refine != "none" else "regions_s", t0)
    return objects


def _reads_features(model: ExemplarModel, refine: Refinement) -> bool:
    """Whether segmenting a tile reads its encoder features: the decoder does, the correspondence candidates and a
    classifier of encoder features too. Candidate regions of a filters-only classifier (``refine="none"``,
    ``use_encoder=False``) read none, and their tiles get no encoder pass."""
    encoder_features = model.use_encoder and model.projection is not None
    return refine != "none" or model.candidates == "correspondence" or encoder_features


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
) -> InstanceResult:
    """Instance labels of every object in ``target`` like the labelled objects of ``reference``.

    ``object_size``: typical object diameter in pixels (default: the reference objects' median); it sets the
    working scale. ``model``: an :class:`ExemplarModel` from :func:`fit_exemplars` to reuse across targets.
    ``partial``: the reference labels only some of its objects; background is then learned only near them (as
    :func:`find_all_like` does), where by default every unlabelled pixel is taught as background.
    """
    if segmenter is None:
        from ...models import load_segmenter

        segmenter = load_segmenter()
    timer = _Timer()
    hwc = as_channels_last(target, channel_axis=channel_axis, channels=channels, name=name)
    advice = None  # about the reference's labelling, when it is fitted here
    if model is None:
        ref_hwc = as_channels_last(reference, channel_axis=channel_axis, channels=channels, name="reference")
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
    result = segment_with_exemplars(
        segmenter,
        model,
        hwc,
        refine=refine,
        object_size=object_size,
        duplicate_overlap=duplicate_overlap,
        min_area_fraction=min_area_fraction,
        name=name,
        progress=progress,
        cancel=cancel,
        timer=timer,
    )
    if advice:
        result.warnings.insert(0, advice)
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
) -> InstanceResult:
    """Every object in ``image`` like the few the user boxed ("find all like these"; SAM3's exemplar prompts).

    The boxed objects are segmented first (at the boxes' working scale) and become the exemplars. Unlabelled
    objects are everywhere in the image, so background is learned only near the exemplars: inside each box outside
    its object, and in a ring of half a box around it. Returns the boxed objects and all the others as instances.
    """
    from ..interactive import check_box, prompt_list, segment_prompts

    if segmenter is None:
        from ...models import load_segmenter

        segmenter = load_segmenter()
    report = progress or (lambda fraction, message: None)
    hwc = as_channels_last(image, channel_axis=channel_axis, channels=channels, name=name)
    h, w = hwc.shape[:2]
    clipped: list[str] = []
    checked = [check_box(b, (h, w), f"box {i + 1}", clipped) for i, b in enumerate(prompt_list(boxes, 4, "boxes"))]
    checked = np.array(checked, np.float32).reshape(-1, 4)
    if len(checked) == 0:
        raise PromptsegError("find all: box at least one example object")
    timer = _Timer()
    t0 = time.perf_counter()
    report(0.0, f"segmenting the {len(checked)} example(s)")
    examples = segment_prompts(
        hwc, segmenter, boxes=checked, object_size=object_size, normalize=normalize, name=name, channel_axis=-1
    )
    timer.add("examples_s", t0)
    if not (examples.labels > 0).any():
        raise PromptsegError(f"{name}: the boxed examples gave empty masks; draw boxes tightly around objects")
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

    def sub(fraction: float, message: str) -> None:
        report(0.2 + 0.8 * fraction, message)

    result = segment_with_exemplars(
        segmenter,
        model,
        hwc,
        refine=refine,
        object_size=size,
        size_source=examples.scale.source,
        name=name,
        progress=sub,
        cancel=cancel,
        timer=timer,
    )
    result.warnings.extend([f"{name}: {warning}" for warning in clipped] + _outlier_boxes(checked, object_size))
    # what the examples' segmentation said (e.g. a box over an empty canvas, left empty), and which examples gave
    # nothing to learn from: they were left out without a word
    result.warnings.extend(w for w in examples.warnings if w not in result.warnings)
    empty = sorted(set(range(1, len(checked) + 1)) - {int(k) for k in np.unique(examples.labels)})
    if empty:
        result.warnings.append(
            f"{name}: example box(es) {', '.join(map(str, empty))} gave no object and were not learned from; "
            "box objects like the others"
        )
    return result


#: an example box this many times the typical example's side holds something else than one object like them
OUTLIER_BOX = 3.0


def _outlier_boxes(boxes: np.ndarray, object_size: float | None = None) -> list[str]:
    """Warnings for example boxes far larger than the others (three boxes at least; of two, when one is far larger
    than the other and no ``object_size`` was given): one such box skews the object size and the background that
    are learnt (measured: a box over most of the nuclei sample beside 4 nuclei boxes, F1 0.45 -> 0.18)."""
    sides = np.sqrt(np.maximum(boxes[:, 2] - boxes[:, 0], 1) * np.maximum(boxes[:, 3] - boxes[:, 1], 1))
    typical = float(np.median(sides))
    if len(sides) == 2 and object_size is None and sides.max() > OUTLIER_BOX * sides.min():
        # no third box to tell which one is unlike: the size learnt lies between them, like neither (a nucleus and a
        # box over most of the sample: 5 objects found instead of 39)
        return [
            f"example boxes 1 and 2 differ in size ({sides[0]:.0f} and {sides[1]:.0f} px a side): objects of "
            f"{typical:.0f} px are looked for, like neither; box objects of one kind, or give the object size"
        ]
    return [
        f"example box {k + 1} ({side:.0f} px a side) is far larger than the others (typically {typical:.0f} px): "
        "each example box should hold one object like the others; remove it, or box one object"
        for k, side in enumerate(sides)
        if len(sides) >= 3 and side > OUTLIER_BOX * typical
    ]
