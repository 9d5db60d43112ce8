"""CLIPSeg text -> heatmap (tiny random-weight model, offline) and heatmap -> instances with real LiteMedSAM.

No CLIPSeg weights can be downloaded here: a tiny CLIPSeg with random weights, a small CLIP BPE tokenizer and a
ViT image processor are written in the published CIDAS/clipseg-rd64-refined file layout and loaded through the
registry. Its heatmaps mean nothing; the tests check geometry and plumbing on real images. The accuracy test of the
refinement uses a heatmap made from a real ground-truth mask, answered by the real LiteMedSAM.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import data, io, transform

from napari_promptseg.errors import PromptsegError, WeightsError
from napari_promptseg.methods.heatmap import heatmap_to_instances
from napari_promptseg.models import load_heatmapper

INPUT_SIZE = 64  # the processor's square input (352 for the real model); 4 x 4 patches of 16 px
WORDS = ("lung", "cell", "polyp", "nuclei", "left", "right")
SPECIAL = {
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
    "pad_token": "<|endoftext|>",
}


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2 byte-level alphabet: every byte maps to a printable character."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def _write_tokenizer(directory) -> tuple[int, int, int]:
    """vocab.json + merges.txt: every byte (alone and word-final) plus merges that spell WORDS; returns sizes/ids."""
    alphabet = list(_bytes_to_unicode().values())
    vocab = alphabet + [c + "</w>" for c in alphabet]
    merges = []
    for word in WORDS:  # left-to-right merges: l u -> lu, lu n -> lun, lun g</w> -> lung</w>
        left = word[0]
        for k, ch in enumerate(word[1:], start=1):
            right = ch + "</w>" if k == len(word) - 1 else ch
            if (left, right) not in merges:
                merges.append((left, right))
                vocab.append(left + right)
            left += right
    vocab += [SPECIAL["bos_token"], SPECIAL["eos_token"]]  # last, as in CLIP's vocabulary
    (directory / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    (directory / "special_tokens_map.json").write_text(json.dumps(SPECIAL))
    tokenizer_config = {**SPECIAL, "model_max_length": 77, "do_lower_case": True, "tokenizer_class": "CLIPTokenizer"}
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return len(vocab), len(vocab) - 2, len(vocab) - 1


@pytest.fixture(scope="module")
def tiny_clipseg_dir(tmp_path_factory):
    """A random-weight CLIPSeg directory in the published layout (config, weights, processor, BPE tokenizer)."""
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

    directory = tmp_path_factory.mktemp("clipseg-tiny")
    vocab_size, bos, eos = _write_tokenizer(directory)
    preprocessor = {
        "image_processor_type": "ViTImageProcessor",
        "processor_class": "CLIPSegProcessor",
        "do_resize": True,
        "size": {"height": INPUT_SIZE, "width": INPUT_SIZE},
        "resample": 2,  # bilinear, as CIDAS's
        "do_normalize": True,
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
    }
    (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    config = CLIPSegConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "bos_token_id": bos,
            "eos_token_id": eos,
            "pad_token_id": eos,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 3,
            "num_attention_heads": 2,
            "image_size": INPUT_SIZE,
            "patch_size": 16,
        },
        projection_dim=16,
        extract_layers=[1, 2],
        reduce_dim=16,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
        conditional_layer=0,
    )
    torch.manual_seed(0)
    CLIPSegForImageSegmentation(config).eval().save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def heatmapper(tiny_clipseg_dir):
    return load_heatmapper("clipseg_rd64_refined", weights=tiny_clipseg_dir, device="cpu")


@pytest.fixture(scope="module")
def polyp(shared_data) -> np.ndarray:
    """A real non-square colonoscopy frame (RGB uint8)."""
    path = sorted((shared_data / "polyps_kvasir_text" / "images").iterdir())[0]
    image = io.imread(path)
    assert image.shape[0] != image.shape[1]
    return image


def test_tokenizer_and_processor_load_from_the_published_layout(heatmapper):
    ids = heatmapper.processor.tokenizer(["lung", "left lung"]).input_ids
    vocab = heatmapper.processor.tokenizer.get_vocab()
    assert ids[0] == [vocab["<|startoftext|>"], vocab["lung</w>"], vocab["<|endoftext|>"]]
    assert ids[1][1:3] == [vocab["left</w>"], vocab["lung</w>"]]
    assert heatmapper.input_size == (INPUT_SIZE, INPUT_SIZE)
    assert heatmapper.name == "clipseg_rd64_refined"


@pytest.mark.parametrize("which", ["polyp_rgb", "coins_gray"])
def test_heatmap_is_a_probability_on_the_original_grid(heatmapper, polyp, which):
    image = polyp if which == "polyp_rgb" else data.coins()  # 530x607 RGB, 303x384 gray
    heat = heatmapper.heatmap(image, "polyp")
    assert heat.shape == image.shape[:2]
    assert heat.dtype == np.float32
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    assert heat.std() > 1e-3  # a map, not a constant


def test_heatmap_matches_the_stock_transformers_forward(heatmapper, polyp):
    """One vision pass for all prompts must equal transformers' own batched forward, and the map must land where
    the model looked (checked against an independent bilinear resize: a flipped, transposed or padded map fails)."""
    prompts = ["polyp", "left lung", ""]  # medvlsm's p0 is the empty prompt
    processor, model = heatmapper.processor, heatmapper.model
    inputs = processor(text=prompts, images=[polyp] * 3, padding=True, return_tensors="pt")
    with torch.inference_mode():
        stock = model(**inputs).logits  # (3, 64, 64) in the squashed square frame
    torch.testing.assert_close(heatmapper.logits(polyp, prompts), stock, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(stock[0], stock[1], atol=1e-3)  # prompts do change the map

    heat = heatmapper.heatmaps(polyp, prompts)
    for i in range(len(prompts)):
        resized = transform.resize(stock[i].numpy(), polyp.shape[:2], order=1, mode="edge", anti_aliasing=False)
        expected = 1 / (1 + np.exp(-resized))
        assert np.abs(heat[i] - expected).max() < 1e-3  # measured 5e-7 mean
        assert np.abs(heat[i][::-1] - expected).mean() > 0.1


def test_batch_of_prompts_equals_single_calls(heatmapper, polyp):
    both = heatmapper.heatmaps(polyp, ["polyp", "cell nuclei"])
    assert both.shape == (2, *polyp.shape[:2])
    np.testing.assert_allclose(both[0], heatmapper.heatmap(polyp, "polyp"), atol=1e-5)
    np.testing.assert_allclose(both[1], heatmapper.heatmap(polyp, "cell nuclei"), atol=1e-5)


def test_heatmap_follows_the_image_when_it_is_resized(heatmapper):
    image = data.coffee()  # 400x600 RGB
    double = np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)
    heat = heatmapper.heatmap(image, "cell")
    heat_double = heatmapper.heatmap(double, "cell")
    assert heat_double.shape == (800, 1200)
    # the processor squashes both to the same 64x64 input, so the answers agree once brought to one grid
    upsampled = torch.nn.functional.interpolate(
        torch.from_numpy(heat)[None, None], size=(800, 1200), mode="bilinear", align_corners=False
    )[0, 0].numpy()
    diff = np.abs(upsampled - heat_double)
    assert diff.mean() < 0.01 and np.percentile(diff, 99) < 0.05


def test_bad_prompts_and_images_are_refused(heatmapper):
    with pytest.raises(PromptsegError, match="at least one"):
        heatmapper.heatmaps(data.coins(), [])
    with pytest.raises(PromptsegError, match="strings"):
        heatmapper.heatmaps(data.coins(), ["lung", 3])
    with pytest.raises(PromptsegError, match="ambiguous"):
        heatmapper.heatmap(np.zeros((8, 40, 40), np.uint8), "lung")


def test_missing_directory_or_files_give_clear_errors(tiny_clipseg_dir, tmp_path):
    with pytest.raises(WeightsError, match="not a directory"):
        load_heatmapper("clipseg_rd64_refined", weights=tmp_path / "nowhere", device="cpu")
    broken = tmp_path / "no-config"
    shutil.copytree(tiny_clipseg_dir, broken)
    (broken / "config.json").unlink()
    (broken / "merges.txt").unlink()
    with pytest.raises(WeightsError, match="no-config.*missing config.json.*merges.txt"):
        load_heatmapper("clipseg_rd64_refined", weights=broken, device="cpu")
    other = tmp_path / "not-clipseg"
    shutil.copytree(tiny_clipseg_dir, other)
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(WeightsError, match="'bert' model, not CLIPSeg"):
        load_heatmapper("clipseg_rd64_refined", weights=other, device="cpu")
    cut = tmp_path / "cut-short"  # a download cut short: safetensors' own error was a traceback
    shutil.copytree(tiny_clipseg_dir, cut)
    (cut / "model.safetensors").write_bytes((cut / "model.safetensors").read_bytes()[:5000])
    with pytest.raises(WeightsError, match="cannot load CLIPSeg from .*cut-short"):
        load_heatmapper("clipseg_rd64_refined", weights=cut, device="cpu")


# --- heatmap -> instances -------------------------------------------------------------------------------------------


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.fixture(scope="module")
def lungs(shared_data):
    """A real chest X-ray, its lung-field mask and a CLIPSeg-like answer: blobby, spilling ~20 px past the lungs."""
    root = shared_data / "lungs_cxr_shenzhen"
    image = io.imread(root / "images" / "CHNCXR_0052_0.jpg")
    mask = io.imread(root / "masks" / "CHNCXR_0052_0.jpg")
    truth = (mask[..., 0] if mask.ndim == 3 else mask) > 127
    heat = ndimage.gaussian_filter(ndimage.binary_dilation(truth, iterations=12).astype(np.float32), 8)
    return image, truth, heat


def test_components_are_the_instances_without_a_segmenter(lungs):
    image, truth, heat = lungs
    speck = heat.copy()
    speck[5:9, 5:9] = 1.0  # 16 px of noise: below min_area
    found = heatmap_to_instances(image, speck)
    assert found.components == 3 and not found.refined
    assert found.labels.shape == truth.shape
    assert sorted(np.unique(found.labels)) == [0, 1, 2]  # two lung fields, the speck dropped
    assert found.boxes.shape == (2, 4) and found.points.shape == (2, 2)
    for i, ((x0, y0, x1, y1), (px, py)) in enumerate(zip(found.boxes, found.points, strict=True), start=1):
        assert found.labels[int(py), int(px)] == i  # the peak lies in its own component, inside its box
        rows, cols = np.nonzero(found.labels == i)
        assert (x0, y0, x1, y1) == (cols.min(), rows.min(), cols.max(), rows.max())
    assert 0.8 < _dice(found.labels > 0, truth) < 0.92  # the blob overshoots the lungs (measured 0.869)


def test_litemedsam_refines_the_heatmap_components(lungs, litemedsam):
    image, truth, heat = lungs
    plain = heatmap_to_instances(image, heat)
    found = heatmap_to_instances(image, heat, segmenter=litemedsam)
    assert found.refined and found.labels.shape == truth.shape
    assert sorted(np.unique(found.labels)) == [0, 1, 2]
    assert len(found.boxes) == len(found.scores) == 2
    dice = _dice(found.labels > 0, truth)
    # measured 0.960 (8 Shenzhen images: 0.94-0.98); thresholding alone 0.869; boxes with x/y swapped 0.38
    assert dice > 0.92
    assert dice > _dice(plain.labels > 0, truth) + 0.05
    # each instance is one lung: it overlaps the component whose box prompted it
    for i in (1, 2):
        assert _dice(found.labels == i, plain.labels == i) > 0.8


def test_threshold_above_the_maximum_gives_an_empty_result(lungs, litemedsam):
    image, truth, heat = lungs
    found = heatmap_to_instances(image, heat, threshold=float(heat.max()) + 0.01, segmenter=litemedsam)
    assert found.labels.shape == truth.shape and found.labels.max() == 0
    assert found.boxes.shape == (0, 4) and found.components == 0
    assert found.warnings


def test_heatmap_of_the_wrong_shape_is_refused(lungs):
    image, _, heat = lungs
    with pytest.raises(PromptsegError, match="does not match"):
        heatmap_to_instances(image, heat[:, :-1])
    with pytest.raises(PromptsegError, match="NaN"):
        heatmap_to_instances(image, np.full(heat.shape, np.nan, np.float32))


def test_a_pyramid_heatmap_carries_its_level_and_lies_over_the_full_resolution_labels(heatmapper, polyp):
    """segment_text on a pyramid returned full-resolution labels beside the heatmap of the level it read, with
    nothing saying so: added to napari as it came, the heatmap covered a quarter of the labels. It carries its
    level's factor now, and its placement lays each of its pixels over the label pixels it stands for."""
    import dask.array as da

    from napari_promptseg.methods.text import segment_text
    from napari_promptseg.tiling import upsample_labels

    lazy = da.from_array(polyp, chunks=polyp.shape)
    levels = [lazy.repeat(4, axis=0).repeat(4, axis=1), lazy.repeat(2, axis=0).repeat(2, axis=1), polyp]
    level = np.asarray(levels[1])  # the coarsest with 1024 px along its longest side: what the CLI reads
    threshold = float(np.quantile(heatmapper.heatmap(level, "polyp"), 0.7))  # random weights: some blobs
    options = {"route": "clipseg", "heatmapper": heatmapper, "heatmap_threshold": threshold, "refine": False}
    on_level = segment_text(level, "polyp", **options)
    result = segment_text(levels, "polyp", **options)
    assert on_level.labels.any() and on_level.heatmap_factor == 1.0
    np.testing.assert_array_equal(result.labels, upsample_labels(on_level.labels, levels[0].shape[:2]))
    np.testing.assert_array_equal(result.heatmap, on_level.heatmap)
    assert result.heatmap_factor == 2.0
    # every full-resolution pixel of the labels lies under the heatmap pixel of its block
    place = result.heatmap_placement
    for axis, n in enumerate(result.labels.shape):
        pixels = np.arange(n)
        under = np.round((pixels - place["translate"][axis]) / place["scale"][axis]).astype(int)
        np.testing.assert_array_equal(under, pixels // 2)
