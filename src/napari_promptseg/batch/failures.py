"""How a task's failure is classified: a worker's setup (stops the run), the output disk's (stops the run without a
retry), a file system's passing error (worth the retry), and a single input's own error (the run's)."""

from __future__ import annotations

import errno

from ..disk_errors import OUTPUT_DISK_REFUSES
from ..errors import PromptsegError, WeightsError


class SetupError(PromptsegError):
    """A worker could not prepare the run (weights, references): the run stops, as it would in one process."""


class SchedulerLost(PromptsegError):
    """The Dask scheduler went away (or cancelled the run's tasks) mid-run: not an error of the inputs left, which
    are not recorded as failed; the run stops, its journal kept for --resume."""


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


def may_pass_on_retry(exc: BaseException) -> bool:
    """Whether a read refused as no image (:func:`~..io.images.read_image` wraps every reader's error) failed on the
    file system rather than on the file's contents: that one deserves the retry, a corrupt or empty file does not."""
    cause = exc.__cause__
    return isinstance(cause, (TimeoutError, ConnectionError)) or (
        isinstance(cause, OSError) and cause.errno in _TRANSIENT_ERRNOS
    )


def failure_reason(exc: BaseException) -> str:
    """An error as a record's ``reason``: one line; the exception's type named unless it is the tool's own."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return reason if isinstance(exc, (PromptsegError, WeightsError)) else f"{type(exc).__name__}: {reason}"


def first_error_is_the_runs(exc: BaseException, single: bool, path: str) -> bool:
    """A single input's own error stops the run as itself; it names the input (``failed_input``), whose earlier
    outputs then go (they would pass for this run's)."""
    if single and isinstance(exc, (PromptsegError, WeightsError)) and not isinstance(exc, SetupError):
        exc.failed_input = path
        return True
    return False
