"""npe2 reader contribution: pyramidal (tiled, multi-resolution) TIFFs and OME-TIFFs opened lazily as multiscale
image layers, where napari's own TIFF reader reads the full-resolution level whole; and a folder of same-size images
as one stack, its files checked up front (napari's own reader stacks every file of a folder, whatever its kind, and
finds a different size only when it shows that plane). A TIFF without a pyramid is read too, whole, with its pixel
size as the layer's scale: napari offers the user a choice of reader for every TIFF once two plugins accept the
suffix, and a user who lets it remember this plugin must still open every TIFF. The label TIFFs promptseg writes open
as Labels layers, over the image they came from. A file's channels open one layer each, each knowing its channel
(:func:`.io.layer_data.per_channel_metadata`). Thin wrappers over :mod:`.io.layer_data`."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .io.folder_layers import files_stack_layer_data, folder_stack_layer_data, is_image_folder
from .io.images import LABELS_MARKERS, TIFF_SUFFIXES, output_marker, output_stem
from .io.layer_data import LayerData, per_channel_metadata, tiff_layer_data


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """The reader of ``path`` (a file, or several napari opens as one stack) when every file is a TIFF, or of a
    folder of images; else None."""
    paths = [path] if isinstance(path, str) else list(path)
    if len(paths) == 1 and is_image_folder(paths[0]):
        return read_folder
    if len(paths) == 1 and is_time_lapse_of_volumes(paths[0]):
        return read_time_lapse
    # os.path.isfile: a name the system refuses (too long) is no file here, not an error out of napari's probe
    if not paths or not all(Path(p).suffix.lower() in TIFF_SUFFIXES and os.path.isfile(p) for p in paths):
        return None
    return read_tiffs


def read_tiffs(path: str | list[str]) -> list[LayerData]:
    """The layers of the TIFF ``path``: a pyramid lazily, another TIFF whole; promptseg's label TIFFs as Labels
    layers. The images a TIFF of several leaves out are said in a napari warning. Several files are what napari's
    Open Files as Stack (``viewer.open(paths, stack=True)``) gives a reader, the only way it gives a list: one stack
    layer of them, in the order given, named after the first as napari's own reader names it (a layer each was not
    the stack asked for). promptseg's label TIFFs stack into a Labels layer, as each opens alone."""
    paths = [path] if isinstance(path, str) else list(path)
    if len(paths) > 1:
        layers = per_channel_metadata(files_stack_layer_data([Path(p) for p in paths], output_stem(paths[0])))
        if all(output_marker(p) in LABELS_MARKERS for p in paths):  # a frame-by-frame run's outputs (-o)
            return [(data, kwargs, "labels") for data, kwargs, _ in layers]
        return layers
    return per_channel_metadata(_said(tiff_layer_data(paths[0])))


def is_time_lapse_of_volumes(path: str) -> bool:
    """Whether ``path`` is an OME-Zarr time-lapse of volumes (T, Z, Y, X), which this reader opens as one lazy 4D
    layer the widgets work on at the time point shown (other OME-Zarrs are napari-ome-zarr's). Only metadata is read."""
    from .io.multiscale import is_ome_zarr, open_multiscale

    try:
        return is_ome_zarr(path) and open_multiscale(path, keep_time=True).axes == "tzyx"
    except Exception:  # noqa: BLE001 - napari's probe of every reader must get an answer: not ours
        return False


def read_time_lapse(path: str | list[str]) -> list[LayerData]:
    """An OME-Zarr time-lapse of volumes as one lazy 4D image layer (t, z, y, x), each level a dask array; and over
    it the labels images of its ``labels/`` group (what `segment --time T` wrote there), lazy Labels layers. A labels
    image that cannot be opened so is said in a napari warning."""
    from .io.layer_data import image_layer_data
    from .io.ome_zarr_label_layers import ome_zarr_label_layers

    path = path if isinstance(path, str) else path[0]
    layers = per_channel_metadata(image_layer_data(path))
    labels, problems = ome_zarr_label_layers(path, layers[0][1])
    if problems:
        from napari.utils.notifications import show_warning  # napari runs this reader: its notification area

        for message in problems:
            show_warning(message)
    return [*layers, *labels]


def read_folder(path: str | list[str]) -> list[LayerData]:
    """The stack layer of a folder of images; the OME-Zarr images it leaves out are said in a napari warning."""
    return per_channel_metadata(_said(folder_stack_layer_data(path if isinstance(path, str) else path[0])))


def _said(layers: list[LayerData]) -> list[LayerData]:
    """``layers``, what their metadata says was left out (``left_out``) shown as napari warnings."""
    left_out = [kwargs["metadata"]["left_out"] for _, kwargs, _ in layers if "left_out" in kwargs.get("metadata", {})]
    if left_out:
        from napari.utils.notifications import show_warning  # napari runs this reader: its notification area

        for message in left_out:
            show_warning(message)
    return layers
