"""The Interactive widget's prompts and what their preview holds, in a real napari viewer with the real LiteMedSAM
model: prompts counted on the plane they are shown on (prompt layers made over a stack, then a 2D image, a projection
of it, chosen), and a preview without objects.

Run under a display: ``xvfb-run -a python -m pytest tests/test_widget_interactive_prompt_planes.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from napari_promptseg._widgets.interactive import BOXES_NAME, POINTS_NAME

from .interactive_widget import FIRST_RUN_MS, MIN_DICE, add_widget, dice, preview_layer, records_since, wait_idle

pytestmark = pytest.mark.gui


def test_prompts_on_other_planes_of_a_stack_are_not_used_on_a_2d_image(make_viewer, qtbot, nuclei_sample):
    """Boxes and clicks drawn on several planes of a stack's prompt layers, then a 2D image of the same size chosen
    (napari shows it on every plane, the prompts of the plane shown only): every plane's prompts were segmented on it,
    objects the user could not see among them, and committed with the one shown."""
    image, truth, label, (r0, c0, r1, c1) = nuclei_sample
    viewer = make_viewer()
    viewer.add_image(np.stack([image[::-1], image, image[:, ::-1]]), name="stack")
    viewer.dims.set_current_step(0, 1)
    widget = add_widget(viewer)
    widget.new_prompt_layers()
    boxes, points = viewer.layers[BOXES_NAME], viewer.layers[POINTS_NAME]
    boxes.add_rectangles(np.array([[1, r0, c0], [1, r0, c1], [1, r1, c1], [1, r1, c0]]))
    boxes.add_rectangles(np.array([[2, 100, 100], [2, 100, 125], [2, 120, 125], [2, 120, 100]]))  # not shown
    points.add([0, 200, 60])  # a click on plane 0, not shown either
    flat = viewer.add_image(image, name="projection")
    widget.image_picker.set_layer(flat)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    assert viewer.dims.current_step[0] == 1
    shown = preview_layer(viewer).data.reshape(truth.shape)
    assert int(shown.max()) == 1, np.unique(shown)
    assert dice(shown > 0, truth == label) > MIN_DICE
    widget.commit()
    assert int(widget.target_picker.layer().data.max()) == 1
    assert len(boxes.data) == 1 and len(points.data) == 1  # the other planes' prompts stay, for the stack

    viewer.dims.set_current_step(0, 0)  # the plane of the click: its object is previewed
    wait_idle(qtbot, widget)
    assert preview_layer(viewer).data.reshape(truth.shape)[200, 60] == 1
    viewer.dims.set_current_step(0, 2)  # the plane of the other box: its object is previewed, and committed
    wait_idle(qtbot, widget)
    shown = preview_layer(viewer).data.reshape(truth.shape)
    assert int(shown.max()) == 1 and shown[100:121, 100:126].any() and shown[200, 60] == 0
    widget.commit()
    assert int(widget.target_picker.layer().data.max()) == 2
    assert len(boxes.data) == 0 and len(points.data) == 1


def test_a_commit_of_a_preview_without_objects_says_the_preview_is_empty(make_viewer, qtbot):
    """A box on a blank image (a stack's padding plane, a masked-out region): the preview came and held no object,
    and Shift-C said 'nothing to commit: draw a box or click a positive point, and wait for the preview', which the
    user had done. It says the preview of the prompts holds no object."""
    viewer = make_viewer()
    viewer.add_image(np.zeros((128, 128), np.uint8), name="blank")
    widget = add_widget(viewer)
    widget.new_prompt_layers()
    viewer.layers[BOXES_NAME].add_rectangles(np.array([[30, 30], [60, 60]]))
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    assert widget.preview is not None and not widget.preview.labels.any()
    start = len(notification_manager.records)
    widget.commit()
    said = records_since(start, NotificationSeverity.WARNING)
    assert any("the preview of the 1 prompt(s) on this plane holds no object" in m for m in said), said
