"""-o OUT of the segmenting subcommands: one run at a time (its lock), checked before any work (nothing but our own
earlier outputs replaced), each input's labels written where --output-format says (the core writer,
:mod:`..io.input_labels`), and an earlier run's files this run did not write removed."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import PromptsegError
from ..io._files import FILE_NAME_SUFFIXES, ensure_writable_dir
from ._inputs import _say_renamed, _some_names

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


def absolute_output(args: argparse.Namespace) -> None:
    """``-o OUT`` made absolute, once, before any work: every subcommand prints and records its outputs (and names
    ``-o`` in its messages) by absolute paths, wherever the run was started from, as it names its inputs."""
    if getattr(args, "output", None) is not None:
        args.output = Path(args.output).absolute()


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
    from ..io.input_labels import zarr_labels_not_writable

    for path in inputs:  # a read-only OME-Zarr: each input before it was segmented, then the run stopped at it
        refused = (
            zarr_labels_not_writable(path, getattr(args, "output_format", "auto"))
            if _writes_into_zarr(args, path)
            else None
        )
        if refused:
            raise PromptsegError(refused)
    _make_output_dir(args.output)
    suffixes = [".tif"] + (["_overlay.png"] if getattr(args, "overlay", False) else [])
    sources = {_resolved(p): Path(p) for p in [*inputs, *also_read]}
    # inputs sharing a stem (slide.png, slide.ome.zarr) are the user's to keep both: each named after its whole name
    args.output_stems = distinct_output_stems(inputs)
    writers: dict[Path, list[Path]] = {}
    for path in inputs:
        # an OME-Zarr input's labels go into its labels/ group (a failed one's empty labels too): its overlay alone
        # is in -o
        for suffix in suffixes[1:] if _writes_into_zarr(args, path) else suffixes:
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


def _remove_stale_outputs(args: argparse.Namespace, records: Sequence[dict]) -> list[str]:
    """An input's files of an earlier run that this run did not write (a failed or empty input's labels when this
    run wrote none, any input's overlay when this run drew none: no --overlay, or its drawing failed; an OME-Zarr
    input's labels TIFF when this run wrote its labels into the image, and its labels image a run into this -o wrote
    when this run wrote none; those under its stem when it is named after its whole name now,
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
            here = args.output / f"{stem}{suffix}"
            # this run wrote none there (none at all, or an OME-Zarr input's labels into the image)
            earlier = [] if record.get(key) and Path(record[key]).resolve() == here.resolve() else [here]
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


def _labels_written_as(args: argparse.Namespace) -> dict:
    """The run's options of where its labels go (--output-format, --labels-name; the names of inputs sharing a stem
    :func:`_prepare_outputs` gave), as the core writers (:mod:`..io.input_labels`) take them."""
    return {
        "output_format": getattr(args, "output_format", "auto"),
        "labels_name": getattr(args, "labels_name", "promptseg"),
        "output_stems": getattr(args, "output_stems", None),
    }


def _writes_into_zarr(args: argparse.Namespace, path: Path) -> bool:
    """Whether --output-format puts this input's labels into its own OME-Zarr labels/ group."""
    from ..io.input_labels import writes_into_zarr

    return writes_into_zarr(path, getattr(args, "output_format", "auto"))


def _write_output(args: argparse.Namespace, path: Path, labels: object, *, axes: str | None = None) -> str:
    """Write one input's labels into -o, or its OME-Zarr, as --output-format says (:func:`..io.input_labels.
    write_input_labels`); returns where. ``axes``: the labels' axes when the caller has read them."""
    from ..io.input_labels import write_input_labels

    return write_input_labels(path, labels, args.output, axes=axes, **_labels_written_as(args))


def _write_time_point(args: argparse.Namespace, path: Path, labels: object, n_times: int) -> tuple[str, list[int]]:
    """--time T: the (Z, Y, X) ``labels`` of time point T written over the time-lapse's (T, Z, Y, X) labels, the
    other time points an earlier run wrote kept (:func:`..io.time_point_labels.write_input_time_point`, which the
    batch engine writes a failed time point's empty labels with). Returns where, and the time points kept."""
    from ..io.time_point_labels import write_input_time_point

    return write_input_time_point(path, labels, args.time, n_times, args.output, **_labels_written_as(args))
