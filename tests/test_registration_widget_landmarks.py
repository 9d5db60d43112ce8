"""The Registration widget's landmark Points layers as a user makes them: on a stack's view (3D points), over scaled,
moved and rotated images laid side by side, with features; empty ones. Run under a display:
``xvfb-run -a python -m pytest tests/test_registration_widget_landmarks.py``."""

from __future__ import annotations

import napari.layers
import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from napari_promptseg._widgets.registration import RegistrationWidget
from napari_promptseg._widgets.registration.planes import _landmarks
from napari_promptseg.io import read_image
from napari_promptseg.io.landmarks import read_landmarks
from napari_promptseg.io.layer_objects import layer_prompts

pytestmark = pytest.mark.gui

ROOT = "registration_cima_lung_lesion_1/scale-5pc"
HE, CC10 = "29-041-Izd2-w35-He-les1_gaussian-filtered", "29-041-Izd2-w35-Cc10-5-les1"


@pytest.fixture(scope="module")
def lesion_pair(shared_data):
    """The CIMA lung lesion's H&E and CC10 sections at 2.5 % (367 x 445 px) and their 78 landmarks (x, y)."""
    root = shared_data / ROOT
    images = [read_image(root / f"{stem}.jpg")[::2, ::2] for stem in (HE, CC10)]
    xy = [read_landmarks(root / f"{stem}.csv").xy / 2 for stem in (HE, CC10)]
    return images[0], images[1], xy[0], xy[1]


def _world(layer: napari.layers.Layer, coords: np.ndarray) -> np.ndarray:
    return np.array([layer.data_to_world(p) for p in coords])


def _wait(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=180_000)


def _on_a_stack_view(viewer, image_layer, xy, name, plane, **kwargs) -> napari.layers.Points:
    """Points clicked on ``image_layer`` while a stack is in the viewer: a 3D layer (plane, row, column) in world
    coordinates, as napari's new-points button makes one."""
    world = _world(image_layer, np.asarray(xy)[:, ::-1])[:, -2:]
    return viewer.add_points(np.c_[np.full(len(world), plane), world], name=name, ndim=3, **kwargs)


def test_landmarks_clicked_on_a_stack_view_over_placed_images_register_and_keep_their_features(
    make_viewer, qtbot, lesion_pair
):
    fixed, moving, lm_fixed, lm_moving = lesion_pair
    viewer = make_viewer()
    viewer.add_image(np.zeros((4, 60, 60), np.uint8), name="stack")  # makes new Points layers 3D
    fixed_layer = viewer.add_image(fixed, name="HE", rgb=True, scale=(2, 2), translate=(30, -40), rotate=12)
    moving_layer = viewer.add_image(moving, name="CC10", rgb=True, translate=(0, 1000))  # beside the fixed one
    ids = [f"L{k}" for k in range(len(lm_moving))]
    fixed_points = _on_a_stack_view(viewer, fixed_layer, lm_fixed, "lm HE", 2, properties={"id": ids})
    moving_points = _on_a_stack_view(viewer, moving_layer, lm_moving, "lm CC10", 1, features={"id": ids}, text="id")
    # what the widget reads is what the console's segment() reads of the same Points layers over the same images
    landmarks, truncated, outside = _landmarks(fixed_points, moving_points, fixed_layer, moving_layer)
    for xy, points, image, expected in zip(
        landmarks, (fixed_points, moving_points), (fixed_layer, moving_layer), (lm_fixed, lm_moving), strict=True
    ):
        console = layer_prompts(image, None, points, None).points
        np.testing.assert_allclose(xy, console, atol=1e-9)
        np.testing.assert_allclose(xy, expected, atol=1e-6)
    assert truncated == "" and outside == []

    widget = RegistrationWidget(viewer)
    widget.fixed_picker.set_layer(fixed_layer)
    widget.moving_picker.set_layer(moving_layer)
    widget.fixed_points.set_layer(fixed_points)
    widget.moving_points.set_layer(moving_points)
    widget.method.setCurrentText("intensity")
    widget.run()
    _wait(qtbot, widget)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    after = widget.last_errors["after"]["tre_mean"]
    assert after < 8.0 and widget.last_errors["before"]["tre_mean"] > 3 * after, widget.last_errors
    mapped = viewer.layers["CC10 landmarks registered"]
    assert list(mapped.features["id"]) == ids and mapped.text.string.feature == "id"
    # where napari shows them: on the fixed landmarks (world units: 2 per fixed pixel)
    error = np.linalg.norm(_world(mapped, mapped.data) - _world(fixed_points, fixed_points.data)[:, -2:], axis=1)
    assert error.mean() == pytest.approx(2 * after, rel=1e-6)


def test_empty_landmark_layers_are_each_named(make_viewer, lesion_pair):
    """Both landmark layers empty: only the fixed one was named, and emptying it next refused the run again."""
    fixed, moving, _, lm_moving = lesion_pair
    viewer = make_viewer()
    errors: list[str] = []
    notification_manager.notification_ready.connect(
        lambda n: errors.append(n.message) if n.severity == NotificationSeverity.ERROR else None
    )
    widget = RegistrationWidget(viewer)
    widget.fixed_picker.set_layer(viewer.add_image(fixed, name="HE", rgb=True))
    widget.moving_picker.set_layer(viewer.add_image(moving, name="CC10", rgb=True))
    widget.fixed_points.set_layer(viewer.add_points(np.zeros((0, 2)), name="lm HE"))
    widget.moving_points.set_layer(viewer.add_points(np.zeros((0, 3)), ndim=3, name="lm CC10"))
    widget.run()
    assert not widget.runner.busy and widget.runner.state == "failed"
    assert errors and "'lm HE'" in errors[-1] and "'lm CC10'" in errors[-1], errors


def test_landmark_layers_of_unequal_counts_say_which_points_are_compared_and_which_not(shared_data):
    """BIRL's rat-kidney landmarks, 71 on the H&E and 69 on the PanCytokeratin: the widget compared the first 69 and
    said only "comparing the first 69", where the CLI refuses the pair unless --truncate-landmarks. It says which
    points are left out of the TRE now (the fixed layer's last two: ignored; the moving layer's extra: mapped, not
    compared), the matching rule unchanged (by order, the first min(n))."""
    root = shared_data / "registration_birl" / "data-images" / "rat-kidney_" / "scale-5pc"
    he, ck = (read_landmarks(root / f"Rat-Kidney_{stem}.csv").xy for stem in ("HE", "PanCytokeratin"))
    image = napari.layers.Image(np.zeros((800, 900, 3), np.uint8), rgb=True)
    fixed, moving = napari.layers.Points(he[:, ::-1], name="HE lm"), napari.layers.Points(ck[:, ::-1], name="CK lm")
    (a, b), said, _ = _landmarks(fixed, moving, image, image)
    assert (len(a), len(b)) == (69, 69)
    np.testing.assert_allclose(a, he[:69])
    assert "'HE lm' has 71 points, 'CK lm' has 69; comparing the first 69" in said, said
    assert "the last 2 points of 'HE lm' (data[69:]) have no partner: left out of the TRE" in said, said
    fewer = napari.layers.Points(he[:60, ::-1], name="HE first 60")
    (a, b), said, _ = _landmarks(fewer, moving, image, image)
    assert (len(a), len(b)) == (60, 69)  # every moving point is still mapped
    assert "the last 9 points of 'CK lm' (data[60:]) have no partner: mapped, left out of the TRE" in said, said
    one = napari.layers.Points(he[:70, ::-1], name="HE 70")
    _, said, _ = _landmarks(one, moving, image, image)
    assert "the last point of 'HE 70' (data[69:]) has no partner: left out of the TRE" in said, said
