"""A batch on Dask workers that stops part-way: Ctrl+C with a scheduler of the user's (a LocalCluster started in a
subprocess, as a `dask scheduler` of a cluster is, not the run's own), a worker killed between an input's labels
and its result, a resume on another scheduler. Real LiteMedSAM on small crops of the shared nuclei images."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tifffile

from napari_promptseg.batch import JOURNAL_NAME
from napari_promptseg.batch.on_dask import running_tasks
from napari_promptseg.io import read_image

from .conftest import interrupt_at_first_record
from .test_batch_distributed import BOX, subprocess_env

#: a scheduler and one worker (one thread) of a LocalCluster in its own process: the user's, which outlives the run
CLUSTER = """
import sys, time
from pathlib import Path
from distributed import LocalCluster

if __name__ == "__main__":
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                           scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"})
    Path(sys.argv[1]).write_text(cluster.scheduler_address)
    while True:
        time.sleep(1)
"""


@pytest.fixture(scope="module")
def users_scheduler(tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp("cluster")
    script, address_file = tmp / "cluster.py", tmp / "address"
    script.write_text(CLUSTER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(address_file)],
        env=subprocess_env(tmp),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (address_file.is_file() and address_file.read_text()) and time.monotonic() < deadline:
            assert proc.poll() is None, "the cluster's process ended"
            time.sleep(0.1)
        yield address_file.read_text()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_ctrl_c_with_a_users_scheduler_stops_the_workers_too(shared_data, users_scheduler, tmp_path):
    """Ctrl+C with --scheduler tcp://...: the driver left at once, saying "the input(s) in progress were not
    written", while the user's worker went on segmenting the input in progress and wrote its labels seconds after
    report.json called it "interrupted" (a --resume started meanwhile raced it). The driver now cancels its tasks;
    a running one stops at its method's next step, and the driver waits for it before writing the report."""
    from distributed import Client

    sources = sorted((shared_data / "nuclei_dsb2018" / "images").iterdir())
    quick, slow = tmp_path / "quick.tif", tmp_path / "slow.tif"
    tifffile.imwrite(quick, read_image(sources[0])[..., :3])  # 256 x 256 uncompressed: the larger file, taken first
    tifffile.imwrite(slow, read_image(sources[4])[..., :3], compression="zlib")  # 512 x 640: 4 s of find-all
    out = tmp_path / "out"
    command = ["segment", str(quick), str(slow), *BOX, "--find-all", "-o", str(out), "--scheduler", users_scheduler]
    run = interrupt_at_first_record(command, subprocess_env(tmp_path), out / JOURNAL_NAME)
    with Client(users_scheduler, timeout="20s") as client:
        still_running = client.run(running_tasks, "promptseg-")
    assert run.returncode == 130, run.stderr
    assert not any(still_running.values()), still_running
    assert "the input(s) in progress were not written" in run.stderr
    records = {Path(r["input"]).name: r for r in json.loads((out / "report.json").read_text())["images"]}
    assert records["quick.tif"]["status"] == "ok" and (out / "quick.tif").is_file()
    assert records["slow.tif"]["status"] == "interrupted"
    time.sleep(0.5)
    assert not (out / "slow.tif").exists()
