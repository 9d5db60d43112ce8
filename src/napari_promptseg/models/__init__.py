"""Model roles, backends and the registry. No Qt, no napari."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from .allocator import keep_large_blocks
from .catalogue import canonical_name
from .device import resolve_device
from .protocols import (
    Detections,
    Embedding,
    Prediction,
    PromptableSegmenter,
    TextGrounder,
    TextHeatmapper,
    TextSegmenter,
)
from .registry import (
    DEFAULT_SEGMENTER,
    DEFAULT_TEXT_EMBEDDER,
    MODELS,
    ModelCard,
    Progress,
    get_card,
    resolve_weights,
)

if TYPE_CHECKING:  # torch and the sentence model load with it, not with this package
    from .text_embedding import SentenceEmbedder

__all__ = [
    "DEFAULT_SEGMENTER",
    "DEFAULT_TEXT_EMBEDDER",
    "MODELS",
    "Detections",
    "Embedding",
    "ModelCard",
    "Prediction",
    "PromptableSegmenter",
    "TextGrounder",
    "TextHeatmapper",
    "TextSegmenter",
    "check_weights",
    "download_progress",
    "download_size",
    "get_card",
    "load_grounder",
    "load_heatmapper",
    "load_segmenter",
    "load_text_embedder",
    "load_text_segmenter",
    "resolve_device",
    "resolve_weights",
]

_loaded: dict[tuple, object] = {}
_lock = threading.Lock()
#: one per model name, held while its weights resolve (a download: minutes) and it is built; ``_lock`` only guards
#: the dictionaries, so a GroundingDINO download in one widget does not stop every other widget's model
_name_locks: dict[str, threading.Lock] = {}


def _name_lock(name: str) -> threading.Lock:
    with _lock:
        return _name_locks.setdefault(name, threading.Lock())


def download_size(done: int, total: int | None = None) -> str:
    """``done`` (of ``total``) bytes in the unit of the larger: "12 of 375 MB", "0.7 of 1.4 MB", "300 of 700 KB", "512
    bytes". MB only, a file under 1 MB read "0 of 0 MB" all through its download; whole units only, a 1.4 MB one
    read "1 of 1 MB" half way: one decimal below 10 of the unit."""
    scale = max(done, total or 0)
    unit, step = ("MB", 2**20) if scale >= 2**20 else ("KB", 2**10) if scale >= 2**10 else ("bytes", 1)
    digits = 1 if step > 1 and scale < 10 * step else 0
    return f"{done / step:.{digits}f}" + (f" of {total / step:.{digits}f}" if total else "") + f" {unit}"


def download_progress(report: Callable[[float, str], None], cancel: Callable[[], bool] | None, name: str) -> Progress:
    """A weights download (``progress(done_bytes, total_bytes)`` of the loaders) told as ``report(fraction,
    message)``, as tasks and widgets take progress, and stopped at its next block of bytes once ``cancel()`` says
    so: SAM ViT-H is 2.5 GB. The partial file (our cache's ``<file>.part``) is never taken for the weights; the next
    download resumes it. A wait for another process's download of the same file is told as that."""
    return _DownloadReport(report, cancel, name)


class _DownloadReport:
    """:func:`download_progress`'s ``progress``, with ``waiting(file, done, total)`` for a wait on another process's
    download (:func:`~.hub.tell_waiting`)."""

    def __init__(self, report: Callable[[float, str], None], cancel: Callable[[], bool] | None, name: str) -> None:
        self.report, self.cancel, self.name = report, cancel, name

    def _stop_if_cancelled(self) -> None:
        if self.cancel is not None and self.cancel():
            from ..errors import CancelledError

            raise CancelledError(f"download of {self.name} cancelled")

    def __call__(self, done: int, total: int | None) -> None:
        self._stop_if_cancelled()
        self.report(_fraction(done, total), f"downloading {self.name}: {download_size(done, total)}")

    def waiting(self, file: str, done: int, total: int | None) -> None:
        self._stop_if_cancelled()
        told = f": {download_size(done, total)}" if done else ""
        self.report(_fraction(done, total), f"waiting for another process's download of {file}{told}")


def _fraction(done: int, total: int | None) -> float:
    return min(done / total, 1.0) if total else 0.0


def load_segmenter(
    name: str = DEFAULT_SEGMENTER,
    *,
    weights: str | os.PathLike | None = None,
    device: str = "auto",
    progress: Progress | None = None,
    option: str | None = None,
) -> PromptableSegmenter:
    """Load (once per process) the named promptable segmenter; weights resolve through the registry. ``option``:
    how the caller's user gives ``weights`` (a widget's field; default: the CLI's --weights), named where missing
    weights are told."""
    return _load(name, "segmenter", weights, device, progress, option=option)


def check_weights(name: str, weights: str | os.PathLike) -> None:
    """The load's :class:`~napari_promptseg.errors.WeightsError` for explicit ``weights`` of model ``name`` that it
    refuses before reading them (a file that does not exist, a folder without the model's checkpoint), raised now:
    a widget refuses its run with it before the run starts. Weights a file's bytes refuse (truncated, another
    model's) fail the load itself, and a hub id not on disk is left to it (its download has progress and Cancel)."""
    from pathlib import Path

    from .hub import parse_hub_id

    if Path(weights).expanduser().exists() or parse_hub_id(os.fspath(weights)) is None:
        resolve_weights(name, weights, download=False)  # for a local path: the checks of stat() alone


def load_grounder(
    name: str = "grounding_dino_tiny",
    *,
    weights: str | os.PathLike | None = None,
    device: str = "auto",
    progress: Progress | None = None,
    download: bool = True,
    option: str | None = None,
) -> TextGrounder:
    """Load (once per process) a text -> boxes model (GroundingDINO through transformers or groundingdino-py).
    ``download=False``: only weights already on disk; ``option``: how the caller's user gives ``weights``, named
    where missing weights are told (:func:`~.registry.resolve_weights`)."""
    return _load(name, "grounder", weights, device, progress, download, option)


def load_heatmapper(
    name: str = "clipseg_rd64_refined",
    *,
    weights: str | os.PathLike | None = None,
    device: str = "auto",
    progress: Progress | None = None,
    download: bool = True,
    option: str | None = None,
) -> TextHeatmapper:
    """Load (once per process) a text -> heatmap model (CLIPSeg, or a medvlsm-style fine-tuned checkpoint dir).
    ``download=False``: only weights already on disk; ``option``: how the caller's user gives ``weights``, named
    where missing weights are told (:func:`~.registry.resolve_weights`)."""
    return _load(name, "heatmapper", weights, device, progress, download, option)


def load_text_embedder(
    name: str = DEFAULT_TEXT_EMBEDDER,
    *,
    weights: str | os.PathLike | None = None,
    device: str = "auto",
) -> SentenceEmbedder:
    """Load (once per process) the sentence-embedding model that matches prompts to reference-library entries."""
    return _load(name, "text_embedder", weights, device, None)


def load_text_segmenter(path: str | os.PathLike, *, device: str = "auto") -> TextSegmenter:
    """Load (once per process and version of its weights) a trained text model directory: the output of
    ``promptseg train-text`` / :func:`~napari_promptseg.methods.text_training.train_text_segmenter` (fusion
    decoder over the bundled encoders) or of the CLIPSeg fine-tune (transformers layout). Its
    ``model.safetensors`` or ``text_segmenter.json`` names it too."""
    from pathlib import Path

    from ._native import load_triton_safely
    from .text_segmenter import load_fusion_model, model_directory, read_config, undo_stopped_save

    load_triton_safely()
    directory = model_directory(Path(path).expanduser().resolve())  # the model's weights file names it too
    if directory.is_dir():
        undo_stopped_save(directory)  # a save killed midway left two saves' files: the earlier model, whole
    config = read_config(directory)
    kind = config.get("kind")
    dev = resolve_device(device)
    if dev.type == "cpu":
        keep_large_blocks()
    # as _load keys a model: a model saved again (a further training, a presence refit) is loaded again and its
    # older version let go (it stayed in memory, and a CLIPSeg fine-tune's pytorch_model.bin was not looked at)
    place = ("text_segmenter", str(directory), str(dev))
    key = (*place, _version(directory))
    with _lock:
        if key in _loaded:
            return _loaded[key]
        _forget_other_versions(place)
    if kind == "fusion":
        model = load_fusion_model(directory, config, device=device)
    elif kind == "clipseg":
        from .clipseg import load_clipseg

        model = load_clipseg(directory, device=dev, name=directory.name)
        model.info = config  # its training (the channels its images were read with), as a fusion model's
    else:
        from ..errors import WeightsError

        raise WeightsError(f"text model {directory}: unknown kind {kind!r} (expected fusion or clipseg)")
    with _lock:
        _loaded[key] = model
    return model


def _version(path: os.PathLike) -> tuple:
    """What changes when weights are saved again at ``path``: size, modification time and inode of the file, or of
    each file of a model directory (a hub snapshot's links are followed to their blobs)."""

    def stamp(entry: os.PathLike) -> tuple:
        try:
            st = os.stat(entry)
        except OSError:  # removed meanwhile: the loader says what is missing
            return ()
        return (st.st_size, st.st_mtime_ns, st.st_ino)

    if not os.path.isdir(path):
        return stamp(path)
    with os.scandir(path) as entries:
        return tuple(sorted((entry.name, *stamp(entry.path)) for entry in entries if entry.is_file()))


def _forget_other_versions(place: tuple) -> None:
    """Drop the models loaded from ``place`` (name, weights path, device) at another version of its weights: an
    older version is not kept. Call holding ``_lock``."""
    for stale in [k for k in _loaded if k[: len(place)] == place]:
        del _loaded[stale]


def _load(
    name: str,
    role: str,
    weights,
    device: str,
    progress: Progress | None,
    download: bool = True,
    option: str | None = None,
):
    from ..errors import WeightsError
    from ._native import load_triton_safely

    name = canonical_name(name)  # 'LiteMedSAM' is litemedsam, under the name caches and reports key on
    card = MODELS.get(name)
    if card is None or card.role != role:  # e.g. --model grounding_dino_tiny for segment: a traceback before
        # the names that fit here, not every model of the registry
        fitting = ", ".join(n for n, c in MODELS.items() if c.role == role)
        wrong = f"unknown model {name!r}" if card is None else f"{name} is a {card.role}, not a {role}"
        from .text_segmenter import is_text_model

        if card is None and is_text_model(name):  # `promptseg text --model MODEL_DIR`: the trained model's flag
            wrong = (
                f"{name} is a text model of `promptseg train-text`, not a {role}: `promptseg text` takes it with "
                "--text-model"
            )
        raise WeightsError(f"{wrong}; the {role}s: {fitting}")
    from .availability import missing_package, missing_weights

    # before the weights resolve: a named route downloaded 690 MB of GroundingDINO that its missing package then
    # could not load
    package = missing_package(card)
    if package is not None:
        raise WeightsError(package, details=None if weights is not None else missing_weights(card, option))
    load_triton_safely()  # before transformers or torch pull it in (napari's console: Mesa's LLVM is loaded)
    dev = resolve_device(device)
    if dev.type == "cpu":
        keep_large_blocks()
    with _name_lock(name):
        # keyed by the resolved file, so weights that appear later (a download, a new cache dir) are picked up, and
        # by its version: a checkpoint saved again under its name (a further fine-tuning epoch) is loaded again
        path = resolve_weights(name, weights, progress=progress, download=download, option=option)
        place = (name, os.fspath(path), str(dev))
        key = (*place, _version(path))
        with _lock:
            if key in _loaded:
                return _loaded[key]
            _forget_other_versions(place)
        if card.backend == "litemedsam":
            from .litemedsam import load_litemedsam

            model = load_litemedsam(path, device=dev, name=name)
        elif card.backend == "sam":
            from .sam import load_sam

            model = load_sam(path, variant=card.options["variant"], device=dev, name=name)
        elif card.backend == "hf_grounding_dino":
            from .grounding import load_hf_grounding_dino

            model = load_hf_grounding_dino(path, device=dev, name=name)
        elif card.backend == "groundingdino":
            from .grounding import load_groundingdino_py

            model = load_groundingdino_py(path, device=dev, name=name, config=card.options.get("config"))
        elif card.backend == "hf_clipseg":
            from .clipseg import load_clipseg

            model = load_clipseg(path, device=dev, name=name)
        elif card.backend == "sentence_minilm":
            from .text_embedding import load_sentence_embedder

            model = load_sentence_embedder(path, device=dev, name=name)
        else:  # a card added without its adapter
            raise ValueError(f"{name}: no adapter for backend {card.backend!r}")
        with _lock:
            _loaded[key] = model
        return model
