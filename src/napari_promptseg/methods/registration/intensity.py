"""Intensity registration (SimpleITK, Mattes MI: affine then B-spline) and the image similarity judge."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import PromptsegError
from ..warp import Deformation, min_inside
from .options import RegistrationOptions

AFFINE_OPTIMIZERS = ("regular_step", "gradient_first")


def check_affine_optimizer(opts: RegistrationOptions) -> None:
    if opts.affine_optimizer not in AFFINE_OPTIMIZERS:
        raise PromptsegError(f"affine_optimizer must be one of {AFFINE_OPTIMIZERS}, got {opts.affine_optimizer!r}")


_sitk_threads_lock = threading.Lock()
_sitk_threads_users = 0
_sitk_threads_saved = 0


@contextmanager
def sitk_single_threaded() -> Iterator[None]:
    """SimpleITK on one thread per run. With several, its sampled metric differs from run to run and so does the
    result (measured 1.4 % vs 4.1 % rTRE for the same affine stage on the same pair). Re-entrant and shared by
    concurrent runs: the global setting is restored when the last one leaves."""
    try:
        import SimpleITK as sitk
    except ImportError:  # intensity_stage says how to install it
        yield
        return
    global _sitk_threads_users, _sitk_threads_saved
    with _sitk_threads_lock:
        if _sitk_threads_users == 0:
            _sitk_threads_saved = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
        _sitk_threads_users += 1
    try:
        yield
    finally:
        with _sitk_threads_lock:
            _sitk_threads_users -= 1
            if _sitk_threads_users == 0:
                sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(_sitk_threads_saved)


# -- intensity baseline (SimpleITK) -------------------------------------------------------------------------------
def to_gray(image_hwc: np.ndarray, mode: str = "mean") -> np.ndarray:
    """Float gray in [0, 1], tissue bright: brightfield images (bright background) are inverted so that image
    moments and zero padding agree with the background.

    ``mode="od"``: for brightfield colour images, the summed optical density -log(I / I_background) of the channels
    (Beer-Lambert: what every stain absorbs adds up, whatever its colour), which survives a change of stain better
    than the mean intensity; other images fall back to ``"mean"``.

    Lean on a large image: no float copy of its colours, and the per-pixel arithmetic (float64 where numpy promotes
    it) done a block of rows at a time into the grey returned, each pixel's as if done whole: about 8 bytes per
    pixel at the peak (the grey, and the median's and percentiles' sorted copy), not 32 (40 in optical density)."""
    if mode not in ("mean", "od"):
        raise PromptsegError(f"gray must be 'mean' or 'od', got {mode!r}")
    channels = image_hwc.shape[2]
    # the channels' float32 mean, summed in float32 as a float32 copy's mean was
    g = image_hwc.mean(axis=2, dtype=np.float32) if channels > 1 else image_hwc[..., 0].astype(np.float32)
    border = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
    border_level, median = np.median(border), np.median(g)
    # when the background covers more than half the image the medians tie and the mean decides (objects on white
    # were left bright-background-bright: their moments start and the rotation search then followed the background)
    bright_background = border_level > median or (border_level == median and border_level > g.mean())
    if mode == "od" and bright_background and channels >= 3:
        rgb = image_hwc[..., :3]
        edges = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]).astype(np.float32)
        white = np.maximum(np.percentile(edges, 90, axis=0), 1e-3)
        for rows in _row_blocks(g.shape):
            g[rows] = -np.log(np.clip(rgb[rows].astype(np.float32) / white, 1e-3, 1.0)).sum(axis=2)
        bright_background = False  # density is already high where the tissue is
    lo, hi = np.percentile(g, (0.5, 99.5))
    if hi - lo <= 1e-6 * max(float(g.max() - g.min()), 1e-12):
        # objects under 0.5 % of the area (a few dark beads on a bright field) are all the image has: the window
        # that ignores hot pixels elsewhere would clip them away
        lo, hi = g.min(), g.max()
    width = max(hi - lo, 1e-8)
    for rows in _row_blocks(g.shape):
        block = np.clip((g[rows] - lo) / width, 0, 1)
        g[rows] = 1 - block if bright_background else block
    return g


#: pixels per block of :func:`to_gray`'s arithmetic (a float64 block of 2 MB)
GRAY_BLOCK_PIXELS = 1 << 18


def _row_blocks(shape: tuple[int, ...]) -> Iterator[slice]:
    """Slices of rows, each about :data:`GRAY_BLOCK_PIXELS` pixels, covering ``shape``'s rows."""
    step = max(1, GRAY_BLOCK_PIXELS // max(1, shape[1]))
    for start in range(0, shape[0], step):
        yield slice(start, start + step)


def _downsample(gray: np.ndarray, scale: float) -> np.ndarray:
    if scale >= 1:
        return gray
    size = (max(8, round(gray.shape[0] * scale)), max(8, round(gray.shape[1] * scale)))
    t = torch.from_numpy(gray)[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True)[0, 0].numpy()


def _sitk_image(gray_small: np.ndarray, full_shape: tuple[int, int]):
    """SimpleITK image whose physical coordinates are full-resolution pixel (x, y) coordinates."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(gray_small.astype(np.float32))
    sy, sx = full_shape[0] / gray_small.shape[0], full_shape[1] / gray_small.shape[1]
    img.SetSpacing((sx, sy))
    img.SetOrigin((0.5 * sx - 0.5, 0.5 * sy - 0.5))  # low-res pixel centres in full-res pixel units
    return img


@dataclass
class IntensityImages:
    """The pair as small float gray images (longest side ``intensity_max_side``), prepared once per registration:
    every SimpleITK stage and the :func:`alignment_score` of every candidate use the same pixels."""

    fixed: np.ndarray
    moving: np.ndarray
    fixed_shape: tuple[int, int]
    moving_shape: tuple[int, int]

    @classmethod
    def from_images(
        cls,
        fixed_hwc: np.ndarray,
        moving_hwc: np.ndarray,
        max_side: int,
        gray: str = "mean",
        check_cancel: Callable[[], None] = lambda: None,
    ) -> IntensityImages:
        """``check_cancel``: called before each image is greyed (raises to stop)."""
        fixed_shape, moving_shape = tuple(fixed_hwc.shape[:2]), tuple(moving_hwc.shape[:2])
        scale = min(1.0, max_side / max(*fixed_shape, *moving_shape))
        small = []
        for image in (fixed_hwc, moving_hwc):
            check_cancel()
            small.append(_downsample(to_gray(image, gray), scale))
        check_cancel()
        return cls(small[0], small[1], fixed_shape, moving_shape)

    def score(self, deformation: Deformation) -> float:
        return alignment_score(self.fixed, self.moving, deformation)


def intensity_register(
    fixed_hwc: np.ndarray,
    moving_hwc: np.ndarray,
    *,
    options: RegistrationOptions | None = None,
    initial: Deformation | None = None,
) -> Deformation:
    """SimpleITK registration (Mattes MI, affine then B-spline) at low resolution; optionally after ``initial``."""
    opts = options or RegistrationOptions()
    images = IntensityImages.from_images(fixed_hwc, moving_hwc, opts.intensity_max_side, opts.gray)
    found = intensity_stage(images, opts, initial=initial, affine=opts.intensity_affine, bspline=False)
    if not opts.intensity_bspline:
        return found
    start = found if opts.intensity_affine else initial
    try:
        return intensity_stage(images, opts, initial=start, affine=False, bspline=True)
    except StageFailed:
        return found  # the affine result stands


def intensity_stage(
    images: IntensityImages,
    opts: RegistrationOptions,
    *,
    initial: Deformation | None,
    affine: bool,
    bspline: bool,
    affine_shrink: Sequence[int] = (4, 2, 1),
    stop: Any = None,
) -> Deformation:
    """One SimpleITK run (affine and/or B-spline) from ``initial``; ``initial=None`` starts from the image moments
    (SimpleITK's centred initialiser), the baseline. With ``initial``, the moving image is warped by it first and
    the run registers the fixed frame to itself; the result is ``initial`` composed with what it found.
    ``affine_shrink``: the affine stage's pyramid (shrink factors of the small images, coarse to fine).
    ``stop``: once set, the run ends at its next optimizer iteration by raising :class:`StageStopped`."""
    try:
        import SimpleITK as sitk
    except ImportError as exc:  # optional dependency
        raise PromptsegError(
            "the intensity baseline needs SimpleITK: pip install 'napari-promptseg[register]'"
        ) from exc
    check_affine_optimizer(opts)
    fixed_shape, moving_shape = images.fixed_shape, images.moving_shape
    fixed_small, moving_small = images.fixed, images.moving
    # an affine start is handed to SimpleITK exactly (physical coordinates are full-resolution pixels); a start with
    # a residual field warps the small moving image first, and the run then maps the fixed frame to itself
    prewarped = initial is not None and initial.residual is not None
    if prewarped:
        grid = initial.norm_map(fixed_small.shape)
        t = torch.from_numpy(moving_small)[None, None]
        moving_small = F.grid_sample(t, grid[None], align_corners=False)[0, 0].numpy()
        target_shape = fixed_shape
    else:
        target_shape = moving_shape
    f_img = _sitk_image(fixed_small, fixed_shape)
    m_img = _sitk_image(moving_small, target_shape)
    start_affine = None
    if initial is not None and not prewarped:
        start_affine = sitk.AffineTransform(2)
        start_affine.SetMatrix(initial.pixel_affine[:2, :2].ravel().tolist())
        start_affine.SetTranslation(initial.pixel_affine[:2, 2].tolist())

    def method() -> sitk.ImageRegistrationMethod:
        reg = sitk.ImageRegistrationMethod()
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(0.25, opts.seed + 1)
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetNumberOfThreads(1)
        if stop is not None:
            reg.AddCommand(sitk.sitkIterationEvent, lambda: _raise_if_set(stop))
        return reg

    # every stage runs on one thread (see sitk_single_threaded): with two, the B-spline stage (LBFGS-B) differed
    # between runs of the same pair (float noise that sometimes grew into a different, even degenerate, field)
    with sitk_single_threaded(), _quiet_stops() if stop is not None else nullcontext():
        try:
            transforms = _sitk_stages(
                sitk, method, f_img, m_img, opts, initial, start_affine, affine, bspline, affine_shrink
            )
        except RuntimeError as exc:  # how SimpleITK passes on what its iteration command raised, and its own errors
            if stop is not None and stop.is_set():
                raise StageStopped("stopped on request") from exc
            raise StageFailed(f"SimpleITK stopped: {_itk_reason(exc)}") from exc
    composite = sitk.CompositeTransform(transforms) if transforms else sitk.Transform(2, sitk.sitkIdentity)
    field_img = sitk.TransformToDisplacementField(
        composite,
        sitk.sitkVectorFloat64,
        f_img.GetSize(),
        f_img.GetOrigin(),
        f_img.GetSpacing(),
        f_img.GetDirection(),
    )
    disp = sitk.GetArrayFromImage(field_img)  # (h, w, 2) physical (x, y) displacement = full-res pixels
    h, w = fixed_small.shape
    sy, sx = fixed_shape[0] / h, fixed_shape[1] / w
    ys, xs = np.meshgrid(np.arange(h) * sy + 0.5 * sy - 0.5, np.arange(w) * sx + 0.5 * sx - 0.5, indexing="ij")
    tx, ty = xs + disp[..., 0], ys + disp[..., 1]
    th, tw = target_shape
    grid = np.stack([(2 * tx + 1) / tw - 1, (2 * ty + 1) / th - 1], axis=-1)
    found = Deformation.from_norm_grid(grid, fixed_shape, target_shape)
    if not bspline:  # an affine run: keep it exactly affine (the sampled grid adds float noise only)
        found = Deformation(found.fixed_shape, found.moving_shape, found.affine, None)
    return initial.compose(found, (h, w)) if prewarped else found


class StageStopped(Exception):
    """A SimpleITK run ended early because its ``stop`` event was set: its result is not wanted."""


class StageFailed(PromptsegError):
    """SimpleITK could not run a stage on these images (e.g. a small image whose samples leave the other's buffer
    as the transform moves): the route drops that candidate and goes on with the others."""


def _itk_reason(exc: BaseException) -> str:
    """The ITK error's own sentence(s) from SimpleITK's multi-line message."""
    text = str(exc)
    reason = text.split("ITK ERROR:", 1)[-1].split("):", 1)[-1] if "ITK ERROR:" in text else text
    return " ".join(reason.split())


def _raise_if_set(stop: Any) -> None:
    if stop.is_set():  # LBFGS-B ignores StopRegistration(): an error in the iteration command ends Execute
        raise StageStopped


_quiet_lock = threading.Lock()
_quiet_users = 0
_quiet_hooks: tuple[Any, Any] = (None, None)  # (the hook replaced, ours)


@contextmanager
def _quiet_stops() -> Iterator[None]:
    """SimpleITK prints an error of a Python command through ``sys.excepthook`` before raising its own: a stop on
    request is no error, so it is not printed while a run is active (other errors reach the previous hook).
    Shared by concurrent runs like :func:`sitk_single_threaded`; the previous hook is back when the last leaves."""
    global _quiet_users, _quiet_hooks
    with _quiet_lock:
        if _quiet_users == 0:
            previous = sys.excepthook

            def hook(kind, value, traceback) -> None:
                if not issubclass(kind, StageStopped):
                    previous(kind, value, traceback)

            _quiet_hooks = (previous, hook)
            sys.excepthook = hook
        _quiet_users += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_users -= 1
            if _quiet_users == 0 and sys.excepthook is _quiet_hooks[1]:  # not replaced meanwhile by someone else
                sys.excepthook = _quiet_hooks[0]


def _sitk_stages(
    sitk, method, f_img, m_img, opts, initial, start_affine, affine: bool, bspline: bool, affine_shrink
) -> list:
    """The SimpleITK runs of :func:`intensity_stage`: affine (from the moments, ``start_affine`` or identity) and/or
    B-spline on top of it. Returns the transforms, outermost first."""
    transforms = []
    if affine:
        if initial is None:
            start = sitk.CenteredTransformInitializer(
                f_img, m_img, sitk.AffineTransform(2), sitk.CenteredTransformInitializerFilter.MOMENTS
            )
        else:
            start = start_affine if start_affine is not None else sitk.AffineTransform(2)
        optimizers = ["gradient", "regular_step"] if opts.affine_optimizer == "gradient_first" else ["regular_step"]
        for optimizer in optimizers:
            reg = method()
            if optimizer == "gradient":  # a step estimated every iteration: reaches the optimum's basin
                reg.SetOptimizerAsGradientDescent(
                    learningRate=1.0,
                    numberOfIterations=opts.intensity_iterations * 2,
                    convergenceMinimumValue=1e-7,
                    convergenceWindowSize=10,
                    estimateLearningRate=reg.EachIteration,
                )
            else:
                reg.SetOptimizerAsRegularStepGradientDescent(
                    learningRate=2.0,
                    minStep=1e-3,
                    numberOfIterations=opts.intensity_iterations * 2,
                    relaxationFactor=0.6,
                )
            reg.SetOptimizerScalesFromPhysicalShift()
            reg.SetShrinkFactorsPerLevel(list(affine_shrink))
            reg.SetSmoothingSigmasPerLevel([s // 2 for s in affine_shrink])
            reg.SetInitialTransform(start, inPlace=True)
            reg.Execute(f_img, m_img)
        transforms.append(start)
    elif start_affine is not None:
        transforms.append(start_affine)
    if bspline:
        bspline_transform = sitk.BSplineTransformInitializer(f_img, [opts.bspline_mesh] * 2)
        reg = method()
        if transforms:
            reg.SetMovingInitialTransform(transforms[0])
        reg.SetOptimizerAsLBFGSB(
            gradientConvergenceTolerance=1e-5,
            numberOfIterations=opts.bspline_iterations,
            maximumNumberOfCorrections=5,
            costFunctionConvergenceFactor=opts.bspline_convergence_factor,
        )
        reg.SetShrinkFactorsPerLevel(list(opts.bspline_shrink))
        reg.SetSmoothingSigmasPerLevel([s // 2 for s in opts.bspline_shrink])
        reg.SetInitialTransform(bspline_transform, inPlace=True)
        reg.Execute(f_img, m_img)
        transforms.append(bspline_transform)
    return transforms


def alignment_score(fixed_gray: np.ndarray, moving_gray: np.ndarray, deformation: Deformation, bins: int = 32) -> float:
    """Normalised mutual information (Studholme, (H(F) + H(M)) / H(F, M), 1..2) of the fixed image and the warped
    moving image on the fixed grid, over the pixels where the warped moving image is defined.

    Computed on the small gray images of :func:`intensity_register`; it picks among candidate transforms without
    landmarks. NMI rather than MI: it does not reward shrinking the overlap.
    """
    grid = deformation.norm_map(fixed_gray.shape)
    warped = F.grid_sample(torch.from_numpy(moving_gray)[None, None], grid[None], align_corners=False)[0, 0].numpy()
    inside = (grid.abs() <= 1).all(dim=-1).numpy()
    if inside.mean() < min_inside(deformation):  # mostly outside what the moving image can cover: not a candidate
        return 0.0
    a = np.clip((fixed_gray[inside] * bins).astype(int), 0, bins - 1)
    b = np.clip((warped[inside] * bins).astype(int), 0, bins - 1)
    joint = np.bincount(a * bins + b, minlength=bins * bins).astype(np.float64) / a.size

    def entropy(p: np.ndarray) -> float:
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    joint2 = joint.reshape(bins, bins)
    return (entropy(joint2.sum(1)) + entropy(joint2.sum(0))) / max(entropy(joint), 1e-12)
