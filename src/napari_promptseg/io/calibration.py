"""An image file's pixel size (its calibration), as Fiji and BigWarp read it: OME metadata (OME-TIFF PhysicalSizeX/Y
as Bio-Formats reads it, an OME-Zarr's level-0 scale), else a TIFF's resolution tags as ImageJ's TIFF reader reads
them (with an ImageJ TIFF's ``unit``). Tools that work in calibrated units (BigWarp's landmark files) give
coordinates in it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from .multiscale import TIFF_SUFFIXES, is_ome_zarr

if TYPE_CHECKING:
    from .multiscale import MultiscaleImage

#: TIFF ResolutionUnit values that are lengths (1, "none", calibrates with a blank unit: see _tiff_pixel_size)
_TIFF_UNITS = {2: "inch", 3: "cm"}
#: 72 pixels per inch: what Photoshop, scanners and many exports write without measuring anything; ImageJ's TIFF
#: reader takes it for no calibration, so BigWarp's landmarks on such an image are in pixels
_SCREEN_DPI = 72.0
#: micrometres per OME length unit (OME's UnitsLength): Bio-Formats gives Fiji every PhysicalSize in µm
_OME_MICROMETRES = {
    "km": 1e9, "hm": 1e8, "dam": 1e7, "m": 1e6, "dm": 1e5, "cm": 1e4, "mm": 1e3, "µm": 1.0, "um": 1.0,
    "nm": 1e-3, "pm": 1e-6, "fm": 1e-9, "Å": 1e-4, "in": 25400.0, "ft": 304800.0, "yd": 914400.0,
    "pt": 25400.0 / 72,
}  # fmt: skip


#: micrometres per NGFF axis unit (OME-Zarr names its lengths in full, as UDUNITS-2 does)
_NGFF_MICROMETRES = {
    "yoctometer": 1e-18, "zeptometer": 1e-15, "attometer": 1e-12, "femtometer": 1e-9, "picometer": 1e-6,
    "angstrom": 1e-4, "nanometer": 1e-3, "micrometer": 1.0, "millimeter": 1e3, "centimeter": 1e4, "decimeter": 1e5,
    "meter": 1e6, "hectometer": 1e8, "kilometer": 1e9, "megameter": 1e12, "gigameter": 1e15, "terameter": 1e18,
    "petameter": 1e21, "exameter": 1e24, "zettameter": 1e27, "yottameter": 1e30, "inch": 25400.0, "foot": 304800.0,
    "yard": 914400.0, "mile": 1609344000.0, "parsec": 3.0856775814913673e22, "micron": 1.0,
}  # fmt: skip


class PixelSize(NamedTuple):
    """The size of one pixel along x (columns) and y (rows), in ``unit`` (as the file names it; None: not named)."""

    x: float
    y: float
    unit: str | None = None

    def __str__(self) -> str:
        size = f"{self.x:g}" if self.x == self.y else f"{self.x:g} x {self.y:g}"
        return f"{size} {self.unit or 'units'}/px"


def level_pixel_size(size: PixelSize | None, factors: Sequence[float]) -> PixelSize | None:
    """The pixel size of a pyramid level ``factors`` (rows, columns) times coarser than an image of pixel size
    ``size``: ``size`` times the factors, per axis; an uncalibrated image's level a size of no unit (its factors),
    None at its full resolution (no calibration: nothing to record)."""
    fy, fx = (float(f) for f in factors)
    if size is None:
        return None if fx == fy == 1 else PixelSize(fx, fy, None)
    return PixelSize(size.x * fx, size.y * fy, size.unit)


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


#: units that name no length (ImageJ's default unit is the pixel): a size in them is a calibration of a blank unit
_NOT_LENGTHS = {"pixel", "pixels", "px"}


def _valid(x: float | None, y: float | None, unit: str | None) -> PixelSize | None:
    """The pixel size x by y in ``unit``; None when it is none (missing, not above 0, 1 by 1 of no length). A size
    other than 1 in pixels is a calibration with a blank unit, as ImageJ reads it (2 px per pixel: 0.5 'pixel' per
    pixel, what BigWarp's landmarks are in), the same as a size of no unit named."""
    if x is None or y is None or not (x > 0 and y > 0):
        return None
    if str(unit).strip().lower() in _NOT_LENGTHS:
        return None if x == y == 1 else PixelSize(float(x), float(y), None)
    return PixelSize(float(x), float(y), unit or None)


def micrometres_per_unit(unit: str | None) -> float | None:
    """Micrometres in one ``unit`` of length, named as NGFF names it ("nanometer") or as OME abbreviates it ("nm");
    None for a unit that is no length known here (or none)."""
    if unit is None:
        return None
    return _OME_MICROMETRES.get(unit.strip()) or _NGFF_MICROMETRES.get(unit.strip().lower())


def in_micrometres(size: PixelSize | None) -> tuple[float, float] | None:
    """(x, y) of ``size`` in micrometres; None without a size, or for a unit that is no length known here."""
    factor = None if size is None else micrometres_per_unit(size.unit)
    return None if factor is None else (size.x * factor, size.y * factor)


def pixel_sizes_in_one_unit(
    fixed: PixelSize | None, moving: PixelSize | None
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Two images' pixel sizes, (x, y) each, in one unit (µm, or the unit both name alike): how their pixels
    compare; None when either has none, or their units do not convert (no landmark is placed by a guess)."""
    if fixed is None or moving is None:
        return None
    if fixed.unit == moving.unit:
        return (fixed.x, fixed.y), (moving.x, moving.y)
    both = in_micrometres(fixed), in_micrometres(moving)
    return None if None in both else both


def axis_micrometres(image: MultiscaleImage, axis: str) -> float | None:
    """An OME-Zarr's level-0 scale along ``axis`` in micrometres; None when its unit is no length known here."""
    factor = micrometres_per_unit(image.axis_info.get(axis, {}).get("unit"))
    size = image.pixel_size.get(axis)
    return None if factor is None or size is None else size * factor


def _zarr_pixel_size(path: Path) -> PixelSize | None:
    """An OME-Zarr's level-0 scale: in micrometres when its x and y units are lengths (so an image in nanometres
    is on the grid of one in µm, and BigWarp's µm apply), else in the scale's own numbers (no unit: none)."""
    from .multiscale import open_multiscale

    image = open_multiscale(path, keep_time=True)  # its metadata alone: a time-lapse of volumes' too (--time)
    x, y = axis_micrometres(image, "x"), axis_micrometres(image, "y")
    if x is not None and y is not None:
        return _valid(x, y, "µm")
    x, y = image.pixel_size.get("x"), image.pixel_size.get("y")
    unit = image.axis_info.get("x", {}).get("unit")
    if x == 1 and y == 1 and unit is None:  # the default scale: not calibrated
        return None
    return _valid(x, y, unit)


def _tiff_pixel_size(path: Path) -> PixelSize | None:
    """As ImageJ's TIFF reader (Fiji's, so BigWarp's) calibrates: 1 / X/YResolution per pixel in the
    ResolutionUnit's unit, cm or inch (72 px per inch: none), a blank unit for NONE (1; tifffile's own 1 px per
    unit is no calibration); no ResolutionUnit tag: none (ImageJ leaves the TIFF spec's default, inch, aside). An
    ImageJ TIFF's unit is its description's (a cm file whose description says um is scaled to um, as ImageJ does).
    An OME-TIFF's OME metadata comes first (as Bio-Formats, which Fiji opens it with, reads it)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if tif.is_ome and tif.ome_metadata:
            found = _ome_pixel_size(tif.ome_metadata)
            if found is not None:
                return found
        slide = _slide_pixel_size(tif)
        if slide is not None:
            return slide
        page = tif.pages.first
        tags = page.tags
        if "XResolution" not in tags or "YResolution" not in tags:
            return None
        xres, yres = (_rational(tags[name].value) for name in ("XResolution", "YResolution"))
        if not (xres and yres):
            return None
        x, y = 1 / xres, 1 / yres
        code = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else None
        unit = {1: ""}.get(code, _TIFF_UNITS.get(code)) if code is not None else None  # "": named none
        if code == 2 and xres == _SCREEN_DPI:  # a default of image software, which ImageJ reads as 1 px per px
            x, y, unit = 1.0, 1.0, None
        if tif.is_imagej:  # ImageJ takes the unit from the description ("": none named) whatever the tag says
            described = str((tif.imagej_metadata or {}).get("unit", ""))
            if unit == "cm" and described == "um":
                x, y = x * 1e4, y * 1e4
            unit = described
        shaped = tif.shaped_metadata[0] if tif.is_shaped and tif.shaped_metadata else {}
        described = micrometres_per_unit(shaped.get("unit")) if isinstance(shaped.get("unit"), str) else None
        if unit == "cm" and described:  # tifffile's own description names the unit of the length in cm (labels)
            x, y, unit = x * 1e4 / described, y * 1e4 / described, shaped["unit"]
        if unit is None:  # no unit tag, or 72 dpi: not calibrated
            return None
        if not unit.strip() and x == y == 1:  # 1 px per unit of no name: the pixels themselves
            return None
        return _valid(x, y, unit.strip() or None)


def _slide_pixel_size(tif: object) -> PixelSize | None:
    """A whole slide's pixel size in micrometres as its scanner records it, and OpenSlide and Bio-Formats read it:
    an Aperio SVS's ImageDescription ``|MPP = 0.2520`` (its resolution tags are tifffile's or none), a Hamamatsu
    NDPI's resolution tags in pixels per cm (in µm, as a pathologist measures a slide, not ImageJ's cm). None for
    any other TIFF, or a slide without it."""
    page = tif.pages.first
    if tif.is_svs:
        found = re.search(r"\|\s*MPP\s*=\s*([0-9.eE+-]+)", page.description)
        try:
            mpp = float(found.group(1)) if found else None
        except ValueError:
            return None
        return _valid(mpp, mpp, "µm")
    tags = page.tags
    if tif.is_ndpi and "ResolutionUnit" in tags and int(tags["ResolutionUnit"].value) == 3:  # 3: centimetre
        xres, yres = (_rational(tags[name].value) if name in tags else None for name in ("XResolution", "YResolution"))
        return _valid(1e4 / xres, 1e4 / yres, "µm") if xres and yres else None
    return None


def _rational(value: object) -> float | None:
    if isinstance(value, tuple) and len(value) == 2:
        return value[0] / value[1] if value[1] else None
    return float(value) if value else None


def _ome_pixel_size(xml: str) -> PixelSize | None:
    """The first image's PhysicalSizeX/Y of OME-XML as Bio-Formats gives them to Fiji: each in its own unit
    (micrometres when it names none, the OME default), converted to micrometres (a unit that is no length, e.g.
    "pixel", leaves that size out), and one size missing taken from the other."""
    pixels = re.search(r"<(?:\w+:)?Pixels\b[^>]*>", xml)
    if pixels is None:
        return None

    def attribute(name: str) -> str | None:
        found = re.search(rf'\b{name}="([^"]*)"', pixels.group(0))
        return found.group(1) if found else None

    x, y = (ome_micrometres(attribute(f"PhysicalSize{a}"), attribute(f"PhysicalSize{a}Unit")) for a in "XY")
    x, y = (y if x is None else x), (x if y is None else y)
    return _valid(x, y, "µm")


def ome_micrometres(value: str | None, unit: str | None) -> float | None:
    """An OME PhysicalSize attribute (``value`` in ``unit``, micrometres when it names none: the OME default) in
    micrometres, as Bio-Formats gives it to Fiji; None when missing, not a number or in a unit that is no length."""
    try:
        size = float(value) if value else None
    except ValueError:
        return None
    factor = _OME_MICROMETRES.get((unit or "µm").strip())
    return None if size is None or factor is None else size * factor
