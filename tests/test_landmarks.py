"""Landmark files (ANHIR/BIRL CSV ``,X,Y``, ``.pts``, BigWarp's and napari's CSVs): reading the shared data, round
trips, bad files."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from napari_promptseg.errors import PromptsegError
from napari_promptseg.io.landmarks import Landmarks, paired_landmarks, read_landmarks, write_landmarks


@pytest.fixture(scope="module")
def kidney(shared_data):
    return shared_data / "registration_birl" / "data-images" / "rat-kidney_" / "scale-5pc"


def test_csv_and_pts_of_birl_agree(kidney):
    csv_lm = read_landmarks(kidney / "Rat-Kidney_HE.csv")
    pts_lm = read_landmarks(kidney / "Rat-Kidney_HE.pts")
    assert len(csv_lm) == 71
    assert csv_lm.header == ("", "X", "Y")
    assert csv_lm.index[:3] == ("1", "2", "3")
    np.testing.assert_allclose(csv_lm.xy[0], [63, 309])
    np.testing.assert_allclose(csv_lm.xy, pts_lm.xy)


def test_csv_round_trip_keeps_columns_and_index(kidney, tmp_path):
    original = read_landmarks(kidney / "Rat-Kidney_PanCytokeratin.csv")
    moved = original.with_xy(original.xy + [0.25, -1.5])
    out = write_landmarks(tmp_path / "warped.csv", moved)
    lines = out.read_text().splitlines()
    assert lines[0] == ",X,Y"
    assert lines[1] == "1,62.25,288.5"
    back = read_landmarks(out)
    np.testing.assert_allclose(back.xy, moved.xy)
    assert back.index == original.index


def test_a_spreadsheets_semicolon_csv_with_decimal_commas_is_read_and_written_back_alike(kidney, tmp_path):
    """BIRL landmarks opened and saved by a spreadsheet in a locale with decimal commas (German, French...): cells
    separated by ';', '144,5' for 144.5. Refused as 'CSV header must contain X and Y columns, got [';X;Y']'; read now,
    and landmarks_warped.csv is written back the same way, so the same spreadsheet opens it."""
    original = read_landmarks(kidney / "Rat-Kidney_HE.csv")
    pairs = list(zip(original.index, original.xy, strict=True))
    rows = [";X;Y"] + [f"{i};{x + 0.5:g};{y:g}".replace(".", ",") for i, (x, y) in pairs]
    path = tmp_path / "Rat-Kidney_HE (Excel).csv"
    path.write_text("\r\n".join(rows) + "\r\n", encoding="utf-8-sig")
    read = read_landmarks(path)
    np.testing.assert_allclose(read.xy, original.xy + [0.5, 0])
    assert read.index == original.index
    out = write_landmarks(tmp_path / "warped.csv", read.with_xy(read.xy + [0.25, 0]))
    lines = out.read_text().splitlines()
    assert lines[0] == ";X;Y" and lines[1] == "1;63,75;309"
    np.testing.assert_allclose(read_landmarks(out).xy, original.xy + [0.75, 0])
    # a tab-separated copy with decimal points, as another spreadsheet saves it
    tabbed = tmp_path / "tabbed.csv"
    tabbed.write_text("\tX\tY\n" + "".join(f"{i}\t{x}\t{y}\n" for i, (x, y) in pairs))
    np.testing.assert_allclose(read_landmarks(tabbed).xy, original.xy)


def test_pts_round_trip(tmp_path):
    xy = np.array([[1.5, 2.0], [300.25, 17.75]])
    path = write_landmarks(tmp_path / "p.pts", xy)
    assert path.read_text().splitlines()[:2] == ["point", "2"]
    np.testing.assert_allclose(read_landmarks(path).xy, xy)


def test_count_mismatch_is_an_error_unless_truncation_is_asked(kidney):
    fixed = read_landmarks(kidney / "Rat-Kidney_HE.csv")
    moving = read_landmarks(kidney / "Rat-Kidney_PanCytokeratin.csv")
    with pytest.raises(PromptsegError, match="landmark count mismatch: fixed has 71, moving has 69"):
        paired_landmarks(fixed, moving)
    a, b = paired_landmarks(fixed, moving, allow_truncate=True)
    assert a.shape == b.shape == (69, 2)
    np.testing.assert_allclose(a, fixed.xy[:69])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,b\n1,2\n", "must contain X and Y"),
        (",X,Y\n1,3,oops\n", "line 2: cannot read X, Y"),
        (",X,Y\n", "no landmarks"),
    ],
)
def test_bad_csv_names_the_file_and_problem(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(PromptsegError, match=message) as info:
        read_landmarks(path)
    assert "bad.csv" in str(info.value)


def test_bad_pts_and_missing_file(tmp_path):
    path = tmp_path / "bad.pts"
    path.write_text("point\n3\n1 2\n3 4\n")
    with pytest.raises(PromptsegError, match="header says 3 points but 2"):
        read_landmarks(path)
    with pytest.raises(PromptsegError, match="no such landmark file"):
        read_landmarks(tmp_path / "missing.csv")


def test_landmarks_with_xy_checks_shape():
    lm = Landmarks(xy=np.zeros((3, 2)))
    with pytest.raises(PromptsegError, match=r"expected \(3, 2\)"):
        lm.with_xy(np.zeros((2, 2)))


def _bigwarp_file(path, moving: np.ndarray, fixed: np.ndarray, inactive: tuple[float, float] | None = None):
    """A BigWarp landmark export: no header, "Pt-i","true", moving x, y, fixed x, y (a point placed in one image
    only is "false" with Infinity for the other's coordinates)."""
    pairs = enumerate(zip(moving, fixed, strict=True))
    lines = [f'"Pt-{i}","true","{m[0]:.6f}","{m[1]:.6f}","{f[0]:.6f}","{f[1]:.6f}"' for i, (m, f) in pairs]
    if inactive is not None:
        lines.insert(1, f'"Pt-{len(lines)}","false","{inactive[0]}","{inactive[1]}","Infinity","Infinity"')
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_bigwarp_landmark_file_gives_each_set_by_role(shared_data, tmp_path):
    """BigWarp's landmark CSV (both sets in one headerless file) was refused: 'CSV header must contain X and Y'."""
    from napari_promptseg.io.landmarks import is_bigwarp_csv

    folder = shared_data / "registration_birl" / "data-images" / "landmarks"
    fixed = read_landmarks(folder / "artificial_reference.csv")
    moving = read_landmarks(folder / "artificial_moving-affine.csv")
    path = _bigwarp_file(tmp_path / "bigwarp.csv", moving.xy, fixed.xy, inactive=(12.5, 40.0))
    assert is_bigwarp_csv(path) and not is_bigwarp_csv(folder / "artificial_reference.csv")
    read_fixed, read_moving = read_landmarks(path, role="fixed"), read_landmarks(path, role="moving")
    np.testing.assert_allclose(read_fixed.xy, fixed.xy)  # the inactive point left out of both
    np.testing.assert_allclose(read_moving.xy, moving.xy)
    assert read_fixed.index == read_moving.index == tuple(f"Pt-{i}" for i in range(len(fixed)))
    a, b = paired_landmarks(read_fixed, read_moving)
    np.testing.assert_allclose(a, fixed.xy)
    np.testing.assert_allclose(b, moving.xy)
    with pytest.raises(PromptsegError, match="bigwarp.csv: a BigWarp landmark file holds both .* --landmarks-moving"):
        read_landmarks(path)
    # the warped moving set written back: an ANHIR CSV named by BigWarp's points
    out = write_landmarks(tmp_path / "warped.csv", read_moving)
    assert out.read_text().splitlines()[:2] == [",X,Y", f"Pt-0,{moving.xy[0][0]:g},{moving.xy[0][1]:g}"]
    np.testing.assert_allclose(read_landmarks(out).xy, moving.xy)


#: the files whose opening the audit hook below records, and the record (an audit hook stays for the process)
_WATCHED: set[str] = set()
_OPENED: list[str] = []


def _record_opening(event: str, args: tuple) -> None:
    if event == "open" and isinstance(args[0], str | os.PathLike) and os.fspath(args[0]) in _WATCHED:
        _OPENED.append(os.fspath(args[0]))


def test_a_landmark_csv_is_opened_once(shared_data, tmp_path):
    """read_landmarks opened every CSV twice (once to tell whether it is BigWarp's, once to parse it): twice the
    reads of a file on a network share, and two reads that need not see one file. Now once, BigWarp's or ANHIR's."""
    folder = shared_data / "registration_birl" / "data-images" / "landmarks"
    fixed, moving = (read_landmarks(folder / f"artificial_{n}.csv") for n in ("reference", "moving-affine"))
    bigwarp = _bigwarp_file(tmp_path / "bigwarp.csv", moving.xy, fixed.xy)
    anhir = folder / "artificial_reference.csv"
    sys.addaudithook(_record_opening)
    _WATCHED.update({str(bigwarp), str(anhir)})
    try:
        np.testing.assert_allclose(read_landmarks(bigwarp, role="fixed").xy, fixed.xy)
        np.testing.assert_allclose(read_landmarks(anhir).xy, fixed.xy)
    finally:
        _WATCHED.clear()
    opened = list(_OPENED)
    assert opened == [str(bigwarp), str(anhir)]


def test_a_napari_points_export_is_read_as_row_column(shared_data, tmp_path):
    """napari's Points layer CSV (index,axis-0,axis-1: row, column) was refused: 'must contain X and Y columns'."""
    from napari_builtins.io._write import napari_write_points

    kidney = shared_data / "registration_birl" / "data-images" / "rat-kidney_" / "scale-5pc"
    anhir = read_landmarks(kidney / "Rat-Kidney_HE.csv")
    path = tmp_path / "points.csv"
    napari_write_points(str(path), anhir.xy[:, ::-1], {})  # a Points layer holds (row, column)
    assert path.read_text().splitlines()[0] == "index,axis-0,axis-1"
    points = read_landmarks(path)
    np.testing.assert_allclose(points.xy, anhir.xy)
    moved = write_landmarks(tmp_path / "moved.csv", points.with_xy(points.xy + [2.0, -1.0]))
    assert moved.read_text().splitlines()[0] == "index,axis-0,axis-1"  # written back in napari's layout
    np.testing.assert_allclose(read_landmarks(moved).xy, anhir.xy + [2.0, -1.0])
    # a 3D layer's points (drawn over a (C, Y, X) composite, or beside a volume): its last two axes, as the
    # Registration widget reads the layer, when all lie on one plane; the CLI refused the file ('export points of a
    # 2D layer') while the widget took the layer
    on_plane = np.c_[np.full(len(anhir), 2.0), anhir.xy[:, ::-1]]
    napari_write_points(str(tmp_path / "zyx.csv"), on_plane, {})
    points = read_landmarks(tmp_path / "zyx.csv")
    np.testing.assert_allclose(points.xy, anhir.xy)
    moved = write_landmarks(tmp_path / "zyx moved.csv", points.with_xy(points.xy + [2.0, -1.0]))
    assert moved.read_text().splitlines()[1].split(",")[1] == "2.0"  # its plane kept
    np.testing.assert_allclose(read_landmarks(moved).xy, anhir.xy + [2.0, -1.0])
    on_plane[5, 0] = 3
    napari_write_points(str(tmp_path / "zyx.csv"), on_plane, {})
    with pytest.raises(PromptsegError, match=r"zyx.csv: line 7: landmarks on several planes: .* at axis-0=3"):
        read_landmarks(tmp_path / "zyx.csv")


def test_pixel_size_is_read_as_fiji_reads_it(tmp_path):
    """The calibration BigWarp writes landmarks in: OME (OME-TIFF PhysicalSize, OME-Zarr scale), an ImageJ TIFF's
    resolution and unit, a TIFF's resolution in cm; none for tifffile's default 1 px per unit, or a pixel unit."""
    import tifffile
    from ome_zarr.format import FormatV04

    from napari_promptseg.io.calibration import PixelSize, pixel_size

    from .test_bigimage import write_ome_zarr

    image = np.zeros((64, 80), np.uint8)
    tifffile.imwrite(tmp_path / "imagej.tif", image, imagej=True, resolution=(2.0, 4.0), metadata={"unit": "micron"})
    tifffile.imwrite(tmp_path / "ome.ome.tif", image, ome=True, metadata={"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
    tifffile.imwrite(tmp_path / "cm.tif", image, resolution=(20000, 20000), resolutionunit="CENTIMETER")
    tifffile.imwrite(tmp_path / "plain.tif", image)
    tifffile.imwrite(tmp_path / "pixel.tif", image, imagej=True, resolution=(1.0, 1.0), metadata={"unit": "pixel"})
    write_ome_zarr(tmp_path / "image.zarr", image[None], FormatV04(), pixel_size=0.25, levels=2)
    assert pixel_size(tmp_path / "imagej.tif") == PixelSize(0.5, 0.25, "micron")
    assert pixel_size(tmp_path / "ome.ome.tif") == PixelSize(0.5, 0.5, "µm")
    assert pixel_size(tmp_path / "cm.tif") == PixelSize(5e-5, 5e-5, "cm")
    assert pixel_size(tmp_path / "image.zarr")[:2] == (0.25, 0.25)
    assert [pixel_size(tmp_path / f"{name}.tif") for name in ("plain", "pixel")] == [None] * 2


def test_a_tiff_at_72_dots_per_inch_is_not_calibrated(tmp_path):
    """Photoshop, scanners and many exports write 72 pixels per inch without measuring anything, and Fiji reads such
    a TIFF as uncalibrated (its BigWarp landmarks are in pixels); it was taken for 1/72 inch per pixel, so those
    landmarks were multiplied by 72. Another resolution in inches stays a calibration."""
    import tifffile

    from napari_promptseg.io.calibration import PixelSize, pixel_size

    image = np.zeros((64, 80), np.uint8)
    tifffile.imwrite(tmp_path / "screen.tif", image, resolution=(72.0, 72.0), resolutionunit="INCH")
    tifffile.imwrite(tmp_path / "scan.tif", image, resolution=(300.0, 300.0), resolutionunit="INCH")
    assert pixel_size(tmp_path / "screen.tif") is None
    assert pixel_size(tmp_path / "scan.tif") == PixelSize(1 / 300, 1 / 300, "inch")


def _without_resolution_unit(path) -> None:
    """Rename the ResolutionUnit tag (296) of a TIFF's first page to an unknown one (298, still in tag order): a
    file with X/YResolution and no unit, which tifffile cannot write (it always writes the unit)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        entry = tif.pages.first.tags["ResolutionUnit"].offset
        code = (298).to_bytes(2, "little" if tif.byteorder == "<" else "big")
    with open(path, "r+b") as fh:
        fh.seek(entry)
        fh.write(code)


def test_pixel_size_edge_cases_are_read_as_fiji_and_bio_formats_read_them(tmp_path):
    """ImageJ's TIFF reader (what Fiji, and so BigWarp, opens a TIFF with) calibrates a ResolutionUnit NONE file
    with 1 / resolution per pixel and a blank unit: such an image was taken as uncalibrated, its BigWarp landmarks
    as pixels. Without a ResolutionUnit tag ImageJ leaves the image uncalibrated (the TIFF spec's default, inch, is
    not applied). An ImageJ TIFF in cm whose description says um is scaled to um, as ImageJ does. OME (Bio-Formats
    in Fiji): a PhysicalSize without its unit is in µm, each axis by its own unit, converted to µm (Fiji's
    calibration), and a missing PhysicalSizeY is PhysicalSizeX (an OME-TIFF with X alone was uncalibrated; one in
    nm with a unitless Y gave Y in nm)."""
    import tifffile

    from napari_promptseg.io.calibration import PixelSize, pixel_size

    image = np.zeros((64, 80), np.uint8)
    tifffile.imwrite(tmp_path / "ratio.tif", image, resolution=(2.0, 4.0), resolutionunit="NONE")
    tifffile.imwrite(tmp_path / "default.tif", image)  # tifffile's own: 1 px per unit NONE, the identity
    tifffile.imwrite(tmp_path / "no_unit.tif", image, resolution=(2.0, 4.0), resolutionunit="INCH")
    _without_resolution_unit(tmp_path / "no_unit.tif")
    with tifffile.TiffFile(tmp_path / "no_unit.tif") as tif:
        assert "ResolutionUnit" not in tif.pages.first.tags and "XResolution" in tif.pages.first.tags
    tifffile.imwrite(tmp_path / "ij_cm.tif", image, imagej=True, resolution=(2e4, 2e4), resolutionunit="CENTIMETER",
                     metadata={"unit": "um"})  # fmt: skip
    tifffile.imwrite(tmp_path / "x_only.ome.tif", image, ome=True, metadata={"PhysicalSizeX": 0.5})
    tifffile.imwrite(tmp_path / "mixed.ome.tif", image, ome=True,
                     metadata={"PhysicalSizeX": 500, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 0.25})  # fmt: skip
    with tifffile.TiffFile(tmp_path / "x_only.ome.tif") as tif:
        assert "PhysicalSizeX=" in tif.ome_metadata and "Unit=" not in tif.ome_metadata
    assert pixel_size(tmp_path / "ratio.tif") == PixelSize(0.5, 0.25, None)
    assert str(pixel_size(tmp_path / "ratio.tif")) == "0.5 x 0.25 units/px"
    assert pixel_size(tmp_path / "default.tif") is None
    assert pixel_size(tmp_path / "no_unit.tif") is None
    ij_cm, mixed = pixel_size(tmp_path / "ij_cm.tif"), pixel_size(tmp_path / "mixed.ome.tif")
    assert ij_cm[:2] == pytest.approx((0.5, 0.5)) and ij_cm.unit == "um"
    assert pixel_size(tmp_path / "x_only.ome.tif") == PixelSize(0.5, 0.5, "µm")
    assert mixed[:2] == pytest.approx((0.5, 0.25)) and mixed.unit == "µm"


def test_a_3d_bigwarp_file_is_read_on_its_plane_and_refused_across_planes(shared_data, tmp_path):
    """A BigWarp session on images opened as 3D writes x, y, z per point, also when every point is on one section;
    such a file was refused whole ('3D BigWarp landmarks ... export 2D ones', which BigWarp cannot do for a 3D
    session). A set whose points all lie on one plane is that plane's 2D landmarks now (said), one across planes is
    refused naming the file, the line, the two planes and what to do."""
    from napari_promptseg.io.landmarks import read_landmark_pair

    root = shared_data / "registration_birl" / "data-images"
    fixed = read_landmarks(root / "landmarks" / "artificial_reference.csv").xy
    moving = read_landmarks(root / "landmarks" / "artificial_moving-affine.csv").xy
    rows = [
        f'"Pt-{i}","true","{m[0]:.6f}","{m[1]:.6f}","0.0","{f[0]:.6f}","{f[1]:.6f}","4.0"'
        for i, (m, f) in enumerate(zip(moving, fixed, strict=True))
    ]
    # a point placed in the moving image only: its plane does not count
    rows.insert(1, '"Pt-x","false","12.5","40.0","9.0","Infinity","Infinity","Infinity"')
    path = tmp_path / "bigwarp3d.csv"
    path.write_text("\n".join(rows) + "\n")
    np.testing.assert_allclose(read_landmarks(path, role="fixed").xy, fixed)
    np.testing.assert_allclose(read_landmarks(path, role="moving").xy, moving)
    images = [root / "images" / f"artificial_{name}.jpg" for name in ("reference", "moving-affine")]
    lm_fixed, lm_moving, _, warnings = read_landmark_pair(path, path, *images)
    np.testing.assert_allclose(lm_fixed.xy, fixed)
    said = [w for w in warnings if "3D BigWarp landmarks" in w]
    assert len(said) == 2 and "fixed" in said[0] and "z=4" in said[0] and "moving" in said[1] and "z=0" in said[1]

    rows[3] = rows[3].rsplit(",", 1)[0] + ',"7.0"'  # the third fixed point on another section
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(PromptsegError, match=r"bigwarp3d.csv: line 4: .*fixed.* z=7.* line 1.* z=4.*one section"):
        read_landmarks(path, role="fixed")
    np.testing.assert_allclose(read_landmarks(path, role="moving").xy, moving)  # its moving points: one plane


def test_a_utf16_spreadsheet_export_is_read_and_a_file_that_is_no_text_is_refused_by_name(kidney, tmp_path):
    """Excel's "Unicode Text" (and Windows PowerShell's Out-File) saves UTF-16 with a byte-order mark; that and an
    image given as a landmark file stopped `promptseg register` with a UnicodeDecodeError traceback."""
    original = read_landmarks(kidney / "Rat-Kidney_HE.csv")
    rows = ["\tX\tY"] + [f"{i}\t{x:g}\t{y:g}" for i, (x, y) in zip(original.index, original.xy, strict=True)]
    path = tmp_path / "unicode text.csv"
    path.write_text("\r\n".join(rows) + "\r\n", encoding="utf-16")
    np.testing.assert_allclose(read_landmarks(path).xy, original.xy)
    image = (kidney / "Rat-Kidney_HE.jpg").read_bytes()
    for name in ("image.csv", "image.pts"):
        (tmp_path / name).write_bytes(image)
        with pytest.raises(PromptsegError, match=f"{name}: not a text landmark file"):
            read_landmarks(tmp_path / name)


def test_csv_landmarks_on_several_planes_are_refused_as_bigwarps_are(tmp_path):
    """An X, Y, Z file (a 3D tool's export) was read as its X and Y, dropping Z: points of several sections paired
    and measured as one section's. Points all on one plane are that plane's 2D landmarks."""
    path = tmp_path / "xyz.csv"
    path.write_text(",X,Y,Z\n1,144,122,3\n2,281,66,3\n")
    np.testing.assert_allclose(read_landmarks(path).xy, [[144, 122], [281, 66]])
    path.write_text(",X,Y,Z\n1,144,122,3\n2,281,66,3\n3,10,20,5\n")
    with pytest.raises(PromptsegError, match=r"xyz.csv: line 4: landmarks on several planes: this point is at Z=5"):
        read_landmarks(path)


def test_whole_slide_coordinates_are_written_to_the_decimals_asked(tmp_path):
    """Written with 6 significant digits (':g'): a landmark of a full-resolution slide at x = 123456.789 came back
    as 123457 (0.2 px off), one past a million px as 1.23457e+06 (4 px off)."""
    xy = np.array([[123456.789, 98765.4321], [1234567.5, 0.25]])
    for name in ("slide.csv", "slide.pts"):
        back = read_landmarks(write_landmarks(tmp_path / name, xy)).xy
        np.testing.assert_allclose(back, np.round(xy, 3), rtol=0, atol=1e-9)


def test_tab_separated_landmarks_are_read_as_tsv_or_txt_and_other_txt_is_refused_saying_what_it_expects(
    kidney, tmp_path
):
    """A tab-separated landmark table (a spreadsheet's "Text (tab-delimited)" export, saved as .tsv or .txt) was
    refused: .tsv was an unknown format, and .txt was read as an elastix .pts ("first line must be 'point' or
    'index'"). A .tsv is a table; a .txt is a .pts when its first line says so, else a table with a header; a .txt
    that is neither is refused naming both."""
    original = read_landmarks(kidney / "Rat-Kidney_HE.csv")
    table = "\tX\tY\n" + "".join(f"{i}\t{x:g}\t{y:g}\n" for i, (x, y) in zip(original.index, original.xy, strict=True))
    for name in ("landmarks.tsv", "landmarks.txt"):
        (tmp_path / name).write_text(table)
        read = read_landmarks(tmp_path / name)
        np.testing.assert_allclose(read.xy, original.xy)
        assert read.index == original.index
    (tmp_path / "commas.txt").write_text((kidney / "Rat-Kidney_HE.csv").read_text())
    np.testing.assert_allclose(read_landmarks(tmp_path / "commas.txt").xy, original.xy)
    np.testing.assert_allclose(read_landmarks(write_landmarks(tmp_path / "elastix.txt", original.xy)).xy, original.xy)
    (tmp_path / "notes.txt").write_text("landmarks of the kidney\n63 309\n")
    with pytest.raises(PromptsegError, match=r"notes\.txt.*'point' or 'index'.*header.*X and Y"):
        read_landmarks(tmp_path / "notes.txt")
    (tmp_path / "nocolumns.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(PromptsegError, match=r"nocolumns\.tsv.*must contain X and Y"):
        read_landmarks(tmp_path / "nocolumns.tsv")
    (tmp_path / "landmarks.json").write_text("{}")
    with pytest.raises(PromptsegError, match=r"landmarks\.json: unknown landmark format.*\.tsv"):
        read_landmarks(tmp_path / "landmarks.json")


def test_a_tsv_is_written_tab_separated_and_a_csv_comma_separated_whatever_was_read(kidney, tmp_path):
    """write_landmarks to a .tsv wrote the delimiter the landmarks were read with: a bare array (or a CSV's
    landmarks) gave a comma-separated .tsv, and landmarks read from a .tsv a tab-separated .csv (register's
    landmarks_warped.csv of a .tsv moving file too). The name decides: a .tsv is tab-separated, a .csv
    comma-separated (';' kept for a spreadsheet's ';' CSV with decimal commas), each read back the same."""
    from napari_promptseg.io._files import replacing

    original = read_landmarks(kidney / "Rat-Kidney_HE.csv")
    for landmarks in (original.xy, original):
        out = write_landmarks(tmp_path / "array.tsv", landmarks)
        lines = out.read_text().splitlines()
        assert lines[0] == "\tX\tY" and lines[1] == "1\t63\t309"
        np.testing.assert_allclose(read_landmarks(out).xy, original.xy)
    tabbed = read_landmarks(out)
    assert tabbed.index == original.index
    back = write_landmarks(tmp_path / "from_tsv.csv", tabbed.with_xy(tabbed.xy + 0.5))
    assert back.read_text().splitlines()[:2] == [",X,Y", "1,63.5,309.5"]
    np.testing.assert_allclose(read_landmarks(back).xy, original.xy + 0.5)
    # written through a temporary file renamed in (register's landmarks_warped.csv): the final name decides
    with replacing(tmp_path / "landmarks_warped.csv") as temp:
        write_landmarks(temp, tabbed)
    assert (tmp_path / "landmarks_warped.csv").read_text().splitlines()[1] == "1,63,309"
    # a spreadsheet's ';' CSV with decimal commas: ';' in a .csv as before, tabs in a .tsv (its decimal commas kept)
    pairs = zip(original.index, original.xy, strict=True)
    rows = [";X;Y"] + [f"{i};{x + 0.5:g};{y:g}".replace(".", ",") for i, (x, y) in pairs]
    (tmp_path / "excel.csv").write_text("\n".join(rows) + "\n")
    excel = read_landmarks(tmp_path / "excel.csv")
    assert write_landmarks(tmp_path / "excel_again.csv", excel).read_text().splitlines()[1] == "1;63,5;309"
    as_tsv = write_landmarks(tmp_path / "excel.tsv", excel)
    assert as_tsv.read_text().splitlines()[1] == "1\t63,5\t309"
    np.testing.assert_allclose(read_landmarks(as_tsv).xy, original.xy + [0.5, 0])


def test_a_row_with_more_cells_than_the_header_is_refused_by_its_line(kidney, tmp_path):
    """A point typed with a decimal comma in the comma-separated BIRL file ('2,122,750,108.280' for x 122.750) was
    read as x 122, y 750, a point 640 px off, silently: the TRE took it. A row with more cells than the header is
    refused now, naming its line and what it holds; empty cells past the header (a spreadsheet's trailing commas)
    are no cells."""
    lines = (kidney / "Rat-Kidney_HE.csv").read_text().splitlines()
    index, x, y = lines[2].split(",")
    lines[2] = f"{index},{x.replace('.', ',') if '.' in x else x + ',5'},{y}"
    path = tmp_path / "decimal comma.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(PromptsegError) as refused:
        read_landmarks(path)
    said = str(refused.value)
    assert "decimal comma.csv" in said and "line 3" in said and "4 cells" in said and "header has 3" in said, said
    lines[2] = f"{index},{x},{y},,"
    path.write_text("\n".join(lines) + "\n")
    assert np.array_equal(read_landmarks(path).xy, read_landmarks(kidney / "Rat-Kidney_HE.csv").xy)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("point\n3\n1 2\n3\n5 6\n", "line 4: one number ('3'), a point needs its x and y"),
        ("point\n3\n1 2\n\n1,5 4\n5 6\n", "line 5: cannot read x, y from '1,5 4'"),
    ],
)
def test_a_pts_point_without_its_two_numbers_is_named_by_its_line(tmp_path, text, said):
    """A .pts point with one number said 'header says 3 points but 3 coordinate lines follow' (three there were),
    and one with a decimal comma 'cannot parse the point count or coordinates': which line, left to find."""
    path = tmp_path / "moving.pts"
    path.write_text(text)
    with pytest.raises(PromptsegError) as refused:
        read_landmarks(path)
    assert str(refused.value) == f"{path}: {said}"
