"""Reading checkpoints safely (``weights_only``) with errors that name the file."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from ..errors import WeightsError


def read_state_dict(path: Path, name: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise WeightsError(f"{name}: {path} cannot be read as a PyTorch checkpoint ({exc})") from exc
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsError(f"{name}: {path} does not contain a state dict")
    return state


#: buffers that SAM checkpoints carry but our modules take as constructor arguments
IGNORED_KEYS = ("pixel_mean", "pixel_std")


def load_state_dict(module: torch.nn.Module, path: Path, name: str) -> None:
    state = {k: v for k, v in read_state_dict(path, name).items() if k not in IGNORED_KEYS}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise WeightsError(f"{name}: {path} does not fit the {name} architecture ({first})") from exc
