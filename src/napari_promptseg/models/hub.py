"""Hub-hosted models through ``huggingface_hub``: the user's Hugging Face cache first, a download into it otherwise.

huggingface_hub reads ``HF_HOME``/``HF_HUB_CACHE``/``HF_ENDPOINT``/``HF_HUB_OFFLINE`` once, when it is imported; a
napari session (or a test) may set them later, so they are read here at each call and passed explicitly.
"""

from __future__ import annotations

import os
import re
import socket
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: progress(done_bytes, total_bytes or None)
Progress = Callable[[int, int | None], None]


def tell_waiting(progress: Progress, file: str, done: int, total: int | None) -> None:
    """Another process's download of ``file`` (``done`` of ``total`` bytes) told to ``progress``: by its
    ``waiting(file, done, total)`` when it has one (:func:`~napari_promptseg.models.download_progress`'s says
    'waiting for another process's download of FILE'), else as bytes."""
    waiting = getattr(progress, "waiting", None)
    if waiting is not None:
        waiting(file, done, total)
    else:
        progress(done, total)


OFFLINE_ENV = "PROMPTSEG_OFFLINE"
_TRUE = ("1", "on", "yes", "true")


def _is_set(variable: str) -> bool:
    return os.environ.get(variable, "").strip().lower() in _TRUE


def offline() -> bool:
    """No network for weights: ``$PROMPTSEG_OFFLINE``, or the hub's ``$HF_HUB_OFFLINE``/``$TRANSFORMERS_OFFLINE``."""
    return any(_is_set(v) for v in (OFFLINE_ENV, "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def offline_variable() -> str:
    """The variable that made us offline, for the error message."""
    return next(v for v in (OFFLINE_ENV, "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if _is_set(v))


#: seconds to wait for the hub's host to accept a connection before calling the network absent
PROBE_TIMEOUT_S = 3.0
#: seconds a failed probe is remembered (a napari session may get its network back)
PROBE_MEMORY_S = 60.0
_failed_probes: dict[tuple[str, int], tuple[float, str]] = {}


def unreachable_reason(url: str | None = None) -> str | None:
    """Why the host of ``url`` (default: the hub, :func:`endpoint`) cannot be reached now (its name does not
    resolve, or its first address accepts no connection within :data:`PROBE_TIMEOUT_S`), else None; behind a
    proxy set for the URL (``$HTTPS_PROXY`` & co., ``$NO_PROXY`` honoured) the proxy is what is probed.
    huggingface_hub 2.x retries a failed metadata request for up to a minute before it gives up, pooch a few
    seconds: without a network, `promptseg text` waited 66 s for two models it could not fetch anyway. A failure
    is remembered per host for :data:`PROBE_MEMORY_S`."""
    parts = urllib.parse.urlsplit(url or endpoint())
    via = ""
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        via = "the proxy "
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    now = time.monotonic()
    failed = _failed_probes.get((host, port))
    if failed is not None and now - failed[0] < PROBE_MEMORY_S:
        return failed[1]
    try:
        address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(address[0], address[1], address[2]) as sock:
            sock.settimeout(PROBE_TIMEOUT_S)
            sock.connect(address[4])
    except OSError as exc:
        reason = f"no connection to {via}{host}:{port}: {exc.strerror or exc}"
        _failed_probes[(host, port)] = (now, reason)
        return reason
    _failed_probes.pop((host, port), None)
    return None


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache as huggingface_hub computes it (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
    ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``), from the environment of now."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def repo_folder(repo_id: str) -> Path:
    """Where the cache keeps ``repo_id`` (huggingface_hub's ``models--owner--name`` layout)."""
    return hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))


def stopped_downloads(repo_id: str) -> list[Path]:
    """The partial files stopped downloads of ``repo_id`` left in the cache (huggingface_hub's
    ``blobs/*.incomplete``): a model with them was listed as missing, as if nothing had been fetched."""
    try:
        return sorted(p for p in (repo_folder(repo_id) / "blobs").glob("*.incomplete") if p.is_file())
    except OSError:
        return []


def download_lock_file(incomplete: Path) -> Path:
    """The lock huggingface_hub holds while it writes ``incomplete`` (``<etag>[.<nonce>].incomplete`` in a
    repository's blobs): ``.locks/<repository folder>/<etag>.lock`` in the cache."""
    repo = incomplete.parent.parent
    return repo.parent / ".locks" / repo.name / f"{incomplete.name.split('.')[0]}.lock"


def resumes_stopped_downloads() -> bool:
    """Whether the installed huggingface_hub goes on from a stopped download's partial file: before 1.18 it resumed
    ``<etag>.incomplete``; since then each download writes a file of its own (``<etag>.<nonce>.incomplete``),
    removed when it fails, and one a killed process left is never resumed nor removed (huggingface_hub#4196)."""
    from huggingface_hub import __version__

    numbers = tuple(int(part) for part in re.findall(r"\d+", __version__)[:2])
    return numbers < (1, 18)


@dataclass(frozen=True)
class HubRef:
    """``owner/name`` at ``revision``, and for a single-file checkpoint its file in the repository."""

    repo_id: str
    revision: str = "main"
    file: str | None = None


_HUB_ID = re.compile(r"(?:hf://)?(?P<repo>[\w.-]+/[\w.-]+)(?:/(?P<file>[\w./-]+?))?(?:@(?P<rev>[\w./-]+))?")


def parse_hub_id(text: str) -> HubRef | None:
    """``owner/name[/file][@revision]`` (optionally ``hf://``-prefixed), or None when ``text`` is not one."""
    match = _HUB_ID.fullmatch(text.strip())
    if match is None or ".." in text:
        return None
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:  # a relative path such as ./models/sam.pth is no repository: huggingface_hub's refusal was a traceback
        validate_repo_id(match["repo"])
    except HFValidationError:
        return None
    return HubRef(match["repo"], match["rev"] or "main", match["file"])


def cached_snapshot(
    repo_id: str, revision: str, files: Sequence[str], required: Sequence[str]
) -> tuple[Path | None, list[str]]:
    """The cached snapshot of ``repo_id`` at ``revision`` (a commit, or a branch the cache has a ref for) when it
    holds every ``required`` file, else None; and the other listed files it lacks (a file the hub said does not
    exist is not lacking)."""
    from huggingface_hub import try_to_load_from_cache

    snapshot, lacking = None, []
    for file in files:
        found = try_to_load_from_cache(repo_id, file, cache_dir=hf_cache_dir(), revision=revision)
        if isinstance(found, str):
            snapshot = _snapshot_of(Path(found), file)
        elif file in required:
            return None, []
        elif found is None:
            lacking.append(file)
    return snapshot, lacking


def _snapshot_of(path: Path, file: str) -> Path:
    """The snapshot directory of a cached ``file`` (which may sit in a subfolder, e.g. ``1_Pooling/config.json``)."""
    return path.parents[file.count("/")]


def download_snapshot(
    repo_id: str, revision: str, files: Sequence[str], required: Sequence[str], progress: Progress | None = None
) -> Path:
    """Fetch the files into the Hugging Face cache (files already there are not fetched again; optional files the
    repository does not have are skipped) and return the snapshot directory. Raises what huggingface_hub raises."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    snapshot = None
    for file in files:
        if progress is not None:
            wait_for_anothers_download(repo_id, revision, file, progress)
        try:
            path = hf_hub_download(
                repo_id,
                file,
                revision=revision,
                cache_dir=hf_cache_dir(),
                endpoint=endpoint(),
                tqdm_class=_reporting_bar(progress),
            )
        except RemoteEntryNotFoundError:
            if file in required:
                raise
            continue  # e.g. a tokenizer file this checkpoint saves under another name: the adapter checks
        snapshot = _snapshot_of(Path(path), file)
    if snapshot is None:
        raise FileNotFoundError(f"none of {', '.join(files)} is in {repo_id}@{revision}")
    return snapshot


def wait_for_anothers_download(repo_id: str, revision: str, file: str, progress: Progress) -> None:
    """Wait here, telling ``progress`` once a second (:func:`tell_waiting`: the bytes of the other's
    ``.incomplete`` file, of the file's size), while another process (a batch's worker, napari beside a CLI run)
    downloads ``file`` into the cache: huggingface_hub waits for that download's lock itself, silently and past any
    Cancel (a cancelled task's ``progress`` raises here). The hub is asked for the file's ETag (its lock's name)
    only when a lock of the repository is held; the lock is let go at once, for hf_hub_download to take."""
    from filelock import FileLock, Timeout
    from huggingface_hub import try_to_load_from_cache

    locks = hf_cache_dir() / ".locks" / repo_folder(repo_id).name
    if not any(_held(lock) for lock in _listed(locks, "*.lock")):
        return
    if isinstance(try_to_load_from_cache(repo_id, file, cache_dir=hf_cache_dir(), revision=revision), str):
        return  # here already: nothing to wait for
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    try:
        metadata = get_hf_file_metadata(hf_hub_url(repo_id, file, revision=revision, endpoint=endpoint()))
    except Exception:  # noqa: BLE001 - the download that follows says what is wrong
        return
    if not metadata.etag:
        return
    lock = FileLock(locks / f"{metadata.etag}.lock")
    blobs = repo_folder(repo_id) / "blobs"
    while True:
        try:
            lock.acquire(timeout=1.0)
        except Timeout:
            # <etag>.incomplete before huggingface_hub 1.18, <etag>.<nonce>.incomplete since
            done = max((p.stat().st_size for p in _listed(blobs, f"{metadata.etag}*.incomplete")), default=0)
            tell_waiting(progress, file, done, metadata.size)
            continue
        except OSError:  # a lock that cannot be opened here: huggingface_hub's own wait decides
            return
        lock.release()
        return


def _listed(folder: Path, pattern: str) -> list[Path]:
    try:
        return list(folder.glob(pattern))
    except OSError:
        return []


def _held(lock_file: Path) -> bool:
    """Whether another process (or another thread's lock) holds ``lock_file`` now."""
    from filelock import FileLock, Timeout

    try:
        with FileLock(lock_file, timeout=0):
            return False
    except Timeout:
        return True
    except OSError:
        return False


def http_cause(exc: BaseException) -> BaseException:
    """The hub's HTTP error under ``exc`` when there is one: huggingface_hub raises a server's 500 or 503 (after its
    retries) as 'cannot find the requested files in the local cache. Please check your connection', which sent users
    to a connection that worked."""
    from huggingface_hub.errors import HfHubHTTPError

    seen, cause = set(), exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, HfHubHTTPError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return exc


def _reporting_bar(progress: Progress | None):
    """huggingface_hub's own progress bar, also reporting to ``progress`` (None: the plain bar)."""
    if progress is None:
        return None
    from huggingface_hub.utils import tqdm as hub_tqdm

    class ReportingBar(hub_tqdm):
        done = 0

        def update(self, n: float | None = 1) -> bool | None:
            self.done += int(n or 0)  # counted here: a disabled tqdm (HF_HUB_DISABLE_PROGRESS_BARS) counts nothing
            progress(self.done, int(self.total) if self.total else None)
            return super().update(n)

    return ReportingBar
