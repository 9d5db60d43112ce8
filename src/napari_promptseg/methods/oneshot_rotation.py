"""Reference rotation: how one-shot segmentation holds up whatever reference the user picks.

Every chosen reference of a set segments the same targets in turn; per set we report the mean, median and worst
decile of the per-reference mean Dice, the 1/2/4-reference ensemble curve, the baselines (PerSAM-/Matcher-style,
Otsu with the reference's polarity, LiteMedSAM prompted with the ground-truth boxes) and, for every failure, where
the loss is: the correspondence (positives off the object), the scheme score (a better candidate was in the bank,
found by an oracle used for this diagnosis only), the prompt scheme (no candidate works but a true box would) or the
decoder (even the true box fails).

Each image is encoded once per run: the references' embeddings stay in the segmenter's cache and each target's
embedding serves every reference and strategy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from skimage.filters import threshold_otsu
from skimage.measure import label, regionprops

from ..models.features import FLIP_VIEWS, PatchFeatureExtractor, SegmenterFeatures
from ..models.preprocessing import as_channels_last
from ..models.protocols import PromptableSegmenter
from .metrics import dice
from .oneshot import DEFAULT_RULE, SELECTION_RULES, OneShotResult, SchemeDiagnostics, segment_like, self_affinity
from .oneshot.correspondence import NoMatchError
from .oneshot.strategies import candidate_features

FAILURE = 0.5  # Dice below this is a failure for the loss breakdown


def evenly_spaced(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when k >= n), first and last included."""
    if k >= n:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, k)})


def gray(image: np.ndarray) -> np.ndarray:
    return as_channels_last(image).astype(np.float32).mean(axis=2)


def otsu_polarity(reference: np.ndarray, reference_mask: np.ndarray) -> bool:
    """True when the object is brighter than Otsu's threshold on the reference (the polarity that fits it)."""
    g = gray(reference)
    bright = g > threshold_otsu(g)
    return dice(bright, reference_mask) >= dice(~bright, reference_mask)


def otsu_mask(image: np.ndarray, bright: bool) -> np.ndarray:
    g = gray(image)
    m = g > threshold_otsu(g)
    return m if bright else ~m


def gt_box_mask(segmenter: PromptableSegmenter, image: np.ndarray, mask: np.ndarray, min_area: int = 20) -> np.ndarray:
    """Upper bound: the model prompted with one ground-truth box per connected component, masks united."""
    boxes = [
        (r.bbox[1], r.bbox[0], r.bbox[3] - 1, r.bbox[2] - 1) for r in regionprops(label(mask)) if r.area >= min_area
    ]
    if not boxes:
        return np.zeros_like(mask)
    pred = segmenter.predict(segmenter.embed(image), boxes=np.asarray(boxes, np.float32))
    out = np.zeros(mask.shape, bool)
    for start in range(0, len(boxes), 16):
        out |= pred.masks(slice(start, start + 16))[:, 0].any(axis=0)
    return out


def _probabilities(diag: SchemeDiagnostics, index: Sequence[int]) -> torch.Tensor:
    """(n, H, W) sigmoid of the chosen candidates' logits on the target grid (as :func:`segment_like` returns)."""
    logits = diag.transform.logits_to_original(diag.candidate_logits[list(index)][:, None])[:, 0]
    return torch.sigmoid(logits)


def candidate_dice(diag: SchemeDiagnostics, truth: np.ndarray, chunk: int = 8) -> np.ndarray:
    """Dice of every candidate with the target truth (diagnosis only: the oracle)."""
    t = torch.from_numpy(np.asarray(truth, bool))
    out = []
    for start in range(0, len(diag.candidate_logits), chunk):
        idx = range(start, min(start + chunk, len(diag.candidate_logits)))
        m = diag.transform.logits_to_original(diag.candidate_logits[list(idx)][:, None])[:, 0] > 0
        inter = (m & t).flatten(1).sum(1).float()
        total = m.flatten(1).sum(1).float() + t.sum().float()
        out.append(torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total)).numpy())
    return np.concatenate(out)


def positives_on_object(diag: SchemeDiagnostics, truth: np.ndarray) -> float:
    """Share of the cycle-consistent positive points that land on the target's object."""
    if len(diag.positive_xy) == 0:
        return 0.0
    xy = np.round(diag.positive_xy).astype(int)
    return float(np.asarray(truth, bool)[xy[:, 1], xy[:, 0]].mean())


def failure_cause(record: dict, gt_box_dice: float) -> str:
    """Where a failed SAT result lost (the first cause in pipeline order): positives mostly off the object
    (correspondence; a refusal too); a candidate of the bank was good (scheme score); a true box would do (prompt
    scheme); else the decoder."""
    if record["positives_on_object"] < 0.5:
        return "correspondence"
    if max(record["candidates"]["dice"]) >= FAILURE:
        return "scheme score"
    if gt_box_dice >= FAILURE:
        return "prompt scheme"
    return "decoder"


def ensemble_groups(n: int, k: int) -> list[tuple[int, ...]]:
    """Groups of ``k`` of ``n`` references, each spread over the list (rolling, so every reference counts equally)."""
    if k > n:
        return []
    step = max(1, n // k)
    return sorted({tuple(sorted((i + j * step) % n for j in range(k))) for i in range(n)})


def rotate_references(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    references: Sequence[int],
    targets: Sequence[int],
    *,
    segmenter: PromptableSegmenter,
    names: Sequence[str] | None = None,
    strategies: Sequence[str] = ("sat", "persam", "matcher"),
    ensemble_sizes: Sequence[int] = (2, 4),
    baselines: bool = True,
    extractor: PatchFeatureExtractor | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Every reference segments every target. Returns per (reference, target) records and per-target extras.

    ``images``/``masks``: the whole set; ``references``/``targets``: indices into it (disjoint).
    SAT's records keep every candidate's features and Dice, so other selection rules can be judged from them.
    ``extractor``: patch features for the matching (default: the segmenter's encoder).
    """
    names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
    if set(references) & set(targets):
        raise ValueError("references and targets must be disjoint")
    cache = getattr(segmenter, "cache", None)
    old_size = None if cache is None else cache.maxsize
    features = extractor or SegmenterFeatures(segmenter)
    views = 1 + len(FLIP_VIEWS[getattr(features, "flip", "") or ""])  # a mirror view is one more cached embedding
    if cache is not None:  # every reference's embedding (and its views) stays cached across targets
        cache.maxsize = max(old_size, views * (len(references) + 2))
    ref_imgs, ref_masks = [images[r] for r in references], [masks[r] for r in references]
    ref_affinity = [self_affinity(features.features(i)) for i in ref_imgs]
    polarity = [otsu_polarity(i, m) for i, m in zip(ref_imgs, ref_masks, strict=True)] if baselines else []
    records, per_target = [], []
    try:
        for n, t in enumerate(targets):
            if progress:
                progress(f"target {n + 1}/{len(targets)} {names[t]}")
            truth = np.asarray(masks[t], bool)
            per_strategy: dict[str, list[OneShotResult | None]] = {}
            for strategy in strategies:
                per_strategy[strategy] = _segment_each(
                    ref_imgs,
                    ref_masks,
                    images[t],
                    segmenter=segmenter,
                    extractor=extractor,
                    strategy=strategy,
                    diagnostics=strategy == "sat",
                    names=[names[t]],
                )
            extra: dict = {"target": names[t]}
            if baselines:
                extra["gt_box"] = dice(gt_box_mask(segmenter, images[t], truth), truth)
                otsu = {b: dice(otsu_mask(images[t], b), truth) for b in set(polarity)}
            for j, r in enumerate(references):
                rec: dict = {"target": names[t], "reference": names[r]}
                for strategy, results in per_strategy.items():
                    rec[strategy] = dice(np.zeros_like(truth) if results[j] is None else results[j].mask, truth)
                if baselines:
                    rec["otsu"] = otsu[polarity[j]]
                if "sat" in per_strategy and per_strategy["sat"][j] is None:  # refused: one empty candidate
                    empty = candidate_features(np.zeros(1), np.zeros(1), torch.zeros(1, 1, 1), np.zeros(1), np.zeros(1))
                    rec.update(
                        refused=True,
                        score=0.0,
                        reference_self_affinity=ref_affinity[j],
                        positives_on_object=0.0,
                        candidates={"dice": [rec["sat"]], **{k: v.tolist() for k, v in empty.items()}},
                    )
                elif "sat" in per_strategy:
                    sat = per_strategy["sat"][j]
                    diag = sat.diagnostics
                    feats = diag.features
                    rec.update(
                        score=float(sat.score),
                        affinity=diag.affinity,
                        reference_self_affinity=ref_affinity[j],
                        positives_on_object=positives_on_object(diag, truth),
                        chosen=int(diag.chosen),
                        candidates={
                            "dice": candidate_dice(diag, truth).round(4).tolist(),
                            **{k: v.round(6).tolist() for k, v in feats.items()},
                        },
                        warnings=sat.warnings,
                    )
                records.append(rec)
            if "sat" in per_strategy:
                extra["ensembles"] = _ensembles(per_strategy["sat"], truth, ensemble_sizes)
            per_target.append(extra)
    finally:
        if cache is not None:
            cache.maxsize = old_size
    return {"records": records, "targets": per_target}


def _segment_each(
    references: list[np.ndarray], masks: list[np.ndarray], target: np.ndarray, **options
) -> list[OneShotResult | None]:
    """Every reference's result on one target (:func:`segment_like` with all references at once); when a reference
    refuses the target (nothing in it resembles the reference's object, :class:`.oneshot.NoMatchError`), each
    reference on its own, a refusal as None. Any other error is the inputs' and stops the run."""
    try:
        res = segment_like(references, masks, target, **options)[0]
        return res.per_reference or [res]
    except NoMatchError:
        out: list[OneShotResult | None] = []
        for reference, mask in zip(references, masks, strict=True):
            try:
                out.append(segment_like(reference, mask, target, **options)[0])
            except NoMatchError:
                out.append(None)
        return out


def _ensembles(results: list[OneShotResult | None], truth: np.ndarray, sizes: Sequence[int]) -> dict[str, dict]:
    """Dice of soft-vote ensembles (mean probability > 0.5, as ``segment_like(ensemble="vote")``) per rule and size;
    a refusal votes 0 everywhere."""
    out: dict = {}
    diags = [None if r is None else r.diagnostics for r in results]
    for rule, rank in SELECTION_RULES.items():
        probs = torch.stack(
            [
                torch.zeros(truth.shape) if d is None else _probabilities(d, [int(np.argmax(rank(d.features)))])[0]
                for d in diags
            ]
        )
        out[rule] = {
            str(k): [
                round(dice((probs[list(g)].mean(0) > 0.5).numpy(), truth), 4) for g in ensemble_groups(len(results), k)
            ]
            for k in sizes
        }
    return out


def rule_dice(record: dict, rule: str) -> float:
    """Dice of the candidate a selection rule picks, from a SAT record's candidate table."""
    c = record["candidates"]
    feats = {k: np.asarray(v) for k, v in c.items() if k != "dice"}
    return float(c["dice"][int(np.argmax(SELECTION_RULES[rule](feats)))])


def summarize(run: dict, methods: Sequence[str]) -> dict:
    """Per method: mean / median / worst decile / worst of the per-reference mean Dice (over the targets)."""
    records = run["records"]
    refs = list(dict.fromkeys(r["reference"] for r in records))
    out = {}
    for method in methods:
        per_ref = np.array([np.mean([_value(r, method) for r in records if r["reference"] == ref]) for ref in refs])
        out[method] = {
            "mean": float(per_ref.mean()),
            "median": float(np.median(per_ref)),
            "worst_decile": float(np.percentile(per_ref, 10)),
            "worst": float(per_ref.min()),
            "per_reference": dict(zip(refs, np.round(per_ref, 4).tolist(), strict=True)),
        }
    return out


def _value(record: dict, method: str) -> float:
    if method in record:
        return float(record[method])
    if method.startswith("sat[") and method.endswith("]"):  # another selection rule over SAT's candidates
        return rule_dice(record, method[4:-1])
    if method == "sat_oracle":
        return float(max(record["candidates"]["dice"]))
    raise KeyError(method)


def loss_breakdown(run: dict, rule: str = DEFAULT_RULE) -> dict:
    """Failures (Dice < 0.5) of SAT with a selection rule, counted by cause (see :func:`failure_cause`)."""
    gt_box = {t["target"]: t["gt_box"] for t in run["targets"]}
    counts = dict.fromkeys(("correspondence", "scheme score", "prompt scheme", "decoder"), 0)
    for rec in run["records"]:
        if rule_dice(rec, rule) < FAILURE:
            counts[failure_cause(rec, gt_box[rec["target"]])] += 1
    return {"pairs": len(run["records"]), "failures": sum(counts.values()), **counts}
