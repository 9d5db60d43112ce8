"""Transform from region pairs: affine multi-start (judged by the images), then a dense residual field."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...callbacks import ProgressCallback
from ..regions import (
    RegionPair,
)
from ..warp import Deformation, apply_affine_norm, fit_affine_lstsq, norm_grid
from .intensity import IntensityImages
from .options import RegistrationOptions
from .torch_ops import (
    _blur,
    _inside,
    _resize_longest,
    _soft_dice,
    _stack_masks,
    adam,
    bending_energy,
    next_level_control,
    single_thread,
)


def initial_affine(
    pairs: Sequence[RegionPair], fixed_shape: tuple[int, int], moving_shape: tuple[int, int]
) -> Deformation:
    """Affine from pair centroids (pixel least squares, weighted by similarity x area); similarity or translation
    (with the area-ratio scale) when there are too few or degenerate pairs."""
    fs, ms = np.asarray(fixed_shape, float), np.asarray(moving_shape, float)
    # centroids in full-resolution pixels (x, y)
    src = np.stack([(p.fixed.centroid_norm() + 1) * fs[::-1] / 2 - 0.5 for p in pairs])
    dst = np.stack([(p.moving.centroid_norm() + 1) * ms[::-1] / 2 - 0.5 for p in pairs])
    weights = np.array([max(p.similarity, 1e-3) * np.sqrt(p.fixed.area_fraction) for p in pairs])
    area_scale = np.sqrt(
        np.average(
            [p.moving.area_fraction * ms.prod() / max(p.fixed.area_fraction * fs.prod(), 1e-9) for p in pairs],
            weights=weights,
        )
    )
    matrix = None
    if len(pairs) >= 4:
        cand = fit_affine_lstsq(src, dst, weights)
        sv = np.linalg.svd(cand[:2, :2], compute_uv=False)
        if np.linalg.det(cand[:2, :2]) > 0 and sv.min() > 0.33 and sv.max() < 3 and sv.max() / sv.min() < 2:
            matrix = cand
    if matrix is None and len(pairs) >= 2:
        cand = fit_similarity(src, dst, weights)
        scale = np.sqrt(abs(np.linalg.det(cand[:2, :2])))
        if 0.33 < scale < 3:
            matrix = cand
    if matrix is None:  # translation + area scale about the centroids
        c_src, c_dst = np.average(src, 0, weights), np.average(dst, 0, weights)
        matrix = np.eye(3)
        matrix[:2, :2] *= area_scale
        matrix[:2, 2] = c_dst - area_scale * c_src
    return Deformation.from_pixel_affine(matrix, fixed_shape, moving_shape)


def moment_similarity(pair: RegionPair, fixed_shape: tuple[int, int], moving_shape: tuple[int, int]) -> Deformation:
    """Similarity mapping the fixed region's centroid, principal axis and size onto the moving region's (pixels).

    The axis has a 180-degree ambiguity: the smaller rotation is taken (:func:`plausible` limits it anyway); a
    nearly round region (axis ratio < 1.1) gives no rotation."""

    def moments(mask: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        ys, xs = np.nonzero(mask)
        sy, sx = shape[0] / mask.shape[0], shape[1] / mask.shape[1]
        xy = np.stack([(xs + 0.5) * sx - 0.5, (ys + 0.5) * sy - 0.5], 1)
        return xy.mean(0), np.cov(xy.T)

    (cf, covf), (cm, covm) = moments(pair.fixed.mask, fixed_shape), moments(pair.moving.mask, moving_shape)
    scale = (np.linalg.det(covm) / max(np.linalg.det(covf), 1e-12)) ** 0.25
    angle = 0.0
    (ef, vf), (em, vm) = np.linalg.eigh(covf), np.linalg.eigh(covm)
    if ef[1] > 1.1**2 * ef[0] and em[1] > 1.1**2 * em[0]:
        angle = np.arctan2(vm[1, 1], vm[0, 1]) - np.arctan2(vf[1, 1], vf[0, 1])
        angle = (angle + np.pi / 2) % np.pi - np.pi / 2
    c, s = np.cos(angle), np.sin(angle)
    matrix = np.eye(3)
    matrix[:2, :2] = scale * np.array([[c, -s], [s, c]])
    matrix[:2, 2] = cm - matrix[:2, :2] @ cf
    return Deformation.from_pixel_affine(matrix, fixed_shape, moving_shape)


def fit_similarity(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted Umeyama similarity (rotation, uniform scale, translation; no reflection), dst ≈ M @ src."""
    w = np.ones(len(src)) if weights is None else np.asarray(weights, float)
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    a, b = src - mu_s, dst - mu_d
    cov = (b * w[:, None]).T @ a
    u, s, vt = np.linalg.svd(cov)
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ d @ vt
    var = (w * (a**2).sum(1)).sum()
    scale = np.trace(np.diag(s) @ d) / max(var, 1e-12)
    out = np.eye(3)
    out[:2, :2] = scale * rot
    out[:2, 2] = mu_d - scale * rot @ mu_s
    return out


def fit_pairs(
    pairs: Sequence[RegionPair],
    fixed_shape: tuple[int, int],
    moving_shape: tuple[int, int],
    *,
    options: RegistrationOptions | None = None,
    check_cancel: Callable[[], None] = lambda: None,
    progress: ProgressCallback | None = None,
    dense: bool | None = None,
    images: IntensityImages | None = None,
) -> tuple[Deformation, list[float], list[float]]:
    """Affine then dense field from region pairs. Returns the transform and per-pair Dice before/after.

    With ``images``, the affine start is chosen by :func:`~.intensity.alignment_score` of the images (region-pair Dice
    breaks near-ties) and the dense field is kept only if it does not lower that score: symmetric regions (a round
    section, an elliptic lesion) fit wrong transforms with a high Dice, the image content does not."""
    with single_thread():
        return _fit_pairs(pairs, fixed_shape, moving_shape, options, check_cancel, progress, dense, images)


def _fit_pairs(pairs, fixed_shape, moving_shape, options, check_cancel, progress, dense, images):
    opts = options or RegistrationOptions()
    report = progress or (lambda fraction, message: None)
    torch.manual_seed(opts.seed)
    pairs = list(pairs)
    dice_before = pair_dice(pairs, Deformation.identity(fixed_shape, moving_shape))
    top = max(opts.field_levels)
    fixed_top = _stack_masks([p.fixed for p in pairs], top)
    moving_top = _stack_masks([p.moving for p in pairs], top)
    # larger regions carry more of the image: weight ~ similarity x sqrt(area) (Tell2Reg: one global Dice)
    all_weights = torch.tensor(
        [max(p.similarity, 1e-3) * np.sqrt(p.fixed.area_fraction) for p in pairs], dtype=torch.float32
    )

    def level_masks(side: int, keep: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        f = _resize_longest(fixed_top[keep], side)
        m = _resize_longest(moving_top[keep], side)
        sigma = 1.0 if side < top else 0.5  # soft edges widen the basin of the Dice term
        return _blur(f, sigma), _blur(m, sigma)

    def refine_affine(start: np.ndarray, keep: list[int], sides_iters) -> np.ndarray:
        weights = all_weights[keep] / all_weights[keep].sum()
        theta = torch.tensor(start[:2], dtype=torch.float32, requires_grad=True)
        for side, iters in sides_iters:
            f, m = level_masks(side, keep)
            base = norm_grid(tuple(f.shape[-2:]))

            def affine_loss(theta=theta, f=f, m=m, base=base, weights=weights) -> torch.Tensor:
                grid = apply_affine_norm(theta, base)
                warped = F.grid_sample(m[:, None], grid.expand(len(m), -1, -1, -1), align_corners=False)[:, 0]
                return 1 - (weights * _soft_dice(f * _inside(grid), warped)).sum()

            adam(theta, affine_loss, iters, opts.learning_rate * 0.5)
            check_cancel()
        out = np.eye(3)
        out[:2] = theta.detach().double().numpy()
        return out

    def consensus(affine: np.ndarray) -> tuple[float, np.ndarray]:
        f, m = level_masks(64, list(range(len(pairs))))
        grid = apply_affine_norm(torch.from_numpy(affine), norm_grid(tuple(f.shape[-2:]), torch.float64)).float()
        warped = F.grid_sample(m[:, None], grid.expand(len(m), -1, -1, -1), align_corners=False)[:, 0]
        dice = _soft_dice(f * _inside(grid), warped).numpy()
        inliers = dice >= opts.inlier_dice
        return float(all_weights.numpy()[inliers].sum() + 1e-3 * dice.mean()), inliers

    # Start: with few pairs, all of them; otherwise RANSAC-like over region pairs (our addition): a start from each
    # of the largest pairs alone and one from all centroids, each refined briefly, scored by the pairs it aligns
    # (Dice >= inlier_dice). Wrongly matched pairs then drop out instead of pulling the transform.
    everyone = list(range(len(pairs)))
    quick = [(32, opts.affine_iterations[0]), (64, opts.affine_iterations[0] // 2)]
    candidates = [refine_affine(initial_affine(pairs, fixed_shape, moving_shape).affine, everyone, quick)]
    if len(pairs) >= 3:
        order = sorted(everyone, key=lambda i: -pairs[i].fixed.area_fraction)[: opts.max_start_candidates]
        for i in order:
            start = initial_affine([pairs[i]], fixed_shape, moving_shape).affine
            candidates.append(refine_affine(start, [i], quick))
    if len(pairs) >= 3:  # identity competes too: no region-based start is better than a wrong one
        identity = Deformation.identity(fixed_shape, moving_shape).affine
        candidates.append(refine_affine(identity, everyone, quick))
    if images is not None:
        # rigid/similarity starts from the second moments of the largest pairs (a whole section or lesion has an
        # orientation that a centroid does not give); as they are and refined, since Dice hardly constrains the
        # rotation of a blob. Only with images: they choose, the pairs' Dice cannot
        for i in sorted(everyone, key=lambda i: -pairs[i].fixed.area_fraction)[:2]:
            start = moment_similarity(pairs[i], fixed_shape, moving_shape).affine
            candidates += [start, refine_affine(start, [i], quick)]

    def as_deformation(affine: np.ndarray) -> Deformation:
        return Deformation(tuple(fixed_shape), tuple(moving_shape), affine, None)

    scored = []
    for c in candidates:
        if not plausible(c, fixed_shape, moving_shape, opts):
            scored.append((-np.inf, np.zeros(len(pairs), bool)))
            continue
        consensus_score, inliers = consensus(c)
        # the images decide; the pairs' consensus (a weight fraction <= 1) only breaks near-ties
        image_score = 0.0 if images is None else images.score(as_deformation(c))
        scored.append((image_score + 0.01 * consensus_score / float(all_weights.sum()), inliers))
    best = int(np.argmax([score for score, _ in scored]))
    keep = [i for i in everyone if scored[best][1][i]] or everyone
    sides = sorted(opts.field_levels)[: len(opts.affine_iterations)]
    affine = refine_affine(candidates[best], keep, list(zip(sides, opts.affine_iterations, strict=False)))
    deformation = as_deformation(affine)
    if images is not None and images.score(deformation) < images.score(as_deformation(candidates[best])):
        deformation = as_deformation(candidates[best])  # refining on the inlier pairs only made the images worse
    report(0.55, "affine done; dense field")
    if opts.dense if dense is None else dense:
        weights = all_weights[keep] / all_weights[keep].sum()
        warped = _fit_field(deformation, lambda side: level_masks(side, keep), weights, opts, check_cancel, report)
        if images is None or images.score(warped) >= images.score(deformation):
            deformation = warped
    return deformation, dice_before, pair_dice(pairs, deformation)


def plausible(affine: np.ndarray, fixed_shape, moving_shape, opts: RegistrationOptions) -> bool:
    """No reflection, rotation within ``max_rotation_deg``, scales within [1/max_scale, max_scale]: symmetric
    regions (an elliptic lesion, a round tissue section) fit flipped or half-turned copies with a high Dice."""
    linear = Deformation(tuple(fixed_shape), tuple(moving_shape), affine, None).pixel_affine[:2, :2]
    if np.linalg.det(linear) <= 0:
        return False
    u, sv, vt = np.linalg.svd(linear)
    rotation = u @ vt
    angle = np.degrees(np.arctan2(rotation[1, 0], rotation[0, 0]))
    return abs(angle) <= opts.max_rotation_deg and 1 / opts.max_scale <= sv.min() and sv.max() <= opts.max_scale


def _fit_field(
    deformation: Deformation,
    level_masks: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    weights: torch.Tensor,
    opts: RegistrationOptions,
    check_cancel: Callable[[], None],
    report: ProgressCallback,
) -> Deformation:
    affine = torch.from_numpy(deformation.affine)
    control: torch.Tensor | None = None
    levels = list(zip(opts.field_levels, opts.field_iterations, strict=False))
    size = None
    for li, (side, iters) in enumerate(levels):
        f, m = level_masks(side)
        size = tuple(f.shape[-2:])
        base = apply_affine_norm(affine, norm_grid(size, torch.float64)).float()
        control = next_level_control(control, size, opts.control_spacing, min_points=3)

        def field_loss(control=control, f=f, m=m, base=base, size=size) -> torch.Tensor:
            residual = F.interpolate(control[None], size=size, mode="bicubic", align_corners=False)[0]
            grid = base + residual.permute(1, 2, 0)
            warped = F.grid_sample(m[:, None], grid[None].expand(len(m), -1, -1, -1), align_corners=False)[:, 0]
            dice_loss = 1 - (weights * _soft_dice(f * _inside(grid), warped)).sum()
            return dice_loss + opts.smoothness * bending_energy(control.permute(1, 2, 0))

        adam(control, field_loss, iters, opts.learning_rate)
        check_cancel()
        report(0.55 + 0.3 * (li + 1) / len(levels), f"dense field level {li + 1}/{len(levels)}")
    assert control is not None and size is not None
    residual = F.interpolate(control.detach()[None], size=size, mode="bicubic", align_corners=False)[0]
    return Deformation(
        deformation.fixed_shape,
        deformation.moving_shape,
        deformation.affine,
        residual.permute(1, 2, 0).numpy().astype(np.float32),
    )


def pair_dice(pairs: Sequence[RegionPair], deformation: Deformation, side: int = 128) -> list[float]:
    """Dice of each fixed mask with its warped moving partner, on a fixed grid with longest side ``side``."""
    if not pairs:
        return []
    f = _stack_masks([p.fixed for p in pairs], side) > 0.5
    out = []
    grid = deformation.norm_map(tuple(f.shape[-2:]))
    for k, p in enumerate(pairs):
        m = torch.from_numpy(p.moving.mask.astype(np.float32))[None, None]
        warped = F.grid_sample(m, grid[None], mode="bilinear", align_corners=False)[0, 0] > 0.5
        a, b = f[k], warped
        total = a.sum() + b.sum()
        out.append(1.0 if total == 0 else float(2 * (a & b).sum() / total))
    return out
