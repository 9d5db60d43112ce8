"""glibc's malloc told to keep the image encoder's large activation buffers for reuse (no Qt, no napari).

glibc serves a block above its mmap threshold (which grows to at most 32 MB) with fresh pages from the kernel and
unmaps them on free. The encoder's activations are 8-64 MB and are freed after every layer, so each forward faulted
in hundreds of MB of zeroed pages again: a third of a bfloat16 forward on a 2-core CPU (benchmarks/README.md,
``bench_segmenter.py``). With a higher mmap threshold and trim threshold, freed blocks stay in the heap and the next
layer reuses them. The cost is memory the process keeps after a job, at most :data:`KEEP_BYTES` above what it uses.
"""

from __future__ import annotations

import ctypes
import logging
import os

logger = logging.getLogger(__name__)

#: blocks up to this size come from the reusable heap; the heap keeps up to this much free memory at its top
KEEP_BYTES = 256 * 2**20
#: set to 0 to leave malloc as it is (e.g. when another allocator is preloaded, or to measure the difference)
ENV = "PROMPTSEG_TUNE_MALLOC"
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_tuned: bool | None = None


def keep_large_blocks() -> bool:
    """Raise glibc's mmap and trim thresholds to :data:`KEEP_BYTES`, once per process. Returns whether malloc is
    tuned: False without glibc (macOS, Windows, musl), or with ``$PROMPTSEG_TUNE_MALLOC=0``."""
    global _tuned
    if _tuned is None:
        _tuned = _tune()
    return _tuned


def _tune() -> bool:
    if os.environ.get(ENV, "1").strip() == "0":
        return False
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols: the malloc it runs, no ldconfig subprocess to find it
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: musl has a mallopt that does nothing
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    tuned = bool(mallopt(_M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES))
    logger.debug("glibc malloc thresholds raised to %d bytes: %s", KEEP_BYTES, tuned)
    return tuned
