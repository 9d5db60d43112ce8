"""The One-shot widget with several references (the CLI's repeated --reference, ``segment_like``'s lists): rows of
reference pairs added and removed, ensembled by vote or union, in a real napari viewer with real LiteMedSAM on shared
GlaS gland images of their own sizes and kinds.

Run under a display: ``xvfb-run -a python -m pytest tests/test_widget_oneshot_references.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_promptseg._widgets.oneshot import OneShotWidget, run_oneshot
from napari_promptseg.errors import PromptsegError
from napari_promptseg.io import read_image, read_mask
from napari_promptseg.methods.metrics import dice

from .conftest import dataset_pairs

pytestmark = pytest.mark.gui
RUN_MS = 600_000  # model load + two references over one target; the 2-core CPU is often shared


@pytest.fixture(scope="module")
def glands(shared_data):
    """Three GlaS images (RGB) with their gland masks, at half size (a fast run)."""
    pairs = dataset_pairs(shared_data / "glands_glas")[:3]
    return [(read_image(i)[::2, ::2], read_mask(m)[::2, ::2]) for i, m in pairs]


def _widget_with_two_references(viewer, glands, second_gray: bool = False) -> OneShotWidget:
    (ref, mask), (ref2, mask2), (target, _) = glands
    widget = OneShotWidget(viewer)
    widget.reference.set_layer(viewer.add_image(ref, name="gland A"))
    widget.reference_labels.set_layer(viewer.add_labels(mask.astype(np.uint8), name="glands A"))
    image2 = ref2.mean(axis=-1).astype(np.uint8) if second_gray else ref2  # a gray reference of another size
    image2 = image2[:-31, 17:]
    image_picker, labels_picker = widget.more_references.add_row()
    image_picker.set_layer(viewer.add_image(image2, name="gland B"))
    labels_picker.set_layer(viewer.add_labels(mask2[:-31, 17:].astype(np.uint8), name="glands B"))
    widget.target.set_layer(viewer.add_image(target, name="target"))
    widget.mode.setCurrentText("single region")
    return widget


def test_two_references_ensemble_as_segment_like_and_the_cli_do(make_viewer, qtbot, glands, litemedsam):
    """The widget took one reference: an ensemble over several references (the CLI's repeated --reference,
    segment_like's lists) could not be run from napari. Reference rows are added (and removed); a run ensembles them,
    the labels those of segment_like over the same references (a gray one of another size among them)."""
    from napari_promptseg import segment_like

    viewer = make_viewer()
    widget = _widget_with_two_references(viewer, glands, second_gray=True)
    widget.more_references.ensemble.setCurrentText("union")
    widget.run()
    qtbot.waitUntil(lambda: widget.runner.state != "running", timeout=RUN_MS)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    labels = viewer.layers["target one-shot"].data
    (ref, mask), (ref2, mask2), (target, truth) = glands
    gray2 = ref2.mean(axis=-1).astype(np.uint8)[:-31, 17:]
    expected = segment_like([ref, gray2], [mask, mask2[:-31, 17:]], target, segmenter=litemedsam, ensemble="union")
    assert np.array_equal(labels > 0, expected[0].mask)
    assert dice(labels > 0, truth) > 0.6
    assert "2 references, union" in widget.runner.widget.summary.text()


def test_reference_rows_are_checked_before_a_run_and_removed_rows_are_not_read(make_viewer, qtbot, glands):
    """A row without its layers, or many instances (one reference with its instance labels, as the CLI says) with
    several references, is refused naming the row or the mode; a removed row is no reference any more."""
    viewer = make_viewer()
    widget = _widget_with_two_references(viewer, glands)
    assert len(widget._inputs().more_references) == 1
    widget.mode.setCurrentText("many instances")
    with pytest.raises(PromptsegError, match="mode 'many instances' finds many instances, which take one reference"):
        widget._inputs()
    widget.mode.setCurrentText("auto")
    widget.partial_labels.setChecked(True)  # only some objects labelled: many instances too
    with pytest.raises(PromptsegError, match="'reference labels only some objects' finds many.*'single region'"):
        widget._inputs()
    widget.partial_labels.setChecked(False)
    widget.mode.setCurrentText("single region")
    image_picker, _ = widget.more_references.add_row()
    image_picker.set_layer(None)
    with pytest.raises(PromptsegError, match="reference 3: choose its image layer and its Labels layer"):
        widget._inputs()
    widget.more_references.remove_row(1)
    widget.more_references.remove_row(0)
    assert widget._inputs().more_references == [] and not widget.more_references.ensemble.isEnabled()
    qtbot.wait(50)  # the removed rows' pickers deleted: the viewer's layer events no longer reach them
    viewer.layers["gland B"].name = "gland B renamed"
    viewer.layers.remove("glands B")
    viewer.add_image(glands[2][0], name="another")
    picker, _ = widget.more_references.add_row()
    assert picker.layer() is not None and picker.findText("gland B renamed") >= 0


def test_many_objects_decided_from_the_labels_with_several_references_is_refused_saying_why(glands, litemedsam):
    """Mode auto decides many instances from the first reference's labels (several glands); with another reference
    that mode has no ensemble, as the CLI refuses it: said with the way on, not run on the first reference alone."""
    (ref, mask), (ref2, mask2), (target, _) = glands
    with pytest.raises(PromptsegError, match="labels 'glands A' hold several objects.*mode 'single region'"):
        run_oneshot(
            ref,
            mask.astype(np.uint8),
            [target],
            ["target"],
            stacked=False,
            strategy="sat",
            instances=None,
            more_references=[(ref2, mask2.astype(np.uint8))],
            reference_name="reference image layer 'gland A'",
            labels_name="glands A",
            segmenter=litemedsam,
            progress=lambda *_: None,
            cancel=lambda: False,
        )


def test_save_reference_to_library_saves_every_reference_as_one_set(make_viewer, qtbot, glands, tmp_path):
    """ "Save reference to library" with two references saved only the first; every reference is an exemplar of the
    name now (a prompt ensembles them), all or none, said with how many and their ids. A reference whose labels
    mark nothing leaves none of the others saved."""
    from napari_promptseg.io.library import ReferenceLibrary

    viewer = make_viewer()
    widget = _widget_with_two_references(viewer, glands, second_gray=True)
    widget.library.setText(str(tmp_path / "lib"))
    widget.library_name.setText("gland")
    image_picker, labels_picker = widget.more_references.add_row()  # a third reference, not labelled yet
    image_picker.set_layer(viewer.layers["gland A"])
    labels_picker.set_layer(viewer.add_labels(np.zeros(glands[0][1].shape, np.uint8), name="nothing yet"))
    assert widget.save_to_library()
    qtbot.waitUntil(lambda: widget.runner.state != "running", timeout=RUN_MS)
    assert widget.runner.state != "done" and "nothing yet" in widget.runner.widget.status.text()
    assert "gland" not in ReferenceLibrary.open(tmp_path / "lib").names()  # the two saved first were taken out

    widget.more_references.remove_row(1)
    assert widget.save_to_library()
    qtbot.waitUntil(lambda: widget.runner.state != "running", timeout=RUN_MS)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    saved = [e for e in ReferenceLibrary.open(tmp_path / "lib").entries if e.name == "gland"]
    assert [e.source for e in saved] == ["gland A", "gland B"]
    assert [e.id for e in widget.last_saved_set] == [e.id for e in saved] and widget.last_saved.id == saved[0].id
    assert saved[1].image().shape == saved[1].mask().shape  # the gray reference, as it is
    status = widget.runner.widget.status.text()
    assert "saved 2 exemplars of 'gland'" in status and all(e.id in status for e in saved), status
