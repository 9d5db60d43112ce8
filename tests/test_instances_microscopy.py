"""Microscopy at native resolution with the real LiteMedSAM: instances by default, tiles that lose nothing at their
seams, "find all like these", and batches that never lose work. Accuracy figures live in
benchmarks/eval_instances.py; the bounds here catch a broken stage (a stage that fails drops them to ~0)."""

from __future__ import annotations

import json
from dataclasses import replace

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from scipy import ndimage

from napari_promptseg._sample_data import nuclei
from napari_promptseg.cli import main
from napari_promptseg.io import read_image
from napari_promptseg.methods.instances import (
    find_all_like,
    fit_exemplars,
    is_many_objects,
    match_instances,
    segment_with_exemplars,
)
from napari_promptseg.methods.instances.exemplars import (
    INTERIOR_WEIGHT,
    TOUCHING_INTERIOR_WEIGHT,
    touching_fraction,
)
from napari_promptseg.methods.interactive import boxes_from_labels, segment_prompts
from napari_promptseg.methods.metrics import dice

DSB = "nuclei_dsb2018"
REFERENCE = "0a849e0eb15faa8a6d7329c3dd66aabe9a294cccb52ed30a90c8ca99092ae732"  # fluorescence, 50 nuclei
TARGET = "1747f62148a919c8feb6d607faeebdf504b5e2ad42b6b1710b1189c37ebcdb2c"  # fluorescence, 22 larger nuclei


@pytest.fixture(scope="module")
def sample():
    (image, _, _), (truth, _, _) = nuclei()
    return image, truth


def dsb(shared_data, stem):
    return shared_data / DSB / "images" / f"{stem}.png", shared_data / DSB / "labels" / f"{stem}.tif"


def test_reference_with_instance_ids_gives_instances_without_a_flag(shared_data, tmp_path):
    ref, ref_labels = dsb(shared_data, REFERENCE)
    target, truth_path = dsb(shared_data, TARGET)
    out = tmp_path / "out"
    assert (
        main(["oneshot", "--reference", str(ref), "--reference-mask", str(ref_labels), str(target), "-o", str(out)])
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["parameters"]["mode"] == "instances"
    assert report["parameters"]["instances_chosen_by"] == "reference labels"
    # what decides which objects are kept is in the report
    assert report["parameters"]["exemplar_candidates"] == "watershed"
    assert report["parameters"]["exemplar_interior_weight"] == TOUCHING_INTERIOR_WEIGHT  # half its nuclei touch
    assert 0 < report["parameters"]["exemplar_min_confidence"] < 1 and report["parameters"]["exemplar_min_area_px"] > 0
    labels = tifffile.imread(out / f"{TARGET}.tif")
    truth = read_image(truth_path)
    record = report["images"][0]
    assert record["objects"] == len(np.unique(labels)) - 1 >= 10
    assert record["working_scale"]["tiles"] >= 1 and record["working_scale"]["scale"] > 0
    # measured 0.72; one region (the old default) scores ~0.05 here
    assert match_instances(labels, truth)["f1"] > 0.5
    # the flag still overrides
    single = tmp_path / "single"
    args = ["oneshot", "--no-instances", "--reference", str(ref), "--reference-mask", str(ref_labels), str(target)]
    assert main([*args, "-o", str(single)]) == 0
    assert json.loads((single / "report.json").read_text())["parameters"]["mode"] == "sat"


def test_is_many_objects():
    labels = np.zeros((50, 50), np.uint16)
    assert not is_many_objects(labels)
    labels[5:10, 5:10], labels[20:25, 20:25] = 1, 1
    assert not is_many_objects(labels)  # two components: one region or a pair (lungs) -> single mode
    labels[30:35, 30:35] = 1
    assert is_many_objects(labels)
    ids = np.zeros((50, 50), np.uint16)
    ids[5:10, 5:10], ids[10:15, 5:10], ids[30:40, 30:40] = 1, 2, 3  # touching ids count separately
    assert is_many_objects(ids)


def test_many_objects_is_decided_by_a_count_in_one_pass_with_the_same_decisions(shared_data):
    """Deciding "many objects?" sorted every pixel (np.unique: 4 s of a 61 Mpx mask, and copies of it); the objects'
    areas are counted in one pass now, in little memory, with the decisions the sort gave on real label images and
    masks."""
    from napari_promptseg.io.label_ids import label_objects
    from napari_promptseg.methods.instances.exemplars import SPECK_FRACTION, SPECK_PX, object_areas

    def sorted_decision(labels, min_objects):  # the rule as it was, on np.unique's sort
        ids, areas = np.unique(label_objects(labels), return_counts=True)
        areas = areas[ids > 0]
        specks = (areas < SPECK_PX) & (areas < SPECK_FRACTION * areas.max(initial=0))
        return int(np.count_nonzero(~specks)) >= min_objects

    labels = [tifffile.imread(p) for p in sorted((shared_data / DSB / "labels").glob("*.tif"))[:6]]
    labels += [iio.imread(p)[..., 0] > 127 for p in sorted((shared_data / "glands_glas" / "masks").glob("*"))[:4]]
    labels.append(np.load(shared_data / "brain_mri_1vol" / "test_scan.npz")["seg"][65] == 16)  # a region + specks
    for image in labels:
        objects = label_objects(image)
        ids, areas = np.unique(objects, return_counts=True)
        assert np.array_equal(object_areas(objects), areas[ids > 0])
        for min_objects in (2, 3, 5, 20):
            assert is_many_objects(image, min_objects) == sorted_decision(image, min_objects)
    assert np.array_equal(object_areas(np.array([[-1.0, 2.5], [2.5, 0.0]])), [2])  # float ids: sorted, as before

    # ~17 Mpx of a mask's components, as label_objects numbers them (int32): counted in chunks, without the sort's
    # copies of every pixel (np.unique held 1.5 times the image; its first call on a fresh array took seconds)
    import tracemalloc

    large = ndimage.label(np.tile(labels[0], (16, 16)) > 0)[0]
    tracemalloc.start()
    try:
        many = is_many_objects(large)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.5 * large.nbytes, f"{peak / 1e6:.0f} MB held for a {large.nbytes / 1e6:.0f} MB label image"
    assert many == sorted_decision(large, 3)


def test_stray_pixels_of_a_mask_do_not_make_a_reference_of_many_objects(shared_data, tmp_path):
    """Two lungs with a 1-px speck (a Shenzhen mask as it is shipped) and a brain structure with three specks of
    1-6 px were read as references of many objects: oneshot searched for instances of a 2 px object size (the MRI
    structure: 1228 "objects" in 10 planes, 5 min). They are one region; real small objects still count."""
    lungs = shared_data / "lungs_cxr_shenzhen"
    mask = iio.imread(lungs / "masks" / "CHNCXR_0096_0.jpg")
    mask = (mask[..., 0] if mask.ndim == 3 else mask) > 127  # as the CLI reads a JPEG mask
    assert np.sort(np.bincount(ndimage.label(mask)[0].ravel())[1:])[0] == 1  # the speck the data holds
    assert not is_many_objects(mask)
    brain = np.load(shared_data / "brain_mri_1vol" / "test_scan.npz")["seg"][65] == 16
    assert ndimage.label(brain)[1] == 4 and not is_many_objects(brain)
    glands = iio.imread(shared_data / "glands_glas" / "masks" / "testB_4.jpg")
    assert is_many_objects((glands[..., 0] if glands.ndim == 3 else glands) > 127)  # 4 glands of 3762-225800 px
    # the CLI takes the single-region route for that lung reference (it chose instances)
    ref, target = lungs / "images" / "CHNCXR_0096_0.jpg", lungs / "images" / "CHNCXR_0017_0.jpg"
    args = ["oneshot", "--reference", str(ref), "--reference-mask", str(lungs / "masks" / "CHNCXR_0096_0.jpg")]
    assert main([*args, str(target), "-o", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "report.json").read_text())["parameters"]["mode"] == "sat"


def test_objects_cut_by_a_tile_border_come_back_once_and_whole(sample, litemedsam, monkeypatch):
    """A mosaic of the sample segmented twice, the second time shifted by 97 px so the tile seams cross other
    nuclei: every object that lies across a seam in one run is found once, with the same mask, in the run where
    it lies inside a tile. Filters-only features and no decoder make each tile's work local, so any difference is
    the stitching's; they read no encoder features, and the tiles get no encoder pass."""
    image, truth = sample
    # "watershed" is what the reference chooses (choose_candidates), and without a decoder no confidence bound is read
    model = fit_exemplars(litemedsam, image[..., None], truth, use_encoder=False, candidates="watershed")
    mosaic = np.zeros((600, 600), image.dtype)
    for y, x in [(20, 17), (20, 317), (320, 17), (320, 317)]:
        mosaic[y : y + 256, x : x + 256] = image
    embedded = []
    embed = litemedsam.embed
    monkeypatch.setattr(litemedsam, "embed", lambda *args, **kwargs: embedded.append(1) or embed(*args, **kwargs))
    shift = 97
    runs = []
    for pad in (0, shift):
        padded = np.pad(mosaic, ((0, 0), (pad, 0)))[..., None]
        result = segment_with_exemplars(litemedsam, model, padded, refine="none", object_size=model.object_size)
        assert result.scale.tiles > 1
        seams = sorted({t.x0 - pad for t in _grid(result)} | {t.x1 - pad for t in _grid(result)})
        runs.append((result.labels[:, pad:], [b for b in seams if 0 < b < 600]))
    assert not embedded
    (a, seams_a), (b, seams_b) = runs
    checked = 0
    for obj in np.unique(a[a > 0]):
        mask = a == obj
        cols = np.nonzero(mask.any(0))[0]
        if not _crosses(cols, seams_a) or _crosses(cols, seams_b):
            continue
        checked += 1
        ids, counts = np.unique(b[mask], return_counts=True)
        hits = [i for i, c in zip(ids, counts, strict=True) if i > 0 and c > 0.2 * mask.sum()]
        assert len(hits) == 1, f"object at columns {cols.min()}-{cols.max()} comes back as {hits}"
        assert dice(b == hits[0], mask) > 0.9
    assert checked >= 3


def test_tiles_decode_only_what_they_may_own_and_skip_empty_canvas(sample, nuclei_exemplars, litemedsam, monkeypatch):
    """A tile decodes only the candidates whose centre lies near its core (the neighbour decodes the others), and a
    tile of one flat value (a mosaic's or a slide scan's empty canvas) gets no encoder pass; neither changes the
    objects found."""
    from napari_promptseg.methods.instances import pipeline

    image, truth = sample
    model = nuclei_exemplars
    canvas = np.zeros((1024, 1024), image.dtype)
    # the sample over the corner where four tiles of 297 px meet: their overlap (242-297 px) and their cores' edges
    # (269.5 px) cross its nuclei both ways; 12 of the 16 tiles are empty canvas
    at = np.s_[142:398, 142:398]
    canvas[at] = image
    decoded = []
    predict = litemedsam.predict

    def counting_predict(embedding, **kwargs):
        decoded.append(len(kwargs["boxes"]))
        return predict(embedding, **kwargs)

    monkeypatch.setattr(litemedsam, "predict", counting_predict)
    runs = {}
    for margin in (np.inf, pipeline.CLAIM_MARGIN_OBJECTS):  # inf: every tile decodes all its candidates
        monkeypatch.setattr(pipeline, "CLAIM_MARGIN_OBJECTS", margin)
        decoded.clear()
        result = segment_with_exemplars(litemedsam, model, canvas[..., None], object_size=model.object_size)
        runs[margin] = (result, sum(decoded))
    (every, n_every), (claimed, n_claimed) = runs.values()
    assert claimed.scale.tiles > 4 and claimed.blank_tiles >= claimed.scale.tiles // 3
    assert n_claimed < 0.9 * n_every, (n_claimed, n_every)
    assert match_instances(claimed.labels, every.labels)["f1"] > 0.98
    assert not claimed.labels[450:, :].any() and not claimed.labels[:, 450:].any()
    assert match_instances(claimed.labels[at], truth)["f1"] > 0.6  # measured 0.88 (60 -> 46 decodes)


def _crosses(cols: np.ndarray, seams: list[int]) -> bool:
    return any(cols.min() < s <= cols.max() for s in seams)


def _grid(result):
    from napari_promptseg.tiling import TileGrid

    return TileGrid(result.labels.shape, result.scale.tile, result.scale.overlap)


def test_find_all_from_three_boxes(sample, litemedsam):
    image, truth = sample
    boxes = np.array(boxes_from_labels(truth), np.float32)
    order = np.argsort(-np.bincount(truth.ravel())[1:])
    result = find_all_like(image, boxes[order[[5, 15, 25]]], segmenter=litemedsam)
    m = match_instances(result.labels, truth)
    # measured: recall 0.6 of 50 nuclei from 3 examples; memorising the 3 examples gives 0.08
    assert m["recall"] > 0.45 and m["precision"] > 0.5, m
    assert len(result.scores) == len(np.unique(result.labels)) - 1
    assert not result.warnings
    assert result.scale.source == "boxes"  # the working scale came from the boxes (report.json says so)
    # one box over most of the image beside them: it skews what is learnt, and the result says so
    h, w = image.shape[:2]
    boxes = np.concatenate([boxes[order[[5, 15, 25]]], [[0, 0, w - 1, h - 1]]]).astype(np.float32)
    assert any("example box 4" in m for m in find_all_like(image, boxes, segmenter=litemedsam).warnings)
    # of two boxes, neither is the odd one out, but the size learnt between them is like neither: said too (it was
    # not, and 5 objects were found instead of 39)
    two = find_all_like(image, boxes[[1, 3]], segmenter=litemedsam)
    assert any("example boxes 1 and 2 differ in size" in m for m in two.warnings), two.warnings


def test_an_object_size_unlike_the_example_boxes_is_said(sample, litemedsam):
    """Find all with an object size ten times the boxed nuclei's (a slip of a digit, or a size from another image):
    background was learnt within half that size of the boxes, about the whole image, and 21 objects came back for 50
    nuclei (F1 0.28; 0.58 without the size) without a word. The examples and the size given disagree: said."""
    image, truth = sample
    boxes = np.array(boxes_from_labels(truth), np.float32)
    order = np.argsort(-np.bincount(truth.ravel())[1:])
    examples = boxes[order[[5, 15, 25]]]
    result = find_all_like(image, examples, segmenter=litemedsam, object_size=250)
    said = [m for m in result.warnings if "object size 250 px is" in m]
    assert len(said) == 1 and "times the example boxes' (typically" in said[0], result.warnings


def test_an_example_box_that_gives_nothing_is_said(sample, litemedsam):
    """Find all with one of three example boxes on the empty canvas beside the image: that box was left out of what
    was learnt without a word (segment_prompts said "covers pixels of one value"; find_all_like dropped it)."""
    image, truth = sample
    boxes = np.array(boxes_from_labels(truth), np.float32)
    order = np.argsort(-np.bincount(truth.ravel())[1:])
    canvas = np.pad(image, ((0, 0), (0, 64)))  # an empty strip on the right
    w = image.shape[1]
    examples = np.concatenate([boxes[order[[5, 15]]], [[w + 20, 100, w + 40, 120]]]).astype(np.float32)
    result = find_all_like(canvas, examples, segmenter=litemedsam)
    assert any("box 3 covers pixels of one value" in m for m in result.warnings), result.warnings
    assert any("example box(es) 3 gave no object" in m for m in result.warnings), result.warnings
    assert match_instances(result.labels[:, :w], truth)["recall"] > 0.45  # the other two examples still work


def test_an_example_box_drawn_twice_is_said_to_repeat_the_first(sample, litemedsam):
    """Find all with one example box drawn twice (a double click, a pasted line): the repeat's object went to the
    first box and the warning said 'example box(es) 2 gave no object ... box objects like the others', as for a box
    on nothing; now it says box 2 repeats box 1, and still what a box on nothing gives."""
    image, truth = sample
    boxes = np.array(boxes_from_labels(truth), np.float32)
    order = np.argsort(-np.bincount(truth.ravel())[1:])
    examples = boxes[order[[5, 5, 15]]]
    result = find_all_like(image, examples, segmenter=litemedsam)
    assert "example box 2 repeats box 1 (the same object): learned from once" in " ".join(result.warnings)
    assert not any("gave no object" in m for m in result.warnings), result.warnings
    # the repeat adds nothing and takes nothing: the objects of the two distinct boxes alone (the recall of those
    # two differs with the CPU's precision: 0.44 in float32 on AVX2, above 0.45 in bfloat16)
    alone = find_all_like(image, boxes[order[[5, 15]]], segmenter=litemedsam)
    assert match_instances(result.labels, alone.labels)["f1"] > 0.95
    assert match_instances(result.labels, truth)["recall"] > 0.4


def test_small_boxes_in_a_large_image_are_decoded_at_their_scale(sample, litemedsam):
    image, truth = sample
    big = np.tile(image, (4, 4))  # 1024 px: squeezed whole into 256 px, nuclei would be 4x smaller
    big_truth = np.zeros(big.shape, np.int32)
    big_truth[512:768, 256:512] = truth
    boxes = boxes_from_labels(big_truth, min_area=100)
    result = segment_prompts(big, litemedsam, boxes=boxes)
    assert result.scale is not None and result.scale.tiles > 1 and result.scale.source == "boxes"
    scores = [dice(result.labels == i + 1, big_truth == lab) for i, lab in enumerate(_labels_of(big_truth, boxes))]
    # measured median 0.76 in tiles; the whole image at 256 px gives 0.5
    assert np.median(scores) > 0.65


def _labels_of(labels, boxes):
    return [
        int(np.bincount(labels[int(y0) : int(y1) + 1, int(x0) : int(x1) + 1].ravel())[1:].argmax() + 1)
        for x0, y0, x1, y1 in boxes
    ]


def test_batch_with_a_hopeless_target_writes_every_output_and_a_report(shared_data, tmp_path, capsys):
    ref_path, ref_labels_path = dsb(shared_data, REFERENCE)
    target, _ = dsb(shared_data, TARGET)
    # the reference's top half (28 of its 50 nuclei) and half of the target: the batch's bookkeeping is what
    # is checked here, and fitting and segmenting less of them is what this test spent its time on
    ref, ref_labels = tmp_path / "ref.png", tmp_path / "ref_labels.tif"
    iio.imwrite(ref, read_image(ref_path)[:128])
    tifffile.imwrite(ref_labels, read_image(ref_labels_path)[:128])
    folder = tmp_path / "targets"
    folder.mkdir()
    iio.imwrite(folder / "a_good.png", iio.imread(target)[256:])  # its bottom half: 15 of its 22 nuclei
    iio.imwrite(folder / "b_blank.png", np.zeros((200, 300), np.uint8))  # nothing to find
    out = tmp_path / "out"
    args = ["oneshot", "--reference", str(ref), "--reference-mask", str(ref_labels), str(folder), "-o", str(out)]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    by_name = {r["input"].split("/")[-1]: r for r in report["images"]}
    assert by_name["a_good.png"]["status"] == "ok" and by_name["a_good.png"]["objects"] > 5
    blank = by_name["b_blank.png"]
    assert blank["status"] in ("empty", "failed") and blank["reason"]
    assert tifffile.imread(out / "b_blank.tif").shape == (200, 300)
    assert not tifffile.imread(out / "b_blank.tif").any()
    # an unreadable file: the others are still written, the report names it, exit 1 (an output is missing)
    (folder / "c_corrupt.png").write_bytes(b"not an image")
    out2 = tmp_path / "out2"
    assert main([*args[:-2], "-o", str(out2)]) == 1
    report = json.loads((out2 / "report.json").read_text())
    corrupt = next(r for r in report["images"] if r["input"].endswith("c_corrupt.png"))
    assert corrupt["status"] == "failed" and "c_corrupt.png" in corrupt["reason"] and "output" not in corrupt
    assert (out2 / "a_good.tif").is_file() and (out2 / "b_blank.tif").is_file()
    assert "failed" in capsys.readouterr().err


@pytest.fixture(scope="module")
def dsb_exemplars(shared_data, litemedsam):
    ref, ref_labels = dsb(shared_data, REFERENCE)
    return fit_exemplars(litemedsam, read_image(ref), read_image(ref_labels), candidates="watershed")


def test_a_camera_offset_does_not_turn_the_background_into_objects(shared_data, litemedsam, dsb_exemplars):
    """The reference's background is black; the same target with a grey offset (as DSB images with a background of
    34/255 have) must give the same nuclei. Without the window starting at the background, the reference's pixel
    classifier called the whole offset image foreground and found no nucleus."""
    target, truth_path = dsb(shared_data, TARGET)
    image, truth = read_image(target), read_image(truth_path)
    offset = (40 + image.astype(np.float32) * (215 / 255)).astype(np.uint8)  # background 40, same nuclei
    plain = segment_with_exemplars(litemedsam, dsb_exemplars, image)
    shifted = segment_with_exemplars(litemedsam, dsb_exemplars, offset)
    f1_plain, f1_shifted = match_instances(plain.labels, truth)["f1"], match_instances(shifted.labels, truth)["f1"]
    assert f1_plain > 0.5 and f1_shifted > f1_plain - 0.1, (f1_plain, f1_shifted)


def test_touching_fraction():
    labels = np.zeros((6, 9), np.uint16)
    labels[1:3, 1:3], labels[1:3, 3:5] = 1, 2  # side by side
    labels[3, 5] = 3  # corner to corner with 2
    labels[4:6, 7:9] = 7  # alone
    assert touching_fraction(labels) == 0.75
    assert touching_fraction(labels > 0) == 0.0  # a mask: one value, nothing to touch
    assert touching_fraction(np.zeros((4, 4), np.uint8)) == 0.0


def test_a_reference_of_touching_nuclei_teaches_splitting_them(shared_data, litemedsam, dsb_exemplars):
    """Half the reference's nuclei touch a neighbour, so the watershed weighs the classifier's interior class (the
    edge class runs between touching nuclei) heavily: on a target where two thirds of the nuclei touch, more of them
    come back one by one than with the light weight (measured: 109 vs 100 objects, F1 0.77 vs 0.68). The same
    reference as a mask (touching nuclei merged, as MoNuSeg's masks) teaches nothing of the kind."""
    assert dsb_exemplars.interior_weight == TOUCHING_INTERIOR_WEIGHT
    target, truth_path = dsb(shared_data, "699f2992cd71e2e28cf45f81347ff22e76b37541ce88087742884cd0e9aadc68")
    image, truth = read_image(target), read_image(truth_path)
    assert touching_fraction(truth) > 0.6
    split = segment_with_exemplars(litemedsam, dsb_exemplars, image)
    light = segment_with_exemplars(litemedsam, replace(dsb_exemplars, interior_weight=INTERIOR_WEIGHT), image)
    f1_split, f1_light = match_instances(split.labels, truth)["f1"], match_instances(light.labels, truth)["f1"]
    assert split.labels.max() > light.labels.max() and f1_split > f1_light + 0.03, (f1_split, f1_light)
    ref, ref_labels = dsb(shared_data, REFERENCE)
    as_mask = fit_exemplars(litemedsam, read_image(ref), read_image(ref_labels) > 0, candidates="watershed")
    assert as_mask.interior_weight == INTERIOR_WEIGHT


def test_a_target_gets_its_own_object_size_both_ways(shared_data, dsb_exemplars):
    """Four nuclei five times larger than the reference's get a larger size (at most 3x), not the small size their
    texture suggested at the old working scale (a third: 63 tiles and 2681 false objects); a target whose nuclei
    really are half the size gets a smaller one. A size measured on a target is measured again at its own scale
    before it is used."""
    from napari_promptseg.methods.instances.exemplars import estimate_object_size

    large, _ = dsb(shared_data, "1879f4f4f05e2bada0ffeb46c128b8df7a79b14c84f38c3e216a69653495153b")
    size, source = estimate_object_size(dsb_exemplars, read_image(large)[..., :3], 256)  # RGB, as the pipeline
    assert size >= 2 * dsb_exemplars.object_size and "rescaled" in source, (size, source)
    small, _ = dsb(shared_data, "0ed3555a4bd48046d3b63d8baf03a5aa97e523aa483aaa07459e7afa39fb96c6")  # nuclei of 9 px
    size, source = estimate_object_size(dsb_exemplars, read_image(small)[..., :3], 256)
    assert size < 0.7 * dsb_exemplars.object_size and "rescaled" in source


def test_he_slides_read_the_hematoxylin_stain(shared_data, litemedsam):
    """On H&E slides the pixel classifier also reads the hematoxylin density (colour deconvolution): it marks the
    nuclei on every MoNuSeg slide, and an RGB reference teaches it to the classifier of its targets."""
    import csv

    from napari_promptseg.methods.pixel_classifier import hematoxylin_density

    root = shared_data / "nuclei_monuseg_train_text"
    with open(root / "pairs.csv") as fh:
        rows = list(csv.DictReader(fh))
    slides = [(read_image(root / r["image"])[..., :3], read_image(root / r["mask"]) > 0) for r in rows]
    for image, truth in slides:
        density = hematoxylin_density(image / 255.0)[..., 0]
        # measured: 1.9-5.2 times denser on the nuclei than around them
        assert density[truth].mean() > 1.5 * density[~truth].mean()
    (ref, ref_truth), (target, truth) = slides[0], slides[4]
    model = fit_exemplars(litemedsam, ref[:400, :400], ref_truth[:400, :400])
    assert model.stain and model.filter_channels == (0, 1, 2, 3)
    assert model.interior_weight == INTERIOR_WEIGHT  # a mask: its touching nuclei are one object
    result = segment_with_exemplars(litemedsam, model, target[:400, :400])
    # measured 0.82 (0.78 with the stain channel zeroed)
    assert dice(result.labels > 0, truth[:400, :400]) > 0.7


def test_a_glands_reference_bounds_the_size_and_confidence_of_what_targets_keep(shared_data, litemedsam):
    """GlaS reference: its two smallest labelled objects are glands cut to slivers by the image border (0.3 % of
    the median area). The smallest object a target may keep follows the smallest whole gland, and no target object
    smaller than that gland is kept with less decoder confidence than the least confident whole gland the reference
    got back; the candidate source is still chosen with every labelled object."""
    import csv

    from skimage.measure import label

    from napari_promptseg.io import read_mask
    from napari_promptseg.methods.instances.pipeline import MIN_AREA_FRACTION

    root = shared_data / "glands_glas"
    with open(root / "pairs.csv") as fh:
        rows = list(csv.DictReader(fh))
    (ref, ref_mask), (target, _) = [
        (read_image(root / r["image"])[..., :3], read_mask(root / r["mask"])) for r in (rows[0], rows[7])
    ]
    ref_labels = label(ref_mask)
    areas = np.bincount(ref_labels.ravel())[1:]
    model = fit_exemplars(litemedsam, ref, ref_labels)
    assert areas.min() < 0.01 * np.median(areas)  # the slivers are there
    assert model.min_area > 0.5 * model.median_area and model.candidates == "correspondence"
    assert model.min_score > 0.5  # measured 0.83
    result = segment_with_exemplars(litemedsam, model, target)
    kept = np.bincount(result.labels.ravel())[1:]
    assert len(kept) > 0 and kept.min() >= MIN_AREA_FRACTION * model.min_area
    # the bound reads the decoded mask; a painted object holds at least half of its mask (the duplicate check)
    small = kept < 0.5 * model.min_area
    assert (result.scores[small] >= model.min_score).all() and result.low_confidence > 0  # measured: 3 left out
    # bounds most objects miss are said, not silent (told the glands are twice their size, most look small)
    strict = segment_with_exemplars(
        litemedsam, replace(model, min_score=0.99), target, object_size=2 * model.object_size
    )
    assert strict.low_confidence > len(strict.scores) and any("less certain" in w for w in strict.warnings)


def test_a_handful_of_exemplars_sets_no_confidence_bound(sample, litemedsam):
    """The least confident of five objects says little about the next image's objects: few exemplars get no bound."""
    image, truth = sample
    five = np.isin(truth, np.unique(truth[truth > 0])[:5])
    assert fit_exemplars(litemedsam, image[..., None], np.where(five, truth, 0)).min_score == 0.0


def test_the_confidence_bound_ignores_objects_cut_by_the_border():
    """A labelled object cut by the border is found with little confidence (the decoder saw a part of it): it does
    not lower the bound; whole objects do."""
    from napari_promptseg.methods.instances.selection import _least_confident_match

    labels = np.zeros((40, 40), np.int32)
    labels[0:6, 10:20] = 1  # cut by the top border
    labels[15:25, 5:15] = 2
    labels[15:25, 25:35] = 3
    found = np.zeros_like(labels)
    found[0:6, 10:19] = 1
    found[15:25, 5:14] = 2
    found[16:25, 25:35] = 3
    found[30:34, 30:34] = 4  # matches nothing
    labels[36:38, 2:4] = 4  # a small object ...
    found[32:40, 0:8] = 5  # ... inside a found one 16 times its size (IoU 0.06, not a match)
    scores = np.array([0.3, 0.9, 0.8, 0.1, 0.05])
    assert _least_confident_match(found, scores, labels) == pytest.approx(0.8)
    assert _least_confident_match(found, scores, labels.astype(np.uint64)) == pytest.approx(0.8)
    assert _least_confident_match(found * 0, np.array([]), labels) == 0.0


def test_learning_a_few_examples_of_a_large_image_measures_them_where_they_are(shared_data, litemedsam):
    """Find all like these on an 8k x 8k image peaked at 4.1 GB: learning its three examples measured their width
    over the whole image (a float64 copy of it, hole filling and a distance transform of all of it: 3 GB above the
    inputs and 165 s at 8k). Measured where the examples are, the same widths cost a fraction of it (real GOWT1
    nuclei tiled to 4k: 827 -> 162 MiB above the inputs, 64 -> 27 s)."""
    import tracemalloc

    from scipy import ndimage

    from napari_promptseg.methods.instances.exemplars import _object_widths

    root = shared_data / "nuclei_ctc_fluo_instances"
    frame = tifffile.imread(root / "images" / "N2DH-GOWT1_t21.tif")
    frame_labels = tifffile.imread(root / "labels" / "N2DH-GOWT1_t21.tif")
    image = np.tile(frame, (4, 4))
    examples, known = np.zeros(image.shape, np.uint16), np.zeros(image.shape, bool)
    for k, (row, col, nucleus) in enumerate([(0, 0, 1), (3, 2, 5), (2, 3, 12)]):  # three nuclei far apart
        mask = np.zeros(image.shape, bool)
        mask[row * 1024 : (row + 1) * 1024, col * 1024 : (col + 1) * 1024] = frame_labels == nucleus
        examples[mask] = k + 1
        rows, cols = np.nonzero(mask)
        known[max(0, rows.min() - 40) : rows.max() + 41, max(0, cols.min() - 40) : cols.max() + 41] = True
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        fit_exemplars(litemedsam, image, examples, known=known)
        peak = (tracemalloc.get_traced_memory()[1] - base) / 2**20
    finally:
        tracemalloc.stop()
    assert peak < 400, f"{peak:.0f} MiB"

    # the same widths as hole filling and a distance transform of the whole image (2k x 2k of real nuclei)
    mask = np.tile(frame_labels, (2, 2)) > 0
    filled = ndimage.binary_fill_holes(mask)
    comps, n = ndimage.label(filled)
    dist = ndimage.distance_transform_edt(np.pad(filled, 1))[1:-1, 1:-1]
    whole = 2 * np.asarray(ndimage.maximum(dist, comps, np.arange(1, n + 1)))
    areas = np.asarray(ndimage.sum_labels(filled, comps, np.arange(1, n + 1)))
    np.testing.assert_array_equal(_object_widths(np.where(mask, 0.0, 1.0)[..., None]), whole[areas >= 9])
