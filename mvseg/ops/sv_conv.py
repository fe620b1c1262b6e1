"""Spatially-variant convolution (Li et al., Low-Latency Video Semantic Segmentation, CVPR
2018, Eq. 1): out[c, p] = sum_j kernels[j, p] · features[c, p + d_j] over the KxK window
offsets d_j, one kernel per pixel shared across channels (zero padding outside the image).

PyTorch reference: shift-and-accumulate in a custom autograd Function, O(B·C·H·W) memory in
both passes (never a K²·C unfold).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mvseg.ops.window import shift, window_offsets


def _window(kernels: Tensor) -> int:
    k = math.isqrt(kernels.shape[1])
    if k * k != kernels.shape[1]:
        raise ValueError(f"kernels must have K*K channels, got {kernels.shape[1]}")
    return k


class _SVConvTorch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features: Tensor, kernels: Tensor) -> Tensor:
        offs = window_offsets(_window(kernels))
        out = torch.zeros_like(features)
        for j, (dy, dx) in enumerate(offs):
            out += kernels[:, j : j + 1] * shift(features, dy, dx)
        ctx.save_for_backward(features, kernels)
        return out

    @staticmethod
    def backward(ctx, dout: Tensor):
        features, kernels = ctx.saved_tensors
        offs = window_offsets(_window(kernels))
        dk = torch.stack([(dout * shift(features, dy, dx)).sum(1) for dy, dx in offs], 1)
        df = torch.zeros_like(features)
        for j, (dy, dx) in enumerate(offs):
            df += shift(kernels[:, j : j + 1] * dout, -dy, -dx)
        return df, dk


def sv_conv_reference(features: Tensor, kernels: Tensor) -> Tensor:
    """features (B, C, H, W), kernels (B, K*K, H, W) -> (B, C, H, W)."""
    if features.shape[0] != kernels.shape[0] or features.shape[2:] != kernels.shape[2:]:
        raise ValueError(f"features {tuple(features.shape)} and kernels {tuple(kernels.shape)} must share B, H, W")
    return _SVConvTorch.apply(features, kernels)


def sv_conv_unfold(features: Tensor, kernels: Tensor) -> Tensor:
    """The unfold implementation (B, C*K*K, H*W): the baseline the benchmark compares to."""
    import torch.nn.functional as F

    b, c, h, w = features.shape
    k = _window(kernels)
    fu = F.unfold(features, k, padding=k // 2).view(b, c, k * k, h, w)
    return (fu * kernels.unsqueeze(1)).sum(2)
