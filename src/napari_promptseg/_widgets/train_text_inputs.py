"""What the Train text model widget trains on and what it says of a run, kept apart from its controls: the pairs of
layers (image, Labels, text) as triplets, one per labelled plane, and the summary of a finished run."""

from __future__ import annotations

import numpy as np

from ..errors import PromptsegError
from .oneshot.inputs import is_stack, read_planes


def layer_triplets(
    rows: list[tuple[np.ndarray, bool, np.ndarray, str, str]],
    left_out: list[str] | None = None,
    channel_axis: int | None = None,
    channels: list[int] | None = None,
) -> list:
    """(image data, rgb, labels data, text, name) per table row -> one ArrayTriplet per 2D plane. Of a stack, only
    the planes its labels mark: a plane left unlabelled is one not labelled yet, far more often than one without
    the structure, and was trained as "absent" (``left_out`` gets a line per stack saying how many were left out;
    absence is taught by the balance/negatives settings). ``channel_axis`` 0 (and ``channels``, up to three of
    them): each image's first axis holds channels, (C, Y, X) one image, (C, Z, Y, X) a stack; its labels are on
    its planes (labels drawn over it with its channel axis too mark a pixel on any channel). Without it, a
    (C, Y, X) image was C planes, and its 2D labels "3 image planes but 1 label planes"."""
    from ..methods.text_training import ArrayTriplet

    picked = tuple(channels) if channels is not None else None
    triplets = []
    for image, rgb, labels, text, name in rows:
        if not text.strip():
            raise PromptsegError(f"{name}: type the text that names what the labels mark (e.g. 'polyp')")
        if channel_axis is not None and (rgb or np.ndim(image) < 3):
            kind = "an RGB image" if rgb else "a 2D image"
            raise PromptsegError(
                f"{name}: {kind}, with no channel axis; the channel axis chosen applies to every pair: train "
                "multichannel layers and the others apart, or choose 'none'"
            )
        stacked = is_stack(image, rgb, name, channel_axis)
        planes = read_planes(image, stacked, channel_axis=channel_axis)
        labels = np.asarray(labels)
        if channel_axis is not None and labels.shape == np.shape(image):  # napari's new Labels over it: its shape
            labels = np.any(labels != 0, axis=channel_axis)
        masks = [labels[i] for i in range(labels.shape[0])] if stacked and labels.ndim == 3 else [labels]
        if len(masks) != len(planes):
            if channel_axis is None and not rgb and labels.ndim == 2:  # (C, Y, X) or (Z, Y, X): the user knows
                raise PromptsegError(
                    f"{name}: the image is a stack of {len(planes)} planes (shape {np.shape(image)}) and its labels "
                    "one 2D plane: if its first axis holds channels, choose channel axis 0; if it is a stack, label "
                    "its planes on a Labels layer of its shape"
                )
            raise PromptsegError(f"{name}: {len(planes)} image planes but {len(masks)} label planes")
        # said now, naming the pair: the worker said it once LiteMedSAM and MiniLM had loaded (tens of seconds)
        rows_cols = planes[0].shape[1:3] if channel_axis is not None else planes[0].shape[:2]
        if masks[0].shape != rows_cols:
            size = "x".join(map(str, masks[0].shape))
            raise PromptsegError(
                f"{name}: the labels are {size} but the image {rows_cols[0]}x{rows_cols[1]}: choose the Labels layer "
                "drawn over this image"
            )
        marked = [k for k, mask in enumerate(masks) if mask.any()] if len(masks) > 1 else [0]
        if not marked:
            raise PromptsegError(f"{name}: its labels mark no plane of the stack; label the structure on some planes")
        if not stacked and not masks[0].any() and left_out is not None:  # a Labels layer made, never painted?
            left_out.append(
                f"{name}: its labels mark nothing: trained as an image without '{text.strip()}' (paint it, or "
                "remove the pair)"
            )
        if len(marked) < len(masks) and left_out is not None:
            left_out.append(f"{name}: {len(masks) - len(marked)} of {len(masks)} planes have no labels: left out")
        for k in marked:
            where = f"{name} plane {k}" if stacked else name
            stack = dict(stack=name, plane=k) if stacked else {}  # planes split in blocks of neighbours
            triplets.append(
                ArrayTriplet(
                    planes[k],
                    masks[k] > 0,
                    text.strip(),
                    name=where,
                    channel_axis=0 if channel_axis is not None else None,  # a plane's channels come first
                    channels=picked,
                    mask_source="exact",  # a Labels layer's ids: never cut as a blurred JPEG mask's values
                    **stack,
                )
            )
    if triplets and not any(t.mask.any() for t in triplets):  # said before the models load and encode every image
        raise PromptsegError(
            f"no pair's labels mark anything ({len(rows)} pair{'s' if len(rows) > 1 else ''}): paint the structure "
            "on the Labels layers (any non-zero label is the target)"
        )
    return triplets


def run_summary(result) -> str:
    """A finished run in a line: the validation Dice of the model kept, on how many images, from which split (a
    Dice of the one image a random split held out read as the model's worth), and the run's warnings."""
    split = getattr(result, "split", None) or {}
    if result.best_val_dice is None:
        judged = "no validation images: the last epoch's weights"
    else:
        judged = f"best validation Dice {result.best_val_dice:.3f} at epoch {result.best_epoch} of {result.epochs_run}"
        if split.get("val_images"):
            count = split["val_images"]
            judged += (
                f" on {count} image{'s' if count != 1 else ''} ({split['source']}; {split['train_images']} trained on)"
            )
    refit = result.presence_refit or {}
    if refit.get("kept") and refit.get("val_dice") is not None:  # the model saved is the refitted one
        judged += f", {refit['val_dice']:.3f} with its presence head refitted"
    summary = f"{judged}; model in {result.path} (pick it in the Text prompt widget)"
    return "; ".join([summary, *(f"warning: {w}" for w in result.warnings)])
