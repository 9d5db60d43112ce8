"""`promptseg embed` on a time-lapse of volumes (T, Z, Y, X): --time T (or --time all) precomputes the planes the
later `segment --time T` run reads, so that run computes no embedding. The real brain MRI and the real LiteMedSAM.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_promptseg.cli import main
from napari_promptseg.models.embedding_cache import DiskEmbeddingCache

from .conftest import thalamus_planes
from .test_time_point_files import _write_tzyx_ome_zarr


@pytest.fixture(scope="module")
def movie(shared_data):
    """The MRI time-lapse of tests/test_time_point_files.py, 3 planes (2 time points of 110 x 140 px; time point 0
    upside down), the box on plane 1 and the thalamus there."""
    vol, truth, box = thalamus_planes(shared_data, 1, 1)
    return np.stack([vol[:, ::-1], vol]), box, truth[1]


def _segment_reads(path, out, box, t, cache_dir, litemedsam) -> dict:
    """``segment --time t --propagate`` with the disk cache: its report's embeddings read and computed."""
    litemedsam.cache.clear()  # the model's memory would answer for the planes embed just encoded
    args = ["segment", str(path), "-o", str(out), "--box", *map(str, box), "--plane", "1", "--propagate"]
    args += ["--time", str(t), "--cache", str(cache_dir), "--scheduler", "none"]
    assert main(args) == 0
    record = json.loads((out / "report.json").read_text())["images"][0]
    assert record["status"] == "ok" and record["objects"] >= 1
    return record["embeddings_from_cache"]


def test_embed_time_point_fills_the_cache_a_later_time_point_run_reads(movie, litemedsam, tmp_path, capsys):
    """embed had no --time: a time-lapse of volumes was refused with 'segment, oneshot and text take --time T', no
    way to precompute it. embed --time T now encodes that time point's planes as `segment --time T` reads them (the
    pyramid's time point: an OME-Zarr of two levels), and that run (and oneshot --time T) computes none; --time all
    encodes every time point's; without --time the refusal names embed's own option."""
    tz, box, thalamus = movie
    path = tmp_path / "tz.ome.zarr"
    _write_tzyx_ome_zarr(path, tz)
    cache_dir = tmp_path / "cache"
    litemedsam.cache.clear()
    assert main(["embed", str(path), "--cache", str(cache_dir), "--scheduler", "none"]) == 2
    err = capsys.readouterr().err
    assert "a time-lapse of volumes (t=2, z=3)" in err and "embed --time all" in err, err

    assert main(["embed", str(path), "--cache", str(cache_dir), "--time", "1", "--scheduler", "none"]) == 0
    out = capsys.readouterr().out
    assert "3 whole plane(s) at time point 1 of 2, 0 of 3 already cached" in out, out
    assert len(DiskEmbeddingCache(cache_dir).entries()) == 3
    used = _segment_reads(path, tmp_path / "out", box, 1, cache_dir, litemedsam)
    assert used["computed"] == 0 and used["read"] >= 3, used
    # oneshot --time 1 reads the planes alike (its 3 planes; its reference, plane 1, is read before them)
    tifffile.imwrite(tmp_path / "reference.tif", tz[1, 1])
    tifffile.imwrite(tmp_path / "reference_mask.tif", thalamus.astype(np.uint8))
    litemedsam.cache.clear()
    args = ["oneshot", str(path), "--reference", str(tmp_path / "reference.tif"), "--reference-mask"]
    args += [str(tmp_path / "reference_mask.tif"), "-o", str(tmp_path / "oneshot"), "--time", "1"]
    args += ["--labels-name", "oneshot"]  # beside segment's labels in the OME-Zarr
    assert main([*args, "--cache", str(cache_dir), "--scheduler", "none"]) == 0
    record = json.loads((tmp_path / "oneshot" / "report.json").read_text())["images"][0]
    assert record["objects"] >= 1 and record["embeddings_from_cache"] == {"read": 3, "computed": 0}, record

    # every time point: time point 1's planes found, time point 0's encoded; then --time 0 computes none either
    litemedsam.cache.clear()
    assert main(["embed", str(path), "--cache", str(cache_dir), "--time", "all", "--scheduler", "none"]) == 0
    out = capsys.readouterr().out
    assert "6 whole plane(s) in 2 time points, 3 of 6 already cached" in out, out
    assert len(DiskEmbeddingCache(cache_dir).entries()) == 6
    flipped_box = (box[0], tz.shape[2] - 1 - box[3], box[2], tz.shape[2] - 1 - box[1])
    used = _segment_reads(path, tmp_path / "out", flipped_box, 0, cache_dir, litemedsam)
    assert used["computed"] == 0 and used["read"] >= 3, used

    # a time point the time-lapse has not, and every time point of a volume that is no time-lapse: refused naming it
    assert main(["embed", str(path), "--cache", str(cache_dir), "--time", "2", "--scheduler", "none"]) != 0
    assert f"{path} (--time): time point 2 is outside the time-lapse's 2 time points" in capsys.readouterr().err
    volume = tmp_path / "volume.tif"
    tifffile.imwrite(volume, tz[1], photometric="minisblack")
    assert main(["embed", str(volume), "--cache", str(cache_dir), "--time", "all", "--scheduler", "none"]) != 0
    assert f"{volume}: --time all embeds every time point of a time-lapse" in capsys.readouterr().err


def test_embed_time_point_of_a_time_lapse_pyramid_at_the_level_segment_reads(shared_data, litemedsam, tmp_path, capsys):
    """A time-lapse pyramid's planes too big for the model's working scale: segment --time T --object-size PX reads
    them at a coarser level (440 x 560 px planes, 100 px objects: level 1), and embed --time T --object-size PX
    embeds that level's planes (its tiles), the whole planes at the level whole-image methods read."""
    vol, _, (x0, y0, x1, y1) = thalamus_planes(shared_data, 1, 0)
    big = np.kron(vol, np.ones((1, 4, 4), np.float32))  # 2 planes of 440 x 560 px
    path = tmp_path / "tz.ome.zarr"
    _write_tzyx_ome_zarr(path, np.stack([big[:, ::-1], big]))
    cache_dir = tmp_path / "cache"
    litemedsam.cache.clear()
    embed = ["embed", str(path), "--cache", str(cache_dir), "--time", "1", "--object-size", "100"]
    assert main([*embed, "--scheduler", "none"]) == 0
    out = capsys.readouterr().out
    assert "2 whole plane(s) at time point 1 of 2 + 4 tile(s) (pyramid level 0, tiles at level 1)" in out, out
    litemedsam.cache.clear()
    box = [4 * v for v in (x0, y0, x1, y1)]
    args = ["segment", str(path), "-o", str(tmp_path / "out"), "--box", *map(str, box), "--plane", "1"]
    args += ["--propagate", "--time", "1", "--object-size", "100", "--cache", str(cache_dir), "--scheduler", "none"]
    assert main(args) == 0
    record = json.loads((tmp_path / "out" / "report.json").read_text())["images"][0]
    assert record["objects"] == 1 and record["pyramid_level"] == 1
    assert record["embeddings_from_cache"]["computed"] == 0 and record["embeddings_from_cache"]["read"] >= 2, record


@pytest.mark.gui
def test_the_interactive_widget_at_the_time_point_finds_embeds_planes(
    make_viewer, qtbot, movie, litemedsam, tmp_path, capsys
):
    """The Interactive widget on the time-lapse's layer at time point 1 (a box on plane 1, then propagate) reads
    every plane it encodes from what embed --time 1 wrote: none computed."""
    from napari_promptseg.models import embedding_cache

    from .interactive_widget import FIRST_RUN_MS, add_box_on_plane, add_widget, wait_idle

    tz, box, _ = movie
    path = tmp_path / "tz.ome.zarr"
    _write_tzyx_ome_zarr(path, tz)
    cache_dir = tmp_path / "cache"
    litemedsam.cache.clear()
    assert main(["embed", str(path), "--cache", str(cache_dir), "--time", "1", "--scheduler", "none"]) == 0
    litemedsam.cache.clear()
    with embedding_cache.settings_restored():
        disk = embedding_cache.configure(cache_dir)
        viewer = make_viewer()
        (layer,) = viewer.open(str(path), plugin="napari-promptseg")
        viewer.dims.set_current_step(0, 1)  # time point 1
        viewer.dims.set_current_step(1, 1)  # plane 1
        widget = add_widget(viewer)
        widget.new_prompt_layers()
        add_box_on_plane(widget, box, 1, 1)
        wait_idle(qtbot, widget, FIRST_RUN_MS)
        widget.propagate_button.click()
        wait_idle(qtbot, widget, FIRST_RUN_MS)
        assert np.asarray(viewer.layers[f"{layer.name} propagated"].data)[1].any()
        assert disk.hits >= 3 and disk.misses == 0, (disk.hits, disk.misses)
