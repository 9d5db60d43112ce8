"""A text route is a model only with both its package and its weights, and a named route downloads its model from
every front end: the Python functions, `promptseg register` and the Registration widget, as the Text prompt widget.

GroundingDINO here is the tiny random-weight build of tests/test_grounding.py: the authors' groundingdino-py
checkpoint put in our cache as groundingdino_swint_ogc's weights (its card pointed at the tiny config), and the
transformers one served by the loopback hub. The package is made missing as an uninstalled one looks to Python
(``sys.modules[name] = None``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import sys

import pytest

from napari_promptseg._widgets._common.text_route import route_hint
from napari_promptseg.errors import WeightsError
from napari_promptseg.methods.text import available_route, choose_route, route_missing
from napari_promptseg.models import MODELS, registry

from .test_grounding import gdpy_checkpoint  # noqa: F401 (fixture)
from .test_registry import PAYLOAD, PAYLOAD_SHA, WeightsServer

SWINT = "groundingdino_swint_ogc"
INSTALL = "pip install groundingdino-py"


@pytest.fixture
def cached_swint(monkeypatch, gdpy_checkpoint):  # noqa: F811
    """The tiny groundingdino-py checkpoint in our cache as groundingdino_swint_ogc.pth, where a user puts the
    published file (its card: the tiny config, the checkpoint's size and sha256)."""
    checkpoint, config = gdpy_checkpoint
    data = checkpoint.read_bytes()
    card = dataclasses.replace(
        MODELS[SWINT], size=len(data), sha256=hashlib.sha256(data).hexdigest(), options={"config": str(config)}
    )
    monkeypatch.setitem(MODELS, SWINT, card)
    registry.cache_dir().mkdir(parents=True, exist_ok=True)
    shutil.copy(checkpoint, registry.cache_dir() / card.filename)
    return card


@pytest.mark.filterwarnings("ignore:`torch.cuda.amp.autocast:FutureWarning")  # in groundingdino-py
def test_weights_without_their_package_are_no_route_and_the_hint_says_what_to_install(cached_swint, monkeypatch):
    """groundingdino_swint_ogc.pth in the cache, groundingdino-py not installed: route auto promised GroundingDINO
    (the Text widget showed its thresholds), then passed it over as 'no GroundingDINO weights', sending the user to
    fetch weights they had. Now auto promises only a model with both, and says the package is what is missing and
    how to install it; installed again, the same weights answer."""
    with monkeypatch.context() as uninstalled:
        uninstalled.setitem(sys.modules, "groundingdino", None)
        assert available_route("auto") == "library"
        answer, tooltip = route_hint("auto", trained=True)  # the Text prompt widget's route box
        assert answer == "library" and INSTALL in tooltip
        lacking = route_missing("groundingdino")
        assert any(m.startswith(f"{SWINT} needs the Python package groundingdino") and INSTALL in m for m in lacking)
        assert any(m.startswith("grounding_dino_tiny: no weights") for m in lacking)  # and where to put them
        route = choose_route("auto", device="cpu")  # the default library (its starter exemplar) answers
        assert route.route == "library"
        assert route.skipped[0].startswith("GroundingDINO weights are here but not their package")
        assert INSTALL in route.skipped[0]
    assert available_route("auto") == "groundingdino" and route_missing("groundingdino") == []
    route = choose_route("auto", device="cpu")
    assert (route.route, route.name) == ("groundingdino", SWINT)


def test_a_named_grounder_without_its_package_downloads_nothing(monkeypatch):
    """--grounder groundingdino_swint_ogc without groundingdino-py: its 690 MB checkpoint was downloaded, then the
    import failed. The package is checked first; the error names it with the install command, and the weights
    missing beside it with where they go."""
    server = WeightsServer()
    try:
        card = dataclasses.replace(MODELS[SWINT], url=server.url, sha256=PAYLOAD_SHA, size=len(PAYLOAD))
        monkeypatch.setitem(MODELS, SWINT, card)
        monkeypatch.delenv(registry.OFFLINE_ENV)
        monkeypatch.setitem(sys.modules, "groundingdino", None)
        with pytest.raises(WeightsError) as caught:
            choose_route("groundingdino", grounder=SWINT, device="cpu")
        assert server.requests == []
    finally:
        server.close()
    assert caught.value.message.startswith(f"GroundingDINO cannot load: {SWINT} needs the Python package")
    assert INSTALL in caught.value.message
    assert f"{SWINT}: no weights: put {card.filename} in {registry.cache_dir()}" in caught.value.details
