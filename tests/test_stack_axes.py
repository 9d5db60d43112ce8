"""Which axis a stack's planes lie along: a time-lapse of 2D frames (T, Y, X[, C]) saved without axes reads as a stack
of planes (Z); the report says what was assumed and how to name the axes, and a file that names them is read by its
word. Real pixels (skimage's astronaut) and the real LiteMedSAM."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from skimage import data

from napari_promptseg.cli import main

BOX = ["--box", "60", "20", "180", "140"]  # the face, on every frame


def frames(n: int = 3) -> np.ndarray:
    """A short time-lapse of RGB frames (T, Y, X, 3): the astronaut moving right by 5 px a frame."""
    rgb = data.astronaut()[::2, ::2]
    return np.stack([np.roll(rgb, 5 * k, axis=1) for k in range(n)])


def run(tmp_path, path, *options: str) -> tuple[dict, str]:
    out = tmp_path / f"out_{path.stem}"
    assert main(["segment", str(path), "--plane", "0", *BOX, "-o", str(out), "--scheduler", "none", *options]) == 0
    return json.loads((out / "report.json").read_text())["images"][0]


@pytest.mark.parametrize(
    ("metadata", "axis", "words"),
    [
        # tifffile's default: no axes ("QYXS")
        ({}, "unnamed", "3 planes (first axis unnamed: Z or T), plane 0 only"),
        # tifffile's own description names them; a time-lapse's planes are its frames ('3 frames (T), plane 0 only')
        ({"axes": "TYXS"}, "t", "3 frames (T), frame 0 only"),
        ({"axes": "ZYXS"}, "z", "3 planes (Z), plane 0 only"),
    ],
)
def test_a_stack_says_which_axis_its_planes_were_read_along(tmp_path, capsys, monkeypatch, metadata, axis, words):
    """A (T, Y, X, 3) time-lapse written by tifffile without axes was read as a Z stack without a word; one written
    with metadata={'axes': 'TYXS'} was read as unnamed too (only OME and ImageJ files were asked). Its axes are read
    from the file once, for its planes and its labels' axes (the header was read four times, with --overlay five)."""
    from napari_promptseg.io import multiscale

    path = tmp_path / "timelapse.tif"
    tifffile.imwrite(path, frames(), metadata=metadata)
    reads = []
    stack_axes = multiscale.stack_axes
    monkeypatch.setattr(multiscale, "stack_axes", lambda p: reads.append(p) or stack_axes(p))
    record = run(tmp_path, path, "--overlay")
    assert reads == [path] and record["overlay"]
    assert record["stack_axis"] == axis
    assert record["planes"] == 3 and record["objects"] >= 1
    assert f"in {words}" in capsys.readouterr().out
    assert record["mode"] == "plane 0 only"  # the report's value, as scripts read it, whatever the planes are
    if axis == "unnamed":  # what was assumed, and how to say otherwise
        note = record["stack_axis_note"]
        assert "read as the planes of a stack (Z)" in note and "time-lapse (T)" in note
        # the first axis of RGB frames cannot be channels: --channel-axis 0 was advised all the same
        assert "--channel-axis" not in note and "metadata={'axes': 'TYXS'}" in note
    else:
        assert "stack_axis_note" not in record
    # the labels name their first axis as the input does (Fiji: frames or slices); an unnamed one was read as Z
    with tifffile.TiffFile(record["output"]) as tif:
        assert tif.series[0].axes == ("TYX" if axis == "t" else "ZYX") and tif.is_imagej


def test_an_unnamed_stack_is_told_the_axes_of_its_own_shape(tmp_path):
    """A grey (N, Y, X) stack without axes: its first axis may be channels (--channel-axis 0), and the axes to save
    it with are a grey stack's, not the RGB frames' TYXS. A (T, C, Y, X) stack read with --channel-axis 1: its
    channels are known, and the axes place them where the file has them."""
    path = tmp_path / "grey.tif"
    # three planes, not the colour samples tifffile takes a (3, Y, X) array for by default (to change in its future)
    tifffile.imwrite(path, frames()[..., 0], photometric="minisblack")
    note = run(tmp_path, path)["stack_axis_note"]
    assert "If that axis holds channels, give --channel-axis 0." in note and "metadata={'axes': 'TYX'}" in note
    path = tmp_path / "tcyx.tif"
    tifffile.imwrite(path, np.ascontiguousarray(frames()[..., :2].transpose(0, 3, 1, 2)))
    note = run(tmp_path, path, "--channel-axis", "1")["stack_axis_note"]
    assert "--channel-axis" not in note and "metadata={'axes': 'TCYX'}" in note


def test_channels_named_by_tifffiles_description_are_channels(tmp_path):
    """A (Z, C, Y, X) stack of two channels saved with tifffile.imwrite(..., metadata={'axes': 'ZCYX'}) was refused
    as 'a time-lapse of 3D stacks, or a stack with its channels on an axis other than the last': the axes its file
    names were not read (only an OME or ImageJ TIFF's were)."""
    grey = frames()[..., :2].transpose(0, 3, 1, 2)  # (Z=3, C=2, Y, X): the red and green channels
    path = tmp_path / "zcyx.tif"
    tifffile.imwrite(path, np.ascontiguousarray(grey), metadata={"axes": "ZCYX"})
    record = run(tmp_path, path)
    assert record["stack_axis"] == "z" and record["planes"] == 3 and record["objects"] >= 1
    assert tifffile.imread(record["output"]).shape == (3, 256, 256)


def test_the_empty_labels_of_a_failed_time_lapse_name_its_frames(tmp_path):
    """An input that failed gets empty labels of its shape; a time-lapse's are named TYX as a result's would be."""
    from napari_promptseg.batch.engine import failed_record

    path = tmp_path / "timelapse.tif"
    tifffile.imwrite(path, frames(), metadata={"axes": "TYXS"})
    record = failed_record(tmp_path / "out", path, tifffile.imread(path), "the model ran out of memory")
    with tifffile.TiffFile(record["output"]) as tif:
        assert tif.series[0].axes == "TYX" and tif.asarray().shape == (3, 256, 256) and not tif.asarray().any()


def test_the_empty_labels_of_a_failed_calibrated_stack_lie_over_it(tmp_path):
    """A failed input's empty labels opened in pixels beside its image in µm; they record its pixel size and plane
    spacing now, as a result's labels do."""
    from napari_promptseg._reader import get_reader
    from napari_promptseg.batch.engine import failed_record

    path = tmp_path / "stack.ome.tif"
    sizes = {"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5, "PhysicalSizeZ": 2.0}
    tifffile.imwrite(path, frames()[..., 0], metadata={"axes": "ZYX", **sizes})
    record = failed_record(tmp_path / "out", path, tifffile.imread(path), "the model ran out of memory")
    [(_, image, _)] = get_reader(str(path))(str(path))
    [(_, labels, kind)] = get_reader(record["output"])(record["output"])
    assert kind == "labels" and labels["scale"] == image["scale"] == [2.0, 0.5, 0.5]


def test_a_time_lapse_without_plane_is_asked_for_a_frame_not_a_z_plane(tmp_path, capsys):
    """A time-lapse (its file names the axis T) given boxes without --plane was told 'a stack of 3 planes; give
    --plane Z', and a --plane past its end 'outside the stack's 3 planes': its frames, along T, are named now."""
    path = tmp_path / "timelapse.tif"
    tifffile.imwrite(path, frames()[..., 0], imagej=True, metadata={"axes": "TYX"})
    out = str(tmp_path / "out")
    assert main(["segment", str(path), *BOX, "-o", out, "--scheduler", "none"]) != 0
    said = capsys.readouterr().err
    assert (
        "a time-lapse of 3 frames; give --plane T, the frame the boxes were drawn on" in said
        and "--plane Z" not in said
    )
    assert main(["segment", str(path), *BOX, "--plane", "5", "-o", out, "--scheduler", "none"]) != 0
    assert "--plane 5 is outside the time-lapse's 3 frames (0-2)" in capsys.readouterr().err
