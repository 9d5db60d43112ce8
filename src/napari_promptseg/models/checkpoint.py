"""Reading checkpoints safely (``weights_only``) with one-line errors that name the file."""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Callable, Sequence
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


#: a zip file (torch.save's format since 1.6) starts with a local file header and ends with the end-of-central-directory
#: record, within its last 22 bytes plus a comment of up to 64 KiB
_ZIP_START, _ZIP_END, _ZIP_TAIL = b"PK\x03\x04", b"PK\x05\x06", 22 + 65535


def _zip_without_end(path: Path) -> bool:
    """Whether ``path`` is a zip file whose end is missing: a checkpoint whose download or copy was cut short."""
    try:
        with open(path, "rb") as file:
            if file.read(4) != _ZIP_START:
                return False
            file.seek(max(0, path.stat().st_size - _ZIP_TAIL))
            return _ZIP_END not in file.read()
    except OSError:
        return False


#: what to do with a file cut short
AGAIN = "copy or download it again"


def _safetensors_size(path: Path) -> int | None:
    """The size a safetensors file's header says the file has (8 bytes of header length, the JSON header, then the
    tensors' bytes up to the largest end offset), or None when ``path`` does not start as one."""
    try:
        with open(path, "rb") as file:
            length = int.from_bytes(file.read(8), "little")
            if not 2 <= length <= min(100_000_000, path.stat().st_size - 8):
                return None
            header = json.loads(file.read(length))
    except (OSError, ValueError):
        return None
    if not isinstance(header, dict):
        return None
    ends = [
        e["data_offsets"][1] for e in header.values() if isinstance(e, dict) and len(e.get("data_offsets", ())) == 2
    ]
    return 8 + length + max(ends, default=0)


def _why_unreadable(path: Path) -> str | None:
    """Why a file torch cannot load is no checkpoint, when the bytes say: a zip (torch.save's format) or safetensors
    file cut short (torch said 'failed finding central directory', 'Invalid argument', or safetensors 'incomplete
    metadata, file not fully covered'), a checkpoint zipped for mailing ('file in archive is not in a
    subdirectory'). None: torch's own reason is told."""
    size = path.stat().st_size
    if _zip_without_end(path):
        return f"is cut short ({size:,} bytes: its end is missing; an interrupted download or copy?)"
    expected = _safetensors_size(path)
    if expected is not None and size < expected:
        return f"is cut short ({size:,} of its {expected:,} bytes; an interrupted download or copy?)"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return None
    if any(n.endswith("/data.pkl") for n in names):  # a torch archive of its own, unreadable for another reason
        return None
    held = [n for n in names if n.endswith((".pth", ".pt", ".ckpt", ".bin", ".safetensors"))]
    if held:
        return f"is a zip archive holding {', '.join(held[:3])}, not a checkpoint: unzip it and give {held[0]}"
    return None


def read_state_dict(path: Path, name: str) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{name}: weights file {path} does not exist")
    if path.stat().st_size == 0:
        raise WeightsError(f"{name}: {path} is empty (0 bytes), not a PyTorch checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises anything on a bad file (KeyError for a text file, UnpicklingError, ...)
        why = _why_unreadable(path)
        if why is not None:
            raise WeightsError(f"{name}: {path} {why}", details=None if "zip archive" in why else AGAIN) from exc
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


#: SAM's image encoders by their width (the last axis of ``image_encoder.pos_embed``)
_SAM_VIT_WIDTHS = {768: "sam_vit_b", 1024: "sam_vit_l", 1280: "sam_vit_h"}
#: TinyViT encoders by their first convolution's kernel: LiteMedSAM's is 1x1, MobileSAM's 3x3
_TINYVIT_KERNELS = {1: "litemedsam", 3: "mobile_sam"}


def sam_checkpoint_kind(state: dict[str, torch.Tensor]) -> str | None:
    """The catalogue model a SAM-layout state dict is, told by the shapes of its image encoder, else None: a user
    who forgot --model (LiteMedSAM is the default) was told 'Is it a checkpoint of another model?' and no more."""
    pos_embed = state.get("image_encoder.pos_embed")
    if pos_embed is not None and pos_embed.ndim == 4:
        return _SAM_VIT_WIDTHS.get(int(pos_embed.shape[-1]))
    first = state.get("image_encoder.patch_embed.seq.0.c.weight")
    if first is not None and first.ndim == 4:
        return _TINYVIT_KERNELS.get(int(first.shape[-1]))
    return None


def load_state_dict(
    module: torch.nn.Module,
    path: Path,
    name: str,
    *,
    ignore: Callable[[str], bool] = IGNORED_KEYS.__contains__,
    strip_prefix: str = "",
    architecture: str | None = None,
) -> None:
    """Strict load; a file of another architecture gets a one-line summary of what does not fit, not torch's list.

    Keys of the file the module does not have are dropped when ``ignore(key)`` says so (buffers rebuilt by the
    constructor); ``strip_prefix`` comes off every key (e.g. ``module.`` of a DataParallel save).
    """
    expected = module.state_dict()
    state = {k.removeprefix(strip_prefix) if strip_prefix else k: v for k, v in read_state_dict(path, name).items()}
    state = {k: v for k, v in state.items() if k in expected or not ignore(k)}
    architecture = architecture or f"{name} architecture"
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
        kind = sam_checkpoint_kind(state)
        which = (
            # the CLI's option and the widgets' box: the message reaches both (the widgets said '--model')
            f"It is a {kind} checkpoint: load it as model {kind} (--model {kind}, or a widget's 'model' box)"
            if kind is not None and kind != name
            else "Is it a checkpoint of another model?"
        )
        raise WeightsError(f"{name}: {path} does not fit the {architecture}: {'; '.join(problems)}. {which}")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # e.g. a dtype torch cannot copy; keys and shapes were checked above
        raise WeightsError(f"{name}: {path} does not fit the {architecture} ({_reason(exc)})") from exc


#: a needed part of a model directory: (how the error names it, alternative file sets, any one set complete will do)
DirectoryPart = tuple[str, Sequence[Sequence[str]]]
#: weight files transformers writes (single file, or sharded with an index)
WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
#: transformers < 5 saves the image processor as preprocessor_config.json, 5.x as part of processor_config.json
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def hub_load_errors() -> tuple[type[BaseException], ...]:
    """What transformers' ``from_pretrained`` raises for a damaged or foreign model folder: a truncated safetensors
    file (SafetensorError), a config without the weights' shapes (RuntimeError), ... (a traceback before)."""
    from safetensors import SafetensorError

    return (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError)


def check_model_directory(
    path: str | os.PathLike, parts: Sequence[DirectoryPart], *, model_type: str, what: str, name: str
) -> Path:
    """A transformers-layout model directory, checked before transformers sees it (its errors name neither the
    model nor what to fetch): it exists, holds every part, and ``config.json`` says ``model_type``."""
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise WeightsError(f"{name}: {directory} is not a directory; give a transformers {what} model directory")
    missing = [
        label
        for label, alternatives in (("config.json", [["config.json"]]), *parts)
        if not any(all((directory / f).is_file() for f in files) for files in alternatives)
    ]
    if missing:
        raise WeightsError(
            f"{name}: {directory} is not a complete {what} model directory: missing {'; '.join(missing)}"
        )
    config = directory / "config.json"
    try:
        found = json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise WeightsError(f"{name}: {config} is not readable JSON ({exc})") from exc
    if found != model_type:
        raise WeightsError(
            f"{name}: {config} has model_type {found!r}, not {model_type!r}: a {found!r} model, not {what}"
        )
    return directory
