"""What a batch has finished, kept on disk as it goes, so a killed run resumes without losing or redoing work.

Beside ``report.json`` the driver appends one JSON line per finished input to ``report.partial.jsonl`` (flushed at
once): a header with the run's signature and id, the run-level fields (``meta``), then the records; Dask workers
leave each input's result beside its outputs too (:data:`WORKER_RESULTS`, before the outputs take their names), for
what the driver did not record before it stopped. ``--resume`` takes the records of inputs whose outputs exist from
the journal when there is one (a killed run), else from report.json (a finished one); an input that failed is run
again. The signature (a hash of
the options that change outputs) must match: results of other options are never mixed into one report. ``--device``
alone may differ when it names the device the earlier run ran on (each record says where it ran): ``auto`` and
``cpu`` are one run on a machine whose auto is the CPU (this check needs no torch). ``auto`` then keeps only the
records made where auto runs now (:func:`made_on_another_device`: a GPU run resumed on a machine without one is made
again on the CPU); knowing that imports torch in the driver of an in-process or local run, a tcp driver leaves it
to its workers' records.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from ..errors import PromptsegError
from ..io._files import FOLDER_DIGEST, DeferredNames, files_under, listing_digest, replacing
from ..models.device import DEVICES

JOURNAL_NAME = "report.partial.jsonl"
#: beside the journal: the results Dask workers leave as they finish (``RUN_ID/<input's hash>.json``), so an input
#: whose outputs a worker wrote is not lost when the driver stops (Ctrl+C, SIGTERM, killed) before it records it
WORKER_RESULTS = "report.partial.d"
#: options that do not make a run another run: where and how fast it runs, and the encoder precision (the
#: precision the workers ran at is recorded per run; a resume at another one keeps the earlier run's beside it,
#: ``resumed_encoder_precision``, as it does when $PROMPTSEG_PRECISION changed)
NOT_IN_SIGNATURE = frozenset(
    {
        "func",
        "stop_iou_given",  # whether --stop-iou was typed: the value is in the signature
        "images",
        "targets",
        "output",
        "scheduler",
        "workers",
        "threads",
        "resume",
        "cache",
        "cache_max_gb",
        "precision",
        "output_stems",  # the names of inputs that share a stem: each record names its files
    }
)


#: options naming files whose contents decide the outputs: a reference relabelled, an exemplar added to the
#: library or a checkpoint retrained under the same path makes a resume another run
CONTENT_OPTIONS = ("reference", "reference_mask", "library", "weights", "text_weights", "text_model")


#: folders of an option's directory that do not decide its outputs: a text model's feature cache (frozen features of
#: the images it was trained on, ~3 MB each, equal to what the encoder gives: another model trained with
#: --cache-dir MODEL_DIR/cache adds to it) and its training state for a resume (last/, written by every epoch)
CONTENT_SKIP = {"text_model": ("cache", "last", "last.tmp", "last.old")}


#: files above this size (a large model's weights) are known by their size and modification time, not hashed
HASHED_BYTES = 256 * 2**20


def _content_digest(path: str | os.PathLike, skip: tuple[str, ...] = ()) -> str:
    """Hash of a file's bytes, or of every file under a directory (names and bytes; lock files, and the top-level
    folders named in ``skip``, aside)."""
    path = Path(path)
    if path.is_file():
        files = [(path.name, path)]
    elif path.is_dir():
        files = files_under(path, skip)
    else:
        return "missing"
    digest = hashlib.blake2b(digest_size=12)
    for name, file in files:
        digest.update(name.encode() + b"\0")
        stat = file.stat()
        if stat.st_size > HASHED_BYTES:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
            continue
        if name == "library.json":  # when its entries were made does not change what a run finds with them
            digest.update(_library_index_without_dates(file))
            continue
        with open(file, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _library_index_without_dates(file: Path) -> bytes:
    """A reference library's index with its entries' ``created`` left out: a library built again from the same
    exemplars gives the same digest (its own bytes, if it is no such index)."""
    raw = file.read_bytes()
    try:
        index = json.loads(raw)
        entries = [{k: v for k, v in entry.items() if k != "created"} for entry in index["entries"]]
    except (ValueError, KeyError, TypeError, AttributeError):
        return raw
    return json.dumps({**index, "entries": entries}, sort_keys=True).encode()


def run_signature(args: argparse.Namespace) -> str:
    """Hash of the subcommand, every option that changes its outputs and the contents of the files they name."""
    return signature_of(run_options(args))


def signature_of(options: dict) -> str:
    """The hash of :func:`run_options`."""
    text = json.dumps(options, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def run_options(args: argparse.Namespace) -> dict:
    """What the signature is a hash of (kept beside it, so a refused resume can say which option changed): the
    subcommand, every option that changes its outputs and the contents of the files they name, as JSON values."""
    options = {k: v for k, v in vars(args).items() if k not in NOT_IN_SIGNATURE}
    for key in CONTENT_OPTIONS:
        value = options.get(key)
        if value is not None:
            paths = value if isinstance(value, (list, tuple)) else [value]
            options[f"{key}_contents"] = [_content_digest(p, CONTENT_SKIP.get(key, ())) for p in paths]
    features = str(options.get("features") or "")
    # a local model folder; '~' as the loader takes it (no shell expands it after 'dinov2:'): the folder went unhashed
    folder = Path(features[len("dinov2:") :]).expanduser()
    if features.startswith("dinov2:") and folder.exists():
        options["features_contents"] = [_content_digest(folder)]
    return json.loads(json.dumps(options, sort_keys=True, default=str))


def changed_options(before: dict, now: dict) -> list[str]:
    """The options of ``now`` that differ from ``before``, in the user's terms: '--overlay (False, now True)', 'the
    contents of --library'."""
    changed = []
    for key in sorted(set(before) | set(now)):
        if before.get(key) == now.get(key):
            continue
        if key.endswith("_contents"):
            changed.append(f"the contents of --{key.removesuffix('_contents').replace('_', '-')}")
        elif key == "command":
            changed.append(f"the subcommand ({before.get(key)}, now {now.get(key)})")
        else:
            changed.append(f"--{key.replace('_', '-')} ({before.get(key)}, now {now.get(key)})")
    return changed


def _only_new_options_unset(before: dict, now: dict) -> bool:
    """Whether ``now`` differs from ``before`` only by options ``before`` lacks (a newer version's) left unset."""
    differing = {k for k in set(before) | set(now) if k not in before or k not in now or before[k] != now[k]}
    return all(k not in before and now.get(k) in (None, False) for k in differing)


def _other_time_point(before: dict, now: dict) -> bool:
    """Whether both runs segmented one time point (--time) of a time-lapse, each another."""
    earlier, later = before.get("time"), now.get("time")
    return isinstance(earlier, int) and isinstance(later, int) and earlier != later


def earlier_device(signature: str | None, before: dict | None, now: dict) -> str | None:
    """The --device of an earlier run whose ``signature`` differs from this one's (options ``now``) by --device
    alone, else None. ``before``: its options (None from an earlier version: its --device is found from its
    signature, computed as it was)."""
    if signature is None or "device" not in now:
        return None
    candidates = [before["device"]] if before and "device" in before else list(DEVICES)
    return next((d for d in candidates if signature_of({**now, "device": d}) == signature), None)


def device_kinds(devices: set[str]) -> set[str]:
    """'cuda:1' -> 'cuda': the kinds a journal's devices name."""
    return {str(d).split(":")[0].strip().lower() for d in devices}


def made_on_another_device(kept: dict[str, dict], meta: dict, device_now: str) -> dict[str, str]:
    """The inputs of ``kept`` made on a device of another kind than ``device_now`` (where --device auto runs now),
    each with the device it ran on (a record without one: its run's meta; neither, an earlier version's: kept)."""
    elsewhere = {}
    for key, record in kept.items():
        ran = record.get("device") or (meta or {}).get("device")
        if ran and device_kinds({ran}) != device_kinds({device_now}):
            elsewhere[key] = str(ran)
    return elsewhere


def input_digest(path: str | os.PathLike) -> str:
    """What an input held when it was segmented: an image replaced under the same name is another input to a
    resume. A file is known by its bytes (by size and time above :data:`HASHED_BYTES`); a folder (an OME-Zarr:
    thousands of chunk files, of which a run may read one small level) by its files' names, sizes and modification
    times, as hashing them read a whole pyramid for every input of every run and resume. An OME-Zarr's
    ``labels/`` group is left out: the run writes its outputs there."""
    try:
        path = Path(path)
        return listing_digest(path, skip=("labels",)) if path.is_dir() else _content_digest(path)
    except OSError:  # unreadable: its run says why; never the digest of a record that is done
        return "unreadable"


def moved_with_output(record: dict, output: Path) -> dict:
    """``record`` of an earlier run with its files named in ``output``, the folder being resumed, when it names them
    in another folder: that run's -o, since moved (to a larger disk when the first filled up) or copied. A file
    is taken from ``output`` under its name; one that is not there keeps its path (an OME-Zarr input's labels are
    written into the input, not into -o). Otherwise every image of a moved folder was made again."""
    moved = {}
    for key in ("output", "overlay"):
        recorded = record.get(key)
        if not recorded or Path(recorded).parent == output:
            continue
        here = output / Path(recorded).name
        if here.exists():
            moved[key] = str(here)
    return {**record, **moved} if moved else record


def moved_inputs(previous: dict[str, dict], paths: Sequence[Path]) -> dict[str, dict]:
    """``previous`` (records by input) with the records of inputs since moved under the new paths: an input of
    ``paths`` that has no record of its own takes the record of an input of the same name that is not among
    ``paths`` and held the same contents (its ``input_digest``): the folder was moved, or is mounted elsewhere on
    another machine. Otherwise every image of a moved input folder was made again."""
    given = {str(p) for p in paths}
    by_name: dict[str, list[dict]] = {}
    for key, record in previous.items():
        if key not in given and record.get("input_digest"):
            by_name.setdefault(Path(key).name, []).append(record)
    found = {}
    for path in paths:
        candidates = by_name.get(Path(path).name) if str(path) not in previous else None
        if candidates:
            digest = input_digest(path)
            match = next((r for r in candidates if r["input_digest"] == digest), None)
            if match is not None:
                found[str(path)] = {**match, "input": str(path)}
    return {**previous, **found}


def current_record(record: dict) -> dict:
    """An earlier run's record in this version's names: `promptseg text` wrote its stage times as ``timings`` (every
    other command ``timings_s``); kept by a resume, they were copied under the old name beside new records."""
    if "timings" in record and "timings_s" not in record:
        record = {("timings_s" if key == "timings" else key): value for key, value in record.items()}
    return record


def is_done(record: dict, path: str | os.PathLike | None = None) -> bool:
    """A finished input: segmented (objects or none), every file it names still there (an OME-Zarr labels
    output is a directory), and, given its ``path``, the input's contents as they were (a record without their
    digest, from an earlier version, is done again)."""
    files = [record.get(k) for k in ("output", "overlay") if record.get(k)]
    if record.get("status") not in ("ok", "empty") or not files or not all(Path(f).exists() for f in files):
        return False
    return path is None or record.get("input_digest") == input_digest(path)


class Journal:
    """The append-only record of one run in ``output``."""

    def __init__(self, output: Path, signature: str, options: dict | None = None, run_id: str | None = None) -> None:
        self.output = output
        self.path = output / JOURNAL_NAME
        self.signature = signature
        #: the run whose workers' results (:func:`leave_result`) a later --resume takes in with the journal's records
        self.run_id = run_id
        #: what the signature is a hash of (:func:`run_options`), written beside it
        self.options = options
        self._file = None
        self._records = 0
        #: the --time of an earlier run in ``output`` made at another time point (:meth:`previous`), else None
        self.other_time_point: int | None = None

    def previous(self) -> tuple[dict[str, dict], dict]:
        """Records (by input) and run-level fields of earlier runs with this signature."""
        if self.path.is_file():
            return self._read_journal()
        report = self.output / "report.json"
        if not report.is_file():
            return {}, {}
        try:
            data = json.loads(report.read_text())
        except (OSError, ValueError) as exc:
            raise PromptsegError(f"{report}: cannot be read to resume ({exc}); drop --resume") from exc
        batch = data.get("batch") or {}
        records = {r["input"]: current_record(r) for r in data.get("images", []) if "input" in r}
        meta = batch.get("meta") or {}
        self._check(batch.get("signature"), report, batch.get("options"), records, meta)
        return ({}, {}) if self.other_time_point is not None else (records, meta)

    def _read_journal(self) -> tuple[dict[str, dict], dict]:
        header, records, meta = {}, {}, {}
        with open(self.path) as fh:
            for line in fh:
                try:
                    item = json.loads(line)
                except ValueError:  # the last line, cut by the kill
                    continue
                if "signature" in item:
                    header = item
                elif "meta" in item:
                    meta = item["meta"]
                elif "record" in item:
                    records[item["record"]["input"]] = current_record(item["record"])
        # what its workers finished, their outputs written, that the driver did not record before it stopped
        for key, result in left_results(self.output, header.get("run_id")).items():
            records.setdefault(key, result["record"])
        # checked once all is read: where the run ran is in its meta and records, after the header
        if header:
            self._check(header["signature"], self.path, header.get("options"), records, meta)
        return ({}, {}) if self.other_time_point is not None else (records, meta)

    def _check(
        self,
        signature: str | None,
        where: Path,
        options: dict | None = None,
        records: dict[str, dict] | None = None,
        meta: dict | None = None,
    ) -> None:
        """Refuse another run's results, naming what changed when both runs' options are known (an earlier
        version's run has only its signature). --device alone may differ where it names where that run ran."""
        if signature == self.signature:
            return
        if options and self.options and _other_time_point(options, self.options):
            # a time-lapse segmented time point by time point: another --time is another run, none of whose
            # results are this one's, and refusing it stopped a --resume throughout at the second time point (its
            # labels keep the other time points: io.time_point_labels)
            self.other_time_point = options["time"]
            return
        if options and self.options and _only_new_options_unset(options, self.options):
            return  # options a newer version added, not given: the outputs are the earlier run's
        changed = changed_options(options, self.options) if options and self.options else []
        earlier = earlier_device(signature, options, self.options) if self.options else None
        if earlier is not None:
            # where it ran, as its records and meta say (an explicit device is where it ran: an unavailable one is
            # refused); auto matches any, an explicit one the same kind (no torch here: a Dask driver has none)
            ran_on = {r["device"] for r in (records or {}).values() if r.get("device")}
            ran_on |= {meta["device"]} if meta and meta.get("device") else set()
            kinds = device_kinds(ran_on) or device_kinds({earlier}) - {"auto"}
            wanted = device_kinds({self.options["device"]}).pop()
            if wanted == "auto" or kinds == {wanted}:
                return
            ran = f"it ran on {', '.join(sorted(kinds))}" if kinds else "where it ran is not recorded"
            changed = [f"--device ({earlier}, now {self.options['device']}; {ran})"]
        what = f"changed since: {'; '.join(changed)}" if changed else "other subcommand or options"
        raise PromptsegError(
            f"{where}: results of another run ({what}); drop --resume to start over, or write to another -o"
        )

    def start(self, kept: list[dict], meta: dict) -> None:
        """A new journal holding the header and what is kept from earlier runs (written whole, then renamed)."""
        self.output.mkdir(parents=True, exist_ok=True)
        header = {"signature": self.signature, **({"options": self.options} if self.options else {})}
        header.update({"run_id": self.run_id} if self.run_id else {})
        lines = [header, *([{"meta": meta}] if meta else []), *({"record": r} for r in kept)]
        self._records = len(kept)
        with replacing(self.path) as temp:
            temp.write_text("".join(json.dumps(item) + "\n" for item in lines))
        shutil.rmtree(self.output / WORKER_RESULTS, ignore_errors=True)  # an earlier run's: now in the journal
        self._file = open(self.path, "a")  # noqa: SIM115 - appended to for the whole run, closed by close()

    def add(self, **item: dict) -> None:
        self._records += "record" in item
        if self._file is not None:
            self._file.write(json.dumps(item) + "\n")
            self._file.flush()

    def close(self, finished: bool, started: bool = False) -> None:
        """Close; a finished run's journal goes (report.json holds everything), an interrupted one stays when it
        holds work or ``started`` any (a worker may still be writing an output the journal does not name yet: a
        later --resume must see this run's journal, not the report of an earlier run with other options); a run
        stopped before it started leaves nothing behind."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if finished or not (self._records or started):
            self.path.unlink(missing_ok=True)
            shutil.rmtree(self.output / WORKER_RESULTS, ignore_errors=True)


def output_digest(path: str | os.PathLike) -> str:
    """What a file of an input's outputs holds (its bytes' hash; size and time above :data:`HASHED_BYTES`, which a
    rename keeps; not its name): a worker's left result names its files' digests as written, under their
    temporary names. A folder (an OME-Zarr input's labels image) by its listing, which a rename keeps."""
    if os.path.isdir(path):
        return f"{FOLDER_DIGEST}{listing_digest(Path(path))}"
    stat = os.stat(path)
    if stat.st_size > HASHED_BYTES:
        return f"{stat.st_size}:{stat.st_mtime_ns}"
    digest = hashlib.blake2b(digest_size=12)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def deferred_outputs(written: DeferredNames) -> dict[str, str]:
    """The files (and OME-Zarr labels images) a task wrote under temporary names, each with the digest it will have
    under its own (:func:`output_digest`), for its left result (:func:`leave_result`)."""
    return {str(name): written.digest_of(temp) or output_digest(temp) for temp, name in written.pending}


def leave_result(output: Path, run_id: str, result: dict) -> None:
    """A worker's finished input (``result``: its record, the run's meta, and ``outputs``: the digest of each file
    it wrote, :func:`output_digest`), left in :data:`WORKER_RESULTS` for the driver, which records it in the
    journal: an interrupt between the two left the labels written and the input recorded as interrupted, made
    again by --resume. Left before the files take their names (:func:`..io._files.names_deferred`): a worker killed
    between the labels and this result (SIGKILL, the OOM killer) made them again on --resume; one killed between
    this result and the renames leaves files that are not these (:func:`left_results` drops it). Written whole,
    then renamed; a failure to write it is not the input's (the driver records it as always)."""
    name = hashlib.blake2b(str(result["record"]["input"]).encode(), digest_size=12).hexdigest()
    try:
        with replacing(output / WORKER_RESULTS / run_id / f"{name}.json") as temp:
            temp.write_text(json.dumps(result, default=str))
    except OSError:
        pass


def left_results(output: Path, run_id: str | None) -> dict[str, dict]:
    """The results the workers of run ``run_id`` left (:func:`leave_result`), by input."""
    found: dict[str, dict] = {}
    if not run_id:
        return found
    try:
        files = sorted((output / WORKER_RESULTS / run_id).glob("*.json"))
    except OSError:
        return found
    for file in files:
        try:
            result = json.loads(file.read_text())
            if not _outputs_as_left(result, output):  # its worker was killed before its files took their names
                continue
            found[result["record"]["input"]] = {**result, "record": current_record(result["record"])}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # one cut by a kill: not done
            continue
    return found


def _outputs_as_left(result: dict, output: Path) -> bool:
    """Whether every file a worker's result lists holds what the worker wrote (an earlier run's file under the
    name, or none, where the worker was killed before renaming it). Each is looked for in ``output`` by its name
    (the worker wrote them there: the folder may have been moved since, see :func:`moved_with_output`); an OME-Zarr
    input's labels image (a folder, known by its listing) where it was written."""
    for path, digest in (result.get("outputs") or {}).items():
        folder = str(digest).startswith(FOLDER_DIGEST)  # an OME-Zarr input's labels image: where it was written
        here = Path(path) if folder else output / Path(path).name
        if not (here.is_dir() if folder else here.is_file()) or output_digest(here) != digest:
            return False
    return True
