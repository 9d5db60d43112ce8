"""What a batch shows on stderr while it runs: the bar of inputs (counts, failures, ETA) and, for a run's one input,
its method's steps."""

from __future__ import annotations

import shutil
import sys
import time

#: off a terminal, a method's steps are written at most this often (seconds), the first after as long
LOG_STEP_EVERY_S = 10.0


class StepLine:
    """A method's progress on stderr: one rewritten line on a terminal (at most 4 a second, cut to its width),
    else a line at most every :data:`LOG_STEP_EVERY_S` (a log stays readable; a short run writes none)."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = 0.25 if self.tty else LOG_STEP_EVERY_S
        self.last, self.width = (float("-inf") if self.tty else time.monotonic()), 0

    def __call__(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        text = f"{message} ({100 * max(0.0, min(1.0, fraction)):.0f} %)"
        if self.tty:  # one row: a wrapped line would leave rows behind at every update
            columns = shutil.get_terminal_size().columns - 1
            text = text if len(text) <= columns else "..." + text[len(text) - columns + 3 :]
            self.stream.write("\r" + text.ljust(self.width))
            self.width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Clear the line (before the record's own lines; the next step writes it again)."""
        if self.tty and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


class BatchProgress:
    """Counts, rate and ETA on stderr: on a terminal tqdm's bar when installed, else one rewritten line; off a
    terminal (a log file) a plain line at most every :data:`LOG_STEP_EVERY_S` and at the end (a bar's carriage
    returns would fill the log, and other lines would stick to it). The steps of the input being segmented in this
    process (:meth:`step`: a stack's planes) are shown in that same display, not on a line of their own over it."""

    def __init__(self, total: int, done: int) -> None:
        self.total, self.done, self.failed = total, done, 0
        self.start, self.start_done = time.monotonic(), done
        self.tty = bool(getattr(sys.stderr, "isatty", lambda: False)())
        self.last = self.start
        self.bar = None
        self.step_text, self.last_step, self.width = "", float("-inf"), 0
        # off a terminal, the steps are lines of their own, as a single input's (a log: no carriage returns)
        self.steps = None if self.tty else StepLine(sys.stderr)
        if self.tty:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, initial=done, unit="image", file=sys.stderr, dynamic_ncols=True)
            except ImportError:
                self._rewrite()

    def step(self, fraction: float, message: str) -> None:
        """The current input's step (``progress(fraction, message)`` of a method), after the counts: at most 4 a
        second on a terminal."""
        if self.steps is not None:
            self.steps(fraction, message)
            return
        now = time.monotonic()
        if now - self.last_step < 0.25:
            return
        self.last_step = now
        self.step_text = f"{message} ({100 * max(0.0, min(1.0, fraction)):.0f} %)"
        self._show()

    def update(self, record: dict) -> None:
        self.done += 1
        self.failed += record.get("status") == "failed"
        self.step_text, self.last_step = "", float("-inf")  # the next input's steps start afresh
        if self.bar is not None:
            self._postfix(refresh=False)
            self.bar.update(1)
        elif self.tty:
            self._rewrite()
        elif time.monotonic() - self.last >= LOG_STEP_EVERY_S or self.done == self.total:
            self.last = time.monotonic()
            print(self._text(), file=sys.stderr, flush=True)

    def _show(self) -> None:
        if self.bar is not None:
            self._postfix(refresh=True)
        else:
            self._rewrite()

    def _postfix(self, refresh: bool) -> None:
        parts = [f"{self.failed} failed" if self.failed else "", self.step_text]
        self.bar.set_postfix_str(", ".join(p for p in parts if p), refresh=refresh)

    def _rewrite(self) -> None:
        """The counts (and step) as one rewritten line, cut to the terminal's width (a wrapped line would leave rows
        behind), padded over the longer line it replaces."""
        text = self._text() + (f" | {self.step_text}" if self.step_text else "")
        columns = shutil.get_terminal_size().columns - 1
        text = text if len(text) <= columns else text[: columns - 3] + "..."
        print("\r" + text.ljust(self.width), end="", file=sys.stderr, flush=True)
        self.width = len(text)

    def write(self, text: str, err: bool = False) -> None:
        """A line above the bar (tqdm keeps the bar at the bottom)."""
        stream = sys.stderr if err else sys.stdout
        if self.bar is not None:
            self.bar.write(text, file=stream)
        else:
            print(("\n" if err and self.tty else "") + text, file=stream, flush=True)

    def _text(self) -> str:
        elapsed = time.monotonic() - self.start
        new = self.done - self.start_done
        eta = elapsed / new * (self.total - self.done) if new else None
        text = f"{self.done}/{self.total} images" + (f", {self.failed} failed" if self.failed else "")
        return text + (f", ETA {time.strftime('%H:%M:%S', time.gmtime(eta))}" if eta is not None else "")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.tty:
            print(file=sys.stderr)
