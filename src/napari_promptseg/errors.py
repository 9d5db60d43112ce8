"""Exceptions with messages meant for the user (CLI prints them on one line, the widgets notify them).

An error may carry ``details`` (which file to put where, every model that was tried): ``str(exc)`` is the message
and the details on one line (the CLI's one-line reason), :func:`split_message` gives the short message a widget
shows in its toast and the details it keeps one click away and in the log.
"""

from __future__ import annotations

#: longest message a notification shows as is; longer ones are cut at a clause and the rest goes to the details
SHORT_LIMIT = 160


class _Detailed:
    """Mixin: ``message`` plus optional ``details``."""

    def __init__(self, message: str = "", *, details: str | None = None) -> None:
        self.message = message
        self.details = details or None
        super().__init__(f"{message}; {details}" if details else message)


class PromptsegError(_Detailed, ValueError):
    """Bad input: the message names the layer/file/argument and what is wrong with it."""


class NothingFoundError(PromptsegError):
    """The inputs are fine, and the answer is that the image holds nothing to segment (a reference that does not
    apply to this target): a batch writes an empty label image with this reason instead of failing the input."""


class WeightsError(_Detailed, RuntimeError):
    """Model weights are missing, corrupt or cannot be fetched; the message says which file and where to put it."""


class CancelledError(RuntimeError):
    """Raised inside long work when the user asked to stop."""


def check_fraction(value: object, name: str, *, zero: bool = True) -> None:
    """Refuse a setting that is not a number in [0, 1] (``zero`` False: in (0, 1]), naming it: the CLI's options
    refuse such values as they are parsed, the console functions took them (an overlap of 5 stopped every object)."""
    import math
    import numbers

    low = "[" if zero else "("
    number = isinstance(value, numbers.Real) and math.isfinite(value)
    if not (number and (value >= 0 if zero else value > 0) and value <= 1):
        shown = f"{value:g}" if isinstance(value, numbers.Real) else repr(value)
        raise PromptsegError(f"{name} must lie in {low}0, 1], got {shown}")


def split_message(exc: BaseException) -> tuple[str, str | None]:
    """``(short, details)`` for a notification: the error's own message and details when it has them; a message
    longer than :data:`SHORT_LIMIT` characters is cut at its last clause boundary ("; ", ". ", ": ") before the
    limit and the whole text becomes the details. ``details`` is None when the short message says everything."""
    message = getattr(exc, "message", None) if isinstance(exc, _Detailed) else None
    details = getattr(exc, "details", None) if isinstance(exc, _Detailed) else None
    text = " ".join((message if message is not None else str(exc)).split())
    if len(text) <= SHORT_LIMIT:
        return text, details
    full = f"{text}; {details}" if details else text
    head = text[:SHORT_LIMIT]
    cut = max(head.rfind(sep) for sep in ("; ", ". ", ": ", " ("))
    short = head[:cut] if cut >= SHORT_LIMIT // 3 else head[: head.rfind(" ")]
    return f"{short.rstrip(' ;:.,(')} … (details)", full
