"""Reference-rotation run of eval_oneshot.py (``--rotate N``): every set, N references in turn, one JSON.

Writes results/eval_oneshot_rotation.json after every set (a set not rerun keeps its last result) and prints
the rotation table, the ensemble curve, the loss breakdown and the scheme-selection rules (chosen on the dev half
of the references, reported on the other half).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from eval_oneshot import DATA, dataset_pairs, load, nuclei_subset
from napari_promptseg.errors import PromptsegError
from napari_promptseg.methods.oneshot import (
    DEFAULT_RULE,
    SELECTION_RULES,
    correspond,
    self_affinity,
    transfer_confidence,
)
from napari_promptseg.methods.oneshot_rotation import (
    evenly_spaced,
    loss_breakdown,
    rotate_references,
    summarize,
)
from napari_promptseg.models import load_segmenter
from napari_promptseg.models.features import load_feature_extractor

ROTATION_SETS = (
    "lungs_cxr_shenzhen",
    "polyps_kvasir_text",
    "glands_glas",
    "em_isbi2012",
    "nuclei_dsb2018",
    "nuclei_monuseg_train_text",
    "polyps_kvasir_triplets",
)


def rotation_set(name: str, n_refs: int, max_targets: int, kvasir_refs: int) -> dict:
    """Images, masks, names and the reference / target indices of one set."""
    if name == "polyps_kvasir_triplets":
        with open(DATA / name / "pairs.csv") as fh:
            rows = list(csv.DictReader(fh))
        train = [r for r in rows if r["split"] == "train"]
        test = [r for r in rows if r["split"] == "test"]
        train = [train[i] for i in evenly_spaced(len(train), kvasir_refs)]
        if max_targets:
            test = [test[i] for i in evenly_spaced(len(test), max_targets)]
        chosen = train + test
        pairs = [(DATA / name / r["image"], DATA / name / r["mask"]) for r in chosen]
        loaded = [load(name, i, m) for i, m in pairs]
        refs, targets = list(range(len(train))), list(range(len(train), len(chosen)))
    else:
        pairs = dataset_pairs(name)
        loaded = [load(name, i, m) for i, m in pairs]
        if name == "nuclei_dsb2018":  # fluorescence only (one modality per set); the order does not matter here
            pairs, loaded = nuclei_subset(pairs, loaded, min_objects=0)
        refs = evenly_spaced(len(pairs), min(n_refs, len(pairs) // 2))  # small sets: half references
        targets = [k for k in range(len(pairs)) if k not in refs]
        if max_targets and len(targets) > max_targets:
            targets = [targets[i] for i in evenly_spaced(len(targets), max_targets)]
    return {
        "images": [i for i, _ in loaded],
        "masks": [m for _, m in loaded],
        "names": [p.name for p, _ in pairs],
        "references": refs,
        "targets": targets,
    }


def _method(rule: str) -> str:
    """SAT with the default rule is "sat"; with another selection rule "sat[rule]"."""
    return "sat" if rule == DEFAULT_RULE else f"sat[{rule}]"


def set_summary(run: dict, refs: list[str], strategies: list[str]) -> dict:
    """Rotation table row, ensemble curve and loss breakdown of one set."""
    methods = [*strategies, "otsu", *(_method(r) for r in SELECTION_RULES if r != DEFAULT_RULE), "sat_oracle"]
    dev, test = refs[0::2], refs[1::2]
    out = {
        "references": refs,
        "targets": len(run["targets"]),
        "all": summarize(run, methods),
        "gt_box": float(np.mean([t["gt_box"] for t in run["targets"]])),
        "loss_breakdown": {rule: loss_breakdown(run, rule) for rule in SELECTION_RULES},
    }
    for half, names in (("dev", dev), ("test", test)):
        sub = {"records": [r for r in run["records"] if r["reference"] in names], "targets": run["targets"]}
        out[half] = {m: v["mean"] for m, v in summarize(sub, methods).items()} if sub["records"] else {}
    curve = {}
    for rule in SELECTION_RULES:
        per_size = {"1": out["all"][_method(rule)]["mean"]}
        for k in run["targets"][0]["ensembles"][rule]:
            per_size[k] = float(np.mean([np.mean(t["ensembles"][rule][k]) for t in run["targets"]]))
        curve[rule] = per_size
    out["ensemble_curve"] = curve
    return out


def transfer_runs(samples: dict, features) -> list[dict]:
    """The first reference of each set against two targets of every set (its own included): the affinity ratio and
    transfer confidence segment_like would give (no decoding: the check comes before it), or its refusal."""
    feats = {
        name: [features.features(i) for i in (ref, *(t for _, t in targets))]
        for name, (ref, _, targets) in samples.items()
    }
    rows = []
    for a, (_, mask, _) in samples.items():
        ref = feats[a][0]
        ref_self = self_affinity(ref)
        for b, (_, _, targets) in samples.items():
            for (tname, _), target in zip(targets, feats[b][1:], strict=True):
                row = {"reference_set": a, "target_set": b, "target": tname, "reference_self_affinity": ref_self}
                try:
                    corr = correspond(ref, mask, target)
                except PromptsegError as exc:  # the method refuses: nothing in the target resembles the object
                    row.update(refused=str(exc), transfer=0.0)
                else:
                    row.update(affinity=corr.affinity, transfer=transfer_confidence(corr.affinity, ref_self))
                rows.append(row)
    return rows


def run_rotation(args: argparse.Namespace) -> None:
    """Each set's run goes to its own file (runs of different sets may go in parallel processes), then every set
    file present is assembled into one JSON with the cross-set transfer runs."""
    torch.manual_seed(0)
    segmenter = load_segmenter(device="cpu")
    extractor = load_feature_extractor(args.features, segmenter=segmenter)
    suffix = "" if args.features == "segmenter" and args.half == "all" else f"_{args.features}_{args.half}"
    suffix = suffix.replace(":", "-").replace("/", "-")
    parts = args.output / f"eval_oneshot_rotation{suffix}.d"  # one file per set, not committed
    parts.mkdir(parents=True, exist_ok=True)
    protocol = {
        "references_per_set": args.rotate,
        "kvasir_triplets_references": args.kvasir_references,
        "max_targets": args.max_targets,
        "features": extractor.name,
        "strategies": args.strategies,
        "references": args.half,
        "selection_rules": list(SELECTION_RULES),
    }
    sets = [s for s in ROTATION_SETS if not args.datasets or s in args.datasets]
    for name in sets if not args.only_transfer else []:
        t0 = time.perf_counter()
        data = rotation_set(name, args.rotate, args.max_targets, args.kvasir_references)
        refs, targets = data["references"], data["targets"]
        if args.half != "all":  # dev = every other reference from the first, test = the rest
            refs = refs[0::2] if args.half == "dev" else refs[1::2]
        print(f"{name}: {len(refs)} references x {len(targets)} targets", flush=True)
        run = rotate_references(
            data["images"],
            data["masks"],
            refs,
            targets,
            segmenter=segmenter,
            extractor=extractor,
            strategies=args.strategies,
            names=data["names"],
            progress=lambda msg, name=name: print(f"  {name} {msg} {time.strftime('%H:%M:%S')}", flush=True),
        )
        summary = set_summary(run, [data["names"][r] for r in refs], args.strategies)
        summary["seconds"] = time.perf_counter() - t0
        summary["load_average_1min"] = os.getloadavg()[0]
        summary["torch_threads"] = torch.get_num_threads()
        (parts / f"{name}.json").write_text(json.dumps({"protocol": protocol, "summary": summary, **run}))
        row = summary["all"]
        print(name, {m: round(row[m]["mean"], 3) for m in row}, f"{summary['seconds']:.0f}s", flush=True)
    if args.only_transfer:
        samples = {}
        for name in sets:
            data = rotation_set(name, args.rotate, args.max_targets, args.kvasir_references)
            r, targets = data["references"][0], data["targets"][:2]
            samples[name] = (
                data["images"][r],
                data["masks"][r],
                [(data["names"][t], data["images"][t]) for t in targets],
            )
        (parts / "transfer.json").write_text(json.dumps(transfer_runs(samples, extractor)))
    out = assemble(parts)
    path = args.output / f"eval_oneshot_rotation{suffix}.json"
    path.write_text(json.dumps(out, indent=None, separators=(",", ":")))
    print(report(out))
    print(f"\nwritten {path}")


def assemble(parts: Path) -> dict:
    out: dict = {"sets": {}}
    for name in ROTATION_SETS:
        if (parts / f"{name}.json").is_file():
            data = json.loads((parts / f"{name}.json").read_text())
            out["protocol"] = data.pop("protocol")
            out["sets"][name] = data
    if (parts / "transfer.json").is_file():
        out["transfer"] = json.loads((parts / "transfer.json").read_text())
    return out


def report(out: dict) -> str:
    """Markdown: rotation table, ensemble curve, loss breakdown."""
    lines = [
        "| set | refs x targets | SAT mean / median / worst decile | PerSAM | Matcher | Otsu | GT-box bound |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, ds in out["sets"].items():
        s = ds["summary"]
        a = s["all"]
        lines.append(
            f"| {name} | {len(s['references'])} x {s['targets']} | {100 * a['sat']['mean']:.1f} / "
            f"{100 * a['sat']['median']:.1f} / {100 * a['sat']['worst_decile']:.1f} | "
            + " | ".join(f"{100 * a[m]['mean']:.1f}" if m in a else "–" for m in ("persam", "matcher", "otsu"))
            + f" | {100 * s['gt_box']:.1f} |"
        )
    rules = list(SELECTION_RULES)
    lines += [
        "",
        "| set | " + " | ".join(f"{r}: 1 / 2 / 4 refs" for r in rules) + " |",
        "|---" * (len(rules) + 1) + "|",
    ]
    for name, ds in out["sets"].items():
        c = ds["summary"]["ensemble_curve"]
        lines.append(
            f"| {name} | " + " | ".join(" / ".join(f"{100 * v:.1f}" for v in c[r].values()) for r in rules) + " |"
        )
    lines += ["", "| set | rule | failures / pairs | correspondence | scheme score | prompt scheme | decoder |"]
    lines.append("|---|---|---|---|---|---|---|")
    for name, ds in out["sets"].items():
        for rule, b in ds["summary"]["loss_breakdown"].items():
            lines.append(
                f"| {name} | {rule} | {b['failures']} / {b['pairs']} | {b['correspondence']} | {b['scheme score']} | "
                f"{b['prompt scheme']} | {b['decoder']} |"
            )
    lines += ["", rule_table(out), "", transfer_table(out)]
    return "\n".join(lines)


def transfer_table(out: dict) -> str:
    """Affinity ratio and transfer confidence of same-set pairs (by SAT outcome) and of other sets' references."""
    same = [r for ds in out["sets"].values() for r in ds["records"] if "affinity" in r]  # not the refusals
    cross = [r for r in out.get("transfer", []) if r["reference_set"] != r["target_set"]]
    groups = {
        "same set, SAT Dice >= 0.5": [r for r in same if r["sat"] >= 0.5],
        "same set, SAT Dice < 0.5": [r for r in same if r["sat"] < 0.5],
        "reference from another set": [r for r in cross if "affinity" in r],
    }
    lines = [
        "| pairs | n | affinity / reference self-affinity p5 / p50 / p95 | warned (confidence < 0.5) |",
        "|---|---|---|---|",
    ]
    for label, rows in groups.items():
        if not rows:
            continue
        ratio = [r["affinity"] / r["reference_self_affinity"] for r in rows]
        warned = sum(transfer_confidence(r["affinity"], r["reference_self_affinity"]) < 0.5 for r in rows)
        cells = " / ".join(f"{x:.3f}" for x in np.percentile(ratio, [5, 50, 95]))
        lines.append(f"| {label} | {len(rows)} | {cells} | {warned} |")
    refused = sum("refused" in r for r in cross)
    if cross:
        lines.append(
            f"\nOther sets' references refused outright (nothing resembles the object): {refused} / {len(cross)}"
        )
    return "\n".join(lines)


def rule_table(out: dict) -> str:
    """Selection rules: mean over sets of the dev-half and test-half references' mean Dice; the dev winner marked."""
    sets = [ds["summary"] for ds in out["sets"].values() if ds["summary"].get("dev")]
    if not sets:
        return ""
    rules = [*SELECTION_RULES, "oracle"]
    dev = {r: float(np.mean([s["dev"][_method(r) if r != "oracle" else "sat_oracle"] for s in sets])) for r in rules}
    test = {r: float(np.mean([s["test"][_method(r) if r != "oracle" else "sat_oracle"] for s in sets])) for r in rules}
    best = max(SELECTION_RULES, key=dev.get)
    lines = ["| selection rule | dev references | test references |", "|---|---|---|"]
    for r in rules:
        mark = " (chosen on dev)" if r == best else ""
        lines.append(f"| {r}{mark} | {100 * dev[r]:.1f} | {100 * test[r]:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    # a helper of eval_oneshot.py: run alone, it did nothing and exited 0
    how = "python benchmarks/eval_oneshot.py --rotate 6 [--max-targets 8 --datasets ...]"
    argparse.ArgumentParser(description=f"The reference-rotation run of eval_oneshot.py; run it as: {how}").parse_args()
    raise SystemExit(f"oneshot_rotation_report.py is run by eval_oneshot.py: {how}")
