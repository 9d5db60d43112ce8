"""Prompt schemes decoded into masks, and masks scored without target ground truth (SAT's feedback loop)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...models.protocols import Embedding, PromptableSegmenter
from .correspondence import Correspondence
from .settings import PromptScheme


# ---------------------------------------------------------------------------------------------------------------
# decoding and scoring
# ---------------------------------------------------------------------------------------------------------------
class _Decoder:
    """Decodes prompts once each (bank settings often yield identical boxes) and keeps low-res logits."""

    def __init__(self, segmenter: PromptableSegmenter, embedding: Embedding, use_points: bool) -> None:
        self.segmenter, self.embedding, self.use_points = segmenter, embedding, use_points
        self._cache: dict[tuple, torch.Tensor] = {}
        self._iou: dict[tuple, float] = {}

    @staticmethod
    def _key(box: np.ndarray | None, pos: np.ndarray, neg: np.ndarray) -> tuple:
        return (
            None if box is None else tuple(np.round(box, 1).tolist()),
            tuple(np.round(pos, 1).ravel().tolist()),
            tuple(np.round(neg, 1).ravel().tolist()),
        )

    def prompts(self, scheme: PromptScheme) -> list[tuple]:
        pos = scheme.positives if self.use_points or len(scheme.boxes) == 0 else np.zeros((0, 2))
        neg = scheme.negatives if self.use_points or len(scheme.boxes) == 0 else np.zeros((0, 2))
        if len(scheme.boxes) == 0:
            return [(None, pos, neg)]
        if len(scheme.boxes) > 1:  # one box per region: its own points only
            out = []
            for box in scheme.boxes:
                inside_p = _inside(pos, box)
                out.append((box, pos[inside_p], neg[_inside(neg, box)]))
            return out
        return [(scheme.boxes[0], pos, neg)]

    def decode(self, prompts: list[tuple]) -> None:
        todo = {self._key(*p): p for p in prompts if self._key(*p) not in self._cache}
        groups: dict[tuple, list] = {}
        for key, (box, pos, neg) in todo.items():  # one batch per (has box, number of points)
            groups.setdefault((box is not None, len(pos) + len(neg)), []).append((key, box, pos, neg))
        for (has_box, n_pts), items in groups.items():
            boxes = np.stack([b for _, b, _, _ in items]).astype(np.float32) if has_box else None
            points = labels = None
            if n_pts:
                points = np.stack([np.concatenate([p, q]) for _, _, p, q in items]).astype(np.float32)
                labels = np.stack([np.r_[np.ones(len(p)), np.zeros(len(q))] for _, _, p, q in items]).astype(np.int64)
            pred = self.segmenter.predict(self.embedding, boxes=boxes, points=points, point_labels=labels)
            for row, (key, *_rest) in enumerate(items):
                self._cache[key] = pred.low_res_logits[row, 0]
                self._iou[key] = float(pred.scores[row, 0])

    def logits(self, prompts: list[tuple]) -> torch.Tensor:
        """Low-res logits of the union of the prompts' masks (elementwise max)."""
        return torch.stack([self._cache[self._key(*p)] for p in prompts]).max(dim=0).values

    def predicted_iou(self, prompts: list[tuple]) -> float:
        """The decoder's own IoU estimate of the prompts' masks (mean over the boxes of a multi-box scheme)."""
        return float(np.mean([self._iou[self._key(*p)] for p in prompts]))


def _inside(points: np.ndarray, box: np.ndarray) -> np.ndarray:
    if len(points) == 0:
        return np.zeros(0, bool)
    x, y = points[:, 0], points[:, 1]
    return (x >= box[0]) & (x <= box[2]) & (y >= box[1]) & (y <= box[3])


def low_res_to_grid(low_res_logits: torch.Tensor, embedding: Embedding, grid_shape: tuple[int, int]) -> torch.Tensor:
    """(..., s, s) decoder logits -> (..., h, w) fraction of each feature cell inside the mask."""
    transform = embedding.transform
    s = low_res_logits.shape[-1]
    nh, nw = transform.resized_shape
    ch = max(1, round(nh * s / transform.input_size))
    cw = max(1, round(nw * s / transform.input_size))
    m = (low_res_logits[..., :ch, :cw] > 0).float()
    shape = m.shape
    m = F.interpolate(m.reshape(-1, 1, ch, cw), size=grid_shape, mode="area")
    return m.reshape(*shape[:-2], *grid_shape)


def score_mask(mask_grid: np.ndarray, corr: Correspondence, temperature: float | None = None) -> float:
    """Score of a candidate mask without target ground truth (SAT's prompt-scheme score).

    GUESS(SAT): soft Dice between the mask (fraction per feature cell) and the correspondence's foreground evidence
    ``p = sigmoid((fg_sim - bg_sim) / T)`` — the soft version of cycle consistency: a cell counts as foreground when
    its nearest reference patch is foreground. T defaults to the standard deviation of fg_sim - bg_sim over the
    target (scale-free across extractors). A mask that leaks into reference-background-like tissue, or misses
    reference-foreground-like tissue, loses score.
    """
    margin = corr.margin
    t = temperature if temperature is not None else float(margin.std()) + 1e-6
    p = 1.0 / (1.0 + np.exp(-margin / t))
    m = np.asarray(mask_grid, np.float64).ravel()
    return float(2 * (m * p).sum() / (m.sum() + p.sum() + 1e-9))
