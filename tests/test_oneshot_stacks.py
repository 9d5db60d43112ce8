"""One-shot on inputs beyond one 2D image, the same in Python, the CLI and the One-shot widget: time-lapses (T, Y, X)
and z-stacks, with real LiteMedSAM on crops of the Cell Tracking Challenge's HeLa frames (shared data).

Run under a display: ``xvfb-run -a python -m pytest tests/test_oneshot_stacks.py``.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import tifffile

from napari_promptseg.io import read_image

RUN_MS = 600_000
CROP = (slice(100, 356), slice(200, 456))  # 256 x 256 px of a 700 x 1100 frame: 8 labelled nuclei in frame 13


@pytest.fixture(scope="module")
def hela(shared_data):
    """The reference (frame 13 and its instance labels) and a time-lapse target: a frame with nothing like the
    reference (the background's noise) then frame 52, as (T, Y, X)."""
    folder = shared_data / "nuclei_ctc_fluo_instances"
    reference = read_image(folder / "images" / "N2DL-HeLa_t13.tif")[CROP]
    labels = read_image(folder / "labels" / "N2DL-HeLa_t13.tif")[CROP]
    frame = read_image(folder / "images" / "N2DL-HeLa_t52.tif")[CROP]
    background = reference[labels == 0]
    blank = np.random.default_rng(0).normal(background.mean(), background.std(), reference.shape)
    return reference, labels, np.stack([blank.astype(reference.dtype), frame])


@pytest.fixture(scope="module")
def cli_run(hela, tmp_path_factory):
    """`promptseg oneshot` on the time-lapse written as an ImageJ TYX TIFF: (its report record, its labels, what it
    wrote to stderr)."""
    import contextlib
    import io

    from napari_promptseg.cli import main

    reference, labels, frames = hela
    folder = tmp_path_factory.mktemp("timelapse")
    tifffile.imwrite(folder / "reference.tif", reference)
    tifffile.imwrite(folder / "nuclei.tif", labels)
    tifffile.imwrite(folder / "frames.tif", frames, imagej=True, metadata={"axes": "TYX"})
    references = ["--reference", str(folder / "reference.tif"), "--reference-mask", str(folder / "nuclei.tif")]
    out, said = folder / "out", io.StringIO()
    with contextlib.redirect_stderr(said):
        code = main(["oneshot", str(folder / "frames.tif"), *references, "-o", str(out), "--scheduler", "none"])
    assert code == 0, said.getvalue()
    record = json.loads((out / "report.json").read_text())["images"][0]
    return record, tifffile.imread(out / "frames.tif"), said.getvalue()


def test_a_time_lapses_frames_are_frames_in_the_clis_warnings(cli_run):
    """`promptseg oneshot` on a TYX time-lapse summed it up in frames but warned of 'frames.tif: plane 0: no object
    like the exemplars' and showed 'frames.tif plane 0: 0 objects' as it went: a plane the file has none of. Its
    report said no working scale (the widget's summary did: the size measured on the middle frame)."""
    record, labels, said = cli_run
    assert record["stack_axis"] == "t"
    assert record["working_scale"]["source"] == "measured on the time-lapse's middle frame", record["working_scale"]
    assert record["warnings"] == [f"{record['input']}: frame 0: no object like the exemplars was found"]
    assert "plane" not in said.replace("--plane", ""), said  # the progress lines shown (a few) and the warnings
    assert not labels[0].any() and len(np.unique(labels[1])) > 10


def test_a_time_lapses_objects_carried_from_frame_to_frame_stop_at_a_frame(tmp_path, hela, capsys):
    """`promptseg oneshot --propagate` on a TYX time-lapse: the report's stops read 'vanished at plane 0' and 'IoU
    with the previous plane ...', and the progress 'frames.tif: plane 0 (14 object(s), down from 1)'."""
    from napari_promptseg.cli import main

    reference, labels, frames = hela
    tifffile.imwrite(tmp_path / "reference.tif", reference)
    tifffile.imwrite(tmp_path / "nuclei.tif", labels)
    tifffile.imwrite(tmp_path / "frames.tif", frames, imagej=True, metadata={"axes": "TYX"})
    references = ["--reference", str(tmp_path / "reference.tif"), "--reference-mask", str(tmp_path / "nuclei.tif")]
    out = tmp_path / "out"
    command = ["oneshot", str(tmp_path / "frames.tif"), *references, "--propagate", "--plane", "1", "-o", str(out)]
    assert main([*command, "--scheduler", "none"]) == 0
    record = json.loads((out / "report.json").read_text())["images"][0]
    stops = [reason for sides in record["stops"].values() for reason in sides.values()]
    assert any(reason.endswith(" at frame 0") for reason in stops), stops
    assert not [reason for reason in stops if "plane" in reason], stops
    said = capsys.readouterr().err
    assert "plane" not in said.replace("--plane", ""), said


@pytest.mark.gui
def test_a_time_lapse_layers_frames_are_frames_in_the_widgets_progress_warnings_and_summary(
    make_viewer, qtbot, hela, cli_run
):
    """The One-shot widget on a time-lapse layer (its first axis labelled t) said 'frames plane 1: tile 1/1',
    'frames: plane 0: no object like the exemplars' and '2 plane(s) of one stack'; its frames are frames now, and
    its labels are the CLI's for the same frames."""
    from napari_promptseg._widgets.oneshot import OneShotWidget

    reference, labels, frames = hela
    viewer = make_viewer()
    widget = OneShotWidget(viewer)
    widget.reference.set_layer(viewer.add_image(reference, name="reference"))
    widget.reference_labels.set_layer(viewer.add_labels(labels, name="nuclei"))
    widget.target.set_layer(viewer.add_image(frames, name="frames", axis_labels=("t", "y", "x")))
    messages: list[str] = []
    widget.runner._progressed.connect(lambda job, fraction, message: messages.append(message))
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    warnings = widget.last_output.warnings
    assert any("frame 0: no object like the exemplars was found" in w for w in warnings), warnings
    summary = widget.runner.widget.summary.text()
    assert "in 2 frame(s) of one time-lapse; working scale 1.0 (measured on the time-lapse's middle frame)" in summary
    assert any(m.startswith("frames frame 1: ") for m in messages), messages
    assert not [m for m in [*messages, *warnings, summary] if "plane" in m], (messages, warnings, summary)
    np.testing.assert_array_equal(viewer.layers["frames one-shot"].data, cli_run[1])
    # its layers' axes are the time-lapse's t, y, x (they were -3, -2, -1)
    assert viewer.layers["frames one-shot"].axis_labels == ("t", "y", "x")
    assert viewer.layers["frames one-shot prompts"].axis_labels == ("t", "y", "x")


def test_results_placed_over_a_layer_take_its_axis_labels_but_not_its_channel_axis(hela):
    """Every widget's results are placed over the image layer with `placement`, which gave them its scale and units
    but not its axis labels: a time-lapse's results had axes -3, -2, -1 beside its t, y, x. They take the labels of
    the axes they have (a (T, C, Y, X) layer's labels: t, y, x); a layer of napari's default labels gives none."""
    import napari.layers

    from napari_promptseg._widgets._common import placement

    _, _, frames = hela
    tcyx = napari.layers.Image(np.stack([frames, frames], axis=1), axis_labels=("t", "c", "y", "x"), units="µm")
    placed = placement(tcyx, 3, channel_axis=1)
    assert placed["axis_labels"] == ("t", "y", "x") and placed["units"] == ("micrometer",) * 3, placed
    napari.layers.Labels(np.zeros(frames.shape, np.uint32), **placed)  # napari takes them
    assert "axis_labels" not in placement(napari.layers.Image(np.stack([frames, frames])), 3, channel_axis=0)


@pytest.mark.gui
def test_a_target_folder_of_several_sizes_is_summed_up_with_every_working_scale(
    make_viewer, qtbot, hela, shared_data, tmp_path
):
    """A target folder's images are each decoded at the working scale their size asks for (a 256 px crop whole at
    scale 1, a taller one in 2 tiles at 0.74, as the CLI), but the summary gave the first image's alone: 'working
    scale 1.0 (reference objects), 1 tile(s)' for them all. It gives the range now."""
    from napari_promptseg._widgets.oneshot import OneShotWidget

    reference, labels, frames = hela
    folder = tmp_path / "targets"
    folder.mkdir()
    tifffile.imwrite(folder / "a_crop.tif", frames[1])
    frame = read_image(shared_data / "nuclei_ctc_fluo_instances" / "images" / "N2DL-HeLa_t79.tif")
    tifffile.imwrite(folder / "b_tall.tif", frame[100:600, 300:556])
    viewer = make_viewer()
    widget = OneShotWidget(viewer)
    widget.reference.set_layer(viewer.add_image(reference, name="reference"))
    widget.reference_labels.set_layer(viewer.add_labels(labels, name="nuclei"))
    widget.folder.setText(str(folder))
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    scales = widget.last_output.scales
    assert [s["tiles"] for s in scales] == [1, 2] and scales[0]["scale"] > scales[1]["scale"], scales
    summary = widget.runner.widget.summary.text()
    said = f"working scale {scales[1]['scale']}-{scales[0]['scale']} (reference objects), 1-2 tile(s) per target"
    assert said in summary, summary


@pytest.mark.gui
def test_a_time_lapse_references_labels_on_two_frames_are_refused_in_frames(make_viewer, qtbot, hela):
    """A time-lapse reference (its first axis labelled t) whose labels mark two frames, neither of them shown: the
    refusal said 'labels mark planes 0, 1 of 'movie', none of them the displayed plane 2'; it names frames now, as
    the refusal of labels of another frame count does ('a stack ... of one plane')."""
    from napari_promptseg._widgets.oneshot import OneShotWidget

    reference, labels, frames = hela
    movie = np.stack([reference, frames[1], frames[0]])
    marks = np.zeros(movie.shape, labels.dtype)
    marks[0], marks[1] = labels, labels
    viewer = make_viewer()
    widget = OneShotWidget(viewer)
    widget.reference.set_layer(viewer.add_image(movie, name="movie", axis_labels=("t", "y", "x")))
    widget.reference_labels.set_layer(viewer.add_labels(marks, name="nuclei"))
    widget.target.set_layer(viewer.add_image(frames, name="frames"))
    viewer.dims.set_current_step(0, 2)
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    status = widget.runner.widget.status.text()
    assert widget.runner.state == "failed", status
    assert "labels 'nuclei' mark frames 0, 1 of 'movie', none of them the displayed frame 2" in status, status
    # labels of another frame count: what fits is said in frames too
    from napari_promptseg._widgets.oneshot import read_oneshot_inputs
    from napari_promptseg.errors import PromptsegError

    widget.reference_labels.set_layer(viewer.add_labels(marks[:2], name="two frames"))
    fits = "a time-lapse of shape (3, 256, 256): give labels of the time-lapse's shape, or of one frame (256, 256)"
    with pytest.raises(PromptsegError, match=re.escape(fits)):
        read_oneshot_inputs(widget._inputs(), 256, progress=lambda *_: None, cancel=lambda: False)


def test_a_stack_reference_is_its_labelled_plane_by_the_cli_as_by_the_widget(hela, cli_run, tmp_path, capsys):
    """`promptseg oneshot --reference STACK` was refused ('a reference is one 2D image ... save the plane as its own
    file') while the One-shot widget took a stack layer's labelled plane. The CLI takes it the same way now (one
    code path): the one plane its (Z, Y, X) mask labels, or --reference-plane for a plane's (Y, X) mask, and finds
    what the 2D reference finds; a choice it cannot make, or one off the labels, is refused saying what to give."""
    from napari_promptseg.cli import main

    reference, labels, frames = hela
    stack = np.stack([frames[1], reference, frames[0]])  # the reference is plane 1
    marks = np.zeros(stack.shape, labels.dtype)
    marks[1] = labels
    for name, array in (("stack", stack), ("marks", marks), ("plane_marks", labels), ("frames", frames)):
        tifffile.imwrite(tmp_path / f"{name}.tif", array, photometric="minisblack")
    target, out = str(tmp_path / "frames.tif"), tmp_path / "out"

    def oneshot(mask: str, *more: str) -> int:
        reference_pair = ["--reference", str(tmp_path / "stack.tif"), "--reference-mask", str(tmp_path / mask)]
        return main(["oneshot", target, *reference_pair, "-o", str(out), "--scheduler", "none", *more])

    assert oneshot("marks.tif") == 0, capsys.readouterr().err
    np.testing.assert_array_equal(tifffile.imread(out / "frames.tif"), cli_run[1])  # the 2D reference's labels
    assert json.loads((out / "report.json").read_text())["parameters"]["reference_planes"] == [1]

    assert oneshot("plane_marks.tif") == 2
    err = capsys.readouterr().err
    said = f"--reference-mask {tmp_path / 'plane_marks.tif'} hold one plane's labels (256, 256) and --reference "
    assert said + f"{tmp_path / 'stack.tif'} is a stack of 3 planes: give --reference-plane with the plane" in err, err
    assert oneshot("marks.tif", "--reference-plane", "2") == 2
    err = capsys.readouterr().err
    assert "marks.tif mark plane 1 of --reference " in err and "none of them --reference-plane 2: give" in err, err

    # `promptseg library add` takes such a stack as the Text widget's 'Add exemplar' does: its labelled plane
    from napari_promptseg.io.starter import open_library

    library = ["library", "add", "hela", "--image", str(tmp_path / "stack.tif"), "--no-crop"]
    assert main([*library, "--mask", str(tmp_path / "marks.tif")]) == 0, capsys.readouterr().err
    entry = open_library(None).get("hela")
    np.testing.assert_array_equal(entry.image(), reference)
    np.testing.assert_array_equal(entry.mask(), labels > 0)
    assert main([*library, "--mask", str(tmp_path / "plane_marks.tif")]) == 2
    assert "give --plane with the plane to use" in capsys.readouterr().err

    # the widget's reading of the same stack layer and labels: the same plane
    from napari_promptseg._widgets._common import LayerPixels, read_reference_plane

    layer, marked = LayerPixels("stack", stack, False, False, 3), LayerPixels("marks", marks, False, False, 3)
    plane, plane_labels, z = read_reference_plane(layer, marked, shown=0)
    assert z == 1 and np.array_equal(plane, reference) and np.array_equal(plane_labels, labels)
