"""argparse types that refuse nonsense values with the option's name (argparse adds it) and the allowed range."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (worker processes, threads)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def time_point_or_all(text: str) -> int | str:
    """argparse type (embed --time): a time point's index (0 or more), or "all"."""
    if text == "all":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a time point (0, 1, ...) or 'all', not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"a time point counts from 0, not {value}")
    return value


def _float(text: str, expected: str) -> float:
    """``text`` as a number, or argparse's error saying what was ``expected``."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (a learning rate, a size in GB)."""
    value = _float(text, "a number")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0 (a rate where 0 freezes)."""
    value = _float(text, "a number")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number from 0 up, got {text}")
    return value


def fraction(text: str) -> float:
    """argparse type: a number from 0 to 1 (an overlap, a threshold on IoU)."""
    value = _float(text, "a number from 0 to 1")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie from 0 to 1, got {value:g}")
    return value


def similarity(text: str) -> float:
    """argparse type: a cosine similarity, from -1 to 1 (the library route's --min-similarity)."""
    value = _float(text, "a number from -1 to 1")
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a similarity lies from -1 to 1, got {text}")
    return value


def weights_path(text: str) -> str:
    """argparse type: weights a model loads (--weights, --text-weights), named as the widgets' weights fields name
    them (:func:`~napari_promptseg.models.registry.named_weights`: a local path absolutely, a hub id as typed)."""
    from ..models.registry import named_weights

    return named_weights(text)


def labels_name(text: str) -> str:
    """argparse type: an OME-Zarr labels image's name, one plain segment (checked before any work)."""
    from ..errors import PromptsegError
    from ..io.ome_zarr_labels import check_labels_name

    try:
        return check_labels_name(text)
    except PromptsegError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
