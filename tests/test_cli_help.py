"""What `promptseg <subcommand> --help` tells a user: every option there, with what it does and its default."""

from __future__ import annotations

import json

import pytest
import tifffile
from skimage import data as skdata

from napari_promptseg.cli import build_parser, main


def _help(*command: str, capsys) -> str:
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    return " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("command", [["segment"], ["oneshot"], ["text"], ["embed"], ["register"], ["train-text"]])
def test_precision_is_in_each_encoding_subcommands_help(command, capsys):
    """--precision was an option of `promptseg` alone: `promptseg segment --help` did not show it, and
    `promptseg segment ... --precision bfloat16` was refused as an unrecognized argument."""
    assert "--precision {auto,float32,bfloat16} the image encoder's numeric mode" in _help(*command, capsys=capsys)


def test_precision_given_after_the_subcommand_sets_the_runs_encoder(tmp_path, monkeypatch):
    from napari_promptseg.models.device import resolve_device
    from napari_promptseg.models.sam_family import resolve_precision

    monkeypatch.delenv("PROMPTSEG_PRECISION", raising=False)
    # the precision auto does not take on this CPU: the run's report says the option's
    given = "float32" if resolve_precision(None, resolve_device("cpu")) == "bfloat16" else "bfloat16"
    image = tmp_path / "coins.tif"
    tifffile.imwrite(image, skdata.coins()[:128, :128])
    out = tmp_path / "out"
    argv = ["segment", str(image), "--box", "10", "10", "60", "60", "-o", str(out), "--device", "cpu"]
    assert main([*argv, "--precision", given]) == 0
    assert json.loads((out / "report.json").read_text())["encoder_precision"] == given
    # given before the subcommand, as before; after it, it wins
    parser = build_parser()
    assert parser.parse_args(["--precision", "bfloat16", *argv]).precision == "bfloat16"
    assert parser.parse_args(["--precision", "bfloat16", *argv, "--precision", "float32"]).precision == "float32"
    assert parser.parse_args(argv).precision is None


def test_oneshot_help_says_each_option_and_its_default(capsys):
    """--strategy had no help at all, and --ensemble, --use-points and --features no default; --reference-mask did
    not say it pairs with --reference in order."""
    said = _help("oneshot", capsys=capsys)
    assert "--strategy {sat,persam,matcher} the one-region method: sat (Segment Any Tissue" in said
    assert "(default: sat; the many-instances mode has none)" in said
    assert "(default: vote)" in said and "(default: segmenter)" in said
    assert "(default: the model's: off for litemedsam, trained on boxes only; on for SAM)" in said
    assert "--reference-mask REFERENCE_MASK the mask/labels of the --reference of the same rank" in said


def test_library_add_help_says_a_stack_image_is_taken(capsys):
    """--image said "2D image file" while --plane takes an exemplar from a stack's plane."""
    said = _help("library", "add", capsys=capsys)
    assert "--image IMAGE 2D image file, or a stack (Z, Y, X[, C]): see --plane" in said


def test_embed_help_names_every_kind_of_image_it_reads(capsys):
    """embed reads OME-Zarr, pyramidal TIFFs and whole slides (embedded at the levels the other commands read),
    while its help named 2D images and stacks only."""
    said = _help("embed", capsys=capsys)
    assert "OME-Zarr, pyramidal (OME-)TIFFs and whole slides (Aperio .svs, Hamamatsu .ndpi)" in said
    assert "at the pyramid levels segment, oneshot and text read them" in said


def test_text_help_names_the_templates_each_attribute_is_in(capsys):
    """--shape said "templates p2+" and --colour "p3+", but p7 (class which is description) has neither."""
    said = _help("text", capsys=capsys)
    assert "--shape SHAPE prompt attribute of templates p2-p6, p8 and p9" in said
    assert "--colour COLOUR, --color COLOUR prompt attribute of templates p3-p6, p8 and p9" in said


def test_segment_help_says_what_it_writes(capsys):
    """segment, alone of the commands that write into -o, had no description: its help did not say what it writes,
    as oneshot's and text's do."""
    said = _help("segment", capsys=capsys)
    assert "Writes OUT/<stem>.tif (instance labels: an object per --box, one for the clicks outside every box" in said
    assert "and OUT/report.json (objects, scores, working scale, warnings per image)" in said


def test_register_help_says_which_files_in_its_output_it_replaces(capsys):
    """register's -o said "output directory" alone, while it refuses to replace files it did not write (or another
    pair's results), as the other commands' -o help says of theirs."""
    said = _help("register", capsys=capsys)
    assert "its files are replaced only when a promptseg register run of the same FIXED and MOVING wrote them" in said


@pytest.mark.parametrize("command", [["segment"], ["oneshot"], ["text"], ["embed"], ["register"], ["library", "add"]])
def test_channel_axis_help_says_its_order_and_default(command, capsys):
    """--channel-axis said "axis of the channels in a multichannel image" alone: not that it counts in the file's
    order (a Fiji composite's C moved last only when it is not given), nor what is read without it."""
    said = _help(*command, capsys=capsys)
    assert (
        "--channel-axis CHANNEL_AXIS axis of the channels in a multichannel image, counted in the file's order" in said
    )
    assert "(default: the axis an OME or ImageJ TIFF names as channels, else a last axis of 2-4 values" in said


@pytest.mark.parametrize("command", [["text"], ["register"]])
def test_library_help_names_the_variable_that_sets_it(command, capsys):
    """text's and register's --library said "default: the user library", while $PROMPTSEG_LIBRARY sets it, as
    `promptseg library --help` says."""
    assert "reference library directory (default: $PROMPTSEG_LIBRARY, else the user one)" in _help(
        *command, capsys=capsys
    )


def test_text_weights_help_says_a_hub_id_is_taken(capsys):
    """text's --text-weights named a checkpoint file or a model directory, while its description (and register's
    --text-weights) take a hub id too."""
    assert "weights of GroundingDINO or CLIPSeg (checkpoint file, model directory or hub id)" in _help(
        "text", capsys=capsys
    )


def test_top_level_help_says_the_exit_codes_of_every_subcommand(capsys, tmp_path):
    """`promptseg --help` gave the exit codes of segment, oneshot and text only: not that `cache clear` exits 1 when
    what was asked for stays, embed 1 when an image failed, train-text 130 keeping its epochs, nor what register,
    models and library exit with. It names every subcommand now, and what it says holds for a run (a library remove
    of no entry: 2; a cache clear of nothing asked for: 2)."""
    parser = build_parser()
    said = " ".join(parser.format_help().split())
    codes = said[said.index("exit codes") :]
    subcommands = next(a for a in parser._actions if a.dest == "command").choices
    every = {"models", "segment", "register", "oneshot", "text", "train-text", "library", "embed", "cache"}
    assert set(subcommands) == every  # a new one: its exit codes said in ALL_EXIT_CODES, and named here
    for name in subcommands:
        assert name in codes, name
    assert "cache clear: 1 some or all of what was asked for stays" in codes
    assert "embed: 1 some image failed (it has no embedding; the others do)" in codes
    assert "train-text: 130 interrupted: MODEL_DIR keeps the best epoch so far" in codes
    assert "141 its output's reader stopped reading" in codes
    assert main(["library", "remove", "gland", "--library", str(tmp_path / "lib")]) == 2
    assert main(["cache", "clear", "--cache", str(tmp_path / "cache")]) == 2
    assert "error:" in capsys.readouterr().err
