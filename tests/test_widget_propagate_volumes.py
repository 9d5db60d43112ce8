"""The Interactive widget's 'Propagate through stack' on a time-lapse of volumes (T, Z, Y, X): the real brain MRI,
the real LiteMedSAM model.

Run under a display: ``xvfb-run -a python -m pytest tests/test_widget_propagate_volumes.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from napari_promptseg.methods.metrics import dice

from .conftest import thalamus_planes
from .interactive_widget import FIRST_RUN_MS, add_box_on_plane, add_widget, records_since, wait_idle

pytestmark = pytest.mark.gui


def test_propagation_on_a_time_lapse_of_volumes_runs_through_the_z_of_the_time_point_shown(
    make_viewer, qtbot, shared_data
):
    """A (T, Z, Y, X) layer (a time-lapse of volumes, as napari opens a TZYX file) was refused: 'propagation runs
    along the one axis besides the displayed plane; this layer's planes are (2, 7, 110, 140)', with no way round it
    in the widget. Now the object is carried through Z (the slider next to the plane) at the time point shown, into
    a Labels layer of the image's shape, on the image's grid; the other time point stays empty."""
    vol, truth, box = thalamus_planes(shared_data)
    viewer = make_viewer()
    tz = np.stack([vol[:, ::-1], vol])  # time point 0 flipped: not the volume propagated
    viewer.add_image(tz, name="tz", scale=(1, 4, 0.5, 0.5), translate=(0, 100, 10, 20), axis_labels=tuple("tzyx"))
    viewer.dims.set_current_step(0, 1)  # time point 1
    viewer.dims.set_current_step(1, 3)  # plane 3 (world z = 112)
    widget = add_widget(viewer)
    widget.new_prompt_layers()
    add_box_on_plane(widget, box, 1, 3)  # the prompt layer's data: the image's grid
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


def test_propagation_on_a_time_lapse_says_frames_and_its_labels_keep_the_time_axis(make_viewer, qtbot, shared_data):
    """'Propagate through stack' on a time-lapse layer (its first axis labelled t): its progress and summary said
    'plane 1', 'propagated from plane 1 (1: planes 0-2)', as if it were a z-stack, and its Labels layer's axes were
    -3, -2, -1 beside the image's t, y, x. A time-lapse's planes are frames now, and its result keeps the axis
    labels. (A HeLa nucleus of the Cell Tracking Challenge, moving 2 px right per frame.)"""
    from napari_promptseg.io import read_image

    folder = shared_data / "nuclei_ctc_fluo_instances"
    image = read_image(folder / "images" / "N2DL-HeLa_t13.tif")[100:356, 200:456]
    truth = read_image(folder / "labels" / "N2DL-HeLa_t13.tif")[100:356, 200:456]
    ids, sizes = np.unique(truth[truth > 0], return_counts=True)
    nucleus = truth == ids[sizes.argmax()]
    frames = np.stack([np.roll(image, 2 * t, axis=1) for t in range(3)])
    viewer = make_viewer()
    viewer.add_image(frames, name="movie", axis_labels=("t", "y", "x"))
    viewer.dims.set_current_step(0, 1)
    widget = add_widget(viewer)
    widget.new_prompt_layers()
    rows, cols = np.nonzero(np.roll(nucleus, 2, axis=1))
    r0, r1, c0, c1 = rows.min() - 2, rows.max() + 2, cols.min() - 2, cols.max() + 2
    widget.shapes_picker.layer().add_rectangles(np.array([[1, r0, c0], [1, r0, c1], [1, r1, c1], [1, r1, c0]]))
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    messages: list[str] = []
    widget.runner._progressed.connect(lambda job, fraction, message: messages.append(message))
    widget.propagate_button.click()
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    said = widget.runner.widget.summary.text()
    assert "1 object(s) propagated from frame 1 (1: frames 0-2)" in said, said
    assert any(" frame " in m for m in messages), messages
    assert not [m for m in [*messages, said] if "plane" in m], (messages, said)
    result = viewer.layers["movie propagated"]
    assert result.axis_labels == widget.shapes_picker.layer().axis_labels == ("t", "y", "x")
    assert dice(result.data[1] > 0, np.roll(nucleus, 2, axis=1)) > 0.8


def test_a_cancelled_propagation_keeps_the_planes_done_as_a_layer_said_partial(make_viewer, qtbot, shared_data):
    """Cancel pressed while 'Propagate through stack' ran kept nothing: the seed plane and the planes already
    carried were thrown away. They are now a Labels layer named '... propagated (partial)', whose metadata and the
    summary say which planes were not segmented (their labels empty)."""
    from napari_promptseg._widgets.interactive.actions import PARTIAL_KEY

    vol, truth, box = thalamus_planes(shared_data)
    viewer = make_viewer()
    viewer.add_image(vol, name="mri")
    viewer.dims.set_current_step(0, 3)
    widget = add_widget(viewer)
    widget.new_prompt_layers()
    add_box_on_plane(widget, box, 3)
    wait_idle(qtbot, widget, FIRST_RUN_MS)

    def cancel_on_the_first_carried_plane(job, fraction, message) -> None:
        if "plane 4" in message:
            widget.runner.cancel()

    widget.runner._progressed.connect(cancel_on_the_first_carried_plane)
    start = len(notification_manager.records)
    widget.propagate_button.click()
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    assert not records_since(start, NotificationSeverity.ERROR)
    assert widget.runner.widget.state == "cancelled"
    status = widget.runner.widget.status.text()
    assert status.startswith("propagating the prompted object(s) through 'mri': cancelled (after "), status
    assert " not segmented)" in status and "((" not in status and "))" not in status, status
    result = viewer.layers["mri propagated (partial)"]
    said = result.metadata[PARTIAL_KEY]  # "partial: planes 0-2, 6 not segmented", the cancel seen before plane 6
    assert said.startswith("partial: planes 0") and said.endswith(" not segmented"), said
    assert not result.data[0].any() and not result.data[6].any()
    assert dice(result.data[3] > 0, truth[3]) > 0.8, "the seed plane is kept"
    summary = widget.runner.widget.summary.text()
    assert summary.startswith("cancelled: 1 object(s) propagated from plane 3") and said in summary, summary
    assert "'mri propagated (partial)'" in summary


def _magnified_level(vol: np.ndarray, magnify: float, reads: list | None = None):
    """``vol``'s planes magnified ``magnify`` times (bilinear, pixel centres aligned: a finer scan of the same
    planes), as a lazy dask array computed block by block; the blocks read are counted in ``reads``."""
    import dask.array as da
    from scipy import ndimage

    n, h, w = vol.shape
    shape = (n, int(round(h * magnify)), int(round(w * magnify)))

    def block(block_info=None) -> np.ndarray:
        (z0, z1), (r0, r1), (c0, c1) = block_info[None]["array-location"]
        if reads is not None:
            reads.append((z0, r0, c0))
        z, r, c = np.meshgrid(
            np.arange(z0, z1),
            (np.arange(r0, r1) + 0.5) / magnify - 0.5,
            (np.arange(c0, c1) + 0.5) / magnify - 0.5,
            indexing="ij",
        )
        return ndimage.map_coordinates(vol, [z, r, c], order=1, mode="nearest").astype(np.float32)

    chunks = da.core.normalize_chunks((1, 1024, 1024), shape)
    return da.map_blocks(block, dtype=np.float32, chunks=chunks)


def test_propagation_through_a_stack_of_whole_slide_planes_runs_at_the_prompts_level(make_viewer, qtbot, shared_data):
    """'Propagate through stack' on a (Z, Y, X) pyramid of planes larger than 4096 x 4096 px read its full
    resolution, every plane of it, and made full-resolution labels of the stack (1 GB a 16k plane). It is carried at
    the level of the box now (the full resolution is not read), into a Labels layer on the stack's labels level, as
    its commits are, over the pixels it stands for."""
    vol, truth, (x0, y0, x1, y1) = thalamus_planes(shared_data, 2, 2)
    magnify = 38.0  # 4180 x 5320 px planes
    reads: list = []
    levels = [_magnified_level(vol, magnify / 2**k, reads if k == 0 else None) for k in range(6)]
    box = tuple(magnify * v + (magnify - 1) / 2 for v in (x0, y0, x1, y1))  # the box's pixels' centres
    viewer = make_viewer()
    viewer.add_image(levels, name="scan", multiscale=True, contrast_limits=(0, 1))
    viewer.dims.set_current_step(0, 2)
    widget = add_widget(viewer)
    widget.new_prompt_layers()
    add_box_on_plane(widget, box, 2)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    start = len(notification_manager.records)
    widget.propagate_button.click()
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    assert not records_since(start, NotificationSeverity.ERROR), widget.runner.widget.status.text()
    assert not reads, "the full-resolution level was read"
    result = viewer.layers["scan propagated"]
    level = levels[1]  # the finest whose 5 planes fit the labels' limits
    assert result.data.shape == level.shape
    factors = np.divide(levels[0].shape[1:], level.shape[1:])
    np.testing.assert_allclose(result.scale[1:], factors)
    np.testing.assert_allclose(result.translate[1:], (factors - 1) / 2)
    # the thalamus, sampled where each labels pixel's centre lies on the scan's own planes
    rows = np.minimum(((np.arange(level.shape[1]) + 0.5) * factors[0] / magnify).astype(int), vol.shape[1] - 1)
    cols = np.minimum(((np.arange(level.shape[2]) + 0.5) * factors[1] / magnify).astype(int), vol.shape[2] - 1)
    expected = truth[:, rows[:, None], cols[None, :]]
    assert dice(result.data > 0, expected) > 0.75
    planes = np.nonzero(result.data.any(axis=(1, 2)))[0]
    assert planes.min() < 2 < planes.max(), "carried above and below the boxed plane"

    # that layer (on the labels level, as the commits' target) seeds a propagation: taken where it lies
    widget.seed_picker.set_layer(result)
    start = len(notification_manager.records)
    widget.propagate_button.click()
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    assert not records_since(start, NotificationSeverity.ERROR), widget.runner.widget.status.text()
    assert not reads, "the full-resolution level was read"
    seeded = viewer.layers["scan propagated [1]"]
    assert seeded.data.shape == result.data.shape
    np.testing.assert_array_equal(seeded.data[2] > 0, result.data[2] > 0)  # the seed plane's objects, as they were
    assert dice(seeded.data > 0, expected) > 0.75
