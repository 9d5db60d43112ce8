"""Tell2Reg-style registration from corresponding regions, and an intensity (SimpleITK) baseline/refinement.

Pipeline of :func:`register` with ``method="prompts"`` (see :mod:`.regions` for the region pairs):

1. region pairs from the same prompts (default, offline: automatic LiteMedSAM regions from a grid of box prompts,
   matched greedily by prototype cosine similarity >= 0.8 as in Tell2Reg; the whole-image box gives a "global"
   pair; then the fixed regions' boxes, mapped through the global-pair affine, prompt the moving image again and
   are kept when their prototypes agree; or text prompts / one-shot references on both images, whose objects pair
   within their phrase, :mod:`.prompt_regions`);
2. affine: candidate starts (all pair centroids by least squares, each of the largest pairs alone, identity, and
   the similarity from the second moments of the two largest pairs), each refined briefly by maximising the Dice of
   the warped moving masks with their fixed partners; the candidate whose transform aligns the *images* best
   (:func:`alignment_score`, normalised mutual information on the fixed grid; region-pair Dice only breaks ties)
   wins, and is refined on the pairs it aligns (Dice >= ``inlier_dice``), coarse to fine (torch, Adam); implausible
   candidates (reflection, rotation > ``max_rotation_deg``, scale > ``max_scale``) lose. Symmetric regions (a round
   section, an elliptic lesion) fit wrong transforms with a high Dice: the image content does not;
3. a dense residual displacement field, coarse to fine (64 -> 128 -> 256 px mask grids, control points every 6 px
   upsampled bicubically), minimising 1 - weighted mean Dice over the inlier pairs + ``smoothness`` x bending
   energy. Dice is computed on the overlap of the two fields of view only. Kept only if the image score does not
   drop.

Choices where the paper is silent or differs (Tell2Reg optimises a full-resolution field from identity for 10^4 Adam
steps on one global Dice): the affine stage and its multi-start, the box transfer, the multi-resolution control
grid, a few hundred steps in total, Dice averaged per pair (weighted by similarity x sqrt(area)), the consistency
filters on the pairs, and the image similarity as the judge of starts.

``method="intensity"`` is the SimpleITK baseline (Mattes mutual information on grayscale, affine from the image
moments, then B-spline). ``"prompts+intensity"`` (the default) gives the SimpleITK affine stage several starts — the
baseline's own (moments), the region transform and its affine part — keeps the one whose result has the best
:func:`alignment_score` and runs the B-spline stage on it: it can only differ from the baseline where a region start
aligns the images better (no landmarks are looked at). Then a joint refinement (:func:`joint_refine`, our addition):
a residual free-form deformation at finer resolution (256 -> 512 px, control points every 16 px) minimising the local
(9 px window) squared NCC of the gray images, suited to two stains whose intensities relate only locally, + 0.2 x
(1 - region-pair Dice) + bending energy; it is kept only if :func:`alignment_score` improves, the rule that judges
the starts. The SimpleITK stages run single-threaded with a fixed seed, so a call repeats exactly. A stage whose
result is degenerate (:func:`~.warp.degenerate_reason`: non-finite, folding, mostly outside the moving image) is
rejected in favour of the stage before it, with the reason in ``RegistrationResult.stages`` and its warnings.

Coordinates, the displacement convention and point mapping are described in :mod:`.warp`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CancelledError, PromptsegError, WeightsError
from ..models.preprocessing import as_channels_last
from ..models.protocols import PromptableSegmenter
from .prompt_regions import OneShotRegions, TextRegions
from .regions import (
    GLOBAL_PROMPT,
    AutomaticRegions,
    PairingOptions,
    PairingReport,
    Region,
    RegionPair,
    as_region_list,
    attach_prototypes,
    consistent_pairs,
    pair_regions,
    similar_size,
    transfer_regions,
)
from .text import TextRoute, choose_route
from .warp import Deformation, apply_affine_norm, degenerate_reason, fit_affine_lstsq, norm_grid

#: progress(fraction_done, message)
ProgressCallback = Callable[[float, str], None]
METHODS = ("prompts", "prompts+intensity", "intensity")
#: the route that measures best on the BIRL pairs (benchmarks/results/bench_registration.md); Python, CLI and widget
DEFAULT_METHOD = "prompts+intensity"


@dataclass
class RegistrationOptions(PairingOptions):
    """Pairing (inherited from :class:`~.regions.PairingOptions`), transform from pairs, intensity stages."""

    # transform from pairs
    affine_iterations: tuple[int, ...] = (40, 30, 20)
    field_levels: tuple[int, ...] = (64, 128, 256)
    field_iterations: tuple[int, ...] = (50, 40, 30)
    control_spacing: int = 6
    #: pairs with Dice below this under a candidate start are outliers (RANSAC-like start selection)
    inlier_dice: float = 0.8
    max_start_candidates: int = 8
    #: prior on the affine: larger rotations/scalings are not considered (raise for strongly rotated sections)
    max_rotation_deg: float = 45.0
    max_scale: float = 2.0
    smoothness: float = 0.1
    learning_rate: float = 0.01
    dense: bool = True
    # intensity baseline / refinement
    intensity_max_side: int = 384
    intensity_affine: bool = True
    intensity_bspline: bool = True
    bspline_mesh: int = 6
    intensity_iterations: int = 60
    seed: int = 0
    # joint refinement ("prompts+intensity"): local NCC of the gray images + region-pair Dice + bending energy
    joint_refinement: bool = True
    refine_levels: tuple[int, ...] = (256, 512)
    refine_iterations: tuple[int, ...] = (40, 20)
    #: control-point spacing in pixels of each level's grid (16 px at 512 = 32 px at 1024)
    refine_spacing: int = 16
    #: local NCC window radius in pixels of each level's grid
    refine_window: int = 4
    refine_dice: float = 0.2
    refine_smoothness: float = 0.05
    refine_learning_rate: float = 0.001


@dataclass
class RegistrationResult:
    """Transform fixed -> moving plus what was used to find it. ``displacement`` is (H, W, 2) (dx, dy) pixels."""

    deformation: Deformation
    method: str
    pairs: list[RegionPair] = field(default_factory=list)
    pair_dice_before: list[float] = field(default_factory=list)
    pair_dice_after: list[float] = field(default_factory=list)
    pairing: PairingReport | None = None
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: which start won (``"moments"``: the intensity baseline's; ``"regions"``...) and every start's NMI score
    start: str = ""
    start_scores: dict[str, float] = field(default_factory=dict)
    #: text prompts: the route that answered ("groundingdino" | "clipseg" | "library", "" without text) and why
    text_route: str = ""
    text_reason: str = ""
    #: one record per region source: prompt, regions per image, route and reasons (see :func:`region_pairs`)
    prompt_sources: list[dict] = field(default_factory=list)
    #: the joint refinement of "prompts+intensity": ``accepted`` and the image score (NMI) before and after
    refinement: dict[str, Any] = field(default_factory=dict)
    #: every stage that can be rejected, in order: ``{"stage", "accepted", "reason", "degenerate"}``; a degenerate
    #: stage (non-finite, folding, mostly outside the moving image; :func:`~.warp.degenerate_reason`) gives way to
    #: the stage before it
    stages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def displacement(self) -> np.ndarray:
        return self.deformation.displacement()

    def warp_image(self, moving: np.ndarray, *, order: int = 1) -> np.ndarray:
        return self.deformation.warp_image(moving, order=order)

    def warp_labels(self, labels: np.ndarray) -> np.ndarray:
        return self.deformation.warp_labels(labels)

    def moving_points_to_fixed(self, moving_xy: np.ndarray) -> np.ndarray:
        return self.deformation.points_to_fixed(moving_xy)

    def fixed_points_to_moving(self, fixed_xy: np.ndarray) -> np.ndarray:
        return self.deformation.points_to_moving(fixed_xy)


# -- public entry point -------------------------------------------------------------------------------------------
def register(
    fixed: np.ndarray,
    moving: np.ndarray,
    prompts: object = None,
    *,
    segmenter: PromptableSegmenter | None = None,
    method: str = DEFAULT_METHOD,
    options: RegistrationOptions | None = None,
    channel_axis: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
    fixed_name: str = "fixed",
    moving_name: str = "moving",
    text_route: str | TextRoute = "auto",
    library: object | None = None,
    text_options: Mapping[str, Any] | None = None,
) -> RegistrationResult:
    """Register ``moving`` onto ``fixed`` (2D, gray or RGB/multichannel; the sizes may differ).

    ``prompts`` selects the region source for the prompt-based methods:

    * ``None`` or ``"auto"``: automatic regions (grid of box prompts) matched by embedding similarity (offline);
    * a text prompt (``"gland"``; ``"gland, nuclei"`` is two phrases) or a list of them: each prompt is answered on
      both images by :func:`~.text.segment_text` through one route chosen once (``text_route``: "auto",
      "groundingdino", "clipseg", "library", or a :class:`~.text.TextRoute`; ``library``: the reference library for
      the offline route; ``text_options``: more :func:`~.text.segment_text` arguments such as ``box_threshold``);
      its objects pair only with objects of the same phrase (see :class:`~.prompt_regions.TextRegions`);
    * a callable ``image -> regions`` (:class:`~.regions.RegionSource`; masks or :class:`~.regions.Region` with a
      ``prompt`` name, e.g. :class:`~.prompt_regions.OneShotRegions` for a labelled reference image), or a list of
      them, text prompts and callables mixed; regions only pair with regions of the same prompt;
    * a list of :class:`~.regions.RegionPair` or of ``(fixed_mask, moving_mask)`` tuples: pairs given directly.

    ``segmenter`` defaults to :func:`napari_promptseg.models.load_segmenter()` when one is needed.
    """
    opts = options or RegistrationOptions()
    if method not in METHODS:
        raise PromptsegError(f"method must be one of {METHODS}, got {method!r}")
    report = progress or (lambda fraction, message: None)

    def check_cancel() -> None:
        if cancel is not None and cancel():
            raise CancelledError("registration cancelled")

    fixed_hwc, moving_hwc = check_pair(fixed, moving, channel_axis, fixed_name, moving_name)
    fixed_shape, moving_shape = fixed_hwc.shape[:2], moving_hwc.shape[:2]
    timings: dict[str, float] = {}
    warnings: list[str] = []
    stages: list[dict[str, Any]] = []
    t0 = time.perf_counter()

    images = IntensityImages.from_images(fixed_hwc, moving_hwc, opts.intensity_max_side)
    if method == "intensity":
        report(0.1, "intensity registration (SimpleITK)")
        deformation, start, scores = intensity_route(images, opts, {"moments": None}, check_cancel, stages)
        timings["intensity"] = time.perf_counter() - t0
        return RegistrationResult(
            deformation,
            method,
            timings=timings,
            warnings=_stage_warnings(stages),
            start=start,
            start_scores=scores,
            stages=stages,
        )

    report(0.0, "finding region pairs")
    if cancel is not None and is_text_prompts(prompts):  # the text routes stop inside long segmentations too
        text_options = {"cancel": cancel, **(text_options or {})}
    pairing = PairingReport()
    sources: list[dict] = []
    pairs = region_pairs(
        fixed_hwc,
        moving_hwc,
        prompts,
        segmenter=segmenter,
        options=opts,
        report=pairing,
        check_cancel=check_cancel,
        images=images,
        text_route=text_route,
        library=library,
        text_options=text_options,
        sources_report=sources,
    )
    timings["regions"] = time.perf_counter() - t0
    text = [s for s in sources if s["kind"] == "text"]
    route_info = {
        "text_route": text[0]["route"] if text else "",
        "text_reason": text[0].get("reason_fixed", "") if text else "",
        "prompt_sources": sources,
    }
    warnings.extend(pairing.notes)
    if not pairs:
        raise PromptsegError(
            f"no region pairs between {fixed_name} and {moving_name}: {pairing.fixed_regions} fixed and "
            f"{pairing.moving_regions} moving regions, {pairing.matched} matched above similarity "
            f"{opts.similarity_threshold}; lower the similarity threshold or give prompts"
        )
    if len(pairs) < 3:
        warnings.append(f"only {len(pairs)} region pair(s): the start is a translation/similarity, not an affine")
    report(0.4, f"{len(pairs)} region pairs; fitting the transform")
    check_cancel()

    t1 = time.perf_counter()
    deformation, dice_before, dice_after = fit_pairs(
        pairs, fixed_shape, moving_shape, options=opts, check_cancel=check_cancel, progress=report, images=images
    )
    timings["transform"] = time.perf_counter() - t1
    if deformation.residual is not None:  # the dense field on top of the region affine
        affine_part = Deformation(fixed_shape, moving_shape, deformation.affine, None)
        reason = degenerate_reason(deformation, affine_part)
        stages.append(_stage("region field", reason))
        if reason is not None:
            deformation = affine_part
            dice_after = pair_dice(pairs, deformation)
    start, scores = "regions", {"regions": images.score(deformation)}
    refinement: dict[str, Any] = {}
    if method == "prompts+intensity":
        report(0.85, "intensity refinement (SimpleITK) of the region start and of the baseline start")
        t2 = time.perf_counter()
        # several starts, each refined by intensity, the best by image similarity (no landmarks): the baseline's own
        # start competes, so the region route can only win where it aligns the images better
        starts: dict[str, Deformation | None] = {"moments": None, "regions": deformation}
        if deformation.residual is not None:
            starts["regions (affine)"] = Deformation(fixed_shape, moving_shape, deformation.affine, None)
        deformation, start, scores = intensity_route(images, opts, starts, check_cancel, stages)
        timings["intensity"] = time.perf_counter() - t2
        if opts.joint_refinement:
            report(0.93, "joint refinement (local NCC + region Dice)")
            t3 = time.perf_counter()
            refined = joint_refine(fixed_hwc, moving_hwc, deformation, pairs, opts, check_cancel)
            # kept only if not degenerate and the images agree better by the same judge as the starts (NMI; no
            # landmarks)
            before, after = images.score(deformation), images.score(refined)
            degenerate = degenerate_reason(refined, deformation)
            reason = degenerate or (None if after > before else f"no better by NMI ({after:.4f} <= {before:.4f})")
            refinement = {"accepted": reason is None, "score_before": before, "score_after": after, "reason": reason}
            stages.append(_stage("joint refinement", reason, degenerate=degenerate is not None))
            if reason is None:
                deformation = refined
            timings["refinement"] = time.perf_counter() - t3
        dice_after = pair_dice(pairs, deformation)
    report(1.0, "done")
    warnings.extend(_stage_warnings(stages))
    return RegistrationResult(
        deformation=deformation,
        method=method,
        pairs=pairs,
        pair_dice_before=dice_before,
        pair_dice_after=dice_after,
        pairing=pairing,
        timings=timings,
        warnings=warnings,
        start=start,
        start_scores=scores,
        refinement=refinement,
        stages=stages,
        **route_info,
    )


def _stage(name: str, reason: str | None, *, degenerate: bool | None = None) -> dict[str, Any]:
    """A record of ``RegistrationResult.stages``; ``reason`` None = accepted; by default a reason means degenerate."""
    return {
        "stage": name,
        "accepted": reason is None,
        "reason": reason,
        "degenerate": reason is not None if degenerate is None else degenerate,
    }


def _stage_warnings(stages: Sequence[dict[str, Any]]) -> list[str]:
    return [
        f"{s['stage']} stage rejected as degenerate ({s['reason']}); the previous stage's result is kept"
        for s in stages
        if s["degenerate"]
    ]


def check_pair(
    fixed: np.ndarray, moving: np.ndarray, channel_axis: int | None, fixed_name: str, moving_name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Both images must be single 2D planes (gray, RGB or multichannel with ``channel_axis``)."""
    f, m = np.asarray(fixed), np.asarray(moving)

    def is_plane(a: np.ndarray) -> bool:
        return a.ndim == 2 or (a.ndim == 3 and (channel_axis is not None or a.shape[-1] in (1, 3, 4)))

    if not (is_plane(f) and is_plane(m)):
        raise PromptsegError(
            f"{fixed_name} has shape {f.shape} ({f.ndim}D) and {moving_name} has shape {m.shape} ({m.ndim}D): "
            "registration needs two 2D images (gray, RGB, or multichannel with channel_axis); "
            "pick one plane of a stack first"
        )
    return (
        as_channels_last(f, channel_axis=channel_axis if f.ndim == 3 else None, name=fixed_name),
        as_channels_last(m, channel_axis=channel_axis if m.ndim == 3 else None, name=moving_name),
    )


# -- region pairs -------------------------------------------------------------------------------------------------
def region_pairs(
    fixed: np.ndarray,
    moving: np.ndarray,
    prompts: object = None,
    *,
    segmenter: PromptableSegmenter | None = None,
    options: RegistrationOptions | None = None,
    report: PairingReport | None = None,
    check_cancel: Callable[[], None] = lambda: None,
    images: IntensityImages | None = None,
    text_route: str | TextRoute = "auto",
    library: object | None = None,
    text_options: Mapping[str, Any] | None = None,
    sources_report: list[dict] | None = None,
) -> list[RegionPair]:
    """Corresponding regions of the two images from ``prompts`` (see :func:`register`); ``images`` lets the
    image similarity pick the first estimate that the automatic route's box transfer relies on. ``sources_report``
    (a list) receives one record per region source: its prompt, regions found per image, and for text prompts the
    route that answered and why."""
    opts = options or RegistrationOptions()
    report = report if report is not None else PairingReport()
    if isinstance(prompts, Sequence) and not isinstance(prompts, str) and len(prompts) == 0:
        raise PromptsegError("prompts: empty list of regions/region sources")
    if is_text_prompts(prompts):
        prompts = text_sources(prompts, segmenter, text_route=text_route, library=library, text_options=text_options)
        if segmenter is None:  # the one text_sources loaded, for the prototypes
            segmenter = next(p.segmenter for p in prompts if isinstance(p, TextRegions))
    if isinstance(prompts, Sequence) and not isinstance(prompts, str) and not callable(prompts[0]):
        return _given_pairs(prompts)
    automatic = prompts is None or prompts == "auto"
    if segmenter is None and automatic:
        from ..models import load_segmenter

        segmenter = load_segmenter()
    if automatic:
        fixed_emb = segmenter.embed(fixed)
        check_cancel()
        moving_emb = segmenter.embed(moving)
        check_cancel()
        source = AutomaticRegions(segmenter)
        fixed_regions = source(fixed, embedding=fixed_emb)
        check_cancel()
        moving_regions = source(moving, embedding=moving_emb)
    else:
        sources = list(prompts) if isinstance(prompts, Sequence) else [prompts]
        fixed_regions, moving_regions = [], []
        empty: list[str] = []  # per source that found nothing in one image: what it was and where
        for k, src in enumerate(sources):
            if not callable(src):
                raise PromptsegError(f"prompts[{k}]: expected a callable image -> masks, got {type(src).__name__}")
            record = _source_record(src)
            found: list[list[Region]] = []
            for image, name in ((fixed, "fixed"), (moving, "moving")):
                named = isinstance(src, (TextRegions, OneShotRegions))
                out = src(image, name=f"{name} image") if named else src(image)
                regions = as_region_list(out, f"prompts[{k}] on the {name} image")
                record[f"{name}_regions"] = len(regions)
                if isinstance(src, TextRegions) and src.results:
                    answer = src.results[-1]
                    record[f"reason_{name}"] = answer.reason
                    # objects per phrase: what the prompt found in this image (regions pair only within a phrase)
                    phrases = [phrase or src.prompt for phrase in answer.phrases]
                    record[f"objects_{name}"] = {ph: phrases.count(ph) for ph in dict.fromkeys(phrases)}
                check_cancel()
                if not regions:  # nothing to pair with: the other image need not be searched
                    empty.append(_nothing_found(src, name, record.get(f"reason_{name}")))
                    break
                found.append(regions)
            if sources_report is not None:
                sources_report.append(record)
            if len(found) < 2:
                continue
            for bucket, regions in zip((fixed_regions, moving_regions), found, strict=True):
                for r in regions:
                    r.prompt = f"{k}:{r.prompt}" if len(sources) > 1 and r.prompt is not None else r.prompt
                bucket.extend(regions)
        if empty and fixed_regions and moving_regions:  # other prompts still give regions: say which did not
            report.notes.extend(f"empty region set: {e}" for e in empty)
        elif empty:
            report.fixed_regions, report.moving_regions = len(fixed_regions), len(moving_regions)
            raise PromptsegError("empty region set: " + "; ".join(empty))
    if not fixed_regions or not moving_regions:
        report.fixed_regions, report.moving_regions = len(fixed_regions), len(moving_regions)
        side = "fixed" if not fixed_regions else "moving"
        raise PromptsegError(f"empty region set: the region source found no region in the {side} image")
    if not automatic:  # embeddings only for the prototypes, once the sources have found regions
        if segmenter is None:
            from ..models import load_segmenter

            segmenter = load_segmenter()
        fixed_emb = segmenter.embed(fixed)
        check_cancel()
        moving_emb = segmenter.embed(moving)
        check_cancel()
    attach_prototypes(fixed_regions, fixed_emb)
    attach_prototypes(moving_regions, moving_emb)
    pairs = pair_regions(fixed_regions, moving_regions, options=opts, report=report)
    if not (automatic and opts.transfer_prompts and pairs):
        return pairs
    check_cancel()
    # Our addition to Tell2Reg, because similarity-matched local regions of two stains are often wrong: the global
    # (whole-image box) pair gives a first affine; matched local pairs must agree with it; then the fixed regions'
    # boxes, mapped through it, prompt the moving image ("the same prompt on both images"), so that local regions
    # correspond by construction, and are kept when their prototypes agree.
    global_pairs = [p for p in pairs if p.prompt == GLOBAL_PROMPT]
    start = fit_pairs(
        global_pairs or pairs, fixed.shape[:2], moving.shape[:2], options=opts, dense=False, images=images
    )[0]
    fh, fw = fixed.shape[:2]
    mh, mw = moving.shape[:2]
    tolerance_px = opts.local_tolerance * np.hypot(mh, mw)

    def agrees(pair: RegionPair) -> bool:
        fc = (pair.fixed.centroid_norm() + 1) / 2 * [fw, fh] - 0.5
        mc = (pair.moving.centroid_norm() + 1) / 2 * [mw, mh] - 0.5
        return float(np.linalg.norm(start.points_to_moving(fc[None])[0] - mc)) < tolerance_px

    matched_local = [p for p in pairs if p.prompt != GLOBAL_PROMPT and agrees(p)]
    report.dropped_inconsistent += sum(1 for p in pairs if p.prompt != GLOBAL_PROMPT) - len(matched_local)
    local = [r for r in fixed_regions if r.prompt != GLOBAL_PROMPT]
    if not local:
        return global_pairs + matched_local
    moved = transfer_regions(segmenter, local, moving_emb, lambda frac: start.points_to_moving(frac * [fw, fh] - 0.5))
    attach_prototypes(moved, moving_emb)
    transferred = [
        RegionPair(f, m, float(f.prototype @ m.prototype)) for f, m in zip(local, moved, strict=True) if m.mask.any()
    ]
    transferred = [
        p
        for p in transferred
        if p.similarity >= opts.similarity_threshold and similar_size(p, opts.max_area_ratio) and agrees(p)
    ]
    report.transferred = len(local)
    report.transferred_kept = len(transferred)
    # one pair per fixed region: the more similar of the matched and the transferred one
    best: dict[int, RegionPair] = {}
    for p in matched_local + transferred:
        key = id(p.fixed)
        if key not in best or p.similarity > best[key].similarity:
            best[key] = p
    return global_pairs + consistent_pairs(list(best.values()), opts.consistency_tolerance)


def is_text_prompts(prompts: object) -> bool:
    """A text prompt other than "auto", or a list holding at least one string."""
    if isinstance(prompts, str):
        return prompts != "auto"
    return isinstance(prompts, Sequence) and any(isinstance(p, str) for p in prompts)


def text_sources(
    prompts: object,
    segmenter: PromptableSegmenter | None,
    *,
    text_route: str | TextRoute = "auto",
    library: object | None = None,
    text_options: Mapping[str, Any] | None = None,
) -> object:
    """Text prompts -> one :class:`~.prompt_regions.TextRegions` per prompt, all answered by one route chosen once
    (:func:`~.text.choose_route`); callables in a mixed list stay as they are; other ``prompts`` pass unchanged."""
    if not is_text_prompts(prompts):
        return prompts
    items = [prompts] if isinstance(prompts, str) else list(prompts)
    texts = [p for p in items if isinstance(p, str)]
    for k, item in enumerate(items):
        if isinstance(item, str) and (item == "auto" or not item.strip()):
            raise PromptsegError(
                f"prompts[{k}]: {item!r} in a list of text prompts; automatic regions are prompts=None or 'auto' "
                "alone, and a text prompt names what to find (e.g. 'gland')"
            )
        if not isinstance(item, str) and not callable(item):
            raise PromptsegError(
                f"prompts[{k}]: text prompts mix only with region sources (callables image -> masks), not with "
                f"{type(item).__name__}"
            )
    options = dict(text_options or {})
    route = text_route
    if not isinstance(route, TextRoute):
        keys = ("grounder", "heatmapper", "weights", "device")
        try:
            route = choose_route(route, library=library, **{k: options.pop(k) for k in keys if k in options})
        except (PromptsegError, WeightsError) as exc:
            # the route chooser's own message (which weights are missing, how to fill the library), for these prompts
            prompts_text = ", ".join(map(repr, texts))
            raise type(exc)(f"text prompt {prompts_text}: {exc.message}", details=exc.details) from exc
    if segmenter is None:  # after the route: a prompt nothing can answer fails before the model loads
        from ..models import load_segmenter

        segmenter = load_segmenter()
    options.setdefault("channel_axis", -1)  # registration hands over channels-last images
    return [TextRegions(p, route, segmenter, **options) if isinstance(p, str) else p for p in items]


def _source_record(src: object) -> dict:
    if isinstance(src, TextRegions):
        route = src.route if isinstance(src.route, TextRoute) else None
        return {
            "kind": "text",
            "prompt": src.prompt,
            "route": route.route if route else str(src.route),
            "text_model": route.name if route else None,
        }
    if isinstance(src, OneShotRegions):
        return {"kind": "oneshot", "prompt": src.name}
    return {"kind": "callable", "prompt": getattr(src, "__name__", type(src).__name__)}


def _nothing_found(src: object, side: str, reason: str | None) -> str:
    if isinstance(src, TextRegions):
        why = f" ({reason})" if reason else ""
        return f"prompt {src.prompt!r} found no region in the {side} image{why}"
    if isinstance(src, OneShotRegions):
        return f"the one-shot reference {src.name!r} found no region in the {side} image"
    return f"the region source found no region in the {side} image"


def _given_pairs(items: Sequence) -> list[RegionPair]:
    pairs = []
    for i, item in enumerate(items):
        if isinstance(item, RegionPair):
            pairs.append(item)
            continue
        try:
            fm, mm = item
        except (TypeError, ValueError) as exc:
            raise PromptsegError(f"prompts[{i}]: expected a RegionPair or a (fixed_mask, moving_mask) tuple") from exc
        fm, mm = np.asarray(fm), np.asarray(mm)
        if fm.ndim != 2 or mm.ndim != 2:
            raise PromptsegError(f"prompts[{i}]: masks must be 2D, got {fm.shape} and {mm.shape}")
        if not fm.any() or not mm.any():
            raise PromptsegError(f"prompts[{i}]: empty mask in a region pair")
        pairs.append(RegionPair(Region(fm.astype(bool), prompt=str(i)), Region(mm.astype(bool), prompt=str(i)), 1.0))
    return pairs


# -- transform from pairs -----------------------------------------------------------------------------------------
def _stack_masks(regions: Sequence[Region], side: int) -> torch.Tensor:
    """(K, h, w) float masks resampled to a common grid with longest side ``side`` (all masks cover the image)."""
    shape = regions[0].mask.shape
    s = side / max(shape)
    size = (max(2, round(shape[0] * s)), max(2, round(shape[1] * s)))
    out = []
    for r in regions:
        m = torch.from_numpy(r.mask.astype(np.float32))[None, None]
        out.append(F.interpolate(m, size=size, mode="bilinear", align_corners=False, antialias=True)[0, 0])
    return torch.stack(out)


def _soft_dice(fixed: torch.Tensor, warped: torch.Tensor) -> torch.Tensor:
    inter = (fixed * warped).sum((-2, -1))
    return 2 * inter / (fixed.sum((-2, -1)) + warped.sum((-2, -1)) + 1e-6)


def _inside(grid: torch.Tensor) -> torch.Tensor:
    """1 where the grid samples inside the moving image: Dice is computed on the overlap of the two fields of view
    only, otherwise fixed-region parts that leave the moving image pull the transform."""
    return (grid.detach().abs() <= 1).all(dim=-1).float()


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0:
        return x
    radius = int(3 * sigma + 0.5)
    k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=x.dtype) / sigma) ** 2)
    k = k / k.sum()
    y = x[:, None]
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))
    return y[:, 0]


def initial_affine(
    pairs: Sequence[RegionPair], fixed_shape: tuple[int, int], moving_shape: tuple[int, int]
) -> Deformation:
    """Affine from pair centroids (pixel least squares, weighted by similarity x area); similarity or translation
    (with the area-ratio scale) when there are too few or degenerate pairs."""
    fs, ms = np.asarray(fixed_shape, float), np.asarray(moving_shape, float)
    # centroids in full-resolution pixels (x, y)
    src = np.stack([(p.fixed.centroid_norm() + 1) * fs[::-1] / 2 - 0.5 for p in pairs])
    dst = np.stack([(p.moving.centroid_norm() + 1) * ms[::-1] / 2 - 0.5 for p in pairs])
    weights = np.array([max(p.similarity, 1e-3) * np.sqrt(p.fixed.area_fraction) for p in pairs])
    area_scale = np.sqrt(
        np.average(
            [p.moving.area_fraction * ms.prod() / max(p.fixed.area_fraction * fs.prod(), 1e-9) for p in pairs],
            weights=weights,
        )
    )
    matrix = None
    if len(pairs) >= 4:
        cand = fit_affine_lstsq(src, dst, weights)
        sv = np.linalg.svd(cand[:2, :2], compute_uv=False)
        if np.linalg.det(cand[:2, :2]) > 0 and sv.min() > 0.33 and sv.max() < 3 and sv.max() / sv.min() < 2:
            matrix = cand
    if matrix is None and len(pairs) >= 2:
        cand = fit_similarity(src, dst, weights)
        scale = np.sqrt(abs(np.linalg.det(cand[:2, :2])))
        if 0.33 < scale < 3:
            matrix = cand
    if matrix is None:  # translation + area scale about the centroids
        c_src, c_dst = np.average(src, 0, weights), np.average(dst, 0, weights)
        matrix = np.eye(3)
        matrix[:2, :2] *= area_scale
        matrix[:2, 2] = c_dst - area_scale * c_src
    return Deformation.from_pixel_affine(matrix, fixed_shape, moving_shape)


def moment_similarity(pair: RegionPair, fixed_shape: tuple[int, int], moving_shape: tuple[int, int]) -> Deformation:
    """Similarity mapping the fixed region's centroid, principal axis and size onto the moving region's (pixels).

    The axis has a 180-degree ambiguity: the smaller rotation is taken (:func:`plausible` limits it anyway); a
    nearly round region (axis ratio < 1.1) gives no rotation."""

    def moments(mask: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        ys, xs = np.nonzero(mask)
        sy, sx = shape[0] / mask.shape[0], shape[1] / mask.shape[1]
        xy = np.stack([(xs + 0.5) * sx - 0.5, (ys + 0.5) * sy - 0.5], 1)
        return xy.mean(0), np.cov(xy.T)

    (cf, covf), (cm, covm) = moments(pair.fixed.mask, fixed_shape), moments(pair.moving.mask, moving_shape)
    scale = (np.linalg.det(covm) / max(np.linalg.det(covf), 1e-12)) ** 0.25
    angle = 0.0
    (ef, vf), (em, vm) = np.linalg.eigh(covf), np.linalg.eigh(covm)
    if ef[1] > 1.1**2 * ef[0] and em[1] > 1.1**2 * em[0]:
        angle = np.arctan2(vm[1, 1], vm[0, 1]) - np.arctan2(vf[1, 1], vf[0, 1])
        angle = (angle + np.pi / 2) % np.pi - np.pi / 2
    c, s = np.cos(angle), np.sin(angle)
    matrix = np.eye(3)
    matrix[:2, :2] = scale * np.array([[c, -s], [s, c]])
    matrix[:2, 2] = cm - matrix[:2, :2] @ cf
    return Deformation.from_pixel_affine(matrix, fixed_shape, moving_shape)


def fit_similarity(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted Umeyama similarity (rotation, uniform scale, translation; no reflection), dst ≈ M @ src."""
    w = np.ones(len(src)) if weights is None else np.asarray(weights, float)
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    a, b = src - mu_s, dst - mu_d
    cov = (b * w[:, None]).T @ a
    u, s, vt = np.linalg.svd(cov)
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ d @ vt
    var = (w * (a**2).sum(1)).sum()
    scale = np.trace(np.diag(s) @ d) / max(var, 1e-12)
    out = np.eye(3)
    out[:2, :2] = scale * rot
    out[:2, 2] = mu_d - scale * rot @ mu_s
    return out


def fit_pairs(
    pairs: Sequence[RegionPair],
    fixed_shape: tuple[int, int],
    moving_shape: tuple[int, int],
    *,
    options: RegistrationOptions | None = None,
    check_cancel: Callable[[], None] = lambda: None,
    progress: ProgressCallback | None = None,
    dense: bool | None = None,
    images: IntensityImages | None = None,
) -> tuple[Deformation, list[float], list[float]]:
    """Affine then dense field from region pairs. Returns the transform and per-pair Dice before/after.

    With ``images``, the affine start is chosen by :func:`alignment_score` of the images (region-pair Dice breaks
    near-ties) and the dense field is kept only if it does not lower that score: symmetric regions (a round section,
    an elliptic lesion) fit wrong transforms with a high Dice, the image content does not."""
    with single_thread():
        return _fit_pairs(pairs, fixed_shape, moving_shape, options, check_cancel, progress, dense, images)


def _fit_pairs(pairs, fixed_shape, moving_shape, options, check_cancel, progress, dense, images):
    opts = options or RegistrationOptions()
    report = progress or (lambda fraction, message: None)
    torch.manual_seed(opts.seed)
    pairs = list(pairs)
    dice_before = pair_dice(pairs, Deformation.identity(fixed_shape, moving_shape))
    top = max(opts.field_levels)
    fixed_top = _stack_masks([p.fixed for p in pairs], top)
    moving_top = _stack_masks([p.moving for p in pairs], top)
    # larger regions carry more of the image: weight ~ similarity x sqrt(area) (Tell2Reg: one global Dice)
    all_weights = torch.tensor(
        [max(p.similarity, 1e-3) * np.sqrt(p.fixed.area_fraction) for p in pairs], dtype=torch.float32
    )

    def level_masks(side: int, keep: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        f = _resize_longest(fixed_top[keep], side)
        m = _resize_longest(moving_top[keep], side)
        sigma = 1.0 if side < top else 0.5  # soft edges widen the basin of the Dice term
        return _blur(f, sigma), _blur(m, sigma)

    def refine_affine(start: np.ndarray, keep: list[int], sides_iters) -> np.ndarray:
        weights = all_weights[keep] / all_weights[keep].sum()
        theta = torch.tensor(start[:2], dtype=torch.float32, requires_grad=True)
        for side, iters in sides_iters:
            f, m = level_masks(side, keep)
            base = norm_grid(tuple(f.shape[-2:]))

            def affine_loss(theta=theta, f=f, m=m, base=base, weights=weights) -> torch.Tensor:
                grid = apply_affine_norm(theta, base)
                warped = F.grid_sample(m[:, None], grid.expand(len(m), -1, -1, -1), align_corners=False)[:, 0]
                return 1 - (weights * _soft_dice(f * _inside(grid), warped)).sum()

            adam(theta, affine_loss, iters, opts.learning_rate * 0.5)
            check_cancel()
        out = np.eye(3)
        out[:2] = theta.detach().double().numpy()
        return out

    def consensus(affine: np.ndarray) -> tuple[float, np.ndarray]:
        f, m = level_masks(64, list(range(len(pairs))))
        grid = apply_affine_norm(torch.from_numpy(affine), norm_grid(tuple(f.shape[-2:]), torch.float64)).float()
        warped = F.grid_sample(m[:, None], grid.expand(len(m), -1, -1, -1), align_corners=False)[:, 0]
        dice = _soft_dice(f * _inside(grid), warped).numpy()
        inliers = dice >= opts.inlier_dice
        return float(all_weights.numpy()[inliers].sum() + 1e-3 * dice.mean()), inliers

    # Start: with few pairs, all of them; otherwise RANSAC-like over region pairs (our addition): a start from each
    # of the largest pairs alone and one from all centroids, each refined briefly, scored by the pairs it aligns
    # (Dice >= inlier_dice). Wrongly matched pairs then drop out instead of pulling the transform.
    everyone = list(range(len(pairs)))
    quick = [(32, opts.affine_iterations[0]), (64, opts.affine_iterations[0] // 2)]
    candidates = [refine_affine(initial_affine(pairs, fixed_shape, moving_shape).affine, everyone, quick)]
    if len(pairs) >= 3:
        order = sorted(everyone, key=lambda i: -pairs[i].fixed.area_fraction)[: opts.max_start_candidates]
        for i in order:
            start = initial_affine([pairs[i]], fixed_shape, moving_shape).affine
            candidates.append(refine_affine(start, [i], quick))
    if len(pairs) >= 3:  # identity competes too: no region-based start is better than a wrong one
        identity = Deformation.identity(fixed_shape, moving_shape).affine
        candidates.append(refine_affine(identity, everyone, quick))
    if images is not None:
        # rigid/similarity starts from the second moments of the largest pairs (a whole section or lesion has an
        # orientation that a centroid does not give); as they are and refined, since Dice hardly constrains the
        # rotation of a blob. Only with images: they choose, the pairs' Dice cannot
        for i in sorted(everyone, key=lambda i: -pairs[i].fixed.area_fraction)[:2]:
            start = moment_similarity(pairs[i], fixed_shape, moving_shape).affine
            candidates += [start, refine_affine(start, [i], quick)]

    def as_deformation(affine: np.ndarray) -> Deformation:
        return Deformation(tuple(fixed_shape), tuple(moving_shape), affine, None)

    scored = []
    for c in candidates:
        if not plausible(c, fixed_shape, moving_shape, opts):
            scored.append((-np.inf, np.zeros(len(pairs), bool)))
            continue
        consensus_score, inliers = consensus(c)
        # the images decide; the pairs' consensus (a weight fraction <= 1) only breaks near-ties
        image_score = 0.0 if images is None else images.score(as_deformation(c))
        scored.append((image_score + 0.01 * consensus_score / float(all_weights.sum()), inliers))
    best = int(np.argmax([score for score, _ in scored]))
    keep = [i for i in everyone if scored[best][1][i]] or everyone
    sides = sorted(opts.field_levels)[: len(opts.affine_iterations)]
    affine = refine_affine(candidates[best], keep, list(zip(sides, opts.affine_iterations, strict=False)))
    deformation = as_deformation(affine)
    if images is not None and images.score(deformation) < images.score(as_deformation(candidates[best])):
        deformation = as_deformation(candidates[best])  # refining on the inlier pairs only made the images worse
    report(0.55, "affine done; dense field")
    if opts.dense if dense is None else dense:
        weights = all_weights[keep] / all_weights[keep].sum()
        warped = _fit_field(deformation, lambda side: level_masks(side, keep), weights, opts, check_cancel, report)
        if images is None or images.score(warped) >= images.score(deformation):
            deformation = warped
    return deformation, dice_before, pair_dice(pairs, deformation)


def plausible(affine: np.ndarray, fixed_shape, moving_shape, opts: RegistrationOptions) -> bool:
    """No reflection, rotation within ``max_rotation_deg``, scales within [1/max_scale, max_scale]: symmetric
    regions (an elliptic lesion, a round tissue section) fit flipped or half-turned copies with a high Dice."""
    linear = Deformation(tuple(fixed_shape), tuple(moving_shape), affine, None).pixel_affine[:2, :2]
    if np.linalg.det(linear) <= 0:
        return False
    u, sv, vt = np.linalg.svd(linear)
    rotation = u @ vt
    angle = np.degrees(np.arctan2(rotation[1, 0], rotation[0, 0]))
    return abs(angle) <= opts.max_rotation_deg and 1 / opts.max_scale <= sv.min() and sv.max() <= opts.max_scale


_sitk_threads_lock = threading.Lock()
_sitk_threads_users = 0
_sitk_threads_saved = 0


@contextmanager
def sitk_single_threaded() -> Iterator[None]:
    """SimpleITK on one thread per run. With several, its sampled metric differs from run to run and so does the
    result (measured 1.4 % vs 4.1 % rTRE for the same affine stage on the same pair). Re-entrant and shared by
    concurrent runs: the global setting is restored when the last one leaves."""
    try:
        import SimpleITK as sitk
    except ImportError:  # intensity_stage says how to install it
        yield
        return
    global _sitk_threads_users, _sitk_threads_saved
    with _sitk_threads_lock:
        if _sitk_threads_users == 0:
            _sitk_threads_saved = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
        _sitk_threads_users += 1
    try:
        yield
    finally:
        with _sitk_threads_lock:
            _sitk_threads_users -= 1
            if _sitk_threads_users == 0:
                sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(_sitk_threads_saved)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run small-tensor torch work on one thread: intra-op threading costs more than it gains on (K, 128, 128)
    masks, and on a loaded machine (measured here: 1.6 s vs 9.6 s for the same fit on 2 busy cores)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def next_level_control(
    control: torch.Tensor | None, size: tuple[int, int], spacing: float, min_points: int
) -> torch.Tensor:
    """(2, gh, gw) control grid of a free-form field for a level of ``size`` pixels, a point every ``spacing``
    pixels: zeros at the first level, else the previous level's grid resampled (coarse-to-fine); ready for Adam."""
    gsize = (max(min_points, round(size[0] / spacing)), max(min_points, round(size[1] / spacing)))
    if control is None:
        return torch.zeros((2, *gsize), requires_grad=True)
    init = F.interpolate(control.detach()[None], size=gsize, mode="bilinear", align_corners=False)[0]
    return init.clone().requires_grad_(True)


def adam(param: torch.Tensor, loss_fn: Callable[[], torch.Tensor], iterations: int, lr: float) -> None:
    """Plain Adam on one tensor, in place. (torch.optim's first use imports torch._dynamo: seconds per process.)"""
    m = torch.zeros_like(param)
    v = torch.zeros_like(param)
    b1, b2, eps = 0.9, 0.999, 1e-8
    for step in range(1, iterations + 1):
        if param.grad is not None:
            param.grad = None
        loss_fn().backward()
        with torch.no_grad():
            g = param.grad
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            m_hat = m / (1 - b1**step)
            v_hat = v / (1 - b2**step)
            param.sub_(lr * m_hat / (v_hat.sqrt() + eps))


def _resize_longest(x: torch.Tensor, side: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if max(h, w) <= side:
        return x
    s = side / max(h, w)
    size = (max(2, round(h * s)), max(2, round(w * s)))
    return F.interpolate(x[:, None], size=size, mode="bilinear", align_corners=False, antialias=True)[:, 0]


def bending_energy(field: torch.Tensor) -> torch.Tensor:
    """Mean squared second derivatives of a (gh, gw, 2) field in normalised units (spacing 2/g per axis)."""
    gh, gw = field.shape[:2]
    hx, hy = 2.0 / gw, 2.0 / gh
    d = field.permute(2, 0, 1)
    dxx = (d[:, :, 2:] - 2 * d[:, :, 1:-1] + d[:, :, :-2]) / hx**2
    dyy = (d[:, 2:] - 2 * d[:, 1:-1] + d[:, :-2]) / hy**2
    dxy = (d[:, 1:, 1:] - d[:, 1:, :-1] - d[:, :-1, 1:] + d[:, :-1, :-1]) / (hx * hy)
    return (dxx**2).mean() + (dyy**2).mean() + 2 * (dxy**2).mean()


def _fit_field(
    deformation: Deformation,
    level_masks: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    weights: torch.Tensor,
    opts: RegistrationOptions,
    check_cancel: Callable[[], None],
    report: ProgressCallback,
) -> Deformation:
    affine = torch.from_numpy(deformation.affine)
    control: torch.Tensor | None = None
    levels = list(zip(opts.field_levels, opts.field_iterations, strict=False))
    size = None
    for li, (side, iters) in enumerate(levels):
        f, m = level_masks(side)
        size = tuple(f.shape[-2:])
        base = apply_affine_norm(affine, norm_grid(size, torch.float64)).float()
        control = next_level_control(control, size, opts.control_spacing, min_points=3)

        def field_loss(control=control, f=f, m=m, base=base, size=size) -> torch.Tensor:
            residual = F.interpolate(control[None], size=size, mode="bicubic", align_corners=False)[0]
            grid = base + residual.permute(1, 2, 0)
            warped = F.grid_sample(m[:, None], grid[None].expand(len(m), -1, -1, -1), align_corners=False)[:, 0]
            dice_loss = 1 - (weights * _soft_dice(f * _inside(grid), warped)).sum()
            return dice_loss + opts.smoothness * bending_energy(control.permute(1, 2, 0))

        adam(control, field_loss, iters, opts.learning_rate)
        check_cancel()
        report(0.55 + 0.3 * (li + 1) / len(levels), f"dense field level {li + 1}/{len(levels)}")
    assert control is not None and size is not None
    residual = F.interpolate(control.detach()[None], size=size, mode="bicubic", align_corners=False)[0]
    return Deformation(
        deformation.fixed_shape,
        deformation.moving_shape,
        deformation.affine,
        residual.permute(1, 2, 0).numpy().astype(np.float32),
    )


def pair_dice(pairs: Sequence[RegionPair], deformation: Deformation, side: int = 128) -> list[float]:
    """Dice of each fixed mask with its warped moving partner, on a fixed grid with longest side ``side``."""
    if not pairs:
        return []
    f = _stack_masks([p.fixed for p in pairs], side) > 0.5
    out = []
    grid = deformation.norm_map(tuple(f.shape[-2:]))
    for k, p in enumerate(pairs):
        m = torch.from_numpy(p.moving.mask.astype(np.float32))[None, None]
        warped = F.grid_sample(m, grid[None], mode="bilinear", align_corners=False)[0, 0] > 0.5
        a, b = f[k], warped
        total = a.sum() + b.sum()
        out.append(1.0 if total == 0 else float(2 * (a & b).sum() / total))
    return out


# -- intensity baseline (SimpleITK) -------------------------------------------------------------------------------
def to_gray(image_hwc: np.ndarray) -> np.ndarray:
    """Float gray in [0, 1], tissue bright: brightfield images (bright background) are inverted so that image
    moments and zero padding agree with the background."""
    x = image_hwc.astype(np.float32)
    g = x.mean(axis=2) if x.shape[2] > 1 else x[..., 0]
    lo, hi = np.percentile(g, (0.5, 99.5))
    g = np.clip((g - lo) / max(hi - lo, 1e-8), 0, 1)
    border = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
    if np.median(border) > np.median(g):
        g = 1 - g
    return g.astype(np.float32)


def _downsample(gray: np.ndarray, scale: float) -> np.ndarray:
    if scale >= 1:
        return gray
    size = (max(8, round(gray.shape[0] * scale)), max(8, round(gray.shape[1] * scale)))
    t = torch.from_numpy(gray)[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True)[0, 0].numpy()


def _sitk_image(gray_small: np.ndarray, full_shape: tuple[int, int]):
    """SimpleITK image whose physical coordinates are full-resolution pixel (x, y) coordinates."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(gray_small.astype(np.float32))
    sy, sx = full_shape[0] / gray_small.shape[0], full_shape[1] / gray_small.shape[1]
    img.SetSpacing((sx, sy))
    img.SetOrigin((0.5 * sx - 0.5, 0.5 * sy - 0.5))  # low-res pixel centres in full-res pixel units
    return img


@dataclass
class IntensityImages:
    """The pair as small float gray images (longest side ``intensity_max_side``), prepared once per registration:
    every SimpleITK stage and the :func:`alignment_score` of every candidate use the same pixels."""

    fixed: np.ndarray
    moving: np.ndarray
    fixed_shape: tuple[int, int]
    moving_shape: tuple[int, int]

    @classmethod
    def from_images(cls, fixed_hwc: np.ndarray, moving_hwc: np.ndarray, max_side: int) -> IntensityImages:
        fixed_shape, moving_shape = tuple(fixed_hwc.shape[:2]), tuple(moving_hwc.shape[:2])
        scale = min(1.0, max_side / max(*fixed_shape, *moving_shape))
        return cls(
            _downsample(to_gray(fixed_hwc), scale), _downsample(to_gray(moving_hwc), scale), fixed_shape, moving_shape
        )

    def score(self, deformation: Deformation) -> float:
        return alignment_score(self.fixed, self.moving, deformation)


def intensity_register(
    fixed_hwc: np.ndarray,
    moving_hwc: np.ndarray,
    *,
    options: RegistrationOptions | None = None,
    initial: Deformation | None = None,
) -> Deformation:
    """SimpleITK registration (Mattes MI, affine then B-spline) at low resolution; optionally after ``initial``."""
    opts = options or RegistrationOptions()
    images = IntensityImages.from_images(fixed_hwc, moving_hwc, opts.intensity_max_side)
    found = intensity_stage(images, opts, initial=initial, affine=opts.intensity_affine, bspline=False)
    if not opts.intensity_bspline:
        return found
    return intensity_stage(
        images, opts, initial=found if opts.intensity_affine else initial, affine=False, bspline=True
    )


def intensity_stage(
    images: IntensityImages,
    opts: RegistrationOptions,
    *,
    initial: Deformation | None,
    affine: bool,
    bspline: bool,
) -> Deformation:
    """One SimpleITK run (affine and/or B-spline) from ``initial``; ``initial=None`` starts from the image moments
    (SimpleITK's centred initialiser), the baseline. With ``initial``, the moving image is warped by it first and
    the run registers the fixed frame to itself; the result is ``initial`` composed with what it found."""
    try:
        import SimpleITK as sitk
    except ImportError as exc:  # optional dependency
        raise PromptsegError(
            "the intensity baseline needs SimpleITK: pip install 'napari-promptseg[register]'"
        ) from exc
    fixed_shape, moving_shape = images.fixed_shape, images.moving_shape
    fixed_small, moving_small = images.fixed, images.moving
    # an affine start is handed to SimpleITK exactly (physical coordinates are full-resolution pixels); a start with
    # a residual field warps the small moving image first, and the run then maps the fixed frame to itself
    prewarped = initial is not None and initial.residual is not None
    if prewarped:
        grid = initial.norm_map(fixed_small.shape)
        t = torch.from_numpy(moving_small)[None, None]
        moving_small = F.grid_sample(t, grid[None], align_corners=False)[0, 0].numpy()
        target_shape = fixed_shape
    else:
        target_shape = moving_shape
    f_img = _sitk_image(fixed_small, fixed_shape)
    m_img = _sitk_image(moving_small, target_shape)
    start_affine = None
    if initial is not None and not prewarped:
        start_affine = sitk.AffineTransform(2)
        start_affine.SetMatrix(initial.pixel_affine[:2, :2].ravel().tolist())
        start_affine.SetTranslation(initial.pixel_affine[:2, 2].tolist())

    def method() -> sitk.ImageRegistrationMethod:
        reg = sitk.ImageRegistrationMethod()
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(0.25, opts.seed + 1)
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetNumberOfThreads(1)
        return reg

    # every stage runs on one thread (see sitk_single_threaded): with two, the B-spline stage (LBFGS-B) differed
    # between runs of the same pair (float noise that sometimes grew into a different, even degenerate, field)
    with sitk_single_threaded():
        transforms = _sitk_stages(sitk, method, f_img, m_img, opts, initial, start_affine, affine, bspline)
    composite = sitk.CompositeTransform(transforms) if transforms else sitk.Transform(2, sitk.sitkIdentity)
    field_img = sitk.TransformToDisplacementField(
        composite,
        sitk.sitkVectorFloat64,
        f_img.GetSize(),
        f_img.GetOrigin(),
        f_img.GetSpacing(),
        f_img.GetDirection(),
    )
    disp = sitk.GetArrayFromImage(field_img)  # (h, w, 2) physical (x, y) displacement = full-res pixels
    h, w = fixed_small.shape
    sy, sx = fixed_shape[0] / h, fixed_shape[1] / w
    ys, xs = np.meshgrid(np.arange(h) * sy + 0.5 * sy - 0.5, np.arange(w) * sx + 0.5 * sx - 0.5, indexing="ij")
    tx, ty = xs + disp[..., 0], ys + disp[..., 1]
    th, tw = target_shape
    grid = np.stack([(2 * tx + 1) / tw - 1, (2 * ty + 1) / th - 1], axis=-1)
    found = Deformation.from_norm_grid(grid, fixed_shape, target_shape)
    if not bspline:  # an affine run: keep it exactly affine (the sampled grid adds float noise only)
        found = Deformation(found.fixed_shape, found.moving_shape, found.affine, None)
    return initial.compose(found, (h, w)) if prewarped else found


def _sitk_stages(sitk, method, f_img, m_img, opts, initial, start_affine, affine: bool, bspline: bool) -> list:
    """The SimpleITK runs of :func:`intensity_stage`: affine (from the moments, ``start_affine`` or identity) and/or
    B-spline on top of it. Returns the transforms, outermost first."""
    transforms = []
    if affine:
        if initial is None:
            start = sitk.CenteredTransformInitializer(
                f_img, m_img, sitk.AffineTransform(2), sitk.CenteredTransformInitializerFilter.MOMENTS
            )
        else:
            start = start_affine if start_affine is not None else sitk.AffineTransform(2)
        reg = method()
        reg.SetOptimizerAsRegularStepGradientDescent(
            learningRate=2.0, minStep=1e-3, numberOfIterations=opts.intensity_iterations * 2, relaxationFactor=0.6
        )
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetShrinkFactorsPerLevel([4, 2, 1])
        reg.SetSmoothingSigmasPerLevel([2, 1, 0])
        reg.SetInitialTransform(start, inPlace=True)
        reg.Execute(f_img, m_img)
        transforms.append(start)
    elif start_affine is not None:
        transforms.append(start_affine)
    if bspline:
        bspline_transform = sitk.BSplineTransformInitializer(f_img, [opts.bspline_mesh] * 2)
        reg = method()
        if transforms:
            reg.SetMovingInitialTransform(transforms[0])
        reg.SetOptimizerAsLBFGSB(
            gradientConvergenceTolerance=1e-5,
            numberOfIterations=opts.intensity_iterations,
            maximumNumberOfCorrections=5,
        )
        reg.SetShrinkFactorsPerLevel([2, 1])
        reg.SetSmoothingSigmasPerLevel([1, 0])
        reg.SetInitialTransform(bspline_transform, inPlace=True)
        reg.Execute(f_img, m_img)
        transforms.append(bspline_transform)
    return transforms


def intensity_route(
    images: IntensityImages,
    opts: RegistrationOptions,
    starts: dict[str, Deformation | None],
    check_cancel: Callable[[], None] = lambda: None,
    stages: list[dict[str, Any]] | None = None,
) -> tuple[Deformation, str, dict[str, float]]:
    """Refine every start by the intensity affine stage, keep the one whose result aligns the images best by
    :func:`alignment_score` (NMI on the fixed grid; no landmarks), then run the B-spline stage on it. ``None`` is
    the intensity baseline's own (moments) start, so a wrong region start cannot win unless it also aligns the
    intensities better. A degenerate result (:func:`~.warp.degenerate_reason`) is not a candidate, and a degenerate
    B-spline stage gives way to the affine result; each check is appended to ``stages``. Returns the transform, the
    winning start's name and every start's score."""
    stages = [] if stages is None else stages

    def refine(start: Deformation | None) -> Deformation:
        return intensity_stage(images, opts, initial=start, affine=opts.intensity_affine, bspline=False)

    # the starts are independent single-threaded SimpleITK runs (which release the GIL): one per core
    with sitk_single_threaded(), ThreadPoolExecutor(max_workers=min(len(starts), os.cpu_count() or 1)) as pool:
        refined = dict(zip(starts, pool.map(refine, starts.values()), strict=True))
    check_cancel()
    scores = {name: images.score(deformation) for name, deformation in refined.items()}
    reasons = {name: degenerate_reason(deformation) for name, deformation in refined.items()}
    for name, reason in reasons.items():
        if reason is not None:
            stages.append(_stage(f"affine from {name}", reason))
    usable = [name for name in refined if reasons[name] is None] or list(refined)
    best = max(usable, key=lambda k: scores[k])
    deformation = refined[best]
    if opts.intensity_bspline:
        bspline = intensity_stage(images, opts, initial=deformation, affine=False, bspline=True)
        reason = degenerate_reason(bspline, deformation)
        stages.append(_stage("bspline", reason))
        if reason is None:
            deformation = bspline
    return deformation, best, scores


def alignment_score(fixed_gray: np.ndarray, moving_gray: np.ndarray, deformation: Deformation, bins: int = 32) -> float:
    """Normalised mutual information (Studholme, (H(F) + H(M)) / H(F, M), 1..2) of the fixed image and the warped
    moving image on the fixed grid, over the pixels where the warped moving image is defined.

    Computed on the small gray images of :func:`intensity_register`; it picks among candidate transforms without
    landmarks. NMI rather than MI: it does not reward shrinking the overlap.
    """
    grid = deformation.norm_map(fixed_gray.shape)
    warped = F.grid_sample(torch.from_numpy(moving_gray)[None, None], grid[None], align_corners=False)[0, 0].numpy()
    inside = (grid.abs() <= 1).all(dim=-1).numpy()
    if inside.mean() < 0.25:  # mostly outside the moving image: not a candidate
        return 0.0
    a = np.clip((fixed_gray[inside] * bins).astype(int), 0, bins - 1)
    b = np.clip((warped[inside] * bins).astype(int), 0, bins - 1)
    joint = np.bincount(a * bins + b, minlength=bins * bins).astype(np.float64) / a.size

    def entropy(p: np.ndarray) -> float:
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    joint2 = joint.reshape(bins, bins)
    return (entropy(joint2.sum(1)) + entropy(joint2.sum(0))) / max(entropy(joint), 1e-12)


# -- joint refinement: intensity + region pairs -------------------------------------------------------------------
def _box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable box mean of each channel of (1, C, h, w), borders replicated."""
    k = 2 * radius + 1
    # running sums cost the same for any window and less than a depthwise convolution; one axis at a time keeps
    # the sums small enough for float32
    x = F.pad(F.pad(x, (radius, radius, radius, radius), mode="replicate"), (1, 0, 1, 0))
    x = x.cumsum(-1)
    x = (x[..., k:] - x[..., :-k]).cumsum(-2)
    return (x[..., k:, :] - x[..., :-k, :]) / (k * k)


def _upsample_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in): bicubic upsampling (``align_corners=False``) along one axis as a matrix. Torch's bicubic is
    separable, so ``My @ c @ Mx.T`` equals ``F.interpolate(c, mode="bicubic")``, with a much cheaper backward."""
    impulses = torch.eye(n_in)[:, None, None, :]
    return F.interpolate(impulses, size=(1, n_out), mode="bicubic", align_corners=False)[:, 0, 0, :].T.contiguous()


def local_ncc_loss(
    fixed_stats: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    warped: torch.Tensor,
    inside: torch.Tensor,
    radius: int,
) -> torch.Tensor:
    """1 - mean squared local NCC over ``inside``. Squared: two stains may be locally brighter or darker than each
    other (HE vs an immunostain), what must agree is where the structure edges are."""
    f, mean_f, var_f = fixed_stats
    local = _box_mean(torch.cat([warped, warped * warped, f * warped], 1), radius)
    mean_w = local[:, :1]
    var_w = local[:, 1:2] - mean_w**2
    cov = local[:, 2:3] - mean_f * mean_w
    ncc2 = cov**2 / (var_f * var_w + 1e-5)
    return 1 - (ncc2 * inside).sum() / inside.sum().clamp(min=1)


def joint_refine(
    fixed_hwc: np.ndarray,
    moving_hwc: np.ndarray,
    deformation: Deformation,
    pairs: Sequence[RegionPair],
    opts: RegistrationOptions,
    check_cancel: Callable[[], None] = lambda: None,
) -> Deformation:
    """A residual free-form deformation on top of ``deformation``, at finer resolutions than the SimpleITK stages
    (``refine_levels``, longest side), minimising local NCC of the gray images + ``refine_dice`` x (1 - weighted
    region-pair Dice) + ``refine_smoothness`` x bending energy of the control grid (torch, Adam, coarse to fine).

    Our addition: Tell2Reg optimises the region Dice alone; SimpleITK's B-spline (Mattes MI, 6x6 mesh, 384 px) is
    global and coarse. The caller keeps the result only if :func:`alignment_score` improves."""
    with single_thread():
        return _joint_refine(fixed_hwc, moving_hwc, deformation, pairs, opts, check_cancel)


def _joint_refine(fixed_hwc, moving_hwc, deformation, pairs, opts, check_cancel):
    fixed_shape, moving_shape = deformation.fixed_shape, deformation.moving_shape
    finest = min(1.0, max(opts.refine_levels) / max(*fixed_shape, *moving_shape))
    fixed_fine, moving_fine = _downsample(to_gray(fixed_hwc), finest), _downsample(to_gray(moving_hwc), finest)
    weights = torch.tensor([max(p.similarity, 1e-3) * np.sqrt(p.fixed.area_fraction) for p in pairs])
    weights = (weights / weights.sum()).float() if len(pairs) else weights.float()
    control: torch.Tensor | None = None
    size = tuple(fixed_fine.shape)
    for side, iterations in zip(opts.refine_levels, opts.refine_iterations, strict=False):
        scale = min(1.0, side / max(*fixed_shape, *moving_shape)) / finest
        f = _blur(torch.from_numpy(_downsample(fixed_fine, scale))[None], 1.0)[None]
        m = _blur(torch.from_numpy(_downsample(moving_fine, scale))[None], 1.0)[None]
        size = tuple(f.shape[-2:])
        local_f = _box_mean(torch.cat([f, f * f], 1), opts.refine_window)
        fixed_stats = (f, local_f[:, :1], local_f[:, 1:] - local_f[:, :1] ** 2)
        base = deformation.norm_map(size)
        control = next_level_control(control, size, opts.refine_spacing, min_points=4)
        masks = None
        # the region masks (from 256 px decoder outputs) are coarse: their Dice is taken on every ``stride``-th pixel
        stride = max(1, round(max(size) / 256))
        if pairs and opts.refine_dice > 0:
            mask_size = tuple(len(range(0, n, stride)) for n in size)
            fixed_masks = _stack_masks([p.fixed for p in pairs], max(mask_size))
            fixed_masks = F.interpolate(fixed_masks[None], size=mask_size, mode="bilinear", align_corners=False)[0]
            moving_side = max(round(s / stride) for s in m.shape[-2:])
            masks = (_blur(fixed_masks, 1.0), _blur(_stack_masks([p.moving for p in pairs], moving_side), 1.0))

        up_y, up_x = _upsample_matrix(control.shape[1], size[0]), _upsample_matrix(control.shape[2], size[1])

        def loss_fn(
            control=control, f=f, m=m, base=base, up=(up_y, up_x), fixed_stats=fixed_stats, masks=masks, stride=stride
        ):
            residual = up[0] @ control @ up[1].T
            grid = base + residual.permute(1, 2, 0)
            warped = F.grid_sample(m, grid[None], align_corners=False)
            inside = _inside(grid)[None, None]
            loss = local_ncc_loss(fixed_stats, warped, inside, opts.refine_window)
            if masks is not None:
                fixed_masks, moving_masks = masks
                coarse = grid[::stride, ::stride]
                warped_masks = F.grid_sample(
                    moving_masks[:, None], coarse[None].expand(len(moving_masks), -1, -1, -1), align_corners=False
                )[:, 0]
                dice = (weights * _soft_dice(fixed_masks * _inside(coarse), warped_masks)).sum()
                loss = loss + opts.refine_dice * (1 - dice)
            return loss + opts.refine_smoothness * bending_energy(control.permute(1, 2, 0))

        adam(control, loss_fn, iterations, opts.refine_learning_rate)
        check_cancel()
    assert control is not None
    residual = F.interpolate(control.detach()[None], size=size, mode="bicubic", align_corners=False)[0]
    grid = deformation.norm_map(size) + residual.permute(1, 2, 0)
    return Deformation.from_norm_grid(grid, fixed_shape, moving_shape)


# -- landmarks ----------------------------------------------------------------------------------------------------
def landmark_errors(fixed_xy: np.ndarray, mapped_xy: np.ndarray, diagonal: float) -> dict[str, float]:
    """TRE (pixels) and ANHIR rTRE (TRE / fixed-image diagonal) summary of corresponding points."""
    a, b = np.asarray(fixed_xy, float), np.asarray(mapped_xy, float)
    if a.shape != b.shape:
        raise PromptsegError(f"landmark count mismatch: {len(a)} fixed vs {len(b)} mapped points")
    tre = np.linalg.norm(a - b, axis=1)
    return {
        "n": int(len(tre)),
        "tre_mean": float(tre.mean()),
        "tre_median": float(np.median(tre)),
        "tre_max": float(tre.max()),
        "rtre_mean": float(tre.mean() / diagonal),
        "rtre_median": float(np.median(tre) / diagonal),
        "rtre_max": float(tre.max() / diagonal),
    }


def image_diagonal(shape: Sequence[int]) -> float:
    return float(np.hypot(shape[0], shape[1]))
