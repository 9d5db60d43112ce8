"""The Text prompt widget in a real napari viewer: the offline library route with real LiteMedSAM on chest X-rays,
and the GroundingDINO route (tiny random-weight model) giving a Shapes layer of boxes.

Run under a display: ``xvfb-run -a python -m pytest tests/test_widget_text.py``.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from napari_promptseg._widgets._common.tasks import is_deleted, runs_ended
from napari_promptseg._widgets.text import TextPromptWidget
from napari_promptseg.io import read_image, read_mask
from napari_promptseg.io.library import ReferenceLibrary
from napari_promptseg.methods.metrics import dice
from napari_promptseg.methods.text import segment_text
from napari_promptseg.models import get_card

from .conftest import (
    dataset_pairs,
    in_hf_cache,
    reads_only_in_the_worker,
    some_dsb_nuclei,
    thread_recording_dask,
    thread_recording_slide,
)
from .test_clipseg import tiny_clipseg_dir  # noqa: F401 (fixture)
from .test_grounding import hf_dir  # noqa: F401 (fixture)
from .test_text_training import cache, kvasir, multichannel_model  # noqa: F401 (fixtures)

pytestmark = pytest.mark.gui
RUN_MS = 600_000  # model load + SAT on a shared 2-core CPU


@pytest.fixture(scope="module")
def lungs(shared_data):
    pairs = dataset_pairs(shared_data / "lungs_cxr_shenzhen")[:3]
    return [(read_image(i)[..., 0], read_mask(m)) for i, m in pairs]


def _widget(viewer, image_layer) -> TextPromptWidget:
    widget = TextPromptWidget(viewer)
    viewer.window.add_dock_widget(widget, name="text prompt")
    widget.image.set_layer(image_layer)
    return widget


def _segment(viewer, qtbot, image_layer, library: ReferenceLibrary, prompt: str):
    """The Text widget's run on ``image_layer`` with ``library``, waited for; its labels layer."""
    widget = _widget(viewer, image_layer)
    widget.library.setText(str(library.path))
    widget.prompt.setText(prompt)
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    return viewer.layers[f"{image_layer.name} text: {prompt}"]


def test_library_route_on_a_stack_shows_labels_and_the_route(make_viewer, qtbot, lungs, tmp_path):
    library = ReferenceLibrary.open(tmp_path / "library")
    library.add("lung", *lungs[0], description="lung fields of a chest X-ray")
    viewer = make_viewer()
    targets = lungs[1:]
    stack = viewer.add_image(np.stack([t for t, _ in targets]), name="xrays", scale=(1, 0.5, 0.5))
    widget = _widget(viewer, stack)
    widget.library.setText(str(library.path))
    widget.prompt.setText("lungs")
    widget.template.setCurrentText("p3")
    widget.colour.setText("dark")
    assert widget.expanded.text() == "dark lungs"  # the expanded prompt is shown as the user types
    widget.template.setCurrentText("p1")
    before = [layer.name for layer in viewer.layers]
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)

    result = viewer.layers["xrays text: lungs"]
    assert result.data.shape == (2, 512, 512) and tuple(result.scale) == (1, 0.5, 0.5)
    for plane, (_, truth) in zip(result.data, targets, strict=True):
        assert dice(plane > 0, truth) > 0.85  # the library route reaches ~0.95 here (tests/test_text.py)
    boxes = viewer.layers["xrays text: lungs boxes"]
    assert {int(k) for k in np.unique(np.concatenate(boxes.data)[:, 0])} == {0, 1}  # rectangles on both planes
    assert set(boxes.features["phrase"]) == {"lungs"}
    assert "used library entry 'lung'" in widget.route_label.text()
    assert widget.route_label.text().startswith("route: library — no GroundingDINO weights; no CLIPSeg weights")
    # the route's answer is the first plane's (its counts were read as the stack's); the stack's objects follow
    route, objects = widget.route_label.text().split("\n")
    assert route.endswith("(plane 0 of 2)") and objects.endswith(
        "object(s) in 2 plane(s) of one stack, ids linked across them"
    )
    assert [layer.name for layer in viewer.layers][: len(before)] == before  # nothing the user made was replaced


def test_a_multiscale_image_gives_labels_over_the_whole_image(make_viewer, qtbot, lungs, tmp_path):
    """A pyramid layer: the text route reads the level a whole-image method needs (here the full 512 px level, the
    coarsest with 1024 px is none) and the labels cover the image's extent. They covered a quarter of it (the
    coarsest level at the full level's pixel size). They are in the image's units (a slide's µm, as the reader opens
    it): in pixels, napari warned "Inconsistent units across layers" and dropped the units from its display."""
    library = ReferenceLibrary.open(tmp_path / "library")
    library.add("lung", *lungs[0], description="lung fields of a chest X-ray")
    viewer = make_viewer()
    target, truth = lungs[1]
    slide = viewer.add_image(
        [target, target[::2, ::2]], name="slide", multiscale=True, scale=(0.5, 0.5), units=("µm", "µm")
    )
    result = _segment(viewer, qtbot, slide, library, "lungs")
    np.testing.assert_allclose(result.extent.world, slide.extent.world)
    assert result.units == viewer.layers["slide text: lungs boxes"].units == slide.units
    assert result.data.shape == truth.shape and dice(result.data > 0, truth) > 0.85


def test_a_lazy_pyramid_is_read_by_the_worker_not_napari(make_viewer, qtbot, lungs, tmp_path):
    """The widget turned the pyramid level it segments into numpy on napari's main thread when Run was pressed:
    napari froze while a slide (dask, zarr) was read. Now run() looks at the levels' shapes only and the worker
    reads the level; the labels still cover the lungs."""
    import threading

    import dask

    library = ReferenceLibrary.open(tmp_path / "library")
    library.add("lung", *lungs[0], description="lung fields of a chest X-ray")
    target, truth = lungs[1]
    reads: list[threading.Thread] = []
    viewer = make_viewer()
    with dask.config.set(scheduler="synchronous"):
        levels = [thread_recording_dask(target, reads), thread_recording_dask(target[::2, ::2].copy(), reads)]
        widget = _widget(viewer, viewer.add_image(levels, name="slide", multiscale=True))
        widget.library.setText(str(library.path))
        widget.prompt.setText("lungs")
        reads.clear()  # napari's own display of the layer
        widget.run()
        assert not [t for t in reads if t is threading.main_thread()], "run() read the slide on napari's main thread"
        qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    assert any(t is not threading.main_thread() for t in reads)  # the worker read it
    result = viewer.layers["slide text: lungs"]
    assert dice(np.asarray(result.data) > 0, truth) > 0.85


def test_groundingdino_route_adds_box_shapes_on_the_image(make_viewer, qtbot, lungs, hf_dir):  # noqa: F811
    in_hf_cache("grounding_dino_tiny", hf_dir)
    viewer = make_viewer()
    image = viewer.add_image(lungs[0][0], name="xray")
    widget = _widget(viewer, image)
    widget.prompt.setText("lung")
    widget.box_threshold.setValue(0.0)  # random weights: keep what the tiny model finds
    widget.text_threshold.setValue(0.0)
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)

    labels = viewer.layers["xray text: lung"].data
    n = int(labels.max())
    assert labels.shape == (512, 512) and n >= 1
    assert np.unique(labels[labels > 0]).tolist() == list(range(1, n + 1))
    boxes = viewer.layers["xray text: lung boxes"]
    assert len(boxes.data) == n and set(boxes.shape_type) == {"rectangle"}
    result = widget.last_output.results[0]
    for corners, (x0, y0, x1, y1) in zip(boxes.data, result.boxes, strict=True):  # (row, col) corners, box per id
        np.testing.assert_allclose(corners.min(0), [y0, x0], atol=1e-3)
        np.testing.assert_allclose(corners.max(0), [y1, x1], atol=1e-3)
    assert list(boxes.features["phrase"]) == result.phrases == ["lung"] * n
    assert widget.route_label.text().startswith("route: groundingdino — GroundingDINO (grounding_dino_tiny)")


def test_the_route_box_says_what_auto_takes_after_another_widgets_run_downloaded_a_model(
    make_viewer,
    qtbot,
    lungs,
    fake_hub,
    hf_dir,  # noqa: F811
    caplog,
):
    """A Text prompt widget's route box told what auto takes when its own controls changed only: after GroundingDINO
    was downloaded by another widget's run, it still said "library" and hid the GroundingDINO thresholds, and a
    press of Segment answered with GroundingDINO. Every run's end (of any widget) refreshes it."""
    card = get_card("grounding_dino_tiny")
    fake_hub.add(card.repo_id, hf_dir, card.revision)
    viewer = make_viewer()
    image = viewer.add_image(lungs[0][0][::4, ::4], name="xray")
    waiting = _widget(viewer, image)
    assert "here auto takes: library" in waiting.route.toolTip() and waiting.box_threshold.isHidden()
    fetching = _widget(viewer, image)  # the second Text prompt widget: its named route downloads the model
    fetching.route.setCurrentText("groundingdino")
    fetching.prompt.setText("lung")
    fetching.run()
    qtbot.waitUntil(lambda: fetching.is_idle, timeout=RUN_MS)
    assert fetching.runner.state == "done", fetching.runner.widget.status.text()
    assert f"/{card.repo_id}/resolve/{card.revision}/model.safetensors" in fake_hub.downloads()
    assert waiting.route.currentText() == "auto" and "here auto takes: groundingdino" in waiting.route.toolTip()
    assert waiting.effective_route == "groundingdino" and not waiting.box_threshold.isHidden()
    # a widget Qt has deleted is refreshed no more (its controls are gone): the next run's end passes it over
    gone = TextPromptWidget(viewer)
    gone.deleteLater()
    qtbot.waitUntil(lambda: is_deleted(gone), timeout=5_000)
    with caplog.at_level(logging.ERROR):
        runs_ended()  # as a run's end
    assert not caplog.records, caplog.text


def test_empty_prompt_and_empty_library_are_reported_not_raised(make_viewer, qtbot, lungs, tmp_path):
    viewer = make_viewer()
    image = viewer.add_image(lungs[0][0], name="xray")
    widget = _widget(viewer, image)
    seen = []
    notification_manager.notification_ready.connect(seen.append)
    widget.run()  # no prompt: refused before any model loads
    assert widget.is_idle
    widget.prompt.setText("nuclei")
    widget.library.setText(str(tmp_path / "empty-library"))
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    errors = [n.message for n in seen if n.severity == NotificationSeverity.ERROR]
    assert any("empty" in m for m in errors)
    assert any("no entries" in m for m in errors)  # the toast is short; what to do is one click away
    assert "promptseg library add" in widget.runner.widget.details
    assert [layer.name for layer in viewer.layers] == ["xray"]


def test_the_model_chosen_decodes_what_the_route_found(make_viewer, qtbot, lungs, tmp_path):
    """The widget always decoded with the bundled LiteMedSAM, where `promptseg text --model` takes any segmenter: a
    route that needs one (here the starter library's) loads the model of the widget's model box, and a model whose
    weights are not here (offline) is named in the error."""
    viewer = make_viewer()
    image = viewer.add_image(lungs[0][0], name="xray")
    widget = _widget(viewer, image)
    widget.prompt.setText("nuclei")
    widget.route.setCurrentText("library")
    widget.model.setCurrentIndex(widget.model.findData("sam_vit_b"))
    seen = []
    notification_manager.notification_ready.connect(seen.append)
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    errors = [n.message for n in seen if n.severity == NotificationSeverity.ERROR]
    assert any("sam_vit_b" in m for m in errors), errors
    assert [layer.name for layer in viewer.layers] == ["xray"]
    # its weights file (the CLI's --weights), one that does not exist: refused before the run starts
    missing = tmp_path / "missing.pth"
    widget.model.weights_file.set_path(str(missing))
    widget.run()
    assert not widget.runner.busy and widget.runner.state == "failed"
    said = widget.runner.widget.details or widget.runner.widget.status.text()
    assert f"sam_vit_b: weights file {missing} does not exist" in said, said


def test_a_result_whose_image_layer_was_removed_meanwhile_is_dropped(make_viewer, qtbot, lungs, tmp_path):
    """The labels used to appear anyway, over an image no longer there; every widget's runner now drops them."""
    library = ReferenceLibrary.open(tmp_path / "library")
    library.add("lung", *lungs[0], description="lung fields of a chest X-ray")
    viewer = make_viewer()
    image = viewer.add_image(lungs[1][0], name="xray")
    widget = _widget(viewer, image)
    widget.library.setText(str(library.path))
    widget.prompt.setText("lungs")
    widget.run()
    viewer.layers.remove(image)  # the worker is still loading the model: the result arrives after this
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    assert [layer.name for layer in viewer.layers] == []
    assert widget.runner.state == "failed"
    assert "layer 'xray' was removed while it ran" in widget.runner.widget.status.text()


def test_whole_image_level_of_a_large_pyramid_is_the_coarsest_with_1024_px():
    import napari.layers

    from napari_promptseg._widgets._common import whole_image_level

    levels = [np.zeros((4096 // 2**k, 3072 // 2**k), np.uint8) for k in range(4)]
    data, factors = whole_image_level(napari.layers.Image(levels, multiscale=True))
    assert data.shape == (1024, 768) and list(factors) == [4.0, 4.0]
    single = napari.layers.Image(levels[2])
    data, factors = whole_image_level(single)
    assert data is single.data and list(factors) == [1.0, 1.0]
    # a stack whose pyramid halves the planes too: every axis has its factor
    stack = [np.zeros((8 // 2**k, 4096 // 2**k, 2048 // 2**k), np.uint8) for k in range(3)]
    data, factors = whole_image_level(napari.layers.Image(stack, multiscale=True))
    assert data.shape == (2, 1024, 512) and list(factors) == [4.0, 4.0, 4.0]


def test_image_and_labels_of_a_pyramid_are_read_on_one_grid():
    """Labels a widget made at a pyramid level (the Text widget's output) pair with that level of the image;
    labels painted at full resolution with level 0; labels of no level's size are refused by name."""
    import napari.layers

    from napari_promptseg._widgets._common import image_and_labels
    from napari_promptseg.errors import PromptsegError

    base = np.arange(256 * 256, dtype=np.uint16).reshape(256, 256)
    pyramid = napari.layers.Image([base, base[::2, ::2]], multiscale=True, name="slide")
    coarse = napari.layers.Labels(np.ones((128, 128), np.uint8))
    image, labels = image_and_labels(pyramid, coarse)
    assert image.shape == labels.shape == (128, 128) and np.array_equal(image, base[::2, ::2])
    image, _ = image_and_labels(pyramid, napari.layers.Labels(np.ones((256, 256), np.uint8)))
    assert np.array_equal(image, base)
    with pytest.raises(PromptsegError, match=r"labels 'odd' of shape \(100, 100\) match no level of the image 'slide'"):
        image_and_labels(pyramid, napari.layers.Labels(np.ones((100, 100), np.uint8), name="odd"))


# -- the library's many-instances entries: stacks, pyramids, and saving one -----------------------------------------

#: the bundled nuclei enlarged this much: nuclei of ~60 px at full resolution, as GOWT1's on a slide
ZOOM = 4


@pytest.fixture(scope="module")
def bundled_nuclei():
    """(image, its 50 instance labels) and (another image, its 78) of the bundled DSB nuclei samples."""
    from napari_promptseg._sample_data import nuclei, nuclei_for_text

    (image, _, _), (truth, _, _) = nuclei()
    (target, _, _), (target_truth, _, _) = nuclei_for_text()
    return (image, truth), (target, target_truth)


def _kept_ids(labels: np.ndarray, shift: int) -> float:
    """The fraction of plane 0's objects whose id plane 1 gives to the same nucleus (``shift`` px to the right)."""
    kept = []
    for obj in np.unique(labels[0][labels[0] > 0]):
        moved = np.roll(labels[0] == obj, shift, axis=1)
        ids, counts = np.unique(labels[1][moved], return_counts=True)
        kept.append(ids[counts.argmax()] == obj)
    return float(np.mean(kept))


def test_a_stack_keeps_each_nucleus_id_across_planes_and_counts_it_once(make_viewer, qtbot, bundled_nuclei, tmp_path):
    """The planes' labels were stacked as they came (of 68 nuclei, 7 kept their id from plane 0 to plane 1) and the
    summary counted plane 0's objects; they are now linked as the CLI links them (methods.volume.segment_stack).
    A time-lapse's progress said 'plane 1: ...' and 'nuclei stack: plane 2/3', its labels' axes -3, -2, -1: its
    frames are frames there too, and its layers' axes t, y, x."""
    (image, truth), (target, _) = bundled_nuclei
    library = ReferenceLibrary.open(tmp_path / "library")
    library.add("nucleus", image, truth, instances=True)
    viewer = make_viewer()
    shift = 2
    # nuclei moving right: a time-lapse, its first axis labelled t (its planes are frames in the summary's words)
    frames = np.stack([np.roll(target, shift * z, axis=1) for z in range(3)])
    stack = viewer.add_image(frames, name="nuclei stack", axis_labels=("t", "y", "x"))
    widget = _widget(viewer, stack)
    widget.library.setText(str(library.path))
    widget.prompt.setText("nuclei")
    messages: list[str] = []
    widget.runner._progressed.connect(lambda job, fraction, message: messages.append(message))
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)

    assert any(m.startswith("frame 1: ") for m in messages), messages
    assert not [m for m in messages if "plane" in m], messages
    assert viewer.layers["nuclei stack text: nuclei"].axis_labels == ("t", "y", "x")
    labels = viewer.layers["nuclei stack text: nuclei"].data
    assert labels.shape == (3, *target.shape)
    assert _kept_ids(labels, shift) > 0.8
    objects = len(np.unique(labels)) - 1
    per_plane = [len(np.unique(plane)) - 1 for plane in labels]
    assert max(per_plane) <= objects < 1.5 * max(per_plane)  # each nucleus once, not once per plane
    said = widget.route_label.text()
    assert f"(frame 0 of 3)\n{objects} object(s) in 3 frame(s) of one time-lapse, ids linked across them" in said, said


def test_a_pyramid_level_seeks_the_objects_at_the_level_size(make_viewer, qtbot, bundled_nuclei, tmp_path):
    """A multiscale layer is read at its whole-image level (here 4 times coarser); the library's exemplars were
    saved at full resolution, so their objects are sought 4 times smaller there (F1 0.00 before on a GOWT1
    mosaic: the nuclei were sought at the exemplars' 61 px on a level where they span 15). The slide is a strip
    (1024 x 4096 px): its longest side picks the level, as a square slide's would, with a quarter of the objects."""
    from napari_promptseg.methods.instances import match_instances

    (image, truth), (target, target_truth) = bundled_nuclei
    block = np.ones((ZOOM, ZOOM), np.uint8)
    library = ReferenceLibrary.open(tmp_path / "library")
    library.add("nucleus", np.kron(image, block), np.kron(truth, block).astype(np.uint16), margin=None, instances=True)
    mosaic = np.block([[target] * 4])  # 256 x 1024 px
    n = int(target_truth.max())
    mosaic_truth = np.block([[np.where(target_truth > 0, target_truth + n * j, 0) for j in range(4)]])
    full = np.kron(mosaic, block)  # 1024 x 4096 px, the exemplars' pixel size
    viewer = make_viewer()
    slide = viewer.add_image([full, full[::2, ::2], full[::4, ::4]], name="slide", multiscale=True)
    result = _segment(viewer, qtbot, slide, library, "nuclei")
    assert result.data.shape == mosaic.shape and list(result.scale) == [ZOOM, ZOOM]  # the level, on the full grid
    assert match_instances(np.asarray(result.data), mosaic_truth)["f1"] > 0.65


def test_a_slide_is_read_at_the_level_the_librarys_instances_entry_needs(
    make_viewer, qtbot, bundled_nuclei, tmp_path, monkeypatch
):
    """The widget read a slide at its whole-image level whatever answered: an 8k slide's nuclei were 2.5 px there
    and none was found. A many-instances library entry reads the level its objects need, as the console and the CLI
    do (the whole-image level made 128 px here, so that a 512 px slide shows it: its nuclei are 4 px there)."""
    import napari_promptseg._widgets._common.layers as layers
    import napari_promptseg.io.multiscale as multiscale
    from napari_promptseg.methods.instances import match_instances

    (image, truth), _ = bundled_nuclei
    library = ReferenceLibrary.open(tmp_path / "library")
    library.add("nucleus", image[:, :128], truth[:, :128], instances=True)
    full = np.tile(image, (2, 1))  # 512 x 256 px, the exemplar's pixel size
    for module in (layers, multiscale):
        monkeypatch.setattr(module, "WHOLE_IMAGE_SIDE", 128)
    viewer = make_viewer()
    slide = viewer.add_image([full, full[::2, ::2], full[::4, ::4]], name="slide", multiscale=True)
    result = _segment(viewer, qtbot, slide, library, "nuclei")
    assert result.data.shape == full.shape and list(result.scale) == [1, 1]  # full resolution, not 4x coarser
    second = np.where(truth > 0, truth + truth.max(), 0)  # the second copy's nuclei are other objects
    assert match_instances(np.asarray(result.data), np.concatenate([truth, second]))["f1"] > 0.6


def _add_exemplar(widget: TextPromptWidget, qtbot):
    """The widget's "Add exemplar" waited for: the entry it saved (None when it was refused or failed)."""
    widget.last_exemplar = None
    if widget.add_exemplar():
        qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    return widget.last_exemplar


def test_add_exemplar_saves_many_labelled_objects_as_many_instances_by_default(
    make_viewer, qtbot, bundled_nuclei, tmp_path
):
    """'Add exemplar from these layers' saved 50 labelled nuclei as one region unless the box was ticked (a prompt
    then gave one blob); it decides as the One-shot widget does now, and a ticked or cleared box still decides."""
    from qtpy.QtCore import Qt

    (image, truth), _ = bundled_nuclei
    viewer = make_viewer()
    layer = viewer.add_image(image, name="nuclei")
    viewer.add_labels(truth, name="nuclei ground truth")
    widget = _widget(viewer, layer)
    widget.exemplar_labels.set_layer(viewer.layers["nuclei ground truth"])
    widget.library.setText(str(tmp_path / "library"))
    widget.exemplar_name.setText("nucleus")
    assert widget.exemplar_instances.checkState() == Qt.CheckState.PartiallyChecked  # auto
    entry = _add_exemplar(widget, qtbot)
    assert entry.instances and len(np.unique(entry.labels())) - 1 == 50
    assert "(many instances)" in widget.runner.widget.status.text() + widget.runner.widget.summary.text()
    widget.exemplar_instances.setCheckState(Qt.CheckState.Unchecked)
    widget.exemplar_name.setText("nuclei region")
    assert not _add_exemplar(widget, qtbot).instances
    widget.exemplar_instances.setChecked(True)
    widget.exemplar_name.setText("nuclei again")
    assert _add_exemplar(widget, qtbot).instances


def test_add_exemplar_of_an_empty_labels_layer_names_that_layer(make_viewer, qtbot, bundled_nuclei, tmp_path):
    """A Labels layer with nothing painted (napari's 'New labels', not yet used) was refused naming the image layer:
    "reference 'nuclei': the mask is empty"; the layer to paint is named now, and nothing is saved. Neither is an
    exemplar named after a prompt of several phrases (it was saved as 'nuclei, cytoplasm')."""
    (image, truth), _ = bundled_nuclei
    viewer = make_viewer()
    layer = viewer.add_image(image, name="nuclei")
    viewer.add_labels(np.zeros_like(truth), name="unpainted")
    widget = _widget(viewer, layer)
    widget.exemplar_labels.set_layer(viewer.layers["unpainted"])
    widget.library.setText(str(tmp_path / "library"))
    widget.exemplar_name.setText("nucleus")
    assert _add_exemplar(widget, qtbot) is None
    said = widget.runner.widget.status.text()
    assert "labels 'unpainted' mark nothing on image 'nuclei' (every pixel 0)" in said, said
    # no name but a prompt of two phrases: an entry named 'nuclei, cytoplasm' would answer neither
    widget.exemplar_labels.set_layer(viewer.add_labels(truth, name="painted"))
    widget.exemplar_name.setText("")
    widget.prompt.setText("nuclei, cytoplasm")
    assert not widget.add_exemplar()
    said = widget.runner.widget.status.text()
    assert "the prompt names 2 structures ('nuclei', 'cytoplasm'); type the exemplar name" in said, said
    assert not len(ReferenceLibrary.open(tmp_path / "library"))


def test_add_exemplar_says_it_saved_when_its_labels_layer_is_removed_meanwhile(
    make_viewer, qtbot, bundled_nuclei, tmp_path
):
    """The labels layer removed while "Add exemplar" ran: the status said "the result was dropped (run it again)",
    yet the library held the entry (a second try was refused as already saved). The layers' arrays are taken when
    the button is pressed: the entry is saved, and said to be."""
    (image, truth), _ = bundled_nuclei
    viewer = make_viewer()
    layer = viewer.add_image(image, name="nuclei")
    labels = viewer.add_labels(truth, name="nuclei labels")
    widget = _widget(viewer, layer)
    widget.exemplar_labels.set_layer(labels)
    widget.library.setText(str(tmp_path / "library"))
    widget.exemplar_name.setText("nucleus")
    widget.last_exemplar = None
    assert widget.add_exemplar()
    viewer.layers.remove(labels)
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    [saved] = ReferenceLibrary.open(tmp_path / "library").entries
    assert widget.runner.state == "done" and widget.last_exemplar.id == saved.id
    assert "saved exemplar 'nucleus'" in widget.runner.widget.status.text()
    np.testing.assert_array_equal(saved.labels() > 0, truth > 0)


def test_add_exemplar_of_only_some_labelled_objects_saves_partial_labels(make_viewer, qtbot, shared_data, tmp_path):
    """8 of a DSB image's 146 nuclei labelled, "exemplar labels only some objects" ticked: the entry is saved with
    partial labels (many instances, background learned only near the 8); with "many instances" off it is refused."""
    from qtpy.QtCore import Qt

    image, some, _ = some_dsb_nuclei(shared_data, "52b267e2")
    viewer = make_viewer()
    layer = viewer.add_image(image, name="dsb nuclei")
    viewer.add_labels(some, name="eight nuclei")
    widget = _widget(viewer, layer)
    widget.exemplar_labels.set_layer(viewer.layers["eight nuclei"])
    widget.library.setText(str(tmp_path / "library"))
    widget.exemplar_name.setText("nucleus")
    assert not widget.exemplar_partial.isChecked()  # by default every unlabelled pixel is background
    widget.exemplar_instances.setCheckState(Qt.CheckState.Unchecked)  # one region: partial labels do not apply
    widget.exemplar_partial.setChecked(True)
    start = len(notification_manager.records)
    assert _add_exemplar(widget, qtbot) is None
    errors = [n.message for n in notification_manager.records[start:] if n.severity == NotificationSeverity.ERROR]
    assert any("partial labels" in message and "one region" in message for message in errors), errors
    assert not (tmp_path / "library" / "library.json").exists()

    widget.exemplar_instances.setCheckState(Qt.CheckState.PartiallyChecked)  # auto: partial labels are many
    widget.add_exemplar_button.click()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    (entry,) = ReferenceLibrary.open(tmp_path / "library").entries
    assert entry.name == "nucleus" and entry.instances and entry.partial_labels and entry.source == "dsb nuclei"
    assert np.array_equal(entry.labels() > 0, some > 0)
    assert (
        "(many instances, partial labels)" in widget.runner.widget.status.text() + widget.runner.widget.summary.text()
    )
    # unticked, the same pixels under the same name would be ensembled with the first: refused, naming the entry
    widget.exemplar_partial.setChecked(False)
    start = len(notification_manager.records)
    widget.add_exemplar_button.click()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    errors = [n.message for n in notification_manager.records[start:] if n.severity == NotificationSeverity.ERROR]
    assert any(f"already saved as many instances, partial labels (id {entry.id})" in m for m in errors), errors
    # under another name they are saved as all there is, and the user is told what that teaches
    widget.exemplar_name.setText("nuclei")
    start = len(notification_manager.records)
    widget.add_exemplar_button.click()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    warned = [n.message for n in notification_manager.records[start:] if n.severity == NotificationSeverity.WARNING]
    assert any("labels only 8 object(s)" in m and "'exemplar labels only some objects' ticked" in m for m in warned)


def test_cancel_while_the_library_entry_is_learnt_stops_within_seconds(make_viewer, qtbot, bundled_nuclei, tmp_path):
    """Cancel during "matching 'nuclei' to the reference library" took 14-28 s: the entry's exemplars were fitted
    to the end first. The fitting is now told of cancel (and reports its tiles)."""
    import time

    (image, truth), (target, _) = bundled_nuclei
    block = np.ones((ZOOM, ZOOM), np.uint8)
    library = ReferenceLibrary.open(tmp_path / "library")  # a new entry: nothing fitted yet
    library.add("nucleus", np.kron(image, block), np.kron(truth, block).astype(np.uint16), margin=None, instances=True)
    warm = ReferenceLibrary.open(tmp_path / "warm")  # the models load (one call each, not cancellable) beforehand
    warm.add("nucleus", image, truth, instances=True)
    viewer = make_viewer()
    widget = _widget(viewer, viewer.add_image(target, name="nuclei"))
    widget.library.setText(str(warm.path))
    widget.prompt.setText("nuclei")
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    viewer.layers.remove("nuclei text: nuclei")
    viewer.layers.remove("nuclei text: nuclei boxes")
    widget.library.setText(str(library.path))
    widget.run()
    status = widget.runner.widget.status
    qtbot.waitUntil(lambda: "'nuclei'" in status.text(), timeout=RUN_MS)  # the library phase has begun
    qtbot.wait(1000)
    assert not widget.is_idle, "the run ended before cancel was pressed"
    pressed = time.perf_counter()
    widget.runner.widget.cancel_button.click()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    assert time.perf_counter() - pressed < 5.0  # measured ~1 s
    assert widget.runner.state == "cancelled" and [layer.name for layer in viewer.layers] == ["nuclei"]


def test_a_stack_of_one_plane_gets_its_labels(make_viewer, qtbot, bundled_nuclei, tmp_path):
    """A (1, H, W) layer is a stack to the widget, but the worker returned 2D labels for it: the layer could not be
    added ("could not broadcast") and the run ended with nothing."""
    (image, truth), (target, _) = bundled_nuclei
    library = ReferenceLibrary.open(tmp_path / "library")
    library.add("nucleus", image, truth.astype(np.uint16), margin=None, instances=True)
    viewer = make_viewer()
    result = _segment(viewer, qtbot, viewer.add_image(target[None], name="one plane"), library, "nuclei")
    assert result.data.shape == (1, *target.shape) and result.data.max() > 10


def test_a_runs_heatmap_and_boxes_are_named_after_its_own_labels_layer(make_viewer, bundled_nuclei):
    """Results never replace a layer: napari names the labels '... [1]' when a layer has their name (a rerun's, a
    layer of the user's). The heatmap and boxes took free names of their own, so the labels 'nuclei text: nuclei
    [1]' came with the boxes 'nuclei text: nuclei boxes', which read as another run's. (The answer laid out here is
    the sample's ground truth, with its boxes: what a route gives, without running one.)"""
    from skimage.measure import regionprops

    from napari_promptseg._widgets.text_results import TextOutput
    from napari_promptseg.methods.text import TextResult

    (image, truth), _ = bundled_nuclei
    boxes = np.array([[r.bbox[1], r.bbox[0], r.bbox[3], r.bbox[2]] for r in regionprops(truth)], np.float32)
    answer = TextResult(
        truth, "library", "the ground truth", "nuclei", ["nuclei"], ["nuclei"] * len(boxes), boxes,
        np.ones(len(boxes), np.float32), heatmap=(truth > 0).astype(np.float32),
    )  # fmt: skip
    viewer = make_viewer()
    layer = viewer.add_image(image, name="nuclei")
    viewer.add_labels(truth, name="nuclei text: nuclei")  # e.g. an earlier run's, its boxes removed
    widget = _widget(viewer, layer)
    widget._add_layers(TextOutput([answer], stacked=False), layer, "nuclei", stacked=False)
    names = [ly.name for ly in viewer.layers]
    run = "nuclei text: nuclei [1]"
    assert names == ["nuclei", "nuclei text: nuclei", run, f"{run} heatmap", f"{run} boxes"], names


def test_a_pyramid_heatmap_lies_over_its_labels_where_the_console_places_it(
    make_viewer,
    qtbot,
    shared_data,
    tiny_clipseg_dir,  # noqa: F811
):
    """The widget and the console read a slide at one level: the widget lays its labels and heatmap over the image
    by the level's placement, the console returns full-resolution labels beside the level's heatmap, which carries
    its placement now (``heatmap_placement``: it stood at the top-left quarter, unsaid). Both land on one grid."""
    import dask.array as da
    from skimage import io

    from napari_promptseg.models import load_heatmapper
    from napari_promptseg.tiling import upsample_labels

    in_hf_cache("clipseg_rd64_refined", tiny_clipseg_dir)
    polyp = io.imread(sorted((shared_data / "polyps_kvasir_text" / "images").iterdir())[0])  # 530 x 607 RGB
    lazy = da.from_array(polyp, chunks=polyp.shape)
    levels = [lazy.repeat(4, axis=0).repeat(4, axis=1), lazy.repeat(2, axis=0).repeat(2, axis=1), polyp]
    heatmapper = load_heatmapper("clipseg_rd64_refined", device="cpu")
    threshold = float(np.quantile(heatmapper.heatmap(np.asarray(levels[1]), "polyp"), 0.7))  # random weights
    viewer = make_viewer()
    widget = _widget(viewer, viewer.add_image(levels, name="slide", multiscale=True, rgb=True))
    widget.route.setCurrentText("clipseg")
    widget.refine.setChecked(False)
    widget.heatmap_threshold.setValue(threshold)
    widget.prompt.setText("polyp")
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    labels, heat = viewer.layers["slide text: polyp"], viewer.layers["slide text: polyp heatmap"]
    console = segment_text(
        levels,
        "polyp",
        route="clipseg",
        heatmapper=heatmapper,
        template=widget.template.currentText(),
        heatmap_threshold=widget.heatmap_threshold.value(),
        refine=False,
    )
    assert console.labels.any()
    np.testing.assert_array_equal(upsample_labels(np.asarray(labels.data), console.labels.shape), console.labels)
    np.testing.assert_allclose(heat.data, console.heatmap, atol=1e-6)
    for layer in (labels, heat):  # the image layer is at scale 1, translate 0: its data coordinates are the world's
        np.testing.assert_allclose(layer.scale, console.heatmap_placement["scale"])
        np.testing.assert_allclose(layer.translate, console.heatmap_placement["translate"])


def test_add_exemplar_reads_a_lazy_slide_in_the_worker_not_napari(make_viewer, qtbot, bundled_nuclei, tmp_path):
    """ "Add exemplar from these layers" read the image layer and its labels on napari's main thread: a slide's
    pyramid (dask, zarr) froze napari while it was read. They are read in the worker now, as Run reads the image,
    and the exemplar is the real nuclei sample with its 50 labelled nuclei."""
    import threading

    import dask

    (image, truth), _ = bundled_nuclei
    reads: list[threading.Thread] = []
    viewer = make_viewer()
    with dask.config.set(scheduler="synchronous"):
        levels = thread_recording_slide(image, reads)
        widget = _widget(viewer, viewer.add_image(levels, name="slide", multiscale=True))
        widget.exemplar_labels.set_layer(viewer.add_labels(truth, name="slide nuclei"))
        widget.library.setText(str(tmp_path / "library"))
        widget.exemplar_name.setText("nucleus")
        reads_only_in_the_worker(widget, widget.add_exemplar, reads, qtbot, RUN_MS)
    (entry,) = ReferenceLibrary.open(tmp_path / "library").entries
    assert widget.last_exemplar.id == entry.id and entry.source == "slide"
    assert entry.instances and len(np.unique(entry.labels())) - 1 == 50


def test_a_long_prompt_names_its_layers_briefly_and_says_what_was_read(make_viewer, qtbot, lungs, tiny_clipseg_dir):  # noqa: F811
    """A pasted description as the prompt named the new layers with all of it (hundreds of characters in the layer
    list) and CLIPSeg read its first 77 tokens without a word: the names carry its start, a warning says the cut."""
    in_hf_cache("clipseg_rd64_refined", tiny_clipseg_dir)
    viewer = make_viewer()
    image = viewer.add_image(lungs[0][0][::4, ::4], name="xray")
    widget = _widget(viewer, image)
    seen = []
    notification_manager.notification_ready.connect(seen.append)
    widget.prompt.setText(" ".join(["left lung"] * 50))
    widget.heatmap_threshold.setValue(0.0)  # random weights: the whole image is an object
    widget.refine.setChecked(False)
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)

    assert widget.runner.state == "done", widget.runner.widget.status.text()
    # the status line (and napari's activity dock) names the run by the prompt's start too, not all 449 characters
    status = widget.runner.widget.status.text()
    assert "'left lung left lung left lung left lung…'" in status and len(status) < 120, status
    prefix = "xray text: left lung left lung left lung left lung…"
    assert [layer.name for layer in viewer.layers] == ["xray", prefix, f"{prefix} heatmap", f"{prefix} boxes"]
    warnings = [n.message for n in seen if n.severity == NotificationSeverity.WARNING]
    assert any("is 102 tokens long and CLIPSeg (clipseg_rd64_refined) reads 77" in m for m in warnings), warnings


def test_templates_p7_to_p9_take_the_description_the_cli_takes(make_viewer, qtbot, lungs, tiny_clipseg_dir):  # noqa: F811
    """The widget offered templates p7-p9, which describe the class, but no field for the description: the CLI's
    ``--description`` (``PromptAttributes.description``) could not be given, and CLIPSeg saw the bare class name. The
    model now sees the description typed, and the widget's heatmap is the console's for the same prompt."""
    from napari_promptseg.methods.prompt_templates import PromptAttributes, expand_prompt
    from napari_promptseg.models import load_heatmapper

    in_hf_cache("clipseg_rd64_refined", tiny_clipseg_dir)
    viewer = make_viewer()
    image = lungs[0][0][::8, ::8]
    widget = _widget(viewer, viewer.add_image(image, name="xray"))
    widget.route.setCurrentText("clipseg")
    widget.refine.setChecked(False)
    widget.prompt.setText("lungs")
    widget.template.setCurrentText("p7")
    widget.description.setText("a dark air-filled region of the chest")
    attributes = PromptAttributes(description="a dark air-filled region of the chest")
    assert widget.expanded.text() == expand_prompt("lungs", "p7", attributes) != "lungs"
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    heatmapper = load_heatmapper("clipseg_rd64_refined", device="cpu")
    console = segment_text(
        image, "lungs", route="clipseg", heatmapper=heatmapper, template="p7", attributes=attributes, refine=False
    )
    bare = segment_text(image, "lungs", route="clipseg", heatmapper=heatmapper, template="p7", refine=False)
    heat = viewer.layers["xray text: lungs heatmap"].data
    np.testing.assert_allclose(heat, console.heatmap, atol=1e-6)
    assert not np.allclose(heat, bare.heatmap, atol=1e-6)  # the description reached the model


def test_add_exemplar_keeps_a_description_that_prompts_match_and_the_pixel_size(
    make_viewer, qtbot, bundled_nuclei, tmp_path
):
    """'Add exemplar from these layers' saved a name alone: the description (synonyms a prompt is matched to) that
    `promptseg library add --description` and the One-shot widget's "Save reference to library" save could not be
    given, nor was the layer's pixel size kept as the One-shot widget keeps it. A synonym now finds the entry."""
    from napari_promptseg.methods.library import match_library

    (image, truth), _ = bundled_nuclei
    viewer = make_viewer()
    layer = viewer.add_image(image, name="nuclei", scale=(0.5, 0.5))
    one = (truth == truth.max()).astype(np.uint8)  # one region: nothing learnt, the entry is written at once
    widget = _widget(viewer, layer)
    widget.exemplar_labels.set_layer(viewer.add_labels(one, name="a nucleus", scale=(0.5, 0.5)))
    widget.library.setText(str(tmp_path / "library"))
    widget.exemplar_name.setText("blob")
    widget.exemplar_description.setText("cell nucleus")
    entry = _add_exemplar(widget, qtbot)
    assert entry.description == "cell nucleus" and entry.pixel_size == (0.5, 0.5)
    (match,) = match_library("cell nucleus", tmp_path / "library")
    assert match.entry.id == entry.id


def test_the_library_routes_min_similarity_is_the_clis(make_viewer, qtbot, bundled_nuclei, tmp_path):
    """The widget had no --min-similarity (nor --top-k): a prompt matched only through a synonym was always
    answered at the default floor. Raised above the match, the widget refuses the prompt as the console does."""
    from napari_promptseg.errors import PromptsegError

    (image, truth), _ = bundled_nuclei
    library = ReferenceLibrary.open(tmp_path / "library")
    library.add("nucleus", image, truth == truth.max(), "fluorescent cell nucleus")
    with pytest.raises(PromptsegError) as refused:
        segment_text(image, "cell nuclei", route="library", library=library.path, min_similarity=0.99, top_k=1)
    viewer = make_viewer()
    widget = _widget(viewer, viewer.add_image(image, name="nuclei"))
    widget.route.setCurrentText("library")
    assert not widget.min_similarity.isHidden() and not widget.top_k.isHidden()  # the library route's settings
    widget.library.setText(str(library.path))
    widget.min_similarity.setValue(0.99)
    widget.top_k.setValue(1)
    widget.prompt.setText("cell nuclei")
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    assert widget.runner.state == "failed"
    said = f"{widget.runner.widget.status.text()} {widget.runner.widget.details}"
    assert "a match needs similarity >= 0.99" in str(refused.value)  # 'cell nuclei' is 'nucleus' at 0.81
    assert "no reference-library entry matches 'cell nuclei'" in said and "0.99" in said, said


def test_a_multichannel_layer_with_channel_axis_0_gives_one_labels_layer_as_the_function_and_the_cli(
    make_viewer, qtbot, bundled_nuclei, tmp_path
):
    """A (C, Y, X) layer (two channels in one layer, as skimage's cells3d()[30]) was segmented as a stack of C planes
    (a (2, Y, X) Labels layer), and 'Add exemplar' saved its displayed channel alone. With channel axis 0 the
    exemplar keeps both channels and a prompt gives one (Y, X) Labels layer over the image, the labels of the
    function's channel_axis=0 and of the CLI's --channel-axis 0."""
    import tifffile

    from napari_promptseg.cli import main

    (image, truth), (target, _) = bundled_nuclei
    reference, cyx = np.stack([image, image[::-1]]), np.stack([target, target[::-1]])  # two channels that differ
    viewer = make_viewer()
    exemplar = viewer.add_image(reference, name="exemplar")
    widget = _widget(viewer, exemplar)
    widget.channel_axis.setCurrentIndex(1)
    widget.exemplar_labels.set_layer(viewer.add_labels(truth, name="nuclei ground truth"))
    widget.library.setText(str(tmp_path / "library"))
    widget.exemplar_name.setText("nucleus")
    entry = _add_exemplar(widget, qtbot)
    assert entry.image().shape == (*image.shape, 2) and entry.instances  # both channels, at the labels' plane

    layer = viewer.add_image(cyx, name="cells", scale=(1, 0.5, 0.5))
    widget.image.set_layer(layer)
    assert widget.channel_axis.channel_axis is None  # another image: its first axis may hold planes
    widget.channel_axis.setCurrentIndex(1)
    widget.prompt.setText("nuclei")
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    result = viewer.layers["cells text: nuclei"]
    assert result.data.shape == target.shape and tuple(result.scale) == (0.5, 0.5)  # one plane over the image's
    library = ReferenceLibrary.open(tmp_path / "library")
    np.testing.assert_array_equal(result.data, segment_text(cyx, "nuclei", library=library, channel_axis=0).labels)
    tifffile.imwrite(tmp_path / "cells.tif", cyx)
    out = tmp_path / "out"
    command = ["text", "nuclei", str(tmp_path / "cells.tif"), "-o", str(out), "--library", str(library.path)]
    assert main([*command, "--channel-axis", "0", "--scheduler", "none"]) == 0
    np.testing.assert_array_equal(result.data, read_image(out / "cells.tif"))


def test_a_removed_image_is_chosen_again_not_the_next_image(make_viewer, lungs):
    """The image removed (to open another): the box took the next image, and Run segmented it, or Add exemplar
    paired the labels drawn on the removed image with it, unsaid. The box is empty now until an image is chosen."""
    viewer = make_viewer()
    widget = TextPromptWidget(viewer)
    image = viewer.add_image(lungs[0][0], name="xray")
    viewer.add_image(lungs[1][0], name="other")
    viewer.add_labels(lungs[0][1].astype(np.uint8), name="lungs")
    assert widget.image.layer() is image
    viewer.layers.remove(image)
    assert widget.image.layer() is None
    widget.prompt.setText("lungs")
    widget.run()
    assert not widget.runner.busy and widget.runner.state == "failed"
    assert "choose an image layer to segment" in widget.runner.widget.status.text()


def test_a_channels_first_layer_is_read_as_the_text_model_was_trained_on_it(
    make_viewer,
    qtbot,
    multichannel_model,  # noqa: F811
    kvasir,  # noqa: F811
):
    """A model trained on (C, Y, X) images: a (C, Y, X) layer with the channel axis left at 'none' was segmented as a
    stack of 3 planes; it is read with the model's channel axis, as segment_text and the CLI read it (and says so,
    as they do), and a choice feeding the model other channels is refused naming the layer."""
    rgb = kvasir[1].load()[0][::2, ::2]
    expected = segment_text(rgb, "polyp", text_model=multichannel_model, device="cpu", channel_axis=-1)
    viewer = make_viewer()
    layer = viewer.add_image(np.ascontiguousarray(rgb.transpose(2, 0, 1)), name="frame")
    widget = _widget(viewer, layer)
    widget.text_model.setCurrentText(str(multichannel_model))
    widget.prompt.setText("polyp")
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    labels = viewer.layers["frame text: polyp"].data
    assert labels.shape == rgb.shape[:2] and np.array_equal(labels > 0, expected.labels > 0)
    # the channels the model's training applied are said, as segment_text's result and report.json say them
    assert "\nchannels: axis 0 (from the text model's training)" in widget.route_label.text(), widget.route_label.text()

    # channels last in a layer napari does not show as RGB, scaled and moved: the results lie over it
    last = viewer.add_image(rgb, name="last", rgb=False, scale=(2, 0.5, 1), translate=(0, 10, 20))
    widget.image.set_layer(last)
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    result = viewer.layers["last text: polyp"]
    assert np.array_equal(result.data > 0, expected.labels > 0)
    assert tuple(result.scale) == (2, 0.5) and tuple(result.translate) == (0, 10)
    assert tuple(viewer.layers["last text: polyp heatmap"].scale) == (2, 0.5)

    widget.image.set_layer(layer)
    widget.channel_axis.setCurrentIndex(widget.channel_axis.findData(0))
    widget.channel_axis.channels_edit.setText("0")  # one channel of the three the model was trained on
    widget.run()
    assert "trained on 3-channel images" in widget.runner.widget.status.text()


def test_a_4d_layer_is_read_with_the_text_models_channel_axis_or_refused_naming_it(
    make_viewer,
    qtbot,
    multichannel_model,  # noqa: F811
    kvasir,  # noqa: F811
):
    """A 4D layer with the channel axis left at 'none' got the refusal of a layer of 4 dimensions, not a word of the
    model's channel axis: a (C, Z, Y, X) layer (the widget's reading of a 4D layer's channels) is read with the model's
    channels; a (Z, C, Y, X) one is refused naming the model's channel axis and the widget's."""
    rgb = kvasir[0].load()[0][::4, ::4]
    expected = segment_text(
        rgb, "polyp", text_model=multichannel_model, device="cpu", channel_axis=-1, heatmap_threshold=0.1
    )
    cyx = np.ascontiguousarray(rgb.transpose(2, 0, 1))
    viewer = make_viewer()
    layer = viewer.add_image(np.stack([cyx, cyx], axis=1), name="czyx")
    widget = _widget(viewer, layer)
    widget.text_model.setCurrentText(str(multichannel_model))
    widget.heatmap_threshold.setValue(0.1)  # a model of one epoch: its faint answer, found
    widget.prompt.setText("polyp")
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    labels = viewer.layers["czyx text: polyp"].data
    assert expected.labels.max() >= 1 and labels.shape == (2, *rgb.shape[:2])
    assert np.array_equal(labels[0] > 0, expected.labels > 0)

    zcyx = viewer.add_image(np.stack([cyx, cyx]), name="zcyx")
    widget.image.set_layer(zcyx)
    widget.run()
    said = widget.runner.widget.details or widget.runner.widget.status.text()  # a long message's whole text
    assert "trained on 3-channel images (channel axis 0)" in said and "(C, Z, Y, X)" in said, said


def test_a_multichannel_files_channel_layers_are_read_together_for_a_multichannel_text_model(
    make_viewer,
    qtbot,
    tmp_path,
    multichannel_model,  # noqa: F811
    kvasir,  # noqa: F811
):
    """The plugin's reader opens an ImageJ hyperstack's (or an OME-TIFF's) channels one layer each, and a text model
    trained on 3-channel images refused every one of them ('a 2D image ... with no channels'): no layer held the
    image it was trained on. Any of the file's channel layers chosen now reads the file's channels together, in the
    file's order (moving the layers in the list changes nothing), as segment_text reads the (C, Y, X) file, and the
    summary says which layers; the labels lie over the layers. A (Z, C, Y, X) hyperstack's planes likewise."""
    import tifffile

    rgb = kvasir[1].load()[0][::4, ::4]
    cyx = np.ascontiguousarray(rgb.transpose(2, 0, 1))
    expected = segment_text(cyx, "polyp", text_model=multichannel_model, device="cpu", heatmap_threshold=0.1)
    assert expected.labels.any()
    calibrated = {"resolution": (2.0, 2.0), "metadata": {"axes": "CYX", "unit": "um"}}  # 0.5 µm pixels
    tifffile.imwrite(tmp_path / "frame.tif", cyx, imagej=True, **calibrated)
    viewer = make_viewer()
    layers = viewer.open(tmp_path / "frame.tif", plugin="napari-promptseg")
    assert len(layers) == 3
    viewer.layers.move(0, 2)  # the file's channel 0 is now the last layer of the list
    widget = _widget(viewer, viewer.layers["frame channel 1"])
    widget.text_model.setCurrentText(str(multichannel_model))
    widget.heatmap_threshold.setValue(0.1)  # a model of one epoch: its faint answer, found
    widget.prompt.setText("polyp")
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    labels = viewer.layers["frame channel 1 text: polyp"]
    np.testing.assert_array_equal(labels.data > 0, expected.labels > 0)
    assert tuple(labels.scale) == tuple(viewer.layers["frame channel 1"].scale) == (0.5, 0.5)  # over the channels
    said = widget.route_label.text()
    assert "'frame channel 0', 'frame channel 1', 'frame channel 2'" in said, said

    tifffile.imwrite(tmp_path / "planes.tif", np.stack([cyx, cyx[:, ::-1]]), imagej=True, metadata={"axes": "ZCYX"})
    viewer.open(tmp_path / "planes.tif", plugin="napari-promptseg")
    widget.image.set_layer(viewer.layers["planes channel 2"])
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    stack = viewer.layers["planes channel 2 text: polyp"].data
    assert stack.shape == (2, *rgb.shape[:2])
    np.testing.assert_array_equal(stack[0] > 0, expected.labels > 0)
