"""Spatially-variant convolution in Triton (Li et al., CVPR 2018, Eq. 1).

out[c, p] = sum_j kernels[j, p] · features[c, p + d_j], KxK window offsets d_j, one kernel per
pixel shared across channels, zero padding. All three passes gather (no atomics):
  forward:   per (pixel block, channel block), loop over j
  d features: dF[c, t] = sum_j kernels[j, t - d_j] · dO[c, t - d_j]
  d kernels:  dK[j, p] = sum_c dO[c, p] · features[c, p + d_j]
Reference: mvseg.ops.sv_conv.sv_conv_reference.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl


@triton.jit
def _svc_fwd(f_ptr, k_ptr, out_ptr, C, H, W, K: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    b = tl.program_id(0)
    p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    HW = H * W
    pm = p < HW
    cm = c < C
    y = p // W
    x = p % W
    fbase = (b.to(tl.int64) * C + c[:, None]) * HW
    kbase = b.to(tl.int64) * K * K * HW
    acc = tl.zeros([BLOCK_C, BLOCK_P], tl.float32)
    for j in range(K * K):
        yy = y + (j // K - K // 2)
        xx = x + (j % K - K // 2)
        nm = pm & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
        kj = tl.load(k_ptr + kbase + j * HW + p, mask=pm, other=0.0).to(tl.float32)
        ft = tl.load(f_ptr + fbase + (yy * W + xx)[None, :], mask=cm[:, None] & nm[None, :], other=0.0).to(tl.float32)
        acc += ft * kj[None, :]
    tl.store(out_ptr + fbase + p[None, :], acc, mask=cm[:, None] & pm[None, :])


@triton.jit
def _svc_bwd_df(k_ptr, dout_ptr, df_ptr, C, H, W, K: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    b = tl.program_id(0)
    t = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    HW = H * W
    tm = t < HW
    cm = c < C
    ty = t // W
    tx = t % W
    fbase = (b.to(tl.int64) * C + c[:, None]) * HW
    kbase = b.to(tl.int64) * K * K * HW
    acc = tl.zeros([BLOCK_C, BLOCK_P], tl.float32)
    for j in range(K * K):
        py = ty - (j // K - K // 2)  # the pixel whose j-th tap reads t
        px = tx - (j % K - K // 2)
        pm = tm & (py >= 0) & (py < H) & (px >= 0) & (px < W)
        p = py * W + px
        kj = tl.load(k_ptr + kbase + j * HW + p, mask=pm, other=0.0).to(tl.float32)
        g = tl.load(dout_ptr + fbase + p[None, :], mask=cm[:, None] & pm[None, :], other=0.0).to(tl.float32)
        acc += g * kj[None, :]
    tl.store(df_ptr + fbase + t[None, :], acc, mask=cm[:, None] & tm[None, :])


@triton.jit
def _svc_bwd_dk(f_ptr, dout_ptr, dk_ptr, C, H, W, K: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    b = tl.program_id(0)
    p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    HW = H * W
    pm = p < HW
    y = p // W
    x = p % W
    for j in range(K * K):
        yy = y + (j // K - K // 2)
        xx = x + (j % K - K // 2)
        nm = pm & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
        n = yy * W + xx
        s = tl.zeros([BLOCK_P], tl.float32)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            cm = c < C
            base = (b.to(tl.int64) * C + c[:, None]) * HW
            g = tl.load(dout_ptr + base + p[None, :], mask=cm[:, None] & pm[None, :], other=0.0).to(tl.float32)
            ft = tl.load(f_ptr + base + n[None, :], mask=cm[:, None] & nm[None, :], other=0.0).to(tl.float32)
            s += tl.sum(g * ft, axis=0)
        tl.store(dk_ptr + b.to(tl.int64) * K * K * HW + j * HW + p, s, mask=pm)


def _blocks(hw: int, c: int) -> tuple[int, int]:
    return min(128, triton.next_power_of_2(hw)), min(32, triton.next_power_of_2(c))


class SVConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, kernels):
        features, kernels = features.contiguous(), kernels.contiguous()
        B, C, H, W = features.shape
        K = math.isqrt(kernels.shape[1])
        out = torch.empty_like(features)
        bp, bc = _blocks(H * W, C)
        _svc_fwd[(B, triton.cdiv(H * W, bp), triton.cdiv(C, bc))](features, kernels, out, C, H, W, K=K,
                                                                    BLOCK_P=bp, BLOCK_C=bc)
        ctx.save_for_backward(features, kernels)
        ctx.K = K
        return out

    @staticmethod
    def backward(ctx, dout):
        features, kernels = ctx.saved_tensors
        dout = dout.contiguous()
        B, C, H, W = features.shape
        bp, bc = _blocks(H * W, C)
        df = dk = None
        if ctx.needs_input_grad[0]:
            df = torch.empty_like(features)
            _svc_bwd_df[(B, triton.cdiv(H * W, bp), triton.cdiv(C, bc))](kernels, dout, df, C, H, W, K=ctx.K,
                                                                          BLOCK_P=bp, BLOCK_C=bc)
        if ctx.needs_input_grad[1]:
            dk = torch.empty_like(kernels)
            _svc_bwd_dk[(B, triton.cdiv(H * W, bp))](features, dout, dk, C, H, W, K=ctx.K, BLOCK_P=bp, BLOCK_C=bc)
        return df, dk


def sv_conv(features: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """features (B, C, H, W), kernels (B, K*K, H, W) -> (B, C, H, W)."""
    k = math.isqrt(kernels.shape[1])
    if k * k != kernels.shape[1] or k % 2 == 0:
        raise ValueError(f"kernels must have K*K channels with K odd, got {kernels.shape[1]}")
    return SVConv.apply(features, kernels)
