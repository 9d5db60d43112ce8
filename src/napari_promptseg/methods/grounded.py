"""Grounded segmentation: boxes from a text grounder -> one SAM mask per box -> instance labels.

The Grounded-SAM recipe, with Tell2Reg's clean-up: boxes nearly as large as the image are dropped (GroundingDINO
answers "the whole picture" for many prompts), overlapping boxes are suppressed (NMS, class-agnostic: one pixel is
one object), and where masks overlap the pixel goes to the box with the higher grounding score.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torchvision.ops import nms

from ..errors import CancelledError, PromptsegError
from ..models.preprocessing import Normalization, as_channels_last
from ..models.protocols import Detections, Prediction, PromptableSegmenter
from .interactive import ObjectPrompt, predict_objects

#: masks painted per step: bounds the (n, H, W) logits held at once on large images
PAINT_CHUNK = 8


def select_boxes(
    detections: Detections, shape: tuple[int, int], *, nms_iou: float = 0.5, max_box_fraction: float = 0.95
) -> list[int]:
    """Indices of the boxes to segment, best score first: boxes covering more than ``max_box_fraction`` of the
    image area are dropped, then non-maximum suppression at IoU ``nms_iou``."""
    if not 0.0 < nms_iou <= 1.0:
        raise PromptsegError(f"nms_iou must be in (0, 1], got {nms_iou}")
    if not 0.0 < max_box_fraction <= 1.0:
        raise PromptsegError(f"max_box_fraction must be in (0, 1], got {max_box_fraction}")
    if len(detections) == 0:
        return []
    boxes = np.asarray(detections.boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(detections.scores, dtype=np.float32).reshape(-1)
    if len(scores) != len(boxes):
        raise PromptsegError(f"{len(boxes)} boxes but {len(scores)} scores")
    h, w = shape
    # boxes live in [0, W - 1] x [0, H - 1] (pixel centres), so that is the whole image's extent
    image_area = max(w - 1, 1) * max(h - 1, 1)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    candidates = np.flatnonzero((areas / image_area <= max_box_fraction) & (areas > 0))
    if not len(candidates):
        return []
    kept = nms(torch.from_numpy(boxes[candidates]), torch.from_numpy(scores[candidates]), float(nms_iou))
    return [int(candidates[i]) for i in kept.tolist()]  # nms returns them by decreasing score


def boxes_to_instances(
    image_hwc: np.ndarray,
    detections: Detections,
    segmenter: PromptableSegmenter,
    *,
    nms_iou: float = 0.5,
    max_box_fraction: float = 0.95,
    normalize: Normalization = "auto",
    cancel: Callable[[], bool] | None = None,
) -> tuple[np.ndarray, list[int]]:
    """Segment every grounded box; returns (labels (H, W), kept).

    ``labels`` holds instance ids 1..N (uint16, uint32 beyond 65535 objects), 0 background; instance ``i + 1`` is
    ``detections[kept[i]]``, in decreasing score order. Boxes dropped by :func:`select_boxes`, and masks that are
    empty or fully covered by better-scoring ones, get no id.
    """
    arr = np.asarray(image_hwc)
    # an (H, W, 2) array from as_channels_last is two channels, not an ambiguous stack
    hwc = as_channels_last(arr, channel_axis=-1 if arr.ndim == 3 and arr.shape[-1] == 2 else None)
    h, w = hwc.shape[:2]
    selected = select_boxes(detections, (h, w), nms_iou=nms_iou, max_box_fraction=max_box_fraction)
    if not selected:
        return np.zeros((h, w), dtype=np.uint16), []
    if cancel is not None and cancel():
        raise CancelledError("cancelled")
    embedding = segmenter.embed(hwc, normalize=normalize)
    if cancel is not None and cancel():
        raise CancelledError("cancelled")
    objects = [ObjectPrompt(box=tuple(float(v) for v in detections.boxes[i])) for i in selected]
    logits, scores = predict_objects(segmenter, embedding, objects)
    prediction = Prediction(torch.stack(logits), scores[:, None], embedding.transform)

    # painted best box first, never over a pixel already taken: the higher grounding score wins overlaps
    n = len(selected)
    labels = np.zeros((h, w), dtype=np.uint16 if n < 2**16 else np.uint32)
    painted: list[int] = []  # positions in `selected` that own at least one pixel
    for start in range(0, n, PAINT_CHUNK):
        if cancel is not None and cancel():
            raise CancelledError("cancelled")
        for offset, mask in enumerate(prediction.masks(slice(start, start + PAINT_CHUNK))[:, 0]):
            free = mask & (labels == 0)
            if free.any():
                painted.append(start + offset)
                labels[free] = len(painted)
    return labels, [selected[i] for i in painted]
