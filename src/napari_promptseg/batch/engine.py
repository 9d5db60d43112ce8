"""Run one task per input image in this process or on Dask distributed workers (a LocalCluster, or a scheduler's
``tcp://`` address).

A :class:`BatchJob` is what every worker needs: a ``setup`` that loads the models (once per worker process and run:
:func:`worker_state`), a ``process`` that segments one image and writes its outputs (on the worker), and the
subcommand's options. Every mode runs the same :func:`run_target`, with the same torch thread count, so outputs are
the same byte for byte whichever runs them. A failed input is retried once (not for an error of the input and options
themselves, e.g. a box outside it: the same again); the second failure writes its empty label image and a record with
the reason, and the rest go on. The driver keeps the journal (resume), the progress bar and the order of the records.
"""

from __future__ import annotations

import argparse
import copy
import errno
import os
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._interrupts import held_once_published
from ..disk_errors import OUTPUT_DISK_REFUSES
from ..errors import CancelledError, NothingFoundError, PromptsegError, WeightsError
from .journal import (
    Journal,
    input_digest,
    is_done,
    leave_result,
    left_results,
    made_on_another_device,
    moved_inputs,
    moved_with_output,
    run_options,
    signature_of,
)
from .progress import BatchProgress, StepLine

#: ``--scheduler`` when not given: this variable, else ``local`` for several inputs and ``none`` for one
SCHEDULER_ENV = "PROMPTSEG_SCHEDULER"
#: torch threads of each process that segments (``--threads``); fixed, so results do not depend on the scheduler
DEFAULT_THREADS = 1
#: run states a long-lived worker keeps (one per run; models themselves are cached by ``load_segmenter``)
KEPT_STATES = 2

Setup = Callable[[argparse.Namespace], tuple[Any, dict]]
Process = Callable[[argparse.Namespace, Any, Path, Any], dict]


class SetupError(PromptsegError):
    """A worker could not prepare the run (weights, references): the run stops, as it would in one process."""


@dataclass(frozen=True)
class BatchJob:
    """Picklable description of a run: functions by reference, options as parsed (paths absolute)."""

    setup: Setup  # args -> (state, meta): models loaded once per worker; meta = run-level fields of report.json
    # (its "warnings": the run's, said once by the driver)
    process: Process  # (args, state, path, image) -> record; writes the outputs
    args: argparse.Namespace
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass
class BatchOutcome:
    records: list[dict]  # input order, resumed ones included
    meta: dict  # from the workers' setup (or the resumed run's)
    summary: dict  # how the batch ran: scheduler, workers, threads, resumed, signature
    journal: Journal | None = None
    #: Ctrl+C (or SIGTERM, as the CLI raises it) that stopped the run after some inputs were done
    #: (``run_batch(report_interrupted=True)``): the inputs not done have records of status "interrupted", and the
    #: journal stays for a --resume
    interruption: KeyboardInterrupt | None = None

    @property
    def interrupted(self) -> bool:
        return self.interruption is not None

    def finish(self) -> None:
        """After report.json is written: the journal is no longer needed; an interrupted run's stays, and the
        interruption goes on (raised again) now that its report is written."""
        if self.interruption is not None:
            raise self.interruption
        if self.journal is not None:
            self.journal.close(finished=True)


# -- worker side ---------------------------------------------------------------------------------------------------
_states: OrderedDict[str, tuple[Any, dict]] = OrderedDict()
_states_lock = threading.Lock()


def worker_state(job: BatchJob) -> tuple[Any, dict]:
    """``job.setup`` run once per process and run (threads of one worker wait for the first to finish it)."""
    with _states_lock:
        if job.run_id not in _states:
            apply_process_settings(job.args)
            if in_dask_worker():
                _keep_freed_memory()
            t0 = time.perf_counter()
            state, meta = job.setup(job.args)
            _states[job.run_id] = (state, {**meta, "setup_s": round(time.perf_counter() - t0, 4)})
            while len(_states) > KEPT_STATES:
                _states.popitem(last=False)
        return _states[job.run_id]


def apply_process_settings(args: argparse.Namespace) -> None:
    """What every process that segments shares: the torch thread count and the disk embedding cache."""
    import torch

    from ..models import embedding_cache

    torch.set_num_threads(max(1, int(getattr(args, "threads", DEFAULT_THREADS) or DEFAULT_THREADS)))
    embedding_cache.configure(getattr(args, "cache", None), getattr(args, "cache_max_gb", None))


def in_dask_worker() -> bool:
    """Whether this code runs in a task on a Dask distributed worker."""
    if "distributed" not in sys.modules:
        return False
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:
        return False
    return True


def _keep_freed_memory() -> None:
    """glibc in a Dask worker process returns torch's freed buffers to the system after every image (5x the page
    faults of the same work in a plain process, a third of the run in kernel time): keep up to 512 MB of freed
    memory for reuse, and map only buffers over 256 MB on their own. Linux/glibc only; elsewhere nothing changes."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if sys.platform != "linux" or name is None:
        return
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
        libc.mallopt(m_mmap_threshold, 256 << 20)
        libc.mallopt(m_trim_threshold, 512 << 20)
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        pass


def run_target(job: BatchJob, path: str, final: bool, record_input_errors: bool = False) -> dict:
    """One input: read, process, write. Raises on failure unless ``final`` (the retry), which records it.
    ``record_input_errors``: an error of the input and options themselves (a :class:`PromptsegError` once the image
    was read, e.g. a box outside it) is recorded at once, not raised for a retry that would only say it again."""
    from ..io.multiscale import other_images_left_out, read_image_named

    args = job.args
    try:
        state, meta = worker_state(job)
    except (CancelledError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise SetupError(_reason(exc)) from None
    image = None
    read_before = _disk_cache_counts()
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
        record.update(status="empty", objects=0, _summary=f"empty: {record['reason']}")
    except Exception as exc:  # noqa: BLE001 - one bad input must not stop the batch
        if stops_the_run(exc):  # the outputs' disk: not this input's fault, nor one a retry or the next input passes
            raise
        # the input's own error once it was read (a box outside it), or its reading's (not an image, corrupt, empty):
        # a retry would only say it again; a file system's error (a network share's hiccup) may pass on a retry
        said_by_the_input = isinstance(exc, PromptsegError) and (image is not None or not _may_pass_on_retry(exc))
        if not (final or (record_input_errors and said_by_the_input)):
            raise
        record = _without_result(args, path, image, exc)
        record["attempts"] = 2 if final else 1
    if digest is not None:
        record["input_digest"] = digest
    _note_cache_use(record, read_before, getattr(args, "command", None))
    # where it ran (a cluster's workers may differ): a resume with another --device naming it keeps it
    record.update({k: meta[k] for k in ("device", "encoder_precision") if k in meta})
    result = {"record": record, "meta": meta}
    if getattr(job.args, "output", None) is not None and in_dask_worker():  # the driver may stop before it hears
        leave_result(Path(job.args.output), job.run_id, result)
    return result


def _disk_cache_counts() -> tuple[int, int] | None:
    """(embeddings read, embeddings computed) by this process's disk embedding cache so far; None without one. A
    worker runs one input at a time: the difference over an input is that input's."""
    from ..models import embedding_cache

    disk = embedding_cache.active()
    return None if disk is None else (disk.hits, disk.misses + disk.refused)


def _note_cache_use(record: dict, before: tuple[int, int] | None, command: str | None) -> None:
    """report.json's ``embedding_from_cache`` (every embedding the input needed was read from the disk cache) and
    ``embeddings_from_cache`` (how many were read, how many computed: a tiled image or a stack has several), and the
    input's line says it. False without a disk cache; None where this process's memory answered."""
    after = _disk_cache_counts()
    if before is None or after is None:
        record["embedding_from_cache"] = False
        return
    read, computed = after[0] - before[0], after[1] - before[1]
    record["embedding_from_cache"] = (read > 0 and computed == 0) if read + computed else None
    record["embeddings_from_cache"] = {"read": read, "computed": computed}
    if command == "embed" or "_summary" not in record or not read + computed:  # embed's line counts them already
        return
    if read + computed == 1:
        said = "embedding from the disk cache" if read else "embedding computed"
    else:
        said = f"{read} of {read + computed} embeddings from the disk cache"
    record["_summary"] += f", {said}"


def cache_use_summary(records: Sequence[dict], cache: str | None) -> dict | None:
    """report.json's run-level ``embedding_cache``: the disk cache's path, how many images read all their embeddings
    from it, and the embeddings read and computed (None: the run had no disk cache)."""
    if cache is None:
        return None
    counted = [r for r in records if "embeddings_from_cache" in r]
    return {
        "path": str(cache),
        "images": len(counted),
        "images_from_cache": sum(r.get("embedding_from_cache") is True for r in counted),
        "embeddings_read": sum(r["embeddings_from_cache"]["read"] for r in counted),
        "embeddings_computed": sum(r["embeddings_from_cache"]["computed"] for r in counted),
    }


#: errors of a file system, not of the file: a network share's lost connection or stale handle, a timeout
_TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("EIO", "ESTALE", "ETIMEDOUT", "EAGAIN", "EINTR", "EHOSTDOWN", "EHOSTUNREACH", "ECONNRESET", "ENOLINK")
    if hasattr(errno, name)
)


def stops_the_run(exc: BaseException) -> bool:
    """Whether a task's error is the output disk's (full, over quota, read-only), raised or as the cause: the run
    stops at the first input that meets it, without its retry (a run on Dask workers segmented every input twice to
    record 'No space left on device' for each); the journal keeps what was done for --resume."""
    return any(isinstance(e, OSError) and e.errno in OUTPUT_DISK_REFUSES for e in (exc, exc.__cause__))


def _may_pass_on_retry(exc: BaseException) -> bool:
    """Whether a read refused as no image (:func:`~..io.images.read_image` wraps every reader's error) failed on the
    file system rather than on the file's contents: that one deserves the retry, a corrupt or empty file does not."""
    cause = exc.__cause__
    return isinstance(cause, (TimeoutError, ConnectionError)) or (
        isinstance(cause, OSError) and cause.errno in _TRANSIENT_ERRNOS
    )


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
    """:func:`failed_record` with the run's output directory and channel axis (as this file was read)."""
    return failed_record(
        getattr(args, "output", None),
        Path(path),
        image,
        exc,
        channel_axis=getattr(args, "channel_axis", None),
        output_stems=getattr(args, "output_stems", None),
    )


def failed_record(
    output: Path | None,
    path: Path,
    image: object,
    exc: BaseException | str,
    *,
    channel_axis: int | None = None,
    output_stems: dict[str, str] | None = None,
) -> dict:
    """The record of an input without a result (it failed, or held nothing to find: the caller sets that status),
    with an empty label image where its shape is known: (Y, X), or (Z, Y, X) for a stack (``channel_axis`` as the
    run read it; ``output_stems``: the run's names of inputs that share a stem, io.images.distinct_output_stems)."""
    import numpy as np

    from ..io import output_stem, write_labels
    from ..io.layer_data import labels_calibration, labels_frame_interval, labels_origin
    from ..io.multiscale import labels_axes
    from ..methods.volume import labels_shape

    record = {"input": str(path), "status": "failed", "reason": exc if isinstance(exc, str) else _reason(exc)}
    if output is not None and image is not None and np.ndim(image) >= 2:
        empty = np.zeros(labels_shape(image, channel_axis=channel_axis), np.uint16)
        try:  # a stack's empty labels name their axes and pixel size as a result's would (the metadata read before)
            axes = labels_axes(path, empty.ndim)
            size, z_spacing = labels_calibration(path, empty.ndim)
            origin, interval = labels_origin(path, empty.ndim), labels_frame_interval(path, empty.ndim)
        except Exception:  # noqa: BLE001 - the input's reading failed: its planes, unnamed and uncalibrated
            axes, size, z_spacing, origin, interval = None, None, None, None, None
        stem = output_stem(path, output_stems)
        out = Path(output) / f"{stem}.tif"
        placed = {"pixel_size": size, "z_spacing": z_spacing, "origin": origin, "frame_interval": interval}
        record["output"] = str(write_labels(out, empty, axes=axes, **placed))
        record["shape"] = list(np.shape(image))
    return record


def _reason(exc: BaseException) -> str:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return reason if isinstance(exc, (PromptsegError, WeightsError)) else f"{type(exc).__name__}: {reason}"


# -- driver side ---------------------------------------------------------------------------------------------------
def resolve_scheduler(scheduler: str | None, n_inputs: int) -> str:
    value = (scheduler or os.environ.get(SCHEDULER_ENV, "").strip() or ("local" if n_inputs > 1 else "none")).strip()
    if value not in ("none", "local") and not value.startswith(("tcp://", "tls://", "ucx://", "inproc://")):
        raise PromptsegError(f"--scheduler must be none, local or an address like tcp://HOST:8786; got {value!r}")
    if value.startswith("tcp://") and not value[len("tcp://") :].rpartition(":")[2].isdigit():
        raise PromptsegError(f"--scheduler {value}: give the scheduler's port too, e.g. tcp://HOST:8786")
    return value


def _workers_ignored_because(mode: str, n_inputs: int) -> str:
    if mode == "none":
        where = "the input runs" if n_inputs == 1 else f"the {n_inputs} inputs run"
        return f"{where} in this process (--scheduler none); --scheduler local starts worker processes"
    return f"the scheduler at {mode} runs on its own workers (start more with `dask worker {mode}`)"


def default_workers() -> int:
    """One worker process per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


#: the steps of the method working on a run's one input in this process (a batch shows its bar of inputs instead)
_method_progress: ContextVar[Callable[[float, str], None] | None] = ContextVar("method_progress", default=None)


def method_progress() -> Callable[[float, str], None] | None:
    """A reporter for the method the CLI calls (``progress=``): an in-process run shows the steps (tiles, planes) of
    the input being segmented on stderr, so a large image is not minutes of silence (its own line for a run's one
    input, beside the bar of a batch's); None on Dask workers (the driver's bar counts their inputs)."""
    return _method_progress.get()


def _made_on_another_device(args: object, kept: dict[str, dict], meta: dict, scheduler: str | None) -> list[str]:
    """--device auto resumed where auto now means another kind of device than the kept inputs ran on (a GPU run
    resumed on a machine without one): those inputs, said; they are made again, as results differ between devices.
    Only for workers on this machine (scheduler none, local): a scheduler's workers elsewhere are not asked."""
    if not kept or str(getattr(args, "device", "")).strip().lower() != "auto":
        return []
    if resolve_scheduler(scheduler, 2) not in ("none", "local"):
        return []
    from ..models.device import resolve_device

    now = resolve_device("auto").type
    elsewhere = made_on_another_device(kept, meta, now)
    if elsewhere:
        ran = ", ".join(sorted(set(elsewhere.values())))
        print(
            f"resuming: {len(elsewhere)} input(s) done on {ran} are made again on {now}, where --device auto runs "
            "now (results differ between devices: one report holds one device's)",
            file=sys.stderr,
        )
    return list(elsewhere)


def run_batch(
    job: BatchJob,
    paths: Sequence[Path],
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    resume: bool = False,
    report_interrupted: bool = False,
) -> BatchOutcome:
    """Run ``job`` on every input; records come back in input order. With one input and a tool error
    (:class:`PromptsegError`, :class:`WeightsError`), that error is the run's (raised), except
    :class:`NothingFoundError`, an answer recorded like any batch's ("empty"); a worker's failing setup stops the
    run (:class:`SetupError`). ``report_interrupted``: Ctrl+C once this run has finished an input returns the
    outcome so far (``interrupted``, see :class:`BatchOutcome`) for the caller to write its report, which would
    otherwise be an earlier run's describing labels this run replaced; else, and before any input is done (nothing
    of the earlier run replaced), KeyboardInterrupt is raised."""
    args = job.args
    output: Path | None = getattr(args, "output", None)
    options = run_options(args)
    journal = Journal(output, signature_of(options), options, job.run_id) if output is not None else None
    previous, meta = journal.previous() if (journal is not None and resume) else ({}, {})
    previous = {key: moved_with_output(record, output) for key, record in moved_inputs(previous, paths).items()}
    kept = {str(p): previous[str(p)] for p in paths if str(p) in previous and is_done(previous[str(p)], p)}
    for key in _made_on_another_device(args, kept, meta, scheduler):
        del kept[key]
    todo = [p for p in paths if str(p) not in kept]
    todo_keys = {str(p) for p in todo}
    mode = resolve_scheduler(scheduler, len(todo))
    n_workers = max(1, min(workers or default_workers(), len(todo) or 1)) if mode == "local" else None  # tcp: seen
    if workers is not None and mode != "local" and todo:  # asked for and not given: said, not dropped
        print(f"warning: --workers {workers} is ignored: {_workers_ignored_because(mode, len(todo))}", file=sys.stderr)
    if kept:
        print(f"resuming: {len(kept)} of {len(paths)} input(s) already done in {output}", file=sys.stderr)
    if journal is not None:
        journal.start(list(kept.values()), meta)
    results: dict[str, dict] = dict(kept)
    progress = BatchProgress(len(paths), len(kept)) if len(paths) > 1 else None
    finished = False

    fresh_meta = False  # this run's workers' meta, once seen, replaces a resumed run's
    delivered = 0  # inputs this run finished

    def deliver(path: str, result: dict) -> None:
        nonlocal meta, fresh_meta, delivered
        run_warnings = []  # the setup's (every worker finds the same): said once, before the first input's line
        if not fresh_meta and result.get("meta"):
            fresh_meta = True
            run_warnings = result["meta"].get("warnings", [])
            earlier = meta.get("encoder_precision")
            meta = {**meta, **result["meta"]}
            if earlier is not None and earlier != meta.get("encoder_precision"):
                meta["resumed_encoder_precision"] = earlier  # the images kept from the earlier run were made so
                if kept:  # their labels may differ slightly from what this run would make: said, not hidden
                    print(
                        f"warning: this run's encoder runs in {meta.get('encoder_precision')}; the {len(kept)} "
                        f"input(s) kept from the earlier run were made in {earlier} (report.json: "
                        "batch meta resumed_encoder_precision); run without --resume to make all at one precision",
                        file=sys.stderr,
                    )
            # a scheduler's workers elsewhere (not asked before the run) whose auto is another device: said
            elsewhere = made_on_another_device(kept, {}, meta["device"]) if kept and meta.get("device") else {}
            if elsewhere:
                print(
                    f"warning: this run's workers run on {meta['device']}; {len(elsewhere)} input(s) kept from the "
                    f"earlier run were made on {', '.join(sorted(set(elsewhere.values())))}, and results differ "
                    "between devices; run without --resume to make all on one device",
                    file=sys.stderr,
                )
            if journal is not None:
                journal.add(meta=meta)
        record = result["record"]
        # its files carry our mark (io.images.OUTPUT_MARKER): a listed file without it was rewritten since, e.g. a
        # user's corrected labels (records kept from a version before the mark lack this)
        record["outputs_marked"] = True
        results[path] = record
        delivered += 1
        if journal is not None:
            journal.add(record={k: v for k, v in record.items() if not k.startswith("_")})
        if steps is not None:
            steps.close()
        for warning in run_warnings:
            (progress.write if progress is not None else _print)(f"warning: {warning}", err=True)
        _announce(record, progress)
        if progress is not None:
            progress.update(record)

    single = len(paths) == 1
    interrupted = False
    interruption = None
    steps = StepLine() if single and mode == "none" else None
    # several inputs in this process: the steps of each go beside the bar, one display (a line of their own wrote
    # over the bar and left its pieces behind)
    in_bar = progress.step if progress is not None and mode == "none" else None
    steps_token = _method_progress.set(steps or in_bar)
    try:
        if todo and mode == "none":
            _run_here(job, todo, single, deliver)
        elif todo:
            from .on_dask import run_on_dask

            n_workers = run_on_dask(job, todo, single, mode, n_workers, deliver)
        finished = True
    except KeyboardInterrupt as exc:
        interrupted = True  # tasks may be out (a worker still writing): the journal must stay, even without records
        if mode != "none" and output is not None:
            # the tasks running at the interrupt ran to their end as the cluster closed: their outputs are written
            for path, result in left_results(output, job.run_id).items():
                if path in todo_keys and path not in results:
                    deliver(path, result)
        if not (report_interrupted and delivered):
            raise
        interruption = exc
    finally:
        _method_progress.reset(steps_token)
        if steps is not None:
            steps.close()
        if progress is not None:
            progress.close()
        if journal is not None and not finished:
            journal.close(finished=False, started=interrupted and bool(todo))
    for path in paths:
        if str(path) not in results:  # interrupted before it was done
            results[str(path)] = _interrupted_record(args, path)
    records = [{k: v for k, v in results[str(p)].items() if not k.startswith("_")} for p in paths]
    if not fresh_meta:  # every input kept: this run loaded no model (the earlier run's setup time is not its own)
        meta = {k: v for k, v in meta.items() if k != "setup_s"}
    summary = {
        "scheduler": mode,
        "workers": 1 if mode == "none" else n_workers,
        "threads_per_worker": getattr(args, "threads", DEFAULT_THREADS),
        "resumed": len(kept),
        "signature": signature_of(options),
        "options": options,  # what the signature is a hash of: a refused --resume names the ones that changed
        "meta": meta,
        # this run's inputs only: those kept by --resume read or computed theirs in the earlier run
        "embedding_cache": cache_use_summary(
            [results[str(p)] for p in todo if str(p) in results], getattr(args, "cache", None)
        ),
        **({"interrupted": True} if interrupted else {}),
    }
    return BatchOutcome(records, meta, summary, journal, interruption=interruption)


def _interrupted_record(args: object, path: Path) -> dict:
    """The record of an input an interrupted run did not finish; a label file of its name in -o is not this run's
    result (an earlier run's, or one a worker wrote as the run stopped), and the reason says so."""
    from ..io import output_stem

    reason = "the run was stopped (Ctrl+C, SIGTERM) before this input was done; --resume does it"
    output = getattr(args, "output", None)
    if output is not None:
        labels = Path(output) / f"{output_stem(path, getattr(args, 'output_stems', None))}.tif"
        if labels.exists():
            reason += f"; the {labels.name} there is not recorded as this run's result"
    return {"input": str(path), "status": "interrupted", "reason": reason}


def _announce(record: dict, progress: BatchProgress | None) -> None:
    """The input's line: ``IN -> OUT (summary)`` on stdout, failures and warnings on stderr."""
    write = progress.write if progress is not None else _print
    path = record["input"]
    for warning in record.get("warnings", []):
        warning = warning.removeprefix(f"{path}: ")  # the methods name the image themselves
        write(f"warning: {path}: {warning}", err=True)
    if record["status"] == "failed":
        reason = record["reason"].removeprefix(f"{path}: ")  # readers name the file themselves
        write(
            f"{path} -> {record['output']} (empty: {reason})" if "output" in record else f"{path}: no output: {reason}",
            err=True,
        )
    else:
        summary = record.get("_summary", record["status"])
        write(f"{path} -> {record['output']} ({summary})" if "output" in record else f"{path}: {summary}")


def _print(text: str, err: bool = False) -> None:
    print(text, file=sys.stderr if err else sys.stdout, flush=True)


def first_error_is_the_runs(exc: BaseException, single: bool, path: str) -> bool:
    """A single input's own error stops the run as itself; it names the input (``failed_input``), whose earlier
    outputs then go (they would pass for this run's)."""
    if single and isinstance(exc, (PromptsegError, WeightsError)) and not isinstance(exc, SetupError):
        exc.failed_input = path
        return True
    return False


def _run_here(job: BatchJob, todo: Sequence[Path], single: bool, deliver: Callable[[str, dict], None]) -> None:
    """Scheduler ``none``: the same tasks in this process, one after the other (settings restored after)."""
    with _process_settings_restored():
        worker_state(job)  # a setup error is raised as itself (e.g. WeightsError), as before any input
        try:
            for path in todo:
                # once its labels take their name, an interrupt waits for their record to be in the journal: it
                # came between the two and left a file written but not recorded, which --resume made again
                with held_once_published():
                    try:
                        result = run_target(job, str(path), final=False, record_input_errors=not single)
                    except (CancelledError, KeyboardInterrupt):
                        raise
                    except Exception as exc:
                        if first_error_is_the_runs(exc, single, str(path)) or stops_the_run(exc):
                            raise
                        result = run_target(job, str(path), final=True)
                    deliver(str(path), result)
        finally:
            with _states_lock:
                _states.pop(job.run_id, None)


@contextmanager
def _process_settings_restored() -> Iterator[None]:
    """Scheduler ``none`` runs in the caller's process: its torch threads and disk cache are put back after."""
    import torch

    from ..models import embedding_cache

    threads = torch.get_num_threads()
    try:
        with embedding_cache.settings_restored():
            yield
    finally:
        torch.set_num_threads(threads)
