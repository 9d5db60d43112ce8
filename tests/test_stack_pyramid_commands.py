"""`promptseg oneshot` and `promptseg text` on a stack pyramid (a z-stack OME-Zarr whose levels downsample the planes
and keep Z), and --time on a time-lapse pyramid (T, Z, Y, X levels): the planes are read at the level a 2D pyramid of
their size is read at, report.json says it, and each plane's labels are those the 2D path gives that plane's own
pyramid. Real pixels (the shared brain MRI's planes around the left thalamus, magnified; the bundled nuclei) and the
real LiteMedSAM model."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from .conftest import thalamus_planes

#: the MRI planes magnified this much: 1760 x 2240 px, whose whole-image level (>= 1024 px a side) is the 2x one
MAGNIFY = 16


def write_pyramid(levels: list, path: Path, axes: str) -> Path:
    """``levels`` (largest first, each 2x coarser in Y and X) as an OME-Zarr of ``axes``, chunked by plane."""
    import zarr
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_multiscale

    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    lead = len(axes) - 2
    scales = [[{"type": "scale", "scale": [*(1.0,) * lead, 2.0**k, 2.0**k]}] for k in range(len(levels))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        write_multiscale(
            levels,
            root,
            axes=axes,
            fmt=FormatV04(),
            coordinate_transformations=scales,
            storage_options=[
                {"chunks": (*(1,) * lead, min(1024, np.shape(level)[-2]), min(1024, np.shape(level)[-1]))}
                for level in levels
            ],
        )
    return path


def zarr_labels(path: Path) -> np.ndarray:
    from napari_promptseg.io.multiscale import open_multiscale

    return np.asarray(open_multiscale(path / "labels" / "promptseg", keep_time=True).levels[0])


def same_objects(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label images hold the same objects, whatever their ids (one to one over every pixel)."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def record_of(out: Path, name: str) -> dict:
    records = json.loads((out / "report.json").read_text())["images"]
    return next(r for r in records if Path(r["input"]).name == name)


@pytest.fixture(scope="module")
def thalamus_stack(shared_data, tmp_path_factory):
    """A 2-plane z-stack pyramid of the MRI's planes around the thalamus magnified MAGNIFY x (levels 1, 2x, 4x), each
    plane's own 2D pyramid beside it, and a 2D reference (the middle plane at 4x) with its thalamus mask."""
    import tifffile
    from scipy import ndimage
    from skimage.transform import downscale_local_mean

    vol, truth, _ = thalamus_planes(shared_data, below=0, above=1)
    full = ndimage.zoom(vol, (1, MAGNIFY, MAGNIFY), order=1)
    levels = [full, *(downscale_local_mean(full, (1, f, f)).astype(np.float32) for f in (2, 4))]
    folder = tmp_path_factory.mktemp("thalamus")
    stack = write_pyramid(levels, folder / "stack.ome.zarr", "zyx")
    planes = [write_pyramid([level[z] for level in levels], folder / f"plane{z}.ome.zarr", "yx") for z in range(2)]
    reference = ndimage.zoom(vol[0], 4, order=1)  # the thalamus' largest cross-section
    mask = np.kron(truth[0], np.ones((4, 4), np.uint8))
    tifffile.imwrite(folder / "reference.tif", reference)
    tifffile.imwrite(folder / "reference_mask.tif", mask)
    return stack, planes, folder / "reference.tif", folder / "reference_mask.tif", full.shape


@pytest.mark.parametrize("plane", [None, 1], ids=["every-plane", "plane"])
def test_oneshot_reads_a_stack_pyramid_at_the_level_a_plane_pyramid_is_read_at(thalamus_stack, tmp_path, plane):
    """`promptseg oneshot STACK.ome.zarr` (every plane, or --plane Z) read the z-stack's planes at full resolution
    (a stack of whole-slide planes: GBs) and said no level. Each plane is read at the level its own 2D pyramid is
    read at (the whole image's, 2x here): report.json says it, the labels are at full resolution, and each plane's
    are those of the 2D path on that plane's pyramid."""
    from napari_promptseg.cli import main

    stack, planes, reference, mask, shape = thalamus_stack
    flat = [planes[plane]] if plane is not None else planes
    out = tmp_path / "out"
    argv = ["oneshot", str(stack), *map(str, flat), "--reference", str(reference), "--reference-mask", str(mask)]
    argv += ["-o", str(out), "--output-format", "tiff", *(["--plane", str(plane)] if plane is not None else [])]
    assert main(argv) == 0
    record = record_of(out, stack.name)
    assert record["pyramid_level"] == 1 and record["level_factor"] == 2.0, record
    import tifffile

    labels = tifffile.imread(record["output"])
    assert labels.shape == shape
    for z in range(2):
        if plane is not None and z != plane:
            assert not labels[z].any()
            continue
        flat_record = record_of(out, planes[z].name)
        assert flat_record["pyramid_level"] == 1
        flat_labels = tifffile.imread(flat_record["output"])
        assert flat_labels.any() and same_objects(labels[z], flat_labels), z


@pytest.fixture(scope="module")
def nuclei_text_inputs(tmp_path_factory):
    """A library whose 'nucleus' entry is the bundled nuclei at 4x their pixels (nuclei ~60 px); a 2-plane z-stack
    pyramid of the other bundled nuclei image as 1024 x 2048 px strips at that size (the second plane mirrored), and
    each plane's own 2D pyramid."""
    from napari_promptseg._sample_data import nuclei, nuclei_for_text
    from napari_promptseg.io.library import ReferenceLibrary

    (image, _, _), (truth, _, _) = nuclei()
    (target, _, _), _ = nuclei_for_text()
    block = np.ones((4, 4), np.uint8)
    folder = tmp_path_factory.mktemp("nuclei")
    library = ReferenceLibrary.open(folder / "library")
    library.add("nucleus", np.kron(image, block), np.kron(truth, block).astype(np.uint16), margin=None, instances=True)
    strip = np.kron(np.block([[target, target[:, ::-1]]]), block)
    full = np.stack([strip, strip[::-1]])
    levels = [full, full[:, ::2, ::2], full[:, ::4, ::4]]
    stack = write_pyramid(levels, folder / "stack.ome.zarr", "zyx")
    planes = [write_pyramid([level[z] for level in levels], folder / f"plane{z}.ome.zarr", "yx") for z in range(2)]
    return library, stack, planes, full.shape


def test_text_reads_a_stack_pyramid_at_the_level_a_plane_pyramid_is_read_at(nuclei_text_inputs, tmp_path):
    """`promptseg text nuclei STACK.ome.zarr` read every plane of the z-stack at full resolution and said no level; a
    2D pyramid of a plane's size is read at its whole-image level (2x). The stack's planes are read there too:
    report.json says so, and each plane holds the objects the 2D path finds on that plane's own pyramid."""
    import tifffile

    from napari_promptseg.cli import main

    library, stack, planes, shape = nuclei_text_inputs
    out = tmp_path / "out"
    argv = ["text", "nuclei", str(stack), *map(str, planes), "-o", str(out), "--library", str(library.path)]
    assert main([*argv, "--output-format", "tiff"]) == 0
    record = record_of(out, stack.name)
    assert record["pyramid_level"] == 1 and record["level_factor"] == 2.0, record
    labels = tifffile.imread(record["output"])
    assert labels.shape == shape
    for z in range(2):
        flat_record = record_of(out, planes[z].name)
        assert flat_record["pyramid_level"] == 1
        flat_labels = tifffile.imread(flat_record["output"])
        assert flat_record["objects"] > 20 and same_objects(labels[z], flat_labels), z


def test_time_on_a_time_lapse_pyramid_reads_the_time_points_volume_at_the_level_of_the_boxes(
    shared_data, tmp_path, capsys
):
    """`promptseg segment TIMELAPSE.ome.zarr --time T --plane Z --box ...` on a (T, Z, Y, X) pyramid read the time
    point's volume at full resolution and said no level. It is read at the boxes' level, as the same volume's z-stack
    pyramid is: report.json says the level, and time point T holds the z-stack's labels (the others empty)."""
    from scipy import ndimage
    from skimage.transform import downscale_local_mean

    from napari_promptseg.cli import main

    vol, _, (x0, y0, x1, y1) = thalamus_planes(shared_data)
    full = ndimage.zoom(vol, (1, 4, 4), order=1)
    levels = [full, *(downscale_local_mean(full, (1, f, f)).astype(np.float32) for f in (2, 4))]
    stack = write_pyramid(levels, tmp_path / "stack.ome.zarr", "zyx")
    # two time points: the volume dimmed, then the volume
    timelapse = write_pyramid([np.stack([level * 0.5, level]) for level in levels], tmp_path / "tl.ome.zarr", "tzyx")
    box = [str(v) for v in (4 * x0, 4 * y0, 4 * x1 + 3, 4 * y1 + 3)]
    found = {}
    for path, time in ((stack, []), (timelapse, ["--time", "1"])):
        out = tmp_path / f"out_{path.stem}"
        argv = ["segment", str(path), "--box", *box, "--plane", "3", *time, "-o", str(out)]
        assert main(argv) == 0, capsys.readouterr()
        record = record_of(out, path.name)
        assert record["pyramid_level"] > 0 and record["level_factor"] == 2.0 ** record["pyramid_level"], record
        found[path.stem] = zarr_labels(path)
    assert found["tl.ome"].shape == (2, *full.shape)
    assert not found["tl.ome"][0].any() and found["stack.ome"][3].any()
    np.testing.assert_array_equal(found["tl.ome"][1], found["stack.ome"])


def test_lazy_labels_past_the_whole_size_are_written_to_a_tiff_tile_by_tile(tmp_path, monkeypatch):
    """Lazy full-resolution labels (a stack pyramid's, found on a level) were made whole in memory to be written as
    a TIFF (--output-format tiff: 5 planes of 16k x 16k, 2.5 GB). Past LAZY_WHOLE_ABOVE_BYTES they are written tile
    by tile from the lazy labels: the same labels, tiled, and never held whole (the peak of memory allocated while
    writing 64 MB of labels stays under half of that: a strip and its blocks; the limit lowered to keep it small)."""
    import tracemalloc

    import tifffile
    from skimage import data

    from napari_promptseg.io import images
    from napari_promptseg.tiling import lazy_upsampled_labels, upsample_labels

    coins = data.coins()  # real objects: the coins, labelled, as found on a level ~6x coarser than the labels
    from skimage.measure import label

    shape = (8, 2048, 2048)
    level = np.stack([label(np.roll(coins, 40 * z, axis=1) > 120) for z in range(shape[0])]).astype(np.uint16)
    monkeypatch.setattr(images, "LAZY_WHOLE_ABOVE_BYTES", 2**20)
    lazy = lazy_upsampled_labels(level, shape)
    tracemalloc.start()
    try:
        path = images.write_labels(tmp_path / "labels.tif", lazy, axes="ZYX")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < np.prod(shape) * 2 / 2, f"{peak / 1e6:.1f} MB allocated at the peak"
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].is_tiled and tif.series[0].axes == "ZYX"
        written = tif.asarray()
    np.testing.assert_array_equal(written, upsample_labels(level, shape))
    assert images.is_own_output(path)


def test_a_slides_labels_past_the_whole_size_are_written_from_its_level_tile_by_tile(
    shared_data, tmp_path, monkeypatch, capsys
):
    """`promptseg segment SLIDE.ome.zarr --box ... --output-format tiff`: the labels found on the slide's level were
    made whole at full resolution in memory to be written (a 65k x 65k slide: 8.5 GB). Past LAZY_WHOLE_ABOVE_BYTES
    they come back lazily and are written tile by tile: the labels written whole below it (the MRI's thalamus plane
    magnified 4x, read at a level; the limit lowered to keep the test small)."""
    import tifffile
    from scipy import ndimage
    from skimage.transform import downscale_local_mean

    from napari_promptseg.cli import main
    from napari_promptseg.io import images

    vol, truth, (x0, y0, x1, y1) = thalamus_planes(shared_data)
    full = ndimage.zoom(vol[3], 4, order=1)
    levels = [full, *(downscale_local_mean(full, (f, f)).astype(np.float32) for f in (2, 4))]
    slide = write_pyramid(levels, tmp_path / "slide.ome.zarr", "yx")
    box = [str(v) for v in (4 * x0, 4 * y0, 4 * x1 + 3, 4 * y1 + 3)]
    written = {}
    for kind, limit in (("whole", images.LAZY_WHOLE_ABOVE_BYTES), ("tiles", 2**10)):
        monkeypatch.setattr(images, "LAZY_WHOLE_ABOVE_BYTES", limit)
        out = tmp_path / kind
        argv = ["segment", str(slide), "--box", *box, "-o", str(out), "--output-format", "tiff", "--overlay"]
        assert main(argv) == 0, capsys.readouterr()
        record = record_of(out, slide.name)
        assert record["pyramid_level"] > 0 and record["objects"] == 1 and Path(record["overlay"]).exists(), record
        with tifffile.TiffFile(record["output"]) as tif:
            written[kind] = (tif.asarray(), tif.pages[0].is_tiled)
    assert written["whole"][0].shape == full.shape and written["whole"][0].any()
    np.testing.assert_array_equal(written["tiles"][0], written["whole"][0])
    assert written["tiles"][1] and not written["whole"][1]
