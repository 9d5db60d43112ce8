"""npe2 reader contribution: pyramidal (tiled, multi-resolution) TIFFs and OME-TIFFs opened lazily as multiscale
image layers, where napari's own TIFF reader reads the full-resolution level whole. Other TIFFs are left to napari's
reader (no pyramid: nothing to add). A thin wrapper over :func:`.io.layer_data.image_layer_data`."""

from __future__ import annotations

from collections.abc import Callable

from .io.layer_data import LayerData, image_layer_data
from .io.multiscale import is_multiscale_tiff


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """The reader of ``path`` (a file, or several dropped together) when every file is a pyramidal TIFF, else None."""
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(is_multiscale_tiff(p) for p in paths):
        return None
    return read_pyramids


def read_pyramids(path: str | list[str]) -> list[LayerData]:
    """The layers of each pyramidal TIFF in ``path``, in order."""
    paths = [path] if isinstance(path, str) else list(path)
    return [layer for p in paths for layer in image_layer_data(p)]
