"""Device choice: CPU unless an accelerator is present and asked for (or 'auto')."""

from __future__ import annotations

import torch

from ..errors import PromptsegError

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' -> cuda if available, else mps if available, else cpu. An unavailable explicit choice is an error."""
    name = "auto" if device is None else str(device)
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise PromptsegError(f"device must be one of {DEVICES}, got {name!r}")
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if kind == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (kind == "cuda" and not cuda) or (kind == "mps" and not mps):
        raise PromptsegError(f"device {name!r} requested but not available on this machine; use 'cpu' or 'auto'")
    return torch.device(name)
