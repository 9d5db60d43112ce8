"""Speed of the promptable segmenter (LiteMedSAM, CPU): reference modules vs. the fast paths, side by side.

Measured on one real image (skimage ``cell`` by default), each number the median of ``--repeats`` runs, the two
variants interleaved run by run so that both see the same machine load (the load average is recorded):

- encoder: ``segmenter.embed(image)`` with the embedding cache cleared (preprocessing included);
- decode per prompt: ``predict`` of one box on a cached embedding;
- N boxes (default 64) decoded serially (N ``predict`` calls) vs. batched (one call), and batched decoding with
  several decode chunk sizes (why the reference is slower batched than serial);
- prompt -> mask latency end to end (``embed`` + ``predict`` + ``masks()`` on the original grid), with the
  embedding cached (the interactive case) and uncached;
- the encoder's FLOPs (``FlopCounterMode`` on the reference encoder) divided by a measured sgemm rate on the same
  threads = the encoder's floor; encoder time / floor;
- the largest difference of the fast outputs from the reference ones (features, logits, IoU scores);
- where the time goes: top operators by self CPU time (torch.profiler), encoder and batched decoding.

    python benchmarks/bench_segmenter.py --output benchmarks/results [--repeats 5] [--boxes 64] [--image PATH]

Writes OUTPUT/segmenter_speed.json and prints a summary table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from napari_promptseg.models import load_segmenter, sam_family
from napari_promptseg.models.cache import EmbeddingCache

CHUNK_SWEEP = (1, 2, 4, 16, 64)
#: sam_family.DECODE_CHUNK before the fast paths (commit 1470b86): the "reference" variant runs with it
REFERENCE_DECODE_CHUNK = 16
ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "OMP_WAIT_POLICY")


def load_image(path: str | None) -> tuple[np.ndarray, str]:
    if path is None:
        from skimage import data

        return data.cell(), "skimage.data.cell()"
    from napari_promptseg.io import read_image

    return read_image(path), str(path)


def random_boxes(shape: tuple[int, int], n: int, seed: int = 0) -> np.ndarray:
    """n boxes (x0, y0, x1, y1) of 20-80 px inside the image: nucleus- to cell-sized prompts."""
    h, w = shape
    rng = np.random.default_rng(seed)
    size = rng.uniform(20, 80, (n, 2))
    x0 = rng.uniform(0, w - size[:, 0])
    y0 = rng.uniform(0, h - size[:, 1])
    return np.stack([x0, y0, x0 + size[:, 0], y0 + size[:, 1]], 1).astype(np.float32)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def summary(times: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": len(times)}


def sgemm_seconds(a: torch.Tensor, b: torch.Tensor) -> float:
    return timed(lambda: torch.mm(a, b))


def top_ops(fn: Callable[[], object], n: int = 10) -> list[dict[str, object]]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [
        {
            "op": e.key,
            "self_ms": round(e.self_cpu_time_total / 1e3, 2),
            "share": round(e.self_cpu_time_total / total, 3),
            "calls": e.count,
        }
        for e in events[:n]
    ]


def count_flops(fn: Callable[[], object]) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


MEASUREMENTS = (
    "encoder",
    "decode_one_box",
    "prompt_latency_cached",
    "prompt_latency_uncached",
    "boxes_serial",
    "boxes_batched",
)


@torch.inference_mode()
def measure(key: str, segmenter, image: np.ndarray, boxes: np.ndarray) -> float:
    """One run of one latency, in seconds, on the segmenter's current variant and embedding cache."""
    one_box = boxes[:1]

    def click_to_mask() -> np.ndarray:  # what the interactive widget does per box
        return segmenter.predict(segmenter.embed(image), boxes=one_box).masks()

    if key in ("encoder", "prompt_latency_uncached"):
        segmenter.cache.clear()
        return timed(lambda: segmenter.embed(image)) if key == "encoder" else timed(click_to_mask)
    embedding = segmenter.embed(image)  # cached after the first call
    segmenter.predict(embedding, boxes=one_box)  # steady state: the decoder's per-image context is cached too
    if key == "prompt_latency_cached":
        return timed(click_to_mask)
    if key == "decode_one_box":
        return timed(lambda: segmenter.predict(embedding, boxes=one_box))
    if key == "boxes_serial":
        return timed(lambda: [segmenter.predict(embedding, boxes=box[None]) for box in boxes])
    if key == "boxes_batched":
        return timed(lambda: segmenter.predict(embedding, boxes=boxes))
    raise ValueError(key)


def encoder_alternatives(segmenter, x: torch.Tensor, repeats: int) -> dict[str, dict[str, float]]:
    """Generic ways to speed up the *reference* encoder, for comparison with the hand-written fast path."""
    import copy

    def runs(fn: Callable[[], object]) -> dict[str, float]:
        fn()
        fn()  # warm-up (oneDNN primitive caches, TorchScript profiling executor)
        return summary([timed(fn) for _ in range(repeats)])

    out: dict[str, dict[str, float]] = {}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation and tracer warnings
        reference = segmenter.image_encoder
        expected = reference(x)
        out["reference"] = runs(lambda: reference(x))
        out["fast"] = runs(lambda: segmenter._encoder()(x))
        channels_last = copy.deepcopy(reference).to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        out["channels_last"] = runs(lambda: channels_last(x_cl))
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(copy.deepcopy(reference), x)))
        out["jit_trace_freeze_optimize_for_inference"] = runs(lambda: frozen(x))
        start = time.perf_counter()
        compiled = torch.compile(copy.deepcopy(reference))
        got = compiled(x)
        compile_s = time.perf_counter() - start
        out["torch_compile_inductor"] = {
            **runs(lambda: compiled(x)),
            "compile_s": compile_s,
            "max_abs_diff": float((got - expected).abs().max()),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", "-o", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--repeats", type=int, default=5, help="runs per measurement (median reported)")
    parser.add_argument("--boxes", type=int, default=64, help="boxes for serial vs batched decoding")
    parser.add_argument("--image", default=None, help="image file (default: skimage's cell)")
    parser.add_argument("--sgemm-size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, = cores)")
    parser.add_argument("--no-sweep", action="store_true", help="skip the decode chunk-size sweep")
    parser.add_argument("--no-profile", action="store_true", help="skip the torch.profiler breakdown")
    parser.add_argument(
        "--alternatives",
        action="store_true",
        help="also time generic speed-ups of the reference encoder: channels_last, TorchScript trace + freeze + "
        "optimize_for_inference, torch.compile (inductor; compiles for about a minute)",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.boxes < 1:
        print("bench_segmenter: --repeats and --boxes must be >= 1", file=sys.stderr)
        return 2

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        segmenter = load_segmenter("litemedsam", device="cpu")
    image, image_name = load_image(args.image)
    boxes = random_boxes(image.shape[:2], args.boxes)
    one_box = boxes[:1]
    variants = {"reference": False, "fast": True}
    default_chunk = sam_family.DECODE_CHUNK
    # the reference variant is the code as shipped before the fast paths: modules as published, chunks of 16
    decode_chunk = {"reference": REFERENCE_DECODE_CHUNK, "fast": default_chunk}
    caches = {name: EmbeddingCache() for name in variants}  # each variant caches its own features

    def use(name: str) -> None:
        segmenter.fast = variants[name]
        segmenter.cache = caches[name]
        sam_family.DECODE_CHUNK = decode_chunk[name]

    # -- equality of the fast paths with the reference modules (and warm-up of both) --------------------------
    with torch.inference_mode():
        use("reference")
        ref_emb = segmenter.embed(image)
        ref_pred = segmenter.predict(ref_emb, boxes=boxes)
        use("fast")
        fast_emb = segmenter.embed(image)
        fast_pred = segmenter.predict(fast_emb, boxes=boxes)
        fast_on_ref = segmenter.predict(ref_emb, boxes=boxes)  # decoder alone, same features
    equality = {
        "features_max_abs_diff": float((fast_emb.features - ref_emb.features).abs().max()),
        "features_max_abs": float(ref_emb.features.abs().max()),
        "decoder_logits_max_abs_diff_same_features": float(
            (fast_on_ref.low_res_logits - ref_pred.low_res_logits).abs().max()
        ),
        "end_to_end_logits_max_abs_diff": float((fast_pred.low_res_logits - ref_pred.low_res_logits).abs().max()),
        "logits_max_abs": float(ref_pred.low_res_logits.abs().max()),
        "iou_scores_max_abs_diff": float(np.abs(fast_pred.scores - ref_pred.scores).max()),
        "mask_pixels_differing": float((fast_pred.masks() != ref_pred.masks()).mean()),
    }

    # -- interleaved timing ----------------------------------------------------------------------------------
    a = torch.randn(args.sgemm_size, args.sgemm_size)
    b = torch.randn(args.sgemm_size, args.sgemm_size)
    sgemm_seconds(a, b)
    times: dict[str, dict[str, list[float]]] = {name: {key: [] for key in MEASUREMENTS} for name in variants}
    sgemm_times: list[float] = []
    loads: list[float] = []
    # A/B interleaved per measurement, the order alternating between repeats: the load of a shared machine
    # changes within seconds, and both variants must see the same
    for repeat in range(args.repeats):
        loads.append(os.getloadavg()[0])
        sgemm_times.append(sgemm_seconds(a, b))
        order = list(variants) if repeat % 2 == 0 else list(reversed(variants))
        for key in MEASUREMENTS:
            for name in order:
                use(name)
                times[name][key].append(measure(key, segmenter, image, boxes))
        sgemm_times.append(sgemm_seconds(a, b))
    use("fast")
    sam_family.DECODE_CHUNK = default_chunk

    sweep: dict[str, dict[str, dict[str, float]]] = {}
    if not args.no_sweep:
        # batched decoding of all boxes with several chunk sizes; runs interleaved like the main measurements
        sweep_runs: dict[tuple[str, int], list[float]] = {(n, c): [] for n in variants for c in CHUNK_SWEEP}
        with torch.inference_mode():
            for _ in range(max(1, min(args.repeats, 3))):
                for name in variants:
                    use(name)
                    embedding = segmenter.embed(image)
                    for chunk in CHUNK_SWEEP:
                        sam_family.DECODE_CHUNK = chunk
                        sweep_runs[name, chunk].append(timed(partial(segmenter.predict, embedding, boxes=boxes)))
        sweep = {n: {str(c): summary(sweep_runs[n, c]) for c in CHUNK_SWEEP} for n in variants}
        use("fast")
        sam_family.DECODE_CHUNK = default_chunk

    # -- FLOPs, floor, profile -----------------------------------------------------------------------------
    x = torch.rand(1, 3, segmenter.input_size, segmenter.input_size)
    with torch.inference_mode():
        encoder_flops = count_flops(lambda: segmenter.image_encoder(x))
        use("reference")
        embedding = segmenter.embed(image)
        decoder_flops = count_flops(lambda: segmenter.predict(embedding, boxes=one_box))
        use("fast")
        fast_decoder_flops = count_flops(lambda: segmenter.predict(embedding, boxes=one_box))
    sgemm_rate = 2 * args.sgemm_size**3 / statistics.median(sgemm_times)
    floor_s = encoder_flops / sgemm_rate

    profile: dict[str, object] = {}
    if not args.no_profile:
        few = boxes[: min(len(boxes), 16)]
        for name in variants:
            use(name)
            segmenter.cache.clear()
            with torch.inference_mode():
                profile[f"{name}_encoder"] = top_ops(lambda: segmenter.embed(image))
                embedding = segmenter.embed(image)
                profile[f"{name}_decode_{len(few)}_boxes"] = top_ops(partial(segmenter.predict, embedding, boxes=few))
    use("fast")
    sam_family.DECODE_CHUNK = default_chunk
    alternatives = encoder_alternatives(segmenter, x, args.repeats) if args.alternatives else {}

    results: dict[str, object] = {}
    for name in variants:
        t = {key: summary(values) for key, values in times[name].items()}
        n = len(boxes)
        serial, batched = t["boxes_serial"]["median_s"], t["boxes_batched"]["median_s"]
        results[name] = {
            **t,
            "decode_per_prompt_batched_s": batched / n,
            "decode_per_prompt_serial_s": serial / n,
            "batched_speedup_over_serial": serial / batched,
            "encoder_over_floor": t["encoder"]["median_s"] / floor_s,
        }
    ref, fast = results["reference"], results["fast"]
    speedups = {
        key: ref[key]["median_s"] / fast[key]["median_s"]
        for key in ("encoder", "decode_one_box", "prompt_latency_cached", "prompt_latency_uncached")
        + ("boxes_serial", "boxes_batched")
    }
    report = {
        "benchmark": "bench_segmenter",
        "model": segmenter.name,
        "image": {"name": image_name, "shape": list(image.shape), "dtype": str(image.dtype)},
        "boxes": len(boxes),
        "repeats": args.repeats,
        "default_decode_chunk": default_chunk,
        "machine": {
            "cpu": _cpu_model(),
            "logical_cpus": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "env": {k: os.environ.get(k) for k in ENV_VARS},
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "load_average_1min_per_repeat": loads,
        },
        "flops": {
            "encoder": encoder_flops,
            "decoder_per_prompt_reference": decoder_flops,
            "decoder_per_prompt_fast": fast_decoder_flops,
        },
        "sgemm": {
            "size": args.sgemm_size,
            "gflops_median": sgemm_rate / 1e9,
            "gflops_best": 2 * args.sgemm_size**3 / min(sgemm_times) / 1e9,
            "runs": len(sgemm_times),
        },
        "encoder_floor_s": floor_s,
        "targets": {
            "encoder_over_floor_max": 2.0,
            "prompt_latency_cached_max_s": 0.1,
            "batched_speedup_over_serial_min": 1.0,
        },
        "results": results,
        "speedup_fast_over_reference": speedups,
        "decode_chunk_sweep": sweep,
        "equality": equality,
        "profile_top_ops": profile,
        "encoder_alternatives": alternatives,
        "wall_time_s": time.perf_counter() - started,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    out = args.output / "segmenter_speed.json"
    out.write_text(json.dumps(report, indent=2))
    print_summary(report)
    print(f"wrote {out}")
    return 0


def print_summary(report: dict) -> None:
    m = report["machine"]
    print(
        f"{report['model']} on {report['image']['name']} {report['image']['shape']}, {m['torch_threads']} threads, "
        f"load average {m['load_average_before'][0]:.2f} -> {m['load_average_after'][0]:.2f}"
    )
    print(
        f"encoder {report['flops']['encoder'] / 1e9:.1f} GFLOP; sgemm {report['sgemm']['gflops_median']:.0f} GFLOP/s "
        f"-> floor {report['encoder_floor_s'] * 1e3:.0f} ms"
    )
    rows = [
        ("encoder (embed, uncached)", "encoder"),
        ("decode 1 box", "decode_one_box"),
        ("prompt->mask, cached emb.", "prompt_latency_cached"),
        ("prompt->mask, uncached", "prompt_latency_uncached"),
        (f"{report['boxes']} boxes serial", "boxes_serial"),
        (f"{report['boxes']} boxes batched", "boxes_batched"),
    ]
    ref, fast = report["results"]["reference"], report["results"]["fast"]
    print(f"{'median of ' + str(report['repeats']):28s} {'reference':>12s} {'fast':>12s} {'speed-up':>9s}")
    for label, key in rows:
        r, f = ref[key]["median_s"] * 1e3, fast[key]["median_s"] * 1e3
        print(f"{label:28s} {r:10.1f}ms {f:10.1f}ms {r / f:8.2f}x")
    for name, res in (("reference", ref), ("fast", fast)):
        print(
            f"{name:9s}: encoder / floor {res['encoder_over_floor']:.2f}; batched / serial speed-up "
            f"{res['batched_speedup_over_serial']:.2f}; "
            f"per prompt batched {res['decode_per_prompt_batched_s'] * 1e3:.1f} ms"
        )
    eq = report["equality"]
    print(
        f"max |fast - reference|: features {eq['features_max_abs_diff']:.1e}, "
        f"logits {eq['end_to_end_logits_max_abs_diff']:.1e}"
        f" (|logits| <= {eq['logits_max_abs']:.0f}), mask pixels differing {eq['mask_pixels_differing']:.1e}"
    )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    sys.exit(main())
