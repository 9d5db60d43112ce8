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


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_script_says_how_it_is_run(script: str, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """`python benchmarks/NAME.py --help` shows each script's usage; oneshot_rotation_report.py, a helper of
    eval_oneshot.py's --rotate, did nothing and exited 0 (a new user could not tell it had not run)."""
    import runpy

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setattr(sys, "argv", [f"{script}.py", "--help"])
    try:
        with pytest.raises(SystemExit) as stopped:
            runpy.run_path(str(BENCHMARKS / f"{script}.py"), run_name="__main__")
    finally:
        sys.modules.pop(script, None)
    said = capsys.readouterr()
    assert stopped.value.code in (0, None) and "usage:" in said.out + said.err, (stopped.value.code, said)
