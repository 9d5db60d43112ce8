"""The state of a process that segments: the run's models loaded once per process and run, torch threads and the
disk embedding cache as the run sets them, and whether the process is a Dask worker."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from ..errors import CancelledError
from .job import BatchJob

#: torch threads of each process that segments (``--threads``); fixed, so results do not depend on the scheduler
DEFAULT_THREADS = 1
#: run states a long-lived worker keeps (one per run; models themselves are cached by ``load_segmenter``)
KEPT_STATES = 2

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


def users_worker_named() -> str:
    """' (on the Dask worker at ADDRESS)' in a worker of a user's scheduler, else '': its error (no weights there, a
    path its machine lacks) is said about its machine, not the driver's, which may well have them. The workers of
    the run's own LocalCluster (which carry its exit plugin) are this machine's."""
    if not in_dask_worker():
        return ""
    from distributed import get_worker

    from ._exit import ExitWithoutTeardown

    worker = get_worker()
    return "" if ExitWithoutTeardown.name in worker.plugins else f" (on the Dask worker at {worker.address})"


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


#: the steps of the method working on an input: a run's own display in this process (its bar of inputs, or the one
#: input's line), a check for the task's cancelling on a Dask worker
_method_progress: ContextVar[Callable[[float, str], None] | None] = ContextVar("method_progress", default=None)


def method_progress() -> Callable[[float, str], None] | None:
    """A reporter for the method the CLI calls (``progress=``): an in-process run shows the steps (tiles, planes) of
    the input being segmented on stderr, so a large image is not minutes of silence (its own line for a run's one
    input, beside the bar of a batch's); on a Dask worker, the step that finds the task cancelled (the driver's
    Ctrl+C) raises :class:`CancelledError` there (the driver's bar counts the workers' inputs)."""
    return _method_progress.get()


@contextmanager
def stopped_when_cancelled() -> Iterator[None]:
    """In a Dask worker's task: its method stops at its next step once the task is cancelled (Ctrl+C in the driver
    cancels its tasks; a worker thread cannot be stopped from outside, and a user's long-lived worker went on
    segmenting, then wrote labels the run's report called not written). Elsewhere nothing changes."""
    if not in_dask_worker() or _method_progress.get() is not None:
        yield
        return
    from distributed import get_worker

    worker = get_worker()
    key = worker.get_current_task()

    def stop_if_cancelled(fraction: float = 0.0, message: str = "") -> None:
        task = worker.state.tasks.get(key)
        if task is None or task.state == "cancelled":  # "resumed": cancelled, then asked for again: it goes on
            raise CancelledError("cancelled: the run was stopped (Ctrl+C)")

    token = _method_progress.set(stop_if_cancelled)
    try:
        yield
    finally:
        _method_progress.reset(token)


def forget_state(run_id: str) -> None:
    """Drop a run's state once it ran in the caller's process (scheduler ``none``): its models are not kept for it."""
    with _states_lock:
        _states.pop(run_id, None)


@contextmanager
def process_settings_restored() -> Iterator[None]:
    """Scheduler ``none`` runs in the caller's process: its torch threads and disk cache are put back after."""
    import torch

    from ..models import embedding_cache

    threads = torch.get_num_threads()
    try:
        with embedding_cache.settings_restored():
            yield
    finally:
        torch.set_num_threads(threads)
