"""Controls several widgets share: the segmenter box of the widgets that run a promptable segmenter (every registered
segmenter, its label saying when its weights cannot be used, refreshed after every run of any widget: a run may have
downloaded a model's weights, or a file may have been put in the cache meanwhile), and the box of a fraction (a
threshold, an IoU, a similarity)."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QDoubleSpinBox

from ...models import DEFAULT_SEGMENTER, MODELS
from ...models.registry import UNUSABLE_WEIGHTS, ModelCard, weights_status
from .tasks import after_every_run


class SegmenterBox(QComboBox):
    """The registered segmenters by name (``currentData()``), the default chosen; a model whose weights are missing
    or unusable reads so (a run downloads them: :func:`~.tasks.task_segmenter`)."""

    def __init__(self, tooltip: str = "") -> None:
        super().__init__()
        for card in MODELS.values():
            if card.role == "segmenter":
                self.addItem(_model_label(card), card.name)
                self.setItemData(self.count() - 1, card.description, Qt.ToolTipRole)
        self.setCurrentIndex(max(0, self.findData(DEFAULT_SEGMENTER)))
        if tooltip:
            self.setToolTip(tooltip)
        after_every_run(self.refresh_labels)  # held weakly: gone with the widget

    @property
    def model_name(self) -> str:
        return self.currentData()

    def refresh_labels(self) -> None:
        """Each model's label as its weights are now (a stat per file): the box said '(weights missing)' for a model
        a run had just downloaded and used."""
        for index in range(self.count()):
            card = MODELS.get(self.itemData(index))
            if card is not None:
                self.setItemText(index, _model_label(card))


def _model_label(card: ModelCard) -> str:
    """The model's entry: its name, and why its weights cannot be used when they cannot."""
    status, _ = weights_status(card)
    return card.name if status not in UNUSABLE_WEIGHTS else f"{card.name} (weights {status.replace('_', ' ')})"


def fraction_box(value: float, tooltip: str, low: float = 0.0) -> QDoubleSpinBox:
    """A box of a number from ``low`` to 1 in steps of 0.05, two decimals (thresholds, IoUs, similarities)."""
    box = QDoubleSpinBox()
    box.setRange(low, 1.0)
    box.setSingleStep(0.05)
    box.setDecimals(2)
    box.setValue(value)
    box.setToolTip(tooltip)
    return box
