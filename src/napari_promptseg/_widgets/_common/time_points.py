"""A time-lapse of volumes (T, Z, Y, X) in the One-shot and Text widgets: the time point the viewer shows is
segmented as a stack of planes (as the Interactive widget propagates at the time point shown, and the CLI's --time T
segments one), and its labels are written into the (T, Z, Y, X) Labels layer of the widget's earlier runs on that
layer, the other time points kept, in one undo step."""

from __future__ import annotations

from dataclasses import dataclass

import napari
import napari.layers
import numpy as np

from .layers import LayerPixels, stack_axis_of

#: a time-lapse's labels layer: metadata naming the widget and image layer whose runs write their time points there
TIME_LAPSE_KEY = "promptseg_time_lapse"


@dataclass(frozen=True)
class TimePoint:
    """The time point of a (T, Z, Y, X) layer a run segments, and the layer's (T, Z, Y, X) shape, which its labels
    layer has."""

    index: int
    shape: tuple[int, ...]
    #: said with the result when the layer does not name its first axis time (napari's axis label, the file's axes):
    #: a (C, Z, Y, X) layer whose channel axis was not chosen is segmented at one channel otherwise, unsaid
    caution: str | None = None


def is_time_lapse(layer: napari.layers.Image, channel_axis: int | None) -> bool:
    """Whether ``layer`` is a time-lapse of volumes: 4 axes besides an RGB layer's colours, no channel axis chosen."""
    return channel_axis is None and int(layer.ndim) == 4


def shown_time_point(viewer: napari.viewer.Viewer, layer: napari.layers.Image) -> TimePoint:
    """The time point (first axis) of a (T, Z, Y, X) ``layer`` the viewer shows, read on the main thread."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    count = int(data.shape[0])
    shown = float(layer.world_to_data(viewer.dims.point)[0])
    shape = tuple(int(s) for s in data.shape[:4])
    index = int(np.clip(np.round(shown), 0, count - 1))
    caution = None
    if stack_axis_of(layer, 0) != "t":
        caution = (
            f"'{layer.name}' {shape} was read as a time-lapse of volumes (T, Z, Y, X), segmented at time point "
            f"{index} shown; if its first axis holds channels, choose channel axis 0"
        )
    return TimePoint(index, shape, caution)


def at_time_point(pixels: LayerPixels, t: int) -> LayerPixels:
    """A time-lapse layer's pixels at time point ``t``: its (Z, Y, X) volume (each pyramid level's), not read."""
    data = [level[t] for level in pixels.data] if pixels.multiscale else pixels.data[t]
    return LayerPixels(pixels.name, data, pixels.multiscale, pixels.rgb, pixels.ndim - 1)


def write_time_point(
    viewer: napari.viewer.Viewer, name: str, owner: str, volume: np.ndarray, time_point: TimePoint, placement: dict
) -> tuple[napari.layers.Labels, list[int]]:
    """``volume`` (Z, Y, X) written at its time point into the Labels layer of ``owner`` (the widget and image layer,
    e.g. "one-shot: movie") of the time-lapse's shape, the latest such layer, in one undo step (napari's
    ``data_setitem``: Ctrl+Z in that layer takes it back), the other time points kept; else into a new layer
    ``name`` holding it alone. Returns the layer and the other time points it holds labels at."""
    found = [
        layer
        for layer in viewer.layers
        if isinstance(layer, napari.layers.Labels)
        and layer.metadata.get(TIME_LAPSE_KEY) == owner
        and tuple(layer.data.shape) == time_point.shape
    ]
    t = time_point.index
    if not found:
        data = np.zeros(time_point.shape, np.uint32)
        data[t] = volume
        layer = viewer.add_labels(data, name=name, metadata={TIME_LAPSE_KEY: owner}, **placement)
        return layer, []
    layer = found[-1]
    now = np.asarray(layer.data[t])
    changed = np.nonzero(now != volume)
    if len(changed[0]):
        layer.data_setitem((np.full(len(changed[0]), t), *changed), np.asarray(volume)[changed])
    others = [k for k in range(time_point.shape[0]) if k != t and np.asarray(layer.data[k]).any()]
    return layer, others


def time_point_words(time_point: TimePoint, others: list[int]) -> str:
    """What a summary says of a time point written: "time point 1 (time points 0 kept)"."""
    kept = f" ({'time point' if len(others) == 1 else 'time points'} {', '.join(map(str, others))} kept)"
    return f"time point {time_point.index}" + (kept if others else "")
