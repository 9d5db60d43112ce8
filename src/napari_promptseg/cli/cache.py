"""`promptseg cache`: what the project keeps on disk (embedding cache, downloaded weights, ...), and
`promptseg cache clear` to delete it (only the project's own files; the reference library never)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import PromptsegError

#: how the listing names each store
KINDS = {
    "embeddings": "embedding cache",
    "weights": "weights (ours)",
    "checksum_stamps": "checksum stamps",
    "hf_cache": "Hugging Face cache",
    "library": "reference library",
}


def human_size(size: int) -> str:
    """:func:`~..models.disk_stores.human_size`, imported when used: the CLI's start imports no model code."""
    from ..models.disk_stores import human_size as in_units

    return in_units(size)


def _add_cache_parser(sub: argparse._SubParsersAction) -> None:
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--cache",
        dest="embedding_cache",
        type=Path,
        default=argparse.SUPPRESS,  # given before or after `clear`: the subcommand's default must not undo it
        metavar="DIR",
        help="the embedding cache (default: $PROMPTSEG_EMBEDDING_CACHE, else the user cache directory's "
        "embeddings/, where `promptseg embed` puts it)",
    )
    cache = sub.add_parser(
        "cache",
        parents=[where],
        help="list what the project keeps on disk (embedding cache, downloaded weights) and clear it",
        description="Lists each place the project keeps files: its path, size and number of entries (the embedding "
        "cache's size cap too). `promptseg cache clear` deletes the project's own files there; the reference "
        "library is your data and is never cleared.",
    )
    cache.add_argument("--json", action="store_true", help="machine-readable output")
    cache.set_defaults(func=cmd_cache)
    cache_sub = cache.add_subparsers(dest="cache_command")
    clear = cache_sub.add_parser(
        "clear",
        parents=[where],
        help="delete cached embeddings and/or downloaded weights",
        description="Deletes only files the project wrote (told by their names and contents: other files in the "
        "folders are kept). Asks first unless --yes. Entries in a folder that cannot be written (a read-only cache) "
        "are said, not counted as freed; exit 1 when some or all of what was asked for stays.",
    )
    clear.add_argument("--embeddings", action="store_true", help="every entry of the embedding cache")
    clear.add_argument(
        "--weights",
        nargs="?",
        const=True,
        default=False,
        metavar="MODEL",
        help="downloaded weights: all checkpoints in our weights cache ($PROMPTSEG_CACHE_DIR), or one model's "
        "(a hub model's snapshot in the Hugging Face cache, which other programs share, only when named)",
    )
    clear.add_argument("--yes", "-y", action="store_true", help="delete without asking")
    clear.set_defaults(func=cmd_cache_clear)


def cmd_cache(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ..models.disk_stores import disk_stores

    stores = disk_stores(getattr(args, "embedding_cache", None))
    if args.json:
        print(json.dumps([{**asdict(s), "path": str(s.path)} for s in stores], indent=2))
        return 0
    print(f"{'store':<20} {'size':>10} {'entries':>8}  path")
    for store in stores:
        print(f"{KINDS[store.kind]:<20} {human_size(store.size):>10} {store.entries:>8}  {store.path}")
        details = []
        if store.cap is not None:
            details.append(f"cap {human_size(store.cap)} ({_cap_source(store.cap_source)})")
        if store.models:
            details.append(", ".join(store.models))
        if store.note:
            details.append(store.note)
        if details:
            print(f"{'':<41}{'; '.join(details)}")
    print("promptseg cache clear --embeddings | --weights [MODEL]: delete them (asks first)")
    return 0


def _cap_source(source: str | None) -> str:
    """Where the listed cap comes from, in words: what a run without --cache-max-gb caps the cache at."""
    from ..models.embedding_cache import MAX_GB_ENV

    if source == "configured":
        return "set in this process by embedding_cache.configure; a run's --cache-max-gb sets its own"
    if source == "environment":
        return f"${MAX_GB_ENV}; a run's --cache-max-gb sets its own"
    return f"the default; ${MAX_GB_ENV} or a run's --cache-max-gb sets another"


def cmd_cache_clear(args: argparse.Namespace) -> int:
    from ..models.disk_stores import clear_stores

    if not args.embeddings and args.weights is False:
        raise PromptsegError("say what to clear: --embeddings and/or --weights [MODEL]")
    chosen = {
        "embeddings": args.embeddings,
        "weights": args.weights,
        "embedding_cache": getattr(args, "embedding_cache", None),
    }
    plan = clear_stores(**chosen, dry_run=True)
    for store in plan:
        # a read-only cache's entries are there but cannot go: "to free" them was a promise the clear then broke
        if store.removed or not store.stuck:
            print(_summary(store, "to free"), file=sys.stderr)
        for path, reason in store.kept:
            print(f"  kept {path}: {reason}", file=sys.stderr)
        _print_stuck(store)
    if not any(store.removed for store in plan):
        if any(store.stuck for store in plan):  # asked to clear, and nothing could be: not a success
            print("nothing can be deleted", file=sys.stderr)
            return 1
        print("nothing to delete", file=sys.stderr)
        return 0
    if not args.yes:
        try:
            answer = input("delete these files? [y/N] ")
        except EOFError:  # no terminal (a script without --yes): nothing is deleted
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted (--yes deletes without asking)", file=sys.stderr)
            return 1
    done = clear_stores(**chosen)
    for store in done:
        print(_summary(store, "freed"))
        if store.stuck:
            _print_stuck(store)
    return 1 if any(store.stuck for store in done) else 0  # some of what was asked for stayed


def _print_stuck(store) -> None:
    """What a clear cannot remove (a read-only cache) and why, on stderr; else the store's note."""
    if not store.stuck:
        if store.note:
            print(f"  {store.note}", file=sys.stderr)
        return
    n = store.stuck
    what = f"{n} {('entry', 'entries')[n != 1]} ({human_size(store.stuck_size)})"
    if store.removed:
        print(f"  {what} cannot be removed: {store.note}", file=sys.stderr)
    else:
        print(
            f"{KINDS[store.kind]}: nothing can be freed in {store.path}: {what} there, but {store.note}",
            file=sys.stderr,
        )


def _summary(store, verb: str) -> str:
    leftovers = store.leftovers
    n = len(store.removed) - leftovers
    what = ("entry", "entries") if store.kind == "embeddings" else ("file", "files")
    # a killed writer's temporary is no entry: the listing counted entries only
    left = f", {leftovers} {('leftover', 'leftovers')[leftovers != 1]} of stopped writes" if leftovers else ""
    return f"{KINDS[store.kind]}: {verb} {human_size(store.freed)} ({n} {what[n != 1]}{left}) in {store.path}"
