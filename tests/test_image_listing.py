"""One rule for the images of a folder (:func:`napari_promptseg.io.list_images`): the CLI's batch inputs, the napari
reader's folder stack and the One-shot widget's target folder take the same images in the same order. Run under a
display: ``xvfb-run -a python -m pytest tests/test_image_listing.py``."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from skimage import data

from napari_promptseg._reader import get_reader
from napari_promptseg.cli._inputs import _expand_images
from napari_promptseg.io.images import write_labels

pytestmark = pytest.mark.gui


def camera_crops(folder: Path, names: list[str]) -> None:
    """64² crops of skimage's camera, each from another place, saved under ``names``."""
    folder.mkdir(exist_ok=True)
    camera = data.camera()
    for k, name in enumerate(names):
        iio.imwrite(folder / name, camera[k * 64 : k * 64 + 64, 100:164], extension=".png")


def reader_files(folder: Path) -> list[str]:
    [(_, kwargs, _)] = get_reader(str(folder))(str(folder))
    return kwargs["metadata"]["files"]


def test_a_folder_gives_the_cli_the_reader_and_the_one_shot_widget_the_same_images_in_one_order(
    make_napari_viewer, tmp_path
):
    """The CLI listed a folder in plain sorted order ('Img3.PNG', 'img10.png', 'img2.png': upper case first, 10
    before 2), the napari reader in natural order ('img2', 'Img3', 'img10'), and the One-shot widget took the CLI's
    list through a CLI-private helper: planes opened in napari and the CLI's outputs were in different orders, and a
    folder named like an image ('old.tif/') was a CLI input the reader left out. One listing rule now."""
    from napari_promptseg._widgets.oneshot import OneShotWidget

    folder = tmp_path / "targets"
    camera_crops(folder, ["img10.png", "img2.png", "Img3.PNG"])
    (folder / ".img4.png").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")  # AppleDouble fork
    (folder / "notes.txt").write_text("acquired on Monday")
    (folder / "old.tif").mkdir()  # a folder named as an image is no image file
    write_labels(folder / "img2_labels.tif", np.ones((64, 64), np.uint16))  # an earlier run's output
    expected = ["img2.png", "Img3.PNG", "img10.png"]

    cli = [p.name for p in _expand_images([folder])]  # what `promptseg oneshot FOLDER` runs on
    reader = reader_files(folder)
    viewer = make_napari_viewer()
    widget = OneShotWidget(viewer)
    widget.reference.set_layer(viewer.add_image(data.camera()[:64, :64], name="reference"))
    widget.reference_labels.set_layer(viewer.add_labels(np.ones((64, 64), np.uint8), name="reference labels"))
    widget.folder.setText(str(folder))
    in_widget = [p.name for p in widget._inputs().files]
    assert cli == reader == in_widget == expected, (cli, reader, in_widget)

    from napari_promptseg.io import list_images

    assert [p.name for p in list_images(folder)] == expected
    # a pattern's matches come in the same order as the folder's (a shell that does not expand it passes it on)
    assert [p.name for p in _expand_images([folder / "img*"])] == ["img2.png", "img10.png"]


def test_a_folder_with_superscript_digits_in_a_name_opens(tmp_path):
    """A name with superscript digits between digit runs ('cells1²2.png', as an area in the name) stopped the
    reader's natural sort: '²' is a digit to str.isdigit but not to int(), so opening the folder raised ValueError."""
    folder = tmp_path / "areas"
    camera_crops(folder, ["cells1²2.png", "cells1.png"])
    assert reader_files(folder) == ["cells1.png", "cells1²2.png"]
    assert [p.name for p in _expand_images([folder])] == ["cells1.png", "cells1²2.png"]


def test_a_target_folder_of_ome_zarr_images_says_why_the_one_shot_widget_does_not_take_it(make_napari_viewer, tmp_path):
    """A folder of OME-Zarr images (which `promptseg oneshot FOLDER` runs on) as the One-shot widget's target folder
    was refused as 'no image files in FOLDER', sending the user looking for another folder. It says the folder's
    images are OME-Zarr, which the widget does not read from a folder, and what to do instead."""
    from napari_promptseg._widgets.oneshot import OneShotWidget
    from napari_promptseg.errors import PromptsegError
    from napari_promptseg.io import list_images

    from .conftest import two_channel_pyramid

    folder = tmp_path / "slides"
    folder.mkdir()
    camera = data.camera()[:256, :256]
    two_channel_pyramid(np.stack([camera, camera[::-1]]), folder / "slide.ome.zarr", "ome.zarr")
    assert [p.name for p in _expand_images([folder])] == [p.name for p in list_images(folder)] == ["slide.ome.zarr"]
    viewer = make_napari_viewer()
    widget = OneShotWidget(viewer)
    widget.reference.set_layer(viewer.add_image(camera[:64, :64], name="reference"))
    widget.reference_labels.set_layer(viewer.add_labels(np.ones((64, 64), np.uint8), name="reference labels"))
    widget.folder.setText(str(folder))
    with pytest.raises(PromptsegError, match=r"only OME-Zarr images \(slide\.ome\.zarr\).*promptseg oneshot"):
        widget._inputs()


def mixed_folder(tmp_path: Path) -> Path:
    """Two PNG images and one OME-Zarr image: what `promptseg oneshot FOLDER` runs on all three of."""
    from .conftest import two_channel_pyramid

    folder = tmp_path / "mixed"
    camera_crops(folder, ["img1.png", "img2.png"])
    camera = data.camera()[:128, :128]
    two_channel_pyramid(np.stack([camera, camera[::-1]]), folder / "slide.ome.zarr", "ome.zarr")
    assert [p.name for p in _expand_images([folder])] == ["img1.png", "img2.png", "slide.ome.zarr"]
    return folder


def test_the_reader_says_which_ome_zarr_images_a_folder_stack_leaves_out(make_napari_viewer, tmp_path):
    """A folder of images and OME-Zarr images opened in napari was the stack of its image files: the OME-Zarr images
    (which the CLI runs on) were left out without a word. A warning notification now names how many, which, and
    what to do."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    from napari_promptseg.io import list_images
    from napari_promptseg.io.listing import image_files

    folder = mixed_folder(tmp_path)
    assert [p.name for p in image_files(list_images(folder))] == ["img1.png", "img2.png"]  # the stack's planes
    viewer = make_napari_viewer()
    before = len(notification_manager.records)
    [layer] = viewer.open(str(folder), plugin="napari-promptseg")
    assert layer.data.shape == (2, 64, 64) and layer.metadata["files"] == ["img1.png", "img2.png"]
    warnings = [n.message for n in notification_manager.records[before:] if n.severity == NotificationSeverity.WARNING]
    assert len(warnings) == 1, warnings
    assert "1 OME-Zarr image (slide.ome.zarr)" in warnings[0] and "open it alone" in warnings[0], warnings[0]
    assert "promptseg" in warnings[0] and str(folder) in warnings[0], warnings[0]
    before = len(notification_manager.records)
    viewer.open(str(tmp_path / "mixed" / "img1.png"), plugin="napari")  # a plain open: nothing said
    assert not [n for n in notification_manager.records[before:] if n.severity == NotificationSeverity.WARNING]


def test_the_one_shot_widget_says_which_ome_zarr_images_of_its_target_folder_it_leaves_out(
    make_napari_viewer, qtbot, tmp_path, litemedsam
):
    """The One-shot widget ran on a target folder's image files and left its OME-Zarr images out without a word (a
    folder of OME-Zarr images only was refused, saying why). The run now says, in a warning notification and in
    its summary, how many were left out and how to segment them."""
    from napari.qt.threading import WorkerBase
    from napari.utils.notifications import NotificationSeverity, notification_manager

    from napari_promptseg._widgets.oneshot import OneShotWidget

    folder = mixed_folder(tmp_path)
    viewer = make_napari_viewer()
    widget = OneShotWidget(viewer)
    camera = data.camera()
    reference = viewer.add_image(camera[:64, 100:164], name="reference")
    mask = np.zeros((64, 64), np.uint8)
    mask[20:40, 20:40] = 1
    widget.reference.set_layer(reference)
    widget.reference_labels.set_layer(viewer.add_labels(mask, name="reference labels"))
    widget.mode.setCurrentText("single region")
    widget.folder.setText(str(folder))
    before = len(notification_manager.records)
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=300_000)
    WorkerBase.await_workers(msecs=60_000)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    assert [layer.name for layer in viewer.layers][-2:] == ["img2 one-shot", "img2 one-shot prompts"]
    warnings = [n.message for n in notification_manager.records[before:] if n.severity == NotificationSeverity.WARNING]
    said = [w for w in warnings if "OME-Zarr" in w]
    assert len(said) == 1, warnings
    assert "1 OME-Zarr image (slide.ome.zarr)" in said[0] and f"promptseg oneshot {folder}" in said[0], said[0]
    summary = widget.runner.widget.summary.text()
    assert "1 OME-Zarr image (slide.ome.zarr)" in summary and "2 target(s)" in summary, summary


def test_a_link_to_an_image_moved_away_is_no_silent_gap_in_a_folder(tmp_path):
    """A folder's entry named as an image that is a broken link (its file moved, a share unmounted) was an input the
    CLI's own listing took before io.list_images, whose reading said why it failed; the shared rule left it out
    silently (it is neither a file nor a folder): a batch one image short, a stack one plane short, no word. It is
    one of the folder's images again, wherever the folder is opened, and its reading names it."""
    from napari_promptseg._widgets.oneshot import folder_targets
    from napari_promptseg.errors import PromptsegError
    from napari_promptseg.io import list_images
    from napari_promptseg.io.listing import image_files

    folder = tmp_path / "planes"
    camera_crops(folder, ["z1.png", "z3.png"])
    (folder / "z2.png").symlink_to(tmp_path / "moved" / "z2.png")
    expected = ["z1.png", "z2.png", "z3.png"]
    assert [p.name for p in _expand_images([folder])] == expected  # `promptseg oneshot FOLDER`: z2.png fails, said
    assert [p.name for p in image_files(list_images(folder))] == expected  # the files the reader stacks
    assert [p.name for p in folder_targets(str(folder))[0]] == expected  # the One-shot widget skips it saying why
    with pytest.raises(PromptsegError, match=r"z2\.png: cannot be read"):  # napari: no stack with a plane missing
        get_reader(str(folder))(str(folder))


def test_a_named_pipe_among_the_images_is_said_to_be_one_not_a_missing_file(tmp_path):
    """A named pipe named as an image (a FIFO a script left, `mkfifo frame.tif`) is listed with the folder's files
    (`ls` shows it) and its reading failed with 'no such file'. It now says what it is, without opening it (an
    open waits for a writer forever)."""
    import os

    from napari_promptseg.errors import PromptsegError
    from napari_promptseg.io import read_image

    folder = tmp_path / "frames"
    camera_crops(folder, ["a.png"])
    os.mkfifo(folder / "b.tif")
    assert [p.name for p in _expand_images([folder])] == ["a.png", "b.tif"]
    with pytest.raises(PromptsegError, match=r"b\.tif: a named pipe, not a file of pixels"):
        read_image(folder / "b.tif")


def test_an_input_folder_that_cannot_be_looked_into_is_named_not_a_file_inside_it(tmp_path, monkeypatch):
    """`promptseg segment private/ ...` on a folder without read permission said 'private/zarr.json: cannot be read
    as an input (Permission denied)': a file the user never named nor has (the OME-Zarr probe's). The folder is
    named, and what is wrong with it."""
    import errno
    import os

    from napari_promptseg.errors import PromptsegError

    locked = tmp_path / "private"
    camera_crops(locked, ["a.png"])
    is_file = Path.is_file

    def refused(self):  # what stat does inside a folder without search permission (root passes it all the same)
        if self.parent == locked:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return is_file(self)

    monkeypatch.setattr(Path, "is_file", refused)
    with pytest.raises(PromptsegError) as refused_run:
        _expand_images([locked])
    said = str(refused_run.value)
    assert said.startswith(f"{locked}: its contents may not be read (Permission denied)"), said
    assert "zarr" not in said, said


def test_a_subfolder_that_cannot_be_looked_into_is_skipped_not_the_whole_folder(tmp_path, monkeypatch, capsys):
    """A folder of images with a subfolder whose contents may not be read (another user's, a lost+found): looking
    for OME-Zarr metadata in it raised PermissionError, so the CLI refused the whole folder ('cannot be read as an
    input') and napari's folder stack failed, for a subfolder that is never an input. It is skipped and said."""
    import errno
    import os

    from napari_promptseg.io import list_images

    folder = tmp_path / "planes"
    camera_crops(folder, ["z1.png", "z2.png"])
    locked = folder / "private"
    locked.mkdir()
    is_file = Path.is_file

    def refused(self):  # what stat does inside a folder without search permission (root passes it all the same)
        if self.parent == locked:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return is_file(self)

    monkeypatch.setattr(Path, "is_file", refused)
    assert [p.name for p in _expand_images([folder])] == ["z1.png", "z2.png"]
    assert "skipped 1 subfolder(s), not searched" in capsys.readouterr().err
    assert [p.name for p in list_images(folder)] == ["z1.png", "z2.png"]
    assert reader_files(folder) == ["z1.png", "z2.png"]
