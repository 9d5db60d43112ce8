"""A foreground / boundary / background pixel classifier fitted on one labelled reference (ilastik's recipe).

ilastik segments nuclei from a few brush strokes with a random forest on simple filters (Gaussian smoothing,
Laplacian of Gaussian, gradient magnitude, Hessian eigenvalues at several scales). Here the strokes are the
reference's labels, the filters run on the tile at the working scale (so their sigmas are fixed fractions of a
typical object), and the segmenter's own encoder features, projected to a few principal components, join the
filters: they carry texture and context (glands, stained tissue) that intensity filters miss.

Three classes, as in ilastik's and most nuclei pipelines: background, object interior, and object boundary (a
thin rim inside every object); the interior class separates touching objects, the rim gives their extent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..errors import PromptsegError
from ..models.preprocessing import to_numpy

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2
#: filter scales in working pixels (a typical object spans ~20 working pixels)
SIGMAS = (1.0, 2.0, 4.0)
#: encoder features kept after the projection (principal components of the reference's features)
ENCODER_COMPONENTS = 8
#: training pixels drawn per class from the reference
SAMPLES_PER_CLASS = 6_000
#: smallest leaf of a tree
MIN_LEAF = 3


def informative_channels(image: np.ndarray) -> tuple[int, ...]:
    """Channels worth filtering: one for gray stored as RGB (identical channels), else all."""
    c = image.shape[-1]
    step = max(1, int(np.sqrt(image.shape[0] * image.shape[1] / 250_000)))
    sample = to_numpy(image[::step, ::step])
    if c > 1 and all(np.array_equal(sample[..., 0], sample[..., k]) for k in range(1, c)):
        return (0,)
    return tuple(range(c))


def filter_features(
    image: np.ndarray, channels: tuple[int, ...] | None = None, sigmas: tuple[float, ...] = SIGMAS
) -> np.ndarray:
    """(h, w, C) float image -> (h, w, F) float32: per channel the raw values, and per sigma the Gaussian, Laplacian
    of Gaussian, gradient magnitude and the two Hessian eigenvalues."""
    out = []
    for c in channels if channels is not None else range(image.shape[-1]):
        x = np.ascontiguousarray(image[..., c], np.float32)
        out.append(x)
        for s in sigmas:
            g = ndimage.gaussian_filter(x, s, mode="reflect")
            gy, gx = np.gradient(g)
            hyy, hyx = np.gradient(gy)
            _, hxx = np.gradient(gx)
            trace, det = hxx + hyy, hxx * hyy - hyx * hyx
            disc = np.sqrt(np.maximum(trace * trace / 4 - det, 0))
            out += [g, trace * s * s, np.hypot(gx, gy) * s, (trace / 2 + disc) * s * s, (trace / 2 - disc) * s * s]
    return np.stack(out, axis=-1).astype(np.float32)


def hematoxylin_density(rgb: np.ndarray) -> np.ndarray:
    """(h, w, 3) RGB in [0, 1] -> (h, w, 1) float32 optical density of hematoxylin, the nuclear stain of H&E
    (Ruifrok & Johnston's colour deconvolution, skimage's ``rgb2hed``): stains separated by their absorption, which
    z-scored RGB channels mix."""
    from skimage.color import rgb2hed

    return rgb2hed(np.clip(rgb, 0.0, 1.0))[..., :1].astype(np.float32)


def training_classes(labels: np.ndarray, rim: int = 1) -> np.ndarray:
    """(h, w) instance labels -> classes: 0 background, 1 interior, 2 boundary (``rim`` pixels inside each object,
    including where two objects touch)."""
    from skimage.segmentation import find_boundaries

    classes = np.where(labels > 0, INTERIOR, BACKGROUND).astype(np.uint8)
    edge = find_boundaries(labels, mode="inner") & (labels > 0)
    if rim > 1:
        edge = ndimage.binary_dilation(edge, iterations=rim - 1) & (labels > 0)
    classes[edge] = BOUNDARY
    return classes


@dataclass
class EncoderProjection:
    """A fixed linear projection of encoder features (principal components of the reference's)."""

    mean: torch.Tensor  # (C,)
    components: torch.Tensor  # (C, k)
    scale: torch.Tensor  # (k,)

    @classmethod
    def fit(cls, grids: list[torch.Tensor], k: int = ENCODER_COMPONENTS) -> EncoderProjection:
        x = torch.cat([g.reshape(-1, g.shape[-1]) for g in grids]).double()
        mean = x.mean(0)
        # deterministic eigen-decomposition of the covariance (no randomised SVD)
        cov = (x - mean).T @ (x - mean) / max(1, len(x) - 1)
        values, vectors = torch.linalg.eigh(cov)
        order = torch.argsort(values, descending=True)[:k]
        vectors = vectors[:, order]
        # fix the sign of each component so the projection repeats exactly
        vectors = vectors * torch.sign(vectors[vectors.abs().argmax(0), torch.arange(vectors.shape[1])])
        scale = values[order].clamp_min(1e-12).sqrt()
        return cls(mean.float(), vectors.float(), scale.float())

    def __call__(self, grid: torch.Tensor) -> torch.Tensor:
        """(h, w, C) -> (h, w, k)"""
        return ((grid - self.mean) @ self.components) / self.scale


def encoder_pixel_features(
    features: torch.Tensor, projection: EncoderProjection, input_size: int, resized_shape: tuple[int, int]
) -> np.ndarray:
    """(1, C, g, g) encoder output over the padded model input -> (h, w, k) projected features at working pixels."""
    grid = features[0].float().permute(1, 2, 0)  # (g, g, C)
    projected = projection(grid).permute(2, 0, 1)[None]  # (1, k, g, g)
    up = F.interpolate(projected, size=(input_size, input_size), mode="bilinear", align_corners=False)
    nh, nw = resized_shape
    return up[0, :, :nh, :nw].permute(1, 2, 0).contiguous().numpy()


class PixelClassifier:
    """Random forest over per-pixel features; ``fit`` on reference tiles, ``predict`` class probabilities."""

    def __init__(self, *, trees: int = 24, max_depth: int = 14, min_leaf: int | None = None, seed: int = 0) -> None:
        self.trees, self.max_depth, self.seed = trees, max_depth, seed
        self.min_leaf = MIN_LEAF if min_leaf is None else min_leaf
        self._forest = None
        self.n_features = 0

    def fit(self, features: list[np.ndarray], classes: list[np.ndarray]) -> PixelClassifier:
        from sklearn.ensemble import RandomForestClassifier

        rng = np.random.default_rng(self.seed)
        xs, ys = [], []
        flat_x = np.concatenate([f.reshape(-1, f.shape[-1]) for f in features])
        flat_y = np.concatenate([c.ravel() for c in classes])
        present = np.unique(flat_y)
        if BACKGROUND not in present or INTERIOR not in present and BOUNDARY not in present:
            raise PromptsegError(
                "the reference needs both labelled objects and unlabelled background to learn what an object is"
            )
        for cls in present:
            idx = np.flatnonzero(flat_y == cls)
            if len(idx) > SAMPLES_PER_CLASS:
                idx = np.sort(rng.choice(idx, SAMPLES_PER_CLASS, replace=False))
            xs.append(flat_x[idx])
            ys.append(flat_y[idx])
        self._forest = RandomForestClassifier(
            n_estimators=self.trees,
            max_depth=self.max_depth,
            min_samples_leaf=self.min_leaf,
            max_features="sqrt",
            class_weight="balanced",
            random_state=self.seed,
            n_jobs=1,
        ).fit(np.concatenate(xs), np.concatenate(ys))
        self.n_features = flat_x.shape[1]
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(h, w, F) -> (h, w, 3) probabilities of background, interior, boundary."""
        if self._forest is None:
            raise PromptsegError("the pixel classifier has not been fitted")
        h, w, f = features.shape
        flat = features.reshape(-1, f)
        # rows split over torch's threads (the trees release the GIL); each row's sum over the trees runs in the
        # same order as in one call, so the result does not depend on the split (sklearn's n_jobs would add the
        # trees in the order they finish)
        parts = min(torch.get_num_threads(), max(1, len(flat) // 16_384))
        if parts > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(parts) as pool:
                chunks = pool.map(self._forest.predict_proba, np.array_split(flat, parts))
                proba = np.concatenate(list(chunks)).astype(np.float32)
        else:
            proba = self._forest.predict_proba(flat).astype(np.float32)
        out = np.zeros((h * w, 3), np.float32)
        out[:, self._forest.classes_] = proba
        return out.reshape(h, w, 3)
