"""Registration refused before any work, saying what is wrong and with which input: a pair larger than the free
memory, landmarks with a missing coordinate, a channels-first image without a channel axis, points of another
shape. Real pixels: BIRL's artificial pair at a quarter of its size."""

from __future__ import annotations

import types

import numpy as np
import pytest

from napari_promptseg.errors import PromptsegError
from napari_promptseg.io import read_image
from napari_promptseg.methods.registration import register
from napari_promptseg.methods.registration.pipeline import FIXED_PART_BYTES


def _short_of_memory(monkeypatch, free: int) -> None:
    """The machine with ``free`` bytes of memory left (and no swap) as psutil tells it."""
    import psutil

    monkeypatch.setattr(psutil, "virtual_memory", lambda: types.SimpleNamespace(available=free))
    monkeypatch.setattr(psutil, "swap_memory", lambda: types.SimpleNamespace(free=0))


def test_register_refuses_a_pair_larger_than_the_free_memory_before_any_work(birl_quarter, monkeypatch):
    """A 6000 x 8000 px pair took 3.9 GB (about 90 bytes per fixed pixel: the gray copies, the field, the warp) and
    nothing looked at the memory first: a 20000 x 20000 px grey PNG (a 0.4 GB read) ran for minutes until the
    system killed the process, without a word of why. What the pair needs is estimated from its sizes and refused
    before any work when more than is free, naming both images and what to do."""
    fixed, moving = read_image(birl_quarter["fixed"]), read_image(birl_quarter["moving"])
    pixels = fixed.shape[0] * fixed.shape[1]
    _short_of_memory(monkeypatch, free=10 * pixels)  # far less than the ~90 bytes per pixel the run needs
    told: list[str] = []
    with pytest.raises(PromptsegError) as refused:
        register(
            fixed,
            moving,
            method="intensity",
            fixed_name="fixed.tif",
            moving_name="moving.tif",
            progress=lambda fraction, message: told.append(message),
        )
    message = str(refused.value)
    assert "fixed.tif" in message and "moving.tif" in message and "150 x 200 px" in message, message
    assert "memory" in message and "nothing was done" in message and "pyramid" in message, message
    assert told == []  # refused before any work
    _short_of_memory(monkeypatch, free=FIXED_PART_BYTES + 1000 * pixels)  # what fits runs
    assert register(fixed, moving, method="intensity").quality["verdict"] == "good"


def test_a_small_pair_is_not_refused_for_the_libraries_an_earlier_registration_loaded(birl_quarter, monkeypatch):
    """The budget's part of any size (0.7 GB, measured on a process's first registration: SimpleITK's import, torch's
    and SimpleITK's first buffers, the segmenter's weights and first run) was asked of every run: with 0.25 GB free,
    a 150 x 200 px pair was refused as needing 0.7 GB, although a process that has registered once needs 0.04 GB
    more for a 300 x 400 px pair (benchmarks/bench_registration_memory.py --parts). What is loaded costs nothing more
    now."""
    fixed, moving = read_image(birl_quarter["fixed"]), read_image(birl_quarter["moving"])
    register(fixed, moving, method="intensity")  # the process's first registration, with all the memory there is
    _short_of_memory(monkeypatch, free=250_000_000)
    assert register(fixed, moving, method="intensity").quality["verdict"] == "good"


def test_a_first_registration_is_still_asked_what_it_loads(birl_quarter):
    """In a process that has not registered yet, the part of any size is still asked (a first region run that loads
    the segmenter: 0.60 GB on a 300 x 400 px pair): 0.5 GB free refuses a small pair by a prompts method, saying
    why, and lets the intensity route (0.18 GB) run. A child process: this one may have registered already."""
    import subprocess
    import sys

    code = """
import types, psutil
psutil.virtual_memory = lambda: types.SimpleNamespace(available=500_000_000)
psutil.swap_memory = lambda: types.SimpleNamespace(free=0)
from napari_promptseg.errors import PromptsegError
from napari_promptseg.methods.registration.pipeline import check_memory
check_memory((150, 200, 3), (150, 200, 3), "fixed.tif", "moving.tif", method="intensity")
try:
    check_memory((150, 200, 3), (150, 200, 3), "fixed.tif", "moving.tif", method="prompts+intensity")
except PromptsegError as exc:
    print(exc)
"""
    said = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    said = " ".join(said.split())
    assert "fixed.tif (150 x 200 px)" in said and "needs about 0.9 GB" in said, said
    assert "once per process" in said, said


def test_the_cli_refuses_a_pair_larger_than_the_free_memory_naming_its_files(
    birl_quarter, monkeypatch, tmp_path, capsys
):
    """The same through `promptseg register`: the files named, no output written."""
    from napari_promptseg.cli import main

    fixed = read_image(birl_quarter["fixed"])
    _short_of_memory(monkeypatch, free=10 * fixed.shape[0] * fixed.shape[1])
    out = tmp_path / "out"
    assert main(["register", str(birl_quarter["fixed"]), str(birl_quarter["moving"]), "-o", str(out)]) == 2
    said = " ".join(capsys.readouterr().err.split())
    assert f"{birl_quarter['fixed']} (150 x 200 px)" in said and str(birl_quarter["moving"]) in said, said
    assert not out.exists()  # nothing written, no empty folder left


def test_a_landmark_without_coordinates_is_named_by_its_line(birl_quarter, tmp_path, capsys):
    """A landmark file with a NaN row (a point not found on one section, exported from a spreadsheet) was refused as
    '<file>: landmarks contain NaN or infinite coordinates': which of its 12 rows was left to find. The line is
    named (as the file counts its lines, blank ones too), with what it holds."""
    from napari_promptseg.cli import main

    lines = birl_quarter["lm_fixed"].read_text().splitlines()
    cells = lines[4].split(",")
    lines[4] = ",".join([cells[0], "nan", "nan", *cells[3:]])
    broken = tmp_path / "fixed nan.csv"
    lines.insert(1, "")  # a blank line after the header: the point's line is 6 in the file
    broken.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    code = main(
        [
            "register",
            str(birl_quarter["fixed"]),
            str(birl_quarter["moving"]),
            "-o",
            str(out),
            "--landmarks-fixed",
            str(broken),
            "--landmarks-moving",
            str(birl_quarter["lm_moving"]),
        ]
    )
    said = " ".join(capsys.readouterr().err.split())
    assert code == 2 and f"{broken}: line 6: " in said and "nan" in said, said


def test_a_channels_first_image_without_a_channel_axis_is_named_with_the_way_on(birl_quarter, tmp_path, capsys):
    """A two-channel moving TIFF saved channels first (2, H, W) beside a grey fixed one was refused as '<fixed> has
    shape (150, 200) (2D) and <moving> has shape (2, 150, 200) (3D): ... pick one plane of a stack first': both
    files named, the grey one as if at fault, and --channel-axis, the way on, left unsaid (the widget says 'choose
    channel axis 0'). Only the image at fault is named now, with channel_axis=0 / --channel-axis 0."""
    import tifffile

    from napari_promptseg.cli import main

    fixed, moving = read_image(birl_quarter["fixed"])[..., 0], read_image(birl_quarter["moving"])
    two_channels = np.ascontiguousarray(np.moveaxis(moving[..., :2], -1, 0))
    with pytest.raises(PromptsegError) as refused:
        register(fixed, two_channels, method="intensity", fixed_name="fixed.tif", moving_name="moving.tif")
    message = str(refused.value)
    assert "moving.tif has shape (2, 150, 200)" in message and "fixed.tif" not in message, message
    assert "channel_axis=0" in message, message
    tifffile.imwrite(tmp_path / "fixed.tif", fixed)
    tifffile.imwrite(tmp_path / "moving 2ch.tif", two_channels)
    code = main(["register", str(tmp_path / "fixed.tif"), str(tmp_path / "moving 2ch.tif"), "-o", str(tmp_path / "o")])
    said = " ".join(capsys.readouterr().err.split())
    assert code == 2 and f"{tmp_path / 'moving 2ch.tif'} has shape (2, 150, 200)" in said, said
    assert "--channel-axis 0" in said and f"{tmp_path / 'fixed.tif'} has" not in said, said


def test_points_of_another_shape_are_refused_by_the_result_as_by_its_deformation(birl_quarter):
    """A napari Points layer's data of a 3D layer ((N, 3): plane, row, column) given to
    RegistrationResult.moving_points_to_fixed failed inside numpy ('operands could not be broadcast together with
    shapes (5,3) (2,)'), where Deformation.points_to_fixed says what it takes."""
    fixed, moving = read_image(birl_quarter["fixed"]), read_image(birl_quarter["moving"])
    result = register(fixed, moving, method="intensity")
    points = np.ones((5, 3))
    with pytest.raises(PromptsegError, match=r"moving points: expected \(N, 2\) x, y coordinates, got shape \(5, 3\)"):
        result.moving_points_to_fixed(points)
    with pytest.raises(PromptsegError, match=r"fixed points: expected \(N, 2\) x, y coordinates, got shape \(5, 3\)"):
        result.fixed_points_to_moving(points)
    assert result.moving_points_to_fixed([[10.0, 20.0]]).shape == (1, 2)  # a list of points still goes


def test_the_cli_refuses_one_landmark_file_given_for_both_images(birl_quarter, tmp_path, capsys):
    """--landmarks-fixed and --landmarks-moving given the same ANHIR file (a copy-paste slip): the run went on and
    said 'TRE 0.00 -> 18.49 px', the registration made to look as if it had spoilt aligned landmarks. Refused
    before any work, naming the file; a BigWarp file, which holds both sets, still goes to both (one image given as
    both, which took one landmark file for both, is refused itself: test_registration_same_inputs)."""
    from napari_promptseg.cli import main

    landmarks = str(birl_quarter["lm_fixed"])
    out = tmp_path / "out"
    inputs = [str(birl_quarter["fixed"]), str(birl_quarter["moving"]), "-o", str(out), "--method", "intensity"]
    code = main(["register", *inputs, "--landmarks-fixed", landmarks, "--landmarks-moving", landmarks])
    said = " ".join(capsys.readouterr().err.split())
    assert code == 2 and f"{landmarks}" in said and "same file" in said, said
    assert not out.exists()
