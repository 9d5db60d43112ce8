"""The Interactive widget's preview: the objects the prompts on the displayed plane make, computed in the background
as the user draws (and the embedding of a plane computed ahead of the first prompt), shown in the preview Labels
layer and kept for the commit. A mixin of :class:`.widget.InteractiveWidget`: it uses the widget's pickers, settings,
version counters and task runner."""

from __future__ import annotations

import time
from dataclasses import dataclass

import napari
import napari.layers
import numpy as np
from napari.utils.notifications import show_warning

from ...errors import PromptsegError
from ...methods.interactive import SegmentationResult, segment_prompts
from ...models.preprocessing import as_channels_last
from ...tiling import box_object_size
from .._common import ROLE_KEY, is_preview, notify_once, task_segmenter
from .geometry import (
    LevelCrop,
    PlaneGeometry,
    PlanePrompts,
    check_prompt_boxes,
    check_prompt_clicks,
    gather_prompts,
    labels_geometry,
    level_geometry,
    plane_source,
    prompt_bounds,
    resample_crop,
)
from .layout import PREVIEW_NAME, VIEW_3D


@dataclass
class Preview:
    """A preview computed for the prompts of one plane: what a commit writes, and which prompts it removes."""

    geom: PlaneGeometry  # the grid a commit target lies on (a whole slide's: its labels level)
    labels: np.ndarray  # (H, W): the plane, or a whole slide's crop on its labels level
    version: int
    prompts: PlanePrompts
    shapes: napari.layers.Shapes | None
    points: napari.layers.Points | None
    offset: tuple[int, int] = (0, 0)  # where ``labels`` start on the target's plane (row, col)
    whole_slide: bool = False  # its target lies on a whole slide's labels level, not on the image's own grid
    #: objects previewed that cover no pixel centre of that labels level (smaller than its pixels): not committed
    lost: int = 0
    labels_factor: float = 1.0  # how many times coarser than the image the labels level is


class PreviewActions:
    """The live preview and the embedding ahead of it."""

    def _show_preview(self, geom: PlaneGeometry, labels: np.ndarray) -> None:
        data = labels.reshape(geom.preview_shape)
        layer = self._preview_layer
        if layer is None or layer not in self.viewer.layers:
            layer = next((ly for ly in self.viewer.layers if is_preview(ly)), None)
        if layer is not None and layer.ndim != data.ndim:
            self.viewer.layers.remove(layer)
            layer = None
        if layer is None:
            restore = self._keep_active_layer()
            kwargs = {"affine": geom.affine} if geom.affine is not None else {}
            if geom.axis_labels is not None:  # a time-lapse's t, as the image's and its result layers'
                kwargs["axis_labels"] = geom.axis_labels
            layer = napari.layers.Labels(
                data,
                name=PREVIEW_NAME,
                scale=geom.scale,
                translate=geom.preview_translate,
                units=geom.units,
                opacity=0.6,
                metadata={ROLE_KEY: "preview"},
                **kwargs,
            )
            image = self.image_picker.layer()
            above = self.viewer.layers.index(image) + 1 if image in self.viewer.layers else len(self.viewer.layers)
            self.viewer.layers.insert(above, layer)
            restore()
        else:
            layer.scale = geom.scale
            layer.translate = geom.preview_translate
            layer.units = geom.units  # a preview reused from an image in other units (pixels beside µm)
            # the image's rotate/shear/affine too: a preview reused from an unrotated image lay off a rotated one
            layer.affine = geom.affine if geom.affine is not None else np.eye(data.ndim + 1)
            # and its axis labels: a preview reused from a time-lapse kept t, y, x over an image of napari's own
            layer.axis_labels = geom.axis_labels or tuple(str(i) for i in range(-data.ndim, 0))
            layer.data = data
            image = self.image_picker.layer()
            if image in self.viewer.layers and self.viewer.layers.index(layer) < self.viewer.layers.index(image):
                # made for an image lower in the list: the preview of this one lay under its pixels, unseen
                self.viewer.layers.move(self.viewer.layers.index(layer), self.viewer.layers.index(image) + 1)
        self._preview_layer = layer

    def _clear_preview(self) -> None:
        self.preview = None
        layer = self._preview_layer
        if layer is not None and layer in self.viewer.layers and layer.data.any():
            layer.data = np.zeros_like(layer.data)

    # -- the embedding and the preview's computation -------------------------------------------------------------
    def _auto_embed(self) -> None:
        """The embedding a change of image or plane starts. A 3D view has no plane to embed: said in the status
        line, not as an error (opening the widget on a volume shown in 3D raised two error notifications)."""
        if self.viewer.dims.ndisplay != 2:
            self.runner.widget.note(VIEW_3D)
            return
        self.compute_embedding()

    def compute_embedding(self) -> None:
        """Encode the displayed plane now, so the first prompt previews in a fraction of a second."""
        if self._no_image():
            return
        try:
            image, geom = self._geometry()
            source = plane_source(image, geom)
            channels = self._channels()
            model, weights = self.model_combo.checked_choice()
        except PromptsegError as exc:
            self.runner.refuse(exc, "embedding", once=True)
            return
        device, normalize, name = self.device, self.normalize_combo.currentText(), image.name
        self._last_plane = self._plane_key(geom)

        def task(progress, cancel) -> float | None:
            progress(0.0, f"loading {model}")
            segmenter = task_segmenter(progress, cancel, model, device, weights)
            if source.whole_slide and source.too_large(segmenter.input_size):
                return None  # a whole slide's coarsest level is too large: each box's surroundings are encoded
            progress(0.3, f"encoding '{name}' with {model}")
            t0 = time.perf_counter()
            plane, channel_axis, _ = source.read(segmenter.input_size, None)
            # the same array segment_prompts will build, so the model's content-hash cache serves the previews
            hwc = as_channels_last(plane, channel_axis=channel_axis, channels=channels, name=f"image layer '{name}'")
            segmenter.embed(hwc, normalize=normalize, name=f"image layer '{name}'")
            return time.perf_counter() - t0

        def done(seconds: float | None) -> None:
            if seconds is None:
                self.runner.widget.set_message(
                    f"'{name}' is a whole slide too large to encode whole: draw a box, its surroundings are encoded"
                )
                return
            self.runner.widget.set_message(f"embedding of '{name}' ready ({seconds:.2f} s)")

        self.runner.submit("embed", f"embedding '{name}'", task, done, queue=True, repeat=True, once=True)

    def _prompts_left(self, image: napari.layers.Image, geom: PlaneGeometry) -> bool:
        """Whether the prompt layers hold a prompt on ``geom``'s plane now (when that cannot be told: True)."""
        try:
            prompts = gather_prompts(self.viewer, image, geom, self.shapes_picker.layer(), self.points_picker.layer())
        except PromptsegError:
            return True
        return bool(prompts)

    def _run_preview(self, for_commit: bool = False) -> bool:
        """The preview of the prompts on the plane shown; ``for_commit``: a commit's own, committed when it comes
        (even once the user has moved to another plane) rather than shown only while its plane still is. Returns
        whether a preview was started."""
        if self.runner.closed or self._no_image():  # a closed widget's prompt layers are the user's alone
            return False
        shapes, points = self.shapes_picker.layer(), self.points_picker.layer()
        if not self._has_prompt_layers():  # nothing to preview: not even a 3D view is worth an error
            self._clear_preview()
            self._commit_after_preview = False
            if for_commit:  # e.g. Shift-C again right after a commit took the prompts
                show_warning("nothing to commit: draw a box or click a positive point on this plane")
            return False
        if self.viewer.dims.ndisplay != 2 and not for_commit:
            # a prompt or a setting changed in a 3D view: said quietly (an error notification it was), and previewed
            # once back in 2D (the plane shown before is no longer taken as previewed)
            self._clear_preview()
            self._last_plane = None
            self.runner.widget.note(VIEW_3D)
            return False
        try:
            image, geom = self._geometry()
            prompts = gather_prompts(self.viewer, image, geom, shapes, points)
            if not prompts:
                self._clear_preview()
                self._commit_after_preview = False
                if for_commit:
                    show_warning("nothing to commit: draw a box or click a positive point on this plane")
                return False
            check_prompt_boxes(prompts, shapes, geom)
            check_prompt_clicks(prompts, points, geom)
            source = plane_source(image, geom)
            channels = self._channels()
            model, weights = self.model_combo.checked_choice()
        except PromptsegError as exc:
            self._clear_preview()
            self._commit_after_preview = False
            self.runner.refuse(exc, "preview", once=not for_commit)
            return False
        device, normalize, name = self.device, self.normalize_combo.currentText(), image.name
        version, object_size = self._version, self.object_size
        step = tuple(self.viewer.dims.current_step)
        edits, image_changes = self._plane_edits.get(step, 0), self._image_changes
        target_geom = labels_geometry(source)

        def task(progress, cancel) -> tuple[SegmentationResult, LevelCrop | None]:
            segmenter = task_segmenter(progress, cancel, model, device, weights)

            def at(plane: np.ndarray, crop: LevelCrop, **level) -> SegmentationResult:
                return segment_prompts(
                    plane,
                    segmenter,
                    boxes=crop.to_level(prompts.boxes, 4),
                    positive_points=crop.to_level(prompts.positive, 2),
                    negative_points=crop.to_level(prompts.negative, 2),
                    **level,
                )

            return source.segment_at_level(
                at,
                segmenter.input_size,
                object_size,
                box_object_size(np.array(prompts.boxes)) if prompts.boxes else None,
                prompt_bounds(prompts),
                channels=channels,
                normalize=normalize,
                name=f"image layer '{name}'",
                progress=progress,
                cancel=cancel,
            )

        def done(value: tuple[SegmentationResult, LevelCrop | None]) -> None:
            result, crop = value
            shown_now = version == self._version  # else the prompts, the image or the plane shown changed meanwhile
            if for_commit:
                self._waiting_commits.discard(step)
            edited = for_commit and (edits, image_changes) != (self._plane_edits.get(step, 0), self._image_changes)
            if edited and image_changes == self._image_changes and not self._prompts_left(image, geom):
                # every prompt cleared since (Shift-C, then Shift-X at once, to start the next object): what the
                # commit was asked for is committed (it took the cleared plane for the prompts to commit, and
                # committed nothing, without a word)
                edited = False
            if edited:
                # prompts edited since the commit was asked: the preview of the prompts as they are now is committed
                # (none when the image changed: that preview would be of other pixels)
                self._commit_after_preview = image_changes == self._image_changes
                if not self._commit_after_preview:  # the commit asked for is not done: said, not silently dropped
                    show_warning(
                        f"nothing committed: image '{name}' (or its channels or placement) changed while the preview "
                        "to commit was computed; commit again (Shift-C) once the preview is shown"
                    )
                return
            if not (shown_now or for_commit):
                return  # the preview for the newer prompts or plane is on its way
            for message in result.warnings:
                notify_once(message, self._shown_warnings)
            if crop is None:
                preview = Preview(geom, result.labels, version, prompts, shapes, points)
                shown = geom
            else:  # a whole slide: shown on its crop of the level segmented, committed on the labels level
                labels, where = resample_crop(result.labels, crop, *source.labels_level())
                # on a large slide's coarse labels level (32x on a 130k px slide) a nucleus can fall between its
                # pixel centres: the commit said only "nothing to commit ... wait for the preview" of one shown
                lost = len(np.setdiff1d(np.unique(result.labels), np.unique(labels)))
                preview = Preview(
                    target_geom, labels, version, prompts, shapes, points, where.offset, True, lost, where.factor
                )
                shown = level_geometry(geom, crop, result.labels.shape)
            if shown_now:
                self.preview = preview
                self._show_preview(shown, result.labels)
                n = int(result.labels.max())
                seconds = sum(result.timings.values())
                self.runner.widget.set_message(f"preview: {n} object(s) in {seconds:.2f} s")
            if for_commit:
                self._commit_preview(preview)
            elif self._commit_after_preview:
                self._commit_after_preview = False
                self.commit()

        def failed(exc: BaseException) -> None:
            self._commit_after_preview = False
            if for_commit:
                self._waiting_commits.discard(step)
            if version == self._version:
                self._clear_preview()

        if for_commit:  # its own key, its plane's: the previews and commits of the next plane do not replace it
            return self.runner.submit(
                f"commit {step}", "preview to commit", task, done, failed, inputs=(image,), queue=True
            )
        # no inputs: the version check above drops a preview of pixels or prompts that changed, without an error
        return self.runner.submit("preview", "preview", task, done, failed, queue=True, repeat=True, once=True)
