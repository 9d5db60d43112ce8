"""The Interactive widget on a whole-slide pyramid: a 16k x 16k, 4-level dask pyramid tiled from the bundled DSB2018
nuclei (real pixels), with the real LiteMedSAM model. A box is segmented on a crop around it, and its object is
committed into a Labels layer at a level of the slide, without a full-resolution array ever being allocated.

Run under a display: ``xvfb-run -a python -m pytest tests/test_widget_wholeslide.py``.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager
from skimage.measure import regionprops

from napari_promptseg._sample_data import nuclei
from napari_promptseg._widgets.interactive import PREVIEW_NAME, TARGET_NAME, InteractiveWidget

pytestmark = pytest.mark.gui

FIRST_RUN_MS = 240_000
SIDE = 16384  # 64 x 64 copies of the 256 px sample
FULL_PLANE_BYTES = SIDE * SIDE  # the full-resolution plane as uint8: 256 MB (labels and floats are 2-4x that)
#: what one box's preview may allocate (numpy, Python; tracemalloc): napari's own new layers (vispy textures, the
#: thumbnails) and first imports take ~40 MB here, the crop a few MB; a quarter of the full plane as uint8
PREVIEW_BYTES = FULL_PLANE_BYTES // 4
TILE_ROW, TILE_COL = 37, 22  # the copy of the sample the box is drawn on


def _tiled_level(tile: np.ndarray, side: int, chunk: int = 1024):
    """A lazy ``side`` x ``side`` array of ``tile`` repeated, every chunk made only when read."""
    import dask.array as da

    h, w = tile.shape[:2]

    def fill(block: np.ndarray, block_info=None) -> np.ndarray:
        (r0, r1), (c0, c1) = block_info[0]["array-location"][:2]
        return tile[np.ix_(np.arange(r0, r1) % h, np.arange(c0, c1) % w)]

    rest = tile.shape[2:]  # an RGB tile's colour axis: one chunk
    blank = da.zeros((side, side, *rest), dtype=tile.dtype, chunks=(chunk, chunk, *rest))
    return blank.map_blocks(fill, dtype=tile.dtype)


def _slide_and_widget(viewer, qtbot, image: np.ndarray, factors=(1, 2, 4, 8)):
    """The sample tiled into a SIDE x SIDE pyramid of ``factors`` in ``viewer``, and the Interactive widget on it
    (idle: the model loaded)."""
    levels = [_tiled_level(image[::f, ::f], SIDE // f) for f in factors]
    slide = viewer.add_image(levels, name="slide", multiscale=True, contrast_limits=(0, 255))
    widget = InteractiveWidget(viewer)
    viewer.window.add_dock_widget(widget, name="promptseg interactive")
    qtbot.waitUntil(lambda: widget.is_idle, timeout=FIRST_RUN_MS)
    return slide, widget


def _sampled_at(layer, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The values of a Labels layer at the world points (rows x cols grid) of an image of scale 1, translate 0:
    where it lies, whatever its own grid."""
    data = np.asarray(layer.data)
    r = np.round((rows - layer.translate[0]) / layer.scale[0]).astype(int)
    c = np.round((cols - layer.translate[1]) / layer.scale[1]).astype(int)
    inside = (r[:, None] >= 0) & (r[:, None] < data.shape[0]) & (c[None] >= 0) & (c[None] < data.shape[1])
    values = data[np.clip(r, 0, data.shape[0] - 1)[:, None], np.clip(c, 0, data.shape[1] - 1)[None]]
    return np.where(inside, values, 0)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * (a & b).sum() / max(a.sum() + b.sum(), 1)


def test_a_box_on_a_whole_slide_is_segmented_on_a_crop_and_committed_without_full_resolution_arrays(make_viewer, qtbot):
    """A box on a 16k x 16k pyramid read the full-resolution plane (the box's level) into memory, upsampled the
    labels to it and made a 16k x 16k uint32 target: gigabytes for one nucleus. Now the level is read only around
    the box, the preview is that crop placed over the slide, and the commit goes to a Labels layer at the slide's
    4096 px level (napari paints it and undoes the commit); the object lands on the nucleus."""
    (image, _, _), (truth, _, _) = nuclei()
    largest = max(regionprops(truth), key=lambda r: r.area)
    nucleus = truth == largest.label
    viewer = make_viewer()
    slide, widget = _slide_and_widget(viewer, qtbot, image)

    top, left = TILE_ROW * 256, TILE_COL * 256
    r0, c0, r1, c1 = largest.bbox
    tracemalloc.start()
    try:
        shapes = viewer.add_shapes(name="boxes")
        shapes.add_rectangles(np.array([[top + r0, left + c0], [top + r1 - 1, left + c1 - 1]], float))
        qtbot.waitUntil(lambda: widget.is_idle, timeout=FIRST_RUN_MS)
        _, preview_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        preview = viewer.layers[PREVIEW_NAME]
        assert preview.data.size < 4096**2, preview.data.shape  # a crop, not the slide
        rows, cols = top + np.arange(256), left + np.arange(256)
        assert _dice(_sampled_at(preview, rows, cols) > 0, nucleus) > 0.6
        widget.commit()
        _, commit_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert preview_peak < PREVIEW_BYTES, f"the preview allocated {preview_peak / 2**20:.0f} MB"
    target = viewer.layers[TARGET_NAME]
    assert target.data.shape == (4096, 4096) and target.data.dtype == np.uint32
    # napari's display of a uint32 Labels layer makes int64 temporaries (~4x its bytes): 250 MB here, where a
    # full-resolution target (1 GB) made 4 GB
    assert target.data.nbytes <= FULL_PLANE_BYTES // 4  # 1/16 of the full-resolution uint32 labels
    assert commit_peak < 5 * target.data.nbytes, f"the commit allocated {commit_peak / 2**20:.0f} MB"
    np.testing.assert_allclose(target.extent.world, slide.extent.world, atol=2)  # over the whole slide
    assert _dice(_sampled_at(target, rows, cols) > 0, nucleus) > 0.5  # at 1/4 resolution, on the nucleus
    assert np.unique(target.data).tolist() == [0, 1]
    target.undo()  # napari's own undo of the commit
    assert not target.data.any()


def test_a_box_on_an_rgb_whole_slide_lands_on_its_nucleus(make_viewer, qtbot):
    """Slides are mostly RGB: the crop keeps the colour axis, and the object lands where it does on a grey slide."""
    (image, _, _), (truth, _, _) = nuclei()
    largest = max(regionprops(truth), key=lambda r: r.area)
    viewer = make_viewer()
    slide, widget = _slide_and_widget(viewer, qtbot, np.stack([image] * 3, axis=-1))
    assert slide.rgb
    top, left = TILE_ROW * 256, TILE_COL * 256
    r0, c0, r1, c1 = largest.bbox
    viewer.add_shapes(name="boxes").add_rectangles(
        np.array([[top + r0, left + c0], [top + r1 - 1, left + c1 - 1]], float)
    )
    qtbot.waitUntil(lambda: widget.is_idle, timeout=FIRST_RUN_MS)
    rows, cols = top + np.arange(256), left + np.arange(256)
    assert _dice(_sampled_at(viewer.layers[PREVIEW_NAME], rows, cols) > 0, truth == largest.label) > 0.6
    widget.commit()
    target = viewer.layers[TARGET_NAME]
    assert target.data.shape == (4096, 4096)
    assert _dice(_sampled_at(target, rows, cols) > 0, truth == largest.label) > 0.5


def test_find_all_on_a_whole_slide_is_refused_pointing_to_the_cli(make_viewer, qtbot):
    """Find all on a whole slide read the plane at the boxes' level (here its full resolution) and made a full-
    resolution Labels layer: a job for the CLI, which reads the slide tile by tile. It is refused, saying so (a level
    that fits a Labels layer is segmented: tests/test_widget_wholeslide_find_all.py)."""
    (image, _, _), _ = nuclei()
    viewer = make_viewer()
    _, widget = _slide_and_widget(viewer, qtbot, image)
    boxes = viewer.add_shapes(name="boxes")
    boxes.add_rectangles(np.array([[1000.0, 1000.0], [1030.0, 1030.0]]))
    qtbot.waitUntil(lambda: widget.is_idle, timeout=FIRST_RUN_MS)
    start = len(notification_manager.records)
    widget.find_all()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=FIRST_RUN_MS)  # refused once the model says its input size
    errors = [n.message for n in notification_manager.records[start:] if n.severity == NotificationSeverity.ERROR]
    assert any("16384 x 16384 px level, too large here: `promptseg segment --find-all`" in m for m in errors), errors
    # the command in full, one click away
    assert "--find-all --box 1000 1000 1030 1030 -o OUT" in widget.runner.widget.details
    assert "slide find-all" not in [layer.name for layer in viewer.layers]


def test_boxes_far_apart_on_a_whole_slide_are_refused_not_read_between(make_viewer, qtbot):
    """Two boxes at opposite corners of a whole slide span nearly all of it: the crop around them would be the
    slide's full resolution. The preview is refused, saying to prompt one region at a time, and nothing is read."""
    (image, _, _), _ = nuclei()
    viewer = make_viewer()
    _, widget = _slide_and_widget(viewer, qtbot, image)
    boxes = viewer.add_shapes(name="boxes")
    boxes.add_rectangles(np.array([[100.0, 100.0], [130.0, 130.0]]))
    boxes.add_rectangles(np.array([[SIDE - 130.0, SIDE - 130.0], [SIDE - 100.0, SIDE - 100.0]]))
    qtbot.waitUntil(lambda: widget.is_idle, timeout=FIRST_RUN_MS)
    status = widget.runner.widget.status.text() + (widget.runner.widget.details or "")
    assert widget.runner.state == "failed" and "prompt one region at a time" in status, status
    assert not viewer.layers[PREVIEW_NAME].data.any() if PREVIEW_NAME in viewer.layers else True


def test_a_whole_slide_whose_pyramid_stops_at_a_large_level_is_not_encoded_whole(make_viewer, qtbot):
    """A slide whose coarsest level is 8k x 8k: opening it encoded that whole level (64 MB of pixels, more as
    floats) for an embedding no box preview uses. It is skipped, saying that each box's surroundings are encoded."""
    (image, _, _), _ = nuclei()
    viewer = make_viewer()
    _, widget = _slide_and_widget(viewer, qtbot, image, factors=(1, 2))
    status = widget.runner.widget.status.text()
    assert "too large to encode whole" in status and widget.runner.state != "failed", status


def test_labels_of_a_crop_move_to_a_coarser_level_on_the_pixels_they_cover():
    """A crop at full resolution (offset (16, 16)) resampled to the 1/4 level: nearest pixel centre, only the
    region it covers, placed where it lies; a level pixel's centre is the centre of the pixels it stands for."""
    from napari_promptseg._widgets.interactive.geometry import LevelCrop, PlaneGeometry, level_geometry, resample_crop

    full = np.zeros((64, 64), np.uint8)
    full[20:40, 23:45] = 1
    labels, where = resample_crop(full[16:48, 16:48], LevelCrop(1.0, (16, 16)), LevelCrop(4.0), (16, 16))
    assert where == LevelCrop(4.0, (4, 4))
    np.testing.assert_array_equal(labels, full[2::4, 2::4][4:12, 4:12])
    geom = PlaneGeometry("slide", (64, 64), 0, 1, (0, 0), None, (0.5, 0.5), (10.0, 20.0), None)
    placed = level_geometry(geom, where, labels.shape)
    assert placed.scale == (2.0, 2.0) and placed.translate == (10.0 + 0.5 * 17.5, 20.0 + 0.5 * 17.5)
