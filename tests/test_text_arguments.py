"""segment_text's arguments of the wrong kind are refused by name before any model loads, as a prompt of the wrong
kind is: a number, a list or a model's name where a loaded model goes failed deep in a route ("'int' object has no
attribute 'heatmap'", "expected str, bytes or os.PathLike object, not int")."""

from __future__ import annotations

import pytest
from skimage import data

from napari_promptseg.errors import PromptsegError
from napari_promptseg.methods.text import segment_text


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ({"text_model": 3}, r"text_model must be a trained text model's directory .*; got int 3"),
        ({"text_model": True}, r"text_model must be .*; got bool True"),
        ({"grounder": 3}, r"grounder must be a GroundingDINO model's name .*; got int 3"),
        ({"route": "clipseg", "heatmapper": [1]}, r"heatmapper must be a CLIPSeg model's name .*; got list \[1\]"),
        ({"library": 3}, r"library must be a reference library .*; got int 3"),
        ({"weights": 3}, r"weights must be a path or a hub id .*; got int 3"),
        ({"segmenter": "litemedsam"}, r"segmenter must be a loaded segmenter .*load_segmenter\('litemedsam'\).*"),
    ],
)
def test_a_model_argument_of_the_wrong_kind_is_refused_naming_it(given, said):
    with pytest.raises(PromptsegError, match=said):
        segment_text(data.coins()[:64, :64], "nuclei", device="cpu", **given)
