"""Find all like these: the few objects a user boxed segmented and learnt as exemplars (background learnt only near
them), then every object like them found by the tile pipeline (:mod:`.pipeline`); what to say of the boxes (clipped,
outliers, repeats, boxes that gave nothing)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ...callbacks import ProgressCallback
from ...errors import CancelledError, PromptsegError
from ...models.preprocessing import Normalization, as_channels_last, read_pyramid_level
from ...models.protocols import PromptableSegmenter
from .exemplars import ExemplarModel, _Timer, fit_exemplars, known_near
from .pipeline import InstanceResult, Refinement, _instances_at_full_resolution, segment_with_exemplars

if TYPE_CHECKING:
    from ..volume import StackResult


def find_all_like(
    image: np.ndarray,
    boxes: np.ndarray | list,
    *,
    segmenter: PromptableSegmenter | None = None,
    object_size: float | None = None,
    refine: Refinement = "fused",
    channel_axis: int | None = None,
    channels: list[int] | None = None,
    normalize: Normalization = "auto",
    name: str = "image",
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
) -> InstanceResult | StackResult:
    """Every object in ``image`` like the few the user boxed ("find all like these"; SAM3's exemplar prompts).

    The boxed objects are segmented first (at the boxes' working scale) and become the exemplars. Unlabelled
    objects are everywhere in the image, so background is learned only near the exemplars: inside each box outside
    its object, and in a ring of half a box around it. Returns the boxed objects and all the others as instances.

    A pyramid (a multiscale layer's data, levels largest first; boxes in full-resolution pixels) is read at the
    coarsest level that still has the boxes' working scale, as the CLI reads an OME-Zarr; the labels and boxes come
    back at full resolution. napari layers are taken as they are: an Image layer, and a Shapes layer of boxes read
    in its pixels (as :func:`napari_promptseg.segment` reads them).

    A stack layer ((Z, Y, X), an RGB (Z, Y, X, 3), with ``channel_axis`` a multichannel one) with boxes drawn on one
    of its planes (a Shapes layer of the stack's axes): the boxed objects are learnt on that plane, and every plane
    is segmented with them at the boxes' size, ids linked across planes, as ``promptseg oneshot`` segments a stack
    (:mod:`.stack_planes`); a :class:`~..volume.StackResult` is returned, ``planes`` each plane's
    :class:`InstanceResult`. A multiscale stack layer is read at the level the boxes' objects need
    (:class:`~..volume.StackResult`'s ``pyramid_level``; its ``labels`` back at full resolution lazily).

    Example (in napari's console, over the sample *Nuclei with ground truth*, a few nuclei boxed on a Shapes
    layer)::

        result = find_all_like(viewer.layers["nuclei"], viewer.layers["Shapes"])
        viewer.add_labels(result.labels, name="all nuclei")

    Example (in napari's console, over a (Z, Y, X) stack, a few nuclei boxed on one plane)::

        result = find_all_like(viewer.layers["stack"], viewer.layers["boxes on plane 1"])
        viewer.add_labels(result.labels, name="all nuclei in 3D", **layer_placement(viewer.layers["stack"]))
    """
    from ...io.layer_objects import layer_pixels, layer_prompts
    from ..interactive import prompt_list, prompts_working_scale
    from ..volume import is_stack_layer

    prompts = layer_prompts(image, boxes, (), ())  # a Shapes layer's rectangles, in the image's pixels
    boxes = prompts.boxes
    if segmenter is None:
        from ...models import load_segmenter

        segmenter = load_segmenter()
    if is_stack_layer(image, channel_axis):
        from .stack_planes import find_all_over_stack

        options = {"object_size": object_size, "refine": refine, "channels": channels, "normalize": normalize}
        name = image.name if name == "image" else name
        return find_all_over_stack(
            segmenter, image, prompts.plane, boxes, channel_axis, name, progress, cancel, options
        )
    image = layer_pixels(image)
    boxes = prompt_list(boxes, 4, "boxes")
    level = read_pyramid_level(
        image,
        lambda shape: prompts_working_scale(shape, segmenter.input_size, boxes, object_size),
        channel_axis,
    )
    if level is not None:  # boxes and object size in the level's pixels
        image, boxes = level.array, [level.to_level(box) for box in boxes]  # a malformed box: check_box says so
        object_size = None if object_size is None else object_size / level.factor
    report = progress or (lambda fraction, message: None)
    hwc = as_channels_last(image, channel_axis=channel_axis, channels=channels, name=name)
    timer = _Timer()
    examples = learn_examples(segmenter, hwc, boxes, object_size, normalize, name, report, cancel, timer)

    def sub(fraction: float, message: str) -> None:
        report(0.2 + 0.8 * fraction, message)

    result = segment_with_exemplars(
        segmenter,
        examples.model,
        hwc,
        refine=refine,
        object_size=examples.size,
        size_source=examples.source,
        name=name,
        progress=sub,
        cancel=cancel,
        timer=timer,
    )
    result.warnings.extend(w for w in examples.warnings if w not in result.warnings)
    return _instances_at_full_resolution(result, level)


@dataclass
class BoxedExamples:
    """What find-all learns from the boxed objects: the exemplars, the size of the objects sought and where it came
    from, and what to say of the boxes (clipped, outliers, repeats, boxes that gave nothing)."""

    model: ExemplarModel
    size: float
    source: str
    warnings: list[str]


def learn_examples(
    segmenter: PromptableSegmenter,
    hwc: np.ndarray,
    boxes: list,
    object_size: float | None,
    normalize: Normalization,
    name: str,
    report: ProgressCallback,
    cancel: Callable[[], bool] | None,
    timer: _Timer,
) -> BoxedExamples:
    """The boxed objects of ``hwc`` (H, W, C) segmented and learnt as exemplars, background learnt only near the
    boxes (find-all's first 20 % of ``report``); a 2D image's and a stack's plane's (the planes then all segmented
    with them, :mod:`.stack_planes`)."""
    from ..interactive import NO_OBJECT, check_box, prompt_list, segment_prompts

    h, w = hwc.shape[:2]
    clipped: list[str] = []
    checked = [check_box(b, (h, w), f"box {i + 1}", clipped) for i, b in enumerate(prompt_list(boxes, 4, "boxes"))]
    checked = np.array(checked, np.float32).reshape(-1, 4)
    if len(checked) == 0:
        raise PromptsegError("find all: box at least one example object")
    t0 = time.perf_counter()
    report(0.0, f"segmenting the {len(checked)} example(s)")
    examples = segment_prompts(
        hwc, segmenter, boxes=checked, object_size=object_size, normalize=normalize, name=name, channel_axis=-1
    )
    timer.add("examples_s", t0)
    if not (examples.labels > 0).any():
        # why (boxes on blank pixels, or on no object), not only advice for loose boxes, which these may not be
        why = "; ".join(w.removeprefix(f"{name}: ") for w in examples.warnings)
        raise PromptsegError(
            f"{name}: the boxed examples gave no object" + (f" ({why})" if why else "") + "; box objects in the image"
        )
    size = examples.scale.object_size  # the given size, else the boxes' (segment_prompts chose the scale from it)
    known = known_near(checked, (h, w), 0.5 * size)
    if cancel is not None and cancel():
        raise CancelledError("cancelled")
    report(0.1, "learning the examples")
    model = fit_exemplars(
        segmenter,
        hwc,
        examples.labels,
        known=known,
        object_size=size,
        normalize=normalize,
        name=name,
        timer=timer,
        progress=lambda fraction, message: report(0.1 + 0.1 * fraction, f"learning the examples: {message}"),
        cancel=cancel,
    )
    warnings = [f"{name}: {warning}" for warning in clipped] + _outlier_boxes(checked, object_size)
    # what the examples' segmentation said (e.g. a box over an empty canvas, left empty), and which examples gave
    # nothing to learn from: they were left out without a word
    # (an example without an object is said below, in find-all's words)
    warnings.extend(w for w in examples.warnings if w not in warnings and NO_OBJECT not in w)
    found = {int(k) for k in np.unique(examples.labels)}
    empty = sorted(set(range(1, len(checked) + 1)) - found)
    # a box drawn twice (or nearly) gives its object to the first one: it repeats that box, it did not miss
    repeats = {k: _repeated_box(checked, k, found) for k in empty}
    for k, of in repeats.items():
        if of is not None:
            warnings.append(f"{name}: example box {k} repeats box {of} (the same object): learned from once")
    empty = [k for k in empty if repeats[k] is None]
    if empty:
        warnings.append(
            f"{name}: example box(es) {', '.join(map(str, empty))} gave no object and were not learned from; "
            "box objects like the others"
        )
    return BoxedExamples(model, size, examples.scale.source, warnings)


#: an example box overlapping one that gave an object by this much (intersection over union) is a repeat of it
REPEATED_BOX_IOU = 0.7


def _repeated_box(boxes: np.ndarray, k: int, found: set[int]) -> int | None:
    """The box (1-based, one that gave an object) that box ``k`` (1-based) repeats, or None."""
    x0, y0, x1, y1 = boxes[k - 1]
    for j in sorted(found - {0, k}):
        a0, b0, a1, b1 = boxes[j - 1]
        inter = max(0.0, min(x1, a1) - max(x0, a0)) * max(0.0, min(y1, b1) - max(y0, b0))
        union = (x1 - x0) * (y1 - y0) + (a1 - a0) * (b1 - b0) - inter
        if union > 0 and inter / union >= REPEATED_BOX_IOU:
            return j
    return None


#: an example box this many times the typical example's side holds something else than one object like them
OUTLIER_BOX = 3.0


def _outlier_boxes(boxes: np.ndarray, object_size: float | None = None) -> list[str]:
    """Warnings for example boxes far larger than the others (three boxes at least; of two, when one is far larger
    than the other and no ``object_size`` was given): one such box skews the object size and the background that
    are learnt (measured: a box over most of the nuclei sample beside 4 nuclei boxes, F1 0.45 -> 0.18); or for an
    ``object_size`` far from the boxes' size, which sets both in their place."""
    sides = np.sqrt(np.maximum(boxes[:, 2] - boxes[:, 0], 1) * np.maximum(boxes[:, 3] - boxes[:, 1], 1))
    typical = float(np.median(sides))
    unlike = []
    if object_size is not None and not 1 / OUTLIER_BOX <= object_size / typical <= OUTLIER_BOX:
        # the size given, not the examples', sets the scale and the ring of background learnt around the boxes (ten
        # times the nuclei's: about the whole image, 11 of 50 nuclei found instead of 44)
        unlike = [
            f"object size {object_size:g} px is {object_size / typical:.2g} times the example boxes' (typically "
            f"{typical:.0f} px a side): objects of {object_size:g} px are looked for, and background learnt within "
            f"{object_size / 2:g} px of the boxes; give the boxed objects' size, or none to take theirs"
        ]
    if len(sides) == 2 and object_size is None and sides.max() > OUTLIER_BOX * sides.min():
        # no third box to tell which one is unlike: the size learnt lies between them, like neither (a nucleus and a
        # box over most of the sample: 5 objects found instead of 39)
        return [
            f"example boxes 1 and 2 differ in size ({sides[0]:.0f} and {sides[1]:.0f} px a side): objects of "
            f"{typical:.0f} px are looked for, like neither; box objects of one kind, or give the object size"
        ]
    return unlike + [
        f"example box {k + 1} ({side:.0f} px a side) is far larger than the others (typically {typical:.0f} px): "
        "each example box should hold one object like the others; remove it, or box one object"
        for k, side in enumerate(sides)
        if len(sides) >= 3 and side > OUTLIER_BOX * typical
    ]
