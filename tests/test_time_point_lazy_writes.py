"""--time T on a time-lapse pyramid: the time point's labels, found on a level and back at full resolution lazily, are
written without being made whole, as a z-stack pyramid's are (an OME-Zarr's labels block by block, a TIFF tile by
tile): the (T, Z, Y, X) labels of every time point were built in memory first (3 time points of 5 planes of 16k x
16k: 7.5 GB), then the time point's volume read whole for its chunks."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import tifffile
from skimage import data
from skimage.measure import label

from napari_promptseg.io import images
from napari_promptseg.io.time_point_labels import write_input_time_point
from napari_promptseg.tiling import lazy_upsampled_labels, upsample_labels

from .test_stack_pyramid_commands import write_pyramid, zarr_labels

SHAPE = (4, 2048, 2048)  # one time point's volume at full resolution: 32 MB of uint16 labels
VOLUME_BYTES = int(np.prod(SHAPE)) * 2


@pytest.fixture(scope="module")
def level_labels() -> dict[int, np.ndarray]:
    """Each time point's labels as found on a level 2048 / 384 times coarser: the real coins, labelled (a time point
    and a plane: the coins moved)."""
    coins = data.coins()
    return {
        t: np.stack([label(np.roll(coins, 40 * (z + 2 * t), axis=1) > 120) for z in range(SHAPE[0])]).astype(np.uint16)
        for t in range(2)
    }


def peak_of(write) -> int:
    """The peak of memory allocated while ``write()`` runs (the writers' modules imported before)."""
    import ome_zarr.writer  # noqa: F401
    import zarr  # noqa: F401

    tracemalloc.start()
    try:
        write()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_an_ome_zarr_time_point_is_written_block_by_block(tmp_path, level_labels):
    levels = [np.zeros((2, SHAPE[0], 2048 // f, 2048 // f), np.uint8) for f in (1, 2, 4)]
    movie = write_pyramid(levels, tmp_path / "movie.ome.zarr", "tzyx")
    for t in (1, 0):  # the labels written whole first (no earlier labels), then the time point's chunks alone
        lazy = lazy_upsampled_labels(level_labels[t], SHAPE)
        peak = peak_of(lambda lazy=lazy, t=t: write_input_time_point(movie, lazy, t, 2, tmp_path / "out"))
        assert peak < VOLUME_BYTES / 2, f"time point {t}: {peak / 1e6:.1f} MB allocated at the peak"
    written = zarr_labels(movie)
    assert written.shape == (2, *SHAPE)
    for t in (0, 1):
        np.testing.assert_array_equal(written[t], upsample_labels(level_labels[t], SHAPE))


def test_a_tiff_time_point_is_written_tile_by_tile_keeping_the_earlier_ones(tmp_path, level_labels, monkeypatch):
    monkeypatch.setattr(images, "LAZY_WHOLE_ABOVE_BYTES", 2**20)
    movie = tmp_path / "movie.ome.tif"
    tifffile.imwrite(movie, np.zeros((2, *SHAPE), np.uint8), metadata={"axes": "TZYX"})
    out = tmp_path / "out"
    for t in (1, 0):  # the second run keeps the first one's time point
        lazy = lazy_upsampled_labels(level_labels[t], SHAPE)
        peak = peak_of(lambda lazy=lazy, t=t: write_input_time_point(movie, lazy, t, 2, out, output_format="tiff"))
        assert peak < VOLUME_BYTES / 2, f"time point {t}: {peak / 1e6:.1f} MB allocated at the peak"
        (out / "report.json").write_text(f'{{"images": [{{"input": "{movie}", "output": "{out / "movie.tif"}"}}]}}')
    written = tifffile.imread(out / "movie.tif")
    assert written.shape == (2, *SHAPE)
    for t in (0, 1):
        np.testing.assert_array_equal(written[t], upsample_labels(level_labels[t], SHAPE))


def test_a_failed_time_points_empty_labels_are_not_made_whole(tmp_path, level_labels, monkeypatch):
    """A batch's time point that failed writes empty labels over it, the earlier runs' time points kept: its empty
    (Z, Y, X) volume was made whole at full resolution (2.5 GB for 5 planes of 16k x 16k) to be written."""
    from types import SimpleNamespace

    import dask.array as da

    from napari_promptseg.batch.task import _without_result

    levels = [np.zeros((2, SHAPE[0], 2048 // f, 2048 // f), np.uint8) for f in (1, 2, 4)]
    movie = write_pyramid(levels, tmp_path / "movie.ome.zarr", "tzyx")
    out = tmp_path / "out"
    write_input_time_point(movie, lazy_upsampled_labels(level_labels[0], SHAPE), 0, 2, out)
    image = da.zeros((2, *SHAPE), np.uint8, chunks=(1, 1, 1024, 1024))  # the time-lapse as read: its shape alone
    monkeypatch.setattr(images, "LAZY_WHOLE_ABOVE_BYTES", 2**20)
    args = SimpleNamespace(time=1, output=out)
    record = {}
    peak = peak_of(lambda: record.update(_without_result(args, str(movie), image, RuntimeError("the model failed"))))
    assert peak < VOLUME_BYTES / 2, f"{peak / 1e6:.1f} MB allocated at the peak"
    assert record["status"] == "failed" and record["kept_time_points"] == [0]
    written = zarr_labels(movie)
    assert not written[1].any()
    np.testing.assert_array_equal(written[0], upsample_labels(level_labels[0], SHAPE))
