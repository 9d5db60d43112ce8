"""Text prompts end to end: which route answers and why, and instance labels on real images.

The vision-language routes run tiny random-weight models (real architectures, no published weights here), so they
assert the plumbing; the offline library route runs real LiteMedSAM on real chest X-rays and asserts a Dice.
"""

from __future__ import annotations

from types import SimpleNamespace

import imageio.v3 as iio
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

from .conftest import dataset_pairs, in_hf_cache, some_dsb_nuclei
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


def test_auto_route_does_not_pass_over_a_model_the_user_named(empty_library, tmp_path):
    """A grounder named with a typo, or --text-weights of a folder neither model loads, silently answered from the
    reference library in route auto (the reason was in no message and no report)."""
    with pytest.raises(WeightsError, match="grounder 'grounding_dino_tnyi': unknown model"):
        choose_route("auto", grounder="grounding_dino_tnyi", library=empty_library)
    with pytest.raises(WeightsError, match="heatmapper 'litemedsam': litemedsam is a segmenter, not a heatmapper"):
        choose_route("auto", heatmapper="litemedsam", library=empty_library)
    with pytest.raises(WeightsError, match=r"text weights .*nowhere: neither GroundingDINO nor CLIPSeg loads them"):
        choose_route("auto", weights=str(tmp_path / "nowhere"), library=empty_library)


def test_a_named_model_or_weights_no_route_loads_are_told_once(empty_library, tmp_path):
    """`promptseg text --heatmapper clipseg_rd64_refined` offline printed its whole reason (where to put the
    weights, the `hf download` command) twice, and --text-weights no model loads its first model's reason twice."""
    for named in ({"heatmapper": "clipseg_rd64_refined"}, {"grounder": "grounding_dino_tiny"}):
        with pytest.raises(WeightsError) as info:
            choose_route("auto", library=empty_library, **named)
        assert str(info.value).count("hf download") == 1, str(info.value)
    with pytest.raises(WeightsError) as info:
        choose_route("auto", weights=str(tmp_path), library=empty_library)
    assert str(info.value).count(f"grounding_dino_tiny: {tmp_path} is not a complete") == 1, str(info.value)


def test_auto_route_given_clipseg_weights_records_that_groundingdino_does_not_load_them(tiny_clipseg_dir):  # noqa: F811
    """Route auto given CLIPSeg's weights (the Registration and Text widgets' text weights field, --text-weights)
    recorded 'no GroundingDINO weights; CLIPSeg ...': as if no weights had been given and CLIPSeg answered for want
    of GroundingDINO's. It says GroundingDINO does not load the weights given, which CLIPSeg answered with."""
    route = choose_route("auto", weights=str(tiny_clipseg_dir), device="cpu")
    assert (route.route, route.name) == ("clipseg", "clipseg_rd64_refined")
    assert route.because("CLIPSeg (clipseg_rd64_refined)") == (
        f"GroundingDINO does not load the text weights {tiny_clipseg_dir}; CLIPSeg (clipseg_rd64_refined)"
    )
    with pytest.raises(WeightsError, match=rf"^GroundingDINO does not load the text weights {tiny_clipseg_dir} \("):
        choose_route("groundingdino", weights=str(tiny_clipseg_dir), device="cpu")


def test_a_model_named_as_the_docs_write_it_answers_under_its_catalogue_name(tiny_clipseg_dir):  # noqa: F811
    """--heatmapper CLIPSeg_rd64_refined loads clipseg_rd64_refined; the route (report.json's model, the reason)
    named it as typed, beside the catalogue's name everywhere else."""
    in_hf_cache("clipseg_rd64_refined", tiny_clipseg_dir)
    route = choose_route("auto", heatmapper="CLIPSeg_rd64_refined", device="cpu")
    assert (route.route, route.name) == ("clipseg", "clipseg_rd64_refined")


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


def test_a_one_region_answer_leaves_no_specks_as_objects(shared_data, litemedsam, empty_library):
    """Each piece of SAT's one region becomes an object of the library route; thresholding the decoder's upsampled
    mask also leaves specks of a few pixels (measured on this gland image: 7 of 11 objects, 1-54 px, beside glands
    of 3000-180 000 px), which are not objects."""
    from napari_promptseg.methods.text import SPECK_FRACTION

    glas = shared_data / "glands_glas"
    ref, ref_mask = read_image(glas / "images" / "testA_25.jpg"), read_mask(glas / "masks" / "testA_25.jpg")
    empty_library.add("gland", ref, ref_mask, instances=False)
    target = read_image(glas / "images" / "testB_3.jpg")
    result = segment_text(target, "glands", library=empty_library, segmenter=litemedsam, device="cpu")
    _check_instances(result, target.shape[:2])
    areas = np.bincount(result.labels.ravel())[1:]
    assert 1 <= len(areas) <= 6 and areas.min() >= SPECK_FRACTION * areas.max(), sorted(areas)


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
    # why the run's route answers, beside the route (only each image's record said it)
    assert (
        report["reason"] == f"no GroundingDINO weights; no CLIPSeg weights; the reference library answers ({library})"
    )
    (entry,) = ReferenceLibrary.open(library).entries
    for record, (image_path, mask_path) in zip(report["images"], targets, strict=True):
        assert record["reason"].endswith("used library entry 'lung' (similarity 1.00)")
        # by id too: entries may share a name ('lung' saved twice), and `library remove` wants the id then
        assert record["library_entries"] == [{"id": entry.id, "name": "lung", "similarity": 1.0}]
        labels = tifffile.imread(out / f"{image_path.stem}.tif")
        assert dice(labels > 0, read_mask(mask_path)) > 0.88  # measured 0.95
    assert "used library entry 'lung'" in capsys.readouterr().out

    code = main(["text", "nuclei", str(targets[0][0]), "-o", str(tmp_path / "out2"), "--library", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "no entries" in err[0] and "promptseg library add" in err[0]


def test_cli_text_report_names_its_timings_as_every_command_and_a_resume_reads_old_reports(
    shared_data, tmp_path, lungs
):
    """`promptseg text` wrote each image's stage times as ``timings``, every other command as ``timings_s``; a
    resume of a run written so keeps its records under today's name (beside new records, one name in one report)."""
    import json

    from napari_promptseg.cli import main

    (ref, ref_mask), *_ = dataset_pairs(shared_data / "lungs_cxr_shenzhen")
    library = tmp_path / "library"
    assert (
        main(["library", "add", "lung", "--image", str(ref), "--mask", str(ref_mask), "--library", str(library)]) == 0
    )
    images = []
    for k in (1, 2):  # small X-rays: the report, not the segmentation, is under test
        images.append(str(tmp_path / f"xray{k}.png"))
        iio.imwrite(images[-1], lungs[k][0][::4, ::4])
    out = tmp_path / "out"
    command = ["text", "lungs", *images, "-o", str(out), "--library", str(library), "--device", "cpu"]
    assert main(command) == 0
    report = json.loads((out / "report.json").read_text())
    for record in report["images"]:
        assert set(record["timings_s"]) == {"load_s", "segment_s"} and "timings" not in record
    # the report an earlier version wrote, and the second image to be done again
    for record in report["images"]:
        record["timings"] = record.pop("timings_s")
    (out / "report.json").write_text(json.dumps(report))
    (out / "xray2.tif").unlink()
    assert main([*command, "--resume"]) == 0
    resumed = json.loads((out / "report.json").read_text())
    assert resumed["batch"]["resumed"] == 1
    for record in resumed["images"]:
        assert set(record["timings_s"]) == {"load_s", "segment_s"} and "timings" not in record


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


def test_one_object_of_a_many_instances_entry_in_pieces_is_one_object(shared_data, empty_library, monkeypatch):
    """Batch bug hunt (session 31): an instances entry's answer holding one object (id 1) in two pieces was cut into
    its connected components, as a one-region answer is: two objects, where the answer's reason said one. Here the
    answer itself is given (the route's labelling is what is checked, not the segmentation)."""
    from napari_promptseg.methods import library as library_module
    from napari_promptseg.methods.library import LibraryMatch, LibraryResult

    image, _, truth = some_dsb_nuclei(shared_data, "52b267e2")
    entry = empty_library.add("nucleus", image, truth, instances=True)
    pieces = np.zeros(image.shape[:2], np.uint16)
    pieces[10:20, 10:20] = pieces[10:20, 30:40] = 1  # one object, two pieces

    def answer(hwc, phrase, library, **kwargs):
        match = LibraryMatch(entry, 1.0, entry.name, True)
        found = SimpleNamespace(scores=np.array([0.8], np.float32))  # the instance pipeline's confidence of id 1
        return LibraryResult(pieces, pieces > 0, [match], "library entry 'nucleus', many-instances mode: 1", found)

    monkeypatch.setattr(library_module, "segment_with_library", answer)
    result = segment_text(image, "nuclei", library=empty_library, route="library", segmenter=object())
    assert result.labels.max() == 1 and len(result.boxes) == 1 and result.scores.tolist() == [np.float32(0.8)]
    np.testing.assert_array_equal(result.labels > 0, pieces > 0)


def test_a_library_entry_with_partial_labels_finds_the_nuclei_it_left_unlabelled(shared_data, litemedsam, tmp_path):
    """A user labels 8 of the 146 nuclei of a DSB fluorescence image and saves it as the 'nucleus' entry. Without
    partial labels the 138 unlabelled nuclei were taught as background, and "nuclei" on another DSB image of that
    kind found 4 objects, none of its 129 nuclei. Saved with partial labels, background is learned only near the 8
    (as `promptseg oneshot --partial-labels`): 113 objects, 98 of the 129 nuclei matched (IoU > 0.5; recall 0.76,
    F1 0.81)."""
    from napari_promptseg.methods.instances import match_instances

    image, some, _ = some_dsb_nuclei(shared_data, "52b267e2")
    folder = shared_data / "nuclei_dsb2018"
    target_path = next((folder / "images").glob("699f2992*.png"))
    target, truth = read_image(target_path)[..., 0], read_image(folder / "labels" / f"{target_path.stem}.tif")
    library = ReferenceLibrary.open(tmp_path / "library")
    library.add("nucleus", image, some, instances=True)
    plain = segment_text(target, "nuclei", library=library, segmenter=litemedsam, device="cpu")
    # the same pixels saved again with the flag, in the same library, by the same segmenter: the fit cached for the
    # entry without it must not answer
    library.remove("nucleus")
    entry = library.add("nucleus", image, some, partial_labels=True)
    assert entry.instances and entry.partial_labels
    partial = segment_text(target, "nuclei", library=library, segmenter=litemedsam, device="cpu")
    assert plain.route == partial.route == "library" and "many-instances mode" in partial.reason
    _check_instances(partial, target.shape)
    without, with_partial = match_instances(plain.labels, truth), match_instances(partial.labels, truth)
    assert without["true"] == with_partial["true"] == 129
    assert without["matched"] <= 10  # measured 0 (4 objects found)
    assert with_partial["matched"] >= without["matched"] + 70  # measured 98 vs 0
    assert with_partial["recall"] > 0.6 and with_partial["f1"] > 0.7  # measured 0.76, 0.81


# -- the library's instances entries on pyramid levels, in stacks, and cancelled ---------------------------------

#: the bundled nuclei enlarged this much: full-resolution nuclei of ~60 px, as GOWT1's at a slide's resolution
ZOOM = 4


@pytest.fixture(scope="module")
def zoomed_nuclei_library(tmp_path_factory):
    """A library whose 'nucleus' entry is the bundled nuclei image at ZOOM x its pixels (nuclei ~60 px), with its 50
    instance labels; and the other bundled nuclei image (78 nuclei) with its truth, at the original pixels."""
    from napari_promptseg._sample_data import nuclei, nuclei_for_text

    (image, _, _), (truth, _, _) = nuclei()
    (target, _, _), (target_truth, _, _) = nuclei_for_text()
    block = np.ones((ZOOM, ZOOM), np.uint8)
    library = ReferenceLibrary.open(tmp_path_factory.mktemp("zoomed") / "library")
    library.add("nucleus", np.kron(image, block), np.kron(truth, block).astype(np.uint16), margin=None, instances=True)
    return library, target, target_truth


def test_an_instances_entry_on_a_pyramid_level_seeks_its_objects_at_the_level_size(zoomed_nuclei_library, litemedsam):
    """A level ZOOM times coarser than the exemplars' pixels holds nuclei ZOOM times smaller: ``factor`` says so,
    as the one-shot CLI divides the object size on a level. Measured: F1 0.32 (27 objects) with the exemplars'
    full-resolution size, 0.76 (62) with the factor; 0.85 for the plain image with an entry at its own pixels."""
    from napari_promptseg.methods.instances import match_instances

    library, level, truth = zoomed_nuclei_library
    result = segment_text(level, "nuclei", library=library, segmenter=litemedsam, device="cpu", factor=ZOOM)
    assert result.route == "library" and "many-instances mode" in result.reason
    _check_instances(result, level.shape)
    assert match_instances(result.labels, truth)["f1"] > 0.65


def test_cli_text_on_a_pyramidal_tiff_reads_a_level_with_the_objects_at_its_size(zoomed_nuclei_library, tmp_path):
    """`promptseg text nuclei slide.ome.tif`: the whole-image level (>= 1024 px) of a 4096 px slide is 4 times
    coarser than the library's exemplars; its nuclei were sought at the exemplars' full-resolution size (74 objects,
    F1 0.00 on a GOWT1 mosaic). The slide is a strip (1024 x 4096 px): its longest side picks the level, so it has
    the same level and factor as a square slide with a quarter of the objects to find."""
    import json

    import tifffile

    from napari_promptseg.cli import main
    from napari_promptseg.methods.instances import match_instances

    library, target, truth = zoomed_nuclei_library
    # a 1x4 strip of the target (256 x 1024 px, objects of every copy apart), at the exemplars' pixel size: 1024 x
    # 4096 px
    mosaic = np.block([[target] * 4])
    n = int(truth.max())
    mosaic_truth = np.block([[np.where(truth > 0, truth + n * j, 0) for j in range(4)]])
    full = np.kron(mosaic, np.ones((ZOOM, ZOOM), np.uint8))
    path = tmp_path / "slide.ome.tif"
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(full, subifds=2, tile=(256, 256), metadata={"axes": "YX"})
        for k in (2, 4):
            tif.write(full[::k, ::k], subfiletype=1, tile=(256, 256))
    out = tmp_path / "out"
    assert main(["text", "nuclei", str(path), "-o", str(out), "--library", str(library.path)]) == 0
    record = json.loads((out / "report.json").read_text())["images"][0]
    assert record["pyramid_level"] == 2 and record["level_factor"] == 4.0
    labels = tifffile.imread(out / "slide.tif")
    assert labels.shape == full.shape
    # compared at the level's pixels (the labels are the level's, upsampled)
    assert match_instances(labels[::ZOOM, ::ZOOM], mosaic_truth)["f1"] > 0.65

    # the console, given the same pyramid as a multiscale layer's levels, reads the same level and returns the same
    # full-resolution labels and boxes (it read the full resolution, with the nuclei sought at another size)
    from napari_promptseg.io.multiscale import open_multiscale

    levels = open_multiscale(path).levels
    console = segment_text(levels, "nuclei", library=library, device="cpu")
    np.testing.assert_array_equal(console.labels, labels)
    np.testing.assert_allclose(console.boxes, np.asarray(record["boxes"]), atol=0.051)


def test_cancel_while_an_instances_entry_is_learnt_stops_within_seconds(litemedsam, tmp_path):
    """Cancel pressed during "matching 'nuclei' to the reference library" waited for the whole fitting of the
    entry's exemplars (embedding its tiles, segmenting it again to choose candidates): 14-28 s. The fitting now
    checks cancel between tiles and steps."""
    import threading
    import time

    from napari_promptseg._sample_data import nuclei, nuclei_for_text
    from napari_promptseg.errors import CancelledError

    (image, _, _), (truth, _, _) = nuclei()
    (target, _, _), _ = nuclei_for_text()
    block = np.ones((ZOOM, ZOOM), np.uint8)
    library = ReferenceLibrary.open(tmp_path / "library")  # a new entry: nothing fitted yet
    library.add("nucleus", np.kron(image, block), np.kron(truth, block).astype(np.uint16), margin=None, instances=True)
    cancelled = threading.Event()
    pressed: list[float] = []

    def press() -> None:
        pressed.append(time.perf_counter())
        cancelled.set()

    def progress(fraction: float, message: str) -> None:
        if "'nuclei'" in message and not pressed and not timers:  # the library phase has begun
            timers.append(threading.Timer(1.0, press))
            timers[0].start()

    timers: list[threading.Timer] = []
    with pytest.raises(CancelledError):
        segment_text(
            target, "nuclei", library=library, segmenter=litemedsam, progress=progress, cancel=cancelled.is_set
        )
    stopped = time.perf_counter()
    assert pressed, "the run ended before cancel was pressed"
    assert stopped - pressed[0] < 5.0  # measured ~1 s (one tile's embedding and learning at most)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--top-k", "0"),
        ("--min-similarity", "nan"),
        ("--min-similarity", "5"),
        ("--heatmap-threshold", "2"),
        ("--box-threshold", "-0.1"),
        ("--text-threshold", "nan"),
    ],
)
def test_cli_text_refuses_an_out_of_range_option_before_any_work(shared_data, tmp_path, capsys, option, value):
    """Bug hunt 3: `text --top-k 0` loaded the models and failed every image of the batch (each retried), and
    `--min-similarity 5` (or nan) ran every image to "no entry matches 'lungs' (closest: 'lung' 1.00; a match needs
    similarity >= 5.00)": options outside their range are refused by the parser, naming the option."""
    from napari_promptseg.cli import main

    image = dataset_pairs(shared_data / "lungs_cxr_shenzhen")[0][0]
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        main(
            ["text", "lungs", str(image), str(image), "-o", str(out), "--library", str(tmp_path / "lib"), option, value]
        )
    assert info.value.code == 2 and option in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(("setting", "match"), [({"top_k": 0}, "top_k"), ({"min_similarity": float("nan")}, "min_")])
def test_segment_text_refuses_bad_library_settings_before_loading_a_route(lungs, empty_library, setting, match):
    # an empty library would fail the route: the setting is refused first, as the thresholds are
    with pytest.raises(PromptsegError, match=match):
        segment_text(lungs[0][0], "lung", library=empty_library, route="library", **setting)


def test_a_phrase_the_library_cannot_answer_fails_before_any_phrase_is_segmented(lungs, litemedsam, empty_library):
    """Bug hunt 3: "lungs, kidney" segmented the lungs with SAT (seconds per image on a CPU), then failed on 'kidney'
    and threw that work away, for every image of a batch and again on its retry: every phrase is matched first."""
    (ref, ref_mask), (target, _) = lungs[0], lungs[1]
    empty_library.add("lung", ref, ref_mask)
    messages: list[str] = []
    with pytest.raises(PromptsegError, match="no reference-library entry matches 'kidney'") as info:
        segment_text(
            target,
            "lungs, kidney",
            library=empty_library,
            segmenter=litemedsam,
            device="cpu",
            progress=lambda fraction, message: messages.append(message),
        )
    assert not [m for m in messages if "lungs" in m]  # nothing of the first phrase ran
    # route auto took the library as no vision-language model is on disk, and downloads none: the way to one is said
    assert info.value.details == (
        "no GroundingDINO weights; no CLIPSeg weights here: route groundingdino or clipseg downloads one (route auto "
        "downloads nothing)"
    )


def test_cli_text_a_prompt_the_library_cannot_answer_stops_the_run_before_any_image(
    lungs, shared_data, tmp_path, capsys
):
    """Bug hunt (session 31): a folder's run with a phrase no entry answers failed every image in turn (each retried),
    wrote an empty label image and a record per image, and ended 'every input failed': the phrases are matched once,
    in the run's setup, and the run stops there, saying which phrase and what to do."""
    from napari_promptseg.cli import main
    from napari_promptseg.io.library import ReferenceLibrary

    (ref, ref_mask), _ = lungs[0], lungs[1]
    ReferenceLibrary.open(tmp_path / "lib").add("lung", ref, ref_mask)
    images = [str(pair[0]) for pair in dataset_pairs(shared_data / "lungs_cxr_shenzhen")[:2]]
    out = tmp_path / "out"
    args = ["text", "lungs, kidney", *images, "-o", str(out), "--library", str(tmp_path / "lib"), "--scheduler", "none"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "promptseg text: error: no reference-library entry matches 'kidney'" in err, err
    assert "every input failed" not in err and not out.exists()


def test_a_prompt_longer_than_clipseg_reads_is_told_once_with_what_was_kept(tiny_clipseg_dir, lungs):  # noqa: F811
    """CLIP reads 77 tokens: a longer prompt (a p7-p9 template with a description) was cut without a word. The
    warning names the prompt and where the cut fell, and comes once per model and process (a batch's first image),
    not per image."""
    in_hf_cache("clipseg_rd64_refined", tiny_clipseg_dir)
    image = lungs[0][0][::8, ::8]
    long_prompt = " ".join(["left lung"] * 50)  # 100 words, each one token of the tiny model's vocabulary
    kept = " ".join(long_prompt.split()[:75])  # 77 - <|startoftext|> - <|endoftext|>
    route = choose_route("clipseg", device="cpu")

    first = segment_text(image, long_prompt, route=route, refine=False, device="cpu")

    assert [w for w in first.warnings if "tokens long" in w] == [
        f"the prompt '{long_prompt[:57]}...' is 102 tokens long and CLIPSeg (clipseg_rd64_refined) reads 77: it was "
        f"cut after '...{kept[-37:]}' (75 of its 100 words kept); the rest had no effect"
    ]
    np.testing.assert_allclose(first.heatmap, route.model.heatmap(image, kept), atol=1e-6)  # what the model read
    again = segment_text(image, long_prompt, route=route, refine=False, device="cpu")
    short = segment_text(image, "left lung", refine=False, device="cpu")
    assert not [w for w in again.warnings + short.warnings if "tokens long" in w]


def test_cli_text_says_a_cut_prompt_once_per_run_in_its_output_and_report(tiny_clipseg_dir, lungs, tmp_path, capsys):  # noqa: F811
    """The cut was said by each process's first image: each Dask worker's (so once per worker, in the record of
    whichever image a worker took first), and not at all by a second run in the same process. It is the run's: said
    once on stderr and once in report.json's warnings, whatever ran the images."""
    import json

    from napari_promptseg.cli import main

    in_hf_cache("clipseg_rd64_refined", tiny_clipseg_dir)
    images = []
    for k in range(2):
        images.append(str(tmp_path / f"xray{k}.png"))
        iio.imwrite(images[-1], lungs[k][0][::8, ::8])
    long_prompt = " ".join(["left lung"] * 50)  # 102 tokens: CLIP reads 77
    options = ["--route", "clipseg", "--no-refine", "--device", "cpu", "--workers", "2"]
    for run, scheduler in (("first", "none"), ("again", "none"), ("workers", "local")):
        out = tmp_path / run
        assert main(["text", long_prompt, *images, "-o", str(out), "--scheduler", scheduler, *options]) == 0, run
        err = capsys.readouterr().err
        report = json.loads((out / "report.json").read_text())
        said = report.get("warnings", []) + [w for image in report["images"] for w in image["warnings"]]
        cut = [w for w in said if "tokens long" in w]
        assert len(cut) == 1 and cut[0].startswith(f"the prompt '{long_prompt[:57]}...' is 102 tokens long"), run
        assert err.count("tokens long") == 1 and f"warning: {cut[0]}" in err, run
        assert cut[0] in report.get("warnings", []), run  # the run's, not the first image's


def test_a_prompt_longer_than_the_sentence_model_reads_is_told_on_the_library_route(lungs, litemedsam, empty_library):
    """The library route's sentence model reads 256 tokens of a phrase; a pasted description longer than that was
    matched on its start alone, silently."""
    from napari_promptseg.models import load_text_embedder

    (ref, ref_mask), (target, _) = lungs[0], lungs[1]
    sentence = "the left and right lung fields of a frontal chest radiograph with clear margins "
    long_prompt = (sentence * 24).strip()  # 336 words, one phrase (no ',', '.' or ';')
    empty_library.add("lung", ref[::8, ::8], ref_mask[::8, ::8], description=long_prompt)

    result = segment_text(target[::8, ::8], long_prompt, library=empty_library, segmenter=litemedsam, device="cpu")

    assert result.route == "library" and result.phrases
    cut = [w for w in result.warnings if "tokens long" in w]
    assert len(cut) == 1 and cut[0].startswith(f"the prompt '{long_prompt[:57]}...' is ")
    assert "the sentence model (all_minilm_l6_v2) reads 256: it was cut after '..." in cut[0]
    embedder = load_text_embedder()
    kept = embedder.cut_prompt(long_prompt).kept
    assert f"({len(kept.split())} of its 336 words kept); the rest had no effect" in cut[0]
    assert len(kept.split()) < 336 and long_prompt.startswith(kept)
    np.testing.assert_allclose(embedder.embed(long_prompt), embedder.embed(kept), atol=1e-5)  # all it read


def test_a_caption_longer_than_groundingdino_reads_is_told_in_the_words_typed(hf_dir, lungs, litemedsam):  # noqa: F811
    """GroundingDINO's BERT reads 256 tokens of the caption of all phrases; the model dropped the rest silently
    (many phrases, or a p7-p9 template over several). The warning quoted the caption the model reads (lower case,
    ' . ' between phrases) where the user had typed capitals and commas: it quotes the prompt as typed."""
    in_hf_cache("grounding_dino_tiny", hf_dir)
    phrase = "A round pink Nucleus in the centre of the image"
    prompt = ", ".join([phrase] * 30)  # 30 phrases of 10 words: 330 tokens with the ' . ' after each
    route = choose_route("groundingdino", device="cpu")

    result = segment_text(lungs[0][0][::8, ::8], prompt, route=route, box_threshold=1.0, segmenter=litemedsam)

    cut = [w for w in result.warnings if "tokens long" in w]
    # 256 - [CLS] - [SEP] = 254 tokens: 23 phrases and their '.' (11 tokens each), then the 24th phrase's first word
    kept = ", ".join([phrase] * 23) + ", A"
    assert cut == [
        f"the prompt '{prompt[:57]}...' is 332 tokens long and GroundingDINO (grounding_dino_tiny) reads 256: it was "
        f"cut after '...{kept[-37:]}' (231 of its 300 words kept); the rest had no effect"
    ]
    assert route.model.cut_prompt(prompt).kept == kept


def test_a_prompt_is_matched_to_a_trained_models_names_whatever_its_case_and_spacing():
    """A trained model's names (training.vocabulary) are compared with the prompt as the sentence model reads both,
    in lower case and single-spaced: a name written with two spaces (a Python caller's text, not stripped as a CSV's
    cells are) warned that its own prompt was none of the names. (Only the model's recorded info is read here.)"""
    from types import SimpleNamespace

    from napari_promptseg.methods.text.answers import prompt_vocabulary_warnings
    from napari_promptseg.methods.text.routes import TextRoute

    info = {"training": {"vocabulary": ["gland  tissue", "Lung "]}}
    route = TextRoute("trained", SimpleNamespace(info=info), "glands")
    assert prompt_vocabulary_warnings(route, "gland tissue") == prompt_vocabulary_warnings(route, " lung") == []
    (warning,) = prompt_vocabulary_warnings(route, "nuclei")
    assert "'nuclei' is none of the 2 texts the trained text model (glands)" in warning
