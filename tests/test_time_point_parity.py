"""One time point of a time-lapse of volumes (T, Z, Y, X) gives the same labels by the CLI's --time, the console's
propagate_through_stack(time_point=) and the Interactive widget's 'Propagate through stack' at the time point shown:
the real brain MRI, the real LiteMedSAM model.

Run under a display: ``xvfb-run -a python -m pytest tests/test_time_point_parity.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from napari.utils.notifications import NotificationSeverity, notification_manager

from napari_promptseg import propagate_through_stack
from napari_promptseg.cli import main
from napari_promptseg.methods.metrics import dice

from .conftest import box_of, thalamus_planes
from .interactive_widget import FIRST_RUN_MS, add_box_on_plane, add_widget, records_since, wait_idle

pytestmark = pytest.mark.gui

#: how far the volume moved between time points 0 and 1 (rows, columns)
SHIFT = (5, 8)


def test_cli_console_and_widget_give_one_time_points_labels_alike(
    make_viewer, qtbot, shared_data, litemedsam, tmp_path
):
    """Every capability is one code path through the CLI, the console and the widget: for the volume of time point 1
    (the thalamus moved by SHIFT since time point 0) the three give the same labels, and time point 0 stays empty."""
    vol, truth, _ = thalamus_planes(shared_data)
    tz = np.stack([vol, np.roll(vol, SHIFT, axis=(1, 2))])
    moved = np.roll(truth, SHIFT, axis=(1, 2))
    box = box_of(moved[3])

    path = tmp_path / "tz.tif"
    tifffile.imwrite(path, tz, imagej=True, metadata={"axes": "TZYX"})
    out = tmp_path / "out"
    command = ["segment", str(path), "-o", str(out), "--box", *map(str, box), "--plane", "3", "--propagate"]
    assert main([*command, "--time", "1"]) == 0
    cli = tifffile.imread(out / "tz.tif")
    assert not cli[0].any()
    assert dice(cli[1] > 0, moved) > 0.75  # the object found where it moved to

    console = propagate_through_stack(tz, 3, boxes=[box], segmenter=litemedsam, name="tz", time_point=1).labels
    np.testing.assert_array_equal(console, cli[1])

    viewer = make_viewer()
    viewer.add_image(tz, name="tz", axis_labels=tuple("tzyx"))
    viewer.dims.set_current_step(0, 1)  # time point 1
    viewer.dims.set_current_step(1, 3)  # plane 3
    widget = add_widget(viewer)
    widget.new_prompt_layers()
    add_box_on_plane(widget, box, 1, 3)  # the image's grid
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    start = len(notification_manager.records)
    widget.propagate_button.click()
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    assert not records_since(start, NotificationSeverity.ERROR)
    np.testing.assert_array_equal(viewer.layers["tz propagated"].data, cli)
