"""Which candidates suit a reference, measured on the reference itself.

The classifier's watershed candidates win on nuclei (DSB fluorescence, 6 targets: F1 0.57 against 0.32 for
correspondence candidates), the patch-correspondence candidates on glands (GlaS, 8 targets: 0.70 against 0.31;
benchmarks/README.md). One setting for all data, decided per reference by measurement rather than per dataset: the
exemplars segment their own reference with each kind of candidate, and the one with the higher object F1 against
the reference's labels is used (ties keep the watershed). A reference annotated with touching glands merged into
one mask teaches "merged"; one with separated nuclei teaches "separate". The classifier has seen the reference, so
both scores are optimistic; what they compare is how each source delineates objects. (Learning on one half of the
reference and measuring on the other was tried: with ~10 glands a half it could not tell the two apart, 0.45 vs
0.45, and cost 80 s.)

The same run gives a confidence bound: the decoder's confidence for the least confident whole reference object the
chosen source found. A target object decoded with less confidence that is also smaller than the smallest whole
exemplar is unlike anything the reference taught, and is not kept (GlaS, every target: object F1 0.675 -> 0.722;
benchmarks/README.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from ...models.protocols import PromptableSegmenter
from ...tiling import choose_scale
from .exemplars import ExemplarModel, border_ids

#: candidate sources compared on the reference, the default first
CANDIDATE_CHOICES: tuple[str, ...] = ("watershed", "correspondence")

#: the reference must hold at least this many labelled objects for the comparison to mean anything
MIN_OBJECTS = 3

#: a large reference is compared on a window of this many tiles a side around its labels (cost bound)
CHOICE_WINDOW_TILES = 2


def _labelled_window(labels: np.ndarray, side: int) -> tuple[slice, slice]:
    """A window of at most ``side`` pixels a side around the centre of the labelled pixels."""
    rows, cols = np.nonzero(labels)
    out = []
    for centre, length in ((int(rows.mean()), labels.shape[0]), (int(cols.mean()), labels.shape[1])):
        start = int(np.clip(centre - side // 2, 0, max(0, length - side)))
        out.append(slice(start, start + side))
    return out[0], out[1]


def choose_candidates(
    segmenter: PromptableSegmenter,
    model: ExemplarModel,
    image: np.ndarray,
    labels: np.ndarray,
    *,
    progress: Callable[[float, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> tuple[str, dict[str, float], float]:
    """(chosen candidate source, object F1 of each source, decoder confidence of the least confident whole
    reference object the chosen source found) for the exemplars ``model`` learned from ``image``
    (H, W, C) with instance ``labels``, measured by segmenting the reference itself (its embeddings are cached;
    a large reference only in a window of 2 x 2 tiles around its labels). ``progress`` and ``cancel`` as
    :func:`.pipeline.segment_with_exemplars` takes them, over both segmentations."""
    from ..metrics import match_instances
    from .pipeline import segment_with_exemplars

    if len(np.unique(labels[labels > 0])) < MIN_OBJECTS:
        return CANDIDATE_CHOICES[0], {}, 0.0
    crop = _labelled_window(
        labels, CHOICE_WINDOW_TILES * choose_scale(image.shape, segmenter.input_size, model.object_size).tile
    )
    # scored against every labelled object, slivers cut by the border included, so each source may keep objects
    # as small as those: the comparison is how the sources delineate objects, not the size filter of targets
    smallest = float(np.unique(labels[labels > 0], return_counts=True)[1].min())
    image, labels = image[crop], labels[crop]
    scores, confidence = {}, {}
    report = progress or (lambda fraction, message: None)
    for k, choice in enumerate(CANDIDATE_CHOICES):

        def sub(fraction: float, message: str, k: int = k, choice: str = choice) -> None:
            report((k + fraction) / len(CANDIDATE_CHOICES), f"comparing {choice} candidates: {message}")

        found = segment_with_exemplars(
            segmenter,
            replace(model, candidates=choice, min_area=smallest),
            image,
            object_size=model.object_size,
            name="reference",
            progress=sub,
            cancel=cancel,
        )
        scores[choice] = float(match_instances(found.labels, labels)["f1"])
        confidence[choice] = _least_confident_match(found.labels, found.scores, labels)
    best = max(CANDIDATE_CHOICES, key=lambda c: (scores[c], c == CANDIDATE_CHOICES[0]))
    return best, scores, confidence[best]


def _least_confident_match(found: np.ndarray, confidence: np.ndarray, labels: np.ndarray) -> float:
    """The lowest decoder confidence among found objects (ids 1..N, ``confidence[id - 1]``) that match a whole
    labelled object (IoU > 0.5; objects cut by the border are decoded from a part, so their confidence says nothing
    about whole ones); 0 if none. Labels of any integer dtype and ids."""
    from ..metrics import matched_pairs

    whole = np.where(np.isin(labels, border_ids(labels)), 0, labels)
    found_ids = matched_pairs(found, whole)[0]
    return float(confidence[found_ids - 1].min()) if len(found_ids) else 0.0
