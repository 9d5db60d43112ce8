"""Native libraries that must be loaded in a particular way (no Qt, no napari: the console and scripts need it)."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys

logger = logging.getLogger(__name__)


def load_triton_safely() -> None:
    """Import triton (pulled in by torch, transformers and torchvision) with its own LLVM symbols.

    On Linux without a GPU driver, OpenGL is Mesa's llvmpipe, which loads libLLVM into the process once napari's
    canvas exists; triton's libtriton bundles another LLVM and segfaults in its static initialisers when its symbols
    bind to Mesa's (the first model load after the viewer is open: a text prompt from napari's console killed the
    session). RTLD_DEEPBIND makes libtriton use its own copy. Every model loader calls this first, and every widget
    on the main thread; a no-op when triton is absent or already imported, and in a process that can meet no Mesa
    LLVM (a CLI run, a batch worker: no Qt, napari or vispy imported, no libLLVM loaded). LiteMedSAM never needs
    triton, whose import took 0.6 s of every such start; a later call, once napari is imported, imports it then.
    """
    deepbind = getattr(os, "RTLD_DEEPBIND", 0)
    if not deepbind or "triton" in sys.modules or not _may_meet_mesa_llvm():
        return
    if importlib.util.find_spec("triton") is None:
        return
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | deepbind)
    try:
        import triton  # noqa: F401
    except Exception as exc:  # torch treats a broken triton as absent too
        logger.debug("triton import failed: %s", exc)
    finally:
        sys.setdlopenflags(flags)


#: modules whose presence means an OpenGL canvas (and so Mesa's libLLVM) can be, or will be, in this process
GUI_MODULES = ("napari", "vispy", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6")


def _may_meet_mesa_llvm() -> bool:
    """Whether libLLVM is loaded, or a GUI toolkit that may load it is imported."""
    if any(name in sys.modules for name in GUI_MODULES):
        return True
    try:
        with open("/proc/self/maps", "rb") as maps:
            return b"libLLVM" in maps.read()
    except OSError:  # no /proc: assume it may
        return True
