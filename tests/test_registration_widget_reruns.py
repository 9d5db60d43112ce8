"""The Registration widget run again after an input changed, and cancelled midway. Run under a display:
``xvfb-run -a python -m pytest tests/test_registration_widget_reruns.py``."""

from __future__ import annotations

import numpy as np
import pytest

from napari_promptseg._widgets.registration import RegistrationWidget

from .test_registration_widget_landmarks import lesion_pair  # noqa: F401 (fixture)

pytestmark = pytest.mark.gui


def _run(qtbot, widget) -> None:
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=180_000)
    assert widget.runner.state == "done", widget.runner.widget.status.text()


def test_a_rerun_after_the_moving_pixels_changed_keeps_the_first_runs_results(
    make_viewer,
    qtbot,
    lesion_pair,  # noqa: F811
):
    """The CC10 section registered, then its layer given other pixels (here mirrored, as a corrected scan) and
    registered again: the second run removed the first one's results (no undo), the only record of how the earlier
    pixels registered. They stay now, beside the new ones; a rerun on unchanged pixels still replaces its own."""
    fixed, moving = (image[::2, ::2] for image in lesion_pair[:2])  # 184 x 223 px: only the layers are looked at
    viewer = make_viewer()
    widget = RegistrationWidget(viewer)
    widget.fixed_picker.set_layer(viewer.add_image(fixed, name="HE", rgb=True))
    moving_layer = viewer.add_image(moving, name="CC10", rgb=True)
    widget.moving_picker.set_layer(moving_layer)
    widget.method.setCurrentText("intensity")
    _run(qtbot, widget)
    first = viewer.layers["CC10 registered"]
    first_pixels = first.data.copy()
    moving_layer.data = np.ascontiguousarray(moving[:, ::-1])
    _run(qtbot, widget)
    assert first in viewer.layers and np.array_equal(first.data, first_pixels)
    second = viewer.layers["CC10 registered [1]"]
    assert not np.array_equal(second.data, first_pixels)
    _run(qtbot, widget)  # the same pixels again: the second run's result is replaced, the first's stays
    names = [layer.name for layer in viewer.layers]
    assert first in viewer.layers and second not in viewer.layers
    assert names.count("CC10 registered") == 1 and len([n for n in names if n.startswith("CC10 registered")]) == 2


def test_a_run_cancelled_midway_adds_nothing_and_keeps_the_previous_results(
    make_viewer,
    qtbot,
    lesion_pair,  # noqa: F811
):
    """Cancel pressed while the SimpleITK stages of a second run work: no result layer of it (not a warped image
    without its landmarks), and the first run's results as they were."""
    fixed, moving, lm_fixed, lm_moving = lesion_pair
    viewer = make_viewer()
    widget = RegistrationWidget(viewer)
    widget.fixed_picker.set_layer(viewer.add_image(fixed, name="HE", rgb=True))
    widget.moving_picker.set_layer(viewer.add_image(moving, name="CC10", rgb=True))
    widget.fixed_points.set_layer(viewer.add_points(lm_fixed[:, ::-1], name="lm HE"))
    widget.moving_points.set_layer(viewer.add_points(lm_moving[:, ::-1], name="lm CC10"))
    widget.method.setCurrentText("intensity")
    widget.show_grid.setChecked(True)
    _run(qtbot, widget)
    before = list(viewer.layers)
    summary = widget.summary.text()
    assert "TRE" in summary

    def cancel_at_the_stages(job, fraction, message) -> None:
        if message.startswith("intensity registration"):
            widget.runner.cancel()

    widget.runner._progressed.connect(cancel_at_the_stages)
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=180_000)
    assert widget.runner.state == "cancelled", widget.runner.widget.status.text()
    assert list(viewer.layers) == before
    # the previous run's layers stay, and so does what its summary says of them, said to be that run's
    shown = widget.summary.text()
    assert summary in shown and "cancelled" in shown.splitlines()[0], shown


def test_a_rerun_whose_result_layers_fail_midway_adds_none_and_keeps_the_previous_results(
    make_viewer,
    qtbot,
    lesion_pair,  # noqa: F811
):
    """A rerun whose deformation grid failed as it was added (another plugin's listener on the layer list raised,
    after napari had inserted it; it fails again when the previous grid is put back): the first run's results were
    removed, the new warped image stayed without its grid and landmarks, and the widget kept the new result as its
    last one. The layers are added all or none now: the viewer as before the rerun, the previous result and its
    summary kept, the failure said."""
    fixed, moving, lm_fixed, lm_moving = (x[::2, ::2] if x.ndim == 3 else x / 2 for x in lesion_pair)
    viewer = make_viewer()
    widget = RegistrationWidget(viewer)
    widget.fixed_picker.set_layer(viewer.add_image(fixed, name="HE", rgb=True))
    widget.moving_picker.set_layer(viewer.add_image(moving, name="CC10", rgb=True))
    widget.fixed_points.set_layer(viewer.add_points(lm_fixed[:, ::-1], name="lm HE"))
    widget.moving_points.set_layer(viewer.add_points(lm_moving[:, ::-1], name="lm CC10"))
    widget.method.setCurrentText("intensity")
    widget.show_grid.setChecked(True)
    _run(qtbot, widget)
    before = [(layer, layer.name) for layer in viewer.layers]
    result, errors = widget.last_result, widget.last_errors
    summary = widget.summary.text()

    def refused(event) -> None:
        if "grid" in event.value.name:
            raise RuntimeError("the grid could not be shown")

    viewer.layers.events.inserted.connect(refused, position="last")
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=180_000)
    assert widget.runner.state == "failed", widget.runner.widget.status.text()
    assert "the grid could not be shown" in widget.runner.widget.status.text()
    assert [(layer, layer.name) for layer in viewer.layers] == before
    assert widget.last_result is result and widget.last_errors == errors
    shown = widget.summary.text()
    assert summary in shown and "failed, its results not added" in shown.splitlines()[0], shown
    viewer.layers.events.inserted.disconnect(refused)  # the next run replaces the first run's results as ever
    _run(qtbot, widget)
    names = [layer.name for layer in viewer.layers]
    assert names.count("CC10 registered") == 1 and "CC10 registered [1]" not in names, names
    assert all(layer not in viewer.layers for layer, name in before if "registered" in name or "grid" in name)
