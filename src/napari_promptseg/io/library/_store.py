"""The library directory: open, add, import/export, remove entries (see the package docstring)."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import shlex
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile

from ... import __version__
from ...errors import PromptsegError
from .._files import replacing
from ._format import (
    DEFAULT_MARGIN,
    DEFAULT_MIN_CROP,
    FORMAT,
    INDEX,
    LOCK,
    LOCK_TIMEOUT_S,
    VERSION,
    DamagedIndexError,
    LibraryEntry,
    LibraryNotWritableError,
    _atomic_write,
    _content_hash,
    _now,
    _parse_index,
    _png_bytes,
    _read_png,
    _safe_relative,
    _slug,
    _tiff_bytes,
    bounding_crop,
    clean_name,
    default_library_path,
    instance_ids,
    name_key,
    oversized_file,
)


@dataclass
class ImportResult:
    library: ReferenceLibrary
    added: list[LibraryEntry]
    skipped: list[str]  # names of entries already present with identical content
    #: id of an added entry -> the ids of the entries that had its name before: a prompt of that name ensembles them
    #: all from now on (nothing is overwritten), which the import says, with how to take the added one out again
    joined: dict[str, list[str]] = field(default_factory=dict)

    def joined_note(self, entry_id: str) -> str | None:
        """What an added entry joined, said to the user ("'gland' had 1 exemplar already, and a prompt 'gland'
        ensembles them all now"), or None for a name new to the library."""
        before = self.joined.get(entry_id)
        if not before:
            return None
        return joined_said(self.library.get(before[0]).name, len(before))


def joined_said(name: str, count: int) -> str:
    """What an exemplar added under a name the library had ``count`` exemplars of changed: every prompt of the name
    answers from them all now (an import's and a widget's save say it alike)."""
    had = f"{count} exemplar{'s' if count > 1 else ''}"
    return f"'{name}' had {had} already, and a prompt '{name}' ensembles them all now"


def _zip_advice(path: Path) -> str:
    """What to do with an exported library given where a library folder is expected (a colleague's lab.zip typed in
    a library field or --library): it is imported into a folder, not read as one."""
    if not zipfile.is_zipfile(path):
        return ""
    return (
        " (a zip: an exported library? Import it into a library folder: promptseg library import "
        f"{shlex.quote(str(path))} --library FOLDER; or ReferenceLibrary.import_zip(path, into=FOLDER); then use "
        "FOLDER)"
    )


class ReferenceLibrary:
    """A directory of named exemplars; see the module docstring for the format.

    ``ReferenceLibrary.open()`` opens (or starts, on the first ``add``) the default library.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).expanduser()
        self._entries: list[LibraryEntry] = []
        #: why the starter exemplars are not in this new default library (its folder cannot be written), else None
        self.starter_not_saved: str | None = None
        self.reload()

    @classmethod
    def open(cls, path: str | os.PathLike | None = None) -> ReferenceLibrary:
        """The library at ``path`` (default: ``$PROMPTSEG_LIBRARY`` or the user data dir); empty if it is new."""
        target = default_library_path() if path is None else Path(path).expanduser()
        if target.exists() and not target.is_dir():
            raise PromptsegError(f"reference library {target} is a file, not a directory{_zip_advice(target)}")
        return cls(target)

    # -- reading ---------------------------------------------------------------------------------------------------
    @property
    def index_path(self) -> Path:
        return self.path / INDEX

    def reload(self) -> None:
        """Re-read library.json (another process may have changed it)."""
        self._entries = self._read_entries()

    def _read_entries(self) -> list[LibraryEntry]:
        index = self.index_path
        if not index.exists() and not index.is_symlink():
            return []
        where = str(index)
        try:
            if index.is_dir():
                raise DamagedIndexError(f"{where}: is a folder, not the library's index file")
            try:
                data = json.loads(index.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
                raise DamagedIndexError(f"{where}: not valid JSON ({exc})") from exc
            except OSError as exc:  # unreadable (permissions, a dangling link): not damage, nothing to move aside
                raise PromptsegError(f"{where}: the library index cannot be read ({exc.strerror or exc})") from exc
            return [LibraryEntry.from_json(record, self.path, where) for record in _parse_index(data, where)]
        except DamagedIndexError as exc:
            raise PromptsegError(self._damaged(str(exc))) from exc

    def _damaged(self, reason: str) -> str:
        """What a damaged index means and how to recover; it is never written over (its entries would be lost)."""
        return (
            f"{reason}. The reference library's index is damaged and is left untouched (a new index would lose the "
            f"entries it lists). To recover: repair or restore {INDEX} from a backup, or move it aside (e.g. rename "
            f"it {INDEX}.damaged) to start the library anew (the exemplar files under {self.path / 'entries'} stay)"
        )

    @property
    def entries(self) -> list[LibraryEntry]:
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self):
        return iter(list(self._entries))

    def unlisted_folders(self) -> list[Path]:
        """Exemplar folders under entries/ that no entry of library.json points at: an add killed between its files
        and the index, or a library.json lost or replaced by an older copy. Their files are kept (never deleted
        here): `promptseg library list` says how to add each back."""
        listed = {(self.path / p).parent for e in self._entries for p in (e.image_path, e.mask_path)}
        try:
            folders = sorted(p for p in (self.path / "entries").iterdir() if p.is_dir())
        except OSError:  # no entries/ yet
            return []
        return [f for f in folders if f not in listed and (f / "image.tif").is_file() and (f / "mask.png").is_file()]

    def names(self) -> list[str]:
        """Distinct entry names, in insertion order."""
        return list(dict.fromkeys(e.name for e in self._entries))

    def find(self, name_or_id: str) -> list[LibraryEntry]:
        """Entries with this id, else with this name (case-insensitive)."""
        by_id = [e for e in self._entries if e.id == name_or_id]
        if by_id:
            return by_id
        key = name_key(name_or_id)
        return [e for e in self._entries if name_key(e.name) == key]

    def get(self, name_or_id: str) -> LibraryEntry:
        """The entry with this id, or the only/newest entry with this name."""
        found = self.find(name_or_id)
        if not found:
            known = ", ".join(self.names()) or "none (the library is empty)"
            raise PromptsegError(f"reference library {self.path}: no entry {name_or_id!r}; entries: {known}")
        return found[-1]

    # -- writing ---------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _changing(self, *, create: bool = True):
        """Hold the library's lock while a change re-reads, edits and replaces library.json: two processes adding
        at once each wrote back the index they had read, and one entry was lost. ``create=False``: a library that
        does not exist is not created (read as empty)."""
        from filelock import FileLock, Timeout

        if not create and not self.path.is_dir():
            self._entries = []
            yield
            return
        lock = FileLock(self.path / LOCK)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            lock.acquire(timeout=LOCK_TIMEOUT_S)
        except Timeout as exc:  # before OSError: a Timeout is one
            raise PromptsegError(
                f"reference library {self.path}: another process has been changing it for {LOCK_TIMEOUT_S:.0f} s "
                f"(it holds {self.path / LOCK}; the lock ends with that process); try again when it has finished"
            ) from exc
        except OSError as exc:  # a read-only folder (a shared lab library): said so, not as its lock file's error
            where = f": {exc.filename}" if exc.filename else ""
            readable = " (it can still be read)" if self.path.is_dir() else ""
            raise LibraryNotWritableError(
                f"reference library {self.path}: the folder cannot be written ({exc.strerror or exc}{where}), so "
                f"nothing can be added to or removed from it{readable}; save into a library folder you can write "
                "(a widget's library field; CLI: --library DIR; or $PROMPTSEG_LIBRARY)"
            ) from exc
        try:
            self.reload()  # a damaged index raises here: it is never written over
            yield
        finally:
            lock.release()

    def _write_index(self, entries: list[LibraryEntry]) -> None:
        data = {"format": FORMAT, "version": VERSION, "entries": [e.to_json() for e in entries]}
        _atomic_write(self.index_path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))
        self._entries = entries

    def _new_id(self, name: str, taken: set[str], digest: str) -> str:
        """``<slug>-<digest[:8]>``: from what is saved, so the same adds give the same ids (library.json, the text
        report's ``library_entries``) in every library; a suffix only when another entry holds it already."""
        base = f"{_slug(name)}-{digest[:8]}"
        for n in itertools.count(1):
            entry_id = base if n == 1 else f"{base}-{n}"
            if entry_id not in taken and not (self.path / "entries" / entry_id).exists():
                return entry_id
        raise AssertionError("unreachable")

    def add(
        self,
        name: str,
        image: np.ndarray,
        mask: np.ndarray,
        description: str = "",
        source: str = "",
        *,
        channel_axis: int | None = None,
        channels: list[int] | None = None,
        pixel_size: tuple[float, float] | None = None,
        instances: bool | None = None,
        partial_labels: bool = False,
        margin: float | None = DEFAULT_MARGIN,
        min_crop: int = DEFAULT_MIN_CROP,
    ) -> LibraryEntry:
        """Save an exemplar: ``image`` (2D, RGB or multichannel with ``channel_axis``) and a mask of the object.

        The image is cropped to the mask's bounding box grown by ``margin`` x the box's longer side on every side,
        widened to at least ``min_crop`` pixels per side (``margin=None``: keep the whole image). Why the floor:
        SAT's patch features depend on the object's size within the reference (the model sees every image at
        256 px), so a tight crop blows the object up. On Kvasir polyps (benchmarks/eval_library.py, 6 targets)
        the whole 607x530 reference gave Dice 0.786 and a margin-1.0 crop (308x372) 0.705; on 4 targets margins
        0.5/0.25/0.1 fell to 0.52/0.49/0.39. Lung, gland and EM masks span their images and were unaffected. So a
        source up to 1024 px is kept whole (it is small anyway) and only large sources (slides, mosaics) are cut
        to a window of >= 1024 px around the object, about the field of view of a target tile. A name may be saved
        several times (several exemplars of one structure are ensembled); saving the same name with identical pixels
        again is refused. ``instances``: the mask marks many objects, and a prompt finds every one like them; None
        (default) decides from the mask, as `promptseg oneshot` and the One-shot widget do: several objects (ids,
        or separate components) are many instances. ``partial_labels``: the mask labels only some of the objects of
        ``image`` (10 nuclei of 300), so a prompt learns background only near them, as `promptseg oneshot
        --partial-labels` does, instead of teaching the unlabelled objects as background; it makes the entry many
        instances (one region with partial labels is refused). Raises :class:`PromptsegError` naming what is wrong.
        """
        from ...models.preprocessing import as_channels_last
        from ..reference_pair import check_reference

        what = f"reference '{source}'" if source else "reference image"
        if not isinstance(name, str):  # None was saved as an entry named 'None'
            raise PromptsegError(f"a library entry's name is text (e.g. 'gland'), got {name!r}")
        name = clean_name(name)
        if not name:
            raise PromptsegError("a library entry needs a name (e.g. 'gland')")
        description = clean_name(description or "")
        hwc = as_channels_last(image, channel_axis=channel_axis, channels=channels, name=what)
        if hwc.dtype.kind == "f" and not np.isfinite(hwc).all():
            raise PromptsegError(f"{what}: the image contains NaN or infinite values; fill or clip them first")
        # refused when saved, not at every prompt it answers, by the rule every reference is checked by
        mask = check_reference(hwc, mask, what, f"{what} mask")
        binary = mask > 0
        if margin is not None and margin < 0:
            raise PromptsegError(f"margin must be >= 0, got {margin}")
        if min_crop < 0:
            raise PromptsegError(f"min_crop (CLI: --min-crop) must be >= 0 pixels, got {min_crop}")
        if pixel_size is not None:
            sizes = tuple(float(p) for p in pixel_size)
            # NaN would make library.json invalid JSON; a size <= 0 is no size
            if len(sizes) != 2 or not all(np.isfinite(p) and p > 0 for p in sizes):
                raise PromptsegError(
                    f"{what}: pixel size must be two finite numbers above 0 (dy, dx), got {tuple(pixel_size)}"
                )
            pixel_size = (sizes[0], sizes[1])
        if partial_labels and instances is False:
            raise PromptsegError(
                f"{what}: partial labels (the mask labels only some of the objects) apply to a many-instances entry, "
                "and this one is saved as one region; save it with instances (CLI: --instances), or without partial "
                "labels"
            )
        if instances is None:
            from ...methods.instances import is_many_objects

            # labels of only some objects are examples of many (as `promptseg oneshot --partial-labels` decides)
            instances = bool(partial_labels) or is_many_objects(mask)
        crop = (0, 0, *binary.shape) if margin is None else bounding_crop(binary, margin, min_crop)
        r0, c0, r1, c1 = crop
        stored = hwc[r0:r1, c0:c1]
        # colour only when the input was RGB(A) as such; chosen channels of a multichannel image stay channels
        rgb = stored.shape[-1] == 3 and channel_axis is None and channels is None
        if stored.shape[-1] == 1:
            stored, stored_axis = stored[..., 0], None
        else:
            stored_axis = None if rgb else 2
        stored = np.ascontiguousarray(stored)
        stored_mask = np.ascontiguousarray(binary[r0:r1, c0:c1])
        # a many-instances entry keeps its ids: components of the binary mask would merge touching objects
        # (329 labelled nuclei of a DSB image became 116 objects)
        ids = instance_ids(mask[r0:r1, c0:c1])
        stored_labels = ids if instances else stored_mask
        digest = _content_hash(stored, stored_labels, bool(partial_labels))
        # the same pixels saved under this name as another kind (one region, instances, partial labels): a second
        # entry would ensemble the two readings of one exemplar, which contradict each other
        as_kind = {
            _content_hash(stored, stored_mask): "one region",
            _content_hash(stored, ids): "many instances",
            _content_hash(stored, ids, True): "many instances, partial labels",
        }

        # written as they are now, checked before the lock: an entry export could not write is not saved
        image_bytes, mask_bytes = _tiff_bytes(stored), _png_bytes(stored_labels)
        for kind, data in (("image", image_bytes), ("mask", mask_bytes)):
            too_large = oversized_file(f"library entry '{name}' ({what}): its {kind} file", len(data))
            if too_large:
                raise PromptsegError(
                    f"{too_large}; nothing saved: save a smaller crop of the image (a smaller margin or minimum crop "
                    "side; CLI: --margin, --min-crop, not --no-crop)"
                )

        with self._changing():
            entries = self.entries
            for other in entries:
                if name_key(other.name) != name_key(name):
                    continue
                if other.sha256 == digest:
                    raise PromptsegError(
                        f"library entry '{name}' with these exact pixels is already saved (id {other.id})"
                    )
                if other.sha256 in as_kind:
                    raise PromptsegError(
                        f"library entry '{name}' with these exact pixels is already saved as {as_kind[other.sha256]} "
                        f"(id {other.id}); to save it otherwise, remove that entry first (CLI: promptseg library "
                        f"remove {other.id})"
                    )
            entry_id = self._new_id(name, {e.id for e in entries}, digest)
            folder = f"entries/{entry_id}"
            entry = LibraryEntry(
                id=entry_id,
                name=name,
                image_path=f"{folder}/image.tif",
                mask_path=f"{folder}/mask.png",
                shape=tuple(stored.shape),
                dtype=np.dtype(stored.dtype).name,
                description=description,
                created=_now(),
                rgb=rgb,
                channel_axis=stored_axis,
                source=str(source),
                source_shape=tuple(int(s) for s in binary.shape),
                crop=tuple(int(v) for v in crop),  # type: ignore[arg-type]
                pixel_size=pixel_size,
                mask_pixels=int(stored_mask.sum()),
                sha256=digest,
                created_with=f"napari-promptseg {__version__}",
                instances=bool(instances),
                partial_labels=bool(partial_labels),
                root=self.path,
            )
            try:  # a disk that fills up at the mask (or the index) leaves no folder the index does not list
                self._write_entry_files(entry, image_bytes, mask_bytes)
                self._write_index([*entries, entry])
            except BaseException:
                shutil.rmtree(self.path / folder, ignore_errors=True)
                raise
            return entry

    def _write_entry_files(self, entry: LibraryEntry, image_bytes: bytes, mask_bytes: bytes) -> None:
        for relative, data in ((entry.image_path, image_bytes), (entry.mask_path, mask_bytes)):
            _atomic_write(self.path / relative, data)

    def remove(self, name_or_id: str, *, all_with_name: bool = False) -> list[LibraryEntry]:
        """Remove the entry with this id, or with this name (when several share it: ``all_with_name=True``)."""
        with self._changing(create=False):
            found = self.find(name_or_id)
            if not found:
                known = ", ".join(f"{e.name} ({e.id})" for e in self._entries) or "none (the library is empty)"
                raise PromptsegError(f"reference library {self.path}: no entry {name_or_id!r}; entries: {known}")
            if len(found) > 1 and not all_with_name:
                ids = ", ".join(e.id for e in found)
                raise PromptsegError(
                    f"{len(found)} library entries are named {name_or_id!r} ({ids}); give one id, or remove them all "
                    "(CLI: --all)"
                )
            gone = {e.id for e in found}
            kept = [e for e in self._entries if e.id not in gone]
            # an entry copied by hand in library.json under another name shares the files: they stay for it
            in_use = {(self.path / p).parent for e in kept for p in (e.image_path, e.mask_path)}
            self._write_index(kept)
            for entry in found:  # files go after the index no longer points at them
                folder = (self.path / entry.image_path).parent
                if folder.parent == self.path / "entries" and folder not in in_use:
                    shutil.rmtree(folder, ignore_errors=True)
            return found

    # -- exchange --------------------------------------------------------------------------------------------------
    def export(self, zip_path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the whole library (index + files) to one zip file."""
        self.reload()
        target = Path(zip_path).expanduser()
        if target.is_dir():  # --force would not replace a folder, and failed naming a temporary file
            raise PromptsegError(f"{target} is a directory; give the zip file's name (e.g. {target / 'library.zip'})")
        if target.exists() and not overwrite:
            raise PromptsegError(
                f"{target} already exists; choose another file name, or replace it (CLI: --force; overwrite=True)"
            )
        if not self._entries:
            raise PromptsegError(f"reference library {self.path} is empty; nothing to export")
        files = {}  # entries copied by hand in library.json share files: each goes in once
        for entry in self._entries:  # checked before a byte is written: no zip that import would refuse
            for relative in (entry.image_path, entry.mask_path):
                source = self.path / relative
                if not source.is_file():
                    raise PromptsegError(
                        f"library entry '{entry.name}' ({entry.id}): file {source} is missing; remove the "
                        "entry before exporting"
                    )
                too_large = oversized_file(
                    f"library entry '{entry.name}' ({entry.id}): file {source}", source.stat().st_size
                )
                if too_large:
                    raise PromptsegError(
                        f"{too_large}; remove the entry and save a smaller crop of its image before exporting"
                    )
                files.setdefault(relative, source)
        with replacing(target) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            index = {"format": FORMAT, "version": VERSION, "entries": [e.to_json() for e in self._entries]}
            zf.writestr(INDEX, json.dumps(index, indent=2) + "\n")
            for relative, source in files.items():
                zf.write(source, relative)
        return target

    @classmethod
    def import_zip(
        cls, zip_path: str | os.PathLike, into: ReferenceLibrary | str | os.PathLike | None = None
    ) -> ImportResult:
        """Merge an exported library zip into ``into`` (default: the default library).

        Every imported entry gets a new id, so nothing is overwritten; an entry whose name and pixels equal an
        existing one is skipped; one whose name the library has already is another exemplar of it
        (:attr:`ImportResult.joined`). The zip is validated first (format, version, paths, readable files that match
        their recorded shapes); a bad zip changes nothing.
        """
        source = Path(zip_path).expanduser()
        library = into if isinstance(into, ReferenceLibrary) else cls.open(into)
        where = str(source)
        if source.is_dir():  # a library folder itself (it said "no such file", though the folder is there)
            raise PromptsegError(
                f"{where}: a folder, not a zip file; import the FILE.zip `promptseg library export` wrote, or use a "
                f"library folder as it is (CLI: --library {where}; ReferenceLibrary.open(path))"
            )
        if not source.is_file():
            raise PromptsegError(f"{where}: no such file")
        try:
            zf = zipfile.ZipFile(source)
        except (zipfile.BadZipFile, OSError) as exc:
            raise PromptsegError(f"{where}: not a zip file ({exc})") from exc
        with zf:
            members = {}
            for info in zf.infolist():
                _safe_relative(info.filename, f"{where}: member")
                too_large = oversized_file(f"{where}: member {info.filename}", info.file_size)
                if too_large:  # a zip's own sizes are not trusted beyond it (zip bombs)
                    raise PromptsegError(f"{too_large}; nothing imported")
                members[info.filename] = info
            if INDEX not in members:
                raise PromptsegError(f"{where}: no {INDEX} inside; not an exported napari-promptseg library")
            try:
                data = json.loads(zf.read(INDEX).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise PromptsegError(f"{where}: {INDEX} is not valid JSON ({exc})") from exc
            records = _parse_index(data, f"{where}:{INDEX}")
            # every entry checked first (a bad zip changes nothing), one at a time: its bytes are read again when
            # written, so an import holds one entry's files, not the whole library's
            incoming = [_checked_zip_entry(zf, record, members, where) for record in records]
            return _merge_zip_entries(library, zf, incoming)


def _checked_zip_entry(zf: zipfile.ZipFile, record: dict, members: dict, where: str) -> LibraryEntry:
    """An exported zip's entry, its files read and checked (readable, of the recorded shapes, a mask that marks
    something) and its hash computed as add() does; its bytes are not kept."""
    entry = LibraryEntry.from_json(record, None, f"{where}:{INDEX}")
    for relative in (entry.image_path, entry.mask_path):
        if relative not in members:
            raise PromptsegError(f"{where}: entry '{entry.name}' refers to {relative}, missing in the zip")
    what = f"{where}: entry '{entry.name}'"
    # closed at once: the reader's reference cycles kept the file's bytes until the garbage collector ran
    try:
        with io.BytesIO(zf.read(entry.image_path)) as buffer:
            image = tifffile.imread(buffer)
    except Exception as exc:  # tifffile raises several types on corrupt data
        raise PromptsegError(f"{what}: image is not a readable TIFF ({exc})") from exc
    mask = _read_png(zf.read(entry.mask_path), f"{what} mask")
    if tuple(image.shape) != entry.shape or mask.shape != image.shape[:2]:
        raise PromptsegError(
            f"{what}: image {image.shape} / mask {mask.shape} do not match the recorded shape {entry.shape}"
        )
    if not mask.any():  # as add() refuses it: every prompt the entry answered would fail
        raise PromptsegError(f"{what} mask: {entry.mask_path} marks no pixel (all 0); nothing imported")
    ids = entry.instances and mask.dtype.itemsize > 1  # what add() hashed: the ids, else the mask
    entry.sha256 = _content_hash(image, mask.astype(np.uint16) if ids else mask > 0, entry.partial_labels)
    return entry


def _merge_zip_entries(library: ReferenceLibrary, zf: zipfile.ZipFile, incoming: list[LibraryEntry]) -> ImportResult:
    """Write checked entries of ``zf`` (:func:`_checked_zip_entry`) into ``library`` under new ids, one entry's
    bytes at a time; one the library holds already (same name and pixels) is skipped."""
    with library._changing():
        existing = library.entries
        known = {(name_key(e.name), e.sha256) for e in existing}
        taken = {e.id for e in existing}
        added, skipped, written = [], [], []
        joined: dict[str, list[str]] = {}
        try:
            for entry in incoming:
                image_path, mask_path = entry.image_path, entry.mask_path  # in the zip
                if (name_key(entry.name), entry.sha256) in known:
                    skipped.append(entry.name)
                    continue
                entry.id = library._new_id(entry.name, taken, entry.sha256)
                before = [e.id for e in existing if name_key(e.name) == name_key(entry.name)]
                if before:
                    joined[entry.id] = before
                taken.add(entry.id)
                entry.image_path, entry.mask_path = f"entries/{entry.id}/image.tif", f"entries/{entry.id}/mask.png"
                entry.root = library.path
                written.append(library.path / "entries" / entry.id)
                library._write_entry_files(entry, zf.read(image_path), zf.read(mask_path))
                known.add((name_key(entry.name), entry.sha256))
                added.append(entry)
            if added:
                library._write_index([*existing, *added])
        except BaseException:
            for folder in written:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        return ImportResult(library, added, skipped, joined)
