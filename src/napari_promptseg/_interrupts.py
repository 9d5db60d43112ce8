"""Ctrl+C and SIGTERM held back from the moment a result is published until it is recorded.

A batch in this process writes an input's labels, then appends its record to the journal; an interrupt between the
two left the file written but not recorded (the report called it interrupted, --resume made it again). The batch
arms :func:`held_once_published` around an input; :func:`publishing`, called by the writers just before a file
takes its name, starts holding the signals; they are raised as they came when the armed block ends, the record in.
Before the publish an interrupt stops the input at once, as always. Main thread only (where Python runs handlers).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Armed:
    def __init__(self) -> None:
        self.handlers: dict[int, object] | None = None  # the handlers found, once holding
        self.arrived: list[int] = []

    def hold(self) -> None:
        if self.handlers is None:
            self.handlers = {s: signal.getsignal(s) for s in _SIGNALS}
            for s in _SIGNALS:
                signal.signal(s, self._arrived)

    def _arrived(self, signum: int, frame: object) -> None:
        self.arrived.append(signum)

    def release(self) -> None:
        if self.handlers is None:
            return
        for s, handler in self.handlers.items():
            signal.signal(s, handler)  # type: ignore[arg-type]
        for signum in dict.fromkeys(self.arrived):  # now, to the handlers found (Ctrl+C: KeyboardInterrupt)
            signal.raise_signal(signum)


_armed: _Armed | None = None


@contextmanager
def held_once_published() -> Iterator[None]:
    """Interrupts arriving after a :func:`publishing` in the block are raised at its end (in the main thread)."""
    global _armed
    if threading.current_thread() is not threading.main_thread() or _armed is not None:
        yield
        return
    armed = _armed = _Armed()
    try:
        yield
    finally:
        _armed = None
        armed.release()


def publishing() -> None:
    """A result is about to take its name: from here to the end of an armed block, interrupts wait."""
    if _armed is not None and threading.current_thread() is threading.main_thread():
        _armed.hold()
