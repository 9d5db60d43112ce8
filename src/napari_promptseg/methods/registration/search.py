"""A global start that large rotations and mirrored sections cannot fool: a coarse rotation (and flip) search, scored
by the image similarity alone (no landmarks, no regions).

Serial sections come rotated by any angle, and mirrored when a section was mounted upside down; the intensity stages
(SimpleITK affine from the image moments) and the region starts (rotation <= ``max_rotation_deg``, no reflection)
only see a neighbourhood of the identity. Here every rotation in steps of ``search_step_deg``, with and without a
left-right flip, turns the moving image about its intensity centroid onto the fixed image's centroid; each is scored
by :func:`~.intensity.alignment_score` (NMI) on small images, and the best of each orientation (the unrotated one
aside: it is the moments start), their angles refined between the steps, become starts of
:func:`~.route.intensity_route`, where they compete with the others by the same judge.
A candidate that scores below the unrotated one is not a start: it would lose to the moments start after paying
for an affine stage (on the real dev pairs every such start lost).

Images of one field at two pixel sizes (a 5 % overview and a 10 % scan) differ by a scale the moments start does not
have and the affine stage, starting from 1, did not reach (CIMA H&E 5 % to CC10 10 %: rTRE 3.0 % after the affine
stage, 2.2 % after the whole default route). When the images' diagonals differ by more than ``SIZE_RATIO_MIN``,
every candidate is also tried scaled by their ratio (``search_size_ratio``; the unrotated scaled one is then not
covered by the moments start), and the best scaled ones are starts besides the unscaled ones: 0.77 % and 0.53 %.
"""

from __future__ import annotations

import numpy as np

from ..warp import Deformation
from .intensity import IntensityImages, _downsample, alignment_score
from .options import RegistrationOptions, size_ratio

#: images whose diagonals differ by more than this factor get candidates scaled by the ratio too
SIZE_RATIO_MIN = 1.1
#: angles tried across one step about each chosen candidate (its own included), to start the affine stage nearer
FINE_STEPS = 7


def _centroid(gray: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Intensity centroid (x, y) in full-resolution pixels of a small tissue-bright gray image of a ``shape`` image."""
    h, w = gray.shape
    weights = gray.astype(np.float64)
    total = max(weights.sum(), 1e-12)
    ys, xs = np.mgrid[0:h, 0:w]
    sx, sy = shape[1] / w, shape[0] / h
    # numpy's own sums, not BLAS dot products: OpenBLAS splits a long dot product among $OMP_NUM_THREADS threads,
    # and the rounding of its partial sums then depends on how many there are (the lesions pair's start moved by a
    # few ulps between 1 and 2 threads, and the affine stage amplified that to 0.0049 against 0.0051 rTRE)
    return np.array([(((xs + 0.5) * sx - 0.5) * weights).sum(), (((ys + 0.5) * sy - 0.5) * weights).sum()]) / total


def rigid_about_centroids(
    angle_deg: float, flip: bool, fixed_c: np.ndarray, moving_c: np.ndarray, scale: float = 1.0
) -> np.ndarray:
    """3x3 pixel map fixed -> moving: rotate by ``angle_deg`` (and mirror x first when ``flip``) about the centroids,
    times ``scale`` (moving pixels per fixed pixel)."""
    a = np.radians(angle_deg)
    linear = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    if flip:
        linear = linear @ np.diag([-1.0, 1.0])
    out = np.eye(3)
    out[:2, :2] = linear
    out[:2, 2] = moving_c - linear @ fixed_c
    return out


def rotation_flip_search(
    images: IntensityImages, opts: RegistrationOptions
) -> tuple[dict[str, Deformation], dict[str, float]]:
    """Starts from the coarse search: ``search_starts`` (angle, flip) by NMI on images of longest side
    ``search_side``, skipping any within 2 steps of a better one and any that scores no better than the unrotated
    candidate; the best unmirrored and the best mirrored one come first, then the others by score. The unrotated
    candidate itself is the moments start and is not repeated (``search_near_identity``: it is). Each start's
    angle is then refined within one step by the same score (:data:`FINE_STEPS` angles). With the size-ratio scale,
    as many again among the scaled candidates (chosen apart: on a rotated image on an expanded canvas, wrongly
    scaled candidates scored higher and took the places of the right rotation). Returns ``{name: start}`` (named by
    the refined angle, "search 38 deg") and every grid candidate's score (for the report; keys "45 deg",
    "45 deg flipped x1.41")."""
    shrink = min(1.0, opts.search_side / max(images.fixed.shape))
    fixed = _downsample(images.fixed, shrink)
    moving = _downsample(images.moving, min(1.0, opts.search_side / max(images.moving.shape)))
    fixed_c = _centroid(fixed, images.fixed_shape)
    moving_c = _centroid(moving, images.moving_shape)
    ratio = size_ratio(images.fixed_shape, images.moving_shape)
    scales = [1.0]
    if opts.search_size_ratio and max(ratio, 1 / ratio) > SIZE_RATIO_MIN:
        scales.append(ratio)

    def start(key: tuple[float, bool, float]) -> Deformation:
        matrix = rigid_about_centroids(key[0], key[1], fixed_c, moving_c, key[2])
        return Deformation.from_pixel_affine(matrix, images.fixed_shape, images.moving_shape)

    scores: dict[tuple[float, bool, float], float] = {}
    for scale in scales:
        for flip in (False, True) if opts.search_flip else (False,):
            for angle in np.arange(0.0, 360.0, opts.search_step_deg):
                key = (float(angle), flip, scale)
                scores[key] = alignment_score(fixed, moving, start(key))
    step = opts.search_step_deg

    def near(a: tuple[float, bool, float], b: tuple[float, bool, float]) -> bool:
        diff = abs((a[0] - b[0] + 180) % 360 - 180)
        return a[1:] == b[1:] and diff <= 2 * step + 1e-6

    # a candidate that scores below the unrotated one (the moments start's neighbour) would lose to the moments
    # start by the same judge after its affine stage: it is not worth that stage
    identity = (0.0, False, 1.0)
    identity_score = scores[identity]
    chosen: list[tuple[float, bool, float]] = []
    for scale in scales:
        # the best of each neighbourhood (non-maximum suppression: its neighbours would refine to the same optimum)
        peaks: list[tuple[float, bool, float]] = []
        for key in sorted((k for k in scores if k[2] == scale), key=lambda k: -scores[k]):
            if scores[key] <= identity_score:
                break
            if not any(near(key, p) for p in peaks):
                peaks.append(key)
        # the best unmirrored and the best mirrored peak take the first places, the others follow by score: on a
        # true pair the two orientations' best differ by little (a real pair rotated by 37 deg: 30 deg and 225 deg
        # flipped, both 1.1136), and when the places went by score alone a mirrored start could leave the true
        # orientation none near its angle (it then won by 0.0025 NMI, 304 px off)
        leaders = [next(p for p in peaks if p[1] == flip) for flip in (False, True) if any(p[1] == flip for p in peaks)]
        leaders.sort(key=lambda k: -scores[k])
        chosen += (leaders + [p for p in peaks if p not in leaders])[: opts.search_starts]
    starts = {}
    for key in chosen:
        # the moments start is the unrotated candidate (centroids aligned, no rotation): only that one is covered.
        # Its neighbours are not: the affine stage from the moments start found a 15 deg rotation but not 22 or 37
        # deg, and skipping every candidate within 2 steps of the identity (as before) left those with no start
        if not opts.search_near_identity and key == identity:
            continue
        # the angle refined between the grid's steps, by the same score (a few NMI evaluations at ``search_side``,
        # ~10 ms each): the affine stage does not turn far from its start (a real pair rotated by 37 deg: from
        # 30 deg it stopped at 33.6 deg, 32 px off, from 45 deg at 39.6 deg, 13 px off; from 37 deg, 5 px)
        fine = {
            k: alignment_score(fixed, moving, start(k))
            for k in (((key[0] + d) % 360.0, key[1], key[2]) for d in np.linspace(-step / 2, step / 2, FINE_STEPS))
        }
        best = max(fine, key=lambda k: fine[k])
        best = best if fine[best] > scores[key] else key
        starts[f"search {_name(best)}"] = start(best)
    report = {_name(key): round(s, 4) for key, s in scores.items()}
    return starts, report


def _name(key: tuple[float, bool, float]) -> str:
    angle, flip, scale = key
    return f"{angle:.0f} deg" + (" flipped" if flip else "") + (f" x{scale:.2f}" if scale != 1.0 else "")
