"""The layer picker of every widget: a combo box of the viewer's layers of one type."""

from __future__ import annotations

import weakref
from collections.abc import Callable

import napari
import napari.layers
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QWidget

#: metadata key of the layers a promptseg widget makes for itself; the Interactive widget's live preview has role
#: "preview": redrawn at every prompt edit, it is no one's input (it was the One-shot widget's default reference labels)
ROLE_KEY = "promptseg_role"

#: metadata key of a result layer's object size (pixels of the image it lies over): the scale its method found the
#: objects at, which a propagation seeded by that layer decodes them at (the Interactive widget's seed layer)
OBJECT_SIZE_KEY = "promptseg_object_size"


def is_preview(layer: napari.layers.Layer) -> bool:
    return layer.metadata.get(ROLE_KEY) == "preview"


class LayerPicker(QComboBox):
    """Combo box of the viewer's layers of one type; follows additions, removals and renames.

    The Interactive widget's preview layer is never listed (:func:`is_preview`).
    ``none_text`` adds a first entry that stands for "no layer" (e.g. "new layer on commit").
    ``auto_select`` picks the first matching layer while nothing is selected (prompt layers: the one just added),
    of those that were empty when they appeared (a layer holding the user's shapes or points is never taken).
    ``unlike`` (another picker): by default a layer other than that one's, so a pair starts on two layers.
    ``empty_when_removed`` (with ``none_text``): it starts on the first layer, as a picker without ``none_text``
    does, but when the layer it shows leaves the viewer it shows ``none_text`` until one is chosen, where it took
    the first other layer: an input the user had not chosen (another run's result as the reference labels, another
    image's labels in a training pair), shown in the box only. ``restart_when_none_left`` too: once no layer of its
    type is left (the viewer cleared), it starts again as a new picker would (a single image, a fixed and moving
    pair: the next images opened are a new session's; not a table of training pairs, whose every row would take
    the first image).
    ``layer_changed`` fires with the newly selected layer (or None) only when the selection really changes.
    """

    layer_changed = Signal(object)

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        layer_type: type[napari.layers.Layer],
        *,
        none_text: str | None = None,
        exclude: Callable[[napari.layers.Layer], bool] | None = None,
        auto_select: bool = False,
        unlike: LayerPicker | None = None,
        empty_when_removed: bool = False,
        restart_when_none_left: bool = False,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        if empty_when_removed and none_text is None:
            raise ValueError("empty_when_removed needs a none_text entry to show")
        self._empty_when_removed = empty_when_removed
        self._restart_when_none_left = restart_when_none_left
        self._viewer = viewer
        self._unlike = unlike  # by default, a layer other than that picker's (a pair: fixed and moving)
        if unlike is not None:
            unlike.layer_changed.connect(self.refresh)
        # auto_select takes only layers that were empty when they appeared (made for prompts): a user's ROIs, a
        # result's boxes or landmarks were taken as prompts, and a commit removed them (no undo for shapes)
        self._empty_when_seen: weakref.WeakSet = weakref.WeakSet(
            layer for layer in viewer.layers if isinstance(layer, layer_type) and len(layer.data) == 0
        )
        self._layer_type = layer_type
        self._none_text = none_text
        self._exclude = exclude
        self._auto_select = auto_select
        self._none_chosen = False  # the user picked "no layer": auto_select must not override that
        self._emptied = False  # empty_when_removed: "no layer" because its layer left, not the user's choice
        self._user_chose = False  # a layer picked by the user (or set_layer) stays, even the ``unlike`` one
        self._layers: list[napari.layers.Layer | None] = []
        self._current: napari.layers.Layer | None = None
        self._refreshing = False
        self.currentIndexChanged.connect(self._on_index_changed)
        self.activated.connect(self._on_user_choice)
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.layers.events.removed.connect(self._on_removed)
        viewer.layers.events.moved.connect(self.refresh)
        for layer in viewer.layers:
            layer.events.name.connect(self.refresh)
        self.refresh()

    def _on_inserted(self, event) -> None:
        event.value.events.name.connect(self.refresh)
        if isinstance(event.value, self._layer_type) and len(event.value.data) == 0:
            self._empty_when_seen.add(event.value)
        self.refresh()

    def _on_removed(self, event) -> None:
        # a layer gone from the viewer (kept by a script, added to another viewer) and renamed there rebuilt the box
        event.value.events.name.disconnect(self.refresh)
        self.refresh()

    def refresh(self, event=None) -> None:
        """Rebuild the entries, keeping the selected layer if it still exists."""
        layers: list[napari.layers.Layer | None] = [None] if self._none_text is not None else []
        layers += [
            layer
            for layer in self._viewer.layers
            if isinstance(layer, self._layer_type)
            and not is_preview(layer)
            and not (self._exclude and self._exclude(layer))
        ]
        keep = self._current if any(layer is self._current for layer in layers) else None
        if self._empty_when_removed and self._current is not None and keep is None:
            self._none_chosen = self._emptied = True  # its layer left the viewer: empty until one is chosen
        if self._emptied and self._restart_when_none_left and not any(layer is not None for layer in layers):
            self._none_chosen = self._emptied = False  # none of its type left: the next opened are taken, as at start
        if keep is not None and self._unlike is not None and keep is self._unlike.layer() and not self._user_chose:
            keep = None  # not chosen by the user, and the other picker's: another layer when there is one
        if keep is None and self._auto_select and not self._none_chosen:
            keep = next((layer for layer in layers if layer is not None and layer in self._empty_when_seen), None)
        if keep is None and self._unlike is not None and not self._none_chosen:
            keep = next((ly for ly in layers if ly is not None and ly is not self._unlike.layer()), None)
        if keep is None and self._empty_when_removed and not self._none_chosen:
            keep = next((ly for ly in layers if ly is not None), None)
        self._refreshing = True
        try:
            self.clear()
            self._layers = layers
            for layer in layers:
                self.addItem(self._none_text if layer is None else layer.name)
            if layers:
                index = next((i for i, layer in enumerate(layers) if layer is keep), 0)
                self.setCurrentIndex(index)
        finally:
            self._refreshing = False
        self._on_index_changed(self.currentIndex())

    def _on_index_changed(self, index: int) -> None:
        if self._refreshing:
            return
        layer = self._layers[index] if 0 <= index < len(self._layers) else None
        if layer is not self._current:
            self._current = layer
            self.layer_changed.emit(layer)

    def _on_user_choice(self, index: int) -> None:
        self._none_chosen = 0 <= index < len(self._layers) and self._layers[index] is None
        self._user_chose = True
        self._emptied = False

    def layer(self) -> napari.layers.Layer | None:
        return self._current

    def set_layer(self, layer: napari.layers.Layer | None) -> None:
        self._none_chosen = layer is None
        self._user_chose = True
        self._emptied = False
        self.refresh()
        for i, candidate in enumerate(self._layers):
            if candidate is layer:
                self.setCurrentIndex(i)
                return
