"""The reference library exchanged between users: an exported zip given where a library folder is expected, and an
import that adds exemplars to names the library already has (they are ensembled from then on), on skimage's real
`cell` image."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from napari_promptseg.cli import main
from napari_promptseg.errors import PromptsegError
from napari_promptseg.io.library import ReferenceLibrary


def test_an_exported_zip_given_as_the_library_says_to_import_it(tmp_path, bright_cell, capsys):
    """A colleague's `lab.zip` given as the library (CLI --library, a widget's library field, library=) said only
    "reference library lab.zip is a file, not a directory"; it says it is an exported library and how to use it."""
    source = ReferenceLibrary.open(tmp_path / "lab")
    source.add("cell", *bright_cell)
    archive = source.export(tmp_path / "lab.zip")
    with pytest.raises(PromptsegError, match=r"lab.zip is a file.*exported library.*promptseg library import"):
        ReferenceLibrary.open(archive)
    assert main(["library", "list", "--library", str(archive)]) == 2
    err = capsys.readouterr().err
    assert f"promptseg library import {archive} --library FOLDER" in err
    # another file than an export: said as before, nothing about importing it
    other = tmp_path / "notes.txt"
    other.write_text("mine")
    with pytest.raises(PromptsegError, match="is a file, not a directory") as refused:
        ReferenceLibrary.open(other)
    assert "import" not in str(refused.value)


def test_an_import_that_adds_exemplars_to_a_name_the_library_has_says_so_and_how_to_undo(tmp_path, bright_cell, capsys):
    """Importing a colleague's 'cell' into a library that has its own 'cell' added a second exemplar, which every
    'cell' prompt ensembles from then on, and the CLI said only "imported 'cell' (id ...)". Nothing is overwritten
    (both stay), and now the import says the name had exemplars, and the command that takes the imported one out."""
    image, mask = bright_cell
    theirs = ReferenceLibrary.open(tmp_path / "theirs")
    theirs.add("Cell", image, mask)
    theirs.add("membrane", image, np.roll(mask, 40, axis=1))
    archive = theirs.export(tmp_path / "theirs.zip")
    mine = ReferenceLibrary.open(tmp_path / "mine")
    own = mine.add("cell", image, np.roll(mask, 3, axis=0))  # the same name (case aside), other pixels

    result = ReferenceLibrary.import_zip(archive, into=mine)
    imported = {entry.name: entry for entry in result.added}
    assert set(imported) == {"Cell", "membrane"}
    assert result.joined == {imported["Cell"].id: [own.id]}  # the entries of that name it now ensembles with
    assert [e.id for e in ReferenceLibrary.open(tmp_path / "mine").find("cell")] == [own.id, imported["Cell"].id]

    mine2 = ReferenceLibrary.open(tmp_path / "mine2")
    mine2.add("cell", image, np.roll(mask, 3, axis=0))
    assert main(["library", "import", str(archive), "--library", str(mine2.path)]) == 0
    out = capsys.readouterr().out
    cell_id = imported["Cell"].id
    assert f"imported 'Cell' (id {cell_id}): 'cell' had 1 exemplar already" in out
    assert f"promptseg library remove {cell_id} --library {mine2.path}" in out
    assert f"imported 'membrane' (id {imported['membrane'].id})\n" in out  # a new name: nothing more to say
    # the undo it gives works, and leaves the library as it was
    assert main(["library", "remove", cell_id, "--library", str(mine2.path)]) == 0
    assert [e.name for e in ReferenceLibrary.open(mine2.path)] == ["cell", "membrane"]


def test_library_list_says_which_entries_lost_their_files(tmp_path, bright_cell, capsys):
    """A library folder copied without its entries/ folder (or an entry's folder deleted by hand) was listed as
    whole, and the first prompt matched to such an entry failed; `library list` says which entries lost which
    files, and the command that removes them, and --json lists them ("missing_files")."""
    image, mask = bright_cell
    lib = ReferenceLibrary.open(tmp_path / "lib")
    whole = lib.add("cell", image, mask)
    broken = lib.add("membrane", image, np.roll(mask, 40, axis=1))
    (lib.path / broken.image_path).unlink()
    where = ["--library", str(lib.path)]
    assert main(["library", "list", *where]) == 0
    out = capsys.readouterr().out
    assert "1 of 2 entries lost files" in out and f"membrane ({broken.id}): {broken.image_path} missing" in out
    assert f"promptseg library remove {broken.id} --library {lib.path}" in out
    assert f"{whole.id}): " not in out  # the whole entry is not said to be damaged
    assert main(["library", "list", "--json", *where]) == 0
    listed = {e["id"]: e["missing_files"] for e in json.loads(capsys.readouterr().out)["entries"]}
    assert listed == {whole.id: [], broken.id: [broken.image_path]}


def test_a_large_exemplars_object_ids_are_numbered_in_a_pass_not_a_sort(bright_cell):
    """Saving a large exemplar spent most of its time and GBs numbering its objects (np.unique's sort of every pixel:
    10 s for the ids of 5280 x 4400 px; 20 s of a 34 s save at 7920 x 7700, 2.4 GB); they are numbered through a
    table of the ids present now (that save: 7 s, 0.6 GB), the same numbers as before (the entry's id and hash follow
    them)."""
    import time

    from skimage.measure import label

    from napari_promptseg.io.library import instance_ids

    image, _ = bright_cell
    small = label(image > np.percentile(image, 60)).astype(np.int32) * 3  # ids 3, 6, 9, ...: renumbered 1, 2, 3
    ids, inverse = np.unique(small, return_inverse=True)
    assert np.array_equal(instance_ids(small), inverse.reshape(small.shape).astype(np.uint16))
    no_background = small + 5  # every pixel an object's: numbered from 1
    assert instance_ids(no_background).min() == 1 and instance_ids(no_background).max() == len(ids)
    assert instance_ids(small > 0).dtype == np.uint16

    large = np.tile(small, (8, 8))  # 5280 x 4400 px of ids
    start = time.perf_counter()
    numbered = instance_ids(large)
    assert time.perf_counter() - start < 3.0  # was 9.9 s
    assert numbered.max() == len(ids) - 1 and np.array_equal(
        numbered[: small.shape[0], : small.shape[1]], inverse.reshape(small.shape)
    )


def test_library_list_names_exemplar_folders_no_entry_lists_and_how_to_add_them_back(tmp_path, bright_cell, capsys):
    """A library whose library.json was lost or replaced (a folder copied without it, an older backup restored) was
    listed as empty, or without some exemplars, though their files are in entries/; the list names those folders and
    the `library add` that takes each back (its image and mask as they are)."""
    image, mask = bright_cell
    lib = ReferenceLibrary.open(tmp_path / "lib")
    kept = lib.add("cell", image, mask)
    lost = lib.add("membrane", image, np.roll(mask, 40, axis=1), instances=False)  # its components: one region
    index = json.loads(lib.index_path.read_text())
    index["entries"] = [e for e in index["entries"] if e["id"] == kept.id]  # an older backup of library.json
    lib.index_path.write_text(json.dumps(index))
    where = ["--library", str(lib.path)]
    assert main(["library", "list", *where]) == 0
    out = capsys.readouterr().out
    assert "(1 entries)" in out and f"1 exemplar folder in {lib.path / 'entries'} is in no entry" in out
    folder = lib.path / "entries" / lost.id
    command = (
        f"promptseg library add NAME --image {folder / 'image.tif'} --mask {folder / 'mask.png'} --no-crop "
        "--no-instances"  # its mask file is one region's (0/255), not instance ids
    )
    assert command in out
    # the command it gives takes the exemplar back, pixels and all
    argv = command.split()[1:]
    argv[2] = "membrane"
    assert main([*argv, *where]) == 0
    capsys.readouterr()
    again = ReferenceLibrary.open(lib.path).get("membrane")
    assert np.array_equal(again.image(), lost.image()) and np.array_equal(again.mask(), lost.mask())
    assert again.kind == "one region"
    assert main(["library", "list", *where]) == 0 and "then delete the folder" in capsys.readouterr().out
    shutil.rmtree(folder)  # as the list says, once the exemplar is back
    assert main(["library", "list", *where]) == 0 and "no entry" not in capsys.readouterr().out


def test_an_entry_too_large_for_an_import_is_refused_by_export_up_front(tmp_path, bright_cell, monkeypatch):
    """A library entry with a file over MAX_FILE_BYTES was exported, and the zip could not be imported back
    ('implausibly large'); export refuses it before writing, naming the entry and the limit, and what export writes
    imports (a small limit stands for the 1 GiB)."""
    from napari_promptseg.io.library import _format

    image, mask = bright_cell
    library = ReferenceLibrary(tmp_path / "lib")
    small = library.add("bright cell", image, mask, min_crop=32)
    large = library.add("whole cell", image, image > np.percentile(image, 60), margin=None)  # the whole image
    sizes = {e.id: (library.path / e.image_path).stat().st_size for e in (small, large)}
    assert sizes[large.id] > sizes[small.id]
    monkeypatch.setattr(_format, "MAX_FILE_BYTES", (sizes[small.id] + sizes[large.id]) // 2)
    zip_path = tmp_path / "lib.zip"
    with pytest.raises(PromptsegError, match=rf"'whole cell' \({large.id}\).* over the .* MiB") as refused:
        library.export(zip_path)
    assert "import" in str(refused.value) and not zip_path.exists()  # nothing written
    library.remove(large.id)
    library.export(zip_path)
    result = ReferenceLibrary.import_zip(zip_path, tmp_path / "other")
    assert [e.name for e in result.added] == ["bright cell"]


def test_an_entry_too_large_for_an_export_is_refused_when_added(tmp_path, bright_cell, monkeypatch, capsys):
    """`promptseg library add` (and a widget's save) wrote an entry with a file over the 1 GiB a library zip may hold
    per file, which export then refused; add refuses it up front, by the same rule and words as export, and leaves
    the library as it was (a small limit stands for the 1 GiB)."""
    import tifffile

    from napari_promptseg.io.library import _format

    image, mask = bright_cell
    library = ReferenceLibrary(tmp_path / "lib")
    small = library.add("bright cell", image, mask, min_crop=32)
    small_bytes = (library.path / small.image_path).stat().st_size
    monkeypatch.setattr(_format, "MAX_FILE_BYTES", small_bytes + 1000)  # the whole image's file is larger
    whole = image > np.percentile(image, 60)
    with pytest.raises(PromptsegError, match=r"'whole cell'.* over the .* MiB a library file may hold") as refused:
        library.add("whole cell", image, whole, margin=None)
    assert "smaller crop" in str(refused.value)
    assert [e.id for e in ReferenceLibrary(library.path).entries] == [small.id]
    assert sorted(p.name for p in (library.path / "entries").iterdir()) == [small.id]  # no folder left behind
    # the CLI says it, exit 2, nothing added
    image_file, mask_file = tmp_path / "cell.tif", tmp_path / "whole.tif"
    tifffile.imwrite(image_file, image)
    tifffile.imwrite(mask_file, whole.astype(np.uint8))
    argv = ["library", "add", "whole cell", "--image", str(image_file), "--mask", str(mask_file)]
    assert main([*argv, "--no-crop", "--library", str(library.path)]) == 2
    assert "a library file may hold" in capsys.readouterr().err
    assert len(ReferenceLibrary(library.path)) == 1
    # export words it alike (one rule): an entry written before the rule, or under a larger limit
    monkeypatch.setattr(_format, "MAX_FILE_BYTES", 1 << 30)
    library.add("whole cell", image, whole, margin=None)
    monkeypatch.setattr(_format, "MAX_FILE_BYTES", small_bytes + 1000)
    with pytest.raises(PromptsegError, match=r"'whole cell'.* over the .* MiB a library file may hold"):
        library.export(tmp_path / "lib.zip")


def test_an_import_holds_one_entrys_files_at_a_time(tmp_path, bright_cell):
    """An import read every entry's files into memory before writing any (a library of many large exemplars held
    them all at once); it checks and writes them one entry at a time: importing 8 entries takes no more memory than
    importing 2, and imports the same entries."""
    import tracemalloc

    image, _ = bright_cell
    rng = np.random.default_rng(0)
    libraries = {n: ReferenceLibrary(tmp_path / f"lib{n}") for n in (2, 8)}
    for k in range(8):  # noise compresses poorly: each entry's files are as large as its pixels
        noisy = (image.astype(np.int16) + rng.integers(-40, 40, image.shape)).clip(0, 255).astype(np.uint8)
        for n, library in libraries.items():
            if k < n:
                library.add(f"cell {k}", noisy, image > np.percentile(image, 60), margin=None)
    one_entry = (libraries[8].path / libraries[8].entries[0].image_path).stat().st_size
    peaks = {}
    for n, library in libraries.items():
        library.export(tmp_path / f"lib{n}.zip")
        tracemalloc.start()
        try:
            result = ReferenceLibrary.import_zip(tmp_path / f"lib{n}.zip", tmp_path / f"other{n}")
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert sorted(e.name for e in result.added) == [f"cell {k}" for k in range(n)]
        assert [e.sha256 for e in result.library.entries] == [e.sha256 for e in library.entries]
    assert peaks[8] < peaks[2] + one_entry, f"8 entries held {(peaks[8] - peaks[2]) / one_entry:.1f} more entries"
