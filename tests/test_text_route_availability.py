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
import json
import shutil
import sys

import imageio.v3 as iio
import numpy as np
import pytest

from napari_promptseg import cli
from napari_promptseg._widgets._common.text_route import route_hint
from napari_promptseg.errors import WeightsError
from napari_promptseg.methods.text import available_route, choose_route, route_missing
from napari_promptseg.models import MODELS, get_card, registry

from .test_clipseg import tiny_clipseg_dir  # noqa: F401 (fixture)
from .test_grounding import gdpy_checkpoint, hf_dir  # noqa: F401 (fixtures)
from .test_registration_widget import pair  # noqa: F401 (fixture)
from .weights_server import PAYLOAD, PAYLOAD_SHA, WeightsServer

SWINT = "groundingdino_swint_ogc"
GDINO = get_card("grounding_dino_tiny")
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


def test_a_route_whose_packages_are_missing_is_not_advised_as_a_download(monkeypatch, tmp_path):
    """Route auto without a vision-language model advised "choose groundingdino or clipseg to download" whether
    or not their packages were installed: a download of weights no package here could load. A route none of whose
    models has its package is advised as an install first; one that can load what it fetches, as a download."""
    from napari_promptseg.errors import PromptsegError
    from napari_promptseg.io.library import ReferenceLibrary

    empty = ReferenceLibrary.open(tmp_path / "library")
    monkeypatch.setitem(sys.modules, "groundingdino", None)  # uninstalled, as Python sees it
    monkeypatch.setitem(sys.modules, "transformers", None)  # (a --no-deps install): GroundingDINO's and CLIPSeg's
    _, tooltip = route_hint("auto", trained=True)  # the Text prompt widget's route box
    advice = tooltip.partition("auto downloads nothing: ")[2].partition("<br>")[0]
    assert advice.startswith("GroundingDINO needs its package installed before a download: ") and INSTALL in advice
    assert "; CLIPSeg needs its package installed before a download: " in advice and "route " not in advice
    # where to get the weights (`hf download ...`) comes after the install, as each passed-over model says
    assert tooltip.count("no weights: ") == tooltip.count(", after installing its package: no weights: ") == 3
    with pytest.raises(PromptsegError, match="the reference library has no entries") as caught:
        choose_route("auto", library=empty, device="cpu")
    assert "route groundingdino" not in caught.value.details and "route clipseg" not in caught.value.details
    assert "weights in place" not in caught.value.details  # weights no package here could load
    assert "CLIPSeg needs its package installed before a download: clipseg_rd64_refined needs the Python package " in (
        caught.value.details
    )
    # groundingdino-py installed: GroundingDINO is a download again (its authors' model), CLIPSeg still an install
    monkeypatch.delitem(sys.modules, "groundingdino")
    with pytest.raises(PromptsegError) as caught:
        choose_route("auto", library=empty, device="cpu")
    assert "route groundingdino downloads its model (route auto downloads nothing); CLIPSeg needs its package" in (
        caught.value.details
    )
    _, tooltip = route_hint("auto", trained=True)  # said once, not again in the advice's bracket
    assert tooltip.count("auto downloads nothing") == 1 and "route groundingdino downloads its model" in tooltip


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


def test_promptseg_register_tells_a_named_text_routes_download(fake_hub, hf_dir, shared_data, tmp_path, capsys):  # noqa: F811
    """`promptseg register --text-route groundingdino` fetched GroundingDINO with no line of ours (`promptseg text`
    tells it); it is told as every download of the CLI."""
    fake_hub.add(GDINO.repo_id, hf_dir, GDINO.revision)
    image = iio.imread(shared_data / "registration_birl" / "data-images" / "images" / "artificial_reference.jpg")
    small = np.ascontiguousarray(image[::8, ::8, 0])
    iio.imwrite(tmp_path / "fixed.png", small)
    iio.imwrite(tmp_path / "moving.png", np.roll(small, (3, -4), axis=(0, 1)))
    args = ["register", str(tmp_path / "fixed.png"), str(tmp_path / "moving.png"), "-o", str(tmp_path / "out")]
    code = cli.main([*args, "--prompt", "gland", "--text-route", "groundingdino", "--method", "prompts", "--no-dense"])
    captured = capsys.readouterr()
    assert f"/{GDINO.repo_id}/resolve/{GDINO.revision}/model.safetensors" in fake_hub.downloads()
    assert f"downloading {GDINO.name}:" in captured.err, captured.err
    assert code == 0, captured.err
    assert "text prompts answered by groundingdino: GroundingDINO (grounding_dino_tiny)" in captured.out


def test_promptseg_register_takes_the_text_routes_weights_as_promptseg_text_does(
    tiny_clipseg_dir,  # noqa: F811
    shared_data,
    tmp_path,
    capsys,
):
    """`promptseg register --prompt gland --text-route clipseg` without CLIPSeg's weights said "pass the model
    directory with --text-weights", an option register did not have: a model directory on disk (a fine-tuned
    CLIPSeg, a copy of the hub's) could not answer its prompts. It takes --text-weights as `promptseg text` does."""
    image = iio.imread(shared_data / "registration_birl" / "data-images" / "images" / "artificial_reference.jpg")
    small = np.ascontiguousarray(image[::8, ::8, 0])
    iio.imwrite(tmp_path / "fixed.png", small)
    iio.imwrite(tmp_path / "moving.png", np.roll(small, (3, -4), axis=(0, 1)))
    args = ["register", str(tmp_path / "fixed.png"), str(tmp_path / "moving.png"), "-o", str(tmp_path / "out")]
    args += ["--prompt", "gland", "--text-route", "clipseg", "--method", "prompts", "--no-dense", "--device", "cpu"]
    assert cli.main(args) == 2
    assert "pass the model directory with --text-weights" in capsys.readouterr().err
    code = cli.main([*args, "--text-weights", str(tiny_clipseg_dir)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "text prompts answered by clipseg: CLIPSeg" in captured.out, captured.out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["parameters"]["text_weights"] == str(tiny_clipseg_dir)


@pytest.mark.gui
def test_the_registration_widget_downloads_the_text_route_it_is_told(make_napari_viewer, qtbot, fake_hub, hf_dir, pair):  # noqa: F811
    """The Registration widget's text prompts always went to route auto, which never downloads: GroundingDINO could
    not be had from it. Its route box is the Text prompt widget's: auto (the default) fetches nothing and says what
    it takes here; a named route downloads its model with the task's progress, and auto takes it from then on."""
    from napari.qt.threading import WorkerBase

    from napari_promptseg._widgets.registration import RegistrationWidget

    fake_hub.add(GDINO.repo_id, hf_dir, GDINO.revision)
    fixed, moving, _, _ = pair
    viewer = make_napari_viewer()
    widget = RegistrationWidget(viewer)
    widget.fixed_picker.set_layer(viewer.add_image(fixed[::2, ::2, 0], name="fixed"))
    widget.moving_picker.set_layer(viewer.add_image(moving[::2, ::2, 0], name="moving"))
    widget.text_prompts.setText("gland")
    widget.method.setCurrentText("prompts")
    assert widget.text_route.currentText() == "auto"
    assert "here auto takes: library" in widget.text_route.toolTip()
    assert "GroundingDINO passed over: grounding_dino_tiny: no weights" in widget.text_route.toolTip()
    messages: list[str] = []
    widget.runner._progressed.connect(lambda job, fraction, message: messages.append(message))
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=180_000)
    assert fake_hub.requests == []  # auto: the library answered ('gland' is not in it), nothing was fetched

    widget.text_route.setCurrentText("groundingdino")
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=180_000)
    WorkerBase.await_workers(msecs=60_000)
    assert f"/{GDINO.repo_id}/resolve/{GDINO.revision}/model.safetensors" in fake_hub.downloads()
    assert any(m.startswith(f"downloading {GDINO.name}:") for m in messages), messages
    # the tiny random model answered the prompt on both images (the route box reached register)
    assert widget.last_result is not None and widget.last_result.text_route == "groundingdino", widget.runner.state
    widget.text_route.setCurrentText("auto")
    assert "here auto takes: groundingdino" in widget.text_route.toolTip()  # on disk now


def test_register_tells_and_stops_a_named_text_routes_download(fake_hub, hf_dir, pair):  # noqa: F811
    """register(text_route="groundingdino") fetched the model with no word to ``progress`` and no ear for
    ``cancel``: the widget's bar stood still and its Cancel waited for 690 MB. The download is told and stopped."""
    from napari_promptseg.errors import CancelledError
    from napari_promptseg.methods.registration import register

    fake_hub.add(GDINO.repo_id, hf_dir, GDINO.revision)
    fixed, moving, _, _ = pair
    told: list[str] = []
    with pytest.raises(CancelledError, match=f"download of {GDINO.name} cancelled"):
        register(
            fixed[::2, ::2, 0],
            moving[::2, ::2, 0],
            "gland",
            method="prompts",
            text_route="groundingdino",
            progress=lambda fraction, message: told.append(message),
            cancel=lambda: any(m.startswith(f"downloading {GDINO.name}:") for m in told),
        )
    assert any(m.startswith(f"downloading {GDINO.name}:") for m in told)


def _details(widget) -> str:
    """What the widget's status line and its Details… box say of the last failed run."""
    panel = widget.runner.widget
    return f"{panel.status.text()}\n{panel.details or ''}"


@pytest.mark.gui
def test_the_text_widget_takes_the_text_routes_weights_as_promptseg_text_does(
    make_napari_viewer,
    qtbot,
    tiny_clipseg_dir,  # noqa: F811
    shared_data,
):
    """Route clipseg without CLIPSeg's weights told a napari user to 'pass the model directory with --text-weights',
    an option the Text prompt widget had no field for: a model directory on disk could not answer. The widget takes
    it in its 'text weights' field, which the message names, and the heatmap is the console's with those weights."""
    from napari_promptseg._widgets.text import TextPromptWidget
    from napari_promptseg.methods.text import segment_text
    from napari_promptseg.models import load_heatmapper

    image = iio.imread(next((shared_data / "lungs_cxr_shenzhen").glob("images/*")))
    image = np.ascontiguousarray((image if image.ndim == 2 else image[..., 0])[::8, ::8])
    viewer = make_napari_viewer()
    widget = TextPromptWidget(viewer)
    widget.image.set_layer(viewer.add_image(image, name="xray"))
    # the route box's tooltip, on the routes auto passes over, names the field too
    tooltip = widget.route.toolTip()
    assert "CLIPSeg passed over" in tooltip and "the 'text weights' field" in tooltip, tooltip
    assert "--text-weights" not in tooltip, tooltip
    widget.route.setCurrentText("clipseg")
    widget.refine.setChecked(False)
    widget.prompt.setText("lungs")
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=180_000)
    said = _details(widget)
    assert widget.runner.state == "failed" and "the 'text weights' field" in said and "--text-weights" not in said, said
    widget.text_weights.set_path(str(tiny_clipseg_dir))
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=180_000)
    assert widget.runner.state == "done", _details(widget)
    heatmapper = load_heatmapper("clipseg_rd64_refined", weights=tiny_clipseg_dir, device="cpu")
    console = segment_text(image, "lungs", route="clipseg", heatmapper=heatmapper, refine=False)
    np.testing.assert_allclose(viewer.layers["xray text: lungs heatmap"].data, console.heatmap, atol=1e-6)


@pytest.mark.gui
def test_the_registration_widget_takes_the_text_routes_weights_as_promptseg_register_does(
    make_napari_viewer,
    qtbot,
    tiny_clipseg_dir,  # noqa: F811
    shared_data,
):
    """The Registration widget's text prompts on route clipseg without its weights said 'pass the model directory
    with --text-weights' (the CLI's option; the widget had none). Its 'text weights' field gives them, as
    `promptseg register --text-weights` does, and the message names that field."""
    from napari.qt.threading import WorkerBase

    from napari_promptseg._widgets.registration import RegistrationWidget

    image = iio.imread(shared_data / "registration_birl" / "data-images" / "images" / "artificial_reference.jpg")
    small = np.ascontiguousarray(image[::8, ::8, 0])
    viewer = make_napari_viewer()
    widget = RegistrationWidget(viewer)
    widget.fixed_picker.set_layer(viewer.add_image(small, name="fixed"))
    widget.moving_picker.set_layer(viewer.add_image(np.roll(small, (3, -4), axis=(0, 1)), name="moving"))
    widget.text_prompts.setText("gland")
    widget.text_route.setCurrentText("clipseg")
    widget.method.setCurrentText("prompts")
    widget.dense.setChecked(False)
    widget.device.setCurrentText("cpu")
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=180_000)
    said = _details(widget)
    assert widget.runner.state == "failed" and "the 'text weights' field" in said and "--text-weights" not in said, said
    widget.text_weights.set_path(str(tiny_clipseg_dir))
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=180_000)
    WorkerBase.await_workers(msecs=60_000)
    assert widget.runner.state == "done", _details(widget)
    assert widget.last_result.text_route == "clipseg"
    assert "text prompts answered by clipseg: CLIPSeg" in widget.summary.text()


@pytest.mark.gui
def test_route_auto_with_text_weights_shows_and_enables_the_settings_they_answer_with(
    make_napari_viewer,
    tiny_clipseg_dir,  # noqa: F811
):
    """Route auto loads the text weights given (choose_route tries them as GroundingDINO's, then CLIPSeg's), but the
    widgets judged auto by the models on disk alone: with only the library here, the Text widget hid CLIPSeg's
    threshold and templates that the run then used, and the Registration widget greyed its thresholds out. Given
    weights, auto is said to take them, and both their routes' settings are offered."""
    from napari_promptseg._widgets.registration import RegistrationWidget
    from napari_promptseg._widgets.text import TextPromptWidget

    viewer = make_napari_viewer()
    text = TextPromptWidget(viewer)
    assert text.effective_route == "library" and text.heatmap_threshold.isHidden()
    text.text_weights.set_path(str(tiny_clipseg_dir))
    assert text.effective_route == "text weights"
    assert not text.heatmap_threshold.isHidden() and not text.box_threshold.isHidden()
    assert not text.template.isHidden() and not text.refine.isHidden() and text.top_k.isHidden()
    assert "here auto takes: the text weights" in text.route.toolTip()
    registration = RegistrationWidget(viewer)
    registration.text_prompts.setText("gland")
    assert not registration.heatmap_threshold.isEnabled()
    registration.text_weights.set_path(str(tiny_clipseg_dir))
    assert registration.heatmap_threshold.isEnabled() and registration.box_threshold.isEnabled()


@pytest.mark.gui
def test_the_widgets_idle_text_weights_do_not_stop_the_library_route(make_napari_viewer, qtbot, tmp_path):
    """The Text widget hides its 'text weights' field on route library (no weights are loaded there), the
    Registration widget greys it out, but both still passed what it held to the route chooser: a train-text model
    left in it refused the run ('route library does not load it') with the field out of sight. Idle, it is not
    read."""
    from napari_promptseg._sample_data import nuclei_for_text
    from napari_promptseg._widgets.registration import RegistrationWidget
    from napari_promptseg._widgets.text import TextPromptWidget
    from napari_promptseg.models.text_segmenter import CONFIG_FILE

    (image, _, _), _ = nuclei_for_text()
    model = tmp_path / "trained"  # what the route chooser takes for a train-text model: its config file
    model.mkdir()
    (model / CONFIG_FILE).write_text(json.dumps({"kind": "fusion"}))
    viewer = make_napari_viewer()
    widget = TextPromptWidget(viewer)
    widget.image.set_layer(viewer.add_image(image[:96, :96], name="nuclei"))
    widget.text_weights.set_path(str(model))
    widget.route.setCurrentText("library")
    assert widget.text_weights.isHidden()
    widget.prompt.setText("nucleus")
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=180_000)
    assert widget.runner.state == "done", _details(widget)
    # the Registration widget's field, greyed out on route library, is not read there either
    registration = RegistrationWidget(viewer)
    registration.text_weights.set_path(str(model))
    registration.text_prompts.setText("nucleus")
    assert registration.settings()[1]["weights"] == str(model)  # route auto loads them
    registration.text_route.setCurrentText("library")
    assert not registration.text_weights.isEnabled() and "weights" not in registration.settings()[1]
