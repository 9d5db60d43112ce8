"""Segment what a text prompt names, by whichever route can answer it here.

Routes, tried in this order by ``route="auto"``, which takes only models whose package is installed and whose weights
are already on disk (bundled, in the Hugging Face cache, in our cache, or given): it never downloads. Naming a route,
a model (``grounder``, ``heatmapper``) or weights (a hub id) is what fetches missing weights (never a package):

0. **trained**: a text segmenter trained on the user's triplets (``promptseg train-text``), when one is given
   (``text_model``): its mask probability is thresholded (0.5) and split into objects. It reads the prompt as one
   sentence (trained prompts such as "one small polyp, located in top of the image" contain commas);
1. **groundingdino**: a text grounder (GroundingDINO through transformers or groundingdino-py) gives boxes per
   phrase; each box is decoded to a mask by the promptable segmenter (Grounded-SAM, Tell2Reg's prompting).
2. **clipseg**: a text heatmapper (CLIPSeg or a medvlsm-style fine-tuned checkpoint) gives a per-pixel
   probability; it is thresholded and, optionally, refined by the segmenter from boxes of its components.
3. **library**: offline, no vision-language weights: the prompt is matched to named exemplars of the user's
   reference library with the bundled sentence model and answered by one-shot SAT with the best exemplars.

The result says which route answered and why the earlier ones did not.

Modules by job: :mod:`.phrases` (the prompt as phrases), :mod:`.routes` (which route answers, loading its models),
:mod:`.segment` (:func:`segment_text`), :mod:`.answers` (each route's way from image to labels), :mod:`.result`.
"""

from ...callbacks import ProgressCallback
from .answers import SPECK_FRACTION, prompt_cut_warnings
from .phrases import prompt_text, split_phrases
from .result import TextResult
from .routes import (
    GROUNDER_MODELS,
    HEATMAPPER_MODELS,
    PROMPT_ROUTES,
    ROUTES,
    Route,
    TextRoute,
    available_route,
    choose_route,
    download_advice,
    route_missing,
)
from .segment import segment_text

__all__ = [
    "GROUNDER_MODELS",
    "HEATMAPPER_MODELS",
    "PROMPT_ROUTES",
    "ROUTES",
    "SPECK_FRACTION",
    "ProgressCallback",
    "Route",
    "TextResult",
    "TextRoute",
    "available_route",
    "choose_route",
    "download_advice",
    "prompt_cut_warnings",
    "prompt_text",
    "route_missing",
    "segment_text",
    "split_phrases",
]
