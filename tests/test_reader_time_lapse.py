"""A time-lapse of volumes (T, Z, Y, X), an OME-Zarr or a pyramidal OME-TIFF, opened by the plugin's reader as one
lazy 4D layer (t, z, y, x), and the Interactive widget's propagation on it at the time point shown: the real brain MRI
and the real LiteMedSAM model.

Run under a display: ``xvfb-run -a python -m pytest tests/test_reader_time_lapse.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from napari.utils.notifications import NotificationSeverity, notification_manager

from napari_promptseg._widgets.oneshot import OneShotWidget
from napari_promptseg.methods.volume import propagate_through_stack

from .interactive_widget import FIRST_RUN_MS, add_box_on_plane, add_widget, records_since, wait_idle
from .test_time_point_files import _write_tzyx_ome_zarr, thalamus_movie

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def movie(shared_data, litemedsam):
    """The MRI time-lapse (time point 0 upside down), the box on plane 3 of time point 1, and the Python function's
    labels of time point 1 propagated from it."""
    tz, _, box = thalamus_movie(shared_data)
    labels = propagate_through_stack(tz, 3, boxes=[box], segmenter=litemedsam, name="tz", time_point=1).labels
    return tz, box, labels


def _ome_zarr(path, tz):
    _write_tzyx_ome_zarr(path, tz)


def _pyramidal_ome_tiff(path, tz):
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        tif.write(tz, subifds=1, tile=(64, 64), metadata={"axes": "TZYX"})
        tif.write(tz[..., ::2, ::2], subfiletype=1, tile=(64, 64))


@pytest.mark.parametrize(("name", "write"), [("tz.ome.zarr", _ome_zarr), ("tz.ome.tif", _pyramidal_ome_tiff)])
def test_the_reader_opens_a_time_lapse_of_volumes_and_the_widget_propagates_at_the_time_point_shown(
    make_viewer, qtbot, movie, tmp_path, name, write
):
    """The reader refused a time-lapse of volumes ('select one time point first', pointing to the CLI's --time; an
    OME-Zarr one it did not take at all), while napari shows 4D lazily and the Interactive widget works at the time
    point shown. It now opens as one lazy multiscale layer, axes t, z, y, x, and the widget's propagation at time
    point 1 gives the Python function's labels there, time point 0 empty."""
    tz, box, expected = movie
    path = tmp_path / name
    write(path, tz)
    viewer = make_viewer()
    layers = viewer.open(str(path), plugin="napari-promptseg")
    assert len(layers) == 1
    layer = layers[0]
    assert layer.multiscale and layer.data[0].shape == tz.shape and layer.data[1].shape == (2, 7, 55, 70)
    assert tuple(viewer.dims.axis_labels) == ("t", "z", "y", "x")
    assert tuple(layer.scale) == (1.0, 1.0, 1.0, 1.0)
    np.testing.assert_array_equal(np.asarray(layer.data[0][1, 3]), tz[1, 3])  # real pixels, read lazily
    viewer.dims.set_current_step(0, 1)  # time point 1
    viewer.dims.set_current_step(1, 3)  # plane 3
    widget = add_widget(viewer)
    widget.new_prompt_layers()
    add_box_on_plane(widget, box, 1, 3)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    start = len(notification_manager.records)
    widget.propagate_button.click()
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    assert not records_since(start, NotificationSeverity.ERROR)
    propagated = np.asarray(viewer.layers[f"{layer.name} propagated"].data)
    assert propagated.shape == tz.shape and not propagated[0].any()
    np.testing.assert_array_equal(propagated[1], expected)
    if name.endswith(".zarr"):  # the One-shot widget reads the volume of the time point shown
        _one_shot_reads_the_time_point_shown(viewer, layer, tz)


def _one_shot_reads_the_time_point_shown(viewer, layer, tz) -> None:
    """The One-shot widget refused the 4D layer ('has 4 dimensions'); a run reads the volume of the time point shown
    (1) from the lazy layer, at the level it reads, as a stack of its planes (tests/test_widget_oneshot_text_stacks.py
    runs the widgets on a time-lapse)."""
    from napari_promptseg._widgets.oneshot import read_oneshot_inputs

    reference = viewer.add_image(tz[1, 3], name="reference")
    mask = viewer.add_labels((tz[1, 3] > np.median(tz[1, 3])).astype(np.uint8), name="reference mask")
    oneshot = OneShotWidget(viewer)
    oneshot.reference.set_layer(reference)
    oneshot.reference_labels.set_layer(mask)
    oneshot.target.set_layer(layer)
    oneshot.mode.setCurrentText("single region")
    inputs = oneshot._inputs()
    assert inputs.time_point.index == 1 and inputs.time_point.shape == tz.shape
    read = read_oneshot_inputs(inputs, 256, progress=lambda *_: None, cancel=lambda: False)
    assert read.stacked and len(read.targets) == tz.shape[1]
    np.testing.assert_array_equal(np.stack(read.targets), tz[1])


def test_a_time_lapse_ome_zarr_opens_with_the_labels_written_into_it(make_viewer, shared_data, tmp_path):
    """`segment --time 1` writes its labels into the OME-Zarr's labels/promptseg, and the README opens a time-lapse with
    this plugin's reader for the widgets: that reader gave the image alone, the labels of the run were nowhere (a
    pyramidal OME-TIFF's labels TIFF opens over its image). They open now with it, as a lazy multiscale Labels layer
    over the image: each level the file's, the same scale and axes."""
    from napari_promptseg.io import write_ome_zarr_labels

    from .test_time_point_files import thalamus_movie

    tz, truth, _ = thalamus_movie(shared_data)
    path = tmp_path / "tz.ome.zarr"
    _ome_zarr(path, tz)
    labels = np.zeros(tz.shape, np.uint16)
    labels[1] = truth
    write_ome_zarr_labels(path, labels)
    viewer = make_viewer()
    layers = viewer.open(str(path), plugin="napari-promptseg")
    assert [type(layer).__name__ for layer in layers] == ["Image", "Labels"]
    image, found = layers
    assert found.name == "tz promptseg" and found.multiscale
    assert [level.shape for level in found.data] == [level.shape for level in image.data]
    assert not isinstance(found.data[0], np.ndarray)  # lazy: read where napari shows it
    np.testing.assert_array_equal(np.asarray(found.data[0]), labels)
    assert tuple(found.scale) == tuple(image.scale) and tuple(found.axis_labels) == ("t", "z", "y", "x")
