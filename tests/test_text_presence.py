"""Wrong names give nothing: the trained text decoder's target-presence head, and its fast inference path.

Real images of two targets (Kvasir polyps, Shenzhen lung X-rays) with their names; a tiny run with negative pairs
must learn which name is present in a held-out image, and the other name must give an empty mask.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from napari_promptseg.methods.text_training import dice, read_triplets, train_text_segmenter
from napari_promptseg.methods.text_training.data import FeatureStore, Triplet
from napari_promptseg.methods.text_training.trainer import TrainingConfig, make_batch
from napari_promptseg.models import load_text_embedder, load_text_segmenter
from napari_promptseg.models.text_decoder import TextPromptDecoder, gate_by_presence
from napari_promptseg.models.text_segmenter import TextTokens

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


def test_wrong_name_gives_an_empty_mask_after_training_with_negatives(two_targets, cache, tmp_path):
    result = train_text_segmenter(
        two_targets,
        tmp_path / "presence",
        cache_dir=cache,
        device="cpu",
        epochs=6,
        batch_size=2,
        lr=3e-3,
        decoder_lr=0.0,  # SAM's decoder frozen: a cheaper step
        balance=True,
        negatives=1.0,
    )
    model = load_text_segmenter(result.path, device="cpu")
    assert model.decoder.config.presence  # on by default when the run has negative pairs
    assert "train_presence" in result.history[-1]
    for triplet in (t for t in two_targets if t.split == "val"):  # images the decoder was not trained on
        image, mask = triplet.load()
        wrong = "lung" if triplet.text == "polyp" else "polyp"
        levels = model.levels(image)
        words, word_mask, sentence = model.text.get([triplet.text, wrong])
        with torch.inference_mode():
            out = model.decoder(
                levels.features.expand(2, -1, -1, -1), levels.low.expand(2, -1, -1, -1), words, word_mask, sentence
            )
        right_presence, wrong_presence = out.presence_logits.tolist()
        assert right_presence > 0 > wrong_presence, (triplet.image.name, right_presence, wrong_presence)
        right_prob, wrong_prob = model.heatmaps(image, [triplet.text, wrong])
        assert not (wrong_prob > 0.5).any(), f"{triplet.image.name} named {wrong!r}"
        if triplet.text == "lung":  # (two polyp frames do not train a polyp mask worth measuring)
            assert dice(right_prob > 0.5, mask) > 0.8
