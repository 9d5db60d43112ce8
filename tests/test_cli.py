"""`promptseg segment` end to end on real images, through the installed console script and in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_promptseg._reader import get_reader
from napari_promptseg.cli import main
from napari_promptseg.io import read_mask
from napari_promptseg.methods.interactive import boxes_from_labels
from napari_promptseg.methods.metrics import dice

from .conftest import dataset_pairs, listing_refused


def test_segment_console_script_writes_labels_and_report(shared_data, tmp_path):
    pairs = dataset_pairs(shared_data / "lungs_cxr_shenzhen")[:2]
    truth = read_mask(pairs[0][1])
    boxes = boxes_from_labels(truth, min_area=50)
    box_args = [str(v) for box in boxes for v in ("--box", *box)]
    out = tmp_path / "out"
    script = Path(sys.executable).with_name("promptseg")
    proc = subprocess.run(
        [str(script), "segment", *box_args, str(pairs[0][0]), str(pairs[1][0]), "-o", str(out), "--overlay"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    labels = tifffile.imread(out / f"{pairs[0][0].stem}.tif")
    assert labels.dtype == np.uint16 and labels.shape == truth.shape
    assert sorted(np.unique(labels)) == [0, 1, 2]
    assert dice(labels > 0, truth) > 0.9
    assert (out / f"{pairs[1][0].stem}.tif").is_file()
    assert (out / f"{pairs[0][0].stem}_overlay.png").is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["command"] == "segment" and report["model"] == "litemedsam"
    assert [Path(r["input"]).name for r in report["images"]] == [pairs[0][0].name, pairs[1][0].name]
    assert report["images"][0]["objects"] == 2
    assert set(report["images"][0]["timings_s"]) == {"embed_s", "decode_s", "paint_s"}


def test_segment_with_points_in_process(shared_data, tmp_path, capsys):
    image_path, mask_path = dataset_pairs(shared_data / "polyps_kvasir_text")[0]
    truth = read_mask(mask_path)
    ((x0, y0, x1, y1),) = boxes_from_labels(truth, min_area=50)
    rows, cols = np.nonzero(truth)
    inside = (int(cols[len(cols) // 2]), int(rows[len(rows) // 2]))
    code = main(
        [
            "segment",
            str(image_path),
            "-o",
            str(tmp_path),
            "--box",
            *map(str, (x0, y0, x1, y1)),
            "--point",
            *map(str, inside),
        ]
    )
    assert code == 0
    labels = tifffile.imread(tmp_path / f"{image_path.stem}.tif")
    assert labels.max() == 1  # the point refines the box it lies in: still one object
    assert dice(labels > 0, truth) > 0.9
    assert "1 object(s)" in capsys.readouterr().out


def test_segment_rejects_missing_prompt_and_missing_file(tmp_path, capsys):
    assert main(["segment", str(tmp_path / "nope.png"), "-o", str(tmp_path), "--box", "1", "1", "5", "5"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["segment", str(tmp_path / "nope.png"), "-o", str(tmp_path)]) == 2
    assert "--box" in capsys.readouterr().err


def test_outputs_that_would_overwrite_an_input_or_each_other_are_refused_before_any_work(tmp_path, capsys):
    """-o as the input's own folder would replace the image by its labels; two inputs with one stem would write one
    file; both stop the run with the reason before anything is written. -o naming a file is one line too."""
    image = np.zeros((64, 64), np.uint8)
    image[20:40, 20:40] = 200
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "cells.tif", image)
    original = (folder / "cells.tif").read_bytes()
    box = ["--box", "15", "15", "45", "45", "--scheduler", "none"]

    assert main(["segment", str(folder / "cells.tif"), "-o", str(folder), *box]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    assert (folder / "cells.tif").read_bytes() == original

    import imageio.v3 as iio

    iio.imwrite(folder / "cells.png", image)
    other = tmp_path / "in2"  # cells.tif in two folders: one output name (cells.png's is cells.png.tif)
    other.mkdir()
    tifffile.imwrite(other / "cells.tif", image)
    out = tmp_path / "out"
    assert main(["segment", str(folder), str(other), "-o", str(out), *box]) == 2
    err = capsys.readouterr().err
    assert "2 inputs would write the same output" in err and "in/cells.tif" in err and "in2/cells.tif" in err
    assert not out.exists()  # a refused run leaves no empty folder behind
    assert main(["segment", str(folder / "cells.png"), "-o", str(out), *box[:5], "--scheduler", "tcp://127.0.0.1"]) == 2
    assert "give the scheduler's port too" in capsys.readouterr().err and not out.exists()

    # a target named like the reference mask, written into the mask's folder, would replace the mask
    refs = tmp_path / "refs"
    refs.mkdir()
    tifffile.imwrite(refs / "cells.tif", (image > 0).astype(np.uint8))
    reference = ["--reference", str(folder / "cells.tif"), "--reference-mask", str(refs / "cells.tif")]
    assert main(["oneshot", str(folder / "cells.png"), *reference, "-o", str(refs), "--scheduler", "none"]) == 2
    assert "would overwrite the input" in capsys.readouterr().err

    (tmp_path / "afile").write_text("not a directory")
    assert main(["segment", str(folder / "cells.tif"), "-o", str(tmp_path / "afile"), *box]) == 2
    err = capsys.readouterr().err
    assert "a file, not a directory" in err and len(err.strip().splitlines()) == 1
    # '-o labels.tif' (a file meant) made a folder labels.tif/ holding labels.tif/cells.tif
    assert main(["segment", str(folder / "cells.tif"), "-o", str(tmp_path / "labels.tif"), *box]) == 2
    assert (
        f"names a file (.tif), but a directory for the outputs is wanted; give a folder, e.g. {tmp_path / 'labels'}"
        in (capsys.readouterr().err)
    )
    assert not (tmp_path / "labels.tif").exists()


def test_existing_files_that_are_not_our_outputs_are_never_overwritten(litemedsam, tmp_path, capsys):
    """cells.ome.tif's labels (cells.tif) replaced a raw cells.tif beside it, x.tiff's or x.png's an x.tif: any
    existing output file that this package did not write is refused before any work. Its own earlier outputs (marked
    in the file, or listed in the folder's report.json by an older version) are replaced, so reruns work."""
    from napari_promptseg._sample_data import nuclei
    from napari_promptseg.io.images import is_own_output

    (image, _, _), _ = nuclei()
    image = image[:128, :128]
    folder = tmp_path / "r2"
    folder.mkdir()
    tifffile.imwrite(folder / "cells.tif", image)
    tifffile.imwrite(folder / "cells.ome.tif", image, metadata={"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
    raw = (folder / "cells.tif").read_bytes()
    command = ["segment", str(folder / "cells.ome.tif"), "--box", "37", "26", "66", "50", "--scheduler", "none"]
    assert main([*command, "-o", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "cells.tif" in err and "not an earlier promptseg output" in err and len(err.strip().splitlines()) == 1
    assert (folder / "cells.tif").read_bytes() == raw and not (folder / "report.json").exists()

    (folder / "cells.tif").unlink()
    assert main([*command, "-o", str(folder), "--overlay"]) == 0
    assert is_own_output(folder / "cells.tif") and is_own_output(folder / "cells_overlay.png")
    # napari opens the labels as labels over their image, in its pixel size (0.5 µm), not in pixels beside it
    [(pixels, image_meta, _)] = get_reader(str(folder / "cells.ome.tif"))(str(folder / "cells.ome.tif"))
    [(labels, labels_meta, kind)] = get_reader(str(folder / "cells.tif"))(str(folder / "cells.tif"))
    assert kind == "labels" and labels_meta["scale"] == image_meta["scale"] == [0.5, 0.5]
    assert labels_meta["units"] == image_meta["units"] == ["µm", "µm"]
    rows, cols = np.round(np.argwhere(labels > 0) * labels_meta["scale"] / image_meta["scale"]).astype(int).T
    assert pixels[rows, cols].mean() > 2 * pixels.mean()  # the object lies over the nucleus the box holds
    assert main([*command, "-o", str(folder), "--overlay"]) == 0, "a rerun replaces its own outputs"

    # another suffix of one stem: x.tiff's labels would replace x.tif; an overlay name taken by the user's PNG too
    other = tmp_path / "x"
    other.mkdir()
    tifffile.imwrite(other / "x.tiff", image)
    tifffile.imwrite(other / "x.tif", image)
    box = ["--box", "37", "26", "66", "50", "--scheduler", "none"]
    assert main(["segment", str(other / "x.tiff"), "-o", str(other), *box]) == 2
    assert "x.tif would overwrite" in capsys.readouterr().err
    (other / "x.tif").unlink()
    tifffile.imwrite(other / "x_overlay.png", image)
    assert main(["segment", str(other / "x.tiff"), "-o", str(other), "--overlay", *box]) == 2
    assert "x_overlay.png" in capsys.readouterr().err

    # an output of an older version (unmarked) listed in the folder's report.json may be replaced; a report.json
    # that is not ours may not
    old = tmp_path / "old"
    old.mkdir()
    tifffile.imwrite(old / "cells.tif", np.zeros((128, 128), np.uint16))
    report = {"version": "0.1", "command": "segment", "images": [{"output": str(old / "cells.tif")}]}
    (old / "report.json").write_text(json.dumps(report))
    assert main([*command, "-o", str(old)]) == 0 and tifffile.imread(old / "cells.tif").any()
    (old / "report.json").write_text('{"experiment": "mine"}')
    assert main([*command, "-o", str(old)]) == 2
    assert "report.json" in capsys.readouterr().err


def test_reruns_keep_corrections_drop_stale_results_and_see_every_name(litemedsam, tmp_path, capsys):
    """A user's corrected labels (rewritten, so without our mark) survive a rerun; a failed input's earlier outputs
    go (they would pass for this run's); two links to one image are two inputs; our own outputs in an input folder
    (a run whose -o was that folder) are not inputs."""
    from napari_promptseg._sample_data import nuclei

    (image, _, _), _ = nuclei()
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", image[:128, :128])
    tifffile.imwrite(folder / "b.tif", image[128:256, :128])
    out = tmp_path / "out"
    command = ["segment", str(folder), "--box", "37", "26", "66", "50", "-o", str(out), "--scheduler", "none"]
    assert main([*command, "--overlay"]) == 0
    corrected = tifffile.imread(out / "a.tif")
    corrected[:5, :5] = 7
    tifffile.imwrite(out / "a.tif", corrected)
    assert main(command) == 2
    assert "a.tif" in capsys.readouterr().err and tifffile.imread(out / "a.tif")[0, 0] == 7
    assert main([*command, "--overlay", "--resume"]) == 0  # a resume keeps finished outputs, corrected or not
    assert tifffile.imread(out / "a.tif")[0, 0] == 7
    (out / "a.tif").unlink()
    (folder / "b.tif").write_bytes(b"not a tiff any more")
    assert main([*command, "--overlay"]) == 1
    assert not (out / "b.tif").exists() and not (out / "b_overlay.png").exists()
    record = json.loads((out / "report.json").read_text())["images"][1]
    assert record["status"] == "failed" and "removed b_overlay.png of an earlier run" in record["warnings"]
    assert not list(out.glob(".*.tmp"))  # labels are written beside and renamed
    # alone too: its error is the run's (exit 2), its earlier outputs go and the report says it failed, so a
    # --resume does not take the earlier result for this input's
    single = ["segment", str(folder / "a.tif"), "--box", "37", "26", "66", "50", "-o", str(tmp_path / "one")]
    assert main([*single, "--overlay"]) == 0
    (folder / "a.tif").write_bytes(b"cut short")
    capsys.readouterr()
    assert main([*single, "--overlay"]) == 2
    assert "removed a.tif of an earlier run" in capsys.readouterr().err
    assert not (tmp_path / "one" / "a.tif").exists() and not (tmp_path / "one" / "a_overlay.png").exists()
    assert json.loads((tmp_path / "one" / "report.json").read_text())["images"][0]["status"] == "failed"
    assert main([*single, "--overlay", "--resume"]) == 2
    tifffile.imwrite(folder / "a.tif", image[:128, :128])

    links = tmp_path / "links"
    links.mkdir()
    for name in ("well_A1.tif", "well_B7.tif"):
        (links / name).symlink_to(folder / "a.tif")
    box = ["--box", "37", "26", "66", "50", "--scheduler", "none"]
    assert main(["segment", str(links), "-o", str(tmp_path / "wells"), *box]) == 0
    assert {p.name for p in (tmp_path / "wells").glob("*.tif")} == {"well_A1.tif", "well_B7.tif"}

    self_folder = tmp_path / "self"
    self_folder.mkdir()
    iio.imwrite(self_folder / "x.png", image[:128, :128])
    assert main(["segment", str(self_folder), "-o", str(self_folder), *box]) == 0
    # the second run finds x.tif (its own labels) in the folder: not an input, and replaced as its own output
    assert main(["segment", str(self_folder), "-o", str(self_folder), *box]) == 0
    assert [r["input"] for r in json.loads((self_folder / "report.json").read_text())["images"]] == [
        str(self_folder / "x.png")
    ]


def test_hidden_files_are_not_inputs_and_a_repeated_input_is_one(tmp_path, capsys):
    """macOS resource forks ("._x.tif") and other dot files are not the user's images; files of other kinds in the
    folder are skipped, and said to be (a .webp the user counted on went missing without a word)."""
    from napari_promptseg.cli._inputs import _expand_images

    image = np.full((32, 32), 7, np.uint8)
    tifffile.imwrite(tmp_path / "cells.tif", image)
    (tmp_path / "._cells.tif").write_bytes(b"\x00\x05\x16\x07 resource fork")
    tifffile.imwrite(tmp_path / ".hidden.tif", image)
    (tmp_path / "notes.txt").write_text("stain: DAPI")
    iio.imwrite(tmp_path / "more.webp", np.stack([image] * 3, -1))
    assert _expand_images([tmp_path]) == [tmp_path / "cells.tif"]
    assert "skipped 2 file(s) that are not images read here" in capsys.readouterr().err
    # named twice (alone and in its folder) it is one input, not two that write one output
    assert _expand_images([tmp_path / "cells.tif", tmp_path]) == [tmp_path / "cells.tif"]


def test_subfolders_of_an_input_folder_are_said_to_be_skipped(tmp_path, capsys):
    """slides/ holding patient1/ and patient2/ beside one image ran on that image alone, without a word on the
    subfolders. They are named now (not searched: a folder is one level). An earlier run's -o folder (its
    report.json) and an OME-Zarr image inside are no subfolders to mention."""
    from napari_promptseg.cli._inputs import _expand_images

    image = np.full((32, 32), 7, np.uint8)
    tifffile.imwrite(tmp_path / "cells.tif", image)
    for name in ("patient1", "patient2"):
        (tmp_path / name).mkdir()
        tifffile.imwrite(tmp_path / name / "a.tif", image)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.json").write_text("{}")
    assert _expand_images([tmp_path]) == [tmp_path / "cells.tif"]
    err = capsys.readouterr().err
    assert (
        f"{tmp_path}: skipped 2 subfolder(s), not searched (name them too, e.g. {tmp_path}/*/): patient1, patient2"
        in err
    )
    assert "out" not in err.split(":")[-1]


def test_nonsense_option_values_are_refused_with_the_option_and_range(tmp_path, capsys):
    import pytest

    base = ["segment", str(tmp_path / "x.png"), "-o", str(tmp_path / "out"), "--box", "1", "1", "5", "5"]
    for option, value, message in (
        ("--threads", "0", "argument --threads: must be at least 1, got 0"),
        ("--workers", "-2", "argument --workers: must be at least 1, got -2"),
        ("--stop-iou", "2", "argument --stop-iou: must lie from 0 to 1, got 2"),
    ):
        with pytest.raises(SystemExit) as exited:
            main([*base, option, value])
        assert exited.value.code == 2
        assert message in capsys.readouterr().err


def test_one_large_input_shows_the_methods_steps(litemedsam, tmp_path, capsys, monkeypatch):
    """A single input had no progress at all (the bar counts inputs): a 3000 px find-all or one-shot was minutes of
    silence. Its method's steps now reach stderr (off a terminal, a line at most every 10 s: here every step)."""
    from skimage.measure import regionprops

    monkeypatch.setattr("napari_promptseg.batch.progress.LOG_STEP_EVERY_S", 0.0)

    from napari_promptseg._sample_data import nuclei

    (image, _, _), (truth, _, _) = nuclei()
    path = tmp_path / "nuclei.tif"
    tifffile.imwrite(path, image)
    boxes = [r.bbox for r in sorted(regionprops(truth), key=lambda r: -r.area)[:3]]
    argv = ["segment", str(path), "--find-all", "-o", str(tmp_path / "out")]
    for r0, c0, r1, c1 in boxes:
        argv += ["--box", str(c0), str(r0), str(c1), str(r1)]
    assert main(argv) == 0
    steps = [line for line in capsys.readouterr().err.splitlines() if line.endswith("%)")]
    assert len(steps) > 2 and steps[-1] != steps[0], steps  # its steps, one line each


def test_an_output_folder_that_cannot_be_written_or_fills_up_gives_one_line(litemedsam, tmp_path, capsys, monkeypatch):
    """A read-only -o and a disk that fills up mid-batch ended in Python tracebacks (exit 1). Both are one line and
    exit 2 now; the images finished before the disk filled stay for --resume."""
    import errno

    from napari_promptseg._sample_data import nuclei
    from napari_promptseg.batch import JOURNAL_NAME
    from napari_promptseg.batch.journal import Journal

    (image, _, _), _ = nuclei()
    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(3):
        tifffile.imwrite(folder / f"{k}.tif", image[k * 64 : k * 64 + 96, :96])
    command = ["segment", str(folder), "--box", "10", "10", "40", "40", "--scheduler", "none", "-o"]

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    with monkeypatch.context() as m:
        m.setattr("napari_promptseg.io._files.tempfile.TemporaryFile", read_only)
        assert main([*command, str(tmp_path / "ro")]) == 2
    assert "-o " in (err := capsys.readouterr().err) and "cannot write there (Read-only file system)" in err

    add = Journal.add

    def fills_up(self, **item):
        if "record" in item and self._records >= 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        add(self, **item)

    monkeypatch.setattr(Journal, "add", fills_up)
    out = tmp_path / "full"
    assert main([*command, str(out)]) == 2
    err = capsys.readouterr().err
    said = f"error: {out / JOURNAL_NAME}: No space left on device; 1 input(s) finished are kept: run the same "
    assert "Traceback" not in err and err.strip().endswith(said + "command with --resume to go on from there"), err
    assert (out / JOURNAL_NAME).read_text().count('"record"') == 1  # what was done is kept for --resume


@pytest.mark.parametrize("code", ["EROFS", "EDQUOT"])
def test_an_output_disk_remounted_read_only_mid_batch_is_named(tmp_path, capsys, monkeypatch, code):
    """A disk remounted read-only after an I/O error (ext4's errors=remount-ro) fails the journal's next write with
    no file name: the run stopped (as for a full disk) but said only 'error: Read-only file system', where a full
    disk's same error said 'writing into OUT'. Both name the output folder now (one errno set decides both)."""
    import errno

    from napari_promptseg._sample_data import nuclei
    from napari_promptseg.batch.journal import Journal

    (image, _, _), _ = nuclei()
    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(2):
        tifffile.imwrite(folder / f"{k}.tif", image[k * 64 : k * 64 + 96, :96])
    add = Journal.add

    def refuses(self, **item):
        if "record" in item and self._records >= 1:
            raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))  # a write(): no file name
        add(self, **item)

    monkeypatch.setattr(Journal, "add", refuses)
    out = tmp_path / "out"
    argv = ["segment", str(folder), "--box", "10", "10", "40", "40", "--scheduler", "none", "-o", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"error: writing into {out}: {os.strerror(getattr(errno, code))}; 1 input(s) finished" in err, err


def test_a_relative_weights_path_is_named_absolutely(tmp_path, capsys, monkeypatch):
    """`--weights my.pth` kept the path as typed (only --text-model and --text-weights were made absolute): report.json
    named it relative to wherever the run was, and a Dask worker or a resumed run in another directory could not load
    it. Every subcommand's --weights (and --text-weights) is now absolute from the parse; a hub id stays as typed."""
    from skimage import data as skdata

    from napari_promptseg.cli import build_parser
    from napari_promptseg.models import load_segmenter
    from napari_promptseg.models.registry import resolve_weights

    (tmp_path / "models").mkdir()
    mine = tmp_path / "models" / "mine.pth"
    mine.symlink_to(resolve_weights("litemedsam"))  # a fine-tuned checkpoint of the user's, say
    image = tmp_path / "coins.tif"
    tifffile.imwrite(image, skdata.coins()[:128, :128])
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    argv = ["segment", "coins.tif", "--box", "10", "10", "60", "60", "-o", "out", "--weights", "models/mine.pth"]
    assert main([*argv, "--device", "cpu"]) == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["parameters"]["weights"] == str(mine)

    parser = build_parser()
    for sub in (
        ["segment", "coins.tif", "-o", "out"],
        ["oneshot", "coins.tif", "-o", "out", "--reference", "r.tif", "--reference-mask", "m.tif"],
        ["embed", "coins.tif"],
        ["register", "a.tif", "b.tif", "-o", "out"],
    ):
        assert parser.parse_args([*sub, "--weights", "models/mine.pth"]).weights == str(mine), sub
    args = parser.parse_args(
        ["text", "nuclei", "coins.tif", "-o", "out", "--weights", "models/mine.pth", "--text-weights", "models"]
    )
    assert args.text_weights == str(tmp_path / "models")
    monkeypatch.chdir(out)  # a worker elsewhere loads what the run was given
    assert load_segmenter(args.model, weights=args.weights, device="cpu").name == "litemedsam"
    hub = "owner/name/model.pth"  # no such local file: a hub id, as typed
    assert parser.parse_args(["segment", "x.tif", "-o", "o", "--weights", hub]).weights == hub


def test_a_missing_input_file_is_said_before_anything_heavy_is_loaded(tmp_path):
    """A typo in a reference, a moving image, a landmark file or a training CSV was reported only after torch's
    import, the model's load or a Dask cluster's start (5-8 s). Now at once, naming the option, with exit 2 and no
    output folder left behind."""
    image = tmp_path / "a.png"
    iio.imwrite(image, np.zeros((16, 16), np.uint8))
    missing = str(tmp_path / "nope.png")
    cases = {
        "(--reference)": ["oneshot", "--reference", missing, "--reference-mask", str(image), str(image)],
        "(MOVING)": ["register", str(image), missing],
        "(--landmarks-moving)": [
            "register", str(image), str(image), "--landmarks-fixed", str(image), "--landmarks-moving", missing
        ],
        "(CSV)": ["train-text", missing],
        "(--mask)": ["library", "add", "x", "--image", str(image), "--mask", missing, "--library", str(tmp_path / "l")],
    }  # fmt: skip
    script = (
        "import sys; from napari_promptseg.cli import main; code = main(sys.argv[1:]); "
        "print(code, 'torch' in sys.modules)"
    )
    for option, argv in cases.items():
        out = tmp_path / "out"
        if argv[0] not in ("library",):
            argv = [*argv, "-o", str(out)]
        proc = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=120)
        assert proc.stdout.split() == ["2", "False"], (option, proc.stdout, proc.stderr)
        assert f"not found: {missing} {option}" in proc.stderr, proc.stderr
        assert not out.exists()


def test_an_image_given_where_the_text_prompt_goes_is_said_with_the_corrected_command(tmp_path, capsys, monkeypatch):
    """`promptseg text image.png polyp` (the prompt after the image) said only "input image not found: polyp". Now
    it says the prompt comes first and shows the command in that order; a plain missing image is said as before."""
    monkeypatch.chdir(tmp_path)
    iio.imwrite(tmp_path / "a.png", np.zeros((16, 16), np.uint8))
    iio.imwrite(tmp_path / "b.png", np.zeros((16, 16), np.uint8))

    assert main(["text", "a.png", "--route", "library", "polyp", "-o", "out"]) == 2
    err = capsys.readouterr().err
    assert "input image not found: polyp; the prompt comes first, then the images" in err, err
    assert "Run: promptseg text polyp a.png --route library -o out" in err, err
    assert not (tmp_path / "out").exists()

    assert main(["text", "a.png", "b.png", "red", "cells", "-o", "out"]) == 2  # a prompt of several words
    assert "Run: promptseg text 'red cells' a.png b.png -o out" in capsys.readouterr().err

    assert main(["text", "nuclei", "a.png", "missing", "-o", "out"]) == 2  # the prompt is no file: only the typo
    err = capsys.readouterr().err
    assert "input image not found: missing" in err and "prompt comes first" not in err, err

    # a prompt longer than a file name may be (a pasted description) was looked for as a file: OSError traceback
    long_prompt = " ".join(["nuclei"] * 60)
    assert main(["text", long_prompt, "a.png", "--route", "library", "--library", "empty", "-o", "out"]) == 2
    err = capsys.readouterr().err
    assert "the reference library has no entries" in err and "Traceback" not in err, err


def test_a_text_prompt_starting_with_a_dash_is_said_to_need_a_double_dash_before_it(tmp_path, capsys, monkeypatch):
    """`promptseg text -polyp a.png -o out` (a prompt starting with '-') said "the following arguments are required:
    images": argparse read the prompt as an unknown option. It says the prompt is read as an option and to put `--`
    before it, after the options; so given, the prompt is taken. Mistyped options and negative values are said as
    before."""
    monkeypatch.chdir(tmp_path)
    iio.imwrite(tmp_path / "a.png", np.zeros((16, 16), np.uint8))
    for argv in (
        ["text", "-polyp", "a.png", "-o", "out"],
        ["text", "-o", "out", "-polyp", "a.png", "b.png"],  # more images: "unrecognized arguments: -polyp"
        ["--precision", "float32", "text", "--route", "library", "-large-polyp", "a.png", "-o", "out"],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "the prompt" in err and "starts with '-'" in err and "--" in err, err
        assert "required: images" not in err and "unrecognized arguments" not in err, err
        assert not (tmp_path / "out").exists()
    # so given, the prompt is taken (the empty library is the next thing said)
    argv = ["text", "-o", "out", "--route", "library", "--library", "empty", "--", "-polyp", "a.png"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "the reference library has no entries" in err and "starts with '-'" not in err, err
    with pytest.raises(SystemExit):  # a mistyped option is argparse's to say
        main(["text", "polyp", "a.png", "-o", "out", "--overlya"])
    assert "unrecognized arguments: --overlya" in capsys.readouterr().err


def test_a_text_prompt_starting_with_a_short_options_letter_is_said_to_be_read_as_that_option(
    tmp_path, capsys, monkeypatch
):
    """`promptseg text -oily a.png -o out`: argparse read the prompt as `-o ily` (an output folder) and said "the
    following arguments are required: images", or with two images took the first image's path as the prompt;
    `-hairy` printed the help and exited 0. It is said which option the prompt is read as, and the two ways out:
    `--` before the prompt, or `-o ily` for that folder."""
    monkeypatch.chdir(tmp_path)
    iio.imwrite(tmp_path / "a.png", np.zeros((16, 16), np.uint8))
    iio.imwrite(tmp_path / "b.png", np.zeros((16, 16), np.uint8))
    for argv, read_as in (
        (["text", "-oily", "a.png", "-o", "out"], "-o ily"),
        (["text", "-oily", "a.png", "b.png", "-o", "out"], "-o ily"),
        (["text", "-oily", "a.png"], "-o ily"),
        (["text", "-hairy", "a.png", "-o", "out"], "-h"),
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert f"the prompt {argv[1]} starts with '-' and is read as the option {read_as}" in err, err
        assert f"-- {argv[1]} IMAGE" in err and "required: images" not in err, err
        assert not (tmp_path / "out").exists() and not (tmp_path / "ily").exists()
    assert "for an output folder ily, write -o ily" in main_err(["text", "-oily", "a.png"], capsys)
    # an output folder given in one word with a path's characters is no prompt: taken as argparse takes it
    argv = ["text", "-oout/", "--route", "library", "--library", "empty", "nuclei", "a.png"]
    assert "the reference library has no entries" in main_err(argv, capsys)


def main_err(argv: list[str], capsys) -> str:
    """What `promptseg ARGV` wrote to stderr (its exit code 2)."""
    assert main(argv) == 2, argv
    return capsys.readouterr().err


def test_an_input_the_system_refuses_to_look_at_is_an_error_naming_it(tmp_path, capsys, monkeypatch):
    """A folder whose listing is denied, or a name longer than a file name may be, raised OSError from the inputs'
    expansion (or, for oneshot's --reference, a traceback from the check that it exists): now an error names the
    input and why, and a refused run leaves no empty -o folder behind."""
    monkeypatch.chdir(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    iio.imwrite(locked / "a.png", np.zeros((16, 16), np.uint8))
    listing_refused(monkeypatch, locked)
    too_long = "a" * 300  # over the 255 bytes a file name may have: for root too
    cases = {
        str(locked): ["segment", str(locked), "--box", "1", "1", "9", "9"],
        too_long: ["segment", too_long, "--box", "1", "1", "9", "9"],
        f"{too_long}.png": ["oneshot", "a.png", "--reference", f"{too_long}.png", "--reference-mask", "a.png"],
    }
    iio.imwrite(tmp_path / "a.png", np.zeros((16, 16), np.uint8))
    for name, argv in cases.items():
        assert main([*argv, "-o", "out"]) == 2, name
        err = capsys.readouterr().err
        why = "Permission denied" if name == str(locked) else "File name too long"
        assert f"{name}: cannot be read" in err and why in err and "Traceback" not in err, err
        assert not (tmp_path / "out").exists(), name


def test_a_run_stopped_before_it_wrote_anything_leaves_no_empty_output_folder(tmp_path, capsys, monkeypatch):
    """Ctrl+C (or SIGTERM) while a run starts (torch's import, the model's load) left the -o folder it had created,
    empty; only a refused run removed it. A folder the run created and left empty goes, whatever ended the run; one
    that was there before stays, as does one holding anything."""
    import napari_promptseg.cli.segment as segment

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt  # as Ctrl+C arrives while the model loads

    monkeypatch.setattr(segment, "_run_batch", stopped)
    iio.imwrite(tmp_path / "a.png", np.zeros((16, 16), np.uint8))
    command = ["segment", str(tmp_path / "a.png"), "--box", "1", "1", "9", "9", "-o"]
    out = tmp_path / "out"
    assert main([*command, str(out)]) == 130
    assert "interrupted" in capsys.readouterr().err and not out.exists()
    out.mkdir()  # the user's, empty: not the run's to remove
    assert main([*command, str(out)]) == 130 and out.is_dir()


@pytest.mark.parametrize("command", [[], ["segment"], ["oneshot"], ["text"]])
def test_the_exit_codes_are_in_the_help(command, capsys):
    """The exit codes (1: an input without output; 2: the run stopped, or every input failed; 130: interrupted) were
    written in the module's docstring and the README only: `promptseg --help` showed its first line, and a script's
    author reading `promptseg segment --help` found none."""
    with pytest.raises(SystemExit) as stop:
        main([*command, "--help"])
    assert stop.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "exit codes:" in help_text and "0 every output was written" in help_text  # promptseg's: per subcommand
    assert "1 some input could not be read" in help_text and "130 interrupted" in help_text


def test_segment_help_says_the_prompts_coordinate_order(capsys):
    """`promptseg segment --help` listed --box X0 Y0 X1 Y1, --point X Y and --negative-point X Y without a word: not
    that x is the column (napari's Points and Shapes exports are (row, column): the order swapped), nor that the
    clicks outside every box make one object together (two --point on two nuclei gave one object)."""
    with pytest.raises(SystemExit):
        main(["segment", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--box X0 Y0 X1 Y1 one object's box in pixels, x = column, y = row" in help_text
    assert "--point X Y a click on an object (x = column, y = row)" in help_text
    assert "the clicks outside every box make one object together" in help_text
    assert (
        "--negative-point X Y a click off an object (x = column, y = row): it refines the box it lies in" in help_text
    )
