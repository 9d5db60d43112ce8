"""SAM mask decoding of N prompts on one image; computes what ``segment_anything``'s MaskDecoder computes, faster.

Where the reference loses its time (measured by benchmarks/bench_segmenter.py): ``MaskDecoder.predict_masks``
copies the (256, 64, 64) image embedding and its positional encoding N times (``repeat_interleave``), and each of
the three cross attentions between the 5-7 prompt tokens and the 4096 image tokens projects all 4096 image tokens
(q, k, v and output projections: 10 GEMMs of 4096 x 256 x 128 per prompt, ~2.7 of the 3.6 GFLOP per prompt),
although the attention itself involves only 5-7 tokens. The result is then upsampled with two ConvTranspose2d and
read again for a product with four mask vectors, three of which are dropped when ``multimask_output`` is False.

Here, with the reference modules' own weights (read at call time, nothing copied):

- **image-side projections are folded into the token side.** Token->image attention: q.(W_k x + b_k) =
  (W_k^T q).x + const, and the constant cancels in the softmax; sum_i p_i (W_v x_i + b_v) = W_v (sum_i p_i x_i) +
  b_v. Image->token attention: one GEMM of the image tokens with a block-diagonal (heads x tokens) key matrix
  gives all heads' scores, and the output projection is applied to the 5-7 value tokens before the weighted sum.
  Per prompt and block this replaces ~4 projections of 4096 tokens by 2 GEMMs of less than half their size;
- **what does not depend on the prompt is computed once per image**: without a mask prompt the dense prompt
  embedding is one learned vector, so the first block's image tokens are the same for every prompt; their
  projections are computed once per image (:class:`ImageContext`, kept by the segmenter for the next click);
- **transposed convolutions are GEMMs**: a 2x2 stride-2 ConvTranspose2d maps each pixel to its 2x2 output patch
  (C_in -> 4 C_out); the pixel shuffle is postponed to the end, so only the (N, K, 256, 256) logits of the K
  requested masks are ever rearranged, and only their K hypernetworks run; on CPU the GEMM + GELU is one oneDNN
  kernel (:mod:`.fused_ops`).

Equal to the reference up to float rounding (tests/test_fast_paths.py); plain tensor ops, device-agnostic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .fused_ops import gelu_, linear


def supports(mask_decoder: nn.Module) -> bool:
    """True for SAM's decoder layout (every SAM-family checkpoint); anything else keeps the reference path."""
    transformer = getattr(mask_decoder, "transformer", None)
    up = getattr(mask_decoder, "output_upscaling", None)
    return (
        type(transformer).__name__ == "TwoWayTransformer"
        and isinstance(up, nn.Sequential)
        and len(up) == 5
        and all(isinstance(up[i], nn.ConvTranspose2d) for i in (0, 3))
        and all(up[i].kernel_size == (2, 2) and up[i].stride == (2, 2) and up[i].padding == (0, 0) for i in (0, 3))
        and type(up[1]).__name__ == "LayerNorm2d"
        and all(isinstance(up[i], nn.GELU) and up[i].approximate == "none" for i in (2, 4))
    )


@dataclass(frozen=True)
class ImageContext:
    """Prompt-independent decoder inputs of one image embedding (no mask prompt)."""

    keys: torch.Tensor  # (1, HW, C) image embedding + no-mask dense embedding, token-major
    key_pe: torch.Tensor  # (1, HW, C)
    first_k: torch.Tensor  # (1, HW, Ci) first block, token->image keys
    first_v: torch.Tensor  # (1, HW, Ci) first block, token->image values
    first_q: torch.Tensor  # (1, HW, Ci) first block, image->token queries

    def projections(self) -> torch.Tensor:
        """(3, HW, Ci) first_k, first_v, first_q: the costly part, what the disk cache stores with the features
        and gives back to :func:`image_context`."""
        return torch.cat((self.first_k, self.first_v, self.first_q))


def image_context(
    mask_decoder: nn.Module,
    features: torch.Tensor,
    dense_pe: torch.Tensor,
    no_mask_embed: torch.Tensor,
    projections: torch.Tensor | None = None,
) -> ImageContext:
    """The context of ``features``; ``projections``: :meth:`ImageContext.projections` computed earlier for these
    features by this decoder (not checked here: the disk cache checks the decoder's signature)."""
    keys = _tokens(features + no_mask_embed.reshape(1, -1, 1, 1))
    key_pe = _tokens(dense_pe)
    if projections is not None:
        return ImageContext(keys, key_pe, projections[0:1], projections[1:2], projections[2:3])
    layer = mask_decoder.transformer.layers[0]
    keys_pe = keys + key_pe
    t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
    return ImageContext(keys, key_pe, t2i.k_proj(keys_pe), t2i.v_proj(keys), i2t.q_proj(keys_pe))


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> contiguous (B, h w, C)."""
    return x.flatten(2).transpose(1, 2).contiguous()


def _token_to_image(
    attn: nn.Module, q_in: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor, kv: tuple | None = None
) -> torch.Tensor:
    """Attention(q=tokens (N, T, C), k=image (N, HW, C), v=image) -> (N, T, C); ``kv``: projected (1, HW, Ci)."""
    heads = attn.num_heads
    q = attn.q_proj(q_in)
    n, t, ci = q.shape
    dh = ci // heads
    scale = dh**-0.5
    if kv is not None:  # shared, already projected image tokens: all prompts' tokens in one GEMM per head
        k, v = kv
        hw = k.shape[1]
        qh = q.view(n * t, heads, dh).transpose(0, 1)  # (heads, N T, dh)
        p = torch.bmm(qh * scale, k.view(hw, heads, dh).permute(1, 2, 0)).softmax(-1)  # (heads, N T, HW)
        o = torch.bmm(p, v.view(hw, heads, dh).transpose(0, 1))  # (heads, N T, dh)
        o = o.transpose(0, 1).reshape(n, t, ci)
    else:
        c = k_in.shape[-1]
        w_k = attn.k_proj.weight.view(heads, dh, c)
        qk = torch.einsum("nthd,hdc->nhtc", q.view(n, t, heads, dh) * scale, w_k).reshape(n, heads * t, c)
        p = torch.bmm(qk, k_in.expand(n, -1, -1).transpose(1, 2)).softmax(-1)  # (N, heads T, HW)
        px = torch.bmm(p, v_in.expand(n, -1, -1)).view(n, heads, t, c)  # sum_i p_i x_i
        w_v = attn.v_proj.weight.view(heads, dh, c)
        o = torch.einsum("nhtc,hdc->nthd", px, w_v) + attn.v_proj.bias.view(heads, dh)
        o = o.reshape(n, t, ci)
    return attn.out_proj(o)


def _image_to_token(
    attn: nn.Module, q_in: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor, q: torch.Tensor | None = None
) -> torch.Tensor:
    """Attention(q=image (1 or N, HW, C), k=tokens (N, T, C), v=tokens) -> (N, HW, C); ``q``: projected queries
    (1 or N, HW, Ci)."""
    heads = attn.num_heads
    k, v = attn.k_proj(k_in), attn.v_proj(v_in)  # (N, T, Ci)
    n, t, ci = k.shape
    dh = ci // heads
    eye = torch.eye(heads, dtype=k.dtype, device=k.device)
    # block-diagonal keys/values: row h*T + t holds head h of token t, zeros in the other heads' columns
    k_bd = torch.einsum("nthd,hg->nhtgd", k.view(n, t, heads, dh) * dh**-0.5, eye).reshape(n, heads * t, ci)
    v_bd = torch.einsum("nthd,hg->nhtgd", v.view(n, t, heads, dh), eye).reshape(n, heads * t, ci)
    # out_proj before the weighted sum; each head's weights sum to 1, so bias / heads per row adds the bias once
    v_out = torch.addmm(attn.out_proj.bias / heads, v_bd.reshape(n * heads * t, ci), attn.out_proj.weight.t())
    v_out = v_out.view(n, heads * t, -1)
    # scores transposed, (N, heads T, HW): the softmax over each head's T tokens then runs along a strided axis
    # with HW contiguous, which vectorises (a softmax over a last axis of 5-7 elements does not)
    if q is not None and q.shape[0] == 1:  # (1, HW, Ci) shared projected queries: one GEMM for all prompts
        hw = q.shape[1]
        scores = torch.mm(k_bd.reshape(n * heads * t, ci), q[0].t()).view(n, heads, t, hw)
    elif q is not None:  # (N, HW, Ci) projected queries, one set per prompt (windowed decoding)
        hw = q.shape[1]
        scores = torch.bmm(k_bd, q.transpose(1, 2)).view(n, heads, t, hw)
    else:
        hw = q_in.shape[1]
        a = torch.matmul(k_bd, attn.q_proj.weight)  # (N, heads T, C): q_proj folded into the keys
        b = torch.matmul(k_bd, attn.q_proj.bias).unsqueeze(-1)  # (N, heads T, 1)
        scores = torch.baddbmm(b, a, q_in.expand(n, -1, -1).transpose(1, 2)).view(n, heads, t, hw)
    p = scores.softmax(dim=2).view(n, heads * t, hw)
    return torch.bmm(p.transpose(1, 2), v_out)


def two_way_transformer(
    transformer: nn.Module,
    keys: torch.Tensor,
    key_pe: torch.Tensor,
    tokens: torch.Tensor,
    ctx: ImageContext | None,
    window: tuple[torch.Tensor, int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """keys (1 or N, HW, C), key_pe (1, HW, C), tokens (N, T, C) -> queries (N, T, C), keys (N, HW, C).

    ``window`` (origins, side, grid width): after the first block's token-to-image attention, the image side
    continues on each prompt's window of tokens (see :func:`decode`); keys come back as (N, side², C)."""
    queries, point_embedding = tokens, tokens
    for index, layer in enumerate(transformer.layers):
        shared = ctx if index == 0 else None
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + point_embedding
            queries = queries + layer.self_attn(q=q, k=q, v=queries)
        queries = layer.norm1(queries)

        keys_pe = None if shared is not None else keys + key_pe
        kv = None if shared is None else (shared.first_k, shared.first_v)
        q = queries + point_embedding
        queries = layer.norm2(queries + _token_to_image(layer.cross_attn_token_to_image, q, keys_pe, keys, kv))
        queries = layer.norm3(queries + layer.mlp(queries))

        q = queries + point_embedding
        image_q = None if shared is None else shared.first_q
        if window is not None and index == 0:
            # from here on each prompt sees its own window of image tokens
            origins, side, grid_w = window
            keys, key_pe = (_gather_windows(x, origins, side, grid_w) for x in (keys, key_pe))
            image_q = None if image_q is None else _gather_windows(image_q, origins, side, grid_w)
            keys_pe = None if keys_pe is None else _gather_windows(keys_pe, origins, side, grid_w)
        update = _image_to_token(layer.cross_attn_image_to_token, keys_pe, q, queries, image_q)
        keys = layer.norm4(update.add_(keys))

    q = queries + point_embedding
    queries = queries + _token_to_image(transformer.final_attn_token_to_image, q, keys + key_pe, keys)
    return transformer.norm_final_attn(queries), keys


def _transposed_conv_as_linear(conv: nn.ConvTranspose2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(4 C_out, C_in) weight and bias of a 2x2 stride-2 ConvTranspose2d, outputs ordered (dy, dx, C_out)."""
    c_in, c_out, kh, kw = conv.weight.shape
    weight = conv.weight.permute(2, 3, 1, 0).reshape(kh * kw * c_out, c_in)
    return weight, conv.bias.repeat(kh * kw)


#: logit given outside a prompt's window by :func:`decode` with ``windows`` (sigmoid ~1e-13)
OUTSIDE_WINDOW_LOGIT = -30.0


def window_origins(boxes: torch.Tensor, grid: int, stride: float, margin: float = 1.0) -> tuple[torch.Tensor, int]:
    """Square token windows around boxes: (N, 2) top-left (row, column) token and the common side S.

    ``boxes`` (N, 4) x0, y0, x1, y1 in input pixels, ``stride`` input pixels per token, ``grid`` tokens per side.
    The side covers the largest box plus ``margin`` times its extent on every side (so the decoder still sees the
    object's surroundings), at least 16 tokens; windows are shifted to lie inside the grid.
    """
    extent = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / stride
    side = int(min(grid, max(16, int(torch.ceil(extent.max() * (1 + 2 * margin)).item()) + 2)))
    centre = torch.stack(((boxes[:, 1] + boxes[:, 3]) / 2, (boxes[:, 0] + boxes[:, 2]) / 2), dim=1) / stride
    origins = torch.round(centre - side / 2).long().clamp(0, grid - side)
    return origins, side


def _gather_windows(x: torch.Tensor, origins: torch.Tensor, side: int, grid_w: int) -> torch.Tensor:
    """(1, h w, C) token-major -> (N, side², C): each prompt's window of tokens."""
    offsets = torch.arange(side, device=x.device)
    rows = origins[:, :1, None] + offsets[None, :, None]  # (N, side, 1)
    cols = origins[:, 1:, None].transpose(1, 2) + offsets[None, None, :]  # (N, 1, side)
    index = (rows * grid_w + cols).reshape(-1)
    return x[0].index_select(0, index).view(origins.shape[0], side * side, x.shape[-1])


def _upscaling(mask_decoder: nn.Module) -> tuple:
    """The decoder's output upscaling (ConvTranspose2d, LayerNorm2d, GELU, ConvTranspose2d, GELU) as GEMM weights."""
    up = mask_decoder.output_upscaling
    return (up, *_transposed_conv_as_linear(up[0]), *_transposed_conv_as_linear(up[3]))


def _upscale(upscaling: tuple, tokens: torch.Tensor, hyper: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """One prompt's (h w, C) output image tokens, upscaled and read by its (K, C') hypernetwork outputs: (K, 4 h,
    4 w) mask logits. Each token's 4x4 output pixels depend on that token alone (stride-2 2x2 kernels, per-pixel
    norm), so any rectangle of tokens upscales on its own."""
    up, w1, b1, w2, b2 = upscaling
    c1, c2 = up[0].out_channels, up[3].out_channels
    x = linear(tokens, w1, b1).view(h * w * 4, c1)  # per pixel (dy, dx, C1): its 2x2 output patch
    x = gelu_(F.layer_norm(x, (c1,), up[1].weight, up[1].bias, up[1].eps))  # LayerNorm2d = LN over channels
    x = linear(x, w2, b2, gelu=True).view(h * w * 16, c2)  # per pixel (dy, dx, dy2, dx2, C2)
    k = hyper.shape[0]
    return torch.mm(x, hyper.t()).view(h, w, 2, 2, 2, 2, k).permute(6, 0, 2, 4, 1, 3, 5).reshape(k, 4 * h, 4 * w)


def upscaled_masks(mask_decoder: nn.Module, keys: torch.Tensor, hyper_in: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The decoder's upscaling of its (N, h w, C) output image tokens, read by (N, K, C') hypernetwork outputs:
    (N, K, 4 h, 4 w) mask logits."""
    upscaling = _upscaling(mask_decoder)
    # one prompt at a time: its ~12 MB of upsampled maps stay in cache for the next step
    return torch.stack([_upscale(upscaling, keys[i], hyper_in[i], h, w) for i in range(keys.shape[0])])


def mask_regions(boxes: torch.Tensor, grid: int, stride: float, margin: float = 0.5) -> torch.Tensor:
    """(N, 4) token rectangles row0, row1, col0, col1 (half-open) around boxes (N, 4) x0, y0, x1, y1 in input
    pixels: the box grown by ``margin`` times its extent on every side (at least 2 tokens), within the grid."""
    x0, y0, x1, y1 = (boxes / stride).unbind(1)
    grow = torch.clamp(margin * torch.maximum(x1 - x0, y1 - y0), min=2.0)
    rect = torch.stack((y0 - grow, y1 + grow + 1, x0 - grow, x1 + grow + 1), dim=1)
    return torch.cat((rect[:, 0::2].floor(), rect[:, 1::2].ceil()), dim=1)[:, [0, 2, 1, 3]].long().clamp(0, grid)


def decode(
    mask_decoder: nn.Module,
    features: torch.Tensor,
    dense_pe: torch.Tensor | None,
    sparse_prompt_embeddings: torch.Tensor,
    dense_prompt_embeddings: torch.Tensor | None,
    multimask_output: bool,
    context: ImageContext | None = None,
    windows: tuple[torch.Tensor, int] | None = None,
    regions: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``mask_decoder(features, dense_pe, sparse, dense, multimask_output)`` for one image's (1, C, h, w) features.

    With mask prompts give ``dense_pe`` (1, C, h, w) and ``dense_prompt_embeddings`` (N, C, h, w); without, give
    only ``context`` (from :func:`image_context`, which holds both the positional encoding and the no-mask
    embedding).

    ``windows`` ((N, 2) token origins, side S from :func:`window_origins`; needs ``context``): after the first
    block's token-to-image attention (which still sees the whole image), each prompt's decoding continues on its
    S x S window of image tokens only, and its mask is ``OUTSIDE_WINDOW_LOGIT`` elsewhere. For small objects this
    is (h w / S²) times less work; the masks differ from whole-image decoding only through the attention weights
    that tokens outside the window would have taken (measured in benchmarks/README.md). ``regions`` ((N, 4) token
    rectangles from :func:`mask_regions`, with ``windows``): masks are upscaled within each prompt's rectangle (cut
    to its window) only, ``OUTSIDE_WINDOW_LOGIT`` elsewhere; the upscaling is the costliest step left per prompt.
    """
    if features.shape[0] != 1:
        raise ValueError("decode() takes the features of one image")
    if (dense_prompt_embeddings is None) == (context is None):
        raise ValueError("give either dense_prompt_embeddings (mask prompts) or the image context, not both")
    if windows is not None and context is None:
        raise ValueError("windowed decoding needs the image context (no mask prompts)")
    n = sparse_prompt_embeddings.shape[0]
    h, w = features.shape[-2:]
    output_tokens = torch.cat([mask_decoder.iou_token.weight, mask_decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat((output_tokens.unsqueeze(0).expand(n, -1, -1), sparse_prompt_embeddings), dim=1)
    if context is not None:
        keys, key_pe = context.keys, context.key_pe
    else:
        keys, key_pe = _tokens(features + dense_prompt_embeddings), _tokens(dense_pe)
    full_h, full_w = h, w
    if windows is not None:
        origins, side = windows
        hs, keys = two_way_transformer(
            mask_decoder.transformer, keys, key_pe, tokens, context, window=(origins, side, w)
        )
        h = w = side
    else:
        hs, keys = two_way_transformer(mask_decoder.transformer, keys, key_pe, tokens, context)
    keys = keys.expand(n, -1, -1)  # a no-op unless the transformer has no block (then keys are still shared)

    # the reference computes all 4 masks and slices; only the hypernetworks of the returned masks run here
    wanted = range(1, mask_decoder.num_mask_tokens) if multimask_output else range(1)
    hyper_in = torch.stack([mask_decoder.output_hypernetworks_mlps[i](hs[:, 1 + i, :]) for i in wanted], dim=1)
    iou_pred = mask_decoder.iou_prediction_head(hs[:, 0, :])[:, wanted.start : wanted.stop]

    if windows is None:
        return upscaled_masks(mask_decoder, keys, hyper_in, h, w), iou_pred
    masks = keys.new_full((n, hyper_in.shape[1], 4 * full_h, 4 * full_w), OUTSIDE_WINDOW_LOGIT)
    upscaling = _upscaling(mask_decoder)
    for i, (r, c) in enumerate(windows[0].tolist()):
        r0, r1, c0, c1 = (r, r + h, c, c + w) if regions is None else regions[i].tolist()
        r0, r1, c0, c1 = max(r0 - r, 0), min(r1 - r, h), max(c0 - c, 0), min(c1 - c, w)  # within the window
        tokens = keys[i].view(h, w, -1)[r0:r1, c0:c1].reshape((r1 - r0) * (c1 - c0), -1)
        rect = masks[i, :, 4 * (r + r0) : 4 * (r + r1), 4 * (c + c0) : 4 * (c + c1)]
        rect.copy_(_upscale(upscaling, tokens, hyper_in[i], r1 - r0, c1 - c0))
    return masks, iou_pred
