"""Small torch building blocks of the region and intensity fits: masks, Dice, blur, Adam, control grids."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

from ..regions import (
    Region,
)


def _stack_masks(regions: Sequence[Region], side: int) -> torch.Tensor:
    """(K, h, w) float masks resampled to a common grid with longest side ``side`` (all masks cover the image)."""
    shape = regions[0].mask.shape
    s = side / max(shape)
    size = (max(2, round(shape[0] * s)), max(2, round(shape[1] * s)))
    out = []
    for r in regions:
        m = torch.from_numpy(r.mask.astype(np.float32))[None, None]
        out.append(F.interpolate(m, size=size, mode="bilinear", align_corners=False, antialias=True)[0, 0])
    return torch.stack(out)


def _soft_dice(fixed: torch.Tensor, warped: torch.Tensor) -> torch.Tensor:
    inter = (fixed * warped).sum((-2, -1))
    return 2 * inter / (fixed.sum((-2, -1)) + warped.sum((-2, -1)) + 1e-6)


def _inside(grid: torch.Tensor) -> torch.Tensor:
    """1 where the grid samples inside the moving image: Dice is computed on the overlap of the two fields of view
    only, otherwise fixed-region parts that leave the moving image pull the transform."""
    return (grid.detach().abs() <= 1).all(dim=-1).float()


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0:
        return x
    radius = int(3 * sigma + 0.5)
    k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=x.dtype) / sigma) ** 2)
    k = k / k.sum()
    y = x[:, None]
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))
    return y[:, 0]


@contextmanager
def single_thread() -> Iterator[None]:
    """Run small-tensor torch work on one thread: intra-op threading costs more than it gains on (K, 128, 128)
    masks, and on a loaded machine (measured here: 1.6 s vs 9.6 s for the same fit on 2 busy cores)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def next_level_control(
    control: torch.Tensor | None, size: tuple[int, int], spacing: float, min_points: int
) -> torch.Tensor:
    """(2, gh, gw) control grid of a free-form field for a level of ``size`` pixels, a point every ``spacing``
    pixels: zeros at the first level, else the previous level's grid resampled (coarse-to-fine); ready for Adam."""
    gsize = (max(min_points, round(size[0] / spacing)), max(min_points, round(size[1] / spacing)))
    if control is None:
        return torch.zeros((2, *gsize), requires_grad=True)
    init = F.interpolate(control.detach()[None], size=gsize, mode="bilinear", align_corners=False)[0]
    return init.clone().requires_grad_(True)


def adam(param: torch.Tensor, loss_fn: Callable[[], torch.Tensor], iterations: int, lr: float) -> None:
    """Plain Adam on one tensor, in place. (torch.optim's first use imports torch._dynamo: seconds per process.)"""
    m = torch.zeros_like(param)
    v = torch.zeros_like(param)
    b1, b2, eps = 0.9, 0.999, 1e-8
    for step in range(1, iterations + 1):
        if param.grad is not None:
            param.grad = None
        loss_fn().backward()
        with torch.no_grad():
            g = param.grad
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            m_hat = m / (1 - b1**step)
            v_hat = v / (1 - b2**step)
            param.sub_(lr * m_hat / (v_hat.sqrt() + eps))


def _resize_longest(x: torch.Tensor, side: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if max(h, w) <= side:
        return x
    s = side / max(h, w)
    size = (max(2, round(h * s)), max(2, round(w * s)))
    return F.interpolate(x[:, None], size=size, mode="bilinear", align_corners=False, antialias=True)[:, 0]


def bending_energy(field: torch.Tensor) -> torch.Tensor:
    """Mean squared second derivatives of a (gh, gw, 2) field in normalised units (spacing 2/g per axis)."""
    gh, gw = field.shape[:2]
    hx, hy = 2.0 / gw, 2.0 / gh
    d = field.permute(2, 0, 1)
    dxx = (d[:, :, 2:] - 2 * d[:, :, 1:-1] + d[:, :, :-2]) / hx**2
    dyy = (d[:, 2:] - 2 * d[:, 1:-1] + d[:, :-2]) / hy**2
    dxy = (d[:, 1:, 1:] - d[:, 1:, :-1] - d[:, :-1, 1:] + d[:, :-1, :-1]) / (hx * hy)
    return (dxx**2).mean() + (dyy**2).mean() + 2 * (dxy**2).mean()


def _box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable box mean of each channel of (1, C, h, w), borders replicated."""
    k = 2 * radius + 1
    # running sums cost the same for any window and less than a depthwise convolution; one axis at a time keeps
    # the sums small enough for float32
    x = F.pad(F.pad(x, (radius, radius, radius, radius), mode="replicate"), (1, 0, 1, 0))
    x = x.cumsum(-1)
    x = (x[..., k:] - x[..., :-k]).cumsum(-2)
    return (x[..., k:, :] - x[..., :-k, :]) / (k * k)


def _upsample_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in): bicubic upsampling (``align_corners=False``) along one axis as a matrix. Torch's bicubic is
    separable, so ``My @ c @ Mx.T`` equals ``F.interpolate(c, mode="bicubic")``, with a much cheaper backward."""
    impulses = torch.eye(n_in)[:, None, None, :]
    return F.interpolate(impulses, size=(1, n_out), mode="bicubic", align_corners=False)[:, 0, 0, :].T.contiguous()
