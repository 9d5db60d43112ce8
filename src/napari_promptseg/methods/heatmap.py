"""Text heatmap (CLIPSeg, medvlsm) -> instance labels, optionally refined by a promptable segmenter.

1. the heatmap is thresholded (medvlsm evaluates at 0.5) and split into 8-connected components;
2. components smaller than ``min_area`` pixels are dropped (speckle of a 352 px map upsampled to the image);
3. without a segmenter the components are the instances; with one (SAM refinement, as in Grounded-SAM's use of a
   coarse text answer) each component's bounding box, plus its heatmap peak as a positive click when the model was
   trained with points, is decoded to a mask; where masks overlap a pixel goes to the most confident logit, and
   objects left with no pixel are dropped, so ids stay 1..N.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage

from ..errors import CancelledError, PromptsegError
from ..models.preprocessing import Normalization
from ..models.protocols import Prediction, PromptableSegmenter
from .interactive import ObjectPrompt, boxes_from_labels, paint_instances, predict_objects

#: medvlsm's (and CLIPSeg's usual) binarisation threshold of the sigmoid output
DEFAULT_THRESHOLD = 0.5
#: components below this many pixels are noise of the upsampled 352 px map, not objects
DEFAULT_MIN_AREA = 64


@dataclass
class HeatmapInstances:
    labels: np.ndarray  # (H, W) uint16/uint32, 0 background, instances 1..N
    boxes: np.ndarray  # (N, 4) float32 x0, y0, x1, y1 of the component that gave instance i + 1
    points: np.ndarray  # (N, 2) float32 x, y of that component's heatmap peak
    scores: np.ndarray  # (N,) predicted IoU with a segmenter, else the component's mean heatmap probability
    components: int  # connected components above the threshold, before the min_area filter
    refined: bool  # True when a segmenter decoded the masks
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _check_heatmap(heatmap: np.ndarray, shape: tuple[int, int], name: str) -> np.ndarray:
    heat = np.asarray(heatmap)
    if heat.ndim != 2:
        raise PromptsegError(f"{name}: expected a 2D (H, W) heatmap, got shape {heat.shape}")
    if heat.shape != shape:
        raise PromptsegError(f"{name}: heatmap of shape {heat.shape} does not match the image's {shape}")
    if heat.dtype.kind not in "uifb":
        raise PromptsegError(f"{name}: unsupported heatmap type {heat.dtype}")
    if heat.dtype.kind == "f" and not np.isfinite(heat).all():
        raise PromptsegError(f"{name}: heatmap contains NaN or infinite values")
    return heat.astype(np.float32, copy=False)


def _empty(shape: tuple[int, int], components: int, refined: bool, timings, warnings) -> HeatmapInstances:
    return HeatmapInstances(
        labels=np.zeros(shape, np.uint16),
        boxes=np.zeros((0, 4), np.float32),
        points=np.zeros((0, 2), np.float32),
        scores=np.zeros(0, np.float32),
        components=components,
        refined=refined,
        timings=timings,
        warnings=warnings,
    )


def heatmap_to_instances(
    image_hwc: np.ndarray,
    heatmap: np.ndarray,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    segmenter: PromptableSegmenter | None = None,
    min_area: int = DEFAULT_MIN_AREA,
    normalize: Normalization = "auto",
    name: str = "image",
    cancel: Callable[[], bool] | None = None,
) -> HeatmapInstances:
    """Instances from a probability map on ``image_hwc``'s grid (see the module docstring).

    ``image_hwc`` is the (H, W) or (H, W, C) image the heatmap belongs to (as from ``as_channels_last``); it is only
    read when a segmenter refines the components.
    """
    image = np.asarray(image_hwc)
    if image.ndim not in (2, 3):
        raise PromptsegError(f"{name}: expected an (H, W) or (H, W, C) image, got shape {image.shape}")
    shape = image.shape[:2]
    heat = _check_heatmap(heatmap, shape, f"{name} heatmap")
    if not np.isfinite(threshold):
        raise PromptsegError(f"{name}: threshold must be a finite number, got {threshold}")
    if min_area < 0:
        raise PromptsegError(f"{name}: min_area must be >= 0 pixels, got {min_area}")

    def check_cancel() -> None:
        if cancel is not None and cancel():
            raise CancelledError("cancelled")

    timings: dict[str, float] = {}
    warnings: list[str] = []
    refined = segmenter is not None
    t0 = time.perf_counter()
    components, n_components = ndimage.label(heat > threshold, structure=np.ones((3, 3), bool))
    areas = np.bincount(components.ravel(), minlength=n_components + 1)
    keep = np.flatnonzero(areas >= max(min_area, 1))
    keep = keep[keep > 0]
    # renumber the kept components 1..N in label order (regionprops / boxes_from_labels order)
    lut = np.zeros(n_components + 1, np.uint32)
    lut[keep] = np.arange(1, len(keep) + 1)
    kept = lut[components]
    timings["threshold_s"] = time.perf_counter() - t0
    if len(keep) == 0:
        what = f"{n_components} component(s), all below {min_area} px" if n_components else "no pixel"
        warnings.append(f"{name}: heatmap above {threshold:g}: {what}; nothing segmented")
        return _empty(shape, n_components, refined, timings, warnings)

    boxes = np.array(boxes_from_labels(kept), np.float32).reshape(-1, 4)
    index = np.arange(1, len(keep) + 1)
    peaks = np.array(ndimage.maximum_position(heat, kept, index), np.float32).reshape(-1, 2)  # (row, col)
    points = peaks[:, ::-1].copy()  # x = column, y = row
    mean_prob = ndimage.mean(heat, kept, index).astype(np.float32)
    check_cancel()

    if segmenter is None:
        labels = kept.astype(np.uint16 if len(keep) < 2**16 else np.uint32)
        return HeatmapInstances(labels, boxes, points, mean_prob, n_components, False, timings, warnings)

    t0 = time.perf_counter()
    # channel_axis=-1: the image is already channels-last, also with 2 channels (ambiguous to as_channels_last)
    embedding = segmenter.embed(image, channel_axis=-1 if image.ndim == 3 else None, normalize=normalize, name=name)
    timings["embed_s"] = time.perf_counter() - t0
    check_cancel()
    t0 = time.perf_counter()
    if segmenter.points_reliable:
        objects = [
            ObjectPrompt(box=tuple(b), points=[tuple(p)], labels=[1]) for b, p in zip(boxes, points, strict=True)
        ]
    else:  # box-trained (LiteMedSAM): a click would only disturb the decoder
        objects = [ObjectPrompt(box=tuple(b)) for b in boxes]
    logits, scores = predict_objects(segmenter, embedding, objects)
    timings["decode_s"] = time.perf_counter() - t0
    check_cancel()

    t0 = time.perf_counter()
    painted = paint_instances(Prediction(torch.stack(logits), scores[:, None], embedding.transform), cancel=cancel)
    present = np.zeros(len(objects) + 1, bool)
    present[np.unique(painted)] = True
    present[0] = False
    survivors = np.flatnonzero(present[1:])
    if len(survivors) < len(objects):
        warnings.append(
            f"{name}: {len(objects) - len(survivors)} of {len(objects)} component(s) gave no mask pixel of their own"
        )
    lut = np.zeros(len(objects) + 1, painted.dtype)
    lut[survivors + 1] = np.arange(1, len(survivors) + 1)
    labels = lut[painted]
    timings["paint_s"] = time.perf_counter() - t0
    if len(survivors) == 0:
        return _empty(shape, n_components, True, timings, warnings)
    return HeatmapInstances(
        labels=labels,
        boxes=boxes[survivors],
        points=points[survivors],
        scores=scores[survivors].astype(np.float32),
        components=n_components,
        refined=True,
        timings=timings,
        warnings=warnings,
    )
