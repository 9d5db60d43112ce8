"""A real HTTP server on 127.0.0.1 standing in for the Hugging Face hub (reached through ``HF_ENDPOINT``), and the
hub cache layout written from a model directory (what ``hf download`` leaves behind: blobs, snapshots, refs)."""

from __future__ import annotations

import hashlib
import os
import re
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can stall for seconds without a network
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


def serve(handler: type[BaseHTTPRequestHandler], owner: object) -> tuple[LoopbackServer, threading.Thread]:
    server = LoopbackServer(("127.0.0.1", 0), handler)
    server.owner = owner  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server, thread


class FakeHub:
    """Serves each added repository from a local directory at one commit, as the hub's ``resolve`` endpoint does:
    ``HEAD``/``GET /{owner}/{name}/resolve/{revision}/{path}`` answer with the headers huggingface_hub relies on
    (``X-Repo-Commit``, ``ETag``, ``Content-Length``); a missing file is a 404 ``EntryNotFound``, an unknown repo or
    revision a 404 ``RepoNotFound``/``RevisionNotFound``. ``requests`` records ``(method, path)``."""

    def __init__(self) -> None:
        self.repos: dict[str, tuple[Path, str]] = {}
        self.requests: list[tuple[str, str]] = []
        self._server, self._thread = serve(_HubHandler, self)

    def add(self, repo_id: str, directory: Path, commit: str) -> None:
        self.repos[repo_id] = (Path(directory), commit)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def downloads(self) -> list[str]:
        return [path for method, path in self.requests if method == "GET"]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _HubHandler(BaseHTTPRequestHandler):
    def _answer(self, send_body: bool) -> None:
        hub: FakeHub = self.server.owner  # type: ignore[attr-defined]
        hub.requests.append((self.command, self.path))
        match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", self.path)
        if match is None or match[1] not in hub.repos:
            self._error("RepoNotFound")
            return
        directory, commit = hub.repos[match[1]]
        if match[2] not in (commit, "main"):
            self._error("RevisionNotFound")
            return
        file = directory / match[3]
        if not file.is_file():
            self._error("EntryNotFound", commit)
            return
        body = file.read_bytes()
        self.send_response(200)
        self.send_header("X-Repo-Commit", commit)
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _error(self, code: str, commit: str | None = None) -> None:
        self.send_response(404)
        self.send_header("X-Error-Code", code)
        if commit is not None:  # the hub says at which commit the file is missing, so the cache can remember it
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer(send_body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(send_body=True)

    def log_message(self, *args: object) -> None:
        pass


def put_in_hf_cache(directory: Path, repo_id: str, commit: str, cache: Path) -> Path:
    """Write ``directory``'s files into the hub cache ``cache`` as ``repo_id`` at ``commit`` (``refs/main`` points
    to it); returns the snapshot directory."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    for file in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / file.relative_to(directory)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot
