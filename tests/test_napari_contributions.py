"""The plugin's napari contributions as a user meets them, through napari's own machinery (viewer.open with the
plugin named, open_sample, the Plugins menu's dock widgets): readers, sample data, widgets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage import data

PLUGIN = "napari-promptseg"


@pytest.fixture
def viewer(make_viewer):
    return make_viewer()


def _tiffs(folder: Path, planes: list[np.ndarray]) -> list[str]:
    folder.mkdir()
    paths = []
    for k, plane in enumerate(planes):
        path = folder / f"z{k}.tif"
        tifffile.imwrite(path, plane)
        paths.append(str(path))
    return paths


def test_open_files_as_a_stack_with_the_plugin_gives_one_stack_layer(viewer, tmp_path):
    """File > Open Files as Stack... (viewer.open(files, stack=True)), choosing this plugin in napari's reader dialog:
    each TIFF came as a layer of its own, the stack asked for was not made. It is one (N, Y, X) layer now, in the
    order given, as napari's own reader stacks them."""
    camera = data.camera()[::4, ::4]
    planes = [camera, camera[::-1], camera[:, ::-1]]
    files = _tiffs(tmp_path / "planes", planes)
    [layer] = viewer.open(files, stack=True, plugin=PLUGIN)
    assert layer.data.shape == (3, 128, 128), layer.data.shape
    np.testing.assert_array_equal(np.asarray(layer.data), np.stack(planes))
    assert layer.name == "z0"  # as napari's reader names a stack: after its first file

    viewer.layers.clear()
    assert [layer.data.shape for layer in viewer.open(files, plugin=PLUGIN)] == [(128, 128)] * 3  # without stack


def test_a_stack_of_files_of_different_sizes_names_the_odd_one(viewer, tmp_path):
    camera = data.camera()[::4, ::4]
    files = _tiffs(tmp_path / "planes", [camera, camera[:100]])
    with pytest.raises(Exception, match=r"z1\.tif is \(100, 128\) uint8 and z0\.tif \(128, 128\) uint8") as raised:
        viewer.open(files, stack=True, plugin=PLUGIN)
    assert "folder" not in str(raised.value.__cause__ or raised.value)  # files, not a folder, were given
    assert not viewer.layers


@pytest.mark.parametrize(
    ("key", "layers"),
    [
        ("cell", [("Image", "cell")]),
        ("immunohistochemistry", [("Image", "immunohistochemistry")]),
        ("retina", [("Image", "retina")]),
        ("nuclei", [("Image", "nuclei"), ("Labels", "nuclei ground truth")]),
        ("nuclei_text", [("Image", "nuclei (text prompt)"), ("Labels", "nuclei (text prompt) ground truth")]),
        (
            "registration_pair",
            [
                ("Image", "registration fixed"),
                ("Points", "registration fixed landmarks"),
                ("Image", "registration moving"),
                ("Points", "registration moving landmarks"),
            ],
        ),
    ],
)
def test_every_sample_opens_from_naparis_menu_with_its_layers(viewer, key, layers):
    viewer.open_sample(PLUGIN, key)
    assert [(type(layer).__name__, layer.name) for layer in viewer.layers] == layers


def test_every_widget_of_the_plugins_menu_docks_with_its_title(viewer):
    from napari._app_model import get_app_model

    menu = [item.command.title for item in get_app_model().menus.get_menu(f"napari/plugins/{PLUGIN}")]
    assert menu == [
        "Interactive (boxes and points)",
        "One-shot reference",
        "Registration",
        "Text prompt",
        "Train text model",
    ]
    for title in menu:
        dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, title)
        assert dock.windowTitle() == f"{title} ({PLUGIN})" and widget.isVisible() is not None


def test_label_tiffs_promptseg_wrote_opened_as_a_stack_are_one_labels_layer(viewer, tmp_path, shared_data):
    """A time-lapse kept as one file per frame, segmented frame by frame (`promptseg segment frames/*.tif -o OUT`):
    each of OUT's label TIFFs opens as a Labels layer, but Open Files as Stack on them (this plugin chosen) gave an
    Image layer of ids, drawn in grey over the frames' stack. They stack into one Labels layer now."""
    from napari_promptseg.io import read_image, write_labels

    folder = shared_data / "nuclei_ctc_fluo_instances"
    frames = ["N2DH-GOWT1_t01.tif", "N2DH-GOWT1_t21.tif", "N2DH-GOWT1_t31.tif"]
    truth = [read_image(folder / "labels" / frame, role="labels")[::4, ::4] for frame in frames]
    out = tmp_path / "out"
    out.mkdir()
    files = [str(write_labels(out / frame, labels)) for frame, labels in zip(frames, truth, strict=True)]
    [layer] = viewer.open(files, stack=True, plugin=PLUGIN)
    assert type(layer).__name__ == "Labels" and layer.name == "N2DH-GOWT1_t01"
    np.testing.assert_array_equal(np.asarray(layer.data), np.stack(truth))

    viewer.layers.clear()  # images among them: an image stack, as before
    tifffile.imwrite(tmp_path / "frame.tif", read_image(folder / "images" / frames[0])[::4, ::4].astype(np.uint16))
    [layer] = viewer.open([*files, str(tmp_path / "frame.tif")], stack=True, plugin=PLUGIN)
    assert type(layer).__name__ == "Image"
