"""`promptseg register`'s outputs: which files of an earlier run in -o may be replaced or removed (never a user's)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import PromptsegError
from .._common import _own_report

if TYPE_CHECKING:
    from ...io._files import FilesReplacedTogether

#: --moving-labels on the fixed grid
LABELS_WARPED = "labels_warped.tif"
#: --moving-annotations in the fixed frame
ANNOTATIONS_WARPED = "annotations_warped.geojson"


def _check_earlier_outputs(
    output: Path, *, landmarks_given: bool, labels_given: bool = False, annotations_given: bool = False
) -> dict | None:
    """Refuse, before any work, to replace files in ``output`` that an earlier register run did not write or that
    were changed since: a foreign report.json, TIFFs without our mark (a user's own image saved under our name;
    labels_warped.tif only when this run writes one), with landmarks (annotations) a landmarks_warped.csv
    (annotations_warped.geojson) whose contents are not those the earlier run recorded (without landmarks, labels
    or annotations such files are kept, and the run says so). Returns the earlier register run's report, or None."""
    from ...io.images import REGISTER_MARKER, is_own_output

    report = output / "report.json"
    earlier = _own_report(report)
    if earlier is not None and earlier.get("command") != "register":
        earlier = None
    ours = ("moving_warped.tif", "displacement.tif", *((LABELS_WARPED,) if labels_given else ()))
    foreign = [output / name for name in ours if (output / name).exists() or (output / name).is_symlink()]
    foreign = [p for p in foreign if not is_own_output(p, REGISTER_MARKER)]
    if report.exists() and earlier is None:
        foreign.append(report)
    for given, name, section, key in (
        (landmarks_given, "landmarks_warped.csv", "landmarks", "landmarks_warped_sha256"),
        (annotations_given, ANNOTATIONS_WARPED, "annotations", "annotations_warped_sha256"),
    ):
        path = output / name
        if given and (path.exists() or path.is_symlink()) and not _is_earlier_text_output(path, earlier, section, key):
            foreign.append(path)
    if foreign:
        raise PromptsegError(
            f"-o {output}: {foreign[0]} is not an earlier output of promptseg register, or was changed since, and "
            "would be overwritten or removed; move it, or give another output directory"
        )
    return earlier


def _file_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _is_earlier_text_output(path: Path, earlier: dict | None, section: str, key: str) -> bool:
    """Whether ``path`` is the file the earlier run wrote, unchanged: its hash as recorded in the earlier report's
    ``section`` under ``key`` (landmarks_warped.csv, annotations_warped.geojson: text files carry no mark)."""
    recorded = ((earlier or {}).get(section) or {}).get(key)
    if not recorded or path.is_symlink() or not path.is_file():
        return False
    try:
        return _file_sha256(path) == recorded
    except OSError:
        return False


def _stale(
    together: FilesReplacedTogether, path: Path, earlier_wrote_it: bool, missing: str, kept_why: str = ""
) -> str | None:
    """Without ``missing`` this run writes no ``path``, and an earlier run's file of that name would pass for this
    run's: removed with this run's replacement (``together``) when ``earlier_wrote_it`` (still as that run wrote it);
    any other file of that name is the user's, kept. Returns what to say once done (``kept_why`` adds what may have
    made it the user's), None for nothing."""
    if earlier_wrote_it:
        together.remove(path.name)
        return f"removed {path} of an earlier run (this run has no {missing})"
    if path.exists() or path.is_symlink():
        return f"kept {path}: not written by this run ({kept_why}this run has no {missing})"
    return None
