"""A user's first steps with a text model of their own (bug hunt 24): naming the model by the file they think of as
"the checkpoint", giving train-text the wrong file, resuming in the widget. Real Kvasir triplets, real LiteMedSAM +
MiniLM, one-epoch trainings (the fixtures of test_text_training)."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace

import numpy as np
import pytest
import tifffile

from napari_promptseg.cli import main
from napari_promptseg.errors import PromptsegError, WeightsError
from napari_promptseg.methods.text_training import finetune_clipseg, read_triplets, train_text_segmenter
from napari_promptseg.models import load_text_segmenter

from .test_clipseg import tiny_clipseg_dir  # noqa: F401 (fixture)
from .test_text_training import cache, kvasir, trained  # noqa: F401 (fixtures)


def test_a_text_model_is_named_by_its_weights_or_config_file_too(trained, kvasir, tmp_path):  # noqa: F811
    """`promptseg text polyp IMG --text-model MODEL/model.safetensors` (the checkpoint file train-text wrote) was
    refused, "not a directory (train one with `promptseg train-text`)"; the file's model answers, as its directory
    does. MODEL/last (the resume state) is refused naming the model directory to give instead."""
    weights = trained.path / "model.safetensors"
    answer = tmp_path / "answer"
    argv = ["text", "polyp", str(kvasir[4].image), "--text-model", str(weights), "-o", str(answer)]
    assert main([*argv, "--device", "cpu"]) == 0
    report = json.loads((answer / "report.json").read_text())
    assert report["route"] == "trained" and report["text_model"] == trained.path.name
    image, _ = kvasir[4].load()
    labels = tifffile.imread(answer / f"{kvasir[4].image.stem}.tif")
    model = load_text_segmenter(trained.path / "text_segmenter.json", device="cpu")
    assert model is load_text_segmenter(trained.path, device="cpu")  # one model, however it is named
    expected = model.heatmap(image, "polyp") > 0.5
    assert labels.shape == expected.shape and not np.any((labels > 0) & ~expected)
    with pytest.raises(WeightsError, match=f"inside the text model {trained.path.resolve()}; give that directory"):
        load_text_segmenter(trained.path / "last", device="cpu")


def test_text_help_says_a_trained_model_reads_its_prompt_whole(capsys):
    """`promptseg text --help` said a prompt's phrases are split on , . ; and the README's trained-model example is
    "one small polyp, located in top of the image": a trained model reads it whole (its training sentences have
    commas too), which the help now says."""
    with pytest.raises(SystemExit):
        main(["text", "--help"])
    usage = " ".join(capsys.readouterr().out.split())
    assert "phrases split on , . ;); a trained text model (--text-model) reads it whole" in usage, usage
    # the library's floor was not given (README: "cosine similarity >= 0.6"), beside every other threshold's
    assert "lowest prompt-to-entry similarity accepted (0.6; exact and plural names: 1.0)" in usage, usage


def test_a_json_of_texts_given_as_the_csv_is_refused_saying_so(shared_data, tmp_path, capsys):
    """medvlsm's prompt JSON sits beside the Kvasir images; given to train-text it was read as a CSV and refused
    with "no column 'image', 'mask', 'text'; the columns are {". It is refused as JSON, naming the columns a CSV
    needs, before any model loads."""
    prompts = shared_data / "polyps_kvasir_text" / "medvlsm_prompts_subset.json"
    assert main(["train-text", str(prompts), "-o", str(tmp_path / "model")]) == 2
    error = capsys.readouterr().err
    assert "a JSON file, not a CSV" in error and "columns image, mask, text" in error
    assert "the columns are {" not in error and not (tmp_path / "model").exists()


def test_a_resume_reads_the_runs_own_feature_cache(kvasir, cache, tmp_path):  # noqa: F811
    """`train-text CSV -o MODEL --cache-dir FEATURES`, then `--resume --epochs 2` without --cache-dir: the resume
    encoded every image again into MODEL/cache (minutes on a few hundred images) and recorded that cache as the
    model's; it reads the run's own cache now."""
    out = tmp_path / "model"
    train_text_segmenter(kvasir, out, cache_dir=cache, device="cpu", epochs=1, batch_size=2)
    resumed = train_text_segmenter(kvasir, out, resume=True, device="cpu", epochs=2)
    assert resumed.epochs_run == 2 and resumed.feature_cache == {"hits": len(kvasir), "misses": 0}
    assert not (out / "cache").exists()
    config = json.loads((out / "text_segmenter.json").read_text())
    assert config["training"]["cache_dir"] == str(cache.absolute())


def test_a_text_model_given_to_another_option_answers_or_says_where_it_goes(
    trained,  # noqa: F811
    kvasir,  # noqa: F811
    tmp_path,
    capsys,
):
    """`--text-weights MODEL` ("weights of the text model") failed with three loaders' complaints, one repeated, and
    no word of --text-model; it answers as --text-model does. `--model MODEL` (the segmenter) said "unknown model";
    it names the option, and a route that cannot load it says which can."""
    image = str(kvasir[4].image)
    answer = tmp_path / "answer"
    assert (
        main(["text", "polyp", image, "--text-weights", str(trained.path), "-o", str(answer), "--device", "cpu"]) == 0
    )
    report = json.loads((answer / "report.json").read_text())
    assert report["route"] == "trained" and report["text_model"] == trained.path.name
    capsys.readouterr()
    assert main(["text", "polyp", image, "--model", str(trained.path), "-o", str(tmp_path / "a2")]) == 2
    assert "a text model of `promptseg train-text`, not a segmenter: `promptseg text` takes it with --text-model" in (
        capsys.readouterr().err
    )
    argv = ["text", "polyp", image, "--text-weights", str(trained.path), "--route", "clipseg", "-o", str(tmp_path)]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "which route 'clipseg' does not load; give it as the text model (CLI --text-model" in error
    assert "GroundingDINO" not in error


def test_a_spreadsheets_csv_with_semicolons_or_in_its_own_encoding_is_read_or_explained(kvasir, tmp_path):  # noqa: F811
    """A triplet table saved by a spreadsheet in a locale with decimal commas separates cells with ';': it was
    refused, "no column 'image', 'mask', 'text'; the columns are image;mask;text" (landmark CSVs were read). It is
    read, texts with commas kept whole; a file in the spreadsheet's own 8-bit encoding says to save it as UTF-8."""
    rows = [(str(t.image), str(t.mask), f"polype à droite, {k}", t.split) for k, t in enumerate(kvasir)]
    table = "\r\n".join(";".join(row) for row in [("image", "mask", "text", "split"), *rows]) + "\r\n"
    (tmp_path / "excel.csv").write_text(table, encoding="utf-8-sig")
    triplets = read_triplets(tmp_path / "excel.csv")
    assert [(str(t.image), str(t.mask), t.text, t.split) for t in triplets] == rows
    (tmp_path / "ansi.csv").write_bytes(table.encode("cp1252"))
    with pytest.raises(PromptsegError, match=r"ansi.csv: not UTF-8 text .*save it as UTF-8"):
        read_triplets(tmp_path / "ansi.csv")


def test_negative_pairs_without_a_second_name_are_refused_before_any_image_is_encoded(kvasir, tmp_path):  # noqa: F811
    """--negatives (the widget's 'texts are class names') with one name for every image was refused only after the
    models loaded and every image was encoded (minutes for a few hundred images); it is refused from the rows."""
    one_name = [replace(t, text="polyp") for t in kvasir]
    features = tmp_path / "features"
    with pytest.raises(PromptsegError, match="negative pairs need texts"):
        train_text_segmenter(one_name, tmp_path / "model", cache_dir=features, device="cpu", epochs=1, negatives=1.0)
    assert not features.exists() and not (tmp_path / "model").exists()


def test_the_clipseg_fine_tune_never_writes_over_a_model_it_was_not_told_to(
    tiny_clipseg_dir,  # noqa: F811
    kvasir,  # noqa: F811
    tmp_path,
):
    """`train-text --clipseg --clipseg-weights ~/clipseg -o ~/clipseg` (or -o any transformers model's folder) wrote
    the fine-tuned weights over the model there without a word: only a text_segmenter.json was looked for. A
    folder with a model's config.json or weights is refused unless --overwrite."""
    base = tmp_path / "clipseg"
    shutil.copytree(tiny_clipseg_dir, base)
    before = {f.name: f.read_bytes() for f in base.iterdir() if f.is_file()}
    with pytest.raises(PromptsegError, match=r"already holds a model \(config.json, model.safetensors\)"):
        finetune_clipseg(kvasir, base, weights=base, epochs=1, batch_size=2, device="cpu")
    assert {f.name: f.read_bytes() for f in base.iterdir() if f.is_file()} == before


def test_a_split_in_a_column_of_another_name_is_not_trained_on_silently(shared_data, tmp_path, capsys):
    """Kvasir's texts.csv keeps its split in 'medvlsm_split': `train-text texts.csv --text-col prompt_p1` found no
    'split' column and trained on every row, its test rows too, without a word; and a --split-col that is no column
    (a typo) did the same. Both are refused naming the column; --split-col '' trains on every row when meant."""
    texts = shared_data / "polyps_kvasir_text" / "texts.csv"
    argv = ["train-text", str(texts), "--text-col", "prompt_p1", "-o", str(tmp_path / "model")]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "column 'medvlsm_split' holds test, train, val rows" in error and "--split-col medvlsm_split" in error
    assert main([*argv, "--split-col", "fold"]) == 2
    assert "no split column 'fold'" in capsys.readouterr().err
    assert not (tmp_path / "model").exists()
    split = read_triplets(texts, text_col="prompt_p1", split_col="medvlsm_split")
    assert {t.split for t in split} == {"train", "val", "test"}
    assert {t.split for t in read_triplets(texts, text_col="prompt_p1", split_col="")} == {""}


def test_a_fine_tuned_clipseg_given_as_text_weights_on_route_groundingdino_says_where_it_goes(tmp_path):
    """A CLIPSeg fine-tuned by train-text loads on route clipseg; given as --text-weights with route groundingdino it
    was tried as GroundingDINO weights ('no GroundingDINO weights', the loader's complaint) instead of being named as
    a text model that route does not load."""
    from napari_promptseg.methods.text import choose_route
    from napari_promptseg.models.text_segmenter import CONFIG_FILE, FORMAT, FORMAT_VERSION

    model = tmp_path / "clipseg-polyps"
    model.mkdir()
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": "clipseg"}
    (model / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(PromptsegError, match="which route 'groundingdino' does not load; give it as the text model"):
        choose_route("groundingdino", weights=str(model), device="cpu")


def test_a_text_model_saved_again_is_loaded_again_and_its_older_version_let_go(trained, tmp_path):  # noqa: F811
    """A text model trained again into its directory (a further run, a presence refit) was loaded again, but the
    process kept every earlier version in memory (a fine-tuned CLIPSeg: hundreds of MB each): it is let go, as the
    segmenters' loader does since it keys on the weights' version."""
    import gc
    import os
    import weakref

    model_dir = tmp_path / "model"
    shutil.copytree(trained.path, model_dir, ignore=shutil.ignore_patterns("cache", "last*"))
    first = load_text_segmenter(model_dir, device="cpu")
    assert load_text_segmenter(model_dir, device="cpu") is first
    older = weakref.ref(first)
    weights = model_dir / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # saved again
    again = load_text_segmenter(model_dir, device="cpu")
    assert again is not first
    del first
    gc.collect()
    assert older() is None


def test_a_clipseg_fine_tune_over_a_fusion_model_leaves_no_fusion_run_to_resume(
    trained,  # noqa: F811
    tiny_clipseg_dir,  # noqa: F811
    kvasir,  # noqa: F811
    cache,  # noqa: F811
    tmp_path,
):
    """`train-text --clipseg --overwrite` into a fusion model's folder kept the fusion run's training state (last/):
    a later `--resume` there trained the fusion decoder on from it and wrote its weights and description over the
    fine-tuned CLIPSeg's. The overwrite takes the old run's state with the old model."""
    out = tmp_path / "model"
    shutil.copytree(trained.path, out)
    assert (out / "last" / "state.json").is_file()
    finetune_clipseg(kvasir, out, weights=tiny_clipseg_dir, overwrite=True, epochs=1, batch_size=2, device="cpu")
    assert not any((out / name).exists() for name in ("last", "last.tmp", "last.old"))
    assert json.loads((out / "text_segmenter.json").read_text())["kind"] == "clipseg"
    with pytest.raises(PromptsegError, match="holds a fine-tuned CLIPSeg, which has no training state to resume"):
        train_text_segmenter(kvasir, out, cache_dir=cache, device="cpu", resume=True, epochs=2)


def test_a_text_model_given_with_another_route_is_said_to_be_unused(litemedsam, tmp_path, capsys):
    """`promptseg text nuclei IMG --route library --text-model MODEL` (and segment_text(route="clipseg",
    text_model=...)) answered with the route chosen and never said the text model was not used: the user took the
    labels for their model's. It is said, in the result's warnings and the CLI's (and its report's), naming the model
    and the routes that use it; route auto and trained take the model and say nothing of it."""
    from napari_promptseg._sample_data import nuclei
    from napari_promptseg.io.library import ReferenceLibrary
    from napari_promptseg.methods.text import segment_text

    (image, _, _), (truth, _, _) = nuclei()
    reference, target = image[:, :128], image[:, 128:]
    library = ReferenceLibrary.open(tmp_path / "library")
    library.add("nucleus", reference, truth[:, :128] > 0, "cell nuclei")
    model = tmp_path / "my_polyp_model"
    model.mkdir()
    said = r"text model \S*my_polyp_model not used: route 'library' answers without it"
    result = segment_text(target, "nucleus", route="library", library=library, segmenter=litemedsam, text_model=model)
    assert result.labels.any()
    assert sum(bool(re.search(said, w)) for w in result.warnings) == 1, result.warnings
    quiet = segment_text(target, "nucleus", route="library", library=library, segmenter=litemedsam)
    assert not any("not used" in w for w in quiet.warnings)
    # a route chosen already (the widget's, whose text model field is passed whatever route is picked): no word
    from napari_promptseg.methods.text import choose_route

    chosen = choose_route("library", library=library, text_model=model)
    chosen_quiet = segment_text(target, "nucleus", route=chosen, segmenter=litemedsam, text_model=model)
    assert not any("not used" in w for w in chosen_quiet.warnings)

    path = tmp_path / "target.tif"
    tifffile.imwrite(path, target)
    out = tmp_path / "out"
    argv = ["text", "nucleus", str(path), "--route", "library", "--library", str(library.path), "-o", str(out)]
    assert main([*argv, "--text-model", str(model), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert re.search(rf"warning: {said}.*--text-model", err), err
    assert any(re.search(said, w) for w in json.loads((out / "report.json").read_text())["warnings"])

    # text weights (GroundingDINO's, CLIPSeg's) beside route library: no text model loads there either
    weights = tmp_path / "clipseg_weights"
    weights.mkdir()
    unused = r"text weights \S*clipseg_weights not used: route 'library' answers from the reference library"
    result = segment_text(target, "nucleus", route="library", library=library, segmenter=litemedsam, weights=weights)
    assert sum(bool(re.search(unused, w)) for w in result.warnings) == 1, result.warnings
    assert main([*argv, "--text-weights", str(weights), "--device", "cpu"]) == 0
    assert re.search(rf"warning: {unused}.*--text-weights", capsys.readouterr().err)
