"""The Interactive widget's actions that make new layers: the prompt layers (a Shapes layer for boxes, a Points layer
for clicks), and Labels layers from the displayed plane or stack: "find all like these"
(:func:`napari_promptseg.methods.instances.find_all_like`) and "propagate through stack"
(:func:`napari_promptseg.methods.volume.propagate_through_stack`). A mixin of :class:`.widget.InteractiveWidget`:
it uses the widget's pickers, settings and task runner."""

from __future__ import annotations

import napari
import napari.layers
import numpy as np
from napari.utils.notifications import show_info

from ...errors import PromptsegError
from ...methods.instances import InstanceResult, find_all_like
from ...methods.volume import PropagationResult, plane_list, plane_word, propagate_through_stack
from ...tiling import box_object_size
from .._common import (
    OBJECT_SIZE_KEY,
    notify_once,
    notify_warning,
    stack_axis_of,
    task_segmenter,
)
from .geometry import (
    POSITIVE,
    LevelCrop,
    PlaneGeometry,
    PlaneSource,
    check_prompt_boxes,
    check_prompt_clicks,
    extract_volume,
    gather_prompts,
    held_axes,
    labels_geometry,
    plane_source,
    resample_crop,
)
from .labels import commit_to_labels, seed_plane
from .layout import BOXES_NAME, CLEAR_KEY, COMMIT_KEY, POINTS_NAME, POLARITY_COLOURS, TOGGLE_KEY

#: a Labels layer's metadata key saying its propagation was cancelled part-way, and which planes it lacks
PARTIAL_KEY = "promptseg_partial"


class NewLayerActions:
    """Find all and propagate: results go to new Labels layers over the image, never into the user's layers."""

    def find_all(self) -> None:
        """Every object like the boxed examples on the displayed plane -> a new Labels layer (nothing else changes)."""
        if self._no_image():
            return
        try:
            image, geom = self._geometry()
            prompts = gather_prompts(self.viewer, image, geom, self.shapes_picker.layer(), self.points_picker.layer())
            if not prompts.boxes:
                raise PromptsegError("draw boxes around a few example objects on this plane first")
            check_prompt_boxes(prompts, self.shapes_picker.layer(), geom)
            source = plane_source(image, geom)
            # a whole slide (or a stack of whole-slide planes): its objects go to a layer on its labels level, as its
            # commits do
            placed = labels_geometry(source)
            channels = self._channels()
            model, weights = self.model_combo.checked_choice()
        except PromptsegError as exc:
            self.runner.refuse(exc, "find all")
            return
        device, normalize, name = self.device, self.normalize_combo.currentText(), image.name
        boxes, object_size = prompts.boxes, self.object_size
        clicks = len(prompts.positive) + len(prompts.negative)
        if clicks:  # said, as `segment --find-all` refuses --point: the user may think they steer the search
            notify_warning(
                f"learns from the boxed examples only: the {clicks} click(s) on this plane are not used", "find all"
            )

        levels_read: list[float] = []  # the pyramid level's factor the plane was read at (1: full resolution)

        def task(progress, cancel) -> InstanceResult:
            progress(0.0, f"loading {model}")
            segmenter = task_segmenter(progress, cancel, model, device, weights)
            if source.whole_slide and source.too_large(segmenter.input_size, object_size or box_object_size(boxes)):
                raise _whole_slide_refusal(image, geom, source, boxes, segmenter.input_size, object_size)

            def on_level(plane, crop, **level) -> InstanceResult:
                levels_read.append(crop)
                return find_all_like(plane, crop.to_level(boxes, 4), segmenter=segmenter, **level)

            # the whole plane: at full resolution; a whole slide's at the boxes' level, its labels there
            result, _ = source.segment_at_level(
                on_level,
                segmenter.input_size,
                object_size,
                box_object_size(boxes),
                channels=channels,
                normalize=normalize,
                name=f"image layer '{name}'",
                progress=progress,
                cancel=cancel,
            )
            return result

        def done(result: InstanceResult) -> None:
            target = self._add_result_layer(np.zeros(placed.labels_shape, dtype=np.uint32), placed, f"{name} find-all")
            labels, offset = result.labels, (0, 0)
            if source.whole_slide:  # found on the boxes' level: onto the labels level's plane
                to, shape = source.labels_level()
                labels, at = resample_crop(labels, levels_read[-1], to, shape)
                offset = at.offset
            commit_to_labels(target, labels, placed, offset)
            if result.scale is not None and result.scale.object_size is not None:
                # the scale a propagation seeded by this layer decodes its objects at (full-resolution pixels)
                target.metadata[OBJECT_SIZE_KEY] = result.scale.object_size * levels_read[-1].factor
            for message in result.warnings:
                notify_once(message, self._shown_warnings)
            scale = result.scale
            where = f" at scale {scale.scale:.2f} in {scale.tiles} tile(s)" if scale is not None else ""
            self.runner.widget.set_summary(
                f"found {len(result.scores)} object(s) like the {len(boxes)} example(s){where} -> '{target.name}'"
            )

        self.runner.submit(
            "find-all", f"finding all like the {len(boxes)} example(s)", task, done, inputs=(image,), queue=True
        )

    def propagate(self) -> None:
        """Carry the objects on the displayed plane of a 3D image through the stack -> a new Labels layer: those
        prompted there (boxes, refined by the clicks, and positive clicks outside every box: the preview's
        objects), or those of the seed Labels layer on that plane (a find-all result, the committed labels...)."""
        if self._no_image():
            return
        try:
            image, geom = self._geometry()
            volume, z_axis = extract_volume(image, geom)
            # a stack of whole-slide planes: its objects go to a layer on its labels level, as its commits do, and a
            # seed layer lies there too
            source = plane_source(image, geom)
            placed = labels_geometry(source)
            seed_layer = self.seed_picker.layer()
            prompts = gather_prompts(self.viewer, image, geom, self.shapes_picker.layer(), self.points_picker.layer())
            if seed_layer is not None:
                seed, seed_size = seed_plane(seed_layer, placed), seed_layer.metadata.get(OBJECT_SIZE_KEY)
                unused = len(prompts.boxes) + len(prompts.positive) + len(prompts.negative)
            else:
                seed, seed_size, unused = None, None, 0
                if not prompts.boxes and not prompts.positive:
                    raise PromptsegError(
                        "draw boxes around the objects on this plane first (or click on them), or choose a Labels "
                        "layer whose objects on this plane seed the propagation"
                    )
                check_prompt_boxes(prompts, self.shapes_picker.layer(), geom)
                check_prompt_clicks(prompts, self.points_picker.layer(), geom)
            channels = self._channels()
            model, weights = self.model_combo.checked_choice()
        except PromptsegError as exc:
            self.runner.refuse(exc, "propagate")
            return
        if unused:  # said, as propagate_through_stack refuses prompts beside labels: the user may think they count
            notify_warning(
                f"carries the objects of labels layer '{seed_layer.name}': the {unused} prompt(s) on this plane are "
                "not used",
                "propagate",
            )
        device, normalize, name = self.device, self.normalize_combo.currentText(), image.name
        plane = geom.index[z_axis]
        stack_axis = stack_axis_of(image, z_axis)  # a time-lapse's planes are its frames, in the summary's words
        # the seed's objects decoded at the scale its method found them at, as the CLI does (find-all's nuclei on a
        # DSB stack: F1 0.42 at their masks' scale, 0.69 at the seed's)
        object_size = self.object_size or seed_size
        stop_iou = float(self.stop_iou_spin.value())
        boxes, positive, negative = (prompts.boxes, prompts.positive, prompts.negative) if seed is None else ((),) * 3
        # a grey volume's first axis is planes by the user's word (its channel axis left at 'none', propagation asked
        # for): not the core's caution that 2-4 planes might be channels, whose advice (channel axis 0) is refused
        axes = "zyx" if geom.channel_axis is None and not image.rgb else None

        def task(progress, cancel) -> PropagationResult:
            progress(0.0, f"loading {model}")
            return propagate_through_stack(
                volume,
                plane,
                boxes=boxes,
                points=positive,
                negative_points=negative,
                labels=seed,
                segmenter=task_segmenter(progress, cancel, model, device, weights),
                object_size=object_size,
                channel_axis=-1 if geom.channel_axis is not None else None,
                channels=channels,
                normalize=normalize,
                stop_iou=stop_iou,
                name=f"image layer '{name}'",
                axes=axes,
                stack_axis=stack_axis,
                progress=progress,
                cancel=cancel,
            )

        held = held_axes(geom, z_axis)  # a time-lapse of volumes' time point shown (T of T, Z, Y, X)

        def done(result: PropagationResult) -> None:
            axes = [z_axis, geom.row_axis, geom.col_axis]  # the result's axes, in labels space
            labels = np.transpose(_on_grid(result, source), np.argsort(axes))
            if held:  # the volume shown, in labels of the image's shape (as find-all's), the others empty
                volume_labels, labels = labels, np.zeros(placed.labels_shape, np.uint32)
                labels[tuple(geom.index[a] if a in held else slice(None) for a in range(labels.ndim))] = volume_labels
            word = plane_word(stack_axis)
            # a cancelled run's planes done: said partial in the layer's name, its metadata and the summary
            partial = f"partial: {plane_list(result.not_reached, stack_axis)} not segmented" if result.partial else ""
            layer = self._add_result_layer(labels, placed, f"{name} propagated" + (" (partial)" if partial else ""))
            if partial:
                layer.metadata[PARTIAL_KEY] = partial
            for message in result.warnings:
                notify_once(message, self._shown_warnings)
            spans = ", ".join(f"{k}: {word}s {a}-{b}" for k, (a, b) in result.extents.items())
            said = f"{result.objects} object(s) propagated from {word} {plane} ({spans})"
            said += "".join(f" at {_held_position(image, a, geom.index[a])}" for a in held)
            said = f"cancelled: {said}, {partial}" if partial else said
            self.runner.widget.set_summary(f"{said} -> '{layer.name}'")

        what = "the prompted object(s)" if seed is None else f"the objects of '{seed_layer.name}'"
        self.runner.submit(
            "propagate",
            f"propagating {what} through '{name}'",
            task,
            done,
            inputs=(image,),
            queue=True,
            on_partial=done,  # a cancel keeps the planes done, as a layer said to be partial
        )

    def new_prompt_layers(self) -> None:
        """Add a Shapes layer (rectangle tool on) and a Points layer with positive/negative colours."""
        if self._no_image():
            return
        try:
            image, geom = self._geometry()
        except PromptsegError as exc:
            self.runner.refuse(exc, "new prompt layers")
            return
        ndim = len(geom.labels_shape)
        h, w = geom.plane_shape
        size = max(3.0, max(h, w) / 80)  # data pixels: napari scales it with the layer
        common = {"ndim": ndim, "scale": geom.scale, "translate": geom.translate, "units": geom.units}
        if geom.affine is not None:
            common["affine"] = geom.affine
        if geom.axis_labels is not None:  # a time-lapse's t, as the image's
            common["axis_labels"] = geom.axis_labels
        points = napari.layers.Points(
            None,
            name=POINTS_NAME,
            features={POSITIVE: np.zeros(0, dtype=bool)},
            feature_defaults={POSITIVE: self.positive_clicks},
            face_color=POSITIVE,
            face_color_cycle=POLARITY_COLOURS,
            border_color="white",
            size=size,
            **common,
        )
        shapes = napari.layers.Shapes(
            None,
            name=BOXES_NAME,
            edge_color="yellow",
            face_color="transparent",
            edge_width=max(1.0, size / 4),
            **common,
        )
        self.viewer.add_layer(points)
        self.viewer.add_layer(shapes)
        self.shapes_picker.set_layer(shapes)
        self.points_picker.set_layer(points)
        shapes.mode = "add_rectangle"
        self.viewer.layers.selection.active = shapes
        show_info(
            f"draw boxes on '{shapes.name}' (R), click on '{points.name}' (P; {TOGGLE_KEY} toggles positive/negative);"
            f" {COMMIT_KEY} commits, {CLEAR_KEY} clears the prompts"
        )

    def _add_result_layer(self, data: np.ndarray, geom: PlaneGeometry, name: str) -> napari.layers.Labels:
        """A new Labels layer over the image (results never overwrite the user's layers)."""
        layer = napari.layers.Labels(
            data,
            name=name,
            scale=geom.scale,
            translate=geom.translate,
            units=geom.units,
            **({"affine": geom.affine} if geom.affine is not None else {}),
            **({"axis_labels": geom.axis_labels} if geom.axis_labels is not None else {}),
        )
        image = self.image_picker.layer()
        above = self.viewer.layers.index(image) + 1 if image in self.viewer.layers else len(self.viewer.layers)
        self.viewer.layers.insert(above, layer)
        return layer


def _whole_slide_refusal(
    image: napari.layers.Image,
    geom: PlaneGeometry,
    source: PlaneSource,
    boxes: list,
    input_size: int,
    object_size: float | None,
) -> PromptsegError:
    """Find all on a whole slide whose level for the boxes' objects is too large to hold as a Labels layer: what to
    run instead (the CLI reads that level tile by tile), with the plane shown and the boxes drawn."""
    h, w = geom.plane_shape
    lh, lw = source.level_shape(input_size, object_size or box_object_size(boxes))
    # a stack of whole-slide planes: the plane shown, which the command needs
    plane = "".join(f" --plane {geom.index[a]}" for a in geom.fixed_axes[-1:])
    boxed = " ".join("--box " + " ".join(f"{v:.0f}" for v in box) for box in boxes)
    path = image.metadata.get("path") or "SLIDE"
    return PromptsegError(
        f"'{image.name}': objects like these are found on its {lh} x {lw} px level, too large here: "
        f"`promptseg segment --find-all{plane}`",
        details=f"image layer '{image.name}' is a whole slide ({h} x {w} px): every object like the boxed ones is "
        f"sought on its {lh} x {lw} px level, too large for a Labels layer here. `promptseg segment {path} "
        f"--find-all{plane} {boxed} -o OUT` (the boxes drawn, full-resolution pixels) reads that level tile by "
        "tile and writes labels napari opens. Larger objects (boxes around objects over "
        f"~{_fitting_size(source, input_size)} px) are found here, on a coarser level",
    )


def _fitting_size(source: PlaneSource, input_size: int) -> int:
    """About the smallest object size (full-resolution pixels) whose level of a whole slide fits a Labels layer."""
    size = 8.0
    while source.too_large(input_size, size) and size < max(source.geom.plane_shape):
        size *= 1.25
    return int(round(size))


def _on_grid(result: PropagationResult, source: PlaneSource) -> np.ndarray:
    """A propagation's (Z, Y, X) labels on the grid of the layer that shows them: the image's (full resolution),
    or, for a stack of whole-slide planes, its labels level (:meth:`.geometry.PlaneSource.labels_level`), each plane
    resampled from the level the objects were carried at (the full resolution is never made)."""
    if not source.whole_slide:
        return np.asarray(result.labels)
    level_labels = result.labels if result.level_labels is None else result.level_labels
    to, shape = source.labels_level()
    carried = LevelCrop(result.level_factors)
    return np.stack([resample_crop(np.asarray(plane), carried, to, shape)[0] for plane in level_labels])


def _held_position(image: napari.layers.Image, axis: int, index: int) -> str:
    """Where a held axis (labels space) stood, in a summary's words: "time point 1" on a time-lapse's T (by its
    axis label), else "axis 0 = 1"."""
    return f"time point {index}" if stack_axis_of(image, axis) == "t" else f"axis {axis} = {index}"
