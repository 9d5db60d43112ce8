"""napari layer objects passed to the console functions as they are: their pixels, and their prompts in the image's
pixels through each layer's own scale and translate (napari's world coordinates)."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image, Labels, Points, Shapes
from skimage import data

import napari_promptseg
from napari_promptseg.errors import PromptsegError

COINS = data.coins()  # real 303x384 uint8 greyscale photo of coins
BOX = (40.0, 60.0, 120.0, 140.0)  # x0, y0, x1, y1 around the coins at the top left
CLICK = (80.0, 100.0)  # x, y inside BOX's coin
SCALE, TRANSLATE = np.array([0.5, 0.5]), np.array([10.0, -4.0])  # the image layer's (row, column)


def rectangle(box, scale=1.0, translate=0.0) -> np.ndarray:
    """The corners (row, column) of box (x0, y0, x1, y1) given in image pixels, in world coordinates."""
    x0, y0, x1, y1 = box
    corners = np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], float)
    return corners * scale + translate


@pytest.fixture(scope="module")
def expected(litemedsam):
    labels = napari_promptseg.segment(COINS, boxes=[BOX], device="cpu")
    assert 0 < (labels > 0).sum() < labels.size / 10
    return labels


def test_an_image_layer_and_a_shapes_layer_of_boxes_are_read_in_the_images_pixels(expected):
    """An Image layer was refused as 'unsupported pixel type object', a Shapes layer as "'Shapes' object is not
    iterable": the console's own objects had to be taken apart by hand, the rectangles' corners reordered."""
    image = Image(COINS, name="coins", scale=SCALE, translate=TRANSLATE)
    boxes = Shapes([rectangle(BOX, SCALE, TRANSLATE)], shape_type="rectangle", name="boxes")  # drawn over it
    labels = napari_promptseg.segment(image, boxes=boxes, device="cpu")
    np.testing.assert_array_equal(labels, expected)


def test_a_points_layer_is_clicks_in_the_images_pixels(litemedsam):
    """A Points layer's data is (row, column): given as points=layer.data it was read as (x, y), the click on
    another object; the layer itself was refused."""
    image = Image(COINS, name="coins", scale=SCALE, translate=TRANSLATE)
    clicks = Points([np.array(CLICK[::-1]) * SCALE + TRANSLATE], name="clicks")
    from_layers = napari_promptseg.segment(image, points=clicks, device="cpu")
    from_xy = napari_promptseg.segment(COINS, points=[CLICK], device="cpu")
    np.testing.assert_array_equal(from_layers, from_xy)
    assert from_layers[int(CLICK[1]), int(CLICK[0])] > 0  # the object under the click


def test_prompt_layers_over_a_plain_array_are_read_in_their_own_data_coordinates(expected):
    boxes = Shapes([rectangle(BOX)], shape_type="rectangle")
    np.testing.assert_array_equal(napari_promptseg.segment(COINS, boxes=boxes, device="cpu"), expected)


def test_an_rgb_layer_and_a_multiscale_layer_are_their_pixels(litemedsam):
    astronaut = data.astronaut()
    box = (150.0, 30.0, 350.0, 260.0)  # her head
    rgb = napari_promptseg.segment(Image(astronaut, rgb=True), boxes=[box], device="cpu")
    np.testing.assert_array_equal(rgb, napari_promptseg.segment(astronaut, boxes=[box], device="cpu"))
    pyramid = Image([COINS, COINS[::2, ::2]], multiscale=True, scale=SCALE)
    boxes = Shapes([rectangle(BOX, SCALE)], shape_type="rectangle")
    labels = napari_promptseg.segment(pyramid, boxes=boxes, device="cpu")
    assert labels.shape == COINS.shape


def test_a_stack_layer_is_segmented_on_the_plane_of_its_prompts(expected):
    """A (Z, Y, X) layer with boxes drawn on one plane gives labels over the whole layer, that plane segmented, so
    viewer.add_labels(labels, scale=layer.scale, translate=layer.translate) lies over it."""
    stack = Image(np.stack([COINS] * 3), name="stack", scale=(2.0, *SCALE))
    corners = np.c_[np.full(4, 2.0), rectangle(BOX, SCALE)]  # (plane, row, column) in world coordinates: plane 1
    labels = napari_promptseg.segment(stack, boxes=Shapes([corners], shape_type="rectangle"), device="cpu")
    assert labels.shape == (3, *COINS.shape)
    np.testing.assert_array_equal(labels[1], expected)
    assert not labels[[0, 2]].any()


def test_a_stack_layer_without_a_plane_is_refused_naming_it():
    stack = Image(np.stack([COINS] * 3), name="stack")
    with pytest.raises(PromptsegError, match=r"image layer 'stack'.*3 planes.*which plane"):
        napari_promptseg.segment(stack, boxes=[BOX], device="cpu")
    on_two = Shapes([np.c_[np.full(4, z), rectangle(BOX)] for z in (0, 2)], shape_type="rectangle", name="boxes")
    with pytest.raises(PromptsegError, match=r"'boxes'.*planes 0 and 2.*one plane at a time"):
        napari_promptseg.segment(stack, boxes=on_two, device="cpu")


def test_layers_of_the_wrong_kind_are_refused_naming_them():
    clicks = Points([[100, 80]], name="clicks")
    with pytest.raises(PromptsegError, match=r"image: layer 'clicks' is a Points layer, not an image"):
        napari_promptseg.segment(clicks, points=clicks, device="cpu")
    with pytest.raises(PromptsegError, match=r"boxes: layer 'clicks' is a Points layer.*points="):
        napari_promptseg.segment(COINS, boxes=clicks, device="cpu")
    with pytest.raises(PromptsegError, match=r"points: layer 'coins' is an Image layer"):
        napari_promptseg.segment(COINS, points=Image(COINS, name="coins"), device="cpu")


def test_the_other_functions_take_image_and_labels_layers(litemedsam, expected):
    crop = (slice(20, 180), slice(0, 200))  # the box's coin and its neighbours: a small image keeps this fast
    image = Image(COINS[crop], name="coins")
    mask = Labels((expected[crop] > 0).astype(np.uint8), name="coin")
    (result,) = napari_promptseg.segment_like(image, mask, image, segmenter=litemedsam, strategy="persam")
    (plain,) = napari_promptseg.segment_like(
        COINS[crop], mask.data, COINS[crop], segmenter=litemedsam, strategy="persam"
    )
    assert result.labels[mask.data > 0].any()
    np.testing.assert_array_equal(result.labels, plain.labels)
    stack = Image(np.stack([COINS[crop]] * 2), name="two planes")
    planes = napari_promptseg.segment_stack(stack, lambda plane: (plane > 100).astype(np.uint16))
    assert planes.labels.shape == stack.data.shape and planes.labels.any()
    with pytest.raises(PromptsegError, match=r"image: layer 'clicks' is a Points layer, not an image"):
        napari_promptseg.segment_text(Points([[10, 10]], name="clicks"), "nuclei", route="library")
    with pytest.raises(PromptsegError, match=r"target: layer 'coin boxes' is a Shapes layer, not an image"):
        napari_promptseg.segment_like(image, mask, Shapes(name="coin boxes"), segmenter=litemedsam)


def test_segment_reports_progress_and_can_be_cancelled(litemedsam):
    from napari_promptseg.errors import CancelledError

    seen = []
    napari_promptseg.segment(COINS, boxes=[BOX], device="cpu", progress=lambda f, m: seen.append(f))
    assert seen and seen[-1] == pytest.approx(1.0)
    with pytest.raises(CancelledError):
        napari_promptseg.segment(COINS, boxes=[BOX], device="cpu", cancel=lambda: True)


def test_propagation_takes_a_stack_layer_and_its_seed_boxes_layer(litemedsam):
    crop = (slice(20, 180), slice(0, 200))
    stack = Image(np.stack([COINS[crop]] * 3), name="stack", scale=(3.0, *SCALE), translate=(0.0, *TRANSLATE))
    box = (BOX[0], BOX[1] - 20, BOX[2], BOX[3] - 20)  # BOX in the crop's pixels
    on_plane_1 = np.c_[np.full(4, 3.0), rectangle(box, SCALE, TRANSLATE)]  # world coordinates
    boxes = Shapes([on_plane_1], shape_type="rectangle", name="seed boxes")
    result = napari_promptseg.propagate_through_stack(stack, 1, boxes=boxes, segmenter=litemedsam)
    assert result.labels.shape == stack.data.shape
    seed = napari_promptseg.segment(COINS[crop], boxes=[box], device="cpu")
    assert seed.any()
    np.testing.assert_array_equal(result.labels[1] > 0, seed > 0)
    with pytest.raises(PromptsegError, match=r"'seed boxes': prompts on plane 1 of image layer 'stack'.*plane=1"):
        napari_promptseg.propagate_through_stack(stack, 0, boxes=boxes, segmenter=litemedsam)


def docstring_example(function) -> str:
    import textwrap

    # the first example alone (a stack example may follow it)
    return textwrap.dedent(function.__doc__.split("Example")[1].split("::", 1)[1].split('"""')[0].strip("\n"))


def console(viewer) -> dict:
    """The names a console user has after ``from napari_promptseg import *``, and the viewer."""
    return {"viewer": viewer, **{name: getattr(napari_promptseg, name) for name in napari_promptseg.__all__}}


@pytest.fixture
def nuclei_viewer(make_viewer):
    """A viewer holding both nuclei samples and a Shapes layer with the README's box around one nucleus."""
    from napari_promptseg import _sample_data

    viewer = make_viewer()
    for data_, kwargs, kind in [*_sample_data.nuclei(), *_sample_data.nuclei_for_text()]:
        getattr(viewer, f"add_{kind}")(data_, **kwargs)
    viewer.add_shapes([rectangle((17, 113, 41, 134))], shape_type="rectangle", name="Shapes")
    return viewer


def test_segments_docstring_example_runs_in_a_viewer_on_the_nuclei_sample(nuclei_viewer, litemedsam):
    """help(segment)'s example, as written: one object, inside one nucleus of the ground truth."""
    viewer = nuclei_viewer
    exec(docstring_example(napari_promptseg.segment), console(viewer))  # noqa: S102
    labels = viewer.layers["my nuclei"].data
    truth = viewer.layers["nuclei ground truth"].data[labels > 0]
    assert labels.max() == 1 and (truth > 0).all() and len(set(truth.tolist())) == 1


def test_the_instance_functions_docstring_examples_run_in_a_viewer_on_the_nuclei_samples(nuclei_viewer, litemedsam):
    """help(find_all_like) and help(segment_instances_like) had no example; theirs, as written, find the nuclei of
    the samples (each scored against its ground truth)."""
    from napari_promptseg.methods.metrics import dice

    viewer = nuclei_viewer
    for function, added, truth in (
        (napari_promptseg.find_all_like, "all nuclei", "nuclei ground truth"),
        (napari_promptseg.segment_instances_like, "nuclei like the reference", "nuclei (text prompt) ground truth"),
    ):
        exec(docstring_example(function), console(viewer))  # noqa: S102
        found = viewer.layers[added].data
        assert found.max() > 20, function.__name__
        assert dice(found > 0, viewer.layers[truth].data > 0) > 0.5, function.__name__


def test_every_console_function_the_readme_lists_is_a_top_level_name():
    """README's console section lists 'every console function (segment, segment_text, segment_like,
    segment_instances_like, find_all_like)': `from napari_promptseg import find_all_like` was an ImportError."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    [listed] = re.findall(r"by every console function \(([^)]*)\)", readme)
    names = re.findall(r"`(\w+)`", listed)
    assert len(names) >= 5
    for name in names:
        assert name in napari_promptseg.__all__, name
        assert callable(getattr(napari_promptseg, name)), name


def test_empty_prompt_layers_are_named():
    """An empty Shapes layer given as the boxes was refused as 'no prompt: give at least one box or positive point',
    naming no layer: the user had drawn on another one."""
    with pytest.raises(PromptsegError, match=r"no prompt: layer 'boxes' \(boxes\) holds no shapes"):
        napari_promptseg.segment(Image(COINS), boxes=Shapes(name="boxes"), device="cpu")
    with pytest.raises(PromptsegError, match=r"layer 'clicks' \(points\) holds no points"):
        napari_promptseg.segment(COINS, points=Points(name="clicks"), device="cpu")


def test_a_points_layers_negative_clicks_are_negative(litemedsam):
    """The Interactive widget marks a negative click with the feature positive=False; given that layer, it was one
    more object."""
    box = Shapes([rectangle(BOX)], shape_type="rectangle")
    clicks = Points([[100, 80], [65, 45]], features={"positive": [True, False]})
    with_layer = napari_promptseg.segment(COINS, boxes=box, points=clicks, device="cpu")
    by_hand = napari_promptseg.segment(COINS, boxes=[BOX], points=[(80, 100)], negative_points=[(45, 65)], device="cpu")
    np.testing.assert_array_equal(with_layer, by_hand)
    assert with_layer.max() == 1


def test_labels_added_with_the_layers_placement_lie_over_a_rotated_scaled_layer(make_viewer, litemedsam):
    """viewer.add_labels(labels) put a scaled, translated or rotated layer's labels at the origin, unscaled: the user
    had to know which of scale, translate, rotate, shear, affine and units to copy. layer_placement(layer) is them."""
    viewer = make_viewer()
    image = viewer.add_image(COINS, name="coins", scale=SCALE, translate=TRANSLATE, rotate=30, units="µm")
    drawn = np.array([image.data_to_world(corner) for corner in rectangle(BOX)])  # the box, turned with the image
    boxes = viewer.add_shapes([drawn], shape_type="polygon", name="boxes")
    labels = napari_promptseg.segment(image, boxes=boxes, device="cpu")
    added = viewer.add_labels(labels, name="coin", **napari_promptseg.layer_placement(image))
    rows, cols = np.nonzero(added.data)
    centre = (rows.mean(), cols.mean())
    np.testing.assert_allclose(added.data_to_world(centre), image.data_to_world(centre))
    assert tuple(map(str, added.units)) == tuple(map(str, image.units))
    stack = viewer.add_image(np.stack([COINS] * 2), scale=(4.0, *SCALE), rgb=False)
    assert napari_promptseg.layer_placement(stack)["scale"].tolist() == [4.0, *SCALE]
    with pytest.raises(PromptsegError, match=r"layer_placement: .*not a napari layer"):
        napari_promptseg.layer_placement(COINS)


def test_training_takes_image_and_labels_layers_in_its_tuples(tmp_path):
    """train_text_segmenter([(image_layer, labels_layer, "coin"), ...]) failed on the layer objects; their pixels
    are the triplet's, named after the image layer; a Shapes layer as the mask is refused naming it."""
    from napari_promptseg.methods.text_training.data import as_triplets

    mask = (COINS > 150).astype(np.uint8)
    (triplet,) = as_triplets([(Image(COINS, name="coins"), Labels(mask, name="coin mask"), "coin")])
    image, target = triplet.load()
    assert image.shape == (*COINS.shape, 1) and "coins" in triplet.name
    np.testing.assert_array_equal(target, mask > 0)
    with pytest.raises(PromptsegError, match=r"training data item 2 mask: layer 'outlines' is a Shapes layer"):
        napari_promptseg.train_text_segmenter(
            [(COINS, mask, "coin"), (Image(COINS), Shapes(name="outlines"), "coin")], tmp_path / "model"
        )


def test_a_results_own_placement_is_laid_over_a_rotated_scaled_layer(make_viewer):
    """result.heatmap_placement (probability_placement, register's fixed_placement) lays a coarser map over the
    image's pixels, not over a scaled, moved or rotated layer: added with it, the map lay elsewhere.
    layer_placement(layer, result_placement) is both."""
    from napari_promptseg.tiling import level_placement

    viewer = make_viewer()
    image = viewer.add_image(COINS, scale=SCALE, translate=TRANSLATE, rotate=30)
    own = level_placement((4.0, 4.0))  # a map four times coarser than the image, as a text heatmap can be
    coarse = viewer.add_image(COINS[::4, ::4], **napari_promptseg.layer_placement(image, own))
    for pixel in ([0.0, 0.0], [10.0, 20.0], [75.0, 95.0]):
        in_image = np.asarray(pixel) * own["scale"] + own["translate"]
        np.testing.assert_allclose(coarse.data_to_world(pixel), image.data_to_world(in_image), atol=1e-9)


def test_propagations_docstring_example_runs_in_a_viewer_on_a_stack_of_the_nuclei_sample(make_viewer, litemedsam):
    """help(propagate_through_stack) had no example; its own, as written, over a (Z, Y, X) stack of the nuclei
    sample's spheroids (scaled along Z) with boxes drawn on plane 2 of a Shapes layer of the stack's axes."""
    from napari_promptseg import _sample_data
    from napari_promptseg.methods.metrics import dice

    (image, _, _), (truth, _, _) = _sample_data.nuclei()
    stack, truth3d = _sample_data.spheroid_stack(image[:128, :128], truth[:128, :128], planes=5, seed=0)
    viewer = make_viewer()
    viewer.add_image(stack, name="stack", scale=(3.0, 1.0, 1.0))
    ids = [i for i in np.unique(truth3d[2]) if i][:3]
    corners = []
    for i in ids:
        rows, cols = np.nonzero(truth3d[2] == i)
        box = (cols.min() - 2, rows.min() - 2, cols.max() + 2, rows.max() + 2)
        corners.append(np.c_[np.full(4, 2 * 3.0), rectangle(box)])  # world: plane 2 at z = 6
    viewer.add_shapes(corners, shape_type="rectangle", name="Shapes")
    exec(docstring_example(napari_promptseg.propagate_through_stack), console(viewer))  # noqa: S102
    found = viewer.layers["objects in 3D"]
    assert found.data.shape == stack.shape and tuple(found.scale) == (3.0, 1.0, 1.0)
    assert len(np.unique(found.data[2])) - 1 == len(ids)
    seeded = np.isin(truth3d, ids)
    assert dice(found.data > 0, seeded) > 0.5


def test_a_points_layers_negative_clicks_join_a_negative_points_layer(litemedsam):
    """Negative clicks of the points layer (positive=False) beside a negative_points layer: the layer object was
    read as coordinates, "float() argument must be ... not 'Points'"."""
    clicks = Points([[100, 80], [65, 45]], features={"positive": [True, False]})
    more = Points([[135, 115]], name="more negatives")
    labels = napari_promptseg.segment(COINS, boxes=[BOX], points=clicks, negative_points=more, device="cpu")
    by_hand = napari_promptseg.segment(
        COINS, boxes=[BOX], points=[(80, 100)], negative_points=[(115, 135), (45, 65)], device="cpu"
    )
    np.testing.assert_array_equal(labels, by_hand)


def test_propagation_seeded_by_labels_ignores_an_empty_boxes_layer(litemedsam):
    stack = Image(np.stack([COINS[:160, :200]] * 2), name="stack")
    seed = napari_promptseg.segment(COINS[:160, :200], boxes=[BOX], device="cpu")
    result = napari_promptseg.propagate_through_stack(
        stack, 0, boxes=Shapes(ndim=3, name="boxes"), labels=Labels(seed), segmenter=litemedsam
    )
    np.testing.assert_array_equal(result.labels[0] > 0, seed > 0)


def test_register_takes_image_layers_and_refuses_other_kinds_naming_them():
    crop = COINS[:128, :160]
    moved = np.roll(crop, (3, -2), axis=(0, 1))  # the moving image: 3 rows down, 2 columns left
    result = napari_promptseg.register(Image(crop, name="day 1"), Image(moved, name="day 2"), method="intensity")
    np.testing.assert_allclose(result.displacement[64, 80], (-2.0, 3.0), atol=0.25)  # dx, dy
    # its results take the moving image's layers too, as the console has them
    np.testing.assert_array_equal(result.warp_image(Image(moved)), result.warp_image(moved))
    mask = (moved > 150).astype(np.uint8)
    np.testing.assert_array_equal(result.warp_labels(Labels(mask)), result.warp_labels(mask))
    clicks = Points([[40.0, 60.0], [90.0, 100.0]])  # (row, column) on the moving image
    np.testing.assert_array_equal(
        result.moving_points_to_fixed(clicks), result.moving_points_to_fixed(clicks.data[:, ::-1])
    )
    with pytest.raises(PromptsegError, match=r"moving: layer 'landmarks' is a Points layer, not an image"):
        napari_promptseg.register(Image(crop), Points([[1, 1]], name="landmarks"), method="intensity")


def test_a_multiscale_stack_layer_is_segmented_on_the_plane_of_its_prompts_at_full_resolution(expected):
    stack = np.stack([COINS] * 3)
    layer = Image([stack, stack[:, ::2, ::2]], multiscale=True, name="pyramid")
    corners = np.c_[np.full(4, 2.0), rectangle(BOX)]
    labels = napari_promptseg.segment(layer, boxes=Shapes([corners], shape_type="rectangle"), device="cpu")
    assert labels.shape == stack.shape
    np.testing.assert_array_equal(labels[2], expected)
    flat = Shapes([rectangle(BOX)], shape_type="rectangle", name="flat")
    with pytest.raises(PromptsegError, match=r"'flat' has 2 axes: which plane\?.*segment\(layer\.data\[0\]\[z\]"):
        napari_promptseg.segment(layer, boxes=flat, device="cpu")


@pytest.fixture(scope="module")
def gowt1_stack(shared_data):
    """Three frames of the shared GOWT1 nuclei time-lapse (t01, t21, t31), a 128 x 128 px crop each, as a (Z, Y, X)
    stack: real nuclei on every plane."""
    from napari_promptseg.io import read_image

    folder = shared_data / "nuclei_ctc_fluo_instances" / "images"
    frames = [read_image(folder / f"N2DH-GOWT1_t{t}.tif")[220:348, 220:348] for t in ("01", "21", "31")]
    return np.stack(frames)


def test_segment_text_over_a_stack_layer_segments_every_plane_as_the_cli(gowt1_stack, litemedsam):
    """A (Z, Y, X) Image layer was refused by segment_text as 'an ambiguous 3D array' while segment took its plane and
    `promptseg text` a stack plane by plane: now the console's stack is the CLI's (methods.volume.segment_stack over
    segment_text, ids linked across planes), each plane's own result kept."""
    stack = gowt1_stack[:2]
    layer = Image(stack, name="frames", scale=(4.0, 0.5, 0.5))
    result = napari_promptseg.segment_text(layer, "nucleus", segmenter=litemedsam)
    expected = napari_promptseg.segment_stack(
        stack, lambda plane: napari_promptseg.segment_text(plane, "nucleus", segmenter=litemedsam)
    )
    assert result.labels.shape == stack.shape and result.objects >= 3
    np.testing.assert_array_equal(result.labels, expected.labels)
    assert [p.route for p in result.planes] == ["library"] * 2
    for z, plane in enumerate(result.planes):
        np.testing.assert_array_equal(plane.labels > 0, result.labels[z] > 0)


def test_segment_like_takes_a_stack_layer_as_reference_and_as_target(gowt1_stack, litemedsam):
    """segment_like refused a (Z, Y, X) reference or target layer as 'an ambiguous 3D array'. As the CLI's oneshot
    and the One-shot widget: a stack reference gives the plane its labels mark; a stack target is segmented plane by
    plane, its ids linked (its result a StackResult whose planes are each plane's OneShotResult)."""
    from napari_promptseg.methods.volume import StackResult

    labels = np.zeros(gowt1_stack.shape, np.uint8)
    plane_labels = napari_promptseg.segment(gowt1_stack[1], boxes=[(60, 70, 100, 110)], device="cpu")
    assert plane_labels.any()
    labels[1] = plane_labels > 0
    reference, mask = Image(gowt1_stack, name="frames"), Labels(labels, name="one nucleus")
    result, plain = napari_promptseg.segment_like(
        reference, mask, [reference, gowt1_stack[2]], segmenter=litemedsam, strategy="persam"
    )
    (expected,) = napari_promptseg.segment_like(
        gowt1_stack[1], labels[1], gowt1_stack[2], segmenter=litemedsam, strategy="persam"
    )
    np.testing.assert_array_equal(plain.labels, expected.labels)
    assert isinstance(result, StackResult) and result.labels.shape == gowt1_stack.shape
    # plane 2 found from the labelled plane 1 (another reference plane finds another region)
    assert expected.labels.any()
    np.testing.assert_array_equal(result.planes[2].labels, expected.labels)
    np.testing.assert_array_equal(result.labels[2] > 0, expected.labels > 0)


def test_segment_texts_docstring_example_runs_in_a_viewer_on_a_stack(make_viewer, gowt1_stack, litemedsam):
    """help(segment_text)'s stack example, as written: the labels over the scaled stack layer, its nuclei found on
    both planes."""
    viewer = make_viewer()
    viewer.add_image(gowt1_stack[:2], name="stack", scale=(3.0, 0.5, 0.5))
    exec(docstring_example(napari_promptseg.segment_text), console(viewer))  # noqa: S102
    found = viewer.layers["nuclei in 3D"]
    assert found.data.shape == (2, 128, 128) and tuple(found.scale) == (3.0, 0.5, 0.5)
    assert found.data[0].any() and found.data[1].any()


def test_segment_likes_docstring_example_runs_in_a_viewer_on_a_stack(make_viewer, gowt1_stack, litemedsam):
    """help(segment_like)'s stack example, as written: a nucleus painted on plane 1 of the stack; the result over the
    scaled layer, the painted plane's nucleus found again."""
    viewer = make_viewer()
    stack = viewer.add_image(gowt1_stack, name="stack", scale=(3.0, 0.5, 0.5))
    painted = np.zeros(gowt1_stack.shape, np.uint8)
    painted[1] = napari_promptseg.segment(gowt1_stack[1], boxes=[(60, 70, 100, 110)], device="cpu") > 0
    viewer.add_labels(painted, name="one nucleus", scale=stack.scale)
    exec(docstring_example(napari_promptseg.segment_like), console(viewer))  # noqa: S102
    found = viewer.layers["like it"]
    assert found.data.shape == gowt1_stack.shape and tuple(found.scale) == (3.0, 0.5, 0.5)
    assert found.data.any()


#: the console functions that take images, as the README's console section lists them: help(name) shows an example
#: that runs in napari's console over the bundled samples
CONSOLE_FUNCTIONS_WITH_EXAMPLES = (
    "segment",
    "segment_text",
    "segment_like",
    "find_all_like",
    "segment_instances_like",
    "propagate_through_stack",
    "register",
)


def test_every_console_functions_docstring_example_is_run_by_a_test_here():
    """register had no example in help(); an example no test runs goes stale unseen. Each of the
    console functions has one, and a test of this module that executes examples names it; a public function given
    an example later is to be added here."""
    import inspect
    import sys

    runners = [
        inspect.getsource(test)
        for name, test in vars(sys.modules[__name__]).items()
        if name.startswith("test_") and "exec(docstring_example(" in inspect.getsource(test)
    ]
    for name in CONSOLE_FUNCTIONS_WITH_EXAMPLES:
        function = getattr(napari_promptseg, name)
        assert "Example" in (function.__doc__ or "") and docstring_example(function).strip(), name
        assert any(f"napari_promptseg.{name})" in r or f"napari_promptseg.{name}," in r for r in runners), name
    with_examples = {
        name for name in napari_promptseg.__all__ if "Example" in (getattr(napari_promptseg, name).__doc__ or "")
    }
    assert with_examples <= {*CONSOLE_FUNCTIONS_WITH_EXAMPLES, "segment_stack"}  # segment_stack's is inline


def test_the_registration_docstring_example_runs_in_a_viewer_on_the_sample_pair(make_viewer):
    """help(register) had no example; its own, as written, registers the sample *Registration pair with landmarks*
    and maps its moving landmarks onto the fixed ones."""
    from napari_promptseg import _sample_data

    viewer = make_viewer()
    for data_, kwargs, kind in _sample_data.registration_pair():
        getattr(viewer, f"add_{kind}")(data_, **kwargs)
    exec(docstring_example(napari_promptseg.register), console(viewer))  # noqa: S102
    warped = viewer.layers["registration moving registered"]
    assert warped.data.shape == viewer.layers["registration fixed"].data.shape and warped.rgb
    mapped = viewer.layers["registration moving landmarks registered"].data
    fixed = viewer.layers["registration fixed landmarks"].data
    moving = viewer.layers["registration moving landmarks"].data
    before, after = (np.linalg.norm(points - fixed, axis=1).mean() for points in (moving, mapped))
    assert after < 5 < before, (before, after)
