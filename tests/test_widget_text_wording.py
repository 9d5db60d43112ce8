"""The widgets' words and layers for a stack agree: the Text widget's summary counts a time-lapse's frames as the
One-shot widget's does, and the Interactive widget's preview carries the image's axis labels as its result layers
do. Real nuclei (the bundled DSB2018 sample) and the real LiteMedSAM."""

from __future__ import annotations

import numpy as np
import pytest

from napari_promptseg._sample_data import nuclei
from napari_promptseg._widgets.interactive import PREVIEW_NAME, InteractiveWidget
from napari_promptseg._widgets.oneshot.results import OneShotOutput, result_summary
from napari_promptseg._widgets.text_results import TextOutput
from napari_promptseg.methods.text import TextResult

pytestmark = pytest.mark.gui

FIRST_RUN_MS = 240_000


@pytest.fixture(scope="module")
def frames():
    """A time-lapse of three frames of the bundled nuclei, and their (moved) ground-truth labels."""
    (image, _, _), (truth, _, _) = nuclei()
    image, truth = image[:128, :128], truth[:128, :128]
    return np.stack([np.roll(image, 2 * t, axis=1) for t in range(3)]), np.stack(
        [np.roll(truth, 2 * t, axis=1) for t in range(3)]
    )


@pytest.mark.parametrize(
    ("stack_axis", "words"), [("t", "3 frame(s) of one time-lapse"), (None, "3 plane(s) of one stack")]
)
def test_the_text_summary_counts_a_stacks_planes_in_the_one_shot_summarys_words(frames, stack_axis, words):
    """The Text widget said '12 object(s) in the stack's 3 frames' where the One-shot widget says '12 object(s) in
    3 frame(s) of one time-lapse' of the same stack: one wording, composed by one helper, for both."""
    _, labels = frames
    results = [TextResult(plane, "library", "the reference library answers", "nuclei", ["nuclei"]) for plane in labels]
    text = TextOutput(results, stacked=True, stack_labels=labels, stack_axis=stack_axis)
    empty = [np.zeros((0, 2))] * 3
    oneshot = OneShotOutput(list(labels), empty, empty, ["a", "b", "c"], stacked=True, stack_axis=stack_axis)
    objects = len(np.unique(labels)) - 1
    assert f"{objects} object(s) in {words}" in result_summary(oneshot)
    assert text.summary.endswith(f"\n{objects} object(s) in {words}, ids linked across them"), text.summary


def test_the_preview_of_a_time_lapse_carries_its_axis_labels(make_viewer, qtbot, frames):
    """A time-lapse's committed and propagated labels take its axis labels (t, y, x), its live preview had napari's
    (-3, -2, -1): two sets of axes in the viewer's dims while prompting. The preview takes the image's, and a
    preview reused for an image with napari's own labels takes those again."""
    movie, truth = frames
    viewer = make_viewer()
    layer = viewer.add_image(movie, name="cine", axis_labels=("t", "y", "x"))
    widget = InteractiveWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_picker.set_layer(layer)
    viewer.dims.set_current_step(0, 1)
    qtbot.waitUntil(lambda: widget.is_idle, timeout=FIRST_RUN_MS)
    widget.new_prompt_layers()
    rows, cols = np.nonzero(truth[1] == np.bincount(truth[1].ravel())[1:].argmax() + 1)
    r0, c0, r1, c1 = rows.min(), cols.min(), rows.max(), cols.max()
    widget.shapes_picker.layer().add_rectangles(np.array([[1, r0, c0], [1, r0, c1], [1, r1, c1], [1, r1, c0]]))
    qtbot.waitUntil(lambda: widget.is_idle and widget.preview is not None, timeout=FIRST_RUN_MS)
    preview = viewer.layers[PREVIEW_NAME]
    assert preview.data[0].any()
    assert tuple(preview.axis_labels) == ("t", "y", "x")

    plain = viewer.add_image(movie[:, ::-1].copy(), name="mirrored")  # napari's own axis labels
    widget.image_picker.set_layer(plain)
    qtbot.waitUntil(lambda: widget.is_idle and widget.preview is not None, timeout=FIRST_RUN_MS)
    assert widget.preview.geom.image_name == "mirrored" and viewer.layers[PREVIEW_NAME] is preview
    assert tuple(preview.axis_labels) == tuple(plain.axis_labels)
