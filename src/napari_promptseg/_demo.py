"""`make demo`: the main jobs on the embedded default model, offline.

1. Segments real images from box prompts with LiteMedSAM and writes instance labels (TIFF), overlays (PNG) and a
   report into the output folder, printing each step and its time. Boxes come from the images' ground truth, so
   the printed Dice is the model's box-prompted accuracy on that image.
2. Text prompts offline: saves one labelled image per dataset as a named exemplar in a demo reference library
   (``OUT/library``, not the user's), then segments *another* image from a typed prompt ("lungs", "glands"); the
   route that answered and why are printed (no GroundingDINO/CLIPSeg weights here, so the library answers).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import numpy as np

from .io import read_image, read_mask, write_labels, write_overlay
from .methods.interactive import boxes_from_labels, segment_prompts
from .methods.metrics import dice
from .models import load_segmenter

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"  # ../shared/data beside the checkout
#: (name, dataset folder, image, mask) of real shared images, used when ../shared/data is present
SHARED_EXAMPLES = [
    ("lungs_xray", "lungs_cxr_shenzhen", "images/CHNCXR_0017_0.jpg", "masks/CHNCXR_0017_0.jpg"),
    (
        "polyp_endoscopy",
        "polyps_kvasir_text",
        "images/cju160wshltz10993i1gmqxbe.jpg",
        "masks/cju160wshltz10993i1gmqxbe.jpg",
    ),
    ("glands_histology", "glands_glas", "images/testA_25.jpg", "masks/testA_25.jpg"),
]
#: (typed prompt, exemplar name, description, dataset folder, exemplar image, target image), masks under masks/
TEXT_EXAMPLES = [
    ("lungs", "lung", "lung field on a chest X-ray", "lungs_cxr_shenzhen", "CHNCXR_0017_0.jpg", "CHNCXR_0052_0.jpg"),
    ("glands", "gland", "colon gland in H&E histology", "glands_glas", "testA_25.jpg", "testA_26.jpg"),
]


def _examples(shared: Path) -> Iterator[tuple[str, np.ndarray, np.ndarray, str]]:
    folder = files("napari_promptseg") / "sample_data"
    nuclei = read_image(str(folder / "nuclei_dsb2018.png"))[..., 0]
    yield (
        "nuclei_fluorescence",
        nuclei,
        read_image(str(folder / "nuclei_dsb2018_labels.tif"), role="labels"),
        "bundled DSB2018",
    )
    for name, dataset, image, mask in SHARED_EXAMPLES:
        root = shared / dataset
        if (root / image).is_file():
            yield name, read_image(root / image), read_mask(root / mask), f"shared/data/{dataset}"


def run_demo(output: Path, shared: Path = SHARED_DATA) -> dict:
    output.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    segmenter = load_segmenter("litemedsam", device="cpu")
    print(f"loaded {segmenter.name} (bundled weights, offline) in {time.perf_counter() - t0:.2f} s")
    if not shared.is_dir():
        print(f"note: {shared} not found; running on the bundled sample only")
    records = []
    for name, image, truth, source in _examples(shared):
        boxes = boxes_from_labels(truth, min_area=20)
        result = segment_prompts(image, segmenter, boxes=boxes, name=name)
        labels_path = write_labels(output / f"{name}.tif", result.labels)
        overlay_path = write_overlay(output / f"{name}_overlay.png", image, result.labels)
        score = dice(result.labels > 0, truth > 0)
        t = result.timings
        print(
            f"{name:<20} {image.shape!s:<15} {len(boxes):>3} box(es) -> {int(result.labels.max()):>3} object(s); "
            f"encode {t['embed_s']:.2f} s, decode {t['decode_s']:.2f} s, paint {t['paint_s']:.2f} s; "
            f"Dice vs ground truth {score:.3f}; wrote {labels_path.name}, {overlay_path.name}"
        )
        records.append(
            {
                "name": name,
                "source": source,
                "shape": list(image.shape),
                "boxes": len(boxes),
                "objects": int(result.labels.max()),
                "dice": round(score, 4),
                "timings_s": {k: round(v, 4) for k, v in t.items()},
                "labels": str(labels_path),
                "overlay": str(overlay_path),
            }
        )
    report = {
        "model": segmenter.name,
        "encoder_precision": segmenter.precision,  # auto: bfloat16 on CPUs with native bfloat16
        "route": "ground-truth boxes",
        "images": records,
        "text_prompts": run_text_demo(output, shared, segmenter) if shared.is_dir() else [],
    }
    (output / "report.json").write_text(json.dumps(report, indent=2))
    print(f"done in {time.perf_counter() - t0:.1f} s; results in {output.resolve()} (report.json, *.tif, *.png)")
    return report


def run_text_demo(output: Path, shared: Path, segmenter) -> list[dict]:
    """Named exemplars in a demo library answer typed prompts on other images (the offline text route)."""
    import shutil

    from .io.library import ReferenceLibrary
    from .methods.text import segment_text

    library_dir = output / "library"
    shutil.rmtree(library_dir, ignore_errors=True)  # the demo's own library, rebuilt on every run
    library = ReferenceLibrary.open(library_dir)
    records = []
    for prompt, name, description, dataset, exemplar, target in TEXT_EXAMPLES:
        root = shared / dataset
        library.add(name, read_image(root / "images" / exemplar), read_mask(root / "masks" / exemplar), description)
        image, truth = read_image(root / "images" / target), read_mask(root / "masks" / target)
        t0 = time.perf_counter()
        result = segment_text(image, prompt, library=library, segmenter=segmenter, device="cpu")
        seconds = time.perf_counter() - t0
        stem = f"text_{prompt}_{Path(target).stem}"
        write_labels(output / f"{stem}.tif", result.labels)
        write_overlay(output / f"{stem}_overlay.png", image, result.labels)
        score = dice(result.labels > 0, truth > 0)
        print(
            f"text {prompt!r:<9} on {target}: {len(result.phrases)} object(s) in {seconds:.1f} s, Dice vs ground truth "
            f"{score:.3f}; route {result.route}: {result.reason}"
        )
        records.append(
            {
                "prompt": prompt,
                "target": f"shared/data/{dataset}/images/{target}",
                "exemplar": f"shared/data/{dataset}/images/{exemplar}",
                **result.summary(),
                "dice": round(score, 4),
                "labels": str(output / f"{stem}.tif"),
            }
        )
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("results"))
    parser.add_argument("--shared-data", type=Path, default=SHARED_DATA)
    parser.add_argument("--napari", action="store_true", help="afterwards open napari with the plugin docked")
    args = parser.parse_args(argv)
    run_demo(args.output, args.shared_data)
    if args.napari:
        import napari

        viewer = napari.Viewer()
        viewer.open_sample("napari-promptseg", "nuclei")
        viewer.window.add_plugin_dock_widget("napari-promptseg", "Interactive (boxes and points)")
        napari.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
