"""Stack pyramids (a z-stack OME-Zarr's levels: the planes downsampled, Z kept at every level) propagated and
segmented at the level the prompts need, as a 2D slide is, in Python and on the command line: the full-resolution
level is not read, the labels come back at full resolution, and the level is said (result, report.json). Real
pixels: the shared brain MRI's planes around the left thalamus, magnified 4x (a large scan's resolution) and the
real LiteMedSAM model."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from napari_promptseg.methods.metrics import dice

from .conftest import thalamus_planes

#: the magnification of the MRI planes: the pyramid's full resolution, its levels 2x and 4x coarser
MAGNIFY = 4


def _counting_level(stack: np.ndarray, reads: list):
    """``stack`` as a lazy dask array whose chunk reads are counted in ``reads``."""
    import dask.array as da

    def read(block: np.ndarray) -> np.ndarray:
        if block.size:  # not dask's look at an empty block for the dtype
            reads.append(block.shape)
        return block

    return da.from_array(stack, chunks=(1, *stack.shape[1:])).map_blocks(read, dtype=stack.dtype)


@pytest.fixture(scope="module")
def magnified_thalamus(shared_data):
    """(the MRI planes magnified 4x (bilinear: a finer scan of the same brain) as a 3-level pyramid, its levels
    averaged 2x2 and 4x4 as a pyramid is built; the thalamus mask at full resolution; its box on plane 3 there)."""
    from scipy import ndimage
    from skimage.transform import downscale_local_mean

    vol, truth, (x0, y0, x1, y1) = thalamus_planes(shared_data)
    full = ndimage.zoom(vol, (1, MAGNIFY, MAGNIFY), order=1)
    levels = [full, *(downscale_local_mean(full, (1, f, f)).astype(np.float32) for f in (2, 4))]
    box = (MAGNIFY * x0, MAGNIFY * y0, MAGNIFY * x1 + MAGNIFY - 1, MAGNIFY * y1 + MAGNIFY - 1)
    return levels, np.kron(truth, np.ones((1, MAGNIFY, MAGNIFY), bool)), box


def test_a_stack_pyramid_is_propagated_at_the_level_of_the_boxes_not_its_full_resolution(
    magnified_thalamus, litemedsam
):
    """propagate_through_stack read a stack pyramid at its full resolution (every plane of it, 16x the pixels the
    boxes' scale needs). It is carried at the coarsest level with the boxes' resolution now: the full resolution is
    not read, the labels come back over it (lazily), and the result says at which level."""
    from napari_promptseg.methods.volume import propagate_through_stack
    from napari_promptseg.tiling import prompts_to_level, upsample_labels

    levels, truth, box = magnified_thalamus
    reads: list = []
    pyramid = [_counting_level(levels[0], reads), *levels[1:]]
    result = propagate_through_stack(pyramid, 3, boxes=[box], segmenter=litemedsam)
    assert not reads, "the full-resolution level was read"
    index = result.pyramid_level
    factor = float(2**index)
    assert index > 0 and result.level_factors == (factor, factor)
    assert result.labels.shape == truth.shape and not isinstance(result.labels, np.ndarray)  # lazy
    assert result.scale is not None and result.scale.object_size > 100  # in full-resolution pixels
    # the level's own pixels, propagated as they are, the box taken there as the 2D path takes it: the same objects
    level_box = prompts_to_level([box], 4, (factor, factor))
    direct = propagate_through_stack(levels[index], 3, boxes=level_box, segmenter=litemedsam)
    np.testing.assert_array_equal(result.level_labels, direct.labels)
    full = np.asarray(result.labels)
    assert not reads, "the full-resolution level was read for the labels"
    np.testing.assert_array_equal(full, upsample_labels(direct.labels, truth.shape))
    assert dice(full > 0, truth) > 0.75
    assert result.extents == direct.extents


def write_stack_pyramid(levels: list, path: Path) -> Path:
    """``levels`` ((Z, Y, X), largest first, each 2x coarser in Y and X) as an OME-Zarr z-stack, chunked by plane."""
    import zarr
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_multiscale

    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    scales = [[{"type": "scale", "scale": [1.0, 2.0**k, 2.0**k]}] for k in range(len(levels))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        write_multiscale(
            levels,
            root,
            axes="zyx",
            fmt=FormatV04(),
            coordinate_transformations=scales,
            storage_options=[
                {"chunks": (1, min(1024, np.shape(level)[1]), min(1024, np.shape(level)[2]))} for level in levels
            ],
        )
    return path


def _zarr_labels(path: Path) -> np.ndarray:
    from napari_promptseg.io.multiscale import open_multiscale

    return np.asarray(open_multiscale(path / "labels" / "promptseg").levels[0])


@pytest.mark.parametrize("propagate", [True, False], ids=["propagate", "plane"])
def test_the_cli_reads_a_stack_pyramid_at_the_level_of_the_boxes_and_says_which(
    magnified_thalamus, tmp_path, propagate, capsys
):
    """`promptseg segment STACK.ome.zarr --box ... --plane Z [--propagate]` read the z-stack's full resolution (every
    plane for --propagate) and its report.json said no level. The stack is read at the boxes' level, as a 2D slide
    is: report.json says pyramid_level and level_factor, and the labels in the OME-Zarr are at full resolution."""
    from napari_promptseg.cli import main

    levels, truth, box = magnified_thalamus
    path = write_stack_pyramid(levels, tmp_path / "thalamus.ome.zarr")
    out = tmp_path / "out"
    options = ["--plane", "3", "--overlay", *(["--propagate"] if propagate else [])]
    assert main(["segment", str(path), "--box", *map(str, box), *options, "-o", str(out)]) == 0, capsys.readouterr()
    record = json.loads((out / "report.json").read_text())["images"][0]
    assert record["pyramid_level"] > 0 and record["level_factor"] == 2.0 ** record["pyramid_level"], record
    labels = _zarr_labels(path)
    assert labels.shape == truth.shape
    assert Path(record["overlay"]).exists()
    if propagate:
        assert dice(labels > 0, truth) > 0.75
        assert record["objects"] == 1 and record["extents"]["1"][0] < 3 < record["extents"]["1"][1]
    else:
        assert not np.delete(labels, 3, axis=0).any()
        assert record["objects"] == 1 and record["extents"] == {"1": [3, 3]}
        assert dice(labels[3] > 0, truth[3]) > 0.75


def test_seed_labels_on_a_level_of_a_stack_pyramid_seed_its_propagation_there(magnified_thalamus, litemedsam):
    """Seed labels of a stack pyramid on one of its levels' planes (the Interactive widget's labels level of a stack
    of whole-slide planes), not only at full resolution: the objects' size is taken in full-resolution pixels (the
    level of a box around them is read), and the seed plane's labels come back as given."""
    from napari_promptseg.methods.volume import propagate_through_stack
    from napari_promptseg.tiling import upsample_labels

    levels, truth, box = magnified_thalamus
    boxed = propagate_through_stack(levels, 3, boxes=[box], segmenter=litemedsam)
    seed = boxed.level_labels[3]
    result = propagate_through_stack(levels, 3, labels=seed, segmenter=litemedsam)
    assert result.pyramid_level == boxed.pyramid_level
    np.testing.assert_array_equal(np.asarray(result.labels[3]), upsample_labels(seed, truth.shape[1:]))
    first, last = result.extents[1]
    assert first < 3 < last
    assert dice(np.asarray(result.labels) > 0, truth) > 0.75


def test_lazy_labels_are_written_into_an_ome_zarr_as_the_same_labels_in_memory(magnified_thalamus, tmp_path):
    """Labels found on a stack pyramid's level come back at full resolution lazily and are written into the OME-Zarr
    block by block, each labels level sampled from the level they were found on: every level as the labels made
    whole in memory are written (the MRI's thalamus, as labels on the pyramid's 2x level)."""
    from napari_promptseg.io.multiscale import open_multiscale
    from napari_promptseg.io.ome_zarr_labels import write_ome_zarr_labels
    from napari_promptseg.tiling import lazy_upsampled_labels, upsample_labels

    levels, truth, _ = magnified_thalamus
    level_labels = truth[:, ::2, ::2].astype(np.uint16) * 7  # id 7, as found on the 2x level
    written = {}
    for kind, labels in (
        ("memory", upsample_labels(level_labels, truth.shape)),
        ("lazy", lazy_upsampled_labels(level_labels, truth.shape)),
    ):
        path = write_stack_pyramid(levels, tmp_path / f"{kind}.ome.zarr")
        write_ome_zarr_labels(path, labels, output=tmp_path / kind)
        written[kind] = [np.asarray(level) for level in open_multiscale(path / "labels" / "promptseg").levels]
    assert [w.shape for w in written["lazy"]] == [w.shape for w in written["memory"]] and len(written["lazy"]) == 3
    for lazy, memory in zip(written["lazy"], written["memory"], strict=True):
        np.testing.assert_array_equal(lazy, memory)
        assert lazy.dtype == memory.dtype == np.uint16
    assert set(np.unique(written["lazy"][0])) == {0, 7}
