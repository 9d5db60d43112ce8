"""Defaults that the Python functions, the CLI and the widgets share, each written once.

Plain numbers in a module that imports nothing: the CLI shows them in its --help without importing the methods
(torch takes seconds), and the widgets' boxes start at them, so no copy can drift from the function's default.
"""

from __future__ import annotations

#: region pairs: Tell2Reg pairs region prototypes whose cosine similarity is above 0.8
PAIR_SIMILARITY = 0.8
#: bending-energy weight of the region route's dense displacement field (register)
FIELD_SMOOTHNESS = 0.1
#: GroundingDINO: keep boxes scoring at least this, and phrase tokens scoring at least that
BOX_THRESHOLD = 0.35
TEXT_THRESHOLD = 0.25
#: CLIPSeg and trained text models: pixels above this probability (medvlsm uses 0.5)
HEATMAP_THRESHOLD = 0.5
#: reference library: a prompt matches an entry from this cosine similarity (exact and plural names count 1.0), and
#: the best this many matching exemplars are ensembled
MIN_SIMILARITY = 0.6
TOP_K = 3
