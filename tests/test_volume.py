"""3D stacks: which arrays are stacks, plane-by-plane ids linked across planes, propagation through the real MRI
volume (a few planes), and (Z, Y, X) inputs through the CLI."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import tifffile
from ome_zarr.format import FormatV04
from skimage.filters import threshold_otsu
from skimage.measure import label

from napari_promptseg._sample_data import nuclei, nuclei_for_text, spheroid_stack
from napari_promptseg.cli import main
from napari_promptseg.errors import NothingFoundError, PromptsegError
from napari_promptseg.io import read_image
from napari_promptseg.methods.instances import match_instances
from napari_promptseg.methods.metrics import dice
from napari_promptseg.methods.volume import as_stack, propagate_through_stack, segment_stack

#: the MRI structure used here: the left thalamus (FreeSurfer 10), planes along the volume's first axis
THALAMUS = 10


def nuclei_stack(planes: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A (Z, Y, X) stack of spheroid nuclei from the bundled DSB image, with 3D ground-truth ids."""
    (image, _, _), (truth, _, _) = nuclei()
    return spheroid_stack(image, truth, planes, seed, jitter=1)


@pytest.fixture(scope="module")
def mri(shared_data):
    """Nine planes of the real MRI volume around the left thalamus' largest cross-section."""
    scan = np.load(shared_data / "brain_mri_1vol" / "test_scan.npz")
    vol, truth = scan["vol"].astype(np.float32), scan["seg"] == THALAMUS
    z = int(np.argmax(truth.sum((1, 2))))
    return vol[z - 4 : z + 5], truth[z - 4 : z + 5]


def test_which_arrays_are_stacks():
    assert as_stack(np.zeros((64, 64)))[0] is None
    assert as_stack(np.zeros((64, 64, 3)))[0] is None  # RGB
    assert as_stack(np.zeros((64, 64, 2)))[0] is None  # two channels last
    assert as_stack(np.zeros((5, 64, 64)), channel_axis=0)[0] is None  # a multichannel 2D image
    assert as_stack(np.zeros((64, 64, 5)))[0] is None  # channels last: the 2D functions ask which to use
    vol, warnings = as_stack(np.zeros((5, 64, 64)))
    assert vol.shape == (5, 64, 64) and not warnings
    assert as_stack(np.zeros((3, 64, 64)))[1], "three planes might be channels: say how they were read"
    assert not as_stack([np.zeros((64, 64))] * 3)[1], "a list of planes is a stack by the caller's word"
    assert as_stack(np.zeros((5, 64, 64, 3)))[0].shape == (5, 64, 64, 3)
    assert as_stack(np.zeros((5, 2, 64, 64)), channel_axis=1)[0].shape == (5, 64, 64, 2)
    with pytest.raises(PromptsegError, match="channel"):
        as_stack(np.zeros((5, 6, 64, 64)))
    with pytest.raises(PromptsegError, match="5D"):
        as_stack(np.zeros((2, 2, 2, 8, 8)))


def test_plane_by_plane_links_each_nucleus_to_one_id():
    stack, truth = nuclei_stack()
    rng = np.random.default_rng(1)

    def plane_truth(plane, z):  # each plane's objects under ids of its own, in no particular order
        ids = np.unique(truth[z][truth[z] > 0])
        lut = np.zeros(truth.max() + 1, np.int64)
        lut[ids] = rng.permutation(len(ids)) + 1
        return lut[truth[z]]

    result = segment_stack(stack, plane_truth)
    assert result.labels.shape == stack.shape
    linked = match_instances(result.labels, truth)
    assert linked["f1"] > 0.9, linked
    # unlinked, every plane's objects would be new objects: precision about 1 / planes
    unlinked = np.stack([plane_truth(p, z) + 1000 * z * (truth[z] > 0) for z, p in enumerate(stack)])
    assert match_instances(unlinked, truth)["precision"] < 0.4
    assert all(a <= b for a, b in result.extents.values())
    # a plain 2D method (Otsu + components) through the same loop: touching nuclei merge, but planes still link
    otsu = segment_stack(stack, lambda plane, z: label(plane > threshold_otsu(stack)))
    assert match_instances(otsu.labels, truth)["f1"] > 0.6


def test_segment_stack_takes_a_function_of_the_plane_alone():
    """``segment_stack(vol, lambda plane: ...)`` failed at the first plane with "takes 1 positional argument but 2
    were given"; and a function whose second parameter has a default must not get z there (``nbins=0``)."""
    stack, truth = nuclei_stack()
    by_plane = segment_stack(stack, lambda plane, z: label(plane > threshold_otsu(plane)))
    alone = segment_stack(stack, lambda plane: label(plane > threshold_otsu(plane)))
    np.testing.assert_array_equal(alone.labels, by_plane.labels)
    assert match_instances(alone.labels, truth)["f1"] > 0.6

    def otsu_components(plane, nbins=256):
        return label(plane > threshold_otsu(plane, nbins))

    np.testing.assert_array_equal(segment_stack(stack, otsu_components).labels, by_plane.labels)
    with pytest.raises(PromptsegError, match="segment_plane: expected a function of a plane, got int"):
        segment_stack(stack, 5)


def test_propagation_through_real_mri_planes(litemedsam, mri):
    vol, truth = mri
    seed = len(vol) // 2
    rows, cols = np.nonzero(truth[seed])
    box = (cols.min(), rows.min(), cols.max(), rows.max())
    result = propagate_through_stack(vol, seed, boxes=[box], segmenter=litemedsam, name="mri")
    assert result.labels.shape == truth.shape and set(np.unique(result.labels)) <= {0, 1}
    first, last = result.extents[1]
    assert first < seed < last, "carried both ways from the seed plane"
    assert set(result.stops[1]) == {"up", "down"}
    # one box on one plane (measured 0.87); a box at the ground truth on every plane gives 0.87 too
    assert dice(result.labels > 0, truth) > 0.75


def test_propagation_keeps_the_seed_planes_working_scale(litemedsam, monkeypatch):
    """Every plane is decoded at the seed's scale (set by its boxes), not at one taken from the tighter masks that
    the boxes gave: on identical planes that changed the tiling and lost nuclei at the first step."""
    from napari_promptseg.methods import interactive

    (image, _, _), (truth, _, _) = nuclei()
    ids = np.unique(truth[truth > 0])[:12]
    boxes = []
    for k in ids:
        rows, cols = np.nonzero(truth == k)
        boxes.append((cols.min(), rows.min(), cols.max(), rows.max()))
    sizes, real = [], interactive.segment_objects  # what decodes the seed's prompts and every carried plane

    def recording(*args, **kwargs):
        result = real(*args, **kwargs)
        sizes.append(result.scale.object_size)
        return result

    monkeypatch.setattr(interactive, "segment_objects", recording)
    result = propagate_through_stack(np.stack([image] * 3), 1, boxes=boxes, segmenter=litemedsam)
    # the seed plane, the two others, and any decode again of the objects that end there (alone, or without them)
    assert len(sizes) >= 3 and sizes[0] == result.scale.object_size
    assert sizes[1:] == [sizes[0]] * (len(sizes) - 1)


def test_cli_propagates_boxes_through_a_tiff_stack(litemedsam, mri, tmp_path, capsys):
    vol, truth = (a[2:7] for a in mri)  # five of the nine planes: the seed and two each way
    path = tmp_path / "mri.tif"
    tifffile.imwrite(path, vol)
    seed = len(vol) // 2
    rows, cols = np.nonzero(truth[seed])
    box = [str(v) for v in (cols.min(), rows.min(), cols.max(), rows.max())]
    out = tmp_path / "out"
    assert main(["segment", str(path), "-o", str(out), "--box", *box]) == 2
    assert "--plane" in capsys.readouterr().err, "boxes on a stack need the plane they were drawn on"
    code = main(["segment", str(path), "-o", str(out), "--box", *box, "--plane", str(seed), "--propagate"])
    assert code == 0
    labels = tifffile.imread(out / "mri.tif")
    assert labels.shape == truth.shape
    assert dice(labels > 0, truth) > 0.7
    record = json.loads((out / "report.json").read_text())["images"][0]
    assert record["planes"] == len(vol) and record["mode"] == f"propagated from plane {seed}"
    assert set(record["stops"]["1"]) == {"up", "down"}
    assert record["working_scale"]["source"] == "boxes"  # the seed's scale, kept through the stack


def test_cli_propagates_the_objects_of_a_seed_label_image(litemedsam, mri, tmp_path, capsys):
    """`promptseg segment STACK --plane Z --propagate --seed-labels LABELS`: the objects of a label image (a drawing,
    another method's result) seed the propagation, as ``propagate_through_stack(labels=)`` in the console; the CLI
    could seed it only with prompts or its own methods. The stack's (Z, Y, X) labels give their plane's objects."""
    vol, truth = (a[2:7] for a in mri)
    path, seed_path, out = tmp_path / "mri.tif", tmp_path / "drawn.tif", tmp_path / "out"
    tifffile.imwrite(path, vol)
    tifffile.imwrite(seed_path, truth.astype(np.uint8))  # the whole stack's labels: plane 2's objects seed it
    command = ["segment", str(path), "--plane", "2", "--propagate", "--seed-labels", str(seed_path), "-o", str(out)]
    assert main(command) == 0
    console = propagate_through_stack(vol, 2, labels=truth[2].astype(np.uint8), segmenter=litemedsam)
    np.testing.assert_array_equal(tifffile.imread(out / "mri.tif"), console.labels)
    report = json.loads((out / "report.json").read_text())
    assert report["route"] == "seed labels"  # it said "box/point prompts", with no box or point given
    record = report["images"][0]
    assert record["mode"] == "propagated from plane 2"
    assert any("plane 2's labels seed the propagation" in w for w in record["warnings"]), record["warnings"]

    flat, cut = tmp_path / "plane.tif", tmp_path / "cut.tif"
    tifffile.imwrite(flat, vol[2])
    tifffile.imwrite(cut, truth[2, :50].astype(np.uint8))
    _, rows, cols = vol.shape
    refused = {
        "add --propagate": ["segment", str(path), "--plane", "2", "--seed-labels", str(seed_path)],
        "not both": [*command[:-2], "--box", "10", "10", "40", "40"],
        "no such file": [*command[:-4], "--seed-labels", str(tmp_path / "missing.tif")],
        "a 2D image": ["segment", str(flat), "--plane", "0", "--propagate", "--seed-labels", str(seed_path)],
        # the labels file named, and what it must be (it read 'mri.tif: seed labels of shape ...')
        f"--seed-labels {cut}: labels of shape (50, {cols}); {path} is a stack of 5 planes of {rows} x {cols} px": [
            *command[:-4],
            "--seed-labels",
            str(cut),
        ],
        # the plane the seed's objects are on: it asked for the plane 'the boxes were drawn on', and --propagate
        f"give --plane Z, the plane whose objects --seed-labels {seed_path} holds": [
            "segment",
            str(path),
            "--propagate",
            "--seed-labels",
            str(seed_path),
        ],
    }
    for why, argv in refused.items():
        capsys.readouterr()
        assert main([*argv, "-o", str(tmp_path / "refused")]) != 0, why
        assert why in capsys.readouterr().err, why


def test_a_hyperstack_whose_file_names_its_channel_axis_is_read_by_those_names(litemedsam, mri, tmp_path):
    """A 2-channel stack saved as Fiji saves it (ImageJ ZCYX) was refused as "a time-lapse of 3D stacks, axes read
    as (T=5, Z=2, ...)", against the file's own axis names; now the named channel axis is its channel axis, as with
    --channel-axis 1 (also in a pyramidal OME-TIFF, which is read channels last)."""
    vol, truth = (a[2:7] for a in mri)
    zcyx = np.stack([vol, vol.max() - vol], axis=1)  # (Z, C, Y, X): the MRI and its inverse
    imagej, pyramid = tmp_path / "hyper.tif", tmp_path / "pyramid.ome.tif"
    tifffile.imwrite(imagej, zcyx, imagej=True, metadata={"axes": "ZCYX"})
    with tifffile.TiffWriter(pyramid) as tif:
        tif.write(zcyx, subifds=1, tile=(64, 64), metadata={"axes": "ZCYX"})
        tif.write(zcyx[..., ::2, ::2], subfiletype=1, tile=(64, 64))
    seed = len(vol) // 2
    rows, cols = np.nonzero(truth[seed])
    prompt = ["--box", *map(str, (cols.min(), rows.min(), cols.max(), rows.max())), "--plane", str(seed)]
    runs = {
        "named": (imagej, []),
        "explicit": (imagej, ["--channel-axis", "1"]),
        "pyramid": (pyramid, []),
    }
    labels = {}
    for run, (path, options) in runs.items():
        out = tmp_path / run
        assert main(["segment", str(path), "-o", str(out), *prompt, "--propagate", *options]) == 0
        labels[run] = tifffile.imread(out / f"{path.name.split('.')[0]}.tif")
    assert labels["named"].shape == truth.shape and dice(labels["named"] > 0, truth) > 0.7
    assert np.array_equal(labels["named"], labels["explicit"]) and np.array_equal(labels["named"], labels["pyramid"])
    stack, _ = as_stack(read_image(imagej), name="hyper.tif", axes="zcyx")  # as `embed` reads it
    assert stack.shape == (*truth.shape, 2)


def test_a_fiji_composite_is_a_2d_image_with_channels(litemedsam, shared_data, tmp_path):
    """Fiji saves a 2-channel image as (C, Y, X) with its axes named: segment called it "a stack of 2 planes; give
    --plane Z" and oneshot refused it as a reference ("3D array ... (Z or T=2, Y, X)"); now its named channel axis
    is read as its channels, as --channel-axis 0 reads them, and a given --channel-axis still counts in the file's
    order."""
    name = "0114f484a16c152baa2d82fdd43740880a762c93f436c8988ac461c5c9dbe7d5"
    gray = read_image(shared_data / "nuclei_dsb2018" / "images" / f"{name}.png")[..., 0]
    composite = tmp_path / "composite.tif"
    tifffile.imwrite(composite, np.stack([gray, 255 - gray]), imagej=True, metadata={"axes": "CYX"})
    box = ["--box", "123", "134", "139", "153"]
    labels = {}
    for run, options in {"named": [], "explicit": ["--channel-axis", "0"]}.items():
        out = tmp_path / run
        assert main(["segment", str(composite), "-o", str(out), *box, *options]) == 0
        labels[run] = tifffile.imread(out / "composite.tif")
    assert labels["named"].shape == gray.shape and labels["named"].any()
    assert np.array_equal(labels["named"], labels["explicit"])
    mask = shared_data / "nuclei_dsb2018" / "labels" / f"{name}.tif"
    args = ["oneshot", str(composite), "--reference", str(composite), "--reference-mask", str(mask)]
    assert main([*args, "-o", str(tmp_path / "oneshot")]) == 0


def test_a_stack_saved_with_leading_axes_of_one_value_is_the_stack(litemedsam, mri, tmp_path):
    """(1, Z, Y, X) and (1, 1, Z, Y, X) files (a time point and a channel of one value, as scripts and converters
    save a stack) were refused as "a time-lapse of 3D stacks, axes read as (T=1, Z=5, ...)" that said to split
    time points (T > 1); they are the stack, and a given channel axis still points at its axis."""
    vol, truth = (a[2:7] for a in mri)
    assert as_stack(vol[None])[0].shape == vol.shape and as_stack(vol[None, None])[0].shape == vol.shape
    rgb = np.repeat(vol[..., None], 3, axis=-1)
    assert as_stack(rgb[None, None])[0].shape == rgb.shape
    channels_first = np.ascontiguousarray(np.moveaxis(rgb, -1, 1))[None]  # (1, Z, C, Y, X)
    assert as_stack(channels_first, channel_axis=2)[0].shape == rgb.shape
    assert as_stack(channels_first, channel_axis=-3)[0].shape == rgb.shape
    path = tmp_path / "tczyx.tif"
    tifffile.imwrite(path, vol[None, None])
    seed = len(vol) // 2
    rows, cols = np.nonzero(truth[seed])
    box = ["--box", *map(str, (cols.min(), rows.min(), cols.max(), rows.max())), "--plane", str(seed)]
    assert main(["segment", str(path), "-o", str(tmp_path / "out"), *box, "--propagate"]) == 0
    labels = tifffile.imread(tmp_path / "out" / "tczyx.tif")
    assert labels.shape == truth.shape and dice(labels > 0, truth) > 0.7


def test_oneshot_on_a_stack_by_the_cli_and_the_widgets_worker(litemedsam, tmp_path, monkeypatch):
    """One-shot instances (reference: another DSB image) on every plane of a nuclei stack, ids linked in 3D, by the
    CLI and then by the One-shot widget's worker, which reads the CLI's embeddings from the disk cache and gives the
    CLI's labels. The planes share one object size, so the first plane (caps of nuclei) is segmented at the middle
    plane's scale (measured on its own, its size came out 0.37x and F1 0.11)."""
    from napari_promptseg._widgets.oneshot import run_oneshot
    from napari_promptseg.models import embedding_cache

    stack, truth = nuclei_stack(planes=3)
    (image, _, _), (reference_labels, _, _) = nuclei_for_text()
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    tifffile.imwrite(tmp_path / "reference.tif", image)
    tifffile.imwrite(tmp_path / "reference_labels.tif", reference_labels)
    out, cache = tmp_path / "out", tmp_path / "cache"
    reference = ["--reference", str(tmp_path / "reference.tif")]
    reference += ["--reference-mask", str(tmp_path / "reference_labels.tif")]
    outputs = ["-o", str(out), "--overlay", "--cache", str(cache)]
    assert main(["oneshot", str(tmp_path / "stack.tif"), *reference, *outputs]) == 0
    labels = tifffile.imread(out / "stack.tif")
    assert labels.shape == stack.shape
    assert match_instances(labels, truth)["f1"] > 0.5
    record = json.loads((out / "report.json").read_text())["images"][0]
    assert record["mode"] == "plane by plane, ids linked across planes" and record["planes"] == 3
    assert (out / "stack_overlay.png").is_file()

    litemedsam.cache.clear()  # the worker's embeddings come from the disk cache the CLI filled
    monkeypatch.setenv(embedding_cache.CACHE_ENV, str(cache))
    disk = embedding_cache.active()
    result = run_oneshot(
        image,
        reference_labels,
        list(stack),
        [f"plane {z}" for z in range(len(stack))],
        stacked=True,
        strategy="auto",
        instances=None,
        segmenter=litemedsam,  # the task's (the widget loads it once per run)
        progress=lambda fraction, message: None,
        cancel=lambda: False,
    )
    assert disk.hits > 0 and disk.misses == 0  # no tile embedded again
    assert len({s["object_size"] for s in result.scales}) == 1
    assert np.array_equal(np.stack(result.labels), labels)
    # the layer is a stack by the user's choice: no "read as a stack ... channel axis" caution (3 planes <= 4)
    assert not any("read as a stack" in w for w in result.warnings), result.warnings
    # ids linked across planes: a nucleus keeps its id from one plane to the next (the worker stacked each plane's
    # own ids: 7 of 68 nuclei kept theirs)
    kept = []
    for g in np.intersect1d(np.unique(truth[0]), np.unique(truth[1])):
        if g == 0:
            continue
        ids = [np.bincount(labels[z][truth[z] == g].astype(np.int64)) for z in (0, 1)]
        if all(len(c) > 1 and c[1:].max() > 0.5 * c.sum() for c in ids):  # found on both planes
            kept.append(int(np.argmax(ids[0][1:])) == int(np.argmax(ids[1][1:])))
    assert len(kept) > 10 and np.mean(kept) > 0.8, (len(kept), np.mean(kept))


def test_stacks_and_ome_zarr_through_dask_workers(litemedsam, mri, tmp_path):
    """A stack, an OME-Zarr and a stack too short for --plane on a LocalCluster: the workers write the stack's
    (Z, Y, X) labels and the OME-Zarr's labels/ group; the failed stack gets empty labels of its own (Z, Y, X) shape;
    --resume keeps the written ones (an OME-Zarr labels output is a directory). Five of the MRI planes: this test is
    about what the workers run and write; the propagation's accuracy through all nine is asserted by
    test_propagation_through_real_mri_planes."""
    from .test_bigimage import write_ome_zarr

    vol, truth = (a[2:7] for a in mri)
    seed = len(vol) // 2
    tifffile.imwrite(tmp_path / "mri.tif", vol)
    tifffile.imwrite(tmp_path / "short.tif", vol[:2], photometric="minisblack")
    write_ome_zarr(tmp_path / "plane.ome.zarr", vol[seed][None], FormatV04(), levels=2)
    rows, cols = np.nonzero(truth[seed])
    box = [str(v) for v in (cols.min(), rows.min(), cols.max(), rows.max())]
    inputs = [str(tmp_path / name) for name in ("mri.tif", "plane.ome.zarr", "short.tif")]
    out = tmp_path / "out"
    command = ["segment", *inputs, "-o", str(out), "--box", *box, "--plane", str(seed), "--propagate"]
    assert main([*command, "--scheduler", "local", "--workers", "2"]) == 0  # every input has an output
    report = json.loads((out / "report.json").read_text())
    assert report["batch"]["scheduler"] == "local"
    stack, plane, short = report["images"]
    assert stack["status"] == "ok" and dice(tifffile.imread(stack["output"]) > 0, truth) > 0.7
    assert plane["output"] == str(tmp_path / "plane.ome.zarr" / "labels" / "promptseg")
    written = np.asarray(read_image(tmp_path / "plane.ome.zarr" / "labels" / "promptseg"))
    assert dice(written > 0, truth[seed]) > 0.7
    assert short["status"] == "failed" and "outside the stack's 2 planes" in short["reason"]
    empty = tifffile.imread(short["output"])
    assert empty.shape == vol[:2].shape and not empty.any()

    assert main([*command, "--scheduler", "none", "--resume"]) == 0
    assert json.loads((out / "report.json").read_text())["batch"]["resumed"] == 2


def test_a_plane_with_nothing_to_find_leaves_the_other_planes_of_the_stack(tmp_path):
    """Plane by plane, a plane where the method answers "nothing like the reference" (NothingFoundError, e.g. a
    blank end plane) is left empty with a warning; before, that answer emptied the whole stack. The per-plane
    method here is a plain function (the plumbing under test, no model)."""
    import argparse

    from napari_promptseg.cli._stacks import _stack_record
    from napari_promptseg.errors import NothingFoundError

    stack = np.zeros((3, 16, 20), np.uint8)
    stack[1:, 4:9, 5:12] = 200

    def threshold(plane, z):
        if plane.max() == plane.min():
            raise NothingFoundError(f"plane {z}: no part of the image resembles the reference")
        return (plane > 100).astype(np.uint16)

    args = argparse.Namespace(
        channel_axis=None, plane=None, propagate=False, output=tmp_path, overlay=False, output_format="tiff"
    )
    record = _stack_record(args, tmp_path / "stack.tif", stack, threshold, segmenter=None)
    labels = tifffile.imread(record["output"])
    assert not labels[0].any() and (labels[1:] > 0).sum() == 2 * 5 * 7
    assert record["objects"] == 1 and any("nothing like the prompt on plane(s) 0" in w for w in record["warnings"])


def test_a_plane_segmented_alone_records_its_working_scale(litemedsam, tmp_path):
    """`segment STACK --plane Z --box ...` wrote no working_scale (nor scores) in report.json, where the same boxes
    on a 2D image, or propagated from that plane, say the scale they were decoded at: a user could not tell from
    the report whether the plane was tiled at the boxes' size or at --object-size."""
    from skimage import data as skdata

    plane = skdata.coins()[:128, :128]
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.stack([plane, plane]))
    out = tmp_path / "out"
    args = ["segment", str(path), "--plane", "1", "--box", "10", "10", "60", "60", "-o", str(out)]
    assert main([*args, "--object-size", "40", "--scheduler", "none"]) == 0
    record = json.loads((out / "report.json").read_text())["images"][0]
    assert record["mode"] == "plane 1 only"
    assert record["working_scale"]["source"] == "object size" and record["working_scale"]["object_size"] == 40
    assert list(record["scores"]) == ["1"] and 0 < record["scores"]["1"] <= 1


def test_a_plane_segmented_alone_keeps_its_warnings(tmp_path, capsys):
    """`segment STACK --plane Z` returned the plane's labels only, so its warnings (here: a box over a blank area)
    never reached report.json. The warning names the stack and the plane once each: it read "plane 1: STACK plane 1:
    box 1 ..." (and "warning: STACK: plane 1: STACK plane 1: ..." on the terminal)."""
    from skimage import data as skdata

    plane = skdata.coins()[:128, :128].copy()
    plane[:, 96:] = 0
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.stack([plane, plane]))
    out = tmp_path / "out"
    box = ["--box", "100", "10", "120", "40", "--box", "10", "10", "60", "60"]
    assert main(["segment", str(path), "--plane", "1", *box, "-o", str(out), "--scheduler", "none"]) == 0
    record = json.loads((out / "report.json").read_text())["images"][0]
    blank = "box 1 covers pixels of one value: nothing to segment there (left empty)"
    assert f"{path}: plane 1: {blank}" in record["warnings"], record["warnings"]
    assert not any(w.count("plane 1") > 1 for w in record["warnings"]), record["warnings"]
    assert f"warning: {path}: plane 1: {blank}" in capsys.readouterr().err.splitlines()
    assert record["objects"] == 1
    # propagated from that plane: the seed plane's warning, named once too
    assert main(["segment", str(path), "--plane", "1", *box, "--propagate", "-o", str(out)]) == 0
    record = json.loads((out / "report.json").read_text())["images"][0]
    assert f"{path}: plane 1: {blank}" in record["warnings"], record["warnings"]
    assert not any(w.count("plane 1") > 1 for w in record["warnings"]), record["warnings"]
    # --stop-iou without --propagate does nothing on a stack: said, as on a 2D image (it was silently ignored)
    assert main(["segment", str(path), "--plane", "1", *box, "--stop-iou", "0.3", "-o", str(out)]) == 0
    record = json.loads((out / "report.json").read_text())["images"][0]
    assert any("--stop-iou ignored" in w for w in record["warnings"]), record["warnings"]


def test_plane_by_plane_warnings_name_their_plane_once(litemedsam):
    """segment_stack prefixed "plane Z: " to a method's warning that named the plane itself, as the CLI's and the
    one-shot widget's methods do (their name for a plane is "STACK plane Z"): "plane 2: stack.tif plane 2: box 1 ...".
    Now the stack's name, then the plane: "stack.tif: plane 2: box 1 ..."; a method naming the stack, or nothing,
    gets the plane after the name, or alone."""
    from skimage import data as skdata

    from napari_promptseg.methods.interactive import segment_prompts

    plane = skdata.coins()[:128, :128]
    stack = np.stack([plane] * 5)  # 5 planes: no caution that the first axis might hold channels
    stack[2, :, 96:] = 0  # box 1 lies on pixels of one value on plane 2 only
    boxes = [(100, 10, 120, 40), (10, 10, 60, 60)]
    blank = "box 1 covers pixels of one value: nothing to segment there (left empty)"
    for method_name, expected in [
        (
            "stack.tif plane {z}",
            f"stack.tif: plane 2: {blank}",
        ),  # the CLI's naming: it read "plane 2: stack.tif plane 2"
        ("stack.tif", f"stack.tif: plane 2: {blank}"),  # the stack's own name
        ("image", f"plane 2: image: {blank}"),  # another name: the plane goes first
    ]:

        def method(image, z, method_name=method_name):
            return segment_prompts(image, litemedsam, boxes=boxes, name=method_name.format(z=z))

        assert segment_stack(stack, method, name="stack.tif").warnings == [expected]


def test_a_warning_planes_give_alike_is_said_once_listing_them(litemedsam):
    """The working-scale cap warning (objects too small to enlarge enough) came once per plane, the same words on
    every plane of a stack; now once, listing the planes ("planes 1, 3-5"). Warnings that differ stay apart."""
    from skimage import data as skdata

    from napari_promptseg.methods.interactive import segment_prompts

    plane = skdata.coins()[:128, :128]
    stack = np.stack([plane] * 6)
    stack[4, 15:30, 15:30] = 0  # on plane 4 the box also lies on pixels of one value

    def method(image, z):
        box = (20, 20, 24, 24) if z in (1, 3, 4, 5) else (10, 10, 60, 60)  # objects of 4 px: capped
        return segment_prompts(image, litemedsam, boxes=[box], name=f"stack.tif plane {z}")

    warnings = segment_stack(stack, method, name="stack.tif").warnings
    assert len(warnings) == 2, warnings
    capped, blank = warnings
    assert capped.startswith(
        "stack.tif: planes 1, 3-5: objects of 4 px (boxes) ask for 5.1x enlargement, above the cap"
    )
    assert blank == "stack.tif: plane 4: box 1 covers pixels of one value: nothing to segment there (left empty)"


def test_any_2d_methods_output_is_linked_masks_negatives_lists_and_zarr(tmp_path):
    """A bool mask, a float mask, labels with negative values, a list of planes and a (Z, C, Y, X) zarr array all go
    through segment_stack (they crashed in the linking, or on .shape/.transpose); a wrong shape is a clear error."""
    import zarr
    from scipy import ndimage

    stack, truth = nuclei_stack()
    threshold = threshold_otsu(stack)
    reference = segment_stack(stack, lambda plane, z: ndimage.label(plane > threshold)[0])  # integer labels
    assert match_instances(reference.labels, truth)["f1"] > 0.6
    masks = {
        "bool": lambda plane, z: plane > threshold,
        "float": lambda plane, z: (plane > threshold).astype(np.float32),
        "negative background": lambda plane, z: np.where(plane > threshold, ndimage.label(plane > threshold)[0], -1),
    }
    for what, method in masks.items():
        result = segment_stack(stack, method)
        assert np.array_equal(result.labels, reference.labels), what
    as_list = segment_stack(list(stack), lambda plane, z: plane > threshold)
    assert np.array_equal(as_list.labels, reference.labels)

    two_channels = np.stack([stack, 255 - stack], axis=1)  # (Z, C, Y, X)
    store = zarr.open_array(tmp_path / "zc.zarr", mode="w", shape=two_channels.shape, dtype=two_channels.dtype)
    store[:] = two_channels
    seen = []

    def first_channel(plane, z):
        seen.append(plane.shape)
        return plane[..., 0] > threshold

    on_zarr = segment_stack(store, first_channel, channel_axis=1)
    assert seen[0] == (*stack.shape[1:], 2) and np.array_equal(on_zarr.labels, reference.labels)

    with pytest.raises(PromptsegError, match=r"plane 0 gave labels of shape \(10, 10\)"):
        segment_stack(stack, lambda plane, z: np.zeros((10, 10), np.uint16))
    with pytest.raises(PromptsegError, match="fractional"):
        segment_stack(stack, lambda plane, z: plane * 1.5 + 0.25)


def test_nan_on_one_plane_is_refused_before_any_plane_is_segmented():
    """A NaN corner on the last plane stopped a run after every other plane had been computed, losing them."""
    stack, _ = nuclei_stack()
    stack = stack.astype(np.float32)
    stack[4, :3, :3] = np.nan
    calls = []
    with pytest.raises(PromptsegError, match=r"NaN or infinite values on plane\(s\) 4 of 5"):
        segment_stack(stack, lambda plane, z: calls.append(z) or plane > 100)
    assert not calls

    class Untouchable:  # the check comes before the segmenter is used
        points_reliable = False

    with pytest.raises(PromptsegError, match=r"plane\(s\) 4 of 5"):
        propagate_through_stack(stack, 1, boxes=[(0, 0, 20, 20)], segmenter=Untouchable())


def test_propagation_refuses_a_non_integer_plane_and_reports_nothing_on_the_seed_plane():
    stack, truth = nuclei_stack()

    class Untouchable:
        points_reliable = False

    with pytest.raises(PromptsegError, match="whole number"):
        propagate_through_stack(list(stack), 2.0, labels=truth[2], segmenter=Untouchable())
    with pytest.raises(NothingFoundError, match="seed plane 2 has no object: its labels are empty"):
        propagate_through_stack(stack, 2, labels=np.zeros(stack.shape[1:], bool), segmenter=Untouchable())
    # labels a method made from a prompt, with what it said about the plane (the CLI's text and one-shot seeds)
    said = ["stack: plane 2: nothing found for 'nucleus'"]
    blank = np.zeros(stack.shape[1:], bool)
    with pytest.raises(NothingFoundError, match=r"plane 2 has no object: the prompts found nothing there \(nothing fo"):
        propagate_through_stack(stack, 2, labels=blank, seed_warnings=said, segmenter=Untouchable())
    one = propagate_through_stack(stack[2:3], 0, labels=truth[2] == 1, seed_warnings=said, segmenter=Untouchable())
    assert one.objects == 1 and said[0] in one.warnings  # with objects, they are the result's warnings


def test_a_stop_reason_never_contradicts_its_threshold():
    from napari_promptseg.methods.volume.propagation import _stop_reason

    previous = np.zeros((100, 100), bool)
    previous[:, :50] = True  # 5000 px
    mask = np.zeros_like(previous)
    mask[:, 1:50] = True  # 4900 px inside: IoU 0.98
    assert _stop_reason(previous, mask, 0.9, 5000, 0.98001, 0.5) == "IoU with the previous plane 0.980 < 0.98001"
    mask[:, 50:52] = True  # 5100 px, 4900 shared: IoU 4900 / 5200 = 0.9423
    reason = _stop_reason(previous, mask, 0.9, 5000, 0.9424, 0.5)
    assert reason == "IoU with the previous plane 0.942 < 0.9424"
    assert _stop_reason(previous, previous, 0.4999, 5000, 0.5, 0.5) == "score 0.499 < 0.5"


def test_seed_labels_report_the_seed_methods_scores_or_the_decoded_planes_only(litemedsam, mri):
    """Objects seeded from labels reported 1.0 each, even one that ended at once; now the seed method's score
    counts where it is known, else only the decoded planes do, and an object decoded on no other plane has None.
    Five planes: how the scores are counted does not depend on how many there are."""
    vol, truth = (a[2:7] for a in mri)
    seed = truth[2].astype(np.uint16)
    seed[2:8, 2:8] = 2  # a square of empty background (outside the head): nothing to carry
    result = propagate_through_stack(vol, 2, labels=seed, segmenter=litemedsam, name="mri")
    assert result.extents[2] == (2, 2) and result.scores[2] is None
    assert result.extents[1] == (0, 4) and 0.5 < result.scores[1] < 1.0  # decoder scores only
    given = propagate_through_stack(vol, 2, labels=seed, seed_scores={1: 0.7, 2: 0.3}, segmenter=litemedsam)
    assert given.scores[2] == pytest.approx(0.3)
    assert given.scores[1] == pytest.approx((0.7 + result.scores[1] * 4) / 5, abs=1e-4)


def test_cli_overlay_reads_channels_as_the_run_did_and_2d_ignored_options_are_said(litemedsam, tmp_path):
    """--overlay ignored --channel-axis/--channels: the overlay of a (Z, C, Y, X) stack or a channel-first 2D image
    failed after the labels were computed, and the batch then replaced them by empty labels."""
    stack, truth = nuclei_stack()
    rows, cols = np.nonzero(truth[2] == np.bincount(truth[2].ravel())[1:].argmax() + 1)
    box = [str(v) for v in (cols.min(), rows.min(), cols.max(), rows.max())]
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "zc.tif", np.stack([stack, 255 - stack], axis=1))  # (Z, C, Y, X)
    cyx = np.stack([stack[2], 255 - stack[2], stack[2] // 2])
    tifffile.imwrite(folder / "cyx.tif", cyx, photometric="minisblack")  # (C, Y, X)
    out = tmp_path / "out"
    options = ["--box", *box, "--overlay", "-o", str(out), "--scheduler", "none", "--channels", "0"]
    assert main(["segment", str(folder / "zc.tif"), "--channel-axis", "1", "--plane", "2", *options]) == 0
    record = json.loads((out / "report.json").read_text())["images"][0]
    assert record["status"] == "ok" and (out / "zc_overlay.png").is_file()
    labels = tifffile.imread(out / "zc.tif")
    assert labels.shape == stack.shape and labels[2].any()
    report = json.loads((out / "report.json").read_text())
    assert report["parameters"]["labels_name"] == "promptseg"

    command = ["segment", str(folder / "cyx.tif"), "--channel-axis", "0", "--plane", "3", "--propagate", *options]
    assert main(command) == 0
    record = json.loads((out / "report.json").read_text())["images"][0]
    assert record["status"] == "ok" and (out / "cyx_overlay.png").is_file()
    assert dice(tifffile.imread(out / "cyx.tif") > 0, truth[2] == truth[2][rows[0], cols[0]]) > 0.7
    assert any("--plane, --propagate ignored" in w for w in record["warnings"]), record["warnings"]


def test_an_overlay_that_fails_keeps_the_labels(tmp_path, monkeypatch):
    import argparse

    import napari_promptseg.io as io
    from napari_promptseg.cli._stacks import _stack_record

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(io, "write_overlay", broken)
    stack, _ = nuclei_stack()
    args = argparse.Namespace(
        channel_axis=None, channels=None, plane=None, propagate=False, output=tmp_path, overlay=True,
        output_format="tiff",
    )  # fmt: skip
    record = _stack_record(args, tmp_path / "stack.tif", stack, lambda plane, z: plane > 100, segmenter=None)
    assert record["objects"] > 5 and tifffile.imread(record["output"]).any()
    assert "overlay" not in record and "overlay not written: disk full" in record["warnings"]


def test_nothing_on_the_seed_plane_is_an_empty_result_not_an_error(litemedsam, tmp_path, capsys):
    """Propagating from a blank seed plane exited 2 with no output; README promises empty labels, status empty. Its
    reason is the prompts' (in the CLI, report.json and the Python function): the record said only 'the seed plane 2
    has no object', and the box's own word (it covers pixels of one value) was dropped."""
    stack, _ = nuclei_stack()
    stack[2] = 0
    why = "the prompts found nothing there (box 1 covers pixels of one value"
    with pytest.raises(NothingFoundError, match=rf"seed plane 2 has no object: {re.escape(why)}"):
        propagate_through_stack(stack, 2, boxes=[(20, 20, 60, 60)], segmenter=litemedsam, name="blank")
    tifffile.imwrite(tmp_path / "blank.tif", stack)
    out = tmp_path / "out"
    command = ["segment", str(tmp_path / "blank.tif"), "--plane", "2", "--propagate", "--box", "20", "20", "60", "60"]
    assert main([*command, "-o", str(out), "--scheduler", "none"]) == 0
    record = json.loads((out / "report.json").read_text())["images"][0]
    assert record["status"] == "empty" and f"seed plane 2 has no object: {why}" in record["reason"]
    captured = capsys.readouterr()
    assert why in captured.out + captured.err
    labels = tifffile.imread(out / "blank.tif")
    assert labels.shape == stack.shape and not labels.any()


def test_nothing_on_the_seed_plane_names_the_file_once(tmp_path):
    """A seed method finding nothing on the seed plane was reported as 'x.tif: nothing to propagate from the seed
    plane 2: x.tif plane 2: resembles nothing ...': the file and plane named twice. Now once."""
    import argparse

    from napari_promptseg.cli._stacks import _stack_record

    stack, _ = nuclei_stack()
    path = tmp_path / "stack.tif"

    def nothing_found(plane, z: int):  # what the one-shot and text seed methods raise, naming their plane
        raise NothingFoundError(f"{path} plane {z}: resembles nothing of the reference")

    args = argparse.Namespace(
        channel_axis=None, channels=None, plane=2, propagate=True, output=tmp_path, overlay=False,
        output_format="tiff",
    )  # fmt: skip
    with pytest.raises(NothingFoundError) as raised:
        _stack_record(args, path, stack, nothing_found, segmenter=None)
    message = str(raised.value)
    assert message == f"{path}: nothing to propagate from the seed plane 2: resembles nothing of the reference"


def test_plane_scores_of_2d_results():
    from types import SimpleNamespace

    from napari_promptseg.cli._stacks import _plane_scores

    labels = np.array([[0, 1], [2, 2]], np.uint16)
    assert _plane_scores(SimpleNamespace(labels=labels, scores=np.array([0.8, 0.6]))) == pytest.approx({1: 0.8, 2: 0.6})
    assert _plane_scores(SimpleNamespace(labels=labels, score=0.4)) == {1: 0.4, 2: 0.4}
    assert _plane_scores(labels) is None


def test_a_stack_of_one_plane_needs_no_plane_and_logs_no_carriage_returns(litemedsam, tmp_path, capsys):
    """A 2D image saved as (1, Y, X) (as many acquisition programs write one plane) was refused: "a stack of 1
    planes; give --plane Z", and cautioned that its one plane might be channels. The boxes can only be on that
    plane. And the per-plane progress wrote a carriage return per plane into logs (stderr not a terminal): it
    writes a line every few seconds there now, none in a short run."""
    (image, _, _), (truth, _, _) = nuclei()
    path, flat = tmp_path / "one_plane.tif", tmp_path / "flat.tif"
    tifffile.imwrite(path, image[None])
    tifffile.imwrite(flat, image)
    box = ["40", "40", "90", "90"]
    assert main(["segment", str(path), "-o", str(tmp_path / "out"), "--box", *box]) == 0
    err = capsys.readouterr().err
    assert "channel" not in err and "\r" not in err, err
    labels = tifffile.imread(tmp_path / "out" / "one_plane.tif")
    assert main(["segment", str(flat), "-o", str(tmp_path / "out"), "--box", *box]) == 0
    as_2d = tifffile.imread(tmp_path / "out" / "flat.tif")
    assert labels.shape == (1, *image.shape[:2]) and as_2d.any() and np.array_equal(labels[0] > 0, as_2d > 0)
    assert not as_stack(np.zeros((1, 64, 64)))[1]


def test_an_ome_zarr_whose_axes_say_z_is_a_stack_without_the_channels_caution(tmp_path):
    """4 planes are read as a stack, with a caution that the first axis might hold channels; an OME-Zarr whose
    axes metadata names that axis z got the caution too. A TIFF of the same planes (no axis names) keeps it."""

    from skimage import data as skdata

    planes = np.stack([np.roll(skdata.coins()[:128, :128], 4 * z, axis=1) for z in range(4)])
    zarr_path = tmp_path / "stack_zyx.ome.zarr"
    _write_zyx_ome_zarr(zarr_path, planes)
    tifffile.imwrite(tmp_path / "stack_zyx.tif", planes, photometric="minisblack")
    box = ["--box", "10", "10", "60", "60", "--plane", "1"]
    for path in (zarr_path, tmp_path / "stack_zyx.tif"):
        out = tmp_path / f"out{path.suffix.replace('.', '_')}"
        assert main(["segment", str(path), *box, "-o", str(out), "--scheduler", "none"]) == 0
        record = json.loads((out / "report.json").read_text())["images"][0]
        assert record["objects"] >= 1
        caution = [w for w in record["warnings"] if "read as a stack of 4 planes" in w]
        assert len(caution) == (path.suffix == ".tif"), record["warnings"]


def test_propagated_and_linked_stacks_whose_files_name_z_get_no_channels_caution(litemedsam, tmp_path):
    """Bug hunt 4: the caution that a 4-plane stack's first axis might hold channels (pass --channel-axis 0) was
    dropped for an OME-Zarr whose axes say z only when one plane was segmented: --propagate and plane by plane
    (segment_stack) cautioned again, advising to read the z planes as channels. An OME-TIFF or ImageJ TIFF whose
    axes say Z is planes by its word too; a TIFF without axis names keeps the caution."""

    from skimage import data as skdata

    planes = np.stack([np.roll(skdata.coins()[:128, :128], 2 * z, axis=1) for z in range(4)])
    zarr_path = tmp_path / "stack.ome.zarr"
    _write_zyx_ome_zarr(zarr_path, planes)
    tifffile.imwrite(tmp_path / "stack.ome.tif", planes, ome=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "imagej.tif", planes, imagej=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "plain.tif", planes, photometric="minisblack")
    box = ["--box", "10", "10", "60", "60", "--plane", "1", "--propagate", "--output-format", "tiff"]
    for name in ("stack.ome.zarr", "stack.ome.tif", "imagej.tif", "plain.tif"):
        out = tmp_path / f"out_{name.replace('.', '_')}"
        assert main(["segment", str(tmp_path / name), *box, "-o", str(out), "--scheduler", "none"]) == 0
        record = json.loads((out / "report.json").read_text())["images"][0]
        assert record["objects"] == 1 and record["mode"] == "propagated from plane 1"
        caution = [w for w in record["warnings"] if "read as a stack of 4 planes" in w]
        assert len(caution) == (name == "plain.tif"), (name, record["warnings"])
    # plane by plane: the Python function takes the file's axis names too
    result = segment_stack(read_image(zarr_path), lambda plane, z: plane > plane.mean(), axes="zyx")
    assert result.objects and not [w for w in result.warnings if "read as a stack" in w]


def test_propagation_takes_the_clicks_as_the_plane_does(litemedsam, mri, tmp_path):
    """`segment STACK --plane Z --propagate --box ... --point X Y` dropped the clicks without a word: the seed plane
    was not what `--plane Z` alone gave, and a click outside every box (an object of its own) was not carried. The
    Python function takes the clicks as segment_prompts does."""
    vol, truth = (a[2:7] for a in mri)
    path = tmp_path / "mri.tif"
    tifffile.imwrite(path, vol)
    rows, cols = np.nonzero(truth[2])
    box = [str(v) for v in (cols.min(), rows.min(), cols.max(), rows.max())]
    click = ["--point", "126", "78"]  # the lateral ventricle, outside the box: an object of its own
    prompts = ["segment", str(path), "--plane", "2", "--box", *box, *click, "--scheduler", "none"]
    assert main([*prompts, "-o", str(tmp_path / "plane")]) == 0
    on_the_plane = tifffile.imread(tmp_path / "plane" / "mri.tif")[2]
    assert set(np.unique(on_the_plane)) == {0, 1, 2}
    assert main([*prompts, "--propagate", "-o", str(tmp_path / "out")]) == 0
    labels = tifffile.imread(tmp_path / "out" / "mri.tif")
    np.testing.assert_array_equal(labels[2], on_the_plane)
    record = json.loads((tmp_path / "out" / "report.json").read_text())["images"][0]
    assert record["objects"] == 2 and set(record["stops"]) == {"1", "2"}
    assert dice(labels == 1, truth) > 0.7
    # a click alone is a prompt to carry too (it was refused: "give --box")
    assert main(["segment", str(path), "--plane", "2", *click, "--propagate", "-o", str(tmp_path / "click")]) == 0
    assert json.loads((tmp_path / "click" / "report.json").read_text())["images"][0]["objects"] == 1

    result = propagate_through_stack(
        vol, 2, boxes=[[float(v) for v in box]], negative_points=[(126, 78)], segmenter=litemedsam
    )
    assert result.labels[2][78, 126] == 0 and set(result.extents) == {1}


def test_find_all_seeds_are_carried_at_the_scale_they_were_found_at(litemedsam, tmp_path):
    """`segment STACK --plane Z --find-all --propagate`: the found nuclei were carried at a scale taken from their
    masks (tighter than the boxes that set find-all's scale), so many stopped at the first step (F1 0.42, 0.69 at
    the seed's scale), and report.json said working_scale null."""
    stack, truth = nuclei_stack()
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    boxes = ["--box", "17", "113", "40", "133", "--box", "104", "111", "124", "135", "--box", "60", "170", "79", "191"]
    command = ["segment", str(tmp_path / "stack.tif"), "--plane", "2", "--find-all", *boxes, "--scheduler", "none"]
    assert main([*command, "--propagate", "-o", str(tmp_path / "out")]) == 0
    record = json.loads((tmp_path / "out" / "report.json").read_text())["images"][0]
    assert record["working_scale"]["source"] == "boxes" and record["working_scale"]["object_size"] > 20
    assert match_instances(tifffile.imread(tmp_path / "out" / "stack.tif"), truth)["f1"] > 0.6


def test_seed_labels_keep_their_ids_large_or_sparse(litemedsam, mri):
    """A seed label image's ids are the result's: an id above 2**32 wrapped onto another object's id (two objects
    merged under id 5), and a sparse id (3 * 10**7) cost seconds in the extents' slot-per-id search."""
    import time

    vol, truth = (a[3:6] for a in mri)
    seed = np.zeros(truth.shape[1:], np.int64)
    seed[truth[1]] = 3 * 10**7
    t0 = time.perf_counter()
    result = propagate_through_stack(vol, 1, labels=seed, segmenter=litemedsam)
    assert set(result.extents) == {3 * 10**7} and result.extents[3 * 10**7] == (0, 2)
    assert set(np.unique(result.labels)) == {0, 3 * 10**7}
    assert time.perf_counter() - t0 < 30
    seed[:8, :8] = 5
    seed[10:18, 10:18] = 2**32 + 5
    with pytest.raises(PromptsegError, match=r"seed labels hold id 4294967301, above the largest id"):
        propagate_through_stack(vol, 1, labels=seed, segmenter=litemedsam)


def _write_zyx_ome_zarr(path, planes: np.ndarray) -> None:
    """A (Z, Y, X) OME-Zarr (NGFF 0.4) whose axes say z, one chunk per plane."""
    import warnings as python_warnings

    import zarr
    from ome_zarr.writer import write_image

    with python_warnings.catch_warnings():
        python_warnings.simplefilter("ignore", DeprecationWarning)
        root = zarr.open_group(str(path), mode="w", zarr_format=2)
        write_image(planes, root, axes="zyx", fmt=FormatV04(), storage_options={"chunks": (1, 128, 128)})


class _TakesClicks:
    """The real LiteMedSAM, said to take clicks beside boxes (``points_reliable``), as SAM's checkpoints do: a
    propagation then prompts each carried object with its box and its mask's most interior point."""

    points_reliable = True

    def __init__(self, segmenter) -> None:
        self._segmenter = segmenter

    def __getattr__(self, name: str):
        return getattr(self._segmenter, name)


def test_each_carried_object_is_prompted_with_its_own_interior_point(litemedsam, shared_data, monkeypatch):
    """A carried object's interior point went to the smallest box holding it (segment_prompts' rule for a user's
    clicks): the left cortex's point, inside the box of the white matter it wraps, refined the white matter, and
    the cortex was decoded without one (29 of 97 objects of the MRI's FreeSurfer planes). Each object is prompted
    with its own box and point."""
    from napari_promptseg.methods import interactive

    scan = np.load(shared_data / "brain_mri_1vol" / "test_scan.npz")
    vol, seg = scan["vol"][99:102].astype(np.float32), scan["seg"][99:102]
    seed = np.where(np.isin(seg[1], (2, 3)), seg[1], 0)  # left white matter (2) and the cortex around it (3)
    decoded, real = [], interactive.predict_objects

    def recording(segmenter, embedding, objects):
        decoded.append([(o.box, list(o.points), list(o.labels)) for o in objects])
        return real(segmenter, embedding, objects)

    monkeypatch.setattr(interactive, "predict_objects", recording)
    result = propagate_through_stack(vol, 1, labels=seed, segmenter=_TakesClicks(litemedsam), axes="zyx")
    assert len(decoded) >= 2  # the planes above and below
    for objects in decoded:
        assert [labels for _, _, labels in objects] == [[1]] * len(objects), objects  # one click each
        for (x0, y0, x1, y1), ((x, y),), _ in objects:
            assert x0 <= x <= x1 and y0 <= y <= y1  # in its own box
    assert set(result.extents) == {2, 3}


def test_an_object_that_ends_on_a_plane_takes_no_pixels_from_the_others_there(litemedsam, shared_data):
    """Objects carried together are decoded together, and where their masks overlap the more confident one takes
    the pixel: the left cortex, whose box gives a blob over the hemisphere on the next plane (it ends there, IoU
    0.13), took the thalamus' pixels there first, and the thalamus ended too (IoU 0.485; Dice 0.61 where alone it
    reaches 0.88). The others are decoded again without an object that ends: the thalamus is carried as alone."""
    scan = np.load(shared_data / "brain_mri_1vol" / "test_scan.npz")
    z = int(np.argmax((scan["seg"] == THALAMUS).sum((1, 2))))
    vol, seg = scan["vol"][z - 2 : z + 3].astype(np.float32), scan["seg"][z - 2 : z + 3].astype(np.int32)
    seed = np.where(np.isin(seg[2], (3, THALAMUS)), seg[2], 0)  # the left cortex (3) and thalamus
    # one working scale for both (by default it is the seed boxes', the cortex's among them)
    together = propagate_through_stack(vol, 2, labels=seed, segmenter=litemedsam, object_size=30, axes="zyx")
    alone = np.where(seed == THALAMUS, seed, 0)
    alone = propagate_through_stack(vol, 2, labels=alone, segmenter=litemedsam, object_size=30, axes="zyx")
    assert together.extents[3] == (2, 2), together.stops  # the cortex ends at once, both ways
    np.testing.assert_array_equal(together.labels == THALAMUS, alone.labels == THALAMUS)
    assert together.extents[THALAMUS] == alone.extents[THALAMUS] == (0, 4)
