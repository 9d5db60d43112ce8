"""The Registration widget in a real napari viewer on a real histology image with a known affine.

Run under a display: ``xvfb-run -a python -m pytest tests/test_registration_widget.py``. The widget test uses the
SimpleITK method (seconds); the prompt method goes through the same ``register`` call (tested in
test_registration.py) and its region-pair display is checked here with pairs given directly.
"""

from __future__ import annotations

import numpy as np
import pytest
from napari.qt.threading import WorkerBase
from napari.utils.notifications import NotificationSeverity, notification_manager

from napari_promptseg._widgets.registration import RegistrationWidget, deformation_grid, pair_labels
from napari_promptseg.io import read_image
from napari_promptseg.io.landmarks import read_landmarks
from napari_promptseg.methods.registration import DEFAULT_METHOD, register
from napari_promptseg.methods.warp import Deformation

pytestmark = pytest.mark.gui

AFFINE = np.array([[0.97, -0.12, 20.0], [0.10, 1.02, -12.0], [0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def pair(shared_data):
    root = shared_data / "registration_birl" / "data-images"
    fixed = read_image(root / "images" / "artificial_reference.jpg")[::3, ::3]
    landmarks = read_landmarks(root / "landmarks" / "artificial_reference.csv").xy / 3
    s = Deformation.from_pixel_affine(AFFINE, fixed.shape[:2], fixed.shape[:2])  # moving grid -> fixed frame
    moving = s.warp_image(fixed)
    moving_landmarks = s.points_to_fixed(landmarks)  # where the fixed landmarks are in the moving image
    return fixed, moving, landmarks, moving_landmarks


@pytest.fixture
def make_viewer(make_napari_viewer):
    yield make_napari_viewer
    WorkerBase.await_workers(msecs=120_000)


def _wait(qtbot, widget, timeout=180_000):
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=timeout)


def test_widget_registers_and_maps_landmarks(make_viewer, qtbot, pair):
    fixed, moving, lm_fixed, lm_moving = pair
    viewer = make_viewer()
    fixed_layer = viewer.add_image(fixed, name="fixed", rgb=True)
    moving_layer = viewer.add_image(moving, name="moving", rgb=True)
    viewer.add_points(lm_fixed[:, ::-1], name="lm fixed")
    viewer.add_points(lm_moving[:, ::-1], name="lm moving")
    widget = RegistrationWidget(viewer)
    assert widget.method.currentText() == DEFAULT_METHOD  # one default: Python register(), CLI and widget
    widget.fixed_picker.set_layer(fixed_layer)
    widget.moving_picker.set_layer(moving_layer)
    widget.fixed_points.set_layer(viewer.layers["lm fixed"])
    widget.moving_points.set_layer(viewer.layers["lm moving"])
    widget.method.setCurrentText("intensity")
    widget.show_grid.setChecked(True)
    widget.run()
    _wait(qtbot, widget)
    assert widget.last_result is not None
    warped = viewer.layers["moving registered"]
    assert warped.data.shape == fixed.shape and warped.opacity == 0.5
    assert "deformation grid" in viewer.layers
    mapped = viewer.layers["landmarks (moving -> fixed)"].data[:, ::-1]
    assert np.linalg.norm(mapped - lm_fixed, axis=1).mean() < 3.0
    errors = widget.last_errors
    assert errors["before"]["tre_mean"] > 10 and errors["after"]["tre_mean"] < 3.0
    assert "TRE" in widget.summary.text()
    # the user's layers are untouched
    assert viewer.layers["moving"].data is moving_layer.data and np.array_equal(moving_layer.data, moving)


def test_widget_refuses_a_stack_and_mismatched_landmarks(make_viewer, qtbot, pair):
    fixed, moving, lm_fixed, lm_moving = pair
    viewer = make_viewer()
    errors = []
    notification_manager.notification_ready.connect(
        lambda n: errors.append(n.message) if n.severity == NotificationSeverity.ERROR else None
    )
    viewer.add_image(np.zeros((3, 40, 50)), name="stack")
    viewer.add_image(fixed[..., 0], name="fixed")
    widget = RegistrationWidget(viewer)
    widget.fixed_picker.set_layer(viewer.layers["fixed"])
    widget.moving_picker.set_layer(viewer.layers["stack"])
    widget.run()
    assert any("moving layer 'stack' has 3 spatial dimensions" in m for m in errors)
    assert not widget.runner.busy
    viewer.add_image(moving[..., 0], name="moving")
    viewer.add_points(lm_fixed[:, ::-1], name="a")
    viewer.add_points(lm_moving[:5, ::-1], name="b")
    widget.moving_picker.set_layer(viewer.layers["moving"])
    widget.fixed_points.set_layer(viewer.layers["a"])
    widget.moving_points.set_layer(viewer.layers["b"])
    widget.run()
    assert any("landmark count mismatch: 'a' has 12 points, 'b' has 5" in m for m in errors)


def test_region_pairs_are_colour_matched_and_grid_follows_the_transform(pair):
    fixed, moving, _, _ = pair
    shape = fixed.shape[:2]
    s = Deformation.from_pixel_affine(AFFINE, shape, shape)
    regions = np.zeros(shape, np.uint8)
    regions[25:80, 40:120], regions[110:170, 130:220] = 1, 2
    moved = s.warp_labels(regions)
    result = register(fixed, moving, prompts=[(regions == i, moved == i) for i in (1, 2)], method="prompts")
    fixed_labels, moving_labels = pair_labels(result, shape, shape)
    for k in (1, 2):  # pair k has the same id on both sides, at the places of its two masks
        assert ((fixed_labels == k) == (regions == k)).mean() > 0.99
        assert ((moving_labels == k) == (moved == k)).mean() > 0.99
    paths = deformation_grid(result, shape, lines=3)
    assert len(paths) == 6 and all(p.shape == (64, 2) for p in paths)
    # paths are in the fixed frame: sent back to the moving image they are the regular grid lines again
    back = result.fixed_points_to_moving(paths[1][:, ::-1])  # the middle horizontal line
    np.testing.assert_allclose(back[:, 1], (shape[0] - 1) / 2, atol=0.05)
    np.testing.assert_allclose(back[:, 0], np.linspace(0, shape[1] - 1, 64), atol=0.05)
    # and they follow the transform: the middle of the moving image lands where the known affine puts it
    centre = np.array([np.linspace(0, shape[1] - 1, 64)[32], (shape[0] - 1) / 2, 1.0])
    np.testing.assert_allclose(paths[1][32][::-1], (AFFINE @ centre)[:2], atol=4.0)


def test_widget_text_prompts_reach_register(make_viewer, qtbot, pair):
    """The comma-separated text prompts go to register(): with no text-model weights the (new, isolated) default
    reference library answers; it holds only the starter 'nucleus' exemplar, so 'gland' is refused by name, before
    any model loads, and the error reaches the user."""
    fixed, moving, _, _ = pair
    viewer = make_viewer()
    errors = []
    notification_manager.notification_ready.connect(
        lambda n: errors.append(n.message) if n.severity == NotificationSeverity.ERROR else None
    )
    widget = RegistrationWidget(viewer)
    widget.fixed_picker.set_layer(viewer.add_image(fixed[..., 0], name="fixed"))
    widget.moving_picker.set_layer(viewer.add_image(moving[..., 0], name="moving"))
    widget.text_prompts.setText(" gland,, nuclei ")
    assert widget.prompts() == ["gland", "nuclei"]
    widget.method.setCurrentText("intensity")
    widget.run()
    assert any("text prompts gland, nuclei: choose a prompts method" in m for m in errors)
    widget.method.setCurrentText("prompts")
    widget.run()
    _wait(qtbot, widget)
    assert any("no reference-library entry matches 'gland'" in m for m in errors), errors
    assert widget.last_result is None and widget.runner.state == "failed"
