"""npe2 sample-data contributions: real images that ship offline."""

from __future__ import annotations

from importlib.resources import files

import numpy as np

from .io import read_image


def _image(data: np.ndarray, name: str, rgb: bool, source: str) -> tuple:
    return (data, {"name": name, "rgb": rgb, "metadata": {"source": source}}, "image")


def cell() -> list[tuple]:
    from skimage import data

    return [_image(data.cell(), "cell", False, "scikit-image data.cell (Hubble-style phase contrast cell)")]


def immunohistochemistry() -> list[tuple]:
    from skimage import data

    return [_image(data.immunohistochemistry(), "immunohistochemistry", True, "scikit-image IHC (colon, DAB)")]


def retina() -> list[tuple]:
    from skimage import data

    return [_image(data.retina(), "retina", True, "scikit-image retina fundus photograph")]


def nuclei() -> list[tuple]:
    folder = files("napari_promptseg") / "sample_data"
    image = read_image(str(folder / "nuclei_dsb2018.png"))[..., 0]
    labels = read_image(str(folder / "nuclei_dsb2018_labels.tif"))
    source = "DSB2018 / BBBC038 (CC0), Caicedo et al. 2019"
    return [
        _image(image, "nuclei", False, source),
        (labels, {"name": "nuclei ground truth", "metadata": {"source": source}, "visible": False}, "labels"),
    ]
