"""The Interactive widget in a real napari viewer with the real LiteMedSAM model. Commit and undo: the preview's
objects written into the target Labels layer as new ids (never over labels there), one undo step, the prompts that
made them removed, and commits that wait for their preview.

Run under a display: ``xvfb-run -a python -m pytest tests/test_widget_interactive_commit.py``.
"""

from __future__ import annotations

import napari
import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager
from skimage.measure import regionprops

from napari_promptseg._widgets.interactive import (
    BOXES_NAME,
    COMMIT_KEY,
    POINTS_NAME,
    TARGET_NAME,
)

from .interactive_widget import (
    CACHED_RUN_MS,
    FIRST_RUN_MS,
    MIN_DICE,
    add_widget,
    dice,
    press_key,
    preview_layer,
    records_since,
    wait_idle,
)

pytestmark = pytest.mark.gui


def test_box_preview_commit_undo(make_viewer, qtbot, nuclei_sample):
    image, truth, label, (r0, c0, r1, c1) = nuclei_sample
    nucleus = truth == label
    viewer = make_viewer()
    # a non-trivial world transform: prompts must be mapped through it, not read as pixels
    scale, translate = np.array([2.0, 2.0]), np.array([5.0, -3.0])
    viewer.add_image(image, name="nuclei", scale=scale, translate=translate)
    # the user's own labels: id 7 on another nucleus, id 3 on a square in the middle of the chosen one (where the
    # model's mask certainly is, so a commit that overwrote labels would be caught)
    other = next(r for r in regionprops(truth) if r.label != label and r.area > 200)
    existing = np.zeros(truth.shape, dtype=np.uint16)
    existing[truth == other.label] = 7
    core = np.zeros_like(nucleus)
    cr, cc = (r0 + r1) // 2, (c0 + c1) // 2
    core[cr - 4 : cr + 4, cc - 4 : cc + 4] = True
    assert (core <= nucleus).all()
    existing[core] = 3
    target = viewer.add_labels(existing.copy(), name="my labels", scale=scale, translate=translate)
    widget = add_widget(viewer)
    wait_idle(qtbot, widget, FIRST_RUN_MS)  # the image is embedded as soon as it is chosen
    assert widget.target_picker.layer() is None  # default target: a new layer, never the user's labels

    # a box drawn on a plain Shapes layer (scale 1): its world corners are the image's world coordinates
    shapes = viewer.add_shapes(name="my boxes")
    assert widget.shapes_picker.layer() is shapes
    corners_world = np.array([[r0, c0], [r1, c1]]) * scale + translate
    shapes.add_rectangles(corners_world)
    wait_idle(qtbot, widget, FIRST_RUN_MS)

    preview = preview_layer(viewer)
    np.testing.assert_allclose(preview.scale, scale)
    np.testing.assert_allclose(preview.translate, translate)
    assert preview.data.shape == truth.shape
    assert set(np.unique(preview.data)) == {0, 1}
    preview_dice = dice(preview.data == 1, nucleus)
    assert preview_dice > MIN_DICE, preview_dice
    assert (preview.data[core] == 1).all()

    widget.target_picker.set_layer(target)
    widget.commit()
    new_id = 8  # max of the existing labels + 1
    committed = target.data == new_id
    assert dice(committed, nucleus & ~core) > MIN_DICE
    assert (target.data[core] == 3).all(), "an existing label was overwritten"
    assert (target.data[truth == other.label] == 7).all()
    assert np.array_equal(target.data[~committed], existing[~committed])
    assert len(shapes.data) == 0, "the committed box should be removed"
    wait_idle(qtbot, widget)
    assert not preview.data.any(), "the preview should be cleared after a commit"

    target.undo()
    np.testing.assert_array_equal(target.data, existing)


def test_ctrl_z_on_the_prompts_undoes_the_commit_and_never_a_later_paint_stroke(make_viewer, qtbot, nuclei_sample):
    """Ctrl+Z on the prompt layers undoes the last commit. It compared the target's count of undoable changes with
    the count right after the commit: the commit undone in the Labels layer itself (its own Ctrl+Z) and one stroke
    painted there gave the same count, and the widget's undo then erased that stroke, the user's own work."""
    image, truth, label, (r0, c0, r1, c1) = nuclei_sample
    viewer = make_viewer()
    viewer.add_image(image, name="nuclei")
    widget = add_widget(viewer)
    widget.new_prompt_layers()
    boxes = viewer.layers[BOXES_NAME]
    boxes.add_rectangles(np.array([[r0, c0], [r1, c1]]))
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    widget.commit()
    target = viewer.layers[TARGET_NAME]
    assert dice(target.data > 0, truth == label) > MIN_DICE
    assert viewer.layers.selection.active is boxes
    press_key(viewer, "Control-Z")  # on the boxes layer: the commit is undone
    assert not target.data.any()

    boxes.add_rectangles(np.array([[r0, c0], [r1, c1]]))  # committed again, ...
    wait_idle(qtbot, widget)
    widget.commit()
    assert target.data.any()
    target.undo()  # ... undone in the labels layer, where the user then paints a stroke
    target.data_setitem((np.arange(3), np.arange(3)), np.full(3, 5, target.data.dtype))
    painted = target.data.copy()
    first = len(notification_manager.records)
    press_key(viewer, "Control-Z")
    np.testing.assert_array_equal(target.data, painted)  # the stroke stays
    warnings = records_since(first, NotificationSeverity.WARNING)
    # the commit was undone in the layer, and the stroke took its place in napari's history: none is left to undo
    assert any("no commit to undo" in m for m in warnings), warnings

    boxes.add_rectangles(np.array([[r0, c0], [r1, c1]]))  # a commit, and a stroke painted over it at once
    wait_idle(qtbot, widget)
    widget.commit()
    target.data_setitem((np.arange(3), np.arange(3) + 3), np.full(3, 9, target.data.dtype))
    painted = target.data.copy()
    first = len(notification_manager.records)
    press_key(viewer, "Control-Z")
    np.testing.assert_array_equal(target.data, painted)
    warnings = records_since(first, NotificationSeverity.WARNING)
    assert any(f"'{TARGET_NAME}' changed since the commit" in m for m in warnings), warnings


def test_ctrl_z_on_the_prompts_undoes_the_commit_left_after_an_undo_or_a_redo_in_the_labels_layer(
    make_viewer, qtbot, nuclei_sample
):
    """Two commits; the second undone in the labels layer itself (its own Ctrl+Z), then Ctrl+Z on the prompts: it said
    "'promptseg labels' changed since the commit" and undid nothing, the first commit being the layer's last change.
    And a commit undone and redone there (napari keeps its change anew) was no longer the widget's to undo. The
    commits undone in the layer are passed over, and a commit redone there is undone again."""
    image, truth, label, (r0, c0, r1, c1) = nuclei_sample
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
    boxes.add_rectangles(np.array([[100, 100], [120, 125]]))
    wait_idle(qtbot, widget)
    widget.commit()
    both = target.data.copy()
    assert both.max() == 2

    target.undo()  # the second commit, undone in the labels layer
    viewer.layers.selection.active = boxes
    press_key(viewer, "Control-Z")  # the first, undone from the prompts
    assert not target.data.any()
    target.redo()
    target.redo()  # both back, redone in the labels layer
    np.testing.assert_array_equal(target.data, both)
    press_key(viewer, "Control-Z")
    np.testing.assert_array_equal(target.data, first)
    press_key(viewer, "Control-Z")
    assert not target.data.any()
    start = len(notification_manager.records)
    press_key(viewer, "Control-Z")
    assert any("no commit to undo" in m for m in records_since(start, NotificationSeverity.WARNING))


def test_a_preview_of_pixels_since_replaced_is_never_committed(make_viewer, qtbot, nuclei_sample):
    """Commit wrote a preview made from an image that was switched, or whose pixels were replaced, meanwhile (its
    mask matched the old image, Dice 0.02 with the new one)."""
    image, truth, label, (r0, c0, r1, c1) = nuclei_sample
    viewer = make_viewer()
    layer = viewer.add_image(image, name="nuclei")
    widget = add_widget(viewer)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    shapes = viewer.add_shapes(name="boxes")
    shapes.add_rectangles(np.array([[r0, c0], [r1, c1]]))
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    assert preview_layer(viewer).data.any()
    layer.data = np.zeros_like(image)  # the user replaces the pixels: the preview of the old ones is stale at once
    assert widget.preview is None and not preview_layer(viewer).data.any()
    widget.commit()  # waits for the preview of the new pixels, which holds nothing
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    target = widget.target_picker.layer()
    assert target is None or not target.data.any()


def test_a_commit_dropped_because_the_image_changed_is_said(make_viewer, qtbot, nuclei_sample):
    """Shift-C before the preview came, then another image chosen: the commit (of the old image's objects) was
    dropped without a word, and the status line then read "preview: 1 object(s)" as if all went well."""
    image, _, _, (r0, c0, r1, c1) = nuclei_sample
    viewer = make_viewer()
    first_image = viewer.add_image(image, name="nuclei")
    flipped = viewer.add_image(image[::-1].copy(), name="flipped")
    widget = add_widget(viewer)
    widget.image_picker.set_layer(first_image)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    widget.new_prompt_layers()
    widget.shapes_picker.layer().add_rectangles(np.array([[r0, c0], [r1, c1]]))
    first = len(notification_manager.records)
    widget.commit()  # the preview to commit is computed now
    widget.image_picker.set_layer(flipped)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    target = widget.target_picker.layer()
    assert target is None or not target.data.any()
    warnings = records_since(first, NotificationSeverity.WARNING)
    assert any("nothing committed" in m and "'nuclei'" in m for m in warnings), warnings


def test_each_image_of_one_size_gets_its_own_commit_target(make_viewer, qtbot, nuclei_sample):
    """Two images of one size: the target layer made for the first stayed the target when the second was chosen
    (it fits by shape), so the second image's objects were committed among the first's."""
    image, _, _, (r0, c0, r1, c1) = nuclei_sample
    viewer = make_viewer()
    first_image = viewer.add_image(image, name="nuclei")
    flipped = viewer.add_image(image[::-1].copy(), name="flipped")
    widget = add_widget(viewer)
    widget.new_prompt_layers()

    def commit_box(layer, box) -> napari.layers.Labels:
        widget.image_picker.set_layer(layer)
        wait_idle(qtbot, widget, FIRST_RUN_MS)
        widget.shapes_picker.layer().add_rectangles(box)
        wait_idle(qtbot, widget, FIRST_RUN_MS)
        widget.commit()
        wait_idle(qtbot, widget)
        return widget.target_picker.layer()

    box = np.array([[r0, c0], [r1, c1]])
    first_target = commit_box(first_image, box)
    committed_first = first_target.data.copy()
    assert committed_first.any()
    flipped_box = np.array([[image.shape[0] - 1 - r1, c0], [image.shape[0] - 1 - r0, c1]])
    second_target = commit_box(flipped, flipped_box)
    assert second_target is not first_target
    assert second_target.data.any()
    np.testing.assert_array_equal(first_target.data, committed_first)
    widget.image_picker.set_layer(first_image)  # back to the first image: its own target again
    assert widget.target_picker.layer() is first_target


def test_a_commit_says_the_objects_that_lay_on_painted_labels(make_viewer, qtbot, nuclei_sample):
    """Two boxes, one on a nucleus the user had painted over: the status read "committed 1 object(s)", both boxes
    went, and nothing said where the second object was (never overwritten, as it must be: now said)."""
    image, truth, label, (r0, c0, r1, c1) = nuclei_sample
    other = next(r for r in regionprops(truth) if r.label != label and r.area > 200)
    viewer = make_viewer()
    viewer.add_image(image, name="nuclei")
    painted = np.zeros(truth.shape, dtype=np.int32)
    painted[max(r0 - 4, 0) : r1 + 5, max(c0 - 4, 0) : c1 + 5] = 4
    target = viewer.add_labels(painted.copy(), name="my labels")
    widget = add_widget(viewer)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    widget.target_picker.set_layer(target)
    widget.new_prompt_layers()
    o0, p0, o1, p1 = other.bbox
    widget.shapes_picker.layer().add_rectangles(
        [np.array([[r0, c0], [r1, c1]]), np.array([[o0, p0], [o1 - 1, p1 - 1]])]
    )
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    assert int(widget.preview.labels.max()) == 2
    widget.commit()
    assert set(np.unique(target.data)) == {0, 4, 5}
    assert (target.data[painted == 4] == 4).all()
    status = widget.runner.widget.status.text()
    assert "committed 1 object(s)" in status and "1 other(s) lay wholly on labels already there" in status, status


def test_a_commit_says_an_object_it_added_only_in_part_beside_painted_labels(make_viewer, qtbot, nuclei_sample):
    """A box on a nucleus whose upper half the user had painted: half the object was committed (the painted half is
    never overwritten, as it must be) and the status read only "committed 1 object(s)", as for a whole one."""
    image, truth, label, (r0, c0, r1, c1) = nuclei_sample
    viewer = make_viewer()
    viewer.add_image(image, name="nuclei")
    painted = np.zeros(truth.shape, dtype=np.int32)
    painted[r0 : (r0 + r1) // 2, c0 : c1 + 1] = 4
    target = viewer.add_labels(painted.copy(), name="my labels")
    widget = add_widget(viewer)
    widget.target_picker.set_layer(target)
    widget.new_prompt_layers()
    widget.shapes_picker.layer().add_rectangles(np.array([[r0, c0], [r1, c1]]))
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    widget.commit()
    assert (target.data[painted == 4] == 4).all()
    assert dice(target.data == 5, (truth == label) & (painted == 0)) > MIN_DICE
    status = widget.runner.widget.status.text()
    assert "committed 1 object(s)" in status and "1 of them partly on labels already there" in status, status


def test_cancel_drops_a_commit_waiting_for_its_preview(make_viewer, qtbot, nuclei_sample):
    """Shift-C before the preview came, a box added meanwhile (the commit then waits for the preview of the prompts
    as they are now), then Cancel: the commit stayed asked for, and the preview of the user's next edit committed
    every prompt on the plane, unasked."""
    image, truth, label, (r0, c0, r1, c1) = nuclei_sample
    other = next(r for r in regionprops(truth) if r.label != label and r.area > 200)
    viewer = make_viewer()
    viewer.add_image(image, name="nuclei")
    widget = add_widget(viewer)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    widget.new_prompt_layers()
    boxes = viewer.layers[BOXES_NAME]
    boxes.add_rectangles(np.array([[r0, c0], [r1, c1]]))
    widget.commit()  # its preview is computed now, and committed when it comes ...
    boxes.add_rectangles(np.reshape(other.bbox, (2, 2)) - [[0, 0], [1, 1]])  # ... unless the prompts change meanwhile
    qtbot.waitUntil(lambda: widget._commit_after_preview, timeout=CACHED_RUN_MS)  # waits for the newer preview
    widget.runner.cancel()  # the Cancel button's
    wait_idle(qtbot, widget)
    viewer.layers[POINTS_NAME].add(np.round(other.centroid))  # the next edit
    wait_idle(qtbot, widget)
    assert TARGET_NAME not in viewer.layers, "committed without being asked"
    assert len(boxes.data) == 2 and widget.preview is not None
    widget.commit()  # asked again: committed
    assert viewer.layers[TARGET_NAME].data.max() == 2


def test_a_commit_asked_before_its_preview_is_done_on_its_plane_when_the_user_moves_on(
    make_viewer, qtbot, nuclei_sample
):
    """Box, Shift-C at once, then the next plane (a stack's usual rhythm): the commit waited for the live preview,
    which the plane change dropped, and nothing was committed, without a word. Now the boxed plane's objects are
    committed, and the next plane gets nothing."""
    image, truth, label, (r0, c0, r1, c1) = nuclei_sample
    viewer = make_viewer()
    viewer.add_image(np.stack([image, image, image]), name="stack")
    viewer.dims.set_current_step(0, 1)
    widget = add_widget(viewer)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    widget.new_prompt_layers()
    shapes = widget.shapes_picker.layer()
    shapes.add_rectangles(np.array([[1, r0, c0], [1, r0, c1], [1, r1, c1], [1, r1, c0]]))
    press_key(viewer, COMMIT_KEY)  # before the preview (its timer has not even fired)
    viewer.dims.set_current_step(0, 2)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    labels = viewer.layers[TARGET_NAME].data
    assert dice(labels[1] == 1, truth == label) > MIN_DICE
    assert not labels[0].any() and not labels[2].any()
    assert len(shapes.data) == 0, "the committed box is removed"
    # faster still: the next plane's box drawn before the commit's preview came was taken for an edit of the
    # committed prompts, and that plane's object was committed in place of the boxed one
    viewer.dims.set_current_step(0, 0)
    shapes.add_rectangles(np.array([[0, r0, c0], [0, r0, c1], [0, r1, c1], [0, r1, c0]]))
    press_key(viewer, COMMIT_KEY)
    viewer.dims.set_current_step(0, 2)
    shapes.add_rectangles(np.array([[2, r0, c0], [2, r0, c1], [2, r1, c1], [2, r1, c0]]))
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    assert dice(labels[0] == 2, truth == label) > MIN_DICE and not labels[2].any()
    assert len(shapes.data) == 1, "the next plane's box waits for its own commit"
    # a box removed on another plane while the commit waits: the commit removed its own boxes by their rows at the
    # time, which that shifted (here past the layer's end: IndexError, its box left; else another box removed)
    other = next(r for r in regionprops(truth) if r.label != label and r.area > 200)
    o0, p0, o1, p1 = other.bbox
    viewer.dims.set_current_step(0, 1)
    shapes.add_rectangles(np.array([[1, o0, p0], [1, o0, p1 - 1], [1, o1 - 1, p1 - 1], [1, o1 - 1, p0]]))
    press_key(viewer, COMMIT_KEY)
    viewer.dims.set_current_step(0, 2)
    shapes.remove([0])  # the plane-2 box, drawn before it
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    assert len(shapes.data) == 0
    assert (truth[labels[1] == 3] == other.label).mean() > 0.8  # the object committed is the one boxed


def test_the_users_own_shapes_are_never_taken_as_prompts_nor_committed_onto_another_grid(
    make_viewer, qtbot, nuclei_sample
):
    """A Shapes layer of the user's (ROIs drawn before, a result's boxes) was picked as box prompts at once, and a
    commit removed its shapes (napari cannot undo that). A target Labels layer of the image's shape but on another
    grid received the objects where the image does not show them."""
    image, truth, label, (r0, c0, r1, c1) = nuclei_sample
    viewer = make_viewer()
    viewer.add_image(image, name="nuclei")
    rois = viewer.add_shapes(np.array([[[5.0, 5.0], [5.0, 40.0], [40.0, 40.0]]]), shape_type="polygon", name="ROIs")
    widget = add_widget(viewer)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    assert widget.shapes_picker.layer() is None
    later = viewer.add_shapes(np.array([[[50.0, 50.0], [60.0, 60.0]]]), shape_type="rectangle", name="result boxes")
    assert widget.shapes_picker.layer() is None and len(rois.data) == 1 and len(later.data) == 1
    boxes = viewer.add_shapes(name="boxes")  # empty when it appears: made for prompts
    assert widget.shapes_picker.layer() is boxes
    boxes.add_rectangles(np.array([[r0, c0], [r1, c1]]))
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    shifted = viewer.add_labels(np.zeros(truth.shape, np.uint32), name="shifted", translate=(40.0, 70.0))
    widget.target_picker.set_layer(shifted)
    widget.commit()
    assert not shifted.data.any()
    assert "another grid" in widget.runner.widget.status.text()
    assert len(rois.data) == 1 and len(later.data) == 1
    # Ctrl+Z right after Shift-C: the boxes layer is the active one then, and it undoes the commit
    widget.target_picker.set_layer(None)
    viewer.layers.selection.active = boxes  # where Shift-C is pressed
    widget.commit()
    target = widget.target_picker.layer()
    assert target is not None and target.data.any() and viewer.layers.selection.active is boxes
    assert widget.runner.state == "done", widget.runner.widget.status.text()  # no longer the refusal's "failed"
    from app_model.types import KeyBinding

    undo = boxes.keymap[KeyBinding.from_str("Ctrl+Z")]
    committed = target.data.copy()
    target.data_setitem((np.array([0]), np.array([0])), 9)  # the user paints after the commit
    undo(boxes)  # would undo the paint stroke and say the commit was undone: refused
    assert target.data[0, 0] == 9 and np.array_equal(target.data > 0, (committed > 0) | (target.data == 9))
    target.undo()  # the stroke, on the target itself
    undo(boxes)
    assert not target.data.any()
