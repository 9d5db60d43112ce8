"""One-shot settings and results: SAT's hyper-parameter bank, prompt schemes, diagnostics, results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch

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
    features: dict[str, np.ndarray]  # (S,) each: see :func:`~.strategies.candidate_features`
    chosen: int
    affinity: float  # see :attr:`Correspondence.affinity <.correspondence.Correspondence.affinity>`
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
    score: float  # the chosen scheme's score (see :func:`~.decoding.score_mask`)
    strategy: str
    schemes: list[dict] = field(default_factory=list)  # every scheme tried, with its score (SAT's bank)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    per_reference: list[OneShotResult] = field(default_factory=list)
    diagnostics: SchemeDiagnostics | None = None
    #: how well the reference transfers to this target, 0-1 (see :func:`~.correspondence.transfer_confidence`);
    #: ``score`` includes it
    transfer: float = 1.0
    #: how many times coarser than ``labels`` the probability map is: a pyramid target is read at a level, and its
    #: labels come back at full resolution while the probability stays the level's
    probability_factor: float = 1.0

    @property
    def probability_placement(self) -> dict:
        """``scale`` and ``translate`` that lay the probability map over the labels' pixels in napari:
        ``viewer.add_image(result.probability, **result.probability_placement)``."""
        from ...tiling import level_placement

        return level_placement(self.probability_factor)
