"""Small whole-slide files written as the scanners lay them out, for tests: an Aperio SVS (tiled pyramid with a
thumbnail after the full resolution, then label and macro images, the pixel size in the ImageDescription) and a
Hamamatsu NDPI (a TIFF whose offsets are 64 bits wide, the resolution in pixels per cm, a macro image after the
pyramid). tifffile reads both; it writes the SVS layout and a classic TIFF that :func:`write_ndpi` rewrites."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import tifffile

#: the label and macro images of a slide (the glass slide's barcode and a photo of the whole slide): never the image
LABEL = np.full((40, 50, 3), 200, np.uint8)
MACRO = np.full((60, 130, 3), 100, np.uint8)


def write_svs(path: Path, image: np.ndarray, mpp: float = 0.5, levels: int = 3) -> Path:
    """``image`` (Y, X, RGB) as an Aperio SVS of ``levels`` levels, each half the one before, tiled 64 x 64."""
    h, w = image.shape[:2]
    head = f"Aperio Image Library v12.0.15 \r\n{w}x{h} [0,0 {w}x{h}] (64x64) RAW/RGB"
    options = {"photometric": "rgb", "metadata": None}  # metadata=None: no tifffile JSON in the description

    def description(factor: int) -> str:
        size = "" if factor == 1 else f" -> {w // factor}x{h // factor} -"
        return f"{head}{size}|AppMag = 20|MPP = {mpp}"

    with tifffile.TiffWriter(path) as tif:
        tif.write(image, tile=(64, 64), description=description(1), **options)
        tif.write(np.ascontiguousarray(image[::8, ::8]), description=description(8), **options)  # the thumbnail
        for level in range(1, levels):
            reduced = np.ascontiguousarray(image[:: 2**level, :: 2**level])
            tif.write(reduced, tile=(64, 64), description=description(2**level), **options)
        tif.write(LABEL, subfiletype=1, description="Aperio Image Library v12.0.15\r\nlabel 50x40", **options)
        tif.write(MACRO, subfiletype=9, description="Aperio Image Library v12.0.15\r\nmacro 130x60", **options)
    return path


def write_ndpi(path: Path, image: np.ndarray, pixels_per_cm: float = 20000.0, levels: int = 3) -> Path:
    """``image`` (Y, X, RGB) as a Hamamatsu NDPI of ``levels`` levels (each half the one before) and a macro image:
    a classic TIFF written by tifffile, its IFDs copied to the end of the file in NDPI's layout (each IFD's next
    offset 8 bytes wide, then 4 bytes of high offset bits per tag; the header's first offset 8 bytes wide)."""

    def tags(magnification: float) -> list:  # Make and NDPI's FileFormat mark the file; a macro's lens is -1
        return [(271, "s", 0, "Hamamatsu", True), (65420, "I", 1, 1, True), (65421, "f", 1, magnification, True)]

    buffer = io.BytesIO()
    options = {"photometric": "rgb", "metadata": None, "resolutionunit": "CENTIMETER"}
    with tifffile.TiffWriter(buffer) as tif:
        for level in range(levels):
            factor = 2**level
            reduced = np.ascontiguousarray(image[::factor, ::factor])
            resolution = (pixels_per_cm / factor, pixels_per_cm / factor)
            tif.write(reduced, tile=(64, 64), resolution=resolution, extratags=tags(20.0 / factor), **options)
        tif.write(MACRO, resolution=(pixels_per_cm / 10,) * 2, extratags=tags(-1.0), **options)
    raw = bytearray(buffer.getvalue())
    offsets = []
    offset = struct.unpack_from("<I", raw, 4)[0]
    while offset:
        offsets.append(offset)
        count = struct.unpack_from("<H", raw, offset)[0]
        offset = struct.unpack_from("<I", raw, offset + 2 + 12 * count)[0]
    assert offsets[0] == 8  # the first IFD right after the header: unused once moved, so the offset may widen
    moved = []
    for offset in offsets:
        count = struct.unpack_from("<H", raw, offset)[0]
        moved.append(len(raw))
        raw += raw[offset : offset + 2 + 12 * count] + bytes(8) + bytes(4 * count)
    struct.pack_into("<Q", raw, 4, moved[0])
    for this, following in zip(moved, moved[1:], strict=False):
        count = struct.unpack_from("<H", raw, this)[0]
        struct.pack_into("<Q", raw, this + 2 + 12 * count, following)
    Path(path).write_bytes(bytes(raw))
    return Path(path)
