"""Differentiable local operations: a PyTorch reference (the CPU path and the ground truth)
and a Triton path (triton_kernels) used on CUDA tensors, the dinov2 pattern of an optional
fast path that falls back to the plain implementation.

The environment variable MVSEG_KERNELS chooses: "auto" (default: Triton for CUDA tensors in
float32, float16 or bfloat16 when Triton imports, the PyTorch path otherwise, float64 included),
"torch" (always the PyTorch path) or "triton" (always Triton: on a CPU this needs
TRITON_INTERPRET=1, as the tests set, and the launcher says so otherwise). The PyTorch path of
the local attention is the reference, except for CPU inference (no gradient needed), where its
form as batched matrix products computes the same sums faster (ops.local_attention). Both
paths check their arguments with the same rules (triton_kernels.validate).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

import triton_kernels
from mvseg.ops.local_attention import local_attention_blocked, local_attention_reference, local_attention_unfold
from mvseg.ops.resize import resize_bilinear
from mvseg.ops.sv_conv import sv_conv_reference, sv_conv_unfold
from mvseg.ops.warp import warp_reference
from triton_kernels.validate import KERNEL_DTYPES


def triton_available() -> bool:
    """Whether the Triton kernels import on this platform."""
    return triton_kernels.AVAILABLE


def backend(t: Tensor) -> str:
    """'triton' or 'torch' for an op on tensor `t` (see MVSEG_KERNELS)."""
    mode = os.environ.get("MVSEG_KERNELS", "auto").lower()
    if mode not in ("auto", "torch", "triton"):
        raise ValueError(f"MVSEG_KERNELS must be auto, torch or triton, got {mode!r}")
    if mode == "auto":
        return "triton" if t.is_cuda and t.dtype in KERNEL_DTYPES and triton_available() else "torch"
    if mode == "triton" and not triton_available():
        raise RuntimeError("MVSEG_KERNELS=triton, but Triton does not import on this platform; use auto or torch")
    return mode


def warp(
    features: Tensor, offsets: Tensor, mask: Tensor | None = None, frame_size: tuple[int, int] | None = None
) -> Tensor:
    """Backward-warp features (B, C, Hf, Wf) by block offsets (B, 2, Hm, Wm) in pixels of a
    frame of `frame_size` (default 4*Hm x 4*Wm); mask (B, Hm, Wm) zeroes cells' motion."""
    if backend(features) == "triton":
        return triton_kernels.warp(features, offsets, mask, frame_size)
    return warp_reference(features, offsets, mask, frame_size)


def local_attention(q: Tensor, k: Tensor, v: Tensor, window: int = 7, scale: float | None = None) -> Tensor:
    """CReFF's KxK local attention; scale None = no 1/sqrt(C) (as AR-Seg's code)."""
    if backend(q) == "triton":
        return triton_kernels.local_attention(q, k, v, window, scale)
    if not q.is_cuda and not (torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))):
        return local_attention_blocked(q, k, v, window, scale)  # CPU inference: the same sums, cache-friendly
    return local_attention_reference(q, k, v, window, scale)


def sv_conv(features: Tensor, kernels: Tensor) -> Tensor:
    """Li et al.'s spatially-variant convolution: per-pixel KxK kernels shared by channels."""
    if backend(features) == "triton":
        return triton_kernels.sv_conv(features, kernels)
    return sv_conv_reference(features, kernels)


__all__ = [
    "backend",
    "triton_available",
    "warp",
    "warp_reference",
    "local_attention",
    "local_attention_reference",
    "local_attention_blocked",
    "local_attention_unfold",
    "sv_conv",
    "sv_conv_reference",
    "sv_conv_unfold",
    "resize_bilinear",
]
