"""Single-file checkpoints over a flaky network (a loopback server, tests/weights_server.py): a cut download resumes
from its partial file with a range request; a server without ranges sends the whole file; nothing partial or corrupt
is ever under the final name; a process waiting for another's download says so; a full disk is named."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

import pytest

from napari_promptseg import cli
from napari_promptseg.errors import CancelledError, WeightsError
from napari_promptseg.models import download_progress, registry, resolve_weights

from .weights_server import (
    CARD_NAME,
    FILENAME,
    PAYLOAD,
    register_card,
)

PARTIAL = FILENAME + ".part"


@pytest.fixture
def quick_retries(monkeypatch):
    from napari_promptseg.models import resumable

    monkeypatch.setattr(resumable, "RETRY_WAIT_S", 0.0)


def _resumed_from(range_header: str | None) -> int:
    match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
    assert match is not None, range_header
    return int(match[1])


def test_a_dropped_download_resumes_from_what_arrived(server, cache, monkeypatch, quick_retries):
    """The connection drops half way through: the retry asks for the rest (Range), it was fetched from byte 0."""
    register_card(monkeypatch, server.url)
    server.accept_ranges, server.mode = True, "truncate_once"

    assert resolve_weights(CARD_NAME).read_bytes() == PAYLOAD

    assert server.ranges[0] is None and len(server.ranges) == 2
    start = _resumed_from(server.ranges[1])
    assert 0 < start <= len(PAYLOAD) // 2  # what was written of the first half (whole blocks)
    assert server.requests == [len(PAYLOAD) // 2, len(PAYLOAD) - start]
    assert sorted(p.name for p in cache.iterdir()) == [FILENAME, FILENAME + ".verified"]


def test_a_failed_download_is_resumed_by_the_next_run_and_listed_as_partial(
    server, cache, monkeypatch, quick_retries, capsys
):
    """A run whose download broke off for good: its bytes stay beside the target (never under its name), the error
    says the next run resumes, `promptseg models` says how much is there, and the next run fetches only the rest."""
    register_card(monkeypatch, server.url)
    monkeypatch.setattr(registry, "DOWNLOAD_RETRIES", 0)
    server.accept_ranges, server.mode = True, "truncate"

    with pytest.raises(WeightsError) as info:
        resolve_weights(CARD_NAME)
    kept = (cache / PARTIAL).stat().st_size
    assert 0 < kept < len(PAYLOAD) and not (cache / FILENAME).exists()
    assert f"kept in {cache / PARTIAL}, and the next run resumes from there" in info.value.details

    assert registry.weights_status(registry.MODELS[CARD_NAME]) == ("partial", cache / PARTIAL)
    assert cli.main(["models", "--json"]) == 0
    row = {r["name"]: r for r in json.loads(capsys.readouterr().out)}[CARD_NAME]
    assert (row["weights"], row["path"], row["size"]) == ("partial", str(cache / PARTIAL), kept)
    assert row["get"].startswith(f"a run with --model {CARD_NAME} resumes the download")
    # by hand, curl goes on from the same bytes (it was told to fetch the whole file again)
    resume = f"curl -L -C - -o {cache / PARTIAL} {server.url} && mv {cache / PARTIAL} {cache / FILENAME}"
    assert resume in row["get"], row["get"]
    assert cli.main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, x in enumerate(lines) if x.startswith(f"{CARD_NAME} "))
    assert "partial download" in lines[at], lines[at]
    assert f"(download stopped at {kept / 1e6:.1f} of {len(PAYLOAD) / 1e6:.1f} MB)" in lines[at + 1], lines[at + 1]

    server.mode = "ok"
    assert resolve_weights(CARD_NAME).read_bytes() == PAYLOAD
    assert _resumed_from(server.ranges[-1]) == kept and server.requests[-1] == len(PAYLOAD) - kept
    assert not (cache / PARTIAL).exists()


def test_a_server_without_ranges_sends_the_whole_file_again(server, cache, monkeypatch):
    register_card(monkeypatch, server.url)
    cache.mkdir(parents=True)
    (cache / PARTIAL).write_bytes(PAYLOAD[: 2**20])  # a previous run's
    assert resolve_weights(CARD_NAME).read_bytes() == PAYLOAD
    assert server.ranges == [f"bytes={2**20}-"] and server.requests == [len(PAYLOAD)]  # answered 200: all of it


def test_a_partial_file_of_other_bytes_is_thrown_away_not_completed(server, cache, monkeypatch, quick_retries):
    """A partial file that is not the start of this file (another version's): the resumed file fails its checksum,
    is not kept, and the retry fetches the whole file."""
    register_card(monkeypatch, server.url)
    server.accept_ranges = True
    cache.mkdir(parents=True)
    (cache / PARTIAL).write_bytes(b"\0" * 2**20)
    assert resolve_weights(CARD_NAME).read_bytes() == PAYLOAD
    assert server.ranges == [f"bytes={2**20}-", None]
    # a partial longer than the file cannot be its start: fetched whole at once
    (cache / FILENAME).unlink()
    (cache / PARTIAL).write_bytes(PAYLOAD + b"more")
    assert resolve_weights(CARD_NAME).read_bytes() == PAYLOAD and server.ranges[-1] is None


def test_a_cancelled_download_keeps_its_bytes_for_the_next_run(server, cache, monkeypatch):
    """download_progress, as the widgets' tasks pass it: the download tells its share and size in MB, stops at the
    next block once cancel() says so (SAM ViT-H is 2.5 GB), and leaves nothing under the weights' name; the next
    load goes on from where it stopped (it started from byte 0)."""
    register_card(monkeypatch, server.url)
    server.accept_ranges = True
    told: list[tuple[float, str]] = []
    progress = download_progress(lambda fraction, message: told.append((fraction, message)), lambda: bool(told), "x")

    with pytest.raises(CancelledError, match="download of x cancelled"):
        resolve_weights(CARD_NAME, progress=progress)

    assert told == [(2**20 / len(PAYLOAD), "downloading x: 1.0 of 3.0 MB")]  # one block told, then stopped
    assert sorted(p.name for p in cache.iterdir()) == [PARTIAL]
    kept = (cache / PARTIAL).stat().st_size
    assert (cache / PARTIAL).read_bytes() == PAYLOAD[:kept]  # the blocks written, the one being told included
    assert resolve_weights(CARD_NAME).read_bytes() == PAYLOAD
    assert server.ranges[-1] == f"bytes={kept}-"


def test_a_process_waiting_for_anothers_download_says_so_with_its_progress(server, cache, monkeypatch):
    """A second process wanting the same weights waited on the first's lock showing 'downloading: 0 bytes'."""
    register_card(monkeypatch, server.url)
    server.pause = 1.6  # half the file, then a pause: the other process's partial file has grown meanwhile
    first = threading.Thread(target=resolve_weights, args=(CARD_NAME,), daemon=True)
    first.start()
    for _ in range(500):  # until the first holds the lock and writes (at most 10 s)
        if (cache / PARTIAL).is_file() or (cache / FILENAME).is_file():
            break
        time.sleep(0.02)
    told: list[str] = []
    path = resolve_weights(CARD_NAME, progress=download_progress(lambda f, message: told.append(message), None, "x"))
    first.join(30)

    assert path.read_bytes() == PAYLOAD and server.requests == [len(PAYLOAD)]
    assert told and all(m.startswith(f"waiting for another process's download of {FILENAME}") for m in told), told
    assert any(m.endswith(" of 3.0 MB") and not m.endswith(": 0.0 of 3.0 MB") for m in told), told


def test_a_full_disk_is_named_before_the_download_and_when_it_fills(server, cache, monkeypatch):
    """No room for the file: refused before any byte is fetched, naming the folder and the room needed (it failed
    minutes in with the OS's 'No space left on device' and a download URL); a disk that fills during the download
    is named the same way."""
    import shutil

    from napari_promptseg.models import resumable

    register_card(monkeypatch, server.url)
    with monkeypatch.context() as patched:
        full = shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000)
        patched.setattr(resumable.shutil, "disk_usage", lambda path: full)
        with pytest.raises(WeightsError) as info:
            resolve_weights(CARD_NAME)
    assert info.value.message == f"{CARD_NAME}: no room for {FILENAME} in {cache}: 3.2 MB more needed, 0.0 MB free"
    assert f"set ${registry.CACHE_ENV} to a folder on a disk with room" in info.value.details
    assert not (cache / FILENAME).exists() and server.requests == []

    if not Path("/dev/full").exists():
        return
    os.symlink("/dev/full", cache / PARTIAL)  # every write: ENOSPC, from the kernel
    with pytest.raises(WeightsError, match=rf"{CARD_NAME}: no room for {FILENAME} in {re.escape(str(cache))}: "):
        resolve_weights(CARD_NAME)
    assert not (cache / FILENAME).exists()


def test_offline_with_a_stopped_download_says_it_is_kept_and_resumes_later(server, cache, monkeypatch):
    """Offline (or with the server out of reach), a model whose download had stopped was 'weights not found' as if
    nothing were on disk: the error says where the bytes so far are and that a run with downloads resumes them."""
    register_card(monkeypatch, server.url)
    cache.mkdir(parents=True)
    (cache / PARTIAL).write_bytes(PAYLOAD[: 2**20])
    monkeypatch.setenv(registry.OFFLINE_ENV, "1")
    with pytest.raises(WeightsError) as info:
        resolve_weights(CARD_NAME)
    assert info.value.message == f"{CARD_NAME}: weights not found and ${registry.OFFLINE_ENV} is set"
    assert f"put {FILENAME} in {cache}" in info.value.details  # where the weights go, as before
    assert f"the 1.0 MB downloaded so far are kept in {cache / PARTIAL}" in info.value.details, info.value.details
    assert server.requests == []


def test_a_file_cut_short_under_the_weights_name_is_resumed_not_fetched_again(server, cache, monkeypatch):
    """The weights' own name holding the start of the file (a `curl -o` cut short, as `promptseg models` suggests
    it; a copy that stopped): online it was fetched whole again; its bytes are resumed, and checked as any."""
    register_card(monkeypatch, server.url)
    server.accept_ranges = True
    cache.mkdir(parents=True)
    (cache / FILENAME).write_bytes(PAYLOAD[: 2**20])
    assert resolve_weights(CARD_NAME).read_bytes() == PAYLOAD
    assert server.ranges == [f"bytes={2**20}-"] and server.requests == [len(PAYLOAD) - 2**20]
    assert sorted(p.name for p in cache.iterdir()) == [FILENAME, FILENAME + ".verified"]
