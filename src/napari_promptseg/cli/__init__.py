"""`promptseg` command line. Every subcommand calls the same functions as the Python API and the widgets.

Output convention (all subcommands): ``-o OUT`` is a directory; each input image gives ``OUT/<stem>.tif``
(uint16/uint32 instance labels, 0 = background) and the run writes ``OUT/report.json``.

Exit codes: 0 every output was written (an input where nothing was found, or whose processing failed, gets an empty
label image and its reason in report.json); 1 some input could not be read, so it has no output (the others do);
2 bad invocation, input that stops the whole run, or every input failed (one-line reason); 130 cancelled; 143
terminated (SIGTERM, stopped as Ctrl+C stops a run). `promptseg --help` gives every subcommand's.

Batches (segment, oneshot, text, embed): one task per image on Dask distributed. ``--scheduler local`` (the default
for several inputs) starts a LocalCluster with ``--workers`` processes (one per core); ``tcp://HOST:PORT`` uses a
running ``dask scheduler`` and its workers; ``none`` (the default for one input) runs here. Each worker loads the
model once and writes its outputs; a failed input is retried once (not for an error of its own, e.g. a box outside
it), then recorded; every mode gives the same outputs (``--threads`` torch threads per worker, 1 by default).
``--resume`` skips inputs a killed or finished run into the same ``-o`` already wrote (``OUT/report.partial.jsonl``
is the running journal).

Embedding cache: ``--cache DIR`` (or ``$PROMPTSEG_EMBEDDING_CACHE``) keeps image embeddings on disk (zarr), shared
by runs, workers and the widgets; ``promptseg embed`` fills it ahead of time, ``promptseg cache`` lists it (and
the downloaded weights) and ``promptseg cache clear`` deletes it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .. import __version__
from ..disk_errors import OUTPUT_DISK_REFUSES
from ..errors import CancelledError, PromptsegError, WeightsError
from ..methods.defaults import BOX_THRESHOLD, FIELD_SMOOTHNESS, HEATMAP_THRESHOLD, PAIR_SIMILARITY, TEXT_THRESHOLD
from . import _progress_line
from ._options import (
    EXIT_CODES_HELP,
    OUTPUT_HELP,
    REGISTER_IMAGE_HELP,
    _add_batch_options,
    _add_model_options,
    _add_precision_option,
    _add_stack_options,
    all_exit_codes_help,
    images_help,
)
from ._outputs import _output_lock
from ._types import fraction, non_negative_float, similarity, weights_path
from .cache import _add_cache_parser
from .embed import _add_embed_parser
from .library import _add_library_parser
from .models import cmd_models
from .oneshot import _add_oneshot_parser
from .register import cmd_register
from .segment import cmd_segment
from .text import _add_text_parser, _refuse_dashed_prompt, _refuse_swapped_prompt
from .train_text import _add_train_text_parser

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="promptseg",
        description=__doc__.splitlines()[0],
        epilog=all_exit_codes_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the epilog's paragraphs, one per kind of subcommand
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_precision_option(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="list models and whether their weights are available")
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.set_defaults(func=cmd_models)

    seg = sub.add_parser(
        "segment",
        help="segment images from boxes and points (pixel x = column, y = row)",
        description="Writes OUT/<stem>.tif (instance labels: an object per --box, one for the clicks outside every "
        "box; with --find-all every object like the boxed ones) per image and OUT/report.json (objects, scores, "
        "working scale, warnings per image). The same prompts go to every image.",
        epilog=EXIT_CODES_HELP,
    )
    seg.add_argument(
        "images",
        nargs="+",
        type=Path,
        help=images_help("images"),
    )
    seg.add_argument("-o", "--output", type=Path, required=True, help=OUTPUT_HELP)
    seg.add_argument(
        "--box",
        nargs=4,
        type=float,
        action="append",
        default=[],
        metavar=("X0", "Y0", "X1", "Y1"),
        help="one object's box in pixels, x = column, y = row (napari's Shapes exports are row, column: swap them); "
        "repeat for more objects",
    )
    seg.add_argument(
        "--point",
        nargs=2,
        type=float,
        action="append",
        default=[],
        metavar=("X", "Y"),
        help="a click on an object (x = column, y = row): inside boxes it refines the smallest, and the clicks "
        "outside every box make one object together",
    )
    seg.add_argument(
        "--negative-point",
        nargs=2,
        type=float,
        action="append",
        default=[],
        metavar=("X", "Y"),
        help="a click off an object (x = column, y = row): it refines the box it lies in, else the object of the "
        "clicks outside every box",
    )
    seg.add_argument(
        "--find-all",
        action="store_true",
        help="find every object like the boxed ones (the boxes are examples; needs a few --box)",
    )
    seg.add_argument(
        "--object-size",
        type=float,
        metavar="PX",
        help="typical object diameter in pixels; sets the working scale (default: from the boxes)",
    )
    seg.add_argument("--overlay", action="store_true", help="also write OUT/<stem>_overlay.png")
    _add_stack_options(
        seg,
        seeds="segment the prompted objects (boxes, clicks; or take those of --seed-labels)",
        prompts_on_a_plane=True,
    )
    seg.add_argument(
        "--seed-labels",
        type=Path,
        metavar="LABELS",
        help="--propagate: carry the objects of this label image through the stack instead of prompted ones: the "
        "(Y, X) labels of --plane, or the stack's (Z, Y, X) labels, of which --plane is read (e.g. a one-shot, text "
        "or find-all result, or a drawing)",
    )
    _add_model_options(seg)
    _add_batch_options(seg)
    seg.set_defaults(func=cmd_segment)

    reg = sub.add_parser(
        "register",
        help="register MOVING onto FIXED from corresponding regions (Tell2Reg) and/or intensity (SimpleITK)",
        description="Writes OUT/moving_warped.tif (the moving image on the fixed grid, in the moving image's axis "
        "order: channels stay on --channel-axis), OUT/displacement.tif ((H, W, 2) float32 dx, dy in pixels on the "
        "fixed grid: fixed pixel x corresponds to moving pixel x + u(x)), OUT/landmarks_warped.csv (moving landmarks "
        "mapped into the fixed frame), OUT/labels_warped.tif (--moving-labels on the fixed grid), "
        "OUT/annotations_warped.geojson (--moving-annotations in the fixed frame) and OUT/report.json (TRE/rTRE before "
        "and after).",
    )
    reg.add_argument("fixed", type=Path, help=f"fixed (target) {REGISTER_IMAGE_HELP}")
    reg.add_argument("moving", type=Path, help=f"moving (source) {REGISTER_IMAGE_HELP}; warped onto the fixed grid")
    reg.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="output directory; its files are replaced only when a promptseg register run of the same FIXED and "
        "MOVING wrote them, unchanged since, so a rerun replaces its own results and nothing else",
    )
    reg.add_argument(
        "--prompt",
        action="append",
        default=[],
        help="text prompt naming regions to pair (repeatable: --prompt gland --prompt nuclei; 'gland, nuclei' is "
        "two phrases of one prompt); 'auto' (default) = automatic regions matched by embedding similarity, with "
        "--method prompts or prompts+intensity",
    )
    reg.add_argument(
        "--text-route",
        default="auto",
        choices=["auto", "groundingdino", "clipseg", "library"],
        help="what answers the text prompts: the first available of GroundingDINO, CLIPSeg, the reference library "
        "(default: %(default)s; auto takes only models on disk and downloads nothing, groundingdino or clipseg "
        "downloads a missing model)",
    )
    reg.add_argument(
        "--library", type=Path, help="reference library directory (default: $PROMPTSEG_LIBRARY, else the user one)"
    )
    reg.add_argument(
        "--text-weights",
        type=weights_path,
        help="weights of GroundingDINO or CLIPSeg for the --prompt answers (checkpoint file, model directory or hub "
        "id), as `promptseg text --text-weights`",
    )
    # the text routes' thresholds apply to --prompt's answers only (a run without them says they are ignored)
    reg.add_argument(
        "--box-threshold",
        type=fraction,
        default=BOX_THRESHOLD,
        help="GroundingDINO box threshold of the --prompt answers (%(default)s)",
    )
    reg.add_argument(
        "--text-threshold",
        type=fraction,
        default=TEXT_THRESHOLD,
        help="GroundingDINO text threshold of the --prompt answers (%(default)s)",
    )
    reg.add_argument(
        "--heatmap-threshold",
        type=fraction,
        default=HEATMAP_THRESHOLD,
        help="CLIPSeg threshold of the --prompt answers (%(default)s)",
    )
    reg.add_argument(
        "--method",
        default="auto",  # = methods.registration.DEFAULT_METHOD (not imported here: torch is slow)
        choices=["auto", "prompts+intensity", "intensity", "prompts"],
        help="prompts: corresponding regions (Tell2Reg); intensity: images only (SimpleITK from the image moments and "
        "from a rotation/flip search, then a local refinement); prompts+intensity: the region starts compete too, "
        "the best by mutual information; auto: prompts+intensity with --prompt, else intensity (default: %(default)s)",
    )
    reg.add_argument(
        "--landmarks-fixed",
        type=Path,
        help="fixed-image landmarks (ANHIR CSV ',X,Y' or such a table tab-separated (.tsv, .txt), napari Points "
        "CSV, elastix .pts (or .txt), or a BigWarp landmark CSV, which "
        "holds both sets: given alone it is also --landmarks-moving)",
    )
    reg.add_argument("--landmarks-moving", type=Path, help="moving-image landmarks, same order as the fixed ones")
    reg.add_argument(
        "--moving-labels",
        type=Path,
        help="a label image (or mask) of the moving image, its height and width or those of a copy scaled alike "
        "along both axes (a pyramid level): written as OUT/labels_warped.tif on the fixed grid, ids kept (nearest "
        "neighbour)",
    )
    reg.add_argument(
        "--moving-annotations",
        type=Path,
        help="annotations drawn on the moving image, as GeoJSON (QuPath's export; pixels, x = column): written as "
        "OUT/annotations_warped.geojson in the fixed image's pixels, properties kept; outlines and lines get vertices "
        "every 2 registered pixels first, so they bend with the deformation",
    )
    reg.add_argument(
        "--truncate-landmarks",
        action="store_true",
        help="compare the first min(n) landmarks when the counts differ (as ANHIR does)",
    )
    reg.add_argument(
        "--similarity",
        type=similarity,
        default=PAIR_SIMILARITY,
        help="region-pair cosine threshold of the prompts methods (%(default)s)",
    )
    reg.add_argument(
        "--smoothness",
        type=non_negative_float,
        help=f"bending-energy weight of the prompts methods' dense field (default: {FIELD_SMOOTHNESS})",
    )
    reg.add_argument("--no-dense", action="store_true", help="affine only (no dense field) for the prompts methods")
    _add_model_options(reg, channel_choice=False)
    reg.set_defaults(func=cmd_register)
    _add_oneshot_parser(sub)
    _add_text_parser(sub)
    _add_train_text_parser(sub)
    _add_library_parser(sub)
    _add_embed_parser(sub)
    _add_cache_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:  # said before argparse, which reads such a prompt as an unknown option and says "images" are missing
        _refuse_dashed_prompt(sys.argv[1:] if argv is None else argv)
    except PromptsegError as exc:
        print(f"promptseg text: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    output = getattr(args, "output", None)
    try:
        if args.command == "text":
            _refuse_swapped_prompt(args, sys.argv[1:] if argv is None else argv)
        _refuse_missing_inputs(args)
    except PromptsegError as exc:
        print(f"promptseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    new_output = output is not None and not Path(output).exists()
    try:
        # the progress line innermost: ended before an error or the interruption is printed
        with (
            _sigterm_as_interrupt(),
            _disk_cache(args),
            _precision(args.precision),
            _output_lock(args),
            _progress_line.ended(),
        ):
            return int(args.func(args))
    except (PromptsegError, WeightsError) as exc:
        reason = " ".join(str(exc).split())  # one line, even when a reader's own message has several
        failed_input = getattr(exc, "failed_input", None)
        if failed_input is not None and failed_input not in reason:  # 'box 1 lies outside the image': which one
            reason = f"{failed_input}: {reason}"
        print(f"promptseg {args.command}: error: {reason}", file=sys.stderr)
        return 2
    except CancelledError:
        print(f"promptseg {args.command}: cancelled", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `promptseg library list --json | head`: the reader stopped reading, nothing is wrong
        _quiet_stdout()
        return 141  # as a shell reports a command stopped by SIGPIPE
    except OSError as exc:  # the disk filled up, a folder became read-only: one line, and --resume goes on after
        where = f"{exc.filename}: " if exc.filename else ""
        if not where and output is not None and exc.errno in OUTPUT_DISK_REFUSES:
            # a journal's or report's write names no file (nor one on a disk remounted read-only after an error)
            where = f"writing into {output}: "
        print(f"promptseg {args.command}: error: {where}{exc.strerror or exc}{_resume_hint(args)}", file=sys.stderr)
        return 2
    except Terminated:
        said = f"terminated (SIGTERM){_resume_hint(args)}{_unwritten_note(args)}"
        print(f"\npromptseg {args.command}: {said}", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"\npromptseg {args.command}: interrupted{_resume_hint(args)}{_unwritten_note(args)}", file=sys.stderr)
        return 130
    finally:
        if new_output:  # a run refused, interrupted or failed leaves no empty -o folder of its making behind
            with contextlib.suppress(OSError):  # rmdir: only an empty folder goes
                Path(output).rmdir()


class Terminated(KeyboardInterrupt):
    """SIGTERM during a run: a cluster's time limit (SLURM sends it before SIGKILL), `timeout`, `kill`, a container
    stopped. The run stops as Ctrl+C stops it (journal kept, report written, cluster closed); SIGTERM's default ended
    the process at once, without a word, a report, or the Dask cluster closed."""


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` in the main thread for the run; the handler found is put back after."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def terminated(signum: int, frame: object) -> None:
        raise Terminated

    before = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _quiet_stdout() -> None:
    """Point stdout at the null device: Python's flush of it at exit would raise on the closed pipe again (and print
    'Exception ignored ... BrokenPipeError')."""
    with contextlib.suppress(OSError, ValueError, AttributeError):  # a stdout without a file descriptor: nothing to do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _unwritten_note(args: argparse.Namespace) -> str:
    """What a batch stopped part-way (Ctrl+C, SIGTERM) did not write: the inputs it was working on ('' for commands
    that write no labels per input). A propagation's planes done are not written either: labels of part of a stack,
    in the file a whole result goes to, would pass for it (the Interactive widget and the Python function keep them,
    said to be partial); users saw only 'interrupted' and looked for them."""
    if getattr(args, "output", None) is None or not hasattr(args, "resume"):
        return ""
    if getattr(args, "command", None) == "train-text":  # a model directory, not labels per input: it says its own
        return ""
    note = "; the input(s) in progress were not written"
    if getattr(args, "propagate", False):
        note += " (nothing of a propagation stopped part-way is kept, not even the planes it had done)"
    return note


def _resume_hint(args: argparse.Namespace) -> str:
    """How to go on after a batch stopped part-way (Ctrl+C, a full disk): the inputs it finished, kept in its journal,
    and the option that skips them ('' when it left no journal)."""
    import json

    from ..batch import JOURNAL_NAME

    output = getattr(args, "output", None)
    if output is None or not hasattr(args, "resume"):
        return ""
    done = 0
    try:
        with open(Path(output) / JOURNAL_NAME) as journal:
            for line in journal:
                with contextlib.suppress(ValueError, AttributeError):  # the last line may be cut short
                    done += (json.loads(line).get("record") or {}).get("status") in ("ok", "empty")
    except OSError:
        return ""
    if not done:
        return ""
    return f"; {done} input(s) finished are kept: run the same command with --resume to go on from there"


#: per subcommand, the arguments naming files it reads: (dest, option, what). Checked before anything is imported or
#: started, so a typo is said at once (it was said after torch's import, a model's load or a Dask cluster's start:
#: 5-8 s). Image inputs of the batch subcommands are checked as fast where folders are expanded.
_INPUT_FILES = {
    "register": (
        ("fixed", "FIXED", "input image"),
        ("moving", "MOVING", "input image"),
        ("moving_labels", "--moving-labels", "input image"),
        ("moving_annotations", "--moving-annotations", "input file"),
        ("landmarks_fixed", "--landmarks-fixed", "input file"),
        ("landmarks_moving", "--landmarks-moving", "input file"),
    ),
    "oneshot": (("reference", "--reference", "input image"), ("reference_mask", "--reference-mask", "input image")),
    "library": (("image", "--image", "input file"), ("mask", "--mask", "input file")),
    "train-text": (("csv", "CSV", "input file"),),
}


def _refuse_missing_inputs(args: argparse.Namespace) -> None:
    for dest, option, what in _INPUT_FILES.get(args.command, ()):
        value = getattr(args, dest, None)
        for path in value if isinstance(value, list) else [value]:
            if path is None:
                continue
            try:
                exists = Path(path).exists()  # a folder may be an OME-Zarr image: its reader says
            except OSError as exc:  # a name too long, a folder that may not be looked into: not a traceback
                raise PromptsegError(f"{path}: cannot be read ({exc.strerror or exc}; {option})") from exc
            if not exists:
                raise PromptsegError(f"{what} not found: {path} ({option})")


@contextmanager
def _disk_cache(args: argparse.Namespace) -> Iterator[None]:
    """``--cache`` and ``--cache-max-gb`` for this run only (the process may go on: tests, the console). The cap
    applies to $PROMPTSEG_EMBEDDING_CACHE too when no --cache is given."""
    from ..models import embedding_cache

    with embedding_cache.settings_restored():
        cap = getattr(args, "cache_max_gb", None)
        if getattr(args, "cache", None) is not None:
            embedding_cache.configure(args.cache, cap)
        elif cap is not None and (from_env := embedding_cache.active()) is not None:
            embedding_cache.configure(from_env.root, cap)
        yield


@contextmanager
def _precision(precision: str | None) -> Iterator[None]:
    """``--precision`` for this run only, through the variable the segmenters (and the Dask workers started by the
    run, which inherit the environment) read at every encode."""
    from ..models.device import PRECISION_ENV

    if precision is None:
        yield
        return
    before = os.environ.get(PRECISION_ENV)
    os.environ[PRECISION_ENV] = precision
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PRECISION_ENV, None)
        else:
            os.environ[PRECISION_ENV] = before


if __name__ == "__main__":
    sys.exit(main())
