"""The console's whole-plane functions over a multiscale (Z, Y, X) stack layer (a z-stack OME-Zarr's levels, a stack of
whole-slide planes): every plane read at the one level the CLI reads a stack pyramid at
(methods.volume.levels.stack_read_level, their one code path), never at full resolution; the labels back at full
resolution lazily, the level said on the result."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from napari.layers import Image, Shapes

import napari_promptseg

from .test_console_layers import rectangle

UP = 16  # the full-resolution level's planes are the real crop this many times larger (2048 px)


@pytest.fixture(scope="module")
def nuclei_planes() -> tuple[np.ndarray, np.ndarray]:
    """Two planes of nuclei (the nuclei sample's 128 x 128 px bottom-left crop cut as spheroids) and their ids."""
    from napari_promptseg import _sample_data

    (image, _, _), (truth, _, _) = _sample_data.nuclei()
    return _sample_data.spheroid_stack(image[128:, :128], truth[128:, :128], planes=2, seed=0, jitter=1)


def never_read(shape: tuple[int, ...], dtype: np.dtype) -> da.Array:
    """A lazy full-resolution level whose pixels fail the test when read."""

    def refuse(block: np.ndarray) -> np.ndarray:
        raise AssertionError("the full-resolution level of the stack pyramid was read")

    return da.zeros(shape, dtype, chunks=(1, 512, 512)).map_blocks(refuse, dtype=dtype)


def enlarged(stack: np.ndarray, k: int) -> object:
    """``stack``'s planes ``k`` times larger, lazily (each pixel a k x k block)."""
    if k == 1:
        return stack
    return da.from_array(stack, chunks=(1, *stack.shape[1:])).repeat(k, axis=1).repeat(k, axis=2)


def pyramid_layer(stack: np.ndarray) -> Image:
    """A multiscale stack layer of 2048 px planes (never to be read), levels 2, 4, 8 and 16 times coarser."""
    levels = [never_read((len(stack), *(np.array(stack.shape[1:]) * UP)), stack.dtype)]
    levels += [enlarged(stack, UP // f) for f in (2, 4, 8, 16)]
    return Image(levels, multiscale=True, name="slide stack", contrast_limits=(0, 255))


def test_segment_text_reads_a_stack_pyramid_at_the_whole_plane_level(nuclei_planes, litemedsam, tmp_path):
    """segment_text over a multiscale stack layer read every plane at full resolution (5 planes of 16k x 16k were
    read whole), where `promptseg text` reads them at the level a text model sees a plane at (1024 px): now the
    console takes the CLI's level, and says it."""
    from napari_promptseg.io.library import ReferenceLibrary

    stack, truth = nuclei_planes
    library = ReferenceLibrary(tmp_path / "library")
    library.add("nuclear region", stack[1], truth[1] > 0, margin=None, instances=False)
    layer = pyramid_layer(stack)
    result = napari_promptseg.segment_text(
        layer, "nuclear region", route="library", library=tmp_path / "library", segmenter=litemedsam
    )
    assert result.pyramid_level == 1 and result.level_factors == (2.0, 2.0)
    assert result.labels.shape == layer.data[0].shape  # the full-resolution grid, lazily
    assert result.level_labels.shape == (2, 1024, 1024)
    for z, plane in enumerate(result.planes):
        assert plane.labels.shape == (1024, 1024)
        np.testing.assert_array_equal(plane.labels > 0, result.level_labels[z] > 0)
    np.testing.assert_array_equal(np.asarray(result.labels[:, ::2, ::2]), result.level_labels)
    assert result.level_labels.any()


def test_segment_like_reads_a_stack_pyramid_target_at_the_whole_plane_level(nuclei_planes, litemedsam):
    """segment_like's stack target, a multiscale layer: read at the level one-shot reads a target pyramid at (the
    CLI's), not at full resolution."""
    stack, truth = nuclei_planes
    (result,) = napari_promptseg.segment_like(
        stack[1], truth[1] > 0, pyramid_layer(stack), segmenter=litemedsam, strategy="persam"
    )
    assert result.pyramid_level == 1 and result.labels.shape == (2, 2048, 2048)
    assert [p.labels.shape for p in result.planes] == [(1024, 1024)] * 2
    assert result.level_labels.any()


@pytest.fixture(scope="module")
def plane_model(nuclei_planes, litemedsam):
    """The exemplars of plane 1's nuclei, fitted on the real 128 px plane."""
    from napari_promptseg.methods.instances import fit_exemplars
    from napari_promptseg.models.preprocessing import as_channels_last

    stack, truth = nuclei_planes
    return fit_exemplars(litemedsam, as_channels_last(stack[1]), truth[1])


def test_the_instance_functions_read_a_stack_pyramid_at_their_objects_level(nuclei_planes, plane_model, litemedsam):
    """segment_instances_like and find_all_like over a multiscale stack layer read its planes at full resolution; the
    CLI reads them at the level the objects' working scale needs. Now the console does, and finds the nuclei there."""
    from napari_promptseg.methods.instances import find_all_like, match_instances
    from napari_promptseg.methods.volume.levels import stack_level_for_scale, stack_pyramid
    from napari_promptseg.tiling import box_object_size, choose_scale

    stack, truth = nuclei_planes
    size = UP * plane_model.object_size  # the nuclei's size at full resolution
    layer = pyramid_layer(stack)
    # the CLI's level for objects of that size (its rule: that of a 2D pyramid)
    expected = stack_level_for_scale(stack_pyramid(layer.data), choose_scale((2048, 2048), 256, size).scale)
    assert expected.index > 0
    result = napari_promptseg.segment_instances_like(
        stack[1], truth[1], layer, model=plane_model, object_size=size, segmenter=litemedsam
    )
    k = UP // int(expected.factor)  # the level's planes are the real crop k times larger
    at_level = truth.repeat(k, axis=1).repeat(k, axis=2)
    assert result.pyramid_level == expected.index and result.labels.shape == (2, 2048, 2048)
    assert result.level_labels.shape == at_level.shape
    for z in range(2):
        f1 = match_instances(result.level_labels[z], at_level[z])["f1"]
        assert f1 > 0.5, (z, f1)
    big_truth = truth[1].repeat(UP, axis=0).repeat(UP, axis=1)
    corners, boxes = [], []
    for i in [i for i in np.unique(truth[1]) if i][:3]:
        rows, cols = np.nonzero(big_truth == i)
        boxes.append((cols.min(), rows.min(), cols.max(), rows.max()))
        corners.append(np.c_[np.full(4, 1.0), rectangle(boxes[-1])])
    found = find_all_like(pyramid_layer(stack), Shapes(corners, shape_type="rectangle"), segmenter=litemedsam)
    scale = choose_scale((2048, 2048), 256, box_object_size(np.array(boxes))).scale
    assert found.pyramid_level == stack_level_for_scale(stack_pyramid(layer.data), scale).index > 0
    k = UP // int(found.level_factors[0])
    for z in range(2):
        f1 = match_instances(found.level_labels[z], truth[z].repeat(k, axis=0).repeat(k, axis=1))["f1"]
        assert f1 > 0.5, (z, f1)
