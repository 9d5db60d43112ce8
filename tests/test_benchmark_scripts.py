"""Every benchmark script still imports: the benchmarks share helpers (eval_oneshot, the library), and a helper
moved into the library once left eval_instances.py unable to start."""

import importlib
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
#: runs in ANTs' own venv (antspyx needs an older numpy), not the project's
OWN_VENV = {"ants_worker"}
SCRIPTS = sorted(p.stem for p in BENCHMARKS.glob("*.py") if p.stem not in OWN_VENV)


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_script_imports(script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    try:
        importlib.import_module(script)  # ImportError/NameError at module level fail the test
    finally:
        sys.modules.pop(script, None)
