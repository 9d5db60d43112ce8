"""Which channels a trained text model's images are read with, said alike by Python, the CLI and report.json, for
arrays and for files whose metadata names their channel axis (ImageJ hyperstacks, OME-TIFF) wherever it lies; and
what a CLIPSeg fine-tune says of a weights folder with no model in it.

One text model, trained one epoch on two real Kvasir frames given as (C, Y, X) with channels [2, 0] picked (blue,
then red): a reading that feeds the wrong channels, or the right ones in the wrong order, changes the answer.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_promptseg.cli import main
from napari_promptseg.errors import WeightsError
from napari_promptseg.methods.text import segment_text
from napari_promptseg.methods.text.trained_channels import MODEL_READING
from napari_promptseg.methods.text_training import finetune_clipseg, train_text_segmenter

from .test_text_training import _write_csv, cache, kvasir  # noqa: F401 (fixtures)

PICKED = [2, 0]
THRESHOLD = 0.1  # a model of one epoch: its faint answer, found


@pytest.fixture(scope="module")
def picked_model(kvasir, cache, tmp_path_factory):  # noqa: F811
    """A text model trained on (C, Y, X) frames, channel axis 0, channels [2, 0] fed to it."""
    arrays = [
        (np.ascontiguousarray(t.load()[0][::2, ::2].transpose(2, 0, 1)), t.load()[1][::2, ::2], "polyp", s)
        for t, s in ((kvasir[0], "train"), (kvasir[4], "val"))
    ]
    out = tmp_path_factory.mktemp("models") / "picked"
    train_text_segmenter(arrays, out, channel_axis=0, channels=PICKED, cache_dir=cache, device="cpu", epochs=1)
    return out


@pytest.fixture(scope="module")
def frames(kvasir):  # noqa: F811
    """Two frames not trained on, (C, Y, X), small."""
    return [np.ascontiguousarray(t.load()[0][::4, ::4][:128, :128].transpose(2, 0, 1)) for t in kvasir[1:3]]


@pytest.fixture(scope="module")
def answers(picked_model, frames):
    """segment_text's answer to each frame given as a (C, Y, X) array, the model's reading applied."""
    return [
        segment_text(f, "polyp", text_model=picked_model, device="cpu", heatmap_threshold=THRESHOLD) for f in frames
    ]


def test_segment_text_says_which_channels_it_read_the_image_with(picked_model, frames, answers):
    """The CLI's report.json said which channels the model's training applied to an image (``image_channels``), the
    Python result did not: a user of segment_text could not tell that channels [2, 0] of axis 0 were fed. The result
    carries the same record, and its summary too; one given, and one completed by the model, are told apart."""
    first = answers[0]
    assert first.image_channels == {"channel_axis": 0, "channels": PICKED, "from": MODEL_READING}
    assert first.summary()["image_channels"] == first.image_channels
    hwc = frames[0].transpose(1, 2, 0)
    completed = segment_text(
        hwc, "polyp", text_model=picked_model, device="cpu", channel_axis=-1, heatmap_threshold=THRESHOLD
    )
    assert completed.image_channels == {
        "channel_axis": -1,
        "channels": PICKED,
        "from": f"given, completed by {MODEL_READING}",
    }
    assert np.array_equal(completed.heatmap, first.heatmap)  # the same channels, in the same order
    swapped = segment_text(frames[0][::-1].copy(), "polyp", text_model=picked_model, device="cpu")
    assert not np.array_equal(swapped.heatmap, first.heatmap)  # the order matters: the test can fail


@pytest.mark.parametrize(
    ("name", "write"),
    [
        ("imagej.tif", lambda path, zcyx: tifffile.imwrite(path, zcyx, imagej=True, metadata={"axes": "ZCYX"})),
        (
            "czyx.ome.tif",
            lambda path, zcyx: tifffile.imwrite(path, zcyx.transpose(1, 0, 2, 3), ome=True, metadata={"axes": "CZYX"}),
        ),
    ],
)
def test_a_hyperstack_whose_file_names_its_channel_axis_is_fed_the_models_channels(
    picked_model, frames, answers, tmp_path, capsys, name, write
):
    """A stack whose channel axis the file names (an ImageJ ZCYX hyperstack, an OME-TIFF CZYX) is read with its
    channels last, not where the model's training had them (axis 0): each plane is fed channels [2, 0] of that axis,
    as segment_text feeds the (C, Y, X) frames. Its record in report.json said nothing of the channels applied
    (``image_channels`` was missing for such a stack; a (C, Y, X) file's said them)."""
    path = tmp_path / name
    write(path, np.stack(frames))
    out = tmp_path / "out"
    argv = ["text", "polyp", str(path), "-o", str(out), "--text-model", str(picked_model), "--device", "cpu"]
    assert main([*argv, "--heatmap-threshold", str(THRESHOLD)]) == 0, capsys.readouterr().err
    labels = tifffile.imread(out / f"{name.split('.')[0]}.tif")
    assert labels.shape == (2, 128, 128)
    for plane, answer in zip(labels, answers, strict=True):
        assert np.array_equal(plane > 0, answer.labels > 0)
    [record] = json.loads((out / "report.json").read_text())["images"]
    assert record["image_channels"] == {"channel_axis": -1, "channels": PICKED, "from": MODEL_READING}, record


def test_a_clipseg_fine_tune_given_an_empty_weights_folder_says_how_to_fill_it(kvasir, tmp_path, capsys):  # noqa: F811
    """`train-text --clipseg --clipseg-weights FOLDER` with an empty folder (weights not there yet, offline) said
    'clipseg: FOLDER is not a complete CLIPSeg model directory: missing config.json; ...': not the model it wants,
    nor how to get it. It names clipseg_rd64_refined, the folder, and the `hf download` command that fills it, as
    the registry's missing-weights message does, and where the model is published."""
    empty = tmp_path / "clipseg-weights"
    empty.mkdir()
    with pytest.raises(WeightsError) as raised:
        finetune_clipseg(kvasir, tmp_path / "m", weights=empty, epochs=1, device="cpu")
    said = str(raised.value)
    assert said.startswith(f"clipseg_rd64_refined: {empty} ") and "missing config.json" in said, said
    assert "hf download CIDAS/clipseg-rd64-refined --revision " in said and f"--local-dir {empty}" in said, said
    assert "https://huggingface.co/CIDAS/clipseg-rd64-refined" in said, said

    csv_path = tmp_path / "pairs.csv"
    _write_csv(csv_path, [(str(t.image), str(t.mask), t.text, t.split) for t in kvasir])
    argv = ["train-text", str(csv_path), "-o", str(tmp_path / "cli"), "--clipseg", "--clipseg-weights", str(empty)]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert f"clipseg_rd64_refined: {empty} " in error and f"--local-dir {empty}" in error, error
    assert "or leave --clipseg-weights out" in error, error
