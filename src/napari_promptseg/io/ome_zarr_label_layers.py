"""The labels images of an OME-Zarr (its ``labels/`` group: what `segment --time T` and the other commands write
there) as napari Labels layers over the image's layer, read lazily. No Qt, no napari."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import PromptsegError
from .images import output_stem
from .multiscale import _ome_attributes, open_multiscale

#: (data, keyword arguments, layer type): napari's LayerDataTuple
LayerData = tuple[Any, dict[str, Any], str]


def ome_zarr_label_layers(path: str | Path, image_kwargs: dict[str, Any]) -> tuple[list[LayerData], list[str]]:
    """(layers, problems): a lazy Labels layer per labels image listed in ``path``'s ``labels/`` group that has the
    image's axes, named ``<image> <labels name>``, laid over the image layer ``image_kwargs`` describes (its scale,
    units and axis labels; a labels image of other pixel sizes than the image's is scaled by their ratio). What cannot
    be opened so is one line of ``problems`` each, naming it: the image still opens."""
    path = Path(path)
    names = (_ome_attributes(path / "labels") or {}).get("labels") or []
    if not names:
        return [], []
    image = open_multiscale(path, keep_time=True)
    layer_scale = list(image_kwargs.get("scale") or [1.0] * len(image.axes))
    layers, problems = [], []
    for name in names:
        where = path / "labels" / str(name)
        try:
            labels = open_multiscale(where, role="labels", keep_time=True)
        except (PromptsegError, OSError, ValueError, KeyError) as exc:
            problems.append(f"{where}: its labels cannot be opened ({exc})")
            continue
        if labels.axes != image.axes:
            problems.append(
                f"{where}: labels of axes {labels.axes}, not the image's {image.axes}; napari-ome-zarr opens them"
            )
            continue
        # the file's level-0 transforms, the labels' against the image's: the same grid unless they say otherwise
        own, theirs = labels.level_transforms[0], image.level_transforms[0]
        ratio = [a / b if b else 1.0 for a, b in zip(own["scale"], theirs["scale"], strict=True)]
        scale = [s * r for s, r in zip(layer_scale, ratio, strict=True)]
        shift = [
            (a - b) * s / t if t else 0.0
            for a, b, s, t in zip(own["translation"], theirs["translation"], layer_scale, theirs["scale"], strict=True)
        ]
        kwargs: dict[str, Any] = {
            "name": f"{output_stem(path)} {name}",
            "multiscale": len(labels.levels) > 1,
            "scale": scale,
            "metadata": {"path": str(where)},
        }
        if any(shift):
            kwargs["translate"] = shift
        for key in ("units", "axis_labels"):
            if key in image_kwargs:
                kwargs[key] = image_kwargs[key]
        data = labels.levels if len(labels.levels) > 1 else labels.levels[0]
        layers.append((data, kwargs, "labels"))
    return layers, problems
