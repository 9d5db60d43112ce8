"""A time-lapse of volumes segmented time point by time point, one ``--time`` run after another into the same
labels (a TIFF in -o, an OME-Zarr's labels/<name>): each run writes its own time point and keeps the others an
earlier run wrote. The real brain MRI and the real LiteMedSAM model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from napari_promptseg.cli import main
from napari_promptseg.io import write_labels
from napari_promptseg.methods.volume import propagate_through_stack

from .test_time_point_files import _prompt, _write_tzyx_ome_zarr, thalamus_movie


@pytest.fixture(scope="module")
def movie(shared_data):
    """The MRI time-lapse of tests/test_time_point_files.py (time point 0 upside down), the box of each time point."""
    tz, _, (x0, y0, x1, y1) = thalamus_movie(shared_data)
    rows = tz.shape[2]
    return tz, {0: (x0, rows - 1 - y1, x1, rows - 1 - y0), 1: (x0, y0, x1, y1)}


@pytest.fixture(scope="module")
def single_runs(movie, litemedsam):
    """Each time point's labels by the Python function alone: what the runs one after another must keep."""
    tz, boxes = movie
    return {
        t: propagate_through_stack(tz, 3, boxes=[box], segmenter=litemedsam, name="tz", time_point=t).labels
        for t, box in boxes.items()
    }


def _run(path, out, boxes, t) -> list[str]:
    return [*_prompt(path, out, boxes[t]), "--time", str(t)]


def test_tiff_labels_keep_the_time_points_of_earlier_runs(movie, single_runs, tmp_path, capsys):
    """--time 1 after --time 0 into one -o replaced the TIFF of labels whole: time point 0's labels were lost, only the
    last run's time point kept. Now the second run replaces time point 1 alone and says time point 0 was kept."""
    tz, boxes = movie
    path = tmp_path / "tz.tif"
    tifffile.imwrite(path, tz, imagej=True, metadata={"axes": "TZYX"})
    out = tmp_path / "out"
    assert main(_run(path, out, boxes, 0)) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(_run(path, out, boxes, 1)) == 0, capsys.readouterr().err
    said = capsys.readouterr()
    labels = tifffile.imread(out / "tz.tif")
    assert labels.shape == tz.shape
    np.testing.assert_array_equal(labels[0], single_runs[0])
    np.testing.assert_array_equal(labels[1], single_runs[1])
    assert tifffile.TiffFile(out / "tz.tif").series[0].axes == "TZYX"
    assert "time point 1 written; time point 0 kept from an earlier run" in said.out + said.err
    record = json.loads((out / "report.json").read_text())["images"][0]
    assert record["time_point"] == 1 and record["kept_time_points"] == [0]

    # time point 0 again: replaced (a rerun replaces its own), time point 1 kept
    assert main(_run(path, out, boxes, 0)) == 0
    np.testing.assert_array_equal(tifffile.imread(out / "tz.tif"), labels)
    # nothing found at time point 0: its labels emptied, time point 1's kept (the empty labels were (T, Z), 2D)
    assert main(_empty_run(path, out, tz, 0)) == 0
    emptied = tifffile.imread(out / "tz.tif")
    assert emptied.shape == tz.shape and not emptied[0].any()
    np.testing.assert_array_equal(emptied[1], single_runs[1])
    # a TIFF of labels that is not ours is refused as before, and one of another shape is replaced whole
    other = tmp_path / "other"
    other.mkdir()
    tifffile.imwrite(other / "tz.tif", np.ones(tz.shape, np.uint16))
    assert main(_run(path, other, boxes, 1)) == 2
    assert "not an earlier promptseg output" in capsys.readouterr().err
    shaped = tmp_path / "shaped"
    write_labels(shaped / "tz.tif", np.ones(tz.shape[1:], np.uint16))  # ours, a volume's (Z, Y, X)
    assert main(_run(path, shaped, boxes, 1)) == 0
    replaced = tifffile.imread(shaped / "tz.tif")
    assert replaced.shape == tz.shape and not replaced[0].any()


def _empty_run(path, out, tz, t) -> list[str]:
    """A --time run that finds nothing: propagated from empty seed labels."""
    seed = out.parent / "empty_seed.tif"
    tifffile.imwrite(seed, np.zeros(tz.shape[1:], np.uint16))
    return ["segment", str(path), "-o", str(out), "--seed-labels", str(seed), "--plane", "3", "--propagate"] + [
        "--time",
        str(t),
    ]


class Killed(BaseException):
    """A run killed there (SIGKILL: no handler runs)."""


def _files_of_time_point(group, level: str, t: int) -> dict[str, int]:
    """The chunk files of time point ``t`` of a labels level, with their modification times (ns)."""
    root = group / level
    files = {}
    for chunk in root.rglob("*"):
        key = chunk.relative_to(root).as_posix().replace("/", ".")
        if chunk.is_file() and not chunk.name.startswith(".") and key.split(".")[0] == str(t):
            files[key] = chunk.stat().st_mtime_ns
    return files


def test_ome_zarr_labels_keep_the_time_points_of_earlier_runs(movie, single_runs, tmp_path, capsys):
    """The same into an OME-Zarr's labels/promptseg: the second run rewrote the labels image whole, time point 0 lost.
    Now it writes only time point 1's chunks, at every level, and time point 0's files are not touched."""
    tz, boxes = movie
    path = tmp_path / "tz.ome.zarr"
    _write_tzyx_ome_zarr(path, tz)
    out = tmp_path / "out"
    assert main(_run(path, out, boxes, 0)) == 0, capsys.readouterr().err
    group = path / "labels" / "promptseg"
    levels = [d["path"] for d in json.loads((group / ".zattrs").read_text())["multiscales"][0]["datasets"]]
    before = {level: _files_of_time_point(group, level, 0) for level in levels}
    assert all(before.values())
    capsys.readouterr()
    assert main(_run(path, out, boxes, 1)) == 0, capsys.readouterr().err
    said = capsys.readouterr()
    assert "time point 1 written; time point 0 kept from an earlier run" in said.out + said.err
    assert {level: _files_of_time_point(group, level, 0) for level in levels} == before
    labels = np.asarray(zarr.open_array(str(group / levels[0]), mode="r"))
    np.testing.assert_array_equal(labels[0], single_runs[0])
    np.testing.assert_array_equal(labels[1], single_runs[1])
    level1 = np.asarray(zarr.open_array(str(group / levels[1]), mode="r"))
    np.testing.assert_array_equal(level1, labels[..., ::2, ::2])
    assert not list((path / "labels").glob(".promptseg-updating-*")), "no scratch left"
    # still ours: a third run replaces time point 1 again; labels changed by hand since are refused, as before
    assert main(_run(path, out, boxes, 1)) == 0, capsys.readouterr().err
    np.testing.assert_array_equal(np.asarray(zarr.open_array(str(group / levels[0]), mode="r")), labels)
    # nothing found at time point 0: its chunks emptied, time point 1's kept (the labels image was removed)
    assert main(_empty_run(path, out, tz, 0)) == 0
    emptied = np.asarray(zarr.open_array(str(group / levels[0]), mode="r"))
    assert not emptied[0].any()
    np.testing.assert_array_equal(emptied[1], single_runs[1])
    edited = zarr.open_array(str(group / levels[0]), mode="r+")
    edited[0, 0, 0, 0] = 7
    assert main(_run(path, out, boxes, 1)) == 2
    assert "changed since it wrote them" in capsys.readouterr().err


def test_a_time_point_update_killed_while_moving_its_chunks_in_is_completed_by_the_next_look(
    movie, tmp_path, monkeypatch
):
    """A run killed between the renames of a time point's chunks (SIGKILL, here an interrupt at the second rename)
    left labels half old, half new: the next check of them completes the update (every chunk was written before the
    first rename), and they are still promptseg's own, so the next run may replace them."""
    import os

    from napari_promptseg.io import ome_zarr_labels, time_point_labels

    tz, _ = movie
    path = tmp_path / "tz.ome.zarr"
    _write_tzyx_ome_zarr(path, tz)
    first = np.zeros(tz.shape, np.uint16)
    first[0, :, 10:30, 10:40] = 1
    ome_zarr_labels.write_ome_zarr_labels(path, first)
    second = np.zeros(tz.shape[1:], np.uint16)
    second[:, 50:90, 60:100] = 2
    group = path / "labels" / "promptseg"
    rename = os.replace  # zarr writes each chunk by a rename too: those into the scratch folder go on

    def killed_at(renames: int, into=group):
        moved = []

        def rename_or_die(src, dst):
            if into in Path(dst).parents:  # a chunk written into the scratch folder, or moved into the labels
                if len(moved) == renames:
                    raise Killed
                moved.append(dst)
            rename(src, dst)

        return rename_or_die, moved

    # killed while writing the chunks beside the labels (zarr's second chunk): the labels as they were
    with monkeypatch.context() as patched:
        patched.setattr(
            time_point_labels.os, "replace", killed_at(1, path / "labels" / ".promptseg-updating-promptseg")[0]
        )
        with pytest.raises(Killed):
            time_point_labels.write_time_point(path, second, 1)
    assert ome_zarr_labels.labels_not_replaceable(path, "promptseg") is None
    np.testing.assert_array_equal(np.asarray(zarr.open_array(str(group / "s0"), mode="r")), first)
    # killed while moving them in, one chunk in place: completed by the next look, and ours
    rename_or_die, moved = killed_at(1)
    with monkeypatch.context() as patched:
        patched.setattr(time_point_labels.os, "replace", rename_or_die)
        with pytest.raises(Killed):
            time_point_labels.write_time_point(path, second, 1)
    assert len(moved) == 1
    assert ome_zarr_labels.labels_not_replaceable(path, "promptseg") is None
    labels = np.asarray(zarr.open_array(str(group / "s0"), mode="r"))
    np.testing.assert_array_equal(labels[0], first[0])
    np.testing.assert_array_equal(labels[1], second)
    np.testing.assert_array_equal(np.asarray(zarr.open_array(str(group / "s1"), mode="r"))[1], second[:, ::2, ::2])
    assert not list((path / "labels").glob(".promptseg-updating-*"))


def test_resume_with_another_time_point_runs_it_and_keeps_the_earlier_one(
    movie, single_runs, tmp_path, monkeypatch, capsys
):
    """--time 0 interrupted, then --time 1 --resume into the same -o was refused ('results of another run (changed
    since: --time (0, now 1))'): a time-lapse segmented with --resume throughout could not go on to its next time
    point. Another --time is another time point's run: nothing of the earlier run is taken as done, time point 1 is
    made, time point 0's labels are kept, and the user is told so."""
    import napari_promptseg.methods.volume as volume

    tz, boxes = movie
    path = tmp_path / "tz.tif"
    tifffile.imwrite(path, tz, imagej=True, metadata={"axes": "TZYX"})
    out = tmp_path / "out"
    assert main(_run(path, out, boxes, 0)) == 0, capsys.readouterr().err
    capsys.readouterr()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:  # Ctrl+C while time point 1 is made: the journal of --time 1 stays
        patched.setattr(volume, "propagate_through_stack", interrupted)
        assert main([*_run(path, out, boxes, 1), "--resume"]) == 130, capsys.readouterr().err
    assert (out / "report.partial.jsonl").is_file()
    capsys.readouterr()
    # back to time point 0 with --resume: the interrupted journal is time point 1's, so time point 0 is made again
    assert main([*_run(path, out, boxes, 0), "--resume"]) == 0, capsys.readouterr().err
    said = capsys.readouterr().err
    assert "another time point" in said and "--time 1" in said
    # on to time point 1 with --resume, from report.json of --time 0: made, not skipped nor refused
    assert main([*_run(path, out, boxes, 1), "--resume"]) == 0, capsys.readouterr().err
    said = capsys.readouterr()
    assert "results of another run" not in said.err and "already done" not in said.err
    assert "time point 1 written; time point 0 kept from an earlier run" in said.out + said.err
    labels = tifffile.imread(out / "tz.tif")
    np.testing.assert_array_equal(labels[0], single_runs[0])
    np.testing.assert_array_equal(labels[1], single_runs[1])
    # the same time point resumed is done already, as always
    assert main([*_run(path, out, boxes, 1), "--resume"]) == 0
    assert "already done" in capsys.readouterr().err
    # another option than --time still refuses the resume
    assert main([*_run(path, out, boxes, 1), "--resume", "--plane", "4"]) == 2
    assert "results of another run" in capsys.readouterr().err
