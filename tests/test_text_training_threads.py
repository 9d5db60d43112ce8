"""A text model trained on the same triplets is the same model whatever the machine's thread count: training sums
gradients in an order that follows the torch threads, and training amplifies that (Kvasir: test Dice 0.854 at one
thread, 0.832 at two; benchmarks/README.md), so the trainer fixes its threads (``threads``, CLI ``--threads``)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from napari_promptseg.methods.text_training import read_triplets, train_text_segmenter


@pytest.fixture(scope="module")
def kvasir(shared_data):
    """Three real Kvasir-SEG train triplets: two to train on, one to validate on."""
    rows = [t for t in read_triplets(shared_data / "polyps_kvasir_triplets" / "pairs.csv") if t.split == "train"]
    return [replace(t, split="train") for t in rows[:2]] + [replace(t, split="val") for t in rows[2:3]]


def test_the_same_run_gives_the_same_model_bytes_at_one_and_two_machine_threads(kvasir, tmp_path):
    ambient = torch.get_num_threads()
    models = []
    try:
        for threads in (1, 2):  # what OMP_NUM_THREADS or the machine's cores give torch before the run
            torch.set_num_threads(threads)
            out = tmp_path / f"at-{threads}"
            train_text_segmenter(kvasir, out, cache_dir=tmp_path / "cache", device="cpu", epochs=1, batch_size=2)
            assert torch.get_num_threads() == threads  # the caller's threads are put back
            models.append(out)
    finally:
        torch.set_num_threads(ambient)
    first, second = ((m / "model.safetensors").read_bytes() for m in models)
    assert first == second
    training = json.loads((models[1] / "text_segmenter.json").read_text())["training"]
    assert training["torch_threads"] == training["threads"] == 1  # what a repeat of the run needs


def test_cli_threads_below_one_are_refused_before_anything_loads(tmp_path, capsys):
    from napari_promptseg.cli import main

    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("image,mask,text\na.png,a_mask.png,polyp\n")
    assert main(["train-text", str(csv_path), "-o", str(tmp_path / "model"), "--threads", "0"]) == 2
    assert "--threads must be a whole number, at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "model").exists()
