"""A quality indicator a user can read without landmarks: did the images come to agree, is the field invertible,
was a stage rejected.

Similarity is the image judge of every stage (:func:`~.intensity.alignment_score`, NMI, 1 = independent .. 2 =
identical) before registration and after; "before" is the better of the images as given pixel for pixel and the
moving image scaled by the images' size ratio (an image of the same field at a quarter of the size overlaps a
sixteenth of the fixed one pixel for pixel: NMI 0, and any result looked like a gain). The Jacobian determinant of
the transform, relative to its orientation (a mirrored section has det < 0 everywhere and does not fold) and to the
affine part's area factor (the overall scale: a correct half-size pair reads 1, not 0.25), is reported as a range:
the local stretch of the field, where a minimum <= 0 means folding. The affine part's own stretch is reported
apart: how unequally it scales two directions (anisotropy) and how it changes the area beyond the two images' size
ratio (an image of the same field at another pixel size has the same content over proportionally more pixels; a
crop or a padded canvas at the same pixel size has not: the nearer of the two counts). Sections of one specimen
move, turn and shrink a little; an image of other tissue can still raise the similarity (measured: NMI gains of
0.04-0.09 for pairs of unrelated sections, as much as the true pairs' 0.03-0.09) but only by stretching one onto
the other.
The verdict is a coarse reading of these: "good" (the similarity rose clearly, nothing folds, no strong stretch),
"check" (a small gain, a stage of the chosen path rejected as degenerate, a strong stretch of the affine part or
a strong local stretch of the field, :data:`MAX_LOCAL_STRETCH`), "poor" (no gain, or folding). A mirrored
result's start must also score clearly better (:data:`MIN_GAIN`) than the best unmirrored start, both at the
stage where the starts compete (the later stages refine only the winner), else "check": a mirrored start can win
by little (a rotated pair of objects on white came out mirrored, 262 px off, and read "good"; a truly mirrored
lesion pair wins by 0.016). When no transform aligned the images better than they were given (``kept_as_given``:
an image against itself, a pair already aligned), the verdict reads their similarity as given instead: "good" from
:data:`ALIGNED_NMI`, else "poor" (nothing was found that aligns them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..warp import Deformation
from .intensity import IntensityImages
from .options import on_chosen_path, size_ratio
from .search import SIZE_RATIO_MIN

#: NMI gains below this (on 1..2) are within what a wrong but plausible transform reaches: two unrelated nuclei
#: images gained 0.016 with a free-form field (Jacobian 0.45-1.45); the real section pairs gain 0.03-0.09
MIN_GAIN = 0.02
#: the affine part scales one direction this much more than the other: beyond the compression of a cut section
MAX_ANISOTROPY = 1.15
#: the affine part changes the area by more than this factor (either way) against both 1 and the images' size ratio
MAX_AREA_CHANGE = 1.33
#: the field changes the area locally by more than this factor (either way; Jacobian relative to the affine part's
#: area factor): a section does not locally halve or double its area against its neighbour section. Set from that,
#: not from a pair: the true pairs read 0.73-1.27 (real) and 0.69-1.64 (BIRL's synthetic elastic deformation) on the
#: field's own grid (0.74-1.24 and 0.66-1.63 on the 128-point grid before)
MAX_LOCAL_STRETCH = 2.0
#: images kept as given are called aligned from this NMI: far above any pair of sections that needed registering
#: (true multi-stain pairs before registration 1.03-1.07, after 1.11-1.12; an image against itself 2)
ALIGNED_NMI = 1.5


def quality_report(
    images: IntensityImages,
    deformation: Deformation,
    stages: Sequence[dict[str, Any]],
    side: int = 128,
    start_scores: Mapping[str, float] | None = None,
    mirrored: Mapping[str, bool] | None = None,
    start: str | None = None,
) -> dict[str, Any]:
    """``{similarity_before, similarity_after, similarity_gain, jacobian_min, jacobian_max, folding_fraction,
    stages_rejected, kept_as_given, verdict}`` and the stretch; the Jacobian on the field's own grid, or a fixed grid
    with ``side`` points along the longest side if that is finer (:meth:`~..warp.Deformation.jacobian_grid`). Only
    the stages of the chosen path count (``stages_rejected`` and the verdict): the starts that lost stay in
    ``stages``, marked ``candidate``. ``start_scores`` and ``mirrored``: every refined start's
    score and whether it mirrors (:func:`~.route.intensity_route`), and ``start`` the winner's name, to weigh a
    mirrored result's start against the best unmirrored one (``mirror_margin``; without ``start``, the best
    mirrored start's score stands for the winner's)."""
    identity = Deformation.identity(images.fixed_shape, images.moving_shape)
    before, after = similarity_as_given(images), images.score(deformation)
    # relative to the affine part's area factor: the overall scale of two pixel sizes is not a local stretch
    area = abs(float(np.linalg.det(deformation.pixel_affine[:2, :2])))
    jac = (
        deformation.orientation
        * deformation.jacobian_determinant(deformation.jacobian_grid(side))  # where the degenerate check looks
        / (area if np.isfinite(area) and area > 1e-12 else 1.0)
    )
    folding = float((jac <= 0).mean())
    mirror_margin = None
    if deformation.orientation < 0 and start_scores and mirrored:
        unmirrored = [score for name, score in start_scores.items() if not mirrored.get(name, False)]
        flipped = [score for name, score in start_scores.items() if mirrored.get(name, False)]
        # start against start at the stage where they competed: ``after`` includes the B-spline and joint stages
        # the winner alone went through (a 0.005 win plus a 0.02 B-spline gain read "good")
        won = start_scores[start] if start in start_scores else max(flipped, default=None)
        if unmirrored and won is not None:
            mirror_margin = won - max(unmirrored)
    chosen = on_chosen_path(stages)  # a losing start that was degenerate does not make the result doubtful
    rejected = [s["stage"] for s in chosen if not s["accepted"]]
    degenerate = [s["stage"] for s in chosen if s.get("degenerate")]
    anisotropy, area_change = affine_stretch(deformation)
    stretched = anisotropy > MAX_ANISOTROPY or area_change > MAX_AREA_CHANGE
    # the field's own stretch: the affine part's is judged above, and a free-form field can pull unrelated content
    # into place where the affine part could not (an H&E-like image onto a chest X-ray read "good", 0.39..2.49)
    local_stretch = bool(jac.max() > MAX_LOCAL_STRETCH or jac.min() < 1 / MAX_LOCAL_STRETCH)
    gain = after - before
    as_given = deformation.residual is None and np.allclose(deformation.affine, identity.affine)
    if as_given:
        verdict = "good" if before >= ALIGNED_NMI else "poor"
    elif gain <= 0 or folding > 0:
        verdict = "poor"
    elif (
        gain < MIN_GAIN
        or degenerate
        or stretched
        or local_stretch
        or (mirror_margin is not None and mirror_margin < MIN_GAIN)
    ):
        verdict = "check"
    else:
        verdict = "good"
    return {
        "similarity": "NMI",
        "similarity_before": round(float(before), 4),
        "similarity_after": round(float(after), 4),
        "similarity_gain": round(float(gain), 4),
        "jacobian_min": round(float(jac.min()), 4),
        "jacobian_max": round(float(jac.max()), 4),
        "folding_fraction": round(folding, 5),
        "mirrored": deformation.orientation < 0,
        # the mirrored winning start's similarity over the best unmirrored start's, both where the starts competed
        # (None: not mirrored, or no other start)
        "mirror_margin": None if mirror_margin is None else round(float(mirror_margin), 4),
        "affine_anisotropy": round(float(anisotropy), 4),
        "affine_area_change": round(float(area_change), 4),
        "strong_stretch": bool(stretched),
        # the field stretches the area locally beyond MAX_LOCAL_STRETCH either way (jacobian_min / jacobian_max)
        "strong_local_stretch": local_stretch,
        "stages_rejected": rejected,
        "kept_as_given": bool(as_given),
        "verdict": verdict,
    }


def similarity_as_given(images: IntensityImages) -> float:
    """NMI of the images as given: pixel for pixel, or (sizes more than :data:`~.search.SIZE_RATIO_MIN` apart) with
    the moving image scaled by the size ratio about the top-left corner, whichever agrees better."""
    identity = Deformation.identity(images.fixed_shape, images.moving_shape)
    before = images.score(identity)
    ratio = size_ratio(images.fixed_shape, images.moving_shape)
    if max(ratio, 1 / ratio) > SIZE_RATIO_MIN:
        scaled = np.diag([ratio, ratio, 1.0])
        scaled[:2, 2] = 0.5 * ratio - 0.5  # pixel centres: (x + 0.5) * ratio - 0.5
        scaled_start = Deformation.from_pixel_affine(scaled, images.fixed_shape, images.moving_shape)
        before = max(before, images.score(scaled_start))
    return before


def affine_stretch(deformation: Deformation) -> tuple[float, float]:
    """(anisotropy, area change) of the affine part: the ratio of its two singular values, and how far its area
    factor is from both 1 (same pixel size, other canvas) and the images' size ratio (the ratio of their diagonals,
    squared: same field, other pixel size), as a factor >= 1 from the nearer of the two."""
    matrix = deformation.pixel_affine[:2, :2]
    if not np.isfinite(matrix).all():
        return float("inf"), float("inf")
    singular = np.linalg.svd(matrix, compute_uv=False)
    area = max(float(singular[0] * singular[1]), 1e-12)
    ratio = size_ratio(deformation.fixed_shape, deformation.moving_shape)
    change = min(max(a, 1 / a) for a in (area, area / ratio**2))
    return float(singular[0] / max(singular[1], 1e-12)), float(change)


def quality_line(quality: dict[str, Any]) -> str:
    """One line for a status panel or a log."""
    if not quality:
        return ""
    rejected = ", ".join(quality["stages_rejected"]) or "none"
    return (
        f"quality: {quality['verdict']} — image similarity (NMI) {quality['similarity_before']:.3f} -> "
        f"{quality['similarity_after']:.3f}, Jacobian {quality['jacobian_min']:.2f}..{quality['jacobian_max']:.2f}"
        + (" (mirrored)" if quality["mirrored"] else "")
        + (
            f", only {quality['mirror_margin']:+.3f} NMI over the best unmirrored start"
            if quality.get("mirror_margin") is not None and quality["mirror_margin"] < MIN_GAIN
            else ""
        )
        + (
            f", strong stretch (anisotropy {quality['affine_anisotropy']:.2f}, "
            f"area change x{quality['affine_area_change']:.2f})"
            if quality.get("strong_stretch")
            else ""
        )
        + (
            f", strong local stretch (Jacobian {quality['jacobian_min']:.2f}..{quality['jacobian_max']:.2f}, beyond "
            f"x{MAX_LOCAL_STRETCH:g} either way)"
            if quality.get("strong_local_stretch")
            else ""
        )
        + f", stages rejected: {rejected}"
        + ("; kept as given: no transform aligned the images better" if quality.get("kept_as_given") else "")
    )
