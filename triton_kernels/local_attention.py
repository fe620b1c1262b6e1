"""Fused local attention in Triton (CReFF's KxK attention, Hu et al. CVPR 2023, Sec. 3.2).

out[:, p] = sum_j P_j[p] v[:, p + d_j],  P[p] = softmax_j(scale * q[:, p]·k[:, p + d_j]) over the
KxK window taps d_j, neighbours outside the image excluded (as the reference,
mvseg.ops.local_attention.local_attention_reference).

Forward, one kernel, one program per (block of pixels, image): the K*K scores of its pixels as
one [KK_PAD, BLOCK_P] tile (q read once, k once per tap), the softmax in registers, then the
output channel by channel from that tile (v once per tap). No channel block recomputes the
scores. With a gradient to come it also stores P (B, K*K, H, W) in fp32 (K*K floats a pixel:
49 at K=7, fewer bytes than q at C >= 49), so the backward never recomputes a score.

Backward, two kernels, no atomics (deterministic):
  _la_bwd_q:  dP_j[p] = dO[:, p]·v[:, p + d_j];  dS_j[p] = scale * P_j[p] (dP_j[p] - sum_i P_i[p] dP_i[p])
              (stored, fp32), dq[:, p] = sum_j dS_j[p] k[:, p + d_j]
  _la_bwd_kv: dk[:, t] = sum_j dS_j[t - d_j] q[:, t - d_j],  dv[:, t] = sum_j P_j[t - d_j] dO[:, t - d_j]
              (each neighbour t gathers from the pixels whose tap j it is)
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from triton_kernels import validate
from triton_kernels._tuning import autotune, interpreted, kk_pad
from triton_kernels._window import aggregate, correlate, load_taps, program_pixels, store_taps

# (TILE, num_warps): a program holds TILE = KK_PAD x BLOCK_P fp32 taps (BLOCK_P = 32 pixels at K=7,
# 16 at K=11), so the registers a thread needs do not grow with the window; the first is the default.
_CONFIGS = [triton.Config({"TILE": t}, num_warps=nw) for t, nw in ((2048, 4), (2048, 8), (1024, 4))]
_SHAPE_ARGS = ["C", "CV", "H", "W"]  # not specialised: one compiled kernel serves every image size


@autotune(_CONFIGS, key=["C", "CV", "K"])
@triton.jit(do_not_specialize=_SHAPE_ARGS)
def _la_fwd(
    q_ptr,
    k_ptr,
    v_ptr,
    out_ptr,
    p_ptr,
    C,
    CV,
    H,
    W,
    scale,
    K: tl.constexpr,
    KK_PAD: tl.constexpr,
    STORE_P: tl.constexpr,
    TILE: tl.constexpr,
):
    BLOCK_P: tl.constexpr = TILE // KK_PAD
    b, HW, p, pm, n, nm = program_pixels(H, W, K, KK_PAD, BLOCK_P, 1)
    s = correlate(q_ptr + b * C * HW, k_ptr + b * C * HW, p, pm, n, nm, C, HW, KK_PAD, BLOCK_P) * scale
    s = tl.where(nm, s, float("-inf"))
    m = tl.where(pm, tl.max(s, axis=0), 0.0)  # the centre tap is always inside: m is finite on real pixels
    e = tl.exp(s - m[None, :])
    den = tl.where(pm, tl.sum(e, axis=0), 1.0)
    w = e / den[None, :]  # P, (KK_PAD, BLOCK_P)
    if STORE_P:
        store_taps(p_ptr + b * K * K * HW, w, p, pm, HW, K, KK_PAD)
    aggregate(w, v_ptr + b * CV * HW, n, nm, out_ptr + b * CV * HW, p, pm, CV, HW)


@autotune(_CONFIGS, key=["C", "CV", "K"])
@triton.jit(do_not_specialize=_SHAPE_ARGS)
def _la_bwd_q(
    k_ptr,
    v_ptr,
    dout_ptr,
    p_ptr,
    ds_ptr,
    dq_ptr,
    C,
    CV,
    H,
    W,
    scale,
    K: tl.constexpr,
    KK_PAD: tl.constexpr,
    TILE: tl.constexpr,
):
    BLOCK_P: tl.constexpr = TILE // KK_PAD
    b, HW, p, pm, n, nm = program_pixels(H, W, K, KK_PAD, BLOCK_P, 1)
    dp = correlate(dout_ptr + b * CV * HW, v_ptr + b * CV * HW, p, pm, n, nm, CV, HW, KK_PAD, BLOCK_P)
    pt = load_taps(p_ptr + b * K * K * HW, p[None, :], nm, HW, KK_PAD)  # P is 0 on outside taps
    ds = pt * (dp - tl.sum(pt * dp, axis=0)[None, :]) * scale  # softmax backward
    store_taps(ds_ptr + b * K * K * HW, ds, p, pm, HW, K, KK_PAD)
    aggregate(ds, k_ptr + b * C * HW, n, nm, dq_ptr + b * C * HW, p, pm, C, HW)


@autotune(_CONFIGS, key=["C", "CV", "K"])
@triton.jit(do_not_specialize=_SHAPE_ARGS)
def _la_bwd_kv(
    q_ptr,
    dout_ptr,
    p_ptr,
    ds_ptr,
    dk_ptr,
    dv_ptr,
    C,
    CV,
    H,
    W,
    K: tl.constexpr,
    KK_PAD: tl.constexpr,
    TILE: tl.constexpr,
):
    BLOCK_P: tl.constexpr = TILE // KK_PAD
    b, HW, t, tm, n, nm = program_pixels(H, W, K, KK_PAD, BLOCK_P, -1)  # n[j] = t - d_j: the pixel whose tap j is t
    dsg = load_taps(ds_ptr + b * K * K * HW, n, nm, HW, KK_PAD)
    aggregate(dsg, q_ptr + b * C * HW, n, nm, dk_ptr + b * C * HW, t, tm, C, HW)
    pg = load_taps(p_ptr + b * K * K * HW, n, nm, HW, KK_PAD)
    aggregate(pg, dout_ptr + b * CV * HW, n, nm, dv_ptr + b * CV * HW, t, tm, CV, HW)


def _grid(b: int, hw: int):
    return lambda meta: (triton.cdiv(hw, meta["TILE"] // meta["KK_PAD"]), b)  # pixel blocks on axis 0 (limit 2**31 - 1)


class LocalAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, window: int, scale: float, need_grad: bool):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        B, C, H, W = q.shape
        CV = v.shape[1]
        out = torch.empty_like(v)
        p = torch.empty(B, window * window, H, W, device=q.device, dtype=torch.float32) if need_grad else out
        if out.numel():  # nothing to compute for an empty output
            _la_fwd[_grid(B, H * W)](
                q, k, v, out, p, C, CV, H, W, float(scale), K=window, KK_PAD=kk_pad(window), STORE_P=need_grad
            )
        ctx.save_for_backward(q, k, v, p if need_grad else None)
        ctx.window, ctx.scale = window, float(scale)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, p = ctx.saved_tensors
        B, C, H, W = q.shape
        CV = v.shape[1]
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        if dout.numel():  # an empty output (Cv = 0, or no pixel) depends on nothing: zero gradients
            dout = dout.contiguous()
            ds = torch.empty_like(p)
            kw = dict(K=ctx.window, KK_PAD=kk_pad(ctx.window))
            _la_bwd_q[_grid(B, H * W)](k, v, dout, p, ds, dq, C, CV, H, W, ctx.scale, **kw)
            _la_bwd_kv[_grid(B, H * W)](q, dout, p, ds, dk, dv, C, CV, H, W, **kw)
        return dq, dk, dv, None, None, None


def local_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int = 7, scale: float | None = None
) -> torch.Tensor:
    """q, k (B, C, H, W), v (B, Cv, H, W) -> (B, Cv, H, W); scale None = 1 (no 1/sqrt(C), as
    AR-Seg's code). float32, float16 or bfloat16 (computed in fp32); CUDA tensors, or CPU tensors
    under TRITON_INTERPRET=1."""
    validate.local_attention_args(q, k, v, window)
    validate.kernel_inputs("local_attention", q, k, v, interpreted=interpreted(_la_fwd))
    # whether a backward can follow, decided out here: inside forward() grad mode is always off
    need_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    return LocalAttention.apply(q, k, v, window, 1.0 if scale is None else float(scale), need_grad)
