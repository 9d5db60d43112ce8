"""Tell2Reg-style registration from corresponding regions, and an intensity (SimpleITK) baseline/refinement.

Pipeline of :func:`register` with ``method="prompts"`` (see :mod:`..regions` for the region pairs):

1. region pairs from the same prompts (default, offline: automatic LiteMedSAM regions from a grid of box prompts,
   matched greedily by prototype cosine similarity >= 0.8 as in Tell2Reg; the whole-image box gives a "global"
   pair; then the fixed regions' boxes, mapped through the global-pair affine, prompt the moving image again and
   are kept when their prototypes agree; or text prompts / one-shot references on both images, whose objects pair
   within their phrase, :mod:`..prompt_regions`);
2. affine: candidate starts (all pair centroids by least squares, each of the largest pairs alone, identity, and
   the similarity from the second moments of the two largest pairs), each refined briefly by maximising the Dice of
   the warped moving masks with their fixed partners; the candidate whose transform aligns the *images* best
   (:func:`alignment_score`, normalised mutual information on the fixed grid; region-pair Dice only breaks ties)
   wins, and is refined on the pairs it aligns (Dice >= ``inlier_dice``), coarse to fine (torch, Adam); implausible
   candidates (reflection, rotation > ``max_rotation_deg``, scale > ``max_scale``) lose. Symmetric regions (a round
   section, an elliptic lesion) fit wrong transforms with a high Dice: the image content does not;
3. a dense residual displacement field, coarse to fine (64 -> 128 -> 256 px mask grids, control points every 6 px
   upsampled bicubically), minimising 1 - weighted mean Dice over the inlier pairs + ``smoothness`` x bending
   energy. Dice is computed on the overlap of the two fields of view only. Kept only if the image score does not
   drop.

Choices where the paper is silent or differs (Tell2Reg optimises a full-resolution field from identity for 10^4 Adam
steps on one global Dice): the affine stage and its multi-start, the box transfer, the multi-resolution control
grid, a few hundred steps in total, Dice averaged per pair (weighted by similarity x sqrt(area)), the consistency
filters on the pairs, and the image similarity as the judge of starts.

``method="intensity"`` registers on the images alone: SimpleITK (Mattes mutual information on grayscale) affine
stages from several starts — the image moments (the v1 baseline) and the best rotations/flips of a coarse global
search (:mod:`.search`, our addition: serial sections come rotated by any angle or mirrored) — the one whose result
has the best :func:`alignment_score` wins; then the B-spline stage and the joint refinement below, each kept only
when it raises that score. ``"prompts+intensity"`` (what the default ``"auto"`` runs when prompts are given;
without them it runs ``"intensity"``) adds the region transform and its affine part as starts: it can only differ
from the image route where a region start aligns the images better (no landmarks are
looked at). The image starts are refined, and the B-spline stage runs on the best of them, in a background thread
while the region pairs are found (torch on one thread meanwhile; that B-spline stage at the lowest priority); if a
region start wins, that stage stops and the winner's runs after (same result as ranking all starts at once, less
waiting). The joint refinement (:func:`joint_refine`, our addition): a residual free-form
deformation at finer resolution (control points every 16 px) minimising the local (9 px window) squared NCC of the
gray images (or MIND descriptors, ``refine_similarity="mind"``), suited to two stains whose intensities relate only
locally, + 0.2 x (1 - region-pair Dice) + bending energy. The SimpleITK stages run single-threaded with a fixed
seed, so a call repeats exactly. A stage whose result is degenerate (:func:`~..warp.degenerate_reason`: non-finite,
folding, mostly outside the moving image) is rejected in favour of the stage before it, with the reason in
``RegistrationResult.stages`` and its warnings; ``RegistrationResult.quality`` (:mod:`.quality`) sums up, without
landmarks, the image similarity before/after, the Jacobian range and the stages rejected.

Coordinates, the displacement convention and point mapping are described in :mod:`..warp`. Modules: :mod:`.pipeline`
(:func:`register`), :mod:`.sources` (region pairs), :mod:`.from_pairs` (transform from pairs), :mod:`.intensity`
(SimpleITK stages, the image judge), :mod:`.search` (global start), :mod:`.refine` (joint refinement),
:mod:`.quality`, :mod:`.torch_ops`, :mod:`.options`.
"""

from ...callbacks import ProgressCallback
from .from_pairs import fit_pairs, fit_similarity, initial_affine, moment_similarity, pair_dice, plausible
from .intensity import (
    IntensityImages,
    alignment_score,
    intensity_register,
    intensity_stage,
    sitk_single_threaded,
    to_gray,
)
from .options import (
    DEFAULT_METHOD,
    METHODS,
    RegistrationOptions,
    RegistrationResult,
    image_diagonal,
    landmark_errors,
    landmarks_outside,
    placed_before,
    resolve_method,
    text_prompt_options,
    user_options,
)
from .pipeline import check_pair, register, registered_level
from .quality import quality_report
from .refine import joint_refine, local_ncc_loss, mind_descriptor
from .route import intensity_route
from .search import rotation_flip_search
from .sources import is_text_prompts, region_pairs, text_sources
from .torch_ops import adam, bending_energy, next_level_control, single_thread

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "resolve_method",
    "text_prompt_options",
    "user_options",
    "IntensityImages",
    "ProgressCallback",
    "RegistrationOptions",
    "RegistrationResult",
    "adam",
    "alignment_score",
    "bending_energy",
    "check_pair",
    "fit_pairs",
    "fit_similarity",
    "image_diagonal",
    "initial_affine",
    "intensity_register",
    "intensity_route",
    "intensity_stage",
    "is_text_prompts",
    "joint_refine",
    "landmark_errors",
    "landmarks_outside",
    "local_ncc_loss",
    "mind_descriptor",
    "placed_before",
    "moment_similarity",
    "next_level_control",
    "pair_dice",
    "plausible",
    "quality_report",
    "region_pairs",
    "register",
    "registered_level",
    "rotation_flip_search",
    "single_thread",
    "sitk_single_threaded",
    "text_sources",
    "to_gray",
]
