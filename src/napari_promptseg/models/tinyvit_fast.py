"""Inference-only TinyViT that computes what the reference ``tiny_vit_sam.TinyViT`` computes, faster.

Where the reference loses its time (measured in benchmarks/README.md): LiteMedSAM's TinyViT runs its first stage
(two MBConv blocks, 256 hidden channels) at the full 256x256 input, on 64 MB activations, so it is bound by memory
traffic, not FLOPs; and every Conv2d_BN runs a separate BatchNorm pass, every GELU and residual add another pass,
the token tensor is transposed between (B, L, C) and (B, C, H, W) around every convolution, windows are padded and
partitioned with several copies, and attention takes three kernels plus a softmax. Here:

- every Conv2d + BatchNorm is folded into one convolution (as the reference's own ``Conv2d_BN.fuse``);
- activations stay channels-last (B, H, W, C) from the patch embedding to the neck: 1x1 convolutions are GEMMs
  (``linear``) and depthwise 3x3 convolutions read the same memory as a channels_last NCHW view, without copies;
- on CPU, GEMM/convolution + bias + GELU and GEMM + bias + residual run as one oneDNN kernel (the fused ops
  inductor uses, see :mod:`.fused_ops`), so those activations are written once instead of three times; on other
  devices the same maths runs as separate standard ops;
- window attention cuts its windows from the C-channel input (a third of the bytes of the q/k/v tensor the
  reference rearranges), projects its output after cropping the padding (no GEMM on the up to 20 % pad tokens
  there), and adds the precomputed relative-position bias inside batched GEMMs (7x7 windows on CPU) or
  ``scaled_dot_product_attention`` (otherwise);
- on CPU, the first stage's MBConv blocks (256 hidden channels at full resolution: 64 MB per activation) run in
  strips of rows, so each strip's hidden activations stay in cache between the three convolutions.

Equal to the reference up to float rounding (tests/test_fast_paths.py states the tolerance). The module is a
snapshot: it copies (fused) weights at construction; rebuild it after changing the reference weights.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .fused_ops import conv2d_nhwc, linear, onednn


def _fused(conv_bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of a reference Conv2d_BN with its BatchNorm folded in (eval statistics)."""
    conv, bn = conv_bn.c, conv_bn.bn
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    weight = conv.weight * scale[:, None, None, None]
    bias = bn.bias - bn.running_mean * scale
    return weight.detach().clone(), bias.detach().clone()


class _Pointwise(nn.Module):
    """1x1 convolution on channels-last (..., C) activations: one GEMM."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("weight", weight.reshape(weight.shape[0], -1).contiguous())
        self.register_buffer("bias", None if bias is None else bias.contiguous())

    def forward(self, x: torch.Tensor, *, gelu: bool = False, residual: torch.Tensor | None = None) -> torch.Tensor:
        return linear(x, self.weight, self.bias, gelu=gelu, residual=residual)


class _SpatialConv(nn.Module):
    """k x k (depthwise or full) convolution on (B, H, W, C) activations through a channels_last NCHW view."""

    def __init__(self, conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("weight", weight.contiguous(memory_format=torch.channels_last))
        self.register_buffer("bias", None if bias is None else bias.contiguous())
        self.stride, self.padding, self.groups = list(conv.stride), list(conv.padding), conv.groups

    def forward(self, x: torch.Tensor, *, gelu: bool = False) -> torch.Tensor:
        return conv2d_nhwc(x, self.weight, self.bias, self.stride, self.padding, self.groups, gelu=gelu)


def _conv(conv_bn: nn.Module) -> nn.Module:
    weight, bias = _fused(conv_bn)
    conv = conv_bn.c
    if conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.padding == (0, 0) and conv.groups == 1:
        return _Pointwise(weight, bias)
    return _SpatialConv(conv, weight, bias)


def _channel_norm(ref: nn.Module) -> nn.LayerNorm:
    """The neck's LayerNorm2d (over channels of NCHW) is a plain LayerNorm over the last axis of NHWC."""
    norm = nn.LayerNorm(ref.weight.shape[0], eps=ref.eps)
    norm.load_state_dict({"weight": ref.weight.detach(), "bias": ref.bias.detach()})
    return norm


class _MBConv(nn.Module):
    #: rows per strip: 32 x 256 px x 256 channels x 4 B = 8 MB of hidden activations (best of 8/16/32/64 measured)
    STRIP_ROWS = 32

    def __init__(self, ref: nn.Module) -> None:
        super().__init__()
        self.conv1, self.conv2, self.conv3 = _conv(ref.conv1), _conv(ref.conv2), _conv(ref.conv3)
        if not (isinstance(self.conv2, _SpatialConv) and self.conv2.stride == [1, 1] and self.conv2.padding == [1, 1]):
            raise TypeError("MBConv expects a 3x3 stride-1 depthwise convolution")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if onednn(x) and x.shape[1] >= 2 * self.STRIP_ROWS:
            return self._forward_strips(x)
        y = self.conv2(self.conv1(x, gelu=True), gelu=True)
        return self.conv3(y, residual=x, gelu=True)  # gelu(conv3(y) + x)

    def _forward_strips(self, x: torch.Tensor) -> torch.Tensor:
        """The same in strips of rows; each strip recomputes conv1 on the one-row halo the 3x3 convolution needs."""
        out = torch.empty_like(x)
        rows = x.shape[1]
        conv2 = self.conv2
        for top in range(0, rows, self.STRIP_ROWS):
            bottom = min(top + self.STRIP_ROWS, rows)
            lo, hi = max(top - 1, 0), min(bottom + 1, rows)
            hidden = self.conv1(x[:, lo:hi], gelu=True)
            if top == 0 or bottom == rows:  # image border: the convolution's zero padding, as in the full pass
                nchw = F.pad(hidden.permute(0, 3, 1, 2), (0, 0, int(top == 0), int(bottom == rows)))
                hidden = nchw.permute(0, 2, 3, 1).contiguous()
            y = conv2d_nhwc(hidden, conv2.weight, conv2.bias, [1, 1], [0, 1], conv2.groups, gelu=True)
            out[:, top:bottom] = self.conv3(y, residual=x[:, top:bottom], gelu=True)
        return out


class _PatchMerging(nn.Module):
    def __init__(self, ref: nn.Module) -> None:
        super().__init__()
        self.conv1, self.conv2, self.conv3 = _conv(ref.conv1), _conv(ref.conv2), _conv(ref.conv3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.conv2(self.conv1(x, gelu=True), gelu=True))


class _WindowAttention(nn.Module):
    """TinyViT attention over non-overlapping windows of a (B, H, W, C) map, zero padded like the reference."""

    def __init__(self, ref: nn.Module, window_size: int) -> None:
        super().__init__()
        self.window_size = window_size
        self.num_heads, self.key_dim, self.d, self.scale = ref.num_heads, ref.key_dim, ref.d, ref.scale
        self.norm, self.qkv, self.proj = copy.deepcopy(ref.norm), copy.deepcopy(ref.qkv), copy.deepcopy(ref.proj)
        bias = ref.attention_biases[:, ref.attention_bias_idxs].detach().clone()  # (heads, N, N)
        self.register_buffer("attn_bias", bias.unsqueeze(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns x + attention(x)."""
        b, h, w, c = x.shape
        ws, heads = self.window_size, self.num_heads
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
        # zero padding before LayerNorm, as the reference: pad tokens take part in their windows' attention
        padded = F.pad(x, (0, 0, 0, pad_r, 0, pad_b)) if pad_b or pad_r else x
        ph, pw = h + pad_b, w + pad_r
        nh, nw = ph // ws, pw // ws
        # windows are cut from the C-channel input, a third of the q/k/v tensor the reference rearranges
        windows = padded.reshape(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
        qkv = linear(self.norm(windows), self.qkv.weight, self.qkv.bias)  # (B', N, heads * (2 kd + d))
        qkv = qkv.view(b * nh * nw, ws * ws, heads, -1).transpose(1, 2)  # (B', heads, N, 2 kd + d), a view
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.d], dim=-1)
        out = self._attention(q, k, v)  # (B', heads, N, d)
        out = out.view(b, nh, nw, heads, ws, ws, self.d).permute(0, 1, 4, 2, 5, 3, 6).reshape(b, ph, pw, -1)
        if pad_b or pad_r:
            out = out[:, :h, :w].contiguous()  # the output projection runs on real tokens only
        return linear(out, self.proj.weight, self.proj.bias, residual=x)

    def _attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        bias = self.attn_bias.to(q.dtype)
        windows, heads, n, _ = q.shape
        if onednn(q) and n <= 64:
            # 7x7 windows on CPU: batched GEMMs beat the flash kernel, which is tuned for long sequences
            q, k, v = (t.reshape(windows * heads, n, -1) for t in (q, k, v))
            scores = torch.bmm(q * self.scale, k.transpose(1, 2)).view(windows, heads, n, n)
            scores = scores.add_(bias).softmax(-1).view(windows * heads, n, n)
            return torch.bmm(scores, v).view(windows, heads, n, -1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)


class _TinyViTBlock(nn.Module):
    def __init__(self, ref: nn.Module) -> None:
        super().__init__()
        self.attn = _WindowAttention(ref.attn, ref.window_size)
        self.local_conv = _conv(ref.local_conv)
        self.mlp_norm, self.fc1, self.fc2 = (copy.deepcopy(m) for m in (ref.mlp.norm, ref.mlp.fc1, ref.mlp.fc2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.local_conv(self.attn(x))
        hidden = linear(self.mlp_norm(x), self.fc1.weight, self.fc1.bias, gelu=True)
        return linear(hidden, self.fc2.weight, self.fc2.bias, residual=x)


class FastTinyViT(nn.Module):
    """Stand-in for a reference TinyViT in eval mode: (B, 3, S, S) -> (B, 256, h, w) contiguous NCHW features."""

    def __init__(self, ref: nn.Module) -> None:
        super().__init__()
        # Conv2d_BN, GELU, Conv2d_BN: 1x1 convolutions in LiteMedSAM, 3x3 stride-2 ones in MobileSAM
        self.patch_embed = nn.ModuleList([_conv(m) for m in ref.patch_embed.seq if hasattr(m, "fuse")])
        self.stages = nn.ModuleList()
        for layer in ref.layers:
            blocks = [_MBConv(blk) if hasattr(blk, "conv1") else _TinyViTBlock(blk) for blk in layer.blocks]
            if layer.downsample is not None:
                blocks.append(_PatchMerging(layer.downsample))
            self.stages.append(nn.Sequential(*blocks))
        neck = ref.neck  # conv 1x1, LayerNorm2d, conv 3x3, LayerNorm2d
        self.neck_conv1 = _Pointwise(neck[0].weight.detach().clone(), None)
        self.neck_norm1 = _channel_norm(neck[1])
        self.neck_conv2 = _SpatialConv(neck[2], neck[2].weight.detach().clone(), None)
        self.neck_norm2 = _channel_norm(neck[3])
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1).contiguous()  # (B, H, W, 3)
        last = len(self.patch_embed) - 1
        for i, conv in enumerate(self.patch_embed):
            x = conv(x, gelu=i < last)
        for stage in self.stages:
            x = stage(x)
        x = self.neck_norm1(self.neck_conv1(x))
        x = self.neck_norm2(self.neck_conv2(x))
        return x.permute(0, 3, 1, 2).contiguous()
