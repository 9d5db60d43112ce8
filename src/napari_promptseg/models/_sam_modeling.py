"""``segment_anything.modeling`` without running ``segment_anything/__init__.py`` first.

That ``__init__`` imports SAM's predictor and mask generator and, through them, torchvision: 1.9 s of every process
that builds a model (each CLI run, napari's first prompt, every Dask worker), for code we never call. The modeling
subpackage itself needs only torch. The package is registered unexecuted while its subpackage is imported, and runs
its own ``__init__`` the first time anything else asks it for a name (``from segment_anything import
SamPredictor`` still works, in this process too).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from types import ModuleType

_lock = threading.RLock()  # re-entered if the package's import asks the package for a name


def sam_modeling() -> ModuleType:
    """The ``segment_anything.modeling`` module."""
    with _lock:
        if "segment_anything" not in sys.modules:
            spec = importlib.util.find_spec("segment_anything")
            if spec is None or spec.loader is None:
                raise ImportError("segment_anything is not installed: pip install segment-anything")
            package = importlib.util.module_from_spec(spec)

            def finish_import(name: str) -> object:
                # first request for a name the modeling import did not set: run the package's own __init__, once
                with _lock:
                    if package.__dict__.pop("__getattr__", None) is not None:
                        spec.loader.exec_module(package)
                return getattr(package, name)

            package.__getattr__ = finish_import  # PEP 562: called only for names not yet in the module
            sys.modules["segment_anything"] = package
        return importlib.import_module("segment_anything.modeling")
