"""The CLI's download progress: one line of stderr rewritten in place (``\\r``), ended with a newline when a
download finishes and when the command ends, however it ends (a failed or interrupted download): what is printed
next (the error, the run's own lines) started on the progress line's end.

Every command that loads a model tells its downloads here (the loaders' ``progress(done, total)`` and a named text
route's ``progress(fraction, message)``); :func:`ended` around the command ends a line left open.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator

_lock = threading.Lock()  # a model may load in a thread of an in-process batch
_open = False  # a progress line was written and not yet ended


def show(text: str, *, finished: bool = False) -> None:
    """Write ``text`` over the progress line; ``finished``: the download is complete, end the line."""
    global _open
    with _lock:
        print(f"\r{text}", end="\n" if finished else "", file=sys.stderr, flush=True)
        _open = not finished


def end() -> None:
    """End the progress line with a newline if one is open (nothing when none is)."""
    global _open
    with _lock:
        if _open:
            print(file=sys.stderr, flush=True)
            _open = False


def weights_progress(name: str) -> Callable[[int, int | None], None]:
    """A loader's ``progress(done_bytes, total_bytes)`` for model ``name``, told on the line as the widgets tell it
    ("downloading sam_vit_b: 12 of 375 MB"; the line said "weights", not which)."""
    from ..models import download_progress

    return download_progress(route_progress, None, name)


def route_progress(fraction: float, message: str) -> None:
    """A named text route's model download (``progress(fraction, message)`` of the route chooser), told on the same
    line (huggingface_hub's own bars were all a user saw)."""
    show(message, finished=fraction >= 1.0)


@contextlib.contextmanager
def ended() -> Iterator[None]:
    """Whatever happens inside (an error, Ctrl+C), the progress line is ended when it is left."""
    try:
        yield
    finally:
        end()
