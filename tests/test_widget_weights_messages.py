"""What a widget's user is told about weights names the widget's own fields, not the CLI's options: a segmenter's
missing weights (a model chosen in the 'model' box) and a checkpoint of another model given in its 'weights file'
field. The widgets' segmenter task (task_segmenter) is the code path every segmenter widget runs."""

from __future__ import annotations

import pytest

from napari_promptseg.errors import WeightsError


def _load_in_a_widget(model: str, weights: str | None = None):
    from napari_promptseg._widgets._common import task_segmenter

    return task_segmenter(lambda fraction, message: None, lambda: False, model, device="cpu", weights=weights)


def test_a_widgets_missing_segmenter_weights_are_told_with_its_weights_file_field():
    """SAM ViT-B chosen in the Interactive widget's model box, offline and not in the cache: the notification's
    details said 'pass the path with --weights', an option no widget has."""
    with pytest.raises(WeightsError) as info:
        _load_in_a_widget("sam_vit_b")
    assert "pass the path with the 'weights file' field" in info.value.details, info.value.details
    assert "--weights" not in str(info.value)


def test_a_checkpoint_of_another_model_in_a_widget_names_the_model_box(tmp_path):
    """The bundled LiteMedSAM file given as MobileSAM's weights file: the message said 'load it with --model
    litemedsam' to a widget's user."""
    from napari_promptseg.models.registry import resolve_weights

    with pytest.raises(WeightsError) as info:
        _load_in_a_widget("mobile_sam", str(resolve_weights("litemedsam")))
    assert str(info.value).endswith(
        ". It is a litemedsam checkpoint: load it as model litemedsam (--model litemedsam, or a widget's 'model' box)"
    )


def test_the_model_box_says_a_stopped_download_of_a_segmenter(qtbot):
    """A segmenter whose download had stopped read '(weights missing)' in the widgets' model box, as if nothing had
    been fetched (and with the first fix, '(weights partial)'): it reads that its download stopped; a run resumes it."""
    from napari_promptseg._widgets._common.controls import SegmenterBox
    from napari_promptseg.models import get_card, registry

    card = get_card("sam_vit_b")
    partial = registry.cache_dir() / f"{card.filename}.part"
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(b"\0" * 1000)
    box = SegmenterBox()
    qtbot.addWidget(box)
    assert box.itemText(box.findData(card.name)) == "sam_vit_b (download stopped: a run resumes it)"
    partial.unlink()
    box.refresh_labels()
    assert box.itemText(box.findData(card.name)) == "sam_vit_b (weights missing)"
