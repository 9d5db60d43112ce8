"""The One-shot widget itself: its controls, a run (the inputs gathered here, read and segmented in the worker) and
the result layers added on the main thread; and saving the reference to the library."""

from __future__ import annotations

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
    QWidget,
)

from ...errors import PromptsegError
from ...methods.volume.stacks import plane_word
from .._common import (
    OBJECT_SIZE_KEY,
    ChannelAxisBox,
    LayerPicker,
    SaveUndo,
    SegmenterBox,
    TaskRunner,
    _levels,
    check_channel_axis,
    controls_layout,
    displayed_plane,
    exemplar_layers,
    labels_plane_map,
    layer_pixels,
    load_triton_safely,
    notify_warning,
    placement,
    stack_axis_of,
    submit_save_exemplar,
    task_segmenter,
    unproxied,
)
from .._common.time_points import (
    TimePoint,
    at_time_point,
    is_time_lapse,
    shown_time_point,
    time_point_words,
    write_time_point,
)
from .inputs import OneShotInputs, OneShotPixels, folder_targets, is_stack, read_oneshot_inputs
from .more_references import MoreReferences
from .results import PARTIAL_LABELS_TEXT, OneShotOutput, result_summary, run_oneshot

if TYPE_CHECKING:
    from ...io.library import LibraryEntry

#: mode choice -> run_oneshot's ``instances`` (None: decided by the reference labels)
MODES = {"auto": None, "single region": False, "many instances": True}
POSITIVE_COLOUR, NEGATIVE_COLOUR = "lime", "red"


class OneShotWidget(QWidget):
    """Reference image + Labels -> target layer/stack/folder -> new Labels layer + prompt Points layer."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        load_triton_safely()
        self.viewer = napari_viewer = unproxied(napari_viewer)
        self.runner = TaskRunner(self)
        # the reference or its labels removed (to open or draw them again): chosen again, not the next layer (the
        # target image, an earlier run's result), which the next run took as the reference unsaid
        self.reference = LayerPicker(
            napari_viewer, napari.layers.Image, none_text="(choose an image layer)", empty_when_removed=True
        )
        self.reference_labels = LayerPicker(
            napari_viewer, napari.layers.Labels, none_text="(choose a Labels layer)", empty_when_removed=True
        )
        # another image than the reference: the target started on the folder entry with a second image open. Removed,
        # it is chosen again, as the reference is: it took the next image unsaid (another target, an earlier input)
        self.target = LayerPicker(
            napari_viewer,
            napari.layers.Image,
            none_text="(folder below)",
            unlike=self.reference,
            empty_when_removed=True,
        )
        # references after the first, ensembled in one region (the CLI's repeated --reference)
        self.more_references = MoreReferences(napari_viewer)
        # a multichannel (C, Y, X) reference and target, as the CLI's --channel-axis (one axis for both)
        self.channel_axis = ChannelAxisBox()
        for picker in (self.reference, self.target):
            picker.layer_changed.connect(self._offer_channel_axis)
        self._offer_channel_axis()
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
        # as the CLI's --model: the Interactive widget's list (a model whose weights are missing downloads them)
        self.model = SegmenterBox("the promptable segmenter that cuts the objects out (and, by default, sees them)")
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
        self.library = QLineEdit()
        self.library.setPlaceholderText("default user library")
        self.library.setToolTip(
            "The reference library 'Save reference to library' adds to (the Text prompt widget's library field "
            "answers from the one it names)"
        )
        self.library_name = QLineEdit()
        self.library_name.setPlaceholderText("e.g. gland")
        self.library_description = QLineEdit()
        self.library_description.setPlaceholderText("optional; synonyms separated by commas")
        self.save_button = QPushButton("Save reference to library…")
        self.save_button.setToolTip(
            "Save the reference image (cropped around its labels) and labels as a named exemplar; typed prompts "
            "are matched to its name. Every reference (the further ones too) is saved as an exemplar of the name, "
            "which a prompt ensembles; saving a name again adds more exemplars (nothing is overwritten)"
        )
        self.save_button.clicked.connect(self.save_to_library)

        form = QFormLayout()
        form.addRow("reference image", self.reference)
        form.addRow("reference labels", self.reference_labels)
        form.addRow(self.more_references)
        form.addRow("target", self.target)
        row = QHBoxLayout()
        row.addWidget(self.folder, 1)
        row.addWidget(browse)
        form.addRow("target folder", row)
        self.channel_axis.add_rows(form)
        form.addRow("strategy", self.strategy)
        form.addRow("mode", self.mode)
        form.addRow("object size", self.object_size)
        self.model.add_rows(form)
        layout = controls_layout(self, self.runner, self.run_button)
        layout.addLayout(form)
        layout.addWidget(self.partial_labels)
        layout.addWidget(self.show_points)
        library_form = QFormLayout()
        library_form.addRow("library", self.library)
        library_form.addRow("library name", self.library_name)
        library_form.addRow("description", self.library_description)
        layout.addLayout(library_form)
        save_row = QHBoxLayout()
        save_row.addWidget(self.save_button, 1)
        self.save_undo = SaveUndo(self.runner)  # what the last save added, taken out again
        self.undo_save_button = self.save_undo.button
        save_row.addWidget(self.undo_save_button)
        layout.addLayout(save_row)
        layout.addStretch(1)
        self.last_output: OneShotOutput | None = None
        self.last_saved: LibraryEntry | None = None  # the library entry "Save reference to library" wrote last
        self.last_saved_set: list[LibraryEntry] = []  # every entry it wrote last (one per reference)

    def _offer_channel_axis(self, *_) -> None:
        """Another reference or target: its first axis may hold planes, not channels ('none' chosen again)."""
        self.channel_axis.offer([self.reference.layer(), self.target.layer()], keep=False)

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
        channel_axis, channels = self.channel_axis.checked(ref, f"reference image layer '{ref.name}'")
        options = {
            # a time-lapse reference's plane is a frame (its first axis, or the one after its channels)
            "reference_stack_axis": stack_axis_of(ref, 1 if channel_axis == 0 else 0),
            "instances": MODES[self.mode.currentText()],
            "partial": self.partial_labels.isChecked(),
            "object_size": float(self.object_size.value()) or None,
            "channel_axis": channel_axis,
            "channels": channels,
            # the labels' planes as napari lays them over the reference's (another Z scale or translate)
            "plane_map": labels_plane_map(self.viewer, ref, ref_labels, channel_axis),
        }
        if options["partial"] and options["instances"] is False:  # one region dropped it unsaid; the CLI refuses it
            raise PromptsegError(
                f"'{PARTIAL_LABELS_TEXT}' applies to the many-instances mode, and mode 'single region' asks for one "
                "region; untick it, or choose mode 'auto' or 'many instances'"
            )
        # partial labels find many instances too (auto), as run() decides
        many = options["instances"] or (options["instances"] is None and options["partial"])
        options["more_references"] = self._more_references(many, channel_axis)
        options["ensemble"] = self.more_references.ensemble.currentText()
        reference = (layer_pixels(ref), layer_pixels(ref_labels), displayed_plane(self.viewer, ref, channel_axis))
        target = self.target.layer()
        if target is not None:
            name = f"target layer '{target.name}'"
            check_channel_axis(target, channel_axis, name)
            pixels, time_point = layer_pixels(target), None
            if is_time_lapse(target, channel_axis):  # the volume of the time point shown, as the Interactive widget
                time_point = shown_time_point(self.viewer, target)
                pixels = at_time_point(pixels, time_point.index)
            is_stack(_levels(pixels)[0], target.rgb, name, channel_axis)  # its shape only
            # a time-lapse's planes are frames (its first axis, or the one after its channels or time)
            stack_axis = stack_axis_of(target, 1 if channel_axis == 0 or time_point is not None else 0)
            return OneShotInputs(*reference, pixels, [], **options, stack_axis=stack_axis, time_point=time_point)
        folder = self.folder.text().strip()
        if not folder:
            raise PromptsegError("choose a target image layer or a folder of target images")
        files, left_out = folder_targets(folder)
        return OneShotInputs(*reference, None, files, **options, left_out=left_out)

    def _more_references(self, many: bool, channel_axis: int | None) -> list:
        """The reference rows' layers as a run reads them (no pixel read), refused when a row lacks a layer or the
        mode is many instances, which takes one reference (as the CLI refuses several --reference there)."""
        pairs = self.more_references.pairs()
        if pairs and many:
            why = "mode 'many instances'" if self.mode.currentText() == "many instances" else f"'{PARTIAL_LABELS_TEXT}'"
            raise PromptsegError(
                f"{why} finds many instances, which take one reference (with its instance labels), and "
                f"{1 + len(pairs)} are given: remove the other references, or choose mode 'single region' to "
                "ensemble one region from them"
            )
        planes_axis = 1 if channel_axis == 0 else 0
        more = []
        for image, labels in pairs:
            check_channel_axis(image, channel_axis, f"reference image layer '{image.name}'")
            shown = displayed_plane(self.viewer, image, channel_axis)
            plane_map = labels_plane_map(self.viewer, image, labels, channel_axis)
            more.append(
                (layer_pixels(image), layer_pixels(labels), shown, stack_axis_of(image, planes_axis), plane_map)
            )
        return more

    def save_to_library(self) -> bool:
        """Save the reference layer + its labels, and every further reference's, as entries of one name in the
        library in the library field (default: the user's), as the Text prompt widget's "Add exemplar" does: all or
        none, said with their ids (:attr:`last_saved_set`). The layers are read and the entry written
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
        try:  # the references' channels, as a run reads them
            channel_axis, channels = self.channel_axis.checked(ref, f"reference image layer '{ref.name}'")
            more = self.more_references.pairs()  # every reference is saved, as a run ensembles them
            for image, _ in more:
                check_channel_axis(image, channel_axis, f"reference image layer '{image.name}'")
        except PromptsegError as exc:
            self.runner.refuse(exc, "save to library")
            return False
        # as run() decides: many objects, or only some objects labelled, find every one like them later too
        # (mode "single region" saves one region, and its partial labels do not apply)
        many = MODES[self.mode.currentText()] is not False

        def saved_all(entries: list[LibraryEntry]) -> None:
            self.last_saved, self.last_saved_set = entries[0], entries

        pairs = [(ref, ref_labels), *more]
        return submit_save_exemplar(
            self.runner,
            [exemplar_layers(self.viewer, image, labels, channel_axis, channels) for image, labels in pairs],
            "reference labels",
            self.library.text().strip() or None,
            task_name="library",
            title=f"save '{name}' to the library",
            saved=lambda entry: None,
            saved_all=saved_all,
            undo=self.save_undo,
            advice_fix=f"remove it and save it again with '{PARTIAL_LABELS_TEXT}' ticked",
            name=name,
            description=self.library_description.text(),
            scale=tuple(float(s) for s in ref.scale[-2:]),
            instances=None if many else False,  # None: many objects, or some labelled (partial), as run() decides
            partial=many and self.partial_labels.isChecked(),
        )

    def undo_last_save(self) -> bool:
        """Take what the last "Save reference to library" added out of the library it went to (:class:`SaveUndo`).
        Returns whether the task was taken."""
        return self.save_undo.undo()

    def run(self) -> None:
        try:
            inputs = self._inputs()
            model, weights = self.model.checked_choice()
        except PromptsegError as exc:
            self.runner.refuse(exc, "one-shot")
            return
        strategy = self.strategy.currentText()
        layer = self.target.layer() if inputs.target is not None else None
        reference_name = inputs.reference.name

        def task(progress, cancel) -> tuple[OneShotOutput, OneShotPixels]:
            progress(0.0, "loading model")
            segmenter = task_segmenter(progress, cancel, model, weights=weights)
            pixels = read_oneshot_inputs(inputs, segmenter.input_size, progress, cancel)
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
                channel_axis=inputs.channel_axis,
                channels=inputs.channels,
                reference_name=f"reference image layer '{reference_name}'",
                stack_axis=inputs.stack_axis,
                more_references=pixels.more_references,
                ensemble=inputs.ensemble,
                labels_name=inputs.reference_labels.name,
                segmenter=segmenter,
                progress=progress,
                cancel=cancel,
            )
            pixels.targets = []  # the planes read: not kept alive while the layers are added
            return output, pixels

        def done(result: tuple[OneShotOutput, OneShotPixels]) -> None:
            output, pixels = result
            self.last_output = output
            factors = pixels.factors if layer is not None else None
            self._add_layers(output, layer, factors, inputs.channel_axis, inputs.time_point)
            summary = self.runner.widget.summary
            if pixels.reference_plane is not None:  # which plane of the stack the reference was
                plane = f"{plane_word(inputs.reference_stack_axis)} {pixels.reference_plane}"
                summary.setText(f"{summary.text()}\nreference: {plane} of '{reference_name}'")
            if inputs.left_out:  # said where the result is read too: the notification passes
                summary.setText(f"{summary.text()}\nwarning: {inputs.left_out}")

        # mode auto decides in the worker, from the labels: the summary says which mode ran
        ran = {None: "", False: f" ({strategy})", True: " (many instances)"}[inputs.instances]
        taken = self.runner.submit(
            "oneshot", f"one-shot{ran}", task, done, inputs=(layer,) if layer is not None else ()
        )
        if taken and inputs.left_out:  # at once: the user may stop the run and segment the folder otherwise
            notify_warning(inputs.left_out, "one-shot")

    def _add_layers(
        self,
        output: OneShotOutput,
        layer: napari.layers.Image | None,
        factors: np.ndarray | None = None,
        channel_axis: int | None = None,
        time_point: TimePoint | None = None,
    ) -> None:
        """``factors``: the downsampling of each axis of the pyramid level of ``layer`` that was segmented (default
        none); ``channel_axis``: ``layer``'s, which its labels do not have; a target folder's files (no ``layer``)
        each over the file as napari opens it (``output.file_placements``); ``time_point``: the one of a (T, Z, Y,
        X) ``layer`` segmented, written into the labels of its earlier runs (:func:`write_time_point`)."""
        from napari.utils.notifications import show_warning

        kw = {} if layer is None else placement(layer, 3 if output.stacked else 2, factors, channel_axis)
        at = ""
        if output.stacked:
            data = np.stack(output.labels)
            if time_point is not None:
                kw = placement(layer, 4, None if factors is None else np.r_[1.0, factors])
                name, owner = f"{layer.name} one-shot", f"one-shot: {layer.name}"
                labels_layer, others = write_time_point(self.viewer, name, owner, data, time_point, kw)
                at = f" at {time_point_words(time_point, others)} -> '{labels_layer.name}'"
                if time_point.caution:  # a (C, Z, Y, X) layer whose channel axis was not chosen, maybe
                    output.warnings.append(time_point.caution)
                    at += f"\nwarning: {time_point.caution}"
            else:
                labels_layer = self.viewer.add_labels(data, name=f"{layer.name} one-shot", **kw)
            if output.scales and output.scales[0].get("object_size"):  # many instances: the planes' one size
                labels_layer.metadata[OBJECT_SIZE_KEY] = output.scales[0]["object_size"]  # full-resolution px
            points = [
                np.column_stack([np.full(len(p), k), p[:, 1], p[:, 0]]) if len(p) else np.zeros((0, 3))
                for k, p in enumerate(output.positives)
            ]
            negatives = [
                np.column_stack([np.full(len(p), k), p[:, 1], p[:, 0]]) if len(p) else np.zeros((0, 3))
                for k, p in enumerate(output.negatives)
            ]
            points, negatives = np.concatenate(points), np.concatenate(negatives)
            if time_point is not None:  # on the time point's volume
                points, negatives = (np.c_[np.full(len(p), time_point.index), p] for p in (points, negatives))
            # named after the labels (napari's ' [1]' of a rerun included): to be told whose prompts they are
            self._add_points(points, negatives, f"{labels_layer.name} prompts", kw)
        else:
            for k, (labels, pos, neg, name) in enumerate(
                zip(output.labels, output.positives, output.negatives, output.names, strict=True)
            ):
                if layer is None and output.file_placements:  # a slide's level, over the slide as napari opens it
                    kw = output.file_placements[k]
                added = self.viewer.add_labels(labels, name=f"{name} one-shot", **kw)
                self._add_points(pos[:, ::-1], neg[:, ::-1], f"{added.name} prompts", kw)
        summary = result_summary(output) + at
        if output.labelling_advice:  # the likely reason few objects came back
            show_warning(output.labelling_advice)
        for reason in output.skipped:  # a folder's files that could not be done: the others' layers are there
            show_warning(f"one-shot: skipped {reason}")
        self.runner.widget.set_summary(summary)
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
