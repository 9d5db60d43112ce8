"""The reference library in a widget: the library a widget's library field names listed (entries that lost their
files marked), an entry removed, the library exported to a zip and a zip imported, in the widget's worker through
:class:`~napari_promptseg.io.library.ReferenceLibrary`'s own functions, as `promptseg library list/remove/export/
import` run them."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..errors import PromptsegError
from ._common import TaskRunner

_ID_ROLE = Qt.ItemDataRole.UserRole  # the entry id an item stands for


class LibraryPanel(QWidget):
    """Entries of the library named by ``field`` (empty: the default one), and Refresh / Remove / Export / Import."""

    def __init__(self, runner: TaskRunner, field: QLineEdit) -> None:
        super().__init__()
        self._runner = runner
        self._field = field
        self.entries = QListWidget()
        self.entries.setToolTip(
            "the library's entries: name, kind, size in px, id (what 'promptseg library list' says)"
        )
        self.entries.setMaximumHeight(120)
        buttons = []
        for text, slot, tip in (
            ("List", self.refresh, "list the entries of the library in the library field"),
            ("Remove…", self._remove_clicked, "remove the selected entry (its files too); asks first"),
            ("Export…", self._export_clicked, "write the whole library to one zip file, to pass on or keep"),
            (
                "Import…",
                self._import_clicked,
                "merge an exported zip into this library: nothing is overwritten; an entry of a name the library has "
                "becomes another exemplar of it",
            ),
        ):
            button = QPushButton(text)
            button.setToolTip(tip)
            button.clicked.connect(slot)
            buttons.append(button)
        row = QHBoxLayout()
        for button in buttons:
            row.addWidget(button)
        # another library typed: its list is not this one's (Remove would take an entry out of the wrong library)
        field.textChanged.connect(self._field_changed)  # a bound method: a lambda would hold the widget
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.entries)
        layout.addLayout(row)

    def _where(self) -> str | None:
        return self._field.text().strip() or None

    def _submit(self, key: str, title: str, task) -> bool:
        where = self._where()

        def work(progress, cancel):
            from ..io.starter import open_library

            progress(0.0, title)
            library = open_library(where)  # a new default library gets the starter exemplar, as the CLI's
            return task(library)

        def finished(result) -> None:
            message, library = result
            if self._where() == where:  # not another library's list under a field typed anew meanwhile
                self._show(library)
            self._runner.widget.done(message)

        return self._runner.submit(key, title, work, finished)

    # -- the four actions (the dialogs only choose; tests call these) -------------------------------------------
    def refresh(self) -> bool:
        """List the library's entries. Returns whether the task was taken."""

        def task(library):
            damaged = [e for e in library.entries if e.missing_files()]
            absent = "" if library.path.exists() else "; no such folder"  # a mistyped field, not an emptied library
            said = f"reference library {library.path}: {len(library)} entries{absent}"
            if damaged:
                names = ", ".join(f"{e.name} ({e.id})" for e in damaged)
                said += (
                    f"; {len(damaged)} of {len(library)} entries lost files (a prompt matched to them fails): "
                    f"{names}; copy their files back, or remove them and add the exemplars again"
                )
            unlisted = library.unlisted_folders()
            if unlisted:  # listed without them, though their files are there
                said += (
                    f"; {len(unlisted)} exemplar folder(s) in {library.path / 'entries'} in no entry (library.json "
                    "replaced?): 'promptseg library list' says how to add them back"
                )
            return said, library

        return self._submit("library", "list the library", task)

    def remove(self, entry_id: str) -> bool:
        """Remove the entry ``entry_id`` (its files too). Returns whether the task was taken."""

        def task(library):
            (gone,) = library.remove(entry_id)
            return f"removed '{gone.name}' (id {gone.id}) from {library.path}", library

        return self._submit("library", f"remove {entry_id}", task)

    def export_to(self, path: str | Path, overwrite: bool = False) -> bool:
        """Write the library to the zip ``path``. Returns whether the task was taken."""

        def task(library):
            written = library.export(path, overwrite=overwrite)
            return f"exported {len(library)} entries from {library.path} to {written}", library

        return self._submit("library", "export the library", task)

    def import_from(self, path: str | Path) -> bool:
        """Merge the exported zip ``path`` into the library. Returns whether the task was taken."""
        from ..io.library import ReferenceLibrary

        def task(library):
            result = ReferenceLibrary.import_zip(path, into=library)
            said = [f"{len(result.added)} entries added to {library.path}"]
            for entry in result.added:
                note = result.joined_note(entry.id)
                if note:  # not overwritten, but every prompt of that name answers from both now
                    said.append(f"imported '{entry.name}' (id {entry.id}): {note}; to take it out, select it, Remove")
            if result.skipped:
                said.append(f"skipped (already in the library): {', '.join(result.skipped)}")
            return "; ".join(said), library

        return self._submit("library", "import into the library", task)

    # -- the list ------------------------------------------------------------------------------------------------
    def _field_changed(self, *_) -> None:
        self.entries.clear()

    def show_library(self, path: str | Path) -> None:
        """List the library at ``path`` (an exemplar just saved there: its index, read on napari's main thread, is
        small), when it is the one the field names."""
        from ..io.library import ReferenceLibrary

        try:
            library = ReferenceLibrary.open(path)
            if library.path != ReferenceLibrary.open(self._where()).path:
                return
            self._show(library)
        except PromptsegError:  # damaged meanwhile: List says why
            self.entries.clear()

    def _show(self, library) -> None:
        self.entries.clear()
        for entry in library.entries:
            size = "x".join(str(s) for s in entry.shape[:2][::-1])
            lost = "  [files missing]" if entry.missing_files() else ""
            item = QListWidgetItem(f"{entry.name} — {entry.kind}, {size} px — {entry.id}{lost}")
            item.setData(_ID_ROLE, entry.id)
            self.entries.addItem(item)

    def listed_ids(self) -> list[str]:
        return [self.entries.item(k).data(_ID_ROLE) for k in range(self.entries.count())]

    def select(self, entry_id: str) -> None:
        self.entries.setCurrentRow(self.listed_ids().index(entry_id))

    def selected_id(self) -> str | None:
        item = self.entries.currentItem()
        return None if item is None else item.data(_ID_ROLE)

    def remove_selected(self) -> bool:
        entry_id = self.selected_id()
        if entry_id is None:
            self._runner.refuse(PromptsegError("select an entry in the list to remove (List shows them)"), "remove")
            return False
        return self.remove(entry_id)

    # -- dialogs -------------------------------------------------------------------------------------------------
    def _remove_clicked(self) -> None:
        item = self.entries.currentItem()
        if item is not None:
            answer = QMessageBox.question(self, "Remove library entry", f"Remove {item.text()} and its files?")
            if answer != QMessageBox.StandardButton.Yes:
                return
        self.remove_selected()

    def _export_clicked(self) -> None:
        # the dialog asked before replacing an existing file
        path, _ = QFileDialog.getSaveFileName(self, "Export the library", "library.zip", "Zip files (*.zip)")
        if not path:
            return
        if Path(path).suffix.lower() != ".zip":  # else a file the import dialog (zip files) does not list
            path = f"{path}.zip"
            if Path(path).exists():  # the dialog asked about the name typed, not this one
                answer = QMessageBox.question(self, "Export the library", f"{path} exists. Replace it?")
                if answer != QMessageBox.StandardButton.Yes:
                    return
        self.export_to(path, overwrite=True)

    def _import_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import a library", "", "Zip files (*.zip)")
        if path:
            self.import_from(path)
