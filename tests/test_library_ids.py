"""Library entry ids follow from what is saved, so the same adds give the same library and the same report.json."""

from __future__ import annotations

import numpy as np
from skimage import data as skdata

from napari_promptseg.io.library import ReferenceLibrary


def _cell() -> tuple[np.ndarray, np.ndarray]:
    """skimage's real fluorescence `cell` image with a mask of its bright cell."""
    image = skdata.cell()
    mask = np.zeros(image.shape, bool)
    mask[200:300, 250:400] = image[200:300, 250:400] > np.percentile(image, 60)
    return image, mask


def test_the_same_adds_into_two_libraries_give_the_same_entry_ids(tmp_path):
    image, mask = _cell()
    ids = []
    for folder in ("first", "second"):
        library = ReferenceLibrary(tmp_path / folder)
        whole = library.add("cell", image, mask)
        other = library.add("cell", image, np.roll(mask, 40, axis=0))  # another mask under the same name: another id
        ids.append((whole.id, other.id))
        assert {p.name for p in (tmp_path / folder / "entries").iterdir()} == {whole.id, other.id}
    assert ids[0] == ids[1]
    assert ids[0][0] != ids[0][1]
    assert all(entry_id.startswith("cell-") for entry_id in ids[0])


def test_an_id_taken_by_other_pixels_of_a_same_named_entry_is_not_reused(tmp_path):
    image, mask = _cell()
    library = ReferenceLibrary(tmp_path / "lib")
    first = library.add("Cell", image, mask)
    second = library.add("cell!", image, mask)  # another name, the same slug and pixels
    assert first.id != second.id
    assert ReferenceLibrary(tmp_path / "lib").entries[1].id == second.id


def test_a_library_built_again_from_the_same_exemplars_is_the_same_run_for_resume(tmp_path):
    """A text run's signature hashes its --library: library.json's 'created' dates made a library built again from
    the same exemplars another run (--resume refused, report.json's signature another); what it holds still counts."""
    import json

    from napari_promptseg.batch.journal import _content_digest

    image, mask = _cell()
    library = ReferenceLibrary(tmp_path / "lib")
    library.add("cell", image, mask)
    before = _content_digest(tmp_path / "lib")
    index_path = tmp_path / "lib" / "library.json"
    index = json.loads(index_path.read_text())
    index["entries"][0]["created"] = "2020-01-01T00:00:00+00:00"  # built again, another day
    index_path.write_text(json.dumps(index, indent=1))
    assert _content_digest(tmp_path / "lib") == before
    index["entries"][0]["name"] = "nucleus"
    index_path.write_text(json.dumps(index))
    assert _content_digest(tmp_path / "lib") != before
