"""Many instances over the planes of a stack: one object size for every plane, each plane decoded with the same
exemplars. The one code path of ``promptseg oneshot`` on a stack, the One-shot widget's stack and the console's
stack layers (:func:`~.pipeline.segment_instances_like`, :func:`~.find_all.find_all_like`). No Qt, no napari."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ...callbacks import ProgressCallback
from ...errors import PromptsegError
from ...models.preprocessing import as_channels_last, full_resolution, to_numpy
from ...models.protocols import PromptableSegmenter
from .exemplars import ExemplarModel, stack_object_size, stack_size_source
from .pipeline import InstanceResult, Refinement, segment_with_exemplars

if TYPE_CHECKING:
    from ..volume import StackResult


@dataclass(frozen=True)
class StackPlanes:
    """How every plane of one stack is segmented: ``model``'s objects sought at ``object_size`` (pixels) on each
    plane, ``size_source`` saying where that size came from (the working scale's ``source``)."""

    segmenter: PromptableSegmenter
    model: ExemplarModel
    object_size: float
    size_source: str
    channel_axis: int | None = None  # a plane's (a multichannel stack's planes come with their channels last)
    channels: list[int] | None = None
    refine: Refinement = "fused"

    def segment(
        self,
        plane: object,
        name: str,
        progress: ProgressCallback | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> InstanceResult:
        """One plane's instances (a lazy plane is read here)."""
        hwc = as_channels_last(to_numpy(plane), channel_axis=self.channel_axis, channels=self.channels, name=name)
        return segment_with_exemplars(
            self.segmenter,
            self.model,
            hwc,
            object_size=self.object_size,
            size_source=self.size_source,
            refine=self.refine,
            name=name,
            progress=progress,
            cancel=cancel,
        )


def stack_planes(
    segmenter: PromptableSegmenter,
    model: ExemplarModel,
    planes: Sequence,
    *,
    object_size: float | None = None,
    size_source: str = "object size",
    channel_axis: int | None = None,
    channels: list[int] | None = None,
    stack_axis: str | None = None,
    refine: Refinement = "fused",
) -> StackPlanes:
    """The :class:`StackPlanes` of a stack (``planes``: its (Z, Y, X[, C]) pixels, lazy or not): ``object_size``
    when given (from ``size_source``), else one size measured on its middle plane
    (:func:`~.exemplars.stack_object_size`: a plane near an end misleads a size measured plane by plane).
    ``stack_axis``: "t" when the planes are a time-lapse's frames (the source says so)."""
    if object_size is None:

        def read(plane: object) -> np.ndarray:
            return as_channels_last(to_numpy(plane), channel_axis=channel_axis, channels=channels)

        object_size = stack_object_size(model, planes, segmenter.input_size, read)
        size_source = stack_size_source(stack_axis)
    return StackPlanes(segmenter, model, float(object_size), size_source, channel_axis, channels, refine)


def instances_over_stack(
    planes_of: Callable[[object, int | None, float], StackPlanes],
    layer: object,
    channel_axis: int | None,
    name: str,
    progress: ProgressCallback | None,
    cancel: Callable[[], bool] | None,
    plane_scale: Callable[[tuple[int, int]], float] | None = None,
) -> StackResult:
    """A stack layer's planes each segmented by ``planes_of(pixels, plane_channel_axis, factor)``, its ids linked
    across planes (:func:`~..volume.segment_stack`), as ``promptseg oneshot`` segments a stack in many-instances mode.
    A multiscale layer's planes are read at the level of ``plane_scale`` (the working scale of a full-resolution
    plane of (rows, columns): the CLI's level, :func:`~..volume.levels.stack_read_level`), ``factor`` times coarser
    than full resolution; the labels come back at full resolution."""
    from ..volume import stack_layer_data
    from ..volume.levels import level_volume, segment_stack_at_level, stack_read_level

    data, axis = stack_layer_data(layer, channel_axis)
    level = None if plane_scale is None else stack_read_level(data, plane_scale, channel_axis=axis, name=name)
    factor = level.factor if level is not None and level.index > 0 else 1.0
    pixels = full_resolution(level_volume(data, level), planes=True)  # a pyramid read at full resolution: its first
    planes = planes_of(pixels, None if axis is None else -1, factor)  # segment_stack: a plane's channels last

    def plane_result(plane: np.ndarray, z: int, factor: float) -> InstanceResult:
        return planes.segment(plane, f"{name} plane {z}", cancel=cancel)

    return segment_stack_at_level(
        data, level, plane_result, channel_axis=axis, name=name, progress=progress, cancel=cancel
    )


def find_all_over_stack(
    segmenter: PromptableSegmenter,
    layer: object,
    plane: tuple[int, ...] | None,
    boxes: list,
    channel_axis: int | None,
    name: str,
    progress: ProgressCallback | None,
    cancel: Callable[[], bool] | None,
    options: dict,
) -> StackResult:
    """:func:`~.find_all.find_all_like` over a stack layer: the objects boxed on one plane (``plane``, where the
    boxes' Shapes layer lies) learnt there, and every plane segmented with them at the boxes' size, ids linked
    across planes. ``options``: find_all_like's object_size, refine, channels and normalize."""
    from ..interactive import prompt_list, prompts_working_scale
    from ..volume import stack_layer_data
    from ..volume.levels import level_volume, stack_read_level
    from .exemplars import _Timer
    from .find_all import learn_examples

    if plane is None or len(plane) != 1:
        raise PromptsegError(f"find all: the boxes lie on no one plane of stack layer '{name}'")
    full_boxes, object_size = boxes, options["object_size"]  # full-resolution pixels

    def plane_scale(plane_shape: tuple[int, int]) -> float:
        # the level find_all_like reads a 2D pyramid at for these boxes (the CLI's level of a stack's plane)
        return prompts_working_scale(plane_shape, segmenter.input_size, full_boxes, options["object_size"])

    data, axis = stack_layer_data(layer, channel_axis)
    level = stack_read_level(data, plane_scale, channel_axis=axis, name=name)
    pixels = full_resolution(level_volume(data, level), planes=True)
    if level is not None and level.index > 0:  # the boxes and the object size in the level's pixels
        boxes = list(level.prompts(prompt_list(boxes, 4, "boxes"), 4))
        object_size = None if object_size is None else object_size / level.factor
    z, plane_axis = int(plane[0]), None if axis is None else -1
    hwc = as_channels_last(
        to_numpy(pixels[z]), channel_axis=plane_axis, channels=options["channels"], name=f"{name} plane {z}"
    )

    def learning(fraction: float, message: str) -> None:
        if progress is not None:  # the examples are learnt in find-all's first fifth
            progress(0.2 * fraction, message)

    examples = learn_examples(
        segmenter,
        hwc,
        boxes,
        object_size,
        options["normalize"],
        f"{name} plane {z}",
        learning,
        cancel,
        _Timer(),
    )

    def planes_of(pixels: object, plane_axis: int | None, factor: float) -> StackPlanes:
        return stack_planes(
            segmenter,
            examples.model,
            pixels,
            object_size=examples.size,  # the boxes' (or the given) size for every plane, on the level learnt on
            size_source=examples.source,
            channel_axis=plane_axis,
            channels=options["channels"],
            refine=options["refine"],
        )

    def sub(fraction: float, message: str) -> None:
        if progress is not None:
            progress(0.2 + 0.8 * fraction, message)

    result = instances_over_stack(planes_of, layer, channel_axis, name, sub, cancel, plane_scale)
    result.warnings[:0] = examples.warnings
    return result
