"""Files written whole or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

# the process's umask, read once at import (reading it means setting it); new files get the mode open() would give
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (a dot file) to write to; when the block ends without error it replaces
    ``path`` in one step, so a reader, or a run killed mid-write, finds the old file or the new one, never half of
    one. On error the temporary file goes and ``path`` is untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp made it private (0600); open() would have given this mode
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):  # already renamed into place when the block succeeded
            os.unlink(tmp)
