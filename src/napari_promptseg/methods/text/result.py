"""What a text prompt found in one image, and which route found it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class TextResult:
    """Instance labels for one image and what produced them."""

    labels: np.ndarray  # (H, W) uint16/uint32, 0 = background, one id per object
    route: str  # "trained" | "groundingdino" | "clipseg" | "library"
    reason: str  # which model/entry answered and why the earlier routes did not
    prompt: str  # what the user typed
    model_prompts: list[str]  # the expanded phrase(s) the model saw
    phrases: list[str] = field(default_factory=list)  # per label id - 1: the phrase that found it
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # per label id - 1, x0 y0 x1 y1
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # per label id - 1
    heatmap: np.ndarray | None = None  # CLIPSeg and trained routes: (H, W) probability (max over phrases)
    matches: list = field(default_factory=list)  # library route: the entries used, with their similarity
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    #: how many times coarser than ``labels`` the heatmap is: a pyramid is read at a level, and its labels come
    #: back at full resolution while the heatmap stays the level's (a slide's at full resolution: gigabytes)
    heatmap_factor: float = 1.0
    #: the channel axis and channels the image was read with and where they came from ("given", or the trained
    #: text model's training: :func:`~.trained_channels.read_as_trained`); None when read with neither
    image_channels: dict | None = None

    @property
    def heatmap_placement(self) -> dict:
        """``scale`` and ``translate`` that lay the heatmap over the labels' pixels in napari:
        ``viewer.add_image(result.heatmap, **result.heatmap_placement)``."""
        from ...tiling import level_placement

        return level_placement(self.heatmap_factor)

    def summary(self) -> dict:
        # the library entries by id: the reason names them by name, which several entries may share
        entries = [
            {"id": m.entry.id, "name": m.entry.name, "similarity": round(float(m.similarity), 4)} for m in self.matches
        ]
        return {
            "route": self.route,
            "reason": self.reason,
            **({"library_entries": entries} if entries else {}),
            "prompt": self.prompt,
            "model_prompts": self.model_prompts,
            "objects": int(len(self.phrases)),
            "phrases": self.phrases,
            "scores": [round(float(s), 4) for s in self.scores],
            "boxes": np.round(self.boxes, 1).tolist(),
            **({"image_channels": self.image_channels} if self.image_channels else {}),
            "warnings": self.warnings,
            # as every other command's report.json names them (it was "timings" here alone)
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }
