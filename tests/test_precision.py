"""The image encoder in bfloat16 (``precision`` / ``$PROMPTSEG_PRECISION`` / ``promptseg --precision``; auto, the
default, takes it on CPUs with native bfloat16: AMX or AVX512-BF16): real LiteMedSAM on a real polyp frame; its
embedding stays close to float32's, is cached apart from it, and the CLI flag holds for one run and is said in the
report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_promptseg.cli import main
from napari_promptseg.errors import PromptsegError
from napari_promptseg.io import read_image, read_mask
from napari_promptseg.methods.interactive import boxes_from_labels
from napari_promptseg.methods.metrics import dice
from napari_promptseg.models.sam_family import (
    NATIVE_BFLOAT16_FLAGS,
    PRECISION_ENV,
    auto_precision,
    cpu_has_native_bfloat16,
    resolve_precision,
)

from .conftest import dataset_pairs


@pytest.fixture(scope="module")
def polyp(shared_data):
    image_path, mask_path = dataset_pairs(shared_data / "polyps_kvasir_text")[3]
    return read_image(image_path)[..., :3], read_mask(mask_path)


def test_bfloat16_embedding_is_close_cached_apart_and_segments_alike(litemedsam, polyp):
    image, mask = polyp
    box = np.array(boxes_from_labels(mask)[:1], np.float32)
    litemedsam.precision = "float32"
    weights_name = f"{litemedsam.name}@{litemedsam.encoder_fingerprint()}"
    assert litemedsam.feature_name == weights_name
    plain = litemedsam.embed(image)
    plain_mask = litemedsam.predict(plain, boxes=box).masks()[0, 0]
    signature = litemedsam.embedding_signature()
    litemedsam.precision = "bfloat16"
    try:
        fast = litemedsam.embed(image)
        fast_mask = litemedsam.predict(fast, boxes=box).masks()[0, 0]
        fast_signature = litemedsam.embedding_signature()
    finally:
        litemedsam.precision = None
    assert fast.key != plain.key and fast.features.dtype == torch.float32  # cached apart, read as float32
    change = float((fast.features - plain.features).norm() / plain.features.norm())
    assert 0 < change < 0.1
    assert "precision" not in signature and fast_signature["precision"] == "bfloat16"  # a float32 disk entry stays
    assert dice(fast_mask, plain_mask) > 0.95 and dice(fast_mask, mask) > 0.8
    litemedsam.precision = "float32"
    try:
        assert litemedsam.embed(image) is plain  # float32 again: its own entry, still cached
    finally:
        litemedsam.precision = None


def test_auto_takes_bfloat16_only_on_a_cpu_with_native_bfloat16(litemedsam, monkeypatch):
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    native = cpu_has_native_bfloat16()
    flags = Path("/proc/cpuinfo").read_text().split()
    assert native == any(flag in flags for flag in NATIVE_BFLOAT16_FLAGS)  # torch's probes agree with the kernel
    expected = "bfloat16" if native else "float32"
    assert litemedsam.precision == resolve_precision("auto") == expected  # the default is auto
    weights_name = f"{litemedsam.name}@{litemedsam.encoder_fingerprint()}"
    assert litemedsam.feature_name == (weights_name if expected == "float32" else f"{weights_name}+bfloat16")
    assert resolve_precision("auto", "cuda") == "float32"  # accelerators keep float32 (not measured there)
    monkeypatch.setenv(PRECISION_ENV, "float32")
    assert litemedsam.precision == "float32"  # the variable opts out


def test_a_method_pins_what_auto_means_but_not_an_explicit_choice(monkeypatch):
    """register() runs its region stage with auto = float32; a user's --precision still wins."""
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    with auto_precision("float32"):
        assert resolve_precision(None) == resolve_precision("auto") == "float32"
        assert resolve_precision("bfloat16") == "bfloat16"
        monkeypatch.setenv(PRECISION_ENV, "bfloat16")
        assert resolve_precision(None) == "bfloat16"
    monkeypatch.delenv(PRECISION_ENV)
    assert resolve_precision(None) == ("bfloat16" if cpu_has_native_bfloat16() else "float32")


def test_an_unknown_precision_is_a_clear_error(litemedsam, polyp, monkeypatch):
    with pytest.raises(PromptsegError, match="precision: expected one of auto, float32, bfloat16, got 'fp16'"):
        litemedsam.precision = "fp16"
    monkeypatch.setenv(PRECISION_ENV, "half")
    expected = rf"\${PRECISION_ENV}: expected one of auto, float32, bfloat16, got 'half'"
    with pytest.raises(PromptsegError, match=expected):
        litemedsam.embed(polyp[0][:64, :64])


def test_cli_precision_holds_for_the_run_and_is_in_the_report(litemedsam, polyp, tmp_path, monkeypatch):
    assert litemedsam._precision is None  # the loaded model follows the environment, which the flag sets
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    path = tmp_path / "polyp.tif"
    tifffile.imwrite(path, polyp[0])
    x0, y0, x1, y1 = boxes_from_labels(polyp[1])[0]
    box = [str(v) for v in (x0, y0, x1, y1)]
    assert main(["--precision", "bfloat16", "segment", str(path), "--box", *box, "-o", str(tmp_path / "fast")]) == 0
    assert PRECISION_ENV not in os.environ  # for that run only
    assert main(["--precision", "float32", "segment", str(path), "--box", *box, "-o", str(tmp_path / "plain")]) == 0
    assert main(["segment", str(path), "--box", *box, "-o", str(tmp_path / "default")]) == 0
    fast = json.loads((tmp_path / "fast" / "report.json").read_text())
    plain = json.loads((tmp_path / "plain" / "report.json").read_text())
    default = json.loads((tmp_path / "default" / "report.json").read_text())
    assert fast["encoder_precision"] == "bfloat16" and plain["encoder_precision"] == "float32"
    assert default["encoder_precision"] == resolve_precision("auto")
    labels = [tifffile.imread(tmp_path / run / "polyp.tif") > 0 for run in ("fast", "plain")]
    assert labels[0].any() and dice(labels[0], labels[1]) > 0.95
