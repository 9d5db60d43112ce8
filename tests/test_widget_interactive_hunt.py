"""Interactive widget defects found by a user's session (commit targets napari makes, undo, prompts at the image's
edges), each reproduced in a real napari viewer with the real bundled LiteMedSAM on the bundled nuclei sample. Run
under a display: ``xvfb-run -a python -m pytest tests/test_widget_interactive_hunt.py``."""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager
from skimage.measure import regionprops

from napari_promptseg._sample_data import nuclei
from napari_promptseg._widgets.interactive import BOXES_NAME, POINTS_NAME, TARGET_NAME

from .interactive_widget import add_widget, dice, press_key, records_since, wait_idle

pytestmark = pytest.mark.gui

FIRST_RUN_MS = 240_000  # the first preview loads the model and encodes the image; the 2-core CPU is shared
RUN_MS = 60_000
MIN_DICE = 0.6


@pytest.fixture(scope="module")
def sample():
    """(image, the largest nucleus's mask, its (row0, col0, row1, col1) inclusive bbox)."""
    (image, _, _), (truth, _, _) = nuclei()
    largest = max(regionprops(truth), key=lambda r: r.area)
    r0, c0, r1, c1 = largest.bbox
    return image, truth == largest.label, (r0, c0, r1 - 1, c1 - 1)


def test_napari_new_labels_over_a_multichannel_image_takes_the_commit_on_the_channel_shown(make_viewer, qtbot, sample):
    """napari's 'New labels' over a (C, Y, X) layer is (C, Y, X) too. With channel axis 0 chosen it was refused as
    the commit target ('shape (2, 256, 256) does not match image (256, 256)'), and choosing the channel axis after
    picking it as the target swapped it for a new layer, said as 'another image's'. The objects now go into the
    plane of the channel shown, where the user sees them (and would paint them), as a paint stroke would."""
    image, nucleus, (r0, c0, r1, c1) = sample
    viewer = make_viewer()
    layer = viewer.add_image(np.stack([image, image]), name="two channels")
    viewer.dims.set_current_step(0, 1)
    viewer.layers.selection.active = layer
    viewer._new_labels()  # the layer list's 'New labels' button
    made = viewer.layers["two channels - Labels"]
    assert made.data.shape == (2, *image.shape)
    widget = add_widget(viewer)
    widget.target_picker.set_layer(made)
    widget.channel_combo.setCurrentIndex(1)  # axis 0 (2 channels)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    assert widget.target_picker.layer() is made
    widget.new_prompt_layers()
    viewer.layers[BOXES_NAME].add_rectangles(np.array([[r0, c0], [r1, c1]]))
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    start = len(notification_manager.records)
    widget.commit()
    assert not records_since(start, NotificationSeverity.ERROR)
    assert not made.data[0].any()  # the channel not shown
    assert dice(made.data[1] > 0, nucleus) > MIN_DICE
    assert "channel 1" in widget.runner.widget.status.text()
    press_key(viewer, "Control-Z")  # on the boxes layer: the commit is undone
    assert not made.data.any()


class _HistoryWithoutIndex:
    """napari's undo history as a later napari might keep it: appended to, never indexed (the widget reads a private
    attribute of napari's Labels layer to tell its commit from a later paint stroke)."""

    def __init__(self, items) -> None:
        self._items = list(items)

    def append(self, item) -> None:
        self._items.append(item)

    def __len__(self) -> int:
        return len(self._items)


def test_a_napari_whose_undo_history_cannot_be_read_leaves_commits_working_and_undo_said(
    make_viewer, qtbot, sample, monkeypatch
):
    """The commit read napari's private ``Labels._undo_history[-1]``: a napari keeping it otherwise raised a
    TypeError from the commit itself, after the objects were written (prompts left, no message). The commit works
    and the widget's undo says to undo in the layer, never undoing blindly what may be the user's stroke."""
    image, nucleus, (r0, c0, r1, c1) = sample
    viewer = make_viewer()
    viewer.add_image(image, name="nuclei")
    target = viewer.add_labels(np.zeros(image.shape, np.uint16), name="mine")
    monkeypatch.setattr(target, "_undo_history", _HistoryWithoutIndex(target._undo_history))
    widget = add_widget(viewer)
    widget.target_picker.set_layer(target)
    widget.new_prompt_layers()
    boxes = viewer.layers[BOXES_NAME]
    boxes.add_rectangles(np.array([[r0, c0], [r1, c1]]))
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    widget.commit()
    assert dice(target.data > 0, nucleus) > MIN_DICE
    assert len(boxes.data) == 0  # the commit finished: its box is taken
    committed = target.data.copy()
    start = len(notification_manager.records)
    widget.undo_commit()
    np.testing.assert_array_equal(target.data, committed)
    warnings = records_since(start, NotificationSeverity.WARNING)
    assert any("undo it in 'mine' itself (select it, Ctrl+Z)" in m for m in warnings), warnings
    assert TARGET_NAME not in viewer.layers


def test_back_in_2d_after_a_change_made_in_3d_the_preview_comes_again(make_viewer, qtbot, sample):
    """A setting changed while the viewer showed 3D (here the intensity scaling) made the preview stale and raised
    an error notification ('switch the viewer to 2D'). Back in 2D on the same plane, no preview came: the status
    still said to switch to 2D, and Commit said 'nothing to commit ... wait for the preview', however long one
    waited. In 3D it is said quietly in the status line now, and back in 2D the preview comes and is committed."""
    image, nucleus, (r0, c0, r1, c1) = sample
    viewer = make_viewer()
    viewer.add_image(np.stack([image, image, image]), name="stack")
    viewer.dims.set_current_step(0, 1)
    widget = add_widget(viewer)
    widget.new_prompt_layers()
    rectangle = [[1, r0, c0], [1, r0, c1], [1, r1, c1], [1, r1, c0]]
    viewer.layers[BOXES_NAME].add_rectangles(np.array(rectangle))
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    viewer.dims.ndisplay = 3
    start = len(notification_manager.records)
    widget.normalize_combo.setCurrentText("percentile")
    wait_idle(qtbot, widget)
    assert not records_since(start, NotificationSeverity.ERROR)
    assert "switch the viewer to 2D" in widget.runner.widget.status.text()
    viewer.dims.ndisplay = 2
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    assert widget.runner.widget.status.text().startswith("preview: 1 object(s)")
    widget.commit()
    assert dice(viewer.layers[TARGET_NAME].data[1] > 0, nucleus) > MIN_DICE


def test_find_all_without_boxes_says_so_once(make_viewer, qtbot, sample):
    """'Find all like these' with only a click on the plane: the status read 'failed: find all: find all: draw
    boxes ...' (the refusal's own prefix twice)."""
    image, _, (r0, c0, r1, c1) = sample
    viewer = make_viewer()
    viewer.add_image(image, name="nuclei")
    widget = add_widget(viewer)
    widget.new_prompt_layers()
    viewer.layers[POINTS_NAME].add(np.array([[(r0 + r1) / 2, (c0 + c1) / 2]]))
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    widget.find_all()
    status = widget.runner.widget.status.text()
    assert status == "failed: find all: draw boxes around a few example objects on this plane first", status


def test_a_target_napari_made_over_the_boxes_says_how_to_make_one_that_fits(make_viewer, qtbot, sample):
    """After 'New prompt layers' the boxes layer is the one selected, and napari's 'New labels' then makes a layer
    the size of the boxes drawn (37 x 32 here), not of the image. The commit into it was refused with 'choose another
    target or a new layer' only; it now says how napari makes one that fits."""
    image, _, (r0, c0, r1, c1) = sample
    viewer = make_viewer()
    viewer.add_image(image, name="nuclei", scale=(0.5, 0.5))
    widget = add_widget(viewer)
    widget.new_prompt_layers()
    viewer.layers[BOXES_NAME].add_rectangles(np.array([[r0, c0], [r1, c1]]))
    assert viewer.layers.selection.active is viewer.layers[BOXES_NAME]
    viewer._new_labels()  # the layer list's 'New labels' button
    made = viewer.layers[-1]
    assert made.data.shape != image.shape
    widget.target_picker.set_layer(made)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    start = len(notification_manager.records)
    widget.commit()
    assert records_since(start, NotificationSeverity.ERROR)
    said = widget.runner.widget.details or widget.runner.widget.status.text()  # a long message's whole text
    assert "choose the target 'new layer', or select image 'nuclei' in the layer list, then 'New labels'" in said
    assert not made.data.any()


def test_ctrl_z_on_the_prompts_undoes_commits_one_after_another(make_viewer, qtbot, sample):
    """Two commits, and Ctrl+Z pressed twice on the boxes layer: the second commit was undone, then 'no commit to
    undo' although the first was still there (only the last commit was remembered). Each press undoes the commit
    before, as long as it is still the target's last change."""
    image, nucleus, (r0, c0, r1, c1) = sample
    viewer = make_viewer()
    viewer.add_image(image, name="nuclei")
    widget = add_widget(viewer)
    widget.new_prompt_layers()
    boxes = viewer.layers[BOXES_NAME]
    boxes.add_rectangles(np.array([[r0, c0], [r1, c1]]))
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    widget.commit()
    target = viewer.layers[TARGET_NAME]
    first = target.data.copy()
    assert dice(first > 0, nucleus) > MIN_DICE
    boxes.add_rectangles(np.array([[100, 100], [120, 125]]))
    wait_idle(qtbot, widget)
    widget.commit()
    assert target.data.max() == 2
    press_key(viewer, "Control-Z")
    np.testing.assert_array_equal(target.data, first)
    press_key(viewer, "Control-Z")
    assert not target.data.any()
    start = len(notification_manager.records)
    press_key(viewer, "Control-Z")
    assert any("no commit to undo" in m for m in records_since(start, NotificationSeverity.WARNING))


def test_a_click_off_the_image_is_named_with_its_layer(make_viewer, qtbot, sample):
    """A negative click just off the image (the points layer takes clicks anywhere on the canvas) failed the preview
    with 'negative point 1: (300, 260) lies outside the 256x256 image': neither the layer nor its row (the count
    was among the plane's negative clicks). It is named as a box off the image is."""
    image, _, (r0, c0, r1, c1) = sample
    viewer = make_viewer()
    viewer.add_image(image, name="nuclei")
    widget = add_widget(viewer)
    widget.new_prompt_layers()
    viewer.layers[BOXES_NAME].add_rectangles(np.array([[r0, c0], [r1, c1]]))
    points = viewer.layers[POINTS_NAME]
    points.add(np.array([[(r0 + r1) / 2, (c0 + c1) / 2]]))  # positive
    widget.negative_radio.setChecked(True)
    start = len(notification_manager.records)
    points.add(np.array([[260.0, 300.0]]))
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    said = f"preview: point 2 of layer '{POINTS_NAME}' (a negative click): (300, 260) lies outside the 256x256 image"
    errors = records_since(start, NotificationSeverity.ERROR)
    assert any(m.startswith(said) for m in errors), errors


def test_a_full_resolution_target_over_a_whole_slide_is_told_the_level_its_labels_lie_on(make_viewer, qtbot, sample):
    """napari's 'New labels' over a whole slide (a pyramid past 4096 x 4096 px) is its full resolution, 5120 x 5120
    here; the commit was refused as 'does not match image 'slide' (2560, 2560)', the size of the slide's labels
    level said as the image's. It names the level now."""
    image, _, (r0, c0, r1, c1) = sample
    full = np.tile(image, (20, 20))  # 5120 x 5120: a whole slide for the widget
    viewer = make_viewer()
    slide = viewer.add_image([full, full[::2, ::2], full[::4, ::4]], name="slide", multiscale=True)
    viewer.layers.selection.active = slide
    viewer._new_labels()  # the layer list's 'New labels' button
    made = viewer.layers[-1]
    assert made.data.shape == full.shape
    widget = add_widget(viewer)
    widget.new_prompt_layers()
    viewer.layers[BOXES_NAME].add_rectangles(np.array([[r0, c0], [r1, c1]]))
    widget.target_picker.set_layer(made)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    widget.commit()
    said = widget.runner.widget.details or widget.runner.widget.status.text()
    assert "does not match the labels level of image 'slide' (2560, 2560)" in said, said
    assert "choose the target 'new layer'" in said, said
