"""The one rule a one-shot reference (an image and the mask or labels of its objects) is checked by, whichever way it
is given: a Python call, a CLI file pair, a widget's layers, a library entry saved. Only how the image and the mask
are named in its refusals differs (``reference``, ``--reference-mask path``, layer ``'nuclei'``, entry
``reference 'source'``), so each names what the user gave."""

from __future__ import annotations

import numpy as np

from ..errors import PromptsegError
from ..models.preprocessing import is_blank
from .label_ids import label_image_2d


def check_reference(
    image_hwc: np.ndarray,
    mask: np.ndarray,
    image_name: str = "reference",
    mask_name: str = "reference mask",
) -> np.ndarray:
    """The reference ``mask`` (a mask or label image) of ``image_hwc`` ((H, W, C) or gray (H, W)) as 2D ids
    (:func:`.label_ids.label_image_2d`: values that are no ids refused, a soft mask cut at 0.5, a colour label image's
    regions numbered), refused naming ``mask_name`` or ``image_name`` when the pair cannot teach an object: a mask
    of another size, one that labels nothing, one that labels every pixel (no background to tell the object from:
    a whole-image "object" was found in half a target), an image of one value everywhere (its object looks like its
    background: every target's mask was a guess)."""
    labels = label_image_2d(mask, mask_name)
    h, w = np.shape(image_hwc)[:2]
    if labels.shape != (h, w):
        size = f"{labels.shape[1]} x {labels.shape[0]} px" if labels.ndim == 2 else f"an array of shape {labels.shape}"
        raise PromptsegError(
            f"{mask_name}: {size} does not match {image_name}, {w} x {h} px; give a mask of its image's own size"
        )
    foreground = labels > 0
    if not foreground.any():
        raise PromptsegError(f"{mask_name}: no labelled pixel (all 0); label the objects to find (non-zero pixels)")
    if foreground.all():
        raise PromptsegError(f"{mask_name}: every pixel is labelled; leave the background unlabelled (0)")
    if is_blank(image_hwc):
        raise PromptsegError(
            f"{image_name}: the image holds one value everywhere: nothing tells the object from its background"
        )
    return labels
