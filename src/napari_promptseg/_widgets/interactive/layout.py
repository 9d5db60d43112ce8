"""The Interactive widget's names, keys and controls (built here, wired to the widget's handlers)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import napari
import napari.layers
from qtpy.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QRadioButton,
)

from ...methods.volume import STOP_IOU
from ...models.preprocessing import NORMALIZATIONS
from .._common import (
    ChannelAxisBox,
    LayerPicker,
    SegmenterBox,
    available_devices,
    controls_layout,
    fraction_box,
)
from .geometry import POSITIVE

if TYPE_CHECKING:
    from .widget import InteractiveWidget

PREVIEW_NAME = "promptseg preview"
NO_IMAGE = "no image layer: open an image (File > Open Sample > Prompt segmentation), then draw boxes or click"
TARGET_NAME = "promptseg labels"
TARGET_IMAGE_KEY = "promptseg_target_of"  # the unique id of the image a target layer was made for
#: the seed picker's first entry: propagate the objects prompted on the plane, not a Labels layer's
SEED_FROM_PROMPTS = "the prompts on this plane"
#: the status line in a 3D view (no plane to embed or prompt on), said quietly: it is no error
VIEW_3D = "3D view: prompts segment one 2D plane; switch the viewer to 2D (Ctrl+Y)"
BOXES_NAME = "promptseg boxes"
POINTS_NAME = "promptseg points"
POLARITY_COLOURS = {True: "lime", False: "red"}
TOGGLE_KEY = "T"
COMMIT_KEY = "Shift-C"
#: clears every prompt (the button "Clear prompts"); micro-sam's Shift-C commits here, as this widget's always did
CLEAR_KEY = "Shift-X"
UNDO_KEY = "Control-Z"  # on the prompt layers: undo the last commit (they have no undo of their own)
PREVIEW_DELAY_MS = 150  # prompt edits come in bursts (add + select + move events); decode once per burst
PLANE_DELAY_MS = 300  # scrubbing a slider must not encode every plane it passes
#: the image layer's events that move it in the world (its preview is stale then)
PLACEMENT_EVENTS = ("scale", "translate", "rotate", "shear", "affine")


def build_controls(widget: InteractiveWidget) -> None:
    """Create the widget's controls as its attributes, lay them out and connect them to its handlers."""
    v = widget.viewer
    widget.image_picker = LayerPicker(v, napari.layers.Image)
    widget.image_picker.setToolTip("Image to segment; for a stack, the displayed 2D plane")
    widget.channel_combo = ChannelAxisBox()
    widget.channels_edit = widget.channel_combo.channels_edit
    widget.normalize_combo = QComboBox()
    widget.normalize_combo.addItems(list(NORMALIZATIONS))
    widget.normalize_combo.setToolTip("Intensity scaling before the model: auto = 0-255 for 8-bit, else percentiles")

    widget.shapes_picker = LayerPicker(v, napari.layers.Shapes, none_text="(no boxes)", auto_select=True)
    widget.shapes_picker.setToolTip("Shapes layer whose rectangles are box prompts (one object per box)")
    widget.points_picker = LayerPicker(v, napari.layers.Points, none_text="(no clicks)", auto_select=True)
    widget.points_picker.setToolTip(
        f"Points layer of clicks; feature '{POSITIVE}' marks positive (green) / negative (red)"
    )
    widget.new_prompts_button = QPushButton("New prompt layers")
    widget.new_prompts_button.setToolTip("Add a Shapes layer for boxes and a Points layer for clicks on this image")
    widget.positive_radio = QRadioButton("positive")
    widget.negative_radio = QRadioButton("negative")
    widget.positive_radio.setChecked(True)
    polarity = QButtonGroup(widget)
    polarity.addButton(widget.positive_radio)
    polarity.addButton(widget.negative_radio)
    widget._polarity_group = polarity
    for button in (widget.positive_radio, widget.negative_radio):
        button.setToolTip(
            f"Polarity of new clicks; {TOGGLE_KEY} toggles (and flips the selected clicks), whichever layer is "
            "selected but the boxes layer (there it is napari's path tool)"
        )
    widget.clear_button = QPushButton(f"Clear prompts ({CLEAR_KEY})")
    widget.clear_button.setToolTip(f"Remove every box and click of the prompt layers, on every plane ({CLEAR_KEY})")
    widget.object_size_spin = QDoubleSpinBox()
    widget.object_size_spin.setRange(0, 100_000)
    widget.object_size_spin.setDecimals(0)
    widget.object_size_spin.setSuffix(" px")
    widget.object_size_spin.setSpecialValueText("auto (from the boxes)")
    widget.object_size_spin.setToolTip(
        "Typical object diameter in pixels: sets the scale the model sees (small objects in a large image are "
        "segmented in tiles around them). Auto: the boxes' median size"
    )
    widget.propagate_button = QPushButton("Propagate through stack")
    widget.propagate_button.setToolTip(
        "3D image: segment the objects prompted on this plane (boxes, clicks), or take those of the seed Labels "
        "layer on this plane, and carry each plane by plane through the stack, both ways, until it ends; the result "
        "is a new Labels layer"
    )
    # a find-all, one-shot or text result, a commit target or a drawing seeds the propagation as the CLI's methods do
    widget.seed_picker = LayerPicker(v, napari.layers.Labels, none_text=SEED_FROM_PROMPTS)
    widget.seed_picker.setToolTip(
        "What 'Propagate through stack' carries: the prompts on this plane, or the objects a Labels layer holds on "
        "this plane (e.g. a 'find all' result, the committed labels, a drawing)"
    )
    # when a carried object ends, as the CLI's --stop-iou and propagate_through_stack's stop_iou
    widget.stop_iou_spin = fraction_box(
        STOP_IOU,
        "Propagate through stack: an object ends on the plane where its mask overlaps the previous plane's by less "
        "than this (IoU)",
    )
    widget.find_all_button = QPushButton("Find all like these")
    widget.find_all_button.setToolTip(
        "Every object in the image like the boxed examples, as a new Labels layer (box 2-5 typical objects)"
    )

    widget.model_combo = SegmenterBox()
    widget.device_combo = QComboBox()
    widget.device_combo.addItems(available_devices())
    widget.auto_embed_check = QCheckBox("embed when the image or plane changes")
    widget.auto_embed_check.setChecked(True)
    widget.embed_button = QPushButton("Compute embedding")

    widget.target_picker = LayerPicker(v, napari.layers.Labels, none_text=f"new layer '{TARGET_NAME}'")
    widget.target_picker.setToolTip("Labels layer that receives committed objects as new ids; existing labels stay")
    widget.commit_button = QPushButton(f"Commit ({COMMIT_KEY})")
    widget.commit_button.setToolTip(
        f"Write the preview into the target as new labels ({COMMIT_KEY}, whichever layer is selected; undo: Ctrl+Z on "
        "the target or on the prompt layers)"
    )

    image_box = QGroupBox("Image")
    form = QFormLayout(image_box)
    form.addRow("image", widget.image_picker)
    widget.channel_combo.add_rows(form)
    form.addRow("intensity", widget.normalize_combo)

    prompt_box = QGroupBox("Prompts")
    form = QFormLayout(prompt_box)
    form.addRow("boxes", widget.shapes_picker)
    form.addRow("clicks", widget.points_picker)
    row = QHBoxLayout()
    row.addWidget(widget.positive_radio)
    row.addWidget(widget.negative_radio)
    form.addRow("new clicks", row)
    row = QHBoxLayout()
    row.addWidget(widget.new_prompts_button)
    row.addWidget(widget.clear_button)
    form.addRow(row)
    form.addRow("object size", widget.object_size_spin)
    form.addRow(widget.find_all_button)
    form.addRow("propagate", widget.seed_picker)
    row = QHBoxLayout()
    row.addWidget(widget.propagate_button)
    row.addWidget(QLabel("stop IoU"))
    row.addWidget(widget.stop_iou_spin)
    form.addRow(row)

    model_box = QGroupBox("Model")
    form = QFormLayout(model_box)
    widget.model_combo.add_rows(form)
    form.addRow("device", widget.device_combo)
    form.addRow(widget.auto_embed_check)
    form.addRow(widget.embed_button)

    result_box = QGroupBox("Result")
    form = QFormLayout(result_box)
    form.addRow("target", widget.target_picker)
    form.addRow(widget.commit_button)

    layout = controls_layout(widget, widget.runner)
    for box in (image_box, prompt_box, model_box, result_box):
        layout.addWidget(box)
    layout.addStretch(1)

    widget.image_picker.layer_changed.connect(widget._on_image_changed)
    widget.channel_combo.currentIndexChanged.connect(widget._on_image_options_changed)
    widget.channels_edit.editingFinished.connect(widget._on_image_options_changed)
    widget.normalize_combo.currentIndexChanged.connect(widget._on_image_options_changed)
    widget.shapes_picker.layer_changed.connect(lambda layer: widget._on_prompt_layer_changed("shapes", layer))
    widget.points_picker.layer_changed.connect(lambda layer: widget._on_prompt_layer_changed("points", layer))
    widget.new_prompts_button.clicked.connect(widget.new_prompt_layers)
    widget.positive_radio.toggled.connect(widget._on_polarity_changed)
    widget.clear_button.clicked.connect(widget.clear_prompts)
    widget.object_size_spin.valueChanged.connect(widget._on_image_options_changed)
    widget.find_all_button.clicked.connect(widget.find_all)
    widget.propagate_button.clicked.connect(widget.propagate)
    widget.model_combo.currentIndexChanged.connect(widget._on_image_options_changed)
    widget.model_combo.weights_file.changed.connect(widget._on_image_options_changed)  # other weights: embed again
    widget.device_combo.currentIndexChanged.connect(widget._on_image_options_changed)
    widget.embed_button.clicked.connect(widget.compute_embedding)
    widget.commit_button.clicked.connect(widget.commit)
