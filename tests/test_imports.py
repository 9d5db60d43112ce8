"""Every relative import in the package names a module that exists.

Many imports sit inside functions (so that a CLI run or a widget loads only what it uses); a wrong number of dots
there surfaces only when a user reaches that line (``segment_like`` without a segmenter once raised
``No module named 'napari_promptseg.methods.models'``)."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

import napari_promptseg

PACKAGE_DIR = Path(napari_promptseg.__file__).parent


def _relative_imports() -> list[tuple[str, int, str]]:
    found = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        if "_vendor" in path.parts:
            continue
        parts = ("napari_promptseg", *path.relative_to(PACKAGE_DIR).with_suffix("").parts)
        package = parts[:-1]  # the package a module (or an __init__) resolves its relative imports against
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ((node.module,) if node.module else ()))
                found.append((str(path.relative_to(PACKAGE_DIR)), node.lineno, target))
    return found


def test_every_relative_import_resolves() -> None:
    imports = _relative_imports()
    assert len(imports) > 100  # the walk found the package's imports, lazy ones included
    missing = [item for item in imports if not _exists(item[2])]
    assert missing == []


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent along the dotted path is missing, or a module and not a package
        return False


def _run(code: str) -> str:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PROMPTSEG_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()[-1]


def test_a_process_without_a_gui_loads_litemedsam_without_triton() -> None:
    """A CLI run or a batch worker (no Qt, no napari, no Mesa) never imported triton for LiteMedSAM, which does not
    use it: 0.6 s of every start. A segmentation then runs without it too."""
    code = (
        "import sys, numpy as np\n"
        "from skimage import data\n"
        "from napari_promptseg.models import load_segmenter\n"
        "from napari_promptseg.methods.interactive import segment_prompts\n"
        "result = segment_prompts(data.coins(), load_segmenter('litemedsam'), boxes=np.array([[60., 10, 120, 70]]))\n"
        "assert int(result.labels.max()) == 1\n"
        "print('triton' in sys.modules)\n"
    )
    assert _run(code) == "False"


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed with this torch")
def test_once_a_gui_toolkit_is_imported_triton_is_imported_with_its_own_llvm() -> None:
    """Where napari's canvas can load Mesa's LLVM (Qt imported), a model load still imports triton first, with
    RTLD_DEEPBIND (tests/test_sample_data.py runs the case that crashed, in a shown viewer)."""
    code = (
        "import sys, qtpy\n"
        "from napari_promptseg.models._native import load_triton_safely\n"
        "load_triton_safely()\n"
        "print('triton' in sys.modules)\n"
    )
    assert _run(code) == "True"


#: the core library: the Python API, the batch engine, the methods, models and I/O the CLI and widgets share
CORE = (
    "batch",
    "io",
    "methods",
    "models",
    "__init__.py",
    "tiling.py",
    "errors.py",
    "callbacks.py",
    "disk_errors.py",
    "_interrupts.py",
)
#: what the core must not import: the front ends built on it, and the GUI toolkits (a batch on a cluster node has
#: neither a display nor, often, napari installed)
FRONT_ENDS = ("napari_promptseg.cli", "napari_promptseg._widgets", "napari_promptseg._reader", "napari_promptseg._demo")
GUI_PACKAGES = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "vispy", "magicgui", "superqt")


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports (absolute names; lazy imports inside functions too)."""
    parts = ("napari_promptseg", *path.relative_to(PACKAGE_DIR).with_suffix("").parts)
    package = parts[:-1]  # what its relative imports resolve against (an __init__'s: its own package)
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - (node.level - 1)] + ((node.module,) if node.module else ()))
            else:
                base = node.module or ""
            # "from .. import cli" names the module in the alias
            found += [(node.lineno, base), *((node.lineno, f"{base}.{a.name}") for a in node.names)]
    return found


def _core_files() -> list[Path]:
    files = []
    for part in CORE:
        where = PACKAGE_DIR / part
        files += sorted(where.rglob("*.py")) if where.is_dir() else [where]
    return files


def test_the_core_library_imports_no_front_end_nor_gui_toolkit() -> None:
    """The batch engine once wrote a time point's labels with the CLI's private writer (batch -> cli): the core
    (batch, io, methods, models) is what the CLI and widgets are built on, never the other way round, and it runs
    where neither Qt nor napari is."""
    files = _core_files()
    assert len(files) > 80 and PACKAGE_DIR / "batch" / "task.py" in files
    wrong = [
        f"{path.relative_to(PACKAGE_DIR)}:{line}: {module}"
        for path in files
        for line, module in _imported_modules(path)
        if any(module == bad or module.startswith(f"{bad}.") for bad in (*FRONT_ENDS, *GUI_PACKAGES))
    ]
    assert wrong == []
