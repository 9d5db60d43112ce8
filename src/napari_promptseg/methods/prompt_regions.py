"""Region sources for registration from the same prompts on both images (Tell2Reg: "the same prompt(s) applied to the
fixed and the moving image give corresponding regions; many prompts give many pairs").

* :class:`TextRegions`: a text prompt answered by :func:`.text.segment_text` (GroundingDINO + SAM per box, CLIPSeg
  + SAM, or offline the reference library); each object becomes a :class:`~.regions.Region` whose ``prompt`` is the
  phrase that found it and whose ``score`` is its detection score, so regions pair only within the same phrase
  (by prototype similarity, as the automatic regions do).
* :class:`OneShotRegions`: a labelled reference image as the prompt (:func:`.oneshot.segment_like`, SAT).

Both are callables ``image -> list[Region]`` (:class:`~.regions.RegionSource`) for
:func:`~.registration.register`'s ``prompts``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..models.protocols import PromptableSegmenter
from .regions import Region
from .text import TextResult, TextRoute, choose_route, segment_text

#: suffix of the prompt name of a phrase's union region ("gland (all)"): it pairs only with the other image's union
UNION_SUFFIX = " (all)"
#: objects smaller than this (pixels) are specks of a mask (SAT answers leave a few), not regions to pair
DEFAULT_MIN_PIXELS = 16
#: region masks are kept with at most this many pixels on the longer side (registration resamples them to <= 256 px;
#: a cap bounds the memory of many objects on a large image while small objects still survive the resampling)
DEFAULT_MASK_SIDE = 1024


def _shrink(mask: np.ndarray, side: int | None) -> np.ndarray:
    """Area-weighted downsampling to longest side ``side`` (> 0.5 inside); a small object that would vanish keeps
    the pixels it covers most."""
    if side is None or max(mask.shape) <= side:
        return mask
    s = side / max(mask.shape)
    size = (max(1, round(mask.shape[0] * s)), max(1, round(mask.shape[1] * s)))
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    frac = F.interpolate(t, size=size, mode="area")[0, 0].numpy()
    out = frac > 0.5
    return out if out.any() else frac >= frac.max()


def regions_from_labels(
    labels: np.ndarray,
    phrases: Sequence[str],
    scores: Sequence[float],
    *,
    union: bool = True,
    mask_side: int | None = DEFAULT_MASK_SIDE,
    min_pixels: int = DEFAULT_MIN_PIXELS,
) -> list[Region]:
    """Instance labels (id k + 1 found by ``phrases[k]`` with ``scores[k]``) -> regions, one per object of at least
    ``min_pixels`` pixels.

    ``union``: also one region per phrase covering all of its objects, prompt ``"<phrase> (all)"``. Why: the same
    prompt rarely finds the same *number* of objects in two images (a gland split in two, a nucleus missed, two lung
    fields merged); the objects then pair by prototype similarity only, and similar-looking objects (left and right
    lung, neighbouring glands) can cross-pair. The union of what the phrase names is one region per image that
    corresponds by construction (like the automatic route's whole-image "global" region), so every phrase found in
    both images gives at least one reliable pair. When a phrase found a single object, that object *is* the union:
    it is given once, as the union, so that it pairs with the other image's union whatever its count.
    """
    labels = np.asarray(labels)
    by_phrase: dict[str, list[tuple[np.ndarray, float]]] = {}
    for k, (phrase, score) in enumerate(zip(phrases, scores, strict=True)):
        mask = labels == k + 1
        if mask.sum() >= max(min_pixels, 1):
            by_phrase.setdefault(phrase, []).append((mask, float(score)))
    regions: list[Region] = []
    for phrase, objects in by_phrase.items():
        if not union or len(objects) > 1:
            regions += [Region(mask=_shrink(m, mask_side), score=s, prompt=phrase) for m, s in objects]
        if union:
            merged = np.any([m for m, _ in objects], axis=0)
            best = max(s for _, s in objects)
            regions.append(Region(mask=_shrink(merged, mask_side), score=best, prompt=phrase + UNION_SUFFIX))
    return regions


class TextRegions:
    """Regions of one image that a text prompt names (``"gland"``, ``"gland, nuclei"``: one phrase per object).

    ``route``: a :class:`~.text.TextRoute` from :func:`~.text.choose_route` (reuses the loaded model; registration
    chooses once for all prompts) or a route name, chosen on the first call and kept. ``segmenter`` decodes boxes /
    refines heatmaps / runs SAT (default LiteMedSAM). Other keyword arguments go to :func:`~.text.segment_text`
    (``box_threshold``, ``heatmap_threshold``, ``top_k``, ``library`` for a route name, ...). ``results`` keeps each
    call's :class:`~.text.TextResult` (which route answered and why), in call order.
    """

    def __init__(
        self,
        prompt: str,
        route: TextRoute | str = "auto",
        segmenter: PromptableSegmenter | None = None,
        *,
        union: bool = True,
        mask_side: int | None = DEFAULT_MASK_SIDE,
        min_pixels: int = DEFAULT_MIN_PIXELS,
        **segment_text_options: Any,
    ) -> None:
        self.prompt = prompt
        self.route = route
        self.segmenter = segmenter
        self.union = union
        self.mask_side = mask_side
        self.min_pixels = min_pixels
        self.options = segment_text_options
        self.results: list[TextResult] = []

    def text_route(self) -> TextRoute:
        """The route that answers (chosen once; a route-name failure raises the route chooser's message)."""
        if not isinstance(self.route, TextRoute):
            keys = ("grounder", "heatmapper", "library", "weights", "device")
            self.route = choose_route(self.route, **{k: self.options[k] for k in keys if k in self.options})
        return self.route

    def __call__(self, image: np.ndarray, *, name: str = "image") -> list[Region]:
        route = self.text_route()
        options = {"name": name, **self.options}
        result = segment_text(image, self.prompt, route=route, segmenter=self.segmenter, **options)
        self.results.append(result)
        return regions_from_labels(
            result.labels,
            # a box whose phrase tokens all fell below the text threshold has no phrase: it answers the whole prompt
            [phrase or self.prompt for phrase in result.phrases],
            result.scores,
            union=self.union,
            mask_side=self.mask_side,
            min_pixels=self.min_pixels,
        )

    def __repr__(self) -> str:
        route = self.route.route if isinstance(self.route, TextRoute) else self.route
        return f"TextRegions({self.prompt!r}, route={route!r})"


class OneShotRegions:
    """Regions of one image that look like the labelled reference (SAT one-shot, :func:`~.oneshot.segment_like`):
    a labelled reference image as the prompt. The connected components of the answer are the objects (prompt
    ``name``), plus their union (see :func:`regions_from_labels`); score = the SAT scheme score.

    ``reference``/``reference_mask``: one image and mask, or lists of them (SAT ensemble). Other keyword arguments go
    to :func:`~.oneshot.segment_like` (``strategy``, ``channel_axis``, ...).
    """

    def __init__(
        self,
        reference: np.ndarray | Sequence[np.ndarray],
        reference_mask: np.ndarray | Sequence[np.ndarray],
        *,
        name: str = "reference",
        segmenter: PromptableSegmenter | None = None,
        union: bool = True,
        mask_side: int | None = DEFAULT_MASK_SIDE,
        min_pixels: int = DEFAULT_MIN_PIXELS,
        **segment_like_options: Any,
    ) -> None:
        self.reference = reference
        self.reference_mask = reference_mask
        self.name = name
        self.segmenter = segmenter
        self.union = union
        self.mask_side = mask_side
        self.min_pixels = min_pixels
        self.options = segment_like_options
        self.results: list = []

    def __call__(self, image: np.ndarray, *, name: str = "image") -> list[Region]:
        from .oneshot import segment_like

        if self.segmenter is None:
            from ..models import load_segmenter

            self.segmenter = load_segmenter()
        result = segment_like(
            self.reference,
            self.reference_mask,
            image,
            segmenter=self.segmenter,
            names=[name],
            warn_many=False,  # regions for registration: one region per reference is what is asked
            **self.options,
        )[0]
        self.results.append(result)
        components, n = ndimage.label(result.mask)
        return regions_from_labels(
            components,
            [self.name] * n,
            [result.score] * n,
            union=self.union,
            mask_side=self.mask_side,
            min_pixels=self.min_pixels,
        )

    def __repr__(self) -> str:
        return f"OneShotRegions(name={self.name!r})"
