"""The registration widget's result layers, added on the main thread from the data the worker computed
(:mod:`.results`): the warped moving image, the region pairs, the labels, shapes and landmarks carried over, the
deformation grid, and the run's summary. A rerun on the same pair first removes the layers the previous run added
that are still as it made them."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator

import napari
import napari.layers
import numpy as np
from napari.utils.notifications import show_info

from ...methods.registration import image_diagonal, landmark_errors, placed_before
from ...methods.registration.options import TRE_UNIT
from ...methods.registration.quality import quality_line
from .._common import _levels, placement_over, plane_shape
from .planes import layer_channel_axis, layer_pixel_sizes, layers_turned, spatial_axes
from .results import _Shown
from .shapes import MovingShapes, add_registered_shapes


def _digest(layer: napari.layers.Layer) -> str:
    """A fingerprint of a layer's data (a Shapes layer's: its list of arrays), to notice an edit (a point added, a
    label painted in place) that keeps the same array object."""
    from ...io.images import array_digest

    data = layer.data
    return array_digest(*(data if isinstance(data, list) else [data]))


class _Pixels:
    """Which arrays a layer held (its levels), told apart from arrays made since without keeping them alive (an id
    may be reused once its array is freed; a weak reference is not)."""

    def __init__(self, layer: napari.layers.Layer) -> None:
        self.levels = []
        for level in _levels(layer):
            try:
                self.levels.append(weakref.ref(level))
            except TypeError:  # an array kind without weak references: held (one object, the layer's own)
                self.levels.append(lambda level=level: level)

    def held_by(self, layer: napari.layers.Layer) -> bool:
        """Whether ``layer`` holds these arrays still (not replaced by others)."""
        levels = _levels(layer)
        return len(levels) == len(self.levels) and all(
            ref() is level for ref, level in zip(self.levels, levels, strict=True)
        )


def _with_channels(place: dict, moving_layer: napari.layers.Image) -> dict:
    """``place`` (over the fixed image's rows and columns) for a warped (C, H, W) image: its channels first, on the
    moving layer's channel axis, so that napari's channel slider shows the same channel of both."""
    out = {
        "scale": (moving_layer.scale[0], *place["scale"]),
        "translate": (moving_layer.translate[0], *place["translate"]),
        "units": (moving_layer.units[0], *place["units"]),
    }
    if "affine" in place:  # the channel axis left as it is
        affine = np.eye(4)
        affine[1:, 1:] = place["affine"]
        out["affine"] = affine
    return out


def points_look(layer: napari.layers.Points) -> dict:
    """What the mapped landmarks keep of the moving Points ``layer`` (read on the main thread when a run starts):
    its features and text, one row per point (every moving point is mapped), so that which mapped point is which
    stays said, as landmarks_warped.csv keeps every column of the moving file. Copies: the two layers' are their
    own."""
    text = layer.text
    return {"features": layer.features.copy(), "text": getattr(text, "model_dump", text.dict)()}


class ResultLayers:
    """The result layers of the registration widget's runs: added, tracked, replaced by the next run's."""

    def _remove_previous_results(self, pair: tuple, keep=()) -> None:
        """Remove the layers this widget's previous run added that are still as it made them (same name, same
        data), except those in ``keep`` (this run's inputs: a previous result picked as the fixed or moving image
        stays). A renamed or edited result is the user's work now: it stays, and the new results come beside it;
        so do all the results of another (fixed, moving) ``pair`` than this run's, and of this pair while it held
        other pixels (a layer's data replaced since: they show how those registered)."""
        kept = []
        same_pair = self.result_pair is not None and all(a is b for a, b in zip(self.result_pair, pair, strict=True))
        changed = [
            layer.name for layer, pixels in zip(pair, self.result_pixels, strict=False) if not pixels.held_by(layer)
        ]
        if same_pair and changed:  # the previous results show how the earlier pixels registered: the only record
            show_info(
                f"kept the previous run's results: layer {' and '.join(map(repr, changed))} holds other pixels since"
            )
        for layer, name, digest in self.result_layers if same_pair and not changed else ():
            if not any(existing is layer for existing in self.viewer.layers) or any(k is layer for k in keep):
                continue
            if layer.name == name and _digest(layer) == digest:
                self.viewer.layers.remove(layer)
            else:
                kept.append(layer.name)
        self.result_layers, self.result_pair = [], pair
        self.result_pixels = [_Pixels(layer) for layer in pair]
        if kept:
            show_info(f"kept {', '.join(map(repr, kept))} of the previous run: renamed or edited since")

    def _track(self, layer: napari.layers.Layer) -> None:
        """Remember a result layer as made, to tell at the next run whether the user changed it."""
        self.result_layers.append((layer, layer.name, _digest(layer)))

    @contextlib.contextmanager
    def _all_or_none(self) -> Iterator[None]:
        """Add the run's result layers in place of the previous run's (in the ``with`` block), all or none: a layer
        napari refuses midway (its data, a plugin's listener) takes this run's others out and puts the previous
        results back as they were (layers, the last result, errors and summary), and the failure is the run's."""
        before = list(self.viewer.layers)
        tracked = (self.result_layers, self.result_pair, self.result_pixels)
        try:
            yield
        except BaseException:
            # the record first: putting the layers back may fail again (the listener that refused one)
            self.result_layers, self.result_pair, self.result_pixels = tracked
            self.runner.widget.previous_summary_back()
            self._restore_layers(before)
            raise

    def _restore_layers(self, layers: list) -> None:
        """The viewer's layer list as ``layers`` (in that order): those added since removed, those removed since
        put back where they were."""
        # each step alone: a listener that fails on one layer's removal or insertion (napari has done it by then)
        # must not leave the others out
        for layer in [x for x in self.viewer.layers if not any(x is y for y in layers)]:
            with contextlib.suppress(Exception):
                self.viewer.layers.remove(layer)
        for index, layer in enumerate(layers):
            if not any(x is layer for x in self.viewer.layers):
                with contextlib.suppress(Exception):
                    self.viewer.layers.insert(index, layer)

    def _add_results(
        self,
        shown: _Shown,
        fixed_layer,
        moving_layer,
        labels_layer,
        fixed_factors,
        landmarks,
        truncated,
        shapes: MovingShapes | None,
        landmark_warnings: list[str],
        channel_axis: int | None,
        points_look: dict | None,
    ) -> list[str]:
        """The result layers added (the previous run's removed first) and the widget's record of the run set; returns
        what to notify once all are there."""
        result = shown.result
        said: list[str] = []
        fixed_axes = spatial_axes(fixed_layer, channel_axis)  # a (C, Y, X) fixed layer's rows and columns: its last two
        place = placement_over(fixed_layer, fixed_axes, fixed_factors)
        self._remove_previous_results(
            (fixed_layer, moving_layer),
            keep=(
                fixed_layer,
                moving_layer,
                labels_layer,
                self.fixed_points.layer(),
                self.moving_points.layer(),
                self.moving_shapes.layer(),
            ),
        )
        layer = self.viewer.add_image(
            shown.warped,
            name=f"{moving_layer.name} registered",
            rgb=moving_layer.rgb,
            opacity=0.5,
            blending="translucent",
            contrast_limits=moving_layer.contrast_limits,
            colormap=None if moving_layer.rgb else moving_layer.colormap,
            **(
                place if layer_channel_axis(moving_layer, channel_axis) is None else _with_channels(place, moving_layer)
            ),
        )
        self._track(layer)
        lines = [f"{result.method}: {len(result.pairs)} region pairs" if result.pairs else result.method]
        if result.text_route:
            route = f"text prompts answered by {result.text_route}: {result.text_reason}"
            lines.append(route)
            said.append(route)
        if result.quality:  # readable without landmarks: did the images come to agree, does the field fold
            lines.append(quality_line(result.quality))
        if shown.pair_labels is not None:
            lines.append(f"pair Dice {np.mean(result.pair_dice_before):.3f} -> {np.mean(result.pair_dice_after):.3f}")
            fixed_labels, warped_labels = shown.pair_labels
            visible = self.show_pairs.isChecked()
            pairs_fixed = self.viewer.add_labels(
                fixed_labels, name=f"{moving_layer.name} region pairs (fixed)", opacity=0.4, visible=visible, **place
            )
            pairs_moving = self.viewer.add_labels(
                warped_labels,
                name=f"{moving_layer.name} region pairs (warped)",
                opacity=0.4,
                visible=visible,
                colormap=pairs_fixed.colormap,  # pair k: one colour on both sides
                **place,
            )
            self._track(pairs_fixed)
            self._track(pairs_moving)
            if not visible:
                lines.append("region pairs: hidden layers (fixed, moving warped into the fixed frame)")
        if shown.labels is not None:
            layer = self.viewer.add_labels(shown.labels, name=f"{labels_layer.name} registered", **place)
            self._track(layer)
            before, after = shown.label_counts
            lines.append(f"labels '{labels_layer.name}': {after} of {before} ids inside the fixed image")
        if shown.shapes is not None:
            layer = add_registered_shapes(self.viewer, shapes, shown.shapes, fixed_layer, fixed_axes)
            self._track(layer)
            lines.append(f"shapes '{shapes.name}': {len(shown.shapes)} carried into the fixed frame")
        if shown.grid is not None:
            layer = self.viewer.add_shapes(
                shown.grid,
                shape_type="path",
                edge_color="yellow",
                edge_width=max(result.deformation.fixed_shape) / 400,  # the plane's (a warped (C, H, W) is no (H, W))
                name=f"{moving_layer.name} deformation grid",
                **place,
            )
            self._track(layer)
        errors: dict[str, dict | str] = {}
        if shown.mapped is not None:
            mapped = shown.mapped  # full-resolution pixels of the fixed layer, as the landmarks
            layer = self.viewer.add_points(
                mapped[:, ::-1],
                name=f"{moving_layer.name} landmarks registered",
                face_color="magenta",
                size=8,
                **(points_look or {}),
                **placement_over(fixed_layer, fixed_axes),
            )
            self._track(layer)
        if shown.mapped is not None and landmarks[0] is not None:  # fixed landmarks too: TRE
            a = landmarks[0]
            full_shape = plane_shape(_levels(fixed_layer)[0], fixed_layer.rgb)
            diagonal = image_diagonal(full_shape)
            n = len(a)  # the moving points past the fixed ones have no partner
            # the moving points as the two layers lie unregistered, in the fixed layer's pixels (their own pixel
            # coordinates put a half-size copy's landmarks 80 px "before" from the same points)
            placed, placement = placed_before(
                landmarks[1][:n],
                full_shape,
                plane_shape(_levels(moving_layer)[0], moving_layer.rgb),
                pixel_sizes=layer_pixel_sizes(fixed_layer, moving_layer, channel_axis),
            )
            errors = {
                "unit": TRE_UNIT,
                "before_placement": placement,
                "before": landmark_errors(a, placed, diagonal),
                "after": landmark_errors(a, mapped[:n], diagonal),
            }
            before, after = errors["before"], errors["after"]
            lines.append(
                f"TRE {before['tre_mean']:.2f} -> {after['tre_mean']:.2f} px of the fixed image "
                f"(rTRE {100 * before['rtre_mean']:.2f} % -> {100 * after['rtre_mean']:.2f} %)"
                + (f" over the first {len(a)} landmarks" if truncated else "")
            )
            if placement != "pixel for pixel":
                lines.append(f"TRE before: moving landmarks {placement}")
            if layers_turned(fixed_layer, moving_layer, channel_axis):  # the registration starts from the grids
                lines.append(
                    "TRE before: the two images' pixel grids as stored; the turn between the layers in the viewer "
                    "(their rotate, shear or affine) is not counted"
                )
            if truncated:  # a notification too: the summary's line is easily missed under the TRE
                lines.append(truncated)
                said.append(truncated)
        lines += [f"warning: {w}" for w in (*landmark_warnings, *result.warnings)]
        self.last_result, self.last_errors = result, errors
        self.runner.widget.set_summary("\n".join(lines))
        return said
