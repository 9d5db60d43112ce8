"""Segment what a text prompt names, by whichever route can answer it here.

Routes, tried in this order by ``route="auto"``, which takes only models whose weights are already on disk (bundled,
in the Hugging Face cache, in our cache, or given): it never downloads. Naming a route, a model (``grounder``,
``heatmapper``) or weights (a hub id) is what fetches a missing model:

0. **trained**: a text segmenter trained on the user's triplets (``promptseg train-text``), when one is given
   (``text_model``): its mask probability is thresholded (0.5) and split into objects. It reads the prompt as one
   sentence (trained prompts such as "one small polyp, located in top of the image" contain commas);
1. **groundingdino**: a text grounder (GroundingDINO through transformers or groundingdino-py) gives boxes per
   phrase; each box is decoded to a mask by the promptable segmenter (Grounded-SAM, Tell2Reg's prompting).
2. **clipseg**: a text heatmapper (CLIPSeg or a medvlsm-style fine-tuned checkpoint) gives a per-pixel
   probability; it is thresholded and, optionally, refined by the segmenter from boxes of its components.
3. **library**: offline, no vision-language weights: the prompt is matched to named exemplars of the user's
   reference library with the bundled sentence model and answered by one-shot SAT with the best exemplars.

The result says which route answered and why the earlier ones did not.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import ndimage

from ..errors import CancelledError, PromptsegError, WeightsError
from ..models.preprocessing import Normalization, as_channels_last, read_pyramid_level
from ..models.protocols import PromptableSegmenter, TextGrounder, TextHeatmapper, TextSegmenter
from .prompt_templates import PromptAttributes, expand_prompt

Route = Literal["auto", "trained", "groundingdino", "clipseg", "library"]
ROUTES: tuple[str, ...] = ("auto", "trained", "groundingdino", "clipseg", "library")
#: registry names tried, in order, when no model object is given
GROUNDER_MODELS: tuple[str, ...] = ("grounding_dino_tiny", "groundingdino_swint_ogc")
HEATMAPPER_MODELS: tuple[str, ...] = ("clipseg_rd64_refined",)

#: a piece of a one-region answer smaller than this fraction of its largest piece is not an object: thresholding the
#: decoder's upsampled low-resolution mask leaves specks of a few pixels beside the regions (GlaS: 1-54 px beside
#: glands of 3000-180 000 px)
SPECK_FRACTION = 0.01

#: progress(fraction_done, message)
ProgressCallback = Callable[[float, str], None]


@dataclass
class TextResult:
    """Instance labels for one image and what produced them."""

    labels: np.ndarray  # (H, W) uint16/uint32, 0 = background, one id per object
    route: str  # "trained" | "groundingdino" | "clipseg" | "library"
    reason: str  # which model/entry answered and why the earlier routes did not
    prompt: str  # what the user typed
    model_prompts: list[str]  # the expanded phrase(s) the model saw
    phrases: list[str] = field(default_factory=list)  # per label id - 1: the phrase that found it
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # per label id - 1, x0 y0 x1 y1
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # per label id - 1
    heatmap: np.ndarray | None = None  # CLIPSeg and trained routes: (H, W) probability (max over phrases)
    matches: list = field(default_factory=list)  # library route: the entries used, with their similarity
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    #: how many times coarser than ``labels`` the heatmap is: a pyramid is read at a level, and its labels come
    #: back at full resolution while the heatmap stays the level's (a slide's at full resolution: gigabytes)
    heatmap_factor: float = 1.0

    @property
    def heatmap_placement(self) -> dict:
        """``scale`` and ``translate`` that lay the heatmap over the labels' pixels in napari:
        ``viewer.add_image(result.heatmap, **result.heatmap_placement)``."""
        from ..tiling import level_placement

        return level_placement(self.heatmap_factor)

    def summary(self) -> dict:
        # the library entries by id: the reason names them by name, which several entries may share
        entries = [
            {"id": m.entry.id, "name": m.entry.name, "similarity": round(float(m.similarity), 4)} for m in self.matches
        ]
        return {
            "route": self.route,
            "reason": self.reason,
            **({"library_entries": entries} if entries else {}),
            "prompt": self.prompt,
            "model_prompts": self.model_prompts,
            "objects": int(len(self.phrases)),
            "phrases": self.phrases,
            "scores": [round(float(s), 4) for s in self.scores],
            "boxes": np.round(self.boxes, 1).tolist(),
            "warnings": self.warnings,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


def prompt_text(prompt: str | Sequence[str]) -> str:
    """A prompt as one text: a list of phrases (as :func:`~.registration.register` takes them) joined with ', '.
    Anything else is refused by name (a list, None or a number failed deep in a regular expression, "expected
    string or bytes-like object")."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, (list, tuple)) and all(isinstance(phrase, str) for phrase in prompt):
        return ", ".join(prompt)
    raise PromptsegError(
        f"the text prompt must be text, e.g. 'nuclei' (or 'gland, nuclei', ['gland', 'nuclei'] for two); got "
        f"{type(prompt).__name__} {prompt!r}"
    )


def split_phrases(prompt: str) -> list[str]:
    """'gland, nuclei. stroma' -> ['gland', 'nuclei', 'stroma'] (GroundingDINO separates phrases with '.')."""
    prompt = prompt_text(prompt)
    phrases = [" ".join(p.split()) for p in re.split(r"[.,;\n]+", prompt)]
    phrases = [p for p in phrases if p]
    if not phrases:
        raise PromptsegError("the text prompt is empty; type what to segment, e.g. 'nuclei' or 'gland'")
    return phrases


@dataclass
class TextRoute:
    """The model (or library) chosen to answer, and why."""

    route: str
    model: object  # TextGrounder | TextHeatmapper | ReferenceLibrary
    name: str
    skipped: list[str] = field(default_factory=list)  # why earlier routes were not taken, briefly
    details: list[str] = field(default_factory=list)  # the full messages (which file is missing, where to put it)

    def because(self, answer: str) -> str:
        return "; ".join([*self.skipped, answer])


def _try_load(
    kind: str,
    names: Sequence[str],
    weights: str | None,
    device: str,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
    download: bool = True,
) -> tuple[object, str, list[str]]:
    from ..models import download_progress, load_grounder, load_heatmapper

    loader = load_grounder if kind == "grounder" else load_heatmapper
    problems = []
    for model_name in names:
        downloads = download_progress(progress, cancel, model_name) if progress is not None else None
        try:
            model = loader(model_name, weights=weights, device=device, progress=downloads, download=download)
            return model, model_name, problems
        except (WeightsError, ImportError) as exc:
            problems.append(str(exc))
    return None, "", problems


def available_route(route: Route = "auto", text_model: object | None = None) -> str:
    """The route ``route`` would take, judged from which weights are in place (nothing is loaded): for "auto" a
    given trained model, else the first of GroundingDINO, CLIPSeg, library whose weights resolve locally. For the UI
    (which options apply)."""
    if route != "auto":
        return route
    if text_model:
        return "trained"
    from ..models import get_card
    from ..models.registry import UNUSABLE_WEIGHTS, weights_status

    for answer, names in (("groundingdino", GROUNDER_MODELS), ("clipseg", HEATMAPPER_MODELS)):
        if any(weights_status(get_card(name))[0] not in UNUSABLE_WEIGHTS for name in names):
            return answer
    return "library"


def choose_route(
    route: Route = "auto",
    *,
    grounder: TextGrounder | str | None = None,
    heatmapper: TextHeatmapper | str | None = None,
    library: object | None = None,
    weights: str | None = None,
    device: str = "auto",
    text_model: TextSegmenter | str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
) -> TextRoute:
    """Pick the route that can answer: a trained text model when given (``text_model``: a model directory or a
    loaded :class:`~..models.protocols.TextSegmenter`), a given model object, else registry models whose weights
    resolve, else the reference library (``library``: a :class:`~..io.library.ReferenceLibrary`, a path, or None
    for the default). ``route="auto"`` takes only weights already on disk: a user with the offline library alone is
    not sent a 690 MB GroundingDINO download they did not ask for; a named route, model or hub id downloads what is
    missing. A model's weights download tells ``progress`` and stops when ``cancel()`` says so."""
    if route not in ROUTES:
        raise PromptsegError(f"route must be one of {ROUTES}, got {route!r}")
    skipped: list[str] = []
    details: list[str] = []
    if weights is not None and not text_model:
        from ..models.text_segmenter import is_text_model, read_config

        # a model of train-text given as the text weights (--text-weights, "weights of the text model"): no
        # GroundingDINO or CLIPSeg loader reads it, and each said so at length
        if is_text_model(weights):
            if route in ("auto", "trained"):
                text_model = weights
            # a fine-tuned CLIPSeg loads on route clipseg too, on no other (route groundingdino tried it as one)
            elif not (route == "clipseg" and read_config(weights).get("kind") == "clipseg"):
                raise PromptsegError(
                    f"text weights {weights}: a text model trained with `promptseg train-text`, which route "
                    f"{route!r} does not load; give it as the text model (--text-model, route trained or auto)"
                )
    if route in ("auto", "trained") and text_model:
        if isinstance(text_model, (str, os.PathLike)):
            from ..models import load_text_segmenter

            model = load_text_segmenter(text_model, device=device)
            return TextRoute("trained", model, getattr(model, "name", Path(text_model).name))
        return TextRoute("trained", text_model, getattr(text_model, "name", "trained"))
    if route == "trained":
        raise PromptsegError(
            "route 'trained' needs a trained text model: give its directory (--text-model MODEL_DIR; train one "
            "with `promptseg train-text`)"
        )
    if route in ("auto", "groundingdino"):
        if grounder is not None and not isinstance(grounder, str):
            return TextRoute("groundingdino", grounder, getattr(grounder, "name", "grounder"))
        names = [grounder] if isinstance(grounder, str) else GROUNDER_MODELS
        # auto fetches nothing unless the user named the model or its weights
        download = route != "auto" or isinstance(grounder, str) or weights is not None
        model, model_name, problems = _try_load("grounder", names, weights, device, progress, cancel, download)
        if model is not None:
            return TextRoute("groundingdino", model, model_name)
        if route == "groundingdino":
            raise WeightsError("no GroundingDINO weights (route groundingdino)", details="; ".join(problems))
        if isinstance(grounder, str):  # a model the user named is not passed over for another route
            raise WeightsError(f"grounder {grounder!r}: {problems[0]}", details="; ".join(problems))
        skipped.append("no GroundingDINO weights")
        details.extend(problems)
    if route in ("auto", "clipseg"):
        if heatmapper is not None and not isinstance(heatmapper, str):
            return TextRoute("clipseg", heatmapper, getattr(heatmapper, "name", "heatmapper"), skipped, details)
        names = [heatmapper] if isinstance(heatmapper, str) else HEATMAPPER_MODELS
        download = route != "auto" or isinstance(heatmapper, str) or weights is not None
        model, model_name, problems = _try_load("heatmapper", names, weights, device, progress, cancel, download)
        if model is not None:
            return TextRoute("clipseg", model, model_name, skipped, details)
        if route == "clipseg":
            raise WeightsError("no CLIPSeg weights (route clipseg)", details="; ".join(problems))
        if isinstance(heatmapper, str):
            raise WeightsError(f"heatmapper {heatmapper!r}: {problems[0]}", details="; ".join(problems))
        skipped.append("no CLIPSeg weights")
        details.extend(problems)
    if route == "auto" and weights is not None:  # weights the user gave that no route loads (a typo, a wrong folder)
        raise WeightsError(
            f"text weights {weights}: neither GroundingDINO nor CLIPSeg loads them ({details[0] if details else ''})",
            details="; ".join(details),
        )
    from ..io.starter import open_library

    lib = open_library(library)  # the default library gets the starter exemplars (nuclei) on first use
    if not lib.entries:
        where = "; ".join(skipped) + ", and " if skipped else ""
        raise PromptsegError(
            f"{where}the reference library has no entries",
            details=f"library: {lib.path}. Save a named exemplar from the One-shot widget ('Save reference to "
            "library…'), or the Text prompt widget's 'Add exemplar', or run `promptseg library add NAME --image IMG "
            "--mask MASK` (`promptseg library starter` adds the bundled nuclei exemplar); or put GroundingDINO/CLIPSeg "
            "weights in place (`promptseg models` lists where), or choose route groundingdino or clipseg to download "
            "them (route auto downloads nothing)",
        )
    return TextRoute("library", lib, str(lib.path), skipped, details)


def segment_text(
    image: np.ndarray,
    prompt: str | Sequence[str],
    *,
    route: Route | TextRoute = "auto",
    grounder: TextGrounder | str | None = None,
    heatmapper: TextHeatmapper | str | None = None,
    library: object | None = None,
    segmenter: PromptableSegmenter | None = None,
    weights: str | None = None,
    device: str = "auto",
    template: str = "p1",
    attributes: PromptAttributes | None = None,
    box_threshold: float = 0.35,
    text_threshold: float = 0.25,
    nms_iou: float = 0.5,
    heatmap_threshold: float = 0.5,
    refine: bool = True,
    top_k: int = 3,
    min_similarity: float | None = None,
    channel_axis: int | None = None,
    channels: list[int] | None = None,
    normalize: Normalization = "auto",
    name: str = "image",
    text_model: TextSegmenter | str | os.PathLike | None = None,
    factor: float = 1.0,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
) -> TextResult:
    """Instance labels of what ``prompt`` names in ``image`` ("nuclei"; "gland, stroma" or ["gland", "stroma"] for
    two).

    ``route``: "auto" takes the trained ``text_model`` when given, else the first that can answer of
    GroundingDINO, CLIPSeg (whose weights are on disk: auto downloads nothing), the reference library (or pass a
    :class:`TextRoute` from :func:`choose_route` to reuse loaded models over many images). ``template``: medvlsm
    prompt level p0-p9 (:func:`~.prompt_templates.expand_prompt`) applied to each phrase for the vision-language
    models. ``refine``: decode CLIPSeg components with the segmenter (default LiteMedSAM) instead of thresholding
    alone. The library route uses ``top_k`` matching exemplars above ``min_similarity`` (see
    :func:`~.library.match_library`). ``factor``: ``image`` is a pyramid level that many times coarser than full
    resolution (the pixels library exemplars are saved at): the objects of an instances entry are sought that much
    smaller, as the one-shot CLI does on a level. A pyramid (a multiscale layer's data) is read at its coarsest level
    with 1024 px along its longest side, as the CLI reads an OME-Zarr: the labels and boxes come back in
    full-resolution pixels, the heatmap stays at that level's (``heatmap_factor``, ``heatmap_placement``).
    """
    if not 0 <= box_threshold <= 1 or not 0 <= text_threshold <= 1 or not 0 <= heatmap_threshold <= 1:
        raise PromptsegError("box, text and heatmap thresholds must lie in [0, 1]")
    from .library import check_library_settings

    check_library_settings(top_k, min_similarity)  # as the thresholds: before any model loads
    report = progress or (lambda fraction, message: None)
    prompt = prompt_text(prompt)
    phrases = split_phrases(prompt)  # bad input is refused before any model loads
    from ..io.multiscale import whole_image_scale

    level = read_pyramid_level(image, whole_image_scale, channel_axis)
    if level is not None:  # the CLI's whole-image level; labels and boxes come back in full-resolution pixels
        image, factor = level.array, factor * level.factor
    hwc = as_channels_last(image, channel_axis=channel_axis, channels=channels, name=name)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    report(0.0, "choosing the text route")
    if isinstance(route, TextRoute):
        chosen = route
    else:
        chosen = choose_route(
            route,
            grounder=grounder,
            heatmapper=heatmapper,
            library=library,
            weights=weights,
            device=device,
            text_model=text_model,
            progress=progress,
            cancel=cancel,
        )
    timings["load_s"] = time.perf_counter() - t0
    if cancel is not None and cancel():
        raise CancelledError("cancelled")
    needs_segmenter = chosen.route in ("groundingdino", "library") or (chosen.route == "clipseg" and refine)
    if segmenter is None and needs_segmenter:
        from ..models import load_segmenter

        segmenter = load_segmenter(device=device)
    if chosen.route == "trained":
        phrases = [" ".join(prompt.split())]  # one sentence: trained prompts carry commas
    request = _Request(
        hwc=hwc,
        prompt=prompt,
        phrases=phrases,
        model_prompts=[expand_prompt(p, template, attributes) for p in phrases],
        chosen=chosen,
        segmenter=segmenter if needs_segmenter else None,
        normalize=normalize,
        report=report,
        cancel=cancel,
        factor=float(factor),
        name=name,
    )
    cut_warnings = prompt_cut_warnings(chosen, prompt, template=template, attributes=attributes, once_per_process=True)
    t0 = time.perf_counter()
    if chosen.route == "groundingdino":
        result = _grounding_route(request, box_threshold, text_threshold, nms_iou)
    elif chosen.route in ("clipseg", "trained"):
        result = _heatmap_route(request, heatmap_threshold)
    else:
        result = _library_route(request, top_k, min_similarity)
    timings["segment_s"] = time.perf_counter() - t0
    result.timings = timings
    result.warnings[:0] = cut_warnings
    if not result.phrases:
        result.warnings.append(f"{name}: nothing found for {prompt!r} ({result.reason})")
    report(1.0, "done")
    if level is not None:
        result.labels = level.labels_to_full(result.labels)
        result.boxes = level.to_full(result.boxes)
        result.heatmap_factor = level.factor
    return result


def prompt_cut_warnings(
    route: TextRoute,
    prompt: str | Sequence[str],
    *,
    template: str = "p1",
    attributes: PromptAttributes | None = None,
    once_per_process: bool = False,
) -> list[str]:
    """A warning per text :func:`segment_text` gives the route's text encoder for ``prompt`` that is longer than it
    reads (cut without a word): CLIPSeg's CLIP 77 tokens of each phrase, GroundingDINO's BERT 256 of the caption of
    them all, the sentence model of the library or a trained fusion model 256 of each. ``once_per_process``: only
    texts not yet checked with this model in this process (segment_text's: a loop's first image says it)."""
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
        from ..models import load_text_embedder

        try:  # loaded once per process; rank_library matches exact names without it
            model = load_text_embedder()
        except (WeightsError, ImportError):
            return []
    from ..models.tokens import cut_warnings

    what = {"library": "the sentence model", "trained": "the trained text model", "groundingdino": "GroundingDINO"}
    name = f"{what.get(route.route, 'CLIPSeg')} ({getattr(model, 'name', route.name)})"
    return cut_warnings(model, name, texts, once_per_process=once_per_process)


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
    from .grounded import boxes_to_instances

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
    from .heatmap import heatmap_to_instances

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


def _library_route(req: _Request, top_k: int, min_similarity: float | None) -> TextResult:
    from .library import (
        DEFAULT_MIN_SIMILARITY,
        _as_library,
        no_match_message,
        rank_library,
        segment_with_library,
        select_matches,
    )

    # every phrase is matched (milliseconds) before any is segmented (seconds each): a phrase the library cannot
    # answer fails the prompt before the work on the others is done and thrown away
    floor = DEFAULT_MIN_SIMILARITY if min_similarity is None else min_similarity
    library = _as_library(req.chosen.model)
    chosen = []
    for phrase in req.phrases:
        ranked = rank_library(phrase, library)
        selected = select_matches(ranked, top_k=top_k, min_similarity=floor)
        if not selected:
            # auto answered from the library because no vision-language model is on disk: one may be fetched
            hint = "; ".join(req.chosen.skipped)
            hint = hint and f"{hint} here: route groundingdino or clipseg downloads one (route auto downloads nothing)"
            raise PromptsegError(no_match_message(phrase, library, ranked, floor), details=hint)
        chosen.append(selected)
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
        # one-shot SAT answers with one mask: its connected components become the objects; an entry saved with
        # "many instances" answers with instance labels already
        components = answer.labels if answer.labels.max() > 1 else _without_specks(ndimage.label(answer.mask)[0])
        similarity = max((m.similarity for m in answer.matches), default=0.0)
        for sl_index, sl in enumerate(ndimage.find_objects(components), start=1):
            if sl is None:
                continue
            free = (components == sl_index) & (labels == 0)
            if not free.any():
                continue
            labels[free] = len(found_phrases) + 1
            found_phrases.append(phrase)
            boxes.append([sl[1].start, sl[0].start, sl[1].stop - 1, sl[0].stop - 1])
            scores.append(similarity)
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


def _compact(labels: np.ndarray) -> np.ndarray:
    """The smallest unsigned dtype that holds the ids (uint16 up to 65535 objects)."""
    return labels.astype(np.uint16) if labels.max(initial=0) < 2**16 else labels


def _without_specks(components: np.ndarray) -> np.ndarray:
    """Connected components of a one-region mask, those under ``SPECK_FRACTION`` of the largest set to 0."""
    areas = np.bincount(components.ravel())
    areas[0] = 0
    specks = np.flatnonzero(areas < SPECK_FRACTION * areas.max())
    return np.where(np.isin(components, specks[specks > 0]), 0, components)
