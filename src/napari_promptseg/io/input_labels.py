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


def write_input_labels(
    path: str | Path,
    labels: object,
    output: str | Path,
    *,
    output_format: str = "auto",
    labels_name: str = "promptseg",
    output_stems: Mapping[str, str] | None = None,
    axes: str | None = None,
) -> str:
    """Write the labels of the input ``path`` where ``output_format`` says (:func:`writes_into_zarr`); returns where.
    ``output``: the run's output directory (the TIFF's folder; an OME-Zarr's labels are stamped with it).
    ``output_stems``: the run's names of inputs that share a stem (:func:`.images.distinct_output_stems`). ``axes``:
    the labels' axes (a stack's, :attr:`.multiscale.StackAxes.labels`) when the caller has read them; else the
    input's metadata is read."""
    import numpy as np

    from .images import output_stem, write_labels
    from .layer_data import labels_calibration, labels_frame_interval, labels_origin
    from .multiscale import is_ome_zarr, labels_axes
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
    axes = axes if axes is not None else labels_axes(path, np.ndim(labels))
    # the input's pixel size (and plane spacing): napari opens the labels over the image, in its unit
    size, z_spacing = labels_calibration(path, np.ndim(labels))
    # an OME-Zarr's origin and frame interval, as its labels/ group would keep them
    placed = {
        "origin": labels_origin(path, np.ndim(labels)),
        "frame_interval": labels_frame_interval(path, np.ndim(labels)),
    }
    out = Path(output) / f"{stem}.tif"
    return str(write_labels(out, labels, axes=axes, pixel_size=size, z_spacing=z_spacing, **placed))
