"""Corresponding regions of two images (Tell2Reg's "region pairs").

A *region source* is anything that returns masks for one image (:class:`RegionSource`): text grounding (another
module), one-shot references, or the offline default here, :class:`AutomaticRegions` — a grid of box prompts at several
scales decoded by the promptable segmenter, filtered by score, area and overlap. Regions of the two images are
paired by prompt (regions of different prompts never pair) and, within a prompt, by the cosine similarity of their
prototypes (the mean encoder embedding inside the mask), greedily one-to-one above a threshold as in Tell2Reg.
Pairs are then filtered by relative size and geometric consistency (RANSAC affine on the pair centroids).

Masks are kept at a reduced resolution covering the whole image (any resolution works: all geometry is in
normalised image coordinates), which is all the transform optimisation needs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import PromptsegError
from ..models.protocols import Embedding, PromptableSegmenter
from .defaults import PAIR_SIMILARITY
from .warp import fit_affine_lstsq, norm_grid

#: longest side of the masks kept for registration (LiteMedSAM decodes at 256 px)
MASK_SIDE = 256
#: prompt name of the region decoded from the whole-image box (foreground / tissue)
GLOBAL_PROMPT = "global"


@dataclass
class Region:
    """One region of one image. ``mask`` covers the whole image at any resolution (True inside)."""

    mask: np.ndarray
    score: float = 1.0
    #: the prompt that produced it; only regions of the same prompt can pair (None: automatic, pair by similarity)
    prompt: str | None = None
    prototype: np.ndarray | None = None

    @property
    def area_fraction(self) -> float:
        return float(np.mean(self.mask))

    def centroid_norm(self) -> np.ndarray:
        """Centroid in normalised (x, y) image coordinates."""
        grid = norm_grid(self.mask.shape, torch.float64).numpy()
        weights = self.mask.astype(np.float64)
        return (grid * weights[..., None]).sum((0, 1)) / max(weights.sum(), 1e-9)


@dataclass
class RegionPair:
    fixed: Region
    moving: Region
    similarity: float

    @property
    def prompt(self) -> str | None:
        return self.fixed.prompt


@dataclass
class PairingReport:
    """Counts at each step, for the report and the widget."""

    fixed_regions: int = 0
    moving_regions: int = 0
    matched: int = 0
    dropped_size: int = 0
    dropped_inconsistent: int = 0
    #: second stage: fixed boxes transferred to the moving image through the first estimate
    transferred: int = 0
    transferred_kept: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class PairingOptions:
    """How the regions of the two images become pairs; :class:`~.registration.RegistrationOptions` extends it."""

    #: Tell2Reg pairs prototypes with cosine similarity > 0.8
    similarity_threshold: float = PAIR_SIMILARITY
    #: pairs whose areas (fractions of their images) differ by more than this factor are dropped
    max_area_ratio: float = 2.0
    #: RANSAC tolerance on pair centroids, normalised units
    consistency_tolerance: float = 0.15
    #: prompt the moving image with the fixed regions' boxes mapped through the first (affine) estimate
    transfer_prompts: bool = True
    #: local pairs whose centroids disagree with the global-region affine by more than this fraction of the
    #: moving-image diagonal are dropped
    local_tolerance: float = 0.04


@runtime_checkable
class RegionSource(Protocol):
    """Image -> regions. Called once per image; the same source on both images gives comparable regions."""

    def __call__(self, image: np.ndarray) -> Sequence[Region]: ...


# -- automatic regions --------------------------------------------------------------------------------------------
@dataclass
class AutomaticRegions:
    """SAM-style "everything" proposals for box-prompted models: an n x n grid of boxes for each n in ``grids``.

    The n = 1 box (the whole image) gives the global region (tissue/foreground); it is exempt from the overlap
    suppression, which would otherwise drop every local region inside it.
    """

    segmenter: PromptableSegmenter
    grids: tuple[int, ...] = (1, 2, 3)
    #: boxes of the n x n grid are enlarged by this fraction of a cell so that objects on cell borders are caught
    box_margin: float = 0.25
    multimask: bool = False
    min_score: float = 0.5
    #: area bounds as fractions of the image (Tell2Reg: 2,000 - 500,000 px of ~1000^2)
    min_area: float = 0.002
    max_area: float = 0.9
    #: of two masks with intersection >= overlap x the smaller area, the smaller is dropped (Tell2Reg: 0.8)
    overlap: float = 0.8
    max_regions: int = 40
    #: local masks cut by their prompt box on more than this fraction of the box perimeter are dropped: their extent
    #: is the box's, not the anatomy's, so they would not correspond across images
    max_box_contact: float = 0.25
    normalize: str = "auto"

    def boxes(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        h, w = shape
        boxes, level = [], []
        for n in self.grids:
            ch, cw = h / n, w / n
            for i in range(n):
                for j in range(n):
                    m = self.box_margin if n > 1 else 0.0
                    x0, y0 = max(0.0, (j - m) * cw), max(0.0, (i - m) * ch)
                    x1, y1 = min(w - 1.0, (j + 1 + m) * cw), min(h - 1.0, (i + 1 + m) * ch)
                    boxes.append((x0, y0, x1, y1))
                    level.append(n)
        return np.asarray(boxes, np.float32), np.asarray(level)

    def __call__(self, image: np.ndarray, embedding: Embedding | None = None) -> list[Region]:
        emb = embedding if embedding is not None else self.segmenter.embed(image, normalize=self.normalize)
        shape = emb.transform.original_shape
        boxes, level = self.boxes(shape)
        pred = self.segmenter.predict(emb, boxes=boxes, multimask=self.multimask)
        logits = _logits_at_mask_side(pred.low_res_logits, emb)  # (N, K, h, w)
        masks = (logits > 0).numpy()
        scores = np.asarray(pred.scores).reshape(masks.shape[:2])
        candidates: list[tuple[np.ndarray, float, bool]] = []
        for b in range(masks.shape[0]):
            for k in range(masks.shape[1]):
                mask, score = masks[b, k], float(scores[b, k])
                frac = mask.mean()
                if score < self.min_score or not (self.min_area <= frac <= self.max_area):
                    continue
                is_global = bool(level[b] == 1)
                if (
                    not is_global
                    and box_contact(mask, boxes[b] / np.tile([shape[1], shape[0]], 2) * 2) > self.max_box_contact
                ):
                    continue
                candidates.append((mask, score, is_global))
        kept = suppress_overlaps(candidates, self.overlap)[: self.max_regions]
        # the whole-image box is the same prompt on both images: its regions pair directly
        return [Region(mask=m, score=s, prompt=GLOBAL_PROMPT if g else None) for m, s, g in kept]


def box_contact(mask: np.ndarray, box_fraction2: np.ndarray) -> float:
    """Fraction of a box's perimeter (edges inside the image) along which the mask reaches the box edge.

    The box is given as (x0, y0, x1, y1) / (width, height) * 2, independent of the mask resolution."""
    h, w = mask.shape
    x0, y0, x1, y1 = np.asarray(box_fraction2, float) / 2 * [w, h, w, h]
    c0, c1 = int(np.clip(np.floor(x0), 0, w - 1)), int(np.clip(np.ceil(x1) - 1, 0, w - 1))
    r0, r1 = int(np.clip(np.floor(y0), 0, h - 1)), int(np.clip(np.ceil(y1) - 1, 0, h - 1))
    # a band inside each edge: LiteMedSAM's masks of a region cut by the box stop 3-6 % of the box size short of
    # its edge; edges lying on the image border are not cuts (the image ends there for both images)
    bx, by = max(2, int(0.08 * (c1 - c0 + 1))), max(2, int(0.08 * (r1 - r0 + 1)))
    edges = []
    if c0 > 0:
        edges.append(mask[r0 : r1 + 1, c0 : c0 + bx].any(axis=1))
    if c1 < w - 1:
        edges.append(mask[r0 : r1 + 1, max(c1 - bx + 1, 0) : c1 + 1].any(axis=1))
    if r0 > 0:
        edges.append(mask[r0 : r0 + by, c0 : c1 + 1].any(axis=0))
    if r1 < h - 1:
        edges.append(mask[max(r1 - by + 1, 0) : r1 + 1, c0 : c1 + 1].any(axis=0))
    inner_perimeter = sum(len(e) for e in edges)
    return float(sum(e.sum() for e in edges) / inner_perimeter) if inner_perimeter else 0.0


def suppress_overlaps(
    candidates: list[tuple[np.ndarray, float, bool]], overlap: float
) -> list[tuple[np.ndarray, float, bool]]:
    """Keep the larger of two masks whose intersection covers >= ``overlap`` of the smaller; global ones always stay.

    Among near-equal candidates the higher score wins because candidates are visited by (area, score), larger first.
    """
    order = sorted(range(len(candidates)), key=lambda i: (-candidates[i][0].sum(), -candidates[i][1]))
    kept: list[tuple[np.ndarray, float, bool]] = []
    globals_ = [candidates[i] for i in order if candidates[i][2]]
    # of the global candidates keep one (the best-scored): the foreground/tissue region
    if globals_:
        kept.append(max(globals_, key=lambda c: c[1]))
    for i in order:
        mask, score, is_global = candidates[i]
        if is_global:
            continue
        area = mask.sum()
        redundant = False
        for other, _, other_global in kept:
            if other_global:
                continue
            inter = np.logical_and(mask, other).sum()
            if inter >= overlap * min(area, other.sum()):
                redundant = True
                break
        if not redundant:
            kept.append((mask, score, False))
    return kept


def transfer_regions(
    segmenter: PromptableSegmenter,
    fixed_regions: Sequence[Region],
    moving_embedding: Embedding,
    fixed_to_moving: Callable[[np.ndarray], np.ndarray],
    *,
    margin: float = 0.1,
    max_box_contact: float = 0.25,
) -> list[Region]:
    """The same box prompts on the moving image: each fixed region's bounding box (enlarged by ``margin``), mapped
    into the moving frame by the current estimate, decoded there. One moving region per fixed region (maybe empty).

    ``fixed_to_moving`` maps (N, 2) positions given as fractions (x / width, y / height, 0..1 edge to edge) of the
    fixed image to moving-image pixels; fractions make it independent of the mask resolution.
    """
    h, w = moving_embedding.transform.original_shape
    boxes = []
    for region in fixed_regions:
        fh, fw = region.mask.shape
        ys, xs = np.nonzero(region.mask)
        x0, x1 = (xs.min() - margin * (np.ptp(xs) + 1)) / fw, (xs.max() + 1 + margin * (np.ptp(xs) + 1)) / fw
        y0, y1 = (ys.min() - margin * (np.ptp(ys) + 1)) / fh, (ys.max() + 1 + margin * (np.ptp(ys) + 1)) / fh
        corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]])
        mapped = fixed_to_moving(corners)
        bx0, by0 = np.clip(mapped.min(0), 0, [w - 1, h - 1])
        bx1, by1 = np.clip(mapped.max(0), 0, [w - 1, h - 1])
        boxes.append((bx0, by0, max(bx1, bx0 + 1), max(by1, by0 + 1)))
    pred = segmenter.predict(moving_embedding, boxes=np.asarray(boxes, np.float32), multimask=False)
    masks = (_logits_at_mask_side(pred.low_res_logits, moving_embedding) > 0).numpy()[:, 0]
    scores = np.asarray(pred.scores).reshape(len(boxes), -1)[:, 0]
    out = []
    for i, (mask, score, box) in enumerate(zip(masks, scores, boxes, strict=True)):
        cut = box_contact(mask, np.asarray(box) / [w, h, w, h] * 2) > max_box_contact
        out.append(Region(mask=mask & (not cut), score=float(score), prompt=f"box {i}"))
    return out


def _logits_at_mask_side(low_res_logits: torch.Tensor, emb: Embedding) -> torch.Tensor:
    """Decoder logits in the padded input frame -> logits over the image only, longest side <= MASK_SIDE."""
    t = emb.transform
    x = low_res_logits.float()
    if x.shape[-1] != t.input_size:
        x = F.interpolate(x, size=(t.input_size, t.input_size), mode="bilinear", align_corners=False)
    nh, nw = t.resized_shape
    x = x[..., :nh, :nw]
    if max(nh, nw) > MASK_SIDE:
        s = MASK_SIDE / max(nh, nw)
        x = F.interpolate(x, size=(max(1, round(nh * s)), max(1, round(nw * s))), mode="bilinear", align_corners=False)
    return x


# -- prototypes and pairing ---------------------------------------------------------------------------------------
def region_prototypes(embedding: Embedding, masks: Sequence[np.ndarray]) -> np.ndarray:
    """(N, C) mean encoder feature inside each mask (Tell2Reg's region prototype), L2-normalised."""
    feats = embedding.features.float()  # (1, C, g, g) on the padded input
    g = feats.shape[-1]
    t = embedding.transform
    nh, nw = t.resized_shape
    protos = []
    for mask in masks:
        m = torch.from_numpy(np.asarray(mask, np.float32))[None, None]
        m = F.interpolate(m, size=(nh, nw), mode="bilinear", align_corners=False)
        padded = m.new_zeros((1, 1, t.input_size, t.input_size))
        padded[..., :nh, :nw] = m
        weights = F.adaptive_avg_pool2d(padded, g)[0, 0]  # fraction of each feature cell inside the mask
        total = weights.sum()
        if total <= 0:
            protos.append(torch.zeros(feats.shape[1]))
            continue
        protos.append((feats[0] * weights).sum((1, 2)) / total)
    out = torch.stack(protos) if protos else torch.zeros((0, feats.shape[1]))
    return F.normalize(out, dim=1).numpy()


def greedy_match(similarity: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """Tell2Reg pairing: take the largest entry, pair its row and column, remove both; stop below threshold."""
    sim = np.array(similarity, dtype=np.float64, copy=True)
    pairs = []
    while sim.size and np.isfinite(sim).any():
        i, j = np.unravel_index(np.nanargmax(np.where(np.isfinite(sim), sim, -np.inf)), sim.shape)
        value = sim[i, j]
        if not value >= threshold:
            break
        pairs.append((int(i), int(j), float(value)))
        sim[i, :] = -np.inf
        sim[:, j] = -np.inf
    return pairs


def pair_regions(
    fixed_regions: Sequence[Region],
    moving_regions: Sequence[Region],
    *,
    options: PairingOptions | None = None,
    report: PairingReport | None = None,
) -> list[RegionPair]:
    """Pair regions prompt by prompt, then drop pairs of very different size and geometric outliers.

    Prototypes must already be set (see :func:`attach_prototypes`). A prompt with exactly one region on each side
    pairs directly (the prompt is the correspondence); otherwise by greedy cosine matching.
    """
    opts = options or PairingOptions()
    report = report if report is not None else PairingReport()
    report.fixed_regions, report.moving_regions = len(fixed_regions), len(moving_regions)
    prompts = sorted({r.prompt or "" for r in fixed_regions} & {r.prompt or "" for r in moving_regions})
    pairs: list[RegionPair] = []
    for prompt in prompts:
        fi = [i for i, r in enumerate(fixed_regions) if (r.prompt or "") == prompt]
        mi = [i for i, r in enumerate(moving_regions) if (r.prompt or "") == prompt]
        pf = np.stack([fixed_regions[i].prototype for i in fi])
        pm = np.stack([moving_regions[i].prototype for i in mi])
        sim = pf @ pm.T
        if prompt and len(fi) == 1 and len(mi) == 1:  # the same prompt is the correspondence
            matches = [(0, 0, float(sim[0, 0]))]
        else:
            matches = greedy_match(sim, opts.similarity_threshold)
        pairs += [RegionPair(fixed_regions[fi[a]], moving_regions[mi[b]], s) for a, b, s in matches]
    report.matched = len(pairs)
    sized = [p for p in pairs if similar_size(p, opts.max_area_ratio)]
    report.dropped_size = len(pairs) - len(sized)
    consistent = consistent_pairs(sized, opts.consistency_tolerance)
    report.dropped_inconsistent = len(sized) - len(consistent)
    return consistent


def similar_size(pair: RegionPair, max_ratio: float) -> bool:
    """The two regions cover similar fractions of their images (within a factor ``max_ratio``)."""
    return 1 / max_ratio <= pair.moving.area_fraction / max(pair.fixed.area_fraction, 1e-9) <= max_ratio


def consistent_pairs(pairs: list[RegionPair], tolerance: float, iterations: int = 200, seed: int = 0):
    """RANSAC affine on pair centroids (normalised units); keep the inliers. Fewer than 4 pairs: kept as they are."""
    if len(pairs) < 4:
        return pairs
    src = np.stack([p.fixed.centroid_norm() for p in pairs])
    dst = np.stack([p.moving.centroid_norm() for p in pairs])
    rng = np.random.default_rng(seed)
    best = np.zeros(len(pairs), bool)
    for _ in range(iterations):
        pick = rng.choice(len(pairs), 3, replace=False)
        a = fit_affine_lstsq(src[pick], dst[pick])
        if abs(np.linalg.det(a[:2, :2])) < 0.2:  # degenerate or absurd scale
            continue
        err = np.linalg.norm(src @ a[:2, :2].T + a[:2, 2] - dst, axis=1)
        inliers = err < tolerance
        if inliers.sum() > best.sum():
            best = inliers
    if best.sum() < 3:
        return pairs
    return [p for p, keep in zip(pairs, best, strict=True) if keep]


def attach_prototypes(regions: Sequence[Region], embedding: Embedding) -> None:
    """Set each region's prototype from the image embedding (in place)."""
    protos = region_prototypes(embedding, [r.mask for r in regions])
    for region, proto in zip(regions, protos, strict=True):
        region.prototype = proto


def as_region_list(result: object, name: str) -> list[Region]:
    """Accept a region source's output: Regions, or bare masks (one region each, prompt = its index)."""
    if isinstance(result, np.ndarray) and result.ndim == 2:
        result = [result]
    out = []
    for i, item in enumerate(result):  # type: ignore[union-attr]
        region = item if isinstance(item, Region) else Region(mask=np.asarray(item), prompt=f"region {i}")
        mask = np.asarray(region.mask)
        if mask.ndim != 2:
            raise PromptsegError(f"{name}: region {i} mask must be 2D, got shape {mask.shape}")
        region.mask = mask.astype(bool)
        if region.mask.any():
            out.append(region)
    return out


RegionCallable = Callable[[np.ndarray], Sequence[Region]]
