"""Registration bug hunt: what register() and `promptseg register` hand back on a real BIRL/CIMA pair — the quality
report of a several-start run, the files of a reused output folder, landmark columns, channels-first images, and
inputs refused up front."""

from __future__ import annotations

import csv
import errno
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_promptseg.cli import main
from napari_promptseg.errors import PromptsegError
from napari_promptseg.io import read_image
from napari_promptseg.io.landmarks import read_landmarks, write_landmarks
from napari_promptseg.io.multiscale import read_image_named, tiff_axis_names
from napari_promptseg.methods.registration import IntensityImages, RegistrationResult, quality_report, register
from napari_promptseg.methods.registration.options import _stage, _stage_warnings
from napari_promptseg.methods.warp import Deformation


@pytest.fixture(scope="module")
def birl_half(shared_data, tmp_path_factory):
    """BIRL's artificial pair at half size (seconds per run), its landmarks with extra columns (Z, a name)."""
    root = shared_data / "registration_birl" / "data-images"
    out = tmp_path_factory.mktemp("birl-half")
    paths = {}
    for role, stem in (("fixed", "artificial_reference"), ("moving", "artificial_moving-affine")):
        image = read_image(root / "images" / f"{stem}.jpg")[::2, ::2]
        paths[role] = out / f"{role}.tif"
        tifffile.imwrite(paths[role], image)
        xy = read_landmarks(root / "landmarks" / f"{stem}.csv").xy / 2
        paths[f"lm_{role}"] = out / f"{role}.csv"
        with open(paths[f"lm_{role}"], "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["", "X", "Y", "Z", "name"])
            writer.writerows([i + 1, f"{x:g}", f"{y:g}", 7, f"point, {i + 1}"] for i, (x, y) in enumerate(xy))
    return paths


def _swappable_pair(birl_half, folder) -> tuple[dict, Callable[[], None]]:
    """The pair and its landmarks copied into ``folder``, and a function that swaps the two images' (and their
    landmarks') contents in place: a rerun on the same files then writes other results (a run on another pair of
    files into the same -o is refused)."""
    import shutil

    paths = {key: shutil.copy(birl_half[key], folder / f"{key}{birl_half[key].suffix}") for key in birl_half}

    def swap() -> None:
        for a, b in (("fixed", "moving"), ("lm_fixed", "lm_moving")):
            first, second = (Path(paths[k]).read_bytes() for k in (a, b))
            Path(paths[a]).write_bytes(second)
            Path(paths[b]).write_bytes(first)

    return paths, swap


def test_landmark_csv_keeps_its_other_columns(birl_half, tmp_path):
    """Z, a name (with a comma) and the index come back as read; only X and Y are the new coordinates."""
    landmarks = read_landmarks(birl_half["lm_moving"])
    moved = write_landmarks(tmp_path / "out.csv", landmarks.with_xy(landmarks.xy + 1.5))
    assert b"\r" not in moved.read_bytes()  # lines end as the input's (and ANHIR's) do, not CRLF
    rows = list(csv.reader(moved.read_text().splitlines()))
    assert rows[0] == ["", "X", "Y", "Z", "name"]
    assert rows[1][0] == "1" and rows[1][3:] == ["7", "point, 1"] and rows[-1][3:] == ["7", f"point, {len(rows) - 1}"]
    assert np.allclose(read_landmarks(moved).xy, landmarks.xy + 1.5)


def test_cli_landmarks_keep_their_columns_and_a_rerun_without_them_removes_the_old_file(birl_half, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["register", str(birl_half["fixed"]), str(birl_half["moving"]), "-o", str(out), "--method", "intensity"]
    landmarks = ["--landmarks-fixed", str(birl_half["lm_fixed"]), "--landmarks-moving", str(birl_half["lm_moving"])]
    assert main([*args, *landmarks]) == 0, capsys.readouterr().err
    rows = list(csv.reader((out / "landmarks_warped.csv").read_text().splitlines()))
    assert rows[0] == ["", "X", "Y", "Z", "name"] and rows[2][3:] == ["7", "point, 2"], rows[:3]
    capsys.readouterr()
    # the same folder without landmarks: the earlier run's mapped landmarks would pass for this run's
    assert main(args) == 0
    err = capsys.readouterr().err
    assert not (out / "landmarks_warped.csv").exists()
    assert f"removed {out / 'landmarks_warped.csv'}" in err
    assert json.loads((out / "report.json").read_text())["landmarks"] is None
    from napari_promptseg.cli._inputs import _expand_images

    # register's images are marked as its own, not as labels: a later run may take them as inputs
    assert out / "moving_warped.tif" in _expand_images([out])
    # files register did not write are never replaced nor removed: refused before any work
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "landmarks_warped.csv").write_text("my own points\n")
    (mine / "displacement.tif").write_bytes(b"not ours")
    assert main([*args[:4], str(mine), *args[5:]]) == 2
    assert "displacement.tif is not an earlier output of promptseg register" in capsys.readouterr().err
    (mine / "displacement.tif").unlink()
    assert main([*args[:4], str(mine), *args[5:], *landmarks]) == 2  # it would replace the user's CSV
    assert main([*args[:4], str(mine), *args[5:]]) == 0  # without landmarks the CSV is left alone
    assert (mine / "landmarks_warped.csv").read_text() == "my own points\n"


def test_cli_warps_a_channels_first_image_and_writes_it_as_given(birl_half, tmp_path, capsys):
    """(2, H, W) with --channel-axis 0 registered, then failed writing: the raw array was warped. The warped image
    of an uncalibrated fixed image names its axes: it was read back (by the CLI, the plugin) as a stack of 2 planes,
    so the run's own output was refused as a moving image ('pick one plane of a stack first')."""
    first = {}
    for role in ("fixed", "moving"):
        image = tifffile.imread(birl_half[role])
        first[role] = tmp_path / f"{role}_first.tif"
        tifffile.imwrite(first[role], np.moveaxis(image[..., :2], -1, 0).copy())
    out = tmp_path / "out"
    landmarks = ["--landmarks-fixed", str(birl_half["lm_fixed"]), "--landmarks-moving", str(birl_half["lm_moving"])]
    args = ["register", str(first["fixed"]), str(first["moving"]), "-o", str(out), "--channel-axis", "0"]
    assert main([*args, *landmarks]) == 0, capsys.readouterr().err
    warped = tifffile.imread(out / "moving_warped.tif")
    fixed = tifffile.imread(first["fixed"])
    assert warped.shape == fixed.shape and warped.dtype == fixed.dtype  # (2, H, W): the layout given
    assert tiff_axis_names(out / "moving_warped.tif") == ["c", "y", "x"]
    assert read_image_named(out / "moving_warped.tif").shape == (*fixed.shape[1:], 2)  # as every command reads it
    report = json.loads((out / "report.json").read_text())
    assert report["landmarks"]["image_diagonal"] == 500.0  # of the 300 x 400 plane, not of (2, 300)
    assert report["landmarks"]["after"]["tre_mean"] < 0.1 * report["landmarks"]["before"]["tre_mean"]
    # inside the moving image's field of view, the warped channels agree with the fixed ones
    field = tifffile.imread(out / "displacement.tif")
    ys, xs = np.mgrid[: fixed.shape[1], : fixed.shape[2]]
    inside = (xs + field[..., 0] >= 0) & (xs + field[..., 0] <= fixed.shape[2] - 1)
    inside &= (ys + field[..., 1] >= 0) & (ys + field[..., 1] <= fixed.shape[1] - 1)
    moving = tifffile.imread(first["moving"]).astype(float)
    before = np.abs(moving - fixed)[:, inside].mean()
    assert np.abs(warped - fixed.astype(float))[:, inside].mean() < 0.5 * before


def test_warp_image_says_what_to_do_with_channels_first_and_refuses_other_orders(birl_half):
    moving = tifffile.imread(birl_half["moving"])  # (H, W, 3)
    shape = moving.shape[:2]
    affine = np.array([[0.98, -0.1, 12.0], [0.1, 0.98, -8.0], [0.0, 0.0, 1.0]])
    result = RegistrationResult(Deformation.from_pixel_affine(affine, shape, shape), "intensity")
    first = np.moveaxis(moving, -1, 0)
    with pytest.raises(PromptsegError, match=r"channels first.*pass channel_axis=0"):
        result.warp_image(first)
    warped = result.warp_image(first, channel_axis=0)
    assert warped.shape == first.shape
    assert np.array_equal(warped, np.moveaxis(result.warp_image(moving), -1, 0))
    with pytest.raises(PromptsegError, match=r"order must be 0 \(nearest\) or 1 \(bilinear\), got 3"):
        result.warp_image(moving, order=3)


def test_intensity_route_refuses_prompts_and_reports_done(birl_half):
    fixed, moving = tifffile.imread(birl_half["fixed"]), tifffile.imread(birl_half["moving"])
    for prompts in ("lungs", ["gland", "nuclei"]):
        with pytest.raises(PromptsegError, match="need method='prompts' or 'prompts\\+intensity', not 'intensity'"):
            register(fixed, moving, prompts, method="intensity")
    seen: list[tuple[float, str]] = []
    register(fixed[::2, ::2], moving[::2, ::2], "auto", method="intensity", progress=lambda f, m: seen.append((f, m)))
    assert seen[-1] == (1.0, "done"), seen


def test_cli_refuses_an_empty_prompt_before_loading_a_model(birl_half, tmp_path, capsys, monkeypatch):
    import napari_promptseg.models as models

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded for a prompt that is refused")

    monkeypatch.setattr(models, "load_segmenter", no_model)
    args = ["register", str(birl_half["fixed"]), str(birl_half["moving"]), "-o", str(tmp_path / "o")]
    for bad, message in (
        (["--prompt", ""], "--prompt '' is empty: name what to pair"),
        (["--prompt", " , "], "--prompt ' , ' is empty"),
        (["--prompt", "auto", "--prompt", "lungs"], "--prompt auto (automatic regions) stands alone"),
    ):
        t0 = time.perf_counter()
        assert main([*args, *bad]) == 2
        assert message in capsys.readouterr().err
        assert time.perf_counter() - t0 < 5
    assert not (tmp_path / "o").exists()


def test_losing_starts_do_not_count_in_the_quality_report(shared_data):
    """CIMA lesion pair at two scales: starts rotated by 270 deg and 90 deg flipped were degenerate, lost, and yet
    turned a correct result (rTRE 0.77 %) into "check" with warnings about "the previous stage's result"."""
    root = shared_data / "registration_cima_lung_lesion_1"
    fixed = read_image(root / "scale-10pc" / "29-041-Izd2-w35-He-les1_gaussian-filtered.jpg")
    moving = read_image(root / "scale-5pc" / "29-041-Izd2-w35-Cc10-5-les1.jpg")
    result = register(fixed, moving)
    candidates = [s for s in result.stages if s["candidate"]]
    assert all(not s["stage"].endswith(f"from {result.start}") for s in candidates)
    assert not any("degenerate" in w for w in result.warnings), result.warnings
    assert result.quality["verdict"] == "good" and result.quality["stages_rejected"] == [], result.quality
    # a losing start's degenerate stage (whether this CPU's run has one depends on which starts are judged
    # degenerate: since bug hunt 2, against what the moving image can cover) is listed and does not count ...
    images = IntensityImages.from_images(fixed, moving, 384)
    lost = _stage("affine from search 270 deg", "maps 90 % of the fixed image outside the moving image", candidate=True)
    quality = quality_report(images, result.deformation, [*result.stages, lost])
    assert quality["verdict"] == "good" and quality["stages_rejected"] == [], quality
    assert _stage_warnings([*result.stages, lost]) == []
    # ... while a degenerate stage on the chosen path still makes the verdict "check"
    rejected = [*result.stages, _stage("bspline", "folds over 3 % of the image")]
    quality = quality_report(images, result.deformation, rejected)
    assert quality["verdict"] == "check" and quality["stages_rejected"] == ["bspline"], quality


def test_cli_moving_labels_are_warped_with_their_ids_and_a_rerun_without_them_removes_the_file(
    birl_half, tmp_path, capsys, monkeypatch
):
    """--moving-labels: the moving image's objects, cut into four ids, land on the fixed image's objects. The files
    of a fixed image past classic TIFF's 4 GiB (a slide's) are BigTIFFs (the size that decides lowered here). The
    fixed image is calibrated (an OME-TIFF, 0.5 µm/px): the warped image and labels record its pixel size, so our
    reader opens them over it (they opened in pixels, 2x its size beside it), the labels as Labels."""
    from napari_promptseg.io import images as image_files
    from napari_promptseg.io.layer_data import tiff_layer_data

    images = {role: tifffile.imread(birl_half[role]) for role in ("fixed", "moving")}
    fixed = tmp_path / "fixed.ome.tif"
    size = {"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5, "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"}
    tifffile.imwrite(fixed, images["fixed"], photometric="rgb", metadata={"axes": "YXS", **size})
    ids = {}
    for role, image in images.items():
        h, w = image.shape[:2]
        ys, xs = np.mgrid[:h, :w]
        ids[role] = np.where(image.mean(-1) < 200, 1 + (ys >= h // 2) * 2 + (xs >= w // 2), 0).astype(np.uint16)
    labels = tmp_path / "cells.tif"
    tifffile.imwrite(labels, ids["moving"])
    out = tmp_path / "out"
    args = ["register", str(fixed), str(birl_half["moving"]), "-o", str(out), "--method", "intensity"]
    with monkeypatch.context() as patched:  # each of the three files is larger: BigTIFFs, this run only
        patched.setattr(image_files, "BIGTIFF_ABOVE_BYTES", 100_000)
        assert main([*args, "--moving-labels", str(labels)]) == 0, capsys.readouterr().err
    assert "4 of 4 ids inside the fixed image" in capsys.readouterr().out
    for name in ("labels_warped.tif", "moving_warped.tif", "displacement.tif"):
        with tifffile.TiffFile(out / name) as tif:
            assert tif.is_bigtiff, name
    [(_, fixed_layer, _)] = tiff_layer_data(fixed)
    assert fixed_layer["scale"] == [0.5, 0.5] and fixed_layer["units"] == ["µm", "µm"]
    for name, kind in (("moving_warped.tif", "image"), ("labels_warped.tif", "labels"), ("displacement.tif", "image")):
        [(data, layer, layer_type)] = tiff_layer_data(out / name)
        assert layer_type == kind and np.shape(data)[:2] == images["fixed"].shape[:2], name
        assert (layer["scale"], layer["units"]) == (fixed_layer["scale"], fixed_layer["units"]), name
    warped = tifffile.imread(out / "labels_warped.tif")
    assert warped.shape == images["fixed"].shape[:2] and warped.dtype == np.uint16
    assert set(np.unique(warped)) == {0, 1, 2, 3, 4}
    fixed_objects, before = ids["fixed"] > 0, ids["moving"] > 0

    def dice(a, b):
        return 2 * (a & b).sum() / (a.sum() + b.sum())

    assert dice(warped > 0, fixed_objects) > 0.97 and dice(before, fixed_objects) < 0.9
    report = json.loads((out / "report.json").read_text())
    assert report["labels"]["ids_before"] == 4 and report["labels"]["ids_after"] == 4
    # a rerun without labels: the earlier labels_warped.tif would pass for this run's
    assert main(args) == 0
    assert not (out / "labels_warped.tif").exists() and "removed" in capsys.readouterr().err
    # labels drawn on a half-size copy of the moving image (a pyramid level, a slide's 5 % image): scaled onto it
    tifffile.imwrite(labels, ids["moving"][::2, ::2])
    assert main([*args, "--moving-labels", str(labels)]) == 0
    captured = capsys.readouterr()
    assert "4 of 4 ids inside the fixed image" in captured.out
    assert f"--moving-labels {labels}: drawn at 150 x 200 px, scaled (nearest pixel)" in captured.err
    assert dice(tifffile.imread(out / "labels_warped.tif") > 0, fixed_objects) > 0.95
    # labels that are not of the moving image's size, or not ids: refused before any work, named
    tifffile.imwrite(labels, ids["moving"][:-1])
    assert main([*args, "--moving-labels", str(labels)]) == 2
    err = capsys.readouterr().err
    assert f"--moving-labels {labels}: 299 x 400 px, the moving image is 300 x 400 px" in err
    # whole-number ids stored as floats (voxelmorph's segmentations) are ids, as warp_labels takes them; fractions
    # are not
    tifffile.imwrite(labels, ids["moving"].astype(np.float32))
    assert main([*args, "--moving-labels", str(labels)]) == 0
    assert "4 of 4 ids inside the fixed image" in capsys.readouterr().out
    np.testing.assert_array_equal(tifffile.imread(out / "labels_warped.tif"), warped)
    tifffile.imwrite(labels, ids["moving"].astype(np.float32) / 2)
    assert main([*args, "--moving-labels", str(labels)]) == 2
    assert f"--moving-labels {labels}: fractional values; expected label ids (whole numbers)" in capsys.readouterr().err
    # a user's own file under that name is not replaced
    tifffile.imwrite(labels, ids["moving"])
    tifffile.imwrite(out / "labels_warped.tif", ids["fixed"])
    assert main([*args, "--moving-labels", str(labels)]) == 2
    assert "labels_warped.tif is not an earlier output of promptseg register" in capsys.readouterr().err


def test_cli_landmarks_listed_in_another_order_pair_by_their_index_column(birl_half, tmp_path, capsys):
    """The moving landmarks sorted by X in a spreadsheet (each row keeps its index): they paired by row, so the TRE
    compared unrelated points (after: 100+ px for a registration that is right within 2 px) without a word. They
    pair by the index column now, said, and landmarks_warped.csv keeps the moving file's rows in its order."""
    rows = list(csv.reader(birl_half["lm_moving"].read_text().splitlines()))
    shuffled = tmp_path / "moving sorted by X.csv"
    with open(shuffled, "w", newline="") as fh:
        csv.writer(fh).writerows([rows[0], *sorted(rows[1:], key=lambda r: float(r[1]))])
    assert [r[0] for r in csv.reader(shuffled.read_text().splitlines())][1:] != [r[0] for r in rows[1:]]
    out = tmp_path / "out"
    args = ["register", str(birl_half["fixed"]), str(birl_half["moving"]), "-o", str(out), "--method", "intensity"]
    lm = ["--landmarks-fixed", str(birl_half["lm_fixed"]), "--landmarks-moving"]
    assert main([*args, *lm, str(shuffled)]) == 0
    assert "landmarks paired by their index column" in capsys.readouterr().err
    after = json.loads((out / "report.json").read_text())["landmarks"]["after"]["tre_mean"]
    assert main([*args, "-o", str(tmp_path / "in order"), *lm, str(birl_half["lm_moving"])]) == 0
    in_order = json.loads((tmp_path / "in order" / "report.json").read_text())["landmarks"]["after"]["tre_mean"]
    assert after == pytest.approx(in_order, abs=1e-6) and after < 3.0, (after, in_order)
    warped = list(csv.reader((out / "landmarks_warped.csv").read_text().splitlines()))
    assert [r[0] for r in warped] == [r[0] for r in csv.reader(shuffled.read_text().splitlines())]  # its order
    fixed_rows = list(csv.reader(birl_half["lm_fixed"].read_text().splitlines()))[1:]
    fixed_by_index = {r[0]: np.array([float(r[1]), float(r[2])]) for r in fixed_rows}
    errors = [np.linalg.norm(np.array([float(r[1]), float(r[2])]) - fixed_by_index[r[0]]) for r in warped[1:]]
    assert np.mean(errors) == pytest.approx(after, abs=0.01)


def test_cli_moving_labels_take_a_grey_jpeg_mask_as_oneshot_and_the_library_do(birl_half, tmp_path, capsys):
    """A mask saved as a grey JPEG in three channels (as GlaS's and Kvasir's masks are) was refused by --moving-labels
    as 'a colour image', although `oneshot --reference-mask` and `library add --mask` take the same file: it is
    read as they read it now (thresholded at 127: one object, id 1, no JPEG noise ids) and lands on the fixed
    image's objects."""
    import imageio.v3 as iio

    images = {role: tifffile.imread(birl_half[role]) for role in ("fixed", "moving")}
    objects = {role: image.mean(-1) < 200 for role, image in images.items()}
    mask = tmp_path / "moving mask.jpg"
    grey = np.where(objects["moving"], 255, 0).astype(np.uint8)
    iio.imwrite(mask, np.dstack([grey] * 3), quality=75)
    assert len(np.unique(read_image(mask))) > 2  # compression left values between 0 and 255
    out = tmp_path / "out"
    args = ["register", str(birl_half["fixed"]), str(birl_half["moving"]), "-o", str(out), "--method", "intensity"]
    assert main([*args, "--moving-labels", str(mask)]) == 0, capsys.readouterr().err
    assert "1 of 1 ids inside the fixed image" in capsys.readouterr().out
    warped = tifffile.imread(out / "labels_warped.tif")
    assert warped.dtype == np.uint8 and set(np.unique(warped)) == {0, 1}
    dice = 2 * ((warped > 0) & objects["fixed"]).sum() / ((warped > 0).sum() + objects["fixed"].sum())
    assert dice > 0.95, dice


def test_cli_moving_annotations_land_on_the_fixed_objects_with_their_properties(birl_half, tmp_path, capsys):
    """--moving-annotations (GeoJSON as QuPath exports it: a list of features): the outlines of the moving image's
    objects land on the fixed image's objects, the landmarks as a MultiPoint land where landmarks_warped.csv puts
    them, properties and ids come back as given; a rerun without annotations removes the old file, an edited one is
    not replaced, and a file that is not GeoJSON is refused before any work, named."""
    from skimage.draw import polygon as fill_polygon
    from skimage.measure import find_contours

    images = {role: tifffile.imread(birl_half[role]) for role in ("fixed", "moving")}
    objects = {role: image.mean(-1) < 200 for role, image in images.items()}
    rings = [c[:, ::-1] for c in find_contours(objects["moving"].astype(float), 0.5) if len(c) > 20]  # x, y
    landmarks = read_landmarks(birl_half["lm_moving"]).xy
    features = [
        {"type": "Feature", "id": f"object-{k}", "geometry": {"type": "Polygon", "coordinates": [ring.tolist()]},
         "properties": {"classification": {"name": "Tumor", "color": [200, 0, 0]}}}
        for k, ring in enumerate(rings)
    ]  # fmt: skip
    features.append(
        {"type": "Feature", "geometry": {"type": "MultiPoint", "coordinates": landmarks.tolist()}, "properties": {}}
    )
    given = tmp_path / "moving.geojson"
    given.write_text(json.dumps(features))
    out = tmp_path / "out"
    args = ["register", str(birl_half["fixed"]), str(birl_half["moving"]), "-o", str(out), "--method", "intensity"]
    lms = ["--landmarks-fixed", str(birl_half["lm_fixed"]), "--landmarks-moving", str(birl_half["lm_moving"])]
    assert main([*args, *lms, "--moving-annotations", str(given)]) == 0, capsys.readouterr().err
    assert f"({len(rings) + 1} geometries)" in capsys.readouterr().out
    mapped = json.loads((out / "annotations_warped.geojson").read_text())
    assert [f.get("id") for f in mapped] == [f.get("id") for f in features]
    assert mapped[0]["properties"] == features[0]["properties"]
    points = np.array(mapped[-1]["geometry"]["coordinates"])
    assert np.abs(points - read_landmarks(out / "landmarks_warped.csv").xy).max() < 0.01

    def painted(feats):
        mask = np.zeros(objects["fixed"].shape, bool)
        for f in feats[:-1]:
            ring = np.array(f["geometry"]["coordinates"][0])
            mask[fill_polygon(ring[:, 1], ring[:, 0], mask.shape)] ^= True  # a hole's outline takes it out again
        return mask

    def dice(a, b):
        return 2 * (a & b).sum() / (a.sum() + b.sum())

    assert dice(painted(features), objects["fixed"]) < 0.9
    assert dice(painted(mapped), objects["fixed"]) > 0.95
    # densified: the warped outlines have a vertex at least every 2 px, the input's ring closure is kept
    ring = np.array(mapped[0]["geometry"]["coordinates"][0])
    assert np.linalg.norm(np.diff(ring, axis=0), axis=1).max() < 2.5 and (ring[0] == ring[-1]).all()
    report = json.loads((out / "report.json").read_text())["annotations"]
    assert report["geometries"] == len(rings) + 1 and report["geometries_outside"] == 0
    assert report["vertices_out"] >= report["vertices_in"] == sum(map(len, rings)) + len(landmarks)

    assert main(args) == 0  # without annotations: the earlier file would pass for this run's
    assert not (out / "annotations_warped.geojson").exists() and "removed" in capsys.readouterr().err
    assert main([*args, "--moving-annotations", str(given)]) == 0
    (out / "annotations_warped.geojson").write_text("[]")  # edited by the user since
    assert main([*args, "--moving-annotations", str(given)]) == 2
    assert "annotations_warped.geojson is not an earlier output" in capsys.readouterr().err
    given.write_text('{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[1, 2], [3]]]}}')
    assert main([*args, "-o", str(tmp_path / "other"), "--moving-annotations", str(given)]) == 2
    assert f"{given}: a Polygon has malformed coordinates" in capsys.readouterr().err


def test_annotation_geometries_of_every_kind_are_mapped_and_mirrored_rings_keep_their_winding():
    from napari_promptseg.io.annotations import densify, map_annotations

    dense = densify(np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 3.0]]), 4.0)
    assert np.allclose(dense, [[0, 0], [10 / 3, 0], [20 / 3, 0], [10, 0], [10, 3]])
    square = [[0, 0, 5], [4, 0, 5], [4, 4, 5], [0, 4, 5], [0, 0, 5]]  # with a z, which stays
    hole = [[1, 1], [1, 2], [2, 2], [2, 1], [1, 1]]
    data = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "geometry": {"type": "MultiPolygon", "coordinates": [[square, hole]]}},
            {"type": "Feature", "geometry": None, "properties": {"note": "no geometry"}},
            {"type": "Feature", "geometry": {"type": "GeometryCollection", "geometries": [
                {"type": "Point", "coordinates": [3, 1]},
                {"type": "LineString", "coordinates": [[0, 0], [0, 8]]},
            ]}},
        ],
    }  # fmt: skip

    def mirror(xy):  # x -> -x: orientation reversed
        return xy * np.array([-1.0, 1.0])

    out, counts = map_annotations(data, mirror, max_segment=2.0, mirrored=True, fixed_size=(10, 10))
    # square 4 edges x 2 + 1, hole 5, point 1, line 4 + 1; only the point (x = -3) has no vertex inside
    assert counts == {"geometries": 3, "vertices_in": 13, "vertices_out": 20, "geometries_outside": 1}
    outer, inner = (np.array(r)[:, :2] for r in out["features"][0]["geometry"]["coordinates"][0])

    def signed_area(ring):
        x, y = ring[:, 0], ring[:, 1]
        return 0.5 * np.sum(x[:-1] * y[1:] - x[1:] * y[:-1])

    src_outer, src_inner = np.array(square, float)[:, :2], np.array(hole, float)
    assert np.sign(signed_area(outer)) == np.sign(signed_area(src_outer))  # winding kept through the mirror
    assert np.sign(signed_area(inner)) == np.sign(signed_area(src_inner))
    assert out["features"][0]["geometry"]["coordinates"][0][0][0][2] == 5  # z kept
    assert out["features"][1] == data["features"][1]
    point, line = out["features"][2]["geometry"]["geometries"]
    assert point["coordinates"] == [-3.0, 1.0] and len(line["coordinates"]) == 5
    assert data["features"][2]["geometry"]["geometries"][0]["coordinates"] == [3, 1]  # the input is not changed


def test_a_registration_result_warps_geojson_as_it_maps_points_and_keeps_rings_winding_through_a_mirror():
    """RegistrationResult.warp_annotations (the console's way): positions where moving_points_to_fixed puts them,
    rings still wound as given when the transform mirrors (a section mounted upside down)."""
    shape = (100, 120)
    mirror = np.array([[-1.0, 0.0, 119.0], [0.0, 1.0, 3.0], [0.0, 0.0, 1.0]])  # fixed x -> moving 119 - x
    result = RegistrationResult(Deformation.from_pixel_affine(mirror, shape, shape), method="intensity")
    ring = [[10.0, 10.0], [30.0, 10.0], [30.0, 40.0], [10.0, 10.0]]
    data = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": {"a": 1}}
    out, counts = result.warp_annotations(data, max_segment=0)
    mapped = np.array(out["geometry"]["coordinates"][0])
    assert np.allclose(mapped[::-1], result.moving_points_to_fixed(np.array(ring)))  # reversed: winding kept
    assert np.allclose(mapped[:, 0], 119 - np.array(ring)[::-1, 0]) and out["properties"] == {"a": 1}
    assert counts == {"geometries": 1, "vertices_in": 4, "vertices_out": 4, "geometries_outside": 0}


def test_landmarks_mapped_through_a_pyramid_level_land_where_the_registered_layer_shows_their_pixel():
    """The registered layers of a pyramid are laid with a level pixel over the centre of the block of
    full-resolution pixels it stands for (placement); landmarks and outlines were still mapped with level pixel i
    at full-resolution pixel i * factor: on a slide registered at its 1/4 level, 1.5 px up and left of the warped
    image they belong to. On the real coins photo, registered onto itself as a slide's 1/4 level (and back), a
    moving pixel's landmark lands on that pixel of the warped layer, the centre of its block of slide pixels."""
    from napari.layers import Image
    from skimage import data

    from napari_promptseg._widgets._common import placement

    coins = data.coins()
    slide = np.kron(coins, np.ones((4, 4), coins.dtype))  # its 1/4 level is the photo: what register reads
    same = RegistrationResult(Deformation.from_pixel_affine(np.eye(3), coins.shape, coins.shape), method="intensity")
    row, col = np.unravel_index(np.argmax(coins), coins.shape)  # the photo's brightest pixel
    mapped = same.moving_points_to_fixed(np.array([[col, row]], float), fixed_factors=(4, 4))[0]
    place = placement(Image([slide, coins], multiscale=True), 2, np.array([4.0, 4.0]))
    np.testing.assert_allclose(mapped, place["translate"][::-1] + np.array([col, row]) * place["scale"][::-1])
    block = np.argwhere(slide[4 * row : 4 * row + 4, 4 * col : 4 * col + 4] == coins[row, col]) + (4 * row, 4 * col)
    np.testing.assert_allclose(mapped, block.mean(0)[::-1])  # the centre of its 16 slide pixels
    # the slide as the moving image: its pixels come back to the photo's pixel they were read as
    np.testing.assert_allclose(
        same.moving_points_to_fixed(block[:, ::-1].mean(0)[None], moving_factors=(4, 4))[0], (col, row)
    )


def test_register_report_names_its_files_wherever_it_is_read_from(birl_half, tmp_path, monkeypatch, capsys):
    """Paths typed relative to the working directory were written to report.json as typed (bug hunt 2), where the
    other subcommands' reports name their files absolutely."""
    monkeypatch.chdir(birl_half["fixed"].parent)
    lms = ["--landmarks-fixed", birl_half["lm_fixed"].name, "--landmarks-moving", birl_half["lm_moving"].name]
    args = ["register", "fixed.tif", "moving.tif", "-o", str(tmp_path / "out"), "--method", "intensity", *lms]
    assert main(args) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["parameters"]["fixed"] == str(birl_half["fixed"])
    assert report["landmarks"]["landmarks_moving"] == str(birl_half["lm_moving"])


def test_cli_stopped_while_writing_leaves_the_earlier_runs_files_as_they_were(birl_half, tmp_path, capsys, monkeypatch):
    """A rerun stopped between its writes (here a full disk at the warped landmarks) left its new moving_warped.tif
    and displacement.tif beside the earlier run's report.json and landmarks: the folder mixed two runs. Now a run's
    files appear together, report.json last, or not at all, and no temporary file is left behind."""
    out = tmp_path / "out"
    files, swap = _swappable_pair(birl_half, tmp_path)
    landmarks = ["--landmarks-fixed", str(files["lm_fixed"]), "--landmarks-moving", str(files["lm_moving"])]
    run = ["register", str(files["fixed"]), str(files["moving"]), "-o", str(out), "--method", "intensity", *landmarks]
    assert main(run) == 0, capsys.readouterr().err
    earlier = {path.name: path.read_bytes() for path in out.iterdir()}
    assert {"moving_warped.tif", "displacement.tif", "landmarks_warped.csv", "report.json"} <= set(earlier)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("napari_promptseg.io.landmarks.write_landmarks", full_disk)
    # a rerun into the same folder: the images swapped (its warped image differs from the earlier one)
    swap()
    capsys.readouterr()
    assert main(run) != 0
    assert "No space left on device" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in out.iterdir()} == earlier


def test_cli_stopped_while_renaming_keeps_the_earlier_runs_landmarks(birl_half, tmp_path, capsys, monkeypatch):
    """A rerun without landmarks removes the earlier run's landmarks_warped.csv: that happened before its own files
    were renamed into place, so a run stopped at a rename (a full disk, Ctrl+C) left the earlier report.json naming
    a landmarks file that was gone. The earlier run's files go only once this run's are in place."""
    import os

    out = tmp_path / "out"
    landmarks = ["--landmarks-fixed", str(birl_half["lm_fixed"]), "--landmarks-moving", str(birl_half["lm_moving"])]
    pair = [str(birl_half["fixed"]), str(birl_half["moving"])]
    assert main(["register", *pair, "-o", str(out), "--method", "intensity", *landmarks]) == 0, capsys.readouterr().err
    earlier = {path.name: path.read_bytes() for path in out.iterdir()}
    assert "landmarks_warped.csv" in earlier
    replace = os.replace

    def full_disk_at_the_first_rename(src, dst):
        if os.path.basename(dst) == "displacement.tif":
            raise OSError(errno.ENOSPC, "No space left on device")
        replace(src, dst)

    monkeypatch.setattr("napari_promptseg.io._files.os.replace", full_disk_at_the_first_rename)
    capsys.readouterr()
    assert main(["register", *pair, "-o", str(out), "--method", "intensity"]) != 0
    assert "No space left on device" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in out.iterdir()} == earlier


def test_cli_stopped_between_two_renames_leaves_the_earlier_run_whole(birl_half, tmp_path, capsys, monkeypatch):
    """The run's files were renamed into place one by one: a rename that failed after the first (a file held open
    by another program, a full disk) left this run's displacement.tif beside the earlier run's moving_warped.tif and
    report.json. Now the renamed ones are put back: the folder is the earlier run's, byte for byte."""
    import os

    out = tmp_path / "out"
    files, swap = _swappable_pair(birl_half, tmp_path)
    pair = [str(files["fixed"]), str(files["moving"])]
    assert main(["register", *pair, "-o", str(out), "--method", "intensity"]) == 0, capsys.readouterr().err
    earlier = {path.name: path.read_bytes() for path in out.iterdir()}
    replace, failed = os.replace, []

    def held_open_at_the_second_rename(src, dst):
        if os.path.basename(dst) == "moving_warped.tif" and not failed:  # renamed after displacement.tif
            failed.append(dst)
            raise PermissionError(errno.EACCES, "Permission denied", str(dst))
        replace(src, dst)

    monkeypatch.setattr("napari_promptseg.io._files.os.replace", held_open_at_the_second_rename)
    capsys.readouterr()
    swap()
    assert main(["register", *pair, "-o", str(out), "--method", "intensity"]) != 0  # another result
    assert failed and "Permission denied" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in out.iterdir()} == earlier


_KILLED_AT_A_RENAME = """
import os, sys
from napari_promptseg.cli import main
replace = os.replace
def killed(src, dst):  # the process dies here, as at a power cut: no cleanup runs
    if os.path.basename(dst) == sys.argv[1]:
        os._exit(9)
    replace(src, dst)
os.replace = killed
sys.exit(main(sys.argv[2:]))
"""


def test_cli_killed_between_two_renames_is_undone_by_the_next_run(birl_half, tmp_path, capsys):
    """A run killed between its renames (no cleanup can run) left its landmarks_warped.csv beside the earlier run's
    report.json, whose hash of that file no longer matched: the next run into the folder refused it ('not an earlier
    output of promptseg register, or was changed since'), and nothing said the folder mixed two runs. Now what the
    killed run renamed is put back by the next run (or :func:`undo_interrupted_replacing`) before it looks."""
    import os
    import subprocess
    import sys

    out = tmp_path / "out"
    files, swap = _swappable_pair(birl_half, tmp_path)
    landmarks = ["--landmarks-fixed", str(files["lm_fixed"]), "--landmarks-moving", str(files["lm_moving"])]
    run = ["register", str(files["fixed"]), str(files["moving"]), "-o", str(out), "--method", "intensity", *landmarks]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def kill_at(name: str) -> None:  # a run on the images swapped (other files), killed
        swap()
        done = subprocess.run([sys.executable, "-c", _KILLED_AT_A_RENAME, name, *run], env=env, capture_output=True)
        swap()
        assert done.returncode == 9, done.stderr.decode()[-2000:]

    assert main(run) == 0, capsys.readouterr().err
    kill_at("displacement.tif")  # renamed after landmarks_warped.csv
    assert main(run) == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["landmarks"]["landmarks_warped_sha256"] == _sha256(out / "landmarks_warped.csv")
    assert sorted(path.name for path in out.iterdir()) == sorted(
        ["moving_warped.tif", "displacement.tif", "landmarks_warped.csv", "report.json"]
    )
    earlier = {path.name: path.read_bytes() for path in out.iterdir()}
    kill_at("report.json")  # every other file renamed: the last step
    assert {path.name: path.read_bytes() for path in out.iterdir() if not path.name.startswith(".")} != earlier
    (out / ".promptseg.lock").unlink()  # the killed run's lock file (its lock went with it)
    from napari_promptseg.io._files import undo_interrupted_replacing

    undo_interrupted_replacing(out)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == earlier


def _sha256(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
