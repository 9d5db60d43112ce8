"""The labels of one time point of a time-lapse of volumes (T, Z, Y, X), written into the labels an earlier run of
this package wrote for the same image (a TIFF in -o, an OME-Zarr's ``labels/<name>``): that time point replaced,
the others kept, so a time-lapse segmented one time point per run keeps every run's. No Qt, no napari."""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import tifffile

from .._interrupts import publishing
from ..errors import PromptsegError
from ..models.preprocessing import is_lazy
from ._files import FOLDER_DIGEST, contents_digest, deferred_names, listing_digest
from .images import is_own_output
from .ome_zarr_labels import (
    UPDATE_READY,
    UPDATING_PREFIX,
    check_labels_name,
    chunk_files,
    finish_time_point_update,
    image_fingerprint,
    label_pyramid,
    labels_not_replaceable,
    remove_tree,
    run_records,
    stamp_labels,
    stamp_of,
    write_ome_zarr_labels,
)


def kept_time_points(labels: np.ndarray, time_point: int) -> list[int]:
    """The time points of (T, Z, Y, X) ``labels`` other than ``time_point`` that hold labels."""
    return [t for t in range(np.shape(labels)[0]) if t != time_point and np.any(labels[t])]


def said_kept(time_point: int, kept: Sequence[int]) -> str:
    """What a run says it did to a time-lapse's labels: "time point 1 written; time point 0 kept from an earlier
    run"."""
    said = f"time point {time_point} written"
    if kept:
        said += f"; time point{'s' if len(kept) > 1 else ''} {', '.join(map(str, kept))} kept from an earlier run"
    return said


def earlier_tiff_labels(out: Path, input_path: Path, shape: Sequence[int], *, lazy: bool = False) -> np.ndarray | None:
    """The (T, Z, Y, X) labels of ``shape`` that a run into ``out``'s folder wrote to ``out`` for ``input_path`` (ours
    by its mark, and that run's report, or its resume journal, names the pair), or None: a file of another shape,
    or of another input (a run from another folder's image of the same name), is replaced whole as before, and one
    not ours is refused before any work (cli._outputs._prepare_outputs). ``lazy``: as a dask array read tile by tile
    (a time-lapse of whole-slide volumes' labels are not read whole to keep its other time points)."""
    if not out.is_file() or not is_own_output(out) or not _run_wrote(out.parent, Path(input_path), out):
        return None
    try:
        with tifffile.TiffFile(out) as tif:
            series = tif.series[0]
            if tuple(series.shape) != tuple(shape):
                return None
            if not lazy:
                return series.asarray()
        import dask.array as da
        import zarr

        return da.from_zarr(zarr.open(tifffile.imread(out, aszarr=True), mode="r"))
    except (OSError, ValueError, IndexError):  # unreadable: replaced whole, as any of our outputs
        return None


def _run_wrote(folder: Path, input_path: Path, out: Path) -> bool:
    """Whether the report.json, or the resume journal, of the CLI run into ``folder`` records ``out`` as the output
    of ``input_path``."""
    for record in run_records(folder):
        given = record.get("input"), record.get("output")
        if all(isinstance(p, str) for p in given) and (Path(given[0]).resolve(), Path(given[1]).resolve()) == (
            input_path.resolve(),
            out.resolve(),
        ):
            return True
    return False


def with_time_point(earlier: np.ndarray | None, labels: np.ndarray, time_point: int, n_times: int) -> np.ndarray:
    """(T, Z, Y, X) labels: ``earlier`` (or nothing) with ``time_point``'s volume replaced by ``labels``. Lazy
    ``labels`` (found on a pyramid level, back at full resolution) or ``earlier`` give lazy labels: nothing is made
    whole (a time point of 5 planes of 16k x 16k is 2.5 GB)."""
    if is_lazy(labels) or is_lazy(earlier):
        return _lazy_with_time_point(earlier, labels, time_point, n_times)
    labels = np.asarray(labels)
    dtype = labels.dtype if earlier is None else np.result_type(earlier.dtype, labels.dtype)
    merged = np.zeros((n_times, *labels.shape), dtype) if earlier is None else earlier.astype(dtype, copy=False)
    merged[time_point] = labels
    return merged


def _lazy_with_time_point(earlier: object, labels: object, time_point: int, n_times: int) -> object:
    """:func:`with_time_point` as a dask array: each time point's volume ``earlier``'s (or empty), ``labels`` at
    ``time_point``, in the chunks of ``labels``."""
    import dask.array as da

    from ..tiling import SAMPLING, sampled_labels  # lazy: tiling imports torch, the CLI's start must not

    sampling = getattr(labels, SAMPLING, None)
    if earlier is None and sampling is not None:
        # sampled from the level's labels as they are (the other time points background): a labels pyramid's levels
        # and a TIFF's tiles are sampled from them again, not from the large array
        source, index = sampling
        times = np.where(np.arange(n_times) == time_point, 0, -1)
        return sampled_labels(np.asarray(source)[None], [times, *index])
    volume = labels if is_lazy(labels) else da.from_array(np.asarray(labels), chunks=(1, *np.shape(labels)[1:]))
    dtype = volume.dtype if earlier is None else np.result_type(earlier.dtype, volume.dtype)
    volumes = []
    for t in range(n_times):
        if t == time_point:
            volumes.append(volume.astype(dtype))
        elif earlier is None:
            volumes.append(da.zeros(volume.shape, dtype, chunks=volume.chunks))
        else:
            volumes.append(da.asarray(earlier[t]).astype(dtype).rechunk(volume.chunks))
    return da.stack(volumes)


def write_input_time_point(
    path: str | Path,
    labels: np.ndarray,
    time_point: int,
    n_times: int,
    output: str | Path,
    *,
    output_format: str = "auto",
    labels_name: str = "promptseg",
    output_stems: Mapping[str, str] | None = None,
) -> tuple[str, list[int]]:
    """A batch run's (Z, Y, X) ``labels`` of ``time_point`` of the time-lapse of volumes ``path`` (``n_times`` time
    points), written over its (T, Z, Y, X) labels where ``output_format`` says (:func:`.input_labels.
    write_input_labels`): into the labels an earlier run of ours wrote for this input (its TIFF in ``output``, its
    OME-Zarr labels/ image), the others' labels kept, so a time-lapse segmented time point by time point keeps them
    all (each run replaced the whole file, the others empty). The CLI's --time and the batch engine's empty labels
    of a time point that failed write through here. Returns where, and the time points kept that hold labels."""
    from .images import output_stem
    from .input_labels import write_input_labels, writes_into_zarr
    from .multiscale import is_ome_zarr

    path = Path(path)
    written_as = {"output_format": output_format, "labels_name": labels_name, "output_stems": output_stems}
    if writes_into_zarr(path, output_format):
        if not is_ome_zarr(path):
            return write_input_labels(path, labels, output, **written_as), []  # refused there, naming the option
        # lazy labels stay lazy: written block by block
        target, kept = write_time_point(
            path, labels if is_lazy(labels) else np.asarray(labels), time_point, labels_name, output
        )
        return str(target), kept
    out = Path(output) / f"{output_stem(path, output_stems)}.tif"
    shape = (n_times, *np.shape(labels))
    earlier = earlier_tiff_labels(out, path, shape, lazy=is_lazy(labels))
    written = with_time_point(earlier, labels, time_point, n_times)
    kept = kept_time_points(written, time_point)  # read before the file they may come from is replaced
    return write_input_labels(path, written, output, axes="TZYX", **written_as), kept


def write_time_point(
    image_path: str | Path,
    labels: np.ndarray,
    time_point: int,
    name: str = "promptseg",
    output: str | Path | None = None,
) -> tuple[Path, list[int]]:
    """Write the (Z, Y, X) ``labels`` of ``time_point`` into the OME-Zarr time-lapse ``image_path``'s
    ``labels/<name>``. When promptseg wrote those labels, unchanged since (:func:`.ome_zarr_labels.
    labels_not_replaceable`), with the levels this image's labels have, only that time point's chunks are written,
    at every level, and the others' kept; else the labels image is written whole (the other time points empty), or
    refused as :func:`.ome_zarr_labels.write_ome_zarr_labels` refuses. Returns the labels group's path and the time
    points kept that hold labels.

    The chunks are written beside the labels (``labels/<UPDATING_PREFIX><name>``) and moved in, one rename each, only
    once all are written; the stamp names the labels as they will be first, so a run killed while moving them leaves
    labels that the next write or check completes (:func:`.ome_zarr_labels.finish_time_point_update`) and still
    takes for ours; killed before, they are untouched."""
    import zarr

    check_labels_name(name)
    n_times = _time_points(image_path)
    if not 0 <= time_point < n_times:
        raise PromptsegError(f"{image_path}: time point {time_point} is outside its {n_times} (0-{n_times - 1})")
    whole = with_time_point(None, labels, time_point, n_times)
    image, _, pyramid, _, axes = label_pyramid(image_path, whole)
    labels_dir = image.path / "labels"
    target = labels_dir / name
    deferred = deferred_names()
    if deferred is not None:  # written before in this task (then its empty labels): only this write counts
        deferred.withdraw(target)
    finish_time_point_update(labels_dir, name)
    if not target.exists() or labels_not_replaceable(image.path, name, output) is not None:
        return write_ome_zarr_labels(image.path, whole, name, output), []  # it refuses labels not ours
    levels = _level_paths(target)
    time_axis = axes.index("t")
    try:
        arrays = [zarr.open_array(str(target / level), mode="r") for level in levels]
    except Exception:  # noqa: BLE001 - not arrays zarr reads: ours, so replaced whole
        arrays = []
    if [tuple(a.shape) for a in arrays] != [p.shape for p in pyramid]:  # another shape, or levels: replaced whole
        return write_ome_zarr_labels(image.path, whole, name, output), []
    kept = [t for t in range(n_times) if t != time_point and _any_at(arrays[0], time_axis, t)]
    scratch = labels_dir / f"{UPDATING_PREFIX}{name}"
    remove_tree(scratch)
    try:
        for level, data in zip(levels, pyramid, strict=True):
            # the level's own metadata (codec, chunks, fill value) beside it: its chunks encoded as the labels' are
            (scratch / level).mkdir(parents=True)
            for meta in (".zarray", ".zattrs", "zarr.json"):
                if (target / level / meta).is_file():
                    (scratch / level / meta).write_bytes((target / level / meta).read_bytes())
            # every chunk of the time point written, empty ones too: each replaces the earlier file of its name
            # (the global setting: zarr 3.1 ignores open_array's config for it)
            with warnings.catch_warnings(), zarr.config.set({"array.write_empty_chunks": True}):
                warnings.simplefilter("ignore", RuntimeWarning)
                copy = zarr.open_array(str(scratch / level), mode="r+")
                _write_at(copy, data, time_axis, time_point)
        moves = {f"{relative}": file for relative, file in chunk_files(scratch)}
        before = listing_digest(target)
        after = listing_digest(target, moved_in=moves)
        contents = contents_digest(target, moved_in=moves)
    except BaseException as exc:
        remove_tree(scratch)
        if isinstance(exc, PermissionError):
            raise PromptsegError(f"{image.path}: cannot write its labels/ group ({exc}); write TIFF labels") from exc
        raise

    def move_in() -> None:
        try:
            (scratch / UPDATE_READY).write_text("")
            earlier_output = stamp_of(labels_dir, name).get("output")
            image_print = image_fingerprint(image.path)
            stamp_labels(labels_dir, name, [after, before], earlier_output, contents=contents, image=image_print)
            publishing()  # a batch holds an interrupt from here until the labels' record is in its journal
            for relative, file in moves.items():
                (target / relative).parent.mkdir(parents=True, exist_ok=True)
                os.replace(file, target / relative)
            stamp_labels(labels_dir, name, [after], output, contents=contents, image=image_print)
            remove_tree(scratch)
        except PermissionError as exc:
            raise PromptsegError(f"{image.path}: cannot write its labels/ group ({exc}); write TIFF labels") from exc

    # on a Dask worker the chunks are moved in once the input's result is left (as its files in -o take their
    # names): one killed before leaves the labels as they were (its chunks not marked ready are dropped)
    if deferred is not None:
        deferred.defer(scratch, target, move_in, lambda: remove_tree(scratch), digest=f"{FOLDER_DIGEST}{after}")
    else:
        move_in()
    return target, kept


def _time_points(image_path: str | Path) -> int:
    from .multiscale import open_multiscale

    image = open_multiscale(image_path, keep_time=True)
    if not image.axes.startswith("t"):
        raise PromptsegError(f"{image.path}: not a time-lapse of volumes (its axes: {image.axes})")
    return int(image.shape[0])


def _level_paths(target: Path) -> list[str]:
    """The paths of a labels image's levels, as its multiscales metadata lists them (NGFF 0.4 or 0.5)."""
    for meta in (".zattrs", "zarr.json"):
        with contextlib.suppress(OSError, ValueError):
            attrs = json.loads((target / meta).read_text())
            attrs = attrs.get("attributes", {}).get("ome", attrs) if meta == "zarr.json" else attrs
            return [str(d["path"]) for d in attrs["multiscales"][0]["datasets"]]
    return []


def _any_at(array: object, axis: int, index: int) -> bool:
    """Whether the labels ``array`` (a zarr array) hold an object at ``index`` along ``axis``, read chunk by chunk
    (a time point of a whole-slide time-lapse is not read whole)."""
    import dask.array as da

    at = [slice(None)] * len(array.shape)
    at[axis] = index
    return bool(da.from_zarr(array)[tuple(at)].any().compute(scheduler="synchronous"))


def _write_at(target: object, data: object, axis: int, index: int) -> None:
    """``data``'s (a level of the labels') slab at ``index`` along ``axis`` written into the zarr array ``target``:
    lazy labels block by block in ``target``'s chunks, never the whole time point's volume at once."""
    at = [slice(None)] * len(target.shape)
    at[axis] = slice(index, index + 1)
    slab = data[tuple(at)]
    if not is_lazy(slab):
        target[tuple(at)] = np.asarray(slab).astype(target.dtype, copy=False)
        return
    import dask.array as da

    chunks = tuple(1 if a == axis else c for a, c in enumerate(target.chunks))
    slab = slab.astype(target.dtype).rechunk(chunks)
    da.store(slab, target, regions=tuple(at), lock=False, scheduler="synchronous")
