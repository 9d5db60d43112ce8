"""The One-shot widget's stacks as napari lays them out: a reference's labels on the plane the user sees them on
(through world coordinates), a time-lapse of volumes segmented at the time point shown.

Run under a display: ``xvfb-run -a python -m pytest tests/test_widget_oneshot_planes.py``.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from napari_promptseg._widgets.oneshot import OneShotWidget
from napari_promptseg.errors import PromptsegError

from .test_widget_oneshot import _read_inputs

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def nuclei_planes() -> tuple[np.ndarray, np.ndarray]:
    """Three different real planes (the nuclei sample, its 128 x 128 px crop turned 0, 1 and 2 quarter turns) and the
    crop's ground truth."""
    from napari_promptseg._sample_data import nuclei

    (image, _, _), (truth, _, _) = nuclei()
    image, truth = image[128:, :128], truth[128:, :128]
    return np.stack([np.rot90(image, k) for k in range(3)]), truth


def test_reference_labels_with_another_z_placement_give_the_plane_the_user_sees_them_on(make_viewer, nuclei_planes):
    """A stack reference's image and labels were paired by plane index: labels layer plane 1 moved one plane down
    (translate z -1) lies over image plane 0, yet the run learnt from image plane 1 with them. The planes are paired
    through napari's world coordinates now; labels between the image's planes are refused naming both layers."""
    stack, truth = nuclei_planes
    viewer = make_viewer()
    widget = OneShotWidget(viewer)
    widget.reference.set_layer(viewer.add_image(stack, name="ref", scale=(2.0, 1.0, 1.0)))
    labels = np.zeros(stack.shape, np.uint8)
    labels[1] = truth > 0
    widget.target.set_layer(viewer.add_image(stack[0], name="target"))
    for placement, plane in (({"scale": (2.0, 1, 1), "translate": (-2.0, 0, 0)}, 0), ({"scale": (4.0, 1, 1)}, 2)):
        widget.reference_labels.set_layer(viewer.add_labels(labels, name="nuclei", **placement))
        read = _read_inputs(widget)
        assert read.reference_plane == plane
        np.testing.assert_array_equal(read.reference, stack[plane])
        np.testing.assert_array_equal(read.labels > 0, truth > 0)
    widget.reference_labels.set_layer(
        viewer.add_labels(labels, name="halfway", scale=(2.0, 1, 1), translate=(1.0, 0, 0))
    )
    expected = "labels 'halfway' mark their plane 1, which napari lays over plane 1.5 of 'ref' (between its planes)"
    with pytest.raises(PromptsegError, match=re.escape(expected)):
        _read_inputs(widget)
    # the same placement: paired by index, as before
    widget.reference_labels.set_layer(viewer.add_labels(labels, name="same", scale=(2.0, 1.0, 1.0)))
    assert _read_inputs(widget).reference_plane == 1


RUN_MS = 600_000  # a model load on a shared 2-core CPU


@pytest.fixture(scope="module")
def movie(nuclei_planes) -> np.ndarray:
    """A (T, Z, Y, X) time-lapse of volumes, 2 x 2 real planes: the nuclei crop turned 0-3 quarter turns."""
    stack, _ = nuclei_planes
    planes = [np.rot90(stack[0], k) for k in range(4)]
    return np.stack([np.stack(planes[:2]), np.stack(planes[2:])])


def _run_at(viewer, qtbot, widget, t: int) -> str:
    """The widget run at time point ``t`` shown, waited for; what it said (errors and summary)."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    viewer.dims.set_current_step(0, t)
    start = len(notification_manager.records)
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    errors = [r.message for r in notification_manager.records[start:] if r.severity == NotificationSeverity.ERROR]
    assert not errors, errors
    return widget.runner.widget.summary.text()


def _time_points_kept(viewer, qtbot, widget, name: str, movie: np.ndarray) -> np.ndarray:
    """Runs at time points 1 then 0: one (T, Z, Y, X) labels layer, time point 1 kept by the run at 0, the run at 0
    undone by one Ctrl+Z in the layer (time point 1 still there). Returns the labels of both time points."""
    said = _run_at(viewer, qtbot, widget, 1)
    layer = viewer.layers[name]
    assert layer.data.shape == movie.shape and not layer.data[0].any() and layer.data[1].any(), said
    assert f"at time point 1 -> '{name}'" in said, said
    first = np.array(layer.data[1])
    count = len(viewer.layers)
    said = _run_at(viewer, qtbot, widget, 0)
    assert f"at time point 0 (time point 1 kept) -> '{name}'" in said, said
    assert not [lay.name for lay in viewer.layers[count:] if isinstance(lay, type(layer))]  # no second labels layer
    np.testing.assert_array_equal(layer.data[1], first)
    both = np.array(layer.data)
    assert both[0].any()
    layer.undo()
    assert not layer.data[0].any()
    np.testing.assert_array_equal(layer.data[1], first)
    return both


def _found(labels: np.ndarray, truth: np.ndarray, turns: int) -> float:
    from napari_promptseg.methods.instances import match_instances

    return match_instances(np.rot90(truth, turns), labels)["f1"]


def test_the_one_shot_widget_segments_a_time_lapse_of_volumes_at_the_time_point_shown(
    make_viewer, qtbot, nuclei_planes, movie
):
    """A (T, Z, Y, X) target layer was refused ('has 4 dimensions ... pick one stack') while the Interactive widget
    and the CLI's --time T segment the time point shown. Now its volume is segmented as a stack, into one (T, Z, Y,
    X) labels layer that keeps the other time points; a run is one undo step."""
    stack, truth = nuclei_planes
    viewer = make_viewer()
    widget = OneShotWidget(viewer)
    viewer.window.add_dock_widget(widget, name="one-shot")
    widget.reference.set_layer(viewer.add_image(stack[0], name="reference"))
    widget.reference_labels.set_layer(viewer.add_labels(truth, name="reference nuclei"))
    axes = {"axis_labels": ("t", "z", "y", "x")}  # its first axis named time: no caution that it may be channels
    widget.target.set_layer(viewer.add_image(movie, name="movie", scale=(1.0, 2.0, 0.5, 0.5), **axes))
    labels = _time_points_kept(viewer, qtbot, widget, "movie one-shot", movie)
    assert "channel axis" not in widget.runner.widget.summary.text()
    assert tuple(viewer.layers["movie one-shot"].scale) == (1.0, 2.0, 0.5, 0.5)
    for t in range(2):  # the nuclei of each time point's planes (turned as the planes were)
        for z in range(2):
            assert _found(labels[t, z], truth, 2 * t + z) > 0.6, (t, z)


def test_the_text_widget_segments_a_time_lapse_of_volumes_at_the_time_point_shown(
    make_viewer, qtbot, nuclei_planes, movie, tmp_path
):
    """The Text widget refused a (T, Z, Y, X) layer as the One-shot widget did; it segments the time point shown now,
    into one labels layer keeping the other time points (heatmap and boxes of that time point)."""
    from napari_promptseg._widgets.text import TextPromptWidget
    from napari_promptseg.io.library import ReferenceLibrary

    stack, truth = nuclei_planes
    library = ReferenceLibrary.open(tmp_path / "library")
    library.add("nucleus", stack[0], truth, instances=True)
    viewer = make_viewer()
    widget = TextPromptWidget(viewer)
    viewer.window.add_dock_widget(widget, name="text prompt")
    widget.image.set_layer(viewer.add_image(movie, name="movie"))
    widget.library.setText(str(library.path))
    widget.prompt.setText("nuclei")
    labels = _time_points_kept(viewer, qtbot, widget, "movie text: nuclei", movie)
    # its first axis not named time: said how it was read, and what to choose for a (C, Z, Y, X) layer
    caution = "read as a time-lapse of volumes (T, Z, Y, X), segmented at time point 0 shown; if its first axis"
    assert caution in widget.runner.widget.summary.text()
    for t in range(2):
        for z in range(2):
            assert _found(labels[t, z], truth, 2 * t + z) > 0.6, (t, z)
    boxes = [layer for layer in viewer.layers if layer.name.endswith("boxes")]
    assert boxes and all(layer.data[0].shape == (4, 4) for layer in boxes)
