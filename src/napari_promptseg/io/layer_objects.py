"""napari layer objects as the console functions take them, told by what they hold (no napari import: the core
library runs without it). An Image or Labels layer stands for its pixels (a multiscale layer's levels); a Shapes
layer is boxes (each shape's bounding box) and a Points layer clicks, both read in the image's pixels through
napari's world coordinates (each layer's own scale, translate, rotation) when the image is a layer too, else in
their own data coordinates. Results stay the image's pixels: ``viewer.add_labels(labels, **layer_placement(layer))``
lies over the layer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import PromptsegError

#: the layers that hold pixels; any other kind given as an image is refused, naming it
PIXEL_KINDS = ("Image", "Labels")
#: the Interactive widget's points feature: False marks a negative click
POSITIVE_FEATURE = "positive"


def is_layer(obj: object) -> bool:
    """A napari layer (told by napari's public layer methods, without importing napari)."""
    return not isinstance(obj, np.ndarray) and all(
        hasattr(obj, attribute) for attribute in ("data", "data_to_world", "world_to_data", "name", "ndim")
    )


def _kind(layer: Any) -> str:
    kind = type(layer).__name__
    return f"{'an' if kind[:1] in 'AEIOU' else 'a'} {kind} layer"


def layer_pixels(obj: object, what: str = "image") -> object:
    """``obj``'s pixels: an Image or Labels layer's data (a multiscale layer's levels, which the functions read as a
    pyramid), anything else as it is. A layer of another kind is refused, naming it."""
    if not is_layer(obj):
        return obj
    if type(obj).__name__ not in PIXEL_KINDS:
        raise PromptsegError(
            f"{what}: layer '{obj.name}' is {_kind(obj)}, not an image; pass an Image layer (a mask: a Labels layer)"
            + (
                ", and this layer as the prompts (boxes=, points=)"
                if type(obj).__name__ in ("Shapes", "Points")
                else ""
            )
        )
    return obj.data


def layers_pixels(obj: object, what: str) -> object:
    """:func:`layer_pixels` of one layer or of each of a list of them (one-shot's references and targets)."""
    if isinstance(obj, (list, tuple)) and any(is_layer(item) for item in obj):
        return [layer_pixels(item, f"{what} {k + 1}") for k, item in enumerate(obj)]
    return layer_pixels(obj, what)


def layer_xy(obj: object, what: str = "points", image_layer: Any | None = None) -> object:
    """A Points layer's points as (x, y) pixels (a layer over a stack: its last two numbers); anything else as it
    is. Over ``image_layer`` (the layer of the image the points were clicked on): its pixels, through napari's world
    coordinates (:func:`in_image_data`; a 2D Points layer over a (C, Y, X) image lies on its first plane), as
    napari shows them; without one, the Points layer's own data coordinates. A layer of another kind is refused,
    naming it."""
    layer = _prompt_layer(obj, what, "Points")
    if layer is None:
        return obj
    if image_layer is None:
        return np.asarray(layer.data, float).reshape(-1, int(layer.ndim))[:, -2:][:, ::-1]
    first_plane = image_layer.data_to_world(np.zeros(_image_axes(image_layer)))
    return in_image_data(layer, layer.data, image_layer, first_plane)[:, -2:][:, ::-1]


@dataclass
class LayerPrompts:
    """Prompts in the library's convention (x = column, y = row, in the image's pixels) and, for an image layer of
    more than two axes (a stack), the plane (its leading indices) the layers' prompts lie on."""

    boxes: object
    points: object
    negative_points: object
    plane: tuple[int, ...] | None = None
    #: the layers that gave prompts, for what a refusal says
    sources: list[str] = field(default_factory=list)


def _image_axes(image_layer: Any) -> int:
    return int(image_layer.ndim)  # an RGB layer's colour axis is not one of its ndim


def _in_image(
    layer: Any, coords: np.ndarray, image_layer: Any | None, plane: Sequence[int] | None = None
) -> np.ndarray | None:
    """``coords`` (N, layer.ndim) in ``layer``'s data -> (N, image axes) in the image layer's data (through world
    coordinates); without an image layer, the layer's own data coordinates. A prompt layer of fewer axes than the
    image (a 2D layer over a stack) lies on the image's ``plane`` (its leading indices); None without one."""
    coords = np.asarray(coords, float).reshape(-1, int(layer.ndim))
    if image_layer is None:
        return coords
    axes = _image_axes(image_layer)
    missing = axes - coords.shape[1]
    if missing > 0 and plane is None:
        return None
    fill = np.zeros(0)
    if missing > 0:
        origin = np.zeros(axes)
        origin[axes - 2 - len(plane) : axes - 2] = plane
        fill = np.asarray(image_layer.data_to_world(origin), float)
    return in_image_data(layer, coords, image_layer, fill)[:, -axes:]


def in_image_data(layer: Any, coords: object, image_layer: Any, world_fill: object) -> np.ndarray:
    """``coords`` (N, layer.ndim) in a prompt ``layer``'s data -> (N, image_layer.ndim) in the image layer's data,
    through napari's world coordinates, so each layer's own scale, translate and rotation count. The world axes the
    prompt layer lacks (a 2D layer over a stack) take ``world_fill``'s values (the widget's: the viewer's position;
    the console's: the plane given). The one mapping of the console functions and the Interactive widget."""
    fill = np.asarray(world_fill, float)
    out = []
    for c in np.asarray(coords, float).reshape(-1, int(layer.ndim)):
        world = np.asarray(layer.data_to_world(c), float)
        if len(world) < len(fill):
            world = np.r_[fill[: len(fill) - len(world)], world]
        out.append(np.asarray(image_layer.world_to_data(world), float))
    return np.asarray(out, float).reshape(-1, int(image_layer.ndim))


def _prompt_layer(obj: object, what: str, expected: str) -> Any | None:
    """``obj`` when it is a layer of the ``expected`` kind; None when it is not a layer; refused otherwise."""
    if not is_layer(obj):
        return None
    if type(obj).__name__ != expected:
        hint = {"Points": "points=", "Shapes": "boxes="}.get(type(obj).__name__)
        give = f"; give it as {hint}" if hint else ""
        raise PromptsegError(f"{what}: layer '{obj.name}' is {_kind(obj)}; {what} are {_kind_of(expected)}{give}")
    return obj


def _kind_of(kind: str) -> str:
    return {"Shapes": "a Shapes layer (rectangles)", "Points": "a Points layer (clicks)"}[kind]


def layer_prompts(
    image: object,
    boxes: object,
    points: object,
    negative_points: object,
    plane: Sequence[int] | None = None,
    world_point: Sequence[float] | None = None,
    viewer_hint: str = "",
) -> LayerPrompts:
    """The prompts of ``segment`` with any Shapes (boxes) or Points (clicks) layer among them read as boxes and
    points (x, y) in the image's pixels; ``image`` an Image layer or pixels. For an image layer of more than two
    axes, the plane every layer prompt lies on (refused when there is none, or several); ``plane``: the one a
    prompt layer of two axes lies on (the caller was given it). A prompt layer of more axes than a 2D image (a
    stack's, over a projection of it) gives the prompts of one of its planes, as napari shows them: those on the
    plane shown at ``world_point`` (the viewer's ``dims.point``) when given, else those of its only plane (refused,
    naming the layers and planes, when they lie on several; ``viewer_hint``: how the caller can be given the
    viewer)."""
    image_layer = image if is_layer(image) else None
    shown = _rows_of_one_plane(image, (boxes, points, negative_points), world_point, viewer_hint)
    prompts = LayerPrompts(boxes, points, negative_points)
    planes: dict[tuple[int, ...], list[str]] = {}
    stacked = image_layer is not None and _image_axes(image_layer) > 2

    def plane_of(coords: np.ndarray | None, layer: Any) -> np.ndarray:
        if coords is None:  # a 2D prompt layer over a stack
            raise _no_plane(image_layer, f"layer '{layer.name}' has {layer.ndim} axes")
        if stacked:
            for row in coords:
                planes.setdefault(tuple(int(v) for v in np.round(row[:-2])), []).append(layer.name)
        return coords[:, -2:][:, ::-1]  # (row, column) -> (x, y)

    shapes = _prompt_layer(boxes, "boxes", "Shapes")
    if shapes is not None:
        prompts.sources.append(shapes.name)
        found = []
        for i, vertices in enumerate(shapes.data):
            if id(shapes) in shown and not shown[id(shapes)][i]:
                continue  # on another plane than the one shown
            xy = plane_of(_in_image(shapes, vertices, image_layer, plane), shapes)
            found.append((*xy.min(axis=0), *xy.max(axis=0)))
        prompts.boxes = found
    for what in ("negative_points", "points"):  # a points layer's negative clicks join the negative points read
        layer = _prompt_layer(getattr(prompts, what), what, "Points")
        if layer is None:
            continue
        prompts.sources.append(layer.name)
        coords = _in_image(layer, layer.data, image_layer, plane)
        xy = plane_of(coords, layer) if len(layer.data) else np.zeros((0, 2))
        positive = np.ones(len(xy), bool)
        features = getattr(layer, "features", None)
        if what == "points" and features is not None and POSITIVE_FEATURE in features and len(features) == len(xy):
            positive = features[POSITIVE_FEATURE].to_numpy(dtype=bool)  # the Interactive widget's prompt layer
        if id(layer) in shown:  # on the plane shown only
            xy, positive = xy[shown[id(layer)]], positive[shown[id(layer)]]
        setattr(prompts, what, [tuple(p) for p in xy[positive]])
        if not positive.all():
            prompts.negative_points = [*_as_list(prompts.negative_points), *(tuple(p) for p in xy[~positive])]
    given = [
        (what, value) for what, value in (("boxes", boxes), ("points", points), ("negative_points", negative_points))
    ]
    empty = [(what, value) for what, value in given if is_layer(value) and not len(value.data)]
    if empty and not any(_count(getattr(prompts, what)) for what, _ in given):
        said = ", ".join(
            f"layer '{layer.name}' ({what}) holds no {'shapes' if what == 'boxes' else 'points'}"
            for what, layer in empty
        )
        raise PromptsegError(f"no prompt: {said}; draw on it, or give the layer you drew on")
    if stacked:
        if not planes:
            raise _no_plane(image_layer, "the prompts are (x, y) pixels")
        if len(planes) > 1:
            names = sorted({name for layers in planes.values() for name in layers})
            where = " and ".join(", ".join(map(str, plane)) for plane in sorted(planes))
            raise PromptsegError(
                f"{', '.join(repr(n) for n in names)}: prompts on planes {where} of image layer "
                f"'{image_layer.name}'; segment one plane at a time (propagate_through_stack follows objects "
                "through the stack)"
            )
        (prompts.plane,) = planes
    return prompts


def on_shown_plane(layer: Any, coords: object, image_axes: int, world_point: Sequence[float]) -> np.ndarray:
    """Which rows of a prompt layer's data ``coords`` (N, layer.ndim) lie on the plane napari shows at
    ``world_point`` (the viewer's ``dims.point``) along the layer's leading axes an image of ``image_axes`` axes
    lacks: a stack's prompt layer over a 2D image (a projection of the stack), shown on every plane with only the
    plane's prompts over it. The one reading of the plane shown of the Interactive widget and the console."""
    coords = np.asarray(coords, float).reshape(-1, int(layer.ndim))
    extra = int(layer.ndim) - int(image_axes)
    if extra <= 0:
        return np.ones(len(coords), dtype=bool)
    here = np.asarray(layer.world_to_data(np.asarray(world_point, float)[-int(layer.ndim) :]), float)[:extra]
    return (np.round(coords[:, :extra]) == np.round(here)).all(axis=1)


def _flat_image_axes(image: object) -> int | None:
    """2 for a 2D image (a layer's, or a 2D array or pyramid: the only arrays whose axes are known without their
    channel axis)."""
    if is_layer(image):
        return 2 if _image_axes(image) == 2 else None
    if isinstance(image, (list, tuple)):  # a pyramid's levels (np.ndim of levels of unequal sizes raises)
        image = image[0] if image else None
    return 2 if image is not None and len(np.shape(image)) == 2 else None


def _rows_of_one_plane(
    image: object, given: tuple[object, ...], world_point: Sequence[float] | None, viewer_hint: str
) -> dict[int, np.ndarray]:
    """For a stack's prompt layer among ``given`` over a 2D ``image``, by the layer's ``id``: which of its shapes or
    points are read, those of one plane (:func:`layer_prompts`); every plane's were segmented on the image without
    a word. Refused, naming the layers and planes, when there is no one plane."""
    axes = _flat_image_axes(image)
    stacked = [v for v in given if is_layer(v) and axes is not None and int(v.ndim) > axes and len(v.data)]
    if not stacked:
        return {}
    names = ", ".join(repr(layer.name) for layer in stacked)
    image_name = f"2D image layer '{image.name}'" if is_layer(image) else "the 2D image"
    if world_point is not None:
        rows = {}
        for layer in stacked:
            if type(layer).__name__ == "Shapes":
                rows[id(layer)] = np.array([on_shown_plane(layer, v, axes, world_point).all() for v in layer.data])
            else:
                rows[id(layer)] = on_shown_plane(layer, layer.data, axes, world_point)
        if not any(mask.any() for mask in rows.values()):
            extra = int(stacked[0].ndim) - axes
            here = stacked[0].world_to_data(np.asarray(world_point, float)[-int(stacked[0].ndim) :])[:extra]
            raise PromptsegError(
                f"{names}: prompts over {image_name}, none on the plane the viewer shows "
                f"({', '.join(str(int(round(v))) for v in here)}); move to a plane of the prompts"
            )
        return rows
    planes = set()
    for layer in stacked:
        extra = int(layer.ndim) - axes
        for coords in layer.data if type(layer).__name__ == "Shapes" else [layer.data]:
            lead = np.round(np.asarray(coords, float).reshape(-1, int(layer.ndim))[:, :extra]).astype(int)
            planes.update(tuple(int(v) for v in row) for row in lead)
    if len(planes) > 1:
        where = " and ".join(", ".join(map(str, plane)) for plane in sorted(planes))
        raise PromptsegError(
            f"{names}: prompts on planes {where} of a stack's layer, over {image_name}, which napari shows with "
            f"each plane's prompts only: which plane? {viewer_hint + ', or d' if viewer_hint else 'D'}raw the "
            "plane's prompts on a layer of two axes"
        )
    return {}


def _count(values: object) -> int:
    """How many prompts ``values`` holds (a layer: its shapes or points; one prompt given alone counts one)."""
    if values is None:
        return 0
    if is_layer(values):
        return len(values.data)
    try:
        return int(np.asarray(values, float).size > 0)
    except (TypeError, ValueError):  # malformed: the method refuses it, naming it
        return 1


def _as_list(values: object) -> list:
    if values is None:
        return []
    array = np.asarray(values, float)
    return [tuple(array)] if array.ndim == 1 and array.size else [tuple(p) for p in array.reshape(-1, 2)]


def _no_plane(image_layer: Any, why: str) -> PromptsegError:
    shape = tuple(int(s) for s in image_layer.data.shape[: _image_axes(image_layer)])
    level = "[0]" if getattr(image_layer, "multiscale", False) else ""  # a pyramid's full resolution
    return PromptsegError(
        f"image layer '{image_layer.name}' is a stack of {int(np.prod(shape[:-2]))} planes {shape}, and {why}: "
        "which plane? Draw the prompts on a Shapes or Points layer of the stack's axes (plane, row, column), or "
        f"give the plane's pixels: segment(layer.data{level}[z], ...)"
    )


def plane_pixels(image_layer: Any, plane: Sequence[int]) -> object:
    """The pixels of one plane of a stack layer (a multiscale layer: of its full-resolution level)."""
    data = image_layer.data
    if getattr(image_layer, "multiscale", False):
        data = data[0]
    shape = data.shape[: _image_axes(image_layer)]
    for axis, index in enumerate(plane):
        if not 0 <= index < shape[axis]:
            raise PromptsegError(
                f"image layer '{image_layer.name}': the prompts lie on plane {tuple(plane)}, outside its "
                f"{shape[:-2]} planes"
            )
    return data[tuple(plane)]


def prompt_layers_on_plane(
    volume: object, plane: int, boxes: object, points: object, negative_points: object
) -> tuple[object, object, object]:
    """The seed prompts of ``propagate_through_stack`` (``plane`` of ``volume``) with any Shapes or Points layer among
    them read as boxes and points (x, y) in the stack's pixels, as :func:`layer_prompts` reads them; prompts drawn
    on another plane than ``plane`` are refused, naming it."""
    if not any(is_layer(value) for value in (boxes, points, negative_points)):
        return boxes, points, negative_points
    # an empty prompt layer is no prompt (the seed may be labels= alone)
    boxes, points, negative_points = (
        () if is_layer(value) and not len(value.data) else value for value in (boxes, points, negative_points)
    )
    if not any(is_layer(value) for value in (boxes, points, negative_points)):
        return boxes, points, negative_points
    stacked = is_layer(volume) and _image_axes(volume) > 2
    lead = None
    if stacked:  # a prompt layer of two axes lies on the seed plane (a time-lapse's earlier axes at 0)
        lead = [0] * (_image_axes(volume) - 3) + [int(plane)]
    prompts = layer_prompts(volume, boxes, points, negative_points, plane=lead)
    if stacked and prompts.plane is not None and prompts.plane[-1] != int(plane):
        raise PromptsegError(
            f"{', '.join(repr(n) for n in prompts.sources)}: prompts on plane {prompts.plane[-1]} of image layer "
            f"'{volume.name}', not on the seed plane {plane}: give plane={prompts.plane[-1]}"
        )
    return prompts.boxes, prompts.points, prompts.negative_points


def layer_placement(layer: Any, within: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Where a layer lies in napari's world: its ``scale``, ``translate``, ``rotate``, ``shear``, ``affine``,
    ``units`` and ``axis_labels``, the keyword arguments that put a result of the layer's pixels over it.

    The console functions return labels in the pixels of the image they were given (a stack layer's labels of the
    whole stack), so ``viewer.add_labels(labels, **layer_placement(layer))`` lies over ``layer`` however it is
    scaled, moved or rotated (an RGB layer's colour axis is not one of its axes). ``within``: a result's own
    placement in the image's pixels (``result.heatmap_placement``, ``probability_placement``, register's
    ``fixed_placement``: a coarser map's ``scale`` and ``translate``), laid over the layer with it:
    ``viewer.add_image(result.heatmap, **layer_placement(layer, result.heatmap_placement))``."""
    if not is_layer(layer):
        raise PromptsegError(
            f"layer_placement: {type(layer).__name__} is not a napari layer; give the layer the image came from"
        )
    out = {name: np.array(getattr(layer, name), float) for name in ("scale", "translate", "rotate", "shear")}
    out["affine"] = layer.affine
    for name in ("units", "axis_labels"):  # napari 0.5 and later
        if hasattr(layer, name):
            out[name] = getattr(layer, name)
    if within is not None:
        ndim = len(out["scale"])
        inner_scale, inner_translate = np.ones(ndim), np.zeros(ndim)
        k = len(within.get("scale", ()))  # the result's axes: the layer's last ones
        inner_scale[ndim - k :] = within.get("scale", ())
        inner_translate[ndim - k :] = within.get("translate", np.zeros(k))
        if np.any(out["shear"]):
            raise PromptsegError(
                f"layer_placement: layer '{layer.name}' is sheared; a result's placement is laid over a scaled, "
                "moved or rotated layer only"
            )
        # world = affine(rotate(scale * (inner_scale * x + inner_translate)) + translate)
        out["translate"] = out["translate"] + out["rotate"] @ (out["scale"] * inner_translate)
        out["scale"] = out["scale"] * inner_scale
    return out


# -- a layer laid over another's pixels ---------------------------------------------------------------------------
def data_to_world_matrix(layer: Any, axes: list[int]) -> np.ndarray:
    """``layer``'s data-to-world map over its data ``axes`` as a homogeneous matrix, read through napari's public
    ``data_to_world`` (scale, translate, rotate, shear and affine together)."""
    d = layer.ndim
    origin = np.asarray(layer.data_to_world(np.zeros(d)), float)
    full = np.eye(d + 1)
    full[:d, :d] = np.stack([np.asarray(layer.data_to_world(np.eye(d)[i]), float) - origin for i in range(d)], 1)
    full[:d, d] = origin
    kept = [*axes, d]
    return full[np.ix_(kept, kept)]


def level_to_layer_matrix(factors: np.ndarray) -> np.ndarray:
    """The homogeneous map from the pixels of a pyramid level ``factors`` times coarser (per axis) to the layer's
    full-resolution data coordinates: a level's pixel over the centre of the block of pixels it stands for (the
    labels' and the CLI's rule, :func:`~napari_promptseg.tiling.level_to_full`)."""
    from ..tiling import level_to_full  # torch's import: not for every reader of a layer

    factor = np.asarray(factors, float)
    matrix = np.diag([*factor, 1.0])
    matrix[:-1, -1] = level_to_full(np.zeros(len(factor)), factor)
    return matrix


@dataclass
class LabelsOnPlane:
    """A Labels layer's data and the map from an image plane's pixels to its pixels (read where the layers live, on
    napari's main thread for a widget); :meth:`resample` reads the pixels (a widget's worker)."""

    data: Any
    plane_to_labels: np.ndarray
    shape: tuple[int, int]

    def resample(self) -> np.ndarray:
        """The labels on the plane's grid (nearest: ids are never mixed); outside the labels: 0."""
        if tuple(self.data.shape) == self.shape and np.allclose(self.plane_to_labels, np.eye(3), atol=1e-6):
            return np.asarray(self.data)  # drawn on the plane itself: no resampling
        from scipy import ndimage

        # pixel centres sit on integer data coordinates in napari, as in affine_transform; a labels pixel covers half
        # a pixel each side of its centre ("grid-constant": "constant" left the first row and column of labels at
        # half the plane's resolution empty, their centres 0.25 px before the first labels pixel's)
        return ndimage.affine_transform(
            np.asarray(self.data),
            self.plane_to_labels[:2, :2],
            offset=self.plane_to_labels[:2, 2],
            output_shape=self.shape,
            order=0,
            mode="grid-constant",
            cval=0,
        )


def labels_levels(labels_layer: Any) -> tuple[list, list[int], bool]:
    """A Labels layer's 2D arrays (a multiscale layer's levels, largest first; a (1, Y, X) layer's plane), the data
    axes they are of, and whether the layer is such a single plane. Refused, naming the layer, when not 2D."""
    from ..models.preprocessing import is_single_plane

    levels = list(labels_layer.data) if getattr(labels_layer, "multiscale", False) else [labels_layer.data]
    single = is_single_plane(np.shape(levels[0]))
    if single:  # painted over a (1, Y, X) image: its plane
        levels = [level[0] for level in levels]
    if np.ndim(levels[0]) != 2:
        raise PromptsegError(
            f"labels layer '{labels_layer.name}' has {np.ndim(levels[0])} dimensions (shape {np.shape(levels[0])}); "
            "registration carries 2D labels over: pick one plane first"
        )
    return levels, ([1, 2] if single else [0, 1]), single


def labels_on_plane(
    labels_layer: Any,
    image_layer: Any,
    factors: Sequence[float],
    shape: Sequence[int],
    image_axes: list[int] | None = None,
) -> LabelsOnPlane:
    """How ``labels_layer`` lies over a plane of ``image_layer`` (``shape`` rows and columns, ``factors`` coarser than
    its full resolution: a pyramid level registered), through the two layers' data-to-world maps: labels painted on
    the image at any scale, offset or affine of their own land where napari shows them. ``image_axes``: the image
    layer's data axes of its rows and columns (default: its last two). A pyramid of labels (an OME-Zarr's) is read at
    its coarsest level still as fine as the plane (its full resolution, e.g. a slide's 10 GB, was read to be
    resampled onto a plane of 2048 px). The one reading of the Registration widget's moving labels and of
    ``RegistrationResult.warp_labels`` given a layer."""
    levels, labels_axes, _ = labels_levels(labels_layer)
    axes = list(image_axes) if image_axes is not None else [int(image_layer.ndim) - 2, int(image_layer.ndim) - 1]
    plane_to_world = data_to_world_matrix(image_layer, axes) @ level_to_layer_matrix(np.asarray(factors, float))
    plane_pixel = np.linalg.norm(plane_to_world[:2, :2], axis=0).min()  # the plane's finer pixel side, in the world
    labels_to_world = data_to_world_matrix(labels_layer, labels_axes)
    for data in reversed(levels):  # coarsest first; the full resolution at the latest
        level_to_world = labels_to_world @ level_to_layer_matrix(np.divide(levels[0].shape, data.shape))
        if np.linalg.norm(level_to_world[:2, :2], axis=0).max() <= plane_pixel * (1 + 1e-6) or data is levels[0]:
            break
    plane_to_labels = np.linalg.inv(level_to_world) @ plane_to_world
    return LabelsOnPlane(data, plane_to_labels, (int(shape[0]), int(shape[1])))
