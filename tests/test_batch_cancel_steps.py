"""A batch task stops at its method's next step once cancelled (Ctrl+C in the driver cancels the tasks on Dask
workers, whose threads cannot be stopped from outside): every subcommand's, text's and embed's too. Real EM pixels,
the real LiteMedSAM; the task's check is the one a Dask worker's task is given (:func:`stopped_when_cancelled`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import imageio.v3 as iio
import pytest

from napari_promptseg.batch import BatchJob, run_target
from napari_promptseg.batch.worker import _method_progress, forget_state
from napari_promptseg.cli import build_parser
from napari_promptseg.errors import CancelledError
from napari_promptseg.io import read_image


@pytest.fixture
def em_png(shared_data, tmp_path) -> Path:
    path = tmp_path / "em.png"
    iio.imwrite(path, read_image(shared_data / "em_isbi2012" / "images" / "0.png")[:128, :128])
    return path


def cancelled_after(steps: int) -> tuple[Callable[[float, str], None], list[str]]:
    """A task's check that finds it cancelled at its ``steps + 1``-th step, and the steps it saw."""
    seen: list[str] = []

    def check(fraction: float = 0.0, message: str = "") -> None:
        seen.append(message)
        if len(seen) > steps:
            raise CancelledError("cancelled: the run was stopped (Ctrl+C)")

    return check, seen


def run_cancelled(job: BatchJob, path: Path, steps: int) -> list[str]:
    """Run ``job`` on ``path`` as a cancelled Dask task would: it must stop, with CancelledError. Its steps."""
    check, seen = cancelled_after(steps)
    token = _method_progress.set(check)
    try:
        with pytest.raises(CancelledError):
            run_target(job, str(path), final=False)
    finally:
        _method_progress.reset(token)
        forget_state(job.run_id)
    return seen


def test_a_cancelled_text_task_stops_before_its_labels(em_png, tmp_path):
    """`promptseg text` on Dask workers, Ctrl+C: segment's and oneshot's tasks stopped at their method's next step,
    text's went on to the end of its input (and wrote its labels, which the report then called not written)."""
    from napari_promptseg.cli.text import _process, _setup
    from napari_promptseg.io.starter import open_library

    out = tmp_path / "out"
    args = build_parser().parse_args(["text", "nuclei", str(em_png), "--route", "library", "-o", str(out)])
    args.library, args.output, args.cache, args.cache_max_gb = open_library(None).path, out, None, None
    seen = run_cancelled(BatchJob(_setup, _process, args), em_png, steps=1)
    assert len(seen) == 2, seen  # it went on after its first step, and stopped at its second
    assert not (out / "em.tif").exists()


def test_a_cancelled_embed_task_stops_between_its_embeddings(em_png, tmp_path):
    """`promptseg embed --object-size` on Dask workers, Ctrl+C: the task embedded every tile of its input first."""
    from napari_promptseg.cli.embed import _process, _setup
    from napari_promptseg.models import embedding_cache

    args = build_parser().parse_args(["embed", str(em_png), "--object-size", "12"])
    args.cache, args.cache_max_gb = str(tmp_path / "cache"), None
    with embedding_cache.settings_restored():  # the task configures the run's cache in this process
        seen = run_cancelled(BatchJob(_setup, _process, args), em_png, steps=1)
    assert len(seen) == 2 and seen[0] == f"{em_png}: whole image" and seen[1].startswith(f"{em_png}: tile 1/"), seen
