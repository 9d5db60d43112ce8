"""Whole slides as scanners save them: an Aperio .svs and a Hamamatsu .ndpi (TIFF-based, written small in the test:
:mod:`.slide_files`) open lazily as their pyramid, in micrometres from the slide's own metadata, the label and macro
images left out; in napari, and as inputs of the batch commands (named, or in a folder)."""

from __future__ import annotations

import json
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
from skimage import data

from napari_promptseg._reader import get_reader
from napari_promptseg.cli import main
from napari_promptseg.io import read_image
from napari_promptseg.io.calibration import PixelSize, pixel_size

from .slide_files import write_ndpi, write_svs

WRITERS = {"svs": write_svs, "ndpi": write_ndpi}


@pytest.fixture(scope="module")
def ihc() -> np.ndarray:
    return data.immunohistochemistry()  # 512 x 512 RGB: a bright-field stain, as slides are


@pytest.mark.parametrize("kind", ["svs", "ndpi"])
def test_a_slide_opens_lazily_as_its_pyramid_in_micrometres_without_its_label_and_macro(tmp_path, ihc, kind):
    """Aperio's pixel size is its ImageDescription's 'MPP = 0.5'; Hamamatsu's its resolution tags, 20000 px per cm:
    both 0.5 µm, as OpenSlide and Bio-Formats read them. Neither suffix was read: napari had no reader, the batch
    commands skipped a folder's slides, and a slide named was read whole (its full resolution into memory)."""
    path = WRITERS[kind](tmp_path / f"biopsy.{kind}", ihc)
    assert pixel_size(path) == PixelSize(0.5, 0.5, "µm")
    reader = get_reader(str(path))
    assert reader is not None
    [(levels, meta, kind_)] = reader(str(path))
    assert kind_ == "image" and meta["multiscale"] and meta["rgb"] and meta["name"] == "biopsy"
    assert [level.shape for level in levels] == [(512, 512, 3), (256, 256, 3), (128, 128, 3)]  # no label, macro
    assert all(isinstance(level, da.Array) for level in levels)
    assert meta["scale"] == pytest.approx([0.5, 0.5]) and meta["units"] == ["µm", "µm"]
    np.testing.assert_array_equal(np.asarray(levels[2]), ihc[::4, ::4])
    full = read_image(path)  # what the commands read: lazily too
    assert isinstance(full, da.Array) and full.shape == ihc.shape
    np.testing.assert_array_equal(np.asarray(full[100:164, 200:264]), ihc[100:164, 200:264])


def test_napari_opens_a_slide_with_the_plugin(make_napari_viewer, tmp_path, ihc):
    path = write_svs(tmp_path / "biopsy.svs", ihc)
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin="napari-promptseg")  # its reader's file patterns take .svs
    assert layer.multiscale and layer.rgb and [level.shape[:2] for level in layer.data] == [(512, 512), (256, 256),
                                                                                           (128, 128)]  # fmt: skip
    assert tuple(layer.scale) == pytest.approx((0.5, 0.5)) and [str(u) for u in layer.units] == ["micrometer"] * 2


def test_segment_and_oneshot_take_slides_named_and_in_a_folder(litemedsam, tmp_path, ihc, capsys):
    folder = tmp_path / "slides"
    folder.mkdir()
    write_svs(folder / "a.svs", ihc)
    write_ndpi(folder / "b.ndpi", ihc[:, ::-1].copy())
    out = tmp_path / "out"
    box = ["--box", "200", "200", "300", "300", "--scheduler", "none"]
    assert main(["segment", str(folder), *box, "-o", str(out)]) == 0, capsys.readouterr().err
    records = json.loads((out / "report.json").read_text())["images"]
    assert [r["input"] for r in records] == [str(folder / "a.svs"), str(folder / "b.ndpi")]
    for name in ("a", "b"):
        labels = tifffile.imread(out / f"{name}.tif")
        assert labels.shape == (512, 512) and labels.max() == 1  # full resolution, one object in the box

    reference, mask = tmp_path / "ref.tif", tmp_path / "ref_mask.tif"
    tifffile.imwrite(reference, ihc[:256, :256], photometric="rgb")
    tifffile.imwrite(mask, tifffile.imread(out / "a.tif")[:256, :256].astype(np.uint8))
    one = tmp_path / "one"
    argv = ["oneshot", str(folder / "a.svs"), "--reference", str(reference), "--reference-mask", str(mask)]
    assert main([*argv, "--no-instances", "-o", str(one), "--scheduler", "none"]) == 0, capsys.readouterr().err
    assert tifffile.imread(one / "a.tif").shape == (512, 512)


@pytest.mark.parametrize("command", ["segment", "oneshot", "text", "register"])
def test_the_help_of_each_image_command_names_whole_slides(command, capsys):
    """The commands read .svs and .ndpi slides (lazily, at the pyramid level the working scale needs), but their
    --help named only 2D images, stacks and OME-Zarr: a pathologist reading it took slides to need converting."""
    with pytest.raises(SystemExit):
        main([command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert ".svs" in help_text and ".ndpi" in help_text, help_text
    assert "lazily" in help_text and "pyramid level" in help_text, help_text


def _readme_code(*needles: str) -> str:
    """The README's inline code span holding every one of ``needles`` (the line a user copies)."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    spans = [span for span in re.findall(r"`([^`\n]+)`", readme) if all(n in span for n in needles)]
    assert spans, f"README.md has no code with {needles}"
    return spans[0]


def test_the_readme_lines_that_open_a_slide_with_the_plugin_in_napari_do(
    make_napari_viewer, monkeypatch, tmp_path, ihc
):
    """napari's own reader claims *.svs, *.ndpi and *.tif too, and napari's Python ``viewer.open(path)`` reads with
    it unless told otherwise (``plugin='napari'`` is its default): a slide's full resolution into memory, as one
    plain layer. A plugin cannot make itself napari's default reader (npe2's reader contribution has no such field;
    the choice is the user's setting ``plugins.extension2reader``, which napari's "remember" and Preferences >
    Plugins > File extension readers set), so the README gives the lines that do: they are run here as written."""
    from napari.settings import get_settings

    path = write_svs(tmp_path / "slide.svs", ihc)
    viewer = make_napari_viewer()
    [builtin] = viewer.open(str(path))  # why the README says more: napari's own reader, the slide whole
    assert builtin.source.reader_plugin == "napari" and not builtin.multiscale

    named = _readme_code("viewer.open(", 'plugin="napari-promptseg"')
    [layer] = eval(named, {"viewer": viewer, "path": str(path)})  # noqa: S307 - the README's own line
    assert layer.multiscale and layer.source.reader_plugin == "napari-promptseg"

    settings = get_settings()
    # the setting is saved on change, to the suite's own settings file (conftest: NAPARI_CONFIG), and put back after
    monkeypatch.setattr(settings.plugins, "extension2reader", dict(settings.plugins.extension2reader))
    exec(_readme_code("extension2reader", '"*.svs": "napari-promptseg"'), {"get_settings": get_settings})  # noqa: S102
    assert settings.plugins.extension2reader["*.ndpi"] == "napari-promptseg"
    [preferred] = eval(_readme_code("viewer.open(", "plugin=None"), {"viewer": viewer, "path": str(path)})  # noqa: S307
    assert preferred.multiscale and preferred.source.reader_plugin == "napari-promptseg"


@pytest.fixture(scope="module")
def rounded_slide(tmp_path_factory) -> Path:
    """A slide of 1201 x 1280 px (the bundled nuclei tiled, dark on a bright field as a stain's): its 4x level is
    301 x 320, rows 3.99 times fewer, columns 4.0."""
    from napari_promptseg._sample_data import nuclei

    (image, _, _), _ = nuclei()
    grey = np.tile(255 - image, (5, 5))[:1201]
    return write_svs(tmp_path_factory.mktemp("slide") / "rounded.svs", np.repeat(grey[..., None], 3, axis=2))


#: a nucleus cut by the slide's right border (full-resolution pixels), and the working size that reads the 4x level
BORDER_BOX, BORDER_SIZE = (1225, 1048, 1279, 1093), 120


def _in_border_box(found: np.ndarray) -> None:
    rows, cols = np.nonzero(found)
    assert cols.max() == 1279, "the object reaches the slide's last column, as the nucleus does"
    x0, y0, x1, y1 = BORDER_BOX
    assert y0 <= rows.mean() <= y1 and x0 <= cols.mean() <= x1, (rows.mean(), cols.mean())


def test_a_box_at_the_right_border_of_a_slide_whose_levels_round_is_read_where_it_is_drawn(
    litemedsam, rounded_slide, tmp_path, capsys
):
    """The boxes were taken to the level by the rows' factor along both axes, so a box ending on the last column
    (1279) ended past the level's (320.17 > 319): 'box 1 ... reaches past the 320x301 image: clipped', a warning
    about a box drawn inside the slide, in level pixels the user never saw. Now each axis is taken to the level by
    its own factor."""
    out = tmp_path / "out"
    box = ["--box", *map(str, BORDER_BOX), "--object-size", str(BORDER_SIZE)]
    assert main(["segment", str(rounded_slide), *box, "-o", str(out)]) == 0, capsys.readouterr().err
    [record] = json.loads((out / "report.json").read_text())["images"]
    assert record["pyramid_level"] == 2, record  # read at the 4x level
    assert not any("reaches past" in w for w in record["warnings"]), record["warnings"]
    _in_border_box(tifffile.imread(out / "rounded.tif") > 0)


def test_the_console_takes_a_box_at_the_border_of_a_rounded_pyramid_to_its_level_by_each_axis(
    litemedsam, rounded_slide
):
    """segment() on the slide's levels (as the console holds a multiscale layer's data) warned as the CLI did."""
    import warnings

    from napari_promptseg import segment
    from napari_promptseg.io.multiscale import open_multiscale

    levels = open_multiscale(rounded_slide).levels
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        labels = segment(levels, boxes=[BORDER_BOX], object_size=BORDER_SIZE, device="cpu")
    assert not [w for w in said if "reaches past" in str(w.message)], [str(w.message) for w in said]
    assert labels.shape == (1201, 1280)
    _in_border_box(labels > 0)
