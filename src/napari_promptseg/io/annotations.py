"""Annotations as GeoJSON (QuPath's export, napari-geojson): read, map every coordinate through a transform, write.

Coordinates are pixels with the origin at the top-left corner: x = column, y = row, as QuPath writes them. Only the
coordinates change: features, their properties (QuPath's classification, names, measurements), ids and the file's
layout (a FeatureCollection, a list of features as QuPath exports them, one Feature or one geometry) are written
back as they were read.

A nonrigid transform bends straight edges, so lines and polygon rings are densified before their vertices are
mapped (:func:`densify`): an edge longer than ``max_segment`` gets vertices in between, and the mapped outline
follows the deformation between the original corners instead of cutting across it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PromptsegError

ANNOTATION_SUFFIXES = (".geojson", ".json")
#: GeoJSON geometry type -> how deep its coordinate arrays nest (0: one position), and whether its paths are lines
_NESTING = {
    "Point": 0,
    "MultiPoint": 1,
    "LineString": 1,
    "MultiLineString": 2,
    "Polygon": 2,
    "MultiPolygon": 3,
}
_PATHS = {"LineString": 1, "MultiLineString": 2, "Polygon": 2, "MultiPolygon": 3}  # depth of one (N, 2) path


def read_annotations(path: str | Path) -> Any:
    """The parsed GeoJSON of ``path`` (checked: every geometry has a known type and numeric x, y positions)."""
    path = Path(path)
    if not path.is_file():
        raise PromptsegError(f"{path}: no such annotation file")
    if path.suffix.lower() not in ANNOTATION_SUFFIXES:
        raise PromptsegError(
            f"{path}: annotations are read from GeoJSON ({', '.join(ANNOTATION_SUFFIXES)}), not {path.suffix!r} files"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PromptsegError(f"{path}: not GeoJSON ({exc})") from exc
    geometries = list(_geometries(data, path))
    if not geometries:
        raise PromptsegError(f"{path}: no geometry found (expected GeoJSON features with polygons, lines or points)")
    for geometry in geometries:
        _check_geometry(geometry, path)
    return data


def write_annotations(path: str | Path, data: Any) -> Path:
    """Write GeoJSON ``data`` (as read, coordinates replaced) to ``path``."""
    path = Path(path)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path


def densify(path_xy: np.ndarray, max_segment: float) -> np.ndarray:
    """``path_xy`` (N, 2) with vertices added so that no edge is longer than ``max_segment``; the original vertices
    are kept, in order."""
    xy = np.asarray(path_xy, dtype=np.float64)
    if len(xy) < 2 or not max_segment > 0:
        return xy
    steps = np.maximum(1, np.ceil(np.linalg.norm(np.diff(xy, axis=0), axis=1) / max_segment)).astype(int)
    parts = [
        xy[i] + np.outer(np.arange(n) / n, xy[i + 1] - xy[i]) for i, n in enumerate(steps)
    ]  # each edge's start and its inner points
    return np.concatenate([*parts, xy[-1:]])


def map_annotations(
    data: Any,
    to_fixed: Callable[[np.ndarray], np.ndarray],
    *,
    max_segment: float = 0.0,
    mirrored: bool = False,
    fixed_size: tuple[float, float] | None = None,
) -> tuple[Any, dict[str, int]]:
    """A copy of GeoJSON ``data`` with every position mapped by ``to_fixed`` ((N, 2) x, y -> (N, 2) x, y), lines and
    rings densified to ``max_segment`` first (0: not densified). ``mirrored``: the transform reverses orientation,
    so every ring is reversed to keep its winding (exterior rings counter-clockwise, holes clockwise).
    Returns the copy and counts: ``geometries``, ``vertices_in``, ``vertices_out``, and with ``fixed_size``
    (width, height) ``geometries_outside``: those with no vertex inside the fixed image (lost from its view)."""
    out = json.loads(json.dumps(data))  # a deep copy that is plain JSON
    counts = {"geometries": 0, "vertices_in": 0, "vertices_out": 0}
    if fixed_size is not None:
        counts["geometries_outside"] = 0
    for geometry in _geometries(out, None):
        kind = geometry["type"]
        counts["geometries"] += 1
        paths: list[np.ndarray] = []
        _collect(geometry["coordinates"], _NESTING[kind], paths)
        counts["vertices_in"] += sum(len(p) for p in paths)
        if not paths:
            continue
        # GeoJSON repeats a ring's first position at its end: its closing edge is densified as any other
        pieces = map_paths(paths, [False] * len(paths), to_fixed, max_segment if kind in _PATHS else 0.0)
        mapped = np.concatenate(pieces)
        if mirrored and kind in ("Polygon", "MultiPolygon"):
            pieces = [piece[::-1] for piece in pieces]
        counts["vertices_out"] += len(mapped)
        if fixed_size is not None:
            inside = (mapped >= 0).all(axis=1) & (mapped[:, 0] <= fixed_size[0]) & (mapped[:, 1] <= fixed_size[1])
            counts["geometries_outside"] += int(not inside.any())
        geometry["coordinates"] = _rebuild(geometry["coordinates"], _NESTING[kind], iter(pieces))
    return out, counts


def map_paths(
    paths: list[np.ndarray],
    closed: list[bool],
    to_fixed: Callable[[np.ndarray], np.ndarray],
    max_segment: float = 0.0,
) -> list[np.ndarray]:
    """Each (N, 2) x, y path densified to ``max_segment`` (0: as given; a ``closed`` one along its closing edge too,
    without repeating its first vertex) and mapped by ``to_fixed``, all in one call."""
    dense = [
        densify(np.vstack([p, p[:1]]), max_segment)[:-1] if c and len(p) > 1 else densify(p, max_segment)
        for p, c in zip(paths, closed, strict=True)
    ]
    sizes = [len(d) for d in dense]
    mapped = np.asarray(to_fixed(np.concatenate(dense)), dtype=np.float64) if dense else np.zeros((0, 2))
    if mapped.shape != (sum(sizes), 2) or not np.isfinite(mapped).all():
        raise PromptsegError("annotations: the transform gave no finite position for some vertices")
    return np.split(mapped, np.cumsum(sizes)[:-1]) if dense else []


def _geometries(data: Any, path: Path | None):
    """Every geometry object of a GeoJSON document (features, collections and lists of them), depth first."""
    if isinstance(data, list):  # QuPath exports a plain list of features
        for item in data:
            yield from _geometries(item, path)
        return
    if not isinstance(data, dict):
        if path is not None:
            raise PromptsegError(f"{path}: expected GeoJSON objects, found {type(data).__name__}")
        return
    kind = data.get("type")
    if kind == "FeatureCollection":
        yield from _geometries(data.get("features") or [], path)
    elif kind == "Feature":
        if data.get("geometry") is not None:  # a feature without a geometry is allowed, and has nothing to map
            yield from _geometries(data["geometry"], path)
    elif kind == "GeometryCollection":
        yield from _geometries(data.get("geometries") or [], path)
    elif kind in _NESTING:
        yield data
    elif path is not None:
        raise PromptsegError(f"{path}: unknown GeoJSON type {kind!r}")


def _check_geometry(geometry: dict, path: Path) -> None:
    paths: list[np.ndarray] = []
    try:
        _collect(geometry.get("coordinates"), _NESTING[geometry["type"]], paths)
    except (TypeError, ValueError) as exc:
        raise PromptsegError(f"{path}: a {geometry['type']} has malformed coordinates ({exc})") from exc
    for xy in paths:
        if not np.isfinite(xy).all():
            raise PromptsegError(f"{path}: a {geometry['type']} has a coordinate that is not a finite number")


def _collect(coordinates: Any, depth: int, paths: list[np.ndarray]) -> None:
    """The (N, 2) arrays of x, y at the innermost level of a geometry's ``coordinates`` (a third value, z, is
    left where it is: :func:`_rebuild` keeps it)."""
    if depth == 0:
        paths.append(_positions([coordinates]))
    elif depth == 1:
        paths.append(_positions(coordinates))
    else:
        for part in coordinates:
            _collect(part, depth - 1, paths)


def _positions(positions: Any) -> np.ndarray:
    if not isinstance(positions, list) or not all(isinstance(p, list) and len(p) >= 2 for p in positions):
        raise ValueError("positions must be lists of at least two numbers")
    return np.array([p[:2] for p in positions], dtype=np.float64).reshape(-1, 2)


def _rebuild(coordinates: Any, depth: int, pieces) -> Any:
    if depth == 0:
        return _with_xy([coordinates], next(pieces))[0]
    if depth == 1:
        return _with_xy(coordinates, next(pieces))
    return [_rebuild(part, depth - 1, pieces) for part in coordinates]


def _with_xy(positions: list, xy: np.ndarray) -> list:
    """Positions with x, y from ``xy``; a densified path gets new positions, whose z (if any) is the first one's."""
    rest = positions[0][2:] if positions else []
    if len(xy) == len(positions):
        return [[float(x), float(y), *p[2:]] for (x, y), p in zip(xy, positions, strict=True)]
    return [[float(x), float(y), *rest] for x, y in xy]
