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
    labels = read_image(str(folder / "nuclei_dsb2018_labels.tif"), role="labels")
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
    labels = read_image(str(folder / "nuclei_dsb2018_b_labels.tif"), role="labels")
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


def spheroid_stack(
    image: np.ndarray, truth: np.ndarray, planes: int, seed: int, jitter: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """A (Z, Y, X) stack and its 3D ground-truth ids from a 2D one-channel image of nuclei and their labels: each
    nucleus a spheroid whose cross-section shrinks away from its own centre plane (the middle plane +- ``jitter``,
    seeded); real texture inside, the image's own background pixels where a nucleus is cut away (its noise, not a
    flat value: a flat background changes what the model segments). For the 3D tests and benchmarks."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    inside = ndimage.distance_transform_edt(truth > 0)
    ids = np.arange(1, truth.max() + 1)
    radius, centre = np.zeros(truth.max() + 1), np.zeros(truth.max() + 1)
    radius[ids] = ndimage.maximum(inside, truth, ids)
    centre[ids] = planes // 2 + rng.integers(-jitter, jitter + 1, len(ids))
    fill = rng.choice(image[truth == 0], size=truth.shape)
    stack, labels = [], []
    for z in range(planes):
        d = np.abs(z - centre[truth]) / (planes / 2 + 0.5)
        keep = (truth > 0) & (d < 1) & (inside >= radius[truth] * (1 - np.sqrt(np.clip(1 - d * d, 0, 1))))
        stack.append(np.where(keep | (truth == 0), image, fill).astype(image.dtype))
        labels.append(np.where(keep, truth, 0))
    return np.stack(stack), np.stack(labels)
