"""Device choice (CPU unless an accelerator is present and asked for, or 'auto') and the encoder's numeric mode.
No torch at import: the CLI reads these before it knows whether this process runs a model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import PromptsegError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda", "mps")

#: numeric modes of the image encoder: float32, bfloat16 autocast (on CPUs with native bfloat16, AMX or AVX512-BF16,
#: 1.3-1.7x faster for a ~3 % change of the embedding and the same accuracy on every set measured, registration
#: aside, see :func:`.sam_family.auto_precision`; slower on CPUs without it), or auto (the default): bfloat16 on a
#: CPU with native bfloat16, float32 everywhere else
PRECISIONS = ("auto", "float32", "bfloat16")
#: the encoder's precision when a segmenter is not given one (read at every encode, so a CLI run and the Dask
#: workers it starts follow ``promptseg --precision``)
PRECISION_ENV = "PROMPTSEG_PRECISION"


def check_precision(value: str, source: str = "precision") -> str:
    precision = str(value).strip().lower()
    if precision not in PRECISIONS:
        raise PromptsegError(f"{source}: expected one of {', '.join(PRECISIONS)}, got {value!r}")
    return precision


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' -> cuda if available, else mps if available, else cpu. An unavailable explicit choice is an error."""
    import torch

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
