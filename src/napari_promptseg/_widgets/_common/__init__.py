"""Pieces every promptseg widget needs: layer pickers, one background task at a time, errors as notifications.

Widgets stay thin: they gather inputs on the main thread, hand a plain function to :class:`TaskRunner` (which runs it
in a ``napari.qt.threading`` worker with progress and cancel) and push the result back into layers on the main thread.
The pieces live in :mod:`.layers` (planes, pyramid levels, placement of result layers), :mod:`.picker`
(:class:`LayerPicker`), :mod:`.channels` (the channel axis of a multichannel layer), :mod:`.tasks`
(:class:`TaskRunner`, notifications) and :mod:`.panel` (the run/status panel); every name is importable from here.
"""

from ...callbacks import ProgressCallback
from ...models._native import load_triton_safely  # noqa: F401 - every widget calls it on the main thread
from .channels import CHANNEL_AXIS, ChannelAxisBox, check_channel_axis, offers_channel_axis
from .controls import AdvancedSection, SegmenterBox, available_devices, fraction_box
from .layers import (
    ExemplarLayers,
    LayerPixels,
    _levels,
    _same_map,
    data_token,
    displayed_plane,
    exemplar_layers,
    image_and_labels,
    labels_plane_map,
    layer_level,
    layer_pixels,
    layer_pyramid_level,
    level_factors,
    placement,
    placement_over,
    plane_shape,
    read_exemplar,
    read_reference_plane,
    save_exemplar,
    stack_axis_of,
    submit_save_exemplar,
    unproxied,
    whole_image_level,
)
from .panel import STATES, _ProgressPanel, controls_layout, show_details
from .picker import OBJECT_SIZE_KEY, ROLE_KEY, LayerPicker, is_preview
from .save_undo import SaveUndo
from .tasks import (
    Task,
    TaskRunner,
    _Job,
    _keep,
    _open_boxes,
    _Outcome,
    _unwatch,
    after_every_run,
    debounce_timer,
    is_deleted,
    notify_exception,
    notify_once,
    notify_warning,
    task_segmenter,
)

__all__ = [
    "AdvancedSection",
    "CHANNEL_AXIS",
    "OBJECT_SIZE_KEY",
    "ROLE_KEY",
    "ChannelAxisBox",
    "ExemplarLayers",
    "LayerPixels",
    "STATES",
    "SaveUndo",
    "SegmenterBox",
    "LayerPicker",
    "ProgressCallback",
    "Task",
    "TaskRunner",
    "_Job",
    "_Outcome",
    "_ProgressPanel",
    "_keep",
    "_levels",
    "_open_boxes",
    "_same_map",
    "_unwatch",
    "after_every_run",
    "available_devices",
    "controls_layout",
    "check_channel_axis",
    "data_token",
    "debounce_timer",
    "displayed_plane",
    "exemplar_layers",
    "fraction_box",
    "image_and_labels",
    "is_deleted",
    "is_preview",
    "layer_level",
    "layer_pyramid_level",
    "layer_pixels",
    "level_factors",
    "load_triton_safely",
    "notify_exception",
    "notify_once",
    "notify_warning",
    "offers_channel_axis",
    "placement",
    "placement_over",
    "plane_shape",
    "read_exemplar",
    "save_exemplar",
    "stack_axis_of",
    "submit_save_exemplar",
    "labels_plane_map",
    "read_reference_plane",
    "show_details",
    "task_segmenter",
    "unproxied",
    "whole_image_level",
]
