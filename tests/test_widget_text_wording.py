"""The widgets' words for a stack agree: the Text widget's summary counts a time-lapse's frames as the One-shot
widget's does. Real nuclei (the bundled DSB2018 sample)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_promptseg._sample_data import nuclei
from napari_promptseg._widgets.oneshot.results import OneShotOutput, result_summary
from napari_promptseg._widgets.text_results import TextOutput
from napari_promptseg.methods.text import TextResult

pytestmark = pytest.mark.gui


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
