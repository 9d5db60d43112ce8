"""The metadata of the TIFFs promptseg writes (labels, register's outputs): pixel size, origin and the OME UUID, as
Fiji and :mod:`.calibration` read them back."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .calibration import PixelSize


#: TIFF ResolutionUnit names of the units a calibration is kept in as it is (ImageJ reads resolution tags in them)
_RESOLUTION_UNITS = {"cm": "CENTIMETER", "inch": "INCH"}
#: units of a pixel size (as :mod:`.calibration` and :func:`.layer_data.labels_calibration` name them) that an OME
#: PhysicalSize is written in as they are, by their OME name
_OME_UNITS = {"µm": "µm", "μm": "µm", "um": "µm", "micron": "µm", "nm": "nm", "mm": "mm", "m": "m"}


def ome_uuid(name: str, data: np.ndarray) -> str:
    """The UUID of the OME-XML of a TIFF named ``name`` holding ``data``: tifffile's is random unless given, this one
    of the name and pixels, so a rerun writes the same bytes."""
    digest = hashlib.blake2b(name.encode(), digest_size=16)
    digest.update(np.ascontiguousarray(data))
    return str(uuid.UUID(bytes=digest.digest()))


def tiff_calibration(size: PixelSize | None, z_spacing: float | None, named: dict) -> dict:
    """The keyword arguments of ``tifffile.imwrite`` that record a pixel size in a TIFF (labels, register's outputs)
    whose metadata is ``named`` (updated in place), as :func:`.calibration.pixel_size` reads it back (an OME file's in
    µm) and the plugin's layer of the file opens (:func:`.layer_data.layer_pixel_size`) in the same unit: an ImageJ
    file's unit and spacing in its description with resolution tags; an OME file's PhysicalSizeX/Y (Z) in its own
    unit where OME names it (nm, µm, mm, m: an OME-Zarr's nanometres, as napari-ome-zarr scales it), else in µm; a
    size in cm, inch or no unit named as resolution tags (OME would read it in µm, so the file's scale would differ
    from its image's), as is any size in a file of neither kind (a length in cm). No size: nothing, so the file is
    what it was without one."""
    if size is None:
        return {}
    from .calibration import micrometres_per_unit

    metadata = named.get("metadata", {})
    resolution = (1 / size.x, 1 / size.y)
    if named.get("imagej"):
        # ImageJ's description is ASCII, and ImageJ itself writes µm as "um"
        unit = {"µm": "um", "μm": "um"}.get(size.unit or "", size.unit)
        if unit and unit.isascii():
            metadata["unit"] = unit
        if z_spacing is not None:
            metadata["spacing"] = float(z_spacing)
        return {"resolution": resolution}
    factor = micrometres_per_unit(size.unit)
    if named.get("ome") and size.unit not in (*_RESOLUTION_UNITS, None) and factor is not None:
        # in the size's own unit where OME names it (an OME-Zarr's nm: its layer's numbers, which the labels' layer
        # must repeat), else in µm
        unit = _OME_UNITS.get(size.unit)
        factor = 1.0 if unit else factor
        unit = unit or "µm"
        metadata.update(
            PhysicalSizeX=size.x * factor,
            PhysicalSizeY=size.y * factor,
            PhysicalSizeXUnit=unit,
            PhysicalSizeYUnit=unit,
        )
        if z_spacing is not None:
            metadata.update(PhysicalSizeZ=float(z_spacing) * factor, PhysicalSizeZUnit=unit)
        return {}
    if size.unit in _RESOLUTION_UNITS:
        return {"resolution": resolution, "resolutionunit": _RESOLUTION_UNITS[size.unit]}
    if factor is not None:  # another length (nm, mm): in cm, which resolution tags hold
        if "metadata" in named and not named.get("ome"):  # tifffile's own description: the unit it is read in
            metadata["unit"] = size.unit
        cm = 1e4 / factor
        return {"resolution": (cm / size.x, cm / size.y), "resolutionunit": "CENTIMETER"}
    return {"resolution": resolution, "resolutionunit": "NONE"}  # a size of no unit named


def tiff_origin(
    origin: Sequence[float] | None,
    shape: Sequence[int],
    size: PixelSize | None,
    z_spacing: float | None,
    named: dict,
) -> None:
    """Record ``origin`` (where the first pixel of an image of ``shape`` lies, per axis, in the unit of ``size``; of
    ``z_spacing`` along a stack's planes) in the TIFF metadata ``named`` (updated in place; after
    :func:`tiff_calibration`) as Fiji reads it: ImageJ's ``xorigin``/``yorigin``/``zorigin`` in pixels (the negative
    of the offset: ImageJ's coordinate of a pixel is its index less the origin), OME's ``PositionX``/``Y``/``Z`` of
    every plane in the unit the file's PhysicalSize is in (its own), or in pixels where it has none.
    :func:`.layer_data.recorded_origin` reads it back. Nothing for a file whose axes are not named (no metadata)."""
    if origin is None or not any(origin) or "metadata" not in named:
        return
    metadata = named["metadata"]
    *planes, oy, ox = (float(o) for o in origin)
    oz = planes[0] if planes and str(metadata.get("axes", "")).upper().startswith("Z") else 0.0  # not a time's
    sx, sy = (size.x, size.y) if size is not None else (1.0, 1.0)
    dz = z_spacing or 1.0
    if named.get("imagej"):
        metadata.update(xorigin=-ox / sx, yorigin=-oy / sy)
        if oz:
            metadata["zorigin"] = -oz / dz
        return
    if not named.get("ome"):  # tifffile's own description ((1, Y, X) labels): in the pixel size's unit, per axis
        metadata["origin"] = [float(o) for o in origin]
        return
    count = int(np.prod(shape[:-2], dtype=np.int64))
    if "PhysicalSizeX" in metadata:  # in the pixel size's unit: the factor that took it there
        factor, unit = metadata["PhysicalSizeX"] / sx, metadata["PhysicalSizeXUnit"]
        positions = {"X": ox * factor, "Y": oy * factor}
        z = [(oz + k * dz) * factor for k in range(count)]
    else:
        unit = "pixel"
        positions = {"X": ox / sx, "Y": oy / sy}
        z = [oz / dz + k for k in range(count)]
    plane = {f"Position{a}": [v] * count for a, v in positions.items()}
    plane.update({f"Position{a}Unit": [unit] * count for a in positions})
    if oz:
        plane.update(PositionZ=z, PositionZUnit=[unit] * count)
    metadata["Plane"] = plane
