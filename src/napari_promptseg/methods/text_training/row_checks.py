"""What a training run checks and says of its rows before any model loads: every row's image and mask read once, the
bad rows named together, and the channel counts the images are fed with (:func:`check_rows`); the split it trains and
validates on (:func:`split_record`, :func:`split_said`). Shared by the fusion decoder and CLIPSeg's fine-tune."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ...callbacks import ProgressCallback
from ...errors import CancelledError, PromptsegError
from .data import ArrayTriplet, Triplet, content_identity


def check_rows(
    triplets: Sequence[Triplet | ArrayTriplet],
    *,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
) -> list[int]:
    """Read every row's image and mask once, before any model loads, and refuse the bad ones together (a mask of
    another size, a file that is no image, a stack), each named by its row. Why: a bad row was found when its image
    came to be encoded, after the models had loaded and every row before it was encoded, and one at a time. The
    pixels are dropped after each row (they are read again to be encoded; a cached image only then). Returns the
    channel counts the images are fed with (1: gray, 2, 3: colour), recorded in the model so that inference refuses
    another kind of image (:func:`...models.text_segmenter.refuse_other_channels`)."""
    problems: list[str] = []
    counts: set[int] = set()
    for k, t in enumerate(triplets):
        if cancel is not None and cancel():
            raise CancelledError("cancelled")
        try:
            image, _ = t.load()
            counts.add(int(image.shape[-1]))
        except PromptsegError as exc:
            problems.append(str(exc))
        if progress is not None:
            progress(0.0, f"reading the rows {k + 1}/{len(triplets)}")
    if problems:
        more = f" (and {len(problems) - 3} more rows)" if len(problems) > 3 else ""
        raise PromptsegError(f"{len(problems)} row(s) cannot be trained on: {'; '.join(problems[:3])}{more}")
    return sorted(counts)


def split_record(
    triplets: Sequence[Triplet | ArrayTriplet],
    train: Sequence[Triplet | ArrayTriplet],
    val: Sequence[Triplet | ArrayTriplet],
    *,
    val_fraction: float,
    seed: int,
) -> dict:
    """What :func:`split_triplets` made of ``triplets``: the rows and images that train and validate, the test rows
    left out, and where the split came from. Why: it was said nowhere, and a val Dice of the one image a random
    split held out read as the model's worth."""

    def images(rows: Sequence[Triplet | ArrayTriplet]) -> int:
        return len({content_identity(t.image) for t in rows})

    if any(t.split == "val" for t in triplets):
        source = "the split column"
    elif not val:
        source = "none (validation fraction 0)"
    else:
        source = f"a random {val_fraction:.0%} of the images, seed {seed}"
    return {
        "train_rows": len(train),
        "train_images": images(train),
        "val_rows": len(val),
        "val_images": images(val),
        "test_rows": sum(t.split == "test" for t in triplets),
        "source": source,
    }


def split_said(record: dict) -> str:
    """:func:`split_record` in a line: "data: 5 training rows of 5 images, 1 validation row of 1 image (...)"."""

    def rows(n: int, what: str) -> str:
        return f"{n} {what} row{'s' if n != 1 else ''}"

    def images(n: int) -> str:
        return f"{n} image{'s' if n != 1 else ''}"

    said = f"data: {rows(record['train_rows'], 'training')} of {images(record['train_images'])}, "
    if record["val_rows"]:
        said += f"{rows(record['val_rows'], 'validation')} of {images(record['val_images'])} ({record['source']})"
    else:
        said += "no validation (validation fraction 0: the last epoch is kept)"
    if record["test_rows"]:
        said += f"; {rows(record['test_rows'], 'test')} left out"
    return said
