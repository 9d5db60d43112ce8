"""The Interactive widget: boxes (Shapes) and positive/negative clicks (Points) -> live preview -> commit to Labels;
"find all like these"; and "propagate through stack" for 3D images.

The widget only gathers inputs and moves results between layers; segmentation is
:func:`napari_promptseg.methods.interactive.segment_prompts` (and ``find_all_like``, ``propagate_through_stack``)
with a model from :func:`napari_promptseg.models.load_segmenter`, run in a thread worker by
:class:`.._common.TaskRunner`.
"""

from __future__ import annotations

import weakref

import napari
import napari.layers
import numpy as np
from napari.utils.notifications import show_info
from qtpy.QtCore import QEvent
from qtpy.QtWidgets import QWidget

from ...errors import PromptsegError
from .._common import (
    ROLE_KEY,
    TaskRunner,
    debounce_timer,
    load_triton_safely,
    unproxied,
)
from .actions import NewLayerActions
from .commit import CommitActions
from .geometry import (
    POSITIVE,
    PlaneGeometry,
    boxes_elsewhere,
    gather_prompts,
    labels_geometry,
    plane_geometry,
    plane_source,
)
from .labels import holds_channels, target_misfit
from .layout import (
    CLEAR_KEY,
    COMMIT_KEY,
    NO_IMAGE,
    PLACEMENT_EVENTS,
    PLANE_DELAY_MS,
    POLARITY_COLOURS,
    PREVIEW_DELAY_MS,
    TARGET_IMAGE_KEY,
    TOGGLE_KEY,
    UNDO_KEY,
    VIEW_3D,
    build_controls,
)
from .preview import Preview, PreviewActions


def _mark_polarity(points: napari.layers.Points) -> None:
    """Give a user's own points layer the polarity feature (and its colours): its clicks so far count as positive.
    Its features of its own stay (they were replaced by the polarity alone: a CSV's names lost)."""
    features = points.features.copy()
    features[POSITIVE] = np.ones(len(points.data), dtype=bool)
    points.features = features
    points.face_color_cycle = POLARITY_COLOURS
    points.face_color = POSITIVE


class InteractiveWidget(PreviewActions, CommitActions, NewLayerActions, QWidget):
    """Boxes and clicks -> live preview -> commit new objects into a Labels layer (undo with Ctrl+Z)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        load_triton_safely()
        self.viewer = napari_viewer = unproxied(napari_viewer)
        self.runner = TaskRunner(self)
        self.preview: Preview | None = None
        self._preview_layer: napari.layers.Labels | None = None
        self._version = 0  # bumped by every prompt edit; a preview computed for an older version is stale
        # what Ctrl+Z on a prompt layer undoes, newest last: each commit's target and its undo history's newest change
        # right after the commit
        self._commits: list[tuple[napari.layers.Labels, object]] = []
        self._commit_after_preview = False
        # a commit's own preview (Shift-C before the preview came) is committed unless these changed meanwhile: its
        # plane's prompts (then the preview of the prompts as they are now is), or the image; not the plane shown
        self._plane_edits: dict[tuple, int] = {}  # prompt edits by the plane shown when made (``current_step``)
        # the planes (``current_step``) whose commit waits for its preview: one each, all done (the next plane's
        # took the waiting one's place in the queue, and that plane's object was never committed)
        self._waiting_commits: set[tuple] = set()
        self._removing_committed = False  # a commit takes its prompts: no edit of the prompts of another plane
        self._image_changes = 0
        self._shown_warnings: set[str] = set()
        self._connected: dict[str, napari.layers.Layer] = {}
        self._image_connected: napari.layers.Image | None = None
        self._last_plane: tuple | None = None
        self._boxes_hint_waits = False  # another Shapes layer edited while a task ran: looked at when it ends
        # the viewer's keys while the widget is open: key -> (this widget's function, what the viewer had before)
        self._viewer_keys: dict[str, tuple] = {}
        self._preview_timer = debounce_timer(self, PREVIEW_DELAY_MS, self._run_preview)
        self._plane_timer = debounce_timer(self, PLANE_DELAY_MS, self._on_plane_settled)
        build_controls(self)
        self.runner.idle.connect(self._on_runner_idle)
        self.runner.cancelling.connect(self._drop_waiting_commit)
        self.viewer.dims.events.current_step.connect(self._on_dims_changed)
        self.viewer.dims.events.ndisplay.connect(self._on_dims_changed)  # back in 2D: a plane to embed again
        self._on_image_changed(self.image_picker.layer())
        self._on_prompt_layer_changed("shapes", self.shapes_picker.layer())
        self._on_prompt_layer_changed("points", self.points_picker.layer())
        # boxes drawn on a Shapes layer other than the boxes layer: said (ignored without a word, they were)
        self.viewer.layers.events.inserted.connect(self._on_layer_inserted)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        for layer in self.viewer.layers:
            self._listen_for_boxes(layer)
        self._bind_viewer_keys()

    # -- state read from the controls --------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.model_combo.model_name

    @property
    def device(self) -> str:
        return self.device_combo.currentText()

    @property
    def positive_clicks(self) -> bool:
        return self.positive_radio.isChecked()

    @property
    def object_size(self) -> float | None:
        return float(self.object_size_spin.value()) or None

    @property
    def is_idle(self) -> bool:
        """No computation running or about to start (tests and scripts wait on this)."""
        return not (self.runner.busy or self._preview_timer.isActive() or self._plane_timer.isActive())

    def _channel_axis(self) -> int | None:
        return self.channel_combo.channel_axis

    def _channels(self) -> list[int] | None:
        return self.channel_combo.channels()

    def _geometry(self) -> tuple[napari.layers.Image, PlaneGeometry]:
        image = self.image_picker.layer()
        if image is None:
            raise PromptsegError(NO_IMAGE)
        return image, plane_geometry(self.viewer, image, self._channel_axis())

    def _on_runner_idle(self) -> None:
        self._waiting_commits.clear()  # none waits any more (one whose image went or changed is dropped unsaid here)
        if self.image_picker.layer() is None:
            self.runner.widget.note(NO_IMAGE)
        elif self._boxes_hint_waits:
            self._note_boxes_elsewhere()

    def _drop_waiting_commit(self) -> None:
        # Cancel stops a commit waiting for its preview too: it stayed asked for, and the preview of the next prompt
        # edit committed every prompt on the plane, unasked
        self._commit_after_preview = False
        self._waiting_commits.clear()

    def _no_image(self) -> bool:
        """No image layer is a normal state (an empty viewer, the image just removed): said in the status line."""
        if self.image_picker.layer() is not None:
            return False
        self._version += 1  # a preview still on its way belongs to the image that is gone
        self._image_changes += 1
        self._clear_preview()
        self._commit_after_preview = False
        self.runner.widget.note(NO_IMAGE)
        return True

    # -- reactions ---------------------------------------------------------------------------------------------
    def _on_image_changed(self, layer) -> None:
        # the image's pixels replaced in place (layer.data = ...) make its preview stale as a new image does
        old = self._image_connected
        if old is not None:
            old.events.data.disconnect(self._on_image_data_changed)
            for name in PLACEMENT_EVENTS:
                getattr(old.events, name).disconnect(self._on_image_options_changed)
        self._image_connected = layer
        if layer is not None:
            layer.events.data.connect(self._on_image_data_changed)
            # the image moved (a pixel size set, a rotation): the preview, made for its old place, is stale too
            for name in PLACEMENT_EVENTS:
                getattr(layer.events, name).connect(self._on_image_options_changed)
        self.channel_combo.offer([layer], keep=False)  # another image: its axis 0 may hold planes, not channels
        self._on_image_options_changed()

    def _on_image_data_changed(self, *_) -> None:
        # new pixels may have other axes: a 2D image kept 'axis 0 (2 channels)', and every preview was refused
        self.channel_combo.offer([self._image_connected], keep=True)
        self._on_image_options_changed()

    def _on_image_options_changed(self, *_) -> None:
        self._version += 1  # a preview still on its way was made from the image (or channels) as they were
        self._image_changes += 1
        self._commit_after_preview = False  # a commit asked for that preview is not one for the new image
        self._waiting_commits.clear()  # nor one waiting for its preview (a second Shift-C would wait for it in vain)
        self._clear_preview()
        self._last_plane = None
        if self.runner.closed:  # looked at again when the widget is opened again (_on_reopened)
            return
        if self._no_image():
            return
        self._fit_target()
        if self._has_prompt_layers():
            self._schedule_preview()
        elif self.auto_embed_check.isChecked():
            self._auto_embed()

    def _fit_target(self) -> None:
        """Another image (or channel axis) than the target Labels layer's: the target becomes a layer this widget
        made for that image, else a new layer. The target made for the first image stayed, and every commit on the
        next image was refused as 'shape does not match'; or, the images being of one size, was committed among the
        first image's objects."""
        target = self.target_picker.layer()
        try:
            image, geom = self._geometry()
            geom = labels_geometry(plane_source(image, geom))  # a whole slide's targets lie on its labels level
        except PromptsegError:
            return  # e.g. 3D view: decided when the user is back in 2D and commits
        fits = target is not None and target_misfit(target, geom, over_channels=holds_channels(target, geom)) is None
        if fits and _made_for(target) in (None, image.unique_id):
            return  # the user's own layer that fits, or the one made for this image
        made = (
            layer
            for layer in self.viewer.layers
            if isinstance(layer, napari.layers.Labels)
            and _made_for(layer) == image.unique_id
            and target_misfit(layer, geom) is None
        )
        fitting = next(made, None)
        self.target_picker.set_layer(fitting)
        if target is not None:
            now = f"'{fitting.name}'" if fitting is not None else "a new layer"
            show_info(f"commit target: {now} for image '{geom.image_name}' ('{target.name}' is another image's)")

    def _has_prompt_layers(self) -> bool:
        shapes, points = self.shapes_picker.layer(), self.points_picker.layer()
        return bool((shapes is not None and len(shapes.data)) or (points is not None and len(points.data)))

    def _on_prompt_layer_changed(self, role: str, layer) -> None:
        old = self._connected.pop(role, None)
        if old is not None:
            old.events.data.disconnect(self._on_prompts_edited)
            old.events.features.disconnect(self._on_prompts_edited)
            old.bind_key(UNDO_KEY, None)
        if layer is not None:
            layer.events.data.connect(self._on_prompts_edited)
            # a click's polarity set in the features (napari's features table, the console) is an edit too: the
            # preview of the click as it was stayed, and was committed
            layer.events.features.connect(self._on_prompts_edited)
            self._bind_undo_key(layer)
            self._connected[role] = layer
            if role == "points":
                self._apply_polarity_default(layer)
        self._on_prompts_edited()
        if role == "shapes":
            self._note_boxes_elsewhere()

    def _bind_undo_key(self, layer) -> None:
        # the keymap would otherwise keep the whole widget alive after it is closed
        me = weakref.ref(self)

        def undo(_layer) -> None:
            widget = me()
            if widget is not None and not widget.runner.closed:
                widget.undo_commit()

        # the prompt layer is the active one after a commit (to draw on): Ctrl+Z there undoes the commit (a Labels
        # layer's Ctrl+Z stays napari's own undo, so this is the prompt layers' only)
        layer.bind_key(UNDO_KEY, undo, overwrite=True)

    # -- the viewer's keys while the widget is open --------------------------------------------------------------
    def _bind_viewer_keys(self) -> None:
        """Commit, clear the prompts and toggle the clicks' polarity from the keyboard whichever layer is selected
        (bound to a prompt layer, Shift-C did nothing with the image or the committed labels selected). The
        selected layer's own keys come first in napari: the boxes layer's T stays its path tool."""
        me = weakref.ref(self)  # the viewer's keymap must not keep a closed widget alive
        for key, action in ((COMMIT_KEY, "commit"), (CLEAR_KEY, "clear_prompts"), (TOGGLE_KEY, "toggle_polarity")):

            def press(_viewer, action: str = action) -> None:
                widget = me()
                if widget is not None and not widget.runner.closed:
                    getattr(widget, action)()

            self._viewer_keys[key] = (press, self.viewer.bind_key(key, press, overwrite=True))

    def _unbind_viewer_keys(self) -> None:
        """The viewer's keys as they were before the widget took them (another plugin's, e.g. micro-sam's)."""
        for key, (ours, before) in self._viewer_keys.items():
            now = self.viewer.bind_key(key, before, overwrite=True)
            if now is not ours:  # bound by someone else since: theirs stays
                self.viewer.bind_key(key, now, overwrite=True)
        self._viewer_keys.clear()

    def event(self, event: QEvent) -> bool:
        # the runner's event filter saw it first: ``runner.closed`` says whether the dock was closed or opened
        if event.type() == QEvent.Type.ParentChange:
            if self.runner.closed and self._viewer_keys:
                self._on_closed()
            elif not self.runner.closed and not self._viewer_keys:
                self._on_reopened()
        return super().event(event)

    def _on_closed(self) -> None:
        """The dock closed: the keys go back to the viewer, nothing waits to run (a closed widget reacted to every
        prompt edit and image change: a line drawn on its boxes layer raised an error notification), and its preview
        is cleared (it stayed over the image, looking like labels, that no widget would commit or update)."""
        self._unbind_viewer_keys()
        self._preview_timer.stop()
        self._plane_timer.stop()
        self._commit_after_preview = False
        self._version += 1  # a preview still on its way is not shown
        self._clear_preview()

    def _on_reopened(self) -> None:
        """The dock opened again: the keys are the widget's, and the image and prompts as they are now are previewed
        (or embedded)."""
        self._bind_viewer_keys()
        self._on_image_options_changed()

    def _on_layer_inserted(self, event) -> None:
        self._listen_for_boxes(event.value)

    def _listen_for_boxes(self, layer: napari.layers.Layer) -> None:
        if isinstance(layer, napari.layers.Shapes):
            layer.events.data.connect(self._on_shapes_edited)

    def _on_layer_removed(self, event) -> None:
        if isinstance(event.value, napari.layers.Shapes):
            event.value.events.data.disconnect(self._on_shapes_edited)

    def _on_shapes_edited(self, event) -> None:
        # only another layer's edits: the boxes layer emptied by a commit kept its "done" line
        if event.source is not self.shapes_picker.layer():
            self._note_boxes_elsewhere()

    def _note_boxes_elsewhere(self) -> None:
        """While the prompt layers have nothing on this plane: rectangles on another Shapes layer are pointed to."""
        shapes, points = self.shapes_picker.layer(), self.points_picker.layer()
        self._boxes_hint_waits = self.runner.busy  # e.g. drawn while the image is embedded
        if (
            self.runner.closed
            or self.runner.busy
            or self.image_picker.layer() is None
            or self.viewer.dims.ndisplay != 2
        ):
            return
        try:
            image, geom = self._geometry()
            if gather_prompts(self.viewer, image, geom, shapes, points):
                return  # the preview's to show
            hint = boxes_elsewhere(self.viewer, image, geom, shapes)
        except PromptsegError:
            return  # the preview says what is wrong with the image or the prompts
        if hint is not None:
            self.runner.widget.note(hint)

    def _on_prompts_edited(self, event=None) -> None:
        self._version += 1
        # boxes drawn on the next plane while a commit waits leave the prompts it commits as they were
        if not self._removing_committed:
            step = tuple(self.viewer.dims.current_step)
            self._plane_edits[step] = self._plane_edits.get(step, 0) + 1
        self._schedule_preview()

    def _schedule_preview(self) -> None:
        self._preview_timer.start()

    def _on_dims_changed(self, event=None) -> None:
        self._plane_timer.start()

    def _on_plane_settled(self) -> None:
        if self.runner.closed:
            return
        try:
            _, geom = self._geometry()
        except PromptsegError:
            if self.viewer.dims.ndisplay != 2:  # nothing to do until the user comes back to 2D: said quietly
                self.runner.widget.note(VIEW_3D)
                # back in 2D, the plane is previewed (or embedded) again: a prompt or a setting changed in 3D left
                # the preview stale, and none came on the plane shown before
                self._last_plane = None
            return
        plane = self._plane_key(geom)
        if plane == self._last_plane:
            return
        self._last_plane = plane
        if self._has_prompt_layers():
            self._version += 1
            self._schedule_preview()
        elif self.auto_embed_check.isChecked():
            self._auto_embed()

    def _plane_key(self, geom: PlaneGeometry) -> tuple:
        """What of the viewer's position a preview (or embedding) is for: the image's plane shown, and the position
        along the axes the prompt layers have beyond the image's (a stack's prompt layers over a 2D image show, and
        give, the prompts of one plane: moving to another plane left its prompts unpreviewed)."""
        image = self.image_picker.layer()
        layers = [layer for layer in (self.shapes_picker.layer(), self.points_picker.layer()) if layer is not None]
        deepest = max((int(layer.ndim) for layer in layers), default=0)
        step = tuple(self.viewer.dims.current_step)
        beyond = step[len(step) - deepest : len(step) - int(image.ndim)] if image is not None else ()
        return geom.image_name, geom.index, beyond

    # -- polarity ----------------------------------------------------------------------------------------------
    def _on_polarity_changed(self, *_) -> None:
        points = self.points_picker.layer()
        if points is not None:
            self._apply_polarity_default(points)

    def _apply_polarity_default(self, points: napari.layers.Points) -> None:
        if POSITIVE not in points.features and not self.positive_clicks:
            # a user's own points layer counts every click positive: 'negative' chosen (radio, or the layer picked
            # while it was) left the next clicks positive, unlike what the widget showed
            _mark_polarity(points)
        if POSITIVE in points.features:
            # the layer's other features keep their defaults: napari refuses defaults that leave out a column
            defaults = points.feature_defaults.copy()
            defaults[POSITIVE] = self.positive_clicks
            points.feature_defaults = defaults

    def toggle_polarity(self) -> None:
        """Switch new clicks between positive and negative; selected clicks flip too."""
        points = self.points_picker.layer()
        (self.negative_radio if self.positive_clicks else self.positive_radio).setChecked(True)
        if points is None:
            return
        if POSITIVE not in points.features:
            _mark_polarity(points)
            self._apply_polarity_default(points)
        selected = sorted(points.selected_data)
        if selected:
            features = points.features.copy()
            features.loc[selected, POSITIVE] = ~features.loc[selected, POSITIVE].astype(bool)
            points.features = features
            points.refresh_colors()
            self._on_prompts_edited()
        self.viewer.status = f"new clicks are {'positive' if self.positive_clicks else 'negative'}"

    # -- layers the widget makes -------------------------------------------------------------------------------
    def _keep_active_layer(self):
        """Adding a layer makes it the active one; the user's drawing tool must stay selected."""
        active = self.viewer.layers.selection.active

        def restore() -> None:
            if active is not None and active in self.viewer.layers:
                self.viewer.layers.selection.active = active

        return restore


def _made_for(layer: napari.layers.Layer) -> str | None:
    """The unique id of the image a target layer was made for; None for a layer this widget did not make."""
    return layer.metadata.get(TARGET_IMAGE_KEY) if layer.metadata.get(ROLE_KEY) == "target" else None
