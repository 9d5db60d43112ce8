"""The Text prompt widget's worker body (no Qt, no layers): the route and segmenter loaded once, then every plane of
the target layer segmented, as the CLI runs a text prompt, into a :class:`TextOutput` the widget adds as layers."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import CancelledError
from ..methods.text import TextResult, TextRoute
from ..methods.text.trained_channels import channels_said
from ..methods.volume import plane_word, stack_extent
from ._common import task_segmenter
from ._common.text_route import TEXT_WEIGHTS_FIELD


@dataclass
class TextOutput:
    """Results per plane of the target layer, for the main thread to turn into layers."""

    results: list[TextResult]
    stacked: bool
    warnings: list[str] = field(default_factory=list)
    #: a stack's labels, ids linked across its planes (methods.volume.segment_stack, as the CLI); None for 2D
    stack_labels: np.ndarray | None = None
    #: "t" for a time-lapse, whose planes the summary calls frames (the layer's: _common.stack_axis_of)
    stack_axis: str | None = None
    #: the layer's channel axis and channels and where they came from (the trained text model's training or given:
    #: ``TextResult.image_channels``), said in the summary when the model's training chose them
    image_channels: dict | None = None

    @property
    def route_text(self) -> str:
        """The route and why, as the first plane's answer says it: a stack's counts there are that plane's (its
        '0 object(s)' read as the stack's, over a layer of objects found on other planes)."""
        if not self.results:
            return ""
        word = plane_word(self.stack_axis)
        whose = f" ({word} 0 of {len(self.results)})" if self.stacked and len(self.results) > 1 else ""
        return f"route: {self.results[0].route} — {self.results[0].reason}{whose}"

    @property
    def summary(self) -> str:
        """The route and why, then the objects found (a stack's once, however many planes they span)."""
        # as the One-shot widget counts a stack's planes
        where = (
            f" in {stack_extent(len(self.results), self.stack_axis)}, ids linked across them" if self.stacked else ""
        )
        if not self.results:
            return ""
        channels = channels_said(self.image_channels)
        return f"{self.route_text}\n{self.objects} object(s){where}" + (f"\n{channels}" if channels else "")

    @property
    def labels(self) -> np.ndarray:
        """The labels layer's data: the linked stack, or the one plane's labels."""
        return self.stack_labels if self.stack_labels is not None else self.results[0].labels

    def box_corners(self, leading: tuple[int, ...] = ()) -> tuple[list[np.ndarray], list[str], list[float]]:
        """Every plane's boxes as rectangles of a Shapes layer over the labels (corners (row, column), after the
        ``leading`` indices, e.g. a time point's, and a stack's plane), with their phrases and scores."""
        rectangles, phrases, scores = [], [], []
        for k, result in enumerate(self.results):
            at = (*leading, k) if self.stacked else leading
            for (x0, y0, x1, y1), phrase, score in zip(result.boxes, result.phrases, result.scores, strict=True):
                corners = np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=float)
                rectangles.append(np.column_stack([np.tile(np.asarray(at, float), (4, 1)), corners]))
                phrases.append(phrase)
                scores.append(round(float(score), 2))
        return rectangles, phrases, scores

    @property
    def objects(self) -> int:
        """Objects found, a stack's counted once however many planes they span."""
        labels = self.labels
        return int(len(np.unique(labels))) - int((labels == 0).any())


def load_text_route(options: dict, progress, cancel) -> TextRoute:
    """The worker's models: the route chosen from ``options`` (its entries taken out) and, when it needs one, the
    segmenter (put in ``options["segmenter"]``, its download told in the panel)."""
    from ..methods.text import choose_route

    progress(0.0, "loading models")
    model, weights = options.pop("model", None), options.pop("weights", None)
    route = choose_route(
        options.pop("route"),
        library=options.pop("library") or None,
        text_model=options.pop("text_model") or None,
        weights=options.pop("text_weights", None),
        # missing weights are told with the widget's field, not the CLI's --text-weights
        weights_option=TEXT_WEIGHTS_FIELD,
        progress=progress,
        cancel=cancel,
    )
    if route.needs_segmenter(options.get("refine", True)):
        options["segmenter"] = task_segmenter(progress, cancel, model, weights=weights)
    return route


def run_text(
    planes: list[np.ndarray],
    prompt: str,
    *,
    options: dict,
    progress,
    cancel,
    factor: float = 1.0,
    stacked: bool | None = None,
    route: TextRoute | None = None,
    stack_axis: str | None = None,
) -> TextOutput:
    """The worker body (no Qt, no layers): choose the route once (``route``: chosen already, by
    :func:`load_text_route`), then segment every plane; a stack's objects keep their ids across planes (as the
    CLI's). ``factor``: the planes are a pyramid level that many times coarser than full resolution.
    ``stack_axis``: "t" when the planes are a time-lapse's frames (``_common.stack_axis_of``), which the progress,
    the warnings and the summary then call frames."""
    from ..methods.text import segment_text
    from ..methods.volume import segment_stack

    if route is None:
        route = load_text_route(options, progress, cancel)
    channel_axis = options.pop("channel_axis", None)  # of the planes: (C, Y, X) with 0
    results: list[TextResult] = []
    word = plane_word(stack_axis)

    def segment_one(plane: np.ndarray, k: int) -> TextResult:
        if cancel():
            raise CancelledError("cancelled")

        def sub(fraction: float, message: str) -> None:
            progress((k + fraction) / len(planes), message if len(planes) == 1 else f"{word} {k}: {message}")

        # a stack's planes come channels last (segment_stack), a 2D layer as it is: (C, Y, X)
        axis = (None if channel_axis is None else -1) if in_stack else channel_axis
        results.append(
            segment_text(
                plane, prompt, route=route, factor=factor, channel_axis=axis, progress=sub, cancel=cancel, **options
            )
        )
        return results[-1]

    in_stack = stacked if stacked is not None else len(planes) > 1  # a layer of one plane is a stack too
    if in_stack:
        # (C, Y, X) planes stack as (Z, C, Y, X): segment_stack hands them over channels last, as the CLI's
        stack = segment_stack(
            planes,
            segment_one,
            channel_axis=None if channel_axis is None else 1,
            name=options.get("name", "stack"),
            cancel=cancel,
            stack_axis=stack_axis,
        )
        output = TextOutput(results, True, stack.warnings, stack.labels, stack_axis)
    else:
        segment_one(planes[0], 0)
        output = TextOutput(results, stacked=False, warnings=[w for r in results for w in r.warnings])
    progress(1.0, "done")
    return output
