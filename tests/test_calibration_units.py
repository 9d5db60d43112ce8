"""Calibration units: a pixel size that is not 1 in ImageJ's "pixel" unit is a calibration (Fiji's, so BigWarp's),
and an OME-Zarr's scale in any NGFF length unit is read in micrometres, as OME-TIFF's PhysicalSize is."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tifffile
import zarr
from ome_zarr.format import FormatV04
from ome_zarr.writer import write_image
from skimage import data

from napari_promptseg.io.calibration import PixelSize, pixel_size
from napari_promptseg.io.layer_data import image_layer_data


def test_an_imagej_tiff_in_pixel_units_of_another_size_is_calibrated_as_imagej_reads_it(tmp_path):
    """ImageJ sets a TIFF's calibration to 1 / resolution in its description's unit, "pixel" as any other (and a
    blank unit when none is named): 2 px per pixel is 0.5 of a unit per pixel to Fiji, so BigWarp's landmarks are in
    half pixels. "pixel" was read as no calibration at all (only a missing unit gave 0.5), so those landmarks and the
    layer's scale were off by 2. At 1 px per pixel it is no calibration, as before."""
    image = data.camera()[:64, :80]
    pixel = {"unit": "pixel"}
    for name, per_pixel, unit in (("pixel", 2.0, pixel), ("blank", 2.0, {}), ("one", 1.0, pixel)):
        tifffile.imwrite(tmp_path / f"{name}.tif", image, imagej=True, resolution=(per_pixel,) * 2, metadata=unit)
    assert pixel_size(tmp_path / "pixel.tif") == pixel_size(tmp_path / "blank.tif") == PixelSize(0.5, 0.5, None)
    assert pixel_size(tmp_path / "one.tif") is None
    [(_, meta, _)] = image_layer_data(tmp_path / "pixel.tif", whole_when_single_level=True)
    assert meta["scale"] == [0.5, 0.5] and "units" not in meta


def _write_zyx_zarr(path, unit: str | None, scale: list[float]) -> None:
    """A 3-plane (Z, Y, X) OME-Zarr of 2 levels whose axes are in ``unit`` (none named: None), scaled by ``scale``."""
    stack = np.stack([data.camera()[:64, :80]] * 3)
    axes = [{"name": a, "type": "space", **({"unit": unit} if unit else {})} for a in "zyx"]
    transforms = [[{"type": "scale", "scale": [scale[0], scale[1] * f, scale[2] * f]}] for f in (1, 2)]
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        write_image(stack, root, axes=axes, fmt=FormatV04(), scale_factors=[2], coordinate_transformations=transforms)


@pytest.mark.parametrize(
    ("unit", "scale"),
    [("nanometer", [2000.0, 500.0, 500.0]), ("millimeter", [0.002, 0.0005, 0.0005]), ("micrometer", [2.0, 0.5, 0.5])],
)
def test_an_ome_zarr_scale_in_any_length_unit_is_read_in_micrometres(tmp_path, unit, scale):
    """An OME-Zarr in nanometres (as EM volumes are written) had a pixel size of '500 nanometer/px', and its layer a
    scale of 500 with no units (napari's units know no 'nanometer'); BigWarp landmarks were divided by 500. Every
    axis is read in µm now, the planes' spacing with it. Its layer keeps its own numbers in its own unit, as
    napari-ome-zarr opens it (napari converts no units: the labels TIFFs of it are in that unit too)."""
    path = tmp_path / f"{unit}.ome.zarr"
    _write_zyx_zarr(path, unit, scale)
    size = pixel_size(path)
    assert size.unit == "µm" and size[:2] == pytest.approx((0.5, 0.5))
    [(levels, meta, _)] = image_layer_data(path)
    short = {"nanometer": "nm", "millimeter": "mm", "micrometer": "µm"}[unit]
    assert meta["scale"] == pytest.approx(scale) and meta["units"] == [short] * 3
    assert [level.shape for level in levels] == [(3, 64, 80), (3, 32, 40)]


def test_an_ome_zarr_without_a_length_unit_keeps_its_scale_in_no_unit(tmp_path):
    """No unit named, or "pixel": the scale is the calibration of a blank unit (none is assumed), 1 none at all."""
    _write_zyx_zarr(tmp_path / "none.ome.zarr", None, [2.0, 0.5, 0.5])
    _write_zyx_zarr(tmp_path / "pixel.ome.zarr", "pixel", [2.0, 0.5, 0.5])
    _write_zyx_zarr(tmp_path / "one.ome.zarr", "pixel", [1.0, 1.0, 1.0])
    for name in ("none", "pixel"):
        assert pixel_size(tmp_path / f"{name}.ome.zarr") == PixelSize(0.5, 0.5, None)
        [(_, meta, _)] = image_layer_data(tmp_path / f"{name}.ome.zarr")
        assert meta["scale"] == pytest.approx([2.0, 0.5, 0.5]) and "units" not in meta
    assert pixel_size(tmp_path / "one.ome.zarr") is None


def test_labels_of_an_ome_zarr_in_nanometres_lie_over_it_whatever_their_file_kind(tmp_path):
    """napari-ome-zarr scales an OME-Zarr by its own numbers in its own unit (500 nanometer), and the labels TIFF of
    uint16 ids kept them (ImageJ's unit "nm"); but labels of more than 65535 ids (OME metadata), a whole slide's
    pyramid of labels (OME too) and the plugin's own layer and placements of the OME-Zarr were in µm (0.5 beside
    500: napari converts no units), so they covered a thousandth of the image. Every one is in nanometres now, and
    the origin with them; Fiji (Bio-Formats) still reads the files' pixel size, 0.5 µm."""
    from napari_ome_zarr import napari_get_reader

    from napari_promptseg.io import write_labels
    from napari_promptseg.io.layer_data import file_placement, labels_calibration, labels_origin, tiff_layer_data

    path = tmp_path / "em.ome.zarr"
    axes = [{"name": a, "type": "space", "unit": "nanometer"} for a in "yx"]
    origin_nm = {"type": "translation", "translation": [1e3, 2e3]}
    transforms = [[{"type": "scale", "scale": [500.0 * f] * 2}, origin_nm] for f in (1, 2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        root = zarr.open_group(str(path), mode="w", zarr_format=2)
        write_image(data.camera()[:64, :80], root, axes=axes, fmt=FormatV04(), scale_factors=[2],
                    coordinate_transformations=transforms)  # fmt: skip
    [(_, opened, _)] = napari_get_reader(str(path))(str(path))
    assert opened["scale"] == [500.0, 500.0]
    size, _ = labels_calibration(path, 2)
    origin = labels_origin(path, 2)
    many = np.zeros((64, 80), np.uint32)
    many[10:20, 10:20] = 70_000
    slide = np.zeros((8, 16_400), np.uint16)  # past the side labels are written as a pyramid
    slide[2:4, 10:20] = 1
    for name, labels in (("many", many), ("slide", slide)):
        out = write_labels(tmp_path / f"{name}.tif", labels, pixel_size=size, origin=origin)
        [(_, kwargs, kind)] = tiff_layer_data(out)
        assert kind == "labels" and kwargs["scale"] == pytest.approx([500.0, 500.0]), name
        assert kwargs["units"] == ["nm", "nm"] and kwargs["metadata"]["origin"] == pytest.approx([1e3, 2e3]), name
        assert pixel_size(out) == pytest.approx(PixelSize(0.5, 0.5, "µm"))
    [(_, kwargs, _)] = image_layer_data(path)
    assert kwargs["scale"] == pytest.approx([500.0, 500.0]) and kwargs["units"] == ["nm", "nm"]
    placed = file_placement(path, (2.0, 2.0))
    assert placed["scale"] == pytest.approx((1000.0, 1000.0)) and placed["units"] == ("nm", "nm")
