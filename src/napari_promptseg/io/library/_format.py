"""The library's on-disk format: constants, one entry, and the file helpers (see the package docstring)."""

from __future__ import annotations

import datetime as _dt
import io
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import platformdirs
import tifffile

from ... import __version__
from ...errors import PromptsegError
from .._files import path_from_environment, replacing
from ..images import array_digest, label_objects

LIBRARY_ENV = "PROMPTSEG_LIBRARY"
FORMAT = "napari-promptseg-library"
VERSION = 1
INDEX = "library.json"
#: held while a process changes the index (add, remove, import)
LOCK = ".library.lock"
LOCK_TIMEOUT_S = 120.0
#: margin around the mask's bounding box kept in an entry, as a fraction of the box's longer side (see ``add``)
DEFAULT_MARGIN = 1.0
#: ... but an entry keeps at least this many pixels per side of its source (all of a smaller source), see ``add``
DEFAULT_MIN_CROP = 1024
#: never trust a zip's own sizes beyond this many bytes per file (zip bombs); an entry's file larger than this is
#: refused when added and when exported (:func:`oversized_file`), so every entry can go into a zip and back
MAX_FILE_BYTES = 1 << 30

_REQUIRED = ("id", "name", "image", "mask", "shape", "dtype")


class DamagedIndexError(PromptsegError):
    """A library index (library.json, on disk or in a zip) is not valid JSON or not of the library's structure."""


class LibraryNotWritableError(PromptsegError):
    """A library folder that cannot be written (a shared library mounted read-only), found on taking its lock to
    change it. Reading it takes no lock."""


_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,80}$")


def default_library_path() -> Path:
    """``$PROMPTSEG_LIBRARY`` (``~`` and variables expanded), else the user's data folder."""
    explicit = os.environ.get(LIBRARY_ENV, "").strip()
    if explicit:
        return path_from_environment(explicit)
    return Path(platformdirs.user_data_dir("napari-promptseg")) / "library"


def _mebibytes(size: int) -> str:
    return f"{size / 2**20:.0f} MiB" if size >= 10 * 2**20 else f"{size / 2**20:.2f} MiB"


def oversized_file(what: str, size: int) -> str | None:
    """The one size rule of a library's files (add, export; an import refuses a zip member past it): None when a
    file of ``size`` bytes may be kept, else what is wrong with it, ``what`` naming it ("library entry 'gland' (id):
    file ...")."""
    if size <= MAX_FILE_BYTES:  # read here, not imported by value: one limit for every caller
        return None
    return (
        f"{what} is {_mebibytes(size)}, over the {_mebibytes(MAX_FILE_BYTES)} a library file may hold (a library "
        "zip holds no larger file: an import refuses it)"
    )


def _slug(name: str) -> str:
    # accents dropped ('Zellkörper' -> 'zellkorper'); ids stay ASCII, portable as folder and zip member names
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:40]
    return slug or "entry"


def clean_name(text: str) -> str:
    """An entry's name or description as stored: spaces collapsed, composed characters ('ö' one character, as most
    keyboards type it; a name pasted from a macOS file name comes decomposed, 'o' + combining diaeresis)."""
    return unicodedata.normalize("NFC", " ".join(str(text).split()))


def name_key(name: str) -> str:
    """What names are compared by (find, remove, duplicates, import): case, spaces and Unicode forms aside, so
    'Zellkörper' typed or pasted in either form, or a name edited by hand with extra spaces, is the entry's name."""
    return unicodedata.normalize("NFKC", clean_name(name)).casefold()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


#: hashed after the pixels of an entry saved with partial labels: its exemplars are fitted otherwise (background only
#: near the labelled objects), so a fit cached under the same pixels without the flag must not answer for it
_PARTIAL_MARK = np.frombuffer(b"partial_labels", np.uint8)


def _content_hash(image: np.ndarray, mask: np.ndarray, partial_labels: bool = False) -> str:
    """The entry's identity: its pixels, and whether its labels mark only some objects (an entry without the flag
    keeps the digest it had before the flag existed)."""
    return array_digest(image, mask, _PARTIAL_MARK) if partial_labels else array_digest(image, mask)


def _safe_relative(path: object, what: str) -> str:
    """A relative POSIX path inside the library (no '..', no absolute path, no drive, no backslash)."""
    if not isinstance(path, str) or not path:
        raise DamagedIndexError(f"{what}: expected a relative file path, got {path!r}")
    pure = PurePosixPath(path)
    if "\\" in path or pure.is_absolute() or ".." in pure.parts or ":" in path or path.startswith("/"):
        raise DamagedIndexError(f"{what}: unsafe path {path!r} (absolute or leaving the library); refusing it")
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
    partial_labels: bool = False
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

    @property
    def kind(self) -> str:
        """'one region', 'many instances', or 'many instances, partial labels' (only some objects labelled)."""
        if not self.instances:
            return "one region"
        return "many instances, partial labels" if self.partial_labels else "many instances"

    def match_texts(self) -> list[str]:
        """Texts a prompt is compared with: the name, 'name: description', and each listed synonym."""
        return list(dict.fromkeys([self.name, self.text, *self.synonyms]))

    def image(self) -> np.ndarray:
        path = self._file(self.image_path)
        image = _read_tiff(path, f"{self._what} image")
        if image.shape[:2] != self.shape[:2]:
            raise PromptsegError(self._damaged(f"image: {path} is {_size(image.shape)}", "its recorded size"))
        return image

    def mask(self) -> np.ndarray:
        """Binary (H, W) bool mask."""
        return self._mask_png() > 0

    def labels(self) -> np.ndarray:
        """(H, W) int32 objects: the instance ids saved with a many-instances entry (touching objects stay apart),
        else the mask's connected components (entries saved before ids were kept, binary masks)."""
        raw = self._mask_png()
        if self.instances and raw.dtype.kind in "iu" and raw.dtype.itemsize > 1:  # ids (uint16; int32 on old Pillow)
            return raw.astype(np.int32)
        return label_objects(raw > 0).astype(np.int32)

    def _mask_png(self) -> np.ndarray:
        """The mask file's pixels, refused when they cannot be this entry's (replaced or emptied by hand): one-shot
        said 'reference mask: mask shape ... does not match' as if the target image were at fault."""
        path = self._file(self.mask_path)
        mask = _read_png(path, f"{self._what} mask")
        if mask.shape != self.shape[:2]:
            raise PromptsegError(self._damaged(f"mask: {path} is {_size(mask.shape)}", "the entry's image"))
        if not mask.any():
            raise PromptsegError(self._damaged(f"mask: {path} marks no pixel (all 0)"))
        return mask

    def missing_files(self) -> list[str]:
        """The entry's files (relative paths) that are not in its library folder: a folder copied without its
        entries/, or an entry's folder deleted by hand (only looked for, not read)."""
        return [rel for rel in (self.image_path, self.mask_path) if not self._file(rel).is_file()]

    @property
    def _what(self) -> str:
        return f"library entry '{self.name}' ({self.id})"

    def _damaged(self, problem: str, size_of: str | None = None) -> str:
        """What is wrong with one of the entry's files, and what to do (``size_of``: what its size differs from)."""
        against = "" if size_of is None else f", {size_of} {_size(self.shape)}"
        return (
            f"{self._what} {problem}{against}; the library is damaged: remove the entry (CLI: promptseg library "
            f"remove {self.id}) and add the exemplar again"
        )

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
            "partial_labels": self.partial_labels,
        }

    @classmethod
    def from_json(cls, record: object, root: Path | None, where: str) -> LibraryEntry:
        if not isinstance(record, dict):
            raise DamagedIndexError(f"{where}: an entry is not a JSON object: {record!r:.80}")
        missing = [k for k in _REQUIRED if k not in record]
        if missing:
            raise DamagedIndexError(f"{where}: entry {record.get('id', '?')!r} lacks {', '.join(missing)}")
        entry_id = record["id"]
        if not isinstance(entry_id, str) or not _ID_RE.match(entry_id):
            raise DamagedIndexError(f"{where}: invalid entry id {entry_id!r} (expected lowercase letters, digits, '-')")
        if not isinstance(record["name"], str) or not record["name"].strip():
            raise DamagedIndexError(f"{where}: entry {entry_id!r} has no name")
        try:
            shape = tuple(int(s) for s in record["shape"])
            np.dtype(record["dtype"])
            channel_axis = record.get("channel_axis")
            channel_axis = None if channel_axis is None else int(channel_axis)
        except (TypeError, ValueError) as exc:
            raise DamagedIndexError(f"{where}: entry {entry_id!r} has an invalid shape/dtype ({exc})") from exc
        optional: dict[str, Any] = {}
        for key, length, kind in (("source_shape", None, int), ("crop", 4, int), ("pixel_size", 2, float)):
            value = record.get(key)
            try:
                optional[key] = None if value is None else tuple(kind(v) for v in value)
            except (TypeError, ValueError) as exc:
                raise DamagedIndexError(
                    f"{where}: entry {entry_id!r} has an invalid {key} {value!r:.40} ({exc})"
                ) from exc
            if length is not None and value is not None and len(optional[key]) != length:
                raise DamagedIndexError(
                    f"{where}: entry {entry_id!r}: {key} should hold {length} numbers, got {value!r:.40}"
                )
        # a flag typed by hand as "false" (a string) read as true: a one-region exemplar answered as many instances
        flags = {}
        for key in ("rgb", "instances", "partial_labels"):
            value = record.get(key)
            if value is not None and not isinstance(value, bool):
                raise DamagedIndexError(
                    f"{where}: entry {entry_id!r}: {key} must be true or false (JSON, unquoted), got {value!r:.40}"
                )
            flags[key] = bool(value)
        try:
            mask_pixels = int(record.get("mask_pixels") or 0)
        except (TypeError, ValueError) as exc:
            raise DamagedIndexError(f"{where}: entry {entry_id!r} has an invalid mask_pixels ({exc})") from exc
        return cls(
            id=entry_id,
            name=record["name"],
            image_path=_safe_relative(record["image"], f"{where}: entry {entry_id!r} image"),
            mask_path=_safe_relative(record["mask"], f"{where}: entry {entry_id!r} mask"),
            shape=shape,
            dtype=str(record["dtype"]),
            description=str(record.get("description") or ""),
            created=str(record.get("created") or ""),
            **flags,
            channel_axis=channel_axis,
            source=str(record.get("source") or ""),
            source_shape=optional["source_shape"],
            crop=optional["crop"],
            pixel_size=optional["pixel_size"],
            mask_pixels=mask_pixels,
            sha256=str(record.get("sha256") or ""),
            created_with=str(record.get("created_with") or ""),
            root=root,
        )


def _size(shape: tuple[int, ...]) -> str:
    """'384 x 303 px' (columns x rows), as `promptseg library list` gives an entry's size."""
    return f"{shape[1]} x {shape[0]} px"


def _read_tiff(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise PromptsegError(f"{what}: file {path} is missing; the library is damaged (remove the entry)")
    try:
        return tifffile.imread(path)
    except Exception as exc:  # tifffile and its codecs raise several types on damaged data
        raise PromptsegError(
            f"{what}: {path} is not a readable TIFF ({type(exc).__name__}: {exc}); the library is damaged (remove "
            "the entry)"
        ) from exc


def _read_png(source: Path | bytes, what: str) -> np.ndarray:
    import imageio.v3 as iio

    if isinstance(source, Path) and not source.is_file():
        raise PromptsegError(f"{what}: file {source} is missing; the library is damaged (remove the entry)")
    try:
        arr = np.asarray(iio.imread(source, extension=".png"))
    except Exception as exc:  # imageio raises per-plugin exception types
        reason = " ".join(str(exc).split())
        if isinstance(source, Path):  # a library's file, else a zip's member (the zip is named in ``what``)
            raise PromptsegError(
                f"{what}: {source} is not a readable PNG ({reason}); the library is damaged (remove the entry)"
            ) from exc
        raise PromptsegError(f"{what}: not a readable PNG ({reason})") from exc
    return arr[..., 0] if arr.ndim == 3 else arr


def _png_bytes(mask: np.ndarray) -> bytes:
    """A bool mask as 8-bit PNG (255 = the object), instance ids as 16-bit PNG."""
    import imageio.v3 as iio

    data = mask.astype(np.uint8) * 255 if mask.dtype == bool else mask.astype(np.uint16)
    return iio.imwrite("<bytes>", data, extension=".png")


def instance_ids(labels: np.ndarray) -> np.ndarray:
    """(H, W) uint16 ids 1..N of the objects of ``labels`` (ids kept apart, renumbered in order; a binary mask's
    connected components), as a many-instances entry stores them."""
    labels = label_objects(labels)  # a mask's components, or the ids (negative values: background)
    if labels.dtype.kind in "iu" and labels.size and int(labels.max()) <= 4 * labels.size + 2**16:
        # a table of the ids present, in one pass: np.unique's sort of every pixel took 20 s and GBs of a large
        # exemplar's save (7920 x 7700 px); the same numbers (the entry's hash and id follow them)
        present = np.zeros(int(labels.max()) + 1, bool)
        present[labels.ravel()] = True
        present[0] = False  # background stays 0
        number = np.cumsum(present)  # id -> its rank among the ids present, from 1
        n = int(number[-1])
    else:  # float ids, or ids far beyond the pixel count: sorted
        ids, inverse = np.unique(labels, return_inverse=True)
        n = len(ids) - int(ids[0] == 0)
        number = None
    if n >= 2**16:
        raise PromptsegError(f"{n} objects: a library entry keeps at most {2**16 - 1}; save a crop of the image")
    if number is not None:
        return number.astype(np.uint16)[labels]
    renumbered = inverse.reshape(labels.shape) + int(ids[0] != 0)  # background (0) stays 0
    return renumbered.astype(np.uint16)


def _tiff_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, image, compression="zlib", photometric="rgb" if _is_rgb(image) else "minisblack")
    return buffer.getvalue()


def _is_rgb(image: np.ndarray) -> bool:
    return image.ndim == 3 and image.shape[-1] == 3


def _atomic_write(path: Path, data: bytes) -> None:
    with replacing(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _parse_index(data: object, where: str) -> list[object]:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DamagedIndexError(f'{where}: not a napari-promptseg reference library (expected "format": "{FORMAT}")')
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise DamagedIndexError(f"{where}: invalid library format version {version!r}")
    if version > VERSION:
        raise PromptsegError(
            f"{where}: library format version {version} was written by a newer napari-promptseg; this version "
            f"({__version__}) reads version {VERSION}. Upgrade napari-promptseg to use it."
        )
    entries = data.get("entries")
    if not isinstance(entries, list):
        raise DamagedIndexError(f'{where}: "entries" must be a list')
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
