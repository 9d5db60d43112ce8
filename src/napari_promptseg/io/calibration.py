"""An image file's pixel size (its calibration), as Fiji and BigWarp read it: OME metadata (OME-TIFF PhysicalSizeX/Y,
an OME-Zarr's level-0 scale), else an ImageJ TIFF's resolution tags and ``unit``, else a TIFF's resolution tags in
centimetres or inches. Tools that work in calibrated units (BigWarp's landmark files) give coordinates in it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

from .multiscale import TIFF_SUFFIXES, is_ome_zarr

#: TIFF ResolutionUnit values that are lengths (1 is "none": a ratio, no calibration)
_TIFF_UNITS = {2: "inch", 3: "cm"}
#: 72 pixels per inch: what Photoshop, scanners and many exports write without measuring anything; ImageJ's TIFF
#: reader takes it for no calibration, so BigWarp's landmarks on such an image are in pixels
_SCREEN_DPI = 72.0


class PixelSize(NamedTuple):
    """The size of one pixel along x (columns) and y (rows), in ``unit`` (as the file names it; None: not named)."""

    x: float
    y: float
    unit: str | None = None

    def __str__(self) -> str:
        size = f"{self.x:g}" if self.x == self.y else f"{self.x:g} x {self.y:g}"
        return f"{size} {self.unit or 'units'}/px"


def pixel_size(path: str | Path) -> PixelSize | None:
    """The pixel size ``path`` is calibrated with, or None when it has none (or is not a TIFF or an OME-Zarr)."""
    path = Path(path)
    try:
        if is_ome_zarr(path):
            return _zarr_pixel_size(path)
        if path.suffix.lower() in TIFF_SUFFIXES and path.is_file():
            return _tiff_pixel_size(path)
    except Exception:  # noqa: BLE001 - an unreadable file: its reader says why; no calibration here
        return None
    return None


#: units that say "not calibrated" (ImageJ's default unit is the pixel)
_NOT_LENGTHS = {"pixel", "pixels", "px"}


def _valid(x: float | None, y: float | None, unit: str | None) -> PixelSize | None:
    if x is None or y is None or not (x > 0 and y > 0) or str(unit).strip().lower() in _NOT_LENGTHS:
        return None
    return PixelSize(float(x), float(y), unit or None)


def _zarr_pixel_size(path: Path) -> PixelSize | None:
    from .multiscale import open_multiscale

    image = open_multiscale(path)
    x, y = image.pixel_size.get("x"), image.pixel_size.get("y")
    unit = image.axis_info.get("x", {}).get("unit")
    if x == 1 and y == 1 and unit is None:  # the default scale: not calibrated
        return None
    return _valid(x, y, unit)


def _tiff_pixel_size(path: Path) -> PixelSize | None:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if tif.is_ome and tif.ome_metadata:
            found = _ome_pixel_size(tif.ome_metadata)
            if found is not None:
                return found
        page = tif.pages.first
        tags = page.tags
        if "XResolution" not in tags or "YResolution" not in tags:
            return None
        xres, yres = (_rational(tags[name].value) for name in ("XResolution", "YResolution"))
        if not (xres and yres):
            return None
        unit = (tif.imagej_metadata or {}).get("unit") if tif.is_imagej else None
        if unit is None:
            unit = _TIFF_UNITS.get(int(getattr(tags.get("ResolutionUnit"), "value", 1)))
            if unit == "inch" and xres == _SCREEN_DPI:  # a default of image software, which Fiji reads as none
                return None
        if unit is None:  # resolution without a length unit: a ratio of pixels, no calibration
            return None
        return _valid(1 / xres, 1 / yres, str(unit))


def _rational(value: object) -> float | None:
    if isinstance(value, tuple) and len(value) == 2:
        return value[0] / value[1] if value[1] else None
    return float(value) if value else None


def _ome_pixel_size(xml: str) -> PixelSize | None:
    """The first image's PhysicalSizeX/Y of OME-XML (micrometres unless its unit attribute says otherwise)."""
    pixels = re.search(r"<(?:\w+:)?Pixels\b[^>]*>", xml)
    if pixels is None:
        return None

    def attribute(name: str) -> str | None:
        found = re.search(rf'\b{name}="([^"]*)"', pixels.group(0))
        return found.group(1) if found else None

    try:
        x, y = (float(v) if v else None for v in (attribute("PhysicalSizeX"), attribute("PhysicalSizeY")))
    except ValueError:
        return None
    return _valid(x, y, attribute("PhysicalSizeXUnit") or "µm")
