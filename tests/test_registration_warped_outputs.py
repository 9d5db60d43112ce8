"""Registration bug hunt on a real BIRL pair: what is warped onto the fixed image (channels-first images, moving
labels, GeoJSON annotations) by register() and `promptseg register`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_promptseg.cli import main
from napari_promptseg.errors import PromptsegError
from napari_promptseg.io import read_image
from napari_promptseg.io.landmarks import read_landmarks
from napari_promptseg.io.multiscale import read_image_named, tiff_axis_names
from napari_promptseg.methods.registration import RegistrationResult
from napari_promptseg.methods.warp import Deformation


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


def test_cli_outputs_of_an_ome_zarr_in_nanometres_open_over_it(birl_quarter, tmp_path, capsys):
    """napari-ome-zarr opens an OME-Zarr fixed image in its own numbers and unit (500 nanometer); register's warped
    image and displacement recorded its pixel size in µm (0.5: napari converts no units), so they covered a
    thousandth of the fixed image. They record it in nanometres now, and Fiji still reads 0.5 µm."""
    import warnings

    import zarr
    from napari_ome_zarr import napari_get_reader
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    from napari_promptseg._reader import get_reader
    from napari_promptseg.io.calibration import pixel_size

    paths = {}
    for role in ("fixed", "moving"):
        paths[role] = tmp_path / f"{role}.ome.zarr"
        axes = [{"name": "c", "type": "channel"}] + [{"name": a, "type": "space", "unit": "nanometer"} for a in "yx"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            root = zarr.open_group(str(paths[role]), mode="w", zarr_format=2)
            scale = [[{"type": "scale", "scale": [1.0, 500.0, 500.0]}]]
            image = np.moveaxis(read_image(birl_quarter[role]), -1, 0)
            write_image(image, root, axes=axes, fmt=FormatV04(), scale_factors=[], coordinate_transformations=scale)
    out = tmp_path / "out"
    assert main(["register", str(paths["fixed"]), str(paths["moving"]), "-o", str(out)]) == 0, capsys.readouterr().err
    opened = napari_get_reader(str(paths["fixed"]))(str(paths["fixed"]))
    assert opened[0][1]["scale"] == [500.0, 500.0]
    for _, kwargs, _ in get_reader(str(out))(str(out)):
        assert kwargs["scale"] == [500.0, 500.0] and kwargs["units"] == ["nm", "nm"], kwargs["name"]
    assert pixel_size(out / "moving_warped.tif")[:2] == pytest.approx((0.5, 0.5))
