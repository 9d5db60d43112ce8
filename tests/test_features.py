"""PatchFeatureExtractor backends: grid shape, stride and normalisation on real images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data

from napari_promptseg.errors import PromptsegError, WeightsError
from napari_promptseg.models.cache import content_key
from napari_promptseg.models.features import Dinov2Features, PatchFeatureExtractor, SegmenterFeatures
from napari_promptseg.models.preprocessing import as_channels_last

from .test_clipseg import tiny_clipseg_dir  # noqa: F401 (fixture)


def mirror_key(segmenter, image: np.ndarray) -> str:
    """The embedding-cache key of an image's left-right mirror (what flip test-time augmentation encodes)."""
    return content_key(np.ascontiguousarray(np.flip(as_channels_last(image), 1)), segmenter.feature_name, "auto")


@pytest.fixture(scope="module")
def tiny_dinov2() -> Dinov2Features:
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=14, image_size=98
    )
    return Dinov2Features(Dinov2Model(config), image_size=224)


def test_dinov2_grid_shape_and_stride_non_square(tiny_dinov2):
    image = data.immunohistochemistry()[:300, :512]  # real RGB, 300 x 512 (rows x columns)
    feats = tiny_dinov2.features(image)
    assert isinstance(tiny_dinov2, PatchFeatureExtractor)
    # longer side 224 -> 16 patches of 14 px; shorter 300 * 224 / 512 = 131 -> rounded to 126 = 9 patches
    assert feats.shape == (9, 16)
    assert feats.grid.shape == (9, 16, 32)
    assert feats.stride == pytest.approx((300 / 9, 512 / 16))
    assert torch.allclose(feats.grid.norm(dim=-1), torch.ones(9, 16), atol=1e-5)
    centres = feats.centres_xy()
    assert centres.shape == (9 * 16, 2)
    assert centres[0] == pytest.approx((512 / 32, 300 / 18))  # centre of the first patch, x then y
    assert centres[:, 0].max() < 512 and centres[:, 1].max() < 300


def test_dinov2_tall_image_and_square_mode(tiny_dinov2):
    image = data.camera()[:, :200]  # 512 rows x 200 columns, gray
    feats = tiny_dinov2.features(image)
    assert feats.shape == (16, 6)  # 200 * 224 / 512 = 87.5 -> 84 = 6 patches
    square = Dinov2Features(tiny_dinov2.model, image_size=224, keep_aspect=False).features(image)
    assert square.shape == (16, 16)
    assert square.stride == pytest.approx((512 / 16, 200 / 16))


def test_dinov2_missing_weights_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match=r"dinov2_small: weights path .*no-such-model is not a directory"):
        Dinov2Features(tmp_path / "no-such-model")
    with pytest.raises(WeightsError, match=r"dinov2_small: weights not found and \$PROMPTSEG_OFFLINE is set"):
        Dinov2Features("facebook/dinov2-base")  # a hub id, not in the (isolated, offline) Hugging Face cache


def test_dinov2_folders_of_another_model_or_cut_short_are_refused(tiny_dinov2, tiny_clipseg_dir, tmp_path):  # noqa: F811
    """Another model's folder loaded as a default-size DINOv2 with random weights (the run went on, exit 0); a
    truncated safetensors file was a traceback; --device auto was handed to torch as a device name."""
    with pytest.raises(WeightsError, match="model_type 'clipseg', not 'dinov2'"):
        Dinov2Features(tiny_clipseg_dir)
    folder = tmp_path / "tiny-dinov2"
    tiny_dinov2.model.save_pretrained(folder)
    loaded = Dinov2Features(folder, device="auto")  # the default of every CLI subcommand
    assert loaded.device.type == "cpu"
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(WeightsError, match="dinov2_small: cannot load DINOv2 from .*tiny-dinov2"):
        Dinov2Features(folder)


def test_segmenter_features_account_for_padding(litemedsam):
    image = data.immunohistochemistry()[:300, :512]
    extractor = SegmenterFeatures(litemedsam)
    feats = extractor.features(image)
    # 512 px long side -> 256 input; 300 rows -> 150 input rows -> 38 cells of 4 px (the rest is padding)
    assert feats.shape == (38, 64)
    assert feats.stride == (8.0, 8.0)
    assert feats.grid.shape[-1] == 256
    assert torch.allclose(feats.grid.norm(dim=-1), torch.ones(38, 64), atol=1e-4)


def test_flip_features_are_mirror_symmetric_and_cached_by_content(litemedsam):
    """Flip TTA: the mirror image is encoded once under its own cache key, and the features of the mirror image are
    the mirror of the image's (a square image has no partial cell, so exactly)."""
    image = data.camera()  # real, 512 x 512 gray
    mirror = np.ascontiguousarray(image[:, ::-1])
    litemedsam.cache.clear()
    plain = SegmenterFeatures(litemedsam).features(image)
    assert len(litemedsam.cache) == 1
    flipped = SegmenterFeatures(litemedsam, flip=True)
    assert flipped.name == "litemedsam-encoder+flip"
    features = flipped.features(image)
    assert mirror_key(litemedsam, image) in litemedsam.cache and len(litemedsam.cache) == 2
    misses = litemedsam.cache.misses
    of_mirror = flipped.features(mirror)
    assert litemedsam.cache.misses == misses  # both views were cached: no encoder pass
    assert torch.equal(of_mirror.grid, features.grid.flip(1))
    assert torch.allclose(features.grid.norm(dim=-1), torch.ones(64, 64), atol=1e-4)
    assert (features.grid * plain.grid).sum(-1).mean() < 0.999  # the averaged features differ from the plain ones
    four = SegmenterFeatures(litemedsam, flip="flip4").features(image)
    assert len(litemedsam.cache) == 4  # up-down and half-turn views added
    assert torch.allclose(
        four.grid.flip(0), SegmenterFeatures(litemedsam, flip="flip4").features(image[::-1]).grid, atol=1e-5
    )
    with pytest.raises(PromptsegError, match="flip must be one of"):
        SegmenterFeatures(litemedsam, flip="rotate")


def test_segmenter_features_localise_real_structure(litemedsam):
    """Cells of the same tissue are more alike than cells of different tissue (nuclei vs background, real data)."""
    import tifffile
    from imageio.v3 import imread

    import napari_promptseg

    folder = Path(napari_promptseg.__file__).parent / "sample_data"  # a real DSB2018 image + its instance labels
    image = imread(folder / "nuclei_dsb2018.png")
    nuclei = tifffile.imread(folder / "nuclei_dsb2018_labels.tif") > 0
    feats = SegmenterFeatures(litemedsam).features(image)
    frac = feats.cell_fraction(nuclei).ravel()
    f = feats.flat()
    fg, bg = f[torch.from_numpy(frac > 0.9)], f[torch.from_numpy(frac == 0)]
    within = (fg @ fg.T).mean()
    across = (fg @ bg.T).mean()
    assert within > across


def test_cell_fraction_counts_pixels():
    from napari_promptseg.models.features import PatchFeatures

    feats = PatchFeatures(torch.zeros(2, 3, 4), stride=(5.0, 5.0), image_shape=(10, 15), extractor="test")
    mask = np.zeros((10, 15), bool)
    mask[:5, :5] = True
    mask[5:, 10:13] = True
    frac = feats.cell_fraction(mask)
    assert frac == pytest.approx(np.array([[1.0, 0, 0], [0, 0, 0.6]]))
    with pytest.raises(PromptsegError, match="does not match"):
        feats.cell_fraction(np.zeros((9, 15), bool))


def test_image_smaller_than_a_patch_is_refused(litemedsam, tiny_dinov2):
    with pytest.raises(PromptsegError, match=r"5x1000 pixels .* smaller than a patch .* spans 16 px"):
        SegmenterFeatures(litemedsam).features(np.zeros((1000, 5), np.uint8))
    # upsampled to the model's input, a patch is under a pixel: "a 64x64 feature grid at 0.0x0.0 px per patch" was
    # said; the segmenter refuses an image of fewer pixels than its feature grid's 64 cells before any feature
    with pytest.raises(PromptsegError, match=r"3 x 3 px, smaller than the 64 px along its longest side"):
        SegmenterFeatures(litemedsam).features(np.zeros((3, 3), np.uint8))
    with pytest.raises(PromptsegError, match="smaller than a patch"):
        tiny_dinov2.features(np.zeros((10, 10), np.uint8))


def test_dinov2_backend_drives_sat(litemedsam, tiny_dinov2, shared_data):
    """Plumbing of a non-segmenter extractor through SAT: features on their own grid, prompts in target pixels.

    Random weights carry no meaning, so the target is the reference itself: every patch back-matches itself, the
    positives are the reference's foreground patches and must land inside its mask on this non-square image (a
    stride or x/y mistake moves them out).
    """
    from napari_promptseg.io import read_image, read_mask
    from napari_promptseg.methods.oneshot import SatSetting, segment_like

    from .conftest import dataset_pairs

    ri, rm = dataset_pairs(shared_data / "polyps_kvasir_text")[0]
    image, mask = read_image(ri), read_mask(rm)
    bank = [SatSetting(box_mode="points", max_points=0, positive_radius=0.01), SatSetting(box_mode="region")]
    result = segment_like(image, mask, image, segmenter=litemedsam, extractor=tiny_dinov2, bank=bank)[0]
    h, w = image.shape[:2]
    assert h != w and result.mask.shape == (h, w)
    assert len(result.positives) >= 1
    cols, rows = result.positives[:, 0].astype(int), result.positives[:, 1].astype(int)
    assert mask[rows, cols].all()
    assert (result.boxes[:, 2] <= w - 1).all() and (result.boxes[:, 3] <= h - 1).all()
