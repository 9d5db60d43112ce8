"""Joint refinement: a fine free-form deformation on local NCC of the gray images + region-pair Dice."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import PromptsegError
from ..regions import (
    RegionPair,
)
from ..warp import Deformation
from .intensity import _downsample, to_gray
from .options import RegistrationOptions
from .torch_ops import (
    _blur,
    _box_mean,
    _inside,
    _soft_dice,
    _stack_masks,
    _upsample_matrix,
    adam,
    bending_energy,
    next_level_control,
    single_thread,
)


def local_ncc_loss(
    fixed_stats: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    warped: torch.Tensor,
    inside: torch.Tensor,
    radius: int,
) -> torch.Tensor:
    """1 - mean squared local NCC over ``inside``. Squared: two stains may be locally brighter or darker than each
    other (HE vs an immunostain), what must agree is where the structure edges are."""
    f, mean_f, var_f = fixed_stats
    local = _box_mean(torch.cat([warped, warped * warped, f * warped], 1), radius)
    mean_w = local[:, :1]
    var_w = local[:, 1:2] - mean_w**2
    cov = local[:, 2:3] - mean_f * mean_w
    ncc2 = cov**2 / (var_f * var_w + 1e-5)
    return 1 - (ncc2 * inside).sum() / inside.sum().clamp(min=1)


def mind_descriptor(x: torch.Tensor, radius: int, distance: int = 2) -> torch.Tensor:
    """(1, 4, h, w) MIND (Heinrich et al. 2012) of a (1, 1, h, w) image: for the 4 neighbours at ``distance`` px,
    exp(-patch SSD / local variance estimate), patches of ``radius``. A self-similarity descriptor: it describes
    the local structure of each image in its own terms, so two stains with unrelated intensities can agree on it."""
    d = distance
    padded = F.pad(x, (d, d, d, d), mode="replicate")
    h, w = x.shape[-2:]
    shifted = [padded[..., d + dy : d + dy + h, d + dx : d + dx + w] for dy, dx in ((0, d), (0, -d), (d, 0), (-d, 0))]
    ssd = _box_mean(torch.cat([(x - s) ** 2 for s in shifted], 1), radius)
    variance = ssd.mean(1, keepdim=True)
    variance = variance.clamp(min=1e-3 * float(variance.detach().mean()) + 1e-8)
    mind = torch.exp(-ssd / variance)
    return mind / mind.amax(1, keepdim=True).clamp(min=1e-8)


def mind_loss(fixed_mind: torch.Tensor, warped: torch.Tensor, inside: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean absolute MIND difference over ``inside``."""
    diff = (mind_descriptor(warped, radius) - fixed_mind).abs().mean(1, keepdim=True)
    return (diff * inside).sum() / inside.sum().clamp(min=1)


def joint_refine(
    fixed_hwc: np.ndarray,
    moving_hwc: np.ndarray,
    deformation: Deformation,
    pairs: Sequence[RegionPair],
    opts: RegistrationOptions,
    check_cancel: Callable[[], None] = lambda: None,
) -> Deformation:
    """A residual free-form deformation on top of ``deformation``, at finer resolutions than the SimpleITK stages
    (``refine_levels``, longest side), minimising local NCC of the gray images + ``refine_dice`` x (1 - weighted
    region-pair Dice) + ``refine_smoothness`` x bending energy of the control grid (torch, Adam, coarse to fine).

    Our addition: Tell2Reg optimises the region Dice alone; SimpleITK's B-spline (Mattes MI, 6x6 mesh, 192 px) is
    global and coarse. The caller keeps the result only if :func:`~.intensity.alignment_score` improves."""
    if opts.refine_similarity not in ("ncc", "mind"):
        raise PromptsegError(f"refine_similarity must be 'ncc' or 'mind', got {opts.refine_similarity!r}")
    with single_thread():
        return _joint_refine(fixed_hwc, moving_hwc, deformation, pairs, opts, check_cancel)


def _joint_refine(fixed_hwc, moving_hwc, deformation, pairs, opts, check_cancel):
    fixed_shape, moving_shape = deformation.fixed_shape, deformation.moving_shape
    finest = min(1.0, max(opts.refine_levels) / max(*fixed_shape, *moving_shape))
    fixed_fine, moving_fine = (
        _downsample(to_gray(fixed_hwc, opts.gray), finest),
        _downsample(to_gray(moving_hwc, opts.gray), finest),
    )
    weights = torch.tensor([max(p.similarity, 1e-3) * np.sqrt(p.fixed.area_fraction) for p in pairs])
    weights = (weights / weights.sum()).float() if len(pairs) else weights.float()
    control: torch.Tensor | None = None
    size = tuple(fixed_fine.shape)
    for side, iterations in zip(opts.refine_levels, opts.refine_iterations, strict=False):
        scale = min(1.0, side / max(*fixed_shape, *moving_shape)) / finest
        f = _blur(torch.from_numpy(_downsample(fixed_fine, scale))[None], 1.0)[None]
        m = _blur(torch.from_numpy(_downsample(moving_fine, scale))[None], 1.0)[None]
        size = tuple(f.shape[-2:])
        if opts.refine_similarity == "mind":
            fixed_stats = (mind_descriptor(f, opts.refine_window),)
        else:
            local_f = _box_mean(torch.cat([f, f * f], 1), opts.refine_window)
            fixed_stats = (f, local_f[:, :1], local_f[:, 1:] - local_f[:, :1] ** 2)
        base = deformation.norm_map(size)
        control = next_level_control(control, size, opts.refine_spacing, min_points=4)
        masks = None
        # the region masks (from 256 px decoder outputs) are coarse: their Dice is taken on every ``stride``-th pixel
        stride = max(1, round(max(size) / 256))
        if pairs and opts.refine_dice > 0:
            mask_size = tuple(len(range(0, n, stride)) for n in size)
            fixed_masks = _stack_masks([p.fixed for p in pairs], max(mask_size))
            fixed_masks = F.interpolate(fixed_masks[None], size=mask_size, mode="bilinear", align_corners=False)[0]
            moving_side = max(round(s / stride) for s in m.shape[-2:])
            masks = (_blur(fixed_masks, 1.0), _blur(_stack_masks([p.moving for p in pairs], moving_side), 1.0))

        up_y, up_x = _upsample_matrix(control.shape[1], size[0]), _upsample_matrix(control.shape[2], size[1])

        def loss_fn(
            control=control, f=f, m=m, base=base, up=(up_y, up_x), fixed_stats=fixed_stats, masks=masks, stride=stride
        ):
            residual = up[0] @ control @ up[1].T
            grid = base + residual.permute(1, 2, 0)
            warped = F.grid_sample(m, grid[None], align_corners=False)
            inside = _inside(grid)[None, None]
            if len(fixed_stats) == 1:
                loss = mind_loss(fixed_stats[0], warped, inside, opts.refine_window)
            else:
                loss = local_ncc_loss(fixed_stats, warped, inside, opts.refine_window)
            if masks is not None:
                fixed_masks, moving_masks = masks
                coarse = grid[::stride, ::stride]
                warped_masks = F.grid_sample(
                    moving_masks[:, None], coarse[None].expand(len(moving_masks), -1, -1, -1), align_corners=False
                )[:, 0]
                dice = (weights * _soft_dice(fixed_masks * _inside(coarse), warped_masks)).sum()
                loss = loss + opts.refine_dice * (1 - dice)
            return loss + opts.refine_smoothness * bending_energy(control.permute(1, 2, 0))

        adam(control, loss_fn, iterations, opts.refine_learning_rate)
        check_cancel()
    assert control is not None
    residual = F.interpolate(control.detach()[None], size=size, mode="bicubic", align_corners=False)[0]
    grid = deformation.norm_map(size) + residual.permute(1, 2, 0)
    return Deformation.from_norm_grid(grid, fixed_shape, moving_shape)
