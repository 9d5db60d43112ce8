"""Landmark files as used by ANHIR/BIRL: CSV (or tab-separated ``.tsv``, ``.txt``) with an index column and ``X``,
``Y`` columns, or ImageJ/elastix ``.pts`` (or ``.txt``);
also napari's Points layer CSV (``index,axis-0,axis-1``: row, column) and BigWarp's landmark CSV (no header; rows
``"Pt-0","true",moving x,moving y,fixed x,fixed y``: one file holding both sets, read with ``role``).

Coordinates are pixels with the origin at the top-left corner: X = column, Y = row (napari Points are (row, col);
the widget converts). BigWarp writes its image's calibrated units (micrometres...) when the image has a pixel size:
:func:`read_landmark_pair` reads them in pixels of each image (:mod:`.calibration`). Reading keeps the file's layout
in :class:`Landmarks` so that a transformed copy can be written back with the same columns.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import PromptsegError
from ._files import replacing_temp_of
from .calibration import pixel_size

LANDMARK_SUFFIXES = (".csv", ".tsv", ".pts", ".txt")
#: the first line of an elastix/ImageJ .pts file (a .txt holding one is one: elastix's own suffix)
PTS_KINDS = ("point", "index")


@dataclass(frozen=True)
class Landmarks:
    """(N, 2) x, y pixel coordinates plus what is needed to write them back in the same format."""

    xy: np.ndarray
    #: "csv" or "pts"
    format: str = "csv"
    #: CSV header and the row index column (ANHIR files start with an unnamed index column)
    header: tuple[str, ...] = ("", "X", "Y")
    index: tuple[str, ...] = field(default=())
    #: .pts header word ("point" or "index")
    pts_kind: str = "point"
    #: each CSV data row's cells as read (Z, a name, a comment...): written back with only X and Y replaced
    rows: tuple[tuple[str, ...], ...] = field(default=())
    #: the CSV's delimiter, and whether its numbers have a decimal comma (a spreadsheet's in many locales: "1;12,5;7")
    delimiter: str = ","
    decimal_comma: bool = False
    #: read from a BigWarp file: in its image's calibrated units where it has one (micrometres...), else pixels
    bigwarp: bool = False
    #: a 3D BigWarp file's set, all on one plane: that plane's z (x, y read; None: a 2D file, or not BigWarp's)
    plane: float | None = None

    def __len__(self) -> int:
        return int(len(self.xy))

    def with_xy(self, xy: np.ndarray) -> Landmarks:
        xy = np.asarray(xy, dtype=np.float64)
        if xy.shape != self.xy.shape:
            raise PromptsegError(f"landmarks: expected {self.xy.shape} coordinates, got {xy.shape}")
        return replace(self, xy=xy)


#: BigWarp's landmark file: one set per role, in this order of its coordinate columns
BIGWARP_ROLES = ("moving", "fixed")


def read_landmarks(path: str | Path, role: str | None = None) -> Landmarks:
    """Read an ANHIR/BIRL ``.csv`` (``,X,Y``), a napari Points ``.csv`` (``index,axis-0,axis-1``), a ``.pts``
    landmark file, or one set of a BigWarp landmark ``.csv`` (``role``: "moving" or "fixed"; its inactive rows,
    points placed in one image only, left out; its coordinates as written: :func:`read_landmark_pair` makes them
    pixels). A ``.tsv`` is a table as a CSV is (tab-separated); a ``.txt`` is a ``.pts`` when its first line is
    'point' or 'index' (elastix saves them so), else a table with a header (a spreadsheet's tab-delimited text)."""
    path = Path(path)
    if not path.is_file():
        raise PromptsegError(f"{path}: no such landmark file")
    suffix = path.suffix.lower()
    if suffix not in LANDMARK_SUFFIXES:
        raise PromptsegError(f"{path}: unknown landmark format {suffix!r}; expected one of {LANDMARK_SUFFIXES}")
    text = _landmark_text(path)
    if suffix == ".txt":
        return _parse_pts(text, path) if _first_line(text).lower() in PTS_KINDS else _parse_txt_table(text, path)
    if suffix == ".tsv":
        return _parse_csv(text, path)
    if suffix == ".csv":
        if _is_bigwarp_row(_first_row(text.splitlines())):  # the text read above: the file is opened once
            return _parse_bigwarp(text, path, role)
        return _parse_csv(text, path)
    return _parse_pts(text, path)


def _landmark_text(path: Path) -> str:
    """The text of a landmark file: UTF-8 (a byte-order mark dropped), or UTF-16 with its byte-order mark (Excel's
    "Unicode Text", Windows PowerShell's Out-File); anything else is refused naming the file (an image given as
    landmarks stopped with a UnicodeDecodeError)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-16" if data.startswith((b"\xff\xfe", b"\xfe\xff")) else "utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PromptsegError(
            f"{path}: not a text landmark file ({exc.reason} at byte {exc.start}); expected a CSV or .pts saved as "
            "text (UTF-8)"
        ) from None


def read_landmark_pair(
    fixed: str | Path, moving: str | Path, fixed_image: str | Path, moving_image: str | Path
) -> tuple[Landmarks, Landmarks, dict[str, str], list[str]]:
    """The fixed and the moving landmarks in pixels of their images (``fixed`` may be ``moving``: one BigWarp file
    holds both), the pixel size each BigWarp set was divided by (by role, as text), and warnings: a BigWarp file
    on an image without a pixel size is read as pixels, said once per file naming it and the image(s); a 3D BigWarp
    file's set read on its one plane, said per set (the 2D image it is taken for)."""
    sizes: dict[str, str] = {}
    uncalibrated: dict[Path, list[str]] = {}
    planes: list[str] = []
    sets = []
    for role, path, image in (("fixed", fixed, fixed_image), ("moving", moving, moving_image)):
        landmarks = read_landmarks(path, role=role)
        if landmarks.plane is not None:
            planes.append(
                f"{path}: 3D BigWarp landmarks, every {role} point on the plane z={landmarks.plane:g}: read as 2D "
                f"(x, y) landmarks of {image}"
            )
        size = pixel_size(image) if landmarks.bigwarp else None
        if size is not None:
            sizes[role] = str(size)
            landmarks = landmarks.with_xy(landmarks.xy / (size.x, size.y))
        elif landmarks.bigwarp:
            uncalibrated.setdefault(Path(path), []).append(str(image))
        sets.append(landmarks)
    warnings = [
        f"{path}: BigWarp landmarks read as pixels: {' and '.join(images)} "
        f"{'has' if len(images) == 1 else 'have'} no pixel size (BigWarp writes calibrated units, e.g. µm, for a "
        "calibrated image)"
        for path, images in uncalibrated.items()
    ]
    return sets[0], sets[1], sizes, planes + warnings


def is_bigwarp_csv(path: str | Path) -> bool:
    """Whether ``path`` is a BigWarp landmark file: no header, each row a name, "true"/"false" (active), then the
    moving and the fixed point's coordinates (2 or 3 each)."""
    try:
        return _is_bigwarp_row(_first_row(_landmark_text(Path(path)).splitlines()))
    except (OSError, PromptsegError):
        return False


def _first_row(lines: Iterable[str]) -> list[str]:
    """The first CSV row with a cell that is not blank ([] for none)."""
    return next((row for row in csv.reader(lines) if any(cell.strip() for cell in row)), [])


def _is_bigwarp_row(first: list[str]) -> bool:
    """Whether a CSV's first row is BigWarp's: a name, "true"/"false", then 4 or 6 coordinates (no header)."""
    return len(first) in (6, 8) and first[1].strip().lower() in ("true", "false") and _all_numbers(first[2:])


def _all_numbers(cells: list[str]) -> bool:
    try:
        [float(cell) for cell in cells]
    except ValueError:
        return False
    return True


def _parse_bigwarp(text: str, path: Path, role: str | None) -> Landmarks:
    """One set of a BigWarp file. A 3D file (x, y, z per point: a session on images opened as 3D) is read as 2D
    when every active point of the set lies on one plane (one z: a section's landmarks), and refused otherwise:
    registration here is 2D."""
    if role not in BIGWARP_ROLES:
        raise PromptsegError(
            f"{path}: a BigWarp landmark file holds both the moving and the fixed landmarks; say which to read "
            "(role='moving' or 'fixed'; in the CLI give the file to both --landmarks-fixed and --landmarks-moving)"
        )
    # (line number in the file, cells) of each row that is not blank
    rows = [(n, row) for n, row in enumerate(csv.reader(text.splitlines()), start=1) if any(c.strip() for c in row)]
    dims = (len(rows[0][1]) - 2) // 2
    start = 2 + dims * BIGWARP_ROLES.index(role)
    xy, names, read_lines = [], [], []
    plane: tuple[int, float] | None = None  # the first active point's line and z (3D)
    for line_no, row in rows:
        if len(row) != 2 + 2 * dims or not _all_numbers(row[2:]):
            raise PromptsegError(
                f"{path}: line {line_no}: a {dims}D BigWarp row is a name, true/false and {2 * dims} numbers "
                f"(the moving point's {dims} coordinates, then the fixed one's); got {row}"
            )
        if row[1].strip().lower() != "true":  # placed in one image only: no pair (BigWarp leaves it out too)
            continue
        if dims == 3:
            z = float(row[start + 2])
            if plane is None:
                plane = (line_no, z)
            elif z != plane[1]:
                raise PromptsegError(
                    f"{path}: line {line_no}: 3D BigWarp landmarks on several planes: this {role} point is at "
                    f"z={z:g}, the one on line {plane[0]} at z={plane[1]:g}; registration here is 2D and takes "
                    "the landmarks of one section: keep only that section's points in the file (delete or "
                    "deactivate the others in BigWarp), and register that section of each image"
                )
        xy.append((float(row[start]), float(row[start + 1])))
        names.append(row[0].strip())
        read_lines.append(line_no)
    arr = _check_xy(np.asarray(xy, dtype=np.float64).reshape(-1, 2), path, read_lines)
    # written back (the warped moving set) as an ANHIR CSV named by BigWarp's point names
    return Landmarks(xy=arr, format="csv", index=tuple(names), bigwarp=True, plane=None if plane is None else plane[1])


def _napari_axes(upper: list[str]) -> list[int]:
    """The columns of a napari Points CSV's axes (axis-0, axis-1, ...) in axis order, [] for another header."""
    axes = []
    while f"AXIS-{len(axes)}" in upper:
        axes.append(upper.index(f"AXIS-{len(axes)}"))
    return axes if len(axes) >= 2 else []


def _xy_columns(upper: list[str]) -> tuple[int, int] | None:
    """The X and Y columns of an upper-cased CSV header: ANHIR's X and Y, or napari's last two axes (row, column:
    the plane napari shows, as the Registration widget reads a Points layer)."""
    if "X" in upper and "Y" in upper:
        return upper.index("X"), upper.index("Y")
    axes = _napari_axes(upper)
    return (axes[-1], axes[-2]) if axes else None


def _plane_columns(upper: list[str]) -> list[int]:
    """The columns that place a point on a plane (an X, Y, Z file's Z; a napari export's axes before its last two):
    2D landmarks need one value in each."""
    if "X" in upper and "Y" in upper:
        return [upper.index("Z")] if "Z" in upper else []
    return _napari_axes(upper)[:-2]


def _first_line(text: str) -> str:
    """The first line of ``text`` that is not blank, stripped ("" for none)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _delimiter(first: str) -> str:
    """A table's delimiter, told by its first line: ',', else ';' (a spreadsheet saved in a locale with decimal
    commas) or a tab (its "text, tab-delimited")."""
    return next((d for d in (";", "\t") if d in first and "," not in first), ",")


def _parse_txt_table(text: str, path: Path) -> Landmarks:
    """A ``.txt`` that is no .pts: a table with a header naming its X and Y columns (tab, comma or ';' between
    cells), or refused saying what either would look like."""
    first = _first_line(text)
    header = [cell.strip().upper() for cell in first.split(_delimiter(first))]
    if _xy_columns(header) is None:
        raise PromptsegError(
            f"{path}: neither an elastix .pts (its first line 'point' or 'index', then the number of points) nor a "
            "table with a header naming X and Y columns (or napari's axis-0, axis-1), cells separated by tabs, "
            f"commas or ';'; its first line is {first[:80]!r}"
        )
    return _parse_csv(text, path)


def _parse_csv(text: str, path: Path) -> Landmarks:
    lines = text.splitlines()
    delimiter = _delimiter(_first_line(text))
    # (line number in the file, cells) of each row that is not blank: a line named in a message is the file's
    numbered = [
        (n, row) for n, row in enumerate(csv.reader(lines, delimiter=delimiter), start=1) if any(c.strip() for c in row)
    ]
    rows = [row for _, row in numbered]
    if not rows:
        raise PromptsegError(f"{path}: empty landmark file")
    header = tuple(cell.strip() for cell in rows[0])
    upper = [h.upper() for h in header]
    columns = _xy_columns(upper)
    if columns is None:
        raise PromptsegError(
            f"{path}: CSV header must contain X and Y columns (ANHIR ',X,Y'), or axis-0 and axis-1 (a napari "
            f"Points layer's export); got {list(header)}"
        )
    ix, iy = columns
    has_index = ix > 0 and iy > 0
    decimal_comma = delimiter != "," and any("," in row[i] for row in rows[1:] for i in (ix, iy) if i < len(row))
    # an X, Y, Z file (a 3D tool's), a napari export of a 3D layer: 2D landmarks only when every point lies on one
    # plane, as BigWarp's
    planes = _plane_columns(upper)
    xy, index = [], []
    plane: tuple[int, tuple[float | None, ...]] | None = None  # the first point's line and plane
    for line_no, row in numbered[1:]:
        # cells past the header's: read by position, a decimal comma in a comma-separated file ('122,750' for
        # 122.750) made x 122 and y 750, silently (empty ones are a spreadsheet's trailing delimiters)
        if any(cell.strip() for cell in row[len(header) :]):
            used = len(row) - next(k for k, cell in enumerate(reversed(row)) if cell.strip())
            raise PromptsegError(
                f"{path}: line {line_no}: {used} cells {row[:used]} where the header has {len(header)} "
                f"{list(header)}: a decimal comma in a file separated by commas? Write decimal points there, or "
                "save it separated by semicolons"
            )
        try:
            x, y = (row[ix].replace(",", "."), row[iy].replace(",", ".")) if decimal_comma else (row[ix], row[iy])
            xy.append((float(x), float(y)))
        except (IndexError, ValueError) as exc:
            raise PromptsegError(f"{path}: line {line_no}: cannot read X, Y from {row}") from exc
        at = tuple(_number(row[i], decimal_comma) if i < len(row) else None for i in planes)
        if plane is None:
            plane = (line_no, at)
        elif differs := [i for i, a, b in zip(planes, at, plane[1], strict=True) if None not in (a, b) and a != b]:
            k = planes.index(differs[0])
            raise PromptsegError(
                f"{path}: line {line_no}: landmarks on several planes: this point is at {header[differs[0]]}="
                f"{at[k]:g}, the one on line {plane[0]} at {plane[1][k]:g}; registration here is 2D and takes the "
                "landmarks of one section: keep only that section's points in the file"
            )
        if has_index:
            index.append(row[0].strip())
    arr = _check_xy(np.asarray(xy, dtype=np.float64).reshape(-1, 2), path, [n for n, _ in numbered[1:]])
    cells = tuple(tuple(row) for row in rows[1:])
    return Landmarks(
        xy=arr,
        format="csv",
        header=header,
        index=tuple(index),
        rows=cells,
        delimiter=delimiter,
        decimal_comma=decimal_comma,
    )


def _number(cell: str, decimal_comma: bool) -> float | None:
    """A cell's number (None for a blank cell or text)."""
    try:
        return float(cell.replace(",", ".") if decimal_comma else cell)
    except ValueError:
        return None


def _parse_pts(text: str, path: Path) -> Landmarks:
    # (line number in the file, text) of each line that is not blank: a point is named by its line
    numbered = [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    lines = [line for _, line in numbered]
    if len(lines) < 2:
        raise PromptsegError(f"{path}: a .pts file starts with 'point' and the number of points")
    kind = lines[0].lower()
    if kind not in PTS_KINDS:
        raise PromptsegError(f"{path}: first line must be 'point' or 'index', got {lines[0]!r}")
    try:
        count = int(lines[1])
    except ValueError as exc:
        raise PromptsegError(
            f"{path}: line {numbered[1][0]}: cannot read the number of points from {lines[1]!r}"
        ) from exc
    xy = []
    for line_no, line in numbered[2:]:
        values = line.split()[:2]
        if len(values) < 2:  # a point with one number was told as a count mismatch, its line left to find
            raise PromptsegError(f"{path}: line {line_no}: one number ({line!r}), a point needs its x and y")
        try:
            xy.append((float(values[0]), float(values[1])))
        except ValueError as exc:
            raise PromptsegError(f"{path}: line {line_no}: cannot read x, y from {line!r}") from exc
    if count != len(xy):
        raise PromptsegError(f"{path}: header says {count} points but {len(xy)} coordinate lines follow")
    arr = _check_xy(np.asarray(xy, dtype=np.float64).reshape(-1, 2), path)
    return Landmarks(xy=arr, format="pts", pts_kind=kind)


def _check_xy(xy: np.ndarray, path: Path, lines: list[int] | None = None) -> np.ndarray:
    """``xy`` read from ``path``, refused when empty or with a point without finite coordinates, named by its
    line in the file (``lines``, one per point) or else by its number: in a file of 78 landmarks 'NaN or infinite
    coordinates' left the row to be found."""
    if len(xy) == 0:
        raise PromptsegError(f"{path}: no landmarks in the file")
    bad = np.flatnonzero(~np.isfinite(xy).all(axis=1))
    if len(bad):
        k = int(bad[0])
        where = f"line {lines[k]}" if lines is not None else f"point {k + 1}"
        more = f" ({len(bad)} points in all)" if len(bad) > 1 else ""
        raise PromptsegError(
            f"{path}: {where}: landmark at X={xy[k, 0]:g}, Y={xy[k, 1]:g}, not a position{more}; give every point "
            "its X and Y, or remove it (and its partner in the other image's file)"
        )
    return xy


def write_landmarks(path: str | Path, landmarks: Landmarks | np.ndarray, *, decimals: int = 3) -> Path:
    """Write landmarks; a :class:`Landmarks` read from a CSV keeps its columns, index and other cells (only X and Y
    change), a bare array gets ``,X,Y``. The name decides the cells' separator: a ``.tsv`` is tab-separated, a
    ``.csv`` comma-separated (';' kept for a spreadsheet's ';' CSV, whose decimals may be commas)."""
    path = Path(path)
    # a temporary file renamed in (io._files.replacing) is written as the file it becomes
    suffix = Path(replacing_temp_of(path.name) or path.name).suffix.lower()
    if not isinstance(landmarks, Landmarks):
        xy = np.asarray(landmarks, dtype=np.float64)
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise PromptsegError(f"{path}: landmarks must be (N, 2) x, y; got shape {xy.shape}")
        landmarks = Landmarks(xy=xy, format="pts" if suffix == ".pts" else "csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    xy = np.round(landmarks.xy, decimals)
    if suffix in (".pts", ".txt"):
        lines = [landmarks.pts_kind, str(len(xy))] + [f"{_cell(x)} {_cell(y)}" for x, y in xy]
        path.write_text("\n".join(lines) + "\n")
        return path
    header = landmarks.header if landmarks.format == "csv" else ("", "X", "Y")
    ix, iy = _xy_columns([h.upper() for h in header]) or (1, 2)
    index = landmarks.index if len(landmarks.index) == len(xy) else tuple(str(i + 1) for i in range(len(xy)))
    # the columns other than X and Y (index, Z, name...) as read, when this is the file's own layout
    copied = landmarks.rows if header == landmarks.header and len(landmarks.rows) == len(xy) else None
    with open(path, "w", newline="") as fh:
        # lines end as the .pts files' and ANHIR's own CSVs do; cells and decimals as the file read (a spreadsheet's)
        writer = csv.writer(fh, delimiter=_written_delimiter(suffix, landmarks), lineterminator="\n")
        writer.writerow(header)
        for i, (x, y) in enumerate(xy):
            if copied is not None:
                row = list(copied[i]) + [""] * (len(header) - len(copied[i]))
            else:
                row = [""] * len(header)
                if ix > 0:
                    row[0] = index[i]
            row[ix], row[iy] = (_cell(v).replace(".", ",") if landmarks.decimal_comma else _cell(v) for v in (x, y))
            writer.writerow(row)
    return path


def _written_delimiter(suffix: str, landmarks: Landmarks) -> str:
    """The cells' separator of a landmark table named with ``suffix``: the delimiter read was written whatever the
    name (a bare array's comma in a .tsv, a .tsv's tabs in a .csv)."""
    if suffix == ".tsv":
        return "\t"
    if suffix == ".csv":
        return ";" if landmarks.delimiter == ";" or landmarks.decimal_comma else ","
    return landmarks.delimiter


def _cell(value: float) -> str:
    """A coordinate rounded to its decimals as text, every digit kept: ':g' kept 6 significant digits (a slide's
    x = 123456.789 was written 123457)."""
    return f"{value:.15g}"


def paired_landmarks(
    fixed: Landmarks | np.ndarray, moving: Landmarks | np.ndarray, *, allow_truncate: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The corresponding points of two landmark sets, in the fixed set's order.

    Points pair by row, as in ANHIR, unless both are CSV files whose index columns name the same points in another
    order (one file sorted by X in a spreadsheet): then they pair by that index. Different counts are an error
    unless ``allow_truncate`` (BIRL's rat-kidney pair has 71 vs 69 points of which only the first min(n)
    correspond, as in ANHIR's evaluation).
    """
    a = fixed.xy if isinstance(fixed, Landmarks) else np.asarray(fixed, dtype=np.float64)
    b = moving.xy if isinstance(moving, Landmarks) else np.asarray(moving, dtype=np.float64)
    order = index_order(fixed, moving)
    if order is not None:
        b = b[order]
    for name, arr in (("fixed", a), ("moving", b)):
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise PromptsegError(f"{name} landmarks must be (N, 2) x, y; got shape {arr.shape}")
    if len(a) != len(b):
        if not allow_truncate:
            raise PromptsegError(
                f"landmark count mismatch: fixed has {len(a)}, moving has {len(b)}; "
                "pass allow_truncate=True (CLI: --truncate-landmarks) to compare the first min(n) points"
            )
        n = min(len(a), len(b))
        a, b = a[:n], b[:n]
    return a, b


def index_order(fixed: Landmarks | np.ndarray, moving: Landmarks | np.ndarray) -> np.ndarray | None:
    """The rows of ``moving`` in the order of ``fixed``'s, when both carry an index column (ANHIR's first column)
    naming the same points, each once, in another order; else None (pair by row)."""
    if not (isinstance(fixed, Landmarks) and isinstance(moving, Landmarks)):
        return None
    a, b = fixed.index, moving.index
    if len(a) != len(fixed) or len(b) != len(moving) or a == b:
        return None
    if len(set(a)) != len(a) or set(a) != set(b):
        return None
    row = {name: i for i, name in enumerate(b)}
    return np.array([row[name] for name in a])
