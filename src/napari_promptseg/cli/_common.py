"""Pieces every subcommand shares: model options, outputs (-o), per-image tail, report.json, and the batch loop
that never loses work (the inputs: _inputs.py)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__
from ..errors import PromptsegError, WeightsError
from ..io._files import FILE_NAME_SUFFIXES, ensure_writable_dir, replacing
from ._inputs import _say_renamed, _some_names
from ._stacks import _plane_channel_axis, _write_output, _writes_into_zarr
from ._types import positive_float, positive_int, weights_path

if TYPE_CHECKING:
    import numpy as np  # lazy at run time: the CLI starts without it

    from ..batch import BatchOutcome


def _add_model_options(
    parser: argparse.ArgumentParser, *, channel_choice: bool = True, cache_fallback: str = "none"
) -> None:
    """The model options every subcommand takes; ``channel_choice``: also --channels and --normalize (not register,
    whose intensity stages read every channel as it is). ``cache_fallback``: the disk cache used without --cache
    and $PROMPTSEG_EMBEDDING_CACHE, as --help says it."""
    parser.add_argument("--model", default="litemedsam", help="name from `promptseg models` (default: %(default)s)")
    parser.add_argument("--weights", type=weights_path, help="explicit weights file (e.g. a fine-tuned checkpoint)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: %(default)s)")
    parser.add_argument("--channel-axis", type=int, help="axis of the channels in a multichannel image")
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


def _model_parameters(args: argparse.Namespace, meta: dict) -> dict:
    """The model options of report.json's parameters, as every segmenting subcommand records them (``meta``: what
    the workers' setup reported)."""
    return {
        "weights": args.weights,
        "device": meta.get("device", args.device),
        "channel_axis": args.channel_axis,
        "channels": args.channels,
        "normalize": args.normalize,
    }


def _mean_or_none(values: Sequence[float]) -> float | None:
    return round(float(sum(values) / len(values)), 4) if values else None


#: held in ``-o`` while a run writes there (a dot file; lock files are left out of listings and digests)
OUTPUT_LOCK = ".promptseg.lock"
#: the subcommands whose ``-o`` holds a report.json (and a resume journal) the run replaces whole
LOCKED_COMMANDS = ("segment", "oneshot", "text", "register")


@contextlib.contextmanager
def _output_lock(args: argparse.Namespace) -> Iterator[None]:
    """Refuse a second run into an ``-o`` another run is writing: each replaced the other's report.json and resume
    journal, so a finished batch's report listed only the other run's images, and a killed one's work was not
    resumed. An ``-o`` that is a file or cannot be created is left to the subcommand's own message."""
    from filelock import FileLock, Timeout

    output = getattr(args, "output", None)
    if output is None or getattr(args, "command", None) not in LOCKED_COMMANDS:
        yield
        return
    output = Path(output)
    if not output.exists() and output.suffix.lower() in FILE_NAME_SUFFIXES:  # a file meant: the subcommand says so
        yield
        return
    try:
        output.mkdir(parents=True, exist_ok=True)
        lock = FileLock(output / OUTPUT_LOCK)
    except OSError:
        yield
        return
    if not os.access(output, os.W_OK | os.X_OK):  # a read-only folder: the subcommand says so, not 'another run'
        yield
        return
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise PromptsegError(
            f"-o {output}: another promptseg run is writing there (it holds {output / OUTPUT_LOCK}, until it ends); "
            "wait for it to finish, or give another output directory"
        ) from None
    except OSError:  # a read-only folder: the subcommand says so
        yield
        return
    try:
        yield
    finally:
        # gone before it is released: a refused run's new -o is left empty (and removed), a finished one clean
        with contextlib.suppress(OSError):
            (output / OUTPUT_LOCK).unlink()
        lock.release()


def _make_output_dir(output: Path) -> None:
    """Create ``-o OUT`` (a directory), or say in one line why it cannot be one."""
    ensure_writable_dir(output, "the outputs", label=f"-o {output}")


def _prepare_outputs(args: argparse.Namespace, inputs: Sequence[Path], also_read: Sequence[Path] = ()) -> None:
    """Create the output directory and refuse, before any work, a run whose label files would overwrite one of its
    inputs (``-o`` is the input's folder; ``also_read``: other files the run reads, e.g. a reference mask), each
    other (``x.tif`` in two folders; inputs of one stem in other formats, ``a.tif`` and ``a.png``, are named after
    their whole names instead, ``a.tif.tif`` and ``a.png.tif``: :func:`..io.images.distinct_output_stems`), or any
    other file that is not one of this package's earlier outputs (``cells.tif`` beside ``cells.ome.tif``): each
    would lose data without a word. Earlier outputs (marked, see :func:`..io.images.is_own_output`, or listed in the
    folder's report.json by a version before the mark) are replaced, so a rerun into the same folder works. The
    same holds for an OME-Zarr input's labels image (:func:`..io.ome_zarr_labels.labels_not_replaceable`)."""
    from ..batch.journal import JOURNAL_NAME
    from ..io import output_stem
    from ..io._files import remove_killed_temporaries
    from ..io.images import distinct_output_stems, is_own_output
    from ..io.multiscale import is_ome_zarr

    if getattr(args, "output_format", "auto") == "ome-zarr":
        # known before any work: each such input was segmented (and retried) only to fail at its write
        not_zarr = [p for p in inputs if not is_ome_zarr(p)]
        if not_zarr:
            raise PromptsegError(
                f"{not_zarr[0]}: --output-format ome-zarr writes into an OME-Zarr input's labels/ group; this input "
                "is not one"
                + (f" (nor {len(not_zarr) - 1} more input(s))" if len(not_zarr) > 1 else "")
                + " (use --output-format auto: OME-Zarr labels for OME-Zarr inputs, TIFFs for the others)"
            )
    _make_output_dir(args.output)
    suffixes = [".tif"] + (["_overlay.png"] if getattr(args, "overlay", False) else [])
    sources = {_resolved(p): Path(p) for p in [*inputs, *also_read]}
    # inputs sharing a stem (slide.png, slide.ome.zarr) are the user's to keep both: each named after its whole name
    args.output_stems = distinct_output_stems(inputs)
    writers: dict[Path, list[Path]] = {}
    for path in inputs:
        # an OME-Zarr input's labels go into its labels/ group, but a failed or empty one gets OUT/<stem>.tif too
        for suffix in suffixes:
            out = (args.output / f"{output_stem(path, args.output_stems)}{suffix}").resolve()
            if out in sources:
                raise PromptsegError(
                    f"{path}: its output {out.name} in -o {args.output} would overwrite the input "
                    f"{sources[out]}; give another output directory"
                )
            writers.setdefault(out, []).append(path)
    report = args.output / "report.json"
    listed = _listed_outputs(args.output, kept=getattr(args, "resume", False))
    if report.exists() and _own_report(report) is None:
        raise PromptsegError(
            f"-o {args.output}: report.json there was not written by promptseg and would be overwritten; move it, or "
            "give another output directory"
        )
    foreign = [out for out in writers if out.exists() and not (is_own_output(out) or out in listed)]
    if foreign:
        raise PromptsegError(
            f"-o {args.output}: the output {foreign[0].name} would overwrite the existing {foreign[0]}, which is not "
            f"an earlier promptseg output"
            + (f" (and {len(foreign) - 1} more such file(s))" if len(foreign) > 1 else "")
            + "; move it, or give another output directory"
        )
    if not getattr(args, "resume", False):  # a resume keeps its finished inputs' labels as they are, edited or not
        from ..io.ome_zarr_labels import labels_not_replaceable

        for path in inputs:
            refused = (
                labels_not_replaceable(path, getattr(args, "labels_name", "promptseg"), args.output)
                if is_ome_zarr(path) and _writes_into_zarr(args, path)
                else None
            )
            if refused:  # before any work, as for files in -o (the write checks again)
                raise PromptsegError(refused)
    # each set of inputs once (with --overlay, two folders' a.png clash at a.tif and a_overlay.png): all named, so one
    # renaming pass settles them (only the first was, and '1 more such clash' could be that same pair's overlay)
    clashes: dict[tuple[Path, ...], Path] = {}
    for out, paths in writers.items():
        if len(paths) > 1:
            clashes.setdefault(tuple(paths), out)
    if clashes:
        (paths, out), *others = clashes.items()
        shown = [f"{', '.join(map(str, p))} ({o.name})" for p, o in others[:9]]
        raise PromptsegError(
            f"{len(paths)} inputs would write the same output {out}: {', '.join(map(str, paths))}"
            + (f"; so would {'; '.join(shown)}" if shown else "")
            + (f" and {len(others) - len(shown)} more such set(s)" if len(others) > len(shown) else "")
            + "; rename one of each, or run them into separate output directories"
        )
    # a run killed while writing (SIGKILL, the OOM killer) left its hidden temporary files, as large as the labels
    # they were becoming: this run's go (it holds the folder's lock, _output_lock: no other run writes them)
    removed, size = remove_killed_temporaries(args.output, {*(o.name for o in writers), "report.json", JOURNAL_NAME})
    if removed:
        print(
            f"-o {args.output}: removed {len(removed)} temporary file(s) of a run killed while writing "
            f"({size / 1e6:.1f} MB): {_some_names(removed)}",
            file=sys.stderr,
        )
    _say_renamed(inputs, args.output_stems)


def _resolved(path: str | os.PathLike) -> Path:
    """``path`` with its links followed; a loop of links (``ln -s a.png a.png``) as it is named: its reading says
    what it is, and a loop was the whole run's traceback here."""
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):  # RuntimeError: Python before 3.13 on a loop
        return Path(path).absolute()


def _own_report(path: Path) -> dict | None:
    """The report.json a promptseg subcommand wrote (a JSON object with its version and command), else None."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "version" in data and "command" in data else None


def _listed_outputs(output: Path, *, kept: bool = False) -> set[Path]:
    """Label and overlay files that the folder's report.json or resume journal names, when a version that did not
    mark its files yet wrote them (they may be replaced by a rerun). Files of records made by a marking version
    (``outputs_marked``) count only by their mark: one without it was rewritten since, e.g. a user's corrected
    labels. ``kept``: also every file of a finished record (a --resume keeps those as they are, corrected or not);
    a failed input's empty label image is written again by a resume, so it counts by its mark (a user's drawing
    saved into it was replaced)."""
    from ..batch.journal import JOURNAL_NAME, is_done, moved_with_output

    records: list = []
    with contextlib.suppress(OSError, ValueError, AttributeError):
        records += json.loads((output / "report.json").read_text()).get("images") or []
    with contextlib.suppress(OSError):
        for line in (output / JOURNAL_NAME).read_text().splitlines():
            with contextlib.suppress(ValueError, AttributeError):
                records.append(json.loads(line).get("record"))
    # finished as the resume sees them: in this folder when it was moved since (its files taken under their names)
    records = [
        r
        for r in records
        if isinstance(r, dict) and ((kept and is_done(moved_with_output(r, output))) or not r.get("outputs_marked"))
    ]
    files = {r.get(key) for r in records for key in ("output", "overlay")}
    # by name in this folder: a report stores paths as given, relative to where that run was started
    return {(output / Path(f).name).resolve() for f in files if isinstance(f, str) and f}


def _instances_record(args: argparse.Namespace, path: Path, image, found) -> dict:
    """Write one many-instances result and describe it for report.json (oneshot, segment --find-all)."""
    import numpy as np

    out = _write_output(args, path, found.labels)
    record = {
        "input": str(path),
        "output": str(out),
        "shape": list(np.shape(image)),
        "objects": int(len(found.scores)),
        "candidates": found.candidates,
        "working_scale": found.scale.summary() if found.scale is not None else None,
        "blank_tiles": found.blank_tiles,
        "low_confidence": found.low_confidence,
        "boxes_xyxy": np.round(found.boxes, 1).tolist(),
        "scores": [round(float(s), 4) for s in found.scores],
        "timings_s": {k: round(v, 4) for k, v in found.timings.items()},
        "warnings": found.warnings,
    }
    if not len(found.scores):
        record["reason"] = "; ".join(found.warnings) or "no object found"
    scale = f", scale {found.scale.scale:.2f} in {found.scale.tiles} tile(s)" if found.scale is not None else ""
    _finish_image(args, path, image, found.labels, record, f"{record['objects']} object(s){scale}")
    return record


def _finish_image(
    args: argparse.Namespace,
    path: Path,
    image: object,
    labels: object,
    record: dict,
    summary: str,
    *,
    stack: object | None = None,
) -> None:
    """Per-image tail shared by the segmenting subcommands: a warning for stack options a 2D input ignored, the
    optional overlay (its failure is a warning: the labels are written) and the summary the driver prints (private
    ``_`` keys stay out of report.json). ``stack``: a stack input as its planes were read (its overlay's plane),
    given with stack labels."""
    import numpy as np

    from ..io import output_stem, write_overlay

    warnings = record.setdefault("warnings", [])
    if np.ndim(labels) == 2:
        ignored = [
            option
            for option, given in (
                ("--plane", getattr(args, "plane", None) is not None),
                ("--propagate", getattr(args, "propagate", False)),
                ("--stop-iou", getattr(args, "stop_iou_given", False)),
            )
            if given
        ]
        if ignored:
            warnings.append(f"a 2D image, not a (Z, Y, X) stack: {', '.join(ignored)} ignored")
    if args.overlay:
        channel_axis = args.channel_axis
        try:
            if np.ndim(labels) == 3:  # a stack: the overlay shows the seed plane, or the middle one
                z = getattr(args, "plane", None)
                z = np.shape(labels)[0] // 2 if z is None else z
                image = stack[z]  # _stack_record passes the planes as it read them
                labels = labels[z]
                channel_axis = _plane_channel_axis(args)
            overlay = args.output / f"{output_stem(path, getattr(args, 'output_stems', None))}_overlay.png"
            options = {"channel_axis": channel_axis, "channels": args.channels}
            record["overlay"] = str(write_overlay(overlay, image, labels, **options))
        except Exception as exc:  # noqa: BLE001 - a quick look must not cost the labels already written
            warnings.append(f"overlay not written: {' '.join(str(exc).split()) or type(exc).__name__}")
    record["_summary"] = summary


def _write_report(
    output: Path,
    *,
    device: str = "auto",
    auto_precision: str | None = None,
    encoder_precision: str | None = None,
    into: Path | None = None,
    **report: object,
) -> Path:
    """OUT/report.json, replaced whole (a resumed run reads it), or written ``into`` a temporary file that the
    caller renames to it with the run's other files (:func:`~..io._files.replacing_together`). It says the encoder
    precision the run had: ``encoder_precision`` as the batch's workers ran it (:func:`_segmenter_meta`), else resolved
    here from ``device`` (the run's ``--device``), ``auto_precision`` (what auto meant in the method, if it pins it)
    and ``--precision`` / ``$PROMPTSEG_PRECISION`` (auto by default)."""
    path = output / "report.json"
    precision = encoder_precision or _resolved_precision(device, auto_precision)
    text = json.dumps({"version": __version__, "encoder_precision": precision, **report}, indent=2)
    if into is not None:
        into.write_text(text)
        return path
    with replacing(path) as temp:
        temp.write_text(text)
    return path


def _resolved_precision(device: str, auto_precision: str | None = None) -> str:
    """The encoder's precision in this process (imports torch: auto depends on the CPU and the device)."""
    from ..models import sam_family
    from ..models.device import resolve_device

    with sam_family.auto_precision(auto_precision) if auto_precision else contextlib.nullcontext():
        return sam_family.resolve_precision(None, resolve_device(device))


def _segmenter_meta(segmenter: object) -> dict:
    """The run-level fields every batch setup reports from its worker: the model, its device and the encoder
    precision it runs at there (the driver of a Dask batch runs no model: it takes these from the workers)."""
    meta = {"model": segmenter.name, "device": str(segmenter.device)}
    precision = getattr(segmenter, "precision", None)
    return meta if precision is None else {**meta, "encoder_precision": precision}


def _run_batch(
    args: argparse.Namespace,
    paths: Sequence[Path],
    setup: Callable[[argparse.Namespace], tuple[object, dict]],
    process: Callable[[argparse.Namespace, object, Path, object], dict],
) -> tuple[BatchOutcome, int]:
    """Run ``process(args, state, path, image) -> record`` on every input, in this process or on Dask workers
    (``--scheduler``), each worker running ``setup(args) -> (state, meta)`` once. Never loses work: a target that
    fails (bad file, an error in a method; not an error of the input and options themselves, e.g. a box outside
    it) is retried once, then gets an empty label image where its shape is known and a record with the reason, and
    the batch goes on; a target with nothing to find (:class:`~..errors.NothingFoundError`)
    gets the same at once, alone too; ``--resume`` skips what a killed or finished run already wrote. Returns the
    outcome (records in input order) and the exit code: 0 when every output was written (some may be empty: see
    each record's ``status``), 1 when an input could not be read and so has no output, 2 when every input failed,
    130 when stopped once an input was done (its report written, ``outcome.finish()`` raises the interruption).
    With a single input, its error is the run's error (exit 2, one line, no report)."""
    from ..batch import BatchJob, run_batch
    from ..models import embedding_cache

    # workers may run elsewhere (another cwd, a cluster node): absolute paths, and the disk cache this process uses
    paths = [Path(p).absolute() for p in paths]
    if getattr(args, "output", None) is not None:
        args.output = Path(args.output).absolute()
    cache = embedding_cache.active()
    args.cache = str(cache.root) if cache is not None else None
    args.cache_max_gb = cache.max_bytes / 1e9 if cache is not None else None
    try:
        outcome = run_batch(
            BatchJob(setup, process, args),
            paths,
            scheduler=args.scheduler,
            workers=args.workers,
            resume=getattr(args, "resume", False),
            # the run's report.json is written (an earlier run's would describe labels this one replaced)
            report_interrupted=getattr(args, "output", None) is not None,
        )
    except (PromptsegError, WeightsError) as exc:
        failed_input = getattr(exc, "failed_input", None)  # a single input's own error: the run's
        if failed_input is not None and getattr(args, "output", None) is not None:
            _forget_earlier_result(args, failed_input, exc)
        raise
    if outcome.interrupted:  # its report is written, then outcome.finish() goes on with the interruption
        return outcome, 130
    records = outcome.records
    cache_use = outcome.summary.get("embedding_cache")
    if cache_use and cache_use["images"] and getattr(args, "command", "") != "embed":  # embed says it per input
        print(
            f"embedding cache {cache_use['path']}: {cache_use['images_from_cache']} of {cache_use['images']} image(s) "
            f"read from it ({cache_use['embeddings_computed']} embedding(s) computed)",
            file=sys.stderr,
        )
    failed = [r for r in records if r["status"] == "failed"]
    empty = [r for r in records if r["status"] == "empty"]
    unwritten = sum(1 for r in failed if "output" not in r)
    if getattr(args, "output", None) is not None:
        # every record: an input segmented without --overlay (or whose overlay failed) kept the earlier run's
        removed = _remove_stale_outputs(args, records)
        if removed:  # files the user may look for: said here too, not only in each record of report.json
            print(
                f"-o {args.output}: removed {len(removed)} file(s) of an earlier run that this run did not write "
                f"(they would pass for its results): {_some_names(removed)}",
                file=sys.stderr,
            )
    if failed or empty:
        embedding = getattr(args, "command", "") == "embed"  # embeddings have no objects to count
        done = "embedded" if embedding else "segmented"
        print(
            f"{len(records)} input(s): {len(records) - len(failed) - len(empty)} {done}, "
            + ("" if embedding and not empty else f"{len(empty)} with no object, ")
            + f"{len(failed)} failed ({unwritten} without output)"
            + ("; reasons in report.json" if getattr(args, "output", None) is not None else ""),
            file=sys.stderr,
        )
    if records and len(failed) == len(records):
        first, reason = failed[0]["input"], failed[0]["reason"]
        print(f"every input failed; the first: {reason if first in reason else f'{first}: {reason}'}", file=sys.stderr)
        return outcome, 2
    return outcome, (1 if unwritten else 0)


def _forget_earlier_result(args: argparse.Namespace, path: str, exc: BaseException) -> None:
    """A single input that failed on a rerun: its earlier outputs go (as in a batch), and the folder's report.json
    says it failed, so neither it nor a later --resume passes the earlier result for this run's."""
    record = {"input": path}
    _remove_stale_outputs(args, [record])
    for warning in record.get("warnings", []):
        print(f"{path}: {warning}", file=sys.stderr)
    report_path = args.output / "report.json"
    report = _own_report(report_path) if report_path.exists() else None
    images = report.get("images") if report is not None else None
    if not isinstance(images, list) or not any(isinstance(r, dict) and r.get("input") == path for r in images):
        return
    reason = " ".join(str(exc).split())
    report["images"] = [
        {"input": path, "status": "failed", "reason": reason} if isinstance(r, dict) and r.get("input") == path else r
        for r in images
    ]
    with replacing(report_path) as temp:
        temp.write_text(json.dumps(report, indent=2))


def _remove_stale_outputs(args: argparse.Namespace, records: Sequence[dict]) -> list[str]:
    """An input's files of an earlier run that this run did not write (a failed or empty input's labels when this
    run wrote none, any input's overlay when this run drew none: no --overlay, or its drawing failed; an OME-Zarr
    input's labels image a run into this -o wrote; those under its stem when it is named after its whole name now,
    a.tif beside a.png) would pass for this run's result: they go, and its record says so. Only our own files
    (marked; labels as written) are removed. Returns their names."""
    from ..io import output_stem
    from ..io.images import is_own_output
    from ..io.multiscale import is_ome_zarr
    from ..io.ome_zarr_labels import remove_own_labels

    removed = []
    named = {Path(r[key]).name for r in records for key in ("output", "overlay") if r.get(key)}  # kept ones too
    for record in records:
        stem = output_stem(record["input"], getattr(args, "output_stems", None))
        plain = output_stem(record["input"])  # its name before an input of its stem joined: a.tif, now a.tif.tif
        for key, suffix in (("overlay", "_overlay.png"), ("output", ".tif")):
            earlier = [] if record.get(key) else [args.output / f"{stem}{suffix}"]  # this run wrote none
            earlier += [args.output / f"{plain}{suffix}"] if plain != stem else []
            for path in earlier:
                if path.name not in named and is_own_output(path):
                    path.unlink()
                    record.setdefault("warnings", []).append(f"removed {path.name} of an earlier run")
                    removed.append(path.name)
        zarr_input = Path(record["input"])
        if is_ome_zarr(zarr_input) and _writes_into_zarr(args, zarr_input):  # its labels image: none this run
            name = getattr(args, "labels_name", "promptseg")
            written = (
                record.get("output") and Path(record["output"]).resolve() == (zarr_input / "labels" / name).resolve()
            )
            if not written and remove_own_labels(zarr_input, name, args.output):
                record.setdefault("warnings", []).append(f"removed labels/{name} of an earlier run from {zarr_input}")
                removed.append(f"{zarr_input.name}/labels/{name}")
    return removed


def _mask_file_labels(mask: np.ndarray, path: Path, name: str) -> np.ndarray:
    """A mask or label image as read from the file ``path``, as 2D ids: a lossy file's (a JPEG: compression blurs
    its edges and adds faint values; masks such as GlaS's and Kvasir's are grey JPEGs in three channels) its first
    channel cut at 127 (:func:`..io.label_ids.mask_foreground`, the rule every reader of masks follows), as one
    binary object; any other's exact values as :func:`..io.images.label_image_2d` reads them (a grey RGB image's
    first channel, a colour label image's colours as ids)."""
    import numpy as np

    from ..io.images import label_image_2d, mask_file_source, mask_foreground

    mask = np.asarray(mask)
    if mask.dtype == np.uint8 and mask_file_source(path) == "lossy":
        return mask_foreground(mask[..., 0] if mask.ndim == 3 else mask, source="lossy")
    return label_image_2d(mask, name)


def _reference_labels(
    mask: np.ndarray,
    image: np.ndarray,
    path: Path,
    image_path: Path,
    channel_axis: int | None = None,
    channels: list[int] | None = None,
    options: tuple[str, str] = ("--reference", "--reference-mask"),
) -> np.ndarray:
    """Reference mask/labels (file ``path``) of the reference image ``image`` (file ``image_path``) as 2D (0 =
    background, ids kept, a colour label image's colours as ids); JPEG masks are thresholded at 127 (compression blurs
    their edges), so they come back as one binary object. A bad pair is refused naming its file(s), in CLI terms:
    ``options`` are the subcommand's names for the image and its mask."""
    import numpy as np

    from ..models.preprocessing import as_channels_last, read_axes

    shape = np.shape(image)
    if len(shape) > 3 or (len(shape) == 3 and channel_axis is None and shape[-1] not in (1, 2, 3, 4)):
        raise PromptsegError(
            f"{options[0]} {image_path}: {len(shape)}D array of shape {shape}, its axes read as {read_axes(shape)}; "
            "a reference is one 2D image (Y, X) or (Y, X, C): save the plane (of the time point) that holds the "
            "objects as its own file, or give --channel-axis if an axis holds channels"
        )
    hwc = as_channels_last(image, channel_axis=channel_axis, channels=channels, name=f"{options[0]} {image_path}")
    mask = _mask_file_labels(mask, path, f"{options[1]} {path}")
    h, w = hwc.shape[:2]
    if mask.shape != (h, w):
        size = f"{mask.shape[1]} x {mask.shape[0]} px" if mask.ndim == 2 else f"an array of shape {mask.shape}"
        raise PromptsegError(f"{options[1]} {path}: {size}, the reference image {image_path} is {w} x {h} px")
    if not (mask > 0).any():
        raise PromptsegError(
            f"{options[1]} {path}: no labelled pixel (all 0); label the objects to find (non-zero pixels)"
        )
    return mask
