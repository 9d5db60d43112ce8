"""Big images and 3D stacks in the segmenting subcommands: labels found on a pyramid level back at full resolution,
(Z, Y, X[, C]) inputs plane by plane or propagated, and a time-lapse of volumes' time point (--time)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import NothingFoundError, PromptsegError
from ._outputs import _write_output, _write_time_point

if TYPE_CHECKING:
    from ..io.multiscale import StackAxes


def _stack_for(
    args: argparse.Namespace, image: object, path: Path | None = None, axes: StackAxes | None = None
) -> object | None:
    """The input as a (Z, Y, X[, C]) stack, or None for a 2D image (see methods.volume.as_stack). ``axes``: the
    input's :func:`..io.multiscale.stack_axes` when the caller has read them (a hyperstack's file names its channel
    axis); else they are read from ``path``."""
    from ..io.multiscale import stack_axes
    from ..methods.volume import as_stack

    if axes is None and path is not None:
        axes = stack_axes(path)
    named = None if axes is None else axes.read
    return as_stack(image, channel_axis=args.channel_axis, name=str(path or "image"), axes=named)[0]


def _input_stack(args: argparse.Namespace, image: object, path: Path) -> tuple[object, StackAxes] | None:
    """An input of more than two axes as a (Z, Y, X[, C]) stack, with the axes its metadata names (read once: they
    plan its planes and name its labels' axes); None for a 2D image. With --time, the volume of that time point of
    a time-lapse of volumes (any other input refused)."""
    import numpy as np

    from ..io.multiscale import stack_axes

    image, axes = _at_time_point(args, image, path, None)
    if np.ndim(image) <= 2:
        return None
    axes = stack_axes(path) if axes is None else axes
    stack = _stack_for(args, image, path, axes)
    return None if stack is None else (stack, axes)


def _at_time_point(
    args: argparse.Namespace, image: object, path: Path, axes: StackAxes | None
) -> tuple[object, StackAxes | None]:
    """--time T: the input's (Z, Y, X[, C]) volume at T (:func:`..methods.volume.time_point_volume`, which the
    Python API's propagation shares) and the axes of that volume (its planes are Z); without --time the input and
    ``axes`` as they are. A time-lapse's channels are last (--channel-axis -1, or read so): the one option then
    names the volume's channel axis too. The batch reads a file's time-lapse so (batch.engine: an OME-Zarr's or
    pyramid's levels (T, Z, Y, X[, C]), whose volume's axes are then named; a hyperstack's channels moved last)."""
    from ..io.multiscale import StackAxes, is_lazy_image, open_multiscale
    from ..methods.volume import time_point_volume

    if getattr(args, "time", None) is None:
        return image, axes
    if args.channel_axis not in (None, -1):
        raise PromptsegError(
            f"{path}: --time takes a time-lapse of volumes with its channels last, (T, Z, Y, X, C): --channel-axis -1, "
            f"not {args.channel_axis}"
        )
    volume, _ = time_point_volume(image, args.time, name=f"{path} (--time)", channel_axis=args.channel_axis)
    read = open_multiscale(path, keep_time=True).axes if is_lazy_image(path) else ""
    return volume, StackAxes(read[1:] if read.startswith("tz") else None, "z")


#: report.json's ``stack_axis`` note for a stack whose file does not name the axis its planes lie along
UNNAMED_STACK_AXIS = (
    "the file does not name its first axis: its {n} images were read as the planes of a stack (Z); the frames of a "
    "time-lapse (T) are segmented alike, one by one with ids linked across them (--propagate: objects carried from "
    "frame to frame).{channels} To have it named, save the file with its axes: an ImageJ hyperstack, an OME-TIFF, "
    "or tifffile.imwrite(..., metadata={{'axes': '{axes}'}})"
)


def _unnamed_stack_axis_note(n: int, shape: Sequence[int], channel_axis: int | None) -> str:
    """:data:`UNNAMED_STACK_AXIS` for an input of ``shape`` read as a stack of ``n`` planes: a grey stack's first axis
    may hold channels (--channel-axis 0 says so); a 4D stack has its channels or colours on another axis (its first
    cannot be channels), and the axes to save it with put them where the file has them."""
    if len(shape) != 4:
        channels = " If that axis holds channels, give --channel-axis 0."
        return UNNAMED_STACK_AXIS.format(n=n, channels=channels, axes="TYX")
    axis = 3 if channel_axis is None else channel_axis % 4
    letters = ["T", "Y", "X"]
    letters.insert(axis, "S" if axis == 3 and channel_axis is None and shape[3] in (3, 4) else "C")
    return UNNAMED_STACK_AXIS.format(n=n, channels="", axes="".join(letters))


def _pyramid_source(args: argparse.Namespace, path: Path, image: object, time_lapse: object) -> object:
    """The levels of the input ``path`` as the stack ``image`` was read (largest first, in its axes), or ``image``
    itself when it has none: the file's pyramid; with --time, the time point's volume of every level of a
    time-lapse pyramid (T, Z, Y, X[, C]; ``time_lapse`` as read), which ran at full resolution."""
    import numpy as np

    from ..io.multiscale import file_pyramid, is_lazy_image, open_multiscale
    from ..methods.volume import time_point_volume
    from ..models.preprocessing import is_lazy

    if getattr(args, "time", None) is None:
        return file_pyramid(path, image)
    if not is_lazy(time_lapse) or not is_lazy_image(path):
        return image
    levels = open_multiscale(path, keep_time=True).levels
    if len(levels) < 2 or np.shape(levels[0]) != np.shape(time_lapse):
        return image
    name = f"{path} (--time)"
    return [time_point_volume(level, args.time, name=name, channel_axis=args.channel_axis)[0] for level in levels]


def _full_resolution(labels: object, image: object, factor: float) -> object:
    """Labels found on a pyramid level, back on the input's full-resolution grid: lazily past
    :data:`..io.images.LAZY_WHOLE_ABOVE_BYTES` (a slide's, written block by block: a 65k x 65k slide's were made
    whole, 8.5 GB)."""
    import numpy as np

    from ..io import images
    from ..tiling import lazy_upsampled_labels, upsample_labels

    if factor == 1.0:
        return labels
    shape = np.shape(image)[:2]
    if np.prod(shape, dtype=np.float64) * 2 > images.LAZY_WHOLE_ABOVE_BYTES:
        return lazy_upsampled_labels(np.asarray(labels), shape)
    return upsample_labels(np.asarray(labels), shape)


def _level_record(
    args: argparse.Namespace, path: Path, image: object, labels: object, index: int, factor: float
) -> tuple[dict, object]:
    """Labels found on pyramid level ``index`` (``factor`` times smaller than the input), back at full resolution
    and written: the start of the image's report record, and those full-resolution labels."""
    import numpy as np

    labels = _full_resolution(labels, image, factor)
    record = {
        "input": str(path),
        "output": _write_output(args, path, labels),
        "shape": list(np.shape(image)),
        "pyramid_level": index,
        "level_factor": factor,
    }
    return record, labels


def _instances_level_record(
    args: argparse.Namespace, path: Path, image: object, found: object, index: int, factor: float
) -> dict:
    """Instances found on pyramid level ``index``: labels and boxes back at full resolution, written and recorded."""
    import numpy as np

    from ..tiling import level_to_full
    from ._report import _instances_record

    found.labels = _full_resolution(found.labels, image, factor)
    found.boxes = level_to_full(found.boxes, factor).astype(np.float32)
    found.scale = None if found.scale is None else found.scale.at_full_resolution(factor)
    return {**_instances_record(args, path, image, found), "pyramid_level": index, "level_factor": factor}


def _checked_seed(seed_path: Path, seed: object, path: Path, volume: object) -> object:
    """--seed-labels as the propagation takes them: a plane's (Y, X) labels or the stack's (Z, Y, X); a plane's saved
    with an axis of one, or in colours (a colour PNG), as a one-shot reference reads them
    (:func:`..io.images.label_image_2d`: 'labels of shape (Y, X, 3)' was refused). Anything else is refused naming
    that file and both shapes (the propagation's own refusal named the stack alone, as 'seed labels'), and so are a
    plane's negative ids (they were background without a word)."""
    import numpy as np

    from ..io.images import label_image_2d
    from ..models.preprocessing import full_resolution

    given, stack = tuple(np.shape(full_resolution(seed))), tuple(np.shape(volume)[:3])
    if given == stack:
        return seed
    # a plane behind an axis of one, or its colours (or a channel of one) after it
    plane = given[1:] if given[0] == 1 else given[:2] if len(given) == 3 and given[-1] in (1, 3, 4) else given
    if len(given) > 3 or plane != stack[1:]:
        raise PromptsegError(
            f"--seed-labels {seed_path}: labels of shape {given}; {path} is a stack of {stack[0]} planes of "
            f"{stack[1]} x {stack[2]} px: give the (Y, X) labels of --plane {stack[1:]} or the stack's {stack}"
        )
    return label_image_2d(seed, f"--seed-labels {seed_path}")  # negative ids refused, float ids made integer


def _stack_record(
    args: argparse.Namespace,
    path: Path,
    image: object,
    segment_plane: Callable[[object, int], object],
    segmenter: object,
    *,
    boxes: Sequence[Sequence[float]] = (),
    positive_points: Sequence[Sequence[float]] = (),
    negative_points: Sequence[Sequence[float]] = (),
    seed_labels: object | None = None,
    axes: StackAxes | None = None,
    plane_level: Callable[[list], object] | None = None,
    plane_scale: Callable[[tuple[int, int]], float] | None = None,
) -> dict:
    """Segment a (Z, Y, X[, C]) input: one plane (--plane), every plane with linked ids, or objects propagated from
    a seed plane (--propagate; seeded by ``boxes`` and the points, refining them or objects of their own, when given,
    or by ``seed_labels`` (--seed-labels: that plane's labels, or the stack's), else by ``segment_plane`` on that
    plane). Writes the
    (Z, Y, X) labels and returns the record for report.json. Nothing on the seed plane raises NothingFoundError (the
    batch writes empty labels, status "empty"). ``axes``: the input's :func:`..io.multiscale.stack_axes`, when the
    caller has read them (:func:`_input_stack`); read here otherwise, once for the planes and the labels' axes.
    A stack pyramid (a z-stack OME-Zarr, a pyramidal OME-TIFF stack) is read at a level, as a slide is: a
    propagation at the level of its prompts, and, given ``plane_level`` (the
    :class:`~..methods.volume.levels.StackLevel` the plane's method reads, given the stack's levels: said in
    report.json), a plane as its own pyramid, which that method reads at its level. ``plane_scale``: the working
    scale (model-input pixels per full-resolution pixel) a whole-plane method (one-shot, text) reads a plane of
    full-resolution (rows, columns) at, as it reads a 2D pyramid: every plane of a stack pyramid is read at that
    level (one level: the planes share one size) and ``segment_plane(plane, z, factor=...)`` told its factor; the
    labels come back at full resolution lazily."""
    import numpy as np

    from ..batch.engine import method_progress
    from ..io.multiscale import stack_axes
    from ..io.time_point_labels import said_kept
    from ..methods.volume import (
        as_stack,
        check_finite,
        object_extents,
        plane_warnings,
        plane_word,
        propagate_through_stack,
    )
    from ..methods.volume.levels import segment_stack_at_level, stack_pyramid, stack_read_level
    from ..models.preprocessing import to_numpy
    from ..tiling import lazy_upsampled_labels
    from ._report import _finish_image

    time_lapse = image  # --time: the input, whose shape the labels keep
    image, axes = _at_time_point(args, image, path, axes)
    axes = stack_axes(path) if axes is None else axes
    volume, warnings = as_stack(image, channel_axis=args.channel_axis, name=str(path), axes=axes.read)
    n = int(np.shape(volume)[0])
    # a stack pyramid's levels (the file's, or a time point's of a time-lapse pyramid; each as a (Z, Y, X[, C])
    # stack): read at a level, never whole at full resolution (5 planes of 16k x 16k were read, segmented and
    # labelled whole)
    source = _pyramid_source(args, path, image, time_lapse)
    pyramid = None if source is image else stack_pyramid(source, channel_axis=args.channel_axis, axes=axes.read)
    # the one level a whole-plane method reads every plane at (one-shot and text read planes at full resolution)
    read_level = None
    if pyramid is not None and plane_scale is not None:
        read_level = stack_read_level(source, plane_scale, channel_axis=args.channel_axis, axes=axes.read)
    at_level = read_level is not None and read_level.index > 0
    read_volume = read_level.stack if at_level else volume  # the planes as the method reads them
    plane_factor = {"factor": read_level.factor} if at_level else {}

    def plane_pixels(z: int) -> object:
        """Plane ``z``: of a stack pyramid, the plane's own pyramid, read by the plane's method at its level (the
        methods whose level is known, ``plane_level``), or the plane of the level every plane is read at
        (``plane_scale``); the others' planes at full resolution, as before."""
        if pyramid is not None and plane_level is not None:
            return [level[z] for level in pyramid]
        return to_numpy(read_volume[z])

    nothing: dict[int, str] = {}
    scales: dict[int, dict] = {}  # the working scale each plane was decoded at, where its method has one

    def plane_or_nothing(plane, z: int):
        try:
            out = segment_plane(plane, z, **plane_factor)
        except NothingFoundError as exc:  # a blank end plane must not empty the planes that matched
            nothing[z] = str(exc)
            return np.zeros(np.shape(read_volume)[1:3], np.uint16)
        if (scale := getattr(out, "scale", None)) is not None:
            # in the full-resolution pixels the labels and the record's shape are in
            scales[z] = scale.at_full_resolution(plane_factor.get("factor", 1.0)).summary()
        return out

    plane = args.plane if args.plane is not None or not args.propagate else n // 2
    if plane is not None and not 0 <= plane < n:
        planes = f"time-lapse's {n} frames" if axes.planes == "t" else f"stack's {n} planes"
        raise PromptsegError(f"{path}: --plane {plane} is outside the {planes} (0-{n - 1})")
    prompted = bool(len(boxes) or len(positive_points)) or seed_labels is not None
    if seed_labels is not None:
        seed_labels = _checked_seed(args.seed_labels, seed_labels, path, volume)
    if args.propagate and not prompted:
        # the seed plane is segmented here, before propagate_through_stack checks (as segment_stack does itself):
        # refuse NaN before the first plane is segmented
        check_finite(volume, str(path), axes.planes)
    record: dict = {"input": str(path), "shape": list(np.shape(time_lapse)), "planes": n}
    if getattr(args, "time", None) is not None:
        record["time_point"] = args.time
    # what the planes are: by the file's word, or a guess the report says (a time-lapse of RGB frames saved without
    # axes reads as Z; the same segmentation, but the user must know what was assumed); a time-lapse's are frames in
    # what the run says (report.json's mode keeps its value, which scripts read)
    stack_axis = axes.planes
    word = plane_word(stack_axis)
    record["stack_axis"] = stack_axis or "unnamed"
    if stack_axis is None:
        record["stack_axis_note"] = _unnamed_stack_axis_note(n, np.shape(image), args.channel_axis)
    # per-plane progress where the run shows its steps (a run's one input: its own line; several inputs in this
    # process: beside the batch's bar, which a line of its own wrote over); Dask workers leave it to the driver's bar
    progress = method_progress()
    # the file's own axis names: an OME-Zarr's z is planes, not maybe channels (as the 2D functions would caution)
    common = {"channel_axis": args.channel_axis, "name": str(path), "progress": progress, "axes": axes.read}
    if args.propagate:
        seed, seed_scores, seed_warnings, seed_scale = seed_labels, None, [], None
        if not prompted:
            out = plane_or_nothing(plane_pixels(plane), plane)
            if plane in nothing:  # the seed method's own reason, said to be the seed plane's
                why = nothing[plane]
                for named in (f"{plane_name(path, plane, axes)}: ", f"{path}: "):  # it names the file (and plane): once
                    why = why.removeprefix(named)
                raise NothingFoundError(f"{path}: nothing to propagate from the seed {word} {plane}: {why}")
            seed, seed_scores = _plane_labels(out), _plane_scores(out)
            seed_warnings = plane_warnings(((plane, w) for w in getattr(out, "warnings", [])), str(path), stack_axis)
            seed_scale = getattr(out, "scale", None)  # the scale the seed method worked at (find-all, one-shot)
            if seed_scale is not None:  # on the level's plane: in full-resolution pixels, as the propagation's
                seed_scale = seed_scale.at_full_resolution(plane_factor.get("factor", 1.0))
        object_size = getattr(args, "object_size", None)
        if object_size is None and seed_scale is not None:
            # the seed's objects decoded at the seed method's scale, not at one taken from its (tighter) masks:
            # find-all's nuclei on a DSB stack, F1 0.42 at the masks' scale, 0.69 at the seed's
            object_size = seed_scale.object_size
        result = propagate_through_stack(
            source,
            plane,
            boxes=boxes,
            points=positive_points,
            negative_points=negative_points,
            labels=seed,
            seed_scores=seed_scores,
            seed_warnings=seed_warnings,
            segmenter=segmenter,
            object_size=object_size,
            channels=args.channels,
            normalize=args.normalize,
            stop_iou=args.stop_iou,
            stack_axis=stack_axis,
            **common,
        )
        labels, warnings, extents = result.labels, result.warnings, result.extents
        if pyramid is not None:  # the level the objects were carried at; the labels are at full resolution
            record.update(pyramid_level=result.pyramid_level, level_factor=result.level_factors[0])
        said_mode = f"propagated from {word} {plane}"
        record.update(
            mode=f"propagated from plane {plane}",
            working_scale=scale.summary() if (scale := result.scale or seed_scale) is not None else None,
            stops={str(k): v for k, v in result.stops.items()},
            scores={str(k): None if v is None else round(v, 4) for k, v in result.scores.items()},
        )
    elif plane is not None:
        out = plane_or_nothing(plane_pixels(plane), plane)
        if pyramid is not None and plane_level is not None:  # the level the plane's method read
            level = plane_level(pyramid)
            record.update(pyramid_level=level.index, level_factor=level.factor)
        elif read_level is not None:
            record.update(pyramid_level=read_level.index, level_factor=read_level.factor)
        per_plane = ((plane, w) for w in getattr(out, "warnings", []))
        warnings = [*warnings, *plane_warnings(per_plane, str(path), stack_axis)]
        found = np.asarray(_plane_labels(out))
        if pyramid is None:
            labels = np.zeros((n, *found.shape), found.dtype)
            labels[plane] = found
        else:  # the other planes empty, lazily: a stack of whole-slide planes is not made whole to be written
            planes = np.where(np.arange(n) == plane, 0, -1)  # the others background
            # found on the level's plane (or at full resolution): back over the full-resolution planes
            labels = lazy_upsampled_labels(found[None], np.shape(volume)[:3], [planes])
        extents = {k: (plane, plane) for k in object_extents(found[None])}
        record["mode"], said_mode = f"plane {plane} only", f"{word} {plane} only"
        # what the plane was decoded at, as a 2D input's record and a propagation's say
        scale, scores = getattr(out, "scale", None), _plane_scores(out)
        record["working_scale"] = scales.get(plane) if scale is not None else None
        if scores is not None:
            record["scores"] = {str(k): round(v, 4) for k, v in scores.items()}
    else:
        # the level's planes, as the file holds them (its axes), or the input's; the labels back at full resolution,
        # lazily (the console's stack layers take this path too)
        result = segment_stack_at_level(
            source if at_level else image,
            read_level,
            lambda plane, z, factor: plane_or_nothing(plane, z),
            **common,
            stack_axis=stack_axis,
        )
        labels, warnings, extents = result.labels, result.warnings, result.extents
        if read_level is not None:  # the level every plane was read at
            record.update(pyramid_level=read_level.index, level_factor=read_level.factor)
        record["mode"] = "plane by plane, ids linked across planes"
        said_mode = f"{word} by {word}, ids linked across {word}s"
        # as a 2D input's record says it (one-shot's planes share one size: one scale); planes that differ, each's
        if scales and all(s == next(iter(scales.values())) for s in scales.values()):
            record["working_scale"] = next(iter(scales.values()))
        elif scales:
            record["working_scales"] = {str(z): s for z, s in sorted(scales.items())}
    if nothing:
        listed = ", ".join(map(str, sorted(nothing)))
        warnings = [*warnings, f"{path}: nothing like the prompt on {word}(s) {listed}"]
    if not args.propagate and getattr(args, "stop_iou_given", False):
        warnings = [*warnings, f"{path}: --stop-iou ignored: it ends objects carried by --propagate"]
    objects = len(extents)
    if getattr(args, "time", None) is not None:  # over the time-lapse, as the widget's layer
        record["output"], record["kept_time_points"] = _write_time_point(args, path, labels, np.shape(time_lapse)[0])
    else:
        record["output"] = _write_output(args, path, labels, axes=axes.labels)
    record.update(
        objects=objects,
        extents={str(k): list(v) for k, v in extents.items()},
        warnings=warnings,
    )
    if not objects:
        record["reason"] = "; ".join(warnings) or "no object found"
    unnamed = f"{n} planes (first axis unnamed: Z or T)"
    planes = {"t": f"{n} frames (T)", "z": f"{n} planes (Z)"}.get(stack_axis, unnamed)
    summary = f"{objects} object(s) in {planes}, {said_mode}"
    if getattr(args, "time", None) is not None:
        summary += f", at time point {args.time} of {np.shape(time_lapse)[0]}"
        if record["kept_time_points"]:  # the others' labels, from earlier runs into these labels
            summary += f" ({said_kept(args.time, record['kept_time_points'])})"
    _finish_image(args, path, image, labels, record, summary, stack=volume)
    return record


def plane_name(path: Path, z: int, axes: StackAxes) -> str:
    """How plane ``z`` of stack ``path`` is named to the 2D method that segments it, which begins its warnings and
    progress with it: "stack.tif plane 3", a time-lapse's "movie.tif frame 3" (:func:`_stack_record`'s warnings name
    the stack's planes alike)."""
    from ..methods.volume import plane_word

    return f"{path} {plane_word(axes.planes)} {z}"


def _plane_channel_axis(args: argparse.Namespace) -> int | None:
    """The channel axis of one plane of a stack: last when the stack had one (else colour/gray rules apply)."""
    return -1 if args.channel_axis is not None else None


def _plane_labels(out: object) -> object:
    """Labels of a 2D method's result (or the labels themselves)."""
    return getattr(out, "labels", out)


def _plane_scores(out: object) -> dict[int, float] | None:
    """A 2D method's score per object id, where it gives one: ``.scores`` per id - 1 (text, instances), or one
    ``.score`` for all its objects (one-shot); None for plain labels."""
    import numpy as np

    scores = getattr(out, "scores", None)
    if scores is not None:
        return {k + 1: float(v) for k, v in enumerate(np.ravel(scores))}
    score = getattr(out, "score", None)
    if score is None:
        return None
    labels = np.asarray(_plane_labels(out))
    return {int(k): float(score) for k in np.unique(labels[labels > 0])}
