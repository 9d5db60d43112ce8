"""Big images: OME-Zarr and pyramidal TIFF read lazily in the project's axis order, the pyramid level chosen for the
working scale, the tiled instance pipeline on a lazy array, and labels written into an OME-Zarr that napari's reader
(napari-ome-zarr) opens."""

from __future__ import annotations

import json
import warnings

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr
from ome_zarr.format import FormatV04, FormatV05
from ome_zarr.writer import write_image

from napari_promptseg._sample_data import nuclei
from napari_promptseg.cli import main
from napari_promptseg.errors import PromptsegError
from napari_promptseg.io import read_image
from napari_promptseg.io.multiscale import is_ome_zarr, open_multiscale
from napari_promptseg.io.ome_zarr_labels import REPLACED_PREFIX, SCRATCH_PREFIX, WRITTEN_PREFIX, write_ome_zarr_labels
from napari_promptseg.methods.instances import match_instances, segment_with_exemplars
from napari_promptseg.methods.metrics import dice
from napari_promptseg.tiling import upsample_labels

#: the bundled nuclei image enlarged this much: its nuclei (about 15 px) become slide-sized objects
ZOOM = 4


def write_ome_zarr(path, image_cyx: np.ndarray, fmt, pixel_size: float = 0.5, levels: int = 3) -> None:
    root = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        write_image(
            image_cyx,
            root,
            axes="cyx",
            fmt=fmt,
            scale_factors=[2**k for k in range(1, levels)],
            scale={"c": 1.0, "y": pixel_size, "x": pixel_size},
            storage_options={"chunks": (1, 256, 256)},
        )


@pytest.fixture(scope="module")
def zoomed():
    """(image, truth) of the bundled nuclei image enlarged ZOOM times (nearest), and the box of its largest nucleus."""
    (image, _, _), (truth, _, _) = nuclei()
    big, big_truth = np.kron(image, np.ones((ZOOM, ZOOM), image.dtype)), np.kron(truth, np.ones((ZOOM, ZOOM), int))
    largest = np.bincount(big_truth.ravel())[1:].argmax() + 1
    rows, cols = np.nonzero(big_truth == largest)
    return big, big_truth == largest, (cols.min(), rows.min(), cols.max(), rows.max())


@pytest.mark.parametrize("fmt", [FormatV04(), FormatV05()], ids=["ngff0.4", "ngff0.5"])
def test_ome_zarr_is_read_lazily_channels_last(tmp_path, fmt):
    rng = np.random.default_rng(0)
    cyx = rng.integers(0, 255, (3, 300, 400), dtype=np.uint8)
    path = tmp_path / "image.ome.zarr"
    write_ome_zarr(path, cyx, fmt)
    assert is_ome_zarr(path)
    image = read_image(path)
    assert isinstance(image, da.Array) and image.shape == (300, 400, 3)
    np.testing.assert_array_equal(np.asarray(image[10:20, 30:40]), np.moveaxis(cyx, 0, -1)[10:20, 30:40])
    pyramid = open_multiscale(path)
    assert pyramid.axes == "yxc" and pyramid.plane_shapes == [(300, 400), (150, 200), (75, 100)]
    assert pyramid.pixel_size["y"] == 0.5


def test_pyramidal_tiff_levels_and_the_level_for_a_scale(tmp_path):
    rng = np.random.default_rng(0)
    zyx = rng.integers(0, 2**16, (2, 512, 640), dtype=np.uint16)
    path = tmp_path / "pyramid.ome.tif"
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(zyx, subifds=2, tile=(128, 128), metadata={"axes": "ZYX"})
        for k in (2, 4):
            tif.write(zyx[:, ::k, ::k], subfiletype=1, tile=(128, 128))
    pyramid = open_multiscale(path)
    assert pyramid.axes == "zyx" and pyramid.plane_shapes == [(512, 640), (256, 320), (128, 160)]
    np.testing.assert_array_equal(np.asarray(pyramid.levels[1][1]), zyx[1, ::2, ::2])
    assert pyramid.level_for_scale(1.0) == (0, 1.0)
    assert pyramid.level_for_scale(0.4) == (1, 2.0)  # 1/0.4 = 2.5: the 1/2 level still has the resolution
    assert pyramid.level_for_scale(0.1) == (2, 4.0)
    # by a side length (registration): the coarsest level with that many px along its longest side, its factors
    # along the spatial axes (z, y, x); a side above full resolution is full resolution
    for side, index, factors in ((300, 1, [1, 2, 2]), (320, 1, [1, 2, 2]), (321, 0, [1, 1, 1]), (9999, 0, [1, 1, 1])):
        level = pyramid.level_for_side(side)
        assert level.index == index and level.array is pyramid.levels[index], side
        assert level.factors.tolist() == factors, side
    assert pyramid.level_for_side(100).index == 2
    labels = np.arange(6).reshape(2, 3)
    assert upsample_labels(labels, (4, 6)).tolist() == [[0, 0, 1, 1, 2, 2]] * 2 + [[3, 3, 4, 4, 5, 5]] * 2


def test_cli_reads_the_pyramid_level_of_the_boxes_and_writes_labels_napari_opens(litemedsam, zoomed, tmp_path):
    from napari.components import ViewerModel
    from napari.plugins import _initialize_plugins

    image, nucleus, box = zoomed
    path = tmp_path / "nuclei.ome.zarr"
    write_ome_zarr(path, image[None], FormatV04(), pixel_size=0.25)
    out = tmp_path / "out"
    args = ["segment", str(path), "-o", str(out), "--box", *map(str, box)]
    assert main(args) == 0
    record = json.loads((out / "report.json").read_text())["images"][0]
    # the nucleus spans ~136 px: LiteMedSAM (256 px input) sees the whole 1024 px image at scale 0.25 and the
    # objects at the size it segments well, so the 1/4 level (256 px) has all the resolution it needs
    assert record["pyramid_level"] == 2
    # the working scale is said in the input's pixels, as its shape and the labels written: the box's size, and
    # the model's 256 px over the whole 1024 px image (not the 1/4 level's 34 px objects at scale 1)
    (x0, y0, x1, y1), scale = box, record["working_scale"]
    assert scale["object_size"] == pytest.approx(np.sqrt((x1 - x0) * (y1 - y0)), abs=0.1)
    assert scale["scale"] == pytest.approx(0.25) and scale["tile"] == 1024
    assert record["output"] == str(path / "labels" / "promptseg")
    assert main(args) == 0  # a second run replaces the labels image, it does not add another

    _initialize_plugins()
    viewer = ViewerModel()
    viewer.open(str(path), plugin="napari-ome-zarr")
    labels_layers = [layer for layer in viewer.layers if layer._type_string == "labels"]
    assert len(labels_layers) == 1
    layer = labels_layers[0]
    assert layer.multiscale and len(layer.data) == 3
    np.testing.assert_allclose(layer.scale, [0.25, 0.25])  # the image's pixel size
    np.testing.assert_allclose(viewer.layers[0].scale, layer.scale)
    written = np.asarray(layer.data[0])
    assert written.shape == nucleus.shape
    assert dice(written == 1, nucleus) > 0.7


def test_lazy_image_gives_the_in_memory_result(litemedsam, nuclei_exemplars):
    """The tiled instance pipeline on a dask array (read tile by tile) finds what it finds in memory."""
    (image, _, _), (truth, _, _) = nuclei()
    model = nuclei_exemplars
    mosaic = np.hstack([image, image[:, ::-1]])  # two tiles, their overlap and seams across its middle nuclei
    in_memory = segment_with_exemplars(litemedsam, model, mosaic[..., None], object_size=model.object_size)
    assert in_memory.scale.tiles > 1
    lazy = da.from_array(mosaic[..., None], chunks=(128, 128, 1))
    result = segment_with_exemplars(litemedsam, model, lazy, object_size=model.object_size)
    np.testing.assert_array_equal(result.labels, in_memory.labels)
    assert match_instances(result.labels[:, :256], truth)["f1"] > 0.5


def test_stack_labels_round_trip_with_the_image_levels(tmp_path):
    path = tmp_path / "volume.ome.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        write_image(
            np.zeros((4, 128, 96), np.uint16),
            root,
            axes=[{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"],
            fmt=FormatV05(),
            scale_factors=[2],
            scale={"z": 2.0, "y": 0.5, "x": 0.5},
            storage_options={"chunks": (1, 64, 64)},
        )
    labels = np.zeros((4, 128, 96), np.uint16)
    labels[1:3, 10:50, 20:40] = 7
    written = open_multiscale(write_ome_zarr_labels(path, labels))
    assert written.axes == "zyx" and [lv.shape for lv in written.levels] == [(4, 128, 96), (4, 64, 48)]
    assert written.pixel_size == {"z": 2.0, "y": 0.5, "x": 0.5}
    # the units come along (they were dropped: the labels' 0.5 meant pixels of unknown size)
    assert written.axis_info == {a: {"type": "space", "unit": "micrometer"} for a in "zyx"}
    np.testing.assert_array_equal(np.asarray(written.levels[0]), labels)
    with pytest.raises(ValueError, match="do not match"):
        write_ome_zarr_labels(path, labels[0])


def test_labels_repeat_the_images_level_shapes_and_transforms(tmp_path):
    """Labels lie on the image's grid whatever its metadata: a transform shared by all levels (NGFF's
    multiscales-level coordinateTransformations), a translation per level, and odd sides (each level rounded as
    the image's: writers round 125 / 2 to 62 or 63)."""
    path = tmp_path / "odd.ome.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        write_image(np.zeros((3, 125, 97), np.uint8), root, axes="zyx", fmt=FormatV04(), scale_factors=[2])
    attrs = json.loads((path / ".zattrs").read_text())
    multiscale = attrs["multiscales"][0]
    for k, dataset in enumerate(multiscale["datasets"]):
        dataset["coordinateTransformations"] = [
            {"type": "scale", "scale": [1.0, 2.0**k, 2.0**k]},
            {"type": "translation", "translation": [0.0, 10.0 * k, 0.0]},
        ]
    multiscale["coordinateTransformations"] = [{"type": "scale", "scale": [2.0, 0.5, 0.5]}]
    (path / ".zattrs").write_text(json.dumps(attrs))
    image = open_multiscale(path)
    assert image.pixel_size == {"z": 2.0, "y": 0.5, "x": 0.5}  # was {1, 1, 1}: the shared scale was not read
    assert image.level_transforms[1] == {"scale": [2.0, 1.0, 1.0], "translation": [0.0, 5.0, 0.0]}
    labels = np.zeros((3, 125, 97), np.uint16)
    labels[1, 10:60, 20:50] = 3
    written = open_multiscale(write_ome_zarr_labels(path, labels, "manual"))
    assert [lv.shape for lv in written.levels] == [lv.shape for lv in image.levels]
    assert written.level_transforms == image.level_transforms
    np.testing.assert_array_equal(np.asarray(written.levels[1]), labels[:, ::2, ::2][:, :62, :48])
    # a name that is not one plain segment: refused before anything is touched ("" addressed labels/ itself, and
    # replacing it deleted every labels image of the file)
    write_ome_zarr_labels(path, labels)
    for bad in ("", "a/b", " x", ".."):
        with pytest.raises(PromptsegError, match="plain name"):
            write_ome_zarr_labels(path, labels, bad)
    assert {"manual", "promptseg"} <= {p.name for p in (path / "labels").iterdir()}
    with pytest.raises(SystemExit):  # the CLI refuses it before any work
        main(["segment", str(path), "--plane", "1", "--box", "20", "10", "50", "60", "--labels-name", "", "-o", "x"])


def test_tiff_labels_of_an_ome_zarr_keep_its_origin(litemedsam, tmp_path):
    """--output-format tiff on an OME-Zarr placed at an origin (its multiscales' translation: a crop of a larger
    acquisition) wrote labels that started at 0: the origin the OME-Zarr labels keep was lost. The TIFF records it
    as Fiji reads it (ImageJ's xorigin/yorigin/zorigin, in pixels; OME Plane PositionX/Y/Z for uint32 ids), in the
    unit of its pixel size, and the reader gives it back in the Labels layer's metadata ("origin"). Not as a
    translate: napari-ome-zarr opens the image, and its OME-Zarr labels, without their translation, and the TIFF's
    labels lie over the image as napari shows it. Their pixel size is in the OME-Zarr's own unit (here an electron
    micrograph's nanometres), as napari-ome-zarr scales the image: in µm, 0.5 beside its 500 (napari converts no
    units), they covered a thousandth of it."""
    from napari_ome_zarr import napari_get_reader

    from napari_promptseg.io import write_labels
    from napari_promptseg.io.calibration import PixelSize
    from napari_promptseg.io.layer_data import tiff_layer_data

    (image, _, _), _ = nuclei()
    path = tmp_path / "crop.ome.zarr"
    write_ome_zarr(path, image[None], FormatV04(), pixel_size=500.0, levels=2)
    attrs = json.loads((path / ".zattrs").read_text())
    multiscale = attrs["multiscales"][0]
    multiscale["axes"] = [{"name": "c", "type": "channel"}] + [
        {"name": a, "type": "space", "unit": "nanometer"} for a in "yx"
    ]
    for dataset in multiscale["datasets"]:  # 100 and 250 µm
        translation = [0.0, 100_000.0, 250_000.0]
        dataset["coordinateTransformations"].append({"type": "translation", "translation": translation})
    (path / ".zattrs").write_text(json.dumps(attrs))
    out = tmp_path / "out"
    box = ["--box", "17", "113", "41", "134"]
    assert main(["segment", str(path), *box, "--output-format", "tiff", "-o", str(out)]) == 0
    [(labels, kwargs, kind)] = tiff_layer_data(out / "crop.tif")
    assert kind == "labels" and labels.max() == 1
    np.testing.assert_allclose(kwargs["scale"], [500.0, 500.0])
    assert kwargs["units"] == ["nm", "nm"]
    np.testing.assert_allclose(kwargs["metadata"]["origin"], [100_000.0, 250_000.0])
    with tifffile.TiffFile(out / "crop.tif") as tif:  # ImageJ's origin is in pixels, the negative of the offset
        assert tif.imagej_metadata["xorigin"] == -500.0 and tif.imagej_metadata["yorigin"] == -200.0
    # the same origin as the OME-Zarr labels of the same input keep
    written = open_multiscale(write_ome_zarr_labels(path, np.asarray(labels)))
    np.testing.assert_allclose(written.level_transforms[0]["translation"], [100_000.0, 250_000.0])
    # napari opens the image at 0 (napari-ome-zarr drops translations), where the labels' layer lies: if it ever
    # places the image at its origin, the labels' layer must take its origin as translate
    opened = napari_get_reader(str(path))(str(path))
    assert sorted(kind for _, _, kind in opened) == ["image", "labels"]
    for _, layer_kwargs, _ in opened:
        np.testing.assert_allclose(layer_kwargs["scale"], kwargs["scale"])  # the labels TIFF's, read above
        assert not np.any(layer_kwargs.get("translate", 0))
        assert not np.any(np.asarray(layer_kwargs.get("affine", np.eye(3)))[:-1, -1])
    assert "translate" not in kwargs

    # a stack's origin along its planes too; uint32 ids (more than 65535 objects) in OME metadata
    for dtype in (np.uint16, np.uint32):
        stack = np.zeros((3, 20, 30), np.uint32)
        stack[1, 5:9, 5:9] = 70000 if dtype == np.uint32 else 7
        size = PixelSize(0.5, 0.5, "µm")
        tif = write_labels(
            tmp_path / f"{dtype.__name__}.tif", stack, pixel_size=size, z_spacing=2.0, origin=(4, 100, 250)
        )
        [(_, kwargs, _)] = tiff_layer_data(tif)
        np.testing.assert_allclose(kwargs["scale"], [2.0, 0.5, 0.5])
        np.testing.assert_allclose(kwargs["metadata"]["origin"], [4.0, 100.0, 250.0]), dtype


@pytest.mark.parametrize("objects", [7, 70_000], ids=["imagej", "ome"])
def test_tiff_labels_of_an_ome_zarr_time_lapse_keep_its_frame_interval(tmp_path, objects):
    """A time-lapse OME-Zarr (t, y, x) whose frames are 5 s apart opens in napari-ome-zarr with a time scale of 5;
    its labels TIFF (--output-format tiff) opened with a scale of 1 along its frames, so past the first frame napari
    showed the labels of another frame, or none. The TIFF records the interval (ImageJ's finterval, OME's
    TimeIncrement) and the reader scales its frames by it."""
    from napari_ome_zarr import napari_get_reader

    from napari_promptseg.io.input_labels import write_input_labels
    from napari_promptseg.io.layer_data import tiff_layer_data

    (image, _, _), _ = nuclei()
    path = tmp_path / "movie.ome.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        write_image(
            np.stack([image] * 3),
            root,
            axes=[{"name": "t", "type": "time", "unit": "second"}]
            + [{"name": a, "type": "space", "unit": "micrometer"} for a in "yx"],
            fmt=FormatV04(),
            scale_factors=[2],
            scale={"t": 5.0, "y": 0.5, "x": 0.5},
        )
    labels = np.zeros((3, *image.shape), np.uint32)
    labels[1, 10:20, 10:20] = objects
    [(_, kwargs, kind)] = tiff_layer_data(
        write_input_labels(path, labels, tmp_path / "out", output_format="tiff", axes="TYX")
    )
    [(_, image_kwargs, _)] = napari_get_reader(str(path))(str(path))
    assert kind == "labels" and image_kwargs["scale"] == [5.0, 0.5, 0.5]
    np.testing.assert_allclose(kwargs["scale"], image_kwargs["scale"])


def _napari_labels(path) -> dict[str, np.ndarray]:
    """The labels layers napari's reader (napari-ome-zarr) opens from an OME-Zarr: full-resolution data by labels
    name (its layer names are paths, "labels/labels/<name>")."""
    from napari.components import ViewerModel
    from napari.plugins import _initialize_plugins

    _initialize_plugins()
    viewer = ViewerModel()
    viewer.open(str(path), plugin="napari-ome-zarr")
    return {
        layer.name.rsplit("/", 1)[-1]: np.asarray(layer.data[0] if layer.multiscale else layer.data)
        for layer in viewer.layers
        if layer._type_string == "labels"
    }


@pytest.mark.parametrize("fmt", [FormatV04(), FormatV05()], ids=["ngff0.4", "ngff0.5"])
def test_an_interrupted_labels_rewrite_keeps_the_earlier_labels(tmp_path, monkeypatch, fmt):
    """Ctrl+C during a rewrite of the labels deleted the earlier labels (they were deleted first) and left a group
    with missing or all-zero levels. The new labels are written aside and swapped in when complete: an interrupted
    rewrite leaves the earlier labels whole, napari reads them as before, and the next write cleans up."""
    (image, _, _), (truth, _, _) = nuclei()
    path = tmp_path / "nuclei.ome.zarr"
    write_ome_zarr(path, image[None], fmt, levels=4)
    first = write_ome_zarr_labels(path, truth)
    write_ome_zarr_labels(path, (truth > 0).astype(np.uint16), "manual")
    before = open_multiscale(first)
    new = np.where(truth % 2 == 1, truth, 0).astype(np.uint16)  # every other nucleus

    real_to_zarr, written = da.to_zarr, []

    def interrupted_after_one_level(*args, **kwargs):
        if written:
            raise KeyboardInterrupt  # as SIGINT arrives while the second level is written
        delayed = real_to_zarr(*args, **kwargs)
        da.compute(delayed)  # the first level is written whole
        written.append(kwargs.get("component"))
        return delayed

    monkeypatch.setattr(da, "to_zarr", interrupted_after_one_level)
    with pytest.raises(KeyboardInterrupt):
        write_ome_zarr_labels(path, new)
    monkeypatch.undo()
    assert written  # the write did start
    # what the interrupted write had written aside is dropped as it stops (no labels list named it)
    assert not (path / "labels" / f"{SCRATCH_PREFIX}promptseg").exists()

    # the earlier labels: listed, every level there and unchanged, and napari shows them and nothing half written
    again = open_multiscale(first)
    assert len(again.levels) == len(before.levels) == 4
    for old, now in zip(before.levels, again.levels, strict=True):
        np.testing.assert_array_equal(np.asarray(now), np.asarray(old))
    layers = _napari_labels(path)
    assert sorted(layers) == ["manual", "promptseg"]
    np.testing.assert_array_equal(layers["promptseg"], truth)

    # the next write replaces them whole and leaves nothing of the interrupted one
    write_ome_zarr_labels(path, new)
    left = (p.name for p in (path / "labels").iterdir() if not p.name.startswith((".z", "zarr", WRITTEN_PREFIX)))
    assert sorted(left) == [
        "manual",
        "promptseg",
    ]
    layers = _napari_labels(path)
    assert sorted(layers) == ["manual", "promptseg"]
    np.testing.assert_array_equal(layers["promptseg"], new)
    np.testing.assert_array_equal(layers["manual"], truth > 0)
    replaced = open_multiscale(first)
    assert replaced.level_transforms == before.level_transforms and replaced.axis_info == before.axis_info
    np.testing.assert_array_equal(np.asarray(replaced.levels[3]), new[::8, ::8])


def test_a_rewrite_killed_between_its_renames_gets_the_earlier_labels_back(tmp_path, monkeypatch):
    """Killed between its two renames, a rewrite left the name listed, its folder gone and the earlier labels aside
    (``.promptseg-replaced-<name>``); the next write deleted the scratch copy and, interrupted too, left nothing.
    The next write now first puts the earlier labels back."""
    (image, _, _), (truth, _, _) = nuclei()
    path = tmp_path / "nuclei.ome.zarr"
    write_ome_zarr(path, image[None], FormatV04(), levels=2)
    first = write_ome_zarr_labels(path, truth)
    (path / "labels" / "promptseg").rename(path / "labels" / f"{REPLACED_PREFIX}promptseg")  # the kill

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(da, "to_zarr", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_ome_zarr_labels(path, np.zeros_like(truth))
    monkeypatch.undo()
    np.testing.assert_array_equal(np.asarray(open_multiscale(first).levels[0]), truth)
    np.testing.assert_array_equal(_napari_labels(path)["promptseg"], truth)


@pytest.mark.parametrize("fmt", [FormatV04(), FormatV05()], ids=["ngff0.4", "ngff0.5"])
def test_labels_promptseg_did_not_write_or_that_were_edited_since_are_never_replaced(tmp_path, fmt, capsys):
    """A run silently replaced labels/<name> whatever it held: a user's annotations written by ome-zarr-py, or our
    labels corrected in napari and saved back, were lost. Only promptseg's own labels, unchanged since it wrote
    them, are replaced; anything else is refused (before any work on the CLI) and stays as it was."""
    from ome_zarr.writer import write_labels

    (image, _, _), (truth, _, _) = nuclei()
    path = tmp_path / "nuclei.ome.zarr"
    write_ome_zarr(path, image[None], fmt, levels=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        write_labels(truth.astype(np.uint16), zarr.open_group(str(path), mode="a"), "manual", fmt=fmt, axes="yx")
    with pytest.raises(PromptsegError, match="labels/manual holds labels that promptseg did not write"):
        write_ome_zarr_labels(path, np.zeros_like(truth), "manual")
    cli = ["segment", str(path), "--box", "20", "10", "50", "60", "-o", str(tmp_path / "out")]
    assert main([*cli, "--labels-name", "manual"]) == 2
    assert "would be replaced; write under another labels name (--labels-name)" in capsys.readouterr().err
    assert not (tmp_path / "out" / "report.json").exists()  # refused before any work
    np.testing.assert_array_equal(_napari_labels(path)["manual"], truth)

    ours = write_ome_zarr_labels(path, truth)  # promptseg's own: a rerun replaces it
    write_ome_zarr_labels(path, (truth > 0).astype(np.uint16))
    group = zarr.open_group(str(ours), mode="r+")
    level0 = group[sorted(group.array_keys())[0]]  # corrected in napari and saved back
    level0[0, 0] = 7
    with pytest.raises(PromptsegError, match="labels/promptseg holds labels .* changed since it wrote them"):
        write_ome_zarr_labels(path, np.zeros_like(truth))
    assert main(cli) == 2
    assert _napari_labels(path)["promptseg"][0, 0] == 7
    assert main([*cli, "--labels-name", "again"]) == 0  # another name is written beside them
    assert sorted(_napari_labels(path)) == ["again", "manual", "promptseg"]


@pytest.mark.parametrize("fmt", [FormatV04(), FormatV05()], ids=["ngff0.4", "ngff0.5"])
def test_labels_of_an_image_copied_without_its_file_times_are_still_ours(tmp_path, fmt):
    """An OME-Zarr copied with a plain `cp -r` (its files get the copy's modification times) refused the labels
    promptseg had written into it ("did not write, or that were changed since"): they were known by their files'
    times alone. They are known by their contents too now, beside the image they were written into: the copy's
    are replaced, while labels copied into another image, or edited after the copy, are still refused."""
    import os
    import shutil

    (image, _, _), (truth, _, _) = nuclei()
    first = tmp_path / "first.ome.zarr"
    write_ome_zarr(first, image[None], fmt, levels=2)
    write_ome_zarr_labels(first, truth)
    copy = tmp_path / "copy.ome.zarr"
    shutil.copytree(first, copy, copy_function=shutil.copy)  # as cp -r: contents and modes, not times
    for folder, _, names in os.walk(copy):
        for name in names:  # the copy's own times (within the file system's clock tick of the originals otherwise)
            os.utime(os.path.join(folder, name), ns=(10**18, 10**18))
    write_ome_zarr_labels(copy, truth > 0)
    np.testing.assert_array_equal(np.asarray(open_multiscale(copy / "labels" / "promptseg").levels[0]), truth > 0)

    # labels copied with their times into another image of the same shape: still refused
    other = tmp_path / "other.ome.zarr"
    write_ome_zarr(other, image[None, ::-1].copy(), fmt, levels=2)
    shutil.copytree(first / "labels", other / "labels", copy_function=shutil.copy2)
    with pytest.raises(PromptsegError, match="labels/promptseg holds labels that promptseg wrote for another image"):
        write_ome_zarr_labels(other, truth > 0)
    # and the copy's labels edited since
    group = zarr.open_group(str(copy / "labels" / "promptseg"), mode="r+")
    group[sorted(group.array_keys())[0]][0, 0] = 9
    with pytest.raises(PromptsegError, match="changed since it wrote them"):
        write_ome_zarr_labels(copy, truth)


def test_bioformats2raw_containers_are_read_as_their_image_series(litemedsam, tmp_path, shared_data, capsys):
    """Bug hunt 4: bioformats2raw writes an OME-Zarr as a container (root marked 'bioformats2raw.layout', the image
    in its series '0'), as IDR and the BioImage Archive serve them. A folder of them was 'no image files'; two named
    slides were refused as both writing OUT/0.tif ('rename one'); one alone was reported and written as '0'. Their
    series are inputs now, named after the container, and their labels go into the series' labels/ group."""
    from pathlib import Path

    image = tifffile.imread(shared_data / "nuclei_ctc_fluo_instances" / "images" / "N2DH-GOWT1_t01.tif")
    folder = tmp_path / "slides"
    for k, name in enumerate(("slideA.ome.zarr", "slideB.ome.zarr")):
        root = zarr.open_group(str(folder / name), mode="w", zarr_format=2)
        root.attrs["bioformats2raw.layout"] = 3
        crop = np.ascontiguousarray(image[300 + 64 * k : 556 + 64 * k, 300:556])
        write_ome_zarr(folder / name / "0", crop[None], FormatV04(), levels=2)
    box = ["--box", "100", "100", "140", "140", "--scheduler", "none"]
    out = tmp_path / "out"
    assert main(["segment", str(folder), *box, "--output-format", "tiff", "-o", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.tif")) == ["slideA.tif", "slideB.tif"]
    records = json.loads((out / "report.json").read_text())["images"]
    inputs = [Path(r["input"]).relative_to(folder).as_posix() for r in records]
    assert inputs == ["slideA.ome.zarr/0", "slideB.ome.zarr/0"]
    assert all(r["objects"] == 1 for r in records)
    # named one by one, labels into the image's own labels/ group (NGFF: beside the image's levels)
    slides = [str(folder / "slideA.ome.zarr"), str(folder / "slideB.ome.zarr")]
    assert main(["segment", *slides, *box, "-o", str(tmp_path / "o2")]) == 0
    for name in ("slideA.ome.zarr", "slideB.ome.zarr"):
        labels = read_image(folder / name / "0" / "labels" / "promptseg")
        np.testing.assert_array_equal(labels, tifffile.imread(out / name.replace(".ome.zarr", ".tif")))
    with pytest.raises(PromptsegError, match="bioformats2raw container of 1 image series; open one of them"):
        read_image(folder / "slideA.ome.zarr")


def test_output_format_ome_zarr_with_an_input_that_is_none_is_refused_before_any_work(litemedsam, tmp_path, capsys):
    """Bug hunt 4: --output-format ome-zarr with a TIFF among the inputs segmented that TIFF (and retried it), failed
    at its write, and left an empty OUT/<stem>.tif that passed for a result; the OME-Zarr of the same batch got its
    labels. The mismatch is known before any work: refused in one line, nothing written."""
    (image, _, _), _ = nuclei()
    tiff = tmp_path / "cells.tif"
    tifffile.imwrite(tiff, image)
    zarr_path = tmp_path / "slide.ome.zarr"
    write_ome_zarr(zarr_path, image[None], FormatV04(), levels=2)
    out = tmp_path / "out"
    argv = ["segment", str(tiff), str(zarr_path), "--box", "30", "40", "60", "70", "-o", str(out)]
    assert main([*argv, "--output-format", "ome-zarr", "--scheduler", "none"]) == 2
    err = capsys.readouterr().err
    assert f"{tiff}: --output-format ome-zarr writes into an OME-Zarr input's labels/ group" in err, err
    assert not out.exists() and not (zarr_path / "labels").exists()


def test_a_box_on_a_large_image_costs_about_its_labels_not_an_int64_copy_of_them(litemedsam, tmp_path):
    """segment counted the objects with np.bincount, which copied the labels as int64 (8 bytes per pixel, 4x the
    uint16 labels): 100 MB at its peak for a 3k x 3k image of 9 MB and labels of 19 MB, where one small box needs
    little more than those two (about 50 MB)."""
    import tracemalloc

    (image, _, _), _ = nuclei()
    big = np.kron(image, np.ones((12, 12), image.dtype))  # 3072 x 3072: a box of 60 px is decoded in its tile
    path = tmp_path / "large.tif"
    tifffile.imwrite(path, big)
    tracemalloc.start()
    try:
        assert main(["segment", str(path), "--box", "1000", "1000", "1060", "1060", "-o", str(tmp_path / "out")]) == 0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert tifffile.imread(tmp_path / "out" / "large.tif").any()
    labels_bytes = big.size * 2  # uint16
    assert peak < 3 * (big.nbytes + labels_bytes), f"{peak / 2**20:.0f} MB at its peak"


def test_a_tiled_tiff_too_large_to_read_whole_is_read_tile_by_tile(litemedsam, tmp_path, monkeypatch):
    """A slide or mosaic saved as one tiled level without a pyramid (20k x 20k) was read whole (400 MB) only to be
    refused as past the pixel limit; it is read lazily now, as a pyramid of one level, and segmented tile by tile
    into the labels the same pixels give read whole. The limit lowered here, so that a small image is past it."""
    from napari_promptseg.models import preprocessing

    (image, _, _), (truth, _, _) = nuclei()
    big = np.kron(image, np.ones((2, 2), image.dtype))
    rows, cols = np.nonzero(truth == np.bincount(truth.ravel())[1:].argmax() + 1)  # the largest nucleus, boxed
    box = ["--box", *map(str, 2 * np.array([cols.min(), rows.min(), cols.max(), rows.max()]))]
    tiled, strips = tmp_path / "tiled.tif", tmp_path / "strips.tif"
    tifffile.imwrite(tiled, big, tile=(128, 128), compression="zlib")
    tifffile.imwrite(strips, big)
    monkeypatch.setattr(preprocessing, "DEFAULT_MAX_PIXELS", big.size - 1)
    assert isinstance(read_image(tiled), da.Array) and isinstance(read_image(strips), np.ndarray)
    for path in (tiled, strips):  # decoded in the tile around it (a whole-image read is still refused)
        args = ["segment", str(path), *box, "--object-size", "20", "-o", str(tmp_path / path.stem)]
        assert main(args) == 0, path
    labels = tifffile.imread(tmp_path / "tiled" / "tiled.tif")
    assert labels.shape == big.shape and labels.any()
    np.testing.assert_array_equal(labels, tifffile.imread(tmp_path / "strips" / "strips.tif"))
    # three planes saved as tifffile guesses (planar RGB, unnamed) stay planes, as read whole: read as a pyramid of
    # one level, they became the colours of one image
    planes = tmp_path / "planes.tif"
    tifffile.imwrite(planes, np.stack([big] * 3), tile=(128, 128), photometric="rgb", planarconfig="separate")
    assert np.shape(read_image(planes)) == (3, *big.shape)


def test_a_large_planar_rgb_tiff_from_another_program_is_read_tile_by_tile_as_colour(tmp_path, monkeypatch):
    """An RGB TIFF another program stored plane by plane (photometric RGB, planar configuration separate, no
    tifffile description) is one colour image to every command; tiled and past the pixel limit it was still read
    whole (filling memory only to be refused), as if its samples were tifffile's guess for a few planes. It is read
    tile by tile, as colour, as other large tiled TIFFs are. The limit lowered, so that a small image is past it."""
    from napari_promptseg.io.multiscale import read_image_named
    from napari_promptseg.models import preprocessing

    (image, _, _), _ = nuclei()
    rgb = np.stack([image, image // 2, 255 - image], axis=-1)
    path = tmp_path / "planar.tif"
    tifffile.imwrite(
        path, np.moveaxis(rgb, -1, 0), tile=(128, 128), photometric="rgb", planarconfig="separate", metadata=None
    )
    monkeypatch.setattr(preprocessing, "DEFAULT_MAX_PIXELS", image.size - 1)
    read = read_image_named(path)
    assert isinstance(read, da.Array) and read.shape == rgb.shape
    np.testing.assert_array_equal(np.asarray(read), rgb)


@pytest.mark.parametrize("fmt", [FormatV04(), FormatV05()], ids=["ngff0.4", "ngff0.5"])
def test_an_ome_zarrs_labels_group_or_level_given_as_an_image_is_told_what_to_give(tmp_path, fmt):
    """`slide.ome.zarr/labels` (the group listing its labels images) or `slide.ome.zarr/s0` (one level, a bare zarr
    array) given as an image or mask: both were refused as having 'no multiscales metadata in its .zattrs'. The
    refusal names the labels images to give, or the image the level belongs to."""
    (image, _, _), (truth, _, _) = nuclei()
    path = tmp_path / "crop.ome.zarr"
    write_ome_zarr(path, image[None], fmt, levels=2)
    write_ome_zarr_labels(path, truth.astype(np.uint16), name="nuclei")
    with pytest.raises(PromptsegError, match=r"the labels group of an OME-Zarr image; give one of its labels images"):
        read_image(path / "labels")
    with pytest.raises(PromptsegError, match=r"crop\.ome\.zarr/labels/nuclei"):
        read_image(path / "labels")
    level = r"s0: .*one level \(a zarr array\) of the OME-Zarr image .*crop\.ome\.zarr;"
    with pytest.raises(PromptsegError, match=level):
        read_image(path / "s0")
    np.testing.assert_array_equal(np.asarray(read_image(path / "labels" / "nuclei")), truth)
