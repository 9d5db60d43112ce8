"""The registration widget's inputs, read from the layers on the main thread: the 2D plane registered from an
Image layer (a pyramid's level by :data:`REGISTER_SIDE`; a (C, Y, X) layer's channels on its first axis when the
channel axis is chosen), landmark Points as pixel x, y of their image (their counts and places checked), and a
Labels layer as it lies over the moving plane (resampled in the worker)."""

from __future__ import annotations

from typing import Any

import napari
import napari.layers
import numpy as np

from ...errors import CancelledError, PromptsegError
from ...io.layer_objects import LabelsOnPlane as _LabelsOnPlane
from ...io.layer_objects import data_to_world_matrix, labels_levels, labels_on_plane, layer_xy
from ...io.multiscale import REGISTER_SIDE, PyramidLevel
from ...methods.registration import landmarks_outside
from ...methods.registration.pipeline import MAX_CHANNELS
from ...models.preprocessing import is_single_plane
from .._common import (
    CHANNEL_AXIS,
    _levels,
    layer_pyramid_level,
    offers_channel_axis,
    plane_shape,
)


def layer_channel_axis(layer: napari.layers.Image, channel_axis: int | None) -> int | None:
    """``layer``'s own channel axis given the pair's one (register()'s and the CLI's ``channel_axis``): the first
    axis of a layer that may hold channels, None for a gray or RGB layer beside a multichannel one. A (1, Y, X)
    layer's first axis is laid out as one channel's whatever the choice: register() reads it as its plane and
    warp_image gives it back (1, Y, X) alike."""
    if channel_axis is None and not layer.rgb and is_single_plane(_levels(layer)[0].shape):
        return CHANNEL_AXIS
    return CHANNEL_AXIS if channel_axis is not None and offers_channel_axis(layer) else None


def spatial_axes(layer: napari.layers.Image, channel_axis: int | None) -> list[int]:
    """The data axes of ``layer``'s rows and columns: its last two with a channel axis first, else its first two
    (an RGB layer's colour axis is no data axis of napari's)."""
    return [1, 2] if layer_channel_axis(layer, channel_axis) is not None else [0, 1]


def _plane(layer: napari.layers.Image, role: str, channel_axis: int | None = None) -> PyramidLevel:
    """The 2D plane registered from ``layer`` (with its channels first when ``channel_axis`` is chosen and the layer
    may have them), its level's index and how many times coarser than the layer's full resolution it is (rows,
    columns): a pyramid's level by :data:`REGISTER_SIDE`, else the layer's data. Nothing is read (only the shape is
    looked at): the worker reads it (:func:`_read_plane`)."""
    index, level, factors = layer_pyramid_level(layer, REGISTER_SIDE)
    # a (1, Y, X) layer's axis of one is no spatial one (register() reads the plane behind it)
    channels = layer_channel_axis(layer, channel_axis) is not None
    spatial = level.ndim - (1 if layer.rgb else 0) - channels
    if spatial != 2:
        # a (C, Y, X) layer read as a stack of C planes: the channel axis is the way on
        hint = (
            "" if channels or spatial != 3 or layer.rgb else "; if its first axis holds channels, choose channel axis 0"
        )
        raise PromptsegError(
            f"{role} layer '{layer.name}' has {spatial} spatial dimensions (shape {level.shape}); registration "
            f"works on 2D images: pick one plane first{hint}"
        )
    if channels and level.shape[CHANNEL_AXIS] > MAX_CHANNELS:
        # refused here, naming the layer: register() would refuse it in the run, with a console user's advice
        raise PromptsegError(
            f"{role} layer '{layer.name}' has {level.shape[CHANNEL_AXIS]} channels: registration takes up to "
            f"{MAX_CHANNELS}; split it (layer menu: Split Stack) and register one channel, or a layer of up to "
            f"{MAX_CHANNELS} channels both images show"
        )
    return PyramidLevel(index, level, factors[-2:])


def _read_plane(level: Any, role: str, progress, cancel) -> np.ndarray:
    """A plane of :func:`_plane` in memory; reads pixels (a dask or zarr layer's): run it in the worker (read on
    napari's main thread, a lazy layer froze napari until it was in memory)."""
    if cancel():
        raise CancelledError("registration cancelled")
    progress(0.0, f"reading the {role} image")
    return np.asarray(level)


def _points_xy(layer: napari.layers.Points, image: napari.layers.Image) -> np.ndarray:
    """Points layer -> (N, 2) x, y pixel coordinates of ``image`` (its rows and columns: a (C, Y, X) image's last two
    axes), through napari's world coordinates as the console reads a Points layer over the layers given to
    register() (:func:`~...io.layer_objects.layer_xy`, one mapping with the Interactive widget's): each layer's own
    scale, translate and rotation count; a layer of more axes (clicked on a stack's view) gives its last ones."""
    return np.asarray(layer_xy(layer, f"landmarks '{layer.name}'", image), float).reshape(-1, 2)


def layer_pixel_sizes(
    fixed_layer: napari.layers.Image, moving_layer: napari.layers.Image, channel_axis: int | None
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The two layers' pixel sizes, (x, y) each in the fixed layer's world unit, as napari lays them over each other:
    the lengths of a pixel's column and row steps in world coordinates, through the whole data-to-world map (scale,
    shear, rotate and affine together: a reader's µm, a scale typed in, a calibration given as an affine matrix);
    None when neither is scaled (both of size 1: uncalibrated, placed by their sizes as the CLI places two files
    without a pixel size) or their units do not convert. A layer's turn or shift in the viewer is no part of them:
    the registration starts from the two pixel grids, not from how the layers are shown."""
    sizes, units = [], []
    for layer in (fixed_layer, moving_layer):
        axes = spatial_axes(layer, channel_axis)
        steps = data_to_world_matrix(layer, axes)[:-1, :-1]  # world offsets of one row step, one column step
        rows, columns = (float(np.linalg.norm(steps[:, k])) for k in range(2))
        sizes.append([columns, rows])
        units.append(layer.units[axes[0]])
    if all(np.allclose(size, 1.0) for size in sizes):
        return None
    if units[1] != units[0]:
        try:
            factor = float((1 * units[1]).to(units[0]).magnitude)  # pint units
        except Exception:  # noqa: BLE001 (pint's DimensionalityError and kin: not comparable)
            return None
        sizes[1] = [v * factor for v in sizes[1]]
    return (sizes[0][0], sizes[0][1]), (sizes[1][0], sizes[1][1])


def layers_turned(
    fixed_layer: napari.layers.Image, moving_layer: napari.layers.Image, channel_axis: int | None
) -> bool:
    """Whether napari shows the two layers' pixel grids turned, sheared or mirrored against each other (their
    data-to-world maps differ by more than their pixel sizes): the 'before' TRE, which compares the grids as stored,
    then differs from what the viewer shows."""
    directions = []
    for layer in (fixed_layer, moving_layer):
        steps = data_to_world_matrix(layer, spatial_axes(layer, channel_axis))[:-1, :-1]
        directions.append(steps / np.linalg.norm(steps, axis=0))
    return not np.allclose(directions[0], directions[1], atol=1e-6)


def _landmarks(
    fixed_points: napari.layers.Points | None,
    moving_points: napari.layers.Points | None,
    fixed_layer: napari.layers.Image,
    moving_layer: napari.layers.Image,
) -> tuple[tuple[np.ndarray | None, np.ndarray] | None, str, list[str]]:
    """The landmark layers chosen as (fixed, moving) x, y pixels of their images (None without landmarks; fixed None
    when the moving points are only carried over, no TRE), what is said when their counts differ (the fixed ones
    cut to the first min(n), as ANHIR and ``--truncate-landmarks``: every moving point is still mapped, as the
    CLI's landmarks_warped.csv holds them; which points of which layer are left out is said) and the warnings for
    points off their image."""
    landmarks = None
    truncated = ""
    if fixed_points is not None and fixed_points is moving_points:  # a TRE of one set against itself means nothing
        raise PromptsegError(
            f"fixed and moving landmarks are the same layer '{fixed_points.name}': choose each image's own landmarks "
            "(or only moving ones, to carry them over)"
        )
    if fixed_points is not None and moving_points is None:
        raise PromptsegError(
            f"fixed landmarks '{fixed_points.name}': choose the moving landmarks too (or no fixed ones)"
        )
    if moving_points is not None and fixed_points is None:  # carried over only: no TRE
        carried = _points_xy(moving_points, moving_layer)
        if len(carried) == 0:
            raise PromptsegError(f"landmark layer '{moving_points.name}' has no points")
        landmarks = (None, carried)
    elif fixed_points is not None:
        a = _points_xy(fixed_points, fixed_layer)
        b = _points_xy(moving_points, moving_layer)
        empty = [points.name for points, xy in ((fixed_points, a), (moving_points, b)) if len(xy) == 0]
        if empty:  # both named at once: emptying the other next refused the run again
            said = " and ".join(f"'{name}'" for name in empty)
            raise PromptsegError(
                f"landmark layer{'s' * (len(empty) > 1)} {said} {'have' if len(empty) > 1 else 'has'} no points"
            )
        if len(a) != len(b):
            n = min(len(a), len(b))
            longer, extra = (fixed_points, len(a) - n) if len(a) > n else (moving_points, len(b) - n)
            which = "the last point" if extra == 1 else f"the last {extra} points"
            # the moving ones past n are still mapped (every moving point is, as landmarks_warped.csv holds them)
            fate = "left out of the TRE" if longer is fixed_points else "mapped, left out of the TRE"
            truncated = (
                f"landmarks: '{fixed_points.name}' has {len(a)} points, '{moving_points.name}' has "
                f"{len(b)}; comparing the first {n} (paired by their order); {which} of '{longer.name}' "
                f"(data[{n}:]) {'has' if extra == 1 else 'have'} no partner: {fate}"
            )
            a = a[:n]
        landmarks = (a, b)
    # points off their image: another scale's pixels, or micrometres
    checked = zip(landmarks or (), (fixed_points, moving_points), (fixed_layer, moving_layer), strict=False)
    outside = [
        w
        for xy, points, image in checked
        if xy is not None
        and (w := landmarks_outside(xy, plane_shape(_levels(image)[0], image.rgb), f"landmarks '{points.name}'"))
    ]
    return landmarks, truncated, outside


def _labels_on_plane(
    labels_layer: napari.layers.Labels,
    moving_layer: napari.layers.Image,
    factors: np.ndarray,
    shape: tuple[int, int],
    channel_axis: int | None = None,
) -> _LabelsOnPlane:
    """How ``labels_layer`` lies over the registered plane of ``moving_layer`` (``shape``, ``factors`` coarser than
    its full resolution): :func:`~...io.layer_objects.labels_on_plane`, the console's ``warp_labels`` reading of a
    Labels layer, over the moving layer's rows and columns."""
    labels_levels(labels_layer)  # a labels layer not 2D refused first, naming it
    axes = spatial_axes(moving_layer, channel_axis)
    if moving_layer.ndim != len(axes) + (axes[0] == 1):  # _plane refused it already; the matrices below assume it
        raise PromptsegError(f"moving layer '{moving_layer.name}' is not 2D")
    return labels_on_plane(labels_layer, moving_layer, factors, shape, axes)
