"""One input on a worker (or in this process): read it, run the job's ``process``, record the result; an input
without a result gets its record and an empty label image (:func:`failed_record`)."""

from __future__ import annotations

import copy
from pathlib import Path

from ..errors import CancelledError, NothingFoundError, PromptsegError
from ..io._files import names_deferred
from .cache_use import disk_cache_counts, note_cache_use
from .failures import SetupError, failure_reason, may_pass_on_retry, stops_the_run
from .job import BatchJob
from .journal import deferred_outputs, input_digest, leave_result
from .worker import in_dask_worker, stopped_when_cancelled, users_worker_named, worker_state


def run_target(job: BatchJob, path: str, final: bool, record_input_errors: bool = False) -> dict:
    """One input: read, process, write. Raises on failure unless ``final`` (the retry), which records it.
    ``record_input_errors``: an error of the input and options themselves (a :class:`PromptsegError` once the image
    was read, e.g. a box outside it) is recorded at once, not raised for a retry that would only say it again. On a
    Dask worker, a task cancelled by the driver stops at its method's next step (:class:`CancelledError`)."""
    output = getattr(job.args, "output", None)
    if output is None or not in_dask_worker():
        return _run_target(job, path, final, record_input_errors)
    # the driver may stop before it hears (Ctrl+C, killed): the result is left beside the outputs, before they take
    # their names (a worker killed between its labels and its result made the input again on --resume)
    with stopped_when_cancelled(), names_deferred(Path(output)) as written:
        result = _run_target(job, path, final, record_input_errors)
        leave_result(Path(output), job.run_id, {**result, "outputs": deferred_outputs(written)})
        written.publish()
    return result


def _run_target(job: BatchJob, path: str, final: bool, record_input_errors: bool) -> dict:
    from ..io.multiscale import other_images_left_out, read_image_named

    args = job.args
    try:
        state, meta = worker_state(job)
    except (CancelledError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise SetupError(failure_reason(exc) + users_worker_named()) from None
    image = None
    read_before = disk_cache_counts()
    # before reading: a file replaced meanwhile is done again by a resume; a run without an output directory has
    # no journal nor report a resume would compare it with
    digest = input_digest(path) if getattr(job.args, "output", None) is not None else None
    try:
        # the file's named channel axis last where none was given (commands without the option: as the file is)
        args = _args_for_file(job.args, path)
        timed = getattr(args, "time", None) is not None  # --time: a time-lapse of volumes, one time point taken
        image = read_image_named(path, getattr(args, "channel_axis", 0), keep_time=timed)
        if timed:
            args, image = _time_lapse_channels_last(args, path, image)
        record = job.process(args, state, Path(path), image)
        record.setdefault("status", "ok" if record.get("objects", 1) else "empty")
        if record["status"] == "empty" and not record.get("reason"):  # why, where the failed inputs' is
            said = [str(w).removeprefix(f"{path}: ") for w in record.get("warnings") or []]
            record["reason"] = "; ".join(said) or "no object found"
        if left_out := other_images_left_out(path):  # a TIFF's images after its first: read by nothing
            record.setdefault("warnings", []).append(left_out)
    except (CancelledError, KeyboardInterrupt):
        raise
    except NothingFoundError as exc:
        # an answer, not a failure: an empty label image and the reason, without a retry (the same inputs would
        # give the same answer), and a single input's run does not stop on it
        record = _without_result(args, path, image, exc)
        kept = record.get("kept_time_points")  # --time: the labels of the others, from earlier runs
        said = f" (time point(s) {', '.join(map(str, kept))} kept from an earlier run)" if kept else ""
        record.update(status="empty", objects=0, _summary=f"empty: {record['reason']}{said}")
    except Exception as exc:  # noqa: BLE001 - one bad input must not stop the batch
        if stops_the_run(exc):  # the outputs' disk: not this input's fault, nor one a retry or the next input passes
            raise
        # the input's own error once it was read (a box outside it), or its reading's (not an image, corrupt, empty):
        # a retry would only say it again; a file system's error (a network share's hiccup) may pass on a retry
        said_by_the_input = isinstance(exc, PromptsegError) and (image is not None or not may_pass_on_retry(exc))
        if not (final or (record_input_errors and said_by_the_input)):
            raise
        record = _without_result(args, path, image, exc)
        record["attempts"] = 2 if final else 1
    if digest is not None:
        record["input_digest"] = digest
    note_cache_use(record, read_before, getattr(args, "command", None))
    # where it ran (a cluster's workers may differ): a resume with another --device naming it keeps it
    record.update({k: meta[k] for k in ("device", "encoder_precision") if k in meta})
    return {"record": record, "meta": meta}


def _args_for_file(args: object, path: str) -> object:
    """The run's options with its channel axis, given in the file's own order, counted as this file is read (a
    pyramid's levels have their channels last: io.multiscale.read_channel_axis)."""
    from ..io.multiscale import read_channel_axis

    if not hasattr(args, "channel_axis"):
        return args
    axis = read_channel_axis(path, args.channel_axis)
    if axis == args.channel_axis:
        return args
    mapped = copy.copy(args)  # the run's options are every file's: this file's axis on its own copy
    mapped.channel_axis = axis
    return mapped


def _time_lapse_channels_last(args: object, path: str, image: object) -> tuple[object, object]:
    """--time's (T, Z, Y, X, C) reading of a 5-axis file (its channels where its axes or --channel-axis say, moved
    last: :func:`..io.multiscale.time_lapse_channels_last`), with the run's options' channel axis as it is read."""
    from ..io.multiscale import time_lapse_channels_last

    image, axis = time_lapse_channels_last(path, image, args.channel_axis)
    if axis == args.channel_axis:
        return args, image
    mapped = copy.copy(args)
    mapped.channel_axis = axis
    return mapped, image


def _without_result(args: object, path: str, image: object, exc: BaseException) -> dict:
    """:func:`failed_record` with the run's output directory and channel axis (as this file was read). With --time,
    a time-lapse of volumes' labels get that time point emptied and keep the others an earlier run wrote (its empty
    labels were the first two axes' shape, (T, Z), and replaced the earlier runs' time points)."""
    import numpy as np

    time_point, output = getattr(args, "time", None), getattr(args, "output", None)
    shape = np.shape(image) if image is not None else ()
    if time_point is not None and output is not None and len(shape) in (4, 5) and 0 <= time_point < shape[0]:
        from ..io.time_point_labels import write_input_time_point

        record = {
            "input": str(path),
            "status": "failed",
            "reason": exc if isinstance(exc, str) else failure_reason(exc),
        }
        empty = _empty_volume(shape[1:4])  # the volume's (Z, Y, X): channels, if any, last
        record["output"], record["kept_time_points"] = write_input_time_point(
            path,
            empty,
            time_point,
            shape[0],
            output,
            output_format=getattr(args, "output_format", "auto"),
            labels_name=getattr(args, "labels_name", "promptseg"),
            output_stems=getattr(args, "output_stems", None),
        )
        record.update(shape=list(shape), time_point=time_point)
        return record
    return failed_record(
        getattr(args, "output", None),
        Path(path),
        image,
        exc,
        channel_axis=getattr(args, "channel_axis", None),
        output_stems=getattr(args, "output_stems", None),
        output_format=getattr(args, "output_format", "auto"),
        labels_name=getattr(args, "labels_name", "promptseg"),
    )


def _empty_volume(shape: tuple[int, ...]) -> object:
    """Empty (Z, Y, X) labels of ``shape``: lazy past :data:`..io.images.LAZY_WHOLE_ABOVE_BYTES` (sampled from one
    background pixel a plane, written block by block as a stack pyramid's labels are), not made whole (5 planes of
    16k x 16k: 2.5 GB)."""
    import numpy as np

    from ..io import images

    if np.prod(shape, dtype=np.float64) * 2 <= images.LAZY_WHOLE_ABOVE_BYTES:
        return np.zeros(shape, np.uint16)
    from ..tiling import lazy_upsampled_labels

    return lazy_upsampled_labels(np.zeros((shape[0], 1, 1), np.uint16), shape)


def failed_record(
    output: Path | None,
    path: Path,
    image: object,
    exc: BaseException | str,
    *,
    channel_axis: int | None = None,
    output_stems: dict[str, str] | None = None,
    output_format: str = "auto",
    labels_name: str = "promptseg",
) -> dict:
    """The record of an input without a result (it failed, or held nothing to find: the caller sets that status),
    with an empty label image where its shape is known: (Y, X), or (Z, Y, X) for a stack (``channel_axis`` as the
    run read it), written where a result's would be (:func:`..io.input_labels.write_input_labels`: ``output_format``,
    ``labels_name``; ``output_stems``: the run's names of inputs that share a stem). Labels there that are not the
    run's to replace (a user's, in an OME-Zarr) are kept: the input then has no output, and its reason says why."""
    import numpy as np

    from ..io.input_labels import write_input_labels
    from ..methods.volume import labels_shape

    record = {"input": str(path), "status": "failed", "reason": exc if isinstance(exc, str) else failure_reason(exc)}
    if output is not None and image is not None and np.ndim(image) >= 2:
        empty = np.zeros(labels_shape(image, channel_axis=channel_axis), np.uint16)
        try:
            record["output"] = write_input_labels(
                path,
                empty,
                output,
                output_format=output_format,
                labels_name=labels_name,
                output_stems=output_stems,
                unplaced_if_unread=True,
            )
        except PromptsegError as refused:  # e.g. labels drawn since into the OME-Zarr: theirs are kept
            record["reason"] += f"; its empty labels were not written: {failure_reason(refused)}"
            return record
        record["shape"] = list(np.shape(image))
    return record
