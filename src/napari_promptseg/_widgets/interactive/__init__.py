"""Interactive widget: boxes (Shapes) and positive/negative clicks (Points) -> live preview -> commit to Labels.
A package: ``geometry`` (planes, prompts, pyramid levels), ``labels`` (commit targets, seeds), ``layout``
(controls), ``widget`` (the widget itself), and its mixins ``preview`` (embedding, live preview), ``actions`` (find
all, propagate: new layers) and ``commit`` (commit, undo, clear prompts).

The widget only gathers inputs and moves results between layers; segmentation is
:func:`napari_promptseg.methods.interactive.segment_prompts` with a model from
:func:`napari_promptseg.models.load_segmenter`, run in a thread worker by :class:`.._common.TaskRunner`.

Coordinates: napari layers hold (row, col) *data* coordinates, each layer with its own scale/translate. Prompts are
taken to world coordinates with their own layer's transform and back into the image layer's data coordinates, so a
box drawn on any Shapes layer lands on the right pixels; the core library then receives x = column, y = row.
For a 3D/4D stack the displayed 2D plane at ``viewer.dims.current_step`` is segmented; prompts count for the plane
they were drawn on.
"""

from __future__ import annotations

from .geometry import POSITIVE, PlaneGeometry, extract_plane, gather_prompts, plane_geometry
from .labels import commit_to_labels
from .layout import BOXES_NAME, CLEAR_KEY, COMMIT_KEY, POINTS_NAME, PREVIEW_NAME, TARGET_NAME, TOGGLE_KEY
from .widget import InteractiveWidget

__all__ = [
    "BOXES_NAME",
    "CLEAR_KEY",
    "COMMIT_KEY",
    "POINTS_NAME",
    "POSITIVE",
    "PREVIEW_NAME",
    "TARGET_NAME",
    "TOGGLE_KEY",
    "InteractiveWidget",
    "PlaneGeometry",
    "commit_to_labels",
    "extract_plane",
    "gather_prompts",
    "plane_geometry",
]
