"""Big images read lazily: OME-Zarr and multiscale (pyramidal) TIFF as dask arrays, one per pyramid level (labels
written into an OME-Zarr: :mod:`.ome_zarr_labels`).

Every level comes in the project's axis order: an optional stack axis first (OME ``z``, or ``t`` for a time-lapse of
2D frames), then ``y``, ``x``, and the channels last when there are several: (Y, X), (Y, X, C), (Z, Y, X) or
(Z, Y, X, C), so the methods see what they see for any other image. Nothing is read until a tile or a plane is
asked for. No Qt, no napari.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import PromptsegError
from .file_axes import (  # noqa: F401 - the names read from a file's axes, imported from here too
    TIFF_AXES,
    StackAxes,
    labels_axes,
    moved_channel_position,
    named_channel_position,
    named_channels_last,
    read_channel_axis,
    read_image_named,
    stack_axes,
    tiff_axis_names,
    time_lapse_channels_last,
)
from .images import (
    TIFF_SUFFIXES,
    _grey_and_alpha,
    _only_looking,
    _unreadable_why,
    cmyk_sample_axis,
    cmyk_to_rgb,
)
from .tiff_colours import ROLES, Role, as_shown, min_is_white_top, palette_colours

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
    axes: str  # "yx", "yxc", "zyx" or "zyxc"; a time-lapse of volumes opened whole (keep_time): "tzyx[c]"
    source_axes: tuple[str, ...]  # the file's own axes (OME names), in the file's order
    stack_axis: str | None = None  # the source axis that became the first axis ("z" or "t"), None for 2D
    pixel_size: dict[str, float] = field(default_factory=dict)  # level-0 size per source axis (OME-Zarr scale)
    ome_version: str | None = None  # NGFF version of an OME-Zarr; None for a TIFF
    axis_info: dict[str, dict] = field(default_factory=dict)  # an OME-Zarr's axis "type" and "unit" per axis name
    #: every level's scale and translation over the source axes, the dataset's and the multiscale's combined
    #: (OME-Zarr); what labels written beside the image repeat, so that they lie on the image's grid
    level_transforms: list[dict[str, list[float]]] = field(default_factory=list)
    axes_named: bool = False  # the file's metadata names its axes (OME-Zarr >= 0.3), so ``axes`` is not a guess
    #: the channels are the red, green, blue (and alpha) samples of colour pixels (a TIFF's RGB or YCbCr
    #: photometric, as slide scanners write), not separately acquired channels (fluorescence)
    rgb: bool = False

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
    """Why the directory ``path`` is no OME-Zarr image, in a few words: what to give instead where it is part of
    one (its labels group, one of its levels)."""
    path = Path(path)
    listed = (_ome_attributes(path) or {}).get("labels")
    if isinstance(listed, list) and listed:
        names = ", ".join(str(path / str(n)) for n in listed[:3]) + (" ..." if len(listed) > 3 else "")
        return f"the labels group of an OME-Zarr image; give one of its labels images: {names}"
    if _is_zarr_array(path):
        owner = path.parent if is_ome_zarr(path.parent) else None
        return (
            f"one level (a zarr array) of the OME-Zarr image {owner}; give the image itself, its levels are read as "
            "they are needed"
            if owner is not None
            else "a bare zarr array, without the 'multiscales' metadata of an OME-Zarr image; give the image it "
            "belongs to"
        )
    for name in ("zarr.json", ".zattrs"):
        if (path / name).is_file():
            try:
                json.loads((path / name).read_text())
            except (OSError, ValueError) as exc:
                return f"its {name} cannot be read as JSON ({exc}); was its copy cut short?"
            return f"no 'multiscales' metadata in its {name}, which OME-Zarr images carry"
    return "neither .zattrs nor zarr.json in it, which OME-Zarr images carry with their 'multiscales' metadata"


def _is_zarr_array(path: Path) -> bool:
    """Whether the directory ``path`` is a zarr array (v2 ``.zarray``, v3 ``zarr.json`` of node_type array)."""
    if (path / ".zarray").is_file():
        return True
    try:
        return json.loads((path / "zarr.json").read_text()).get("node_type") == "array"
    except (OSError, ValueError, AttributeError):
        return False


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


#: words in the names of a TIFF's series that are a slide's or a scanner's accessories, not the user's images
_ACCESSORY_SERIES = ("label", "macro", "thumbnail", "overview", "preview")


def other_images_left_out(path: str | Path) -> str | None:
    """What a TIFF holding several images (an OME-TIFF of several positions, a multi-series export) says of those
    after its first, which every read leaves out (:func:`.images.read_image`, the plugin); None for any other file,
    and for a whole slide's label, macro and thumbnail images (not the user's). Only the header is read."""
    import tifffile

    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES or not path.is_file():
        return None
    try:
        with _only_looking(), tifffile.TiffFile(path) as tif:
            if tif.is_svs or tif.is_ndpi or len(tif.series) < 2:
                return None
            images = [
                (s.name or f"series {k}", tuple(s.shape))
                for k, s in enumerate(tif.series)
                if not any(word in (s.name or "").lower() for word in _ACCESSORY_SERIES)
            ]
    except Exception:  # noqa: BLE001 - an unreadable TIFF: its read says why
        return None
    if len(images) < 2:
        return None
    names = ", ".join(name for name, _ in images[:5]) + (", ..." if len(images) > 5 else "")
    return (
        f"{path}: holds {len(images)} images (TIFF series: {names}); only the first ({images[0][0]}, "
        f"{images[0][1]}) is read: save each image as its own file to segment the others"
    )


def is_multiscale_tiff(path: str | Path) -> bool:
    """True for a TIFF whose first series holds a pyramid (several resolution levels)."""
    import tifffile

    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES or not path.is_file():
        return False
    try:
        with _only_looking(), tifffile.TiffFile(path) as tif:
            return len(tif.series[0].levels) > 1
    except Exception:  # noqa: BLE001 - not a readable TIFF: the ordinary reader says why
        return False


def is_large_tiled_tiff(path: str | Path) -> bool:
    """True for a TIFF of one level whose tiled planes hold more pixels than an image read whole may
    (:data:`~..models.preprocessing.DEFAULT_MAX_PIXELS`): a mosaic or slide saved without a pyramid. Read whole, it
    filled memory only to be refused; tile by tile, as a pyramid of one level, the tiled methods take it."""
    import tifffile

    from ..models import preprocessing

    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES or not path.is_file():
        return False
    try:
        with _only_looking(), tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes, plane = series.axes, dict(zip(series.axes, series.shape, strict=True))
            tiled = series.keyframe.is_tiled
    except Exception:  # noqa: BLE001 - not a readable TIFF: the ordinary reader says why
        return False
    # unnamed planar colour samples (S before Y: tifffile's guess for a few planes) stay as read whole, in the file's
    # order (planes), which a pyramid's reading would take for colours; another program's planar RGB is colour
    # (tiff_axis_names), read tile by tile
    planar = "S" in axes and "Y" in axes and axes.index("S") < axes.index("Y")
    large = tiled and plane.get("Y", 0) * plane.get("X", 0) > preprocessing.DEFAULT_MAX_PIXELS
    return large and not (planar and tiff_axis_names(path) is None)


def is_lazy_image(path: str | Path) -> bool:
    """Images read level by level, tile by tile: OME-Zarr, pyramidal TIFF, and a TIFF of tiled planes too large to
    read whole (:func:`is_large_tiled_tiff`)."""
    return is_ome_zarr(path) or is_multiscale_tiff(path) or is_large_tiled_tiff(path)


def open_multiscale(path: str | Path, *, role: Role = "image", keep_time: bool = False) -> MultiscaleImage:
    """Open an OME-Zarr image directory or a (pyramidal) TIFF lazily; no pixel is read. ``role``: a TIFF's palette
    and MinIsWhite samples read as shown ("image") or as stored ("labels"), as :func:`.images.read_image` reads them
    (:mod:`.tiff_colours`). ``keep_time``: a time-lapse of volumes (t and z of more than one) is opened whole, its
    levels (T, Z, Y, X[, C]) (axes "tzyx[c]"), for the caller to take one time point's volume (the commands'
    --time); without it, refused."""
    if role not in ROLES:
        raise PromptsegError(f"open_multiscale: role {role!r}; expected one of {', '.join(ROLES)}")
    path = Path(path)
    if path.is_dir():
        return _open_ome_zarr(path, keep_time)
    if path.suffix.lower() in TIFF_SUFFIXES and path.is_file():
        return _open_tiff(path, role, keep_time)
    raise PromptsegError(f"{path}: not an OME-Zarr image directory or a TIFF file")


def file_level(path: str | Path, image: object, scale: float) -> tuple[Any, int, float]:
    """The pyramid level of an image file a working scale (model-input pixels per full-resolution pixel) asks for:
    ``image`` as read from ``path`` (:func:`.images.read_image`: a pyramid's full resolution, lazily) -> the coarsest
    level that still has that resolution, its index and its downsampling factor. Any other input: itself, level 0,
    factor 1. Only metadata is read: the one rule of the CLI's commands and the One-shot widget's target folder."""
    from ..models.preprocessing import is_lazy

    if not is_lazy(image) or not is_lazy_image(path):
        return image, 0, 1.0
    pyramid = open_multiscale(path)
    level, factor = pyramid.level_for_scale(scale)
    return pyramid.levels[level], level, factor


def file_pyramid(path: str | Path, image: object) -> object:
    """An image file as a multiscale layer holds it (:func:`.layer_data.tiff_layer_data`), for the console functions
    to read at their levels: ``image`` as read from ``path`` (:func:`.images.read_image`: a pyramid's full resolution,
    lazily) -> the pyramid's levels, largest first, when it has several; any other input as it is. Only metadata is
    read."""
    from ..models.preprocessing import is_lazy

    if not is_lazy(image) or not is_lazy_image(path):
        return image
    levels = open_multiscale(path).levels
    return levels if len(levels) > 1 else image


def _open_ome_zarr(path: Path, keep_time: bool = False) -> MultiscaleImage:
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
    levels, order, stack = _project_axes(arrays, axes, path, keep_time)
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


def _open_tiff(path: Path, role: Role = "image", keep_time: bool = False) -> MultiscaleImage:
    import dask.array as da
    import tifffile
    import zarr

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            codes, n_levels = series.axes, len(series.levels)
            colour = series.keyframe.photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR)
            grey_alpha = _grey_and_alpha(tif, series.shape)
            cmyk = cmyk_sample_axis(tif, len(codes))
            # a label pyramid's palette indices and MinIsWhite values are its ids, kept (as the whole read keeps them)
            colours, top = (palette_colours(tif), min_is_white_top(tif)) if role == "image" else (None, None)
        store = tifffile.imread(path, aszarr=True)  # owns its file handle for as long as the arrays live
        node = zarr.open(store, mode="r")
        arrays = [da.from_zarr(node[str(k)]) for k in range(n_levels)] if n_levels > 1 else [da.from_zarr(node)]
    except Exception as exc:  # tifffile and zarr raise many types; the user needs the file name
        raise PromptsegError(f"{path}: cannot be read as a TIFF ({_unreadable_why(path, exc)})") from exc
    # as the whole read takes them (.images.read_image): a grey image's alpha dropped (its samples axis is then one
    # value, dropped below), a CMYK image's ink in RGB
    if grey_alpha:
        arrays = [a[(slice(None),) * (a.ndim - 1) + (slice(0, 1),)] for a in arrays]
    elif cmyk is not None:
        arrays, colour = [cmyk_to_rgb(a, cmyk) for a in arrays], True
    elif colours is not None or top is not None:  # a palette's colours (last), MinIsWhite grey inverted
        arrays = [as_shown(a, colours, top) for a in arrays]
        if colours is not None:
            codes, colour = codes + "S", True
    axes = []
    for code, size in zip(codes, arrays[0].shape, strict=True):
        name = TIFF_AXES.get(code)
        if name is None or name in axes:
            if size > 1:
                raise PromptsegError(f"{path}: TIFF axes '{codes}' (shape {arrays[0].shape}) are not supported")
            name = f"drop{len(axes)}"  # a singleton axis of another kind: dropped below
        axes.append(name)
    levels, order, stack = _project_axes(arrays, tuple(axes), path, keep_time)
    # colour samples (S) of 3 or 4 values; a YCbCr slide's are decoded to RGB
    rgb = colour and "S" in codes and order.endswith("c") and levels[0].shape[-1] in (3, 4)
    return MultiscaleImage(path, levels, order, tuple(axes), stack, rgb=bool(rgb))


def _project_axes(
    arrays: list, axes: tuple[str, ...], path: Path, keep_time: bool = False
) -> tuple[list, str, str | None]:
    """The levels in the project's axis order (stack axis z or t first, y, x, channels last; singletons dropped),
    that order's name, and the source axis of the stack. A time-lapse of volumes: (T, Z, Y, X[, C]), "tzyx[c]",
    stack axis z, with ``keep_time``; refused without, naming the option that takes one time point."""
    size = dict(zip(axes, arrays[0].shape, strict=True))
    if "y" not in size or "x" not in size:
        raise PromptsegError(f"{path}: axes {axes} have no y and x")
    stack = [a for a in ("z", "t") if size.get(a, 1) > 1]
    time = []
    if len(stack) > 1 and keep_time:
        time, stack = ["t"], ["z"]
    elif len(stack) > 1:
        raise PromptsegError(
            f"{path}: a time-lapse of volumes (t={size['t']}, z={size['z']}); select one time point first: "
            "promptseg segment, oneshot, text and embed take --time T (that time point's volume is read alone; "
            "embed --time all precomputes every time point's)"
        )
    keep = {"y", "x", *time, *stack} | ({"c"} if size.get("c", 1) > 1 else set())
    index = tuple(slice(None) if a in keep else 0 for a in axes)
    kept = [a for a in axes if a in keep]
    target = [*time, *stack, "y", "x", *(["c"] if "c" in keep else [])]
    order = [kept.index(a) for a in target]
    levels = [array[index].transpose(order) for array in arrays]
    named = "".join("z" if a == "t" and not time else a for a in target)
    return levels, named, (stack[0] if stack else None)


#: NGFF axis types of the standard axis names (ome-zarr refuses an axis dict without one)
