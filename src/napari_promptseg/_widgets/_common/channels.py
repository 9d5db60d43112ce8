"""The channel axis of a multichannel image held in one layer ((C, Y, X), e.g. membrane + nuclei), as the CLI's
--channel-axis and --channels: the box that offers it, with the channels field beside it, and the check of a layer
against it. One control for the Interactive, One-shot and Text widgets, and the Registration widget's channel axis
(without the channels field: register() reads every channel)."""

from __future__ import annotations

import napari
import napari.layers
import numpy as np
from qtpy.QtWidgets import QComboBox, QFormLayout, QLineEdit

from ...errors import PromptsegError
from .layers import LayerPixels, _levels

#: the one channel axis the widgets take: Labels layers drop it and napari aligns layers by their trailing axes, so
#: only a leading channel axis keeps the labels over the image
CHANNEL_AXIS = 0


def offers_channel_axis(layer: napari.layers.Layer | LayerPixels | None) -> bool:
    """Whether ``layer``'s first axis may hold channels: a non-RGB image of three or more axes."""
    return layer is not None and not layer.rgb and layer.ndim >= 3


def check_channel_axis(layer: napari.layers.Image | LayerPixels, channel_axis: int | None, name: str) -> None:
    """Refuse a channel axis ``layer`` (named ``name`` in the error) cannot have; cheap (its shape only)."""
    if channel_axis is None:
        return
    if layer.rgb:
        raise PromptsegError(f"{name}: an RGB layer has no separate channel axis; choose 'none'")
    if layer.ndim < 3:
        raise PromptsegError(f"{name}: a 2D layer has no channel axis; choose 'none'")
    if channel_axis != CHANNEL_AXIS:
        raise PromptsegError(
            f"{name}: the channel axis must be the first axis (got {channel_axis}); split the channels "
            "(layer menu: Split Stack) or reorder the axes"
        )


class ChannelAxisBox(QComboBox):
    """'none (gray or RGB)', or 'axis 0 (N channels)' when a layer offers it (``currentData()``: None or 0); its
    :attr:`channels_edit` takes the channels fed to the model (the CLI's --channels): of the channel axis, or of an
    RGB layer's colours (as the CLI's --channels 0 2 on an RGB file)."""

    def __init__(self) -> None:
        super().__init__()
        self.setToolTip("For a multichannel image stored as one layer: the axis holding the channels")
        self.channels_edit = QLineEdit()
        self.channels_edit.setPlaceholderText("all (up to 3), e.g. 0,2")
        self.channels_edit.setToolTip(
            "Up to three channels fed to the model's colour inputs: of the channel axis, or of an RGB layer "
            "(0 red, 1 green, 2 blue)"
        )
        self._rgb = False  # the layer offered is RGB: its colours are the channels
        self.offer([], keep=False)

    def add_rows(self, form: QFormLayout) -> None:
        form.addRow("channel axis", self)
        form.addRow("channels", self.channels_edit)

    @property
    def channel_axis(self) -> int | None:
        return self.currentData()

    def checked(self, layer: napari.layers.Image, name: str) -> tuple[int | None, list[int] | None]:
        """(channel axis, channels) chosen, refused now if ``layer`` (``name`` in the error) cannot have them."""
        check_channel_axis(layer, self.channel_axis, name)
        return self.channel_axis, self.channels()

    def channels(self) -> list[int] | None:
        """The channels typed (None: all, or neither a channel axis chosen nor an RGB layer offered)."""
        text = self.channels_edit.text().strip()
        if not text or (self.channel_axis is None and not self._rgb):
            return None
        try:
            return [int(part) for part in text.replace(" ", ",").split(",") if part]
        except ValueError:
            raise PromptsegError(f"channels: expected comma-separated channel numbers like 0,2; got {text!r}") from None

    def offer(self, layers: list[napari.layers.Layer | None], *, keep: bool) -> None:
        """Offer the channel axis when one of ``layers`` may have it (counted on the first that may); ``keep``: the
        current choice stays while it is still offered, else 'none' is chosen (another image's first axis may hold
        planes, not channels). Says nothing to the widget (signals blocked)."""
        chosen = self.currentData() if keep else None
        self.blockSignals(True)
        self.clear()
        self.addItem("none (gray or RGB)", None)
        layer = next((layer for layer in layers if offers_channel_axis(layer)), None)
        if layer is not None:
            n = _levels(layer)[0].shape[CHANNEL_AXIS]
            self.addItem(f"axis {CHANNEL_AXIS} ({n} channel{'' if n == 1 else 's'})", CHANNEL_AXIS)
        self.setCurrentIndex(max(0, self.findData(chosen)) if chosen is not None else 0)
        self.blockSignals(False)
        # an RGB layer's colours are channels too: the CLI's --channels picks them, and the field was disabled here
        self._rgb = any(layer is not None and layer.rgb for layer in layers)
        self.channels_edit.setEnabled(self.count() > 1 or self._rgb)


def file_channel_layers(viewer: napari.Viewer, layer: napari.layers.Layer) -> list[napari.layers.Image] | None:
    """The viewer's layers of the channels of the file ``layer`` is one channel of, in the file's channel order (the
    plugin's reader opens a multichannel file one layer per channel, each knowing its channel:
    :func:`~napari_promptseg.io.layer_data.per_channel_metadata`), whatever their order in the layer list; None for
    a layer that is no file's channel. A channel whose layer was removed, a file opened twice, or channel layers of
    different shapes are refused, naming the file."""
    from ...io.layer_data import CHANNEL_KEY, CHANNELS_KEY

    meta = layer.metadata
    if not all(key in meta for key in ("path", CHANNEL_KEY, CHANNELS_KEY)):
        return None
    path, count = meta["path"], int(meta[CHANNELS_KEY])
    found: dict[int, list[napari.layers.Image]] = {}
    for other in viewer.layers:
        theirs = other.metadata
        if isinstance(other, napari.layers.Image) and theirs.get("path") == path and theirs.get(CHANNELS_KEY) == count:
            found.setdefault(int(theirs.get(CHANNEL_KEY, -1)), []).append(other)
    said = f"image layer '{layer.name}' is channel {meta[CHANNEL_KEY]} of the {count} of {path}"
    missing = [k for k in range(count) if k not in found]
    if missing:
        raise PromptsegError(
            f"{said}, which are read together here, and the layer of channel(s) {', '.join(map(str, missing))} is no "
            "longer open: open the file again"
        )
    if any(len(layers) > 1 for layers in found.values()):
        raise PromptsegError(f"{said}, and that file is open twice: remove one copy of its channel layers")
    layers = [found[k][0] for k in range(count)]
    shapes = {tuple(np.shape(other.data[0] if other.multiscale else other.data)) for other in layers}
    if len(shapes) > 1:
        raise PromptsegError(f"{said}, and its channel layers no longer have one shape ({sorted(shapes)})")
    return layers


def channels_together(levels: list) -> object:
    """The channel layers' arrays (one level each) as one lazy (C, ...) array: nothing read here (napari's main
    thread), each channel read when a plane is (the widgets' worker)."""
    import dask.array as da

    return da.stack([a if isinstance(a, da.Array) else da.from_array(a, chunks=np.shape(a)) for a in levels])
