"""One training run as `promptseg train-text` and the Train text model widget start it: the fusion decoder
(:func:`~.trainer.train_text_segmenter`) or, with ``clipseg``, CLIPSeg fine-tuned (:func:`~.clipseg.finetune_clipseg`),
with the settings a user gave (the others at that trainer's defaults), and the combinations neither takes refused
before anything loads, in the caller's words for its options (the CLI's flags, the widget's labels)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ...callbacks import ProgressCallback
from ...errors import PromptsegError
from . import clipseg as clipseg_module
from .clipseg import finetune_clipseg
from .trainer import DEFAULT_VAL_FRACTION, Data, TrainingConfig, TrainingResult, check_settings, train_text_segmenter

#: the settings of a run a user sets (TrainingConfig's names, the CLI's options); passed on only when given
SETTINGS = (
    "loss",
    "epochs",
    "batch_size",
    "lr",
    "decoder_lr",
    "patience",
    "balance",
    "negatives",
    "seed",
    "val_fraction",
    "threads",
)
#: those CLIPSeg's fine-tuning (medvlsm's recipe) takes
CLIPSEG_SETTINGS = frozenset({"epochs", "batch_size", "lr", "patience", "seed", "val_fraction"})


def cli_flag(name: str) -> str:
    """How the CLI names a setting or option in a message: ``decoder_lr`` -> ``--decoder-lr``."""
    return "--" + name.replace("_", "-")


def setting_defaults(clipseg: bool = False) -> dict[str, object]:
    """What each setting is when not given: :class:`TrainingConfig`'s defaults, or with ``clipseg``
    :func:`finetune_clipseg`'s (its own epochs, learning rate and patience)."""
    if clipseg:
        # the function's own signature, read through its module: this module's name may be a recorder in a test
        parameters = inspect.signature(clipseg_module.finetune_clipseg).parameters
        defaults = {name: parameters[name].default for name in SETTINGS if name in CLIPSEG_SETTINGS}
        return defaults | {"val_fraction": DEFAULT_VAL_FRACTION}  # None there: not given (refused beside a split)
    config = TrainingConfig()
    return {name: getattr(config, name) for name in SETTINGS}


def train_text_model(
    data: Data,
    output_dir: str | Path,
    *,
    settings: Mapping[str, object] | None = None,
    clipseg: bool = False,
    clipseg_weights: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    cache_dir: str | Path | None = None,
    device: str = "auto",
    columns: dict[str, str] | None = None,
    channel_axis: int | None = None,
    channels: Sequence[int] | None = None,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
    name: Callable[[str], str] = cli_flag,
) -> TrainingResult:
    """Train a text model in ``output_dir`` on ``data`` (a triplet CSV or triplets), as `promptseg train-text`
    does: ``settings`` (:data:`SETTINGS`; None or left out: the trainer's default), ``clipseg`` to fine-tune CLIPSeg
    (from ``clipseg_weights``, else the registry's) instead of training the fusion decoder; ``resume`` and
    ``cache_dir`` are the fusion decoder's; ``channel_axis`` and ``channels`` say how every image given without its
    own is read (a multichannel (C, Y, X) image: ``channel_axis=0``; a file's axis in the file's order). A setting or
    option the chosen trainer does not take is refused, named by ``name`` (the CLI's flags by default), before
    anything is read or loaded: it was ignored without a word."""
    given = {key: value for key, value in (settings or {}).items() if value is not None}
    unknown = sorted(set(given) - set(SETTINGS))
    if unknown:
        raise PromptsegError(f"unknown training setting(s) {', '.join(unknown)}")
    if clipseg:
        unused = [key for key in SETTINGS if key in given and key not in CLIPSEG_SETTINGS]
        unused += [key for key, used in (("resume", resume), ("cache_dir", cache_dir is not None)) if used]
        if unused:
            raise PromptsegError(
                f"{name('clipseg')} fine-tunes CLIPSeg with medvlsm's recipe; "
                f"{', '.join(name(key) for key in unused)} {'does' if len(unused) == 1 else 'do'} not apply to it"
            )
    elif clipseg_weights is not None:
        raise PromptsegError(
            f"{name('clipseg_weights')} is the CLIPSeg model {name('clipseg')} fine-tunes; give {name('clipseg')} "
            "too, or leave it out"
        )
    check_settings(given, name)  # as the trainers check them, in the caller's words for its options
    # the images read with them, whichever trainer reads (not given: its call as before they existed)
    channel = (
        {"channel_axis": channel_axis, "channels": channels} if channel_axis is not None or channels is not None else {}
    )
    if clipseg:
        return finetune_clipseg(
            data,
            output_dir,
            weights=clipseg_weights,
            weights_option=name("clipseg_weights"),
            overwrite=overwrite,
            columns=columns,
            device=device,
            progress=progress,
            cancel=cancel,
            **channel,
            **given,
        )
    return train_text_segmenter(
        data,
        output_dir,
        cache_dir=cache_dir,
        resume=resume,
        overwrite=overwrite,
        device=device,
        columns=columns,
        progress=progress,
        cancel=cancel,
        **channel,
        **given,
    )
