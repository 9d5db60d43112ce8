"""Files written whole or not at all, and the folders they go to."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path

from .._interrupts import publishing
from ..errors import PromptsegError

#: the name of :func:`replacing`'s temporary file: ``.<name>.<12 hex digits>.tmp``
_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{12}\.tmp")


def path_from_environment(value: str) -> Path:
    """A folder named by an environment variable, with ``~`` and ``$VARIABLES`` expanded as a shell would (a value
    set in quotes, or by a launcher that runs no shell, reaches us unexpanded: '~' would be a folder of that name
    under the working directory)."""
    return Path(os.path.expandvars(value.strip())).expanduser()


def _create_like_open(path: Path) -> None:
    """Create the empty file ``path`` as ``open()`` creates a file: mode 0666 under the umask and the folder's
    default ACL, not mkstemp's private 0600, so a lab's shared folder stays readable to the others."""
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (a dot file) to write to; when the block ends without error it replaces
    ``path`` in one step, so a reader, or a run killed mid-write, finds the old file or the new one, never half of
    one. On error the temporary file goes and ``path`` is untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    _create_like_open(tmp)
    deferred = _deferred.get()
    try:
        yield Path(tmp)
        if deferred is not None and deferred.takes(path):
            deferred.pending.append((tmp, path))  # its name taken later, by the caller that deferred it
            tmp = None
            return
        publishing()  # a batch holds an interrupt from here until the file's record is in its journal
        os.replace(tmp, path)
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):  # already renamed into place when the block succeeded
                os.unlink(tmp)


class DeferredNames:
    """The files :func:`replacing` wrote into ``folder`` within :func:`names_deferred`, each written whole under its
    temporary name, waiting to take its own (:meth:`publish`), and the folders written whole elsewhere that wait
    with them (:meth:`defer`: an OME-Zarr input's labels image)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.pending: list[tuple[Path, Path]] = []  # (temporary file, its name), in the order written
        #: how a deferred folder (:meth:`defer`) takes its name, or goes, by its temporary path
        self._actions: dict[Path, tuple[Callable[[], None], Callable[[], None]]] = {}
        self._digests: dict[Path, str] = {}

    def defer(
        self,
        temp: Path,
        path: Path,
        publish: Callable[[], None],
        discard: Callable[[], None],
        digest: str | None = None,
    ) -> None:
        """A folder written whole under ``temp`` (anywhere: an OME-Zarr input's labels image) that ``publish()``
        gives the name ``path`` with :meth:`publish`'s files, or ``discard()`` drops. ``digest``: what ``path``
        will hold (:data:`FOLDER_DIGEST` and its listing) when ``temp`` is not moved there whole (chunks moved into
        it); else ``temp``'s own is."""
        self.pending.append((temp, path))
        self._actions[temp] = (publish, discard)
        if digest is not None:
            self._digests[temp] = digest

    def withdraw(self, path: Path) -> None:
        """Drop what waits to take the name ``path``: written again in this block (a folder rewritten under one
        temporary name, which dropping the first at :meth:`publish` deleted), the last write counts."""
        for temp, name in [entry for entry in self.pending if entry[1] == path]:
            self.pending.remove((temp, name))
            self._drop(temp)

    def digest_of(self, temp: Path) -> str | None:
        """The digest :meth:`defer` was given for ``temp``, else None (``temp`` holds what its name will)."""
        return self._digests.get(temp)

    def _drop(self, temp: Path) -> None:
        _, discard = self._actions.pop(temp, (None, None))
        with contextlib.suppress(OSError):  # what is left goes with the next write of that name
            if discard is not None:
                discard()
            else:
                os.unlink(temp)

    def takes(self, path: Path) -> bool:
        # a dot file (a journal of replacing_together) is read back by its writer under its name: not deferred
        return path.parent == self.folder and not path.name.startswith(".")

    def publish(self) -> None:
        """Each file takes its name (a name written twice: its last file), the first written last: an input's
        labels, written before its overlay, under their name say that the others are in place too."""
        latest: dict[Path, Path] = {}
        for temp, path in self.pending:
            if path in latest:
                self._drop(latest[path])
            latest[path] = temp  # in its first place
        self.pending = [(temp, path) for path, temp in latest.items()]
        publishing()
        while self.pending:
            temp, path = self.pending.pop()
            publish, _ = self._actions.pop(temp, (None, None))
            if publish is not None:
                publish()
            else:
                os.replace(temp, path)

    def discard(self) -> None:
        while self.pending:
            self._drop(self.pending.pop(0)[0])


#: the start of a folder's digest, its listing after it (a worker's left result names an OME-Zarr's labels so)
FOLDER_DIGEST = "listing:"


def deferred_names() -> DeferredNames | None:
    """The :class:`DeferredNames` of the :func:`names_deferred` block this code runs in, else None."""
    return _deferred.get()


_deferred: ContextVar[DeferredNames | None] = ContextVar("deferred_names", default=None)


@contextlib.contextmanager
def names_deferred(folder: Path) -> Iterator[DeferredNames]:
    """Within the block, the files :func:`replacing` writes into ``folder`` (not into its subfolders) are written
    whole but keep their temporary names until the caller calls ``publish()``: a Dask worker leaves an input's
    result (with the files' digests) first, then names its labels, so a worker killed in between never leaves
    labels without their result. Left unpublished, they go when the block ends."""
    names = DeferredNames(folder)
    token = _deferred.set(names)
    try:
        yield names
    finally:
        _deferred.reset(token)
        names.discard()


#: the journal of a :func:`replacing_together` in progress, in its folder: what to undo if the run is killed
REPLACING_JOURNAL = ".promptseg-replacing.json"


class FilesReplacedTogether:
    """The files of one run, replaced together (see :func:`replacing_together`): ``self(name)`` is a temporary path
    beside ``folder / name`` to write to, :meth:`remove` drops an earlier run's file that this run has none of."""

    def __init__(self, folder: Path, last: str) -> None:
        self.folder = folder
        self.last = last
        #: name -> its temporary file's name and, once renaming, its earlier file's backup name and whether it had one
        self.entries: dict[str, dict[str, object]] = {}
        #: earlier files to remove with this run's replacement (each moved to a backup, deleted once all are in place)
        self.removals: dict[str, str] = {}
        self.state = "writing"

    def __call__(self, name: str) -> Path:
        if name not in self.entries:
            self.entries[name] = {"temp": f".{name}.{uuid.uuid4().hex[:12]}.tmp"}
            self._record()  # listed before it exists: a run killed once it does leaves no file the journal misses
            _create_like_open(self.folder / str(self.entries[name]["temp"]))
        return self.folder / str(self.entries[name]["temp"])

    def remove(self, name: str) -> None:
        """Remove ``folder / name`` once this run's files are in place (kept if the run stops before)."""
        self.removals[name] = f".{name}.{uuid.uuid4().hex[:12]}.old"

    def _record(self) -> None:
        """The journal, replaced whole and flushed to disk (with the folder's entry) before the step it announces."""
        text = json.dumps(self._journal())
        with replacing(self.folder / REPLACING_JOURNAL) as temp, open(temp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        _fsync(self.folder)

    def _commit(self) -> None:
        """Move each earlier file aside (to a backup) and this run's into its place, ``last`` after all the others;
        then delete the backups and the journal. Any error on the way puts every earlier file back."""
        for name, entry in self.entries.items():
            final = self.folder / name
            entry["had"] = final.exists() or final.is_symlink()
            entry["backup"] = f".{name}.{uuid.uuid4().hex[:12]}.old"
            _fsync(self.folder / str(entry["temp"]))  # on disk before a rename makes it the file
        present = [n for n in self.removals if (self.folder / n).exists() or (self.folder / n).is_symlink()]
        self.removals = {n: self.removals[n] for n in present}
        self.state = "renaming"
        try:
            self._record()
            for name, backup in self.removals.items():
                os.replace(self.folder / name, self.folder / backup)
            # the first written is the last renamed (as the earlier version's stack did), ``last`` at the very end
            order = [n for n in reversed(self.entries) if n != self.last] + [self.last]
            for name in order:
                entry = self.entries[name]
                if entry["had"]:
                    _keep_as_backup(self.folder / name, self.folder / str(entry["backup"]))
                os.replace(self.folder / str(entry["temp"]), self.folder / name)
            _fsync(self.folder)
            self.state = "done"
            self._record()
        except BaseException:
            with contextlib.suppress(Exception):  # if even this fails, the journal stays: the next run undoes it
                undo_interrupted_replacing(self.folder)
            raise
        _finish(self.folder, self._journal())

    def _journal(self) -> dict:
        return {"state": self.state, "last": self.last, "files": self.entries, "remove": self.removals}

    def _discard(self) -> None:
        """The run stopped while writing: its temporary files and the journal go, the folder is as it was."""
        _finish(self.folder, self._journal())


def _fsync(path: Path) -> None:
    """Flush a file, or a folder's entries (renames), to disk where the system allows (not a folder on Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _keep_as_backup(final: Path, backup: Path) -> None:
    """Keep an earlier file under ``backup`` while this run's replaces it: as a second name (a hard link: the file
    keeps its own until the rename swaps it, so a rename that fails leaves nothing to put back), else moved there
    (a filesystem without hard links: FAT, some network shares)."""
    try:
        os.link(final, backup, follow_symlinks=False)
    except (OSError, NotImplementedError):
        os.replace(final, backup)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _finish(folder: Path, journal: dict) -> None:
    """Delete what a journal's run leaves behind: its temporary files (all of them when it stopped while writing,
    none are left otherwise), its backups once it is done, then the journal itself."""
    for entry in journal["files"].values():
        _unlink(folder / entry["temp"])
        if journal["state"] == "done" and "backup" in entry:
            _unlink(folder / entry["backup"])
    if journal["state"] == "done":
        for backup in journal["remove"].values():
            _unlink(folder / backup)
    _unlink(folder / REPLACING_JOURNAL)


def undo_interrupted_replacing(folder: Path) -> list[str]:
    """Undo a :func:`replacing_together` that was killed in ``folder`` (nothing runs in a killed process: the
    journal it left says what it did). Killed while writing: its temporary files go. Killed while renaming: every
    earlier file is put back, over this run's where one was already renamed, and this run's files where there was
    none go. Killed after renaming (only its cleanup left): its backups go. Returns the names put back."""
    path = folder / REPLACING_JOURNAL
    try:
        journal = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise PromptsegError(
            f"{path}: the journal of a run stopped while replacing its files in {folder} cannot be read ({exc}); "
            "check the folder's files, then delete it"
        ) from exc
    restored = []
    if journal["state"] == "renaming":
        for name, backup in journal["remove"].items():
            if (folder / backup).exists() or (folder / backup).is_symlink():
                os.replace(folder / backup, folder / name)
                restored.append(name)
        for name, entry in journal["files"].items():
            backup, final, temp = folder / entry["backup"], folder / name, folder / entry["temp"]
            replaced = not temp.exists()  # this run's file was renamed to ``name``
            if backup.exists() or backup.is_symlink():
                if not replaced and (final.exists() or final.is_symlink()):
                    _unlink(backup)  # a second name of the earlier file, which still has its own
                else:
                    os.replace(backup, final)  # the earlier file, over this run's if it was renamed already
                    restored.append(name)
            elif replaced and not entry["had"]:
                _unlink(final)  # renamed where no earlier file was
    _finish(folder, journal)
    _fsync(folder)
    return restored


@contextlib.contextmanager
def replacing_together(folder: Path, last: str) -> Iterator[FilesReplacedTogether]:
    """The files of one run, written as :func:`replacing` writes one: ``temp(name)`` is a temporary path beside
    ``folder / name`` to write to (``temp.remove(name)``: an earlier file this run has none of); only when the block
    ends without error do they replace their names, ``last`` (the report that says the others belong to it) after
    all the others. A run stopped while writing (Ctrl+C, a full disk, an error in a later file) leaves the folder's
    earlier files as they were; the temporary files go.

    Several renames are not one step, so each is journaled: before renaming, a journal (:data:`REPLACING_JOURNAL`,
    written whole) lists every file, and each earlier file is kept under a backup name (a hard link, else moved
    there) before this run's takes its name.
    An error at a rename (a file held open by another program) puts every earlier file back at once; a run killed
    between renames (power cut, SIGKILL: nothing of it runs) is undone by the next one into the folder
    (:func:`undo_interrupted_replacing`, called here first; ``promptseg register`` calls it before it reads the
    folder). So the folder ends with this run's files or the earlier ones, never a mix, except to a reader looking
    at the very moment of a kill, before the next run. Backups are deleted once all files are in place."""
    undo_interrupted_replacing(folder)
    together = FilesReplacedTogether(folder, last)
    together(last)  # listed first: renamed after all the others
    try:
        yield together
    except BaseException:
        together._discard()
        raise
    together._commit()


def replacing_temp_of(name: str) -> str | None:
    """The file name a temporary file of :func:`replacing` stood in for (``.state.json.0123456789ab.tmp`` ->
    ``state.json``: left behind by a run killed mid-write), None for any other name."""
    match = _TEMP_NAME.fullmatch(name)
    return match["name"] if match else None


def remove_killed_temporaries(folder: Path, names: set[str]) -> tuple[list[str], int]:
    """Remove the temporary files of :func:`replacing` that a run killed while writing (SIGKILL, the OOM killer, a
    power cut: its cleanup never ran) left in ``folder`` for the files ``names``, each as large as the file it was
    becoming. Only for a caller that alone writes those files there (e.g. holding the folder's lock). Returns their
    names and how many bytes they held."""
    removed, size = [], 0
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return removed, size
    for entry in entries:
        if replacing_temp_of(entry.name) not in names or entry.is_symlink() or not entry.is_file():
            continue
        with contextlib.suppress(OSError):
            held = entry.stat().st_size
            entry.unlink()
            removed.append(entry.name)
            size += held
    return removed, size


def default_file_mode(folder: Path) -> int:
    """The permission bits a file created in ``folder`` by ``open()`` gets (0666 under the umask and the folder's
    default ACL), for files another library made private (pooch's, safetensors')."""
    probe = Path(folder) / f".mode-probe-{uuid.uuid4().hex[:12]}"
    _create_like_open(probe)
    try:
        return probe.stat().st_mode & 0o777
    finally:
        os.unlink(probe)


#: suffixes of a file, not a folder: an output directory not yet made under such a name was meant as a file
FILE_NAME_SUFFIXES = frozenset(
    {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".csv", ".json", ".npy", ".pt", ".pth", ".safetensors"}
)


def ensure_writable_dir(path: Path, what: str, label: str | None = None) -> None:
    """Create the directory ``path`` for ``what`` (e.g. "the outputs"), or say in one line why it cannot be one,
    before any work: a read-only folder says so now, not in a traceback after the first image or epoch. ``label``
    names the folder in the message (default: the path)."""
    label = label or str(path)
    if path.exists() and not path.is_dir():
        raise PromptsegError(f"{label}: a file, not a directory; give a directory for {what}")
    if not path.exists() and path.suffix.lower() in FILE_NAME_SUFFIXES:
        # `-o result.tif` made a folder named result.tif holding result.tif/<stem>.tif: a file was meant
        raise PromptsegError(
            f"{label}: names a file ({path.suffix}), but a directory for {what} is wanted; give a folder, e.g. "
            f"{path.with_suffix('')}"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PromptsegError(f"{label}: cannot create the directory for {what} ({exc.strerror or exc})") from exc
    try:
        tempfile.TemporaryFile(dir=path).close()
    except OSError as exc:
        raise PromptsegError(
            f"{label}: cannot write there ({exc.strerror or exc}); give a writable directory for {what}"
        ) from exc


def files_under(path: Path, skip: tuple[str, ...] = ()) -> list[tuple[str, Path]]:
    """Every file under a directory by its relative name, sorted; lock files, and the top-level folders named in
    ``skip`` (not even listed: an OME-Zarr's labels can be as large as the image), aside."""
    files = []
    for folder, dirs, names in os.walk(path):
        if folder == str(path):
            dirs[:] = [d for d in dirs if d not in skip]
        for name in names:
            file = Path(folder, name)
            if not name.endswith(".lock") and file.is_file():
                files.append((file.relative_to(path).as_posix(), file))
    return sorted(files)


def listing_digest(path: Path, skip: tuple[str, ...] = (), *, moved_in: dict[str, Path] | None = None) -> str:
    """Hash of the names, sizes and modification times of every file under a directory, none of them opened.
    ``moved_in``: the directory as it will be once these files (relative name -> file elsewhere) are renamed into it
    (a rename keeps a file's size and time)."""
    digest = hashlib.blake2b(digest_size=12)
    for name, file in _with_moved_in(files_under(path, skip), moved_in):
        stat = file.stat()
        digest.update(f"{name}\0{stat.st_size}:{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()


def contents_digest(path: Path, *, moved_in: dict[str, Path] | None = None) -> str:
    """Hash of the relative names and bytes of every file under a directory: what it holds, whatever its files'
    times (a copy that keeps none). ``moved_in``: as :func:`listing_digest` takes it."""
    digest = hashlib.blake2b(digest_size=12)
    for name, file in _with_moved_in(files_under(path), moved_in):
        digest.update(name.encode() + b"\0")
        with open(file, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def _with_moved_in(files: list[tuple[str, Path]], moved_in: dict[str, Path] | None) -> list[tuple[str, Path]]:
    """:func:`files_under`'s listing with the files ``moved_in`` (relative name -> file) in place, sorted alike."""
    if not moved_in:
        return files
    return sorted({**dict(files), **moved_in}.items())
