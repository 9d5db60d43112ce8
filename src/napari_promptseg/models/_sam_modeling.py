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

_lock = threading.RLock()  # re-entered when the package's __init__ asks the package for a name


def sam_modeling() -> ModuleType:
    """The ``segment_anything.modeling`` module."""
    with _lock:
        if "segment_anything" in sys.modules:
            return importlib.import_module("segment_anything.modeling")
        spec = importlib.util.find_spec("segment_anything")
        if spec is None or spec.loader is None:
            raise ImportError("segment_anything is not installed: pip install segment-anything")
        package = importlib.util.module_from_spec(spec)
        finished = False

        def finish_import(name: str) -> object:
            # the first request for a name the modeling import did not set runs the package's own __init__; other
            # threads wait for it here, and a name asked for during it is missing, as in any import in progress
            nonlocal finished
            with _lock:
                if not finished:
                    finished = True
                    try:
                        spec.loader.exec_module(package)
                    except BaseException:
                        sys.modules.pop("segment_anything", None)  # a later import starts again
                        raise
                    finally:
                        package.__dict__.pop("__getattr__", None)
            try:
                return package.__dict__[name]
            except KeyError:
                raise AttributeError(f"module 'segment_anything' has no attribute {name!r}") from None

        package.__getattr__ = finish_import  # PEP 562: called only for names not in the module
        sys.modules["segment_anything"] = package
        try:
            return importlib.import_module("segment_anything.modeling")
        except BaseException:
            sys.modules.pop("segment_anything", None)
            raise
