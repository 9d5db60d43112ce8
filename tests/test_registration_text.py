"""Registration from text / library / one-shot prompts (Tell2Reg: the same prompt on both images gives the pairs).

The offline library route and the one-shot reference run real LiteMedSAM on real chest X-rays with a known affine
warp, and must recover it (TRE on a grid of points); GroundingDINO runs a tiny random-weight model, so its tests
assert the plumbing: one route for all prompts, regions paired only within their phrase, the route in the result
and in report.json, and the errors.
"""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
from skimage import data as skdata
from skimage import filters, measure

from napari_promptseg.cli import main
from napari_promptseg.errors import PromptsegError
from napari_promptseg.io import read_image, read_mask
from napari_promptseg.io.library import ReferenceLibrary
from napari_promptseg.methods.prompt_regions import UNION_SUFFIX, OneShotRegions, regions_from_labels
from napari_promptseg.methods.registration import RegistrationOptions, register
from napari_promptseg.methods.text import choose_route
from napari_promptseg.methods.warp import Deformation
from napari_promptseg.models import load_grounder

from .conftest import dataset_pairs, in_hf_cache
from .test_grounding import hf_dir  # noqa: F401 (fixture)

#: fixed pixel -> moving pixel: a rotation of ~6 degrees, anisotropic scaling and a shift (24 px mean displacement)
AFFINE = np.array([[0.95, -0.10, 25.0], [0.08, 1.03, -15.0], [0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def xrays(shared_data):
    """Reference (image, mask) for the library/one-shot exemplar, and another patient's X-ray as the fixed image."""
    pairs = dataset_pairs(shared_data / "lungs_cxr_shenzhen")
    reference = (read_image(pairs[0][0])[..., 0], read_mask(pairs[0][1]))  # gray X-rays stored as RGB
    fixed = read_image(pairs[1][0])[..., 0]
    return reference, fixed


@pytest.fixture(scope="module")
def known_pair(xrays):
    """The fixed X-ray and the same X-ray pulled through the known affine ``S`` (moving grid -> fixed frame)."""
    _, fixed = xrays
    s = Deformation.from_pixel_affine(AFFINE, fixed.shape, fixed.shape)
    return fixed, s.warp_image(fixed), s


def grid_tre(result, s: Deformation, shape: tuple[int, int], step: int = 64) -> tuple[float, float]:
    """Mean distance on a regular grid of fixed points before and after registration (pixels)."""
    ys, xs = np.mgrid[step // 2 : shape[0] : step, step // 2 : shape[1] : step]
    fixed_xy = np.stack([xs.ravel(), ys.ravel()], 1).astype(float)
    true_moving = s.points_to_fixed(fixed_xy)  # where each fixed point sits in the moving image
    before = np.linalg.norm(true_moving - fixed_xy, axis=1).mean()
    after = np.linalg.norm(result.moving_points_to_fixed(true_moving) - fixed_xy, axis=1).mean()
    return float(before), float(after)


@pytest.fixture
def lung_library(tmp_path, xrays):
    (ref, ref_mask), _ = xrays
    library = ReferenceLibrary.open(tmp_path / "library")
    library.add("lung", ref, ref_mask, description="lung fields of a chest X-ray")
    return library


@pytest.fixture
def tiny_grounder(hf_dir):  # noqa: F811
    """The tiny random GroundingDINO where the registry looks for grounding_dino_tiny (the isolated HF cache)."""
    in_hf_cache("grounding_dino_tiny", hf_dir)
    return load_grounder("grounding_dino_tiny", device="cpu")


def top_k_threshold(grounder, images, caption: str, k: int) -> float:
    """A box threshold that keeps at least the k best boxes in every image (random weights: few, fast decodes)."""
    return min(
        float(np.sort(grounder.boxes(im, caption, box_threshold=0.0, text_threshold=0.0).scores)[-k]) for im in images
    )


# -- regions from a text answer ------------------------------------------------------------------------------------
def test_objects_become_regions_named_by_phrase_with_one_union_per_phrase():
    """Real objects (skimage's coins, labelled by Otsu): each object is a region named by its phrase, a phrase with
    several objects also gives their union, a phrase with one object gives it once (as the union), specks go."""
    coins = skdata.coins()
    labels = measure.label(coins > filters.threshold_otsu(coins))
    sizes = np.bincount(labels.ravel())[1:]
    big = [i + 1 for i in np.argsort(-sizes)[:4]]
    speck = int(np.argmin(sizes)) + 1
    assert sizes[speck - 1] < 16 <= sizes[big[-1] - 1]
    instances = np.zeros(labels.shape, np.uint16)
    phrases, scores = [], []
    for phrase, score, label in [
        ("coin", 0.9, big[0]),
        ("coin", 0.6, big[1]),
        ("disc", 0.7, big[2]),
        ("coin", 0.5, speck),
    ]:
        instances[labels == label] = len(phrases) + 1
        phrases.append(phrase)
        scores.append(score)
    regions = regions_from_labels(instances, phrases, scores, mask_side=None)
    by_prompt = {}
    for r in regions:
        by_prompt.setdefault(r.prompt, []).append(r)
    assert sorted(by_prompt) == ["coin", "coin" + UNION_SUFFIX, "disc" + UNION_SUFFIX]
    assert [r.score for r in by_prompt["coin"]] == [0.9, 0.6]  # the speck (< 16 px) is not a region
    np.testing.assert_array_equal(by_prompt["coin"][0].mask, labels == big[0])
    (union,) = by_prompt["coin" + UNION_SUFFIX]
    np.testing.assert_array_equal(union.mask, (labels == big[0]) | (labels == big[1]))
    assert union.score == 0.9
    np.testing.assert_array_equal(by_prompt["disc" + UNION_SUFFIX][0].mask, labels == big[2])
    # without unions every object is given as it is
    assert sorted(r.prompt for r in regions_from_labels(instances, phrases, scores, union=False)) == [
        "coin",
        "coin",
        "disc",
    ]
    # large masks are kept at a bounded size, still covering the whole image
    small = regions_from_labels(instances, phrases, scores, mask_side=128)
    assert max(small[0].mask.shape) == 128 and abs(small[0].area_fraction - by_prompt["coin"][0].area_fraction) < 0.01


# -- (a) the offline library route recovers a known affine -----------------------------------------------------------
def test_library_text_prompt_recovers_a_known_affine_on_a_real_xray(known_pair, lung_library, litemedsam):
    fixed, moving, s = known_pair
    result = register(fixed, moving, prompts="lungs", method="prompts", segmenter=litemedsam, library=lung_library)
    assert result.text_route == "library"
    assert result.text_reason.startswith("no GroundingDINO weights; no CLIPSeg weights; used library entry 'lung'")
    (source,) = result.prompt_sources
    assert source["kind"] == "text" and source["route"] == "library"
    assert source["objects_fixed"]["lungs"] >= 2 and source["objects_moving"]["lungs"] >= 2  # the two lung fields
    prompts = [p.prompt for p in result.pairs]
    assert all(p.fixed.prompt == p.moving.prompt for p in result.pairs)
    assert "lungs" + UNION_SUFFIX in prompts and prompts.count("lungs") >= 2
    before, after = grid_tre(result, s, fixed.shape)
    # measured 24.2 -> 1.0 px (0.7-1.5 px with other patients as the fixed image); an identity or a wrong lung
    # pairing leaves > 10 px
    assert before > 20 and after < 3.0, (before, after)
    assert np.mean(result.pair_dice_after) > 0.95 > np.mean(result.pair_dice_before)


def test_oneshot_reference_as_the_prompt(known_pair, xrays, litemedsam):
    """A labelled reference image is the prompt (SAT on both images): the same lungs, the same transform."""
    (ref, ref_mask), _ = xrays
    fixed, moving, s = known_pair
    source = OneShotRegions(ref, ref_mask, name="lung", segmenter=litemedsam)
    result = register(fixed, moving, prompts=source, method="prompts", segmenter=litemedsam)
    assert result.text_route == "" and result.prompt_sources[0] == {
        "kind": "oneshot",
        "prompt": "lung",
        "fixed_regions": result.prompt_sources[0]["fixed_regions"],
        "moving_regions": result.prompt_sources[0]["moving_regions"],
    }
    assert len(source.results) == 2 and {p.prompt for p in result.pairs} <= {"lung", "lung" + UNION_SUFFIX}
    before, after = grid_tre(result, s, fixed.shape)
    assert before > 20 and after < 3.0, (before, after)  # measured 1.0 px


# -- (b) GroundingDINO (tiny, random weights): plumbing ---------------------------------------------------------------
def test_grounding_route_pairs_regions_only_within_their_phrase(known_pair, tiny_grounder, litemedsam):
    fixed, _, _ = known_pair
    moving = np.roll(fixed, (4, -6), axis=(0, 1))
    threshold = top_k_threshold(tiny_grounder, (fixed, moving), "lung . cell", 8)
    route = choose_route("groundingdino", device="cpu")
    result = register(
        fixed,
        moving,
        prompts="lung, cell",
        method="prompts",
        segmenter=litemedsam,
        text_route=route,
        text_options={"box_threshold": threshold, "text_threshold": 0.4},
        options=RegistrationOptions(dense=False),
    )
    assert result.text_route == "groundingdino"
    assert result.text_reason.startswith("GroundingDINO (grounding_dino_tiny):")
    (source,) = result.prompt_sources
    assert source["route"] == "groundingdino" and source["text_model"] == "grounding_dino_tiny"
    assert len(source["objects_fixed"]) >= 2  # several phrases were found: pairing has a choice to get wrong
    both = set(source["objects_fixed"]) & set(source["objects_moving"])
    assert result.pairs
    for pair in result.pairs:
        assert pair.fixed.prompt == pair.moving.prompt
        assert pair.prompt.removesuffix(UNION_SUFFIX) in both


def test_register_cli_with_repeated_text_prompts_reports_the_route(
    known_pair, tiny_grounder, litemedsam, tmp_path, capsys
):
    fixed, _, _ = known_pair
    moving = np.roll(fixed, (4, -6), axis=(0, 1))
    iio.imwrite(tmp_path / "fixed.png", fixed)
    iio.imwrite(tmp_path / "moving.png", moving)
    threshold = top_k_threshold(tiny_grounder, (fixed, moving), "lung", 6)
    out = tmp_path / "out"
    code = main(
        [
            "register", str(tmp_path / "fixed.png"), str(tmp_path / "moving.png"), "-o", str(out),
            "--prompt", "lung", "--prompt", "cell", "--text-route", "groundingdino", "--method", "prompts",
            "--no-dense", "--box-threshold", str(threshold), "--text-threshold", "0", "--device", "cpu",
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "text prompts answered by groundingdino: GroundingDINO (grounding_dino_tiny)" in captured.out
    report = json.loads((out / "report.json").read_text())
    assert report["parameters"]["prompts"] == ["lung", "cell"] and report["parameters"]["text_route"] == "groundingdino"
    assert report["text_route"]["route"] == "groundingdino"
    assert report["text_route"]["reason"].startswith("GroundingDINO (grounding_dino_tiny):")
    assert [s["prompt"] for s in report["prompt_sources"]] == ["lung", "cell"]
    assert {s["route"] for s in report["prompt_sources"]} == {"groundingdino"}
    # two prompts, two sources: a pair's prompt carries its source index and its phrase
    assert report["region_pairs"]["count"] == len(report["region_pairs"]["prompts"]) >= 1
    assert all(p.split(":")[0] in ("0", "1") for p in report["region_pairs"]["prompts"])
    assert (out / "moving_warped.tif").is_file()


# -- (c) clear errors -------------------------------------------------------------------------------------------------
def test_text_prompt_with_an_empty_library_says_how_to_fill_it(known_pair, tmp_path, capsys):
    fixed, moving, _ = known_pair
    with pytest.raises(PromptsegError) as info:
        register(fixed, moving, prompts=["gland", "nuclei"], method="prompts", library=tmp_path / "empty")
    message = str(info.value)
    assert message.startswith("text prompt 'gland', 'nuclei': no GroundingDINO weights; no CLIPSeg weights")
    assert "has no entries" in message and "promptseg library add" in message
    iio.imwrite(tmp_path / "f.png", fixed[::4, ::4])
    iio.imwrite(tmp_path / "m.png", moving[::4, ::4])
    out = tmp_path / "out"
    args = ["register", str(tmp_path / "f.png"), str(tmp_path / "m.png"), "-o", str(out), "--prompt", "gland"]
    assert main([*args, "--method", "prompts", "--library", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "text prompt 'gland'" in err and "has no entries" in err and not (out / "report.json").exists()
    assert main([*args, "--method", "intensity"]) == 2
    assert "--prompt 'gland' needs --method prompts or prompts+intensity" in capsys.readouterr().err


def test_a_prompt_that_finds_nothing_in_one_image(known_pair, tiny_grounder, litemedsam):
    """A 16 x 128 moving image: the tiny GroundingDINO's boxes there are under a pixel tall, so 'lung' finds nothing
    (128 px along: the segmenter's embedding of it, for the regions' prototypes, needs 64 along its longest side).
    Alone, that is an empty region set; beside another region source, a warning."""
    fixed, _, _ = known_pair
    tiny = np.ascontiguousarray(fixed[::32, ::4])
    threshold = top_k_threshold(tiny_grounder, (fixed,), "lung", 3)
    text_options = {"box_threshold": threshold, "text_threshold": 0.0}
    with pytest.raises(PromptsegError, match=r"empty region set: prompt 'lung' found no region in the moving image \("):
        register(fixed, tiny, prompts="lung", method="prompts", segmenter=litemedsam, text_route="groundingdino",
                 text_options=text_options)  # fmt: skip

    def body(image):  # a real region source on both images: the body (bright) by Otsu's threshold
        gray = np.asarray(image, float).squeeze()
        return [gray > filters.threshold_otsu(gray)]

    result = register(
        fixed,
        tiny,
        prompts=["lung", body],
        method="prompts",
        segmenter=litemedsam,
        text_route="groundingdino",
        text_options=text_options,
        options=RegistrationOptions(dense=False),
    )
    assert [p.prompt for p in result.pairs] == ["1:region 0"]
    assert any("prompt 'lung' found no region in the moving image" in w for w in result.warnings)
    assert result.text_route == "groundingdino" and result.prompt_sources[0]["fixed_regions"] >= 1
    assert "moving_regions" in result.prompt_sources[1] and result.prompt_sources[0]["moving_regions"] == 0


def test_library_exemplars_fitted_at_one_encoder_precision_are_not_reused_at_another(shared_data, litemedsam):
    """register() finds its region pairs with the encoder in float32 (REGION_PRECISION), the Text widget and the
    console in auto (bfloat16 on CPUs with it). The library entry's exemplars were fitted once per segmenter whatever
    the precision, so the Registration widget's 'nucleus' found 2 objects in the moving image after a Text widget run
    and none in a fresh napari (what `promptseg register` finds): the answer hung on what ran before."""
    from napari_promptseg.methods import library
    from napari_promptseg.methods.text import segment_text
    from napari_promptseg.models.sam_family import auto_precision

    image = read_image(shared_data / "registration_birl" / "data-images" / "images" / "artificial_moving-affine.jpg")
    gray = np.ascontiguousarray(image[::2, ::2, 1])
    library._EXEMPLARS.clear()
    with auto_precision("float32"):
        fresh = segment_text(gray, "nucleus", segmenter=litemedsam).labels
    library._EXEMPLARS.clear()
    with auto_precision("bfloat16"):
        segment_text(gray, "nucleus", segmenter=litemedsam)
    with auto_precision("float32"):
        after = segment_text(gray, "nucleus", segmenter=litemedsam).labels
    np.testing.assert_array_equal(after, fresh)
