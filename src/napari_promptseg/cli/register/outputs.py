"""`promptseg register`'s outputs: which files of an earlier run in -o may be replaced or removed (never a user's)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...errors import PromptsegError
from .._outputs import _own_report

if TYPE_CHECKING:
    from ...io._files import FilesReplacedTogether
    from ...io.calibration import PixelSize

#: --moving-labels on the fixed grid
LABELS_WARPED = "labels_warped.tif"
#: --moving-annotations in the fixed frame
ANNOTATIONS_WARPED = "annotations_warped.geojson"
#: the pixel types OME-XML names (tifffile writes no OME-TIFF of 64-bit integers)
_OME_DTYPES = frozenset(
    ("bool", "int8", "int16", "int32", "uint8", "uint16", "uint32", "float32", "float64", "complex64", "complex128")
)


def grid_tiff_options(
    name: str, data: np.ndarray, grid_shape: Sequence[int], size: PixelSize | None, options: dict
) -> dict:
    """``tifffile.imwrite``'s keyword arguments (``options`` and more) for register's output ``name`` holding
    ``data`` on the fixed grid of ``grid_shape`` (rows, columns) whose pixels are ``size``
    (:func:`~...io.calibration.level_pixel_size`), so the file opens over the fixed image in our reader and Fiji: an
    OME-TIFF naming its axes, in µm as the fixed image is read (:func:`~...io.images.tiff_calibration`), or
    resolution tags (a size in cm, inch or no unit; a 64-bit image, which OME cannot hold). Channels last (the
    displacement's dx, dy; a multichannel warped image) are written as samples of one page (as "YXS"), calibrated
    or not, which reads them as channels: tifffile's default for channels that are not colour made H pages of
    (W, C), a stack napari showed as H planes of W x 2 pixels. No size (an uncalibrated fixed image at full
    resolution): no pixel size recorded, the axes of channels named all the same."""
    from ...io.images import ome_uuid, tiff_calibration

    options = dict(options)
    shape, grid = np.shape(data), tuple(grid_shape)
    axes = None
    if len(shape) == 2:
        axes = "YX"
    elif len(shape) == 3 and shape[:2] == grid:
        axes = "YXS"
        colour = shape[-1] in (3, 4)  # as tifffile takes them when not told (RGB(A))
        options.setdefault("photometric", "rgb" if colour else "minisblack")
        options.setdefault("planarconfig", "contig")
    elif len(shape) == 3 and shape[1:] == grid:
        axes = "SYX" if options.get("planarconfig") == "separate" else "CYX"
    if size is None:  # no OME (nothing to calibrate), but the axes named in tifffile's description: channels first
        # were read back (by every command, and the plugin's reader) as a stack of planes, even the run's own output
        return {**options, "metadata": {"axes": axes}} if axes is not None and len(shape) == 3 else options
    named: dict = {}
    if axes is not None and str(np.dtype(data.dtype)) in _OME_DTYPES:
        named = {"ome": True, "metadata": {"axes": axes, "UUID": ome_uuid(name, data)}}
    calibration = tiff_calibration(size, None, named)
    return {**options, **named, **calibration}


def _check_earlier_outputs(
    output: Path,
    *,
    landmarks_given: bool,
    labels_given: bool = False,
    annotations_given: bool = False,
    pair: tuple[Path, Path] | None = None,
) -> dict | None:
    """Refuse, before any work, to replace files in ``output`` that an earlier register run did not write or that
    were changed since: a foreign report.json, TIFFs without our mark (a user's own image saved under our name;
    labels_warped.tif only when this run writes one), with landmarks (annotations) a landmarks_warped.csv
    (annotations_warped.geojson) whose contents are not those the earlier run recorded (without landmarks, labels
    or annotations such files are kept, and the run says so); and the results of another ``pair`` (fixed, moving:
    the files have one name whatever the pair, so a rerun on another pair replaced them without a word). Returns
    the earlier register run's report, or None."""
    from ...io.images import REGISTER_MARKERS, is_own_output

    report = output / "report.json"
    earlier = _own_report(report)
    if earlier is not None and earlier.get("command") != "register":
        earlier = None
    given = (earlier or {}).get("parameters") or {}
    before = given.get("fixed"), given.get("moving")
    # the same files by another name (a link, a mount) are the same pair
    known = pair is not None and None not in before
    if known and any(Path(b).resolve() != p.resolve() for b, p in zip(before, pair, strict=True)):
        raise PromptsegError(
            f"-o {output}: it holds the registration of {before[1]} onto {before[0]} (its report.json), which this "
            f"run of {pair[1]} onto {pair[0]} would replace; give another output directory, or move those results"
        )
    ours = ("moving_warped.tif", "displacement.tif", *((LABELS_WARPED,) if labels_given else ()))
    foreign = [output / name for name in ours if (output / name).exists() or (output / name).is_symlink()]
    # labels_warped.tif: REGISTER_MARKER of a run before it was marked as labels
    foreign = [p for p in foreign if not is_own_output(p, REGISTER_MARKERS)]
    if report.exists() and earlier is None:
        foreign.append(report)
    for given, name, section, key in (
        (landmarks_given, "landmarks_warped.csv", "landmarks", "landmarks_warped_sha256"),
        (annotations_given, ANNOTATIONS_WARPED, "annotations", "annotations_warped_sha256"),
    ):
        path = output / name
        if given and (path.exists() or path.is_symlink()) and not _is_earlier_text_output(path, earlier, section, key):
            foreign.append(path)
    if foreign:
        raise PromptsegError(
            f"-o {output}: {foreign[0]} is not an earlier output of promptseg register, or was changed since, and "
            "would be overwritten or removed; move it, or give another output directory"
        )
    return earlier


def _file_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _is_earlier_text_output(path: Path, earlier: dict | None, section: str, key: str) -> bool:
    """Whether ``path`` is the file the earlier run wrote, unchanged: its hash as recorded in the earlier report's
    ``section`` under ``key`` (landmarks_warped.csv, annotations_warped.geojson: text files carry no mark)."""
    recorded = ((earlier or {}).get(section) or {}).get(key)
    if not recorded or path.is_symlink() or not path.is_file():
        return False
    try:
        return _file_sha256(path) == recorded
    except OSError:
        return False


def _stale(
    together: FilesReplacedTogether, path: Path, earlier_wrote_it: bool, missing: str, kept_why: str = ""
) -> str | None:
    """Without ``missing`` this run writes no ``path``, and an earlier run's file of that name would pass for this
    run's: removed with this run's replacement (``together``) when ``earlier_wrote_it`` (still as that run wrote it);
    any other file of that name is the user's, kept. Returns what to say once done (``kept_why`` adds what may have
    made it the user's), None for nothing."""
    if earlier_wrote_it:
        together.remove(path.name)
        return f"removed {path} of an earlier run (this run has no {missing})"
    if path.exists() or path.is_symlink():
        return f"kept {path}: not written by this run ({kept_why}this run has no {missing})"
    return None
