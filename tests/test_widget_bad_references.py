"""The One-shot widget refuses a reference it cannot learn from naming its layer, as segment_like and the library
refuse it (bad-input hunt): a reference image of one value everywhere. Real LiteMedSAM, real coins."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from napari_promptseg._widgets.oneshot import OneShotWidget

pytestmark = pytest.mark.gui
RUN_MS = 240_000  # the first run loads the model; the 2-core CPU is often shared
COINS = data.coins()[100:196, 100:196].copy()  # real coins, 96 x 96


def test_a_reference_layer_of_one_value_is_refused_naming_it(make_viewer, qtbot):
    viewer = make_viewer()
    mask = np.zeros(COINS.shape, np.uint8)
    mask[30:50, 30:50] = 1
    widget = OneShotWidget(viewer)
    viewer.window.add_dock_widget(widget, name="one-shot")
    widget.reference.set_layer(viewer.add_image(np.zeros_like(COINS), name="blank scan"))
    widget.reference_labels.set_layer(viewer.add_labels(mask, name="coin"))
    widget.target.set_layer(viewer.add_image(COINS, name="coins"))
    widget.run()
    qtbot.waitUntil(lambda: widget.is_idle, timeout=RUN_MS)
    status = widget.runner.widget.status.text()
    # a guessed mask came back, saying only that "this reference does not transfer"
    assert widget.runner.state == "failed", status
    assert "reference image 'blank scan': the image holds one value everywhere" in status, status
    assert "coins one-shot" not in [layer.name for layer in viewer.layers]
