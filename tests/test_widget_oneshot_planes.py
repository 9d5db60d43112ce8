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
