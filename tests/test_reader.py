"""The napari reader of pyramidal TIFFs: a tiled OME-TIFF with its resolution levels in SubIFDs (as slide scanners
and bioformats2raw/raw2ometiff write them), made from real skimage images, opens as a lazy multiscale image layer:
colour slides as RGB, fluorescence channels one layer each, the file's pixel size as the layer's scale. A folder of
same-size images opens as one stack, read plane by plane; a folder of mixed sizes is refused naming the odd file."""

from __future__ import annotations

import dask.array as da
import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from skimage import data

from napari_promptseg._reader import get_reader
from napari_promptseg.errors import PromptsegError
from napari_promptseg.io.layer_data import image_layer_data

from .conftest import listing_refused, two_channel_pyramid

PLUGIN = "napari-promptseg"


def write_pyramid(path, image, axes: str, levels: int = 3, **metadata) -> None:
    """``image`` (axes ``axes``: "YXS" colour, "CYX" channels) as a tiled, zlib-compressed pyramidal OME-TIFF of
    ``levels`` levels, each half the size of the one before, the reduced ones in SubIFDs."""
    photometric = "rgb" if axes == "YXS" else "minisblack"
    spatial = [axes.index("Y"), axes.index("X")]

    def reduced(factor: int) -> np.ndarray:
        index = tuple(slice(None, None, factor) if a in spatial else slice(None) for a in range(image.ndim))
        return np.ascontiguousarray(image[index])

    options = {"tile": (128, 128), "photometric": photometric, "compression": "zlib"}
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(image, subifds=levels - 1, metadata={"axes": axes, **metadata}, **options)
        for level in range(1, levels):
            tif.write(reduced(2**level), subfiletype=1, **options)


@pytest.fixture
def rgb_slide(tmp_path):
    path = tmp_path / "slide.ome.tif"
    write_pyramid(path, data.astronaut(), "YXS", PhysicalSizeX=0.5, PhysicalSizeY=0.5)
    return path


@pytest.fixture
def two_channels():
    ihc = data.immunohistochemistry()  # two of its colour planes stand in for two stains
    return np.ascontiguousarray(np.moveaxis(ihc[..., :2], -1, 0))  # (C, Y, X)


def test_a_pyramidal_rgb_ome_tiff_is_one_lazy_multiscale_rgb_layer_with_its_pixel_size(rgb_slide):
    reader = get_reader(str(rgb_slide))
    assert reader is not None
    [(levels, meta, kind)] = reader(str(rgb_slide))
    assert kind == "image" and meta["multiscale"] is True and meta["rgb"] is True
    assert "channel_axis" not in meta and meta["name"] == "slide"
    assert [level.shape for level in levels] == [(512, 512, 3), (256, 256, 3), (128, 128, 3)]
    assert all(isinstance(level, da.Array) for level in levels)  # read tile by tile, not numpy arrays
    assert meta["scale"] == [0.5, 0.5] and meta["units"] == ["µm", "µm"]
    np.testing.assert_array_equal(np.asarray(levels[1]), data.astronaut()[::2, ::2])


def test_opening_a_pyramid_never_reads_its_full_resolution(rgb_slide):
    # the full-resolution tiles overwritten with bytes no zlib stream starts with: reading one would fail
    with tifffile.TiffFile(rgb_slide) as tif:
        page = tif.pages.first
        offsets, counts = page.dataoffsets, page.databytecounts
    with open(rgb_slide, "r+b") as fh:
        for offset, count in zip(offsets, counts, strict=True):
            fh.seek(offset)
            fh.write(b"\xff" * count)
    [(levels, meta, _)] = image_layer_data(rgb_slide)
    np.testing.assert_array_equal(np.asarray(levels[-1]), data.astronaut()[::4, ::4])  # what napari shows first
    with pytest.raises(Exception):  # noqa: B017, PT011 - the codec's own error: level 0 is really unreadable
        np.asarray(levels[0])


def test_channels_are_one_layer_each_named_from_the_ome_metadata(tmp_path, two_channels):
    path = tmp_path / "stains.ome.tif"
    write_pyramid(path, two_channels, "CYX", levels=2, Channel={"Name": ["DAPI", "GFP"]})
    [(levels, meta, _)] = get_reader(str(path))(str(path))
    assert meta["name"] == ["stains DAPI", "stains GFP"] and meta["channel_axis"] == 2 and "rgb" not in meta
    assert [level.shape for level in levels] == [(512, 512, 2), (256, 256, 2)]
    assert "scale" not in meta and "units" not in meta  # no pixel size in the file: napari's pixels


def test_napari_opens_a_pyramidal_tiff_with_the_plugin(make_napari_viewer, tmp_path, rgb_slide, two_channels):
    viewer = make_napari_viewer()
    [slide] = viewer.open(str(rgb_slide), plugin=PLUGIN)
    assert slide.multiscale and slide.rgb and slide.name == "slide"
    assert [level.shape for level in slide.data] == [(512, 512, 3), (256, 256, 3), (128, 128, 3)]
    assert all(isinstance(level, da.Array) for level in slide.data)
    assert tuple(slide.scale) == (0.5, 0.5) and [str(u) for u in slide.units] == ["micrometer"] * 2

    path = tmp_path / "stains.ome.tif"
    write_pyramid(path, two_channels, "CYX", levels=2, PhysicalSizeX=0.25, PhysicalSizeY=0.25)
    layers = viewer.open(str(path), plugin=PLUGIN)
    assert [layer.name for layer in layers] == ["stains channel 0", "stains channel 1"]
    assert all(layer.multiscale and not layer.rgb and tuple(layer.scale) == (0.25, 0.25) for layer in layers)
    assert layers[0].colormap.name != layers[1].colormap.name  # napari's per-channel colours
    for k, layer in enumerate(layers):
        assert [level.shape for level in layer.data] == [(512, 512), (256, 256)]
        np.testing.assert_array_equal(np.asarray(layer.data[1]), two_channels[k, ::2, ::2])


def test_a_tiff_without_a_pyramid_is_read_whole_with_its_pixel_size(tmp_path, make_napari_viewer):
    # napari lets a user remember one reader for every *.tif: this one must then open plain TIFFs as napari's would
    path = tmp_path / "coins.tif"
    tifffile.imwrite(path, data.coins(), resolution=(4.0, 4.0), resolutionunit="CENTIMETER")
    hyperstack = tmp_path / "hyperstack.tif"  # T, Z, C, Y, X: axes the project's own readers refuse
    tczyx = np.stack([np.stack([np.stack([data.camera()[:64, :64]] * 2)] * 3)] * 2)
    tifffile.imwrite(hyperstack, tczyx, imagej=True, metadata={"axes": "TZCYX"})
    reader = get_reader(str(path))
    assert reader is not None and get_reader([str(path), str(hyperstack)]) is not None
    [(array, meta, kind)] = reader(str(path))
    assert kind == "image" and isinstance(array, np.ndarray) and not meta["multiscale"]
    np.testing.assert_array_equal(array, data.coins())
    assert meta["scale"] == pytest.approx([0.25, 0.25]) and meta["units"] == ["cm", "cm"]  # 4 px/cm
    [(array, meta, _)] = reader(str(hyperstack))
    assert isinstance(array, np.ndarray) and array.shape == tczyx.shape
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin=PLUGIN)
    assert layer.name == "coins" and layer.data.shape == data.coins().shape
    assert get_reader(str(tmp_path / "missing.tif")) is None


def test_a_stack_is_scaled_by_its_plane_spacing(tmp_path):
    camera = data.camera()
    zyx = np.stack([camera[:256, :256], camera[128:384, 128:384], camera[256:, 256:]])
    path = tmp_path / "stack.ome.tif"
    write_pyramid(path, zyx, "ZYX", levels=2, PhysicalSizeX=0.2, PhysicalSizeY=0.2, PhysicalSizeZ=1.5)
    [(levels, meta, _)] = get_reader(str(path))(str(path))
    assert [level.shape for level in levels] == [(3, 256, 256), (3, 128, 128)]
    assert meta["scale"] == [1.5, 0.2, 0.2] and meta["units"] == ["µm"] * 3


def test_a_stack_in_millimetres_keeps_its_plane_spacing_in_the_units_of_its_pixel_size(tmp_path):
    # the pixel size is read in micrometres (as Bio-Formats gives Fiji it): the plane spacing must be too, not
    # 0.002 (mm) beside 0.2 (µm), which flattened the stack a thousandfold
    camera = data.camera()
    zyx = np.stack([camera[:256, :256], camera[128:384, 128:384], camera[256:, 256:]])
    path = tmp_path / "stack_mm.ome.tif"
    sizes = {"PhysicalSizeX": 0.0002, "PhysicalSizeY": 0.0002, "PhysicalSizeZ": 0.0015}
    units = {"PhysicalSizeXUnit": "mm", "PhysicalSizeYUnit": "mm", "PhysicalSizeZUnit": "mm"}
    write_pyramid(path, zyx, "ZYX", levels=2, **sizes, **units)
    [(_, meta, _)] = get_reader(str(path))(str(path))
    np.testing.assert_allclose(meta["scale"], [1.5, 0.2, 0.2])
    assert meta["units"] == ["µm"] * 3


def camera_planes(folder, names, shift: int = 64) -> list[np.ndarray]:
    """256² crops of skimage's camera, each ``shift`` px further along the diagonal, saved under ``names``."""
    folder.mkdir(exist_ok=True)
    camera = data.camera()
    planes = [camera[k * shift : k * shift + 256, k * shift : k * shift + 256] for k in range(len(names))]
    for name, plane in zip(names, planes, strict=True):
        iio.imwrite(folder / name, plane)
    return planes


def test_a_folder_of_same_size_images_opens_as_one_stack_in_natural_order(make_napari_viewer, tmp_path):
    folder = tmp_path / "planes"
    planes = camera_planes(folder, ["z1.png", "z2.png", "z10.png"])
    (folder / "notes.txt").write_text("acquired on Monday")  # napari's own reader would stack this file too
    (folder / ".z3.png").write_bytes(b"")  # macOS resource fork: not an image
    (folder / "sub").mkdir()
    assert get_reader(str(folder)) is not None
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(folder), plugin=PLUGIN)
    assert layer.name == "planes" and layer.data.shape == (3, 256, 256) and isinstance(layer.data, da.Array)
    assert layer.metadata["files"] == ["z1.png", "z2.png", "z10.png"]  # z10 after z2, not after z1
    np.testing.assert_array_equal(np.asarray(layer.data), np.stack(planes))


def test_a_folder_of_calibrated_images_is_a_stack_in_their_unit(tmp_path):
    """A folder of TIFFs of 0.25 µm pixels opened with a scale of 0.25 in pixels (no units, where one of its files
    opens in µm): napari warned "Inconsistent units across layers" beside the file's layer and dropped the units."""
    folder = tmp_path / "calibrated"
    folder.mkdir()
    for name in ("a.tif", "b.tif"):
        tifffile.imwrite(
            folder / name, data.camera()[:30, :40], imagej=True, resolution=(4, 4), metadata={"unit": "um"}
        )
    [(_, one, _)] = get_reader(str(folder / "a.tif"))(str(folder / "a.tif"))
    [(stack, kwargs, _)] = get_reader(str(folder))(str(folder))
    assert stack.shape == (2, 30, 40) and kwargs["scale"] == [1.0, 0.25, 0.25]
    assert kwargs["units"] == ["pixel", *one["units"]] == ["pixel", "µm", "µm"]


def test_a_folder_of_images_of_different_sizes_is_refused_naming_the_odd_one(tmp_path):
    folder = tmp_path / "mixed"
    camera_planes(folder, ["a.png", "b.png"])
    iio.imwrite(folder / "c.png", data.camera()[:100, :120])
    with pytest.raises(PromptsegError, match=r"c\.png is \(100, 120\) uint8 and a\.png \(256, 256\) uint8"):
        get_reader(str(folder))(str(folder))


def test_a_folder_with_a_damaged_image_names_it_in_the_users_words(tmp_path):
    """A PNG that holds no image (a failed download) in a folder was refused quoting SimpleITK's internals ('sitk::
    ERROR: Unable to determine ImageIO reader'), the last of imageio's plugins tried; the file alone is refused in
    the words the CLI uses (io.images.read_image)."""
    folder = tmp_path / "planes"
    camera_planes(folder, ["a.png"])
    (folder / "b.png").write_text("<html>not found</html>")
    with pytest.raises(PromptsegError) as refused:
        get_reader(str(folder))(str(folder))
    said = str(refused.value)
    assert "b.png: cannot be read as an image (its contents match no image format known here" in said, said
    assert "sitk" not in said and "SimpleITK" not in said


def test_a_tiff_of_complex_values_is_refused_naming_it(tmp_path):
    """A complex TIFF (an FFT, a holography phase image) opened as a layer napari cannot make: NotImplementedError with
    no message at all; alone or as a folder's planes, it is refused naming the file and what to save instead."""
    folder = tmp_path / "fft"
    folder.mkdir()
    for name in ("a.tif", "b.tif"):
        tifffile.imwrite(folder / name, np.fft.fft2(data.camera()[:64, :64]).astype(np.complex64))
    for path in (folder / "a.tif", folder):
        with pytest.raises(PromptsegError, match=r"a\.tif: complex values \(complex64\), which napari cannot show"):
            get_reader(str(path))(str(path))


def test_a_folder_without_images_or_an_ome_zarr_is_left_to_other_readers(tmp_path, two_channels):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no images here")
    assert get_reader(str(tmp_path / "notes")) is None
    zarr_path = two_channel_pyramid(two_channels, tmp_path / "slide.ome.zarr", "ome.zarr")
    assert get_reader(str(zarr_path)) is None  # napari-ome-zarr reads it, with its labels


def test_a_folder_that_cannot_be_looked_into_is_left_to_other_readers(tmp_path, monkeypatch):
    """napari asks every reader about every path dropped or typed: a name too long for the file system, or a folder
    whose listing is refused (permission denied), raised OSError out of get_reader instead of answering None."""
    too_long = tmp_path / ("a" * 300)  # over the 255 bytes a file name may have: stat fails, for root too
    assert get_reader(str(too_long)) is None
    assert get_reader(str(tmp_path / ("b" * 300 + ".tif"))) is None
    locked = tmp_path / "locked"
    camera_planes(locked, ["z1.png", "z2.png"])
    assert get_reader(str(locked)) is not None
    listing_refused(monkeypatch, locked)
    assert get_reader(str(locked)) is None


def test_pngs_named_tif_open_as_the_pngs_they_hold_alone_and_as_a_folder(tmp_path):
    """A PNG saved or renamed as .tif is read as the PNG it holds by the CLI (586ad0e); the reader, which napari asks
    first for every *.tif, refused it ('not a TIFF file: header=b'\\x89PNG''), alone and in a folder."""
    folder = tmp_path / "renamed"
    planes = camera_planes(folder, ["z1.png", "z2.png"])
    for name in ("z1", "z2"):
        (folder / f"{name}.png").rename(folder / f"{name}.tif")
    [(data_, meta, kind)] = get_reader(str(folder / "z1.tif"))(str(folder / "z1.tif"))
    assert kind == "image" and meta["name"] == "z1"
    np.testing.assert_array_equal(np.asarray(data_), planes[0])
    [(stack, _, _)] = get_reader(str(folder))(str(folder))
    np.testing.assert_array_equal(np.asarray(stack), np.stack(planes))


def test_label_tiffs_promptseg_wrote_open_as_labels_and_registers_images_as_images(tmp_path):
    """promptseg's labels opened as an image layer (grey values, no ids to pick or edit). They open as labels now;
    register's outputs (the warped moving image) are images, though ours too."""
    from skimage.measure import label

    from napari_promptseg.io.images import REGISTER_MARKER, write_labels

    coins = label(data.coins() > 120)
    path = write_labels(tmp_path / "coins.tif", coins)
    [(array, meta, kind)] = get_reader(str(path))(str(path))
    assert kind == "labels" and meta["name"] == "coins" and not meta["multiscale"]
    np.testing.assert_array_equal(array, coins)
    warped = tmp_path / "warped.tif"
    tifffile.imwrite(warped, data.coins(), software=REGISTER_MARKER)
    [(_, _, kind)] = get_reader(str(warped))(str(warped))
    assert kind == "image"


def test_napari_opens_a_whole_slides_labels_as_lazy_multiscale_labels(make_napari_viewer, tmp_path, monkeypatch):
    """A whole slide's labels were one untiled image, which napari read whole (gigabytes) as an image layer in
    pixels beside the slide in µm: a pyramid of them opens as a lazy multiscale Labels layer in the slide's unit."""
    import napari
    from skimage.measure import label

    from napari_promptseg.io import images
    from napari_promptseg.io.calibration import PixelSize

    monkeypatch.setattr(images, "PYRAMID_ABOVE_SIDE", 256)  # a whole slide's labels, small
    monkeypatch.setattr(images, "PYRAMID_TOP_SIDE", 256)
    coins = label(np.tile(data.coins() > 120, (2, 2))[:600, :600])
    path = images.write_labels(tmp_path / "slide.tif", coins, pixel_size=PixelSize(0.5, 0.5, "µm"))
    [(levels, meta, kind)] = get_reader(str(path))(str(path))
    assert kind == "labels" and meta["multiscale"] and all(isinstance(level, da.Array) for level in levels)
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin=PLUGIN)
    assert isinstance(layer, napari.layers.Labels) and layer.multiscale and layer.name == "slide"
    assert [level.shape for level in layer.data] == [(600, 600), (300, 300), (150, 150)]
    assert tuple(layer.scale) == (0.5, 0.5) and [str(u) for u in layer.units] == ["micrometer"] * 2
    np.testing.assert_array_equal(np.asarray(layer.data[1]), coins[::2, ::2])


def test_a_tiff_of_few_planes_saved_as_tifffile_guesses_opens_as_the_cli_reads_it(tmp_path):
    """tifffile saves a (3 or 4, Y, X) array as planar RGB unless told otherwise (and says it will stop guessing so):
    the CLI reads such a file's first axis as planes (napari's own reader too), and its labels are (4, Y, X); the
    plugin opened the 4 frames of a time-lapse as one RGBA image, its layer (Y, X, 4), where the labels did not fit."""
    from napari_promptseg.io.images import write_labels
    from napari_promptseg.io.layer_data import labels_calibration
    from napari_promptseg.io.multiscale import labels_axes, read_image_named

    camera = data.camera()
    frames = np.stack([camera[k * 32 : k * 32 + 128, k * 32 : k * 32 + 160] for k in range(4)])
    path = tmp_path / "four_frames.tif"  # what tifffile.imwrite(path, frames) writes, warning of its guess
    tifffile.imwrite(
        path, frames, photometric="rgb", planarconfig="separate", resolution=(4, 4), resolutionunit="CENTIMETER"
    )
    [(array, meta, kind)] = get_reader(str(path))(str(path))
    assert kind == "image" and "rgb" not in meta
    assert array.shape == np.shape(read_image_named(path)) == (4, 128, 160)  # the CLI's reading of the file
    np.testing.assert_array_equal(array, frames)
    size, spacing = labels_calibration(path, 3)  # the CLI's labels of it open over it
    labels = write_labels(
        tmp_path / "labels.tif", frames > 128, axes=labels_axes(path, 3), pixel_size=size, z_spacing=spacing
    )
    [(_, labels_meta, _)] = get_reader(str(labels))(str(labels))
    assert meta["scale"] == labels_meta["scale"] == [1.0, 0.25, 0.25]
    assert meta["units"] == labels_meta["units"]


def test_a_cli_output_folder_opens_as_its_labels_over_their_images(tmp_path):
    """A `promptseg segment -o OUT` folder (label TIFFs, overlays, report.json) dropped on napari: the plugin took it
    for a folder of images, left out its own outputs and said 'no image files (.tif, ...) in it' beside two .tif
    files. It opens as their Labels layers, each in the pixel size and origin it recorded, as each opens alone; a
    register run's folder as its outputs, each as it opens alone."""
    from skimage.measure import label

    from napari_promptseg.io.calibration import PixelSize
    from napari_promptseg.io.images import write_labels, write_overlay

    out = tmp_path / "out"
    coins = label(data.coins()[:96, :128] > 120)
    write_labels(out / "b.tif", coins, pixel_size=PixelSize(0.5, 0.5, "µm"), origin=(5.0, 10.0))
    write_labels(out / "a10.tif", np.stack([coins, coins[::-1]]))
    write_labels(out / "a2.tif", coins[:50])
    write_overlay(out / "b_overlay.png", data.coins()[:96, :128], coins)
    (out / "report.json").write_text("{}")
    reader = get_reader(str(out))
    layers = reader(str(out))
    assert [(meta["name"], kind, np.shape(array)) for array, meta, kind in layers] == [
        ("a2", "labels", (50, 128)),
        ("a10", "labels", (2, 96, 128)),
        ("b", "labels", (96, 128)),
    ]
    _, meta, _ = layers[2]
    assert meta["scale"] == [0.5, 0.5] and meta["units"] == ["µm", "µm"] and meta["metadata"]["origin"] == [5.0, 10.0]
    np.testing.assert_array_equal(layers[2][0], coins)
    # a `promptseg register -o` folder: its warped image and displacement (images of their own shapes, which a
    # stack refused: 'a folder opens as one stack of same-size images, but moving_warped.tif is (96, 128, 3)'), and
    # its warped labels
    from napari_promptseg.io.images import REGISTER_LABELS_MARKER, REGISTER_MARKER

    registered = tmp_path / "registered"
    registered.mkdir()
    tifffile.imwrite(registered / "moving_warped.tif", data.astronaut()[:96, :128], software=REGISTER_MARKER)
    field = np.zeros((96, 128, 2), np.float32)
    tifffile.imwrite(registered / "displacement.tif", field, software=REGISTER_MARKER, metadata={"axes": "YXC"})
    tifffile.imwrite(registered / "moving_labels.tif", coins.astype(np.uint16), software=REGISTER_LABELS_MARKER)
    (registered / "report.json").write_text("{}")
    layers = get_reader(str(registered))(str(registered))
    assert [(kind, np.shape(array)) for array, _, kind in layers] == [
        ("image", (96, 128, 2)),
        ("labels", (96, 128)),
        ("image", (96, 128, 3)),
    ]
    # the displacement's two channels named by what they hold: 'displacement channel 0/1' told dx from dy to no one
    assert layers[0][1]["name"] == ["displacement dx (columns)", "displacement dy (rows)"]


def test_an_empty_or_pageless_tiff_is_refused_naming_it_and_what_is_wrong(tmp_path):
    """A TIFF without pages opened in napari failed in napari's own words ('Image data must have at least 2
    dimensions.'), naming no file; an empty file (0 bytes: a copy that never started) was 'not a TIFF file:
    header=b'''. Both are refused naming the file and what is wrong, by the plugin as by every command."""
    import warnings

    from napari_promptseg.io import read_image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tifffile: 'writing zero-size array to nonconformant TIFF'
        tifffile.imwrite(tmp_path / "nopages.tif", np.zeros((0,), np.uint8))
    (tmp_path / "empty.tif").write_bytes(b"")
    with pytest.raises(PromptsegError, match=r"nopages\.tif: cannot be read as an image \(no pixels"):
        get_reader(str(tmp_path / "nopages.tif"))(str(tmp_path / "nopages.tif"))
    for read in (read_image, lambda p: get_reader(str(p))(str(p))):
        with pytest.raises(PromptsegError, match=r"empty\.tif: .*the file is empty \(0 bytes\)"):
            read(tmp_path / "empty.tif")


def test_a_folder_of_multichannel_images_opens_one_stack_per_channel(tmp_path):
    """A folder of Fiji composites or OME-TIFFs of channels (each alone: one layer per channel) opened as one
    (N, Y, X, C) layer: napari showed its last two axes, X and the channels, as a 2-pixel-wide image. It is a stack
    per channel now (channel_axis), named and scaled as each file's channels open."""
    folder = tmp_path / "composites"
    folder.mkdir()
    coins = data.coins()[:64, :80]
    for k in range(3):
        channels = np.stack([np.roll(coins, k, 1), coins[::-1]])
        tifffile.imwrite(
            folder / f"t{k}.ome.tif",
            channels,
            ome=True,
            metadata={"axes": "CYX", "Channel": {"Name": ["DAPI", "GFP"]}, "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5},
        )
    [(stack, kwargs, kind)] = get_reader(str(folder))(str(folder))
    assert kind == "image" and stack.shape == (3, 64, 80, 2) and kwargs["channel_axis"] == 3
    assert kwargs["name"] == ["composites DAPI", "composites GFP"]
    assert kwargs["scale"] == [1.0, 0.5, 0.5] and kwargs["units"] == ["pixel", "µm", "µm"]
    np.testing.assert_array_equal(np.asarray(stack[2, ..., 0]), np.roll(coins, 2, 1))
