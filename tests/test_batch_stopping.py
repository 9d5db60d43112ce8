"""A batch on Dask workers that stops part-way: Ctrl+C with a scheduler of the user's (a LocalCluster started in a
subprocess, as a `dask scheduler` of a cluster is, not the run's own), a worker killed between an input's labels
and its result, a resume on another scheduler. Real LiteMedSAM on small crops of the shared nuclei images."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tifffile

from napari_promptseg.batch import JOURNAL_NAME
from napari_promptseg.batch.on_dask import running_tasks
from napari_promptseg.cli import main
from napari_promptseg.io import read_image

from .conftest import interrupt_at_first_record
from .test_batch_distributed import BOX, _float32_setup, subprocess_env

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


def users_cluster(tmp: Path) -> Iterator[str]:
    """The cluster's address; resumed, it kills the cluster (scheduler and worker: its process group)."""
    script, address_file = tmp / "cluster.py", tmp / "address"
    script.write_text(CLUSTER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(address_file)],
        env=subprocess_env(tmp),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (address_file.is_file() and address_file.read_text()) and time.monotonic() < deadline:
            assert proc.poll() is None, "the cluster's process ended"
            time.sleep(0.1)
        yield address_file.read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def users_scheduler(tmp_path_factory) -> Iterator[str]:
    yield from users_cluster(tmp_path_factory.mktemp("cluster"))


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


#: a batch driver of one input on its own LocalCluster, whose worker kills the job's every process (driver,
#: scheduler, workers: a cluster's time limit, the OOM killer) the moment the input's labels are under their name;
#: between the labels and the result, a second of the work a worker does there (an overlay, a large file's flush)
KILLED_AT_THE_LABELS = """
import os, signal, sys, threading, time
from pathlib import Path


def segment_then_more_work(args, segmenter, path, image):
    from napari_promptseg.cli.segment import _process

    labels = args.output / f"{path.stem}.tif"

    def kill_the_job_once_named():
        while not labels.exists():
            time.sleep(0.001)
        os.killpg(os.getpgid(0), signal.SIGKILL)

    threading.Thread(target=kill_the_job_once_named, daemon=True).start()
    record = _process(args, segmenter, path, image)
    time.sleep(1.0)
    return record


if __name__ == "__main__":
    from napari_promptseg.batch import BatchJob, run_batch
    from napari_promptseg.cli import build_parser
    from napari_promptseg.cli.segment import _setup

    image, out = Path(sys.argv[1]), Path(sys.argv[2])
    args = build_parser().parse_args(["segment", str(image), *sys.argv[3:], "-o", str(out), "--device", "cpu"])
    args.cache, args.cache_max_gb = None, None
    run_batch(BatchJob(_setup, segment_then_more_work, args), [image], scheduler="local", workers=1)
"""


def test_a_worker_killed_once_its_labels_are_named_keeps_them_for_the_resume(shared_data, tmp_path):
    """A Dask worker killed (with the whole job: SIGKILL, the OOM killer) after writing an input's labels and before
    leaving its result: the labels were in -o, but nothing said whose they were, and --resume segmented the input
    again. The worker now writes its files under temporary names, leaves its result (with their digests), then
    names them: labels under their name always have their result, and --resume (here in this process, another
    scheduler) keeps them. A result whose files are not the ones it names (killed before the renames) is dropped."""
    import argparse

    from napari_promptseg.batch import BatchJob, run_batch
    from napari_promptseg.cli import build_parser
    from napari_promptseg.cli.segment import _process, _setup

    image = tmp_path / "nuclei.tif"
    tifffile.imwrite(image, read_image(sorted((shared_data / "nuclei_dsb2018" / "images").iterdir())[0])[:96, :96, :3])
    out = tmp_path / "out"
    script = tmp_path / "driver.py"
    script.write_text(KILLED_AT_THE_LABELS)
    driver = subprocess.run(
        [sys.executable, str(script), str(image), str(out), *BOX],
        env=subprocess_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the one the worker kills
        timeout=180,
    )
    assert driver.returncode == -9, driver.stderr
    labels = out / "nuclei.tif"
    assert labels.is_file() and (out / JOURNAL_NAME).is_file() and not (out / "report.json").exists()
    stamp = labels.stat().st_mtime_ns

    args = build_parser().parse_args(["segment", str(image), *BOX, "-o", str(out), "--device", "cpu"])
    args.cache, args.cache_max_gb = None, None
    resumed = run_batch(BatchJob(_setup, _process, argparse.Namespace(**vars(args))), [image], resume=True)
    assert resumed.summary["resumed"] == 1
    assert resumed.records[0]["status"] == "ok" and resumed.records[0]["output"] == str(labels)
    assert labels.stat().st_mtime_ns == stamp  # kept, not segmented again
    assert tifffile.imread(labels).any()


def test_a_workers_result_is_taken_only_with_the_files_it_names(shared_data, tmp_path):
    """A worker killed between leaving its result and naming its files: under the labels' name is the earlier
    run's file (or none), which the result's digests do not match: not taken (the input is made again)."""
    from napari_promptseg.batch.journal import leave_result, left_results, output_digest
    from napari_promptseg.io import write_labels

    nuclei = read_image(sorted((shared_data / "nuclei_dsb2018" / "images").iterdir())[0])[:64, :64, 0]
    labels = tmp_path / "nuclei.tif"
    write_labels(labels, (nuclei > nuclei.mean()).astype("uint16"))  # an earlier run's
    written = tmp_path / ".nuclei.tif.0123456789ab.tmp"  # this run's, not yet named
    write_labels(written, (nuclei > 2 * nuclei.mean()).astype("uint16"))
    record = {"input": "nuclei.png", "status": "ok", "output": str(labels)}
    leave_result(tmp_path, "run", {"record": record, "meta": {}, "outputs": {str(labels): output_digest(written)}})
    assert left_results(tmp_path, "run") == {}
    written.replace(labels)
    assert left_results(tmp_path, "run")["nuclei.png"]["record"] == record
    labels.unlink()
    assert left_results(tmp_path, "run") == {}


def test_a_scheduler_that_goes_away_stops_the_run_without_calling_its_inputs_failed(shared_data, tmp_path, monkeypatch):
    """The user's scheduler killed mid-run (its machine rebooted, the job that held it ended): after the client's
    reconnect timeout every input left was recorded "failed" with "FutureCancelledError: promptseg-...-retry
    cancelled for reason: unknown." (a retry submitted to the lost scheduler first) and the run ended with exit 1
    as if they could not be read. The run now stops at once with one error naming the scheduler, the finished
    inputs kept in its journal for --resume, the others not recorded as failed."""
    import argparse

    import napari_promptseg.batch.engine as engine
    import napari_promptseg.batch.on_dask as on_dask
    from napari_promptseg.batch import BatchJob, run_batch
    from napari_promptseg.cli import build_parser
    from napari_promptseg.cli.segment import _process, _setup
    from napari_promptseg.errors import PromptsegError

    sources = sorted((shared_data / "nuclei_dsb2018" / "images").iterdir())
    quick, slow = tmp_path / "quick.tif", tmp_path / "slow.tif"
    tifffile.imwrite(quick, read_image(sources[0])[..., :3])
    tifffile.imwrite(slow, read_image(sources[4])[..., :3], compression="zlib")  # smaller on disk: second
    out = tmp_path / "out"
    args = build_parser().parse_args(["segment", str(quick), *BOX, "--find-all", "-o", str(out), "--device", "cpu"])
    args.cache, args.cache_max_gb = None, None
    monkeypatch.setattr(on_dask, "SCHEDULER_TIMEOUT_S", 2.0)  # the client's reconnect time (20 s)
    cluster = users_cluster(tmp_path)
    address = next(cluster)
    announce = engine._announce

    def scheduler_gone_after_the_first(record, progress):
        monkeypatch.setattr(engine, "_announce", announce)
        announce(record, progress)
        next(cluster, None)  # killed, with its worker

    monkeypatch.setattr(engine, "_announce", scheduler_gone_after_the_first)
    with pytest.raises(PromptsegError, match=f"the Dask scheduler at {address} went away") as lost:
        run_batch(BatchJob(_setup, _process, argparse.Namespace(**vars(args))), [quick, slow], scheduler=address)
    assert "--resume" in str(lost.value)
    journal = [json.loads(line) for line in (out / JOURNAL_NAME).read_text().splitlines()]
    assert [item["record"]["input"] for item in journal if "record" in item] == [str(quick)]


def test_a_setup_that_fails_on_the_users_worker_says_where(users_scheduler, tmp_path, capsys):
    """A user's worker that cannot load the model (its machine has no weights, $PROMPTSEG_OFFLINE there): the
    error was the worker's own, as if about this machine ("put sam_vit_b_01ec64.pth in <the worker's cache>"),
    which holds them; it now names the worker it happened on."""
    image = tmp_path / "coins.tif"
    from skimage import data as skdata

    tifffile.imwrite(image, skdata.coins()[:64, :64])
    out = tmp_path / "out"
    code = main(
        ["segment", str(image), str(image), *BOX, "-o", str(out), "--model", "sam_vit_b"]
        + ["--scheduler", users_scheduler]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert "weights not found" in err and "on the Dask worker at tcp://127.0.0.1:" in err, err


def scheduler_and_worker(tmp: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """`dask scheduler` and one `dask worker --no-nanny` (nothing restarts it) as subprocesses on loopback."""
    env, address_file = subprocess_env(tmp), tmp / "scheduler.json"
    dask = [sys.executable, "-m", "dask"]
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True}
    procs = [
        subprocess.Popen(
            [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
            + ["--scheduler-file", str(address_file)],
            **quiet,
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not address_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.2)  # written whole
        worker = [*dask, "worker", "--scheduler-file", str(address_file), "--nthreads", "1", "--no-nanny"]
        procs.append(subprocess.Popen([*worker, "--no-dashboard", "--host", "127.0.0.1"], **quiet))
        yield json.loads(address_file.read_text())["address"], procs[-1]
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_run_whose_workers_all_died_says_so_instead_of_waiting_forever(shared_data, tmp_path, monkeypatch):
    """Every worker of the user's scheduler gone mid-run (killed by the OOM killer; nothing restarts a worker
    without a nanny): the driver waited forever, its progress line still, without a word. It now says the scheduler
    has no worker left, waits for one for as long as at the start, then stops with the finished inputs kept for
    --resume, the others not recorded as failed."""
    import argparse

    import napari_promptseg.batch.engine as engine
    import napari_promptseg.batch.on_dask as on_dask
    from napari_promptseg.batch import BatchJob, run_batch
    from napari_promptseg.cli import build_parser
    from napari_promptseg.cli.segment import _process, _setup
    from napari_promptseg.errors import PromptsegError

    sources = sorted((shared_data / "nuclei_dsb2018" / "images").iterdir())
    images = []
    for i in (0, 1):
        images.append(tmp_path / f"nuclei_{i}.tif")
        tifffile.imwrite(images[-1], read_image(sources[i])[:96, :96, :3])
    out = tmp_path / "out"
    args = build_parser().parse_args(["segment", str(images[0]), *BOX, "-o", str(out), "--device", "cpu"])
    args.cache, args.cache_max_gb = None, None
    monkeypatch.setattr(on_dask, "WORKER_WAIT_S", 2.0)
    cluster = scheduler_and_worker(tmp_path)
    address, worker = next(cluster)
    announce = engine._announce

    def worker_killed_after_the_first(record, progress):
        monkeypatch.setattr(engine, "_announce", announce)
        announce(record, progress)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()

    monkeypatch.setattr(engine, "_announce", worker_killed_after_the_first)
    try:
        job = BatchJob(_setup, _process, argparse.Namespace(**vars(args)))
        with pytest.raises(PromptsegError, match=f"the Dask scheduler at {address} has no worker left") as stopped:
            run_batch(job, images, scheduler=address)
    finally:
        next(cluster, None)
    assert "--resume" in str(stopped.value)
    journal = [json.loads(line) for line in (out / JOURNAL_NAME).read_text().splitlines()]
    assert len([item for item in journal if "record" in item]) == 1


def _threshold_or_die(args, state, path, image):
    """Labels of the image's bright half; for a file named ``dies*``, its worker process dies (as the OOM killer
    kills it), every time."""
    from napari_promptseg.io import write_labels

    with open(args.calls, "a") as fh:
        fh.write(f"{path.name}\n")
    if path.name.startswith("dies"):
        os.kill(os.getpid(), signal.SIGKILL)
    grey = read_image(path)[..., 0]
    output = write_labels(args.output / f"{path.stem}.tif", (grey > grey.mean()).astype("uint16"))
    return {"input": str(path), "status": "ok", "output": str(output)}


def test_an_input_whose_worker_dies_every_time_is_not_run_again_by_the_retry(shared_data, tmp_path):
    """An input that kills the worker running it (out of memory, a crash in a native library): Dask already ran it
    on allowed-failures + 1 workers (4 by default), each death a worker restarted and its model loaded again; the
    batch's own retry then did it all once more (8 deaths), to record "KilledWorker: Attempted to run task
    'promptseg-...-retry' on 4 different workers...". Now recorded at once, in words, the rest going on."""
    import argparse

    import dask

    from napari_promptseg.batch import BatchJob, run_batch

    sources = sorted((shared_data / "nuclei_dsb2018" / "images").iterdir())
    images = [tmp_path / "kept.tif", tmp_path / "dies.tif"]
    for image, source in zip(images, sources, strict=False):
        tifffile.imwrite(image, read_image(source)[:64, :64, :3])
    out, calls = tmp_path / "out", tmp_path / "calls.txt"
    args = argparse.Namespace(output=out, threads=1, calls=calls)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):  # Dask's own: one worker dies, not 4
        outcome = run_batch(BatchJob(_float32_setup, _threshold_or_die, args), images, scheduler="local", workers=1)
    kept, died = outcome.records
    assert kept["status"] == "ok" and tifffile.imread(out / "kept.tif").any()
    assert died["status"] == "failed" and "output" not in died
    assert died["reason"].startswith("the worker running it died (on 1 worker"), died["reason"]
    assert calls.read_text().split().count("dies.tif") == 1


def test_a_workers_result_is_taken_in_a_moved_output_folder(shared_data, tmp_path):
    """A run's -o moved (to a larger disk) before its --resume: its workers' results name their files where they
    wrote them; the files are found under their names in the folder resumed."""
    from napari_promptseg.batch.journal import leave_result, left_results, output_digest
    from napari_promptseg.io import write_labels

    nuclei = read_image(sorted((shared_data / "nuclei_dsb2018" / "images").iterdir())[0])[:64, :64, 0]
    first = tmp_path / "first"
    labels = write_labels(first / "nuclei.tif", (nuclei > nuclei.mean()).astype("uint16"))
    record = {"input": "nuclei.png", "status": "ok", "output": str(labels)}
    leave_result(first, "run", {"record": record, "meta": {}, "outputs": {str(labels): output_digest(labels)}})
    moved = first.rename(tmp_path / "moved")
    assert left_results(moved, "run")["nuclei.png"]["record"] == record
