"""How each input and the run used the disk embedding cache: report.json's ``embedding_from_cache``,
``embeddings_from_cache`` and the run-level ``embedding_cache``."""

from __future__ import annotations

from collections.abc import Sequence


def disk_cache_counts() -> tuple[int, int] | None:
    """(embeddings read, embeddings computed) by this process's disk embedding cache so far; None without one. A
    worker runs one input at a time: the difference over an input is that input's."""
    from ..models import embedding_cache

    disk = embedding_cache.active()
    return None if disk is None else (disk.hits, disk.misses + disk.refused)


def note_cache_use(record: dict, before: tuple[int, int] | None, command: str | None) -> None:
    """report.json's ``embedding_from_cache`` (every embedding the input needed was read from the disk cache) and
    ``embeddings_from_cache`` (how many were read, how many computed: a tiled image or a stack has several), and the
    input's line says it. False without a disk cache; None where this process's memory answered."""
    after = disk_cache_counts()
    if before is None or after is None:
        record["embedding_from_cache"] = False
        return
    read, computed = after[0] - before[0], after[1] - before[1]
    record["embedding_from_cache"] = (read > 0 and computed == 0) if read + computed else None
    record["embeddings_from_cache"] = {"read": read, "computed": computed}
    if command == "embed" or "_summary" not in record or not read + computed:  # embed's line counts them already
        return
    if read + computed == 1:
        said = "embedding from the disk cache" if read else "embedding computed"
    else:
        said = f"{read} of {read + computed} embeddings from the disk cache"
    record["_summary"] += f", {said}"


def cache_use_summary(records: Sequence[dict], cache: str | None) -> dict | None:
    """report.json's run-level ``embedding_cache``: the disk cache's path, how many images read all their embeddings
    from it, and the embeddings read and computed (None: the run had no disk cache)."""
    if cache is None:
        return None
    counted = [r for r in records if "embeddings_from_cache" in r]
    return {
        "path": str(cache),
        "images": len(counted),
        "images_from_cache": sum(r.get("embedding_from_cache") is True for r in counted),
        "embeddings_read": sum(r["embeddings_from_cache"]["read"] for r in counted),
        "embeddings_computed": sum(r["embeddings_from_cache"]["computed"] for r in counted),
    }
