"""A quality indicator a user can read without landmarks: did the images come to agree, is the field invertible,
was a stage rejected.

Similarity is the image judge of every stage (:func:`~.intensity.alignment_score`, NMI, 1 = independent .. 2 =
identical) before registration (identity) and after. The Jacobian determinant of the transform, relative to its
orientation (a mirrored section has det < 0 everywhere and does not fold), is reported as a range: a minimum <= 0
means the field folds. The verdict is a coarse reading of these: "good" (the similarity rose clearly and nothing
folds), "check" (a small gain, or a stage was rejected as degenerate), "poor" (no gain, or folding).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..warp import Deformation
from .intensity import IntensityImages

#: NMI gains below this (on 1..2) are within what a wrong but plausible transform reaches
MIN_GAIN = 0.01


def quality_report(
    images: IntensityImages, deformation: Deformation, stages: Sequence[dict[str, Any]], side: int = 128
) -> dict[str, Any]:
    """``{similarity_before, similarity_after, similarity_gain, jacobian_min, jacobian_max, folding_fraction,
    stages_rejected, verdict}``; the Jacobian on a fixed grid with ``side`` points along the longest side."""
    identity = Deformation.identity(images.fixed_shape, images.moving_shape)
    before, after = images.score(identity), images.score(deformation)
    h, w = deformation.fixed_shape
    scale = side / max(h, w)
    jac = deformation.orientation * deformation.jacobian_determinant(
        (max(8, round(h * scale)), max(8, round(w * scale)))
    )
    folding = float((jac <= 0).mean())
    rejected = [s["stage"] for s in stages if not s["accepted"]]
    degenerate = [s["stage"] for s in stages if s.get("degenerate")]
    gain = after - before
    if gain <= 0 or folding > 0:
        verdict = "poor"
    elif gain < MIN_GAIN or degenerate:
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
        "stages_rejected": rejected,
        "verdict": verdict,
    }


def quality_line(quality: dict[str, Any]) -> str:
    """One line for a status panel or a log."""
    if not quality:
        return ""
    rejected = ", ".join(quality["stages_rejected"]) or "none"
    return (
        f"quality: {quality['verdict']} — image similarity (NMI) {quality['similarity_before']:.3f} -> "
        f"{quality['similarity_after']:.3f}, Jacobian {quality['jacobian_min']:.2f}..{quality['jacobian_max']:.2f}"
        + (" (mirrored)" if quality["mirrored"] else "")
        + f", stages rejected: {rejected}"
    )
