"""The Interactive widget says one cause once: an image its embedding and its preview both refuse for the same
reason (NaN pixels) gives one error notification, not one per task. In a real napari viewer with the real
LiteMedSAM model.

Run under a display: ``xvfb-run -a python -m pytest tests/test_widget_interactive_said_once.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from .interactive_widget import FIRST_RUN_MS, add_box_on_plane, add_widget, records_since, wait_idle

pytestmark = pytest.mark.gui


def test_an_image_with_nan_is_refused_once_for_its_embedding_and_preview(make_viewer, qtbot, nuclei_sample, litemedsam):
    """A float image with NaN (outside a registered field of view): 'embedding 'x': ... NaN' and 'preview: ... NaN',
    two error notifications for one cause."""
    image, _, _, (r0, c0, r1, c1) = nuclei_sample
    with_nan = image.astype(np.float32)
    with_nan[:4, :4] = np.nan
    viewer = make_viewer()
    start = len(notification_manager.records)
    viewer.add_image(with_nan, name="deconvolved")
    widget = add_widget(viewer)
    widget.new_prompt_layers()
    add_box_on_plane(widget, (c0, r0, c1, r1))
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    said = records_since(start, NotificationSeverity.ERROR)
    assert len(said) == 1 and "image layer 'deconvolved'" in said[0] and "NaN" in said[0], said
    assert widget.runner.state == "failed" and "NaN" in widget.runner.widget.status.text()

    start = len(notification_manager.records)
    with_nan[:4, :4] = 0.0  # the cause gone, the same image's next failure is said again
    viewer.layers["deconvolved"].data = with_nan
    wait_idle(qtbot, widget)
    assert not records_since(start, NotificationSeverity.ERROR)
    viewer.layers["deconvolved"].data = np.where(np.arange(with_nan.shape[1]) < 4, np.nan, with_nan)
    wait_idle(qtbot, widget)
    assert len(records_since(start, NotificationSeverity.ERROR)) == 1
