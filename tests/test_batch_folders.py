"""Folder batches as a microscopist runs them on a real, messy folder: the outputs of one run are never lost to
another, and inputs are found as the user named them. Real EM pixels, the real LiteMedSAM."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from ome_zarr.format import FormatV04
from ome_zarr.writer import write_image

from napari_promptseg.cli import main
from napari_promptseg.io import read_image
from napari_promptseg.io.multiscale import open_multiscale


@pytest.fixture
def em_zarr(shared_data, tmp_path) -> Path:
    """A 2-level OME-Zarr of a 256 px crop of a real EM image, in a folder of inputs."""
    em = read_image(shared_data / "em_isbi2012" / "images" / "0.png")[:256, :256]
    path = tmp_path / "slides" / "em.ome.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        write_image(em, root, axes="yx", fmt=FormatV04(), scale_factors=[2])
    return path


def zarr_labels(path: Path, name: str = "promptseg") -> np.ndarray:
    return np.asarray(open_multiscale(path / "labels" / name).levels[0])


def test_a_run_into_another_output_folder_keeps_the_labels_an_ome_zarr_holds_for_the_first(em_zarr, tmp_path, capsys):
    """Two runs over one folder holding an OME-Zarr, into two -o folders (comparing prompts, or segment against
    oneshot): the second replaced the first's labels in the OME-Zarr without a word (both are labels/promptseg), so
    the first run's report.json, and its --resume, named labels the other run made."""
    folder = em_zarr.parent
    first, second = tmp_path / "boxes_small", tmp_path / "boxes_large"
    assert main(["segment", str(folder), "--box", "60", "60", "120", "120", "-o", str(first)]) == 0
    labels = zarr_labels(em_zarr)
    assert labels.any()
    record = json.loads((first / "report.json").read_text())["images"][0]
    assert Path(record["output"]) == em_zarr / "labels" / "promptseg"
    capsys.readouterr()

    assert main(["segment", str(folder), "--box", "20", "20", "200", "200", "-o", str(second)]) == 2
    error = capsys.readouterr().err
    assert "labels/promptseg" in error and str(first) in error and "--labels-name" in error
    np.testing.assert_array_equal(zarr_labels(em_zarr), labels)  # the first run's labels, as it wrote them

    # its own name keeps both; a rerun into the first folder replaces that run's labels, as before
    large = ["--box", "20", "20", "200", "200", "--labels-name", "large"]
    assert main(["segment", str(folder), *large, "-o", str(second)]) == 0
    assert zarr_labels(em_zarr, "large").any()
    np.testing.assert_array_equal(zarr_labels(em_zarr), labels)
    assert main(["segment", str(folder), "--box", "20", "20", "200", "200", "-o", str(first)]) == 0
    np.testing.assert_array_equal(zarr_labels(em_zarr), zarr_labels(em_zarr, "large"))


@pytest.fixture
def em_pngs(shared_data, tmp_path) -> Path:
    """A folder of two 128 px crops of real EM images, as PNG, with a note beside them."""
    import imageio.v3 as iio

    folder = tmp_path / "em images"
    folder.mkdir()
    for name in ("0", "1"):
        iio.imwrite(
            folder / f"em {name}.png", read_image(shared_data / "em_isbi2012" / "images" / f"{name}.png")[:128, :128]
        )
    (folder / "notes.txt").write_text("imaged 2026-12-03")
    return folder


BOX = ["--box", "30", "30", "90", "90"]


def inputs_of(out: Path) -> list[str]:
    return [Path(r["input"]).name for r in json.loads((out / "report.json").read_text())["images"]]


def test_a_quoted_pattern_is_the_files_it_matches(em_pngs, tmp_path, capsys):
    """`promptseg segment "images/*.png"` (a pattern the shell did not expand: quoted, or Windows' cmd and
    PowerShell, which never expand one) was refused as 'input image not found: images/*.png'. The pattern is now
    the files it matches, sorted; a pattern that matches nothing says so."""
    out = tmp_path / "out"
    assert main(["segment", str(em_pngs / "*.png"), *BOX, "-o", str(out)]) == 0, capsys.readouterr().err
    assert inputs_of(out) == ["em 0.png", "em 1.png"]
    capsys.readouterr()
    assert main(["segment", str(em_pngs / "*.tif"), *BOX, "-o", str(tmp_path / "none")]) == 2
    assert f"no file matches {em_pngs / '*.tif'}" in capsys.readouterr().err


def test_a_second_run_over_the_files_a_shell_pattern_names_leaves_the_first_runs_outputs_out(em_pngs, tmp_path, capsys):
    """`promptseg segment images/*.png -o images --overlay`, run twice: the shell's list held the first run's overlay
    PNGs, which the second run took for inputs (refused: 'its output em 0_overlay.png would overwrite the input'; into
    another -o, segmented as images). A folder given whole never read them; files named one by one no longer do."""
    shell_list = [str(p) for p in sorted(em_pngs.glob("*.png"))]
    command = ["segment", *BOX, "--overlay", "-o", str(em_pngs)]
    assert main([*command, *shell_list]) == 0
    assert (em_pngs / "em 0_overlay.png").is_file()
    capsys.readouterr()

    shell_list = [str(p) for p in sorted(em_pngs.glob("*.png"))]  # the same pattern, typed again
    assert len(shell_list) == 4
    assert main([*command, *shell_list]) == 0, capsys.readouterr().err
    assert inputs_of(em_pngs) == ["em 0.png", "em 1.png"]
    err = capsys.readouterr().err
    assert "skipped 2 file(s) promptseg wrote" in err and "em 0_overlay.png" in err
    assert main(["segment", *BOX, "-o", str(tmp_path / "elsewhere"), *shell_list]) == 0
    assert inputs_of(tmp_path / "elsewhere") == ["em 0.png", "em 1.png"]


def test_the_reference_mask_kept_beside_the_targets_is_no_target(em_pngs, shared_data, tmp_path, capsys):
    """`promptseg oneshot images/ --reference images/ref.png --reference-mask images/ref_mask.png`: the mask kept
    in the targets' folder was segmented as one more target (its own labels and record in report.json). It is the
    reference's mask: left out, and said to be."""
    import imageio.v3 as iio

    em = shared_data / "em_isbi2012"
    iio.imwrite(em_pngs / "ref.png", read_image(em / "images" / "2.png")[:128, :128])
    iio.imwrite(em_pngs / "ref_mask.png", read_image(em / "masks" / "2.png")[:128, :128])
    out = tmp_path / "out"
    reference = ["--reference", str(em_pngs / "ref.png"), "--reference-mask", str(em_pngs / "ref_mask.png")]
    assert main(["oneshot", str(em_pngs), *reference, "--no-instances", "-o", str(out)]) == 0
    assert inputs_of(out) == ["em 0.png", "em 1.png", "ref.png"]
    assert not (out / "ref_mask.tif").exists()
    assert f"skipped the --reference-mask {em_pngs / 'ref_mask.png'}" in capsys.readouterr().err


def test_a_rerun_that_fails_on_an_ome_zarr_takes_the_earlier_runs_labels_out_of_it(em_zarr, tmp_path, capsys):
    """A rerun into the same -o that failed on an OME-Zarr input removed that input's earlier label TIFF (it would
    pass for this run's result), but left the earlier run's labels/promptseg in the OME-Zarr: napari showed them
    with the image while report.json said the input failed. They go now (only this -o's own, as written), and the
    record says so."""
    import zarr as zarr_module

    out = tmp_path / "out"
    command = ["segment", str(em_zarr), "--box", "60", "60", "120", "120", "-o", str(out)]
    assert main(command) == 0
    assert zarr_labels(em_zarr).any()
    capsys.readouterr()

    assert main([*command, "--channels", "2"]) == 2  # a grey image has no channel 2: this run's own error
    err = capsys.readouterr().err
    assert "channel" in err and "removed labels/promptseg of an earlier run" in err
    assert not (em_zarr / "labels" / "promptseg").exists()
    assert "promptseg" not in zarr_module.open_group(str(em_zarr / "labels"), mode="r").attrs.get("labels", [])
    assert json.loads((out / "report.json").read_text())["images"][0]["status"] == "failed"
    assert main(command) == 0  # and a later run writes them again
    assert zarr_labels(em_zarr).any()


def test_every_pair_of_inputs_that_would_write_one_output_is_named(em_pngs, tmp_path, capsys):
    """Two pairs of inputs sharing output names (em 0.png and x.tif, each in two folders), with --overlay: the
    refusal named the first pair only, then '(and 2 more such clash(es))', one of which was that pair's overlay, so
    the user renamed, reran and was refused again. Every pair is named now, once."""
    import shutil

    import tifffile

    tifffile.imwrite(em_pngs / "x.tif", read_image(em_pngs / "em 0.png"))
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("em 0.png", "x.tif"):
        shutil.copy(em_pngs / name, copy / name)
    assert main(["segment", str(em_pngs), str(copy), *BOX, "--overlay", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{em_pngs / 'em 0.png'}, {copy / 'em 0.png'}" in err
    assert f"{em_pngs / 'x.tif'}, {copy / 'x.tif'} (x.tif)" in err
    assert "more such" not in err and not (tmp_path / "out").exists()


def test_an_ome_zarr_whose_metadata_cannot_be_read_is_a_failed_input_not_a_skipped_folder(em_zarr, tmp_path, capsys):
    """An OME-Zarr whose .zattrs was cut short (a copy interrupted) was taken for a plain subfolder: in a folder,
    'skipped 1 subfolder(s), not searched (name them too ...)', and the slide missing from a run that exited 0;
    named, 'no image files in em.ome.zarr'. It is an input that failed now, with the reason."""
    import tifffile

    tifffile.imwrite(em_zarr.parent / "em level 1.tif", np.asarray(open_multiscale(em_zarr).levels[1]))
    attrs = em_zarr / ".zattrs"
    attrs.write_text(attrs.read_text()[:40])
    out = tmp_path / "out"
    assert main(["segment", str(em_zarr.parent), *BOX, "-o", str(out)]) == 1  # an input without output
    err = capsys.readouterr().err
    assert "subfolder" not in err
    segmented, failed = json.loads((out / "report.json").read_text())["images"]
    assert segmented["status"] == "ok" and failed["input"] == str(em_zarr) and failed["status"] == "failed"
    assert ".zattrs" in failed["reason"] and "JSON" in failed["reason"], failed["reason"]

    assert main(["segment", str(em_zarr), *BOX, "-o", str(tmp_path / "alone")]) == 2
    err = capsys.readouterr().err
    assert ".zattrs" in err and "no image files" not in err, err


def test_the_library_routes_warnings_name_the_image_in_the_report(em_pngs, tmp_path):
    """`promptseg text nuclei FOLDER --route library` on EM images (no nuclei): each record's warnings said 'image:
    no object like the exemplars was found', a name no script collecting the report's warnings can place. They name
    the input."""
    out = tmp_path / "out"
    assert main(["text", "nuclei", str(em_pngs / "em 0.png"), "--route", "library", "-o", str(out)]) == 0
    record = json.loads((out / "report.json").read_text())["images"][0]
    assert record["objects"] == 0 and record["warnings"], record
    assert all(w.startswith(str(em_pngs / "em 0.png")) for w in record["warnings"]), record["warnings"]


def test_a_rerun_without_overlay_takes_out_the_overlays_of_the_earlier_run(em_pngs, tmp_path, capsys):
    """`segment FOLDER --overlay -o OUT`, then the same folder with other boxes and no --overlay: OUT/x_overlay.png
    still drew the first run's objects beside the second run's labels, as if it were this run's (only a failed or
    empty input's overlay was taken out). An overlay this run drew none of goes, and stderr and its record say so."""
    out = tmp_path / "out"
    assert main(["segment", str(em_pngs), *BOX, "--overlay", "-o", str(out)]) == 0
    assert (out / "em 0_overlay.png").is_file() and (out / "em 1_overlay.png").is_file()
    capsys.readouterr()
    assert main(["segment", str(em_pngs), "--box", "10", "10", "50", "50", "-o", str(out)]) == 0
    assert not (out / "em 0_overlay.png").exists() and not (out / "em 1_overlay.png").exists()
    assert "removed 2 file(s) of an earlier run" in capsys.readouterr().err  # said, not only in report.json
    records = json.loads((out / "report.json").read_text())["images"]
    assert all(r["status"] == "ok" and "removed" in " ".join(r["warnings"]) for r in records)


def test_a_resume_does_not_write_over_labels_drawn_into_a_failed_inputs_empty_image(em_pngs, tmp_path, capsys):
    """A failed input gets an empty label image; the user draws its objects by hand into that file. A --resume (to
    take in new images) ran the failed input again and wrote a new empty image over the drawing without a word: a
    resume took every file its report listed for replaceable, though it keeps only the finished inputs' as they
    are. A rerun refused it; a resume now does too, before any work."""
    import imageio.v3 as iio

    iio.imwrite(em_pngs / "small.png", read_image(em_pngs / "em 0.png")[:64, :64])
    out = tmp_path / "out"
    command = ["segment", str(em_pngs), *BOX, "--point", "100", "100", "-o", str(out)]
    assert main(command) == 0  # small.png: the point lies outside it, an empty label image and its reason
    records = {Path(r["input"]).name: r for r in json.loads((out / "report.json").read_text())["images"]}
    assert records["small.png"]["status"] == "failed" and records["em 0.png"]["status"] == "ok"
    drawn = np.zeros((64, 64), np.uint16)
    drawn[10:30, 10:30] = 1
    tifffile.imwrite(out / "small.tif", drawn)  # saved from napari: without promptseg's mark
    capsys.readouterr()
    assert main([*command, "--resume"]) == 2
    assert "small.tif" in capsys.readouterr().err
    np.testing.assert_array_equal(tifffile.imread(out / "small.tif"), drawn)

    # a finished input's corrected labels are still kept by a resume, in an -o moved since too
    moved = tmp_path / "moved"
    out.rename(moved)
    (moved / "small.tif").unlink()
    corrected = tifffile.imread(moved / "em 0.tif")
    corrected[:4, :4] = 9
    tifffile.imwrite(moved / "em 0.tif", corrected)
    assert main([*command[:-1], str(moved), "--resume"]) == 0, capsys.readouterr().err
    assert tifffile.imread(moved / "em 0.tif")[0, 0] == 9


def test_an_earlier_runs_output_folder_given_as_input_says_why_it_has_no_images(tmp_path, capsys):
    """`promptseg segment OUT/` on a run's -o folder said 'no image files in OUT' beside its .tif and .png files
    (its labels and overlays, left out without a word; only report.json was said to be skipped). It says that the
    folder holds promptseg's outputs only, and which."""
    from skimage import data

    from napari_promptseg.io import write_labels, write_overlay

    out = tmp_path / "out"
    labels = np.zeros((64, 64), np.uint16)
    labels[10:20, 10:20] = 1
    write_labels(out / "coins.tif", labels)
    write_overlay(out / "coins_overlay.png", data.coins()[:64, :64], labels)
    (out / "report.json").write_text("{}")
    assert main(["segment", str(out), "--box", "1", "1", "9", "9", "-o", str(tmp_path / "again")]) != 0
    said = capsys.readouterr().err
    assert "holds only files promptseg wrote (labels and overlays of an earlier run, not images to segment)" in said
    assert "coins.tif" in said and "coins_overlay.png" in said
