"""Instance labels written into an OME-Zarr's ``labels/`` group (ome-zarr-py) with the image's levels and pixel sizes,
and which earlier labels a run may replace (those promptseg wrote and nobody changed since). No Qt, no napari."""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

import numpy as np

from .._interrupts import publishing
from ..errors import PromptsegError
from ..models.preprocessing import is_lazy
from ._files import contents_digest, deferred_names, files_under, listing_digest
from .images import file_labels
from .multiscale import open_multiscale

#: chunk side of written labels (pixels)
LABEL_CHUNK = 1024

AXIS_TYPES = {"x": "space", "y": "space", "z": "space", "t": "time", "c": "channel"}


def _axis_metadata(name: str, info: dict) -> str | dict:
    """An axis as ome-zarr writes it: the name alone, or with the image's type and unit."""
    kind = info.get("type") or AXIS_TYPES.get(name)
    return {"name": name, **info, "type": kind} if info and kind else name


def write_ome_zarr_labels(
    image_path: str | Path, labels: np.ndarray, name: str = "promptseg", output: str | Path | None = None
) -> Path:
    """Write full-resolution instance labels ((Y, X), (Z, Y, X), or a time-lapse of volumes' (T, Z, Y, X): as the
    image's level 0 without channels) into ``image_path/labels/<name>``: one level per image level, of that level's
    shape and coordinate transforms (scale and translation), the image's axis units and NGFF version. An earlier
    labels image of the same name is replaced only if promptseg wrote it and nothing changed it since
    (:func:`labels_not_replaceable`): labels a user drew or corrected are refused, not lost; so are the labels of a
    CLI run into another ``output`` folder (its -o) whose report still names them. Returns the labels group's path.

    All or nothing: the labels image is written whole under a name no reader lists, then swapped in
    (:func:`_swap_in`); a run killed before leaves the image as it was (no labels group is made for it before). Within
    :func:`._files.names_deferred` (a Dask worker's task) the swap waits for the caller's ``publish()``, as its files
    in -o do: the input's result is left first, so labels under their name always have their record."""
    import zarr

    with warnings.catch_warnings():  # ome_zarr.writer's own defaults use its deprecated Scaler on import
        warnings.simplefilter("ignore", DeprecationWarning)
        from ome_zarr.format import format_from_version
        from ome_zarr.writer import write_multiscale_labels

    check_labels_name(name)
    image, labels, pyramid, transforms, axes = label_pyramid(image_path, labels)
    chunks = tuple(min(LABEL_CHUNK, n) if a in ("y", "x") else 1 for a, n in zip(axes, pyramid[0].shape, strict=True))
    labels_dir = image.path / "labels"
    scratch, target = labels_dir / f"{SCRATCH_PREFIX}{name}", labels_dir / name
    deferred = deferred_names()
    if deferred is not None:  # written before in this task (then its empty labels): only this write counts
        deferred.withdraw(target)
    try:
        fmt = format_from_version(image.ome_version)
        refused = labels_not_replaceable(image.path, name, output)  # a swap a killed run left is completed first
        if refused:
            raise PromptsegError(refused)
        # a plain folder until labels are swapped in: a zarr reader sees no labels group in it (a run killed while
        # writing left an empty one, which readers listed, in the user's image)
        made_dir = not labels_dir.exists()
        labels_dir.mkdir(exist_ok=True)
        remove_tree(scratch)  # what a killed run left: never listed, so no reader saw it
        # the new labels image is written whole beside the old one, under a name the labels list does not hold (a
        # group of its own, whose labels/<name> is the image under its final name and metadata); the old one stays
        # readable until the new one is complete (an interrupted rewrite deleted it, and left levels missing or
        # zero)
        try:
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
        except BaseException:
            _drop_scratch(scratch, labels_dir if made_dir else None)
            raise
    except PermissionError as exc:
        raise PromptsegError(f"{image.path}: cannot write its labels/ group ({exc}); write TIFF labels") from exc

    def swap_in() -> None:
        try:
            _swap_in(image.path, name, fmt, output)
        except PermissionError as exc:
            raise PromptsegError(f"{image.path}: cannot write its labels/ group ({exc}); write TIFF labels") from exc

    def discard() -> None:
        _drop_scratch(scratch, labels_dir if made_dir else None)

    if deferred is not None:
        deferred.defer(scratch / "labels" / name, target, swap_in, discard)
    else:
        swap_in()
    return target


def _drop_scratch(scratch: Path, made_dir: Path | None) -> None:
    """A labels image written but not swapped in goes, and the labels folder made for it when it is empty."""
    remove_tree(scratch)
    if made_dir is not None:
        with contextlib.suppress(OSError):
            made_dir.rmdir()


def _swap_in(image_path: Path, name: str, fmt: object, output: str | Path | None) -> None:
    """The labels image written whole under ``labels/<SCRATCH_PREFIX><name>`` takes the name ``labels/<name>``:
    two renames (the old one aside, the new one in), the old one removed once the new one is in place; then the
    labels list names it (the labels group itself is made only now). The stamp accepts both while they swap places;
    a run killed between the renames leaves the old one aside, put back by the next look at the labels
    (:func:`_restore_replaced`)."""
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from ome_zarr.writer import add_metadata, get_metadata

    labels_dir = image_path / "labels"
    scratch, replaced = labels_dir / f"{SCRATCH_PREFIX}{name}", labels_dir / f"{REPLACED_PREFIX}{name}"
    target = labels_dir / name
    remove_tree(replaced)
    written = listing_digest(scratch / "labels" / name)  # renaming the folder keeps its files' names and times
    before = [listing_digest(target)] if target.exists() else []
    contents = contents_digest(scratch / "labels" / name)
    image_print = image_fingerprint(image_path)
    earlier = stamp_of(labels_dir, name).get("output")
    stamp_labels(labels_dir, name, [written, *before], earlier, contents=contents, image=image_print)
    publishing()  # a batch holds an interrupt from here until the labels' record is in its journal
    if target.exists():
        target.rename(replaced)
    (scratch / "labels" / name).rename(target)
    stamp_labels(labels_dir, name, [written], output, contents=contents, image=image_print)
    labels_group = zarr.open_group(str(image_path), mode="a").require_group("labels")
    listed = get_metadata(labels_group).get("labels", [])
    if name not in listed:
        add_metadata(labels_group, {"labels": [*listed, name]}, fmt=fmt)
    remove_tree(replaced)
    remove_tree(scratch)


def _restore_replaced(labels_dir: Path, name: str) -> None:
    """A run killed between :func:`_swap_in`'s two renames left the earlier labels image aside and none under its
    name (which the labels list still names): it goes back."""
    replaced = labels_dir / f"{REPLACED_PREFIX}{name}"
    complete = any((replaced / meta).exists() for meta in (".zattrs", "zarr.json"))
    if not (labels_dir / name).exists() and complete:
        replaced.rename(labels_dir / name)


def label_pyramid(
    image_path: str | Path, labels: np.ndarray
) -> tuple[object, np.ndarray, list[np.ndarray], list[list[dict]], list[str]]:
    """Full-resolution ``labels`` as :func:`write_ome_zarr_labels` writes them into the image: the opened image, the
    labels checked, one array per image level (its shape, in the file's axes without channels), each level's
    coordinate transforms, and those axes."""
    # a time-lapse of volumes' labels are (T, Z, Y, X): its levels opened so (one time point segmented, --time)
    image = open_multiscale(image_path, keep_time=np.ndim(labels) == 4)
    if image.ome_version is None:
        raise PromptsegError(f"{image.path}: labels go into an OME-Zarr image; write a TIFF for this input")
    expected = tuple(n for n, a in zip(image.shape, image.axes, strict=True) if a != "c")
    labels = file_labels(labels, f"{image.path}: labels", lazy=True)  # lazy labels written block by block
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
            sizes[image.stack_axis] = shape[-3]
        if image.axes.startswith("t"):  # a time-lapse of volumes: (T, Z, Y, X)
            sizes["t"] = shape[0]
        pyramid.append(_nearest(labels, shape).reshape([sizes.get(a, 1) for a in axes]))
        level_transform = [{"type": "scale", "scale": [transform["scale"][k] for k in keep]}]
        translation = [transform["translation"][k] for k in keep]
        if any(translation):
            level_transform.append({"type": "translation", "translation": translation})
        transforms.append(level_transform)
    return image, labels, pyramid, transforms, axes


#: a labels image being written goes into ``labels/<SCRATCH_PREFIX><name>`` (a zarr group that no labels list names;
#: readers list only the names in ``labels/``' list) and is moved to ``labels/<name>`` when complete; the image it
#: replaces waits as ``labels/<REPLACED_PREFIX><name>`` until then. The next write of that name removes both
SCRATCH_PREFIX = ".promptseg-writing-"
REPLACED_PREFIX = ".promptseg-replaced-"
#: one time point's chunks of every level of ``labels/<name>`` (:func:`.time_point_labels.write_time_point`) are
#: written under ``labels/<UPDATING_PREFIX><name>/<level>/`` and, once all are (:data:`UPDATE_READY` there), moved in
UPDATING_PREFIX = ".promptseg-updating-"
UPDATE_READY = ".promptseg-ready"
#: ``labels/<WRITTEN_PREFIX><name>.json`` beside each labels image promptseg wrote: the listing (names, sizes and
#: modification times of its files) it had when written, to tell our own unchanged output, which a rerun replaces,
#: from labels someone else wrote or edited and saved since, which it must not; the hash of its contents (a copy of
#: the image, ``cp -r``, gives its files new times) and the fingerprint of the image it was written into
#: (:func:`image_fingerprint`: labels copied into another image are not ours to replace there)
WRITTEN_PREFIX = ".promptseg-written-"

#: an OME-Zarr's top-level files that viewers and tools rewrite without changing its pixels (its attributes, and
#: consolidated metadata that lists the labels too): left out of :func:`image_fingerprint`
_REWRITTEN_METADATA = (".zattrs", ".zgroup", ".zmetadata", "zarr.json")


def image_fingerprint(image_path: str | Path) -> str:
    """Hash of the names and sizes of an OME-Zarr image's level files (chunks of compressed pixels, so two images of
    one shape differ), its ``labels/`` and top-level metadata aside: the same for a copy of it, whatever its files'
    times, and for the image after labels are written into it."""
    import hashlib

    digest = hashlib.blake2b(digest_size=12)
    for name, file in files_under(Path(image_path), skip=("labels",)):
        if name not in _REWRITTEN_METADATA:
            digest.update(f"{name}\0{file.stat().st_size}\0".encode())
    return digest.hexdigest()


def labels_not_replaceable(image_path: str | Path, name: str, output: str | Path | None = None) -> str | None:
    """Why ``image_path/labels/<name>`` must not be replaced (an existing labels image that promptseg did not write,
    or that changed since it wrote it: a user's annotations, labels corrected in napari and saved back; or, for a
    CLI run into the folder ``output``, the labels a run into another -o wrote, while that folder's report names
    them), or None (absent, or promptseg's own as it wrote it)."""
    target = Path(image_path) / "labels" / name
    _restore_replaced(target.parent, name)  # a run killed while swapping labels in: the earlier ones back first
    finish_time_point_update(target.parent, name)  # a run killed while moving a time point's chunks in: done first
    if not target.exists():
        return None
    stamp = stamp_of(target.parent, name)
    accepted, contents = stamp.get("listings"), stamp.get("contents")
    image = stamp.get("image")  # stamps of earlier versions have neither
    if isinstance(image, str) and image != image_fingerprint(image_path):
        return (
            f"{target} holds labels that promptseg wrote for another image (copied here with them?), or for this "
            "image before its pixels were rewritten, and would be replaced; write under another labels name "
            "(--labels-name), or move them"
        )
    ours = isinstance(accepted, list) and listing_digest(target) in accepted
    # by contents when the files' times changed (a copy): hashed only then, as labels can be a slide's
    if not ours and not (isinstance(contents, str) and contents_digest(target) == contents):
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
    owner = stamp_of(labels_dir, name).get("output")
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
    remove_tree(labels_dir / name)
    (labels_dir / f"{WRITTEN_PREFIX}{name}.json").unlink(missing_ok=True)
    return True


def finish_time_point_update(labels_dir: Path, name: str) -> None:
    """Complete the update of one time point of ``labels_dir/<name>`` that a killed run left: its chunks, all written
    (:data:`UPDATE_READY`), are moved in (the stamp already names the labels as they are then); chunks not all
    written are dropped, the labels untouched. Each chunk is moved by one rename: a reader sees its old or new file."""
    import os

    scratch = labels_dir / f"{UPDATING_PREFIX}{name}"
    if not scratch.is_dir():
        return
    if (scratch / UPDATE_READY).is_file():
        for relative, file in chunk_files(scratch):
            (labels_dir / name / relative).parent.mkdir(parents=True, exist_ok=True)
            os.replace(file, labels_dir / name / relative)
    remove_tree(scratch)


#: a zarr array's own metadata files: not chunks
_ARRAY_METADATA = (".zarray", ".zattrs", "zarr.json")


def chunk_files(scratch: Path) -> list[tuple[str, Path]]:
    """The chunk files of the levels under ``scratch`` (``<level>/<chunk key>``), their metadata aside."""
    return [(n, f) for n, f in files_under(scratch) if f.name not in (*_ARRAY_METADATA, UPDATE_READY)]


def _run_names(folder: Path, target: Path) -> bool:
    """Whether the report.json, or the resume journal, of a CLI run into ``folder`` names ``target`` as an output."""
    named = {r.get("output") for r in run_records(folder)}
    return any(isinstance(n, str) and Path(n).resolve() == target.resolve() for n in named)


def run_records(folder: Path) -> list[dict]:
    """The input records of the report.json, and of the resume journal, of a CLI run into ``folder``."""
    from ..batch.journal import JOURNAL_NAME  # lazy: batch imports io

    records: list = []
    with contextlib.suppress(OSError, ValueError, AttributeError):
        records += json.loads((folder / "report.json").read_text()).get("images") or []
    with contextlib.suppress(OSError):
        for line in (folder / JOURNAL_NAME).read_text().splitlines():
            with contextlib.suppress(ValueError, AttributeError):  # the last line of a killed run, cut
                records.append(json.loads(line).get("record"))
    return [r for r in records if isinstance(r, dict)]


def stamp_of(labels_dir: Path, name: str) -> dict:
    """The stamp promptseg left beside the labels image ``name`` (:data:`WRITTEN_PREFIX`), or {}."""
    try:
        stamp = json.loads((labels_dir / f"{WRITTEN_PREFIX}{name}.json").read_text())
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def stamp_labels(
    labels_dir: Path,
    name: str,
    listings: list[str],
    output: str | Path | None = None,
    *,
    contents: str,
    image: str,
) -> None:
    """The stamp of labels promptseg wrote: their listings and contents, the image's fingerprint, and the -o of the
    CLI run that wrote them."""
    stamp = {"listings": listings, "contents": contents, "image": image}
    stamp.update({"output": str(output)} if output is not None else {})
    (labels_dir / f"{WRITTEN_PREFIX}{name}.json").write_text(json.dumps(stamp))


def remove_tree(path: Path) -> None:
    """Remove ``path`` and all under it. zarr's writer threads may still be finishing chunks of an update that
    failed (their temporaries renamed or added while the tree is walked): a file gone meanwhile is fine, and a
    folder that filled again is walked again."""
    import shutil
    import time

    def gone_already(function, name, exc_info) -> None:
        if not isinstance(exc_info[1], FileNotFoundError):
            raise exc_info[1]

    for attempt in range(20):
        if not path.is_dir():
            return
        try:
            shutil.rmtree(path, onerror=gone_already)
        except OSError:
            if attempt == 19:
                raise
            time.sleep(0.05)


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
    if is_lazy(labels):  # lazy labels stay lazy: sampled from their source, else one index array at a time
        from ..tiling import sampled_again  # lazy: tiling imports torch, the CLI's start must not

        again = sampled_again(labels, index)
        if again is not None:
            return again
        for axis, taken in enumerate(index):
            if len(taken) != labels.shape[axis]:
                labels = labels[(slice(None),) * axis + (taken,)]
        return labels
    return labels[np.ix_(*index)]
