"""Offline text route: a typed prompt -> the matching reference-library exemplars -> SAT one-shot segmentation.

1. :func:`match_library` compares the prompt with every entry's name, with "name: description" and, when the
   description lists phrases separated by ',', ';' or '/', with each of them (synonyms), using the
   bundled sentence model (all-MiniLM-L6-v2, cosine similarity of L2-normalised embeddings). A name equal to the
   prompt up to case, punctuation and plural ("Glands" / "gland", "nuclei" / "nucleus", "mitoses" / "mitosis")
   scores 1.0.
2. Entries at or above ``min_similarity`` and within ``max_gap`` of the best one answer the prompt (at most
   ``top_k``; several -> SAT ensemble).
3. :func:`segment_with_library` runs :func:`.oneshot.segment_like` with their images and masks as references.

``min_similarity`` = 0.6, measured with all-MiniLM-L6-v2 (``benchmarks/eval_library.py``, results/library_route.json):
synonyms and plurals score 0.64-0.93 ("colorectal polyp"/"polyp" 0.64, "colon polyp"/"polyp" 0.73, "lung fields"/
"lung" 0.76, "cell nuclei"/"nucleus" 0.81, "nuclei"/"nucleus" 0.86, "neurons"/"neuron" 0.91, "glands"/"gland" 0.93),
unrelated structure words 0.22-0.51 ("nucleus"/"lung" 0.22, "lung"/"polyp" 0.23, "kidney"/"lung" 0.49,
"membrane"/"cell interior" 0.51). 0.6 sits 0.04 below the weakest synonym and 0.09 above the strongest unrelated
pair; with one exemplar per shared dataset, 15/15 prompt variants chose the right entry and 6/6 unrelated prompts
none. ``max_gap`` = 0.1 keeps a clearly weaker second entry (e.g. "cell interior" for the prompt "nuclei") out of
the ensemble.
"""

from __future__ import annotations

import re
import shlex
import threading
import time
import unicodedata
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..callbacks import ProgressCallback
from ..errors import CancelledError, PromptsegError, WeightsError
from ..io.library import LibraryEntry, ReferenceLibrary
from ..models.preprocessing import Normalization, as_channels_last
from ..models.protocols import PromptableSegmenter
from .defaults import MIN_SIMILARITY, TOP_K
from .instances import (
    ExemplarModel,
    InstanceResult,
    count_objects,
    fit_exemplars,
    known_near_labels,
    level_object_size,
    segment_with_exemplars,
)
from .labelling_advice import few_labels_warning
from .oneshot import OneShotResult, segment_like

DEFAULT_MIN_SIMILARITY = MIN_SIMILARITY
DEFAULT_MAX_GAP = 0.1
DEFAULT_TOP_K = TOP_K

_IRREGULAR_PLURALS = {
    "nuclei": "nucleus",
    "nucleoli": "nucleolus",
    "mitochondria": "mitochondrion",
    "bacteria": "bacterium",
    "vertebrae": "vertebra",
    "lumina": "lumen",
    "foci": "focus",
    "fungi": "fungus",
    "cortices": "cortex",
    "apices": "apex",
    "stomata": "stoma",
    "teeth": "tooth",
    "feet": "foot",
    "villi": "villus",
    "alveoli": "alveolus",
    "glomeruli": "glomerulus",
    "tubuli": "tubulus",
}


class TextEmbedder(Protocol):
    """What matching needs from a sentence model (:class:`..models.text_embedding.SentenceEmbedder`)."""

    name: str

    def embed(self, texts: str | Sequence[str]) -> np.ndarray: ...


def _singular(word: str) -> str:
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("sses", "xes", "ches", "shes", "zes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


#: Latin and Greek plurals the rules of :func:`_singular` miss, as (plural ending, singular ending): histology's
#: 'mitoses', 'acini', 'papillae', 'septa', 'ganglia', 'foramina', 'matrices', 'sinuses' (the English rules make
#: 'mitose', 'sinuse'; the sentence model gives 'foramina'/'foramen' 0.48, no match at all)
_CLASSICAL_PLURALS = (
    ("es", "is"),
    ("es", ""),
    ("ata", "a"),
    ("ices", "ex"),
    ("ices", "ix"),
    ("ina", "en"),
    ("ae", "a"),
    ("i", "us"),
    ("a", "um"),
    ("a", "on"),
)


def _words(text: str) -> list[str]:
    return re.sub(r"[\W_]+", " ", unicodedata.normalize("NFKC", text).casefold()).split()


def normalize_name(text: str) -> str:
    """Case-, punctuation- and plural-insensitive key: 'Colon Polyps!' -> 'colon polyp', 'nuclei' -> 'nucleus'.
    Letters of every script are kept ('Zellkörper', '核'): only punctuation and spaces separate words."""
    return " ".join(_singular(w) for w in _words(text))


def plural_keys(text: str) -> set[str]:
    """Every key :func:`normalize_name` could give ``text``'s singular: its own, and those of the last word (the
    noun a phrase's plural is on) read as a Latin or Greek plural ('mitoses' -> 'mitosis', 'cell acini' -> 'cell
    acinus'). A prompt names an entry exactly when their keys meet. Empty for a text of punctuation alone."""
    words = _words(text)
    if not words:
        return set()
    head, last = [_singular(w) for w in words[:-1]], words[-1]
    endings = {_singular(last), last}
    for plural, singular in _CLASSICAL_PLURALS:
        if len(last) >= len(plural) + 2 and last.endswith(plural):
            endings.add(last[: len(last) - len(plural)] + singular)
    return {" ".join([*head, ending]) for ending in endings}


@dataclass(frozen=True)
class LibraryMatch:
    """One library entry and how well it matches the prompt."""

    entry: LibraryEntry
    similarity: float  # cosine similarity in [-1, 1]; 1.0 for an exact (plural-insensitive) name match
    matched_text: str  # the entry text that scored best: its name or "name: description"
    exact: bool = False

    def describe(self) -> str:
        return f"'{self.entry.name}' (similarity {self.similarity:.2f})"


@dataclass
class LibraryResult:
    """The library route's answer for one image."""

    labels: np.ndarray  # (H, W) uint16: 1 on the mask, or instance ids 1..N for an entry saved with instances
    mask: np.ndarray  # (H, W) bool
    matches: list[LibraryMatch]
    reason: str  # which entries answered and why, for the UI/report ("library entry 'gland' (similarity 0.93)")
    oneshot_result: OneShotResult | InstanceResult
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


# embeddings of entry texts are recomputed per process (never stored on disk) but kept here between prompts
_EMBED_CACHE: dict[tuple[int, str], np.ndarray] = {}
_EMBED_CACHE_MAX = 4096
_cache_lock = threading.Lock()


def _embed_cached(embedder: TextEmbedder, texts: list[str]) -> np.ndarray:
    key = id(embedder)
    with _cache_lock:
        missing = list(dict.fromkeys(t for t in texts if (key, t) not in _EMBED_CACHE))
    if missing:
        vectors = np.asarray(embedder.embed(missing), np.float32)
        with _cache_lock:
            if len(_EMBED_CACHE) + len(missing) > _EMBED_CACHE_MAX:
                _EMBED_CACHE.clear()
            _EMBED_CACHE.update({(key, t): v for t, v in zip(missing, vectors, strict=True)})
    with _cache_lock:
        return np.stack([_EMBED_CACHE[(key, t)] for t in texts])


def _as_library(library: ReferenceLibrary | str | Path | None) -> ReferenceLibrary:
    return library if isinstance(library, ReferenceLibrary) else ReferenceLibrary.open(library)


def _check_prompt(prompt: str) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptsegError("the text prompt is empty; type what to segment (e.g. 'gland')")
    return " ".join(prompt.split())


def rank_library(
    prompt: str, library: ReferenceLibrary | str | Path | None, embedder: TextEmbedder | None = None
) -> list[LibraryMatch]:
    """Every entry with its similarity to the prompt, best first (no threshold).

    ``embedder=None`` loads the bundled sentence model; when it cannot be loaded, exact name matches still work
    (the others are then missing from the ranking).
    """
    prompt = _check_prompt(prompt)
    entries = _as_library(library).entries
    if not entries:
        return []
    keys = plural_keys(prompt)
    # a prompt of punctuation alone has no key, and matches no name exactly
    exact = [LibraryMatch(e, 1.0, e.name, True) for e in entries if keys & plural_keys(e.name)]
    if embedder is None:
        from ..models import load_text_embedder

        try:
            embedder = load_text_embedder()
        except (WeightsError, ImportError):
            if exact:
                return exact
            raise
    texts = sorted({t for e in entries for t in e.match_texts()})
    vectors = _embed_cached(embedder, [prompt, *texts])
    similarity = dict(zip(texts, (vectors[1:] @ vectors[0]).astype(float), strict=True))
    exact_ids = {m.entry.id for m in exact}
    ranked = list(exact)
    for entry in entries:
        if entry.id in exact_ids:
            continue
        best = max(entry.match_texts(), key=lambda t: similarity[t])
        ranked.append(LibraryMatch(entry, float(similarity[best]), best))
    # stable: among equal scores the older entry first
    return sorted(ranked, key=lambda m: -m.similarity)


def match_library(
    prompt: str,
    library: ReferenceLibrary | str | Path | None = None,
    embedder: TextEmbedder | None = None,
    *,
    top_k: int = DEFAULT_TOP_K,
    min_similarity: float = DEFAULT_MIN_SIMILARITY,
    max_gap: float = DEFAULT_MAX_GAP,
) -> list[LibraryMatch]:
    """Entries that answer ``prompt``: similarity >= ``min_similarity`` and within ``max_gap`` of the best, at most
    ``top_k``, best first. Empty when nothing matches (or the library is empty); see the module docstring."""
    return select_matches(
        rank_library(prompt, library, embedder), top_k=top_k, min_similarity=min_similarity, max_gap=max_gap
    )


def check_library_settings(top_k: int, min_similarity: float | None) -> None:
    """Refuse a ``top_k`` below 1 and a ``min_similarity`` outside [-1, 1] (NaN: nothing would ever match)."""
    if top_k < 1:
        raise PromptsegError(f"top_k must be at least 1, got {top_k}")
    if min_similarity is not None and not -1.0 <= min_similarity <= 1.0:
        raise PromptsegError(f"min_similarity is a cosine similarity from -1 to 1, got {min_similarity}")


def select_matches(
    ranked: Sequence[LibraryMatch],
    *,
    top_k: int = DEFAULT_TOP_K,
    min_similarity: float = DEFAULT_MIN_SIMILARITY,
    max_gap: float = DEFAULT_MAX_GAP,
) -> list[LibraryMatch]:
    """The answering entries of a :func:`rank_library` ranking (see :func:`match_library`)."""
    check_library_settings(top_k, min_similarity)
    if not ranked or ranked[0].similarity < min_similarity:
        return []
    floor = max(min_similarity, ranked[0].similarity - max_gap)
    return [m for m in ranked if m.similarity >= floor][:top_k]


def no_match_message(
    prompt: str,
    library: ReferenceLibrary,
    ranked: Sequence[LibraryMatch] = (),
    min_similarity: float = DEFAULT_MIN_SIMILARITY,
) -> str:
    """What to tell the user when the library cannot answer a prompt, and what to do about it."""
    # a shell's quoting ("Crohn's lesion"); a name with a leading dash goes after "--", or argparse reads an option
    name = shlex.quote(prompt)
    command = (
        f"promptseg library add --image IMAGE --mask MASK -- {name}"
        if prompt.startswith("-")
        else f"promptseg library add {name} --image IMAGE --mask MASK"
    )
    howto = f"label the structure in the One-shot widget and press 'Save reference to library…', or run `{command}`"
    if not len(library):
        empty = "is empty" if library.path.exists() else "is empty: no such folder"  # a mistyped path
        return (
            f"the reference library ({library.path}) {empty}, so the text prompt '{prompt}' cannot be answered "
            f"offline; save an exemplar first: {howto}"
        )
    closest = ", ".join(f"'{m.entry.name}' {m.similarity:.2f}" for m in list(ranked)[:3]) or ", ".join(
        f"'{n}'" for n in library.names()[:5]
    )
    return (
        f"no reference-library entry matches '{prompt}' (closest: {closest}; a match needs similarity >= "
        f"{min_similarity:.2f}); use one of the library's names, or save an exemplar of '{prompt}': {howto}"
    )


def exemplar_advice(entry: LibraryEntry, remedy: str) -> str | None:
    """Advice for a many-instances entry just saved with fewer than ``FEW_EXEMPLARS`` objects and no partial labels:
    every prompt answered from it teaches its unlabelled objects as background. ``remedy``: how to save it again with
    partial labels where the user is."""
    if not entry.instances:
        return None
    return few_labels_warning(
        count_objects(entry.labels()), entry.partial_labels, remedy, name=f"library exemplar '{entry.name}'"
    )


def _check_cancel(cancel: Callable[[], bool] | None) -> None:
    if cancel is not None and cancel():
        raise CancelledError("cancelled")


# exemplars fitted to library entries, kept between images and prompts (a stack's planes, a folder): fitting embeds
# the entry's tiles and segments it once more to choose the candidates, seconds to tens of seconds on a CPU
_EXEMPLARS: dict[tuple, tuple[weakref.ref, ExemplarModel]] = {}
_EXEMPLARS_MAX = 4
_exemplars_lock = threading.Lock()


def _fitted_exemplars(
    segmenter: PromptableSegmenter,
    entry: LibraryEntry,
    reference: np.ndarray,
    normalize: Normalization,
    report: ProgressCallback,
    cancel: Callable[[], bool] | None,
) -> ExemplarModel:
    """The exemplars of an instances entry, fitted once per entry content, segmenter, encoder precision and
    normalisation. An entry saved with partial labels (only some of its objects labelled) learns background only
    near them, as `promptseg oneshot --partial-labels` does: every other unlabelled pixel of it may be an object."""
    # the flag is in the key beside the digest (which holds it too): an entry without a digest is known by its id.
    # The precision in force too: register's regions run the encoder in float32, the Text widget in auto (bfloat16),
    # and exemplars fitted by one changed the other's objects (what ran before decided the answer)
    precision = getattr(segmenter, "precision", None)
    key = (entry.sha256 or entry.id, entry.partial_labels, str(entry.root), id(segmenter), precision, normalize)
    with _exemplars_lock:
        cached = _EXEMPLARS.get(key)
    if cached is not None and cached[0]() is segmenter:
        with _exemplars_lock:
            if key in _EXEMPLARS:
                _EXEMPLARS[key] = _EXEMPLARS.pop(key)  # the most recently used goes last (the oldest is dropped)
        return cached[1]
    what = f"library entry '{entry.name}'"
    report(0.05, f"learning the objects of {what}")
    # cancel is checked between the entry's tiles and steps (the longest phase before the target's tiles)
    labels = entry.labels()
    model = fit_exemplars(
        segmenter,
        reference,
        labels,
        known=known_near_labels(labels) if entry.partial_labels else None,
        normalize=normalize,
        name=what,
        progress=lambda fraction, message: report(0.05 + 0.25 * fraction, f"learning {message}"),
        cancel=cancel,
    )
    with _exemplars_lock:
        if len(_EXEMPLARS) >= _EXEMPLARS_MAX:
            _EXEMPLARS.pop(next(iter(_EXEMPLARS)))
        _EXEMPLARS[key] = (weakref.ref(segmenter), model)
    return model


def describe_matches(matches: Sequence[LibraryMatch]) -> str:
    """'library entry 'gland' (similarity 0.93)' or 'library entries ... (SAT ensemble of 2)'."""
    if len(matches) == 1:
        return f"library entry {matches[0].describe()}"
    return f"library entries {', '.join(m.describe() for m in matches)} (SAT ensemble of {len(matches)})"


def segment_with_library(
    image: np.ndarray,
    prompt: str,
    library: ReferenceLibrary | str | Path | None = None,
    *,
    segmenter: PromptableSegmenter | None = None,
    embedder: TextEmbedder | None = None,
    top_k: int = DEFAULT_TOP_K,
    min_similarity: float = DEFAULT_MIN_SIMILARITY,
    max_gap: float = DEFAULT_MAX_GAP,
    matches: Sequence[LibraryMatch] | None = None,
    channel_axis: int | None = None,
    channels: list[int] | None = None,
    normalize: Normalization = "auto",
    name: str = "image",
    factor: float = 1.0,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
    **segment_like_kwargs: Any,
) -> LibraryResult:
    """Segment what ``prompt`` names in ``image`` with the matching library exemplars (SAT one-shot).

    ``matches`` skips matching (e.g. the route chooser already matched). ``channel_axis``/``channels`` describe
    ``image``; each exemplar carries its own layout. ``factor``: ``image`` is a pyramid level that many times
    coarser than the full-resolution pixels the exemplars were saved at (their objects are that much smaller
    there). Other keyword arguments go to :func:`.oneshot.segment_like`
    (``strategy``, ``ensemble``, ``keep_largest``, ``extractor``, ...). Raises :class:`PromptsegError` with what to
    do when the library is empty or nothing matches.
    """
    if not factor > 0:
        raise PromptsegError(f"factor must be positive, got {factor}")
    report = progress or (lambda fraction, message: None)
    prompt = _check_prompt(prompt)
    lib = _as_library(library)
    t0 = time.perf_counter()
    if matches is None:
        report(0.0, f"matching '{prompt}' to the reference library")
        ranked = rank_library(prompt, lib, embedder)
        matches = select_matches(ranked, top_k=top_k, min_similarity=min_similarity, max_gap=max_gap)
        if not matches:
            raise PromptsegError(no_match_message(prompt, lib, ranked, min_similarity))
    matches = list(matches)
    if not matches:
        raise PromptsegError(no_match_message(prompt, lib, (), min_similarity))
    match_s = time.perf_counter() - t0
    target = as_channels_last(image, channel_axis=channel_axis, channels=channels, name=name)
    references, masks = [], []
    # the instances mode answers from the best entry alone: the others are not read
    for match in matches[:1] if matches[0].entry.instances else matches:
        _check_cancel(cancel)
        entry = match.entry
        report(0.02, f"reading library entry '{entry.name}'")
        references.append(
            as_channels_last(entry.image(), channel_axis=entry.channel_axis, name=f"library entry '{entry.name}'")
        )
        masks.append(entry.mask())
    said = _channel_warnings([m.entry for m in matches], references, target.shape[-1], name)

    if matches[0].entry.instances:
        # the best entry marks many objects (saved with "many instances"): find every object like them, from that
        # one exemplar (the instances mode takes one reference; its saved ids are the objects)
        entry = matches[0].entry
        if segmenter is None:
            from ..models import load_segmenter

            segmenter = load_segmenter()
        t1 = time.perf_counter()
        model = _fitted_exemplars(segmenter, entry, references[0], normalize, report, cancel)
        fit_s = time.perf_counter() - t1
        _check_cancel(cancel)
        # the exemplars are measured in full-resolution pixels; a pyramid level ``factor`` times coarser sees its
        # objects that much smaller (as the one-shot CLI: methods.instances.level_object_size)
        found = segment_with_exemplars(
            segmenter,
            model,
            target,
            object_size=level_object_size(model, None, factor),
            name=name,
            progress=lambda fraction, message: report(0.3 + 0.7 * fraction, message),
            cancel=cancel,
        )
        return LibraryResult(
            labels=found.labels,
            mask=found.labels > 0,
            matches=matches[:1],
            reason=describe_matches(matches[:1]) + f", many-instances mode: {len(found.scores)} object(s)",
            oneshot_result=found,
            timings={"match_s": match_s, "fit_exemplars_s": fit_s, **found.timings},
            warnings=[*said, *found.warnings],
        )
    # every array is channels-last now; -1 is a no-op for them and ignored for 2D ones
    result = segment_like(
        references,
        masks,
        target,
        segmenter=segmenter,
        channel_axis=-1,
        warn_many=False,  # a one-region entry (many-objects entries take the instances route)
        normalize=normalize,
        names=[name],
        progress=lambda fraction, message: report(0.05 + 0.95 * fraction, message),
        cancel=cancel,
        **segment_like_kwargs,
    )[0]
    reason = describe_matches(matches)
    return LibraryResult(
        labels=result.labels,
        mask=result.mask,
        matches=matches,
        reason=reason,
        oneshot_result=result,
        timings={"match_s": match_s, **result.timings},
        warnings=[*said, *result.warnings],
    )


def _channel_warnings(entries: list, references: list[np.ndarray], channels: int, name: str) -> list[str]:
    """What to say when an entry of 2 channels answers an RGB or grey image (or the reverse): the model then sees
    other channels than the exemplar taught, which only a "does not transfer" warning hinted at."""
    kinds = {1: "1 channel (grey)", 2: "2 channels", 3: "3 channels (RGB)"}
    said = []
    for entry, reference in zip(entries, references, strict=False):  # only the entries read
        count = reference.shape[-1]
        if count != channels and 2 in (count, channels):
            said.append(
                f"library entry '{entry.name}' ({entry.id}) has {kinds.get(count, count)} and {name} has "
                f"{kinds.get(channels, channels)}: the channel counts differ, so the "
                "exemplar is compared with channels it was not saved with; the mask is a guess. Save an exemplar "
                "of images like this one"
            )
    return said
