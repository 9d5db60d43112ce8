"""Image files as napari layer data, built without napari: ``(data, keyword arguments, "image")`` tuples of lazily
read arrays and plain values, what a napari reader returns (the plugin's reader, :mod:`.._reader`, only hands them
on). A pyramid becomes one multiscale layer whose levels are the dask arrays :func:`.multiscale.open_multiscale`
gives the CLI and the batch runs (no pixel is read here); colour slides an RGB layer, separately acquired channels
one layer each (napari's ``channel_axis``), and the file's pixel size (:mod:`.calibration`) the layer's scale. A
folder opened whole: :mod:`.folder_layers`."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PromptsegError
from .calibration import PixelSize, axis_micrometres, ome_micrometres, pixel_size
from .images import (
    DISPLACEMENT_CHANNELS,
    DISPLACEMENT_FILE,
    LABELS_MARKERS,
    PLUGIN_READ_WHOLE_ADVICE,
    REGISTER_MARKERS,
    TIFF_SUFFIXES,
    _format_of_misnamed_tiff,
    _refuse_more_than_memory,
    _unreadable_why,
    output_marker,
    output_stem,
    read_image,
)
from .multiscale import (
    MultiscaleImage,
    is_ome_zarr,
    open_multiscale,
    other_images_left_out,
    read_image_named,
    tiff_axis_names,
)

#: (data, keyword arguments of ``viewer.add_image``, layer type): napari's LayerDataTuple
LayerData = tuple[Any, dict[str, Any], str]

#: the length units of OME and ImageJ metadata, as napari's units (pint) name them; another unit stays in the
#: layer's metadata only (a unit napari cannot parse would stop the layer from opening)
_NAPARI_UNITS = {
    "µm": "µm",
    "μm": "µm",  # Greek mu, as some writers spell it
    "um": "µm",
    "micron": "µm",
    "microns": "µm",
    "nm": "nm",
    "mm": "mm",
    "cm": "cm",
    "m": "m",
    "inch": "inch",
}


def image_layer_data(path: str | Path, *, whole_when_single_level: bool = False) -> list[LayerData]:
    """The image layer(s) of a pyramidal TIFF (any TIFF or OME-Zarr image too: one level is a plain layer), read
    lazily: every level a dask array in the project's axis order ((Z,) Y, X (, C)), nothing read until napari asks
    for a tile. RGB(A) colour samples make an RGB layer; other channels one layer per channel, named after the
    OME-TIFF's channel names when it has them; the file's pixel size is the layer's scale (and units).
    ``whole_when_single_level``: an image of one level is read into memory, as napari's own reader does (layers
    the widgets take as they take any other); a TIFF whose axes the project does not read (a 5D hyperstack) then
    becomes one plain layer of the file's array, as napari's reader would give it."""
    path = Path(path)
    if _format_of_misnamed_tiff(path) is not None:  # a PNG or JPEG named .tif: read as what it holds, as the CLI does
        return _plain_layer(read_image(path), path)
    try:
        # a time-lapse of volumes as one 4D layer (T, Z, Y, X), napari's slider over its time points: the widgets
        # work on the time point shown (the commands' --time T on one). One of channels is read as before (a plain
        # TIFF hyperstack as napari's reader gives it; a pyramid refused)
        pyramid = open_multiscale(path, keep_time=True)
        if pyramid.axes == "tzyxc":
            pyramid = open_multiscale(path)
    except PromptsegError:
        if not whole_when_single_level or path.suffix.lower() not in TIFF_SUFFIXES:
            raise
        import tifffile

        # read whole below: refused from its header, as every command refuses it
        _refuse_more_than_memory(path, PLUGIN_READ_WHOLE_ADVICE)
        try:
            with tifffile.TiffFile(path) as tif:
                pyramid_refused = len(tif.series) > 0 and len(tif.series[0].levels) > 1
                array = None if pyramid_refused else tif.asarray()
        except Exception as exc:  # noqa: BLE001 - tifffile raises many types; the user needs the file's name
            raise PromptsegError(f"{path}: cannot be read as a TIFF ({_unreadable_why(path, exc)})") from exc
        if array is None:
            raise
        return _plain_layer(array, path)
    multiscale = len(pyramid.levels) > 1
    if whole_when_single_level and not multiscale and _unnamed_planar_samples(path, pyramid):
        return _planes_layer(path)
    name = output_stem(path)
    metadata: dict[str, Any] = {"path": str(path)}
    kwargs: dict[str, Any] = {"name": name, "multiscale": multiscale, "metadata": metadata}
    channel_names, _ = _ome_tiff_details(path)
    size = layer_pixel_size(path)
    timed = pyramid.axes.startswith("tz")  # a time-lapse of volumes
    if timed:
        kwargs["axis_labels"] = tuple(pyramid.axes.removesuffix("c"))
    if size is not None:
        stacked = pyramid.axes.startswith(("z", "tz"))
        z = plane_spacing(path, pyramid, size)
        # a time point's step: the OME-Zarr's t scale, as napari-ome-zarr scales it; else 1
        kwargs["scale"] = [float(pyramid.pixel_size.get("t", 1.0))] * timed + [z] * stacked + [size.y, size.x]
        metadata["pixel_size"] = str(size)
        unit = _NAPARI_UNITS.get(str(size.unit))
        if unit is not None:
            planes = "pixel" if stacked and pyramid.stack_axis == "t" else unit
            kwargs["units"] = ["pixel"] * timed + [planes] * stacked + [unit] * 2
    elif timed:
        kwargs["scale"] = [float(pyramid.pixel_size.get("t", 1.0)), plane_spacing(path, pyramid), 1.0, 1.0]
    if pyramid.axes.endswith("c"):
        if pyramid.rgb:
            kwargs["rgb"] = True
        else:  # napari's colour maps and blending per channel; the segmentation widgets take one layer each
            channels = int(pyramid.levels[0].shape[-1])
            kwargs["channel_axis"] = len(pyramid.axes) - 1
            if len(channel_names) != channels or len(set(channel_names)) != channels:
                channel_names = [f"channel {k}" for k in range(channels)]
            kwargs["name"] = [f"{name} {channel}" for channel in channel_names]
    data = pyramid.levels if multiscale else pyramid.levels[0]
    if not multiscale and whole_when_single_level:
        if path.is_file():  # a mosaic's size declared: refused from its header, as every command refuses it
            _refuse_more_than_memory(path, PLUGIN_READ_WHOLE_ADVICE)
        data = np.asarray(data)
    return [(data, kwargs, "image")]


#: the layer metadata keys of one channel of a file the reader opened one layer per channel: its index in the file,
#: and the file's channel count (with ``path``, the file's): the Text widget reads a file's channel layers together
#: for a text model trained on multichannel images
CHANNEL_KEY, CHANNELS_KEY = "channel", "channels"


def per_channel_metadata(layers: list[LayerData]) -> list[LayerData]:
    """``layers``, each one napari splits into a layer per channel (``channel_axis``) given a metadata dict per
    channel: its own, with the channel's index and the channel count (napari gives every channel's layer a dict of
    its own when given a list). The last step of the reader: the layer data's metadata stays one dict until then."""
    for data, kwargs, _ in layers:
        axis, metadata = kwargs.get("channel_axis"), kwargs.get("metadata")
        if axis is None or not isinstance(metadata, dict):
            continue
        count = int(np.shape(data[0] if isinstance(data, list) else data)[axis])
        kwargs["metadata"] = [{**metadata, CHANNEL_KEY: k, CHANNELS_KEY: count} for k in range(count)]
    return layers


def plane_spacing(path: str | Path, pyramid: MultiscaleImage | None = None, size: PixelSize | None = None) -> float:
    """The spacing of the planes of the stack ``path`` in the unit of its pixel size ``size`` (its
    :func:`.calibration.pixel_size`), as :func:`image_layer_data` scales its layer: an OME-TIFF's PhysicalSizeZ
    (in µm, beside a pixel size in µm), an ImageJ stack's ``spacing`` (in its own unit, as Fiji reads it), an
    OME-Zarr's z scale; 1 otherwise (a time-lapse's frames, unknown spacing). ``pyramid``: the file opened
    (:func:`.multiscale.open_multiscale`), when the caller has it."""
    path = Path(path)
    pyramid = open_multiscale(path) if pyramid is None else pyramid
    size = pixel_size(path) if size is None else size
    if pyramid.stack_axis != "z" or size is None:
        return 1.0
    recorded = _recorded_ome_calibration(path)
    if recorded is not None and recorded[0].unit == size.unit:  # promptseg's labels, in their own unit
        return recorded[1]
    _, z_spacing = _ome_tiff_details(path)
    # the OME spacing is in micrometres: only beside a pixel size in them (not one from resolution tags in cm)
    if z_spacing is not None and _NAPARI_UNITS.get(str(size.unit)) == "µm":
        return float(z_spacing)
    imagej = _imagej_spacing(path)
    if imagej is not None:
        return imagej
    z = pyramid.pixel_size.get("z", 1.0)
    if pyramid.ome_version is not None and size.unit == "µm":  # an OME-Zarr read in µm
        z = axis_micrometres(pyramid, "z") or z  # its planes' spacing too (nm beside nm read as µm)
    return float(z)


def layer_pixel_size(path: str | Path) -> PixelSize | None:
    """The pixel size of the layer napari opens ``path`` as, in that layer's unit: an OME-Zarr's own numbers in its
    own unit, as napari-ome-zarr scales it (:func:`_zarr_own_unit`); the labels TIFFs promptseg wrote of one in the
    unit they record (:func:`_recorded_ome_calibration`); else :func:`.calibration.pixel_size` (as Fiji reads it:
    OME metadata in µm). Metadata only."""
    own = _zarr_own_unit(path)
    if own is not None:
        image, unit = own
        return PixelSize(image.pixel_size["x"], image.pixel_size["y"], unit)
    recorded = _recorded_ome_calibration(path)
    return recorded[0] if recorded is not None else pixel_size(path)


def _recorded_ome_calibration(path: str | Path) -> tuple[PixelSize, float] | None:
    """The pixel size and plane spacing (1 without one) a TIFF promptseg wrote (labels, register's outputs) records in
    OME metadata in a unit other than µm (:func:`.tiff_metadata.tiff_calibration`: an OME-Zarr's nm, as its layer
    opens), in that unit; None for any other file (read in µm, as Bio-Formats gives Fiji every OME size)."""
    import tifffile

    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES or output_marker(path) not in (*LABELS_MARKERS, *REGISTER_MARKERS):
        return None
    with tifffile.TiffFile(path) as tif:
        xml = tif.ome_metadata if tif.is_ome else None
    tag = re.search(r"<(?:\w+:)?Pixels\b[^>]*>", xml or "")
    if tag is None:
        return None

    def attribute(key: str) -> str | None:
        found = re.search(rf'\b{key}="([^"]*)"', tag.group(0))
        return found.group(1) if found else None

    unit = attribute("PhysicalSizeXUnit")
    if unit in (None, "µm") or unit not in _NAPARI_UNITS or attribute("PhysicalSizeYUnit") != unit:
        return None
    try:
        x, y = float(attribute("PhysicalSizeX") or "nan"), float(attribute("PhysicalSizeY") or "nan")
        z = float(attribute("PhysicalSizeZ") or 1.0) if attribute("PhysicalSizeZUnit") in (unit, None) else 1.0
    except ValueError:
        return None
    if not (x > 0 and y > 0 and z > 0):
        return None
    return PixelSize(x, y, _NAPARI_UNITS[unit]), z


def labels_calibration(path: str | Path, ndim: int) -> tuple[PixelSize | None, float | None]:
    """What labels (``ndim`` dimensions) of the input ``path`` record so that they open over its layer
    (:func:`.images.write_labels`'s ``pixel_size`` and ``z_spacing``): its pixel size, and a stack's plane spacing
    as :func:`image_layer_data` gives it (None where it is 1, as a file without one is read); an OME-Zarr's as
    napari-ome-zarr scales it (:func:`_zarr_own_unit`). (None, None) for an uncalibrated input, whose labels are then
    written as they always were."""
    own = _zarr_own_unit(path)
    if own is not None:
        image, unit = own
        size = PixelSize(image.pixel_size["x"], image.pixel_size["y"], unit)
        # a stack's planes, and a time-lapse of volumes' (T, Z, Y, X)
        z = float(image.pixel_size.get("z", 1.0)) if ndim in (3, 4) and image.stack_axis == "z" else 1.0
        return size, None if z == 1.0 else z
    size = pixel_size(path)
    if size is None or ndim != 3:
        return size, None
    z = plane_spacing(path, size=size)
    return size, None if z == 1.0 else z


#: NGFF length units -> the names ImageJ descriptions and napari take, for the OME-Zarrs whose labels TIFFs keep
#: their own unit (:func:`_zarr_own_unit`)
_NGFF_SHORT_UNITS = {
    "nanometer": "nm",
    "micrometer": "µm",
    "millimeter": "mm",
    "centimeter": "cm",
    "meter": "m",
    "inch": "inch",
}


def _zarr_own_unit(path: str | Path) -> tuple[MultiscaleImage, str] | None:
    """An OME-Zarr input opened, and the unit its rows and columns share, when labels TIFFs of it keep its scale's
    numbers in it: napari-ome-zarr scales the image by those numbers and converts no unit, so labels in µm (0.5
    beside an electron micrograph's 500 nm) covered a thousandth of it. None for any other input (or unit)."""
    if not is_ome_zarr(path):
        return None
    image = open_multiscale(path, keep_time=True)  # its metadata alone: a time-lapse of volumes' too (--time)
    units = {image.axis_info.get(a, {}).get("unit") for a in "yx"}
    unit = _NGFF_SHORT_UNITS.get(str(units.pop()).lower()) if len(units) == 1 else None
    if unit is None or not {"y", "x"} <= set(image.pixel_size):
        return None
    return image, unit


def labels_origin(path: str | Path, ndim: int) -> tuple[float, ...] | None:
    """Where labels (``ndim`` dimensions, (Y, X) or a stack's (Z, Y, X)) of the input ``path`` start: an OME-Zarr's
    level-0 translation (its origin) on their axes, in the unit :func:`labels_calibration` gives their pixel size and
    plane spacing in (a time-lapse's frames start at 0); None for any other input, or one at 0.
    :func:`.images.write_labels` records it."""
    from .calibration import micrometres_per_unit

    if not is_ome_zarr(path):
        return None
    image = open_multiscale(path, keep_time=True)
    translation = dict(zip(image.source_axes, image.level_transforms[0]["translation"], strict=True))
    # in the scale's own numbers where the labels keep them, else in µm when the pixel size is read in them
    in_micrometres = _zarr_own_unit(path) is None and (pixel_size(path) or PixelSize(1, 1)).unit == "µm"

    def along(axis: str) -> float:
        factor = micrometres_per_unit(image.axis_info.get(axis, {}).get("unit")) if in_micrometres else None
        return float(translation.get(axis, 0.0)) * (factor or 1.0)

    origin = (along("y"), along("x"))
    if ndim in (3, 4):
        origin = (along("z") if image.stack_axis == "z" else 0.0, *origin)
    if ndim == 4:  # a time-lapse of volumes' labels (T, Z, Y, X): its time points start at 0
        origin = (0.0, *origin)
    return origin if any(origin) else None


def labels_frame_interval(path: str | Path, ndim: int) -> float | None:
    """The time between the frames of labels (``ndim`` dimensions) of the input ``path``, as napari-ome-zarr scales
    them: a time-lapse OME-Zarr's t scale (in its own unit) when it is not 1; None for any other input."""
    if ndim != 3 or not is_ome_zarr(path):
        return None
    image = open_multiscale(path)
    interval = float(image.pixel_size.get("t", 1.0)) if image.stack_axis == "t" else 1.0
    return None if interval == 1.0 else interval


def recorded_frame_interval(path: str | Path) -> float | None:
    """The frame interval a time-lapse TIFF records (ImageJ's finterval, OME's TimeIncrement) when its first axis is
    time; None otherwise. Only the header is read."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.series or not tif.series[0].axes.startswith("T"):
            return None
        imagej = (tif.imagej_metadata or {}) if tif.is_imagej else {}
        xml = tif.ome_metadata if tif.is_ome else None
    value = imagej.get("finterval")
    if value is None and xml:
        found = re.search(r'<(?:\w+:)?Pixels\b[^>]*\bTimeIncrement="([^"]*)"', xml)
        value = found.group(1) if found else None
    try:
        interval = float(value) if value is not None else None
    except ValueError:
        return None
    return interval if interval is not None and interval > 0 else None


def recorded_origin(path: str | Path, scale: Sequence[float], unit: str | None = None) -> list[float] | None:
    """The origin a TIFF records (:func:`.tiff_metadata.tiff_origin`: ImageJ's x/y/zorigin, or its first OME plane's
    Position), along the axes of its layer of ``scale`` ((Z,) Y, X, in the layer's ``unit``: µm where it names
    none); None when it records none. Only the header is read."""
    import tifffile

    from .calibration import micrometres_per_unit

    per_unit = micrometres_per_unit(unit) or 1.0  # an OME Position in another length, in the layer's

    ndim = len(scale)
    with tifffile.TiffFile(path) as tif:
        imagej = (tif.imagej_metadata or {}) if tif.is_imagej else None
        xml = tif.ome_metadata if tif.is_ome else None
        shaped = tif.shaped_metadata[0] if tif.is_shaped and tif.shaped_metadata else {}
    found: dict[str, float] = {}
    recorded = shaped.get("origin")  # tifffile's own description ((1, Y, X) labels): in the layer's unit, per axis
    if isinstance(recorded, list) and len(recorded) >= 2 and all(isinstance(v, (int, float)) for v in recorded):
        found = dict(zip("zyx"[3 - min(len(recorded), 3) :], map(float, recorded[-3:]), strict=True))
    elif imagej:  # in pixels, the negative of the offset
        for axis, k in (("z", ndim - 3), ("y", ndim - 2), ("x", ndim - 1)):
            value = imagej.get(f"{axis}origin")
            if k >= 0 and isinstance(value, (int, float)):
                found[axis] = -float(value) * float(scale[k])
    elif xml:
        plane = re.search(r"<(?:\w+:)?Plane\b[^>]*>", xml)
        for axis, k in (("z", ndim - 3), ("y", ndim - 2), ("x", ndim - 1)):
            value = re.search(rf'\bPosition{axis.upper()}="([^"]*)"', plane.group(0)) if plane else None
            unit = re.search(rf'\bPosition{axis.upper()}Unit="([^"]*)"', plane.group(0)) if plane else None
            if k < 0 or value is None:
                continue
            if unit is not None and unit.group(1) == "pixel":
                with contextlib.suppress(ValueError):
                    found[axis] = float(value.group(1)) * float(scale[k])
            else:  # in a length, converted into the unit of the layer's scale
                micrometres = ome_micrometres(value.group(1), unit.group(1) if unit else None)
                if micrometres is not None:
                    found[axis] = micrometres / per_unit
    origin = [found.get(axis, 0.0) for axis in "zyx"[3 - ndim :]] if ndim <= 3 else None
    return origin if origin and any(origin) else None


def _imagej_spacing(path: Path) -> float | None:
    """An ImageJ TIFF's plane spacing (its description's ``spacing``, in its ``unit``), None for any other file."""
    import tifffile

    if path.suffix.lower() not in TIFF_SUFFIXES or not path.is_file():
        return None
    with tifffile.TiffFile(path) as tif:
        spacing = (tif.imagej_metadata or {}).get("spacing") if tif.is_imagej else None
    try:
        return float(spacing) if spacing is not None and float(spacing) > 0 else None
    except (TypeError, ValueError):
        return None


def tiff_layer_data(path: str | Path) -> list[LayerData]:
    """What napari opens a TIFF as through the plugin: :func:`image_layer_data` (a single level read whole), and a
    label TIFF promptseg wrote (:func:`.images.is_own_output`: a segmentation's, register's warped labels; not
    register's warped images) as a Labels layer, in the pixel size it recorded from its input (so it lies over the
    image it came from), a pyramid lazily; register's outputs of a coarser level of the fixed image where that
    level lies (:func:`_register_level_translate`). A TIFF of several images: its first, the others said in the
    first layer's metadata ``left_out`` (the napari reader shows it)."""
    layers = image_layer_data(path, whole_when_single_level=True)
    for data, _, _ in layers:
        full = data[0] if isinstance(data, list) else data
        _refuse_complex(path, full.dtype)
        if len(full.shape) < 2 or not np.prod(full.shape):  # napari's own words named no file
            raise PromptsegError(f"{path}: cannot be read as an image (no pixels: shape {tuple(full.shape)})")
    left_out = other_images_left_out(path)
    if left_out:
        layers[0][1]["metadata"]["left_out"] = left_out
    marker = output_marker(path)  # the file's header read once for both questions
    if marker in REGISTER_MARKERS:
        for _, kwargs, _ in layers:
            _register_level_translate(Path(path), kwargs)
        names = layers[0][1]["name"]
        if Path(path).name == DISPLACEMENT_FILE and isinstance(names, list) and len(names) == 2:
            # its channels by what they hold: 'displacement channel 0' and '1' told dx from dy to no one
            layers[0][1]["name"] = [f"{output_stem(path)} {channel}" for channel in DISPLACEMENT_CHANNELS]
    if marker in LABELS_MARKERS:
        for data, kwargs, _ in layers:
            # an OME-Zarr input's origin, kept in the metadata only: napari-ome-zarr opens the image at 0 (it drops
            # its translation), where the labels must lie over it
            ndim = len(data[0].shape if isinstance(data, list) else data.shape)
            interval = recorded_frame_interval(path) if ndim == 3 else None
            if interval is not None:  # a time-lapse OME-Zarr's frames, as napari-ome-zarr scales them
                kwargs["scale"] = [interval, *kwargs.get("scale", [1.0] * ndim)[1:]]
            scale, unit = kwargs.get("scale", [1.0] * ndim), kwargs.get("units", [None])[-1]
            origin = recorded_origin(path, scale, unit) if ndim in (2, 3) else None
            if origin is not None:
                kwargs["metadata"]["origin"] = origin
        return [(data, kwargs, "labels") for data, kwargs, _ in layers]
    return layers


def _refuse_complex(path: str | Path, dtype: np.dtype) -> None:
    """napari shows no complex image: it failed with an empty NotImplementedError, naming neither file nor cause."""
    if np.dtype(dtype).kind == "c":
        raise PromptsegError(
            f"{path}: complex values ({np.dtype(dtype)}), which napari cannot show; save their magnitude (abs) or "
            "real part as the image to open"
        )


def _register_level_translate(path: Path, kwargs: dict[str, Any]) -> None:
    """An output of `promptseg register` on a coarser level of the fixed image (its report.json beside it says
    which: ``registered_level``) starts where that level's first pixel stands, the centre of the block of fixed
    pixels it covers (:func:`~napari_promptseg.tiling.level_to_full`), not at the fixed image's first pixel: half a
    level pixel less one fixed pixel's half, in the layer's scale (the level's pixel size). Without the report (moved
    away, unreadable) the layer keeps no translate."""
    import json

    try:
        report = json.loads((path.parent / "report.json").read_text())
        factors = np.asarray(report["registered_level"]["fixed"]["factors"], float)[:2]
    except (OSError, ValueError, KeyError, TypeError):
        return
    scale = np.asarray(kwargs.get("scale", [1.0, 1.0]), float)[-2:]
    if factors.shape != (2,) or np.all(factors == 1.0):
        return
    from ..tiling import level_to_full

    # the level's first pixel in fixed pixels (the one rule of every level read), in the fixed pixel size
    kwargs["translate"] = [float(t) for t in level_to_full(np.zeros(2), factors) * scale / factors]


def file_placement(path: str | Path, factors: tuple[float, float] = (1.0, 1.0)) -> dict[str, Any]:
    """``scale``, ``translate`` (and ``units``) that lay a 2D result found on a level ``factors`` (rows, columns)
    times coarser than the full resolution of the image file ``path`` over that file's layer as
    :func:`image_layer_data` opens it: the level's pixels over the full-resolution pixels they stand for
    (:func:`~napari_promptseg.tiling.level_placement`), in the file's pixel size and unit."""
    from ..tiling import level_placement

    placed = level_placement(factors)
    size = layer_pixel_size(path)
    if size is None:
        return placed
    pixel = np.array([size.y, size.x], float)
    out: dict[str, Any] = {key: tuple(map(float, np.multiply(value, pixel))) for key, value in placed.items()}
    unit = _NAPARI_UNITS.get(str(size.unit))
    if unit is not None:
        out["units"] = (unit, unit)
    return out


def _unnamed_planar_samples(path: Path, pyramid: MultiscaleImage) -> bool:
    """Whether a TIFF's colour samples are planes before its rows (planar RGB) that no OME or ImageJ metadata names:
    what tifffile makes of any (3 or 4, Y, X) array unless told (a guess it says it will stop making), so the CLI
    reads their axis as it reads an unnamed first axis (planes, or channels given channel axis 0)."""
    axes = pyramid.source_axes
    return pyramid.rgb and axes.index("c") < axes.index("y") and tiff_axis_names(path) is None


def _planes_layer(path: Path) -> list[LayerData]:
    """The layer of a TIFF read whole in the CLI's axes (:func:`.multiscale.read_image_named`): its pixel size on the
    last two, as the CLI's labels of it record it (one unit on every axis, as they open)."""
    array = np.asarray(read_image_named(path))
    [(_, kwargs, kind)] = _plain_layer(array, path)
    kwargs["multiscale"] = False
    size = pixel_size(path)
    if size is not None:
        kwargs["scale"] = [1.0] * (array.ndim - 2) + [size.y, size.x]
        kwargs["metadata"]["pixel_size"] = str(size)
        unit = _NAPARI_UNITS.get(str(size.unit))
        if unit is not None:
            kwargs["units"] = [unit] * array.ndim
    return [(array, kwargs, kind)]


def _plain_layer(array: np.ndarray, path: Path) -> list[LayerData]:
    """A file read whole, as napari's own reader gives it: no scale, no channel split."""
    return [(array, {"name": output_stem(path), "metadata": {"path": str(path)}}, "image")]


def _ome_tiff_details(path: Path) -> tuple[list[str], float | None]:
    """An OME-TIFF's channel names and plane spacing (PhysicalSizeZ, in micrometres) of its first image; ([], None)
    for any other file. Only the header is read."""
    import tifffile

    if path.suffix.lower() not in TIFF_SUFFIXES:
        return [], None
    with tifffile.TiffFile(path) as tif:
        xml = tif.ome_metadata if tif.is_ome else None
    pixels = re.search(r"<(?:\w+:)?Pixels\b.*?(?:</(?:\w+:)?Pixels>|$)", xml or "", re.DOTALL)
    if pixels is None:
        return [], None
    block = pixels.group(0)
    tag = re.match(r"<[^>]*>", block).group(0)
    names = [
        re.search(r'\bName="([^"]*)"', channel).group(1) if 'Name="' in channel else ""
        for channel in re.findall(r"<(?:\w+:)?Channel\b[^>]*>", block)
    ]

    def attribute(key: str) -> str | None:
        found = re.search(rf'\b{key}="([^"]*)"', tag)
        return found.group(1) if found else None

    # in micrometres, as :func:`.calibration.pixel_size` reads PhysicalSizeX/Y (a spacing in mm beside a pixel size
    # in µm flattened the stack a thousandfold)
    z = ome_micrometres(attribute("PhysicalSizeZ"), attribute("PhysicalSizeZUnit"))
    return [n for n in names if n], z if z is not None and z > 0 else None
