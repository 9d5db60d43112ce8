"""The reference image and mask of oneshot and library: a mask file read as 2D ids, checked against its image, and
a stack reference's plane."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import PromptsegError

if TYPE_CHECKING:
    import numpy as np  # lazy at run time: the CLI starts without it

#: below this many pixels per one-colour region on average, a colour "label image" is a photograph: a colour label
#: image's regions are its objects (the sample nuclei's: 308 px), a photo's are specks (1-6 px)
PHOTO_REGION_AREA = 8.0


def _mask_file_labels(mask: np.ndarray, path: Path, name: str) -> np.ndarray:
    """A mask or label image as read from the file ``path``, as 2D ids: a lossy file's (a JPEG: compression blurs
    its edges and adds faint values; masks such as GlaS's and Kvasir's are grey JPEGs in three channels) its first
    channel cut at 127 (:func:`..io.label_ids.mask_foreground`, the rule every reader of masks follows), as one
    binary object; any other's exact values as :func:`..io.images.label_image_2d` reads them (a grey RGB image's
    first channel, a colour label image's colours as ids; a colour photograph, all specks of one colour, refused)."""
    import numpy as np

    from ..io.images import label_image_2d, mask_file_source, mask_foreground

    mask = np.asarray(mask)
    if mask.dtype == np.uint8 and mask_file_source(path) == "lossy":
        return mask_foreground(mask[..., 0] if mask.ndim == 3 else mask, source="lossy")
    labels = label_image_2d(mask, name)
    coloured = mask.ndim == 3 and mask.shape[-1] in (3, 4) and not (mask[..., :3] == mask[..., :1]).all()
    if coloured and labels.max() > 0:
        # a photo's one-colour regions are specks of a few pixels (109918 of them on the sample pair's moving image,
        # all carried over as objects); a colour label image's are its objects
        mean_area = np.count_nonzero(labels) / int(labels.max())
        if mean_area < PHOTO_REGION_AREA:
            raise PromptsegError(
                f"{name}: a colour image of {int(labels.max())} one-colour regions of {mean_area:.1f} px on "
                "average, a photograph or a rendered picture, not a label image; give a label image (an integer id "
                "per object, 0 for none) or a colour one (one colour per object on black)"
            )
    return labels


def _reference_labels(
    mask: np.ndarray,
    image: np.ndarray,
    path: Path,
    image_path: Path,
    channel_axis: int | None = None,
    channels: list[int] | None = None,
    options: tuple[str, str] = ("--reference", "--reference-mask"),
) -> np.ndarray:
    """Reference mask/labels (file ``path``) of the reference image ``image`` (file ``image_path``) as 2D (0 =
    background, ids kept, a colour label image's colours as ids); JPEG masks are thresholded at 127 (compression blurs
    their edges), so they come back as one binary object. A bad pair (a mask of another size, of nothing, of every
    pixel; an image of one value) is refused naming its file(s), in CLI terms:
    ``options`` are the subcommand's names for the image and its mask."""
    import numpy as np

    from ..io.reference_pair import check_reference
    from ..models.preprocessing import as_channels_last, read_axes

    shape = np.shape(image)
    if len(shape) > 3 or (len(shape) == 3 and channel_axis is None and shape[-1] not in (1, 2, 3, 4)):
        raise PromptsegError(
            f"{options[0]} {image_path}: {len(shape)}D array of shape {shape}, its axes read as {read_axes(shape)}; "
            "a reference is one 2D image (Y, X) or (Y, X, C): save the plane (of the time point) that holds the "
            "objects as its own file, or give --channel-axis if an axis holds channels"
        )
    hwc = as_channels_last(image, channel_axis=channel_axis, channels=channels, name=f"{options[0]} {image_path}")
    mask = _mask_file_labels(mask, path, f"{options[1]} {path}")
    # named here in CLI terms: segment_like's refusal came out under the target's name
    return check_reference(hwc, mask, f"{options[0]} {image_path}", f"{options[1]} {path}")


def stack_reference_plane(
    path: Path,
    mask_path: Path,
    reference: object,
    mask: object,
    channel_axis: int | None,
    chosen: int | None,
    options: tuple[str, str, str] = ("--reference", "--reference-mask", "--reference-plane"),
) -> tuple[object, object, int | None]:
    """A reference and its mask as read, or, for a stack reference (Z, Y, X[, C]), its plane the mask labels (or
    ``chosen``, the plane option) and that plane's mask, as the One-shot and Text widgets take a stack layer's (one
    code path: :func:`..methods.volume.reference_plane`); and which plane (None: a 2D reference). ``options``: the
    subcommand's names for the image, its mask and the plane. A stack was refused as 'a reference is one 2D image'
    while the widgets took it."""
    import numpy as np

    from ..io.multiscale import stack_axes
    from ..methods.volume import as_stack, reference_plane

    image_option, mask_option, plane_option = options
    axes = stack_axes(path)
    stack, _ = as_stack(reference, channel_axis=channel_axis, name=f"{image_option} {path}", axes=axes.read)
    if stack is None:
        return reference, mask, None
    mask, shape = np.asarray(mask), tuple(np.shape(stack)[:3])
    word = "frame" if axes.planes == "t" else "plane"
    if mask.shape not in (shape, shape[1:]):
        raise PromptsegError(
            f"{mask_option} {mask_path}: labels of shape {mask.shape}; {image_option} {path} is a stack of "
            f"{shape[0]} {word}s of {shape[2]} x {shape[1]} px: give the stack's labels {shape} or one {word}'s "
            f"{shape[1:]}"
        )
    if not (mask > 0).any():
        raise PromptsegError(
            f"{mask_option} {mask_path}: no labelled pixel (all 0); label the objects to find (non-zero pixels)"
        )
    z = reference_plane(
        mask,
        shape[0],
        chosen,
        labels_name=f"{mask_option} {mask_path}",
        image_name=f"{image_option} {path}",
        stack_axis=axes.planes,
        chosen_as=plane_option + " {plane}",
        to_choose=f"give {plane_option} with the {{word}} to use",
    )
    return np.asarray(stack[z]), mask[z] if mask.ndim == 3 else mask, z
