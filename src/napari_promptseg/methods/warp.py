"""A spatial transform between a fixed and a moving 2D image, and how it moves images, labels and points.

Convention (one for the whole package):

* pixel coordinates are (x, y) = (column, row), pixel centres at integers, origin at the top-left pixel centre;
* the transform maps the **fixed** frame to the **moving** frame: ``T(x) = x + u(x)``, where ``u`` is the
  displacement field defined on the fixed grid, in moving-image pixels minus fixed-image pixels;
* the warped moving image is ``moving(T(x))`` (a pull-back, sampled on the fixed grid);
* moving-image points ``p`` (landmarks, Points layers) go to the fixed frame by solving ``T(x) = p`` so that
  they land where the image content went.

Internally ``T`` is an affine map in normalised coordinates (``grid_sample``'s ``align_corners=False`` convention,
[-1, 1] across each image) plus a residual field on a coarse grid over the fixed image. The residual is registered at
low resolution and applied at any resolution by bilinear upsampling; the affine part stays exact at every scale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import PromptsegError
from ..models.preprocessing import full_resolution

#: pixels of the fixed grid sampled at once by :meth:`Deformation.warp_image` and :meth:`Deformation.displacement`
#: (1 Mpx: a band's float64 grid is 16 MB, whatever the image's size)
BAND_PIXELS = 1 << 20


def pixel_to_norm_matrix(shape: tuple[int, int]) -> np.ndarray:
    """3x3 matrix mapping pixel (x, y, 1) of an image of ``shape`` (H, W) to normalised coordinates."""
    h, w = shape
    return np.array([[2.0 / w, 0.0, 1.0 / w - 1.0], [0.0, 2.0 / h, 1.0 / h - 1.0], [0.0, 0.0, 1.0]])


def norm_grid(shape: tuple[int, int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(H, W, 2) normalised (x, y) coordinates of the pixel centres of an image of ``shape``."""
    h, w = shape
    ys = (2 * torch.arange(h, dtype=torch.float64) + 1) / h - 1
    xs = (2 * torch.arange(w, dtype=torch.float64) + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1).to(dtype)


def apply_affine_norm(affine: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Apply a 3x3 (or 2x3) affine to (..., 2) normalised coordinates."""
    a = affine[:2, :2].to(grid.dtype)
    t = affine[:2, 2].to(grid.dtype)
    return grid @ a.T + t


def fit_affine_lstsq(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Least-squares 3x3 affine with ``dst ≈ A @ src``; src, dst (N, 2)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    design = np.concatenate([src, np.ones((len(src), 1))], axis=1)
    if weights is not None:
        sw = np.sqrt(np.asarray(weights, np.float64))[:, None]
        design, dst = design * sw, dst * sw
    coef, *_ = np.linalg.lstsq(design, dst, rcond=None)
    out = np.eye(3)
    out[:2, :] = coef.T
    return out


@dataclass
class Deformation:
    """``T``: fixed frame -> moving frame, as an affine (normalised coordinates) plus a coarse residual field."""

    fixed_shape: tuple[int, int]
    moving_shape: tuple[int, int]
    #: 3x3, fixed normalised (x, y, 1) -> moving normalised (x, y, 1)
    affine: np.ndarray
    #: (h, w, 2) residual in moving normalised units on a grid covering the fixed image, or None (pure affine)
    residual: np.ndarray | None = None

    # -- construction ------------------------------------------------------------------------------------------
    @classmethod
    def identity(cls, fixed_shape: tuple[int, int], moving_shape: tuple[int, int]) -> Deformation:
        """Pixel identity (x maps to the same pixel position x), whatever the two image sizes are."""
        return cls.from_pixel_affine(np.eye(3), fixed_shape, moving_shape)

    @classmethod
    def from_pixel_affine(
        cls, matrix: np.ndarray, fixed_shape: tuple[int, int], moving_shape: tuple[int, int]
    ) -> Deformation:
        """From a 3x3 affine on pixel (x, y, 1): fixed pixel -> moving pixel."""
        fixed_shape, moving_shape = _shape2(fixed_shape), _shape2(moving_shape)
        norm = (
            pixel_to_norm_matrix(moving_shape)
            @ np.asarray(matrix, np.float64)
            @ np.linalg.inv(pixel_to_norm_matrix(fixed_shape))
        )
        return cls(fixed_shape, moving_shape, norm, None)

    @classmethod
    def from_norm_grid(
        cls, grid: np.ndarray | torch.Tensor, fixed_shape: tuple[int, int], moving_shape: tuple[int, int]
    ) -> Deformation:
        """From sampled moving normalised coordinates (h, w, 2) on a (low-resolution) grid over the fixed image."""
        g = torch.as_tensor(grid, dtype=torch.float64)
        base = norm_grid(tuple(g.shape[:2]), torch.float64)
        affine = fit_affine_lstsq(base.reshape(-1, 2).numpy(), g.reshape(-1, 2).numpy())
        residual = g - apply_affine_norm(torch.from_numpy(affine), base)
        return cls(_shape2(fixed_shape), _shape2(moving_shape), affine, residual.numpy().astype(np.float32))

    @property
    def pixel_affine(self) -> np.ndarray:
        """The affine part as a 3x3 map on pixel coordinates (fixed pixel -> moving pixel)."""
        return (
            np.linalg.inv(pixel_to_norm_matrix(self.moving_shape))
            @ self.affine
            @ pixel_to_norm_matrix(self.fixed_shape)
        )

    # -- sampling ----------------------------------------------------------------------------------------------
    def norm_map(self, shape: tuple[int, int] | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(H, W, 2) moving normalised coordinates at the pixel centres of a fixed grid of ``shape``."""
        shape = self.fixed_shape if shape is None else _shape2(shape)
        grid = apply_affine_norm(torch.from_numpy(self.affine), norm_grid(shape, torch.float64))
        if self.residual is not None:
            res = torch.from_numpy(np.ascontiguousarray(self.residual)).to(torch.float64).permute(2, 0, 1)[None]
            if tuple(res.shape[-2:]) != shape:
                res = F.interpolate(res, size=shape, mode="bilinear", align_corners=False)
            grid = grid + res[0].permute(1, 2, 0)
        return grid.to(dtype)

    def _norm_points(self, norm_xy: torch.Tensor) -> torch.Tensor:
        """T at arbitrary fixed normalised points (N, 2) (residual interpolated like :meth:`norm_map`)."""
        out = apply_affine_norm(torch.from_numpy(self.affine), norm_xy)
        if self.residual is not None:
            res = torch.from_numpy(np.ascontiguousarray(self.residual)).to(torch.float64).permute(2, 0, 1)[None]
            sampled = F.grid_sample(
                res,
                norm_xy.view(1, 1, -1, 2).to(torch.float64),
                mode="bilinear",
                padding_mode="border",
                align_corners=False,
            )
            out = out + sampled[0, :, 0].T
        return out

    def _norm_rows(self, r0: int, r1: int, dtype: torch.dtype) -> torch.Tensor:
        """Rows ``r0:r1`` of :meth:`norm_map` on the fixed grid, computed alone (the residual sampled at their pixel
        centres as :meth:`_norm_points` samples it: bilinear, the border held, as ``F.interpolate`` resizes it)."""
        h, w = self.fixed_shape
        ys = (2 * torch.arange(r0, r1, dtype=torch.float64) + 1) / h - 1
        xs = (2 * torch.arange(w, dtype=torch.float64) + 1) / w - 1
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        points = torch.stack([gx, gy], dim=-1).reshape(-1, 2)
        return self._norm_points(points).reshape(r1 - r0, w, 2).to(dtype)

    def _row_bands(self, rows_per_chunk: int | None) -> list[tuple[int, int]]:
        """The bands of rows (start, stop) the fixed grid is sampled in: about :data:`BAND_PIXELS` pixels each."""
        h, w = self.fixed_shape
        step = rows_per_chunk or max(1, BAND_PIXELS // w)
        return [(r0, min(h, r0 + step)) for r0 in range(0, h, step)]

    def displacement(self, rows_per_chunk: int | None = None) -> np.ndarray:
        """Dense displacement ``u`` on the full fixed grid, (H, W, 2) float32 in pixels, last axis (dx, dy).

        ``fixed pixel (x, y)`` corresponds to ``moving pixel (x + u[y, x, 0], y + u[y, x, 1])``. Computed in bands
        of rows: the whole grid in float64 took 8x the field's bytes (1.5 GB over a 188 MB field of a 4400 x 5340
        image).
        """
        h, w = self.fixed_shape
        hm, wm = self.moving_shape
        out = np.empty((h, w, 2), np.float32)
        xs = torch.arange(w, dtype=torch.float64)
        for r0, r1 in self._row_bands(rows_per_chunk):
            grid = self._norm_rows(r0, r1, torch.float64)
            ys = torch.arange(r0, r1, dtype=torch.float64)[:, None]
            out[r0:r1, :, 0] = (((grid[..., 0] + 1) * wm - 1) / 2 - xs).numpy()
            out[r0:r1, :, 1] = (((grid[..., 1] + 1) * hm - 1) / 2 - ys).numpy()
        return out

    # -- applying ----------------------------------------------------------------------------------------------
    def warp_image(
        self,
        moving: np.ndarray,
        *,
        order: int = 1,
        fill: float = 0.0,
        rows_per_chunk: int | None = None,
        check_cancel: Callable[[], None] | None = None,
    ):
        """``moving(T(x))`` on the fixed grid. Works for (H, W) and (H, W, C); ``order`` 0 = nearest (labels).
        Sampled in bands of rows (about :data:`BAND_PIXELS` pixels), each band's grid computed and cast alone: the
        whole grid in float64 and a float copy of the output took 20x the output's bytes (1.4 GB over a 70 MB RGB
        image of 4400 x 5340 px). Bilinear sampling takes one channel at a time: a float32 copy of every channel at
        once, and a contiguous copy before it, held 15 bytes per pixel of an RGB image (4 now; each band's grid is
        computed once per channel, the same grid: the same bytes out). ``check_cancel``: called before each band
        (raises to stop)."""
        arr = np.asarray(full_resolution(moving))
        if arr.ndim not in (2, 3) or tuple(arr.shape[:2]) != self.moving_shape:
            raise PromptsegError(
                f"moving image: expected shape {self.moving_shape} (+ channels), got {arr.shape}; "
                "the transform was computed for another image size"
            )
        squeeze = arr.ndim == 2
        chw = arr[None] if squeeze else np.moveaxis(arr, -1, 0)
        is_labels = order == 0
        h, w = self.fixed_shape
        out = np.empty((chw.shape[0], h, w), dtype=arr.dtype)
        rounded = arr.dtype.kind in "ui" or arr.dtype == bool
        info = np.iinfo(arr.dtype) if rounded and arr.dtype != bool else None
        # labels: every channel at once, in float64 (ids up to 2^53 exact); images: one float32 channel at a time
        dtype = np.float64 if is_labels else np.float32
        groups = [slice(None)] if is_labels else [slice(c, c + 1) for c in range(chw.shape[0])]
        for channels in groups:
            # astype of the channel's strided view: one contiguous copy, of this channel alone
            src = torch.from_numpy(chw[channels].astype(dtype, order="C"))[None]
            for r0, r1 in self._row_bands(rows_per_chunk):
                if check_cancel is not None:
                    check_cancel()
                grid = self._norm_rows(r0, r1, src.dtype)[None]
                sampled = F.grid_sample(
                    src, grid, mode="nearest" if is_labels else "bilinear", padding_mode="zeros", align_corners=False
                )
                if fill != 0:
                    inside = (grid.abs() <= 1).all(dim=-1)
                    sampled = torch.where(inside[:, None], sampled, torch.full_like(sampled, fill))
                band = sampled[0].numpy()
                if rounded and not is_labels:
                    band = np.rint(band) if info is None else np.clip(np.rint(band), info.min, info.max)
                out[channels, r0:r1] = band.astype(arr.dtype)
            del src
        return out[0] if squeeze else np.moveaxis(out, 0, -1)

    def warp_labels(self, labels: np.ndarray) -> np.ndarray:
        """Label image of the moving frame on the fixed grid (nearest neighbour: ids are never mixed)."""
        return self.warp_image(labels, order=0)

    def points_to_moving(self, fixed_xy: np.ndarray) -> np.ndarray:
        """Fixed-frame (x, y) pixel points -> moving frame: ``T(x)``."""
        xy = _points(fixed_xy, "fixed points")
        n = _apply_h(pixel_to_norm_matrix(self.fixed_shape), xy)
        m = self._norm_points(torch.from_numpy(n)).numpy()
        return _apply_h(np.linalg.inv(pixel_to_norm_matrix(self.moving_shape)), m)

    def points_to_fixed(self, moving_xy: np.ndarray, *, iterations: int = 100, tol: float = 1e-4) -> np.ndarray:
        """Moving-frame (x, y) pixel points -> fixed frame: solve ``T(x) = p``.

        Fixed-point iteration on the residual, ``x = A^-1 (p - t - r(x))``, which converges when the residual is
        smooth relative to the affine (always the case for the fields we produce, whose bending is penalised).
        """
        p = _points(moving_xy, "moving points")
        target = torch.from_numpy(_apply_h(pixel_to_norm_matrix(self.moving_shape), p))
        inv = torch.from_numpy(np.linalg.inv(self.affine))
        x = apply_affine_norm(inv, target)
        if self.residual is not None:
            res = torch.from_numpy(np.ascontiguousarray(self.residual)).to(torch.float64).permute(2, 0, 1)[None]
            for _ in range(iterations):
                r = F.grid_sample(
                    res, x.view(1, 1, -1, 2), mode="bilinear", padding_mode="border", align_corners=False
                )[0, :, 0].T
                x_new = apply_affine_norm(inv, target - r)
                step = (x_new - x).abs().max().item() if len(x) else 0.0
                x = x_new
                if step < tol * 2 / max(self.fixed_shape):
                    break
        return _apply_h(np.linalg.inv(pixel_to_norm_matrix(self.fixed_shape)), x.numpy())

    def compose(self, inner: Deformation, grid_shape: tuple[int, int]) -> Deformation:
        """``self ∘ inner`` where ``inner`` maps the fixed frame to itself (e.g. a refinement after warping).

        The result is resampled on a ``grid_shape`` grid over the fixed image.
        """
        if inner.moving_shape != self.fixed_shape or inner.fixed_shape != self.fixed_shape:
            raise PromptsegError("compose: the inner transform must map the fixed frame to itself")
        if self.residual is None and inner.residual is None:  # two affines: exact, no resampling
            return Deformation(self.fixed_shape, self.moving_shape, self.affine @ inner.affine, None)
        inner_map = inner.norm_map(grid_shape, torch.float64)
        outer = self._norm_points(inner_map.reshape(-1, 2)).reshape(inner_map.shape)
        return Deformation.from_norm_grid(outer, self.fixed_shape, self.moving_shape)

    @property
    def orientation(self) -> float:
        """+1, or -1 when the affine part mirrors (a section mounted upside down): folding is a Jacobian whose sign
        differs from this."""
        return 1.0 if np.linalg.det(self.affine[:2, :2]) >= 0 else -1.0

    def jacobian_grid(self, side: int = 128) -> tuple[int, int]:
        """The fixed grid on which to measure the Jacobian: the residual's own grid (the field's finest detail; the
        written displacement is its bilinear upsampling), or ``side`` points along the longest side if that is finer.
        A 128-point grid over a field on a 300 x 400 grid saw 0.97 % folding where the written field had 1.00 %."""
        h, w = self.fixed_shape
        scale = side / max(h, w)
        coarse = (max(8, round(h * scale)), max(8, round(w * scale)))
        if self.residual is None or self.residual.shape[0] * self.residual.shape[1] <= coarse[0] * coarse[1]:
            return coarse
        return int(self.residual.shape[0]), int(self.residual.shape[1])

    def jacobian_determinant(self, shape: tuple[int, int] | None = None) -> np.ndarray:
        """det(dT/dx) in pixel units on a fixed grid of ``shape`` (default: the residual grid); a sign other than
        :attr:`orientation` (< 0 without a mirror) means folding."""
        if shape is None:
            shape = self.fixed_shape if self.residual is None else tuple(self.residual.shape[:2])
        g = self.norm_map(shape, torch.float64).numpy()
        hm, wm = self.moving_shape
        h, w = shape
        # moving pixels per normalised unit / fixed-grid pixels per normalised unit
        mx, my = g[..., 0] * wm / 2, g[..., 1] * hm / 2
        sx, sy = self.fixed_shape[1] / w, self.fixed_shape[0] / h
        dmx_dy, dmx_dx = np.gradient(mx)
        dmy_dy, dmy_dx = np.gradient(my)
        return (dmx_dx * dmy_dy - dmx_dy * dmy_dx) / (sx * sy)


def _shape2(shape) -> tuple[int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise PromptsegError(f"expected a 2D image shape, got {shape}")
    return shape[0], shape[1]


def _points(xy: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(xy, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise PromptsegError(f"{name}: expected (N, 2) x, y coordinates, got shape {arr.shape}")
    return arr


def _apply_h(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return xy @ matrix[:2, :2].T + matrix[:2, 2]


#: a stage whose transform folds on more than this fraction of the fixed image is degenerate: none (issue 16 asks
#: for an invertible field, min det J > 0; at 0.01 a field folding on 0.97 % of the image was written out)
MAX_FOLDING = 0.0
#: ... or maps less than this fraction of what the moving image can cover of the fixed image
#: (:func:`coverable_fraction`) inside the moving image (the image judge then scores 0)
MIN_INSIDE = 0.25


def inside_fraction(deformation: Deformation, shape: tuple[int, int] = (128, 128)) -> float:
    """Fraction of a fixed grid of ``shape`` that ``deformation`` maps inside the moving image."""
    grid = deformation.norm_map(shape)
    return float((grid.abs() <= 1).all(dim=-1).float().mean())


def coverable_fraction(deformation: Deformation) -> float:
    """The largest fraction of the fixed image the moving image can cover: its area over the fixed image's, in
    fixed pixels, at the same pixel size or as the affine part maps it, whichever is more (at most 1).

    A section on a wide canvas against a tight crop at the same pixel size is covered only where the section is (a
    canvas 2.3x the section's: 19 %), so "mostly outside" is judged against that, not against the whole fixed image
    (the right transform was rejected: 81 % outside). The image sizes alone set the bar too, so a transform that
    shrinks the moving image away does not lower it for itself: the check still catches a stage that pushes or
    shrinks the image out of the frame (what it was made for, issue 14)."""
    h, w = deformation.fixed_shape
    hm, wm = deformation.moving_shape
    area = abs(float(np.linalg.det(deformation.pixel_affine[:2, :2])))  # moving pixels per fixed pixel
    mapped = hm * wm / area if np.isfinite(area) and area > 1e-12 else 0.0
    return float(min(1.0, max(hm * wm, mapped) / (h * w)))


def min_inside(deformation: Deformation) -> float:
    """The fraction of the fixed image below which ``deformation`` maps it mostly outside the moving image."""
    return MIN_INSIDE * coverable_fraction(deformation)


def degenerate_reason(deformation: Deformation, previous: Deformation | None = None, *, side: int = 128) -> str | None:
    """Why ``deformation`` is not a usable registration result, or None: non-finite values, folding (det of the
    Jacobian <= 0 on more than :data:`MAX_FOLDING` of the fixed image), or mostly outside the moving image (less
    than :data:`MIN_INSIDE` of what it can cover of the fixed image inside it, :func:`coverable_fraction`, or less
    than half of what ``previous``, the stage before, kept inside). Checked on a grid with ``side`` points along the
    fixed image's longest side, folding on :meth:`Deformation.jacobian_grid` (the field's own grid if finer)."""
    if not np.isfinite(deformation.affine).all() or (
        deformation.residual is not None and not np.isfinite(deformation.residual).all()
    ):
        return "non-finite values (NaN or inf) in the transform"
    h, w = deformation.fixed_shape
    scale = side / max(h, w)
    shape = (max(8, round(h * scale)), max(8, round(w * scale)))
    inside = inside_fraction(deformation, shape)
    if inside < min_inside(deformation):
        coverable = coverable_fraction(deformation)
        return f"maps {100 * (1 - inside):.0f} % of the fixed image outside the moving image" + (
            f" (which can cover {100 * coverable:.0f} % of it)" if coverable < 1 else ""
        )
    if previous is not None:
        before = inside_fraction(previous, shape)
        if inside < 0.5 * before:
            return (
                f"maps only {100 * inside:.0f} % of the fixed image inside the moving image "
                f"({100 * before:.0f} % before this stage)"
            )
    if deformation.residual is not None:
        jac = deformation.orientation * deformation.jacobian_determinant(deformation.jacobian_grid(side))
        folding = float((jac <= 0).mean())
        if folding > MAX_FOLDING:
            return f"folds: det J <= 0 on {100 * folding:.2f} % of the fixed image (min {jac.min():.2f})"
    return None
