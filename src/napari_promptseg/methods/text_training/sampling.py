"""What one training epoch sees: the order of the training samples, optionally balanced across texts, and optional
negative pairs (an image with a text that names none of its targets, and an empty mask).

Both options are for data whose texts name classes ("polyp", "nuclei", ...):

- ``balance``: every distinct text gets the same share of the epoch (minority texts are repeated, majority texts
  subsampled; the epoch keeps its length). With one text per image (captions) this is a plain shuffle.
- ``negatives``: ``negatives x (training samples)`` negative pairs per epoch, drawn again every epoch, so over a
  few epochs every image meets every other text. The candidates of an image are the texts of the training set that
  are never paired with it. This is what "a wrong name gives an empty mask" asks of the model; a text that does
  describe something in the image (e.g. "nuclei" on an H&E gland image) is still taught as empty, so give it only
  when the training texts exclude each other.

Every draw comes from a generator seeded by (seed, epoch): a resumed run sees the same epoch as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import torch

from ...errors import PromptsegError
from .data import Sample, content_identity

NO_NEGATIVES = (
    "negative pairs need texts that some image is not paired with; every image has every training text (negative "
    "pairs, and the widget's 'texts are class names', need two or more names)"
)


def check_negatives_possible(train: Sequence, triplets: Sequence, negatives: float) -> None:
    """Refuse negative pairs that no training image can have, from the rows alone: said after every image was
    encoded (minutes for a few hundred) before."""
    if int(round(negatives * len(train))) == 0:
        return
    texts = {t.text for t in train}
    paired = texts_per_image(triplets)
    if all(texts <= paired[image_key(t)] for t in train):
        raise PromptsegError(NO_NEGATIVES)


def check_class_names(triplets: Sequence) -> None:
    """Refuse class names written two ways ("polyp" and "Polyp"): balance and negatives count them as two classes,
    so each image would be paired with its own name's other spelling and an empty mask, though the sentence model
    (MiniLM reads lower case) sees one name: the model was taught both that the target is there and that it is not."""
    spellings: dict[str, dict[str, str]] = {}
    for t in triplets:
        spellings.setdefault(" ".join(t.text.split()).casefold(), {}).setdefault(t.text, t.where())
    for forms in spellings.values():
        if len(forms) > 1:
            named = " and ".join(f"{text!r} ({where})" for text, where in sorted(forms.items()))
            raise PromptsegError(
                f"as class names (balanced, with negative pairs) the texts {named} differ only in case or spacing: "
                "they would be two classes, and each image taught the other spelling as absent; write them alike"
            )


def image_key(triplet) -> object:
    """What identifies a triplet's image: its path, or an array (a layer, or one plane of a stack that several rows
    name through views of their own) by its content."""
    return content_identity(triplet.image)


def _image_id(sample: Sample) -> object:
    return image_key(sample.triplet)


def texts_per_image(triplets: Sequence) -> dict[object, set[str]]:
    """Every text each image is paired with, over all rows (train, val and test): a text paired with an image in
    one split must not be taught as absent from it in another (the split is drawn by row, not by image)."""
    out: dict[object, set[str]] = {}
    for t in triplets:
        out.setdefault(image_key(t), set()).add(t.text)
    return out


def balanced_order(texts: Sequence[str], rng: np.random.Generator) -> np.ndarray:
    """Indices of one epoch (as many as ``texts``) with every distinct text equally often (± 1), shuffled."""
    groups: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        groups.setdefault(text, []).append(i)
    members = list(groups.values())
    n, k = len(texts), len(members)
    quota = np.full(k, n // k)
    quota[rng.permutation(k)[: n % k]] += 1  # the remainder goes to texts drawn at random
    chosen = []
    for group, m in zip(members, quota, strict=True):
        repeats = -(-m // len(group))  # whole passes over the group, each in its own order
        drawn = np.concatenate([rng.permutation(group) for _ in range(repeats)])
        chosen.append(drawn[:m])
    order = np.concatenate(chosen)
    return order[rng.permutation(len(order))]


def negative_pairs(
    samples: Sequence[Sample],
    count: int,
    rng: np.random.Generator,
    texts: Sequence[str] = (),
    paired: Mapping[object, set[str]] | None = None,
) -> list[Sample]:
    """``count`` samples of (image, a text never paired with it, empty mask); images taken in turn. The texts are
    ``texts`` (default: those of ``samples``); ``paired``: every image's texts over all rows
    (:func:`texts_per_image`), else those of ``samples``."""
    texts = sorted(set(texts) or {s.text for s in samples})
    own: dict[object, set[str]] = {}
    for s in samples:
        own.setdefault(_image_id(s), set()).add(s.text)
    for key, known in (paired or {}).items():
        if key in own:
            own[key] |= known
    usable = [i for i, s in enumerate(samples) if len(own[_image_id(s)]) < len(texts)]
    if count and not usable:
        raise PromptsegError(NO_NEGATIVES)
    out: list[Sample] = []
    while len(out) < count:
        for i in rng.permutation(usable)[: count - len(out)]:
            s = samples[i]
            wrong = [t for t in texts if t not in own[_image_id(s)]]
            out.append(replace(s, text=wrong[rng.integers(len(wrong))], target=torch.zeros_like(s.target)))
    return out


def epoch_samples(
    samples: Sequence[Sample],
    epoch: int,
    *,
    seed: int,
    balance: bool = False,
    negatives: float = 0.0,
    paired: Mapping[object, set[str]] | None = None,
) -> list[Sample]:
    """The samples of epoch ``epoch`` in training order. Without options: a seeded permutation of ``samples``."""
    rng = np.random.default_rng([seed, epoch])
    order = balanced_order([s.text for s in samples], rng) if balance else rng.permutation(len(samples))
    chosen = [samples[i] for i in order]
    if negatives > 0:
        chosen += negative_pairs(samples, int(round(negatives * len(samples))), rng, paired=paired)
        chosen = [chosen[i] for i in rng.permutation(len(chosen))]
    return chosen


def validation_negatives(
    samples: Sequence[Sample],
    texts: Sequence[str],
    *,
    seed: int,
    negatives: float,
    paired: Mapping[object, set[str]] | None = None,
) -> list[Sample]:
    """Fixed negative pairs of the validation images with the training ``texts`` (the same every epoch), so the
    best epoch is also one whose wrong names come out empty."""
    if negatives <= 0 or not samples:
        return []
    rng = np.random.default_rng([seed, 0, 1])
    return negative_pairs(samples, int(round(negatives * len(samples))), rng, texts, paired)
