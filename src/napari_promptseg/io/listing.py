"""Which entries of a folder are its images, and in what order: one rule for the CLI's batch inputs, the napari
reader's folder stack and the one-shot widget's target folder, so a folder gives the same images in the same order
wherever it is opened. No Qt, no napari."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .images import IMAGE_SUFFIXES, is_own_output
from .multiscale import bioformats2raw_series, is_ome_zarr, is_zarr_named

__all__ = [
    "FolderImages",
    "folder_images",
    "image_files",
    "is_image_name",
    "list_images",
    "natural_key",
    "ome_zarr_left_out",
    "store_images",
]


#: files that make a folder a promptseg run's output folder, not a subfolder of images left out: a finished run's
#: report, a killed run's journal (batch.journal.JOURNAL_NAME), the lock of a run writing there (cli._outputs's
#: OUTPUT_LOCK: an -o inside the input folder, made by this very run)
RUN_FILES = ("report.json", "report.partial.jsonl", ".promptseg.lock")


def natural_key(name: str) -> tuple[list[int | str], str]:
    """Sort key of a name in natural order: runs of digits compared as numbers (``z2`` before ``z10``), the rest
    regardless of case (``Img3.PNG`` between ``img2.png`` and ``img10.png``). Names that tie so (``z02``/``z2``,
    ``A``/``a``) are ordered by the name itself: the order never depends on how the filesystem lists them."""
    parts = re.split(r"(\d+)", name)
    # odd places hold the digit runs: each place holds one type in every name, so any two keys compare
    return [int(part) if i % 2 else part.casefold() for i, part in enumerate(parts)], name


def is_image_name(path: str | Path) -> bool:
    """Whether ``path`` is named as an image a folder's listing takes: an image suffix (any case), not hidden (macOS
    ``._x.tif`` resource forks and editors' temporaries are not the user's images). Only the name is looked at."""
    path = Path(path)
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


@dataclass
class FolderImages:
    """A folder's entries, sorted into its images and what was left out (see :func:`folder_images`)."""

    #: image files (a broken link named as one too: not silently missing) and OME-Zarr images in natural name order;
    #: a bioformats2raw container's series in its place
    images: list[Path] = field(default_factory=list)
    #: names of files that are not images read here (a .txt, a .webp)
    other_files: list[str] = field(default_factory=list)
    #: names of subfolders that are not images, nor a run's output folder (:data:`RUN_FILES`): not searched
    subfolders: list[str] = field(default_factory=list)
    #: names of the label TIFFs and overlays promptseg wrote (outputs of an earlier run, not inputs)
    own_outputs: list[str] = field(default_factory=list)


def folder_images(folder: str | Path) -> FolderImages:
    """The images of ``folder`` (:func:`list_images`) and the entries left out that a user may have counted on, for a
    caller that says which (the CLI does). Hidden entries and the label TIFFs and overlays promptseg wrote are left out
    silently."""
    found = sorted((p for p in Path(folder).iterdir() if not p.name.startswith(".")), key=lambda p: natural_key(p.name))
    out = FolderImages()
    for path in found:
        try:
            _sort_entry(path, out)
        except OSError:  # a subfolder that may not be looked into (another user's): said, not the run's end
            if is_zarr_named(path):  # a store: its reading says why
                out.images.append(path)
            else:
                out.subfolders.append(path.name)
    return out


def store_images(path: Path) -> list[Path]:
    """The images a zarr store at ``path`` is as an input, whether named or found in a folder: an OME-Zarr image
    itself, a bioformats2raw container's series, a store named .zarr whose metadata cannot be read (an input whose
    reading says why); [] for anything else."""
    if is_ome_zarr(path):
        return [path]
    if series := bioformats2raw_series(path):
        return series
    return [path] if is_zarr_named(path) else []


def _sort_entry(path: Path, out: FolderImages) -> None:
    """Put one entry of a folder where it belongs in ``out``; OSError when a subfolder cannot be looked into."""
    if stores := store_images(path):
        out.images.extend(stores)
    elif is_image_name(path) and not path.is_dir():  # a link to a file moved away too: its reading says why
        if is_own_output(path):
            out.own_outputs.append(path.name)
        else:
            out.images.append(path)
    elif path.is_file():
        out.other_files.append(path.name)
    elif path.is_dir() and not any((path / name).is_file() for name in RUN_FILES):
        out.subfolders.append(path.name)


def list_images(folder: str | Path) -> list[Path]:
    """The images of ``folder``, as every part of promptseg takes them: files with an image suffix (any case; TIFF,
    PNG, JPEG, BMP, whole slides) and OME-Zarr images, in natural name order (:func:`natural_key`); hidden files,
    other files, subfolders and promptseg's own outputs left out. A caller that reads files whole or stacks them
    takes their :func:`image_files` and says which OME-Zarr images it leaves out (:func:`ome_zarr_left_out`), as the
    napari reader's folder stack and the One-shot widget's target folder do."""
    return folder_images(folder).images


def image_files(images: list[Path]) -> list[Path]:
    """The files of a folder's listing (:func:`list_images`), in its order: its OME-Zarr images (folders) left out, a
    broken link named as an image kept (its reading says why it fails, not a silent gap)."""
    return [p for p in images if not p.is_dir()]


def ome_zarr_left_out(
    folder: str | Path, images: list[Path], what: str, instead: str, command: str | None = None
) -> str | None:
    """What a caller that reads a folder's image files only (``what``: the napari reader's stack, a One-shot widget
    run) says of the OME-Zarr images among ``images`` (:func:`list_images`) it leaves out, which the CLI runs on: how
    many, which, and what to do instead (``instead``, its ``{it}`` the image or images; or ``command``, by default
    the batch commands on the folder); None when there are none."""
    stores = [p for p in images if p.is_dir()]
    if not stores:
        return None
    names = ", ".join(p.name for p in stores[:3]) + (", ..." if len(stores) > 3 else "")
    many = len(stores) > 1
    return (
        f"{folder}: {len(stores)} OME-Zarr image{'s' if many else ''} ({names}) left out of {what}, which takes a "
        f"folder's image files only: {instead.format(it='each' if many else 'it')}, or run "
        f"{command or f'promptseg segment, oneshot or text on {folder}'}, which takes them all"
    )
