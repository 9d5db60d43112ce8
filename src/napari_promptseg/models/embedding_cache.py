"""On-disk embedding cache (zarr), under the in-memory one: a new process, a Dask worker or a widget reuses what
any of them computed.

One entry per key (image content + model, its encoder's weights and preprocessing, :func:`.cache.content_key`): a
zarr group whose attributes say what made it, holding the ``features`` and, optionally, the ``decoder_context``: the
decoder's prompt-independent work on those features (:func:`.sam_decoder_fast.image_context`), so that the first
prompt on a cached image in a new process decodes as fast as the next ones. A fine-tuned checkpoint under a bundled
model's name thus has entries of its own beside the bundled one's. Reading checks the **signature** (format version,
model name, a fingerprint of the encoder's weights, input size, pixel statistics, normalisation, encoder variant) and a
CRC of the bytes: a foreign entry (copied in from elsewhere), one of an older format or a damaged one is refused,
recomputed and replaced. The context has its own signature (a fingerprint of the decoder's weights): a context made by
another decoder is refused and recomputed, the features are still served.
Writers build an entry in ``tmp/`` and rename it into place (atomic on one filesystem), so concurrent writers of one
key never mix their files and readers never see half an entry. The size cap evicts the least recently used entries
(a hit refreshes the entry's time), when the cache is opened and as it is written.

Entries are written with zarr (readable by any zarr reader) as one uncompressed chunk per array and read back by
:func:`_read_array` straight from that chunk: zarr's first read in a process costs ~10 ms of set-up, the raw read of
4 MB ~1 ms, and the first mask on a cached image is what the cache is for.

Where: ``--cache DIR`` (CLI), :func:`configure`, or ``$PROMPTSEG_EMBEDDING_CACHE`` (``default`` means
:func:`default_location`); the cap is ``--cache-max-gb`` or :func:`configure`'s, else
``$PROMPTSEG_EMBEDDING_CACHE_GB`` (default 10 GB), wherever the cache is (:func:`cap_setting`). No cache named: no
disk cache.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import PromptsegError

logger = logging.getLogger(__name__)

#: bump when the layout or the meaning of an entry changes: older entries are then refused and recomputed
FORMAT_VERSION = 3
FEATURES = "features"
CONTEXT = "decoder_context"
CACHE_ENV = "PROMPTSEG_EMBEDDING_CACHE"
MAX_GB_ENV = "PROMPTSEG_EMBEDDING_CACHE_GB"
DEFAULT_MAX_GB = 10.0
#: a temporary entry older than this was left by a writer that died
STALE_TEMP_S = 3600.0
#: what the cache itself writes under its root: ``<key[:2]>/<key>.zarr`` entries and ``tmp/<key>.<pid>.<uuid>.zarr``
#: temporaries (keys: :func:`.cache.content_key`, 32 hex digits). Only these are counted, evicted or cleaned up: a
#: cache directory given where the user keeps other files (their OME-Zarr images...) must not lose them to the cap
_ENTRY_NAME = re.compile(r"([0-9a-f]{2})[0-9a-f]{30}\.zarr")
_TEMP_NAME = re.compile(r"[0-9a-f]{32}\.[0-9]+\.[0-9a-f]{32}\.zarr")
#: an entry :meth:`DiskEmbeddingCache._discard` moved aside to delete it: ``trash/<key>.zarr.<uuid>``
_TRASH_NAME = re.compile(r"[0-9a-f]{32}\.zarr\.[0-9a-f]{32}")
#: the cap is checked again after this fraction of it was written by this process (a full scan costs a stat per
#: entry; the cap may be exceeded by this much per writing process in between)
SCAN_FRACTION = 0.05


def default_location() -> Path:
    """``<user cache dir>/embeddings``, beside the weights cache (``$PROMPTSEG_CACHE_DIR`` moves both)."""
    from .registry import cache_dir

    return cache_dir().parent / "embeddings"


class DiskEmbeddingCache:
    """Embeddings as zarr arrays under ``root``, at most ``max_bytes`` (least recently used evicted first)."""

    def __init__(self, root: str | os.PathLike, max_bytes: int | None = None, *, fit_cap: bool = True) -> None:
        """``fit_cap=False``: look only (``promptseg cache`` lists a cache without evicting from it)."""
        import zarr  # noqa: F401 - imported with the cache, not on the first store (reads do not use it)

        self.root = Path(root).expanduser().absolute()
        self.max_bytes = int(DEFAULT_MAX_GB * 1e9 if max_bytes is None else max_bytes)
        self.hits = self.misses = self.refused = self.stored = self.evicted = 0
        self.context_refused = 0  # contexts made by another decoder (the features were served)
        self._written_since_scan: int | None = None  # None: scan on the next store
        self._write_warned = False
        #: what the last failed write met (a full disk passes write_problem's probe: an empty folder still fits)
        self._write_error: str | None = None
        self._lock = threading.Lock()
        if fit_cap:
            self._fit_cap_on_open()

    def _fit_cap_on_open(self) -> None:
        """Evict down to the cap now: a cache opened with a smaller cap than it holds (``--cache-max-gb``,
        :func:`configure`) would otherwise stay over it until this process's first write, or for good in a
        process that only reads."""
        if not self.root.is_dir():
            return
        try:
            self.evict()
        except OSError as exc:  # a read-only cache: it is read as it is
            logger.warning("embedding cache %s cannot be brought under its cap (%s)", self.root, exc)
            return
        self._written_since_scan = 0  # just scanned

    def __repr__(self) -> str:
        return f"DiskEmbeddingCache({str(self.root)!r}, max_bytes={self.max_bytes})"

    def entry_path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.zarr"

    # -- read ------------------------------------------------------------------------------------------------
    def load(self, key: str, signature: dict, device=None):
        """The :class:`~.protocols.Embedding` stored under ``key`` when its signature and bytes check out, else
        None (a refused entry is counted in ``refused`` and replaced by the next :meth:`store`)."""
        found = self.load_with_context(key, signature, None, device)
        return None if found is None else found[0]

    def load_with_context(self, key: str, signature: dict, context_signature: dict | None, device=None):
        """(embedding, decoder context or None) stored under ``key``, or None as :meth:`load`. The context is
        returned when its signature equals ``context_signature``; one made by another decoder is counted in
        ``context_refused`` (the features are still served). A damaged context refuses the whole entry."""
        import torch

        from .preprocessing import ResizeTransform
        from .protocols import Embedding

        path = self.entry_path(key)
        if not (path / "zarr.json").is_file():
            self._count("misses")
            return None
        context = None
        try:
            attrs = _read_node(path, "group")["attributes"]
            ok = attrs.get("key") == key and attrs.get("signature") == _canonical(signature, FORMAT_VERSION)
            features = _read_array(path / FEATURES, key)[0] if ok else None
            if ok and context_signature is not None and (path / CONTEXT / "zarr.json").is_file():
                context, context_attrs = _read_array(path / CONTEXT, key)
                if context_attrs.get("signature") != _canonical(context_signature, FORMAT_VERSION):
                    context = None
                    self._count("context_refused")
        except Exception:  # noqa: BLE001 - damaged metadata, a chunk evicted or replaced while reading: refuse
            ok = False
        if not ok:
            self._count("refused")
            return None
        _touch(path)
        self._count("hits")
        tensors = [None if a is None else torch.from_numpy(a) for a in (features, context)]
        if device is not None:
            tensors = [None if t is None else t.to(device) for t in tensors]
        embedding = Embedding(
            features=tensors[0],
            transform=ResizeTransform(tuple(attrs["original_shape"]), int(attrs["input_size"])),
            model_name=attrs["model_name"],
            key=key,
        )
        return embedding, tensors[1]

    def __contains__(self, key: str) -> bool:
        return (self.entry_path(key) / "zarr.json").is_file()

    # -- write -----------------------------------------------------------------------------------------------
    def store(self, embedding, signature: dict, context=None, context_signature: dict | None = None) -> Path | None:
        """Write ``embedding`` under its key, with the decoder ``context`` (a tensor) made by the decoder that
        ``context_signature`` describes (atomically; a valid entry another process placed first is kept).
        A cache that cannot be written (read-only, disk full) is logged and skipped: the embedding is still used."""
        try:
            return self._store(embedding, signature, context, context_signature)
        except OSError as exc:
            self._write_error = f"{self.root}: {exc.strerror or exc}"  # for the folder: the entry's name is random
            if not self._write_warned:
                logger.warning("embedding cache %s cannot be written (%s); going on without storing", self.root, exc)
                self._write_warned = True
            return None

    def _store(self, embedding, signature: dict, context, context_signature: dict | None) -> Path:
        import zarr

        arrays = {FEATURES: (_as_array(embedding.features), {})}
        if context is not None:
            if context_signature is None:
                raise ValueError("a decoder context is stored with the signature of the decoder that made it")
            arrays[CONTEXT] = (_as_array(context), {"signature": _canonical(context_signature, FORMAT_VERSION)})
        for array, array_attrs in arrays.values():
            # the entry's key in every array too: arrays moved between entries are another image's features
            array_attrs.update(key=embedding.key, nbytes=int(array.nbytes), crc32=_crc(array))
        attrs = {
            "key": embedding.key,
            "signature": _canonical(signature, FORMAT_VERSION),
            "model_name": embedding.model_name,
            "original_shape": list(embedding.transform.original_shape),
            "input_size": int(embedding.transform.input_size),
            "created": time.time(),
        }
        final = self.entry_path(embedding.key)
        temp = self.root / "tmp" / f"{embedding.key}.{os.getpid()}.{uuid.uuid4().hex}.zarr"
        temp.parent.mkdir(parents=True, exist_ok=True)
        try:
            group = zarr.create_group(temp, attributes=attrs)
            for name, (array, array_attrs) in arrays.items():
                # one uncompressed chunk, written even when all zeros: the layout _read_array reads
                stored = group.create_array(
                    name,
                    shape=array.shape,
                    dtype=array.dtype,
                    chunks=array.shape,
                    compressors=None,
                    attributes=array_attrs,
                    config={"write_empty_chunks": True},
                )
                stored[...] = array
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():
                if _same_entry(final, attrs, {name: a for name, (_, a) in arrays.items()}):
                    return final  # another writer was first with the same entry
                self._discard(final)  # stale, foreign, damaged or without this context: replaced
            with contextlib.suppress(OSError):  # a concurrent writer renamed its copy into place first: keep it
                os.rename(temp, final)
        finally:
            if temp.exists():
                shutil.rmtree(temp, ignore_errors=True)
        self._count("stored")
        self._after_write(sum(array.nbytes for array, _ in arrays.values()))
        return final

    def write_problem(self) -> str | None:
        """Why nothing can be written here now (a read-only folder, its ``tmp`` taken by a file), else None: a
        temporary folder made and removed where :meth:`store` writes its entries first; else what this process's
        last failed :meth:`store` met (a full disk)."""
        import tempfile

        try:
            (self.root / "tmp").mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=self.root / "tmp"):
                pass
        except OSError as exc:  # said for the folder (the probe's own name is random)
            return f"{self.root / 'tmp'}: {exc.strerror or exc}"
        return self._write_error

    # -- size cap --------------------------------------------------------------------------------------------
    def entries(self) -> list[tuple[float, int, Path]]:
        """(last access time, bytes, path) of every entry, oldest first. Only the cache's own entries count (named as
        it names them): other folders under its root are the user's, and the size cap never removes them."""
        out = []
        for sub in _subdirs(self.root):
            if len(sub.name) != 2:
                continue
            for entry in _subdirs(sub):
                match = _ENTRY_NAME.fullmatch(entry.name)
                if match is None or match.group(1) != sub.name:
                    continue
                try:
                    # a hit touches zarr.json; an entry without one (damaged, a copy cut short) by its folder's time:
                    # its bytes are on the disk all the same, listed and under the cap
                    meta = entry / "zarr.json"
                    used = (meta if meta.is_file() else entry).stat().st_mtime
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
        self._remove_dead_temporaries()
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

    def leftovers(self) -> list[tuple[int, Path]]:
        """(bytes, path) of what writers and clears that were stopped left in ``tmp/`` and ``trash/``: no entries,
        but the cache's files on the disk, which the next eviction or clear removes."""
        return self._remove_dead_temporaries(dry_run=True)

    def _remove_dead_temporaries(self, *, dry_run: bool = False) -> list[tuple[int, Path]]:
        """(bytes, path) of the temporaries of writers that died (idle for :data:`STALE_TEMP_S`; a live writer's
        are left alone), removed unless ``dry_run``; and of what ``_discard`` left in ``trash/`` (a process killed
        while it deleted)."""
        now = time.time()
        found = []
        for folder, name in ((self.root / "tmp", _TEMP_NAME), (self.root / "trash", _TRASH_NAME)):
            for temp in _subdirs(folder):
                if not name.fullmatch(temp.name):
                    continue  # not one of ours: never removed
                try:
                    if folder.name == "tmp" and now - temp.stat().st_mtime <= STALE_TEMP_S:
                        continue
                    size = sum(f.stat().st_size for f in temp.rglob("*") if f.is_file())
                except OSError:  # removed by another process meanwhile
                    continue
                found.append((size, temp))
                if not dry_run:
                    shutil.rmtree(temp, ignore_errors=True)
        return found

    def clear(
        self, *, dry_run: bool = False, stuck: list[tuple[int, Path, str]] | None = None
    ) -> list[tuple[int, Path]]:
        """Remove every entry the cache wrote, and dead writers' leftovers; returns (bytes, path) of each (with
        ``dry_run``: what would go). An entry is the cache's by its name and by its ``zarr.json`` naming that key (a
        damaged one's, unreadable or missing, by an array naming it: :func:`_names_its_key`): a cache directory set
        where the user keeps other files loses none of them. Entries go as the size cap evicts
        them (renamed aside, then deleted): a reader in another process sees a whole entry or a miss, a writer's
        temporary being written now is kept. An entry whose folder cannot be written (a read-only cache, another
        user's) is neither removed nor counted: it goes to ``stuck`` as (bytes, path, why), so that a dry run does
        not promise to free it."""
        removed = self._remove_dead_temporaries(dry_run=dry_run)
        for _, size, path in self.entries():
            if not _names_its_key(path):  # another zarr named as an entry is: the user's
                continue
            if (why := self._cannot_discard(path)) is not None:
                if stuck is not None:
                    stuck.append((size, path, why))
                continue
            removed.append((size, path))
            if not dry_run:
                # the emptied folders stay: a writer between its mkdir and its rename would lose its entry
                self._discard(path, raise_errors=True)
        return removed

    def _after_write(self, nbytes: int) -> None:
        with self._lock:
            written = None if self._written_since_scan is None else self._written_since_scan + nbytes
            scan = written is None or written >= SCAN_FRACTION * self.max_bytes
            self._written_since_scan = 0 if scan else written
        if scan:
            self.evict()

    def _cannot_discard(self, path: Path) -> str | None:
        """Why :meth:`_discard` could not move ``path`` (its folder, or the one ``trash/`` goes in, cannot be written),
        else None. Asked of the folders (access(), which a read-only mount answers for root too), moving nothing."""
        trash = self.root / "trash"
        for folder in (path.parent, trash if trash.is_dir() else self.root):
            if not os.access(folder, os.W_OK):
                return f"{folder} cannot be written (read-only, or another user's)"
        return None

    def _discard(self, path: Path, *, raise_errors: bool = False) -> None:
        """Move an entry out of the way (atomic), then delete it: a reader sees all of it or none. A move that fails
        other than for an entry already moved by another process is raised with ``raise_errors`` (a clear: it was
        counted as freed in a read-only cache), else left (the size cap's eviction: a read-only cache is still read)."""
        trash = self.root / "trash" / f"{path.name}.{uuid.uuid4().hex}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(path, trash)
        except FileNotFoundError:  # already moved by another process
            return
        except OSError:
            if raise_errors:
                raise
            return
        shutil.rmtree(trash, ignore_errors=True)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)


def _as_array(tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().cpu().numpy())


def _read_node(path: Path, node_type: str) -> dict:
    meta = json.loads((path / "zarr.json").read_text())
    if not isinstance(meta, dict) or meta.get("zarr_format") != 3 or meta.get("node_type") != node_type:
        raise ValueError(f"{path}: not a zarr v3 {node_type}")
    return meta


#: the only array layout :meth:`DiskEmbeddingCache.store` writes: one uncompressed little-endian chunk
_LAYOUT = {
    "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
    "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
}


def _read_array(path: Path, key: str | None = None) -> tuple[np.ndarray, dict]:
    """(data, attributes) of a zarr array in the layout of :data:`_LAYOUT`, read from its one chunk file; raises
    ValueError on another layout, a short chunk, a CRC that does not match or (given ``key``) another entry's key."""
    meta = _read_node(path, "array")
    if key is not None and meta.get("attributes", {}).get("key") != key:
        raise ValueError(f"{path}: an array of another entry")
    shape = meta["shape"]
    if any(meta.get(k) != v for k, v in _LAYOUT.items()) or meta["chunk_grid"]["configuration"]["chunk_shape"] != shape:
        raise ValueError(f"{path}: not the cache's array layout")
    dtype = np.dtype(meta["data_type"]).newbyteorder("<")
    data = np.fromfile(path.joinpath("c", *["0"] * len(shape)), dtype=dtype)
    attrs = meta.get("attributes", {})
    if data.size != math.prod(shape) or data.nbytes != attrs.get("nbytes") or _crc(data) != attrs.get("crc32"):
        raise ValueError(f"{path}: damaged (size or CRC)")
    return data.reshape(shape), attrs


def _names_its_key(path: Path) -> bool:
    """Whether the folder ``path``, named as an entry, is one the cache wrote: its ``zarr.json`` names its key; that
    ``zarr.json`` unreadable or missing (damaged, a copy of the cache stopped part-way), one of its arrays names it.
    A zarr group that reads and names no such key is another's (the user's), whatever its arrays say."""
    key = path.name[: -len(".zarr")]
    try:
        return _read_node(path, "group").get("attributes", {}).get("key") == key
    except (OSError, ValueError):
        pass
    for array in _subdirs(path):
        try:
            if _read_node(array, "array").get("attributes", {}).get("key") == key:
                return True
        except (OSError, ValueError):
            continue
    return False


def _same_entry(path: Path, attrs: dict, array_attrs: dict[str, dict]) -> bool:
    """Whether the entry at ``path`` is intact and holds what a writer with these attributes would write."""
    try:
        stored = _read_node(path, "group")["attributes"]
        if any(stored.get(k) != attrs[k] for k in ("key", "signature")):
            return False
        names = {p.name for p in path.iterdir() if (p / "zarr.json").is_file()}
        return names == set(array_attrs) and all(
            {k: _read_array(path / name)[1].get(k) for k in expected} == expected
            for name, expected in array_attrs.items()
        )
    except Exception:  # noqa: BLE001 - unreadable counts as invalid
        return False


def _crc(array: np.ndarray) -> int:
    return zlib.crc32(memoryview(np.ascontiguousarray(array)).cast("B"))


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
    """Use the disk cache at ``root`` in this process (``"default"``: :func:`default_location`), capped at ``max_gb``
    (None: :func:`cap_setting`'s); ``root`` None goes back to ``$PROMPTSEG_EMBEDDING_CACHE``. Returns the cache now
    in use."""
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
        env = (environment_root(), os.environ.get(MAX_GB_ENV, "").strip())
        if _from_env is None or _from_env[0] != env:
            _from_env = (env, _open(env[0], None) if env[0] else None)
        return _from_env[1]


def environment_root() -> str:
    """``$PROMPTSEG_EMBEDDING_CACHE`` with ``~`` and ``$VARIABLES`` expanded as a shell would (a value set in quotes,
    or by a launcher that runs no shell, named a folder '$SCRATCH' under the working directory); '' when unset."""
    from ..io._files import path_from_environment

    value = os.environ.get(CACHE_ENV, "").strip()
    return str(path_from_environment(value)) if value else ""


def cap_setting(max_gb: float | None = None) -> tuple[float, str]:
    """The size cap (GB) of a cache opened with ``max_gb`` (``--cache-max-gb``, :func:`configure`), and where it
    comes from: ``"given"``; without one, ``$PROMPTSEG_EMBEDDING_CACHE_GB`` (``"environment"``), else
    :data:`DEFAULT_MAX_GB` (``"default"``). The one rule of every cache a process opens and of `promptseg cache`'s
    listing (a cache given by --cache took the default and the listing the variable). A cap that is no size is
    refused, naming where it was set."""
    source = "given"
    if max_gb is None:
        text = os.environ.get(MAX_GB_ENV, "").strip()
        if not text:
            return DEFAULT_MAX_GB, "default"
        try:
            max_gb, source = float(text), "environment"
        except ValueError:
            raise PromptsegError(f"${MAX_GB_ENV}={text!r}: expected a number of GB, e.g. 10") from None
    if not 0 < max_gb < math.inf:
        where = f"${MAX_GB_ENV}={max_gb:g}" if source == "environment" else f"{max_gb} GB"
        raise PromptsegError(f"embedding cache size cap {where}: give a size above 0 (e.g. 10)")
    return max_gb, source


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
    gigabytes, _ = cap_setting(max_gb)
    path = default_location() if root == "default" else Path(root)
    check_folder(path)
    return DiskEmbeddingCache(path, int(gigabytes * 1e9))


def check_folder(path: Path) -> None:
    """Refuse a cache path that is a file, or lies under one (``notes.txt/cache``): every store would fail (logged
    once, then every image encoded again, and `promptseg embed` blamed the size cap), so it is said before any work."""
    path = path.expanduser()
    for folder in (path, *path.parents):
        if folder.exists():
            if folder.is_dir():
                return
            where = "a file" if folder == path else f"under {folder}, a file"
            raise PromptsegError(f"embedding cache {path}: {where}, not a directory; give a directory for the cache")
