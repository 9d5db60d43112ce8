"""Run one task per input image in this process or on Dask distributed workers (a LocalCluster, or a scheduler's
``tcp://`` address).

A :class:`BatchJob` is what every worker needs: a ``setup`` that loads the models (once per worker process and run:
:func:`worker_state`), a ``process`` that segments one image and writes its outputs (on the worker), and the
subcommand's options. Every mode runs the same :func:`run_target`, with the same torch thread count, so outputs are
the same byte for byte whichever runs them. A failed input is retried once (not for an error of the input and options
themselves, e.g. a box outside it: the same again); the second failure writes its empty label image and a record with
the reason, and the rest go on. The driver keeps the journal (resume), the progress bar and the order of the records.

This module is the run loop (the driver); its parts: :mod:`.job` (what a run is), :mod:`.worker` (a process's state
and settings), :mod:`.task` (one input run and recorded), :mod:`.failures` (which errors stop the run, which deserve
the retry), :mod:`.cache_use` (the disk embedding cache's use), :mod:`.on_dask` (the tasks on Dask workers).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .._interrupts import held_once_published
from ..errors import CancelledError, PromptsegError
from .cache_use import cache_use_summary
from .failures import SchedulerLost, SetupError, first_error_is_the_runs, stops_the_run
from .job import BatchJob, Process, Setup
from .journal import (
    Journal,
    is_done,
    left_results,
    made_on_another_device,
    moved_inputs,
    moved_with_output,
    run_options,
    signature_of,
)
from .progress import BatchProgress, StepLine
from .task import failed_record, run_target
from .worker import (
    DEFAULT_THREADS,
    _method_progress,
    apply_process_settings,
    forget_state,
    in_dask_worker,
    method_progress,
    process_settings_restored,
    worker_state,
)

# the batch's names where they were before its parts had modules of their own (cli and tests import them here)
__all__ = [
    "DEFAULT_THREADS",
    "SCHEDULER_ENV",
    "BatchJob",
    "BatchOutcome",
    "Process",
    "Setup",
    "SetupError",
    "apply_process_settings",
    "cache_use_summary",
    "default_workers",
    "failed_record",
    "first_error_is_the_runs",
    "in_dask_worker",
    "method_progress",
    "resolve_scheduler",
    "run_batch",
    "run_target",
    "stops_the_run",
    "worker_state",
]

#: ``--scheduler`` when not given: this variable, else ``local`` for several inputs and ``none`` for one
SCHEDULER_ENV = "PROMPTSEG_SCHEDULER"


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
    if journal is not None and journal.other_time_point is not None:
        print(
            f"resuming: the run in {output} segmented another time point (--time {journal.other_time_point}); "
            f"this one, --time {args.time}, is made whole (nothing of that run is done already here), and the labels "
            "keep the time points it and other runs wrote",
            file=sys.stderr,
        )
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
    interrupted = lost = False
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
    except SchedulerLost:
        lost = True  # tasks may be out on workers that outlive their scheduler: the journal stays
        raise
    except KeyboardInterrupt as exc:
        interrupted = True  # tasks may be out (a worker still writing): the journal must stay, even without records
        if mode != "none" and output is not None:
            # the tasks were cancelled and waited for (on_dask): one past its method's last step wrote its outputs
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
            journal.close(finished=False, started=(interrupted or lost) and bool(todo))
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


def _run_here(job: BatchJob, todo: Sequence[Path], single: bool, deliver: Callable[[str, dict], None]) -> None:
    """Scheduler ``none``: the same tasks in this process, one after the other (settings restored after)."""
    with process_settings_restored():
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
            forget_state(job.run_id)
