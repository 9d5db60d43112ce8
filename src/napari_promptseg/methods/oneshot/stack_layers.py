"""napari stack layers given to :func:`~.segment_like` (from the console): a stack reference's labelled plane, a
stack target segmented plane by plane, as ``promptseg oneshot`` and the One-shot widget take a stack. No Qt, no
napari import."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ...io.layer_objects import is_layer, layer_pixels


def reference_planes(references: object, masks: object, channel_axis: int | None) -> tuple[object, object, int | None]:
    """The references and masks as :func:`~.segment_like` reads them, a stack layer's replaced by the plane its
    labels mark (the one plane they label; a plane's labels over a stack, or labels on several planes: refused,
    saying to pass that plane), as ``promptseg oneshot --reference STACK`` and the One-shot widget take one; and the
    references' channel axis (a stack's plane comes with its channels last)."""
    from ..volume import is_stack_layer, reference_plane, stack_layer_data

    single = not isinstance(references, (list, tuple))
    refs = [references] if single else list(references)
    mask_list = [masks] if single or not isinstance(masks, (list, tuple)) else list(masks)
    if not any(is_stack_layer(r, channel_axis) for r in refs) or len(mask_list) != len(refs):
        return references, masks, channel_axis  # a count mismatch is segment_like's to refuse
    planes_axis = channel_axis
    for k, (ref, mask) in enumerate(zip(refs, mask_list, strict=True)):
        if not is_stack_layer(ref, channel_axis):
            if channel_axis is not None:  # one axis for all references: channels last, as a stack's plane
                refs[k] = np.moveaxis(np.asarray(layer_pixels(ref, "reference")), channel_axis, -1)
            continue
        data, planes_axis = stack_layer_data(ref, channel_axis)
        labels = np.asarray(layer_pixels(mask, "reference mask"))
        mask_name = "the reference mask's labels"
        mask_name = f"the labels of reference mask layer '{mask.name}'" if is_layer(mask) else mask_name
        n = int(np.shape(data[0] if ref.multiscale else data)[0])
        z = reference_plane(
            labels,
            n,
            None,
            labels_name=mask_name,
            image_name=f"reference layer '{ref.name}'",
            to_choose="pass that {word}'s image and labels (reference=layer.data[z], reference_mask=labels.data[z])",
        )
        refs[k] = np.asarray((data[0] if ref.multiscale else data)[z])
        mask_list[k] = labels[z] if labels.ndim == 3 else labels
    return (refs[0], mask_list[0], planes_axis) if single else (refs, mask_list, planes_axis)


def over_stack_targets(
    targets: Sequence[object],
    names: Sequence[str],
    channel_axis: int | None,
    segment_target: Callable[[object, str, int | None], object],
    progress: Callable[[float, str], None] | None,
    cancel: Callable[[], bool] | None,
) -> list:
    """Each target's result: a stack layer's a :class:`~..volume.StackResult` of ``segment_target(plane, name,
    channel_axis)`` over its planes (ids linked, as the CLI's and the One-shot widget's stacks; a multiscale layer's
    planes at the level ``promptseg oneshot`` reads a stack pyramid's at for one region: the whole plane's), another's
    ``segment_target(target, name, channel_axis)``."""
    from ...io.multiscale import whole_image_scale
    from ..volume import is_stack_layer, stack_layer_data
    from ..volume.levels import segment_stack_at_level, stack_read_level

    results = []
    for target, name in zip(targets, names, strict=True):
        if not is_stack_layer(target, channel_axis):
            results.append(segment_target(target, name, channel_axis))
            continue
        data, axis = stack_layer_data(target, channel_axis)
        plane_axis = None if axis is None else -1  # segment_stack hands a plane over with its channels last

        def plane_result(
            plane: np.ndarray, z: int, factor: float, name: str = name, plane_axis: int | None = plane_axis
        ) -> object:
            return segment_target(plane, f"{name} plane {z}", plane_axis)

        level = stack_read_level(data, whole_image_scale, channel_axis=axis, name=name)
        stack = segment_stack_at_level(
            data, level, plane_result, channel_axis=axis, name=name, progress=progress, cancel=cancel
        )
        results.append(stack)
    return results
