"""Registration widget: fixed + moving Image layers (+ optional landmark Points, + an optional Labels layer and an
optional Shapes layer drawn on the moving image) -> warped overlay, region pairs, deformation grid, mapped landmarks
and TRE, warped labels, the shapes in the fixed frame. A package by job: ``planes`` (the inputs read from the
layers), ``results`` (the result layers' data, computed in the worker), ``shapes`` (a Shapes layer carried across),
``layers`` (the result layers added, replacing the previous run's) and ``widget`` (the widget: controls, a run).

Everything is shown in the fixed frame: the moving image and the moving regions are warped onto the fixed grid, so
region pair k (same id, same colour on both sides) lies on its fixed partner where the registration is right. The
region layers start hidden (they would cover the tissue). A rerun on the same pair replaces the layers the
previous run of this widget added that are still as it made them (a renamed or edited one stays), and nothing else
(a run on another pair, or on the pair once its pixels were replaced, keeps them all). Landmark layers with
different counts are compared over their first min(n) points (as ANHIR and ``promptseg register
--truncate-landmarks`` do), and the summary says so; every moving point is mapped, as the CLI's
landmarks_warped.csv holds them. Moving landmarks without fixed ones are only carried over (no TRE). The moving
labels are read where napari shows them over the moving image (any shape, scale or affine of their own) and warped
with nearest neighbour: ids are kept, never mixed.

The work is :func:`napari_promptseg.methods.registration.register` in a thread worker (:class:`.._common.TaskRunner`).
Layers hold (row, col) data coordinates; the core takes x = column, y = row, so points are flipped on the way in and
out. Results are new layers placed with the fixed layer's whole data-to-world transform (nothing is overwritten);
they are computed in the worker (warping a 4000 x 5333 RGB image took 12.6 s), and only added on the main thread.
A pyramid layer is registered at one level (:data:`~...io.multiscale.REGISTER_SIDE`, read by :mod:`.planes`);
landmarks and TRE stay in full-resolution pixels.
"""

from __future__ import annotations

from .planes import _labels_on_plane as _labels_on_plane  # noqa: F401 - read by the tests, as before the split
from .planes import _plane as _plane  # noqa: F401
from .results import GRID_LINES, deformation_grid, pair_labels, warped_pair_labels
from .shapes import MovingShapes, add_registered_shapes, moving_shapes
from .widget import REGISTER_SHARE, RegistrationWidget

__all__ = [
    "GRID_LINES",
    "REGISTER_SHARE",
    "MovingShapes",
    "RegistrationWidget",
    "add_registered_shapes",
    "deformation_grid",
    "moving_shapes",
    "pair_labels",
    "warped_pair_labels",
]
