"""Label files users bring (references, ground truth, training masks): every object kept with its own id, or a clear
refusal naming the file and what is wrong."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_promptseg.errors import PromptsegError
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
    from napari_promptseg.cli import main
    from napari_promptseg.cli._reference import _mask_file_labels, _reference_labels
    from napari_promptseg.io.images import label_image_2d
    from napari_promptseg.io.library import ReferenceLibrary
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
    # the CLI: `promptseg library add --mask` stores the ids (a many-instances entry)
    where = ["--image", str(tmp_path / "image.png"), "--no-crop", "--library", str(tmp_path / "library")]
    assert main(["library", "add", "nuclei", "--mask", str(tmp_path / "ids.png"), *where]) == 0
    [entry] = ReferenceLibrary.open(tmp_path / "library").entries
    assert entry.instances
    np.testing.assert_array_equal(entry.labels(), ids_255)


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


def _reference(path, image: np.ndarray, tmp_path) -> np.ndarray:
    """The label file ``path`` as `promptseg oneshot --reference-mask` (and `library add --mask`) reads it."""
    from napari_promptseg.cli._reference import _reference_labels

    return _reference_labels(read_image(path, role="labels"), image, path, tmp_path / "image.png")


def test_a_label_tiff_with_a_singleton_channel_or_plane_axis_is_read_as_its_plane(small_nuclei, tmp_path):
    """A label image saved from numpy with an axis of one ((1, Y, X): a stack of one plane; (Y, X, 1): one channel)
    was refused as a reference ('an array of shape (1, 256, 256)'), read by read_mask as a 3D mask, and refused as a
    train-text row's mask; it is its plane to all of them."""
    from napari_promptseg.io.images import label_image_2d
    from napari_promptseg.methods.text_training import Triplet

    image, labels = small_nuclei
    iio.imwrite(tmp_path / "image.png", image)
    for name, stored in (("plane.tif", labels[None]), ("channel.tif", labels[..., None])):
        path = tmp_path / name
        tifffile.imwrite(path, stored)
        assert read_image(path, role="labels").shape == stored.shape  # the file as it is
        np.testing.assert_array_equal(_reference(path, image, tmp_path), labels)
        np.testing.assert_array_equal(label_image_2d(read_image(path, role="labels"), name), labels)
        np.testing.assert_array_equal(read_mask(path), labels > 0)
        _, mask = Triplet(tmp_path / "image.png", path, "nuclei", "", 0).load()
        np.testing.assert_array_equal(mask, labels > 0)


def test_float_labels_are_integer_ids_and_fractional_ones_are_refused_naming_the_file(small_nuclei, tmp_path):
    """Labels saved as floats (0.0, 1.0, 2.0 ...: a float export) came back float, and the many-instances reference's
    regionprops refused them ('Non-integer label_image types are ambiguous'). Whole numbers are integer ids; labels
    resized with interpolation (1.5) are refused naming the file, not read as ids nobody drew."""
    from skimage.measure import regionprops

    from napari_promptseg.methods.instances.exemplars import reference_objects

    image, labels = small_nuclei
    tifffile.imwrite(tmp_path / "float.tif", labels.astype(np.float32))
    ids = _reference(tmp_path / "float.tif", image, tmp_path)
    assert ids.dtype.kind == "u"
    np.testing.assert_array_equal(ids, labels)
    assert len(regionprops(reference_objects(ids))) == labels.max()
    blurred = labels.astype(np.float32)
    blurred[labels > 0] += 0.5
    tifffile.imwrite(tmp_path / "resized.tif", blurred)
    with pytest.raises(PromptsegError, match=r"resized\.tif.*fractional"):
        _reference(tmp_path / "resized.tif", image, tmp_path)
    soft = (labels > 0) * np.float32(0.8)  # a soft mask (0..1) stays a mask
    tifffile.imwrite(tmp_path / "soft.tif", soft)
    assert _reference(tmp_path / "soft.tif", image, tmp_path).any()


def test_a_colour_label_png_from_another_tool_keeps_each_object_apart(hela, tmp_path):
    """A label image exported in colours (skimage's label2rgb, a viewer's screenshot) reuses its few colours: each
    colour was one id, so 349 nuclei came back as 10 objects. Each colour's separate regions are objects of their
    own; a nucleus is not split (one the ground truth drew in two regions is)."""
    from skimage.color import label2rgb
    from skimage.measure import label

    image, labels = hela
    rgb = (label2rgb(labels, bg_label=0) * 255).round().astype(np.uint8)
    iio.imwrite(tmp_path / "colours.png", rgb)
    ids = _reference(tmp_path / "colours.png", image, tmp_path)
    np.testing.assert_array_equal(ids > 0, labels > 0)
    truth = labels.ravel()
    pairs = np.unique(np.stack([truth, ids.ravel()])[:, truth > 0], axis=1)
    own_regions = label(labels, connectivity=1).max() - labels.max()  # an id of separate regions (1 here)
    assert pairs.shape[1] - len(np.unique(pairs[0])) <= own_regions  # a nucleus of one region is never split
    # nuclei that touch a nucleus of the same colour are one region: a few, not all but 10
    assert len(np.unique(pairs[1])) > 0.95 * labels.max()


def test_a_palette_png_of_labels_keeps_its_indices(ids_255, tmp_path):
    """A palette PNG of labels (indices into a colour table, as VOC-style masks and many annotation tools save them)
    was read in its colours even as labels: a table whose index 0 is not black made the background an object. As
    labels it keeps its indices, as a palette TIFF does; as an image it is read in its colours."""
    from PIL import Image

    table = np.random.default_rng(1).integers(1, 256, (256, 3)).astype(np.uint8)  # no colour black, not even 0's
    png = Image.fromarray(ids_255, mode="P")
    png.putpalette(table.ravel().tolist())
    png.save(tmp_path / "palette.png")
    np.testing.assert_array_equal(read_image(tmp_path / "palette.png", role="labels"), ids_255)
    np.testing.assert_array_equal(read_mask(tmp_path / "palette.png"), ids_255 > 0)
    np.testing.assert_array_equal(read_image(tmp_path / "palette.png"), table[ids_255])


def test_label_files_that_cannot_be_ids_are_refused_naming_the_file(hela, small_nuclei, tmp_path):
    """What a user's label file may be (16-bit PNG: read as ids) and what it must not be (negative ids, one pixel
    short of the image): refused naming the file and what is wrong."""
    image, labels = hela
    iio.imwrite(tmp_path / "ids16.png", labels)
    np.testing.assert_array_equal(_reference(tmp_path / "ids16.png", image, tmp_path), labels)
    negative = labels.astype(np.int16)
    negative[negative == 0] = -1  # background stored as -1
    tifffile.imwrite(tmp_path / "negative.tif", negative)
    with pytest.raises(PromptsegError, match=r"negative\.tif.*negative label id -1"):
        _reference(tmp_path / "negative.tif", image, tmp_path)
    tifffile.imwrite(tmp_path / "short.tif", labels[:-1])
    with pytest.raises(PromptsegError, match=r"short\.tif: 1100 x 699 px does not match --reference .*, 1100 x 700"):
        _reference(tmp_path / "short.tif", image, tmp_path)


def test_a_signed_8_bit_label_image_is_refused_as_a_mask_naming_the_file(hela, ids_255, tmp_path):
    """255 nuclei saved as signed 8-bit (a tool's int8: ids 128..255 wrap to -128..-1) lost those 128 nuclei
    silently when read as a mask (read_mask, a train-text row): negatives were background. They are refused naming
    the file, as a one-shot reference refuses them."""
    from napari_promptseg.methods.text_training import Triplet

    wrapped = ids_255.astype(np.int8)
    assert np.count_nonzero(np.unique(wrapped) < 0) == 128
    tifffile.imwrite(tmp_path / "signed.tif", wrapped)
    iio.imwrite(tmp_path / "image.png", hela[0])
    with pytest.raises(PromptsegError, match=r"signed\.tif: negative label id -128"):
        read_mask(tmp_path / "signed.tif")
    with pytest.raises(PromptsegError, match=r"signed\.tif.*negative label id -128"):
        Triplet(tmp_path / "image.png", tmp_path / "signed.tif", "nuclei", "", 0).load()
    with pytest.raises(PromptsegError, match=r"signed\.tif: negative label id -128"):
        _reference(tmp_path / "signed.tif", hela[0], tmp_path)


def test_seed_labels_of_a_plane_saved_in_colours_or_with_an_axis_of_one_are_that_plane(small_nuclei, tmp_path):
    """`promptseg segment STACK --propagate --seed-labels` refused a plane's labels saved as a colour PNG or with an
    axis of one ('labels of shape (256, 256, 3)'), which a one-shot reference takes; they are that plane's objects
    now. Negative ids are refused naming the file (they were background without a word)."""
    from skimage.color import label2rgb

    from napari_promptseg.cli._stacks import _checked_seed

    image, labels = small_nuclei
    volume = np.stack([image] * 3)
    stack = tmp_path / "stack.tif"
    iio.imwrite(tmp_path / "colours.png", (label2rgb(labels, bg_label=0) * 255).round().astype(np.uint8))
    tifffile.imwrite(tmp_path / "plane.tif", labels[None])
    for name in ("colours.png", "plane.tif"):
        seed = _checked_seed(tmp_path / name, read_image(tmp_path / name, role="labels"), stack, volume)
        np.testing.assert_array_equal(seed > 0, labels > 0)
        assert len(np.unique(seed)) > 0.9 * len(np.unique(labels))
    whole = np.stack([labels] * 3)  # the stack's own labels stay as they are
    assert _checked_seed(tmp_path / "whole.tif", whole, stack, volume) is whole
    tifffile.imwrite(tmp_path / "negative.tif", labels.astype(np.int16) - 1)
    with pytest.raises(PromptsegError, match=r"--seed-labels \S*negative\.tif: negative label id -1"):
        _checked_seed(tmp_path / "negative.tif", read_image(tmp_path / "negative.tif", role="labels"), stack, volume)
    with pytest.raises(PromptsegError, match=r"--seed-labels \S*plane\.tif: labels of shape \(1, 256, 255\)"):
        _checked_seed(tmp_path / "plane.tif", labels[None, :, :-1], stack, volume)


@pytest.fixture(scope="module")
def ids_1_and_250(small_nuclei) -> np.ndarray:
    """Real nuclei as an 8-bit label image of two objects: one nucleus id 1, every other nucleus id 250 (most of the
    foreground, as a large second object is): its values lie mostly near its top, as a blurred JPEG mask's do."""
    labels = small_nuclei[1]
    first = np.bincount(labels.ravel())[1:].argmax() + 1
    two = np.where(labels == first, 1, np.where(labels > 0, 250, 0)).astype(np.uint8)
    assert np.count_nonzero(two == 250) > 0.75 * np.count_nonzero(two)
    return two


def test_a_png_or_tiff_label_image_of_ids_1_and_250_keeps_object_1_as_a_mask(small_nuclei, ids_1_and_250, tmp_path):
    """An 8-bit label image whose large object is id 250 and small one id 1, read as a mask (read_mask, a train-text
    row's mask), lost object 1: its values were taken for a blurred JPEG mask's and cut at 127. A PNG or TIFF stores
    its values exactly: they are never cut, whatever they are; only a lossy file (JPEG) is, and a plain array of
    unknown origin is told by its values."""
    from napari_promptseg.cli._reference import _mask_file_labels
    from napari_promptseg.io.label_ids import mask_foreground
    from napari_promptseg.methods.text_training import ArrayTriplet, Triplet

    image = small_nuclei[0]
    iio.imwrite(tmp_path / "image.png", image)
    for name in ("two.png", "two.tif"):
        path = tmp_path / name
        iio.imwrite(path, ids_1_and_250)
        np.testing.assert_array_equal(read_mask(path), ids_1_and_250 > 0)
        _, mask = Triplet(tmp_path / "image.png", path, "nuclei", "", 0).load()
        np.testing.assert_array_equal(mask, ids_1_and_250 > 0)
        np.testing.assert_array_equal(_mask_file_labels(read_image(path, role="labels"), path, name), ids_1_and_250)
    # the ids of a napari Labels layer are exact too; an array of unknown origin is told by its values
    layer = ArrayTriplet(image, ids_1_and_250, "nuclei", name="Labels", mask_source="exact")
    np.testing.assert_array_equal(layer.load()[1], ids_1_and_250 > 0)
    np.testing.assert_array_equal(mask_foreground(ids_1_and_250, source="exact"), ids_1_and_250 > 0)
    np.testing.assert_array_equal(mask_foreground(ids_1_and_250), ids_1_and_250 > 127)


def test_jpeg_masks_of_glas_kvasir_shenzhen_keep_their_foreground_and_a_jpeg_in_a_tiff_is_cut(shared_data, tmp_path):
    """The rule of what a mask's values mean now goes by the file's format first (a JPEG's values are blurred: cut at
    127; a PNG's or TIFF's exact). The JPEG masks of GlaS, Kvasir and Shenzhen give the foreground they gave before,
    through every reader: the brightest colour channel above 127 (read_mask, a train-text row's mask), the first
    channel above 127 as one object (a reference, --moving-labels). A mask stored JPEG-compressed in a TIFF is lossy
    as well: read as ids, its blurred edges were hundreds of objects."""
    from napari_promptseg.cli._reference import _mask_file_labels
    from napari_promptseg.methods.text_training import Triplet

    checked = 0
    for dataset in ("glands_glas", "polyps_kvasir_text", "lungs_cxr_shenzhen"):
        for path in sorted((shared_data / dataset / "masks").glob("*.jpg"))[:4]:
            stored = read_image(path, role="labels")
            brightest = stored[..., :3].max(axis=-1) if stored.ndim == 3 else stored
            first = stored[..., 0] if stored.ndim == 3 else stored
            assert np.count_nonzero((brightest > 0) & (brightest <= 127)) > 0  # blurred edges: cut away
            np.testing.assert_array_equal(read_mask(path), brightest > 127)
            _, mask = Triplet(path, path, "x", "", 0).load()  # the mask's own pixels as the image: its shape
            np.testing.assert_array_equal(mask, brightest > 127)
            np.testing.assert_array_equal(_mask_file_labels(stored, path, path.name), first > 127)
            checked += 1
    assert checked == 12
    lungs = read_image(next((shared_data / "lungs_cxr_shenzhen" / "masks").glob("*.jpg")), role="labels")
    lungs = lungs[..., 0] if lungs.ndim == 3 else lungs
    tifffile.imwrite(tmp_path / "lungs_jpeg.tif", lungs, compression="jpeg")
    stored = read_image(tmp_path / "lungs_jpeg.tif", role="labels")
    assert np.count_nonzero((stored > 0) & (stored <= 127)) > 0  # blurred by its compression
    np.testing.assert_array_equal(read_mask(tmp_path / "lungs_jpeg.tif"), stored > 127)
    labels = _mask_file_labels(stored, tmp_path / "lungs_jpeg.tif", "lungs_jpeg.tif")
    np.testing.assert_array_equal(labels, stored > 127)


def test_an_rgba_mask_is_background_where_it_is_transparent(small_nuclei, tmp_path):
    """An RGBA PNG mask whose background is transparent but not black (white, as an editor leaves a layer's hidden
    pixels) was all foreground to read_mask, a train-text row and a reference: its alpha was ignored. Transparent
    pixels are background, as they are in a colour label image."""
    from napari_promptseg.methods.text_training import ArrayTriplet, Triplet

    image, labels = small_nuclei
    rgba = np.full((*labels.shape, 4), 255, np.uint8)
    rgba[..., 3] = np.where(labels > 0, 255, 0)
    iio.imwrite(tmp_path / "image.png", image)
    iio.imwrite(tmp_path / "rgba.png", rgba)
    np.testing.assert_array_equal(read_mask(tmp_path / "rgba.png"), labels > 0)
    _, mask = Triplet(tmp_path / "image.png", tmp_path / "rgba.png", "nuclei", "", 0).load()
    np.testing.assert_array_equal(mask, labels > 0)
    np.testing.assert_array_equal(ArrayTriplet(image, rgba, "nuclei").load()[1], labels > 0)
    # as a reference (oneshot, library add) or --moving-labels: grey (equal colour channels), transparent around
    np.testing.assert_array_equal(_reference(tmp_path / "rgba.png", image, tmp_path) > 0, labels > 0)


def test_a_grey_and_alpha_mask_is_background_where_it_is_transparent(small_nuclei, tmp_path):
    """A grey+alpha PNG mask (mode LA, as an editor saves a grey layer with transparency) whose transparent
    background is white was all foreground to read_mask, a train-text row and a reference: read_image dropped its
    alpha before they saw it. Transparent pixels are background, as they are in an RGBA mask."""
    from PIL import Image

    from napari_promptseg.methods.text_training import ArrayTriplet, Triplet

    image, labels = small_nuclei
    grey_alpha = np.stack([np.full(labels.shape, 255, np.uint8), np.where(labels > 0, 255, 0).astype(np.uint8)], -1)
    iio.imwrite(tmp_path / "image.png", image)
    Image.fromarray(grey_alpha, mode="LA").save(tmp_path / "la.png")
    with Image.open(tmp_path / "la.png") as saved:
        assert saved.mode == "LA"
    np.testing.assert_array_equal(read_mask(tmp_path / "la.png"), labels > 0)
    _, mask = Triplet(tmp_path / "image.png", tmp_path / "la.png", "nuclei", "", 0).load()
    np.testing.assert_array_equal(mask, labels > 0)
    np.testing.assert_array_equal(ArrayTriplet(image, grey_alpha, "nuclei").load()[1], labels > 0)
    np.testing.assert_array_equal(_reference(tmp_path / "la.png", image, tmp_path) > 0, labels > 0)
    tifffile.imwrite(tmp_path / "la.tif", grey_alpha, photometric="minisblack", extrasamples=[2])
    np.testing.assert_array_equal(read_mask(tmp_path / "la.tif"), labels > 0)
    tifffile.imwrite(tmp_path / "stack_la.tif", np.stack([grey_alpha] * 2), extrasamples=["assocalpha"])
    stack = read_image(tmp_path / "stack_la.tif", role="labels")  # every plane's transparency: background
    np.testing.assert_array_equal(stack, np.stack([labels > 0] * 2) * 255)
    # as an image, its alpha is still no channel: the grey plane
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), grey_alpha[..., 0])


def _is_mask_by_a_full_copy(labels: np.ndarray) -> bool:
    """What is_mask answered by copying every pixel (its answers are kept): a bool, values up to 1, or one value."""
    if labels.dtype == bool:
        return True
    foreground = labels[labels > 0]
    return foreground.size == 0 or foreground.max() <= 1 or foreground.min() == foreground.max()


def test_is_mask_decides_without_a_copy_of_the_image_and_answers_as_before(hela):
    """`is_mask` copied every pixel to decide whether labels are a mask (a bool per pixel, then every object pixel:
    ~40 MB more for a 4200 x 4400 label image of real HeLa nuclei); it reads them block by block now, with the same
    answers for ids, masks (bool, 0/1, 0/255, soft 0..1), negative or NaN background, views and stacks."""
    import tracemalloc

    from napari_promptseg.io.label_ids import is_mask

    labels = hela[1]
    large = np.tile(labels, (6, 4))  # 4200 x 4400 ids
    one_id = np.where(labels == labels.max(), 7, 0).astype(np.uint16)
    soft = (labels > 0) * np.float32(0.6)
    soft_nan = np.where(labels > 0, np.float32(0.5), np.nan)
    signed = np.where(labels > 0, 1, -1).astype(np.int32)
    cases = {
        "ids": (large, False),
        "ids, transposed view": (large.T, False),
        "ids, stack": (np.stack([labels, labels]), False),
        "bool": (large > 0, True),
        "0/255": ((labels > 0).astype(np.uint8) * 255, True),
        "one id": (one_id, True),
        "soft": (soft, True),
        "soft, NaN background": (soft_nan, True),
        "negative background": (signed, True),
        "two ids and negatives": (np.where(labels > 0, labels % 2 + 1, -3).astype(np.int16), False),
        "empty": (np.zeros((40, 50), np.uint16), True),
        "float ids": (labels.astype(np.float64), False),
    }
    for what, (array, expected) in cases.items():
        assert _is_mask_by_a_full_copy(array) == expected, what
        assert is_mask(array) == expected, what
    large_mask = np.tile(one_id, (6, 4))  # one value: every block is read
    for array, expected in ((large, False), (large_mask, True)):
        tracemalloc.start()
        try:
            assert is_mask(array) == expected
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 4 * 2**20, f"is_mask took {peak / 2**20:.1f} MiB to read {array.nbytes / 2**20:.0f} MiB"
