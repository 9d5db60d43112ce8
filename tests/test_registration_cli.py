"""`promptseg register` end to end on a real BIRL pair with landmarks, and its bad-input exits."""

from __future__ import annotations

import csv
import inspect
import json

import numpy as np
import pytest
import tifffile

from napari_promptseg.cli import main
from napari_promptseg.io import read_image
from napari_promptseg.io.layer_data import tiff_layer_data


def _birl(shared_data):
    root = shared_data / "registration_birl" / "data-images"
    return {
        "fixed": root / "images" / "artificial_reference.jpg",
        "moving": root / "images" / "artificial_moving-affine.jpg",
        "lm_fixed": root / "landmarks" / "artificial_reference.csv",
        "lm_moving": root / "landmarks" / "artificial_moving-affine.csv",
        "kidney_fixed": root / "rat-kidney_" / "scale-5pc" / "Rat-Kidney_HE.csv",
        "kidney_moving": root / "rat-kidney_" / "scale-5pc" / "Rat-Kidney_PanCytokeratin.csv",
    }


def test_register_cli_writes_warped_image_field_landmarks_and_report(shared_data, tmp_path, capsys):
    d = _birl(shared_data)
    out = tmp_path / "out"
    code = main(
        [
            "register", str(d["fixed"]), str(d["moving"]), "-o", str(out), "--device", "cpu",
            "--method", "prompts+intensity",
            "--landmarks-fixed", str(d["lm_fixed"]), "--landmarks-moving", str(d["lm_moving"]),
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    fixed, moving = read_image(d["fixed"]), read_image(d["moving"])
    warped = tifffile.imread(out / "moving_warped.tif")
    assert warped.shape == fixed.shape and warped.dtype == moving.dtype
    field = tifffile.imread(out / "displacement.tif")
    assert field.shape == (*fixed.shape[:2], 2) and field.dtype == np.float32
    # napari (the plugin's reader) opens the field as its two channels, dx and dy, on the fixed grid; tifffile's
    # default wrote H pages of (W, 2), a stack of H planes 2 px wide
    ((data, kwargs, kind),) = tiff_layer_data(out / "displacement.tif")
    assert kind == "image" and np.shape(data) == field.shape and kwargs["channel_axis"] == 2
    assert kwargs["name"] == ["displacement dx (columns)", "displacement dy (rows)"]
    report = json.loads((out / "report.json").read_text())
    lm = report["landmarks"]
    assert lm["pairs_compared"] == 12
    # measured 73.2 -> 4.0 px: the starts are judged by image similarity (the baseline's moments start wins here)
    # and the SimpleITK stages repeat exactly, so the bound no longer has to allow for an unstable region start
    assert lm["after"]["tre_mean"] < 0.1 * lm["before"]["tre_mean"]
    assert report["start"]["chosen"] in report["start"]["scores"]
    refinement = report["refinement"]  # kept only if the image score rose
    assert refinement["accepted"] == (refinement["score_after"] > refinement["score_before"])
    assert (
        lm["after"]["rtre_mean"] == lm["after"]["tre_mean"] / lm["image_diagonal"]
        or abs(lm["after"]["rtre_mean"] * lm["image_diagonal"] - lm["after"]["tre_mean"]) < 0.05
    )
    assert report["region_pairs"]["count"] >= 1
    # readable without landmarks: the images agree better than before, nothing folds, a verdict
    quality = report["quality"]
    assert quality["similarity_after"] > quality["similarity_before"] and quality["jacobian_min"] > 0
    assert quality["verdict"] == "good", quality
    # landmarks_warped.csv keeps the input columns and index, and holds the mapped points the report measured
    rows = list(csv.reader((out / "landmarks_warped.csv").read_text().splitlines()))
    assert rows[0] == ["", "X", "Y"] and rows[1][0] == "1" and len(rows) == 13
    mapped = np.array([[float(r[1]), float(r[2])] for r in rows[1:]])
    fixed_lm = np.array(
        [[float(r[1]), float(r[2])] for r in list(csv.reader(d["lm_fixed"].read_text().splitlines()))[1:]]
    )
    assert abs(np.linalg.norm(mapped - fixed_lm, axis=1).mean() - lm["after"]["tre_mean"]) < 0.01
    # the displacement file agrees with the mapped landmarks: x + u(x) lands on the moving landmark
    moving_lm = np.array(
        [[float(r[1]), float(r[2])] for r in list(csv.reader(d["lm_moving"].read_text().splitlines()))[1:]]
    )
    xi, yi = np.round(mapped).astype(int).T
    inside = (xi >= 0) & (yi >= 0) & (xi < fixed.shape[1]) & (yi < fixed.shape[0])
    back = np.stack([xi, yi], 1)[inside] + field[yi[inside], xi[inside]]
    assert np.abs(back - moving_lm[inside]).max() < 2.5  # rounding x to the pixel grid moves it by <= 0.71 px


def test_register_default_method_is_the_same_in_python_and_cli():
    from napari_promptseg.cli import build_parser
    from napari_promptseg.methods.registration import DEFAULT_METHOD, register

    assert build_parser().parse_args(["register", "f.png", "m.png", "-o", "out"]).method == DEFAULT_METHOD
    assert inspect.signature(register).parameters["method"].default == DEFAULT_METHOD
    from napari_promptseg.methods.registration import METHODS

    (method_option,) = [
        action
        for sub in build_parser()._subparsers._group_actions[0].choices.values()  # noqa: SLF001 - argparse's only way
        if sub.prog.endswith(" register")
        for action in sub._actions  # noqa: SLF001
        if action.dest == "method"
    ]
    assert set(method_option.choices) == set(METHODS)


def test_auto_method_uses_regions_only_for_the_users_prompts():
    from napari_promptseg.errors import PromptsegError
    from napari_promptseg.methods.registration import resolve_method

    for automatic in (None, "auto"):
        assert resolve_method("auto", automatic) == "intensity"
    pair = (np.ones((4, 4), bool), np.ones((4, 4), bool))
    for given in ("lungs", ["gland", "nuclei"], [pair], lambda image: [], []):  # [] is refused by the region route
        assert resolve_method("auto", given) == "prompts+intensity"
    assert resolve_method("prompts", None) == "prompts" and resolve_method("intensity", "lungs") == "intensity"
    with pytest.raises(PromptsegError, match="method must be one of"):
        resolve_method("magic", None)


def test_register_cli_default_uses_the_images_alone_without_a_model(shared_data, tmp_path, capsys, monkeypatch):
    """No --prompt: the default (auto) runs the intensity route, loads no segmenter and reports no region pairs.
    Its steps reach stderr as segment's do (off a terminal, a line at most every 10 s: here every step); a run was
    silent until it ended (68 s on a 8000 x 6000 pair)."""
    monkeypatch.setattr("napari_promptseg.batch.progress.LOG_STEP_EVERY_S", 0.0)
    d = _birl(shared_data)
    out = tmp_path / "out"
    args = ["register", str(d["fixed"]), str(d["moving"]), "-o", str(out)]
    code = main([*args, "--landmarks-fixed", str(d["lm_fixed"]), "--landmarks-moving", str(d["lm_moving"])])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "(intensity, TRE" in captured.out and "pairs" not in captured.out.splitlines()[0]
    assert "outside" not in captured.err  # each file's landmarks lie on its image
    steps = [line for line in captured.err.splitlines() if line.endswith("%)")]
    assert "intensity registration (SimpleITK) (9 %)" in steps and "writing the outputs (95 %)" in steps, steps
    report = json.loads((out / "report.json").read_text())
    assert report["route"] == "intensity" and report["model"] is None and report["parameters"]["prompts"] == []
    assert report["landmarks"]["after"]["tre_mean"] < 0.1 * report["landmarks"]["before"]["tre_mean"]
    assert report["quality"]["verdict"] == "good"


def test_register_cli_reads_fiji_composites_by_their_named_axes(shared_data, tmp_path, capsys):
    """Two 2-channel Fiji composites (C, Y, X, axes named in their ImageJ metadata) were refused as 3D stacks by
    `register`, which read them in file order while the batch and one-shot read them by their axis names; now they
    register as --channel-axis 0 does, and the warped image keeps the moving file's (C, Y, X) order."""
    d = _birl(shared_data)
    fixed_gray, moving_gray = (read_image(d[k]).mean(-1).astype(np.uint8) for k in ("fixed", "moving"))
    for name, gray in (("fixed", fixed_gray), ("moving", moving_gray)):
        tifffile.imwrite(
            tmp_path / f"{name}.tif", np.stack([gray, 255 - gray // 2]), imagej=True, metadata={"axes": "CYX"}
        )
    pair = ["register", str(tmp_path / "fixed.tif"), str(tmp_path / "moving.tif"), "--method", "intensity", "-o"]
    assert main([*pair, str(tmp_path / "named")]) == 0, capsys.readouterr().err
    assert main([*pair, str(tmp_path / "given"), "--channel-axis", "0"]) == 0
    named, given = (tifffile.imread(tmp_path / run / "moving_warped.tif") for run in ("named", "given"))
    assert named.shape == (2, *moving_gray.shape) and np.array_equal(named, given)


def test_register_cli_reads_an_rgba_png_beside_a_fiji_composite_as_rgb(shared_data, tmp_path, capsys):
    """A Fiji composite beside an RGBA PNG: the composite's channel axis was applied to the PNG too, which was
    refused as '4 channels on axis -1: registration takes up to 3' (alone it registers as RGB); now it is RGB."""
    from skimage.io import imsave

    d = _birl(shared_data)
    fixed_gray = read_image(d["fixed"]).mean(-1).astype(np.uint8)
    tifffile.imwrite(
        tmp_path / "fixed.tif", np.stack([fixed_gray, 255 - fixed_gray // 2]), imagej=True, metadata={"axes": "CYX"}
    )
    moving = read_image(d["moving"])
    imsave(tmp_path / "moving.png", np.dstack([moving, np.full(moving.shape[:2], 255, np.uint8)]))
    out = tmp_path / "out"
    code = main(["register", str(tmp_path / "fixed.tif"), str(tmp_path / "moving.png"), "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    assert tifffile.imread(out / "moving_warped.tif").shape == (*fixed_gray.shape, 3)
    assert json.loads((out / "report.json").read_text())["quality"]["verdict"] == "good"


def test_register_cli_refuses_landmark_count_mismatch(shared_data, tmp_path, capsys):
    d = _birl(shared_data)
    code = main(
        [
            "register", str(d["fixed"]), str(d["moving"]), "-o", str(tmp_path / "o"), "--method", "intensity",
            "--landmarks-fixed", str(d["kidney_fixed"]), "--landmarks-moving", str(d["kidney_moving"]),
        ]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert f"landmark count mismatch: {d['kidney_fixed']} has 71, {d['kidney_moving']} has 69" in err
    assert not (tmp_path / "o" / "report.json").exists()


def test_register_cli_refuses_missing_inputs(shared_data, tmp_path, capsys):
    d = _birl(shared_data)
    assert main(["register", str(d["fixed"]), str(tmp_path / "nope.png"), "-o", str(tmp_path / "o")]) == 2
    assert "input image not found" in capsys.readouterr().err
    (tmp_path / "x.csv").write_text(",X,Y\n0,1,2\n")
    code = main(
        [
            "register",
            str(d["fixed"]),
            str(d["moving"]),
            "-o",
            str(tmp_path / "o"),
            "--landmarks-fixed",
            str(tmp_path / "x.csv"),
        ]
    )
    assert code == 2
    assert "give both --landmarks-fixed and --landmarks-moving" in capsys.readouterr().err


def test_register_cli_refuses_an_output_that_would_replace_an_input_before_the_work(shared_data, tmp_path, capsys):
    """-o naming a file, or a folder where register's moving_warped.tif is the moving image itself, stops the run
    before the registration (they were reported after it, or not at all)."""
    import shutil

    d = _birl(shared_data)
    (tmp_path / "afile").write_text("")
    assert main(["register", str(d["fixed"]), str(d["moving"]), "-o", str(tmp_path / "afile")]) == 2
    assert "a file, not a directory" in capsys.readouterr().err
    moving = tmp_path / "moving_warped.tif"
    shutil.copy(d["moving"], moving)
    before = moving.read_bytes()
    assert main(["register", str(d["fixed"]), str(moving), "-o", str(tmp_path)]) == 2
    assert "would overwrite this input" in capsys.readouterr().err
    assert moving.read_bytes() == before


def test_register_cli_warns_about_landmarks_outside_their_image(shared_data, tmp_path, capsys):
    """Landmarks of the full-size slide given with its half-size copy (ANHIR ships one CSV per scale) lie outside the
    image: the TRE compares them as its pixels, which means nothing. It was silent (TRE 73 -> 400+ px, no hint)."""
    import imageio.v3 as iio

    d = _birl(shared_data)
    half = tmp_path / "fixed half size.png"
    iio.imwrite(half, read_image(d["fixed"])[::2, ::2])
    out = tmp_path / "out"
    args = ["register", str(half), str(d["moving"]), "-o", str(out), "--method", "intensity"]
    code = main([*args, "--landmarks-fixed", str(d["lm_fixed"]), "--landmarks-moving", str(d["lm_moving"])])
    err = capsys.readouterr().err
    assert code == 0, err
    warning = f"warning: {d['lm_fixed']}: "
    assert warning in err and "points lie outside the 300 x 400 px image" in err, err
    assert str(d["lm_moving"]) not in err  # those are the moving image's pixels
    report = json.loads((out / "report.json").read_text())
    assert any(w.startswith(f"{d['lm_fixed']}: ") and "outside" in w for w in report["warnings"])


def test_register_cli_reads_both_landmark_sets_from_one_bigwarp_file(shared_data, tmp_path, capsys):
    """A BigWarp landmark export (one headerless CSV: moving x, y then fixed x, y per row) was refused by
    --landmarks-fixed ('CSV header must contain X and Y'); given alone it is both sets now."""
    from napari_promptseg.io.landmarks import read_landmarks

    from .test_landmarks import _bigwarp_file

    d = _birl(shared_data)
    fixed, moving = read_landmarks(d["lm_fixed"]).xy, read_landmarks(d["lm_moving"]).xy
    bigwarp = _bigwarp_file(tmp_path / "landmarks.csv", moving, fixed)
    out = tmp_path / "out"
    code = main(["register", str(d["fixed"]), str(d["moving"]), "-o", str(out), "--landmarks-fixed", str(bigwarp)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    landmarks = json.loads((out / "report.json").read_text())["landmarks"]
    assert landmarks["pairs_compared"] == len(fixed) == 12
    before = float(np.mean(np.linalg.norm(fixed - moving, axis=1)))
    assert landmarks["before"]["tre_mean"] == pytest.approx(before, rel=1e-3)
    assert landmarks["after"]["tre_mean"] < 0.1 * before


def test_register_cli_reads_bigwarp_landmarks_in_the_images_calibrated_units(shared_data, tmp_path, capsys):
    """BigWarp writes a calibrated image's landmarks in its units (here µm, 0.5 µm/px): they were read as pixels,
    half the distances and points off their places. Each set is divided by its image's pixel size now, and the TRE
    equals the run given the same points in pixels; an image without a pixel size is read as pixels, said once."""
    from napari_promptseg.io.calibration import pixel_size
    from napari_promptseg.io.landmarks import read_landmarks

    from .test_landmarks import _bigwarp_file

    d = _birl(shared_data)
    calibrated = {}
    for role in ("fixed", "moving"):  # the real pair, written as Fiji does with 0.5 µm pixels
        calibrated[role] = tmp_path / f"{role}.tif"
        tifffile.imwrite(
            calibrated[role], read_image(d[role]), imagej=True, resolution=(2.0, 2.0), metadata={"unit": "micron"}
        )
        assert str(pixel_size(calibrated[role])) == "0.5 micron/px"
    fixed, moving = read_landmarks(d["lm_fixed"]).xy, read_landmarks(d["lm_moving"]).xy
    images = [str(calibrated["fixed"]), str(calibrated["moving"]), "--method", "intensity"]

    def tre(out, *landmarks):
        code = main(["register", *images, "-o", str(tmp_path / out), *landmarks])
        err = capsys.readouterr().err
        assert code == 0, err
        return json.loads((tmp_path / out / "report.json").read_text())["landmarks"], err

    in_pixels, _ = tre("pixels", "--landmarks-fixed", str(d["lm_fixed"]), "--landmarks-moving", str(d["lm_moving"]))
    in_um = _bigwarp_file(tmp_path / "bigwarp_um.csv", moving * 0.5, fixed * 0.5)
    from_bigwarp, err = tre("bigwarp", "--landmarks-fixed", str(in_um))
    assert "outside" not in err and "read as pixels" not in err, err
    for when in ("before", "after"):
        for key, value in in_pixels[when].items():
            assert from_bigwarp[when][key] == pytest.approx(value, rel=1e-5, abs=1e-4), (when, key)
    assert in_pixels["after"]["tre_mean"] < 0.2 * in_pixels["before"]["tre_mean"]  # a registration, not two failures
    assert from_bigwarp["bigwarp_pixel_size"] == {"fixed": "0.5 micron/px", "moving": "0.5 micron/px"}

    # the shared JPEGs have no pixel size: pixels, said once naming the file and both images
    out = tmp_path / "jpeg"
    in_px = _bigwarp_file(tmp_path / "bigwarp_px.csv", moving, fixed)
    code = main(["register", str(d["fixed"]), str(d["moving"]), "-o", str(out), "--method", "intensity",
                 "--landmarks-fixed", str(in_px)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    said = f"warning: {in_px}: BigWarp landmarks read as pixels: {d['fixed']} and {d['moving']} have no pixel size"
    assert err.count("read as pixels") == 1 and said in err, err
    report = json.loads((out / "report.json").read_text())
    assert any("read as pixels" in w for w in report["warnings"]) and "bigwarp_pixel_size" not in report["landmarks"]


def test_register_cli_says_the_region_settings_a_run_does_not_use(tmp_path, capsys):
    """--similarity, --smoothness and --no-dense set the region route: with --method intensity (or --smoothness beside
    --no-dense) they were ignored without a word, while the Registration widget greys them out. They are said, on
    stderr and in report.json, and the run goes on."""
    from skimage import data

    camera = data.camera()[::4, ::4].astype(np.float32)
    tifffile.imwrite(tmp_path / "fixed.tif", camera)
    tifffile.imwrite(tmp_path / "moving.tif", np.roll(camera, (3, -2), axis=(0, 1)))
    argv = ["register", str(tmp_path / "fixed.tif"), str(tmp_path / "moving.tif"), "-o", str(tmp_path / "out")]
    assert main([*argv, "--method", "intensity", "--similarity", "0.6", "--no-dense"]) == 0
    said = "--similarity, --no-dense ignored: they set the region route"
    assert said in capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert any(said in w for w in report["warnings"]), report["warnings"]

    from napari_promptseg.cli import build_parser
    from napari_promptseg.cli.register.command import unused_settings

    def unused(*flags: str, method: str = "prompts+intensity") -> list[str]:
        return unused_settings(build_parser().parse_args([*argv, *flags]), method)

    assert unused("--no-dense", "--smoothness", "0.3") == [
        "--smoothness ignored: it weighs the dense field, which --no-dense leaves out"
    ]
    assert unused("--similarity", "0.6", "--smoothness", "0.3") == []  # both used by the region route
    assert unused(method="intensity") == []  # nothing given
    assert unused("--box-threshold", "0.5", "--heatmap-threshold", "0.4") == [
        "--box-threshold, --heatmap-threshold ignored: they set how text prompts (--prompt) are answered"
    ]
    assert unused_settings(build_parser().parse_args([*argv, "--box-threshold", "0.5"]), "prompts", True) == []
    # one option is "it" (it read "--similarity ignored: they set ...")
    assert unused("--similarity", "0.6", method="intensity") == [
        "--similarity ignored: it sets the region route (--method prompts or prompts+intensity)"
    ]
    assert unused("--text-threshold", "0.3") == [
        "--text-threshold ignored: it sets how text prompts (--prompt) are answered"
    ]


def test_a_channel_axis_neither_image_has_is_refused_as_the_widget_refuses_it(shared_data, tmp_path, capsys):
    """--channel-axis 0 for two RGB images (channels last) was dropped without a word by the CLI and register(),
    whose result's warp_image(moving, channel_axis=0) then failed with "expected shape (600, 800), got (800, 3,
    600)"; the Registration widget refuses it ("neither has one: choose 'none'")."""
    from napari_promptseg.errors import PromptsegError
    from napari_promptseg.methods.registration import register

    d = _birl(shared_data)
    out = tmp_path / "out"
    assert main(["register", str(d["fixed"]), str(d["moving"]), "-o", str(out), "--channel-axis", "0"]) == 2
    err = capsys.readouterr().err
    assert "channel_axis=0 given" in err and "--channel-axis" in err, err
    assert not (out / "moving_warped.tif").exists()
    rgb = np.zeros((40, 50, 3), np.uint8)
    with pytest.raises(PromptsegError, match=r"neither fixed \(40, 50, 3\) nor moving \(40, 50, 3\)"):
        register(rgb, rgb, channel_axis=0)


def test_a_planar_rgb_tiff_is_one_colour_image_to_the_cli_as_to_the_plugin(shared_data, tmp_path):
    """An RGB TIFF another program stored plane by plane (photometric RGB, planar configuration separate; no axis
    names, no tifffile description) opened in napari as one RGB image, but every command read it as a stack of 3
    planes: `register` refused it ('pick one plane of a stack first'), `segment` asked for --plane. (tifffile's own
    guess for a (3, Y, X) array is planes: tests/test_reader.py.)"""
    from napari_promptseg.io.multiscale import read_image_named

    moving = read_image(_birl(shared_data)["moving"])
    path = tmp_path / "planar.tif"
    tifffile.imwrite(path, np.moveaxis(moving, -1, 0), photometric="rgb", planarconfig="separate", metadata=None)
    assert tifffile.imread(path).shape == (3, *moving.shape[:2])  # as tifffile reads it: samples first
    ((data, kwargs, _),) = tiff_layer_data(path)
    assert np.shape(data) == moving.shape and kwargs.get("rgb")
    assert np.array_equal(read_image_named(path), moving)


def test_register_says_a_tiff_of_several_images_is_read_at_its_first(tmp_path, capsys):
    """A fixed or moving image, or --moving-labels, saved as a TIFF of several images (a multi-position OME-TIFF)
    was registered at its first image without a word of the others, where the batch commands said it. Said in the
    run's output and report.json's warnings, as every command says it."""
    from skimage import data

    camera = data.camera()[::4, ::4]  # 128 x 128
    fixed = tmp_path / "positions.ome.tif"
    with tifffile.TiffWriter(fixed, ome=True) as tif:
        tif.write(camera, metadata={"axes": "YX", "Name": "A1"})
        tif.write(camera[::-1], metadata={"axes": "YX", "Name": "A2"})
    tifffile.imwrite(tmp_path / "moving.tif", np.roll(camera, (3, 5), axis=(0, 1)))
    labels = tmp_path / "labels.ome.tif"
    with tifffile.TiffWriter(labels, ome=True) as tif:
        for name in ("cells", "nuclei"):
            tif.write((camera < 60).astype(np.uint8), metadata={"axes": "YX", "Name": name})
    out = tmp_path / "out"
    args = ["register", str(fixed), str(tmp_path / "moving.tif"), "-o", str(out), "--method", "intensity"]
    assert main([*args, "--moving-labels", str(labels)]) == 0
    err = capsys.readouterr().err
    warnings = json.loads((out / "report.json").read_text())["warnings"]
    for said in (
        f"{fixed}: holds 2 images (TIFF series: A1, A2); only the first (A1, (128, 128)) is read",
        f"--moving-labels {labels}: holds 2 images (TIFF series: cells, nuclei); only the first (cells,",
    ):
        assert any(w.startswith(said) for w in warnings), warnings
        assert f"warning: {said}" in err, err
