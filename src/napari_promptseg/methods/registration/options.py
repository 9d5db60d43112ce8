"""Options and result of :func:`~.pipeline.register`, and landmark errors (rTRE)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import CancelledError, PromptsegError
from ...io.layer_objects import is_layer, labels_levels, labels_on_plane, layer_pixels, layer_xy
from ...models.preprocessing import is_single_plane, pyramid_levels
from ...tiling import full_to_level, level_placement, level_to_full, upsample_labels
from ..defaults import BOX_THRESHOLD, FIELD_SMOOTHNESS, HEATMAP_THRESHOLD, PAIR_SIMILARITY, TEXT_THRESHOLD
from ..regions import (
    PairingOptions,
    PairingReport,
    RegionPair,
)
from ..warp import Deformation, _points

METHODS = ("auto", "prompts+intensity", "intensity", "prompts")
#: Python, CLI and widget: "prompts+intensity" when prompts are given (text, a reference, regions or pairs), else
#: "intensity". Without prompts the automatic region starts no longer won on any dev pair once the affine stage
#: converged, and cost 1.8-8.3 s per pair (benchmarks/README.md, registration v5)
DEFAULT_METHOD = "auto"


def resolve_method(method: str, prompts: object) -> str:
    """The route ``method`` names for these ``prompts`` ("auto": regions only when the user gave prompts)."""
    if method not in METHODS:
        raise PromptsegError(f"method must be one of {METHODS}, got {method!r}")
    if method != "auto":
        return method
    # an empty list is a prompt source that found nothing: the region route says so (it is not "no prompts")
    automatic = prompts is None or (isinstance(prompts, str) and prompts == "auto")
    return "intensity" if automatic else "prompts+intensity"


@dataclass
class RegistrationOptions(PairingOptions):
    """Pairing (inherited from :class:`~..regions.PairingOptions`), transform from pairs, intensity stages."""

    #: automatic regions: an n x n grid of box prompts per n (1 = the whole image, the global pair)
    region_grids: tuple[int, ...] = (1, 2, 3)
    # transform from pairs
    affine_iterations: tuple[int, ...] = (40, 30, 20)
    field_levels: tuple[int, ...] = (64, 128, 256)
    field_iterations: tuple[int, ...] = (50, 40, 30)
    control_spacing: int = 6
    #: pairs with Dice below this under a candidate start are outliers (RANSAC-like start selection)
    inlier_dice: float = 0.8
    max_start_candidates: int = 8
    #: prior on the affine: larger rotations/scalings are not considered (raise for strongly rotated sections)
    max_rotation_deg: float = 45.0
    max_scale: float = 2.0
    smoothness: float = FIELD_SMOOTHNESS
    learning_rate: float = 0.01
    dense: bool = True
    # intensity stages / refinement
    #: gray image the intensity stages and the image judge see: "mean" of the channels or summed optical density
    #: "od" (brightfield colour images; see :func:`~.intensity.to_gray`)
    gray: str = "mean"
    intensity_max_side: int = 384
    intensity_affine: bool = True
    intensity_bspline: bool = True
    bspline_mesh: int = 6
    intensity_iterations: int = 60
    #: the affine stage's optimizer: "gradient_first" (gradient descent with its step estimated every iteration,
    #: then regular-step from where it ends) or "regular_step" alone, which halves its step at every turn of the
    #: sampled metric's noisy gradient and stopped far from the optimum (synthetic-affine pair: NMI 1.32, rTRE 3.7 %,
    #: against 1.73 and 0.13 %)
    affine_optimizer: str = "gradient_first"
    #: the affine stage's pyramid (shrink factors of the small images); with several starts and ``coarse_first``,
    #: the starts compete after all but the finest level and only the winner runs the finest (faster, but on the
    #: synthetic-affine pair it picked a start whose B-spline stage then folded: off by default)
    affine_shrink: tuple[int, ...] = (4, 2, 1)
    coarse_first: bool = False
    #: the B-spline stage (LBFGS-B) per level: shrink factors of the small images, iterations
    #: (2,) = half the intensity images' side (192 px): on every dev pair as accurate as (2, 1) once the affine stage
    #: converged, for a third of the time
    bspline_shrink: tuple[int, ...] = (2,)
    bspline_iterations: int = 60
    #: LBFGS-B stops when the cost falls by less than this x machine epsilon (~2e-6 relative) in an iteration: at
    #: 1e7 (SimpleITK's default) the finest level spent most of the stage's time on changes of 1e-4 in NMI
    bspline_convergence_factor: float = 1e10
    seed: int = 0
    # global start (:mod:`.search`): rotations every ``search_step_deg`` (and flipped), scored by NMI at
    # ``search_side`` px; ``search_starts`` of them (the best unmirrored and mirrored first) become starts of the
    # intensity stage next to the others
    global_search: bool = True
    search_flip: bool = True
    search_step_deg: float = 15.0
    search_side: int = 128
    search_starts: int = 2
    #: images whose sizes differ by more than 10 % (one field at two pixel sizes) also get candidates scaled by the
    #: ratio of their diagonals (:mod:`.search`)
    search_size_ratio: bool = True
    #: let the unrotated candidate be a start too (its angle refined within one step) besides the moments start,
    #: which is that candidate refined by the affine stage alone. Until bug hunt 2 every rotation within 2 steps of
    #: the identity was skipped (on the lesions pair the NMI judge had preferred a 345 deg start over the region
    #: start, 0.66 % vs 0.54 % rTRE), which left rotations of 22-37 deg with no start near them
    search_near_identity: bool = False
    # joint refinement ("prompts+intensity"): local NCC of the gray images + region-pair Dice + bending energy
    joint_refinement: bool = True
    refine_levels: tuple[int, ...] = (256, 512)
    refine_iterations: tuple[int, ...] = (40, 20)
    #: control-point spacing in pixels of each level's grid (16 px at 512 = 32 px at 1024)
    refine_spacing: int = 16
    #: local NCC window radius in pixels of each level's grid
    refine_window: int = 4
    #: image term of the refinement: "ncc" (squared local NCC) or "mind" (MIND self-similarity descriptors)
    refine_similarity: str = "ncc"
    refine_dice: float = 0.2
    refine_smoothness: float = 0.05
    refine_learning_rate: float = 0.001


def user_options(
    *, similarity: float = PAIR_SIMILARITY, smoothness: float | None = None, dense: bool = True
) -> RegistrationOptions:
    """The :class:`RegistrationOptions` a user sets, the one rule of `promptseg register` (--similarity,
    --smoothness, --no-dense) and the Registration widget: ``similarity``, the cosine similarity two regions need to
    pair; ``smoothness``, the bending-energy weight of the region route's dense field (None: the default);
    ``dense``: False fits the region route's affine alone. The rest stays at its defaults."""
    if not -1.0 <= similarity <= 1.0:  # NaN fails too
        raise PromptsegError(f"the pair similarity is a cosine similarity, from -1 to 1, got {similarity}")
    options = RegistrationOptions(similarity_threshold=float(similarity), dense=bool(dense))
    if smoothness is not None:
        if not 0.0 <= smoothness < float("inf"):
            raise PromptsegError(
                f"the smoothness (bending-energy weight) must be a finite number from 0 up, got {smoothness}"
            )
        options.smoothness = float(smoothness)
    return options


def text_prompt_options(
    *,
    box_threshold: float = BOX_THRESHOLD,
    text_threshold: float = TEXT_THRESHOLD,
    heatmap_threshold: float = HEATMAP_THRESHOLD,
    device: str = "auto",
    weights: str | None = None,
    weights_option: str | None = None,
) -> dict[str, Any]:
    """:func:`~.pipeline.register`'s ``text_options`` a user sets (`promptseg register`'s thresholds, --device and
    --text-weights, the Registration widget's): how the text prompts' regions are found (:func:`~..text.segment_text`'s
    arguments) and which weights the route loads (``weights``: GroundingDINO's or CLIPSeg's; ``weights_option``: how
    the user gives them, named where missing ones are told, :func:`~..text.choose_route`)."""
    if not all(0.0 <= t <= 1.0 for t in (box_threshold, text_threshold, heatmap_threshold)):  # segment_text's rule
        raise PromptsegError("box, text and heatmap thresholds must lie in [0, 1]")
    options: dict[str, Any] = {
        "box_threshold": float(box_threshold),
        "text_threshold": float(text_threshold),
        "heatmap_threshold": float(heatmap_threshold),
        "device": device,
    }
    if weights is not None:
        options["weights"] = weights
    if weights_option is not None:
        options["weights_option"] = weights_option
    return options


def level_record(index: int = 0, factors: Sequence[float] = (1.0, 1.0)) -> dict[str, Any]:
    """The record of the pyramid level an image was registered at, as report.json's ``registered_level`` names it:
    its index (0: full resolution) and how many times coarser than full resolution it is along (rows, columns)."""
    return {"level": int(index), "factors": [float(f) for f in factors]}


def _full_resolution_levels() -> dict[str, dict[str, Any]]:
    return {"fixed": level_record(), "moving": level_record()}


def _plane_shape(shape: Sequence[int], channel_axis: int | None) -> tuple[int, ...]:
    """(rows, columns) of an image of ``shape``: its channel axis left out, a (1, H, W) plane's last two, else its
    first two axes."""
    if channel_axis is not None and len(shape) == 3:
        return tuple(int(n) for axis, n in enumerate(shape) if axis != channel_axis % 3)
    return tuple(int(n) for n in (shape[1:] if is_single_plane(shape) else shape[:2]))


@dataclass
class RegistrationResult:
    """Transform fixed -> moving plus what was used to find it. ``displacement`` is (H, W, 2) (dx, dy) pixels.

    A pyramid is registered at one level of each image (``registered_level``): the deformation, the displacement
    (in moving-level pixels), the warped images and labels are on the fixed level's grid, laid over the fixed image
    by ``fixed_placement``; points are taken and given in full-resolution pixels."""

    deformation: Deformation
    method: str
    pairs: list[RegionPair] = field(default_factory=list)
    pair_dice_before: list[float] = field(default_factory=list)
    pair_dice_after: list[float] = field(default_factory=list)
    pairing: PairingReport | None = None
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: which start won (``"moments"``: the intensity baseline's; ``"regions"``...) and every start's NMI score
    start: str = ""
    start_scores: dict[str, float] = field(default_factory=dict)
    #: text prompts: the route that answered ("groundingdino" | "clipseg" | "library", "" without text) and why
    text_route: str = ""
    text_reason: str = ""
    #: one record per region source: prompt, regions per image, route and reasons (see :func:`~.sources.region_pairs`)
    prompt_sources: list[dict] = field(default_factory=list)
    #: the joint refinement of "prompts+intensity": ``accepted`` and the image score (NMI) before and after
    refinement: dict[str, Any] = field(default_factory=dict)
    #: every stage that can be rejected, in order: ``{"stage", "accepted", "reason", "degenerate", "candidate"}``; a
    #: degenerate stage (non-finite, folding, mostly outside the moving image; :func:`~..warp.degenerate_reason`)
    #: gives way to the stage before it; ``candidate``: a start that lost (listed for the record only)
    stages: list[dict[str, Any]] = field(default_factory=list)
    #: what a user can read without landmarks (:func:`~.quality.quality_report`): image similarity (NMI) before and
    #: after, the Jacobian range, stages rejected, and a verdict
    quality: dict[str, Any] = field(default_factory=dict)
    #: the pyramid level each image was registered at, as the CLI's report.json says it: ``{"fixed": {"level": 1,
    #: "factors": [2.0, 2.0]}, "moving": {...}}`` (level 0, factors 1: full resolution, or not a pyramid)
    registered_level: dict[str, dict[str, Any]] = field(default_factory=_full_resolution_levels)
    #: the napari layers register() was given as ``fixed`` and ``moving`` (weak references, by role): a Points layer
    #: given to :meth:`moving_points_to_fixed` or :meth:`fixed_points_to_moving` is read over its image's layer, as
    #: napari shows it (the Registration widget reads its landmark layers so)
    layers: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def _layer(self, role: str) -> Any | None:
        """The ``role`` ("fixed", "moving") layer register() was given, while it lives; None for pixels given."""
        ref = self.layers.get(role)
        return None if ref is None else ref()

    @property
    def displacement(self) -> np.ndarray:
        return self.deformation.displacement()

    @property
    def fixed_factors(self) -> np.ndarray:
        """How many times coarser than the fixed image's full resolution its registered level is, (rows, columns)."""
        return np.asarray(self.registered_level["fixed"]["factors"], float)

    @property
    def moving_factors(self) -> np.ndarray:
        """:attr:`fixed_factors` of the moving image."""
        return np.asarray(self.registered_level["moving"]["factors"], float)

    @property
    def fixed_placement(self) -> dict[str, tuple[float, ...]]:
        """``scale`` and ``translate`` that lay the fixed level's grid (the warped image and labels, the
        displacement) over the fixed image's full-resolution pixels (:func:`~napari_promptseg.tiling.level_placement`):
        ``viewer.add_image(result.warp_image(moving), **result.fixed_placement)``."""
        return level_placement(self.fixed_factors)

    @property
    def _moving_full_shape(self) -> tuple[int, int]:
        """(rows, columns) of the moving image's full resolution (its registered level times its factors)."""
        shape, factors = self.deformation.moving_shape, self.moving_factors
        return int(round(shape[0] * factors[0])), int(round(shape[1] * factors[1]))

    def _moving_plane(self, moving: Any, channel_axis: int | None, what: str) -> Any:
        """The array of ``moving`` on the plane registered: a pyramid's level of that size (no other level is
        read), any other image itself; refused, saying what to pass, when it is the full resolution of a moving
        image registered at a coarser level."""
        shape = self.deformation.moving_shape
        levels = pyramid_levels(moving)
        if levels is not None:
            for level in levels:
                if _plane_shape(np.shape(level), channel_axis) == shape:
                    return level
            sizes = ", ".join(" x ".join(map(str, _plane_shape(np.shape(a), channel_axis))) for a in levels)
            raise PromptsegError(
                f"{what}: no level of this pyramid ({sizes} px) is the {shape[0]} x {shape[1]} px moving plane "
                "registered"
            )
        index = self.registered_level["moving"]["level"]
        full = self._moving_full_shape
        if index and _plane_shape(np.shape(moving), channel_axis) == full != shape:
            raise PromptsegError(
                f"{what}: this is the moving image's full resolution ({full[0]} x {full[1]} px); it was registered "
                f"at its pyramid level {index} ({shape[0]} x {shape[1]} px): pass the pyramid itself (the layer's "
                f"data) or that level (data[{index}]); the result lies on the fixed level's grid: "
                "viewer.add_image(warped, **result.fixed_placement)"
            )
        return moving

    def warp_image(
        self,
        moving: np.ndarray,
        *,
        order: int = 1,
        channel_axis: int | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """``moving`` on the fixed grid, in the axis order it was given: (H, W), (H, W, C), or with ``channel_axis``
        (as given to :func:`~.pipeline.register`) the channels where that axis puts them. ``order``: 1 = bilinear,
        0 = nearest neighbour (labels). A pyramid (a multiscale layer's data) is warped at its level of the size
        registered (``registered_level``), onto the fixed level's grid (``fixed_placement``). ``cancel``: as
        register()'s, asked between bands of rows (a large image's warp takes seconds); True raises
        :class:`~napari_promptseg.errors.CancelledError`."""

        def check_cancel() -> None:
            if cancel is not None and cancel():
                raise CancelledError("warp cancelled")

        if order not in (0, 1):
            raise PromptsegError(f"warp_image: order must be 0 (nearest) or 1 (bilinear), got {order!r}")
        moving = layer_pixels(moving, "warp_image")  # a napari Image layer: its pixels
        arr = np.asarray(self._moving_plane(moving, channel_axis, "warp_image"))
        if channel_axis is None and is_single_plane(arr.shape):  # a stack of one plane: given back as given
            return self.deformation.warp_image(arr[0], order=order, check_cancel=check_cancel)[None]
        shape = self.deformation.moving_shape
        if channel_axis is not None and arr.ndim == 3:
            if not -3 <= channel_axis < 3:
                raise PromptsegError(f"warp_image: channel_axis {channel_axis} out of range for shape {arr.shape}")
            warped = self.deformation.warp_image(
                np.moveaxis(arr, channel_axis, -1), order=order, check_cancel=check_cancel
            )
            return np.moveaxis(warped, -1, channel_axis)
        if arr.ndim == 3 and tuple(arr.shape[1:]) == shape and tuple(arr.shape[:2]) != shape:
            raise PromptsegError(
                f"moving image of shape {arr.shape} has its channels first; the transform is for {shape[0]} x "
                f"{shape[1]} px images: pass channel_axis=0 (as to register()) or np.moveaxis(image, 0, -1)"
            )
        return self.deformation.warp_image(arr, order=order, check_cancel=check_cancel)

    def warp_labels(self, labels: np.ndarray) -> np.ndarray:
        """Labels of the moving image on the fixed grid (nearest: ids are never mixed). Labels drawn on the full
        resolution of a moving image registered at a pyramid level are first put on that level (nearest pixel, as
        the CLI's --moving-labels); a pyramid of labels is read at its level of the size registered. A napari Labels
        layer, when register() was given the moving image's layer, is read where it lies over that layer (its own
        scale, translate, rotation: :func:`~napari_promptseg.io.layer_objects.labels_on_plane`, as the Registration
        widget reads its moving labels); else its pixels."""
        moving_layer = self._layer("moving")
        if is_layer(labels) and moving_layer is not None and type(labels).__name__ == "Labels":
            _, _, single = labels_levels(labels)
            placed = labels_on_plane(labels, moving_layer, self.moving_factors, self.deformation.moving_shape)
            warped = self.deformation.warp_labels(placed.resample())
            return warped[None] if single else warped  # a Labels layer over a (1, H, W) plane: given back so
        labels = layer_pixels(labels, "warp_labels")  # a napari Labels layer: its pixels
        shape = self.deformation.moving_shape
        full = self._moving_full_shape
        levels = pyramid_levels(labels)
        if levels is not None:  # the level registered, else the full resolution (resampled below)
            labels = next((a for a in levels if _plane_shape(np.shape(a), None) == shape), levels[0])
        if is_single_plane(np.shape(labels)):  # a stack of one plane (a Labels layer over one): given back as given
            return self.warp_labels(np.asarray(labels)[0])[None]
        given = tuple(np.shape(labels))
        if given == full != shape:
            labels = upsample_labels(np.asarray(labels), shape)
        elif given[:2] != shape:
            level = self.registered_level["moving"]["level"]
            of = f" (its pyramid level {level}; full resolution {full[0]} x {full[1]} px)" if level else ""
            raise PromptsegError(
                f"warp_labels: labels of shape {given}; the moving image registered is {shape[0]} x {shape[1]} px"
                f"{of}: give labels of {'either size' if level else 'that size'} (2D, one id per pixel)"
            )
        return self.deformation.warp_labels(labels)

    def warp_annotations(
        self,
        geojson: Any,
        *,
        moving_factors: Sequence[float] | None = None,
        fixed_factors: Sequence[float] | None = None,
        max_segment: float | None = None,
    ) -> tuple[Any, dict[str, int]]:
        """GeoJSON annotations of the moving image (as :func:`~napari_promptseg.io.annotations.read_annotations`
        reads QuPath's export; x, y pixels) in the fixed frame, properties kept; outlines and lines get a vertex
        every ``max_segment`` pixels first (default: :data:`OUTLINE_STEP` registered pixels), so they bend with the
        deformation. ``moving_factors``, ``fixed_factors``: as :meth:`moving_points_to_fixed`. Returns the mapped
        copy and counts (``geometries``, ``vertices_in``/``_out``, ``geometries_outside``)."""
        from ...io.annotations import map_annotations

        moving_factors = self.moving_factors if moving_factors is None else moving_factors
        fixed_factors = self.fixed_factors if fixed_factors is None else fixed_factors
        fixed_full = np.multiply(self.deformation.fixed_shape, np.asarray(fixed_factors, float)[:2])
        return map_annotations(
            geojson,
            lambda xy: self.moving_points_to_fixed(xy, moving_factors=moving_factors, fixed_factors=fixed_factors),
            max_segment=outline_step(moving_factors) if max_segment is None else max_segment,
            mirrored=self.deformation.orientation < 0,
            fixed_size=(float(fixed_full[1]), float(fixed_full[0])),
        )

    def moving_points_to_fixed(
        self,
        moving_xy: np.ndarray,
        *,
        moving_factors: Sequence[float] | None = None,
        fixed_factors: Sequence[float] | None = None,
    ) -> np.ndarray:
        """Moving (x, y) pixels -> fixed ones. ``moving_factors``, ``fixed_factors``: how many times coarser than the
        points' pixels (full resolution) each registered image is, along (rows, columns) (default: the levels
        :func:`~.pipeline.register` read, ``registered_level``): a pyramid registered at a level takes and gives
        full-resolution points, by the rule the registered layers are laid by
        (:func:`~napari_promptseg.tiling.level_to_full`: a level pixel over the centre of the block it stands for)."""
        # refused by name before full_to_level's broadcast
        moving_xy = _points(layer_xy(moving_xy, "moving points", self._layer("moving")), "moving points")
        moving_factors = self.moving_factors if moving_factors is None else moving_factors
        fixed_factors = self.fixed_factors if fixed_factors is None else fixed_factors
        on_moving_level = full_to_level(moving_xy, np.asarray(moving_factors, float)[1::-1])
        return level_to_full(self.deformation.points_to_fixed(on_moving_level), np.asarray(fixed_factors, float)[1::-1])

    def fixed_points_to_moving(self, fixed_xy: np.ndarray) -> np.ndarray:
        """Fixed (x, y) pixels -> moving ones, in full-resolution pixels of both (as :meth:`moving_points_to_fixed`)."""
        fixed_xy = layer_xy(fixed_xy, "fixed points", self._layer("fixed"))
        on_fixed_level = full_to_level(_points(fixed_xy, "fixed points"), self.fixed_factors[::-1])
        return level_to_full(self.deformation.points_to_moving(on_fixed_level), self.moving_factors[::-1])


#: outlines and lines carried across a registration get a vertex every this many registered (moving) pixels: the
#: field does not bend between them
OUTLINE_STEP = 2.0


def outline_step(moving_factors: Sequence[float] = (1, 1)) -> float:
    """:data:`OUTLINE_STEP` in the pixels of outlines drawn at full resolution on a moving image registered at a
    level ``moving_factors`` times coarser."""
    return OUTLINE_STEP * float(np.max(moving_factors))


# -- landmarks ----------------------------------------------------------------------------------------------------
def _stage(name: str, reason: str | None, *, degenerate: bool | None = None, candidate: bool = False) -> dict[str, Any]:
    """A record of ``RegistrationResult.stages``; ``reason`` None = accepted; by default a reason means degenerate.
    ``candidate``: a start that was not chosen (kept for the record; the warnings and the verdict skip it)."""
    return {
        "stage": name,
        "accepted": reason is None,
        "reason": reason,
        "degenerate": reason is not None if degenerate is None else degenerate,
        "candidate": candidate,
    }


def on_chosen_path(stages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stages the result went through: a losing start's rejection says nothing about the result."""
    return [s for s in stages if not s.get("candidate")]


def _stage_warnings(stages: Sequence[dict[str, Any]]) -> list[str]:
    return [
        f"{s['stage']} stage rejected as degenerate ({s['reason']}); the previous stage's result is kept"
        for s in on_chosen_path(stages)
        if s["degenerate"]
    ]


def landmark_errors(fixed_xy: np.ndarray, mapped_xy: np.ndarray, diagonal: float) -> dict[str, float]:
    """TRE (pixels) and ANHIR rTRE (TRE / fixed-image diagonal) summary of corresponding points."""
    a, b = np.asarray(fixed_xy, float), np.asarray(mapped_xy, float)
    if a.shape != b.shape:
        raise PromptsegError(f"landmark count mismatch: {len(a)} fixed vs {len(b)} mapped points")
    tre = np.linalg.norm(a - b, axis=1)
    return {
        "n": int(len(tre)),
        "tre_mean": float(tre.mean()),
        "tre_median": float(np.median(tre)),
        "tre_max": float(tre.max()),
        "rtre_mean": float(tre.mean() / diagonal),
        "rtre_median": float(np.median(tre) / diagonal),
        "rtre_max": float(tre.max() / diagonal),
    }


#: what "before" and "after" TRE are measured in, said with them (CLI report, widget summary)
TRE_UNIT = "pixels of the fixed image (full resolution)"


def placed_before(
    moving_xy: np.ndarray,
    fixed_shape: Sequence[int],
    moving_shape: Sequence[int],
    pixel_sizes: tuple[Sequence[float], Sequence[float]] | None = None,
) -> tuple[np.ndarray, str]:
    """The moving landmarks (x, y in full-resolution pixels of the moving image, of ``moving_shape`` rows and
    columns) where they lie over the fixed image (``fixed_shape``) before registration, in full-resolution pixels of
    the fixed image: the points the "before" TRE compares with the fixed landmarks; and how they were placed, said
    with it. By ``pixel_sizes`` ((x, y) of the fixed image's pixel, of the moving's, in one unit) when both are known;
    else, for images whose sizes are more than :data:`~.search.SIZE_RATIO_MIN` apart (a slide's 5 % and 10 % copies,
    a rescaled copy), stretched by the ratio of their sizes along each axis; else pixel for pixel (ANHIR's initial
    TRE). The moving pixels taken as the fixed image's made a 46 px misalignment of a 10 % image over a 5 % one a
    "before" TRE of 636 px."""
    from .search import SIZE_RATIO_MIN

    xy = np.asarray(moving_xy, float).reshape(-1, 2)
    if pixel_sizes is not None:
        (fx, fy), (mx, my) = pixel_sizes
        factor = np.array([mx / fx, my / fy])
        if np.allclose(factor, 1.0):  # one pixel size: nothing to say ("moving pixel 1 x 1 fixed" said nothing)
            return xy, "pixel for pixel"
        return xy * factor, f"placed by the pixel sizes (moving pixel {factor[0]:.3g} x {factor[1]:.3g} fixed)"
    ratio = size_ratio(fixed_shape, moving_shape)
    if max(ratio, 1 / ratio) <= SIZE_RATIO_MIN:
        return xy, "pixel for pixel"
    factor = np.array([fixed_shape[1] / moving_shape[1], fixed_shape[0] / moving_shape[0]])
    return xy * factor, f"placed by the image sizes (moving stretched {factor[0]:.3g} x {factor[1]:.3g})"


def landmarks_outside(xy: np.ndarray, shape: Sequence[int], what: str) -> str | None:
    """A warning when landmarks lie outside the image they were placed on (``shape``: its full-resolution rows,
    columns), else None. Points in pixels of another scale of the slide, or in micrometres, are compared as pixels
    of this image: the TRE means nothing, and nothing else would say so."""
    xy = np.asarray(xy, float).reshape(-1, 2)
    h, w = shape[:2]
    # a pixel of slack: points on the border's outer edge are the image's
    outside = (xy[:, 0] < -1) | (xy[:, 0] > w) | (xy[:, 1] < -1) | (xy[:, 1] > h)
    if not outside.any():
        return None
    return (
        f"{what}: {int(outside.sum())} of {len(xy)} points lie outside the {h} x {w} px image (x up to "
        f"{xy[:, 0].max():.0f}, y up to {xy[:, 1].max():.0f}): are they pixels of this image, not of another scale "
        "of it or micrometres? The TRE takes them as this image's pixels"
    )


def image_diagonal(shape: Sequence[int]) -> float:
    return float(np.hypot(shape[0], shape[1]))


def size_ratio(fixed_shape: Sequence[int], moving_shape: Sequence[int]) -> float:
    """Moving over fixed diagonal: the scale between two images of one field at two pixel sizes."""
    return image_diagonal(moving_shape) / image_diagonal(fixed_shape)
