"""The one-shot strategies on one reference-target pair: SAT, PerSAM-style and Matcher-style."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from ...models.features import PatchFeatures
from ...models.protocols import Embedding, PromptableSegmenter
from .correspondence import Correspondence
from .decoding import _Decoder, low_res_to_grid, score_mask
from .schemes import SchemeBuilder, _cell_box
from .settings import OneShotResult, PromptScheme, SatSetting, SchemeDiagnostics


# ---------------------------------------------------------------------------------------------------------------
# strategies on one (reference, target) pair
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class _Pair:
    """Everything a strategy needs for one reference and one target."""

    corr: Correspondence
    segmenter: PromptableSegmenter
    embedding: Embedding  # segmenter embedding of the target
    use_points: bool
    reference: PatchFeatures


def _finish(
    logits_low: torch.Tensor, embedding: Embedding, scheme: PromptScheme, strategy: str, schemes: list[dict]
) -> OneShotResult:
    logits = embedding.transform.logits_to_original(logits_low[None, None])[0, 0]
    probability = torch.sigmoid(logits).numpy().astype(np.float32)
    mask = logits.numpy() > 0
    return OneShotResult(
        mask=mask,
        probability=probability,
        labels=mask.astype(np.uint16),
        positives=scheme.positives,
        negatives=scheme.negatives,
        boxes=scheme.boxes,
        score=scheme.score,
        strategy=strategy,
        schemes=schemes,
    )


def stability(logits: torch.Tensor, offset: float = 1.0) -> np.ndarray:
    """SAM's stability score per mask: IoU of the masks at logit thresholds +offset and -offset."""
    hi, lo = (logits > offset).flatten(1).sum(1), (logits > -offset).flatten(1).sum(1)
    return (hi.float() / lo.clamp(min=1).float()).numpy()


def candidate_features(
    scores: np.ndarray,
    predicted_iou: np.ndarray,
    logits: torch.Tensor,
    contrast: np.ndarray,
    area_log_ratio: np.ndarray,
) -> dict[str, np.ndarray]:
    """Ground-truth-free features of SAT's candidate masks, the inputs of :data:`SELECTION_RULES`."""
    return {
        "score": np.asarray(scores, np.float64),
        "predicted_iou": np.clip(predicted_iou, 0, 1).astype(np.float64),
        "stability": stability(logits).astype(np.float64),
        "contrast": np.asarray(contrast, np.float64),
        "area_log_ratio": np.asarray(area_log_ratio, np.float64),
    }


#: how SAT picks one candidate of its bank: name -> candidate features -> ranking value (the highest wins)
SELECTION_RULES: dict[str, Callable[[dict[str, np.ndarray]], np.ndarray]] = {
    "score": lambda f: f["score"],
    "score_x_iou": lambda f: f["score"] * f["predicted_iou"],
    "score_x_stability": lambda f: f["score"] * f["stability"],
    "score_x_iou_x_stability": lambda f: f["score"] * f["predicted_iou"] * f["stability"],
    "contrast": lambda f: f["contrast"],
    "score_x_contrast": lambda f: f["score"] * np.maximum(f["contrast"], 0),
    "score_area_prior": lambda f: f["score"] * np.exp(-0.5 * f["area_log_ratio"]),
}
DEFAULT_RULE = "score"


def run_sat(
    pair: _Pair,
    bank: Sequence[SatSetting],
    temperature: float | None = None,
    diagnostics: bool = False,
    rule: str = DEFAULT_RULE,
) -> OneShotResult:
    """SAT on one reference: every bank setting -> prompt scheme -> mask -> score; keep the best by ``rule``."""
    decoder = _Decoder(pair.segmenter, pair.embedding, pair.use_points)
    builder = SchemeBuilder(pair.corr)
    schemes = [builder.build(setting) for setting in bank]
    prompts = [decoder.prompts(s) for s in schemes]
    decoder.decode([p for ps in prompts for p in ps])
    unions = torch.stack([decoder.logits(ps) for ps in prompts])
    grids = low_res_to_grid(unions, pair.embedding, pair.corr.target.shape).numpy()
    for scheme, grid in zip(schemes, grids, strict=True):
        scheme.score = score_mask(grid, pair.corr, temperature)
    area = grids.reshape(len(grids), -1).mean(axis=1)
    area_log_ratio = np.abs(np.log((area + 1e-3) / (pair.corr.reference_area + 1e-3)))
    features = candidate_features(
        np.array([s.score for s in schemes]),
        np.array([decoder.predicted_iou(p) for p in prompts]),
        unions,
        _contrast(grids, pair.corr.margin),
        area_log_ratio,
    )
    best = int(np.argmax(SELECTION_RULES[rule](features)))
    result = _finish(unions[best], pair.embedding, schemes[best], "sat", [s.summary() for s in schemes])
    if diagnostics:
        result.diagnostics = SchemeDiagnostics(
            positive_xy=pair.corr.target.centres_xy()[pair.corr.positive_cells],
            candidate_logits=unions,
            features=features,
            chosen=best,
            affinity=pair.corr.affinity,
            transform=pair.embedding.transform,
        )
    return result


def _contrast(grids: np.ndarray, margin: np.ndarray) -> np.ndarray:
    """(S,) mean fg-bg margin inside each mask grid minus outside, over the margin's standard deviation."""
    m = grids.reshape(len(grids), -1).astype(np.float64)
    inside = (m @ margin) / np.maximum(m.sum(1), 1e-9)
    outside = ((1 - m) @ margin) / np.maximum((1 - m).sum(1), 1e-9)
    return (inside - outside) / (float(margin.std()) + 1e-9)


def run_persam(pair: _Pair, refinements: int = 2) -> OneShotResult:
    """PerSAM-style: location prior from the masked reference feature, then cascaded refinement.

    Target embedding = mean reference feature inside the mask; cosine map on the target; positive point at its
    maximum, negative at its minimum (PerSAM). GUESS(box-only): LiteMedSAM needs a box, so the first box is the
    connected region of the map above its Otsu threshold that contains the maximum; each refinement re-decodes
    with the bounding box of the previous mask (PerSAM's second cascade step; its mask-logit input is only used
    when the segmenter takes points reliably, since LiteMedSAM was not trained with mask prompts).
    """
    from skimage.filters import threshold_otsu

    corr, target = pair.corr, pair.corr.target
    sim = (target.flat() @ pair.corr.prototype).numpy()
    centres = target.centres_xy()
    pos, neg = centres[[int(sim.argmax())]], centres[[int(sim.argmin())]]
    grid = sim.reshape(target.shape)
    thr = threshold_otsu(grid) if np.ptp(grid) > 0 else grid.max()
    components, _ = ndimage.label(grid > thr, structure=np.ones((3, 3)))
    cid = components.ravel()[int(sim.argmax())]
    cells = np.flatnonzero(components.ravel() == cid) if cid else np.array([int(sim.argmax())])
    box = _cell_box(centres[cells], target.stride, target.image_shape)
    use_points = pair.use_points
    pts = np.concatenate([pos, neg])[None].astype(np.float32)
    lab = np.array([[1, 0]])
    seg = pair.segmenter
    pred = seg.predict(
        pair.embedding, boxes=box[None], points=pts if use_points else None, point_labels=lab if use_points else None
    )
    low = pred.low_res_logits[:1]
    for _ in range(refinements):
        mask_grid = low_res_to_grid(low[0, 0], pair.embedding, target.shape).numpy()
        if mask_grid.max() <= 0:
            break
        ys, xs = np.nonzero(mask_grid > 0)
        cells_m = ys * target.shape[1] + xs
        box = _cell_box(centres[cells_m], target.stride, target.image_shape)
        pred = seg.predict(
            pair.embedding,
            boxes=box[None],
            points=pts if use_points else None,
            point_labels=lab if use_points else None,
            mask_input=low if use_points else None,
        )
        low = pred.low_res_logits[:1]
    scheme = PromptScheme(SatSetting(box_mode="points"), pos, neg, box[None])
    scheme.score = score_mask(low_res_to_grid(low[0, 0], pair.embedding, target.shape).numpy(), corr)
    return _finish(low[0, 0], pair.embedding, scheme, "persam", [scheme.summary()])


def run_matcher(
    pair: _Pair, *, max_reference_points: int = 256, n_subsets: int = 16, top_k: int = 3, seed: int = 0
) -> OneShotResult:
    """Matcher-style: bidirectional Hungarian matching, robust prompt sampling, mask scoring, union of the top masks.

    Forward: one-to-one assignment of reference fg patches to target patches; reverse: assignment of those target
    patches back to all reference patches; keep pairs whose reverse lands in the reference fg; top half by
    similarity when more than 40 (Matcher). GUESS(simplified): reference fg patches are subsampled to
    ``max_reference_points`` for speed; the prompt sampler draws ``n_subsets`` random subsets of the kept points
    (plus all of them) and decodes the box of each subset; masks are scored by cosine similarity of their mean
    target feature to the reference prototype (instead of Matcher's EMD) x purity (share of the mask in fg>bg
    cells) x coverage (share of kept points inside); the ``top_k`` masks within 0.1 of the best are united.
    """
    from scipy.optimize import linear_sum_assignment

    corr, target = pair.corr, pair.corr.target
    rng = np.random.default_rng(seed)
    sim = corr.similarity.numpy()
    fg_idx = np.flatnonzero(corr.ref_fg)
    if len(fg_idx) > max_reference_points:
        fg_idx = np.sort(rng.choice(fg_idx, max_reference_points, replace=False))
    rows, cols = linear_sum_assignment(-sim[:, fg_idx].T)  # ref fg -> target
    tgt = cols
    r_rows, r_cols = linear_sum_assignment(-sim[tgt])  # those target cells -> reference
    back = np.empty(len(tgt), np.int64)
    back[r_rows] = r_cols
    keep = corr.ref_fg[back]
    tgt, s = tgt[keep], sim[tgt[keep], fg_idx[rows[keep]]]
    if len(tgt) == 0:
        tgt, s = corr.positive_cells, corr.fg_sim[corr.positive_cells]
    if len(tgt) > 40:
        top = np.argsort(-s)[: len(tgt) // 2]
        tgt = tgt[top]
    centres = target.centres_xy()
    pts = centres[tgt]
    subsets = [np.arange(len(tgt))]
    for _ in range(n_subsets):
        k = int(rng.integers(1, max(2, min(len(tgt), 8)) + 1))
        subsets.append(rng.choice(len(tgt), size=min(k, len(tgt)), replace=False))
    boxes = np.stack([_cell_box(pts[sub], target.stride, target.image_shape) for sub in subsets])
    boxes_u, inverse = np.unique(np.round(boxes, 1), axis=0, return_inverse=True)
    pred = pair.segmenter.predict(pair.embedding, boxes=boxes_u.astype(np.float32))
    low = pred.low_res_logits[:, 0]
    grids = low_res_to_grid(low, pair.embedding, target.shape).numpy().reshape(len(boxes_u), -1)
    feats = target.flat().numpy()
    region = corr.region.ravel()
    scores = np.zeros(len(boxes_u))
    for i, g in enumerate(grids):
        if g.sum() <= 0:
            continue
        mean = g @ feats / g.sum()
        emd_like = float(mean @ corr.prototype.numpy() / (np.linalg.norm(mean) + 1e-9))
        purity = float((g * region).sum() / g.sum())
        coverage = float((g[tgt] > 0.5).mean())
        scores[i] = max(emd_like, 0) * purity * coverage
    order = np.argsort(-scores)
    chosen = [i for i in order[:top_k] if scores[i] >= scores[order[0]] - 0.1 and scores[i] > 0] or [int(order[0])]
    union = low[chosen].max(dim=0).values
    scheme = PromptScheme(SatSetting(box_mode="points"), pts, np.zeros((0, 2), np.float32), boxes_u[chosen])
    scheme.score = score_mask(low_res_to_grid(union, pair.embedding, target.shape).numpy(), corr)
    del inverse
    return _finish(union, pair.embedding, scheme, "matcher", [scheme.summary()])
