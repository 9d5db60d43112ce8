"""Errors are one line for the user, with the details one click away (issue 14): a missing-weights error was a
~900-character toast with URLs and file lists."""

from __future__ import annotations

import pytest

from napari_promptseg.errors import SHORT_LIMIT, PromptsegError, WeightsError, split_message
from napari_promptseg.methods.text import choose_route
from napari_promptseg.models import get_card, load_grounder
from napari_promptseg.models.hub import hf_cache_dir
from napari_promptseg.models.registry import cache_dir


def test_missing_weights_error_is_short_with_the_details_apart():
    with pytest.raises(WeightsError) as caught:
        choose_route("groundingdino", device="cpu")
    short, details = split_message(caught.value)
    assert len(short) <= SHORT_LIMIT and short.startswith("no GroundingDINO weights"), short
    assert "http" not in short and str(cache_dir()) not in short
    # where to put which file: in the details (and in str(exc), the CLI's one-line reason)
    assert get_card("grounding_dino_tiny").repo_id in details and str(hf_cache_dir()) in details
    assert get_card("groundingdino_swint_ogc").filename in details and str(cache_dir()) in details
    assert str(cache_dir()) in str(caught.value)


def test_one_model_missing_says_which_and_where_apart():
    with pytest.raises(WeightsError) as caught:
        load_grounder("grounding_dino_tiny", device="cpu")
    short, details = split_message(caught.value)
    assert short == "grounding_dino_tiny: weights not found and $PROMPTSEG_OFFLINE is set"
    assert str(hf_cache_dir()) in details and "config.json" in details and "https://huggingface.co/" in details


def test_long_messages_without_details_are_cut_at_a_clause():
    message = "reference labels 'x' of shape 3x4 do not match the 2D reference image 'y'; " + "more words " * 20
    short, details = split_message(PromptsegError(message))
    assert short == "reference labels 'x' of shape 3x4 do not match the 2D reference image 'y' … (details)"
    assert details == " ".join(message.split())
    assert split_message(PromptsegError("short")) == ("short", None)
    assert split_message(KeyError("k")) == ("'k'", None)
