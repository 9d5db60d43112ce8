"""Every relative import in the package names a module that exists.

Many imports sit inside functions (so that a CLI run or a widget loads only what it uses); a wrong number of dots
there surfaces only when a user reaches that line (``segment_like`` without a segmenter once raised
``No module named 'napari_promptseg.methods.models'``)."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

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
