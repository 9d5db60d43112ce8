"""The Text prompt widget's library panel: the reference library its library field names listed, an entry removed,
the library exported to a zip and a zip imported, as `promptseg library list/remove/export/import` do, in a real
napari viewer on skimage's real `cell` image.

Run under a display: ``xvfb-run -a python -m pytest tests/test_widget_library_panel.py``.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from napari_promptseg._widgets.text import TextPromptWidget
from napari_promptseg.io.library import ReferenceLibrary

pytestmark = pytest.mark.gui
TASK_MS = 60_000  # a worker reading and writing a few small files, on a shared 2-core CPU


def _finish(widget, qtbot) -> str:
    qtbot.waitUntil(lambda: widget.runner.state != "running", timeout=TASK_MS)
    return widget.runner.widget.status.text()


def test_the_library_panel_lists_exports_imports_and_removes_as_the_cli(make_viewer, qtbot, tmp_path, bright_cell):
    """The widgets could only add to a library: listing it, taking an entry out, or passing it to a colleague
    needed the terminal (`promptseg library ...`). The Text widget's library panel does them on the library its
    field names, in the worker, through the library's own functions; an import that joins a name says so."""
    image, mask = bright_cell
    theirs = ReferenceLibrary.open(tmp_path / "theirs")
    theirs.add("cell", image, mask, "bright cell")
    theirs.add("membrane", image, np.roll(mask, 40, axis=1))
    mine = ReferenceLibrary.open(tmp_path / "mine")
    own = mine.add("cell", image, np.roll(mask, 3, axis=0))

    widget = TextPromptWidget(make_viewer())
    panel = widget.library_panel
    widget.library.setText(str(theirs.path))
    assert panel.refresh()
    assert "2 entries" in _finish(widget, qtbot)
    assert panel.listed_ids() == [e.id for e in theirs.entries]
    assert panel.export_to(tmp_path / "theirs.zip")
    assert "exported 2 entries" in _finish(widget, qtbot) and (tmp_path / "theirs.zip").is_file()

    widget.library.setText(str(mine.path))
    assert panel.import_from(tmp_path / "theirs.zip")
    status = _finish(widget, qtbot)
    assert widget.runner.state == "done", status
    assert "2 entries added" in status and "'cell' had 1 exemplar already" in status
    imported = ReferenceLibrary.open(mine.path).entries[1]
    assert panel.listed_ids() == [e.id for e in ReferenceLibrary.open(mine.path).entries]  # listed anew

    panel.select(imported.id)
    assert panel.remove_selected()
    assert f"removed 'cell' (id {imported.id})" in _finish(widget, qtbot)
    assert [e.id for e in ReferenceLibrary.open(mine.path).find("cell")] == [own.id]
    assert imported.id not in panel.listed_ids()


def test_the_panel_marks_an_entry_that_lost_its_files_and_says_what_a_zip_field_is(
    make_viewer, qtbot, tmp_path, bright_cell
):
    image, mask = bright_cell
    lib = ReferenceLibrary.open(tmp_path / "lib")
    broken = lib.add("cell", image, mask)
    (lib.path / broken.mask_path).unlink()
    widget = TextPromptWidget(make_viewer())
    widget.library.setText(str(lib.path))
    assert widget.library_panel.refresh()
    status = _finish(widget, qtbot)
    assert "1 of 1 entries lost files" in status
    assert "files missing" in widget.library_panel.entries.item(0).text()
    orphan = lib.path / "entries" / "gland-0123abcd"  # an exemplar folder no entry lists
    orphan.mkdir()
    for name in ("image.tif", "mask.png"):
        (orphan / name).write_bytes(b"kept")
    assert widget.library_panel.refresh()
    assert "1 exemplar folder(s)" in _finish(widget, qtbot)
    shutil.rmtree(orphan)

    archive = tmp_path / "lib.zip"
    lib.add("membrane", image, np.roll(mask, 40, axis=1))
    (lib.path / broken.mask_path).write_bytes((lib.path / lib.entries[1].mask_path).read_bytes())
    lib.remove(broken.id)
    lib.export(archive)
    widget.library.setText(str(archive))
    widget.library_panel.refresh()
    _finish(widget, qtbot)
    assert widget.runner.state == "failed"
    assert "promptseg library import" in widget.runner.widget.status.text() + str(widget.runner.widget._details)


def test_export_typed_without_zip_writes_a_zip_the_import_dialog_lists(
    make_viewer, qtbot, tmp_path, monkeypatch, bright_cell
):
    """A name typed in the export dialog without '.zip' ("lab library") wrote a file of that name, which the import
    dialog (zip files) did not list; the export writes "lab library.zip"."""
    from qtpy.QtWidgets import QFileDialog

    lib = ReferenceLibrary.open(tmp_path / "lib")
    lib.add("cell", *bright_cell)
    widget = TextPromptWidget(make_viewer())
    widget.library.setText(str(lib.path))
    typed = tmp_path / "lab library"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *args, **kwargs: (str(typed), "Zip files (*.zip)"))
    widget.library_panel._export_clicked()
    assert "exported 1 entries" in _finish(widget, qtbot)
    assert (tmp_path / "lab library.zip").is_file() and not typed.exists()


def test_listing_a_folder_that_does_not_exist_says_so(make_viewer, qtbot, tmp_path):
    """A mistyped library field was listed as an empty library ("0 entries"), as if its entries were gone; the list
    says there is no such folder, as `promptseg library list` does."""
    widget = TextPromptWidget(make_viewer())
    widget.library.setText(str(tmp_path / "lab librray"))
    assert widget.library_panel.refresh()
    assert "0 entries; no such folder" in _finish(widget, qtbot)
    assert not (tmp_path / "lab librray").exists()


def test_an_import_into_a_library_that_cannot_be_written_says_where_to_choose_another(
    make_viewer, qtbot, tmp_path, bright_cell
):
    """A shared lab library mounted read-only: an import from the panel was refused pointing at the CLI's --library
    and $PROMPTSEG_LIBRARY only; it names the widget's library field too, and nothing is written. (The tests run as
    root, whom a read-only mode does not stop: the lock file's path is a folder, which opens as no lock file.)"""
    from napari_promptseg.io.library._format import LOCK

    source = ReferenceLibrary.open(tmp_path / "mine")
    source.add("cell", *bright_cell)
    archive = source.export(tmp_path / "mine.zip")
    shared = tmp_path / "shared"
    (shared / LOCK).mkdir(parents=True)
    widget = TextPromptWidget(make_viewer())
    widget.library.setText(str(shared))
    assert widget.library_panel.import_from(archive)
    said = _finish(widget, qtbot) + str(widget.runner.widget._details)  # the status line, and its details
    assert widget.runner.state == "failed"
    assert "cannot be written" in said and "a widget's library field" in said
    assert [p.name for p in shared.iterdir()] == [LOCK]


def test_the_list_follows_an_added_exemplar_and_is_cleared_for_another_library(
    make_viewer, qtbot, tmp_path, bright_cell
):
    """The panel's list stayed as last listed: an exemplar just added was missing from it, and a library field typed
    anew still showed the other library's entries (Remove would have taken one of them out of the wrong library)."""
    image, mask = bright_cell
    viewer = make_viewer()
    widget = TextPromptWidget(viewer)
    widget.image.set_layer(viewer.add_image(image, name="cell"))
    widget.exemplar_labels.set_layer(viewer.add_labels(mask.astype(np.uint8), name="cell labels"))
    widget.exemplar_name.setText("cell")
    widget.library.setText(str(tmp_path / "lib"))
    assert widget.library_panel.refresh()
    _finish(widget, qtbot)
    assert widget.library_panel.listed_ids() == []
    assert widget.add_exemplar()
    assert "saved exemplar 'cell'" in _finish(widget, qtbot)
    assert widget.library_panel.listed_ids() == [widget.last_exemplar.id]
    widget.library.setText(str(tmp_path / "other"))
    assert widget.library_panel.listed_ids() == []
    assert not widget.library_panel.remove_selected()  # nothing listed: nothing removed, from any library
    assert [e.id for e in ReferenceLibrary.open(tmp_path / "lib")] == [widget.last_exemplar.id]


def test_a_saved_exemplar_can_be_taken_back_with_undo(make_viewer, qtbot, tmp_path, bright_cell):
    """The "Add exemplar" (Text widget) and "Save reference to library" (One-shot) added to the library with no way back
    in the widget: a save under a name the library had joined its exemplars (every prompt of the name ensembles them
    from then on), said nowhere. The save says so now, and "Undo last save" takes what it added out again (the
    library's own remove: nothing was overwritten, so the library is as before), once."""
    from napari_promptseg._widgets.oneshot import OneShotWidget

    image, mask = bright_cell
    lib = ReferenceLibrary.open(tmp_path / "lib")
    own = lib.add("cell", image, np.roll(mask, 3, axis=0))
    index_before = (lib.path / "library.json").read_text()
    viewer = make_viewer()
    layer = viewer.add_image(image, name="cell")
    labels = viewer.add_labels(mask.astype(np.uint8), name="cell labels")

    text = TextPromptWidget(viewer)
    text.image.set_layer(layer)
    text.exemplar_labels.set_layer(labels)
    text.exemplar_name.setText("cell")
    text.library.setText(str(lib.path))
    assert not text.undo_save_button.isEnabled()  # nothing saved yet
    assert text.add_exemplar()
    said = _finish(text, qtbot)
    added = text.last_exemplar
    assert "'cell' had 1 exemplar already, and a prompt 'cell' ensembles them all now" in said, said
    assert "Undo last save" in said and text.undo_save_button.isEnabled()
    assert [e.id for e in ReferenceLibrary.open(lib.path)] == [own.id, added.id]
    text.library.setText(str(tmp_path / "another"))  # the undo is of the library the save went to
    assert text.undo_last_save()
    said = _finish(text, qtbot)
    assert text.runner.state == "done", said
    assert f"removed 'cell' (id {added.id})" in said and str(lib.path) in said
    assert (lib.path / "library.json").read_text() == index_before  # as before the save
    assert not (lib.path / "entries" / added.id).exists()
    assert not text.undo_save_button.isEnabled() and not text.undo_last_save()  # once

    oneshot = OneShotWidget(viewer)
    oneshot.reference.set_layer(layer)
    oneshot.reference_labels.set_layer(labels)
    oneshot.library_name.setText("bright cell")
    oneshot.library.setText(str(lib.path))
    assert oneshot.save_to_library()
    said = _finish(oneshot, qtbot)
    assert "saved exemplar 'bright cell'" in said and "had" not in said  # a new name joins nothing
    assert oneshot.undo_save_button.isEnabled()
    assert oneshot.undo_last_save()
    assert "removed 'bright cell'" in _finish(oneshot, qtbot)
    assert (lib.path / "library.json").read_text() == index_before
