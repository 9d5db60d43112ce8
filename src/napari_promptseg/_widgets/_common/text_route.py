"""The text route box of the widgets that take text prompts (Text prompt, Registration), and their text weights
field (the CLI's --text-weights).

One list, one tooltip: which route auto takes here and, for a route passed over, what it lacks (its package with the
pip command, its weights with where to put them: the text weights field). A named route downloads its missing model
in the widget's task through :func:`~napari_promptseg.methods.text.choose_route` (progress and cancel of the task),
the one download path.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence

from qtpy.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QLineEdit, QMenu, QToolButton, QWidget

from ...methods.text import available_route, download_advice, route_missing
from ...models.registry import named_weights
from .controls import choose_checkpoint
from .tasks import after_every_run

#: how a widget's user gives the text route's weights (the CLI's --text-weights), as messages of missing weights name it
TEXT_WEIGHTS_FIELD = "the 'text weights' field"

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


class TextWeightsField(QWidget):
    """GroundingDINO's or CLIPSeg's weights for the text route, as the CLI's --text-weights: a checkpoint file, a
    model folder (a fine-tuned CLIPSeg, a copy of the hub's) or a hub id, typed or chosen with '…' (a file or a
    folder); empty: the registry's (bundled, cached, or downloaded by a named route)."""

    def __init__(self) -> None:
        super().__init__()
        self.edit = QLineEdit()
        self.edit.setPlaceholderText("the registry's (empty)")
        self.edit.setClearButtonEnabled(True)
        self.setToolTip(
            "weights of GroundingDINO or CLIPSeg for the text prompts (the CLI's --text-weights): a checkpoint file, "
            "a model folder (e.g. a fine-tuned CLIPSeg) or a hub id owner/name; empty: the models' own"
        )
        # GroundingDINO's authors' checkpoint is a file, the transformers models are folders: one dialog takes one
        browse = QToolButton()
        browse.setText("…")
        browse.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        # as wide as the weights file field's '…' beside it, without the menu arrow that squeezed its dots
        browse.setMinimumWidth(30)
        browse.setStyleSheet("QToolButton::menu-indicator { image: none; width: 0px; }")
        menu = QMenu(browse)
        menu.addAction("checkpoint file…", self._browse_file)
        menu.addAction("model folder…", self._browse_folder)
        browse.setMenu(menu)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.edit)
        row.addWidget(browse)

    @property
    def text(self) -> str:
        return self.edit.text().strip()

    def set_path(self, path: str) -> None:
        self.edit.setText(path)

    def weights(self) -> str | None:
        """The weights given, named as the CLI's --text-weights names them (a local path absolutely), or None."""
        return named_weights(self.text) if self.text else None

    def _browse_file(self) -> None:
        path = choose_checkpoint(self, "Text model weights file", self.text)
        if path:
            self.set_path(path)

    def _browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Text model weights folder", self.text)
        if path:
            self.set_path(path)


#: the routes that load text weights (auto tries them as GroundingDINO's, then CLIPSeg's); the field is idle on others
WEIGHTS_ROUTES = ("auto", "groundingdino", "clipseg")

#: route auto's answer when text weights are given: choose_route loads them as GroundingDINO's, else as CLIPSeg's
WEIGHTS_ANSWER = "text weights"


def route_hint(
    route: str, *, text_model: str = "", trained: bool = False, intro: str = "", text_weights: str = ""
) -> tuple[str, str]:
    """``(answer, tooltip)``: the route ``route`` takes here (:func:`~...methods.text.available_route`) and the
    tooltip of the route box that says why. ``trained``: the widget offers a trained text model (auto takes it);
    ``intro``: the tooltip's first line; ``text_weights``: the text weights field's, which route auto loads (as
    GroundingDINO's, else CLIPSeg's: :data:`WEIGHTS_ANSWER`) unless a trained model answers."""
    answer = available_route(route, text_model)
    if route == "auto" and text_weights and answer != "trained":
        answer = WEIGHTS_ANSWER
    first = "your trained text model if one is chosen, else " if trained else ""
    lines = [intro] if intro else []
    lines += [
        f"auto: {first}GroundingDINO if its package and weights are here, else CLIPSeg, else your reference library; "
        f"auto downloads nothing: {download_advice(auto_note=False)}"
    ]
    if answer == WEIGHTS_ANSWER:
        lines.append(f"here auto takes: the text weights given ({text_weights}), as GroundingDINO's, else CLIPSeg's")
    elif route == "auto":
        lines.append(f"here auto takes: {answer}")
        for passed, name in _VISION_LANGUAGE.items():
            if passed == answer or answer == "trained":
                break
            lines.append(f"{name} passed over: " + "; ".join(route_missing(passed, weights_option=TEXT_WEIGHTS_FIELD)))
    elif route in _VISION_LANGUAGE:
        lacking = route_missing(route, download=True)  # weights it downloads; a package it cannot
        if lacking:
            lines.append(f"{_VISION_LANGUAGE[route]} cannot load here: " + "; ".join(lacking))
    # rich text: Qt wraps it (a plain tooltip of several hundred characters ran off the screen)
    return answer, "<qt>" + "<br>".join(html.escape(line, quote=False) for line in lines) + "</qt>"
