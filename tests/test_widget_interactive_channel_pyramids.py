"""A 3-channel (3, Y, X) slide pyramid in the Interactive widget is read as the CLI reads the file: by its metadata.
An OME-TIFF naming its channels (CYX) opens one layer per channel, each a 2D slide (the CLI: one multichannel
image); RGB samples (SYX, as tifffile stores a (3, Y, X) array unasked) open as one RGB slide (the CLI: colours); a
file that names nothing (QYX: tifffile's guess of planes) is a stack of 3 planes to both, the CLI cautioning that its
first axis may hold channels."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from skimage import data

from napari_promptseg._reader import get_reader
from napari_promptseg._widgets.interactive.geometry import plane_geometry, plane_source
from napari_promptseg.io.multiscale import open_multiscale

pytestmark = pytest.mark.gui

#: the file's options -> (the CLI's axes, RGB; the layers the reader opens, each one's plane geometry's labels shape)
KINDS = {
    "named channels": (
        {"photometric": "minisblack", "metadata": {"axes": "CYX"}},
        ("yxc", False),
        [(1024, 1024)] * 3,
    ),
    "rgb samples": ({"photometric": "rgb", "planarconfig": "separate"}, ("yxc", True), [(1024, 1024)]),
    "unnamed planes": ({"photometric": "minisblack"}, ("zyx", False), [(3, 1024, 1024)]),
}


@pytest.mark.parametrize("kind", KINDS)
def test_a_channel_pyramid_is_read_by_the_widget_as_by_the_cli(kind, make_viewer, tmp_path):
    options, cli, planes = KINDS[kind]
    astronaut = data.astronaut()  # real colour pixels, its channels first
    cyx = np.ascontiguousarray(np.tile(np.moveaxis(astronaut, -1, 0), (1, 2, 2)))  # (3, 1024, 1024)
    path = tmp_path / ("slide.ome.tif" if "metadata" in options else "slide.tif")
    with tifffile.TiffWriter(path, ome="metadata" in options) as tif:
        tif.write(cyx, subifds=1, tile=(256, 256), **options)
        plain = {k: v for k, v in options.items() if k != "metadata"}
        tif.write(cyx[:, ::2, ::2], subfiletype=1, tile=(256, 256), **plain)
    image = open_multiscale(path)
    assert (image.axes, image.rgb) == cli
    viewer = make_viewer()
    layers = []
    for pixels, options, _ in get_reader(str(path))(str(path)):
        added = viewer.add_image(pixels, **options)  # a list of layers, one a channel, for a channel axis
        layers += added if isinstance(added, list) else [added]
    geometries = [plane_geometry(viewer, layer) for layer in layers]
    assert [g.labels_shape for g in geometries] == planes
    assert all(plane_source(layer, g)._plane_pyramid for layer, g in zip(layers, geometries, strict=True))
