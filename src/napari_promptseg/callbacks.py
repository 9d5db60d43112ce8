"""The callbacks long work takes from its caller (a widget's worker, the CLI's progress line, a console user)."""

from __future__ import annotations

from collections.abc import Callable

#: progress(fraction_done, message): the fraction done (0 to 1) and what is being done now
ProgressCallback = Callable[[float, str], None]
