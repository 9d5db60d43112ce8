"""The One-shot widget's further references: rows of an image layer and its Labels layer, added and removed, that a
one-region run ensembles with the first reference (the CLI's repeated --reference/--reference-mask and --ensemble,
``segment_like``'s lists of references)."""

from __future__ import annotations

import napari
import napari.layers
from qtpy.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from ...errors import PromptsegError
from .._common import LayerPicker

ENSEMBLES = ("vote", "union")


class MoreReferences(QWidget):
    """Reference pairs after the widget's first (reference 2, 3, ...), and how they are ensembled."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self._viewer = viewer
        self._rows: list[tuple[QWidget, LayerPicker, LayerPicker]] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self._rows_layout = QVBoxLayout()
        layout.addLayout(self._rows_layout)
        self.add_button = QPushButton("Add reference")
        self.add_button.setToolTip(
            "one more reference image + its Labels layer: one region is segmented like every reference (each on its "
            "own) and their masks ensembled (as the CLI's repeated --reference); many instances take one reference"
        )
        self.add_button.clicked.connect(self.add_row)
        self.ensemble = QComboBox()
        self.ensemble.addItems(list(ENSEMBLES))
        self.ensemble.setToolTip(
            "several references: vote keeps the pixels whose mean probability over the references is above 0.5, "
            "union every reference's mask (as the CLI's --ensemble)"
        )
        bottom = QHBoxLayout()
        bottom.addWidget(self.add_button)
        bottom.addWidget(QLabel("ensemble"))
        bottom.addWidget(self.ensemble, 1)
        layout.addLayout(bottom)
        self._update()

    def add_row(self) -> tuple[LayerPicker, LayerPicker]:
        """A new reference row (an image and a Labels picker, and its Remove button); returns its pickers."""
        row = QWidget()
        line = QHBoxLayout(row)
        line.setContentsMargins(0, 0, 0, 0)
        # a layer removed leaves its picker to be chosen again, as the first reference's pickers do
        image = LayerPicker(
            self._viewer, napari.layers.Image, none_text="(choose an image layer)", empty_when_removed=True
        )
        labels = LayerPicker(
            self._viewer, napari.layers.Labels, none_text="(choose a Labels layer)", empty_when_removed=True
        )
        remove = QPushButton("Remove")
        remove.setToolTip("this reference is no longer used")
        remove.clicked.connect(self._remove_clicked)  # a bound method: a lambda would hold the widget
        line.addWidget(QLabel(f"reference {len(self._rows) + 2}"))
        line.addWidget(image, 1)
        line.addWidget(labels, 1)
        line.addWidget(remove)
        self._rows.append((row, image, labels))
        self._rows_layout.addWidget(row)
        self._update()
        return image, labels

    def remove_row(self, index: int) -> None:
        """Remove reference row ``index`` (0: reference 2); the rows after it are numbered anew."""
        row, _, _ = self._rows.pop(index)
        self._rows_layout.removeWidget(row)
        row.setParent(None)
        row.deleteLater()
        for k, (widget, _, _) in enumerate(self._rows):
            widget.layout().itemAt(0).widget().setText(f"reference {k + 2}")
        self._update()

    def _remove_clicked(self) -> None:
        button = self.sender()
        for k, (row, _, _) in enumerate(self._rows):
            if button is not None and button.parent() is row:
                self.remove_row(k)
                return

    def _update(self) -> None:
        self.ensemble.setEnabled(bool(self._rows))  # one reference has nothing to ensemble

    def __len__(self) -> int:
        return len(self._rows)

    def pairs(self) -> list[tuple[napari.layers.Image, napari.layers.Labels]]:
        """The rows' layers, in order; a row without its two layers is refused naming it."""
        pairs = []
        for k, (_, image, labels) in enumerate(self._rows):
            if image.layer() is None or labels.layer() is None:
                raise PromptsegError(
                    f"reference {k + 2}: choose its image layer and its Labels layer, or remove the row (Remove)"
                )
            pairs.append((image.layer(), labels.layer()))
        return pairs
