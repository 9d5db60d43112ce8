"""`promptseg models`: each model, where its weights were found (bundled / HF cache / our cache / missing), their
size, where missing ones go, and the Python package its backend imports (and whether it is installed: weights
without it load nothing)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: how the text output names each place weights are found
PLACES = {
    "bundled": "bundled",
    "hf_cache": "HF cache",
    "cache": "our cache",
    "partial": "partial download",
    "incomplete": "incomplete download",
    "truncated": "truncated: delete it",
    "size_differs": "size differs: delete it",
    "missing": "missing",
}


def _size_on_disk(path: Path) -> int:
    """Bytes of a file, or of a directory's files (a hub snapshot's links count as the blobs they point to)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _megabytes(size: int | None) -> str:
    return "?" if size is None else f"{size / 1e6:,.0f} MB" if size >= 1e6 else f"{size / 1e6:.1f} MB"


def _mb(size: int) -> str:
    return f"{size / 1e6:,.0f}" if size >= 1e7 else f"{size / 1e6:.1f}"


def cmd_models(args: argparse.Namespace) -> int:
    from ..models import hub
    from ..models.availability import BACKEND_PACKAGES, backend_package, how_to_get
    from ..models.registry import MODELS, cache_dir, weights_status

    rows = []
    for card in MODELS.values():
        status, path = weights_status(card)
        if path is not None:
            where = str(path)
        elif card.repo_id is not None:
            where = str(hub.repo_folder(card.repo_id))
        else:
            where = str(cache_dir() / card.filename)
        package = backend_package(card)
        rows.append(
            {
                "name": card.name,
                "role": card.role,
                "weights": status,
                # the module its backend imports beyond torch (None: nothing more), and whether it is installed
                "package": package[0] if package else None,
                "package_installed": package[1] if package else None,
                "install": BACKEND_PACKAGES[card.backend][1] if package and not package[1] else None,
                "path": where,
                # missing or unusable: the run that downloads the weights, the command that fetches them
                "get": how_to_get(card),
                # on disk when found, else what the download costs (where published)
                "size": _size_on_disk(path) if path is not None else card.size,
                "repo_id": card.repo_id,
                "revision": card.revision,
                "url": card.url,
                "sha256": card.sha256,
                "licence": card.licence,
                "source": card.url
                or (f"{hub.endpoint()}/{card.repo_id}" if card.repo_id else None)
                or (card.package_resource[0] if card.package_resource else None),
                "description": card.description,
                "citation": card.citation,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"Hugging Face cache: {hub.hf_cache_dir()}  (hub models; $HF_HOME, $HF_HUB_CACHE)")
    print(f"our cache:          {cache_dir()}  (single-file checkpoints; $PROMPTSEG_CACHE_DIR)")
    print(f"{'model':<24} {'role':<17} {'found in':<23} {'size':>10}  {'package':<28} description / where")
    for row in rows:
        place = PLACES[row["weights"]]
        if row["weights"] == "hf_cache" and row["revision"] and Path(row["path"]).name != row["revision"]:
            place += " (other rev.)"  # the cache's main, not the pinned commit
        size = _megabytes(row["size"])
        where = row["path"]
        if row["weights"] in ("partial", "incomplete"):  # how far it got: on the path line, the columns stay in line
            card = MODELS[row["name"]]
            stopped_at = f"{_mb(row['size'])} of {_mb(card.size)} MB" if card.size else size
            where += f" (download stopped at {stopped_at})"
        elif row["weights"] == "missing":
            size = f"({size})" if row["size"] else ""
        package = "-"
        if row["package"]:
            package = f"{row['package']} ({'installed' if row['package_installed'] else 'missing'})"
        print(f"{row['name']:<24} {row['role']:<17} {place:<23} {size:>10}  {package:<28} {row['description']}")
        print(f"{'':<24} {where}")
        if row["install"]:  # first: weights fetched before the package load nothing
            print(f"{'':<24} not loadable here until its package is installed: {row['install']}")
        if row["get"]:
            print(f"{'':<24} to get it: {row['get']}")
    print("(size): what the download of a missing model weighs; package: the one its backend imports beyond torch")
    return 0
