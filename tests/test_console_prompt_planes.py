"""A stack's prompt layers (plane, row, column) given to ``segment`` over a 2D image (a projection of the stack, one
plane of it): napari shows each plane's prompts only over it, so the prompts of one plane are segmented, never the
boxes and clicks of every plane at once (objects the user could not see)."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image, Points, Shapes
from skimage import data

import napari_promptseg
from napari_promptseg.errors import PromptsegError

COINS = data.coins()  # real 303x384 uint8 greyscale photo of coins
BOX = (40.0, 60.0, 120.0, 140.0)  # x0, y0, x1, y1 around the coin at the top left
OTHER_BOX = (250.0, 200.0, 330.0, 280.0)  # around a coin at the bottom right
CLICK = (80.0, 100.0)  # x, y inside BOX's coin


def on_plane(box, plane: int) -> np.ndarray:
    """The corners (plane, row, column) of box (x0, y0, x1, y1) on one plane of a stack's Shapes layer."""
    x0, y0, x1, y1 = box
    return np.array([[plane, y0, x0], [plane, y0, x1], [plane, y1, x1], [plane, y1, x0]], float)


@pytest.fixture(scope="module")
def expected(litemedsam):
    labels = napari_promptseg.segment(COINS, boxes=[BOX], device="cpu")
    assert 0 < (labels > 0).sum() < labels.size / 10 and labels[int(CLICK[1]), int(CLICK[0])] > 0
    return labels


def test_a_stacks_boxes_on_several_planes_over_a_2d_image_are_refused_naming_the_layer_and_planes():
    """Boxes on planes 1 and 2 of a stack's Shapes layer, the 2D image given: both were segmented on it, the box of
    the plane the user was not looking at among them, without a word."""
    boxes = Shapes([on_plane(BOX, 1), on_plane(OTHER_BOX, 2)], shape_type="rectangle", name="boxes")
    for image in (Image(COINS, name="projection"), COINS):
        with pytest.raises(PromptsegError, match=r"'boxes'.*planes 1 and 2.*2D.*viewer=viewer"):
            napari_promptseg.segment(image, boxes=boxes, device="cpu")
    clicks = Points([[0, 100, 80], [2, 260, 290]], name="clicks")
    with pytest.raises(PromptsegError, match=r"'clicks'.*planes 0 and 2.*'projection'"):
        napari_promptseg.segment(Image(COINS, name="projection"), points=clicks, device="cpu")


def test_a_stacks_prompts_on_one_plane_over_a_2d_image_are_segmented(expected):
    boxes = Shapes([on_plane(BOX, 1)], shape_type="rectangle", name="boxes")
    labels = napari_promptseg.segment(Image(COINS, name="projection"), boxes=boxes, device="cpu")
    np.testing.assert_array_equal(labels, expected)


def test_given_the_viewer_the_prompts_of_the_plane_it_shows_are_segmented(make_viewer, expected):
    viewer = make_viewer()
    viewer.add_image(np.stack([COINS] * 3), name="stack")
    image = viewer.add_image(COINS, name="projection")
    boxes = viewer.add_shapes([on_plane(BOX, 1), on_plane(OTHER_BOX, 2)], shape_type="rectangle", name="boxes")
    clicks = viewer.add_points([[1, CLICK[1], CLICK[0]], [2, 240, 290]], name="clicks")
    viewer.dims.set_current_step(0, 1)
    labels = napari_promptseg.segment(image, boxes=boxes, points=clicks, viewer=viewer, device="cpu")
    assert int(labels.max()) == 1  # plane 2's box and click not segmented
    shown = napari_promptseg.segment(COINS, boxes=[BOX], points=[CLICK], device="cpu")
    np.testing.assert_array_equal(labels, shown)
    viewer.dims.set_current_step(0, 0)  # a plane without prompts: said, naming the plane
    with pytest.raises(PromptsegError, match=r"'boxes', 'clicks'.*none on the plane the viewer shows \(0\)"):
        napari_promptseg.segment(image, boxes=boxes, points=clicks, viewer=viewer, device="cpu")
