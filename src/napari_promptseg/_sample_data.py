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


def nuclei_for_text() -> list[tuple]:
    """Another DSB2018 fluorescence image (78 nuclei): what the starter library's 'nucleus' exemplar (built from
    :func:`nuclei`) answers when the Text prompt widget is asked for "nuclei"."""
    folder = files("napari_promptseg") / "sample_data"
    image = read_image(str(folder / "nuclei_dsb2018_b.png"))[..., 0]
    labels = read_image(str(folder / "nuclei_dsb2018_b_labels.tif"))
    source = "DSB2018 / BBBC038 (CC0), Caicedo et al. 2019, image 912a679e4b9b"
    return [
        _image(image, "nuclei (text prompt)", False, source),
        (
            labels,
            {"name": "nuclei (text prompt) ground truth", "metadata": {"source": source}, "visible": False},
            "labels",
        ),
    ]


def registration_pair() -> list[tuple]:
    """BIRL's synthetic histology pair (800x600 RGB): a reference and an affine-warped copy, with their 12
    corresponding landmarks as Points layers (fixed / moving) for the Registration widget's TRE."""
    from .io.landmarks import read_landmarks

    folder = files("napari_promptseg") / "sample_data"
    source = "BIRL artificial_reference / artificial_moving-affine (BSD-3-Clause, Borovec et al.; CIMA histology)"
    layers = []
    for role in ("fixed", "moving"):
        image = read_image(str(folder / f"registration_{role}.jpg"))
        xy = read_landmarks(str(folder / f"registration_{role}.csv")).xy
        layers.append(_image(image, f"registration {role}", True, source))
        points_meta = {"name": f"registration {role} landmarks", "size": 12, "face_color": "cyan", "visible": False}
        layers.append((xy[:, ::-1], points_meta, "points"))
    return layers
