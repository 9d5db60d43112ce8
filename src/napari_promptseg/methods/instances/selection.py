"""Which candidates suit a reference, measured on the reference itself.

The classifier's watershed candidates win on nuclei (DSB fluorescence F1 0.70 against 0.39 for correspondence
candidates), the patch-correspondence candidates on glands (GlaS 0.70 against 0.31; benchmarks/README.md). One
setting for all data, decided per reference by measurement, not per dataset: the reference is cut in two halves;
exemplars learned on one half segment the other, both ways, with each kind of candidate; the one with the higher
mean object F1 against the reference's own labels is used (ties keep the watershed). A reference annotated as
touching glands merged into one mask then teaches "merged", one with separated nuclei teaches "separate".
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ...models.protocols import PromptableSegmenter
from .exemplars import ExemplarModel

#: candidate sources compared on the reference, the default first
CANDIDATE_CHOICES: tuple[str, ...] = ("watershed", "correspondence")

#: the reference must hold at least this many labelled objects for the comparison to mean anything
MIN_OBJECTS = 3


def choose_candidates(
    segmenter: PromptableSegmenter, model: ExemplarModel, image: np.ndarray, labels: np.ndarray
) -> tuple[str, dict[str, float]]:
    """(chosen candidate source, object F1 of each source) for the exemplars ``model`` learned from ``image``
    (H, W, C) with instance ``labels``, measured by segmenting the reference itself (its embeddings are cached)."""
    from .pipeline import match_instances, segment_with_exemplars

    if len(np.unique(labels[labels > 0])) < MIN_OBJECTS:
        return CANDIDATE_CHOICES[0], {}
    scores = {}
    for choice in CANDIDATE_CHOICES:
        found = segment_with_exemplars(
            segmenter, replace(model, candidates=choice), image, object_size=model.object_size, name="reference"
        )
        scores[choice] = float(match_instances(found.labels, labels)["f1"])
    best = max(CANDIDATE_CHOICES, key=lambda c: (scores[c], c == CANDIDATE_CHOICES[0]))
    return best, scores
