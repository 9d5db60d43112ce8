"""Batch inputs as users name them and what a batch shows while it runs: inputs of one stem in two formats, folders
whose names hold pattern characters, and the progress of stacks segmented one after the other in this process.
Real EM and MRI pixels, the real LiteMedSAM."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import warnings
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr
from ome_zarr.format import FormatV04
from ome_zarr.writer import write_image

from napari_promptseg.batch import JOURNAL_NAME
from napari_promptseg.cli import main
from napari_promptseg.io import read_image
from napari_promptseg.io.images import is_own_output
from napari_promptseg.io.multiscale import open_multiscale

from .conftest import interrupt_at_first_record

BOX = ["--box", "30", "30", "90", "90"]


@pytest.fixture
def em(shared_data) -> np.ndarray:
    """A 128 px crop of a real EM image."""
    return read_image(shared_data / "em_isbi2012" / "images" / "0.png")[:128, :128]


def em_folder(em: np.ndarray, tmp_path: Path) -> Path:
    """A folder of three EM images (the shared one turned by 0, 90 and 180 degrees): em_0.png, em_1.png, em_2.png."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(3):
        iio.imwrite(inputs / f"em_{i}.png", np.rot90(em, i))
    return inputs


def report_of(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def test_a_png_and_an_ome_zarr_of_one_name_each_get_outputs_named_after_their_whole_name(em, tmp_path, capsys):
    """A folder holding slide.png and slide.ome.zarr (the same sample exported twice) was refused: '2 inputs would
    write the same output slide.tif', although nothing of the user's was at stake. Inputs sharing a stem are now
    each named after the whole file name (slide.png.tif, slide.ome.zarr.tif), said on stderr; inputs of one whole
    name (x.tif in two folders) are still refused, saying how to resolve it."""
    folder = tmp_path / "slides"
    root = zarr.open_group(str(folder / "slide.ome.zarr"), mode="w", zarr_format=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        write_image(em, root, axes="yx", fmt=FormatV04(), scale_factors=[2])
    iio.imwrite(folder / "slide.png", em)
    out = tmp_path / "out"
    command = ["segment", str(folder), *BOX, "--overlay", "-o", str(out)]
    assert main(command) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "slide.png -> slide.png.tif" in err and "slide.ome.zarr -> slide.ome.zarr.tif" in err, err
    records = {Path(r["input"]).name: r for r in report_of(out)["images"]}
    assert Path(records["slide.png"]["output"]) == out / "slide.png.tif"
    assert Path(records["slide.png"]["overlay"]) == out / "slide.png_overlay.png"
    assert Path(records["slide.ome.zarr"]["output"]) == folder / "slide.ome.zarr" / "labels" / "promptseg"
    assert Path(records["slide.ome.zarr"]["overlay"]) == out / "slide.ome.zarr_overlay.png"
    png_labels = tifffile.imread(out / "slide.png.tif")
    zarr_labels = np.asarray(open_multiscale(folder / "slide.ome.zarr" / "labels" / "promptseg").levels[0])
    assert png_labels.any() and np.array_equal(png_labels > 0, zarr_labels > 0)  # one image, one answer
    assert not (out / "slide.tif").exists()

    # a rerun replaces its own files, and a resume keeps both
    assert main(command) == 0 and is_own_output(out / "slide.png.tif")
    assert main([*command, "--resume"]) == 0
    assert report_of(out)["batch"]["resumed"] == 2
    capsys.readouterr()

    # one whole name in two folders: one output file, refused before any work, saying what to do
    other = tmp_path / "other"
    other.mkdir()
    iio.imwrite(other / "slide.png", em)
    refused = tmp_path / "refused"
    assert main(["segment", str(folder / "slide.png"), str(other / "slide.png"), *BOX, "-o", str(refused)]) == 2
    err = capsys.readouterr().err
    assert "2 inputs would write the same output" in err and "run them into separate output directories" in err
    assert not refused.exists()


def test_a_pattern_in_a_folder_whose_name_holds_brackets_finds_its_files(em, tmp_path, capsys, monkeypatch):
    """`promptseg segment "run[1]/*.png"` in a folder literally named run[1] (as acquisition software numbers runs)
    said 'no file matches': glob read [1] as a class of one character, matching a folder run1 only. A part of the
    pattern that names an existing folder as typed is that folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run[1]").mkdir()
    iio.imwrite(tmp_path / "run[1]" / "em.png", em)
    assert main(["segment", "run[1]/*.png", *BOX, "-o", "out"]) == 0, capsys.readouterr().err
    assert [Path(r["input"]).name for r in report_of(tmp_path / "out")["images"]] == ["em.png"]
    assert main(["segment", str(tmp_path / "run[1]" / "*.png"), *BOX, "-o", "out2"]) == 0  # absolute too
    capsys.readouterr()
    # the same pattern still matches as a pattern where no such folder exists
    (tmp_path / "run2").mkdir()
    iio.imwrite(tmp_path / "run2" / "em.png", em)
    assert main(["segment", "run[2]/*.png", *BOX, "-o", "out3"]) == 0, capsys.readouterr().err
    assert main(["segment", "run[1]/*.tif", *BOX, "-o", "out4"]) == 2
    assert "no file matches run[1]/*.tif" in capsys.readouterr().err


class Terminal(io.StringIO):
    """stderr as a terminal shows it: what a user sees is each line's last carriage-return segment."""

    def isatty(self) -> bool:
        return True


def test_stacks_segmented_here_show_their_planes_in_the_batch_progress_display(shared_data, tmp_path):
    """Two (Z, Y, X) stacks with --scheduler none on a terminal: each stack's per-plane progress was its own
    carriage-return line written over the batch's bar, leaving pieces of the bar behind it, and the bar over it in
    turn. The planes are now shown in the bar itself: one display."""
    scan = np.load(shared_data / "brain_mri_1vol" / "test_scan.npz")
    vol, truth = scan["vol"].astype(np.float32), scan["seg"] == 10  # the left thalamus
    z = int(np.argmax(truth.sum((1, 2))))
    rows, cols = np.nonzero(truth[z])
    box = [str(v) for v in (cols.min(), rows.min(), cols.max(), rows.max())]
    paths = [tmp_path / "mri_a.tif", tmp_path / "mri_b.tif"]
    for path, planes in zip(paths, (vol[z - 1 : z + 2], vol[z - 1 : z + 2][::-1]), strict=True):
        tifffile.imwrite(path, planes, imagej=True, metadata={"axes": "ZYX"})  # as Fiji saves a stack
    terminal = Terminal()
    command = ["segment", *map(str, paths), "--box", *box, "--plane", "1", "--propagate", "--scheduler", "none"]
    with contextlib.redirect_stderr(terminal):
        code = main([*command, "-o", str(tmp_path / "out")])
    shown = terminal.getvalue()
    assert code == 0, shown
    segments = [s.strip() for s in re.split(r"[\r\n]", shown) if s.strip()]
    planes = [s for s in segments if "plane" in s]
    assert planes, shown  # the planes are shown...
    assert all("/2 " in s and "image" in s for s in planes), planes  # ...within the bar of the two inputs
    assert not any(s.startswith(str(tmp_path)) for s in segments), segments  # no line of their own over it


def test_ctrl_c_in_a_batch_says_how_to_go_on(em, tmp_path, capsys):
    """Ctrl+C part-way through a folder said only 'promptseg segment: interrupted': nothing told the user that the
    finished images were kept, nor that --resume goes on without making them again (a rerun made all of them). It
    says both now, and --resume does."""
    inputs = em_folder(em, tmp_path)
    out = tmp_path / "out"
    command = ["segment", str(inputs), *BOX, "-o", str(out), "--scheduler", "none"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    run = interrupt_at_first_record(command, env, out / JOURNAL_NAME)
    stderr = run.stderr
    assert run.returncode == 130, stderr
    said = re.search(r"interrupted; (\d) input\(s\) finished are kept: run the same command with --resume", stderr)
    assert said, stderr
    assert main([*command, "--resume"]) == 0
    assert f"resuming: {said.group(1)} of 3 input(s) already done" in capsys.readouterr().err


def test_a_png_named_tif_is_read_as_the_png_it_holds(em, tmp_path, capsys):
    """A PNG saved or renamed as .tif (an exporter's choice, a user's rename) failed in a folder's batch: 'cannot be
    read as an image (not a TIFF file: header=b'\\x89PNG...')'. It is read by what it holds: the same labels as the
    PNG."""
    folder = tmp_path / "in"
    folder.mkdir()
    iio.imwrite(folder / "em.png", em)
    (folder / "em_renamed.tif").write_bytes((folder / "em.png").read_bytes())
    out = tmp_path / "out"
    assert main(["segment", str(folder), *BOX, "-o", str(out)]) == 0, capsys.readouterr().err
    labels = tifffile.imread(out / "em_renamed.tif")
    assert labels.any() and np.array_equal(labels, tifffile.imread(out / "em.tif"))


def test_a_broken_link_in_a_folder_is_said_to_be_one(em, tmp_path, capsys):
    """A folder holding a link to an image on an unmounted disk: its failure read 'no such file' for a file `ls`
    shows, and named directly 'input image not found'. Both now say it is a link and where it points."""
    folder = tmp_path / "images"
    folder.mkdir()
    iio.imwrite(folder / "a.png", em)
    (folder / "b.png").symlink_to(tmp_path / "unmounted" / "b.png")
    out = tmp_path / "out"
    assert main(["segment", str(folder), *BOX, "-o", str(out)]) == 1
    failed = [r for r in report_of(out)["images"] if r["status"] == "failed"]
    assert [Path(r["input"]).name for r in failed] == ["b.png"]
    assert f"a link to {tmp_path / 'unmounted' / 'b.png'}, which does not exist" in failed[0]["reason"]
    capsys.readouterr()
    assert main(["segment", str(folder / "b.png"), *BOX, "-o", str(out)]) == 2
    assert "a link to" in capsys.readouterr().err


def test_a_link_that_leads_back_to_itself_is_one_failed_input_not_a_crash(em, tmp_path, capsys):
    """A folder holding a loop of links (`ln -s loop.png loop.png`, or two links naming each other) stopped the
    whole batch with a Python traceback ('RuntimeError: Symlink loop') before any image ran. The loop is now one
    failed input that says what it is, and the folder's images are segmented."""
    folder = tmp_path / "images"
    folder.mkdir()
    iio.imwrite(folder / "a.png", em)
    (folder / "loop.png").symlink_to("loop.png")
    out = tmp_path / "out"
    assert main(["segment", str(folder), *BOX, "-o", str(out), "--scheduler", "none"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    records = {Path(r["input"]).name: r for r in report_of(out)["images"]}
    assert records["a.png"]["status"] == "ok"
    loop = records["loop.png"]
    assert loop["status"] == "failed"
    assert "a link that leads back to itself (a loop of links; it names loop.png)" in loop["reason"], loop


def test_an_inputs_error_names_it_alone_and_when_every_input_failed(em, tmp_path, capsys):
    """`promptseg segment "scans/*.png" --box ...` where the box lies outside the image: 'error: box 1: (200, 200,
    240, 240) lies outside the 128x128 image' named no file, for one input (its error is the run's) and for the first
    of a batch where every input failed ('every input failed; the first: box 1: ...'). Both name it now."""
    folder = tmp_path / "scans"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        iio.imwrite(folder / name, em)
    outside = ["--box", "200", "200", "240", "240"]
    assert main(["segment", str(folder / "a.png"), *outside, "-o", str(tmp_path / "one")]) == 2
    err = capsys.readouterr().err
    assert f"error: {folder / 'a.png'}: box 1: (200, 200, 240, 240) lies outside" in err, err
    assert main(["segment", str(folder), *outside, "-o", str(tmp_path / "all")]) == 2
    err = capsys.readouterr().err
    assert f"every input failed; the first: {folder / 'a.png'}: box 1" in err, err
    # the same box is outside on any attempt: recorded at once, not segmented again for a retry
    assert [record["attempts"] for record in report_of(tmp_path / "all")["images"]] == [1, 1]


def test_a_tiff_without_pages_is_said_once_per_read_not_at_every_look(em, tmp_path, caplog):
    """A TIFF cut after its header, in a folder: tifffile's '<tifffile.TiffFile 'x.tif'> contains no pages' was
    printed five times (the listing's look for our mark, each read's look for a pyramid, each read), before the
    batch's own line naming the file and why. The looks keep quiet now; its one read says it (a file that is no
    image is not read again for a retry)."""
    import logging

    folder = tmp_path / "scans"
    folder.mkdir()
    iio.imwrite(folder / "a.png", em)
    (folder / "cut.tif").write_bytes(b"II*\x00" + bytes(100))
    with caplog.at_level(logging.WARNING, logger="tifffile"):
        assert main(["segment", str(folder), *BOX, "-o", str(tmp_path / "out")]) == 1
    said = [r for r in caplog.records if r.name == "tifffile" and "contains no pages" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
    record = [r for r in report_of(tmp_path / "out")["images"] if r["status"] == "failed"][0]
    assert record["reason"] == f"{folder / 'cut.tif'}: cannot be read as an image (no pixels: shape (0,))"


def test_a_resume_with_every_input_done_reports_no_model_load_of_its_own(em, tmp_path):
    """A --resume that found every input done loaded no model, yet its report.json said 'model_load' of the earlier
    run (16.7 s) beside its own 'total' (1.3 s)."""
    image = tmp_path / "a.png"
    iio.imwrite(image, em)
    command = ["segment", str(image), *BOX, "-o", str(tmp_path / "out")]
    assert main(command) == 0
    assert report_of(tmp_path / "out")["timings_s"]["model_load"] is not None
    assert main([*command, "--resume"]) == 0
    report = report_of(tmp_path / "out")
    assert report["batch"]["resumed"] == 1 and report["timings_s"]["model_load"] is None


def test_ctrl_c_in_a_rerun_writes_its_own_report_not_the_earlier_runs(em, tmp_path, capsys, monkeypatch):
    """Ctrl+C part-way through a rerun with other options (another box) left the earlier run's report.json: it
    described the labels this run had already replaced (their box, objects, scores) as the earlier run's, and listed
    as done the inputs this run had not reached. report.json is now this run's: the inputs it finished, and the others
    marked interrupted; --resume goes on from there."""
    import napari_promptseg.batch.engine as engine

    inputs = em_folder(em, tmp_path)
    out = tmp_path / "out"
    command = ["segment", str(inputs), "-o", str(out), "--scheduler", "none"]
    assert main([*command, *BOX]) == 0, capsys.readouterr().err
    run_target = engine.run_target

    def interrupted_at_the_second(job, path, *args, **kwargs):
        if path.endswith("em_1.png"):
            raise KeyboardInterrupt  # as Ctrl+C arrives while the second image is segmented
        return run_target(job, path, *args, **kwargs)

    monkeypatch.setattr(engine, "run_target", interrupted_at_the_second)
    other_box = ["--box", "10", "10", "60", "60"]
    assert main([*command, *other_box]) == 130
    err = capsys.readouterr().err
    assert "interrupted; 1 input(s) finished are kept" in err, err
    report = report_of(out)
    assert report["parameters"]["boxes"] == [[10.0, 10.0, 60.0, 60.0]]  # this run's
    assert report["batch"]["interrupted"] is True
    status = {Path(r["input"]).name: r["status"] for r in report["images"]}
    assert status == {"em_0.png": "ok", "em_1.png": "interrupted", "em_2.png": "interrupted"}, status
    said = next(r["reason"] for r in report["images"] if r["status"] == "interrupted")
    assert "--resume" in said and "the em_1.tif there is not recorded as this run's result" in said, said
    monkeypatch.setattr(engine, "run_target", run_target)
    assert main([*command, *other_box, "--resume"]) == 0
    assert "resuming: 1 of 3 input(s) already done" in capsys.readouterr().err
    report = report_of(out)
    assert "interrupted" not in report["batch"] and {r["status"] for r in report["images"]} == {"ok"}
    assert not (out / JOURNAL_NAME).exists()


def test_ctrl_c_once_an_images_labels_are_written_still_records_them(em, tmp_path, capsys, monkeypatch):
    """Ctrl+C after an image's labels were written and before its record reached the journal left the file
    written but not recorded: the report called it interrupted ('the em_1.tif there is not recorded as this run's
    result') and --resume made it again. Writing the labels and recording them are one step to an interrupt: it
    stops the run once the record is in."""
    import signal

    from napari_promptseg.batch.journal import Journal

    inputs = em_folder(em, tmp_path)
    out = tmp_path / "out"
    command = ["segment", str(inputs), *BOX, "-o", str(out), "--scheduler", "none"]
    add = Journal.add

    def ctrl_c_before_the_second_record(self, **item):
        if "em_1.png" in (item.get("record") or {}).get("input", ""):
            assert (out / "em_1.tif").is_file()  # written, not yet recorded: the window
            signal.raise_signal(signal.SIGINT)  # Ctrl+C, as the terminal sends it
        return add(self, **item)

    monkeypatch.setattr(Journal, "add", ctrl_c_before_the_second_record)
    assert main(command) == 130
    assert "interrupted; 2 input(s) finished are kept" in capsys.readouterr().err
    status = {Path(r["input"]).name: r["status"] for r in report_of(out)["images"]}
    assert status == {"em_0.png": "ok", "em_1.png": "ok", "em_2.png": "interrupted"}, status
    monkeypatch.setattr(Journal, "add", add)
    assert main([*command, "--resume"]) == 0
    assert "resuming: 2 of 3 input(s) already done" in capsys.readouterr().err


def test_sigterm_in_a_batch_stops_it_as_ctrl_c_does(em, tmp_path, capsys, monkeypatch):
    """SIGTERM (a cluster's time limit: SLURM sends it before SIGKILL; `timeout`, `kill`, a container stopped) ended
    the run at once without a word: no report.json, no hint that --resume goes on, the Dask cluster and a label file's
    temporary copy left as they were. It stops the run as Ctrl+C does, and says so (exit 143, as a shell reports it)."""
    import signal

    import napari_promptseg.batch.engine as engine

    inputs = em_folder(em, tmp_path)
    out = tmp_path / "out"
    command = ["segment", str(inputs), *BOX, "-o", str(out), "--scheduler", "none"]
    run_target = engine.run_target

    def terminated_at_the_second(job, path, *args, **kwargs):
        if path.endswith("em_1.png"):
            os.kill(os.getpid(), signal.SIGTERM)
        return run_target(job, path, *args, **kwargs)

    def unhandled(signum, frame):  # SIGTERM's default would end this test process
        raise RuntimeError("SIGTERM reached the test's own handler")

    monkeypatch.setattr(engine, "run_target", terminated_at_the_second)
    before = signal.signal(signal.SIGTERM, unhandled)
    try:
        code = main(command)
    finally:
        assert signal.getsignal(signal.SIGTERM) is unhandled  # the run put back the handler it found
        signal.signal(signal.SIGTERM, before)
    err = capsys.readouterr().err
    assert code == 143, err
    assert "promptseg segment: terminated (SIGTERM); 1 input(s) finished are kept" in err, err
    assert report_of(out)["batch"]["interrupted"] is True
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(engine, "run_target", run_target)
    assert main([*command, "--resume"]) == 0
    assert "resuming: 1 of 3 input(s) already done" in capsys.readouterr().err


def test_a_rerun_removes_the_temporary_files_a_killed_run_left_in_the_output_folder(em, tmp_path, capsys):
    """A label TIFF is written to a hidden temporary file, then renamed: a run killed while writing it (SIGKILL, the
    OOM killer, a power cut: nothing of it runs) left that file, as large as the labels (GBs for a slide), and no
    later run removed it. A run into the folder removes those of its own outputs (it holds the folder's lock: no
    other run writes there), and nothing else."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    iio.imwrite(inputs / "em_0.png", em)
    out = tmp_path / "out"
    out.mkdir()
    left = [out / ".em_0.tif.0123456789ab.tmp", out / ".report.json.0123456789ab.tmp"]
    for path in left:
        path.write_bytes(b"II*\0" + bytes(1000))  # cut short, as the kill left it
    others = [out / ".other.tif.0123456789ab.tmp", out / ".em_0.tif.notours.tmp", out / ".mine"]
    for path in others:
        path.write_bytes(b"kept")
    assert main(["segment", str(inputs), *BOX, "-o", str(out), "--scheduler", "none"]) == 0
    assert not [p.name for p in left if p.exists()]
    assert all(p.read_bytes() == b"kept" for p in others)
    assert "removed 2 temporary file(s) of a run killed while writing" in capsys.readouterr().err


def test_the_output_folder_inside_the_input_folder_is_not_said_to_be_a_skipped_subfolder(em, tmp_path, capsys):
    """`promptseg segment FOLDER -o FOLDER/labels` said 'FOLDER: skipped 1 subfolder(s), not searched (name them too,
    e.g. FOLDER/*/): labels' on its first run (the run had just made it), and again after a killed run (no
    report.json there yet): it asked the user to name the folder of its own outputs as inputs."""
    folder = tmp_path / "images"
    folder.mkdir()
    iio.imwrite(folder / "em_0.png", em)
    (folder / "other").mkdir()  # a subfolder of the user's: still said
    command = ["segment", str(folder), *BOX, "-o", str(folder / "labels"), "--scheduler", "none"]
    assert main(command) == 0
    err = capsys.readouterr().err
    assert "skipped 1 subfolder(s)" in err and err.count("other") == 1 and "labels" not in err, err
    killed = folder / "killed"  # a killed run's: its journal, no report.json yet
    killed.mkdir()
    (killed / JOURNAL_NAME).write_text('{"signature": "x"}\n')
    assert main([*command[:-4], "-o", str(folder / "labels"), "--scheduler", "none"]) == 0
    err = capsys.readouterr().err
    assert "killed" not in err and "labels" not in err, err
    from napari_promptseg.cli._outputs import OUTPUT_LOCK
    from napari_promptseg.io.listing import RUN_FILES

    assert {"report.json", JOURNAL_NAME, OUTPUT_LOCK} <= set(RUN_FILES)  # the listing's names are the run's


def test_an_input_with_no_object_has_its_reason_in_the_report(em, tmp_path, capsys):
    """An image whose boxes found nothing (a blank field: its box covers pixels of one value) got status "empty" and
    reason null in report.json; the why was only among its warnings, where a script reading the reasons of the
    images without output did not look (the README: 'the reason is recorded in report.json (status, reason)')."""
    folder = tmp_path / "in"
    folder.mkdir()
    iio.imwrite(folder / "em.png", em)
    iio.imwrite(folder / "blank.png", np.zeros_like(em))
    out = tmp_path / "out"
    assert main(["segment", str(folder), *BOX, "-o", str(out), "--scheduler", "none"]) == 0, capsys.readouterr().err
    records = {Path(r["input"]).name: r for r in report_of(out)["images"]}
    assert records["blank.png"]["status"] == "empty"
    assert "box 1 covers pixels of one value" in records["blank.png"]["reason"], records["blank.png"]
    assert records["em.png"]["status"] == "ok" and "reason" not in records["em.png"]


def test_an_image_too_small_for_the_model_gets_no_object_and_says_why(em, tmp_path, capsys):
    """An 8 px or a 48 px frame of noise in a batch came back with confident objects (a box's predicted IoU 0.89;
    the text route's library: 8 objects of score 1.0 on 32 px of noise), as the real image did: enlarged 32x or
    5x to fill the model's 256 px input, each pixel spans several of its feature cells, and the interpolated
    blobs pass for objects. Such an image is now empty, with that reason in report.json; a real image next to it,
    and one of the 64 px the model's grid needs, are segmented as before."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "in"
    folder.mkdir()
    iio.imwrite(folder / "em.png", em)
    iio.imwrite(folder / "em64.png", em[:64, :64])
    iio.imwrite(folder / "noise8.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    iio.imwrite(folder / "noise48.png", rng.integers(0, 256, (48, 48), dtype=np.uint8))
    out = tmp_path / "out"
    box = ["--box", "1", "1", "7", "7"]
    assert main(["segment", str(folder), *box, "-o", str(out), "--scheduler", "none"]) == 0, capsys.readouterr().err
    records = {Path(r["input"]).name: r for r in report_of(out)["images"]}
    for name, size in (("noise8.png", "8 x 8 px"), ("noise48.png", "48 x 48 px")):
        record = records[name]
        assert record["status"] == "empty" and record["objects"] == 0, record
        assert f"{size}, smaller than the 64 px" in record["reason"] and "litemedsam" in record["reason"], record
        assert not tifffile.imread(record["output"]).any()
    assert [records[n]["status"] for n in ("em.png", "em64.png")] == ["ok", "ok"]


def test_a_rerun_whose_inputs_now_share_a_stem_takes_out_the_label_file_of_the_old_name(em, tmp_path, capsys):
    """A folder segmented with a.tif alone gave OUT/a.tif; once a.png joined it (the same sample exported again), a
    rerun named a.tif's labels OUT/a.tif.tif, and OUT/a.tif stayed: the earlier run's labels under the name the user
    looks for (OUT/<stem>.tif), passing for this run's. It goes, said, as an earlier run's file this run did not write;
    a --resume that keeps a.tif's earlier record keeps it."""
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", em)
    out = tmp_path / "out"
    command = ["segment", str(folder), *BOX, "-o", str(out), "--scheduler", "none"]
    assert main(command) == 0
    iio.imwrite(folder / "a.png", np.rot90(em))
    assert main([*command, "--resume"]) == 0  # a.tif kept as it was: its record names OUT/a.tif
    assert (out / "a.tif").exists() and (out / "a.png.tif").exists()
    capsys.readouterr()
    assert main(command) == 0
    err = capsys.readouterr().err
    assert sorted(p.name for p in out.glob("*.tif")) == ["a.png.tif", "a.tif.tif"], err
    assert "removed 1 file(s) of an earlier run that this run did not write" in err and "a.tif" in err, err


def test_a_tiff_of_several_images_says_that_only_its_first_is_read(litemedsam, tmp_path, capsys):
    """An OME-TIFF of two images (two positions of a plate, a multi-series export) was read as its first image by
    every command and by the plugin, without a word of the second. The run's report and the plugin say so, naming
    how many images the file holds and which one is read."""
    from skimage import data

    from napari_promptseg.io.layer_data import tiff_layer_data

    path = tmp_path / "positions.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(data.coins()[:128, :128], metadata={"axes": "YX", "Name": "A1"})
        tif.write(data.camera()[:96, :96], metadata={"axes": "YX", "Name": "A2"})
    out = tmp_path / "out"
    assert main(["segment", str(path), "--box", "10", "10", "60", "60", "-o", str(out), "--scheduler", "none"]) == 0
    [record] = json.loads((out / "report.json").read_text())["images"]
    said = "holds 2 images (TIFF series: A1, A2); only the first (A1, (128, 128)) is read"
    assert any(said in warning for warning in record["warnings"]), record["warnings"]
    assert said in capsys.readouterr().err
    [(_, kwargs, _)] = tiff_layer_data(path)
    assert said in kwargs["metadata"]["left_out"]


def test_a_file_that_is_no_image_is_recorded_at_once_a_transient_read_error_retried(em, tmp_path, monkeypatch):
    """A folder with a file that cannot be read as an image (not an image, cut short): it was read again for a retry
    that could only say the same ('attempts': 2). It is recorded at its first read; an OSError of the file system
    (EIO: a network share's hiccup) still gets the retry, which may read it."""
    import errno

    from napari_promptseg.errors import PromptsegError
    from napari_promptseg.io import multiscale

    folder = tmp_path / "in"
    folder.mkdir()
    iio.imwrite(folder / "a.png", em)
    (folder / "b.tif").write_bytes(b"II*\x00 not really a TIFF")
    reads = []
    read = multiscale.read_image_named

    def counted(path, *args, **kwargs):
        reads.append(Path(path).name)
        if Path(path).name == "a.png" and reads.count("a.png") == 1:  # the share's hiccup, as read_image says it
            hiccup = OSError(errno.EIO, "Input/output error", str(path))
            raise PromptsegError(f"{path}: cannot be read as an image ({hiccup})") from hiccup
        return read(path, *args, **kwargs)

    monkeypatch.setattr(multiscale, "read_image_named", counted)
    out = tmp_path / "out"
    assert main(["segment", str(folder), *BOX, "-o", str(out), "--scheduler", "none"]) == 1
    records = {Path(r["input"]).name: r for r in report_of(out)["images"]}
    assert records["b.tif"]["status"] == "failed" and records["b.tif"]["attempts"] == 1, records["b.tif"]
    assert "cannot be read as an image" in records["b.tif"]["reason"]
    assert records["a.png"]["status"] == "ok" and sorted(reads) == ["a.png", "a.png", "b.tif"], reads


def test_the_readmes_example_of_inputs_that_would_write_one_output_is_refused(em, tmp_path, capsys):
    """The README's example of inputs whose outputs overwrite each other ('a.tif and a.png both give OUT/a.tif')
    ran: such inputs are each named after their whole file name since (a.png.tif, a.tif.tif). Its example, run as
    written, must be refused (exit 2, before any work) naming the output they share."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    first, second, shared = re.search(
        r"each other \(`([^`]+)` and `([^`]+)` both give `OUT/([^`]+)`[;)]", readme
    ).groups()
    for name in (first, second):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tifffile.imwrite if name.endswith(".tif") else iio.imwrite)(tmp_path / name, em)
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / first), str(tmp_path / second), *BOX, "-o", str(out)]) == 2
    assert f"would write the same output {out / shared}" in capsys.readouterr().err
    assert not out.exists()
