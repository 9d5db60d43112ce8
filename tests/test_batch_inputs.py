"""Batch inputs as users name them: folders whose names hold pattern characters. Real EM pixels, the real
LiteMedSAM."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from napari_promptseg.cli import main
from napari_promptseg.io import read_image

BOX = ["--box", "30", "30", "90", "90"]


@pytest.fixture
def em(shared_data) -> np.ndarray:
    """A 128 px crop of a real EM image."""
    return read_image(shared_data / "em_isbi2012" / "images" / "0.png")[:128, :128]


def report_of(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


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
