"""Whether a run's embeddings came from the disk embedding cache (report.json, the CLI's lines), and what a clear of a
cache that cannot be written says it would free: real LiteMedSAM embeddings of small skimage images."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage import data

from napari_promptseg.cli import main
from napari_promptseg.models import embedding_cache
from napari_promptseg.models.embedding_cache import DiskEmbeddingCache


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("cache-report-images")
    coins = folder / "coins.tif"
    moon = folder / "moon.tif"
    tifffile.imwrite(coins, np.ascontiguousarray(data.coins()[:96, 40:168]))  # 96 x 128, seen by no other test
    tifffile.imwrite(moon, np.ascontiguousarray(data.moon()[::4, ::4][::-1]))  # 128 x 128
    return [coins, moon]


def _segment(images: list[Path], out: Path, cache: Path, *extra: str) -> dict:
    argv = ["segment", *map(str, images), "--box", "10", "10", "60", "60", "-o", str(out), "--cache", str(cache)]
    assert main([*argv, *extra]) == 0
    return json.loads((out / "report.json").read_text())


def test_report_and_lines_say_which_embeddings_came_from_the_disk_cache(litemedsam, images, tmp_path, capsys):
    """report.json said nothing of the disk cache: a run that read every embedding from it and one that computed them
    all were told apart only by their timings. Each image now has embedding_from_cache (and counts), the run a
    summary, and the CLI's lines say it."""
    cache = tmp_path / "cache"
    litemedsam.cache.clear()
    first = _segment(images, tmp_path / "first", cache)
    out, err = capsys.readouterr()
    for record in first["images"]:
        assert record["embedding_from_cache"] is False, record
        assert record["embeddings_from_cache"] == {"read": 0, "computed": 1}, record
    assert first["batch"]["embedding_cache"] == {
        "path": str(cache),
        "images": 2,
        "images_from_cache": 0,
        "embeddings_read": 0,
        "embeddings_computed": 2,
    }
    assert "embedding computed" in out and "from the disk cache" not in out, out
    assert f"embedding cache {cache}: 0 of 2 image(s) read from it (2 embedding(s) computed)" in err, err

    litemedsam.cache.clear()  # as in a new process: only the disk cache can answer
    second = _segment(images, tmp_path / "second", cache)
    out, err = capsys.readouterr()
    for record in second["images"]:
        assert record["embedding_from_cache"] is True, record
        assert record["embeddings_from_cache"] == {"read": 1, "computed": 0}, record
    assert second["batch"]["embedding_cache"]["images_from_cache"] == 2
    assert out.count("embedding from the disk cache") == 2, out
    assert f"embedding cache {cache}: 2 of 2 image(s) read from it (0 embedding(s) computed)" in err, err


def test_a_tiled_image_counts_its_embeddings_read_and_computed(litemedsam, tmp_path, capsys):
    """Tiles are embeddings of their own: a second box's tile computed beside the first box's read from the cache is
    said as counts, and the image is not 'from the cache'."""
    image = tmp_path / "coins.tif"
    # 303 x 384, its boxes' tiles seen by no other test
    tifffile.imwrite(image, np.ascontiguousarray(data.coins()[::-1]))
    cache = tmp_path / "cache"
    first_box = ["--box", "10", "10", "60", "60"]
    litemedsam.cache.clear()
    one = _segment([image], tmp_path / "one", cache, *first_box, "--object-size", "8")
    assert one["images"][0]["embeddings_from_cache"] == {"read": 0, "computed": 1}
    litemedsam.cache.clear()
    two = _segment([image], tmp_path / "two", cache, "--box", "200", "200", "260", "260", "--object-size", "8")
    out = capsys.readouterr().out
    (record,) = two["images"]
    assert record["embeddings_from_cache"] == {"read": 1, "computed": 1}, record
    assert record["embedding_from_cache"] is False, record  # not all of them
    assert "1 of 2 embeddings from the disk cache" in out, out


def test_a_run_without_a_disk_cache_says_so_in_its_report(litemedsam, images, tmp_path):
    out = tmp_path / "out"
    assert main(["segment", str(images[0]), "--box", "10", "10", "60", "60", "-o", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["batch"]["embedding_cache"] is None
    assert report["images"][0]["embedding_from_cache"] is False


def test_a_dry_run_on_a_read_only_cache_does_not_promise_to_free_anything(
    litemedsam, images, tmp_path, capsys, monkeypatch
):
    """A cache on a read-only mount (or another user's): `promptseg cache clear --embeddings` printed 'to free 4.2 MB
    (2 entries)', asked 'delete these files?', then could delete none of them. It now says they cannot be removed
    and why, and asks nothing."""
    cache = tmp_path / "cache"
    litemedsam.cache.clear()
    _segment(images, tmp_path / "out", cache)
    capsys.readouterr()
    entries = [path for _, _, path in DiskEmbeddingCache(cache, fit_cap=False).entries()]
    assert len(entries) == 2
    read_only = {cache, *(entry.parent for entry in entries)}
    for folder in read_only:
        folder.chmod(0o555)
    # root writes through any mode bits; a read-only mount refuses root too, and access() says so (EROFS)
    access = os.access
    monkeypatch.setattr(
        embedding_cache.os,
        "access",
        lambda path, mode, *a, **k: (
            False if Path(path) in read_only and mode & os.W_OK else access(path, mode, *a, **k)
        ),
    )
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))  # the user would say yes: nothing must be asked
    try:
        code = main(["cache", "clear", "--embeddings", "--cache", str(cache)])
    finally:
        for folder in read_only:
            folder.chmod(0o755)
    out, err = capsys.readouterr()
    assert "to free" not in err and "freed" not in out, (out, err)
    assert "delete these files?" not in out, out
    assert f"embedding cache: nothing can be freed in {cache}: 2 entries" in err, err
    assert "cannot be written" in err, err
    assert code == 1, (code, out, err)
    assert all((entry / "zarr.json").is_file() for entry in entries)


def test_a_clear_where_some_entries_cannot_go_frees_the_others_and_says_which_stayed(
    litemedsam, images, tmp_path, capsys, monkeypatch
):
    """One entry's folder read-only (another user's subfolder): the plan counts only what can go, the clear frees
    that, says what stayed and why, and exits 1 (not everything asked for was done)."""
    cache = tmp_path / "cache"
    litemedsam.cache.clear()
    _segment(images, tmp_path / "out", cache)
    capsys.readouterr()
    stuck, freed = sorted((path for _, _, path in DiskEmbeddingCache(cache, fit_cap=False).entries()), key=str)
    access = os.access
    monkeypatch.setattr(
        embedding_cache.os,
        "access",
        lambda path, mode, *a, **k: False if Path(path) == stuck.parent and mode & os.W_OK else access(path, mode),
    )
    code = main(["cache", "clear", "--embeddings", "--cache", str(cache), "--yes"])
    out, err = capsys.readouterr()
    assert "to free" in err and "(1 entry)" in err and "1 entry (" in err and "cannot be removed" in err, err
    assert "freed" in out and "(1 entry)" in out, out
    assert code == 1, (code, out, err)
    assert (stuck / "zarr.json").is_file() and not freed.exists()
