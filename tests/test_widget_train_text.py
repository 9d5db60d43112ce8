"""Train text model widget in a real napari viewer: real Kvasir frames and masks as layers, real LiteMedSAM + MiniLM,
one short training run with progress, the model offered in the Text prompt widget, which then answers by the
trained route; and a cancel.

Run under a display: ``xvfb-run -a python -m pytest tests/test_widget_train_text.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from napari.qt.threading import WorkerBase

from napari_promptseg._widgets.text import TextPromptWidget
from napari_promptseg._widgets.train_text import TRAINED_MODELS, TrainTextWidget
from napari_promptseg.io import read_image, read_mask

from .conftest import dataset_pairs

pytestmark = pytest.mark.gui
RUN_MS = 600_000  # model load + encoding on a shared 2-core CPU


@pytest.fixture
def make_viewer(make_napari_viewer):
    yield make_napari_viewer
    WorkerBase.await_workers(msecs=120_000)


@pytest.fixture(scope="module")
def polyps(shared_data):
    pairs = dataset_pairs(shared_data / "polyps_kvasir_triplets")[:3]
    return [(read_image(i), read_mask(m)) for i, m in pairs]


def test_train_from_layers_then_segment_with_the_trained_model(make_viewer, qtbot, polyps, tmp_path):
    viewer = make_viewer()
    layers = []
    for k, (image, mask) in enumerate(polyps):
        layers.append(
            (viewer.add_image(image, name=f"frame {k}"), viewer.add_labels(mask.astype(np.uint8), name=f"polyp {k}"))
        )
    text_widget = TextPromptWidget(viewer)
    widget = TrainTextWidget(viewer)
    viewer.window.add_dock_widget(widget, name="train text")
    for k, (image, labels) in enumerate(layers):
        widget.set_row(k, image, labels, "polyp")
    widget.output.setText(str(tmp_path / "model"))
    widget.epochs.setValue(1)
    messages = []
    widget.runner._progressed.connect(lambda job, fraction, message: messages.append(message))
    widget.train()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=RUN_MS)

    assert widget.runner.state == "done", widget.runner.widget.status.text()
    assert any("ETA" in m for m in messages) and any(m.startswith("epoch 1/1") for m in messages)
    result = widget.last_result
    config = json.loads((result.path / "text_segmenter.json").read_text())
    assert config["training"]["train"] + config["training"]["val"] == 3 and config["training"]["loss"] == "dicece"
    assert "best validation Dice" in widget.runner.widget.summary.text()
    assert TRAINED_MODELS[0] == str(result.path)
    # the Text prompt widget offers the model and answers with it
    items = [text_widget.text_model.itemText(i) for i in range(text_widget.text_model.count())]
    assert str(result.path) in items
    text_widget.text_model.setCurrentText(str(result.path))
    assert text_widget.effective_route == "trained"
    text_widget.image.set_layer(layers[0][0])
    text_widget.prompt.setText("polyp")
    text_widget.run()
    qtbot.waitUntil(lambda: text_widget.is_idle, timeout=RUN_MS)
    assert text_widget.runner.state == "done", text_widget.runner.widget.status.text()
    labels = viewer.layers["frame 0 text: polyp"].data
    assert labels.shape == polyps[0][1].shape
    assert text_widget.route_label.text().startswith("route: trained — trained text model (model)")
    assert viewer.layers["frame 0 text: polyp heatmap"].data.max() <= 1.0


def test_training_can_be_cancelled_and_bad_input_is_reported(make_viewer, qtbot, polyps, tmp_path):
    viewer = make_viewer()
    image = viewer.add_image(polyps[0][0], name="frame")
    labels = viewer.add_labels(polyps[0][1].astype(np.uint8), name="polyp")
    widget = TrainTextWidget(viewer)
    widget.set_row(0, image, labels, "")
    widget.output.setText(str(tmp_path / "model"))
    widget.train()  # empty text: refused on the main thread, nothing runs, the status line says so
    assert not widget.runner.busy and widget.runner.state == "failed"
    assert widget.runner.widget.status.text().startswith("failed: train text model: ")
    widget.table.cellWidget(0, 2).setText("polyp")
    widget.add_row()  # another frame: validation holds out whole images
    other = viewer.add_image(polyps[1][0], name="frame 2")
    widget.set_row(1, other, viewer.add_labels(polyps[1][1].astype(np.uint8), name="polyp 2"), "polyp")
    widget.epochs.setValue(50)
    widget.train()
    widget.runner.cancel()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=RUN_MS)
    assert widget.runner.state == "cancelled"
    assert not (tmp_path / "model" / "text_segmenter.json").exists()
    # class names: one name for every pair leaves no wrong name to train with, and the worker says so
    widget.class_names.setChecked(True)
    widget.epochs.setValue(1)
    widget.overwrite.setChecked(True)
    widget.train()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=RUN_MS)
    assert widget.runner.state == "failed"
    assert "negative pairs need texts" in widget.runner.widget.status.text()


def test_resume_continues_the_saved_runs_loss_whatever_the_loss_box_shows(make_viewer, qtbot, polyps, tmp_path):
    """Bug hunt 24: 'resume' sent the loss box's value, at its default dicece, so every resume of a tmca run was
    refused ("loss='dicece' (saved: 'tmca') differ; leave them out"), which a widget user cannot do. A resume
    continues the saved run with its own loss, up to the epochs asked for."""
    viewer = make_viewer()
    widget = TrainTextWidget(viewer)
    for k, (image, mask) in enumerate(polyps[:2]):  # two frames: one to train on, one to validate on
        layer = viewer.add_image(image, name=f"frame {k}")
        widget.set_row(k, layer, viewer.add_labels(mask.astype(np.uint8), name=f"polyp {k}"), "polyp")
    widget.output.setText(str(tmp_path / "model"))
    widget.epochs.setValue(1)
    widget.loss.setCurrentText("tmca")
    widget.train()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=RUN_MS)
    assert widget.runner.state == "done", widget.runner.widget.status.text()

    widget.loss.setCurrentText("dicece")  # as a new widget shows it
    widget.resume.setChecked(True)
    widget.epochs.setValue(2)
    widget.train()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=RUN_MS)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    config = json.loads((tmp_path / "model" / "text_segmenter.json").read_text())
    assert config["training"]["loss"] == "tmca" and [h["epoch"] for h in config["history"]] == [1, 2]
    assert widget.last_result.epochs_run == 2


def test_remove_pair_removes_the_clicked_pair_else_the_last(make_viewer, qtbot):
    """'Remove pair' removed the last row whichever pair the user had clicked in; it removes the clicked one now,
    and the last when none was chosen."""
    from qtpy.QtCore import Qt

    viewer = make_viewer()

    def widget_with_pairs(texts: str) -> TrainTextWidget:
        widget = TrainTextWidget(viewer)
        qtbot.addWidget(widget)
        while widget.table.rowCount() < len(texts):  # one row comes by default
            widget.add_row()
        for row, text in enumerate(texts):
            widget.table.cellWidget(row, 2).setText(text)
        return widget

    def texts(widget: TrainTextWidget) -> list[str]:
        return [widget.table.cellWidget(row, 2).text() for row in range(widget.table.rowCount())]

    widget = widget_with_pairs("abc")
    qtbot.mouseClick(widget.table.cellWidget(1, 2), Qt.MouseButton.LeftButton)
    qtbot.mouseClick(widget.remove_row_button, Qt.MouseButton.LeftButton)
    assert texts(widget) == ["a", "c"]

    untouched = widget_with_pairs("abc")
    qtbot.mouseClick(untouched.remove_row_button, Qt.MouseButton.LeftButton)
    assert texts(untouched) == ["a", "b"]


def test_a_csv_with_other_column_names_trains_as_the_cli_maps_them(make_viewer, qtbot, shared_data, tmp_path):
    """A triplet CSV whose columns have other names (a medvlsm CSV: class names in 'p1', its split in
    'medvlsm_split') trains with `promptseg train-text --text-col p1 --split-col medvlsm_split`; the widget had no
    such setting, so it refused the CSV for its missing 'text' column. Its CSV columns map them now."""
    pairs = dataset_pairs(shared_data / "polyps_kvasir_triplets")[:3]
    csv = tmp_path / "medvlsm.csv"
    rows = [
        f"{image},{mask},polyp,{split}" for (image, mask), split in zip(pairs, ["train", "train", "val"], strict=True)
    ]
    csv.write_text("\n".join(["frame,outline,p1,medvlsm_split", *rows]) + "\n")
    viewer = make_viewer()
    widget = TrainTextWidget(viewer)
    widget.source.setCurrentText("CSV")
    widget.csv.setText(str(csv))
    widget.output.setText(str(tmp_path / "model"))
    widget.epochs.setValue(1)
    for key, name in (("image_col", "frame"), ("mask_col", "outline"), ("text_col", "p1")):
        widget.csv_columns[key].setText(name)
    widget.train()  # the split sits in 'medvlsm_split': refused, as the CLI refuses it, until it is named
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=RUN_MS)
    assert widget.runner.state == "failed" and "medvlsm_split" in widget.runner.widget.details
    widget.csv_columns["split_col"].setText("medvlsm_split")
    widget.train()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=RUN_MS)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    training = json.loads((widget.last_result.path / "text_segmenter.json").read_text())["training"]
    assert (training["train"], training["val"]) == (2, 1)  # the CSV's own split
