"""Train text model widget in a real napari viewer: real Kvasir frames and masks as layers, real LiteMedSAM + MiniLM,
one short training run with progress, the model offered in the Text prompt widget, which then answers by the
trained route; and a cancel.

Run under a display: ``xvfb-run -a python -m pytest tests/test_widget_train_text.py``.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from napari_promptseg._widgets.text import TextPromptWidget
from napari_promptseg._widgets.train_text import TRAINED_MODELS, TrainTextWidget
from napari_promptseg.errors import PromptsegError
from napari_promptseg.io import read_image, read_mask

from .conftest import dataset_pairs
from .test_clipseg import tiny_clipseg_dir  # noqa: F401 (fixture)

pytestmark = pytest.mark.gui
RUN_MS = 600_000  # model load + encoding on a shared 2-core CPU


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


def test_one_pair_is_told_the_widgets_setting_that_trains_without_validation(make_viewer, qtbot, polyps, tmp_path):
    """One pair was refused with "or a validation fraction of 0": no control of the widget has that name (it is the
    'validation share' of Advanced)."""
    viewer = make_viewer()
    image = viewer.add_image(polyps[0][0], name="frame")
    labels = viewer.add_labels(polyps[0][1].astype(np.uint8), name="polyp")
    widget = TrainTextWidget(viewer)
    widget.set_row(0, image, labels, "polyp")
    widget.output.setText(str(tmp_path / "model"))
    widget.train()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=RUN_MS)
    said = widget.runner.widget.details or widget.runner.widget.status.text()  # a long message's whole text
    assert widget.runner.state == "failed" and "validation share 0" in said, said


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


def test_a_pairs_layer_removed_from_the_viewer_is_chosen_again_not_replaced(make_viewer, qtbot):
    """A pair's layer removed from the viewer: its cell took the first other layer of its kind, so the pair
    (frame 1, polyp 1) became (frame 0, polyp 1) and trained frame 0 with frame 1's labels, unsaid. The cell is
    empty now and Train says which pair to complete; a new pair still starts on the first layers."""
    viewer = make_viewer()
    widget = TrainTextWidget(viewer)
    qtbot.addWidget(widget)
    for k in range(3):
        image = viewer.add_image(np.full((64, 64), k, np.uint8), name=f"frame {k}")
        widget.set_row(k, image, viewer.add_labels(np.ones((64, 64), np.uint8), name=f"polyp {k}"), "polyp")
    widget.output.setText("unused")
    viewer.layers.remove("frame 1")
    viewer.layers.remove("polyp 2")

    def pair(row: int) -> tuple:
        return tuple(getattr(widget.table.cellWidget(row, column).layer(), "name", None) for column in (0, 1))

    assert [pair(row) for row in range(3)] == [("frame 0", "polyp 0"), (None, "polyp 1"), ("frame 2", None)]
    widget.train()
    assert not widget.runner.busy and widget.runner.state == "failed"
    assert "pair 2: choose an image layer and a Labels layer" in widget.runner.widget.status.text()
    assert pair(widget.add_row()) == ("frame 0", "polyp 0")


def test_a_short_dock_keeps_three_pairs_of_the_table_in_view(make_viewer, qtbot):
    """In the controls' scroll area a short dock (a laptop's window, another widget docked below) squeezed the pairs
    table to a row and a half, a scrolled table inside scrolled controls: the controls scroll instead."""
    viewer = make_viewer(show=True)  # a hidden window lays nothing out
    viewer.window._qt_window.resize(1280, 700)
    widget = TrainTextWidget(viewer)
    viewer.window.add_dock_widget(widget, name="train")
    viewer.window.add_dock_widget(TrainTextWidget(viewer), name="another")
    while widget.table.rowCount() < 4:
        widget.add_row()
    qtbot.waitUntil(lambda: widget.isVisible() and widget.height() < 500)
    rows = widget.table.verticalHeader().defaultSectionSize()
    qtbot.waitUntil(lambda: widget.table.height() >= widget.table.horizontalHeader().height() + 3 * rows)


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
    assert "widget: split column medvlsm_split" in widget.runner.widget.details  # not only the CLI's flag
    widget.csv_columns["split_col"].setText("medvlsm_split")
    widget.train()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=RUN_MS)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    training = json.loads((widget.last_result.path / "text_segmenter.json").read_text())["training"]
    assert (training["train"], training["val"]) == (2, 1)  # the CSV's own split


def _trainer_calls(monkeypatch) -> list[tuple[str, tuple, dict]]:
    """The trainer train_text_model starts, recorded instead of run: the wiring is what is checked."""
    from napari_promptseg.methods.text_training import run

    calls = []

    def recorder(trainer: str):
        def called(*args, **kwargs):
            calls.append((trainer, args, kwargs))
            raise PromptsegError("trainer reached")

        return called

    monkeypatch.setattr(run, "train_text_segmenter", recorder("fusion"))
    monkeypatch.setattr(run, "finetune_clipseg", recorder("clipseg"))
    return calls


def _comparable(call: tuple[str, tuple, dict]) -> tuple[str, tuple, dict]:
    """A trainer call without its callbacks and without how its user gives the weights (``weights_option``: the
    CLI's --clipseg-weights, the widget's field, each said in its own words), the CSV columns with read_triplets'
    defaults filled in (the CLI passes every column, the widget the ones typed)."""
    trainer, args, kwargs = call
    kwargs = {k: v for k, v in kwargs.items() if k not in ("progress", "cancel", "weights_option")}
    defaults = {"image_col": "image", "mask_col": "mask", "text_col": "text", "split_col": None}
    kwargs["columns"] = {**defaults, **(kwargs.get("columns") or {})}
    return trainer, tuple(str(a) for a in args), kwargs


def test_a_multichannel_layer_trains_as_its_channels_once_its_channel_axis_is_chosen(
    make_viewer, qtbot, polyps, tmp_path, monkeypatch
):
    """A (C, Y, X) layer (one layer of channels, as napari opens a TIFF given no channel_axis) was C planes: with
    its 2D labels, "3 image planes but 1 label planes", and no way to say its first axis holds channels. The refusal
    names the pair and the choice; channel axis 0 (the CLI's --channel-axis 0) trains on the colour frame's pixels."""
    calls = _trainer_calls(monkeypatch)
    viewer = make_viewer()
    rgb, mask = polyps[0]
    image = viewer.add_image(np.ascontiguousarray(rgb.transpose(2, 0, 1)), name="frame")
    widget = TrainTextWidget(viewer)
    widget.set_row(0, image, viewer.add_labels(mask.astype(np.uint8), name="polyp"), "polyp")
    widget.output.setText(str(tmp_path / "model"))

    def trained_on():
        widget.train()
        qtbot.waitUntil(lambda: not widget.runner.busy, timeout=RUN_MS)
        assert "trainer reached" in widget.runner.widget.status.text(), widget.runner.widget.status.text()
        [triplet] = calls.pop()[1][0]
        return triplet.load()

    widget.train()
    status = widget.runner.widget.status.text()
    assert widget.runner.state == "failed" and "frame / polyp: the image is a stack of 3 planes" in status, status
    assert "choose channel axis 0" in status and not calls
    assert widget.channel_axis.itemText(1) == "axis 0 (3 channels)"
    widget.channel_axis.setCurrentIndex(1)
    read, target = trained_on()
    assert np.array_equal(read, rgb) and np.array_equal(target, mask)
    # napari's new Labels layer over it has its shape, channels too: painted on one channel, it marks those pixels
    painted = np.zeros((3, *mask.shape), np.uint8)
    painted[1] = mask
    widget.set_row(0, image, viewer.add_labels(painted, name="painted"), "polyp")
    assert np.array_equal(trained_on()[1], mask)
    widget.channel_axis.channels_edit.setText("2")  # one channel, as the CLI's --channels 2
    assert np.array_equal(trained_on()[0], rgb[..., 2:])
    # a colour layer beside it has no channel axis: refused, naming its pair
    widget.set_row(1, viewer.add_image(rgb, name="colour"), viewer.layers["polyp"], "polyp")
    assert widget.channel_axis.channel_axis == 0  # still offered by the first pair's layer
    widget.train()
    assert "colour / polyp: an RGB image, with no channel axis" in widget.runner.widget.status.text()
    # the multichannel pair removed: no layer left offers a channel axis, and the colour pair trains as it is
    widget.table.setCurrentCell(0, 0)
    widget.remove_row()
    assert widget.channel_axis.count() == 1 and widget.channel_axis.channel_axis is None
    widget.channel_axis.channels_edit.setText("")
    assert np.array_equal(trained_on()[0], rgb)


def test_the_cli_settings_reach_the_trainer_as_train_text_passes_them(make_viewer, qtbot, tmp_path, monkeypatch):
    """The widget had none of `promptseg train-text`'s --batch-size, --lr, --decoder-lr, --patience, --seed,
    --val-fraction, --cache-dir, --device, --clipseg and --clipseg-weights (and its epochs box started at 8 for
    CLIPSeg too, whose default is 20). Set in its advanced section and CLIPSeg box, they reach the trainer as the
    CLI passes the same options: one call, train_text_model; left at "default" they are not given, as an option
    left out."""
    from napari_promptseg.cli import main

    calls = _trainer_calls(monkeypatch)
    csv = tmp_path / "triplets.csv"
    csv.write_text("image,mask,text\n")  # read by no one: the trainers are recorded
    out, cache, weights = tmp_path / "model", tmp_path / "features", tmp_path / "clipseg"
    viewer = make_viewer()
    widget = TrainTextWidget(viewer)
    widget.source.setCurrentText("CSV")
    widget.csv.setText(str(csv))
    widget.output.setText(str(out))

    def widget_call():
        widget.train()
        qtbot.waitUntil(lambda: not widget.runner.busy, timeout=RUN_MS)
        assert "trainer reached" in widget.runner.widget.status.text(), widget.runner.widget.status.text()
        return _comparable(calls.pop())

    def cli_call(*flags: str):
        assert main(["train-text", str(csv), "-o", str(out), *flags]) == 2
        return _comparable(calls.pop())

    assert widget_call() == cli_call("--loss", "dicece")  # untouched: every setting at the trainer's default
    # a CSV's split column left unused, every row trained: the CLI's --split-col '' (the field had no way to say it)
    widget.csv_columns["split_col"].setText("None")
    assert widget_call() == cli_call("--loss", "dicece", "--split-col", "")
    widget.csv_columns["split_col"].setText("")
    assert widget.epochs.specialValueText() == "default (8)"
    widget.advanced.set_open(True)
    widget.loss.setCurrentText("tmca")
    widget.epochs.setValue(3)
    widget.batch_size.setValue(4)
    widget.lr.setText("2e-3")
    widget.decoder_lr.setText("0")
    widget.patience.setValue(2)
    widget.seed.setValue(7)
    widget.val_fraction.setText("0.3")
    widget.cache_dir.setText(str(cache))
    widget.device.setCurrentText("cpu")
    widget.class_names.setChecked(True)
    fusion = ["--loss", "tmca", "--epochs", "3", "--batch-size", "4", "--lr", "2e-3", "--decoder-lr", "0"]
    fusion += ["--patience", "2", "--seed", "7", "--val-fraction", "0.3", "--cache-dir", str(cache)]
    fusion += ["--device", "cpu", "--balance", "--negatives", "1"]
    called = widget_call()
    assert called == cli_call(*fusion)
    assert called[0] == "fusion" and called[2]["cache_dir"] == cache and called[2]["decoder_lr"] == 0.0

    # CLIPSeg: its own defaults shown; the fusion decoder's controls disabled and not passed (the CLI refuses them)
    widget.clipseg.setChecked(True)
    widget.clipseg_weights.setText(str(weights))
    assert widget.epochs.specialValueText() == "default (20)" and widget.lr.placeholderText() == "default (0.0002)"
    assert not any(c.isEnabled() for c in (widget.loss, widget.decoder_lr, widget.class_names, widget.cache_dir))
    clipseg = ["--clipseg", "--clipseg-weights", str(weights), "--epochs", "3", "--batch-size", "4", "--lr", "2e-3"]
    clipseg += ["--patience", "2", "--seed", "7", "--val-fraction", "0.3", "--device", "cpu"]
    called = widget_call()
    assert called == cli_call(*clipseg)
    assert called[0] == "clipseg" and called[2]["weights"] == weights and called[2]["lr"] == 2e-3

    # a value the CLI's option refuses is refused too, naming the widget's field, before any trainer starts
    widget.clipseg.setChecked(False)
    widget.lr.setText("0")
    widget.train()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=RUN_MS)
    assert "'learning rate' must be a finite number above 0, got 0.0" in widget.runner.widget.status.text()
    widget.lr.setText("fast")
    widget.train()
    assert "'learning rate': expected a number, got 'fast'" in widget.runner.widget.status.text()
    assert calls == []


def test_the_summary_gives_the_validation_dice_of_the_model_kept_after_its_presence_refit(
    make_viewer, qtbot, tmp_path, monkeypatch
):
    """A class-name run's presence head is refitted after its last epoch, and kept when the validation Dice does not
    fall: the summary said only the best epoch's Dice (0.500 here), not the 0.773 of the model saved. The trainer's
    result stands in for a run: what the summary makes of it is checked."""
    from napari_promptseg.methods.text_training import run
    from napari_promptseg.methods.text_training.trainer import TrainingResult

    refit = {"val_dice_before": 0.5, "val_dice": 0.77331, "kept": True}
    result = TrainingResult(tmp_path / "model", 1, 0.5, 2, False, presence_refit=refit)
    monkeypatch.setattr(run, "train_text_segmenter", lambda *args, **kwargs: result)
    csv = tmp_path / "triplets.csv"
    csv.write_text("image,mask,text\n")  # read by no one: the trainer's result is given
    widget = TrainTextWidget(make_viewer())
    widget.source.setCurrentText("CSV")
    widget.csv.setText(str(csv))
    widget.output.setText(str(tmp_path / "model"))
    widget.train()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=RUN_MS)
    summary = widget.runner.widget.summary.text()
    assert "best validation Dice 0.500 at epoch 1 of 2, 0.773 with its presence head refitted" in summary, summary


def test_the_summary_says_how_many_images_validated_and_where_the_split_came_from(
    make_viewer, qtbot, tmp_path, monkeypatch
):
    """The summary gave a validation Dice without saying it was of one image held out at random (the trainer's
    result stands in for a run: what the summary makes of it is checked)."""
    from napari_promptseg.methods.text_training import run
    from napari_promptseg.methods.text_training.trainer import TrainingResult

    split = {"train_rows": 4, "train_images": 4, "val_rows": 1, "val_images": 1, "test_rows": 0}
    split["source"] = "a random 20% of the images, seed 0"
    result = TrainingResult(tmp_path / "model", 1, 0.5, 1, False, split=split)
    monkeypatch.setattr(run, "train_text_segmenter", lambda *args, **kwargs: result)
    csv = tmp_path / "triplets.csv"
    csv.write_text("image,mask,text\n")  # read by no one: the trainer's result is given
    widget = TrainTextWidget(make_viewer())
    widget.source.setCurrentText("CSV")
    widget.csv.setText(str(csv))
    widget.output.setText(str(tmp_path / "model"))
    widget.train()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=RUN_MS)
    summary = widget.runner.widget.summary.text()
    said = "best validation Dice 0.500 at epoch 1 of 1 on 1 image (a random 20% of the images, seed 0; 4 trained on)"
    assert said in summary, summary


def test_clipseg_is_fine_tuned_from_the_layers_with_the_weights_given(
    make_viewer,
    qtbot,
    polyps,
    tiny_clipseg_dir,  # noqa: F811
    tmp_path,
):
    """The widget could only train the fusion decoder; `train-text --clipseg --clipseg-weights DIR` fine-tunes
    CLIPSeg. Ticked, with a (tiny, random) CLIPSeg's directory, it fine-tunes that model on the layer pairs at
    CLIPSeg's own learning rate and offers the result to the Text prompt widget."""
    viewer = make_viewer()
    widget = TrainTextWidget(viewer)
    for k, (image, mask) in enumerate(polyps[:2]):
        layer = viewer.add_image(image, name=f"frame {k}")
        widget.set_row(k, layer, viewer.add_labels(mask.astype(np.uint8), name=f"polyp {k}"), "polyp")
    widget.output.setText(str(tmp_path / "tuned"))
    widget.clipseg.setChecked(True)
    widget.clipseg_weights.setText(str(tiny_clipseg_dir))
    widget.epochs.setValue(1)
    widget.batch_size.setValue(2)
    widget.device.setCurrentText("cpu")
    widget.train()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=RUN_MS)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    config = json.loads((tmp_path / "tuned" / "text_segmenter.json").read_text())
    assert config["kind"] == "clipseg" and config["training"]["lr"] == 2e-4 and config["training"]["epochs"] == 1
    assert TRAINED_MODELS[0] == str(widget.last_result.path)


def test_planes_of_a_stack_left_unlabelled_are_not_trained_as_absent():
    """Three nuclei planes of a stack, one of them labelled: the two unlabelled planes were trained as 'nuclei
    absent' (empty masks) without a word, where they were only not labelled yet. Only the labelled plane is taken,
    and the others are said to be left out; a stack labelled nowhere is refused."""
    from napari_promptseg._sample_data import nuclei
    from napari_promptseg._widgets.train_text import layer_triplets

    (image, _, _), (truth, _, _) = nuclei()
    stack = np.stack([image, np.fliplr(image), np.flipud(image)])
    labels = np.zeros(stack.shape, np.uint16)
    labels[1] = np.fliplr(truth)
    left_out: list[str] = []
    [triplet] = layer_triplets([(stack, False, labels, "nuclei", "stack")], left_out)
    assert triplet.name == "stack plane 1" and np.array_equal(triplet.mask, np.fliplr(truth) > 0)
    assert left_out == ["stack: 2 of 3 planes have no labels: left out"]
    with pytest.raises(PromptsegError, match="its labels mark no plane of the stack"):
        layer_triplets([(stack, False, np.zeros_like(labels), "nuclei", "stack")])


def test_a_stacks_planes_are_held_out_for_validation_in_runs_of_neighbours(shared_data):
    """Twenty MRI planes as a stack layer: the random split held out scattered planes (e.g. 4, 5, 12, 14), each
    validated between two training neighbours, near-copies of it, so validation Dice and the best epoch were
    optimistic. The held-out planes now form one run of neighbours; the same planes as 2D layers split as before."""
    from napari_promptseg._widgets.train_text import layer_triplets
    from napari_promptseg.methods.text_training import split_triplets

    scan = np.load(shared_data / "brain_mri_1vol" / "test_scan.npz")
    vol, seg = scan["vol"][60:80, ::4, ::4], scan["seg"][60:80, ::4, ::4] > 0  # every plane labelled
    stacked = layer_triplets([(vol, False, seg, "brain", "mri")])
    for seed in range(4):
        train, val = split_triplets(stacked, seed=seed)
        held = sorted(int(t.name.split()[-1]) for t in val)  # "mri plane 12"
        assert held == list(range(held[0], held[0] + len(held))) and 1 <= len(held) <= 4, (seed, held)
        assert len(train) + len(val) == 20
    assert [(t.stack, t.plane) for t in stacked] == [("mri", k) for k in range(20)]
    flat = layer_triplets([(vol[k], False, seg[k], "brain", f"mri {k}") for k in range(20)])
    assert {t.stack for t in flat} == {""}
    before = [[2, 4, 6, 19], [1, 10, 16, 18]]  # the split of 2D layers, seeds 0 and 1, before stacks were split apart
    assert [sorted(int(t.name.split()[1]) for t in split_triplets(flat, seed=seed)[1]) for seed in (0, 1)] == before


def test_a_pairs_labels_of_another_size_are_refused_before_anything_loads(polyps):
    """A pair of a frame and the labels of another frame (531 x 622 over 528 x 622) was taken: the run loaded
    LiteMedSAM and MiniLM (tens of seconds) before the worker said "mask is 531x622 but the image is 528x622".
    Refused with the pair's name while the rows are read, on the main thread; a stack's labels too."""
    from napari_promptseg._widgets.train_text import layer_triplets

    (frame, _), (_, other_mask) = polyps[:2]
    with pytest.raises(PromptsegError, match=r"^frame / polyp: the labels are 531x622 but the image 528x622"):
        layer_triplets([(frame, True, other_mask, "polyp", "frame / polyp")])
    grey = frame[..., 0]
    with pytest.raises(PromptsegError, match=r"^stack / polyp: the labels are 531x622 but the image 528x622"):
        layer_triplets([(np.stack([grey] * 2), False, np.stack([other_mask] * 2), "polyp", "stack / polyp")])


def test_a_pair_whose_labels_mark_nothing_is_said_to_train_as_an_image_without_its_text(polyps):
    """A 2D pair with an empty Labels layer (made, never painted) was trained as the structure absent without a word,
    where a stack's unlabelled planes are said to be left out. It is said, naming the pair and its text."""
    from napari_promptseg._widgets.train_text import layer_triplets

    (frame, mask), (other, _) = polyps[:2]
    left_out: list[str] = []
    rows = [(frame, True, mask, "polyp", "frame / polyp"), (other, True, np.zeros(other.shape[:2]), "polyp", "b / e")]
    triplets = layer_triplets(rows, left_out)
    assert [t.mask.any() for t in triplets] == [True, False]  # still taught (a deliberate negative example)
    assert left_out == [
        "b / e: its labels mark nothing: trained as an image without 'polyp' (paint it, or remove the pair)"
    ]
    # none marks anything: refused when Train is pressed (it was, once the models had loaded and encoded every image,
    # as "check the mask column" of a CSV the user never gave)
    with pytest.raises(PromptsegError, match=r"^no pair's labels mark anything \(2 pairs\): paint the structure"):
        layer_triplets([rows[1], (frame, True, np.zeros(frame.shape[:2]), "polyp", "f / e")])


def test_a_csvs_multichannel_images_are_read_with_the_channel_axis_chosen_as_the_cli_reads_them(
    make_viewer, qtbot, polyps, tmp_path, monkeypatch
):
    """The CSV's (C, Y, X) images: the widget's channel axis 0 for a CSV (no layer to count its channels on) is the
    CLI's --channel-axis 0: the same rows reach the trainer, read as the colour frame."""
    import tifffile

    from napari_promptseg.cli import main
    from napari_promptseg.methods.text_training.data import training_triplets

    calls = _trainer_calls(monkeypatch)
    rgb, mask = polyps[0]
    tifffile.imwrite(tmp_path / "frame.tif", np.ascontiguousarray(rgb.transpose(2, 0, 1)), photometric="minisblack")
    tifffile.imwrite(tmp_path / "mask.tif", mask.astype(np.uint8))
    (tmp_path / "rows.csv").write_text("image,mask,text\nframe.tif,mask.tif,polyp\n")
    widget = TrainTextWidget(make_viewer())
    widget.source.setCurrentText("CSV")
    widget.csv.setText(str(tmp_path / "rows.csv"))
    widget.output.setText(str(tmp_path / "model"))
    assert widget.channel_axis.itemText(1) == "axis 0 (channels first)"
    widget.channel_axis.setCurrentIndex(1)
    widget.train()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=RUN_MS)
    assert "trainer reached" in widget.runner.widget.status.text(), widget.runner.widget.status.text()
    from_widget = _comparable(calls.pop())
    cli = ["train-text", str(tmp_path / "rows.csv"), "-o", str(tmp_path / "model"), "--loss", "dicece"]
    assert main([*cli, "--channel-axis", "0"]) == 2  # the loss the widget's box shows
    trainer, (data, _), kwargs = call = calls.pop()
    assert from_widget == _comparable(call) and kwargs["channel_axis"] == 0
    [row] = training_triplets(data, kwargs["columns"], channel_axis=0)
    image, target = row.load()
    assert np.array_equal(image, rgb) and np.array_equal(target, mask)


def test_a_run_cancelled_after_an_epoch_offers_its_best_model_in_the_text_widget(make_viewer, qtbot, polyps, tmp_path):
    """Cancel in the second epoch: the first epoch's model is in the folder (the trainer keeps it), but the widget
    said only where to resume from, and the Text prompt widget did not list it (a finished run's model is). It says
    the model kept, and offers it."""
    viewer = make_viewer()
    text_widget = TextPromptWidget(viewer)
    widget = TrainTextWidget(viewer)
    for k, (image, mask) in enumerate(polyps[:2]):
        layer = viewer.add_image(image[::2, ::2], name=f"frame {k}")  # half size: the cancel, not the model, is tested
        widget.set_row(k, layer, viewer.add_labels(mask[::2, ::2].astype(np.uint8), name=f"polyp {k}"), "polyp")
    out = tmp_path / "model"
    widget.output.setText(str(out))
    widget.epochs.setValue(3)
    widget.runner._progressed.connect(
        lambda job, fraction, message: widget.runner.cancel() if message.startswith("epoch 2/3") else None
    )
    widget.train()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=RUN_MS)
    assert widget.runner.state == "cancelled", widget.runner.widget.status.text()
    # the cancel is seen where the next step starts: epoch 3's first (each epoch is one step of one frame)
    said = widget.runner.widget.status.text()
    kept = rf"the best epoch so far \(epoch [12], val Dice 0\.\d+\) is the model in {re.escape(str(out))}"
    assert re.search(kept, said), said
    assert TRAINED_MODELS[0] == str(out)
    items = [text_widget.text_model.itemText(i) for i in range(text_widget.text_model.count())]
    assert str(out) in items
