"""A batch's labels of OME-Zarr inputs, written into the input's own ``labels/`` group: a failed input's empty
labels go where --output-format says, and a run killed while writing leaves the user's store as it was. Real EM
pixels, the real LiteMedSAM."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr
from ome_zarr.format import FormatV04
from ome_zarr.writer import write_image

from napari_promptseg.cli import main
from napari_promptseg.io import read_image
from napari_promptseg.io.multiscale import open_multiscale

BOX = ["--box", "60", "60", "120", "120"]


def write_zarr(pixels: np.ndarray, path: Path) -> Path:
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        write_image(pixels, root, axes="yx", fmt=FormatV04(), scale_factors=[2])
    return path


@pytest.fixture
def em(shared_data) -> np.ndarray:
    return read_image(shared_data / "em_isbi2012" / "images" / "0.png")[:256, :256]


def zarr_labels(path: Path, name: str = "promptseg") -> np.ndarray:
    return np.asarray(open_multiscale(path / "labels" / name).levels[0])


@pytest.mark.parametrize("output_format", ["auto", "ome-zarr"])
def test_a_failed_ome_zarr_inputs_empty_labels_go_where_the_output_format_says(em, tmp_path, output_format):
    """An OME-Zarr input that failed (its box outside it) got OUT/<stem>.tif, a TIFF the run was told not to write
    (--output-format ome-zarr), while the input beside it got its labels in its labels/ group. Its empty labels go
    into its labels/ group now, with the image's levels, as a result's would."""
    folder = tmp_path / "slides"
    folder.mkdir()
    large = write_zarr(em, folder / "large.ome.zarr")
    small = write_zarr(em[:48, :48], folder / "small.ome.zarr")  # the box lies outside it
    out = tmp_path / "out"
    assert (
        main(["segment", str(folder), *BOX, "--output-format", output_format, "-o", str(out), "--scheduler", "none"])
        == 0
    )
    assert not list(out.glob("*.tif"))
    records = {Path(r["input"]).name: r for r in json.loads((out / "report.json").read_text())["images"]}
    assert records["large.ome.zarr"]["status"] == "ok" and zarr_labels(large).any()
    failed = records["small.ome.zarr"]
    assert failed["status"] == "failed" and "box" in failed["reason"], failed
    assert Path(failed["output"]) == small / "labels" / "promptseg"
    labels = open_multiscale(small / "labels" / "promptseg")
    assert [level.shape for level in labels.levels] == [(48, 48), (24, 24)]
    assert not np.asarray(labels.levels[0]).any()


def test_a_resumed_failed_ome_zarr_input_keeps_the_labels_a_user_drew_into_its_empty_ones(em, tmp_path, capsys):
    """A failed input's empty labels in its OME-Zarr, drawn into by the user (saved from napari), then a --resume,
    which runs failed inputs again: they fail again, and their empty labels are not written over the user's (not
    promptseg's as it wrote them); the input has no output, its reason says why, and the run goes on."""
    from napari_promptseg.io.ome_zarr_labels import write_ome_zarr_labels

    folder = tmp_path / "slides"
    folder.mkdir()
    write_zarr(em, folder / "large.ome.zarr")
    small = write_zarr(em[:48, :48], folder / "small.ome.zarr")
    out = tmp_path / "out"
    assert main(["segment", str(folder), *BOX, "-o", str(out), "--scheduler", "none"]) == 0
    drawn = np.zeros((48, 48), np.uint16)
    drawn[10:20, 10:20] = 7
    write_ome_zarr_labels(small, drawn, "promptseg", out)
    (small / "labels" / ".promptseg-written-promptseg.json").unlink()  # as napari saves them: no stamp of ours
    capsys.readouterr()
    assert (
        main(["segment", str(folder), *BOX, "-o", str(out), "--resume", "--scheduler", "none"]) == 1
    )  # an input without output
    np.testing.assert_array_equal(zarr_labels(small), drawn)
    failed = json.loads((out / "report.json").read_text())["images"][1]
    assert failed["status"] == "failed" and "output" not in failed
    assert "box" in failed["reason"] and "--labels-name" in failed["reason"], failed["reason"]
