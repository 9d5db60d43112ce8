"""Which route answers a text prompt here: the models whose weights (and packages) are in place, or the ones a named
route downloads; the reference library otherwise."""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ...callbacks import ProgressCallback
from ...errors import PromptsegError, WeightsError
from ...models.protocols import TextGrounder, TextHeatmapper, TextSegmenter

Route = Literal["auto", "trained", "groundingdino", "clipseg", "library"]
ROUTES: tuple[str, ...] = ("auto", "trained", "groundingdino", "clipseg", "library")
#: the routes that answer without a trained text model: what registration's text prompts take
PROMPT_ROUTES: tuple[str, ...] = ("auto", "groundingdino", "clipseg", "library")
#: registry names tried, in order, when no model object is given
GROUNDER_MODELS: tuple[str, ...] = ("grounding_dino_tiny", "groundingdino_swint_ogc")
HEATMAPPER_MODELS: tuple[str, ...] = ("clipseg_rd64_refined",)


@dataclass
class TextRoute:
    """The model (or library) chosen to answer, and why."""

    route: str
    model: object  # TextGrounder | TextHeatmapper | ReferenceLibrary
    name: str
    skipped: list[str] = field(default_factory=list)  # why earlier routes were not taken, briefly
    details: list[str] = field(default_factory=list)  # the full messages (which file is missing, where to put it)

    def because(self, answer: str) -> str:
        return "; ".join([*self.skipped, answer])

    def needs_segmenter(self, refine: bool = True) -> bool:
        """Whether answering takes a promptable segmenter: boxes (GroundingDINO) and exemplars (library) are decoded
        by one, CLIPSeg's components when ``refine``; a trained text model segments alone."""
        return self.route in ("groundingdino", "library") or (self.route == "clipseg" and refine)


def _try_load(
    kind: str,
    names: Sequence[str],
    weights: str | None,
    device: str,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
    download: bool = True,
    option: str | None = None,
) -> tuple[object, str, list[BaseException]]:
    from ...models import canonical_name, download_progress, load_grounder, load_heatmapper

    loader = load_grounder if kind == "grounder" else load_heatmapper
    problems: list[BaseException] = []
    for model_name in names:
        downloads = download_progress(progress, cancel, model_name) if progress is not None else None
        try:
            model = loader(
                model_name, weights=weights, device=device, progress=downloads, download=download, option=option
            )
            return model, canonical_name(model_name), problems  # 'CLIPSeg_rd64_refined' as the catalogue names it
        except (WeightsError, ImportError) as exc:
            problems.append(exc)
    return None, "", problems


def _joined(problems: list[BaseException]) -> str:
    return "; ".join(map(str, problems))


def _refused(kind: str, name: str, error: BaseException) -> WeightsError:
    """Why the model the user named (--grounder, --heatmapper) did not load: its error's message and details once
    (its whole text as the message and again as the details printed where to put the weights twice)."""
    message, details = getattr(error, "message", str(error)), getattr(error, "details", None)
    return WeightsError(f"{kind} {name!r}: {message}", details=details)


#: what each vision-language route is called in messages, and the registry names it tries
_ROUTE_MODELS: dict[str, tuple[str, tuple[str, ...]]] = {
    "groundingdino": ("GroundingDINO", GROUNDER_MODELS),
    "clipseg": ("CLIPSeg", HEATMAPPER_MODELS),
}


def route_missing(route: str, *, download: bool = False, weights_option: str | None = None) -> list[str]:
    """What keeps the vision-language ``route`` ("groundingdino", "clipseg") from answering here, one message per
    model it tries (a missing package with its pip command, missing weights with where to put them); empty when one
    of its models has both its package and its weights. ``download``: the route may fetch weights (a named route):
    only packages count. ``weights_option``: how the caller's user gives the text weights (a widget's field;
    default the CLI's --text-weights). Nothing is loaded or fetched."""
    from ...models.availability import missing, missing_package

    if route not in _ROUTE_MODELS:
        return []

    def lacks(name: str) -> list[str]:
        if download:  # the weights it fetches; a package it cannot
            return [m for m in [missing_package(name)] if m]
        return missing(name, option=weights_option)

    problems = [lacks(name) for name in _ROUTE_MODELS[route][1]]
    return [] if any(not p for p in problems) else [m for p in problems for m in p]


def download_advice(*, auto_note: bool = True) -> str:
    """How to get a vision-language model when auto found none on disk: the routes that download theirs ("route
    groundingdino or clipseg downloads one (route auto downloads nothing)"), and for a route none of whose models has
    its package, that package's install command first (a download for a model that cannot load was advised too).
    ``auto_note=False``: without the bracket, for a caller that has said so (the route box's tooltip). Nothing is
    loaded or fetched."""
    fetching, installing = [], []
    for route, (what, _names) in _ROUTE_MODELS.items():
        lacking = route_missing(route, download=True)  # a package only: weights are what the route downloads
        if lacking:
            installing.append(f"{what} needs its package installed before a download: " + "; ".join(lacking))
        else:
            fetching.append(route)
    said = []
    if fetching:
        one = "one" if len(fetching) > 1 else "its model"
        note = " (route auto downloads nothing)" if auto_note else ""
        said.append(f"route {' or '.join(fetching)} downloads {one}{note}")
    return "; ".join(said + installing)


def available_route(route: Route = "auto", text_model: object | None = None) -> str:
    """The route ``route`` would take, judged from what is in place (nothing is loaded): for "auto" a given trained
    model, else the first of GroundingDINO, CLIPSeg with a model whose package is installed and whose weights are on
    disk (either alone loads nothing), else the library. For the UI (which options apply); :func:`route_missing`
    says why a route is passed over."""
    if route != "auto":
        return route
    if text_model:
        return "trained"
    for answer in _ROUTE_MODELS:
        if not route_missing(answer):
            return answer
    return "library"


def unused_text_model_warnings(route: object, text_model: object, weights: object = None) -> list[str]:
    """Lines saying a trained ``text_model`` given with a route that does not read it (groundingdino, clipseg,
    library), or text model ``weights`` given with the library route (which loads no text model), is not used; none
    otherwise. Why: the route answered and the user took its labels for their model's. A route chosen already (a
    :class:`TextRoute`) says nothing: its caller chose it (the widget passes its text model field whatever route is
    picked)."""
    if not isinstance(route, str) or route in ("auto", "trained"):
        return []
    said = []
    if text_model:
        name = text_model if isinstance(text_model, (str, os.PathLike)) else getattr(text_model, "name", "given")
        said.append(
            f"text model {os.fspath(name) if isinstance(name, os.PathLike) else name} not used: route {route!r} "
            "answers without it (a trained text model answers on route 'trained' or 'auto'); drop it (CLI "
            "--text-model) or choose route 'trained' (CLI --route trained)"
        )
    if weights and route == "library":
        said.append(
            f"text weights {os.fspath(weights)} not used: route 'library' answers from the reference library, with no "
            "text model; drop them (CLI --text-weights) or choose the route they are for (groundingdino, clipseg, "
            "trained, or auto)"
        )
    return said


def _not_loaded(route: str, names: Sequence[str], weights: str | None = None) -> str:
    """Why no model of ``route`` loaded (``names``: the models tried), briefly: weights on disk whose package is not
    installed say so, with the install command ("no weights" sent users to fetch weights they had), as does a route
    none of whose models has its package; otherwise the weights are missing, or the route does not load the
    ``weights`` given (CLIPSeg's given to route auto were recorded as 'no GroundingDINO weights', as if none were)."""
    from ...models import MODELS
    from ...models.availability import missing_package, missing_weights

    what = _ROUTE_MODELS[route][0]
    packages = {name: missing_package(name) for name in names if name in MODELS}  # an unknown name: its own error
    for name, package in packages.items():
        if package is not None and missing_weights(name) is None:
            return f"{what} weights are here but not their package ({package})"
    if packages and all(packages.values()):
        return f"{what} cannot load: " + "; ".join(packages.values())
    return f"no {what} weights" if weights is None else f"{what} does not load the text weights {weights}"


def _is_kind(value: object, attribute: str, *types: type) -> bool:
    """None, an instance of ``types``, or an object with the ``attribute`` the route reads (a model's method, a
    library's entries)."""
    return value is None or (isinstance(value, types) and not isinstance(value, bool)) or hasattr(value, attribute)


def check_model_kinds(
    *,
    grounder: object = None,
    heatmapper: object = None,
    library: object = None,
    weights: object = None,
    text_model: object = None,
    segmenter: object = None,
) -> None:
    """Refuse a model argument of the wrong kind by name, before any model loads: a number, a list or a model's name
    where a loaded model goes failed deep in a route ("'int' object has no attribute 'heatmap'")."""
    path = (str, os.PathLike)
    wanted = [
        (
            text_model,
            "heatmap",
            path,
            "text_model",
            "a trained text model's directory (or its model.safetensors) or a loaded one (load_text_segmenter)",
        ),
        (
            grounder,
            "boxes",
            (str,),
            "grounder",
            "a GroundingDINO model's name (`promptseg models`) or a loaded grounder (load_grounder)",
        ),
        (
            heatmapper,
            "heatmap",
            (str,),
            "heatmapper",
            "a CLIPSeg model's name (`promptseg models`) or a loaded heatmapper (load_heatmapper)",
        ),
        (library, "entries", path, "library", "a reference library (ReferenceLibrary) or its folder"),
        (
            weights,
            "__fspath__",
            path,
            "weights",
            "a path or a hub id owner/name of GroundingDINO's or CLIPSeg's weights",
        ),
    ]
    for value, method, types, name, what in wanted:
        if not _is_kind(value, method, *types):
            raise PromptsegError(f"{name} must be {what}; got {type(value).__name__} {value!r}")
    # a segmenter is any object a route may hand prompts to (a test's stand-in too): plain data is none
    if isinstance(segmenter, (str, bytes, int, float, list, tuple, dict, set)):
        load = f" (a model's name: load_segmenter({segmenter!r}) loads it)" if isinstance(segmenter, str) else ""
        raise PromptsegError(
            f"segmenter must be a loaded segmenter (load_segmenter); got {type(segmenter).__name__} {segmenter!r}{load}"
        )


def choose_route(
    route: Route = "auto",
    *,
    grounder: TextGrounder | str | None = None,
    heatmapper: TextHeatmapper | str | None = None,
    library: object | None = None,
    weights: str | None = None,
    device: str = "auto",
    text_model: TextSegmenter | str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
    weights_option: str | None = None,
) -> TextRoute:
    """Pick the route that can answer: a trained text model when given (``text_model``: a model directory or a
    loaded :class:`~...models.protocols.TextSegmenter`), a given model object, else registry models whose weights
    resolve, else the reference library (``library``: a :class:`~...io.library.ReferenceLibrary`, a path, or None
    for the default). ``route="auto"`` takes only weights already on disk: a user with the offline library alone is
    not sent a 690 MB GroundingDINO download they did not ask for; a named route, model or hub id downloads what is
    missing. A model's weights download tells ``progress`` and stops when ``cancel()`` says so. ``weights_option``:
    how the caller's user gives ``weights`` (a widget's field), named where missing weights are told (default: the
    CLI's --text-weights)."""
    if route not in ROUTES:
        raise PromptsegError(f"route must be one of {ROUTES}, got {route!r}")
    check_model_kinds(grounder=grounder, heatmapper=heatmapper, library=library, weights=weights, text_model=text_model)
    skipped: list[str] = []
    details: list[str] = []
    if weights is not None and not text_model:
        from ...models.text_segmenter import is_text_model, read_config

        # a model of train-text given as the text weights (--text-weights, "weights of the text model"): no
        # GroundingDINO or CLIPSeg loader reads it, and each said so at length
        if is_text_model(weights):
            if route in ("auto", "trained"):
                text_model = weights
            # a fine-tuned CLIPSeg loads on route clipseg too, on no other (route groundingdino tried it as one)
            elif not (route == "clipseg" and read_config(weights).get("kind") == "clipseg"):
                raise PromptsegError(
                    f"text weights {weights}: a text model trained with `promptseg train-text`, which route "
                    f"{route!r} does not load; give it as the text model (CLI --text-model, widget: text model; route "
                    "trained or auto)"
                )
    if route in ("auto", "trained") and text_model:
        if isinstance(text_model, (str, os.PathLike)):
            from ...models import load_text_segmenter

            model = load_text_segmenter(text_model, device=device)
            return TextRoute("trained", model, getattr(model, "name", Path(text_model).name))
        return TextRoute("trained", text_model, getattr(text_model, "name", "trained"))
    if route == "trained":
        raise PromptsegError(
            "route 'trained' needs a trained text model: give its directory (CLI --text-model MODEL_DIR, widget: "
            "text model; train one with `promptseg train-text` or the Train text model widget)"
        )
    if route in ("auto", "groundingdino"):
        if grounder is not None and not isinstance(grounder, str):
            return TextRoute("groundingdino", grounder, getattr(grounder, "name", "grounder"))
        names = [grounder] if isinstance(grounder, str) else GROUNDER_MODELS
        # auto fetches nothing unless the user named the model or its weights
        download = route != "auto" or isinstance(grounder, str) or weights is not None
        model, model_name, problems = _try_load(
            "grounder", names, weights, device, progress, cancel, download, weights_option
        )
        if model is not None:
            return TextRoute("groundingdino", model, model_name)
        if route == "groundingdino":
            raise WeightsError(f"{_not_loaded(route, names, weights)} (route {route})", details=_joined(problems))
        if isinstance(grounder, str):  # a model the user named is not passed over for another route
            raise _refused("grounder", grounder, problems[0])
        skipped.append(_not_loaded("groundingdino", names, weights))
        details.extend(map(str, problems))
    if route in ("auto", "clipseg"):
        if heatmapper is not None and not isinstance(heatmapper, str):
            return TextRoute("clipseg", heatmapper, getattr(heatmapper, "name", "heatmapper"), skipped, details)
        names = [heatmapper] if isinstance(heatmapper, str) else HEATMAPPER_MODELS
        download = route != "auto" or isinstance(heatmapper, str) or weights is not None
        model, model_name, problems = _try_load(
            "heatmapper", names, weights, device, progress, cancel, download, weights_option
        )
        if model is not None:
            return TextRoute("clipseg", model, model_name, skipped, details)
        if route == "clipseg":
            raise WeightsError(f"{_not_loaded(route, names, weights)} (route {route})", details=_joined(problems))
        if isinstance(heatmapper, str):
            raise _refused("heatmapper", heatmapper, problems[0])
        skipped.append(_not_loaded("clipseg", names, weights))
        details.extend(map(str, problems))
    if route == "auto" and weights is not None:  # weights the user gave that no route loads (a typo, a wrong folder)
        raise WeightsError(
            f"text weights {weights}: neither GroundingDINO nor CLIPSeg loads them ({details[0] if details else ''})",
            details="; ".join(details[1:]),  # the first is said already
        )
    from ...io.starter import open_library

    lib = open_library(library)  # the default library gets the starter exemplars (nuclei) on first use
    if not lib.entries:
        where = "; ".join(skipped) + ", and " if skipped else ""
        # a library named by the user is filled by commands that name it: without --library they fill the default one
        named = "" if library is None else f" --library {shlex.quote(str(lib.path))}"
        # a mistyped --library is no folder: said with its path, not as an empty library the user may think lost
        missing = "" if lib.path.exists() else f" (no such folder: {lib.path})"
        if lib.starter_not_saved:  # a new default library that cannot be written (a shared one, read-only)
            missing = f" (its folder cannot be written, so the starter exemplars were not saved in it: {lib.path})"
        raise PromptsegError(
            f"{where}the reference library has no entries{missing}",
            details=f"library: {lib.path}. Save a named exemplar from the One-shot widget ('Save reference to "
            "library…'), or the Text prompt widget's 'Add exemplar', or run `promptseg library add NAME --image IMG "
            f"--mask MASK{named}` (`promptseg library starter{named}` adds the bundled nuclei exemplar); or a "
            f"vision-language model: {download_advice()} (`promptseg models` lists where weights go)",
        )
    return TextRoute("library", lib, str(lib.path), skipped, details)
