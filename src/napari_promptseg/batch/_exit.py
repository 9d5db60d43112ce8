"""Worker plugin for the clusters the batch engine starts (imports ``distributed``: import it only there)."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading

from distributed import WorkerPlugin


class ExitWithoutTeardown(WorkerPlugin):
    """Ctrl+C is left to the driver, and once Python's exit handlers begin in a worker process, it flushes its
    output and leaves. Unloading torch's modules at interpreter exit takes ~0.5 s, and closing the cluster waits for
    every worker process (0.65 s of every run -> 0.05 s). The process has nothing left to write by then: each task
    writes and closes its outputs, and the worker has closed. Only for the engine's own LocalCluster: a user's
    long-lived ``dask worker`` exits as it always did. What is skipped: exit handlers registered before this one
    (logging's final flush, multiprocessing's joins) and the exit status (always 0; the nanny restarts a worker
    that dies whatever its status)."""

    name = "promptseg-exit-without-teardown"

    def setup(self, worker: object) -> None:
        atexit.register(_exit_now)
        # Ctrl+C reaches every process of the terminal's group: the driver stops the run and closes the cluster,
        # which ends its workers; a worker's own KeyboardInterrupt only printed asyncio's tracebacks over its report
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _exit_now() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):  # a closed or replaced stream
            stream.flush()
    os._exit(0)
