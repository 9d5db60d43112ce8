"""npe2 reader contribution: pyramidal (tiled, multi-resolution) TIFFs and OME-TIFFs opened lazily as multiscale
image layers, where napari's own TIFF reader reads the full-resolution level whole; and a folder of same-size images
as one stack, its files checked up front (napari's own reader stacks every file of a folder, whatever its kind, and
finds a different size only when it shows that plane). Other TIFFs are left to napari's reader (no pyramid: nothing
to add). Thin wrappers over :mod:`.io.layer_data`."""

from __future__ import annotations

from collections.abc import Callable

from .io.layer_data import LayerData, folder_stack_layer_data, image_layer_data, is_image_folder
from .io.multiscale import is_multiscale_tiff


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """The reader of ``path`` (a file, or several dropped together) when every file is a pyramidal TIFF, or of a
    folder of images; else None."""
    paths = [path] if isinstance(path, str) else list(path)
    if len(paths) == 1 and is_image_folder(paths[0]):
        return read_folder
    if not paths or not all(is_multiscale_tiff(p) for p in paths):
        return None
    return read_pyramids


def read_pyramids(path: str | list[str]) -> list[LayerData]:
    """The layers of each pyramidal TIFF in ``path``, in order."""
    paths = [path] if isinstance(path, str) else list(path)
    return [layer for p in paths for layer in image_layer_data(p)]


def read_folder(path: str | list[str]) -> list[LayerData]:
    """The stack layer of a folder of images."""
    return folder_stack_layer_data(path if isinstance(path, str) else path[0])
