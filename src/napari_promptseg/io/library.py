"""Reference library: named one-shot exemplars (image crop + mask + name + description) saved on disk.

A typed prompt ("glands") is later matched to the entry names/descriptions (:mod:`..methods.library`) and answered
by SAT with the matching exemplars. No pickle: plain JSON, TIFF and PNG, readable by any tool.

On-disk format, version 1 (a directory)::

    library.json                  {"format": "napari-promptseg-library", "version": 1, "entries": [ENTRY, ...]}
    entries/<id>/image.tif        the exemplar crop in its original dtype (2D, RGB (H, W, 3), or (H, W, C<=3))
    entries/<id>/mask.png         uint8, 255 = the object, 0 = background; same rows/columns as the image

    ENTRY = {
      "id": "gland-3f2a9c1e",            unique, also the folder name ([a-z0-9-])
      "name": "gland",                   what the user calls the structure; names may repeat (more exemplars)
      "description": "H&E colon gland",  optional free text, also matched against prompts
      "created": "2025-01-31T12:00:00+00:00",
      "image": "entries/<id>/image.tif", "mask": "entries/<id>/mask.png",   relative POSIX paths
      "shape": [H, W] or [H, W, C], "dtype": "uint8",
      "rgb": true|false,                 3 colour channels, last axis
      "channel_axis": null|2,            2 = channels last that are not RGB colour (e.g. 2 fluorescence channels)
      "source": "slide_01.tif",          file or layer name it came from
      "source_shape": [H, W], "crop": [row0, col0, row1, col1],   where the crop lies in the source (end exclusive)
      "pixel_size": null|[dy, dx],       physical size of a pixel if known
      "instances": false,                true: the mask marks many objects and a prompt finds every one like them
                                         (the many-instances mode); optional, false when absent
      "mask_pixels": 1234, "sha256": "...",  content hash of image + mask (identical re-imports are skipped)
      "created_with": "napari-promptseg 0.1.0"
    }

Text embeddings are not stored: they are recomputed at match time (milliseconds for a few hundred entries).
``library.json`` is always written atomically (temporary file + ``os.replace``) and re-read before every change,
so a crash never leaves a half-written index and two writers (widget + CLI) do not drop each other's entries unless
they write at the same instant. The default location is ``$PROMPTSEG_LIBRARY``, else the platform's user data
directory (``platformdirs.user_data_dir("napari-promptseg")/library``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import platformdirs
import tifffile

from .. import __version__
from ..errors import PromptsegError

LIBRARY_ENV = "PROMPTSEG_LIBRARY"
FORMAT = "napari-promptseg-library"
VERSION = 1
INDEX = "library.json"
#: margin around the mask's bounding box kept in an entry, as a fraction of the box's longer side (see ``add``)
DEFAULT_MARGIN = 1.0
#: ... but an entry keeps at least this many pixels per side of its source (all of a smaller source), see ``add``
DEFAULT_MIN_CROP = 1024
#: never trust a zip's own sizes beyond this many bytes per file (zip bombs)
MAX_FILE_BYTES = 1 << 30

_REQUIRED = ("id", "name", "image", "mask", "shape", "dtype")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,80}$")


def default_library_path() -> Path:
    return Path(os.environ.get(LIBRARY_ENV) or Path(platformdirs.user_data_dir("napari-promptseg")) / "library")


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40]
    return slug or "entry"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _content_hash(image: np.ndarray, mask: np.ndarray) -> str:
    digest = hashlib.sha256()
    for arr in (image, mask):
        digest.update(f"{arr.dtype.str}{arr.shape}".encode())
        digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()


def _safe_relative(path: object, what: str) -> str:
    """A relative POSIX path inside the library (no '..', no absolute path, no drive, no backslash)."""
    if not isinstance(path, str) or not path:
        raise PromptsegError(f"{what}: expected a relative file path, got {path!r}")
    pure = PurePosixPath(path)
    if "\\" in path or pure.is_absolute() or ".." in pure.parts or ":" in path or path.startswith("/"):
        raise PromptsegError(f"{what}: unsafe path {path!r} (absolute or leaving the library); refusing it")
    return path


@dataclass
class LibraryEntry:
    """One exemplar. ``image()``/``mask()`` read its files from the library directory on demand."""

    id: str
    name: str
    image_path: str
    mask_path: str
    shape: tuple[int, ...]
    dtype: str
    description: str = ""
    created: str = ""
    rgb: bool = False
    channel_axis: int | None = None
    source: str = ""
    source_shape: tuple[int, ...] | None = None
    crop: tuple[int, int, int, int] | None = None
    pixel_size: tuple[float, float] | None = None
    mask_pixels: int = 0
    sha256: str = ""
    created_with: str = ""
    instances: bool = False
    root: Path | None = field(default=None, repr=False, compare=False)

    @property
    def text(self) -> str:
        """What prompts are matched against: the name, plus ': description' when there is one."""
        return f"{self.name}: {self.description}" if self.description else self.name

    @property
    def synonyms(self) -> list[str]:
        """Phrases of the description separated by ',', ';' or '/' ("neuron, axon" -> both), when there are several."""
        phrases = [p.strip() for p in re.split(r"[,;/]", self.description) if p.strip()]
        return phrases if len(phrases) > 1 else []

    def match_texts(self) -> list[str]:
        """Texts a prompt is compared with: the name, 'name: description', and each listed synonym."""
        return list(dict.fromkeys([self.name, self.text, *self.synonyms]))

    def image(self) -> np.ndarray:
        return _read_tiff(self._file(self.image_path), f"library entry '{self.name}' ({self.id}) image")

    def mask(self) -> np.ndarray:
        """Binary (H, W) bool mask."""
        return _read_png(self._file(self.mask_path), f"library entry '{self.name}' ({self.id}) mask") > 0

    def _file(self, relative: str) -> Path:
        if self.root is None:
            raise PromptsegError(f"library entry '{self.name}' is not attached to a library directory")
        return self.root / relative

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "created": self.created,
            "image": self.image_path,
            "mask": self.mask_path,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "rgb": self.rgb,
            "channel_axis": self.channel_axis,
            "source": self.source,
            "source_shape": None if self.source_shape is None else list(self.source_shape),
            "crop": None if self.crop is None else list(self.crop),
            "pixel_size": None if self.pixel_size is None else list(self.pixel_size),
            "mask_pixels": self.mask_pixels,
            "sha256": self.sha256,
            "created_with": self.created_with,
            "instances": self.instances,
        }

    @classmethod
    def from_json(cls, record: object, root: Path | None, where: str) -> LibraryEntry:
        if not isinstance(record, dict):
            raise PromptsegError(f"{where}: an entry is not a JSON object: {record!r:.80}")
        missing = [k for k in _REQUIRED if k not in record]
        if missing:
            raise PromptsegError(f"{where}: entry {record.get('id', '?')!r} lacks {', '.join(missing)}")
        entry_id = record["id"]
        if not isinstance(entry_id, str) or not _ID_RE.match(entry_id):
            raise PromptsegError(f"{where}: invalid entry id {entry_id!r} (expected lowercase letters, digits, '-')")
        if not isinstance(record["name"], str) or not record["name"].strip():
            raise PromptsegError(f"{where}: entry {entry_id!r} has no name")
        try:
            shape = tuple(int(s) for s in record["shape"])
            np.dtype(record["dtype"])
            channel_axis = record.get("channel_axis")
            channel_axis = None if channel_axis is None else int(channel_axis)
        except (TypeError, ValueError) as exc:
            raise PromptsegError(f"{where}: entry {entry_id!r} has an invalid shape/dtype ({exc})") from exc
        optional = {k: record.get(k) for k in ("source_shape", "crop", "pixel_size")}
        return cls(
            id=entry_id,
            name=record["name"],
            image_path=_safe_relative(record["image"], f"{where}: entry {entry_id!r} image"),
            mask_path=_safe_relative(record["mask"], f"{where}: entry {entry_id!r} mask"),
            shape=shape,
            dtype=str(record["dtype"]),
            description=str(record.get("description") or ""),
            created=str(record.get("created") or ""),
            rgb=bool(record.get("rgb", False)),
            instances=bool(record.get("instances", False)),
            channel_axis=channel_axis,
            source=str(record.get("source") or ""),
            source_shape=None if optional["source_shape"] is None else tuple(optional["source_shape"]),
            crop=None if optional["crop"] is None else tuple(optional["crop"]),  # type: ignore[arg-type]
            pixel_size=None if optional["pixel_size"] is None else tuple(optional["pixel_size"]),  # type: ignore
            mask_pixels=int(record.get("mask_pixels") or 0),
            sha256=str(record.get("sha256") or ""),
            created_with=str(record.get("created_with") or ""),
            root=root,
        )


@dataclass
class ImportResult:
    library: ReferenceLibrary
    added: list[LibraryEntry]
    skipped: list[str]  # names of entries already present with identical content


def _read_tiff(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise PromptsegError(f"{what}: file {path} is missing; the library is damaged (remove the entry)")
    return tifffile.imread(path)


def _read_png(source: Path | bytes, what: str) -> np.ndarray:
    import imageio.v3 as iio

    if isinstance(source, Path) and not source.is_file():
        raise PromptsegError(f"{what}: file {source} is missing; the library is damaged (remove the entry)")
    try:
        arr = np.asarray(iio.imread(source, extension=".png"))
    except Exception as exc:  # imageio raises per-plugin exception types
        raise PromptsegError(f"{what}: not a readable PNG ({exc})") from exc
    return arr[..., 0] if arr.ndim == 3 else arr


def _png_bytes(mask: np.ndarray) -> bytes:
    import imageio.v3 as iio

    return iio.imwrite("<bytes>", mask.astype(np.uint8) * 255, extension=".png")


def _tiff_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, image, compression="zlib", photometric="rgb" if _is_rgb(image) else "minisblack")
    return buffer.getvalue()


def _is_rgb(image: np.ndarray) -> bool:
    return image.ndim == 3 and image.shape[-1] == 3


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _parse_index(data: object, where: str) -> list[object]:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PromptsegError(f'{where}: not a napari-promptseg reference library (expected "format": "{FORMAT}")')
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise PromptsegError(f"{where}: invalid library format version {version!r}")
    if version > VERSION:
        raise PromptsegError(
            f"{where}: library format version {version} was written by a newer napari-promptseg; this version "
            f"({__version__}) reads version {VERSION}. Upgrade napari-promptseg to use it."
        )
    entries = data.get("entries")
    if not isinstance(entries, list):
        raise PromptsegError(f'{where}: "entries" must be a list')
    return entries


def bounding_crop(mask: np.ndarray, margin: float, min_size: int = 0) -> tuple[int, int, int, int]:
    """(row0, col0, row1, col1), end exclusive: the mask's bounding box grown by ``margin`` x its longer side, then
    widened (around its centre, inside the image) to at least ``min_size`` pixels per side where the image allows."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    pad = int(np.ceil(margin * max(r1 - r0, c1 - c0)))
    out = []
    for lo, hi, size in ((r0, r1, mask.shape[0]), (c0, c1, mask.shape[1])):
        lo, hi = max(lo - pad, 0), min(hi + pad, size)
        width = max(hi - lo, min(min_size, size))
        if width > hi - lo:
            lo = min(max(lo - (width - (hi - lo)) // 2, 0), size - width)
            hi = lo + width
        out.append((int(lo), int(hi)))
    (r0, r1), (c0, c1) = out
    return r0, c0, r1, c1


class ReferenceLibrary:
    """A directory of named exemplars; see the module docstring for the format.

    ``ReferenceLibrary.open()`` opens (or starts, on the first ``add``) the default library.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).expanduser()
        self._entries: list[LibraryEntry] = []
        self.reload()

    @classmethod
    def open(cls, path: str | os.PathLike | None = None) -> ReferenceLibrary:
        """The library at ``path`` (default: ``$PROMPTSEG_LIBRARY`` or the user data dir); empty if it is new."""
        target = default_library_path() if path is None else Path(path).expanduser()
        if target.exists() and not target.is_dir():
            raise PromptsegError(f"reference library {target} is a file, not a directory")
        return cls(target)

    # -- reading ---------------------------------------------------------------------------------------------------
    @property
    def index_path(self) -> Path:
        return self.path / INDEX

    def reload(self) -> None:
        """Re-read library.json (another process may have changed it)."""
        self._entries = self._read_entries()

    def _read_entries(self) -> list[LibraryEntry]:
        if not self.index_path.is_file():
            return []
        where = str(self.index_path)
        try:
            data = json.loads(self.index_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PromptsegError(f"{where}: cannot be read as a library index ({exc})") from exc
        return [LibraryEntry.from_json(record, self.path, where) for record in _parse_index(data, where)]

    @property
    def entries(self) -> list[LibraryEntry]:
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self):
        return iter(list(self._entries))

    def names(self) -> list[str]:
        """Distinct entry names, in insertion order."""
        return list(dict.fromkeys(e.name for e in self._entries))

    def find(self, name_or_id: str) -> list[LibraryEntry]:
        """Entries with this id, else with this name (case-insensitive)."""
        by_id = [e for e in self._entries if e.id == name_or_id]
        if by_id:
            return by_id
        key = name_or_id.strip().casefold()
        return [e for e in self._entries if e.name.casefold() == key]

    def get(self, name_or_id: str) -> LibraryEntry:
        """The entry with this id, or the only/newest entry with this name."""
        found = self.find(name_or_id)
        if not found:
            known = ", ".join(self.names()) or "none (the library is empty)"
            raise PromptsegError(f"reference library {self.path}: no entry {name_or_id!r}; entries: {known}")
        return found[-1]

    # -- writing ---------------------------------------------------------------------------------------------------
    def _write_index(self, entries: list[LibraryEntry]) -> None:
        data = {"format": FORMAT, "version": VERSION, "entries": [e.to_json() for e in entries]}
        _atomic_write(self.index_path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))
        self._entries = entries

    def _new_id(self, name: str, taken: set[str]) -> str:
        while True:
            entry_id = f"{_slug(name)}-{uuid.uuid4().hex[:8]}"
            if entry_id not in taken and not (self.path / "entries" / entry_id).exists():
                return entry_id

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
        instances: bool = False,
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
        again is refused. Raises :class:`PromptsegError` naming what is wrong.
        """
        from ..models.preprocessing import as_channels_last

        what = f"reference '{source}'" if source else "reference image"
        name = " ".join(str(name).split())
        if not name:
            raise PromptsegError("a library entry needs a name (e.g. 'gland')")
        description = " ".join(str(description).split())
        hwc = as_channels_last(image, channel_axis=channel_axis, channels=channels, name=what)
        if hwc.dtype.kind == "f" and not np.isfinite(hwc).all():
            raise PromptsegError(f"{what}: the image contains NaN or infinite values; fill or clip them first")
        mask = np.asarray(mask)
        if mask.ndim == 3 and mask.shape[-1] in (3, 4) and mask.shape[:2] == hwc.shape[:2]:
            mask = mask[..., 0]
        if mask.shape != hwc.shape[:2]:
            raise PromptsegError(
                f"{what}: mask of shape {mask.shape} does not match the image's {hwc.shape[:2]} (rows, columns)"
            )
        if mask.dtype.kind == "f" and np.isnan(mask).any():
            raise PromptsegError(f"{what}: the mask contains NaN values")
        binary = mask > 0
        if not binary.any():
            raise PromptsegError(f"{what}: the mask is empty; label the object to save (non-zero pixels)")
        if margin is not None and margin < 0:
            raise PromptsegError(f"margin must be >= 0, got {margin}")
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
        digest = _content_hash(stored, stored_mask)

        self.reload()
        entries = self.entries
        for other in entries:
            if other.name.casefold() == name.casefold() and other.sha256 == digest:
                raise PromptsegError(f"library entry '{name}' with these exact pixels is already saved (id {other.id})")
        entry_id = self._new_id(name, {e.id for e in entries})
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
            pixel_size=None if pixel_size is None else tuple(float(p) for p in pixel_size),  # type: ignore
            mask_pixels=int(stored_mask.sum()),
            sha256=digest,
            created_with=f"napari-promptseg {__version__}",
            instances=bool(instances),
            root=self.path,
        )
        self._write_entry_files(entry, _tiff_bytes(stored), _png_bytes(stored_mask))
        try:
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
        self.reload()
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
        self._write_index([e for e in self._entries if e.id not in gone])
        for entry in found:  # files go after the index no longer points at them
            folder = (self.path / entry.image_path).parent
            if folder.parent == self.path / "entries":
                shutil.rmtree(folder, ignore_errors=True)
        return found

    # -- exchange --------------------------------------------------------------------------------------------------
    def export(self, zip_path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the whole library (index + files) to one zip file."""
        self.reload()
        target = Path(zip_path).expanduser()
        if target.exists() and not overwrite:
            raise PromptsegError(f"{target} already exists; choose another file name or remove it first")
        if not self._entries:
            raise PromptsegError(f"reference library {self.path} is empty; nothing to export")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        try:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                index = {"format": FORMAT, "version": VERSION, "entries": [e.to_json() for e in self._entries]}
                zf.writestr(INDEX, json.dumps(index, indent=2) + "\n")
                for entry in self._entries:
                    for relative in (entry.image_path, entry.mask_path):
                        source = self.path / relative
                        if not source.is_file():
                            raise PromptsegError(
                                f"library entry '{entry.name}' ({entry.id}): file {source} is missing; remove the "
                                "entry before exporting"
                            )
                        zf.write(source, relative)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return target

    @classmethod
    def import_zip(
        cls, zip_path: str | os.PathLike, into: ReferenceLibrary | str | os.PathLike | None = None
    ) -> ImportResult:
        """Merge an exported library zip into ``into`` (default: the default library).

        Every imported entry gets a new id, so nothing is overwritten; an entry whose name and pixels equal an
        existing one is skipped. The zip is validated first (format, version, paths, readable files that match
        their recorded shapes); a bad zip changes nothing.
        """
        source = Path(zip_path).expanduser()
        library = into if isinstance(into, ReferenceLibrary) else cls.open(into)
        where = str(source)
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
                if info.file_size > MAX_FILE_BYTES:
                    raise PromptsegError(f"{where}: member {info.filename} is implausibly large ({info.file_size} B)")
                members[info.filename] = info
            if INDEX not in members:
                raise PromptsegError(f"{where}: no {INDEX} inside; not an exported napari-promptseg library")
            try:
                data = json.loads(zf.read(INDEX).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise PromptsegError(f"{where}: {INDEX} is not valid JSON ({exc})") from exc
            records = _parse_index(data, f"{where}:{INDEX}")
            incoming = []
            for record in records:
                entry = LibraryEntry.from_json(record, None, f"{where}:{INDEX}")
                files = []
                for relative in (entry.image_path, entry.mask_path):
                    if relative not in members:
                        raise PromptsegError(f"{where}: entry '{entry.name}' refers to {relative}, missing in the zip")
                    files.append(zf.read(relative))
                image_bytes, mask_bytes = files
                what = f"{where}: entry '{entry.name}'"
                try:
                    image = tifffile.imread(io.BytesIO(image_bytes))
                except Exception as exc:  # tifffile raises several types on corrupt data
                    raise PromptsegError(f"{what}: image is not a readable TIFF ({exc})") from exc
                mask = _read_png(mask_bytes, f"{what} mask")
                if tuple(image.shape) != entry.shape or mask.shape != image.shape[:2]:
                    raise PromptsegError(
                        f"{what}: image {image.shape} / mask {mask.shape} do not match the recorded shape {entry.shape}"
                    )
                entry.sha256 = _content_hash(image, mask > 0)
                incoming.append((entry, image_bytes, mask_bytes))

        library.reload()
        existing = library.entries
        known = {(e.name.casefold(), e.sha256) for e in existing}
        taken = {e.id for e in existing}
        added, skipped, written = [], [], []
        try:
            for entry, image_bytes, mask_bytes in incoming:
                if (entry.name.casefold(), entry.sha256) in known:
                    skipped.append(entry.name)
                    continue
                entry.id = library._new_id(entry.name, taken)
                taken.add(entry.id)
                entry.image_path, entry.mask_path = f"entries/{entry.id}/image.tif", f"entries/{entry.id}/mask.png"
                entry.root = library.path
                written.append(library.path / "entries" / entry.id)
                library._write_entry_files(entry, image_bytes, mask_bytes)
                known.add((entry.name.casefold(), entry.sha256))
                added.append(entry)
            if added:
                library._write_index([*existing, *added])
        except BaseException:
            for folder in written:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        return ImportResult(library, added, skipped)
