"""A batch's tasks on Dask distributed workers (:func:`.engine.run_batch` with a scheduler): a LocalCluster of worker
processes, or a scheduler's ``tcp://`` address; one task per input, largest first, a failed task once more (not one
whose every worker died). Ctrl+C cancels the tasks and waits for the workers to stop them; a scheduler that goes
away, or has no worker left, stops the run (:class:`.failures.SchedulerLost`), its journal kept for --resume."""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ..errors import CancelledError, PromptsegError
from .failures import SchedulerLost, SetupError, first_error_is_the_runs, stops_the_run
from .job import BatchJob
from .task import failed_record, run_target

#: how long a scheduler address may have no worker before the run gives up
WORKER_WAIT_S = 60.0
#: how long the client tries to reach a scheduler, and to reach it again once the connection is lost
SCHEDULER_TIMEOUT_S = 20.0
#: how long Ctrl+C waits for the inputs in progress on the workers to stop (at their method's next step), and SIGTERM
STOP_WAIT_S = 60.0
TERM_WAIT_S = 5.0


def run_on_dask(
    job: BatchJob,
    todo: Sequence[Path],
    single: bool,
    mode: str,
    n_workers: int | None,
    deliver: Callable[[str, dict], None],
) -> int:
    """One task per input on Dask distributed; a failed task is submitted once more as the final attempt. Returns
    the number of workers."""
    import dask
    from distributed import Client, LocalCluster, as_completed

    from ._exit import ExitWithoutTeardown

    cluster = None
    if mode == "local":
        # no dashboard, so no use for the workers' statistical profiler (it samples every thread 100 times a second);
        # saturation 1.0 (distributed's default 1.1 sends one more ahead): an input queued on a worker killed by
        # another input is counted as one that killed it (KilledWorker: recorded failed, no output, never run). Only
        # queued tasks (distributed queues a batch of more than twice the workers' threads) are held back: a smaller
        # batch's inputs all go to the workers at once and can still be counted so (known, not fixed)
        settings = {"distributed.worker.profile.enabled": False, "distributed.scheduler.worker-saturation": 1.0}
        with dask.config.set(settings):
            cluster = LocalCluster(
                n_workers=n_workers,
                threads_per_worker=1,
                processes=True,
                # the scheduler's HTTP server starts even without a dashboard, at 8787 unless told: a free loopback
                # port, so two runs (or a user's own cluster) never meet there
                dashboard_address=None,
                scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
                # a failed input's reason goes to its record and report.json; distributed's own log of it
                # ("Compute Failed" and a traceback) would come first on stderr
                silence_logs=logging.CRITICAL,
            )
        client = Client(cluster)
    else:
        try:
            _reachable(mode)  # a refused connection says so at once (the client would retry for its timeout)
            client = Client(mode, timeout=f"{SCHEDULER_TIMEOUT_S}s")
        except OSError as exc:
            raise PromptsegError(f"cannot reach the Dask scheduler at {mode}: {exc}") from exc
    lost = False
    try:
        if cluster is not None:
            client.register_plugin(ExitWithoutTeardown())
        try:
            client.wait_for_workers(1, timeout=WORKER_WAIT_S)
        except TimeoutError:
            raise PromptsegError(f"the Dask scheduler at {mode} has no worker (waited {WORKER_WAIT_S:.0f} s)") from None
        n_workers = len(client.scheduler_info(n_workers=-1)["workers"])
        tasks = {}
        for i in largest_first(todo):
            path = todo[i]
            future = client.submit(
                run_target, job, str(path), False, not single, key=f"promptseg-{job.run_id}-{i}", pure=False
            )
            tasks[future] = (str(path), False)
        pending = as_completed(list(tasks))
        taken: set = set()  # the futures whose result was taken (delivered, or retried)
        try:
            for future in _as_workers_finish(pending, client, mode):
                taken.add(future)
                path, final = tasks[future]
                try:
                    result = future.result()
                except (CancelledError, KeyboardInterrupt):
                    raise
                except SetupError:
                    raise
                except Exception as exc:
                    if isinstance(exc, concurrent.futures.CancelledError):  # distributed's: not the task's error
                        lost = True
                        raise SchedulerLost(_scheduler_lost(client, mode, getattr(exc, "reason", ""))) from None
                    if stops_the_run(exc):
                        raise
                    died = _workers_died(exc)
                    if died is not None:  # Dask ran it on several workers already: a retry killed as many more
                        result = {"record": failed_record(None, Path(path), None, died), "meta": {}}
                        result["record"]["attempts"] = 2 if final else 1
                    elif not final:
                        if first_error_is_the_runs(exc, single, str(path)):
                            raise
                        retry = client.submit(run_target, job, path, True, key=f"{future.key}-retry", pure=False)
                        tasks[retry] = (path, True)
                        pending.add(retry)
                        continue
                    else:  # the retry itself failed where it records nothing: no output, the reason in the report
                        result = {"record": failed_record(None, Path(path), None, exc), "meta": {}}
                        result["record"]["attempts"] = 2
                deliver(path, result)
        except KeyboardInterrupt as exc:
            # a user's scheduler keeps its workers once the client goes: tasks left there went on computing and
            # wrote labels after the run said they were not written
            client.cancel([future for future in tasks if future.status != "finished"])
            _deliver_finished(tasks, taken, deliver)
            # SIGTERM (the CLI raises a KeyboardInterrupt of its own): a grace period runs (a container's 10 s),
            # after which a SIGKILL would leave no report
            limit = STOP_WAIT_S if type(exc) is KeyboardInterrupt else TERM_WAIT_S
            _wait_for_the_workers(client, f"promptseg-{job.run_id}-", limit)
            raise
        return n_workers
    finally:
        # a lost scheduler: closing cancels the client's attempts to reach it again, which distributed logs with
        # its tracebacks below the run's error
        with _quiet("distributed.client", "distributed.comm") if lost else contextlib.nullcontext():
            client.close()
        if cluster is not None:
            cluster.close()


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _as_workers_finish(pending: object, client: object, mode: str) -> Iterator[object]:
    """The futures of ``pending`` (distributed's ``as_completed``) as they finish, while the scheduler has workers:
    once it has none (they died, e.g. of the OOM killer; nothing restarts a worker without a nanny) the run said
    nothing and waited forever. Said at once; none back within :data:`WORKER_WAIT_S` stops the run."""
    none_since = None
    checked = 0.0
    while not pending.is_empty():
        if pending.has_ready():
            yield next(pending)
            continue
        now = time.monotonic()
        if now - checked >= 1.0:
            checked = now
            try:
                workers = len(client.nthreads())
            except Exception:  # noqa: BLE001 - the scheduler gone: its futures are cancelled, and say so
                workers = 1
            if workers:
                none_since = None
            elif none_since is None:
                none_since = now
                print(
                    f"warning: the Dask scheduler {_where(mode)} has no worker left (they died: out of memory?); "
                    f"waiting {WORKER_WAIT_S:.0f} s for one",
                    file=sys.stderr,
                    flush=True,
                )
            elif now - none_since > WORKER_WAIT_S:
                raise SchedulerLost(
                    f"the Dask scheduler {_where(mode)} has no worker left (none for {WORKER_WAIT_S:.0f} s: they died, "
                    "or were stopped); the inputs not done are not recorded as failed: start workers, then run the "
                    "same command with --resume to go on"
                )
        time.sleep(0.05)


def _workers_died(exc: BaseException) -> str | None:
    """The reason for an input whose every worker died running it (distributed's ``KilledWorker``, after it ran the
    task on ``allowed-failures`` + 1 workers), in words; None for another error."""
    from distributed.scheduler import KilledWorker

    if not isinstance(exc, KilledWorker):
        return None
    last, allowed = exc.last_worker, exc.allowed_failures
    n = int(allowed) + 1
    return (
        f"the worker running it died (on {n} worker{'s' if n > 1 else ''} in turn): killed for using too much memory, "
        f"or a crash in a native library; the last was {getattr(last, 'address', last)}, whose log may say which"
    )


def _where(mode: str) -> str:
    return f"at {mode}" if mode != "local" else "of the run's LocalCluster"


def _scheduler_lost(client: object, mode: str, reason: str) -> str:
    """Why a task of the run was cancelled though the run did not cancel it, for the run's error."""
    where = _where(mode)
    if "connection" in str(reason) or getattr(client, "status", "running") != "running":
        what = f"the Dask scheduler {where} went away (the connection to it was lost)"
    else:
        what = f"the Dask scheduler {where} cancelled the run's tasks ({reason or 'restarted, or another client'})"
    return (
        f"{what}; the inputs not done are not recorded as failed: run the same command with --resume to go on once "
        "it is back"
    )


def _deliver_finished(tasks: dict, taken: set, deliver: Callable[[str, dict], None]) -> None:
    """Ctrl+C (SIGTERM) in the driver: the results that had come back from the workers but were not taken in yet
    are delivered (journal, report) before the run stops; their label files are written, and a run that called them
    "interrupted" made them again on --resume. A task that failed or still runs is left (not done)."""
    for future, (path, _) in list(tasks.items()):
        if future in taken or future.status != "finished":
            continue
        taken.add(future)
        try:
            result = future.result(timeout=5)
        except Exception:  # noqa: BLE001 - gone with its worker meanwhile: not done, as if still running
            continue
        deliver(path, result)


def _wait_for_the_workers(client: object, prefix: str, limit: float) -> None:
    """After the tasks were cancelled: wait until no worker runs one (each stops at its method's next step, or ends
    if it was past its last), so nothing of the run is written after its report; a second Ctrl+C stops waiting."""
    deadline = time.monotonic() + limit
    said = False
    try:
        while True:
            running = sum(len(keys) for keys in client.run(running_tasks, prefix).values())
            if not running:
                return
            if time.monotonic() > deadline:
                print(
                    f"warning: {running} input(s) still run on the workers after {limit:.0f} s; their labels "
                    "may yet be written (a --resume takes them in)",
                    file=sys.stderr,
                )
                return
            if not said:
                print(
                    f"stopping: waiting for the {running} input(s) in progress on the workers to stop "
                    "(Ctrl+C again not to wait)",
                    file=sys.stderr,
                    flush=True,
                )
                said = True
            time.sleep(0.1)
    except KeyboardInterrupt:
        print("warning: not waiting for the workers: the input(s) in progress may yet be written", file=sys.stderr)
    except Exception:  # noqa: BLE001 - the scheduler or a worker gone meanwhile: nothing of ours runs there now
        return


def running_tasks(prefix: str, dask_worker: object = None) -> list[str]:
    """Run on every worker (``Client.run``): the keys starting with ``prefix`` of the tasks it still executes
    (cancelled ones whose thread has not returned included)."""
    tasks = dask_worker.state.tasks  # type: ignore[attr-defined]
    return [str(key) for key, task in list(tasks.items()) if str(key).startswith(prefix) and task.state in _RUNNING]


_RUNNING = frozenset({"executing", "long-running", "cancelled", "resumed"})


def largest_first(paths: Sequence[Path]) -> list[int]:
    """The inputs' indices, largest on disk first (input order among equals): workers take tasks in the order they
    were submitted, and a whole slide taken last would leave every other worker idle while it runs alone."""
    return sorted(range(len(paths)), key=lambda i: -_bytes_on_disk(Path(paths[i])))


def _bytes_on_disk(path: Path) -> int:
    """A file's size, or the total of a directory's files (an OME-Zarr); 0 when it cannot be read (its task says
    why)."""
    try:
        if path.is_dir():
            return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        return path.stat().st_size
    except OSError:
        return 0


def _reachable(address: str) -> None:
    """Raise OSError when nothing listens at a ``tcp://HOST:PORT`` scheduler address, or its host is unknown (other
    schemes, and slow connections, are left to the client)."""
    import socket

    if not address.startswith("tcp://"):
        return
    host, _, port = address[len("tcp://") :].rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except ValueError as exc:
        raise OSError(f"not a HOST:PORT address ({exc})") from exc
    except (ConnectionRefusedError, socket.gaierror):
        raise
    except OSError:
        pass  # slow (a tunnel, a VPN): the client's own timeout decides
