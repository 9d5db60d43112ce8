"""The One-shot widget's worker body (no Qt, no layers): the reference learned and each target segmented, as the CLI
runs one-shot, into a :class:`OneShotOutput` the widget adds as layers; and the summary that says what came back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import CancelledError, PromptsegError
from ...methods.volume.stacks import stack_extent

#: the checkbox saying the reference labels only some of its objects (named in the advice when it is not ticked)
PARTIAL_LABELS_TEXT = "reference labels only some objects"


@dataclass
class OneShotOutput:
    """Everything the main thread needs to add layers: one entry per target plane or file."""

    labels: list[np.ndarray]
    positives: list[np.ndarray]  # (P, 2) x, y per target
    negatives: list[np.ndarray]
    names: list[str]
    stacked: bool  # True: targets were the planes of one layer -> one 3D Labels layer
    warnings: list[str] = field(default_factory=list)
    scales: list[dict] = field(default_factory=list)  # working scale per target (many-instances mode)
    labelling_advice: str | None = None  # few objects labelled, not said to be partial: why little may be found
    skipped: list[str] = field(default_factory=list)  # a folder's files that could not be done, each with why
    #: per folder file done: the scale, translate (and units) that lay its labels over the file as napari opens it
    #: (the pyramid level read, in the file's pixel size: :func:`~napari_promptseg.io.layer_data.file_placement`);
    #: empty for a layer's targets (placed over their layer)
    file_placements: list[dict] = field(default_factory=list)
    #: what ran: 'many instances' or 'one region, STRATEGY' (mode auto decides in the worker, from the labels)
    mode: str = ""
    stack_axis: str | None = None  # "t": the stack's planes are a time-lapse's frames, said so


def run_oneshot(
    reference: np.ndarray,
    reference_labels: np.ndarray,
    targets: list[np.ndarray],
    names: list[str],
    *,
    stacked: bool,
    strategy: str,
    instances: bool | None,
    object_size: float | None = None,
    factor: float = 1.0,
    partial: bool = False,
    channel_axis: int | None = None,
    channels: list[int] | None = None,
    reference_name: str = "reference",
    stack_axis: str | None = None,
    more_references: Sequence[tuple[np.ndarray, np.ndarray]] = (),
    ensemble: str = "vote",
    labels_name: str | None = None,
    segmenter,
    progress,
    cancel,
) -> OneShotOutput:
    """The worker body (no Qt, no layers), as the CLI runs one-shot. ``instances=None``: many instances when the
    reference labels hold several objects (or only some of its objects are labelled: ``partial``, which learns
    background only near them); ``object_size``: the objects' diameter in full-resolution pixels (None: measured);
    ``factor``: the downsampling of the pyramid level the targets were read at; a folder's files (paths) are read
    here, each at the level the CLI reads (:func:`~napari_promptseg.methods.oneshot.target_file_level`). The planes
    of a stack share one object size and are linked into objects across planes. ``channel_axis``: the targets' axis
    of channels (the reference then has its channels last), ``channels`` those fed to the model, as the CLI's
    --channel-axis and --channels. ``reference_name``: the reference as errors name it; ``stack_axis``: "t" when
    the planes are a time-lapse's frames (its progress and warnings say frame, as ``names`` do); ``segmenter``: the
    task's (:func:`~.._common.task_segmenter`). ``more_references``: (image, labels) of further references (read as
    ``reference``), ensembled with it by ``ensemble`` ("vote" or "union") in one region, as the CLI's repeated
    --reference; many instances take one reference (refused, ``labels_name`` naming the first reference's labels
    when the mode was decided from them)."""
    from ...io.layer_data import file_placement
    from ...io.multiscale import read_channel_axis, read_image_named
    from ...methods.instances import (
        count_objects,
        fit_exemplars,
        is_many_objects,
        known_near_labels,
        level_object_size,
        segment_with_exemplars,
    )
    from ...methods.instances.stack_planes import stack_planes
    from ...methods.labelling_advice import few_labels_warning
    from ...methods.oneshot import segment_like, target_file_level
    from ...methods.volume import segment_stack
    from ...models.preprocessing import as_channels_last, full_resolution

    # a multichannel reference is read channels last, as the CLI reads its references (read_reference_plane)
    ref_axis = None if channel_axis is None else -1
    # refused naming the layer (NaN...), not as 'reference'
    ref = as_channels_last(reference, channel_axis=ref_axis, channels=channels, name=reference_name)
    out = OneShotOutput([], [], [], [], stacked, stack_axis=stack_axis)
    if stacked:  # one entry per plane, set as it is done: a plane where nothing is found keeps its empty one
        # (appended, the points of the planes after such a plane were drawn one plane too low, on the empty one)
        out.positives, out.negatives = [np.zeros((0, 2))] * len(targets), [np.zeros((0, 2))] * len(targets)
        out.names = list(names)
    decided = instances is None
    if instances is None:
        instances = partial or is_many_objects(reference_labels)
    if instances and more_references:  # the exemplars are one reference's objects: the others were dropped unsaid
        labels = f"reference labels '{labels_name}'" if labels_name else "the reference labels"
        why = "mode 'many instances'"
        if decided:
            why = f"'{PARTIAL_LABELS_TEXT}'" if partial else f"mode auto ({labels} hold several objects)"
        raise PromptsegError(
            f"{why} finds many instances, which take one reference (with its instance labels), and "
            f"{1 + len(more_references)} are given: remove the other references, or choose mode 'single region' to "
            "ensemble one region from them all"
        )
    out.mode = "many instances" if instances else f"one region, {strategy}"
    if more_references:
        out.mode += f", {1 + len(more_references)} references, {ensemble}"
    exemplars, target_size, planes = None, None, None
    if instances and strategy != "sat":  # the instances pipeline has no strategy: it was dropped unsaid
        out.warnings.append(
            f"strategy '{strategy}' ignored: it sets the one-region route, and the many-instances mode ran "
            "(mode 'single region' for one region)"
        )
    if not instances and object_size:  # SAT reads the whole image: the size was dropped unsaid
        out.warnings.append("object size ignored: it sets the many-instances mode's working scale, and one region ran")
    if instances:
        progress(0.0, "learning the reference objects")
        # the reference is fitted at its own (full) resolution; the targets' level gets the size divided
        exemplars = fit_exemplars(
            segmenter,
            ref,
            reference_labels,
            known=known_near_labels(reference_labels) if partial else None,
            object_size=object_size,
            progress=lambda fraction, message: progress(0.0, message),
            cancel=cancel,
        )
        target_size = level_object_size(exemplars, object_size, factor)
        if stacked:  # the planes of one stack share one size: the CLI's and the console's stacks' code
            # (C, Y, X) planes are handed over channels last by segment_stack, and measured so (views, not copies)
            plane_axis = None if channel_axis is None else -1
            last = targets if channel_axis is None else [np.moveaxis(t, channel_axis, -1) for t in targets]
            planes = stack_planes(
                segmenter,
                exemplars,
                last,
                object_size=target_size,
                # a pyramid level's size is the exemplars' (a level is not measured), unless one was given
                size_source="object size" if object_size else "reference objects",
                channel_axis=plane_axis,
                channels=channels,
                stack_axis=stack_axis,
            )

    def keep_points(k: int, positives: np.ndarray, negatives: np.ndarray) -> None:
        """Target ``k``'s prompt points: a stack's at its plane, a layer's or a file's after those done before."""
        if stacked:
            out.positives[k], out.negatives[k] = positives, negatives
        else:
            out.positives.append(positives)
            out.negatives.append(negatives)
            out.names.append(names[k])

    def segment_one(
        k: int, image: np.ndarray, size: float | None, axis: int | None = channel_axis, image_factor: float = factor
    ):
        """``size``: the objects' size in the pixels of ``image`` (many instances; None: measured there); ``axis``:
        its channel axis; ``image_factor``: how many times smaller than its full resolution ``image`` is (its
        working scale is said in full-resolution pixels, as the CLI's report). As the CLI's oneshot._segment."""
        name = names[k]

        def sub(fraction: float, message: str) -> None:
            # the methods' messages name the target already ('t plane 0: t plane 0: tile 4/9' was read)
            said = message if message.startswith(f"{name}: ") else f"{name}: {message}"
            progress((k + fraction) / len(targets), said)

        if exemplars is not None:
            if planes is not None:  # a stack's plane, at the stack's one size
                res = planes.segment(image, name, sub, cancel)
            else:
                hwc = as_channels_last(image, channel_axis=axis, channels=channels, name=name)
                source = "object size" if object_size else "reference objects"
                res = segment_with_exemplars(
                    segmenter,
                    exemplars,
                    hwc,
                    object_size=size,
                    size_source=source,
                    name=name,
                    progress=sub,
                    cancel=cancel,
                )
            centres = (res.boxes[:, :2] + res.boxes[:, 2:]) / 2 if len(res.boxes) else np.zeros((0, 2))
            keep_points(k, centres, np.zeros((0, 2)))
            if res.scale is not None:
                out.scales.append(res.scale.at_full_resolution(image_factor).summary())
        else:
            if axis is not None:  # channels last, as the reference's: one axis for both
                image, axis = np.moveaxis(image, axis, -1), -1
            res = segment_like(
                [reference, *(other for other, _ in more_references)],
                [reference_labels > 0, *(labels > 0 for _, labels in more_references)],
                image,
                segmenter=segmenter,
                strategy=strategy,  # type: ignore[arg-type]
                channel_axis=axis if axis is not None else ref_axis,
                channels=channels,
                warn_many=False,  # the mode chose one region
                ensemble=ensemble,  # type: ignore[arg-type]
                names=[name],
                progress=sub,
                cancel=cancel,
            )[0]
            keep_points(k, res.positives, res.negatives)
        return res

    def segment_file(k: int, path: Path):
        # a slide is read at the level of the working scale, as the CLI reads it, never whole at full resolution
        # a given channel axis counts in the file's order (a pyramid's levels are read channels last), as the CLI's
        axis = read_channel_axis(path, channel_axis)
        image = read_image_named(path, axis)
        shape = tuple(np.shape(full_resolution(image)))
        if len(shape) > (3 if axis is not None or (len(shape) == 3 and shape[-1] <= 4) else 2):
            # said in the widget's terms: the method's refusal advised channel_axis= and segment_stack()
            raise PromptsegError(
                f"a {len(shape)}D image of shape {shape} (a stack's planes, or channels), which a target folder does "
                "not take: open it in napari and pick it as the target layer (a stack's planes are segmented and "
                f"linked; for channels, choose the channel axis), or run 'promptseg oneshot {path}'"
            )
        full_size = exemplars.object_size if exemplars is not None else None  # the size given, else the objects'
        level, _, level_factor = target_file_level(path, image, segmenter.input_size, full_size)
        size = None if exemplars is None else level_object_size(exemplars, object_size, level_factor)
        result = segment_one(k, level, size, axis, level_factor)
        # per axis, from the shapes, as the CLI puts labels back (upsample_labels): an odd side's level is not half
        full_shape, level_shape = np.shape(image)[:2], np.shape(level)[:2]
        factors = (full_shape[0] / level_shape[0], full_shape[1] / level_shape[1])
        out.file_placements.append(file_placement(path, factors))
        return result

    if stacked:  # ids linked across planes, as the CLI's stacks (segment_stack checks cancel between planes)
        # (C, Y, X) planes stack as (Z, C, Y, X): segment_stack hands them over channels last, as the CLI's
        stack = segment_stack(
            targets,
            lambda plane, z: segment_one(z, plane, target_size, None if channel_axis is None else -1),
            channel_axis=None if channel_axis is None else 1,
            name="target stack",
            cancel=cancel,
            stack_axis=stack_axis,
        )
        out.labels, out.warnings = list(stack.labels), [*out.warnings, *stack.warnings]  # the settings ignored too
    else:
        failed: list[PromptsegError] = []
        for k, target in enumerate(targets):
            if cancel():
                raise CancelledError("cancelled")
            if not isinstance(target, (str, Path)):
                res = segment_one(k, target, target_size)
            else:  # a folder's file that cannot be done is said and skipped, as the CLI's batch goes on past it
                try:
                    res = segment_file(k, Path(target))
                except PromptsegError as exc:
                    failed.append(exc)
                    out.skipped.append(f"{Path(target).name}: {exc}")
                    continue
            out.labels.append(res.labels)
            out.warnings += res.warnings
        if failed and not out.labels:  # nothing done: the run failed, saying why
            raise failed[0]
    if exemplars is not None:
        out.labelling_advice = few_labels_warning(
            count_objects(reference_labels), partial, f"tick '{PARTIAL_LABELS_TEXT}'"
        )
    progress(1.0, "done")
    return out


def result_summary(output: OneShotOutput) -> str:
    """What a run found, as the widget's summary says it: objects and targets, the working scale, and why the result
    may disappoint (a reference that does not transfer, few objects labelled, a folder's files skipped)."""
    # a stack's objects are linked across its planes: counted once
    groups = [np.stack(output.labels)] if output.stacked else output.labels
    objects = sum(int(len(np.unique(labels))) - int((labels == 0).any()) for labels in groups)
    scale = ""
    if output.scales:  # a folder's images each at the scale its size asks for: every one said, not the first's
        scales, tiles = sorted({s["scale"] for s in output.scales}), sorted({s["tiles"] for s in output.scales})
        sources = "; ".join(dict.fromkeys(s["source"] for s in output.scales))
        per_target = " per target" if len(scales) > 1 or len(tiles) > 1 else ""
        scale = f"; working scale {_span(scales)} ({sources}), {_span(tiles)} tile(s){per_target}"
    # a reference that does not transfer is said where the result is read, not only in a passing notification
    untransferred = [w for w in dict.fromkeys(output.warnings) if "does not transfer" in w]
    caution = ""
    if untransferred:
        more = f" (+{len(untransferred) - 1} more)" if len(untransferred) > 1 else ""
        caution = f"\nwarning: {untransferred[0]}{more}"
    if output.labelling_advice:  # the likely reason few objects came back
        caution += f"\nwarning: {output.labelling_advice}"
    if output.skipped:  # a folder's files that could not be done: the others' layers are there
        more = f" (+{len(output.skipped) - 1} more)" if len(output.skipped) > 1 else ""
        caution += f"\nskipped {len(output.skipped)} file(s): {output.skipped[0]}{more}"
    mode = f" ({output.mode})" if output.mode else ""
    # a stack's planes are one target, its objects linked across them (the CLI says 'in N planes' too)
    where = f"{len(output.labels)} target(s)"
    if output.stacked:
        where = stack_extent(len(output.labels), output.stack_axis)
    return f"one-shot{mode}: {objects} object(s) in {where}{scale}{caution}"


def _span(values: list) -> str:
    """ "1.0" for one value, "0.74-1.0" for several (sorted)."""
    return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"
