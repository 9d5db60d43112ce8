"""The "Undo last save" of the widgets that save exemplars to a reference library (the One-shot widget's "Save
reference to library", the Text prompt widget's "Add exemplar"): what the last save added taken out again, through
the library's own remove, in the widget's worker. A save never overwrites (each exemplar is a new entry), so taking
its entries out leaves the library as it was before it; a save under a name the library had joined that name's
exemplars, which every prompt of the name ensembles from then on, and the widgets had no way back but the
terminal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from qtpy.QtWidgets import QPushButton

from ...errors import CancelledError, PromptsegError

if TYPE_CHECKING:
    from ...io.library import LibraryEntry
    from .tasks import TaskRunner

UNDO_TEXT = "Undo last save"


class SaveUndo:
    """The widget's "Undo last save" button and what it undoes: the library folder and the entries the last save
    added (:meth:`saved`). ``after(path)``: called on the main thread once they are out (a list to show anew)."""

    def __init__(self, runner: TaskRunner, after: Callable[[Path], None] | None = None) -> None:
        self._runner = runner
        self._after = after
        self._saved: tuple[Path, list[LibraryEntry]] | None = None
        self.button = QPushButton(UNDO_TEXT)
        self.button.setToolTip(
            "take the exemplar(s) the last save added out of the library it saved them to (nothing was overwritten: "
            "the library is as before that save); once"
        )
        self.button.setEnabled(False)
        self.button.clicked.connect(self.undo)

    def saved(self, path: Path, entries: list[LibraryEntry]) -> None:
        """A save added ``entries`` to the library at ``path``: the next undo takes them out."""
        self._saved = (Path(path), list(entries))
        self.button.setEnabled(True)

    def undo(self) -> bool:
        """Take the last save's entries out of its library (those still there), in the worker; said with their
        ids. Refused when there is none (nothing saved, or undone already). Returns whether the task was taken."""
        if self._saved is None:
            self._runner.refuse(
                PromptsegError("no save to undo: Undo last save takes out what the last save added, once"), "undo"
            )
            return False
        path, entries = self._saved

        def task(progress, cancel) -> list[LibraryEntry]:
            from ...io.library import ReferenceLibrary

            progress(0.0, f"undoing the last save in {path}")
            library = ReferenceLibrary.open(path)
            listed = {e.id for e in library.entries}
            present = [e for e in entries if e.id in listed]
            if not present:
                ids = ", ".join(e.id for e in entries)
                raise PromptsegError(
                    f"the last save's exemplar(s) ({ids}) are no longer in the reference library {path} (removed "
                    "already): nothing to undo"
                )
            if cancel():
                raise CancelledError("cancelled")
            for entry in present:
                library.remove(entry.id)
            return present

        def done(removed: list[LibraryEntry]) -> None:
            self._saved = None
            self.button.setEnabled(False)
            names = ", ".join(f"'{e.name}' (id {e.id})" for e in removed)
            self._runner.widget.done(
                f"undid the last save: removed {names} from the reference library {path}, as it was before the save"
            )
            if self._after is not None:
                self._after(path)

        return self._runner.submit("library", "undo the last save", task, done)
