"""One-shot reference segmentation: SAT (Segment Any Tissue) and PerSAM-/Matcher-style strategies.

One labelled reference (image + mask) -> the same tissue in other images, with no training.

SAT, as described by Liu et al. (Medical Image Analysis 2025) and its public predecessor GBMSeg (MICCAI 2024):

1. patch features of reference and target (:mod:`..models.features`), L2-normalised;
2. reference patches labelled foreground (all pixels in the mask) / background (none in it); mixed ones dropped;
3. correspondence matrix of cosine similarities; forward match (nearest target patch of every reference fg patch)
   and backward match (nearest reference patch of that target patch): a target patch is a positive only when its
   back-match is a reference fg patch; the same for background -> negatives (GBMSeg step 3);
4. points at patch centres in target pixels;
5. physical space: exclusive sampling (negatives within ``exclusion_radius`` of a positive are dropped) and sparse
   sampling (greedy clusters within a radius, keep per cluster the point farthest on average from the opposite set)
   with GBMSeg's order of operations;
6. SAT's additions: a bank of hyper-parameter settings, each giving a prompt scheme -> mask; every mask is scored
   without target ground truth and the best kept (the "cyclic feedback loop"); several references -> ensemble.

Where the paper leaves a detail open, the choice is marked ``GUESS(SAT)`` in a comment and exposed as a parameter.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.spatial.distance import cdist

from ..errors import CancelledError, PromptsegError
from ..models.features import PatchFeatureExtractor, PatchFeatures, SegmenterFeatures
from ..models.preprocessing import Normalization, as_channels_last
from ..models.protocols import Embedding, PromptableSegmenter

#: progress(fraction_done, message)
ProgressCallback = Callable[[float, str], None]
Strategy = Literal["sat", "persam", "matcher"]
BoxMode = Literal["points", "region", "components", "none"]
STRATEGIES: tuple[str, ...] = ("sat", "persam", "matcher")
BOX_MODES: tuple[str, ...] = ("points", "region", "components", "none")


# ---------------------------------------------------------------------------------------------------------------
# hyper-parameter bank
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SatSetting:
    """One entry of SAT's hyper-parameter bank. Radii are fractions of the target's longer side.

    GBMSeg's defaults are 70 px of a 560 px input = 0.125 for the positive, negative and exclusion radii.
    GUESS(SAT): the paper's bank is not public; its parameters (positive radius, negative radius, exclusion radius,
    number of points) are the ones named in the paper, ``box_mode`` is ours — LiteMedSAM needs a box:

    - ``points``: bounding box of the chosen positive points (each grown by one patch);
    - ``region``: bounding box of the connected regions of the target where foreground similarity beats
      background similarity (``fg_sim > bg_sim``) that contain a chosen positive point;
    - ``components``: one box per such region (several objects, e.g. two lungs), masks united;
    - ``none``: points only (SAM ViT checkpoints; LiteMedSAM was trained on boxes and does poorly on points).

    ``region_threshold`` (GUESS(SAT): the paper's "thresholds") raises the bar for a cell to join a region, in units
    of the standard deviation of fg_sim - bg_sim over the target, so the bank also holds tighter regions.
    """

    positive_radius: float = 0.125
    negative_radius: float = 0.125
    exclusion_radius: float = 0.125
    max_points: int = 0  # 0 = keep every point left after sparse sampling
    box_mode: BoxMode = "points"
    #: region/components modes: cells with fg_sim - bg_sim above this many standard deviations of it form regions
    region_threshold: float = 0.0


def default_bank(box_modes: Sequence[str] = ("points", "region", "components")) -> list[SatSetting]:
    """GUESS(SAT): the default bank (15 settings with the three box modes).

    Point-derived prompts (``points``, ``none``): radii 1/16, 1/8 (GBMSeg), 1/4 of the longer side x {3, 8, all}
    points. Region-derived boxes do not depend on the radii (only on which regions hold a positive), so they vary
    the region threshold instead: 0, 0.5 and 1 standard deviation of fg_sim - bg_sim.
    """
    bank = []
    for box_mode in box_modes:
        if box_mode in ("points", "none"):
            for radius in (0.0625, 0.125, 0.25):
                for max_points in (3, 8, 0):
                    bank.append(SatSetting(radius, radius, radius, max_points, box_mode))  # type: ignore[arg-type]
        else:
            for threshold in (0.0, 0.5, 1.0):
                bank.append(SatSetting(box_mode=box_mode, region_threshold=threshold))  # type: ignore[arg-type]
    return bank


# ---------------------------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class PromptScheme:
    """Prompts of one bank setting on one target, in target pixels (x = column, y = row)."""

    setting: SatSetting
    positives: np.ndarray  # (P, 2)
    negatives: np.ndarray  # (Q, 2)
    boxes: np.ndarray  # (B, 4) x0, y0, x1, y1; B = 0 with box_mode "none"
    score: float = float("nan")

    def summary(self) -> dict:
        return {
            **asdict(self.setting),
            "positives": len(self.positives),
            "negatives": len(self.negatives),
            "boxes": np.round(self.boxes, 1).tolist(),
            "score": round(float(self.score), 4),
        }


@dataclass
class SchemeDiagnostics:
    """Every candidate of SAT's bank on one target, kept when asked (``segment_like(..., diagnostics=True)``).

    For benchmarks that ask where a result lost: the correspondence (positives on the object?), the scheme score
    (was a better candidate in the bank?) or the decoder.
    """

    positive_xy: np.ndarray  # (P, 2) centres of the cycle-consistent positive cells (before physical sampling)
    candidate_logits: torch.Tensor  # (S, s, s) low-res decoder logits of each scheme's mask
    features: dict[str, np.ndarray]  # (S,) each: see :func:`candidate_features`
    chosen: int
    affinity: float  # see :attr:`Correspondence.affinity`
    transform: object  # the embedding's ResizeTransform (low-res logits -> target pixels)


@dataclass
class OneShotResult:
    """Segmentation of one target."""

    mask: np.ndarray  # (H, W) bool
    probability: np.ndarray  # (H, W) float32, sigmoid of the decoder logits (mean over references when ensembling)
    labels: np.ndarray  # (H, W) uint16: 1 on the mask (instances 1..N in many-instances mode)
    positives: np.ndarray  # (P, 2) chosen positive points, x, y
    negatives: np.ndarray  # (Q, 2) chosen negative points, x, y
    boxes: np.ndarray  # (B, 4) chosen boxes
    score: float  # the chosen scheme's score (see :func:`score_mask`)
    strategy: str
    schemes: list[dict] = field(default_factory=list)  # every scheme tried, with its score (SAT's bank)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    per_reference: list[OneShotResult] = field(default_factory=list)
    diagnostics: SchemeDiagnostics | None = None
    #: how well the reference transfers to this target, 0-1 (see :func:`transfer_confidence`); ``score`` includes it
    transfer: float = 1.0


# ---------------------------------------------------------------------------------------------------------------
# correspondence between one reference and one target
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Correspondence:
    """Patch correspondence of a target to a labelled reference (GBMSeg steps 2-4)."""

    target: PatchFeatures
    similarity: torch.Tensor  # (Nt, Nr) cosine similarities
    ref_fg: np.ndarray  # (Nr,) bool, reference patch all inside the mask
    ref_bg: np.ndarray  # (Nr,) bool, reference patch all outside
    fg_sim: np.ndarray  # (Nt,) max similarity to a reference fg patch
    bg_sim: np.ndarray  # (Nt,) max similarity to a reference bg patch (-1 when there is none)
    positive_cells: np.ndarray  # target cell indices kept by forward/backward matching to fg
    negative_cells: np.ndarray  # the same for bg
    prototype: torch.Tensor  # (C,) mean reference feature inside the mask, normalised (PerSAM's target embedding)
    reference_area: float = float("nan")  # share of the reference image inside its mask
    warnings: list[str] = field(default_factory=list)

    @property
    def margin(self) -> np.ndarray:
        """(Nt,) fg_sim - bg_sim: > 0 where a target patch looks more like the reference object than its surround."""
        return self.fg_sim - self.bg_sim

    @property
    def affinity(self) -> float:
        """Median over target cells of the best cosine similarity to a labelled reference cell (fg or bg).

        Low when the target's patches resemble nothing in the reference (another modality or stain): the
        correspondence is then a guess, whatever the scheme score says.
        """
        return float(np.median(np.maximum(self.fg_sim, self.bg_sim)))

    @property
    def region(self) -> np.ndarray:
        """(h, w) bool grid: cells whose nearest reference patch (by max similarity) is foreground."""
        return (self.margin > 0).reshape(self.target.shape)


def self_affinity(features: PatchFeatures, exclude: int = 2) -> float:
    """Median over an image's cells of the best cosine similarity to a cell of the same image outside its
    (2 * exclude + 1)^2 neighbourhood: how alike the patches of one image of this kind are. A target whose
    :attr:`Correspondence.affinity` falls far below its reference's self-affinity is of another kind."""
    flat = features.flat()
    h, w = features.shape
    yy, xx = np.divmod(np.arange(h * w), w)
    query = np.flatnonzero((yy % 2 == 0) & (xx % 2 == 0))  # every other cell per axis: the median, 4x cheaper
    sim = flat[query] @ flat.T
    qy, qx = yy[query], xx[query]
    rows = np.arange(len(query))
    for dy in range(-exclude, exclude + 1):  # blank each cell's neighbourhood, one offset at a time
        for dx in range(-exclude, exclude + 1):
            ok = (qy + dy >= 0) & (qy + dy < h) & (qx + dx >= 0) & (qx + dx < w)
            sim[rows[ok], query[ok] + dy * w + dx] = -1.0
    return float(sim.max(dim=1).values.median())


#: the target's affinity over the reference's self-affinity (:func:`self_affinity`): at or below TRANSFER_RATIO_LOW
#: the reference is taken not to transfer (confidence 0), at or above TRANSFER_RATIO_HIGH it transfers (1); linear in
#: between, warning below 0.5. Measured with the LiteMedSAM encoder on the shared sets (benchmarks/README.md):
#: same-set pairs 0.77-0.98; a reference from another modality (X-ray vs colour vs fluorescence) 0.46-0.73; colour
#: images among themselves (H&E vs endoscopy) overlap the same-set range and are not caught.
TRANSFER_RATIO_LOW = 0.70
TRANSFER_RATIO_HIGH = 0.80


def transfer_confidence(affinity: float, reference_self_affinity: float) -> float:
    """0-1: does a target look like the reference's kind of image? From how well the reference's patches explain the
    target's (:attr:`Correspondence.affinity`) relative to how well they explain each other (:func:`self_affinity`)."""
    ratio = affinity / max(reference_self_affinity, 1e-6)
    return float(np.clip((ratio - TRANSFER_RATIO_LOW) / (TRANSFER_RATIO_HIGH - TRANSFER_RATIO_LOW), 0.0, 1.0))


def label_reference_patches(
    reference: PatchFeatures, mask: np.ndarray, *, fg_purity: float = 1.0, bg_purity: float = 0.0, name: str = "mask"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Reference cells -> (fg, bg, fraction, warnings). GBMSeg: fg = all pixels in the mask, bg = none; mixed dropped.

    GUESS(SAT): when no cell lies wholly inside a thin or small mask we relax to cells at least half inside
    (then to any cell touching the mask) and say so, instead of GBMSeg's fixed fallback point.
    """
    frac = reference.cell_fraction(mask).ravel()
    warnings: list[str] = []
    fg = frac >= fg_purity - 1e-9
    for relaxed in (0.5, 1e-9):
        if fg.any():
            break
        fg = frac >= relaxed
        warnings.append(
            f"{name}: no reference patch lies wholly inside the mask; using patches at least "
            f"{relaxed:.0%} inside (the mask is thin or small for the {reference.stride[0]:.1f} px patches)"
        )
    bg = frac <= bg_purity + 1e-9
    return fg, bg, frac, warnings


def correspond(
    reference: PatchFeatures,
    reference_mask: np.ndarray,
    target: PatchFeatures,
    *,
    fg_purity: float = 1.0,
    bg_purity: float = 0.0,
    name: str = "target",
) -> Correspondence:
    fg, bg, frac, warnings = label_reference_patches(
        reference, reference_mask, fg_purity=fg_purity, bg_purity=bg_purity
    )
    ft, fr = target.flat(), reference.flat()
    if ft.shape[1] != fr.shape[1]:
        raise PromptsegError(f"{name}: feature sizes differ ({ft.shape[1]} vs {fr.shape[1]}); use one extractor")
    sim = ft @ fr.T  # (Nt, Nr); features are unit vectors, so this is the cosine similarity
    fg_t, bg_t = torch.from_numpy(fg), torch.from_numpy(bg)
    # GUESS(SAT): foreground/background similarity of a target patch = its best match among the reference's fg/bg
    # patches (max, consistent with the nearest-neighbour matching); used by the region boxes and the scheme score
    fg_sim = sim[:, fg_t].max(dim=1).values.numpy()
    bg_sim = sim[:, bg_t].max(dim=1).values.numpy() if bg.any() else np.full(len(ft), -1.0, np.float32)
    back = sim.argmax(dim=1).numpy()  # backward match of every target cell
    # forward match: nearest target cell of each reference fg (bg) cell; kept when its back-match is fg (bg)
    fwd_fg = np.unique(sim[:, fg_t].argmax(dim=0).numpy())
    positives = fwd_fg[fg[back[fwd_fg]]]
    if bg.any():
        fwd_bg = np.unique(sim[:, bg_t].argmax(dim=0).numpy())
        negatives = fwd_bg[bg[back[fwd_bg]]]
    else:
        negatives = np.zeros(0, np.int64)
    margin = fg_sim - bg_sim
    if len(positives) == 0:
        if margin.max() <= 0:
            raise PromptsegError(
                f"{name}: no part of the image resembles the reference foreground more than the reference "
                "background (every target patch matches background); is it the same kind of image and tissue?"
            )
        # GUESS(SAT): GBMSeg falls back to a fixed point; we take the target cell with the largest fg-bg margin
        positives = np.array([int(margin.argmax())])
        warnings.append(f"{name}: no cycle-consistent positive match; using the most reference-like patch")
    weights = torch.from_numpy(frac * (frac >= 0.5)).float() if (frac >= 0.5).any() else torch.from_numpy(frac).float()
    prototype = F.normalize((fr * weights[:, None]).sum(0), dim=0)
    return Correspondence(
        target=target,
        similarity=sim,
        ref_fg=fg,
        ref_bg=bg,
        fg_sim=fg_sim.astype(np.float32),
        bg_sim=bg_sim.astype(np.float32),
        positive_cells=positives,
        negative_cells=negatives,
        prototype=prototype,
        reference_area=float(frac.mean()),
        warnings=warnings,
    )


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


# ---------------------------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------------------------
def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def check_reference(image_hwc: np.ndarray, mask: np.ndarray, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] in (3, 4) and mask.shape[:2] == image_hwc.shape[:2]:
        mask = mask[..., 0]
    if mask.shape != image_hwc.shape[:2]:
        raise PromptsegError(
            f"{name}: mask shape {mask.shape} does not match the reference image's {image_hwc.shape[:2]} "
            "(rows, columns)"
        )
    binary = mask > 0
    if not binary.any():
        raise PromptsegError(f"{name}: the reference mask is empty; label the object to find (non-zero pixels)")
    return binary


def segment_like(
    reference: np.ndarray | Sequence[np.ndarray],
    reference_mask: np.ndarray | Sequence[np.ndarray],
    targets: np.ndarray | Sequence[np.ndarray],
    *,
    segmenter: PromptableSegmenter | None = None,
    extractor: PatchFeatureExtractor | None = None,
    strategy: Strategy = "sat",
    bank: Sequence[SatSetting] | None = None,
    use_points: bool | None = None,
    ensemble: Literal["vote", "union"] = "vote",
    keep_largest: bool = False,
    fg_purity: float = 1.0,
    score_temperature: float | None = None,
    channel_axis: int | None = None,
    channels: list[int] | None = None,
    normalize: Normalization = "auto",
    names: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
    diagnostics: bool = False,
) -> list[OneShotResult]:
    """Segment in every target what the reference mask marks in the reference image(s).

    ``reference``/``reference_mask``: one image + mask, or lists of them (ensemble SAT: each reference segments the
    target on its own; ``ensemble="vote"`` keeps pixels whose mean probability over references is > 0.5,
    ``"union"`` any reference's mask). ``targets``: one 2D image or a list of them.
    ``segmenter`` defaults to LiteMedSAM; ``extractor`` to the segmenter's own encoder
    (:class:`~..models.features.SegmenterFeatures`). ``use_points`` (default: the segmenter's ``points_reliable``)
    adds the scheme's points to its boxes. ``keep_largest``: GBMSeg's optional largest-component post-processing.
    ``diagnostics``: SAT keeps every candidate mask of its bank on each result (:class:`SchemeDiagnostics`).
    """
    if strategy not in STRATEGIES:
        raise PromptsegError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if ensemble not in ("vote", "union"):
        raise PromptsegError(f"ensemble must be 'vote' or 'union', got {ensemble!r}")
    if segmenter is None:
        from ..models import load_segmenter

        segmenter = load_segmenter()
    extractor = extractor or SegmenterFeatures(segmenter)
    # GUESS(box-only): LiteMedSAM was trained on boxes, so by default its schemes are decoded from boxes only
    use_points = segmenter.points_reliable if use_points is None else use_points
    bank = (
        list(bank)
        if bank is not None
        else default_bank(
            ("points", "region", "components") if not use_points else ("points", "region", "components", "none")
        )
    )
    if not bank:
        raise PromptsegError("the hyper-parameter bank is empty")
    refs, masks = _as_list(reference), _as_list(reference_mask)
    if len(refs) != len(masks):
        raise PromptsegError(f"{len(refs)} reference images but {len(masks)} reference masks")
    target_list = _as_list(targets)
    if not target_list:
        raise PromptsegError("no target image given")
    names = list(names) if names is not None else [f"target {i + 1}" for i in range(len(target_list))]
    report = progress or (lambda fraction, message: None)

    def check_cancel() -> None:
        if cancel is not None and cancel():
            raise CancelledError("cancelled")

    t0 = time.perf_counter()
    ref_feats, ref_masks, ref_self = [], [], []
    for i, (img, m) in enumerate(zip(refs, masks, strict=True)):
        rname = f"reference {i + 1}" if len(refs) > 1 else "reference"
        hwc = as_channels_last(img, channel_axis=channel_axis, channels=channels, name=rname)
        ref_masks.append(check_reference(hwc, m, f"{rname} mask"))
        report(0.0, f"features of {rname}")
        ref_feats.append(extractor.features(hwc, normalize=normalize, name=rname))
        ref_self.append(self_affinity(ref_feats[-1]))
        check_cancel()
    ref_time = time.perf_counter() - t0

    results = []
    for k, (target, tname) in enumerate(zip(target_list, names, strict=True)):
        report(k / len(target_list), f"{tname}: features")
        timings = {"reference_features_s": ref_time if k == 0 else 0.0}
        t0 = time.perf_counter()
        hwc = as_channels_last(target, channel_axis=channel_axis, channels=channels, name=tname)
        tfeat = extractor.features(hwc, normalize=normalize, name=tname)
        embedding = segmenter.embed(hwc, normalize=normalize, name=tname)  # shared with the features by default
        timings["features_s"] = time.perf_counter() - t0
        check_cancel()
        per_ref = []
        search = decode = 0.0
        for rf, rm, rs in zip(ref_feats, ref_masks, ref_self, strict=True):
            t0 = time.perf_counter()
            corr = correspond(rf, rm, tfeat, fg_purity=fg_purity, name=tname)
            pair = _Pair(corr, segmenter, embedding, use_points, rf)
            search += time.perf_counter() - t0
            t0 = time.perf_counter()
            if strategy == "sat":
                res = run_sat(pair, bank, score_temperature, diagnostics)
            elif strategy == "persam":
                res = run_persam(pair)
            else:
                res = run_matcher(pair)
            decode += time.perf_counter() - t0  # prompt building + decoding + scoring
            res.warnings.extend(corr.warnings)
            _check_transfer(res, corr.affinity, rs, tname)
            per_ref.append(res)
            check_cancel()
        timings["match_s"] = search
        timings["schemes_decode_score_s"] = decode
        result = per_ref[0] if len(per_ref) == 1 else _combine(per_ref, ensemble)
        if keep_largest and result.mask.any():
            lab, n = ndimage.label(result.mask)
            sizes = ndimage.sum_labels(result.mask, lab, index=np.arange(1, n + 1))
            result.mask = lab == (int(np.argmax(sizes)) + 1)
            result.labels = result.mask.astype(np.uint16)
        result.timings = timings
        if not result.mask.any():
            result.warnings.append(f"{tname}: the chosen prompts gave an empty mask")
        results.append(result)
    report(1.0, "done")
    return results


def _check_transfer(result: OneShotResult, affinity: float, reference_self_affinity: float, name: str) -> None:
    """Scale the score by the transfer confidence; below 0.5 say that the reference does not transfer."""
    result.transfer = transfer_confidence(affinity, reference_self_affinity)
    result.score = float(result.score) * result.transfer
    if result.transfer < 0.5:
        result.warnings.append(
            f"{name}: this reference does not transfer (its patches match this image's at {affinity:.2f} mean "
            f"similarity, its own at {reference_self_affinity:.2f}: another kind of image?); the mask is a guess"
        )


def _combine(per_ref: list[OneShotResult], ensemble: str) -> OneShotResult:
    # GUESS(SAT): the paper ensembles several references without public details; "vote" averages the decoder's
    # probabilities over references (a soft majority vote, no tie rule needed); "union" keeps any reference's mask
    probability = np.mean([r.probability for r in per_ref], axis=0).astype(np.float32)
    mask = probability > 0.5 if ensemble == "vote" else np.any([r.mask for r in per_ref], axis=0)
    return OneShotResult(
        mask=mask,
        probability=probability,
        labels=mask.astype(np.uint16),
        positives=np.concatenate([r.positives for r in per_ref]),
        negatives=np.concatenate([r.negatives for r in per_ref]),
        boxes=np.concatenate([r.boxes for r in per_ref]),
        score=float(np.mean([r.score for r in per_ref])),
        transfer=float(np.mean([r.transfer for r in per_ref])),
        strategy=f"{per_ref[0].strategy}-ensemble-{ensemble}",
        schemes=[s for r in per_ref for s in r.schemes],
        warnings=[w for r in per_ref for w in r.warnings],
        per_reference=per_ref,
    )
