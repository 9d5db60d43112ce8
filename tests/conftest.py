"""Shared fixtures: real data from ../shared/data, the real LiteMedSAM model, isolated weights caches, a fake hub."""

from __future__ import annotations

import atexit
import csv
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .fake_hub import FakeHub, put_in_hf_cache
from .weights_server import WeightsServer

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# napari's make_napari_viewer resets its settings, and a reset saves them: the suite's napari (and the napari of its
# subprocesses) keeps a settings file of its own, not the user's. Set before napari.settings is first imported,
# which reads it once
_NAPARI_SETTINGS = tempfile.mkdtemp(prefix="promptseg-tests-napari-")
os.environ["NAPARI_CONFIG"] = str(Path(_NAPARI_SETTINGS) / "settings.yaml")
atexit.register(shutil.rmtree, _NAPARI_SETTINGS, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def napari_collects_young_garbage():
    """napari collects the whole heap (gc.collect()) at every layer removed from a viewer, closing one included: a
    workaround for Windows OpenGL drivers (napari/_vispy/canvas.py, _clean_and_update_scenegraph). In a test
    process the heap holds torch, the models and napari: ~0.3 s a collection, 34 of them (14 % of the CPU time) in
    test_widget_text.py. Here it collects the young generations, where the closed visuals' garbage is; napari's
    viewer fixture still collects after each test (the whole heap every 50th), so no viewer outlives its test.
    A session fixture, not pytest_configure: xdist's controller runs no test and need not import napari."""
    import gc
    import types

    from napari._vispy import canvas

    canvas.gc = types.SimpleNamespace(collect=lambda *args: gc.collect(1))


@pytest.fixture
def make_viewer(make_napari_viewer):
    """make_napari_viewer, plus: no worker outlives the test (a failing test must not leave a thread behind)."""
    from napari.qt.threading import WorkerBase

    yield make_napari_viewer
    WorkerBase.await_workers(msecs=120_000)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():  # CI lays ../shared beside the clone; its absence is a set-up error, not a skip
        raise RuntimeError(f"real test data not found at {SHARED_DATA}; clone next to the shared/ folder")
    return SHARED_DATA


def dataset_pairs(root: Path) -> list[tuple[Path, Path]]:
    """(image, mask) pairs of a shared dataset folder: from its pairs.csv, else images/X with masks/X."""
    if (root / "pairs.csv").is_file():
        with open(root / "pairs.csv") as fh:
            return [(root / row["image"], root / row["mask"]) for row in csv.DictReader(fh)]
    return [(image, root / "masks" / image.name) for image in sorted((root / "images").iterdir())]


def two_channel_pyramid(cyx, path: Path, kind: str, axes: str = "cyx") -> Path:
    """A 2-channel (C, Y, X) pyramid of 2 levels whose file names its axes: an OME-Zarr (``kind`` "ome.zarr";
    ``axes`` "tczyx": stored as a 5-D image of one time point and one plane, its c axis 1) or a pyramidal OME-TIFF
    ("ome.tif")."""
    import warnings

    import tifffile
    import zarr
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    if kind == "ome.zarr":
        root = zarr.open_group(str(path), mode="w", zarr_format=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            data = cyx if axes == "cyx" else cyx[None, :, None]
            write_image(data, root, axes=axes, fmt=FormatV04(), scale_factors=[2])
    else:
        with tifffile.TiffWriter(path, bigtiff=True) as tif:
            tif.write(cyx, subifds=1, tile=(128, 128), metadata={"axes": "CYX"})
            tif.write(cyx[:, ::2, ::2], subfiletype=1, tile=(128, 128))
    return path


def thread_recording_dask(array, threads: list, chunks=None):
    """A dask array of ``array`` whose every block read appends the thread that read it to ``threads``: where a
    widget reads a layer's pixels is observable. Use it under ``dask.config.set(scheduler="synchronous")`` (dask's
    threaded scheduler computes blocks in its own pool, whatever thread asked)."""
    import threading

    import dask.array as da

    def record(block):
        threads.append(threading.current_thread())
        return block

    return da.from_array(array, chunks=chunks or array.shape).map_blocks(record, dtype=array.dtype)


def thread_recording_slide(image, threads: list) -> list:
    """A two-level pyramid of ``image`` (it and its half) whose block reads are recorded in ``threads``
    (:func:`thread_recording_dask`): a slide layer whose reading on napari's main thread is observable."""
    return [thread_recording_dask(image, threads), thread_recording_dask(image[::2, ::2].copy(), threads)]


def reads_only_in_the_worker(widget, start, reads: list, qtbot, timeout: int) -> None:
    """Start a widget's task (``start()``: True when it was taken) with ``reads`` recording a layer's block reads
    (:func:`thread_recording_dask`): the layer is read by the worker, never on napari's main thread, and the task
    ends done. Call it under ``dask.config.set(scheduler="synchronous")``."""
    import threading

    reads.clear()  # napari's own display of the layer
    assert start()
    assert not [t for t in reads if t is threading.main_thread()], "the slide was read on napari's main thread"
    qtbot.waitUntil(lambda: widget.is_idle, timeout=timeout)
    assert widget.runner.state == "done", widget.runner.widget.status.text()
    assert any(t is not threading.main_thread() for t in reads)  # the worker read it


#: the shared brain MRI's label of the left thalamus (FreeSurfer 10), the structure the stack tests carry
THALAMUS = 10


def box_of(mask) -> tuple[int, int, int, int]:
    """The box (x0, y0, x1, y1) of a 2D mask's pixels, as ``--box`` and the console functions take it."""
    import numpy as np

    rows, cols = np.nonzero(mask)
    return int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())


def thalamus_planes(shared_data: Path, below: int = 3, above: int = 3):
    """The shared brain MRI's planes from ``below`` under to ``above`` over the left thalamus' largest cross-section,
    cropped to the 110 x 140 px around it (float32); the thalamus mask on them; and its box (x0, y0, x1, y1) on that
    largest plane (plane ``below``)."""
    import numpy as np

    scan = np.load(shared_data / "brain_mri_1vol" / "test_scan.npz")
    truth = scan["seg"] == THALAMUS
    z = int(np.argmax(truth.sum((1, 2))))
    crop = (slice(z - below, z + above + 1), slice(40, 150), slice(40, 180))
    return scan["vol"][crop].astype(np.float32), truth[crop], box_of(truth[z, 40:150, 40:180])


def some_dsb_nuclei(shared_data, prefix: str, keep: int = 8):
    """A shared DSB fluorescence image (grey, as its first channel) with ``keep`` of its labelled nuclei, spread over
    its id order, as a user labels a few examples of many; and the image's full labels."""
    import numpy as np

    from napari_promptseg.io import read_image

    folder = shared_data / "nuclei_dsb2018"
    image_path = next((folder / "images").glob(f"{prefix}*.png"))
    labels = read_image(folder / "labels" / f"{image_path.stem}.tif")
    ids = np.unique(labels[labels > 0])
    kept = ids[:: len(ids) // keep][:keep]
    return read_image(image_path)[..., 0], np.where(np.isin(labels, kept), labels, 0), labels


def _birl_pair(shared_data: Path, out: Path, step: int) -> dict[str, Path]:
    """BIRL's artificial pair (fixed, moving) at 1/``step`` of its size as TIFFs in ``out``, and its landmarks
    (lm_fixed, lm_moving) with extra columns (Z, a name)."""
    import tifffile

    from napari_promptseg.io import read_image
    from napari_promptseg.io.landmarks import read_landmarks

    root = shared_data / "registration_birl" / "data-images"
    paths = {}
    for role, stem in (("fixed", "artificial_reference"), ("moving", "artificial_moving-affine")):
        image = read_image(root / "images" / f"{stem}.jpg")[::step, ::step]
        paths[role] = out / f"{role}.tif"
        tifffile.imwrite(paths[role], image)
        xy = read_landmarks(root / "landmarks" / f"{stem}.csv").xy / step
        paths[f"lm_{role}"] = out / f"{role}.csv"
        with open(paths[f"lm_{role}"], "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["", "X", "Y", "Z", "name"])
            writer.writerows([i + 1, f"{x:g}", f"{y:g}", 7, f"point, {i + 1}"] for i, (x, y) in enumerate(xy))
    return paths


@pytest.fixture(scope="session")
def birl_half(shared_data, tmp_path_factory) -> dict[str, Path]:
    """BIRL's artificial pair at half size (300 x 400 px, seconds per run), its landmarks with extra columns (Z, a
    name): the registration output tests' pair where what they measure depends on the images. Tests read these files
    and never change them (a test that swaps the images copies them first)."""
    return _birl_pair(shared_data, tmp_path_factory.mktemp("birl-half"), 2)


@pytest.fixture(scope="session")
def birl_quarter(shared_data, tmp_path_factory) -> dict[str, Path]:
    """The same pair at a quarter of its size (150 x 200 px, a run 3-4 times quicker): for tests of what a run
    writes, names and refuses, whose assertions do not depend on the images' size or on how well they register."""
    return _birl_pair(shared_data, tmp_path_factory.mktemp("birl-quarter"), 4)


@pytest.fixture(scope="module")
def nuclei_sample():
    """The bundled DSB2018 nuclei: (image, ground truth, label and (row0, col0, row1, col1) inclusive bbox of the
    largest nucleus), for the tests of the Interactive widget (tests/interactive_widget.py)."""
    from skimage.measure import regionprops

    from napari_promptseg._sample_data import nuclei

    (image, _, _), (truth, _, _) = nuclei()
    largest = max(regionprops(truth), key=lambda r: r.area)
    r0, c0, r1, c1 = largest.bbox
    return image, truth, largest.label, (r0, c0, r1 - 1, c1 - 1)


@pytest.fixture(scope="session")
def litemedsam():
    from napari_promptseg.models import load_segmenter

    segmenter = load_segmenter("litemedsam", device="cpu")
    # the tests of a process reuse one another's embeddings (sample images, the MRI planes, the DSB references): a
    # third of the encoder's passes in the suite were images encoded before and evicted by the default 8 entries.
    # A test that needs an image encoded afresh clears the cache, as it would need to with 8
    segmenter.cache.maxsize = 64
    _session_segmenters.append(segmenter)
    return segmenter


#: the session's LiteMedSAM once a test asked for it (kept_embeddings reads it without loading it)
_session_segmenters: list = []


@pytest.fixture(autouse=True)
def kept_embeddings():
    """A test that clears the session model's embeddings (as in a new process, to count encoder passes) clears them
    for itself: the entries it found are put back behind its own when it ends. One clear dropped the sample images
    and MRI planes every later test of the process encoded again (4 of the 55 passes of test_volume.py). An entry
    is a pure function of its key (pixels, the encoder weights' fingerprint, precision, normalisation), so one put
    back answers as the encoder would."""
    if not _session_segmenters:
        yield
        return
    cache = _session_segmenters[0].cache
    before = list(cache._items.items())
    yield
    with cache._lock:
        if all(key in cache._items for key, _ in before):
            return
        current = dict(cache._items)
        cache._items.clear()
        cache._items.update((key, value) for key, value in before if key not in current)
        cache._items.update(current)  # the test's own entries are the most recent
        while len(cache._items) > cache.maxsize:
            cache._items.popitem(last=False)


@pytest.fixture(scope="session")
def nuclei_exemplars(litemedsam):
    """The exemplars of the bundled nuclei sample (its 50 labelled nuclei, default settings), fitted once for the
    session: tests of the tiled instance pipeline in several modules segment canvases of the sample with them."""
    from napari_promptseg._sample_data import nuclei
    from napari_promptseg.methods.instances import fit_exemplars

    (image, _, _), (truth, _, _) = nuclei()
    return fit_exemplars(litemedsam, image[..., None], truth)


@pytest.fixture(autouse=True)
def isolated_weights_cache(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's weights caches (ours, Hugging Face's) or reaches the network for weights."""
    monkeypatch.setenv("PROMPTSEG_CACHE_DIR", str(tmp_path_factory.mktemp("weights-cache")))
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf-home")))
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ENDPOINT", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    for scheme in ("http", "https", "all", "no"):  # the loopback servers are reached directly, not through a proxy
        monkeypatch.delenv(f"{scheme}_proxy", raising=False)
        monkeypatch.delenv(f"{scheme.upper()}_PROXY", raising=False)
    monkeypatch.delenv("PROMPTSEG_PRECISION", raising=False)
    from napari_promptseg.models import hub

    monkeypatch.setattr(hub, "_failed_probes", {})  # no test sees another's failed probe
    monkeypatch.setenv("PROMPTSEG_OFFLINE", "1")


@pytest.fixture
def fake_hub(monkeypatch) -> Iterator[FakeHub]:
    """The loopback hub as $HF_ENDPOINT, with downloads allowed."""
    server = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.delenv("PROMPTSEG_OFFLINE")
    yield server
    server.close()


@pytest.fixture
def server() -> Iterator[WeightsServer]:
    """A loopback server of a single-file checkpoint (tests/weights_server.py)."""
    srv = WeightsServer()
    yield srv
    srv.close()


@pytest.fixture
def cache(monkeypatch) -> Path:
    """The per-test weights cache (isolated_weights_cache), with downloads allowed and one retry (after 1 s)."""
    from napari_promptseg.models import registry

    monkeypatch.delenv(registry.OFFLINE_ENV, raising=False)
    monkeypatch.setattr(registry, "DOWNLOAD_RETRIES", 1)
    return registry.cache_dir()


def in_hf_cache(model: str, directory: Path) -> Path:
    """A model directory put in the (isolated) Hugging Face cache as model ``model``'s repository at its pinned
    revision, where ``hf download`` would leave it; returns the snapshot."""
    from napari_promptseg.models import get_card
    from napari_promptseg.models.hub import hf_cache_dir

    card = get_card(model)
    return put_in_hf_cache(directory, card.repo_id, card.revision, hf_cache_dir())


@pytest.fixture(autouse=True)
def isolated_reference_library(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's reference library (io/library.py's default location)."""
    monkeypatch.setenv("PROMPTSEG_LIBRARY", str(tmp_path_factory.mktemp("reference-library")))


@pytest.fixture(autouse=True)
def batches_in_process(monkeypatch):
    """CLI batches run in the test's process (a LocalCluster per multi-image test would cost seconds); the tests of
    Dask batches ask for their scheduler with --scheduler. No test uses the user's embedding cache."""
    monkeypatch.setenv("PROMPTSEG_SCHEDULER", "none")
    monkeypatch.delenv("PROMPTSEG_EMBEDDING_CACHE", raising=False)


def listing_refused(monkeypatch, folder: Path) -> None:
    """``folder``'s listing refused as the OS refuses a folder without read permission (root, which the tests may
    run as, reads it all the same): PermissionError from Path.iterdir for that folder only."""
    import errno

    listing = Path.iterdir

    def refused(self):
        if self == folder:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return listing(self)

    monkeypatch.setattr(Path, "iterdir", refused)


def interrupt_at_first_record(command: list[str], env: dict, journal: Path) -> subprocess.CompletedProcess:
    """Run a promptseg ``command`` as a terminal's foreground job and press Ctrl+C (SIGINT to its process group)
    once its batch journal holds a finished input's record; its exit code and stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_promptseg.cli", *command],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        # as a terminal gives it: a test run in the background (`cmd &`) hands its children SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if journal.is_file() and '"record"' in journal.read_text():
                os.killpg(proc.pid, signal.SIGINT)
                break
            time.sleep(0.05)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(command, proc.returncode, None, stderr)


@pytest.fixture
def bright_cell():
    """skimage's real fluorescence `cell` image (uint8) with a mask of its bright cell (a small library exemplar)."""
    import numpy as np
    from skimage import data as skdata

    image = skdata.cell()
    mask = np.zeros(image.shape, bool)
    mask[200:300, 250:400] = image[200:300, 250:400] > np.percentile(image, 60)
    return image, mask
