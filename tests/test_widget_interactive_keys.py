"""The Interactive widget's keys and its closed dock, in a real napari viewer with the real LiteMedSAM model: commit,
clear prompts and the clicks' polarity from the keyboard whichever layer is selected (as micro-sam's keys, bound to
the viewer), only while the widget is open; a closed widget says nothing about the layers it no longer serves.

Run under a display: ``xvfb-run -a python -m pytest tests/test_widget_interactive_keys.py``.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from napari_promptseg._widgets.interactive import (
    BOXES_NAME,
    CLEAR_KEY,
    COMMIT_KEY,
    POINTS_NAME,
    TARGET_NAME,
    TOGGLE_KEY,
)

from .interactive_widget import (
    FIRST_RUN_MS,
    MIN_DICE,
    add_box_on_plane,
    add_widget,
    dice,
    press_key,
    preview_layer,
    wait_idle,
)

pytestmark = pytest.mark.gui


def test_commit_clear_and_toggle_keys_work_whichever_layer_is_selected_while_the_widget_is_open(
    make_viewer, qtbot, nuclei_sample
):
    """Shift-C committed only while a prompt layer was the selected layer: with the image selected (to set its
    contrast) or the committed labels (to look at them) the key did nothing, without a word; and no key cleared the
    prompts (micro-sam's users clear them from the keyboard). The keys are the viewer's while the widget is open,
    said in its tooltips, and a key the viewer had before (another plugin's) is its own again once it is closed."""
    image, truth, label, (r0, c0, r1, c1) = nuclei_sample
    viewer = make_viewer()
    theirs = []
    viewer.bind_key(COMMIT_KEY, lambda _viewer: theirs.append(COMMIT_KEY))  # e.g. micro-sam's clear
    viewer.add_image(image, name="nuclei")
    widget = add_widget(viewer)
    assert COMMIT_KEY in widget.commit_button.text()
    assert CLEAR_KEY in widget.clear_button.text() and CLEAR_KEY in widget.clear_button.toolTip()
    assert TOGGLE_KEY in widget.positive_radio.toolTip()
    widget.new_prompt_layers()
    boxes, points = viewer.layers[BOXES_NAME], viewer.layers[POINTS_NAME]
    boxes.add_rectangles(np.array([[r0, c0], [r1, c1]]))
    wait_idle(qtbot, widget, FIRST_RUN_MS)

    viewer.layers.selection.active = viewer.layers["nuclei"]
    press_key(viewer, COMMIT_KEY)
    target = viewer.layers[TARGET_NAME]
    assert dice(target.data > 0, truth == label) > MIN_DICE
    assert not theirs

    viewer.layers.selection.active = target  # the labels just committed, looked at
    press_key(viewer, TOGGLE_KEY)
    assert widget.negative_radio.isChecked()
    points.add([r0 + 2, c0 + 2])
    boxes.add_rectangles(np.array([[100, 100], [120, 125]]))
    wait_idle(qtbot, widget)
    assert points.features["positive"].tolist() == [False]
    press_key(viewer, CLEAR_KEY)
    assert len(boxes.data) == len(points.data) == 0
    wait_idle(qtbot, widget)
    assert not preview_layer(viewer).data.any()

    viewer.window.remove_dock_widget(widget)
    press_key(viewer, COMMIT_KEY)
    assert theirs == [COMMIT_KEY]  # the viewer's own binding, back
    boxes.add_rectangles(np.array([[100, 100], [120, 125]]))
    press_key(viewer, CLEAR_KEY)
    assert len(boxes.data) == 1  # a closed widget clears nothing


def test_a_closed_widget_says_nothing_of_the_layers_and_previews_again_once_reopened(make_viewer, qtbot, nuclei_sample):
    """With its dock closed, the widget still reacted to every edit of the prompt layers and every image change: a
    line drawn on its old boxes layer raised 'preview: shape 1 ... spans no area' as an error, a new image 'commit
    target: ...'; and its last preview stayed over the image, looking like labels. Closed, it is silent and its
    preview is cleared; opened again, it previews the prompts there are."""
    image, truth, label, (r0, c0, r1, c1) = nuclei_sample
    viewer = make_viewer()
    viewer.add_image(image, name="nuclei")
    widget = add_widget(viewer)
    widget.new_prompt_layers()
    boxes = viewer.layers[BOXES_NAME]
    boxes.add_rectangles(np.array([[r0, c0], [r1, c1]]))
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    widget.commit()  # a target made for this image: another image's switch would be said
    boxes.add_rectangles(np.array([[100, 100], [120, 125]]))
    wait_idle(qtbot, widget)
    assert preview_layer(viewer).data.any()

    viewer.window.remove_dock_widget(widget)
    assert not preview_layer(viewer).data.any()  # no preview left that no widget will commit or update
    start = len(notification_manager.records)
    boxes.add_lines(np.array([[10, 10], [10, 40]]))
    viewer.add_image(image[::2, ::2].copy(), name="half")
    widget.image_picker.set_layer(viewer.layers["half"])
    qtbot.wait(600)  # past the preview's and the plane's debounce
    assert widget.is_idle
    said = [n.message for n in notification_manager.records[start:] if n.severity >= NotificationSeverity.INFO]
    assert not said, said

    widget.image_picker.set_layer(viewer.layers["nuclei"])
    boxes.remove(list(range(len(boxes.data))))
    boxes.add_rectangles(np.array([[r0, c0], [r1, c1]]))
    viewer.window.add_dock_widget(widget, name="promptseg interactive")
    qtbot.waitUntil(lambda: not widget.is_idle, timeout=5_000)
    wait_idle(qtbot, widget)
    assert dice(preview_layer(viewer).data > 0, truth == label) > MIN_DICE


def test_shift_c_pressed_again_while_its_commit_waits_for_the_preview_is_no_refusal(make_viewer, qtbot, nuclei_sample):
    """Shift-C pressed twice before the preview came (it seemed slow): the second press said 'preview to commit is
    still running: wait for it, or press Cancel first', as if the commit were refused, and Cancel would have dropped
    the commit asked for. The commit waits, once, and is done."""
    image, truth, label, (r0, c0, r1, c1) = nuclei_sample
    viewer = make_viewer()
    viewer.add_image(image, name="nuclei")
    widget = add_widget(viewer)
    widget.new_prompt_layers()
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    start = len(notification_manager.records)
    viewer.layers[BOXES_NAME].add_rectangles(np.array([[r0, c0], [r1, c1]]))
    press_key(viewer, COMMIT_KEY)
    qtbot.waitUntil(lambda: (widget.runner.running_key or "").startswith("commit"), timeout=5_000)
    press_key(viewer, COMMIT_KEY)
    assert "commit waits for the preview" in widget.runner.widget.status.text()
    wait_idle(qtbot, widget)
    said = [n.message for n in notification_manager.records[start:]]
    assert not said, said
    target = viewer.layers[TARGET_NAME]
    assert dice(target.data > 0, truth == label) > MIN_DICE and target.data.max() == 1

    # a commit dropped because the image's pixels were replaced while it ran: the next Shift-C commits again (it must
    # not take the dropped one for a commit still waiting)
    boxes = viewer.layers[BOXES_NAME]
    boxes.add_rectangles(np.array([[100, 100], [120, 125]]))
    press_key(viewer, COMMIT_KEY)
    qtbot.waitUntil(lambda: (widget.runner.running_key or "").startswith("commit"), timeout=5_000)
    viewer.layers["nuclei"].data = image.copy()
    wait_idle(qtbot, widget)
    assert target.data.max() == 1
    boxes.add_rectangles(np.array([[160, 160], [185, 190]]))  # the preview is computed anew: the commit waits
    press_key(viewer, COMMIT_KEY)
    wait_idle(qtbot, widget)
    assert target.data.max() > 1, widget.runner.widget.status.text()


def test_the_polarity_of_clicks_on_the_users_own_points_layer_keeps_its_other_features(
    make_viewer, qtbot, nuclei_sample
):
    """A points layer of the user's own with features of its own (a CSV's 'name' column) as the clicks layer:
    'negative' chosen (or T) replaced its features with the polarity alone, the names lost; and a layer that had a
    'positive' column beside others raised napari's 'Feature defaults is missing some columns' as it was picked."""
    image, truth, label, (r0, c0, r1, c1) = nuclei_sample
    viewer = make_viewer()
    viewer.add_image(image, name="nuclei")
    named = viewer.add_points([[r0 + 3, c0 + 3]], name="my clicks", features={"name": ["first"]})
    polar = viewer.add_points([[r1 - 3, c1 - 3]], name="their clicks", features={"name": ["a"], "positive": [True]})
    widget = add_widget(viewer)
    widget.points_picker.set_layer(named)
    press_key(viewer, TOGGLE_KEY)  # negative
    named.add([r0 + 5, c0 + 5])
    assert named.features["name"].tolist()[:1] == ["first"]
    assert named.features["positive"].tolist() == [True, False]
    widget.points_picker.set_layer(polar)
    polar.add([r1 - 5, c1 - 5])
    assert polar.features["positive"].tolist() == [True, False]
    assert polar.features["name"].tolist()[:1] == ["a"]
    wait_idle(qtbot, widget, FIRST_RUN_MS)


def test_shift_c_on_one_plane_then_on_the_next_before_the_first_preview_commits_both(make_viewer, qtbot, nuclei_sample):
    """Plane by plane through a stack, faster than the previews (each plane's first one encodes it: seconds on a
    CPU): Shift-C on a plane, the next plane, a box, Shift-C. The second commit took the first's place in the queue
    (one key for every commit: latest wins) and the first plane's object was never committed, without a word; had
    the first begun, the second was refused ('still running ... press Cancel first'). Each plane's commit is done."""
    image, truth, label, (r0, c0, r1, c1) = nuclei_sample
    w = image.shape[1]
    viewer = make_viewer()
    viewer.add_image(np.stack([image[::-1], image, image[:, ::-1]]), name="stack")
    viewer.dims.set_current_step(0, 1)
    widget = add_widget(viewer)
    widget.new_prompt_layers()
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    release = threading.Event()  # the runner busy (an embedding of the plane before, say) while the user goes on
    widget.runner.submit("hold", "a task before", lambda progress, cancel: release.wait(60), lambda _: None)
    add_box_on_plane(widget, (c0, r0, c1, r1), 1)
    press_key(viewer, COMMIT_KEY)
    viewer.dims.set_current_step(0, 2)
    add_box_on_plane(widget, (w - 1 - c1, r0, w - 1 - c0, r1), 2)
    press_key(viewer, COMMIT_KEY)
    release.set()
    wait_idle(qtbot, widget)
    target = viewer.layers[TARGET_NAME]
    nucleus = truth == label
    assert dice(target.data[1] > 0, nucleus) > MIN_DICE, widget.runner.widget.status.text()
    assert dice(target.data[2] > 0, nucleus[:, ::-1]) > MIN_DICE, widget.runner.widget.status.text()
    assert not target.data[0].any()
    assert len(widget.shapes_picker.layer().data) == 0


def test_a_click_made_negative_in_the_points_layers_features_is_previewed_as_negative(
    make_viewer, qtbot, nuclei_sample
):
    """A click's polarity changed in its layer's features (napari's features table, the console) rather than with T:
    the preview stayed that of the positive click, and Shift-C committed it as it was (the preview was fresh)."""
    image, truth, label, (r0, c0, r1, c1) = nuclei_sample
    viewer = make_viewer()
    viewer.add_image(image, name="nuclei")
    widget = add_widget(viewer)
    widget.new_prompt_layers()
    points = viewer.layers[POINTS_NAME]
    viewer.layers[BOXES_NAME].add_rectangles(np.array([[r0, c0], [r1, c1]]))
    points.add([(r0 + r1) // 2, (c0 + c1) // 2])
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    assert len(widget.preview.prompts.positive) == 1
    features = points.features.copy()
    features["positive"] = False
    points.features = features
    wait_idle(qtbot, widget)
    assert len(widget.preview.prompts.negative) == 1 and not widget.preview.prompts.positive


def test_prompts_cleared_right_after_shift_c_leave_the_commit_asked_for(make_viewer, qtbot, nuclei_sample):
    """Shift-C, then at once Shift-X to start the next object (micro-sam's habit: commit, clear), before the
    preview came: the commit, waiting for its preview, took the cleared prompts for the ones to commit now, and
    committed nothing, without a word. The prompts the commit was asked for are committed."""
    image, truth, label, (r0, c0, r1, c1) = nuclei_sample
    viewer = make_viewer()
    viewer.add_image(image, name="nuclei")
    widget = add_widget(viewer)
    widget.new_prompt_layers()
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    viewer.layers[BOXES_NAME].add_rectangles(np.array([[r0, c0], [r1, c1]]))
    press_key(viewer, COMMIT_KEY)
    press_key(viewer, CLEAR_KEY)
    wait_idle(qtbot, widget)
    assert TARGET_NAME in viewer.layers, widget.runner.widget.status.text()
    assert dice(viewer.layers[TARGET_NAME].data > 0, truth == label) > MIN_DICE
