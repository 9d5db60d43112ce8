"""`promptseg cache` / `disk_stores` / `clear_stores`: what the project keeps on disk is listed and cleared, real
LiteMedSAM embeddings of a skimage image and a real-format checkpoint; files the project did not write survive."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import platformdirs
import pytest
import tifffile
import torch
from skimage import data

import napari_promptseg
from napari_promptseg.cli import main
from napari_promptseg.models import registry
from napari_promptseg.models.disk_stores import clear_stores, disk_stores
from napari_promptseg.models.embedding_cache import DiskEmbeddingCache
from napari_promptseg.models.single_file import write_stamp

from .conftest import in_hf_cache


@pytest.fixture(autouse=True)
def isolated_user_cache(tmp_path_factory, monkeypatch):
    """The checksum stamps of read-only folders live in the platform's user cache: never the user's in a test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


def test_clearing_the_embedding_cache_empties_it_keeps_other_files_and_the_next_embed_recomputes(
    litemedsam, tmp_path, capsys, monkeypatch
):
    image = tmp_path / "camera.tif"
    tifffile.imwrite(image, np.ascontiguousarray(data.camera()[::4, ::4][::-1]))  # 128 x 128, seen by no other test
    cache = tmp_path / "cache"
    litemedsam.cache.clear()
    assert main(["embed", str(image), "--cache", str(cache)]) == 0
    assert "0 of 1 already cached" in capsys.readouterr().out
    (entry,) = [path for _, _, path in DiskEmbeddingCache(cache).entries()]
    # the user's files in the folder: one beside the entries, one named as an entry is but another zarr's
    (cache / "notes.txt").write_text("mine")
    (entry.parent / "notes.txt").write_text("mine too")
    lookalike = entry.parent / (entry.name[:2] + "0" * 30 + ".zarr")
    lookalike.mkdir()
    (lookalike / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}))

    assert main(["cache", "--cache", str(cache)]) == 0
    listing = capsys.readouterr().out
    size = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
    store = next(s for s in disk_stores(cache) if s.kind == "embeddings")
    assert (store.path, store.size, store.entries, store.cap) == (cache, size + _size(lookalike), 2, int(10e9))
    assert f"{store.size / 1e6:,.1f} MB" in listing and str(cache) in listing and "reference library" in listing

    with monkeypatch.context() as env:  # the environment's cache, over its cap: listed as it is, nothing evicted
        env.setenv("PROMPTSEG_EMBEDDING_CACHE", str(cache))
        env.setenv("PROMPTSEG_EMBEDDING_CACHE_GB", "0.000001")
        listed = next(s for s in disk_stores() if s.kind == "embeddings")
        assert (listed.path, listed.entries, listed.cap) == (cache, 2, 1000) and entry.is_dir()

    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))  # asked first: a no deletes nothing
    assert main(["cache", "clear", "--embeddings", "--cache", str(cache)]) == 1
    assert "nothing deleted" in capsys.readouterr().err and entry.is_dir()

    assert main(["cache", "clear", "--embeddings", "--cache", str(cache), "--yes"]) == 0
    out = capsys.readouterr().out
    assert f"embedding cache: freed {size / 1e6:,.1f} MB (1 entry) in {cache}" in out, out
    assert [path for _, _, path in DiskEmbeddingCache(cache).entries()] == [lookalike]  # named so, but not ours
    assert not entry.exists()
    assert (cache / "notes.txt").read_text() == "mine" and (entry.parent / "notes.txt").read_text() == "mine too"
    assert (lookalike / "zarr.json").is_file()

    litemedsam.cache.clear()  # as in a new process: the disk cache alone could have answered
    assert main(["embed", str(image), "--cache", str(cache)]) == 0
    assert "0 of 1 already cached" in capsys.readouterr().out  # recomputed
    assert entry.is_dir()


def test_the_listed_cap_is_the_one_a_run_opens_the_cache_with_and_says_where_it_comes_from(
    tmp_path, capsys, monkeypatch
):
    """`promptseg cache` listed $PROMPTSEG_EMBEDDING_CACHE_GB as the cap of a cache named by --cache, or of the
    default location `promptseg embed` fills, but a run given that cache opened it at the default 10 GB; and it said
    the variable set the cap when the default did. One rule now for both (embedding_cache.cap_setting), and the
    listing says where its cap comes from."""
    from napari_promptseg.models import embedding_cache

    cache = tmp_path / "cache"
    assert main(["cache", "--cache", str(cache)]) == 0
    assert "cap 10.0 GB (the default; $PROMPTSEG_EMBEDDING_CACHE_GB or a run's" in capsys.readouterr().out
    monkeypatch.setenv("PROMPTSEG_EMBEDDING_CACHE_GB", "2")
    assert main(["cache", "--cache", str(cache)]) == 0
    assert "cap 2.0 GB ($PROMPTSEG_EMBEDDING_CACHE_GB; a run's --cache-max-gb" in capsys.readouterr().out
    with embedding_cache.settings_restored():
        # as runs open it: --cache DIR without --cache-max-gb (cli._disk_cache), embed without --cache
        assert embedding_cache.configure(cache).max_bytes == int(2e9)
        assert embedding_cache.configure("default").max_bytes == int(2e9)
        embedding_cache.configure(cache, 3)  # the console's own setting is the one listed
        assert main(["cache"]) == 0
        assert "cap 3.0 GB (set in this process by embedding_cache.configure" in capsys.readouterr().out
    monkeypatch.setenv("PROMPTSEG_EMBEDDING_CACHE_GB", "0")  # every run refuses it: so does the listing (cap 0 B)
    assert main(["cache", "--cache", str(cache)]) == 2
    assert "$PROMPTSEG_EMBEDDING_CACHE_GB=0: give a size above 0" in capsys.readouterr().err


def _size(path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@pytest.fixture
def tiny_model(tmp_path, monkeypatch) -> registry.ModelCard:
    """A model card for a small real checkpoint (torch's format) with its published size and sha256."""
    source = tmp_path / "tiny.pth"
    torch.save({"weight": torch.arange(64, dtype=torch.float32).reshape(8, 8)}, source)
    payload = source.read_bytes()
    card = registry.ModelCard(
        name="tiny_test",
        role="segmenter",
        backend="sam",
        description="test checkpoint",
        licence="MIT",
        citation="-",
        filename="tiny_test.pth",
        url="https://example.invalid/tiny_test.pth",
        sha256=hashlib.sha256(payload).hexdigest(),
        size=len(payload),
    )
    monkeypatch.setitem(registry.MODELS, card.name, card)
    return card


def test_clearing_weights_removes_only_published_checkpoints_and_their_stamps(tiny_model, tmp_path, capsys):
    weights = registry.cache_dir()
    weights.mkdir(parents=True, exist_ok=True)
    checkpoint = weights / tiny_model.filename
    checkpoint.write_bytes((tmp_path / "tiny.pth").read_bytes())
    assert registry.resolve_weights("tiny_test") == checkpoint  # checked and stamped, as a download leaves it
    stamp = checkpoint.with_name(checkpoint.name + ".verified")
    assert stamp.is_file()
    # not ours: the user's notes, a file under a published model's name that is not the published file, a
    # download running now (pooch's temporary name, fresh), a JSON in the stamps folder that is no stamp
    (weights / "notes.txt").write_text("mine")
    (weights / "sam_vit_b_01ec64.pth").write_bytes(b"my own fine-tune")
    (weights / "tmpabcd1234").write_bytes(b"half a download")
    stamps = Path(platformdirs.user_cache_dir("napari-promptseg"))
    (stamps / "verified").mkdir(parents=True)
    foreign_json = stamps / "verified" / ("0" * 32 + ".json")
    foreign_json.write_text('{"mine": 1}')
    own_stamp = stamps / "verified" / ("1" * 32 + ".json")
    own_stamp.write_text(json.dumps({"sha256": "x", "size": 1, "mtime_ns": 1, "inode": 1}))

    store = next(s for s in disk_stores() if s.kind == "weights")
    assert (store.path, store.entries, store.models) == (weights, 2, ("sam_vit_b", "tiny_test"))

    freed = checkpoint.stat().st_size + stamp.stat().st_size
    own_size = own_stamp.stat().st_size
    assert main(["cache", "clear", "--weights", "--yes"]) == 0
    out, err = capsys.readouterr()
    assert f"weights (ours): freed {freed / 1e3:,.1f} kB (2 files) in {weights}" in out, out
    assert f"kept {weights / 'sam_vit_b_01ec64.pth'}: not the published file" in err, err
    assert f"checksum stamps: freed {own_size} B (1 file)" in out, out
    assert not checkpoint.exists() and not stamp.exists() and not own_stamp.exists()
    for survivor in ("notes.txt", "sam_vit_b_01ec64.pth", "tmpabcd1234"):
        assert (weights / survivor).is_file(), survivor
    assert foreign_json.is_file()

    # one named model: only its file
    checkpoint.write_bytes((tmp_path / "tiny.pth").read_bytes())
    write_stamp(tiny_model, checkpoint)
    (cleared,) = clear_stores(weights="tiny_test")
    assert cleared.removed == [checkpoint, stamp] and (weights / "notes.txt").is_file()
    assert main(["cache", "clear", "--weights", "no_such_model", "--yes"]) == 2
    assert "unknown model 'no_such_model'; known models: litemedsam" in capsys.readouterr().err


def test_a_named_hub_model_is_cleared_from_the_hugging_face_cache_and_nothing_else(tmp_path, capsys):
    model = tmp_path / "dinov2"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "dinov2"}')
    (model / "preprocessor_config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"\0" * 1000)
    snapshot = in_hf_cache("dinov2_small", model)
    other = in_hf_cache("clipseg_rd64_refined", model)  # another model in the shared cache
    store = next(s for s in disk_stores() if s.kind == "hf_cache")
    assert store.models == ("clipseg_rd64_refined", "dinov2_small") and store.entries == 2

    assert main(["cache", "clear", "--weights", "--yes"]) == 0  # all weights: the shared cache is not touched
    assert snapshot.is_dir()
    assert main(["cache", "clear", "--weights", "dinov2_small", "--yes"]) == 0
    assert "Hugging Face cache: freed" in capsys.readouterr().out
    assert not snapshot.exists() and (other / "model.safetensors").is_file()


def test_clear_without_a_choice_and_a_cache_that_is_a_file_are_refused_naming_it(tmp_path, capsys):
    assert main(["cache", "clear", "--yes"]) == 2
    assert "say what to clear: --embeddings and/or --weights" in capsys.readouterr().err
    not_a_folder = tmp_path / "cache.txt"
    not_a_folder.write_text("x")
    assert main(["cache", "--cache", str(not_a_folder)]) == 2
    assert f"embedding cache {not_a_folder}: a file, not a directory" in capsys.readouterr().err


def test_the_library_is_listed_and_never_cleared_and_the_console_has_both_functions(tmp_path):
    assert {s.kind: s.clearable for s in disk_stores()}["library"] is False
    assert napari_promptseg.disk_stores is disk_stores and napari_promptseg.clear_stores is clear_stores
    with pytest.raises(napari_promptseg.errors.PromptsegError, match="nothing chosen"):
        clear_stores()


def test_a_dangling_link_among_the_weights_stops_no_other_leftover_from_going(tmp_path):
    """One file that cannot be looked at (a dangling link under a download temporary's name) ended the clean-up of
    every leftover after it."""
    import os

    weights = registry.cache_dir()
    weights.mkdir(parents=True, exist_ok=True)
    (weights / "tmpaaaaaaaa").symlink_to(tmp_path / "gone")  # sorted first; its stat fails
    stale = weights / "tmpzzzzzzzz"
    stale.write_bytes(b"half a download, killed two hours ago")
    os.utime(stale, (stale.stat().st_atime - 7200, stale.stat().st_mtime - 7200))
    cleared = next(c for c in clear_stores(weights=True) if c.kind == "weights")
    assert stale in cleared.removed and not stale.exists()


def test_a_library_whose_index_is_damaged_is_not_listed_as_empty(tmp_path, monkeypatch, capsys):
    """`promptseg cache` listed a library whose library.json cannot be read as '0 B, 0 entries': an empty library,
    which its owner might delete, exemplars and all. Its exemplars' folders are counted and the listing says why.
    A --cache that does not exist (mistyped) is said to be no folder, not listed as an empty cache there."""
    from napari_promptseg.io.library import ReferenceLibrary

    monkeypatch.setenv("PROMPTSEG_LIBRARY", str(tmp_path / "lib"))
    image = data.camera()[::4, ::4]
    mask = image > 150
    library = ReferenceLibrary.open()
    library.add("bright", image, mask)
    library.add("dark", image, ~mask)
    (tmp_path / "lib" / "library.json").write_text('{"format": "napari-promptseg-library", "entries": [')
    store = next(s for s in disk_stores(tmp_path / "cache") if s.kind == "library")
    exemplars = sum(f.stat().st_size for f in (tmp_path / "lib" / "entries").rglob("*") if f.is_file())
    assert store.entries == 2 and store.size > exemplars
    assert main(["cache", "--cache", str(tmp_path / "no-such-cache")]) == 0
    listing = capsys.readouterr().out
    assert "library.json cannot be read (`promptseg library list` says why)" in listing
    assert "no such folder (yet)" in listing


def test_clearing_weights_takes_stopped_downloads_but_not_a_running_one(tiny_model, capsys):
    """A stopped download's partial file (<file>.part, kept for the next run to resume: up to 2.5 GB for SAM ViT-H)
    stayed after `promptseg cache clear --weights`, all or the model named; one a running download is writing (its
    lock is held) is kept and said so."""
    from filelock import FileLock

    weights = registry.cache_dir()
    weights.mkdir(parents=True, exist_ok=True)
    stopped = weights / "sam_vit_b_01ec64.pth.part"
    stopped.write_bytes(b"\0" * 1000)
    running = weights / f"{tiny_model.filename}.part"
    running.write_bytes(b"\0" * 500)
    with FileLock(weights / f".{tiny_model.filename}.lock"):  # another process's download, as download_lock holds it
        assert main(["cache", "clear", "--weights", "--yes"]) == 0
        out, err = capsys.readouterr()
        assert not stopped.exists() and running.is_file()
        assert f"weights (ours): freed 1.0 kB (1 file) in {weights}" in out, out
        assert f"kept {running}: a download is writing it now" in err, err
    (cleared,) = clear_stores(weights="tiny_test")
    assert cleared.removed == [running] and not running.exists()


def test_the_weights_store_counts_stopped_downloads(tiny_model, capsys):
    """`promptseg cache` left out a stopped download's partial file: a 2 GB SAM ViT-H half fetched was not in the
    size of our weights cache, and not said to be there."""
    weights = registry.cache_dir()
    weights.mkdir(parents=True, exist_ok=True)
    (weights / "sam_vit_h_4b8939.pth.part").write_bytes(b"\0" * 3000)
    store = next(s for s in disk_stores() if s.kind == "weights")
    assert (store.size, store.entries, store.models) == (3000, 0, ())
    assert "stopped downloads: sam_vit_h_4b8939.pth.part (3.0 kB; a run resumes it)" in store.note, store.note
    assert main(["cache"]) == 0
    assert "sam_vit_h_4b8939.pth.part" in capsys.readouterr().out


def test_clearing_weights_takes_a_hub_models_stopped_downloads_but_not_a_running_one(capsys):
    """huggingface_hub never resumes nor removes the ``blobs/*.incomplete`` a killed download leaves, and
    `promptseg models` said to delete them; `promptseg cache clear --weights [MODEL]` left them. They go with the
    model's weights (all: every model's; never another program's repository), except while a download of the
    blob holds huggingface_hub's lock for it."""
    from filelock import FileLock

    from napari_promptseg.models import hub

    def stopped(repo_id: str, etag: str, size: int) -> Path:
        blobs = hub.repo_folder(repo_id) / "blobs"
        blobs.mkdir(parents=True, exist_ok=True)
        path = blobs / f"{etag}.0123abcd.incomplete"  # huggingface_hub >= 1.18's <etag>.<nonce>.incomplete
        path.write_bytes(b"\0" * size)
        return path

    clipseg = stopped(registry.get_card("clipseg_rd64_refined").repo_id, "a" * 64, 1000)
    dinov2 = stopped(registry.get_card("dinov2_small").repo_id, "b" * 64, 500)
    others = stopped("someone/their-model", "c" * 64, 700)  # the cache is shared: not the project's to clear
    lock = hub.hf_cache_dir() / ".locks" / hub.repo_folder(registry.get_card("dinov2_small").repo_id).name
    lock.mkdir(parents=True)
    with FileLock(lock / f"{'b' * 64}.lock"):  # a download of that blob now, as huggingface_hub holds it
        assert main(["cache", "clear", "--weights", "--yes"]) == 0
        out, err = capsys.readouterr()
    assert not clipseg.exists() and dinov2.is_file() and others.is_file()
    assert f"Hugging Face cache: freed 1.0 kB (1 file) in {hub.hf_cache_dir()}" in out, out
    assert f"kept {dinov2}: a download is writing it now" in err, err

    assert main(["cache", "clear", "--weights", "dinov2_small", "--yes"]) == 0
    assert not dinov2.exists() and others.is_file()
    assert f"Hugging Face cache: freed 500 B (1 file) in {dinov2.parent}" in capsys.readouterr().out


def test_clearing_a_cache_whose_entries_cannot_be_moved_says_so_not_freed(tmp_path, capsys, monkeypatch):
    """A cache that cannot be written (read-only, another user's) whose trash/ folder was there from an earlier
    eviction: `promptseg cache clear --embeddings` said 'freed 2.0 kB (1 entry)' and exit 0 while every entry stayed
    (a failed move was taken for another process's). The error is said, naming the entry, and nothing is claimed."""
    import errno
    import os

    from napari_promptseg.models import embedding_cache
    from napari_promptseg.models.preprocessing import ResizeTransform
    from napari_promptseg.models.protocols import Embedding

    root = tmp_path / "cache"
    cache = DiskEmbeddingCache(root, 10**9)
    key = "ab" * 16
    cache.store(Embedding(torch.zeros(1, 4, 8, 8), ResizeTransform((64, 64), 256), "m", key), {"model": "m"})
    entry = cache.entry_path(key)
    (root / "trash").mkdir()  # an earlier eviction's
    rename = os.rename

    def read_only(source, target, *args, **kwargs):
        if Path(source) == entry:
            raise OSError(errno.EROFS, "Read-only file system", str(source))
        return rename(source, target, *args, **kwargs)

    monkeypatch.setattr(embedding_cache.os, "rename", read_only)
    code = main(["cache", "clear", "--embeddings", "--cache", str(root), "--yes"])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert "freed" not in out and f"error: {entry}: Read-only file system" in err, (out, err)
    assert (entry / "zarr.json").is_file()


@pytest.mark.parametrize("damage", ["truncated", "missing", "zeros"])
def test_clearing_the_embedding_cache_removes_its_damaged_entries_too(litemedsam, tmp_path, capsys, damage):
    """An entry whose zarr.json was cut short, is missing (a copy of the cache stopped part-way) or zeroed (a crash of
    the filesystem): `promptseg cache clear --embeddings --yes` said 'nothing to delete' (or freed the others) and exit
    0, while `promptseg cache` went on listing it and its megabytes (one without zarr.json was not even listed, nor
    counted under the size cap): a cache cleared for being damaged kept the damage. Such an entry is the cache's by its
    arrays, which name its key: it is listed and goes with the others."""
    image = tmp_path / "coins.tif"
    tifffile.imwrite(image, np.ascontiguousarray(data.coins()[::3, ::3].T))  # 128 x 101, seen by no other test
    cache = tmp_path / "cache"
    assert main(["embed", str(image), "--cache", str(cache)]) == 0
    (entry,) = [path for _, _, path in DiskEmbeddingCache(cache).entries()]
    meta = entry / "zarr.json"
    if damage == "truncated":
        meta.write_bytes(meta.read_bytes()[:100])
    elif damage == "zeros":
        meta.write_bytes(bytes(meta.stat().st_size))
    else:
        meta.unlink()
    size = _size(entry)
    listed = next(store for store in disk_stores(cache) if store.kind == "embeddings")
    assert (listed.entries, listed.size) == (1, size)  # its bytes are on the disk: listed (and under the cap)
    capsys.readouterr()
    assert main(["cache", "clear", "--embeddings", "--cache", str(cache), "--yes"]) == 0
    out = capsys.readouterr().out
    assert f"embedding cache: freed {size / 1e6:,.1f} MB (1 entry) in {cache}" in out, out
    assert not entry.exists() and not DiskEmbeddingCache(cache).entries()


def test_the_listing_counts_what_stopped_writers_left_and_the_clear_says_them_apart(litemedsam, tmp_path, capsys):
    """A writer killed mid-entry leaves its temporary in tmp/, a clear killed mid-delete its entry in trash/: both
    are removed by the next clear (and by the next run's cap), but `promptseg cache` listed 21.0 MB in 2 entries
    while the clear then said 'freed 29.0 MB (4 entries)'. The listing counts their bytes and says so; the clear
    tells the entries from the leftovers."""
    import os
    import time

    image = tmp_path / "moon.tif"
    tifffile.imwrite(image, np.ascontiguousarray(data.moon()[::4, ::4][:, ::-1]))  # 128 x 128, seen by no other test
    cache = tmp_path / "cache"
    assert main(["embed", str(image), "--cache", str(cache)]) == 0
    (entry,) = [path for _, _, path in DiskEmbeddingCache(cache).entries()]
    temporary = cache / "tmp" / f"{'ab' * 16}.123.{'cd' * 16}.zarr"  # a writer killed two hours ago
    (temporary / "features").mkdir(parents=True)
    (temporary / "features" / "c").write_bytes(bytes(3_000_000))
    os.utime(temporary, (time.time() - 7200,) * 2)
    trashed = cache / "trash" / f"{'ef' * 16}.zarr.{'01' * 16}"  # a clear killed while it deleted
    trashed.mkdir(parents=True)
    (trashed / "c").write_bytes(bytes(5_000_000))
    size = _size(entry)

    listed = next(store for store in disk_stores(cache) if store.kind == "embeddings")
    assert (listed.entries, listed.size) == (1, size + 8_000_000)
    assert "8.0 MB left by stopped writes" in listed.note, listed.note
    capsys.readouterr()
    assert main(["cache", "clear", "--embeddings", "--cache", str(cache), "--yes"]) == 0
    out = capsys.readouterr().out
    freed = f"freed {(size + 8_000_000) / 1e6:,.1f} MB (1 entry, 2 leftovers of stopped writes) in {cache}"
    assert f"embedding cache: {freed}" in out, out
    assert not entry.exists() and not temporary.exists() and not trashed.exists()
