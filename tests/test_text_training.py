"""Training text-conditioned segmenters on real Kvasir triplets with the real LiteMedSAM + MiniLM encoders.

Tiny runs (4 training and 2 validation frames, image features cached once for the module): the trained decoder
must beat the untrained one, a checkpoint must load to identical logits, a cancelled run must resume to exactly the
weights of an uninterrupted one, the TMCA and RecLMIS objectives must train their own modules, bad CSV rows must be
named, and the CLI must train and answer `promptseg text --text-model`. medvlsm's CLIPSeg fine-tune runs end to end
on a tiny random-weight CLIPSeg (no CLIPSeg weights can be downloaded here).
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_promptseg.cli import main
from napari_promptseg.errors import CancelledError, PromptsegError, WeightsError
from napari_promptseg.methods.text import segment_text
from napari_promptseg.methods.text_training import (
    dice,
    evaluate_text_segmenter,
    finetune_clipseg,
    read_triplets,
    split_triplets,
    train_text_segmenter,
)
from napari_promptseg.methods.text_training.data import ArrayTriplet, FeatureStore
from napari_promptseg.methods.text_training.losses import batch_loss
from napari_promptseg.methods.text_training.run import CLIPSEG_SETTINGS, SETTINGS, cli_flag
from napari_promptseg.methods.text_training.sampling import epoch_samples, texts_per_image
from napari_promptseg.methods.text_training.trainer import TrainingConfig, make_batch, validate
from napari_promptseg.models import load_text_embedder, load_text_segmenter
from napari_promptseg.models.text_decoder import TextPromptDecoder
from napari_promptseg.models.text_segmenter import (
    TextTokens,
    TrainedTextSegmenter,
    load_tensors,
    save_tensors,
    write_config,
)

from .test_clipseg import tiny_clipseg_dir  # noqa: F401 (fixture)

FAST = {"epochs": 2, "batch_size": 2}


@pytest.fixture(scope="module")
def kvasir(shared_data):
    """Six real Kvasir-SEG train triplets (medvlsm p6 prompts): four to train on, two to validate on."""
    rows = [t for t in read_triplets(shared_data / "polyps_kvasir_triplets" / "pairs.csv") if t.split == "train"]
    return [replace(t, split="train") for t in rows[:4]] + [replace(t, split="val") for t in rows[4:6]]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("text-features")


@pytest.fixture(scope="module")
def trained(kvasir, cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "dicece"
    return train_text_segmenter(kvasir, out, cache_dir=cache, device="cpu", **FAST)


def _untrained(litemedsam, loss: str = "dicece") -> TextPromptDecoder:
    torch.manual_seed(0)
    decoder = TextPromptDecoder(TrainingConfig(loss=loss).decoder_config(384, 128))
    decoder.init_from_segmenter(litemedsam)
    return decoder


def test_dice_reads_label_images_and_8_bit_masks_as_their_non_zero_pixels():
    """dice(labels, truth) with the labels segment_text returns (ids 1, 2, ...) and a 0/255 mask combined them bit by
    bit: an object of id 2 shared no pixel with the mask, and 255-valued pixels counted 255 times."""
    truth = np.zeros((8, 8), np.uint8)
    truth[:4] = 255
    labels = np.zeros((8, 8), np.uint16)
    labels[:2], labels[2:4] = 1, 2
    assert dice(labels, truth) == dice(labels > 0, truth > 0) == 1.0
    assert dice(np.zeros((8, 8), np.uint8), np.zeros((8, 8), bool)) == 1.0


def test_a_fiji_composite_in_the_csv_is_read_as_its_colour_image(shared_data, tmp_path):
    """An image saved by Fiji as (C, Y, X) with its axes named was refused: "3D array of shape (3, 530, 607) is
    ambiguous; pass channel_axis", an option train-text does not have; it is read as `promptseg text` reads it."""
    texts = shared_data / "polyps_kvasir_text" / "texts.csv"
    triplet = read_triplets(texts, text_col="prompt_p1", split_col="medvlsm_split")[0]
    rgb, mask = triplet.load()
    composite = tmp_path / "composite.tif"
    tifffile.imwrite(composite, np.ascontiguousarray(rgb.transpose(2, 0, 1)), imagej=True, metadata={"axes": "CYX"})
    (tmp_path / "triplets.csv").write_text(f"image,mask,text\ncomposite.tif,{triplet.mask},polyp\n")
    image, same_mask = read_triplets(tmp_path / "triplets.csv")[0].load()
    assert np.array_equal(image, rgb) and np.array_equal(same_mask, mask)


def test_training_beats_the_untrained_decoder(trained, kvasir, cache, litemedsam):
    assert (trained.path / "model.safetensors").is_file() and (trained.path / "last" / "state.json").is_file()
    config = json.loads((trained.path / "text_segmenter.json").read_text())
    assert config["kind"] == "fusion" and config["encoders"] == {"image": "litemedsam", "text": "all_minilm_l6_v2"}
    assert [h["epoch"] for h in config["history"]] == [1, 2] and config["best"]["epoch"] == trained.best_epoch
    assert trained.feature_cache["misses"] + trained.feature_cache["hits"] == 6

    store = FeatureStore(cache, litemedsam)
    samples = store.samples(kvasir)
    assert store.misses == 0  # computed once, by the training run
    text = TextTokens(load_text_embedder(device="cpu"))
    before = validate(_untrained(litemedsam), samples[4:], text, litemedsam.device)
    assert min(h["val_loss"] for h in trained.history) < before["val_loss"]
    assert trained.best_val_dice > before["val_dice"]

    model = load_text_segmenter(trained.path, device="cpu")
    on_train = validate(model.decoder, samples[:4], text, litemedsam.device)["val_dice"]
    assert on_train > validate(_untrained(litemedsam), samples[:4], text, litemedsam.device)["val_dice"] + 0.1
    assert on_train > 0.6
    # the same at the frame's own resolution, through the inference path (encoder + decoder + resize back)
    assert evaluate_text_segmenter(model, kvasir[:1])[0] > 0.6
    # (image, mask, text) tuples, as training takes them ("'tuple' object has no attribute 'load'")
    first = kvasir[0]
    assert evaluate_text_segmenter(model, [(first.image, first.mask, first.text)]) == evaluate_text_segmenter(
        model, kvasir[:1]
    )


def test_checkpoint_round_trip_gives_identical_logits(kvasir, litemedsam, tmp_path):
    decoder = _untrained(litemedsam, "tmca")
    with torch.no_grad():
        for p in decoder.parameters():  # make every weight count, zero-initialised gates included
            p.add_(0.01 * torch.randn_like(p))
    save_tensors(tmp_path / "model.safetensors", decoder.state_dict())
    write_config(
        tmp_path,
        {
            "kind": "fusion",
            "encoders": {"image": "litemedsam", "text": "all_minilm_l6_v2"},
            "decoder": decoder.config.to_dict(),
        },
    )
    in_memory = TrainedTextSegmenter(decoder, litemedsam, load_text_embedder(device="cpu"))
    loaded = load_text_segmenter(tmp_path, device="cpu")
    image, _ = kvasir[0].load()
    prompts = [kvasir[0].text, "polyp"]
    expected = in_memory.mask_logits(image, prompts)
    assert expected.shape == (2, *image.shape[:2]) and expected.dtype == np.float32
    np.testing.assert_array_equal(loaded.mask_logits(image, prompts), expected)
    assert not np.allclose(expected[0], expected[1])  # the text changes the answer


def test_cancelled_run_resumes_to_the_uninterrupted_weights(trained, kvasir, cache, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "resumed"
    messages: list[str] = []

    def cancel_in_epoch_two() -> bool:  # after its first step (two steps per epoch)
        return any(m.startswith("epoch 2/2, step 1/2") for m in messages)

    with pytest.raises(CancelledError, match="resume") as info:
        train_text_segmenter(
            kvasir,
            out,
            cache_dir=cache,
            cancel=cancel_in_epoch_two,
            progress=lambda f, m: messages.append(m),
            device="cpu",
            **FAST,
        )
    # the model kept is said (it said only where to resume from; the widget showed only that)
    said = str(info.value)
    assert "the best epoch so far (epoch 1, val Dice " in said and f"is the model in {out}" in said
    assert load_text_segmenter(out, device="cpu") is not None
    assert any("ETA" in m for m in messages)
    assert "image features 6/6" in " ".join(messages)  # the validation images are counted too (4 + 2)
    state = json.loads((out / "last" / "state.json").read_text())
    assert (state["epoch"], state["step"]) == (1, 1)
    (out / "plain").write_bytes(b"")  # a model is as readable as any file made here (safetensors made it 0600)
    assert (out / "last" / "model.safetensors").stat().st_mode == (out / "plain").stat().st_mode
    (out / "plain").unlink()
    with pytest.raises(PromptsegError, match="already holds"):  # never overwritten silently
        train_text_segmenter(kvasir, out, cache_dir=cache, device="cpu", **FAST)
    # an overwrite whose data cannot be read (a typo in the CSV's name) keeps the old run: it went first
    with pytest.raises(PromptsegError, match="typo.csv"):
        train_text_segmenter(tmp_path / "typo.csv", out, cache_dir=cache, device="cpu", overwrite=True, **FAST)
    assert (out / "last" / "state.json").is_file()
    # a folder of the user's named last/ is refused, never removed
    mine = tmp_path / "mine"
    (mine / "last").mkdir(parents=True)
    (mine / "last" / "notes.txt").write_text("my notes")
    with pytest.raises(PromptsegError, match="not a training state of promptseg"):
        train_text_segmenter(kvasir, mine, cache_dir=cache, device="cpu", overwrite=True, **FAST)
    assert (mine / "last" / "notes.txt").read_text() == "my notes"
    (tmp_path / "a file").write_text("")
    with pytest.raises(PromptsegError, match="a file, not a directory"):
        train_text_segmenter(kvasir, tmp_path / "a file", cache_dir=cache, device="cpu", **FAST)
    # a save killed between its two renames: no last/, the new state complete in last.tmp, the old in last.old
    shutil.copytree(out / "last", out / "last.tmp")
    (out / "last").rename(out / "last.old")
    result = train_text_segmenter(kvasir, out, cache_dir=cache, resume=True, device="cpu")
    assert result.epochs_run == 2 and result.feature_cache["misses"] == 0
    resumed = load_file(out / "last" / "model.safetensors")
    straight = load_file(trained.path / "last" / "model.safetensors")
    assert resumed.keys() == straight.keys()
    for key in straight:  # bit for bit (texts are encoded one at a time, whatever order a resume meets them in)
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0)
    assert result.history == trained.history
    # a resume continues the same run: other settings or other rows are refused, not silently dropped
    with pytest.raises(PromptsegError, match=r"loss='tmca' \(saved: 'dicece'\).*differ"):
        train_text_segmenter(kvasir, out, cache_dir=cache, resume=True, device="cpu", epochs=3, loss="tmca")
    with pytest.raises(PromptsegError, match="other rows"):
        train_text_segmenter(kvasir[:5], out, cache_dir=cache, resume=True, device="cpu", epochs=3)
    # finished at 2 epochs: a resume to 2 in all would train nothing, and says so (it returned as if it had trained)
    with pytest.raises(PromptsegError, match=r"has trained 2 epoch\(s\), and epochs=2 is the total"):
        train_text_segmenter(kvasir, out, cache_dir=cache, resume=True, device="cpu", epochs=2)


def test_an_overwrite_keeps_the_old_model_until_the_new_one_replaces_it(trained, kvasir, cache, tmp_path):
    """--overwrite removed the old model once the data was read, before the new one existed: a run cancelled (or
    failed) in its first epoch left no model at all. And a save killed mid-write leaves replacing()'s temporary
    file in last.tmp/, which the overwrite refused as "not a training state of promptseg" (a folder the next save
    deletes anyway)."""
    out = tmp_path / "model"
    shutil.copytree(trained.path, out)
    (out / "last.tmp").mkdir()
    shutil.copy(out / "last" / "model.safetensors", out / "last.tmp")
    (out / "last.tmp" / ".optimizer.safetensors.0123456789ab.tmp").write_bytes(b"half an optimizer state")
    old_config, old_weights = (out / "text_segmenter.json").read_text(), (out / "model.safetensors").read_bytes()
    messages: list[str] = []

    def cancel_in_epoch_one() -> bool:  # after its first step (two steps per epoch)
        return any(m.startswith("epoch 1/2, step 1/2") for m in messages)

    new_run = {"cache_dir": cache, "device": "cpu", "seed": 1, **FAST}
    with pytest.raises(CancelledError, match="resume"):
        train_text_segmenter(
            kvasir, out, overwrite=True, cancel=cancel_in_epoch_one, progress=lambda f, m: messages.append(m), **new_run
        )
    assert (out / "text_segmenter.json").read_text() == old_config
    assert (out / "model.safetensors").read_bytes() == old_weights
    assert load_text_segmenter(out, device="cpu").decoder is not None  # the old model, whole and loadable
    state = json.loads((out / "last" / "state.json").read_text())
    assert (state["config"]["seed"], state["epoch"], state["step"]) == (1, 0, 1)  # the new run's, to resume
    assert not (out / "last.tmp").exists()

    result = train_text_segmenter(kvasir, out, resume=True, **new_run)
    config = json.loads((out / "text_segmenter.json").read_text())
    assert config["training"]["seed"] == 1 and config["history"] == result.history
    assert (out / "model.safetensors").read_bytes() != old_weights

    # a hidden file of another name is not ours: refused, never removed
    mine = tmp_path / "mine"
    (mine / "last.old").mkdir(parents=True)
    (mine / "last.old" / ".notes.txt.0123456789ab.tmp").write_text("my notes")
    with pytest.raises(PromptsegError, match="not a training state of promptseg"):
        train_text_segmenter(kvasir, mine, overwrite=True, **new_run)
    assert (mine / "last.old" / ".notes.txt.0123456789ab.tmp").read_text() == "my notes"


def test_a_resume_without_a_saved_state_says_how_to_train_again(trained, kvasir, tmp_path):
    """A model whose last/ is gone (deleted to free its 50 MB, or a Ctrl+C while the first epoch's state was being
    written) answered --resume with "train without --resume first", and that run with "already holds a trained
    model; resume it": each pointed at the other. The resume names --overwrite."""
    out = tmp_path / "model"
    shutil.copytree(trained.path, out, ignore=shutil.ignore_patterns("last", "cache"))
    with pytest.raises(PromptsegError, match=r"no training state to resume.*--overwrite"):
        train_text_segmenter(kvasir, out, resume=True, device="cpu")


def test_a_resume_reading_the_images_with_other_channels_is_refused_before_anything_loads(trained, kvasir, tmp_path):
    """The images of a run read with a channel axis or channels are other pixels than the same files read without:
    a resume given them otherwise trained on other data unsaid (the fingerprint knew files by their paths only)."""
    out = tmp_path / "model"
    shutil.copytree(trained.path, out, ignore=shutil.ignore_patterns("cache"))
    with pytest.raises(PromptsegError, match=r"other rows .*read with another channel axis or channels"):
        train_text_segmenter(kvasir, out, resume=True, channels=[2, 1, 0], device="cpu", epochs=3)


def test_ctrl_c_in_a_resumed_run_says_where_it_resumes_from(trained, tmp_path, capsys, monkeypatch):
    """Ctrl+C in a --resume run before its first new epoch was saved (while the images were read) said only
    "interrupted": the saved state was older than the run, so it was taken for another run's, though it is the one
    this run continues (a KeyboardInterrupt raised as the run starts stands for the Ctrl+C)."""
    from napari_promptseg.methods.text_training import run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "train_text_segmenter", interrupted)
    out = tmp_path / "model"
    shutil.copytree(trained.path, out, ignore=shutil.ignore_patterns("cache"))  # its saved state keeps its age
    csv_path = tmp_path / "rows.csv"
    csv_path.write_text("image,mask,text\n")
    assert main(["train-text", str(csv_path), "-o", str(out), "--resume", "--epochs", "4"]) == 130
    error = capsys.readouterr().err
    assert f"{out} holds the best epoch so far (epoch {trained.best_epoch})" in error and "--resume continues" in error
    # a training run writes no labels per input: the batch commands' "the input(s) in progress were not written"
    # was said after its own note
    assert "input(s) in progress" not in error, error


def test_ctrl_c_while_clipseg_is_fine_tuned_says_the_best_epoch_is_kept(tmp_path, capsys, monkeypatch):
    """Ctrl+C in `train-text --clipseg` said only "interrupted", though the best epoch so far is saved in -o (the
    Train text model widget's cancel says so). A KeyboardInterrupt raised after the fine-tune's first epoch was
    saved stands for the Ctrl+C."""
    from napari_promptseg.methods.text_training import run

    out = tmp_path / "clipseg"

    def interrupted_after_epoch_1(data, output_dir, **kwargs):
        out.mkdir()
        write_config(out, {"kind": "clipseg", "best": {"epoch": 1, "val_dice": 0.5}, "history": [{"epoch": 1}]})
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "finetune_clipseg", interrupted_after_epoch_1)
    csv_path = tmp_path / "rows.csv"
    csv_path.write_text("image,mask,text\n")
    assert main(["train-text", str(csv_path), "-o", str(out), "--clipseg", "--epochs", "4"]) == 130
    error = capsys.readouterr().err
    assert f"{out} holds the best epoch so far (epoch 1)" in error and "--resume" not in error


@pytest.mark.parametrize("fraction", [0.0, 0.5])
def test_a_validation_fraction_given_for_data_with_its_own_split_is_refused(kvasir, tmp_path, fraction):
    """`--val-fraction 0` ("train on every image") with a CSV whose split column marks val rows trained without
    them and validated on them, and any other fraction held out the CSV's val rows instead: ignored without a word
    (the fraction applies to data without a split)."""
    with pytest.raises(PromptsegError, match=r"validation fraction .* 2 row\(s\) val"):
        train_text_segmenter(kvasir, tmp_path / "model", device="cpu", val_fraction=fraction)
    assert not (tmp_path / "model").exists()


def test_clipseg_refuses_a_validation_fraction_given_for_data_with_its_own_split(kvasir, tmp_path):
    """The same for `train-text --clipseg` (and the widget's CLIPSeg fine-tune): its fraction was ignored without a
    word where the fusion decoder's is refused; refused before any model loads."""
    from napari_promptseg.methods.text_training import train_text_model

    with pytest.raises(PromptsegError, match=r"validation fraction \(0.0\) .* 2 row\(s\) val"):
        train_text_model(kvasir, tmp_path / "clipseg", settings={"val_fraction": 0.0}, clipseg=True)
    assert not (tmp_path / "clipseg").exists()


@pytest.mark.parametrize("inside", ["last", "cache"])
def test_a_folder_inside_a_model_is_refused_as_the_output(trained, kvasir, tmp_path, inside):
    """`-o MODEL/last` (a folder picked one level too deep) said "already holds a trained model; resume it" (last/
    holds model.safetensors), and with --overwrite wrote a new model over the run's resume state, whose next resume
    then loaded the new run's weights with the old run's optimizer."""
    model = tmp_path / "model"
    shutil.copytree(trained.path, model, ignore=shutil.ignore_patterns("cache"))
    (model / "cache").mkdir()
    state = (model / "last" / "model.safetensors").read_bytes()
    with pytest.raises(PromptsegError, match=rf"{inside}: a folder inside the text model {model}; give another"):
        train_text_segmenter(kvasir, model / inside, overwrite=True, device="cpu")
    assert (model / "last" / "model.safetensors").read_bytes() == state


@pytest.mark.parametrize(
    ("loss", "heads"),
    [
        ("tmca", ["align_text.high", "align_image.low", "align_image.mask", "enhance_gain"]),
        ("reclmis", ["image_reconstructor", "text_reconstructor", "contrast_image", "word_score", "patch_score"]),
    ],
)
def test_seed_objectives_train_their_own_modules(kvasir, cache, litemedsam, loss, heads):
    samples = FeatureStore(cache, litemedsam).samples(kvasir[:4])
    decoder = _untrained(litemedsam, loss)
    batch = make_batch(samples, TextTokens(load_text_embedder(device="cpu")), litemedsam.device)
    value, parts = batch_loss(loss, decoder, batch, torch.Generator().manual_seed(0))
    value.backward()
    assert np.isfinite(parts["loss"]) and parts["loss"] > parts["dice_loss"] + 0.2 * parts["ce"] - 1e-6
    expected = {"tmca": {"align_high", "align_low", "align_mask"}, "reclmis": {"contrast", "rec_image", "rec_text"}}
    assert expected[loss] <= set(parts)
    for head in heads:
        grads = [p.grad for n, p in decoder.named_parameters() if n.startswith(head)]
        assert grads and any(g is not None and g.abs().sum() > 0 for g in grads), head


def _write_csv(path, rows, columns=("image", "mask", "text", "split")) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows(rows)


def test_bad_rows_are_named(kvasir, shared_data, tmp_path):
    image, mask = str(kvasir[0].image), str(kvasir[0].mask)
    other_mask = str(kvasir[1].mask)  # another frame's mask: another size
    cases = [
        ([(image, mask, "polyp", "train"), (image, str(tmp_path / "gone.png"), "polyp", "train")], "row 3: no mask"),
        ([(image, mask, "   ", "train")], "row 2: empty text"),
        ([(image, mask, "polyp", "holdout")], "row 2: split 'holdout'"),
        # the image path copied into the mask column: every non-black pixel was the target, without a word
        ([(image, mask, "polyp", "train"), (image, image, "polyp", "val")], "row 3: the mask is the image file"),
    ]
    for k, (rows, message) in enumerate(cases):
        path = tmp_path / f"bad{k}.csv"
        _write_csv(path, rows)
        with pytest.raises(PromptsegError, match=message):
            read_triplets(path)
    _write_csv(tmp_path / "cols.csv", [(image, mask, "polyp")], ("img", "mask", "text"))
    with pytest.raises(PromptsegError, match="no column 'image'.*--image-col"):
        read_triplets(tmp_path / "cols.csv")
    assert kvasir[0].load()[0].shape[:2] != kvasir[1].load()[0].shape[:2]
    other_row = (str(kvasir[2].image), str(kvasir[2].mask), "polyp", "train")  # one image on one side of the split
    _write_csv(tmp_path / "size.csv", [other_row, (image, other_mask, "polyp", "val")])
    with pytest.raises(PromptsegError, match=r"size.csv: row 3: .*png is \d+x\d+ but the image is"):
        train_text_segmenter(tmp_path / "size.csv", tmp_path / "model", device="cpu", epochs=1)
    (tmp_path / "not an image.png").write_text("text, not pixels")
    _write_csv(
        tmp_path / "file.csv",
        [(image, mask, "polyp", "train"), (str(tmp_path / "not an image.png"), mask, "polyp", "val")],
    )
    with pytest.raises(PromptsegError, match=r"file.csv: row 3: .*not an image.png: cannot be read"):
        train_text_segmenter(tmp_path / "file.csv", tmp_path / "model", device="cpu", epochs=1)
    # every training mask empty: nothing to learn (it trained, and reported a perfect validation Dice)
    empty = [
        ArrayTriplet(np.full((64, 64), 9 * k, np.uint8), np.zeros((64, 64), bool), "x", split)
        for k, split in enumerate(("train", "train", "val"))
    ]
    with pytest.raises(PromptsegError, match="every training mask is empty"):
        train_text_segmenter(empty, tmp_path / "empty", device="cpu", epochs=1)
    with pytest.raises(WeightsError, match="train-text"):
        load_text_segmenter(tmp_path, device="cpu")


def test_a_csv_named_from_the_home_folder_is_read(kvasir, tmp_path, monkeypatch):
    """The Train text model widget's CSV field (and a Python caller) took '~/triplets.csv' as typed: "no such CSV
    file", where the output and cache fields beside it expand '~' (a shell expands it for the CLI)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    _write_csv(tmp_path / "rows.csv", [(str(kvasir[0].image), str(kvasir[0].mask), "polyp", "train")])
    (triplet,) = read_triplets("~/rows.csv")
    assert triplet.image == kvasir[0].image and triplet.source == str(tmp_path / "rows.csv")
    # and a cell naming a file from the home folder (no shell expands a CSV's cells): "no image file ~/frame.png"
    shutil.copy(kvasir[0].image, tmp_path / "frame.png")
    _write_csv(tmp_path / "sub.csv", [("~/frame.png", str(kvasir[0].mask), "polyp", "train")])
    assert read_triplets(tmp_path / "sub.csv")[0].image == tmp_path / "frame.png"


def test_a_stack_in_the_csv_is_refused_in_train_texts_words(kvasir, tmp_path):
    """A (Z, Y, X) stack in a triplet CSV was refused with the console's advice ("pass channel_axis ... segment_stack
    in napari_promptseg.methods.volume"), options train-text does not have; it says what a CSV takes, that the
    Train text model widget trains on a stack's planes, and train-text's own --channel-axis."""
    image, mask = kvasir[0].load()
    tifffile.imwrite(tmp_path / "stack.tif", np.stack([image[..., 0]] * 5))
    _write_csv(tmp_path / "rows.csv", [("stack.tif", str(kvasir[0].mask), "polyp", "train")])
    with pytest.raises(PromptsegError) as info:
        read_triplets(tmp_path / "rows.csv")[0].load()
    message = str(info.value)
    assert "rows.csv: row 2: " in message and "stack.tif is a stack of 5 planes" in message
    assert "one row per plane" in message and "segment_stack" not in message
    assert "if its first axis holds channels, give --channel-axis 0" in message  # train-text's option now
    # a Fiji composite of more channels than a colour image holds (its axes named): not "a stack of 64 planes"
    tifffile.imwrite(tmp_path / "five.tif", np.stack([image[:64, :64, 0]] * 5), imagej=True, metadata={"axes": "CYX"})
    _write_csv(tmp_path / "five.csv", [("five.tif", str(kvasir[0].mask), "polyp", "train")])
    with pytest.raises(PromptsegError, match=r"five.tif has 5 channels .*shape \(64, 64, 5\).* colour image") as info:
        read_triplets(tmp_path / "five.csv")[0].load()
    assert "planes" not in str(info.value) and "channel_axis" not in str(info.value)


def test_a_header_typed_with_spaces_after_its_commas_is_read(kvasir, tmp_path):
    """A CSV written by hand, "image, mask, text, split", was refused: "no column 'mask', 'text'; the columns are
    image,  mask,  text", names that read as the ones asked for (its cells were stripped, its header was not)."""
    rows = f"{kvasir[0].image}, {kvasir[0].mask}, polyp, val\n{kvasir[1].image}, {kvasir[1].mask}, polyp, train\n"
    (tmp_path / "rows.csv").write_text("image, mask, text, split\n" + rows)
    triplets = read_triplets(tmp_path / "rows.csv")
    assert [(t.mask, t.text, t.split) for t in triplets] == [
        (kvasir[0].mask, "polyp", "val"),
        (kvasir[1].mask, "polyp", "train"),
    ]


def test_a_split_column_naming_one_image_train_and_val_is_refused(kvasir):
    """A row copied within the CSV and marked val in its copy (or an image given two texts, one row train and one
    val) was validated on what it was trained on: the best epoch was chosen on a training image without a word (a
    random split keeps an image's rows on one side)."""
    leaked = [*kvasir, replace(kvasir[1], split="val")]  # kvasir[1] is a train row
    with pytest.raises(PromptsegError, match=rf"{kvasir[1].image.name} is in train and val rows"):
        split_triplets(leaked)
    assert split_triplets([*kvasir, replace(kvasir[1], split="test")])[0] == kvasir[:4]  # test rows: never trained on


def test_rows_of_one_image_stay_on_one_side_and_label_images_are_targets(kvasir, tmp_path, capsys):
    rows = [replace(t, split="") for t in kvasir]
    # every image named twice (a duplicate row, another text): a row-wise split validated on trained images
    doubled = rows + [replace(t, text=t.text + " (again)") for t in rows]
    train, val = split_triplets(doubled, val_fraction=0.34, seed=0)
    assert len(val) == 4 and not {t.image for t in train} & {t.image for t in val}
    assert split_triplets(rows, seed=3) == split_triplets(rows, seed=3)
    with pytest.raises(PromptsegError, match="2 training row.*of 1 image"):
        split_triplets([rows[0], replace(rows[0], text="other")])
    # a split column filled in part: a random split would train on the val rows
    with pytest.raises(PromptsegError, match=r"marks 2 row\(s\) val but leaves 1 empty"):
        split_triplets([replace(kvasir[0], split=""), *kvasir[1:]])
    with pytest.raises(PromptsegError, match="none train"):
        split_triplets([replace(t, split="val") for t in kvasir])
    # one plane of a stack named in two rows, each through a view of its own: one image, with both texts
    stack = np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8)
    views = [ArrayTriplet(stack[1], stack[1] > 70, "nuclei"), ArrayTriplet(stack.copy()[1], stack[1] > 90, "gland")]
    assert list(texts_per_image(views).values()) == [{"nuclei", "gland"}]
    # layers: a plane paired with two texts comes as two copies of its pixels, still one image
    planes = [np.full((8, 8), k, np.uint8) for k in range(4)]
    layered = [ArrayTriplet(p.copy(), p > 0, text) for p in planes for text in ("cell", "nucleus")]
    train, val = split_triplets(layered, val_fraction=0.25)
    assert len(val) == 2 and {t.image[0, 0] for t in val}.isdisjoint({t.image[0, 0] for t in train})
    # an 8-bit label image (ids 1..50): every id is the target (half range emptied it)
    labels = np.zeros((64, 64), np.uint8)
    for k in range(50):
        labels[(k // 10) * 12 : (k // 10) * 12 + 6, (k % 10) * 6 : (k % 10) * 6 + 4] = k + 1
    _, target = ArrayTriplet(np.zeros((64, 64), np.uint8), labels, "nuclei").load()
    assert target.sum() == (labels > 0).sum() == 50 * 24
    _, target = ArrayTriplet(np.zeros((64, 64), np.uint8), np.where(labels > 0, 255, 0).astype(np.uint8), "x").load()
    assert target.sum() == 50 * 24  # a 0/255 mask as before
    many = np.zeros((64, 64), np.uint8)
    many.reshape(-1)[: 200 * 16] = np.repeat(np.arange(1, 201), 16)  # 200 ids: half range cut ids 1-127
    assert ArrayTriplet(np.zeros((64, 64), np.uint8), many, "x").load()[1].sum() == 200 * 16
    blurred = np.where(labels > 0, 250, 0).astype(np.uint8)
    blurred[labels == 1] = 40  # a JPEG's soft edge: still read at half range
    assert ArrayTriplet(np.zeros((64, 64), np.uint8), blurred, "x").load()[1].sum() == 49 * 24
    # a colour mask: green on black is the target (it was read from red: empty), an opaque alpha is not
    green = np.zeros((64, 64, 4), np.uint8)
    green[..., 1], green[..., 3] = np.where(labels > 0, 255, 0), 255
    assert ArrayTriplet(np.zeros((64, 64), np.uint8), green, "x").load()[1].sum() == 50 * 24
    # CLI: nonsense values are refused by name (0 epochs became the default, 8), options CLIPSeg ignores too
    csv_path = tmp_path / "pairs.csv"
    _write_csv(csv_path, [(str(t.image), str(t.mask), t.text, t.split) for t in kvasir])
    for flags, message in (
        (["--epochs", "0"], "--epochs: must be at least 1"),
        (["--lr", "0"], "--lr: must be a finite number above 0"),
    ):
        with pytest.raises(SystemExit) as refused:
            main(["train-text", str(csv_path), "-o", str(tmp_path / "m"), *flags])
        assert refused.value.code == 2 and message in capsys.readouterr().err
    assert main(["train-text", str(csv_path), "-o", str(tmp_path / "m"), "--clipseg", "--loss", "tmca"]) == 2
    assert "--loss does not apply" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
    # --help says which settings go with --clipseg (it listed none: a user learnt them one refusal at a time)
    with pytest.raises(SystemExit):
        main(["train-text", "--help"])
    clipseg_help = " ".join(capsys.readouterr().out.split("--clipseg  ")[1].split("--clipseg-weights")[0].split())
    takes, refused = clipseg_help.split("refused")[0].split("; ")
    for key in SETTINGS:
        assert cli_flag(key) in (takes if key in CLIPSEG_SETTINGS else refused), key


def test_cli_trains_and_answers_with_the_trained_route(trained, kvasir, cache, tmp_path, capsys):
    mine = tmp_path / "mine.csv"  # other column names (absolute paths; the fixture read relative ones)
    _write_csv(mine, [(t.image, t.mask, t.text, t.split) for t in kvasir], ("frame", "mask", "caption", "split"))
    out = tmp_path / "model"
    code = main(
        [
            "train-text",
            str(mine),
            "-o",
            str(out),
            "--image-col",
            "frame",
            "--text-col",
            "caption",
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--cache-dir",
            str(cache),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["epochs_run"] == 1 and summary["feature_cache"] == {"hits": 6, "misses": 0}

    answer = tmp_path / "answer"
    code = main(
        [
            "text",
            kvasir[0].text,
            str(kvasir[0].image),
            str(kvasir[4].image),
            "--text-model",
            str(trained.path),
            "-o",
            str(answer),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    report = json.loads((answer / "report.json").read_text())
    assert report["route"] == "trained" and report["text_model"] == trained.path.name
    assert report["images"][0]["model_prompts"] == [kvasir[0].text]  # one sentence, commas kept
    labels = tifffile.imread(answer / f"{kvasir[0].image.stem}.tif")
    image, truth = kvasir[0].load()
    assert labels.shape == truth.shape and labels.max() >= 1
    model = load_text_segmenter(trained.path, device="cpu")
    expected = model.heatmap(image, kvasir[0].text) > 0.5  # less specks below the route's min_area
    assert not (labels > 0)[~expected].any() and dice(labels > 0, expected) > 0.98
    with pytest.raises(PromptsegError, match="--text-model"):
        segment_text(image, "polyp", route="trained")


def test_a_validation_fraction_of_0_trains_on_every_image_and_keeps_the_last_epoch(kvasir, cache, tmp_path, capsys):
    """`--val-fraction 0` on a CSV without a split: no image held out (one was, silently), every epoch runs whatever
    --patience says, the last epoch's weights are the model, and the presence head is not refit (nothing to check a
    refit against). Before, the run validated on one image it had been asked to train on."""
    data = tmp_path / "all.csv"
    named = [(t.image, t.mask, "adenoma" if k in (3, 5) else "polyp") for k, t in enumerate(kvasir)]
    _write_csv(data, named, ("image", "mask", "text"))
    out = tmp_path / "model"
    argv = ["train-text", str(data), "-o", str(out), "--val-fraction", "0", "--epochs", "2", "--patience", "1"]
    code = main([*argv, "--batch-size", "3", "--negatives", "1", "--cache-dir", str(cache), "--device", "cpu"])
    assert code == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["best_val_dice"] is None and summary["best_epoch"] == summary["epochs_run"] == 2
    assert "skipped" in summary["presence_refit"]
    assert "epoch 1: no validation images" in captured.err and "epoch 2: no validation images" in captured.err
    config = json.loads((out / "text_segmenter.json").read_text())
    assert (config["training"]["train"], config["training"]["val"], config["training"]["val_negatives"]) == (6, 0, 0)
    assert all("val_dice" not in record for record in config["history"])
    kept = load_tensors(out / "model.safetensors", "model")
    last = load_tensors(out / "last" / "model.safetensors", "last")
    assert kept.keys() == last.keys() and all(torch.equal(kept[k], last[k]) for k in kept)  # the last epoch's


def test_clipseg_finetune_end_to_end_with_a_tiny_model(tiny_clipseg_dir, kvasir, tmp_path):  # noqa: F811
    result = finetune_clipseg(
        kvasir, tmp_path / "clipseg", weights=tiny_clipseg_dir, epochs=2, batch_size=2, device="cpu"
    )
    config = json.loads((result.path / "text_segmenter.json").read_text())
    assert config["kind"] == "clipseg" and config["training"]["lr"] == 2e-4
    # as readable as the folder's other files (safetensors writes its files private, 0600)
    modes = {f.name: f.stat().st_mode & 0o777 for f in result.path.iterdir() if f.is_file()}
    assert len(set(modes.values())) == 1, modes
    assert len(result.history) == 2 and all(np.isfinite(h["train_loss"]) for h in result.history)
    model = load_text_segmenter(result.path, device="cpu")
    from napari_promptseg.models.clipseg import load_clipseg

    base = load_clipseg(tiny_clipseg_dir, device="cpu")
    image, _ = kvasir[0].load()
    tuned = model.heatmaps(image, ["polyp"])
    assert tuned.shape == (1, *image.shape[:2])
    assert not np.allclose(tuned, base.heatmaps(image, ["polyp"]), atol=1e-4)  # the weights were trained
    answer = segment_text(image, "polyp", text_model=result.path, device="cpu")
    assert answer.route == "trained" and answer.labels.shape == image.shape[:2]


def test_clipseg_finetuning_tells_the_download_of_its_base_model(fake_hub, tiny_clipseg_dir, kvasir, tmp_path):  # noqa: F811
    """Fine-tuning CLIPSeg without --clipseg-weights downloads the base model: its progress was huggingface_hub's
    bars only, not the run's progress (the widget's panel, the CLI's line)."""
    from napari_promptseg.models import get_card

    card = get_card("clipseg_rd64_refined")
    fake_hub.add(card.repo_id, tiny_clipseg_dir, card.revision)
    told: list[str] = []
    finetune_clipseg(
        kvasir,
        tmp_path / "clipseg",
        epochs=1,
        batch_size=2,
        device="cpu",
        progress=lambda fraction, message: told.append(message),
    )
    downloads = [m for m in told if m.startswith("downloading clipseg_rd64_refined: ")]
    assert downloads and downloads[-1].endswith(" KB"), told  # the tiny model's weights, told in KB


def test_clipseg_weights_missing_are_told_with_the_option_train_text_takes(kvasir, tmp_path, capsys):
    """`train-text --clipseg` offline without CLIPSeg's weights said "pass the model directory with --text-weights",
    an option of `promptseg text` that train-text refuses; its own is --clipseg-weights (the widget's field by name)."""
    csv_path = tmp_path / "pairs.csv"
    _write_csv(csv_path, [(str(t.image), str(t.mask), t.text, t.split) for t in kvasir])
    assert main(["train-text", str(csv_path), "-o", str(tmp_path / "m"), "--clipseg"]) == 2
    error = capsys.readouterr().err
    assert "pass the model directory with --clipseg-weights" in error and "--text-weights" not in error, error
    from napari_promptseg.methods.text_training import train_text_model

    with pytest.raises(WeightsError, match="pass the model directory with 'CLIPSeg weights'"):
        train_text_model(kvasir, tmp_path / "w", clipseg=True, name=lambda key: "'CLIPSeg weights'")


def test_clipseg_with_a_validation_fraction_of_0_runs_every_epoch_on_every_image(
    tiny_clipseg_dir,  # noqa: F811
    kvasir,
    tmp_path,
):
    unsplit = [replace(t, split="") for t in kvasir]
    result = finetune_clipseg(
        unsplit,
        tmp_path / "clipseg",
        weights=tiny_clipseg_dir,
        epochs=2,
        batch_size=3,
        patience=1,
        val_fraction=0.0,
        device="cpu",
    )
    config = json.loads((result.path / "text_segmenter.json").read_text())
    assert (config["training"]["train"], config["training"]["val"]) == (6, 0)
    assert result.best_val_dice is None and result.best_epoch == result.epochs_run == 2 and not result.stopped_early


def test_clipseg_takes_plain_tuples_as_the_fusion_decoder_does(tiny_clipseg_dir, kvasir, tmp_path):  # noqa: F811
    """`train_text_model(tuples, ..., clipseg=True)` (and finetune_clipseg) failed halfway with "'tuple' object has
    no attribute 'split'", where the fusion decoder takes (image, mask, text[, split]) tuples of paths or arrays."""
    from napari_promptseg.methods.text_training import train_text_model

    rows = [(t.image, t.mask, t.text, t.split) for t in kvasir[:3]] + [(*kvasir[4].load(), "polyp", "val")]
    result = train_text_model(
        rows, tmp_path / "clipseg", settings={"epochs": 1}, clipseg=True, clipseg_weights=tiny_clipseg_dir
    )
    config = json.loads((result.path / "text_segmenter.json").read_text())
    assert (config["training"]["train"], config["training"]["val"]) == (3, 1)


def test_epochs_balance_texts_and_draw_negative_pairs(kvasir, cache, litemedsam):
    """Five frames named "polyp" and one "adenoma" (any two class names do): the epoch plan, not the model."""
    samples = FeatureStore(cache, litemedsam).samples(kvasir)
    samples = [replace(s, text="adenoma" if k == 5 else "polyp") for k, s in enumerate(samples)]
    plain = epoch_samples(samples, 3, seed=7)
    expected = np.random.default_rng([7, 3]).permutation(6)  # the order runs without the options always had
    assert [id(s) for s in plain] == [id(samples[i]) for i in expected]

    balanced = epoch_samples(samples, 0, seed=0, balance=True)
    assert len(balanced) == 6 and sorted(s.text for s in balanced) == ["adenoma"] * 3 + ["polyp"] * 3
    assert all(any(s is b for s in samples) for b in balanced)  # the positives themselves, not copies

    epochs = [epoch_samples(samples, e, seed=0, negatives=1.0) for e in range(4)]
    assert [len(e) for e in epochs] == [12] * 4
    drawn = []
    for epoch in epochs:
        negatives = [s for s in epoch if not any(s is p for p in samples)]
        assert len(negatives) == 6
        for s in negatives:
            own = {p.text for p in samples if p.triplet.image == s.triplet.image}
            assert s.text in {"polyp", "adenoma"} and s.text not in own
            assert s.target.shape == samples[0].target.shape and not s.target.any()
        drawn.append([(str(s.triplet.image), s.text) for s in negatives])
    assert drawn[0] != drawn[1]  # drawn again every epoch ...
    again = epoch_samples(samples, 1, seed=0, negatives=1.0)
    assert [(str(s.triplet.image), s.text) for s in again if not any(s is p for p in samples)] == drawn[1]  # seeded
    with pytest.raises(PromptsegError, match="negative pairs need texts"):
        epoch_samples([replace(s, text="polyp") for s in samples], 0, seed=0, negatives=1.0)
    with pytest.raises(PromptsegError, match="negatives"):
        TrainingConfig(negatives=-1)


def test_training_with_negatives_validates_wrong_names_too(kvasir, cache, tmp_path):
    named = [replace(t, text="adenoma" if k in (3, 5) else "polyp") for k, t in enumerate(kvasir)]
    messages: list[str] = []
    result = train_text_segmenter(
        named,
        tmp_path / "negatives",
        cache_dir=cache,
        device="cpu",
        epochs=1,
        batch_size=4,
        balance=True,
        negatives=1.0,
        progress=lambda f, m: messages.append(m),
    )
    config = json.loads((result.path / "text_segmenter.json").read_text())
    training = config["training"]
    assert (training["train"], training["val"], training["val_negatives"], training["texts"]) == (4, 2, 2, 2)
    assert training["balance"] and training["negatives"] == 1.0
    assert training["torch_threads"] == training["threads"] == 1  # fixed: what a repeat of the run needs
    assert any(m.startswith("epoch 1/1, step 2/2") for m in messages)  # 4 positives + 4 negatives per epoch
    # the names are the model's vocabulary: another name is answered with what it learnt for the nearest of them
    # (a gland and lung model asked for "nuclei" gave the glands without a word), and says so
    assert training["vocabulary"] == ["adenoma", "polyp"]
    image, model = kvasir[4].load()[0], load_text_segmenter(result.path, device="cpu")
    foreign = segment_text(image, "nuclei", text_model=model)
    assert any("'nuclei' is none of the 2 texts" in w and "'adenoma', 'polyp'" in w for w in foreign.warnings)
    assert not any("texts" in w for w in segment_text(image, " Polyp", text_model=model).warnings)


def test_class_names_that_differ_only_in_case_are_refused(kvasir, tmp_path):
    """Class names written two ways ("polyp" in some rows, "Polyp" in others) were two classes to --balance and
    --negatives: each "polyp" image was paired with "Polyp" and an empty mask, though the (lower-casing) sentence
    model reads them alike, so the model was taught both that the polyp is there and that it is not."""
    names = ["polyp", "Polyp", "lung", "polyp", "lung", "polyp"]
    rows = [replace(t, text=name) for t, name in zip(kvasir, names, strict=True)]
    with pytest.raises(PromptsegError, match=r"'Polyp' .*and 'polyp' .*differ only in case or spacing"):
        train_text_segmenter(rows, tmp_path / "model", device="cpu", negatives=1.0)
    with pytest.raises(PromptsegError, match="differ only in case or spacing"):
        train_text_segmenter(rows, tmp_path / "model", device="cpu", balance=True)
    assert not (tmp_path / "model").exists()


def test_images_trained_on_are_not_encoded_again(trained, kvasir, litemedsam):
    model = load_text_segmenter(trained.path, device="cpu")
    assert model.feature_dirs  # the training run's cache, recorded in the model's config
    image, _ = kvasir[0].load()
    encoder = model.segmenter._encoder()
    calls = []
    handle = encoder.register_forward_hook(lambda m, i, o: calls.append(1) and None)
    try:
        cached = model.mask_logits(image, ["polyp"])
        assert calls == []
        fresh = TrainedTextSegmenter(model.decoder, model.segmenter, model.text.embedder).mask_logits(image, ["polyp"])
        assert calls == [1]
    finally:
        handle.remove()
    np.testing.assert_allclose(cached, fresh, atol=1e-4)  # fresh features are rounded as the cache stores them


def test_text_resume_ignores_the_model_folders_feature_cache_and_training_state(trained, kvasir, tmp_path, capsys):
    """Bug hunt 3: the run signature hashed every file under --text-model, its feature cache (MODEL_DIR/cache, ~3 MB
    per training image) and its resume state (last/) too: another model trained with --cache-dir MODEL_DIR/cache, or
    a resumed training that did not beat the best epoch, made `text --resume` refuse its own results ("results of
    another run") though the model that answers was unchanged, and every run hashed gigabytes of features."""
    model = tmp_path / "model"
    shutil.copytree(trained.path, model)
    (model / "cache").mkdir()
    answer = tmp_path / "answer"
    argv = ["text", "polyp", str(kvasir[4].image), "--text-model", str(model), "-o", str(answer), "--device", "cpu"]
    assert main(argv) == 0
    (model / "cache" / "0123456789abcdef.safetensors").write_bytes(b"features of another training image")
    (model / "last" / "state.json").write_text("{}")  # a training resumed without a better epoch
    assert main([*argv, "--resume"]) == 0
    assert json.loads((answer / "report.json").read_text())["batch"]["resumed"] == 1
    # the weights and the config are the model: a change to them is another run
    (model / "text_segmenter.json").write_text((model / "text_segmenter.json").read_text().replace("0.5", "0.6", 1))
    assert main([*argv, "--resume"]) == 2
    assert "results of another run" in capsys.readouterr().err


@pytest.mark.parametrize("setting", [{"decoder_lr": float("inf")}, {"decoder_lr": float("nan")}, {"lr": float("nan")}])
def test_training_refuses_a_learning_rate_that_is_not_a_number(setting):
    """Bug hunt 3: `train-text --decoder-lr inf` trained and saved a model of NaN weights as the best epoch (val Dice
    0.000), and `--decoder-lr nan` wrote NaN into text_segmenter.json (not JSON): only negative rates were refused."""
    with pytest.raises(PromptsegError, match="lr must be a finite number"):
        TrainingConfig(**setting)


@pytest.mark.parametrize("value", ["inf", "nan", "-1"])
def test_cli_train_text_refuses_a_decoder_lr_that_is_not_a_rate(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as info:
        main(["train-text", str(tmp_path / "rows.csv"), "-o", str(tmp_path / "model"), "--decoder-lr", value])
    assert info.value.code == 2 and "--decoder-lr" in capsys.readouterr().err
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--clipseg", "--resume"], "--clipseg fine-tunes CLIPSeg with medvlsm's recipe; --resume does not apply"),
        (["--clipseg", "--cache-dir", "f"], "--cache-dir does not apply to it"),
        (["--clipseg-weights", "w"], "--clipseg-weights is the CLIPSeg model --clipseg fine-tunes; give --clipseg"),
        (["--refit-presence", "--epochs", "4"], "it does not go with --epochs"),
    ],
)
def test_cli_train_text_refuses_options_its_trainer_would_ignore(tmp_path, capsys, flags, message):
    """`train-text --clipseg --resume` fine-tuned CLIPSeg from the start, --cache-dir and --clipseg-weights without
    --clipseg were ignored, and --refit-presence trained nothing with the --epochs given: each without a word. They
    are refused before anything loads (the Train text model widget goes through the same check)."""
    csv_path = tmp_path / "rows.csv"
    csv_path.write_text("image,mask,text\n")  # read by no one: the options are refused first
    assert main(["train-text", str(csv_path), "-o", str(tmp_path / "model"), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "model").exists()


def test_train_text_model_takes_numpy_whole_numbers_and_refuses_bools_as_counts(tmp_path):
    """A Python caller's ``np.int64(3)`` epochs (a value read from an array or a table) was refused as "must be a
    whole number"; a bool, which is an int to Python, is no count of epochs."""
    from napari_promptseg.methods.text_training.trainer import check_settings

    check_settings({"epochs": np.int64(3), "batch_size": np.int32(2), "patience": 4}, cli_flag)
    with pytest.raises(PromptsegError, match="--epochs must be a whole number, at least 1, got True"):
        check_settings({"epochs": True}, cli_flag)


def test_cli_train_text_refuses_a_negative_seed_before_anything_loads(tmp_path, capsys):
    """`train-text --seed -1` loaded both encoders and encoded every image, then failed with numpy's traceback
    ("expected non-negative integer"): a seed is a whole number from 0 up, as the widget's seed box has it."""
    csv_path = tmp_path / "rows.csv"
    csv_path.write_text("image,mask,text\n")  # read by no one: the seed is refused first
    assert main(["train-text", str(csv_path), "-o", str(tmp_path / "model"), "--seed", "-1"]) == 2
    assert "--seed must be a whole number, at least 0, got -1" in capsys.readouterr().err
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"val_fraction": float("nan")}, "val_fraction must lie from 0 to 1, got nan"),
        ({"val_fraction": 1.5}, "val_fraction must lie from 0 to 1"),
        ({"batch_size": 2.0}, "batch_size must be a whole number, at least 1, got 2.0"),
        ({"seed": 1.5}, "seed must be a whole number, at least 0"),
    ],
)
def test_python_training_checks_its_settings_as_the_cli_does(kvasir, tmp_path, setting, message):
    """`train_text_segmenter(..., batch_size=2.0)` (the README's Python way) loaded the models, encoded every image
    and failed in its first step ("slice indices must be integers"), val_fraction=nan failed in the split, and 1.5
    held out all images but one without a word: the CLI's and the widget's checks were in their shared caller only.
    TrainingConfig checks them, for every way in."""
    with pytest.raises(PromptsegError, match=message):
        train_text_segmenter(kvasir, tmp_path / "model", device="cpu", **setting)
    assert not (tmp_path / "model").exists()


def test_cli_text_names_a_relative_text_model_absolutely(trained, kvasir, tmp_path, monkeypatch):
    """Bug hunt 3: `text --text-model my-polyps/` kept the path as typed: report.json's parameters named it relative
    to wherever the run was, and Dask workers in another directory (the reason the library is made absolute) could
    not find it. The run's files are named absolutely, as the library, the references and the outputs are."""
    monkeypatch.chdir(trained.path.parent)
    answer = tmp_path / "answer"
    argv = ["text", "polyp", str(kvasir[4].image), "--text-model", trained.path.name, "-o", str(answer)]
    assert main([*argv, "--device", "cpu"]) == 0
    report = json.loads((answer / "report.json").read_text())
    assert report["parameters"]["text_model"] == str(trained.path.absolute())


LONG_TEXT = "a round pink polyp on the wall of the colon " * 30  # ~300 MiniLM tokens, more than its 256


def test_texts_longer_than_the_sentence_model_reads_are_said_to_be_cut(kvasir, cache, tmp_path):
    """MiniLM reads 256 tokens: a longer training text or prompt was cut without a word (two texts differing after
    their 256th token trained as one, a prompt's end had no effect). Now training names how many texts are cut, at
    the start and in its result, and the first image answering a cut prompt says so (once, not per image)."""
    messages = []
    data = [replace(kvasir[0], text=LONG_TEXT), *kvasir[1:]]
    # one epoch: the warnings come before the epochs, and the prompts below need only a model that loads
    result = train_text_segmenter(
        data, tmp_path / "m", cache_dir=cache, device="cpu", progress=lambda f, m: messages.append(m), epochs=1
    )
    texts = len({t.text for t in data})
    assert len(result.warnings) == 1 and f"1 of {texts} text(s) are longer than" in result.warnings[0], result.warnings
    assert "256 tokens" in result.warnings[0]
    assert any(m.startswith("warning: 1 of") for m in messages)  # said at the start, before the epochs

    image, _ = kvasir[0].load()
    first = segment_text(image, LONG_TEXT, text_model=result.path, device="cpu")
    cut = [w for w in first.warnings if "was cut" in w]
    assert len(cut) == 1 and cut[0].startswith(f"the prompt '{LONG_TEXT[:57]}...' is "), first.warnings
    assert "the trained text model (all_minilm_l6_v2) reads 256: it was cut after '..." in cut[0]
    again = segment_text(image, LONG_TEXT, text_model=result.path, device="cpu")
    assert not any("was cut" in w for w in again.warnings)  # once per run, not once per image
    short = segment_text(image, "polyp", text_model=result.path, device="cpu")
    assert not any("was cut" in w for w in short.warnings)


def test_a_training_run_of_short_texts_warns_of_nothing(trained):
    assert trained.warnings == []


def test_a_training_image_tiff_of_several_images_says_only_its_first_is_trained_on(kvasir, tmp_path):
    """A CSV row's image saved as a TIFF of several images (a multi-position OME-TIFF) was trained on at its first
    image, without a word of the others. Said at the start (before the models load), naming the row."""
    image, _ = kvasir[0].load()
    path = tmp_path / "positions.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(image[:64, :64, 0], metadata={"axes": "YX", "Name": "A1"})
        tif.write(image[64:128, :64, 0], metadata={"axes": "YX", "Name": "A2"})
    rows = [
        ("positions.ome.tif", str(kvasir[0].mask), "polyp", "train"),
        (str(kvasir[4].image), str(kvasir[4].mask), "polyp", "val"),
    ]
    _write_csv(tmp_path / "rows.csv", rows)
    (tmp_path / "taken").write_text("a file where the model's folder would be")  # stops the run before the models
    told = []
    with pytest.raises(PromptsegError, match="a file, not a directory"):
        train_text_segmenter(tmp_path / "rows.csv", tmp_path / "taken", progress=lambda f, m: told.append(m))
    said = "holds 2 images (TIFF series: A1, A2); only the first (A1, (64, 64)) is read"
    assert any(m.startswith("warning: ") and "rows.csv: row 2: " in m and said in m for m in told), told


def test_multichannel_images_given_their_channel_axis_train_as_their_channels(trained, kvasir, cache, tmp_path, capsys):
    """A (C, Y, X) image (channels first, its axes unnamed) was a stack of C planes to train-text: refused in a CSV
    ("a stack of 3 planes"), and from Python ("ambiguous; pass channel_axis", which no triplet took), with no way to
    say its first axis holds channels. channel_axis (CLI --channel-axis) reads it as the colour frame it was made of:
    the CLI's run finds every image's features in the cache the colour frames filled."""
    from napari_promptseg.methods.text_training import train_text_model
    from napari_promptseg.methods.text_training.data import training_triplets

    rgb, mask = kvasir[0].load()
    cyx = np.ascontiguousarray(rgb.transpose(2, 0, 1))
    image, same = ArrayTriplet(cyx, mask, "polyp", channel_axis=0).load()
    assert np.array_equal(image, rgb) and np.array_equal(same, mask)
    [given] = training_triplets([(cyx, mask, "polyp")], channel_axis=0)  # a tuple, as train_text_model takes it
    assert np.array_equal(given.load()[0], rgb)
    green = ArrayTriplet(cyx, mask, "polyp", channel_axis=0, channels=(1,)).load()[0]
    assert np.array_equal(green, rgb[..., 1:2])

    rows = []
    for k in (0, 4):  # one to train on, one to validate on (their colour frames' features are in the cache)
        path = tmp_path / f"frame{k}.tif"
        tifffile.imwrite(path, np.ascontiguousarray(kvasir[k].load()[0].transpose(2, 0, 1)), photometric="minisblack")
        rows.append((path.name, str(kvasir[k].mask), "polyp", "train" if k == 0 else "val"))
    _write_csv(tmp_path / "rows.csv", rows)
    with pytest.raises(PromptsegError, match=r"row 2: .*frame0.tif is a stack of 3 planes.*--channel-axis 0"):
        train_text_model(tmp_path / "rows.csv", tmp_path / "refused", cache_dir=cache, device="cpu")
    out = tmp_path / "model"
    argv = ["train-text", str(tmp_path / "rows.csv"), "-o", str(out), "--channel-axis", "0", "--epochs", "1"]
    assert main([*argv, "--cache-dir", str(cache), "--device", "cpu"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["feature_cache"] == {"hits": 2, "misses": 0} and summary["epochs_run"] == 1
    # the package's own function, given arrays
    arrays = [
        (np.ascontiguousarray(t.load()[0].transpose(2, 0, 1)), t.load()[1], "polyp", s)
        for t, s in ((kvasir[0], "train"), (kvasir[4], "val"))
    ]
    result = train_text_segmenter(arrays, tmp_path / "python", channel_axis=0, cache_dir=cache, device="cpu", epochs=1)
    assert result.feature_cache == {"hits": 2, "misses": 0}


@pytest.fixture(scope="module")
def multichannel_model(kvasir, cache, tmp_path_factory):
    """A text model trained on (C, Y, X) frames (channel axis 0), one epoch on features the colour frames cached."""
    arrays = [
        (np.ascontiguousarray(t.load()[0].transpose(2, 0, 1)), t.load()[1], "polyp", s)
        for t, s in ((kvasir[0], "train"), (kvasir[4], "val"))
    ]
    out = tmp_path_factory.mktemp("models") / "channels-first"
    train_text_segmenter(arrays, out, channel_axis=0, cache_dir=cache, device="cpu", epochs=1)
    return out


def test_a_text_model_reads_images_as_it_was_trained_on_them(multichannel_model, kvasir, tmp_path, capsys):
    """A model trained on (C, Y, X) images (--channel-axis 0) did not record it: at inference a (C, Y, X) image given
    without the axis was refused as ambiguous (Python) or segmented as a stack of 3 planes (CLI). The model's
    reading is recorded and applied by default; a choice contradicting it is refused naming both."""
    config = json.loads((multichannel_model / "text_segmenter.json").read_text())
    assert config["training"]["image_channels"] == {"channel_axis": 0, "channels": None, "count": 3}
    rgb = kvasir[1].load()[0][::2, ::2]  # a frame not trained on, small
    cyx = np.ascontiguousarray(rgb.transpose(2, 0, 1))
    expected = segment_text(rgb, "polyp", text_model=multichannel_model, device="cpu", channel_axis=-1)
    result = segment_text(cyx, "polyp", text_model=multichannel_model, device="cpu")
    assert np.array_equal(result.labels, expected.labels)
    assert np.array_equal(result.heatmap, expected.heatmap)
    with pytest.raises(PromptsegError, match=r"trained on 3-channel images .*2 channel\(s\) given"):
        segment_text(cyx, "polyp", text_model=multichannel_model, device="cpu", channels=[0, 1])
    with pytest.raises(PromptsegError, match=r"trained on 3-channel images .*has 2 channels on axis 0"):
        segment_text(cyx[:2], "polyp", text_model=multichannel_model, device="cpu", channel_axis=0)

    frame = tmp_path / "frame.tif"
    tifffile.imwrite(frame, cyx, photometric="minisblack")
    out = tmp_path / "out"
    argv = ["text", "polyp", str(frame), "-o", str(out), "--text-model", str(multichannel_model), "--device", "cpu"]
    assert main(argv) == 0
    capsys.readouterr()
    labels = tifffile.imread(out / "frame.tif")
    assert labels.shape == rgb.shape[:2] and np.array_equal(labels > 0, expected.labels > 0)
    assert main([*argv[:4], str(tmp_path / "two"), *argv[5:], "--channels", "0"]) != 0
    assert "trained on 3-channel images" in capsys.readouterr().err


def test_a_fine_tuned_clipseg_reads_images_as_it_was_trained_on_them(tiny_clipseg_dir, kvasir, tmp_path):  # noqa: F811
    """CLIPSeg fine-tuned on (C, Y, X) images records their channel axis too, and its loaded model applies it: a
    (C, Y, X) image given without it was refused as ambiguous."""
    frames = [np.ascontiguousarray(t.load()[0][::4, ::4].transpose(2, 0, 1)) for t in kvasir[:2]]
    masks = [t.load()[1][::4, ::4] for t in kvasir[:2]]
    data = [(f, m, "polyp", s) for f, m, s in zip(frames, masks, ("train", "val"), strict=True)]
    out = tmp_path / "clipseg"
    finetune_clipseg(data, out, weights=tiny_clipseg_dir, epochs=1, device="cpu", channel_axis=0)
    config = json.loads((out / "text_segmenter.json").read_text())
    assert config["training"]["image_channels"] == {"channel_axis": 0, "channels": None, "count": 3}
    model = load_text_segmenter(out, device="cpu")
    first = segment_text(frames[0], "polyp", text_model=model, refine=False, device="cpu")
    colour = segment_text(frames[0].transpose(1, 2, 0), "polyp", text_model=model, refine=False, device="cpu")
    assert np.array_equal(first.heatmap, colour.heatmap)


def test_a_pasted_paragraph_as_the_prompt_is_named_by_its_start_in_the_warnings(multichannel_model, kvasir):
    """A long prompt (a pasted description) was repeated whole, twice, in the warning that the model was not trained
    on it, and again in 'nothing found for ...': a wall of text on the CLI's stderr, the widget's notifications and
    report.json. It is named by its start, as the warning of the cut prompt names it."""
    cyx = np.ascontiguousarray(kvasir[1].load()[0][::4, ::4].transpose(2, 0, 1))
    paragraph = "a pink raised polyp with a smooth surface on the colon wall " * 40
    result = segment_text(cyx, paragraph, text_model=multichannel_model, device="cpu", heatmap_threshold=1.0)
    said = [w for w in result.warnings if "none of the 1 texts" in w or "nothing found" in w]
    assert len(said) == 2, result.warnings
    assert all(len(w) < 400 and "a pink raised polyp" in w for w in said), said


def test_a_model_cancelled_before_its_first_epoch_says_to_resume_it(kvasir, cache, tmp_path):
    """A run cancelled in its first epoch leaves its state (last/) and no model: given as the text model, the folder
    was 'no text_segmenter.json; is it the output directory of `promptseg train-text`?', which it is. It says the
    training stopped before a model was saved, and how to resume it."""
    out = tmp_path / "stopped"
    stepped = []  # cancelled once a training step was told (the features encoded)

    def told(fraction, message):
        stepped.extend(message.split(",")[:1] if message.startswith("epoch 1/") else [])

    with pytest.raises(CancelledError, match="cancelled at epoch 1, step 1"):
        train_text_segmenter(
            kvasir, out, cache_dir=cache, device="cpu", progress=told, cancel=lambda: bool(stepped), **FAST
        )
    rgb = kvasir[1].load()[0][::4, ::4]
    with pytest.raises(WeightsError, match=r"stopped before its first epoch ended.*--resume"):
        segment_text(rgb, "polyp", text_model=out, device="cpu")


def test_a_model_folder_without_its_weights_file_says_what_is_missing_and_what_to_do(multichannel_model, tmp_path):
    """A model folder whose model.safetensors was deleted said only '.../model.safetensors does not exist': it says
    it is a text model missing its weights file, and to copy it back or train again (its last epoch's in last/)."""
    copy = tmp_path / "no-weights"
    shutil.copytree(multichannel_model, copy, ignore=shutil.ignore_patterns("cache"))
    (copy / "model.safetensors").unlink()
    with pytest.raises(WeightsError) as raised:
        load_text_segmenter(copy, device="cpu")
    said = str(raised.value)
    assert f"text model {copy}" in said and "model.safetensors" in said and "missing" in said, said
    assert "copy it back" in said and "--overwrite" in said and str(copy / "last" / "model.safetensors") in said, said


def test_promptseg_text_records_the_channels_each_image_was_read_with(multichannel_model, kvasir, tmp_path, capsys):
    """report.json said the channel axis typed (None) when the model's was applied, and no image's record said which
    was used; a (Z, C, Y, X) stack given without --channel-axis got the generic '4D array ... time-lapse' refusal. Each
    image records the channel axis and channels it was read with and where they came from; the stack's channel axis
    is the model's (its planes' axis 0 is the stack's 1)."""
    cyx = np.ascontiguousarray(kvasir[0].load()[0][::4, ::4].transpose(2, 0, 1))
    frame, stack = tmp_path / "frame.tif", tmp_path / "stack.tif"
    tifffile.imwrite(frame, cyx, photometric="minisblack")
    tifffile.imwrite(stack, np.stack([cyx, cyx[:, ::-1]]), photometric="minisblack")
    out = tmp_path / "out"
    argv = ["text", "polyp", str(frame), str(stack), "-o", str(out), "--text-model", str(multichannel_model)]
    argv += ["--heatmap-threshold", "0.1"]  # a model of one epoch: its faint answer, found
    assert main([*argv, "--device", "cpu"]) == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    read = {Path(r["input"]).name: r.get("image_channels") for r in report["images"]}
    model = "the text model's training"
    assert read == {
        "frame.tif": {"channel_axis": 0, "channels": None, "from": model},
        "stack.tif": {"channel_axis": 1, "channels": None, "from": model},
    }
    labels, planes = tifffile.imread(out / "frame.tif"), tifffile.imread(out / "stack.tif")
    assert labels.max() >= 1 and planes.shape == (2, *labels.shape) and np.array_equal(planes[0] > 0, labels > 0)

    given = tmp_path / "given"
    assert main([*argv[:4], "-o", str(given), *argv[6:], "--channel-axis", "0", "--device", "cpu"]) == 0
    report = json.loads((given / "report.json").read_text())
    assert report["images"][0]["image_channels"] == {"channel_axis": 0, "channels": None, "from": "given"}

    four = tmp_path / "four.tif"  # no axis of 3: a time-lapse of stacks, or channels elsewhere; the model's axis said
    tifffile.imwrite(four, np.stack([np.concatenate([cyx, cyx[:2]])] * 2), photometric="minisblack")
    capsys.readouterr()
    assert main([*argv[:2], str(four), "-o", str(tmp_path / "four"), *argv[6:], "--device", "cpu"]) != 0
    said = capsys.readouterr().err
    assert "trained on 3-channel images (channel axis 0)" in said and "(axis 1)" in said and "--channel-axis" in said


def test_the_validation_split_is_said_at_the_start_and_in_the_summary(trained, kvasir, cache, tmp_path, capsys):
    """How many rows and images train and validate, and where the split came from: it was said nowhere (only the
    model's JSON held the row counts), so a val Dice of one image held out at random read as the model's worth."""
    data = tmp_path / "nosplit.csv"
    _write_csv(data, [(t.image, t.mask, t.text) for t in kvasir], ("image", "mask", "text"))
    argv = ["train-text", str(data), "-o", str(tmp_path / "model"), "--epochs", "1", "--batch-size", "5"]
    assert main([*argv, "--cache-dir", str(cache), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    said = "data: 5 training rows of 5 images, 1 validation row of 1 image (a random 20% of the images, seed 0)"
    assert said in captured.err, captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["split"] == {
        "train_rows": 5,
        "train_images": 5,
        "val_rows": 1,
        "val_images": 1,
        "test_rows": 0,
        "source": "a random 20% of the images, seed 0",
    }
    # the CSV's own split column (the module's run): said as such
    assert trained.split["source"] == "the split column" and (
        trained.split["train_rows"],
        trained.split["val_rows"],
    ) == (4, 2)


def test_a_dataset_folder_given_for_the_csv_is_told_how_to_make_the_csv(kvasir, tmp_path, capsys):
    """A folder of images/ and masks/ given where the CSV goes was "no such CSV file", which the folder plainly is
    not missing: now it is named a folder, with the CSV's form and a row of it."""
    (tmp_path / "data" / "images").mkdir(parents=True)
    code = main(["train-text", str(tmp_path / "data"), "-o", str(tmp_path / "model")])
    err = capsys.readouterr().err
    assert code != 0 and "is a folder, not a CSV" in err and "no such CSV" not in err, err
    assert "images/0001.png,masks/0001.png,polyp" in err


def test_every_bad_row_is_named_at_once_before_the_models_load(kvasir, tmp_path):
    """A CSV row whose mask has another size (or whose file is not an image) was found when its image's turn came
    to be encoded: after the models had loaded and every row before it was encoded, and one row at a time (fix one,
    wait again, meet the next). Now every row is read first and the bad ones named together."""
    rows = [(str(t.image), str(t.mask), "polyp", t.split) for t in kvasir]
    rows[1] = (rows[1][0], str(kvasir[0].mask), "polyp", "train")  # another frame's mask: another size
    (tmp_path / "not an image.png").write_text("text, not pixels")
    rows[5] = (str(tmp_path / "not an image.png"), rows[5][1], "polyp", "val")
    _write_csv(tmp_path / "bad.csv", rows)
    messages: list[str] = []
    with pytest.raises(PromptsegError) as info:
        train_text_segmenter(
            tmp_path / "bad.csv", tmp_path / "model", progress=lambda f, m: messages.append(m), device="cpu", epochs=1
        )
    said = str(info.value)
    assert "row 3: " in said and "but the image is" in said and "row 7: " in said and "cannot be read" in said, said
    assert not any(m.startswith("loading") for m in messages), messages
    assert not (tmp_path / "model" / "text_segmenter.json").exists()


def test_a_disk_that_fills_up_mid_run_says_which_epoch_is_kept_and_to_resume(
    kvasir, cache, tmp_path, capsys, monkeypatch
):
    """The disk filling up at an epoch's end said only "out/last: No space left on device": not that the best epoch
    so far is a whole model there, nor that --resume goes on once there is room (the Ctrl+C note says both). The
    second epoch's state save stands in for the disk that filled up."""
    import errno

    from napari_promptseg.methods.text_training import trainer

    real = trainer.save_resume_state
    saves = []

    def second_save_finds_the_disk_full(out, *args, **kwargs):
        saves.append(out)
        if len(saves) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(out / "last.tmp" / "model.safetensors"))
        return real(out, *args, **kwargs)

    monkeypatch.setattr(trainer, "save_resume_state", second_save_finds_the_disk_full)
    data = tmp_path / "rows.csv"
    _write_csv(data, [(t.image, t.mask, t.text, t.split) for t in kvasir])
    out = tmp_path / "model"
    argv = ["train-text", str(data), "-o", str(out), "--epochs", "2", "--batch-size", "4", "--cache-dir", str(cache)]
    assert main([*argv, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert (
        "No space left on device at the end of epoch 2" in err and f"{out} holds the best epoch so far (epoch " in err
    ), err
    assert "--resume (widget: resume) goes on from the end of epoch 1" in err, err
    monkeypatch.setattr(trainer, "save_resume_state", real)  # room again: the run goes on from its first epoch
    assert main([*argv, "--device", "cpu", "--resume"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["epochs_run"] == 2


def test_a_model_trained_on_colour_refuses_a_two_channel_image_naming_both(trained, kvasir, tmp_path, capsys):
    """A model trained on colour frames answered a 2-channel image (two fluorescence stains) without a word, its
    channels fed as red and green: the run's channel counts are recorded and another kind of image is refused, at
    inference from Python, the CLI and the widget alike (one check, in the model). Gray stays a colour model's."""
    model = load_text_segmenter(trained.path, device="cpu")
    assert json.loads((trained.path / "text_segmenter.json").read_text())["training"]["image_channel_counts"] == [3]
    image, _ = kvasir[0].load()
    two = np.ascontiguousarray(image[..., :2])
    refused = r"the image has 2 channels, but the text model .* was trained on gray or colour"
    with pytest.raises(PromptsegError, match=refused):
        model.mask_logits(two, ["polyp"])
    assert model.mask_logits(image[..., 1], ["polyp"]).shape == (1, *image.shape[:2])  # gray: a colour model's
    tifffile.imwrite(tmp_path / "two.tif", two)
    code = main(
        ["text", "polyp", str(tmp_path / "two.tif"), "--text-model", str(trained.path), "-o", str(tmp_path / "out")]
    )
    err = capsys.readouterr().err
    assert code != 0 and "two.tif: the image has 2 channels" in err and "--channels 0" in err, err
