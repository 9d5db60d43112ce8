"""What `promptseg train-text` says and keeps while it runs and when it is stopped, on real Kvasir triplets: the
row-reading pass of a CSV said as it goes, Ctrl+C stopping at a step with the run saved up to it, and a CLIPSeg
fine-tune recording the channel counts it was trained on (a tiny random-weight CLIPSeg: no weights download here)."""

from __future__ import annotations

import csv
import json
import signal
from dataclasses import replace

import numpy as np
import pytest

from napari_promptseg.cli import main
from napari_promptseg.errors import PromptsegError, WeightsError
from napari_promptseg.methods.text_training import finetune_clipseg, read_triplets, train_text_segmenter
from napari_promptseg.models import load_text_segmenter

from .test_clipseg import tiny_clipseg_dir  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def kvasir(shared_data):
    """Six real Kvasir-SEG train triplets: four to train on, two to validate on."""
    rows = [t for t in read_triplets(shared_data / "polyps_kvasir_triplets" / "pairs.csv") if t.split == "train"]
    return [replace(t, split="train") for t in rows[:4]] + [replace(t, split="val") for t in rows[4:6]]


def _write_csv(path, rows) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(("image", "mask", "text", "split"))
        writer.writerows(rows)


def test_the_row_reading_pass_of_a_csv_is_said_as_it_goes(kvasir, tmp_path, capsys):
    """`promptseg train-text` read every row of a CSV (each image and mask) before a model loaded, and said nothing
    while it did: a CSV of thousands of rows was minutes of silence. The pass is said as the other slow steps are,
    by tenths (the first and last rows too), before the bad rows are refused together."""
    rows = [(t.image, t.mask, t.text, "train") for t in kvasir[:4]] * 5  # 20 rows
    rows.append((kvasir[0].image, kvasir[1].mask, "polyp", "train"))  # another frame's mask: the last row is bad
    data = tmp_path / "rows.csv"
    _write_csv(data, rows)
    assert main(["train-text", str(data), "-o", str(tmp_path / "model"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if "reading the rows" in line]
    assert said[0].endswith("reading the rows 1/21") and said[-1].endswith("reading the rows 21/21"), err
    assert 4 <= len(said) <= 12, said  # by tenths, not one line per row
    assert "1 row(s) cannot be trained on" in err and "row 22" in err


def test_ctrl_c_stops_training_at_a_step_and_keeps_the_run_up_to_it(kvasir, tmp_path, capsys, monkeypatch):
    """Ctrl+C in `promptseg train-text` kept the last finished epoch only (the steps of the epoch it was in were lost,
    and said nowhere): the first Ctrl+C now stops at the next step, the run saved up to it (as the widget's Stop
    does), says so, and --resume goes on from that step. A real SIGINT, sent on the progress of a real training."""
    from napari_promptseg.methods.text_training import run

    real = run.train_text_model
    sent = []

    def interrupted(*args, progress, **kwargs):
        def told(done, message):
            progress(done, message)
            if message.startswith("epoch 2/2, step 2/4") and not sent:
                sent.append(message)
                signal.raise_signal(signal.SIGINT)  # as the terminal's Ctrl+C

        return real(*args, progress=told, **kwargs)

    monkeypatch.setattr(run, "train_text_model", interrupted)
    data = tmp_path / "rows.csv"
    _write_csv(data, [(t.image, t.mask, t.text, t.split) for t in kvasir])
    out = tmp_path / "model"
    argv = ["train-text", str(data), "-o", str(out), "--epochs", "2", "--batch-size", "1", "--device", "cpu"]
    assert main(argv) == 130
    err = " ".join(capsys.readouterr().err.split())
    state = json.loads((out / "last" / "state.json").read_text())
    assert (state["epoch"], state["step"]) == (1, 2), state  # epoch 2's first two steps are kept
    assert "stopping at the next step" in err, err
    assert f"{out} holds the best epoch so far (epoch 1)" in err, err
    assert f"the run up to epoch 2, step 2 is saved in {out / 'last'}: --resume continues from there" in err, err
    monkeypatch.setattr(run, "train_text_model", real)
    assert main([*argv, "--resume"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["epochs_run"] == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the CLI's handler is gone


def test_ctrl_c_while_the_rows_are_read_says_no_model_is_saved(kvasir, tmp_path, capsys, monkeypatch):
    """The first Ctrl+C before training began (the rows being read) stops there and says no model of the run is in
    MODEL_DIR, not a bare "cancelled"."""
    from napari_promptseg.methods.text_training import run

    real = run.train_text_model

    def interrupted(*args, progress, **kwargs):
        def told(done, message):
            progress(done, message)
            if message == "reading the rows 2/6":
                signal.raise_signal(signal.SIGINT)

        return real(*args, progress=told, **kwargs)

    monkeypatch.setattr(run, "train_text_model", interrupted)
    data = tmp_path / "rows.csv"
    _write_csv(data, [(t.image, t.mask, t.text, t.split) for t in kvasir])
    out = tmp_path / "model"
    assert main(["train-text", str(data), "-o", str(out), "--device", "cpu"]) == 130
    err = " ".join(capsys.readouterr().err.split())
    assert f"stopped before training began: no model of this run is in {out}" in err, err
    assert "reading the rows 3/6" not in err  # stopped at the next row
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_clipseg_fine_tune_records_its_channel_counts_and_refuses_other_images(tiny_clipseg_dir, kvasir, tmp_path):  # noqa: F811
    """A fusion model records the channel counts it was trained on and refuses a 2-channel image if trained on
    colour; a CLIPSeg fine-tune recorded none, and answered a 2-channel image (two stains fed as red and green)
    without a word. It records them and refuses alike; gray stays a colour model's."""
    result = finetune_clipseg(
        kvasir, tmp_path / "clipseg", weights=tiny_clipseg_dir, epochs=1, batch_size=2, device="cpu"
    )
    config = json.loads((result.path / "text_segmenter.json").read_text())
    assert config["training"]["image_channel_counts"] == [3]
    model = load_text_segmenter(result.path, device="cpu")
    image, _ = kvasir[0].load()
    with pytest.raises(PromptsegError, match=r"the image has 2 channels, but the text model .* gray or colour"):
        model.mask_logits(np.ascontiguousarray(image[..., :2]), ["polyp"])
    assert model.mask_logits(image[..., 1], ["polyp"]).shape == (1, *image.shape[:2])


@pytest.mark.parametrize(
    ("at", "said"),
    [
        ("epoch 1/2", "no epoch had finished, so nothing of this fine-tune is saved"),
        ("epoch 2/2", "the best epoch so far (epoch 1) is the model in"),
    ],
)
def test_a_clipseg_fine_tune_stopped_says_what_it_saved(tiny_clipseg_dir, kvasir, tmp_path, at, said):  # noqa: F811
    """A CLIPSeg fine-tune stopped (the widget's Stop, the CLI's Ctrl+C) before its first epoch ended said "the best
    epoch so far is in MODEL_DIR", where nothing had been saved; it says nothing is, and after an epoch which one is."""
    from napari_promptseg.errors import CancelledError

    told: list[str] = []
    with pytest.raises(CancelledError) as stopped:
        finetune_clipseg(
            kvasir,
            tmp_path / "clipseg",
            weights=tiny_clipseg_dir,
            epochs=2,
            batch_size=2,
            device="cpu",
            progress=lambda done, message: told.append(message),
            cancel=lambda: any(m.startswith(at) for m in told),
        )
    assert said in str(stopped.value), str(stopped.value)


def test_sigterm_stops_training_at_a_step_and_keeps_the_run_up_to_it(kvasir, tmp_path, capsys, monkeypatch):
    """SIGTERM (a cluster's time limit, `kill`) stopped `promptseg train-text` at once, the steps of the epoch it was
    in lost, while Ctrl+C stops at the next step with the run saved up to it: SIGTERM now stops as Ctrl+C does,
    exits 143 (terminated) and --resume goes on from that step. A real SIGTERM, sent on the progress of a real run."""
    from napari_promptseg.methods.text_training import run

    real = run.train_text_model
    sent = []

    def terminated(*args, progress, **kwargs):
        def told(done, message):
            progress(done, message)
            if message.startswith("epoch 2/2, step 2/4") and not sent:
                sent.append(message)
                signal.raise_signal(signal.SIGTERM)  # as `kill` or the cluster's time limit

        return real(*args, progress=told, **kwargs)

    monkeypatch.setattr(run, "train_text_model", terminated)
    data = tmp_path / "rows.csv"
    _write_csv(data, [(t.image, t.mask, t.text, t.split) for t in kvasir])
    out = tmp_path / "model"
    argv = ["train-text", str(data), "-o", str(out), "--epochs", "2", "--batch-size", "1", "--device", "cpu"]
    before = signal.getsignal(signal.SIGTERM)
    assert main(argv) == 143
    err = " ".join(capsys.readouterr().err.split())
    state = json.loads((out / "last" / "state.json").read_text())
    assert (state["epoch"], state["step"]) == (1, 2), state  # epoch 2's first two steps are kept
    assert "SIGTERM: stopping at the next step" in err, err
    assert f"the run up to epoch 2, step 2 is saved in {out / 'last'}: --resume continues from there" in err, err
    assert "terminated (SIGTERM)" in err, err
    assert signal.getsignal(signal.SIGTERM) is before and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    monkeypatch.setattr(run, "train_text_model", real)
    assert main([*argv, "--resume"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["epochs_run"] == 2


def test_a_clipseg_save_stopped_midway_keeps_the_model_before(tiny_clipseg_dir, kvasir, tmp_path, monkeypatch):  # noqa: F811
    """A CLIPSeg fine-tune saved its best epoch file by file into MODEL_DIR: a second Ctrl+C or a kill during the
    save left the new epoch's weights beside the previous epoch's record and processor files, which a later load read
    as the model. The save is written beside and renamed into place: stopped during it, MODEL_DIR is the previous
    epoch's model, whole, and no temporary file stays. (The stop is a KeyboardInterrupt raised in the processor's
    save, where a signal would arrive.)"""
    from transformers import CLIPSegProcessor

    real_save = CLIPSegProcessor.save_pretrained
    saves = []

    def save_then_stopped(self, *args, **kwargs):
        saves.append(args)
        if len(saves) == 2:  # epoch 2's save, its weights written
            raise KeyboardInterrupt
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(CLIPSegProcessor, "save_pretrained", save_then_stopped)
    out = tmp_path / "clipseg"
    seen = {}

    def told(done, message):
        if message.startswith("epoch 2/2") and not seen:  # epoch 1 saved whole: what MODEL_DIR holds now
            seen.update({p.name: p.read_bytes() for p in out.iterdir() if p.is_file()})

    rows = [replace(t, split="train") for t in kvasir[:2]]  # no validation: every epoch is saved
    with pytest.raises(KeyboardInterrupt):
        finetune_clipseg(
            rows, out, weights=tiny_clipseg_dir, epochs=2, batch_size=2, val_fraction=0.0, device="cpu", progress=told
        )
    assert len(saves) == 2 and "model.safetensors" in seen
    left = {p.name: p.read_bytes() for p in out.iterdir()}
    assert left.keys() == seen.keys(), sorted(left)  # no temporary file or folder stays
    assert left == seen  # epoch 1's weights, config and processor, not epoch 2's weights beside them
    assert json.loads(left["text_segmenter.json"])["best"]["epoch"] == 1
    assert load_text_segmenter(out, device="cpu").mask_logits(kvasir[0].load()[0], ["polyp"]).ndim == 3


def test_a_fusion_model_save_stopped_midway_keeps_the_model_before(kvasir, tmp_path, monkeypatch):
    """The text decoder's save wrote model.safetensors, then text_segmenter.json, each replaced on its own: a second
    Ctrl+C or a kill between them left the new epoch's weights described by the previous epoch's record (and a run's
    first save deleted the record before writing its weights: nothing described them), which a later load or
    --resume read as the model. The two are replaced together: stopped while the record is written (the weights
    already are), MODEL_DIR is the previous epoch's model, byte for byte, and loads and segments a real image."""
    from napari_promptseg.models import text_segmenter

    real_text = text_segmenter.config_text
    described = []

    def stopped_at_epoch_2(config):  # the record's writing, where a signal would arrive; the model is untouched
        described.append(config["best"]["epoch"])
        if config["best"]["epoch"] == 2:  # epoch 2's save, its weights written
            raise KeyboardInterrupt
        return real_text(config)

    monkeypatch.setattr(text_segmenter, "config_text", stopped_at_epoch_2)
    out = tmp_path / "fusion"
    seen = {}

    def told(done, message):
        if message.startswith("epoch 2/2") and not seen:  # epoch 1 saved whole: what MODEL_DIR holds now
            seen.update({p.name: p.read_bytes() for p in out.iterdir() if p.is_file()})

    rows = kvasir[:2]  # two training images, no validation: every epoch is saved
    with pytest.raises(KeyboardInterrupt):
        train_text_segmenter(
            rows, out, epochs=2, batch_size=2, val_fraction=0.0, presence_refit=False, device="cpu", progress=told
        )
    assert described == [1, 2] and {"model.safetensors", "text_segmenter.json"} <= seen.keys()
    left = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert left.keys() == seen.keys(), sorted(left)  # no temporary file or journal stays
    assert left == seen  # epoch 1's weights and record, not epoch 2's weights beside epoch 1's record
    assert json.loads(left["text_segmenter.json"])["best"]["epoch"] == 1
    image = kvasir[0].load()[0]
    assert load_text_segmenter(out, device="cpu").mask_logits(image, ["polyp"]).shape[-2:] == image.shape[:2]

    # an --overwrite run's first save deleted the old record first: stopped there, the old model stays whole
    def stopped(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(text_segmenter, "config_text", stopped)
    with pytest.raises(KeyboardInterrupt):
        train_text_segmenter(rows, out, overwrite=True, seed=1, epochs=1, val_fraction=0.0, device="cpu")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == seen


# a save into MODEL_DIR killed (SIGKILL: nothing of it runs) as the weights have replaced the earlier ones and the
# record not yet: the real save_model in a child process, killed by itself at the record's rename
_KILLED_SAVE = """
import json, os, signal, sys
from pathlib import Path
from safetensors.torch import load_file
from napari_promptseg.models import text_segmenter

out = Path(sys.argv[1])
tensors = {k: v + 1 for k, v in load_file(out / "model.safetensors").items()}
config = json.loads((out / "text_segmenter.json").read_text())
config["best"]["epoch"] = 99
real_replace = os.replace

def killed_at_the_record(src, dst, *args, **kwargs):
    if Path(dst).name == "text_segmenter.json" and Path(src).name.endswith(".tmp"):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *args, **kwargs)

os.replace = killed_at_the_record
text_segmenter.save_model(out, config, tensors)
"""


@pytest.fixture(scope="module")
def fusion_model(kvasir, tmp_path_factory):
    """A fusion text model trained one epoch on two real images, its files' bytes."""
    out = tmp_path_factory.mktemp("fusion") / "model"
    train_text_segmenter(kvasir[:2], out, epochs=1, batch_size=2, val_fraction=0.0, presence_refit=False, device="cpu")
    return out, {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


def _killed_while_saving(model, tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    out, before = model
    folder = tmp_path / "model"
    shutil.copytree(out, folder)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _KILLED_SAVE, str(folder)], env=env, capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    left = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    # the mix the kill left: the new weights beside the earlier record, and the journal that says so
    assert ".promptseg-replacing.json" in left and left["model.safetensors"] != before["model.safetensors"]
    assert left["text_segmenter.json"] == before["text_segmenter.json"]
    return folder


def test_loading_a_model_whose_save_was_killed_puts_the_model_before_back(fusion_model, kvasir, tmp_path):
    """A save into MODEL_DIR killed between its renames (SIGKILL, a power cut) left the new weights beside the
    earlier record; only the next save into the folder undid it, so a load before it (the widget, `promptseg
    segment --text-model`) read the mix as the model. The load undoes the stopped save first: the folder is the
    model from before the save, byte for byte, and it segments a real image."""
    folder = _killed_while_saving(fusion_model, tmp_path)
    model = load_text_segmenter(folder, device="cpu")
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == fusion_model[1]
    image = kvasir[0].load()[0]
    logits = model.mask_logits(image, ["polyp"])
    assert logits.shape[-2:] == image.shape[:2] and np.isfinite(np.asarray(logits)).all()


def test_a_killed_save_in_a_folder_that_cannot_be_written_is_refused(fusion_model, tmp_path, monkeypatch):
    """Where the stopped save cannot be undone (a read-only folder or share), the load refuses, naming the folder
    and what happened, and leaves the files as they are, rather than load the mix."""
    import errno
    import os

    folder = _killed_while_saving(fusion_model, tmp_path)
    left = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    folder.chmod(0o555)
    real_replace, real_unlink = os.replace, os.unlink

    def read_only(real):  # root ignores the folder's mode: what the file system says to anyone else, for root too
        def step(path, *args, **kwargs):
            if str(folder) in str(path):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real(path, *args, **kwargs)

        return step

    monkeypatch.setattr(os, "replace", read_only(real_replace))
    monkeypatch.setattr(os, "unlink", read_only(real_unlink))
    try:
        with pytest.raises(WeightsError, match="stopped while replacing its files") as refused:
            load_text_segmenter(folder, device="cpu")
    finally:
        monkeypatch.undo()
        folder.chmod(0o755)
    assert str(folder) in str(refused.value) and "writ" in str(refused.value)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == left
    load_text_segmenter(folder, device="cpu")  # writable again: the earlier model is put back and loads
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == fusion_model[1]
