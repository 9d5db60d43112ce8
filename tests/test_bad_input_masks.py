"""Masks whose values are not label ids, read by one rule wherever a mask is taken (one-shot references, library
entries, training rows): a probability map is its pixels of 0.5 and up, complex or NaN values are refused naming
the mask; and the library's command and a training CSV take a folder as one-shot does (an OME-Zarr image, or
refused for what it is), the library's command naming the file at fault."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from skimage import data
from skimage.filters import threshold_otsu

from napari_promptseg.cli import main
from napari_promptseg.errors import PromptsegError
from napari_promptseg.io.library import ReferenceLibrary
from napari_promptseg.methods.oneshot import segment_like
from napari_promptseg.methods.text_training.data import ArrayTriplet

COINS = data.coins()
REFERENCE = COINS[20:116, 20:116].copy()  # real coins, 96 x 96: two whole coins and parts of others
TARGET = COINS[20:116, 116:212].copy()


def probability_map(image: np.ndarray) -> np.ndarray:
    """A model's output over ``image``: a sigmoid around Otsu's threshold, above 0 everywhere (no exact
    background), above 0.5 on the coins."""
    scaled = (image.astype(np.float32) - threshold_otsu(image)) / 12.0
    return (1.0 / (1.0 + np.exp(-scaled))).astype(np.float32)


@pytest.fixture(scope="module")
def reference_probability():
    probability = probability_map(REFERENCE)
    assert probability.min() > 0 and 0.1 < (probability >= 0.5).mean() < 0.9  # soft everywhere, coins above half
    return probability


def test_a_probability_map_as_a_reference_mask_is_its_pixels_of_half_and_up(litemedsam, reference_probability):
    # it was read as every pixel > 0, all of them: "everything is labelled; leave background unlabelled"
    (soft,) = segment_like(REFERENCE, reference_probability, TARGET, segmenter=litemedsam)
    (cut,) = segment_like(REFERENCE, reference_probability >= 0.5, TARGET, segmenter=litemedsam)
    assert soft.labels.any()
    np.testing.assert_array_equal(soft.labels, cut.labels)


def test_a_probability_map_saved_in_the_library_is_its_pixels_of_half_and_up(tmp_path, reference_probability):
    library = ReferenceLibrary.open(tmp_path / "lib")
    entry = library.add("coin", REFERENCE, reference_probability, margin=None)
    np.testing.assert_array_equal(library.get(entry.id).mask() > 0, reference_probability >= 0.5)


def test_a_probability_map_as_a_training_mask_is_its_pixels_of_half_and_up(reference_probability):
    # it trained on every pixel as the target, without a word
    _, mask = ArrayTriplet(REFERENCE, reference_probability, "coin").load()
    np.testing.assert_array_equal(mask, reference_probability >= 0.5)
    one_value = np.where(reference_probability >= 0.5, np.float32(0.3), 0)  # one value on the object: its mask
    np.testing.assert_array_equal(ArrayTriplet(REFERENCE, one_value, "coin").load()[1], one_value > 0)


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        (lambda m: m.astype(np.complex64), r"complex64 values; expected label ids"),
        (lambda m: np.where(m, np.nan, 0).astype(np.float32), r"NaN or infinite values"),
    ],
    ids=["complex", "nan"],
)
def test_a_mask_of_values_that_are_no_ids_is_refused_wherever_a_mask_is_taken(litemedsam, tmp_path, values, problem):
    mask = values(threshold_otsu(REFERENCE) < REFERENCE)
    with pytest.raises(PromptsegError, match=rf"reference mask: .*{problem}"):  # complex: every pixel an object
        segment_like(REFERENCE, mask, TARGET, segmenter=litemedsam)
    with pytest.raises(PromptsegError, match=rf"reference image mask: .*{problem}"):
        ReferenceLibrary.open(tmp_path / "lib").add("coin", REFERENCE, mask)
    # training: complex was trained on, NaN read as background
    with pytest.raises(PromptsegError, match=rf"training row: mask: .*{problem}"):
        ArrayTriplet(REFERENCE, mask, "coin", name="training row").load()


@pytest.fixture
def files(tmp_path):
    image = tmp_path / "coins.tif"
    tifffile.imwrite(image, REFERENCE)
    mask = tmp_path / "mask.tif"
    tifffile.imwrite(mask, (threshold_otsu(REFERENCE) < REFERENCE).astype(np.uint8))
    return image, mask


def library_add(capsys, tmp_path, image, mask) -> tuple[int, str]:
    code = main(["library", "add", "coin", "--image", str(image), "--mask", str(mask), "--library", str(tmp_path)])
    return code, capsys.readouterr().err


def test_library_add_refuses_a_folder_given_as_the_image_for_what_it_is(tmp_path, capsys, files):
    folder = tmp_path / "scans.tif"
    folder.mkdir()
    code, err = library_add(capsys, tmp_path / "lib", folder, files[1])
    # it was "input file not found: .../scans.tif", of a folder that is there
    assert code == 2 and f"{folder}: a directory, not an image" in err, err


def test_library_add_names_the_mask_file_that_labels_every_pixel(tmp_path, capsys, files):
    everything = tmp_path / "everything.tif"
    tifffile.imwrite(everything, np.ones(REFERENCE.shape, np.uint8))
    code, err = library_add(capsys, tmp_path / "lib", files[0], everything)
    # it named the image: "reference '.../coins.tif': the mask covers every pixel"
    assert code == 2 and f"--mask {everything}: every pixel is labelled" in err, err


def test_library_add_takes_an_ome_zarr_image_as_oneshot_does(tmp_path, capsys, files):
    import warnings

    import zarr
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    image = tmp_path / "coins.ome.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        write_image(REFERENCE, zarr.open_group(str(image), mode="w", zarr_format=2), axes="yx", fmt=FormatV04())
    code, err = library_add(capsys, tmp_path / "lib", image, files[1])
    assert code == 0, err  # it was "input file not found" of the image folder
    (entry,) = ReferenceLibrary.open(tmp_path / "lib").entries
    assert entry.name == "coin"


def test_a_training_row_naming_a_folder_is_refused_for_what_it_is(tmp_path, files):
    from napari_promptseg.methods.text_training.data import read_triplets
    from napari_promptseg.methods.text_training.row_checks import check_rows

    folder = tmp_path / "scans.tif"
    folder.mkdir()
    rows = tmp_path / "rows.csv"
    rows.write_text(f"image,mask,text\n{files[0].name},{files[1].name},coin\nscans.tif,{files[1].name},coin\n")
    # it was "row 3: no image file .../scans.tif", of a folder that is there (an OME-Zarr image could not be a row)
    with pytest.raises(PromptsegError, match=rf"row 3: {folder}: a directory, not an image"):
        check_rows(read_triplets(rows))


def test_library_add_says_a_plane_given_for_a_2d_image_is_ignored(tmp_path, capsys, files):
    code = main(
        ["library", "add", "coin", "--image", str(files[0]), "--mask", str(files[1]), "--plane", "3"]
        + ["--library", str(tmp_path / "lib")]
    )
    err = capsys.readouterr().err
    # it was dropped without a word; `promptseg oneshot --reference-plane` says so
    assert code == 0 and "warning: --plane ignored: it picks a stack image's plane, and --image is a 2D image" in err


def test_a_reference_image_of_one_value_is_refused_as_one_shot_and_library_take_it(litemedsam, tmp_path):
    blank, mask = np.zeros_like(REFERENCE), (threshold_otsu(REFERENCE) < REFERENCE).astype(np.uint8)
    # one-shot gave a guessed mask, warning only that "this reference does not transfer"
    with pytest.raises(PromptsegError, match=r"reference: the image holds one value everywhere"):
        segment_like(blank, mask, TARGET, segmenter=litemedsam)
    # the library saved it, and every prompt it answered was that guess
    with pytest.raises(PromptsegError, match=r"reference image: the image holds one value everywhere"):
        ReferenceLibrary.open(tmp_path / "lib").add("coin", blank, mask)


def test_a_library_entry_named_none_is_refused(tmp_path):
    library = ReferenceLibrary.open(tmp_path / "lib")
    mask = (threshold_otsu(REFERENCE) < REFERENCE).astype(np.uint8)
    with pytest.raises(PromptsegError, match=r"a library entry's name is text \(e.g. 'gland'\), got None"):
        library.add(None, REFERENCE, mask)  # it was saved as an entry named 'None'
    entry = library.add("coin", REFERENCE, mask, None)  # no description: none, not 'None'
    assert entry.description == ""


def test_a_probability_map_as_seed_labels_is_its_pixels_of_half_and_up(litemedsam, reference_probability):
    from napari_promptseg import propagate_through_stack

    stack = np.stack([REFERENCE, REFERENCE[:, ::-1], REFERENCE])
    # it was one object of every pixel > 0: the whole plane
    soft = propagate_through_stack(stack, 1, labels=reference_probability[:, ::-1], segmenter=litemedsam)
    cut = propagate_through_stack(stack, 1, labels=reference_probability[:, ::-1] >= 0.5, segmenter=litemedsam)
    assert soft.labels[1].any() and not soft.labels[1].all()
    np.testing.assert_array_equal(soft.labels, cut.labels)


@pytest.mark.parametrize("mode", [[], ["--instances"]], ids=["one-region", "instances"])
def test_oneshot_command_names_the_reference_file_of_one_value(tmp_path, capsys, files, mode):
    blank = tmp_path / "blank.tif"
    tifffile.imwrite(blank, np.zeros_like(REFERENCE))
    target = tmp_path / "target.tif"
    tifffile.imwrite(target, TARGET)
    argv = ["oneshot", str(target), "-o", str(tmp_path / "out"), "--reference", str(blank)]
    code = main([*argv, "--reference-mask", str(files[1]), *mode])
    err = capsys.readouterr().err
    # one region: the target was named ("target.tif: reference mask: ..."); instances: it ran
    assert code == 2 and f"--reference {blank}: the image holds one value everywhere" in err, err
