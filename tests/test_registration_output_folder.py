"""Registration bug hunt on a real BIRL pair: a `promptseg register` output folder reused by a rerun holds one
run's files, whole, even when a run is stopped or killed while writing them."""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from pathlib import Path

from napari_promptseg.cli import main


def _swappable_pair(pair, folder) -> tuple[dict, Callable[[], None]]:
    """The pair and its landmarks copied into ``folder``, and a function that swaps the two images' (and their
    landmarks') contents in place: a rerun on the same files then writes other results (a run on another pair of
    files into the same -o is refused)."""
    import shutil

    paths = {key: shutil.copy(pair[key], folder / f"{key}{pair[key].suffix}") for key in pair}

    def swap() -> None:
        for a, b in (("fixed", "moving"), ("lm_fixed", "lm_moving")):
            first, second = (Path(paths[k]).read_bytes() for k in (a, b))
            Path(paths[a]).write_bytes(second)
            Path(paths[b]).write_bytes(first)

    return paths, swap


def test_cli_stopped_while_writing_leaves_the_earlier_runs_files_as_they_were(
    birl_quarter, tmp_path, capsys, monkeypatch
):
    """A rerun stopped between its writes (here a full disk at the warped landmarks) left its new moving_warped.tif
    and displacement.tif beside the earlier run's report.json and landmarks: the folder mixed two runs. Now a run's
    files appear together, report.json last, or not at all, and no temporary file is left behind."""
    out = tmp_path / "out"
    files, swap = _swappable_pair(birl_quarter, tmp_path)
    landmarks = ["--landmarks-fixed", str(files["lm_fixed"]), "--landmarks-moving", str(files["lm_moving"])]
    run = ["register", str(files["fixed"]), str(files["moving"]), "-o", str(out), "--method", "intensity", *landmarks]
    assert main(run) == 0, capsys.readouterr().err
    earlier = {path.name: path.read_bytes() for path in out.iterdir()}
    assert {"moving_warped.tif", "displacement.tif", "landmarks_warped.csv", "report.json"} <= set(earlier)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("napari_promptseg.io.landmarks.write_landmarks", full_disk)
    # a rerun into the same folder: the images swapped (its warped image differs from the earlier one)
    swap()
    capsys.readouterr()
    assert main(run) != 0
    assert "No space left on device" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in out.iterdir()} == earlier


def test_cli_stopped_while_renaming_keeps_the_earlier_runs_landmarks(birl_quarter, tmp_path, capsys, monkeypatch):
    """A rerun without landmarks removes the earlier run's landmarks_warped.csv: that happened before its own files
    were renamed into place, so a run stopped at a rename (a full disk, Ctrl+C) left the earlier report.json naming
    a landmarks file that was gone. The earlier run's files go only once this run's are in place."""
    import os

    out = tmp_path / "out"
    fixed, moving, lm_fixed, lm_moving = (str(birl_quarter[k]) for k in ("fixed", "moving", "lm_fixed", "lm_moving"))
    landmarks = ["--landmarks-fixed", lm_fixed, "--landmarks-moving", lm_moving]
    pair = [fixed, moving]
    assert main(["register", *pair, "-o", str(out), "--method", "intensity", *landmarks]) == 0, capsys.readouterr().err
    earlier = {path.name: path.read_bytes() for path in out.iterdir()}
    assert "landmarks_warped.csv" in earlier
    replace = os.replace

    def full_disk_at_the_first_rename(src, dst):
        if os.path.basename(dst) == "displacement.tif":
            raise OSError(errno.ENOSPC, "No space left on device")
        replace(src, dst)

    monkeypatch.setattr("napari_promptseg.io._files.os.replace", full_disk_at_the_first_rename)
    capsys.readouterr()
    assert main(["register", *pair, "-o", str(out), "--method", "intensity"]) != 0
    assert "No space left on device" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in out.iterdir()} == earlier


def test_cli_stopped_between_two_renames_leaves_the_earlier_run_whole(birl_quarter, tmp_path, capsys, monkeypatch):
    """The run's files were renamed into place one by one: a rename that failed after the first (a file held open
    by another program, a full disk) left this run's displacement.tif beside the earlier run's moving_warped.tif and
    report.json. Now the renamed ones are put back: the folder is the earlier run's, byte for byte."""
    import os

    out = tmp_path / "out"
    files, swap = _swappable_pair(birl_quarter, tmp_path)
    pair = [str(files["fixed"]), str(files["moving"])]
    assert main(["register", *pair, "-o", str(out), "--method", "intensity"]) == 0, capsys.readouterr().err
    earlier = {path.name: path.read_bytes() for path in out.iterdir()}
    replace, failed = os.replace, []

    def held_open_at_the_second_rename(src, dst):
        if os.path.basename(dst) == "moving_warped.tif" and not failed:  # renamed after displacement.tif
            failed.append(dst)
            raise PermissionError(errno.EACCES, "Permission denied", str(dst))
        replace(src, dst)

    monkeypatch.setattr("napari_promptseg.io._files.os.replace", held_open_at_the_second_rename)
    capsys.readouterr()
    swap()
    assert main(["register", *pair, "-o", str(out), "--method", "intensity"]) != 0  # another result
    assert failed and "Permission denied" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in out.iterdir()} == earlier


_KILLED_AT_A_RENAME = """
import os, sys
from napari_promptseg.cli import main
replace = os.replace
def killed(src, dst):  # the process dies here, as at a power cut: no cleanup runs
    if os.path.basename(dst) == sys.argv[1]:
        os._exit(9)
    replace(src, dst)
os.replace = killed
sys.exit(main(sys.argv[2:]))
"""


def test_cli_killed_between_two_renames_is_undone_by_the_next_run(birl_quarter, tmp_path, capsys):
    """A run killed between its renames (no cleanup can run) left its landmarks_warped.csv beside the earlier run's
    report.json, whose hash of that file no longer matched: the next run into the folder refused it ('not an earlier
    output of promptseg register, or was changed since'), and nothing said the folder mixed two runs. Now what the
    killed run renamed is put back by the next run (or :func:`undo_interrupted_replacing`) before it looks."""
    import os
    import subprocess
    import sys

    out = tmp_path / "out"
    files, swap = _swappable_pair(birl_quarter, tmp_path)
    landmarks = ["--landmarks-fixed", str(files["lm_fixed"]), "--landmarks-moving", str(files["lm_moving"])]
    run = ["register", str(files["fixed"]), str(files["moving"]), "-o", str(out), "--method", "intensity", *landmarks]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def kill_at(name: str) -> None:  # a run on the images swapped (other files), killed
        swap()
        done = subprocess.run([sys.executable, "-c", _KILLED_AT_A_RENAME, name, *run], env=env, capture_output=True)
        swap()
        assert done.returncode == 9, done.stderr.decode()[-2000:]

    assert main(run) == 0, capsys.readouterr().err
    kill_at("displacement.tif")  # renamed after landmarks_warped.csv
    assert main(run) == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["landmarks"]["landmarks_warped_sha256"] == _sha256(out / "landmarks_warped.csv")
    assert sorted(path.name for path in out.iterdir()) == sorted(
        ["moving_warped.tif", "displacement.tif", "landmarks_warped.csv", "report.json"]
    )
    earlier = {path.name: path.read_bytes() for path in out.iterdir()}
    kill_at("report.json")  # every other file renamed: the last step
    assert {path.name: path.read_bytes() for path in out.iterdir() if not path.name.startswith(".")} != earlier
    (out / ".promptseg.lock").unlink()  # the killed run's lock file (its lock went with it)
    from napari_promptseg.io._files import undo_interrupted_replacing

    undo_interrupted_replacing(out)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == earlier


def _sha256(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
