"""The inputs a batch subcommand was given: files, folders of them, and patterns, as the list of images to run."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import PromptsegError

__all__ = ["_expand_images", "_say_images_left_out", "_say_renamed"]


def _expand_images(paths: list[Path]) -> list[Path]:
    """The images ``paths`` name: files, the images in folders, pattern matches. A path the system refuses to look
    at (a folder whose listing is denied, a name too long) is an error naming it."""
    try:
        return _expanded(paths)
    except OSError as exc:
        where = exc.filename if exc.filename is not None else ", ".join(map(str, paths))
        folder = Path(exc.filename).parent if exc.filename is not None else None
        if isinstance(exc, PermissionError) and any(Path(p) == folder for p in paths):
            # a look inside a folder given (its OME-Zarr metadata) refused: the folder may not be searched; the
            # file looked for is not the user's
            raise PromptsegError(
                f"{folder}: its contents may not be read ({exc.strerror or exc}); ask for read access to the folder, "
                "or copy its images into one you can read"
            ) from exc
        raise PromptsegError(f"{where}: cannot be read as an input ({exc.strerror or exc})") from exc


def _expanded(paths: list[Path]) -> list[Path]:
    from ..io.images import IMAGE_SUFFIXES, is_own_output
    from ..io.listing import folder_images, store_images

    out = []
    ours = []  # files named one by one (a shell pattern's list) that an earlier run wrote: outputs, not inputs
    left_ours: list[str] = []  # those a folder given holds (left out silently, unless the folder has nothing else)
    for path in _matched(paths):
        if stores := store_images(path):  # an OME-Zarr image, a bioformats2raw container's series 0, 1, ...
            out.extend(stores)
        elif path.is_dir():
            # the folder's images as the napari reader and the widgets take them (io.listing: one rule)
            listing = folder_images(path)
            out.extend(listing.images)
            left_ours.extend(str(path / name) for name in listing.own_outputs)
            if listing.other_files:  # a .webp or .gif the user counted on is not silently missing from the batch
                print(
                    f"{path}: skipped {len(listing.other_files)} file(s) that are not images read here "
                    f"({', '.join(IMAGE_SUFFIXES)}, OME-Zarr): {_some_names(listing.other_files)}",
                    file=sys.stderr,
                )
            if listing.subfolders:  # nor a folder of images one level down (slides/patient1/)
                print(
                    f"{path}: skipped {len(listing.subfolders)} subfolder(s), not searched (name them too, e.g. "
                    f"{path}/*/): {_some_names(listing.subfolders)}",
                    file=sys.stderr,
                )
        elif path.is_file():
            (ours if path.suffix.lower() in IMAGE_SUFFIXES and is_own_output(path) else out).append(path)
        elif path.is_symlink():  # listed by `ls`: 'not found' read as wrong
            from ..io.images import missing_file_why

            raise PromptsegError(f"input image {path}: {missing_file_why(path)}")
        else:
            raise PromptsegError(f"input image not found: {path}")
    if ours:  # as a folder given whole leaves them out, said since they were named
        print(
            f"skipped {len(ours)} file(s) promptseg wrote (labels and overlays of an earlier run, not images to "
            f"segment): {_some_names([str(p) for p in ours])}",
            file=sys.stderr,
        )
    if not out:
        ours_only = (
            f": it holds only files promptseg wrote (labels and overlays of an earlier run, not images to segment): "
            f"{_some_names(left_ours)}; give the images they came from"
            if left_ours
            else ""
        )
        raise PromptsegError(f"no image files in {', '.join(map(str, paths))}{ours_only}")
    # a file named again, or inside a folder given too, is one input (its first mention keeps its place); two
    # links to one file are two names, each with its output
    unique: dict[Path, Path] = {}
    for path in out:
        unique.setdefault(Path(os.path.normpath(path.absolute())), path)
    return list(unique.values())


def _matched(paths: list[Path]) -> list[Path]:
    """``paths`` with each pattern (``*``, ``?``, ``[...]``, ``**`` for any subfolders) that names no file itself
    replaced by the files and folders it matches, in natural order (``img2`` before ``img10``, as a folder given
    whole lists them): a shell that does not expand them (Windows' cmd and PowerShell, or a quoted one) passes them
    on as they were typed. A part of the pattern that names an existing file or folder as typed is that name (a
    folder ``run[1]`` is not the class ``[1]``, which matched only ``run1``)."""
    import glob

    from ..io.listing import natural_key

    out = []
    for path in paths:
        if path.exists() or not any(c in str(path) for c in "*?["):
            out.append(path)
            continue
        matches = sorted(glob.glob(_literal_where_it_exists(path), recursive=True), key=natural_key)
        if not matches:
            raise PromptsegError(f"no file matches {path}")
        out.extend(Path(m) for m in matches)
    return out


def _literal_where_it_exists(pattern: Path) -> str:
    """``pattern`` with its leading parts that name an existing file or folder as typed escaped (taken literally),
    up to its first part that does not: what follows that one may be under any of its matches."""
    import glob

    parts = pattern.parts
    prefix = Path(parts[0]) if pattern.is_absolute() else Path()
    escaped = [glob.escape(str(prefix))] if pattern.is_absolute() else []
    for i, part in enumerate(parts[1:] if pattern.is_absolute() else parts):
        if any(c in part for c in "*?[") and not (prefix / part).exists():
            rest = (parts[1:] if pattern.is_absolute() else parts)[i:]
            return str(Path(*escaped, *rest)) if escaped else str(Path(*rest))
        prefix = prefix / part
        escaped.append(glob.escape(part))
    return str(Path(*escaped))


def _say_renamed(inputs: Sequence[Path], renamed: dict[str, str], shown: int = 5) -> None:
    """One line per set of inputs that share a stem, naming the outputs each gets instead (the user looks for
    OUT/<stem>.tif)."""
    from ..io import output_stem

    sets: dict[str, list[Path]] = {}
    for path in inputs:
        if str(Path(path).absolute()) in renamed:
            sets.setdefault(output_stem(path), []).append(Path(path))
    for i, (stem, paths) in enumerate(sets.items()):
        if i == shown:
            print(f"... and {len(sets) - shown} more such set(s)", file=sys.stderr)
            break
        names = ", ".join(f"{p.name} -> {output_stem(p, renamed)}.tif" for p in paths)
        print(
            f"inputs share the output name {stem}.tif: each is named after its whole file name ({names})",
            file=sys.stderr,
        )


def _some_names(names: Sequence[str], shown: int = 10) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _say_images_left_out(files: Sequence[tuple[str, Path | None]]) -> list[str]:
    """What each given file, a TIFF of several images, leaves out (only its first is read:
    :func:`~..io.multiscale.other_images_left_out`), as ``(option, path)`` pairs (option "" for a positional
    argument; path None: not given): said on stderr as warnings now, returned for the report."""
    from ..io.multiscale import other_images_left_out

    warnings = []
    for option, path in files:
        left_out = None if path is None else other_images_left_out(path)
        if left_out:
            warnings.append(f"{option} {left_out}".strip())
            print(f"warning: {warnings[-1]}", file=sys.stderr)
    return warnings
