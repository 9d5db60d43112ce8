"""Files written whole or not at all, and the folders they go to."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

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
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):  # already renamed into place when the block succeeded
            os.unlink(tmp)


@contextlib.contextmanager
def replacing_together(folder: Path, last: str) -> Iterator[Callable[[str], Path]]:
    """The files of one run, written as :func:`replacing` writes one: ``temp(name)`` is a temporary path beside
    ``folder / name`` to write to; only when the block ends without error does each replace its name, ``last`` (the
    report that says the others belong to it) after all the others. A run stopped while writing (Ctrl+C, a full disk,
    an error in a later file) leaves the folder's earlier files as they were, not some of this run's beside an
    earlier run's report; the temporary files go."""
    temps: dict[str, Path] = {}
    with contextlib.ExitStack() as stack:

        def temp(name: str) -> Path:
            if name not in temps:
                temps[name] = stack.enter_context(replacing(folder / name))
            return temps[name]

        temp(last)  # the first entered is the last renamed: the stack is left in reverse
        yield temp


def replacing_temp_of(name: str) -> str | None:
    """The file name a temporary file of :func:`replacing` stood in for (``.state.json.0123456789ab.tmp`` ->
    ``state.json``: left behind by a run killed mid-write), None for any other name."""
    match = _TEMP_NAME.fullmatch(name)
    return match["name"] if match else None


def default_file_mode(folder: Path) -> int:
    """The permission bits a file created in ``folder`` by ``open()`` gets (0666 under the umask and the folder's
    default ACL), for files another library made private (pooch's, safetensors')."""
    probe = Path(folder) / f".mode-probe-{uuid.uuid4().hex[:12]}"
    _create_like_open(probe)
    try:
        return probe.stat().st_mode & 0o777
    finally:
        os.unlink(probe)


def ensure_writable_dir(path: Path, what: str, label: str | None = None) -> None:
    """Create the directory ``path`` for ``what`` (e.g. "the outputs"), or say in one line why it cannot be one,
    before any work: a read-only folder says so now, not in a traceback after the first image or epoch. ``label``
    names the folder in the message (default: the path)."""
    label = label or str(path)
    if path.exists() and not path.is_dir():
        raise PromptsegError(f"{label}: a file, not a directory; give a directory for {what}")
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


def listing_digest(path: Path, skip: tuple[str, ...] = ()) -> str:
    """Hash of the names, sizes and modification times of every file under a directory, none of them opened."""
    digest = hashlib.blake2b(digest_size=12)
    for name, file in files_under(path, skip):
        stat = file.stat()
        digest.update(f"{name}\0{stat.st_size}:{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()
