"""The shared run/status helper (:class:`TaskRunner`) when its widget is deleted: real promptseg widgets, real Qt
deletion and garbage collection, in a process of their own (the failure was a segfault of the whole process).

Run under a display: ``xvfb-run -a python -m pytest tests/test_widget_common_tasks.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.gui
REPO = Path(__file__).resolve().parents[1]


def test_a_widget_deleted_after_its_wrapper_was_collected_cancels_its_task_and_does_not_crash():
    """CI crashed (segfault) in about one full run of four, in the runner's ``destroyed`` handler, while a later test
    waited for its worker: pytest-qt closed a Train text widget with ``deleteLater`` (Qt then owns it), the garbage
    collector freed its Python wrapper (widgets sit in reference cycles), PyQt let go of the handler, a Python
    function, yet kept it connected, and Qt's deferred deletion then ran freed memory. Now the process lives on, and
    a widget deleted while its task runs stops the task (its cancel check says so)."""
    script = textwrap.dedent(
        """
        import gc
        import threading
        import time

        import napari
        from qtpy.QtCore import QEvent, QThreadPool
        from qtpy.QtWidgets import QApplication

        from napari_promptseg._widgets.train_text import TrainTextWidget
        from napari_promptseg.errors import CancelledError

        viewer = napari.Viewer(show=False)
        app = QApplication.instance()
        started, stopped = threading.Event(), []

        def slow(progress, cancel):
            started.set()
            deadline = time.monotonic() + 60
            while not cancel() and time.monotonic() < deadline:
                progress(0.5, "working")
                time.sleep(0.01)
            stopped.append("by its cancel check" if cancel() else "at its 60 s deadline")
            raise CancelledError("cancelled")

        idle, busy = TrainTextWidget(viewer), TrainTextWidget(viewer)
        assert busy.runner.submit("slow", "slow task", slow, print)
        assert started.wait(30)
        for widget in (idle, busy):
            widget.close()
            widget.deleteLater()  # as pytest-qt's teardown does: Qt owns it from now on
        del idle, busy, widget
        gc.collect()  # frees the Python wrappers; the C++ widgets live until the deferred deletion
        print("collected", flush=True)
        QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)
        print("deleted", flush=True)
        pool = QThreadPool.globalInstance()
        deadline = time.monotonic() + 90
        while pool.activeThreadCount() and time.monotonic() < deadline:
            app.processEvents()
            time.sleep(0.02)
        app.processEvents()
        print("task stopped", *stopped, flush=True)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-X", "faulthandler", "-c", script]  # a crash shows its stack in the failure
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit code {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert "collected\ndeleted\ntask stopped by its cancel check\n" in proc.stdout, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


def test_both_weights_fields_choose_a_checkpoint_with_one_dialog(qtbot, monkeypatch):
    """The segmenter's weights file field and the text weights field open the same checkpoint dialog
    (``choose_checkpoint``: the registry's suffixes, or any file) and take the file chosen; a cancelled dialog
    leaves them as they were."""
    from qtpy.QtWidgets import QFileDialog

    from napari_promptseg._widgets._common.controls import SegmenterBox
    from napari_promptseg._widgets._common.text_route import TextWeightsField
    from napari_promptseg.models.registry import CHECKPOINT_SUFFIXES

    asked: list[tuple[str, str, str]] = []
    answer = ["/data/model.pth"]

    def dialog(parent, title, start, patterns):
        asked.append((title, start, patterns))
        return answer[0], patterns

    monkeypatch.setattr(QFileDialog, "getOpenFileName", dialog)
    box, text_field = SegmenterBox(), TextWeightsField()
    qtbot.addWidget(box)
    qtbot.addWidget(text_field)
    box.weights_file._browse()
    text_field._browse_file()
    assert (box.weights_file.text, text_field.text) == ("/data/model.pth", "/data/model.pth")
    patterns = " ".join(f"*{suffix}" for suffix in CHECKPOINT_SUFFIXES)
    assert [a[2] for a in asked] == [f"Checkpoints ({patterns});;All files (*)"] * 2
    assert asked[0][0] == f"Weights file of {box.model_name}" and asked[1][0] == "Text model weights file"
    answer[0] = ""  # cancelled: the fields keep their files
    box.weights_file._browse()
    text_field._browse_file()
    assert asked[-1][1] == "/data/model.pth"  # the dialog opens at the file given
    assert (box.weights_file.text, text_field.text) == ("/data/model.pth", "/data/model.pth")
