"""Spatially-variant convolution (Li et al., Low-Latency Video Semantic Segmentation, CVPR
2018, Eq. 1): out[c, p] = sum_j kernels[j, p] · features[c, p + d_j] over the KxK window
offsets d_j, one kernel per pixel shared across channels (zero padding outside the image).

PyTorch reference: shift-and-accumulate over views of one padded copy, in a custom autograd
Function, O(B·C·H·W) memory in both passes (never a K²·C unfold).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mvseg.ops.window import window_offsets
from triton_kernels import validate


def _window(kernels: Tensor) -> int:
    k = math.isqrt(kernels.shape[1])
    if k * k != kernels.shape[1]:
        raise ValueError(f"kernels must have K*K channels, got {kernels.shape[1]}")
    return k


def _padded_views(x: Tensor, k: int):
    """Pad `x` once by k//2 and yield (j, view) with view[..., y, x] = x[..., y + dy_j, x + dx_j]
    (zero outside): one pad instead of one per offset, and views instead of copies (faster than
    shifting per offset for small features, where the op is dominated by per-call overhead:
    `mvseg bench kernels`, docs/results.md)."""
    r = k // 2
    h, w = x.shape[-2:]
    p = F.pad(x, (r, r, r, r))
    for j, (dy, dx) in enumerate(window_offsets(k)):
        yield j, p[..., r + dy : r + dy + h, r + dx : r + dx + w]


class _SVConvTorch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features: Tensor, kernels: Tensor) -> Tensor:
        out = torch.zeros_like(features)
        for j, view in _padded_views(features, _window(kernels)):
            out.addcmul_(view, kernels[:, j : j + 1])  # (B, C, H, W) += (B, C, H, W) * (B, 1, H, W)
        ctx.save_for_backward(features, kernels)
        return out

    @staticmethod
    def backward(ctx, dout: Tensor):
        features, kernels = ctx.saved_tensors
        k = _window(kernels)
        dk = torch.stack([(dout * view).sum(1) for _, view in _padded_views(features, k)], 1)
        # dF[c, p + d_j] += kernels[j, p] * dout[c, p]: scatter into a padded buffer, then crop
        r = k // 2
        h, w = features.shape[-2:]
        dfp = features.new_zeros(*features.shape[:-2], h + 2 * r, w + 2 * r)
        for j, (dy, dx) in enumerate(window_offsets(k)):
            dfp[..., r + dy : r + dy + h, r + dx : r + dx + w].addcmul_(dout, kernels[:, j : j + 1])
        return dfp[..., r : r + h, r : r + w].contiguous(), dk


def sv_conv_reference(features: Tensor, kernels: Tensor) -> Tensor:
    """features (B, C, H, W), kernels (B, K*K, H, W) -> (B, C, H, W), in the inputs' dtype."""
    validate.sv_conv_args(features, kernels)
    return _SVConvTorch.apply(features, kernels)


def sv_conv_unfold(features: Tensor, kernels: Tensor) -> Tensor:
    """The unfold implementation (B, C*K*K, H*W): the baseline the benchmark compares to."""
    b, c, h, w = features.shape
    k = _window(kernels)
    fu = F.unfold(features, k, padding=k // 2).view(b, c, k * k, h, w)
    return (fu * kernels.unsqueeze(1)).sum(2)
