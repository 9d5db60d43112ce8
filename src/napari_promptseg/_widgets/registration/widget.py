"""The registration widget itself: its controls and a run (inputs read from the layers, :func:`register` and the
result layers' data in the worker); :mod:`.layers` adds the result layers on the main thread."""

from __future__ import annotations

import napari
import napari.layers
import numpy as np
from napari.utils.notifications import show_info
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLineEdit,
    QPushButton,
    QWidget,
)

from ...errors import PromptsegError
from ...methods.defaults import BOX_THRESHOLD, FIELD_SMOOTHNESS, HEATMAP_THRESHOLD, PAIR_SIMILARITY, TEXT_THRESHOLD
from ...methods.registration import (
    DEFAULT_METHOD,
    METHODS,
    RegistrationOptions,
    RegistrationResult,
    register,
    resolve_method,
    text_prompt_options,
    user_options,
)
from ...methods.registration.options import level_record
from ...methods.text import PROMPT_ROUTES
from .._common import (
    AdvancedSection,
    ChannelAxisBox,
    LayerPicker,
    SegmenterBox,
    TaskRunner,
    _levels,
    available_devices,
    controls_layout,
    fraction_box,
    load_triton_safely,
    offers_channel_axis,
    plane_shape,
    task_segmenter,
    unproxied,
)
from .._common.text_route import (
    TEXT_WEIGHTS_FIELD,
    WEIGHTS_ANSWER,
    WEIGHTS_ROUTES,
    TextWeightsField,
    route_hint,
    text_route_box,
)
from .layers import ResultLayers, points_look
from .planes import _labels_on_plane, _landmarks, _plane, _read_plane, layer_channel_axis, spatial_axes
from .results import _results_to_show, _Shown
from .shapes import moving_shapes

REGISTER_SHARE = 0.95


def _same_pixels(a: napari.layers.Layer, b: napari.layers.Layer) -> bool:
    """Whether two layers show one array (one object, or views of the same memory alike): nothing is read."""
    x, y = _levels(a)[0], _levels(b)[0]
    if x is y:
        return True
    if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)):
        return False
    same_start = x.__array_interface__["data"][0] == y.__array_interface__["data"][0]
    return same_start and x.shape == y.shape and x.strides == y.strides


def _check_roles(
    fixed_layer: napari.layers.Image, moving_layer: napari.layers.Image, labels_layer: napari.layers.Labels | None
) -> None:
    """Refuse one array in two roles, as the CLI refuses one file: fixed and moving (the identity, a TRE of 0 that
    says nothing) or an image layer's pixels as the moving labels (each grey level an object, carried over)."""
    if _same_pixels(fixed_layer, moving_layer):
        raise PromptsegError(
            f"fixed '{fixed_layer.name}' and moving '{moving_layer.name}' are the same pixels: choose the image to "
            "register onto the fixed one as the moving layer"
        )
    for role, image in (("moving", moving_layer), ("fixed", fixed_layer)):
        if labels_layer is not None and _same_pixels(labels_layer, image):
            raise PromptsegError(
                f"moving labels '{labels_layer.name}' are the pixels of the {role} image '{image.name}': choose labels "
                f"drawn on '{moving_layer.name}' (an id per object, 0 for none)"
            )


class RegistrationWidget(ResultLayers, QWidget):
    """Pick fixed/moving layers (and landmarks), register, and inspect the result as layers."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        load_triton_safely()
        self.viewer = napari_viewer = unproxied(napari_viewer)
        self.runner = TaskRunner(self)
        #: the last run's result, in the pixels of the planes registered: a pyramid layer's level
        #: (:data:`~...io.multiscale.REGISTER_SIDE`), not its full resolution
        self.last_result: RegistrationResult | None = None
        #: the last run's landmark errors ("before", "after"), in full-resolution pixels of the fixed layer ("unit"),
        #: and how the moving points were placed over it for "before" ("before_placement")
        self.last_errors: dict[str, dict | str] = {}
        #: the layers the last successful run added, each with its name and data digest at creation: the next run
        #: removes those still as they were (and only those) before adding its own
        self.result_layers: list[tuple[napari.layers.Layer, str, str]] = []
        #: the (fixed, moving) layers those results register: a run on another pair keeps them (they are that pair's)
        self.result_pair: tuple[napari.layers.Layer, napari.layers.Layer] | None = None
        #: the pixels that pair held then: a rerun after they were replaced keeps those results (another image's)
        self.result_pixels: list = []

        # empty when their image leaves the viewer: they took the next image, the other role's or an earlier run's
        # warped result, and the next Register used it unsaid
        empty = {"empty_when_removed": True, "restart_when_none_left": True}
        self.fixed_picker = LayerPicker(
            napari_viewer, napari.layers.Image, none_text="(choose the fixed image)", **empty
        )
        self.moving_picker = LayerPicker(
            napari_viewer, napari.layers.Image, none_text="(choose the moving image)", unlike=self.fixed_picker, **empty
        )
        # a multichannel (C, Y, X) fixed or moving layer, as register()'s channel_axis and the CLI's --channel-axis:
        # one axis for both (a gray or RGB layer of the pair has none); no channels field: register reads them all
        self.channel_axis = ChannelAxisBox()
        self.channel_axis.setToolTip(
            "For a multichannel fixed or moving image stored as one layer (C, Y, X): its first axis holds the "
            "channels (up to 3), registered together"
        )
        for picker in (self.fixed_picker, self.moving_picker):
            picker.layer_changed.connect(self._offer_channel_axis)
        self._offer_channel_axis()
        self.fixed_points = LayerPicker(napari_viewer, napari.layers.Points, none_text="none")
        self.moving_points = LayerPicker(napari_viewer, napari.layers.Points, none_text="none")
        self.moving_points.setToolTip(
            "points on the moving image: mapped into the fixed frame; with fixed landmarks too, TRE before and after"
        )
        self.moving_labels = LayerPicker(napari_viewer, napari.layers.Labels, none_text="none")
        self.moving_labels.setToolTip(
            "a Labels layer drawn on the moving image (annotations, a segmentation): warped onto the fixed image as "
            "a new Labels layer, ids kept"
        )
        self.moving_shapes = LayerPicker(napari_viewer, napari.layers.Shapes, none_text="none")
        self.moving_shapes.setToolTip(
            "a Shapes layer drawn on the moving image (outlines, regions of interest): added over the fixed image as "
            "a new Shapes layer, colours and features kept; outlines bend with the deformation, so rectangles and "
            "ellipses come back as polygons"
        )
        self.method = QComboBox()
        self.method.addItems(list(METHODS))
        self.method.setCurrentText(DEFAULT_METHOD)
        self.method.setToolTip(
            "auto: prompts+intensity when text prompts are given, else intensity; "
            "prompts: LiteMedSAM regions matched across the images (Tell2Reg); "
            "prompts+intensity: the region starts, the image moments and a rotation/flip search, each refined by "
            "SimpleITK, the one that aligns the images best (mutual information) kept; intensity: the same without "
            "regions"
        )
        # the settings of `promptseg register` most runs leave at their defaults, in a closed section: the prompts
        # methods' pairing and dense field (--similarity, --smoothness, --no-dense) and the text routes' thresholds
        self.similarity = fraction_box(
            PAIR_SIMILARITY,
            f"prompts methods: cosine similarity needed to pair two regions (Tell2Reg: {PAIR_SIMILARITY})",
        )
        self.dense = QCheckBox("dense field")
        self.dense.setChecked(True)
        self.dense.setToolTip(
            "prompts methods: a dense displacement field on top of the regions' affine (kept only where it aligns "
            "the images better); unticked: the affine alone (the CLI's --no-dense)"
        )
        self.smoothness = QDoubleSpinBox()
        self.smoothness.setRange(0.0, 100.0)
        self.smoothness.setDecimals(3)
        self.smoothness.setSingleStep(0.05)
        self.smoothness.setValue(FIELD_SMOOTHNESS)
        self.smoothness.setToolTip(
            "prompts methods: bending-energy weight of the dense field; higher = smoother, less local bending"
        )
        self.box_threshold = fraction_box(
            BOX_THRESHOLD, "text prompts, GroundingDINO: keep boxes scoring at least this"
        )
        self.text_threshold = fraction_box(
            TEXT_THRESHOLD, "text prompts, GroundingDINO: phrase tokens scoring at least this"
        )
        self.heatmap_threshold = fraction_box(
            HEATMAP_THRESHOLD, "text prompts, CLIPSeg: pixels above this probability (medvlsm uses 0.5)"
        )
        self.device = QComboBox()
        self.device.addItems(available_devices())
        self.device.setToolTip("where the models run: the segmenter of the regions and the text route's (--device)")
        self.text_prompts = QLineEdit()
        self.text_prompts.setPlaceholderText("none (automatic regions with a prompts method)")
        self.text_prompts.setToolTip(
            "comma-separated text prompts, e.g. 'gland, nuclei': each is found in both images (GroundingDINO, "
            "CLIPSeg, or offline the reference library) and its regions pair with the same prompt's; empty = "
            "the images alone with the auto method, automatic LiteMedSAM regions with a prompts method"
        )
        # what answers the text prompts, as the Text prompt widget's route: a named route downloads its model
        self.text_route = text_route_box(PROMPT_ROUTES, self._update_route_hint)  # and after every run
        self._route_answer = ""  # the route the text prompts go to here (route_hint's answer)
        # the library the offline route reads, as the Text prompt widget's library field and the CLI's --library
        self.library = QLineEdit()
        self.library.setPlaceholderText("default user library")
        self.library.setToolTip("reference library directory the text prompts are answered from (route library)")
        # GroundingDINO's or CLIPSeg's weights for the text prompts, as the CLI's --text-weights and the Text widget's
        self.text_weights = TextWeightsField()
        self.text_weights.edit.textChanged.connect(self._update_route_hint)  # route auto loads them when given
        # as the CLI's --model: the Interactive widget's list (a model whose weights are missing downloads them)
        self.model = SegmenterBox("the promptable segmenter of the prompts methods' regions (intensity uses none)")
        self.show_pairs = QCheckBox("show region pairs")
        self.show_pairs.setToolTip(
            "the region pairs are always added as two Labels layers in the fixed frame (the moving regions warped, "
            "pair k in the same colour on both); ticked, they are visible at once, else hidden until you show them"
        )
        self.show_grid = QCheckBox("show deformation grid")
        self.run_button = QPushButton("Register")
        self.run_button.clicked.connect(self.run)
        # what the last run found (route, pairs, Dice, TRE): the shared panel's summary, cleared when a run starts
        self.summary = self.runner.widget.summary

        form = QFormLayout()
        form.addRow("fixed image", self.fixed_picker)
        form.addRow("moving image", self.moving_picker)
        form.addRow("channel axis", self.channel_axis)
        form.addRow("fixed landmarks", self.fixed_points)
        form.addRow("moving landmarks", self.moving_points)
        form.addRow("moving labels", self.moving_labels)
        form.addRow("moving shapes", self.moving_shapes)
        form.addRow("method", self.method)
        form.addRow("text prompts", self.text_prompts)
        form.addRow("text route", self.text_route)
        form.addRow("library", self.library)
        form.addRow("text weights", self.text_weights)
        self.model.add_rows(form)
        self.advanced = AdvancedSection(
            tooltip="the CLI's --similarity, --smoothness, --no-dense, thresholds and --device"
        )
        self.advanced.form.addRow("pair similarity", self.similarity)
        self.advanced.form.addRow(self.dense)
        self.advanced.form.addRow("smoothness", self.smoothness)
        self.advanced.form.addRow("box threshold", self.box_threshold)
        self.advanced.form.addRow("text threshold", self.text_threshold)
        self.advanced.form.addRow("heatmap threshold", self.heatmap_threshold)
        self.advanced.form.addRow("device", self.device)
        self.method.currentTextChanged.connect(self._update_applicable)
        self.text_prompts.textChanged.connect(self._update_applicable)
        self.dense.toggled.connect(self._update_applicable)
        self._update_route_hint()
        layout = controls_layout(self, self.runner, self.run_button)
        layout.addLayout(form)
        layout.addWidget(self.advanced)
        layout.addWidget(self.show_pairs)
        layout.addWidget(self.show_grid)
        layout.addStretch(1)

    def _offer_channel_axis(self, *_) -> None:
        """Another fixed or moving image: its first axis may hold planes, not channels ('none' chosen again)."""
        self.channel_axis.offer([self.fixed_picker.layer(), self.moving_picker.layer()], keep=False)

    @property
    def is_idle(self) -> bool:
        return not self.runner.busy

    def run(self) -> None:
        try:
            fixed_layer, moving_layer = self.fixed_picker.layer(), self.moving_picker.layer()
            if fixed_layer is None or moving_layer is None:
                missing = [role for role, layer in (("fixed", fixed_layer), ("moving", moving_layer)) if layer is None]
                raise PromptsegError(f"choose the {' and the '.join(missing)} image layer{'s' * (len(missing) > 1)}")
            if fixed_layer is moving_layer:
                raise PromptsegError(f"fixed and moving are the same layer '{fixed_layer.name}'")
            _check_roles(fixed_layer, moving_layer, self.moving_labels.layer())
            channel_axis = self.channel_axis.channel_axis
            if channel_axis is not None and not any(map(offers_channel_axis, (fixed_layer, moving_layer))):
                raise PromptsegError(
                    f"channel axis {channel_axis}: neither '{fixed_layer.name}' nor '{moving_layer.name}' has one "
                    "(gray or RGB); choose 'none'"
                )
            fixed_at, moving_at = (
                _plane(fixed_layer, "fixed", channel_axis),
                _plane(moving_layer, "moving", channel_axis),
            )
            (_, fixed, fixed_factors), (_, moving, moving_factors) = fixed_at, moving_at
            # the levels read, which register() is given as arrays: the result says them (registered_level)
            levels = {
                name: level_record(at.index, at.factors) for name, at in (("fixed", fixed_at), ("moving", moving_at))
            }
            moving_channel_axis = layer_channel_axis(moving_layer, channel_axis)
            moving_points = self.moving_points.layer()
            landmarks, truncated, outside = _landmarks(
                self.fixed_points.layer(), moving_points, fixed_layer, moving_layer
            )
            look = None if moving_points is None else points_look(moving_points)
            labels_layer = self.moving_labels.layer()
            moving_labels = (
                None
                if labels_layer is None
                else _labels_on_plane(
                    labels_layer, moving_layer, moving_factors, plane_shape(moving, moving_layer.rgb), channel_axis
                )
            )
            shapes_layer = self.moving_shapes.layer()
            shapes = (
                None
                if shapes_layer is None
                else moving_shapes(shapes_layer, moving_layer, spatial_axes(moving_layer, channel_axis))
            )
            prompts = self.prompts()
            method = resolve_method(self.method.currentText(), prompts)
            if prompts and method == "intensity":
                raise PromptsegError(
                    f"text prompts {', '.join(prompts)}: choose a prompts method (intensity registration uses none)"
                )
            # the weights file is looked at only when a segmenter will be loaded from it
            model, weights = self.model.checked_choice() if method != "intensity" else (None, None)
            options, text_options = self.settings()
        except PromptsegError as exc:
            self.runner.refuse(exc, "registration")
            return
        names = (fixed_layer.name, moving_layer.name)
        text_route = self.text_route.currentText()
        library = self.library.text().strip() or None
        with_grid = self.show_grid.isChecked()

        def task(progress, cancel) -> _Shown:
            fixed_pixels = _read_plane(fixed, "fixed", progress, cancel)
            moving_pixels = _read_plane(moving, "moving", progress, cancel)
            segmenter = None
            if method != "intensity":
                progress(0.0, "loading the model")
                segmenter = task_segmenter(progress, cancel, model, device=text_options["device"], weights=weights)

            def registering(fraction: float, message: str) -> None:
                # the warp and the layers' data come after: register's "done" is not the task's end
                progress(REGISTER_SHARE * fraction, "registered" if message == "done" else message)

            result = register(
                fixed_pixels,
                moving_pixels,
                prompts,
                segmenter=segmenter,
                method=method,
                options=options,
                channel_axis=channel_axis,
                progress=registering,
                cancel=cancel,
                fixed_name=f"layer '{names[0]}'",
                moving_name=f"layer '{names[1]}'",
                text_route=text_route,
                library=library,
                text_options=text_options,
            )
            result.registered_level = levels  # register() saw the levels' arrays alone: as level 0
            # the layers' data here, off the GUI thread (a large warp froze napari for seconds)
            return _results_to_show(
                result,
                fixed_pixels,
                moving_pixels,
                landmarks,
                moving_labels,
                fixed_factors,
                moving_factors,
                with_grid,
                progress,
                cancel,
                shapes,
                moving_channel_axis,
            )

        def done(shown: _Shown) -> None:
            with self._all_or_none():
                said = self._add_results(
                    shown,
                    fixed_layer,
                    moving_layer,
                    labels_layer,
                    fixed_factors,
                    landmarks,
                    truncated,
                    shapes,
                    outside,
                    channel_axis,
                    look,
                )
            for message in said:  # once the layers are there: not for a run whose results were taken out
                show_info(message)

        self.runner.submit(
            "register",
            f"registering '{names[1]}' onto '{names[0]}'",
            task,
            done,
            inputs=tuple(x for x in (fixed_layer, moving_layer, labels_layer, shapes_layer) if x is not None),
        )

    def settings(self) -> tuple[RegistrationOptions, dict[str, object]]:
        """The options and text options register() runs with, built by the rules `promptseg register` builds its own
        with (:func:`~...methods.registration.user_options`, :func:`~...methods.registration.text_prompt_options`)."""
        options = user_options(
            similarity=self.similarity.value(), smoothness=self.smoothness.value(), dense=self.dense.isChecked()
        )
        text_options = text_prompt_options(
            box_threshold=self.box_threshold.value(),
            text_threshold=self.text_threshold.value(),
            heatmap_threshold=self.heatmap_threshold.value(),
            device=self.device.currentText(),
            # greyed out on route library, the field is not read (what it still holds refused the run)
            weights=self.text_weights.weights() if self.text_route.currentText() in WEIGHTS_ROUTES else None,
            weights_option=TEXT_WEIGHTS_FIELD,  # missing weights are told with this field, not --text-weights
        )
        return options, text_options

    def _update_route_hint(self, *_) -> None:
        """The route box's tooltip: which route auto takes here, what a route passed over or chosen lacks."""
        intro = "what answers the text prompts (none typed: not used)"
        self._route_answer, tooltip = route_hint(
            self.text_route.currentText(), intro=intro, text_weights=self.text_weights.text
        )
        self.text_route.setToolTip(tooltip)
        self._update_applicable()

    def _update_applicable(self, *_) -> None:
        """Enable only the advanced settings this run uses: the pairing and dense field with a prompts method, each
        threshold with text prompts its route answers (GroundingDINO's two, CLIPSeg's one)."""
        prompts = self.prompts()
        regions = resolve_method(self.method.currentText(), prompts) != "intensity"
        self.similarity.setEnabled(regions)
        self.dense.setEnabled(regions)
        self.smoothness.setEnabled(regions and self.dense.isChecked())
        answer = self._route_answer
        weights = answer == WEIGHTS_ANSWER  # GroundingDINO's or CLIPSeg's: both routes' thresholds
        self.box_threshold.setEnabled(bool(prompts) and regions and (weights or answer == "groundingdino"))
        self.text_threshold.setEnabled(bool(prompts) and regions and (weights or answer == "groundingdino"))
        self.heatmap_threshold.setEnabled(bool(prompts) and regions and (weights or answer == "clipseg"))
        # what a vision-language route loads, route auto's too when given
        vision_language = self.text_route.currentText() in WEIGHTS_ROUTES
        self.text_weights.setEnabled(bool(prompts) and regions and vision_language)

    def prompts(self) -> list[str] | None:
        """The text prompts typed (comma-separated), or None for automatic regions."""
        typed = [p.strip() for p in self.text_prompts.text().split(",")]
        return [p for p in typed if p] or None
