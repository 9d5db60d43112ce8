"""One image given in two roles: the same file as fixed and moving (nothing to register: the identity, with a TRE
of 0 that says nothing), or the moving (fixed) image given as the moving labels (a photo's colours read as
thousands of object ids). Both were run without a word; refused before any work, naming the file or layer."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from napari_promptseg.cli import main


def _said(capsys) -> str:
    return " ".join(capsys.readouterr().err.split())


def test_cli_refuses_one_file_as_fixed_and_moving(birl_quarter, tmp_path, capsys):
    out = tmp_path / "out"
    fixed = birl_quarter["fixed"]
    assert main(["register", str(fixed), str(fixed), "-o", str(out), "--method", "intensity"]) == 2
    said = _said(capsys)
    assert f"{fixed}" in said and "fixed and moving are the same file" in said, said
    assert not out.exists()
    link = tmp_path / "link.tif"  # the same file by another name
    link.symlink_to(fixed)
    assert main(["register", str(fixed), str(link), "-o", str(out), "--method", "intensity"]) == 2
    assert "same file" in _said(capsys)
    # a copy is two files (a user's identity check): registered
    copy = shutil.copy(fixed, tmp_path / "copy.tif")
    assert main(["register", str(fixed), str(copy), "-o", str(out), "--method", "intensity"]) == 0


@pytest.mark.parametrize("role", ["moving", "fixed"])
def test_cli_refuses_an_image_given_as_the_moving_labels(birl_quarter, tmp_path, capsys, role):
    out = tmp_path / "out"
    image = birl_quarter[role]
    args = ["register", str(birl_quarter["fixed"]), str(birl_quarter["moving"]), "-o", str(out)]
    assert main([*args, "--method", "intensity", "--moving-labels", str(image)]) == 2
    said = _said(capsys)
    assert f"--moving-labels {image} is the {role} image" in said, said
    assert not out.exists()


def test_cli_refuses_a_colour_photo_given_as_the_moving_labels_and_takes_a_colour_label_image(
    birl_quarter, tmp_path, capsys
):
    """A copy of the moving image (an earlier run's moving_warped.tif, any RGB picture) as --moving-labels was read
    as a colour label image: its thousands of one-colour specks became object ids (109918 on the sample pair) and
    were carried over without a word. Refused, naming the file; a colour label image (label2rgb's) is still ids."""
    import tifffile
    from skimage.color import label2rgb

    out = tmp_path / "out"
    args = [
        "register",
        str(birl_quarter["fixed"]),
        str(birl_quarter["moving"]),
        "-o",
        str(out),
        "--method",
        "intensity",
    ]
    photo = shutil.copy(birl_quarter["moving"], tmp_path / "moving_warped.tif")
    assert main([*args, "--moving-labels", str(photo)]) == 2
    said = _said(capsys)
    assert f"--moving-labels {photo}: " in said and "not a label image" in said, said
    assert not out.exists()
    height, width = tifffile.imread(birl_quarter["moving"]).shape[:2]
    labels = np.zeros((height, width), np.uint8)
    labels[10:40, 10:50], labels[60:100, 80:120] = 1, 2
    colours = tmp_path / "colour_labels.tif"
    tifffile.imwrite(colours, (label2rgb(labels, bg_label=0) * 255).round().astype(np.uint8))
    assert main([*args, "--moving-labels", str(colours)]) == 0, _said(capsys)
    assert tifffile.imread(out / "labels_warped.tif").max() == 2


@pytest.mark.gui
def test_widget_refuses_a_labels_layer_of_the_moving_images_own_pixels(make_viewer, qtbot):
    """A Labels layer made of the moving image's array (a grey image added as labels, or converted to labels
    in place): each grey level became an object carried over. Refused, naming both layers; so are two image layers
    of one array as fixed and moving."""
    from skimage import data

    from napari_promptseg._widgets.registration import RegistrationWidget

    camera = data.camera()[::4, ::4]
    viewer = make_viewer()
    fixed = viewer.add_image(camera, name="camera")
    moving = viewer.add_image(np.roll(camera, 5, axis=1), name="camera shifted")
    widget = RegistrationWidget(viewer)
    widget.method.setCurrentText("intensity")
    widget.fixed_picker.set_layer(fixed)
    widget.moving_picker.set_layer(moving)
    widget.moving_labels.set_layer(viewer.add_labels(moving.data, name="labels of the moving"))
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=60_000)
    status = widget.runner.widget.status.text()
    assert widget.runner.state == "failed", status
    assert "'labels of the moving'" in status and "'camera shifted'" in status, status
    widget.moving_labels.set_layer(None)
    widget.moving_picker.set_layer(viewer.add_image(fixed.data, name="camera again"))
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=60_000)
    status = widget.runner.widget.status.text()
    assert widget.runner.state == "failed" and "'camera again'" in status and "same pixels" in status, status
    assert "camera again registered" not in viewer.layers
