"""Many instances over the planes of a stack: one object size for every plane, each plane decoded with the same
exemplars. The one code path of ``promptseg oneshot`` on a stack, the One-shot widget's stack and the console's
stack layers (:func:`~.pipeline.segment_instances_like`, :func:`~.pipeline.find_all_like`). No Qt, no napari."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ...callbacks import ProgressCallback
from ...errors import PromptsegError
from ...models.preprocessing import as_channels_last, to_numpy
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
    planes_of: Callable[[object, int | None], StackPlanes],
    layer: object,
    channel_axis: int | None,
    name: str,
    progress: ProgressCallback | None,
    cancel: Callable[[], bool] | None,
) -> StackResult:
    """A stack layer's planes each segmented by ``planes_of(pixels, plane_channel_axis)``, its ids linked across
    planes (:func:`~..volume.segment_stack`), as ``promptseg oneshot`` segments a stack in many-instances mode."""
    from ..volume import segment_stack, stack_layer_data

    data, axis = stack_layer_data(layer, channel_axis)
    pixels = data[0] if getattr(layer, "multiscale", False) else data  # a pyramid's planes at full resolution
    planes = planes_of(pixels, None if axis is None else -1)  # segment_stack hands a plane over channels last

    def plane_result(plane: np.ndarray, z: int) -> InstanceResult:
        return planes.segment(plane, f"{name} plane {z}", cancel=cancel)

    return segment_stack(pixels, plane_result, channel_axis=axis, name=name, progress=progress, cancel=cancel)


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
    """:func:`~.pipeline.find_all_like` over a stack layer: the objects boxed on one plane (``plane``, where the
    boxes' Shapes layer lies) learnt there, and every plane segmented with them at the boxes' size, ids linked
    across planes. ``options``: find_all_like's object_size, refine, channels and normalize."""
    from ...models.preprocessing import to_numpy
    from ..volume import stack_layer_data
    from .exemplars import _Timer
    from .pipeline import learn_examples

    if plane is None or len(plane) != 1:
        raise PromptsegError(f"find all: the boxes lie on no one plane of stack layer '{name}'")
    data, axis = stack_layer_data(layer, channel_axis)
    pixels = data[0] if getattr(layer, "multiscale", False) else data
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
        options["object_size"],
        options["normalize"],
        f"{name} plane {z}",
        learning,
        cancel,
        _Timer(),
    )

    def planes_of(pixels: object, plane_axis: int | None) -> StackPlanes:
        return stack_planes(
            segmenter,
            examples.model,
            pixels,
            object_size=examples.size,  # the boxes' (or the given) size for every plane
            size_source=examples.source,
            channel_axis=plane_axis,
            channels=options["channels"],
            refine=options["refine"],
        )

    def sub(fraction: float, message: str) -> None:
        if progress is not None:
            progress(0.2 + 0.8 * fraction, message)

    result = instances_over_stack(planes_of, layer, channel_axis, name, sub, cancel)
    result.warnings[:0] = examples.warnings
    return result
