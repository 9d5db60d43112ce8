"""Same inputs, same outputs, bit for bit (issue 14, defect 7), and a degenerate stage never becomes the result.

The same CIMA lung-lesion pair registered twice gave rTRE 0.0233 in one run and 0.0309 in another: SimpleITK's
B-spline stage ran on two threads, whose float noise sometimes grew into a different (even degenerate) field.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_promptseg._sample_data import nuclei
from napari_promptseg.io import read_image
from napari_promptseg.methods.registration import RegistrationOptions, register
from napari_promptseg.methods.registration import intensity as intensity_module
from napari_promptseg.methods.warp import Deformation, degenerate_reason

CIMA = "registration_cima_lung_lesion_1/scale-5pc"


@pytest.fixture(scope="module")
def cima(shared_data):
    root = shared_data / CIMA
    fixed = read_image(root / "29-041-Izd2-w35-He-les1_gaussian-filtered.jpg")
    moving = read_image(root / "29-041-Izd2-w35-Cc10-5-les1.jpg")
    return fixed, moving


def test_region_route_registration_repeats_bit_for_bit(cima, litemedsam):
    """The region route (regions, several intensity starts, B-spline, joint refinement) twice on the real pair: the
    default's with prompts (the intensity route alone repeats too: test_registration_v2)."""
    fixed, moving = cima
    first, second = (register(fixed, moving, segmenter=litemedsam, method="prompts+intensity") for _ in range(2))
    assert np.array_equal(first.displacement, second.displacement)
    assert first.start == second.start and first.start_scores == second.start_scores
    assert first.refinement == second.refinement and first.stages == second.stages
    assert first.pair_dice_after == second.pair_dice_after
    # and the result is a registration, not a degenerate field (the bad run had NMI 0.0 and pair Dice 0.0)
    assert all(s["accepted"] or not s["degenerate"] for s in first.stages), first.stages
    assert first.refinement["score_before"] > 1.0 and np.mean(first.pair_dice_after) > 0.5


def test_oneshot_and_text_repeat_bit_for_bit(litemedsam, tmp_path):
    from napari_promptseg.io.library import ReferenceLibrary
    from napari_promptseg.methods.oneshot import segment_like
    from napari_promptseg.methods.text import segment_text

    (image, _, _), (truth, _, _) = nuclei()
    reference, target = image[:, :128], image[:, 128:]
    ref_labels = truth[:, :128]
    runs = []
    for _ in range(2):
        litemedsam.cache.clear()  # the second run encodes again, it does not reuse the first run's embedding
        runs.append(segment_like(reference, ref_labels > 0, target, segmenter=litemedsam)[0].labels)
    assert np.array_equal(*runs)
    library = ReferenceLibrary.open(tmp_path / "library")
    library.add("nucleus", reference, ref_labels > 0, "cell nuclei", instances=True)
    runs = []
    for _ in range(2):  # an entry saved with "many instances": the instance matcher answers
        litemedsam.cache.clear()
        runs.append(segment_text(target, "nuclei", route="library", library=library, segmenter=litemedsam))
    assert np.array_equal(runs[0].labels, runs[1].labels) and runs[0].labels.max() > 3


# -- degenerate stages --------------------------------------------------------------------------------------------
def _shape() -> tuple[int, int]:
    return (120, 160)


def test_degenerate_reason_names_folding_outside_and_nan():
    shape = _shape()
    identity = Deformation.identity(shape, shape)
    assert degenerate_reason(identity) is None
    far = Deformation.from_pixel_affine(np.array([[1, 0, 130.0], [0, 1, 0], [0, 0, 1]]), shape, shape)
    assert "outside the moving image" in degenerate_reason(far)
    folded = Deformation(shape, shape, identity.affine, np.zeros((12, 16, 2), np.float32))
    folded.residual[:, ::2, 0] = 0.4  # columns that overtake their neighbours: the map folds
    assert degenerate_reason(folded).startswith("folds")
    broken = Deformation(shape, shape, identity.affine, np.full((12, 16, 2), np.nan, np.float32))
    assert "non-finite" in degenerate_reason(broken)
    half = Deformation.from_pixel_affine(np.array([[1, 0, 100.0], [0, 1, 0], [0, 0, 1]]), shape, shape)
    assert degenerate_reason(half) is None  # 38 % inside: legal on its own ...
    assert "before this stage" in degenerate_reason(half, identity)  # ... not as a refinement of the identity


def test_a_degenerate_bspline_stage_gives_way_to_the_affine_stage(cima, monkeypatch):
    """The stage's own output is replaced by a field that pushes the image out of the frame (what the bad run's
    B-spline did): the affine result is kept and the report says why."""
    fixed, moving = cima
    real_stage = intensity_module.intensity_stage

    def bad_bspline(images, opts, *, initial, affine, bspline, **kwargs):
        found = real_stage(images, opts, initial=initial, affine=affine, bspline=bspline, **kwargs)
        if bspline:
            found.residual = np.full((8, 8, 2), 1.6, np.float32)  # shifted by 80 % of the moving image
        return found

    options = RegistrationOptions(
        intensity_max_side=192, intensity_iterations=20, bspline_iterations=20, joint_refinement=False
    )
    monkeypatch.setattr(intensity_module, "intensity_stage", bad_bspline)
    result = register(fixed, moving, method="intensity", options=options)
    monkeypatch.undo()
    affine_only = register(
        fixed,
        moving,
        method="intensity",
        options=RegistrationOptions(
            intensity_max_side=192, intensity_iterations=20, intensity_bspline=False, joint_refinement=False
        ),
    )
    assert result.stages[-1]["stage"] == "bspline" and not result.stages[-1]["accepted"]
    assert "outside the moving image" in result.stages[-1]["reason"]
    assert any("bspline stage rejected as degenerate" in w for w in result.warnings)
    assert np.array_equal(result.displacement, affine_only.displacement)


def test_the_rotation_search_gives_the_same_starts_whatever_the_blas_threads(shared_data):
    """The search's centroids were BLAS dot products, which OpenBLAS splits among $OMP_NUM_THREADS threads: the
    lesions pair's rotated start moved by a few ulps between 1 and 2 threads, and the affine stage made that 0.0049
    against 0.0051 rTRE. Each thread count runs in its own process (OpenBLAS reads it at start)."""
    import os
    import subprocess
    import sys

    root = shared_data / "registration_birl" / "data-images" / "lesions_" / "scale-5pc"
    script = (
        "import sys, hashlib\n"
        "from napari_promptseg.io import read_image\n"
        "from napari_promptseg.models.preprocessing import as_channels_last\n"
        "from napari_promptseg.methods.registration import RegistrationOptions\n"
        "from napari_promptseg.methods.registration.intensity import IntensityImages\n"
        "from napari_promptseg.methods.registration.search import rotation_flip_search\n"
        "opts = RegistrationOptions()\n"
        "pair = [as_channels_last(read_image(p)) for p in sys.argv[1:3]]\n"
        "images = IntensityImages.from_images(*pair, opts.intensity_max_side, opts.gray)\n"
        "starts, _ = rotation_flip_search(images, opts)\n"
        "print(sorted((k, hashlib.sha256(v.affine.tobytes()).hexdigest()) for k, v in starts.items()))\n"
    )
    paths = [str(root / "Izd2-29-041-w35_HE.jpg"), str(root / "Izd2-29-041-w35_proSPC.jpg")]
    outputs = []
    for threads in ("1", "2"):
        env = {**os.environ, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
        run = subprocess.run([sys.executable, "-c", script, *paths], capture_output=True, text=True, env=env)
        assert run.returncode == 0, run.stderr[-2000:]
        outputs.append(run.stdout.strip().splitlines()[-1])
    assert outputs[0] == outputs[1] and "search" in outputs[0]


def test_a_channels_first_image_reaches_the_model_as_the_same_image_channels_last():
    """segment_instances_like of a (C, Y, X) image with channel_axis=0 labelled 122 px otherwise (and numbered 9% of
    the pixels' objects otherwise) than the same image given channels last, contiguous, as the CLI reads its
    references: the channels-last view of it was strided, and float sums over a strided view differ in their last
    bits. as_channels_last hands on a contiguous array (the labels themselves: tests/test_widget_oneshot.py's
    multichannel test, widget = function = CLI)."""
    from napari_promptseg.models.preprocessing import as_channels_last

    (image, _, _), _ = nuclei()
    cyx = np.stack([image, image[::-1]]).astype(np.float32)
    hwc = as_channels_last(cyx, channel_axis=0)
    assert hwc.flags.c_contiguous
    np.testing.assert_array_equal(hwc, np.moveaxis(cyx, 0, -1))
