"""napari-promptseg: segment and register microscopy, histology and medical images from prompts.

From the napari console or a script::

    from napari_promptseg import (clear_stores, disk_stores, propagate_through_stack, register, segment,
                                  segment_like, segment_text, train_text_segmenter)
    labels = segment(image, boxes=[(x0, y0, x1, y1)])
    labels = segment(viewer.layers["nuclei"], boxes=viewer.layers["Shapes"])  # napari layers too (help(segment))
    result = segment_text(image, "nuclei")  # result.labels, result.route, result.reason
    train_text_segmenter("triplets.csv", "my-model/")  # then segment_text(image, "polyp", text_model="my-model/")
    volume_result = propagate_through_stack(volume, 40, boxes=[(x0, y0, x1, y1)])  # 3D: .labels (Z, Y, X)
    disk_stores()  # what is kept on disk; clear_stores(embeddings=True, weights="sam_vit_b") deletes it
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np

    from .callbacks import ProgressCallback

__all__ = [
    "clear_stores",
    "disk_stores",
    "find_all_like",
    "layer_placement",
    "load_text_segmenter",
    "propagate_through_stack",
    "register",
    "segment",
    "segment_instances_like",
    "segment_like",
    "segment_stack",
    "segment_text",
    "train_text_segmenter",
    "__version__",
]

#: the other entry points load lazily: importing the package (napari does at start-up) stays cheap
_LAZY = {
    "segment_text": "napari_promptseg.methods.text",
    "segment_like": "napari_promptseg.methods.oneshot",
    "segment_instances_like": "napari_promptseg.methods.instances",
    "find_all_like": "napari_promptseg.methods.instances",
    "layer_placement": "napari_promptseg.io.layer_objects",
    "register": "napari_promptseg.methods.registration",
    "train_text_segmenter": "napari_promptseg.methods.text_training",
    "load_text_segmenter": "napari_promptseg.models",
    "segment_stack": "napari_promptseg.methods.volume",
    "propagate_through_stack": "napari_promptseg.methods.volume",
    "disk_stores": "napari_promptseg.models.disk_stores",
    "clear_stores": "napari_promptseg.models.disk_stores",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'napari_promptseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    # help(napari_promptseg) and the console's tab completion list dir(): without the lazy names, they showed
    # segment alone of the entry points
    return sorted({*globals(), *_LAZY})


def segment(
    image: np.ndarray | object,
    *,
    boxes: Sequence[Sequence[float]] | object = (),
    points: Sequence[Sequence[float]] | object = (),
    negative_points: Sequence[Sequence[float]] | object = (),
    model: str = "litemedsam",
    weights: str | None = None,
    device: str = "auto",
    channel_axis: int | None = None,
    channels: list[int] | None = None,
    normalize: str = "auto",
    object_size: float | None = None,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
    viewer: object | None = None,
) -> np.ndarray:
    """Instance labels (0 = background, one id per object) for boxes and points in pixel x = column, y = row.

    Each box is one object; points inside a box refine it; points outside all boxes make one more object. Where
    objects overlap, a pixel goes to the more confident one (within a tile by the pixel's logit, across the tiles of a
    large image by the objects' predicted IoU; an object left without a pixel is warned of). One box or point may be
    given alone (``boxes=(x0, y0, x1, y1)``). A napari layer's ``data`` holds (row, column), so pass the layer itself
    (below), not ``points=layer.data``, which would be read as (x, y).
    ``object_size``: the objects' diameter in pixels, which sets the working scale (default: the boxes' size;
    the CLI's ``--object-size``, the Interactive widget's object size field).
    ``normalize``: "auto" (uint8 min-max, other types a percentile window), "percentile", "minmax", or "none" (the
    pixels as they are: integers divided by their type's maximum, floats taken as lying in [0, 1]; floats outside
    it are refused, naming their range).
    A pyramid (a multiscale layer's ``data``) is read at the coarsest level the working scale needs, as the CLI
    reads an OME-Zarr; prompts stay in full-resolution pixels and the labels come back at full resolution.

    napari layers are taken as they are: an Image layer (RGB, multiscale) for ``image``, a Shapes layer for
    ``boxes`` (each shape's bounding box), Points layers for ``points`` and ``negative_points`` (a point whose
    ``positive`` feature is False, as the Interactive widget marks them, is a negative click). With an Image layer,
    the prompt layers are read through each layer's scale and translate (world coordinates) into its pixels; with
    an array, in their own data coordinates. An Image layer over a stack (Z, Y, X) is segmented on the plane its
    prompt layers lie on, and the labels cover the whole layer (that plane segmented); the labels are the image's
    pixels, so ``viewer.add_labels(labels, **layer_placement(layer))`` lies over it (scaled, moved, rotated).
    A stack's prompt layers (plane, row, column) over a 2D image (a projection of the stack) give the prompts of one
    plane, as napari shows them: with ``viewer`` (``viewer=viewer``), of the plane it shows; without, of their only
    plane (prompts on several planes are refused, naming the layers and planes).
    ``progress(fraction, message)`` is told how far it got; ``cancel()`` returning True stops it
    (``CancelledError``).

    Returns uint16/uint32 labels of the image's (rows, columns), or of the stack layer's shape.

    Example (in napari's console, over the sample *Nuclei with ground truth*)::

        labels = segment(viewer.layers["nuclei"], boxes=viewer.layers["Shapes"])
        viewer.add_labels(labels, name="my nuclei", **layer_placement(viewer.layers["nuclei"]))
    """
    import numpy as np

    from .io.layer_objects import is_layer, layer_pixels, layer_prompts, plane_pixels
    from .methods.interactive import segment_prompts
    from .models import load_segmenter

    prompts = layer_prompts(
        image,
        boxes,
        points,
        negative_points,
        world_point=None if viewer is None else viewer.dims.point,  # type: ignore[attr-defined]
        viewer_hint="Give the viewer (viewer=viewer) for the plane it shows",
    )
    pixels = layer_pixels(image)
    if prompts.plane is not None:
        pixels = plane_pixels(image, prompts.plane)
    segmenter = load_segmenter(model, weights=weights, device=device)
    result = segment_prompts(
        pixels,
        segmenter,
        boxes=prompts.boxes,
        positive_points=prompts.points,
        negative_points=prompts.negative_points,
        channel_axis=channel_axis,
        channels=channels,
        normalize=normalize,  # type: ignore[arg-type]
        object_size=object_size,
        name=f"image layer '{image.name}'" if is_layer(image) else "image",
        progress=progress,
        cancel=cancel,
    )
    for warning in result.warnings:
        import warnings

        warnings.warn(warning, stacklevel=2)
    if prompts.plane is None or not is_layer(image):
        return result.labels
    levels = image.data[0] if getattr(image, "multiscale", False) else image.data
    stack = np.zeros(tuple(levels.shape[: image.ndim]), result.labels.dtype)
    stack[prompts.plane] = result.labels
    return stack
