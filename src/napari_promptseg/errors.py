"""Exceptions with messages meant for the user (CLI prints them on one line, the widgets notify them)."""

from __future__ import annotations


class PromptsegError(ValueError):
    """Bad input: the message names the layer/file/argument and what is wrong with it."""


class WeightsError(RuntimeError):
    """Model weights are missing, corrupt or cannot be fetched; the message says which file and where to put it."""


class CancelledError(RuntimeError):
    """Raised inside long work when the user asked to stop."""
