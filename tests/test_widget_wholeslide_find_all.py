"""'Find all like these' in the Interactive widget on whole-slide planes (a stack pyramid whose planes are larger than
4096 x 4096 px): the whole plane at the boxes' level when it fits a Labels layer, into a layer on the labels level as
the commits are; else refused saying what to run, with the boxes drawn. Real nuclei (the bundled DSB2018 sample cut as
spheroids), the real LiteMedSAM model."""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from napari_promptseg._sample_data import nuclei, spheroid_stack
from napari_promptseg.methods.metrics import match_instances
from napari_promptseg.tiling import upsample_labels

from .interactive_widget import FIRST_RUN_MS, add_box_on_plane, add_widget, records_since, wait_idle
from .test_widget_propagate_volumes import _magnified_level

pytestmark = pytest.mark.gui

MAGNIFY = 17.0  # 4352 x 4352 px planes: whole-slide planes


@pytest.fixture(scope="module")
def nuclei_planes() -> tuple[np.ndarray, np.ndarray]:
    (image, _, _), (truth, _, _) = nuclei()
    return spheroid_stack(image, truth, planes=2, seed=0, jitter=1)


def test_find_all_on_a_stack_of_whole_slide_planes_runs_on_the_boxes_level(make_viewer, qtbot, nuclei_planes):
    """Find all on a stack of whole-slide planes was refused ('a whole slide: find all of it with promptseg segment
    --find-all --plane Z'), though the boxes' large objects need only a 544 px level. The plane shown is segmented
    there (its full resolution never read), its objects put on the stack's labels level, as its commits are."""
    stack, truth = nuclei_planes
    reads: list = []
    levels = [_magnified_level(stack.astype(np.float32), MAGNIFY / 2**k, reads if k == 0 else None) for k in range(6)]
    viewer = make_viewer()
    viewer.add_image(levels, name="scan", multiscale=True, contrast_limits=(0, 255))
    viewer.dims.set_current_step(0, 1)
    widget = add_widget(viewer)
    widget.new_prompt_layers()
    ids = [i for i in np.unique(truth[1]) if i][:3]
    for i in ids:
        rows, cols = np.nonzero(truth[1] == i)
        box = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
        add_box_on_plane(widget, tuple(MAGNIFY * v for v in box), 1)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    start = len(notification_manager.records)
    widget.find_all_button.click()
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    assert not records_since(start, NotificationSeverity.ERROR), widget.runner.widget.status.text()
    assert not reads, "the full-resolution level was read"
    result = viewer.layers["scan find-all"]
    assert result.data.shape == levels[1].shape  # the finest level whose 2 planes fit the labels' limits
    np.testing.assert_allclose(result.scale[1:], 2.0)
    assert not result.data[0].any()  # the plane shown only
    expected = upsample_labels(truth[1], levels[1].shape[1:])
    f1 = match_instances(np.asarray(result.data[1]), expected)["f1"]
    assert f1 > 0.5, f1


def test_find_all_on_whole_slide_planes_whose_level_is_too_large_says_what_to_run(make_viewer, qtbot, nuclei_planes):
    """Small objects on whole-slide planes need a level too large for a Labels layer: refused, naming that level, the
    command with the plane shown and the boxes drawn, and the object size found here."""
    stack, truth = nuclei_planes
    levels = [_magnified_level(stack.astype(np.float32), MAGNIFY / 2**k) for k in range(6)]
    viewer = make_viewer()
    viewer.add_image(levels, name="scan", multiscale=True, contrast_limits=(0, 255))
    viewer.dims.set_current_step(0, 1)
    widget = add_widget(viewer)
    widget.new_prompt_layers()
    add_box_on_plane(widget, (1000.0, 1000.0, 1030.0, 1030.0), 1)  # a 30 px object: read at full resolution
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    start = len(notification_manager.records)
    widget.find_all_button.click()
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    errors = records_since(start, NotificationSeverity.ERROR)
    assert any("4352 x 4352 px level, too large here: `promptseg segment --find-all --plane 1`" in m for m in errors)
    details = widget.runner.widget.details
    assert "--plane 1 --box 1000 1000 1030 1030 -o OUT" in details and " px) are found here" in details, details
    assert "scan find-all" not in [layer.name for layer in viewer.layers]
