"""Text prompts end to end: which route answers and why, and instance labels on real images.

The vision-language routes run tiny random-weight models (real architectures, no published weights here), so they
assert the plumbing; the offline library route runs real LiteMedSAM on real chest X-rays and asserts a Dice.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_promptseg.errors import PromptsegError, WeightsError
from napari_promptseg.io import read_image, read_mask
from napari_promptseg.io.library import ReferenceLibrary
from napari_promptseg.methods.metrics import dice
from napari_promptseg.methods.text import choose_route, segment_text
from napari_promptseg.models import get_card, load_heatmapper
from napari_promptseg.models.hub import hf_cache_dir
from napari_promptseg.models.registry import cache_dir

from .conftest import dataset_pairs, in_hf_cache
from .test_clipseg import tiny_clipseg_dir  # noqa: F401 (fixture)
from .test_grounding import hf_dir  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def lungs(shared_data):
    pairs = dataset_pairs(shared_data / "lungs_cxr_shenzhen")[:3]
    return [(read_image(i)[..., 0], read_mask(m)) for i, m in pairs]  # gray X-rays stored as RGB


@pytest.fixture
def empty_library(tmp_path):
    return ReferenceLibrary.open(tmp_path / "library")


def _check_instances(result, shape):
    labels = result.labels
    assert labels.shape == shape and labels.dtype in (np.uint16, np.uint32)
    ids = np.unique(labels[labels > 0])
    assert ids.tolist() == list(range(1, len(result.phrases) + 1))  # unique, consecutive, one phrase each
    assert len(result.boxes) == len(result.scores) == len(result.phrases)
    for obj_id, (x0, y0, x1, y1) in enumerate(result.boxes, start=1):
        rows, cols = np.nonzero(labels == obj_id)
        inside = (cols >= x0 - 1) & (cols <= x1 + 1) & (rows >= y0 - 1) & (rows <= y1 + 1)
        assert inside.mean() > 0.9  # each object lies in its own box (a SAM mask may spill a few pixels past it)


def test_empty_library_and_no_weights_give_one_clear_message(empty_library):
    with pytest.raises(PromptsegError) as info:
        choose_route("auto", library=empty_library)
    message = str(info.value)
    assert "no GroundingDINO weights" in message and "no CLIPSeg weights" in message
    assert str(empty_library.path) in message and "promptseg library add" in message


def test_forced_route_without_weights_names_where_to_put_them():
    with pytest.raises(WeightsError, match="grounding-dino-tiny") as info:
        choose_route("groundingdino")
    assert str(hf_cache_dir()) in str(info.value)  # the hub-hosted GroundingDINO
    assert f"put {get_card('groundingdino_swint_ogc').filename} in {cache_dir()}" in str(info.value)  # authors' file
    with pytest.raises(WeightsError, match="clipseg"):
        choose_route("clipseg")


def test_auto_route_takes_clipseg_when_its_weights_are_in_the_cache(tiny_clipseg_dir, lungs):  # noqa: F811
    in_hf_cache("clipseg_rd64_refined", tiny_clipseg_dir)
    image = lungs[0][0]
    heat = load_heatmapper(device="cpu").heatmap(image, "lung")
    threshold = float(np.quantile(heat, 0.7))  # random weights: a threshold that leaves some blobs
    result = segment_text(image, "lung", heatmap_threshold=threshold, refine=False, device="cpu")
    assert result.route == "clipseg"
    assert result.reason.startswith("no GroundingDINO weights; CLIPSeg (clipseg_rd64_refined)")
    assert result.model_prompts == ["lung"] and result.heatmap.shape == image.shape
    np.testing.assert_allclose(result.heatmap, heat, atol=1e-6)
    _check_instances(result, image.shape)
    # without refinement the objects are exactly the heatmap's large components above the threshold
    components, _ = ndimage.label(heat > threshold, structure=np.ones((3, 3)))
    assert len(result.phrases) == sum(int(s) >= 64 for s in np.bincount(components.ravel())[1:])
    assert set(result.phrases) == {"lung"}


def test_auto_route_prefers_groundingdino_and_segments_each_box(hf_dir, tiny_clipseg_dir, lungs, litemedsam):  # noqa: F811
    in_hf_cache("grounding_dino_tiny", hf_dir)
    in_hf_cache("clipseg_rd64_refined", tiny_clipseg_dir)
    image = lungs[0][0]
    grounder = choose_route("auto", device="cpu").model
    scores = grounder.boxes(image, "lung . cell", box_threshold=0.0, text_threshold=0.0).scores
    threshold = float(np.sort(scores)[-4])  # random weights: keep the top few boxes
    result = segment_text(
        image, "Lung, cell", box_threshold=threshold, text_threshold=0.0, segmenter=litemedsam, device="cpu"
    )
    assert result.route == "groundingdino"  # CLIPSeg weights are there too: GroundingDINO comes first
    assert result.reason.startswith("GroundingDINO (grounding_dino_tiny):")
    assert result.model_prompts == ["lung . cell ."]
    _check_instances(result, image.shape)
    assert 1 <= len(result.phrases) <= 4 and set(result.phrases) <= {"lung", "cell", "lung cell"}
    assert np.all(result.scores >= threshold)


def test_library_route_answers_offline_on_real_xrays(lungs, litemedsam, empty_library):
    (ref, ref_mask), (target, truth) = lungs[0], lungs[1]
    empty_library.add("lung", ref, ref_mask, description="lung fields of a chest X-ray")
    result = segment_text(target, "lungs", library=empty_library, segmenter=litemedsam, device="cpu")
    assert result.route == "library"
    assert result.reason.startswith("no GroundingDINO weights; no CLIPSeg weights; used library entry 'lung'")
    _check_instances(result, target.shape)
    assert 1 <= len(result.phrases) <= 4  # two lung fields (and perhaps a stray piece)
    assert dice(result.labels > 0, truth) > 0.88  # measured 0.95 (SAT on these X-rays, tests/test_oneshot.py)


def test_cli_text_answers_from_the_library_and_reports_the_route(shared_data, tmp_path, capsys):
    import json

    import tifffile

    from napari_promptseg.cli import main

    pairs = dataset_pairs(shared_data / "lungs_cxr_shenzhen")
    library = tmp_path / "library"
    (ref, ref_mask), targets = pairs[0], pairs[1:3]
    assert (
        main(["library", "add", "lung", "--image", str(ref), "--mask", str(ref_mask), "--library", str(library)]) == 0
    )
    out = tmp_path / "out"
    code = main(["text", "lungs", *[str(t) for t, _ in targets], "-o", str(out), "--library", str(library)])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["command"] == "text" and report["route"] == "library"
    for record, (image_path, mask_path) in zip(report["images"], targets, strict=True):
        assert record["reason"].endswith("used library entry 'lung' (similarity 1.00)")
        labels = tifffile.imread(out / f"{image_path.stem}.tif")
        assert dice(labels > 0, read_mask(mask_path)) > 0.88  # measured 0.95
    assert "used library entry 'lung'" in capsys.readouterr().out

    code = main(["text", "nuclei", str(targets[0][0]), "-o", str(tmp_path / "out2"), "--library", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "no entries" in err[0] and "promptseg library add" in err[0]


def test_library_entry_saved_with_instances_answers_with_every_object(shared_data, litemedsam, empty_library):
    from skimage.measure import label

    from napari_promptseg.methods.instances import match_instances

    by_name = {p[0].name: p for p in dataset_pairs(shared_data / "glands_glas")}
    (ref, ref_mask), (target, truth_mask) = [
        (read_image(i), read_mask(m)) for i, m in (by_name["testA_25.jpg"], by_name["testA_28.jpg"])
    ]
    empty_library.add("gland", ref, ref_mask, "colon gland in H&E", instances=True)
    result = segment_text(target, "glands", library=empty_library, segmenter=litemedsam, device="cpu")
    assert result.route == "library" and "many-instances mode" in result.reason
    _check_instances(result, target.shape[:2])
    # the same exemplar through the instances mode directly: F1@0.5 0.81 (tests/test_oneshot_instances.py)
    assert match_instances(result.labels, label(truth_mask))["f1"] > 0.7
