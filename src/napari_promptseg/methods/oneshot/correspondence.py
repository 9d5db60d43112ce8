"""Patch correspondence between a reference and a target (GBMSeg steps 1-3), and how well a reference
transfers to a target."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import NothingFoundError, PromptsegError
from ...models.features import PatchFeatures


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


class NoMatchError(NothingFoundError):
    """The target holds nothing that resembles the reference's object more than its background: this reference
    does not apply to this target (the inputs themselves are fine)."""


def label_reference_patches(
    reference: PatchFeatures,
    mask: np.ndarray,
    *,
    fg_purity: float = 1.0,
    bg_purity: float = 0.0,
    name: str = "reference mask",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Reference cells -> (fg, bg, fraction, warnings). GBMSeg: fg = all pixels in the mask, bg = none; mixed dropped.

    GUESS(SAT): when no cell lies wholly inside a thin or small mask we relax to cells at least half inside
    (then to any cell touching the mask) and say so once, with the cells used (both steps were said: a mask of
    single pixels warned twice, the second time of cells "at least 0% inside"), instead of GBMSeg's fixed fallback.
    """
    frac = reference.cell_fraction(mask).ravel()
    warnings: list[str] = []
    fg = frac >= fg_purity - 1e-9
    used = None
    for relaxed, said in ((0.5, "at least half inside it"), (1e-9, "with any part inside it")):
        if fg.any():
            break
        fg, used = frac >= relaxed, said
    if used is not None:
        warnings.append(
            f"{name}: no reference patch lies wholly inside the mask; using patches {used} (the mask is thin or "
            f"small for the {reference.stride[0]:.1f} px patches)"
        )
    bg = frac <= bg_purity + 1e-9
    if not bg.any():  # a mask over (nearly) the whole image: the object cannot be told from its surroundings
        warnings.append(
            f"{name}: no reference patch lies wholly outside the mask, so nothing is learned as background and the "
            "result is a guess; leave the background around the object unlabelled"
        )
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
            raise NoMatchError(
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
