"""LiteMedSAM adapter: TinyViT image encoder at 256 px + SAM prompt encoder/decoder, [0, 1] input."""

from __future__ import annotations

from pathlib import Path

import torch

from ._sam_modeling import sam_modeling
from ._vendor.tiny_vit_sam import TinyViT
from .cache import EmbeddingCache
from .sam_family import SamFamilySegmenter

_sam = sam_modeling()
MaskDecoder, PromptEncoder, TwoWayTransformer = _sam.MaskDecoder, _sam.PromptEncoder, _sam.TwoWayTransformer

INPUT_SIZE = 256


def build_tinyvit(img_size: int) -> TinyViT:
    """TinyViT-5M as used by LiteMedSAM (256 px) and MobileSAM (1024 px); both end on a 64x64 grid."""
    return TinyViT(
        img_size=img_size,
        in_chans=3,
        embed_dims=[64, 128, 160, 320],
        depths=[2, 2, 6, 2],
        num_heads=[2, 4, 5, 10],
        window_sizes=[7, 7, 14, 7],
        mlp_ratio=4.0,
        drop_rate=0.0,
        drop_path_rate=0.0,
        use_checkpoint=False,
        mbconv_expand_ratio=4.0,
        local_conv_size=3,
        layer_lr_decay=0.8,
    )


def build_prompt_decoder(input_size: int, embedding_size: int = 64) -> tuple[PromptEncoder, MaskDecoder]:
    prompt_encoder = PromptEncoder(
        embed_dim=256,
        image_embedding_size=(embedding_size, embedding_size),
        input_image_size=(input_size, input_size),
        mask_in_chans=16,
    )
    mask_decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        transformer_dim=256,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    return prompt_encoder, mask_decoder


def load_litemedsam(
    weights: Path, *, device: torch.device, name: str = "litemedsam", cache: EmbeddingCache | None = None
) -> SamFamilySegmenter:
    return SamFamilySegmenter.from_checkpoint(
        name,
        weights,
        build_tinyvit(INPUT_SIZE),
        *build_prompt_decoder(INPUT_SIZE),
        input_size=INPUT_SIZE,
        pixel_mean=None,
        pixel_std=None,
        points_reliable=False,  # trained with box prompts only
        device=device,
        cache=cache,
    )
