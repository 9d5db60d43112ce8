"""The batch loop every segmenting subcommand runs its inputs through (:func:`..batch.run_batch`, in this process or
on Dask workers), and what its outcome means for the exit code and -o."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import PromptsegError, WeightsError
from ..io._files import replacing
from ._inputs import _some_names
from ._outputs import _own_report, _remove_stale_outputs, absolute_output

if TYPE_CHECKING:
    from ..batch import BatchOutcome


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
    absolute_output(args)
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
