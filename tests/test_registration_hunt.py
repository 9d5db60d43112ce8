"""Registration bug hunt 2: what a demanding user found on real pixels — objects on white turned or mirrored, dark
beads on a bright field, quality figures of two pixel sizes."""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

import napari_promptseg
from napari_promptseg.cli import main
from napari_promptseg.errors import CancelledError, PromptsegError
from napari_promptseg.io import read_image
from napari_promptseg.io.landmarks import read_landmarks, write_landmarks
from napari_promptseg.io.layer_data import image_layer_data, tiff_layer_data
from napari_promptseg.methods.registration import (
    IntensityImages,
    RegistrationOptions,
    quality_report,
    register,
    to_gray,
)
from napari_promptseg.methods.registration.quality import quality_line
from napari_promptseg.methods.warp import Deformation

from .conftest import two_channel_pyramid

SAMPLE = Path(napari_promptseg.__file__).parent / "sample_data"
#: affine stages only, on small work images: the start is what is tested
AFFINE_ONLY = RegistrationOptions(intensity_max_side=192, intensity_bspline=False, joint_refinement=False)


@pytest.fixture(scope="module")
def sample():
    """The bundled sample pair (BIRL's artificial objects on white) and its landmarks."""
    fixed, moving = read_image(SAMPLE / "registration_fixed.jpg"), read_image(SAMPLE / "registration_moving.jpg")
    lf, lm = read_landmarks(SAMPLE / "registration_fixed.csv").xy, read_landmarks(SAMPLE / "registration_moving.csv").xy
    return fixed, moving, lf, lm


def _turned(moving: np.ndarray, lm: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:
    h, w = moving.shape[:2]
    if how == "rot90":  # np.rot90 turns counter-clockwise: (x, y) -> (y, w - 1 - x)
        return np.ascontiguousarray(np.rot90(moving)), np.stack([lm[:, 1], w - 1 - lm[:, 0]], 1)
    if how == "rot180":
        return np.ascontiguousarray(moving[::-1, ::-1]), np.stack([w - 1 - lm[:, 0], h - 1 - lm[:, 1]], 1)
    return np.ascontiguousarray(moving[:, ::-1]), np.stack([w - 1 - lm[:, 0], lm[:, 1]], 1)  # mirrored


def test_objects_on_white_are_tissue_bright(sample):
    """Objects on a white field covering more than half the image: the medians of border and image tie; the image
    was left uninverted, so the moments start and the rotation search followed the white background."""
    gray = to_gray(sample[0])
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    assert np.median(border) < 0.05 and gray.max() > 0.9


@pytest.mark.parametrize("how", ["rot90", "rot180", "mirrored"])
def test_a_turned_or_mirrored_pair_of_objects_on_white_is_found(sample, how):
    """The sample pair with its moving image turned by 90 / 180 deg or mirrored came out mirrored, 262-394 px off,
    and read "good"."""
    fixed, moving, lf, lm = sample
    moving, lm = _turned(moving, lm, how)
    result = register(fixed, moving, options=AFFINE_ONLY)
    error = np.linalg.norm(result.moving_points_to_fixed(lm) - lf, axis=1)
    assert np.median(error) < 4.0, (np.median(error), result.start, result.start_scores)
    assert result.quality["mirrored"] == (how == "mirrored") and result.quality["verdict"] == "good", result.quality


def test_a_mirrored_result_barely_above_an_unmirrored_start_reads_check(sample):
    """A mirrored result is good only when its start aligns the images clearly better than the best unmirrored
    start, both at the stage where they competed: the final similarity includes the B-spline and joint stages only
    the winner ran (a start that won by 0.01 and then gained 0.05 read as a 0.06 margin)."""
    fixed, moving, _, _ = sample
    images = IntensityImages.from_images(fixed, moving, 192)
    h, w = fixed.shape[:2]
    mirror = Deformation.from_pixel_affine(np.array([[-1.0, 0, w - 1], [0, 1, 0], [0, 0, 1]]), (h, w), (h, w))
    after = images.score(mirror)
    won = after - 0.05  # the winner's affine-stage score; the later stages raised it to ``after``
    close = quality_report(
        images, mirror, [], start_scores={"moments": won - 0.01, "x": won}, mirrored={"x": True}, start="x"
    )
    assert close["similarity_after"] == pytest.approx(after, abs=1e-4)
    assert close["verdict"] != "good" and close["mirror_margin"] == pytest.approx(0.01, abs=1e-4), close
    assert "over the best unmirrored start" in quality_line(close)
    clear = quality_report(
        images, mirror, [], start_scores={"moments": won - 0.2, "x": won}, mirrored={"x": True}, start="x"
    )
    assert clear["mirror_margin"] == pytest.approx(0.2, abs=1e-4)
    # the winner named: a better-scoring mirrored start that lost does not stand for it
    named = quality_report(
        images,
        mirror,
        [],
        start_scores={"moments": won - 0.01, "x": won, "y": won + 0.1},
        mirrored={"x": True, "y": True},
        start="x",
    )
    assert named["mirror_margin"] == pytest.approx(0.01, abs=1e-4)


def _beads(shape=(300, 400), n=20, seed=1) -> np.ndarray:
    """Dark dots (radius 3) on a bright field: under 0.5 % of the area."""
    rng = np.random.default_rng(seed)
    image = np.full(shape, 230, np.uint8)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for y, x in rng.uniform([30, 30], [shape[0] - 30, shape[1] - 30], (n, 2)):
        image[(yy - y) ** 2 + (xx - x) ** 2 <= 9] = 40
    assert (image < 230).mean() < 0.005
    return image


def test_small_dark_objects_on_a_bright_field_are_registered():
    """They were refused as "one value everywhere": the 0.5-99.5 percentile window clipped them away."""
    fixed = _beads()
    moving = np.roll(fixed, (6, 10), (0, 1))
    gray = to_gray(fixed[..., None])
    assert gray.max() == 1.0 and np.median(gray) == 0.0  # the beads bright, the field dark
    result = register(fixed, moving, options=replace(AFFINE_ONLY, global_search=False))
    shift = result.fixed_points_to_moving(np.array([[200.0, 150.0]]))[0] - [200, 150]
    assert np.allclose(shift, [10, 6], atol=1.0), shift


def test_only_a_blank_image_holds_one_value_everywhere():
    one_square = np.full((200, 200), 200, np.uint8)
    one_square[100:110, 100:110] = 50  # 0.25 % of the area
    register(_beads((200, 200), n=4), one_square, options=replace(AFFINE_ONLY, global_search=False))
    with pytest.raises(PromptsegError, match="one value everywhere"):
        register(_beads((200, 200), n=4), np.full((200, 200), 200, np.uint8), options=AFFINE_ONLY)


def test_quality_of_a_pair_at_two_pixel_sizes_reads_as_of_one_size(sample):
    """The moving image at a quarter of the size: "before" read NMI 0 (a sixteenth of the fixed image overlapped it
    pixel for pixel) and the Jacobian 0.06 (the overall scale) for a correct result."""
    fixed, moving, lf, lm = sample
    h, w = moving.shape[:2]
    small = moving[2::4, 2::4]  # pixel (x, y) of small = (4x + 2, 4y + 2) of moving
    result = register(fixed, small, options=AFFINE_ONLY)
    error = np.linalg.norm(result.moving_points_to_fixed((lm - 2) / 4) - lf, axis=1)
    assert np.median(error) < 12.0, np.median(error)  # 2-3 px of the small image
    quality = result.quality
    assert quality["similarity_before"] > 1.0, quality
    assert 0.9 < quality["jacobian_min"] <= quality["jacobian_max"] < 1.1, quality
    assert quality["verdict"] == "good", quality


@pytest.fixture(scope="module")
def sample_files(sample, tmp_path_factory):
    """The sample pair at half size as files, with its landmarks (a CLI run in seconds)."""
    out = tmp_path_factory.mktemp("sample-half")
    paths = {}
    for role, image, xy in (("fixed", sample[0], sample[2]), ("moving", sample[1], sample[3])):
        paths[role] = out / f"{role}.tif"
        tifffile.imwrite(paths[role], image[::2, ::2])
        paths[f"lm_{role}"] = out / f"{role}.csv"
        write_landmarks(paths[f"lm_{role}"], xy / 2)
    return paths


def _cli(files, out, *more):
    return main(["register", str(files["fixed"]), str(files["moving"]), "-o", str(out), *more])


def test_a_rerun_neither_overwrites_nor_removes_files_the_user_saved_in_the_output(sample_files, tmp_path, capsys):
    """The user's own moving_warped.tif was replaced and their edited landmarks_warped.csv deleted by a rerun (any
    earlier report.json waived the mark check; the stale-landmark removal deleted whatever had that name)."""
    out = tmp_path / "out"
    landmarks = ["--landmarks-fixed", str(sample_files["lm_fixed"])]
    landmarks += ["--landmarks-moving", str(sample_files["lm_moving"])]
    assert _cli(sample_files, out, *landmarks) == 0, capsys.readouterr().err
    capsys.readouterr()
    report = (out / "report.json").read_text()

    # the user's own TIFF under our name (no mark): refused with and without landmarks, nothing written
    own = np.full((10, 10), 7, np.uint8)
    tifffile.imwrite(out / "moving_warped.tif", own)
    for more in ([], landmarks):
        assert _cli(sample_files, out, *more) == 2
        err = capsys.readouterr().err
        assert "moving_warped.tif is not an earlier output" in err and len(err.strip().splitlines()) == 1, err
        assert (tifffile.imread(out / "moving_warped.tif") == own).all()
        assert (out / "report.json").read_text() == report and (out / "landmarks_warped.csv").exists()
    (out / "moving_warped.tif").unlink()

    # an edited landmark CSV: not overwritten (a run with landmarks is refused), not removed (a run without them
    # keeps it and says so)
    edited = (out / "landmarks_warped.csv").read_text() + "99,1.0,2.0\n"
    (out / "landmarks_warped.csv").write_text(edited)
    assert _cli(sample_files, out, *landmarks) == 2
    assert "landmarks_warped.csv is not an earlier output" in capsys.readouterr().err
    assert (out / "landmarks_warped.csv").read_text() == edited and not (out / "moving_warped.tif").exists()
    assert _cli(sample_files, out) == 0
    assert f"kept {out / 'landmarks_warped.csv'}" in capsys.readouterr().err
    assert (out / "landmarks_warped.csv").read_text() == edited

    # as the earlier run wrote it, it goes (it would pass for this run's)
    (out / "landmarks_warped.csv").unlink()
    assert _cli(sample_files, out, *landmarks) == 0
    assert _cli(sample_files, out) == 0 and not (out / "landmarks_warped.csv").exists()
    assert "removed" in capsys.readouterr().err

    # another pair's run: it replaced this pair's results without a word (the files have fixed names)
    report = (out / "report.json").read_text()
    swapped = {**sample_files, "fixed": sample_files["moving"], "moving": sample_files["fixed"]}
    assert _cli(swapped, out) == 2
    err = capsys.readouterr().err
    assert f"holds the registration of {sample_files['moving']} onto {sample_files['fixed']}" in err, err
    assert (out / "report.json").read_text() == report


# tifffile's guess of a (3, Y, X) image's photometric is deprecated: the warped image says what it is
@pytest.mark.filterwarnings("error::DeprecationWarning:tifffile")
def test_channel_axis_applies_to_the_image_it_fits(sample_files, tmp_path, capsys):
    """--channel-axis 0 for a channels-first moving image beside an RGB fixed one: the fixed image was read as 300
    channels and the error pointed to --channels, which register refuses."""
    moving = np.moveaxis(tifffile.imread(sample_files["moving"]), -1, 0)
    tifffile.imwrite(tmp_path / "moving_cyx.tif", moving, photometric="minisblack")  # planes, not tifffile's RGB guess
    files = {**sample_files, "moving": tmp_path / "moving_cyx.tif"}
    assert _cli(files, tmp_path / "out", "--channel-axis", "0") == 0, capsys.readouterr().err
    assert tifffile.imread(tmp_path / "out" / "moving_warped.tif").shape == moving.shape
    five = np.concatenate([moving, moving[:2]])
    tifffile.imwrite(tmp_path / "moving_5.tif", five, photometric="minisblack")
    assert _cli({**files, "moving": tmp_path / "moving_5.tif"}, tmp_path / "out5", "--channel-axis", "0") == 2
    err = capsys.readouterr().err
    assert "5 channels on axis 0" in err and "--channels" not in err, err


def test_an_ome_zarr_folder_is_an_input(sample_files, tmp_path, capsys):
    """An existing OME-Zarr folder was reported as "input image not found"; another folder is refused clearly."""
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    root = zarr.open_group(str(tmp_path / "moving.ome.zarr"), mode="w", zarr_format=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        write_image(np.moveaxis(tifffile.imread(sample_files["moving"]), -1, 0), root, axes="cyx", fmt=FormatV04())
    files = {**sample_files, "moving": tmp_path / "moving.ome.zarr"}
    assert _cli(files, tmp_path / "out") == 0, capsys.readouterr().err
    assert _cli({**files, "moving": tmp_path}, tmp_path / "out2") == 2
    assert "a directory, not an image" in capsys.readouterr().err


def _ome_zarr(path: Path, image: np.ndarray, levels: int) -> Path:
    """An RGB image as an OME-Zarr (NGFF 0.4) of ``levels`` levels, each half the one before."""
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        write_image(
            np.moveaxis(image, -1, 0),
            root,
            axes="cyx",
            fmt=FormatV04(),
            scale_factors=[2**k for k in range(1, levels)],
            storage_options={"chunks": (1, 512, 512)},
        )
    return path


def test_an_ome_zarr_pair_is_registered_at_one_level_and_landmarks_stay_full_resolution(
    sample, tmp_path, capsys, monkeypatch
):
    """`promptseg register` read an OME-Zarr's full resolution (a slide's peaked at 4.6 GB) although the stages see
    384-1024 px; as the widget does, it now reads the coarsest level with 2048 px along its longest side, and the
    landmarks and TRE stay in full-resolution pixels. The sample pair enlarged (nearest): fixed 6x (4800 px wide:
    its 2400 px level is read, 2x coarser), moving 3x (2400 px wide: its 1200 px level is too small, full
    resolution is read), so the two factors differ."""
    fixed, moving, lf, lm = sample

    def enlarged(image: np.ndarray, k: int) -> np.ndarray:
        return np.repeat(np.repeat(image, k, 0), k, 1)

    files = {
        "fixed": _ome_zarr(tmp_path / "fixed.ome.zarr", enlarged(fixed, 6), 3),
        "moving": _ome_zarr(tmp_path / "moving.ome.zarr", enlarged(moving, 3), 2),
        "lm_fixed": write_landmarks(tmp_path / "fixed.csv", lf * 6 + 2.5),  # pixel centres of the enlarged images
        "lm_moving": write_landmarks(tmp_path / "moving.csv", lm * 3 + 1),
    }
    out = tmp_path / "out"
    landmarks = ["--landmarks-fixed", str(files["lm_fixed"]), "--landmarks-moving", str(files["lm_moving"])]
    results = []  # the RegistrationResult the CLI worked with (the real register(), kept)
    real_register = napari_promptseg.methods.registration.register
    monkeypatch.setattr(
        napari_promptseg.methods.registration,
        "register",
        lambda *a, **k: results.append(real_register(*a, **k)) or results[-1],
    )
    assert _cli(files, out, *landmarks) == 0, capsys.readouterr().err
    said = capsys.readouterr().out
    assert f"registered at pyramid level 1 of {files['fixed']} and 0 of {files['moving']}" in said, said
    report = json.loads((out / "report.json").read_text())
    assert report["registered_level"] == {
        "fixed": {"level": 1, "factors": [2.0, 2.0]},
        "moving": {"level": 0, "factors": [1.0, 1.0]},
    }
    assert report["shapes"]["fixed"] == [3600, 4800, 3]  # the input as given
    assert tifffile.imread(out / "displacement.tif").shape == (1800, 2400, 2)  # the fixed level's grid
    assert tifffile.imread(out / "moving_warped.tif").shape == (1800, 2400, 3)
    # the outputs record the level's pixel size, twice the fixed image's (uncalibrated: 1, a size of no unit), so
    # our reader opens them over the fixed image, not at half its size
    fixed_scale = image_layer_data(files["fixed"])[0][1].get("scale", [1.0, 1.0])
    for name in ("moving_warped.tif", "displacement.tif"):
        [(_, layer, _)] = tiff_layer_data(out / name)
        assert layer["scale"] == [2 * s for s in fixed_scale] and "units" not in layer, name
        # a level pixel over the centre of the 2 x 2 fixed pixels it stands for, as the labels of a level are put
        assert layer["translate"] == [0.5 * s for s in fixed_scale], name
    warped = read_landmarks(out / "landmarks_warped.csv").xy
    error = np.linalg.norm(warped - read_landmarks(files["lm_fixed"]).xy, axis=1)
    # the result says the levels read too (it said level 0: register() was given their arrays), so its default
    # factors map full-resolution points as the CLI did
    assert results[0].registered_level == report["registered_level"]
    np.testing.assert_allclose(
        results[0].moving_points_to_fixed(read_landmarks(files["lm_moving"]).xy), warped, atol=0.01
    )  # as the CSV rounds them
    after = report["landmarks"]["after"]
    # full-resolution fixed pixels: 7.7 px, 6x the 600 x 800 pair's 1.3 px (a factor left out: 1000s of px off)
    assert np.median(error) < 12 and after["tre_median"] == pytest.approx(np.median(error), abs=0.01), after
    assert report["landmarks"]["image_diagonal"] == pytest.approx(np.hypot(3600, 4800), abs=0.01)
    assert report["landmarks"]["before"]["tre_mean"] > 5 * after["tre_mean"]


def test_a_cancel_stops_the_simpleitk_stages_at_their_next_iteration(shared_data):
    """Cancel during the affine stage acted only after every start's whole stage (the widget's Cancel at 0.5 s
    stopped at 7.7 s): SimpleITK's iteration command now polls it."""
    root = shared_data / "registration_birl" / "data-images" / "lesions_" / "scale-5pc"
    fixed, moving = read_image(root / "Izd2-29-041-w35_HE.jpg"), read_image(root / "Izd2-29-041-w35_proSPC.jpg")
    asked: list[float] = []

    def progress(fraction: float, message: str) -> None:
        if message.startswith("intensity registration") and not asked:
            asked.append(time.perf_counter())  # cancel as the SimpleITK stages start

    with pytest.raises(CancelledError):
        register(fixed, moving, progress=progress, cancel=lambda: bool(asked))
    elapsed = time.perf_counter() - asked[0]
    # against the same affine stage uncancelled, timed on this machine now: a bound in seconds failed on a loaded
    # 2-core CI; stopping only after the stage takes all of it
    stage: dict[str, float] = {}

    def timing(fraction: float, message: str) -> None:
        stage[message.split(" ")[0]] = time.perf_counter()

    register(
        fixed,
        moving,
        options=replace(RegistrationOptions(), intensity_bspline=False, joint_refinement=False),
        progress=timing,
    )
    whole_stage = stage["done"] - stage["intensity"]
    # 0.26 s against 1.5 s here (load 3-6); a user's Cancel acted after the whole stage (7 s)
    assert elapsed < 0.5 * whole_stage, (elapsed, whole_stage)


@pytest.mark.parametrize("kind", ["ome.zarr", "ome.tif"])
def test_a_two_channel_pyramid_is_registered_by_its_named_channels(sample, tmp_path, capsys, kind):
    """A 2-channel OME-Zarr or pyramidal OME-TIFF (C, Y, X named by the file, read channels last) was refused as
    'a stack: pick one plane first'; now its channels are registered as a Fiji composite's are."""
    fixed, moving, lf, lm = sample

    def two_channels(rgb: np.ndarray, path: Path) -> Path:
        return two_channel_pyramid(np.ascontiguousarray(np.stack([rgb[..., 0], rgb[..., 2]])), path, kind)

    files = {
        "fixed": two_channels(fixed, tmp_path / f"fixed.{kind}"),
        "moving": two_channels(moving, tmp_path / f"moving.{kind}"),
        "lm_fixed": write_landmarks(tmp_path / "fixed.csv", lf),
        "lm_moving": write_landmarks(tmp_path / "moving.csv", lm),
    }
    out = tmp_path / "out"
    landmarks = ["--landmarks-fixed", str(files["lm_fixed"]), "--landmarks-moving", str(files["lm_moving"])]
    assert _cli(files, out, *landmarks, "--method", "intensity") == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["landmarks"]["after"]["tre_mean"] < 3 < report["landmarks"]["before"]["tre_mean"], report
    warped = tifffile.imread(out / "moving_warped.tif")
    assert warped.shape == (*moving.shape[:2], 2)
    # --channel-axis 0, the file's own order (C, Y, X): it read the channels-last level's rows as 600 channels and
    # refused ('axis 0 (600 long) cannot be the channels'); now the same registration, the channels written first
    given = ["--method", "intensity", "--channel-axis", "0"]
    assert _cli(files, tmp_path / "given", *landmarks, *given) == 0, capsys.readouterr().err
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "given" / "moving_warped.tif"), np.moveaxis(warped, -1, 0))


def test_a_five_d_ome_zarr_pair_takes_its_own_channel_axis(sample, tmp_path, capsys):
    """--channel-axis 1, the c of an OME-Zarr stored (t, c, z, y, x), was applied to its planes read (c, y, x): the
    landmark check took rows for channels and the run stopped ('image has shape (2, 600, 800): its axis 1 (600 long)
    cannot be the channels'). Now the axis counts in each image as read: the same registration as by the file's named
    axes, its landmarks checked against the 600 x 800 plane (no warning), the channels written first."""
    fixed, moving, lf, lm = sample

    def five_d(rgb: np.ndarray, path: Path) -> Path:
        cyx = np.ascontiguousarray(np.stack([rgb[..., 0], rgb[..., 2]]))
        return two_channel_pyramid(cyx, path, "ome.zarr", axes="tczyx")

    files = {
        "fixed": five_d(fixed, tmp_path / "fixed.ome.zarr"),
        "moving": five_d(moving, tmp_path / "moving.ome.zarr"),
    }
    lm_files = [write_landmarks(tmp_path / "fixed.csv", lf), write_landmarks(tmp_path / "moving.csv", lm)]
    landmarks = ["--landmarks-fixed", str(lm_files[0]), "--landmarks-moving", str(lm_files[1]), "--method", "intensity"]
    assert _cli(files, tmp_path / "named", *landmarks) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert _cli(files, tmp_path / "given", *landmarks, "--channel-axis", "1") == 0, capsys.readouterr().err
    assert "warning" not in capsys.readouterr().err
    named, given = (json.loads((tmp_path / run / "report.json").read_text()) for run in ("named", "given"))
    assert given["landmarks"]["after"] == named["landmarks"]["after"] and given["warnings"] == []
    assert given["landmarks"]["after"]["tre_mean"] < 3
    warped = tifffile.imread(tmp_path / "named" / "moving_warped.tif")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "given" / "moving_warped.tif"), np.moveaxis(warped, -1, 0))
    # one axis for two images whose channels are on different axes as read: said, naming both, before the work
    tifffile.imwrite(tmp_path / "ycx.tif", np.ascontiguousarray(np.moveaxis(warped, -1, 1)))
    files["moving"] = tmp_path / "ycx.tif"
    capsys.readouterr()
    assert _cli(files, tmp_path / "mixed", "--method", "intensity", "--channel-axis", "1") == 2
    err = capsys.readouterr().err
    assert f"channels of {files['fixed']} are its axis 0 as read, those of {files['moving']} its axis 1" in err, err


def test_register_takes_two_channels_last_as_segment_does(sample):
    """register() refused (H, W, 2) images (what read_image gives for a 2-channel OME-Zarr) as 'a stack: pick one
    plane first', while segment() reads them as two channels; now they are registered as two channels."""
    fixed, moving, lf, lm = sample
    two = [np.ascontiguousarray(image[..., [0, 2]]) for image in (fixed, moving)]
    result = napari_promptseg.register(*two, options=AFFINE_ONLY)
    mapped = result.moving_points_to_fixed(lm)
    assert np.median(np.linalg.norm(mapped - lf, axis=1)) < 3 < np.median(np.linalg.norm(lm - lf, axis=1))
    assert result.warp_image(two[1]).shape == two[1].shape


def _unread_pyramid(image: np.ndarray, factors: tuple[int, ...], reads: list) -> list:
    """``image`` enlarged by each of ``factors`` (nearest, lazily; full resolution first) then itself: the levels of
    a pyramid whose enlarged levels note any block read into ``reads`` and fail it."""
    import dask.array as da

    def unread(block: np.ndarray, block_info=None) -> np.ndarray:
        reads.append(block_info[None]["array-location"])
        raise AssertionError("a level not registered was read")

    chunks = (300, 400, *image.shape[2:])
    enlarged = [da.repeat(da.repeat(da.from_array(image, chunks=chunks), k, 0), k, 1) for k in factors]
    return [*(level.map_blocks(unread, dtype=image.dtype) for level in enlarged), image]


def test_a_pyramid_given_to_register_is_registered_at_the_clis_level_unread_at_full_resolution(sample, monkeypatch):
    """register() read a pyramid (a multiscale layer's data) whole at full resolution (a 6400 px level 0: 8.4 s,
    2.6 GB peak; a slide's could not fit) and registered it there; the CLI and the widget read the coarsest level
    with REGISTER_SIDE px along its longest side. It now reads that level (by their rule, level_for_side) and says
    which (registered_level, as the CLI's report.json): points go in and out in full-resolution pixels, and the
    warped image and labels lie on the fixed level's grid (fixed_placement). REGISTER_SIDE is the sample's size here:
    fixed 4x coarser than its full resolution, moving 2x."""
    from napari_promptseg.methods.registration import pipeline

    fixed, moving, lf, lm = sample  # 600 x 800 RGB
    monkeypatch.setattr(pipeline, "REGISTER_SIDE", 800)
    reads: list = []
    fixed_pyramid, moving_pyramid = _unread_pyramid(fixed, (4, 2), reads), _unread_pyramid(moving, (2,), reads)
    result = register(fixed_pyramid, moving_pyramid, options=AFFINE_ONLY)
    assert not reads
    assert result.registered_level == {
        "fixed": {"level": 2, "factors": [4.0, 4.0]},
        "moving": {"level": 1, "factors": [2.0, 2.0]},
    }
    assert result.deformation.fixed_shape == fixed.shape[:2] and result.deformation.moving_shape == moving.shape[:2]
    assert result.fixed_placement == {"scale": (4.0, 4.0), "translate": (1.5, 1.5)}
    # the level's own registration, its points taken and given at full resolution (a level pixel over the centre of
    # the block it stands for)
    on_levels = register(fixed, moving, options=AFFINE_ONLY)
    assert np.allclose(result.displacement, on_levels.displacement)
    full_lf, full_lm = lf * 4 + 1.5, lm * 2 + 0.5
    mapped = result.moving_points_to_fixed(full_lm)
    assert np.allclose(mapped, on_levels.moving_points_to_fixed(lm) * 4 + 1.5, atol=1e-6)
    assert np.median(np.linalg.norm(mapped - full_lf, axis=1)) < 4 * 1.5  # 4x the pair's own 1.2 px
    assert np.allclose(result.fixed_points_to_moving(full_lf), on_levels.fixed_points_to_moving(lf) * 2 + 0.5)
    # the moving pyramid is warped at its level registered; its full resolution is refused saying what to pass
    assert np.array_equal(result.warp_image(moving_pyramid), on_levels.warp_image(moving)) and not reads
    with pytest.raises(PromptsegError, match=r"registered at its pyramid level 1 \(600 x 800 px\): pass the pyramid"):
        result.warp_image(np.kron(moving, np.ones((2, 2, 1), moving.dtype)))
    # labels drawn at full resolution are put on the level registered (nearest), as the CLI's --moving-labels
    labels = (to_gray(moving) < 0.5).astype(np.uint16) * np.arange(1, 801, dtype=np.uint16)[None] // 100
    warped = result.warp_labels(np.kron(labels, np.ones((2, 2), labels.dtype)))
    assert np.array_equal(warped, on_levels.warp_labels(labels)) and warped.max() > 0
    with pytest.raises(PromptsegError, match="full resolution 1200 x 1600 px\\): give labels of either size"):
        result.warp_labels(labels[:500])


def test_a_channels_first_pyramid_is_registered_at_its_level(sample, monkeypatch):
    """A (C, Y, X) pyramid with channel_axis=0: its level is chosen by its rows and columns, not its channels."""
    from napari_promptseg.methods.registration import pipeline

    fixed, moving, _, _ = sample
    monkeypatch.setattr(pipeline, "REGISTER_SIDE", 800)
    reads: list = []
    pyramids = [
        [level.transpose(2, 0, 1) for level in _unread_pyramid(image, (2,), reads)] for image in (fixed, moving)
    ]
    result = register(*pyramids, options=AFFINE_ONLY, channel_axis=0)
    assert not reads and result.registered_level["moving"] == {"level": 1, "factors": [2.0, 2.0]}
    assert result.warp_image(pyramids[1], channel_axis=0).shape == (3, 600, 800)


def test_a_lazy_stack_is_refused_by_its_shape_unread(sample):
    """A dask stack (an OME-Zarr's (Z, Y, X), or a pyramid of them) was read whole to be refused as 'pick one plane';
    its shape says it."""
    fixed = to_gray(sample[0])
    reads: list = []
    stack = np.stack([fixed] * 3)
    lazy = _unread_pyramid(stack.transpose(1, 2, 0), (2,), reads)[0].transpose(2, 0, 1)  # (3, 1200, 1600)
    for image in (lazy, [lazy, stack]):
        with pytest.raises(PromptsegError, match=r"has shape \(3, 1200, 1600\) \(3D\).*pick one plane"):
            register(image, fixed, options=AFFINE_ONLY)
    assert not reads


def test_a_single_plane_stack_registers_as_its_plane_and_keeps_its_shape(shared_data, tmp_path):
    """A (1, H, W) image (a single-plane stack, as a TIFF or a napari layer often holds one plane) was refused by
    register() ('pick one plane of a stack first'), by warp_image ('has its channels first') and warp_labels, and by
    `promptseg register`, while segment() takes it as its plane. It registers as that plane; warp_image and
    warp_labels give it back in the shape given, (1, H, W); the CLI writes the warped plane."""
    image = read_image(shared_data / "registration_birl" / "data-images" / "images" / "artificial_reference.jpg")
    fixed = np.ascontiguousarray(image[::4, ::4, 0])
    moving = np.roll(fixed, (3, -4), axis=(0, 1))
    labels = (moving > np.median(moving)).astype(np.uint16)
    plain = register(fixed, moving, method="intensity", options=AFFINE_ONLY)
    for f, m in ((fixed[None], moving[None]), (fixed, moving[None]), (fixed[None], moving)):
        result = register(f, m, method="intensity", options=AFFINE_ONLY)
        np.testing.assert_allclose(result.displacement, plain.displacement, atol=1e-4)
    warped = result.warp_image(moving[None])
    assert warped.shape == (1, *fixed.shape)
    np.testing.assert_array_equal(warped[0], plain.warp_image(moving))
    np.testing.assert_array_equal(result.warp_labels(labels[None]), plain.warp_labels(labels)[None])
    for name, data in (("fixed.tif", fixed[None]), ("moving.tif", moving[None]), ("labels.tif", labels[None])):
        tifffile.imwrite(tmp_path / name, data)
    xy = np.array([[40.0, 30.0], [150.0, 40.0], [100.0, 120.0]])
    np.savetxt(tmp_path / "fixed.csv", xy, delimiter=",", header="X,Y", comments="")
    np.savetxt(tmp_path / "moving.csv", xy + [-4, 3], delimiter=",", header="X,Y", comments="")
    out = tmp_path / "out"
    argv = ["register", str(tmp_path / "fixed.tif"), str(tmp_path / "moving.tif"), "-o", str(out)]
    argv += ["--landmarks-fixed", str(tmp_path / "fixed.csv"), "--landmarks-moving", str(tmp_path / "moving.csv")]
    assert main([*argv, "--moving-labels", str(tmp_path / "labels.tif"), "--method", "intensity"]) == 0
    assert read_image(out / "moving_warped.tif").shape == (1, *fixed.shape)
    assert read_image(out / "labels_warped.tif").shape == fixed.shape
    report = json.loads((out / "report.json").read_text())["landmarks"]
    assert report["image_diagonal"] == pytest.approx(np.hypot(*fixed.shape))  # of the plane, not of (1, H)
    assert report["after"]["tre_mean"] < 0.5 < report["before"]["tre_mean"]
