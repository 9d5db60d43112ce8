"""medvlsm prompt templates: a class name plus optional attributes, expanded to the sentence a model sees.

medvlsm (Poudel et al., MIDL 2024) prompts vision-language segmenters with ten templates, p0-p9:

====  ================================================================================
p0    "" (no text)
p1    "{class}"
p2    "{shape} {class}"
p3    "{colour} {shape} {class}"
p4    "{size} {colour} {shape} {class}"
p5    "{count} {size} {colour} {shape} {class}"
p6    p5 + ", located in {location} of the image"
p7    "{class} which is {description}"
p8    p5 + " which is {description}"
p9    p8 + " located in {location} of the image"
====  ================================================================================

Size, count and location follow from a mask (:func:`attributes_from_mask`, medvlsm's rules); shape, colour and
description are the user's words. A missing attribute is left out rather than invented, so "polyp" at p5 without
a mask stays "polyp".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import ndimage

from ..errors import PromptsegError

LEVELS = tuple(f"p{i}" for i in range(10))
_COUNT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_GRID = (("top left", "top", "top right"), ("left", "center", "right"), ("bottom left", "bottom", "bottom right"))

#: Default descriptions for classes users of this tool often type (medvlsm's p7 polyp wording, our own for others)
DESCRIPTIONS: dict[str, str] = {
    "polyp": "a projecting growth of tissue",
    "gland": "a tubular structure lined by epithelial cells",
    "nucleus": "a round or oval dark-stained body inside a cell",
    "nuclei": "round or oval dark-stained bodies inside cells",
    "lung": "a dark air-filled region of the chest",
}


@dataclass(frozen=True)
class PromptAttributes:
    """Words that qualify the class name; ``None`` leaves the attribute out."""

    shape: str | None = None  # "round", "oval", ...
    colour: str | None = None  # "white", "pink", ...
    size: str | None = None  # "tiny" | "small" | "medium" | "large"
    count: str | None = None  # "one", "two", ...
    location: str | None = None  # "top left, center" (3x3 grid cells, comma separated)
    description: str | None = None  # "a projecting growth of tissue"

    def merged(self, other: PromptAttributes) -> PromptAttributes:
        """These attributes, with ``other``'s where ``self`` has none."""
        mine = asdict(self)
        return replace(self, **{k: v for k, v in asdict(other).items() if mine[k] is None and v is not None})


def size_word(area_fraction: float) -> str:
    """medvlsm's size rule: > 0.30 of the image is large, > 0.08 medium, < 0.001 tiny, otherwise small."""
    if area_fraction > 0.30:
        return "large"
    if area_fraction > 0.08:
        return "medium"
    if area_fraction < 0.001:
        return "tiny"
    return "small"


def count_word(count: int) -> str:
    return _COUNT_WORDS[count] if 0 <= count < len(_COUNT_WORDS) else str(count)


def location_word(x_fraction: float, y_fraction: float) -> str:
    """The 3x3 grid cell of a point given as fractions of the image width and height."""
    col = min(int(x_fraction * 3), 2)
    row = min(int(y_fraction * 3), 2)
    return _GRID[row][col]


def attributes_from_mask(mask: np.ndarray) -> PromptAttributes:
    """Size (area fraction of all objects), count (connected components) and location (the grid cell of each
    component's centroid, in raster order of the components, repeats dropped) of a binary or label mask."""
    binary = np.asarray(mask) > 0
    if binary.ndim != 2:
        raise PromptsegError(f"attributes_from_mask needs a 2D mask, got shape {binary.shape}")
    if not binary.any():
        return PromptAttributes(count="zero")
    labels, n = ndimage.label(binary)
    h, w = binary.shape
    cells: list[str] = []
    for cy, cx in ndimage.center_of_mass(binary, labels, range(1, n + 1)):
        cell = location_word((cx + 0.5) / w, (cy + 0.5) / h)
        if cell not in cells:
            cells.append(cell)
    return PromptAttributes(size=size_word(float(binary.mean())), count=count_word(n), location=", ".join(cells))


def expand_prompt(class_name: str, level: str = "p1", attributes: PromptAttributes | None = None) -> str:
    """The medvlsm template ``level`` (p0-p9) for ``class_name`` with the attributes that are known."""
    if level not in LEVELS:
        raise PromptsegError(f"prompt template must be one of {', '.join(LEVELS)}, got {level!r}")
    name = " ".join(class_name.strip().split())
    if not name and level != "p0":
        raise PromptsegError("the prompt is empty; type what to segment, e.g. 'nuclei' or 'gland'")
    a = attributes or PromptAttributes()
    description = a.description or DESCRIPTIONS.get(name.lower())
    index = LEVELS.index(level)

    def words(*parts: str | None) -> str:
        return " ".join(p for p in parts if p)

    if index == 0:
        return ""
    if index == 7:
        return f"{name} which is {description}" if description else name
    # p1-p6, p8, p9 build on the attribute chain: each level adds one word in front of the last
    chain = [a.count, a.size, a.colour, a.shape]
    kept = chain[max(0, 4 - (index - 1)) :] if index <= 5 else chain
    text = words(*kept, name)
    if index == 6 and a.location:
        text += f", located in {a.location} of the image"
    if index >= 8 and description:
        text += f" which is {description}"
    if index == 9 and a.location:
        text += f" located in {a.location} of the image"
    return text
