"""The Interactive widget's 'Propagate through stack' on a time-lapse of volumes (T, Z, Y, X): the real brain MRI,
the real LiteMedSAM model.

Run under a display: ``xvfb-run -a python -m pytest tests/test_widget_propagate_volumes.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from napari_promptseg.methods.metrics import dice

from .test_widget_interactive import FIRST_RUN_MS, add_widget, records_since, wait_idle

pytestmark = pytest.mark.gui


def test_propagation_on_a_time_lapse_of_volumes_runs_through_the_z_of_the_time_point_shown(
    make_viewer, qtbot, shared_data
):
    """A (T, Z, Y, X) layer (a time-lapse of volumes, as napari opens a TZYX file) was refused: 'propagation runs
    along the one axis besides the displayed plane; this layer's planes are (2, 7, 110, 140)', with no way round it
    in the widget. Now the object is carried through Z (the slider next to the plane) at the time point shown, into
    a Labels layer of the image's shape, on the image's grid; the other time point stays empty."""
    scan = np.load(shared_data / "brain_mri_1vol" / "test_scan.npz")
    truth = scan["seg"] == 10  # the left thalamus
    z = int(np.argmax(truth.sum((1, 2))))
    crop = (slice(z - 3, z + 4), slice(40, 150), slice(40, 180))
    vol, truth = scan["vol"][crop].astype(np.float32), truth[crop]
    viewer = make_viewer()
    tz = np.stack([vol[:, ::-1], vol])  # time point 0 flipped: not the volume propagated
    viewer.add_image(tz, name="tz", scale=(1, 4, 0.5, 0.5), translate=(0, 100, 10, 20), axis_labels=tuple("tzyx"))
    viewer.dims.set_current_step(0, 1)  # time point 1
    viewer.dims.set_current_step(1, 3)  # plane 3 (world z = 112)
    widget = add_widget(viewer)
    widget.new_prompt_layers()
    rows, cols = np.nonzero(truth[3])
    corners = [(rows.min(), cols.min()), (rows.min(), cols.max()), (rows.max(), cols.max()), (rows.max(), cols.min())]
    box = np.array([[1, 3, r, c] for r, c in corners])  # the prompt layer's data: the image's grid
    widget.shapes_picker.layer().add_rectangles(box)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    start = len(notification_manager.records)
    widget.propagate_button.click()
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    assert not records_since(start, NotificationSeverity.ERROR)
    result = viewer.layers["tz propagated"]
    assert result.data.shape == (2, *vol.shape)
    np.testing.assert_allclose(result.scale, (1, 4, 0.5, 0.5))
    np.testing.assert_allclose(result.translate, (0, 100, 10, 20))
    assert not result.data[0].any(), "time point 0 is not the one shown"
    planes = np.nonzero(result.data[1].any(axis=(1, 2)))[0]
    assert planes.min() < 3 < planes.max(), "carried above and below the boxed plane"
    assert dice(result.data[1] > 0, truth) > 0.75
    said = widget.runner.widget.summary.text()
    assert "propagated from plane 3" in said and "time point 1" in said, said
