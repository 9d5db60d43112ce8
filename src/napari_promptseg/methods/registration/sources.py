"""Region pairs from prompts: automatic regions, text prompts, one-shot references, given pairs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ...callbacks import ProgressCallback
from ...errors import PromptsegError, WeightsError
from ...models.preprocessing import full_resolution
from ...models.protocols import PromptableSegmenter
from ..prompt_regions import OneShotRegions, TextRegions
from ..regions import (
    GLOBAL_PROMPT,
    AutomaticRegions,
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
from ..text import TextRoute, choose_route
from .from_pairs import fit_pairs
from .intensity import IntensityImages
from .options import RegistrationOptions


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
    downloads: ProgressCallback | None = None,
) -> list[RegionPair]:
    """Corresponding regions of the two images from ``prompts`` (see :func:`~.pipeline.register`); ``images`` lets the
    image similarity pick the first estimate that the automatic route's box transfer relies on. ``sources_report``
    (a list) receives one record per region source: its prompt, regions found per image, and for text prompts the
    route that answered and why. ``downloads`` hears of the text route's model downloads."""
    opts = options or RegistrationOptions()
    report = report if report is not None else PairingReport()
    if isinstance(prompts, Sequence) and not isinstance(prompts, str) and len(prompts) == 0:
        raise PromptsegError("prompts: empty list of regions/region sources")
    if is_text_prompts(prompts):
        prompts = text_sources(
            prompts, segmenter, text_route=text_route, library=library, text_options=text_options, downloads=downloads
        )
        if segmenter is None:  # the one text_sources loaded, for the prototypes
            segmenter = next(p.segmenter for p in prompts if isinstance(p, TextRegions))
    if isinstance(prompts, Sequence) and not isinstance(prompts, str) and not callable(prompts[0]):
        return _given_pairs(prompts, fixed.shape[:2], moving.shape[:2])
    automatic = prompts is None or (isinstance(prompts, str) and prompts == "auto")  # an array: compared by element
    if segmenter is None and automatic:
        from ...models import load_segmenter

        segmenter = load_segmenter()
    if automatic:
        fixed_emb = segmenter.embed(fixed)
        check_cancel()
        moving_emb = segmenter.embed(moving)
        check_cancel()
        source = AutomaticRegions(segmenter, grids=tuple(opts.region_grids))
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
            from ...models import load_segmenter

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
    downloads: ProgressCallback | None = None,
) -> object:
    """Text prompts -> one :class:`~..prompt_regions.TextRegions` per prompt, all answered by one route chosen once
    (:func:`~..text.choose_route`); callables in a mixed list stay as they are; other ``prompts`` pass unchanged. A
    named route downloads its missing model as the Text prompt widget's does: told to ``downloads``, stopped by
    ``text_options["cancel"]``."""
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
        keys = ("grounder", "heatmapper", "weights", "weights_option", "device")
        try:
            route = choose_route(
                route,
                library=library,
                progress=downloads,
                cancel=options.get("cancel"),
                **{k: options.pop(k) for k in keys if k in options},
            )
        except (PromptsegError, WeightsError) as exc:
            # the route chooser's own message (which weights are missing, how to fill the library), for these prompts
            prompts_text = ", ".join(map(repr, texts))
            raise type(exc)(f"text prompt {prompts_text}: {exc.message}", details=exc.details) from exc
    if segmenter is None:  # after the route: a prompt nothing can answer fails before the model loads
        from ...models import load_segmenter

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


def _given_pairs(items: Sequence, fixed_shape: tuple[int, int], moving_shape: tuple[int, int]) -> list[RegionPair]:
    pairs = []
    for i, item in enumerate(items):
        if isinstance(item, RegionPair):
            fm, mm = item.fixed.mask, item.moving.mask
        else:
            try:
                fm, mm = item
            except (TypeError, ValueError) as exc:
                raise PromptsegError(
                    f"prompts[{i}]: expected a RegionPair or a (fixed_mask, moving_mask) tuple"
                ) from exc
            fm, mm = np.asarray(full_resolution(fm)), np.asarray(full_resolution(mm))
        if fm.ndim != 2 or mm.ndim != 2:
            raise PromptsegError(f"prompts[{i}]: masks must be 2D, got {fm.shape} and {mm.shape}")
        for mask, shape, side in ((fm, fixed_shape, "fixed"), (mm, moving_shape, "moving")):
            _check_mask_frame(mask.shape, shape, f"prompts[{i}]: the {side} mask")
        if isinstance(item, RegionPair):
            pairs.append(item)
            continue
        if not fm.any() or not mm.any():
            raise PromptsegError(f"prompts[{i}]: empty mask in a region pair")
        pairs.append(RegionPair(Region(fm.astype(bool), prompt=str(i)), Region(mm.astype(bool), prompt=str(i)), 1.0))
    return pairs


def _check_mask_frame(mask_shape: tuple[int, ...], image_shape: tuple[int, ...], what: str) -> None:
    """A region's mask covers its whole image at any resolution (:class:`~..regions.Region`), so it must have the
    image's proportions (to a pixel of rounding): a transposed mask, or one of another image, was stretched onto the
    image without a word."""
    (mh, mw), (h, w) = mask_shape, image_shape
    if abs(mh / h - mw / w) > 1.5 * max(1 / mh, 1 / mw) + 1e-9:
        raise PromptsegError(
            f"{what} is {mh} x {mw} px (rows x columns): not the {h} x {w} image's shape, nor its proportions at "
            "another resolution"
        )
