"""The intensity route: every start refined by the SimpleITK affine stage (one per core; a region route's starts
may arrive later while the first ones run), the best by the image judge, then the B-spline stage on it; a cancel
reaches every SimpleITK run at its next iteration."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import Any

from ...errors import CancelledError, PromptsegError
from ..warp import Deformation, degenerate_reason
from . import intensity  # its stage looked up at each call (a test replaces it there)
from .intensity import IntensityImages, StageFailed, StageStopped, sitk_single_threaded
from .options import RegistrationOptions, _stage
from .torch_ops import single_thread


def _lower_thread_priority() -> None:
    """This thread gets only the CPU time the others leave: Linux threads have their own nice value, weighed
    against the process's other threads (per-session scheduling: autogroup or cgroups) or, without it, against
    every process: on a machine whose cores other processes keep busy it then waits for them to pause."""
    with suppress(AttributeError, OSError):  # no per-thread priority here: the run ahead just competes
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def intensity_route(
    images: IntensityImages,
    opts: RegistrationOptions,
    starts: dict[str, Deformation | None],
    check_cancel: Callable[[], None] = lambda: None,
    stages: list[dict[str, Any]] | None = None,
    later_starts: Callable[[], dict[str, Deformation]] | None = None,
    mirrored: dict[str, bool] | None = None,
) -> tuple[Deformation, str, dict[str, float]]:
    """Refine every start by the intensity affine stage, keep the one whose result aligns the images best by
    :func:`~.intensity.alignment_score` (NMI on the fixed grid; no landmarks), then run the B-spline stage on it.
    ``None`` is the intensity baseline's own (moments) start, so a wrong region start cannot win unless it also aligns
    the intensities better. With several starts and ``coarse_first``, the starts compete after the coarser pyramid
    levels and the winner alone goes on to the finest (a start that loses does not pay for the costliest level). A
    degenerate result (:func:`~..warp.degenerate_reason`) is not a candidate, and a B-spline stage that is degenerate or
    does not raise the score gives way to the affine result; each check is appended to ``stages``.

    ``later_starts`` (the region route) runs on the calling thread while ``starts`` are refined in the background,
    and the B-spline stage runs ahead on the best of them: its result is used if that start also wins against the
    later ones, else the stage runs again on the winner. The result is the same as with all starts given at once
    (every stage is a deterministic function of its start); only the waiting overlaps.
    Returns the transform, the winning start's name and every start's score; ``mirrored`` (if given) gets whether
    each refined start mirrors the image (the quality report weighs a mirrored result against the others)."""
    stages = [] if stages is None else stages
    mirrored = {} if mirrored is None else mirrored
    try:
        return _intensity_route(images, opts, starts, check_cancel, stages, later_starts, mirrored)
    except StageStopped:  # a SimpleITK run saw the cancel at one of its iterations
        check_cancel()
        raise


class _CancelFlag:
    """``check_cancel`` read as an event (``is_set``) that SimpleITK's iteration command polls: a cancel stops a run
    at its next iteration instead of after the stage (seconds; the widget's Cancel took 7 s to act)."""

    def __init__(self, check_cancel: Callable[[], None], also: threading.Event | None = None) -> None:
        self.check_cancel, self.also = check_cancel, also

    def is_set(self) -> bool:
        if self.also is not None and self.also.is_set():
            return True
        try:
            self.check_cancel()
        except CancelledError:
            return True
        return False


def _intensity_route(
    images: IntensityImages,
    opts: RegistrationOptions,
    starts: dict[str, Deformation | None],
    check_cancel: Callable[[], None],
    stages: list[dict[str, Any]],
    later_starts: Callable[[], dict[str, Deformation]] | None,
    mirrored: dict[str, bool],
) -> tuple[Deformation, str, dict[str, float]]:
    # set when the route is left (an error of the region route, a cancel): the starts refined in the background stop
    # at their next iteration, not after their whole stage ('no region in the moving image' came after minutes)
    leaving = threading.Event()
    cancelled = _CancelFlag(check_cancel, leaving)
    if later_starts is None or opts.coarse_first:  # coarse_first ranks all starts together: no run ahead
        every = {**starts, **(later_starts() if later_starts else {})}
        return _route(images, opts, every, check_cancel, stages, mirrored, cancelled)

    # torch on one thread while the runs overlap: with two, each op of the region route (encoder, decoder) waits at
    # its thread barrier for a core that SimpleITK or another process holds (region stage 3-5x slower; same result)
    stop_early = threading.Event()  # set when the B-spline stage running ahead is not wanted: it stops
    failed: dict[str, str] = {}
    with single_thread(), ThreadPoolExecutor(max_workers=2) as background:
        refined_early = background.submit(
            _refine_starts, images, opts, starts, opts.affine_shrink, failed, stop=cancelled
        )

        def early_bspline() -> tuple[str, Deformation | None]:
            # the region route is what everything waits for: the run ahead takes only CPU time it leaves idle (on a
            # busy machine it would otherwise slow it down and be lost if a region start wins)
            _lower_thread_priority()
            refined = refined_early.result()
            if not refined:  # SimpleITK ran from none of them
                return "", None
            best = _best_start(images, refined)[0]
            if not opts.intensity_bspline or stop_early.is_set():
                return best, None
            try:
                return best, _bspline(images, opts, refined[best], stop=_CancelFlag(check_cancel, stop_early))
            except StageStopped:
                return best, None

        bspline_early = background.submit(early_bspline)
        try:
            later = later_starts()
            check_cancel()
            later_refined = _refine_starts(images, opts, later, opts.affine_shrink, failed, stop=cancelled)
            refined = {**refined_early.result(), **later_refined}
            refined = _with_as_given(images, refined)
            mirrored.update(_mirrored(refined))
            best, scores, reasons = _best_start(images, refined)
            stages.extend(_start_stages(reasons, best))
            stages.extend(_failed_stages(failed, refined))
            deformation = refined[best]
            if opts.intensity_bspline:
                early_best, bspline = None, None
                if best in starts:
                    early_best, bspline = bspline_early.result()
                    check_cancel()  # the run ahead also stops on a cancel, with no result
                else:  # a later start (or the images as given) won: its B-spline stage runs now, the early one stops
                    stop_early.set()
                if early_best != best:
                    bspline = _bspline(images, opts, deformation, stop=cancelled)
                deformation = _keep_bspline(images, deformation, bspline, stages)
        finally:
            # after a cancel or an error too: leaving does not wait for the runs ahead to finish
            stop_early.set()
            leaving.set()
    return deformation, best, scores


#: the name of the candidate that leaves the moving image as it is (pixel identity)
AS_GIVEN = "as given"


def _refine_starts(
    images: IntensityImages,
    opts: RegistrationOptions,
    starts: dict[str, Deformation | None],
    shrink: Sequence[int],
    failed: dict[str, str] | None = None,
    stop: Any = None,
) -> dict[str, Deformation]:
    """The affine stage from every start; the starts are independent single-threaded SimpleITK runs (which release
    the GIL): one per core. A start SimpleITK cannot run from is left out, its reason put in ``failed``; ``stop``
    (an event, or :class:`_CancelFlag`) ends them all at their next iteration (:class:`StageStopped`)."""
    if not starts:
        return {}

    def refine(start: Deformation | None) -> Deformation | StageFailed:
        try:
            return intensity.intensity_stage(
                images,
                opts,
                initial=start,
                affine=opts.intensity_affine,
                bspline=False,
                affine_shrink=shrink,
                stop=stop,
            )
        except StageFailed as exc:
            return exc

    with sitk_single_threaded(), ThreadPoolExecutor(max_workers=min(len(starts), os.cpu_count() or 1)) as pool:
        results = dict(zip(starts, pool.map(refine, starts.values()), strict=True))
    if failed is not None:
        failed.update({name: str(r) for name, r in results.items() if isinstance(r, StageFailed)})
    return {name: r for name, r in results.items() if not isinstance(r, StageFailed)}


def _failed_stages(failed: dict[str, str], refined: dict[str, Deformation]) -> list[dict[str, Any]]:
    """Records of the starts SimpleITK could not run from (not degenerate: no result to judge); when none ran, the
    registration stops with their reason instead of returning the images as given as if that were an answer."""
    if failed and set(refined) <= {AS_GIVEN}:
        raise PromptsegError(
            f"the intensity registration could not run on these images ({next(iter(failed.values()))}); "
            "are they large enough and do they overlap?"
        )
    return [_stage(f"affine from {name}", reason, degenerate=False, candidate=True) for name, reason in failed.items()]


def _start_stages(reasons: dict[str, str | None], best: str) -> list[dict[str, Any]]:
    """Records of the degenerate starts; those that lost are candidates (only the chosen one's counts)."""
    return [
        _stage(f"affine from {name}", reason, candidate=name != best)
        for name, reason in reasons.items()
        if reason is not None
    ]


def _with_as_given(images: IntensityImages, refined: dict[str, Deformation]) -> dict[str, Deformation]:
    """The refined starts and the images as given: on a pair already aligned, the sampled-MI optimizer drifts from
    the optimum (an image against itself: NMI 2.000 -> 1.959), and doing nothing must then win."""
    return {**refined, AS_GIVEN: Deformation.identity(images.fixed_shape, images.moving_shape)}


def _mirrored(refined: dict[str, Deformation]) -> dict[str, bool]:
    return {name: bool(deformation.orientation < 0) for name, deformation in refined.items()}


def _best_start(
    images: IntensityImages, refined: dict[str, Deformation]
) -> tuple[str, dict[str, float], dict[str, str | None]]:
    """The start with the best score among the non-degenerate ones (all, if every one is degenerate); every score
    and every degeneracy reason."""
    scores = {name: images.score(deformation) for name, deformation in refined.items()}
    reasons = {name: degenerate_reason(deformation) for name, deformation in refined.items()}
    usable = [name for name in refined if reasons[name] is None] or list(refined)
    return max(usable, key=lambda k: scores[k]), scores, reasons


def _bspline(
    images: IntensityImages, opts: RegistrationOptions, deformation: Deformation, stop: Any = None
) -> Deformation | StageFailed:
    try:
        return intensity.intensity_stage(images, opts, initial=deformation, affine=False, bspline=True, stop=stop)
    except StageFailed as exc:
        return exc


def _keep_bspline(
    images: IntensityImages,
    deformation: Deformation,
    bspline: Deformation | StageFailed,
    stages: list[dict[str, Any]],
) -> Deformation:
    """Nonrigid is kept only when it ran, is not degenerate and the images agree better (the judge of the starts;
    no landmarks); the check goes to ``stages``."""
    if isinstance(bspline, StageFailed):
        stages.append(_stage("bspline", str(bspline), degenerate=False))
        return deformation
    degenerate = degenerate_reason(bspline, deformation)
    before, after = images.score(deformation), images.score(bspline)
    reason = degenerate or (None if after > before else f"no better by NMI ({after:.4f} <= {before:.4f})")
    stages.append(_stage("bspline", reason, degenerate=degenerate is not None))
    return bspline if reason is None else deformation


def _route(
    images: IntensityImages,
    opts: RegistrationOptions,
    starts: dict[str, Deformation | None],
    check_cancel: Callable[[], None],
    stages: list[dict[str, Any]],
    mirrored: dict[str, bool],
    cancelled: _CancelFlag | None = None,
) -> tuple[Deformation, str, dict[str, float]]:
    """:func:`intensity_route` with every start known up front."""
    levels = tuple(opts.affine_shrink)
    coarse_first = opts.coarse_first and len(starts) > 1 and len(levels) > 1
    failed: dict[str, str] = {}
    refined = _refine_starts(images, opts, starts, levels[:-1] if coarse_first else levels, failed, stop=cancelled)
    refined = _with_as_given(images, refined)
    mirrored.update(_mirrored(refined))
    check_cancel()
    best, scores, reasons = _best_start(images, refined)
    stages.extend(_start_stages(reasons, best))
    stages.extend(_failed_stages(failed, refined))
    deformation = refined[best]
    if coarse_first and best != AS_GIVEN:
        try:
            finer = intensity.intensity_stage(
                images,
                opts,
                initial=deformation,
                affine=opts.intensity_affine,
                bspline=False,
                affine_shrink=levels[-1:],
                stop=cancelled,
            )
        except StageFailed:
            finer = deformation  # the coarse levels' result stands
        if degenerate_reason(finer, deformation) is None and images.score(finer) >= scores[best]:
            deformation = finer
    if opts.intensity_bspline:
        deformation = _keep_bspline(images, deformation, _bspline(images, opts, deformation, cancelled), stages)
    return deformation, best, scores
