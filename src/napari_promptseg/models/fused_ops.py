"""GEMM + bias + GELU / + residual in one pass on CPU (oneDNN), the same maths as separate ops elsewhere.

Eager PyTorch writes a GEMM's output, then reads and writes it again for the bias broadcast, the GELU and the
residual add; on activations of tens of MB that memory traffic costs as much as the GEMM. oneDNN's fused kernels
(the ones ``torch.compile`` uses on CPU) do it in one pass. They exist only for float32 CPU tensors; on CUDA/MPS,
or with ``USE_ONEDNN_FUSION = False``, the same functions run the standard ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: use oneDNN's fused CPU kernels when available; tests switch this off to check the device-agnostic path
USE_ONEDNN_FUSION = True


def onednn(x: torch.Tensor) -> bool:
    """True when ``x`` can go through the fused oneDNN kernels."""
    return (
        USE_ONEDNN_FUSION
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not (torch.is_grad_enabled() and x.requires_grad)
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    )


def gelu_(x: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU in place."""
    return torch.ops.aten.gelu_(x)


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    gelu: bool = False,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """gelu?(x W^T + b (+ residual)) on (..., C_in) activations; ``residual`` has the output's shape."""
    if onednn(x) and x.is_contiguous() and weight.is_contiguous():
        if residual is None:
            return torch.ops.mkldnn._linear_pointwise.default(x, weight, bias, "gelu" if gelu else "none", [], "none")
        if residual.is_contiguous() and residual.shape[:-1] == x.shape[:-1]:
            # the overload named: through the packet, torch first tries `default`, whose failure formats the
            # tensors' repr into an error message (~5 % of a TinyViT forward)
            y = torch.ops.mkldnn._linear_pointwise.binary(x, residual, weight, bias, "add")
            return gelu_(y) if gelu else y
    y = F.linear(x, weight, bias)
    if residual is not None:
        y += residual
    return gelu_(y) if gelu else y


def conv2d_nhwc(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: list[int],
    padding: list[int],
    groups: int,
    *,
    gelu: bool = False,
) -> torch.Tensor:
    """gelu?(conv2d) on (B, H, W, C) activations through a channels_last NCHW view; returns (B, H', W', C')."""
    nchw = x.permute(0, 3, 1, 2)  # a view: channels_last memory
    if onednn(x):
        y = torch.ops.mkldnn._convolution_pointwise.default(
            nchw, weight, bias, padding, stride, [1, 1], groups, "gelu" if gelu else "none", [], "none"
        )
    else:
        y = F.conv2d(nchw, weight, bias, stride, padding, 1, groups)
        y = gelu_(y) if gelu else y
    # channels_last in -> channels_last out, so this permute is a view and contiguous() costs nothing
    return y.permute(0, 2, 3, 1).contiguous()
