"""Model roles, backends and the registry. No Qt, no napari."""

from __future__ import annotations

import os
import threading

from .device import resolve_device
from .protocols import Embedding, Prediction, PromptableSegmenter
from .registry import DEFAULT_SEGMENTER, MODELS, ModelCard, Progress, get_card, resolve_weights

__all__ = [
    "DEFAULT_SEGMENTER",
    "MODELS",
    "Embedding",
    "ModelCard",
    "Prediction",
    "PromptableSegmenter",
    "get_card",
    "load_segmenter",
    "resolve_device",
    "resolve_weights",
]

_loaded: dict[tuple, PromptableSegmenter] = {}
_lock = threading.Lock()


def load_segmenter(
    name: str = DEFAULT_SEGMENTER,
    *,
    weights: str | os.PathLike | None = None,
    device: str = "auto",
    progress: Progress | None = None,
) -> PromptableSegmenter:
    """Load (once per process) the named promptable segmenter; weights resolve through the registry."""
    card = get_card(name)
    if card.role != "segmenter":
        raise ValueError(f"{name} is a {card.role}, not a promptable segmenter")
    dev = resolve_device(device)
    key = (name, None if weights is None else os.fspath(weights), str(dev))
    with _lock:
        if key in _loaded:
            return _loaded[key]
        path = resolve_weights(name, weights, progress=progress)
        if card.backend == "litemedsam":
            from .litemedsam import load_litemedsam

            model = load_litemedsam(path, device=dev, name=name)
        else:
            from .sam import load_sam

            model = load_sam(path, variant=card.options["variant"], device=dev, name=name)
        _loaded[key] = model
        return model
