"""Files written whole or not at all."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (a dot file) to write to; when the block ends without error it replaces
    ``path`` in one step, so a reader, or a run killed mid-write, finds the old file or the new one, never half of
    one. On error the temporary file goes and ``path`` is untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # created as open() creates a file (mode 0666 under the umask and the folder's default ACL), not mkstemp's
    # private 0600: a lab's shared results folder stays readable to the others
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):  # already renamed into place when the block succeeded
            os.unlink(tmp)


def default_file_mode(folder: Path) -> int:
    """The permission bits a file created in ``folder`` by ``open()`` gets (0666 under the umask and the folder's
    default ACL), for files another library made private (pooch's, safetensors')."""
    probe = Path(folder) / f".mode-probe-{uuid.uuid4().hex[:12]}"
    os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        return probe.stat().st_mode & 0o777
    finally:
        os.unlink(probe)
