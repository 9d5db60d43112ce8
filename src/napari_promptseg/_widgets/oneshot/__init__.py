"""One-shot reference widget: a reference image + its Labels layer -> the same tissue in a target image, stack or
folder. A package by job: ``inputs`` (the target's planes, a target folder's images, the layers gathered and read),
``results`` (the worker body and the summary of what it found) and ``widget`` (the widget: controls, a run, the
result layers).

Thin: it gathers layers and options on the main thread, runs :func:`napari_promptseg.methods.oneshot.segment_like`
(or :func:`...methods.instances.segment_instances_like` for many instances) in a :class:`.._common.TaskRunner` worker
with progress and cancel, and adds the result as a *new* Labels layer plus the chosen prompt points as a Points
layer (positive lime, negative red). Existing layers are never modified.
"""

from __future__ import annotations

from .inputs import (
    OneShotInputs,
    OneShotPixels,
    folder_targets,
    is_stack,
    read_oneshot_inputs,
    read_planes,
    target_planes,
)
from .results import PARTIAL_LABELS_TEXT, OneShotOutput, result_summary, run_oneshot
from .widget import MODES, NEGATIVE_COLOUR, POSITIVE_COLOUR, OneShotWidget

__all__ = [
    "MODES",
    "NEGATIVE_COLOUR",
    "PARTIAL_LABELS_TEXT",
    "POSITIVE_COLOUR",
    "OneShotInputs",
    "OneShotOutput",
    "OneShotPixels",
    "OneShotWidget",
    "folder_targets",
    "is_stack",
    "read_oneshot_inputs",
    "read_planes",
    "result_summary",
    "run_oneshot",
    "target_planes",
]
