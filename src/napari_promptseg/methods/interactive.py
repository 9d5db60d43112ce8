"""Interactive prompting: boxes and positive/negative points -> one instance per object.

Coordinates are pixels of the 2D image: x = column, y = row (napari stores (row, col); the widget converts).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import CancelledError, PromptsegError
from ..models.preprocessing import Normalization, as_channels_last
from ..models.protocols import Embedding, Prediction, PromptableSegmenter

#: progress(fraction_done, message)
ProgressCallback = Callable[[float, str], None]


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


def check_box(box: Sequence[float], shape: tuple[int, int], name: str = "box") -> tuple[float, float, float, float]:
    """Validate x0, y0, x1, y1 against the image; a box partly outside is clipped, one fully outside is an error."""
    if len(box) != 4:
        raise PromptsegError(f"{name}: expected 4 numbers x0 y0 x1 y1, got {len(box)}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not np.isfinite([x0, y0, x1, y1]).all():
        raise PromptsegError(f"{name}: coordinates must be finite, got {box}")
    if x1 <= x0 or y1 <= y0:
        raise PromptsegError(
            f"{name}: corners in the wrong order or zero size ({x0:g}, {y0:g}, {x1:g}, {y1:g}); "
            "expected x0 < x1 and y0 < y1 (x = column, y = row)"
        )
    h, w = shape
    if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
        raise PromptsegError(
            f"{name}: ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the {w}x{h} image (width x height)"
        )
    return max(x0, 0.0), max(y0, 0.0), min(x1, w - 1.0), min(y1, h - 1.0)


def check_point(point: Sequence[float], shape: tuple[int, int], name: str = "point") -> tuple[float, float]:
    if len(point) != 2:
        raise PromptsegError(f"{name}: expected 2 numbers x y, got {len(point)}")
    x, y = (float(v) for v in point)
    h, w = shape
    if not (np.isfinite([x, y]).all() and 0 <= x < w and 0 <= y < h):
        raise PromptsegError(f"{name}: ({x:g}, {y:g}) lies outside the {w}x{h} image (width x height)")
    return x, y


def group_prompts(
    shape: tuple[int, int],
    boxes: Sequence[Sequence[float]] = (),
    positive_points: Sequence[Sequence[float]] = (),
    negative_points: Sequence[Sequence[float]] = (),
) -> list[ObjectPrompt]:
    """Turn flat prompt lists into objects.

    Each box is one object; a point inside boxes refines the smallest box that contains it. Points outside every box
    form one further object (when at least one of them is positive), the usual click-to-segment case.
    """
    objects = [ObjectPrompt(box=check_box(b, shape, f"box {i + 1}")) for i, b in enumerate(boxes)]
    loose_points: list[tuple[float, float]] = []
    loose_labels: list[int] = []
    tagged = [(p, 1, "positive point") for p in positive_points] + [(p, 0, "negative point") for p in negative_points]
    for i, (p, label, kind) in enumerate(tagged):
        x, y = check_point(p, shape, f"{kind} {i + 1}")
        inside = [o for o in objects if o.box[0] <= x <= o.box[2] and o.box[1] <= y <= o.box[3]]
        if inside:
            target = min(inside, key=lambda o: (o.box[2] - o.box[0]) * (o.box[3] - o.box[1]))
            target.points.append((x, y))
            target.labels.append(label)
        else:
            loose_points.append((x, y))
            loose_labels.append(label)
    if 1 in loose_labels:
        objects.append(ObjectPrompt(points=loose_points, labels=loose_labels))
    elif loose_labels and not objects:
        raise PromptsegError("only negative points given: add a box or a positive point")
    if not objects:
        raise PromptsegError("no prompt: give at least one box or positive point")
    return objects


def predict_objects(
    segmenter: PromptableSegmenter, embedding: Embedding, objects: Sequence[ObjectPrompt]
) -> tuple[list[torch.Tensor], np.ndarray]:
    """Decode every object; returns low-res logits per object (1, s, s) in object order and their scores.

    Objects with and without a box are decoded in separate batches (SAM's prompt encoder needs one structure per
    batch); point lists are padded with SAM's "not a point" label -1.
    """
    logits: list[torch.Tensor | None] = [None] * len(objects)
    scores = np.zeros(len(objects), dtype=np.float32)
    for with_box in (True, False):
        idx = [i for i, o in enumerate(objects) if (o.box is not None) == with_box]
        if not idx:
            continue
        n_pts = max(len(objects[i].points) for i in idx)
        boxes = np.array([objects[i].box for i in idx], dtype=np.float32) if with_box else None
        points = labels = None
        if n_pts:
            points = np.zeros((len(idx), n_pts, 2), dtype=np.float32)
            labels = -np.ones((len(idx), n_pts), dtype=np.int64)
            for row, i in enumerate(idx):
                k = len(objects[i].points)
                if k:
                    points[row, :k] = objects[i].points
                    labels[row, :k] = objects[i].labels
        pred = segmenter.predict(embedding, boxes=boxes, points=points, point_labels=labels)
        for row, i in enumerate(idx):
            logits[i] = pred.low_res_logits[row, :1]
            scores[i] = pred.scores[row, 0]
    return logits, scores  # type: ignore[return-value]


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
    channel_axis: int | None = None,
    channels: list[int] | None = None,
    normalize: Normalization = "auto",
    name: str = "image",
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
) -> SegmentationResult:
    """Segment one 2D image from boxes/points; one instance label per object (see :func:`group_prompts`)."""
    hwc = as_channels_last(image, channel_axis=channel_axis, channels=channels, name=name)
    objects = group_prompts(hwc.shape[:2], boxes, positive_points, negative_points)
    warnings = []
    if not segmenter.points_reliable and any(o.box is None for o in objects):
        warnings.append(f"{segmenter.name} was trained on box prompts; point-only objects are unreliable, draw a box")
    timings: dict[str, float] = {}
    report = progress or (lambda fraction, message: None)

    report(0.0, f"encoding {name} with {segmenter.name}")
    t0 = time.perf_counter()
    embedding = segmenter.embed(hwc, normalize=normalize, name=name)
    timings["embed_s"] = time.perf_counter() - t0
    if cancel is not None and cancel():
        raise CancelledError("cancelled")

    report(0.6, f"decoding {len(objects)} object(s)")
    t0 = time.perf_counter()
    logits, scores = predict_objects(segmenter, embedding, objects)
    timings["decode_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    stacked = Prediction(torch.stack(logits), scores[:, None], embedding.transform)
    labels = paint_instances(stacked, cancel=cancel)
    timings["paint_s"] = time.perf_counter() - t0
    report(1.0, "done")
    return SegmentationResult(labels=labels, scores=scores, timings=timings, warnings=warnings)
