"""``--channel-axis`` counts in a multichannel pyramid's own axis order (an OME-Zarr's or OME-TIFF's C, Y, X) in
segment and oneshot, as in register: the levels are read channels last, and the given axis was applied to them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_promptseg.cli import main
from napari_promptseg.io import read_image

from .conftest import two_channel_pyramid

PREFIX = "1747f621"  # a 512 x 640 DSB fluorescence image with 22 labelled nuclei


@pytest.fixture(scope="module")
def nuclei(shared_data):
    folder = shared_data / "nuclei_dsb2018"
    image_path = next((folder / "images").glob(f"{PREFIX}*.png"))
    grey = read_image(image_path)[..., 0]
    labels = read_image(folder / "labels" / f"{image_path.stem}.tif")
    # two channels that differ: the nuclei, and the same at half brightness
    return np.ascontiguousarray(np.stack([grey, grey // 2])), labels


def into(tmp_path: Path, name: str) -> list[str]:
    """-o of a run of its own: its folder, and its own labels image in an OME-Zarr input (a run into another -o does
    not replace the labels another run's report names)."""
    return ["-o", str(tmp_path / name), "--labels-name", name]


def _labels(out: Path) -> np.ndarray:
    report = json.loads((out / "report.json").read_text())
    return np.asarray(read_image(report["images"][0]["output"]))


@pytest.mark.parametrize("kind", ["ome.zarr", "ome.tif"])
def test_segment_takes_the_channel_axis_in_the_pyramids_order(nuclei, tmp_path, capsys, kind):
    """`--channel-axis 0` for a (C, Y, X) pyramid was applied to its level read (Y, X, C): its rows taken for channels,
    '256 channels; choose up to three'. Now it is the file's channel axis: the same nucleus as without it; another
    axis is refused, naming the file and its axes."""
    cyx, labels = nuclei
    path = two_channel_pyramid(cyx, tmp_path / f"nuclei.{kind}", kind)
    nucleus = labels == np.bincount(labels.ravel())[1:].argmax() + 1  # the largest
    rows, cols = np.nonzero(nucleus)
    box = [str(v) for v in (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)]
    command = ["segment", str(path), "--box", *box, "--scheduler", "none"]
    assert main([*command, *into(tmp_path, "named")]) == 0, capsys.readouterr().err
    assert main([*command, *into(tmp_path, "given"), "--channel-axis", "0"]) == 0, capsys.readouterr().err
    given = _labels(tmp_path / "given") > 0
    assert given.shape == labels.shape
    assert (given & nucleus).sum() / (given | nucleus).sum() > 0.75
    np.testing.assert_array_equal(given, _labels(tmp_path / "named") > 0)
    capsys.readouterr()
    assert main([*command, *into(tmp_path, "wrong"), "--channel-axis", "1"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "0: c, 1: y, 2: x" in err, err


@pytest.mark.parametrize("mode", ["--instances", "--no-instances"])
@pytest.mark.parametrize("kind", ["ome.zarr", "ome.tif"])
def test_oneshot_takes_the_channel_axis_in_the_pyramids_order(nuclei, tmp_path, capsys, kind, mode):
    """The same for a one-shot run whose target is the pyramid, its reference a (C, Y, X) TIFF read whole: by the
    exemplars of its nuclei, or by its region (where the target's axis was applied to the reference too)."""
    cyx, labels = nuclei
    target = two_channel_pyramid(cyx, tmp_path / f"nuclei.{kind}", kind)
    reference = tmp_path / "reference.tif"
    tifffile.imwrite(reference, cyx[:, :256, :320])
    mask = tmp_path / "reference_mask.tif"
    tifffile.imwrite(mask, (labels[:256, :320] > 0).astype(np.uint8))
    command = ["oneshot", str(target), "--reference", str(reference), "--reference-mask", str(mask)]
    command += ["--scheduler", "none", mode]
    assert main([*command, "--channel-axis", "0", *into(tmp_path, "given")]) == 0, capsys.readouterr().err
    found, truth = _labels(tmp_path / "given") > 0, labels > 0
    assert found.shape == truth.shape
    # the region found from one reference region is coarser than the exemplars' nuclei
    assert 2 * (found & truth).sum() / (found.sum() + truth.sum()) > (0.6 if mode == "--instances" else 0.3)
    # the same as both files read by the channel axis they name (the reference a Fiji composite)
    tifffile.imwrite(reference, cyx[:, :256, :320], imagej=True, metadata={"axes": "CYX"})
    assert main([*command, *into(tmp_path, "named")]) == 0, capsys.readouterr().err
    np.testing.assert_array_equal(found, _labels(tmp_path / "named") > 0)
