"""Train text model widget: image + Labels layers with a text each (or a triplet CSV) -> a trained text model.

Thin: it gathers the rows (layer data copied on the main thread) and the options, runs
:func:`napari_promptseg.methods.text_training.train_text_model` (what `promptseg train-text` runs: the fusion decoder,
or CLIPSeg fine-tuned) in a :class:`._common.TaskRunner` worker with progress (ETA in the status line) and cancel,
and, when done, offers the model in every open Text prompt widget. The pairs read as triplets and the run's
summary: :mod:`.train_text_inputs`.
"""

from __future__ import annotations

import time
import weakref
from pathlib import Path

import napari
import napari.layers
from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QWidget,
)

from ..errors import PromptsegError
from ..methods.text_training.losses import LOSSES
from ..methods.text_training.run import setting_defaults, train_text_model
from ._common import (
    CHANNEL_AXIS,
    AdvancedSection,
    ChannelAxisBox,
    LayerPicker,
    TaskRunner,
    available_devices,
    controls_layout,
    image_and_labels,
    load_triton_safely,
    notify_warning,
    unproxied,
)
from .train_text_inputs import layer_triplets, run_summary

#: model directories trained in this session, newest first; the Text prompt widget lists them
TRAINED_MODELS: list[str] = []
_listeners: list[weakref.WeakMethod] = []
#: how the widget names the CLI's settings and options in a message (train_text_model's ``name``)
LABELS = {
    "loss": "loss",
    "epochs": "epochs",
    "batch_size": "batch size",
    "lr": "learning rate",
    "decoder_lr": "decoder learning rate",
    "patience": "patience",
    "seed": "seed",
    "val_fraction": "validation share",
    "balance": "texts are class names",
    "negatives": "texts are class names",
    "resume": "resume",
    "cache_dir": "feature cache",
    "clipseg": "fine-tune CLIPSeg",
    "clipseg_weights": "CLIPSeg weights",
}


#: a pair's layer cell with no layer (none left, or its layer removed from the viewer)
CHOOSE_LAYER = "(choose a layer)"

#: typed as the split column: the CSV has none to use (the CLI's --split-col ''); every row trains
NO_SPLIT = "none"


def on_model_trained(method) -> None:
    """Call the bound ``method`` after each training run (held weakly: a closed widget is not kept alive)."""
    _listeners.append(weakref.WeakMethod(method))


def remember_model(path: str) -> None:
    if path in TRAINED_MODELS:
        TRAINED_MODELS.remove(path)
    TRAINED_MODELS.insert(0, path)
    for ref in list(_listeners):
        method = ref()
        try:
            if method is None:
                raise RuntimeError("gone")
            method()
        except RuntimeError:  # collected, or a closed widget's deleted Qt object
            _listeners.remove(ref)


class TrainTextWidget(QWidget):
    """Pairs of layers with a text each, or a CSV -> a text model directory, with progress and cancel."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        load_triton_safely()
        self.viewer = napari_viewer = unproxied(napari_viewer)
        self.runner = TaskRunner(self)
        self.source = QComboBox()
        self.source.addItems(["layers", "CSV"])
        self.source.setToolTip("train on the layer pairs below, or on a triplet CSV (image, mask, text, split)")
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["image", "labels", "text"])
        self.table.horizontalHeader().setStretchLastSection(True)
        self.add_row_button = QPushButton("Add pair")
        self.add_row_button.setToolTip("one more image layer + Labels layer (non-zero = target) + its text")
        self.add_row_button.clicked.connect(self.add_row)
        self.remove_row_button = QPushButton("Remove pair")
        self.remove_row_button.setToolTip("remove the selected pair (the one last clicked or typed in), else the last")
        self.remove_row_button.clicked.connect(self.remove_row)
        self.csv = QLineEdit()
        self.csv.setPlaceholderText("triplets.csv: columns image, mask, text[, split]")
        # the CSV's column names, as the CLI's --image-col, --mask-col, --text-col, --split-col (empty: the default)
        self.csv_columns = {}
        for key, default, tip in (
            ("image_col", "image", "column of the image paths"),
            ("mask_col", "mask", "column of the mask paths"),
            ("text_col", "text", "column of the texts (e.g. 'p1' for class names in a medvlsm CSV)"),
            (
                "split_col",
                "split",
                f"column of train/val/test (default: 'split', when there is one; '{NO_SPLIT}': train on every row)",
            ),
        ):
            edit = QLineEdit()
            edit.setPlaceholderText(default)
            edit.setToolTip(f"CSV: {tip}; empty = '{default}'")
            self.csv_columns[key] = edit
        # the CLI's --channel-axis and --channels, for every pair (or the CSV's images): a (C, Y, X) layer was a
        # stack of C planes, with no way to say its first axis holds channels
        self.channel_axis = ChannelAxisBox()
        self.channel_axis.setToolTip(
            "For multichannel images stored as one layer (or the CSV's (C, Y, X) images): their first axis holds "
            "channels; every pair's image then has it"
        )
        self.source.currentTextChanged.connect(self._offer_channel_axis)
        self.output = QLineEdit()
        self.output.setPlaceholderText("model directory, e.g. ~/models/polyp-text")
        self.loss = QComboBox()
        self.loss.addItems(list(LOSSES))
        self.loss.setToolTip(
            "dicece: medvlsm's Dice + CE; tmca: + target-informed contrastive alignment and target enhancement; "
            "reclmis: + conditioned interaction, masked reconstruction and contrastive loss"
        )
        # the CLI's settings: left at "default" (a box's lowest value, an empty field) they are not given, as a CLI
        # option left out, and the trainer's own default applies (shown, the fusion decoder's or CLIPSeg's)
        self.epochs = _default_or_whole(1, 500, "epochs in all (a resume trains up to this)")
        self.class_names = QCheckBox("texts are class names: balance them, wrong names give nothing")
        self.class_names.setToolTip(
            "every text equally often per epoch, and each image also trained with a text of another pair and an "
            "empty mask (one per pair and epoch), so naming what is not there gives an empty result"
        )
        self.resume = QCheckBox("resume the run in this directory")
        self.resume.setToolTip("continue the saved run with its own loss and options, up to the epochs above")
        self.overwrite = QCheckBox("overwrite a model in this directory")
        # the CLI's --clipseg and --clipseg-weights: medvlsm's own route instead of the fusion decoder
        self.clipseg = QCheckBox("fine-tune CLIPSeg instead (medvlsm's recipe)")
        self.clipseg.setToolTip(
            "fine-tune CLIPSeg on the pairs instead of training the fusion decoder over LiteMedSAM; the loss, decoder "
            "learning rate, class names, resume and feature cache are the fusion decoder's"
        )
        self.clipseg_weights = QLineEdit()
        self.clipseg_weights.setPlaceholderText("the registry's CLIPSeg (downloaded if missing)")
        self.clipseg_weights.setToolTip("CLIPSeg model directory to fine-tune (the CLI's --clipseg-weights)")
        self.advanced = AdvancedSection(tooltip="the CLI's --batch-size, --lr, --decoder-lr, --patience, --seed, ...")
        self.batch_size = _default_or_whole(1, 1024, "pairs per training step")
        self.lr = _number_field("learning rate of the new modules (CLIPSeg: of the whole model)")
        self.decoder_lr = _number_field("learning rate of LiteMedSAM's mask decoder; 0 freezes it")
        self.patience = _default_or_whole(1, 1000, "epochs without a better validation Dice before stopping")
        self.seed = _default_or_whole(0, 2**31 - 1, "seed of the validation split, the sampling and the weights")
        self.val_fraction = _number_field(
            "share of the images held out for validation when there is no split; 0 trains on every image and keeps "
            "the last epoch's weights"
        )
        self.cache_dir = QLineEdit()
        self.cache_dir.setPlaceholderText("the model directory's cache/ (a resume: the run's own)")
        self.cache_dir.setToolTip("where the images' LiteMedSAM features are kept between runs (--cache-dir)")
        self.device = QComboBox()
        self.device.addItems(available_devices())
        self.device.setToolTip("where the training runs (auto: a GPU when there is one)")
        self.clipseg.toggled.connect(self._show_trainer)
        self.train_button = QPushButton("Train")
        self.train_button.clicked.connect(self.train)

        rows = QHBoxLayout()
        rows.addWidget(self.add_row_button)
        rows.addWidget(self.remove_row_button)
        csv_row = QHBoxLayout()
        csv_row.addWidget(self.csv, 1)
        csv_row.addWidget(self._browse(self.csv, directory=False))
        out_row = QHBoxLayout()
        out_row.addWidget(self.output, 1)
        out_row.addWidget(self._browse(self.output, directory=True))
        form = QFormLayout()
        form.addRow("train on", self.source)
        form.addRow(self.table)
        form.addRow(rows)
        form.addRow("CSV", csv_row)
        columns_row = QHBoxLayout()
        for edit in self.csv_columns.values():
            columns_row.addWidget(edit)
        form.addRow("CSV columns", columns_row)
        self.channel_axis.add_rows(form)
        form.addRow("output", out_row)
        form.addRow("loss", self.loss)
        form.addRow("epochs", self.epochs)
        form.addRow(self.class_names)
        form.addRow(self.resume)
        form.addRow(self.overwrite)
        form.addRow(self.clipseg)
        weights_row = QHBoxLayout()
        weights_row.addWidget(self.clipseg_weights, 1)
        weights_row.addWidget(self._browse(self.clipseg_weights, directory=True))
        form.addRow("CLIPSeg weights", weights_row)
        advanced = self.advanced.form
        advanced.addRow("batch size", self.batch_size)
        advanced.addRow("learning rate", self.lr)
        advanced.addRow("decoder learning rate", self.decoder_lr)
        advanced.addRow("patience", self.patience)
        advanced.addRow("seed", self.seed)
        advanced.addRow("validation share", self.val_fraction)
        cache_row = QHBoxLayout()
        cache_row.addWidget(self.cache_dir, 1)
        cache_row.addWidget(self._browse(self.cache_dir, directory=True))
        advanced.addRow("feature cache", cache_row)
        advanced.addRow("device", self.device)
        self._show_trainer()
        layout = controls_layout(self, self.runner, self.train_button)
        layout.addLayout(form)
        layout.addWidget(self.advanced)
        layout.addStretch(1)
        self.last_result = None
        self._training_into: tuple[Path, float] | None = None  # the running run's model directory, and its start
        self.runner.idle.connect(self._offer_kept_model)
        self.add_row()

    def _browse(self, edit: QLineEdit, *, directory: bool) -> QPushButton:
        button = QPushButton("…")
        button.setMaximumWidth(30)

        def choose() -> None:
            if directory:
                path = QFileDialog.getExistingDirectory(self, "Directory")
            else:
                path = QFileDialog.getOpenFileName(self, "Triplet CSV", filter="CSV (*.csv)")[0]
            if path:
                edit.setText(path)

        button.clicked.connect(choose)
        return button

    def _show_trainer(self, *_) -> None:
        """Each setting's default as the chosen trainer has it (CLIPSeg: 20 epochs, not 8), and only the controls
        it takes enabled: a disabled one is not passed."""
        clipseg = self.clipseg.isChecked()
        defaults = setting_defaults(clipseg)
        for key, box in (("epochs", self.epochs), ("batch_size", self.batch_size), ("patience", self.patience)):
            box.setSpecialValueText(f"default ({defaults[key]})")
        self.seed.setSpecialValueText(f"default ({defaults['seed']})")
        for key, edit in (("lr", self.lr), ("decoder_lr", self.decoder_lr), ("val_fraction", self.val_fraction)):
            edit.setPlaceholderText(f"default ({defaults[key]:g})" if key in defaults else "not with CLIPSeg")
        for control in (self.loss, self.decoder_lr, self.class_names, self.resume, self.cache_dir):
            control.setEnabled(not clipseg)
        self.clipseg_weights.setEnabled(clipseg)

    def showEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        # three pairs in view at least: in the controls' scroll area a short dock squeezed the table to a row and a
        # half, scrolled inside the scrolled controls (measured once styled: its rows' height is the style's)
        rows = self.table.verticalHeader().defaultSectionSize()
        header = self.table.horizontalHeader().sizeHint().height()
        self.table.setMinimumHeight(header + 3 * rows + 2 * self.table.frameWidth())
        super().showEvent(event)

    def settings(self) -> dict[str, object]:
        """The training settings given (train_text_model's ``settings``): a box at "default" or an empty field is
        None (not given), as an option the CLI was not given; a resume passes neither the loss nor the class names
        (the saved run's are kept), CLIPSeg none it does not take."""
        clipseg, resume = self.clipseg.isChecked(), self.resume.isChecked() and not self.clipseg.isChecked()
        fusion_only = not (clipseg or resume)
        given: dict[str, object] = {
            "loss": self.loss.currentText() if fusion_only else None,
            "epochs": _whole_or_none(self.epochs),
            "batch_size": _whole_or_none(self.batch_size),
            "lr": _number_or_none(self.lr, LABELS["lr"]),
            "decoder_lr": None if clipseg else _number_or_none(self.decoder_lr, LABELS["decoder_lr"]),
            "patience": _whole_or_none(self.patience),
            "seed": _whole_or_none(self.seed),
            "val_fraction": _number_or_none(self.val_fraction, LABELS["val_fraction"]),
        }
        if fusion_only and self.class_names.isChecked():
            given.update(balance=True, negatives=1.0)
        return given

    def add_row(self) -> int:
        row = self.table.rowCount()
        self.table.insertRow(row)
        image_picker = self._pair_picker(napari.layers.Image)
        image_picker.layer_changed.connect(self._offer_channel_axis)
        self.table.setCellWidget(row, 0, image_picker)
        self.table.setCellWidget(row, 1, self._pair_picker(napari.layers.Labels))
        text = QLineEdit()
        text.setPlaceholderText("e.g. polyp")
        self.table.setCellWidget(row, 2, text)
        self._offer_channel_axis()
        for column in range(3):
            # a click or focus in a cell's widget selects its row: the table itself never sees those clicks
            self.table.cellWidget(row, column).installEventFilter(self)
        return row

    def _offer_kept_model(self) -> None:
        """A run cancelled after an epoch saved its best model so far: offered in the Text prompt widgets as a
        finished run's is (it was only said; choosing it meant browsing to the folder)."""
        if self._training_into is None or self.runner.state != "cancelled":
            return
        output, started = self._training_into
        self._training_into = None
        config = output / "text_segmenter.json"
        if config.is_file() and config.stat().st_mtime >= started:  # this run's model, not an older one
            remember_model(str(output))

    def _offer_channel_axis(self, *_) -> None:
        """The channel axis offered when a pair's image may have one (its channels counted on the first), or for a
        CSV, whose images are not open: axis 0 (the CLI's --channel-axis 0); the choice stays while offered."""
        if self.source.currentText() == "CSV":
            self.channel_axis.offer([], keep=False)
            self.channel_axis.addItem(f"axis {CHANNEL_AXIS} (channels first)", CHANNEL_AXIS)
            self.channel_axis.channels_edit.setEnabled(True)
            return
        images = [self.table.cellWidget(r, 0) for r in range(self.table.rowCount())]
        self.channel_axis.offer([picker.layer() for picker in images if picker is not None], keep=True)

    def _pair_picker(self, layer_type: type[napari.layers.Layer]) -> LayerPicker:
        """A pair's layer cell: the first layer of its type, as a new pair started; a layer that leaves the viewer
        leaves its cell to be chosen again (it took the first other layer, and the pair trained one image with
        another's labels, unsaid)."""
        return LayerPicker(self.viewer, layer_type, none_text=CHOOSE_LAYER, empty_when_removed=True)

    def remove_row(self) -> None:
        """Remove the selected pair (the row last clicked or typed in), else the last: the last was removed
        whichever pair the user had chosen."""
        row = self.table.currentRow()
        if not 0 <= row < self.table.rowCount():
            row = self.table.rowCount() - 1
        if row >= 0:
            self.table.removeRow(row)
            self._offer_channel_axis()  # its layer may have been the one offering a channel axis

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if event.type() in (QEvent.Type.FocusIn, QEvent.Type.MouseButtonPress):
            for row in range(self.table.rowCount()):
                for column in range(3):
                    if self.table.cellWidget(row, column) is watched:
                        self.table.setCurrentCell(row, column)
        return super().eventFilter(watched, event)

    def set_row(self, row: int, image: napari.layers.Image, labels: napari.layers.Labels, text: str) -> None:
        while self.table.rowCount() <= row:
            self.add_row()
        self.table.cellWidget(row, 0).set_layer(image)
        self.table.cellWidget(row, 1).set_layer(labels)
        self.table.cellWidget(row, 2).setText(text)

    def _layer_rows(self) -> list:
        rows = []
        for r in range(self.table.rowCount()):
            image, labels = self.table.cellWidget(r, 0).layer(), self.table.cellWidget(r, 1).layer()
            text = self.table.cellWidget(r, 2).text()
            if image is None or labels is None:
                raise PromptsegError(f"pair {r + 1}: choose an image layer and a Labels layer")
            name = f"{image.name} / {labels.name}"
            pixels, label_image = image_and_labels(image, labels)
            rows.append((pixels, image.rgb, label_image, text, name))
        if not rows:
            raise PromptsegError("add at least one pair of layers (Add pair)")
        return rows

    def train(self) -> None:
        try:
            output = self.output.text().strip()
            if not output:
                raise PromptsegError("choose an output directory for the model")
            columns = None
            if self.source.currentText() == "CSV":
                data = self.csv.text().strip()
                if not data:
                    raise PromptsegError("choose a triplet CSV")
                typed = {key: edit.text().strip() for key, edit in self.csv_columns.items()}
                columns = {key: name for key, name in typed.items() if name}  # the others: the defaults
                if columns.get("split_col", "").lower() == NO_SPLIT:  # as the CLI's --split-col ''
                    columns["split_col"] = ""
                channel_axis, channels = self.channel_axis.channel_axis, self.channel_axis.channels()
            else:
                left_out: list[str] = []
                # copies of the layers, taken on the main thread; each pair's channels read as the box says
                data = layer_triplets(
                    self._layer_rows(), left_out, self.channel_axis.channel_axis, self.channel_axis.channels()
                )
                channel_axis = channels = None
                for line in left_out:
                    notify_warning(line, "train text model")
            # a resume continues the saved run with its own settings (only epochs may grow): passing the loss
            # shown, still at its default, refused every resume of a tmca or reclmis run
            settings = self.settings()
        except PromptsegError as exc:
            self.runner.refuse(exc, "train text model")
            return
        clipseg = self.clipseg.isChecked()
        resume = self.resume.isChecked() and not clipseg
        weights, cache = self.clipseg_weights.text().strip(), self.cache_dir.text().strip()
        options = {
            "settings": settings,
            "clipseg": clipseg,
            "clipseg_weights": Path(weights).expanduser() if clipseg and weights else None,
            "resume": resume,
            "overwrite": self.overwrite.isChecked(),
            "cache_dir": Path(cache).expanduser() if cache and not clipseg else None,
            "device": self.device.currentText(),
            "columns": columns,
            "channel_axis": channel_axis,
            "channels": channels,
        }

        def task(progress, cancel):
            return train_text_model(
                data,
                Path(output).expanduser(),
                progress=progress,
                cancel=cancel,
                name=lambda key: f"'{LABELS.get(key, key)}'",
                **options,
            )

        def done(result) -> None:
            self.last_result = result
            remember_model(str(result.path))
            summary = run_summary(result)
            self.runner.widget.set_summary(summary)

        self._training_into = (Path(output).expanduser().absolute(), time.time() - 1)  # coarse file times
        if clipseg:
            what = "fine-tuning CLIPSeg"
        elif resume:
            what = f"resuming the text model run in {output}"
        else:
            what = f"training a text model ({settings['loss']})"
        self.runner.submit("train", what, task, done)


def _default_or_whole(low: int, high: int, tooltip: str) -> QSpinBox:
    """A box of a whole number from ``low`` to ``high`` whose lowest value, one below ``low``, reads "default (N)":
    the setting is not given (:meth:`TrainTextWidget._show_trainer` writes N)."""
    box = QSpinBox()
    box.setRange(low - 1, high)
    box.setValue(low - 1)
    box.setToolTip(tooltip)
    return box


def _whole_or_none(box: QSpinBox) -> int | None:
    return None if box.value() == box.minimum() else box.value()


def _number_field(tooltip: str) -> QLineEdit:
    """A field of a number such as a learning rate (1e-3 typed as such); empty: the default."""
    edit = QLineEdit()
    edit.setToolTip(f"{tooltip}; empty = the default")
    return edit


def _number_or_none(edit: QLineEdit, label: str) -> float | None:
    text = edit.text().strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise PromptsegError(f"'{label}': expected a number, got {text!r}") from None
