"""A real HTTP server on 127.0.0.1 serving a single-file checkpoint (a card's ``url``, fetched by the registry's
download), with the faults a user's network has: a dropped connection, corrupt bytes, a slow body; byte ranges
answered (206) or ignored (200) as servers do; and the throwaway card of the single-file tests (their fixtures
``server`` and ``cache``: tests/conftest.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import time
from http.server import BaseHTTPRequestHandler

import numpy as np

from napari_promptseg.models.registry import MODELS, ModelCard

from .fake_hub import serve

#: a few MB, not a multiple of the 1 MiB read block, so the last progress step is a partial block
PAYLOAD = np.random.default_rng(7).bytes(3 * 2**20 + 12_345)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
FILENAME = "tiny_test_weights.pth"
CARD_NAME = "tiny_test"


class WeightsServer:
    """Serves PAYLOAD at /FILENAME. Modes: 'ok'; 'corrupt' (right length, a flipped byte); 'truncate_once' (the
    first answer announces the full length but the connection drops half way, then 'ok'); 'truncate' (always).
    ``ranges``: a ``Range: bytes=N-`` request is answered 206 with the bytes from N (else 200 with all of them,
    as a server without range support does). ``pause``: seconds half way through the body (a slow download)."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.payload = PAYLOAD  # what it serves
        self.requests: list[int] = []  # bytes sent per GET
        self.ranges: list[str | None] = []  # the Range header of each GET
        self.delay = 0.0  # seconds between the headers and the body (a download that takes a while)
        self.pause = 0.0
        self.accept_ranges = False
        self._server, self._thread = serve(_Handler, self)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/{FILENAME}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        srv: WeightsServer = self.server.owner  # type: ignore[attr-defined]
        if self.path != f"/{FILENAME}":
            srv.requests.append(0)
            self.send_error(404)
            return
        srv.ranges.append(self.headers.get("Range"))
        body = bytearray(srv.payload)
        if srv.mode == "corrupt":
            body[len(body) // 2] ^= 0xFF
        start = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if srv.accept_ranges and start is not None and int(start[1]) < len(body):
            first = int(start[1])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {first}-{len(body) - 1}/{len(body)}")
            body = body[first:]
        elif srv.accept_ranges and start is not None:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            srv.requests.append(0)
            return
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        time.sleep(srv.delay)
        if srv.mode in ("truncate_once", "truncate"):
            body = body[: len(body) // 2]  # the connection then closes: a dropped download
            srv.mode = "ok" if srv.mode == "truncate_once" else srv.mode
        # counted before the bytes go: the client may have read them all, and its test asserted the count, before
        # this thread went on to count them after (a CI run failed so: [] == [3158073])
        srv.requests.append(len(body))
        if srv.pause:
            self.wfile.write(bytes(body[: len(body) // 2]))
            self.wfile.flush()
            time.sleep(srv.pause)
            body = body[len(body) // 2 :]
        self.wfile.write(bytes(body))

    def log_message(self, *args: object) -> None:
        pass


def register_card(monkeypatch, url: str | None, **changes) -> ModelCard:
    """A throwaway card for PAYLOAD, built from a real one so every field a real card has is set."""
    fields = {"name": CARD_NAME, "filename": FILENAME, "url": url, "sha256": PAYLOAD_SHA, "size": len(PAYLOAD)}
    card = dataclasses.replace(MODELS["sam_vit_b"], **{**fields, "package_resource": None, **changes})
    monkeypatch.setitem(MODELS, CARD_NAME, card)
    return card
