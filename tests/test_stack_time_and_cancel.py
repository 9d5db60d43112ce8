"""Stacks and time-lapses of volumes (T, Z, Y, X) by the CLI as by the Interactive widget: the time point to
propagate through (--time), and a propagation cancelled part-way (the planes done are kept, said to be partial);
with the real brain MRI and the real LiteMedSAM model.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_promptseg.cli import main
from napari_promptseg.errors import CancelledError
from napari_promptseg.methods.metrics import dice
from napari_promptseg.methods.volume import PropagationCancelled, propagate_through_stack

from .conftest import thalamus_planes


@pytest.fixture(scope="module")
def thalamus(shared_data):
    """Seven planes of 110 x 140 px around the left thalamus' largest cross-section, its truth, and the box of the
    thalamus on plane 3 (x0, y0, x1, y1)."""
    return thalamus_planes(shared_data)


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


def test_a_cancelled_propagation_keeps_the_planes_done_said_partial(litemedsam, thalamus):
    """A propagation whose cancel callback said stop after two carried planes raised CancelledError and gave
    nothing: the seed plane and the planes done were lost. It now raises PropagationCancelled (a CancelledError, so
    callers that stop on a cancel still do) holding them: the labels of the planes done, exactly as the run to the
    end finds them, the others empty and listed as not reached, its stops and warnings saying it was cancelled."""
    vol, truth, box = thalamus
    whole = propagate_through_stack(vol, 3, boxes=[box], segmenter=litemedsam, name="mri")
    assert not whole.partial and whole.not_reached == []
    asked = []

    def cancel_after_two_planes() -> bool:
        asked.append(True)
        return len(asked) > 2  # asked before each carried plane: planes 4 and 5 are done, then the cancel

    with pytest.raises(PropagationCancelled) as cancelled:
        propagate_through_stack(vol, 3, boxes=[box], segmenter=litemedsam, name="mri", cancel=cancel_after_two_planes)
    assert isinstance(cancelled.value, CancelledError)
    assert "cancelled after 3 of 7 planes; planes 0-2, 6 not segmented" in str(cancelled.value)
    partial = cancelled.value.partial
    assert partial.partial and partial.not_reached == [6, 0, 1, 2]
    done = [3, 4, 5]
    np.testing.assert_array_equal(partial.labels[done], whole.labels[done])
    assert dice(partial.labels[3] > 0, truth[3]) > 0.8
    assert not partial.labels[[0, 1, 2, 6]].any()
    assert partial.stops[1] == {"up": "cancelled before plane 6", "down": "cancelled before plane 2"}
    assert any(
        "propagation cancelled: planes 0-2, 6 not segmented; the result is partial" in w for w in partial.warnings
    )


def test_ctrl_c_during_a_cli_propagation_says_nothing_of_that_stack_was_written(shared_data, tmp_path):
    """Ctrl+C while `promptseg segment --propagate` carried the objects through a stack said only 'interrupted':
    whether the planes done were written went unsaid (they were not). A part of a stack in the file its whole result
    goes to would pass for it, so nothing is written still, and the run says so."""
    vol, _, box = thalamus_planes(shared_data, 15, 14)  # the seed: plane 15
    path = tmp_path / "mri.tif"
    tifffile.imwrite(path, vol)
    box = map(str, box)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    command = ["segment", str(path), "-o", str(out), "--box", *box, "--plane", "15", "--propagate"]
    # stderr a terminal, as a user's: each plane is told at once (a log gets a line every 10 s, after a fast
    # machine's propagation has ended)
    terminal, stderr = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_promptseg.cli", *command],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    os.close(stderr)
    said, interrupted = "", False
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if select.select([terminal], [], [], 0.05)[0]:
                try:
                    said += os.read(terminal, 65536).decode(errors="replace")
                except OSError:  # the process ended: its side of the terminal is closed
                    break
            if not interrupted and "object(s), up from 15" in said:
                os.killpg(proc.pid, signal.SIGINT)  # planes carried up from the seed
                interrupted = True
            if proc.poll() is not None and not select.select([terminal], [], [], 0)[0]:
                break
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(terminal)
    assert interrupted, said
    assert proc.returncode == 130, said
    assert (
        "promptseg segment: interrupted; the input(s) in progress were not written (nothing of a propagation "
        "stopped part-way is kept, not even the planes it had done)" in said
    ), said
    assert not list(out.glob("*.tif"))
