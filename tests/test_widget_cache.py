"""The widgets use the disk embedding cache when $PROMPTSEG_EMBEDDING_CACHE names one: the Interactive widget in a
real napari viewer writes the embedding of the image it encodes and reads it back when its memory no longer has it.
Run under a display: ``xvfb-run -a python -m pytest tests/test_widget_cache.py``."""

from __future__ import annotations

import numpy as np
import pytest
from napari.qt.threading import WorkerBase

from napari_promptseg._sample_data import nuclei
from napari_promptseg._widgets.interactive import InteractiveWidget
from napari_promptseg.models import embedding_cache, load_segmenter

pytestmark = pytest.mark.gui


def test_interactive_widget_writes_and_reads_the_disk_cache(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTSEG_EMBEDDING_CACHE", str(tmp_path / "embeddings"))
    (image, _, _), _ = nuclei()
    viewer = make_napari_viewer()
    viewer.add_image(np.ascontiguousarray(image[::-1, ::-1]), name="nuclei")  # pixels no other test embeds
    widget = InteractiveWidget(viewer)
    viewer.window.add_dock_widget(widget, name="promptseg interactive")
    try:
        qtbot.waitUntil(lambda: widget.is_idle, timeout=240_000)  # the image is embedded as soon as it is chosen
        disk = embedding_cache.active()
        assert disk is not None and disk.root == tmp_path / "embeddings"
        assert disk.stored == 1 and len(disk.entries()) == 1
        load_segmenter(widget.model_name, device=widget.device).cache.clear()  # as after a restart
        widget.compute_embedding()
        qtbot.waitUntil(lambda: widget.is_idle, timeout=60_000)
        assert disk.hits == 1 and disk.stored == 1
    finally:
        WorkerBase.await_workers(msecs=120_000)
