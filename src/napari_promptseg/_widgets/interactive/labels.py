"""The Labels layers the Interactive widget's objects go into and come from: whether a layer fits an image's grid
(:func:`target_misfit`), a commit's new ids written into it (:func:`commit_to_labels`), and the objects a layer
holds on the displayed plane as a propagation's seed (:func:`seed_plane`)."""

from __future__ import annotations

import napari
import napari.layers
import numpy as np

from ...errors import PromptsegError
from ...io.layer_objects import data_to_world_matrix
from .._common import _levels, _same_map, placement_over
from .geometry import PlaneGeometry


def target_misfit(
    target: napari.layers.Labels,
    geom: PlaneGeometry,
    *,
    over_channels: bool = False,
    plane_only: bool = False,
    image: str | None = None,
) -> str | None:
    """Why a Labels layer cannot hold the objects of ``geom``'s image (another shape, or the same shape on another
    grid), or None when it can. ``over_channels``: the layer has the image's channel axis too, first (napari's 'New
    labels' over a multichannel layer); the other axes are compared. ``plane_only``: a 2D layer over the image's
    last two axes (napari lays it over every plane), compared with those. ``image``: what ``geom`` is, in the message
    (default: the image)."""
    name = f"labels layer '{target.name}'"
    image = image or f"image '{geom.image_name}'"
    n = len(geom.labels_shape)
    kept = list(range(n - 2 if plane_only else 0, n))
    shape = tuple(target.data.shape)[1 if over_channels else 0 :]
    if shape != tuple(geom.labels_shape[a] for a in kept):
        return f"{name}: shape {tuple(target.data.shape)} does not match {image} {geom.labels_shape}"
    # the same array shape on another grid puts the objects elsewhere in the world than the image shows them; the
    # whole data-to-world map counts (an unrotated layer over a rotated image showed the objects turned away)
    image_map = np.eye(n + 1)
    image_map[:-1, :-1], image_map[:-1, -1] = np.diag(geom.scale), geom.translate
    if geom.affine is not None:
        image_map = geom.affine @ image_map
    image_map = image_map[np.ix_([*kept, n], [*kept, n])]
    if not _same_map(data_to_world_matrix(target, list(range(1 if over_channels else 0, target.ndim))), image_map):
        turned = " or another rotation/shear/affine" if geom.affine is not None or _turned(target) else ""
        return (
            f"{name} lies on another grid (scale {tuple(map(float, target.scale))}, translate "
            f"{tuple(map(float, target.translate))}{turned}) than {image} (scale "
            f"{tuple(geom.scale)}, translate {tuple(geom.translate)}): its pixels are not the image's"
        )
    return None


def holds_channels(layer: napari.layers.Labels, geom: PlaneGeometry) -> bool:
    """Whether a Labels layer has the image's channel axis too, first: napari's 'New labels' over a multichannel
    image layer (one plane per channel, painted on the channel shown)."""
    return geom.channel_axis is not None and layer.ndim == len(geom.labels_shape) + 1


def shown_channel(viewer: napari.viewer.Viewer, layer: napari.layers.Labels) -> int:
    """The plane of a Labels layer's first axis the viewer shows (for one that :func:`holds_channels`: the channel
    shown, where a commit goes as a paint stroke would)."""
    position = layer.world_to_data(viewer.dims.point)[0]
    return int(np.clip(np.round(position), 0, layer.data.shape[0] - 1))


def seed_plane(layer: napari.layers.Labels, geom: PlaneGeometry) -> np.ndarray:
    """The objects a Labels layer holds on ``geom``'s plane, (H, W) rows by columns: a propagation's seed. It must
    lie on the image's grid (:func:`target_misfit`) and hold an object there. Over a multichannel image, labels with
    its channel axis too (napari's 'New labels', painted on the channel shown) give the objects of every channel, as
    the One-shot and Text widgets read such labels. A 2D layer over a stack's planes (which napari shows on every
    plane) gives its objects, as the CLI's and the console's (Y, X) seed labels of the plane."""
    n = len(geom.labels_shape)
    over_channels = holds_channels(layer, geom)
    plane_only = layer.ndim == 2 < n and sorted((geom.row_axis, geom.col_axis)) == [n - 2, n - 1]
    misfit = target_misfit(layer, geom, over_channels=over_channels, plane_only=plane_only)
    if misfit:
        raise PromptsegError(f"{misfit}; choose a Labels layer of this image to seed the propagation")
    # a pyramid's full-resolution level (OME-Zarr labels, as the CLI writes them into a stack's labels/ group: its
    # data indexed as one array raised TypeError), and a copy: the run may wait in the queue while the user paints
    data = _levels(layer)[0]
    if over_channels:
        plane = np.asarray(data[(slice(None), *geom.plane_slices)]).max(axis=0)
    else:
        plane = np.array(data if plane_only else data[geom.plane_slices])
    if geom.row_axis > geom.col_axis:  # the plane is displayed transposed: its labels axes come columns first
        plane = plane.T
    if not plane.any():
        where = ", ".join(f"axis {a} = {geom.index[a]}" for a in geom.fixed_axes)
        raise PromptsegError(
            f"labels layer '{layer.name}' holds no object on the displayed plane ({where}): move to the plane its "
            "objects are on, or choose 'the prompts on this plane'"
        )
    return plane


def _turned(layer: napari.layers.Layer) -> bool:
    """Whether a layer has a rotation, shear or affine of its own (beyond scale and translate)."""
    return "affine" in placement_over(layer, list(range(layer.ndim)))


def commit_to_labels(
    target: napari.layers.Labels,
    preview: np.ndarray,
    geom: PlaneGeometry,
    offset: tuple[int, int] = (0, 0),
    channel: int | None = None,
    *,
    advice: str = "choose another target or a new layer",
    image: str | None = None,
    partly: list[int] | None = None,
) -> list[int]:
    """Write the preview objects into ``target`` as new ids (max + 1, ...), only where ``target`` is 0. ``preview``
    covers the plane from (row, col) ``offset`` on (a crop of a whole slide's labels; default: the whole plane).
    ``channel``: the plane of a target that :func:`holds_channels` to write into (napari's 'New labels' over a
    multichannel image was refused as not matching it). ``advice``: what a target that does not fit is told to do;
    ``image``: what ``geom`` is, in that message (:func:`target_misfit`). ``partly``: when given, receives the new ids
    of the objects written only in part (the rest of their pixels lay on labels there).

    Goes through ``Labels.data_setitem`` so the whole commit is one undo step (Ctrl+Z). Returns the new ids.
    """
    name = f"labels layer '{target.name}'"
    unpaintable = _unpaintable(target)
    if unpaintable:
        raise PromptsegError(f"{name} {unpaintable}, which napari cannot paint into: choose the target 'new layer'")
    over_channels = holds_channels(target, geom)
    misfit = target_misfit(target, geom, over_channels=over_channels, image=image)
    if misfit:
        raise PromptsegError(f"{misfit}; {advice}")
    if over_channels and channel is None:
        raise PromptsegError(f"{name} has the channel axis of image '{geom.image_name}': say which channel's plane")
    dtype = np.dtype(target.data.dtype)
    if dtype.kind not in "iu":
        raise PromptsegError(f"{name}: labels must be integers, got {dtype}")
    (r0, c0), (h, w) = offset, preview.shape
    window = tuple(
        slice(r0, r0 + h) if a == geom.row_axis else slice(c0, c0 + w) if a == geom.col_axis else geom.index[a]
        for a in range(len(geom.labels_shape))
    )
    first = (channel,) if over_channels else ()
    window = (*first, *window)
    free = np.asarray(target.data[window]) == 0
    placed = np.where(free, preview, 0)
    objects = [int(k) for k in np.unique(placed) if k != 0]
    if not objects:
        return []
    cut = set(np.unique(preview[~free]).tolist())  # objects with pixels on labels there
    start = int(np.asarray(target.data).max()) + 1
    new_ids = list(range(start, start + len(objects)))
    if new_ids[-1] > np.iinfo(dtype).max:
        raise PromptsegError(
            f"{name}: dtype {dtype} cannot hold label id {new_ids[-1]}; convert the layer to uint32 or commit to a "
            "new layer"
        )
    lut = np.zeros(int(placed.max()) + 1, dtype=np.int64)
    lut[objects] = new_ids
    rows, cols = np.nonzero(placed)
    values = lut[placed[rows, cols]].astype(dtype)
    where = geom.labels_indices(rows + r0, cols + c0)
    if over_channels:
        where = (np.full(rows.shape, channel, dtype=rows.dtype), *where)
    target.data_setitem(where, values)
    if partly is not None:
        partly.extend(new for old, new in zip(objects, new_ids, strict=True) if old in cut)
    return new_ids


def _unpaintable(target: napari.layers.Labels) -> str | None:
    """Why napari cannot write into a Labels layer's pixels, or None. Labels opened from an OME-Zarr (e.g. those
    ``promptseg`` writes into its labels/ group, read by napari-ome-zarr) are a pyramid of lazy arrays: a commit
    into one failed with 'TypeError: list indices must be integers' (a lazy one level: NotImplementedError)."""
    data = target.data
    if target.multiscale:
        return "is a pyramid (e.g. OME-Zarr labels)"
    if not isinstance(data, np.ndarray):
        return "is read lazily (not in memory)"
    if not data.flags.writeable:
        return "is read-only"
    return None
