"""Image, label and overlay files."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from skimage import data

from napari_promptseg.io import read_image, write_labels, write_overlay


def test_overlay_keeps_the_image_colour_and_marks_objects(tmp_path):
    image = data.immunohistochemistry()
    labels = np.zeros(image.shape[:2], np.uint16)
    labels[100:200, 100:200] = 1
    png = iio.imread(write_overlay(tmp_path / "overlay.png", image, labels)).astype(int)
    assert png.shape == image.shape
    outside = png[300:400, 300:400]
    assert np.abs(outside[..., 0] - outside[..., 2]).mean() > 5  # H&E/DAB colours survive, not turned gray
    assert np.abs(png[140:160, 140:160] - image[140:160, 140:160].astype(int)).mean() > 5  # object is tinted
    assert (png[99, 100:200] == (255, 255, 0)).all()  # yellow outline just outside the object


def test_an_overlay_the_disk_cannot_hold_leaves_no_half_drawn_png(tmp_path, monkeypatch):
    """A full disk cut the PNG short (seen on a 48 kB tmpfs: 40 960 of its bytes kept); the batch said 'overlay not
    written' beside a file that passed for one. The earlier overlay stays as it was, and no temporary file is left."""
    import errno

    from PIL import Image

    image, labels = data.coins()[:64, :64], np.zeros((64, 64), np.uint16)
    labels[10:20, 10:20] = 1
    earlier = write_overlay(tmp_path / "overlay.png", image, labels).read_bytes()
    save = Image.Image.save

    def disk_full(self, fp, *args, **kwargs):
        save(self, fp, *args, **kwargs)
        with open(fp, "r+b") as written:
            written.truncate(100)  # what reached the disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_overlay(tmp_path / "overlay.png", image, labels * 2)
    assert (tmp_path / "overlay.png").read_bytes() == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == ["overlay.png"]


def test_labels_round_trip_as_uint16_or_uint32(tmp_path):
    small = np.arange(12, dtype=np.int64).reshape(3, 4)
    assert tifffile.imread(write_labels(tmp_path / "a.tif", small)).dtype == np.uint16
    big = small * 10_000
    back = read_image(write_labels(tmp_path / "b.tif", big))
    assert back.dtype == np.uint32 and (back == big).all()


def test_outputs_written_whole_get_the_mode_a_plain_write_gives(tmp_path):
    """Labels, reports and library exports are written to a temporary file and renamed; mkstemp makes that file
    private (0600), so a lab's shared results folder held outputs nobody else could read."""
    import os
    import stat

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    expected = stat.S_IMODE(plain.stat().st_mode)
    labels = write_labels(tmp_path / "labels.tif", np.eye(8, dtype=np.uint16))
    assert stat.S_IMODE(labels.stat().st_mode) == expected
    os.chmod(labels, 0o600)  # a rerun replaces it with the usual mode again
    assert stat.S_IMODE(write_labels(labels, np.eye(8, dtype=np.uint16)).stat().st_mode) == expected


def test_label_tiffs_name_their_axes_for_fiji_and_tifffile(tmp_path):
    """Label TIFFs had no axis names: a time-lapse's labels read as a stack of planes (Fiji: slices), tifffile said
    'QYX'. Now ImageJ hyperstack metadata names them (OME for uint32 ids, which the ImageJ format cannot hold)."""
    from skimage.measure import label

    from napari_promptseg.io.images import is_own_output

    coins = label(data.coins() > 120).astype(np.uint16)
    frames = np.stack([np.roll(coins, 7 * k, axis=1) for k in range(4)])  # 4 planes: not RGBA samples
    expected = {
        "2d.tif": (coins, None, "YX", {}),
        "stack.tif": (frames, None, "ZYX", {"slices": 4}),
        "timelapse.tif": (frames, "TYX", "TYX", {"frames": 4}),
    }
    for name, (labels, axes, read_axes, imagej) in expected.items():
        path = write_labels(tmp_path / name, labels, axes=axes)
        with tifffile.TiffFile(path) as tif:
            assert tif.series[0].axes == read_axes and tif.is_imagej, name
            assert {k: tif.imagej_metadata.get(k) for k in imagej} == imagej, name
            np.testing.assert_array_equal(tif.asarray(), labels)
        assert is_own_output(path)
    many = frames.astype(np.uint32) * 30_000  # ids past 65535: uint32
    path = write_labels(tmp_path / "many.tif", many, axes="TYX")
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].axes == "TYX" and tif.is_ome and tif.series[0].dtype == np.uint32
        np.testing.assert_array_equal(tif.asarray(), many)
    assert is_own_output(path)
    # OME-XML's UUID is random unless given: the same labels written again are the same bytes
    again = write_labels(tmp_path / "again" / "many.tif", many, axes="TYX")
    assert again.read_bytes() == path.read_bytes()


def test_labels_past_classic_tiffs_size_are_written_as_bigtiff_with_their_axes(tmp_path, monkeypatch):
    """A whole slide's labels (65k x 65k uint32: 17 GB) went into a classic TIFF, whose 32-bit offsets end at 4 GiB:
    the write failed or left a broken file. Past BIGTIFF_ABOVE_BYTES (lowered here to a few KB) labels are a
    BigTIFF that names its axes (OME: ImageJ's reader opens no BigTIFF); smaller ones stay classic TIFF."""
    from skimage.measure import label

    from napari_promptseg.io import images
    from napari_promptseg.io.images import is_own_output

    monkeypatch.setattr(images, "BIGTIFF_ABOVE_BYTES", 8192)
    coins = label(data.coins()[:96, :128] > 120).astype(np.uint16)  # 24 KB
    frames = np.stack([np.roll(coins, 7 * k, axis=1) for k in range(3)])
    written = {
        "2d.tif": (coins, None, "YX"),
        "timelapse.tif": (frames, "TYX", "TYX"),
        "many.tif": (frames.astype(np.uint32) * 70_000, None, "ZYX"),  # uint32 ids
    }
    for name, (labels, axes, read_axes) in written.items():
        path = write_labels(tmp_path / name, labels, axes=axes)
        with tifffile.TiffFile(path) as tif:
            assert tif.is_bigtiff and tif.series[0].axes == read_axes, name
            np.testing.assert_array_equal(tif.asarray(), labels)
        assert is_own_output(path), name  # a rerun replaces it
    small = write_labels(tmp_path / "small.tif", coins[:32, :32])  # 2 KB: a classic ImageJ TIFF, as before
    with tifffile.TiffFile(small) as tif:
        assert not tif.is_bigtiff and tif.is_imagej and tif.series[0].axes == "YX"


def test_label_tiffs_record_their_inputs_pixel_size_in_its_unit(tmp_path):
    """Label TIFFs held no calibration: napari opened a slide in µm and its labels in pixels, beside it. The input's
    pixel size is read back from the labels in the image's own unit (so both layers' scales are equal), in ImageJ
    metadata for uint16 ids and in OME (µm) or resolution tags (cm, no unit named) for uint32; a stack's spacing
    too. No pixel size: the file is the one written without calibration, byte for byte."""
    from skimage.measure import label

    from napari_promptseg.io.calibration import PixelSize, pixel_size
    from napari_promptseg.io.layer_data import image_layer_data

    coins = label(data.coins()[:96, :128] > 120).astype(np.uint16)
    for ids in (coins, coins.astype(np.uint32) * 70_000):  # ImageJ, OME
        for unit in ("µm", "cm", None):
            size = PixelSize(0.5, 0.25, unit)
            path = write_labels(tmp_path / f"{ids.dtype}_{unit}.tif", ids, pixel_size=size)
            back = pixel_size(path)
            assert (back.x, back.y) == (0.5, 0.25) and (back.unit or "").replace("um", "µm") == (unit or ""), back
            np.testing.assert_array_equal(tifffile.imread(path), ids)
        stack = np.stack([ids] * 3)
        path = write_labels(
            tmp_path / f"stack_{ids.dtype}.tif", stack, pixel_size=PixelSize(0.5, 0.5, "µm"), z_spacing=2
        )
        [(_, meta, _)] = image_layer_data(path)
        assert meta["scale"] == [2.0, 0.5, 0.5] and meta["units"] == ["µm"] * 3
    plain = write_labels(tmp_path / "plain.tif", coins).read_bytes()
    assert write_labels(tmp_path / "again" / "plain.tif", coins, pixel_size=None).read_bytes() == plain


def test_a_whole_slides_labels_are_a_tiled_pyramid_read_level_by_level(tmp_path, monkeypatch):
    """A whole slide's labels (40k x 40k) were one untiled image: napari read gigabytes whole to show them. Labels
    past PYRAMID_ABOVE_SIDE (lowered here to 256 px) are written in 512 px tiles with levels of every other pixel
    down to PYRAMID_TOP_SIDE (256 here), which io.multiscale opens lazily; smaller ones stay one plain image."""
    from skimage.measure import label

    from napari_promptseg.io import images
    from napari_promptseg.io.calibration import PixelSize, pixel_size
    from napari_promptseg.io.images import is_own_output
    from napari_promptseg.io.multiscale import open_multiscale

    coins = label(np.tile(data.coins() > 120, (2, 2))[:600, :600]).astype(np.uint16)  # 600 x 600
    untiled = write_labels(tmp_path / "small.tif", coins)
    monkeypatch.setattr(images, "PYRAMID_ABOVE_SIDE", 256)
    monkeypatch.setattr(images, "PYRAMID_TOP_SIDE", 256)
    path = write_labels(tmp_path / "slide.tif", coins, pixel_size=PixelSize(0.5, 0.5, "µm"))
    with tifffile.TiffFile(path) as tif:
        assert tif.pages.first.is_tiled and tif.pages.first.tile == (512, 512) and tif.is_ome
        assert [level.shape for level in tif.series[0].levels] == [(600, 600), (300, 300), (150, 150)]
    with tifffile.TiffFile(untiled) as tif:
        assert not tif.pages.first.is_tiled and len(tif.series[0].levels) == 1
    pyramid = open_multiscale(path)
    assert [level.shape for level in pyramid.levels] == [(600, 600), (300, 300), (150, 150)]
    np.testing.assert_array_equal(np.asarray(pyramid.levels[0]), coins)
    np.testing.assert_array_equal(np.asarray(pyramid.levels[2]), coins[::4, ::4])  # ids, never blended
    assert is_own_output(path) and pixel_size(path) == PixelSize(0.5, 0.5, "µm")


def test_a_grey_image_with_transparency_is_read_grey(tmp_path):
    """A grey PNG or TIFF with an alpha channel (grey + alpha, as image editors save it) was read as two channels,
    and the models took its alpha for a second channel: boxes around the bundled nuclei sample's nuclei gave a mean
    Dice of 0.28 against 0.69 for the same image without alpha. Its alpha is dropped, as an RGBA image's is."""
    from napari_promptseg._sample_data import nuclei

    (image, _, _), _ = nuclei()
    alpha = np.full_like(image, 255)
    alpha[:8] = 0  # transparent rows: their grey values stay what they are
    iio.imwrite(tmp_path / "la.png", np.dstack([image, alpha]))
    tifffile.imwrite(
        tmp_path / "la.tif", np.dstack([image, alpha]), photometric="minisblack", extrasamples=["unassalpha"]
    )
    tifffile.imwrite(tmp_path / "stack_la.tif", np.stack([np.dstack([image, alpha])] * 2), extrasamples=["assocalpha"])
    for name in ("la.png", "la.tif"):
        np.testing.assert_array_equal(read_image(tmp_path / name), image)
    np.testing.assert_array_equal(read_image(tmp_path / "stack_la.tif"), np.stack([image] * 2))
    # a folder of them opens in napari as a stack of grey planes, each read as its header said
    from napari_promptseg.io.folder_layers import folder_stack_layer_data

    folder = tmp_path / "frames"
    folder.mkdir()
    for k in range(2):
        iio.imwrite(folder / f"f{k}.png", np.dstack([np.roll(image, k, 1), alpha]))
        tifffile.imwrite(folder / f"g{k}.tif", np.dstack([image, alpha]), extrasamples=["unassalpha"])
    [(stack, _, _)] = folder_stack_layer_data(folder)
    assert np.asarray(stack).shape == (4, *image.shape)
    two_channels = np.dstack([image, image[::-1]])  # a TIFF of two channels, not alpha: kept
    tifffile.imwrite(tmp_path / "two.tif", two_channels, photometric="minisblack", metadata={"axes": "YXC"})
    np.testing.assert_array_equal(read_image(tmp_path / "two.tif"), two_channels)


def test_a_cmyk_jpeg_is_read_in_rgb(tmp_path):
    """A JPEG saved in CMYK (print workflows, figures from a publisher) was read as its four ink channels, taken for
    RGBA: the models and the overlay saw the colours inverted (cyan for red). It is read in RGB, as Pillow converts
    it."""
    from PIL import Image

    rgb = data.astronaut()
    Image.fromarray(rgb).save(tmp_path / "rgb.jpg", quality=95)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    read = read_image(tmp_path / "cmyk.jpg")
    assert read.shape == rgb.shape and read.dtype == np.uint8
    assert np.abs(read.astype(int) - read_image(tmp_path / "rgb.jpg")).mean() < 5
    # a folder of them opens in napari as a stack of RGB planes, each read as its header said
    from napari_promptseg.io.folder_layers import folder_stack_layer_data

    folder = tmp_path / "frames"
    folder.mkdir()
    for k in range(2):
        Image.fromarray(rgb).convert("CMYK").save(folder / f"f{k}.jpg")
    [(stack, _, _)] = folder_stack_layer_data(folder)
    assert np.asarray(stack).shape == (2, *rgb.shape)


def test_a_grey_image_with_transparency_opens_grey_in_napari_and_lazily(tmp_path):
    """The alpha of a grey + alpha TIFF was dropped only by the whole read: the plugin opened the TIFF as two
    channel layers (grey, and alpha as a second channel), and a pyramid of it, read lazily by every command, handed
    the alpha on to the models as a second channel. Both read grey now, as the whole read does."""
    from napari_promptseg._sample_data import nuclei
    from napari_promptseg.io.layer_data import tiff_layer_data

    (image, _, _), _ = nuclei()
    la = np.dstack([image, np.full_like(image, 255)])
    options = {"photometric": "minisblack", "extrasamples": ["unassalpha"]}
    tifffile.imwrite(tmp_path / "la.tif", la, **options)
    with tifffile.TiffWriter(tmp_path / "pyramid.tif") as tif:
        tif.write(la, tile=(128, 128), subifds=1, **options)
        tif.write(la[::2, ::2], tile=(128, 128), subfiletype=1, **options)
    np.testing.assert_array_equal(np.asarray(read_image(tmp_path / "pyramid.tif")), image)
    [(data_, kwargs, kind)] = tiff_layer_data(tmp_path / "la.tif")
    assert kind == "image" and "channel_axis" not in kwargs
    np.testing.assert_array_equal(data_, image)
    [(levels, kwargs, _)] = tiff_layer_data(tmp_path / "pyramid.tif")
    assert "channel_axis" not in kwargs and [level.shape for level in levels] == [image.shape, image[::2, ::2].shape]


def test_a_cmyk_tiff_is_read_in_rgb(tmp_path):
    """A TIFF saved in CMYK (photometric separated: print workflows, publishers' figures) was read as its four ink
    channels, where a CMYK JPEG is converted: the commands took them for RGBA (cyan for red, the models saw the
    colours inverted) and the plugin opened four channel layers. Every read converts it to RGB, as Pillow does;
    a pyramid of it too, lazily, and a folder of them stacks RGB planes."""
    from PIL import Image

    from napari_promptseg.io.folder_layers import folder_stack_layer_data
    from napari_promptseg.io.layer_data import tiff_layer_data

    rgb = data.astronaut()[::4, ::4]
    cmyk = np.asarray(Image.fromarray(rgb).convert("CMYK"))
    tifffile.imwrite(tmp_path / "cmyk.tif", cmyk, photometric="separated")
    with tifffile.TiffWriter(tmp_path / "pyramid.tif") as tif:
        tif.write(cmyk, tile=(64, 64), subifds=1, photometric="separated")
        tif.write(cmyk[::2, ::2], tile=(64, 64), subfiletype=1, photometric="separated")
    np.testing.assert_array_equal(read_image(tmp_path / "cmyk.tif"), rgb)
    np.testing.assert_array_equal(np.asarray(read_image(tmp_path / "pyramid.tif")), rgb)
    [(image, kwargs, _)] = tiff_layer_data(tmp_path / "cmyk.tif")
    assert kwargs.get("rgb") and "channel_axis" not in kwargs
    np.testing.assert_array_equal(image, rgb)
    [(levels, kwargs, _)] = tiff_layer_data(tmp_path / "pyramid.tif")
    assert kwargs.get("rgb") and [level.shape for level in levels] == [rgb.shape, rgb[::2, ::2].shape]
    folder = tmp_path / "frames"
    folder.mkdir()
    for k in range(2):
        tifffile.imwrite(folder / f"f{k}.tif", cmyk, photometric="separated")
    [(stack, _, _)] = folder_stack_layer_data(folder)
    np.testing.assert_array_equal(np.asarray(stack), np.stack([rgb] * 2))
    inks16 = cmyk.astype(np.uint16) * 257  # a 16-bit CMYK TIFF
    tifffile.imwrite(tmp_path / "cmyk16.tif", inks16, photometric="separated")
    read16 = read_image(tmp_path / "cmyk16.tif")
    assert read16.dtype == np.uint16 and np.abs(read16 / 257 - rgb).max() <= 1


def test_a_palette_tiff_is_read_in_its_colours_as_an_image_and_as_its_indices_as_labels(tmp_path):
    """A palette (colour-map) TIFF was read as its indices: an image saved indexed reached the models as the palette's
    arbitrary order of grey levels, and the plugin opened it so. As an image it is read in RGB as Pillow shows it
    (whole, lazily as a pyramid, in napari, a folder of them as a stack); as labels (a label image saved with a
    colour map, as Fiji's glasbey LUT) its indices stay the ids."""
    from PIL import Image

    from napari_promptseg._sample_data import nuclei
    from napari_promptseg.io.folder_layers import folder_stack_layer_data
    from napari_promptseg.io.layer_data import tiff_layer_data
    from napari_promptseg.methods.text_training import Triplet

    Image.fromarray(data.astronaut()[::4, ::4]).quantize(64).save(tmp_path / "palette.tif")
    shown = np.asarray(Image.open(tmp_path / "palette.tif").convert("RGB"))
    assert len(np.unique(shown.reshape(-1, 3), axis=0)) > 32  # a colour image, not a grey ramp
    with tifffile.TiffFile(tmp_path / "palette.tif") as tif:
        indices, colormap = tif.asarray(), tif.pages.first.colormap
    np.testing.assert_array_equal(read_image(tmp_path / "palette.tif"), shown)
    with tifffile.TiffWriter(tmp_path / "pyramid.tif") as tif:
        tif.write(indices, tile=(64, 64), subifds=1, photometric="palette", colormap=colormap)
        tif.write(indices[::2, ::2], tile=(64, 64), subfiletype=1, photometric="palette", colormap=colormap)
    np.testing.assert_array_equal(np.asarray(read_image(tmp_path / "pyramid.tif")), shown)
    [(image, kwargs, _)] = tiff_layer_data(tmp_path / "palette.tif")
    assert kwargs.get("rgb") and "channel_axis" not in kwargs
    np.testing.assert_array_equal(np.asarray(image), shown)
    folder = tmp_path / "frames"
    folder.mkdir()
    for k in range(2):
        (folder / f"f{k}.tif").write_bytes((tmp_path / "palette.tif").read_bytes())
    [(stack, _, _)] = folder_stack_layer_data(folder)
    np.testing.assert_array_equal(np.asarray(stack), np.stack([shown] * 2))

    (image, _, _), (labels, _, _) = nuclei()
    glasbey = np.random.default_rng(0).integers(0, 65536, (3, 256)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "labels.tif", labels.astype(np.uint8), photometric="palette", colormap=glasbey)
    np.testing.assert_array_equal(read_image(tmp_path / "labels.tif", role="labels"), labels)
    # a training row's mask (train-text): the ids' pixels, not the colours' (whose channels were any non-zero)
    iio.imwrite(tmp_path / "nuclei.png", image)
    _, mask = Triplet(tmp_path / "nuclei.png", tmp_path / "labels.tif", "nuclei", "", 0).load()
    np.testing.assert_array_equal(mask, labels > 0)


def test_a_min_is_white_tiff_is_read_as_shown_as_an_image_and_as_stored_as_labels(tmp_path):
    """A grey TIFF stored MinIsWhite (photometric 0: 0 is white, as scanners and ImageJ's inverted LUTs save) was
    read as stored: inverted to the eye, and to the models. As an image it is read as Pillow shows it (whole, 8 and
    16 bits, and as one bit per pixel); as labels (ImageJ's binary mask: objects 255, shown black) as stored."""
    from PIL import Image

    from napari_promptseg._sample_data import nuclei
    from napari_promptseg.io import read_mask

    camera = data.camera()[::4, ::4]
    tifffile.imwrite(tmp_path / "scan.tif", 255 - camera, photometric="miniswhite")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "scan.tif")), camera)  # what a viewer shows
    np.testing.assert_array_equal(read_image(tmp_path / "scan.tif"), camera)
    deep = camera.astype(np.uint16) * 257
    tifffile.imwrite(tmp_path / "scan16.tif", 65535 - deep, photometric="miniswhite")
    np.testing.assert_array_equal(read_image(tmp_path / "scan16.tif"), deep)
    page = camera > 128
    tifffile.imwrite(tmp_path / "bits.tif", ~page, photometric="miniswhite")  # one bit per pixel
    np.testing.assert_array_equal(read_image(tmp_path / "bits.tif"), page)

    _, (labels, _, _) = nuclei()
    binary = np.where(labels > 0, 255, 0).astype(np.uint8)
    tifffile.imwrite(tmp_path / "mask.tif", binary, photometric="miniswhite")
    np.testing.assert_array_equal(read_image(tmp_path / "mask.tif", role="labels"), binary)
    np.testing.assert_array_equal(read_mask(tmp_path / "mask.tif"), labels > 0)


def test_read_mask_takes_every_id_of_an_8_bit_label_image_and_cuts_a_jpeg_mask_at_half_range(shared_data, tmp_path):
    """read_mask cut every 8-bit mask at 127: the bundled 50 nuclei saved as an 8-bit label image gave an empty mask,
    and a colour mask in green on black was empty too (its red channel was read). A 0/255 JPEG mask is still cut at
    half range (its blurred edges), as train-text reads masks."""
    from napari_promptseg._sample_data import nuclei
    from napari_promptseg.io import read_mask

    _, (labels, _, _) = nuclei()
    tifffile.imwrite(tmp_path / "ids.tif", labels.astype(np.uint8))
    np.testing.assert_array_equal(read_mask(tmp_path / "ids.tif"), labels > 0)
    green = np.zeros((*labels.shape, 3), np.uint8)
    green[..., 1] = np.where(labels > 0, 255, 0)
    iio.imwrite(tmp_path / "green.png", green)
    np.testing.assert_array_equal(read_mask(tmp_path / "green.png"), labels > 0)
    jpeg = next((shared_data / "lungs_cxr_shenzhen" / "masks").glob("*.jpg"))
    stored = read_image(jpeg, role="labels")
    stored = stored[..., 0] if stored.ndim == 3 else stored
    assert np.count_nonzero(stored[(stored > 0) & (stored <= 127)]) > 0  # blurred edges
    np.testing.assert_array_equal(read_mask(jpeg), stored > 127)


def test_labels_of_one_plane_keep_their_unit_and_origin(tmp_path):
    """(1, Y, X) labels are written without ImageJ or OME axes (their readers drop an axis of one plane), and so
    lost what (Y, X) labels record: their origin was not written, and their µm pixel size went into centimetre
    resolution tags, so the plugin opened them at 5e-05 cm beside their image's 0.5 µm (napari converts no units).
    They keep both now, and their shape."""
    from napari_promptseg.io.calibration import PixelSize, pixel_size
    from napari_promptseg.io.layer_data import tiff_layer_data

    labels = np.zeros((1, 64, 80), np.uint16)
    labels[0, 10:20, 10:30] = 1
    for unit in ("µm", "nm"):
        path = write_labels(
            tmp_path / f"one_{unit}.tif", labels, pixel_size=PixelSize(0.5, 0.5, unit), origin=(0, 10, 20)
        )
        assert read_image(path).shape == labels.shape
        size = pixel_size(path)
        assert size.unit == unit and size[:2] == pytest.approx((0.5, 0.5))
        [(_, kwargs, kind)] = tiff_layer_data(path)
        assert kind == "labels" and kwargs["scale"] == pytest.approx([0.5, 0.5]) and kwargs["units"] == [unit] * 2
        assert kwargs["metadata"]["origin"] == pytest.approx([10.0, 20.0])
