"""3D stacks (Z, Y, X[, C]): plane by plane with object ids linked across planes, and propagation of prompted objects
through the stack.

Propagation follows micro-sam's volumetric annotator (``segment_mask_in_volume``): an object segmented on one plane
prompts its neighbour with its mask (the mask's box, grown a little since objects may widen; plus the mask's most
interior point for segmenters trained with points), and so on outwards in both directions until the object ends:
its mask vanishes, its overlap (IoU) with the previous plane's mask falls below a threshold, or the decoder's score
drops. All objects still alive on a plane are decoded together, so each plane is embedded once; one that would
end there is decoded alone first (where masks overlap, the more confident takes the pixel: a neighbour's pixels
must not end it), and the others again without those that end.
No Qt, no napari.
"""

from .planes import (
    LINK_IOU,
    StackResult,
    is_stack_layer,
    object_extents,
    plane_function,
    segment_stack,
    stack_layer_data,
)
from .propagation import (
    BOX_MARGIN,
    MIN_AREA_FRACTION,
    MIN_SCORE,
    STOP_IOU,
    PropagationCancelled,
    PropagationResult,
    propagate_through_stack,
)
from .stacks import (
    as_stack,
    check_finite,
    labels_shape,
    named_channel_axis,
    plane_list,
    plane_warnings,
    plane_word,
    reference_plane,
    stack_extent,
    time_point_volume,
)

__all__ = [
    "BOX_MARGIN",
    "LINK_IOU",
    "MIN_AREA_FRACTION",
    "MIN_SCORE",
    "STOP_IOU",
    "PropagationCancelled",
    "PropagationResult",
    "StackResult",
    "is_stack_layer",
    "as_stack",
    "check_finite",
    "labels_shape",
    "named_channel_axis",
    "object_extents",
    "plane_function",
    "plane_list",
    "plane_warnings",
    "plane_word",
    "propagate_through_stack",
    "reference_plane",
    "segment_stack",
    "stack_layer_data",
    "stack_extent",
    "time_point_volume",
]
