"""The public API as the napari console uses it: layers' data of every kind napari holds, passed as they are."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

import napari_promptseg
from napari_promptseg.errors import PromptsegError

COINS = data.coins()  # real 303x384 uint8 greyscale photo of coins
BOX = (40.0, 60.0, 120.0, 140.0)  # x0, y0, x1, y1 around the coins at the top left


def pyramid(image: np.ndarray, levels: int = 3) -> list[np.ndarray]:
    return [image[:: 2**k, :: 2**k] for k in range(levels)]


def test_a_multiscale_layer_is_segmented_at_full_resolution(litemedsam):
    """napari's MultiScaleData reads (np.asarray) as its coarsest level: the boxes, drawn in full-resolution pixels,
    were clipped to a 96x76 image, and the labels came back 96x76, fitting no level the user sees."""
    from napari.layers import Image, Labels

    layer = Image(pyramid(COINS), multiscale=True)
    expected = napari_promptseg.segment(COINS, boxes=[BOX], device="cpu")
    assert expected.any()
    for pyramid_data in (layer.data, pyramid(COINS)):  # the layer's data, or a plain list of levels
        labels = napari_promptseg.segment(pyramid_data, boxes=[BOX], device="cpu")
        np.testing.assert_array_equal(labels, expected)

    # a multiscale labels layer as a reference mask, a multiscale image as the reference and as the target
    mask = (expected > 0).astype(np.uint8)
    masks = Labels(pyramid(mask), multiscale=True).data
    (result,) = napari_promptseg.segment_like(layer.data, masks, layer.data, segmenter=litemedsam)
    assert result.labels.shape == COINS.shape
    (plain,) = napari_promptseg.segment_like(COINS, mask, COINS, segmenter=litemedsam)
    np.testing.assert_array_equal(result.labels, plain.labels)

    # a 3D pyramid (Z, Y, X): its planes, not its levels
    stack = np.stack([COINS] * 3)
    stack_layer = Image([stack, stack[:, ::2, ::2]], multiscale=True)
    volume = napari_promptseg.propagate_through_stack(stack_layer.data, 1, boxes=[BOX], segmenter=litemedsam)
    assert volume.labels.shape == stack.shape
    np.testing.assert_array_equal(volume.labels[1] > 0, expected > 0)


def test_a_list_of_unrelated_images_is_refused_with_their_shapes():
    with pytest.raises(PromptsegError, match=r"image: a list of arrays of shapes \(303, 384\), \(384, 303\)"):
        napari_promptseg.segment([COINS, COINS.T], boxes=[BOX], device="cpu")


def test_help_and_tab_completion_list_every_entry_point():
    """help(napari_promptseg) listed segment alone under FUNCTIONS, dir() (the console's tab completion) too: the
    lazily loaded entry points (segment_text, segment_like, register, ...) were missing."""
    import pydoc

    names = [name for name in napari_promptseg.__all__ if not name.startswith("__")]
    assert set(names) <= set(dir(napari_promptseg))
    text = pydoc.render_doc(napari_promptseg, renderer=pydoc.plaintext)
    functions = text.split("FUNCTIONS", 1)[1].split("DATA", 1)[0]
    for name in names:
        assert f"\n    {name}(" in functions, name


def test_the_package_docstrings_example_imports_every_entry_point_it_calls():
    """help(napari_promptseg)'s example imported segment, segment_text, segment_like and register, then called
    train_text_segmenter, propagate_through_stack, disk_stores and clear_stores: pasted as written, a NameError."""
    import ast
    import textwrap

    doc = napari_promptseg.__doc__
    example = textwrap.dedent(doc.split("::", 1)[1].strip("\n"))
    tree = ast.parse(example)
    imported = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    comments = " ".join(line.split("#", 1)[1] for line in example.splitlines() if "#" in line)
    called = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    called |= {name for name in napari_promptseg.__all__ if f"{name}(" in comments}  # the calls its comments suggest
    entry_points = called & set(napari_promptseg.__all__)
    assert entry_points >= {"segment", "train_text_segmenter", "clear_stores"}, entry_points
    assert entry_points <= imported, sorted(entry_points - imported)


def test_every_python_name_the_readmes_give_can_be_imported():
    """The READMEs name functions by their dotted path (``napari_promptseg.io.layer_data.image_layer_data``) and in
    ``from ... import`` lines; one moved (folder_stack_layer_data, to io.folder_layers) left the README naming it bare
    beside the module it had left. Every such name must resolve, so a move or rename updates the README too."""
    import importlib
    import re
    from pathlib import Path

    root = Path(__file__).parents[1]
    missing = []
    for doc in ("README.md", "benchmarks/README.md"):
        text = (root / doc).read_text()
        names = set(re.findall(r"napari_promptseg(?:\.[A-Za-z_]\w*)+", text))
        for module, listed in re.findall(r"from (napari_promptseg[\w.]*) import ([\w, ]+)", text):
            names |= {f"{module}.{name}" for name in re.split(r"[\s,]+", listed) if name}
        for name in sorted(names):
            module, *attributes = name.split(".")
            obj = importlib.import_module(module)
            for part in attributes:  # submodules are imported as reached: a package need not import them
                module = f"{module}.{part}"
                try:
                    obj = getattr(obj, part) if hasattr(obj, part) else importlib.import_module(module)
                except ImportError:
                    obj = None
                    break
            if obj is None:
                missing.append(f"{doc}: {name}")
    assert not missing, missing


def test_segment_like_refuses_names_that_do_not_match_the_targets(litemedsam):
    """One name for two targets: a bare 'zip() argument 2 is shorter than argument 1' ValueError, after the
    reference's features were computed."""
    mask = np.zeros(COINS.shape, np.uint8)
    mask[72:128, 50:110] = 1
    with pytest.raises(PromptsegError, match=r"1 names for 2 targets; give one name per target"):
        napari_promptseg.segment_like(COINS, mask, [COINS, COINS], names=["coins"], segmenter=litemedsam)


def test_propagation_refuses_a_seed_given_both_as_labels_and_as_boxes(litemedsam):
    """labels= and boxes= together: the boxes were dropped without a word, the labels alone propagated."""
    stack = np.stack([COINS, np.roll(COINS, 2, axis=1), np.roll(COINS, 4, axis=1)])
    seed = np.zeros(COINS.shape, np.int64)
    seed[72:128, 50:110] = 5
    with pytest.raises(PromptsegError, match=r"stack: give the seed plane's objects as boxes and points, or as labels"):
        napari_promptseg.propagate_through_stack(
            stack, 1, boxes=[(200, 20, 260, 90)], labels=seed, segmenter=litemedsam
        )
    with pytest.raises(PromptsegError, match=r"not both"):
        napari_promptseg.propagate_through_stack(stack, 1, points=[(230, 55)], labels=seed, segmenter=litemedsam)


def test_one_box_or_point_given_alone_is_that_prompt(litemedsam):
    """boxes=(x0, y0, x1, y1) without the list around it (and points=(x, y)): a bare TypeError "object of type 'int'
    has no len()"; a napari Shapes rectangle (4 corners) the same, and another flat list of numbers no better."""
    from napari_promptseg.methods.interactive import segment_prompts

    expected = segment_prompts(COINS, litemedsam, boxes=[BOX]).labels
    assert expected.any()
    for box in (BOX, np.array(BOX), list(BOX)):
        np.testing.assert_array_equal(segment_prompts(COINS, litemedsam, boxes=box).labels, expected)
    point = ((BOX[0] + BOX[2]) / 2, (BOX[1] + BOX[3]) / 2)
    clicked = segment_prompts(COINS, litemedsam, positive_points=[point]).labels
    np.testing.assert_array_equal(segment_prompts(COINS, litemedsam, positive_points=point).labels, clicked)

    corners = np.array([[60, 40], [60, 120], [140, 120], [140, 40]], float)  # (row, column), as napari holds them
    with pytest.raises(
        PromptsegError,
        match=r"box 1: .* shape \(4, 2\); a napari Shapes rectangle holds 4 corners, \(row, column\) last",
    ):
        segment_prompts(COINS, litemedsam, boxes=[corners])
    with pytest.raises(PromptsegError, match=r"boxes: 8 numbers; expected a list of \(x0, y0, x1, y1\), one per box"):
        segment_prompts(COINS, litemedsam, boxes=[*BOX, *BOX])
    with pytest.raises(PromptsegError, match=r"negative points: 3 numbers; expected a list of \(x, y\), one per point"):
        segment_prompts(COINS, litemedsam, boxes=[BOX], negative_points=(1, 2, 3))


def test_find_all_like_takes_one_example_box_given_alone(litemedsam):
    """find_all_like(image, (x0, y0, x1, y1)): a bare TypeError, as segment's boxes were."""
    from napari_promptseg.methods.instances import find_all_like

    alone = find_all_like(COINS, BOX, segmenter=litemedsam)
    listed = find_all_like(COINS, [BOX], segmenter=litemedsam)
    np.testing.assert_array_equal(alone.labels, listed.labels)
    assert alone.labels.max() > 1  # the boxed coin and others like it


def test_a_lazy_image_with_nan_is_refused_as_an_in_memory_one_is(litemedsam):
    """A dask array (an OME-Zarr level) with NaN small enough for one tile went to the encoder unchecked: segment gave
    no object and segment_like an empty mask, without a word (the numpy array was refused)."""
    import dask.array as da

    holed = COINS.astype(np.float32)
    holed[100:110, 100:110] = np.nan
    lazy = da.from_array(holed, chunks=128)
    with pytest.raises(PromptsegError, match=r"^image: contains NaN or infinite values; fill or mask them first"):
        napari_promptseg.segment(lazy, boxes=[BOX], device="cpu")
    mask = np.zeros(COINS.shape, np.uint8)
    mask[72:128, 50:110] = 1
    with pytest.raises(PromptsegError, match=r"^target 1: contains NaN or infinite values"):
        napari_promptseg.segment_like(COINS, mask, lazy, segmenter=litemedsam)


def test_training_takes_plain_image_mask_text_tuples(tmp_path):
    """train_text_segmenter([(image, mask, "coin"), ...]) from the console: AttributeError "'tuple' object has no
    attribute 'split'"; now the tuples are triplets, and one image is refused as any one-image data is."""
    from napari_promptseg.methods.text_training.data import ArrayTriplet, Triplet, as_triplets

    mask = COINS > 150
    triplets = as_triplets(
        [(COINS, mask, "coin"), ("a.png", "a_mask.png", "coin", "val"), ArrayTriplet(COINS, mask, "x")]
    )
    assert isinstance(triplets[0], ArrayTriplet) and triplets[0].text == "coin" and triplets[0].image is COINS
    assert isinstance(triplets[1], Triplet) and triplets[1].split == "val" and str(triplets[1].mask) == "a_mask.png"
    assert triplets[2].text == "x"
    with pytest.raises(PromptsegError, match=r"1 training row\(s\) of 1 image\(s\): need at least 2 images"):
        napari_promptseg.train_text_segmenter([(COINS, mask, "coin")], tmp_path / "model")
    with pytest.raises(
        PromptsegError, match=r"training data item 2: expected an \(image, mask, text\) tuple.*tuple of 2"
    ):
        napari_promptseg.train_text_segmenter([(COINS, mask, "coin"), (COINS, mask)], tmp_path / "model")


def test_a_training_triplet_of_multiscale_layers_is_read_at_full_resolution():
    """ArrayTriplet(image layer data, labels layer data, text) of multiscale layers: the image was read at full
    resolution and the mask at its coarsest level, 'mask is 76x96 but the image is 303x384'."""
    from napari.layers import Image, Labels

    from napari_promptseg.methods.text_training.data import ArrayTriplet

    mask = COINS > 150
    image_layer, labels_layer = (
        Image(pyramid(COINS), multiscale=True),
        Labels(pyramid(mask.astype(np.uint8)), multiscale=True),
    )
    image, target = ArrayTriplet(image_layer.data, labels_layer.data, "coin").load()
    assert image.shape == (*COINS.shape, 1)
    np.testing.assert_array_equal(target, mask)


def test_region_pairs_whose_masks_do_not_fit_their_images_are_refused():
    """register(fixed, moving, [(fixed_mask, moving_mask)]) with a transposed fixed mask: the mask was stretched onto
    the fixed image without a word, and the transform fitted to it. A mask at another resolution, in the image's
    proportions, still pairs (a region's mask covers its image at any resolution)."""
    from skimage.measure import label

    moving = np.roll(COINS, (5, 8), axis=(0, 1))
    objects = label(COINS > 150)
    largest = np.argsort(np.bincount(objects.ravel())[1:])[::-1][:5] + 1
    pairs = [(objects == k, np.roll(objects == k, (5, 8), axis=(0, 1))) for k in largest]
    transposed = [(pairs[0][0].T, pairs[0][1]), *pairs[1:]]
    with pytest.raises(PromptsegError, match=r"prompts\[0\]: the fixed mask is 384 x 303 px .* not the 303 x 384"):
        napari_promptseg.register(COINS, moving, transposed, method="prompts")
    halved = [(fixed[::2, ::2], moved) for fixed, moved in pairs]  # 152 x 192: the fixed image's proportions
    result = napari_promptseg.register(COINS, moving, halved, method="prompts")
    np.testing.assert_allclose(result.deformation.points_to_moving(np.array([[100.0, 100.0]])), [[108, 105]], atol=2)


def test_label_ids_a_file_cannot_hold_are_refused_not_wrapped(tmp_path):
    """write_labels cast whatever it was given: id -1 was saved as 65535, id 2**32 + 1 as 1 (merged with object 1),
    a float 1.7 as 1; whole int64 ids and masks are saved as they are."""
    import tifffile

    from napari_promptseg.io import write_labels

    ids = np.zeros(COINS.shape, np.int64)
    ids[72:128, 50:110], ids[20:80, 200:260] = 1, 70_000
    saved = tifffile.imread(write_labels(tmp_path / "ids.tif", ids))
    assert saved.dtype == np.uint32
    np.testing.assert_array_equal(saved, ids)
    np.testing.assert_array_equal(tifffile.imread(write_labels(tmp_path / "mask.tif", ids > 0)), ids > 0)
    for wrong, message in (
        (np.where(ids == 1, -1, ids), r"negative id -1; ids are 0 \(background\)"),
        (np.where(ids == 70_000, 2**32 + 1, ids), r"id 4\.29497e\+09 is above the largest a label file holds"),
        (np.where(ids == 1, 1.7, ids), r"fractional values; expected label ids"),
    ):
        with pytest.raises(PromptsegError, match=message):
            write_labels(tmp_path / "wrong.tif", wrong)
    assert not (tmp_path / "wrong.tif").exists()


def test_segment_like_leaves_a_blank_target_empty(litemedsam):
    """A target of one value everywhere (a blank plane of a stack, an empty canvas) got a mask of 955 px, the decoder's
    guess, where segment and the instances pipeline find nothing."""
    mask = np.zeros(COINS.shape, np.uint8)
    mask[72:128, 50:110] = 1
    blank, coins = napari_promptseg.segment_like(COINS, mask, [np.zeros_like(COINS), COINS], segmenter=litemedsam)
    assert not blank.mask.any() and not blank.labels.any() and blank.labels.shape == COINS.shape
    assert blank.warnings == ["target 1: the image holds one value everywhere: nothing to segment"]
    assert coins.mask.any()


def test_segment_text_takes_a_list_of_phrases_and_refuses_other_prompts(shared_data, litemedsam):
    """segment_text(image, ["nucleus"]) (register takes such a list) and segment_text(image, None) failed with
    TypeError "expected string or bytes-like object" from a regular expression."""
    from napari_promptseg.io import read_image

    image = read_image(shared_data / "nuclei_ctc_fluo_instances" / "images" / "N2DH-GOWT1_t01.tif")[200:456, 200:456]
    typed = napari_promptseg.segment_text(image, "nucleus", segmenter=litemedsam)
    listed = napari_promptseg.segment_text(image, ["nucleus"], segmenter=litemedsam)
    assert listed.route == typed.route and listed.prompt == "nucleus" and typed.labels.any()
    np.testing.assert_array_equal(listed.labels, typed.labels)
    for wrong in (None, 5, ["nucleus", 5]):
        with pytest.raises(PromptsegError, match=r"the text prompt must be text, e\.g\. 'nuclei'"):
            napari_promptseg.segment_text(image, wrong, segmenter=litemedsam)


def test_segment_like_takes_one_target_name_as_text(litemedsam):
    """names="plane 0" for one target: taken letter by letter, 7 names for 1 target (refused)."""
    (blank,) = napari_promptseg.segment_like(
        COINS, COINS > 150, np.zeros_like(COINS), names="plane 0", segmenter=litemedsam
    )
    assert blank.warnings == ["plane 0: the image holds one value everywhere: nothing to segment"]


def test_every_public_function_has_type_hints():
    """load_text_embedder had no return type: help() and editors showed nothing of what it gives."""
    import inspect

    import napari_promptseg.models

    for module in (napari_promptseg, napari_promptseg.models):
        for name in module.__all__:
            function = getattr(module, name)
            if not inspect.isfunction(function):
                continue
            signature = inspect.signature(function)
            assert signature.return_annotation is not inspect.Signature.empty, f"{module.__name__}.{name}: return"
            for parameter in signature.parameters.values():
                if parameter.kind is not parameter.VAR_KEYWORD:
                    assert parameter.annotation is not inspect.Parameter.empty, f"{name}({parameter.name})"


def test_a_read_only_image_gives_no_torch_warning():
    """A read-only array (a memory map, a broadcast view) gave the console user PyTorch's "The given NumPy array is
    not writable ... undefined behavior" warning (once per process: a fresh one is run)."""
    import subprocess
    import sys

    script = (
        "import warnings, numpy as np; from skimage import data; import napari_promptseg\n"
        "warnings.filterwarnings('error', message='The given NumPy array is not writable')\n"
        "image = data.coins().copy(); image.setflags(write=False)\n"
        f"labels = napari_promptseg.segment(image, boxes=[{BOX}], device='cpu')\n"
        "assert labels.any() and not image.flags.writeable\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]


def test_propagation_takes_the_seed_plane_of_a_whole_stacks_labels(litemedsam):
    """labels= the stack's (Z, Y, X) labels layer data, as napari holds it: refused, 'seed labels of shape (3, 303,
    384) do not match a plane'; now its seed plane seeds, and labels on other planes are said to be unused."""
    stack = np.stack([COINS, np.roll(COINS, 2, axis=1), np.roll(COINS, 4, axis=1)])
    layer = np.zeros(stack.shape, np.int32)
    layer[1, 72:128, 50:110] = 3
    layer[2, 20:40, 20:40] = 9
    whole = napari_promptseg.propagate_through_stack(stack, 1, labels=layer, segmenter=litemedsam)
    plane = napari_promptseg.propagate_through_stack(stack, 1, labels=layer[1], segmenter=litemedsam)
    np.testing.assert_array_equal(whole.labels, plane.labels)
    assert whole.warnings[-1] == (
        "stack: the labels of the whole stack were given: plane 1's labels seed the propagation, and the 400 "
        "labelled pixel(s) of other planes are not used"
    )


def test_an_image_with_a_leading_axis_of_one_is_that_plane():
    """(1, H, W), a TIFF's or a layer's singleton first axis (one plane, or one channel: alike), was refused as an
    ambiguous 3D array asking for channel_axis."""
    expected = napari_promptseg.segment(COINS, boxes=[BOX], device="cpu")
    np.testing.assert_array_equal(napari_promptseg.segment(COINS[None], boxes=[BOX], device="cpu"), expected)


def test_an_overlay_of_multiscale_layers_is_written(tmp_path):
    """write_overlay(path, image layer data, labels layer data) of multiscale layers: TypeError "list indices must
    be integers or slices, not tuple"."""
    from napari.layers import Image, Labels
    from PIL import Image as PILImage

    from napari_promptseg.io import write_overlay

    labels = np.zeros(COINS.shape, np.uint16)
    labels[72:128, 50:110] = 1
    image_data = Image(pyramid(COINS), multiscale=True).data
    labels_data = Labels(pyramid(labels), multiscale=True).data
    expected = np.asarray(PILImage.open(write_overlay(tmp_path / "plain.png", COINS, labels)))
    written = np.asarray(PILImage.open(write_overlay(tmp_path / "layers.png", image_data, labels_data)))
    np.testing.assert_array_equal(written, expected)


def test_a_pyramid_too_big_at_full_resolution_is_refused_naming_its_levels():
    """Read at its coarsest level, a slide's pyramid was segmented there without a word; at full resolution it is
    above the pixel limit: held in memory, it is refused, and the refusal says to pass a coarser level. (Objects of
    20 px need full resolution; larger ones are read at a coarser level: the next test. A lazy pyramid is read
    there tile by tile: test_console_pyramid.)"""
    slide = [np.broadcast_to(np.uint8(0), (20_000, 20_000)), np.zeros((5_000, 5_000), np.uint8)]  # no copy made
    with pytest.raises(PromptsegError, match=r"400,000,000 pixels exceeds .*a pyramid of 2 levels: pass a coarser"):
        napari_promptseg.segment(slide, boxes=[(40, 60, 60, 80)], device="cpu")


def test_none_is_no_prompt(litemedsam):
    """boxes=None (or points=None) beside other prompts: TypeError "'NoneType' object is not iterable", and
    propagate_through_stack(..., boxes=None, labels=...) "object of type 'NoneType' has no len()"."""
    expected = napari_promptseg.segment(COINS, boxes=[BOX], device="cpu")
    given = napari_promptseg.segment(COINS, boxes=[BOX], points=None, negative_points=None, device="cpu")
    np.testing.assert_array_equal(given, expected)
    with pytest.warns(UserWarning, match="trained on box prompts"):  # a click alone, said as ever
        assert napari_promptseg.segment(COINS, boxes=None, points=[(80, 100)], device="cpu").any()
    stack = np.stack([COINS] * 3)
    seed = np.zeros(COINS.shape, np.uint8)
    seed[72:128, 50:110] = 1
    result = napari_promptseg.propagate_through_stack(stack, 1, boxes=None, labels=seed, segmenter=litemedsam)
    assert result.labels[1].any()


def test_a_file_name_given_as_the_image_is_refused_saying_to_read_it(tmp_path):
    """segment("cells.tif", ...): 'unsupported pixel type <U9; expected integers or floats'."""
    from pathlib import Path

    for path in ("cells.tif", Path("cells.tif")):
        with pytest.raises(PromptsegError, match=r"image: a file name \(cells\.tif\), not pixels; read it first"):
            napari_promptseg.segment(path, boxes=[BOX], device="cpu")
    # register read it as 'fixed has shape () (0D)'
    with pytest.raises(PromptsegError, match=r"^moving: a file name \(cells\.tif\), not pixels"):
        napari_promptseg.register(COINS, "cells.tif")


def test_a_reference_mask_with_nan_or_inf_is_refused(litemedsam, tmp_path):
    """A float mask (a layer computed in the console) with NaN segmented as if the NaN pixels were background, and
    inf counted as an object, without a word. Refused now, in one-shot, many instances and the library alike."""
    from napari_promptseg.io.library import ReferenceLibrary
    from napari_promptseg.methods.instances import segment_instances_like

    mask = np.zeros(COINS.shape, np.float32)
    mask[60:140, 40:120] = 1.0
    for bad in (np.nan, np.inf):
        broken = mask.copy()
        broken[70, 50] = bad
        with pytest.raises(PromptsegError, match="reference mask: the mask contains NaN or infinite values"):
            napari_promptseg.segment_like(COINS, broken, COINS, segmenter=litemedsam)
        with pytest.raises(PromptsegError, match="reference labels: the mask contains NaN or infinite"):
            segment_instances_like(COINS, broken, COINS, segmenter=litemedsam)
        with pytest.raises(PromptsegError, match="the mask contains NaN or infinite"):
            ReferenceLibrary.open(tmp_path / "lib").add("coin", COINS, broken)
    (fine,) = napari_promptseg.segment_like(COINS, mask, COINS, segmenter=litemedsam)
    assert fine.labels.any()


def test_a_pyramid_too_big_at_full_resolution_is_read_at_the_level_its_prompts_need(litemedsam):
    """A 12k x 15k pyramid with a box around a coin was refused ("exceeds the limit ... pass a coarser one"), where
    the CLI reads an OME-Zarr at the level the boxes' working scale needs: the console reads that level too (here
    the coins themselves, 40 times coarser) and returns the labels at full resolution, as the CLI writes them."""
    import dask.array as da

    from napari_promptseg.tiling import level_to_full, upsample_labels

    k = 40  # level 0 is the real coins photo at 40x (186 M pixels, never read): 40x, 20x, 10x, 5x, the photo
    lazy = da.from_array(COINS, chunks=COINS.shape)
    levels = [lazy.repeat(k // f, axis=0).repeat(k // f, axis=1) for f in (1, 2, 4, 8)] + [COINS]
    # the box between the centres of the blocks the photo's pixels at BOX's corners became
    labels = napari_promptseg.segment(levels, boxes=[level_to_full(BOX, k)], device="cpu")
    expected = napari_promptseg.segment(COINS, boxes=[BOX], device="cpu")
    assert expected.any()
    assert labels.shape == levels[0].shape
    np.testing.assert_array_equal(labels, upsample_labels(expected, levels[0].shape))


def test_segment_like_reads_a_pyramid_target_at_the_level_the_cli_reads(litemedsam):
    """A multiscale target was read whole at full resolution (a slide's was refused as too big); the CLI reads the
    coarsest level with 1024 px along its longest side. The console reads that level too: the result is the level's,
    with its mask, labels, points and boxes in full-resolution pixels (the labels as the CLI writes them)."""
    import dask.array as da
    from napari.layers import Image

    from napari_promptseg.tiling import level_to_full, upsample_labels

    lazy = da.from_array(COINS, chunks=COINS.shape)  # the real coins photo at 8x, 4x (1212 x 1536: read), 2x, 1x
    layer = Image([lazy.repeat(k, axis=0).repeat(k, axis=1) for k in (8, 4, 2)] + [COINS], multiscale=True)
    level = np.asarray(layer.data[1])
    mask = napari_promptseg.segment(COINS, boxes=[BOX], device="cpu") > 0
    (result,) = napari_promptseg.segment_like(COINS, mask, layer.data, segmenter=litemedsam)
    (on_level,) = napari_promptseg.segment_like(COINS, mask, level, segmenter=litemedsam)
    assert on_level.mask.any()
    full = layer.data[0].shape
    np.testing.assert_array_equal(result.labels, upsample_labels(on_level.labels, full))
    np.testing.assert_array_equal(result.mask, result.labels > 0)
    # points and boxes over the full-resolution pixels of the level pixels they were found on, as the labels
    np.testing.assert_allclose(result.boxes, level_to_full(on_level.boxes, 2))
    np.testing.assert_allclose(result.positives, level_to_full(on_level.positives, 2))
    # the probability map stays the level's, and says so: its placement lays it over the labels
    np.testing.assert_array_equal(result.probability, on_level.probability)
    assert (result.probability_factor, on_level.probability_factor) == (2.0, 1.0)
    assert result.probability_placement == {"scale": (2.0, 2.0), "translate": (0.5, 0.5)}


def test_segment_like_gives_every_references_result_on_a_pyramid_at_full_resolution(litemedsam):
    """With several references and a pyramid target, the combined result came back at full resolution and
    ``result.per_reference`` at the level's pixels (1212 x 1536 masks beside 2424 x 3072 labels): a console user
    comparing them, or writing each, had masks of the wrong shape. Now each is the combined result's frame."""
    import dask.array as da
    from napari.layers import Image

    from napari_promptseg.tiling import level_to_full, upsample_labels

    lazy = da.from_array(COINS, chunks=COINS.shape)  # a multiscale layer's data (a list would be a list of targets)
    levels = Image([lazy.repeat(k, axis=0).repeat(k, axis=1) for k in (8, 4, 2)] + [COINS], multiscale=True).data
    mask = napari_promptseg.segment(COINS, boxes=[BOX], device="cpu") > 0
    references, masks = [COINS, COINS[:, ::-1]], [mask, mask[:, ::-1]]  # the photo and its mirror image
    (result,) = napari_promptseg.segment_like(references, masks, levels, segmenter=litemedsam)
    (on_level,) = napari_promptseg.segment_like(references, masks, np.asarray(levels[1]), segmenter=litemedsam)
    assert len(result.per_reference) == len(on_level.per_reference) == 2
    for one, level_one in zip(result.per_reference, on_level.per_reference, strict=True):
        assert level_one.mask.any()
        assert one.mask.shape == one.labels.shape == result.labels.shape
        np.testing.assert_array_equal(one.labels, upsample_labels(level_one.labels, result.labels.shape))
        np.testing.assert_allclose(one.boxes, level_to_full(level_one.boxes, 2))
        assert one.probability_factor == result.probability_factor == 2.0


def test_a_list_of_unrelated_images_is_not_a_pyramid():
    """One-shot bug hunt (session 31): segment_instances_like(ref, labels, [a, b]) with b smaller than a (as a list of
    targets for segment_like) took the list for a pyramid and answered for a alone, without a word. A pyramid's
    levels are one image downsampled by one factor on every axis that shrinks (sizes rounded either way); two
    unrelated images are refused as a list."""
    from napari_promptseg.models.preprocessing import as_channels_last, full_resolution

    levels = pyramid(COINS)  # 303 x 384, 152 x 192, ...: rounded up
    assert full_resolution(levels) is levels[0]
    rgb = [np.zeros((4801, 6401, 3), np.uint8), np.zeros((2400, 3200, 3), np.uint8), np.zeros((3, 4, 3), np.uint8)]
    assert full_resolution(rgb) is rgb[0]
    stack = [np.zeros((10, 64, 64)), np.zeros((10, 32, 32))]  # planes kept, rows and columns halved
    assert full_resolution(stack) is stack[0]
    targets = [COINS, COINS[:150, :180]]  # 303 x 384 and 150 x 180: rows halved, columns not
    assert full_resolution(targets) is targets
    with pytest.raises(PromptsegError, match=r"a list of arrays of shapes \(303, 384\), \(150, 180\)"):
        as_channels_last(targets, name="target")
