"""The Interactive widget on pyramid (multiscale) image layers: read at the level the prompts need, its results over
the full-resolution pixels they stand for, and levels not exactly 2x, 4x... coarser along both axes: a slide's level
sizes are rounded (10001 x 7003 -> 5000 x 3501 -> 2500 x 1750), so its rows and its columns are downsampled by
slightly different factors, as napari itself displays them. Real pixels (the bundled DSB2018 nuclei tiled into the
slide) and the real LiteMedSAM model.

Run under a display: ``xvfb-run -a python -m pytest tests/test_widget_interactive_pyramids.py``.
"""

from __future__ import annotations

import napari
import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager
from skimage.measure import regionprops

from napari_promptseg._sample_data import nuclei
from napari_promptseg._widgets.interactive import PREVIEW_NAME, TARGET_NAME, InteractiveWidget, plane_geometry

from .interactive_widget import FIRST_RUN_MS, MIN_DICE, add_widget, dice, preview_layer, records_since, wait_idle

pytestmark = pytest.mark.gui

#: an SVS-like slide's level sizes, rounded: rows 4.0004x, columns 4.0017x coarser at the last level
ROUNDED_LEVELS = ((10001, 7003), (5000, 3501), (2500, 1750))


def _rounded_level(tile: np.ndarray, full: tuple[int, int], shape: tuple[int, int], chunk: int = 1024):
    """A lazy level of ``shape`` of the slide that repeats ``tile`` over ``full`` pixels, its last copy ending at the
    slide's bottom-right corner: each level pixel is the full-resolution pixel at the centre of the block it stands
    for, per axis (as napari displays the level)."""
    import dask.array as da

    h, w = tile.shape[:2]

    def fill(block: np.ndarray, block_info=None) -> np.ndarray:
        (r0, r1), (c0, c1) = block_info[0]["array-location"][:2]
        rows = np.floor((np.arange(r0, r1) + 0.5) * full[0] / shape[0]).astype(np.int64)
        cols = np.floor((np.arange(c0, c1) + 0.5) * full[1] / shape[1]).astype(np.int64)
        return tile[np.ix_((rows - full[0]) % h, (cols - full[1]) % w)]

    blank = da.zeros(shape, dtype=tile.dtype, chunks=(chunk, chunk))
    return blank.map_blocks(fill, dtype=tile.dtype)


@pytest.fixture(scope="module")
def magnified_nucleus():
    """(the sample image magnified 4x, as a slide's nuclei are large: boxes around them read its 4x level; the mask
    of its largest nucleus, that nucleus' (row0, col0, row1, col1) bbox, exclusive)."""
    (image, _, _), (truth, _, _) = nuclei()
    largest = max(regionprops(truth), key=lambda r: r.area)
    block = np.ones((4, 4), np.uint8)
    return np.kron(image, block), np.kron(truth == largest.label, block).astype(bool), np.multiply(largest.bbox, 4)


def test_a_box_at_the_far_corner_of_a_slide_with_rounded_levels_is_committed_where_drawn(
    make_viewer, qtbot, magnified_nucleus, litemedsam
):
    """The widget took one factor (the rows') for both axes of a pyramid level: on a slide whose columns are 4.0017x
    coarser at its 4x level (rows 4.0004x), the box at its far corner reached that level 0.5 px right of where it was
    drawn, the preview of the level's crop lay 2 px left of the level's pixels, and the committed Labels layer was
    2.3 px narrower than the slide (its last columns could hold no object). Each axis has its own factor now: the
    level's crop is segmented with the box where the console's rule puts it, and the preview and the committed
    object lie over the level's pixels."""
    from napari_promptseg.methods.interactive import segment_prompts

    image, nucleus, (r0, c0, r1, c1) = magnified_nucleus
    full = ROUNDED_LEVELS[0]
    viewer = make_viewer()
    levels = [_rounded_level(image, full, shape) for shape in ROUNDED_LEVELS]
    viewer.add_image(levels, name="slide", multiscale=True, contrast_limits=(0, 255))
    widget = InteractiveWidget(viewer)
    viewer.window.add_dock_widget(widget, name="promptseg interactive")
    qtbot.waitUntil(lambda: widget.is_idle, timeout=FIRST_RUN_MS)

    side = image.shape[0]
    top, left = full[0] - side, full[1] - side  # the sample's copy at the slide's bottom-right corner
    box = (left + c0, top + r0, left + c1 - 1, top + r1 - 1)  # x0, y0, x1, y1
    viewer.add_shapes(name="boxes").add_rectangles(np.array([[box[1], box[0]], [box[3], box[2]]], float))
    qtbot.waitUntil(lambda: widget.is_idle, timeout=FIRST_RUN_MS)

    # the preview: the box's crop of the 4x level (the boxed nucleus is ~140 px), over the level's own pixels
    preview = viewer.layers[PREVIEW_NAME]
    factors = np.divide(full, ROUNDED_LEVELS[-1])  # rows 4.0004, columns 4.0017
    np.testing.assert_allclose(preview.scale, factors)
    offset = (np.asarray(preview.translate) - (factors - 1) / 2) / factors  # the crop's top-left on the level
    np.testing.assert_allclose(offset, np.round(offset), atol=1e-6)
    (row0, col0), (h, w) = np.round(offset).astype(int), preview.data.shape
    # the same crop and the box by the console's rule (each axis by its factor) give the same objects
    crop = np.asarray(levels[-1][row0 : row0 + h, col0 : col0 + w])
    level_box = (np.array(box) - np.tile((factors[::-1] - 1) / 2, 2)) / np.tile(factors[::-1], 2)
    expected = segment_prompts(crop, litemedsam, boxes=level_box[None] - (col0, row0, col0, row0)).labels
    assert expected.any()
    assert 2 * ((preview.data > 0) & (expected > 0)).sum() / ((preview.data > 0).sum() + (expected > 0).sum()) > 0.98
    rows, cols = top + np.arange(side), left + np.arange(side)
    previewed = _sampled_at(preview, rows, cols) > 0
    assert 2 * (previewed & nucleus).sum() / (previewed.sum() + nucleus.sum()) > 0.6

    widget.commit()
    target = viewer.layers[TARGET_NAME]
    assert target.data.shape == ROUNDED_LEVELS[-1]
    # the labels level's far corner pixel lies over the centre of the block of slide pixels it stands for
    corner = np.subtract(ROUNDED_LEVELS[-1], 1)
    np.testing.assert_allclose(target.data_to_world(corner), corner * factors + (factors - 1) / 2, atol=0.01)
    # and its pixels' edges are the slide's: it covers every slide pixel, the last columns too
    scale, translate = np.asarray(target.scale), np.asarray(target.translate)
    edges = np.stack([translate - scale / 2, translate + (np.array(target.data.shape) - 0.5) * scale])
    np.testing.assert_allclose(edges, [[-0.5, -0.5], np.subtract(full, 0.5)], atol=0.01)
    # the committed object is the preview's, where it was shown (same level: the same pixels of the slide)
    committed = _sampled_at(target, rows, cols) > 0
    np.testing.assert_array_equal(committed, previewed)


def _sampled_at(layer, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The values of a Labels layer at the world points (rows x cols grid) of an image of scale 1, translate 0:
    where it lies, whatever its own grid (0 off it)."""
    data = np.asarray(layer.data)
    r = np.round((rows - layer.translate[0]) / layer.scale[0]).astype(int)
    c = np.round((cols - layer.translate[1]) / layer.scale[1]).astype(int)
    inside = (r[:, None] >= 0) & (r[:, None] < data.shape[0]) & (c[None] >= 0) & (c[None] < data.shape[1])
    values = data[np.clip(r, 0, data.shape[0] - 1)[:, None], np.clip(c, 0, data.shape[1] - 1)[None]]
    return np.where(inside, values, 0)


class _Found:
    """What the methods return, as far as the plane source reads it: labels on the plane they were given."""

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels


def test_prompts_reach_a_rounded_level_by_each_axis_factor(make_viewer, magnified_nucleus):
    """A click on a pyramid read at a level: each axis divided by its own factor, as the CLI and the console map
    them (the rows' factor along both put a click at the far column of a 1001 x 1023 image's 8x level, 125 x 129
    px, 1.3 level px (10 px of the image) right of it), on a small pyramid's level read whole and on the crop of a
    whole slide's level around the click, whose pixels are the level's there."""
    from napari_promptseg._widgets.interactive.geometry import plane_geometry, plane_source

    image = magnified_nucleus[0]
    viewer = make_viewer()
    small = ((1001, 1023), (501, 512), (125, 129))
    # (the pyramid, the click, the model's input size, the object size): the small pyramid's 8x level read whole for
    # a 64 px model, the slide's 4x level around the click for 200 px objects
    for shapes, click, input_size, size in (
        (small, (1020.0, 998.0), 64, None),
        (ROUNDED_LEVELS, (6990.0, 9990.0), 64, 200),
    ):
        levels = [_rounded_level(image, shapes[0], shape) for shape in shapes]
        layer = viewer.add_image(levels, multiscale=True, contrast_limits=(0, 255))
        source = plane_source(layer, plane_geometry(viewer, layer))
        seen = {}

        def method(plane, crop, seen=seen, click=click, **_):
            seen.update(plane=np.asarray(plane), crop=crop, click=crop.to_level([click], 2)[0])
            return _Found(np.zeros(np.shape(plane)[:2], np.uint32))

        bounds = (click[0] - 4, click[1] - 4, click[0] + 4, click[1] + 4)
        source.segment_at_level(method, input_size, size, None, bounds)
        level = next(
            k for k, shape in enumerate(shapes) if np.isclose(shape[0] * seen["crop"].factors[0], shapes[0][0])
        )
        assert level == 2
        fy, fx = np.divide(shapes[0], shapes[level])
        x, y = (click[0] - (fx - 1) / 2) / fx, (click[1] - (fy - 1) / 2) / fy  # on the level
        row0, col0 = seen["crop"].offset
        assert (row0 > 0 and col0 > 0) == (size is not None)  # the slide's crop, the small pyramid's whole level
        np.testing.assert_allclose(seen["click"] + (col0, row0), (x, y), atol=1e-9)
        h, w = seen["plane"].shape
        np.testing.assert_array_equal(seen["plane"], np.asarray(levels[level][row0 : row0 + h, col0 : col0 + w]))
        viewer.layers.clear()


def test_multiscale_image_is_segmented_at_the_pyramid_level_of_the_boxes(make_viewer, qtbot, nuclei_sample):
    """A pyramid layer (the sample magnified 4x, so its nuclei are 4x larger): a box is segmented on the coarse level
    that has the boxes' working resolution, not on the full resolution, and the preview lies on the full-resolution
    grid over the right nucleus."""
    from napari_promptseg._widgets.interactive.geometry import plane_source
    from napari_promptseg.tiling import box_object_size

    image, truth, label, (r0, c0, r1, c1) = nuclei_sample
    big = np.repeat(np.repeat(image, 4, axis=0), 4, axis=1)
    nucleus = np.repeat(np.repeat(truth == label, 4, axis=0), 4, axis=1)
    pyramid = [big, big[::2, ::2], big[::4, ::4]]
    viewer = make_viewer()
    layer = viewer.add_image(pyramid, name="slide", multiscale=True)
    widget = add_widget(viewer)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    box = (4 * c0, 4 * r0, 4 * c1 + 3, 4 * r1 + 3)  # x0, y0, x1, y1 at full resolution

    # the level read for this box: coarser than full resolution, and no coarser than the working scale needs
    source = plane_source(layer, plane_geometry(viewer, layer))
    plane, _, factor = source.read(256, box_object_size(np.array([box])))
    assert factor > 1 and plane.shape == pyramid[int(np.log2(factor))].shape
    assert source.read(256, None)[2] == 4.0  # the whole plane: the coarsest level still has 256 px per side

    shapes = viewer.add_shapes(name="boxes")
    shapes.add_rectangles(np.array([[box[1], box[0]], [box[3], box[2]]]))
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    preview = preview_layer(viewer)
    assert preview.data.shape == big.shape
    assert dice(preview.data == 1, nucleus) > MIN_DICE


def test_a_level_result_layer_lies_over_the_full_resolution_pixels_it_stands_for(make_viewer):
    """placement() put a pyramid level's pixel i at full-resolution pixel i * factor (its top-left pixel), where the
    whole-slide path and the labels the console and the CLI bring back put it at the centre of the block it
    stands for: a 4x level's labels lay 1.5 px up and left of those, and of the objects. Both use one rule now: on
    the real nuclei labels magnified 4x, every full-resolution pixel shows the label of its block."""
    from napari_promptseg._sample_data import nuclei
    from napari_promptseg._widgets._common import placement
    from napari_promptseg._widgets.interactive.geometry import LevelCrop, level_geometry, plane_geometry
    from napari_promptseg.io.layer_objects import data_to_world_matrix

    (_, _, _), (truth, _, _) = nuclei()
    full = np.kron(truth, np.ones((4, 4), truth.dtype))  # the labels at full resolution; the 1/4 level is truth
    where = {"scale": (0.5, 0.25), "translate": (10.0, -3.0)}
    viewer = make_viewer()
    image = viewer.add_image([np.zeros(full.shape, np.uint8), np.zeros(truth.shape, np.uint8)], **where)
    on_level = napari.layers.Labels(truth, **placement(image, 2, np.array([4.0, 4.0])))
    geom = level_geometry(plane_geometry(viewer, image), LevelCrop(4.0), truth.shape)
    whole_slide = napari.layers.Labels(truth, scale=geom.scale, translate=geom.translate)
    rows, cols = np.meshgrid(np.arange(full.shape[0]), np.arange(full.shape[1]), indexing="ij")
    pixels = np.stack([rows.ravel(), cols.ravel(), np.ones(rows.size)])
    world = data_to_world_matrix(image, [0, 1]) @ pixels  # every full-resolution pixel centre
    for layer in (on_level, whole_slide):
        at = np.round(np.linalg.inv(data_to_world_matrix(layer, [0, 1])) @ world).astype(int)
        np.testing.assert_array_equal(truth[at[0], at[1]].reshape(full.shape), full)


def test_an_object_smaller_than_a_pixel_of_a_slides_labels_level_is_said_not_committed(make_viewer, qtbot):
    """A large slide's objects are held at its finest level within 4096 x 4096 px: 32x coarser than a 130k px slide
    (here a 16k one whose pyramid has only that level besides). A small nucleus (8 x 10 px) falls between that
    level's pixel centres: the preview showed it, and the commit said "nothing to commit: draw a box ..., and wait
    for the preview". Now it says the object is smaller than a pixel of the labels level, and what to do instead."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    (image, _, _), (truth, _, _) = nuclei()
    small = next(r for r in regionprops(truth) if r.label == 34)  # 49 px, rows 23-30, columns 52-61
    side = 16384
    levels = [_rounded_level(image, (side, side), (n, n)) for n in (side, side // 32)]
    viewer = make_viewer()
    viewer.add_image(levels, name="slide", multiscale=True, contrast_limits=(0, 255))
    widget = add_widget(viewer)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    r0, c0, r1, c1 = np.add(small.bbox, 10 * 256)  # in the copy of the sample at (2560, 2560)
    boxes = viewer.add_shapes(name="boxes")
    boxes.add_rectangles(np.array([[r0, c0], [r1 - 1, c1 - 1]], float))
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    assert preview_layer(viewer).data.any()  # the object previewed, on the slide's full resolution

    start = len(notification_manager.records)
    widget.commit()
    said = [n.message for n in notification_manager.records[start:] if n.severity == NotificationSeverity.WARNING]
    assert any("smaller than a pixel of the labels level" in m and "32x coarser" in m for m in said), said
    assert TARGET_NAME not in viewer.layers and len(boxes.data) == 1  # nothing made, the box kept


def test_a_multichannel_whole_slide_with_its_channel_axis_is_segmented_on_a_crop(make_viewer, qtbot, magnified_nucleus):
    """A (C, Y, X) slide pyramid as one layer (a script's ``add_image(levels, multiscale=True)`` of a fluorescence
    scan), its channel axis 0 chosen: it was not taken as a whole slide (only channel-less pyramids were), so a box
    read both channels' full-resolution planes (2 x 16k x 16k) and made full-resolution labels (1 GB), as on a slide
    before the whole-slide path. It is a whole slide now: read on a crop at its level, committed at its labels level,
    on the nucleus boxed (its channel 0, the nuclear stain, given to the model: as a grey slide's)."""
    import dask.array as da

    from napari_promptseg._widgets.interactive.geometry import plane_source

    image, nucleus, (r0, c0, r1, c1) = magnified_nucleus
    side = 16384
    shapes = [(side // f, side // f) for f in (1, 2, 4, 8)]
    levels = [
        da.stack([_rounded_level(image, (side, side), s), _rounded_level(255 - image, (side, side), s)]) for s in shapes
    ]
    viewer = make_viewer()
    layer = viewer.add_image(levels, name="fluorescence", multiscale=True, contrast_limits=(0, 255))
    assert plane_source(layer, plane_geometry(viewer, layer, channel_axis=0)).whole_slide
    widget = add_widget(viewer)
    widget.channel_combo.setCurrentIndex(1)  # axis 0 (2 channels)
    assert widget.channel_combo.currentData() == 0
    widget.channels_edit.setText("0")
    widget.channels_edit.editingFinished.emit()
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    top = left = 8 * 1024  # a copy of the magnified sample
    viewer.add_shapes(name="boxes").add_rectangles(np.array([[top + r0, left + c0], [top + r1 - 1, left + c1 - 1]]))
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    preview = preview_layer(viewer)
    assert preview.data.size < 4096**2, preview.data.shape  # a crop, not the slide
    rows, cols = top + np.arange(1024), left + np.arange(1024)
    assert dice(_sampled_at(preview, rows, cols) > 0, nucleus) > MIN_DICE
    widget.commit()
    target = viewer.layers[TARGET_NAME]
    assert target.data.shape == (4096, 4096)
    assert dice(_sampled_at(target, rows, cols) > 0, nucleus) > MIN_DICE


def _box_on_plane(z: int, box: tuple) -> np.ndarray:
    """The four corners of box (x0, y0, x1, y1) on plane ``z`` of a 3D Shapes layer."""
    x0, y0, x1, y1 = box
    return np.array([[z, y0, x0], [z, y0, x1], [z, y1, x1], [z, y1, x0]], float)


def test_a_stack_pyramid_is_segmented_at_the_pyramid_level_of_the_boxes(make_viewer, qtbot, nuclei_sample):
    """A (Z, Y, X) pyramid (a z-stack OME-Zarr's levels, Z kept at every level) was read at full resolution, as only
    pyramids of one plane were read at a level: slower, and a stack of large planes refused as '... exceeds the
    limit'. Its plane shown is read at the level the box needs, as a single plane's, and segmented there."""
    from napari_promptseg._widgets.interactive.geometry import plane_source
    from napari_promptseg.tiling import box_object_size

    image, truth, label, (r0, c0, r1, c1) = nuclei_sample
    big = np.repeat(np.repeat(image, 4, axis=0), 4, axis=1)
    nucleus = np.repeat(np.repeat(truth == label, 4, axis=0), 4, axis=1)
    stack = np.stack([255 - big, big])  # the nuclei on plane 1
    pyramid = [stack, stack[:, ::2, ::2], stack[:, ::4, ::4]]
    viewer = make_viewer()
    layer = viewer.add_image(pyramid, name="zstack", multiscale=True)
    viewer.dims.set_current_step(0, 1)
    widget = add_widget(viewer)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    box = (4 * c0, 4 * r0, 4 * c1 + 3, 4 * r1 + 3)

    source = plane_source(layer, plane_geometry(viewer, layer))
    plane, _, factor = source.read(256, box_object_size(np.array([box])))
    assert factor > 1 and plane.shape == pyramid[int(np.log2(factor))].shape[1:]
    np.testing.assert_array_equal(plane, pyramid[int(np.log2(factor))][1])  # the plane shown, not plane 0

    viewer.add_shapes(name="boxes", ndim=3).add_rectangles(_box_on_plane(1, box))
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    preview = preview_layer(viewer)
    assert preview.data.shape == (1, *big.shape)
    assert dice(preview.data[0] == 1, nucleus) > MIN_DICE


def test_a_stack_pyramid_of_whole_slide_planes_is_segmented_on_a_crop_and_committed_at_its_labels_level(
    make_viewer, qtbot, magnified_nucleus
):
    """A (Z, Y, X) pyramid of planes larger than 4096 x 4096 px (a z-stack OME-Zarr of whole-slide planes) was
    refused ('... px planes on a stack; choose its channel axis'): its full-resolution labels were too large to hold.
    It is segmented as a whole slide is now: the box's surroundings on the plane shown, at the box's level (the
    full resolution is not read), and committed into a Labels layer of the stack at its finest level whose planes,
    and whole stack, fit the labels' limits, on that plane, over the pixels drawn on."""
    from types import SimpleNamespace

    import dask.array as da

    image, nucleus, (r0, c0, r1, c1) = magnified_nucleus
    full = (5001, 5003)  # rounded level sizes, as a scanner's
    shapes = [full, (2500, 2501), (1250, 1250)]
    reads: list = []

    def counted(level, k):
        def read(block):
            if k == 0 and block.size:
                reads.append(block.shape)
            return block

        return level.map_blocks(read, dtype=level.dtype)

    levels = [
        counted(da.stack([_rounded_level(255 - image, full, s), _rounded_level(image, full, s)] * 2)[:3], k)
        for k, s in enumerate(shapes)
    ]
    viewer = make_viewer()
    layer = viewer.add_image(levels, name="zstack", multiscale=True, contrast_limits=(0, 255))
    viewer.dims.set_current_step(0, 1)  # the nuclei plane
    widget = add_widget(viewer)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    side = image.shape[0]
    top, left = full[0] - side, full[1] - side  # the sample's copy at the bottom-right corner
    box = (left + c0, top + r0, left + c1 - 1, top + r1 - 1)
    start = len(notification_manager.records)
    viewer.add_shapes(name="boxes", ndim=3).add_rectangles(_box_on_plane(1, box))
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    assert not records_since(start, NotificationSeverity.ERROR), widget.runner.widget.status.text()
    preview = preview_layer(viewer)
    assert preview.data.shape[0] == 1 and preview.data.any()
    assert preview.translate[0] == 1  # on the plane shown
    widget.commit()
    assert not reads, "the full-resolution level was read"
    target = viewer.layers[TARGET_NAME]
    assert target.data.shape == (3, *shapes[1])  # 3 planes of 2500 x 2501: within both limits
    np.testing.assert_allclose(target.scale[1:], np.divide(full, shapes[1]))
    assert not target.data[[0, 2]].any(), "only the plane shown"
    rows, cols = top + np.arange(side), left + np.arange(side)
    plane = SimpleNamespace(data=target.data[1], scale=target.scale[1:], translate=target.translate[1:])
    assert dice(_sampled_at(plane, rows, cols) > 0, nucleus) > MIN_DICE
    assert layer.data[0].shape == (3, *full)
    # "find all" on it: the plane shown at the box's level (its 1250 px level: it fits a Labels layer), into a layer
    # on the labels level as the commits (it was refused, the command's)
    viewer.layers["boxes"].add_rectangles(_box_on_plane(1, box))
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    start = len(notification_manager.records)
    widget.find_all()
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    assert not records_since(start, NotificationSeverity.ERROR), widget.runner.widget.status.text()
    assert not reads, "the full-resolution level was read"
    found = viewer.layers["zstack find-all"]
    assert found.data.shape == target.data.shape and not found.data[[0, 2]].any()
    plane = SimpleNamespace(data=found.data[1], scale=found.scale[1:], translate=found.translate[1:])
    sampled = _sampled_at(plane, rows, cols)
    assert (sampled > 0)[nucleus].mean() > MIN_DICE  # the boxed nucleus among all found
    assert len(np.unique(sampled)) > 10  # the others like it around it
