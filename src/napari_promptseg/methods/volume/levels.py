"""A stack pyramid (a z-stack OME-Zarr's or pyramidal OME-TIFF's levels, the planes downsampled and Z kept at every
level) read at the level the prompts need, as a 2D slide is (:func:`~...models.preprocessing.read_pyramid_level`):
the prompts go to that level, and the labels found there come back at full resolution lazily
(:func:`~...tiling.lazy_upsampled_labels`). No Qt, no napari."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from ...callbacks import ProgressCallback
from ...errors import PromptsegError
from ...models.preprocessing import pyramid_levels
from ...tiling import choose_scale, lazy_upsampled_labels, level_factors, prompts_to_level, pyramid_level
from .stacks import as_stack, time_point_volume

if TYPE_CHECKING:
    from .planes import StackResult


@dataclass(frozen=True)
class StackLevel:
    """The level of a stack pyramid a propagation runs at: its (Z, Y, X[, C]) stack, its index (0: full
    resolution), how many times coarser than full resolution its planes are along rows and columns, and the full
    resolution's (Z, Y, X), which the labels come back to."""

    stack: object
    index: int
    factors: tuple[float, float]
    full_shape: tuple[int, int, int]
    planes: tuple[tuple[int, int], ...] = ()  # every level's (Y, X), largest first

    @property
    def factor(self) -> float:
        """The rows' factor: an object size (full-resolution pixels) is divided by it."""
        return self.factors[0]

    def prompts(self, coords: object, width: int) -> np.ndarray:
        """Full-resolution boxes (``width`` 4) or points (2), x = column, y = row -> on this level."""
        if coords is None or not np.size(coords):
            return np.zeros((0, width))
        return prompts_to_level(coords, width, self.factors[::-1])

    def seed(self, labels: np.ndarray) -> np.ndarray:
        """A seed plane's (Y, X) labels, or the stack's (Z, Y, X), on the planes of one of the pyramid's levels
        (:attr:`planes`: the full resolution's, or a level's, as the Interactive widget holds a stack of
        whole-slide planes' labels) -> on this level: each level pixel takes the seed pixel at its centre. Labels
        of another plane shape are given as they are (the propagation refuses them, naming both shapes)."""
        labels = np.asarray(labels)
        if tuple(labels.shape[-2:]) not in self.planes:
            return labels
        h, w = np.shape(self.stack)[1:3]
        rows = np.minimum(((np.arange(h) + 0.5) * labels.shape[-2] / h).astype(np.int64), labels.shape[-2] - 1)
        cols = np.minimum(((np.arange(w) + 0.5) * labels.shape[-1] / w).astype(np.int64), labels.shape[-1] - 1)
        return labels[..., rows[:, None], cols[None, :]]


def stack_pyramid(
    volume: object,
    *,
    channel_axis: int | None = None,
    axes: str | None = None,
    time_point: int | None = None,
    name: str = "stack",
) -> list | None:
    """The levels of a stack pyramid ``volume`` (a multiscale layer's data, or :func:`~...io.multiscale.
    open_multiscale`'s levels: largest first), each as a (Z, Y, X[, C]) stack (``time_point``: of that time point's
    volume), when its levels downsample only the planes (Z and channels kept); None for anything else (a 2D
    pyramid, one array, a pyramid that downsamples Z too: read at full resolution as before)."""
    levels = pyramid_levels(volume)
    if levels is None or np.ndim(levels[0]) < 3:
        return None
    stacks = []
    for level in levels:
        level_channels, level_axes = channel_axis, axes
        if time_point is not None:  # the time point's volume, its channel axis one earlier, its axes without t
            if axes is not None and len(axes) == np.ndim(level):
                level_axes = axes[1:]
            level, level_channels = time_point_volume(level, time_point, name=name, channel_axis=channel_axis)
        try:
            stack, _ = as_stack(level, channel_axis=level_channels, name=name, axes=level_axes)
        except PromptsegError:
            return None
        if stack is None:
            return None
        stacks.append(stack)
    first = np.shape(stacks[0])
    if any(np.shape(s)[0] != first[0] or np.shape(s)[3:] != first[3:] for s in stacks):
        return None
    return stacks


def choose_stack_level(
    stacks: Sequence[object],
    input_size: int,
    *,
    object_size: float | None = None,
    boxes: object = (),
    labels: np.ndarray | None = None,
) -> StackLevel:
    """The coarsest level of ``stacks`` (:func:`stack_pyramid`) that still has the working scale's resolution: the
    scale of ``object_size`` (full-resolution pixels), else of the boxes' size, else of the seed ``labels``'
    objects, else of the whole plane (:func:`~...tiling.choose_scale`, as a 2D slide's level is chosen)."""
    from ...tiling import box_object_size

    planes = [tuple(int(n) for n in np.shape(s)[1:3]) for s in stacks]
    size = object_size
    boxes = np.asarray(boxes if boxes is not None else (), np.float64).reshape(-1, 4)
    if size is None and len(boxes):
        size = box_object_size(boxes)
    if size is None and labels is not None:
        labels = np.asarray(labels)
        found = [s for s in ndimage.find_objects(labels.astype(np.int64, copy=False)) if s is not None]
        if found:  # in full-resolution pixels, from labels on any level's planes
            boxes = np.array([[s[-1].start, s[-2].start, s[-1].stop - 1, s[-2].stop - 1] for s in found])
            size = box_object_size(boxes) * planes[0][0] / max(labels.shape[-2], 1)
    return stack_level_for_scale(stacks, choose_scale(planes[0], input_size, size).scale)


def stack_level_for_scale(stacks: Sequence[object], scale: float) -> StackLevel:
    """The coarsest level of ``stacks`` (:func:`stack_pyramid`) that still has the working ``scale`` (model-input
    pixels per full-resolution pixel; :func:`~...tiling.pyramid_level`, the rule a 2D slide's level is read by): the
    one level every plane of the stack is read at by a whole-plane method (one-shot, text), as each plane's own
    pyramid would be."""
    planes = [tuple(int(n) for n in np.shape(s)[1:3]) for s in stacks]
    index, _ = pyramid_level(planes, scale)
    full = (int(np.shape(stacks[0])[0]), *planes[0])
    return StackLevel(stacks[index], index, level_factors(planes[0], planes[index]), full, tuple(planes))


def stack_read_level(
    source: object,
    plane_scale: Callable[[tuple[int, int]], float],
    *,
    channel_axis: int | None = None,
    axes: str | None = None,
    name: str = "stack",
) -> StackLevel | None:
    """The level of stack pyramid ``source`` (a multiscale layer's data, a file's levels: largest first) every plane
    is read at by a whole-plane method whose working scale for a full-resolution plane of (rows, columns) is
    ``plane_scale`` (text, one-shot, find-all: each's own rule, as for a 2D pyramid); None for anything else (read
    as it is). The one choice of ``promptseg text``/``oneshot`` and the console's stack layers."""
    pyramid = stack_pyramid(source, channel_axis=channel_axis, axes=axes, name=name)
    if pyramid is None:
        return None
    return stack_level_for_scale(pyramid, plane_scale(tuple(int(n) for n in np.shape(pyramid[0])[1:3])))


def level_volume(source: object, level: StackLevel | None) -> object:
    """The stack a method reads of ``source``: its level ``level`` in ``source``'s own axes (a coarser level), else
    ``source`` itself (full resolution)."""
    if level is None or level.index == 0:
        return source
    return pyramid_levels(source)[level.index]


def segment_stack_at_level(
    source: object,
    level: StackLevel | None,
    segment_plane: Callable[[object, int, float], object],
    *,
    channel_axis: int | None = None,
    axes: str | None = None,
    name: str = "stack",
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
    stack_axis: str | None = None,
) -> StackResult:
    """:func:`~.planes.segment_stack` over the planes of ``source`` at ``level`` (:func:`stack_read_level`; None:
    ``source`` as it is), ``segment_plane(plane, z, factor)`` told how many times coarser than full resolution the
    plane is. The labels come back at full resolution lazily (a stack of whole-slide planes is not made whole), the
    level's kept as ``level_labels``, the level said (``pyramid_level``, ``level_factors``); each plane's result
    stays in the level's pixels."""
    from .planes import segment_stack

    factor = level.factor if level is not None and level.index > 0 else 1.0
    result = segment_stack(
        level_volume(source, level),
        lambda plane, z: segment_plane(plane, z, factor),
        channel_axis=channel_axis,
        axes=axes,
        name=name,
        progress=progress,
        cancel=cancel,
        stack_axis=stack_axis,
    )
    if level is not None:
        result.pyramid_level, result.level_factors = level.index, level.factors
        if level.index > 0:
            result.level_labels = result.labels
            result.labels = lazy_upsampled_labels(result.labels, level.full_shape)
    return result
