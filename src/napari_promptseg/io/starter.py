"""The starter reference library: exemplars built from the bundled sample data, so text prompts answer on first use.

A new user's library is empty, and offline (no GroundingDINO/CLIPSeg weights) the library is what answers text
prompts. The first time a text prompt needs the *default* library and it has never been written, the starter
exemplars are saved into it; ``promptseg library starter`` (or :func:`add_starter`) adds them to any library, again
after they were removed. Entries already there (same name) are left alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.resources import files

import numpy as np

from .library import LibraryEntry, LibraryNotWritableError, ReferenceLibrary


@dataclass(frozen=True)
class StarterExemplar:
    name: str
    description: str
    image: str  # file in the package's sample_data/
    labels: str
    instances: bool
    source: str


STARTER: tuple[StarterExemplar, ...] = (
    StarterExemplar(
        "nucleus",
        "cell nuclei; nuclei, nucleus, cell nucleus, fluorescent nuclei",
        "nuclei_dsb2018.png",
        "nuclei_dsb2018_labels.tif",
        instances=True,
        source="bundled sample: DSB2018 / BBBC038 (CC0), Caicedo et al. 2019",
    ),
)


def _sample(name: str) -> np.ndarray:
    from . import read_image

    return read_image(str(files("napari_promptseg") / "sample_data" / name))


def add_starter(library: ReferenceLibrary) -> list[LibraryEntry]:
    """Save the starter exemplars not yet in ``library`` (by name); returns the entries added."""
    added = []
    for exemplar in STARTER:
        if library.find(exemplar.name):
            continue
        image = _sample(exemplar.image)
        if image.ndim == 3:  # the bundled PNG is gray stored as RGB
            image = image[..., 0]
        labels = _sample(exemplar.labels)
        added.append(
            library.add(
                exemplar.name,
                image,
                labels,
                exemplar.description,
                source=exemplar.source,
                instances=exemplar.instances,
            )
        )
    return added


def open_library(path: str | os.PathLike | ReferenceLibrary | None = None) -> ReferenceLibrary:
    """The library at ``path``; the default library (``path`` None) gets the starter exemplars on first use, when its
    folder can be written (else ``starter_not_saved`` says why they are not there)."""
    if isinstance(path, ReferenceLibrary):
        return path
    library = ReferenceLibrary.open(path)
    if path is None and not library.index_path.exists():
        try:
            add_starter(library)
        except LibraryNotWritableError as exc:  # a shared library mounted read-only: read as it is, no lock needed
            library.starter_not_saved = str(exc)
    return library
