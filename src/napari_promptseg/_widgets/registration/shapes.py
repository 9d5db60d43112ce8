"""A Shapes layer drawn on the moving image (outlines, regions of interest), carried into the fixed frame by a
registration: read on the main thread (:func:`moving_shapes`), mapped in the worker (:meth:`MovingShapes.mapped`),
added as a new Shapes layer over the fixed image (:func:`add_registered_shapes`).

A deformation bends straight edges, so every outline gets a vertex every 2 registered pixels before it is mapped
(:func:`~...io.annotations.map_paths`, as ``promptseg register --moving-annotations`` does for GeoJSON); rectangles
and ellipses therefore come back as polygons, lines as paths. Each shape keeps its colours, edge width and features.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import napari
import napari.layers
import numpy as np

from ...errors import PromptsegError
from ...io.annotations import map_paths
from ...io.layer_objects import data_to_world_matrix
from .._common import placement_over

#: vertices of an ellipse's outline (napari stores an ellipse as the four corners of its box)
ELLIPSE_VERTICES = 64
CLOSED_TYPES = ("polygon", "rectangle", "ellipse")


@dataclass
class MovingShapes:
    """The shapes of a layer as (N, 2) x, y paths in full-resolution pixels of the moving image, and their style."""

    name: str
    paths: list[np.ndarray]
    closed: list[bool]
    style: dict[str, Any]

    def mapped(self, to_fixed: Callable[[np.ndarray], np.ndarray], max_segment: float) -> list[np.ndarray]:
        """Each path densified to ``max_segment`` and mapped by ``to_fixed`` (x, y -> x, y)."""
        return map_paths(self.paths, self.closed, to_fixed, max_segment)


def moving_shapes(
    layer: napari.layers.Shapes, moving_layer: napari.layers.Image, moving_axes: list[int] = (0, 1)
) -> MovingShapes:
    """``layer``'s shapes in the full-resolution pixels of ``moving_layer`` (its rows and columns: ``moving_axes``,
    the last two of a (C, Y, X) layer), through both layers' data-to-world maps (shapes drawn with a scale, offset or
    affine of their own land where napari shows them)."""
    if layer.ndim != 2:
        raise PromptsegError(
            f"shapes layer '{layer.name}' has {layer.ndim} dimensions; registration carries 2D shapes over: draw them "
            "on a 2D layer"
        )
    if len(layer.data) == 0:
        raise PromptsegError(f"shapes layer '{layer.name}' has no shapes")
    to_moving = np.linalg.inv(data_to_world_matrix(moving_layer, list(moving_axes))) @ data_to_world_matrix(
        layer, [0, 1]
    )
    paths, closed = [], []
    for vertices, kind in zip(layer.data, layer.shape_type, strict=True):
        rows_cols = np.asarray(vertices, float)[:, -2:]
        if kind == "ellipse":
            rows_cols = _ellipse_outline(rows_cols)
        on_moving = rows_cols @ to_moving[:2, :2].T + to_moving[:2, 2]
        paths.append(on_moving[:, ::-1])
        closed.append(kind in CLOSED_TYPES)
    style = {
        "edge_color": np.asarray(layer.edge_color),
        "face_color": np.asarray(layer.face_color),
        "edge_width": np.asarray(layer.edge_width, float),
        "features": layer.features.copy(),
    }
    return MovingShapes(layer.name, paths, closed, style)


def _ellipse_outline(corners: np.ndarray) -> np.ndarray:
    """The outline of the ellipse inscribed in the box of four ``corners`` (in order, as napari keeps them)."""
    centre = corners.mean(axis=0)
    half_u, half_v = (corners[1] - corners[0]) / 2, (corners[3] - corners[0]) / 2
    t = np.linspace(0, 2 * np.pi, ELLIPSE_VERTICES, endpoint=False)[:, None]
    return centre + np.cos(t) * half_u + np.sin(t) * half_v


def add_registered_shapes(
    viewer: napari.Viewer,
    shapes: MovingShapes,
    mapped_xy: list[np.ndarray],
    fixed_layer: napari.layers.Image,
    fixed_axes: list[int] = (0, 1),
) -> napari.layers.Shapes:
    """A new Shapes layer over ``fixed_layer`` (its rows and columns: ``fixed_axes``) from the mapped paths
    (full-resolution pixels of the fixed image)."""
    return viewer.add_shapes(
        [xy[:, ::-1] for xy in mapped_xy],
        shape_type=["polygon" if c else "path" for c in shapes.closed],
        name=f"{shapes.name} registered",
        **shapes.style,
        **placement_over(fixed_layer, list(fixed_axes)),
    )
