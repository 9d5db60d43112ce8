"""Whether a model can load here without fetching anything, and, when not, what is missing and how to get it.

A model needs two things: the Python package its backend imports (the authors' GroundingDINO is ``groundingdino``
from groundingdino-py, not in the ``all`` extra) and its weights. Either alone is not a model: weights in the cache
without the package once made the text route "auto" promise GroundingDINO, and a named route downloaded 690 MB of
weights before the import failed. Nothing here imports the package or hashes the weights (the widgets ask on every
change of a route box).
"""

from __future__ import annotations

import importlib.util
import shlex

from . import registry
from .registry import ModelCard, get_card

#: backend -> (the module it imports beyond torch, how to install it); every backend of the registry is here
#: (``promptseg models`` lists them), a backend that needs nothing more would be left out
BACKEND_PACKAGES: dict[str, tuple[str, str]] = {
    # the SAM decoder (and ViT encoder) come from segment_anything.modeling; a dependency of the project
    "litemedsam": ("segment_anything", "pip install segment-anything"),
    "sam": ("segment_anything", "pip install segment-anything"),
    "groundingdino": (
        "groundingdino",
        "pip install groundingdino-py (requirements/install_groundingdino.sh installs it without its demo's opencv)",
    ),
    "hf_grounding_dino": ("transformers", "pip install 'napari-promptseg[text]'"),
    "hf_clipseg": ("transformers", "pip install 'napari-promptseg[text]'"),
    # BERT run by plain transformers (no sentence-transformers), Dinov2Model of transformers (not torch hub)
    "sentence_minilm": ("transformers", "pip install transformers"),
    "hf_dinov2": ("transformers", "pip install 'napari-promptseg[dino]'"),
}


def backend_package(card: ModelCard | str) -> tuple[str, bool] | None:
    """The module ``card``'s backend imports beyond torch and whether it is installed (found, not imported: a
    broken install still fails at the load, with the import's own error); None when it needs nothing more."""
    card = get_card(card) if isinstance(card, str) else card
    needed = BACKEND_PACKAGES.get(card.backend)
    if needed is None:
        return None
    try:
        found = importlib.util.find_spec(needed[0]) is not None
    except (ImportError, ValueError):  # a parent that fails to import, or a module whose spec is None
        found = False
    return needed[0], found


def missing_package(card: ModelCard | str) -> str | None:
    """What ``card``'s backend cannot import and how to install it, or None when its package is installed."""
    card = get_card(card) if isinstance(card, str) else card
    package = backend_package(card)
    if package is None or package[1]:
        return None
    module, install = BACKEND_PACKAGES[card.backend]
    return f"{card.name} needs the Python package {module}, which is not installed: {install}"


def missing_weights(card: ModelCard | str, option: str | None = None) -> str | None:
    """Why ``card``'s weights are not usable on disk and where to put them, or None when they are in place (bundled,
    in the Hugging Face cache or in our cache; checked by size, not hashed). ``option``: how the caller's user gives
    them (a widget's field; default: the CLI option of the model's role)."""
    card = get_card(card) if isinstance(card, str) else card
    status, path = registry.weights_status(card)
    if status not in registry.UNUSABLE_WEIGHTS:
        return None
    if card.repo_id is not None:
        where = registry._hub_where(card, card.repo_id, card.revision or "main", card.required, option)
        return f"{card.name}: no weights: {where}"
    where = f"put {card.filename} in {registry.cache_dir()} (or set ${registry.CACHE_ENV})"
    if status == "missing":
        return f"{card.name}: no weights: {where}" + (f"; it is published at {card.url}" if card.url else "")
    if status == "partial" and path is not None:
        done = f"{path.stat().st_size / 1e6:,.1f} MB"
        return f"{card.name}: no weights yet: a download stopped after {done} ({path}); a run resumes it, or {where}"
    return f"{card.name}: {path} is {status.replace('_', ' ')} (not the published file): delete it and {where}"


def missing(card: ModelCard | str, option: str | None = None) -> list[str]:
    """Everything ``card`` lacks to load here without a download: its package, its weights; empty when ready. With
    both missing, the weights' advice (where to put them, how to fetch them) is said to come after the install:
    weights fetched first loaded nothing. ``option``: as :func:`missing_weights`'s."""
    package, weights = missing_package(card), missing_weights(card, option)
    if package is not None and weights is not None:
        name, _, rest = weights.partition(": ")
        weights = f"{name}, after installing its package: {rest}"
    return [m for m in (package, weights) if m is not None]


#: the option of a run that names a model of this role, so that the run downloads its weights
RUN_OPTIONS = {"segmenter": "--model", "grounder": "--grounder", "heatmapper": "--heatmapper"}


def how_to_get(card: ModelCard | str) -> str | None:
    """How to get ``card``'s weights when they are not usable on disk (None when they are): the run that downloads
    them, the command that fetches them where there is a network (copy the result here when this machine has none),
    else how to give them. For `promptseg models`, which listed only where they go."""
    card = get_card(card) if isinstance(card, str) else card
    status, path = registry.weights_status(card)
    if status not in registry.UNUSABLE_WEIGHTS:
        return None
    steps = [f"delete {path}"] if status not in ("missing", "partial", "incomplete") and path is not None else []
    if card.repo_id is None and card.url is None:
        target = registry.cache_dir() / card.filename
        return "; ".join([*steps, f"give the file with {registry.weights_option(card)}, or put it at {target}"])
    if card.role == "feature_extractor" and card.repo_id is not None:
        run = f"a run with --features dinov2:{card.repo_id} downloads it"
    else:
        run = f"a run with {RUN_OPTIONS.get(card.role, 'it')} {card.name} downloads it"
    if status == "partial":  # the next download goes on from the partial file's end
        run = run.replace(" downloads it", " resumes the download")
    elif status == "incomplete" and card.repo_id is not None:
        # huggingface_hub >= 1.18 starts again, and leaves the stopped download's file for good
        leftovers = registry.hub.stopped_downloads(card.repo_id)
        size = sum(p.stat().st_size for p in leftovers) / 1e6
        run = run.replace(" downloads it", " downloads it again from the start")
        run += (
            " (huggingface_hub does not resume a stopped download; the stopped one's "
            f"{size:,.1f} MB stay until `promptseg cache clear --weights {card.name}` removes them)"
        )
    steps.append(f"downloads are off (${registry.hub.offline_variable()})" if registry.offline() else run)
    if card.repo_id is not None:
        command = registry.hf_download_command(card.repo_id, card.revision or "main", card.files)
        fetch = f"`{command}` (into {registry.hub.hf_cache_dir()})"
    elif status == "partial" and path is not None:  # curl goes on from the partial file (-C -), as a run would
        target = shlex.quote(str(registry.cache_dir() / card.filename))
        fetch = f"`curl -L -C - -o {shlex.quote(str(path))} {card.url} && mv {shlex.quote(str(path))} {target}`"
    else:
        fetch = f"`curl -L --create-dirs -o {shlex.quote(str(registry.cache_dir() / card.filename))} {card.url}`"
    return "; ".join([*steps, f"where there is a network: {fetch}"])
