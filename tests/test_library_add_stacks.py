"""`promptseg library add` takes a plane of a multichannel stack, as `promptseg oneshot --reference` and the Text
widget's 'Add exemplar' take it."""

from __future__ import annotations

import numpy as np
import tifffile
from skimage import data as skdata

from napari_promptseg.cli import main
from napari_promptseg.io.starter import open_library


def test_a_multichannel_stacks_plane_is_added_with_its_channels(tmp_path, capsys):
    """A (Z, C, Y, X) stack with --channel-axis 1 was refused ("a reference is one 2D image"): the stack's plane was
    looked for only without --channel-axis, while oneshot moves the channels last and takes the plane."""
    coins = skdata.coins()[:160, :160]
    planes = [np.stack([c, 255 - c]) for c in (np.flipud(coins), coins, np.fliplr(coins))]
    stack = np.stack(planes)  # (Z, C, Y, X): plane 1 holds the coins as they are
    mask = np.zeros(coins.shape, np.uint8)
    mask[30:70, 40:80] = 1
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    tifffile.imwrite(tmp_path / "mask.tif", mask)
    library = tmp_path / "library"
    command = ["library", "add", "coin", "--image", str(tmp_path / "stack.tif"), "--mask", str(tmp_path / "mask.tif")]
    options = ["--channel-axis", "1", "--plane", "1", "--no-crop", "--library", str(library)]
    assert main([*command, *options]) == 0, capsys.readouterr().err
    entry = open_library(library).get("coin")
    np.testing.assert_array_equal(entry.image(), np.moveaxis(planes[1], 0, -1))  # both channels, plane 1's
    np.testing.assert_array_equal(entry.mask(), mask > 0)


def test_a_pyramids_channel_axis_counts_in_the_files_order(tmp_path, capsys):
    """A pyramidal OME-TIFF (C, Y, X) is read lazily with its channels last; --channel-axis 0, in the file's order
    as every other command counts it, was applied to that reading (its rows taken for channels)."""
    from .conftest import two_channel_pyramid

    coins = skdata.coins()[:256, :256]
    cyx = np.stack([coins, 255 - coins])
    path = two_channel_pyramid(cyx, tmp_path / "coins.ome.tif", "ome.tif")
    mask = np.zeros(coins.shape, np.uint8)
    mask[30:70, 40:80] = 1
    tifffile.imwrite(tmp_path / "mask.tif", mask)
    library = tmp_path / "library"
    command = ["library", "add", "coin", "--image", str(path), "--mask", str(tmp_path / "mask.tif"), "--no-crop"]
    assert main([*command, "--channel-axis", "0", "--library", str(library)]) == 0, capsys.readouterr().err
    np.testing.assert_array_equal(open_library(library).get("coin").image(), np.moveaxis(cyx, 0, -1))
