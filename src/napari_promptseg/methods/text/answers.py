"""How each route turns one image and prompt into instance labels: GroundingDINO boxes decoded by the segmenter,
a heatmap thresholded (CLIPSeg, a trained text model), or the reference library's exemplars (one-shot SAT)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from ...callbacks import ProgressCallback
from ...errors import CancelledError, PromptsegError, WeightsError
from ...models.preprocessing import Normalization
from ...models.protocols import PromptableSegmenter
from ..prompt_templates import PromptAttributes, expand_prompt
from .phrases import prompt_text, said_prompt, split_phrases
from .result import TextResult
from .routes import TextRoute, download_advice

if TYPE_CHECKING:
    from ..library import LibraryMatch

#: a piece of a one-region answer smaller than this fraction of its largest piece is not an object: thresholding the
#: decoder's upsampled low-resolution mask leaves specks of a few pixels beside the regions (GlaS: 1-54 px beside
#: glands of 3000-180 000 px)
SPECK_FRACTION = 0.01


def prompt_cut_warnings(
    route: TextRoute,
    prompt: str | Sequence[str],
    *,
    template: str = "p1",
    attributes: PromptAttributes | None = None,
    once_per_process: bool = False,
) -> list[str]:
    """A warning per text :func:`~.segment.segment_text` gives the route's text encoder for ``prompt`` that is longer
    than it reads (cut without a word): CLIPSeg's CLIP 77 tokens of each phrase, GroundingDINO's BERT 256 of the
    caption of them all, the sentence model of the library or a trained fusion model 256 of each.
    ``once_per_process``: only texts not yet checked with this model in this process (segment_text's: a loop's first
    image says it)."""
    prompt = prompt_text(prompt)
    phrases = [" ".join(prompt.split())] if route.route == "trained" else split_phrases(prompt)
    model_prompts = [expand_prompt(p, template, attributes) for p in phrases]
    texts = phrases if route.route == "library" else model_prompts
    if route.route == "groundingdino":  # one caption; the words the user typed when no template changed them
        texts = [prompt if model_prompts == phrases else " . ".join(model_prompts)]
    model = route.model
    if route.route == "trained" and hasattr(model, "text"):  # a fusion model: its frozen sentence model reads it
        model = model.text.embedder
    elif route.route == "library":
        from ...models import load_text_embedder

        try:  # loaded once per process; rank_library matches exact names without it
            model = load_text_embedder()
        except (WeightsError, ImportError):
            return []
    from ...models.tokens import cut_warnings

    what = {"library": "the sentence model", "trained": "the trained text model", "groundingdino": "GroundingDINO"}
    name = f"{what.get(route.route, 'CLIPSeg')} ({getattr(model, 'name', route.name)})"
    return cut_warnings(model, name, texts, once_per_process=once_per_process)


def prompt_vocabulary_warnings(route: TextRoute, prompt: str | Sequence[str]) -> list[str]:
    """A warning when a trained text model that knows a few names (its vocabulary, recorded by training with class
    names or one text) is asked for another: it answers with what it learnt for the nearest of them (a gland and
    lung model asked for "nuclei" gave the glands, without a word). Case and spacing do not count (MiniLM reads
    lower case)."""
    info = getattr(route.model, "info", None) if route.route == "trained" else None
    vocabulary = (info or {}).get("training", {}).get("vocabulary") or []
    text = " ".join(prompt_text(prompt).split())
    if not vocabulary or text.casefold() in {" ".join(name.split()).casefold() for name in vocabulary}:
        return []
    names = ", ".join(map(repr, vocabulary[:8])) + (", ..." if len(vocabulary) > 8 else "")
    said = said_prompt(text)  # a pasted paragraph is named by its start, not repeated whole
    return [
        f"{said} is none of the {len(vocabulary)} texts the trained text model ({route.name}) was trained on "
        f"({names}): it answers with what it learnt for the nearest of them; prompt with one of those, or train with "
        f"{'it' if said != repr(text) else said}"
    ]


@dataclass
class _Request:
    """One image and prompt on its way through a route."""

    hwc: np.ndarray  # the validated (H, W, C) image
    prompt: str
    phrases: list[str]
    model_prompts: list[str]  # the phrases expanded by the prompt template
    chosen: TextRoute
    segmenter: PromptableSegmenter | None
    normalize: Normalization
    report: ProgressCallback
    cancel: Callable[[], bool] | None
    factor: float = 1.0  # the image is a pyramid level this many times coarser than full resolution
    name: str = "image"  # what warnings call the image (a batch's file)

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel():
            raise CancelledError("cancelled")


def _grounding_route(req: _Request, box_threshold: float, text_threshold: float, nms_iou: float) -> TextResult:
    from ..grounded import boxes_to_instances

    chosen = req.chosen
    req.report(0.1, f"{chosen.name}: finding boxes")
    caption = " . ".join(req.model_prompts)
    detections = chosen.model.boxes(
        req.hwc, caption, box_threshold=box_threshold, text_threshold=text_threshold, normalize=req.normalize
    )
    req.report(0.5, f"{len(detections)} boxes; segmenting each")
    labels, kept = boxes_to_instances(
        req.hwc, detections, req.segmenter, nms_iou=nms_iou, normalize=req.normalize, cancel=req.cancel
    )
    kept = np.asarray(kept, dtype=int)
    answer = (
        f"GroundingDINO ({chosen.name}): {len(kept)} object(s) from {len(detections)} box(es) above box threshold "
        f"{box_threshold} / text threshold {text_threshold}"
    )
    return TextResult(
        labels=labels,
        route="groundingdino",
        reason=chosen.because(answer),
        prompt=req.prompt,
        model_prompts=[detections.prompt or caption],
        phrases=[detections.phrases[i] for i in kept],
        boxes=detections.boxes[kept].astype(np.float32),
        scores=detections.scores[kept].astype(np.float32),
    )


def _heatmap_route(req: _Request, threshold: float) -> TextResult:
    """CLIPSeg or a trained text segmenter: probability map per phrase -> threshold -> objects."""
    from ..heatmap import heatmap_to_instances

    labels = np.zeros(req.hwc.shape[:2], np.uint32)
    found_phrases, boxes, scores, heatmaps = [], [], [], []
    for k, (phrase, model_prompt) in enumerate(zip(req.phrases, req.model_prompts, strict=True)):
        req.report(0.1 + 0.8 * k / len(req.phrases), f"{req.chosen.name}: heatmap of {model_prompt!r}")
        heat = req.chosen.model.heatmap(req.hwc, model_prompt, normalize=req.normalize)
        heatmaps.append(heat)
        req.check_cancel()
        found = heatmap_to_instances(
            req.hwc, heat, threshold=threshold, segmenter=req.segmenter, normalize=req.normalize, cancel=req.cancel
        )
        for obj_id in range(1, int(found.labels.max()) + 1):
            free = (found.labels == obj_id) & (labels == 0)  # earlier phrases keep their pixels
            if not free.any():
                continue
            labels[free] = len(found_phrases) + 1
            found_phrases.append(phrase)
            boxes.append(found.boxes[obj_id - 1])
            scores.append(float(heat[free].mean()))
        req.check_cancel()
    how = "refined by the segmenter" if req.segmenter is not None else "thresholded"
    what = "trained text model" if req.chosen.route == "trained" else "CLIPSeg"
    answer = f"{what} ({req.chosen.name}): probability above {threshold}, {how}, {len(found_phrases)} object(s)"
    return TextResult(
        labels=_compact(labels),
        route=req.chosen.route,
        reason=req.chosen.because(answer),
        prompt=req.prompt,
        model_prompts=list(req.model_prompts),
        phrases=found_phrases,
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        scores=np.asarray(scores, np.float32),
        heatmap=np.max(heatmaps, axis=0).astype(np.float32),
    )


def library_matches(
    phrases: list[str], route: TextRoute, top_k: int, min_similarity: float | None
) -> list[list[LibraryMatch]]:
    """The library entries answering each phrase of a prompt on the library ``route``, or a PromptsegError naming
    the first phrase none answers. The images play no part: a batch asks once, before its first image (every image
    failed in turn, each retried)."""
    from ..library import DEFAULT_MIN_SIMILARITY, _as_library, no_match_message, rank_library, select_matches

    floor = DEFAULT_MIN_SIMILARITY if min_similarity is None else min_similarity
    library = _as_library(route.model)
    chosen = []
    for phrase in phrases:
        ranked = rank_library(phrase, library)
        selected = select_matches(ranked, top_k=top_k, min_similarity=floor)
        if not selected:
            # auto answered from the library because no vision-language model is on disk: one may be fetched
            hint = "; ".join(route.skipped)
            hint = hint and f"{hint} here: {download_advice()}"
            raise PromptsegError(no_match_message(phrase, library, ranked, floor), details=hint)
        chosen.append(selected)
    return chosen


def text_working_scale(
    plane_shape: Sequence[int],
    prompt: str | Sequence[str],
    route: TextRoute,
    input_size: int,
    *,
    top_k: int = 3,
    min_similarity: float | None = None,
) -> float:
    """The working scale (model-input pixels per full-resolution pixel) a text prompt reads an image pyramid of
    full-resolution plane ``plane_shape`` at: the whole image's, as a text model sees it; or, when the library answers
    every phrase with a many-instances entry, the finer scale its objects need (the smallest entry's objects, for a
    model of ``input_size`` px), as one-shot reads a target for its reference's objects. At the whole image's level
    an 8k slide's nuclei were 2.5 px: 4 min, and no nucleus found. Reads the entries' labels, no image."""
    from ...io.multiscale import whole_image_scale
    from ...tiling import typical_object_size
    from ..oneshot import target_scale

    whole = whole_image_scale(plane_shape)
    if route.route != "library":
        return whole
    entries = [
        selected[0].entry
        for selected in library_matches(split_phrases(prompt_text(prompt)), route, top_k, min_similarity)
    ]
    if not all(entry.instances for entry in entries):
        return whole  # a one-region phrase is answered on the whole image (SAT reads it whole)
    size = min(typical_object_size(entry.labels()) for entry in entries)
    return max(whole, target_scale(plane_shape, input_size, size))


def _library_route(req: _Request, top_k: int, min_similarity: float | None) -> TextResult:
    from ..library import _as_library, segment_with_library

    # every phrase is matched (milliseconds) before any is segmented (seconds each): a phrase the library cannot
    # answer fails the prompt before the work on the others is done and thrown away
    library = _as_library(req.chosen.model)
    chosen = library_matches(req.phrases, req.chosen, top_k, min_similarity)
    labels = np.zeros(req.hwc.shape[:2], np.uint32)
    found_phrases, boxes, scores, matches, reasons, warnings = [], [], [], [], [], []
    for k, (phrase, selected) in enumerate(zip(req.phrases, chosen, strict=True)):
        span = (k / len(req.phrases), (k + 1) / len(req.phrases))

        def sub_progress(fraction: float, message: str, span=span, phrase=phrase) -> None:
            req.report(span[0] + fraction * (span[1] - span[0]), f"{phrase!r}: {message}")

        answer = segment_with_library(
            req.hwc,
            phrase,
            library,
            segmenter=req.segmenter,
            matches=selected,
            channel_axis=-1,  # the validated channels-last image
            normalize=req.normalize,
            factor=req.factor,
            name=req.name,
            progress=sub_progress,
            cancel=req.cancel,
        )
        matches.extend(answer.matches)
        reasons.append(answer.reason)
        warnings.extend(answer.warnings)
        warnings.extend(mixed_names_warning(phrase, selected))
        # one-shot SAT answers with one mask: its connected components become the objects; an entry saved with
        # "many instances" answers with instance labels already (one object in pieces stays one: its reason counts it
        # once)
        instances = bool(answer.matches) and answer.matches[0].entry.instances
        components = answer.labels if instances else _without_specks(ndimage.label(answer.mask)[0])
        # an object's score is the segmentation's confidence in it, as `promptseg oneshot` reports it (each
        # instance's own; SAT's mask score for the pieces of one region); how well the prompt matched the entry is
        # the matches' similarity, the same for every object and so no ranking of them
        found = answer.oneshot_result
        object_scores = found.scores if instances else np.full(components.max(initial=0), found.score, np.float32)
        for sl_index, sl in enumerate(ndimage.find_objects(components), start=1):
            if sl is None:
                continue
            free = (components == sl_index) & (labels == 0)
            if not free.any():
                continue
            labels[free] = len(found_phrases) + 1
            found_phrases.append(phrase)
            boxes.append([sl[1].start, sl[0].start, sl[1].stop - 1, sl[0].stop - 1])
            scores.append(float(object_scores[sl_index - 1]))
    return TextResult(
        labels=_compact(labels),
        route="library",
        reason=req.chosen.because("used " + "; ".join(reasons)),
        prompt=req.prompt,
        model_prompts=list(req.phrases),
        phrases=found_phrases,
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        scores=np.asarray(scores, np.float32),
        matches=matches,
        warnings=warnings,
    )


def mixed_names_warning(phrase: str, selected: Sequence[LibraryMatch]) -> list[str]:
    """A warning when one phrase was answered by entries of several names ('glands and stroma': 'stroma' and
    'gland'): their exemplars are ensembled into one answer, a mix of both, which was said nowhere. Exact (plural)
    name matches alike ('nuclei': 'nucleus' and 'nuclei') are one thing and say nothing."""
    names = {m.entry.name.casefold(): m for m in selected}
    if len(names) < 2 or all(m.exact for m in selected):
        return []
    said = ", ".join(f"'{m.entry.name}' ({m.similarity:.2f})" for m in names.values())
    return [
        f"{said_prompt(phrase)} matched library entries of {len(names)} names ({said}): their exemplars were "
        f"ensembled into one answer; to have each answered on its own, name them apart with commas (e.g. "
        f"'{', '.join(m.entry.name for m in names.values())}')"
    ]


def _compact(labels: np.ndarray) -> np.ndarray:
    """The smallest unsigned dtype that holds the ids (uint16 up to 65535 objects)."""
    return labels.astype(np.uint16) if labels.max(initial=0) < 2**16 else labels


def _without_specks(components: np.ndarray) -> np.ndarray:
    """Connected components of a one-region mask, those under ``SPECK_FRACTION`` of the largest set to 0."""
    areas = np.bincount(components.ravel())
    areas[0] = 0
    specks = np.flatnonzero(areas < SPECK_FRACTION * areas.max())
    return np.where(np.isin(components, specks[specks > 0]), 0, components)
