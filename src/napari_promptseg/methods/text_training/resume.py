"""Resume state of a fusion text-segmenter training run (safetensors + JSON, no pickle).

``MODEL_DIR/last/`` holds the last finished step: the decoder's weights, the optimizer's moments and
``state.json`` (settings, epoch, step, best epoch, history, the data's fingerprint, the feature cache). It is
written beside as ``last.tmp/`` and swapped in, so a crash leaves the old state or the new one, never half of one.
Here: saving and loading that state, and checking that a run may resume from it (or start where it lies).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ...errors import PromptsegError, WeightsError
from ...io._files import replacing_temp_of
from ...models.text_segmenter import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_decoder_weights,
    load_tensors,
    read_config,
    save_tensors,
)

if TYPE_CHECKING:
    from .trainer import TrainingConfig

#: the folders a training state is kept in (``last.tmp`` while written, ``last.old`` while swapped out)
STATE_DIRS = ("last", "last.tmp", "last.old")
#: what a training state folder holds; a folder with anything else is not ours
STATE_FILES = frozenset({WEIGHTS_FILE, "optimizer.safetensors", "state.json"})


def save_resume_state(
    out: Path,
    decoder,
    optimizer,
    config: TrainingConfig,
    epoch: int,
    step: int,
    best,
    history,
    rows: str,
    partial=None,
    *,
    cache: Path,
) -> None:
    """Write ``out/last``: the run at ``epoch`` and ``step`` (step 0: the epoch is finished), with the loss sums
    ``partial`` of the epoch's steps done so far."""
    last, tmp, old = (out / name for name in STATE_DIRS)
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_tensors(tmp / WEIGHTS_FILE, decoder.state_dict())
    opt = optimizer.state_dict()
    tensors = {f"{i}.{k}": v for i, s in opt["state"].items() for k, v in s.items() if torch.is_tensor(v)}
    save_tensors(tmp / "optimizer.safetensors", tensors)
    groups = [{k: v for k, v in g.items()} for g in opt["param_groups"]]
    state = {
        "config": asdict(config),
        "epoch": epoch,
        "step": step,
        "best": best,
        "history": history,
        "param_groups": groups,
        "partial": partial or {},
        "rows": rows,  # the data a resume must be given again (split_fingerprint)
        "cache_dir": str(cache),  # where a resume finds the features without being told again
    }
    (tmp / "state.json").write_text(json.dumps(state, indent=1))  # written last: a complete state has it
    # a crash leaves the old state or the new one, never half of one or none (_recover_last finds it)
    if last.exists():
        last.rename(old)
    tmp.rename(last)
    shutil.rmtree(old, ignore_errors=True)


def _is_state_file(name: str) -> bool:
    """One of a training state's files, or the temporary file replacing() leaves of one when a save is killed
    mid-write (``.optimizer.safetensors.<id>.tmp``)."""
    return name in STATE_FILES or replacing_temp_of(name) in STATE_FILES


def _is_state_dir(path: Path) -> bool:
    """Whether ``path`` is a folder of a training state's files only (ours to replace or remove)."""
    return path.is_dir() and all(_is_state_file(p.name) for p in path.iterdir())


def refuse_inside_model(out: Path) -> None:
    """Refuse an output folder that is a text model's own (its resume state, its feature cache): picked one level too
    deep, it was trained into, a new model written over the run's resume state."""
    if out.name in (*STATE_DIRS, "cache") and (out.parent / CONFIG_FILE).is_file():
        raise PromptsegError(
            f"{out}: a folder inside the text model {out.parent}; give another output directory for a model of its "
            f"own (or {out.parent} itself to resume or overwrite that model)"
        )


def held_model_files(out: Path) -> list[Path]:
    """The files of a model trained in ``out`` earlier. A folder named like a training state that holds other
    files is the user's: refused, never removed."""
    held = [p for p in (out / CONFIG_FILE, out / WEIGHTS_FILE) if p.exists()]
    for name in STATE_DIRS:
        path = out / name
        if not path.exists():
            continue
        if not _is_state_dir(path):
            raise PromptsegError(
                f"{path} is not a training state of promptseg, and a training run in {out} would use that name; "
                "move it, or choose another output directory"
            )
        held.append(path)
    return held


def drop_resume_state(out: Path) -> None:
    """Remove the training state of a fusion run in ``out`` (its folders that hold only state files; anything else
    is the user's and stays): a model of another kind now written there (a fine-tuned CLIPSeg, --overwrite) has no
    such run to resume, and a resume from it trained the old decoder on over the new model."""
    for name in STATE_DIRS:
        path = out / name
        if _is_state_dir(path):
            shutil.rmtree(path)


def _recover_last(out: Path) -> None:
    """A save killed between its two renames left no ``last``: the new state when it is complete, else the old."""
    if (out / "last").exists():
        return
    for candidate in (out / "last.tmp", out / "last.old"):
        if (candidate / "state.json").is_file():
            candidate.rename(out / "last")
            return


def _model_kind(out: Path) -> str | None:
    """The kind ``out``'s model description names (None: none, or not a readable one)."""
    try:
        return read_config(out).get("kind")
    except WeightsError:
        return None


def read_resume_state(out: Path) -> dict:
    """The saved state of the run in ``out`` (``last/state.json``), refused naming why a resume cannot start."""
    _recover_last(out)
    path = out / "last" / "state.json"
    if not path.is_file():
        if _model_kind(out) == "clipseg":  # fine-tuned in one go: there is no run of the fusion decoder to go on
            raise PromptsegError(
                f"{out} holds a fine-tuned CLIPSeg, which has no training state to resume; fine-tune it again (CLI "
                "--clipseg --overwrite; widget: fine-tune CLIPSeg, overwrite), or train into another directory"
            )
        if (out / CONFIG_FILE).is_file() or (out / WEIGHTS_FILE).is_file():
            # a run without --resume is refused there ("resume it"): say the way that trains
            raise PromptsegError(
                f"{out} holds a model but no training state to resume (last/state.json: deleted, or the run was "
                "stopped while saving it); train it again with --overwrite (widget: overwrite), or into another "
                "directory"
            )
        raise PromptsegError(f"{out}: nothing to resume (no last/state.json); train without --resume first")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PromptsegError(f"{path}: not readable ({exc}); train again without --resume") from exc


def resumed_config(out: Path, state: dict, saved: TrainingConfig, overrides: Mapping[str, object]) -> TrainingConfig:
    """The settings a resume of ``state`` trains with: the ``saved`` run's, with more epochs if ``overrides`` asks;
    any other setting given that differs is refused, and so is a resume that would train nothing."""
    recorded = asdict(saved)
    changed = [
        f"{k}={v!r} (saved: {recorded[k]!r})" for k, v in overrides.items() if k != "epochs" and v != recorded[k]
    ]
    if changed:
        raise PromptsegError(
            f"{out}: a resume continues the saved run with its settings, and {', '.join(changed)} differ; leave "
            "them out, or train a new model (--overwrite, or another directory)"
        )
    config = saved
    if overrides.get("epochs"):  # the one setting a resume may change: train for longer
        config = replace(config, epochs=int(overrides["epochs"]))
    if state["epoch"] >= config.epochs and not state["step"]:  # a resume that would train nothing says so
        raise PromptsegError(
            f"{out}: the saved run has trained {state['epoch']} epoch(s), and epochs={config.epochs} is the total "
            f"to reach; give more than {state['epoch']} to train further (--epochs)"
        )
    return config


def check_same_rows(out: Path, state: dict, rows: str) -> None:
    """Refuse a resume given other data than its run trained and validated on (``rows``: split_fingerprint)."""
    if state.get("rows", rows) != rows:  # runs saved before the fingerprint: not checked
        raise PromptsegError(
            f"{out}: the saved run trained and validated on other rows (another CSV, rows added, removed or "
            "changed, its files moved: files are known by their full path, or its images read with another channel "
            "axis or channels); a resume continues the same run on the same data: give that data, or train a new "
            "model"
        )


def saved_cache_dir(out: Path, state: dict) -> Path | None:
    """The feature cache of the run saved in ``out`` (its state, else its model's config for states saved before
    the state said it), if it still exists."""
    saved = state.get("cache_dir")
    if saved is None and (out / CONFIG_FILE).is_file():
        try:
            saved = json.loads((out / CONFIG_FILE).read_text()).get("training", {}).get("cache_dir")
        except (OSError, ValueError, AttributeError):
            saved = None
    return Path(saved) if saved and Path(saved).is_dir() else None


def load_resume_state(out: Path, decoder, optimizer, state: dict) -> None:
    """Put the weights and optimizer moments saved in ``out/last`` into ``decoder`` and ``optimizer``."""
    load_decoder_weights(decoder, out / "last" / WEIGHTS_FILE, str(out / "last"))
    tensors = load_tensors(out / "last" / "optimizer.safetensors", str(out / "last"))
    per_param: dict[int, dict] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": state["param_groups"]})
