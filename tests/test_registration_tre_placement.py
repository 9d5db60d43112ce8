"""The "before" TRE of a pair at two pixel sizes (a slide's 5 % and 10 % copies, an image and its rescaled copy): the
moving landmarks are placed over the fixed image as the two images lie before registration (by their pixel sizes,
else by their sizes), in pixels of the fixed image, and the report says how. Real pixels and landmarks: ANHIR/CIMA
lung-lesion_1."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from skimage.transform import resize

from napari_promptseg.cli import main
from napari_promptseg.io import read_image
from napari_promptseg.io.landmarks import read_landmarks
from napari_promptseg.methods.registration import landmark_errors, placed_before

HE = "29-041-Izd2-w35-He-les1_gaussian-filtered"
CC10 = "29-041-Izd2-w35-Cc10-5-les1"


@pytest.fixture(scope="module")
def cima(shared_data):
    return shared_data / "registration_cima_lung_lesion_1"


def _shape(path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.height, image.width


def test_the_10pc_copy_of_a_slide_lies_over_its_5pc_copy_before_registration(cima):
    """The HE image's 10 % copy placed over its 5 % copy: the same landmarks (within their rounding), not 2x apart;
    the CC10 image at 10 % over HE at 5 %: the pair's own misalignment, as at one scale (45.8 px median; 43.1 px
    stretched to the HE image's size, which CC10's is not at 5 %)."""
    fixed = read_landmarks(cima / "scale-5pc" / f"{HE}.csv").xy
    fixed_shape = _shape(cima / "scale-5pc" / f"{HE}.jpg")
    same = read_landmarks(cima / "scale-10pc" / f"{HE}.csv").xy
    placed, how = placed_before(same, fixed_shape, _shape(cima / "scale-10pc" / f"{HE}.jpg"))
    assert landmark_errors(fixed, placed, 1.0)["tre_max"] < 1.0
    assert "image sizes" in how
    other = read_landmarks(cima / "scale-10pc" / f"{CC10}.csv").xy
    placed, _ = placed_before(other, fixed_shape, _shape(cima / "scale-10pc" / f"{CC10}.jpg"))
    one_scale = landmark_errors(fixed, read_landmarks(cima / "scale-5pc" / f"{CC10}.csv").xy, 1.0)
    assert landmark_errors(fixed, placed, 1.0)["tre_median"] == pytest.approx(one_scale["tre_median"], rel=0.1)
    # one scale: pixel for pixel (ANHIR's initial TRE), a few pixels' difference in size changes nothing
    placed, how = placed_before(other, fixed_shape, _shape(cima / "scale-5pc" / f"{CC10}.jpg"))
    assert how == "pixel for pixel" and np.array_equal(placed, other)
    # pixel sizes known: they place the points, whatever the images' sizes
    placed, how = placed_before(other, fixed_shape, fixed_shape, pixel_sizes=((2.0, 2.0), (1.0, 1.0)))
    assert np.allclose(placed, other / 2) and "pixel sizes" in how
    # one pixel size: pixel for pixel, said as such (whatever the sizes of the images)
    placed, how = placed_before(other, fixed_shape, (1472, 1789), pixel_sizes=((0.5, 0.5), (0.5, 0.5)))
    assert how == "pixel for pixel" and np.array_equal(placed, other)


def _rescaled_copy(cima, tmp_path, factor: float, fixed_um: float | None = None, moving_um: float | None = None):
    """The HE 5 % image (fixed) and its copy rescaled by ``factor`` (moving), as TIFFs (with pixel sizes in µm when
    given), and their landmarks: the HE ones, and the same points scaled alike."""
    image = read_image(cima / "scale-5pc" / f"{HE}.jpg")[::2, ::2]  # 445 x 367 px: a run of seconds
    h, w = image.shape[:2]
    mh, mw = round(h * factor), round(w * factor)
    moving = (resize(image, (mh, mw), anti_aliasing=True, preserve_range=True)).astype(np.uint8)
    paths = {}
    for name, pixels, um in (("fixed", image, fixed_um), ("moving", moving, moving_um)):
        resolution = {} if um is None else {"resolution": (1e4 / um, 1e4 / um), "resolutionunit": "CENTIMETER"}
        paths[name] = tmp_path / f"{name}.tif"
        tifffile.imwrite(paths[name], pixels, photometric="rgb", **resolution)
    xy = read_landmarks(cima / "scale-5pc" / f"{HE}.csv").xy / 2
    for name, points in (("lm_fixed", xy), ("lm_moving", xy * (mw / w, mh / h))):
        paths[name] = tmp_path / f"{name}.csv"
        rows = "\n".join(f"{i + 1},{x:.3f},{y:.3f}" for i, (x, y) in enumerate(points))
        paths[name].write_text(",X,Y\n" + rows + "\n")
    return paths


def _run(paths, out, capsys) -> tuple[dict, str]:
    code = main(
        [
            "register", str(paths["fixed"]), str(paths["moving"]), "-o", str(out), "--method", "intensity",
            "--landmarks-fixed", str(paths["lm_fixed"]), "--landmarks-moving", str(paths["lm_moving"]),
        ]
    )  # fmt: skip
    said = capsys.readouterr()
    assert code == 0, said.err
    return json.loads((out / "report.json").read_text())["landmarks"], said.out


def test_cli_before_tre_of_a_rescaled_copy_is_in_fixed_pixels_and_says_how(cima, tmp_path, capsys):
    """An image and its half-size copy with the same landmarks: nothing to register, before and after near 0 px of
    the fixed image (before: 80 px, the copy's pixel coordinates taken as the fixed image's)."""
    record, out = _run(_rescaled_copy(cima, tmp_path, 0.5), tmp_path / "out", capsys)
    assert record["before"]["tre_max"] < 1.5, record["before"]
    assert record["after"]["tre_median"] < 3.0, record["after"]
    assert record["unit"] == "pixels of the fixed image (full resolution)"
    assert "image sizes" in record["before_placement"]
    assert "placed by the image sizes" in out and "px (pixels of the fixed image)" in out, out


def test_cli_before_tre_of_calibrated_images_goes_by_their_pixel_sizes(cima, tmp_path, capsys):
    """The half-size copy at 2 µm/px over the image at 1 µm/px: placed by the pixel sizes, TRE also in µm."""
    paths = _rescaled_copy(cima, tmp_path, 0.5, fixed_um=1.0, moving_um=2.0)
    record, out = _run(paths, tmp_path / "out", capsys)
    assert record["before"]["tre_max"] < 1.5, record["before"]
    assert "pixel sizes" in record["before_placement"]
    assert record["fixed_pixel_size"] == "0.0001 cm/px"  # as the TIFF's tags say it
    um = record["tre_mean_um"]  # and in µm: 1 µm per fixed pixel
    assert um["before"] == pytest.approx(record["before"]["tre_mean"], abs=0.01)
    assert um["after"] == pytest.approx(record["after"]["tre_mean"], abs=0.01)
    assert "µm" in out


@pytest.mark.gui
def test_widget_before_tre_of_layers_at_two_pixel_sizes_goes_by_their_scales(make_viewer, qtbot, cima):
    """The HE image (2 µm/px) and its half-size copy (4 µm/px) laid over each other by napari: the before TRE of
    the same landmarks is near 0 px of the fixed layer (it was 80 px: the copy's pixels taken as the fixed one's)."""
    from napari_promptseg._widgets.registration import RegistrationWidget

    image = read_image(cima / "scale-5pc" / f"{HE}.jpg")[::2, ::2]
    moving = (resize(image, (184, 222), anti_aliasing=True, preserve_range=True)).astype(np.uint8)
    xy = read_landmarks(cima / "scale-5pc" / f"{HE}.csv").xy / 2
    factor = np.array([222 / image.shape[1], 184 / image.shape[0]])
    viewer = make_viewer()
    fixed_layer = viewer.add_image(image, name="HE", rgb=True, scale=(2, 2))
    moving_layer = viewer.add_image(moving, name="HE half", rgb=True, scale=2 / factor[::-1])
    fixed_points = viewer.add_points(xy[:, ::-1], name="lm HE", scale=(2, 2))
    moving_points = viewer.add_points((xy * factor)[:, ::-1], name="lm HE half", scale=2 / factor[::-1])
    widget = RegistrationWidget(viewer)
    widget.fixed_picker.set_layer(fixed_layer)
    widget.moving_picker.set_layer(moving_layer)
    widget.fixed_points.set_layer(fixed_points)
    widget.moving_points.set_layer(moving_points)
    widget.method.setCurrentText("intensity")
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=180_000)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    assert widget.last_errors["before"]["tre_max"] < 1.5, widget.last_errors["before"]
    text = widget.summary.text()
    assert "px of the fixed image" in text and "placed by the pixel sizes" in text, text


@pytest.mark.gui
def test_widget_before_tre_reads_the_pixel_sizes_of_a_layer_placed_by_its_affine(make_viewer, qtbot, cima):
    """The same two layers, the fixed one calibrated (2 µm/px) and turned 30° by its affine matrix (as a reader or
    the user gives a layer an affine, its scale left at 1): the before TRE read the fixed pixel as 1 µm (its scale
    alone) and placed the half-size copy's landmarks twice too far out (a TRE in the hundreds of px for the same
    points). The registration sees the pixel grids: the turn of a layer in the viewer is not misalignment."""
    from napari_promptseg._widgets.registration import RegistrationWidget
    from napari_promptseg._widgets.registration.planes import layers_turned

    image = read_image(cima / "scale-5pc" / f"{HE}.jpg")[::2, ::2]
    moving = (resize(image, (184, 222), anti_aliasing=True, preserve_range=True)).astype(np.uint8)
    xy = read_landmarks(cima / "scale-5pc" / f"{HE}.csv").xy / 2
    factor = np.array([222 / image.shape[1], 184 / image.shape[0]])
    turn = np.deg2rad(30)
    affine = np.array([[np.cos(turn), -np.sin(turn), 5.0], [np.sin(turn), np.cos(turn), -3.0], [0, 0, 1]])
    affine[:2, :2] *= 2  # 2 µm per pixel, in the matrix
    viewer = make_viewer()
    fixed_layer = viewer.add_image(image, name="HE", rgb=True, affine=affine)
    moving_layer = viewer.add_image(moving, name="HE half", rgb=True, scale=2 / factor[::-1])
    fixed_points = viewer.add_points(xy[:, ::-1], name="lm HE", affine=affine)
    moving_points = viewer.add_points((xy * factor)[:, ::-1], name="lm HE half", scale=2 / factor[::-1])
    widget = RegistrationWidget(viewer)
    widget.fixed_picker.set_layer(fixed_layer)
    widget.moving_picker.set_layer(moving_layer)
    widget.fixed_points.set_layer(fixed_points)
    widget.moving_points.set_layer(moving_points)
    widget.method.setCurrentText("intensity")
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=180_000)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    assert widget.last_errors["before"]["tre_max"] < 1.5, widget.last_errors["before"]
    text = widget.summary.text()
    assert "placed by the pixel sizes" in text and "turn between the layers in the viewer" in text, text
    moving_layer.rotate = 30  # both turned alike: nothing to say
    assert not layers_turned(fixed_layer, moving_layer, None)
