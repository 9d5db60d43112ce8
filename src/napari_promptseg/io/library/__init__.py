"""Reference library: named one-shot exemplars (image crop + mask + name + description) saved on disk.

A typed prompt ("glands") is later matched to the entry names/descriptions (:mod:`...methods.library`) and answered
by SAT with the matching exemplars. No pickle: plain JSON, TIFF and PNG, readable by any tool.

On-disk format, version 1 (a directory)::

    library.json                  {"format": "napari-promptseg-library", "version": 1, "entries": [ENTRY, ...]}
    entries/<id>/image.tif        the exemplar crop in its original dtype (2D, RGB (H, W, 3), or (H, W, C<=3))
    entries/<id>/mask.png         uint8, 255 = the object, 0 = background; same rows/columns as the image
                                  (an "instances" entry: uint16 object ids 1..N, so touching objects stay apart;
                                  readers that take mask > 0 still get its mask)

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
      "partial_labels": false,           true (instances entries only): the mask labels only SOME of the objects of
                                         its image; background is learned only near them, not from every unlabelled
                                         pixel; optional, false when absent
      "mask_pixels": 1234, "sha256": "...",  content hash of image + mask (+ partial_labels when true; identical
                                         re-imports are skipped)
      "created_with": "napari-promptseg 0.1.0"
    }

Text embeddings are not stored: they are recomputed at match time (milliseconds for a few hundred entries).
``library.json`` is always written atomically (temporary file + ``os.replace``) and re-read before every change,
so a crash never leaves a half-written index; a change holds the lock file ``.library.lock`` from that read to the
write, so two writers (widget + CLI, parallel scripts) never drop each other's entries; a read takes no lock, and a
folder that cannot be written (a shared library mounted read-only) is read as it is, a change of it refused naming it
(:class:`LibraryNotWritableError`). A damaged index (not JSON,
or not this structure) is reported with its path and never written over: every command refuses until it is
repaired or moved aside. The default location is ``$PROMPTSEG_LIBRARY``, else the platform's user data directory
(``platformdirs.user_data_dir("napari-promptseg")/library``).
"""

from ._format import (
    DEFAULT_MARGIN,
    DEFAULT_MIN_CROP,
    FORMAT,
    INDEX,
    LIBRARY_ENV,
    MAX_FILE_BYTES,
    VERSION,
    LibraryEntry,
    LibraryNotWritableError,
    bounding_crop,
    default_library_path,
    instance_ids,
)
from ._store import ImportResult, ReferenceLibrary, joined_said

__all__ = [
    "DEFAULT_MARGIN",
    "DEFAULT_MIN_CROP",
    "FORMAT",
    "INDEX",
    "LIBRARY_ENV",
    "MAX_FILE_BYTES",
    "VERSION",
    "ImportResult",
    "LibraryEntry",
    "LibraryNotWritableError",
    "ReferenceLibrary",
    "bounding_crop",
    "default_library_path",
    "instance_ids",
    "joined_said",
]
