"""The Interactive widget in a real napari viewer with the real LiteMedSAM model. The preview and its prompts: boxes
and clicks mapped from their layers onto the image's pixels, the preview layer placed over the image (units,
rotation, shear), and prompts refused naming their layer.

Run under a display: ``xvfb-run -a python -m pytest tests/test_widget_interactive_preview.py``.
"""

from __future__ import annotations

import napari
import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager
from skimage.measure import regionprops

from napari_promptseg._widgets.interactive import (
    BOXES_NAME,
    POINTS_NAME,
    PREVIEW_NAME,
    TARGET_NAME,
    TOGGLE_KEY,
    extract_plane,
    plane_geometry,
)
from napari_promptseg.tiling import full_to_level

from .interactive_widget import (
    FIRST_RUN_MS,
    MIN_DICE,
    add_widget,
    dice,
    press_key,
    preview_layer,
    records_since,
    wait_idle,
)

pytestmark = pytest.mark.gui


def test_layers_made_over_an_image_in_micrometres_are_in_micrometres(make_viewer, qtbot, nuclei_sample):
    """The prompt layers, the preview and the committed labels over a slide opened in µm (the reader's scale and
    units) were in pixels: napari warned "Inconsistent units across layers; units will not be used for rendering"
    and its scale bar lost the unit (the Text and One-shot widgets' results take the image's units)."""
    image, truth, label, (r0, c0, r1, c1) = nuclei_sample
    viewer = make_viewer()
    slide = viewer.add_image(image, name="slide", scale=(0.25, 0.25), translate=(10.0, -4.0), units=("µm", "µm"))
    widget = add_widget(viewer)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    widget.new_prompt_layers()
    viewer.layers[BOXES_NAME].add_rectangles(np.array([[r0, c0], [r1, c1]], float))  # on the image's pixels
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    widget.commit()
    made = [viewer.layers[name] for name in (BOXES_NAME, POINTS_NAME, PREVIEW_NAME, TARGET_NAME)]
    assert all(layer.units == slide.units for layer in made), [layer.units for layer in made]
    assert dice(viewer.layers[TARGET_NAME].data > 0, truth == label) > MIN_DICE


def test_the_channels_field_picks_an_rgb_layers_colours_as_the_cli_does(make_viewer, qtbot, nuclei_sample, litemedsam):
    """The channels field was disabled for an RGB layer, and read as 'all' there, while the CLI's --channels 0 2
    picks an RGB file's colours (GlaS: 5 glands by the CLI, 4 in the widget): the widget now takes them too."""
    from napari_promptseg.methods.interactive import segment_prompts

    image, _, _, (r0, c0, r1, c1) = nuclei_sample
    # red: the nuclei; green: their inverse, where a box on a nucleus holds a dark blob; blue: nothing
    rgb = np.stack([image, image.max() - image, np.zeros_like(image)], axis=-1)
    viewer = make_viewer()
    viewer.add_image(rgb, name="rgb", rgb=True)
    widget = add_widget(viewer)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    assert widget.channels_edit.isEnabled()
    widget.channels_edit.setText("1")
    widget.channels_edit.editingFinished.emit()
    widget.new_prompt_layers()
    widget.shapes_picker.layer().add_rectangles(np.array([[r0, c0], [r1, c1]]))
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    box = [c0, r0, c1, r1]
    green = segment_prompts(rgb, litemedsam, boxes=[box], channels=[1]).labels
    every = segment_prompts(rgb, litemedsam, boxes=[box]).labels
    assert not np.array_equal(green, every)  # the channels change the result
    np.testing.assert_array_equal(preview_layer(viewer).data, green)


def test_the_preview_of_another_image_lies_above_it(make_viewer, qtbot, nuclei_sample):
    """The preview layer made for the first image stayed under the second when the user chose that one (the upper
    layer): its preview was computed and shown under the second image's pixels, unseen."""
    image, _, _, (r0, c0, r1, c1) = nuclei_sample
    viewer = make_viewer()
    lower = viewer.add_image(image, name="nuclei")
    upper = viewer.add_image(image[:, ::-1].copy(), name="mirrored")
    widget = add_widget(viewer)
    widget.image_picker.set_layer(lower)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    widget.new_prompt_layers()
    widget.shapes_picker.layer().add_rectangles(np.array([[r0, c0], [r1, c1]]))
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    preview = preview_layer(viewer)
    assert viewer.layers.index(lower) < viewer.layers.index(preview) < viewer.layers.index(upper)
    widget.image_picker.set_layer(upper)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    assert widget.preview is not None and widget.preview.geom.image_name == "mirrored" and preview.data.any()
    assert viewer.layers.index(preview) > viewer.layers.index(upper)


def test_negative_point_alone_is_a_notification(make_viewer, qtbot, nuclei_sample):
    image, truth, label, _ = nuclei_sample
    viewer = make_viewer()
    viewer.add_image(image, name="nuclei")
    widget = add_widget(viewer)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    widget.new_prompt_layers()
    points = widget.points_picker.layer()
    assert points is not None and widget.shapes_picker.layer() is not None

    first = len(notification_manager.records)
    viewer.layers.selection.active = points
    press_key(viewer, TOGGLE_KEY)
    assert not widget.positive_clicks
    far_from_nuclei = np.argwhere(truth == 0)[0]
    points.add(far_from_nuclei)
    assert points.features["positive"].tolist() == [False]
    wait_idle(qtbot, widget)
    errors = records_since(first, NotificationSeverity.ERROR)
    assert any("negative" in message for message in errors), errors
    assert widget.preview is None
    assert PREVIEW_NAME not in viewer.layers or not preview_layer(viewer).data.any()
    after_error = len(notification_manager.records)

    # the widget is still usable: flip the selected click to positive on a nucleus -> a preview, no error
    centre = np.round(next(r for r in regionprops(truth) if r.label == label).centroid)
    points.data = np.array([centre])
    points.selected_data = {0}
    widget.toggle_polarity()
    assert widget.positive_clicks and points.features["positive"].tolist() == [True]
    wait_idle(qtbot, widget)
    assert widget.preview is not None
    assert not records_since(after_error, NotificationSeverity.ERROR)


def test_a_line_or_a_box_off_the_image_on_the_boxes_layer_is_named_with_its_layer(make_viewer, qtbot, nuclei_sample):
    """A line drawn on the boxes layer (the wrong tool) was refused as "box 1: corners in the wrong order or zero
    size", naming neither the shape nor its layer, and the corners cannot be in the wrong order (the widget takes
    each shape's extent); a rectangle off the image was "box 1: ... lies outside". Both name the shape, its kind and
    its layer now, refused before any model loads, by the preview and by find all."""
    image, _, _, (r0, c0, r1, c1) = nuclei_sample
    viewer = make_viewer()
    widget = add_widget(viewer)
    widget.auto_embed_check.setChecked(False)
    viewer.add_image(image, name="nuclei")
    widget.new_prompt_layers()
    boxes = viewer.layers[BOXES_NAME]
    boxes.add_rectangles(np.array([[r0, c0], [r1, c1]], float))
    boxes.add_lines(np.array([[r0, c0], [r0, c1]], float))
    wait_idle(qtbot, widget)
    line = f"shape 2 of layer '{BOXES_NAME}' (a line) spans no area on image 'nuclei' (x {c0:g} to {c1:g}, y {r0:g} to"
    assert widget.runner.state == "failed" and line in widget.runner.widget.status.text()
    widget.find_all()
    assert not widget.runner.busy and line in widget.runner.widget.status.text()
    boxes.data = [np.array([[300, 300], [300, 320], [320, 320], [320, 300]], float)]  # below the 256 px image
    wait_idle(qtbot, widget)
    status = widget.runner.widget.status.text()
    assert f"shape 1 of layer '{BOXES_NAME}' (a rectangle): (300, 300, 320, 320) lies outside" in status, status


def test_negative_chosen_with_the_users_own_points_layer(make_viewer, qtbot, nuclei_sample):
    """A points layer of the user's own (no polarity feature) counted every click positive: 'negative' chosen in the
    widget (not with T) left the next clicks positive, while the widget showed negative."""
    image, truth, _, _ = nuclei_sample
    viewer = make_viewer()
    viewer.add_image(image, name="nuclei")
    nucleus_centre = np.round(regionprops(truth)[0].centroid)
    points = viewer.add_points([nucleus_centre], name="my clicks")
    widget = add_widget(viewer)
    widget.points_picker.set_layer(points)
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    widget.negative_radio.setChecked(True)
    points.add(np.argwhere(truth == 0)[0])
    assert points.features["positive"].tolist() == [True, False]
    wait_idle(qtbot, widget)


def test_plane_geometry_multichannel_and_rgb(make_viewer):
    viewer = make_viewer()
    channels = np.stack([np.full((20, 30), 5, np.uint8), np.arange(600, dtype=np.uint16).reshape(20, 30)])
    layer = viewer.add_image(channels, name="two channels", scale=(1, 0.5, 0.5))
    viewer.dims.set_current_step(0, 1)
    geom = plane_geometry(viewer, layer, channel_axis=0)
    assert geom.labels_shape == (20, 30) and (geom.row_axis, geom.col_axis) == (0, 1)
    assert geom.scale == (0.5, 0.5)
    plane, channel_axis = extract_plane(layer, geom)
    assert channel_axis == 0 and plane.shape == (2, 20, 30)
    np.testing.assert_array_equal(plane, channels)  # every channel, whichever the slider shows
    # without a channel axis the same layer is a stack: the displayed plane only
    geom = plane_geometry(viewer, layer)
    assert geom.labels_shape == (2, 20, 30) and geom.index[0] == 1
    plane, channel_axis = extract_plane(layer, geom)
    assert channel_axis is None
    np.testing.assert_array_equal(plane, channels[1])

    rgb = viewer.add_image(np.zeros((20, 30, 3), np.uint8), name="rgb", rgb=True)
    geom = plane_geometry(viewer, rgb)
    assert geom.labels_shape == (20, 30)
    assert extract_plane(rgb, geom)[0].shape == (20, 30, 3)


def test_result_layers_land_on_a_rotated_sheared_image_layer(make_viewer):
    """Results took the image layer's scale and translate only: on a rotated or sheared layer they lay elsewhere
    (241 px off under 30 degrees in the Registration widget). A result over a pyramid level twice as coarse too."""
    from napari_promptseg._widgets._common import placement

    viewer = make_viewer()
    image = viewer.add_image(
        np.zeros((40, 60), np.uint8), scale=(0.5, 2.0), translate=(3.0, -7.0), rotate=30, shear=[0.2]
    )
    same = napari.layers.Labels(np.zeros((40, 60), np.uint8), **placement(image, 2))
    coarse = napari.layers.Labels(np.zeros((20, 30), np.uint8), **placement(image, 2, np.array([2.0, 2.0])))
    for row, col in [(0, 0), (10, 50), (39, 1)]:
        world = np.asarray(image.data_to_world([row, col]))
        np.testing.assert_allclose(same.data_to_world([row, col]), world, atol=1e-9)
        np.testing.assert_allclose(coarse.data_to_world(full_to_level([row, col], 2.0)), world, atol=1e-9)


def test_a_layer_in_millimetres_gets_no_spurious_affine():
    """A layer in millimetres (scale 2.5e-4, translate (85, 42)): the rebuilt data-to-world matrix differed from
    scale and translate by float error (6e-9 after dividing by the scale), and the results got a near-identity
    'affine'. A rotation of a hundredth of a degree is still one."""
    from napari_promptseg._widgets._common import placement

    where = {"scale": (2.5e-4, 2.5e-4), "translate": (85.0, 42.0)}
    image = napari.layers.Image(np.zeros((4000, 3000), np.uint8), **where)
    for factors in (None, np.array([4.0, 4.0])):
        place = placement(image, 2, factors)
        assert "affine" not in place, place
        coarse = 1.0 if factors is None else 4.0
        np.testing.assert_allclose(place["scale"], np.array(where["scale"]) * coarse)
        # a level's pixel over the centre of the block it stands for
        np.testing.assert_allclose(
            place["translate"],
            np.add(where["translate"], np.multiply(where["scale"], 1.5 if factors is not None else 0)),
        )
    turned = napari.layers.Image(np.zeros((4000, 3000), np.uint8), rotate=0.01, **where)
    place = placement(turned, 2, np.array([4.0, 4.0]))
    assert "affine" in place
    result = napari.layers.Labels(np.zeros((1000, 750), np.uint8), **place)
    world = np.asarray(turned.data_to_world([3999.0, 2999.0]))
    np.testing.assert_allclose(result.data_to_world(full_to_level([3999.0, 2999.0], 4.0)), world, rtol=0, atol=1e-9)


def test_boxes_drawn_on_another_shapes_layer_are_pointed_to(make_viewer, qtbot, nuclei_sample):
    """Rectangles drawn on a Shapes layer other than the boxes layer were ignored without a word (no preview, no
    status). Said now, without a model run, while the boxes layer has none on this plane."""
    image, _, _, (r0, c0, r1, c1) = nuclei_sample
    viewer = make_viewer()
    widget = add_widget(viewer)
    widget.auto_embed_check.setChecked(False)
    viewer.add_image(image, name="nuclei")
    boxes = viewer.add_shapes(name="boxes")
    assert widget.shapes_picker.layer() is boxes
    other = viewer.add_shapes(name="drawn here", shape_type="rectangle")
    other.add_rectangles(np.array([[[r0, c0], [r1, c1]], [[2.0, 2.0], [20.0, 20.0]]]))
    wait_idle(qtbot, widget)
    status = widget.runner.widget.status.text()
    assert "no boxes on 'boxes'" in status and "'drawn here' has 2 rectangles" in status, status
    assert "pick it as the boxes layer" in status and widget.runner.state != "running"
    widget.shapes_picker.set_layer(None)  # none picked: said too
    wait_idle(qtbot, widget)
    assert "'drawn here' has 2 rectangles" in widget.runner.widget.status.text()
    widget.shapes_picker.set_layer(boxes)
    widget.compute_embedding()  # drawn while the image is embedded: said when that ends
    assert widget.runner.busy
    other.add_rectangles(np.array([[40.0, 40.0], [60.0, 60.0]]))
    wait_idle(qtbot, widget, FIRST_RUN_MS)
    assert "'drawn here' has 3 rectangles" in widget.runner.widget.status.text()
