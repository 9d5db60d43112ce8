"""Landmark files as used by ANHIR/BIRL: CSV with an index column and ``X``, ``Y`` columns, or ImageJ ``.pts``.

Coordinates are pixels with the origin at the top-left corner: X = column, Y = row (napari Points are (row, col);
the widget converts). Reading keeps the file's layout in :class:`Landmarks` so that a transformed copy can be written
back with the same columns.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import PromptsegError

LANDMARK_SUFFIXES = (".csv", ".pts", ".txt")


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

    def __len__(self) -> int:
        return int(len(self.xy))

    def with_xy(self, xy: np.ndarray) -> Landmarks:
        xy = np.asarray(xy, dtype=np.float64)
        if xy.shape != self.xy.shape:
            raise PromptsegError(f"landmarks: expected {self.xy.shape} coordinates, got {xy.shape}")
        return replace(self, xy=xy)


def read_landmarks(path: str | Path) -> Landmarks:
    """Read an ANHIR/BIRL ``.csv`` (``,X,Y``) or ``.pts`` landmark file."""
    path = Path(path)
    if not path.is_file():
        raise PromptsegError(f"{path}: no such landmark file")
    suffix = path.suffix.lower()
    if suffix not in LANDMARK_SUFFIXES:
        raise PromptsegError(f"{path}: unknown landmark format {suffix!r}; expected one of {LANDMARK_SUFFIXES}")
    text = path.read_text(encoding="utf-8-sig")
    if suffix == ".csv":
        return _parse_csv(text, path)
    return _parse_pts(text, path)


def _parse_csv(text: str, path: Path) -> Landmarks:
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), "")
    # a spreadsheet saved in a locale with decimal commas separates its cells with ';' (or a tab)
    delimiter = next((d for d in (";", "\t") if d in first and "," not in first), ",")
    rows = [row for row in csv.reader(lines, delimiter=delimiter) if any(cell.strip() for cell in row)]
    if not rows:
        raise PromptsegError(f"{path}: empty landmark file")
    header = tuple(cell.strip() for cell in rows[0])
    upper = [h.upper() for h in header]
    if "X" not in upper or "Y" not in upper:
        raise PromptsegError(f"{path}: CSV header must contain X and Y columns, got {list(header)}")
    ix, iy = upper.index("X"), upper.index("Y")
    has_index = ix > 0 and upper[0] not in ("X", "Y")
    decimal_comma = delimiter != "," and any("," in row[i] for row in rows[1:] for i in (ix, iy) if i < len(row))
    xy, index = [], []
    for line_no, row in enumerate(rows[1:], start=2):
        try:
            x, y = (row[ix].replace(",", "."), row[iy].replace(",", ".")) if decimal_comma else (row[ix], row[iy])
            xy.append((float(x), float(y)))
        except (IndexError, ValueError) as exc:
            raise PromptsegError(f"{path}: line {line_no}: cannot read X, Y from {row}") from exc
        if has_index:
            index.append(row[0].strip())
    arr = _check_xy(np.asarray(xy, dtype=np.float64).reshape(-1, 2), path)
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


def _parse_pts(text: str, path: Path) -> Landmarks:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        raise PromptsegError(f"{path}: a .pts file starts with 'point' and the number of points")
    kind = lines[0].lower()
    if kind not in ("point", "index"):
        raise PromptsegError(f"{path}: first line must be 'point' or 'index', got {lines[0]!r}")
    try:
        count = int(lines[1])
        xy = [tuple(float(v) for v in line.split()[:2]) for line in lines[2:]]
    except ValueError as exc:
        raise PromptsegError(f"{path}: cannot parse the point count or coordinates ({exc})") from exc
    if count != len(xy) or any(len(p) != 2 for p in xy):
        raise PromptsegError(f"{path}: header says {count} points but {len(xy)} coordinate lines follow")
    arr = _check_xy(np.asarray(xy, dtype=np.float64).reshape(-1, 2), path)
    return Landmarks(xy=arr, format="pts", pts_kind=kind)


def _check_xy(xy: np.ndarray, path: Path) -> np.ndarray:
    if len(xy) == 0:
        raise PromptsegError(f"{path}: no landmarks in the file")
    if not np.isfinite(xy).all():
        raise PromptsegError(f"{path}: landmarks contain NaN or infinite coordinates")
    return xy


def write_landmarks(path: str | Path, landmarks: Landmarks | np.ndarray, *, decimals: int = 3) -> Path:
    """Write landmarks; a :class:`Landmarks` read from a CSV keeps its columns, index and other cells (only X and Y
    change), a bare array gets ``,X,Y``."""
    path = Path(path)
    if not isinstance(landmarks, Landmarks):
        xy = np.asarray(landmarks, dtype=np.float64)
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise PromptsegError(f"{path}: landmarks must be (N, 2) x, y; got shape {xy.shape}")
        landmarks = Landmarks(xy=xy, format="pts" if path.suffix.lower() == ".pts" else "csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    xy = np.round(landmarks.xy, decimals)
    if path.suffix.lower() in (".pts", ".txt"):
        lines = [landmarks.pts_kind, str(len(xy))] + [f"{x:g} {y:g}" for x, y in xy]
        path.write_text("\n".join(lines) + "\n")
        return path
    header = landmarks.header if landmarks.format == "csv" else ("", "X", "Y")
    upper = [h.upper() for h in header]
    ix, iy = upper.index("X"), upper.index("Y")
    index = landmarks.index if len(landmarks.index) == len(xy) else tuple(str(i + 1) for i in range(len(xy)))
    # the columns other than X and Y (index, Z, name...) as read, when this is the file's own layout
    copied = landmarks.rows if header == landmarks.header and len(landmarks.rows) == len(xy) else None
    with open(path, "w", newline="") as fh:
        # lines end as the .pts files' and ANHIR's own CSVs do; cells and decimals as the file read (a spreadsheet's)
        writer = csv.writer(fh, delimiter=landmarks.delimiter, lineterminator="\n")
        writer.writerow(header)
        for i, (x, y) in enumerate(xy):
            if copied is not None:
                row = list(copied[i]) + [""] * (len(header) - len(copied[i]))
            else:
                row = [""] * len(header)
                if ix > 0:
                    row[0] = index[i]
            row[ix], row[iy] = (f"{v:g}".replace(".", ",") if landmarks.decimal_comma else f"{v:g}" for v in (x, y))
            writer.writerow(row)
    return path


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
