"""The scale-aware tiling layer: working scale from the object size, tiles whose cores partition the image, one
intensity window for all tiles."""

from __future__ import annotations

import numpy as np
import pytest

from napari_promptseg.errors import PromptsegError
from napari_promptseg.tiling import (
    MAX_UPSCALE,
    OBJECT_FRACTION,
    SCALE_SLACK,
    IntensityWindow,
    TileGrid,
    box_object_size,
    choose_scale,
    read_tile,
    to_working,
    typical_object_size,
)


def test_small_objects_in_a_large_image_get_many_tiles_at_their_scale():
    scale = choose_scale((4096, 4096), 256, 20.0)
    ideal = OBJECT_FRACTION * 256 / 20.0
    # a typical object spans ~10 % of the model input, give or take the slack that saves tiles
    assert ideal / SCALE_SLACK - 1e-6 <= scale.scale <= ideal + 1e-6
    assert scale.tiles > 100 and scale.overlap >= 2.5 * 20
    assert scale.summary()["source"] == "object size"


def test_whole_image_when_objects_are_large_or_unknown():
    assert choose_scale((512, 700), 256, None).tiles == 1
    big = choose_scale((522, 775), 256, 100.0)  # glands: the whole image already shows them large enough
    assert big.tiles == 1 and big.scale == pytest.approx(256 / 775)
    # a 256 px image with 22 px objects is one tile: not four tiles for 15 % more pixels per object
    assert choose_scale((256, 256), 256, 22.0).tiles == 1


def test_object_size_must_be_positive():
    with pytest.raises(PromptsegError, match="positive"):
        choose_scale((100, 100), 256, 0.0)
    with pytest.raises(PromptsegError, match="no labelled object"):
        typical_object_size(np.zeros((10, 10), int))


@pytest.mark.parametrize("shape,tile,overlap", [((1000, 1000), 300, 60), ((700, 1100), 326, 63), ((90, 5000), 64, 8)])
def test_tile_cores_partition_the_image(shape, tile, overlap):
    grid = TileGrid(shape, tile, overlap)
    owners = np.zeros(shape, int)
    ys, xs = np.mgrid[: shape[0], : shape[1]]
    for t in grid:
        assert 0 <= t.y0 < t.y1 <= shape[0] and 0 <= t.x0 < t.x1 <= shape[1]
        core = t.owns(xs + 0.5, ys + 0.5)
        owners += core
        # a core lies inside its tile, at least half the overlap from every border shared with a neighbour
        rows, cols = np.nonzero(core)
        assert rows.min() >= t.y0 and rows.max() < t.y1 and cols.min() >= t.x0 and cols.max() < t.x1
        if t.y0 > 0:
            assert rows.min() - t.y0 >= overlap // 2
        if t.x1 < shape[1]:
            assert t.x1 - 1 - cols.max() >= overlap // 2 - 1
    assert (owners == 1).all()  # every pixel has exactly one owner: nothing lost, nothing doubled


def test_one_intensity_window_for_every_tile():
    rng = np.random.default_rng(0)
    image = rng.integers(30000, 36000, size=(600, 900, 1), dtype=np.uint16)  # 16-bit fluorescence-like
    image[100, 100] = 65535  # a hot pixel must not set the window
    window = IntensityWindow.measure(image)
    assert window.hi[0] < 36000
    grid = TileGrid(image.shape, 300, 50)
    tiles = [read_tile(image, t, window) for t in grid]
    # the same raw value maps to the same normalised value in every tile
    value = 33000
    expected = (value - window.lo[0]) / (window.hi[0] - window.lo[0])
    for t, pixels in zip(grid, tiles, strict=True):
        raw = image[t.slices]
        sel = raw[..., 0] == value
        if sel.any():
            assert np.allclose(pixels[..., 0][sel], expected, atol=1e-5)
    assert to_working(tiles[0], 0.5).shape[:2] == (150, 150)


def test_box_object_size():
    assert box_object_size(np.array([[0, 0, 10, 40], [5, 5, 25, 25]])) == pytest.approx(20.0)


def test_pyramid_level_matches_the_working_scale():
    from napari_promptseg.tiling import pyramid_level

    shapes = [(40000, 30000), (20000, 15000), (10000, 7500), (5000, 3750)]
    assert pyramid_level(shapes, 1.0) == (0, 1.0)
    assert pyramid_level(shapes, 0.3) == (1, 2.0)  # 1/0.3 = 3.3: level 1/2 still has the resolution, 1/4 not
    assert pyramid_level(shapes, 0.25) == (2, 4.0)
    assert pyramid_level(shapes, 0.01) == (3, 8.0)


def test_level_coordinates_land_on_the_pixels_their_labels_come_back_on():
    """Points and boxes found on a pyramid level came back multiplied by its factor (level pixel i at full-resolution
    pixel i * factor), the labels by the centre of the block each level pixel stands for: a 4x level's points lay
    1.5 px up and left of their objects. One rule now: on the real nuclei labels, each object's centre found on the
    level and brought back is the centre of that object's full-resolution pixels, and goes back to the level."""
    from scipy import ndimage

    from napari_promptseg._sample_data import nuclei
    from napari_promptseg.tiling import full_to_level, level_to_full, upsample_labels

    (_, _, _), (truth, _, _) = nuclei()
    ids = np.unique(truth)[1:]
    centres = np.array(ndimage.center_of_mass(truth > 0, truth, ids))  # (row, col) on the level
    for factor in (2.0, 4.0, 8.0):
        full = upsample_labels(truth, (int(truth.shape[0] * factor), int(truth.shape[1] * factor)))
        expected = np.array(ndimage.center_of_mass(full > 0, full, ids))
        np.testing.assert_allclose(level_to_full(centres, factor), expected, atol=1e-6)
        np.testing.assert_allclose(full_to_level(expected, factor), centres, atol=1e-6)


def test_empty_border_does_not_stretch_the_window():
    rng = np.random.default_rng(1)
    image = np.zeros((400, 400, 1), np.uint16)
    image[:300, :300] = rng.integers(33000, 36000, size=(300, 300, 1))  # a frame in a larger, empty canvas
    window = IntensityWindow.measure(image)
    assert window.lo[0] > 30000  # the window is the frame's, not 0..36000


def test_a_png_mask_of_255_is_a_mask_whose_components_are_the_objects():
    """A 0/255 mask with several blobs was read as one object of id 255: one-shot then chose the single-region
    mode for a reference of many objects, and the object size was that of all blobs together."""
    from napari_promptseg.methods.instances import is_many_objects, reference_objects
    from napari_promptseg.tiling import label_objects, typical_object_size

    mask = np.zeros((20, 30), np.uint8)
    for k in range(4):
        mask[2:6, 2 + 7 * k : 6 + 7 * k] = 255
    assert label_objects(mask).max() == 4 and reference_objects(mask).max() == 4
    assert is_many_objects(mask) and not is_many_objects(mask[:, :9])
    assert typical_object_size(mask) == pytest.approx(np.sqrt(4 * 16 / np.pi))
    ids = mask.astype(np.int32) // 255 * 7  # two ids (3 and 7): a label image, kept as it is
    ids[2:6, 2:6] = 3
    assert label_objects(ids).max() == 7 and np.array_equal(np.unique(label_objects(ids)), [0, 3, 7])


def test_a_soft_mask_is_a_mask():
    """A resized or probability mask (floats up to 1) is a mask, not one object per distinct value."""
    from napari_promptseg.tiling import label_objects

    soft = np.zeros((10, 20), np.float32)
    soft[1:4, 1:4], soft[5:8, 10:14] = 0.5, 0.7
    soft[2, 2] = 1.0
    assert label_objects(soft).max() == 2
    negative = np.zeros((4, 4), np.int32)
    negative[0, :2], negative[2, :2], negative[3, 3] = 5, 9, -1
    assert sorted(np.unique(label_objects(negative))) == [0, 5, 9]


def test_an_object_size_the_upscale_cap_overrides_is_reported_and_warned(tmp_path, capsys):
    """--object-size 3 on a 256 px image asks for 6.8x enlargement; MAX_UPSCALE caps it, so the objects are worked
    as if about 5.8 px. The report said only {'scale': 3.5556, 'object_size': 3.0}; it now says what was asked for,
    what was used and why, and so does a warning."""
    import json

    import tifffile
    from skimage import data

    from napari_promptseg.cli import main

    capped = choose_scale((256, 256), 256, 3.0)
    assert capped.capped and capped.scale <= MAX_UPSCALE
    summary = capped.summary()
    assert summary["object_size"] == 3.0 and summary["scale"] == round(capped.scale, 4)  # the keys as before
    assert summary["requested_scale"] == round(OBJECT_FRACTION * 256 / 3.0, 4) and summary["scale_capped"] is True
    assert summary["object_size_used"] == pytest.approx(3.0 * summary["requested_scale"] / capped.scale, abs=0.05)
    assert summary["object_size_used"] > 5
    # chosen on a pyramid's 1/2 level, reported in full-resolution pixels: still capped (6.8x asked for there read as
    # 3.4x, under the cap), and the object size used is the one asked for, as at the level
    full = capped.at_full_resolution(2.0).summary()
    assert full["scale_capped"] is True and full["requested_scale"] < MAX_UPSCALE
    assert full["object_size_used"] == pytest.approx(2 * summary["object_size_used"], abs=0.1)
    assert not choose_scale((4096, 4096), 256, 20.0).capped  # no cap, no warning
    assert choose_scale((4096, 4096), 256, 20.0).cap_warning("x") is None
    # a 32 px patch fills the model's input (8x) whatever its objects' size: no cap was applied, none is warned of
    patch = choose_scale((32, 32), 256, 20.0)
    assert patch.scale == 8.0 and not patch.capped and patch.cap_warning("patch") is None

    image = tmp_path / "coins.tif"
    tifffile.imwrite(image, data.coins()[:256, :256])
    out = tmp_path / "out"
    argv = ["segment", str(image), "--box", "40", "60", "120", "140", "--object-size", "3", "-o", str(out)]
    assert main(argv) == 0
    record = json.loads((out / "report.json").read_text())["images"][0]
    assert record["working_scale"]["requested_scale"] > MAX_UPSCALE >= record["working_scale"]["scale"]
    used = record["working_scale"]["object_size_used"]
    warning = (
        f"{image}: objects of 3 px (object size) ask for 6.8x enlargement, above the cap of 4x (interpolation adds "
        f"no detail); worked at {record['working_scale']['scale']:.2f}x, as for objects of about {used:.1f} px"
    )
    assert len(record["warnings"]) == 1 and record["warnings"][0].startswith(warning), record["warnings"]
    assert f"warning: {warning}" in capsys.readouterr().err
