"""The One-shot widget's inputs: the target layer's planes (a 2D image or a stack), a target folder's images, and
everything a run reads, gathered on napari's main thread without reading a pixel and read in the worker."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import CancelledError, PromptsegError
from ...io.images import IMAGE_SUFFIXES
from ...io.listing import image_files, list_images, ome_zarr_left_out
from ...io.reference_pair import check_reference
from ...methods.volume.stacks import plane_word
from .._common import LayerPixels, level_factors, plane_shape, read_reference_plane
from .._common.time_points import TimePoint


def target_planes(data: np.ndarray, rgb: bool, name: str = "target layer") -> tuple[list[np.ndarray], bool]:
    """A 2D (or RGB) image -> [image]; a stack (first axis = planes) -> its planes. ``name``: the layer, as the
    refusal of other shapes names it (checked before a lazy array is read)."""
    stacked = is_stack(data, rgb, name)
    return read_planes(data, stacked), stacked


def is_stack(data, rgb: bool, name: str = "target layer", channel_axis: int | None = None) -> bool:
    """Whether a layer's array is a stack of 2D (RGB, or multichannel with ``channel_axis`` 0: (C, Z, Y, X)) planes
    rather than one plane; other shapes are refused, naming the layer. Only the shape is looked at (cheap on
    napari's main thread)."""
    plane_ndim = 3 if rgb or channel_axis is not None else 2
    if np.ndim(data) not in (plane_ndim, plane_ndim + 1):
        shape = tuple(np.shape(data))
        # a (C, Z, Y, X) layer is one stack once its first axis is said to hold channels
        channels = plane_ndim == 2 and len(shape) == 4
        multichannel = "; or, if its first axis holds channels, choose channel axis 0" if channels else ""
        raise PromptsegError(
            f"{name} has {len(shape)} dimensions (shape {shape}{', RGB' if rgb else ''}); expected a 2D image or a "
            f"stack of 2D planes: pick one stack (e.g. one time point or channel: Layers > Split Stack){multichannel}"
        )
    return np.ndim(data) == plane_ndim + 1


def read_planes(data, stacked: bool, cancel=None, channel_axis: int | None = None) -> list[np.ndarray]:
    """The planes of a (lazy) array in memory, a stack's one by one (``cancel`` checked between them); a (C, Z, Y, X)
    stack's (``channel_axis`` 0) with their channels: (C, Y, X). Reads pixels: run it in a worker."""
    if not stacked:
        return [np.asarray(data)]
    planes_axis = 1 if channel_axis == 0 else 0
    planes = []
    for i in range(np.shape(data)[planes_axis]):
        if cancel is not None and cancel():
            raise CancelledError("cancelled")
        planes.append(np.asarray(data[:, i] if planes_axis else data[i]))
    return planes


@dataclass
class OneShotInputs:
    """What a run reads, gathered on napari's main thread without reading a pixel (reading a stack or a pyramid
    there froze napari): the layers' arrays and the options that decide which level of a pyramid target to read."""

    reference: LayerPixels
    reference_labels: LayerPixels
    shown: float  # the displayed plane of a stack reference (full-resolution data coordinate)
    target: LayerPixels | None
    files: list[Path]
    instances: bool | None
    partial: bool
    object_size: float | None  # full-resolution pixels; None: measured on the reference
    channel_axis: int | None = None  # the layers' axis of channels (the CLI's --channel-axis); None: gray or RGB
    channels: list[int] | None = None  # the channels fed to the model (--channels); None: all
    left_out: str | None = None  # a target folder's OME-Zarr images, not read here: which, and how to run them
    stack_axis: str | None = None  # "t": the target layer's planes are a time-lapse's frames (said so)
    reference_stack_axis: str | None = None  # the same of the reference layer, a stack's
    #: the references after the first (the widget's reference rows): image, labels, displayed plane, stack axis and
    #: where the labels' planes lie on the image's (labels_plane_map)
    more_references: list[tuple[LayerPixels, LayerPixels, float, str | None, tuple[float, float]]] = field(
        default_factory=list
    )
    ensemble: str = "vote"  # how several references' masks combine (the CLI's --ensemble)
    #: where the reference labels' planes lie on the reference stack's (napari's world: labels_plane_map)
    plane_map: tuple[float, float] = (1.0, 0.0)
    time_point: TimePoint | None = None  # a (T, Z, Y, X) target's time point shown, whose volume ``target`` is


@dataclass
class OneShotPixels:
    """The inputs read (in the worker): the reference plane (a multichannel one's channels last) and its labels, the
    targets (planes or files; a multichannel layer's planes with their channels first)."""

    reference: np.ndarray
    labels: np.ndarray
    reference_plane: int | None  # the plane of a stack reference its labels mark
    targets: list
    names: list[str]
    stacked: bool
    factors: np.ndarray  # the downsampling of each axis of the target level read
    more_references: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # image, labels, as the first


def read_oneshot_inputs(inputs: OneShotInputs, input_size: int, progress, cancel) -> OneShotPixels:
    """Read the reference, its labels and the target (a pyramid target at the level the CLI reads for a model of
    ``input_size`` px), refusing labels that do not fit or are empty, naming the layer. Runs in the worker."""
    reference, labels, plane = _read_reference(
        inputs.reference,
        inputs.reference_labels,
        inputs.shown,
        inputs.channel_axis,
        inputs.reference_stack_axis,
        progress,
        inputs.plane_map,
    )
    more = [
        _read_reference(image, marks, shown, inputs.channel_axis, stack_axis, progress, plane_map)[:2]
        for image, marks, shown, stack_axis, plane_map in inputs.more_references
    ]
    target = inputs.target
    if target is None:
        files, names = inputs.files, [p.stem for p in inputs.files]
        return OneShotPixels(reference, labels, plane, files, names, False, np.ones(2), more)
    if cancel():
        raise CancelledError("cancelled")
    data = target.data
    if target.multiscale:
        data = _pyramid_level(target, labels, inputs, input_size)
    stacked = is_stack(data, target.rgb, f"target layer '{target.name}'", inputs.channel_axis)
    progress(0.0, f"reading '{target.name}'")
    planes = read_planes(data, stacked, cancel, inputs.channel_axis)
    # a plane named as the CLI names it (a time-lapse's a frame): its warnings then name it once (plane_warnings)
    word = plane_word(inputs.stack_axis)
    names = [f"{target.name} {word} {i}" for i in range(len(planes))] if stacked else [target.name]
    return OneShotPixels(reference, labels, plane, planes, names, stacked, level_factors(target, data), more)


def _read_reference(
    ref: LayerPixels,
    ref_labels: LayerPixels,
    shown: float,
    channel_axis: int | None,
    stack_axis: str | None,
    progress,
    plane_map: tuple[float, float] = (1.0, 0.0),
) -> tuple[np.ndarray, np.ndarray, int | None]:
    """A reference image layer and its labels read (a stack's labelled or displayed plane, and which), refused
    naming the layers when the labels do not fit or mark nothing or everything. Runs in the worker."""
    # a time-lapse of volumes is refused as a target of its shape is, before its pixels are read: its labels were
    # said not to match 'the 2D reference image' of their own shape
    is_stack(ref.data[0] if ref.multiscale else ref.data, ref.rgb, f"reference layer '{ref.name}'", channel_axis)
    progress(0.0, f"reading '{ref.name}'")
    # a stack's reference is its labelled (or displayed) plane: the volume's other planes are the usual targets
    reference, labels, plane = read_reference_plane(ref, ref_labels, shown, channel_axis, stack_axis, plane_map)
    if labels.shape != reference.shape[: labels.ndim] or labels.ndim != 2:
        spatial = reference.shape[:-1] if ref.rgb or channel_axis is not None else reference.shape
        if len(spatial) == 3:  # a stack was called 'the 2D reference image', and the shapes that fit went unsaid
            stack = "time-lapse" if stack_axis == "t" else "stack"
            what = (
                f"reference image '{ref.name}', a {stack} of shape {spatial}: give labels of the {stack}'s shape, or "
                f"of one {plane_word(stack_axis)} {spatial[1:]}"
            )
        else:
            what = f"2D reference image '{ref.name}' of shape {reference.shape}"
        raise PromptsegError(f"reference labels '{ref_labels.name}' of shape {labels.shape} do not match the {what}")
    # checked by the rule of every reference, naming the layers (negative ids: a run took them for background and
    # said the layer was empty); a copy: labels painted while the run goes on do not change its reference midway
    labels = np.array(
        check_reference(reference, labels, f"reference image '{ref.name}'", f"reference labels '{ref_labels.name}'")
    )
    return reference, labels, plane


def _pyramid_level(target: LayerPixels, labels: np.ndarray, inputs: OneShotInputs, input_size: int):
    """The level of a multiscale target a run reads, by the CLI's rule (:func:`~...methods.oneshot.target_scale`): many
    instances at the working scale of the reference's objects (their size assumed at the target's full-resolution pixel
    size), one region at the level a whole-image method reads."""
    from ...methods.instances import exemplar_object_size, is_many_objects, reference_objects
    from ...methods.oneshot import target_scale
    from ...tiling import pyramid_level

    many = inputs.instances if inputs.instances is not None else inputs.partial or is_many_objects(labels)
    size = exemplar_object_size(reference_objects(labels), inputs.object_size) if many else None
    shapes = [plane_shape(level, target.rgb) for level in target.data]
    level, _ = pyramid_level(shapes, target_scale(shapes[0], input_size, size))
    return target.data[level]


def folder_targets(folder: str) -> tuple[list[Path], str | None]:
    """The images of a target folder typed or browsed to, in the order the CLI and napari's reader take them from
    it (:func:`napari_promptseg.io.list_images`), image files only (a pyramidal TIFF or whole slide is read at the
    level the CLI reads: :func:`~napari_promptseg.methods.oneshot.target_file_level`), and what a run says of the
    folder's OME-Zarr images it leaves out (the CLI runs on them), or None. The folder is listed once; only names
    and headers are looked at."""
    path = Path(folder)
    if not path.is_dir():
        raise PromptsegError(f"target folder {folder} does not exist")
    images = list_images(path)
    files = image_files(images)  # a broken link among them: skipped saying why, as the CLI
    if not files and images:  # images the CLI runs on: "no image files" sent the user looking for a wrong folder
        raise PromptsegError(
            f"target folder {folder} holds only OME-Zarr images ({', '.join(p.name for p in images[:3])}"
            f"{', ...' if len(images) > 3 else ''}), which the One-shot widget does not read from a folder (it reads "
            "image files): open one in napari (napari-ome-zarr) and pick it as the target layer, or run "
            f"'promptseg oneshot {folder}'"
        )
    if not files:
        raise PromptsegError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in target folder {folder}")
    return files, ome_zarr_left_out(
        folder,
        images,
        "the One-shot run",
        "open {it} in napari (napari-ome-zarr) and pick it as the target layer",
        f"'promptseg oneshot {folder}'",
    )
