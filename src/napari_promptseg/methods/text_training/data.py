"""Image-mask-text triplets: the CSV, its checks, and the frozen features cached once on disk.

CSV: one row per triplet, columns ``image``, ``mask``, ``text`` and optionally ``split`` (train / val / test; test
rows are never trained on), other names mapped by the caller; paths relative to the CSV's folder. Every problem is
reported with the CSV row (the line number a spreadsheet shows, header = line 1).

Feature cache: the image encoder runs once per image; its embedding and first-stage features are stored as
float16 safetensors under ``cache_dir/<content hash of the pixels, encoder and normalisation>.safetensors``, so a
second training run (another loss, more epochs, a resume) starts without encoding. The cache is a plain folder:
delete it to free the space.
"""

from __future__ import annotations

import csv
import hashlib
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...callbacks import ProgressCallback
from ...errors import CancelledError, PromptsegError
from ...io import read_image
from ...io.images import (
    MaskSource,
    array_digest,
    check_label_values,
    label_plane,
    mask_file_source,
    mask_foreground,
    mask_values,
)
from ...io.multiscale import named_channels_last, read_channel_axis
from ...models.cache import content_key
from ...models.preprocessing import Normalization, ResizeTransform, as_channels_last, full_resolution
from ...models.text_segmenter import FEATURE_VERSION, encode_levels, load_tensors, save_tensors

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Triplet:
    image: Path
    mask: Path
    text: str
    split: str  # "train" | "val" | "test" | "" (not given)
    row: int  # line of the CSV (header = 1); 0 for triplets built in memory
    source: str = ""  # the CSV, for messages
    #: the image file's axis of channels, in the file's order (CLI --channel-axis); None: gray or colour
    channel_axis: int | None = None
    channels: tuple[int, ...] | None = None  # up to three of them fed to the model (--channels); None: all

    def where(self) -> str:
        return f"{self.source}: row {self.row}" if self.row else str(self.image)

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, C) image and (H, W) bool mask; a size mismatch names the row."""
        try:
            raw = read_image(self.image)
            if self.channel_axis is None:
                # a Fiji composite (C, Y, X): its named channel axis, as `promptseg text` reads it
                pixels = named_channels_last(self.image, raw)  # read_image_named's reading, the move known
                _refuse_stack(np.shape(pixels), self.image, channels_named=pixels is not raw)
                axis = None
            else:  # given in the file's order, as every command takes it (a pyramid is read channels last)
                pixels, axis = raw, read_channel_axis(self.image, self.channel_axis)
            image = as_channels_last(pixels, channel_axis=axis, channels=self.channels, name=str(self.image))
            mask = read_image(self.mask, role="labels")
        except PromptsegError as exc:  # the row, not only the file: the CSV is what the user edits
            raise PromptsegError(f"{self.where()}: {exc}") from exc
        return image, _binary_mask(mask, image.shape[:2], self.where(), self.mask.name, mask_file_source(self.mask))


def files_left_out(triplets: Sequence[object]) -> list[str]:
    """What the triplets' TIFFs of several images leave out (:func:`~...io.multiscale.other_images_left_out`: only
    the first image of each is trained on), each file said once, at its first row."""
    from ...io.multiscale import other_images_left_out

    said: dict[Path, str] = {}
    for triplet in triplets:
        for path in (getattr(triplet, "image", None), getattr(triplet, "mask", None)):
            if isinstance(path, (str, Path)) and Path(path) not in said:
                path = Path(path)
                left_out = other_images_left_out(path)
                said[path] = left_out and f"{triplet.where()}: {left_out}"
    return [warning for warning in said.values() if warning]


def _refuse_stack(shape: tuple[int, ...], path: Path, channels_named: bool = False) -> None:
    """A file of planes, not one 2D image: said in train-text's words. as_channels_last's refusal advised the
    console's channel_axis and segment_stack, which a CSV row cannot take. ``channels_named``: the file's metadata
    named the channel axis moved last (a Fiji composite), so (Y, X, C) holds channels, not planes."""
    if len(shape) == 3 and (shape[-1] in (1, 2, 3, 4) or shape[0] == 1):  # colour, channels last, one plane
        return
    if len(shape) == 3 and channels_named:
        raise PromptsegError(
            f"{path} has {shape[-1]} channels (shape {shape}, channels last); a triplet CSV takes gray or colour "
            "images of up to 4 channels: save the channels to train on (up to 3) as a colour image"
        )
    if len(shape) >= 3:
        channels = " or, if its first axis holds channels, give --channel-axis 0 (Python: channel_axis=0);"
        raise PromptsegError(
            f"{path} is a stack of {shape[0]} planes (shape {shape}); a triplet CSV takes 2D images:"
            f"{channels if len(shape) == 3 else ''} one row per plane, each saved as an image with its mask (napari's "
            "Train text model widget trains on every plane of a stack layer)"
        )


@dataclass(frozen=True)
class ArrayTriplet:
    """A triplet from arrays in memory (napari layers): image, mask (non-zero = target) and text. ``stack`` and
    ``plane``: the stack layer and plane it was taken from ("" and -1 for a 2D image), so that a random split holds
    out runs of neighbouring planes rather than near-copies of training planes."""

    image: np.ndarray
    mask: np.ndarray
    text: str
    split: str = ""
    name: str = "layer"
    stack: str = ""
    plane: int = -1
    channel_axis: int | None = None  # the image array's axis of channels; None: gray or colour (channels last)
    channels: tuple[int, ...] | None = None  # up to three of them fed to the model; None: all
    #: where the mask's values come from (io.label_ids.MaskSource): "exact" for a napari Labels layer's ids (never
    #: cut); "unknown" for an array given in a script, told by its values (a blurred JPEG mask's are cut at 127)
    mask_source: MaskSource = "unknown"

    def where(self) -> str:
        return self.name

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.text.strip():
            raise PromptsegError(f"{self.name}: empty text; say what the mask shows (e.g. 'polyp')")
        image = as_channels_last(self.image, channel_axis=self.channel_axis, channels=self.channels, name=self.name)
        mask = np.asarray(full_resolution(self.mask))  # a multiscale labels layer: numpy reads its coarsest level
        return image, _binary_mask(mask, image.shape[:2], self.name, "mask", self.mask_source)


def as_triplets(items: Sequence[object]) -> list[Triplet | ArrayTriplet]:
    """Triplets as a script gives them: :class:`Triplet` and :class:`ArrayTriplet` as they are, and an ``(image,
    mask, text[, split])`` tuple as an :class:`ArrayTriplet` of its arrays (napari Image and Labels layers, or their
    data) or a :class:`Triplet` of its file paths. Why: a plain tuple failed halfway, "'tuple' object has no
    attribute 'split'"."""
    triplets: list[Triplet | ArrayTriplet] = []
    for i, item in enumerate(items):
        if isinstance(item, (Triplet, ArrayTriplet)):
            triplets.append(item)
            continue
        if not (isinstance(item, (tuple, list)) and len(item) in (3, 4) and isinstance(item[2], str)):
            raise PromptsegError(
                f"training data item {i + 1}: expected an (image, mask, text) tuple, a Triplet or an ArrayTriplet; "
                f"got {type(item).__name__}" + (f" of {len(item)}" if isinstance(item, (tuple, list)) else "")
            )
        image, mask, text = item[:3]
        split = str(item[3]) if len(item) == 4 else ""
        if isinstance(image, (str, Path)) and isinstance(mask, (str, Path)):
            triplets.append(Triplet(Path(image), Path(mask), text, split, 0))
        else:
            from ...io.layer_objects import is_layer, layer_pixels

            name = f"training data item {i + 1}" + (f" ('{image.name}')" if is_layer(image) else "")
            image = layer_pixels(image, f"training data item {i + 1} image")
            mask = layer_pixels(mask, f"training data item {i + 1} mask")
            triplets.append(ArrayTriplet(image, mask, text, split, name=name))
    return triplets


def training_triplets(
    data: str | Path | Sequence[object],
    columns: dict[str, str] | None = None,
    *,
    channel_axis: int | None = None,
    channels: Sequence[int] | None = None,
) -> list[Triplet | ArrayTriplet]:
    """The triplets of training ``data``: a triplet CSV (``columns``: :func:`read_triplets`' column names) or items
    (:func:`as_triplets`). ``channel_axis`` and ``channels`` (the CLI's --channel-axis and --channels): how every
    image given without its own is read, a file's axis in the file's order. Why: a (C, Y, X) image was a stack of C
    planes to train-text, with no way to say its first axis holds channels. Every trainer reads its data here."""
    if not isinstance(data, (str, Path, Sequence)):  # a number: "'int' object is not iterable"
        raise PromptsegError(
            f"training data: {data!r} is neither a triplet CSV nor a list of (image, mask, text) items"
        )
    triplets = read_triplets(data, **(columns or {})) if isinstance(data, (str, Path)) else as_triplets(data)
    if channel_axis is None and channels is None:
        return triplets
    picked = tuple(channels) if channels is not None else None
    return [
        t
        if t.channel_axis is not None or t.channels is not None
        else replace(t, channel_axis=channel_axis, channels=picked)
        for t in triplets
    ]


def training_channels(triplets: Sequence[Triplet | ArrayTriplet]) -> dict | None:
    """How a run's images were read when every one was given a channel axis (a multichannel run): the axis, the
    channels picked and the channel count, recorded in the model so that inference reads its images alike
    (:mod:`...text.trained_channels`); None for gray or colour images, or triplets read in several ways."""
    readings = {(t.channel_axis, t.channels) for t in triplets}
    if len(readings) != 1:
        return None
    [(axis, picked)] = readings
    if axis is None:
        return None
    first = triplets[0]
    try:
        if isinstance(first, ArrayTriplet):
            count = int(np.shape(full_resolution(first.image))[axis])
        else:
            count = int(np.shape(read_image(first.image))[read_channel_axis(first.image, axis)])
    except (PromptsegError, IndexError, TypeError):  # its reading is refused with the row where it is loaded
        return None
    return {"channel_axis": int(axis), "channels": None if picked is None else list(picked), "count": count}


def read_triplets(
    csv_path: str | Path,
    *,
    image_col: str = "image",
    mask_col: str = "mask",
    text_col: str = "text",
    split_col: str | None = None,
) -> list[Triplet]:
    """Rows of a triplet CSV, checked: columns present, no empty cell, files exist, split values known. Cells are
    separated by commas, or by semicolons or tabs when the header has no comma (a spreadsheet saved in a locale
    with decimal commas), as landmark CSVs are read. ``split_col``: None reads a ``split`` column when there is one
    (and refuses a CSV whose split sits in a column of another name: its test rows would be trained on); a name
    must be a column; "" reads no split."""
    path = Path(csv_path).expanduser()  # '~/rows.csv' typed in the widget, as its output and cache fields
    if path.is_dir():  # a dataset's folder (images/, masks/): its pairs and texts are what the CSV says
        raise PromptsegError(
            f"{path} is a folder, not a CSV; training reads a CSV of one row per triplet with columns {image_col}, "
            f"{mask_col}, {text_col} (and optionally {split_col or 'split'}), paths relative to the CSV, e.g. a row "
            "'images/0001.png,masks/0001.png,polyp'"
        )
    if not path.is_file():
        raise PromptsegError(f"{path}: no such CSV file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            text = fh.read()
        first = next((line for line in text.splitlines() if line.strip()), "")
        delimiter = next((d for d in (";", "\t") if d in first and "," not in first), ",")
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
        # "image, mask, text" typed by hand: names stripped as the cells are (" mask" was no column 'mask')
        reader.fieldnames = columns = [name.strip() for name in reader.fieldnames or []]
        rows = list(reader)
    except UnicodeDecodeError as exc:
        raise PromptsegError(f"{path}: not UTF-8 text ({exc}); save it as UTF-8 (a spreadsheet's 'CSV UTF-8')") from exc
    except (OSError, csv.Error) as exc:
        raise PromptsegError(f"{path}: cannot be read as a CSV file ({exc})") from exc
    if columns and columns[0].lstrip().startswith(("{", "[")):  # a JSON file: its "columns" were "{" or "["
        raise PromptsegError(
            f"{path}: a JSON file, not a CSV; give a CSV of one row per triplet with columns {image_col}, "
            f"{mask_col}, {text_col} (and optionally {split_col or 'split'}): image and mask paths relative to the "
            "CSV"
        )
    missing = [c for c in (image_col, mask_col, text_col) if c not in columns]
    if missing:
        raise PromptsegError(
            f"{path}: no column {', '.join(map(repr, missing))}; the columns are {', '.join(columns) or 'none'} "
            "(map other names with --image-col/--mask-col/--text-col; widget: CSV columns)"
        )
    split_col = _split_column(path, columns, rows, split_col)
    has_split = bool(split_col)
    triplets, problems = [], []
    for line, row in enumerate(rows, start=2):
        cells = {
            k: (row.get(c) or "").strip() for k, c in (("image", image_col), ("mask", mask_col), ("text", text_col))
        }
        empty = [k for k, v in cells.items() if not v]
        if empty:
            problems.append(f"row {line}: empty {' and '.join(empty)}")
            continue
        split = (row.get(split_col) or "").strip().lower() if has_split else ""
        if split and split not in SPLITS:
            problems.append(f"row {line}: split {split!r} is not one of {', '.join(SPLITS)}")
            continue
        # relative to the CSV; '~/...' from the home folder (no shell expands a CSV's cells)
        image, mask = (path.parent / Path(cells[k]).expanduser() for k in ("image", "mask"))
        # a folder is there: an OME-Zarr image, or refused for what it is when read (check_rows)
        absent = [f"{k} file {p}" for k, p in (("image", image), ("mask", mask)) if not p.exists()]
        if absent:
            problems.append(f"row {line}: no {' and no '.join(absent)}")
            continue
        if image.resolve() == mask.resolve():  # a path copied into both columns: every non-black pixel a target
            problems.append(f"row {line}: the mask is the image file itself ({cells['mask']})")
            continue
        triplets.append(Triplet(image, mask, cells["text"], split, line, str(path)))
    if problems:
        more = f" (and {len(problems) - 3} more rows)" if len(problems) > 3 else ""
        raise PromptsegError(f"{path}: {'; '.join(problems[:3])}{more}")
    if not triplets:
        raise PromptsegError(f"{path}: no rows")
    return triplets


def _split_column(path: Path, columns: Sequence[str], rows: Sequence[dict], split_col: str | None) -> str:
    """The column of the split ("" for none). A named one must exist (a typo trained on every row, test rows too);
    without a name, "split", else none, unless another column holds only split values with test or val among them
    (medvlsm's ``medvlsm_split``): that CSV's test rows were trained on without a word."""
    if split_col:
        if split_col not in columns:
            raise PromptsegError(
                f"{path}: no split column {split_col!r}; the columns are {', '.join(columns)} (--split-col '', widget: "
                "split column 'none', trains on every row)"
            )
        return split_col
    if split_col == "" or "split" in columns:
        return split_col if split_col == "" else "split"
    for column in columns:
        values = {(row.get(column) or "").strip().lower() for row in rows} - {""}
        if values and values <= set(SPLITS) and values & {"val", "test"}:
            raise PromptsegError(
                f"{path}: column {column!r} holds {', '.join(sorted(values))} rows, but the split is read from a "
                f"column 'split': give --split-col {column} (widget: split column {column}) to use it (test rows are "
                "then never trained on), or --split-col '' (widget: 'none') to train on every row (or name the column "
                "'split')"
            )
    return ""


def split_triplets(
    triplets: Sequence[Triplet], *, val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[Triplet], list[Triplet]]:
    """(train, val): the CSV's split when it has train and val rows (test rows left out), else a seeded random
    ``val_fraction`` of the non-test images (at least one) is held out for validation, with all of their rows: an
    image named in several rows (other texts, or a duplicate row) on both sides would be validated on what it was
    trained on. The planes of a stack layer are chosen in blocks of neighbouring planes, each block about
    ``val_fraction`` of the stack's labelled planes (see ``_split_units``): validation planes then touch
    training planes only at a block's edges, and at least one image or block is kept for training. ``val_fraction``
    0 holds out nothing (val is empty: the trainers then run every epoch and keep the last). Val rows beside rows
    without a split, or without train rows, are refused (a random split would train on them)."""
    usable = [t for t in triplets if t.split != "test"]
    train = [t for t in usable if t.split == "train"]
    val = [t for t in usable if t.split == "val"]
    blank = [t for t in usable if not t.split]
    if val and (blank or not train):
        # a random split would train on rows the user held out for validation
        rows = ", ".join(t.where() for t in blank[:3]) + (f" (and {len(blank) - 3} more)" if len(blank) > 3 else "")
        raise PromptsegError(
            f"the split column marks {len(val)} row(s) val but "
            + (f"leaves {len(blank)} empty: {rows}" if blank else "none train")
            + "; give every row train, val or test, or leave the column empty everywhere for a random split"
        )
    if train and val:
        # an image on both sides (a copied row marked val, or a second text of it): validated on what it trained on
        trained = {content_identity(t.image): t for t in train}
        both = [(trained[key], t) for t in val if (key := content_identity(t.image)) in trained]
        if both:
            first, second = both[0]
            what = first.image.name if isinstance(first.image, Path) else first.where()
            more = f"; and {len(both) - 1} more val row(s)" if len(both) > 1 else ""
            raise PromptsegError(
                f"{what} is in train and val rows ({first.where()}, {second.where()}{more}): validation would "
                "judge the model on an image it trained on; give all the rows of an image one split"
            )
        return train, val
    keys = [content_identity(t.image) for t in usable]  # a layer or plane paired with several texts: one image
    group = {key: g for g, key in enumerate(dict.fromkeys(keys))}  # the images, in the order of their first rows
    if val_fraction <= 0 and group:
        return list(usable), []  # no validation asked for
    if len(group) < 2:
        raise PromptsegError(
            f"{len(usable)} training row(s) of {len(group)} image(s): need at least 2 images (one to train on, one to "
            "validate on)"
            + (
                ", or a validation fraction of 0 to train without validation (CLI --val-fraction 0; widget: validation "
                "share 0)"
                if group
                else ""
            )
        )
    unit = _split_units(usable, keys, val_fraction)
    n_units = max(unit.values()) + 1
    order = np.random.default_rng(seed).permutation(n_units)
    n_val = min(n_units - 1, max(1, int(round(val_fraction * n_units))))
    held = set(order[:n_val].tolist())
    held_rows = [t for t, key in zip(usable, keys, strict=True) if unit[key] in held]
    return [t for t, key in zip(usable, keys, strict=True) if unit[key] not in held], held_rows


def _split_units(usable: Sequence[Triplet | ArrayTriplet], keys: Sequence[str], val_fraction: float) -> dict[str, int]:
    """Image key -> the unit a random split holds out or keeps whole, numbered in the order of first rows. An image
    is a unit of its own; the planes of a stack (ArrayTriplet.stack) are cut, in plane order, into blocks of
    round(val_fraction * planes) neighbouring planes (at least 1, at most all but one): neighbouring planes are
    near-copies, and planes held out one by one were validated between their training neighbours. Without stacks
    the units are the images, and the split is as it was."""
    first: dict[str, Triplet | ArrayTriplet] = {}  # each image's first row, in row order
    for t, key in zip(usable, keys, strict=True):
        first.setdefault(key, t)
    planes: dict[str, list[int]] = {}
    for t in first.values():
        if getattr(t, "stack", ""):
            planes.setdefault(t.stack, []).append(t.plane)
    block_of: dict[tuple[str, int], int] = {}
    for stack, numbers in planes.items():
        numbers = sorted(set(numbers))
        size = min(max(1, len(numbers) - 1), max(1, int(round(val_fraction * len(numbers)))))
        block_of.update({(stack, p): rank // size for rank, p in enumerate(numbers)})
    unit: dict[str, int] = {}
    named: dict[object, int] = {}
    for key, t in first.items():
        name = (t.stack, block_of[t.stack, t.plane]) if getattr(t, "stack", "") else key
        unit[key] = named.setdefault(name, len(named))
    return unit


def refuse_fraction_beside_split(triplets: Sequence[Triplet | ArrayTriplet], val_fraction: float | None) -> None:
    """Refuse a validation fraction given (None: not given) for data whose split column marks val rows: that split
    wins, so the fraction was ignored without a word (`--val-fraction 0`, "train on every image", validated on the
    val rows). One check for the fusion decoder and CLIPSeg's fine-tune."""
    marked = sum(t.split == "val" for t in triplets)
    if val_fraction is not None and marked:
        raise PromptsegError(
            f"a validation fraction ({val_fraction}) was given, but the split column marks {marked} row(s) val, and "
            "they validate (the fraction splits data without a split): leave the fraction out, or the split column "
            "(CLI --split-col '', widget: split column 'none')"
        )


def split_fingerprint(train: Sequence[Triplet | ArrayTriplet], val: Sequence[Triplet | ArrayTriplet]) -> str:
    """A digest of what a run trains and validates on: each row's image and mask (files by path, arrays by content)
    and text, in order. A resume must see the same."""
    digest = hashlib.sha256()
    for part, rows in (("train", train), ("val", val)):
        digest.update(part.encode())
        for t in rows:
            for item in (t.image, t.mask):
                digest.update(content_identity(item).encode())
            digest.update(t.text.encode())
            if t.channel_axis is not None or t.channels is not None:  # the same file read otherwise (older runs: none)
                digest.update(f"channels {t.channel_axis} {t.channels}".encode())
    return digest.hexdigest()


def content_identity(item: Path | np.ndarray) -> str:
    """A file by its path, an array (a layer or one plane of it) by its content."""
    return str(item.resolve()) if isinstance(item, Path) else array_digest(np.asarray(item))


def _binary_mask(mask: np.ndarray, shape: tuple[int, ...], where: str, what: str, source: MaskSource) -> np.ndarray:
    mask = label_plane(np.asarray(mask))  # (1, Y, X) saved from numpy: its plane
    check_label_values(mask, f"{where}: {what}")  # complex values were trained on, NaN read as background
    if mask.ndim == 3 and mask.shape[:2] == tuple(shape):
        # a colour mask: the target in any colour channel, none where it is transparent (as read_mask reads one)
        mask = mask_values(mask) if mask.shape[-1] in (2, 3, 4) else mask.max(axis=-1)
    if mask.shape != tuple(shape):
        raise PromptsegError(
            f"{where}: {what} is {'x'.join(map(str, mask.shape))} but the image is {shape[0]}x{shape[1]}"
        )
    # a lossy file's 8-bit mask (JPEG: blurred edges) cut at half range; exact values (PNG, TIFF, a Labels layer):
    # any id; an array of unknown origin told by its values (io.label_ids.mask_foreground, as every reader)
    return mask_foreground(mask, source=source)


def mask_to_input(mask: np.ndarray, transform: ResizeTransform) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, s) float target (area-averaged where shrunk) and (s, s) valid-region mask in the padded model frame."""
    nh, nw = transform.resized_shape
    s = transform.input_size
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    shrink = nh < mask.shape[0]
    m = F.interpolate(m, size=(nh, nw), mode="area" if shrink else "bilinear", align_corners=None if shrink else False)
    target = torch.zeros(s, s)
    target[:nh, :nw] = m[0, 0].clamp(0, 1)
    valid = torch.zeros(s, s, dtype=torch.bool)
    valid[:nh, :nw] = True
    return target, valid


@dataclass
class Sample:
    """One triplet ready for the decoder (features kept float16 in memory: ~3 MB per image)."""

    features: torch.Tensor  # (C, g, g) float16
    low: torch.Tensor | None  # (C_low, g, g) float16
    target: torch.Tensor  # (s, s) float16 in [0, 1]
    valid: torch.Tensor  # (s, s) bool
    text: str
    triplet: Triplet | ArrayTriplet


class FeatureStore:
    """Frozen image features per image content, computed once and kept on disk (see the module docstring)."""

    def __init__(self, directory: str | Path, segmenter, *, normalize: Normalization = "auto", low: bool = True):
        self.directory = Path(directory)
        self.segmenter = segmenter
        self.normalize = normalize
        self.low = low
        self.hits = 0
        self.misses = 0

    def _levels(self, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None, ResizeTransform]:
        key = content_key(image, self.segmenter.feature_name, self.normalize, FEATURE_VERSION)
        path = self.directory / f"{key}.safetensors"
        transform = ResizeTransform(image.shape[:2], self.segmenter.input_size)
        if path.is_file():
            try:
                tensors = load_tensors(path, "feature cache")
                if "low" in tensors or not self.low:
                    self.hits += 1
                    return tensors["features"], tensors.get("low") if self.low else None, transform
            except Exception:  # noqa: BLE001 - a damaged cache file is recomputed, never fatal
                pass
        self.misses += 1
        levels = encode_levels(self.segmenter, image, self.normalize, low=self.low)
        tensors = {"features": levels.features[0].half()}
        if levels.low is not None:
            tensors["low"] = levels.low[0].half()
        self.directory.mkdir(parents=True, exist_ok=True)
        save_tensors(path, tensors, {"encoder": self.segmenter.name, "version": FEATURE_VERSION})
        return tensors["features"], tensors.get("low"), transform

    def samples(
        self,
        triplets: Sequence[Triplet | ArrayTriplet],
        *,
        progress: ProgressCallback | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> list[Sample]:
        """Every triplet's sample; images are encoded (and cached) where the cache has no entry yet."""
        out, t0 = [], time.perf_counter()
        for k, t in enumerate(triplets):
            if cancel is not None and cancel():
                raise CancelledError("cancelled")
            image, mask = t.load()
            features, low, transform = self._levels(image)
            target, valid = mask_to_input(mask, transform)
            out.append(Sample(features, low, target.half(), valid, t.text, t))
            if progress is not None:
                done = k + 1
                eta = (time.perf_counter() - t0) / done * (len(triplets) - done)
                progress(done / len(triplets), f"image features {done}/{len(triplets)}, ETA {format_eta(eta)}")
        return out


def format_eta(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
