"""Batches over many images: one task per image in this process or on Dask distributed workers, resumable.

No Qt, no napari. The CLI's batch subcommands (segment, oneshot, text, embed) run through :func:`run_batch`.
"""

from .engine import (
    DEFAULT_THREADS,
    SCHEDULER_ENV,
    BatchJob,
    BatchOutcome,
    SetupError,
    default_workers,
    failed_record,
    resolve_scheduler,
    run_batch,
    run_target,
)
from .journal import JOURNAL_NAME, run_signature

__all__ = [
    "DEFAULT_THREADS",
    "JOURNAL_NAME",
    "SCHEDULER_ENV",
    "BatchJob",
    "BatchOutcome",
    "SetupError",
    "default_workers",
    "failed_record",
    "resolve_scheduler",
    "run_batch",
    "run_signature",
    "run_target",
]
