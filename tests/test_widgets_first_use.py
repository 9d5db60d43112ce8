"""What a newcomer meets first, in a real napari viewer (issue 14): every widget docks on an empty viewer without an
error; no image is a normal state said quietly in the status line; a failed run says "failed" (not the last progress
message) and drops the previous run's summary; long errors are short in the toast with the details one click away.

Run under a display: ``xvfb-run -a python -m pytest tests/test_widgets_first_use.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from napari_promptseg._sample_data import nuclei
from napari_promptseg._widgets.interactive import InteractiveWidget
from napari_promptseg._widgets.oneshot import OneShotWidget
from napari_promptseg._widgets.registration import RegistrationWidget
from napari_promptseg._widgets.text import TextPromptWidget

pytestmark = pytest.mark.gui
RUN_MS = 300_000
TOAST_MAX = 240  # characters: a sentence, not a page of file lists
WIDGETS = (InteractiveWidget, OneShotWidget, RegistrationWidget, TextPromptWidget)


@pytest.fixture
def notifications():
    """Every notification dispatched during the test, as (severity, message, actions)."""
    seen: list[tuple[NotificationSeverity, str, tuple]] = []

    def record(n) -> None:
        seen.append((n.severity, n.message, tuple(n.actions)))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


def _errors(seen) -> list[str]:
    return [message for severity, message, _ in seen if severity >= NotificationSeverity.ERROR]


def _settle(qtbot, widget, ms: int = 1500) -> None:
    """Let debounce timers fire and any work they start finish."""
    qtbot.wait(ms)
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)


@pytest.mark.parametrize("widget_class", WIDGETS, ids=lambda c: c.__name__)
def test_every_widget_docks_on_an_empty_viewer_without_an_error(make_viewer, qtbot, notifications, widget_class):
    viewer = make_viewer()
    widget = widget_class(viewer)
    viewer.window.add_dock_widget(widget, name=widget_class.__name__)
    _settle(qtbot, widget)
    assert _errors(notifications) == []
    assert widget.runner.state == "ready"
    if widget_class is InteractiveWidget:  # the one widget that acts on its own: it says why it waits
        assert "no image layer" in widget.runner.widget.status.text()


def test_every_widget_fits_a_laptop_screen_with_its_run_button_and_status_in_view(make_viewer, qtbot):
    """napari docks a widget at the height of all its controls: the Interactive widget's (769 px at least) held the
    window at that height and put its Commit button and status line below a laptop screen's edge. The controls now
    scroll, under a run button and run/status panel that stay in view, and ask for their whole height where there is
    room; the dock is never narrower than the rows (an advanced section opened widens it)."""
    from qtpy.QtWidgets import QScrollArea

    from napari_promptseg._widgets.train_text import TrainTextWidget

    viewer = make_viewer(show=True)  # a hidden window lays nothing out again when a section opens
    for widget_class in (*WIDGETS, TrainTextWidget):
        widget = widget_class(viewer)
        viewer.window.add_dock_widget(widget, name=widget_class.__name__)
        scroll = widget.findChild(QScrollArea)
        controls = scroll.widget()
        assert widget.minimumSizeHint().height() < 250, widget_class.__name__
        assert widget.sizeHint().height() >= controls.sizeHint().height(), "all of them where there is room"
        pinned = [widget.runner.widget, getattr(widget, "run_button", None) or getattr(widget, "train_button", None)]
        for control in filter(None, pinned):
            assert not scroll.isAncestorOf(control), f"{widget_class.__name__}: {control} scrolls away"
        if hasattr(widget, "advanced"):  # opened, its rows are as wide as they need
            before = controls.minimumSizeHint().height()
            widget.advanced.set_open(True)
            qtbot.waitUntil(lambda c=controls, h=before: c.minimumSizeHint().height() > h)
        beside = scroll.verticalScrollBar().sizeHint().width()
        assert scroll.minimumSizeHint().width() >= controls.minimumSizeHint().width() + beside, widget_class.__name__


def test_interactive_removing_the_image_is_quiet(make_viewer, qtbot, notifications):
    viewer = make_viewer()
    (image, meta, _), _ = nuclei()
    layer = viewer.add_image(image, **meta)
    widget = InteractiveWidget(viewer)
    viewer.window.add_dock_widget(widget, name="interactive")
    widget.auto_embed_check.setChecked(False)
    widget.new_prompt_layers()
    viewer.layers[widget.shapes_picker.layer().name].add_rectangles(np.array([[20.0, 20.0], [60.0, 60.0]]))
    _settle(qtbot, widget, 600)
    viewer.layers.remove(layer)
    _settle(qtbot, widget)
    viewer.layers[widget.shapes_picker.layer().name].add_rectangles(np.array([[70.0, 70.0], [90.0, 90.0]]))
    _settle(qtbot, widget)  # a prompt drawn without an image waits quietly too
    assert _errors(notifications) == []
    assert "no image layer" in widget.runner.widget.status.text()
    widget.new_prompt_layers()  # buttons without an image say so in the status line too
    widget.compute_embedding()
    assert _errors(notifications) == [] and "no image layer" in widget.runner.widget.status.text()


def test_registration_failure_replaces_progress_and_previous_summary(make_viewer, qtbot, notifications):
    """A failed run must not look like a running one (status 'failed: ...') nor keep the last run's summary."""
    viewer = make_viewer()
    (image, _, _), _ = nuclei()
    widget = RegistrationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="registration")
    widget.fixed_picker.set_layer(viewer.add_image(image, name="fixed"))
    widget.moving_picker.set_layer(viewer.add_image(np.roll(image, (6, -4), (0, 1)), name="moving"))
    widget.method.setCurrentText("intensity")
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    assert widget.runner.state == "done" and "intensity" in widget.summary.text()
    # the prompt method with a text prompt and an empty library (and no text-model weights) fails in the worker
    widget.method.setCurrentText("prompts")
    widget.text_prompts.setText("kidney")
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    status = widget.runner.widget.status.text()
    assert widget.runner.state == "failed" and status.startswith("failed: "), status
    assert widget.summary.text() == ""
    errors = _errors(notifications)
    assert len(errors) == 1 and len(errors[0]) <= TOAST_MAX, errors  # a short toast ...
    actions = [a for severity, _, a in notifications if severity >= NotificationSeverity.ERROR][0]
    assert [name for name, _ in actions] == ["Details…"]  # ... with the details one click away
    assert "promptseg library add" in widget.runner.widget.details  # where to look, in the panel's details too
    assert widget.runner.widget.details_button.isVisibleTo(widget)
    box = widget.runner.widget.show_details()
    assert "promptseg library add" in box.informativeText()
    box.close()


def test_oneshot_failure_replaces_progress(make_viewer, qtbot, notifications, tmp_path):
    viewer = make_viewer()
    (image, meta, _), (truth, truth_meta, _) = nuclei()
    widget = OneShotWidget(viewer)
    viewer.window.add_dock_widget(widget, name="one-shot")
    widget.reference.set_layer(viewer.add_image(image, **meta))
    widget.reference_labels.set_layer(viewer.add_labels(truth == truth.max(), name="one nucleus"))
    (tmp_path / "broken.png").write_bytes(b"not a png")  # fails in the worker, after "loading model"
    widget.target.set_layer(None)
    widget.folder.setText(str(tmp_path))
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    status = widget.runner.widget.status.text()
    assert widget.runner.state == "failed" and status.startswith("failed: one-shot"), status
    assert "broken.png" in status and len(_errors(notifications)) == 1


def test_text_failure_replaces_progress_and_route(make_viewer, qtbot, notifications, tmp_path):
    from napari_promptseg.io.library import ReferenceLibrary

    library = ReferenceLibrary.open(tmp_path / "library")
    (image, meta, _), (truth, _, _) = nuclei()
    library.add("nucleus", image, truth > 0, "cell nuclei in fluorescence", instances=True)
    viewer = make_viewer()
    widget = TextPromptWidget(viewer)
    viewer.window.add_dock_widget(widget, name="text")
    widget.image.set_layer(viewer.add_image(image, **meta))
    widget.library.setText(str(library.path))
    widget.prompt.setText("nuclei")
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    assert widget.runner.state == "done" and "route: library" in widget.route_label.text()
    widget.library.setText(str(tmp_path / "empty"))  # an empty library: the run fails in the worker
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    status = widget.runner.widget.status.text()
    assert widget.runner.state == "failed" and status.startswith("failed: text prompt 'nuclei'"), status
    assert "loading" not in status and widget.route_label.text() == ""


def test_text_widget_offers_what_the_route_uses_and_adds_exemplars(make_viewer, qtbot, notifications, tmp_path):
    """No GroundingDINO/CLIPSeg weights (the isolated cache): the library answers, so templates, thresholds and
    'model sees' are hidden; an exemplar is one button away from the image and Labels layers."""
    from napari_promptseg.io.library import ReferenceLibrary

    viewer = make_viewer()
    widget = TextPromptWidget(viewer)
    viewer.window.add_dock_widget(widget, name="text")
    assert widget.effective_route == "library"
    for hidden in (widget.template, widget.expanded, widget.box_threshold, widget.heatmap_threshold, widget.refine):
        assert not hidden.isVisibleTo(widget)
    assert widget.library.isVisibleTo(widget) and widget.add_exemplar_button.isVisibleTo(widget)
    widget.route.setCurrentText("clipseg")  # chosen explicitly: its options appear
    assert widget.heatmap_threshold.isVisibleTo(widget) and widget.expanded.isVisibleTo(widget)
    assert not widget.box_threshold.isVisibleTo(widget)
    # "Add exemplar" writes into the library field whatever route answers: it was hidden with another route
    assert widget.library.isVisibleTo(widget) and not widget.top_k.isVisibleTo(widget)
    widget.route.setCurrentText("auto")

    (image, meta, _), (truth, _, _) = nuclei()
    widget.image.set_layer(viewer.add_image(image, **meta))
    widget.exemplar_labels.set_layer(viewer.add_labels(truth, name="my nuclei"))
    widget.prompt.setText("nuclei")
    widget.exemplar_instances.setChecked(True)
    widget.library.setText(str(tmp_path / "library"))
    assert widget.add_exemplar()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    entry = widget.last_exemplar
    assert entry is not None and entry.name == "nuclei" and entry.instances
    assert [e.name for e in ReferenceLibrary.open(tmp_path / "library").entries] == ["nuclei"]
    assert _errors(notifications) == [] and "saved exemplar 'nuclei'" in widget.runner.widget.status.text()
