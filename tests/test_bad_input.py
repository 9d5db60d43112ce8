"""Bad input gives a clear error that names what is wrong, from Python and from the CLI (exit 2, one line)."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import tifffile
import torch
from skimage import data

from napari_promptseg.cli import main
from napari_promptseg.errors import PromptsegError, WeightsError
from napari_promptseg.methods.interactive import segment_prompts
from napari_promptseg.models import load_segmenter
from napari_promptseg.models.checkpoint import read_state_dict
from napari_promptseg.models.preprocessing import ResizeTransform, as_channels_last

COINS = data.coins()  # real 303x384 uint8 greyscale micrograph-like photo
H, W = COINS.shape
BOX = (40.0, 60.0, 120.0, 140.0)


def segment(image: np.ndarray, segmenter, **kwargs):
    kwargs.setdefault("boxes", [BOX])
    return segment_prompts(image, segmenter, **kwargs)


@pytest.mark.parametrize(
    ("image", "kwargs", "message"),
    [
        (
            np.stack([COINS, COINS])[None],
            {},
            r"expected a 2D image .*got 4D shape \(1, 2, 303, 384\), its axes read as \(T=1, Z=2, Y=303, X=384\)\. "
            r".*3D stack \(Z, Y, X\[, C\]\)\. A time-lapse \(T > 1\) is not taken whole: split it into one image "
            r"per time point",
        ),
        (COINS[:0], {}, r"image is empty \(shape \(0, 384\)\)"),
        (np.zeros((H, W, 0), np.uint8), {}, r"image is empty"),
        (np.where(COINS > 200, np.nan, COINS.astype(np.float32)), {}, r"contains NaN or infinite values"),
        (np.stack([COINS] * 5), {}, r"3D array of shape \(5, 303, 384\) is ambiguous; pass channel_axis"),
        (np.stack([COINS] * 5, -1), {"channel_axis": -1}, r"5 channels; choose up to three with channels="),
        (np.stack([COINS] * 5), {"channel_axis": 0, "channels": [0, 1, 2, 3]}, r"choose 1 to 3 channels"),
        (np.stack([COINS] * 2), {"channel_axis": 0, "channels": [0, 2]}, r"channel index \[2\] out of range for 2"),
        (COINS.astype(complex), {}, r"unsupported pixel type complex128"),
        (np.stack([COINS] * 3), {"channel_axis": 3}, r"channel_axis 3 out of range for shape \(3, 303, 384\)"),
    ],
    ids=[
        "4d",
        "empty",
        "no-channels",
        "nan",
        "ambiguous-3d",
        "5-channels",
        "4-channels-chosen",
        "bad-channel",
        "dtype",
        "bad-channel-axis",
    ],
)
def test_bad_images_are_refused_with_the_reason(litemedsam, image, kwargs, message):
    with pytest.raises(PromptsegError, match=message):
        segment(image, litemedsam, name="image", **kwargs)


def test_awkward_but_valid_images_are_accepted(litemedsam):
    """Big-endian pixels (some TIFF writers) and a 2-pixel-high strip are not errors."""
    native = COINS.astype(np.uint16) * 200
    transform = ResizeTransform(native.shape, litemedsam.input_size)
    expected = transform.image_to_input(as_channels_last(native))
    big_endian = transform.image_to_input(as_channels_last(native.astype(">u2")))
    torch.testing.assert_close(big_endian, expected, rtol=0, atol=0)

    strip = np.tile(COINS[100:102], (1, 13))  # 2 x 4992: resizes to less than one pixel high at SAM's rounding
    labels = segment(strip, litemedsam, boxes=[(100, 0, 900, 1)]).labels
    assert labels.shape == strip.shape


def test_unknown_or_unavailable_device_is_refused(monkeypatch):
    with pytest.raises(PromptsegError, match=r"device must be one of \('auto', 'cpu', 'cuda', 'mps'\), got 'tpu'"):
        load_segmenter("litemedsam", device="tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(PromptsegError, match=r"device 'cuda:1' requested but not available on this machine"):
        load_segmenter("litemedsam", device="cuda:1")


def test_huge_image_is_refused_before_any_copy(litemedsam):
    huge = np.broadcast_to(np.uint8(7), (20_000, 20_000))  # 400 Mpx, one byte of memory
    with pytest.raises(PromptsegError, match=r"20000x20000 = 400,000,000 pixels exceeds the limit of 150,000,000"):
        segment(huge, litemedsam)
    with pytest.raises(PromptsegError, match=r"303x384 = 116,352 pixels exceeds the limit of 100,000"):
        as_channels_last(COINS, max_pixels=100_000)


def test_an_image_file_larger_than_the_free_memory_is_refused_from_its_header(tmp_path, monkeypatch):
    """A TIFF of strips (a large tiled one is read tile by tile) or a PNG whose header declares more pixels than the
    memory holds was read until the system killed the process (a 100k x 100k mosaic of strips: 10 GB), without a
    word of why. Refused from its header, nothing read, with what is read tile by tile."""
    import types

    import psutil
    from PIL import Image

    from napari_promptseg.io import read_image

    coins = data.coins()
    tifffile.imwrite(tmp_path / "strips.tif", coins, rowsperstrip=16, compression="zlib")
    Image.fromarray(coins).save(tmp_path / "coins.png")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: types.SimpleNamespace(available=coins.nbytes - 2))
    monkeypatch.setattr(psutil, "swap_memory", lambda: types.SimpleNamespace(free=1))

    def never(*args, **kwargs):
        raise AssertionError("the pixels were read")

    monkeypatch.setattr(tifffile.TiffFile, "asarray", never)
    monkeypatch.setattr(Image.Image, "load", never)
    for name in ("strips.tif", "coins.png"):
        with pytest.raises(
            PromptsegError, match=r"read whole, more than .* \(and swap\) free \(nothing was read\).* tile by tile"
        ):
            read_image(tmp_path / name)
    monkeypatch.undo()
    assert read_image(tmp_path / "strips.tif").shape == coins.shape  # what fits is read


def test_a_tiff_cut_short_is_said_to_be_cut_short(tmp_path):
    """A TIFF whose copy or download was interrupted was refused with tifffile's 'failed to read 131072 bytes, got
    29744', which names no cause; it says the file is cut short, and how much of it is there."""
    from napari_promptseg.io import read_image

    whole = tmp_path / "whole.tif"
    tifffile.imwrite(whole, COINS, rowsperstrip=64)
    cut = tmp_path / "cut.tif"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(PromptsegError, match=r"cut\.tif: .*the file is cut short \(58,\d+ of its 116,\d+ bytes"):
        read_image(cut)


@pytest.mark.parametrize("name", ["empty.tif", "empty.png", "empty.jpg"])
def test_an_empty_file_is_said_to_be_empty(tmp_path, name):
    """A file of 0 bytes (a copy or an acquisition still writing the folder a batch runs on, a failed download) was
    'not a TIFF file: header=b\'\'' or 'its contents match no image format known here, although it is named
    .png': as if the file held something else. It says the file is empty."""
    from napari_promptseg.io import read_image

    (tmp_path / name).touch()
    with pytest.raises(PromptsegError, match=rf"{name}: cannot be read as an image \(the file is empty \(0 bytes\)"):
        read_image(tmp_path / name)


def test_napari_opening_a_tiff_larger_than_the_free_memory_is_refused_from_its_header(tmp_path, monkeypatch):
    """The plugin reads a TIFF without a pyramid whole (as napari's own reader does), but did so whatever its header
    declared: a TIFF of strips declaring a mosaic's size was allocated and decoded in napari until the system killed
    it, where every command refuses it from its header. The plugin refuses it too, nothing read, naming the file."""
    import types

    import psutil

    from napari_promptseg._reader import get_reader

    coins = data.coins()
    path = tmp_path / "strips.tif"
    tifffile.imwrite(path, coins, rowsperstrip=16, compression="zlib")
    memory = types.SimpleNamespace(available=coins.nbytes - 1, total=2**34, percent=50.0, used=2**33, free=1)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: memory)
    monkeypatch.setattr(psutil, "swap_memory", lambda: types.SimpleNamespace(free=0, total=0, used=0, percent=0.0))
    with pytest.raises(PromptsegError, match=r"strips\.tif: its pixels take .* \(nothing was read\)") as refused:
        get_reader(str(path))(str(path))
    # advice true for the plugin, which reads a TIFF of one level whole, tiled or not ('a tiled TIFF, which is read
    # tile by tile' holds for the commands only)
    said = str(refused.value)
    assert "save it as a tiled TIFF" not in said and "a pyramid (OME-TIFF, OME-Zarr), which napari opens" in said
    assert "the promptseg commands read a tiled TIFF tile by tile" in said, said
    # a folder of them: refused when it is opened, not when napari shows a plane (an error of its slicing thread)
    folder = tmp_path / "planes"
    folder.mkdir()
    for name in ("a.tif", "b.tif"):
        tifffile.imwrite(folder / name, coins, rowsperstrip=16)
    with pytest.raises(PromptsegError, match=r"a\.tif: its pixels take .* \(nothing was read\)"):
        get_reader(str(folder))(str(folder))


def test_a_lazy_image_too_large_to_read_whole_is_refused_without_advising_max_pixels():
    """A lazy image (a slide level) passes as_channels_last whatever its max_pixels (the tiled methods read it tile
    by tile) and is refused where a model reads it whole, at the default limit: the refusal advised raising
    max_pixels, which changes nothing there."""
    import dask.array as da

    from napari_promptseg.models.preprocessing import in_memory

    slide = as_channels_last(da.zeros((20_000, 20_000), np.uint8, chunks=4096), max_pixels=10**9)
    with pytest.raises(PromptsegError, match=r"slide: 20000x20000 = 400,000,000 pixels exceeds the limit") as info:
        in_memory(slide, "slide")
    assert "max_pixels" not in str(info.value) and "downsample or tile the image" in str(info.value)


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        ({"boxes": [(120, 60, 40, 140)]}, r"box 1: corners in the wrong order .*expected x0 < x1 and y0 < y1"),
        ({"boxes": [(40, 60, 40, 140)]}, r"box 1: corners in the wrong order or zero size"),
        ({"boxes": [(500, 10, 600, 50)]}, r"box 1: \(500, 10, 600, 50\) lies outside the 384x303 image"),
        ({"boxes": [BOX, (-50, -50, -10, -10)]}, r"box 2: .* lies outside"),
        # past the last column's outer edge (383.5): it was clipped to (383.6, 10, 383, 40), corners the wrong way
        # round, "-4% of its area", and segmented
        ({"boxes": [(383.6, 10, 400, 40)]}, r"box 1: \(383.6, 10, 400, 40\) lies outside the 384x303 image"),
        ({"boxes": [(0, 0, np.nan, 10)]}, r"box 1: coordinates must be finite"),
        ({"boxes": [(1, 2, 3)]}, r"box 1: expected 4 numbers"),
        # a rectangle of a Shapes layer over a stack: (plane, row, column) corners, where c[:, 1] is the row
        (
            {"boxes": [np.array([[3, 60, 40], [3, 60, 120], [3, 140, 120], [3, 140, 40]], float)]},
            r"box 1: .* shape \(4, 3\); .* its box is \(c\[:, -1\]\.min\(\), c\[:, -2\]\.min\(\), "
            r"c\[:, -1\]\.max\(\), c\[:, -2\]\.max\(\)\)",
        ),
        ({"boxes": [], "positive_points": [(400, 20)]}, r"positive point 1: \(400, 20\) lies outside the 384x303"),
        ({"boxes": [BOX], "negative_points": [(10, -1)]}, r"negative point 1: \(10, -1\) lies outside"),
        # a 3D Points layer's data reversed, as the docstring says for a 2D one: (x, y, plane)
        (
            {"boxes": [], "positive_points": [(100, 90, 3)]},
            r"positive point 1: expected 2 numbers x y, got 3: a 3D Points layer's point is \(plane, row, column\)",
        ),
        ({"boxes": [], "negative_points": [(10, 10)]}, r"only negative points given"),
        ({"boxes": []}, r"no prompt"),
    ],
    ids=[
        "box-order",
        "box-zero",
        "box-outside",
        "second-box-outside",
        "box-past-the-last-column",
        "box-nan",
        "box-3",
        "box-3d-corners",
        "point",
        "neg",
        "point-3d",
        "neg-only",
        "none",
    ],
)
def test_bad_prompts_are_refused_with_the_reason(litemedsam, prompts, message):
    with pytest.raises(PromptsegError, match=message):
        segment(COINS, litemedsam, **prompts)


def test_the_box_of_an_object_on_the_last_row_is_segmented(litemedsam):
    """boxes_from_labels gives an object lying on the image's last row a box one pixel high there (y0 = h - 1,
    y1 = h): clipped to the pixel centres it has no height left, and a check added for boxes past the last pixel
    refused it, and with it `make demo` (box 19 of its nuclei). It is segmented, as before; a box starting past
    the last pixel's outer edge lies outside."""
    from napari_promptseg.methods.interactive import boxes_from_labels, check_box

    h, w = COINS.shape
    last_row = np.zeros(COINS.shape, np.uint8)
    last_row[h - 1, 100:130] = 1
    [box] = boxes_from_labels(last_row)
    assert box == (100, h - 1, 129, h)
    assert check_box(box, (h, w)) == (100, h - 1, 129, h - 1)
    assert check_box((w - 0.8, 10, w + 5, 40), (h, w)) == (w - 1, 10, w - 1, 40)  # on the last column's outer half
    result = segment(COINS, litemedsam, boxes=[box, BOX])
    assert set(np.unique(result.labels)) >= {2}  # the run goes on: the other box's object is there


def test_a_negative_click_outside_every_box_is_said_to_be_unused(litemedsam):
    """A negative click refines the box it lies in; one outside every box, with no positive click to go with it, was
    dropped without a word (the user clicked the neighbour the mask spilled onto, and nothing changed)."""
    alone = segment(COINS, litemedsam)
    clicked = segment(COINS, litemedsam, negative_points=[(300, 250)], name="coins")
    np.testing.assert_array_equal(clicked.labels, alone.labels)
    assert clicked.warnings == [
        "coins: negative point 1 (300, 250) lies outside every box and goes with no positive point: not used (a "
        "negative point refines the box it lies in)"
    ]


def test_a_box_whose_object_is_taken_by_an_overlapping_one_is_said(litemedsam):
    """A box given twice (a pasted line, a double-drawn rectangle) gave one object: the second's pixels all went to
    the first, equally confident, and the CLI said "1 object(s)" for two boxes without a word."""
    result = segment(COINS, litemedsam, boxes=[BOX, BOX, (200, 150, 260, 210)], name="coins")
    assert set(np.unique(result.labels)) == {0, 1, 3}
    assert result.warnings == [
        "coins: box 2 gave no object: its pixels went to the object of box 1, which overlaps it (where objects "
        "overlap, the more confident one takes the pixel)"
    ]


def test_find_all_from_boxes_on_blank_pixels_says_why_nothing_was_learnt(litemedsam):
    """Find all from a box on the empty canvas beside an image was refused with 'the boxed examples gave empty
    masks; draw boxes tightly around objects': advice for a loose box, not for one on no object at all. The
    examples' own reasons are said now."""
    from napari_promptseg.methods.instances import find_all_like

    canvas = np.pad(COINS, ((0, 0), (0, 80)))
    with pytest.raises(PromptsegError) as refused:
        find_all_like(canvas, [(400, 100, 440, 140)], segmenter=litemedsam, name="coins.png")
    assert str(refused.value) == (
        "coins.png: the boxed examples gave no object (box 1 covers pixels of one value: nothing to segment there "
        "(left empty)); box objects in the image"
    )


def test_a_click_on_the_outer_half_of_the_first_pixel_is_on_the_image(litemedsam):
    """napari puts pixel centres on whole numbers: pixel 0 spans -0.5 to 0.5, and a click on the left half of the
    first column (x = -0.3) was refused as 'outside the image' while the user saw it on the image."""
    edge_box = (0.0, 60.0, 80.0, 140.0)
    on_pixel_0 = segment(COINS, litemedsam, boxes=[edge_box], negative_points=[(0.0, 100.0)])
    outer_half = segment(COINS, litemedsam, boxes=[edge_box], negative_points=[(-0.3, 100.0)])
    np.testing.assert_array_equal(outer_half.labels, on_pixel_0.labels)  # the click refines the box, as on pixel 0
    assert segment(COINS, litemedsam, boxes=[], positive_points=[(-0.5, -0.4)]).labels.shape == COINS.shape


def test_missing_weights_file_names_it(tmp_path):
    missing = tmp_path / "nowhere" / "lite_medsam.pth"
    with pytest.raises(WeightsError, match=rf"litemedsam: weights file {re.escape(str(missing))} does not exist"):
        load_segmenter("litemedsam", weights=missing, device="cpu")


def test_corrupt_weights_file_is_a_one_line_weights_error(tmp_path):
    path = tmp_path / "finetuned.pth"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(
        WeightsError, match=rf"litemedsam: {re.escape(str(path))} cannot be read as a PyTorch checkpoint"
    ):
        load_segmenter("litemedsam", weights=path, device="cpu")


def test_a_checkpoint_cut_short_is_said_to_be(tmp_path):
    """A .pth whose download or copy was cut short read 'PytorchStreamReader failed reading zip archive: failed
    finding central directory', which does not tell a user the file is incomplete."""
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(64, 64)}, buffer)
    path = tmp_path / "finetuned.pth"
    path.write_bytes(buffer.getvalue()[:10_000])
    with pytest.raises(WeightsError) as info:
        read_state_dict(path, "mymodel")
    assert str(info.value).startswith(
        f"mymodel: {path} is cut short (10,000 bytes: its end is missing; an interrupted download or copy?)"
    ), str(info.value)


def test_a_safetensors_file_cut_short_and_a_zipped_checkpoint_are_said_to_be(tmp_path):
    """A safetensors file cut short read 'SafetensorError: Error while deserializing header: incomplete metadata,
    file not fully covered'; a checkpoint zipped for mailing 'file in archive is not in a subdirectory'."""
    import zipfile

    from safetensors.torch import save_file

    whole = tmp_path / "whole.safetensors"
    save_file({"weight": torch.zeros(64, 64)}, whole)
    cut = tmp_path / "finetuned.safetensors"
    cut.write_bytes(whole.read_bytes()[:10_000])
    with pytest.raises(WeightsError) as info:
        read_state_dict(cut, "mymodel")
    assert str(info.value).startswith(
        f"mymodel: {cut} is cut short (10,000 of its {whole.stat().st_size:,} bytes; an interrupted download or copy?)"
    ), str(info.value)
    checkpoint = tmp_path / "finetuned.pth"
    torch.save({"weight": torch.zeros(4)}, checkpoint)
    zipped = tmp_path / "finetuned.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.write(checkpoint, "finetuned.pth")
    with pytest.raises(WeightsError) as info:
        read_state_dict(zipped, "mymodel")
    assert str(info.value) == (
        f"mymodel: {zipped} is a zip archive holding finetuned.pth, not a checkpoint: unzip it and give finetuned.pth"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (np.random.default_rng(0).bytes(4096), r"cannot be read as a PyTorch checkpoint \(.+\)"),
        (b"PK\x03\x04 truncated zip", r"is cut short \(18 bytes: its end is missing"),
        (b"hello, I am a text file\n", r"cannot be read as a PyTorch checkpoint \(.+\)"),
        (b"", r"is empty \(0 bytes\), not a PyTorch checkpoint"),
    ],
    ids=["random", "zip", "text", "empty"],
)
def test_unreadable_checkpoints_give_one_short_line(tmp_path, content, message):
    path = tmp_path / "finetuned.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=rf"mymodel: {re.escape(str(path))} {message}") as info:
        read_state_dict(path, "mymodel")
    assert "\n" not in str(info.value) and len(str(info.value)) < 300 + len(str(path))
    assert "weights_only" not in str(info.value)  # torch's advice to unpickle untrusted files is not ours to give


def test_checkpoint_without_tensors_is_refused(tmp_path):
    path = tmp_path / "optimizer_only.pth"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(WeightsError, match=r"optimizer_only\.pth does not contain a state dict"):
        read_state_dict(path, "mymodel")


@pytest.fixture
def coins_tif(tmp_path):
    path = tmp_path / "coins.tif"
    tifffile.imwrite(path, COINS)
    return path


def write_tif(tmp_path, name: str, array: np.ndarray):
    path = tmp_path / name
    tifffile.imwrite(path, array)
    return path


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(["segment", *argv])
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(
    ("case", "message"),
    [
        pytest.param("box-order", r"box 1: corners in the wrong order", id="box-order"),
        pytest.param("box-outside", r"box 1: \(500, 10, 600, 50\) lies outside the 384x303 image", id="box-outside"),
        # the CLI's pyramid level was chosen from it first: "object size must be a positive number of pixels, got nan"
        pytest.param("box-nan", r"box 2: coordinates must be finite", id="box-nan"),
        pytest.param("point-outside", r"positive point 1: \(-5, 20\) lies outside", id="point-outside"),
        pytest.param("no-prompt", r"give at least one --box X0 Y0 X1 Y1 or --point X Y", id="no-prompt"),
        pytest.param(
            "find-all-points", r"--find-all learns from the boxed examples only; --point", id="find-all-points"
        ),
        pytest.param("missing-image", r"input image not found: .*missing\.tif", id="missing-image"),
        # in the user's words, not the last imageio plugin's internals (SimpleITK's 'sitk::ERROR: ...')
        pytest.param(
            "not-an-image",
            r"notes\.png: cannot be read as an image \(its contents match no image format known here, although it "
            r"is named \.png\)",
            id="not-an-image",
        ),
        # a time-lapse of stacks was asked "which axis holds the channels?"
        pytest.param(
            "4d",
            r"coins4d\.tif: 4D array of shape \(2, 2, 303, 384\), its axes read as \(T=2, Z=2, Y=303, X=384\): a "
            r"time-lapse of 3D stacks, or a stack with its channels on an axis other than the last\. Accepted: a 2D "
            r"image \(Y, X\), a 2D image with channels \(Y, X, C\), or a 3D stack \(Z, Y, X\[, C\]\)\. A time-lapse "
            r"\(T > 1\) is not taken whole: split it into one image per time point .*; for channels, say which axis "
            r"holds them: .*--channel-axis",
            id="4d",
        ),
        pytest.param(
            "5d",
            r"timelapse\.tif: 5D array of shape \(3, 2, 2, 303, 384\), its axes read as \(T=3, Z=2, C=2, Y=303, "
            r"X=384\)\. Accepted: .*3D stack \(Z, Y, X\[, C\]\)\. A time-lapse \(T > 1\) is not taken whole: split",
            id="5d",
        ),
        pytest.param(
            "stack-without-plane",
            r"stack\.tif: a stack of 5 planes; give --plane Z, the plane the boxes were drawn on \(and --propagate to "
            r"carry the objects through the stack\)$",
            id="stack-without-plane",
        ),
        pytest.param(  # 2-4 planes may be a channels-first image: the refusal said only to give --plane
            "two-planes-without-plane",
            r"two\.tif: a stack of 2 planes; give --plane Z, .*; or, if its first axis holds channels, "
            r"--channel-axis 0$",
            id="two-planes-without-plane",
        ),
        pytest.param(
            "5-channels",
            r"stack\.tif: 5 channels; choose up to three with channels=\[\.\.\.\] \(CLI: --channels; "
            r"widgets: the channels field beside the channel axis\)",
            id="5-channels",
        ),
        pytest.param("nan", r"nan\.tif: contains NaN or infinite values", id="nan"),
        pytest.param("missing-weights", r"litemedsam: weights file .*absent\.pth does not exist", id="missing-weights"),
        pytest.param(
            "corrupt-weights",
            r"litemedsam: .*corrupt\.pth cannot be read as a PyTorch checkpoint",
            id="corrupt-weights",
        ),
        pytest.param("bad-channel-axis", r"stack\.tif: channel_axis -4 out of range", id="bad-channel-axis"),
        pytest.param("bad-device", r"device must be one of .* got 'gpu'", id="bad-device"),
        pytest.param("unknown-model", r"unknown model 'sam_vit_q'; the segmenters: litemedsam", id="unknown-model"),
        pytest.param("offline-sam", r"sam_vit_b: weights not found .*put sam_vit_b_01ec64\.pth in ", id="offline-sam"),
    ],
)
def test_cli_exits_2_with_a_one_line_reason(litemedsam, tmp_path, capsys, coins_tif, case, message):
    out = str(tmp_path / "out")
    image = str(coins_tif)
    box = ["--box", *map(str, BOX)]
    stack = np.stack([COINS] * 5)
    argv = {
        "box-order": [image, "-o", out, "--box", "120", "60", "40", "140"],
        "box-outside": [image, "-o", out, "--box", "500", "10", "600", "50"],
        "box-nan": [image, "-o", out, *box, "--box", "10", "10", "40", "nan"],
        "point-outside": [image, "-o", out, "--point", "-5", "20"],
        "no-prompt": [image, "-o", out],
        "find-all-points": [image, "-o", out, *box, "--find-all", "--point", "60", "80"],  # were ignored
        "missing-image": [str(tmp_path / "missing.tif"), "-o", out, *box],
        "not-an-image": [str(write_notes(tmp_path)), "-o", out, *box],
        "4d": [str(write_tif(tmp_path, "coins4d.tif", np.stack([stack[:2]] * 2))), "-o", out, *box],
        "5d": [str(write_timelapse(tmp_path, np.stack([np.stack([stack[:2]] * 2, 1)] * 3))), "-o", out, *box],
        "stack-without-plane": [str(write_tif(tmp_path, "stack.tif", stack)), "-o", out, *box],
        "two-planes-without-plane": [str(write_tif(tmp_path, "two.tif", stack[:2])), "-o", out, *box],
        "5-channels": [str(write_tif(tmp_path, "stack.tif", stack)), "-o", out, "--channel-axis", "0", *box],
        "nan": [
            str(write_tif(tmp_path, "nan.tif", np.where(COINS > 200, np.nan, COINS.astype("f4")))),
            "-o",
            out,
            *box,
        ],
        "missing-weights": [image, "-o", out, *box, "--weights", str(tmp_path / "absent.pth")],
        "corrupt-weights": [image, "-o", out, *box, "--weights", str(write_corrupt(tmp_path))],
        "bad-channel-axis": [str(write_tif(tmp_path, "stack.tif", stack)), "-o", out, "--channel-axis=-4", *box],
        "bad-device": [image, "-o", out, *box, "--device", "gpu"],
        "unknown-model": [image, "-o", out, *box, "--model", "sam_vit_q"],
        "offline-sam": [image, "-o", out, *box, "--model", "sam_vit_b"],
    }[case]

    code, err = run_cli(capsys, *argv)

    assert code == 2
    assert err.startswith("promptseg segment: error: ")
    assert re.search(message, err.splitlines()[0]), err  # the reason is on the first line
    assert err.endswith("\n") and err.count("\n") == 1, err  # exactly one line, even for a reader's own message
    assert not (tmp_path / "out" / "report.json").exists()


def write_timelapse(tmp_path, frames: np.ndarray):
    """An ImageJ hyperstack of axes TZCYX, as Fiji saves a time-lapse of 2-channel stacks."""
    path = tmp_path / "timelapse.tif"
    tifffile.imwrite(path, frames, imagej=True, metadata={"axes": "TZCYX"})
    return path


def write_notes(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not pixels")
    return path


def write_corrupt(tmp_path):
    path = tmp_path / "corrupt.pth"
    path.write_bytes(np.random.default_rng(1).bytes(2048))
    return path


def test_bad_negative_point_is_numbered_among_the_negative_points(litemedsam):
    with pytest.raises(PromptsegError, match=r"negative point 1: \(500, 5\) lies outside"):
        segment(COINS, litemedsam, boxes=[], positive_points=[(5, 5), (6, 6)], negative_points=[(500, 5)])


def test_a_box_over_pixels_of_one_value_is_left_empty_with_a_warning(litemedsam):
    """LiteMedSAM drew a 429 px object in a box on an all-zero image; a box over one value now holds nothing, and
    a box on real pixels of the same call is still segmented."""
    image = COINS[:200, :300].copy()
    image[:, 200:] = 0  # a blank strip, as the empty canvas around a scan
    result = segment_prompts(image, litemedsam, boxes=[[210, 20, 260, 70], [10, 10, 80, 80]], name="coins")
    assert not (result.labels == 1).any() and result.scores[0] == 0.0
    assert (result.labels == 2).sum() > 500
    assert result.warnings == ["coins: box 1 covers pixels of one value: nothing to segment there (left empty)"]


def test_the_cli_names_the_image_of_a_warning_once(tmp_path, capsys):
    image = tmp_path / "blank_strip.tif"
    strip = COINS[:200, :300].copy()
    strip[:, 200:] = 0
    tifffile.imwrite(image, strip)
    assert main(["segment", str(image), "--box", "210", "20", "260", "70", "-o", str(tmp_path / "out")]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert lines == [f"warning: {image}: box 1 covers pixels of one value: nothing to segment there (left empty)"]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        (
            "small-mask",
            r"--reference-mask \S*small\.tif: 200 x 200 px does not match --reference \S*ref\.tif, 256 x 256 px",
        ),
        ("empty-mask", r"--reference-mask \S*empty\.tif: no labelled pixel \(all 0\)"),
        (
            "stack-reference",
            r"--reference-mask \S*labels\.tif hold one plane's labels \(256, 256\) and --reference \S*stack\.tif is a "
            r"stack of 5 planes: give --reference-plane with the plane to use",
        ),
        # a time-lapse of RGB frames (T, Y, X, C): a stack of colour planes too
        (
            "time-lapse-reference",
            r"--reference-mask \S*labels\.tif hold one plane's labels \(256, 256\) and --reference \S*frames\.tif is "
            r"a stack of 3 planes: give --reference-plane",
        ),
        ("second-mask", r"--reference-mask \S*small\.tif: 200 x 200 px does not match --reference \S*ref\.tif"),
        ("negative-id", r"--reference-mask \S*negative\.tif: negative label id -1; ids are 0 \(background\) and"),
        # two references for an ensemble, the first's nuclei choosing the many-instances mode unasked: said why
        (
            "two-instance-references",
            r"the many-instances mode \(--reference-mask \S*labels\.tif holds several objects\) takes one "
            r"--reference \(with its instance labels\): give one, or --no-instances for one region from them all",
        ),
    ],
)
def test_oneshot_reference_errors_name_the_files_in_cli_terms(litemedsam, tmp_path, capsys, case, message):
    """Each bad reference is one line naming its file(s) and the CLI's options: the mismatch was "reference: labels
    of shape (200, 200) do not match", a stack got Python advice (channel_axis, segment_stack), and a bad second mask
    was reported as "the many-instances mode takes one --reference"."""
    from napari_promptseg._sample_data import nuclei

    (image, _, _), (truth, _, _) = nuclei()
    ref, labels = write_tif(tmp_path, "ref.tif", image), write_tif(tmp_path, "labels.tif", truth)
    small = write_tif(tmp_path, "small.tif", truth[:200, :200])
    negative = truth.astype(np.int16)
    negative[truth == 3] = -1  # a nucleus marked -1: neither clearly an object nor background
    argv = {
        "small-mask": ["--reference", ref, "--reference-mask", small],
        "empty-mask": ["--reference", ref, "--reference-mask", write_tif(tmp_path, "empty.tif", 0 * truth)],
        "stack-reference": [
            "--reference",
            write_tif(tmp_path, "stack.tif", np.stack([image] * 5)),
            "--reference-mask",
            labels,
        ],
        "time-lapse-reference": [
            "--reference",
            write_tif(tmp_path, "frames.tif", np.stack([np.stack([image] * 3, -1)] * 3)),
            "--reference-mask",
            labels,
        ],
        "second-mask": ["--reference", ref, "--reference-mask", labels, "--reference", ref, "--reference-mask", small],
        "negative-id": ["--reference", ref, "--reference-mask", write_tif(tmp_path, "negative.tif", negative)],
        "two-instance-references": ["--reference", ref, "--reference-mask", labels] * 2,
    }[case]
    code = main(["oneshot", *map(str, argv), str(ref), "-o", str(tmp_path / "out"), "--scheduler", "none"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert re.search(message, err), err
    assert "channel_axis" not in err and "segment_stack" not in err
    assert ("many-instances" in err) == (case == "two-instance-references")


def test_a_box_partly_outside_the_image_is_clipped_with_a_warning(litemedsam, tmp_path, capsys):
    """A box reaching past the image was clipped without a word (a 10x10 px remainder of a 110x110 box gave an
    object and "warnings": []); a box ending on the image's edge is no news."""
    result = segment(COINS, litemedsam, boxes=[(344, 263, 424, 343), (300, 223, W, H)], name="coins")
    assert result.warnings == [
        f"coins: box 1 (344, 263, 424, 343) reaches past the {W}x{H} image (width x height): clipped to "
        f"(344, 263, {W - 1}, {H - 1}), 24% of its area"
    ]
    assert (result.labels == 1).any()  # the remainder is still segmented

    image = write_tif(tmp_path, "coins.tif", COINS)
    out = tmp_path / "out"
    assert main(["segment", str(image), "--box", "344", "263", "424", "343", "-o", str(out)]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith(f"warning: {image}: box 1 (344, 263, 424, 343) reaches past")
    report = json.loads((out / "report.json").read_text())
    assert report["images"][0]["warnings"] == [lines[0].removeprefix("warning: ")]


def test_a_channel_axis_given_for_a_2d_image_is_refused_by_every_function_that_takes_it(litemedsam):
    """channel_axis=0 with a gray (2D) image was ignored without a word: a wrong image (one channel of several) or a
    wrong setting went unnoticed. Every function that takes it refuses it now, naming the image and its shape."""
    import napari_promptseg

    box = (40.0, 60.0, 120.0, 140.0)
    said = r"channel_axis=0 given for a 2D image of shape \(303, 384\) \(gray: it has no channel axis\)"
    calls = {
        "segment": lambda: napari_promptseg.segment(COINS, boxes=[box], channel_axis=0, device="cpu"),
        "segment_like": lambda: napari_promptseg.segment_like(COINS, COINS > 150, COINS, channel_axis=0),
        "segment_text": lambda: napari_promptseg.segment_text(COINS, "nucleus", channel_axis=0, segmenter=litemedsam),
    }
    for call in calls.values():
        with pytest.raises(PromptsegError, match=said):
            call()
    with pytest.raises(PromptsegError, match=r"channel_axis=0 given, but fixed \(303, 384\) and moving .* are 2D"):
        napari_promptseg.register(COINS, COINS, "coin", channel_axis=0)
    # one gray image beside a multichannel one (a pair given one channel_axis) is still a valid pair
    from napari_promptseg.methods.registration.pipeline import check_pair

    fixed, moving = check_pair(COINS, np.stack([COINS, COINS]), 0, "fixed", "moving")
    assert fixed.shape == (303, 384, 1) and moving.shape == (303, 384, 2)


def test_channels_given_for_a_2d_image_are_refused_naming_it_as_a_channel_axis_is(litemedsam, tmp_path, capsys):
    """channels=[0] (CLI: --channels 0) with a gray (2D) image was taken without a word: the user who thought they
    picked a channel of a multichannel image had a gray one (the wrong file or layer). It is refused, naming the
    image and saying it has no channel axis, as channel_axis is; a channel of an image with channels is taken."""
    import napari_promptseg

    said = r"channels=\[0\] given for a 2D image of shape \(303, 384\) \(gray: it has no channel axis\)"
    with pytest.raises(PromptsegError, match=rf"coins: {said}"):
        as_channels_last(COINS, channels=[0], name="coins")
    with pytest.raises(PromptsegError, match=said):
        napari_promptseg.segment(COINS, boxes=[(40.0, 60.0, 120.0, 140.0)], channels=[0], device="cpu")
    image = write_tif(tmp_path, "coins.tif", COINS)
    box = ["--box", "40", "60", "120", "140"]
    code, err = run_cli(capsys, str(image), *box, "--channels", "0", "-o", str(tmp_path / "out"))
    assert code != 0 and re.search(rf"coins\.tif: {said}", err), err
    negative = as_channels_last(np.stack([COINS, 255 - COINS], -1), channels=[1])
    np.testing.assert_array_equal(negative[..., 0], 255 - COINS)


def test_float_pixels_outside_0_1_with_normalize_none_are_refused_naming_their_range(litemedsam):
    """normalize="none" takes float pixels as they are; a float image of 0-255 values was clamped to [0, 1] without
    a word (white everywhere: the box's object was found in a blank image). It is refused, naming the values' range,
    on the whole-image path, the tiled one and SAT's features; the same pixels scaled to [0, 1] are taken."""
    import napari_promptseg

    box = (40.0, 60.0, 120.0, 140.0)
    floats = COINS.astype(np.float32)  # the real photo's 1-252 as floats
    said = r"image: normalize='none' takes float pixels in \[0, 1\], used as they are; these span \[1, 252\]"
    with pytest.raises(PromptsegError, match=said):
        segment(floats, litemedsam, boxes=[box], normalize="none")
    with pytest.raises(PromptsegError, match=said):  # small objects: tiles, normalised by one window
        segment(floats, litemedsam, boxes=[box], object_size=20, normalize="none")
    with pytest.raises(PromptsegError, match=r"target 1: normalize='none' .* span \[1, 252\]"):
        napari_promptseg.segment_like(COINS, COINS > 150, floats, segmenter=litemedsam, normalize="none")
    scaled = segment(floats / 255, litemedsam, boxes=[box], normalize="none").labels
    assert (scaled > 0).sum() > 500
