"""Candidates from patch correspondence (SAT's matching): where a tile's encoder patches resemble the reference
objects more than the reference background.

The pixel classifier cuts objects by their pixels; for large objects of varied texture (glands: lumen, epithelium,
touching neighbours) its foreground joins neighbours through the stroma and fragments the objects themselves.
Patch similarity sees whole structures: regions where the best match among the reference's object patches beats
the best match among its background patches (``margin > 0``) are candidates, every region gets its box, and a
large region also the boxes of its watershed parts (touching objects); the decoder's confidence decides between
them when painting. Which candidates suit a reference is measured on the reference itself
(:func:`.selection.choose_candidates`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ...models.features import PatchFeatures, embedding_patch_features
from ...models.protocols import Embedding
from ..oneshot import label_reference_patches

#: reference cells at least this much inside an object count as object cells (small objects such as nuclei fill
#: few whole cells at the encoder's stride; SAT/GBMSeg require all)
FG_PURITY = 0.5

#: a region larger than this times the median exemplar area is also split into parts
SPLIT_FACTOR = 1.5


@dataclass(frozen=True)
class PatchReference:
    """The reference tile's object and background patches, unit-norm features."""

    fg: torch.Tensor  # (Nf, C)
    bg: torch.Tensor  # (Nb, C), may be empty

    @classmethod
    def from_tile(cls, embedding: Embedding, mask: np.ndarray) -> PatchReference:
        """``mask``: the tile's objects over its own pixels (the embedding's original shape)."""
        feats = embedding_patch_features(embedding)
        fg, bg, _, _ = label_reference_patches(feats, mask, fg_purity=FG_PURITY)
        flat = feats.flat()
        return cls(fg=flat[torch.from_numpy(fg)].contiguous(), bg=flat[torch.from_numpy(bg)].contiguous())

    def margin(self, features: PatchFeatures) -> np.ndarray:
        """(gh, gw) best object-patch similarity minus best background-patch similarity of every target cell."""
        flat = features.flat()
        fg_sim = (flat @ self.fg.T).max(dim=1).values
        bg_sim = (flat @ self.bg.T).max(dim=1).values if len(self.bg) else torch.full_like(fg_sim, -1.0)
        return (fg_sim - bg_sim).reshape(features.shape).numpy()


def margin_pixels(reference: PatchReference, embedding: Embedding, shape: tuple[int, int]) -> np.ndarray:
    """The margin interpolated to the working pixels (``shape``) of the tile the embedding holds."""
    feats = embedding_patch_features(embedding)
    margin = torch.from_numpy(reference.margin(feats))[None, None]
    per_cell = embedding.transform.input_size / embedding.features.shape[-1]  # working pixels per cell
    gh, gw = feats.shape
    up = F.interpolate(margin, size=(round(gh * per_cell), round(gw * per_cell)), mode="bilinear", align_corners=False)
    up = up[0, 0, : shape[0], : shape[1]].numpy()
    if up.shape != shape:
        up = np.pad(up, ((0, shape[0] - up.shape[0]), (0, shape[1] - up.shape[1])), mode="edge")
    return up


def margin_regions(
    margin: np.ndarray, median_area: float, diameter: float
) -> list[tuple[tuple[slice, slice], np.ndarray]]:
    """(bounding slices, own mask) of every region with margin > 0, and of the watershed parts of the large ones
    (maxima of the distance transform at least half a typical object, ``diameter`` working pixels, apart)."""
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    components, _ = ndimage.label(margin > 0)
    out = []
    min_distance = max(1, int(0.5 * diameter))
    for i, sl in enumerate(ndimage.find_objects(components), start=1):
        if sl is None:
            continue
        comp = components[sl] == i
        out.append((sl, comp))
        if comp.sum() < SPLIT_FACTOR * median_area:
            continue
        dist = ndimage.distance_transform_edt(np.pad(comp, 1))[1:-1, 1:-1]
        peaks = peak_local_max(dist, min_distance=min_distance, exclude_border=False, labels=comp.astype(int))
        if len(peaks) < 2:
            continue
        markers = np.zeros(comp.shape, np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        parts = watershed(-dist, markers, mask=comp)
        for j, part in enumerate(ndimage.find_objects(parts), start=1):
            if part is not None:
                rows = slice(sl[0].start + part[0].start, sl[0].start + part[0].stop)
                cols = slice(sl[1].start + part[1].start, sl[1].start + part[1].stop)
                out.append(((rows, cols), parts[part] == j))
    return out
