"""Spatially-variant convolution in Triton (Li et al., CVPR 2018, Eq. 1).

out[c, p] = sum_j kernels[j, p] · features[c, p + d_j], KxK window taps d_j, one kernel per pixel
shared across channels, zero padding (reference: mvseg.ops.sv_conv.sv_conv_reference). One
program per (block of pixels, image) for each pass, channels walked one at a time over a
[KK_PAD, BLOCK_P] tile of taps (triton_kernels._window); all three passes gather (no atomics):
  forward:    the kernels' tile at p (read once), out[c, p] = sum_j tile[j] features[c, p + d_j]
  d features: dF[c, t] = sum_j kernels[j, t - d_j] dO[c, t - d_j]
  d kernels:  dK[j, p] = sum_c dO[c, p] features[c, p + d_j]  (dO read once per channel, not per tap)
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from triton_kernels import validate
from triton_kernels._tuning import autotune, interpreted, kk_pad
from triton_kernels._window import aggregate, correlate, load_taps, program_pixels, store_taps

# (TILE, num_warps): a program holds TILE = KK_PAD x BLOCK_P fp32 taps (BLOCK_P = 32 pixels at K=9),
# so the registers a thread needs do not grow with the window; the first is the default.
_CONFIGS = [triton.Config({"TILE": t}, num_warps=nw) for t, nw in ((4096, 4), (4096, 8), (2048, 4))]
_SHAPE_ARGS = ["C", "H", "W"]


@autotune(_CONFIGS, key=["C", "K"])
@triton.jit(do_not_specialize=_SHAPE_ARGS)
def _svc_fwd(f_ptr, k_ptr, out_ptr, C, H, W, K: tl.constexpr, KK_PAD: tl.constexpr, TILE: tl.constexpr):
    BLOCK_P: tl.constexpr = TILE // KK_PAD
    b, HW, p, pm, n, nm = program_pixels(H, W, K, KK_PAD, BLOCK_P, 1)
    w = load_taps(k_ptr + b * K * K * HW, p[None, :], nm, HW, KK_PAD)  # outside taps read zeros: skip them
    aggregate(w, f_ptr + b * C * HW, n, nm, out_ptr + b * C * HW, p, pm, C, HW)


@autotune(_CONFIGS, key=["C", "K"])
@triton.jit(do_not_specialize=_SHAPE_ARGS)
def _svc_bwd_df(k_ptr, dout_ptr, df_ptr, C, H, W, K: tl.constexpr, KK_PAD: tl.constexpr, TILE: tl.constexpr):
    BLOCK_P: tl.constexpr = TILE // KK_PAD
    b, HW, t, tm, n, nm = program_pixels(H, W, K, KK_PAD, BLOCK_P, -1)  # n[j] = t - d_j: the pixel whose tap j reads t
    w = load_taps(k_ptr + b * K * K * HW, n, nm, HW, KK_PAD)
    aggregate(w, dout_ptr + b * C * HW, n, nm, df_ptr + b * C * HW, t, tm, C, HW)


@autotune(_CONFIGS, key=["C", "K"])
@triton.jit(do_not_specialize=_SHAPE_ARGS)
def _svc_bwd_dk(f_ptr, dout_ptr, dk_ptr, C, H, W, K: tl.constexpr, KK_PAD: tl.constexpr, TILE: tl.constexpr):
    BLOCK_P: tl.constexpr = TILE // KK_PAD
    b, HW, p, pm, n, nm = program_pixels(H, W, K, KK_PAD, BLOCK_P, 1)
    s = correlate(dout_ptr + b * C * HW, f_ptr + b * C * HW, p, pm, n, nm, C, HW, KK_PAD, BLOCK_P)
    store_taps(dk_ptr + b * K * K * HW, s, p, pm, HW, K, KK_PAD)


def _grid(b: int, hw: int):
    return lambda meta: (triton.cdiv(hw, meta["TILE"] // meta["KK_PAD"]), b)  # pixel blocks on axis 0 (limit 2**31 - 1)


class SVConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, kernels, window: int):
        features, kernels = features.contiguous(), kernels.contiguous()
        B, C, H, W = features.shape
        out = torch.empty_like(features)
        if out.numel():
            _svc_fwd[_grid(B, H * W)](features, kernels, out, C, H, W, K=window, KK_PAD=kk_pad(window))
        ctx.save_for_backward(features, kernels)
        ctx.window = window
        return out

    @staticmethod
    def backward(ctx, dout):
        features, kernels = ctx.saved_tensors
        B, C, H, W = features.shape
        kw = dict(K=ctx.window, KK_PAD=kk_pad(ctx.window))
        df = dk = None
        if ctx.needs_input_grad[0]:
            df = torch.zeros_like(features)
            if df.numel():
                _svc_bwd_df[_grid(B, H * W)](kernels, dout.contiguous(), df, C, H, W, **kw)
        if ctx.needs_input_grad[1]:
            dk = torch.zeros_like(kernels)  # C = 0: an empty sum
            if dk.numel() and C:
                _svc_bwd_dk[_grid(B, H * W)](features, dout.contiguous(), dk, C, H, W, **kw)
        return df, dk, None


def sv_conv(features: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """features (B, C, H, W), kernels (B, K*K, H, W) -> (B, C, H, W); float32, float16 or
    bfloat16 (computed in fp32); CUDA tensors, or CPU tensors under TRITON_INTERPRET=1."""
    k = validate.sv_conv_args(features, kernels)
    validate.kernel_inputs("sv_conv", features, kernels, interpreted=interpreted(_svc_fwd))
    return SVConv.apply(features, kernels, k)
