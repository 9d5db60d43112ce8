"""--resume with --device auto one time and --device cpu the next, on a machine whose auto is the CPU, is one run:
the device was part of the run's signature, and a user who added --device cpu to a resumed command lost the whole
run's progress ('results of another run'). Each record now says where it ran, and the driver (no torch) compares
the device asked for with it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tifffile

from napari_promptseg.batch import JOURNAL_NAME
from napari_promptseg.batch.journal import Journal, run_options, signature_of
from napari_promptseg.cli import build_parser, main
from napari_promptseg.errors import PromptsegError
from napari_promptseg.io import read_image

from .conftest import REPO

BOX = ["--box", "10", "12", "50", "56"]


@pytest.fixture(scope="module")
def inputs(shared_data, tmp_path_factory) -> list[Path]:
    """Two small crops (96 px) of real nuclei images."""
    folder = tmp_path_factory.mktemp("inputs")
    paths = []
    for i, source in enumerate(sorted((shared_data / "nuclei_dsb2018" / "images").iterdir())[:2]):
        paths.append(folder / f"nuclei_{i}.tif")
        tifffile.imwrite(paths[-1], read_image(source)[:96, :96, :3])
    return paths


def segment(inputs: list[Path], out: Path, *options: str) -> int:
    return main(["segment", *map(str, inputs), *BOX, "-o", str(out), "--scheduler", "none", *options])


def test_auto_then_cpu_resumes_on_a_cpu_machine_and_cuda_is_refused(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    assert segment(inputs[:1], out) == 0  # --device auto: the CPU here
    first = json.loads((out / "report.json").read_text())["images"][0]
    assert first["device"] == "cpu" and first["encoder_precision"]  # where each target ran, in report.json
    stamp = Path(first["output"]).stat().st_mtime_ns
    capsys.readouterr()

    assert segment(inputs, out, "--device", "cpu", "--resume") == 0
    assert "resuming: 1 of 2 input(s)" in capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["batch"]["resumed"] == 1 and Path(first["output"]).stat().st_mtime_ns == stamp  # kept
    assert [r["device"] for r in report["images"]] == ["cpu", "cpu"]

    # and back: auto matches whatever the run recorded
    assert segment(inputs, out, "--resume") == 0
    assert json.loads((out / "report.json").read_text())["batch"]["resumed"] == 2

    # a device of another kind than the one it ran on is another run (refused before any model loads)
    before = (out / "report.json").read_bytes()
    assert segment(inputs, out, "--device", "cuda", "--resume") == 2
    assert "changed since: --device (auto, now cuda; it ran on cpu)" in capsys.readouterr().err
    assert (out / "report.json").read_bytes() == before


def _options(out: Path, *device: str) -> dict:
    return run_options(build_parser().parse_args(["segment", "a.tif", *BOX, "-o", str(out), *device]))


def test_a_journal_of_an_earlier_version_resumes_on_the_device_its_meta_names(tmp_path):
    """An earlier version's journal has its signature alone and no device per record: its --device is found from
    the signature, and where it ran from its meta."""
    out = tmp_path / "old"
    auto = _options(out)
    Journal(out, signature_of(auto)).start([], {"model": "litemedsam", "device": "cpu"})
    Journal(out, signature_of(_options(out, "--device", "cpu")), _options(out, "--device", "cpu")).previous()
    with pytest.raises(PromptsegError, match=r"--device \(auto, now cuda; it ran on cpu\)"):
        Journal(out, signature_of(_options(out, "--device", "cuda")), _options(out, "--device", "cuda")).previous()

    # an explicit --device of the earlier run is where it ran; another option changed besides is another run
    out = tmp_path / "explicit"
    Journal(out, signature_of(_options(out, "--device", "cpu"))).start([], {})
    Journal(out, signature_of(_options(out)), _options(out)).previous()
    overlay = _options(out, "--overlay")
    with pytest.raises(PromptsegError, match="other subcommand or options"):
        Journal(out, signature_of(overlay), overlay).previous()


def test_the_driver_compares_devices_without_importing_torch(tmp_path):
    """A tcp/Dask driver never imports torch (2 s of every batch start): the device check reads the journal only."""
    out = tmp_path / "out"
    code = f"""
import sys
from pathlib import Path
from napari_promptseg.batch.journal import Journal, run_options, signature_of
from napari_promptseg.cli import build_parser
out = Path({str(out)!r})
def options(*device):
    args = ["segment", "a.tif", "--box", "1", "1", "9", "9", "-o", str(out), *device]
    return run_options(build_parser().parse_args(args))
Journal(out, signature_of(options())).start([], {{"device": "cpu"}})
Journal(out, signature_of(options("--device", "cpu")), options("--device", "cpu")).previous()
print("torch" in sys.modules)
"""
    env = {"PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
    assert (out / JOURNAL_NAME).is_file()


def test_auto_resumed_where_auto_means_another_device_makes_that_devices_images_again(inputs, tmp_path, capsys):
    """A --device auto run on a GPU machine, resumed with --device auto where there is none (the output folder on
    a share, the GPU node busy): the signature is the same, so every record was kept, and the report mixed images
    made on cuda with images made on the CPU. auto means the device it resolves to now: the images made on another
    kind are made again, and said; those made here are kept."""
    out = tmp_path / "out"
    assert segment(inputs, out) == 0  # auto: the CPU here
    report = json.loads((out / "report.json").read_text())
    stamps = [Path(r["output"]).stat().st_mtime_ns for r in report["images"]]
    # as a GPU machine wrote it: the first input made on cuda (the run's meta says where its workers ran)
    report["images"][0]["device"] = "cuda:0"
    (out / "report.json").write_text(json.dumps(report))
    capsys.readouterr()

    assert segment(inputs, out, "--resume") == 0
    assert "1 input(s) done on cuda:0 are made again on cpu" in capsys.readouterr().err
    again = json.loads((out / "report.json").read_text())
    assert again["batch"]["resumed"] == 1 and [r["device"] for r in again["images"]] == ["cpu", "cpu"]
    assert Path(again["images"][0]["output"]).stat().st_mtime_ns != stamps[0]  # made again
    assert Path(again["images"][1]["output"]).stat().st_mtime_ns == stamps[1]  # kept


def test_a_run_of_a_version_before_an_option_was_added_resumes_when_it_is_not_given(tmp_path):
    """A version that adds an option (--time, --reference-plane) puts it in every run's signature, given or not: a
    run interrupted before the upgrade was refused as 'results of another run'. Options the earlier run did not
    know, left unset, are the earlier run's; one given is another run."""
    out = tmp_path / "out"
    now = _options(out)
    earlier = {k: v for k, v in now.items() if k not in ("time", "reference_plane")}
    assert earlier != now  # this version has them
    Journal(out, signature_of(earlier), earlier).start([], {})
    Journal(out, signature_of(now), now).previous()

    later = _options(out, "--time", "1")
    with pytest.raises(PromptsegError, match=r"--time \(None, now 1\)"):
        Journal(out, signature_of(later), later).previous()
