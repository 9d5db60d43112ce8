"""`promptseg library ...`: the reference library (add/list/starter/remove/export/import)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from ..errors import PromptsegError
from ._inputs import _say_images_left_out
from ._options import CHANNEL_AXIS_HELP
from ._reference import _reference_labels, stack_reference_plane
from ._types import positive_float


def _add_library_parser(sub: argparse._SubParsersAction) -> None:
    lib = sub.add_parser(
        "library",
        help="manage the reference library: named exemplars that answer text prompts offline",
        description="Named one-shot exemplars (image crop + mask + description). `promptseg text --route library` "
        "matches a prompt to their names/descriptions and segments like the exemplar: one region with SAT, or every "
        "similar object when it was saved with --instances. Default location: $PROMPTSEG_LIBRARY, "
        "else the user data directory.",
    )
    lib_sub = lib.add_subparsers(dest="library_command", required=True)
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--library", type=Path, help="library directory (default: $PROMPTSEG_LIBRARY or the user one)")

    add = lib_sub.add_parser("add", parents=[where], help="save an exemplar: an image and the mask of one structure")
    add.add_argument("name", help="what the structure is called, e.g. 'gland' (matched against text prompts)")
    add.add_argument("--image", type=Path, required=True, help="2D image file, or a stack (Z, Y, X[, C]): see --plane")
    add.add_argument("--mask", type=Path, required=True, help="its mask/labels (non-zero = the structure)")
    add.add_argument(
        "--plane",
        type=int,
        metavar="Z",
        help="a stack image (Z, Y, X[, C]; its channels on --channel-axis): the plane the exemplar is taken from, "
        "as the Text widget's 'Add exemplar' takes the plane shown (default: the one plane its (Z, Y, X) mask labels)",
    )
    add.add_argument("--description", default="", help="optional text; synonyms separated by ',' are matched too")
    add.add_argument("--channel-axis", type=int, help=CHANNEL_AXIS_HELP)
    add.add_argument("--channels", type=int, nargs="+", help="up to three channels to keep (after --channel-axis)")
    add.add_argument("--pixel-size", type=positive_float, nargs=2, metavar=("DY", "DX"), help="physical pixel size")
    add.add_argument(
        "--instances",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the mask marks many objects (e.g. nuclei): a prompt finds every object like them, as instance labels "
        "(default: on when the mask holds several objects, ids or separate components, as `promptseg oneshot` "
        "decides; --no-instances saves one region)",
    )
    add.add_argument(
        "--partial-labels",
        action="store_true",
        help="the mask labels only some of the image's objects (e.g. 10 of its 300 nuclei): background is learned "
        "only near them, as `promptseg oneshot --partial-labels` does, and a prompt finds every object like them "
        "(many instances). Without it every unlabelled pixel of the image is taught as background: label all its "
        "objects",
    )
    add.add_argument(
        "--margin", type=float, default=None, help="crop margin around the mask, x its box's longer side (default 1.0)"
    )
    add.add_argument("--min-crop", type=int, default=1024, help="smallest crop side in pixels (%(default)s)")
    add.add_argument("--no-crop", action="store_true", help="keep the whole image instead of a crop around the mask")
    add.set_defaults(func=cmd_library_add)

    listing = lib_sub.add_parser("list", parents=[where], help="list the entries")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=cmd_library_list)

    remove = lib_sub.add_parser("remove", parents=[where], help="remove an entry by id or name")
    remove.add_argument("name", help="entry id, or name")
    remove.add_argument("--all", action="store_true", help="remove every entry with this name")
    remove.set_defaults(func=cmd_library_remove)

    export = lib_sub.add_parser("export", parents=[where], help="write the library to one zip file")
    export.add_argument("zip", type=Path, help="FILE.zip to write")
    export.add_argument("--force", action="store_true", help="overwrite FILE.zip if it exists")
    export.set_defaults(func=cmd_library_export)

    imp = lib_sub.add_parser("import", parents=[where], help="merge an exported zip into the library")
    imp.add_argument("zip", type=Path, help="FILE.zip written by `promptseg library export`")
    imp.set_defaults(func=cmd_library_import)

    starter = lib_sub.add_parser(
        "starter",
        parents=[where],
        help="add the starter exemplars built from the bundled samples ('nucleus'); a new default library gets them "
        "on its first text prompt",
    )
    starter.set_defaults(func=cmd_library_starter)


def cmd_library_add(args: argparse.Namespace) -> int:
    import numpy as np

    from ..io import read_image
    from ..io.library import DEFAULT_MARGIN
    from ..io.multiscale import read_channel_axis, read_image_named
    from ..io.starter import open_library
    from ..methods.library import exemplar_advice

    if args.no_crop and args.margin is not None:
        raise PromptsegError("give --margin or --no-crop, not both")
    # a given --channel-axis counts in the file's order (a pyramid's is read channels last), as oneshot reads it
    channel_axis = read_channel_axis(args.image, args.channel_axis)
    image = read_image_named(args.image, channel_axis)  # a Fiji composite by its named axes, as one-shot reads it
    if channel_axis not in (None, -1):  # channels last, as oneshot's references: a stack's planes are its first axis
        image, channel_axis = np.ascontiguousarray(np.moveaxis(image, channel_axis, -1)), -1
    _say_images_left_out([("--image", args.image), ("--mask", args.mask)])  # a TIFF's images after its first
    mask = read_image(args.mask, role="labels")
    # a stack's labelled plane (or --plane), as the Text widget's 'Add exemplar' takes it (a multichannel stack's
    # too: it was refused as 'a reference is one 2D image' with --channel-axis given)
    image, mask, plane = stack_reference_plane(
        args.image, args.mask, image, mask, channel_axis, args.plane, ("--image", "--mask", "--plane")
    )
    if args.plane is not None and plane is None:  # dropped unsaid, as oneshot's --reference-plane was not
        print("warning: --plane ignored: it picks a stack image's plane, and --image is a 2D image", file=sys.stderr)
    mask = _reference_labels(
        mask,
        image,
        args.mask,
        args.image,
        channel_axis,
        args.channels,
        ("--image", "--mask"),
    )
    # the default library gets the starter exemplar on its first entry, as on its first text prompt and the Text
    # widget's "Add exemplar" (an add before any prompt left it without 'nucleus' for good)
    library = open_library(args.library)
    entry = library.add(
        args.name,
        image,
        mask,
        args.description,
        source=str(args.image),
        channel_axis=channel_axis,
        channels=args.channels,
        pixel_size=args.pixel_size,
        instances=args.instances,
        partial_labels=args.partial_labels,
        margin=None if args.no_crop else (DEFAULT_MARGIN if args.margin is None else args.margin),
        min_crop=args.min_crop,
    )
    size = "x".join(str(s) for s in entry.shape[:2][::-1])
    print(f"added '{entry.name}' (id {entry.id}, {size} px crop, {entry.kind}) to {library.path}")
    advice = exemplar_advice(
        entry, f"remove it (`promptseg library remove {entry.id}`) and add it again with --partial-labels"
    )
    if advice:
        print(f"warning: {advice}", file=sys.stderr)
    return 0


def cmd_library_list(args: argparse.Namespace) -> int:
    from ..io.library import INDEX, ReferenceLibrary

    library = ReferenceLibrary.open(args.library)
    missing = {e.id: e.missing_files() for e in library.entries}
    rows = [{k: v for k, v in e.to_json().items() if k != "sha256"} for e in library.entries]
    for row in rows:
        row["missing_files"] = missing[row["id"]]
    if args.json:
        print(json.dumps({"library": str(library.path), "entries": rows}, indent=2))
        return 0
    absent = "" if library.path.exists() else "; no such folder"  # a mistyped --library, not an emptied library
    print(f"reference library: {library.path} ({len(rows)} entries{absent})")
    for e in library.entries:
        size = "x".join(str(s) for s in e.shape[:2][::-1])
        described = f"  {e.description}" if e.description else ""
        print(f"{e.name:<20} {e.id:<28} {size:>9} px  {e.kind:<30}  {e.source or '-'}{described}")
    # listed as whole, such an entry failed the first prompt matched to it
    where = "" if args.library is None else f" --library {shlex.quote(str(args.library))}"
    unlisted = library.unlisted_folders()
    if unlisted:  # listed as empty, or without them, though their files are there
        many = len(unlisted) > 1
        print(
            f"{len(unlisted)} exemplar folder{'s' if many else ''} in {library.path / 'entries'} "
            f"{'are' if many else 'is'} in no entry of {INDEX} (an "
            f"add interrupted, or {INDEX} replaced by an older copy); to add one back, then delete the folder:"
        )
        for folder in unlisted:
            image, mask = (shlex.quote(str(folder / name)) for name in ("image.tif", "mask.png"))
            print(f"  promptseg library add NAME --image {image} --mask {mask} --no-crop{_kind_flag(folder)}{where}")
    damaged = [e for e in library.entries if missing[e.id]]
    if damaged:
        print(f"{len(damaged)} of {len(rows)} entries lost files (a prompt matched to them fails):")
        for e in damaged:
            print(
                f"  {e.name} ({e.id}): {', '.join(missing[e.id])} missing; copy it back, or remove the entry "
                f"(promptseg library remove {e.id}{where}) and add the exemplar again"
            )
    return 0


def _kind_flag(folder: Path) -> str:
    """' --no-instances' for an exemplar folder whose mask is one region's (8-bit, 0/255), which `library add` would
    take for many instances when it has several components; a many-instances entry's mask holds 16-bit ids."""
    from PIL import Image

    try:
        with Image.open(folder / "mask.png") as mask:
            return " --no-instances" if mask.mode in ("L", "1", "P") else ""
    except OSError:  # unreadable: `library add` says why
        return ""


def cmd_library_starter(args: argparse.Namespace) -> int:
    from ..io.library import ReferenceLibrary
    from ..io.starter import STARTER, add_starter

    library = ReferenceLibrary.open(args.library)
    added = add_starter(library)
    for entry in added:
        print(f"added '{entry.name}' (id {entry.id}, {'many instances' if entry.instances else 'one object'})")
    kept = len(STARTER) - len(added)
    print(f"reference library: {library.path}" + (f" ({kept} starter exemplar(s) already there)" if kept else ""))
    return 0


def cmd_library_remove(args: argparse.Namespace) -> int:
    from ..io.library import ReferenceLibrary

    library = ReferenceLibrary.open(args.library)
    for entry in library.remove(args.name, all_with_name=args.all):
        print(f"removed '{entry.name}' (id {entry.id})")
    return 0


def cmd_library_export(args: argparse.Namespace) -> int:
    from ..io.library import ReferenceLibrary

    library = ReferenceLibrary.open(args.library)
    path = library.export(args.zip, overwrite=args.force)
    print(f"exported {len(library)} entries from {library.path} to {path}")
    return 0


def cmd_library_import(args: argparse.Namespace) -> int:
    from ..io.library import ReferenceLibrary
    from ..io.starter import open_library

    # a new default library gets the starter exemplar, as with `library add`
    result = ReferenceLibrary.import_zip(args.zip, into=open_library(args.library))
    where = "" if args.library is None else f" --library {shlex.quote(str(args.library))}"
    for entry in result.added:
        # not overwritten, but a prompt of this name answers from every exemplar of it now: said, with the undo
        note = result.joined_note(entry.id)
        undo = f": {note}; to take the imported one out: promptseg library remove {entry.id}{where}" if note else ""
        print(f"imported '{entry.name}' (id {entry.id}){undo}")
    if result.skipped:
        print(f"skipped (already in the library): {', '.join(result.skipped)}")
    print(f"{len(result.added)} entries added to {result.library.path}")
    return 0
