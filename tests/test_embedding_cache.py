"""On-disk embedding cache (zarr) with the real LiteMedSAM: hits equal misses, refused entries are recomputed, the
size cap evicts the least recently used, concurrent writers of one key never corrupt it, `promptseg embed` fills it
with what the methods ask for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from napari_promptseg.cli import main
from napari_promptseg.io import read_image
from napari_promptseg.methods.interactive import segment_prompts
from napari_promptseg.models import embedding_cache
from napari_promptseg.models.embedding_cache import DiskEmbeddingCache
from napari_promptseg.models.preprocessing import ResizeTransform
from napari_promptseg.models.protocols import Embedding
from napari_promptseg.tiling import choose_scale

from .conftest import REPO

BOX = [[30.0, 40.0, 110.0, 120.0]]


@pytest.fixture
def disk(tmp_path):
    """A disk cache for this test only (the process setting is put back after)."""
    with embedding_cache.settings_restored():
        yield embedding_cache.configure(tmp_path / "embeddings")


@pytest.fixture(scope="module")
def crop(shared_data):
    """A real nuclei image no other test embeds (so the in-memory cache never answers for the disk)."""
    path = sorted((shared_data / "nuclei_dsb2018" / "images").iterdir())[5]
    return np.ascontiguousarray(read_image(path)[:160, :200, :3][::-1])


def fake_embedding(key: str, seed: int) -> Embedding:
    features = torch.from_numpy(np.random.default_rng(seed).standard_normal((1, 256, 64, 64), dtype=np.float32))
    return Embedding(features, ResizeTransform((100, 120), 256), "litemedsam", key)


def test_hit_in_a_fresh_cache_gives_the_masks_of_the_miss(litemedsam, disk, crop):
    litemedsam.cache.clear()
    miss = segment_prompts(crop, litemedsam, boxes=BOX)
    assert (disk.misses, disk.stored, disk.hits) == (1, 1, 0)
    litemedsam.cache.clear()  # as in a new process: only the disk has it
    hit = segment_prompts(crop, litemedsam, boxes=BOX)
    assert (disk.hits, disk.stored) == (1, 1)
    assert miss.labels.any() and np.array_equal(hit.labels, miss.labels)
    np.testing.assert_array_equal(hit.scores, miss.scores)


def test_damaged_or_foreign_entries_are_refused_and_recomputed(litemedsam, disk, crop):
    image = crop[:96, :128]
    litemedsam.cache.clear()
    truth = litemedsam.embed(image).features.clone()
    key = litemedsam.embed(image).key
    signature = litemedsam.embedding_signature("auto")
    chunk = disk.entry_path(key) / "features" / "c" / "0" / "0" / "0" / "0"

    # damaged: flipped bytes in the stored features
    raw = bytearray(chunk.read_bytes())
    raw[1000:1010] = bytes(10)
    chunk.write_bytes(bytes(raw))
    assert disk.load(key, signature) is None and disk.refused == 1
    litemedsam.cache.clear()
    assert torch.equal(litemedsam.embed(image).features, truth)  # recomputed ...
    assert disk.load(key, signature) is not None  # ... and the entry replaced

    # foreign: the same key written by other weights (a fine-tuned model under the same name) or an older format
    meta = disk.entry_path(key) / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["signature"]["encoder_weights"] = "5736623:0123456789abcdef"
    meta.write_text(json.dumps(doc))
    refused = disk.refused
    litemedsam.cache.clear()
    assert torch.equal(litemedsam.embed(image).features, truth)
    assert disk.refused == refused + 1 and disk.load(key, signature) is not None
    assert disk.load(key, {**signature, "normalize": "minmax"}) is None  # other preprocessing: not served

    # a truncated chunk (a writer killed mid-way without the temp + rename) reads as refused, never as zeros
    chunk.write_bytes(chunk.read_bytes()[:5000])
    assert disk.load(key, signature) is None

    # arrays swapped between two entries (each intact, with its own CRC): another image's features, refused
    other = crop[:96, 32:160]
    litemedsam.cache.clear()
    truth = litemedsam.embed(image).features.clone()
    other_key = litemedsam.embed(other).key
    a, b = disk.entry_path(key) / "features", disk.entry_path(other_key) / "features"
    a.rename(a.with_name("swap"))
    b.rename(a)
    a.with_name("swap").rename(b)
    assert disk.load(key, signature) is None and disk.load(other_key, signature) is None
    litemedsam.cache.clear()
    assert torch.equal(litemedsam.embed(image).features, truth)


def test_stored_decoder_context_gives_the_masks_of_a_fresh_computation(litemedsam, disk, crop):
    image = crop[32:, 40:]
    litemedsam.cache.clear()
    miss = litemedsam.embed(image)  # stores the features with the decoder's context
    assert (disk.entry_path(miss.key) / "decoder_context" / "zarr.json").is_file()
    litemedsam.cache.clear()
    litemedsam._context = None  # as in a new process
    hit = litemedsam.embed(image)
    assert disk.hits == 1 and disk.context_refused == 0
    loaded = litemedsam._context  # set by the disk hit, before any prompt
    assert loaded is not None and loaded[0] is hit.features
    with torch.inference_mode():
        from_disk = litemedsam.predict(hit, boxes=np.array(BOX))
        assert litemedsam._context is loaded  # the prompt used the context read from the disk
        litemedsam._context = None
        fresh = litemedsam.predict(hit, boxes=np.array(BOX))
    assert litemedsam._context is not loaded
    assert torch.equal(loaded[2].projections(), litemedsam._context[2].projections())
    assert torch.equal(from_disk.low_res_logits, fresh.low_res_logits) and from_disk.masks().any()
    np.testing.assert_array_equal(from_disk.scores, fresh.scores)


def test_context_of_another_decoder_is_refused_and_a_damaged_one_refuses_the_entry(litemedsam, disk, crop):
    image = crop[:128, 64:]
    litemedsam.cache.clear()
    key = litemedsam.embed(image).key
    signature, context_signature = litemedsam.embedding_signature("auto"), litemedsam.context_signature()
    embedding, context = disk.load_with_context(key, signature, context_signature)
    assert context is not None and context.shape[0] == 3

    # a decoder fine-tuned in place has another signature: its context is refused, the features are still served
    weight = litemedsam.mask_decoder.transformer.layers[0].cross_attn_token_to_image.k_proj.weight
    original = weight[0, 0].clone()
    with torch.no_grad():
        weight[0, 0] += 1.0
        try:
            other = litemedsam.context_signature()
        finally:
            weight[0, 0] = original
    assert other != context_signature and litemedsam.context_signature() == context_signature
    served, refused_context = disk.load_with_context(key, signature, other)
    assert refused_context is None and disk.context_refused == 1
    assert torch.equal(served.features, embedding.features)

    # a foreign context (its signature edited) is refused the same way; the segmenter then computes its own
    meta = disk.entry_path(key) / "decoder_context" / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["signature"]["decoder_weights"] = "4058340:0123456789abcdef"
    meta.write_text(json.dumps(doc))
    litemedsam.cache.clear()
    litemedsam._context = None
    hit = litemedsam.embed(image)
    assert disk.context_refused == 2 and disk.refused == 0 and litemedsam._context is None
    with torch.inference_mode():
        litemedsam.predict(hit, boxes=np.array(BOX))
    assert torch.equal(litemedsam._context[2].projections(), context)

    # damaged context bytes refuse the whole entry, which is recomputed and replaced
    chunk = disk.entry_path(key) / "decoder_context" / "c" / "0" / "0" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[2000:2010] = bytes(10)
    chunk.write_bytes(bytes(raw))
    assert disk.load_with_context(key, signature, context_signature) is None and disk.refused == 1
    litemedsam.cache.clear()
    assert torch.equal(litemedsam.embed(image).features, embedding.features)
    assert torch.equal(disk.load_with_context(key, signature, context_signature)[1], context)


def test_a_fine_tuned_checkpoint_under_the_same_name_has_its_own_entries(litemedsam, disk, crop, tmp_path):
    """A user's fine-tuned LiteMedSAM and the bundled one, alternating on one image: each keeps its own entry and is
    served it (before, both wrote one key and each refused and replaced the other's entry at every image)."""
    from napari_promptseg.models import load_segmenter

    state = {
        f"{part}.{name}": tensor.clone()
        for part in ("image_encoder", "prompt_encoder", "mask_decoder")
        for name, tensor in getattr(litemedsam, part).state_dict().items()
    }
    for name, tensor in state.items():
        if name.startswith("image_encoder.") and tensor.is_floating_point() and tensor.ndim >= 2:
            state[name] = tensor * 1.01  # as fine-tuning does: nearly every encoder value changes
    torch.save(state, tmp_path / "fine_tuned.pth")
    tuned = load_segmenter("litemedsam", weights=tmp_path / "fine_tuned.pth", device="cpu")
    assert tuned.name == litemedsam.name and tuned is not litemedsam
    image = crop[16:144, 32:160]
    first = {}
    for _ in range(2):  # the second round is what a new process sees: only the disk has them
        for segmenter in (litemedsam, tuned):
            segmenter.cache.clear()
            first.setdefault(id(segmenter), segmenter.embed(image))
    base_features, tuned_features = first[id(litemedsam)].features, first[id(tuned)].features
    assert not torch.allclose(base_features, tuned_features)  # the checkpoints make other features
    assert (disk.stored, disk.hits, disk.refused) == (2, 2, 0) and len(disk.entries()) == 2
    litemedsam.cache.clear()
    assert torch.equal(litemedsam.embed(image).features, base_features)  # never served the other's
    # weights changed in place (a training step) are other weights: another name, so other cache entries
    name = tuned.feature_name
    weight = next(tuned.image_encoder.parameters())
    with torch.no_grad():
        weight[0] += 1.0
        changed = tuned.feature_name
        weight[0] -= 1.0
    assert changed != name and name != litemedsam.feature_name


def test_size_cap_evicts_the_least_recently_used(tmp_path):
    entry = 256 * 64 * 64 * 4
    cache = DiskEmbeddingCache(tmp_path, max_bytes=int(2.5 * entry))
    first, second, third = (fake_embedding(f"{k:032x}", k) for k in (1, 2, 3))
    cache.store(first, {"model": "x"})
    time.sleep(0.02)
    cache.store(second, {"model": "x"})
    time.sleep(0.02)
    assert torch.equal(cache.load(first.key, {"model": "x"}).features, first.features)  # first is now the newer
    time.sleep(0.02)
    cache.store(third, {"model": "x"})
    assert first.key in cache and third.key in cache and second.key not in cache
    assert cache.evicted == 1 and cache.size_bytes() <= cache.max_bytes


def test_opening_a_cache_with_a_smaller_cap_evicts_down_to_it_and_reads_count_as_use(tmp_path):
    """--cache-max-gb / configure(max_gb=) below what the cache holds: it fits the cap from the start, not only after
    the next write (a run that only reads never wrote, and the cache stayed over its cap)."""
    entry = 256 * 64 * 64 * 4
    first, second, third = (fake_embedding(f"{k:032x}", k) for k in (1, 2, 3))
    roomy = DiskEmbeddingCache(tmp_path, max_bytes=10 * entry)
    for embedding in (first, second, third):
        roomy.store(embedding, {"model": "x"})
        time.sleep(0.02)
    assert roomy.load(first.key, {"model": "x"}) is not None  # a read: first is now the most recently used
    with embedding_cache.settings_restored():
        small = embedding_cache.configure(tmp_path, max_gb=2.5 * entry / 1e9)
        assert small.stored == 0 and small.evicted == 1 and small.size_bytes() <= small.max_bytes
        assert first.key in small and third.key in small and second.key not in small


WRITER = """
import sys, numpy as np, torch
from napari_promptseg.models.embedding_cache import DiskEmbeddingCache
from napari_promptseg.models.preprocessing import ResizeTransform
from napari_promptseg.models.protocols import Embedding
from napari_promptseg.tiling import choose_scale
root, rounds = sys.argv[1], int(sys.argv[2])
features = torch.from_numpy(np.random.default_rng(7).standard_normal((1, 256, 64, 64), dtype=np.float32))
cache = DiskEmbeddingCache(root, max_bytes=10**9)
key = "ab" * 16
for i in range(rounds):
    if i % 3 == 0:  # replacing a stale entry while the other process reads or writes it
        cache._discard(cache.entry_path(key))
    cache.store(Embedding(features, ResizeTransform((64, 64), 256), "m", key), {"model": "m"})
    got = cache.load(key, {"model": "m"})
    assert got is None or torch.equal(got.features, features), "a load returned other features"
print(cache.stored, cache.hits, cache.refused)
"""


def test_two_processes_writing_one_key_do_not_corrupt_it(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), "12"], env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    cache = DiskEmbeddingCache(tmp_path)
    expected = np.random.default_rng(7).standard_normal((1, 256, 64, 64), dtype=np.float32)
    assert np.array_equal(cache.load("ab" * 16, {"model": "m"}).features.numpy(), expected)
    assert not list((tmp_path / "tmp").iterdir())  # no temporary left behind


def test_embed_command_precomputes_what_segment_prompts_reads(litemedsam, tmp_path, crop, capsys):
    import tifffile

    path = tmp_path / "crop.tif"
    tifffile.imwrite(path, crop[:, ::-1])
    cache_dir = tmp_path / "cache"
    assert main(["embed", str(path), "--cache", str(cache_dir), "--object-size", "8"]) == 0
    tiles = choose_scale(crop.shape, litemedsam.input_size, 8).tiles
    assert tiles > 1 and f"0 of {tiles + 1} already cached" in capsys.readouterr().out
    # again: the model's in-memory cache or the disk answers, and both count as cached (it said 0 of N)
    assert main(["embed", str(path), "--cache", str(cache_dir), "--object-size", "8"]) == 0
    out, err = capsys.readouterr()
    assert f"{tiles + 1} of {tiles + 1} already cached" in out and f"({tiles + 1} were cached)" in err, (out, err)
    # the whole image and its tiles at the working scale of 8 px objects
    assert len(DiskEmbeddingCache(cache_dir).entries()) == tiles + 1
    with embedding_cache.settings_restored():
        disk = embedding_cache.configure(cache_dir)
        litemedsam.cache.clear()
        result = segment_prompts(read_image(path), litemedsam, boxes=[[40, 40, 60, 60]], object_size=8)
        assert result.scale.tiles == tiles and result.labels.any()
        assert disk.hits >= 1 and disk.misses == 0 and disk.stored == 0  # every embedding came from the disk
    assert embedding_cache.active() is None  # the CLI and the fixture put the setting back
    # a cap that holds no entry: embed exists to fill the cache, and says it kept nothing (it printed success)
    code = main(["embed", str(path), "--cache", str(tmp_path / "tiny"), "--cache-max-gb", "0.001"])
    assert code == 2 and "no embedding was kept" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["embed", str(path), "--cache", str(tmp_path / "tiny"), "--cache-max-gb", "-1"])
    assert "--cache-max-gb: must be a finite number above 0" in capsys.readouterr().err
    # a folder with an unreadable file: its summary counts embeddings and failures, not objects (bug hunt 2)
    folder = tmp_path / "folder"
    folder.mkdir()
    tifffile.imwrite(folder / "crop.tif", crop[:64, :64])
    (folder / "broken.png").write_text("not an image")
    assert main(["embed", str(folder), "--cache", str(cache_dir), "--scheduler", "none"]) == 1
    err = capsys.readouterr().err
    assert "2 input(s): 1 embedded, 1 failed" in err and "object" not in err, err


def test_an_embedding_made_before_the_disk_cache_was_set_is_written_there(litemedsam, tmp_path, crop, capsys):
    """An image segmented in a session before a disk cache was set (napari, a script, `promptseg embed` run from the
    console) was never written there: the memory answered, and embed said "no embedding was kept" (exit 2)."""
    import tifffile

    path = tmp_path / "crop.tif"
    tifffile.imwrite(path, np.ascontiguousarray(np.rot90(crop)))  # pixels no other test embeds
    litemedsam.cache.clear()
    assert embedding_cache.active() is None
    first = segment_prompts(read_image(path), litemedsam, boxes=BOX)  # in memory only
    cache_dir = tmp_path / "cache"
    assert main(["embed", str(path), "--cache", str(cache_dir), "--scheduler", "none"]) == 0
    assert "1 of 1 embedding(s) in" in capsys.readouterr().err
    with embedding_cache.settings_restored():
        disk = embedding_cache.configure(cache_dir)
        segment_prompts(read_image(path), litemedsam, boxes=BOX)  # the memory answers; the disk has it already
        litemedsam.cache.clear()  # as in a new process: only the disk has it
        again = segment_prompts(read_image(path), litemedsam, boxes=BOX)
        assert (disk.hits, disk.stored) == (1, 0)
    assert first.labels.any() and np.array_equal(again.labels, first.labels)


def test_the_size_cap_applies_to_the_environments_cache_and_embed_counts_what_it_kept(
    litemedsam, tmp_path, crop, capsys, monkeypatch
):
    """--cache-max-gb was ignored for $PROMPTSEG_EMBEDDING_CACHE (the cache grew past the cap), and embed counted an
    image's entries as kept although a later image's had evicted them."""
    import tifffile

    paths = [tmp_path / "a.tif", tmp_path / "b.tif"]
    tifffile.imwrite(paths[0], crop[:, ::-1])
    tifffile.imwrite(paths[1], crop[::-1, ::-1])
    litemedsam.cache.clear()  # the in-memory cache would answer for images another test embedded
    assert main(["embed", str(paths[0]), "--cache", str(tmp_path / "probe"), "--scheduler", "none"]) == 0
    entry_bytes = DiskEmbeddingCache(tmp_path / "probe").entries()[0][1]
    monkeypatch.setenv(embedding_cache.CACHE_ENV, str(tmp_path / "env"))
    capsys.readouterr()
    cap = str(1.5 * entry_bytes / 1e9)  # room for one entry
    assert main(["embed", *map(str, paths), "--cache-max-gb", cap, "--scheduler", "none"]) == 0
    assert len(DiskEmbeddingCache(tmp_path / "env").entries()) == 1
    err = capsys.readouterr().err
    assert "1 of 2 embedding(s) in" in err and "1 of 2 embedding(s) are not in the cache" in err


def test_a_size_cap_in_the_environment_that_is_not_a_number_is_named(tmp_path, monkeypatch):
    from napari_promptseg.errors import PromptsegError

    monkeypatch.setenv(embedding_cache.CACHE_ENV, str(tmp_path / "env-cache"))
    monkeypatch.setenv(embedding_cache.MAX_GB_ENV, "10GB")
    with (
        embedding_cache.settings_restored(),
        pytest.raises(PromptsegError, match="PROMPTSEG_EMBEDDING_CACHE_GB='10GB'"),
    ):
        embedding_cache.active()
    monkeypatch.setenv(embedding_cache.MAX_GB_ENV, "nan")
    with embedding_cache.settings_restored(), pytest.raises(PromptsegError, match="give a size above 0"):
        embedding_cache.active()


def test_embed_help_says_where_it_writes_without_cache(capsys):
    """embed's --help said "--cache [DIR] (default: $PROMPTSEG_EMBEDDING_CACHE, else none)", but embed without a
    cache fills the user cache directory's (its description says so); segment's default stays none."""
    for command, says_none in (("embed", False), ("segment", True)):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert ("$PROMPTSEG_EMBEDDING_CACHE, else none)" in text) == says_none, (command, text)


def test_embed_help_names_the_runs_that_reuse_its_tiles(litemedsam, tmp_path, capsys):
    """The help promised tiles "as oneshot's many-instances mode sees them", but oneshot measures each target's own
    object size: only a run given the same --object-size reuses them. It says so now, and oneshot --object-size
    after embed --object-size writes no new tile (every tile of the target and of the reference, here the same
    image, was cached)."""
    import tifffile

    from napari_promptseg._sample_data import nuclei

    with pytest.raises(SystemExit):
        main(["embed", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "many-instances" not in text and "oneshot --object-size PX" in text
    assert "oneshot at each target's measured object size" in text

    (image, _, _), (truth, _, _) = nuclei()
    path, labels = tmp_path / "nuclei.tif", tmp_path / "labels.tif"
    tifffile.imwrite(path, image)
    tifffile.imwrite(labels, truth)
    cache_dir = tmp_path / "cache"
    assert main(["embed", str(path), "--cache", str(cache_dir), "--object-size", "12", "--scheduler", "none"]) == 0
    tiles = choose_scale(image.shape, litemedsam.input_size, 12).tiles
    assert tiles > 1 and len(DiskEmbeddingCache(cache_dir).entries()) == tiles + 1
    reference = ["--reference", str(path), "--reference-mask", str(labels), "--object-size", "12"]
    argv = ["oneshot", str(path), *reference, "--cache", str(cache_dir), "-o", str(tmp_path / "out")]
    with embedding_cache.settings_restored():
        assert main([*argv, "--scheduler", "none"]) == 0
    assert len(DiskEmbeddingCache(cache_dir).entries()) == tiles + 1


def test_the_size_cap_never_removes_the_users_files_in_the_cache_directory(litemedsam, tmp_path, crop, capsys):
    """Bug hunt 4: --cache pointed at a folder that holds the user's own data (an OME-Zarr image, zarr v3, in a
    subfolder; an old folder of theirs named tmp/) counted and evicted them as cache entries once the cap was reached:
    the user's image was deleted without a word. Only the cache's own entries and temporaries are removed."""
    import tifffile
    import zarr
    from ome_zarr.writer import write_image

    cache_dir = tmp_path / "data"
    user_image = cache_dir / "plate1" / "A1.ome.zarr"
    write_image(crop[..., 0], zarr.open_group(str(user_image), mode="w", zarr_format=3), axes="yx")
    user_temp = cache_dir / "tmp" / "my-notes"
    user_temp.mkdir(parents=True)
    (user_temp / "notes.txt").write_text("mine")
    two_hours_ago = time.time() - 7200
    for path in (user_image / "zarr.json", user_temp):  # older than any entry: the first an LRU cap would take
        os.utime(path, (two_hours_ago, two_hours_ago))
    paths = [tmp_path / "a.tif", tmp_path / "b.tif"]
    tifffile.imwrite(paths[0], crop[::-1])
    tifffile.imwrite(paths[1], crop[:, ::-1])
    litemedsam.cache.clear()
    assert main(["embed", str(paths[0]), "--cache", str(tmp_path / "probe"), "--scheduler", "none"]) == 0
    entry_bytes = DiskEmbeddingCache(tmp_path / "probe").entries()[0][1]
    cap = str(1.5 * entry_bytes / 1e9)  # room for one entry: the second image's evicts the first's
    argv = ["embed", *map(str, paths), "--cache", str(cache_dir), "--cache-max-gb", cap, "--scheduler", "none"]
    assert main(argv) == 0
    assert (user_temp / "notes.txt").read_text() == "mine"
    assert (user_image / "zarr.json").is_file()
    np.testing.assert_array_equal(zarr.open_group(str(user_image), mode="r")["s0"][:], crop[..., 0])
    cache = DiskEmbeddingCache(cache_dir)
    assert len(cache.entries()) == 1 and cache.size_bytes() <= 1.5 * entry_bytes


def test_embed_of_a_pyramid_fills_what_segment_reads_from_it(litemedsam, tmp_path, shared_data, capsys):
    """Bug hunt 4: embed read an OME-Zarr's full resolution (a slide read whole into memory) and tiled it there,
    while segment --object-size reads the pyramid level of that working scale: none of embed's tiles was ever
    reused (segment computed and stored its own). embed now embeds the levels the segmenting subcommands read."""
    import tifffile
    from ome_zarr.format import FormatV04

    from .test_bigimage import write_ome_zarr

    image = tifffile.imread(shared_data / "nuclei_ctc_fluo_instances" / "images" / "N2DH-GOWT1_t01.tif")
    path = tmp_path / "slide.ome.zarr"
    write_ome_zarr(path, np.ascontiguousarray(image[256:768, 256:768])[None], FormatV04())  # 512, 256, 128 px
    cache_dir = tmp_path / "cache"
    litemedsam.cache.clear()
    # 60 px nuclei: a working scale of 1/3, read at level 1; the whole image at level 0 (text and SAT read that)
    assert main(["embed", str(path), "--cache", str(cache_dir), "--object-size", "60", "--scheduler", "none"]) == 0
    assert "(pyramid level 0, tiles at level 1)" in capsys.readouterr().out
    embedded = {entry for _, _, entry in DiskEmbeddingCache(cache_dir).entries()}
    assert len(embedded) >= 2
    litemedsam.cache.clear()  # a new process: only the disk has them
    out = tmp_path / "out"
    argv = ["segment", str(path), "--box", "300", "300", "360", "360", "--object-size", "60", "--cache", str(cache_dir)]
    assert main([*argv, "--output-format", "tiff", "-o", str(out), "--scheduler", "none"]) == 0
    report = json.loads((out / "report.json").read_text())["images"][0]
    assert report["pyramid_level"] == 1 and report["objects"] == 1
    # every embedding segment asked for was embed's: nothing new in the cache
    assert {entry for _, _, entry in DiskEmbeddingCache(cache_dir).entries()} == embedded


def test_embed_of_a_stack_fills_what_propagation_reads(litemedsam, tmp_path, shared_data, capsys):
    """Bug hunt 4: segment, oneshot and text take (Z, Y, X) stacks, but embed refused them ('3D array ... is
    ambiguous', with advice for Python functions): a stack could not be precomputed. embed now encodes every plane as
    the stack subcommands read it, and a propagation through the stack finds all its planes in the cache."""
    import tifffile

    images = sorted((shared_data / "nuclei_ctc_fluo_instances" / "images").glob("N2DH-GOWT1_*.tif"))[:3]
    stack = np.stack([tifffile.imread(p)[300:556, 300:556] for p in images])
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, photometric="minisblack")
    cache_dir = tmp_path / "cache"
    litemedsam.cache.clear()
    capsys.readouterr()
    assert main(["embed", str(path), "--cache", str(cache_dir), "--scheduler", "none"]) == 0
    assert "3 whole plane(s), 0 of 3 already cached" in capsys.readouterr().out
    embedded = {entry for _, _, entry in DiskEmbeddingCache(cache_dir).entries()}
    assert len(embedded) == 3
    litemedsam.cache.clear()
    out = tmp_path / "out"
    argv = ["segment", str(path), "--plane", "1", "--box", "100", "100", "140", "140", "--propagate"]
    assert main([*argv, "--cache", str(cache_dir), "-o", str(out), "--scheduler", "none"]) == 0
    record = json.loads((out / "report.json").read_text())["images"][0]
    # the object was decoded on both neighbours of its seed plane (which it ends at does not matter here)
    assert record["objects"] == 1 and all(
        " at plane " in why or "end of the stack" in why for why in record["stops"]["1"].values()
    )
    assert set(record["stops"]["1"]) == {"up", "down"}
    assert {entry for _, _, entry in DiskEmbeddingCache(cache_dir).entries()} == embedded


def test_a_cache_that_is_a_file_is_refused_before_any_work(tmp_path, crop, capsys):
    """Bug hunt 4: --cache (or $PROMPTSEG_EMBEDDING_CACHE) naming a file ran the whole batch, logging once that the
    cache 'cannot be written' and storing nothing, every image encoded again on the next run too."""
    import tifffile

    path, cache_file = tmp_path / "crop.tif", tmp_path / "notes.txt"
    tifffile.imwrite(path, crop)
    cache_file.write_text("my notes")
    out = tmp_path / "out"
    argv = ["segment", str(path), "--box", "30", "40", "110", "120", "-o", str(out), "--cache", str(cache_file)]
    assert main(argv) == 2
    assert f"embedding cache {cache_file}: a file, not a directory" in capsys.readouterr().err
    assert not out.exists() and cache_file.read_text() == "my notes"
    # a folder under that file (mistyped): the run stored nothing, and `embed` blamed the size cap for it
    under = cache_file / "cache"
    for run in (
        [*argv[:-1], str(under)],
        ["embed", str(path), "--cache", str(under)],
        ["cache", "--cache", str(under)],
    ):
        assert main(run) == 2
        err = capsys.readouterr().err
        assert f"embedding cache {under}: under {cache_file}, a file, not a directory" in err and "cap" not in err
    assert not out.exists() and cache_file.read_text() == "my notes"


def test_precompute_embeds_a_pyramid_at_the_levels_the_console_functions_read(litemedsam, disk, crop):
    """A multiscale layer's data given to precompute_embeddings (the README's Python way to fill the cache) was
    embedded at full resolution whole: all of a slide read into memory, for entries no console function asks for
    (segment_text and SAT one-shot read the >= 1024 px level, box prompts their working scale's). Now the levels
    `promptseg embed` embeds of a pyramid file, which the console functions then find on disk."""
    from napari_promptseg.io.multiscale import whole_image_scale
    from napari_promptseg.methods.precompute import precompute_embeddings, precompute_levels
    from napari_promptseg.models.preprocessing import read_pyramid_level

    full = np.kron(crop[..., 0], np.ones((16, 16), np.uint8))  # 2560 x 2592: real pixels, a slide's size class
    levels = [full, full[::2, ::2], full[::4, ::4], full[::8, ::8]]
    litemedsam.cache.clear()
    embeddings = precompute_embeddings(levels, litemedsam, object_size=160)
    whole = read_pyramid_level(levels, whole_image_scale)
    assert whole.factor == 2 and embeddings[0].transform.original_shape == (1280, 1296)
    # the levels `promptseg embed` reports are the ones embedded
    said = precompute_levels(levels, litemedsam.input_size, object_size=160)
    assert said["whole_image"] == 1 and embeddings[1].transform.original_shape == levels[said["tiles"]].shape
    assert all(e.transform.original_shape[0] < 2560 for e in embeddings)  # full resolution never read whole
    stored, misses = disk.stored, disk.misses
    assert stored == len(embeddings) == len({e.key for e in embeddings})
    litemedsam.cache.clear()  # as in a new process: only the disk has them
    assert litemedsam.embed(whole.array).key == embeddings[0].key and disk.hits == 1
    result = segment_prompts(levels, litemedsam, boxes=[[400, 400, 560, 560]], object_size=160)
    assert result.labels.shape == full.shape and result.labels.any()
    assert disk.hits == 2 and disk.misses == misses and disk.stored == stored


def test_embed_into_a_cache_that_cannot_be_written_says_so_not_the_size_cap(tmp_path, crop, capsys):
    """A cache folder that cannot be written (read-only; here its tmp/ taken by a file): `promptseg embed` said 'its
    size cap (10 GB, --cache-max-gb) holds no entry, or it cannot be written', naming an option that changes nothing
    for a cache of a few MB. It says the cache cannot be written, and why."""
    import tifffile

    path, cache = tmp_path / "crop.tif", tmp_path / "cache"
    tifffile.imwrite(path, np.ascontiguousarray(crop[::-1, ::-1]))
    cache.mkdir()
    (cache / "tmp").write_text("not a folder")
    assert main(["embed", str(path), "--cache", str(cache), "--scheduler", "none"]) == 2
    err = capsys.readouterr().err
    assert f"no embedding was kept in {cache}: it cannot be written ({cache / 'tmp'}: File exists)" in err, err
    assert "--cache-max-gb" not in err and (cache / "tmp").read_text() == "not a folder"


def test_embed_into_a_cache_on_a_full_disk_says_so_not_the_size_cap(tmp_path, crop, capsys, monkeypatch):
    """`promptseg embed --cache DIR` on a full disk said 'its size cap (10 GB, --cache-max-gb) holds no entry, or it
    cannot be written' (its folder probe passed: an empty folder still fits), while `segment` said 'No space left on
    device'. It says what the failed write met."""
    import errno

    import tifffile

    path, cache = tmp_path / "crop.tif", tmp_path / "cache"
    tifffile.imwrite(path, np.ascontiguousarray(crop[::-1, ::-1]))

    def full(*args, **kwargs):  # where the entry's arrays are written: what a full disk raises there
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(DiskEmbeddingCache, "_store", full)
    assert main(["embed", str(path), "--cache", str(cache), "--scheduler", "none"]) == 2
    err = capsys.readouterr().err
    assert f"no embedding was kept in {cache}: it cannot be written ({cache}: No space left on device)" in err, err
    assert "--cache-max-gb" not in err


def test_the_environments_cache_folder_has_its_variables_expanded_as_the_other_folders_do(tmp_path, monkeypatch):
    """$PROMPTSEG_EMBEDDING_CACHE set in quotes or by a launcher that runs no shell ('$SCRATCH/cache') was taken
    literally: every run wrote into a folder named '$SCRATCH' under the working directory, and `promptseg cache`
    listed it there, while $PROMPTSEG_CACHE_DIR and $PROMPTSEG_LIBRARY are expanded as a shell would."""
    from napari_promptseg.models.disk_stores import disk_stores

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("F35_SCRATCH", str(tmp_path / "scratch"))
    monkeypatch.setenv(embedding_cache.CACHE_ENV, "$F35_SCRATCH/cache")
    with embedding_cache.settings_restored():
        embedding_cache.configure(None)
        assert embedding_cache.active().root == tmp_path / "scratch" / "cache"
    assert disk_stores()[0].path == tmp_path / "scratch" / "cache"
    assert not (tmp_path / "$F35_SCRATCH").exists()
