"""One-shot reference widget: a reference image + its Labels layer -> the same tissue in a target image, stack or
folder.

Thin: it gathers layers and options on the main thread, runs :func:`napari_promptseg.methods.oneshot.segment_like`
(or :func:`..methods.instances.segment_instances_like` for many instances) in a :class:`._common.TaskRunner` worker
with progress and cancel, and adds the result as a *new* Labels layer plus the chosen prompt points as a Points
layer (positive lime, negative red). Existing layers are never modified.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import napari
import napari.layers
import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..errors import CancelledError, PromptsegError
from ..io.images import IMAGE_SUFFIXES
from ..io.listing import list_images
from ._common import (
    LayerPicker,
    LayerPixels,
    TaskRunner,
    _levels,
    displayed_plane,
    exemplar_layers,
    layer_pixels,
    level_factors,
    load_triton_safely,
    placement,
    plane_shape,
    read_exemplar,
    read_reference_plane,
    task_segmenter,
    unproxied,
    whole_image_level,
)

if TYPE_CHECKING:
    from ..io.library import LibraryEntry

#: mode choice -> run_oneshot's ``instances`` (None: decided by the reference labels)
MODES = {"auto": None, "single region": False, "many instances": True}
#: the checkbox saying the reference labels only some of its objects (named in the advice when it is not ticked)
PARTIAL_LABELS_TEXT = "reference labels only some objects"
POSITIVE_COLOUR, NEGATIVE_COLOUR = "lime", "red"


@dataclass
class OneShotOutput:
    """Everything the main thread needs to add layers: one entry per target plane or file."""

    labels: list[np.ndarray]
    positives: list[np.ndarray]  # (P, 2) x, y per target
    negatives: list[np.ndarray]
    names: list[str]
    stacked: bool  # True: targets were the planes of one layer -> one 3D Labels layer
    warnings: list[str] = field(default_factory=list)
    scales: list[dict] = field(default_factory=list)  # working scale per target (many-instances mode)
    labelling_advice: str | None = None  # few objects labelled, not said to be partial: why little may be found
    skipped: list[str] = field(default_factory=list)  # a folder's files that could not be done, each with why


def target_planes(data: np.ndarray, rgb: bool, name: str = "target layer") -> tuple[list[np.ndarray], bool]:
    """A 2D (or RGB) image -> [image]; a stack (first axis = planes) -> its planes. ``name``: the layer, as the
    refusal of other shapes names it (checked before a lazy array is read)."""
    stacked = is_stack(data, rgb, name)
    return read_planes(data, stacked), stacked


def is_stack(data, rgb: bool, name: str = "target layer") -> bool:
    """Whether a layer's array is a stack of 2D (or RGB) planes (first axis = planes) rather than one plane; other
    shapes are refused, naming the layer. Only the shape is looked at (cheap on napari's main thread)."""
    plane_ndim = 3 if rgb else 2
    if np.ndim(data) not in (plane_ndim, plane_ndim + 1):
        shape = tuple(np.shape(data))
        raise PromptsegError(
            f"{name} has {len(shape)} dimensions (shape {shape}{', RGB' if rgb else ''}); expected a 2D image or a "
            "stack of 2D planes: pick one stack (e.g. one time point or channel: Layers > Split Stack)"
        )
    return np.ndim(data) == plane_ndim + 1


def read_planes(data, stacked: bool, cancel=None) -> list[np.ndarray]:
    """The planes of a (lazy) array in memory, a stack's one by one (``cancel`` checked between them). Reads
    pixels: run it in a worker."""
    if not stacked:
        return [np.asarray(data)]
    planes = []
    for i in range(np.shape(data)[0]):
        if cancel is not None and cancel():
            raise CancelledError("cancelled")
        planes.append(np.asarray(data[i]))
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


@dataclass
class OneShotPixels:
    """The inputs read (in the worker): the reference plane and its labels, the targets (planes or files)."""

    reference: np.ndarray
    labels: np.ndarray
    reference_plane: int | None  # the plane of a stack reference its labels mark
    targets: list
    names: list[str]
    stacked: bool
    factors: np.ndarray  # the downsampling of each axis of the target level read


def read_oneshot_inputs(inputs: OneShotInputs, progress, cancel) -> OneShotPixels:
    """Read the reference, its labels and the target (a pyramid target at the level the CLI reads), refusing
    labels that do not fit or are empty, naming the layer. Runs in the worker."""
    ref, ref_labels = inputs.reference, inputs.reference_labels
    progress(0.0, f"reading '{ref.name}'")
    # a stack's reference is its labelled (or displayed) plane: the volume's other planes are the usual targets
    reference, labels, plane = read_reference_plane(ref, ref_labels, inputs.shown)
    if labels.shape != reference.shape[: labels.ndim] or labels.ndim != 2:
        raise PromptsegError(
            f"reference labels '{ref_labels.name}' of shape {labels.shape} do not match the 2D reference image "
            f"'{ref.name}' of shape {reference.shape}"
        )
    if not labels.any():
        raise PromptsegError(f"reference labels '{ref_labels.name}' are empty; paint the object first")
    target = inputs.target
    if target is None:
        return OneShotPixels(reference, labels, plane, inputs.files, [p.stem for p in inputs.files], False, np.ones(2))
    if cancel():
        raise CancelledError("cancelled")
    data = target.data
    if target.multiscale:
        from ..methods.instances import is_many_objects

        many = inputs.instances
        if many if many is not None else inputs.partial or is_many_objects(labels):
            data = _pyramid_level(target, labels, inputs.object_size)
        else:  # one region: the level a whole-image method reads, as the CLI
            data = whole_image_level(target)[0]
    stacked = is_stack(data, target.rgb, f"target layer '{target.name}'")
    progress(0.0, f"reading '{target.name}'")
    planes = read_planes(data, stacked, cancel)
    # a plane named as the CLI names it: its warnings then name the plane once (methods.volume.plane_warnings)
    names = [f"{target.name} plane {i}" for i in range(len(planes))] if stacked else [target.name]
    return OneShotPixels(reference, labels, plane, planes, names, stacked, level_factors(target, data))


def _pyramid_level(target: LayerPixels, labels: np.ndarray, object_size: float | None):
    """A multiscale target in the many-instances mode is read at the pyramid level that matches the working scale
    of the reference's objects (assumed at the target's full-resolution pixel size), as the CLI reads it."""
    from ..methods.instances import reference_objects
    from ..tiling import choose_scale, pyramid_level, typical_object_size

    size = object_size or typical_object_size(reference_objects(labels))
    shapes = [plane_shape(level, target.rgb) for level in target.data]
    # LiteMedSAM, the widget's model, sees 256 px
    scale = choose_scale(shapes[0], 256, size)
    level, _ = pyramid_level(shapes, scale.scale)
    return target.data[level]


def run_oneshot(
    reference: np.ndarray,
    reference_labels: np.ndarray,
    targets: list[np.ndarray],
    names: list[str],
    *,
    stacked: bool,
    strategy: str,
    instances: bool | None,
    object_size: float | None = None,
    factor: float = 1.0,
    partial: bool = False,
    reference_name: str = "reference",
    progress,
    cancel,
) -> OneShotOutput:
    """The worker body (no Qt, no layers), as the CLI runs one-shot. ``instances=None``: many instances when the
    reference labels hold several objects (or only some of its objects are labelled: ``partial``, which learns
    background only near them); ``object_size``: the objects' diameter in full-resolution pixels (None: measured);
    ``factor``: the downsampling of the pyramid level the targets were read at. The planes of a stack share one
    object size and are linked into objects across planes. ``reference_name``: the reference as errors name it."""
    from ..io import read_image
    from ..methods.instances import (
        count_objects,
        fit_exemplars,
        is_many_objects,
        known_near_labels,
        level_object_size,
        segment_with_exemplars,
        stack_object_size,
    )
    from ..methods.labelling_advice import few_labels_warning
    from ..methods.oneshot import segment_like
    from ..methods.volume import segment_stack
    from ..models.preprocessing import as_channels_last

    ref = as_channels_last(reference, name=reference_name)  # refused naming the layer (NaN...), not as 'reference'
    progress(0.0, "loading model")
    segmenter = task_segmenter(progress, cancel)
    out = OneShotOutput([], [], [], [], stacked)
    if instances is None:
        instances = partial or is_many_objects(reference_labels)
    exemplars, target_size = None, None
    if instances:
        progress(0.0, "learning the reference objects")
        # the reference is fitted at its own (full) resolution; the targets' level gets the size divided
        exemplars = fit_exemplars(
            segmenter,
            ref,
            reference_labels,
            known=known_near_labels(reference_labels) if partial else None,
            object_size=object_size,
            progress=lambda fraction, message: progress(0.0, message),
            cancel=cancel,
        )
        target_size = level_object_size(exemplars, object_size, factor)
        if stacked and target_size is None:  # the planes of one stack share one size (as the CLI's stacks)
            target_size = stack_object_size(exemplars, targets, segmenter.input_size)

    def segment_one(k: int, image: np.ndarray):
        name = names[k]

        def sub(fraction: float, message: str) -> None:
            progress((k + fraction) / len(targets), f"{name}: {message}")

        if exemplars is not None:
            hwc = as_channels_last(image, name=name)
            res = segment_with_exemplars(
                segmenter, exemplars, hwc, object_size=target_size, name=name, progress=sub, cancel=cancel
            )
            out.positives.append((res.boxes[:, :2] + res.boxes[:, 2:]) / 2 if len(res.boxes) else np.zeros((0, 2)))
            out.negatives.append(np.zeros((0, 2)))
            if res.scale is not None:
                out.scales.append(res.scale.summary())
        else:
            res = segment_like(
                reference,
                reference_labels > 0,
                image,
                segmenter=segmenter,
                strategy=strategy,  # type: ignore[arg-type]
                warn_many=False,  # the mode chose one region
                names=[name],
                progress=sub,
                cancel=cancel,
            )[0]
            out.positives.append(res.positives)
            out.negatives.append(res.negatives)
        out.names.append(name)
        return res

    if stacked:  # ids linked across planes, as the CLI's stacks (segment_stack checks cancel between planes)
        stack = segment_stack(targets, lambda plane, z: segment_one(z, plane), name="target stack", cancel=cancel)
        out.labels, out.warnings = list(stack.labels), stack.warnings
    else:
        failed: list[PromptsegError] = []
        for k, target in enumerate(targets):
            if cancel():
                raise CancelledError("cancelled")
            if not isinstance(target, (str, Path)):
                res = segment_one(k, target)
            else:  # a folder's file that cannot be done is said and skipped, as the CLI's batch goes on past it
                try:
                    res = segment_one(k, read_image(target))
                except PromptsegError as exc:
                    failed.append(exc)
                    out.skipped.append(f"{Path(target).name}: {exc}")
                    continue
            out.labels.append(res.labels)
            out.warnings += res.warnings
        if failed and not out.labels:  # nothing done: the run failed, saying why
            raise failed[0]
    if exemplars is not None:
        out.labelling_advice = few_labels_warning(
            count_objects(reference_labels), partial, f"tick '{PARTIAL_LABELS_TEXT}'"
        )
    progress(1.0, "done")
    return out


class OneShotWidget(QWidget):
    """Reference image + Labels -> target layer/stack/folder -> new Labels layer + prompt Points layer."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        load_triton_safely()
        self.viewer = napari_viewer = unproxied(napari_viewer)
        self.runner = TaskRunner(self)
        self.reference = LayerPicker(napari_viewer, napari.layers.Image)
        self.reference_labels = LayerPicker(napari_viewer, napari.layers.Labels)
        # another image than the reference: the target started on the folder entry with a second image open
        self.target = LayerPicker(napari_viewer, napari.layers.Image, none_text="(folder below)", unlike=self.reference)
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("optional: folder of target images")
        # a folder typed or browsed to is the target (a target layer would otherwise take precedence unseen)
        self.folder.textChanged.connect(self._on_folder_text)  # a bound method: a lambda would hold the widget
        browse = QPushButton("…")
        browse.clicked.connect(self._browse)
        self.strategy = QComboBox()
        self.strategy.addItems(["sat", "persam", "matcher"])
        self.strategy.setToolTip("SAT (default), PerSAM-style or Matcher-style prompt search")
        self.mode = QComboBox()
        self.mode.addItems(list(MODES))
        self.mode.setToolTip(
            "auto: every similar object (instances) when the reference labels hold several objects, else one region"
        )
        self.object_size = QDoubleSpinBox()
        self.object_size.setRange(0, 100_000)
        self.object_size.setDecimals(0)
        self.object_size.setSuffix(" px")
        self.object_size.setSpecialValueText("auto (from the reference)")
        self.object_size.setToolTip("Typical object diameter in pixels (many instances): sets the working scale")
        self.partial_labels = QCheckBox(PARTIAL_LABELS_TEXT)
        self.partial_labels.setToolTip(
            "ticked: the reference's unlabelled objects are not background; background is learned only near the "
            "labelled objects (as 'find all like these' does), and every object like them is found. Unticked, every "
            "unlabelled pixel of the reference is taught as background: label all its objects"
        )
        self.show_points = QCheckBox("show prompt points")
        self.show_points.setChecked(True)
        self.run_button = QPushButton("Segment like the reference")
        self.run_button.clicked.connect(self.run)
        # reference library: the reference + its labels saved under a name answer text prompts later (offline)
        self.library_name = QLineEdit()
        self.library_name.setPlaceholderText("e.g. gland")
        self.library_description = QLineEdit()
        self.library_description.setPlaceholderText("optional; synonyms separated by commas")
        self.save_button = QPushButton("Save reference to library…")
        self.save_button.setToolTip(
            "Save the reference image (cropped around its labels) and labels as a named exemplar; typed prompts "
            "are matched to its name. Saving a name again adds another exemplar (nothing is overwritten)."
        )
        self.save_button.clicked.connect(self.save_to_library)

        form = QFormLayout()
        form.addRow("reference image", self.reference)
        form.addRow("reference labels", self.reference_labels)
        form.addRow("target", self.target)
        row = QHBoxLayout()
        row.addWidget(self.folder, 1)
        row.addWidget(browse)
        form.addRow("target folder", row)
        form.addRow("strategy", self.strategy)
        form.addRow("mode", self.mode)
        form.addRow("object size", self.object_size)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.partial_labels)
        layout.addWidget(self.show_points)
        layout.addWidget(self.run_button)
        layout.addWidget(self.runner.widget)
        library_form = QFormLayout()
        library_form.addRow("library name", self.library_name)
        library_form.addRow("description", self.library_description)
        layout.addLayout(library_form)
        layout.addWidget(self.save_button)
        layout.addStretch(1)
        self.last_output: OneShotOutput | None = None
        self.last_saved: LibraryEntry | None = None  # the library entry "Save reference to library" wrote last

    def _on_folder_text(self, text: str) -> None:
        if text.strip():
            self.target.set_layer(None)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of target images")
        if folder:
            self.folder.setText(folder)

    @property
    def is_idle(self) -> bool:
        return not self.runner.busy

    def _inputs(self) -> OneShotInputs:
        """The layers and options of a run, as references: nothing is read here, on napari's main thread (the
        worker reads them: :func:`read_oneshot_inputs`)."""
        ref, ref_labels = self.reference.layer(), self.reference_labels.layer()
        if ref is None:
            raise PromptsegError("choose a reference image layer")
        if ref_labels is None:
            raise PromptsegError("choose the Labels layer that marks the object in the reference image")
        options = {
            "instances": MODES[self.mode.currentText()],
            "partial": self.partial_labels.isChecked(),
            "object_size": float(self.object_size.value()) or None,
        }
        reference = (layer_pixels(ref), layer_pixels(ref_labels), displayed_plane(self.viewer, ref))
        target = self.target.layer()
        if target is not None:
            pixels = layer_pixels(target)
            is_stack(_levels(pixels)[0], target.rgb, f"target layer '{target.name}'")  # its shape only
            return OneShotInputs(*reference, pixels, [], **options)
        folder = self.folder.text().strip()
        if not folder:
            raise PromptsegError("choose a target image layer or a folder of target images")
        path = Path(folder)
        if not path.is_dir():
            raise PromptsegError(f"target folder {folder} does not exist")
        # the images, in the order, the CLI and napari's reader take from this folder; files only (each is read whole)
        files = list_images(path, stores=False)
        if not files:
            raise PromptsegError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in target folder {folder}")
        return OneShotInputs(*reference, None, files, **options)

    def save_to_library(self) -> bool:
        """Save the reference layer + its labels as a named library entry. The layers are read and the entry written
        in the worker (a slide's or a stack's pixels read here froze napari); when done, the entry is
        :attr:`last_saved`. Returns whether the task was taken."""
        try:
            ref, ref_labels = self.reference.layer(), self.reference_labels.layer()
            if ref is None or ref_labels is None:
                raise PromptsegError("choose the reference image and its Labels layer to save to the library")
            name = self.library_name.text().strip()
            if not name:
                raise PromptsegError("type a library name for the reference (e.g. 'gland')")
        except PromptsegError as exc:
            self.runner.refuse(exc, "save to library")
            return False
        layers = exemplar_layers(self.viewer, ref, ref_labels)
        description = self.library_description.text()
        scale = tuple(float(s) for s in ref.scale[-2:])
        # as run() decides: many objects, or only some objects labelled, find every one like them later too
        # (mode "single region" saves one region, and its partial labels do not apply)
        many = MODES[self.mode.currentText()] is not False
        partial = many and self.partial_labels.isChecked()

        def task(progress, cancel):
            from ..io.library import ReferenceLibrary
            from ..methods.instances import is_many_objects

            progress(0.0, f"reading '{ref.name}'")
            image, labels, source = read_exemplar(layers, "reference labels")
            if cancel():
                raise CancelledError("cancelled")
            library = ReferenceLibrary.open()
            entry = library.add(
                name,
                image,
                labels,
                description,
                source=source,
                pixel_size=None if scale == (1.0, 1.0) else scale,
                instances=many and (partial or is_many_objects(labels)),
                partial_labels=partial,
            )
            return entry, library.path

        def done(result) -> None:
            from napari.utils.notifications import show_info, show_warning

            from ..methods.library import exemplar_advice

            entry, path = result
            self.last_saved = entry
            message = f"saved '{entry.name}' ({entry.kind}) to the reference library {path} (id {entry.id})"
            self.runner.widget.done(message)
            show_info(message)
            advice = exemplar_advice(entry, f"remove it and save it again with '{PARTIAL_LABELS_TEXT}' ticked")
            if advice:
                show_warning(advice)

        return self.runner.submit("library", f"save '{name}' to the library", task, done, inputs=(ref, ref_labels))

    def run(self) -> None:
        try:
            inputs = self._inputs()
        except PromptsegError as exc:
            self.runner.refuse(exc, "one-shot")
            return
        strategy = self.strategy.currentText()
        layer = self.target.layer() if inputs.target is not None else None
        reference_name = inputs.reference.name

        def task(progress, cancel) -> tuple[OneShotOutput, OneShotPixels]:
            pixels = read_oneshot_inputs(inputs, progress, cancel)
            output = run_oneshot(
                pixels.reference,
                pixels.labels,
                pixels.targets,
                pixels.names,
                stacked=pixels.stacked,
                strategy=strategy,
                instances=inputs.instances,
                object_size=inputs.object_size,
                factor=float(pixels.factors[-1]),
                partial=inputs.partial,
                reference_name=f"reference image layer '{reference_name}'",
                progress=progress,
                cancel=cancel,
            )
            pixels.targets = []  # the planes read: not kept alive while the layers are added
            return output, pixels

        def done(result: tuple[OneShotOutput, OneShotPixels]) -> None:
            output, pixels = result
            self.last_output = output
            self._add_layers(output, layer, pixels.factors if layer is not None else None)
            if pixels.reference_plane is not None:  # which plane of the stack the reference was
                summary = self.runner.widget.summary
                summary.setText(f"{summary.text()}\nreference: plane {pixels.reference_plane} of '{reference_name}'")

        self.runner.submit(
            "oneshot", f"one-shot ({strategy})", task, done, inputs=(layer,) if layer is not None else ()
        )

    def _add_layers(
        self, output: OneShotOutput, layer: napari.layers.Image | None, factors: np.ndarray | None = None
    ) -> None:
        """``factors``: the downsampling of each axis of the pyramid level that was segmented (default none)."""
        from napari.utils.notifications import show_warning

        kw = {} if layer is None else placement(layer, 3 if output.stacked else 2, factors)
        if output.stacked:
            data = np.stack(output.labels)
            self.viewer.add_labels(data, name=f"{layer.name} one-shot", **kw)
            points = [
                np.column_stack([np.full(len(p), k), p[:, 1], p[:, 0]]) if len(p) else np.zeros((0, 3))
                for k, p in enumerate(output.positives)
            ]
            negatives = [
                np.column_stack([np.full(len(p), k), p[:, 1], p[:, 0]]) if len(p) else np.zeros((0, 3))
                for k, p in enumerate(output.negatives)
            ]
            self._add_points(np.concatenate(points), np.concatenate(negatives), f"{layer.name} one-shot prompts", kw)
        else:
            for labels, pos, neg, name in zip(
                output.labels, output.positives, output.negatives, output.names, strict=True
            ):
                self.viewer.add_labels(labels, name=f"{name} one-shot", **kw)
                self._add_points(pos[:, ::-1], neg[:, ::-1], f"{name} one-shot prompts", kw)
        # a stack's objects are linked across its planes: counted once
        groups = [np.stack(output.labels)] if output.stacked else output.labels
        objects = sum(int(len(np.unique(labels))) - int((labels == 0).any()) for labels in groups)
        scale = ""
        if output.scales:
            first = output.scales[0]
            scale = f"; working scale {first['scale']} ({first['source']}), {first['tiles']} tile(s)"
        # a reference that does not transfer is said where the result is read, not only in a passing notification
        untransferred = [w for w in dict.fromkeys(output.warnings) if "does not transfer" in w]
        caution = ""
        if untransferred:
            more = f" (+{len(untransferred) - 1} more)" if len(untransferred) > 1 else ""
            caution = f"\nwarning: {untransferred[0]}{more}"
        if output.labelling_advice:  # the likely reason few objects came back
            caution += f"\nwarning: {output.labelling_advice}"
            show_warning(output.labelling_advice)
        if output.skipped:  # a folder's files that could not be done: the others' layers are there
            more = f" (+{len(output.skipped) - 1} more)" if len(output.skipped) > 1 else ""
            caution += f"\nskipped {len(output.skipped)} file(s): {output.skipped[0]}{more}"
            for reason in output.skipped:
                show_warning(f"one-shot: skipped {reason}")
        self.runner.widget.set_summary(
            f"one-shot: {objects} object(s) in {len(output.labels)} target(s){scale}{caution}"
        )
        for warning in dict.fromkeys(output.warnings):
            show_warning(warning)

    def _add_points(self, positives: np.ndarray, negatives: np.ndarray, name: str, kw: dict) -> None:
        if not self.show_points.isChecked() or len(positives) + len(negatives) == 0:
            return
        data = np.concatenate([positives, negatives])
        colours = [POSITIVE_COLOUR] * len(positives) + [NEGATIVE_COLOUR] * len(negatives)
        self.viewer.add_points(
            data,
            name=name,
            face_color=colours,
            size=8,
            properties={"positive": np.r_[np.ones(len(positives), bool), np.zeros(len(negatives), bool)]},
            **kw,
        )
