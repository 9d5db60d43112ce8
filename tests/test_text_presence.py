"""Wrong names give nothing: the trained text decoder's target-presence head, and its fast inference path.

Real images of two targets (Kvasir polyps, Shenzhen lung X-rays) with their names; a tiny run with negative pairs
must learn which name is present in a held-out image, and the other name must give an empty mask.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_promptseg.cli import main
from napari_promptseg.errors import PromptsegError
from napari_promptseg.methods.text_training import dice, read_triplets, train_text_segmenter
from napari_promptseg.methods.text_training.data import FeatureStore, Triplet
from napari_promptseg.methods.text_training.presence import (
    PresenceFit,
    fit_presence_head,
    presence_pairs,
    refit_if_not_worse,
    refit_presence_head,
)
from napari_promptseg.methods.text_training.sampling import negative_pairs, texts_per_image, validation_negatives
from napari_promptseg.methods.text_training.trainer import TrainingConfig, make_batch
from napari_promptseg.models import load_text_embedder, load_text_segmenter
from napari_promptseg.models.text_decoder import TextPromptDecoder, gate_by_presence
from napari_promptseg.models.text_segmenter import WEIGHTS_FILE, TextTokens, save_tensors

from .conftest import dataset_pairs


@pytest.fixture(scope="module")
def two_targets(shared_data) -> list[Triplet]:
    """Three polyp frames and three lung X-rays: two of each to train on, one of each to validate on."""
    polyps = [t for t in read_triplets(shared_data / "polyps_kvasir_triplets" / "pairs.csv") if t.split == "train"]
    lungs = [Triplet(i, m, "lung", "", 0) for i, m in dataset_pairs(shared_data / "lungs_cxr_shenzhen")[:3]]
    rows = [replace(t, text="polyp") for t in polyps[:3]] + lungs
    return [replace(t, split="val" if k % 3 == 2 else "train") for k, t in enumerate(rows)]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("presence-features")


def test_fast_inference_path_matches_the_reference_decoder(two_targets, cache, litemedsam):
    torch.manual_seed(0)
    decoder = TextPromptDecoder(TrainingConfig(presence=True).decoder_config(384, 128))
    decoder.init_from_segmenter(litemedsam)
    with torch.no_grad():
        for p in decoder.parameters():  # the zero-initialised fusion must count too
            p.add_(0.01 * torch.randn_like(p))
    samples = FeatureStore(cache, litemedsam).samples(two_targets[:1] + two_targets[3:4])
    batch = make_batch(samples, TextTokens(load_text_embedder(device="cpu")), torch.device("cpu"))
    args = (batch.features, batch.low, batch.words, batch.word_mask, batch.sentence)
    with torch.enable_grad():
        reference = decoder(*args)  # the training path: segment_anything's own modules
    with torch.inference_mode():
        fast = decoder(*args)
        again = decoder(*args)  # the cached positional encoding
    torch.testing.assert_close(fast.mask_logits, reference.mask_logits.detach(), atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(fast.presence_logits, reference.presence_logits.detach(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(again.logits, fast.logits)


def test_presence_gate_empties_the_mask_only_where_the_target_is_absent():
    logits = torch.tensor([[-1.0, 2.0, 5.0]]).view(1, 1, 1, 3).repeat(2, 1, 1, 1)
    gated = gate_by_presence(logits, torch.tensor([1.5, -0.5]))
    torch.testing.assert_close(gated[0], logits[0])  # present: unchanged (no cap on a confident mask)
    assert (gated[1] < 0).all() and gated[1].max() == -0.5  # absent: empty, at most the presence probability


@pytest.fixture(scope="module")
def trained(two_targets, cache, tmp_path_factory):
    return train_text_segmenter(
        two_targets,
        tmp_path_factory.mktemp("presence") / "model",
        cache_dir=cache,
        device="cpu",
        epochs=6,
        batch_size=2,
        lr=3e-3,
        decoder_lr=0.0,  # SAM's decoder frozen: a cheaper step
        balance=True,
        negatives=1.0,
    )


def _decisions(model, triplet):
    """(presence logits of the right and the wrong name, their mask logits before the gate, gated heatmaps)."""
    image, _ = triplet.load()
    wrong = "lung" if triplet.text == "polyp" else "polyp"
    levels = model.levels(image)
    words, word_mask, sentence = model.text.get([triplet.text, wrong])
    with torch.inference_mode():
        out = model.decoder(
            levels.features.expand(2, -1, -1, -1),
            levels.low.expand(2, -1, -1, -1),
            words,
            word_mask,
            sentence,
        )
    return out.presence_logits.tolist(), out.mask_logits, model.heatmaps(image, [triplet.text, wrong])


def test_wrong_name_gives_an_empty_mask_after_training_with_negatives(trained, two_targets):
    model = load_text_segmenter(trained.path, device="cpu")
    assert model.decoder.config.presence  # on by default when the run has negative pairs
    assert "train_presence" in trained.history[-1]
    refit = trained.presence_refit  # the head was refitted alone after training, chosen on validation
    assert refit["train_pairs"] == 8 and refit["val_pairs"] == 4 and refit["val_accuracy"] == 1.0
    for triplet in (t for t in two_targets if t.split == "val"):  # images the decoder was not trained on
        (right_presence, wrong_presence), _, (right_prob, wrong_prob) = _decisions(model, triplet)
        assert right_presence > 0 > wrong_presence, (triplet.image.name, right_presence, wrong_presence)
        assert not (wrong_prob > 0.5).any(), f"{triplet.image.name} named the wrong target"
        if triplet.text == "lung":  # (two polyp frames do not train a polyp mask worth measuring)
            _, mask = triplet.load()
            # one held-out X-ray after a 4-image run: measured above 0.8 on float32 features, 0.79 on bfloat16 ones
            assert dice(right_prob > 0.5, mask) > 0.75


def test_cli_refits_the_presence_head_of_a_trained_model_and_keeps_its_masks(trained, two_targets, tmp_path, capsys):
    model_dir = tmp_path / "model"
    shutil.copytree(trained.path, model_dir, ignore=shutil.ignore_patterns("last", "cache"))
    before = load_text_segmenter(model_dir, device="cpu")
    state = before.decoder.state_dict()
    for key in [k for k in state if k.startswith("presence_head.score.2")]:
        state[key] = torch.zeros_like(state[key])  # a head that says "present" to every name (logit 0)
    save_tensors(model_dir / WEIGHTS_FILE, state)
    broken = load_text_segmenter(model_dir, device="cpu")
    val = [t for t in two_targets if t.split == "val"]
    assert all(_decisions(broken, t)[0] == [0.0, 0.0] for t in val)
    csv_path = tmp_path / "pairs.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "mask", "text", "split"])
        writer.writerows([t.image, t.mask, t.text, t.split] for t in two_targets)
    code = main(["train-text", str(csv_path), "-o", str(model_dir), "--refit-presence", "--device", "cpu"])
    assert code == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["presence_refit"]
    assert record["val_accuracy_before"] == 0.5 and record["val_accuracy"] == 1.0
    assert record["kept"] and record["val_dice"] > record["val_dice_before"]  # the wrong name's masks are gone
    refitted = load_text_segmenter(model_dir, device="cpu")
    assert refitted.info["presence_refit"] == record
    for triplet in val:
        (right, wrong), mask_logits, (_, wrong_prob) = _decisions(refitted, triplet)
        assert right > 0 > wrong and not (wrong_prob > 0.5).any(), triplet.image.name
        torch.testing.assert_close(mask_logits, _decisions(broken, triplet)[1])  # the mask path is untouched


def test_a_name_paired_with_an_image_in_another_split_is_never_taught_absent(trained, two_targets, cache, litemedsam):
    """The split is drawn by row: one lung X-ray is "lung" in training and "chest" in validation. Neither the
    presence refit's pairs nor the negative pairs may teach "chest" as absent from it."""
    lung = next(t for t in two_targets if t.text == "lung" and t.split == "train")
    rows = [*two_targets, replace(lung, text="chest", split="val")]
    paired = texts_per_image(rows)
    train = FeatureStore(cache, litemedsam).samples([t for t in rows if t.split == "train"])
    decoder = load_text_segmenter(trained.path, device="cpu").decoder
    texts = ["chest", "lung", "polyp"]

    def negatives_of_the_lung(pairs) -> set[str]:
        index = next(k for k, s in enumerate(dict.fromkeys(s.triplet.image for s in train)) if s == lung.image)
        return {
            pairs.texts[t]
            for i, t, y in zip(pairs.image, pairs.text, pairs.label, strict=True)
            if i == index and y == 0
        }

    assert "chest" in negatives_of_the_lung(presence_pairs(decoder, train, texts, max_negatives=16, seed=0))
    assert negatives_of_the_lung(presence_pairs(decoder, train, texts, max_negatives=16, seed=0, paired=paired)) == {
        "polyp"
    }
    drawn = negative_pairs(train, 40, np.random.default_rng(0), texts, paired)
    assert not any(s.triplet.image == lung.image and s.text in ("chest", "lung") for s in drawn)


def test_refit_keeps_the_head_without_absent_pairs_and_refuses_other_data(
    trained, two_targets, cache, litemedsam, capsys
):
    polyps = FeatureStore(cache, litemedsam).samples([t for t in two_targets if t.text == "polyp"])
    decoder = load_text_segmenter(trained.path, device="cpu").decoder
    head = {k: v.clone() for k, v in decoder.presence_head.state_dict().items()}
    text = TextTokens(load_text_embedder(device="cpu"))
    record = fit_presence_head(decoder, polyps[:2], polyps[2:], ["polyp"], text)  # one name, no empty mask
    assert "no training pairs of both kinds" in record["skipped"]
    assert all(torch.equal(v, decoder.presence_head.state_dict()[k]) for k, v in head.items())
    with pytest.raises(PromptsegError, match=r"2 training and 1 validation rows, but .* was trained on 4 and 2"):
        refit_presence_head(trained.path, [t for t in two_targets if t.text == "polyp"], cache_dir=cache)
    csv = trained.path.parent / "pairs.csv"  # any existing CSV: the flags are refused before it is read
    csv.write_text("image,mask,text\n")
    assert main(["train-text", str(csv), "-o", str(trained.path), "--refit-presence", "--resume"]) == 2
    assert "--refit-presence refits the model in" in capsys.readouterr().err
    # a model trained without negatives has no head to refit: said from its settings, before the models load (its
    # weights are not even read here), where the refusal came after 40 s of loading them
    plain = trained.path.parent / "no-presence"
    plain.mkdir()
    config = json.loads((trained.path / "text_segmenter.json").read_text())
    config["decoder"]["presence"] = False
    (plain / "text_segmenter.json").write_text(json.dumps(config))
    with pytest.raises(PromptsegError, match="the model has no presence head"):
        refit_presence_head(plain, csv)


def test_a_refit_that_costs_validation_dice_is_put_back(trained, two_targets, cache, litemedsam):
    """Fitted on swapped names (lung X-rays called "polyp" and polyp frames "lung"), the head learns the inverse; on
    the true validation pairs its gate would then drop the right masks, so the jointly trained head comes back."""
    decoder = load_text_segmenter(trained.path, device="cpu").decoder
    head = {k: v.clone() for k, v in decoder.presence_head.state_dict().items()}
    store = FeatureStore(cache, litemedsam)
    swap = {"lung": "polyp", "polyp": "lung"}
    swapped = [replace(t, text=swap[t.text]) for t in two_targets]
    train = store.samples([t for t in swapped if t.split == "train"])
    wrong_val = store.samples([t for t in swapped if t.split == "val"])
    val = store.samples([t for t in two_targets if t.split == "val"])
    texts = ["lung", "polyp"]
    val_all = val + validation_negatives(val, texts, seed=0, negatives=1.0, paired=texts_per_image(two_targets))
    text = TextTokens(load_text_embedder(device="cpu"))
    record = refit_if_not_worse(
        decoder, train, wrong_val, val_all, texts, text, PresenceFit(seed=0), paired=None, threshold=0.5
    )
    assert record["val_accuracy"] == 1.0  # on the swapped names it chose by: the inverse head was learnt
    assert not record["kept"] and record["val_dice"] < record["val_dice_before"] - 0.1
    assert all(torch.equal(v, decoder.presence_head.state_dict()[k]) for k, v in head.items())


def test_a_resumed_run_judges_its_refit_against_the_model_it_refits(two_targets, cache, tmp_path):
    """A finished run's model.safetensors holds its refitted head; resumed for more epochs, none better, the refit
    started from those weights but was judged against the jointly trained head's validation Dice (the best epoch's
    record): a second refit worse than the first was kept. Its baseline is now the Dice of the weights it refits
    (the learning rate is all but 0, so the resumed epoch cannot be better). One training and one validation image
    of each name: what is checked is the refit's baseline, not what the decoder learns (one step an epoch, not two)."""
    one_each = [t for k, t in enumerate(two_targets) if k % 3]  # polyp train, polyp val, lung train, lung val
    run = {"cache_dir": cache, "device": "cpu", "batch_size": 4, "lr": 1e-12, "decoder_lr": 0.0, "negatives": 1.0}
    first = train_text_segmenter(one_each, tmp_path / "model", epochs=1, **run)
    assert first.presence_refit["kept"] and first.presence_refit["val_dice"] > first.best_val_dice
    resumed = train_text_segmenter(one_each, tmp_path / "model", epochs=2, resume=True, device="cpu", cache_dir=cache)
    assert resumed.best_epoch == 1
    assert resumed.presence_refit["val_dice_before"] == first.presence_refit["val_dice"]


def test_refit_on_other_rows_of_the_same_counts_is_refused(trained, two_targets, cache, tmp_path):
    """Bug hunt 3: --refit-presence checked only the row counts against the model's training run: the same images
    with their names swapped (or any other CSV of as many rows) refitted the head on them, validated on them too,
    and rewrote model.safetensors with a head that says the right name is absent. The run's saved fingerprint of
    its rows (last/state.json, as a resume checks) is checked as well."""
    model_dir = tmp_path / "model"
    shutil.copytree(trained.path, model_dir)
    weights = (model_dir / WEIGHTS_FILE).read_bytes()
    swap = {"lung": "polyp", "polyp": "lung"}
    swapped = [replace(t, text=swap[t.text]) for t in two_targets]
    with pytest.raises(PromptsegError, match="other rows"):
        refit_presence_head(model_dir, swapped, cache_dir=cache, device="cpu")
    assert (model_dir / WEIGHTS_FILE).read_bytes() == weights
    # plain (image, mask, text, split) tuples, as training takes them ("'tuple' object has no attribute 'split'")
    rows = [(t.image, t.mask, t.text, t.split) for t in two_targets]
    assert refit_presence_head(model_dir, rows, cache_dir=cache, device="cpu")["train_pairs"] == 8


def test_ctrl_c_while_the_presence_head_is_refitted_says_how_to_finish(
    two_targets, cache, tmp_path, capsys, monkeypatch
):
    """Ctrl+C after the last epoch, while the presence head was being refitted, said "--resume continues"; the
    resume was then refused as having nothing left to train. It says the model is there and how to refit its head
    (a KeyboardInterrupt raised where the refit starts stands for the Ctrl+C)."""
    from napari_promptseg.methods.text_training import trainer

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "refit_if_not_worse", interrupted)
    csv_path = tmp_path / "pairs.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "mask", "name", "split"])
        writer.writerows([t.image, t.mask, t.text, t.split] for t in two_targets)
    out = tmp_path / "model"
    argv = ["train-text", str(csv_path), "-o", str(out), "--epochs", "1", "--batch-size", "4", "--negatives", "1"]
    reading = ["--text-col", "name", "--channels", "0", "1", "2"]  # the refit must read the rows alike
    assert main([*argv, *reading, "--cache-dir", str(cache), "--device", "cpu"]) == 130
    error = capsys.readouterr().err
    assert f"training had finished: {out} holds the model (epoch 1, the best)" in error
    refit = f"-o {out} --text-col name --channels 0 1 2 --refit-presence` refits the head"
    assert refit in error and "--resume continues" not in error
    assert load_text_segmenter(out, device="cpu").decoder.config.presence


def test_a_cancel_while_the_presence_head_is_refitted_names_the_refit_that_reads_the_rows_alike(
    two_targets, cache, tmp_path
):
    """The trainer's own cancel (the widget's Cancel, while the head was refitted) suggested `promptseg train-text
    DATA -o OUT --refit-presence` without the CSV's column and channel options the training read it with (the
    CLI's Ctrl+C note repeats them): that refit found "no column 'text'" or read other pixels. Both say one command."""
    from napari_promptseg.errors import CancelledError

    csv_path = tmp_path / "pairs.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "mask", "name", "split"])
        writer.writerows([t.image, t.mask, t.text, t.split] for t in two_targets)
    out = tmp_path / "model"
    refitting = []

    def progress(done: float, message: str) -> None:
        refitting.append(message.startswith("refitting the presence head"))

    with pytest.raises(CancelledError) as info:
        train_text_segmenter(
            csv_path,
            out,
            columns={"text_col": "name", "split_col": "split"},
            channels=[0, 1, 2],
            epochs=1,
            batch_size=4,
            negatives=1,
            cache_dir=cache,
            device="cpu",
            progress=progress,
            cancel=lambda: any(refitting),  # Cancel pressed once the refit has begun
        )
    refit = f"`promptseg train-text {csv_path} -o {out} --text-col name --split-col split --channels 0 1 2 "
    assert f"{refit}--refit-presence` finishes it" in str(info.value), str(info.value)


def test_a_refit_after_a_killed_save_refits_the_model_before_it(trained, two_targets, cache, tmp_path):
    """A save killed between its renames left the new weights beside the earlier record; --refit-presence read that
    mix as the model and saved it again, refitted, with the journal gone: the mix for good. The refit puts the
    earlier model back first: its mask path (all but the presence head) is the earlier model's, unchanged."""
    from safetensors.torch import load_file

    from .test_text_training_stops import _killed_while_saving

    before = {p.name: p.read_bytes() for p in trained.path.iterdir() if p.is_file()}
    folder = _killed_while_saving((trained.path, before), tmp_path)
    earlier = load_file(trained.path / WEIGHTS_FILE)
    refit_presence_head(folder, two_targets, cache_dir=cache, device="cpu")
    refitted = load_file(folder / WEIGHTS_FILE)
    assert not (folder / ".promptseg-replacing.json").exists()
    mask_path = [k for k in earlier if "presence" not in k]
    assert mask_path and all(torch.equal(refitted[k], earlier[k]) for k in mask_path)
