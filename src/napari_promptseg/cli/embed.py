"""`promptseg embed`: precompute embeddings into the disk cache, so later prompts on these images start at once."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import PromptsegError
from ._batch import _run_batch
from ._inputs import _expand_images
from ._options import _add_batch_options, _add_model_options
from ._progress_line import weights_progress
from ._report import _segmenter_meta
from ._types import time_point_or_all


def _add_embed_parser(sub: argparse._SubParsersAction) -> None:
    embed = sub.add_parser(
        "embed",
        help="precompute image embeddings into the on-disk cache (--cache) for later prompts, widgets and batches",
        description="Encodes each image (and, with --object-size, each tile at that working scale) and stores the "
        "embeddings in the disk cache: --cache DIR, else $PROMPTSEG_EMBEDDING_CACHE, else the user cache "
        "directory's embeddings/. Use the same --model, --channels and --normalize as the later runs.",
    )
    embed.add_argument(
        "images",
        nargs="+",
        type=Path,
        help="2D images (TIFF, PNG, JPEG, BMP), (Z, Y, X[, C]) stacks (every plane), time-lapses of volumes "
        "(T, Z, Y, X[, C]; with --time), OME-Zarr, pyramidal "
        "(OME-)TIFFs and whole slides (Aperio .svs, Hamamatsu .ndpi), embedded at the pyramid levels segment, "
        "oneshot and text read them; folders of them, or patterns like 'dir/*.tif'",
    )
    embed.add_argument(
        "--object-size",
        type=float,
        metavar="PX",
        help="typical object diameter in pixels: also embed the tiles at that working scale. Only runs given the "
        "same size reuse them: segment --object-size PX (with or without --find-all) and oneshot --object-size PX; "
        "without it, segment works at the boxes' size and oneshot at each target's measured object size",
    )
    embed.add_argument(
        "--time",
        type=time_point_or_all,
        metavar="T|all",
        help="a time-lapse of volumes (T, Z, Y, X[, C]): embed the volume of time point T (every plane, at the pyramid "
        "levels they are read at), as segment, oneshot and text --time T and the Interactive widget at that time "
        "point read it; 'all': every time point's, one after another (a time-lapse is refused without --time)",
    )
    # embed exists to fill a cache: without one named it fills the user cache directory's (cmd_embed)
    _add_model_options(embed, cache_fallback="the user cache directory's embeddings/")
    _add_batch_options(embed, resume=False)
    embed.set_defaults(func=cmd_embed)


def cmd_embed(args: argparse.Namespace) -> int:
    from ..models import embedding_cache

    images = _expand_images(args.images)
    cache = embedding_cache.active() or embedding_cache.configure("default", args.cache_max_gb)
    outcome, code = _run_batch(args, images, _setup, _process)
    done = [r for r in outcome.records if r["status"] != "failed"]
    total = sum(r["embeddings"] for r in done)
    cached = sum(r["from_cache"] for r in done)
    # counted at the end: the size cap may have evicted an earlier image's entries for a later one's
    kept = sum(key in cache for r in done for key in r.get("cache_keys", []))
    print(
        f"{len(done)} image(s): {kept} of {total} embedding(s) in {cache.root} ({cached} were cached)", file=sys.stderr
    )
    if kept < total:
        # a cache that cannot be written is said so: the size cap was blamed for a read-only folder
        problem = next((r["cache_problem"] for r in done if r.get("cache_problem")), None) or cache.write_problem()
        cap = f"its size cap ({cache.max_bytes / 1e9:g} GB, --cache-max-gb)"
        why = f"it cannot be written ({problem})" if problem else f"{cap} holds fewer, or it cannot be written"
        print(f"warning: {total - kept} of {total} embedding(s) are not in the cache: {why}", file=sys.stderr)
        if not kept:  # embed exists to fill the cache: a run that kept nothing did not do its job
            why = why if problem else f"{cap} holds no entry, or it cannot be written"
            print(f"promptseg embed: error: no embedding was kept in {cache.root}: {why}", file=sys.stderr)
            return 2
    return code


def _setup(args: argparse.Namespace) -> tuple[object, dict]:
    from ..models import load_segmenter

    segmenter = load_segmenter(
        args.model, weights=args.weights, device=args.device, progress=weights_progress(args.model)
    )
    return segmenter, _segmenter_meta(segmenter)


def _process(args: argparse.Namespace, segmenter, path: Path, image) -> dict:
    import numpy as np

    from ..batch.engine import method_progress
    from ..io.multiscale import file_pyramid
    from ..methods.precompute import precompute_embeddings, precompute_levels
    from ..models import embedding_cache
    from ..models.preprocessing import to_numpy
    from ._stacks import _plane_channel_axis

    disk = embedding_cache.active()
    memory = getattr(segmenter, "cache", None)  # the model's in-memory cache answers first (an image given twice)

    def hits() -> int:
        return (disk.hits if disk is not None else 0) + (memory.hits if memory is not None else 0)

    before = hits()
    # the steps told to the batch (its display here, a cancelled Dask task's stop there), as the other commands
    progress = method_progress()
    options = {
        "channel_axis": args.channel_axis,
        "channels": args.channels,
        "normalize": args.normalize,
        "name": str(path),
    }
    levels: dict[str, int] = {}  # the pyramid levels read, where coarser than full resolution
    # --time T, or every time point (--time all): each volume as `segment --time T` reads it
    times: list[int | None] = [getattr(args, "time", None)]
    if times[0] == "all":
        times = list(range(_time_points(args, path, image)))
    embeddings, n_planes, warnings = [], 0, []
    for t in times:
        timed = args if t is None else argparse.Namespace(**{**vars(args), "time": t})
        planes = _stack_planes(timed, path, image)
        if planes is None:
            # a pyramid file as its napari layer holds it: the library embeds it at the levels every command reads
            pyramid = file_pyramid(path, image)
            embeddings = precompute_embeddings(
                pyramid, segmenter, object_size=args.object_size, progress=progress, **options
            )
            levels = precompute_levels(
                pyramid, segmenter.input_size, object_size=args.object_size, channel_axis=args.channel_axis
            )
            break
        stack_levels, stack_warnings = planes
        warnings += stack_warnings
        # plane by plane, as segment, oneshot and text read a stack: a stack pyramid's plane as its own pyramid
        # (its levels' planes, largest first), embedded at the levels they read it, as a 2D pyramid is
        n = int(np.shape(stack_levels[0])[0])
        at = "" if t is None else f" time point {t}"
        plane_options = {**options, "channel_axis": _plane_channel_axis(args)}
        for z in range(n):
            if progress is not None:  # a plane is a step: a cancelled Dask task stops here
                progress((n_planes + z) / (n * len(times)), f"{path}:{at} plane {z + 1}/{n}")
            # a pyramid's plane lazily: only the levels its embeddings read are read (a slide's plane is not made whole)
            plane = to_numpy(stack_levels[0][z]) if len(stack_levels) == 1 else [level[z] for level in stack_levels]
            named = {**plane_options, "name": f"{path}{at} plane {z}"}
            embeddings += precompute_embeddings(plane, segmenter, object_size=args.object_size, **named)
            if z == 0 and len(stack_levels) > 1:
                levels = precompute_levels(
                    plane, segmenter.input_size, object_size=args.object_size, channel_axis=named["channel_axis"]
                )
        n_planes += n
    from_cache = hits() - before
    n = n_planes or 1
    tiles = f" + {len(embeddings) - n} tile(s)" if args.object_size is not None else ""
    what = "whole image" if not n_planes else f"{n} whole plane(s)"
    if isinstance(getattr(args, "time", None), int):
        what += f" at time point {args.time} of {np.shape(image)[0]}"
    elif getattr(args, "time", None) == "all":
        what += f" in {len(times)} time points"
    if any(levels.values()):  # a pyramid read at a coarser level than its full resolution
        tiles += f" (pyramid level {levels['whole_image']}"
        tiles += (f", tiles at level {levels['tiles']}" if "tiles" in levels else "") + ")"
    # evicted at once (a cap smaller than the entries) or never written (read-only): computed, but not kept
    kept = sum(disk is not None and e.key in disk for e in embeddings)
    record = {
        "input": str(path),
        "status": "ok",
        "embeddings": len(embeddings),
        "from_cache": from_cache,
        "kept": kept,
        "cache_keys": [e.key for e in embeddings],
        "pyramid_levels": levels,
        "_summary": f"{what}{tiles}, {from_cache} of {len(embeddings)} already cached",
    }
    if kept < len(embeddings):
        warnings.append(f"{len(embeddings) - kept} of {len(embeddings)} embedding(s) not kept in the cache")
        # what the writes met, known only to the cache that made them (a worker's; a full disk passes a later probe)
        if disk is not None and (problem := disk.write_problem()):
            record["cache_problem"] = problem
    if warnings:
        record["warnings"] = warnings
    return record


def _stack_planes(args: argparse.Namespace, path: Path, image: object) -> tuple[list, list[str]] | None:
    """The (Z, Y, X[, C]) input (--time T: that time point's volume of a time-lapse of volumes) as the stack
    subcommands read it (:func:`._stacks._stack_record`): its levels, each a (Z, Y, X[, C]) stack, largest first
    (a stack pyramid's, the file's or, with --time, the time point's of every level of a time-lapse pyramid; else
    the stack alone), and as_stack's warnings; None for an image of two axes (a 2D image, a slide)."""
    import numpy as np

    from ..io.multiscale import stack_axes
    from ..methods.volume import as_stack, check_finite
    from ..methods.volume.levels import stack_pyramid
    from ._stacks import _at_time_point, _pyramid_source

    time_lapse = image  # --time: the input, whose levels the time point is taken of
    image, axes = _at_time_point(args, image, path, None)
    if np.ndim(image) <= 2:
        return None
    axes = stack_axes(path) if axes is None else axes
    stack, warnings = as_stack(image, channel_axis=args.channel_axis, name=str(path), axes=axes.read)
    if stack is None:
        return None
    check_finite(stack, str(path))  # before any plane is encoded
    source = _pyramid_source(args, path, image, time_lapse)
    pyramid = None if source is image else stack_pyramid(source, channel_axis=args.channel_axis, axes=axes.read)
    return (pyramid or [stack]), warnings


def _time_points(args: argparse.Namespace, path: Path, image: object) -> int:
    """How many time points --time all embeds: the first axis of a time-lapse of volumes (T, Z, Y, X[, C]); any
    other input refused naming the file, as --time T refuses it (methods.volume.time_point_volume)."""
    import numpy as np

    from ..methods.volume import time_point_volume

    try:
        time_point_volume(image, 0, name=str(path), channel_axis=args.channel_axis)
    except PromptsegError as exc:
        shape = tuple(np.shape(image))
        raise PromptsegError(
            f"{path}: --time all embeds every time point of a time-lapse of volumes (T, Z, Y, X[, C]); this is an "
            f"image of shape {shape}, no time-lapse: give it without --time"
        ) from exc
    return int(np.shape(image)[0])
