"""The console's RegistrationResult.warp_labels given a napari Labels layer: read where the layer lies over the
moving image layer given to register() (its own scale and translate), as the Registration widget reads its moving
labels (one function does both), not as pixels of the moving image."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image, Labels
from skimage import data, measure

import napari_promptseg
from napari_promptseg._widgets.registration.planes import _labels_on_plane
from napari_promptseg.methods.registration import RegistrationResult

COINS = data.coins()  # real 303x384 uint8 greyscale photo of coins


@pytest.fixture(scope="module")
def registered():
    """Two coin crops laid as napari layers (µm-like scale 0.5, the moving one beside the fixed), registered from the
    layers; the coins labelled on the moving crop."""
    crop = COINS[:128, :160]
    moved = np.roll(crop, (3, -2), axis=(0, 1))
    fixed_layer = Image(crop, name="day 1", scale=(0.5, 0.5), translate=(10.0, 20.0))
    moving_layer = Image(moved, name="day 2", scale=(0.5, 0.5), translate=(0.0, 250.0))
    result = napari_promptseg.register(fixed_layer, moving_layer, method="intensity")
    coins = measure.label(moved > 110).astype(np.uint16)
    assert coins.max() >= 3
    return result, moving_layer, coins


def test_a_labels_layer_is_warped_from_where_it_lies_over_the_moving_layer(registered):
    """warp_labels(labels_layer) took the layer's array as moving pixels: labels painted on a crop of the moving image
    (laid on it by translate) or at half its resolution (scale 2x) were refused for their shape (or, of the moving
    image's shape but moved, warped from the wrong place), while the widget resamples them by their placement."""
    result, moving_layer, coins = registered
    h, w = coins.shape
    # painted on the moving image's columns 10 onwards: a layer of that crop, laid there by its translate
    crop = Labels(coins[:, 10:], scale=(0.5, 0.5), translate=(0.0, 250.0 + 10 * 0.5))
    on_moving = coins.copy()
    on_moving[:, :10] = 0
    np.testing.assert_array_equal(result.warp_labels(crop), result.warp_labels(on_moving))
    # painted at half resolution: each label pixel over 2 x 2 moving pixels (a half-pixel offset: centres over centres)
    half = Labels(coins[::2, ::2], scale=(1.0, 1.0), translate=(0.25, 250.25))
    upsampled = np.kron(coins[::2, ::2], np.ones((2, 2), coins.dtype))[:h, :w]
    np.testing.assert_array_equal(result.warp_labels(half), result.warp_labels(upsampled))
    # the widget's reading of the same layers: the same labels
    for layer in (crop, half):
        on_plane = _labels_on_plane(layer, moving_layer, np.ones(2), (h, w)).resample()
        np.testing.assert_array_equal(result.warp_labels(layer), result.warp_labels(on_plane))
    # over a (1, H, W) plane: given back (1, H, W), as an array of one plane is
    one_plane = Labels(coins[None, :, 10:], scale=(1, 0.5, 0.5), translate=(0.0, 0.0, 250.0 + 10 * 0.5))
    np.testing.assert_array_equal(result.warp_labels(one_plane), result.warp_labels(on_moving)[None])
    # a result registered from pixels knows no moving layer to lay a Labels layer over: its pixels, as before
    from_pixels = RegistrationResult(result.deformation, result.method)
    np.testing.assert_array_equal(from_pixels.warp_labels(Labels(coins, translate=(3, 4))), result.warp_labels(coins))
