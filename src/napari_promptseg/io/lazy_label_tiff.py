"""Lazy labels (a slide's or a stack's found on a pyramid level, back at full resolution) written to a TIFF tile by
tile, never made whole in memory (:func:`.images.write_labels` past :data:`.images.LAZY_WHOLE_ABOVE_BYTES`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tifffile

from ..errors import PromptsegError
from ._files import replacing
from .images import OUTPUT_MARKER, PYRAMID_TILE, label_levels, needs_bigtiff, needs_pyramid
from .tiff_metadata import ome_uuid, tiff_calibration, tiff_origin

if TYPE_CHECKING:
    from .calibration import PixelSize


def write_lazy_labels(
    path: Path,
    labels: object,
    axes: str,
    pixel_size: PixelSize | None,
    z_spacing: float | None,
    *,
    origin: Sequence[float] | None,
    frame_interval: float | None,
) -> Path:
    """:func:`write_labels` of lazy labels past :data:`LAZY_WHOLE_ABOVE_BYTES`: a tiled OME-TIFF (a BigTIFF past its
    size; a pyramid past :func:`needs_pyramid`'s), written from an iterator of tiles, a strip of tile rows of one
    plane computed at a time, the pyramid's levels sampled from the labels' source (:func:`~..tiling.sampled_again`)
    where they keep it."""
    from ..tiling import sampled_again

    if axes and len(axes) != labels.ndim:
        raise PromptsegError(f"{path}: axes {axes!r} do not fit labels of shape {labels.shape}")
    nbytes = int(np.prod(labels.shape, dtype=np.int64)) * labels.dtype.itemsize
    bigtiff, pyramid = needs_bigtiff(nbytes), needs_pyramid(labels.shape, nbytes)
    named: dict = {"ome": True, "metadata": {"axes": axes, "UUID": _lazy_uuid(path.name, labels)}} if axes else {}
    stacked = len(axes) == 3 and axes[0] == "Z"
    calibration = tiff_calibration(pixel_size, z_spacing if stacked else None, named)
    tiff_origin(origin, labels.shape, pixel_size, z_spacing if stacked else None, named)
    if frame_interval and "metadata" in named and axes.startswith("T"):
        named["metadata"]["TimeIncrement"] = float(frame_interval)
    levels = []
    if pyramid:
        for level in label_levels(labels):  # every other pixel: from the source where the labels keep it
            taken = [np.arange(n) for n in level.shape[:-2]]
            taken += [np.arange(0, 2 ** (len(levels) + 1) * n, 2 ** (len(levels) + 1)) for n in level.shape[-2:]]
            again = sampled_again(labels, taken)
            levels.append(level if again is None else again)
    options = {"compression": "zlib", "photometric": "minisblack", "tile": PYRAMID_TILE}
    path.parent.mkdir(parents=True, exist_ok=True)
    ome = {"ome": named.pop("ome")} if "ome" in named else {}
    with replacing(path) as temp, tifffile.TiffWriter(temp, bigtiff=bigtiff, **ome) as tif:
        subifds = {"subifds": len(levels)} if levels else {}
        tif.write(
            _label_tiles(labels),
            shape=labels.shape,
            dtype=labels.dtype,
            software=OUTPUT_MARKER,
            **subifds,
            **options,
            **named,
            **calibration,
        )
        for level in levels:
            tif.write(_label_tiles(level), shape=level.shape, dtype=level.dtype, subfiletype=1, **options)
    return path


def _label_tiles(labels: object) -> Iterator[np.ndarray]:
    """The tiles of lazy (..., Y, X) labels in a TIFF's order (plane by plane, row of tiles by row), each row of
    tiles computed at once: one strip of :data:`PYRAMID_TILE` rows of one plane held at a time (a strip of a chunk's
    height held 1.6x the memory, measured)."""
    th, tw = PYRAMID_TILE
    h, w = labels.shape[-2:]
    for lead in np.ndindex(*labels.shape[:-2]):
        for y in range(0, h, th):
            strip = np.asarray(labels[(*lead, slice(y, y + th))])
            for x in range(0, w, tw):
                yield strip[:, x : x + tw]


def _lazy_uuid(name: str, labels: object) -> str:
    """:func:`~.tiff_metadata.ome_uuid` of lazy labels, from what they are sampled from (the level's labels and the
    index: small) where they keep it, else from their shape: the same for a rerun, no pixel computed."""
    from ..tiling import SAMPLING

    sampling = getattr(labels, SAMPLING, None)
    parts = [np.asarray(labels.shape, np.int64)]
    if sampling is not None:
        parts += [np.asarray(sampling[0]), *sampling[1]]
    return ome_uuid(name, np.concatenate([np.ascontiguousarray(p).view(np.uint8).ravel() for p in parts]))
