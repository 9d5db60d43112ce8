"""Label files users bring (references, ground truth, training masks): every object kept with its own id, or a clear
refusal naming the file and what is wrong."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_promptseg.io import read_image, read_mask


@pytest.fixture(scope="module")
def hela(shared_data) -> tuple[np.ndarray, np.ndarray]:
    """A real fluorescence image (HeLa, 700 x 1100) and its ground-truth nuclei (349 ids)."""
    folder = shared_data / "nuclei_ctc_fluo_instances"
    name = "N2DL-HeLa_t75.tif"
    return tifffile.imread(folder / "images" / name), tifffile.imread(folder / "labels" / name)


@pytest.fixture(scope="module")
def ids_255(hela) -> np.ndarray:
    """Its first 255 nuclei as an 8-bit label image: ids 1..255, the most a uint8 file holds."""
    labels = hela[1]
    return np.where(labels <= 255, labels, 0).astype(np.uint8)


def test_an_8_bit_label_image_of_255_nuclei_keeps_every_id_through_every_reader(hela, ids_255, tmp_path):
    """An 8-bit label image of 255 real nuclei (TIFF, PNG) read as a mask (read_mask, a train-text row's mask) lost
    the nuclei of ids 1..127: an 8-bit mask whose foreground lay mostly above half range was cut there, as a blurred
    JPEG mask is, and half of 255 ids lie above it. Every reader of labels keeps every nucleus, with its own id."""
    from napari_promptseg.cli._common import _mask_file_labels, _reference_labels
    from napari_promptseg.io.images import label_image_2d
    from napari_promptseg.methods.text_training import Triplet

    image = hela[0]
    assert len(np.unique(ids_255)) - 1 == 255
    iio.imwrite(tmp_path / "image.png", image)
    for name in ("ids.tif", "ids.png"):
        path = tmp_path / name
        iio.imwrite(path, ids_255)
        stored = read_image(path, role="labels")
        assert stored.dtype == np.uint8
        np.testing.assert_array_equal(stored, ids_255)
        np.testing.assert_array_equal(read_mask(path), ids_255 > 0)
        np.testing.assert_array_equal(label_image_2d(stored, name), ids_255)
        np.testing.assert_array_equal(_reference_labels(stored, image, path, tmp_path / "image.png"), ids_255)
        np.testing.assert_array_equal(_mask_file_labels(stored, path, f"--moving-labels {path}"), ids_255)
        _, mask = Triplet(tmp_path / "image.png", path, "nuclei", "", 0).load()
        np.testing.assert_array_equal(mask, ids_255 > 0)


@pytest.fixture(scope="module")
def small_nuclei(hela) -> tuple[np.ndarray, np.ndarray]:
    """A 256 x 256 crop of the HeLa image and its nuclei, renumbered 1..N (8-bit ids)."""
    from skimage.segmentation import relabel_sequential

    image, labels = hela[0][:256, :256], relabel_sequential(hela[1][:256, :256])[0]
    assert 10 < labels.max() < 256
    return image, labels.astype(np.uint8)


def _pyramid(path, array: np.ndarray, **tags) -> None:
    """``array`` written as a tiled pyramid of two levels (its SubIFDs), every level with the same tags."""
    with tifffile.TiffWriter(path) as tif:
        tif.write(array, tile=(64, 64), subifds=1, **tags)
        tif.write(array[::2, ::2], tile=(64, 64), subfiletype=1, **tags)


def test_a_pyramid_of_palette_or_min_is_white_labels_keeps_its_stored_ids(small_nuclei, tmp_path):
    """A pyramidal label TIFF saved with a colour map (Fiji's glasbey LUT) or MinIsWhite (ImageJ's inverting LUT) was
    read lazily as an image whatever the role: its ids came back as the colour map's RGB colours, or inverted (the
    background 255), where the same file of one level kept them. Read as labels, lazily too, it keeps them."""
    from napari_promptseg.io.multiscale import is_lazy_image, open_multiscale

    _, labels = small_nuclei
    glasbey = np.random.default_rng(0).integers(0, 65536, (3, 256)).astype(np.uint16)
    _pyramid(tmp_path / "glasbey.tif", labels, photometric="palette", colormap=glasbey)
    binary = np.where(labels > 0, 255, 0).astype(np.uint8)
    _pyramid(tmp_path / "inverted.tif", binary, photometric="miniswhite")
    for name, stored in (("glasbey.tif", labels), ("inverted.tif", binary)):
        path = tmp_path / name
        assert is_lazy_image(path)
        lazy = read_image(path, role="labels")
        assert not isinstance(lazy, np.ndarray)  # still read tile by tile
        np.testing.assert_array_equal(np.asarray(lazy), stored)
        levels = open_multiscale(path, role="labels").levels
        np.testing.assert_array_equal(np.asarray(levels[1]), stored[::2, ::2])
        np.testing.assert_array_equal(read_mask(path), labels > 0)
        assert np.asarray(read_image(path)).dtype == np.uint8  # as an image: as shown, as before
    shown = np.asarray(read_image(tmp_path / "glasbey.tif"))
    assert shown.shape == (*labels.shape, 3)
    np.testing.assert_array_equal(np.asarray(read_image(tmp_path / "inverted.tif")), 255 - binary)
