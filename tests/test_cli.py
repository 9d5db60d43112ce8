"""`promptseg segment` end to end on real images, through the installed console script and in-process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile

from napari_promptseg.cli import main
from napari_promptseg.io import read_mask
from napari_promptseg.methods.interactive import boxes_from_labels
from napari_promptseg.methods.metrics import dice

from .conftest import dataset_pairs


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
