"""Segment what a text prompt names in one image, through the route chosen (:mod:`.routes`)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ...callbacks import ProgressCallback
from ...errors import CancelledError, PromptsegError
from ...models.preprocessing import Normalization, as_channels_last, full_resolution, read_pyramid_level
from ...models.protocols import PromptableSegmenter, TextGrounder, TextHeatmapper, TextSegmenter
from ..defaults import BOX_THRESHOLD, HEATMAP_THRESHOLD, TEXT_THRESHOLD
from ..prompt_templates import PromptAttributes, expand_prompt
from .answers import (
    _grounding_route,
    _heatmap_route,
    _library_route,
    _Request,
    prompt_cut_warnings,
    prompt_vocabulary_warnings,
    text_working_scale,
)
from .phrases import prompt_text, said_prompt, split_phrases
from .result import TextResult
from .routes import Route, TextRoute, check_model_kinds, choose_route, unused_text_model_warnings
from .trained_channels import read_as_trained, recorded_channels

if TYPE_CHECKING:
    from ..volume import StackResult


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
    box_threshold: float = BOX_THRESHOLD,
    text_threshold: float = TEXT_THRESHOLD,
    nms_iou: float = 0.5,
    heatmap_threshold: float = HEATMAP_THRESHOLD,
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
) -> TextResult | StackResult:
    """Instance labels of what ``prompt`` names in ``image`` ("nuclei"; "gland, stroma" or ["gland", "stroma"] for
    two).

    ``route``: "auto" takes the trained ``text_model`` when given, else the first that can answer of
    GroundingDINO, CLIPSeg (whose weights are on disk: auto downloads nothing), the reference library (or pass a
    :class:`TextRoute` from :func:`choose_route` to reuse loaded models over many images). ``template``: medvlsm
    prompt level p0-p9 (:func:`~..prompt_templates.expand_prompt`) applied to each phrase for the vision-language
    models. ``refine``: decode CLIPSeg components with the segmenter (default LiteMedSAM) instead of thresholding
    alone. The library route uses ``top_k`` matching exemplars above ``min_similarity`` (see
    :func:`~..library.match_library`). ``factor``: ``image`` is a pyramid level that many times coarser than full
    resolution (the pixels library exemplars are saved at): the objects of an instances entry are sought that much
    smaller, as the one-shot CLI does on a level. A pyramid (a multiscale layer's data) is read at its coarsest level
    with 1024 px along its longest side, as the CLI reads an OME-Zarr, or, when the library answers with
    many-instances entries, at the level their objects need (:func:`~.answers.text_working_scale`): the labels and
    boxes come back in full-resolution pixels, the heatmap stays at that level's (``heatmap_factor``,
    ``heatmap_placement``). ``image`` may be a napari Image layer (its pixels; its name names it in messages).
    A stack layer ((Z, Y, X), an RGB (Z, Y, X, 3), with ``channel_axis`` a multichannel one) is segmented plane by
    plane, its objects' ids linked across planes, as ``promptseg text`` and the Text widget segment a stack
    (:func:`~..volume.segment_stack`, the models loaded once): a :class:`~..volume.StackResult` is returned, its
    ``labels`` the layer's (Z, Y, X) and ``planes`` each plane's :class:`TextResult` (route, boxes, heatmap). A
    multiscale stack layer (a z-stack OME-Zarr's levels) has every plane read at the one level ``promptseg text``
    reads a stack pyramid at (:func:`~..volume.levels.segment_stack_at_level`): the result's ``pyramid_level`` and
    ``level_factors`` say it, its ``labels`` come back at full resolution lazily (``level_labels``: the level's),
    ``planes`` in the level's pixels. A bare 3D array is not taken for a stack: pass it to
    :func:`~..volume.segment_stack` as below, or a plane.

    Example (in napari's console, over a (Z, Y, X) stack of nuclei)::

        result = segment_text(viewer.layers["stack"], "nuclei")
        viewer.add_labels(result.labels, name="nuclei in 3D", **layer_placement(viewer.layers["stack"]))
        print(result.objects, "objects;", result.planes[0].route, "-", result.planes[0].reason)
    """
    given = dict(locals())  # every argument as given: a stack layer's planes are each segmented with them
    from ...io.layer_objects import is_layer, layer_pixels

    name = image.name if is_layer(image) and name == "image" else name
    layer, image = given["image"], layer_pixels(image)
    if not 0 <= box_threshold <= 1 or not 0 <= text_threshold <= 1 or not 0 <= heatmap_threshold <= 1:
        raise PromptsegError("box, text and heatmap thresholds must lie in [0, 1]")
    from ..library import check_library_settings

    check_library_settings(top_k, min_similarity)  # as the thresholds: before any model loads
    check_model_kinds(
        grounder=grounder,
        heatmapper=heatmapper,
        library=library,
        weights=weights,
        text_model=text_model,
        segmenter=segmenter,
    )
    report = progress or (lambda fraction, message: None)
    prompt = prompt_text(prompt)
    phrases = split_phrases(prompt)  # bad input is refused before any model loads
    from ...io.multiscale import whole_image_scale

    # a trained model's images read as it was trained on them (its channel axis when none is given)
    channel_axis, channels, read_with = read_as_trained(
        recorded_channels(_trained_source(route, text_model, weights)),
        np.shape(full_resolution(image)),
        channel_axis,
        channels,
        name,
    )
    from ..volume import is_stack_layer

    if is_stack_layer(layer, channel_axis):
        return _over_stack(layer, given, name, channel_axis)
    original, base_factor = image, factor
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
    if segmenter is None and chosen.needs_segmenter(refine):
        from ...models import load_segmenter

        segmenter = load_segmenter(device=device)
    if chosen.route == "library":  # its many-instances entries may need a finer level than the whole image's
        finer = read_pyramid_level(
            original,
            lambda shape: text_working_scale(
                shape, prompt, chosen, segmenter.input_size, top_k=top_k, min_similarity=min_similarity
            ),
            channel_axis,
        )
        if (finer.factor if finer else 1.0) != (level.factor if level else 1.0):
            level, factor = finer, base_factor * (finer.factor if finer else 1.0)
            hwc = as_channels_last(
                finer.array if finer else original, channel_axis=channel_axis, channels=channels, name=name
            )
    if chosen.route == "trained":
        phrases = [" ".join(prompt.split())]  # one sentence: trained prompts carry commas
    request = _Request(
        hwc=hwc,
        prompt=prompt,
        phrases=phrases,
        model_prompts=[expand_prompt(p, template, attributes) for p in phrases],
        chosen=chosen,
        segmenter=segmenter if chosen.needs_segmenter(refine) else None,
        normalize=normalize,
        report=report,
        cancel=cancel,
        factor=float(factor),
        name=name,
    )
    cut_warnings = prompt_cut_warnings(chosen, prompt, template=template, attributes=attributes, once_per_process=True)
    cut_warnings += prompt_vocabulary_warnings(chosen, prompt)
    t0 = time.perf_counter()
    if chosen.route == "groundingdino":
        result = _grounding_route(request, box_threshold, text_threshold, nms_iou)
    elif chosen.route in ("clipseg", "trained"):
        result = _heatmap_route(request, heatmap_threshold)
    else:
        result = _library_route(request, top_k, min_similarity)
    timings["segment_s"] = time.perf_counter() - t0
    result.timings = timings
    result.image_channels = read_with
    result.warnings[:0] = unused_text_model_warnings(route, text_model, weights) + cut_warnings
    if not result.phrases:
        result.warnings.append(f"{name}: nothing found for {said_prompt(prompt)} ({result.reason})")
    report(1.0, "done")
    if level is not None:
        result.labels = level.labels_to_full(result.labels)
        result.boxes = level.to_full(result.boxes)
        result.heatmap_factor = level.factor
    return result


def _trained_source(route: object, text_model: object, weights: str | None) -> object:
    """The trained text model a run answers with, as given (a route, a model, its directory, or a directory given as
    the text weights, which route auto and trained take as the model); None for the other routes."""
    if isinstance(route, TextRoute):
        return route
    if route not in ("auto", "trained"):
        return None
    return text_model if text_model else weights


def _over_stack(layer: object, given: dict, name: str, channel_axis: int | None) -> StackResult:
    """A stack layer's planes each segmented by :func:`segment_text` with the arguments ``given`` (its channels
    read as resolved: ``channel_axis``), the route chosen and the segmenter loaded once, ids linked across planes by
    :func:`~..volume.segment_stack`, the one code path of the CLI's and the Text widget's stacks."""
    from ..volume import stack_layer_data
    from ..volume.levels import segment_stack_at_level, stack_read_level

    options = {k: v for k, v in given.items() if k not in ("image", "progress")}
    if not isinstance(options["route"], TextRoute):
        options["route"] = choose_route(
            options["route"],
            grounder=options["grounder"],
            heatmapper=options["heatmapper"],
            library=options["library"],
            weights=options["weights"],
            device=options["device"],
            text_model=options["text_model"],
            progress=given["progress"],
            cancel=given["cancel"],
        )
    if options["segmenter"] is None and options["route"].needs_segmenter(options["refine"]):
        from ...models import load_segmenter

        options["segmenter"] = load_segmenter(device=options["device"])
    data, channel_axis = stack_layer_data(layer, channel_axis)
    # segment_stack hands each plane over with its channels last
    options["channel_axis"] = None if channel_axis is None else -1
    input_size = options["segmenter"].input_size if options["segmenter"] is not None else 1024

    def plane_scale(plane_shape: tuple[int, int]) -> float:
        # a stack pyramid's planes read at the level promptseg text reads them at (a 2D pyramid's rule)
        return text_working_scale(
            plane_shape,
            options["prompt"],
            options["route"],
            input_size,
            top_k=options["top_k"],
            min_similarity=options["min_similarity"],
        )

    level = stack_read_level(data, plane_scale, channel_axis=channel_axis, name=name)

    def plane_result(plane: np.ndarray, z: int, factor: float) -> TextResult:
        # on a level: the library's objects sought that many times smaller, as the CLI's planes
        named = {**options, "name": f"{name} plane {z}", "factor": options["factor"] * factor}
        return segment_text(plane, **named)

    return segment_stack_at_level(
        data,
        level,
        plane_result,
        channel_axis=channel_axis,
        name=name,
        progress=given["progress"],
        cancel=given["cancel"],
    )
