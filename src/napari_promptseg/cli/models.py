"""`promptseg models`: models, weights status, where to put missing files."""

from __future__ import annotations

import argparse
import json


def cmd_models(args: argparse.Namespace) -> int:
    from ..models.registry import MODELS, cache_dir, weights_status

    rows = []
    for card in MODELS.values():
        status, path = weights_status(card)
        rows.append(
            {
                "name": card.name,
                "role": card.role,
                "weights": status,
                "path": str(path) if path else str(cache_dir() / card.filename),
                "size": card.size,
                "sha256": card.sha256,
                "licence": card.licence,
                "source": card.url or (card.package_resource[0] if card.package_resource else None),
                "description": card.description,
                "citation": card.citation,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"weights cache: {cache_dir()}")
    for row in rows:
        mark = "available" if row["weights"] != "missing" else "not downloaded"
        print(f"{row['name']:<24} {row['role']:<13} {mark:<15} {row['description']}")
        print(f"{'':<24} {'':<13} {'':<15} {row['path']}")
    return 0
