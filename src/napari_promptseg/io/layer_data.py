"""Image files as napari layer data, built without napari: ``(data, keyword arguments, "image")`` tuples of lazily
read arrays and plain values, what a napari reader returns (the plugin's reader, :mod:`.._reader`, only hands them
on). A pyramid becomes one multiscale layer whose levels are the dask arrays :func:`.multiscale.open_multiscale`
gives the CLI and the batch runs (no pixel is read here); colour slides an RGB layer, separately acquired channels
one layer each (napari's ``channel_axis``), and the file's pixel size (:mod:`.calibration`) the layer's scale."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .calibration import pixel_size
from .images import TIFF_SUFFIXES, output_stem
from .multiscale import open_multiscale

#: (data, keyword arguments of ``viewer.add_image``, layer type): napari's LayerDataTuple
LayerData = tuple[Any, dict[str, Any], str]

#: the length units of OME and ImageJ metadata, as napari's units (pint) name them; another unit stays in the
#: layer's metadata only (a unit napari cannot parse would stop the layer from opening)
_NAPARI_UNITS = {
    "µm": "µm",
    "μm": "µm",  # Greek mu, as some writers spell it
    "um": "µm",
    "micron": "µm",
    "microns": "µm",
    "nm": "nm",
    "mm": "mm",
    "cm": "cm",
    "m": "m",
    "inch": "inch",
}


def image_layer_data(path: str | Path) -> list[LayerData]:
    """The image layer(s) of a pyramidal TIFF (any TIFF or OME-Zarr image too: one level is a plain layer), read
    lazily: every level a dask array in the project's axis order ((Z,) Y, X (, C)), nothing read until napari asks
    for a tile. RGB(A) colour samples make an RGB layer; other channels one layer per channel, named after the
    OME-TIFF's channel names when it has them; the file's pixel size is the layer's scale (and units)."""
    path = Path(path)
    pyramid = open_multiscale(path)
    name = output_stem(path)
    multiscale = len(pyramid.levels) > 1
    metadata: dict[str, Any] = {"path": str(path)}
    kwargs: dict[str, Any] = {"name": name, "multiscale": multiscale, "metadata": metadata}
    channel_names, z_spacing = _ome_tiff_details(path)
    size = pixel_size(path)
    if size is not None:
        stacked = pyramid.axes.startswith("z")
        z = z_spacing if pyramid.stack_axis == "z" and z_spacing else pyramid.pixel_size.get("z", 1.0)
        kwargs["scale"] = ([float(z)] if stacked else []) + [size.y, size.x]
        metadata["pixel_size"] = str(size)
        unit = _NAPARI_UNITS.get(str(size.unit))
        if unit is not None:
            kwargs["units"] = ["pixel" if stacked and pyramid.stack_axis == "t" else unit] * stacked + [unit] * 2
    if pyramid.axes.endswith("c"):
        if pyramid.rgb:
            kwargs["rgb"] = True
        else:  # napari's colour maps and blending per channel; the segmentation widgets take one layer each
            channels = int(pyramid.levels[0].shape[-1])
            kwargs["channel_axis"] = len(pyramid.axes) - 1
            if len(channel_names) != channels or len(set(channel_names)) != channels:
                channel_names = [f"channel {k}" for k in range(channels)]
            kwargs["name"] = [f"{name} {channel}" for channel in channel_names]
    data = pyramid.levels if multiscale else pyramid.levels[0]
    return [(data, kwargs, "image")]


def _ome_tiff_details(path: Path) -> tuple[list[str], float | None]:
    """An OME-TIFF's channel names and plane spacing (PhysicalSizeZ, when in the unit of its pixel size) of its
    first image; ([], None) for any other file. Only the header is read."""
    import tifffile

    if path.suffix.lower() not in TIFF_SUFFIXES:
        return [], None
    with tifffile.TiffFile(path) as tif:
        xml = tif.ome_metadata if tif.is_ome else None
    pixels = re.search(r"<(?:\w+:)?Pixels\b.*?(?:</(?:\w+:)?Pixels>|$)", xml or "", re.DOTALL)
    if pixels is None:
        return [], None
    block = pixels.group(0)
    tag = re.match(r"<[^>]*>", block).group(0)
    names = [
        re.search(r'\bName="([^"]*)"', channel).group(1) if 'Name="' in channel else ""
        for channel in re.findall(r"<(?:\w+:)?Channel\b[^>]*>", block)
    ]

    def attribute(key: str) -> str | None:
        found = re.search(rf'\b{key}="([^"]*)"', tag)
        return found.group(1) if found else None

    z_spacing = None
    try:
        z = float(attribute("PhysicalSizeZ") or "nan")
    except ValueError:
        z = float("nan")
    # units default to micrometres in OME; a z in another unit than x would stretch the stack, so it is left out
    if z > 0 and (attribute("PhysicalSizeZUnit") or "µm") == (attribute("PhysicalSizeXUnit") or "µm"):
        z_spacing = z
    return [n for n in names if n], z_spacing
