"""A single-file checkpoint's download that resumes: the bytes go to ``<file>.part`` beside the target, kept when
the connection drops, the run is cancelled or the process dies, and the next attempt (a retry, or the next run)
asks the server for the rest with ``Range: bytes=N-``. A server that answers 200 instead of 206 sends the whole
file again; the whole file is checked against the card's size and sha256 before it takes the target's name, so a
partial or corrupt file is never under the final name. pooch started again from byte 0 each time: a SAM ViT-H
(2.5 GB) over a link that drops every few minutes never arrived."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import time
from pathlib import Path

from ..disk_errors import NO_SPACE
from .hub import Progress

#: the partial download's name: the target's plus this
PARTIAL_SUFFIX = ".part"
#: bytes read (and written, and told to ``progress``) at a time
CHUNK = 1 << 20
#: seconds to wait for a connection, and for the next bytes of a stalled one
TIMEOUTS = (10.0, 60.0)
#: seconds before the first retry (doubling): a network that dropped needs a moment
RETRY_WAIT_S = 1.0


class CorruptDownload(ValueError):
    """The whole file arrived but is not the published one (its size or sha256)."""


class NoSpace(OSError):
    """The disk of the cache has no room for the rest of the download (found before it or while writing)."""

    def __init__(self, folder: Path, needed: int, free: int | None, partial: Path) -> None:
        super().__init__(errno.ENOSPC, "no space left on device")
        self.folder, self.needed, self.free, self.partial = folder, needed, free, partial


def partial_path(target: Path) -> Path:
    return target.with_name(target.name + PARTIAL_SUFFIX)


def partial_size(target: Path) -> int:
    """Bytes of ``target``'s partial download on disk (0: none)."""
    try:
        return partial_path(target).stat().st_size
    except OSError:
        return 0


def download(
    url: str,
    target: Path,
    *,
    size: int | None,
    sha256: str | None,
    progress: Progress | None = None,
    retries: int = 2,
) -> None:
    """Fetch ``url`` to ``target`` through its partial file, resuming it, retried ``retries`` times when the
    connection fails (each retry resumes) or the file arrives corrupt (the partial then goes: the retry starts at 0).
    Raises :class:`CorruptDownload`, :class:`NoSpace`, or the network's error (``requests``' are OSErrors); a
    :class:`~..errors.CancelledError` from ``progress`` stops it, its partial kept for the next run."""
    import requests

    part = partial_path(target)
    for attempt in range(retries + 1):
        try:
            _fetch_rest(url, part, size, progress, requests)
            problem = _mismatch(part, size, sha256)
            if problem is None:
                os.replace(part, target)
                return
            part.unlink(missing_ok=True)  # a resumed prefix of other bytes, or a corrupt file: start again
            error: Exception = CorruptDownload(problem)
        except (requests.RequestException, ConnectionError, TimeoutError) as exc:
            error = exc  # the partial stays: the retry resumes it
        if attempt == retries:
            raise error
        time.sleep(min(2**attempt, 10) * RETRY_WAIT_S)


def _fetch_rest(url: str, part: Path, size: int | None, progress: Progress | None, requests) -> None:
    """Append the bytes ``part`` lacks (all of them when the server ignores the range)."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:  # more than the file: not a prefix of it
        part.unlink()
        offset = 0
    if size is not None and offset == size:
        return  # all there (a run stopped between the last byte and the rename): checked next
    if size is not None:
        _check_room(part, size - offset)
    # identity: the range counts the file's own bytes, not a compressed stream's
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with requests.get(url, headers=headers, stream=True, timeout=TIMEOUTS) as response:
        if response.status_code == 416:  # nothing from there: the partial is not this file's prefix
            part.unlink(missing_ok=True)
            return _fetch_rest(url, part, size, progress, requests)  # from 0, without a range
        response.raise_for_status()
        resumed = response.status_code == 206 and _range_start(response) == offset
        if not resumed:
            offset = 0  # 200: the whole file (the server does not do ranges, or the file changed)
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else size
        if size is None:
            _check_room(part, (total or 0) - offset)
        done = offset
        with open(part, "ab" if resumed else "wb") as out:
            for chunk in response.iter_content(CHUNK):
                try:
                    out.write(chunk)
                    out.flush()
                except OSError as exc:
                    if exc.errno in NO_SPACE:
                        raise NoSpace(part.parent, (total or done) - done, 0, part) from exc
                    raise
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        if total is not None and done < total:  # the connection closed early without an error from below
            raise requests.ConnectionError(f"the connection closed after {done:,} of {total:,} bytes")


def _range_start(response) -> int | None:
    found = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(found[1]) if found else None


def _check_room(part: Path, needed: int) -> None:
    """Refuse before fetching when the cache's disk cannot take the rest (it failed minutes in, at 'no space')."""
    try:
        free = shutil.disk_usage(part.parent).free
    except OSError:  # not told: the writes will say
        return
    if needed > free:
        raise NoSpace(part.parent, needed, free, part)


def _mismatch(path: Path, size: int | None, sha256: str | None) -> str | None:
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        return f"{actual_size:,} bytes, expected {size:,}"
    if sha256 is None:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(CHUNK):
            digest.update(block)
    actual = digest.hexdigest()
    return None if actual == sha256 else f"sha256 {actual}, expected {sha256}"
