"""The Interactive widget in a real napari viewer with the real LiteMedSAM model. The widget's runs: the task runner
(cancel, errors), scripts that close the viewer or the dock mid-run, and model weights (downloaded with progress and
cancel, listed once there, a weights file given).

Run under a display: ``xvfb-run -a python -m pytest tests/test_widget_interactive_runs.py``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager
from qtpy.QtCore import Qt

from napari_promptseg.errors import CancelledError, PromptsegError

from .conftest import REPO
from .interactive_widget import (
    FIRST_RUN_MS,
    MIN_DICE,
    add_widget,
    dice,
    preview_layer,
    records_since,
    wait_idle,
)

if TYPE_CHECKING:
    from napari_promptseg.models.registry import ModelCard

pytestmark = pytest.mark.gui


def test_task_runner_cancel_and_errors(make_viewer, qtbot):
    """The cancel button stops a running worker; a task's error becomes a notification, not an exception."""
    viewer = make_viewer()
    widget = add_widget(viewer)  # no image: nothing is embedded
    runner = widget.runner
    results, stopped_by_cancel = [], []

    def endless(progress, cancel):
        progress(0.5, "working")
        while not cancel():
            time.sleep(0.01)
        stopped_by_cancel.append(True)
        raise CancelledError("cancelled at step 7; resume from /runs/last")  # what a training run says

    first = len(notification_manager.records)
    runner.submit("long", "long task", endless, results.append)
    runner.submit("next", "queued task", lambda progress, cancel: 1, results.append)
    qtbot.waitUntil(lambda: runner.widget.bar.value() == 50, timeout=10_000)
    assert runner.widget.cancel_button.isEnabled()
    qtbot.mouseClick(runner.widget.cancel_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not runner.busy, timeout=10_000)
    assert stopped_by_cancel == [True]
    assert results == [], "neither the cancelled task's result nor the queued task may arrive"
    # what the task said beyond "cancelled" (where a training run resumes from) is kept
    assert "long task: cancelled (at step 7; resume from /runs/last)" in records_since(first, NotificationSeverity.INFO)
    assert not runner.widget.cancel_button.isEnabled()

    def bad_input(progress, cancel):
        raise PromptsegError("image layer 'x': something the user can fix")

    first = len(notification_manager.records)
    runner.submit("bad", "bad task", bad_input, results.append)
    qtbot.waitUntil(lambda: not runner.busy, timeout=10_000)
    assert records_since(first, NotificationSeverity.ERROR) == ["bad task: image layer 'x': something the user can fix"]
    runner.submit("good", "good task", lambda progress, cancel: 42, results.append)
    qtbot.waitUntil(lambda: not runner.busy, timeout=10_000)
    assert results == [42]


def test_a_script_that_closes_its_viewer_mid_embedding_exits_cleanly():
    """A script that closed its viewer while the auto-embedding ran, then ended, was aborted by Qt (exit code 134):
    Python's exit deleted the worker's signals while the task still ran, and its last signal raised RuntimeError
    ('wrapped C/C++ object of type WorkerBaseSignals has been deleted') in a Qt thread. A process of its own: the
    failure was the abort of the whole process."""
    script = textwrap.dedent(
        """
        import napari
        from napari_promptseg._sample_data import nuclei
        from napari_promptseg._widgets.interactive import InteractiveWidget

        viewer = napari.Viewer(show=False)
        viewer.add_image(nuclei()[0][0], name="nuclei")
        widget = InteractiveWidget(viewer)
        viewer.window.add_dock_widget(widget, name="promptseg interactive")
        print("running:", widget.runner.running_key, flush=True)  # the embedding loads the model: seconds
        viewer.close()
        print("closed", flush=True)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240)
    assert "running: embed\nclosed" in proc.stdout, proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "QThread: Destroyed" not in proc.stderr, proc.stderr


def test_a_script_that_closes_the_dock_after_an_embedding_exits_cleanly():
    """A script whose Interactive widget had run its embedding, then whose dock was closed, crashed at its end in
    about one run of four (exit code 139, in PyQt's exit clean-up). napari's dock close leaves the widget without a
    parent, so PyQt's exit clean-up deleted it while walking its map of Python wrappers, and the Python code the
    deletion runs (the runner's event filter and ``destroyed`` handler, napari's application event filter) could
    reorganise that map under the walk. The crash depends on the map's state, so the exit code alone rarely shows it;
    the deletion by promptseg's own exit handler, before PyQt's clean-up, shows the fix in every run (two runs)."""
    script = textwrap.dedent(
        """
        import atexit
        import time

        from qtpy import sip
        from qtpy.QtWidgets import QApplication  # PyQt's exit clean-up is registered: later handlers run before it

        widget = None
        # registered before promptseg's own exit handler, so it runs after it and before PyQt's clean-up
        atexit.register(lambda: print("deleted before Qt's clean-up:", sip.isdeleted(widget), flush=True))

        import napari
        from napari_promptseg._sample_data import nuclei
        from napari_promptseg._widgets.interactive import InteractiveWidget

        viewer = napari.Viewer(show=False)
        viewer.add_image(nuclei()[0][0], name="nuclei")
        widget = InteractiveWidget(viewer)
        dock = viewer.window.add_dock_widget(widget, name="promptseg interactive")
        app = QApplication.instance()
        start = time.monotonic()
        while (widget.runner.busy or widget.runner.state != "done") and time.monotonic() - start < 120:
            app.processEvents()
            time.sleep(0.05)
        print("embedding:", widget.runner.state, flush=True)
        viewer.window.remove_dock_widget(dock)
        app.processEvents()
        print("dock closed", flush=True)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    outcomes = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240)
        assert "embedding: done\ndock closed" in proc.stdout, proc.stdout + proc.stderr
        outcomes.append((proc.returncode, "Traceback" in proc.stderr, proc.stdout.splitlines()[-1]))
    assert all(code == 0 and not traceback for code, traceback, _ in outcomes), outcomes
    assert all(last == "deleted before Qt's clean-up: True" for _, _, last in outcomes), outcomes


@contextlib.contextmanager
def _served_card(
    monkeypatch: pytest.MonkeyPatch,
    handler: type[BaseHTTPRequestHandler],
    owner: object,
    base: str,
    name: str,
    **changes,
) -> Iterator[ModelCard]:
    """A copy of the registry's ``base`` card, named ``name``, whose weights a loopback server sends (``handler``,
    with ``owner`` as its server's), downloads allowed; the server stops after the block."""
    import dataclasses

    from napari_promptseg.models import MODELS, registry

    from .fake_hub import serve

    server, thread = serve(handler, owner)
    host, port = server.server_address[:2]
    card = dataclasses.replace(
        MODELS[base], name=name, filename=f"{name}.pth", url=f"http://{host}:{port}/{name}.pth", **changes
    )
    monkeypatch.setitem(MODELS, card.name, card)
    monkeypatch.delenv(registry.OFFLINE_ENV, raising=False)
    try:
        yield card
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class _SlowWeights(BaseHTTPRequestHandler):
    """A checkpoint of 64 MiB sent at 1 MiB every 0.2 s: a download the user watches, then cancels."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.send_header("Content-Length", str(64 * 2**20))
        self.end_headers()
        try:
            for _ in range(64):
                self.wfile.write(bytes(2**20))
                self.server.owner.append(2**20)  # type: ignore[attr-defined]
                time.sleep(0.2)
        except OSError:  # the client hung up: the cancel
            pass

    def log_message(self, *args: object) -> None:
        pass


def test_a_weights_download_shows_its_megabytes_and_the_cancel_button_stops_it(
    make_viewer, qtbot, nuclei_sample, monkeypatch
):
    """A model whose weights are not here downloads when first used (SAM ViT-H: 2.5 GB): the run panel says how
    many MB have arrived, and Cancel stops the download at its next block instead of after the whole file; nothing
    that could pass for the weights is left in the cache, only the partial file the next run resumes, and the model
    box says so."""
    from napari_promptseg.models import registry

    sent: list[int] = []
    with _served_card(monkeypatch, _SlowWeights, sent, "sam_vit_b", "slow_sam") as card:
        viewer = make_viewer()
        viewer.add_image(nuclei_sample[0], name="nuclei")
        widget = add_widget(viewer)
        wait_idle(qtbot, widget, FIRST_RUN_MS)  # the bundled model's auto-embedding of the new image
        widget.model_combo.setCurrentIndex(widget.model_combo.findData(card.name))
        panel = widget.runner.widget
        qtbot.waitUntil(lambda: "downloading slow_sam: 2 of 64 MB" in panel.status.text(), timeout=30_000)
        assert 0 < panel.bar.value() < 10
        qtbot.mouseClick(panel.cancel_button, Qt.LeftButton)
        wait_idle(qtbot, widget)
        assert panel.state == "cancelled" and panel.status.text() == "embedding 'nuclei': cancelled"
        assert sum(sent) < 32 * 2**20  # stopped at a block, not after the file
        cache = registry.cache_dir()
        assert [p.name for p in cache.iterdir()] == [f"{card.filename}.part"]
        index = widget.model_combo.findData(card.name)
        assert widget.model_combo.itemText(index) == "slow_sam (download stopped: a run resumes it)"


class _ServedCheckpoint(BaseHTTPRequestHandler):
    """Serves the bundled LiteMedSAM checkpoint's bytes, as a weights server would a model not yet downloaded."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.server.owner.read_bytes()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_model_downloaded_by_a_run_is_no_longer_listed_as_missing(make_viewer, qtbot, nuclei_sample, monkeypatch):
    """The model list said 'sam_vit_b (weights missing)' when the widget opened, and still said so after a run
    had downloaded the weights and segmented with them."""
    from napari_promptseg.models import registry, resolve_weights

    bundled = resolve_weights("litemedsam")
    with _served_card(
        monkeypatch, _ServedCheckpoint, bundled, "litemedsam", "served_litemedsam", package_resource=None
    ) as card:
        viewer = make_viewer()
        viewer.add_image(nuclei_sample[0], name="nuclei")
        widget = add_widget(viewer)
        wait_idle(qtbot, widget, FIRST_RUN_MS)
        index = widget.model_combo.findData(card.name)
        assert widget.model_combo.itemText(index) == "served_litemedsam (weights missing)"
        widget.model_combo.setCurrentIndex(index)  # the image is embedded again with it: the download
        wait_idle(qtbot, widget, FIRST_RUN_MS)
        assert widget.runner.widget.state == "done"
        assert (registry.cache_dir() / card.filename).is_file()
        assert widget.model_combo.itemText(index) == "served_litemedsam"


def test_a_model_downloaded_by_another_widgets_run_is_no_longer_listed_as_missing(make_viewer, qtbot, monkeypatch):
    """The model list was refreshed after the Interactive widget's own runs only: a model another widget's run had
    downloaded (a One-shot or Registration run's segmenter) stayed '(weights missing)'."""
    from qtpy.QtWidgets import QWidget

    from napari_promptseg._widgets._common import TaskRunner, task_segmenter
    from napari_promptseg.models import resolve_weights

    bundled = resolve_weights("litemedsam")
    with _served_card(
        monkeypatch, _ServedCheckpoint, bundled, "litemedsam", "served_litemedsam", package_resource=None
    ) as card:
        widget = add_widget(make_viewer())  # no image: it runs nothing itself
        index = widget.model_combo.findData(card.name)
        assert widget.model_combo.itemText(index) == "served_litemedsam (weights missing)"
        other = QWidget()  # another widget's run panel, as One-shot and Registration load their segmenter
        runner = TaskRunner(other)
        runner.submit("load", "load model", lambda progress, cancel: task_segmenter(progress, cancel, card.name), print)
        qtbot.waitUntil(lambda: not runner.busy, timeout=FIRST_RUN_MS)
        assert runner.state == "done", runner.widget.status.text()
        assert widget.model_combo.itemText(index) == "served_litemedsam"
        other.deleteLater()


def test_a_weights_file_given_is_loaded_and_one_the_model_cannot_read_is_named(
    make_viewer, qtbot, nuclei_sample, tmp_path
):
    """The model box listed registry names only: a fine-tuned checkpoint (the CLI's --weights) could not be used
    from napari. A copy of the bundled LiteMedSAM file segments as the bundled weights do; that file truncated in
    place is loaded again (a changed file is not the model loaded before) and refused naming the file and the model,
    the layers left as they were; a file that does not exist is refused before any run starts."""
    from napari_promptseg.models import resolve_weights

    image, truth, label, (r0, c0, r1, c1) = nuclei_sample
    viewer = make_viewer()
    viewer.add_image(image, name="nuclei")
    widget = add_widget(viewer)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    viewer.add_shapes(name="boxes").add_rectangles(np.array([[r0, c0], [r1, c1]]))
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    bundled = preview_layer(viewer).data.copy()
    assert dice(bundled == 1, truth == label) > MIN_DICE

    weights = tmp_path / "fine_tuned.pth"
    checkpoint = resolve_weights("litemedsam").read_bytes()
    weights.write_bytes(checkpoint)
    box = widget.model_combo
    box.weights_file.set_path(str(weights))  # the image is embedded and previewed again, with the file
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    np.testing.assert_array_equal(preview_layer(viewer).data, bundled)

    weights.write_bytes(checkpoint[: len(checkpoint) // 2])  # a copy cut short
    layers = {layer.name: layer.data.copy() for layer in viewer.layers}
    first = len(notification_manager.records)
    widget.compute_embedding()
    wait_idle(qtbot, widget)
    panel = widget.runner.widget
    assert panel.state == "failed" and len(records_since(first, NotificationSeverity.ERROR)) == 1
    # the whole message: a long temporary path cuts the status line's short one
    said = panel.details or panel.status.text()
    assert f"litemedsam: {weights} is cut short ({len(checkpoint) // 2:,} bytes: its end is missing" in said, said
    assert {layer.name for layer in viewer.layers} == set(layers)
    for layer in viewer.layers:
        np.testing.assert_array_equal(layer.data, layers[layer.name])
    # the model list refreshed after the runs keeps the choice, and names where the chosen model's weights come from
    assert (box.model_name, box.weights_file.text) == ("litemedsam", str(weights))
    assert box.currentText() == "litemedsam (weights file)"

    missing = tmp_path / "missing.pth"
    box.weights_file.blockSignals(True)  # no preview of its own: the button's run is the one looked at
    box.weights_file.set_path(str(missing))
    box.weights_file.blockSignals(False)
    first = len(notification_manager.records)
    widget.compute_embedding()
    assert not widget.runner.busy  # refused before a task was started
    assert panel.state == "failed" and len(records_since(first, NotificationSeverity.ERROR)) == 1
    said = panel.details or panel.status.text()
    assert f"litemedsam: weights file {missing} does not exist" in said, said

    # the field's clear button empties it without Enter: the model's own weights at once, embedded again
    box.weights_file.edit.clear()
    assert box.currentText() == "litemedsam"
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    np.testing.assert_array_equal(preview_layer(viewer).data, bundled)
