"""The exemplars: what the reference (or the boxed examples) teaches, and how big a target's objects are."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ...callbacks import ProgressCallback
from ...errors import CancelledError, PromptsegError
from ...io.reference_pair import check_reference
from ...models.preprocessing import Normalization, ResizeTransform, as_channels_last, full_resolution
from ...models.protocols import Embedding, PromptableSegmenter
from ...tiling import (
    IntensityWindow,
    Tile,
    TileGrid,
    choose_scale,
    label_objects,
    read_tile,
    resize_pixels,
    to_working,
    typical_object_size,
)
from ..labelling_advice import FEW_EXEMPLARS  # fewer objects: a strongly regularised classifier (and advice)
from ..pixel_classifier import (
    EncoderProjection,
    PixelClassifier,
    encoder_pixel_features,
    filter_features,
    hematoxylin_density,
    informative_channels,
    training_classes,
)
from .correspondence import PatchReference

#: reference tiles the classifier learns from at most (those holding the most labelled pixels)
MAX_REFERENCE_TILES = 6


#: fit_exemplars' progress at the end of its steps: reference tiles embedded, their features, the pixel classifier
#: fitted, the size classifier fitted, the exemplars' widths measured (the candidates' comparison takes the rest)
EMBED_END, FEATURES_END, FIT_END, SIZE_FIT_END, WIDTHS_END = 0.3, 0.4, 0.5, 0.55, 0.6


#: a target's own object size may differ from the exemplars' by this factor at most
MAX_SIZE_CHANGE = 3.0


#: a quick foreground covering more of the target than this has not found separate objects
MAX_FOREGROUND = 0.5

#: the classifier's interior probability in the watershed's seed score, per object diameter (the distance transform
#: adds up to a radius), and the heavier weight used when the reference's objects touch one another
#: (``TOUCHING_FRACTION``): its labels then teach that touching objects are separate, and the edge class between
#: them is what splits them. The heavier weight won on the even-numbered DSB targets (0.15 / 0.5 / 1.0; all 25: F1
#: 0.742 -> 0.759); on MoNuSeg (H&E, touching nuclei merged in the masks: no reference object touches another)
#: it lost 2-3 points a slide (benchmarks/README.md, "Splitting touching objects")
INTERIOR_WEIGHT, TOUCHING_INTERIOR_WEIGHT = 0.15, 0.5

#: the reference teaches splitting when at least this fraction of its objects touch another labelled object
TOUCHING_FRACTION = 0.1

#: an object smaller than SPECK_PX pixels and than SPECK_FRACTION of the largest is a stray pixel or two of the
#: drawing or thresholding: two lungs with a 1-px speck (a Shenzhen CXR mask), a brain structure with three, were
#: read as a reference of many objects, and instances of a 2 px object size were searched for
SPECK_PX, SPECK_FRACTION = 10, 0.1

#: index of the hematoxylin density in an RGB image's classifier input (after the three colour channels)
STAIN_CHANNEL = 3


def reference_objects(labels: np.ndarray) -> np.ndarray:
    """Instance labels from a labels array (kept) or a mask, 0/1 or 0/255 (its connected components)."""
    return label_objects(labels)


def exemplar_object_size(objects: np.ndarray, object_size: float | None = None) -> float:
    """The typical object diameter (image pixels) exemplars are fitted at: ``object_size`` when given (typed by the
    user), else that of the reference's ``objects`` (:func:`reference_objects`). The one rule of
    :func:`fit_exemplars` and of what reads a target before fitting (the One-shot widget's pyramid level)."""
    return float(object_size) if object_size else typical_object_size(objects)


def touching_fraction(labels: np.ndarray) -> float:
    """The fraction of labelled objects that touch another labelled object (8-connected); 0 without objects."""
    labels = np.asarray(labels)
    touching = []
    for a, b in (
        (labels[:, :-1], labels[:, 1:]),
        (labels[:-1, :], labels[1:, :]),
        (labels[:-1, :-1], labels[1:, 1:]),
        (labels[:-1, 1:], labels[1:, :-1]),
    ):
        meet = (a > 0) & (b > 0) & (a != b)
        touching += [a[meet], b[meet]]
    ids = np.unique(labels[labels > 0])
    return len(np.unique(np.concatenate(touching))) / len(ids) if len(ids) else 0.0


def count_objects(labels: np.ndarray) -> int:
    """Objects in reference labels: instance ids, or the components of a mask."""
    return int(np.count_nonzero(np.unique(label_objects(labels))))


def object_areas(objects: np.ndarray, chunk: int = 1 << 18) -> np.ndarray:
    """The pixel count of each object of ``objects`` (ids > 0, in id order; ids absent are not listed), counted in
    one pass: np.unique's sort of every pixel took 4 s of a 61 Mpx mask's "many objects?" decision. Float ids, or
    ids far beyond the pixel count, are sorted."""
    objects = np.asarray(objects)
    # (uint64 does not cast to bincount's int64)
    if objects.dtype.kind not in "iub" or objects.dtype == np.uint64 or not objects.size or objects.min() < 0:
        ids, areas = np.unique(objects, return_counts=True)
        return areas[ids > 0]
    top = int(objects.max())
    if top > 4 * objects.size + 2**16:
        ids, areas = np.unique(objects, return_counts=True)
        return areas[ids > 0]
    flat = objects.reshape(-1)
    counts = np.zeros(top + 1, np.int64)
    for start in range(0, flat.size, chunk):  # by chunks: bincount casts its input to int64 (8 bytes a pixel)
        counts += np.bincount(flat[start : start + chunk], minlength=top + 1)
    return counts[1:][counts[1:] > 0]


def is_many_objects(labels: np.ndarray, min_objects: int = 3) -> bool:
    """True when reference labels hold several objects (instance ids, or several components of a mask): the
    reference then asks for instances, not one region. Specks (see :data:`SPECK_PX`) are not counted."""
    labels = np.asarray(full_resolution(labels))
    if labels.ndim != 2:
        return False
    areas = object_areas(label_objects(labels))
    specks = (areas < SPECK_PX) & (areas < SPECK_FRACTION * areas.max(initial=0))
    return int(np.count_nonzero(~specks)) >= min_objects


@dataclass
class _Timer:
    timings: dict[str, float] = field(default_factory=dict)

    def add(self, key: str, t0: float) -> None:
        self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - t0


@dataclass
class ExemplarModel:
    """What the exemplars taught: the working scale's object size, the object statistics and the classifier."""

    object_size: float  # typical object diameter, image pixels
    min_area: float  # smallest exemplar the image border does not cut, image pixels
    max_area: float  # largest exemplar, image pixels
    median_area: float
    classifier: PixelClassifier
    projection: EncoderProjection | None
    use_encoder: bool
    normalize: Normalization
    channels: tuple[int, ...]  # image channels the filters read (one for gray stored as RGB)
    standardize: bool = False  # colour images: classifier input z-scored per channel over each image
    stain: bool = False  # RGB images: the classifier also reads the hematoxylin density (a channel after the image's)
    size_classifier: PixelClassifier | None = None  # filters only: a quick foreground to measure targets' objects
    reference_width: float = 0.0  # that foreground's typical object width on the reference, image pixels
    background: np.ndarray | None = None  # grey references: their background level (targets are shifted to it)
    candidates: str = "watershed"  # how targets are cut into candidate objects (tile_objects._candidates)
    candidate_scores: dict[str, float] = field(default_factory=dict)  # F1 of each source on the reference
    interior_weight: float = INTERIOR_WEIGHT  # the watershed's seed score: interior probability per diameter
    patch_reference: PatchReference | None = None  # the reference tile's patches, for correspondence candidates
    #: the decoder's confidence for the least confident whole reference object the chosen candidates found
    #: (:func:`.selection.choose_candidates`); target objects decoded with less and smaller than ``min_area`` are not
    #: kept. 0 = no bound: labels incomplete, fewer than ``FEW_EXEMPLARS`` objects, ``candidates`` given rather than
    #: chosen, or no whole reference object found again
    min_score: float = 0.0

    @property
    def filter_channels(self) -> tuple[int, ...]:
        """The channels of the classifier input that the filters read (:func:`_classifier_input`)."""
        return _filter_channels(self.channels, self.stain)


def _filter_channels(channels: tuple[int, ...], stain: bool) -> tuple[int, ...]:
    return channels + ((STAIN_CHANNEL,) if stain else ())


def _tile_inputs(
    segmenter: PromptableSegmenter,
    image: np.ndarray,
    tile: Tile,
    window: IntensityWindow,
    name: str,
    skip_blank: bool = False,
    embed: bool = True,
) -> tuple[Embedding | None, np.ndarray] | None:
    """Embedding of one tile and its pixels at the working scale (what the encoder saw, before padding); None for
    a flat tile with ``skip_blank`` (the empty canvas of a mosaic or a slide scan holds no object). Without
    ``embed`` (the caller reads no features), no encoder pass: no embedding, the same working pixels."""
    pixels = read_tile(image, tile, window)
    if skip_blank and pixels.min() == pixels.max():
        return None
    if not embed:
        return None, resize_pixels(pixels, ResizeTransform(pixels.shape[:2], segmenter.input_size).resized_shape)
    embedding = segmenter.embed(pixels, normalize="none", name=f"{name} tile {tile.index}")
    return embedding, resize_pixels(pixels, embedding.transform.resized_shape)


def _pixel_features(
    channels: tuple[int, ...],
    projection: EncoderProjection | None,
    embedding: Embedding,
    working: np.ndarray,
    use_encoder: bool,
) -> np.ndarray:
    feats = [filter_features(working, channels)]
    if use_encoder and projection is not None:
        transform = embedding.transform
        feats.append(encoder_pixel_features(embedding.features, projection, transform.input_size, working.shape[:2]))
    return np.concatenate(feats, axis=-1)


def _labels_to_working(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of labels to the working grid (pixel centres, as torch's align_corners=False)."""
    h, w = labels.shape
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * h / shape[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * w / shape[1]).astype(np.int64), w - 1)
    return labels[np.ix_(rows, cols)]


def border_ids(labels: np.ndarray) -> np.ndarray:
    """Ids of the objects the image border cuts (0 included when background reaches the border)."""
    return np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))


def _whole_object_areas(labels: np.ndarray, ids: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """Areas of the objects the image border does not cut (all of them if every object touches it): a gland cut
    to a sliver by the border is not a small gland (GlaS reference: its two smallest objects are 0.3 % of the
    median, its smallest whole one 72 %)."""
    whole = ~np.isin(ids, border_ids(labels))
    return areas[whole] if whole.any() else areas


def known_near(boxes: np.ndarray, shape: tuple[int, int], ring: float) -> np.ndarray:
    """Where the labels are complete when only some objects are labelled (boxed examples, a partly labelled
    reference): each object's box (x0, y0, x1, y1) grown by ``ring`` pixels. Its surroundings are background the
    user saw; farther away, unlabelled objects like it may hide, so nothing there is taught as background."""
    h, w = shape
    known = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in np.asarray(boxes, float).reshape(-1, 4):
        rows = slice(int(max(0, y0 - ring)), int(min(h, y1 + ring + 1)))
        known[rows, int(max(0, x0 - ring)) : int(min(w, x1 + ring + 1))] = True
    return known


def known_near_labels(labels: np.ndarray) -> np.ndarray:
    """:func:`known_near` for the labelled objects of a partly labelled reference, with a ring of half their typical
    size (as "find all like these" learns from boxed examples)."""
    labels = reference_objects(labels)
    boxes = [(sl[1].start, sl[0].start, sl[1].stop - 1, sl[0].stop - 1) for sl in ndimage.find_objects(labels) if sl]
    if not boxes:
        raise PromptsegError("reference: no labelled object; label at least one object (non-zero pixels)")
    return known_near(np.array(boxes, float), labels.shape[:2], 0.5 * typical_object_size(labels))


def fit_exemplars(
    segmenter: PromptableSegmenter,
    image: np.ndarray,
    labels: np.ndarray,
    *,
    known: np.ndarray | None = None,
    object_size: float | None = None,
    use_encoder: bool = True,
    normalize: Normalization = "auto",
    candidates: str = "auto",
    few_exemplars: bool | None = None,
    name: str = "reference",
    timer: _Timer | None = None,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
) -> ExemplarModel:
    """Learn the exemplars' objects from ``image`` (H, W, C) and ``labels`` (instance ids). ``known``: where the
    labels are complete (default everywhere); only there is unlabelled ground taught as background.

    ``candidates``: how targets are cut into candidate objects (``watershed`` of the classifier's foreground, or
    patch ``correspondence``); ``auto`` measures both on the reference itself (a window around its labels) when its
    labels are complete (:func:`.selection.choose_candidates`), else keeps the watershed. ``few_exemplars``: force
    (or forbid) the regularised classifier of few exemplars (default: fewer than ``FEW_EXEMPLARS`` objects).

    ``progress(fraction, message)`` is told of every reference tile embedded and learnt, and of the candidates'
    comparison; ``cancel()`` is asked between them (:class:`~napari_promptseg.errors.CancelledError`). Neither
    changes the result.
    """
    timer = timer or _Timer()
    report = progress or (lambda fraction, message: None)

    def step(fraction: float, message: str) -> None:
        if cancel is not None and cancel():
            raise CancelledError("cancelled")
        report(fraction, f"{name}: {message}")

    image = as_channels_last(image, name=name)  # (H, W) or (H, W, C): the console passes either
    # the rule every way of use checks a reference by: called directly, a blank image was fitted
    labels = reference_objects(check_reference(image, labels, name, f"{name} labels"))
    ids, areas = np.unique(labels[labels > 0], return_counts=True)
    size = exemplar_object_size(labels, object_size)
    scale = choose_scale(image.shape, segmenter.input_size, size, source="reference objects")
    grid = TileGrid(image.shape, scale.tile, scale.overlap)
    window = IntensityWindow.measure(image, normalize, background=True, name=name)
    known_mask = np.ones(labels.shape, bool) if known is None else np.asarray(known, bool)
    # tiles with the most labelled pixels teach the classifier
    counts = [int((labels[t.slices] > 0).sum()) for t in grid]
    order = sorted(range(len(grid)), key=lambda i: (-counts[i], i))
    chosen = [grid.tiles[i] for i in order[:MAX_REFERENCE_TILES] if counts[i] > 0]
    t0 = time.perf_counter()
    embeddings, workings = [], []
    for k, tile in enumerate(chosen):
        step(EMBED_END * k / len(chosen), f"embedding reference tile {k + 1}/{len(chosen)}")
        emb, work = _tile_inputs(segmenter, image, tile, window, name)
        embeddings.append(emb)
        workings.append(work)
    timer.add("reference_embed_s", t0)
    t0 = time.perf_counter()
    projection = None
    if use_encoder:
        grids = []
        for emb, work in zip(embeddings, workings, strict=True):
            g = emb.features.shape[-1]
            per_cell = emb.transform.input_size / g
            gh, gw = int(np.ceil(work.shape[0] / per_cell)), int(np.ceil(work.shape[1] / per_cell))
            grids.append(emb.features[0, :, :gh, :gw].float().permute(1, 2, 0))
        projection = EncoderProjection.fit(grids)
    rim = max(1, round(scale.scale * size / 12))
    channels = informative_channels(image)
    # stained slides (colour) differ in stain strength: the classifier sees each image z-scored per channel. Not
    # fluorescence: with a dark background, mean and spread follow the number of objects (measured: DSB F1 0.67 ->
    # 0.20 z-scored; MoNuSeg Dice 0.25 -> 0.69 z-scored; benchmarks/README.md)
    standardize = len(channels) > 1
    # H&E nuclei: the hematoxylin density joins the filters (measured on MoNuSeg, all 11 slides: Dice 0.667 ->
    # 0.718, F1 0.462 -> 0.527; benchmarks/README.md)
    stain = standardize and image.shape[-1] == 3
    feats, classes = [], []
    for k, (tile, emb, work) in enumerate(zip(chosen, embeddings, workings, strict=True)):
        step(EMBED_END + (FEATURES_END - EMBED_END) * k / len(chosen), f"features of tile {k + 1}/{len(chosen)}")
        tile_labels = _labels_to_working(labels[tile.slices], work.shape[:2])
        tile_known = _labels_to_working(known_mask[tile.slices], work.shape[:2])
        cls = training_classes(tile_labels, rim)
        cls = np.where(tile_known | (tile_labels > 0), cls, 255).astype(np.uint8)  # 255 = not taught
        feats.append(
            _pixel_features(
                _filter_channels(channels, stain),
                projection,
                emb,
                _classifier_input(window, work, standardize, stain=stain),
                use_encoder,
            )
        )
        classes.append(cls)
    flat_known = [c != 255 for c in classes]
    taught_x = [f[k] for f, k in zip(feats, flat_known, strict=True)]
    taught_y = [c[k] for c, k in zip(classes, flat_known, strict=True)]
    # a few exemplars (find all like these: 2-5 boxes) are memorised pixel by pixel by deep trees; shallow trees
    # with large leaves generalise from them (measured: recall 0.08 -> 0.6 from 3 nuclei, benchmarks/README.md)
    few = len(ids) < FEW_EXEMPLARS if few_exemplars is None else few_exemplars
    step(FEATURES_END, "fitting the pixel classifier")
    classifier = (PixelClassifier(max_depth=5, min_leaf=50) if few else PixelClassifier()).fit(taught_x, taught_y)
    n_filters = feats[0].shape[-1] - (projection.components.shape[1] if projection is not None else 0)
    step(FIT_END, "fitting the size classifier")
    size_classifier = PixelClassifier(trees=12, max_depth=10).fit([x[:, :n_filters] for x in taught_x], taught_y)
    widths = []
    for k, f in enumerate(feats):
        step(SIZE_FIT_END + (WIDTHS_END - SIZE_FIT_END) * k / len(feats), f"object widths of tile {k + 1}/{len(feats)}")
        widths.append(_object_widths(size_classifier.predict(f[..., :n_filters])))
    step(WIDTHS_END, "measuring the exemplars")
    reference_width = _median_width(np.concatenate(widths)) / scale.scale
    # the labels' own widths, measured on their mask (a float copy of the whole reference held 0.5 GB at 8k x 8k)
    true_width = _median_width(_foreground_widths(labels > 0))
    if len(channels) > 1 or not 1 / SIZE_TOLERANCE <= reference_width / max(true_width, 1e-6) <= SIZE_TOLERANCE:
        # targets' objects are measured only where the quick foreground measures the exemplars right, and on
        # single-channel images: stain variation between colour slides misleads it (benchmarks/README.md)
        size_classifier, reference_width = None, 0.0
    patch_reference = PatchReference.from_tile(embeddings[0], labels[chosen[0].slices] > 0)
    timer.add("fit_classifier_s", t0)
    model = ExemplarModel(
        object_size=size,
        min_area=float(_whole_object_areas(labels, ids, areas).min()),
        max_area=float(areas.max()),
        median_area=float(np.median(areas)),
        classifier=classifier,
        projection=projection,
        use_encoder=use_encoder,
        normalize=normalize,
        channels=channels,
        standardize=standardize,
        stain=stain,
        size_classifier=size_classifier,
        reference_width=reference_width,
        background=None if standardize else window.background_level(),
        patch_reference=patch_reference,
        candidates="watershed" if candidates == "auto" else candidates,
        interior_weight=TOUCHING_INTERIOR_WEIGHT if touching_fraction(labels) >= TOUCHING_FRACTION else INTERIOR_WEIGHT,
    )
    if candidates == "auto" and known is None:
        from .selection import choose_candidates

        t0 = time.perf_counter()
        model.candidates, model.candidate_scores, min_score = choose_candidates(
            segmenter,
            model,
            image,
            labels,
            progress=lambda fraction, message: report(WIDTHS_END + (1 - WIDTHS_END) * fraction, message),
            cancel=cancel,
        )
        # the least confident of a handful of objects is no bound on the next image's: few exemplars get none
        model.min_score = min_score if len(ids) >= FEW_EXEMPLARS else 0.0
        timer.add("choose_candidates_s", t0)
    step(1.0, "exemplars learnt")
    return model


def _classifier_input(
    window: IntensityWindow,
    working: np.ndarray,
    standardize: bool,
    background: np.ndarray | None = None,
    stain: bool = False,
) -> np.ndarray:
    """What the pixel classifiers see. Colour: z-scored per channel, and with ``stain`` (RGB) the hematoxylin
    density as one more channel (``STAIN_CHANNEL``). Grey, on a target: shifted so that its
    background lies where the reference's did (``background``, :meth:`IntensityWindow.background_level`). A DSB
    target with a camera offset (a background of 34/255 where the reference's is black) was all foreground to the
    reference's classifier and gave no object at all. The encoder keeps the plain window: its input re-scaled at
    the background lost 0.1 F1 in "find all"."""
    if standardize:
        z = window.standardize(working)
        return np.concatenate([z, hematoxylin_density(working)], axis=-1) if stain else z
    return working if background is None else window.with_background(working, background)


def _object_widths(proba: np.ndarray, min_area: float = 9.0) -> np.ndarray:
    """Widths (working pixels: twice the largest inscribed radius) of the foreground components of class
    probabilities. Touching objects merge into one component but keep their width, so this measures single
    objects where areas would measure clusters."""
    return _foreground_widths(proba[..., 0] < 0.5, min_area)


def _foreground_widths(foreground: np.ndarray, min_area: float = 9.0) -> np.ndarray:
    """Widths (pixels: twice the largest inscribed radius) of the components of a 2D mask of at least ``min_area``
    pixels, its holes filled (as the candidates: texture is not an object's edge), in the components' order.

    Measured where the mask is, not over the whole image: the mask's bounding box plus one pixel (what lies outside
    is background joined to the border), and each component's distances in its own box plus its shorter side (a
    pixel's nearest background is no farther than the component's edge along its row or column, whatever other
    objects lie beyond). The same numbers as ``binary_fill_holes`` and a distance transform of the whole image,
    which took 15 s and over 1 GB on a 4k x 4k reference's labels."""
    rows, cols = np.flatnonzero(foreground.any(axis=1)), np.flatnonzero(foreground.any(axis=0))
    if len(rows) == 0:
        return np.zeros(0)
    h, w = foreground.shape
    box = (slice(max(0, rows[0] - 1), min(h, rows[-1] + 2)), slice(max(0, cols[0] - 1), min(w, cols[-1] + 2)))
    fg = _fill_holes(foreground[box])
    comps, n = ndimage.label(fg)
    widths, areas = np.zeros(n), np.zeros(n)
    h, w = fg.shape
    for k, (ys, xs) in enumerate(ndimage.find_objects(comps)):
        m = min(ys.stop - ys.start, xs.stop - xs.start) + 1
        y0, x0 = max(0, ys.start - m), max(0, xs.start - m)
        near = (slice(y0, min(h, ys.stop + m)), slice(x0, min(w, xs.stop + m)))
        own = comps[near] == k + 1
        dist = ndimage.distance_transform_edt(np.pad(fg[near], 1))[1:-1, 1:-1]
        widths[k] = 2 * dist[own].max()
        areas[k] = own.sum()
    return widths[areas >= min_area]


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``ndimage.binary_fill_holes(mask)``: background not joined (4-connected) to the border becomes foreground;
    by labelling the background once rather than dilating from the border until nothing changes (seconds on a
    large mask)."""
    background, _ = ndimage.label(~mask)
    joined = np.zeros(int(background.max()) + 1, bool)
    joined[0] = True  # the foreground (kept as it is)
    for edge in (background[0], background[-1], background[:, 0], background[:, -1]):
        joined[edge] = True
    return mask | ~joined[background]


def _median_width(widths: np.ndarray) -> float:
    return float(np.median(widths)) if len(widths) else 0.0


#: a target's objects are measured; outside this ratio to the exemplars' size, the target gets its own scale
SIZE_TOLERANCE = 1.3


MAX_SAMPLE_TILES = 4


def estimate_object_size(
    model: ExemplarModel, image: np.ndarray, input_size: int, window: IntensityWindow | None = None
) -> tuple[float, str]:
    """Typical object diameter in ``image`` (pixels): the exemplars' size, unless a quick foreground (filters only,
    at the exemplars' working scale, on up to 4 tiles) shows objects of another width. Microscopes image the same
    cells at several magnifications; one reference must serve them all. ``window``: the image's intensity window
    when the caller has measured it.

    A new size is kept only when it is consistent: measured again at the scale it proposes, the objects must look
    as the exemplars' objects did on the reference. The texture inside nuclei five times larger than the
    exemplars' reads as small objects at the exemplars' scale, and not at the proposed one."""
    if model.size_classifier is None or model.reference_width <= 0:
        return model.object_size, "reference objects"
    window = window or IntensityWindow.measure(image, model.normalize, background=True)
    width = _quick_width(model, image, input_size, window, model.object_size)
    if width <= 0:
        return model.object_size, "reference objects"  # nothing, or everything, looks like an object: no measure
    ratio = width / model.reference_width
    if 1 / SIZE_TOLERANCE <= ratio <= SIZE_TOLERANCE:
        return model.object_size, "reference objects"
    ratio = float(np.clip(ratio, 1 / MAX_SIZE_CHANGE, MAX_SIZE_CHANGE))
    proposed = model.object_size * ratio
    again = _quick_width(model, image, input_size, window, proposed) / (model.reference_width * ratio)
    if not 1 / SIZE_TOLERANCE**2 <= again <= SIZE_TOLERANCE**2:
        return model.object_size, f"reference objects (a size x{ratio:.2f} was measured, but not confirmed)"
    return proposed, f"reference objects, rescaled x{ratio:.2f} to the target's objects"


def stack_size_source(stack_axis: str | None = None) -> str:
    """The working scale's ``source`` for a stack's planes decoded at :func:`stack_object_size` (not a size the user
    gave); a time-lapse's (``stack_axis`` "t") in its words: "measured on the time-lapse's middle frame"."""
    from ..volume.stacks import plane_word

    return f"measured on the {'time-lapse' if stack_axis == 't' else 'stack'}'s middle {plane_word(stack_axis)}"


#: :func:`stack_size_source` of a z-stack (or of a stack whose axis is not named)
STACK_SIZE_SOURCE = stack_size_source()


def stack_object_size(
    model: ExemplarModel,
    planes: Sequence,
    input_size: int,
    read: Callable[[object], np.ndarray] = as_channels_last,
) -> float:
    """One object size for every plane of a stack, measured on its middle plane (``read`` turns a plane into an
    (H, W, C) array). A stack's planes share one magnification, and a plane near an end (caps of nuclei, little
    texture) can mislead a size measured plane by plane (measured: F1 0.11 on the first plane of a nuclei stack,
    0.86 on the middle one)."""
    return estimate_object_size(model, read(planes[len(planes) // 2]), input_size)[0]


def level_object_size(model: ExemplarModel, object_size: float | None, factor: float = 1.0) -> float | None:
    """The objects' size in the pixels of a target read ``factor`` times coarser than full resolution (a pyramid
    level): ``object_size`` (full-resolution pixels, e.g. typed by the user) when given; else, on a coarser level,
    the exemplars' size (the target is not measured there: its objects are smaller than the exemplars by the
    factor); else None (measured on the target). The reference is always fitted at full resolution."""
    size = object_size or (model.object_size if factor != 1.0 else None)
    return None if size is None else size / factor


def _quick_width(
    model: ExemplarModel, image: np.ndarray, input_size: int, window: IntensityWindow, object_size: float
) -> float:
    """Median object width (image pixels) of the quick foreground at the working scale of ``object_size``; 0 when
    nothing, or nearly everything, is foreground."""
    scale = choose_scale(image.shape, input_size, object_size)
    grid = TileGrid(image.shape, scale.tile, scale.overlap)
    picks = np.unique(np.linspace(0, len(grid) - 1, min(MAX_SAMPLE_TILES, len(grid))).round().astype(int))
    widths, fg = [], []
    for i in picks:
        work = to_working(read_tile(image, grid.tiles[int(i)], window), scale.scale)
        proba = model.size_classifier.predict(
            filter_features(
                _classifier_input(window, work, model.standardize, model.background, model.stain), model.filter_channels
            )
        )
        widths.append(_object_widths(proba))
        fg.append(float((proba[..., 0] < 0.5).mean()))
    if not 0.002 <= float(np.mean(fg)) <= MAX_FOREGROUND:
        return 0.0
    return _median_width(np.concatenate(widths)) / scale.scale


def _check_reference_labels(ref_hwc: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Reference labels checked as every reference is (:func:`~...io.reference_pair.check_reference`); returned as
    instance labels (ids kept, a mask's components numbered)."""
    return reference_objects(check_reference(ref_hwc, labels, "reference", "reference labels"))
