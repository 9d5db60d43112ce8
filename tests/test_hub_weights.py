"""Hub-hosted models through huggingface_hub against a loopback hub ($HF_ENDPOINT): downloaded into the user's
Hugging Face cache at the card's pinned revision, found there offline ($HF_HOME, $HF_HUB_CACHE), used end to end by
`promptseg text`; fine-tuned checkpoints and DINOv2 given as hub ids; the one error when nothing is cached offline.
The models are tiny random-weight builds of the real architectures (tests/test_clipseg.py, tests/test_grounding.py)."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_promptseg import cli
from napari_promptseg.errors import WeightsError
from napari_promptseg.io import read_image, read_mask
from napari_promptseg.models import MODELS, get_card, load_grounder, load_heatmapper, registry, resolve_weights
from napari_promptseg.models.features import load_feature_extractor
from napari_promptseg.models.hub import hf_cache_dir

from .conftest import dataset_pairs, in_hf_cache
from .fake_hub import FakeHub, put_in_hf_cache
from .test_clipseg import tiny_clipseg_dir  # noqa: F401 (fixture)
from .test_grounding import hf_dir  # noqa: F401 (fixture)

CLIPSEG = get_card("clipseg_rd64_refined")
GDINO = get_card("grounding_dino_tiny")


def _snapshot(repo_id: str, revision: str) -> Path:
    return hf_cache_dir() / ("models--" + repo_id.replace("/", "--")) / "snapshots" / revision


@pytest.fixture(scope="module")
def hf_home_with_tiny_models(tmp_path_factory, tiny_clipseg_dir, hf_dir) -> Path:  # noqa: F811
    """A Hugging Face home whose cache got the tiny CLIPSeg and GroundingDINO the way a user's does: downloaded by
    huggingface_hub (here from the loopback hub) through resolve_weights."""
    home = tmp_path_factory.mktemp("hf-home-tiny")
    hub = FakeHub()
    hub.add(CLIPSEG.repo_id, tiny_clipseg_dir, CLIPSEG.revision)
    hub.add(GDINO.repo_id, hf_dir, GDINO.revision)
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("HF_HOME", str(home))
            env.setenv("HF_ENDPOINT", hub.url)
            env.delenv("PROMPTSEG_OFFLINE", raising=False)
            assert hf_cache_dir() == home / "hub"
            for card in (CLIPSEG, GDINO):
                assert resolve_weights(card.name) == _snapshot(card.repo_id, card.revision)
    finally:
        hub.close()
    return home


def test_hub_model_downloads_into_the_hf_cache_at_the_pinned_revision_once(fake_hub, tiny_clipseg_dir):  # noqa: F811
    fake_hub.add(CLIPSEG.repo_id, tiny_clipseg_dir, CLIPSEG.revision)
    seen: list[tuple[int, int | None]] = []

    path = resolve_weights(CLIPSEG.name, progress=lambda done, total: seen.append((done, total)))

    assert path == _snapshot(CLIPSEG.repo_id, CLIPSEG.revision)
    served = sorted(p.name for p in tiny_clipseg_dir.iterdir())  # the card's files but transformers 5's names
    assert sorted(p.name for p in path.iterdir()) == served and set(served) < set(CLIPSEG.files)
    assert all((path / f).is_symlink() for f in served)  # the hub's layout: snapshots link to blobs
    weights_size = (tiny_clipseg_dir / "model.safetensors").stat().st_size
    assert (weights_size, weights_size) in seen  # huggingface_hub's progress bar also reports to ours
    assert sorted(fake_hub.downloads()) == [f"/{CLIPSEG.repo_id}/resolve/{CLIPSEG.revision}/{f}" for f in served]
    assert registry.weights_status(CLIPSEG) == ("hf_cache", path)
    asked = len(fake_hub.requests)
    assert resolve_weights(CLIPSEG.name) == path  # a complete pinned snapshot: not even a HEAD request
    assert len(fake_hub.requests) == asked
    heat = load_heatmapper(device="cpu").heatmap(np.zeros((40, 50), np.uint8), "lung")
    assert heat.shape == (40, 50)


def test_text_cli_routes_run_the_tiny_models_found_in_the_hf_cache(
    hf_home_with_tiny_models, shared_data, tmp_path, monkeypatch
):
    monkeypatch.setenv("HF_HOME", str(hf_home_with_tiny_models))  # offline (conftest): only the cache can answer
    image_path = dataset_pairs(shared_data / "lungs_cxr_shenzhen")[0][0]
    # random weights: thresholds that leave a few blobs and boxes (each box is one LiteMedSAM decoding)
    image = read_image(image_path)
    heat = load_heatmapper(device="cpu").heatmap(image, "lung")
    scores = load_grounder(device="cpu").boxes(image, "lung .", box_threshold=0.0, text_threshold=0.0).scores
    routes = {
        "clipseg": ["--heatmap-threshold", str(np.quantile(heat, 0.7)), "--no-refine"],
        "groundingdino": ["--box-threshold", str(np.sort(scores)[-3]), "--text-threshold", "0"],
    }
    for route, options in routes.items():
        out = tmp_path / route
        assert cli.main(["text", "lung", str(image_path), "-o", str(out), "--route", route, *options]) == 0
        report = json.loads((out / "report.json").read_text())
        card = CLIPSEG if route == "clipseg" else GDINO
        assert (report["route"], report["text_model"]) == (route, card.name)
        labels = tifffile.imread(out / f"{image_path.stem}.tif")
        assert report["images"][0]["objects"] == labels.max() >= 1


def test_hf_hub_cache_wins_over_hf_home_as_huggingface_hub_has_it(tmp_path, monkeypatch, tiny_clipseg_dir):  # noqa: F811
    home_snapshot = put_in_hf_cache(tiny_clipseg_dir, CLIPSEG.repo_id, CLIPSEG.revision, tmp_path / "home" / "hub")
    shared_snapshot = put_in_hf_cache(tiny_clipseg_dir, CLIPSEG.repo_id, CLIPSEG.revision, tmp_path / "lab-drive")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert resolve_weights(CLIPSEG.name) == home_snapshot
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "lab-drive"))
    assert resolve_weights(CLIPSEG.name) == shared_snapshot


def test_a_cached_model_at_another_revision_is_used_not_fetched_again(fake_hub, tiny_clipseg_dir, capsys):  # noqa: F811
    other = "b" * 40  # the user's cache holds `main` at another commit (e.g. fetched by transformers)
    snapshot = put_in_hf_cache(tiny_clipseg_dir, CLIPSEG.repo_id, other, hf_cache_dir())

    assert resolve_weights(CLIPSEG.name) == snapshot and fake_hub.downloads() == []
    assert cli.main(["models"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(CLIPSEG.name))
    assert "HF cache (other rev.)" in line


def test_offline_with_nothing_cached_gives_the_one_clear_error(fake_hub, shared_data, tmp_path, monkeypatch, capsys):
    for variable in ("PROMPTSEG_OFFLINE", "HF_HUB_OFFLINE"):
        with monkeypatch.context() as env:
            env.setenv(variable, "1")
            with pytest.raises(WeightsError) as info:
                resolve_weights(GDINO.name)
        assert info.value.message == f"{GDINO.name}: weights not found and ${variable} is set"
        details = info.value.details
        assert f"{GDINO.repo_id} (config.json, model.safetensors, revision {GDINO.revision[:12]})" in details
        assert f"not in the Hugging Face cache {hf_cache_dir()}" in details and "$HF_HOME" in details
        assert f"hf download {GDINO.repo_id} --revision {GDINO.revision}" in details
        # a grounder's weights are given with `text --text-weights` (--weights is the SAM checkpoint there)
        assert "pass the model directory with --text-weights" in details
    assert fake_hub.requests == []

    monkeypatch.setenv("PROMPTSEG_OFFLINE", "1")
    image = dataset_pairs(shared_data / "lungs_cxr_shenzhen")[0][0]
    assert cli.main(["text", "lung", str(image), "-o", str(tmp_path / "out"), "--route", "clipseg"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CLIPSeg weights (route clipseg)" in err[0]
    assert f"{CLIPSEG.name}: weights not found and $PROMPTSEG_OFFLINE is set" in err[0]
    assert str(hf_cache_dir()) in err[0] and CLIPSEG.repo_id in err[0]


def test_an_unreachable_hub_fails_at_once_and_is_not_probed_again(monkeypatch):
    """Without a network huggingface_hub retries for up to a minute; the probe of the endpoint fails in one try,
    and the failure is remembered, so the next model (GroundingDINO after CLIPSeg in `promptseg text`) fails at once."""
    from napari_promptseg.models import hub

    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("PROMPTSEG_OFFLINE")
    monkeypatch.setattr(hub, "_failed_probes", {})
    monkeypatch.setattr(hub, "download_snapshot", _no_download)

    with pytest.raises(WeightsError) as info:
        resolve_weights(CLIPSEG.name)
    assert info.value.message.startswith(
        f"{CLIPSEG.name}: weights not found, and http://127.0.0.1:{port} cannot be reached "
        f"(no connection to 127.0.0.1:{port}: "
    )
    assert f"hf download {CLIPSEG.repo_id} --revision {CLIPSEG.revision}" in info.value.details
    # the files the model needs only: the whole repository is its weights twice (pytorch_model.bin beside
    # model.safetensors, 600 MB more for CLIPSeg); a listed file the repository lacks matches no --include
    includes = " ".join(f"--include {file}" for file in CLIPSEG.files)
    assert f"hf download {CLIPSEG.repo_id} --revision {CLIPSEG.revision} {includes}`" in info.value.details

    monkeypatch.setattr(hub.socket, "create_connection", _no_download)  # remembered: no second probe
    with pytest.raises(WeightsError, match=f"{GDINO.name}: weights not found, and .* cannot be reached"):
        resolve_weights(GDINO.name)


def test_behind_a_proxy_the_proxy_is_what_the_probe_asks(monkeypatch):
    from napari_promptseg.models import hub

    monkeypatch.setattr(hub, "_failed_probes", {})
    for variable in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
    with socket.socket() as proxy:  # listens: a proxy that accepts connections
        proxy.bind(("127.0.0.1", 0))
        proxy.listen()
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.getsockname()[1]}")
        assert hub.unreachable_reason("https://hub.invalid") is None  # the name need not resolve here
        monkeypatch.setenv("NO_PROXY", "hub.invalid")  # reached directly: the name must resolve
        assert "no connection to hub.invalid:443" in hub.unreachable_reason("https://hub.invalid")


def _no_download(*args, **kwargs):
    raise AssertionError("the network was used after the probe had failed")


def test_fine_tuned_checkpoints_given_as_hub_ids(fake_hub, tiny_clipseg_dir, tmp_path, monkeypatch):  # noqa: F811
    commit = "c" * 40
    fake_hub.add("lab/clipseg-finetuned", tiny_clipseg_dir, commit)
    model = load_heatmapper(weights="lab/clipseg-finetuned", device="cpu")
    assert model.heatmap(np.zeros((20, 20), np.uint8), "cell").shape == (20, 20)
    assert resolve_weights(CLIPSEG.name, "lab/clipseg-finetuned") == _snapshot("lab/clipseg-finetuned", commit)

    sam = tmp_path / "sam-repo"
    sam.mkdir()
    (sam / "sam_finetuned.pth").write_bytes(b"a fine-tuned SAM; explicit weights are not held to a checksum")
    fake_hub.add("lab/sam-finetuned", sam, commit)
    path = resolve_weights("sam_vit_b", "lab/sam-finetuned/sam_finetuned.pth")
    assert path == _snapshot("lab/sam-finetuned", commit) / "sam_finetuned.pth"

    monkeypatch.setenv("PROMPTSEG_OFFLINE", "1")  # now cached: found offline through the cache's refs/main
    assert resolve_weights("sam_vit_b", "lab/sam-finetuned/sam_finetuned.pth") == path
    offline_error = r"weights not found and \$PROMPTSEG_OFFLINE is set; lab/other is not a local path; as a hub id"
    with pytest.raises(WeightsError, match=offline_error):
        resolve_weights(CLIPSEG.name, "lab/other")
    monkeypatch.delenv("PROMPTSEG_OFFLINE")
    with pytest.raises(WeightsError, match=r"clipseg_rd64_refined: download of lab/other@main from .* failed"):
        resolve_weights(CLIPSEG.name, "lab/other")


def test_dinov2_by_hub_id_comes_at_the_cards_pinned_revision(fake_hub, tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    card = get_card("dinov2_small")
    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=14, image_size=98
    )
    Dinov2Model(config).save_pretrained(tmp_path / "tiny-dinov2")  # no preprocessor_config.json: an optional file
    fake_hub.add(card.repo_id, tmp_path / "tiny-dinov2", card.revision)

    extractor = load_feature_extractor(f"dinov2:{card.repo_id}", image_size=112)

    assert extractor.features(np.zeros((60, 90), np.uint8)).shape == (5, 8)
    assert registry.weights_status(card) == ("hf_cache", _snapshot(card.repo_id, card.revision))


def test_bundled_minilm_first_then_the_hf_cache(tmp_path, monkeypatch):
    card = MODELS["all_minilm_l6_v2"]
    assert registry.weights_status(card)[0] == "bundled"
    monkeypatch.setitem(MODELS, card.name, card.__class__(**{**card.__dict__, "package_resource": ("not_here", "m")}))
    assert registry.weights_status(MODELS[card.name]) == ("missing", None)
    (tmp_path / "m").mkdir()
    for file in ("config.json", "model.safetensors"):
        (tmp_path / "m" / file).write_text("{}")
    snapshot = in_hf_cache(card.name, tmp_path / "m")
    assert registry.weights_status(MODELS[card.name]) == ("hf_cache", snapshot)


def test_a_cancelled_hub_download_is_a_cancel_not_a_failed_download(fake_hub, tiny_clipseg_dir):  # noqa: F811
    """The widgets' Cancel during a hub model's download (GroundingDINO: 690 MB) stops it as a cancel; it was caught
    with the network's errors and reported as 'download ... failed (download of ... cancelled)', a failed run with the
    advice to fetch the model by hand. The next load fetches it whole."""
    from napari_promptseg.errors import CancelledError
    from napari_promptseg.models import download_progress

    fake_hub.add(CLIPSEG.repo_id, tiny_clipseg_dir, CLIPSEG.revision)
    told: list[str] = []
    progress = download_progress(lambda fraction, message: told.append(message), lambda: bool(told), "clipseg")

    with pytest.raises(CancelledError, match="download of clipseg cancelled"):
        resolve_weights(CLIPSEG.name, progress=progress)

    assert registry.weights_status(CLIPSEG) == ("missing", None)
    assert resolve_weights(CLIPSEG.name) == _snapshot(CLIPSEG.repo_id, CLIPSEG.revision)


def test_a_cancel_while_a_snapshots_lacking_files_come_is_a_cancel(fake_hub, tiny_clipseg_dir, tmp_path):  # noqa: F811
    """A snapshot with its weights but not its tokenizer (a partial copy): the files it lacks are fetched; a Cancel
    then was swallowed with the network's errors, and the model loaded anyway after the user had stopped it."""
    from napari_promptseg.errors import CancelledError
    from napari_promptseg.models import download_progress

    partial = tmp_path / "partial"
    partial.mkdir()
    for file in ("config.json", "model.safetensors"):
        (partial / file).write_bytes((tiny_clipseg_dir / file).read_bytes())
    in_hf_cache(CLIPSEG.name, partial)
    fake_hub.add(CLIPSEG.repo_id, tiny_clipseg_dir, CLIPSEG.revision)
    told: list[str] = []
    progress = download_progress(lambda fraction, message: told.append(message), lambda: bool(told), "clipseg")

    with pytest.raises(CancelledError, match="download of clipseg cancelled"):
        resolve_weights(CLIPSEG.name, progress=progress)


def test_a_hugging_face_cache_folder_given_as_the_model_directory(tiny_clipseg_dir, tmp_path):  # noqa: F811
    """--text-weights ~/.cache/huggingface/hub/models--CIDAS--clipseg-rd64-refined (the folder a user sees there, or
    copies from another machine) was refused as 'missing config.json', though the model is in it: its snapshot
    refs/main names is used, else its only one; several without refs/main are named."""
    import shutil

    snapshot = put_in_hf_cache(tiny_clipseg_dir, "lab/clipseg-copy", "d" * 40, tmp_path / "copied hub")
    repo = snapshot.parents[1]
    model = load_heatmapper(weights=repo, device="cpu")
    assert model.heatmap(np.zeros((20, 20), np.uint8), "cell").shape == (20, 20)
    assert resolve_weights(CLIPSEG.name, repo) == snapshot

    shutil.rmtree(repo / "refs")
    assert resolve_weights(CLIPSEG.name, repo) == snapshot
    put_in_hf_cache(tiny_clipseg_dir, "lab/clipseg-copy", "e" * 40, tmp_path / "copied hub")
    shutil.rmtree(repo / "refs")
    with pytest.raises(
        WeightsError,
        match=f"without refs/main and with 2 snapshots; give one of its snapshots \\({'d' * 40}, {'e' * 40}\\)",
    ):
        resolve_weights(CLIPSEG.name, repo)


def test_a_hub_answering_with_a_server_error_is_named_not_the_users_connection(monkeypatch, tmp_path):
    """The hub (or a mirror in $HF_ENDPOINT) answering 500: the error said huggingface_hub's 'cannot find the requested
    files in the local cache. Please check your connection', sending the user to a connection that worked."""
    from http.server import BaseHTTPRequestHandler

    from .fake_hub import serve

    class Failing(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET = _answer  # noqa: N815 (http.server's naming)

        def log_message(self, *args: object) -> None:
            pass

    server, _ = serve(Failing, None)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.delenv("PROMPTSEG_OFFLINE")
    import huggingface_hub.utils._http as hub_http

    monkeypatch.setattr(hub_http.time, "sleep", lambda seconds: None)  # huggingface_hub's 5 retries wait 23 s
    try:
        with pytest.raises(WeightsError) as error:
            resolve_weights("dinov2_small")
    finally:
        server.shutdown()
        server.server_close()
    assert "500 Internal Server Error" in error.value.message
    assert "check your connection" not in error.value.message


def test_a_hub_download_does_not_hold_up_loading_another_model(fake_hub, tiny_clipseg_dir):  # noqa: F811
    """One lock held every model's load while any model's weights downloaded: the Text prompt widget fetching
    GroundingDINO (690 MB) left the Interactive widget's every run waiting on its bundled LiteMedSAM."""
    import threading

    from napari_promptseg.models import load_segmenter

    fake_hub.add(CLIPSEG.repo_id, tiny_clipseg_dir, CLIPSEG.revision)
    downloading, release = threading.Event(), threading.Event()

    def slow_network(done: int, total: int | None) -> None:
        downloading.set()
        release.wait(60)

    loads: dict[str, object] = {}
    clipseg = threading.Thread(
        target=lambda: loads.update(clipseg=load_heatmapper(device="cpu", progress=slow_network)), daemon=True
    )
    litemedsam = threading.Thread(target=lambda: loads.update(litemedsam=load_segmenter(device="cpu")), daemon=True)
    clipseg.start()
    try:
        assert downloading.wait(30)
        litemedsam.start()
        litemedsam.join(60)
        assert "litemedsam" in loads  # loaded while the other download was still going
        assert "clipseg" not in loads
    finally:
        release.set()
        clipseg.join(60)
    assert "clipseg" in loads


def test_a_hugging_face_cache_folder_given_for_a_single_file_model(tmp_path):
    """--weights ~/.cache/huggingface/hub/models--lab--sam-finetuned for SAM: the checkpoint in its snapshot is
    taken when it has the published name, else the snapshot's checkpoints are named (it said 'no checkpoint')."""
    repo_files = tmp_path / "repo"
    repo_files.mkdir()
    (repo_files / "sam_finetuned.pth").write_bytes(b"a fine-tuned SAM")
    snapshot = put_in_hf_cache(repo_files, "lab/sam-finetuned", "f" * 40, tmp_path / "hub")
    repo = snapshot.parents[1]
    with pytest.raises(WeightsError, match=r"folder without sam_vit_b_01ec64.pth \(it holds sam_finetuned.pth\)"):
        resolve_weights("sam_vit_b", repo)
    (repo_files / "sam_vit_b_01ec64.pth").write_bytes(b"SAM under its published name")
    snapshot = put_in_hf_cache(repo_files, "lab/sam-finetuned", "e" * 40, tmp_path / "hub")  # refs/main: this one
    assert resolve_weights("sam_vit_b", repo) == snapshot / "sam_vit_b_01ec64.pth"


def test_auto_route_downloads_nothing_a_named_route_does(fake_hub, tiny_clipseg_dir, hf_dir, shared_data, tmp_path):  # noqa: F811
    """A user with the offline library alone, online: route auto fetched GroundingDINO (690 MB) from the hub without
    asking, while the Text widget said the library would answer. Auto takes what is on disk and the network is not
    even asked; naming the route downloads the model (with progress), and auto takes it from then on."""
    from napari_promptseg.io.library import ReferenceLibrary
    from napari_promptseg.methods.text import available_route, choose_route

    fake_hub.add(GDINO.repo_id, hf_dir, GDINO.revision)
    fake_hub.add(CLIPSEG.repo_id, tiny_clipseg_dir, CLIPSEG.revision)
    image_path, mask_path = dataset_pairs(shared_data / "lungs_cxr_shenzhen")[0]
    library = ReferenceLibrary.open(tmp_path / "library")
    library.add("lung", read_image(image_path)[::8, ::8, 0], read_mask(mask_path)[::8, ::8])

    assert available_route("auto") == "library"  # what the widget shows before a run
    route = choose_route("auto", library=library, device="cpu")
    assert (route.route, route.skipped) == ("library", ["no GroundingDINO weights", "no CLIPSeg weights"])
    assert "not downloaded unless asked for" in route.details[0]
    assert fake_hub.requests == []

    told: list[str] = []
    route = choose_route("groundingdino", device="cpu", progress=lambda fraction, message: told.append(message))
    assert (route.route, route.name) == ("groundingdino", GDINO.name)
    assert f"/{GDINO.repo_id}/resolve/{GDINO.revision}/model.safetensors" in fake_hub.downloads()
    assert any(m.startswith(f"downloading {GDINO.name}:") for m in told)
    asked = len(fake_hub.requests)
    assert choose_route("auto", library=library, device="cpu").route == "groundingdino"  # now on disk
    assert len(fake_hub.requests) == asked


def test_a_dinov2_download_reports_progress_and_stops_on_cancel(fake_hub, tmp_path):
    """DINOv2 (--features dinov2:facebook/dinov2-small) was fetched with no progress of ours and no way to stop it,
    unlike every other model: its download now reports through the shared download progress and stops on cancel."""
    from transformers import Dinov2Config, Dinov2Model

    from napari_promptseg.errors import CancelledError
    from napari_promptseg.models import download_progress

    card = get_card("dinov2_small")
    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=14, image_size=98
    )
    Dinov2Model(config).save_pretrained(tmp_path / "tiny-dinov2")
    fake_hub.add(card.repo_id, tmp_path / "tiny-dinov2", card.revision)
    told: list[str] = []
    progress = download_progress(lambda fraction, message: told.append(message), lambda: bool(told), card.name)

    with pytest.raises(CancelledError, match=f"download of {card.name} cancelled"):
        load_feature_extractor(f"dinov2:{card.repo_id}", progress=progress)
    assert told[0].startswith(f"downloading {card.name}:")
    assert registry.weights_status(card) == ("missing", None)  # nothing half-fetched is taken for the model

    seen: list[tuple[int, int | None]] = []
    extractor = load_feature_extractor(f"dinov2:{card.repo_id}", progress=lambda done, size: seen.append((done, size)))
    weights = (tmp_path / "tiny-dinov2" / "model.safetensors").stat().st_size
    assert (weights, weights) in seen
    assert extractor.features(np.zeros((60, 90), np.uint8)).shape[0] >= 2


def test_promptseg_text_tells_a_named_routes_download(fake_hub, tiny_clipseg_dir, shared_data, tmp_path, capsys):  # noqa: F811
    """`promptseg text --route clipseg` downloading CLIPSeg showed huggingface_hub's bars, not the line every other
    download of the CLI gets."""
    fake_hub.add(CLIPSEG.repo_id, tiny_clipseg_dir, CLIPSEG.revision)
    image_path, _ = dataset_pairs(shared_data / "lungs_cxr_shenzhen")[0]
    small = tmp_path / "lungs.tif"
    tifffile.imwrite(small, read_image(image_path)[::8, ::8, 0])
    code = cli.main(
        ["text", "lungs", str(small), "--route", "clipseg", "-o", str(tmp_path / "out"), "--scheduler", "none"]
    )
    err = capsys.readouterr().err
    assert code in (0, 1), err  # a tiny random CLIPSeg may find nothing; the download is what is checked
    assert f"downloading {CLIPSEG.name}:" in err, err


def test_a_stopped_hub_download_is_listed_as_incomplete_with_what_to_do(fake_hub, tiny_clipseg_dir, capsys):  # noqa: F811
    """A hub model whose download was stopped (napari closed, the process killed) was listed by `promptseg models`
    as missing, as if nothing had been fetched; huggingface_hub (since 1.18) does not resume the file it left nor
    remove it. It is listed as an incomplete download with its size, that a run starts again and what to delete."""
    from huggingface_hub import __version__ as hub_version

    from napari_promptseg.models import hub

    blobs = hub.repo_folder(CLIPSEG.repo_id) / "blobs"
    blobs.mkdir(parents=True)
    # what huggingface_hub leaves of a killed download: <etag>.<nonce>.incomplete (before 1.18: <etag>.incomplete)
    (blobs / f"{'a' * 64}.0123abcd.incomplete").write_bytes(b"\0" * 300_000)
    status = "partial" if tuple(map(int, hub_version.split(".")[:2])) < (1, 18) else "incomplete"

    assert registry.weights_status(CLIPSEG) == (status, blobs)
    assert cli.main(["models", "--json"]) == 0
    row = {r["name"]: r for r in json.loads(capsys.readouterr().out)}[CLIPSEG.name]
    assert (row["weights"], row["path"], row["size"]) == (status, str(blobs), 300_000)
    if status == "incomplete":
        assert "a run with --heatmapper clipseg_rd64_refined downloads it again from the start" in row["get"]
        assert f"0.3 MB stay until `promptseg cache clear --weights {CLIPSEG.name}` removes them" in row["get"]
    assert cli.main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, x in enumerate(lines) if x.startswith(f"{CLIPSEG.name} "))
    assert f"{status} download" in lines[at] and "0.3 MB" in lines[at], lines[at]
    assert lines[at + 1].endswith(f"{blobs} (download stopped at 0.3 MB)"), lines[at + 1]

    fake_hub.add(CLIPSEG.repo_id, tiny_clipseg_dir, CLIPSEG.revision)
    assert registry.weights_status(CLIPSEG)[0] in registry.UNUSABLE_WEIGHTS  # nothing half-fetched is taken
    path = resolve_weights(CLIPSEG.name)
    assert registry.weights_status(CLIPSEG) == ("hf_cache", path)


def test_a_hugging_face_cache_that_cannot_be_written_is_named(fake_hub, tiny_clipseg_dir, tmp_path, monkeypatch):  # noqa: F811
    """$HF_HUB_CACHE where no folder can be made (read-only, or under a file): the download failed as
    'download of CIDAS/clipseg-rd64-refined@... failed ([Errno 20] Not a directory: ...)', the network's kind of
    failure. The cache is named, with the variables that move it, as our own cache's is."""
    fake_hub.add(CLIPSEG.repo_id, tiny_clipseg_dir, CLIPSEG.revision)
    (tmp_path / "a file").write_bytes(b"")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "a file" / "hub"))
    with pytest.raises(WeightsError) as info:
        resolve_weights(CLIPSEG.name)
    cache = tmp_path / "a file" / "hub"
    assert info.value.message.startswith(f"{CLIPSEG.name}: the Hugging Face cache {cache} cannot be written ("), str(
        info.value
    )
    assert "set $HF_HUB_CACHE or $HF_HOME to a folder you can write" in info.value.details


def _hold_lock(path: Path, seconds: float) -> threading.Event:
    """Another download's hold of huggingface_hub's lock ``path`` for ``seconds``, in a thread of its own (a
    FileLock is released by the thread that took it); the event is set once it is held, cleared once let go."""
    from filelock import FileLock

    held = threading.Event()

    def hold() -> None:
        with FileLock(path):
            held.set()
            time.sleep(seconds)
            held.clear()

    threading.Thread(target=hold, daemon=True).start()
    assert held.wait(10)
    return held


def test_a_wait_for_another_processs_hub_download_is_told_and_can_be_cancelled(fake_hub, tiny_clipseg_dir):  # noqa: F811
    """Another process downloading the same hub file (a batch's worker, napari beside a CLI run) holds
    huggingface_hub's lock on it: ours waited on that lock without a word, and Cancel did not stop the wait. It is
    now told as the single-file downloads tell theirs (the other's .incomplete bytes, of the file's size), and a
    Cancel stops it while the lock is still held (flock: another open file's lock, here another thread's)."""
    import hashlib

    from napari_promptseg.errors import CancelledError
    from napari_promptseg.models import download_progress, download_size
    from napari_promptseg.models.hub import repo_folder

    fake_hub.add(CLIPSEG.repo_id, tiny_clipseg_dir, CLIPSEG.revision)
    weights = (tiny_clipseg_dir / "model.safetensors").read_bytes()
    etag = hashlib.sha256(weights).hexdigest()  # the loopback hub's ETag: the name of huggingface_hub's lock
    repo = repo_folder(CLIPSEG.repo_id)
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / f"{etag}.0badc0de.incomplete").write_bytes(weights[:1000])  # the other's download, under way
    lock = repo.parent / ".locks" / repo.name / f"{etag}.lock"
    lock.parent.mkdir(parents=True)
    told: list[str] = []
    waiting = "waiting for another process's download of model.safetensors"

    held = _hold_lock(lock, 2.5)  # bounded: the wait ends without a cancel too
    cancel = lambda: any(m.startswith(waiting) for m in told)  # noqa: E731
    with pytest.raises(CancelledError, match="download of clipseg cancelled"):
        resolve_weights(CLIPSEG.name, progress=download_progress(lambda f, m: told.append(m), cancel, "clipseg"))
    assert held.is_set()  # stopped in the wait, not after it
    assert f"{waiting}: {download_size(1000, len(weights))}" in told, told
    while held.is_set():
        time.sleep(0.05)

    _hold_lock(lock, 1.5)  # the other download ends: ours goes on, the wait told meanwhile
    told.clear()
    path = resolve_weights(CLIPSEG.name, progress=download_progress(lambda f, m: told.append(m), None, "clipseg"))
    assert (path / "model.safetensors").read_bytes() == weights
    assert any(m.startswith(waiting) for m in told), told
