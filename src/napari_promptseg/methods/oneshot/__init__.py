"""One-shot reference segmentation: SAT (Segment Any Tissue) and PerSAM-/Matcher-style strategies.

One labelled reference (image + mask) -> the same tissue in other images, with no training.

SAT, as described by Liu et al. (Medical Image Analysis 2025) and its public predecessor GBMSeg (MICCAI 2024):

1. patch features of reference and target (:mod:`...models.features`), L2-normalised;
2. reference patches labelled foreground (all pixels in the mask) / background (none in it); mixed ones dropped;
3. correspondence matrix of cosine similarities; forward match (nearest target patch of every reference fg patch)
   and backward match (nearest reference patch of that target patch): a target patch is a positive only when its
   back-match is a reference fg patch; the same for background -> negatives (GBMSeg step 3);
4. points at patch centres in target pixels;
5. physical space: exclusive sampling (negatives within ``exclusion_radius`` of a positive are dropped) and sparse
   sampling (greedy clusters within a radius, keep per cluster the point farthest on average from the opposite set)
   with GBMSeg's order of operations;
6. SAT's additions: a bank of hyper-parameter settings, each giving a prompt scheme -> mask; every mask is scored
   without target ground truth and the best kept (the "cyclic feedback loop"); several references -> ensemble.

Where the paper leaves a detail open, the choice is marked ``GUESS(SAT)`` in a comment and exposed as a parameter.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from scipy import ndimage

from ...callbacks import ProgressCallback
from ...errors import CancelledError, PromptsegError, check_fraction
from ...io.multiscale import file_level, whole_image_scale
from ...io.reference_pair import check_reference
from ...models.features import PatchFeatureExtractor, SegmenterFeatures
from ...models.preprocessing import (
    Normalization,
    PyramidRead,
    as_channels_last,
    in_memory,
    is_blank,
    read_pyramid_level,
)
from ...models.protocols import PromptableSegmenter
from ...tiling import choose_scale
from .correspondence import (
    Correspondence,
    NoMatchError,
    correspond,
    label_reference_patches,
    self_affinity,
    transfer_confidence,
)
from .decoding import low_res_to_grid, score_mask
from .schemes import SchemeBuilder, build_scheme, exclusive_sampling, sparse_sampling
from .settings import (
    BOX_MODES,
    STRATEGIES,
    BoxMode,
    OneShotResult,
    PromptScheme,
    SatSetting,
    SchemeDiagnostics,
    Strategy,
    default_bank,
)
from .strategies import DEFAULT_RULE, SELECTION_RULES, _Pair, run_matcher, run_persam, run_sat

if TYPE_CHECKING:
    from ..volume import StackResult

__all__ = [
    "BOX_MODES",
    "DEFAULT_RULE",
    "NoMatchError",
    "SELECTION_RULES",
    "STRATEGIES",
    "BoxMode",
    "Correspondence",
    "OneShotResult",
    "ProgressCallback",
    "PromptScheme",
    "SatSetting",
    "SchemeBuilder",
    "SchemeDiagnostics",
    "Strategy",
    "build_scheme",
    "check_reference",
    "correspond",
    "default_bank",
    "exclusive_sampling",
    "label_reference_patches",
    "low_res_to_grid",
    "run_matcher",
    "run_persam",
    "run_sat",
    "score_mask",
    "segment_like",
    "target_file_level",
    "target_scale",
    "self_affinity",
    "sparse_sampling",
    "transfer_confidence",
]


# ---------------------------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------------------------
#: segment_like's options a stack target's planes are each segmented with, as given
_OPTIONS = (
    "segmenter",
    "extractor",
    "strategy",
    "bank",
    "use_points",
    "ensemble",
    "keep_largest",
    "fg_purity",
    "score_temperature",
    "channels",
    "normalize",
    "cancel",
    "diagnostics",
    "warn_many",
)


def _default_segmenter() -> PromptableSegmenter:
    from ...models import load_segmenter

    return load_segmenter()


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def segment_like(
    reference: np.ndarray | Sequence[np.ndarray],
    reference_mask: np.ndarray | Sequence[np.ndarray],
    targets: np.ndarray | Sequence[np.ndarray],
    *,
    segmenter: PromptableSegmenter | None = None,
    extractor: PatchFeatureExtractor | None = None,
    strategy: Strategy = "sat",
    bank: Sequence[SatSetting] | None = None,
    use_points: bool | None = None,
    ensemble: Literal["vote", "union"] = "vote",
    keep_largest: bool = False,
    fg_purity: float = 1.0,
    score_temperature: float | None = None,
    channel_axis: int | None = None,
    channels: list[int] | None = None,
    normalize: Normalization = "auto",
    names: str | Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
    diagnostics: bool = False,
    warn_many: bool = True,
) -> list[OneShotResult | StackResult]:
    """Segment in every target what the reference mask marks in the reference image(s).

    ``reference``/``reference_mask``: one image + mask, or lists of them (ensemble SAT: each reference segments the
    target on its own; ``ensemble="vote"`` keeps pixels whose mean probability over references is > 0.5,
    ``"union"`` any reference's mask). ``targets``: one 2D image or a list of them.
    ``segmenter`` defaults to LiteMedSAM; ``extractor`` to the segmenter's own encoder
    (:class:`~...models.features.SegmenterFeatures`). ``use_points`` (default: the segmenter's ``points_reliable``)
    adds the scheme's points to its boxes. ``keep_largest``: GBMSeg's optional largest-component post-processing.
    ``diagnostics``: SAT keeps every candidate mask of its bank on each result (:class:`SchemeDiagnostics`).
    ``warn_many``: warn when a reference holds several objects (callers that chose one region say False).
    A target that is a pyramid (a multiscale layer's data) is read at its coarsest level with 1024 px along its
    longest side, as the CLI reads an OME-Zarr: its mask, labels, points and boxes come back in full-resolution
    pixels, its probability map stays at that level's (``probability_factor``; in napari:
    ``viewer.add_image(result.probability, **result.probability_placement)`` lies over the labels).
    napari Image and Labels layers are taken as their pixels (targets named after their layers). A stack layer
    ((Z, Y, X), an RGB (Z, Y, X, 3), with ``channel_axis`` a multichannel one) is taken as ``promptseg oneshot`` and
    the One-shot widget take a stack: as a reference, the one plane its mask's (Z, Y, X) labels mark; as a target,
    plane by plane with ids linked across planes (:func:`~..volume.segment_stack`): that target's result is then a
    :class:`~..volume.StackResult`, ``labels`` the layer's (Z, Y, X) and ``planes`` each plane's
    :class:`OneShotResult`; a multiscale stack target's planes read at the one level ``promptseg oneshot`` reads a
    stack pyramid at (the whole plane's; ``pyramid_level``, ``level_factors`` and ``level_labels`` on the result, its
    ``labels`` back at full resolution lazily, ``planes`` in the level's pixels).

    Example (in napari's console: one nucleus painted on one plane of a (Z, Y, X) stack, its like sought plane
    by plane)::

        (result,) = segment_like(viewer.layers["stack"], viewer.layers["one nucleus"], viewer.layers["stack"])
        viewer.add_labels(result.labels, name="like it", **layer_placement(viewer.layers["stack"]))
    """
    from ...io.layer_objects import is_layer, layer_pixels, layers_pixels

    if names is None and not isinstance(targets, (list, tuple)) and is_layer(targets):
        names = [targets.name]
    elif names is None and isinstance(targets, (list, tuple)) and all(is_layer(t) for t in targets):
        names = [t.name for t in targets]
    from ..volume import is_stack_layer
    from .stack_layers import over_stack_targets, reference_planes

    given = {k: v for k, v in locals().items() if k in _OPTIONS}
    reference, reference_mask, reference_axis = reference_planes(reference, reference_mask, channel_axis)
    if any(is_stack_layer(t, channel_axis) for t in _as_list(targets)):
        # the models loaded once for every plane of every target
        segmenter = segmenter or _default_segmenter()
        given |= {"segmenter": segmenter, "extractor": extractor or SegmenterFeatures(segmenter)}
        target_list = _as_list(targets)
        listed = [names] if isinstance(names, str) else names
        target_names = list(listed) if listed is not None else [f"target {i + 1}" for i in range(len(target_list))]
        if len(target_names) != len(target_list):
            raise PromptsegError(f"{len(target_names)} names for {len(target_list)} targets; give one name per target")

        def one_target(target: object, name: str, axis: int | None) -> OneShotResult:
            if axis != reference_axis and axis is not None:  # one channel axis for references and targets: last
                target, axis = np.moveaxis(np.asarray(layer_pixels(target, "target")), axis, -1), -1
            options = {**given, "channel_axis": axis if axis is not None else reference_axis}
            return segment_like(reference, reference_mask, target, names=[name], **options)[0]

        return over_stack_targets(target_list, target_names, channel_axis, one_target, progress, cancel)
    channel_axis = reference_axis
    reference, reference_mask = layers_pixels(reference, "reference"), layers_pixels(reference_mask, "reference mask")
    targets = layers_pixels(targets, "target")
    if strategy not in STRATEGIES:
        raise PromptsegError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if ensemble not in ("vote", "union"):
        raise PromptsegError(f"ensemble must be 'vote' or 'union', got {ensemble!r}")
    check_fraction(fg_purity, "fg_purity", zero=False)  # the share of a reference cell inside the mask
    temperature_ok = isinstance(score_temperature, numbers.Real) and 0 < score_temperature < np.inf
    if score_temperature is not None and not temperature_ok:
        raise PromptsegError(f"score_temperature must be a positive number, got {score_temperature!r}")
    segmenter = segmenter or _default_segmenter()
    extractor = extractor or SegmenterFeatures(segmenter)
    # GUESS(box-only): LiteMedSAM was trained on boxes, so by default its schemes are decoded from boxes only
    use_points = segmenter.points_reliable if use_points is None else use_points
    bank = (
        list(bank)
        if bank is not None
        else default_bank(
            ("points", "region", "components") if not use_points else ("points", "region", "components", "none")
        )
    )
    if not bank:
        raise PromptsegError("the hyper-parameter bank is empty")
    refs, masks = _as_list(reference), _as_list(reference_mask)
    if len(refs) != len(masks):
        raise PromptsegError(f"{len(refs)} reference images but {len(masks)} reference masks")
    target_list = _as_list(targets)
    if not target_list:
        raise PromptsegError("no target image given")
    if isinstance(names, str):  # one target's name, not one name per letter
        names = [names]
    names = list(names) if names is not None else [f"target {i + 1}" for i in range(len(target_list))]
    if len(names) != len(target_list):  # found at the first target, after the references' features
        raise PromptsegError(f"{len(names)} names for {len(target_list)} targets; give one name per target")
    report = progress or (lambda fraction, message: None)

    def check_cancel() -> None:
        if cancel is not None and cancel():
            raise CancelledError("cancelled")

    t0 = time.perf_counter()
    ref_feats, ref_masks, ref_self = [], [], []
    for i, (img, m) in enumerate(zip(refs, masks, strict=True)):
        rname = f"reference {i + 1}" if len(refs) > 1 else "reference"
        hwc = as_channels_last(img, channel_axis=channel_axis, channels=channels, name=rname)
        ref_masks.append(check_reference(hwc, m, rname, f"{rname} mask") > 0)
        report(0.0, f"features of {rname}")
        ref_feats.append(extractor.features(hwc, normalize=normalize, name=rname))
        ref_self.append(self_affinity(ref_feats[-1]))
        check_cancel()
    ref_time = time.perf_counter() - t0
    from ..instances import is_many_objects  # lazy: instances imports this module

    # the CLI and the widgets dispatch such references to the instances pipeline; this function is SAT's one region
    many = warn_many and any(is_many_objects(m) for m in masks)

    results = []
    for k, (target, tname) in enumerate(zip(target_list, names, strict=True)):
        report(k / len(target_list), f"{tname}: features")
        timings = {"reference_features_s": ref_time if k == 0 else 0.0}
        t0 = time.perf_counter()
        level = read_pyramid_level(target, whole_image_scale, channel_axis)
        if level is not None:
            target = level.array
        hwc = in_memory(as_channels_last(target, channel_axis=channel_axis, channels=channels, name=tname), tname)
        if is_blank(hwc):
            # one value everywhere (an empty canvas, a blank plane of a stack) holds no object: the decoder's best
            # guess there was a mask all the same; segment and the instances pipeline leave such an image empty
            blank = _empty_result(
                hwc.shape[:2], strategy, f"{tname}: the image holds one value everywhere: nothing to segment"
            )
            blank.timings = timings
            results.append(_at_full_resolution(blank, level))
            continue
        tfeat = extractor.features(hwc, normalize=normalize, name=tname)
        embedding = segmenter.embed(hwc, normalize=normalize, name=tname)  # shared with the features by default
        timings["features_s"] = time.perf_counter() - t0
        check_cancel()
        per_ref = []
        search = decode = 0.0
        for rf, rm, rs in zip(ref_feats, ref_masks, ref_self, strict=True):
            t0 = time.perf_counter()
            corr = correspond(rf, rm, tfeat, fg_purity=fg_purity, name=tname)
            pair = _Pair(corr, segmenter, embedding, use_points, rf)
            search += time.perf_counter() - t0
            t0 = time.perf_counter()
            if strategy == "sat":
                res = run_sat(pair, bank, score_temperature, diagnostics)
            elif strategy == "persam":
                res = run_persam(pair)
            else:
                res = run_matcher(pair)
            decode += time.perf_counter() - t0  # prompt building + decoding + scoring
            res.warnings.extend(corr.warnings)
            _check_transfer(res, corr.affinity, rs, tname)
            per_ref.append(res)
            check_cancel()
        timings["match_s"] = search
        timings["schemes_decode_score_s"] = decode
        result = per_ref[0] if len(per_ref) == 1 else _combine(per_ref, ensemble)
        if keep_largest and result.mask.any():
            lab, n = ndimage.label(result.mask)
            sizes = ndimage.sum_labels(result.mask, lab, index=np.arange(1, n + 1))
            result.mask = lab == (int(np.argmax(sizes)) + 1)
            result.labels = result.mask.astype(np.uint16)
        result.timings = timings
        if not result.mask.any():
            result.warnings.append(f"{tname}: the chosen prompts gave an empty mask")
        if many:
            result.warnings.append(
                "the reference labels hold several objects, and segment_like gives one region (SAT): for every "
                "object like them, as instance labels, use methods.instances.segment_instances_like (what the CLI "
                "and the One-shot widget do with such a reference)"
            )
        results.append(_at_full_resolution(result, level))
    report(1.0, "done")
    return results


def target_scale(plane_shape: Sequence[int], input_size: int, object_size: float | None) -> float:
    """The working scale (model-input pixels per full-resolution pixel) a one-shot run reads a target pyramid at, its
    full-resolution plane ``plane_shape`` (rows, columns): many instances (``object_size``: the reference objects'
    diameter in full-resolution pixels, given or the exemplars') at their working scale for a model of
    ``input_size`` px; one region (None) at the scale a whole-image method reads. The one rule of the CLI and the
    One-shot widget's target layer and folder."""
    if object_size is None:
        return whole_image_scale(plane_shape)
    return choose_scale(tuple(plane_shape)[:2], input_size, object_size).scale


def target_file_level(
    path: str | Path, image: object, input_size: int, object_size: float | None = None
) -> tuple[Any, int, float]:
    """The pyramid level a one-shot run reads of a target file (``image`` as read from ``path``: a pyramid's full
    resolution, lazily) at :func:`target_scale`, its index and its downsampling factor. Any other file: itself,
    level 0, factor 1. No pixel is read."""
    return file_level(path, image, target_scale(np.shape(image)[:2], input_size, object_size))


def _at_full_resolution(result: OneShotResult, level: PyramidRead | None) -> OneShotResult:
    """A result found on a pyramid level, with its mask, labels, points and boxes on the full-resolution grid (as
    the CLI writes and reports them), each reference's result too; the probability map stays the level's
    (``probability_factor``)."""
    if level is None:
        return result
    for one in result.per_reference:  # in the combined result's frame: a reference's mask is compared with it
        _at_full_resolution(one, level)
    result.labels = level.labels_to_full(result.labels)
    result.mask = result.labels > 0
    result.positives = level.to_full(result.positives)
    result.negatives = level.to_full(result.negatives)
    result.boxes = level.to_full(result.boxes)
    result.probability_factor = level.factor
    return result


def _empty_result(shape: tuple[int, int], strategy: str, warning: str) -> OneShotResult:
    return OneShotResult(
        mask=np.zeros(shape, bool),
        probability=np.zeros(shape, np.float32),
        labels=np.zeros(shape, np.uint16),
        positives=np.zeros((0, 2), np.float32),
        negatives=np.zeros((0, 2), np.float32),
        boxes=np.zeros((0, 4), np.float32),
        score=0.0,
        strategy=strategy,
        warnings=[warning],
    )


def _check_transfer(result: OneShotResult, affinity: float, reference_self_affinity: float, name: str) -> None:
    """Scale the score by the transfer confidence; below 0.5 say that the reference does not transfer."""
    result.transfer = transfer_confidence(affinity, reference_self_affinity)
    result.score = float(result.score) * result.transfer
    if result.transfer < 0.5:
        result.warnings.append(
            f"{name}: this reference does not transfer (its patches match this image's at {affinity:.2f} mean "
            f"similarity, its own at {reference_self_affinity:.2f}: another kind of image?); the mask is a guess"
        )


def _combine(per_ref: list[OneShotResult], ensemble: str) -> OneShotResult:
    # GUESS(SAT): the paper ensembles several references without public details; "vote" averages the decoder's
    # probabilities over references (a soft majority vote, no tie rule needed); "union" keeps any reference's mask
    probability = np.mean([r.probability for r in per_ref], axis=0).astype(np.float32)
    mask = probability > 0.5 if ensemble == "vote" else np.any([r.mask for r in per_ref], axis=0)
    return OneShotResult(
        mask=mask,
        probability=probability,
        labels=mask.astype(np.uint16),
        positives=np.concatenate([r.positives for r in per_ref]),
        negatives=np.concatenate([r.negatives for r in per_ref]),
        boxes=np.concatenate([r.boxes for r in per_ref]),
        score=float(np.mean([r.score for r in per_ref])),
        transfer=float(np.mean([r.transfer for r in per_ref])),
        strategy=f"{per_ref[0].strategy}-ensemble-{ensemble}",
        schemes=[s for r in per_ref for s in r.schemes],
        warnings=[w for r in per_ref for w in r.warnings],
        per_reference=per_ref,
    )
