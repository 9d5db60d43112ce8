"""Image, mask and label files."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import stat
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tifffile

from ..errors import PromptsegError
from ..models.preprocessing import full_resolution, is_lazy
from ._files import replacing
from .label_ids import (  # noqa: F401 (imported from here by the readers and methods)
    MaskSource,
    check_label_values,
    file_labels,
    is_mask,
    label_image_2d,
    label_objects,
    label_plane,
    mask_foreground,
    mask_pixels,
    mask_values,
    refuse_negative_ids,
)
from .tiff_colours import (  # noqa: F401 (cmyk_*: imported from here by the readers)
    ROLES,
    Role,
    as_shown,
    cmyk_sample_axis,
    cmyk_to_rgb,
    min_is_white_top,
    palette_colours,
)
from .tiff_metadata import ome_uuid, tiff_calibration, tiff_origin

if TYPE_CHECKING:
    from .calibration import PixelSize

#: whole-slide scanners' TIFF-based files (Aperio, Hamamatsu): pyramids read as any pyramidal TIFF, series 0 (the
#: slide; its label, macro and thumbnail images are other series), tile by tile
SLIDE_SUFFIXES = (".svs", ".ndpi")
TIFF_SUFFIXES = (".tif", ".tiff", *SLIDE_SUFFIXES)
#: what a folder of inputs is read for (OME-Zarr folders besides)
IMAGE_SUFFIXES = (*TIFF_SUFFIXES, ".png", ".jpg", ".jpeg", ".bmp")
#: longest side of an overlay PNG
OVERLAY_SIDE = 4096
#: written into every label TIFF (its Software tag) and overlay PNG (a "Software" text chunk) this package makes, so
#: a rerun into an output folder replaces its own earlier files and refuses to overwrite anyone else's
OUTPUT_MARKER = "napari-promptseg"
#: register's images (the warped moving image, the displacement): ours, but images a later run may take as inputs
REGISTER_MARKER = "napari-promptseg register"
#: register's warped labels (--moving-labels on the fixed grid): ours, inputs too, and labels (the reader opens them
#: as a Labels layer); an earlier run's carry :data:`REGISTER_MARKER`
REGISTER_LABELS_MARKER = "napari-promptseg register labels"
#: every mark register's outputs carry (a rerun replaces any of them; the reader places any on the fixed image)
REGISTER_MARKERS = (REGISTER_MARKER, REGISTER_LABELS_MARKER)
#: register's displacement field ((H, W, 2), last axis dx, dy) and what its two channels hold, as napari names them
DISPLACEMENT_FILE = "displacement.tif"
DISPLACEMENT_CHANNELS = ("dx (columns)", "dy (rows)")
#: the marks of the label TIFFs promptseg writes (the reader opens them as Labels layers)
LABELS_MARKERS = (OUTPUT_MARKER, REGISTER_LABELS_MARKER)
#: pixel bytes above which a TIFF is written as BigTIFF: classic TIFF's offsets are 32-bit (4 GiB), less room for
#: the tags and metadata written after the pixels (tifffile's own margin, 32 MiB); compression is no promise of
#: fitting (noise compresses to about its own size), so the uncompressed size decides
BIGTIFF_ABOVE_BYTES = 2**32 - 2**25
#: longest side of a label image's plane above which it is written as a tiled pyramid (as is a BigTIFF's): napari's
#: largest texture, past which a viewer reads a whole slide's labels whole (gigabytes) to show them
PYRAMID_ABOVE_SIDE = 16384
#: a pyramid of labels halves its levels (every other pixel: ids are never blended) until this longest side
PYRAMID_TOP_SIDE = 2048
#: the tiles of a pyramid of labels: what a viewer reads of a level at a time
PYRAMID_TILE = (512, 512)
#: lazy labels (a stack's found on a pyramid level, back at full resolution) larger than this are written to a TIFF
#: tile by tile, never made whole in memory (5 planes of 16k x 16k: 2.5 GB); smaller ones are written as any labels
LAZY_WHOLE_ABOVE_BYTES = 2**28


def array_digest(*arrays: np.ndarray) -> str:
    """SHA-256 of arrays' dtypes, shapes and bytes, in order: one image's identity (equal digests, equal pixels).
    Reads the bytes in place (no copy of a large layer)."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B") if array.size else b"")
    return digest.hexdigest()


def output_stem(path: str | Path, renamed: Mapping[str, str] | None = None) -> str:
    """Output name of an input: 'slide.ome.zarr' and 'slide.ome.tif' -> 'slide', 'cells.png' -> 'cells'; the image
    series of a bioformats2raw container: 'slide.ome.zarr/0' -> 'slide', 'slide.ome.zarr/2' -> 'slide_2' (not '0',
    which every such container's first series would share). ``renamed``: a run's names of inputs that share one
    (:func:`distinct_output_stems`), by absolute path."""
    from .multiscale import is_bioformats2raw_series

    path = Path(path)
    if renamed and str(path.absolute()) in renamed:
        return renamed[str(path.absolute())]
    if is_bioformats2raw_series(path):
        stem = output_stem(path.parent)
        return stem if path.name == "0" else f"{stem}_{path.name}"
    name = path.name
    for suffix in (".ome.zarr", ".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def distinct_output_stems(paths: Sequence[str | Path]) -> dict[str, str]:
    """Output names for the inputs of one run that share an :func:`output_stem` ('slide.png' and 'slide.ome.zarr'):
    each is named after its whole file name instead ('slide.png', 'slide.ome.zarr', so 'slide.png.tif' and
    'slide.ome.zarr.tif'), by absolute path. Inputs whose whole names are the same too ('x.tif' in two folders) keep
    their stem: their outputs would be one file, which the caller refuses."""
    from .multiscale import is_bioformats2raw_series

    def whole_name(path: Path) -> str:
        if is_bioformats2raw_series(path):  # a container's series: the container's whole name, numbered as usual
            return path.parent.name if path.name == "0" else f"{path.parent.name}_{path.name}"
        return path.name

    by_stem: dict[str, list[Path]] = {}
    for path in map(Path, paths):
        by_stem.setdefault(output_stem(path), []).append(path)
    renamed = {}
    for sharing in by_stem.values():
        if len(sharing) > 1:
            names = {p: whole_name(p) for p in sharing}
            unique = [p for p in sharing if list(names.values()).count(names[p]) == 1]
            renamed.update({str(p.absolute()): names[p] for p in unique})
    return renamed


def missing_file_why(path: str | Path) -> str:
    """Why ``path``, not a file, is not there: a link whose target is gone or that leads back to itself, a named
    pipe or a device (a folder's listing shows each, so 'no such file' read as wrong), else no such file."""
    path = Path(path)
    if path.is_symlink():
        try:
            path.stat()
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # `ln -s a.png a.png`, or two links naming each other
                return f"a link that leads back to itself (a loop of links; it names {os.readlink(path)})"
        with contextlib.suppress(OSError):
            return f"a link to {os.readlink(path)}, which does not exist"
    try:
        mode = path.stat().st_mode
    except OSError:
        return "no such file"
    # there, but no file of data: never opened (a named pipe's open waits for a writer forever)
    if stat.S_ISFIFO(mode):
        return "a named pipe, not a file of pixels"
    if stat.S_ISSOCK(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a socket or a device, not a file of pixels"
    return "no such file"


def read_image(path: str | Path, *, role: Role = "image", keep_time: bool = False) -> np.ndarray:
    """Read an image file (TIFF, PNG, JPEG, BMP, ...) as a numpy array in its stored dtype.

    ``role``: "image" reads a palette TIFF in its RGB colours and a MinIsWhite grey TIFF inverted, as viewers show
    them; "labels" (a mask or label file) keeps their stored values, the ids (see :mod:`.tiff_colours`).

    OME-Zarr image directories and pyramidal TIFFs are opened lazily: their full-resolution level as a dask array in
    the order (Z, ) Y, X (, C) (see :mod:`.multiscale`); nothing is read until a tile or plane is asked for.
    ``keep_time``: such a time-lapse of volumes is opened whole, (T, Z, Y, X[, C]), for one time point to be taken
    (:func:`.multiscale.open_multiscale`); refused without."""
    from .multiscale import bioformats2raw_series, is_lazy_image, not_ome_zarr_why, open_multiscale

    if role not in ROLES:
        raise PromptsegError(f"read_image: role {role!r}; expected one of {', '.join(ROLES)}")
    path = Path(path)
    if path.is_dir() or is_lazy_image(path):
        if bioformats2raw_series(path):
            open_multiscale(path)  # names the container's image series to open
        if not is_lazy_image(path):
            raise PromptsegError(f"{path}: a directory, not an image: {not_ome_zarr_why(path)}")
        return open_multiscale(path, role=role, keep_time=keep_time).levels[0]
    if not path.is_file():
        raise PromptsegError(f"{path}: {missing_file_why(path)}")
    _refuse_more_than_memory(path)
    try:
        misnamed = _format_of_misnamed_tiff(path)
        if path.suffix.lower() in TIFF_SUFFIXES and misnamed is None:
            with tifffile.TiffFile(path) as tif:
                image = tif.asarray()
                grey_alpha = _grey_and_alpha(tif, image.shape)
                cmyk = cmyk_sample_axis(tif, image.ndim)
                if role == "image":  # a palette's colours, MinIsWhite grey inverted; labels keep their ids
                    image = as_shown(image, palette_colours(tif), min_is_white_top(tif))
            if cmyk is not None:  # ink channels, no RGBA: in RGB, as a CMYK JPEG is read
                image = np.moveaxis(cmyk_to_rgb(image, cmyk), cmyk, -1)
        else:
            import imageio.v3 as iio

            # a PNG or JPEG named .tif (renamed, or an exporter's choice) is read as what it holds, not refused as
            # "not a TIFF file"
            # a CMYK JPEG's ink channels are no RGBA (its colours came out inverted): read in RGB, as Pillow converts
            mode = _pillow_mode(path)
            if role == "labels" and mode in ("P", "PA"):  # a palette PNG or BMP of labels: its indices are the ids
                from PIL import Image

                with Image.open(path) as indexed:
                    image = np.asarray(indexed)
            else:
                image = np.asarray(iio.imread(path, extension=misnamed, **({"mode": "RGB"} if mode == "CMYK" else {})))
            grey_alpha = image.ndim == 3 and image.shape[-1] == 2  # a PNG's only kind of two samples
    except Exception as exc:  # every reader has its own exception types; the user needs the file name
        raise PromptsegError(f"{path}: cannot be read as an image ({_unreadable_why(path, exc)})") from exc
    if grey_alpha:  # its alpha is no second channel (the models took it for one), as an RGBA image's is not
        # a mask or label file's transparent pixels are background (a white one was all foreground), as an RGBA one's
        grey = image[..., 0]
        image = np.where(image[..., 1] > 0, grey, 0).astype(grey.dtype, copy=False) if role == "labels" else grey
    if image.ndim < 2 or not image.size:  # tifffile reads a TIFF without pages as an empty array, with a warning
        raise PromptsegError(f"{path}: cannot be read as an image (no pixels: shape {image.shape})")
    return image


#: what to do with an image too large to read whole, as the commands read files (a large tiled TIFF tile by tile)
READ_WHOLE_ADVICE = (
    "save it as a tiled TIFF or a pyramid (OME-TIFF, OME-Zarr), which is read tile by tile, or downsample it"
)
#: the same, as the napari plugin reads them: a TIFF of one level whole, tiled or not; a pyramid level by level
PLUGIN_READ_WHOLE_ADVICE = (
    "save it as a pyramid (OME-TIFF, OME-Zarr), which napari opens level by level, or downsample it; the promptseg "
    "commands read a tiled TIFF tile by tile"
)


def _refuse_more_than_memory(path: Path, advice: str = READ_WHOLE_ADVICE) -> None:
    """Refuse, from its header, an image file read whole whose pixels take more than the memory (and swap) free now:
    a TIFF of strips (not tiles, which a large one is read by) or a PNG declaring a mosaic's size was read until the
    system killed the process, without a word of why. ``advice``: what to do instead, true for the reader refusing
    (the plugin's: :data:`PLUGIN_READ_WHOLE_ADVICE`)."""
    import psutil  # distributed's dependency

    declared = _declared_bytes(path)
    # swap too: a read that fits there is slow, not killed
    free = psutil.virtual_memory().available + psutil.swap_memory().free
    if declared is None or declared <= free:
        return
    raise PromptsegError(
        f"{path}: its pixels take {declared / 1e9:.1f} GB read whole, more than the {free / 1e9:.1f} GB of memory "
        f"(and swap) free (nothing was read); {advice}"
    )


def _declared_bytes(path: Path) -> int | None:
    """The bytes of an image file's pixels as its header declares them (a TIFF's first series, the formats Pillow
    opens); None when it says nothing readable here (its reader then says why)."""
    try:
        if path.suffix.lower() in TIFF_SUFFIXES and _format_of_misnamed_tiff(path) is None:
            with _only_looking(), tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                return int(np.prod(series.shape, dtype=np.int64)) * np.dtype(series.dtype).itemsize
        import warnings

        from PIL import Image

        with warnings.catch_warnings(), Image.open(path) as image:  # the header only
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            width, height = image.size
            sample = 2 if "16" in image.mode else 4 if image.mode in ("I", "F") else 1
            return width * height * len(image.getbands()) * sample
    except Exception:  # noqa: BLE001 - many readers, many exception types: the read says why
        return None


def _is_cmyk(path: Path) -> bool:
    """Whether Pillow opens ``path`` as a CMYK image (a JPEG saved for print); only its header is read."""
    return _pillow_mode(path) == "CMYK"


def _pillow_mode(path: Path) -> str | None:
    """The mode Pillow opens ``path`` in ("CMYK": a JPEG saved for print; "P": a palette PNG), None for a file it
    does not open; only its header is read."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.mode
    except Exception:  # noqa: BLE001 - not an image Pillow opens: its reader says why
        return None


def _grey_and_alpha(tif: tifffile.TiffFile, shape: tuple[int, ...]) -> bool:
    """Whether a TIFF read as ``shape`` holds grey pixels with an alpha sample, last (grey + alpha, as image editors
    save transparency): two samples, the second an alpha (ExtraSamples 1 or 2)."""
    if not len(tif.pages) or not tif.series:  # no pages: the read says so (no pixels)
        return False
    page = tif.pages.first
    extra = tuple(int(e) for e in np.atleast_1d(page.extrasamples)) if page.extrasamples is not None else ()
    return (
        page.samplesperpixel == 2
        and len(extra) == 1
        and extra[0] in (1, 2)  # associated or unassociated alpha
        and tif.series[0].axes.endswith("S")
        and shape[-1] == 2
    )


#: first bytes of the formats a file named .tif may hold instead, and their suffix
_SIGNATURES = {b"\x89PNG\r\n\x1a\n": ".png", b"\xff\xd8\xff": ".jpg", b"BM": ".bmp"}


def _format_of_misnamed_tiff(path: Path) -> str | None:
    """The suffix of the format a file named .tif holds when its first bytes say it is a PNG, JPEG or BMP; else
    None (a TIFF, or a file of another name)."""
    if path.suffix.lower() not in TIFF_SUFFIXES:
        return None
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return None
    return next((suffix for signature, suffix in _SIGNATURES.items() if head.startswith(signature)), None)


def _tiff_cut_short(path: Path) -> str | None:
    """How much of a TIFF is there when its pixels end past its last byte ("58,176 of its 116,360 bytes"): tifffile
    says only 'failed to read 116352 bytes, got 58032'. None for a TIFF whole, or whose header is unreadable too."""
    try:
        size = path.stat().st_size
        with _only_looking(), tifffile.TiffFile(path) as tif:
            end = max(
                (o + n for page in tif.pages for o, n in zip(page.dataoffsets, page.databytecounts, strict=False)),
                default=0,
            )
    except Exception:  # noqa: BLE001 - a header tifffile cannot read either: its own words say why
        return None
    return f"{size:,} of its {end:,} bytes" if end > size else None


def _unreadable_why(path: Path, exc: Exception) -> str:
    """Why a file is no image, in the user's words: imageio tries every plugin it has on a file no plugin knows, and
    quotes the last one's internals (SimpleITK's 'sitk::ERROR: Unable to determine ImageIO reader')."""
    with contextlib.suppress(OSError):
        if path.stat().st_size == 0:  # a copy still being written, a failed download: not another kind of file
            return "the file is empty (0 bytes): a copy or download not finished, or one that failed?"
    if path.suffix.lower() in TIFF_SUFFIXES:
        cut = _tiff_cut_short(path)
        return f"{exc}; the file is cut short ({cut}): an interrupted copy or download?" if cut else str(exc)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path):
            return str(exc)  # an image Pillow knows, that the reader still failed on: its own words say why
    except UnidentifiedImageError:
        return f"its contents match no image format known here, although it is named {path.suffix or 'with no suffix'}"
    except OSError:
        return str(exc)


def read_mask(path: str | Path, threshold: int = 127) -> np.ndarray:
    """Binary mask from a file (:func:`mask_foreground`): a lossy file's (JPEG: compression blurs its edges) cut at
    ``threshold``, any other's (PNG, TIFF: a label image's every id) every non-zero value (a probability map's, from
    0.5 up); a colour mask's target in
    any colour channel, none where it is transparent (:func:`mask_values`)."""
    mask = label_plane(read_image(path, role="labels"))
    check_label_values(mask, str(path))
    return mask_foreground(mask_values(mask), threshold, source=mask_file_source(path))


#: TIFF compressions that may change the values they store (parts of tifffile's names: the JPEG and WebP families;
#: some have a lossless mode too, which a label image hardly uses)
_LOSSY_TIFF_CODECS = ("JPEG", "WEBP")


def mask_file_source(path: str | Path) -> MaskSource:
    """How the mask or label file ``path`` stores its values (:data:`MaskSource`): "lossy" for a JPEG (by its
    contents: one named .tif too) and a TIFF compressed with JPEG (or another lossy codec), "exact" for any other (PNG,
    TIFF, BMP, OME-Zarr). By the file, not by its values: a label image of ids 1 and 250 was cut at 127 as a blurred
    JPEG mask."""
    path = Path(path)
    try:
        if path.is_dir():
            return "exact"
        with open(path, "rb") as fh:
            head = fh.read(8)
        if head.startswith(b"\xff\xd8\xff"):
            return "lossy"
        if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            with _only_looking(), tifffile.TiffFile(path) as tif:
                compression = tif.pages.first.compression if len(tif.pages) else None
            name = getattr(compression, "name", str(compression))
            return "lossy" if any(codec in name for codec in _LOSSY_TIFF_CODECS) else "exact"
    except Exception:  # noqa: BLE001 - unreadable here: its suffix says what it was saved as (its reader says why)
        return "lossy" if path.suffix.lower() in (".jpg", ".jpeg") else "exact"
    return "exact"


def needs_bigtiff(nbytes: int) -> bool:
    """Whether a TIFF of ``nbytes`` pixel bytes must be a BigTIFF (:data:`BIGTIFF_ABOVE_BYTES`): a classic TIFF of
    a whole slide's labels (65k x 65k uint32: 17 GB) fails to write or is broken. Smaller files stay classic TIFF,
    which every reader opens."""
    return nbytes > BIGTIFF_ABOVE_BYTES


def needs_pyramid(shape: Sequence[int], nbytes: int) -> bool:
    """Whether labels of ``shape`` ((Z,) Y, X) and ``nbytes`` are written as a tiled pyramid: a whole slide's, past
    :data:`PYRAMID_ABOVE_SIDE` px along a side or a BigTIFF's size (:func:`needs_bigtiff`), so that napari opens them
    lazily, tile by tile, at the level it shows. Smaller labels stay one untiled image, as every reader opens it."""
    return needs_bigtiff(nbytes) or max(shape[-2:]) > PYRAMID_ABOVE_SIDE


def label_levels(labels: np.ndarray) -> list[np.ndarray]:
    """The sub-resolution levels of a pyramid of ``labels``: every other pixel along Y and X of the level before
    (nearest neighbour: ids stay ids), until the longest side is :data:`PYRAMID_TOP_SIDE` px at most. Strided views:
    no copy is made here."""
    levels = []
    level = labels
    while max(level.shape[-2:]) > PYRAMID_TOP_SIDE:
        level = level[..., ::2, ::2]
        levels.append(level)
    return levels


def write_labels(
    path: str | Path,
    labels: np.ndarray,
    *,
    axes: str | None = None,
    pixel_size: PixelSize | None = None,
    z_spacing: float | None = None,
    origin: Sequence[float] | None = None,
    frame_interval: float | None = None,
) -> Path:
    """Instance labels ((Y, X) or (Z, Y, X)) as a compressed TIFF (uint16, or uint32 past 65535 objects), marked
    as ours (:data:`OUTPUT_MARKER` in its Software tag; see :func:`is_own_output`). Its axes are named, ``axes``
    ("YX", "ZYX" by default for a stack, "TYX" for the frames of a time-lapse), so Fiji and tifffile read its planes
    as what they are: ImageJ hyperstack metadata, OME for uint32 labels (the ImageJ format holds no 32-bit ids). Past
    :data:`BIGTIFF_ABOVE_BYTES` (a whole slide's labels) the file is a BigTIFF, its axes named in OME; past that or
    :data:`PYRAMID_ABOVE_SIDE` it is a tiled pyramid (:func:`needs_pyramid`), which napari opens lazily.
    ``pixel_size``: the input's calibration, recorded so the labels lie over their image in Fiji and napari
    (:func:`.calibration.pixel_size` reads it back); ``z_spacing``: a stack's plane spacing, in the unit of
    ``pixel_size``. ``origin``: where the first pixel lies, along each axis of the labels in the unit of
    ``pixel_size`` (of ``z_spacing`` for planes; pixels without), an OME-Zarr input's translation
    (:func:`.layer_data.labels_origin`), recorded with the axes' names (:func:`tiff_origin`). ``frame_interval``: a
    time-lapse's (axes "TYX") time between frames, as its input scales them (ImageJ's finterval, OME's
    TimeIncrement; :func:`.layer_data.labels_frame_interval`). Ids a TIFF of labels cannot hold (negative,
    fractional, from 2**32) are refused (:func:`file_labels`)."""
    path = Path(path)
    if is_lazy(labels) and np.prod(np.shape(labels), dtype=np.float64) * 2 > LAZY_WHOLE_ABOVE_BYTES:
        checked = file_labels(labels, str(path), lazy=True)
        if is_lazy(checked):  # integer ids, checked and cast block by block
            axes = (axes or {2: "YX", 3: "ZYX"}.get(checked.ndim, "")).upper()
            placed = {"origin": origin, "frame_interval": frame_interval}
            from .lazy_label_tiff import write_lazy_labels

            return write_lazy_labels(path, checked, axes, pixel_size, z_spacing, **placed)
    labels = file_labels(labels, str(path))
    axes = (axes or {2: "YX", 3: "ZYX"}.get(labels.ndim, "")).upper()
    if axes and len(axes) != labels.ndim:
        raise PromptsegError(f"{path}: axes {axes!r} do not fit labels of shape {labels.shape}")
    named: dict = {}
    bigtiff = needs_bigtiff(labels.nbytes)
    pyramid = needs_pyramid(labels.shape, labels.nbytes)
    if 1 in labels.shape[:-2]:
        # readers of ImageJ and OME metadata drop an axis of one plane ((1, Y, X) read (Y, X)): tifffile's own
        # description keeps the shape, and what the others would record (tiff_calibration, tiff_origin)
        named = {"metadata": {"axes": axes}} if axes else {"metadata": {}}
    # ImageJ's own reader opens no BigTIFF (tifffile calls such a file nonconformant) and no tiles: a BigTIFF or a
    # pyramid names its axes in OME, which Fiji's Bio-Formats and tifffile read
    elif axes and labels.dtype == np.uint16 and not (bigtiff or pyramid):
        named = {"imagej": True, "metadata": {"axes": axes}}
    elif axes:
        named = {"ome": True, "metadata": {"axes": axes, "UUID": ome_uuid(path.name, labels)}}
    stacked = len(axes) == 3 and axes[0] == "Z"
    calibration = tiff_calibration(pixel_size, z_spacing if stacked else None, named)
    tiff_origin(origin, labels.shape, pixel_size, z_spacing if stacked else None, named)
    if frame_interval and "metadata" in named and axes.startswith("T"):
        named["metadata"]["finterval" if named.get("imagej") else "TimeIncrement"] = float(frame_interval)
    levels = label_levels(labels) if pyramid else []
    tiles = {"tile": PYRAMID_TILE, "subifds": len(levels)} if pyramid else {}
    # minisblack: a stack of 3 or 4 planes is planes, not the colour samples tifffile would take them for
    options = {"compression": "zlib", "photometric": "minisblack"}
    path.parent.mkdir(parents=True, exist_ok=True)
    # whole or not at all: a truncated file of a killed run is not ours to replace, and would stop a resume
    with replacing(path) as temp:
        if pyramid:  # the full resolution's SubIFDs hold the levels (subfiletype 1: reduced images), as OME does
            ome = {"ome": named.pop("ome")} if "ome" in named else {}
            with tifffile.TiffWriter(temp, bigtiff=bigtiff, **ome) as tif:
                tif.write(labels, software=OUTPUT_MARKER, **tiles, **options, **named, **calibration)
                for level in levels:
                    tif.write(level, subfiletype=1, tile=PYRAMID_TILE, **options)
        else:
            tifffile.imwrite(temp, labels, software=OUTPUT_MARKER, bigtiff=bigtiff, **options, **named, **calibration)
    return path


def is_own_output(path: str | Path, marker: str | tuple[str, ...] = OUTPUT_MARKER) -> bool:
    """Whether ``path`` is a label TIFF or overlay PNG this package wrote (it carries :data:`OUTPUT_MARKER`; other
    outputs carry their own ``marker``, or one of several: :data:`REGISTER_MARKER`, :data:`REGISTER_LABELS_MARKER`)."""
    markers = (marker,) if isinstance(marker, str) else marker
    return output_marker(path) in markers


_looking = threading.local()


def _not_while_looking(record: logging.LogRecord) -> bool:
    return not getattr(_looking, "active", False)


# this thread's own looks only: a read in another thread (a Dask worker's, a widget's) keeps its warnings
logging.getLogger("tifffile").addFilter(_not_while_looking)


@contextlib.contextmanager
def _only_looking() -> Iterator[None]:
    """tifffile's warnings held back while a file is only looked at (its mark, whether it is a pyramid): a broken
    TIFF's '<tifffile.TiffFile 'x.tif'> contains no pages' was printed at every look, five times for one batch
    input, besides the read's own error naming the file."""
    before = getattr(_looking, "active", False)
    _looking.active = True
    try:
        yield
    finally:
        _looking.active = before


def output_marker(path: str | Path) -> str | None:
    """The Software mark of the TIFF's first page or the PNG (:data:`OUTPUT_MARKER` and its kin on our outputs);
    None when it has none, or is no file or no image it can read."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            with _only_looking(), tifffile.TiffFile(path) as tif:
                return tif.pages[0].software if tif.pages else None
        from PIL import Image

        with Image.open(path) as png:
            return png.info.get("Software")
    except Exception:  # noqa: BLE001 - unreadable or not an image: not ours, so never overwritten
        return None


def write_overlay(
    path: str | Path,
    image: np.ndarray,
    labels: np.ndarray,
    *,
    channel_axis: int | None = None,
    channels: list[int] | None = None,
) -> Path:
    """PNG of the image with coloured instances and their outlines, for a quick look; ``channel_axis`` and
    ``channels`` read the image as the segmentation did (see :func:`..models.preprocessing.as_channels_last`)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo
    from skimage.color import label2rgb
    from skimage.segmentation import find_boundaries

    from ..models.preprocessing import as_channels_last

    # multiscale layers' data: their full-resolution level (a pyramid cannot be sliced as one array)
    image, labels = full_resolution(image), full_resolution(labels)
    # a quick look: a big image is shown at most OVERLAY_SIDE pixels wide (a slide in float would not fit memory)
    step = max(1, -(-max(np.shape(labels)) // OVERLAY_SIDE))
    if channel_axis is not None and np.ndim(image) == 3:  # channels last first, so the step thins Y and X
        image = np.moveaxis(image, channel_axis, -1)  # a dask level stays lazy
        channel_axis = -1
    image, labels = image[::step, ::step], np.asarray(labels[::step, ::step])
    hwc = as_channels_last(image, channel_axis=channel_axis, channels=channels, name=str(path))
    hwc = np.asarray(hwc).astype(np.float32)
    lo, hi = np.percentile(hwc, (0.5, 99.5))
    base = np.clip((hwc - lo) / max(hi - lo, 1e-8), 0, 1)
    if base.shape[2] < 3:  # gray -> repeated, two channels -> red/green (as the model sees them)
        fill = [base[..., :1]] * 2 if base.shape[2] == 1 else [np.zeros_like(base[..., :1])]
        base = np.concatenate([base, *fill], axis=2)
    # blend by hand: label2rgb(image=...) would turn a colour image gray
    colours = label2rgb(labels, bg_label=0, bg_color=(0, 0, 0))
    rgb = np.where((labels > 0)[..., None], 0.65 * base + 0.35 * colours, base)
    rgb[find_boundaries(labels, mode="outer")] = (1.0, 1.0, 0.0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngInfo()
    info.add_text("Software", OUTPUT_MARKER)
    with replacing(path) as tmp:  # a full disk leaves no half-drawn PNG that would pass for an overlay
        Image.fromarray((rgb * 255).astype(np.uint8)).save(tmp, format="PNG", pnginfo=info)
    return path
