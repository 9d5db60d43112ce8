"""What a batch run is: the picklable :class:`BatchJob` every worker receives (setup, process, options)."""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Setup = Callable[[argparse.Namespace], tuple[Any, dict]]
Process = Callable[[argparse.Namespace, Any, Path, Any], dict]


@dataclass(frozen=True)
class BatchJob:
    """Picklable description of a run: functions by reference, options as parsed (paths absolute)."""

    setup: Setup  # args -> (state, meta): models loaded once per worker; meta = run-level fields of report.json
    # (its "warnings": the run's, said once by the driver)
    process: Process  # (args, state, path, image) -> record; writes the outputs
    args: argparse.Namespace
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
