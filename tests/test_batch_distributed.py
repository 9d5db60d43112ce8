"""Batches on Dask distributed with real cluster objects and the real LiteMedSAM: a LocalCluster (2 worker processes,
1 thread each) and a `dask scheduler` + `dask worker` started as subprocesses on loopback give the outputs of
`--scheduler none` byte for byte; an unreadable input is recorded at once (no retry); a run killed midway resumes
without losing or redoing work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_promptseg.batch import JOURNAL_NAME
from napari_promptseg.batch._exit import ExitWithoutTeardown
from napari_promptseg.batch.journal import input_digest
from napari_promptseg.cli import main
from napari_promptseg.errors import PromptsegError
from napari_promptseg.io import read_image

from .conftest import REPO, interrupt_at_first_record

BOX = ["--box", "10", "12", "50", "56"]
N_INPUTS = 5


def subprocess_env(tmp: Path) -> dict:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO / "src"),
        "OMP_NUM_THREADS": "1",
        "PROMPTSEG_OFFLINE": "1",
        "PROMPTSEG_CACHE_DIR": str(tmp / "weights-cache"),
        "PROMPTSEG_SCHEDULER": "none",
    }


@pytest.fixture(scope="module")
def inputs(shared_data, tmp_path_factory) -> list[Path]:
    """Small crops (96 px) of real nuclei images, each of other pixels (no in-memory cache hit between them)."""
    folder = tmp_path_factory.mktemp("inputs")
    sources = sorted((shared_data / "nuclei_dsb2018" / "images").iterdir())[:N_INPUTS]
    paths = []
    for i, source in enumerate(sources):
        path = folder / f"nuclei_{i}.tif"
        tifffile.imwrite(path, read_image(source)[:96, :96, :3])
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def unreadable(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bad") / "truncated.tif"
    path.write_bytes(b"II*\x00 not really a TIFF")
    return path


def run(inputs, out: Path, *options: str) -> int:
    return main(["segment", *map(str, inputs), *BOX, "-o", str(out), *options])


def report_of(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def reference(inputs, unreadable, tmp_path_factory) -> Path:
    """The run in this process: what every scheduler must reproduce."""
    out = tmp_path_factory.mktemp("none")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROMPTSEG_OFFLINE", "1")
        assert run([*inputs, unreadable], out, "--scheduler", "none") == 1  # one input has no output
    return out


def assert_same_outputs(out: Path, reference: Path, inputs: list[Path]) -> None:
    for path in inputs:
        written = (out / f"{path.stem}.tif").read_bytes()
        assert written == (reference / f"{path.stem}.tif").read_bytes(), path.name
    records = {Path(r["input"]).name: r for r in report_of(out)["images"]}
    assert [records[p.name]["status"] for p in inputs] == ["ok"] * len(inputs)
    assert tifffile.imread(out / f"{inputs[0].stem}.tif").any()


def assert_unreadable_recorded(out: Path, unreadable: Path) -> None:
    record = report_of(out)["images"][-1]
    assert record["input"] == str(unreadable) and record["status"] == "failed"
    assert record["attempts"] == 1 and "truncated.tif" in record["reason"] and "output" not in record


def test_local_cluster_gives_the_outputs_of_one_process(inputs, unreadable, reference, tmp_path, monkeypatch, capfd):
    import contextlib
    import socket

    from distributed import Client

    assert_unreadable_recorded(reference, unreadable)
    out = tmp_path / "local"
    registered = []
    register_plugin = Client.register_plugin
    monkeypatch.setattr(
        Client,
        "register_plugin",
        lambda self, plugin, *a, **k: registered.append(plugin) or register_plugin(self, plugin, *a, **k),
    )
    with socket.socket() as dashboard_port:  # another cluster's dashboard (or nobody: then the port is ours)
        with contextlib.suppress(OSError):
            dashboard_port.bind(("127.0.0.1", 8787))
            dashboard_port.listen()
        capfd.readouterr()
        assert run([*inputs, unreadable], out, "--scheduler", "local", "--workers", "2") == 1
    err = capfd.readouterr().err
    # the unreadable input is one line; distributed neither logs its traceback nor wants port 8787
    assert "Traceback" not in err and "Compute Failed" not in err and "8787" not in err, err
    assert f"{unreadable}: no output:" in err and f"no output: {unreadable}" not in err  # named once
    assert "\r" not in err and "6/6 images, 1 failed" in err  # off a terminal: plain lines, no bar frames
    assert [type(p) for p in registered] == [ExitWithoutTeardown]  # the engine's own workers leave quickly
    assert_same_outputs(out, reference, inputs)
    assert_unreadable_recorded(out, unreadable)
    batch = report_of(out)["batch"]
    assert (batch["scheduler"], batch["workers"], batch["threads_per_worker"]) == ("local", 2, 1)
    assert report_of(out)["model"] == "litemedsam" and batch["meta"]["setup_s"] > 0
    assert not (out / JOURNAL_NAME).exists()


@pytest.fixture
def tcp_scheduler(tmp_path):
    """`dask scheduler` and one `dask worker` as subprocesses on loopback (free ports), stopped after the test."""
    from distributed import Client

    env = subprocess_env(tmp_path)
    address_file = tmp_path / "scheduler.json"
    dask = [sys.executable, "-m", "dask"]
    procs = [
        subprocess.Popen(
            [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
            + ["--scheduler-file", str(address_file)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not address_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        procs.append(
            subprocess.Popen(
                [*dask, "worker", "--scheduler-file", str(address_file), "--nthreads", "1", "--no-nanny"]
                + ["--no-dashboard", "--host", "127.0.0.1", "--local-directory", str(tmp_path / "worker")],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        address = json.loads(address_file.read_text())["address"]
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(1, timeout=120)
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                # a worker hangs past its own close in one teardown of three (distributed's asyncio runner waits on a
                # cancelled connection, seen with py-spy): killed after a grace period, as a cluster manager does
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_the_workers_take_the_largest_inputs_first(shared_data, tcp_scheduler, tmp_path, capsys):
    """Workers take tasks in the order they were submitted: a whole slide listed last ran alone at the end while the
    other workers idled. The largest inputs (bytes on disk) go first; the report keeps the input order."""
    image = read_image(sorted((shared_data / "nuclei_dsb2018" / "images").iterdir())[0])[..., :3]
    paths = []
    for side in (64, 160, 96):
        paths.append(tmp_path / f"crop_{side}.tif")
        tifffile.imwrite(paths[-1], image[:side, :side])
    out = tmp_path / "out"
    assert main(["segment", *map(str, paths), *BOX, "-o", str(out), "--scheduler", tcp_scheduler]) == 0
    done = [line.split(" -> ")[0] for line in capsys.readouterr().out.splitlines() if " -> " in line]
    assert done == [str(paths[1]), str(paths[2]), str(paths[0])]  # one worker, one thread: one after the other
    assert [record["input"] for record in report_of(out)["images"]] == [str(p) for p in paths]


#: runs the CLI, then says whether the process imported torch (a driver of workers runs no model)
DRIVER = (
    "import sys; from napari_promptseg.cli import main; code = main(sys.argv[1:]); "
    "print('torch' in sys.modules); sys.exit(code)"
)


def test_tcp_scheduler_gives_the_outputs_of_one_process(inputs, unreadable, reference, tcp_scheduler, tmp_path):
    """Driven from a new process, as from a shell: it never imports torch (2 s of every run's start), the report
    still gives the encoder precision the workers used."""
    assert tcp_scheduler.startswith("tcp://127.0.0.1:")
    out = tmp_path / "tcp"
    args = ["segment", *map(str, [*inputs, unreadable]), *BOX, "-o", str(out), "--scheduler", tcp_scheduler]
    workers_precision = report_of(reference)["encoder_precision"]
    # the driver's own environment names the other precision: only a report that takes the workers' word is right
    other = "bfloat16" if workers_precision == "float32" else "float32"
    env = {**subprocess_env(tmp_path), "PROMPTSEG_PRECISION": other}
    driver = subprocess.run([sys.executable, "-c", DRIVER, *args], env=env, capture_output=True, text=True, timeout=300)
    assert driver.returncode == 1, driver.stderr  # one input has no output
    assert driver.stdout.split()[-1] == "False"
    assert report_of(out)["encoder_precision"] == workers_precision
    assert_same_outputs(out, reference, inputs)
    assert_unreadable_recorded(out, unreadable)
    assert (report_of(out)["batch"]["scheduler"], report_of(out)["batch"]["workers"]) == (tcp_scheduler, 1)
    # a user's own workers exit as they always did: the quick exit is only for the clusters the engine starts
    from distributed import Client

    with Client(tcp_scheduler, timeout="60s") as client:
        plugins = client.run(lambda dask_worker: sorted(dask_worker.plugins))
    assert plugins and not any(ExitWithoutTeardown.name in names for names in plugins.values())


def test_ctrl_c_stops_a_local_cluster_run_with_one_line(inputs, tmp_path):
    """Ctrl+C reaches every process of the terminal's group: each worker printed asyncio's KeyboardInterrupt
    tracebacks over the driver's one line. The workers now leave it to the driver, which closes the cluster and
    keeps the journal for --resume, and writes the run's report.json (its inputs not done: "interrupted")."""
    out = tmp_path / "interrupted"
    command = ["segment", *map(str, inputs), *BOX, "-o", str(out), "--scheduler", "local", "--workers", "1"]
    journal = out / JOURNAL_NAME
    run = interrupt_at_first_record(command, subprocess_env(tmp_path), journal)
    stderr = run.stderr
    assert run.returncode == 130, stderr
    assert "promptseg segment: interrupted" in stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert journal.is_file() and report_of(out)["batch"]["interrupted"] is True


#: a LocalCluster, with or without the engine's worker plugin. The first task leaves an exit handler, as torch's
#: modules do on import: it would write the file named in argv[2] late in Python's exit, after the plugin's own. The
#: second prints without flushing, as a library may.
QUICK_EXIT = """
import logging, sys
from distributed import Client, LocalCluster
from napari_promptseg.batch._exit import ExitWithoutTeardown

def leave_exit_handler(path):
    import atexit
    atexit.register(lambda: open(path, "w").write("torn down"))

def print_unflushed():
    import torch
    print("printed by the worker", torch.ones(1).sum().item())
    return sys.stdout.isatty()

if __name__ == "__main__":
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.ERROR)
    client = Client(cluster)
    client.submit(leave_exit_handler, sys.argv[2]).result()
    if sys.argv[1] == "quick":
        client.register_plugin(ExitWithoutTeardown())
    assert client.submit(print_unflushed).result() is False  # the worker's stdout is the pipe below
    nanny = next(iter(cluster.workers.values()))
    process = nanny.process.process
    client.close()
    # the nanny waits for its worker's own exit: cluster.close() kills one still exiting after 4 s (the worker
    # with Python's teardown took 4.7 s on a loaded machine, exit code -9)
    cluster.sync(nanny.close, timeout=300)
    cluster.close()
    print("worker exit code", process.exitcode, flush=True)
"""


def test_the_engines_workers_skip_pythons_teardown_without_losing_output(tmp_path):
    """The engine's own workers leave at exit without Python's teardown (torch's takes ~0.5 s per worker, on every
    run): exit handlers older than the plugin do not run, what a task printed still arrives, the worker ends with
    code 0. Without the plugin the same handler runs. Whether a worker exits before the nanny's deadline is not
    tested: the nanny is closed with time to spare (that deadline killed the slower worker on a busy machine)."""
    script = tmp_path / "quick_exit.py"
    script.write_text(QUICK_EXIT)
    for mode in ("quick", "teardown"):
        marker = tmp_path / f"{mode}.txt"
        command = [sys.executable, str(script), mode, str(marker)]
        proc = subprocess.run(command, env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert "printed by the worker 1.0" in proc.stdout
        assert proc.stdout.strip().endswith("worker exit code 0")
        assert marker.is_file() == (mode == "teardown"), mode


def test_resume_after_a_killed_run_loses_nothing(inputs, reference, tmp_path, capsys):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "napari_promptseg.cli", "segment", *map(str, inputs), *BOX, "-o", str(out)]
    proc = subprocess.Popen(
        [*command, "--scheduler", "none"],
        env=subprocess_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    journal = out / JOURNAL_NAME
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if journal.is_file() and journal.read_text().count('"record"') >= 2:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed midway"
    assert not (out / "report.json").exists()
    done = [json.loads(line)["record"] for line in journal.read_text().splitlines() if '"record"' in line]
    assert 2 <= len(done) < N_INPUTS
    stamps = {r["output"]: os.stat(r["output"]).st_mtime_ns for r in done}

    assert run(inputs, out, "--scheduler", "none", "--resume") == 0
    assert f"resuming: {len(done)} of {N_INPUTS}" in capsys.readouterr().err
    assert_same_outputs(out, reference, inputs)
    report = report_of(out)
    assert len(report["images"]) == N_INPUTS and report["batch"]["resumed"] == len(done)
    assert {path: os.stat(path).st_mtime_ns for path in stamps} == stamps  # kept, not recomputed
    assert not journal.exists()

    # a finished run resumes to itself without loading anything; other options are refused, nothing is touched
    assert run(inputs, out, "--scheduler", "none", "--resume") == 0
    assert report_of(out)["batch"]["resumed"] == N_INPUTS and report_of(out)["model"] == "litemedsam"
    before = (out / "report.json").read_bytes()
    assert main(["segment", *map(str, inputs), "--box", "0", "0", "30", "30", "-o", str(out), "--resume"]) == 2
    assert "results of another run" in capsys.readouterr().err
    assert (out / "report.json").read_bytes() == before
    assert np.array_equal(tifffile.imread(out / f"{inputs[0].stem}.tif"), tifffile.imread(reference / "nuclei_0.tif"))


def test_a_resumed_run_reports_the_precision_of_its_own_workers(tmp_path, capsys):
    """The run-level fields come from this run's workers; an earlier run's precision is kept beside them when it
    differs (its images were made that way). No model: the job's setup and process are plain functions."""
    import argparse

    from napari_promptseg.batch import BatchJob, run_batch, run_signature

    inputs = []
    for name in ("done", "todo"):
        inputs.append(tmp_path / f"{name}.tif")
        tifffile.imwrite(inputs[-1], np.zeros((8, 8), np.uint8))
    out = tmp_path / "out"
    out.mkdir()
    (out / "done.tif").write_bytes(b"")
    args = argparse.Namespace(output=out, threads=1)
    earlier = {
        "input": str(inputs[0]),
        "status": "ok",
        "output": str(out / "done.tif"),
        "input_digest": input_digest(inputs[0]),
    }
    lines = [{"signature": run_signature(args)}, {"meta": {"model": "m", "encoder_precision": "bfloat16"}}]
    (out / JOURNAL_NAME).write_text("".join(json.dumps(x) + "\n" for x in [*lines, {"record": earlier}]))

    outcome = run_batch(BatchJob(_float32_setup, _write_nothing, args), inputs, scheduler="none", resume=True)
    assert [r["input"] for r in outcome.records] == [str(p) for p in inputs]
    assert outcome.summary["resumed"] == 1
    # `--precision float32` given where the first run had none (the same precision) is the same run: resumable
    assert run_signature(argparse.Namespace(**vars(args), precision="float32")) == run_signature(args)

    assert outcome.meta["encoder_precision"] == "float32"
    assert outcome.meta["resumed_encoder_precision"] == "bfloat16"
    # said on the terminal too: the kept labels may differ slightly from this run's
    assert "the 1 input(s) kept from the earlier run were made in bfloat16" in capsys.readouterr().err


def test_an_input_replaced_under_its_name_is_done_again_by_a_resume(tmp_path, capsys):
    """--resume trusted an output whose input had been replaced by another image of the same name (a 256 px label
    image kept for a 512 x 640 input). The input's contents are recorded with its result now."""
    import argparse

    from napari_promptseg.batch import BatchJob, run_batch

    inputs = [tmp_path / "a.tif", tmp_path / "b.tif"]
    for path in inputs:
        tifffile.imwrite(path, np.zeros((8, 8), np.uint8))
    out = tmp_path / "out"
    args = argparse.Namespace(output=out, threads=1)
    first = run_batch(BatchJob(_float32_setup, _write_nothing, args), inputs, scheduler="none")
    first.finish()
    journal_lines = [{"signature": first.summary["signature"]}, *({"record": r} for r in first.records)]
    (out / JOURNAL_NAME).write_text("".join(json.dumps(x) + "\n" for x in journal_lines))
    tifffile.imwrite(inputs[1], np.ones((16, 20), np.uint8))  # another image under the same name

    again = run_batch(BatchJob(_float32_setup, _write_nothing, args), inputs, scheduler="none", resume=True)
    assert again.summary["resumed"] == 1  # a.tif kept, b.tif done again
    assert "resuming: 1 of 2" in capsys.readouterr().err


def test_a_folder_input_is_known_by_its_files_names_sizes_and_times_without_reading_them(tmp_path, monkeypatch):
    """input_digest hashed every chunk file of an OME-Zarr folder for every input of every run (a 30 GB pyramid
    read whole where a run reads one small level). A folder is known by its files' names, sizes and modification
    times now: a chunk rewritten is another input to a resume, and no chunk is read to know that."""
    import builtins
    import io

    image = tmp_path / "image.ome.zarr"
    chunks = image / "0" / "0"
    chunks.mkdir(parents=True)
    (image / "zarr.json").write_text("{}")
    for i in range(3):
        (chunks / str(i)).write_bytes(bytes(64))
    (image / "labels" / "promptseg").mkdir(parents=True)
    (image / "labels" / "promptseg" / "zarr.json").write_text("{}")

    # every way Python opens a file, watched (file access times are not: noatime mounts do not record reads)
    opened = []

    def watching(real):
        def open_and_record(file, *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and str(image) in os.fspath(file):
                opened.append(os.fspath(file))
            return real(file, *args, **kwargs)

        return open_and_record

    for module, name in ((builtins, "open"), (io, "open"), (os, "open")):
        monkeypatch.setattr(module, name, watching(getattr(module, name)))
    (image / "zarr.json").read_text()
    assert opened == [str(image / "zarr.json")], "the watch does not see a read"
    opened.clear()

    digest = input_digest(image)
    assert opened == [], f"files of the folder were read: {opened}"
    assert input_digest(image) == digest
    (image / "labels" / "promptseg" / "zarr.json").write_text('{"labels": 1}')  # the run's own output
    assert input_digest(image) == digest

    chunk = chunks / "1"
    chunk.write_bytes(bytes(65))  # rewritten with another size
    assert input_digest(image) != digest
    digest = input_digest(image)
    chunk.write_bytes(bytes(range(65)))  # the same size, written later
    os.utime(chunk, ns=(0, chunk.stat().st_mtime_ns + 10**9))
    assert input_digest(image) != digest


def _float32_setup(args):
    return None, {"model": "m", "encoder_precision": "float32"}


def _write_nothing(args, state, path, image):
    output = args.output / f"{path.stem}.tif"
    output.write_bytes(b"")
    return {"input": str(path), "status": "ok", "output": str(output)}


def test_a_target_with_nothing_to_find_gets_an_empty_output_even_alone(tmp_path):
    """A method that answers "nothing here" (NothingFoundError, e.g. a reference that does not apply) is not a
    failure: one empty label image, status "empty" with the reason, no retry, and a single input's run goes on to
    write its report instead of stopping (it stopped with exit 2 and no output before)."""
    import argparse

    from napari_promptseg.batch import BatchJob, run_batch

    target = tmp_path / "target.tif"
    tifffile.imwrite(target, np.zeros((12, 16), np.uint8))
    out = tmp_path / "out"
    out.mkdir()
    calls = tmp_path / "calls"
    args = argparse.Namespace(output=out, threads=1, calls=calls)
    outcome = run_batch(BatchJob(_float32_setup, _find_nothing, args), [target], scheduler="none")
    (record,) = outcome.records
    assert record["status"] == "empty" and "resembles nothing" in record["reason"]
    labels = tifffile.imread(record["output"])
    assert labels.shape == (12, 16) and not labels.any()
    assert calls.read_text() == "x"  # asked once: the same inputs would give the same answer


def _find_nothing(args, state, path, image):
    from napari_promptseg.errors import NothingFoundError

    with open(args.calls, "a") as fh:
        fh.write("x")
    raise NothingFoundError(f"{path}: resembles nothing of the reference")


def _threshold_labels(args, state, path, image):
    from napari_promptseg.io import write_labels

    grey = np.asarray(image)[..., 0]
    output = write_labels(args.output / f"{path.stem}.tif", (grey > np.median(grey)).astype(np.uint16))
    return {"input": str(path), "status": "ok", "output": str(output)}


def test_ctrl_c_keeps_the_inputs_the_workers_had_finished(inputs, tmp_path, monkeypatch):
    """Ctrl+C while the driver was taking in one worker's result lost the results that had already come back from
    the other workers: their label files were written, yet report.json called them "interrupted" ("not recorded as
    this run's result") and --resume made them again. What had come back when the run stopped is now recorded and
    kept. The Ctrl+C lands as the first result is said, once every task has finished (no timing guessed)."""
    import argparse

    import distributed

    import napari_promptseg.batch.engine as engine
    from napari_promptseg.batch import BatchJob, run_batch

    out = tmp_path / "out"
    out.mkdir()
    args = argparse.Namespace(output=out, threads=1)
    announce = engine._announce

    def ctrl_c_once_every_task_finished(record, progress):
        monkeypatch.setattr(engine, "_announce", announce)
        client = distributed.Client.current()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and any(f.status != "finished" for f in client.futures.values()):
            time.sleep(0.02)
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "_announce", ctrl_c_once_every_task_finished)
    job = BatchJob(_float32_setup, _threshold_labels, args)
    outcome = run_batch(job, inputs[:3], scheduler="local", workers=2, report_interrupted=True)
    assert outcome.interrupted
    assert [r["status"] for r in outcome.records] == ["ok"] * 3, outcome.records
    journal = [json.loads(line)["record"] for line in (out / JOURNAL_NAME).read_text().splitlines() if "record" in line]
    assert sorted(r["input"] for r in journal) == sorted(map(str, inputs[:3]))
    resumed = run_batch(BatchJob(_float32_setup, _threshold_labels, args), inputs[:3], scheduler="none", resume=True)
    assert resumed.summary["resumed"] == 3


def _disk_full(args, state, path, image):
    import errno

    with open(args.calls, "a") as fh:
        fh.write(f"{path.name}\n")
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("scheduler", ["none", "local"])
def test_a_full_output_disk_stops_the_run_at_the_first_input_that_meets_it(inputs, tmp_path, scheduler):
    """With the output disk full, a run on Dask workers went on through the whole folder: every input segmented,
    retried, segmented again and recorded 'no output: No space left on device' (2 x N segmentations for nothing),
    where a run in this process stopped once the empty label image could not be written either. Both stop now at
    the first input that meets it, without its retry; the journal keeps what was done for --resume."""
    import argparse
    import errno

    from napari_promptseg.batch import BatchJob, run_batch

    out = tmp_path / "out"
    out.mkdir()
    calls = tmp_path / "calls"
    args = argparse.Namespace(output=out, threads=1, calls=calls)
    with pytest.raises(OSError) as raised:
        run_batch(BatchJob(_float32_setup, _disk_full, args), inputs, scheduler=scheduler, workers=2)
    assert raised.value.errno == errno.ENOSPC
    # the workers may have started other inputs before the first error came back (how many is timing): none twice
    started = calls.read_text().split()
    assert len(started) == len(set(started)), started
    if scheduler == "none":
        assert started == [inputs[0].name]


def test_a_default_typed_out_is_the_same_run():
    """--stop-iou 0.5 and no --stop-iou are one run (a resume of either is the other's), and what an earlier
    version (which stored the default) recorded still matches."""
    from napari_promptseg.batch import run_signature
    from napari_promptseg.cli import build_parser

    parse = build_parser().parse_args
    plain = parse(["segment", "a.tif", "-o", "out", "--box", "1", "1", "9", "9"])
    typed = parse(["segment", "a.tif", "-o", "out", "--box", "1", "1", "9", "9", "--stop-iou", "0.5"])
    assert (plain.stop_iou, plain.stop_iou_given, typed.stop_iou_given) == (0.5, False, True)
    assert run_signature(plain) == run_signature(typed)
    other = parse(["segment", "a.tif", "-o", "out", "--box", "1", "1", "9", "9", "--stop-iou", "0.3"])
    assert run_signature(other) != run_signature(plain)


def test_a_reference_or_library_changed_under_its_name_is_another_run(tmp_path, monkeypatch):
    """--resume compared option values only: a reference mask relabelled in place, or an exemplar added to the
    library, kept the earlier run's outputs as this run's. The files' contents are part of the signature now."""
    from napari_promptseg.batch import run_signature
    from napari_promptseg.cli import build_parser

    parse = build_parser().parse_args
    reference, mask = tmp_path / "ref.tif", tmp_path / "ref_mask.tif"
    tifffile.imwrite(reference, np.arange(64, dtype=np.uint8).reshape(8, 8))
    tifffile.imwrite(mask, np.eye(8, dtype=np.uint8))
    oneshot = ["oneshot", "a.tif", "-o", "out", "--reference", str(reference), "--reference-mask", str(mask)]
    before = run_signature(parse(oneshot))
    os.utime(mask, ns=(1, 1))  # touched, same bytes: the same run
    assert run_signature(parse(oneshot)) == before
    tifffile.imwrite(mask, np.eye(8, dtype=np.uint8)[::-1])
    assert run_signature(parse(oneshot)) != before
    model = tmp_path / "text model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"first training")
    text = ["text", "polyp", "a.tif", "-o", "out", "--route", "trained", "--text-model", str(model)]
    trained = run_signature(parse(text))
    (model / "model.safetensors").write_bytes(b"retrained")  # into the same folder
    assert run_signature(parse(text)) != trained

    from napari_promptseg.cli.text import cmd_text

    library = tmp_path / "library"
    (library / "entries").mkdir(parents=True)
    (library / "index.json").write_text("[]")
    monkeypatch.setenv("PROMPTSEG_LIBRARY", str(library))
    monkeypatch.chdir(tmp_path)
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((8, 8), np.uint8))
    args = parse(["text", "nuclei", "a.tif", "-o", "out"])
    monkeypatch.setattr("napari_promptseg.cli.text._prepare_outputs", lambda *a: None)
    monkeypatch.setattr("napari_promptseg.cli.text._run_batch", _signature_only)
    with pytest.raises(_BatchReached):
        cmd_text(args)  # names the default library, as the batch sees it
    assert args.library == library.absolute()
    before = run_signature(args)
    (library / "index.json.lock").write_text("")  # a lock taken and left: nothing changed
    assert run_signature(args) == before
    (library / "entries" / "gland.npz").write_bytes(b"an exemplar")
    assert run_signature(args) != before
    grounded = parse(["text", "nuclei", "a.tif", "-o", "out", "--route", "groundingdino"])
    with pytest.raises(_BatchReached):
        cmd_text(grounded)
    assert grounded.library is None  # a route that reads no library does not see it change


class _BatchReached(Exception):
    pass


def _signature_only(args, paths, setup, process):
    raise _BatchReached


def test_a_scheduler_nobody_listens_at_is_said_at_once(tmp_path):
    """A refused connection was retried for the client's 20 s timeout before the run said anything."""
    import argparse
    import socket
    import time

    from napari_promptseg.batch import BatchJob, run_batch
    from napari_promptseg.errors import PromptsegError

    with socket.socket() as probe:  # a free port, closed again: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    image = tmp_path / "a.tif"
    tifffile.imwrite(image, np.zeros((8, 8), np.uint8))
    args = argparse.Namespace(output=tmp_path / "out", threads=1)
    t0 = time.perf_counter()
    with pytest.raises(PromptsegError, match=f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}"):
        run_batch(BatchJob(_float32_setup, _write_nothing, args), [image], scheduler=f"tcp://127.0.0.1:{port}")
    assert time.perf_counter() - t0 < 10


def test_an_interrupted_run_with_other_options_is_never_resumed_as_the_earlier_one(tmp_path):
    """A run with other options, stopped before its first record, deleted its journal while a worker could still be
    writing an output; a --resume of the earlier run then trusted the earlier report.json over that file."""
    from napari_promptseg.batch.journal import Journal
    from napari_promptseg.errors import PromptsegError

    (tmp_path / "report.json").write_text(
        json.dumps({"version": "x", "command": "segment", "batch": {"signature": "first"}, "images": []})
    )
    other = Journal(tmp_path, "second")
    other.start([], {})
    other.close(finished=False, started=True)  # interrupted with tasks out
    assert (tmp_path / JOURNAL_NAME).exists()
    with pytest.raises(PromptsegError, match="results of another run"):
        Journal(tmp_path, "first").previous()
    quiet = Journal(tmp_path / "quiet", "third")
    quiet.start([], {})
    quiet.close(finished=False)  # stopped before any task: nothing left behind
    assert not (tmp_path / "quiet" / JOURNAL_NAME).exists()


def _failing_setup(args):
    raise PromptsegError("no such model 'foo'")


def test_a_run_that_fails_before_any_target_leaves_no_journal(tmp_path):
    """Only an interrupted run with tasks out keeps its journal; a setup error left one that refused the next
    --resume with other options ("results of another run") although nothing had been written."""
    import argparse

    from napari_promptseg.batch import BatchJob, run_batch

    image = tmp_path / "a.tif"
    tifffile.imwrite(image, np.zeros((8, 8), np.uint8))
    args = argparse.Namespace(output=tmp_path / "out", threads=1)
    with pytest.raises(PromptsegError, match="no such model"):
        run_batch(BatchJob(_failing_setup, _write_nothing, args), [image, image.with_name("b.tif")], scheduler="none")
    assert not (tmp_path / "out" / JOURNAL_NAME).exists()


def test_workers_asked_for_where_they_cannot_be_given_are_said_to_be_ignored(tmp_path, capsys):
    """--scheduler none --workers 4 ran in one process without a word (and so did a single input with --workers):
    the user counted on four processes. Now a warning says why the number is not used."""
    import argparse

    from napari_promptseg.batch import BatchJob, run_batch

    inputs = [tmp_path / "a.tif", tmp_path / "b.tif"]
    for path in inputs:
        tifffile.imwrite(path, np.zeros((8, 8), np.uint8))
    args = argparse.Namespace(output=tmp_path / "out", threads=1)
    run_batch(BatchJob(_float32_setup, _write_nothing, args), inputs, scheduler="none", workers=4).finish()
    err = capsys.readouterr().err
    assert "warning: --workers 4 is ignored: the 2 inputs run in this process (--scheduler none)" in err
    # without --workers, nothing to say
    run_batch(BatchJob(_float32_setup, _write_nothing, args), inputs[:1], scheduler="none").finish()
    assert "--workers" not in capsys.readouterr().err


def test_a_second_run_into_an_output_another_run_is_writing_is_refused(inputs, tmp_path, capsys):
    """Two runs into one -o at once replaced each other's report.json and resume journal: the report of the run that
    ended last listed only its own images (the other's outputs were there, unlisted), and a killed run's journal was
    gone. The second run is now refused at once, before any work, and the first ends as if alone."""
    from napari_promptseg.cli._outputs import OUTPUT_LOCK

    out = tmp_path / "shared out"
    command = [sys.executable, "-m", "napari_promptseg.cli", "segment", *map(str, inputs), *BOX, "-o", str(out)]
    proc = subprocess.Popen(
        [*command, "--scheduler", "none"],
        env=subprocess_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    journal = out / JOURNAL_NAME
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None and not journal.is_file():
            time.sleep(0.02)
        assert proc.poll() is None, "the first run ended before the second could start"
        code = run(inputs[:2], out, "--scheduler", "none")
        err = capsys.readouterr().err
        assert code == 2 and f"-o {out}: another promptseg run is writing there" in err, err
        assert proc.poll() is None, "the first run ended while the second ran: nothing was tested"
        _, first_err = proc.communicate(timeout=240)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, first_err
    report = report_of(out)
    assert [Path(r["input"]) for r in report["images"]] == inputs  # the first run's report, whole
    assert not (out / OUTPUT_LOCK).exists() and not journal.exists()
    # the lock ends with its run: the next one writes there
    assert run(inputs[:1], out, "--scheduler", "none") == 0 and not (out / OUTPUT_LOCK).exists()


def test_a_refused_resume_names_the_options_that_changed(inputs, tmp_path, capsys):
    """--resume after changing one flag said only 'results of another run (other subcommand or options)': the user
    had to guess which of a dozen options it was. It now names them, from a finished run's report.json and from a
    killed run's journal."""
    out = tmp_path / "out"
    assert run(inputs[:1], out, "--scheduler", "none") == 0
    capsys.readouterr()
    assert run(inputs[:1], out, "--scheduler", "none", "--resume", "--overlay") == 2
    err = capsys.readouterr().err
    assert "results of another run (changed since: --overlay (False, now True)); drop --resume" in err, err
    from napari_promptseg.batch.journal import Journal, run_options, signature_of
    from napari_promptseg.cli import build_parser

    # a killed run's journal says it too (here: the box moved)
    before = run_options(build_parser().parse_args(["segment", "a.tif", *BOX, "-o", str(tmp_path / "killed")]))
    Journal(tmp_path / "killed", signature_of(before), before).start([], {})
    moved = ["--box", "10", "12", "50", "60"]
    now = run_options(build_parser().parse_args(["segment", "a.tif", *moved, "-o", str(tmp_path / "killed")]))
    with pytest.raises(PromptsegError, match=r"changed since: --box \(\[\[10.0, 12.0, 50.0, 56.0\]\], now"):
        Journal(tmp_path / "killed", signature_of(now), now).previous()
    # a run of an earlier version has its signature alone: the message stays general
    Journal(tmp_path / "old", signature_of(before)).start([], {})
    with pytest.raises(PromptsegError, match=r"other subcommand or options"):
        Journal(tmp_path / "old", signature_of(now), now).previous()


def test_a_resume_in_a_moved_output_folder_keeps_its_work(inputs, tmp_path, capsys):
    """The disk filled up, the user moved the half-done -o folder to a larger one and resumed there: every image was
    made again (its records named the files in the old folder, which no longer existed). Now the files are found
    under their names in the folder resumed, kept, and the report names them there."""
    import shutil

    first, moved = tmp_path / "small disk" / "out", tmp_path / "large disk" / "out"
    assert run(inputs[:2], first, "--scheduler", "none", "--overlay") == 0
    moved.parent.mkdir()
    shutil.move(first, moved)
    stamps = {path: path.stat().st_mtime_ns for path in moved.iterdir()}
    capsys.readouterr()
    assert run(inputs, moved, "--scheduler", "none", "--overlay", "--resume") == 0
    assert f"resuming: 2 of {N_INPUTS} input(s) already done in {moved}" in capsys.readouterr().err
    assert {path: path.stat().st_mtime_ns for path in stamps if path.suffix != ".json"} == {
        path: stamp for path, stamp in stamps.items() if path.suffix != ".json"
    }  # kept, not made again
    report = report_of(moved)
    assert report["batch"]["resumed"] == 2
    for record in report["images"]:
        assert Path(record["output"]).parent == moved and Path(record["overlay"]).parent == moved
        assert Path(record["output"]).is_file()


def test_a_resume_after_the_input_folder_moved_keeps_the_images_of_the_same_contents(inputs, tmp_path, capsys):
    """The inputs moved (another disk, or the share mounted elsewhere on a cluster node) between a killed or finished
    run and its --resume: every image was made again, the records being kept by input path. An input of the same
    name and the same contents now keeps its record; one whose pixels changed is made again."""
    import shutil

    old, new = tmp_path / "scans", tmp_path / "moved scans"
    old.mkdir()
    for path in inputs[:3]:
        shutil.copy(path, old / path.name)
    out = tmp_path / "out"
    assert run(sorted(old.iterdir()), out, "--scheduler", "none") == 0
    shutil.move(old, new)
    changed = new / inputs[2].name
    tifffile.imwrite(changed, tifffile.imread(changed)[::-1].copy())  # other pixels under the same name
    stamps = {path: path.stat().st_mtime_ns for path in out.glob("*.tif")}
    capsys.readouterr()
    assert run(sorted(new.iterdir()), out, "--scheduler", "none", "--resume") == 0
    assert f"resuming: 2 of 3 input(s) already done in {out}" in capsys.readouterr().err
    remade = out / f"{inputs[2].stem}.tif"
    assert {p: p.stat().st_mtime_ns for p in stamps if p != remade} == {p: s for p, s in stamps.items() if p != remade}
    assert remade.stat().st_mtime_ns != stamps[remade]
    report = report_of(out)
    assert [Path(r["input"]) for r in report["images"]] == sorted(new.iterdir()) and report["batch"]["resumed"] == 2


def _segment_then_linger(args, segmenter, path, image):
    """The segment command's own work (LiteMedSAM; its labels written), then, for a file named ``lingers*``, 2 s
    more before the result goes back (on a worker the labels take their name after these, once its result is left:
    batch.task.run_target; the Ctrl+C lands then, the driver not yet having heard)."""
    from napari_promptseg.cli.segment import _process

    record = _process(args, segmenter, path, image)
    if path.name.startswith("lingers"):
        time.sleep(2.0)
    return record


def test_an_interrupt_while_a_worker_has_written_but_not_returned_keeps_its_result(tmp_path, monkeypatch):
    """Ctrl+C (or SIGTERM) between a Dask worker writing an input's labels and the driver recording them: closing
    the cluster let the worker finish, its labels were in -o, yet the journal and report.json called the input
    "interrupted" ("not recorded as this run's result") and --resume segmented it again. The worker now leaves
    its result beside its outputs; the driver takes it in once the cluster closed, and so does a resume after a
    driver killed before it could."""
    import argparse

    from skimage import data as skdata

    import napari_promptseg.batch.engine as engine
    from napari_promptseg.batch import BatchJob, run_batch
    from napari_promptseg.cli import build_parser
    from napari_promptseg.cli.segment import _process, _setup

    folder = tmp_path / "in"
    folder.mkdir()
    coins = skdata.coins()
    tifffile.imwrite(folder / "first.tif", coins[:128, :160])  # the larger: its task is taken first
    tifffile.imwrite(folder / "lingers.tif", coins[100:196, 100:196])
    inputs = sorted(folder.iterdir())
    out = tmp_path / "out"
    args = build_parser().parse_args(["segment", str(folder), *BOX, "-o", str(out), "--device", "cpu"])
    args.output, args.cache, args.cache_max_gb = out.absolute(), None, None
    lingering = out / "lingers.tif"
    announce = engine._announce

    def ctrl_c_once_the_second_labels_are_written(record, progress):
        monkeypatch.setattr(engine, "_announce", announce)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not lingering.exists():
            time.sleep(0.01)
        assert lingering.exists()
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "_announce", ctrl_c_once_the_second_labels_are_written)
    job = BatchJob(_setup, _segment_then_linger, args)
    outcome = run_batch(job, inputs, scheduler="local", workers=1, report_interrupted=True)
    assert outcome.interrupted
    assert [r["status"] for r in outcome.records] == ["ok", "ok"], outcome.records
    stamp = lingering.stat().st_mtime_ns
    # a driver killed before it took the worker's result in (SIGKILL, a cluster's time limit): its journal lacks it
    journal = out / JOURNAL_NAME
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text("".join(line for line in lines if "lingers.tif" not in line))

    resumed = run_batch(
        BatchJob(_setup, _process, argparse.Namespace(**vars(args))), inputs, scheduler="none", resume=True
    )
    assert resumed.summary["resumed"] == 2
    assert lingering.stat().st_mtime_ns == stamp  # kept, not segmented again
    resumed.finish()
    assert sorted(p.name for p in out.iterdir()) == ["first.tif", "lingers.tif"]  # no journal, no workers' records
