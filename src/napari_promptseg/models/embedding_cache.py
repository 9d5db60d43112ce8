"""On-disk embedding cache (zarr), under the in-memory one: a new process, a Dask worker or a widget reuses what
any of them computed.

One entry per key (image content + model + preprocessing, :func:`.cache.content_key`): a zarr array of the features
with attributes that say what made them. Reading checks the **signature** (format version, model name, a fingerprint
of the encoder's weights, input size, pixel statistics, normalisation, encoder variant) and a CRC of the bytes: a
stale entry (other weights under the same name, an older format), a foreign one (copied in from elsewhere) or a
damaged one is refused, recomputed and replaced. Writers build an entry in ``tmp/`` and rename it into place (atomic
on one filesystem), so concurrent writers of one key never mix their files and readers never see half an entry.
The size cap evicts the least recently used entries (a hit refreshes the entry's time).

Where: ``--cache DIR`` (CLI), :func:`configure`, or ``$PROMPTSEG_EMBEDDING_CACHE`` (``default`` means
:func:`default_location`); the cap is ``$PROMPTSEG_EMBEDDING_CACHE_GB`` (default 10 GB). Unset: no disk cache.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: bump when the layout or the meaning of an entry changes: older entries are then refused and recomputed
FORMAT_VERSION = 1
CACHE_ENV = "PROMPTSEG_EMBEDDING_CACHE"
MAX_GB_ENV = "PROMPTSEG_EMBEDDING_CACHE_GB"
DEFAULT_MAX_GB = 10.0
#: a temporary entry older than this was left by a writer that died
STALE_TEMP_S = 3600.0
#: the cap is checked again after this fraction of it was written by this process (a full scan costs a stat per
#: entry; the cap may be exceeded by this much per writing process in between)
SCAN_FRACTION = 0.05


def default_location() -> Path:
    """``<user cache dir>/embeddings``, beside the weights cache (``$PROMPTSEG_CACHE_DIR`` moves both)."""
    from .registry import cache_dir

    return cache_dir().parent / "embeddings"


class DiskEmbeddingCache:
    """Embeddings as zarr arrays under ``root``, at most ``max_bytes`` (least recently used evicted first)."""

    def __init__(self, root: str | os.PathLike, max_bytes: int | None = None) -> None:
        import zarr  # noqa: F401 - imported with the cache, not on the first (interactive) hit

        self.root = Path(root).expanduser().absolute()
        self.max_bytes = int(DEFAULT_MAX_GB * 1e9 if max_bytes is None else max_bytes)
        self.hits = self.misses = self.refused = self.stored = self.evicted = 0
        self._written_since_scan: int | None = None  # None: scan on the next store
        self._write_warned = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DiskEmbeddingCache({str(self.root)!r}, max_bytes={self.max_bytes})"

    def entry_path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.zarr"

    # -- read ------------------------------------------------------------------------------------------------
    def load(self, key: str, signature: dict, device=None):
        """The :class:`~.protocols.Embedding` stored under ``key`` when its signature and bytes check out, else
        None (a refused entry is counted in ``refused`` and replaced by the next :meth:`store`)."""
        import torch

        from .preprocessing import ResizeTransform
        from .protocols import Embedding

        path = self.entry_path(key)
        if not (path / "zarr.json").is_file():
            self._count("misses")
            return None
        try:
            features, attrs = _read_entry(path)
            ok = attrs.get("key") == key and attrs.get("signature") == _canonical(signature, FORMAT_VERSION)
            ok = ok and features.nbytes == attrs.get("nbytes") and _crc(features) == attrs.get("crc32")
        except Exception:  # noqa: BLE001 - damaged metadata, a chunk evicted or replaced while reading: refuse
            ok = False
        if not ok:
            self._count("refused")
            return None
        _touch(path)
        self._count("hits")
        tensor = torch.from_numpy(features)
        return Embedding(
            features=tensor if device is None else tensor.to(device),
            transform=ResizeTransform(tuple(attrs["original_shape"]), int(attrs["input_size"])),
            model_name=attrs["model_name"],
            key=key,
        )

    def __contains__(self, key: str) -> bool:
        return (self.entry_path(key) / "zarr.json").is_file()

    # -- write -----------------------------------------------------------------------------------------------
    def store(self, embedding, signature: dict) -> Path | None:
        """Write ``embedding`` under its key (atomically; a valid entry another process placed first is kept).
        A cache that cannot be written (read-only, disk full) is logged and skipped: the embedding is still used."""
        try:
            return self._store(embedding, signature)
        except OSError as exc:
            if not self._write_warned:
                logger.warning("embedding cache %s cannot be written (%s); going on without storing", self.root, exc)
                self._write_warned = True
            return None

    def _store(self, embedding, signature: dict) -> Path:
        import zarr

        features = np.ascontiguousarray(embedding.features.detach().cpu().numpy())
        attrs = {
            "key": embedding.key,
            "signature": _canonical(signature, FORMAT_VERSION),
            "model_name": embedding.model_name,
            "original_shape": list(embedding.transform.original_shape),
            "input_size": int(embedding.transform.input_size),
            "nbytes": int(features.nbytes),
            "crc32": _crc(features),
            "created": time.time(),
        }
        final = self.entry_path(embedding.key)
        temp = self.root / "tmp" / f"{embedding.key}.{os.getpid()}.{uuid.uuid4().hex}.zarr"
        temp.parent.mkdir(parents=True, exist_ok=True)
        try:
            array = zarr.create_array(
                temp, shape=features.shape, dtype=features.dtype, chunks=features.shape, compressors=None
            )
            array[...] = features
            array.attrs.update(attrs)
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():
                if _valid(final, attrs):
                    return final  # another writer was first with the same features
                self._discard(final)  # stale, foreign or damaged: replaced
            with contextlib.suppress(OSError):  # a concurrent writer renamed its copy into place first: keep it
                os.rename(temp, final)
        finally:
            if temp.exists():
                shutil.rmtree(temp, ignore_errors=True)
        self._count("stored")
        self._after_write(features.nbytes)
        return final

    # -- size cap --------------------------------------------------------------------------------------------
    def entries(self) -> list[tuple[float, int, Path]]:
        """(last access time, bytes, path) of every entry, oldest first."""
        out = []
        for sub in _subdirs(self.root):
            if sub.name == "tmp" or sub.name == "trash":
                continue
            for entry in _subdirs(sub):
                try:
                    used = (entry / "zarr.json").stat().st_mtime
                    size = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
                except OSError:  # evicted or replaced by another process meanwhile
                    continue
                out.append((used, size, entry))
        return sorted(out)

    def size_bytes(self) -> int:
        return sum(size for _, size, _ in self.entries())

    def evict(self) -> int:
        """Remove least recently used entries until the cache fits its cap, and temporaries of dead writers;
        returns the number of entries removed."""
        now = time.time()
        for temp in _subdirs(self.root / "tmp"):
            try:
                if now - temp.stat().st_mtime > STALE_TEMP_S:
                    shutil.rmtree(temp, ignore_errors=True)
            except OSError:
                pass
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        removed = 0
        for _, size, path in entries:
            if total <= self.max_bytes:
                break
            self._discard(path)
            total -= size
            removed += 1
        self._count("evicted", removed)
        return removed

    def _after_write(self, nbytes: int) -> None:
        with self._lock:
            written = None if self._written_since_scan is None else self._written_since_scan + nbytes
            scan = written is None or written >= SCAN_FRACTION * self.max_bytes
            self._written_since_scan = 0 if scan else written
        if scan:
            self.evict()

    def _discard(self, path: Path) -> None:
        """Move an entry out of the way (atomic), then delete it: a reader sees all of it or none."""
        trash = self.root / "trash" / f"{path.name}.{uuid.uuid4().hex}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(path, trash)
        except OSError:  # already moved by another process
            return
        shutil.rmtree(trash, ignore_errors=True)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)


def _read_entry(path: Path) -> tuple[np.ndarray, dict]:
    import zarr

    array = zarr.open_array(path, mode="r")
    return np.ascontiguousarray(array[...]), array.attrs.asdict()


def _valid(path: Path, attrs: dict) -> bool:
    try:
        features, stored = _read_entry(path)
    except Exception:  # noqa: BLE001 - unreadable counts as invalid
        return False
    same = {k: stored.get(k) for k in ("key", "signature", "nbytes", "crc32")} == {
        k: attrs[k] for k in ("key", "signature", "nbytes", "crc32")
    }
    return same and _crc(features) == attrs["crc32"]


def _crc(features: np.ndarray) -> int:
    return zlib.crc32(memoryview(np.ascontiguousarray(features)).cast("B"))


def _canonical(signature: dict, version: int) -> dict:
    """The signature as it reads back from JSON (tuples become lists), with the format version."""
    return json.loads(json.dumps({"format": version, "package": "napari-promptseg", **signature}, sort_keys=True))


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):  # evicted meanwhile: the features are already read
        os.utime(path / "zarr.json")


def _subdirs(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if p.is_dir()]
    except OSError:
        return []


# -- the process-wide cache every segmenter uses -----------------------------------------------------------------
_configured: DiskEmbeddingCache | None = None
_explicit = False
_from_env: tuple[tuple[str, str], DiskEmbeddingCache | None] | None = None
_config_lock = threading.Lock()


def configure(root: str | os.PathLike | None, max_gb: float | None = None) -> DiskEmbeddingCache | None:
    """Use the disk cache at ``root`` in this process (``"default"``: :func:`default_location`); ``None`` goes back
    to ``$PROMPTSEG_EMBEDDING_CACHE``. Returns the cache now in use."""
    global _configured, _explicit
    with _config_lock:
        if root is None:
            _configured, _explicit = None, False
        else:
            _configured, _explicit = _open(str(root), max_gb), True
    return active()


def active() -> DiskEmbeddingCache | None:
    """The disk cache segmenters read and write now: the configured one, else the environment's, else None."""
    global _from_env
    with _config_lock:
        if _explicit:
            return _configured
        env = (os.environ.get(CACHE_ENV, "").strip(), os.environ.get(MAX_GB_ENV, "").strip())
        if _from_env is None or _from_env[0] != env:
            _from_env = (env, _open(env[0], float(env[1]) if env[1] else None) if env[0] else None)
        return _from_env[1]


@contextmanager
def settings_restored() -> Iterator[None]:
    """Put this process's disk-cache setting back on exit (a CLI run inside the console or a test)."""
    global _configured, _explicit
    with _config_lock:
        saved = (_configured, _explicit)
    try:
        yield
    finally:
        with _config_lock:
            _configured, _explicit = saved


def _open(root: str, max_gb: float | None) -> DiskEmbeddingCache:
    path = default_location() if root == "default" else Path(root)
    return DiskEmbeddingCache(path, None if max_gb is None else int(max_gb * 1e9))
