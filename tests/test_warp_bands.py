"""The warp and the displacement field of a large image are sampled in bands of rows: the same pixels as the whole
grid at once, in bounded memory (a 4400 x 5340 RGB image's warp took 1.4 GB over its 70 MB, its field 1.5 GB)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_promptseg.io import read_image
from napari_promptseg.methods.warp import Deformation

CIMA_HE = "registration_cima_lung_lesion_1/scale-5pc/29-041-Izd2-w35-He-les1_gaussian-filtered.jpg"


def _bent(shape: tuple[int, int]) -> Deformation:
    """An affine with a smooth residual, as a registration's."""
    affine = Deformation.from_pixel_affine(np.array([[0.98, -0.05, 12.0], [0.04, 1.01, -7.0], [0, 0, 1]]), shape, shape)
    yy, xx = np.mgrid[0:24, 0:30] / 24.0
    residual = np.stack([0.01 * np.sin(3 * yy), 0.01 * np.cos(2 * xx)], -1).astype(np.float32)
    return Deformation(affine.fixed_shape, affine.moving_shape, affine.affine, residual)


def test_bands_sample_what_the_whole_grid_samples(shared_data):
    image = read_image(shared_data / CIMA_HE)  # 733 x 890 RGB
    d = _bent(image.shape[:2])
    whole = d.norm_map(dtype=torch.float32)[None]  # the grid at once, as warp_image sampled it
    src = torch.from_numpy(np.moveaxis(image, -1, 0).astype(np.float32))[None]
    expected = F.grid_sample(src, whole, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    expected = np.moveaxis(np.clip(np.rint(expected.numpy()), 0, 255).astype(np.uint8), 0, -1)
    for rows in (None, 100, 733):  # the default bands, bands that do not divide the rows, one band
        warped = d.warp_image(image, rows_per_chunk=rows)
        assert warped.dtype == np.uint8 and np.abs(warped.astype(int) - expected).max() <= 1, rows
        assert np.mean(warped != expected) < 1e-4, rows  # float rounding of a few pixels, no more
    grid = d.norm_map(dtype=torch.float64).numpy()
    h, w = image.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    field = np.stack([((grid[..., 0] + 1) * w - 1) / 2 - xs, ((grid[..., 1] + 1) * h - 1) / 2 - ys], -1)
    np.testing.assert_allclose(d.displacement(rows_per_chunk=100), field, atol=1e-4)
    labels = (image[..., 0] // 64).astype(np.uint16)
    assert set(np.unique(d.warp_labels(labels))) <= set(np.unique(labels)) | {0}  # 0: outside the moving image


@pytest.mark.parametrize(("what", "bound"), [("warp_image(image)", 12), ("displacement()", 4)])
def test_a_large_warp_stays_within_a_bound_of_its_output(shared_data, what, bound):
    """A 3300 x 4000 px RGB image (the real HE pixels enlarged): its warp and its field take about 10x and 3x their
    output's bytes beyond what the process held (they took 15-20x and 6-8x: the whole grid in float64). Each in a
    process of its own: the peak is the process's."""
    code = textwrap.dedent(
        f"""
        import resource, numpy as np
        from napari_promptseg.io import read_image
        from tests.test_warp_bands import _bent
        image = np.repeat(np.repeat(read_image({str(shared_data / CIMA_HE)!r}), 4, 0), 4, 1)[:3300, :4000]
        d = _bent(image.shape[:2])
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        out = d.{what}
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before) / out.nbytes)
        """
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=300)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) < bound, done.stdout
