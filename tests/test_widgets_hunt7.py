"""Widget defects found in bug hunt 7 (a microscopist's session in napari), each reproduced in a real napari viewer
with the real bundled LiteMedSAM on shared or bundled data. Run under a display: ``xvfb-run -a python -m pytest
tests/test_widgets_hunt7.py``."""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from napari_promptseg.io import read_image, read_mask
from napari_promptseg.methods.metrics import dice

from .conftest import dataset_pairs

pytestmark = pytest.mark.gui
RUN_MS = 600_000  # the first run loads the model; the 2-core CPU is often shared


def _messages_since(start: int, severity: NotificationSeverity) -> list[str]:
    return [n.message for n in notification_manager.records[start:] if n.severity == severity]


def test_a_folder_target_takes_the_clis_images_and_goes_on_past_a_file_it_cannot_read(
    make_viewer, qtbot, shared_data, tmp_path
):
    """A target folder copied from a Mac (its '._a.png' resource forks), holding an earlier run's labels and one
    truncated PNG: the One-shot widget failed the whole run on '._a.png' ('cannot be read as an image'), nothing
    segmented. The folder's images are now the CLI's (no hidden files, no promptseg outputs) and a file that cannot
    be read is skipped, said in a warning and the summary, while the others get their layers (the CLI's batch goes
    on past a failed input too)."""
    from skimage.io import imsave

    from napari_promptseg._widgets.oneshot import OneShotWidget
    from napari_promptseg.io.images import write_labels

    pairs = dataset_pairs(shared_data / "lungs_cxr_shenzhen")[:3]
    (ref, ref_mask), *targets = [(read_image(i)[..., 0], read_mask(m)) for i, m in pairs]
    folder = tmp_path / "targets"
    folder.mkdir()
    for name, (image, _) in zip("ab", targets, strict=True):
        imsave(folder / f"{name}.png", image)
    (folder / "._a.png").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")  # AppleDouble header
    write_labels(folder / "a_labels.tif", (targets[0][1] > 0).astype(np.uint16))  # an earlier run's output
    (folder / "c.png").write_bytes((folder / "a.png").read_bytes()[:200])  # cut short by a failed copy
    viewer = make_viewer()
    widget = OneShotWidget(viewer)
    viewer.window.add_dock_widget(widget, name="one-shot")
    widget.reference.set_layer(viewer.add_image(ref, name="reference"))
    widget.reference_labels.set_layer(viewer.add_labels(ref_mask.astype(np.uint8), name="reference lungs"))
    widget.folder.setText(str(folder))
    start = len(notification_manager.records)
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)

    assert widget.runner.state == "done", widget.runner.widget.status.text()
    made = [layer.name for layer in viewer.layers if layer.name.endswith("one-shot")]
    assert made == ["a one-shot", "b one-shot"], made
    for name, (_, truth) in zip("ab", targets, strict=True):
        assert dice(viewer.layers[f"{name} one-shot"].data > 0, truth) > 0.85
    summary = widget.runner.widget.summary.text()
    assert "skipped 1 file(s): c.png: " in summary and "cannot be read as an image" in summary, summary
    warnings = _messages_since(start, NotificationSeverity.WARNING)
    assert any("c.png" in message for message in warnings), warnings
    assert not _messages_since(start, NotificationSeverity.ERROR)


def test_the_registration_widget_reads_lazy_layers_in_its_worker_not_napari(make_viewer, qtbot):
    """A fixed and a moving image opened lazily (dask: a zarr, a slide's level): pressing Register read both into
    memory on napari's main thread before the worker started, freezing napari meanwhile (the One-shot and Text
    widgets read theirs in the worker). They are read in the worker now, and the registration is the same."""
    import dask
    from scipy import ndimage

    from napari_promptseg._sample_data import nuclei
    from napari_promptseg._widgets.registration import RegistrationWidget

    from .conftest import reads_only_in_the_worker, thread_recording_dask

    (image, _, _), _ = nuclei()
    moved = ndimage.shift(image.astype(np.float32), (6, -4), order=1, mode="nearest")  # a known 6, -4 px shift
    reads: list = []
    viewer = make_viewer()
    with dask.config.set(scheduler="synchronous"):
        fixed = viewer.add_image(thread_recording_dask(image.astype(np.float32), reads, chunks=128), name="fixed")
        moving = viewer.add_image(thread_recording_dask(moved, reads, chunks=128), name="moving")
        widget = RegistrationWidget(viewer)
        viewer.window.add_dock_widget(widget, name="registration")
        widget.fixed_picker.set_layer(fixed)
        widget.moving_picker.set_layer(moving)
        widget.method.setCurrentText("intensity")

        def register() -> bool:
            widget.run()
            return widget.runner.busy

        reads_only_in_the_worker(widget, register, reads, qtbot, RUN_MS)
    # the moving image's (row, col) pixel lies at the fixed (row - 6, col + 4): the shift found
    mapped = widget.last_result.moving_points_to_fixed(np.array([[100.0, 120.0]]))  # x, y
    np.testing.assert_allclose(mapped, [[104.0, 114.0]], atol=1.0)


def test_a_second_commit_right_after_the_first_says_there_is_nothing_left(make_viewer, qtbot):
    """Shift-C pressed twice (a double press, or 'did it take?'): the first commit took the object and removed its
    box; the second said 'commit waits for the preview ...' in the status line for good, and nothing came (no
    prompt was left to preview). It now says there is nothing to commit, and the status keeps the commit's line."""
    from skimage.measure import regionprops

    from napari_promptseg._sample_data import nuclei
    from napari_promptseg._widgets.interactive import TARGET_NAME, InteractiveWidget

    (image, _, _), (truth, _, _) = nuclei()
    largest = max(regionprops(truth), key=lambda r: r.area)
    r0, c0, r1, c1 = largest.bbox
    viewer = make_viewer()
    viewer.add_image(image, name="nuclei")
    widget = InteractiveWidget(viewer)
    viewer.window.add_dock_widget(widget, name="promptseg interactive")
    shapes = viewer.add_shapes(name="boxes")
    shapes.add_rectangles(np.array([[r0, c0], [r1 - 1, c1 - 1]]))
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    widget.commit()
    status = widget.runner.widget.status.text()
    assert status.startswith("committed 1 object(s)") and len(shapes.data) == 0, status
    start = len(notification_manager.records)
    widget.commit()  # at once: the box's removal has just scheduled a preview
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    assert widget.runner.widget.status.text() == status
    warnings = _messages_since(start, NotificationSeverity.WARNING)
    assert any(message.startswith("nothing to commit") for message in warnings), warnings
    labels = viewer.layers[TARGET_NAME].data
    assert np.unique(labels).tolist() == [0, 1] and dice(labels == 1, truth == largest.label) > 0.6


def test_run_right_after_cancel_runs_once_the_cancelled_run_has_stopped(make_viewer, qtbot, shared_data):
    """Run, Cancel (a wrong option), Run again: the second run was refused, 'one-shot (sat) is still running: wait
    for it, or press Cancel first', although Cancel had been pressed, and the user had to wait and press Run a
    third time. The run is taken now, and starts when the cancelled one has stopped."""
    from napari_promptseg._widgets.oneshot import OneShotWidget

    pairs = dataset_pairs(shared_data / "lungs_cxr_shenzhen")[:2]
    (ref, ref_mask), (target, truth) = [(read_image(i)[..., 0], read_mask(m)) for i, m in pairs]
    viewer = make_viewer()
    widget = OneShotWidget(viewer)
    viewer.window.add_dock_widget(widget, name="one-shot")
    widget.reference.set_layer(viewer.add_image(ref, name="reference"))
    widget.reference_labels.set_layer(viewer.add_labels(ref_mask.astype(np.uint8), name="reference lungs"))
    widget.target.set_layer(viewer.add_image(target, name="target"))
    widget.strategy.setCurrentText("persam")
    widget.run()
    widget.runner.cancel()
    widget.strategy.setCurrentText("sat")
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    assert widget.runner.widget.status.text().startswith("one-shot: done")
    assert widget.runner.widget.summary.text().startswith("one-shot (one region, sat): 1 object(s)")
    layers = [layer for layer in viewer.layers if layer.name == "target one-shot"]
    assert len(layers) == 1 and dice(layers[0].data > 0, truth) > 0.85  # the second run's, once


def test_propagating_through_a_short_grey_stack_gives_no_advice_to_make_its_planes_channels(make_viewer, qtbot):
    """A grey stack of 3 planes, its channel axis left at 'none', 'Propagate through stack': a warning said it was
    'read as a stack of 3 planes ...; if the first axis holds channels, say so: ... widgets: channel axis 0', though
    the widget had offered that axis and the user had asked to propagate along it (and with channel axis 0 the
    propagation is refused). No such warning now; the object is carried through every plane."""
    from skimage.measure import regionprops

    from napari_promptseg._sample_data import nuclei
    from napari_promptseg._widgets.interactive import InteractiveWidget

    (image, _, _), (truth, _, _) = nuclei()
    largest = max(regionprops(truth), key=lambda r: r.area)
    r0, c0, r1, c1 = largest.bbox
    viewer = make_viewer()
    viewer.add_image(np.stack([image, image, image]), name="stack")
    viewer.dims.set_current_step(0, 1)
    widget = InteractiveWidget(viewer)
    viewer.window.add_dock_widget(widget, name="promptseg interactive")
    assert widget.channel_combo.count() == 2 and widget.channel_combo.currentData() is None  # offered, left at none
    widget.new_prompt_layers()
    widget.shapes_picker.layer().add_rectangles(
        np.array([[1, r0, c0], [1, r0, c1 - 1], [1, r1 - 1, c1 - 1], [1, r1 - 1, c0]])
    )
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    start = len(notification_manager.records)
    widget.propagate()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    warnings = _messages_since(start, NotificationSeverity.WARNING)
    assert not [message for message in warnings if "channel" in message], warnings
    labels = viewer.layers["stack propagated"].data
    assert all(dice(plane > 0, truth == largest.label) > 0.6 for plane in labels)


@pytest.mark.parametrize("mode", ["single region", "many instances"])
def test_a_reference_layer_with_nan_is_refused_naming_the_layer(make_viewer, qtbot, mode):
    """A float reference with NaN (outside a registered or deconvolved field of view): the One-shot widget said
    'reference: contains NaN or infinite values', naming no layer (the target's refusal names its layer)."""
    from napari_promptseg._sample_data import nuclei
    from napari_promptseg._widgets.oneshot import OneShotWidget

    (image, _, _), (truth, _, _) = nuclei()
    with_nan = image.astype(np.float32)
    with_nan[:4, :4] = np.nan
    viewer = make_viewer()
    widget = OneShotWidget(viewer)
    viewer.window.add_dock_widget(widget, name="one-shot")
    widget.reference.set_layer(viewer.add_image(with_nan, name="deconvolved"))
    widget.reference_labels.set_layer(viewer.add_labels(truth, name="nuclei labels"))
    widget.target.set_layer(viewer.add_image(image, name="target"))
    widget.mode.setCurrentText(mode)
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    status = widget.runner.widget.status.text()
    assert widget.runner.state == "failed" and "reference image layer 'deconvolved': contains NaN" in status, status
    assert "target one-shot" not in viewer.layers
