"""The registration widget's result layers' data, computed in the worker (no Qt, no layers): the warped moving
image, the region pairs as label images, the deformation grid, the moving labels, landmarks and shapes carried into
the fixed frame."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import CancelledError
from ...methods.registration import RegistrationResult
from ...methods.registration.options import outline_step
from .planes import _LabelsOnPlane
from .shapes import MovingShapes

GRID_LINES = 12


def _resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    return (F.interpolate(t, size=shape, mode="bilinear", align_corners=False)[0, 0] > 0.5).numpy()


def pair_labels(result: RegistrationResult, fixed_shape, moving_shape) -> tuple[np.ndarray, np.ndarray]:
    """Two label images in which region pair k has id k + 1 on both sides (napari colours them alike); the moving
    one is in the moving frame (see :func:`warped_pair_labels` for the fixed frame)."""
    fixed = np.zeros(fixed_shape, np.uint16)
    moving = np.zeros(moving_shape, np.uint16)
    # largest first, so that small regions stay visible on top
    order = sorted(range(len(result.pairs)), key=lambda k: -result.pairs[k].fixed.area_fraction)
    for k in order:
        pair = result.pairs[k]
        fixed[_resize_mask(pair.fixed.mask, fixed_shape)] = k + 1
        moving[_resize_mask(pair.moving.mask, moving_shape)] = k + 1
    return fixed, moving


def warped_pair_labels(result: RegistrationResult, fixed_shape, moving_shape) -> tuple[np.ndarray, np.ndarray]:
    """:func:`pair_labels` with the moving regions warped into the fixed frame by the registration's displacement
    field (nearest neighbour, ids kept): both images are on the fixed grid."""
    fixed, moving = pair_labels(result, fixed_shape, moving_shape)
    return fixed, result.warp_labels(moving)


def deformation_grid(result: RegistrationResult, moving_shape: tuple[int, int], lines: int = GRID_LINES):
    """Lines of a regular grid on the moving image, mapped into the fixed frame: (row, col) paths, in the pixels of
    the planes registered (a pyramid's levels: the deformation's own, not the full-resolution points of
    ``moving_points_to_fixed``)."""
    h, w = moving_shape
    paths = []
    samples = 64
    for y in np.linspace(0, h - 1, lines):
        xy = np.stack([np.linspace(0, w - 1, samples), np.full(samples, y)], 1)
        paths.append(result.deformation.points_to_fixed(xy)[:, ::-1])
    for x in np.linspace(0, w - 1, lines):
        xy = np.stack([np.full(samples, x), np.linspace(0, h - 1, samples)], 1)
        paths.append(result.deformation.points_to_fixed(xy)[:, ::-1])
    return paths


@dataclass
class _Shown:
    """What the result layers show, computed in the worker: the warped moving image and pair labels on the fixed
    plane's grid, the grid's paths there, the moving landmarks mapped to the fixed layer's full-resolution pixels."""

    result: RegistrationResult
    warped: np.ndarray
    pair_labels: tuple[np.ndarray, np.ndarray] | None
    grid: list[np.ndarray] | None
    mapped: np.ndarray | None
    #: the moving labels on the fixed plane's grid, and how many ids they had before and have there
    labels: np.ndarray | None = None
    label_counts: tuple[int, int] = (0, 0)
    #: the moving shapes' outlines in the fixed layer's full-resolution pixels (x, y)
    shapes: list[np.ndarray] | None = None


def _results_to_show(
    result: RegistrationResult,
    fixed: np.ndarray,
    moving: np.ndarray,
    landmarks: tuple[np.ndarray | None, np.ndarray] | None,
    moving_labels: _LabelsOnPlane | None,
    fixed_factors: np.ndarray,
    moving_factors: np.ndarray,
    with_grid: bool,
    progress,
    cancel,
    shapes: MovingShapes | None = None,
    moving_channel_axis: int | None = None,
) -> _Shown:
    """The result layers' data (worker thread; no Qt, no layers). Landmarks are in full-resolution pixels (x, y):
    divided by the moving plane's factors on the way in, multiplied by the fixed plane's on the way out. The warped
    image keeps the moving image's channels where they were (``moving_channel_axis``), as the CLI writes it."""

    def check() -> None:
        if cancel():
            raise CancelledError("registration cancelled")

    fixed_shape, moving_shape = result.deformation.fixed_shape, result.deformation.moving_shape
    progress(0.97, "warping the moving image")
    check()
    # stopped between bands of rows: a large image's warp takes seconds (4.5 s for 4400 x 5340 RGB)
    warped = result.warp_image(moving, channel_axis=moving_channel_axis, cancel=cancel)
    check()
    pairs = warped_pair_labels(result, fixed_shape, moving_shape) if result.pairs else None
    grid = deformation_grid(result, moving_shape) if with_grid else None
    labels, label_counts = None, (0, 0)
    if moving_labels is not None:
        check()
        on_plane = moving_labels.resample()
        check()
        labels = result.warp_labels(on_plane)
        label_counts = (int(np.count_nonzero(np.unique(on_plane))), int(np.count_nonzero(np.unique(labels))))

    def to_fixed(xy: np.ndarray) -> np.ndarray:  # full-resolution pixels of one layer to the other's
        return result.moving_points_to_fixed(xy, moving_factors=moving_factors, fixed_factors=fixed_factors)

    mapped = None if landmarks is None else to_fixed(landmarks[1])
    check()
    outlines = None if shapes is None else shapes.mapped(to_fixed, outline_step(moving_factors))
    return _Shown(result, warped, pairs, grid, mapped, labels, label_counts, outlines)
