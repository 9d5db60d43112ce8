"""Registration widget bug hunt: result layers over a rotated fixed layer, the warp off the GUI thread, a pyramid
registered at one level. Run under a display: ``xvfb-run -a python -m pytest tests/test_registration_widget_hunt.py``.
"""

from __future__ import annotations

import threading

import dask.array as da
import napari.layers
import numpy as np
import pytest

from napari_promptseg._widgets import registration as widget_module
from napari_promptseg._widgets.registration import RegistrationWidget
from napari_promptseg.methods.registration import RegistrationResult

from .test_registration_widget import pair  # noqa: F401 (fixture)

pytestmark = pytest.mark.gui


def _world(layer: napari.layers.Layer, rows_cols: np.ndarray) -> np.ndarray:
    return np.array([layer.data_to_world(p) for p in rows_cols])


def test_results_land_on_a_rotated_and_sheared_fixed_layer_and_are_made_off_the_gui_thread(
    make_viewer,
    qtbot,
    pair,  # noqa: F811
    monkeypatch,
):
    """A fixed layer rotated in napari: the summary said TRE 1.91 px, but the mapped landmarks were 241 px off in
    world coordinates (only scale and translate were copied). And the warp ran on the GUI thread (12.6 s frozen for
    a 4000 x 5333 RGB pair)."""
    fixed, moving, lm_fixed, lm_moving = pair
    viewer = make_viewer()
    place = {"rotate": 30, "shear": [0.2], "scale": (1.5, 1.5), "translate": (40, -20)}
    fixed_layer = viewer.add_image(fixed, name="fixed", rgb=True, **place)
    moving_layer = viewer.add_image(moving, name="moving", rgb=True)
    lm_fixed_layer = viewer.add_points(lm_fixed[:, ::-1], name="lm fixed", **place)
    viewer.add_points(lm_moving[:, ::-1], name="lm moving")
    widget = RegistrationWidget(viewer)
    widget.fixed_picker.set_layer(fixed_layer)
    widget.moving_picker.set_layer(moving_layer)
    widget.fixed_points.set_layer(lm_fixed_layer)
    widget.moving_points.set_layer(viewer.layers["lm moving"])
    widget.show_grid.setChecked(True)
    warped_on: list[bool] = []
    warp = RegistrationResult.warp_image

    def recording_warp(self, *args, **kwargs):
        warped_on.append(threading.current_thread() is threading.main_thread())
        return warp(self, *args, **kwargs)

    monkeypatch.setattr(RegistrationResult, "warp_image", recording_warp)
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=180_000)
    assert warped_on == [False], warped_on
    mapped = viewer.layers["moving landmarks registered"]
    error = np.linalg.norm(_world(mapped, mapped.data) - _world(lm_fixed_layer, lm_fixed_layer.data), axis=1)
    assert error.mean() < 5.0, error.mean()  # world units (1.5 per pixel)
    for name in ("moving registered", "moving deformation grid"):
        layer = viewer.layers[name]
        corner = np.array([[10.0, 20.0]])
        assert np.allclose(_world(layer, corner), _world(fixed_layer, corner)), name


def test_a_pyramid_is_registered_at_one_level_without_reading_its_full_resolution(pair):  # noqa: F811
    """A 6k x 8k RGB pyramid pair: all of level 0 was read (peak 4.6 GB) although the stages see 384-1024 px."""
    fixed = pair[0]
    reads = []

    def level0_block(block_info=None):
        reads.append(block_info[None]["array-location"])
        raise AssertionError("level 0 read")

    middle = np.kron(fixed, np.ones((8, 8, 1), fixed.dtype))  # 1600 x 2136
    h, w = middle.shape[:2]
    big = da.map_blocks(level0_block, dtype=fixed.dtype, chunks=((h,) * 4, (w,) * 4, (3,)))  # 6400 x 8544
    layer = napari.layers.Image([big, middle, fixed], rgb=True, multiscale=True)
    _, plane, factors = widget_module._plane(layer, "fixed")
    assert plane.shape == middle.shape and np.allclose(factors, 4) and not reads


def test_landmarks_on_pyramid_layers_are_mapped_in_full_resolution_pixels(
    make_viewer,
    qtbot,
    pair,  # noqa: F811
    monkeypatch,
):
    """Landmarks on a fixed and a moving pyramid registered at levels of different factors (fixed 2x, moving 3x
    coarser than full resolution): the moving points are divided by the moving factors on the way in and the
    result multiplied by the fixed ones on the way out; TRE in full-resolution pixels of the fixed layer."""
    fixed, moving, lm_fixed, lm_moving = pair  # 200 x 267 RGB, a known affine apart
    monkeypatch.setattr(widget_module.planes, "REGISTER_SIDE", 256)  # the pair's own size is the level registered

    def enlarged(image: np.ndarray, k: int) -> da.Array:
        return da.repeat(da.repeat(da.from_array(image, chunks=(128, 128, 3)), k, 0), k, 1)

    viewer = make_viewer()
    fixed_layer = viewer.add_image([enlarged(fixed, 2), fixed], name="fixed", rgb=True, multiscale=True)
    moving_layer = viewer.add_image([enlarged(moving, 3), moving], name="moving", rgb=True, multiscale=True)
    # napari puts a level's pixel i at full-resolution pixel factor * i
    lm_fixed_layer = viewer.add_points(2 * lm_fixed[:, ::-1], name="lm fixed")
    viewer.add_points(3 * lm_moving[:, ::-1], name="lm moving")
    widget = RegistrationWidget(viewer)
    widget.fixed_picker.set_layer(fixed_layer)
    widget.moving_picker.set_layer(moving_layer)
    widget.fixed_points.set_layer(lm_fixed_layer)
    widget.moving_points.set_layer(viewer.layers["lm moving"])
    widget.show_grid.setChecked(True)
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=180_000)
    result = widget.last_result
    assert result is not None
    assert result.deformation.fixed_shape == fixed.shape[:2]  # the level registered, not level 0
    assert result.deformation.moving_shape == moving.shape[:2]
    # the result says the levels read (it said level 0, factors 1: register() was given the levels' arrays), so a
    # console user's full-resolution points map as the widget's landmarks do
    assert result.registered_level == {
        "fixed": {"level": 1, "factors": [2.0, 2.0]},
        "moving": {"level": 1, "factors": [3.0, 3.0]},
    }
    np.testing.assert_allclose(
        result.moving_points_to_fixed(3 * lm_moving), viewer.layers["moving landmarks registered"].data[:, ::-1]
    )
    # the grid stays in the levels' pixels (laid by the fixed level's placement): not shrunk by 2/3 by the factors
    grid = np.concatenate(viewer.layers["moving deformation grid"].data)
    assert np.allclose(np.ptp(grid, axis=0) / fixed.shape[:2], 1.0, atol=0.2), np.ptp(grid, axis=0)
    mapped = viewer.layers["moving landmarks registered"]
    error = np.linalg.norm(_world(mapped, mapped.data) - _world(lm_fixed_layer, lm_fixed_layer.data), axis=1)
    assert error.mean() < 6.0, error  # 2x the 200 x 267 pair's 3 px (a factor left out: 100s of px)
    errors = widget.last_errors
    assert errors["after"]["tre_mean"] == pytest.approx(error.mean(), abs=1e-6)
    assert errors["before"]["tre_mean"] > 20 and errors["after"]["rtre_mean"] == pytest.approx(
        error.mean() / np.hypot(400, 534), rel=1e-6
    )
    assert "outside" not in widget.summary.text()  # full-resolution points on a pyramid lie on its level 0
    warped = viewer.layers["moving registered"]
    assert warped.data.shape == fixed.shape and np.allclose(warped.scale, 2.0)  # over the fixed layer


def test_landmarks_outside_their_image_are_said_in_the_summary(make_viewer, qtbot, pair):  # noqa: F811
    """Fixed landmarks of a 3x larger scan of the slide put on its small copy lie off the image: the TRE took them as
    its pixels (before/after in the 100s of px) and nothing said why. The summary now names the layer."""
    fixed, moving, lm_fixed, lm_moving = pair  # 200 x 267 RGB
    viewer = make_viewer()
    fixed_layer = viewer.add_image(fixed, name="fixed", rgb=True)
    moving_layer = viewer.add_image(moving, name="moving", rgb=True)
    widget = RegistrationWidget(viewer)
    widget.fixed_picker.set_layer(fixed_layer)
    widget.moving_picker.set_layer(moving_layer)
    widget.fixed_points.set_layer(viewer.add_points(3 * lm_fixed[:, ::-1], name="full-size landmarks"))
    widget.moving_points.set_layer(viewer.add_points(lm_moving[:, ::-1], name="lm moving"))
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=180_000)
    summary = widget.summary.text()
    assert "TRE" in summary
    assert "warning: landmarks 'full-size landmarks': " in summary and "outside the 200 x 267 px image" in summary
    assert "'lm moving'" not in summary  # those lie on the moving image


def test_a_run_on_another_pair_keeps_the_results_of_the_pair_before(make_viewer, qtbot, pair):  # noqa: F811
    """The results of B onto A were removed when C was registered onto A: a rerun replaces the layers of the same
    pair (a tweak of its settings), as `promptseg register` now refuses to replace another pair's results."""
    fixed, moving, _, lm_moving = pair
    viewer = make_viewer()
    fixed_layer = viewer.add_image(fixed, name="fixed", rgb=True)
    widget = RegistrationWidget(viewer)
    widget.fixed_picker.set_layer(fixed_layer)
    widget.moving_points.set_layer(viewer.add_points(lm_moving[:, ::-1], name="lm moving"))
    for name in ("B", "C", "C"):
        layer = viewer.layers[name] if name in viewer.layers else viewer.add_image(moving, name=name, rgb=True)
        widget.moving_picker.set_layer(layer)
        widget.run()
        qtbot.waitUntil(lambda: not widget.runner.busy, timeout=180_000)
        assert widget.runner.state == "done", widget.runner.widget.status.text()
    names = [layer.name for layer in viewer.layers]
    assert names.count("B registered") == 1 and names.count("C registered") == 1, names
    # named after their moving image: the two pairs' layers told apart (they were 'landmarks (moving -> fixed)' and
    # 'landmarks (moving -> fixed) [1]')
    assert names.count("B landmarks registered") == 1 and names.count("C landmarks registered") == 1, names


def test_single_plane_layers_register_as_their_plane_as_register_and_the_cli_do(make_viewer, qtbot, pair):  # noqa: F811
    """A (1, H, W) fixed and moving layer (a single-plane stack, as napari opens many TIFFs) was refused ('3 spatial
    dimensions; pick one plane first') while register() and `promptseg register` take it as its plane. The widget
    takes it with channel axis 'none': the warped layer is (1, H, W) over the fixed layer, as warp_image gives it,
    the landmarks (3D points over the stacks) are mapped, and labels painted over the moving stack are carried."""
    from napari_promptseg.methods.registration import register

    fixed, moving, lm_fixed, lm_moving = pair
    fixed, moving = fixed[..., 0], moving[..., 0]
    viewer = make_viewer()
    fixed_layer = viewer.add_image(fixed[None], name="fixed")
    moving_layer = viewer.add_image(moving[None], name="moving")
    on_plane = np.zeros((len(lm_fixed), 1))
    widget = RegistrationWidget(viewer)
    widget.fixed_picker.set_layer(fixed_layer)
    widget.moving_picker.set_layer(moving_layer)
    widget.fixed_points.set_layer(viewer.add_points(np.hstack([on_plane, lm_fixed[:, ::-1]]), name="lm fixed"))
    widget.moving_points.set_layer(viewer.add_points(np.hstack([on_plane, lm_moving[:, ::-1]]), name="lm moving"))
    labels = (moving > np.median(moving)).astype(np.uint16)[None]
    widget.moving_labels.set_layer(viewer.add_labels(labels, name="painted"))
    widget.method.setCurrentText("intensity")
    widget.show_grid.setChecked(True)
    assert widget.channel_axis.channel_axis is None
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=180_000)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    console = register(fixed, moving, method="intensity")
    np.testing.assert_allclose(widget.last_result.displacement, console.displacement, atol=1e-4)
    warped = viewer.layers["moving registered"]
    np.testing.assert_array_equal(warped.data, console.warp_image(moving)[None])
    assert np.allclose(_world(warped, [[0, 10.0, 20.0]]), _world(fixed_layer, [[0, 10.0, 20.0]]))
    np.testing.assert_array_equal(viewer.layers["painted registered"].data, console.warp_labels(labels[0]))
    assert widget.last_errors["after"]["tre_mean"] < 3.0 < widget.last_errors["before"]["tre_mean"]
    # the grid's lines are as wide over a (1, H, W) warped image as over its plane: the plane's longest side / 400
    # (the warped array's first two axes, (1, H), gave H / 400)
    assert np.allclose(viewer.layers["moving deformation grid"].edge_width, max(fixed.shape) / 400)


def test_moving_landmarks_beyond_the_fixed_ones_are_carried_over_too(make_viewer, qtbot, pair):  # noqa: F811
    """Fixed landmarks with fewer points than the moving ones: the TRE compares the first min(n) (as ANHIR and
    --truncate-landmarks), but the widget also dropped the moving points past that count from the mapped layer,
    where `promptseg register --truncate-landmarks` writes every moving landmark to landmarks_warped.csv."""
    fixed, moving, lm_fixed, lm_moving = pair
    viewer = make_viewer()
    widget = RegistrationWidget(viewer)
    widget.fixed_picker.set_layer(viewer.add_image(fixed, name="fixed", rgb=True))
    widget.moving_picker.set_layer(viewer.add_image(moving, name="moving", rgb=True))
    widget.fixed_points.set_layer(viewer.add_points(lm_fixed[:9, ::-1], name="lm fixed"))
    widget.moving_points.set_layer(viewer.add_points(lm_moving[:, ::-1], name="lm moving"))
    widget.method.setCurrentText("intensity")
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=180_000)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    mapped = viewer.layers["moving landmarks registered"].data[:, ::-1]
    assert len(mapped) == len(lm_moving) == 12
    assert np.linalg.norm(mapped - lm_fixed, axis=1).max() < 3.0  # all of them, the three without a partner too
    assert widget.last_errors["after"]["n"] == 9 and "over the first 9 landmarks" in widget.summary.text()


def test_the_mapped_landmarks_keep_the_moving_points_features(make_viewer, qtbot, pair):  # noqa: F811
    """Moving landmarks with a name each (a napari Points layer's features, as its CSV export and reader keep them)
    came back as a bare Points layer: which mapped point was which was lost, where `promptseg register` writes
    landmarks_warped.csv with every column of the moving file, and the widget's registered shapes keep theirs."""
    fixed, moving, lm_fixed, lm_moving = pair
    viewer = make_viewer()
    widget = RegistrationWidget(viewer)
    widget.fixed_picker.set_layer(viewer.add_image(fixed, name="fixed", rgb=True))
    widget.moving_picker.set_layer(viewer.add_image(moving, name="moving", rgb=True))
    names = [f"gland {k}" for k in range(1, len(lm_moving) + 1)]
    moving_points = viewer.add_points(
        lm_moving[:, ::-1], name="lm moving", features={"name": names}, text={"string": "{name}"}
    )
    widget.moving_points.set_layer(moving_points)
    widget.method.setCurrentText("intensity")
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=180_000)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    mapped = viewer.layers["moving landmarks registered"]
    assert list(mapped.features["name"]) == names, mapped.features
    assert mapped.text.string.format == "{name}"  # shown as on the moving points
    assert np.linalg.norm(mapped.data[:, ::-1] - lm_fixed, axis=1).max() < 3.0
    moving_points.features["name"] = "edited"  # the mapped layer's features are its own
    assert list(mapped.features["name"]) == names


def test_one_points_layer_picked_as_both_landmark_sets_is_refused(make_viewer, qtbot, pair):  # noqa: F811
    """The fixed landmarks' layer picked as the moving landmarks too (the two lists start on the first Points layer
    alike): the run went on and said 'TRE 0.00 -> 18.49 px', a registration that made the landmarks worse, where
    the images' pickers refuse one layer for both. Refused before any work, naming the layer."""
    fixed, moving, lm_fixed, _ = pair
    viewer = make_viewer()
    widget = RegistrationWidget(viewer)
    widget.fixed_picker.set_layer(viewer.add_image(fixed, name="fixed", rgb=True))
    widget.moving_picker.set_layer(viewer.add_image(moving, name="moving", rgb=True))
    points = viewer.add_points(lm_fixed[:, ::-1], name="lm fixed")
    widget.fixed_points.set_layer(points)
    widget.moving_points.set_layer(points)
    widget.method.setCurrentText("intensity")
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=180_000)
    status = widget.runner.widget.status.text()
    assert widget.runner.state == "failed" and "'lm fixed'" in status and "same" in status, status
    assert "moving registered" not in viewer.layers and "TRE" not in widget.summary.text()
