"""Reading and writing images, masks and labels. No Qt, no napari."""

from .images import read_image, read_mask, write_labels, write_overlay

__all__ = ["read_image", "read_mask", "write_labels", "write_overlay"]
