"""The channels a trained text model read its training images with, applied to the images it segments.

A model trained on multichannel (C, Y, X) images (`promptseg train-text --channel-axis 0 [--channels ...]`) records
that reading (``training.image_channels`` of its config: channel axis, channels picked, channel count). Why: the
user had to say it again at every inference, and a (C, Y, X) image given without it was refused as ambiguous
(Python) or segmented as a stack of C planes (CLI, widget). One resolution for all three (:func:`text_model_channels`),
and one record of what was applied (:func:`read_as_trained`: ``TextResult.image_channels``, report.json's).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ...errors import PromptsegError


def recorded_channels(text_model: object) -> dict | None:
    """``training.image_channels`` of a trained text model (its directory or weights file, a loaded model, or a
    :class:`~.routes.TextRoute` of route "trained"); None for a model trained on gray or colour images, or any other
    route or model (their loaders say what is wrong with a path)."""
    from .routes import TextRoute

    if isinstance(text_model, TextRoute):
        if text_model.route != "trained":
            return None
        text_model = text_model.model
    if text_model is None:
        return None
    if isinstance(text_model, (str, os.PathLike)):
        from ...models.text_segmenter import is_text_model, read_config

        if not str(text_model) or not is_text_model(text_model):
            return None
        info = read_config(text_model)
    else:
        info = getattr(text_model, "info", None) or {}
    recorded = (info.get("training") or {}).get("image_channels")
    return recorded if isinstance(recorded, dict) and recorded.get("count") else None


#: where an image's channel axis and channels came from when the trained text model's were applied
MODEL_READING = "the text model's training"


def channels_record(channel_axis: int | None, channels: Sequence[int] | None, source: str) -> dict | None:
    """What an image was read with: ``{"channel_axis", "channels", "from"}`` (``source``: "given", or the text
    model's training, :data:`MODEL_READING`); None when it was read with neither (no channel axis). Why: a model's
    axis applied to an image was said nowhere (report.json's parameters say what was typed)."""
    if channel_axis is None and channels is None:
        return None
    return {"channel_axis": channel_axis, "channels": None if channels is None else list(channels), "from": source}


def channels_said(record: dict | None) -> str:
    """A :func:`channels_record` in a line of a summary: "channels: axis 0, [2, 0] (from the text model's
    training)"; empty for none or a reading the user gave alone (theirs, said already)."""
    if not record or record["from"] == "given":
        return ""
    picked = "" if record["channels"] is None else f", {record['channels']}"
    return f"channels: axis {record['channel_axis']}{picked} (from {record['from']})"


def read_as_trained(
    recorded: dict | None,
    shape: Sequence[int],
    channel_axis: int | None,
    channels: Sequence[int] | None,
    name: str = "image",
) -> tuple[int | None, list[int] | None, dict | None]:
    """:func:`text_model_channels`, and the :func:`channels_record` of its answer: given, completed by the model's
    training, or the model's alone."""
    axis, picked = text_model_channels(recorded, shape, channel_axis, channels, name)
    given = channel_axis is not None or channels is not None
    if (axis, picked) == (channel_axis, None if channels is None else list(channels)):
        source = "given"
    else:
        source = f"given, completed by {MODEL_READING}" if given else MODEL_READING
    return axis, picked, channels_record(axis, picked, source)


def text_model_channels(
    recorded: dict | None,
    shape: Sequence[int],
    channel_axis: int | None,
    channels: Sequence[int] | None,
    name: str = "image",
) -> tuple[int | None, list[int] | None]:
    """The ``channel_axis`` and ``channels`` to read an image of ``shape`` with for a model trained with the
    ``recorded`` reading (:func:`recorded_channels`): those given, else the model's (its channel axis, or channels
    already last as a named composite or a pyramid is read); a choice feeding the model another number of channels
    than it was trained on, or an image with another channel count, is refused naming both. A 4D stack of such
    images has its channels one axis further along (a (Z, C, Y, X) stack's 1 for channel axis 0) or last (each
    plane resolved in turn); more axes are left to the stack's refusal."""
    channels = None if channels is None else list(channels)
    if not recorded:
        return channel_axis, channels
    axis0, count = int(recorded["channel_axis"]), int(recorded["count"])
    picked = list(recorded["channels"]) if recorded.get("channels") else None
    fed = len(picked) if picked else count
    trained = f"the text model was trained on {count}-channel images (channel axis {axis0}" + (
        f", channels {picked} fed to it)" if picked else ")"
    )
    ways = "channel_axis and channels (CLI --channel-axis, --channels; widget: channel axis, channels)"
    shape = tuple(int(s) for s in shape)
    ndim = len(shape)
    if channel_axis is None:
        if ndim == 2:
            raise PromptsegError(
                f"{name}: {trained}; this is a 2D image of shape {shape}, with no channels: give it with its {count} "
                "channels"
            )
        if ndim == 4:  # a stack of the model's images: its planes' channel axis, one further along
            channel_axis = _stack_channel_axis(shape, axis0, count, name, trained, ways)
            if channel_axis is None:  # channels or colours last: each plane reads them as its own
                return channel_axis, channels
        elif ndim != 3:
            return channel_axis, channels
        elif -3 <= axis0 < 3 and shape[axis0] == count:
            channel_axis = axis0
        elif shape[-1] == count:  # read channels last (a named composite, a pyramid)
            channel_axis = -1
        else:
            raise PromptsegError(
                f"{name}: {trained}; its shape {shape} has no axis of {count} channels: give its {ways}"
            )
    if ndim < 3 or not -ndim <= channel_axis < ndim:  # as_channels_last says what is wrong
        return channel_axis, channels
    have = shape[channel_axis]
    if channels is None:
        if have != count:
            raise PromptsegError(
                f"{name}: {trained}; this image has {have} channels on axis {channel_axis}: choose the {fed} to feed "
                f"it with {ways}"
            )
        channels = picked
    now = len(channels) if channels is not None else have
    if now != fed:
        given = f"channels {channels}" if channels is not None else f"all {have} on axis {channel_axis}"
        raise PromptsegError(
            f"{name}: {trained}, {fed} channel(s) fed to it; {now} channel(s) given ({given}): give {fed} with {ways}"
        )
    return channel_axis, channels


def _stack_channel_axis(
    shape: tuple[int, ...], axis0: int, count: int, name: str, trained: str, ways: str
) -> int | None:
    """The channel axis of a (Z, ...) stack of images read with channel axis ``axis0``: that axis of its planes (the
    stack's one further along, a (Z, C, Y, X) stack's 1 for a model of (C, Y, X) images); None when its last axis
    holds channels or colours (a (Z, Y, X, C) stack, each plane resolved). A stack with neither was refused as a
    4D array that may be a time-lapse, not naming the model's channel axis: refused naming it."""
    stack_axis = axis0 + 1 if axis0 >= 0 else axis0
    if -4 <= stack_axis < 4 and stack_axis % 4 != 0 and shape[stack_axis] == count:
        return stack_axis
    if shape[-1] <= 4:
        return None
    raise PromptsegError(
        f"{name}: {trained}; this 4D array of shape {shape} has no axis of {count} channels where a stack of such "
        f"images has them (axis {stack_axis % 4}): if it is a stack with its channels on another axis, give its "
        f"{ways}; a time-lapse of 3D stacks is not taken whole: split it into one stack per time point"
    )
