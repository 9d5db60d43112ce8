"""Segment Anything adapter: ViT-B/L/H (``segment-anything`` checkpoints) and TinyViT-1024 (MobileSAM)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from ..errors import WeightsError
from ._sam_modeling import sam_modeling
from ._vendor.tiny_vit_sam import Conv2d_BN
from .cache import EmbeddingCache
from .litemedsam import build_prompt_decoder, build_tinyvit
from .sam_family import SamFamilySegmenter

ImageEncoderViT = sam_modeling().ImageEncoderViT

INPUT_SIZE = 1024
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)

#: encoder width, depth, heads, global-attention blocks (segment_anything.build_sam)
VIT_CONFIGS: dict[str, tuple[int, int, int, tuple[int, ...]]] = {
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}


def build_vit_encoder(
    embed_dim: int, depth: int, num_heads: int, global_attn_indexes: tuple[int, ...], img_size: int = INPUT_SIZE
) -> ImageEncoderViT:
    return ImageEncoderViT(
        depth=depth,
        embed_dim=embed_dim,
        img_size=img_size,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=num_heads,
        patch_size=16,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=global_attn_indexes,
        window_size=14,
        out_chans=256,
    )


def build_mobile_sam_tinyvit() -> torch.nn.Module:
    """MobileSAM's TinyViT: LiteMedSAM's stages (built for a 256 grid) behind a 4x-downsampling stem at 1024 px.

    LiteMedSAM replaced TinyViT's stem (two 3x3 stride-2 convolutions) with 1x1 convolutions at 256 px; both end on
    the same 256 -> 64 stage resolutions, so MobileSAM is the 256-px build with the original stem put back.
    """
    encoder = build_tinyvit(INPUT_SIZE // 4)
    width = encoder.patch_embed.embed_dim
    encoder.patch_embed.seq = torch.nn.Sequential(
        Conv2d_BN(3, width // 2, 3, 2, 1), torch.nn.GELU(), Conv2d_BN(width // 2, width, 3, 2, 1)
    )
    encoder.img_size = INPUT_SIZE
    return encoder


def build_sam_modules(variant: str, vit_config: tuple[int, int, int, tuple[int, ...]] | None = None):
    """(image_encoder, prompt_encoder, mask_decoder); ``vit_config`` overrides the ViT size (tests build tiny ones)."""
    if variant == "vit_t":
        image_encoder = build_mobile_sam_tinyvit()
    elif variant in VIT_CONFIGS or vit_config is not None:
        image_encoder = build_vit_encoder(*(vit_config or VIT_CONFIGS[variant]))
    else:
        raise WeightsError(f"unknown SAM variant {variant!r}; expected vit_t, {', '.join(VIT_CONFIGS)}")
    return (image_encoder, *build_prompt_decoder(INPUT_SIZE))


def load_sam(
    weights: Path,
    *,
    variant: str,
    device: torch.device,
    name: str,
    vit_config: tuple[int, int, int, tuple[int, ...]] | None = None,
    cache: EmbeddingCache | None = None,
) -> SamFamilySegmenter:
    return SamFamilySegmenter.from_checkpoint(
        name,
        weights,
        *build_sam_modules(variant, vit_config),
        input_size=INPUT_SIZE,
        pixel_mean=PIXEL_MEAN,
        pixel_std=PIXEL_STD,
        points_reliable=True,
        device=device,
        cache=cache,
    )
