"""--time on the files microscopes write time-lapses of volumes in: an OME-Zarr and a pyramidal OME-TIFF (T, Z, Y, X),
read lazily, only the time point asked for; an ImageJ hyperstack (T, Z, C, Y, X), its channels where its axes say.
The real brain MRI and the real LiteMedSAM model.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import tifffile
import zarr

from napari_promptseg.cli import main
from napari_promptseg.methods.metrics import dice
from napari_promptseg.methods.volume import propagate_through_stack

from .conftest import thalamus_planes


@pytest.fixture(scope="module")
def movie(shared_data):
    """Two time points of seven planes of 110 x 140 px around the left thalamus (time point 0 flipped upside down:
    not the volume asked for), the thalamus of time point 1, and its box on plane 3 (x0, y0, x1, y1)."""
    return thalamus_movie(shared_data)


def thalamus_movie(shared_data):
    """:func:`movie`'s time-lapse, thalamus and box (for other modules' fixtures)."""
    vol, truth, box = thalamus_planes(shared_data)
    return np.stack([vol[:, ::-1], vol]), truth, box


@pytest.fixture(scope="module")
def api_labels(movie, litemedsam):
    """The Python function's labels of time point 1, propagated from the box on plane 3: what every file must give."""
    tz, _, box = movie
    return propagate_through_stack(tz, 3, boxes=[box], segmenter=litemedsam, name="tz", time_point=1).labels


def _prompt(path, out, box) -> list[str]:
    return ["segment", str(path), "-o", str(out), "--box", *map(str, box), "--plane", "3", "--propagate"]


def _write_tzyx_ome_zarr(path, tz: np.ndarray) -> None:
    """A (T, Z, Y, X) OME-Zarr (NGFF 0.4) of two levels, one chunk per time point's volume."""
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        chunks = (1, *tz.shape[1:3], 256)
        write_image(tz, root, axes="tzyx", fmt=FormatV04(), scale_factors=[2], storage_options={"chunks": chunks})


def _spoil_time_point_0(path) -> None:
    """Overwrite the chunks of time point 0 at every level with bytes no codec decodes: a read of them fails."""
    spoiled = 0
    for level in ("s0", "s1"):
        for chunk in (path / level).rglob("*"):
            key = chunk.relative_to(path / level).as_posix().replace("/", ".")
            if chunk.is_file() and not chunk.name.startswith(".") and key.split(".")[0] == "0":
                chunk.write_bytes(b"not a chunk")
                spoiled += 1
    assert spoiled == 2


def test_an_ome_zarr_time_lapse_of_volumes_reads_only_the_time_point_given(movie, api_labels, tmp_path, capsys):
    """A (T, Z, Y, X) OME-Zarr was refused while being read, before --time was looked at: 'a time-lapse of volumes
    (t=2, z=7); select one time point first', with no word of how. --time T now reads that time point's volume
    alone (the other's chunks are never read: spoiled here), propagates through it as the Python function does,
    and writes labels of the image's (T, Z, Y, X) shape into its labels/ group (or a TIFF), the other time point
    empty.
    Without --time the refusal names the option."""
    tz, truth, box = movie
    path = tmp_path / "tz.ome.zarr"
    _write_tzyx_ome_zarr(path, tz)
    _spoil_time_point_0(path)
    assert main(_prompt(path, tmp_path / "refused", box)) == 2
    err = capsys.readouterr().err
    assert f"{path}: a time-lapse of volumes (t=2, z=7)" in err and "--time T" in err, err
    out = tmp_path / "out"
    assert main([*_prompt(path, out, box), "--time", "1"]) == 0, capsys.readouterr().err
    group = path / "labels" / "promptseg"
    levels = [d["path"] for d in json.loads((group / ".zattrs").read_text())["multiscales"][0]["datasets"]]
    labels = np.asarray(zarr.open_array(str(group / levels[0]), mode="r"))
    assert labels.shape == tz.shape
    assert not labels[0].any(), "time point 0 is not the one asked for"
    np.testing.assert_array_equal(labels[1], api_labels)
    assert dice(labels[1] > 0, truth) > 0.75
    level1 = zarr.open_array(str(group / levels[1]), mode="r")
    assert level1.shape == (2, 7, 55, 70)
    record = json.loads((out / "report.json").read_text())["images"][0]
    assert record["status"] == "ok" and record["time_point"] == 1 and record["shape"] == list(tz.shape)
    # --output-format tiff: the same labels, named TZYX (the input's metadata was read for them, not refused)
    assert main([*_prompt(path, tmp_path / "tiff", box), "--time", "1", "--output-format", "tiff"]) == 0
    written = tifffile.TiffFile(tmp_path / "tiff" / "tz.tif")
    assert written.series[0].axes == "TZYX"
    np.testing.assert_array_equal(written.asarray(), labels)


def test_a_pyramidal_ome_tiff_time_lapse_of_volumes_by_time_point(movie, api_labels, tmp_path, capsys):
    """A pyramidal OME-TIFF (T, Z, Y, X) was refused as the OME-Zarr was; --time T now takes its time point's volume
    and writes (T, Z, Y, X) labels, named so, the labels of the Python function at T."""
    tz, _, box = movie
    path = tmp_path / "tz.ome.tif"
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        tif.write(tz, subifds=1, tile=(64, 64), metadata={"axes": "TZYX"})
        tif.write(tz[..., ::2, ::2], subfiletype=1, tile=(64, 64))
    out = tmp_path / "out"
    assert main([*_prompt(path, out, box), "--time", "1"]) == 0, capsys.readouterr().err
    labels = tifffile.imread(out / "tz.tif")
    assert labels.shape == tz.shape and not labels[0].any()
    np.testing.assert_array_equal(labels[1], api_labels)
    assert tifffile.TiffFile(out / "tz.tif").series[0].axes == "TZYX"


def test_a_hyperstack_with_channels_between_z_and_y_by_time_point_and_channel(movie, api_labels, tmp_path, capsys):
    """An ImageJ hyperstack is (T, Z, C, Y, X); --time took only a time-lapse with its channels last, so Fiji's own
    order was read as (Z, C, Y, X) planes and refused ('4D array of shape (7, 2, 110, 140) ... a time-lapse of 3D
    stacks'). The file's axes now say where its channels are: --time and --channels compose (the MRI's channel gives
    the Python function's labels of the grey MRI), --channel-axis given as the file has it is taken, another axis is
    refused naming the file's axes. A file without axis names needs --channel-axis, and says so."""
    tz, _, box = movie
    two = np.stack([tz, tz.max() - tz], axis=2)  # (T, Z, C, Y, X): the MRI and its negative
    path = tmp_path / "tzc.tif"
    tifffile.imwrite(path, two, imagej=True, metadata={"axes": "TZCYX"})
    out = tmp_path / "out"
    assert main([*_prompt(path, out, box), "--time", "1", "--channels", "0"]) == 0, capsys.readouterr().err
    labels = tifffile.imread(out / "tzc.tif")
    assert labels.shape == tz.shape and not labels[0].any()
    np.testing.assert_array_equal(labels[1], api_labels)

    given = tmp_path / "given"
    assert main([*_prompt(path, given, box), "--time", "1", "--channels", "0", "--channel-axis", "2"]) == 0
    np.testing.assert_array_equal(tifffile.imread(given / "tzc.tif"), labels)

    assert main([*_prompt(path, tmp_path / "o3", box), "--time", "1", "--channel-axis", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: channel axis 1 is not its channel axis; its axes are (0: t, 1: z, 2: c, 3: y, 4: x)" in err, err

    unnamed = tmp_path / "unnamed.tif"
    tifffile.imwrite(unnamed, two)  # its shape kept, no axis named
    assert main([*_prompt(unnamed, tmp_path / "o4", box), "--time", "1", "--channels", "0"]) == 2
    err = capsys.readouterr().err
    assert f"{unnamed}" in err and "--channel-axis" in err, err
    assert main([*_prompt(unnamed, tmp_path / "o5", box), "--time", "1", "--channels", "0", "--channel-axis", "2"]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "o5" / "unnamed.tif"), labels)
