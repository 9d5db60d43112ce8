"""glibc's malloc keeps the encoder's activation buffers once a model is loaded on the CPU (models.allocator): the
pages of each forward are reused, not faulted in again from the kernel. Real LiteMedSAM, real pixels, each
setting in a fresh process (malloc's thresholds are per process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

#: loads the model, embeds a real image in float32 (the largest activations) and reports its page faults per embed
PROBE = """
import json, resource, sys
import torch
torch.set_num_threads(2)
from skimage import data
from napari_promptseg.models import allocator, load_segmenter
segmenter = load_segmenter("litemedsam", device="cpu")
segmenter.precision = "float32"
image = data.astronaut()
segmenter.embed(image)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    segmenter.cache.clear()
    features = segmenter.embed(image).features
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3
print(json.dumps({"tuned": allocator.keep_large_blocks(), "faults": faults, "sum": float(features.sum())}))
"""


def _probe(tune: str) -> dict:
    env = {**os.environ, "PROMPTSEG_TUNE_MALLOC": tune, "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_a_loaded_model_reuses_its_activation_pages_instead_of_faulting_them_in_again():
    plain, tuned = _probe("0"), _probe("1")
    assert plain["tuned"] is False and tuned["tuned"] is True  # the variable opts out
    # 64 MB float32 activations above glibc's 32 MB mmap ceiling: every forward faulted them in (~30-50k pages)
    assert plain["faults"] > 5000
    assert tuned["faults"] < plain["faults"] / 4
    assert tuned["sum"] == plain["sum"]  # where memory comes from changes no result
