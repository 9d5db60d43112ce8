"""What the project keeps on disk, and clearing it (``promptseg cache``, :func:`disk_stores`, :func:`clear_stores`).

The stores: the embedding cache (:mod:`.embedding_cache`), our single-file weights cache (:func:`.registry.cache_dir`,
``$PROMPTSEG_CACHE_DIR``), the checksum stamps of weights kept in read-only folders, hub models in the Hugging Face
cache (shared with transformers and every other program: cleared only for a model named, through huggingface_hub's
own deletion), and the reference library (the user's data: listed, never cleared).

Only files the project wrote are removed, told by their names and contents, never by the folder they are in: a
``$PROMPTSEG_CACHE_DIR`` or ``--cache`` set to the user's home must not cost them a file. Embedding-cache entries
must carry their own key; a checkpoint must be named as a model card names it, and be the published file (its
stamp, else its size and sha256); a stamp must read as one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from ..errors import PromptsegError
from . import embedding_cache as ec
from .registry import MODELS, ModelCard, _in_hf_cache, _package_path, _revisions, cache_dir, get_card
from .resumable import partial_path
from .single_file import POOCH_PARTIAL, STALE_PARTIAL_S, _stamp, mismatch, write_stamp

__all__ = ["Cleared", "DiskStore", "clear_stores", "disk_stores"]

#: a stamp :func:`.single_file.write_stamp` writes in the user cache for a file in a read-only folder
_STAMP_NAME = re.compile(r"[0-9a-f]{32}\.json")
_STAMP_KEYS = {"sha256", "size", "mtime_ns", "inode"}


@dataclass(frozen=True)
class DiskStore:
    """One place the project keeps files: what it is, where, how big, how many entries."""

    kind: str  # "embeddings" | "weights" | "checksum_stamps" | "hf_cache" | "library"
    path: Path
    size: int  # bytes of the project's files there (not of anything else in the folder)
    entries: int
    cap: int | None = None  # the embedding cache's size cap in bytes, as a run without --cache-max-gb caps it
    #: where that cap comes from: "configured" (configure() in this process), "environment", "default"
    cap_source: str | None = None
    clearable: bool = True
    models: tuple[str, ...] = ()  # models whose weights are there
    note: str = ""


@dataclass
class Cleared:
    """What a clear removed (or, with ``dry_run``, would remove) from one store, and what it left and why."""

    kind: str
    path: Path
    removed: list[Path] = field(default_factory=list)
    freed: int = 0  # bytes
    kept: list[tuple[Path, str]] = field(default_factory=list)
    note: str = ""
    #: entries that cannot be removed (a read-only cache): their number and bytes, and why; never counted as freed
    stuck: int = 0
    stuck_size: int = 0
    #: of ``removed``, the embedding cache's leftovers of stopped writes (tmp/, trash/), not entries
    leftovers: int = 0


# -- the embedding cache -----------------------------------------------------------------------------------------
def _embedding_cache(root: str | os.PathLike | None) -> tuple[ec.DiskEmbeddingCache, str]:
    """The cache ``root`` names, else the one this process uses (``configure``, ``$PROMPTSEG_EMBEDDING_CACHE``),
    else :func:`.embedding_cache.default_location` (where ``promptseg embed`` puts it); opened without evicting, with
    the cap a run given no --cache-max-gb has, and where that cap comes from (:func:`.embedding_cache.cap_setting`)."""
    if root is None and ec._explicit and ec._configured is not None:  # configure() in this process
        root, max_bytes, source = ec._configured.root, ec._configured.max_bytes, "configured"
    else:
        if root is None:  # not ec.active(): it opens the environment's cache, which evicts down to the cap
            root = ec.environment_root() or "default"
        gigabytes, source = ec.cap_setting()
        max_bytes = int(gigabytes * 1e9)
    if str(root) == "default":
        root = ec.default_location()
    path = Path(root).expanduser()
    ec.check_folder(path)
    return ec.DiskEmbeddingCache(path, max_bytes, fit_cap=False), source


# -- single-file weights -----------------------------------------------------------------------------------------
def _published_checkpoint(card: ModelCard, path: Path) -> str | None:
    """Why ``path`` (named as ``card`` names its file) is not one the project may delete, or None when it is: the
    published file, by its stamp, else by its size and sha256 (then stamped: the clear after the question is quick).
    A model without a published checksum has its file given by the user (``mobile_sam``): never ours."""
    if card.sha256 is None:
        return "no published checksum: the file is the user's"
    try:
        problem = mismatch(card, path)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if problem is not None:
        return f"not the published file ({problem})"
    write_stamp(card, path)
    return None


def _read_stamp(path: Path) -> bool:
    try:
        return set(json.loads(path.read_text())) == _STAMP_KEYS
    except (OSError, ValueError, TypeError):
        return False


def _clear_weights_file(card: ModelCard, cleared: Cleared, dry_run: bool) -> None:
    """``card``'s checkpoint in our cache, with its stamps, when it is the published file; and its stopped
    download's partial file."""
    path = cache_dir() / card.filename
    if card.filename:
        _clear_partial(path, cleared, dry_run)
    if not card.filename or not path.is_file():
        return
    why_not = _published_checkpoint(card, path)
    if why_not is not None:
        cleared.kept.append((path, why_not))
        return
    stamps = [s for s in _stamp(card, path)[0] if s.is_file() and _read_stamp(s)]
    for file in [path, *stamps]:
        size = file.stat().st_size
        if not dry_run:
            try:
                file.unlink()
            except FileNotFoundError:  # another clear was first
                continue
        cleared.removed.append(file)
        cleared.freed += size


def _clear_partial(target: Path, cleared: Cleared, dry_run: bool) -> None:
    """A stopped download's ``<file>.part`` (kept for the next run to resume: it stayed through a clear), unless a
    download is writing it now (its lock is held: :func:`.single_file.download_lock`)."""
    from filelock import FileLock, Timeout

    part = partial_path(target)
    if not part.is_file():
        return
    lock_file = target.with_name(f".{target.name}.lock")
    try:
        with FileLock(lock_file, timeout=0):
            size = part.stat().st_size
            if not dry_run:
                part.unlink(missing_ok=True)
    except Timeout:  # its lock file stays: the download holds it
        cleared.kept.append((part, "a download is writing it now"))
        return
    except OSError as exc:  # a read-only cache: its lock cannot be made
        cleared.kept.append((part, f"cannot be removed ({exc.strerror or exc})"))
        return
    with contextlib.suppress(OSError):  # as download_lock leaves none
        lock_file.unlink()
    cleared.removed.append(part)
    cleared.freed += size


def _clear_leftovers(folder: Path, cleared: Cleared, dry_run: bool) -> None:
    """Killed downloads' temporaries (pooch's exact name, idle for an hour: a running download writes its file all
    the time) and stamps whose checkpoint is gone."""
    now = time.time()
    try:
        found = sorted(folder.iterdir())
    except OSError:
        return
    for path in found:
        with contextlib.suppress(OSError):  # one file that cannot be looked at (a dangling link) stops no other
            stale_partial = POOCH_PARTIAL.fullmatch(path.name) and now - path.stat().st_mtime > STALE_PARTIAL_S
            orphan_stamp = (
                path.name.endswith(".verified")
                and path.name[: -len(".verified")] in {c.filename for c in MODELS.values() if c.filename}
                and not path.with_name(path.name[: -len(".verified")]).exists()
                and _read_stamp(path)
            )
            if path.is_file() and (stale_partial or orphan_stamp):
                size = path.stat().st_size
                if not dry_run:
                    path.unlink(missing_ok=True)
                cleared.removed.append(path)
                cleared.freed += size


def _stamps_folder() -> Path:
    return Path(platformdirs.user_cache_dir("napari-promptseg")) / "verified"


def _own_stamps() -> list[Path]:
    try:
        found = sorted(p for p in _stamps_folder().iterdir() if _STAMP_NAME.fullmatch(p.name))
    except OSError:
        return []
    return [p for p in found if p.is_file() and _read_stamp(p)]


def _clear_hub_model(card: ModelCard, dry_run: bool) -> Cleared | None:
    """The snapshot of ``card``'s repository that loads would use, through huggingface_hub's deletion (it removes
    the revision's files and the blobs no other revision links to); None when it is not in the cache."""
    from huggingface_hub import scan_cache_dir

    from .hub import hf_cache_dir

    snapshot = _in_hf_cache(card.repo_id, _revisions(card), card.files, card.required)[0]
    if snapshot is None:
        return None
    info = scan_cache_dir(hf_cache_dir())
    strategy = info.delete_revisions(snapshot.name)
    cleared = Cleared("hf_cache", snapshot, freed=strategy.expected_freed_size)
    cleared.removed = sorted({*strategy.blobs, *strategy.snapshots, *strategy.repos})
    if not dry_run:
        strategy.execute()
    return cleared


def _clear_hub_leftovers(card: ModelCard, cleared: Cleared, dry_run: bool) -> None:
    """The files stopped downloads of ``card``'s repository left (:func:`.hub.stopped_downloads`: huggingface_hub
    neither resumes nor removes them), except one a download is writing now (its lock is held)."""
    from filelock import FileLock, Timeout

    from .hub import download_lock_file, stopped_downloads

    for part in stopped_downloads(card.repo_id):
        try:
            with FileLock(download_lock_file(part), timeout=0):  # huggingface_hub leaves its lock files: so do we
                size = part.stat().st_size
                if not dry_run:
                    part.unlink(missing_ok=True)
        except Timeout:
            cleared.kept.append((part, "a download is writing it now"))
            continue
        except OSError as exc:  # a read-only cache, or the lock's folder cannot be made
            cleared.kept.append((part, f"cannot be removed ({exc.strerror or exc})"))
            continue
        cleared.removed.append(part)
        cleared.freed += size


# -- listing -----------------------------------------------------------------------------------------------------
def human_size(size: int) -> str:
    """Bytes in the largest decimal unit under which they are at least 1 (as `promptseg models` counts MB)."""
    for unit, factor in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= factor:
            return f"{size / factor:,.1f} {unit}"
    return f"{size} B"


def _tree_size(path: Path) -> int:
    with contextlib.suppress(OSError):
        return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return 0


def disk_stores(embedding_cache: str | os.PathLike | None = None) -> list[DiskStore]:
    """Each place the project keeps files, without changing any (the embedding cache is not brought under its cap,
    no checkpoint is hashed). ``embedding_cache``: which one (default: this process's, else the default location)."""
    from ..io.library import INDEX, ReferenceLibrary
    from ..io.library._format import default_library_path
    from .hub import hf_cache_dir

    stores = []
    cache, cap_source = _embedding_cache(embedding_cache)
    entries = cache.entries()
    # what killed writers and clears left (tmp/, trash/): on the disk, and freed by the next clear, as the entries
    leftovers = sum(size for size, _ in cache.leftovers())
    note = f"{human_size(leftovers)} left by stopped writes (a clear removes them)" if leftovers else ""
    stores.append(
        DiskStore(
            "embeddings",
            cache.root,
            sum(s for _, s, _ in entries) + leftovers,
            len(entries),
            cap=cache.max_bytes,
            cap_source=cap_source,
            # a --cache mistyped read as an empty cache at that path
            note=note if cache.root.is_dir() else "no such folder (yet)",
        )
    )
    weights = cache_dir()
    found = [c for c in MODELS.values() if c.filename and (weights / c.filename).is_file()]
    # stopped downloads' partial files: up to a checkpoint each, left out of the size before
    partials = [p for c in MODELS.values() if c.filename and (p := partial_path(weights / c.filename)).is_file()]
    stopped = ", ".join(f"{p.name} ({human_size(_tree_size(p))}; a run resumes it)" for p in partials)
    note = "single-file checkpoints ($PROMPTSEG_CACHE_DIR)" + (f"; stopped downloads: {stopped}" if stopped else "")
    stores.append(
        DiskStore(
            "weights",
            weights,
            sum(_tree_size(weights / c.filename) for c in found) + sum(_tree_size(p) for p in partials),
            len(found),
            models=tuple(c.name for c in found),
            note=note,
        )
    )
    stamps = _own_stamps()
    stores.append(
        DiskStore(
            "checksum_stamps",
            _stamps_folder(),
            sum(_tree_size(p) for p in stamps),
            len(stamps),
            note="checksums of weights in read-only folders (cleared with all weights)",
        )
    )
    hub_models = [
        (c, snapshot)
        for c in MODELS.values()
        if c.repo_id and (snapshot := _in_hf_cache(c.repo_id, _revisions(c), c.files, c.required)[0]) is not None
    ]
    stores.append(
        DiskStore(
            "hf_cache",
            hf_cache_dir(),
            sum(_tree_size(s) for _, s in hub_models),
            len(hub_models),
            models=tuple(c.name for c, _ in hub_models),
            note="shared with other programs: cleared only for a model named (--weights MODEL)",
        )
    )
    library = default_library_path()
    note = "your reference library ($PROMPTSEG_LIBRARY): your data, never cleared"
    try:
        # its index and the entries' files only: a $PROMPTSEG_LIBRARY set to the home folder is not walked
        opened = ReferenceLibrary(library) if library.is_dir() else None
        files = [] if opened is None else [opened.index_path]
        files += [library / rel for e in (opened or ()) for rel in (e.image_path, e.mask_path)]
        entries = len(opened or ())
    except (PromptsegError, OSError):
        # a damaged index: its exemplars' folders are counted (it was listed as 0 B and 0 entries, an empty library
        # one might delete), and `promptseg library list` says what is wrong
        folders = _subfolders(library / "entries")
        files, entries = [library / INDEX, *folders], len(folders)
        note = f"its {INDEX} cannot be read (`promptseg library list` says why); {note}"
    stores.append(DiskStore("library", library, sum(_tree_size(f) for f in files), entries, clearable=False, note=note))
    return stores


def _subfolders(path: Path) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if p.is_dir())
    except OSError:
        return []


# -- clearing ----------------------------------------------------------------------------------------------------
def clear_stores(
    *,
    embeddings: bool = False,
    weights: bool | str = False,
    embedding_cache: str | os.PathLike | None = None,
    dry_run: bool = False,
) -> list[Cleared]:
    """Delete the project's files from the chosen stores; returns what went (``dry_run``: what would go).

    ``embeddings``: every entry of the embedding cache (``embedding_cache``, default as :func:`disk_stores`).
    ``weights=True``: every published checkpoint in our weights cache, its stamps and killed downloads' leftovers,
    and the hub models' stopped downloads in the Hugging Face cache (not their snapshots: other programs use them);
    ``weights="MODEL"``: that model's checkpoint in our cache, and its snapshot and stopped downloads in the Hugging
    Face cache.
    Bundled weights (in an installed package) and the reference library are never touched."""
    if not embeddings and not weights:
        raise PromptsegError("nothing chosen to clear: give embeddings=True and/or weights=True or a model name")
    results = []
    if embeddings:
        cache, _ = _embedding_cache(embedding_cache)
        stuck: list[tuple[int, Path, str]] = []
        removed = cache.clear(dry_run=dry_run, stuck=stuck)
        cleared = Cleared("embeddings", cache.root, [p for _, p in removed], sum(s for s, _ in removed))
        cleared.leftovers = sum(
            p.parent.name in ("tmp", "trash") and p.parent.parent == cache.root for p in cleared.removed
        )
        if stuck:
            cleared.stuck, cleared.stuck_size = len(stuck), sum(size for size, _, _ in stuck)
            reasons = sorted({why for _, _, why in stuck})
            cleared.note = "; ".join(reasons[:3]) + (
                f"; and {len(reasons) - 3} more folders" if len(reasons) > 3 else ""
            )
        results.append(cleared)
    if weights:
        cards = list(MODELS.values()) if weights is True else [get_card(str(weights))]
        local = Cleared("weights", cache_dir())
        for card in cards:
            _clear_weights_file(card, local, dry_run)
        results.append(local)
        if weights is True:
            _clear_leftovers(cache_dir(), local, dry_run)
            stamps = Cleared("checksum_stamps", _stamps_folder())
            for stamp in _own_stamps():
                stamps.freed += _tree_size(stamp)
                stamps.removed.append(stamp)
                if not dry_run:
                    stamp.unlink(missing_ok=True)
            results.append(stamps)
            from .hub import hf_cache_dir

            hub = Cleared("hf_cache", hf_cache_dir())
            for card in cards:
                if card.repo_id is not None:
                    _clear_hub_leftovers(card, hub, dry_run)
            if hub.removed or hub.kept:
                results.append(hub)
        else:
            card = cards[0]
            if card.repo_id is not None:
                from .hub import repo_folder

                snapshot = _clear_hub_model(card, dry_run)
                hub = snapshot or Cleared("hf_cache", repo_folder(card.repo_id) / "blobs")
                _clear_hub_leftovers(card, hub, dry_run)
                if snapshot is not None or hub.removed or hub.kept:
                    results.append(hub)
            if _package_path(card) is not None:
                local.note = f"{card.name}'s bundled weights belong to an installed package: not cleared"
    return results
