"""The text route box of the widgets that take text prompts (Text prompt, Registration).

One list, one tooltip: which route auto takes here and, for a route passed over, what it lacks (its package with the
pip command, its weights with where to put them). A named route downloads its missing model in the widget's task
through :func:`~napari_promptseg.methods.text.choose_route` (progress and cancel of the task), the one download path.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence

from qtpy.QtWidgets import QComboBox

from ...methods.text import available_route, download_advice, route_missing
from .tasks import after_every_run

#: the vision-language routes in the order auto tries them, as messages name them
_VISION_LANGUAGE = {"groundingdino": "GroundingDINO", "clipseg": "CLIPSeg"}


def text_route_box(routes: Sequence[str], refresh: Callable[..., None]) -> QComboBox:
    """A box of the text ``routes`` (``methods.text.ROUTES`` or ``PROMPT_ROUTES``), "auto" chosen. ``refresh``, the
    widget's method that sets the box's tooltip (:func:`route_hint`) and what depends on the route, is called when
    the choice changes and after every run of any promptseg widget: a model downloaded in another widget changes
    what auto takes here, and the box said the old answer until its choice was changed."""
    box = QComboBox()
    box.addItems(list(routes))
    box.setCurrentText("auto")
    box.currentTextChanged.connect(refresh)
    after_every_run(refresh)
    return box


def route_hint(route: str, *, text_model: str = "", trained: bool = False, intro: str = "") -> tuple[str, str]:
    """``(answer, tooltip)``: the route ``route`` takes here (:func:`~...methods.text.available_route`) and the
    tooltip of the route box that says why. ``trained``: the widget offers a trained text model (auto takes it);
    ``intro``: the tooltip's first line."""
    answer = available_route(route, text_model)
    first = "your trained text model if one is chosen, else " if trained else ""
    lines = [intro] if intro else []
    lines += [
        f"auto: {first}GroundingDINO if its package and weights are here, else CLIPSeg, else your reference library; "
        f"auto downloads nothing: {download_advice(auto_note=False)}"
    ]
    if route == "auto":
        lines.append(f"here auto takes: {answer}")
        for passed, name in _VISION_LANGUAGE.items():
            if passed == answer or answer == "trained":
                break
            lines.append(f"{name} passed over: " + "; ".join(route_missing(passed)))
    elif route in _VISION_LANGUAGE:
        lacking = route_missing(route, download=True)  # weights it downloads; a package it cannot
        if lacking:
            lines.append(f"{_VISION_LANGUAGE[route]} cannot load here: " + "; ".join(lacking))
    # rich text: Qt wraps it (a plain tooltip of several hundred characters ran off the screen)
    return answer, "<qt>" + "<br>".join(html.escape(line, quote=False) for line in lines) + "</qt>"
