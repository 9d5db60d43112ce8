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


#: a process writing labels into an OME-Zarr, killed (SIGKILL: nothing of it runs after) while their levels are made
KILLED_WHILE_WRITING = """
import os, signal, sys
import dask.array as da
import numpy as np
from napari_promptseg.io.ome_zarr_labels import write_ome_zarr_labels

blocks = []

def block(pixels):
    blocks.append(1)
    if len(blocks) == 20:  # level 0's 16 blocks made, level 1's being made
        os.kill(os.getpid(), signal.SIGKILL)
    return pixels

labels = da.from_array(np.ones((256, 256), np.uint16), chunks=64).map_blocks(block, dtype=np.uint16)
write_ome_zarr_labels(sys.argv[1], labels, "promptseg")
"""


def readers_view(path: Path) -> tuple[list, dict]:
    """What a reader finds in an OME-Zarr: the nodes ome-zarr-py's reader yields, and the labels group's list."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nodes = [str(node.zarr.path).removeprefix(str(path)).strip("/") for node in Reader(parse_url(str(path)))()]
    root = zarr.open_group(str(path), mode="r")
    return nodes, (dict(root["labels"].attrs) if "labels" in root else None)


@pytest.mark.parametrize("held", ["nothing", "labels"])
def test_a_run_killed_while_writing_ome_zarr_labels_leaves_the_image_as_it_was(em, tmp_path, held):
    """A run killed (SIGKILL, the OOM killer) while writing an OME-Zarr input's first labels left a labels group
    in the user's image, without the list of its labels: ome-zarr's reader listed it as a node of the image. The
    labels are written under a name no reader lists, and the labels group is made only when they are swapped in;
    labels the image held (a user's, an earlier run's) stay as they were, listed."""
    import subprocess
    import sys

    from napari_promptseg.io._files import files_under
    from napari_promptseg.io.ome_zarr_labels import write_ome_zarr_labels

    from .test_batch_distributed import subprocess_env

    image = write_zarr(em, tmp_path / "em.ome.zarr")
    drawn, earlier = np.zeros((256, 256), np.uint16), np.zeros((256, 256), np.uint16)
    drawn[:40, :40], earlier[100:150, 100:150] = 3, 1
    if held == "labels":
        write_ome_zarr_labels(image, drawn, "cells")
        (image / "labels" / ".promptseg-written-cells.json").unlink()  # the user's
        write_ome_zarr_labels(image, earlier, "promptseg")
    before = readers_view(image)
    script = tmp_path / "writer.py"
    script.write_text(KILLED_WHILE_WRITING)
    run = subprocess.run(
        [sys.executable, str(script), str(image)], env=subprocess_env(tmp_path), capture_output=True, timeout=120
    )
    assert run.returncode == -9, run.stderr.decode()
    assert readers_view(image) == before
    if held == "nothing":
        assert before[1] is None
        assert [n for n, _ in files_under(image) if n.startswith("labels/") and n.count("/") == 1] == []  # no group
    else:
        assert before[1] == {"labels": ["cells", "promptseg"]}
        np.testing.assert_array_equal(zarr_labels(image, "cells"), drawn)
        np.testing.assert_array_equal(zarr_labels(image), earlier)

    labels = np.zeros((256, 256), np.uint16)
    labels[60:120, 60:120] = 1
    write_ome_zarr_labels(image, labels, "promptseg")  # the next write clears what the killed one left
    assert readers_view(image)[1]["labels"][-1] == "promptseg"
    np.testing.assert_array_equal(zarr_labels(image), labels)
    assert [n for n in (image / "labels").iterdir() if n.name.startswith(".promptseg-writing")] == []


def test_a_workers_ome_zarr_labels_take_their_name_after_its_result_is_left(em, tmp_path):
    """On a Dask worker an input's files in -o keep temporary names until its result is left beside them (with
    their digests), so a worker killed in between never leaves labels without their record; an OME-Zarr input's
    labels were swapped into the image at once. They wait too now (the earlier labels readable until then), the
    result names them by their listing, and it is taken only once they are in place."""
    from napari_promptseg.batch.journal import deferred_outputs, leave_result, left_results
    from napari_promptseg.io._files import names_deferred
    from napari_promptseg.io.ome_zarr_labels import write_ome_zarr_labels

    image = write_zarr(em, tmp_path / "em.ome.zarr")
    out = tmp_path / "out"
    out.mkdir()
    earlier, labels = np.zeros((256, 256), np.uint16), np.zeros((256, 256), np.uint16)
    earlier[:50, :50], labels[60:120, 60:120] = 1, 2
    write_ome_zarr_labels(image, earlier, "promptseg", out)  # an earlier run's
    with names_deferred(out) as written:  # as run_target on a Dask worker
        target = write_ome_zarr_labels(image, labels, "promptseg", out)
        outputs = deferred_outputs(written)
        assert list(outputs) == [str(target)]
        record = {"input": str(image), "status": "ok", "output": str(target)}
        leave_result(out, "run", {"record": record, "meta": {}, "outputs": outputs})
        np.testing.assert_array_equal(zarr_labels(image), earlier)  # not yet
        assert left_results(out, "run") == {}  # a worker killed here: its result is not taken
        written.publish()
    np.testing.assert_array_equal(zarr_labels(image), labels)
    assert left_results(out, "run")[str(image)]["record"] == record
    assert readers_view(image)[1] == {"labels": ["promptseg"]}

    with names_deferred(out):  # a task that failed after its labels: they go, the earlier ones stay
        write_ome_zarr_labels(image, earlier, "promptseg", out)
    np.testing.assert_array_equal(zarr_labels(image), labels)
    assert sorted(p.name for p in (image / "labels").iterdir()) == [
        ".promptseg-written-promptseg.json",
        ".zattrs",
        ".zgroup",
        "promptseg",
    ]


def test_an_ome_zarr_input_on_a_read_only_disk_is_refused_before_any_work(em, tmp_path, capsys, monkeypatch):
    """A folder of slides on a read-only share (the lab's archive), the default --output-format auto: the first
    OME-Zarr input's write stopped the run after the inputs before it were segmented, saying 'Read-only file system;
    run the same command with --resume', which met the same error again. Refused before any work now, naming the
    input and the way out (--output-format tiff: its labels in -o)."""
    import errno
    import tempfile

    folder = tmp_path / "archive"
    folder.mkdir()
    import imageio.v3 as iio

    iio.imwrite(folder / "a.png", em[:96, :96])
    image = write_zarr(em, folder / "b.ome.zarr")
    probe = tempfile.TemporaryFile

    def read_only_share(*args, dir=None, **kwargs):  # noqa: A002 - tempfile's own name
        if dir is not None and Path(dir).is_relative_to(folder):
            raise OSError(errno.EROFS, "Read-only file system")
        return probe(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only_share)
    out = tmp_path / "out"
    assert main(["segment", str(folder), *BOX, "-o", str(out), "--scheduler", "none"]) == 2
    err = capsys.readouterr().err
    assert f"{image}: " in err and "Read-only file system" in err and "--output-format tiff" in err, err
    assert not (out / "a.tif").exists() and not (image / "labels").exists()
    assert main(["segment", str(folder), *BOX, "-o", str(out), "--scheduler", "none", "--output-format", "tiff"]) == 0
    assert (out / "a.tif").is_file() and (out / "b.tif").is_file()


def test_a_rerun_into_the_ome_zarr_takes_out_the_earlier_runs_tiff_of_it(em, tmp_path, capsys):
    """A run with --output-format tiff, then again with auto into the same -o (the labels wanted in the OME-Zarr):
    the first run's OUT/em.tif stayed beside the new labels in the image, an older answer passing for this run's.
    It goes (our own file, as written), and the record says so."""
    folder = tmp_path / "slides"
    folder.mkdir()
    image = write_zarr(em, folder / "em.ome.zarr")
    out = tmp_path / "out"
    command = ["segment", str(folder), *BOX, "-o", str(out), "--scheduler", "none"]
    assert main([*command, "--output-format", "tiff"]) == 0
    assert (out / "em.tif").is_file()
    capsys.readouterr()
    assert main(command) == 0
    assert "removed 1 file(s) of an earlier run" in capsys.readouterr().err
    assert not (out / "em.tif").exists() and zarr_labels(image).any()
    record = json.loads((out / "report.json").read_text())["images"][0]
    assert "removed em.tif of an earlier run" in record["warnings"]


def test_a_workers_time_point_of_ome_zarr_labels_is_moved_in_after_its_result_is_left(em, tmp_path):
    """--time on Dask workers: one time point's chunks were moved into the OME-Zarr's labels before the input's
    result was left, so a worker killed in between left them with no record. They wait for the result too now, the
    result names the labels as they will be, and it is taken only once they are."""
    from ome_zarr.format import FormatV04

    from napari_promptseg.batch.journal import deferred_outputs, leave_result, left_results
    from napari_promptseg.io._files import names_deferred
    from napari_promptseg.io.time_point_labels import write_time_point

    image = tmp_path / "movie.ome.zarr"
    movie = np.stack([np.stack([em[:64, :64]] * 3)] * 2)  # (T, Z, Y, X): two time points of three planes
    root = zarr.open_group(str(image), mode="w", zarr_format=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        write_image(movie, root, axes="tzyx", fmt=FormatV04(), scale_factors=[2])
    out = tmp_path / "out"
    out.mkdir()
    first, second = np.zeros((3, 64, 64), np.uint16), np.zeros((3, 64, 64), np.uint16)
    first[:, :20, :20], second[:, 30:50, 30:50] = 1, 2
    write_time_point(image, first, 0, "promptseg", out)  # an earlier run's time point 0
    with names_deferred(out) as written:  # as run_target on a Dask worker
        target, kept = write_time_point(image, second, 1, "promptseg", out)
        assert kept == [0]
        outputs = deferred_outputs(written)
        assert list(outputs) == [str(target)]
        record = {"input": str(image), "status": "ok", "output": str(target)}
        leave_result(out, "run", {"record": record, "meta": {}, "outputs": outputs})
        assert not np.asarray(open_multiscale(target, keep_time=True).levels[0])[1].any()  # not yet
        assert left_results(out, "run") == {}  # a worker killed here: its result is not taken
        written.publish()
    labels = np.asarray(open_multiscale(target, keep_time=True).levels[0])
    np.testing.assert_array_equal(labels[0], first)
    np.testing.assert_array_equal(labels[1], second)
    assert left_results(out, "run")[str(image)]["record"] == record


def test_a_task_that_writes_an_ome_zarrs_labels_twice_publishes_the_last(em, tmp_path):
    """A task whose labels were written, then failed after them (its empty labels written in their place): both
    wait under one scratch name, and dropping the first deleted the second's, so nothing could be swapped in."""
    from napari_promptseg.io._files import names_deferred
    from napari_promptseg.io.ome_zarr_labels import write_ome_zarr_labels

    image = write_zarr(em, tmp_path / "em.ome.zarr")
    labels = np.zeros((256, 256), np.uint16)
    labels[60:120, 60:120] = 1
    with names_deferred(tmp_path) as written:
        write_ome_zarr_labels(image, labels, "promptseg", tmp_path)
        write_ome_zarr_labels(image, np.zeros_like(labels), "promptseg", tmp_path)
        written.publish()
    assert not zarr_labels(image).any() and zarr_labels(image).shape == labels.shape
