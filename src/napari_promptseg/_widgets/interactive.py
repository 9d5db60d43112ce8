"""Interactive widget: boxes (Shapes) and positive/negative clicks (Points) -> live preview -> commit to Labels.

The widget only gathers inputs and moves results between layers; segmentation is
:func:`napari_promptseg.methods.interactive.segment_prompts` with a model from
:func:`napari_promptseg.models.load_segmenter`, run in a thread worker by :class:`._common.TaskRunner`.

Coordinates: napari layers hold (row, col) *data* coordinates, each layer with its own scale/translate. Prompts are
taken to world coordinates with their own layer's transform and back into the image layer's data coordinates, so a
box drawn on any Shapes layer lands on the right pixels; the core library then receives x = column, y = row.
For a 3D/4D stack the displayed 2D plane at ``viewer.dims.current_step`` is segmented; prompts count for the plane
they were drawn on.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass

import napari
import napari.layers
import numpy as np
import torch
from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from ..errors import CancelledError, PromptsegError
from ..methods.instances import InstanceResult, find_all_like
from ..methods.interactive import SegmentationResult, segment_prompts
from ..models import DEFAULT_SEGMENTER, MODELS, load_segmenter
from ..models.preprocessing import NORMALIZATIONS, as_channels_last
from ..models.registry import weights_status
from ._common import LayerPicker, TaskRunner, debounce_timer, load_triton_safely, notify_exception, notify_once

PREVIEW_NAME = "promptseg preview"
NO_IMAGE = "no image layer: open an image (File > Open Sample > Prompt segmentation), then draw boxes or click"
TARGET_NAME = "promptseg labels"
BOXES_NAME = "promptseg boxes"
POINTS_NAME = "promptseg points"
#: metadata tag of the preview layer, so it is never offered as a commit target (also across widget instances)
ROLE_KEY = "promptseg_role"
POSITIVE = "positive"
POLARITY_COLOURS = {True: "lime", False: "red"}
TOGGLE_KEY = "T"
COMMIT_KEY = "Shift-C"
PREVIEW_DELAY_MS = 150  # prompt edits come in bursts (add + select + move events); decode once per burst
PLANE_DELAY_MS = 300  # scrubbing a slider must not encode every plane it passes


# -- geometry: which 2D plane, and how prompts map onto it ---------------------------------------------------------


@dataclass(frozen=True)
class PlaneGeometry:
    """The 2D plane being segmented, in the *labels space* of the image layer.

    Labels space is the image layer's data space without the RGB axis and without the channel axis (if the user
    chose one). Labels layers that go with the image have ``labels_shape`` and the same scale/translate.
    """

    image_name: str
    labels_shape: tuple[int, ...]
    row_axis: int
    col_axis: int
    index: tuple[int, ...]  # position of the plane along every labels axis (0 on the two plane axes)
    channel_axis: int | None  # image-data axis that holds channels (always 0 when set; see plane_geometry)
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    affine: np.ndarray | None  # (n+1, n+1) matrix in labels space, None when the image layer has none

    @property
    def plane_shape(self) -> tuple[int, int]:
        return self.labels_shape[self.row_axis], self.labels_shape[self.col_axis]

    @property
    def fixed_axes(self) -> tuple[int, ...]:
        return tuple(a for a in range(len(self.labels_shape)) if a not in (self.row_axis, self.col_axis))

    @property
    def plane_slices(self) -> tuple:
        """Index of the plane in a labels-space array: an (H, W) view."""
        return tuple(slice(None) if a in (self.row_axis, self.col_axis) else self.index[a] for a in self._axes)

    @property
    def preview_shape(self) -> tuple[int, ...]:
        """The preview layer holds only this plane: size 1 along the other axes, placed by its translate."""
        return tuple(n if a in (self.row_axis, self.col_axis) else 1 for a, n in enumerate(self.labels_shape))

    @property
    def preview_translate(self) -> tuple[float, ...]:
        return tuple(t + (self.index[a] * s if a in self.fixed_axes else 0.0) for a, (t, s) in self._scaled)

    @property
    def _axes(self) -> range:
        return range(len(self.labels_shape))

    @property
    def _scaled(self):
        return enumerate(zip(self.translate, self.scale, strict=True))

    def labels_indices(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, ...]:
        """Full labels-space fancy index of plane pixels (rows, cols)."""
        out = []
        for a in self._axes:
            if a == self.row_axis:
                out.append(rows)
            elif a == self.col_axis:
                out.append(cols)
            else:
                out.append(np.full(rows.shape, self.index[a], dtype=rows.dtype))
        return tuple(out)


def _image_data(layer: napari.layers.Image):
    return layer.data[0] if layer.multiscale else layer.data


def plane_geometry(
    viewer: napari.viewer.Viewer, layer: napari.layers.Image, channel_axis: int | None = None
) -> PlaneGeometry:
    """Locate the displayed 2D plane of ``layer`` (raises PromptsegError naming the layer when it can't)."""
    name = f"image layer '{layer.name}'"
    if viewer.dims.ndisplay != 2:
        raise PromptsegError(f"{name}: prompts segment one 2D plane; switch the viewer to 2D (Ctrl+Y)")
    shape = tuple(_image_data(layer).shape)
    spatial = shape[:-1] if layer.rgb else shape
    ndim = len(spatial)
    if ndim < 2:
        raise PromptsegError(f"{name}: needs at least two dimensions, got shape {shape}")
    offset = viewer.dims.ndim - layer.ndim
    displayed = sorted(d - offset for d in viewer.dims.displayed)
    if any(d < 0 for d in displayed):
        raise PromptsegError(f"{name}: the displayed axes {viewer.dims.displayed} are not axes of this layer")
    if channel_axis is not None:
        if layer.rgb:
            raise PromptsegError(f"{name}: an RGB layer has no separate channel axis; choose 'none'")
        if ndim < 3:
            raise PromptsegError(f"{name}: a 2D layer has no channel axis; choose 'none'")
        if channel_axis != 0:
            # labels layers drop the channel axis; napari aligns layers by their trailing axes, so only a leading
            # channel axis keeps the labels on top of the image
            raise PromptsegError(
                f"{name}: the channel axis must be the first axis (got {channel_axis}); split the channels "
                "(layer menu: Split Stack) or reorder the axes"
            )
        if channel_axis in displayed:
            raise PromptsegError(f"{name}: the channel axis {channel_axis} is displayed; show the image plane instead")
    position = layer.world_to_data(viewer.dims.point)
    data_index = [int(np.clip(np.round(position[a]), 0, spatial[a] - 1)) for a in range(ndim)]
    keep = [a for a in range(ndim) if a != channel_axis]
    labels_of = {a: i for i, a in enumerate(keep)}  # image-data axis -> labels axis
    index = tuple(0 if a in displayed else data_index[a] for a in keep)
    affine = None
    matrix = np.asarray(layer.affine.affine_matrix, dtype=float)
    if not np.allclose(matrix, np.eye(ndim + 1)):
        homogeneous = [*keep, ndim]
        affine = matrix[np.ix_(homogeneous, homogeneous)]
    return PlaneGeometry(
        image_name=layer.name,
        labels_shape=tuple(spatial[a] for a in keep),
        row_axis=labels_of[displayed[0]],
        col_axis=labels_of[displayed[1]],
        index=index,
        channel_axis=channel_axis,
        scale=tuple(float(layer.scale[a]) for a in keep),
        translate=tuple(float(layer.translate[a]) for a in keep),
        affine=affine,
    )


def extract_plane(layer: napari.layers.Image, geom: PlaneGeometry) -> tuple[np.ndarray, int | None]:
    """The plane's pixels (H, W), (H, W, RGB) or (C, H, W), and the channel axis to pass to the core function."""
    data = _image_data(layer)
    ndim = len(geom.labels_shape) + (geom.channel_axis is not None)
    labels_axis = 0
    index = []
    for a in range(ndim):
        if a == geom.channel_axis:
            index.append(slice(None))
            continue
        if labels_axis in (geom.row_axis, geom.col_axis):
            index.append(slice(None))
        else:
            index.append(geom.index[labels_axis])
        labels_axis += 1
    return np.asarray(data[tuple(index)]), (0 if geom.channel_axis is not None else None)


def to_labels_coords(
    viewer: napari.viewer.Viewer, image: napari.layers.Image, geom: PlaneGeometry, layer, coords: np.ndarray
) -> np.ndarray:
    """Data coordinates of ``layer`` (N, layer.ndim) -> labels-space coordinates of the image (N, labels ndim).

    Through world coordinates, so each layer's own scale/translate counts. Axes a prompt layer lacks (a 2D layer
    over a stack) take the viewer's current position, i.e. the prompt applies to the displayed plane.
    """
    out = np.empty((len(coords), len(geom.labels_shape)), dtype=float)
    point = np.asarray(viewer.dims.point, dtype=float)
    for i, c in enumerate(np.asarray(coords, dtype=float)):
        world = point.copy()
        w = np.asarray(layer.data_to_world(c), dtype=float)
        world[len(world) - len(w) :] = w
        data = np.asarray(image.world_to_data(world), dtype=float)
        out[i] = np.delete(data, geom.channel_axis) if geom.channel_axis is not None else data
    return out


def _on_plane(coords: np.ndarray, geom: PlaneGeometry) -> np.ndarray:
    """Which rows of labels-space ``coords`` lie on the plane (rounding along the non-displayed axes)."""
    keep = np.ones(len(coords), dtype=bool)
    for a in geom.fixed_axes:
        keep &= np.round(coords[:, a]).astype(int) == geom.index[a]
    return keep


@dataclass
class PlanePrompts:
    """Prompts of one plane in the library's convention (x = column, y = row), and where they came from."""

    boxes: list[tuple[float, float, float, float]]
    positive: list[tuple[float, float]]
    negative: list[tuple[float, float]]
    shape_indices: list[int]  # rows of the Shapes layer used (removed after a commit)
    point_indices: list[int]

    def __bool__(self) -> bool:
        return bool(self.boxes or self.positive or self.negative)


def gather_prompts(
    viewer: napari.viewer.Viewer,
    image: napari.layers.Image,
    geom: PlaneGeometry,
    shapes: napari.layers.Shapes | None,
    points: napari.layers.Points | None,
) -> PlanePrompts:
    """Boxes (bounding box of each shape) and clicks that lie on the plane, in image pixels x = col, y = row."""
    prompts = PlanePrompts([], [], [], [], [])
    if shapes is not None:
        for i, vertices in enumerate(shapes.data):
            c = to_labels_coords(viewer, image, geom, shapes, vertices)
            if not _on_plane(c, geom).all():
                continue
            rows, cols = c[:, geom.row_axis], c[:, geom.col_axis]
            prompts.boxes.append((float(cols.min()), float(rows.min()), float(cols.max()), float(rows.max())))
            prompts.shape_indices.append(i)
    if points is not None and len(points.data):
        c = to_labels_coords(viewer, image, geom, points, points.data)
        features = points.features
        positive = (
            features[POSITIVE].to_numpy(dtype=bool)
            if POSITIVE in features and len(features) == len(c)
            else np.ones(len(c), dtype=bool)
        )
        for i in np.flatnonzero(_on_plane(c, geom)):
            xy = (float(c[i, geom.col_axis]), float(c[i, geom.row_axis]))
            (prompts.positive if positive[i] else prompts.negative).append(xy)
            prompts.point_indices.append(int(i))
    return prompts


def commit_to_labels(target: napari.layers.Labels, preview: np.ndarray, geom: PlaneGeometry) -> list[int]:
    """Write the preview objects into ``target`` as new ids (max + 1, ...), only where ``target`` is 0.

    Goes through ``Labels.data_setitem`` so the whole commit is one undo step (Ctrl+Z). Returns the new ids.
    """
    name = f"labels layer '{target.name}'"
    if tuple(target.data.shape) != geom.labels_shape:
        raise PromptsegError(
            f"{name}: shape {tuple(target.data.shape)} does not match image '{geom.image_name}' "
            f"{geom.labels_shape}; choose another target or a new layer"
        )
    dtype = np.dtype(target.data.dtype)
    if dtype.kind not in "iu":
        raise PromptsegError(f"{name}: labels must be integers, got {dtype}")
    free = np.asarray(target.data[geom.plane_slices]) == 0
    placed = np.where(free, preview, 0)
    objects = [int(k) for k in np.unique(placed) if k != 0]
    if not objects:
        return []
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
    target.data_setitem(geom.labels_indices(rows, cols), values)
    return new_ids


# -- the widget ----------------------------------------------------------------------------------------------------


@dataclass
class _Preview:
    geom: PlaneGeometry
    labels: np.ndarray  # (H, W)
    version: int
    prompts: PlanePrompts
    shapes: napari.layers.Shapes | None
    points: napari.layers.Points | None


def _is_preview(layer) -> bool:
    return layer.metadata.get(ROLE_KEY) == "preview"


def _available_devices() -> list[str]:
    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


class InteractiveWidget(QWidget):
    """Boxes and clicks -> live preview -> commit new objects into a Labels layer (undo with Ctrl+Z)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        load_triton_safely()
        self.viewer = napari_viewer
        self.runner = TaskRunner(self)
        self.preview: _Preview | None = None
        self._preview_layer: napari.layers.Labels | None = None
        self._version = 0  # bumped by every prompt edit; a preview computed for an older version is stale
        self._commit_after_preview = False
        self._shown_warnings: set[str] = set()
        self._connected: dict[str, napari.layers.Layer] = {}
        self._last_plane: tuple | None = None
        self._preview_timer = debounce_timer(self, PREVIEW_DELAY_MS, self._run_preview)
        self._plane_timer = debounce_timer(self, PLANE_DELAY_MS, self._on_plane_settled)
        self._build()
        self.runner.idle.connect(self._on_runner_idle)
        self.viewer.dims.events.current_step.connect(self._on_dims_changed)
        self._on_image_changed(self.image_picker.layer())
        self._on_prompt_layer_changed("shapes", self.shapes_picker.layer())
        self._on_prompt_layer_changed("points", self.points_picker.layer())

    # -- layout ------------------------------------------------------------------------------------------------
    def _build(self) -> None:
        v = self.viewer
        self.image_picker = LayerPicker(v, napari.layers.Image)
        self.image_picker.setToolTip("Image to segment; for a stack, the displayed 2D plane")
        self.channel_combo = QComboBox()
        self.channel_combo.setToolTip("For a multichannel image stored as one layer: the axis holding the channels")
        self.channels_edit = QLineEdit()
        self.channels_edit.setPlaceholderText("all (up to 3), e.g. 0,2")
        self.channels_edit.setToolTip("Up to three channels fed to the model's colour inputs")
        self.normalize_combo = QComboBox()
        self.normalize_combo.addItems(list(NORMALIZATIONS))
        self.normalize_combo.setToolTip("Intensity scaling before the model: auto = 0-255 for 8-bit, else percentiles")

        self.shapes_picker = LayerPicker(v, napari.layers.Shapes, none_text="(no boxes)", auto_select=True)
        self.shapes_picker.setToolTip("Shapes layer whose rectangles are box prompts (one object per box)")
        self.points_picker = LayerPicker(v, napari.layers.Points, none_text="(no clicks)", auto_select=True)
        self.points_picker.setToolTip(
            f"Points layer of clicks; feature '{POSITIVE}' marks positive (green) / negative (red)"
        )
        self.new_prompts_button = QPushButton("New prompt layers")
        self.new_prompts_button.setToolTip("Add a Shapes layer for boxes and a Points layer for clicks on this image")
        self.positive_radio = QRadioButton("positive")
        self.negative_radio = QRadioButton("negative")
        self.positive_radio.setChecked(True)
        polarity = QButtonGroup(self)
        polarity.addButton(self.positive_radio)
        polarity.addButton(self.negative_radio)
        self._polarity_group = polarity
        for button in (self.positive_radio, self.negative_radio):
            button.setToolTip(
                f"Polarity of new clicks; '{TOGGLE_KEY}' on the points layer toggles (and flips selected)"
            )
        self.clear_button = QPushButton("Clear prompts")
        self.object_size_spin = QDoubleSpinBox()
        self.object_size_spin.setRange(0, 100_000)
        self.object_size_spin.setDecimals(0)
        self.object_size_spin.setSuffix(" px")
        self.object_size_spin.setSpecialValueText("auto (from the boxes)")
        self.object_size_spin.setToolTip(
            "Typical object diameter in pixels: sets the scale the model sees (small objects in a large image are "
            "segmented in tiles around them). Auto: the boxes' median size"
        )
        self.find_all_button = QPushButton("Find all like these")
        self.find_all_button.setToolTip(
            "Every object in the image like the boxed examples, as a new Labels layer (box 2-5 typical objects)"
        )

        self.model_combo = QComboBox()
        for card in MODELS.values():
            if card.role != "segmenter":
                continue
            status, _ = weights_status(card)
            label = card.name if status != "missing" else f"{card.name} (weights missing)"
            self.model_combo.addItem(label, card.name)
            self.model_combo.setItemData(self.model_combo.count() - 1, card.description, Qt.ToolTipRole)
        self.model_combo.setCurrentIndex(max(0, self.model_combo.findData(DEFAULT_SEGMENTER)))
        self.device_combo = QComboBox()
        self.device_combo.addItems(_available_devices())
        self.auto_embed_check = QCheckBox("embed when the image or plane changes")
        self.auto_embed_check.setChecked(True)
        self.embed_button = QPushButton("Compute embedding")

        self.target_picker = LayerPicker(
            v, napari.layers.Labels, none_text=f"new layer '{TARGET_NAME}'", exclude=_is_preview
        )
        self.target_picker.setToolTip("Labels layer that receives committed objects as new ids; existing labels stay")
        self.commit_button = QPushButton(f"Commit ({COMMIT_KEY})")
        self.commit_button.setToolTip("Write the preview into the target as new labels (undo: Ctrl+Z on the target)")

        image_box = QGroupBox("Image")
        form = QFormLayout(image_box)
        form.addRow("image", self.image_picker)
        form.addRow("channel axis", self.channel_combo)
        form.addRow("channels", self.channels_edit)
        form.addRow("intensity", self.normalize_combo)

        prompt_box = QGroupBox("Prompts")
        form = QFormLayout(prompt_box)
        form.addRow("boxes", self.shapes_picker)
        form.addRow("clicks", self.points_picker)
        row = QHBoxLayout()
        row.addWidget(self.positive_radio)
        row.addWidget(self.negative_radio)
        form.addRow("new clicks", row)
        row = QHBoxLayout()
        row.addWidget(self.new_prompts_button)
        row.addWidget(self.clear_button)
        form.addRow(row)
        form.addRow("object size", self.object_size_spin)
        form.addRow(self.find_all_button)

        model_box = QGroupBox("Model")
        form = QFormLayout(model_box)
        form.addRow("model", self.model_combo)
        form.addRow("device", self.device_combo)
        form.addRow(self.auto_embed_check)
        form.addRow(self.embed_button)

        result_box = QGroupBox("Result")
        form = QFormLayout(result_box)
        form.addRow("target", self.target_picker)
        form.addRow(self.commit_button)

        layout = QVBoxLayout(self)
        for box in (image_box, prompt_box, model_box, result_box):
            layout.addWidget(box)
        layout.addWidget(self.runner.widget)
        layout.addStretch(1)

        self.image_picker.layer_changed.connect(self._on_image_changed)
        self.channel_combo.currentIndexChanged.connect(self._on_image_options_changed)
        self.channels_edit.editingFinished.connect(self._on_image_options_changed)
        self.normalize_combo.currentIndexChanged.connect(self._on_image_options_changed)
        self.shapes_picker.layer_changed.connect(lambda layer: self._on_prompt_layer_changed("shapes", layer))
        self.points_picker.layer_changed.connect(lambda layer: self._on_prompt_layer_changed("points", layer))
        self.new_prompts_button.clicked.connect(self.new_prompt_layers)
        self.positive_radio.toggled.connect(self._on_polarity_changed)
        self.clear_button.clicked.connect(self.clear_prompts)
        self.object_size_spin.valueChanged.connect(self._on_image_options_changed)
        self.find_all_button.clicked.connect(self.find_all)
        self.model_combo.currentIndexChanged.connect(self._on_image_options_changed)
        self.device_combo.currentIndexChanged.connect(self._on_image_options_changed)
        self.embed_button.clicked.connect(self.compute_embedding)
        self.commit_button.clicked.connect(self.commit)

    # -- state read from the controls --------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.model_combo.currentData()

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
        return self.channel_combo.currentData()

    def _channels(self) -> list[int] | None:
        text = self.channels_edit.text().strip()
        if not text or self._channel_axis() is None:
            return None
        try:
            return [int(part) for part in text.replace(" ", ",").split(",") if part]
        except ValueError:
            raise PromptsegError(f"channels: expected comma-separated channel numbers like 0,2; got {text!r}") from None

    def _geometry(self) -> tuple[napari.layers.Image, PlaneGeometry]:
        image = self.image_picker.layer()
        if image is None:
            raise PromptsegError(NO_IMAGE)
        return image, plane_geometry(self.viewer, image, self._channel_axis())

    def _on_runner_idle(self) -> None:
        if self.image_picker.layer() is None:
            self.runner.widget.note(NO_IMAGE)

    def _no_image(self) -> bool:
        """No image layer is a normal state (an empty viewer, the image just removed): said in the status line."""
        if self.image_picker.layer() is not None:
            return False
        self._version += 1  # a preview still on its way belongs to the image that is gone
        self._clear_preview()
        self._commit_after_preview = False
        self.runner.widget.note(NO_IMAGE)
        return True

    # -- reactions ---------------------------------------------------------------------------------------------
    def _on_image_changed(self, layer) -> None:
        self.channel_combo.blockSignals(True)
        self.channel_combo.clear()
        self.channel_combo.addItem("none (gray or RGB)", None)
        if layer is not None and not layer.rgb and layer.ndim >= 3:
            self.channel_combo.addItem(f"axis 0 ({_image_data(layer).shape[0]} channels)", 0)
        self.channel_combo.blockSignals(False)
        self.channels_edit.setEnabled(self.channel_combo.count() > 1)
        self._on_image_options_changed()

    def _on_image_options_changed(self, *_) -> None:
        self._clear_preview()
        self._last_plane = None
        if self._no_image():
            return
        if self._has_prompt_layers():
            self._schedule_preview()
        elif self.auto_embed_check.isChecked():
            self.compute_embedding()

    def _has_prompt_layers(self) -> bool:
        shapes, points = self.shapes_picker.layer(), self.points_picker.layer()
        return bool((shapes is not None and len(shapes.data)) or (points is not None and len(points.data)))

    def _on_prompt_layer_changed(self, role: str, layer) -> None:
        old = self._connected.pop(role, None)
        if old is not None:
            old.events.data.disconnect(self._on_prompts_edited)
            if role == "points":
                old.bind_key(TOGGLE_KEY, None)
            old.bind_key(COMMIT_KEY, None)
        if layer is not None:
            layer.events.data.connect(self._on_prompts_edited)
            self._bind_keys(role, layer)
            self._connected[role] = layer
            if role == "points":
                self._apply_polarity_default(layer)
        self._on_prompts_edited()

    def _bind_keys(self, role: str, layer) -> None:
        # the keymap would otherwise keep the whole widget alive after it is closed
        me = weakref.ref(self)

        def commit(_layer) -> None:
            widget = me()
            if widget is not None:
                widget.commit()

        def toggle(_layer) -> None:
            widget = me()
            if widget is not None:
                widget.toggle_polarity()

        layer.bind_key(COMMIT_KEY, commit, overwrite=True)
        if role == "points":
            layer.bind_key(TOGGLE_KEY, toggle, overwrite=True)

    def _on_prompts_edited(self, event=None) -> None:
        self._version += 1
        self._schedule_preview()

    def _schedule_preview(self) -> None:
        self._preview_timer.start()

    def _on_dims_changed(self, event=None) -> None:
        self._plane_timer.start()

    def _on_plane_settled(self) -> None:
        try:
            _, geom = self._geometry()
        except PromptsegError:
            return  # e.g. 3D view: nothing to do until the user comes back to 2D
        plane = (geom.image_name, geom.index)
        if plane == self._last_plane:
            return
        self._last_plane = plane
        if self._has_prompt_layers():
            self._version += 1
            self._schedule_preview()
        elif self.auto_embed_check.isChecked():
            self.compute_embedding()

    # -- polarity ----------------------------------------------------------------------------------------------
    def _on_polarity_changed(self, *_) -> None:
        points = self.points_picker.layer()
        if points is not None:
            self._apply_polarity_default(points)

    def _apply_polarity_default(self, points: napari.layers.Points) -> None:
        if POSITIVE in points.features:
            points.feature_defaults = {POSITIVE: self.positive_clicks}

    def toggle_polarity(self) -> None:
        """Switch new clicks between positive and negative; selected clicks flip too."""
        points = self.points_picker.layer()
        (self.negative_radio if self.positive_clicks else self.positive_radio).setChecked(True)
        if points is None:
            return
        if POSITIVE not in points.features:  # a user's own points layer: its clicks so far count as positive
            points.features = {POSITIVE: np.ones(len(points.data), dtype=bool)}
            points.face_color_cycle = POLARITY_COLOURS
            points.face_color = POSITIVE
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

    def new_prompt_layers(self) -> None:
        """Add a Shapes layer (rectangle tool on) and a Points layer with positive/negative colours."""
        if self._no_image():
            return
        try:
            image, geom = self._geometry()
        except PromptsegError as exc:
            notify_exception(exc)
            return
        ndim = len(geom.labels_shape)
        h, w = geom.plane_shape
        size = max(3.0, max(h, w) / 80)  # data pixels: napari scales it with the layer
        common = {"ndim": ndim, "scale": geom.scale, "translate": geom.translate}
        if geom.affine is not None:
            common["affine"] = geom.affine
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
            f" {COMMIT_KEY} commits"
        )

    def _show_preview(self, geom: PlaneGeometry, labels: np.ndarray) -> None:
        data = labels.reshape(geom.preview_shape)
        layer = self._preview_layer
        if layer is None or layer not in self.viewer.layers:
            layer = next((ly for ly in self.viewer.layers if _is_preview(ly)), None)
        if layer is not None and layer.ndim != data.ndim:
            self.viewer.layers.remove(layer)
            layer = None
        if layer is None:
            restore = self._keep_active_layer()
            kwargs = {"affine": geom.affine} if geom.affine is not None else {}
            layer = napari.layers.Labels(
                data,
                name=PREVIEW_NAME,
                scale=geom.scale,
                translate=geom.preview_translate,
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
            layer.data = data
        self._preview_layer = layer

    def _clear_preview(self) -> None:
        self.preview = None
        layer = self._preview_layer
        if layer is not None and layer in self.viewer.layers and layer.data.any():
            layer.data = np.zeros_like(layer.data)

    # -- actions -----------------------------------------------------------------------------------------------
    def compute_embedding(self) -> None:
        """Encode the displayed plane now, so the first prompt previews in a fraction of a second."""
        if self._no_image():
            return
        try:
            image, geom = self._geometry()
            plane, channel_axis = extract_plane(image, geom)
            channels = self._channels()
        except PromptsegError as exc:
            notify_exception(exc, "embedding")
            return
        model, device, normalize, name = self.model_name, self.device, self.normalize_combo.currentText(), image.name
        self._last_plane = (geom.image_name, geom.index)

        def task(progress, cancel):
            progress(0.0, f"loading {model}")
            segmenter = load_segmenter(model, device=device)
            if cancel():
                raise CancelledError("cancelled")
            progress(0.3, f"encoding '{name}' with {model}")
            t0 = time.perf_counter()
            # the same array segment_prompts will build, so the model's content-hash cache serves the previews
            hwc = as_channels_last(plane, channel_axis=channel_axis, channels=channels, name=f"image layer '{name}'")
            segmenter.embed(hwc, normalize=normalize, name=f"image layer '{name}'")
            return time.perf_counter() - t0

        def done(seconds: float) -> None:
            self.runner.widget.set_message(f"embedding of '{name}' ready ({seconds:.2f} s)")

        self.runner.submit("embed", f"embedding '{name}'", task, done)

    def _run_preview(self) -> None:
        if self._no_image():
            return
        shapes, points = self.shapes_picker.layer(), self.points_picker.layer()
        try:
            image, geom = self._geometry()
            prompts = gather_prompts(self.viewer, image, geom, shapes, points)
            if not prompts:
                self._clear_preview()
                self._commit_after_preview = False
                return
            plane, channel_axis = extract_plane(image, geom)
            channels = self._channels()
        except PromptsegError as exc:
            self._clear_preview()
            self._commit_after_preview = False
            notify_exception(exc, "preview")
            return
        model, device, normalize, name = self.model_name, self.device, self.normalize_combo.currentText(), image.name
        version, object_size = self._version, self.object_size

        def task(progress, cancel) -> SegmentationResult:
            segmenter = load_segmenter(model, device=device)
            return segment_prompts(
                plane,
                segmenter,
                boxes=prompts.boxes,
                positive_points=prompts.positive,
                negative_points=prompts.negative,
                object_size=object_size,
                channel_axis=channel_axis,
                channels=channels,
                normalize=normalize,
                name=f"image layer '{name}'",
                progress=progress,
                cancel=cancel,
            )

        def done(result: SegmentationResult) -> None:
            if version != self._version:
                return  # the prompts changed meanwhile; the preview for the newer prompts is on its way
            for message in result.warnings:
                notify_once(message, self._shown_warnings)
            self.preview = _Preview(geom, result.labels, version, prompts, shapes, points)
            self._show_preview(geom, result.labels)
            n = int(result.labels.max())
            seconds = sum(result.timings.values())
            self.runner.widget.set_message(f"preview: {n} object(s) in {seconds:.2f} s")
            if self._commit_after_preview:
                self._commit_after_preview = False
                self.commit()

        def failed(exc: BaseException) -> None:
            self._commit_after_preview = False
            if version == self._version:
                self._clear_preview()

        self.runner.submit("preview", "preview", task, done, failed)

    def find_all(self) -> None:
        """Every object like the boxed examples on the displayed plane -> a new Labels layer (nothing else changes)."""
        if self._no_image():
            return
        try:
            image, geom = self._geometry()
            prompts = gather_prompts(self.viewer, image, geom, self.shapes_picker.layer(), None)
            if not prompts.boxes:
                raise PromptsegError("find all: draw boxes around a few example objects on this plane first")
            plane, channel_axis = extract_plane(image, geom)
            channels = self._channels()
        except PromptsegError as exc:
            notify_exception(exc, "find all")
            return
        model, device, normalize, name = self.model_name, self.device, self.normalize_combo.currentText(), image.name
        boxes, object_size = prompts.boxes, self.object_size

        def task(progress, cancel) -> InstanceResult:
            progress(0.0, f"loading {model}")
            segmenter = load_segmenter(model, device=device)
            return find_all_like(
                plane,
                boxes,
                segmenter=segmenter,
                object_size=object_size,
                channel_axis=channel_axis,
                channels=channels,
                normalize=normalize,
                name=f"image layer '{name}'",
                progress=progress,
                cancel=cancel,
            )

        def done(result: InstanceResult) -> None:
            target = napari.layers.Labels(
                np.zeros(geom.labels_shape, dtype=np.uint32),
                name=f"{name} find-all",
                scale=geom.scale,
                translate=geom.translate,
                **({"affine": geom.affine} if geom.affine is not None else {}),
            )
            above = self.viewer.layers.index(image) + 1 if image in self.viewer.layers else len(self.viewer.layers)
            self.viewer.layers.insert(above, target)
            commit_to_labels(target, result.labels, geom)
            for message in result.warnings:
                notify_once(message, self._shown_warnings)
            scale = result.scale
            where = f" at scale {scale.scale:.2f} in {scale.tiles} tile(s)" if scale is not None else ""
            self.runner.widget.set_summary(
                f"found {len(result.scores)} object(s) like the {len(boxes)} example(s){where} -> '{target.name}'"
            )

        self.runner.submit("find-all", f"finding all like the {len(boxes)} example(s)", task, done)

    def commit(self) -> None:
        """Write the preview objects into the target Labels layer as new ids; existing labels are never replaced."""
        fresh = self.preview is not None and self.preview.version == self._version
        if not fresh and (self._preview_timer.isActive() or self.runner.busy):
            self._commit_after_preview = True  # commit as soon as the preview of the current prompts arrives
            self.runner.widget.set_message("commit waits for the preview ...")
            return
        if not fresh or self.preview is None or not self.preview.labels.any():
            show_warning("nothing to commit: draw a box or click a positive point, and wait for the preview")
            return
        preview = self.preview
        restore = self._keep_active_layer()
        try:
            target = self.target_picker.layer()
            if target is None:
                target = self._new_target(preview.geom)
            new_ids = commit_to_labels(target, preview.labels, preview.geom)
        except PromptsegError as exc:
            notify_exception(exc, "commit")
            return
        finally:
            restore()
        if not new_ids:
            show_warning(f"nothing committed: every preview pixel is already labelled in '{target.name}'")
            return
        ids = f"{new_ids[0]}" if len(new_ids) == 1 else f"{new_ids[0]}-{new_ids[-1]}"
        self.runner.widget.set_message(f"committed {len(new_ids)} object(s) to '{target.name}' as id {ids}")
        self._remove_prompts(preview)
        self._clear_preview()

    def _new_target(self, geom: PlaneGeometry) -> napari.layers.Labels:
        kwargs = {"affine": geom.affine} if geom.affine is not None else {}
        target = napari.layers.Labels(
            np.zeros(geom.labels_shape, dtype=np.uint32),
            name=TARGET_NAME,
            scale=geom.scale,
            translate=geom.translate,
            **kwargs,
        )
        image = self.image_picker.layer()
        above = self.viewer.layers.index(image) + 1 if image in self.viewer.layers else len(self.viewer.layers)
        self.viewer.layers.insert(above, target)
        self.target_picker.set_layer(target)
        return target

    def _remove_prompts(self, preview: _Preview) -> None:
        """Remove the prompts that made the committed objects (only those of that plane)."""
        if preview.shapes is not None and preview.prompts.shape_indices and preview.shapes in self.viewer.layers:
            preview.shapes.selected_data = set()
            preview.shapes.remove(preview.prompts.shape_indices)
        if preview.points is not None and preview.prompts.point_indices and preview.points in self.viewer.layers:
            preview.points.selected_data = set()
            preview.points.remove(preview.prompts.point_indices)

    def clear_prompts(self) -> None:
        """Remove every box and click from the prompt layers and clear the preview."""
        shapes, points = self.shapes_picker.layer(), self.points_picker.layer()
        if shapes is not None and len(shapes.data):
            shapes.data = []
        if points is not None and len(points.data):
            points.remove(list(range(len(points.data))))
        self._clear_preview()
