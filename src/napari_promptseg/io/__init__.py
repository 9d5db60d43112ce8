"""Reading and writing images, masks and labels (TIFF, PNG, ..., OME-Zarr and pyramidal TIFF lazily). No Qt, no
napari."""

from .images import output_stem, read_image, read_mask, write_labels, write_overlay
from .listing import list_images
from .multiscale import MultiscaleImage, is_ome_zarr, open_multiscale
from .ome_zarr_labels import write_ome_zarr_labels

__all__ = [
    "MultiscaleImage",
    "is_ome_zarr",
    "list_images",
    "open_multiscale",
    "output_stem",
    "read_image",
    "read_mask",
    "write_labels",
    "write_ome_zarr_labels",
    "write_overlay",
]
