"""Text prompts work on first use (issue 14, defect 4): a new user's default library gets the starter exemplar built
from the bundled nuclei sample, so "nuclei" answers on another bundled image, offline, with real LiteMedSAM."""

from __future__ import annotations

from importlib.resources import files

import numpy as np

from napari_promptseg._sample_data import nuclei_for_text
from napari_promptseg.cli import main
from napari_promptseg.io import read_image
from napari_promptseg.io.library import ReferenceLibrary, default_library_path
from napari_promptseg.methods.metrics import dice
from napari_promptseg.methods.text import segment_text


def test_first_text_prompt_is_answered_by_the_starter_library(litemedsam):
    assert not (default_library_path() / "library.json").exists()  # a new user (conftest: a fresh directory)
    (image, meta, _), (truth, _, _) = nuclei_for_text()
    result = segment_text(image, "nuclei", segmenter=litemedsam)
    assert result.route == "library" and "nucleus" in result.reason
    # measured 45 objects of 78, Dice 0.775 (the exemplar is the other bundled image)
    assert result.labels.max() >= 20 and dice(result.labels > 0, truth > 0) > 0.65
    # each object's own confidence, as `promptseg oneshot` gives it; every one was the entry's similarity (1.0 for
    # the exact name), which ranks no object above another
    assert result.matches[0].similarity == 1.0
    assert len(result.scores) == result.labels.max() and len(np.unique(result.scores)) > 5 and result.scores.max() < 1
    (entry,) = ReferenceLibrary.open().entries
    assert entry.name == "nucleus" and entry.instances
    # the bundled labels' ids are kept: touching nuclei stay apart (a binary mask's components merged them)
    bundled = read_image(files("napari_promptseg") / "sample_data" / "nuclei_dsb2018_labels.tif")
    assert len(np.unique(entry.labels())) == len(np.unique(bundled))


def test_starter_is_not_forced_back_and_one_command_restores_it(tmp_path, capsys):
    library = ReferenceLibrary.open()
    from napari_promptseg.io.starter import open_library

    assert [e.name for e in open_library().entries] == ["nucleus"]
    library.reload()
    library.remove("nucleus")
    assert len(open_library()) == 0  # the user removed it: it stays removed
    assert main(["library", "starter"]) == 0 and "added 'nucleus'" in capsys.readouterr().out
    assert main(["library", "starter"]) == 0 and "already there" in capsys.readouterr().out
    assert [e.name for e in ReferenceLibrary.open().entries] == ["nucleus"]
    elsewhere = tmp_path / "other"
    assert main(["library", "starter", "--library", str(elsewhere)]) == 0
    assert len(ReferenceLibrary.open(elsewhere)) == 1 and np.any(ReferenceLibrary.open(elsewhere).entries[0].mask())


def test_the_cli_answers_a_first_text_prompt_from_the_starter_library(tmp_path, capsys):
    """`promptseg text` named the default library up front (so a resume sees its entries change) and so opened it
    by path, which skipped the starter exemplar: a new user's first prompt failed with 'no entries'."""
    import json

    import tifffile

    assert not (default_library_path() / "library.json").exists()  # a new user
    (image, _, _), (truth, _, _) = nuclei_for_text()
    path = tmp_path / "nuclei.tif"
    tifffile.imwrite(path, image)
    assert main(["text", "nuclei", str(path), "-o", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["route"] == "library" and "nucleus" in report["images"][0]["reason"], report
    labels = tifffile.imread(tmp_path / "out" / "nuclei.tif")
    assert labels.max() >= 20 and dice(labels > 0, truth > 0) > 0.65


def test_a_first_library_add_or_import_into_the_default_library_keeps_the_starter(tmp_path, capsys):
    """README: the default library starts with 'nucleus'. A `library add` (or `import`) before any text prompt wrote
    the index without it, and the starter never came: 'nuclei' had no answer. They start the library as a prompt
    does (the Text widget's "Add exemplar" did already)."""
    import tifffile

    assert not (default_library_path() / "library.json").exists()  # a new user
    (image, _, _), (truth, _, _) = nuclei_for_text()
    tifffile.imwrite(tmp_path / "cells.tif", image)
    tifffile.imwrite(tmp_path / "cells_labels.tif", (truth == truth.max()).astype(np.uint8))
    argv = [
        "library",
        "add",
        "cell",
        "--image",
        str(tmp_path / "cells.tif"),
        "--mask",
        str(tmp_path / "cells_labels.tif"),
    ]
    assert main(argv) == 0
    assert ReferenceLibrary.open().names() == ["nucleus", "cell"]
    assert main([*argv, "--library", str(tmp_path / "mine")]) == 0  # a library folder named: only what is added
    assert ReferenceLibrary.open(tmp_path / "mine").names() == ["cell"]
    assert main(["library", "export", str(tmp_path / "mine.zip"), "--library", str(tmp_path / "mine")]) == 0
    ReferenceLibrary.open().remove("nucleus")
    (default_library_path() / "library.json").unlink()  # a new default library again, its first change an import
    assert main(["library", "import", str(tmp_path / "mine.zip")]) == 0
    assert ReferenceLibrary.open().names() == ["nucleus", "cell"]


def test_a_named_empty_librarys_error_gives_commands_that_fill_that_library(tmp_path, capsys):
    """`promptseg text nuclei IMG --library DIR` on a new DIR said to run `promptseg library starter` (or `library
    add ...`) without --library: run as told, they filled the default library, and the rerun failed the same way."""
    image = files("napari_promptseg") / "sample_data" / "nuclei_dsb2018_b.png"
    mine = tmp_path / "my library"
    argv = ["text", "nuclei", str(image), "--route", "library", "--library", str(mine), "-o", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "the reference library has no entries" in err, err
    command = err.split("`promptseg library starter")[1].split("`")[0]
    assert command == f" --library '{mine}'", err
    assert f"`promptseg library add NAME --image IMG --mask MASK --library '{mine}'`" in err, err
    assert main(["library", "starter", "--library", str(mine)]) == 0  # as told: the rerun finds the exemplar
    assert [e.name for e in ReferenceLibrary.open(mine).entries] == ["nucleus"]
