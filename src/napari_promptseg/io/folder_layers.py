"""A folder opened in napari whole, as napari layer data built without napari (:mod:`.layer_data`'s tuples): its
same-size images as one stack layer, read plane by plane, their headers checked up front."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PromptsegError
from .calibration import pixel_size
from .images import (
    IMAGE_SUFFIXES,
    LABELS_MARKERS,
    PLUGIN_READ_WHOLE_ADVICE,
    REGISTER_MARKERS,
    TIFF_SUFFIXES,
    _format_of_misnamed_tiff,
    _grey_and_alpha,
    _is_cmyk,
    _refuse_more_than_memory,
    _unreadable_why,
    cmyk_sample_axis,
    output_marker,
)
from .layer_data import _NAPARI_UNITS, LayerData, _ome_tiff_details, _refuse_complex, tiff_layer_data
from .listing import image_files, is_image_name, list_images, natural_key, ome_zarr_left_out, store_images
from .multiscale import named_channel_position, open_multiscale, read_image_named, tiff_axis_names
from .tiff_colours import shown_shape


def is_image_folder(path: str | Path) -> bool:
    """A plain folder (no OME-Zarr image, zarr store or bioformats2raw container) with files named as images in it.
    Only names are looked at: napari asks every reader about every folder dropped, one of thousands of tiles too."""
    path = Path(path)
    try:  # napari's probe of every reader must get an answer: a folder that cannot be looked into is not ours
        if not path.is_dir() or store_images(path):
            return False
        return any(is_image_name(p) for p in path.iterdir())
    except OSError:  # permission denied, a name too long, a folder gone meanwhile
        return False


def folder_stack_layer_data(path: str | Path) -> list[LayerData]:
    """A folder of same-size images as one image layer: a stack along a new first axis, in natural name order
    (``z2`` before ``z10``), each image read only when napari shows its plane. Hidden files, files of other kinds,
    subfolders and the label TIFFs and overlays promptseg wrote are left out; OME-Zarr images too, which the CLI runs
    on: the layer's metadata ``left_out`` then says which, and what to do (the napari reader shows it). Images of
    different sizes or types, or a pyramid among them, are refused up front with the file that differs (only their
    headers are read). A folder of no images but promptseg's outputs (a CLI run's -o) is their layers, each as it
    opens alone (:func:`.layer_data.tiff_layer_data`: labels as Labels layers)."""

    folder = Path(path)
    if not folder.is_dir():
        raise PromptsegError(f"{folder}: not a folder")
    images = list_images(folder)  # as the CLI and the one-shot widget list the folder
    files = image_files(images)  # an OME-Zarr image is no plane of a stack: said, see below
    # a CLI run's -o folder (segment's labels, which the listing leaves out; register's images of their own shapes):
    # each output as it opens alone, its labels over their image (a folder of images: asked of its first file only)
    outputs = own_output_files(folder) if all(output_marker(f) in REGISTER_MARKERS for f in files) else []
    if outputs:
        return [layer for file in outputs for layer in tiff_layer_data(file)]
    if not files:
        raise PromptsegError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in it")
    [(stack, kwargs, kind)] = files_stack_layer_data(files, folder.name, f"{folder}: a folder opens", "move")
    kwargs["metadata"]["path"] = str(folder)
    left_out = ome_zarr_left_out(
        folder, images, "the stack", "open {it} alone (napari --plugin napari-ome-zarr PATH, or drag it in)"
    )
    if left_out:  # the CLI runs on them: the reader says so (napari shows it), not only the listing's caller
        kwargs["metadata"]["left_out"] = left_out
    return [(stack, kwargs, kind)]


def files_stack_layer_data(
    files: list[Path], name: str, opened: str = "files opened together open", leave: str = "leave"
) -> list[LayerData]:
    """``files`` (same-size images) as one stack layer named ``name``, in the order given, each read when napari
    shows its plane: a folder's images, or the files napari's Open Files as Stack gives. ``opened`` and ``leave``
    word the refusal of a file of another size (what was opened, what to do with the odd ones)."""
    import dask
    import dask.array as da

    first_shape, first_dtype = _file_shape(files[0])
    for file in files[1:]:
        shape, dtype = _file_shape(file)
        if (shape, dtype) != (first_shape, first_dtype):
            raise PromptsegError(
                f"{opened} as one stack of same-size images, but {file.name} is {shape} {dtype} "
                f"and {files[0].name} {first_shape} {first_dtype}; open the images one by one, or {leave} the odd "
                "ones out"
            )
    _refuse_complex(files[0], first_dtype)
    # a plane napari would read whole, refused from its header now rather than in napari's slicing thread (all the
    # planes are of one size)
    _refuse_more_than_memory(files[0], PLUGIN_READ_WHOLE_ADVICE)
    planes = [da.from_delayed(dask.delayed(_read_plane)(file, first_shape), first_shape, first_dtype) for file in files]
    kwargs: dict[str, Any] = {"name": name, "metadata": {"files": [f.name for f in files]}}
    channels = len(first_shape) == 3 and not _is_colour(first_shape) and _channels_last(files[0])
    if channels:  # one stack per channel, as each file's channels open: napari showed (X, C) as the plane
        names, _ = _ome_tiff_details(files[0])
        if len(names) != first_shape[-1] or len(set(names)) != len(names):
            names = [f"channel {k}" for k in range(first_shape[-1])]
        kwargs.update(channel_axis=3, name=[f"{name} {channel}" for channel in names])
    size = pixel_size(files[0])
    # a plane of (Y, X), colour (Y, X, RGB(A)) or channels; other shapes' axes are napari's guess, so no scale is put
    # on them
    if size is not None and (len(first_shape) == 2 or _is_colour(first_shape) or channels):
        kwargs["scale"] = [1.0, size.y, size.x]
        # in its unit, as one of its files opens (a folder's µm scale in pixels: napari warned of inconsistent units
        # beside the file's layer, and dropped them); the planes' spacing is unknown: pixels
        unit = _NAPARI_UNITS.get(str(size.unit))
        if unit is not None:
            kwargs["units"] = ["pixel", unit, unit]
    return [(da.stack(planes), kwargs, "image")]


def own_output_files(folder: Path) -> list[Path]:
    """The TIFFs promptseg wrote into ``folder`` (the labels of segment, oneshot and text; register's images and
    warped labels), in natural name order; only their headers are read."""
    found = [
        p
        for p in folder.iterdir()
        if is_image_name(p)
        and p.suffix.lower() in TIFF_SUFFIXES
        and output_marker(p) in (*LABELS_MARKERS, *REGISTER_MARKERS)
    ]
    return sorted(found, key=lambda p: natural_key(p.name))


def _file_shape(file: Path) -> tuple[tuple[int, ...], str]:
    """The shape and dtype ``file`` is read with (:func:`.multiscale.read_image_named`), from its header only."""
    import tifffile

    misnamed = _format_of_misnamed_tiff(file)  # a PNG named .tif: its header is a PNG's
    try:
        if file.suffix.lower() in TIFF_SUFFIXES and misnamed is None:
            with tifffile.TiffFile(file) as tif:
                if len(tif.series[0].levels) > 1:
                    raise PromptsegError(f"{file}: a pyramid (a whole slide), not one image of a stack; open it alone")
                shape, dtype = shown_shape(tuple(tif.series[0].shape), tif.series[0].dtype, tif)  # a palette's RGB
                cmyk = cmyk_sample_axis(tif, len(shape))
                if _grey_and_alpha(tif, shape):  # read grey, its alpha dropped
                    shape = shape[:-1]
                elif cmyk is not None:  # read in RGB, its colours last
                    shape = (*shape[:cmyk], *shape[cmyk + 1 :], 3)
            names = tiff_axis_names(file)
            position = named_channel_position(names)
            if position is not None and len(names) == len(shape):  # a Fiji composite: its channels are read last
                shape = (*shape[:position], *shape[position + 1 :], shape[position])
        else:
            import imageio.v3 as iio

            props = iio.improps(file, extension=misnamed)
            shape, dtype = tuple(props.shape), props.dtype
            if len(shape) == 3 and shape[-1] == 2:  # a PNG's grey + alpha, read grey
                shape = shape[:-1]
            elif _is_cmyk(file):  # read in RGB
                shape = (*shape[:-1], 3)
    except PromptsegError:
        raise
    except Exception as exc:  # every reader has its own exception types; the user needs the file name
        # in the CLI's words: imageio quotes the last of its plugins that failed (SimpleITK's internals)
        raise PromptsegError(f"{file}: cannot be read as an image ({_unreadable_why(file, exc)})") from exc
    return tuple(int(s) for s in shape), str(np.dtype(dtype))


def _read_plane(file: Path, shape: tuple[int, ...]) -> np.ndarray:
    image = np.asarray(read_image_named(file))
    if image.shape != shape:  # its header said otherwise: a file changed since the folder was opened
        raise PromptsegError(f"{file}: read as {image.shape}, not the {shape} of the stack it was opened in")
    return image


def _channels_last(file: Path) -> bool:
    """Whether the last axis of ``file`` as it is read is its channels (a Fiji composite's, an OME-TIFF's named
    ones, a TIFF's samples), not a stack's columns; only its header is read."""
    if file.suffix.lower() not in TIFF_SUFFIXES or _format_of_misnamed_tiff(file) is not None:
        return False
    try:
        return open_multiscale(file).axes.endswith("c")
    except PromptsegError:
        return False


def _is_colour(shape: tuple[int, ...]) -> bool:
    """Whether an image of ``shape`` is a 2D image of RGB(A) pixels, as napari guesses it."""
    return len(shape) == 3 and shape[-1] in (3, 4)
