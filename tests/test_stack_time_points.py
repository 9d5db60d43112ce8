"""Time-lapses of volumes (T, Z, Y, X) by the CLI as by the Interactive widget: the time point to propagate through
(--time), with the real brain MRI and the real LiteMedSAM model.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_promptseg.cli import main
from napari_promptseg.methods.metrics import dice
from napari_promptseg.methods.volume import propagate_through_stack

#: the MRI structure used here: the left thalamus (FreeSurfer 10)
THALAMUS = 10


@pytest.fixture(scope="module")
def thalamus(shared_data):
    """Seven planes of 110 x 140 px around the left thalamus' largest cross-section, its truth, and the box of the
    thalamus on plane 3 (x0, y0, x1, y1)."""
    scan = np.load(shared_data / "brain_mri_1vol" / "test_scan.npz")
    truth = scan["seg"] == THALAMUS
    z = int(np.argmax(truth.sum((1, 2))))
    crop = (slice(z - 3, z + 4), slice(40, 150), slice(40, 180))
    vol, truth = scan["vol"][crop].astype(np.float32), truth[crop]
    rows, cols = np.nonzero(truth[3])
    return vol, truth, (int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max()))


def test_cli_propagates_through_the_volume_of_the_time_point_given(litemedsam, thalamus, tmp_path, capsys):
    """A (T, Z, Y, X) TIFF was refused by `promptseg segment --propagate` as 'a time-lapse of 3D stacks ... split it
    into one image per time point', while the Interactive widget propagates through the time point shown. --time T
    now takes that volume, as the Python function's time_point does (one code path: the same labels), and writes
    labels of the input's shape, the other time points empty; a time point outside the time-lapse, or --time on a
    3D stack, is refused naming the file and what is wrong."""
    vol, truth, box = thalamus
    movie = np.stack([vol[:, ::-1], vol])  # time point 0 flipped: not the volume asked for
    path = tmp_path / "tz.tif"
    tifffile.imwrite(path, movie, imagej=True, metadata={"axes": "TZYX"})
    out = tmp_path / "out"
    prompt = ["segment", str(path), "-o", str(out), "--box", *map(str, box), "--plane", "3", "--propagate"]
    assert main([*prompt, "--time", "1"]) == 0
    labels = tifffile.imread(out / "tz.tif")
    assert labels.shape == movie.shape
    assert not labels[0].any(), "time point 0 is not the one asked for"
    planes = np.nonzero(labels[1].any(axis=(1, 2)))[0]
    assert planes.min() < 3 < planes.max(), "carried above and below the boxed plane"
    assert dice(labels[1] > 0, truth) > 0.75  # measured 0.88
    assert tifffile.TiffFile(out / "tz.tif").series[0].axes == "TZYX"
    record = json.loads((out / "report.json").read_text())["images"][0]
    assert record["time_point"] == 1 and record["shape"] == list(movie.shape) and record["planes"] == 7
    assert "at time point 1 of 2" in capsys.readouterr().out

    api = propagate_through_stack(movie, 3, boxes=[box], segmenter=litemedsam, name="tz", time_point=1)
    np.testing.assert_array_equal(api.labels, labels[1])

    assert main([*prompt, "--time", "2"]) == 2
    err = capsys.readouterr().err
    assert f"{path} (--time): time point 2 is outside the time-lapse's 2 time points (0-1)" in err, err
    flat = tmp_path / "z.tif"
    tifffile.imwrite(flat, vol)
    assert main(["segment", str(flat), "-o", str(out), "--box", *map(str, box), "--plane", "3", "--time", "0"]) == 2
    err = capsys.readouterr().err
    assert f"{flat} (--time): a time point (0) is taken from a time-lapse of volumes" in err, err
    assert "3D array of shape (7, 110, 140)" in err, err
