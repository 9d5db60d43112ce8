"""Overlap metrics: binary masks, and objects of label images (instance F1 at an IoU threshold; the GlaS
challenge's object F1)."""

from __future__ import annotations

import numpy as np


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two binary masks; 1.0 when both are empty."""
    a, b = np.asarray(prediction, bool), np.asarray(truth, bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


def iou(prediction: np.ndarray, truth: np.ndarray) -> float:
    a, b = np.asarray(prediction, bool), np.asarray(truth, bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def matched_pairs(prediction: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """(2, M) ids (predicted, true) of the object pairs whose IoU exceeds ``threshold`` (one-to-one when it is at
    least 0.5); label arrays of any integer dtype and ids, 0 = background."""
    both = (prediction > 0) & (truth > 0)
    if not both.any():
        return np.zeros((2, 0), np.int64)
    pairs, inter = np.unique(
        np.stack([prediction[both].astype(np.int64), truth[both].astype(np.int64)]), axis=1, return_counts=True
    )
    p_ids, p_area = np.unique(prediction[prediction > 0].astype(np.int64), return_counts=True)
    t_ids, t_area = np.unique(truth[truth > 0].astype(np.int64), return_counts=True)
    union = p_area[np.searchsorted(p_ids, pairs[0])] + t_area[np.searchsorted(t_ids, pairs[1])] - inter
    return pairs[:, inter / union > threshold]


def match_instances(prediction: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Object-level precision/recall/F1 at an IoU threshold (one-to-one, IoU > 0.5 matches are unique), and the
    counts they come from (to pool a set's objects: :func:`pooled_f1`)."""
    predicted, true = len(np.unique(prediction[prediction > 0])), len(np.unique(truth[truth > 0]))
    matched = matched_pairs(prediction, truth, threshold).shape[1] if predicted and true else 0
    return _detection_scores(matched, predicted, true)


def glas_object_f1(prediction: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Object F1 as the GlaS challenge defines it (Sirinukunwattana et al. 2017, section 3.1): a predicted object is
    a true positive when it covers at least half of the true object it overlaps most (each true object counted
    once), else a false positive; a true object no prediction covers by half is a false negative. More lenient than
    IoU > 0.5 to a prediction larger than its object (a gland with some stroma around it counts)."""
    predicted, true = len(np.unique(prediction[prediction > 0])), len(np.unique(truth[truth > 0]))
    both = (prediction > 0) & (truth > 0)
    if not both.any():
        return _detection_scores(0, predicted, true)
    pairs, inter = np.unique(
        np.stack([prediction[both].astype(np.int64), truth[both].astype(np.int64)]), axis=1, return_counts=True
    )
    t_area = dict(zip(*np.unique(truth[truth > 0].astype(np.int64), return_counts=True), strict=True))
    best: dict[int, tuple[int, int]] = {}  # predicted id -> (intersection, true id) of its largest overlap
    for p, t, n in zip(pairs[0], pairs[1], inter, strict=True):
        if n > best.get(int(p), (0, 0))[0]:
            best[int(p)] = (int(n), int(t))
    found = {t for n, t in best.values() if n >= 0.5 * t_area[t]}  # two halves of one object: one detection
    return _detection_scores(len(found), predicted, true)


def _detection_scores(matched: int, predicted: int, true: int) -> dict[str, float]:
    precision = matched / predicted if predicted else 0.0
    recall = matched / true if true else 0.0
    f1 = 0.0 if matched == 0 else 2 * precision * recall / (precision + recall)
    counts = {"matched": matched, "predicted": predicted, "true": true}
    return {"precision": precision, "recall": recall, "f1": f1, **counts}


def pooled_f1(counts: list[dict[str, float]]) -> float:
    """F1 of a set's objects counted together (the GlaS challenge's way) from per-image ``matched`` / ``predicted`` /
    ``true`` counts: an image with two glands weighs less than one with twenty, as in the challenge."""
    matched = sum(c["matched"] for c in counts)
    total = sum(c["predicted"] + c["true"] for c in counts)
    return 0.0 if total == 0 else 2 * matched / total
