"""Language-guided segmenters trained on the user's image-mask-text triplets (seeds: medvlsm, TMCA, RecLMIS).

- :func:`train_text_segmenter`: the offline model (frozen LiteMedSAM + MiniLM, trained fusion decoder), with the
  seeds' objectives as ``loss="dicece" | "tmca" | "reclmis"`` (:mod:`.losses`);
- :func:`refit_presence_head`: the presence head of a trained model refitted alone (:mod:`.presence`);
- :func:`finetune_clipseg`: medvlsm's own route, CLIPSeg fine-tuned with its recipe, when CLIPSeg weights exist;
- :func:`train_text_model`: either, as `promptseg train-text` and the Train text model widget start them (:mod:`.run`);
- :func:`evaluate_text_segmenter`: Dice of a trained model on triplets at their original resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .clipseg import finetune_clipseg
from .data import ArrayTriplet, Triplet, as_triplets, read_triplets, split_triplets
from .losses import LOSSES
from .presence import PresenceFit, refit_presence_head
from .run import train_text_model
from .trainer import TrainingConfig, TrainingResult, train_text_segmenter

__all__ = [
    "LOSSES",
    "ArrayTriplet",
    "PresenceFit",
    "TrainingConfig",
    "TrainingResult",
    "Triplet",
    "dice",
    "evaluate_text_segmenter",
    "finetune_clipseg",
    "read_triplets",
    "refit_presence_head",
    "split_triplets",
    "train_text_model",
    "train_text_segmenter",
]


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two masks (non-zero = the mask: a label image, a 0/255 mask); 1.0 when both are empty."""
    pred, truth = np.asarray(pred) != 0, np.asarray(truth) != 0  # bitwise & of ids or 255s counted no overlap
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & truth).sum()) / total


def evaluate_text_segmenter(
    model,
    triplets: Sequence[Triplet | ArrayTriplet | tuple],
    *,
    prompts: Sequence[str] | None = None,
    threshold: float = 0.5,
) -> list[float]:
    """Dice per triplet (or ``(image, mask, text)`` tuple, as training takes them) at the original resolution
    (probability > ``threshold``); ``prompts`` replaces the texts."""
    scores = []
    for k, t in enumerate(as_triplets(triplets)):
        image, mask = t.load()
        prompt = t.text if prompts is None else prompts[k]
        prob = model.heatmaps(image, [prompt])[0]
        scores.append(dice(prob > threshold, mask))
    return scores
