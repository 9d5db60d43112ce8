"""One tile of the instances pipeline: candidate objects from the pixel classifier's probabilities (or the
correspondence margin), one box prompt each, decoded masks fused with the foreground and mapped back to tile pixels.
:mod:`.pipeline` runs the tiles over the image and stitches their objects."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy import ndimage

from ...models.protocols import Embedding, PromptableSegmenter
from .correspondence import margin_pixels, margin_regions
from .exemplars import INTERIOR_WEIGHT, ExemplarModel, _pixel_features, _Timer

Refinement = Literal["fused", "sam", "none"]
CandidateMode = Literal["watershed", "components", "both", "correspondence"]

#: prompts decoded per call (bounds the (n, 256, 256) logits in memory)
DECODE_BATCH = 32


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
