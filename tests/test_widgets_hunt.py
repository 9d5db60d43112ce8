"""Widget defects found in bug hunt 5, each reproduced in a real napari viewer with the real bundled LiteMedSAM on
the bundled DSB2018 nuclei or shared data. Run under a display: ``xvfb-run -a python -m pytest
tests/test_widgets_hunt.py``."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from napari.qt.threading import WorkerBase
from skimage.measure import regionprops

from napari_promptseg._sample_data import nuclei
from napari_promptseg._widgets.interactive import PREVIEW_NAME, InteractiveWidget

pytestmark = pytest.mark.gui
RUN_MS = 240_000  # the first run loads the model; the 2-core CPU is often shared


@pytest.fixture
def make_viewer(make_napari_viewer):
    yield make_napari_viewer
    WorkerBase.await_workers(msecs=120_000)


@pytest.fixture(scope="module")
def sample():
    """(image, ground truth, (row0, col0, row1, col1) inclusive bbox of the largest nucleus)."""
    (image, _, _), (truth, _, _) = nuclei()
    largest = max(regionprops(truth), key=lambda r: r.area)
    r0, c0, r1, c1 = largest.bbox
    return image, truth, (r0, c0, r1 - 1, c1 - 1)


def test_a_commit_into_labels_napari_cannot_paint_is_refused_naming_the_layer(make_viewer, qtbot, sample):
    """Labels opened from an OME-Zarr (a pyramid of lazy arrays, as napari-ome-zarr reads the labels promptseg
    writes) offered as commit targets: a commit failed with 'TypeError: list indices must be integers or slices'
    (one lazy level: NotImplementedError). It is refused, saying why, nothing is written and the preview stays, so
    the next commit into a new layer works."""
    image, truth, (r0, c0, r1, c1) = sample
    viewer = make_viewer()
    viewer.add_image(image, name="nuclei")
    user = np.where(truth > 0, truth, 0).astype(np.uint32)
    pyramid = viewer.add_labels([user, user[::2, ::2].copy()], name="zarr labels", multiscale=True)
    lazy = viewer.add_labels(da.from_array(np.zeros_like(user), chunks=64), name="lazy labels")
    widget = InteractiveWidget(viewer)
    viewer.window.add_dock_widget(widget, name="promptseg interactive")
    shapes = viewer.add_shapes(name="boxes")
    shapes.add_rectangles(np.array([[r0, c0], [r1, c1]]))
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    assert widget.preview is not None and widget.preview.labels.any()

    for target, why in ((pyramid, "is a pyramid"), (lazy, "is read lazily")):
        widget.target_picker.set_layer(target)
        widget.commit()
        status = widget.runner.widget.status.text()
        assert widget.runner.state == "failed" and f"'{target.name}' {why}" in status, status
        assert "new layer" in status
        assert widget.preview is not None and len(shapes.data) == 1  # the prompts and the preview stay
    np.testing.assert_array_equal(pyramid.data[0], user)
    assert not np.asarray(lazy.data).any()

    widget.target_picker.set_layer(None)
    widget.commit()
    assert widget.runner.state == "done" and widget.target_picker.layer().data.any()
    assert not viewer.layers[PREVIEW_NAME].data.any()
