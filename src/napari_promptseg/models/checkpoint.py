"""Reading checkpoints safely (``weights_only``) with one-line errors that name the file."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..errors import WeightsError


def _reason(exc: BaseException, limit: int = 200) -> str:
    """One short line out of torch's multi-paragraph load errors (the CLI prints errors on one line)."""
    text = str(exc)
    # weights_only failures wrap the real cause in advice to disable weights_only, which is wrong for a corrupt file
    unpickler = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", text, flags=re.S)
    if unpickler:
        text = f"not a tensor checkpoint: {unpickler.group(1)}"
    line = " ".join(text.split())
    if len(line) > limit and ". " in line:  # torch appends paragraphs of advice after the first sentence
        line = line.split(". ")[0]
    if not isinstance(exc, RuntimeError) or not line:  # e.g. KeyError('101') says nothing without its type
        line = f"{type(exc).__name__}: {line}".rstrip(": ")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def read_state_dict(path: Path, name: str) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{name}: weights file {path} does not exist")
    if path.stat().st_size == 0:
        raise WeightsError(f"{name}: {path} is empty (0 bytes), not a PyTorch checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises anything on a bad file (KeyError for a text file, UnpicklingError, ...)
        raise WeightsError(f"{name}: {path} cannot be read as a PyTorch checkpoint ({_reason(exc)})") from exc
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{name}: {path} does not contain a state dict (a mapping of parameter names to tensors)")
    return state


#: buffers that SAM checkpoints carry but our modules take as constructor arguments
IGNORED_KEYS = ("pixel_mean", "pixel_std")


def _examples(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (", ..." if len(items) > n else "")


def load_state_dict(module: torch.nn.Module, path: Path, name: str) -> None:
    """Strict load; a file of another architecture gets a one-line summary of what does not fit, not torch's list."""
    state = {k: v for k, v in read_state_dict(path, name).items() if k not in IGNORED_KEYS}
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} in the file vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} tensors of another shape ({_examples(mismatched, 2)})")
    if missing:
        problems.append(f"{len(missing)} missing ({_examples(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ({_examples(unexpected)})")
    if problems:
        raise WeightsError(
            f"{name}: {path} does not fit the {name} architecture: {'; '.join(problems)}. "
            "Is it a checkpoint of another model?"
        )
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # e.g. a dtype torch cannot copy; keys and shapes were checked above
        raise WeightsError(f"{name}: {path} does not fit the {name} architecture ({_reason(exc)})") from exc
