"""Many instances from exemplars: every object in a target that looks like the labelled objects of a reference.

Microscopy needs all nuclei / all glands of an image, not one mask, at the image's own resolution. The pipeline
(each stage measured in ``benchmarks/eval_instances.py``):

1. **working scale** from the exemplars' typical size (:mod:`..tiling`): a typical object spans ~10 % of the model
   input; reference and target are tiled at that scale (same pixel size assumed, or ``object_size`` given);
2. **foreground probability** learned from the reference (:mod:`.pixel_classifier`, ilastik's recipe): a random
   forest on intensity filters plus the segmenter's encoder features, three classes (background, object interior,
   object rim), fitted on the reference's labels;
3. **seeds and splitting**: interior components are the seeds; a seed much larger than a typical object is split
   at the maxima of its distance transform; a watershed of the background probability from the seeds, inside the
   foreground, gives one candidate per object (foreground without a seed becomes a candidate of its own);
4. **one box prompt per candidate**, decoded in batches by the segmenter in the tile's cached embedding; the
   decoder's probability and the classifier's foreground probability are averaged (``refine="fused"``), limited to
   pixels no other candidate claims; ``"sam"`` keeps the decoder's mask alone, ``"none"`` the watershed region;
5. **stitching** (:mod:`..tiling`): the tile whose core holds an object's centre paints it; a mask mostly covering
   objects already painted is a duplicate; objects down to ``min_area_fraction`` of the smallest exemplar are kept.

"Find all like these" (:func:`find_all_like`) is the same pipeline with the user's boxed objects as exemplars: their
masks come from the segmenter, and background is learned only near the boxes (elsewhere unlabelled objects hide).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import torch
from scipy import ndimage

from ..errors import CancelledError, PromptsegError
from ..models.preprocessing import Normalization, as_channels_last
from ..models.protocols import Embedding, PromptableSegmenter
from ..tiling import (
    IntensityWindow,
    Tile,
    TileGrid,
    WorkingScale,
    box_object_size,
    choose_scale,
    read_tile,
    to_working,
    typical_object_size,
)
from .pixel_classifier import (
    EncoderProjection,
    PixelClassifier,
    encoder_pixel_features,
    filter_features,
    informative_channels,
    training_classes,
)

ProgressCallback = Callable[[float, str], None]
Refinement = Literal["fused", "sam", "none"]
REFINEMENTS: tuple[str, ...] = ("fused", "sam", "none")
#: reference tiles the classifier learns from at most (those holding the most labelled pixels)
MAX_REFERENCE_TILES = 6
#: fewer exemplar objects than this get a strongly regularised classifier
FEW_EXEMPLARS = 10
#: a target's own object size may differ from the exemplars' by this factor at most
MAX_SIZE_CHANGE = 3.0
#: a quick foreground covering more of the target than this has not found separate objects
MAX_FOREGROUND = 0.5
#: prompts decoded per call (bounds the (n, 256, 256) logits in memory)
DECODE_BATCH = 32


@dataclass
class InstanceResult:
    labels: np.ndarray  # (H, W) uint16/uint32 instance labels, 0 background
    boxes: np.ndarray  # (N, 4) the box of every kept object, x0, y0, x1, y1 (image pixels)
    scores: np.ndarray  # (N,) confidence of every kept object (decoder IoU or mean foreground probability)
    candidates: int  # candidate objects before duplicate/size filtering
    scale: WorkingScale | None = None
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def reference_objects(labels: np.ndarray) -> np.ndarray:
    """Instance labels from a labels array (kept) or a binary mask (its connected components)."""
    labels = np.asarray(labels)
    if labels.dtype == bool or labels.max() <= 1:
        labels, _ = ndimage.label(labels > 0)
    return labels


def is_many_objects(labels: np.ndarray, min_objects: int = 3) -> bool:
    """True when reference labels hold several objects (instance ids, or several components of a mask): the
    reference then asks for instances, not one region."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        return False
    if labels.dtype != bool and labels.max() > 1:
        return len(np.unique(labels[labels > 0])) >= min_objects
    return ndimage.label(labels > 0)[1] >= min_objects


@dataclass
class _Timer:
    timings: dict[str, float] = field(default_factory=dict)

    def add(self, key: str, t0: float) -> None:
        self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - t0


@dataclass
class ExemplarModel:
    """What the exemplars taught: the working scale's object size, the object statistics and the classifier."""

    object_size: float  # typical object diameter, image pixels
    min_area: float  # smallest exemplar, image pixels
    max_area: float  # largest exemplar, image pixels
    median_area: float
    classifier: PixelClassifier
    projection: EncoderProjection | None
    use_encoder: bool
    normalize: Normalization
    channels: tuple[int, ...]  # image channels the filters read (one for gray stored as RGB)
    standardize: bool = False  # colour images: classifier input z-scored per channel over each image
    size_classifier: PixelClassifier | None = None  # filters only: a quick foreground to measure targets' objects
    reference_width: float = 0.0  # that foreground's typical object width on the reference, image pixels


def _tile_inputs(
    segmenter: PromptableSegmenter,
    image: np.ndarray,
    tile: Tile,
    window: IntensityWindow,
    name: str,
) -> tuple[Embedding, np.ndarray]:
    """Embedding of one tile and its pixels at the working scale (what the encoder saw, before padding)."""
    pixels = read_tile(image, tile, window)
    embedding = segmenter.embed(pixels, normalize="none", name=f"{name} tile {tile.index}")
    nh, nw = embedding.transform.resized_shape
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    if (nh, nw) != pixels.shape[:2]:
        x = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    return embedding, x[0].permute(1, 2, 0).numpy()


def _pixel_features(
    channels: tuple[int, ...],
    projection: EncoderProjection | None,
    embedding: Embedding,
    working: np.ndarray,
    use_encoder: bool,
) -> np.ndarray:
    feats = [filter_features(working, channels)]
    if use_encoder and projection is not None:
        transform = embedding.transform
        feats.append(encoder_pixel_features(embedding.features, projection, transform.input_size, working.shape[:2]))
    return np.concatenate(feats, axis=-1)


def _labels_to_working(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of labels to the working grid (pixel centres, as torch's align_corners=False)."""
    h, w = labels.shape
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * h / shape[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * w / shape[1]).astype(np.int64), w - 1)
    return labels[np.ix_(rows, cols)]


def fit_exemplars(
    segmenter: PromptableSegmenter,
    image: np.ndarray,
    labels: np.ndarray,
    *,
    known: np.ndarray | None = None,
    object_size: float | None = None,
    use_encoder: bool = True,
    normalize: Normalization = "auto",
    name: str = "reference",
    timer: _Timer | None = None,
) -> ExemplarModel:
    """Learn the exemplars' objects from ``image`` (H, W, C) and ``labels`` (instance ids). ``known``: where the
    labels are complete (default everywhere); only there is unlabelled ground taught as background."""
    timer = timer or _Timer()
    labels = reference_objects(labels)
    ids, areas = np.unique(labels[labels > 0], return_counts=True)
    if len(ids) == 0:
        raise PromptsegError(f"{name}: no labelled object; label at least one object (non-zero pixels)")
    size = float(object_size) if object_size else typical_object_size(labels)
    scale = choose_scale(image.shape, segmenter.input_size, size, source="reference objects")
    grid = TileGrid(image.shape, scale.tile, scale.overlap)
    window = IntensityWindow.measure(image, normalize)
    known_mask = np.ones(labels.shape, bool) if known is None else np.asarray(known, bool)
    # tiles with the most labelled pixels teach the classifier
    counts = [int((labels[t.slices] > 0).sum()) for t in grid]
    order = sorted(range(len(grid)), key=lambda i: (-counts[i], i))
    chosen = [grid.tiles[i] for i in order[:MAX_REFERENCE_TILES] if counts[i] > 0]
    t0 = time.perf_counter()
    embeddings, workings = [], []
    for tile in chosen:
        emb, work = _tile_inputs(segmenter, image, tile, window, name)
        embeddings.append(emb)
        workings.append(work)
    timer.add("reference_embed_s", t0)
    t0 = time.perf_counter()
    projection = None
    if use_encoder:
        grids = []
        for emb, work in zip(embeddings, workings, strict=True):
            g = emb.features.shape[-1]
            per_cell = emb.transform.input_size / g
            gh, gw = int(np.ceil(work.shape[0] / per_cell)), int(np.ceil(work.shape[1] / per_cell))
            grids.append(emb.features[0, :, :gh, :gw].float().permute(1, 2, 0))
        projection = EncoderProjection.fit(grids)
    rim = max(1, round(scale.scale * size / 12))
    channels = informative_channels(image)
    # stained slides (colour) differ in stain strength: the classifier sees each image z-scored per channel. Not
    # fluorescence: with a dark background, mean and spread follow the number of objects (measured: DSB F1 0.67 ->
    # 0.20 z-scored; MoNuSeg Dice 0.25 -> 0.69 z-scored; benchmarks/README.md)
    standardize = len(channels) > 1
    feats, classes = [], []
    for tile, emb, work in zip(chosen, embeddings, workings, strict=True):
        tile_labels = _labels_to_working(labels[tile.slices], work.shape[:2])
        tile_known = _labels_to_working(known_mask[tile.slices], work.shape[:2])
        cls = training_classes(tile_labels, rim)
        cls = np.where(tile_known | (tile_labels > 0), cls, 255).astype(np.uint8)  # 255 = not taught
        feats.append(
            _pixel_features(channels, projection, emb, _classifier_input(window, work, standardize), use_encoder)
        )
        classes.append(cls)
    flat_known = [c != 255 for c in classes]
    taught_x = [f[k] for f, k in zip(feats, flat_known, strict=True)]
    taught_y = [c[k] for c, k in zip(classes, flat_known, strict=True)]
    # a few exemplars (find all like these: 2-5 boxes) are memorised pixel by pixel by deep trees; shallow trees
    # with large leaves generalise from them (measured: recall 0.08 -> 0.6 from 3 nuclei, benchmarks/README.md)
    few = len(ids) < FEW_EXEMPLARS
    classifier = (PixelClassifier(max_depth=5, min_leaf=50) if few else PixelClassifier()).fit(taught_x, taught_y)
    n_filters = filter_features(workings[0][:4, :4], channels).shape[-1]
    size_classifier = PixelClassifier(trees=12, max_depth=10).fit([x[:, :n_filters] for x in taught_x], taught_y)
    widths = [_object_widths(size_classifier.predict(f[..., :n_filters]), scale.scale) for f in feats]
    reference_width = _median_width(np.concatenate(widths)) / scale.scale
    true_width = _median_width(_object_widths(np.where(labels > 0, 0.0, 1.0)[..., None], 1.0))
    if len(channels) > 1 or not 1 / SIZE_TOLERANCE <= reference_width / max(true_width, 1e-6) <= SIZE_TOLERANCE:
        # targets' objects are measured only where the quick foreground measures the exemplars right, and on
        # single-channel images: stain variation between colour slides misleads it (benchmarks/README.md)
        size_classifier, reference_width = None, 0.0
    timer.add("fit_classifier_s", t0)
    return ExemplarModel(
        object_size=size,
        min_area=float(areas.min()),
        max_area=float(areas.max()),
        median_area=float(np.median(areas)),
        classifier=classifier,
        projection=projection,
        use_encoder=use_encoder,
        normalize=normalize,
        channels=channels,
        standardize=standardize,
        size_classifier=size_classifier,
        reference_width=reference_width,
    )


def _classifier_input(window: IntensityWindow, working: np.ndarray, standardize: bool) -> np.ndarray:
    return window.standardize(working) if standardize else working


def _object_widths(proba: np.ndarray, scale: float, min_area: float = 9.0) -> np.ndarray:
    """Widths (working pixels: twice the largest inscribed radius) of the foreground components of class
    probabilities. Touching objects merge into one component but keep their width, so this measures single
    objects where areas would measure clusters."""
    fg = proba[..., 0] < 0.5
    comps, n = ndimage.label(fg)
    if n == 0:
        return np.zeros(0)
    dist = ndimage.distance_transform_edt(np.pad(fg, 1))[1:-1, 1:-1]
    widths = 2 * ndimage.maximum(dist, comps, np.arange(1, n + 1))
    areas = ndimage.sum_labels(fg, comps, np.arange(1, n + 1))
    return np.asarray(widths)[np.asarray(areas) >= min_area]


def _median_width(widths: np.ndarray) -> float:
    return float(np.median(widths)) if len(widths) else 0.0


#: a target's objects are measured; outside this ratio to the exemplars' size, the target gets its own scale
SIZE_TOLERANCE = 1.3
MAX_SAMPLE_TILES = 4


def estimate_object_size(model: ExemplarModel, image: np.ndarray, input_size: int) -> tuple[float, str]:
    """Typical object diameter in ``image`` (pixels): the exemplars' size, unless a quick foreground (filters only,
    at the exemplars' working scale, on up to 4 tiles) shows objects of another width. Microscopes image the same
    cells at several magnifications; one reference must serve them all."""
    if model.size_classifier is None or model.reference_width <= 0:
        return model.object_size, "reference objects"
    scale = choose_scale(image.shape, input_size, model.object_size)
    grid = TileGrid(image.shape, scale.tile, scale.overlap)
    window = IntensityWindow.measure(image, model.normalize)
    picks = np.unique(np.linspace(0, len(grid) - 1, min(MAX_SAMPLE_TILES, len(grid))).round().astype(int))
    widths, fg = [], []
    for i in picks:
        tile = grid.tiles[int(i)]
        work = to_working(read_tile(image, tile, window), scale.scale)
        proba = model.size_classifier.predict(
            filter_features(_classifier_input(window, work, model.standardize), model.channels)
        )
        widths.append(_object_widths(proba, scale.scale))
        fg.append(float((proba[..., 0] < 0.5).mean()))
    width = _median_width(np.concatenate(widths)) / scale.scale
    if width <= 0 or not 0.002 <= float(np.mean(fg)) <= MAX_FOREGROUND:
        return model.object_size, "reference objects"  # nothing, or everything, looks like an object: no measure
    ratio = width / model.reference_width
    if 1 / SIZE_TOLERANCE <= ratio <= SIZE_TOLERANCE:
        return model.object_size, "reference objects"
    ratio = float(np.clip(ratio, 1 / MAX_SIZE_CHANGE, MAX_SIZE_CHANGE))
    return model.object_size * ratio, f"reference objects, rescaled x{ratio:.2f} to the target's objects"


def _candidates(proba: np.ndarray, model: ExemplarModel, scale: float, split_factor: float) -> np.ndarray:
    """Watershed regions (working pixels) from class probabilities: one label per candidate object."""
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    p_bg, p_in, p_rim = proba[..., 0], proba[..., 1], proba[..., 2]
    fg = p_bg < 0.5
    if SEED_MODE == "distance":
        return _distance_candidates(fg, p_in, model.object_size * scale)
    interior = fg & (p_in >= p_rim)
    interior = ndimage.binary_opening(interior)
    markers, n = ndimage.label(interior)
    median_area = model.median_area * scale * scale
    min_distance = max(2, int(0.4 * model.object_size * scale))
    next_id = n + 1
    if n:
        marker_areas = ndimage.sum_labels(np.ones_like(markers), markers, np.arange(1, n + 1))
        for i, sl in enumerate(ndimage.find_objects(markers), start=1):
            if sl is None or marker_areas[i - 1] < split_factor * median_area:
                continue
            comp = markers[sl] == i
            dist = ndimage.distance_transform_edt(np.pad(comp, 1))[1:-1, 1:-1]
            peaks = peak_local_max(dist, min_distance=min_distance, exclude_border=False, labels=comp.astype(int))
            if len(peaks) < 2:
                continue
            seeds = np.zeros(comp.shape, np.int32)
            seeds[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
            parts = watershed(-dist, seeds, mask=comp)
            view = markers[sl]
            for k in range(2, len(peaks) + 1):
                view[parts == k] = next_id
                next_id += 1
    regions = watershed(p_bg, markers, mask=fg) if next_id > 1 else np.zeros(fg.shape, np.int32)
    # foreground without a seed (small or faint objects) becomes a candidate of its own
    orphans, m = ndimage.label(fg & (regions == 0))
    if m:
        regions = np.where(orphans > 0, orphans + regions.max(), regions)
    return regions.astype(np.int32)


SEED_MODE = "distance"


def _distance_candidates(fg: np.ndarray, p_in: np.ndarray, diameter: float) -> np.ndarray:
    """Seeds at the maxima of the foreground's distance transform (plus a little interior probability), at least
    a third of a typical object apart; watershed of that score inside the foreground. Holes are filled first, so
    textured nuclei are not cut along their texture."""
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    fg = ndimage.binary_opening(ndimage.binary_fill_holes(fg))
    comps, n = ndimage.label(fg)
    if n == 0:
        return np.zeros(fg.shape, np.int32)
    dist = ndimage.distance_transform_edt(np.pad(fg, 1))[1:-1, 1:-1]
    score = ndimage.gaussian_filter(dist, max(1.0, 0.1 * diameter)) + 0.15 * diameter * ndimage.gaussian_filter(
        p_in, 1.0
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
    return regions.astype(np.int32)


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
    embedding: Embedding,
    working: np.ndarray,
    refine: Refinement,
    split_factor: float,
    min_area_fraction: float,
    scale: float,
    timer: _Timer,
) -> list[tuple[np.ndarray, int, int, float, np.ndarray]]:
    """Objects of one tile: (mask over tile pixels, row origin, column origin, score, box in tile pixels)."""
    t0 = time.perf_counter()
    feats = _pixel_features(model.channels, model.projection, embedding, working, model.use_encoder)
    proba = model.classifier.predict(feats)
    timer.add("classify_s", t0)
    t0 = time.perf_counter()
    regions = _candidates(proba, model, scale, split_factor)
    slices = ndimage.find_objects(regions)
    timer.add("seeds_s", t0)
    # candidates far smaller than the smallest exemplar are noise: not worth a decoder pass
    areas = np.bincount(regions.ravel(), minlength=len(slices) + 1)
    min_area = min_area_fraction * model.min_area * scale * scale
    ids = [i for i, sl in enumerate(slices, start=1) if sl is not None and areas[i] >= min_area]
    if not ids:
        return []
    p_fg = 1.0 - proba[..., 0]
    wh, ww = working.shape[:2]
    th, tw = embedding.transform.original_shape
    factors = (wh / th, ww / tw)
    pad = max(2.0, 0.1 * model.object_size * scale)
    boxes_w = np.array(
        [
            (
                max(0.0, slices[i - 1][1].start - pad),
                max(0.0, slices[i - 1][0].start - pad),
                min(ww - 1.0, slices[i - 1][1].stop - 1 + pad),
                min(wh - 1.0, slices[i - 1][0].stop - 1 + pad),
            )
            for i in ids
        ],
        np.float32,
    )
    objects = []
    t0 = time.perf_counter()
    for start in range(0, len(ids), DECODE_BATCH):
        batch = ids[start : start + DECODE_BATCH]
        bw = boxes_w[start : start + DECODE_BATCH]
        probs, scores = None, None
        if refine != "none":
            boxes_tile = bw / np.array([factors[1], factors[0], factors[1], factors[0]], np.float32)
            pred = segmenter.predict(embedding, boxes=boxes_tile)
            low = pred.low_res_logits[:, :1]
            size = embedding.transform.input_size
            if low.shape[-1] != size:
                low = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
            probs = torch.sigmoid(low[:, 0, :wh, :ww]).numpy()
            scores = pred.scores[:, 0]
        for k, i in enumerate(batch):
            x0, y0, x1, y1 = bw[k]
            win = (int(y0), int(y1) + 1, int(x0), int(x1) + 1)
            sl = (slice(win[0], win[1]), slice(win[2], win[3]))
            own = regions[sl] == i
            if refine == "none":
                soft = own.astype(np.float32)
                score = float(p_fg[sl][own].mean())
            else:
                free = own | (regions[sl] == 0)  # pixels no other candidate claims
                sam = probs[k][sl]
                soft = (0.5 * (sam + p_fg[sl]) if refine == "fused" else sam) * free
                score = float(scores[k])
            mask, oy, ox = _to_image(soft, win, factors, (th, tw))
            if mask.any():
                objects.append((mask, oy, ox, score, bw[k] / np.array([factors[1], factors[0]] * 2)))
    timer.add("decode_s" if refine != "none" else "regions_s", t0)
    return objects


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
    split_factor: float = 1.5,
    duplicate_overlap: float = 0.5,
    min_area_fraction: float = 0.25,
    max_area_factor: float = 4.0,
    name: str = "target",
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
    timer: _Timer | None = None,
) -> InstanceResult:
    """Every object like the exemplars in ``image`` (H, W, C), tile by tile at the working scale of the objects'
    size: ``object_size`` (pixels) when given, else the exemplars' size, or the target's own when its objects are
    measurably larger or smaller (:func:`estimate_object_size`)."""
    if refine not in REFINEMENTS:
        raise PromptsegError(f"refine must be one of {REFINEMENTS}, got {refine!r}")
    timer = timer or _Timer()
    report = progress or (lambda fraction, message: None)
    if max(model.channels) >= image.shape[-1]:
        raise PromptsegError(
            f"{name}: {image.shape[-1]} channel(s), but the exemplars were colour images with "
            f"{max(model.channels) + 1}; use targets of the exemplars' kind"
        )
    h, w = image.shape[:2]
    t0 = time.perf_counter()
    if object_size is None:
        object_size, source = estimate_object_size(model, image, segmenter.input_size)
    else:
        source = "object size"
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
    window = IntensityWindow.measure(image, model.normalize)
    painter = _Painter((h, w), max(4.0, min_area_fraction * model.min_area), duplicate_overlap)
    max_area = max_area_factor * model.max_area
    candidates = 0
    for n, tile in enumerate(grid):
        if cancel is not None and cancel():
            raise CancelledError("cancelled")
        report(n / len(grid), f"{name}: tile {n + 1}/{len(grid)}")
        t0 = time.perf_counter()
        embedding, working = _tile_inputs(segmenter, image, tile, window, name)
        timer.add("embed_s", t0)
        objects = _segment_tile(
            segmenter,
            model,
            embedding,
            _classifier_input(window, working, model.standardize),
            refine,
            split_factor,
            min_area_fraction,
            scale.scale,
            timer,
        )
        candidates += len(objects)
        t0 = time.perf_counter()
        for mask, oy, ox, score, _ in sorted(objects, key=lambda o: -o[3]):
            area = int(mask.sum())
            if area > max_area:
                continue
            rows, cols = np.nonzero(mask)
            cy, cx = tile.y0 + oy + rows.mean(), tile.x0 + ox + cols.mean()
            if not tile.owns(np.array(cx), np.array(cy)):
                continue  # a neighbouring tile holds this object whole and paints it
            painter.paint(mask, tile.y0 + oy, tile.x0 + ox, score)
        timer.add("paint_s", t0)
    report(1.0, f"{name}: {len(painter.scores)} objects")
    labels = painter.result()
    warnings = [] if painter.scores else [f"{name}: no object like the exemplars was found"]
    return InstanceResult(
        labels=labels,
        boxes=np.array(painter.boxes, np.float32).reshape(-1, 4),
        scores=np.array(painter.scores, np.float32),
        candidates=candidates,
        scale=scale,
        timings=dict(timer.timings),
        warnings=warnings,
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
    split_factor: float = 1.5,
    duplicate_overlap: float = 0.5,
    min_area_fraction: float = 0.25,
    channel_axis: int | None = None,
    channels: list[int] | None = None,
    normalize: Normalization = "auto",
    name: str = "target",
    model: ExemplarModel | None = None,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
    **_ignored: object,
) -> InstanceResult:
    """Instance labels of every object in ``target`` like the labelled objects of ``reference``.

    ``object_size``: typical object diameter in pixels (default: the reference objects' median); it sets the
    working scale. ``model``: an :class:`ExemplarModel` from :func:`fit_exemplars` to reuse across targets.
    """
    if segmenter is None:
        from ..models import load_segmenter

        segmenter = load_segmenter()
    timer = _Timer()
    hwc = as_channels_last(target, channel_axis=channel_axis, channels=channels, name=name)
    if model is None:
        ref_hwc = as_channels_last(reference, channel_axis=channel_axis, channels=channels, name="reference")
        ref_labels = _check_reference_labels(ref_hwc, reference_labels)
        model = fit_exemplars(
            segmenter,
            ref_hwc,
            ref_labels,
            object_size=object_size,
            use_encoder=use_encoder,
            normalize=normalize,
            timer=timer,
        )
    return segment_with_exemplars(
        segmenter,
        model,
        hwc,
        refine=refine,
        split_factor=split_factor,
        duplicate_overlap=duplicate_overlap,
        min_area_fraction=min_area_fraction,
        name=name,
        progress=progress,
        cancel=cancel,
        timer=timer,
    )


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
    from .interactive import check_box, segment_prompts

    if segmenter is None:
        from ..models import load_segmenter

        segmenter = load_segmenter()
    report = progress or (lambda fraction, message: None)
    hwc = as_channels_last(image, channel_axis=channel_axis, channels=channels, name=name)
    h, w = hwc.shape[:2]
    checked = np.array([check_box(b, (h, w), f"box {i + 1}") for i, b in enumerate(boxes)], np.float32).reshape(-1, 4)
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
    size = object_size or box_object_size(checked)
    known = np.zeros((h, w), bool)
    ring = 0.5 * size
    for x0, y0, x1, y1 in checked:
        rows = slice(int(max(0, y0 - ring)), int(min(h, y1 + ring + 1)))
        known[rows, int(max(0, x0 - ring)) : int(min(w, x1 + ring + 1))] = True
    if cancel is not None and cancel():
        raise CancelledError("cancelled")
    report(0.1, "learning the examples")
    model = fit_exemplars(
        segmenter, hwc, examples.labels, known=known, object_size=size, normalize=normalize, name=name, timer=timer
    )

    def sub(fraction: float, message: str) -> None:
        report(0.2 + 0.8 * fraction, message)

    found = segment_with_exemplars(
        segmenter, model, hwc, refine=refine, object_size=size, name=name, progress=sub, cancel=cancel, timer=timer
    )
    found.timings = dict(timer.timings)
    return found


def _check_reference_labels(ref_hwc: np.ndarray, labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 3 and labels.shape[-1] in (3, 4) and labels.shape[:2] == ref_hwc.shape[:2]:
        labels = labels[..., 0]
    if labels.shape != ref_hwc.shape[:2]:
        raise PromptsegError(
            f"reference labels: shape {labels.shape} does not match the reference image's {ref_hwc.shape[:2]}"
        )
    if not (labels > 0).any():
        raise PromptsegError("reference labels: empty; label the objects to find (non-zero pixels)")
    if (labels > 0).all():
        raise PromptsegError("reference labels: everything is labelled; leave background unlabelled (0)")
    return reference_objects(labels)


def match_instances(prediction: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Object-level precision/recall/F1 at an IoU threshold (one-to-one, IoU > 0.5 matches are unique)."""
    p_ids = np.unique(prediction[prediction > 0])
    t_ids = np.unique(truth[truth > 0])
    if len(p_ids) == 0 or len(t_ids) == 0:
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "predicted": len(p_ids), "true": len(t_ids)}
    both = (prediction > 0) & (truth > 0)
    pairs, inter = np.unique(np.stack([prediction[both], truth[both]]), axis=1, return_counts=True)
    p_area = dict(zip(*np.unique(prediction[prediction > 0], return_counts=True), strict=True))
    t_area = dict(zip(*np.unique(truth[truth > 0], return_counts=True), strict=True))
    matched = 0
    for (p, t), n in zip(pairs.T, inter, strict=True):
        if n / (p_area[p] + t_area[t] - n) > threshold:
            matched += 1
    precision, recall = matched / len(p_ids), matched / len(t_ids)
    f1 = 0.0 if matched == 0 else 2 * precision * recall / (precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "predicted": len(p_ids), "true": len(t_ids)}
