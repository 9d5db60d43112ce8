"""CLIPSeg text -> heatmap through ``transformers`` (CIDAS/clipseg-rd64-refined, or a medvlsm-style fine-tune).

Any local directory in the transformers layout loads: ``config.json`` (model_type ``clipseg``), the weights
(``model.safetensors`` or ``pytorch_model.bin``), the image processor config and the CLIP BPE tokenizer files.
medvlsm fine-tunes CLIPSeg's decoder with the same architecture, so its checkpoints load the same way.

The processor squashes the image to its square input (352 px, aspect ratio not kept) with ImageNet mean/std; the
decoder's logits come back at that size and are resized to the original grid here, then passed through a sigmoid.
Several prompts for one image share one vision-encoder pass: only the text encoder and the light decoder see the
batch of prompts.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import PromptsegError, WeightsError
from .checkpoint import PROCESSOR_FILES, WEIGHT_FILES, check_model_directory, hub_load_errors
from .preprocessing import Normalization, as_channels_last, in_memory, to_rgb_uint8
from .text_segmenter import refuse_other_channels
from .tokens import CutText, cut_text

#: what a CLIPSeg directory needs besides config.json
CLIPSEG_PARTS = (
    ("the weights (model.safetensors or pytorch_model.bin)", [[f] for f in WEIGHT_FILES]),
    ("preprocessor_config.json", [[f] for f in PROCESSOR_FILES]),
    (
        "the CLIP tokenizer (vocab.json + merges.txt, or tokenizer.json)",
        [["vocab.json", "merges.txt"], ["tokenizer.json"]],
    ),
)


class ClipSegHeatmapper:
    """Text prompt(s) -> per-pixel probability on the original image grid (implements ``TextHeatmapper``)."""

    def __init__(self, model, processor, *, device: str | torch.device = "cpu", name: str = "clipseg") -> None:
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = torch.device(device)
        self.name = name
        size = processor.image_processor.size  # {"height", "width"} (a SizeDict in transformers 5)
        #: (height, width) of the square-squashed model input; 352 x 352 for CIDAS/clipseg-rd64-refined
        self.input_size = (size, size) if isinstance(size, int) else (int(size["height"]), int(size["width"]))
        # CLIP's text encoder has 77 positions; longer prompts (medvlsm p8/p9) are cut, as in medvlsm's training
        self.max_text_length = int(model.config.text_config.max_position_embeddings)
        self._lock = threading.Lock()  # a tokenizer is not safe to share between threads (widget worker + console)
        #: a fine-tune's text_segmenter.json (load_text_segmenter sets it): the channel counts it was trained on
        self.info: dict = {}

    def cut_prompt(self, prompt: str) -> CutText | None:
        """What of ``prompt`` the text encoder reads when it is longer than :attr:`max_text_length` tokens, else
        None (:meth:`logits` cuts it there)."""
        with self._lock:
            return cut_text(self.processor.tokenizer, prompt, self.max_text_length)

    def heatmap(
        self,
        image: np.ndarray,
        prompt: str,
        *,
        channel_axis: int | None = None,
        channels: list[int] | None = None,
        normalize: Normalization = "auto",
        name: str = "image",
    ) -> np.ndarray:
        """(H, W) float32 probability in [0, 1] that each pixel shows what ``prompt`` names."""
        return self.heatmaps(
            image, [prompt], channel_axis=channel_axis, channels=channels, normalize=normalize, name=name
        )[0]

    def heatmaps(
        self,
        image: np.ndarray,
        prompts: Sequence[str],
        *,
        channel_axis: int | None = None,
        channels: list[int] | None = None,
        normalize: Normalization = "auto",
        name: str = "image",
    ) -> np.ndarray:
        """(P, H, W) float32 probabilities, one map per prompt; the image is encoded once for all prompts."""
        logits = self.mask_logits(
            image, prompts, channel_axis=channel_axis, channels=channels, normalize=normalize, name=name
        )
        return (1.0 / (1.0 + np.exp(-np.clip(logits, -60, 60)))).astype(np.float32)

    def mask_logits(
        self,
        image: np.ndarray,
        prompts: Sequence[str],
        *,
        channel_axis: int | None = None,
        channels: list[int] | None = None,
        normalize: Normalization = "auto",
        name: str = "image",
    ) -> np.ndarray:
        """(P, H, W) float32 logits on the original image grid (the ``TextSegmenter`` view of CLIPSeg)."""
        if isinstance(prompts, str):
            raise PromptsegError("prompts: give a list of strings (a single string is heatmap()'s job)")
        prompts = list(prompts)
        if not prompts:
            raise PromptsegError("prompts: at least one text prompt is needed")
        bad = [p for p in prompts if not isinstance(p, str)]
        if bad:
            raise PromptsegError(f"prompts must be strings, got {bad[0]!r}")
        hwc = in_memory(as_channels_last(image, channel_axis=channel_axis, channels=channels, name=name), name)
        # a fine-tune on colour answered two stains fed as red and green without a word, as a fusion model did
        refuse_other_channels(hwc.shape[-1], (self.info.get("training") or {}).get("image_channel_counts"), self, name)
        rgb = to_rgb_uint8(hwc, normalize, name)
        logits = self.logits(rgb, prompts)  # (P, s, s) in the processor's square frame
        h, w = hwc.shape[:2]
        out = np.empty((len(prompts), h, w), np.float32)
        for i in range(len(prompts)):  # one full-size map at a time bounds memory on large images
            up = F.interpolate(
                logits[i][None, None].float(),
                size=(h, w),
                mode="bilinear",
                align_corners=False,
                antialias=h < logits.shape[-2] or w < logits.shape[-1],  # shrinking must average, not alias
            )
            out[i] = up[0, 0].cpu().numpy()
        return out

    @torch.inference_mode()
    def logits(self, rgb: np.ndarray, prompts: Sequence[str]) -> torch.Tensor:
        """(P, s, s) decoder logits for an (H, W, 3) uint8 image, in the processor's input frame, on the CPU."""
        with self._lock:
            pixels = self.processor.image_processor(
                images=[rgb], return_tensors="pt", input_data_format="channels_last"
            ).pixel_values
            text = self.processor.tokenizer(
                list(prompts), padding=True, truncation=True, max_length=self.max_text_length, return_tensors="pt"
            )
        pixels = pixels.to(self.device)
        input_ids = text["input_ids"].to(self.device)
        attention_mask = text["attention_mask"].to(self.device)
        n = len(prompts)
        model = self.model
        # CLIPSegForImageSegmentation.forward, with the vision encoder run once instead of once per prompt
        vision = model.clip.vision_model(pixel_values=pixels, output_hidden_states=True)
        # hidden_states[0] is the patch embedding, so layer i's output is hidden_states[i + 1]
        activations = [vision.hidden_states[i + 1].expand(n, -1, -1) for i in model.extract_layers]
        conditional = model.get_conditional_embeddings(batch_size=n, input_ids=input_ids, attention_mask=attention_mask)
        logits = model.decoder(activations, conditional).logits
        # older transformers squeeze every unit dim: with one prompt the batch axis disappears
        return logits.reshape(n, *logits.shape[-2:]).float().cpu()


def load_clipseg(
    path: str | os.PathLike, *, device: str | torch.device = "cpu", name: str = "clipseg"
) -> ClipSegHeatmapper:
    """Load a CLIPSeg checkpoint directory (transformers layout) offline."""
    model_dir = check_model_directory(path, CLIPSEG_PARTS, model_type="clipseg", what="CLIPSeg", name=name)
    try:
        from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise WeightsError(f"{name}: CLIPSeg needs `transformers`: pip install transformers") from exc
    try:
        processor = CLIPSegProcessor.from_pretrained(model_dir, local_files_only=True)
        model = CLIPSegForImageSegmentation.from_pretrained(model_dir, local_files_only=True)
    except hub_load_errors() as exc:
        raise WeightsError(f"{name}: cannot load CLIPSeg from {model_dir} ({exc})") from exc
    return ClipSegHeatmapper(model, processor, device=device, name=name)
