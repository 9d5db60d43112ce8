"""Prompt schemes from a correspondence: exclusive and sparse sampling in physical space, and boxes (GBMSeg
steps 4-5)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial.distance import cdist

from ...errors import PromptsegError
from .correspondence import Correspondence
from .settings import BOX_MODES, PromptScheme, SatSetting


# ---------------------------------------------------------------------------------------------------------------
# physical-space sampling (GBMSeg's automatic prompt engineering)
# ---------------------------------------------------------------------------------------------------------------
def exclusive_sampling(negatives: np.ndarray, positives: np.ndarray, radius: float) -> np.ndarray:
    """Indices of negatives at least ``radius`` pixels from every positive."""
    if len(negatives) == 0 or len(positives) == 0:
        return np.arange(len(negatives))
    return np.flatnonzero(cdist(negatives, positives).min(axis=1) >= radius)


def sparse_sampling(
    points: np.ndarray,
    others: np.ndarray,
    radius: float,
    priority: np.ndarray,
    *,
    distances: np.ndarray | None = None,
    other_distances: np.ndarray | None = None,
) -> np.ndarray:
    """Greedy clusters within ``radius``; per cluster keep the point farthest (mean distance) from ``others``.

    GBMSeg visits points in patch order; GUESS(SAT): we visit them by decreasing ``priority`` (similarity margin)
    so the seeds are the most confident points. Without ``others`` the highest-priority member is kept.
    ``distances`` (points x points) and ``other_distances`` (points x others) may be passed precomputed.
    """
    n = len(points)
    if n == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(-priority, kind="stable")
    d = cdist(points, points) if distances is None else distances
    if len(others):
        od = cdist(points, others) if other_distances is None else other_distances
        far = od.mean(axis=1)
    else:
        far = priority.astype(np.float64)
    within = d <= radius
    assigned = np.zeros(n, bool)
    keep = []
    for seed in order:
        if assigned[seed]:
            continue
        members = np.flatnonzero(within[seed] & ~assigned)
        assigned[members] = True
        keep.append(int(members[np.argmax(far[members])]))
    return np.array(keep, np.int64)


def _cell_box(centres: np.ndarray, stride: tuple[float, float], shape: tuple[int, int]) -> np.ndarray:
    """Box around patch centres grown to whole patches, clipped to the image."""
    sy, sx = stride
    h, w = shape
    x0, y0 = centres.min(axis=0) - (sx / 2, sy / 2)
    x1, y1 = centres.max(axis=0) + (sx / 2, sy / 2)
    return np.array([max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)], np.float32)


class SchemeBuilder:
    """Bank settings -> prompt schemes on one correspondence; distances and samplings are shared across settings."""

    def __init__(self, corr: Correspondence) -> None:
        self.corr = corr
        self.centres = corr.target.centres_xy().astype(np.float64)
        self.long_side = max(corr.target.image_shape)
        self.margin = corr.margin
        pos, neg = self.centres[corr.positive_cells], self.centres[corr.negative_cells]
        self.d_pp = cdist(pos, pos)
        self.d_nn = cdist(neg, neg)
        self.d_np = cdist(neg, pos) if len(neg) and len(pos) else np.zeros((len(neg), len(pos)))
        self._sampled: dict[tuple[float, float, float], tuple[np.ndarray, np.ndarray]] = {}

    def _sample(self, setting: SatSetting) -> tuple[np.ndarray, np.ndarray]:
        """GBMSeg's order: exclusive sampling of negatives, sparse positives, then sparse negatives."""
        key = (setting.positive_radius, setting.negative_radius, setting.exclusion_radius)
        if key in self._sampled:
            return self._sampled[key]
        corr, margin, L = self.corr, self.margin, self.long_side
        pos_idx = np.arange(len(corr.positive_cells))
        neg_idx = np.arange(len(corr.negative_cells))
        if len(pos_idx) and len(neg_idx):
            neg_idx = neg_idx[self.d_np.min(axis=1) >= setting.exclusion_radius * L]
        pos_margin = margin[corr.positive_cells]
        keep = sparse_sampling(
            self.centres[corr.positive_cells],
            self.centres[corr.negative_cells[neg_idx]],
            setting.positive_radius * L,
            pos_margin,
            distances=self.d_pp,
            other_distances=self.d_np[neg_idx].T,
        )
        pos_idx = pos_idx[keep]
        keep = sparse_sampling(
            self.centres[corr.negative_cells[neg_idx]],
            self.centres[corr.positive_cells[pos_idx]],
            setting.negative_radius * L,
            -margin[corr.negative_cells[neg_idx]],
            distances=self.d_nn[np.ix_(neg_idx, neg_idx)],
            other_distances=self.d_np[np.ix_(neg_idx, pos_idx)],
        )
        neg_idx = neg_idx[keep]
        self._sampled[key] = (corr.positive_cells[pos_idx], corr.negative_cells[neg_idx])
        return self._sampled[key]

    def build(self, setting: SatSetting) -> PromptScheme:
        pos_cells, neg_cells = self._sample(setting)
        margin = self.margin
        if setting.max_points:  # the most confident points first
            pos_cells = pos_cells[np.argsort(-margin[pos_cells], kind="stable")[: setting.max_points]]
            neg_cells = neg_cells[np.argsort(margin[neg_cells], kind="stable")[: setting.max_points]]
        pos = self.centres[pos_cells].astype(np.float32)
        neg = self.centres[neg_cells].astype(np.float32)
        boxes = _scheme_boxes(self.corr, pos_cells, setting.box_mode, setting.region_threshold)
        return PromptScheme(setting=setting, positives=pos, negatives=neg, boxes=boxes)


def build_scheme(corr: Correspondence, setting: SatSetting) -> PromptScheme:
    """One bank setting -> positive/negative points and boxes (GBMSeg's APE order, then SAT's box derivation)."""
    return SchemeBuilder(corr).build(setting)


def _scheme_boxes(
    corr: Correspondence, pos_cells: np.ndarray, box_mode: str, region_threshold: float = 0.0
) -> np.ndarray:
    target = corr.target
    centres = target.centres_xy()
    if box_mode == "none":
        return np.zeros((0, 4), np.float32)
    if box_mode == "points":
        return _cell_box(centres[pos_cells], target.stride, target.image_shape)[None]
    if box_mode not in ("region", "components"):
        raise PromptsegError(f"box_mode must be one of {BOX_MODES}, got {box_mode!r}")
    margin = corr.margin
    region = (margin > region_threshold * float(margin.std())).reshape(target.shape)
    components, _ = ndimage.label(region, structure=np.ones((3, 3)))
    flat = components.ravel()
    ids = np.unique(flat[pos_cells])
    ids = ids[ids > 0]
    if len(ids) == 0:  # positives outside every fg>bg region: fall back to their own box
        return _cell_box(centres[pos_cells], target.stride, target.image_shape)[None]
    if box_mode == "region":
        return _cell_box(centres[np.isin(flat, ids)], target.stride, target.image_shape)[None]
    return np.stack([_cell_box(centres[flat == i], target.stride, target.image_shape) for i in ids])
