"""Big images read lazily: OME-Zarr and multiscale (pyramidal) TIFF as dask arrays, one per pyramid level; instance
labels written into an OME-Zarr's ``labels/`` group (ome-zarr-py) with the image's levels and pixel sizes.

Every level comes in the project's axis order: an optional stack axis first (OME ``z``, or ``t`` for a time-lapse of
2D frames), then ``y``, ``x``, and the channels last when there are several: (Y, X), (Y, X, C), (Z, Y, X) or
(Z, Y, X, C), so the methods see what they see for any other image. Nothing is read until a tile or a plane is
asked for. No Qt, no napari.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import PromptsegError
from ._files import listing_digest
from .images import TIFF_SUFFIXES, file_labels, read_image

#: tifffile's axis codes -> OME names (S = samples of an RGB pixel; I and Q = a sequence of unnamed planes)
TIFF_AXES = {"X": "x", "Y": "y", "Z": "z", "T": "t", "C": "c", "S": "c", "I": "z", "Q": "z"}
#: chunk side of written labels (pixels)
LABEL_CHUNK = 1024
#: whole-image methods (text, SAT one-shot) read a pyramid at the level with at least this many pixels per side
WHOLE_IMAGE_SIDE = 1024
#: registration reads a pyramid at its coarsest level with at least this many pixels along its longest side: the
#: stages see the images at 384-1024 px, and reading a slide's full resolution (6k x 8k RGB: 4.6 GB at its peak)
#: only made the warped outputs finer
REGISTER_SIDE = 2048


def whole_image_scale(plane_shape: Sequence[int]) -> float:
    """The working scale (level pixels per full-resolution pixel) at which a whole-image method (text, SAT one-shot)
    reads a pyramid whose full-resolution plane is ``plane_shape`` (rows, columns): WHOLE_IMAGE_SIDE px along its
    longest side (the CLI's level of a file and the console's of a multiscale layer's data)."""
    return WHOLE_IMAGE_SIDE / max(int(plane_shape[0]), int(plane_shape[1]))


@dataclass
class MultiscaleImage:
    """A lazily read image pyramid: ``levels[0]`` is full resolution, every level in the axis order ``axes``."""

    path: Path
    levels: list  # dask arrays, largest first
    axes: str  # "yx", "yxc", "zyx" or "zyxc"
    source_axes: tuple[str, ...]  # the file's own axes (OME names), in the file's order
    stack_axis: str | None = None  # the source axis that became the first axis ("z" or "t"), None for 2D
    pixel_size: dict[str, float] = field(default_factory=dict)  # level-0 size per source axis (OME-Zarr scale)
    ome_version: str | None = None  # NGFF version of an OME-Zarr; None for a TIFF
    axis_info: dict[str, dict] = field(default_factory=dict)  # an OME-Zarr's axis "type" and "unit" per axis name
    #: every level's scale and translation over the source axes, the dataset's and the multiscale's combined
    #: (OME-Zarr); what labels written beside the image repeat, so that they lie on the image's grid
    level_transforms: list[dict[str, list[float]]] = field(default_factory=list)
    axes_named: bool = False  # the file's metadata names its axes (OME-Zarr >= 0.3), so ``axes`` is not a guess

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.levels[0].shape)

    @property
    def plane_shapes(self) -> list[tuple[int, int]]:
        """(Y, X) of every level."""
        y, x = self.axes.index("y"), self.axes.index("x")
        return [(int(level.shape[y]), int(level.shape[x])) for level in self.levels]

    def level_for_scale(self, scale: float) -> tuple[int, float]:
        """The coarsest level that still has the working scale's resolution, and its downsampling factor."""
        from ..tiling import pyramid_level

        return pyramid_level(self.plane_shapes, scale)

    def level_for_side(self, side: float) -> PyramidLevel:
        """:func:`level_for_side` of this pyramid: factors along its spatial axes (the channels left out)."""
        return level_for_side(self.levels, side, len(self.axes.replace("c", "")))


class PyramidLevel(NamedTuple):
    """One level of a pyramid: its index (0 = full resolution), its array, and how many times coarser than full
    resolution it is along each spatial axis."""

    index: int
    array: Any
    factors: np.ndarray


def level_for_side(levels: Sequence[Any], side: float, ndim: int | None = None) -> PyramidLevel:
    """The coarsest level of a pyramid (``levels``, full resolution first) with at least ``side`` px along the
    longest side of its plane, full resolution when none has. A level's first ``ndim`` axes are spatial, its plane
    the last two of them (a channel axis after them; default: every axis spatial); the factors are along those
    ``ndim`` axes. Only the shapes are looked at: no pixel is read (the one code path of the widgets and the CLI)."""
    from ..tiling import pyramid_level

    full = tuple(np.shape(levels[0]))
    ndim = len(full) if ndim is None else ndim
    shapes = [tuple(np.shape(level))[ndim - 2 : ndim] for level in levels]
    index, _ = pyramid_level(shapes, min(1.0, side / max(shapes[0])))
    array = levels[index]
    return PyramidLevel(index, array, np.divide(full[:ndim], tuple(np.shape(array))[:ndim]))


def _ome_attributes(path: Path) -> dict | None:
    """The OME attributes of a zarr group (NGFF 0.4 ``.zattrs`` or 0.5 ``zarr.json``), read without zarr."""
    for name in ("zarr.json", ".zattrs"):
        meta_file = path / name
        if meta_file.is_file():
            try:
                meta = json.loads(meta_file.read_text())
            except (OSError, ValueError):
                return None
            attrs = meta.get("attributes", {}) if name == "zarr.json" else meta
            return attrs.get("ome", attrs)  # NGFF 0.5 nests its metadata under "ome"
    return None


def is_ome_zarr(path: str | Path) -> bool:
    """True for a directory holding an OME-Zarr image (a zarr group with ``multiscales`` metadata)."""
    path = Path(path)
    attrs = _ome_attributes(path) if path.is_dir() else None
    return bool(attrs and attrs.get("multiscales"))


def is_zarr_named(path: str | Path) -> bool:
    """A directory named like a zarr store (``slide.zarr``, ``slide.ome.zarr``): an image to read, even when its
    metadata cannot be (a copy cut short), never a folder of images."""
    path = Path(path)
    return path.name.lower().endswith(".zarr") and path.is_dir()


def not_ome_zarr_why(path: str | Path) -> str:
    """Why the directory ``path`` is no OME-Zarr image, in a few words."""
    path = Path(path)
    for name in ("zarr.json", ".zattrs"):
        if (path / name).is_file():
            try:
                json.loads((path / name).read_text())
            except (OSError, ValueError) as exc:
                return f"its {name} cannot be read as JSON ({exc}); was its copy cut short?"
            return f"no 'multiscales' metadata in its {name}, which OME-Zarr images carry"
    return "neither .zattrs nor zarr.json in it, which OME-Zarr images carry with their 'multiscales' metadata"


def bioformats2raw_series(path: str | Path) -> list[Path]:
    """The images of a bioformats2raw container (the layout bioformats2raw writes, and IDR and the BioImage Archive
    serve: a root group marked ``bioformats2raw.layout`` whose OME-Zarr images are the series ``0``, ``1``, ...),
    in series order; [] for anything else."""
    path = Path(path)
    attrs = _ome_attributes(path) if path.is_dir() else None
    if not attrs or "bioformats2raw.layout" not in attrs:
        return []
    try:
        series = [p for p in path.iterdir() if p.name.isdigit() and is_ome_zarr(p)]
    except OSError:
        return []
    return sorted(series, key=lambda p: int(p.name))


def is_bioformats2raw_series(path: str | Path) -> bool:
    """True for one image series of a bioformats2raw container (``slide.ome.zarr/0``)."""
    path = Path(path)
    return path.name.isdigit() and "bioformats2raw.layout" in (_ome_attributes(path.parent) or {})


def is_multiscale_tiff(path: str | Path) -> bool:
    """True for a TIFF whose first series holds a pyramid (several resolution levels)."""
    import tifffile

    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES or not path.is_file():
        return False
    try:
        with tifffile.TiffFile(path) as tif:
            return len(tif.series[0].levels) > 1
    except Exception:  # noqa: BLE001 - not a readable TIFF: the ordinary reader says why
        return False


def is_lazy_image(path: str | Path) -> bool:
    """Images read level by level, tile by tile: OME-Zarr and pyramidal TIFF."""
    return is_ome_zarr(path) or is_multiscale_tiff(path)


def open_multiscale(path: str | Path) -> MultiscaleImage:
    """Open an OME-Zarr image directory or a (pyramidal) TIFF lazily; no pixel is read."""
    path = Path(path)
    if path.is_dir():
        return _open_ome_zarr(path)
    if path.suffix.lower() in TIFF_SUFFIXES and path.is_file():
        return _open_tiff(path)
    raise PromptsegError(f"{path}: not an OME-Zarr image directory or a TIFF file")


def _open_ome_zarr(path: Path) -> MultiscaleImage:
    import dask.array as da
    import zarr

    attrs = _ome_attributes(path)
    if not attrs or not attrs.get("multiscales"):
        series = bioformats2raw_series(path)
        if series:
            names = ", ".join(str(p) for p in series[:3]) + (" ..." if len(series) > 3 else "")
            raise PromptsegError(
                f"{path}: a bioformats2raw container of {len(series)} image series; open one of them: {names}"
            )
        raise PromptsegError(
            f"{path}: not an OME-Zarr image (no 'multiscales' metadata); plates, wells and bare zarr arrays are "
            "not read, open one image of them"
        )
    multiscale = attrs["multiscales"][0]
    try:
        root = zarr.open_group(str(path), mode="r")
        datasets = multiscale["datasets"]
        arrays = [da.from_zarr(root[d["path"]]) for d in datasets]
    except Exception as exc:  # zarr and ome metadata errors come in many types; the user needs the path
        raise PromptsegError(f"{path}: cannot read the OME-Zarr levels ({exc})") from exc
    ndim = arrays[0].ndim
    # NGFF >= 0.3 names the axes; older files are the last ndim of t, c, z, y, x
    names = multiscale.get("axes") or list("tczyx"[-ndim:])
    axes = tuple(str(a["name"] if isinstance(a, dict) else a).lower() for a in names)
    info = {
        str(a["name"]).lower(): {k: a[k] for k in ("type", "unit") if isinstance(a.get(k), str)}
        for a in names
        if isinstance(a, dict) and "name" in a
    }
    overall = _scale_translation(multiscale.get("coordinateTransformations", []), ndim)
    transforms = []
    for dataset in datasets:  # a level's own transform, then the one all levels share (NGFF 0.4/0.5)
        scale, translation = _scale_translation(dataset.get("coordinateTransformations", []), ndim)
        transforms.append(
            {
                "scale": [s * g for s, g in zip(scale, overall[0], strict=True)],
                "translation": [t * g + u for t, g, u in zip(translation, *overall, strict=True)],
            }
        )
    levels, order, stack = _project_axes(arrays, axes, path)
    # unversioned metadata: the layout tells (zarr v3 is NGFF 0.5)
    version = attrs.get("version") or multiscale.get("version") or ("0.5" if (path / "zarr.json").is_file() else "0.4")
    pixel_size = dict(zip(axes, transforms[0]["scale"], strict=True))
    named = bool(multiscale.get("axes"))
    return MultiscaleImage(path, levels, order, axes, stack, pixel_size, str(version), info, transforms, named)


def _scale_translation(transforms: list[dict], ndim: int) -> tuple[list[float], list[float]]:
    """(scale, translation) of an NGFF coordinateTransformations list (identity where absent)."""
    scale, translation = [1.0] * ndim, [0.0] * ndim
    for transform in transforms:
        if transform.get("type") == "scale" and len(transform.get("scale", [])) == ndim:
            scale = [float(v) for v in transform["scale"]]
        elif transform.get("type") == "translation" and len(transform.get("translation", [])) == ndim:
            translation = [float(v) for v in transform["translation"]]
    return scale, translation


def tiff_axis_names(path: str | Path) -> list[str | None] | None:
    """The axes an OME or ImageJ TIFF's metadata names for its first series (:data:`TIFF_AXES` names, None for
    another kind), in the file's order; None for any other file (its axes are a guess)."""
    import tifffile

    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES or not path.is_file():
        return None
    try:
        with tifffile.TiffFile(path) as tif:
            if not (tif.is_ome or tif.is_imagej):
                return None
            codes = tif.series[0].axes
    except Exception:  # noqa: BLE001 - not a readable TIFF: the reader says why
        return None
    return [TIFF_AXES.get(code) for code in codes]


def named_channel_position(names: Sequence[str | None] | None) -> int | None:
    """Where a file's named channel axis is when it is not last, in a 2D image or 3D stack ((C, Y, X) or
    (Z, C, Y, X), as Fiji saves every multichannel image); else None."""
    if names is None or len(names) not in (3, 4) or names.count("c") != 1 or names[-1] == "c":
        return None
    return names.index("c")


def named_channels_last(path: str | Path, image: object) -> object:
    """A TIFF's pixels (read whole, in the file's order) with the channel axis its metadata names moved last, as a
    pyramidal TIFF is read (:func:`_open_tiff`): a Fiji composite (C, Y, X) was read as a stack of 2 planes, and a
    (Z, C, Y, X) hyperstack as a time-lapse. For runs given no channel axis (a given one counts in the file's order);
    any other input as it is."""
    position = moved_channel_position(path, image)
    return image if position is None else np.ascontiguousarray(np.moveaxis(image, position, -1))


def moved_channel_position(path: str | Path, image: object) -> int | None:
    """The file's position of the channel axis :func:`named_channels_last` moves last in ``image`` (read from
    ``path``; the same before and after the move), None when it moves nothing."""
    if not isinstance(image, np.ndarray):
        return None
    names = tiff_axis_names(path)
    position = named_channel_position(names)
    return None if position is None or len(names) != image.ndim else position


def read_channel_axis(path: str | Path, channel_axis: int | None) -> int | None:
    """A channel axis given in the file's own order (an OME-Zarr's ``c`` comes before ``y`` and ``x``), as the image
    is read: a lazily read pyramid's levels have their channels last (-1; None when its one channel was dropped), so
    the file's order must not be applied to them; any other file is read in its own order: ``channel_axis`` itself.
    The one mapping of every command (segment, oneshot, text, register)."""
    if channel_axis is None or not is_lazy_image(path):
        return channel_axis
    pyramid = open_multiscale(path)
    axes = pyramid.source_axes
    if not -len(axes) <= channel_axis < len(axes) or axes[channel_axis] != "c":
        named = ", ".join(f"{k}: {a}" for k, a in enumerate(axes))
        raise PromptsegError(
            f"{path}: channel axis {channel_axis} is not its channel axis; its axes are ({named})"
            + (f": give {axes.index('c')}, or none (its channels are named)" if "c" in axes else ", no channels")
        )
    return -1 if pyramid.axes.endswith("c") else None


def read_image_named(path: str | Path, channel_axis: int | None = None) -> object:
    """:func:`.images.read_image`, with the channel axis an OME or ImageJ TIFF names moved last
    (:func:`named_channels_last`) when no ``channel_axis`` is given (a given one counts in the file's order): how every
    command reads an image file (batch targets, one-shot references, library entries, registration pairs, training
    rows), so a Fiji composite (C, Y, X) is one multichannel image to all of them, not a stack of C planes to some."""
    image = read_image(path)
    return named_channels_last(path, image) if channel_axis is None else image


def _open_tiff(path: Path) -> MultiscaleImage:
    import dask.array as da
    import tifffile
    import zarr

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            codes, n_levels = series.axes, len(series.levels)
        store = tifffile.imread(path, aszarr=True)  # owns its file handle for as long as the arrays live
        node = zarr.open(store, mode="r")
        arrays = [da.from_zarr(node[str(k)]) for k in range(n_levels)] if n_levels > 1 else [da.from_zarr(node)]
    except Exception as exc:  # tifffile and zarr raise many types; the user needs the file name
        raise PromptsegError(f"{path}: cannot be read as a TIFF ({exc})") from exc
    axes = []
    for code, size in zip(codes, arrays[0].shape, strict=True):
        name = TIFF_AXES.get(code)
        if name is None or name in axes:
            if size > 1:
                raise PromptsegError(f"{path}: TIFF axes '{codes}' (shape {arrays[0].shape}) are not supported")
            name = f"drop{len(axes)}"  # a singleton axis of another kind: dropped below
        axes.append(name)
    levels, order, stack = _project_axes(arrays, tuple(axes), path)
    return MultiscaleImage(path, levels, order, tuple(axes), stack)


def _project_axes(arrays: list, axes: tuple[str, ...], path: Path) -> tuple[list, str, str | None]:
    """The levels in the project's axis order (stack axis z or t first, y, x, channels last; singletons dropped),
    that order's name, and the source axis of the stack."""
    size = dict(zip(axes, arrays[0].shape, strict=True))
    if "y" not in size or "x" not in size:
        raise PromptsegError(f"{path}: axes {axes} have no y and x")
    stack = [a for a in ("z", "t") if size.get(a, 1) > 1]
    if len(stack) > 1:
        raise PromptsegError(
            f"{path}: a time-lapse of volumes (t={size['t']}, z={size['z']}); select one time point first"
        )
    keep = {"y", "x", *stack} | ({"c"} if size.get("c", 1) > 1 else set())
    index = tuple(slice(None) if a in keep else 0 for a in axes)
    kept = [a for a in axes if a in keep]
    target = [*stack, "y", "x", *(["c"] if "c" in keep else [])]
    order = [kept.index(a) for a in target]
    levels = [array[index].transpose(order) for array in arrays]
    return levels, "".join("z" if a == "t" else a for a in target), (stack[0] if stack else None)


#: NGFF axis types of the standard axis names (ome-zarr refuses an axis dict without one)
AXIS_TYPES = {"x": "space", "y": "space", "z": "space", "t": "time", "c": "channel"}


def _axis_metadata(name: str, info: dict) -> str | dict:
    """An axis as ome-zarr writes it: the name alone, or with the image's type and unit."""
    kind = info.get("type") or AXIS_TYPES.get(name)
    return {"name": name, **info, "type": kind} if info and kind else name


def write_ome_zarr_labels(
    image_path: str | Path, labels: np.ndarray, name: str = "promptseg", output: str | Path | None = None
) -> Path:
    """Write full-resolution instance labels ((Y, X) or (Z, Y, X), as the image's level 0 without channels) into
    ``image_path/labels/<name>``: one level per image level, of that level's shape and coordinate transforms (scale
    and translation), the image's axis units and NGFF version. An earlier labels image of the same name is
    replaced only if promptseg wrote it and nothing changed it since (:func:`labels_not_replaceable`): labels a
    user drew or corrected are refused, not lost; so are the labels of a CLI run into another ``output`` folder
    (its -o) whose report still names them. Returns the labels group's path."""
    import zarr

    with warnings.catch_warnings():  # ome_zarr.writer's own defaults use its deprecated Scaler on import
        warnings.simplefilter("ignore", DeprecationWarning)
        from ome_zarr.format import format_from_version
        from ome_zarr.writer import add_metadata, get_metadata, write_multiscale_labels

    check_labels_name(name)
    image = open_multiscale(image_path)
    if image.ome_version is None:
        raise PromptsegError(f"{image.path}: labels go into an OME-Zarr image; write a TIFF for this input")
    expected = tuple(n for n, a in zip(image.shape, image.axes, strict=True) if a != "c")
    labels = file_labels(labels, f"{image.path}: labels")
    if labels.shape != expected:
        raise PromptsegError(f"{image.path}: labels of shape {labels.shape} do not match the image {expected}")
    # back to the file's axes (without channels): the dropped singleton axes return with size 1
    keep = [k for k, a in enumerate(image.source_axes) if a != "c"]
    axes = [image.source_axes[k] for k in keep]
    spatial = [k for k, a in enumerate(image.axes) if a != "c"]
    pyramid, transforms = [], []
    for level, transform in zip(image.levels, image.level_transforms, strict=True):
        # each level of the image's own shape (nearest sampling): a halving of its own would round odd sides
        # otherwise than the image did (62 rows against 63)
        shape = tuple(int(level.shape[k]) for k in spatial)
        sizes = {"y": shape[-2], "x": shape[-1]}
        if image.stack_axis is not None:
            sizes[image.stack_axis] = shape[0]
        pyramid.append(_nearest(labels, shape).reshape([sizes.get(a, 1) for a in axes]))
        level_transform = [{"type": "scale", "scale": [transform["scale"][k] for k in keep]}]
        translation = [transform["translation"][k] for k in keep]
        if any(translation):
            level_transform.append({"type": "translation", "translation": translation})
        transforms.append(level_transform)
    chunks = tuple(min(LABEL_CHUNK, n) if a in ("y", "x") else 1 for a, n in zip(axes, pyramid[0].shape, strict=True))
    labels_dir = image.path / "labels"
    scratch, replaced = labels_dir / f"{SCRATCH_PREFIX}{name}", labels_dir / f"{REPLACED_PREFIX}{name}"
    try:
        fmt = format_from_version(image.ome_version)
        root = zarr.open_group(str(image.path), mode="a")
        labels_group = root.require_group("labels")
        complete = any((replaced / meta).exists() for meta in (".zattrs", "zarr.json"))
        if not (labels_dir / name).exists() and complete:
            replaced.rename(labels_dir / name)  # killed between the two renames: the old labels back in place
        refused = labels_not_replaceable(image.path, name, output)
        if refused:
            raise PromptsegError(refused)
        _remove_tree(scratch)  # what a killed run left: never listed, so no reader saw it
        # the new labels image is written whole beside the old one, under a name the labels list does not hold (a
        # group of its own, whose labels/<name> is the image under its final name and metadata); the old one stays
        # readable until the new one is complete (an interrupted rewrite deleted it, and left levels missing or
        # zero)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            write_multiscale_labels(
                pyramid,
                zarr.open_group(str(scratch), mode="w", zarr_format=fmt.zarr_format),
                name,
                fmt=fmt,
                # with their type and unit (micrometer...), so the labels lie on the image's physical grid
                axes=[_axis_metadata(a, image.axis_info.get(a, {})) for a in axes],
                coordinate_transformations=transforms,
                storage_options={"chunks": chunks},
            )
        # swapped in by two renames, the old one removed once the new one is in place; the list names it last.
        # The stamp accepts both while they swap places (a run killed in between leaves either one, ours)
        _remove_tree(replaced)
        target = labels_dir / name
        written = listing_digest(scratch / "labels" / name)  # renaming the folder keeps its files' names and times
        before = [listing_digest(target)] if target.exists() else []
        _stamp_labels(labels_dir, name, [written, *before], _stamp_of(labels_dir, name).get("output"))
        if target.exists():
            target.rename(replaced)
        (scratch / "labels" / name).rename(target)
        _stamp_labels(labels_dir, name, [written], output)
        listed = get_metadata(labels_group).get("labels", [])
        if name not in listed:
            add_metadata(labels_group, {"labels": [*listed, name]}, fmt=fmt)
        _remove_tree(replaced)
        _remove_tree(scratch)
    except PermissionError as exc:
        raise PromptsegError(f"{image.path}: cannot write its labels/ group ({exc}); write TIFF labels") from exc
    return target


#: a labels image being written goes into ``labels/<SCRATCH_PREFIX><name>`` (a zarr group that no labels list names;
#: readers list only the names in ``labels/``' list) and is moved to ``labels/<name>`` when complete; the image it
#: replaces waits as ``labels/<REPLACED_PREFIX><name>`` until then. The next write of that name removes both
SCRATCH_PREFIX = ".promptseg-writing-"
REPLACED_PREFIX = ".promptseg-replaced-"
#: ``labels/<WRITTEN_PREFIX><name>.json`` beside each labels image promptseg wrote: the listing (names, sizes and
#: modification times of its files) it had when written, to tell our own unchanged output, which a rerun replaces,
#: from labels someone else wrote or edited and saved since, which it must not
WRITTEN_PREFIX = ".promptseg-written-"


def labels_not_replaceable(image_path: str | Path, name: str, output: str | Path | None = None) -> str | None:
    """Why ``image_path/labels/<name>`` must not be replaced (an existing labels image that promptseg did not write,
    or that changed since it wrote it: a user's annotations, labels corrected in napari and saved back; or, for a
    CLI run into the folder ``output``, the labels a run into another -o wrote, while that folder's report names
    them), or None (absent, or promptseg's own as it wrote it)."""
    target = Path(image_path) / "labels" / name
    if not target.exists():
        return None
    stamp = _stamp_of(target.parent, name)
    accepted = stamp.get("listings")
    if not isinstance(accepted, list) or listing_digest(target) not in accepted:
        return (
            f"{target} holds labels that promptseg did not write, or that were changed since it wrote them, and would "
            "be replaced; write under another labels name (--labels-name), or move them"
        )
    owner = stamp.get("output")
    if output is None or not isinstance(owner, str) or Path(owner).resolve() == Path(output).resolve():
        return None
    if not _run_names(Path(owner), target):  # that run's report is gone, or no longer names them: free to replace
        return None
    return (
        f"{target} holds the labels of the run into -o {owner} (its report names them), which this run into -o "
        f"{output} would replace; give this run another --labels-name to keep both, or rerun into -o {owner}"
    )


def remove_own_labels(image_path: str | Path, name: str, output: str | Path) -> bool:
    """Remove ``image_path/labels/<name>`` when the CLI run into ``output`` wrote it and nothing changed it since (an
    input that run now failed on: the labels would pass for its result); returns whether they were removed."""
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from ome_zarr.writer import add_metadata, get_metadata

    labels_dir = Path(image_path) / "labels"
    owner = _stamp_of(labels_dir, name).get("output")
    if (
        not (labels_dir / name).exists()
        or not isinstance(owner, str)
        or Path(owner).resolve() != Path(output).resolve()
    ):
        return False
    if labels_not_replaceable(image_path, name, output) is not None:  # edited since: the user's now
        return False
    group = zarr.open_group(str(labels_dir), mode="a")
    listed = get_metadata(group).get("labels", [])
    if name in listed:  # out of the list first: a reader never lists labels that are not there
        add_metadata(group, {"labels": [n for n in listed if n != name]})
    _remove_tree(labels_dir / name)
    (labels_dir / f"{WRITTEN_PREFIX}{name}.json").unlink(missing_ok=True)
    return True


def _run_names(folder: Path, target: Path) -> bool:
    """Whether the report.json, or the resume journal, of a CLI run into ``folder`` names ``target`` as an output."""
    from ..batch.journal import JOURNAL_NAME  # lazy: batch imports io

    records: list = []
    with contextlib.suppress(OSError, ValueError, AttributeError):
        records += json.loads((folder / "report.json").read_text()).get("images") or []
    with contextlib.suppress(OSError):
        for line in (folder / JOURNAL_NAME).read_text().splitlines():
            with contextlib.suppress(ValueError, AttributeError):  # the last line of a killed run, cut
                records.append(json.loads(line).get("record"))
    named = {r.get("output") for r in records if isinstance(r, dict)}
    return any(isinstance(n, str) and Path(n).resolve() == target.resolve() for n in named)


def _stamp_of(labels_dir: Path, name: str) -> dict:
    """The stamp promptseg left beside the labels image ``name`` (:data:`WRITTEN_PREFIX`), or {}."""
    try:
        stamp = json.loads((labels_dir / f"{WRITTEN_PREFIX}{name}.json").read_text())
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def _stamp_labels(labels_dir: Path, name: str, listings: list[str], output: str | Path | None = None) -> None:
    """The stamp of labels promptseg wrote: their listings, and the -o of the CLI run that wrote them."""
    stamp = {"listings": listings, **({"output": str(output)} if output is not None else {})}
    (labels_dir / f"{WRITTEN_PREFIX}{name}.json").write_text(json.dumps(stamp))


def _remove_tree(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path)


def check_labels_name(name: str) -> str:
    """A labels image's name in an OME-Zarr's ``labels/`` group: one plain path segment. An empty name addressed
    ``labels/`` itself, and replacing it deleted every labels image of the file."""
    if (
        not isinstance(name, str)
        or not name.strip()
        or name != name.strip()
        or name in (".", "..")
        or any(c in name for c in "/\\")
    ):
        raise PromptsegError(
            f"labels name {name!r}: give a plain name (not empty, no '/' or '\\', no surrounding spaces), e.g. "
            "'promptseg'"
        )
    return name


def _nearest(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``labels`` sampled to ``shape`` (nearest, top-left aligned: ``labels[::2, ::2]`` for halves)."""
    if labels.shape == shape:
        return labels
    index = [
        np.minimum((np.arange(m) * (n / m)).astype(np.int64), n - 1) for n, m in zip(labels.shape, shape, strict=True)
    ]
    return labels[np.ix_(*index)]
