"""The Registration widget in a real napari viewer on a real histology image with a known affine.

Run under a display: ``xvfb-run -a python -m pytest tests/test_registration_widget.py``. The widget test uses the
SimpleITK method (seconds); the prompt method goes through the same ``register`` call (tested in
test_registration.py); its region-pair display is checked with pairs given directly and, through the widget with the
default method and automatic regions, against a known transform.
"""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from napari_promptseg._widgets.registration import RegistrationWidget, deformation_grid, pair_labels
from napari_promptseg.errors import PromptsegError
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
    widget.show_grid.setChecked(True)
    fractions: list[float] = []  # emitted by the worker thread, in order
    widget.runner._progressed.connect(lambda job, fraction, message: fractions.append(fraction))
    widget.run()
    _wait(qtbot, widget)
    # register's "done" (1.0) came before the warp's 0.97: the bar went backwards
    assert fractions and all(b >= a for a, b in zip(fractions, fractions[1:], strict=False)), fractions
    assert widget.last_result is not None and widget.last_result.method == "intensity"  # auto, no text prompts
    warped = viewer.layers["moving registered"]
    assert warped.data.shape == fixed.shape and warped.opacity == 0.5
    assert "moving deformation grid" in viewer.layers
    mapped = viewer.layers["moving landmarks registered"].data[:, ::-1]
    assert np.linalg.norm(mapped - lm_fixed, axis=1).mean() < 3.0
    errors = widget.last_errors
    assert errors["before"]["tre_mean"] > 10 and errors["after"]["tre_mean"] < 3.0
    assert "TRE" in widget.summary.text() and "quality: good" in widget.summary.text()
    # the user's layers are untouched
    assert viewer.layers["moving"].data is moving_layer.data and np.array_equal(moving_layer.data, moving)


def test_widget_refuses_a_stack_and_empty_landmarks(make_viewer, qtbot, pair, tmp_path):
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
    viewer.add_points(np.zeros((0, 2)), name="b")
    widget.moving_picker.set_layer(viewer.layers["moving"])
    widget.fixed_points.set_layer(viewer.layers["a"])
    widget.moving_points.set_layer(viewer.layers["b"])
    widget.run()
    assert any("landmark layer 'b' has no points" in m for m in errors)
    assert not widget.runner.busy
    # the regions' segmenter is the model box's (the CLI's --model): offline, one whose weights are missing is named
    widget.fixed_points.set_layer(None)
    widget.moving_points.set_layer(None)
    widget.method.setCurrentText("prompts")
    widget.model.setCurrentIndex(widget.model.findData("sam_vit_b"))
    widget.run()
    _wait(qtbot, widget)
    assert widget.runner.state == "failed" and any("sam_vit_b" in m for m in errors), errors
    # its weights file (the CLI's --weights), one that does not exist: refused before the run starts
    missing = tmp_path / "missing.pth"
    widget.model.weights_file.set_path(str(missing))
    widget.run()
    assert not widget.runner.busy and widget.runner.state == "failed"
    said = widget.runner.widget.details or widget.runner.widget.status.text()
    assert f"sam_vit_b: weights file {missing} does not exist" in said, said


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * (a & b).sum() / max(1, a.sum() + b.sum())


def test_region_pairs_are_warped_hidden_colour_matched_and_replaced_by_a_rerun(make_viewer, qtbot, pair):
    """Issue 14, defect 5: the moving regions are shown warped into the fixed frame (they land where the known
    transform puts them, unlike the unwarped ones), hidden by default, pair k in one colour on both sides; a rerun
    replaces this widget's result layers and nothing else; landmark layers of unequal counts (BIRL kidney: 71 vs
    69) are compared over the first min(n), and the summary says so. prompts+intensity, automatic LiteMedSAM
    regions (the default method runs them only for text prompts)."""
    fixed = pair[0]
    shape = fixed.shape[:2]
    c, s = np.cos(np.radians(8)), np.sin(np.radians(8))
    affine = np.array([[c, -s, 30.0], [s, c, -25.0], [0.0, 0.0, 1.0]])  # fixed pixel -> moving pixel
    to_moving = Deformation.from_pixel_affine(affine, shape, shape)
    moving = to_moving.warp_image(fixed)
    truth = Deformation.from_pixel_affine(np.linalg.inv(affine), shape, shape)  # moving content -> fixed frame
    lm_fixed = pair[2]
    lm_moving = to_moving.points_to_fixed(lm_fixed)[:10]  # 12 fixed landmarks, 10 moving ones
    viewer = make_viewer()
    fixed_layer = viewer.add_image(fixed, name="fixed", rgb=True)
    moving_layer = viewer.add_image(moving, name="moving", rgb=True)
    viewer.add_points(lm_fixed[:, ::-1], name="lm fixed")
    viewer.add_points(lm_moving[:, ::-1], name="lm moving")
    mine = viewer.add_labels(np.zeros(shape, np.uint8), name="moving region pairs (fixed)")  # the user's own layer
    widget = RegistrationWidget(viewer)
    widget.fixed_picker.set_layer(fixed_layer)
    widget.moving_picker.set_layer(moving_layer)
    widget.fixed_points.set_layer(viewer.layers["lm fixed"])
    widget.moving_points.set_layer(viewer.layers["lm moving"])
    assert widget.method.currentText() == DEFAULT_METHOD and not widget.show_pairs.isChecked()
    widget.method.setCurrentText("prompts+intensity")
    user_layers = list(viewer.layers)

    def ours():
        return [layer for layer in viewer.layers if not any(layer is u for u in user_layers)]

    widget.run()
    _wait(qtbot, widget)
    result = widget.last_result
    assert result is not None and len(result.pairs) >= 2, widget.summary.text()
    first = ours()
    assert {layer.name for layer in first} == {
        "moving registered",
        "moving region pairs (fixed) [1]",  # napari's suffix: the user's layer keeps its name
        "moving region pairs (warped)",
        "moving landmarks registered",
    }
    fixed_regions = next(layer for layer in first if layer.name.startswith("moving region pairs (fixed)"))
    warped_regions = viewer.layers["moving region pairs (warped)"]
    assert not fixed_regions.visible and not warped_regions.visible
    assert warped_regions.data.shape == shape and np.allclose(warped_regions.scale, fixed_layer.scale)
    _, unwarped = pair_labels(result, shape, shape)
    expected = truth.warp_labels(unwarped)  # where the moving regions belong in the fixed frame
    for k in range(1, len(result.pairs) + 1):
        if (unwarped == k).sum() < 200:
            continue  # covered by smaller regions drawn on top
        after = _dice(warped_regions.data == k, expected == k)
        before = _dice(unwarped == k, expected == k)
        assert after > 0.9 and after > before + 0.1, (k, before, after)
        assert np.allclose(fixed_regions.get_color(k), warped_regions.get_color(k))  # pair k: one colour
    text = widget.summary.text()
    assert "'lm fixed' has 12 points, 'lm moving' has 10; comparing the first 10" in text, text
    assert "over the first 10 landmarks" in text
    assert widget.last_errors["before"]["tre_mean"] > 20 and widget.last_errors["after"]["tre_mean"] < 3.0

    widget.run()  # the same again: one set of result layers, the user's layers untouched
    _wait(qtbot, widget)
    second = ours()
    assert len(second) == len(first) and not any(layer is old for layer in second for old in first)
    assert sorted(layer.name for layer in second) == sorted(layer.name for layer in first)
    assert all(any(u is layer for layer in viewer.layers) for u in user_layers)
    assert viewer.layers["moving region pairs (fixed)"] is mine and not mine.data.any()
    assert np.array_equal(moving_layer.data, moving)


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
    for method in ("prompts", "auto"):  # auto with text prompts is prompts+intensity
        errors.clear()
        widget.method.setCurrentText(method)
        widget.run()
        _wait(qtbot, widget)
        assert any("no reference-library entry matches 'gland'" in m for m in errors), (method, errors)
        assert widget.last_result is None and widget.runner.state == "failed"


def test_widget_compares_the_first_landmarks_of_the_kidney_pair(make_viewer, qtbot, shared_data):
    """BIRL's rat-kidney pair has 71 and 69 landmarks (only the first 69 correspond, as ANHIR evaluates): the widget
    compares the first 69, says so, and the error drops (the CLI's --truncate-landmarks gives the same numbers)."""
    root = shared_data / "registration_birl" / "data-images" / "rat-kidney_" / "scale-5pc"
    viewer = make_viewer()
    layers = {}
    for role, stem in (("fixed", "Rat-Kidney_HE"), ("moving", "Rat-Kidney_PanCytokeratin")):
        layers[role] = viewer.add_image(read_image(root / f"{stem}.jpg"), name=role, rgb=True)
        layers[f"{role} landmarks"] = viewer.add_points(read_landmarks(root / f"{stem}.csv").xy[:, ::-1], name=stem)
    assert (len(layers["fixed landmarks"].data), len(layers["moving landmarks"].data)) == (71, 69)
    widget = RegistrationWidget(viewer)
    widget.fixed_picker.set_layer(layers["fixed"])
    widget.moving_picker.set_layer(layers["moving"])
    widget.fixed_points.set_layer(layers["fixed landmarks"])
    widget.moving_points.set_layer(layers["moving landmarks"])
    widget.method.setCurrentText("intensity")
    widget.run()
    _wait(qtbot, widget)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    text = widget.summary.text()
    assert "'Rat-Kidney_HE' has 71 points, 'Rat-Kidney_PanCytokeratin' has 69; comparing the first 69" in text, text
    assert "the last 2 points of 'Rat-Kidney_HE' (data[69:]) have no partner: left out of the TRE" in text, text
    assert len(viewer.layers["moving landmarks registered"].data) == 69
    before, after = widget.last_errors["before"]["tre_mean"], widget.last_errors["after"]["tre_mean"]
    assert before > 20 and after < 0.5 * before, (before, after)


def test_a_rerun_keeps_renamed_or_edited_results_and_input_errors_reach_the_status_line(make_viewer, qtbot, pair):
    """A rerun removed the previous results even when the user had renamed the mapped landmarks and added a point
    (no undo); only results still as the widget made them are replaced now. An input error left the status line on
    how the previous run ended."""
    fixed, moving, lm_fixed, lm_moving = pair
    viewer = make_viewer()
    widget = RegistrationWidget(viewer)
    widget.fixed_picker.set_layer(viewer.add_image(fixed, name="fixed", rgb=True))
    widget.moving_picker.set_layer(viewer.add_image(moving, name="moving", rgb=True))
    widget.fixed_points.set_layer(viewer.add_points(lm_fixed[:, ::-1], name="lm fixed"))
    widget.moving_points.set_layer(viewer.add_points(lm_moving[:, ::-1], name="lm moving"))
    widget.show_grid.setChecked(True)
    widget.run()
    _wait(qtbot, widget)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    corrected = viewer.layers["moving landmarks registered"]
    corrected.name = "my corrected landmarks"
    corrected.add(np.array([[50.0, 60.0]]))
    points = corrected.data.copy()
    grid = viewer.layers["moving deformation grid"]  # edited in place, name unchanged
    grid.selected_data = {0}
    grid.remove_selected()
    unchanged = viewer.layers["moving registered"]
    widget.run()
    _wait(qtbot, widget)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    names = [layer.name for layer in viewer.layers]
    assert viewer.layers["my corrected landmarks"] is corrected and np.array_equal(corrected.data, points)
    assert viewer.layers["moving deformation grid"] is grid and len(grid.data) == 2 * 12 - 1
    assert "moving deformation grid [1]" in names and "moving landmarks registered" in names  # the new results beside
    assert unchanged not in viewer.layers and names.count("moving registered") == 1
    # the third run replaces only the second run's untouched results
    widget.run()
    _wait(qtbot, widget)
    assert sorted(names) == sorted(layer.name for layer in viewer.layers)
    # an input error: the status line says this attempt failed, not how the last run ended
    viewer.add_image(np.zeros((3, 40, 50)), name="stack")
    widget.moving_picker.set_layer(viewer.layers["stack"])
    widget.run()
    status = widget.runner.widget.status.text()
    assert widget.runner.state == "failed" and status.startswith("failed: registration: moving layer 'stack'"), status
    assert widget.summary.text() == ""


def test_from_the_plugins_menu_a_rerun_replaces_its_results_and_the_pair_starts_on_two_images(make_viewer, qtbot, pair):
    """napari hands a plugin's widget a proxy viewer whose calls return new proxy objects: the results a run
    added were never found again, so every rerun piled up "moving registered [1]", "[2]"... And fixed and moving
    both started on the first image, so the first press failed with "the same layer"."""
    fixed, moving, _, _ = pair
    viewer = make_viewer()
    viewer.add_image(fixed, name="fixed", rgb=True)
    viewer.add_image(moving, name="moving", rgb=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-promptseg", "Registration")
    assert widget.fixed_picker.layer().name == "fixed" and widget.moving_picker.layer().name == "moving"
    widget.method.setCurrentText("intensity")
    for _ in range(2):
        widget.run()
        _wait(qtbot, widget)
        assert widget.runner.state == "done", widget.runner.widget.status.text()
    assert [layer.name for layer in viewer.layers].count("moving registered") == 1
    assert "moving registered [1]" not in [layer.name for layer in viewer.layers]
    # two images added after the widget opened (a sample's pair): still two different layers
    viewer.layers.clear()
    viewer.add_image(fixed, name="a", rgb=True)
    viewer.add_image(moving, name="b", rgb=True)
    assert widget.fixed_picker.layer().name == "a" and widget.moving_picker.layer().name == "b"


def _quadrant_labels(image: np.ndarray) -> np.ndarray:
    """The image's objects (darker than its white field) cut into four ids by quadrant."""
    h, w = image.shape[:2]
    ys, xs = np.mgrid[:h, :w]
    ids = 1 + (ys >= h // 2) * 2 + (xs >= w // 2)
    return np.where(image.mean(-1) < 200, ids, 0).astype(np.uint16)


def test_moving_labels_and_points_are_carried_onto_the_fixed_image(make_viewer, qtbot, pair):
    """Annotations drawn on the moving image come back on the fixed one: labels (each id on its fixed counterpart,
    also from a coarser labels layer with a scale of its own) and moving points without fixed ones (no TRE)."""
    fixed, moving, _, lm_moving = pair
    fixed_labels = _quadrant_labels(fixed)
    s = Deformation.from_pixel_affine(AFFINE, fixed.shape[:2], fixed.shape[:2])
    moving_labels = s.warp_labels(fixed_labels)
    viewer = make_viewer()
    fixed_layer = viewer.add_image(fixed, name="fixed", rgb=True)
    moving_layer = viewer.add_image(moving, name="moving", rgb=True)
    drawn = viewer.add_labels(moving_labels.copy(), name="cells")
    viewer.add_points(lm_moving[:, ::-1], name="points on moving")
    widget = RegistrationWidget(viewer)
    widget.fixed_picker.set_layer(fixed_layer)
    widget.moving_picker.set_layer(moving_layer)
    widget.moving_points.set_layer(viewer.layers["points on moving"])
    widget.moving_labels.set_layer(drawn)
    widget.run()
    _wait(qtbot, widget)
    warped = viewer.layers["cells registered"]
    assert warped.data.shape == fixed.shape[:2] and warped.data.dtype == np.uint16
    assert set(np.unique(warped.data)) <= {0, 1, 2, 3, 4}  # ids kept, never blended
    for k in range(1, 5):
        after, before = _dice(warped.data == k, fixed_labels == k), _dice(moving_labels == k, fixed_labels == k)
        assert after > 0.95 and before < after - 0.05, (k, before, after)  # the registration did the work
    assert "labels 'cells': 4 of 4 ids inside the fixed image" in widget.summary.text()
    assert "moving landmarks registered" in viewer.layers and "TRE" not in widget.summary.text()
    assert np.array_equal(drawn.data, moving_labels)  # the user's labels untouched
    # labels painted at half the resolution, shown over the moving image by their scale: resampled through it
    coarse = viewer.add_labels(moving_labels[::2, ::2].copy(), name="coarse", scale=(2, 2))
    widget.moving_labels.set_layer(coarse)
    widget.run()
    _wait(qtbot, widget)
    for k in range(1, 5):
        assert _dice(viewer.layers["coarse registered"].data == k, fixed_labels == k) > 0.93, k
    assert "cells registered" not in viewer.layers  # the previous run's result, unchanged: replaced
    # a stack of labels is refused with the layer's name
    errors = []
    notification_manager.notification_ready.connect(
        lambda n: errors.append(n.message) if n.severity == NotificationSeverity.ERROR else None
    )
    widget.moving_labels.set_layer(viewer.add_labels(np.zeros((2, 30, 40), np.uint8), name="stack"))
    widget.run()
    assert any("labels layer 'stack' has 3 dimensions" in m for m in errors) and not widget.runner.busy


def test_moving_shapes_are_carried_onto_the_fixed_image_with_their_style(make_viewer, qtbot, pair):
    """A Shapes layer drawn on the moving image (with a scale of its own) comes back over the fixed image: each
    outline where the known affine puts it (a polygon, a rectangle, an ellipse and a path), densified, with its
    colours and features; the user's layer untouched; an empty or 3D shapes layer is refused by name."""
    import pandas as pd
    from skimage.draw import polygon as fill_polygon

    fixed, moving, _, _ = pair
    s = Deformation.from_pixel_affine(AFFINE, fixed.shape[:2], fixed.shape[:2])
    shape = fixed.shape[:2]

    def on_moving(rows_cols):  # fixed-frame vertices -> where they are in the moving image, halved (scale 2)
        return s.points_to_fixed(np.asarray(rows_cols, float)[:, ::-1])[:, ::-1] / 2

    triangle = [[30, 40], [90, 60], [40, 150]]
    box = [[120, 120], [120, 220], [180, 220], [180, 120]]
    ellipse_box = [[40, 200], [40, 280], [90, 280], [90, 200]]  # an ellipse's four corners, as napari keeps them
    path = [[150, 20], [160, 100], [200, 60]]
    viewer = make_viewer()
    fixed_layer = viewer.add_image(fixed, name="fixed", rgb=True)
    moving_layer = viewer.add_image(moving, name="moving", rgb=True)
    drawn = viewer.add_shapes(
        [on_moving(v) for v in (triangle, box, ellipse_box, path)],
        shape_type=["polygon", "rectangle", "ellipse", "path"],
        edge_color=["red", "green", "blue", "yellow"],
        features=pd.DataFrame({"class": ["tumour", "stroma", "vessel", "margin"]}),
        scale=(2, 2),
        name="regions",
    )
    given = [d.copy() for d in drawn.data]
    widget = RegistrationWidget(viewer)
    widget.fixed_picker.set_layer(fixed_layer)
    widget.moving_picker.set_layer(moving_layer)
    widget.moving_shapes.set_layer(drawn)
    widget.run()
    _wait(qtbot, widget)
    carried = viewer.layers["regions registered"]
    assert carried.shape_type == ["polygon", "polygon", "polygon", "path"]
    assert list(carried.features["class"]) == ["tumour", "stroma", "vessel", "margin"]
    assert np.allclose(carried.edge_color, drawn.edge_color)
    assert "shapes 'regions': 4 carried into the fixed frame" in widget.summary.text()

    def filled(rows_cols):
        mask = np.zeros(shape, bool)
        rc = np.asarray(rows_cols, float)
        mask[fill_polygon(rc[:, 0], rc[:, 1], shape)] = True
        return mask

    t = np.linspace(0, 2 * np.pi, 200)
    ellipse = np.stack([65 + 25 * np.sin(t), 240 + 40 * np.cos(t)], 1)
    for k, expected in enumerate((triangle, box, ellipse)):
        data = carried.data[k]
        assert len(data) > len(given[k])  # densified: the deformation may bend every edge
        assert _dice(filled(data), filled(expected)) > 0.95, k
        assert _dice(filled(given[k] * 2), filled(expected)) < 0.85, k  # the registration did the work
    assert np.abs(carried.data[3][[0, -1]] - np.array(path)[[0, -1]]).max() < 3.0  # the path's ends
    assert all(np.array_equal(a, b) for a, b in zip(drawn.data, given, strict=True))  # the user's shapes untouched
    errors = []
    notification_manager.notification_ready.connect(
        lambda n: errors.append(n.message) if n.severity == NotificationSeverity.ERROR else None
    )
    widget.moving_shapes.set_layer(viewer.add_shapes(name="empty"))
    widget.run()
    assert any("shapes layer 'empty' has no shapes" in m for m in errors) and not widget.runner.busy
    stack = viewer.add_shapes([np.array([[0, 5, 5], [0, 20, 5], [0, 20, 20]])], shape_type="polygon", name="3d")
    widget.moving_shapes.set_layer(stack)
    widget.run()
    assert any("shapes layer '3d' has 3 dimensions" in m for m in errors) and not widget.runner.busy


def test_widget_text_prompts_are_answered_from_the_library_given(make_viewer, qtbot, pair, tmp_path):
    """The widget's text prompts were always answered from the default library: the library the Text prompt widget
    and `promptseg register --library DIR` name could not be given. An empty one is now read, and said to be empty,
    naming it, before any model loads."""
    fixed, moving, _, _ = pair
    viewer = make_viewer()
    widget = RegistrationWidget(viewer)
    widget.fixed_picker.set_layer(viewer.add_image(fixed[..., 0], name="fixed"))
    widget.moving_picker.set_layer(viewer.add_image(moving[..., 0], name="moving"))
    widget.text_prompts.setText("gland")
    widget.method.setCurrentText("prompts")
    widget.library.setText(str(tmp_path / "empty"))
    widget.run()
    _wait(qtbot, widget)
    assert widget.runner.state == "failed"
    details = f"{widget.runner.widget.status.text()} {widget.runner.widget.details}"
    assert "has no entries" in details and str(tmp_path / "empty") in details, details


def test_advanced_settings_reach_register_as_the_cli_builds_them(make_viewer, qtbot, pair, monkeypatch, tmp_path):
    """The widget had none of `promptseg register`'s --no-dense, --smoothness, --box-threshold, --text-threshold and
    --heatmap-threshold: it always ran register() with their defaults. Its advanced section sets them now, and
    register() gets the options and text options the CLI builds from the same settings (one rule for both); each
    is enabled only where the run uses it."""
    from napari_promptseg._widgets.registration import widget as widget_module
    from napari_promptseg.cli import build_parser
    from napari_promptseg.cli.register import register_settings

    calls = []

    def register_called(*args, **kwargs):  # the wiring is what is checked here: register() itself is not run
        calls.append(kwargs)
        raise PromptsegError("register reached")

    monkeypatch.setattr(widget_module, "register", register_called)

    def cli_settings(*flags: str):
        return register_settings(build_parser().parse_args(["register", "f.png", "m.png", "-o", "out", *flags]))

    fixed, moving, _, _ = pair
    viewer = make_viewer()
    widget = RegistrationWidget(viewer)
    widget.fixed_picker.set_layer(viewer.add_image(fixed[..., 0], name="fixed"))
    widget.moving_picker.set_layer(viewer.add_image(moving[..., 0], name="moving"))
    widget.method.setCurrentText("intensity")  # no model loads: the settings reach register() all the same

    def run_settings():
        """register()'s options and text options, without how missing text weights are told (the widget's field,
        the CLI's --text-weights: each in its own words)."""
        widget.run()
        _wait(qtbot, widget)
        assert "register reached" in widget.runner.widget.status.text(), widget.runner.widget.status.text()
        call = calls.pop()
        text_options = dict(call["text_options"])
        assert text_options.pop("weights_option") == "the 'text weights' field"
        return call["options"], text_options

    assert run_settings() == cli_settings()  # untouched: the CLI's defaults
    assert not widget.advanced.body.isVisible() and not widget.smoothness.isEnabled()  # intensity: no region field
    widget.advanced.set_open(True)
    widget.similarity.setValue(0.65)
    widget.smoothness.setValue(0.3)
    widget.dense.setChecked(False)
    widget.box_threshold.setValue(0.4)
    widget.text_threshold.setValue(0.3)
    widget.heatmap_threshold.setValue(0.6)
    widget.device.setCurrentText("cpu")
    widget.text_weights.set_path(str(tmp_path))  # a model folder, named absolutely by both
    flags = ["--similarity", "0.65", "--smoothness", "0.3", "--no-dense", "--box-threshold", "0.4"]
    flags += [
        "--text-threshold",
        "0.3",
        "--heatmap-threshold",
        "0.6",
        "--device",
        "cpu",
        "--text-weights",
        str(tmp_path),
    ]
    options, text_options = run_settings()
    assert (options, text_options) == cli_settings(*flags)
    assert (options.smoothness, options.dense) == (0.3, False)
    assert (text_options["box_threshold"], text_options["device"]) == (0.4, "cpu")
    assert text_options["weights"] == str(tmp_path)
    widget.method.setCurrentText("prompts")
    assert widget.similarity.isEnabled() and widget.dense.isEnabled() and not widget.smoothness.isEnabled()
    widget.dense.setChecked(True)
    assert widget.smoothness.isEnabled() and not widget.box_threshold.isEnabled()  # no text prompts typed
    with pytest.raises(SystemExit):  # as the widget's box cannot go below 0
        build_parser().parse_args(["register", "f.png", "m.png", "-o", "out", "--smoothness", "-1"])


def test_a_two_channel_layer_pair_registers_as_register_and_the_cli_do(make_viewer, qtbot, tmp_path):
    """A (C, Y, X) fixed and moving layer (the bundled pair's gray and its half inverse, 2 channels; a full inverse
    averages to one gray value) were refused as stacks of planes: the widget had no channel axis. With channel axis
    0 it registers them as one image each, as register(channel_axis=0) and `promptseg register --channel-axis 0` do
    (same displacement and warped arrays), the warped image a (C, Y, X) layer over the fixed one."""
    import tifffile

    from napari_promptseg._sample_data import registration_pair
    from napari_promptseg.cli import main

    (fixed_rgb, *_), _, (moving_rgb, *_), _ = registration_pair()
    fixed, moving = (
        np.stack([gray, 255 - gray // 2])
        for gray in (a[::4, ::4].mean(-1).astype(np.uint8) for a in (fixed_rgb, moving_rgb))
    )  # (2, 150, 200)
    viewer = make_viewer()
    fixed_layer = viewer.add_image(fixed, name="fixed")
    moving_layer = viewer.add_image(moving, name="moving")
    widget = RegistrationWidget(viewer)
    widget.fixed_picker.set_layer(fixed_layer)
    widget.moving_picker.set_layer(moving_layer)
    widget.run()  # channel axis 'none': a stack of 2 planes, refused saying what to choose
    said = widget.runner.widget.details or widget.runner.widget.status.text()
    assert not widget.runner.busy and "choose channel axis 0" in said, said
    widget.channel_axis.setCurrentIndex(widget.channel_axis.findData(0))
    assert widget.channel_axis.currentText() == "axis 0 (2 channels)"
    widget.run()
    _wait(qtbot, widget)
    assert widget.runner.state != "failed", widget.runner.widget.details
    result = widget.last_result
    warped = viewer.layers["moving registered"]
    assert warped.data.shape == fixed.shape and np.allclose(warped.extent.world, fixed_layer.extent.world)
    expected = register(fixed, moving, channel_axis=0, options=widget.settings()[0])
    assert np.array_equal(result.displacement, expected.displacement)
    assert np.array_equal(warped.data, expected.warp_image(moving, channel_axis=0))
    for name, image in (("fixed", fixed), ("moving", moving)):
        tifffile.imwrite(tmp_path / f"{name}.tif", image)
    files = [str(tmp_path / "fixed.tif"), str(tmp_path / "moving.tif")]
    assert main(["register", *files, "--channel-axis", "0", "-o", str(tmp_path / "out"), "--device", "cpu"]) == 0
    assert np.array_equal(tifffile.imread(tmp_path / "out" / "displacement.tif"), result.displacement)
    assert np.array_equal(tifffile.imread(tmp_path / "out" / "moving_warped.tif"), warped.data)

    # five channels: refused before a run starts, naming the layer and what to do in napari
    five = viewer.add_image(np.concatenate([moving, moving, moving[:1]]), name="five channels")
    widget.moving_picker.set_layer(five)
    widget.channel_axis.setCurrentIndex(widget.channel_axis.findData(0))
    widget.run()
    said = widget.runner.widget.details or widget.runner.widget.status.text()
    assert not widget.runner.busy, said
    assert "moving layer 'five channels' has 5 channels: registration takes up to 3; split it" in said, said


def test_a_removed_fixed_or_moving_image_is_chosen_again_not_another_image(make_viewer, pair):
    """The fixed image removed: the box took the next image (the moving one, or an earlier run's warped result)
    and the next Register used it unsaid. Each box is empty now until an image is chosen, and Register asks for
    it by role; with no image left at all, the next images opened start the pair again."""
    fixed, moving, _, _ = pair
    viewer = make_viewer()
    widget = RegistrationWidget(viewer)
    fixed_layer = viewer.add_image(fixed[::4, ::4, 0], name="fixed")
    moving_layer = viewer.add_image(moving[::4, ::4, 0], name="moving")
    viewer.add_image(moving[::4, ::4, 0], name="moving registered")
    assert widget.fixed_picker.layer() is fixed_layer and widget.moving_picker.layer() is moving_layer
    viewer.layers.remove(fixed_layer)
    assert widget.fixed_picker.layer() is None and widget.moving_picker.layer() is moving_layer
    widget.run()
    assert not widget.runner.busy and widget.runner.state == "failed"
    assert "choose the fixed image layer" in widget.runner.widget.status.text()
    viewer.layers.remove(moving_layer)
    assert widget.moving_picker.layer() is None
    widget.run()
    assert "choose the fixed and the moving image layers" in widget.runner.widget.status.text()
    viewer.layers.clear()
    a, b = viewer.add_image(fixed[::4, ::4, 0], name="a"), viewer.add_image(moving[::4, ::4, 0], name="b")
    assert widget.fixed_picker.layer() is a and widget.moving_picker.layer() is b
