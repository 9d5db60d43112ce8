"""The Interactive widget's commit: the preview's objects written into the target Labels layer as new ids (the user's
layer, so one undo, and the prompts that made them removed), and undo of that commit. A mixin of
:class:`.widget.InteractiveWidget`: it uses the widget's preview, pickers and task runner."""

from __future__ import annotations

from typing import TYPE_CHECKING

import napari
import napari.layers
import numpy as np
from napari.utils.notifications import show_warning

from ...errors import PromptsegError
from .._common import ROLE_KEY
from .geometry import PlaneGeometry
from .labels import commit_to_labels, holds_channels, shown_channel
from .layout import TARGET_IMAGE_KEY, TARGET_NAME

if TYPE_CHECKING:
    from .preview import Preview


#: commits Ctrl+Z on the prompt layers can undo (napari's Labels layer keeps 100 changes)
COMMITS_KEPT = 100


class CommitActions:
    """Commit, undo the last commit, clear the prompts."""

    def commit(self) -> None:
        """Write the preview objects into the target Labels layer as new ids; existing labels are never replaced."""
        fresh = self.preview is not None and self.preview.version == self._version
        step = tuple(self.viewer.dims.current_step)
        if not fresh and step in self._waiting_commits:
            # pressed again while this plane's commit waits (it seemed slow): that commit is done when its preview
            # comes; a second was refused as 'still running: ... press Cancel first', and Cancel dropped the first
            self.runner.widget.set_message("commit waits for the preview ...")
            return
        if not fresh and (self._preview_timer.isActive() or self.runner.busy):
            # the preview of the prompts on this plane is computed now and committed when it comes: waiting for the
            # live preview lost the commit when the user moved on to the next plane before it came
            self._preview_timer.stop()
            self._waiting_commits.add(step)
            if self._run_preview(for_commit=True):
                self.runner.widget.set_message("commit waits for the preview ...")
            else:  # nothing to preview (said why): the status line keeps what it said, and no commit waits
                self._waiting_commits.discard(step)
            return
        self._commit_preview(self.preview if fresh else None)

    def _commit_preview(self, preview: Preview | None) -> None:
        if preview is not None and preview.lost and not preview.labels.any():
            show_warning(f"nothing committed: {_lost(preview)}")
            return
        if preview is None:
            show_warning("nothing to commit: draw a box or click a positive point, and wait for the preview")
            return
        if not preview.labels.any():  # it came, and it was said what to do before it: the prompts were there
            prompts = preview.prompts
            n = len(prompts.boxes) + len(prompts.positive) + len(prompts.negative)
            show_warning(
                f"nothing to commit: the preview of the {n} prompt(s) on this plane holds no object (the model found "
                "none there): move or redraw the box around the object, or click on it"
            )
            return
        restore = self._keep_active_layer()
        try:
            target = self.target_picker.layer()
            if target is None:
                target = self._new_target(preview.geom)
            channel = shown_channel(self.viewer, target) if holds_channels(target, preview.geom) else None
            partly: list[int] = []
            new_ids = commit_to_labels(
                target,
                preview.labels,
                preview.geom,
                preview.offset,
                channel,
                advice=_fitting_target(preview),
                # a whole slide's labels level, said as the image, was half the size the user saw it
                image=f"the labels level of image '{preview.geom.image_name}'" if preview.whole_slide else None,
                partly=partly,
            )
        except PromptsegError as exc:
            self.runner.refuse(exc, "commit")
            return
        finally:
            restore()
        if not new_ids:
            show_warning(f"nothing committed: every preview pixel is already labelled in '{target.name}'")
            return
        self._commits = [*self._commits[-(COMMITS_KEPT - 1) :], (target, _last_change(target))]
        ids = f"{new_ids[0]}" if len(new_ids) == 1 else f"{new_ids[0]}-{new_ids[-1]}"
        on = f" on channel {channel}" if channel is not None else ""
        message = f"committed {len(new_ids)} object(s) to '{target.name}'{on} as id {ids}"
        covered = int(np.count_nonzero(np.unique(preview.labels))) - len(new_ids)
        if partly:  # the pixels on labels there were left out: said, as an object cut short looks like a bad mask
            message += f"; {len(partly)} of them partly on labels already there (kept: the rest added)"
        if covered > 0:  # their prompts go too: the count says why fewer objects came than were asked for
            message += f"; {covered} other(s) lay wholly on labels already there (never overwritten)"
        if preview.lost:
            message += f"; not committed: {_lost(preview)}"
        # a commit is the user's action done: the status no longer reads as an earlier refusal ("failed: ...")
        (self.runner.widget.set_message if self.runner.busy else self.runner.widget.done)(message)
        self._removing_committed = True  # not an edit of the prompts another plane's waiting commit has
        try:
            self._remove_prompts(preview)
        finally:
            self._removing_committed = False
        if self.preview is None or self.preview is preview:  # another plane's preview shown now stays
            self._clear_preview()

    def undo_commit(self) -> None:
        """Undo the newest commit still done in its target Labels layer (napari's undo of that layer: its last
        change); pressed again, the commit before. Commits undone in the layer itself (its own Ctrl+Z, or this undo)
        are passed over, and count again once redone there: after the second of two commits was undone in the layer,
        the first was refused as 'changed since the commit'."""
        for k in range(len(self._commits) - 1, -1, -1):
            target, change = self._commits[k]
            state = _commit_state(target, change) if target in self.viewer.layers else GONE
            if state is GONE:  # its target removed, or its change dropped by napari: it cannot come back
                del self._commits[k]
                continue
            if state is UNDONE:
                continue
            if state is UNREADABLE:  # undone blindly, it might be the user's stroke painted since
                show_warning(
                    f"cannot tell the commit from later changes of '{target.name}' (napari {napari.__version__} keeps "
                    f"its undo history otherwise): undo it in '{target.name}' itself (select it, Ctrl+Z)"
                )
                return
            # the commit's own change, not a count of changes: undone in the layer and painted again, the count was
            # the same and the paint stroke was undone (as was any change past napari's 100 kept)
            if state is not LAST:  # painted since: Labels' undo would undo that instead
                show_warning(f"'{target.name}' changed since the commit: undo there (select it, Ctrl+Z)")
                return
            target.undo()
            self.runner.widget.set_message(f"undid the last commit in '{target.name}'")
            return
        show_warning("no commit to undo")

    def _new_target(self, geom: PlaneGeometry) -> napari.layers.Labels:
        target = self._add_result_layer(np.zeros(geom.labels_shape, dtype=np.uint32), geom, TARGET_NAME)
        target.metadata[ROLE_KEY] = "target"  # found again when the user comes back to its image (_fit_target)
        target.metadata[TARGET_IMAGE_KEY] = self.image_picker.layer().unique_id
        self.target_picker.set_layer(target)
        return target

    def _remove_prompts(self, preview: Preview) -> None:
        """Remove the prompts that made the committed objects (only those of that plane)."""
        if preview.shapes is not None and preview.shapes in self.viewer.layers:
            rows = _found_again(preview.prompts.shape_vertices, preview.shapes.data)
            if rows:
                preview.shapes.selected_data = set()
                preview.shapes.remove(rows)
        if preview.points is not None and preview.points in self.viewer.layers:
            rows = _found_again(preview.prompts.point_coords, preview.points.data)
            if rows:
                preview.points.selected_data = set()
                preview.points.remove(rows)

    def clear_prompts(self) -> None:
        """Remove every box and click from the prompt layers and clear the preview."""
        shapes, points = self.shapes_picker.layer(), self.points_picker.layer()
        if shapes is not None and len(shapes.data):
            shapes.data = []
        if points is not None and len(points.data):
            points.remove(list(range(len(points.data))))
        self._clear_preview()


def _fitting_target(preview: Preview) -> str:
    """What a commit target that does not fit the image is told to do. napari's 'New labels' makes a layer like the
    layer selected: after 'New prompt layers' that is the boxes layer, and the layer made is the size of its boxes."""
    if preview.whole_slide:  # napari's 'New labels' would be the full resolution: too large to hold, and no fit
        return "choose the target 'new layer' (a whole slide's labels lie on a coarser level of it)"
    return (
        f"choose the target 'new layer', or select image '{preview.geom.image_name}' in the layer list, then 'New "
        "labels' (napari makes it like the layer selected)"
    )


def _lost(preview: Preview) -> str:
    """What became of the objects of a whole slide's preview smaller than a pixel of its labels level."""
    them = "the object previewed is" if preview.lost == 1 else f"{preview.lost} object(s) previewed are"
    return (
        f"{them} smaller than a pixel of the labels level of image '{preview.geom.image_name}' "
        f"({preview.labels_factor:.3g}x coarser: a whole slide's objects are held at its finest level of at most "
        "4096 x 4096 px); segment them at full resolution with `promptseg segment`, or open the region as an image"
    )


def _found_again(gathered: list[np.ndarray], now) -> list[int]:
    """The rows of a prompt layer's data ``now`` that hold the prompts ``gathered`` (each found once). A commit that
    waited for its preview removed its prompts by their rows at the time: one removed on another plane meanwhile
    had shifted them, and the commit removed another prompt, or failed past the layer's end (IndexError)."""
    left = list(gathered)
    rows = []
    for row, prompt in enumerate(now):
        prompt = np.asarray(prompt)
        same = next((k for k, old in enumerate(left) if np.array_equal(old, prompt)), None)
        if same is not None:
            rows.append(row)
            del left[same]
    return rows


#: what :func:`_last_change` returns when napari's undo history cannot be read
UNREADABLE = object()
#: where a commit's change is in its target's undo history (:func:`_commit_state`): its last change, undone (in the
#: redo history), under later changes, or in neither history (undone and its redo dropped by a later change, or
#: past the changes napari keeps)
LAST, UNDONE, BURIED, GONE = object(), object(), object(), object()


def _last_change(layer: napari.layers.Labels) -> object | None:
    """The change a Labels layer's undo would undo now (napari's history item: None when there is none). napari has
    no public handle to one: its private history, kept otherwise by another napari, is :data:`UNREADABLE` (read as
    a list, it raised TypeError from the commit itself, after the objects were written)."""
    history = getattr(layer, "_undo_history", UNREADABLE)
    if history is UNREADABLE:
        return UNREADABLE
    try:
        return history[-1] if len(history) else None
    except (TypeError, IndexError, KeyError):
        return UNREADABLE


def _commit_state(layer: napari.layers.Labels, change: object) -> object:
    """Where a commit's ``change`` (:func:`_last_change` right after it) is in ``layer``'s undo and redo histories:
    :data:`LAST`, :data:`UNDONE`, :data:`BURIED`, :data:`GONE`, or :data:`UNREADABLE`."""
    try:
        undo = list(getattr(layer, "_undo_history", UNREADABLE))
        redo = list(getattr(layer, "_redo_history", UNREADABLE))
    except TypeError:  # not napari's lists (nor UNREADABLE, which no list holds)
        return UNREADABLE
    if change is UNREADABLE or change is None:
        return UNREADABLE
    if undo and _same_change(undo[-1], change):
        return LAST
    if any(_same_change(item, change) for item in redo):
        return UNDONE
    return BURIED if any(_same_change(item, change) for item in undo) else GONE


def _same_change(item: object, change: object) -> bool:
    """Whether two of napari's history items are one change: the same pieces (napari's undo and redo keep an item
    anew, its pieces in reverse order: compared by identity, a commit undone and redone was 'changed since')."""
    try:
        return len(item) == len(change) and {id(piece) for piece in item} == {id(piece) for piece in change}
    except TypeError:
        return False
