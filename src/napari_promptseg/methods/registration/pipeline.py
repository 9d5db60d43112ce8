"""The public entry point :func:`register`: the three routes and their stage bookkeeping."""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ...callbacks import ProgressCallback
from ...errors import CancelledError, PromptsegError
from ...io.multiscale import REGISTER_SIDE, PyramidLevel, level_for_side
from ...models.preprocessing import (
    as_channels_last,
    check_pixels,
    full_resolution,
    is_single_plane,
    pyramid_levels,
)
from ...models.protocols import PromptableSegmenter
from ...models.sam_family import auto_precision
from ..regions import (
    PairingReport,
)
from ..text import TextRoute
from ..warp import Deformation, degenerate_reason
from .from_pairs import fit_pairs, pair_dice
from .intensity import IntensityImages, check_affine_optimizer
from .options import (
    DEFAULT_METHOD,
    RegistrationOptions,
    RegistrationResult,
    _stage,
    _stage_warnings,
    level_record,
    resolve_method,
)
from .quality import quality_report
from .refine import joint_refine
from .route import intensity_route
from .search import rotation_flip_search
from .sources import is_text_prompts, region_pairs

#: what auto precision means for the region stage's encoder, even on CPUs with native bfloat16: the region start
#: wins or loses on image-similarity margins (lesions pair: NMI 1.0829 against the moments start's 1.0827) that
#: bfloat16 embeddings flip (1.0781)
REGION_PRECISION = "float32"


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
    downloads: ProgressCallback | None = None,
) -> RegistrationResult:
    """Register ``moving`` onto ``fixed`` (2D, gray or RGB/multichannel; the sizes may differ). A single-plane stack,
    (1, H, W), is its plane; the result's ``warp_image`` and ``warp_labels`` give such an input back (1, H, W).

    ``method``: "auto" (default) is "prompts+intensity" when ``prompts`` are given and "intensity" otherwise; the
    result's ``method`` says which ran. ``prompts`` selects the region source for the prompt-based methods:

    * ``None`` or ``"auto"``: automatic regions (grid of box prompts) matched by embedding similarity (offline);
    * a text prompt (``"gland"``; ``"gland, nuclei"`` is two phrases) or a list of them: each prompt is answered on
      both images by :func:`~..text.segment_text` through one route chosen once (``text_route``: "auto",
      "groundingdino", "clipseg", "library", or a :class:`~..text.TextRoute`; ``library``: the reference library for
      the offline route; ``text_options``: more :func:`~..text.segment_text` arguments such as ``box_threshold``;
      a named route downloads a missing model, told to ``downloads`` (default: ``progress``, at the start of its
      bar) and stopped by ``cancel``);
      its objects pair only with objects of the same phrase (see :class:`~..prompt_regions.TextRegions`);
    * a callable ``image -> regions`` (:class:`~..regions.RegionSource`; masks or :class:`~..regions.Region` with a
      ``prompt`` name, e.g. :class:`~..prompt_regions.OneShotRegions` for a labelled reference image), or a list of
      them, text prompts and callables mixed; regions only pair with regions of the same prompt;
    * a list of :class:`~..regions.RegionPair` or of ``(fixed_mask, moving_mask)`` tuples: pairs given directly.

    ``segmenter`` defaults to :func:`napari_promptseg.models.load_segmenter()` when one is needed.

    A pyramid (a multiscale layer's data, levels largest first: a whole slide, an OME-Zarr) is registered at its
    coarsest level with 2048 px along its longest side (:func:`registered_level`), as the CLI and the widget read
    one; only that level is read. The result's ``registered_level`` says which level of each image and how many
    times coarser it is; the warped image, labels and displacement are on the fixed level's grid
    (``viewer.add_image(result.warp_image(moving), **result.fixed_placement)``); points go in and come out in
    full-resolution pixels. ``fixed`` and ``moving`` may be napari Image layers (their pixels, named after them);
    over a scaled or moved fixed layer: ``**layer_placement(fixed_layer, result.fixed_placement)``.

    Example (in napari's console, over the sample *Registration pair with landmarks*)::

        fixed, moving = viewer.layers["registration fixed"], viewer.layers["registration moving"]
        result = register(fixed, moving)
        placement = layer_placement(fixed, result.fixed_placement)  # the fixed level's grid, over the fixed layer
        viewer.add_image(result.warp_image(moving), name="registration moving registered", rgb=True, **placement)
        landmarks = result.moving_points_to_fixed(viewer.layers["registration moving landmarks"])  # (x, y), full res
        viewer.add_points(landmarks[:, ::-1], name="registration moving landmarks registered", **layer_placement(fixed))
        print(result.quality["verdict"])  # good / check / poor
    """
    from ...io.layer_objects import is_layer, layer_pixels

    # the layers given, to read Points layers over them (result.moving_points_to_fixed); weak: a result kept in the
    # console does not hold a removed layer's pixels
    layers = {role: weakref.ref(obj) for role, obj in (("fixed", fixed), ("moving", moving)) if is_layer(obj)}
    fixed_name = fixed.name if is_layer(fixed) and fixed_name == "fixed" else fixed_name
    moving_name = moving.name if is_layer(moving) and moving_name == "moving" else moving_name
    fixed, moving = layer_pixels(fixed, "fixed"), layer_pixels(moving, "moving")
    opts = options or RegistrationOptions()
    method = resolve_method(method, prompts)
    if method == "intensity" and not (prompts is None or (isinstance(prompts, str) and prompts == "auto")):
        # the CLI and the widget refuse this too: the prompts would be dropped without a word
        raise PromptsegError(
            f"prompts {_prompts_text(prompts)} need method='prompts' or 'prompts+intensity', not 'intensity' "
            "(intensity registration uses no prompts)"
        )
    check_affine_optimizer(opts)  # before any work, whichever route runs
    report = progress or (lambda fraction, message: None)

    def check_cancel() -> None:
        if cancel is not None and cancel():
            raise CancelledError("registration cancelled")

    fixed_at, moving_at = (
        registered_level(image, channel_axis, name) for image, name in ((fixed, fixed_name), (moving, moving_name))
    )
    fixed_hwc, moving_hwc = check_pair(fixed_at.array, moving_at.array, channel_axis, fixed_name, moving_name)
    check_memory(fixed_hwc.shape, moving_hwc.shape, fixed_name, moving_name, method=method, segmenter=segmenter)
    levels = {
        "fixed": level_record(fixed_at.index, fixed_at.factors),
        "moving": level_record(moving_at.index, moving_at.factors),
    }
    fixed_shape, moving_shape = fixed_hwc.shape[:2], moving_hwc.shape[:2]
    timings: dict[str, float] = {}
    warnings: list[str] = []
    stages: list[dict[str, Any]] = []
    t0 = time.perf_counter()

    # seconds on a large pair, before any stage: said, and stopped by a cancel between the two images
    report(0.0, "preparing the grey images")
    images = IntensityImages.from_images(
        fixed_hwc, moving_hwc, opts.intensity_max_side, opts.gray, check_cancel=check_cancel
    )
    for gray, name in ((images.fixed, fixed_name), (images.moving, moving_name)):
        if gray.min() == gray.max():  # a blank or one-colour image (SimpleITK's moments start divides by its mass)
            raise PromptsegError(f"{name} holds one value everywhere (in gray): nothing to register")
    if method != "prompts":  # the routes with an intensity stage
        for small, full, name in ((images.fixed, fixed_hwc, fixed_name), (images.moving, moving_hwc, moving_name)):
            if min(full.shape[:2]) < MIN_INTENSITY_SIDE:  # small in itself: no crop of the other one helps
                raise PromptsegError(
                    f"{name} is {full.shape[0]} x {full.shape[1]} px: too small to register (the intensity stage "
                    f"needs at least {MIN_INTENSITY_SIDE} px along each side)"
                )
            if min(small.shape[:2]) < MIN_INTENSITY_SIDE:
                raise PromptsegError(
                    f"{name} ({full.shape[0]} x {full.shape[1]} px) is too small for the intensity stage, which sees "
                    f"both images at {opts.intensity_max_side} px along the longest side of either: that leaves it "
                    f"{small.shape[0]} x {small.shape[1]} px (at least {MIN_INTENSITY_SIDE} needed); crop the larger "
                    "image to the region both show"
                )
    search_starts: dict[str, Deformation] = {}
    if opts.global_search and method != "prompts":
        report(0.02, "coarse rotation and flip search")
        search_starts, _ = rotation_flip_search(images, opts)
        timings["search"] = time.perf_counter() - t0
    if method == "intensity":
        report(0.1, "intensity registration (SimpleITK)")
        t1 = time.perf_counter()
        starts: dict[str, Deformation | None] = {"moments": None, **search_starts}
        mirrored: dict[str, bool] = {}
        deformation, start, scores = intensity_route(images, opts, starts, check_cancel, stages, mirrored=mirrored)
        timings["intensity"] = time.perf_counter() - t1
        refinement: dict[str, Any] = {}
        if opts.joint_refinement:
            report(0.8, "joint refinement (local NCC)")
            deformation, refinement = _joint_stage(
                fixed_hwc, moving_hwc, deformation, [], images, opts, check_cancel, stages, timings
            )
        report(1.0, "done")
        _record_run(method, segmenter)
        return RegistrationResult(
            deformation,
            method,
            timings=timings,
            warnings=_stage_warnings(stages),
            start=start,
            start_scores=scores,
            refinement=refinement,
            stages=stages,
            quality=quality_report(images, deformation, stages, start_scores=scores, mirrored=mirrored, start=start),
            registered_level=levels,
            layers=layers,
        )

    if cancel is not None and is_text_prompts(prompts):  # the text routes stop inside long segmentations too
        text_options = {"cancel": cancel, **(text_options or {})}
    pairing = PairingReport()
    sources: list[dict] = []
    found: dict[str, Any] = {}

    def region_start() -> dict[str, Deformation]:
        """Region pairs and the transform fitted to them (with its affine part if it has a field): the region
        route's starts. Fills ``found`` with the pairs and their Dice."""
        report(0.0, "finding region pairs")
        t_regions = time.perf_counter()
        with auto_precision(REGION_PRECISION):
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
                downloads=downloads if downloads is not None or progress is None else _at_start(progress),
            )
        timings["regions"] = time.perf_counter() - t_regions
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
        starts = {"regions": deformation}
        if deformation.residual is not None:  # the dense field on top of the region affine
            affine_part = Deformation(fixed_shape, moving_shape, deformation.affine, None)
            reason = degenerate_reason(deformation, affine_part)
            stages.append(_stage("region field", reason))
            if reason is not None:
                starts["regions"] = affine_part
                dice_after = pair_dice(pairs, affine_part)
            else:
                starts["regions (affine)"] = affine_part
        found.update(pairs=pairs, dice_before=dice_before, dice_after=dice_after)
        return starts

    refinement: dict[str, Any] = {}
    mirrored = {}
    if method == "prompts":
        deformation = region_start()["regions"]
        start, scores = "regions", {"regions": images.score(deformation)}
    else:
        t2 = time.perf_counter()
        # several starts, each refined by intensity, the best by image similarity (no landmarks): the baseline's own
        # start competes, so the region route can only win where it aligns the images better; the baseline and
        # search starts are refined while the region route runs
        starts = {"moments": None, **search_starts}
        deformation, start, scores = intensity_route(
            images, opts, starts, check_cancel, stages, later_starts=region_start, mirrored=mirrored
        )
        timings["intensity"] = time.perf_counter() - t2 - timings["regions"] - timings["transform"]
        if not start.startswith("regions"):  # the region start lost: its field's check is a candidate's
            for stage in stages:
                if stage["stage"] == "region field":
                    stage["candidate"] = True
        if opts.joint_refinement:
            report(0.93, "joint refinement (local NCC + region Dice)")
            deformation, refinement = _joint_stage(
                fixed_hwc, moving_hwc, deformation, found["pairs"], images, opts, check_cancel, stages, timings
            )
        found["dice_after"] = pair_dice(found["pairs"], deformation)
    text = [s for s in sources if s["kind"] == "text"]
    route_info = {
        "text_route": text[0]["route"] if text else "",
        "text_reason": text[0].get("reason_fixed", "") if text else "",
        "prompt_sources": sources,
    }
    report(1.0, "done")
    _record_run(method, segmenter)
    warnings.extend(_stage_warnings(stages))
    return RegistrationResult(
        deformation=deformation,
        method=method,
        pairs=found["pairs"],
        pair_dice_before=found["dice_before"],
        pair_dice_after=found["dice_after"],
        pairing=pairing,
        timings=timings,
        warnings=warnings,
        start=start,
        start_scores=scores,
        refinement=refinement,
        stages=stages,
        quality=quality_report(images, deformation, stages, start_scores=scores, mirrored=mirrored, start=start),
        registered_level=levels,
        layers=layers,
        **route_info,
    )


def _prompts_text(prompts: object) -> str:
    """Prompts for a message: text as typed, anything else by its kind."""
    items = [prompts] if isinstance(prompts, str) or not isinstance(prompts, list | tuple) else list(prompts)
    return ", ".join(repr(p) if isinstance(p, str) else type(p).__name__ for p in items) or "[]"


def _joint_stage(
    fixed_hwc: np.ndarray,
    moving_hwc: np.ndarray,
    deformation: Deformation,
    pairs: list,
    images: IntensityImages,
    opts: RegistrationOptions,
    check_cancel: Callable[[], None],
    stages: list[dict[str, Any]],
    timings: dict[str, float],
) -> tuple[Deformation, dict[str, Any]]:
    """:func:`~.refine.joint_refine`, kept only if not degenerate and the images agree better by the judge of the
    starts (NMI; no landmarks). Returns the transform kept and the refinement record."""
    t0 = time.perf_counter()
    refined = joint_refine(fixed_hwc, moving_hwc, deformation, pairs, opts, check_cancel)
    before, after = images.score(deformation), images.score(refined)
    degenerate = degenerate_reason(refined, deformation)
    reason = degenerate or (None if after > before else f"no better by NMI ({after:.4f} <= {before:.4f})")
    refinement = {"accepted": reason is None, "score_before": before, "score_after": after, "reason": reason}
    stages.append(_stage("joint refinement", reason, degenerate=degenerate is not None))
    timings["refinement"] = time.perf_counter() - t0
    return (refined if reason is None else deformation), refinement


#: the smallest image side any route takes (region pairs need a few model pixels, the intensity stage a few samples)
MIN_SIDE = 8
#: the smallest side of the intensity stage's shrunk copies (longest side of both: intensity_max_side): SimpleITK
#: stopped with "All samples map outside moving image buffer" at 8 px (a 24 px image against a 1164 px one), not at 11
MIN_INTENSITY_SIDE = 10


#: the most channels a registration input may have (the region route's segmenter takes three colour inputs)
MAX_CHANNELS = 3


def pair_channel_axis(shape: tuple[int, ...], channel_axis: int | None, name: str = "image") -> int | None:
    """The channel axis of one image of a pair given one ``channel_axis`` for both: that axis where it is the image's
    shortest (channels), else None for a gray image or one with its channels last (an RGB fixed image beside a
    channels-first moving one). Refuses an axis that cannot be channels and more than :data:`MAX_CHANNELS`."""
    if channel_axis is None or len(shape) != 3:
        return None
    if not -3 <= channel_axis < 3:
        raise PromptsegError(f"{name}: channel axis {channel_axis} is out of range for shape {tuple(shape)}")
    n = shape[channel_axis]
    if n != min(shape):
        if shape[-1] in (1, 3, 4):  # RGB(A) or gray with a trailing axis: channels last
            return None
        raise PromptsegError(
            f"{name} has shape {tuple(shape)}: its axis {channel_axis} ({n} long) cannot be the channels (they are "
            "the shortest axis)"
        )
    if n > MAX_CHANNELS:
        raise PromptsegError(
            f"{name} has {n} channels on axis {channel_axis}: registration takes up to {MAX_CHANNELS}; keep the "
            "ones both images show (e.g. image[:3] in Python, or save them as their own file)"
        )
    return channel_axis


def registered_level(image: object, channel_axis: int | None = None, name: str = "image") -> PyramidLevel:
    """The plane :func:`register` reads of ``image``: a pyramid's (a multiscale layer's data, levels largest first)
    coarsest level with :data:`~napari_promptseg.io.multiscale.REGISTER_SIDE` px along its longest side, by the rule
    the CLI reads a file's and the widget a layer's (:func:`~napari_promptseg.io.multiscale.level_for_side`), with
    its factors along (rows, columns); any other image itself (level 0, factors 1). Only the shapes are looked at: a
    lazy (dask) level is not read here."""
    levels = pyramid_levels(image)
    if levels is None:
        return PyramidLevel(0, image, np.ones(2))
    shape = tuple(np.shape(levels[0]))
    axis = pair_channel_axis(shape, channel_axis, name)
    # (1, H, W) levels: the plane behind a leading axis of one, chosen as a channel axis first is (factor 1)
    single = axis is None and is_single_plane(shape)
    if not (len(shape) == 2 or (len(shape) == 3 and (axis is not None or single or shape[-1] <= 4))):
        return PyramidLevel(0, levels[0], np.ones(2))  # a stack's: check_pair refuses it by its shape, unread
    if axis is not None and axis % 3 == 1:  # level_for_side takes the plane's axes together
        raise PromptsegError(
            f"{name}: a pyramid of shape {shape} with its channels on axis 1 (between its rows and columns); give its "
            "channels first or last"
        )
    # level_for_side's plane is the last two of its first ndim axes: channels first count as one more axis (of
    # factor 1), channels last (or none) are left out
    level = level_for_side(levels, REGISTER_SIDE, 3 if (axis is not None and axis % 3 == 0) or single else 2)
    return level._replace(factors=level.factors[-2:])


def check_pair(
    fixed: np.ndarray, moving: np.ndarray, channel_axis: int | None, fixed_name: str, moving_name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Both images must be single 2D planes (gray, RGB or multichannel with ``channel_axis``)."""
    check_pixels(fixed, fixed_name)
    check_pixels(moving, moving_name)
    # a lazy (dask) image is read after its shape is checked: a stack was read whole to be refused
    f, m = (a if hasattr(a, "shape") else np.asarray(a) for a in (full_resolution(fixed), full_resolution(moving)))

    def is_plane(a: np.ndarray) -> bool:
        # two channels last (an OME-Zarr's or a pyramidal TIFF's (Y, X, C)) as as_channels_last reads them: a stack
        # of two planes would be (2, H, W); a stack of one plane, (1, H, W), is that plane (as segment() reads it)
        if a.ndim < 2:  # no image (None, a number): its shape's last axis was looked up, an IndexError
            return False
        two_last = a.shape[-1] == 2 and min(a.shape[:2]) >= 8
        flat = a.shape[-1] in (1, 3, 4) or two_last or is_single_plane(a.shape)
        return a.ndim == 2 or (a.ndim == 3 and (channel_axis is not None or flat))

    # only the image at fault named (a grey fixed image was named beside a channels-first moving one, as if at
    # fault too), with the way on for channels first
    wrong = [(a, name) for a, name in ((f, fixed_name), (m, moving_name)) if not is_plane(a)]
    if wrong:
        hint = ""
        if channel_axis is None and all(a.ndim == 3 for a, _ in wrong):
            their = "its" if len(wrong) == 1 else "their"
            hint = f"; if {their} first axis holds channels, give channel_axis=0 (CLI: --channel-axis 0)"
        raise PromptsegError(
            " and ".join(f"{name} has shape {a.shape} ({a.ndim}D)" for a, name in wrong)
            + ": registration needs two 2D images (gray, RGB, or multichannel with channel_axis); pick one plane of a "
            f"stack first{hint}"
        )
    if channel_axis is not None and f.ndim == m.ndim == 2:  # one of the pair may be gray, not both
        raise PromptsegError(
            f"channel_axis={channel_axis} given, but {fixed_name} {f.shape} and {moving_name} {m.shape} are 2D (gray: "
            "no channel axis); drop channel_axis (CLI: --channel-axis), or pass the images with their channels"
        )
    axes = [pair_channel_axis(a.shape, channel_axis, name) for a, name in ((f, fixed_name), (m, moving_name))]
    if channel_axis is not None and axes == [None, None]:  # two RGB images: dropped without a word, as the widget
        raise PromptsegError(  # refuses it
            f"channel_axis={channel_axis} given, but neither {fixed_name} {f.shape} nor {moving_name} {m.shape} has "
            "its channels on that axis (gray or RGB, colours last); drop channel_axis (CLI: --channel-axis)"
        )
    pair = tuple(
        as_channels_last(np.asarray(a), channel_axis=axis, name=name)
        for a, axis, name in ((f, axes[0], fixed_name), (m, axes[1], moving_name))
    )
    for image, name in zip(pair, (fixed_name, moving_name), strict=True):
        if min(image.shape[:2]) < MIN_SIDE:
            raise PromptsegError(f"{name} is {image.shape[0]} x {image.shape[1]} px: too small to register")
    return pair


#: what register() and the warp of the moving image hold beyond the two images, by the fixed plane's and the moving
#: plane's pixels, measured by benchmarks/bench_registration_memory.py (peak RSS above the RSS with both images read):
#: method "intensity", RGB pairs of 1500 x 2000 to 6000 x 8000 px took 0.32-0.66 GB, a least-squares fit 9.7 bytes
#: per fixed pixel, 4.5 per moving one and 0.28 GB of any size (grey pairs: 5.4 per pixel of both), which
#: over-predicts the 6000 x 8000 pair (0.96 GB for 0.66); "prompts+intensity" (LiteMedSAM regions) took 0.56 and
#: 0.71 GB on the RGB pairs of 1500 x 2000 and 3000 x 4000 px: 8 bytes per pixel of both and 0.52 GB. Asked, with a
#: margin of about a third over the larger of the two: 14 and 8 bytes per pixel (64 and 24, from before the lean grey
#: copies and the channel-by-channel warp, refused pairs that needed half the memory free)
FIXED_BYTES_PER_PIXEL = 14
MOVING_BYTES_PER_PIXEL = 8
#: the part of any size is paid once per process (bench_registration_memory.py --parts, a 300 x 400 px RGB pair):
#: a first "intensity" run took 0.18 GB (SimpleITK's import 0.09 GB, torch's and SimpleITK's first buffers); a first
#: region run ("prompts+intensity", LiteMedSAM) 0.28 GB after an intensity run with the segmenter loaded, 0.41 GB
#: loading it, 0.43 and 0.60 GB as the process's first run; a run after one of its kind, 0.03-0.04 GB. Asked: the
#: parts this process has not paid yet, each with a margin (0.3 GB for a first run, 0.4 GB for a segmenter's first
#: region run, 0.15 GB more to load the default one), else what a repeat run needs: a small pair is not refused for
#: what is loaded already (0.7 GB was asked of every run)
FIRST_RUN_BYTES = 300_000_000
FIRST_REGION_RUN_BYTES = 400_000_000
SEGMENTER_LOAD_BYTES = 150_000_000
REPEAT_RUN_BYTES = 60_000_000
#: a process's first registration, every first at once: the most the budget's part of any size asks
FIXED_PART_BYTES = FIRST_RUN_BYTES + FIRST_REGION_RUN_BYTES + SEGMENTER_LOAD_BYTES
#: what this process has run already: the intensity stages (SimpleITK; method "prompts" runs none), and the region
#: route with each segmenter (None: the default one register() loads); weak: a segmenter dropped and loaded again
#: pays its weights again
_ran_before: dict[str, bool] = {"intensity": False, "default segmenter": False}
_segmenters_run: weakref.WeakSet = weakref.WeakSet()


def _first_run_bytes(method: str, segmenter: object | None) -> int:
    """The one-off part of the memory budget this process has not paid yet for a run of ``method`` with
    ``segmenter`` (None: the default one, loaded by the run unless a region run loaded it before)."""
    needed = 0 if _ran_before["intensity"] else FIRST_RUN_BYTES  # a first "prompts" run: counted as one too
    if method != "intensity":
        if segmenter is None:
            needed += 0 if _ran_before["default segmenter"] else FIRST_REGION_RUN_BYTES + SEGMENTER_LOAD_BYTES
        else:
            needed += 0 if segmenter in _segmenters_run else FIRST_REGION_RUN_BYTES
    return needed


def _record_run(method: str, segmenter: object | None) -> None:
    """A registration of ``method`` ran to its end: its one-off part is paid in this process."""
    if method != "prompts":
        _ran_before["intensity"] = True
    if method == "intensity":
        return
    if segmenter is None:
        _ran_before["default segmenter"] = True
        return
    with contextlib.suppress(TypeError):  # not weakly referable: asked again next time, as a first run
        _segmenters_run.add(segmenter)


def check_memory(
    fixed_shape: tuple[int, ...],
    moving_shape: tuple[int, ...],
    fixed_name: str,
    moving_name: str,
    *,
    method: str = "intensity",
    segmenter: object | None = None,
) -> None:
    """Refuse, before any work, a pair whose registration and warp need more memory (and swap) than is free now:
    by the bytes per pixel above, a pair of 20000 x 20000 px images (a 0.4 GB grey PNG) is asked 9.5 GB, and
    without this check would run until the system killed the process, without a word of why. A pyramid is registered
    at one level (:func:`registered_level`), whose shapes are given here. ``method`` (resolved) and ``segmenter``
    (None: the default one register() loads) say which one-off parts a first run of them still loads.

    Not measured: the text routes' models (GroundingDINO, CLIPSeg) that text prompts load; their weights and
    activations are not in this budget (a pair it lets run may still run out of memory there)."""
    import psutil  # distributed's dependency

    first = _first_run_bytes(method, segmenter)
    needed = (
        max(first, REPEAT_RUN_BYTES)
        + FIXED_BYTES_PER_PIXEL * int(np.prod(fixed_shape[:2]))
        + MOVING_BYTES_PER_PIXEL * int(np.prod(moving_shape[:2]))
    )
    # swap too: a run that fits there is slow, not killed
    free = psutil.virtual_memory().available + psutil.swap_memory().free
    if needed <= free:
        return
    once = (
        f" ({first / 1e9:.1f} GB of it once per process, the libraries and model a first {method} run loads)"
        if first
        else ""
    )
    raise PromptsegError(
        f"{fixed_name} ({fixed_shape[0]} x {fixed_shape[1]} px) and {moving_name} ({moving_shape[0]} x "
        f"{moving_shape[1]} px): registering them and warping the moving image needs about {needed / 1e9:.1f} GB of "
        f"memory{once}, more than the {free / 1e9:.1f} GB (and swap) free (nothing was done); save them as pyramids "
        f"(OME-TIFF, OME-Zarr: registered at a level of about {REGISTER_SIDE} px), or downsample them"
    )


def _at_start(progress: ProgressCallback) -> ProgressCallback:
    """``progress`` told a model download's messages at the start of its bar: the bytes of a download are no share
    of the registration's work."""
    return lambda fraction, message: progress(0.0, message)
