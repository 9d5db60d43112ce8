"""Pyramids (a multiscale layer's data) passed to the console functions: read at the level the CLI reads, results
back on the full-resolution grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
from skimage import data

from napari_promptseg.errors import PromptsegError
from napari_promptseg.models.preprocessing import read_pyramid_level
from napari_promptseg.tiling import level_to_full, upsample_labels

COINS = data.coins()  # real 303x384 uint8 greyscale photo of coins
BOXES = np.array([(40.0, 60.0, 120.0, 140.0), (150.0, 55.0, 220.0, 130.0)])  # two coins at the top left


def block_pyramid(image: np.ndarray, magnification: int, factors: tuple[int, ...]) -> list:
    """``image`` magnified ``magnification`` times (lazily: never read whole), then levels ``factors`` times
    coarser, each level pixel the block of full-resolution pixels it stands for; the last level is ``image``."""
    import dask.array as da

    lazy = da.from_array(image, chunks=image.shape)
    levels = [lazy.repeat(magnification // f, axis=0).repeat(magnification // f, axis=1) for f in factors]
    return [*levels, image]


def test_find_all_like_reads_a_pyramid_at_the_level_of_its_boxes(litemedsam):
    """find_all_like read a pyramid at full resolution (a 12k x 15k slide: refused as too big, a smaller one read
    whole), where segment and the CLI read the level the boxes' working scale needs. It reads that level now, and
    returns the labels and boxes at full resolution."""
    from napari_promptseg.methods.instances import find_all_like
    from napari_promptseg.methods.interactive import prompts_working_scale

    k = 40  # level 0 is the coins photo at 40x (186 M pixels, never read)
    levels = block_pyramid(COINS, k, (1, 2, 4, 8))
    boxes = BOXES * k
    level = read_pyramid_level(levels, lambda s: prompts_working_scale(s, litemedsam.input_size, boxes, None))
    assert level is not None and level.array is levels[-1]  # the boxes' level is the photo itself
    on_level = find_all_like(COINS, level.to_level(boxes), segmenter=litemedsam)
    assert len(on_level.boxes) > 2  # more coins than the two boxed
    result = find_all_like(levels, boxes, segmenter=litemedsam)
    assert result.labels.shape == levels[0].shape
    np.testing.assert_array_equal(result.labels, upsample_labels(on_level.labels, levels[0].shape))
    np.testing.assert_allclose(result.boxes, level.to_full(on_level.boxes))


def test_segment_instances_like_reads_a_pyramid_target_at_the_level_of_its_objects(litemedsam):
    """segment_instances_like read a pyramid target whole at full resolution; the CLI reads the coarsest level with
    the objects' working scale (the reference's objects, at full resolution). It reads that level now: the result
    is the level's, with the objects sought at the level's size, labels and boxes at full resolution."""
    from napari_promptseg._sample_data import nuclei
    from napari_promptseg.methods.instances import fit_exemplars, match_instances, segment_instances_like

    (image, _, _), (truth, _, _) = nuclei()
    zoom = np.ones((4, 4), np.uint8)
    big, big_truth = np.kron(image, zoom), np.kron(truth, zoom)  # a 4x magnification: nuclei of ~80 px
    slide = [big, big[::2, ::2], big[::4, ::4]]  # the 1/4 level is the sample itself
    model = fit_exemplars(litemedsam, big[..., None], big_truth)  # the reference at its own resolution
    result = segment_instances_like(big, big_truth, slide, segmenter=litemedsam, model=model)
    assert result.labels.shape == big.shape
    # the reference's objects sought on the 1/4 level, at their size there
    size = model.object_size / 4
    on_level = segment_instances_like(big, big_truth, image, segmenter=litemedsam, model=model, object_size=size)
    np.testing.assert_array_equal(result.labels, upsample_labels(on_level.labels, big.shape))
    assert result.scale.object_size == on_level.scale.object_size == size
    np.testing.assert_allclose(result.boxes, level_to_full(on_level.boxes, 4))
    assert match_instances(result.labels, big_truth)["f1"] > 0.7


def test_a_malformed_box_on_a_pyramid_is_refused_naming_it(litemedsam):
    """A box of three numbers on a pyramid failed with numpy's "cannot reshape array of size 3 into shape (4)"
    (the level was chosen from the boxes before they were checked); on a plain image it was refused naming it. Now
    both say which box is wrong, before any model loads."""
    import napari_promptseg
    from napari_promptseg.methods.instances import find_all_like

    levels = block_pyramid(COINS, 40, (1, 2))
    for image in (COINS, levels):
        with pytest.raises(PromptsegError, match="box 2: expected 4 numbers x0 y0 x1 y1, got 3"):
            napari_promptseg.segment(image, boxes=[BOXES[0], (1, 2, 3)], device="cpu")
        with pytest.raises(PromptsegError, match="box 2: expected 4 numbers x0 y0 x1 y1, got 3"):
            find_all_like(image, [BOXES[0], (1, 2, 3)], segmenter=litemedsam)


def test_a_slide_whose_boxes_need_its_full_resolution_is_read_there_tile_by_tile(litemedsam):
    """A box on a small object of a lazy slide past 150 M pixels (a 20k x 20k slide's nucleus, which needs its full
    resolution) was refused as too big ("downsample or tile the image"), though only the tiles around the box are
    read: the CLI could segment no nucleus of a slide whose pyramid has no level fine enough below that size. The
    limit stays on what is read whole."""
    import dask.array as da

    import napari_promptseg
    from napari_promptseg.models.preprocessing import DEFAULT_MAX_PIXELS, in_memory

    side = 12800  # 164 M pixels, never read whole: the coins photo tiled over it, chunk by chunk
    tiled = da.tile(da.from_array(COINS, chunks=COINS.shape), (side // COINS.shape[0] + 1, side // COINS.shape[1] + 1))
    slide = tiled[:side, :side].rechunk(1024)
    assert slide.size > DEFAULT_MAX_PIXELS
    row, col = 20 * COINS.shape[0], 20 * COINS.shape[1]  # a copy of the photo inside the slide
    box = BOXES[0] + [col, row, col, row]
    labels = napari_promptseg.segment(slide, boxes=[box], device="cpu")
    assert labels.shape == slide.shape
    rows, cols = np.nonzero(labels)
    x0, y0, x1, y1 = box
    # the coin's object, in the box (decoded in the tile around it) and nowhere else
    assert len(rows) > 0.1 * (x1 - x0) * (y1 - y0)
    assert x0 - 2 <= cols.min() and cols.max() <= x1 + 2 and y0 - 2 <= rows.min() and rows.max() <= y1 + 2
    with pytest.raises(PromptsegError, match="exceeds the limit of 150,000,000"):
        in_memory(slide[..., None], "slide")  # a model that takes it whole


def _nuclei_slide_and_library(path) -> tuple[np.ndarray, np.ndarray, object]:
    """A 512 x 256 slide of two copies of the bundled nuclei, its instance labels, and a library at ``path`` whose
    'nucleus' entry (many instances) is a part of it, at its pixel size."""
    from napari_promptseg._sample_data import nuclei
    from napari_promptseg.io.library import ReferenceLibrary

    (image, _, _), (truth, _, _) = nuclei()
    library = ReferenceLibrary.open(path)
    library.add("nucleus", image[:, :128], truth[:, :128], "cell nuclei", instances=True)
    second = np.where(truth > 0, truth + truth.max(), 0)  # the second copy's nuclei are other objects
    return np.tile(image, (2, 1)), np.concatenate([truth, second]), library


def test_the_library_reads_a_slide_at_the_level_its_many_instances_entrys_objects_need(
    litemedsam, tmp_path, monkeypatch
):
    """A text prompt read a pyramid at its whole-image level (1024 px) whatever answered: an 8k slide's nuclei were
    2.5 px there, and the library's nucleus entry (many instances) ran 4 min to find none. The library's
    many-instances entries now choose the level their objects need, as one-shot does (here the whole-image level is
    made 128 px, so that a 512 px slide shows it: its nuclei are 4 px there). The CLI reads that level of a file."""
    import tifffile

    import napari_promptseg.io.multiscale as multiscale
    from napari_promptseg.cli import main
    from napari_promptseg.methods.instances import match_instances
    from napari_promptseg.methods.text import segment_text

    slide, truth, library = _nuclei_slide_and_library(tmp_path / "library")
    monkeypatch.setattr(multiscale, "WHOLE_IMAGE_SIDE", 128)
    levels = [slide, slide[::2, ::2], slide[::4, ::4]]
    result = segment_text(levels, "nuclei", route="library", library=library, segmenter=litemedsam)
    assert result.heatmap_factor == 1.0  # full resolution, not the whole-image level (4x coarser)
    assert result.labels.shape == slide.shape
    assert match_instances(result.labels, truth)["f1"] > 0.6

    path = tmp_path / "slide.ome.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(slide, subifds=2, tile=(64, 64), metadata={"axes": "YX"})
        for level in levels[1:]:
            tif.write(level, subfiletype=1, tile=(64, 64))
    out = tmp_path / "out"
    command = ["text", "nuclei", str(path), "--route", "library", "--library", str(library.path)]
    assert main([*command, "-o", str(out), "--scheduler", "none"]) == 0
    [record] = json.loads((out / "report.json").read_text())["images"]
    assert record["pyramid_level"] == 0 and record["level_factor"] == 1.0
    np.testing.assert_array_equal(tifffile.imread(out / "slide.tif"), result.labels)
