"""`promptseg text`: typed prompts through a trained text model, GroundingDINO, CLIPSeg or the reference library."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..errors import PromptsegError
from ..methods.defaults import BOX_THRESHOLD, HEATMAP_THRESHOLD, MIN_SIMILARITY, TEXT_THRESHOLD, TOP_K
from ._batch import _run_batch
from ._inputs import _expand_images
from ._options import (
    EXIT_CODES_HELP,
    OUTPUT_HELP,
    _add_batch_options,
    _add_model_options,
    _add_stack_options,
    images_help,
)
from ._outputs import _prepare_outputs
from ._progress_line import route_progress, weights_progress
from ._report import _finish_image, _segmenter_meta, _write_report
from ._stacks import _input_stack, _level_record, _plane_channel_axis, _stack_record, plane_name
from ._types import fraction, positive_int, similarity, weights_path


def _add_text_parser(sub: argparse._SubParsersAction) -> None:
    text = sub.add_parser(
        "text",
        help="segment what a text prompt names (a trained text model, GroundingDINO + SAM, CLIPSeg, or the offline "
        "reference library)",
        description="Writes OUT/<stem>.tif (instance labels) per image and OUT/report.json (route, why, boxes, "
        "phrases). The route is the first that can answer: a trained model given with --text-model, GroundingDINO, "
        "CLIPSeg, then the reference library (`promptseg library add`), unless --route picks one. Route auto uses "
        "only weights already on disk (`promptseg models` lists them) and downloads nothing; --route groundingdino "
        "or clipseg (or --grounder/--heatmapper NAME, --text-weights HUB_ID) downloads a missing model "
        "(GroundingDINO: 690 MB) unless $PROMPTSEG_OFFLINE is set.",
        epilog=EXIT_CODES_HELP,
    )
    text.add_argument(
        "prompt",
        help="what to segment, e.g. 'nuclei' or 'gland, stroma' (phrases split on , . ;); a trained text model "
        "(--text-model) reads it whole, as the sentences it was trained on",
    )
    text.add_argument(
        "images",
        nargs="+",
        type=Path,
        help=images_help("images"),
    )
    text.add_argument("-o", "--output", type=Path, required=True, help=OUTPUT_HELP)
    text.add_argument(
        "--route",
        default="auto",
        choices=["auto", "trained", "groundingdino", "clipseg", "library"],
        help="auto (default): the first route whose model is on disk, never a download; groundingdino, clipseg: "
        "that model, downloaded when missing",
    )
    text.add_argument(
        "--text-model",
        type=Path,
        metavar="MODEL_DIR",
        help="a text model trained with `promptseg train-text`: its directory or its model.safetensors (route "
        "'trained'; auto takes it first)",
    )
    text.add_argument("--grounder", help="GroundingDINO model name from `promptseg models` (default: any available)")
    text.add_argument("--heatmapper", help="CLIPSeg model name from `promptseg models` (default: any available)")
    text.add_argument(
        "--text-weights",
        type=weights_path,
        help="weights of GroundingDINO or CLIPSeg (checkpoint file, model directory or hub id); a model of `promptseg "
        "train-text` given here answers as --text-model does",
    )
    text.add_argument(
        "--library", type=Path, help="reference library directory (default: $PROMPTSEG_LIBRARY, else the user one)"
    )
    text.add_argument(
        "--template", default="p1", choices=[f"p{i}" for i in range(10)], help="medvlsm prompt level (%(default)s)"
    )
    text.add_argument("--shape", help="prompt attribute of templates p2-p6, p8 and p9, e.g. 'round'")
    text.add_argument(
        "--colour",
        "--color",
        dest="colour",
        help="prompt attribute of templates p3-p6, p8 and p9, e.g. 'pink'",
    )
    text.add_argument("--description", help="prompt attribute for templates p7-p9")
    text.add_argument(
        "--box-threshold", type=fraction, default=BOX_THRESHOLD, help="GroundingDINO box threshold (%(default)s)"
    )
    text.add_argument(
        "--text-threshold", type=fraction, default=TEXT_THRESHOLD, help="GroundingDINO text threshold (%(default)s)"
    )
    text.add_argument(
        "--heatmap-threshold",
        type=fraction,
        default=HEATMAP_THRESHOLD,
        help="CLIPSeg / trained model threshold (%(default)s)",
    )
    text.add_argument("--no-refine", action="store_true", help="CLIPSeg: threshold only, no SAM refinement")
    text.add_argument("--top-k", type=positive_int, default=TOP_K, help="library: exemplars to ensemble (%(default)s)")
    text.add_argument(
        "--min-similarity",
        type=similarity,
        help=f"library: lowest prompt-to-entry similarity accepted ({MIN_SIMILARITY}; exact and plural names: 1.0)",
    )
    text.add_argument("--overlay", action="store_true", help="also write OUT/<stem>_overlay.png")
    _add_stack_options(text, seeds="segment what the prompt names")
    _add_model_options(text)
    _add_batch_options(text)
    text.set_defaults(func=cmd_text)


#: a word typed with a leading dash ("-polyp"), as a prompt may start, not an option's form: options here are
#: "--name" or a one-letter "-o" (a value may follow it: "-oout/" is taken, "-oily" said to be ambiguous)
_DASHED_WORD = re.compile(r"-[^\W\d_][\w-]+")


def _refuse_dashed_prompt(argv: Sequence[str]) -> None:
    """``promptseg text -polyp IMG -o OUT``: argparse reads a prompt starting with '-' as an unknown option and says
    "the following arguments are required: images" (or "unrecognized arguments: -polyp"). Before parsing, a word
    after ``text`` that starts with one dash and is no option of the command is said to be the prompt, with the way
    to give it: ``--`` before it, after the options; so is one that begins with a one-letter option ("-oily", read
    as ``-o ily``; "-hairy" as ``-h``), with ``-o ily`` for that folder. Mistyped options ("--overlya") are
    argparse's to say."""
    from ..models.device import PRECISIONS

    tokens = list(argv)
    # the subcommand: the first word that is no option of promptseg's own (--precision VALUE)
    at = next((k for k, t in enumerate(tokens) if not t.startswith("-") and t not in PRECISIONS), None)
    if at is None or tokens[at] != "text":
        return
    after = tokens[at + 1 :]
    after = after[: after.index("--")] if "--" in after else after  # what follows "--" is read as it is
    known = _text_options()
    for token in after:
        if not _DASHED_WORD.fullmatch(token) or token in known:
            continue
        quoted = shlex.quote(token)
        way_out = (
            f"put `--` before the prompt, after every option: promptseg text -o OUT [OPTIONS] -- {quoted} IMAGE ..."
        )
        if token[:2] not in known:
            raise PromptsegError(f"the prompt {token} starts with '-' and is read as an option; {way_out}")
        # "-oily" is argparse's "-o ily" (an output folder; then an image is taken for the prompt, or "images" are
        # said to be missing), "-hairy" its "-h" (the help, exit 0): a word there is more likely a prompt
        value = token[2:]
        option = f"-o {value}" if token[:2] == "-o" else token[:2]
        folder = f"; for an output folder {value}, write -o {value}" if token[:2] == "-o" else ""
        raise PromptsegError(
            f"the prompt {token} starts with '-' and is read as the option {option}; {way_out}{folder}"
        )


def _text_options() -> set[str]:
    """The option strings of `promptseg text` (-o, --output, ...), from a parser of its own."""
    text = argparse.ArgumentParser().add_subparsers()
    _add_text_parser(text)
    return {option for action in text.choices["text"]._actions for option in action.option_strings}


def _refuse_swapped_prompt(args: argparse.Namespace, argv: Sequence[str]) -> None:
    """``promptseg text image.png polyp``: the image given where the prompt goes made the prompt an "image" that was
    said only to be missing. When the prompt names an existing file or folder and the missing inputs are plain words
    (no suffix, no pattern), say the order and the corrected command (``argv`` as typed, the words moved first)."""
    # os.path: a prompt longer than a file name may be (255 bytes: a pasted description) is no file, not an OSError
    if not os.path.exists(args.prompt):
        return
    words = [p for p in args.images if not p.exists() and not p.suffix and not any(c in str(p) for c in "*?[")]
    if not words or any(not p.exists() for p in args.images if p not in words):
        return
    prompt = " ".join(str(p) for p in words)
    message = (
        f"input image not found: {words[0]}; the prompt comes first, then the images (promptseg text PROMPT "
        f"IMAGE ...): {args.prompt} is an image and {prompt!r} the prompt?"
    )
    tokens = list(argv)
    try:
        prompt_at = tokens.index(args.prompt, tokens.index("text") + 1)
        for word in words:  # the last token of that name: the positional after the options, not an option's value
            del tokens[len(tokens) - 1 - tokens[::-1].index(str(word))]
    except ValueError:  # not as typed (an abbreviation, a response file): the order is said all the same
        raise PromptsegError(message) from None
    tokens.insert(prompt_at, prompt)
    raise PromptsegError(f"{message} Run: promptseg {shlex.join(tokens)}")


def cmd_text(args: argparse.Namespace) -> int:
    images = _expand_images(args.images)
    from ..io.starter import open_library

    # workers may run in another directory; the library a route may read is named, so a resume sees its entries
    # (the default one opened here first: a new one gets its starter exemplars, as the route would give it)
    if args.text_model is not None:
        args.text_model = args.text_model.absolute()
    if args.library is not None:
        args.library = args.library.absolute()
    elif args.route in ("auto", "library"):
        library = open_library(None)
        args.library = library.path.absolute()
        if library.starter_not_saved:  # the workers read it by its path: said here, where it was found
            print(f"warning: the starter exemplars were not saved: {library.starter_not_saved}", file=sys.stderr)
    t0 = time.perf_counter()
    _prepare_outputs(args, images)
    outcome, code = _run_batch(args, images, _setup, _process)
    meta = outcome.meta
    _write_report(
        args.output,
        device=args.device,
        command="text",
        model=meta.get("model", args.model),
        encoder_precision=meta.get("encoder_precision"),
        route=meta.get("route", args.route),
        reason=meta.get("reason"),
        text_model=meta.get("text_model"),
        warnings=meta.get("warnings", []),  # the run's (a prompt cut by the model), said once; images' in their own
        parameters={
            **{
                k: (str(v) if isinstance(v, Path) else v)
                for k, v in vars(args).items()
                if k not in ("func", "images", "output", "command", "output_stems")
            },
            "stop_iou": args.stop_iou,
        },
        images=outcome.records,
        timings_s={"model_load": meta.get("setup_s"), "total": round(time.perf_counter() - t0, 4)},
        batch=outcome.summary,
    )
    outcome.finish()
    return code


def _setup(args: argparse.Namespace) -> tuple[tuple, dict]:
    """Once per worker: the text route (its models) and the segmenter."""
    from ..methods.text import choose_route, prompt_cut_warnings, split_phrases
    from ..methods.text.answers import library_matches, mixed_names_warning, prompt_vocabulary_warnings
    from ..methods.text.routes import unused_text_model_warnings
    from ..models import load_segmenter

    route = choose_route(
        args.route,
        grounder=args.grounder,
        heatmapper=args.heatmapper,
        library=args.library,
        weights=args.text_weights,
        device=args.device,
        text_model=args.text_model,
        progress=route_progress,  # a named route's download
    )
    segmenter = load_segmenter(
        args.model, weights=args.weights, device=args.device, progress=weights_progress(args.model)
    )
    # a prompt longer than the route's model reads is the run's to say, once (every worker finds the same): not each
    # worker's first image's
    cut = prompt_cut_warnings(route, args.prompt, template=args.template, attributes=_attributes(args))
    cut[:0] = unused_text_model_warnings(args.route, args.text_model, args.text_weights)  # --route library beside them
    if route.route == "library":
        # a prompt the library cannot answer is the run's to say, once: every image failed with it in turn (after
        # the models: a wrong --model or --weights is said first, as it was)
        phrases = split_phrases(args.prompt)
        chosen = library_matches(phrases, route, args.top_k, args.min_similarity)
        for phrase, selected in zip(phrases, chosen, strict=True):  # entries of several names mixed: the run's too
            cut += mixed_names_warning(phrase, selected)
    cut += prompt_vocabulary_warnings(route, args.prompt)  # a name the trained model was not trained on: the run's
    meta = {
        **_segmenter_meta(segmenter),
        "route": route.route,
        "text_model": route.name,
        "reason": _route_reason(route),
        "warnings": cut,
    }
    return (route, segmenter, cut), meta


def _route_reason(route) -> str:
    """Why this route answers the run (each image's record says what it used)."""
    answers = {
        "trained": "a trained text model",
        "groundingdino": "GroundingDINO",
        "clipseg": "CLIPSeg",
        "library": "the reference library",
    }.get(route.route, route.route)
    return route.because(f"{answers} answers ({route.name})")


def _segment(
    args: argparse.Namespace, state: tuple, image, name: str, channel_axis: int | None, factor=1.0, progress=None
):
    """One 2D image, a pyramid level ``factor`` times coarser than full resolution. ``progress``: its steps, told
    to the batch (:func:`..batch.engine.method_progress`: its display here, a cancelled Dask task's stop there);
    a stack's planes are its steps, told by the stack's loop."""
    from ..methods.text import segment_text

    route, segmenter, run_warnings = state
    result = segment_text(
        image,
        args.prompt,
        route=route,
        segmenter=segmenter,
        template=args.template,
        attributes=_attributes(args),
        box_threshold=args.box_threshold,
        text_threshold=args.text_threshold,
        heatmap_threshold=args.heatmap_threshold,
        refine=not args.no_refine,
        top_k=args.top_k,
        min_similarity=args.min_similarity,
        channel_axis=channel_axis,
        channels=args.channels,
        normalize=args.normalize,
        name=name,
        factor=factor,
        progress=progress,
    )
    result.warnings = [w for w in result.warnings if w not in run_warnings]  # the run's, said once (report.json too)
    return result


def _attributes(args: argparse.Namespace):
    from ..methods.prompt_templates import PromptAttributes

    return PromptAttributes(shape=args.shape, colour=args.colour, description=args.description)


def _trained_reading(args: argparse.Namespace, route, image, path: Path) -> tuple[argparse.Namespace, dict | None]:
    """The run's options with this image's channels read as the trained text model was trained on them (its
    --channel-axis when none is given; a contradicting choice refused), on a copy: the run's are every file's. And
    what its record says of them (segment_text's ``image_channels``: one resolution, one record)."""
    import copy

    import numpy as np

    from ..methods.text.trained_channels import read_as_trained, recorded_channels
    from ..models.preprocessing import full_resolution

    axis, channels, read_with = read_as_trained(
        recorded_channels(route), np.shape(full_resolution(image)), args.channel_axis, args.channels, str(path)
    )
    if (axis, channels) == (args.channel_axis, args.channels):
        return args, read_with
    mapped = copy.copy(args)
    mapped.channel_axis, mapped.channels = axis, channels
    return mapped, read_with


def _text_scale(args: argparse.Namespace, state: tuple, plane_shape: tuple[int, int]) -> float:
    """The working scale a pyramid whose full-resolution plane is ``plane_shape`` is read at: the whole image's, or
    the finer one the library's many-instances entries' objects need (2D slides and a stack's planes alike)."""
    from ..methods.text.answers import text_working_scale

    route, segmenter, _ = state
    return text_working_scale(
        plane_shape, args.prompt, route, segmenter.input_size, top_k=args.top_k, min_similarity=args.min_similarity
    )


def _process(args: argparse.Namespace, state: tuple, path: Path, image) -> dict:
    import numpy as np

    from ..batch.engine import method_progress
    from ..io.multiscale import file_level
    from ..models.preprocessing import is_lazy
    from ..tiling import level_to_full

    args, read_with = _trained_reading(args, state[0], image, path)
    if (stacked := _input_stack(args, image, path)) is not None:
        planes_read_with: list[dict] = []

        def plane_labels(plane, z: int, factor: float = 1.0):
            name = plane_name(path, z, stacked[1])
            result = _segment(args, state, plane, name, _plane_channel_axis(args), factor)
            planes_read_with.append(result.image_channels)
            return result

        def plane_scale(plane_shape: tuple[int, int]) -> float:
            # a stack pyramid's planes read at the level a 2D pyramid of their size is read at
            return _text_scale(args, state, plane_shape)

        record = _stack_record(args, path, image, plane_labels, state[1], axes=stacked[1], plane_scale=plane_scale)
        # a stack read with its channels last (a hyperstack whose file names them) has its planes' reading resolved
        # plane by plane: theirs is the stack's (it was said nowhere)
        read_with = read_with or next((r for r in planes_read_with if r), None)
        return record | ({"image_channels": read_with} if read_with else {})
    # a pyramid: the level a text model sees, or the one the library's many-instances entries' objects need
    scale = _text_scale(args, state, np.shape(image)[:2]) if is_lazy(image) else 1.0  # else read whole: no level
    level, index, factor = file_level(path, image, scale)
    result = _segment(args, state, level, str(path), args.channel_axis, factor, method_progress())
    record, labels = _level_record(args, path, image, result.labels, index, factor)
    record |= result.summary()
    if read_with:
        record["image_channels"] = read_with
    if factor != 1.0:
        record["boxes"] = np.round(level_to_full(result.boxes, factor), 1).tolist()
    if not record.get("objects"):
        record["reason"] = "; ".join(result.warnings) or f"nothing answered '{args.prompt}'"
    _finish_image(args, path, image, labels, record, f"{record['objects']} object(s); {result.reason}")
    return record
