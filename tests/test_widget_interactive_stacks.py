"""The Interactive widget in a real napari viewer with the real LiteMedSAM model. Stacks and volumes: the displayed
plane of a stack segmented, find all like the boxed examples, and objects propagated through a real MRI volume (from
prompts or from a Labels layer's objects).

Run under a display: ``xvfb-run -a python -m pytest tests/test_widget_interactive_stacks.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager
from skimage.measure import regionprops

from napari_promptseg._widgets.interactive import (
    COMMIT_KEY,
    TARGET_NAME,
    InteractiveWidget,
)

from .conftest import box_of
from .interactive_widget import (
    FIRST_RUN_MS,
    MIN_DICE,
    add_box_on_plane,
    add_widget,
    dice,
    press_key,
    preview_layer,
    records_since,
    wait_idle,
)

pytestmark = pytest.mark.gui


def test_stack_segments_the_displayed_plane(make_viewer, qtbot, nuclei_sample):
    image, truth, label, (r0, c0, r1, c1) = nuclei_sample
    nucleus = truth == label
    stack = np.stack([image[::-1], image, image[:, ::-1]])  # plane 1 is the 2D image (its embedding is cached)
    viewer = make_viewer()
    viewer.add_image(stack, name="stack")
    viewer.dims.set_current_step(0, 1)
    widget = add_widget(viewer)
    widget.new_prompt_layers()
    shapes = widget.shapes_picker.layer()
    assert shapes.ndim == 3
    shapes.add_rectangles(np.array([[1, r0, c0], [1, r0, c1], [1, r1, c1], [1, r1, c0]]))
    shapes.add_rectangles(np.array([[2, 0, 0], [2, 0, 40], [2, 40, 40], [2, 40, 0]]))  # another plane: not used
    wait_idle(qtbot, widget, FIRST_RUN_MS)

    preview = preview_layer(viewer)
    assert preview.data.shape == (1, *truth.shape)
    np.testing.assert_allclose(preview.translate, [1, 0, 0])
    assert int(preview.data.max()) == 1
    assert dice(preview.data[0] == 1, nucleus) > MIN_DICE

    viewer.layers.selection.active = shapes
    press_key(viewer, COMMIT_KEY)
    labels = viewer.layers[TARGET_NAME]
    assert labels.data.shape == stack.shape
    assert not labels.data[0].any() and not labels.data[2].any()
    assert dice(labels.data[1] == 1, nucleus) > MIN_DICE
    assert len(shapes.data) == 1, "only the committed plane's box is removed"
    wait_idle(qtbot, widget)


def test_find_all_like_three_boxes(make_viewer, qtbot, nuclei_sample):
    """'Find all like these': three boxed nuclei -> a new Labels layer with most nuclei of the image; the boxes and
    the user's layers stay as they were."""
    from napari_promptseg.methods.instances import match_instances

    image, truth, _, _ = nuclei_sample
    viewer = make_viewer()
    scale = np.array([0.5, 0.5])
    viewer.add_image(image, name="nuclei", scale=scale)
    widget = add_widget(viewer)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    shapes = viewer.add_shapes(name="examples")
    regions = sorted(regionprops(truth), key=lambda r: -r.area)
    for r in (regions[5], regions[15], regions[25]):
        r0, c0, r1, c1 = r.bbox
        shapes.add_rectangles(np.array([[r0, c0], [r1 - 1, c1 - 1]]) * scale)
    clicks = viewer.add_points(name="clicks")
    clicks.add(np.array(regions[35].centroid) * scale)  # a click for the preview: find all is told it is not used
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    start = len(notification_manager.records)
    widget.find_all()
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    warnings = records_since(start, NotificationSeverity.WARNING)
    assert any("the 1 click(s) on this plane are not used" in m for m in warnings), warnings
    found = viewer.layers["nuclei find-all"]
    np.testing.assert_allclose(found.scale, scale)
    # the scale its objects were found at, which a propagation seeded by this layer decodes them at
    assert found.metadata["promptseg_object_size"] > 0
    assert found.data.shape == truth.shape
    m = match_instances(found.data, truth)
    assert m["recall"] > 0.45, m  # measured 0.6 through the Python function
    assert len(shapes.data) == 3, "the example boxes stay"
    assert not records_since(start, NotificationSeverity.ERROR)
    assert "found" in widget.runner.widget.summary.text()


def test_propagate_through_stack_on_real_mri(make_viewer, qtbot, shared_data):
    """Propagate through stack: a box on the displayed plane of a 3D image -> a new Labels layer with the object
    on the planes above and below (the left thalamus of the real MRI volume, 5 planes: the widget's part; the
    propagation's accuracy through 9 planes is test_volume.py's test_propagation_through_real_mri_planes)."""
    vol, truth = _mri_planes(shared_data, 2)
    viewer = make_viewer()
    viewer.add_image(vol, name="mri", scale=(2.0, 1.0, 1.0))
    viewer.dims.set_current_step(0, 2)  # plane 2 (world z = 4)
    widget = add_widget(viewer)
    widget.new_prompt_layers()
    shapes = widget.shapes_picker.layer()
    rows, cols = np.nonzero(truth[2])
    r0, c0, r1, c1 = rows.min(), cols.min(), rows.max(), cols.max()
    shapes.add_rectangles(np.array([[2, r0, c0], [2, r0, c1], [2, r1, c1], [2, r1, c0]]))
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    start = len(notification_manager.records)
    widget.propagate_button.click()
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    assert not records_since(start, NotificationSeverity.ERROR)
    result = viewer.layers["mri propagated"]
    np.testing.assert_allclose(result.scale, (2.0, 1.0, 1.0))
    assert result.data.shape == truth.shape
    planes = np.nonzero(result.data.any(axis=(1, 2)))[0]
    assert planes.min() < 2 < planes.max(), "carried above and below the boxed plane"
    assert dice(result.data > 0, truth) > 0.75
    assert "propagated from plane 2" in widget.runner.widget.summary.text()
    assert len(shapes.data) == 1, "the box stays"

    # a time-lapse (its first axis labelled t): its planes are frames, in the summary's words ('propagated from
    # plane 1 (1: planes 0-2)' named no frame)
    viewer.add_image(vol[1:4], name="cine", axis_labels=("t", "y", "x"))
    widget.image_picker.set_layer(viewer.layers["cine"])
    viewer.dims.set_current_step(0, 1)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    widget.new_prompt_layers()
    shapes = widget.shapes_picker.layer()
    shapes.add_rectangles(np.array([[1, r0, c0], [1, r0, c1], [1, r1, c1], [1, r1, c0]]))
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    widget.propagate_button.click()
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    said = widget.runner.widget.summary.text()
    assert "propagated from frame 1 (1: frames 0-2) -> 'cine propagated'" in said, said

    # a 2D image has no stack to propagate through: said in a notification, nothing added
    viewer.add_image(vol[2], name="one plane")
    widget.image_picker.set_layer(viewer.layers["one plane"])
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    start = len(notification_manager.records)
    widget.propagate()
    assert any("propagat" in m for m in records_since(start, NotificationSeverity.ERROR))
    assert "one plane propagated" not in viewer.layers


def _propagate_without_error(qtbot, widget: InteractiveWidget) -> int:
    """Press Propagate, wait for the run, and check it raised no error notification; returns where its
    notifications start (for the warnings it gave)."""
    start = len(notification_manager.records)
    widget.propagate()
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    assert not records_since(start, NotificationSeverity.ERROR)
    return start


def _mri_planes(shared_data, half: int) -> tuple[np.ndarray, np.ndarray]:
    """``2 * half + 1`` planes of the shared brain MRI around its largest slice of one structure, and that
    structure's mask on them."""
    scan = np.load(shared_data / "brain_mri_1vol" / "test_scan.npz")
    truth = scan["seg"] == 10
    z = int(np.argmax(truth.sum((1, 2))))
    return scan["vol"][z - half : z + half + 1].astype(np.float32), truth[z - half : z + half + 1]


def _mri_boxed_on_its_middle_plane(make_viewer, shared_data):
    """Five planes of the shared brain MRI around its largest slice of one structure, in a viewer on the middle
    plane, with the Interactive widget's box around that structure there: (viewer, widget, volume, box x0 y0 x1 y1)."""
    vol, truth = _mri_planes(shared_data, 2)
    viewer = make_viewer()
    viewer.add_image(vol, name="mri")
    viewer.dims.set_current_step(0, 2)
    widget = add_widget(viewer)
    widget.new_prompt_layers()
    box = box_of(truth[2])
    add_box_on_plane(widget, box, 2)
    return viewer, widget, vol, tuple(map(float, box))


def test_propagation_carries_the_previews_objects_clicks_included(make_viewer, qtbot, shared_data):
    """Propagate through stack took the boxes only: a click outside every box (an object of the preview) was not
    carried, and the propagated plane differed from the preview the user saw."""
    viewer, widget, vol, box = _mri_boxed_on_its_middle_plane(make_viewer, shared_data)
    widget.points_picker.layer().add(np.array([[2, 78, 126]]))  # the lateral ventricle, outside the box
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    preview = preview_layer(viewer).data[0].copy()
    assert set(np.unique(preview)) == {0, 1, 2}
    _propagate_without_error(qtbot, widget)
    result = viewer.layers["mri propagated"].data
    np.testing.assert_array_equal(result[2], preview)
    assert "2 object(s) propagated" in widget.runner.widget.summary.text()


def test_propagation_stops_where_the_stop_iou_set_says_as_the_cli(make_viewer, qtbot, shared_data):
    """The widget always propagated with the default stop IoU (0.5): `--stop-iou` and ``stop_iou`` could not be
    given. Set to 0.9, the widget's labels are the console's with ``stop_iou=0.9``, which end objects the default
    carries on."""
    from napari_promptseg.methods.volume import propagate_through_stack

    viewer, widget, vol, box = _mri_boxed_on_its_middle_plane(make_viewer, shared_data)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    widget.stop_iou_spin.setValue(0.9)
    widget.propagate()
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    result = viewer.layers["mri propagated"].data
    strict = propagate_through_stack(vol, 2, boxes=[box], stop_iou=0.9, axes="zyx")
    default = propagate_through_stack(vol, 2, boxes=[box], axes="zyx")
    np.testing.assert_array_equal(result, strict.labels)
    assert not np.array_equal(strict.labels, default.labels)  # the setting changes what is carried


def test_propagation_carries_a_labels_layers_objects_as_the_console_does(make_viewer, qtbot, shared_data):
    """The widget propagated only the prompts on the plane: a find-all result, committed labels or a drawing could
    not seed it, as they do through the console (``labels=``) and the CLI's methods. A drawn Labels layer chosen as
    the seed gives the console's labels; the box on the plane is said to be unused; a seed layer with nothing on the
    displayed plane is refused with a notification and no layer added."""
    from napari_promptseg.methods.volume import propagate_through_stack

    viewer, widget, vol, (x0, y0, x1, y1) = _mri_boxed_on_its_middle_plane(make_viewer, shared_data)
    drawing = np.zeros(vol.shape, np.uint8)
    yy, xx = np.mgrid[: vol.shape[1], : vol.shape[2]]
    drawing[2] = ((yy - (y0 + y1) / 2) / ((y1 - y0) / 2)) ** 2 + ((xx - (x0 + x1) / 2) / ((x1 - x0) / 2)) ** 2 <= 1
    seed = viewer.add_labels(drawing, name="drawn")
    widget.seed_picker.set_layer(seed)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    start = _propagate_without_error(qtbot, widget)
    warnings = records_since(start, NotificationSeverity.WARNING)
    assert any("the 1 prompt(s) on this plane are not used" in m for m in warnings), warnings
    result = viewer.layers["mri propagated"].data
    console = propagate_through_stack(vol, 2, labels=drawing[2], axes="zyx")
    np.testing.assert_array_equal(result, console.labels)
    assert result[[1, 3]].any(), "carried to the planes beside the drawn one"
    np.testing.assert_array_equal(seed.data, drawing)  # the user's layer is read, never written

    # a 2D layer of that plane's drawing, which napari shows over every plane: the CLI's and console's (Y, X) seed
    # labels (it was refused as not matching the image's shape)
    widget.seed_picker.set_layer(viewer.add_labels(drawing[2], name="drawn 2D"))
    _propagate_without_error(qtbot, widget)
    np.testing.assert_array_equal(viewer.layers["mri propagated [1]"].data, console.labels)
    widget.seed_picker.set_layer(seed)

    viewer.dims.set_current_step(0, 0)  # a plane the drawing has nothing on
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    layers = len(viewer.layers)
    start = len(notification_manager.records)
    widget.propagate()
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    errors = records_since(start, NotificationSeverity.ERROR)
    assert any("labels layer 'drawn' holds no object on the displayed plane (axis 0 = 0)" in m for m in errors)
    assert len(viewer.layers) == layers


def test_a_pyramid_labels_layer_seeds_the_propagation_at_full_resolution(make_viewer, qtbot, shared_data):
    """An OME-Zarr stack opened in napari is a pyramid image with pyramid labels (those the CLI writes into its
    labels/ group): chosen as the seed, such a layer raised 'TypeError: list indices must be integers' (its data
    indexed as one array). Its full-resolution plane seeds the propagation, as the console's labels=."""
    from napari_promptseg.methods.volume import propagate_through_stack

    vol, truth = _mri_planes(shared_data, 1)
    truth = truth.astype(np.uint8)
    viewer = make_viewer()
    viewer.add_image([vol, vol[:, ::2, ::2]], name="mri", multiscale=True)
    seed = viewer.add_labels([truth, truth[:, ::2, ::2]], name="labels/promptseg", multiscale=True)
    viewer.dims.set_current_step(0, 1)
    widget = add_widget(viewer)
    widget.seed_picker.set_layer(seed)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    _propagate_without_error(qtbot, widget)
    console = propagate_through_stack(vol, 1, labels=truth[1], axes="zyx")
    np.testing.assert_array_equal(viewer.layers["mri propagated"].data, console.labels)
    assert console.labels[[0, 2]].any()


def test_labels_napari_made_over_a_multichannel_stack_seed_the_propagation(make_viewer, qtbot, shared_data):
    """napari's 'New labels' over a (C, Z, Y, X) layer has its channel axis too, painted on the channel shown: as
    the seed of a propagation with channel axis 0 it was refused as not matching the image (the One-shot and Text
    widgets take such labels); its objects on any channel seed it, as the console's (Y, X) labels."""
    from napari_promptseg.methods.volume import propagate_through_stack

    vol, truth = _mri_planes(shared_data, 1)
    truth = truth.astype(np.uint8)
    czyx = np.stack([vol, vol.max() - vol])  # the MRI and its inverse
    viewer = make_viewer()
    viewer.add_image(czyx, name="mc")
    viewer.dims.set_current_step(1, 1)
    widget = add_widget(viewer)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    widget.channel_combo.setCurrentIndex(1)  # axis 0 (2 channels)
    painted = np.zeros(czyx.shape, np.uint8)
    painted[1, 1] = truth[1]  # painted while channel 1 was shown
    widget.seed_picker.set_layer(viewer.add_labels(painted, name="painted"))
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    _propagate_without_error(qtbot, widget)
    console = propagate_through_stack(np.moveaxis(czyx, 0, -1), 1, labels=truth[1], channel_axis=-1)
    np.testing.assert_array_equal(viewer.layers["mc propagated"].data, console.labels)
    assert console.labels[[0, 2]].any()
