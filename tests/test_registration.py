"""Registration: point/image conventions, recovery of known deformations of a real image, bad inputs.

The known deformations are applied to the BIRL reference histology image (real pixels, real landmarks). The moving
image is made by pulling the fixed image through a known map ``S`` (moving grid -> fixed frame), so the true position
in the moving image of a fixed landmark q is the solution of S(y) = q, and a correct registration maps y back to q.
"""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_promptseg.errors import PromptsegError
from napari_promptseg.io import read_image
from napari_promptseg.io.landmarks import paired_landmarks, read_landmarks
from napari_promptseg.methods.registration import (
    IntensityImages,
    RegistrationOptions,
    image_diagonal,
    intensity_route,
    landmark_errors,
    register,
)
from napari_promptseg.methods.registration.intensity import StageStopped, intensity_stage
from napari_promptseg.methods.warp import Deformation, norm_grid


@pytest.fixture(scope="module")
def birl(shared_data):
    root = shared_data / "registration_birl" / "data-images"
    return {
        "image": read_image(root / "images" / "artificial_reference.jpg"),
        "landmarks": read_landmarks(root / "landmarks" / "artificial_reference.csv").xy,
    }


def smooth_residual(shape: tuple[int, int], amplitude: float, seed: int = 0) -> np.ndarray:
    """A smooth random field (normalised units) on a coarse grid: a few low-frequency sine modes."""
    rng = np.random.default_rng(seed)
    grid = norm_grid(shape).numpy()
    out = np.zeros((*shape, 2), np.float32)
    for axis in range(2):
        for _ in range(3):
            fx, fy, phase = rng.uniform(0.5, 1.5), rng.uniform(0.5, 1.5), rng.uniform(0, 2 * np.pi)
            out[..., axis] += np.sin(np.pi * (fx * grid[..., 0] + fy * grid[..., 1]) + phase)
    return (amplitude * out / 3).astype(np.float32)


def make_known_pair(image: np.ndarray, matrix: np.ndarray, amplitude: float = 0.0):
    """Moving image = image pulled through S (moving grid -> fixed frame): a pixel affine plus a smooth residual."""
    shape = image.shape[:2]
    s = Deformation.from_pixel_affine(matrix, shape, shape)
    if amplitude:
        s.residual = smooth_residual((12, 16), amplitude)
    return s, s.warp_image(image)


def pairs_from_superpixels(image: np.ndarray, s: Deformation, n_segments: int = 16):
    """Corresponding regions: superpixels of the fixed image and the same labels pulled through S."""
    from skimage.segmentation import slic

    labels = slic(image, n_segments=n_segments, compactness=10, start_label=1)
    moving_labels = s.warp_labels(labels)
    ids = [i for i in np.unique(labels) if (moving_labels == i).sum() > 200]
    return [(labels == i, moving_labels == i) for i in ids]


ROTATE_SCALE = np.array([[0.97, -0.12, 40.0], [0.10, 1.02, -25.0], [0.0, 0.0, 1.0]])


# -- conventions --------------------------------------------------------------------------------------------------
def test_points_land_where_the_image_went():
    """Blobs at known moving points appear, after warping, where points_to_fixed maps those points."""
    moving_shape, fixed_shape = (150, 170), (130, 160)
    t = Deformation.from_pixel_affine(
        np.array([[1.1, 0.1, 5], [-0.05, 0.95, -3], [0, 0, 1]]), fixed_shape, moving_shape
    )
    t.residual = smooth_residual((10, 12), 0.03)
    points = np.array([[60.0, 40.0], [120.0, 90.0], [30.0, 110.0]])
    moving = np.zeros(moving_shape, np.float32)
    for x, y in points.astype(int):
        moving[y, x] = 1
    moving = ndimage.gaussian_filter(moving, 2.5)
    warped = t.warp_image(moving)
    mapped = t.points_to_fixed(points)
    for x, y in mapped:
        window = warped[int(y) - 6 : int(y) + 7, int(x) - 6 : int(x) + 7]
        cy, cx = np.unravel_index(window.argmax(), window.shape)
        assert abs(int(y) - 6 + cy - y) <= 1 and abs(int(x) - 6 + cx - x) <= 1
    # the inverse solves T(x) = p, and the dense displacement says the same
    np.testing.assert_allclose(t.points_to_moving(mapped), points, atol=1e-3)
    u = t.displacement()
    assert u.shape == (*fixed_shape, 2)
    xi, yi = np.round(mapped[0]).astype(int)
    np.testing.assert_allclose(np.array([xi, yi]) + u[yi, xi], t.points_to_moving(np.array([[xi, yi]]))[0], atol=1e-3)


def test_warp_keeps_rgb_dtype_and_label_ids(birl):
    s, moving = make_known_pair(birl["image"], ROTATE_SCALE)
    assert moving.dtype == np.uint8 and moving.shape == birl["image"].shape
    labels = np.zeros(birl["image"].shape[:2], np.uint16)
    labels[100:200, 100:300], labels[300:400, 400:600] = 7, 300
    warped = s.warp_labels(labels)
    assert set(np.unique(warped)) <= {0, 7, 300} and {7, 300} <= set(np.unique(warped))


# -- recovery of known deformations -------------------------------------------------------------------------------
def _tre_after(result_deformation: Deformation, s: Deformation, fixed_landmarks: np.ndarray) -> tuple[float, float]:
    true_moving = s.points_to_fixed(fixed_landmarks)  # where each fixed landmark sits in the moving image
    before = np.linalg.norm(true_moving - fixed_landmarks, axis=1).mean()
    after = np.linalg.norm(result_deformation.points_to_fixed(true_moving) - fixed_landmarks, axis=1).mean()
    return float(before), float(after)


def test_known_affine_is_recovered_from_region_pairs(birl):
    s, moving = make_known_pair(birl["image"], ROTATE_SCALE)
    pairs = pairs_from_superpixels(birl["image"], s)
    result = register(birl["image"], moving, prompts=pairs, method="prompts")
    before, after = _tre_after(result.deformation, s, birl["landmarks"])
    assert before > 20
    assert after < 3.0, f"TRE {before:.1f} -> {after:.2f} px"
    assert np.mean(result.pair_dice_after) > np.mean(result.pair_dice_before) + 0.1


def test_known_elastic_deformation_is_recovered_from_region_pairs(birl):
    s, moving = make_known_pair(birl["image"], ROTATE_SCALE, amplitude=0.03)
    pairs = pairs_from_superpixels(birl["image"], s)
    # a lighter smoothness than the default (0.1, chosen against folding on the real pairs with noisy regions):
    # measured 3.9 px affine only -> 2.2 px dense here (3.3 px at the default)
    dense = register(
        birl["image"], moving, prompts=pairs, method="prompts", options=RegistrationOptions(smoothness=0.02)
    )
    affine_only = register(
        birl["image"], moving, prompts=pairs, method="prompts", options=RegistrationOptions(dense=False)
    )
    before, after = _tre_after(dense.deformation, s, birl["landmarks"])
    _, after_affine = _tre_after(affine_only.deformation, s, birl["landmarks"])
    assert after < 3.0, f"TRE {before:.1f} -> {after:.2f} px (affine only {after_affine:.2f})"
    assert after < 0.75 * after_affine
    # a smooth, invertible field: no folding
    assert dense.deformation.jacobian_determinant().min() > 0


def test_automatic_regions_with_litemedsam_recover_affine(birl, litemedsam):
    """The offline default end to end: LiteMedSAM regions on both images, matched, transform fitted."""
    s, moving = make_known_pair(birl["image"], ROTATE_SCALE)
    result = register(birl["image"], moving, segmenter=litemedsam, method="prompts")
    assert len(result.pairs) >= 3
    assert result.pairs[0].prompt == "global"
    before, after = _tre_after(result.deformation, s, birl["landmarks"])
    # measured: 26.2 -> 15.6 px (pair Dice 0.78 -> 0.85); LiteMedSAM regions of one image are imprecise correspondences
    assert after < 0.8 * before, f"TRE {before:.1f} -> {after:.2f} px"
    assert np.mean(result.pair_dice_after) > np.mean(result.pair_dice_before)


def test_intensity_route_repeats(birl):
    """SimpleITK's multi-threaded sampled metric made one affine stage land at 1.4 % or 4.1 % rTRE on the same pair;
    every stage now runs single-threaded with a fixed sampling seed: exactly repeatable, B-spline stage included
    (on two threads its float noise once grew into a degenerate field, issue 14)."""
    _, moving = make_known_pair(birl["image"], ROTATE_SCALE)
    affine_only = RegistrationOptions(intensity_bspline=False, intensity_max_side=256)
    first, second = (register(birl["image"], moving, method="intensity", options=affine_only) for _ in range(2))
    np.testing.assert_array_equal(first.deformation.affine, second.deformation.affine)
    with_bspline = RegistrationOptions(intensity_max_side=256)
    first, second = (register(birl["image"], moving, method="intensity", options=with_bspline) for _ in range(2))
    np.testing.assert_array_equal(first.displacement, second.displacement)


def test_intensity_route_running_ahead_gives_the_same_result(birl):
    """The baseline start is refined (affine and B-spline) while the region route runs: whether the later start
    wins (the true transform) or loses (a 120 px shift), the result is the one of all starts ranked at once. (With the
    regular-step affine stage, which stops short of the true transform from the moments start, so that the later
    start can win; the default gradient-first stage reaches it from both.)"""
    _, moving = make_known_pair(birl["image"], ROTATE_SCALE)
    opts = RegistrationOptions(intensity_max_side=128, affine_optimizer="regular_step")
    images = IntensityImages.from_images(birl["image"], moving, opts.intensity_max_side)
    shape = birl["image"].shape[:2]
    shifted = np.array([[1.0, 0.0, 120.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    winners = []
    for later in (np.linalg.inv(ROTATE_SCALE), shifted):
        start = {"later": Deformation.from_pixel_affine(later, shape, shape)}
        at_once = intensity_route(images, opts, {"moments": None, **start})
        ahead = intensity_route(images, opts, {"moments": None}, later_starts=lambda start=start: start)
        assert ahead[1:] == at_once[1:]
        np.testing.assert_array_equal(ahead[0].displacement(), at_once[0].displacement())
        winners.append(ahead[1])
    assert winners == ["later", "moments"]


def test_region_route_beside_the_background_runs_torch_on_one_thread(birl):
    """While SimpleITK runs ahead in the background, the region route's torch work runs on one thread (with two,
    each op waits at its thread barrier for a busy core); the caller's setting is restored afterwards."""
    opts = RegistrationOptions(intensity_max_side=96, intensity_bspline=False)
    images = IntensityImages.from_images(birl["image"], birl["image"], opts.intensity_max_side)
    seen: list[int] = []

    def later_starts() -> dict:
        seen.append(torch.get_num_threads())
        return {}

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        intensity_route(images, opts, {"moments": None}, later_starts=later_starts)
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


def test_a_stopped_bspline_stage_ends_quietly(birl, capsys):
    """The B-spline stage running ahead stops once its start has lost (LBFGS-B ignores SimpleITK's own stop): at its
    next iteration, without SimpleITK printing the stop as an error, and the excepthook is left as it was."""
    opts = RegistrationOptions(intensity_max_side=96)
    images = IntensityImages.from_images(birl["image"], birl["image"], opts.intensity_max_side)
    stop = threading.Event()
    stop.set()
    hook = sys.excepthook
    with pytest.raises(StageStopped):
        intensity_stage(images, opts, initial=None, affine=False, bspline=True, stop=stop)
    assert sys.excepthook is hook and capsys.readouterr().err == ""


def test_region_start_competes_and_the_default_affine_stage_converges_on_a_rotated_lesion(shared_data, litemedsam):
    """The real HE / proSPC lesion pair (BIRL, 78 landmarks), rotated by ~10 degrees. SimpleITK's regular-step
    affine stage stops halfway from its moments start (35 px); the region pair's principal axes give another start,
    refined alike, and the image similarity (not the landmarks) picks between them. The default affine stage
    (gradient descent with its step estimated, then regular-step) gets there from the moments start.

    Which start wins under the regular-step stage is not asserted: on an AVX-512 Xeon the region start won (7.5 px),
    on an AMD EPYC without AVX-512 the encoder's float32 rounding moves the regions and the moments start wins by
    NMI 1.0827 against 1.0798."""
    root = shared_data / "registration_birl" / "data-images" / "lesions_" / "scale-5pc"
    fixed, moving = read_image(root / "Izd2-29-041-w35_HE.jpg"), read_image(root / "Izd2-29-041-w35_proSPC.jpg")
    fixed_xy, moving_xy = paired_landmarks(
        read_landmarks(root / "Izd2-29-041-w35_HE.csv"), read_landmarks(root / "Izd2-29-041-w35_proSPC.csv")
    )
    # the affine stages alone (what this is about): no B-spline stage, no joint refinement after them, and no
    # rotation search (since bug hunt 2 its 350 deg start competes and reaches 6.9 px under either optimizer)
    affine = {"intensity_bspline": False, "joint_refinement": False, "global_search": False}
    regular_step = RegistrationOptions(affine_optimizer="regular_step", **affine)
    baseline = register(fixed, moving, method="intensity", options=regular_step)
    ours = register(fixed, moving, segmenter=litemedsam, method="prompts+intensity", options=regular_step)
    converged = register(fixed, moving, method="intensity", options=RegistrationOptions(**affine))

    def tre(result) -> float:
        return float(np.linalg.norm(result.moving_points_to_fixed(moving_xy) - fixed_xy, axis=1).mean())

    before = float(np.linalg.norm(moving_xy - fixed_xy, axis=1).mean())
    # measured: 76.4 px before, 35.2-35.9 px regular-step intensity alone, 7.0 px gradient first from the moments start
    # with the B-spline stage and the joint refinement after them; affine stages alone 36.1 px and 6.9 px (26 -> 17 s)
    assert {"moments", "regions"} <= set(ours.start_scores)  # the region start competed
    assert ours.start_scores[ours.start] == max(ours.start_scores.values())  # chosen by image similarity
    # the regular-step stage stops about halfway (36 px of 76); 0.6 leaves room for another CPU's rounding
    assert tre(ours) <= tre(baseline) + 1.0 and tre(baseline) < 0.6 * before, (before, tre(baseline), tre(ours))
    assert converged.start == "moments" and tre(converged) < 0.5 * tre(baseline), (tre(converged), tre(baseline))


def test_joint_refinement_beats_the_intensity_baseline_on_the_kidney_pair(shared_data, litemedsam):
    """The real HE / PanCytokeratin rat-kidney pair (BIRL, 69 corresponding landmarks): the baseline's own start wins
    there, and the joint refinement (local NCC at 512 px + region-pair Dice + bending) then lowers the TRE below the
    SimpleITK baseline's; it is kept because the image similarity (NMI, no landmarks) says so."""
    root = shared_data / "registration_birl" / "data-images" / "rat-kidney_" / "scale-5pc"
    fixed, moving = read_image(root / "Rat-Kidney_HE.jpg"), read_image(root / "Rat-Kidney_PanCytokeratin.jpg")
    fixed_xy, moving_xy = paired_landmarks(
        read_landmarks(root / "Rat-Kidney_HE.csv"),
        read_landmarks(root / "Rat-Kidney_PanCytokeratin.csv"),
        allow_truncate=True,
    )
    # the SimpleITK baseline: no search, no refinement (the image route now has both)
    v1 = RegistrationOptions(global_search=False, joint_refinement=False)
    baseline = register(fixed, moving, method="intensity", options=v1)
    ours = register(fixed, moving, segmenter=litemedsam, method="prompts+intensity")

    def tre(result) -> float:
        return float(np.linalg.norm(result.moving_points_to_fixed(moving_xy) - fixed_xy, axis=1).mean())

    # measured: 28.0 px before, 4.82 px intensity alone, 4.44 px with the joint refinement
    assert ours.refinement["accepted"] and ours.refinement["score_after"] > ours.refinement["score_before"]
    assert tre(ours) < 0.96 * tre(baseline) < 0.2 * float(np.linalg.norm(moving_xy - fixed_xy, axis=1).mean())
    assert ours.deformation.jacobian_determinant().min() > 0


def test_simpleitk_baseline_recovers_affine(birl):
    s, moving = make_known_pair(birl["image"], ROTATE_SCALE)
    result = register(birl["image"], moving, method="intensity", options=RegistrationOptions(intensity_bspline=False))
    before, after = _tre_after(result.deformation, s, birl["landmarks"])
    assert after < 3.0, f"TRE {before:.1f} -> {after:.2f} px"


def test_landmark_errors_rtre_uses_fixed_diagonal():
    errors = landmark_errors(np.zeros((2, 2)), np.array([[3.0, 4.0], [0.0, 0.0]]), image_diagonal((300, 400)))
    assert errors["tre_mean"] == pytest.approx(2.5)
    assert errors["rtre_mean"] == pytest.approx(2.5 / 500)
    assert errors["tre_max"] == pytest.approx(5.0)


# -- bad inputs ---------------------------------------------------------------------------------------------------
def test_different_ndim_is_refused():
    with pytest.raises(PromptsegError, match=r"moving has shape \(5, 64, 64\).*pick one plane"):
        register(np.zeros((64, 64)), np.zeros((5, 64, 64)), prompts=[(np.ones((64, 64)), np.ones((64, 64)))])


def test_an_image_against_itself_stays_as_it_is_and_reads_good(birl):
    """The sampled-MI optimizer drifted from the optimum on an aligned pair (NMI 2.000 -> 1.959, verdict "poor");
    the images as given now compete with every refined start, and the verdict reads their similarity."""
    image = birl["image"]
    result = register(image, image)
    assert result.start == "as given"
    assert np.abs(result.displacement).max() < 1e-3
    assert result.quality["kept_as_given"] and result.quality["verdict"] == "good"
    assert result.quality["similarity_after"] == pytest.approx(2.0, abs=1e-3)


def test_a_tiny_image_is_refused_before_simpleitk_fails_on_it(birl):
    """A 20 px moving image against a histology section stopped with SimpleITK's "All samples map outside moving
    image buffer" traceback; now one line names the image and the size the intensity stage would see. What counts
    is that shrunk size: 100 px against a 48x larger image is as small, 20 px against 20 px is not."""
    fixed = birl["image"]  # 600 x 800
    tissue = fixed[250:350, 350:450]
    message = r"moving \({} px\) is too small for the intensity stage.* that leaves it {} px"
    with pytest.raises(PromptsegError, match=message.format("16 x 16", "8 x 8")):
        register(fixed, tissue[:16, :16])
    big = np.kron(fixed[:, :, 0], np.ones((6, 6), fixed.dtype))  # 3600 x 4800
    with pytest.raises(PromptsegError, match=message.format("100 x 100", "8 x 8")):
        register(big, tissue[..., 0])
    # two 20 px images: SimpleITK stops on some starts (it stopped the whole run); those are rejected stages, not
    # degenerate results, and the run answers
    result = register(tissue[:20, :20], tissue[5:25, 5:25])
    stopped = [s for s in result.stages if "SimpleITK stopped" in (s["reason"] or "")]
    assert stopped and not any(s["degenerate"] or s["accepted"] for s in stopped)
    assert result.quality["verdict"] in ("good", "check", "poor")
    for blank in (np.zeros_like(fixed), np.full_like(fixed, (200, 0, 0))):  # black, and one colour: flat in gray
        with pytest.raises(PromptsegError, match=r"moving holds one value everywhere \(in gray\)"):
            register(fixed, blank)
    with pytest.raises(PromptsegError, match="moving is 5 x 5 px: too small to register"):
        register(fixed, tissue[:5, :5], method="prompts", prompts=[(np.ones((600, 800)), np.ones((5, 5)))])
    # two images small in themselves: no crop of the other one helps, and the message does not say it would
    with pytest.raises(PromptsegError, match=r"fixed is 8 x 8 px: too small to register \(the intensity stage") as err:
        register(tissue[:8, :8], tissue[2:10, 2:10])
    assert "crop" not in str(err.value)


def test_empty_region_set_is_refused(birl):
    small = birl["image"][::4, ::4]
    with pytest.raises(PromptsegError, match="empty region set: the region source found no region in the fixed"):
        register(small, small, prompts=lambda image: [])
    with pytest.raises(PromptsegError, match="empty list"):
        register(small, small, prompts=[])
    with pytest.raises(PromptsegError, match="empty mask in a region pair"):
        register(small, small, prompts=[(np.zeros(small.shape[:2], bool), np.ones(small.shape[:2], bool))])


def test_unknown_method_and_unanswerable_text_prompt_are_refused(birl, tmp_path):
    small = birl["image"][::4, ::4]
    with pytest.raises(PromptsegError, match="affine_optimizer must be one of"):
        register(small, small, method="prompts", options=RegistrationOptions(affine_optimizer="adam"))
    with pytest.raises(PromptsegError, match="method must be one of"):
        register(small, small, method="magic")
    # offline, no text-model weights and an empty library: the route chooser's message, naming the prompt
    with pytest.raises(PromptsegError, match="text prompt 'gland': no GroundingDINO weights.*promptseg library add"):
        register(small, small, prompts="gland", library=tmp_path / "empty")
    # the default library starts with the starter 'nucleus' exemplar only: 'gland' is refused by name
    with pytest.raises(PromptsegError, match="no reference-library entry matches 'gland'"):
        register(small, small, prompts="gland")


def test_a_region_route_that_finds_nothing_stops_the_intensity_runs_beside_it(birl, monkeypatch):
    """The region route runs while the intensity starts are refined in the background. When it found no region
    (a text prompt answered in one image only), its error came only after those refinements had run to their end:
    minutes on a slide, for a run that was failing. They now stop at their next iteration."""
    from napari_promptseg.methods.registration import intensity

    outcomes: list[str] = []
    stage = intensity.intensity_stage

    def recorded(*args, **kwargs):
        try:
            result = stage(*args, **kwargs)
        except intensity.StageStopped:
            outcomes.append("stopped")
            raise
        outcomes.append("finished")
        return result

    monkeypatch.setattr(intensity, "intensity_stage", recorded)
    image = birl["image"][::2, ::2]
    with pytest.raises(PromptsegError, match="empty region set"):
        register(image, image, prompts=lambda image: [])
    assert outcomes and "finished" not in outcomes, outcomes
