"""Controls several widgets share: the segmenter box of the widgets that run a promptable segmenter (every registered
segmenter, its label saying when its weights cannot be used, refreshed after every run of any widget: a run may have
downloaded a model's weights, or a file may have been put in the cache meanwhile; and an optional weights file, the
CLI's --weights), the box of a fraction (a threshold, an IoU, a similarity), and the closed section of the settings
most runs leave at their defaults."""

from __future__ import annotations

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ...errors import PromptsegError, WeightsError
from ...models import DEFAULT_SEGMENTER, MODELS, check_weights
from ...models.registry import CHECKPOINT_SUFFIXES, UNUSABLE_WEIGHTS, ModelCard, weights_status
from .tasks import after_every_run


class WeightsFileField(QWidget):
    """A weights file typed or pasted in, or chosen with the '…' button; empty: the registry's weights.
    ``changed`` fires when the text has changed once editing is done (a file chosen, Enter, focus left)."""

    changed = Signal()

    def __init__(self, box: SegmenterBox) -> None:
        super().__init__()
        self._box = box
        self.edit = QLineEdit()
        self.edit.setPlaceholderText("the model's own (empty)")
        self.edit.setClearButtonEnabled(True)
        self.setToolTip(
            "a weights file of the chosen model, e.g. a fine-tuned checkpoint (the CLI's --weights); empty: the "
            "model's own weights (bundled, cached or downloaded)"
        )
        browse = QPushButton("…")
        browse.setMaximumWidth(30)
        browse.clicked.connect(self._browse)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.edit)
        row.addWidget(browse)
        self._last = ""
        self.edit.editingFinished.connect(self._edited)
        # its clear button empties the field without finishing an edit: the model's own weights at once
        self.edit.textChanged.connect(lambda text: self._edited() if not text.strip() else None)

    @property
    def text(self) -> str:
        return self.edit.text().strip()

    def set_path(self, path: str) -> None:
        """Give the weights file (as the dialog does); ``""``: the model's own."""
        self.edit.setText(path)
        self._edited()

    def show_quietly(self, path: str) -> None:
        """Show ``path`` without firing ``changed`` (the box's model change, which its listeners hear, brings it)."""
        self.edit.blockSignals(True)
        self.edit.setText(path)
        self.edit.blockSignals(False)
        self._last = self.text

    def _edited(self) -> None:
        # editingFinished fires on Enter and again when the focus leaves: one change, one re-run
        if self.text != self._last:
            self._last = self.text
            self.changed.emit()

    def _browse(self) -> None:
        path = choose_checkpoint(self, f"Weights file of {self._box.model_name}", self.text)
        if path:
            self.set_path(path)


def choose_checkpoint(parent: QWidget, title: str, start: str) -> str:
    """A checkpoint file chosen in a file dialog (the registry's checkpoint suffixes, or any file) from ``start``;
    ``""`` when the dialog is cancelled. The weights fields of the segmenter and of the text route share it."""
    patterns = " ".join(f"*{suffix}" for suffix in CHECKPOINT_SUFFIXES)
    path, _ = QFileDialog.getOpenFileName(parent, title, start, f"Checkpoints ({patterns});;All files (*)")
    return path


class SegmenterBox(QComboBox):
    """The registered segmenters by name (``currentData()``), the default chosen; a model whose weights are missing
    or unusable reads so (a run downloads them: :func:`~.tasks.task_segmenter`). Its ``weights_file`` field (laid
    out with it by :meth:`add_rows`) names other weights for it, as the CLI's --weights."""

    def __init__(self, tooltip: str = "") -> None:
        super().__init__()
        self.weights_file = WeightsFileField(self)
        for card in MODELS.values():
            if card.role == "segmenter":
                self.addItem(_model_label(card), card.name)
                self.setItemData(self.count() - 1, card.description, Qt.ToolTipRole)
        self.setCurrentIndex(max(0, self.findData(DEFAULT_SEGMENTER)))
        if tooltip:
            self.setToolTip(tooltip)
        after_every_run(self.refresh_labels)  # held weakly: gone with the widget
        # the chosen model reads the file's weights, not '(weights missing)' when its own are missing
        self.weights_file.changed.connect(self.refresh_labels)
        self._files: dict[str, str] = {}  # model name -> the weights file given for it
        self._shown = self.model_name  # the model whose file the field shows
        self.currentIndexChanged.connect(self._model_changed)

    def _model_changed(self) -> None:
        # another model cannot read the previous one's checkpoint: the field shows the chosen model's own file
        self._files[self._shown] = self.weights_file.text
        self._shown = self.model_name
        self.weights_file.show_quietly(self._files.get(self._shown, ""))
        self.refresh_labels()

    @property
    def model_name(self) -> str:
        return self.currentData()

    def add_rows(self, form: QFormLayout) -> None:
        """The box and its weights file, as two rows of ``form``."""
        form.addRow("model", self)
        form.addRow("weights file", self.weights_file)

    def checked_choice(self) -> tuple[str, str | None]:
        """(model name, weights file or None for the model's own), the file refused now, before a run starts, as
        the load refuses it (:func:`~napari_promptseg.models.check_weights`): a PromptsegError naming the file
        and the model, as the widgets' other inputs are refused."""
        model, weights = self.model_name, self.weights_file.text or None
        if weights is not None:
            try:
                check_weights(model, weights)
            except WeightsError as exc:
                raise PromptsegError(exc.message, details=exc.details) from exc
        return model, weights

    def refresh_labels(self) -> None:
        """Each model's label as its weights are now (a stat per file): the box said '(weights missing)' for a model
        a run had just downloaded and used, and for the chosen one when a weights file was given for it."""
        for index in range(self.count()):
            card = MODELS.get(self.itemData(index))
            if card is not None:
                given = index == self.currentIndex() and bool(self.weights_file.text)
                self.setItemText(index, _model_label(card, given))


def _model_label(card: ModelCard, weights_file: bool = False) -> str:
    """The model's entry: its name, and why its weights cannot be used when they cannot (the weights file given
    for it, when one is)."""
    if weights_file:
        return f"{card.name} (weights file)"
    status, _ = weights_status(card)
    if status not in UNUSABLE_WEIGHTS:
        return card.name
    return f"{card.name} ({STOPPED_DOWNLOADS.get(status) or 'weights ' + status.replace('_', ' ')})"


#: how the model box says a download that stopped (they read 'weights missing'), by weights_status
STOPPED_DOWNLOADS = {"partial": "download stopped: a run resumes it", "incomplete": "download stopped"}


def available_devices() -> list[str]:
    """The devices a model can run on here, as the CLI's --device names them: auto, cpu, and cuda or mps when
    present."""
    import torch

    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def fraction_box(value: float, tooltip: str, low: float = 0.0) -> QDoubleSpinBox:
    """A box of a number from ``low`` to 1 in steps of 0.05, two decimals (thresholds, IoUs, similarities)."""
    box = QDoubleSpinBox()
    box.setRange(low, 1.0)
    box.setSingleStep(0.05)
    box.setDecimals(2)
    box.setValue(value)
    box.setToolTip(tooltip)
    return box


class AdvancedSection(QWidget):
    """A section closed at first, opened by its header ("advanced settings"): the settings the CLI takes that most
    runs leave at their defaults, one click away without lengthening the widget. Rows go in :attr:`form`."""

    def __init__(self, title: str = "advanced settings", tooltip: str = "") -> None:
        super().__init__()
        self.header = QToolButton()
        self.header.setText(title)
        self.header.setCheckable(True)
        self.header.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.header.setArrowType(Qt.ArrowType.RightArrow)
        self.header.setAutoRaise(True)
        if tooltip:
            self.header.setToolTip(tooltip)
        self.body = QWidget()
        self.form = QFormLayout(self.body)
        self.form.setContentsMargins(12, 0, 0, 0)
        self.body.setVisible(False)
        self.header.toggled.connect(self.set_open)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.header)
        layout.addWidget(self.body)

    def set_open(self, open_: bool) -> None:
        self.header.setChecked(open_)
        self.header.setArrowType(Qt.ArrowType.DownArrow if open_ else Qt.ArrowType.RightArrow)
        self.body.setVisible(open_)
