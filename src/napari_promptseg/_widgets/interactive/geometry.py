"""Which 2D plane of an image layer the prompts are on, how prompts map onto it, and how a pyramid's plane is read
(how results go into Labels layers: :mod:`.labels`).

Coordinates: napari layers hold (row, col) *data* coordinates, each layer with its own scale/translate. Prompts are
taken to world coordinates with their own layer's transform and back into the image layer's data coordinates, so a
box drawn on any Shapes layer lands on the right pixels; the core library then receives x = column, y = row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

import napari
import napari.layers
import numpy as np

from ...errors import PromptsegError
from ...io.layer_objects import in_image_data, on_shown_plane
from ...methods.interactive import check_box, check_point
from ...tiling import (
    choose_scale,
    level_factors,
    level_to_full,
    prompts_to_level,
    pyramid_level,
    upsample_labels,
)
from .._common import _levels, check_channel_axis, is_preview, placement_over

#: feature of the points layer: True for a positive click, False for a negative one
POSITIVE = "positive"
#: a 2D pyramid whose full-resolution plane has more pixels than this (a whole slide) is segmented on a crop around
#: the prompts, and its objects are committed into a Labels layer at its finest level within this many pixels.
#: napari cannot paint a multiscale Labels layer, and a slide's full-resolution plane as one array (16k x 16k:
#: 1 GB of uint32 labels, more as floats) is what froze napari; 4096 x 4096 uint32 labels take 64 MB
LABELS_MAX_PIXELS = 4096 * 4096
#: a stack of such planes (a z-stack OME-Zarr of whole-slide planes) keeps its labels at its finest level whose
#: planes fit :data:`LABELS_MAX_PIXELS` and whose whole stack of labels fits this many pixels (256 MB as uint32):
#: 30 planes of 4096 x 4096 px would take 2 GB
LABELS_MAX_VOXELS = 4 * LABELS_MAX_PIXELS


@dataclass(frozen=True)
class PlaneGeometry:
    """The 2D plane being segmented, in the *labels space* of the image layer.

    Labels space is the image layer's data space without the RGB axis and without the channel axis (if the user
    chose one). Labels layers that go with the image have ``labels_shape`` and the same scale/translate.
    """

    image_name: str
    labels_shape: tuple[int, ...]
    row_axis: int
    col_axis: int
    index: tuple[int, ...]  # position of the plane along every labels axis (0 on the two plane axes)
    channel_axis: int | None  # image-data axis that holds channels (always 0 when set; see plane_geometry)
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    affine: np.ndarray | None  # (n+1, n+1) matrix in labels space for rotate/shear/affine; None without any
    #: the image's units along the labels axes (a slide's µm from the reader), which the layers made over it take:
    #: in pixels, napari warned "Inconsistent units across layers" and its scale bar lost the unit
    units: tuple[str, ...] | None = None
    #: the image's axis labels along the labels axes (a time-lapse's t), which its result layers take; None when
    #: they are napari's defaults (:func:`~.._common.placement_over`)
    axis_labels: tuple[str, ...] | None = None

    @property
    def plane_shape(self) -> tuple[int, int]:
        return self.labels_shape[self.row_axis], self.labels_shape[self.col_axis]

    @property
    def fixed_axes(self) -> tuple[int, ...]:
        return tuple(a for a in range(len(self.labels_shape)) if a not in (self.row_axis, self.col_axis))

    @property
    def plane_slices(self) -> tuple:
        """Index of the plane in a labels-space array: an (H, W) view."""
        return tuple(slice(None) if a in (self.row_axis, self.col_axis) else self.index[a] for a in self._axes)

    @property
    def preview_shape(self) -> tuple[int, ...]:
        """The preview layer holds only this plane: size 1 along the other axes, placed by its translate."""
        return tuple(n if a in (self.row_axis, self.col_axis) else 1 for a, n in enumerate(self.labels_shape))

    @property
    def preview_translate(self) -> tuple[float, ...]:
        return tuple(t + (self.index[a] * s if a in self.fixed_axes else 0.0) for a, (t, s) in self._scaled)

    @property
    def _axes(self) -> range:
        return range(len(self.labels_shape))

    @property
    def _scaled(self):
        return enumerate(zip(self.translate, self.scale, strict=True))

    def labels_indices(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, ...]:
        """Full labels-space fancy index of plane pixels (rows, cols)."""
        out = []
        for a in self._axes:
            if a == self.row_axis:
                out.append(rows)
            elif a == self.col_axis:
                out.append(cols)
            else:
                out.append(np.full(rows.shape, self.index[a], dtype=rows.dtype))
        return tuple(out)


def plane_geometry(
    viewer: napari.viewer.Viewer, layer: napari.layers.Image, channel_axis: int | None = None
) -> PlaneGeometry:
    """Locate the displayed 2D plane of ``layer`` (raises PromptsegError naming the layer when it can't)."""
    name = f"image layer '{layer.name}'"
    if viewer.dims.ndisplay != 2:
        raise PromptsegError(f"{name}: prompts segment one 2D plane; switch the viewer to 2D (Ctrl+Y)")
    shape = tuple(_levels(layer)[0].shape)
    spatial = shape[:-1] if layer.rgb else shape
    ndim = len(spatial)
    if ndim < 2:
        raise PromptsegError(f"{name}: needs at least two dimensions, got shape {shape}")
    offset = viewer.dims.ndim - layer.ndim
    displayed = sorted(d - offset for d in viewer.dims.displayed)
    if any(d < 0 for d in displayed):
        raise PromptsegError(f"{name}: the displayed axes {viewer.dims.displayed} are not axes of this layer")
    check_channel_axis(layer, channel_axis, name)
    if channel_axis is not None and channel_axis in displayed:
        raise PromptsegError(f"{name}: the channel axis {channel_axis} is displayed; show the image plane instead")
    position = layer.world_to_data(viewer.dims.point)
    data_index = [int(np.clip(np.round(position[a]), 0, spatial[a] - 1)) for a in range(ndim)]
    keep = [a for a in range(ndim) if a != channel_axis]
    labels_of = {a: i for i, a in enumerate(keep)}  # image-data axis -> labels axis
    index = tuple(0 if a in displayed else data_index[a] for a in keep)
    # rotate and shear too, not only the layer's affine: results of a rotated layer landed off it
    placed = placement_over(layer, keep)
    return PlaneGeometry(
        image_name=layer.name,
        labels_shape=tuple(spatial[a] for a in keep),
        row_axis=labels_of[displayed[0]],
        col_axis=labels_of[displayed[1]],
        index=index,
        channel_axis=channel_axis,
        scale=tuple(float(layer.scale[a]) for a in keep),
        translate=tuple(float(layer.translate[a]) for a in keep),
        affine=placed.get("affine"),
        units=tuple(str(layer.units[a]) for a in keep),
        axis_labels=placed.get("axis_labels"),
    )


def extract_plane(layer: napari.layers.Image, geom: PlaneGeometry) -> tuple[np.ndarray, int | None]:
    """The plane's pixels (H, W), (H, W, RGB) or (C, H, W), and the channel axis to pass to the core function."""
    return _plane_of(_levels(layer)[0], geom)


def _plane_of(data, geom: PlaneGeometry) -> tuple[np.ndarray, int | None]:
    ndim = len(geom.labels_shape) + (geom.channel_axis is not None)
    labels_axis = 0
    index = []
    for a in range(ndim):
        if a == geom.channel_axis:
            index.append(slice(None))
            continue
        if labels_axis in (geom.row_axis, geom.col_axis):
            index.append(slice(None))
        else:
            index.append(geom.index[labels_axis])
        labels_axis += 1
    return np.asarray(data[tuple(index)]), (0 if geom.channel_axis is not None else None)


@dataclass(frozen=True)
class LevelCrop:
    """Where labels computed on a crop of a pyramid level lie: the level's downsampling factors along rows and
    columns (:func:`~napari_promptseg.tiling.level_factors`; 1: full resolution; one number: both) and the crop's
    top-left (row, col) on that level."""

    factors: tuple[float, float] | float
    offset: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        rows, cols = np.broadcast_to(np.asarray(self.factors, np.float64), (2,))
        object.__setattr__(self, "factors", (float(rows), float(cols)))

    @property
    def factor(self) -> float:
        """The rows' factor: the one an object size (full-resolution pixels) is divided by, as
        :func:`~napari_promptseg.tiling.pyramid_level` picks levels by."""
        return self.factors[0]

    def to_level(self, coords: object, width: int) -> np.ndarray:
        """Full-resolution prompts (boxes: ``width`` 4, points: 2; x = column, y = row) on this crop of the level."""
        return prompts_to_level(coords, width, self.factors[::-1], self.offset[::-1])


def level_geometry(geom: PlaneGeometry, crop: LevelCrop, shape: tuple[int, int]) -> PlaneGeometry:
    """The geometry of labels whose planes are ``shape`` (rows, columns) on ``crop`` of a pyramid level of ``geom``'s
    image: each of their pixels lies over the block of full-resolution pixels it stands for (its centre at theirs),
    each axis by its own factor (by the rows' along both, a slide's labels level ended 2.3 px short of its last
    column). A stack's other axes (Z, T) stay the image's, at the plane shown."""
    labels_shape, scale, translate = list(geom.labels_shape), list(geom.scale), list(geom.translate)
    for k, axis in enumerate((geom.row_axis, geom.col_axis)):
        factor = crop.factors[k]
        translate[axis] += geom.scale[axis] * float(level_to_full(crop.offset[k], factor))
        scale[axis] *= factor
        labels_shape[axis] = int(shape[k])
    return replace(geom, labels_shape=tuple(labels_shape), scale=tuple(scale), translate=tuple(translate))


def resample_crop(labels: np.ndarray, crop: LevelCrop, to: LevelCrop, shape: tuple[int, int]) -> tuple:
    """Labels on ``crop`` of one pyramid level -> the same region of the level of ``to`` (whose plane has
    ``shape``), nearest pixel centre, each axis by its own factors: (labels there, LevelCrop of them). Only the
    region is allocated."""
    h, w = labels.shape
    spans = []
    for start, size, limit, ratio in (
        (crop.offset[0], h, shape[0], to.factors[0] / crop.factors[0]),
        (crop.offset[1], w, shape[1], to.factors[1] / crop.factors[1]),
    ):
        first = max(0, int(np.floor(start / ratio)))
        last = min(limit, max(first + 1, int(np.ceil((start + size) / ratio))))
        index = np.clip(np.floor((np.arange(first, last) + 0.5) * ratio).astype(np.int64) - start, 0, size - 1)
        spans.append((first, index))
    (row0, rows), (col0, cols) = spans
    return labels[np.ix_(rows, cols)], LevelCrop(to.factors, (row0, col0))


#: a core function's result: SegmentationResult or InstanceResult (both have ``labels``)
Result = TypeVar("Result")


@dataclass(frozen=True)
class PlaneSource:
    """The displayed plane of an image layer, read by the worker that needs it. A 2D pyramid (multiscale layer) is
    read at the coarsest level that still has the working scale's resolution, as the CLI reads OME-Zarr: a box
    around a nucleus on an 8k slide reads a 1/2 level, a whole-slide embedding a 1/8 level, never the full
    resolution. Levels are the layer's own arrays (numpy, dask or zarr); nothing is read until :meth:`read`."""

    levels: tuple  # full resolution first; one array for a plain layer
    geom: PlaneGeometry

    def read(self, input_size: int, object_size: float | None) -> tuple[np.ndarray, int | None, float]:
        """(the plane's pixels, the channel axis for the core function, the level's downsampling factor) for
        objects of ``object_size`` full-resolution pixels (None: the whole plane) and a model of ``input_size``."""
        level, factor = self._level(input_size, object_size)
        return (*self._read(level, input_size, object_size), factor)

    def _read(self, level: int, input_size: int, object_size: float | None) -> tuple[np.ndarray, int | None]:
        if self.whole_slide and self.too_large(input_size, object_size):
            h, w = self._level_planes[level]
            raise PromptsegError(
                f"image layer '{self.geom.image_name}': its level for this is {h} x {w} px, too large to read "
                "whole; draw a box around the object (only its surroundings are read)"
            )
        return _plane_of(self.levels[level], self.geom)

    @property
    def _plain_pyramid(self) -> bool:
        """A pyramid of 2D planes (no stack; grey, RGB or with a channel axis): the kind read at a level (a (C, Y, X)
        slide with its channel axis chosen was read at full resolution, every channel of it)."""
        return len(self.levels) > 1 and len(self.geom.labels_shape) == 2

    @property
    def _plane_pyramid(self) -> bool:
        """A pyramid whose levels downsample only the plane (a z-stack OME-Zarr's, Z kept; a (C, Y, X) slide's
        before its channel axis is chosen): its plane shown is read at a level as a 2D pyramid's (it was read at
        full resolution, a 16k plane refused as exceeding the model's limit). A level that downsamples another axis
        holds the plane shown elsewhere: such a pyramid is read at full resolution."""
        if self._plain_pyramid:
            return True
        if len(self.levels) < 2:
            return False
        shapes = [np.shape(data) for data in self.levels]
        plane = {self._data_axis(self.geom.row_axis), self._data_axis(self.geom.col_axis)}
        others = [a for a in range(len(shapes[0])) if a not in plane]  # Z, T, channels, RGB: kept at every level
        return all(len(s) == len(shapes[0]) and all(s[a] == shapes[0][a] for a in others) for s in shapes)

    def _data_axis(self, labels_axis: int) -> int:
        """The layer data's axis of a labels axis (the channel axis, when chosen, is the data's first)."""
        return labels_axis + (self.geom.channel_axis is not None)

    def _level(self, input_size: int, object_size: float | None) -> tuple[int, float]:
        if self._plane_pyramid:
            scale = choose_scale(self.geom.plane_shape, input_size, object_size).scale
            return pyramid_level(self._level_planes, scale)
        return 0, 1.0

    def too_large(self, input_size: int, object_size: float | None = None) -> bool:
        """Whether the whole plane, at the level :meth:`read` reads, has more than :data:`LABELS_MAX_PIXELS` (a
        slide whose pyramid stops at a large level)."""
        h, w = self.level_shape(input_size, object_size)
        return h * w > LABELS_MAX_PIXELS

    def level_shape(self, input_size: int, object_size: float | None = None) -> tuple[int, int]:
        """The (rows, columns) of the plane at the level :meth:`read` reads for objects of ``object_size``."""
        return self._level_planes[self._level(input_size, object_size)[0]]

    def full_resolution(self, labels: np.ndarray, level: int) -> np.ndarray:
        """Labels of a plane read at pyramid level ``level`` -> the full-resolution plane."""
        return labels if level == 0 else upsample_labels(labels, self.geom.plane_shape)

    def level_crop(self, level: int, offset: tuple[int, int] = (0, 0)) -> LevelCrop:
        """A crop of pyramid level ``level`` from (row, col) ``offset``, with that level's factors per axis."""
        planes = self._level_planes
        return LevelCrop(level_factors(planes[0], planes[level]), offset)

    def _window(self, rows: slice, cols: slice) -> tuple:
        """The index of ``rows`` x ``cols`` of the plane shown in a level's data: a stack's plane at its position
        (Z, T), the channels (the chosen channel axis, first) and an RGB axis (last) whole."""
        index = [slice(None)] if self.geom.channel_axis is not None else []
        for a in range(len(self.geom.labels_shape)):
            index.append(rows if a == self.geom.row_axis else cols if a == self.geom.col_axis else self.geom.index[a])
        return tuple(index)

    @property
    def _level_planes(self) -> list[tuple[int, int]]:
        # the plane's axes of each level (a stack's are not its first two; the channel axis is first when chosen)
        rows, cols = self._data_axis(self.geom.row_axis), self._data_axis(self.geom.col_axis)
        return [(np.shape(data)[rows], np.shape(data)[cols]) for data in self.levels]

    @property
    def whole_slide(self) -> bool:
        """A pyramid whose planes are too large to hold as full-resolution arrays (:data:`LABELS_MAX_PIXELS`): a 2D
        slide, or a stack of such planes (a z-stack OME-Zarr of whole-slide planes, which was refused). It is
        segmented on crops, and its labels live at :meth:`labels_level`."""
        h, w = self.geom.plane_shape
        return self._plane_pyramid and h * w > LABELS_MAX_PIXELS

    def labels_level(self) -> tuple[LevelCrop, tuple[int, int]]:
        """The level a whole slide's Labels layer holds its objects at: its finest level whose planes fit
        :data:`LABELS_MAX_PIXELS` and, on a stack, whose stack of planes fits :data:`LABELS_MAX_VOXELS` (the
        coarsest when none does), and that level's plane shape."""
        planes = self._level_planes
        others = int(np.prod([n for a, n in enumerate(self.geom.labels_shape) if a in self.geom.fixed_axes]))
        fitting = [
            k
            for k, (h, w) in enumerate(planes)
            if h * w <= LABELS_MAX_PIXELS and others * h * w <= max(LABELS_MAX_VOXELS, LABELS_MAX_PIXELS)
        ]
        k = fitting[0] if fitting else len(planes) - 1
        return self.level_crop(k), planes[k]

    def segment_at_level(
        self,
        method: Callable[..., Result],
        input_size: int,
        object_size: float | None,
        prompt_size: float | None,
        prompt_bounds: tuple[float, float, float, float] | None = None,
        **options,
    ) -> tuple[Result, LevelCrop | None]:
        """``method(plane, crop, object_size=..., channel_axis=..., **options)`` on the plane read at the level for
        objects of ``object_size`` full-resolution pixels (the user's setting; None: ``prompt_size``, what the
        prompts suggest); ``method`` maps its prompts with ``crop.to_level`` (:class:`LevelCrop`). The
        result's labels come back at full resolution (LevelCrop None), except on a :attr:`whole_slide`: there only
        a crop of the level around ``prompt_bounds`` (x0, y0, x1, y1 of every prompt, full-resolution pixels) is
        read, and the labels come back on that crop, with its LevelCrop; without ``prompt_bounds`` (find all: every
        object of the plane) the whole plane at the level, when it fits :data:`LABELS_MAX_PIXELS` (refused
        otherwise), its labels on that level, with its LevelCrop (the full resolution is never made)."""
        if not self.whole_slide or prompt_bounds is None:
            level, _ = self._level(input_size, object_size or prompt_size)
            plane, channel_axis = self._read(level, input_size, object_size or prompt_size)
            crop = self.level_crop(level) if self._plane_pyramid else LevelCrop(1.0)
            level_size = None if object_size is None else object_size / crop.factor
            result = method(plane, crop, object_size=level_size, channel_axis=channel_axis, **options)
            if self.whole_slide:
                return result, crop
            result.labels = self.full_resolution(result.labels, level)
            return result, None
        size = object_size or prompt_size
        plane_shape = self.geom.plane_shape
        scale = choose_scale(plane_shape, input_size, size)
        level, _ = pyramid_level(self._level_planes, scale.scale)
        fy, fx = self.level_crop(level).factors
        # the prompts and a working tile of context on every side: what the method sees around an object on the
        # whole plane (the tile its centre falls in)
        margin = scale.tile if size is not None else max(plane_shape)
        x0, y0, x1, y1 = prompt_bounds
        h, w = self._level_planes[level]
        rows = (max(0, int((y0 - margin) // fy)), min(h, int(np.ceil((y1 + 1 + margin) / fy))))
        cols = (max(0, int((x0 - margin) // fx)), min(w, int(np.ceil((x1 + 1 + margin) / fx))))
        if (rows[1] - rows[0]) * (cols[1] - cols[0]) > LABELS_MAX_PIXELS:
            raise PromptsegError(
                f"image layer '{self.geom.image_name}': these prompts would read {rows[1] - rows[0]} x "
                f"{cols[1] - cols[0]} px of a {plane_shape[0]} x {plane_shape[1]} px slide; prompt one region at a "
                "time (commit, then the next), with a box around each object (clicks alone read the whole slide), "
                "or segment the slide with `promptseg segment`"
            )
        channel_axis = self.geom.channel_axis  # 0 or None: the crop keeps the image's axis order
        plane = np.asarray(self.levels[level][self._window(slice(*rows), slice(*cols))])
        crop = self.level_crop(level, (rows[0], cols[0]))
        level_size = None if object_size is None else object_size / crop.factor
        result = method(plane, crop, object_size=level_size, channel_axis=channel_axis, **options)
        return result, crop


def plane_source(layer: napari.layers.Image, geom: PlaneGeometry) -> PlaneSource:
    return PlaneSource(tuple(_levels(layer)), geom)


def labels_geometry(source: PlaneSource) -> PlaneGeometry:
    """The grid a Labels layer holding the objects of ``source``'s plane lies on: the image's own, or, for a whole
    slide, its labels level (:meth:`PlaneSource.labels_level`) placed over the full resolution."""
    if not source.whole_slide:
        return source.geom
    return level_geometry(source.geom, *source.labels_level())


def prompt_bounds(prompts: PlanePrompts) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) around every box and click of ``prompts`` (full-resolution pixels)."""
    xy = np.array(
        [*(b[:2] for b in prompts.boxes), *(b[2:] for b in prompts.boxes), *prompts.positive, *prompts.negative],
        np.float64,
    ).reshape(-1, 2)
    return float(xy[:, 0].min()), float(xy[:, 1].min()), float(xy[:, 0].max()), float(xy[:, 1].max())


def extract_volume(layer: napari.layers.Image, geom: PlaneGeometry) -> tuple[object, int]:
    """A layer of 3 or more axes as a (Z, H, W[, C]) stack through the displayed plane (Z = the labels axis not
    displayed next to the plane, channels last), without copying (a stack pyramid: each of its levels so, largest
    first); and that axis in labels space. The axes before
    Z are held at the position shown: a (T, Z, Y, X) time-lapse of volumes gives the volume of the time point shown
    (it was refused, with no way round it in the widget)."""
    if not geom.fixed_axes:
        raise PromptsegError(
            f"image layer '{geom.image_name}': propagation runs along an axis besides the displayed plane; "
            f"this layer's planes are {geom.labels_shape} (axes without channels)"
        )
    *held, z = geom.fixed_axes
    levels = _levels(layer)
    offset = 0 if geom.channel_axis is None else 1  # the channel axis is always the first (see plane_geometry)
    order = [a + offset for a in (*held, z, geom.row_axis, geom.col_axis)]
    if geom.channel_axis is not None:
        order.append(0)
    elif layer.rgb:
        order.append(levels[0].ndim - 1)
    volumes = [data.transpose(order)[tuple(geom.index[a] for a in held)] for data in levels]
    # a stack pyramid (Z kept at every level): its levels, which the propagation reads at the prompts' level (it
    # read the full resolution, every plane of it)
    return (volumes if PlaneSource(tuple(levels), geom)._plane_pyramid else volumes[0]), z


def held_axes(geom: PlaneGeometry, z: int) -> tuple[int, ...]:
    """The labels axes :func:`extract_volume` holds at the position shown (those besides the plane and ``z``)."""
    return tuple(a for a in geom.fixed_axes if a != z)


def to_labels_coords(
    viewer: napari.viewer.Viewer, image: napari.layers.Image, geom: PlaneGeometry, layer, coords: np.ndarray
) -> np.ndarray:
    """Data coordinates of ``layer`` (N, layer.ndim) -> labels-space coordinates of the image (N, labels ndim).

    Through world coordinates, so each layer's own scale/translate counts. Axes a prompt layer lacks (a 2D layer
    over a stack) take the viewer's current position, i.e. the prompt applies to the displayed plane.
    """
    data = in_image_data(layer, coords, image, viewer.dims.point)
    return np.delete(data, geom.channel_axis, axis=1) if geom.channel_axis is not None else data


def _on_plane(coords: np.ndarray, geom: PlaneGeometry) -> np.ndarray:
    """Which rows of labels-space ``coords`` lie on the plane (rounding along the non-displayed axes)."""
    keep = np.ones(len(coords), dtype=bool)
    for a in geom.fixed_axes:
        keep &= np.round(coords[:, a]).astype(int) == geom.index[a]
    return keep


@dataclass
class PlanePrompts:
    """Prompts of one plane in the library's convention (x = column, y = row), and where they came from."""

    boxes: list[tuple[float, float, float, float]]
    positive: list[tuple[float, float]]
    negative: list[tuple[float, float]]
    shape_indices: list[int]  # rows of the Shapes layer used
    point_indices: list[int]
    point_positive: list[bool] = field(default_factory=list)  # each of ``point_indices``: a positive click
    #: the shapes' vertices and the clicks' coordinates as gathered: what a commit removes, found again then (while
    #: it waited for its preview, prompts removed on another plane moved these to other rows)
    shape_vertices: list[np.ndarray] = field(default_factory=list)
    point_coords: list[np.ndarray] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.boxes or self.positive or self.negative)


def gather_prompts(
    viewer: napari.viewer.Viewer,
    image: napari.layers.Image,
    geom: PlaneGeometry,
    shapes: napari.layers.Shapes | None,
    points: napari.layers.Points | None,
) -> PlanePrompts:
    """Boxes (bounding box of each shape) and clicks that lie on the plane, in image pixels x = col, y = row."""
    prompts = PlanePrompts([], [], [], [], [])
    if shapes is not None:
        for i, vertices in enumerate(shapes.data):
            c = to_labels_coords(viewer, image, geom, shapes, vertices)
            if not (_on_plane(c, geom).all() and on_shown_plane(shapes, vertices, image.ndim, viewer.dims.point).all()):
                continue
            rows, cols = c[:, geom.row_axis], c[:, geom.col_axis]
            prompts.boxes.append((float(cols.min()), float(rows.min()), float(cols.max()), float(rows.max())))
            prompts.shape_indices.append(i)
            prompts.shape_vertices.append(np.array(vertices, copy=True))
    if points is not None and len(points.data):
        c = to_labels_coords(viewer, image, geom, points, points.data)
        features = points.features
        positive = (
            features[POSITIVE].to_numpy(dtype=bool)
            if POSITIVE in features and len(features) == len(c)
            else np.ones(len(c), dtype=bool)
        )
        for i in np.flatnonzero(
            _on_plane(c, geom) & on_shown_plane(points, points.data, image.ndim, viewer.dims.point)
        ):
            xy = (float(c[i, geom.col_axis]), float(c[i, geom.row_axis]))
            (prompts.positive if positive[i] else prompts.negative).append(xy)
            prompts.point_indices.append(int(i))
            prompts.point_positive.append(bool(positive[i]))
            prompts.point_coords.append(np.array(points.data[i], copy=True))
    return prompts


def boxes_elsewhere(
    viewer: napari.viewer.Viewer,
    image: napari.layers.Image,
    geom: PlaneGeometry,
    boxes_layer: napari.layers.Shapes | None,
    *,
    most_shapes: int = 1000,
) -> str | None:
    """What to say when the boxes layer has no box on the plane but another Shapes layer has rectangles there over
    the image (drawn on the wrong layer: ignored without a word), or None. Layers of more than ``most_shapes``
    shapes (a slide's ROIs) are not read: this runs at every edit of a Shapes layer."""
    height, width = geom.plane_shape
    for layer in viewer.layers:
        if not isinstance(layer, napari.layers.Shapes) or layer is boxes_layer or is_preview(layer):
            continue
        if not 0 < len(layer.data) <= most_shapes:
            continue
        prompts = gather_prompts(viewer, image, geom, layer, None)
        n = sum(
            layer.shape_type[i] == "rectangle" and x1 > 0 and y1 > 0 and x0 < width and y0 < height
            for (x0, y0, x1, y1), i in zip(prompts.boxes, prompts.shape_indices, strict=True)
        )
        if n:
            picked = f"no boxes on '{boxes_layer.name}'" if boxes_layer is not None else "no boxes layer chosen"
            rectangles = "1 rectangle" if n == 1 else f"{n} rectangles"
            return f"{picked} on this plane; '{layer.name}' has {rectangles}: pick it as the boxes layer"
    return None


def check_prompt_boxes(prompts: PlanePrompts, shapes: napari.layers.Shapes | None, geom: PlaneGeometry) -> None:
    """The boxes of ``prompts`` refused as the methods refuse them (no area, wholly outside the image), naming the
    shape and its layer: the methods' "box 1: corners in the wrong order or zero size" named neither, nor that a
    line (or a path) drawn on the boxes layer was the box."""
    if shapes is None:
        return
    for (x0, y0, x1, y1), index in zip(prompts.boxes, prompts.shape_indices, strict=True):
        name = f"shape {index + 1} of layer '{shapes.name}' (a {shapes.shape_type[index]})"
        if x1 <= x0 or y1 <= y0:
            raise PromptsegError(
                f"{name} spans no area on image '{geom.image_name}' (x {x0:g} to {x1:g}, y {y0:g} to {y1:g}): a box "
                "prompt needs a width and a height; delete it, or draw a rectangle"
            )
        check_box((x0, y0, x1, y1), geom.plane_shape, name)


def check_prompt_clicks(prompts: PlanePrompts, points: napari.layers.Points | None, geom: PlaneGeometry) -> None:
    """The clicks of ``prompts`` refused as the methods refuse them (off the image), naming the click and its layer:
    the methods' "negative point 1: ... lies outside" counted among the plane's negative clicks, and named no
    layer."""
    if points is None:
        return
    xy = {True: iter(prompts.positive), False: iter(prompts.negative)}
    for row, positive in zip(prompts.point_indices, prompts.point_positive, strict=True):
        name = f"point {row + 1} of layer '{points.name}' (a {'positive' if positive else 'negative'} click)"
        check_point(next(xy[positive]), geom.plane_shape, name)
