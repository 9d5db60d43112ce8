"""The console's register() given napari layers: a Points layer given to the result is read over the image layer it
was clicked on (as the Registration widget reads its landmarks), not as the pixels of its own data."""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Points
from skimage import data

import napari_promptseg

COINS = data.coins()  # real 303x384 uint8 greyscale photo of coins


def test_points_layers_drawn_over_placed_image_layers_map_through_the_layers_given_to_register():
    """register(fixed_layer, moving_layer).moving_points_to_fixed(points_layer) read the Points layer's own data
    coordinates: clicks on a moving layer laid beside the fixed one (translate 500 px) or scaled (µm) were taken as
    its pixels, 250 px off, while the Registration widget reads the same layers through the world. Both read them as
    napari shows them now; the points come back in the fixed layer's pixels (layer_placement lays them over it)."""
    crop = COINS[:128, :160]
    moved = np.roll(crop, (3, -2), axis=(0, 1))
    fixed_layer = Image(crop, name="day 1", scale=(0.5, 0.5), translate=(10.0, 20.0))
    moving_layer = Image(moved, name="day 2", scale=(0.5, 0.5), translate=(0.0, 250.0))
    result = napari_promptseg.register(fixed_layer, moving_layer, method="intensity")
    rows_cols = np.array([[40.0, 60.0], [90.0, 100.0]])  # on the moving image, clicked in the world
    clicks = Points([moving_layer.data_to_world(p) for p in rows_cols])
    expected = result.moving_points_to_fixed(rows_cols[:, ::-1])
    np.testing.assert_allclose(result.moving_points_to_fixed(clicks), expected, atol=1e-9)
    on_a_stack_view = Points([(2.0, *moving_layer.data_to_world(p)) for p in rows_cols], ndim=3)
    np.testing.assert_allclose(result.moving_points_to_fixed(on_a_stack_view), expected, atol=1e-9)
    fixed_clicks = Points([fixed_layer.data_to_world(p) for p in expected[:, ::-1]])
    np.testing.assert_allclose(result.fixed_points_to_moving(fixed_clicks), rows_cols[:, ::-1], atol=0.05)
    # pixels given (no image layer): the Points layer's own data coordinates, as before
    pixels = napari_promptseg.register(crop, moved, method="intensity")
    np.testing.assert_allclose(pixels.moving_points_to_fixed(Points(rows_cols)), expected, atol=1e-6)
