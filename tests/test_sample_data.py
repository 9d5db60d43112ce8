"""Sample-data functions return the real images, and the npe2 manifest that declares them is valid and resolves."""

from __future__ import annotations

from importlib.resources import files

import numpy as np
import pytest
from npe2 import PluginManager, PluginManifest

from napari_promptseg import _sample_data

PLUGIN = "napari-promptseg"

# key in napari.yaml -> (function, shape of the image, rgb)
EXPECTED = {
    "cell": (_sample_data.cell, (660, 550), False),
    "immunohistochemistry": (_sample_data.immunohistochemistry, (512, 512, 3), True),
    "retina": (_sample_data.retina, (1411, 1411, 3), True),
    "nuclei": (_sample_data.nuclei, (256, 256), False),
    "nuclei_text": (_sample_data.nuclei_for_text, (256, 256), False),
    "registration_pair": (_sample_data.registration_pair, (600, 800, 3), True),
}


def check_image_layer(layer_data: tuple, shape: tuple[int, ...], rgb: bool) -> None:
    data, meta, kind = layer_data
    assert kind == "image"
    assert isinstance(data, np.ndarray) and data.shape == shape and data.dtype == np.uint8
    assert meta["rgb"] is rgb and meta["name"] and meta["metadata"]["source"]
    # a real picture, not a placeholder: wide intensity range and plenty of distinct values
    assert int(data.max()) - int(data.min()) > 100
    assert len(np.unique(data)) > 50


@pytest.mark.parametrize("key", list(EXPECTED))
def test_sample_function_returns_real_image(key):
    function, shape, rgb = EXPECTED[key]
    layers = function()
    check_image_layer(layers[0], shape, rgb)


def test_nuclei_sample_has_matching_instance_labels():
    (image, _, _), (labels, meta, kind) = _sample_data.nuclei()
    assert kind == "labels" and meta["name"] == "nuclei ground truth"
    assert labels.shape == image.shape and labels.dtype.kind in "iu"
    ids = np.unique(labels)
    assert ids[0] == 0 and len(ids) - 1 == 50  # 50 nuclei in the DSB2018 annotation
    # the labels sit on the bright nuclei of the fluorescence image
    assert image[labels > 0].mean() > 2 * image[labels == 0].mean()


def test_registration_pair_has_landmarks_on_both_images():
    fixed, fixed_points, moving, moving_points = _sample_data.registration_pair()
    assert fixed[0].shape == moving[0].shape == (600, 800, 3)
    assert fixed_points[2] == moving_points[2] == "points" and len(fixed_points[0]) == len(moving_points[0]) == 12
    # the pair is not aligned yet: that is what the Registration widget is for
    assert np.linalg.norm(fixed_points[0] - moving_points[0], axis=1).mean() > 10


def test_manifest_is_valid_and_complete():
    # what `npe2 validate napari-promptseg --imports` does
    manifest = PluginManifest._from_package_or_name(PLUGIN)
    manifest.validate_imports()
    from_file = PluginManifest.from_file(str(files("napari_promptseg") / "napari.yaml"))
    assert from_file.name == manifest.name == PLUGIN
    assert {s.key for s in manifest.contributions.sample_data} == set(EXPECTED)
    assert [w.display_name for w in manifest.contributions.widgets] == [
        "Interactive (boxes and points)",
        "One-shot reference",
        "Registration",
        "Text prompt",
        "Train text model",
    ]


@pytest.fixture
def plugin_manager():
    pm = PluginManager.instance()  # the manager napari uses; discovery must find the installed entry point
    pm.discover()
    return pm


def test_manifest_sample_data_resolves(plugin_manager):
    groups = dict(plugin_manager.iter_sample_data())
    contributions = {c.key: c for c in groups[PLUGIN]}
    assert set(contributions) == set(EXPECTED)
    for key, contribution in contributions.items():
        _, shape, rgb = EXPECTED[key]
        check_image_layer(contribution.open()[0], shape, rgb)


def test_manifest_widget_resolves(plugin_manager):
    from napari_promptseg._widgets.interactive import InteractiveWidget
    from napari_promptseg._widgets.oneshot import OneShotWidget
    from napari_promptseg._widgets.registration import RegistrationWidget
    from napari_promptseg._widgets.text import TextPromptWidget
    from napari_promptseg._widgets.train_text import TrainTextWidget

    widgets = [w for w in plugin_manager.iter_widgets() if w.command.startswith(f"{PLUGIN}.")]
    resolved = [plugin_manager.commands.get(w.command) for w in widgets]
    assert resolved == [InteractiveWidget, OneShotWidget, RegistrationWidget, TextPromptWidget, TrainTextWidget]


def test_the_readmes_console_text_prompt_on_a_sample_runs_in_a_shown_viewer(tmp_path):
    """README's console snippet, as written, in a shown viewer after File > Open Sample > Nuclei with ground truth
    (the layer it names), with no plugin widget open: its box is one of the sample's nuclei, and segment_text finds
    them. The text model's import pulled in triton, whose LLVM clashes with Mesa's once a canvas is shown: napari
    died with a segmentation fault (only widgets loaded triton safely). In a process of its own, as it crashed."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    [snippet] = re.findall(r"\*\*Console\*\*.*?```python\n(.*?)```", readme, flags=re.DOTALL)
    script = (
        "import napari\n"
        "viewer = napari.Viewer(show=True)\n"
        "viewer.open_sample('napari-promptseg', 'nuclei')\n"
        f"{snippet}"
        "truth = viewer.layers['nuclei ground truth'].data[viewer.layers['my nuclei'].data > 0]\n"
        "print('box', int(labels.max()), int((truth == 0).sum()), len(set(truth.tolist())))\n"
        "print('text', int(result.labels.max()), result.route)\n"
        "viewer.close()\n"
    )
    env = {**os.environ, "PROMPTSEG_OFFLINE": "1", "PROMPTSEG_LIBRARY": str(tmp_path / "library")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    box, text = (line.split()[1:] for line in done.stdout.splitlines()[-2:])
    assert box == ["1", "0", "1"], done.stdout  # one object, inside one nucleus of the ground truth
    assert text[1] == "library" and int(text[0]) > 20  # the starter nucleus exemplar finds the sample's nuclei


def test_the_suites_napari_keeps_its_settings_apart_from_the_users():
    """make_napari_viewer resets napari's settings, and a reset saves them: the suite wrote the user's settings file
    (~/.config/napari/.../settings.yaml), e.g. their preferred readers, at every viewer it made."""
    from pathlib import Path

    import platformdirs
    from napari.settings import get_settings

    users = Path(platformdirs.user_config_dir("napari", appauthor=False)).resolve()
    path = Path(get_settings().config_path).resolve()
    assert users not in path.parents, path
