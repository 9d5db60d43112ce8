"""ANTsPy SyN (its defaults) on one pair, run by bench_registration.py in its own environment.

antspyx 0.6.3 requires numpy < 2.4 and this project's venv has numpy 2.4, so ANTs lives in a separate venv
(``python -m venv /tmp/ants && /tmp/ants/bin/pip install antspyx==0.6.3``) and this script runs there:

    /tmp/ants/bin/python benchmarks/ants_worker.py pair.npz out.npz

``pair.npz`` holds ``fixed`` and ``moving`` float32 gray images; ``out.npz`` gets, for every fixed pixel, the moving
pixel (``x``, ``y``; NaN outside the moving image) it is mapped to, and ``seconds`` of the registration call.
"""

from __future__ import annotations

import sys
import time

import ants
import numpy as np


def main() -> None:
    pair = np.load(sys.argv[1])
    fixed, moving = ants.from_numpy(pair["fixed"]), ants.from_numpy(pair["moving"])
    t0 = time.perf_counter()
    reg = ants.registration(fixed=fixed, moving=moving, type_of_transform="SyN", random_seed=0)
    seconds = time.perf_counter() - t0
    h, w = pair["moving"].shape
    # warping images of the moving pixel coordinates gives, at each fixed pixel, the moving position it samples
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    maps = []
    for coordinate in (xs, ys):
        image = ants.from_numpy(coordinate)
        warped = ants.apply_transforms(
            fixed=fixed, moving=image, transformlist=reg["fwdtransforms"], interpolator="linear", defaultvalue=-1e6
        ).numpy()
        maps.append(np.where(warped < -1e5, np.nan, warped))
    np.savez(sys.argv[2], x=maps[0], y=maps[1], seconds=seconds)


if __name__ == "__main__":
    main()
