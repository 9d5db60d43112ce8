"""Layer helpers of the widgets: a layer's pyramid levels and planes, the pixels a method reads from it, and where a
result layer goes so that it lies over it (the layer's whole data-to-world map)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import napari
import napari.layers
import numpy as np

from ...errors import CancelledError, PromptsegError
from ...io.layer_objects import data_to_world_matrix, level_to_layer_matrix
from ...io.multiscale import WHOLE_IMAGE_SIDE, PyramidLevel, level_for_side
from .save_undo import UNDO_TEXT

if TYPE_CHECKING:
    from ...io.library import LibraryEntry, ReferenceLibrary
    from .save_undo import SaveUndo
    from .tasks import TaskRunner


def unproxied(viewer: napari.viewer.Viewer) -> napari.viewer.Viewer:
    """The viewer itself. napari gives a plugin's widget a proxy whose every call returns a new proxy object, so
    a layer the widget added was never ``is`` the one in ``viewer.layers`` (a rerun of the Registration widget
    opened from the Plugins menu left its previous results in place)."""
    return getattr(viewer, "__wrapped__", viewer)


@dataclass(frozen=True)
class LayerPixels:
    """What a worker reads a layer's pixels from, gathered on napari's main thread without reading one: the
    layer's arrays as napari holds them (a pyramid's levels, largest first; numpy, dask or zarr), its name, whether
    it is RGB, and its number of axes. It stands for the layer in the helpers here (:func:`image_and_labels`,
    :func:`layer_level`, :func:`level_factors`): reading a stack or a slide on the main thread froze napari."""

    name: str
    data: Any
    multiscale: bool
    rgb: bool
    ndim: int


def layer_pixels(layer: napari.layers.Layer) -> LayerPixels:
    """The references to a layer's arrays (no pixel is read), for a worker to read them."""
    multiscale = bool(getattr(layer, "multiscale", False))
    data = list(layer.data) if multiscale else layer.data
    return LayerPixels(layer.name, data, multiscale, bool(getattr(layer, "rgb", False)), int(layer.ndim))


def _levels(layer: napari.layers.Layer | LayerPixels) -> list:
    """A layer's arrays, largest first: a multiscale (pyramid) layer's levels, else its one array. (A pyramid's
    ``data`` taken as one array is its coarsest level, which does not match what the user sees.)"""
    return list(layer.data) if getattr(layer, "multiscale", False) else [layer.data]


def plane_shape(array: Any, rgb: bool) -> tuple[int, int]:
    """(rows, columns) of one level of an image layer (the colour axis of an RGB layer left out)."""
    shape = tuple(array.shape[:-1] if rgb else array.shape)
    return shape[-2], shape[-1]


def image_and_labels(
    image: napari.layers.Image | LayerPixels, labels: napari.layers.Labels | LayerPixels
) -> tuple[np.ndarray, np.ndarray]:
    """An image layer and a labels layer drawn over it, as arrays on one grid: for pyramids, the levels whose planes
    have the same size (labels a widget made at a level of the image, or painted at full resolution); only those
    levels are read (a slide's full resolution is not loaded to be refused)."""
    for label_level in _levels(labels):
        for image_level in _levels(image):
            if plane_shape(image_level, image.rgb) == tuple(label_level.shape[-2:]):
                return np.asarray(image_level), np.asarray(label_level)
    if getattr(image, "multiscale", False) or getattr(labels, "multiscale", False):
        sizes = ", ".join(str(plane_shape(level, image.rgb)) for level in _levels(image))
        raise PromptsegError(
            f"labels '{labels.name}' of shape {tuple(_levels(labels)[0].shape)} match no level of the image "
            f"'{image.name}' ({sizes})"
        )
    return np.asarray(image.data), np.asarray(labels.data)  # the caller's shape check names both


#: labels plane z lies on image plane a * z + b (:func:`labels_plane_map`); the same planes
SAME_PLANES = (1.0, 0.0)


@dataclass(frozen=True)
class ExemplarLayers:
    """An image layer and the Labels layer marking objects on it, to be saved to a reference library, gathered on
    napari's main thread without reading a pixel (:func:`read_exemplar` reads them in the worker)."""

    image: LayerPixels
    labels: LayerPixels
    shown: float  # the displayed plane of a stack (full-resolution data coordinate)
    channel_axis: int | None = None  # the image layer's axis of channels (its labels have none)
    channels: list[int] | None = None  # the channels fed to the model (None: all)
    plane_map: tuple[float, float] = SAME_PLANES  # where the labels' planes lie on the image's (labels_plane_map)


def exemplar_layers(
    viewer: napari.viewer.Viewer,
    image: napari.layers.Image,
    labels: napari.layers.Labels,
    channel_axis: int | None = None,
    channels: list[int] | None = None,
) -> ExemplarLayers:
    """The references to an exemplar's layers and the displayed plane; no pixel is read."""
    shown = displayed_plane(viewer, image, channel_axis)
    plane_map = labels_plane_map(viewer, image, labels, channel_axis)
    return ExemplarLayers(layer_pixels(image), layer_pixels(labels), shown, channel_axis, channels, plane_map)


def read_exemplar(layers: ExemplarLayers, what: str = "labels") -> tuple[np.ndarray, np.ndarray, str]:
    """An exemplar's image and labels read as one 2D plane each (:func:`read_reference_plane`: a multichannel
    image's channels last), refused naming both layers when they do not fit, and its source (the image layer's name,
    with the plane of a stack). Reads pixels (a slide's, a stack's): run it in a worker, as "Save reference to
    library" and "Add exemplar" do."""
    image, labels, plane = read_reference_plane(
        layers.image, layers.labels, layers.shown, layers.channel_axis, plane_map=layers.plane_map
    )
    if labels.ndim != 2 or labels.shape != image.shape[:2]:
        raise PromptsegError(
            f"{what} '{layers.labels.name}' of shape {labels.shape} do not match the 2D image '{layers.image.name}' "
            f"of shape {image.shape}"
        )
    name = layers.image.name
    source = name if plane is None else f"{name} plane {plane}"
    if not np.any(labels):  # the library named the image ('reference 'cells': the mask is empty'), not the labels
        raise PromptsegError(
            f"{what} '{layers.labels.name}' mark nothing on image '{source}' (every pixel 0); paint the structure "
            "there first"
        )
    return image, labels, source


def save_exemplar(
    layers: ExemplarLayers,
    what: str,
    library: ReferenceLibrary,
    *,
    name: str,
    description: str,
    scale: tuple[float, ...],
    instances: bool | None,
    partial: bool,
    cancel: Callable[[], bool],
) -> LibraryEntry:
    """Read an exemplar (:func:`read_exemplar`, ``what`` naming its labels) and add it to ``library`` under ``name``,
    with the image layer's pixel size ``scale`` (none recorded at 1 x 1) and
    :meth:`~...io.library.ReferenceLibrary.add`'s ``instances`` (None: decided from the labels) and ``partial_labels``.
    The one path of the One-shot widget's "Save reference to library" and the Text prompt widget's "Add exemplar"; reads
    pixels: run it in a worker."""
    image, labels, source = read_exemplar(layers, what)
    if cancel():
        raise CancelledError("cancelled")
    multichannel = layers.channel_axis is not None  # read channels last
    return library.add(
        name,
        image,
        labels,
        description,
        source=source,
        pixel_size=None if tuple(scale) == (1.0, 1.0) else scale,
        instances=instances,
        partial_labels=partial,
        channel_axis=-1 if multichannel else None,
        channels=layers.channels if multichannel else None,
    )


def submit_save_exemplar(
    runner: TaskRunner,
    layers: ExemplarLayers | list[ExemplarLayers],
    what: str,
    where: str | None,
    *,
    task_name: str,
    title: str,
    saved: Callable[[LibraryEntry], None],
    advice_fix: str,
    saved_all: Callable[[list[LibraryEntry]], None] | None = None,
    undo: SaveUndo | None = None,
    **entry: Any,
) -> bool:
    """Save an exemplar to the library at ``where`` (None: the default one; a new library gets the starter exemplar)
    in ``runner``'s worker (:func:`save_exemplar` with ``what`` and ``entry``'s name, description, scale, instances
    and partial), then hand the entry to ``saved`` and say where it went and, when its labels teach little,
    :func:`~napari_promptseg.methods.library.exemplar_advice` with ``advice_fix``. A list of ``layers`` (several
    references) is saved as exemplars of the one name, all or none (one that fails or a cancel takes the others out
    again); ``saved`` gets the first, ``saved_all`` every one. The one path of the One-shot widget's "Save reference
    to library" and the Text prompt widget's "Add exemplar". A save under a name the library has says that its
    exemplars are ensembled now; ``undo`` (the widget's "Undo last save") is given what it added, to take it out
    again. Returns whether the task was taken."""
    several = list(layers) if isinstance(layers, list) else [layers]

    def task(progress, cancel):
        from ...io.library._format import clean_name, name_key
        from ...io.starter import open_library

        library = open_library(where)
        key = name_key(clean_name(entry.get("name", "")))
        had = sum(name_key(e.name) == key for e in library.entries)  # exemplars of the name before this save
        added: list[LibraryEntry] = []
        try:
            for k, exemplar in enumerate(several):
                progress(k / len(several), f"reading '{exemplar.image.name}'")
                added.append(save_exemplar(exemplar, what, library, cancel=cancel, **entry))
        except BaseException:
            for done_entry in added:  # one set: a reference that fails leaves none of the others half-saved
                library.remove(done_entry.id)
            raise
        return added, library.path, had

    def done(result) -> None:
        from napari.utils.notifications import show_info, show_warning

        from ...io.library import joined_said
        from ...methods.library import exemplar_advice

        added, path, had = result
        saved(added[0])
        if saved_all is not None:
            saved_all(added)
        first = added[0]
        if len(added) == 1:
            message = f"saved exemplar '{first.name}' ({first.kind}) to the reference library {path} (id {first.id})"
        else:
            kinds = ", ".join(dict.fromkeys(e.kind for e in added))
            ids = ", ".join(e.id for e in added)
            message = (
                f"saved {len(added)} exemplars of '{first.name}' ({kinds}), one per reference, to the reference "
                f"library {path} (ids {ids}); a prompt '{first.name}' ensembles them"
            )
        if had:  # not overwritten, but every prompt of the name answers from these too from now on
            message += f"; {joined_said(first.name, had)}"
        if undo is not None:
            undo.saved(path, added)
            message += f" ({UNDO_TEXT} takes {'it' if len(added) == 1 else 'them'} out again)"
        advice = "; ".join(dict.fromkeys(a for a in (exemplar_advice(e, advice_fix) for e in added) if a)) or None
        runner.widget.done(message if advice is None else f"{message}. Warning: {advice}")
        show_info(message)
        if advice:
            show_warning(advice)

    # no inputs to watch: the layers' arrays are taken now, and the entry is written whatever becomes of the
    # layers (a layer removed meanwhile was said to drop a result the library had already saved)
    return runner.submit(task_name, title, task, done)


def stack_axis_of(layer: napari.layers.Layer, axis: int = 0) -> str | None:
    """ "t" when the layer's ``axis`` holds a time-lapse's frames, by napari's axis label ("t", "time": a reader that
    names its axes) or by the file our reader opened it from (its metadata's path: an ImageJ or OME TYX stack); None
    otherwise. What the widgets' words call its planes (frames, along T)."""
    labels = tuple(getattr(layer, "axis_labels", ()) or ())
    if axis < len(labels) and str(labels[axis]).lower() in ("t", "time"):
        return "t"
    path = (getattr(layer, "metadata", None) or {}).get("path")
    if axis != 0 or not path:  # the file's stack axis is its first
        return None
    from ...io.multiscale import stack_axes

    try:
        return stack_axes(path).planes
    except Exception:  # noqa: BLE001 - a file moved or unreadable since: its planes, unnamed
        return None


def displayed_plane(viewer: napari.viewer.Viewer, image: napari.layers.Image, channel_axis: int | None = None) -> float:
    """Where along its axis of planes (its first, or the one after its ``channel_axis``) the viewer shows ``image``
    (its full-resolution data coordinate), read cheaply on the main thread for :func:`read_reference_plane`."""
    position = image.world_to_data(viewer.dims.point)
    return float(position[1 if channel_axis == 0 and len(position) > 1 else 0])


def labels_plane_map(
    viewer: napari.viewer.Viewer, image: napari.layers.Image, labels: napari.layers.Labels, channel_axis: int | None
) -> tuple[float, float]:
    """(a, b): the plane a * z + b of a stack ``image`` on which plane z of a (Z, Y, X) ``labels`` layer lies, through
    napari's world coordinates (each layer's scale and translate along its planes' axis), as the user sees the labels
    over the image; :data:`SAME_PLANES` for other layers. Read on the main thread, without a pixel."""
    from ...io.layer_objects import in_image_data

    planes_axis = 1 if channel_axis == 0 else 0
    if int(labels.ndim) != 3 or int(image.ndim) - (channel_axis is not None and not image.rgb) != 3:
        return SAME_PLANES
    z0, z1 = in_image_data(labels, [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], image, viewer.dims.point)[:, planes_axis]
    return float(z1 - z0), float(z0)


def _labels_on_image_planes(
    marks: np.ndarray, planes: int, plane_map: tuple[float, float], labels_name: str, image_name: str, word: str
) -> np.ndarray:
    """(Z, Y, X) ``marks`` moved onto the image's ``planes`` as napari lays them over it (``plane_map``); a marked
    plane between the image's planes or beyond them is refused, naming both layers (the user saw its labels over
    another plane than any the run would use)."""
    a, b = plane_map
    moved = np.zeros((planes, *marks.shape[1:]), marks.dtype)
    for z in np.flatnonzero(marks.reshape(len(marks), -1).any(axis=1)):
        at = a * z + b
        k = int(np.round(at))
        if abs(at - k) > 1e-3 or not 0 <= k < planes:
            where = f"beyond its {planes} {word}s" if abs(at - k) <= 1e-3 else f"between its {word}s"
            raise PromptsegError(
                f"labels {labels_name} mark their {word} {z}, which napari lays over {word} {at:g} of {image_name} "
                f"({where}): the two layers' scale or translate along the {word}s differ; give the Labels layer the "
                "image's scale and translate, or paint on a Labels layer made over the image"
            )
        moved[k] = np.maximum(moved[k], marks[z])
    return moved


def read_reference_plane(
    image: LayerPixels,
    labels: LayerPixels,
    shown: float,
    channel_axis: int | None = None,
    stack_axis: str | None = None,
    plane_map: tuple[float, float] = SAME_PLANES,
) -> tuple[np.ndarray, np.ndarray, int | None]:
    """An image and the labels marking objects on it (a reference, an exemplar) read as one 2D plane each, and
    which plane of a stack that is (None for a 2D image). A stack's plane is the one its labels mark, else the one
    displayed (``shown``: :func:`displayed_plane`; labels on several planes, or 2D labels, which napari shows on
    every plane). An image with a ``channel_axis`` ((C, Y, X), (C, Z, Y, X)) comes back with its channels last, as
    the CLI reads a reference: (Y, X, C); labels over its channel axis too, its channels' objects together. Pairs
    of other shapes come back as :func:`image_and_labels` reads them, for the caller's shape check to name.
    ``stack_axis``: the image's (:func:`stack_axis_of`), "t" for a time-lapse, whose planes a refusal calls frames;
    ``plane_map``: where a (Z, Y, X) labels layer's planes lie on the image's (:func:`labels_plane_map`: another
    scale or translate along Z puts the labels over another plane than the one of the same index).
    Reads pixels: run it in a worker."""
    pixels, marks = image_and_labels(image, labels)
    if channel_axis is not None and marks.ndim == pixels.ndim >= 3:
        # napari's own 'New labels' over a (C, Y, X) layer has its every axis: the objects painted on any channel
        marks = marks.max(axis=channel_axis)
    if channel_axis is not None and pixels.ndim >= 3:
        pixels = np.moveaxis(pixels, channel_axis, -1)  # as the CLI reads a reference (the model reads it contiguous)
    spatial = pixels.shape[:-1] if image.rgb or channel_axis is not None else pixels.shape
    if len(spatial) == 3 and marks.ndim == 3 and marks.shape[1:] == spatial[1:] and plane_map != SAME_PLANES:
        from ...methods.volume.stacks import plane_word

        marks = _labels_on_image_planes(
            marks, spatial[0], plane_map, f"'{labels.name}'", f"'{image.name}'", plane_word(stack_axis)
        )
    if len(spatial) != 3 or marks.shape not in (spatial, spatial[1:]):
        return pixels, marks, None
    # the displayed plane, on the level read (a pyramid's planes may be fewer than its full resolution's)
    planes_axis = 1 if channel_axis == 0 else 0
    shown = shown * spatial[0] / _levels(image)[0].shape[planes_axis]
    shown = int(np.clip(np.round(shown), 0, spatial[0] - 1))
    from ...methods.volume.stacks import reference_plane

    plane = reference_plane(
        marks,
        spatial[0],
        shown,
        labels_name=f"labels '{labels.name}'",
        image_name=f"'{image.name}'",
        stack_axis=stack_axis,
        explicit=False,
    )
    if marks.ndim == 3:
        marks = marks[plane]
    return pixels[plane], marks, plane


def whole_image_level(layer: napari.layers.Image | LayerPixels) -> tuple[Any, np.ndarray]:
    """The pixels a whole-image method (text, SAT) reads from a layer, and the downsampling of each of the layer's
    axes: a pyramid's coarsest level with at least 1024 px along its longest side (as the CLI reads one; planes
    may be downsampled too), else the layer itself (factors 1)."""
    return layer_level(layer, WHOLE_IMAGE_SIDE)


def layer_level(layer: napari.layers.Image | LayerPixels, side: float) -> tuple[Any, np.ndarray]:
    """A pyramid layer's coarsest level with at least ``side`` px along its longest side
    (:func:`~napari_promptseg.io.multiscale.level_for_side`, as the CLI reads one) and its downsampling along each of
    the layer's axes; any other layer itself (factors 1)."""
    _, level, factors = layer_pyramid_level(layer, side)
    return level, factors


def layer_pyramid_level(layer: napari.layers.Image | LayerPixels, side: float) -> PyramidLevel:
    """:func:`layer_level` with the level's index (0: full resolution, or not a pyramid)."""
    if not layer.multiscale:
        return PyramidLevel(0, layer.data, np.ones(layer.ndim))
    return level_for_side(layer.data, side, layer.ndim)


def level_factors(layer: napari.layers.Image | LayerPixels, level: Any) -> np.ndarray:
    """How many times coarser than the layer's full resolution ``level`` (one of its arrays) is, along each axis."""
    if not layer.multiscale:
        return np.ones(layer.ndim)
    return np.divide(layer.data[0].shape[: layer.ndim], level.shape[: layer.ndim])


def placement(
    layer: napari.layers.Layer, ndim: int, factors: np.ndarray | None = None, channel_axis: int | None = None
) -> dict:
    """``scale``, ``translate`` and, when ``layer`` is also rotated, sheared or has an affine, the ``affine`` that
    puts a result layer over ``layer``'s first ``ndim`` axes where ``layer`` shows them (its ``channel_axis``, when
    it has one, left out: a (C, Y, X) layer's labels are (Y, X)); the result made from a pyramid level ``factors``
    times coarser than full resolution along each of the layer's axes (default: full resolution), its pixels over
    the full-resolution pixels they stand for (:func:`~napari_promptseg.tiling.level_to_full`)."""
    axes = [a for a in range(ndim + (channel_axis is not None)) if a != channel_axis]
    return placement_over(layer, axes, None if factors is None else np.asarray(factors, float)[axes])


def placement_over(layer: napari.layers.Layer, axes: list[int], factors: np.ndarray | None = None) -> dict:
    """:func:`placement` over the data ``axes`` of ``layer`` (a channel axis left out). The layer's whole
    data-to-world map is read through napari's public ``data_to_world`` (scale and translate alone put a rotated
    layer's results 241 px off under 30 degrees)."""
    factor = np.ones(len(axes)) if factors is None else np.asarray(factors, float)[: len(axes)]
    to_layer = level_to_layer_matrix(factor)  # the result's data -> the layer's
    scale = np.asarray(layer.scale, float)[axes] * factor
    translate = np.asarray(layer.translate, float)[axes] + np.asarray(layer.scale, float)[axes] * to_layer[:-1, -1]
    result = data_to_world_matrix(layer, axes) @ to_layer  # the result's data -> world
    base = np.eye(len(axes) + 1)
    base[:-1, :-1], base[:-1, -1] = np.diag(scale), translate
    # the layer's units too (a slide's µm from the reader): a result in pixels made napari warn "Inconsistent units
    # across layers; units will not be used for rendering", and the scale bar lost its unit
    out = {"scale": scale, "translate": translate, "units": tuple(layer.units[a] for a in axes)}
    # and its axis labels (a time-lapse's t): its results' axes were -3, -2, -1 beside the image's t, y, x. napari's
    # default labels are left to napari, as a result's own defaults ((-2, -1) of a (C, Y, X) layer's (-3, -2, -1))
    labels = tuple(str(label) for label in layer.axis_labels)
    if labels != tuple(str(i) for i in range(-layer.ndim, 0)):
        out["axis_labels"] = tuple(labels[a] for a in axes)
    if not _same_map(result, base):
        out["affine"] = result @ np.linalg.inv(base)
    return out


def _same_map(measured: np.ndarray, expected: np.ndarray) -> bool:
    """Whether a data-to-world matrix read through ``data_to_world`` is ``expected`` up to its float error. That
    error is of the size of the world coordinates (each column is a difference of two of them), not of the scale:
    a layer in millimetres (scale 2.5e-4 at translate 85) compared with a fixed 1e-9 after a division by the scale
    got a spurious near-identity affine."""
    linear, shift = expected[:-1, :-1], expected[:-1, -1]
    size = np.abs(shift).max(initial=0.0) + np.abs(linear).max(initial=0.0)
    rounding = 64 * np.finfo(float).eps * size
    return bool(
        np.allclose(measured[:-1, :-1], linear, rtol=0, atol=1e-9 * np.abs(linear).max(initial=0.0) + rounding)
        and np.allclose(measured[:-1, -1], shift, rtol=0, atol=1e-9 * size + rounding)
    )


def data_token(layer: napari.layers.Layer) -> tuple:
    """What identifies the pixels a layer holds: its array objects (replacing ``layer.data`` makes new ones)."""
    return tuple(id(level) for level in _levels(layer))
