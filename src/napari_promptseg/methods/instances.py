"""Many instances from one reference: every object in a target that looks like the reference's labelled objects.

Microscopy needs all nuclei / all glands of a tile, not one mask. Beyond the SAT paper (which returns one mask):

1. SAT's correspondence (:func:`.oneshot.correspond`) gives per target patch the margin fg_sim - bg_sim;
2. it is interpolated to pixels; its connected regions > 0 are candidate areas;
3. every region gets its bounding box; a region larger than ``split_factor`` x the median reference area is also
   split by a watershed of its distance transform from maxima at least half a median object diameter apart, and
   each part gets its own box (touching nuclei/glands);
4. all boxes are decoded in batches; masks are ranked by predicted IoU and painted greedily; a mask that overlaps
   already painted objects by more than ``duplicate_overlap`` of its area is a duplicate; masks much larger than the
   largest reference object, or whose patches resemble the reference background more than its objects, are dropped;
   small objects are kept down to ``min_area_fraction`` of the smallest reference object.

Reference patches count as foreground when at least ``fg_purity`` = half inside an object (SAT/GBMSeg require
all; small objects such as nuclei fill few whole patches at LiteMedSAM's 4-input-pixel stride).
Reference objects and target objects are assumed to be at the same pixel size (same modality and magnification).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..errors import CancelledError
from ..models.features import PatchFeatureExtractor, SegmenterFeatures
from ..models.preprocessing import Normalization, as_channels_last
from ..models.protocols import PromptableSegmenter
from .oneshot import ProgressCallback, check_reference, correspond


@dataclass
class InstanceResult:
    labels: np.ndarray  # (H, W) uint16/uint32 instance labels, 0 background
    boxes: np.ndarray  # (N, 4) the box of every kept object, x0, y0, x1, y1
    scores: np.ndarray  # (N,) predicted IoU of every kept object
    candidates: int  # boxes decoded before duplicate/size/similarity filtering
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def reference_objects(labels: np.ndarray) -> np.ndarray:
    """Instance labels from a labels array (kept) or a binary mask (its connected components)."""
    labels = np.asarray(labels)
    if labels.dtype == bool or labels.max() <= 1:
        labels, _ = ndimage.label(labels > 0)
    return labels


def _object_stats(labels: np.ndarray) -> dict[str, float]:
    ids, areas = np.unique(labels[labels > 0], return_counts=True)
    slices = ndimage.find_objects(labels)
    heights = np.array([s[0].stop - s[0].start for s in slices if s is not None])
    widths = np.array([s[1].stop - s[1].start for s in slices if s is not None])
    return {
        "count": float(len(ids)),
        "median_area": float(np.median(areas)),
        "min_area": float(areas.min()),
        "max_area": float(areas.max()),
        "median_height": float(np.median(heights)),
        "median_width": float(np.median(widths)),
    }


def candidate_boxes(
    margin_px: np.ndarray, stats: dict[str, float], split_factor: float = 1.5, pad: float = 2.0
) -> np.ndarray:
    """Boxes (x0, y0, x1, y1) of candidate objects from the pixel margin map (see module docstring, step 3).

    A large region is split by a watershed of its distance transform from maxima at least half a median reference
    object apart; each part gives a box fitted to it, and the whole region's box is kept as a candidate too (a big
    object is then not lost to fragments: the duplicate filter keeps whichever mask is more confident).
    """
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    region = margin_px > 0
    components, n = ndimage.label(region)
    h, w = region.shape
    boxes = []
    min_distance = max(1, int(0.5 * min(stats["median_height"], stats["median_width"])))
    for i, sl in enumerate(ndimage.find_objects(components), start=1):
        if sl is None:
            continue
        comp = components[sl] == i
        y0, x0 = sl[0].start, sl[1].start
        boxes.append((x0 - pad, y0 - pad, sl[1].stop - 1 + pad, sl[0].stop - 1 + pad))
        if comp.sum() < split_factor * stats["median_area"]:
            continue
        dist = ndimage.distance_transform_edt(np.pad(comp, 1))[1:-1, 1:-1]
        peaks = peak_local_max(dist, min_distance=min_distance, exclude_border=False, labels=comp.astype(int))
        if len(peaks) < 2:
            continue
        markers = np.zeros(comp.shape, np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        parts = watershed(-dist, markers, mask=comp)
        for part in ndimage.find_objects(parts):
            if part is not None:
                boxes.append(
                    (
                        x0 + part[1].start - pad,
                        y0 + part[0].start - pad,
                        x0 + part[1].stop - 1 + pad,
                        y0 + part[0].stop - 1 + pad,
                    )
                )
    if not boxes:
        return np.zeros((0, 4), np.float32)
    b = np.array(boxes, np.float32)
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, w - 1)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, h - 1)
    return b[(b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])]


def segment_instances_like(
    reference: np.ndarray,
    reference_labels: np.ndarray,
    target: np.ndarray,
    *,
    segmenter: PromptableSegmenter | None = None,
    extractor: PatchFeatureExtractor | None = None,
    split_factor: float = 1.5,
    duplicate_overlap: float = 0.5,
    max_area_factor: float = 4.0,
    min_area_fraction: float = 0.25,
    fg_purity: float = 0.5,
    channel_axis: int | None = None,
    channels: list[int] | None = None,
    normalize: Normalization = "auto",
    name: str = "target",
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
) -> InstanceResult:
    """Instance labels of every object in ``target`` like the labelled objects of ``reference``."""
    if segmenter is None:
        from ..models import load_segmenter

        segmenter = load_segmenter()
    extractor = extractor or SegmenterFeatures(segmenter)
    report = progress or (lambda fraction, message: None)

    def check_cancel() -> None:
        if cancel is not None and cancel():
            raise CancelledError("cancelled")

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    ref_hwc = as_channels_last(reference, channel_axis=channel_axis, channels=channels, name="reference")
    check_reference(ref_hwc, reference_labels, "reference labels")
    ref_labels = reference_objects(np.asarray(reference_labels))
    stats = _object_stats(ref_labels)
    hwc = as_channels_last(target, channel_axis=channel_axis, channels=channels, name=name)
    report(0.0, "features")
    ref_feats = extractor.features(ref_hwc, normalize=normalize, name="reference")
    tgt_feats = extractor.features(hwc, normalize=normalize, name=name)
    embedding = segmenter.embed(hwc, normalize=normalize, name=name)
    timings["features_s"] = time.perf_counter() - t0
    check_cancel()

    t0 = time.perf_counter()
    corr = correspond(ref_feats, ref_labels > 0, tgt_feats, fg_purity=fg_purity, name=name)
    margin = torch.from_numpy(corr.margin.reshape(tgt_feats.shape))[None, None]
    h, w = hwc.shape[:2]
    gh, gw = tgt_feats.shape
    sy, sx = tgt_feats.stride
    # the grid may extend past the image border: interpolate on the grid's own extent, then crop
    margin_px = F.interpolate(margin, size=(round(gh * sy), round(gw * sx)), mode="bilinear", align_corners=False)
    margin_px = margin_px[0, 0, :h, :w].numpy()
    if margin_px.shape != (h, w):
        margin_px = np.pad(margin_px, ((0, h - margin_px.shape[0]), (0, w - margin_px.shape[1])), mode="edge")
    boxes = candidate_boxes(margin_px, stats, split_factor)
    timings["prompt_search_s"] = time.perf_counter() - t0
    warnings = list(corr.warnings)
    if len(boxes) == 0:
        warnings.append(f"{name}: no region resembles the reference objects")
        empty = np.zeros((h, w), np.uint16)
        return InstanceResult(empty, boxes, np.zeros(0, np.float32), 0, timings, warnings)
    check_cancel()

    report(0.3, f"decoding {len(boxes)} candidate boxes")
    t0 = time.perf_counter()
    pred = segmenter.predict(embedding, boxes=boxes)
    timings["decode_s"] = time.perf_counter() - t0
    check_cancel()

    t0 = time.perf_counter()
    order = np.argsort(-pred.scores[:, 0], kind="stable")
    labels = np.zeros((h, w), np.uint16 if len(boxes) < 2**16 else np.uint32)
    kept_boxes, kept_scores = [], []
    max_area = max_area_factor * stats["max_area"]
    min_area = max(4.0, min_area_fraction * stats["min_area"])
    chunk = 32
    for start in range(0, len(order), chunk):
        idx = order[start : start + chunk].tolist()
        masks = pred.masks(idx)[:, 0]
        for i, mask in zip(idx, masks, strict=True):
            area = int(mask.sum())
            if area < min_area or area > max_area:
                continue
            if float(margin_px[mask].mean()) <= 0:  # more like the reference background than its objects
                continue
            free = mask & (labels == 0)
            if free.sum() < (1 - duplicate_overlap) * area or free.sum() < min_area:
                continue  # mostly covered by a more confident object: a duplicate
            labels[free] = len(kept_boxes) + 1
            kept_boxes.append(boxes[i])
            kept_scores.append(float(pred.scores[i, 0]))
        check_cancel()
        report(0.3 + 0.7 * min(1.0, (start + chunk) / len(order)), "painting instances")
    timings["paint_s"] = time.perf_counter() - t0
    return InstanceResult(
        labels=labels,
        boxes=np.array(kept_boxes, np.float32).reshape(-1, 4),
        scores=np.array(kept_scores, np.float32),
        candidates=len(boxes),
        timings=timings,
        warnings=warnings,
    )


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
