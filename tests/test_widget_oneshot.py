"""The One-shot reference widget in a real napari viewer with real LiteMedSAM on shared chest X-rays.

Run under a display: ``xvfb-run -a python -m pytest tests/test_widget_oneshot.py``.
"""

from __future__ import annotations

import json
import re

import napari
import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from napari_promptseg._widgets._common.picker import LayerPicker
from napari_promptseg._widgets.oneshot import OneShotOutput, OneShotWidget
from napari_promptseg.io import read_image, read_mask
from napari_promptseg.methods.metrics import dice

from .conftest import dataset_pairs, reads_only_in_the_worker, thread_recording_dask, thread_recording_slide

pytestmark = pytest.mark.gui
RUN_MS = 600_000  # model load + 2 targets; the 2-core CPU is often shared


@pytest.fixture(scope="module")
def lungs(shared_data):
    pairs = dataset_pairs(shared_data / "lungs_cxr_shenzhen")[:3]
    return [(read_image(i)[..., 0], read_mask(m)) for i, m in pairs]  # the X-rays are gray stored as RGB


def _lungs_reference(viewer, lungs) -> OneShotWidget:
    """A One-shot widget with the first lung X-ray and its mask as the reference ('reference', 'lungs')."""
    ref, ref_mask = lungs[0]
    widget = OneShotWidget(viewer)
    widget.reference.set_layer(viewer.add_image(ref, name="reference"))
    widget.reference_labels.set_layer(viewer.add_labels(ref_mask.astype(np.uint8), name="lungs"))
    return widget


def _read_inputs(widget: OneShotWidget, input_size: int = 256):
    """What the widget's worker reads for a run (the references gathered on the main thread, then read) for a model
    of ``input_size`` px (LiteMedSAM's, the widget's model, by default)."""
    from napari_promptseg._widgets.oneshot import read_oneshot_inputs

    return read_oneshot_inputs(widget._inputs(), input_size, progress=lambda *_: None, cancel=lambda: False)


def test_stack_target_gives_labels_and_prompt_points(make_viewer, qtbot, lungs):
    viewer = make_viewer()
    (ref, ref_mask), targets = lungs[0], lungs[1:]
    ref_layer = viewer.add_image(ref, name="reference")
    labels_layer = viewer.add_labels(ref_mask.astype(np.uint8), name="reference lungs")
    stack = viewer.add_image(np.stack([t for t, _ in targets]), name="targets", scale=(1, 0.5, 0.5))
    widget = OneShotWidget(viewer)
    viewer.window.add_dock_widget(widget, name="one-shot")
    widget.reference.set_layer(ref_layer)
    widget.reference_labels.set_layer(labels_layer)
    widget.target.set_layer(stack)
    before = [layer.name for layer in viewer.layers]
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)

    result = viewer.layers["targets one-shot"]
    assert result.data.shape == (2, 512, 512)
    assert tuple(result.scale) == (1, 0.5, 0.5)  # lands on the target's pixels
    for plane, (_, truth) in zip(result.data, targets, strict=True):
        assert dice(plane > 0, truth) > 0.85  # SAT reaches ~0.95 on these X-rays (tests/test_oneshot.py)
    points = viewer.layers["targets one-shot prompts"]
    assert points.data.shape[1] == 3 and set(points.data[:, 0]) == {0.0, 1.0}
    positive = points.properties["positive"]
    assert positive.any()
    # positive points lie in the lungs of their plane (data coords are (plane, row, col) of the target)
    inside = [targets[int(p)][1][int(r), int(c)] for p, r, c in points.data[positive]]
    assert np.mean(inside) > 0.5
    assert set(before) <= {layer.name for layer in viewer.layers}  # nothing replaced


def test_a_lazy_stack_target_and_reference_are_read_by_the_worker_not_napari(make_viewer, qtbot, lungs):
    """The widget turned the target stack (and the reference) into numpy on napari's main thread when Run was
    pressed: napari froze while a dask, zarr or pyramid layer was read. Now run() only gathers the arrays and the
    worker reads them; the planes are still segmented right."""
    import threading

    import dask

    (ref, ref_mask), targets = lungs[0], lungs[1:]
    reads: list[threading.Thread] = []
    stack = np.stack([t for t, _ in targets])
    viewer = make_viewer()
    widget = OneShotWidget(viewer)
    with dask.config.set(scheduler="synchronous"):
        widget.reference.set_layer(viewer.add_image(thread_recording_dask(ref, reads), name="reference"))
        widget.reference_labels.set_layer(viewer.add_labels(ref_mask.astype(np.uint8), name="reference lungs"))
        lazy = thread_recording_dask(stack, reads, chunks=(1, *stack.shape[1:]))
        widget.target.set_layer(viewer.add_image(lazy, name="targets"))
        reads.clear()  # napari's own display of the layers
        widget.run()
        on_main = [t for t in reads if t is threading.main_thread()]
        assert not on_main, f"{len(on_main)} block(s) read on napari's main thread by run()"
        qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    off_main = [t for t in reads if t is not threading.main_thread()]
    assert len(off_main) >= 1 + len(targets), reads  # the reference and each target plane, by the worker
    result = viewer.layers["targets one-shot"]
    for plane, (_, truth) in zip(result.data, targets, strict=True):
        assert dice(plane > 0, truth) > 0.85


def test_empty_reference_labels_is_reported_not_run(make_viewer, qtbot, lungs):
    viewer = make_viewer()
    (ref, ref_mask), (target, _) = lungs[0], lungs[1]
    widget = OneShotWidget(viewer)
    widget.reference.set_layer(viewer.add_image(ref, name="reference"))
    widget.reference_labels.set_layer(viewer.add_labels(np.zeros_like(ref_mask, np.uint8), name="empty"))
    widget.target.set_layer(viewer.add_image(target, name="target"))
    start = len(notification_manager.records)
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=10_000)
    errors = [n.message for n in notification_manager.records[start:] if n.severity == NotificationSeverity.ERROR]
    assert any("empty" in message for message in errors), errors
    assert len(viewer.layers) == 3


def test_negative_reference_labels_are_refused_naming_the_layer_and_labels_are_read_as_a_copy(make_viewer, lungs):
    """Negative ids (an int32 Labels layer) were taken for background and the run failed on "the reference mask is
    empty" (the CLI refuses such a mask as negative ids); the labels read were the layer's own array, so labels
    painted or cleared while the run went on changed its reference midway (a cleared layer failed it as empty)."""
    from napari_promptseg.errors import PromptsegError

    viewer = make_viewer()
    (ref, ref_mask), (target, _) = lungs[0], lungs[1]
    widget = OneShotWidget(viewer)
    widget.reference.set_layer(viewer.add_image(ref, name="reference"))
    widget.target.set_layer(viewer.add_image(target, name="target"))
    negative = viewer.add_labels(-ref_mask.astype(np.int32), name="lungs negative")
    widget.reference_labels.set_layer(negative)
    with pytest.raises(PromptsegError, match="'lungs negative'.*negative label id"):
        _read_inputs(widget)
    painted = viewer.add_labels(ref_mask.astype(np.uint8), name="lungs")
    widget.reference_labels.set_layer(painted)
    read = _read_inputs(widget)
    painted.data[:] = 0  # the user clears the layer while the run goes on
    assert read.labels.any() and not np.shares_memory(read.labels, painted.data)
    everything = viewer.add_labels(np.ones_like(ref_mask, np.uint8), name="bucket fill")
    widget.reference_labels.set_layer(everything)  # no background: SAT found half the target as "the object"
    with pytest.raises(PromptsegError, match="reference labels 'bucket fill': every pixel is labelled"):
        _read_inputs(widget)


def test_partial_labels_with_mode_single_region_is_refused_as_the_cli_refuses_it(make_viewer, lungs):
    """Ticked with mode "single region", "reference labels only some objects" was dropped without a word (SAT's
    one region learns no background near labels); the CLI refuses --partial-labels with --no-instances."""
    from napari_promptseg.errors import PromptsegError

    viewer = make_viewer()
    target = lungs[1][0]
    widget = _lungs_reference(viewer, lungs)
    widget.target.set_layer(viewer.add_image(target, name="target"))
    widget.partial_labels.setChecked(True)
    widget.mode.setCurrentText("single region")
    with pytest.raises(PromptsegError, match="'reference labels only some objects' applies to the many-instances"):
        widget._inputs()
    widget.mode.setCurrentText("auto")
    assert widget._inputs().partial


def test_a_stack_file_in_a_target_folder_is_skipped_saying_how_to_segment_it(tmp_path, litemedsam):
    """A (Z, Y, X) file among a target folder's images was skipped with the console's advice ("pass channel_axis
    ... segment_stack ... in napari_promptseg.methods.volume"); it now says the widget's way (open it as the target
    layer) and the CLI's, and the folder's 2D images are still done."""
    import tifffile
    from skimage import data

    from napari_promptseg._widgets.oneshot import run_oneshot

    camera = data.camera()[:128, 100:228]
    mask = np.zeros(camera.shape, np.uint8)
    mask[40:80, 40:80] = 1
    tifffile.imwrite(tmp_path / "plane.tif", camera)
    tifffile.imwrite(tmp_path / "stack.tif", np.stack([camera] * 3), photometric="minisblack", metadata={"axes": "ZYX"})
    files = [tmp_path / "plane.tif", tmp_path / "stack.tif"]
    said = []
    out = run_oneshot(
        camera,
        mask,
        files,
        [f.stem for f in files],
        stacked=False,
        strategy="sat",
        instances=False,
        segmenter=litemedsam,
        progress=lambda fraction, message: said.append(message),
        cancel=lambda: False,
    )
    assert out.names == ["plane"] and len(out.skipped) == 1, out.skipped
    # the status line names the target once (the methods name it: 'plane: plane: features' was read)
    assert "plane: features" in said and not [m for m in said if "plane: plane" in m], said
    assert out.skipped[0].startswith("stack.tif: a 3D image of shape (3, 128, 128)"), out.skipped
    assert "pick it as the target layer" in out.skipped[0] and "segment_stack" not in out.skipped[0]


def test_the_model_chosen_is_the_one_the_run_loads(make_viewer, qtbot, lungs):
    """The widget always ran the bundled LiteMedSAM, where `promptseg oneshot --model` takes any segmenter: its
    model box is the Interactive widget's, and a model whose weights are not here (offline) is named in the error,
    with where to put them, before any pixel is read."""
    viewer = make_viewer()
    target = lungs[1][0]
    widget = _lungs_reference(viewer, lungs)
    widget.target.set_layer(viewer.add_image(target, name="target"))
    assert widget.model.model_name == "litemedsam"
    widget.model.setCurrentIndex(widget.model.findData("sam_vit_b"))
    assert widget.model.currentText() == "sam_vit_b (weights missing)"
    start = len(notification_manager.records)
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=10_000)
    assert widget.runner.state == "failed"
    errors = [n.message for n in notification_manager.records[start:] if n.severity == NotificationSeverity.ERROR]
    assert any("sam_vit_b" in message for message in errors), errors
    assert len(viewer.layers) == 3  # no result

    # a weights file given for it (the CLI's --weights) is what the run loads: LiteMedSAM's is another architecture
    from napari_promptseg.models import resolve_weights

    weights = resolve_weights("litemedsam")
    widget.model.weights_file.set_path(str(weights))
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=60_000)
    panel = widget.runner.widget
    said = panel.details or panel.status.text()
    assert panel.state == "failed" and f"sam_vit_b: {weights} does not fit the sam_vit_b architecture" in said, said
    assert len(viewer.layers) == 3
    assert (widget.model.model_name, widget.model.weights_file.text) == ("sam_vit_b", str(weights))

    # the file belongs to sam_vit_b: another model chosen shows its own weights, sam_vit_b chosen again its file
    widget.model.setCurrentIndex(widget.model.findData("litemedsam"))
    assert (widget.model.weights_file.text, widget.model.currentText()) == ("", "litemedsam")
    assert widget.model.checked_choice() == ("litemedsam", None)
    widget.model.setCurrentIndex(widget.model.findData("sam_vit_b"))
    assert widget.model.weights_file.text == str(weights)
    assert widget.model.currentText() == "sam_vit_b (weights file)"


def test_multiscale_target_is_read_at_the_level_of_the_working_scale(make_viewer):
    """A pyramid target: the level whose resolution matches the objects' working scale is segmented, and the
    result layer is scaled to lie on the full-resolution image."""
    from napari_promptseg._sample_data import nuclei

    (image, _, _), (truth, _, _) = nuclei()
    base = np.tile(image, (4, 4))  # 1024 px
    pyramid = [base, base[::2, ::2], base[::4, ::4]]
    viewer = make_viewer()
    viewer.add_image(image, name="reference")
    viewer.add_labels(truth, name="reference nuclei")
    target = viewer.add_image(pyramid, name="slide", multiscale=True, scale=(0.5, 0.5))
    widget = OneShotWidget(viewer)
    widget.target.set_layer(target)
    widget.object_size.setValue(60)  # objects of 60 px: a working scale of 0.43, so the 1/2 level has enough pixels
    read = _read_inputs(widget)
    assert not read.stacked
    assert read.targets[0].shape == (512, 512) and tuple(read.factors) == (2.0, 2.0)
    # as the CLI, for the model's input size: a 1024 px model (SAM) needs these objects at full resolution
    assert _read_inputs(widget, input_size=1024).targets[0].shape == (1024, 1024)
    output = OneShotOutput([np.ones((512, 512), np.uint16)], [np.zeros((0, 2))], [np.zeros((0, 2))], ["slide"], False)
    widget._add_layers(output, target, read.factors)
    result = viewer.layers["slide one-shot"]
    np.testing.assert_allclose(result.scale, (1.0, 1.0))  # 0.5 x 2: covers the full-resolution extent
    # one region is a whole-image method: it reads the level of >= 1024 px, as the CLI (not the objects' level)
    widget.mode.setCurrentText("single region")
    read = _read_inputs(widget)
    assert read.targets[0].shape == (1024, 1024) and tuple(read.factors) == (1.0, 1.0)


def test_a_pyramid_target_finds_the_nuclei_the_cli_finds(make_viewer, qtbot):
    """The worker fitted the full-resolution reference at the pyramid level's object size (4x too small): 22 of
    78 nuclei (Dice 0.66) where the CLI found 62 (0.90). The reference is now fitted at its own resolution and
    only the target's size is divided by the level's factor."""
    from napari_promptseg._sample_data import nuclei
    from napari_promptseg.methods.instances import match_instances

    (image, _, _), (truth, _, _) = nuclei()
    zoom = np.ones((4, 4), np.uint8)
    big, big_truth = np.kron(image, zoom), np.kron(truth, zoom)  # a 4x magnification: nuclei of ~80 px
    viewer = make_viewer()
    widget = OneShotWidget(viewer)
    widget.reference.set_layer(viewer.add_image(big, name="reference"))
    widget.reference_labels.set_layer(viewer.add_labels(big_truth, name="reference nuclei"))
    target = viewer.add_image([big, big[::2, ::2], big[::4, ::4]], name="slide", multiscale=True)
    widget.target.set_layer(target)
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    result = viewer.layers["slide one-shot"]
    assert result.data.shape == (256, 256) and tuple(result.scale) == (4.0, 4.0)
    assert match_instances(result.data, truth)["f1"] > 0.7
    # mode auto: which mode ran is said (the status read 'one-shot (sat)', one region's strategy)
    assert widget.runner.widget.status.text().startswith("one-shot: done")
    summary = widget.runner.widget.summary.text()
    assert summary.startswith("one-shot (many instances): "), summary
    # the working scale is the full-resolution layer's (~20 model px for ~80 px nuclei), not the 1/4 level's (~1)
    scale = float(re.search(r"working scale ([0-9.]+)", summary).group(1))
    assert 0.15 < scale < 0.4, summary


def test_a_target_folders_slide_is_read_at_the_clis_level_and_lies_over_its_full_resolution(
    make_viewer, qtbot, tmp_path
):
    """A folder of whole slides as the target: the widget read each file whole, at full resolution (a slide's
    gigapixels in memory), where `promptseg oneshot FOLDER` reads the pyramid level of the objects' working scale.
    It reads that level now, by the CLI's rule, and lays the labels over the file's full-resolution pixels, in the
    file's pixel size as napari opens the slide (the labels were in pixels, the slide in µm: 4x off at 0.25 µm)."""
    import tifffile

    from napari_promptseg._sample_data import nuclei
    from napari_promptseg.io.layer_data import image_layer_data
    from napari_promptseg.methods.instances import match_instances

    (image, _, _), (truth, _, _) = nuclei()
    zoom = np.ones((2, 2), np.uint8)
    big, big_truth = np.kron(image, zoom), np.kron(truth, zoom)  # nuclei of ~40 px: a working scale of 1/2
    # 512 x 511 px; its half (every other pixel, 256 x 256) is np.fliplr(image), with np.fliplr(truth) its nuclei
    target = np.fliplr(big)[:, :-1]
    folder = tmp_path / "slides"
    folder.mkdir()
    with tifffile.TiffWriter(folder / "slide.ome.tif") as tif:
        tif.write(
            target,
            subifds=1,
            tile=(128, 128),
            metadata={"axes": "YX", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25},
        )
        tif.write(target[::2, ::2], subfiletype=1, tile=(128, 128))
    viewer = make_viewer()
    widget = OneShotWidget(viewer)
    widget.reference.set_layer(viewer.add_image(big, name="reference"))
    widget.reference_labels.set_layer(viewer.add_labels(big_truth, name="reference nuclei"))
    widget.folder.setText(str(folder))
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    result = viewer.layers["slide.ome one-shot"]
    assert result.data.shape == (256, 256)  # level 1, as the CLI reads it (level 0 was read: 512 px)
    # a level pixel over the centre of the pixels it stands for, per axis as the CLI upsamples (511 / 256 columns),
    # in the file's micrometres
    np.testing.assert_allclose(result.scale, (2.0 * 0.25, 511 / 256 * 0.25))
    np.testing.assert_allclose(result.translate, (0.5 * 0.25, (511 / 256 - 1) / 2 * 0.25))
    assert [str(unit) for unit in result.units] == ["micrometer"] * 2
    assert match_instances(result.data, np.fliplr(truth))["f1"] > 0.7
    # the slide opened as napari's reader gives it: the nuclei's centres fall in the labels where napari shows them
    ((data, kwargs, _),) = image_layer_data(folder / "slide.ome.tif")
    slide = viewer.add_image(data, **kwargs)
    target_truth = np.fliplr(big_truth)[:, :-1]
    centres = [np.argwhere(target_truth == k).mean(axis=0) for k in range(1, int(truth.max()) + 1)]
    hits = [result.data[tuple(np.round(result.world_to_data(slide.data_to_world(c))).astype(int))] > 0 for c in centres]
    assert np.mean(hits) > 0.8


def test_a_multiscale_reference_is_read_at_full_resolution(make_viewer):
    """A pyramid layer's ``data`` taken as one array is its coarsest level: labels painted on the full-resolution
    image were refused as "(256, 256) do not match ... (128, 128)", and coarse labels were silently accepted."""
    from napari_promptseg._sample_data import nuclei

    (image, _, _), (truth, _, _) = nuclei()
    viewer = make_viewer()
    reference = viewer.add_image([image, image[::2, ::2]], name="slide", multiscale=True)
    viewer.add_labels(truth, name="slide nuclei")
    widget = OneShotWidget(viewer)
    widget.reference.set_layer(reference)
    widget.target.set_layer(reference)
    read = _read_inputs(widget)
    ref_pixels, labels = read.reference, read.labels
    assert ref_pixels.shape == image.shape and np.array_equal(ref_pixels, image) and labels.shape == truth.shape


def test_labels_that_fit_no_plane_of_a_stack_reference_are_refused_saying_what_fits(make_viewer):
    """Labels of 3 planes over a reference stack of 5 were refused as not matching 'the 2D reference image 'ref' of
    shape (5, 256, 256)': a stack called 2D, and no word of the shapes that fit (the stack's, or one plane's)."""
    from napari_promptseg._sample_data import nuclei
    from napari_promptseg.errors import PromptsegError

    (image, _, _), (truth, _, _) = nuclei()
    viewer = make_viewer()
    widget = OneShotWidget(viewer)
    widget.reference.set_layer(viewer.add_image(np.stack([image] * 5), name="ref"))
    widget.reference_labels.set_layer(viewer.add_labels(np.stack([truth] * 3), name="nuclei"))
    widget.target.set_layer(viewer.add_image(image, name="target"))
    expected = (
        "reference labels 'nuclei' of shape (3, 256, 256) do not match the reference image 'ref', a stack of shape "
        "(5, 256, 256): give labels of the stack's shape, or of one plane (256, 256)"
    )
    with pytest.raises(PromptsegError, match=re.escape(expected)):
        _read_inputs(widget)
    widget.reference_labels.set_layer(viewer.add_labels(truth[:100], name="cut"))
    with pytest.raises(PromptsegError, match=re.escape("labels 'cut' of shape (100, 256) do not match the reference")):
        _read_inputs(widget)
    widget.reference.set_layer(viewer.add_image(image, name="plane"))  # a 2D reference: said as before
    with pytest.raises(PromptsegError, match=re.escape("do not match the 2D reference image 'plane' of shape")):
        _read_inputs(widget)


def test_a_time_lapse_of_volumes_as_reference_is_refused_as_a_target_is(make_viewer):
    """A (T, Z, Y, X) reference layer with labels of its own shape was refused as "reference labels 'labels' of shape
    (2, 5, 256, 256) do not match the 2D reference image 'movie' of shape (2, 5, 256, 256)": the shapes match, and a
    time-lapse is no 2D image. It is refused as such a target layer is, saying what to pick instead."""
    from napari_promptseg._sample_data import nuclei
    from napari_promptseg.errors import PromptsegError

    (image, _, _), (truth, _, _) = nuclei()
    viewer = make_viewer()
    widget = OneShotWidget(viewer)
    movie = np.stack([np.stack([image] * 5)] * 2)
    widget.reference.set_layer(viewer.add_image(movie, name="movie"))
    labels = np.zeros(movie.shape, np.uint8)
    labels[0, 2] = truth > 0
    widget.reference_labels.set_layer(viewer.add_labels(labels, name="labels"))
    widget.target.set_layer(viewer.add_image(image, name="target"))
    expected = (
        "reference layer 'movie' has 4 dimensions (shape (2, 5, 256, 256)); expected a 2D image or a stack of 2D "
        "planes: pick one stack (e.g. one time point or channel: Layers > Split Stack)"
    )
    with pytest.raises(PromptsegError, match=re.escape(expected)):
        _read_inputs(widget)


def test_reference_of_another_modality_is_warned_in_the_summary(make_viewer, qtbot, lungs, shared_data):
    """A chest X-ray reference on an H&E gland image: the result comes with 'does not transfer' in the summary."""
    viewer = make_viewer()
    gland = read_image(dataset_pairs(shared_data / "glands_glas")[0][0])
    widget = _lungs_reference(viewer, lungs)
    widget.target.set_layer(viewer.add_image(gland, name="gland", rgb=True))
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    assert "gland one-shot" in [layer.name for layer in viewer.layers]
    assert "does not transfer" in widget.runner.widget.summary.text()


def test_a_runs_prompt_points_are_named_after_its_own_labels_layer(make_viewer, lungs):
    """Results never replace a layer: napari names the labels '... [1]' when a layer has their name (a rerun's).
    Their prompt points took a free name of their own, so after a run without points shown the labels 'target
    one-shot [1]' came with the points 'target one-shot prompts', which read as another run's. (The result laid out
    here is the X-ray's lung mask and a point in a lung: what a run gives, without running one.)"""
    image, mask = lungs[1]
    labels = mask.astype(np.uint16)
    inside = np.array([np.argwhere(labels > 0)[0][::-1]], float)  # x, y
    viewer = make_viewer()
    widget = OneShotWidget(viewer)
    target = viewer.add_image(image, name="target")
    stack = viewer.add_image(np.stack([image, image]), name="stack")
    for shown in (False, True):
        widget.show_points.setChecked(shown)
        widget._add_layers(OneShotOutput([labels], [inside], [np.zeros((0, 2))], ["target"], False), target)
        stacked = OneShotOutput([labels] * 2, [inside] * 2, [np.zeros((0, 2))] * 2, ["stack"] * 2, True)
        widget._add_layers(stacked, stack)
    names = [ly.name for ly in viewer.layers][2:]
    assert names == [
        *("target one-shot", "stack one-shot"),
        *("target one-shot [1]", "target one-shot [1] prompts", "stack one-shot [1]", "stack one-shot [1] prompts"),
    ], names


def test_reference_labels_removed_are_chosen_again_not_an_earlier_result(make_viewer, lungs):
    """The reference labels removed (e.g. to draw them again): the box took the next Labels layer, here an earlier
    run's result on a target of the reference's size, and the next run took it as the reference, unsaid. The box is
    empty now until labels are chosen, and Run asks for them."""
    (ref, mask), (target, target_mask) = lungs[:2]
    viewer = make_viewer()
    widget = OneShotWidget(viewer)
    viewer.add_image(ref, name="reference")
    labels = viewer.add_labels(mask.astype(np.uint8), name="lungs")
    assert widget.reference_labels.layer() is labels  # the first Labels layer, as before
    viewer.add_image(target, name="target")
    viewer.add_labels(target_mask.astype(np.uint8), name="target one-shot")  # an earlier run's result
    viewer.layers.remove(labels)
    assert widget.reference_labels.layer() is None
    widget.run()
    assert not widget.runner.busy and widget.runner.state == "failed"
    assert "choose the Labels layer that marks the object" in widget.runner.widget.status.text()
    viewer.add_labels(mask.astype(np.uint8), name="lungs again")
    assert widget.reference_labels.layer() is None  # the user chooses it


def test_a_reference_image_removed_is_chosen_again_not_the_target(make_viewer, lungs):
    """The reference image removed (to open another): the box took the next image, the target, and with labels of
    the target's size the next run took the target as its own reference, unsaid. The box is empty now until a
    reference is chosen, and Run asks for one."""
    (ref, mask), (target, _) = lungs[:2]
    viewer = make_viewer()
    widget = OneShotWidget(viewer)
    reference = viewer.add_image(ref, name="reference")
    viewer.add_labels(mask.astype(np.uint8), name="lungs")
    target_layer = viewer.add_image(target, name="target")
    assert widget.reference.layer() is reference and widget.target.layer() is target_layer
    viewer.layers.remove(reference)
    assert widget.reference.layer() is None and widget.target.layer() is target_layer
    widget.run()
    assert not widget.runner.busy and widget.runner.state == "failed"
    assert "choose a reference image layer" in widget.runner.widget.status.text()


def test_a_target_removed_is_chosen_again_not_another_image(make_viewer, lungs):
    """The target image removed (to open another): the box took the next image that was not the reference, here
    another target, and the next run segmented it unsaid. As the reference boxes, it is empty now ('(folder below)')
    until a target is chosen, and Run asks for one; an image opened afterwards is not taken unasked."""
    (ref, mask), (target, _), (other, _) = lungs[:3]
    viewer = make_viewer()
    widget = OneShotWidget(viewer)
    reference = viewer.add_image(ref, name="reference")
    viewer.add_labels(mask.astype(np.uint8), name="lungs")
    viewer.add_image(other, name="another")
    target_layer = viewer.add_image(target, name="target")
    widget.target.set_layer(target_layer)
    viewer.layers.remove(target_layer)
    assert widget.target.layer() is None and widget.target.currentText() == "(folder below)"
    assert widget.reference.layer() is reference
    widget.run()
    assert not widget.runner.busy and widget.runner.state == "failed"
    assert "choose a target image layer or a folder" in widget.runner.widget.status.text()
    viewer.add_image(target, name="target again")
    assert widget.target.layer() is None  # the user chooses it
    widget.target.set_layer(viewer.layers["target again"])
    assert widget.target.layer() is viewer.layers["target again"]


def test_a_double_click_runs_once_and_a_target_replaced_meanwhile_gets_no_result(make_viewer, qtbot, lungs):
    """A double click on the run button ran the whole job twice (two identical result layers); a result made from
    a target whose pixels were replaced meanwhile was laid over the new pixels."""
    viewer = make_viewer()
    target = lungs[1][0]
    widget = _lungs_reference(viewer, lungs)
    layer = viewer.add_image(target, name="target")
    widget.target.set_layer(layer)
    widget.run()
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    names = [ly.name for ly in viewer.layers]
    assert names.count("target one-shot") == 1 and "target one-shot [1]" not in names, names
    before = len(viewer.layers)
    widget.run()
    layer.data = np.fliplr(target)  # while it runs
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    status = widget.runner.widget.status.text()
    assert widget.runner.state == "failed" and "were replaced while it ran" in status, status
    assert len(viewer.layers) == before


def test_closing_the_dock_stops_the_run(make_viewer, qtbot, lungs):
    """Closing a dock only takes the widget out of it: the run went on for 35 s and then added its layers to the
    viewer of a closed panel. Now it stops at its next cancel check and adds nothing."""
    import time

    viewer = make_viewer()
    (ref, ref_mask), (target, _) = lungs[0], lungs[1]
    widget = OneShotWidget(viewer)
    dock = viewer.window.add_dock_widget(widget, name="one-shot")
    widget.reference.set_layer(viewer.add_image(ref, name="reference"))
    widget.reference_labels.set_layer(viewer.add_labels(ref_mask.astype(np.uint8), name="lungs"))
    widget.target.set_layer(viewer.add_image(target, name="target"))
    before = len(viewer.layers)
    widget.run()
    assert widget.runner.busy
    viewer.window.remove_dock_widget(dock)  # at once: with the model loaded and features cached, a run takes ~1 s
    t0 = time.monotonic()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    assert time.monotonic() - t0 < 30 and widget.runner.state == "cancelled", widget.runner.widget.status.text()
    assert len(viewer.layers) == before
    widget.run()  # a closed panel takes no new run
    assert widget.is_idle and len(viewer.layers) == before


def test_a_reference_with_only_some_objects_labelled_finds_the_others_when_told(make_viewer, qtbot):
    """Bug hunt: a reference with 3 of its 50 nuclei labelled taught every unlabelled nucleus as background, so
    one-shot found the 3 and nothing else (F1 0.075 on the reference itself) and fell to one region with fewer than
    3. "reference labels only some objects" learns background only near the labelled nuclei: the other nuclei of
    the image are found, with 2 labelled nuclei too (many instances, not one region)."""
    from napari_promptseg._sample_data import nuclei
    from napari_promptseg.methods.instances import match_instances

    (image, _, _), (truth, _, _) = nuclei()
    ids, areas = np.unique(truth[truth > 0], return_counts=True)
    typical = ids[np.argsort(np.abs(areas - np.median(areas)))[:2]]  # two median-sized nuclei
    some = np.where(np.isin(truth, typical), truth, 0)
    viewer = make_viewer()
    widget = OneShotWidget(viewer)
    widget.reference.set_layer(viewer.add_image(image, name="reference"))
    widget.reference_labels.set_layer(viewer.add_labels(some, name="two nuclei"))
    widget.target.set_layer(viewer.add_image(image, name="target"))
    widget.mode.setCurrentText("many instances")
    widget.run()  # not ticked: the summary says why so little came back, and what to do
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    summary = widget.runner.widget.summary.text()
    assert "labels only 2 object(s)" in summary and "tick 'reference labels only some objects'" in summary, summary
    assert match_instances(viewer.layers["target one-shot"].data, truth)["recall"] < 0.3
    widget.partial_labels.setChecked(True)
    widget.strategy.setCurrentText("persam")  # one region's: the instances ran without it, unsaid
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    assert "labels only" not in widget.runner.widget.summary.text()
    assert any("strategy 'persam' ignored" in w for w in widget.last_output.warnings), widget.last_output.warnings
    found = viewer.layers["target one-shot [1]"].data
    assert match_instances(found, truth)["recall"] > 0.5, match_instances(found, truth)


def test_save_to_library_reads_a_lazy_slide_in_the_worker_not_napari(make_viewer, qtbot):
    """ "Save reference to library…" read the reference layer and its labels on napari's main thread: a slide's
    pyramid (dask, zarr) froze napari while it was read. They are read in the worker now, as a run reads them,
    and the entry is the labelled plane of the real nuclei sample."""
    import threading

    import dask

    from napari_promptseg._sample_data import nuclei
    from napari_promptseg.io.library import ReferenceLibrary

    (image, _, _), (truth, _, _) = nuclei()
    reads: list[threading.Thread] = []
    viewer = make_viewer()
    widget = OneShotWidget(viewer)
    with dask.config.set(scheduler="synchronous"):
        levels = thread_recording_slide(image, reads)
        widget.reference.set_layer(viewer.add_image(levels, name="slide", multiscale=True))
        widget.reference_labels.set_layer(viewer.add_labels(truth, name="slide nuclei"))
        widget.library_name.setText("slide nucleus")  # the starter is 'nucleus' of these pixels
        reads_only_in_the_worker(widget, widget.save_to_library, reads, qtbot, RUN_MS)
    # the default library = the test's tmp dir (conftest), new: the starter exemplar, then this one
    starter, entry = ReferenceLibrary.open().entries
    assert starter.source.startswith("bundled sample")
    assert widget.last_saved.id == entry.id and entry.name == "slide nucleus" and entry.source == "slide"
    assert entry.instances and len(np.unique(entry.labels())) - 1 == len(np.unique(truth)) - 1
    assert "saved exemplar 'slide nucleus'" in widget.runner.widget.status.text()


def test_save_to_library_writes_to_the_library_field_as_the_text_widgets_add_exemplar(make_viewer, qtbot, tmp_path):
    """ "Save reference to library" always wrote to the default library, while the Text prompt widget answers from
    (and adds to) the library its field names: a lab's shared library could not be taught from a one-shot
    reference. The One-shot widget has the same library field now, and both save through one path."""
    from napari_promptseg._sample_data import nuclei
    from napari_promptseg.io.library import ReferenceLibrary

    (image, _, _), (truth, _, _) = nuclei()
    viewer = make_viewer()
    widget = OneShotWidget(viewer)
    widget.reference.set_layer(viewer.add_image(image, name="cells"))
    widget.reference_labels.set_layer(viewer.add_labels(truth, name="cells nuclei"))
    widget.library_name.setText("lab nucleus")
    shared = tmp_path / "lab library"
    widget.library.setText(str(shared))
    assert widget.save_to_library()
    qtbot.waitUntil(lambda: widget.runner.state != "running", timeout=RUN_MS)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    names = [entry.name for entry in ReferenceLibrary.open(shared).entries]
    assert names[-1] == "lab nucleus" and widget.last_saved.name == "lab nucleus"
    assert "lab nucleus" not in [entry.name for entry in ReferenceLibrary.open().entries]  # the default one
    assert str(shared) in widget.runner.widget.status.text()


def test_a_stacks_instances_record_the_size_a_propagation_seeded_by_them_decodes_at(make_viewer, qtbot):
    """The many instances of a target stack: the Labels layer records the object size they were found at, which the
    Interactive widget's propagation seeded by that layer decodes them at (the CLI carries a one-shot seed at the
    seed method's scale; from the masks' own size, find-all's nuclei gave F1 0.42 against 0.69)."""
    from napari_promptseg._sample_data import nuclei
    from napari_promptseg.methods.instances import segment_instances_like

    (image, _, _), (truth, _, _) = nuclei()
    viewer = make_viewer()
    widget = OneShotWidget(viewer)
    widget.reference.set_layer(viewer.add_image(image, name="reference"))
    widget.reference_labels.set_layer(viewer.add_labels(truth, name="nuclei"))
    widget.target.set_layer(viewer.add_image(np.stack([image, image[::-1]]), name="targets"))
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    found = segment_instances_like(image, truth, image)
    recorded = viewer.layers["targets one-shot"].metadata["promptseg_object_size"]
    assert recorded == pytest.approx(found.scale.object_size, abs=0.05)
    # the size was measured, not given: the summary read 'working scale 1.0 (object size)'
    summary = widget.runner.widget.summary.text()
    assert "(measured on the stack's middle plane)" in summary and "(object size)" not in summary, summary
    assert "in 2 plane(s) of one stack" in summary, summary  # not '2 target(s)': one stack, linked across planes


def test_a_stack_plane_with_nothing_like_the_reference_is_empty_as_the_cli_leaves_it(make_viewer, qtbot, tmp_path):
    """One plane of a target stack where nothing resembles the reference (background alone) failed the widget's
    whole run, and the planes that matched were lost; `promptseg oneshot` leaves that plane empty, says so, and
    keeps the others. Both now give the same labels (methods.volume.segment_stack leaves such a plane empty). The
    prompt points of the planes after such a plane were drawn one plane too low (on the empty one): each plane's
    points are on it."""
    import tifffile

    from napari_promptseg._sample_data import nuclei
    from napari_promptseg.cli import main

    (image, _, _), (truth, _, _) = nuclei()
    one = (truth == 8).astype(np.uint8)  # one nucleus: SAT's one region
    background = np.random.default_rng(0).normal(image[truth == 0].mean(), 7, truth.shape)
    stack = np.stack([np.clip(background, 0, 255).astype(image.dtype), image])  # the blank plane first
    viewer = make_viewer()
    widget = OneShotWidget(viewer)
    widget.reference.set_layer(viewer.add_image(image, name="reference"))
    widget.reference_labels.set_layer(viewer.add_labels(one, name="a nucleus"))
    widget.target.set_layer(viewer.add_image(stack, name="targets"))
    widget.object_size.setValue(12)  # the instances' working scale: one region ran without it, unsaid
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    labels = viewer.layers["targets one-shot"].data
    assert labels[1].any() and not labels[0].any()
    assert any("plane 0" in w and "resembles" in w for w in widget.last_output.warnings)  # why plane 0 is empty
    points = viewer.layers["targets one-shot prompts"].data  # (plane, row, column)
    assert set(points[:, 0]) == {1.0}, "the points of plane 1 lie on plane 1"
    positive = viewer.layers["targets one-shot prompts"].properties["positive"]
    rows, cols = points[positive, 1].astype(int), points[positive, 2].astype(int)
    assert np.mean(labels[1][rows, cols] > 0) > 0.5  # on the object they found
    assert any(w.startswith("object size ignored") for w in widget.last_output.warnings)

    tifffile.imwrite(tmp_path / "reference.tif", image)
    tifffile.imwrite(tmp_path / "mask.tif", one)
    tifffile.imwrite(tmp_path / "targets.tif", stack, photometric="minisblack", metadata={"axes": "ZYX"})
    where = ["--reference", str(tmp_path / "reference.tif"), "--reference-mask", str(tmp_path / "mask.tif")]
    assert (
        main(["oneshot", *where, str(tmp_path / "targets.tif"), "-o", str(tmp_path / "out"), "--object-size", "12"])
        == 0
    )
    np.testing.assert_array_equal(labels, tifffile.imread(tmp_path / "out" / "targets.tif"))
    warnings = json.loads((tmp_path / "out" / "report.json").read_text())["warnings"]
    assert any(w.startswith("--object-size ignored: it sets the many-instances mode's") for w in warnings), warnings


def test_a_multichannel_layer_with_channel_axis_0_gives_one_labels_layer_as_the_function_and_the_cli(
    make_viewer, qtbot, tmp_path
):
    """A (C, Y, X) reference and target (two channels in one layer, as skimage's cells3d()[30]) were taken as stacks
    of C planes: the reference's displayed channel alone, and each channel of the target segmented as a plane (a
    (2, Y, X) Labels layer). With channel axis 0 the widget reads them as the CLI's --channel-axis 0 and the
    function's channel_axis=0 do: one (Y, X) Labels layer over the image, the same labels."""
    import tifffile

    from napari_promptseg._sample_data import nuclei, nuclei_for_text
    from napari_promptseg.cli import main
    from napari_promptseg.methods.instances import segment_instances_like

    (image, _, _), (truth, _, _) = nuclei()
    (target, _, _), _ = nuclei_for_text()
    reference, cyx = np.stack([image, image[::-1]]), np.stack([target, target[::-1]])  # two channels that differ
    viewer = make_viewer()
    widget = OneShotWidget(viewer)
    ref_layer = viewer.add_image(reference, name="reference")
    widget.reference.set_layer(ref_layer)
    widget.reference_labels.set_layer(viewer.add_labels(truth, name="reference nuclei"))
    target_layer = viewer.add_image(cyx, name="cells", scale=(1, 0.5, 0.5), translate=(0, 3, 4))
    widget.target.set_layer(target_layer)
    assert widget.channel_axis.itemText(1) == "axis 0 (2 channels)"
    widget.channel_axis.offer([napari.layers.Image(cyx[:1])], keep=False)
    assert widget.channel_axis.itemText(1) == "axis 0 (1 channel)"  # it read '(1 channels)'
    widget.channel_axis.offer([target_layer], keep=False)
    widget.channel_axis.setCurrentIndex(1)
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    assert widget.runner.state == "done", widget.runner.widget.status.text()

    result = viewer.layers["cells one-shot"]
    assert result.data.shape == target.shape  # one plane of labels, not one per channel
    assert tuple(result.scale) == (0.5, 0.5) and tuple(result.translate) == (3, 4)  # over the image's (Y, X)
    expected = segment_instances_like(reference, truth, cyx, channel_axis=0).labels
    np.testing.assert_array_equal(result.data, expected)
    tifffile.imwrite(tmp_path / "reference.tif", reference)
    tifffile.imwrite(tmp_path / "truth.tif", truth)
    tifffile.imwrite(tmp_path / "cells.tif", cyx)
    command = ["oneshot", str(tmp_path / "cells.tif"), "-o", str(tmp_path / "out"), "--channel-axis", "0"]
    references = ["--reference", str(tmp_path / "reference.tif"), "--reference-mask", str(tmp_path / "truth.tif")]
    assert main([*command, *references, "--scheduler", "none"]) == 0
    np.testing.assert_array_equal(result.data, read_image(tmp_path / "out" / "cells.tif"))

    # a 2D layer has no channel axis: refused naming it, before any work
    widget.target.set_layer(viewer.add_image(target, name="grey"))
    widget.channel_axis.setCurrentIndex(1)  # offered by the reference
    widget.run()
    assert "target layer 'grey': a 2D layer has no channel axis" in widget.runner.widget.status.text()


def test_a_multichannel_reference_takes_labels_napari_made_over_its_channels_too(make_viewer):
    """napari's 'New labels' over a (C, Y, X) reference is (C, Y, X), painted on the channel shown: with channel
    axis 0 the objects painted on any channel are the reference's (Y, X) labels, its pixels its channels last. A
    (C, Z, Y, X) target is a stack of (C, Y, X) planes; without the channel axis its refusal says to choose it."""
    from napari_promptseg._sample_data import nuclei

    (image, _, _), (truth, _, _) = nuclei()
    viewer = make_viewer()
    widget = OneShotWidget(viewer)
    reference = viewer.add_image(np.stack([image, image[::-1]]), name="reference")
    painted = np.zeros((2, *truth.shape), truth.dtype)
    painted[1] = truth  # painted while channel 1 was shown
    widget.reference.set_layer(reference)
    widget.reference_labels.set_layer(viewer.add_labels(painted, name="nuclei"))
    widget.target.set_layer(viewer.add_image(np.stack([image, image]), name="target"))
    widget.channel_axis.setCurrentIndex(1)
    pixels = _read_inputs(widget)
    np.testing.assert_array_equal(pixels.labels, truth)
    np.testing.assert_array_equal(pixels.reference, np.moveaxis(reference.data, 0, -1))
    assert pixels.reference_plane is None and not pixels.stacked and pixels.targets[0].shape == (2, *image.shape)

    # a (C, Z, Y, X) target: with channel axis 'none' a time-lapse of volumes, segmented at the time point shown
    # and said so, saying which axis to choose (the Interactive widget's reading); a stack with 0
    widget.target.set_layer(viewer.add_image(np.stack([reference.data] * 3, axis=1), name="czyx"))
    assert widget.channel_axis.channel_axis is None  # another target: its first axis may hold planes
    caution = widget._inputs().time_point.caution
    assert (
        "read as a time-lapse of volumes (T, Z, Y, X), segmented at time point 0 shown; if its first axis holds "
        "channels, choose channel axis 0" in caution
    ), caution
    widget.channel_axis.setCurrentIndex(1)
    pixels = _read_inputs(widget)
    assert pixels.stacked and [p.shape for p in pixels.targets] == [(2, *image.shape)] * 3


def test_a_removed_layer_is_let_go_by_every_picker(make_viewer, lungs):
    """The pickers listened to a layer's renames after it left the viewer: a layer removed (kept in a script, or
    added to another viewer) and renamed there still rebuilt every picker of the widget."""

    def pickers_listening(layer) -> list:
        refs = [cb[0]() for cb in layer.events.name.callbacks if isinstance(cb, tuple)]
        return [obj for obj in refs if isinstance(obj, LayerPicker)]

    (ref, mask), _ = lungs[:2]
    viewer = make_viewer()
    widget = OneShotWidget(viewer)
    reference = viewer.add_image(ref, name="reference")
    labels = viewer.add_labels(mask.astype(np.uint8), name="lungs")
    assert pickers_listening(reference) and pickers_listening(labels)
    viewer.layers.remove(reference)
    viewer.layers.remove(labels)
    assert pickers_listening(reference) == [] and pickers_listening(labels) == []
    reference.name = "renamed elsewhere"
    assert "renamed elsewhere" not in [widget.reference.itemText(i) for i in range(widget.reference.count())]
    viewer.layers.append(reference)  # back in the viewer: listened to again
    assert pickers_listening(reference)
