"""`promptseg train-text`: train a text-conditioned segmenter on image-mask-text triplets (a CSV)."""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import CancelledError
from ._options import _add_precision_option
from ._types import fraction, non_negative_float, positive_float, positive_int


def _add_train_text_parser(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser(
        "train-text",
        help="train a text-conditioned segmenter on your image-mask-text triplets (CSV)",
        description="Trains a fusion decoder over the bundled LiteMedSAM image encoder and MiniLM text encoder "
        "(frozen; image features cached in MODEL_DIR/cache) and writes MODEL_DIR/text_segmenter.json + "
        "model.safetensors (the best epoch by validation Dice) and MODEL_DIR/last/ (for --resume). Use the model "
        "with `promptseg text PROMPT IMAGES --text-model MODEL_DIR`. --clipseg fine-tunes CLIPSeg instead "
        "(medvlsm's recipe; needs its weights).",
    )
    train.add_argument(
        "csv",
        type=Path,
        help="CSV with columns image, mask, text and optionally split "
        "(train/val/test; test rows are not trained on); paths relative to the CSV",
    )
    train.add_argument("-o", "--output", type=Path, required=True, metavar="MODEL_DIR", help="model directory")
    train.add_argument("--image-col", default="image", help="column of the image paths (%(default)s)")
    train.add_argument("--mask-col", default="mask", help="column of the mask paths (%(default)s)")
    train.add_argument("--text-col", default="text", help="column of the texts (%(default)s)")
    train.add_argument("--split-col", help="column of train/val/test (default: split, when there is one; '' for none)")
    train.add_argument(
        "--channel-axis",
        type=int,
        help="axis of the channels of every image (e.g. 0 for (C, Y, X) multichannel TIFFs without axis names; "
        "default: gray or colour, a Fiji composite's named channels)",
    )
    train.add_argument(
        "--channels", type=int, nargs="+", help="up to three channels to train on (after --channel-axis; default: all)"
    )
    # settings default to None ("not given"): a resume keeps the saved run's, and refuses others
    train.add_argument(
        "--loss",
        choices=["dicece", "tmca", "reclmis"],
        help="objective: dicece = medvlsm's Dice + CE; tmca = + target-informed multi-level contrastive "
        "alignment and target enhancement; reclmis = + conditioned interaction, masked image/text reconstruction "
        "and contrastive loss (default: dicece)",
    )
    train.add_argument(
        "--epochs", type=positive_int, help="epochs in all (a resume trains up to this; default: 8; CLIPSeg 20)"
    )
    train.add_argument("--batch-size", type=positive_int, help="(default: 8)")
    train.add_argument(
        "--lr", type=positive_float, help="learning rate of the new modules (default 1e-3; CLIPSeg 2e-4)"
    )
    train.add_argument("--decoder-lr", type=non_negative_float, help="of the SAM decoder; 0 freezes it (default: 1e-4)")
    train.add_argument(
        "--patience", type=positive_int, help="epochs without a better validation Dice before stopping (3; CLIPSeg 5)"
    )
    train.add_argument(
        "--balance",
        action="store_true",
        default=None,
        help="every distinct text equally often per epoch (texts that are class names, some rarer than others)",
    )
    train.add_argument(
        "--negatives",
        type=float,
        help="negative pairs per training sample and epoch: an image with a training text it is not paired with "
        "and an empty mask, so a wrong name gives nothing (texts that are class names; default 0)",
    )
    train.add_argument("--seed", type=int, help="(default: 0)")
    train.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch threads of the training (default: 1; fixed, not the machine's: another count gives another model, "
        "so a run repeats only at the same N)",
    )
    train.add_argument(
        "--val-fraction",
        type=fraction,
        help="share of the images held out for validation when the CSV has no split (0.2); 0 trains on every image "
        "without validation: all --epochs run (--patience does not apply) and the last epoch's weights are kept",
    )
    train.add_argument(
        "--cache-dir", type=Path, help="image feature cache (default: MODEL_DIR/cache; --resume: the run's own)"
    )
    train.add_argument("--resume", action="store_true", help="continue the run saved in MODEL_DIR/last")
    train.add_argument(
        "--refit-presence",
        action="store_true",
        help="do not train: refit the presence head of the model already in MODEL_DIR on this CSV (the one it was "
        "trained on), as training now ends (models trained before it gain it; the mask decoder is unchanged, only "
        "which names are gated changes); no training setting, --resume, --overwrite or --clipseg goes with it",
    )
    train.add_argument("--overwrite", action="store_true", help="replace a model already in MODEL_DIR")
    train.add_argument(
        "--clipseg",
        action="store_true",
        help="fine-tune CLIPSeg (medvlsm's recipe) instead: it takes --epochs, --batch-size, --lr, --patience, "
        "--seed and --val-fraction; --loss, --decoder-lr, --balance, --negatives, --threads, --cache-dir and --resume "
        "are refused with it",
    )
    train.add_argument(
        "--clipseg-weights",
        type=Path,
        help="with --clipseg: the CLIPSeg model directory it fine-tunes (default: from the registry)",
    )
    train.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: %(default)s)")
    _add_precision_option(train, subcommand=True)
    train.set_defaults(func=cmd_train_text)


def training_run(args: argparse.Namespace) -> dict[str, object]:
    """The arguments of :func:`~..methods.text_training.train_text_model` for these options but the data, output
    and callbacks: the settings given (argparse dests = the setting names; not given: None), the trainer, columns."""
    from ..methods.text_training.run import SETTINGS

    return {
        "settings": {key: getattr(args, key) for key in SETTINGS},
        "clipseg": args.clipseg,
        "clipseg_weights": args.clipseg_weights,
        "resume": args.resume,
        "overwrite": args.overwrite,
        "cache_dir": args.cache_dir,
        "device": args.device,
        "channel_axis": args.channel_axis,
        "channels": args.channels,
        "columns": {
            "image_col": args.image_col,
            "mask_col": args.mask_col,
            "text_col": args.text_col,
            "split_col": args.split_col,
        },
    }


def cmd_train_text(args: argparse.Namespace) -> int:
    from ..methods.text_training.run import train_text_model

    run = training_run(args)
    last = [-1.0]

    def progress(done: float, message: str) -> None:
        # one line per epoch and per tenth of the bar, so a log file stays readable
        counted = re.fullmatch(r"(reading the rows) (\d+)/(\d+)", message)
        if counted:  # a pass before the bar's (every row read, for a CSV of thousands minutes): its own tenths
            k, n = int(counted[2]), int(counted[3])
            if k in (1, n) or 10 * k // n > 10 * (k - 1) // n:
                print(f"[{100 * done:5.1f}%] {message}", file=sys.stderr, flush=True)
            return
        if done < last[0]:  # a new phase (training after the base model's download) counts its own tenths
            last[0] = done
        # an epoch's end, the split, and every warning (several come at 0 %)
        if done >= 1.0 or re.match(r"epoch \d+:|warning: |data: ", message) or done - last[0] >= 0.1:
            last[0] = done
            print(f"[{100 * done:5.1f}%] {message}", file=sys.stderr, flush=True)

    if args.refit_presence:
        from ..errors import PromptsegError
        from ..methods.text_training import refit_presence_head
        from ..methods.text_training.run import cli_flag

        # a refit trains nothing: the training settings were ignored without a word
        conflicting = [
            ("--resume", args.resume),
            ("--overwrite", args.overwrite),
            ("--clipseg", args.clipseg),
            ("--clipseg-weights", args.clipseg_weights is not None),
            *((cli_flag(key), value is not None) for key, value in run["settings"].items()),
        ]
        clash = ", ".join(flag for flag, given in conflicting if given)
        if clash:
            raise PromptsegError(f"--refit-presence refits the model in {args.output}; it does not go with {clash}")

        from ..methods.text_training.data import training_triplets

        data, columns = args.csv, run["columns"]
        if args.channel_axis is not None or args.channels is not None:  # read as the run that trained it read them
            data = training_triplets(data, columns, channel_axis=args.channel_axis, channels=args.channels)
        record = refit_presence_head(args.output, data, cache_dir=args.cache_dir, device=args.device, columns=columns)
        print(json.dumps({"model": str(args.output), "presence_refit": record}))
        return 0
    started = time.time()

    def said_interrupted() -> str:
        """What the run stopped by Ctrl+C left in -o, from what is saved there."""
        if args.clipseg:
            return _clipseg_interrupted_note(Path(args.output), started)
        from ..methods.text_training.presence import refit_command

        resumed_to = (args.epochs or 0) if args.resume else None
        refit = refit_command(
            args.csv, args.output, columns=run["columns"], channel_axis=args.channel_axis, channels=args.channels
        )
        return _interrupted_note(Path(args.output), started, refit, resumed_to=resumed_to)

    with _signals_stop_at_a_step() as stopped_by:
        try:
            result = train_text_model(
                args.csv, args.output, progress=progress, cancel=lambda: stopped_by() is not None, **run
            )
        except CancelledError as exc:  # the first Ctrl+C or SIGTERM: stopped at a step, the run saved up to it
            if stopped_by() is None:
                raise
            said = " ".join(str(exc).split())
            if said == "cancelled":  # stopped while the rows were read or the images encoded: nothing trained yet
                cached = "" if args.clipseg else " (the image features computed so far stay in its feature cache)"
                said = f"stopped before training began: no model of this run is in {args.output}{cached}"
            note = said_interrupted() or said
            print(f"\n{note}", file=sys.stderr)
            if stopped_by() == signal.SIGTERM:
                from . import Terminated

                raise Terminated from None  # exit 143, "terminated", as every command stopped by SIGTERM
            raise KeyboardInterrupt from None  # exit 130, "interrupted", as every command stopped by Ctrl+C
        except KeyboardInterrupt:  # a second Ctrl+C or SIGTERM, at once: the run as the last step or epoch saved it
            note = said_interrupted()
            if note:
                print(f"\n{note}", file=sys.stderr)
            raise
    summary = {
        "model": str(result.path),
        "best_epoch": result.best_epoch,
        "best_val_dice": None if result.best_val_dice is None else round(result.best_val_dice, 4),
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "seconds": round(result.seconds, 1),
        "feature_cache": result.feature_cache,
        "split": getattr(result, "split", None) or None,  # rows and images trained and validated on
    }
    if getattr(result, "presence_refit", None):
        summary["presence_refit"] = result.presence_refit
    if getattr(result, "warnings", None):  # said at the start too; again here, where a long run's log ends
        summary["warnings"] = result.warnings
    print(json.dumps(summary))
    return 0


#: the signals that stop a training at its next step: Ctrl+C, and SIGTERM (a cluster's time limit, `kill`)
_STOPPING_SIGNALS = {signal.SIGINT: "Ctrl+C", signal.SIGTERM: "SIGTERM"}
_OWN_HANDLERS = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}


@contextmanager
def _signals_stop_at_a_step() -> Iterator[Callable[[], int | None]]:
    """The first Ctrl+C or SIGTERM asks the training to stop at its next step (the fusion decoder saves the run up to
    it, as the widget's Stop does; a CLIPSeg fine-tune keeps its best epoch), a second stops at once. Why: Ctrl+C
    raised at once, anywhere, and the steps of the epoch it was in were lost (and a save could be cut short); SIGTERM
    did so still, after Ctrl+C had stopped doing it. Yields the signal that came first (None: none; the training's
    ``cancel``); the handlers found are put back after, and at the first signal (the second acts at once)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield lambda: None
        return
    came: list[int] = []
    # a handler set outside Python (getsignal: None): Python's own stands for it (SIGTERM's default ends the process)
    found = {signum: signal.getsignal(signum) for signum in _STOPPING_SIGNALS}
    before = {signum: _OWN_HANDLERS[signum] if handler is None else handler for signum, handler in found.items()}

    def restore() -> None:
        for signum, handler in before.items():
            signal.signal(signum, handler)

    def first(signum: int, frame: object) -> None:
        came.append(signum)
        restore()  # a second Ctrl+C or SIGTERM interrupts at once
        name = _STOPPING_SIGNALS[signal.Signals(signum)]
        print(
            f"\n{name}: stopping at the next step, the run saved up to it ({name} again stops at once, keeping the "
            "last epoch saved)",
            file=sys.stderr,
            flush=True,
        )

    for signum in _STOPPING_SIGNALS:
        signal.signal(signum, first)
    try:
        yield lambda: came[0] if came else None
    finally:
        restore()


def _clipseg_interrupted_note(out: Path, started: float) -> str:
    """What a Ctrl+C in a CLIPSeg fine-tune left in ``out``: the best epoch so far, when this run saved one (it said
    only "interrupted"); the fine-tune does not resume."""
    config = out / "text_segmenter.json"
    if not (config.is_file() and config.stat().st_mtime >= started):
        return ""
    try:
        best = json.loads(config.read_text())["best"]["epoch"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    return (
        f"{out} holds the best epoch so far (epoch {best}); a CLIPSeg fine-tune does not resume: train again to go on"
    )


def _interrupted_note(out: Path, started: float, refit: str, resumed_to: int | None = None) -> str:
    """What a Ctrl+C left in ``out``: the best epoch's model and where a resume starts, or, once every epoch had
    run (the presence head was being refitted), the finished model and how to refit its head. Why: it said
    "--resume continues" there too, and the resume was refused as having nothing left to train. A resumed run's
    state is its own however old (it said only "interrupted" before its first new epoch was saved), and its
    ``resumed_to`` (--epochs; 0: not given) is the total it trains to; ``refit``: the command that refits the head
    (:func:`~..methods.text_training.presence.refit_command`)."""
    state_path = out / "last" / "state.json"
    if not (state_path.is_file() and (resumed_to is not None or state_path.stat().st_mtime >= started)):
        return ""
    try:
        state = json.loads(state_path.read_text())
        config, epoch, best = state["config"], int(state["epoch"]), state["best"]
        epochs = resumed_to or config["epochs"]
        done = not state.get("step") and (epoch >= epochs or epoch - int(best["epoch"]) >= config["patience"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"the last finished epoch is saved in {state_path.parent}; --resume continues"
    if done:
        from ..errors import WeightsError
        from ..models.text_segmenter import read_config

        finished = f"training had finished: {out} holds the model (epoch {best['epoch']}, the best)"
        try:
            presence = read_config(out).get("decoder", {}).get("presence")
        except WeightsError:
            presence = False
        if not presence:
            return finished
        return f"{finished}, its presence head as trained; `{refit}` refits the head"
    # a Ctrl+C stops at a step, the run saved up to it (state "step": the steps of its epoch done); a second one
    # at once, the last finished epoch's
    step = int(state.get("step") or 0)
    if int(best["epoch"]):
        kept = f"{out} holds the best epoch so far (epoch {best['epoch']})"
    else:
        kept = f"no epoch of this run had finished, so {out} holds no model of it yet"
    if step:
        saved = f"the run up to epoch {epoch + 1}, step {step} is saved in {state_path.parent}"
        return f"{kept}; {saved}: --resume continues from there"
    return f"{kept}; the last finished epoch (epoch {epoch}) is saved in {state_path.parent}: --resume continues"
