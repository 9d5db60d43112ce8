"""Text prompt widget: type "nuclei" or "gland" and get a Labels layer (plus the boxes as a Shapes layer).

Thin: it gathers the image layer, prompt and options on the main thread, runs
:func:`napari_promptseg.methods.text.segment_text` in a :class:`._common.TaskRunner` worker (its body:
:mod:`.text_results`) with progress and cancel,
and adds *new* layers: Labels (one id per object), Shapes (a rectangle per object, with its phrase and score) and,
on the CLIPSeg and trained routes, the heatmap. It shows which route answered (a trained text model, GroundingDINO,
CLIPSeg or the reference library) and why. Existing layers are never modified. Models trained in this session
(Train text model widget) are listed under "text model"; any model directory can be browsed to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import napari
import napari.layers
import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ..errors import PromptsegError
from ..methods.defaults import BOX_THRESHOLD, HEATMAP_THRESHOLD, TEXT_THRESHOLD
from ..methods.library import DEFAULT_MIN_SIMILARITY, DEFAULT_TOP_K
from ..methods.prompt_templates import LEVELS, PromptAttributes, expand_prompt
from ..methods.text import ROUTES, split_phrases
from ..methods.text.answers import text_working_scale
from ..methods.text.trained_channels import recorded_channels
from ._common import (
    ChannelAxisBox,
    LayerPicker,
    SaveUndo,
    SegmenterBox,
    TaskRunner,
    controls_layout,
    exemplar_layers,
    fraction_box,
    layer_level,
    layer_pixels,
    load_triton_safely,
    placement,
    placement_over,
    plane_shape,
    stack_axis_of,
    submit_save_exemplar,
    unproxied,
    whole_image_level,
)
from ._common.text_route import WEIGHTS_ANSWER, WEIGHTS_ROUTES, TextWeightsField, route_hint, text_route_box
from ._common.time_points import (
    TimePoint,
    at_time_point,
    is_time_lapse,
    shown_time_point,
    time_point_words,
    write_time_point,
)
from .library_panel import LibraryPanel
from .oneshot import is_stack, read_planes
from .text_channels import read_for_text_model
from .text_results import TextOutput, load_text_route, run_text

if TYPE_CHECKING:
    from ..io.library import LibraryEntry

BOX_COLOUR = "yellow"
#: longest prompt a layer name carries: a pasted description made a name of a thousand characters in the layer list
LAYER_PROMPT_CHARS = 40


def layer_prompt(prompt: str) -> str:
    """The prompt as the new layers' names give it: whole when short, else its start and '…'."""
    prompt = " ".join(prompt.split())
    return prompt if len(prompt) <= LAYER_PROMPT_CHARS else prompt[: LAYER_PROMPT_CHARS - 1].rstrip() + "…"


class TextPromptWidget(QWidget):
    """Image layer + text prompt -> new Labels + Shapes (boxes) layers, with the route that answered."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        load_triton_safely()
        self.viewer = napari_viewer = unproxied(napari_viewer)
        self.runner = TaskRunner(self)
        # empty when its image leaves the viewer: it took the next image, which Run segmented and Add exemplar
        # paired with labels drawn on the removed one, unsaid
        self.image = LayerPicker(
            napari_viewer,
            napari.layers.Image,
            none_text="(choose an image layer)",
            empty_when_removed=True,
            restart_when_none_left=True,
        )
        # a multichannel (C, Y, X) layer, as the CLI's --channel-axis and --channels
        self.channel_axis = ChannelAxisBox()
        # another image: its first axis may hold planes, not channels ('none' chosen again)
        self.image.layer_changed.connect(self._offer_channel_axis)
        self._offer_channel_axis()
        self.prompt = QLineEdit()
        self.prompt.setPlaceholderText("e.g. nuclei   or   gland, stroma")
        self.prompt.returnPressed.connect(self.run)
        self.route = text_route_box(ROUTES, self._update_route_options)  # and after every run
        # a model trained with `promptseg train-text` or the Train text model widget (directory)
        self.text_model = QComboBox()
        self.text_model.setEditable(True)
        self.text_model.setToolTip("a trained text model directory; empty = none")
        self.text_model.lineEdit().setPlaceholderText("none (train one in 'Train text model')")
        self.browse_model = QPushButton("…")
        self.browse_model.setMaximumWidth(30)
        self.browse_model.setToolTip("choose a trained text model directory")
        self.browse_model.clicked.connect(self._browse_model)
        self._list_trained_models()
        # GroundingDINO's or CLIPSeg's own weights (the CLI's --text-weights): a fine-tuned CLIPSeg, a copied model
        self.text_weights = TextWeightsField()
        from .train_text import on_model_trained

        on_model_trained(self._list_trained_models)
        self.template = QComboBox()
        self.template.addItems(list(LEVELS))
        self.template.setCurrentText("p1")
        self.template.setToolTip("medvlsm prompt template: p1 class name, p2 + shape, p3 + colour, p7 + description")
        self.shape = QLineEdit()
        self.shape.setPlaceholderText("optional, e.g. round")
        self.colour = QLineEdit()
        self.colour.setPlaceholderText("optional, e.g. pink")
        # templates p7-p9 describe the class (the CLI's --description, PromptAttributes.description)
        self.description = QLineEdit()
        self.description.setPlaceholderText("optional (p7-p9), e.g. a projecting growth of tissue")
        self.expanded = QLabel()
        self.expanded.setWordWrap(True)
        self.box_threshold = fraction_box(BOX_THRESHOLD, "GroundingDINO: keep boxes scoring at least this")
        self.text_threshold = fraction_box(TEXT_THRESHOLD, "GroundingDINO: phrase tokens scoring at least this")
        self.heatmap_threshold = fraction_box(
            HEATMAP_THRESHOLD, "CLIPSeg: pixels above this probability (medvlsm uses 0.5)"
        )
        self.refine = QCheckBox("refine CLIPSeg regions with the segmenter")
        self.refine.setChecked(True)
        self.library = QLineEdit()
        self.library.setPlaceholderText("default user library")
        self.library.setToolTip("The reference library: the library route answers from it, 'Add exemplar' adds to it")
        # as the CLI's --model: the Interactive widget's list (a model whose weights are missing downloads them)
        self.model = SegmenterBox("the promptable segmenter that cuts out what the route found (not the trained route)")
        # the library route's choice of exemplars, as the CLI's --top-k and --min-similarity
        self.top_k = QSpinBox()
        self.top_k.setRange(1, 50)
        self.top_k.setValue(DEFAULT_TOP_K)
        self.top_k.setToolTip("library: the best-matching exemplars ensembled (as many as match, up to this)")
        self.min_similarity = fraction_box(
            DEFAULT_MIN_SIMILARITY,
            "library: the lowest similarity of the prompt to an entry's name, description or synonyms that answers "
            "(exact and plural names count 1.0)",
            low=-1.0,
        )
        # the obvious path to a library entry: the image above + a Labels layer marking the structure, under a name
        self.exemplar_labels = LayerPicker(napari_viewer, napari.layers.Labels, none_text="(choose a Labels layer)")
        self.exemplar_labels.setToolTip("Labels layer marking the structure in the image above (non-zero = it)")
        self.exemplar_name = QLineEdit()
        self.exemplar_name.setPlaceholderText("name, default: the prompt (e.g. gland)")
        # as the One-shot widget's library description and `promptseg library add --description`: prompts match it too
        self.exemplar_description = QLineEdit()
        self.exemplar_description.setPlaceholderText("optional; synonyms separated by commas")
        self.exemplar_description.setToolTip(
            "words typed prompts are matched to besides the name (e.g. 'neuron, cell body'): the entry answers them too"
        )
        # three states: auto (partly checked, the default: many instances when the labels hold several objects, as
        # the One-shot widget and `promptseg library add` decide), on, off (one region)
        self.exemplar_instances = QCheckBox()
        self.exemplar_instances.setTristate(True)
        self.exemplar_instances.setCheckState(Qt.CheckState.PartiallyChecked)
        self.exemplar_instances.setToolTip(
            "many instances (e.g. nuclei): a prompt finds every object like the labelled ones. Partly checked: "
            "decided by the labels (several objects = many instances); checked: always; unchecked: one region"
        )
        self.exemplar_instances.stateChanged.connect(self._update_instances_text)
        self._update_instances_text()
        # as the One-shot widget's "reference labels only some objects" (`promptseg library add --partial-labels`)
        self.exemplar_partial = QCheckBox("exemplar labels only some objects")
        self.exemplar_partial.setToolTip(
            "ticked: the image's unlabelled objects are not background (e.g. 10 of its 300 nuclei labelled); "
            "background is learned only near the labelled objects, and a prompt finds every object like them (many "
            "instances). Unticked, every unlabelled pixel of the image is taught as background: label all its objects"
        )
        self.add_exemplar_button = QPushButton("Add exemplar from these layers")
        self.add_exemplar_button.setToolTip(
            "Save the image and the Labels layer as a named library exemplar: typed prompts are matched to its name"
        )
        self.add_exemplar_button.clicked.connect(self.add_exemplar)
        self.show_boxes = QCheckBox("show boxes")
        self.show_boxes.setChecked(True)
        self.run_button = QPushButton("Segment")
        self.run_button.clicked.connect(self.run)
        # which route answered and why: the shared panel's summary, cleared when a run starts (a failed run never
        # shows the previous run's route)
        self.route_label = self.runner.widget.summary
        for edit in (self.prompt, self.shape, self.colour, self.description):
            edit.textChanged.connect(self._update_expanded)
        self.template.currentTextChanged.connect(self._update_expanded)

        form = QFormLayout()
        form.addRow("image", self.image)
        self.channel_axis.add_rows(form)
        form.addRow("prompt", self.prompt)
        form.addRow("route", self.route)
        model_row = QHBoxLayout()
        model_row.addWidget(self.text_model, 1)
        model_row.addWidget(self.browse_model)
        form.addRow("text model", model_row)
        form.addRow("text weights", self.text_weights)
        form.addRow("template", self.template)
        form.addRow("shape", self.shape)
        form.addRow("colour", self.colour)
        form.addRow("description", self.description)
        form.addRow("model sees", self.expanded)
        form.addRow("box threshold", self.box_threshold)
        form.addRow("text threshold", self.text_threshold)
        form.addRow("heatmap threshold", self.heatmap_threshold)
        form.addRow("library", self.library)
        form.addRow("exemplars (top k)", self.top_k)
        form.addRow("min similarity", self.min_similarity)
        self.model.add_rows(form)
        self._form = form
        exemplar = QFormLayout()
        exemplar.addRow("exemplar labels", self.exemplar_labels)
        exemplar.addRow("exemplar name", self.exemplar_name)
        exemplar.addRow("exemplar description", self.exemplar_description)
        exemplar.addRow(self.exemplar_instances)
        exemplar.addRow(self.exemplar_partial)
        # the library the field names: listed, an entry removed, exported and imported (`promptseg library ...`)
        self.library_panel = LibraryPanel(self.runner, self.library)
        self.save_undo = SaveUndo(self.runner, after=self.library_panel.show_library)  # the last add taken back
        self.undo_save_button = self.save_undo.button
        add_row = QHBoxLayout()
        add_row.addWidget(self.add_exemplar_button, 1)
        add_row.addWidget(self.undo_save_button)
        exemplar.addRow(add_row)
        exemplar.addRow("library entries", self.library_panel)
        layout = controls_layout(self, self.runner, self.run_button)
        layout.addLayout(form)
        layout.addLayout(exemplar)
        layout.addWidget(self.refine)
        layout.addWidget(self.show_boxes)
        layout.addStretch(1)
        self.last_output: TextOutput | None = None
        self.last_exemplar: LibraryEntry | None = None  # the library entry "Add exemplar" wrote last
        self.text_model.currentTextChanged.connect(self._update_route_options)
        self.text_weights.edit.textChanged.connect(self._update_route_options)
        self._update_expanded()
        self._update_route_options()

    @property
    def is_idle(self) -> bool:
        return not self.runner.busy

    def _offer_channel_axis(self, *_) -> None:
        self.channel_axis.offer([self.image.layer()], keep=False)

    def _list_trained_models(self) -> None:
        """Offer the models trained in this session (newest first), keeping what the user typed or chose."""
        from .train_text import TRAINED_MODELS

        current = self.text_model.currentText()
        self.text_model.blockSignals(True)
        self.text_model.clear()
        self.text_model.addItems(["", *TRAINED_MODELS])
        self.text_model.setCurrentText(current)
        self.text_model.blockSignals(False)

    def _browse_model(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Trained text model directory")
        if path:
            self.text_model.setCurrentText(path)

    def _update_route_options(self, *_) -> None:
        """Show only the options the route that will answer uses (templates and thresholds are GroundingDINO's and
        CLIPSeg's; top k the library's), so nothing suggests a model that is not there. The library field stays:
        "Add exemplar" writes there whatever route answers (hidden, it took an exemplar to a path no longer shown)."""
        answer, tooltip = route_hint(
            self.route.currentText(),
            text_model=self.text_model.currentText().strip(),
            trained=True,
            text_weights=self.text_weights.text,
        )
        self.route.setToolTip(tooltip)
        weights = answer == WEIGHTS_ANSWER  # GroundingDINO's or CLIPSeg's: both routes' settings
        vlm = weights or answer in ("groundingdino", "clipseg", "trained")
        self.effective_route = answer
        for control, shown in (
            (self.template, vlm),
            (self.shape, vlm),
            (self.colour, vlm),
            (self.description, vlm),
            (self.expanded, vlm),
            (self.box_threshold, weights or answer == "groundingdino"),
            (self.text_threshold, weights or answer == "groundingdino"),
            (self.heatmap_threshold, weights or answer in ("clipseg", "trained")),
            # the weights of the vision-language routes, which route auto loads too when they are given
            (self.text_weights, self.route.currentText() in WEIGHTS_ROUTES),
            (self.top_k, answer == "library"),
            (self.min_similarity, answer == "library"),
        ):
            control.setVisible(shown)
            label = self._form.labelForField(control)
            if label is not None:
                label.setVisible(shown)
        self.refine.setVisible(weights or answer == "clipseg")

    @property
    def exemplar_mode(self) -> bool | None:
        """The exemplar's ``instances``: None (auto, from the labels), True or False."""
        state = self.exemplar_instances.checkState()
        if state == Qt.CheckState.PartiallyChecked:
            return None
        return state == Qt.CheckState.Checked

    def _update_instances_text(self, *_) -> None:
        mode = self.exemplar_mode
        self.exemplar_instances.setText(
            "many instances: auto (several labelled objects = find every one)"
            if mode is None
            else "many instances (e.g. nuclei: find every one)"
            if mode
            else "many instances: off (one region)"
        )

    def add_exemplar(self) -> bool:
        """Save the chosen image layer + Labels layer as a named exemplar of the library (default: the user's). The
        layers are read and the entry written in the worker (a slide's or a stack's pixels read here froze napari);
        when done, the entry is :attr:`last_exemplar`. Returns whether the task was taken."""
        try:
            image_layer, labels_layer = self.image.layer(), self.exemplar_labels.layer()
            if image_layer is None or labels_layer is None:
                raise PromptsegError("choose the image and a Labels layer that marks the structure in it")
            name = self.exemplar_name.text().strip() or self.prompt.text().strip()
            if not name:
                raise PromptsegError("type a name for the exemplar (or a prompt): what the structure is called")
            if not self.exemplar_name.text().strip() and len(phrases := split_phrases(name)) > 1:
                # an entry named 'gland, stroma' answers neither 'gland' nor 'stroma' (a prompt's phrases are matched
                # one by one), and its labels mark one of them
                raise PromptsegError(
                    f"the prompt names {len(phrases)} structures ({', '.join(repr(p) for p in phrases)}); type the "
                    "exemplar name of the one its labels mark"
                )
            # the image's channels, as a run reads them
            channel_axis, channels = self.channel_axis.checked(image_layer, f"image layer '{image_layer.name}'")
        except PromptsegError as exc:
            self.runner.refuse(exc, "add exemplar")
            return False

        def saved(entry) -> None:
            self.last_exemplar = entry
            self.library_panel.show_library(entry.root)  # the list has the entry just added

        return submit_save_exemplar(
            self.runner,
            exemplar_layers(self.viewer, image_layer, labels_layer, channel_axis, channels),
            "labels",
            self.library.text().strip() or None,
            task_name="exemplar",
            title=f"add exemplar '{name}'",
            saved=saved,
            advice_fix=f"remove it and add it again with '{self.exemplar_partial.text()}' ticked",
            name=name,
            description=self.exemplar_description.text(),
            scale=tuple(float(s) for s in image_layer.scale[-2:]),  # the layer's pixel size
            instances=self.exemplar_mode,
            partial=self.exemplar_partial.isChecked(),
            undo=self.save_undo,
        )

    def undo_last_save(self) -> bool:
        """Take what the last "Add exemplar" added out of the library it went to (:class:`SaveUndo`). Returns
        whether the task was taken."""
        return self.save_undo.undo()

    def _attributes(self) -> PromptAttributes:
        return PromptAttributes(
            shape=self.shape.text().strip() or None,
            colour=self.colour.text().strip() or None,
            description=self.description.text().strip() or None,
        )

    def _update_expanded(self, *_) -> None:
        try:
            phrases = split_phrases(self.prompt.text())
            texts = [expand_prompt(p, self.template.currentText(), self._attributes()) for p in phrases]
            self.expanded.setText(" . ".join(texts))
        except PromptsegError:
            self.expanded.setText("")

    def _recorded_channels(self) -> dict | None:
        """The channels the trained text model chosen was trained on (None: gray or colour, or no such model)."""
        route = self.route.currentText()
        source = self.text_model.currentText().strip() or (
            self.text_weights.weights() if route in WEIGHTS_ROUTES else None
        )
        return recorded_channels(source) if route in ("auto", "trained") and source else None

    def run(self) -> None:
        layer = self.image.layer()
        prompt = self.prompt.text().strip()
        try:
            if layer is None:
                raise PromptsegError("choose an image layer to segment")
            split_phrases(prompt)  # an empty prompt is refused here, before any model loads
            channel_axis, channels = self.channel_axis.checked(layer, f"image layer '{layer.name}'")
            # a pyramid is read at the level a whole-image method needs; the layers come back at its pixel size.
            # Only its shape is looked at here: the worker reads it (a stack or a slide read here froze napari)
            data, factors = whole_image_level(layer)
            data, channel_axis, channels, read_with, channel_layers = read_for_text_model(
                self.viewer, layer, data, channel_axis, channels, self._recorded_channels()
            )
            pixels, time_point = layer_pixels(layer), None
            if not channel_layers and is_time_lapse(layer, channel_axis):
                # the volume of the time point shown, as the Interactive widget and the CLI's --time T
                time_point = shown_time_point(self.viewer, layer)
                data, factors = data[time_point.index], np.asarray(factors)[1:]
                pixels = at_time_point(pixels, time_point.index)
            stacked = is_stack(data, layer.rgb, f"image layer '{layer.name}'", channel_axis)
            # the layer's own channel axis, which its results leave out (none when its file's channel layers are read)
            layer_channel_axis = None if channel_layers else channel_axis
            model, weights = self.model.checked_choice()
        except PromptsegError as exc:
            self.runner.refuse(exc, "text prompt")
            return
        options = {
            "route": self.route.currentText(),
            "text_model": self.text_model.currentText().strip(),
            # hidden on the other routes, the field is not read (what it still holds refused their runs)
            "text_weights": self.text_weights.weights() if self.route.currentText() in WEIGHTS_ROUTES else None,
            "library": self.library.text().strip(),
            "template": self.template.currentText(),
            "attributes": self._attributes(),
            "box_threshold": self.box_threshold.value(),
            "text_threshold": self.text_threshold.value(),
            "heatmap_threshold": self.heatmap_threshold.value(),
            "refine": self.refine.isChecked(),
            "top_k": self.top_k.value(),
            "min_similarity": self.min_similarity.value(),
            "model": model,
            "weights": weights,
            "channel_axis": channel_axis,
            "channels": channels,
            "name": layer.name,
        }
        layer_name = layer.name

        # a time-lapse's planes are its frames, in the progress, warnings and summary (a (C, T, Y, X) layer's along 1)
        planes_axis = 1 if layer_channel_axis == 0 or time_point is not None else 0
        stack_axis = stack_axis_of(layer, planes_axis) if stacked else None

        def task(progress, cancel) -> tuple[TextOutput, np.ndarray]:
            route = load_text_route(options, progress, cancel)
            level, level_factors = data, factors
            if pixels.multiscale and route.route == "library":
                # as the CLI and the console: the level the library's many-instances entries' objects need
                plane = plane_shape(pixels.data[0], pixels.rgb)
                scale = text_working_scale(
                    plane,
                    prompt,
                    route,
                    options["segmenter"].input_size,
                    top_k=options["top_k"],
                    min_similarity=options["min_similarity"],
                )
                level, level_factors = layer_level(pixels, scale * max(plane))
            progress(0.0, f"reading '{layer_name}'")
            planes = read_planes(level, stacked, cancel, channel_axis)
            output = run_text(
                planes,
                prompt,
                options=options,
                progress=progress,
                cancel=cancel,
                # the level's objects are this much smaller than the library exemplars' (saved at full resolution)
                factor=float(np.asarray(level_factors)[-1]),
                stacked=stacked,
                route=route,
                stack_axis=stack_axis,
            )
            output.image_channels = read_with  # the layer's reading, which its planes' results do not know
            return output, level_factors

        def done(result: tuple[TextOutput, np.ndarray]) -> None:
            output, level_factors = result
            self.last_output = output
            self._add_layers(output, layer, prompt, stacked, level_factors, layer_channel_axis, time_point)

        # named by its start: a pasted description made a status line (and activity-dock entry) of a paragraph
        self.runner.submit("text", f"text prompt {layer_prompt(prompt)!r}", task, done, inputs=(layer,))

    def _add_layers(
        self,
        output: TextOutput,
        layer: napari.layers.Image,
        prompt: str,
        stacked: bool,
        factors: np.ndarray | None = None,
        channel_axis: int | None = None,
        time_point: TimePoint | None = None,
    ) -> None:
        """``factors``: the downsampling of each axis of the pyramid level that was segmented (default none);
        ``channel_axis``: ``layer``'s, which its labels do not have; ``time_point``: the one of a (T, Z, Y, X)
        ``layer`` segmented (``factors`` then of its volume's axes), written into the labels of its earlier runs
        (:func:`write_time_point`)."""
        from napari.utils.notifications import show_info, show_warning

        kw = placement(layer, 3 if stacked else 2, factors, channel_axis)
        name = f"{layer.name} text: {layer_prompt(prompt)}"
        at = ""
        if time_point is not None:
            volume_kw = placement_over(layer, [1, 2, 3], None if factors is None else np.r_[factors])
            kw = placement(layer, 4, None if factors is None else np.r_[1.0, factors])
            labels_layer, others = write_time_point(self.viewer, name, name, output.labels, time_point, kw)
            name, at = labels_layer.name, f"\nat {time_point_words(time_point, others)} -> '{labels_layer.name}'"
            if time_point.caution:  # a (C, Z, Y, X) layer whose channel axis was not chosen, maybe
                output.warnings.append(time_point.caution)
                at += f"\nwarning: {time_point.caution}"
        else:
            # napari's ' [1]' of a name taken (a rerun): the run's heatmap and boxes carry it too, to be told whose
            name = self.viewer.add_labels(output.labels, name=name, **kw).name
        heatmaps = [r.heatmap for r in output.results]
        if all(h is not None for h in heatmaps):
            heat = np.stack(heatmaps) if stacked else heatmaps[0]
            # a time point's heatmap over its volume, named after it (the labels layer holds every time point)
            heat_name = f"{name} heatmap" + (f" (time point {time_point.index})" if time_point is not None else "")
            heat_kw = volume_kw if time_point is not None else kw
            self.viewer.add_image(heat, name=heat_name, colormap="magma", opacity=0.5, visible=False, **heat_kw)
        self._add_boxes(output, f"{name} boxes", kw, time_point)
        self.runner.widget.set_summary(output.summary + at)
        show_info(output.route_text)
        for warning in dict.fromkeys(output.warnings):
            show_warning(warning)

    def _add_boxes(self, output: TextOutput, name: str, kw: dict, time_point: TimePoint | None = None) -> None:
        # on the time point's volume (a time-lapse's), on each plane (a stack's)
        rectangles, phrases, scores = output.box_corners(() if time_point is None else (time_point.index,))
        if not self.show_boxes.isChecked() or not rectangles:
            return
        self.viewer.add_shapes(
            rectangles,
            shape_type="rectangle",
            name=name,
            edge_color=BOX_COLOUR,
            face_color="transparent",
            edge_width=2,
            features={"phrase": phrases, "score": scores},
            text={"string": "{phrase} {score}", "color": BOX_COLOUR, "anchor": "upper_left", "size": 9},
            **kw,
        )
