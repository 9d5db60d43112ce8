"""Where a batch run's labels of one input go: ``<output>/<stem>.tif``, or into the input's own OME-Zarr
``labels/<name>`` group, as the run's output format says; the labels carry the input's axes, pixel size, origin and
frame interval. The CLI's subcommands write through here, and so does the batch engine for a --time input without a
result (:func:`.time_point_labels.write_input_time_point`). No Qt, no napari."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..errors import PromptsegError


def writes_into_zarr(path: str | Path, output_format: str = "auto") -> bool:
    """Whether ``output_format`` puts the labels of the input ``path`` into its own OME-Zarr labels/ group (auto:
    for an OME-Zarr input)."""
    from .multiscale import is_ome_zarr

    return output_format == "ome-zarr" or (output_format == "auto" and is_ome_zarr(path))


def zarr_labels_not_writable(path: str | Path, output_format: str = "auto") -> str | None:
    """Why the labels of the OME-Zarr input ``path`` cannot go into its labels/ group (its disk read-only: a lab's
    archive share; a folder this user may not write), or None. Probed as a write is, the folder left as it was."""
    import tempfile

    folder = Path(path) / "labels" if (Path(path) / "labels").is_dir() else Path(path)
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        return (
            f"{path}: its labels go into its own labels/ group (--output-format {output_format}), which cannot be "
            f"written ({exc.strerror or exc}); give --output-format tiff to write them into -o instead"
        )
    return None


def write_input_labels(
    path: str | Path,
    labels: object,
    output: str | Path,
    *,
    output_format: str = "auto",
    labels_name: str = "promptseg",
    output_stems: Mapping[str, str] | None = None,
    axes: str | None = None,
    unplaced_if_unread: bool = False,
) -> str:
    """Write the labels of the input ``path`` where ``output_format`` says (:func:`writes_into_zarr`); returns where.
    ``output``: the run's output directory (the TIFF's folder; an OME-Zarr's labels are stamped with it).
    ``output_stems``: the run's names of inputs that share a stem (:func:`.images.distinct_output_stems`). ``axes``:
    the labels' axes (a stack's, :attr:`.multiscale.StackAxes.labels`) when the caller has read them; else the
    input's metadata is read. ``unplaced_if_unread``: a TIFF whose input's metadata cannot be read (the empty labels
    of an input that failed, maybe on that) is written without axes and calibration, its planes as they are."""
    import numpy as np

    from .images import output_stem, write_labels
    from .multiscale import is_ome_zarr
    from .ome_zarr_labels import write_ome_zarr_labels

    path = Path(path)
    if writes_into_zarr(path, output_format):
        if not is_ome_zarr(path):
            raise PromptsegError(
                f"{path}: --output-format ome-zarr writes into an OME-Zarr input's labels/ group; this input is not "
                "one (use --output-format tiff)"
            )
        return str(write_ome_zarr_labels(path, labels, labels_name, output))
    stem = output_stem(path, output_stems)
    try:
        placed = _placement(path, np.ndim(labels), axes)
    except Exception:  # noqa: BLE001 - the input's metadata unreadable: only where the caller takes that
        if not unplaced_if_unread:
            raise
        placed = {}
    out = Path(output) / f"{stem}.tif"
    return str(write_labels(out, labels, **placed))


def _placement(path: Path, ndim: int, axes: str | None) -> dict:
    """The input's axes, pixel size (and plane spacing), origin and frame interval, as its labels' TIFF keeps them:
    napari opens the labels over the image, in its unit (an OME-Zarr's origin and frame interval, as its labels/
    group would keep them)."""
    from .layer_data import labels_calibration, labels_frame_interval, labels_origin
    from .multiscale import labels_axes

    size, z_spacing = labels_calibration(path, ndim)
    return {
        "axes": axes if axes is not None else labels_axes(path, ndim),
        "pixel_size": size,
        "z_spacing": z_spacing,
        "origin": labels_origin(path, ndim),
        "frame_interval": labels_frame_interval(path, ndim),
    }
