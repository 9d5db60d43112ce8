"""Many instances from exemplars: every object in a target that looks like the labelled objects of a reference.

Microscopy needs all nuclei / all glands of an image, not one mask, at the image's own resolution. The pipeline
(each stage measured in ``benchmarks/eval_instances.py``):

1. **working scale** from the exemplars' typical size (:mod:`...tiling`): a typical object spans ~8 % of the model
   input; reference and target are tiled at that scale (same pixel size assumed, or ``object_size`` given);
2. **foreground probability** learned from the reference (:mod:`..pixel_classifier`, ilastik's recipe): a random
   forest on intensity filters plus the segmenter's encoder features, three classes (background, object interior,
   object rim), fitted on the reference's labels;
3. **candidates**, from one of two sources chosen on the reference itself (:mod:`.selection`: the source whose
   candidates reproduce the reference's own objects best): the *watershed* of the foreground's distance transform
   (nuclei: seeds at its maxima, one candidate per object, foreground without a seed a candidate of its own), or
   SAT's *patch correspondence* (:mod:`.correspondence`; glands: regions whose encoder patches resemble the
   reference objects more than its background, whole and split);
4. **one box prompt per candidate**, decoded in batches by the segmenter in the tile's cached embedding, each box
   from the image tokens near it (``local`` decoding); for watershed candidates the decoder's probability and the
   classifier's foreground probability are averaged (``refine="fused"``), limited to pixels no other candidate
   claims; ``"sam"`` keeps the decoder's mask alone, ``"none"`` the candidate region;
5. **stitching** (:mod:`...tiling`): the tile whose core holds an object's centre paints it; a mask mostly covering
   objects already painted is a duplicate; objects down to ``min_area_fraction`` of the smallest whole exemplar
   (one the image border does not cut) are kept, and, with a fully labelled reference, none that is both smaller
   than that exemplar and decoded with less confidence than the least confident whole reference object the chosen
   candidates gave back (measured on the reference by :mod:`.selection`).

"Find all like these" (:func:`find_all_like`) is the same pipeline with the user's boxed objects as exemplars: their
masks come from the segmenter, and background is learned only near the boxes (elsewhere unlabelled objects hide).
"""

from ..metrics import match_instances  # here too: the benchmarks and tests find it with the pipeline
from .exemplars import (
    ExemplarModel,
    count_objects,
    estimate_object_size,
    exemplar_object_size,
    fit_exemplars,
    is_many_objects,
    known_near_labels,
    level_object_size,
    reference_objects,
    stack_object_size,
)
from .find_all import find_all_like
from .pipeline import (
    REFINEMENTS,
    InstanceResult,
    Refinement,
    segment_instances_like,
    segment_with_exemplars,
)

__all__ = [
    "REFINEMENTS",
    "ExemplarModel",
    "InstanceResult",
    "Refinement",
    "count_objects",
    "estimate_object_size",
    "exemplar_object_size",
    "stack_object_size",
    "find_all_like",
    "fit_exemplars",
    "is_many_objects",
    "known_near_labels",
    "level_object_size",
    "match_instances",
    "reference_objects",
    "segment_instances_like",
    "segment_with_exemplars",
]
