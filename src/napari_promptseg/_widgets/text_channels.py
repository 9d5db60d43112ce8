"""How the Text widget reads a layer's channels for a text model trained on multichannel images: the model's own
reading (its channel axis when 'none' is chosen; a contradicting choice refused), and a file the reader opened as
one layer per channel read back together, in the file's order."""

from __future__ import annotations

import napari
import napari.layers
import numpy as np

from ..errors import PromptsegError
from ..methods.text.trained_channels import MODEL_READING, read_as_trained
from ._common import whole_image_level
from ._common.channels import channels_together, file_channel_layers


def read_for_text_model(
    viewer: napari.viewer.Viewer,
    layer: napari.layers.Image,
    data: object,
    channel_axis: int | None,
    channels: list[int] | None,
    recorded: dict | None,
) -> tuple[object, int | None, list[int] | None, dict | None, list[str] | None]:
    """``layer``'s pixels (``data``, its level) read as the text model whose channel record is ``recorded`` was
    trained on them: (data, channel axis, channels, record for ``image_channels``, names of the file's channel layers
    read together or None)."""
    siblings = _file_channel_layers(viewer, layer, channel_axis, channels, recorded)
    if siblings:
        levels = [data if other is layer else whole_image_level(other)[0] for other in siblings]
        data = channels_together(levels)
        channel_axis, channels, read_with = read_as_trained(
            recorded, np.shape(data), 0, None, f"the channel layers of '{layer.name}'"
        )
        names = [other.name for other in siblings]
        read_with["from"] = f"{MODEL_READING}: the file's channel layers " + ", ".join(f"'{n}'" for n in names)
        return data, channel_axis, channels, read_with, names
    return (data, *_trained_reading(layer, data, channel_axis, channels, recorded), None)


def _file_channel_layers(viewer, layer, channel_axis, channels, recorded) -> list | None:
    """For a text model trained on multichannel images, a layer that is one channel of a file the reader opened a
    layer per channel (an ImageJ hyperstack, an OME-TIFF of channels) is read with its file's other channel layers:
    no single layer held the image the model was trained on, and each was refused. Those layers, or None."""
    if channel_axis is not None or channels is not None or layer.rgb or not recorded:
        return None
    siblings = file_channel_layers(viewer, layer)
    return siblings if siblings and len(siblings) >= 2 else None


def _trained_reading(layer, data, channel_axis, channels, recorded) -> tuple[int | None, list[int] | None, dict | None]:
    """The layer's channels read as the trained text model chosen was trained on them (its channel axis when
    'none' is chosen; a contradicting choice refused): the CLI's and segment_text's resolution, and its record
    (``image_channels``). Reads the model's config alone."""
    given = channel_axis is not None or channels is not None
    if recorded and channel_axis is None and not layer.rgb and np.ndim(data) == 4:
        channel_axis = _layer_stack_channel_axis(layer, np.shape(data), recorded)
    axis, picked, read_with = read_as_trained(
        recorded, np.shape(data), channel_axis, channels, f"image layer '{layer.name}'"
    )
    if read_with and not given:  # a 4D layer's axis above is the model's too
        read_with["from"] = MODEL_READING
    if axis is None:
        return axis, picked, read_with
    if layer.rgb and axis % np.ndim(data) == np.ndim(data) - 1:
        # an RGB layer's channels are last already: its placement has no channel axis
        return None, picked, read_with
    axis %= np.ndim(data)  # counted from the front, as the layer's placement leaves it out
    return axis, picked, read_with and {**read_with, "channel_axis": axis}


def _layer_stack_channel_axis(layer, shape: tuple[int, ...], recorded: dict) -> int:
    """A 4D layer's channel axis, for a text model trained on multichannel images (``recorded``) with 'none' chosen:
    its first, as the widget reads a 4D layer's channels (C, Z, Y, X), when it holds the model's channel count.
    Other 4D layers were refused as 4-dimensional, not a word of the model's channel axis: refused naming it."""
    count = int(recorded["count"])
    if shape[0] == count:
        return 0
    raise PromptsegError(
        f"image layer '{layer.name}': the text model was trained on {count}-channel images (channel axis "
        f"{recorded['channel_axis']}); this 4D layer of shape {tuple(shape)} holds {shape[0]}, not {count}, on its "
        "first axis, where this widget reads a stack's channels ((C, Z, Y, X), channel axis 0): give it in that "
        "order (a (Z, C, Y, X) stack: `promptseg text --channel-axis 1`), or pick one stack (e.g. one time point: "
        "Layers > Split Stack)"
    )
