"""The console's many-instances functions over a (Z, Y, X) stack layer: plane by plane at one object size, ids linked
across planes, as ``promptseg oneshot`` segments a stack (methods.instances.stack_planes, their one code path)."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from napari.layers import Image, Labels, Shapes

import napari_promptseg
from napari_promptseg.errors import PromptsegError

from .test_console_layers import console, rectangle


@pytest.fixture(scope="module")
def nuclei_stack() -> tuple[np.ndarray, np.ndarray]:
    """A (Z, Y, X) stack of 3 planes and its 3D ground truth: the nuclei sample's 128 x 128 px bottom-left crop (20
    nuclei), each nucleus a spheroid cut by the planes (real texture; 15, 20 and 13 nuclei on the planes)."""
    from napari_promptseg import _sample_data

    (image, _, _), (truth, _, _) = _sample_data.nuclei()
    return _sample_data.spheroid_stack(image[128:, :128], truth[128:, :128], planes=3, seed=0, jitter=1)


@pytest.fixture(scope="module")
def reference_model(nuclei_stack, litemedsam):
    """The exemplars of plane 0's labelled nuclei, as segment_instances_like fits them."""
    from napari_promptseg.methods.instances import fit_exemplars
    from napari_promptseg.models.preprocessing import as_channels_last

    stack, truth = nuclei_stack
    return fit_exemplars(litemedsam, as_channels_last(stack[1]), truth[1])


def stack_examples(function) -> str:
    """The docstring example of ``function`` that runs over a stack (the one saying '(Z, Y, X)')."""
    parts = function.__doc__.split("Example")[1:]
    (part,) = [p for p in parts if "(Z, Y, X)" in p.split("::", 1)[0]]
    return textwrap.dedent(part.split("::", 1)[1].split('"""')[0].strip("\n"))


def test_segment_instances_like_segments_a_stack_layer_plane_by_plane_at_one_size(
    nuclei_stack, reference_model, litemedsam
):
    """A (Z, Y, X) target layer was refused as 'an ambiguous 3D array' while promptseg oneshot segments a stack plane
    by plane at one object size (measured on its middle plane), ids linked across planes. Now the console does the
    same, a stack reference layer giving the plane its labels mark."""
    from napari_promptseg.methods.instances import match_instances, stack_object_size
    from napari_promptseg.methods.volume import StackResult
    from napari_promptseg.models.preprocessing import as_channels_last

    stack, truth = nuclei_stack
    labels = np.zeros_like(truth)
    labels[1] = truth[1]  # the nuclei of plane 1 labelled, the other planes not
    layer = Image(stack, name="spheroids", scale=(3.0, 0.5, 0.5))
    result = napari_promptseg.segment_instances_like(
        layer, Labels(labels, name="plane 1 nuclei"), layer, segmenter=litemedsam
    )
    assert isinstance(result, StackResult) and result.labels.shape == stack.shape
    # the CLI's stack: one size for every plane, each plane's objects linked to the previous plane's
    size = stack_object_size(reference_model, stack, litemedsam.input_size, as_channels_last)
    expected = napari_promptseg.segment_stack(
        stack,
        lambda plane: napari_promptseg.segment_instances_like(
            stack[1], truth[1], plane, segmenter=litemedsam, model=reference_model, object_size=size
        ),
    )
    np.testing.assert_array_equal(result.labels, expected.labels)
    assert {p.scale.source for p in result.planes} == {"measured on the stack's middle plane"}
    for z in range(len(stack)):  # real nuclei found on each plane, ids unique across the planes
        f1 = match_instances(truth[z], result.labels[z])["f1"]
        assert f1 > 0.5, (z, f1)
    assert result.objects == len(result.extents) == len(np.unique(result.labels)) - 1


def test_find_all_like_learns_the_boxed_plane_and_finds_its_like_on_every_plane(nuclei_stack, litemedsam):
    """find_all_like refused a (Z, Y, X) layer with a Shapes layer of boxes on one of its planes ('ambiguous'); the
    boxed plane's objects are learnt, and every plane segmented with them at the boxes' size, ids linked."""
    from napari_promptseg.methods.instances import find_all_like, match_instances
    from napari_promptseg.methods.volume import StackResult

    stack, truth = nuclei_stack
    ids = [i for i in np.unique(truth[1]) if i][:3]
    corners = []
    for i in ids:
        rows, cols = np.nonzero(truth[1] == i)
        box = (cols.min() - 2, rows.min() - 2, cols.max() + 2, rows.max() + 2)
        corners.append(np.c_[np.full(4, 1.0), rectangle(box)])  # on plane 1
    boxes = Shapes(corners, shape_type="rectangle", name="boxes")
    result = find_all_like(Image(stack, name="spheroids"), boxes, segmenter=litemedsam)
    assert isinstance(result, StackResult) and result.labels.shape == stack.shape
    for z in range(len(stack)):
        f1 = match_instances(truth[z], result.labels[z])["f1"]
        assert f1 > 0.5, (z, f1)
    sources = {p.scale.source for p in result.planes}
    assert len(sources) == 1 and "stack" not in sources.pop()  # the boxes' size for every plane, not measured
    flat = Shapes([rectangle((10, 10, 30, 30))], shape_type="rectangle", name="flat")
    with pytest.raises(PromptsegError, match=r"'flat' has 2 axes: which plane\?"):
        find_all_like(Image(stack, name="spheroids"), flat, segmenter=litemedsam)


def test_the_instance_functions_stack_examples_run_in_a_viewer(make_viewer, nuclei_stack, litemedsam):
    """help(segment_instances_like) and help(find_all_like) show a stack example each; as written, they find the
    stack's nuclei, the labels laid over the scaled stack layer."""
    stack, truth = nuclei_stack
    viewer = make_viewer()
    layer = viewer.add_image(stack, name="stack", scale=(3.0, 0.5, 0.5))
    some = np.zeros_like(truth)
    some[1] = truth[1]
    viewer.add_labels(some, name="nuclei of plane 1", scale=layer.scale)
    ids = [i for i in np.unique(truth[1]) if i][:3]
    corners = []
    for i in ids:
        rows, cols = np.nonzero(truth[1] == i)
        box = (cols.min() - 2, rows.min() - 2, cols.max() + 2, rows.max() + 2)
        corners.append(np.c_[np.full(4, 1.0), rectangle(box)] * layer.scale)
    viewer.add_shapes(corners, shape_type="rectangle", name="boxes on plane 1")
    for function, added in (
        (napari_promptseg.segment_instances_like, "nuclei in 3D"),
        (napari_promptseg.find_all_like, "all nuclei in 3D"),
    ):
        exec(stack_examples(function), console(viewer))  # noqa: S102
        found = viewer.layers[added]
        assert found.data.shape == stack.shape and tuple(found.scale) == (3.0, 0.5, 0.5), function.__name__
        assert all(len(np.unique(plane)) > 5 for plane in found.data), function.__name__
