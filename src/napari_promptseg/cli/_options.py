"""The options the subcommands share, and their help: the model (--model, --device, --cache, ...), where a batch
runs (--scheduler, --resume), 3D stacks and where labels go (--plane, --propagate, --time, --output-format),
-o and the exit codes."""

from __future__ import annotations

import argparse

from ._types import fraction, labels_name, positive_float, positive_int, weights_path

#: = methods.volume.STOP_IOU (not imported here: that imports torch, slow for --help)
STOP_IOU = 0.5

#: -o of the segmenting subcommands
OUTPUT_HELP = (
    "output directory; an existing file there is replaced only when promptseg wrote it (label TIFFs and overlay PNGs "
    "carry a 'napari-promptseg' Software mark), so a rerun replaces its own outputs and nothing else"
)


#: the exit codes of the subcommands that write labels into -o, at the end of their --help (and promptseg --help)
EXIT_CODES_HELP = (
    "exit codes: 0 every output was written (an input where nothing was found, or whose processing failed, "
    "gets an empty label image and its status and reason in OUT/report.json); 1 some input could not be read, so it "
    "has no output (the others do); 2 bad invocation, an input that stops the whole run (a single input's error: "
    "one line, no report), or every input failed; 130 interrupted (Ctrl+C: --resume goes on from there); 143 "
    "terminated (SIGTERM, e.g. a cluster's time limit: stopped as Ctrl+C stops it)"
)


#: what every subcommand exits with (cli.main's handlers), then what some add, at the end of `promptseg --help`
ALL_EXIT_CODES = (
    (
        "every subcommand",
        "0 done; 2 bad invocation, or an error that stops it (one line on stderr: 'promptseg COMMAND: error: ...'); "
        "130 interrupted (Ctrl+C); 143 terminated (SIGTERM: stopped as Ctrl+C stops it); 141 its output's reader "
        "stopped reading (e.g. `promptseg library list --json | head`)",
    ),
    ("segment, oneshot, text", EXIT_CODES_HELP.removeprefix("exit codes: ")),
    (
        "embed",
        "1 some image failed (it has no embedding; the others do); 2 also when every image failed, or when no "
        "embedding could be kept in the cache",
    ),
    (
        "train-text",
        "130 interrupted: MODEL_DIR keeps the best epoch so far, and its last/ the run up to the step it stopped at "
        "(--resume goes on from there; a CLIPSeg fine-tune keeps its best epoch and does not resume); stderr says "
        "which; 143 terminated (SIGTERM, e.g. a cluster's time limit): stopped and kept as Ctrl+C stops it",
    ),
    (
        "cache clear",
        "1 some or all of what was asked for stays (a folder that cannot be written), or the deletion was not "
        "confirmed (no --yes, and not answered y)",
    ),
    ("models, register, library, cache (its listing)", "those of every subcommand alone"),
)


def all_exit_codes_help(width: int = 79) -> str:
    """:data:`ALL_EXIT_CODES` as `promptseg --help` ends: one paragraph per kind of subcommand."""
    import textwrap

    lines = ["exit codes:"]
    for who, codes in ALL_EXIT_CODES:
        lines.append(textwrap.fill(f"{who}: {codes}", width, initial_indent="  ", subsequent_indent="      "))
    return "\n".join(lines)


def images_help(what: str) -> str:
    """The help of a batch command's image inputs (``what``: "images", "targets"): every kind it reads, whole
    slides too (a pathologist reading a help that named none took them to need converting first)."""
    return (
        f"{what}: 2D images (TIFF, PNG, JPEG, BMP), (Z, Y, X[, C]) stacks, OME-Zarr, pyramidal (OME-)TIFFs and "
        "whole slides (Aperio .svs, Hamamatsu .ndpi): pyramids are read lazily, tile by tile, at the pyramid level "
        "the working scale asks for; folders of them, or patterns like 'dir/*.tif'"
    )


#: --channel-axis of the commands that read image files (read as io.file_axes.read_image_named reads them)
CHANNEL_AXIS_HELP = (
    "axis of the channels in a multichannel image, counted in the file's order (default: the axis an OME or ImageJ "
    "TIFF names as channels, else a last axis of 2-4 values: RGB(A) or two channels; else gray)"
)

#: the help of register's FIXED and MOVING
REGISTER_IMAGE_HELP = (
    "2D image (TIFF, PNG, JPEG, BMP); an OME-Zarr, pyramidal (OME-)TIFF or whole slide (Aperio .svs, Hamamatsu "
    ".ndpi) is read lazily, only its coarsest pyramid level of at least 2048 px"
)


def _add_precision_option(parser: argparse.ArgumentParser, *, subcommand: bool = False) -> None:
    """--precision: ``promptseg``'s own option, and each subcommand's that runs the image encoder (it was the
    former's alone: missing from a subcommand's --help, and refused after the subcommand). A subcommand's, when
    given, wins over one given before the subcommand; not given, it leaves that one as it is."""
    from ..models.device import PRECISIONS

    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=argparse.SUPPRESS if subcommand else None,
        help="the image encoder's numeric mode for this run (default: $PROMPTSEG_PRECISION, else auto): bfloat16 is "
        "1.3-1.7x faster on CPUs with native bfloat16 (AMX: recent Intel Xeons; AVX512-BF16: AMD Zen 4 and later), "
        "slower on others; auto takes it only on those",
    )


def _add_model_options(
    parser: argparse.ArgumentParser, *, channel_choice: bool = True, cache_fallback: str = "none"
) -> None:
    """The model options every subcommand takes; ``channel_choice``: also --channels and --normalize (not register,
    whose intensity stages read every channel as it is). ``cache_fallback``: the disk cache used without --cache
    and $PROMPTSEG_EMBEDDING_CACHE, as --help says it."""
    parser.add_argument("--model", default="litemedsam", help="name from `promptseg models` (default: %(default)s)")
    parser.add_argument("--weights", type=weights_path, help="explicit weights file (e.g. a fine-tuned checkpoint)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: %(default)s)")
    _add_precision_option(parser, subcommand=True)
    parser.add_argument("--channel-axis", type=int, help=CHANNEL_AXIS_HELP)
    if channel_choice:
        parser.add_argument(
            "--channels", type=int, nargs="+", help="up to three channels to use (after --channel-axis)"
        )
        parser.add_argument(
            "--normalize",
            default="auto",
            choices=["auto", "percentile", "minmax", "none"],
            help="intensity scaling (none: integers divided by their type's maximum, floats must lie in [0, 1])",
        )
    parser.add_argument(
        "--cache",
        nargs="?",
        const="default",
        metavar="DIR",
        help="on-disk embedding cache (zarr) shared by runs, Dask workers and the widgets; without DIR: the user "
        f"cache directory's embeddings/ (default: $PROMPTSEG_EMBEDDING_CACHE, else {cache_fallback})",
    )
    parser.add_argument(
        "--cache-max-gb",
        type=positive_float,
        metavar="GB",
        help="size cap of --cache, least recently used evicted (default: $PROMPTSEG_EMBEDDING_CACHE_GB, else 10)",
    )


def _add_batch_options(parser: argparse.ArgumentParser, resume: bool = True) -> None:
    """Where the images of a batch are processed (Dask distributed) and resuming an interrupted run."""
    group = parser.add_argument_group("batch")
    group.add_argument(
        "--scheduler",
        metavar="none|local|tcp://HOST:PORT",
        help="none: this process; local: a Dask LocalCluster on this machine; tcp://HOST:PORT: a running Dask "
        "scheduler (its workers need this package and the same paths). Default: $PROMPTSEG_SCHEDULER, else local "
        "for several inputs and none for one",
    )
    group.add_argument(
        "--workers", type=positive_int, metavar="N", help="worker processes of `local` (default: one per core)"
    )
    group.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        metavar="N",
        help="torch threads per worker (default: %(default)s; fixed, so outputs do not depend on the scheduler)",
    )
    if resume:
        group.add_argument(
            "--resume", action="store_true", help="skip inputs whose outputs and report entries exist (same options)"
        )


def _add_stack_options(parser: argparse.ArgumentParser, *, seeds: str, prompts_on_a_plane: bool = False) -> None:
    """Options for 3D stacks and for where labels are written; ``seeds`` says what starts a propagation;
    ``prompts_on_a_plane``: the prompts (boxes, points) were drawn on one plane, so a stack needs --plane."""
    plane_default = (
        "needed for a stack: the plane the prompts were drawn on"
        if prompts_on_a_plane
        else "default: every plane, ids linked across planes by overlap"
    )
    parser.add_argument(
        "--plane",
        type=int,
        metavar="Z",
        help=f"3D stacks (Z, Y, X[, C]) and time-lapses (T, Y, X[, C]): the plane (a time-lapse's frame) to segment "
        f"(alone, or as the seed of --propagate); {plane_default}",
    )
    parser.add_argument(
        "--propagate",
        action="store_true",
        help=f"3D stacks: {seeds} on --plane"
        + ("" if prompts_on_a_plane else " (default: the middle plane)")
        + ", then carry each object plane by plane through the stack, both ways, until it ends",
    )
    parser.add_argument(
        "--time",
        type=int,
        metavar="T",
        help="a time-lapse of volumes (T, Z, Y, X[, C]): segment (or --propagate through Z) the volume of time point "
        "T, as the Interactive widget does the time point shown; the labels keep the input's (T, Z, Y, X) shape: "
        "written into the labels an earlier --time run wrote for it (-o's TIFF, the OME-Zarr's labels/), time point T "
        "replaced and the others kept; else the other time points empty",
    )
    parser.add_argument(
        "--stop-iou",
        type=fraction,
        default=STOP_IOU,
        action=_GivenOption,
        metavar="IOU",
        help="--propagate: an object ends where its mask overlaps the previous plane's by less than this "
        f"(default: {STOP_IOU})",
    )
    parser.set_defaults(stop_iou_given=False)
    parser.add_argument(
        "--output-format",
        default="auto",
        choices=["auto", "tiff", "ome-zarr"],
        help="labels as OUT/<stem>.tif, or into an OME-Zarr input's labels/<--labels-name> group with its levels and "
        "pixel sizes (auto: ome-zarr for OME-Zarr inputs)",
    )
    parser.add_argument(
        "--labels-name", type=labels_name, default="promptseg", help="name of the OME-Zarr labels image (%(default)s)"
    )


class _GivenOption(argparse.Action):
    """Stores the value and ``<dest>_given``: a 2D input says which stack options it ignored, while the value (and
    with it a resumed run's signature) stays the default's when not given."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_given", True)
