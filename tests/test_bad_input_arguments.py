"""Arguments of the console functions that are not what they take (text for numbers, a number for a list, an array
where a list of region sources goes, no image at all): a PromptsegError naming the argument and what is wrong, not
Python's own TypeError or IndexError from deep inside."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from napari_promptseg import find_all_like, register, segment
from napari_promptseg.errors import PromptsegError

COINS = data.coins()[100:196, 100:196].copy()  # real coins, 96 x 96
BOX = (20, 20, 60, 60)


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        # "could not convert string to float: 'a'" and "float() argument must be ... not 'complex'"
        ({"boxes": [("a", 20, 60, 60)]}, r"box 1: expected 4 numbers x0 y0 x1 y1, got \('a', 20, 60, 60\)"),
        ({"boxes": [(1 + 1j, 20, 60, 60)]}, r"box 1: expected 4 numbers x0 y0 x1 y1, got \(\(1\+1j\), 20, 60, 60\)"),
        ({"points": [("30", None)]}, r"positive point 1: expected 2 numbers x y, got \('30', None\)"),
        # "'int' object is not iterable"
        ({"points": 5}, r"positive points: 5 is no list of \(x, y\)"),
        # a string was taken as a list of its characters: "boxes: 11 numbers"
        ({"boxes": "20 20 60 60"}, r"boxes: the text '20 20 60 60' is no list of \(x0, y0, x1, y1\)"),
        # "ufunc 'isfinite' not supported for the input types"
        ({"boxes": [BOX], "object_size": "20"}, r"object size must be a positive number of pixels, got '20'"),
    ],
    ids=["box-text", "box-complex", "point-text", "points-number", "boxes-text", "object-size-text"],
)
def test_prompts_that_are_not_numbers_are_refused_naming_them(litemedsam, prompts, message):
    with pytest.raises(PromptsegError, match=message):
        segment(COINS, **prompts, device="cpu")


def test_find_all_refuses_a_box_of_text_naming_it(litemedsam):
    with pytest.raises(PromptsegError, match=r"box 1: expected 4 numbers x0 y0 x1 y1, got \('a', 20, 60, 60\)"):
        find_all_like(COINS, [("a", 20, 60, 60)], segmenter=litemedsam)


def test_channels_that_are_not_numbers_are_refused_naming_them(litemedsam):
    # "'<=' not supported between instances of 'int' and 'str'"
    with pytest.raises(PromptsegError, match=r"image: channels must be channel indices \(whole numbers\), got \['red'"):
        segment(np.dstack([COINS] * 3), boxes=[BOX], channels=["red"], device="cpu")


@pytest.mark.parametrize("fixed", [np.array(5)], ids=["0d"])
def test_register_refuses_a_fixed_image_that_is_no_image(fixed):
    # IndexError: tuple index out of range (the shape's last axis looked up)
    with pytest.raises(PromptsegError, match=r"fixed has shape \(\) \(0D\): registration needs two 2D images"):
        register(fixed, COINS, method="intensity")


def test_register_refuses_an_array_given_as_the_prompts_naming_them(litemedsam):
    # "The truth value of an array with more than one element is ambiguous" (compared with "auto")
    with pytest.raises(PromptsegError, match=r"prompts\[0\]: expected a callable image -> masks, got ndarray"):
        register(COINS, COINS, prompts=np.zeros(3), segmenter=litemedsam)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        # every reference cell was background (the mask's own cells too) or foreground, without a word
        ({"fg_purity": 2.0}, r"fg_purity must lie in \(0, 1\], got 2"),
        ({"fg_purity": -1.0}, r"fg_purity must lie in \(0, 1\], got -1"),
        # "divide by zero encountered in divide", and a result
        ({"score_temperature": 0.0}, r"score_temperature must be a positive number, got 0"),
        ({"score_temperature": "warm"}, r"score_temperature must be a positive number, got 'warm'"),
    ],
    ids=["purity-above-1", "purity-negative", "temperature-0", "temperature-text"],
)
def test_one_shot_settings_out_of_range_are_refused_naming_them(litemedsam, settings, message):
    mask = np.zeros(COINS.shape, np.uint8)
    mask[30:50, 30:50] = 1
    with pytest.raises(PromptsegError, match=message):
        from napari_promptseg import segment_like

        segment_like(COINS, mask, COINS, segmenter=litemedsam, **settings)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"stop_iou": 5.0}, r"stop_iou must lie in \[0, 1\], got 5"),  # no object could ever be carried on
        ({"min_score": -0.5}, r"min_score must lie in \[0, 1\], got -0.5"),
    ],
    ids=["stop-iou", "min-score"],
)
def test_propagation_settings_out_of_range_are_refused_naming_them(litemedsam, settings, message):
    from napari_promptseg import propagate_through_stack

    with pytest.raises(PromptsegError, match=message):  # the CLI's --stop-iou refused it; Python took it
        propagate_through_stack(np.stack([COINS] * 3), 1, boxes=[BOX], segmenter=litemedsam, **settings)


@pytest.mark.parametrize(
    ("data", "settings", "message"),
    [
        # "'int' object is not iterable"
        (5, {}, r"training data: 5 is neither a triplet CSV nor a list of \(image, mask, text\) items"),
        # "'<' not supported between instances of 'int' and 'str'"
        (None, {"lr": "fast"}, r"lr must be a finite number above 0, got 'fast'"),
        (None, {"val_fraction": "half"}, r"val_fraction must lie from 0 to 1, got 'half'"),
    ],
    ids=["data-number", "lr-text", "val-fraction-text"],
)
def test_training_arguments_that_are_not_what_it_takes_are_refused_naming_them(tmp_path, data, settings, message):
    from napari_promptseg import train_text_segmenter

    mask = (COINS > 120).astype(np.uint8)
    data = [(COINS, mask, "coin"), (COINS[::-1].copy(), mask[::-1].copy(), "coin")] if data is None else data
    with pytest.raises(PromptsegError, match=message):
        train_text_segmenter(data, tmp_path / "model", epochs=1, **settings)


def test_a_trained_text_model_refuses_an_image_too_small_for_its_encoder_as_every_route_does(litemedsam):
    """A 30 x 20 px image was enlarged 8.5x to the encoder's input and answered (noise passes for objects there);
    the SAM routes and the library refuse it, naming why. The decoder is untrained: this is about the refusal."""
    import torch

    from napari_promptseg import segment_text
    from napari_promptseg.errors import NothingFoundError
    from napari_promptseg.methods.text_training.trainer import TrainingConfig
    from napari_promptseg.models import load_text_embedder
    from napari_promptseg.models.text_decoder import TextPromptDecoder
    from napari_promptseg.models.text_segmenter import TrainedTextSegmenter

    torch.manual_seed(0)
    decoder = TextPromptDecoder(TrainingConfig().decoder_config(384, 128))
    decoder.init_from_segmenter(litemedsam)
    model = TrainedTextSegmenter(decoder, litemedsam, load_text_embedder(device="cpu"))
    assert segment_text(COINS, "coin", text_model=model).route == "trained"  # a whole image is answered
    with pytest.raises(NothingFoundError, match=r"image: 30 x 20 px, smaller than the 64 px along its longest side"):
        segment_text(COINS[:20, :30], "coin", text_model=model)


def test_a_huge_image_refused_by_a_console_function_advises_nothing_it_cannot_do(litemedsam):
    """segment() refused a huge array advising to "raise max_pixels if you have the memory": no console function,
    command or widget takes max_pixels. Said only to a caller of as_channels_last that set it."""
    from napari_promptseg.models.preprocessing import as_channels_last

    huge = np.broadcast_to(np.uint8(7), (20_000, 20_000))  # 400 Mpx, one byte of memory
    with pytest.raises(PromptsegError, match=r"exceeds the limit of 150,000,000; downsample or tile") as info:
        segment(huge, boxes=[BOX], device="cpu")
    assert "max_pixels" not in str(info.value)
    with pytest.raises(PromptsegError, match=r"\(or raise max_pixels if you have the memory\)"):
        as_channels_last(COINS, max_pixels=1_000)


def test_no_image_is_said_to_be_none(litemedsam):
    # "image: unsupported pixel type object; expected integers or floats"; register: "fixed has shape () (0D)"
    with pytest.raises(PromptsegError, match=r"^image: None, not pixels; give the image's array or napari layer"):
        segment(None, boxes=[BOX], device="cpu")
    with pytest.raises(PromptsegError, match=r"^moving: None, not pixels"):
        register(COINS, None, method="intensity")
