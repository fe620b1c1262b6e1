"""Fused local attention in Triton (CReFF's KxK attention, Hu et al. CVPR 2023).

out[:, p] = sum_j softmax_j(scale * q[:, p]·k[:, p + d_j]) v[:, p + d_j] over the KxK window
offsets d_j, out-of-image neighbours excluded.

Forward: one program per (batch, block of pixels, block of value channels); the window is
visited once with an online softmax (running max and sum, as FlashAttention), so the
[B, K*K, H, W] weights are never written; only the log-sum-exp per pixel is kept for the
backward pass. Backward (FlashAttention-style recomputation, no atomics, deterministic):
  D[p]   = sum_c dO[c, p] O[c, p]
  P_j[p] = exp(scale * q[p]·k[p+d_j] - lse[p]),  dS_j[p] = P_j[p] (dO[p]·v[p+d_j] - D[p]) scale
  dq[p]  = sum_j dS_j[p] k[p+d_j]                     (gathered at p)
  dk[t]  = sum_j dS_j[t-d_j] q[t-d_j],  dv[t] = sum_j P_j[t-d_j] dO[t-d_j]  (gathered at t)
Reference: mvseg.ops.local_attention.local_attention_reference.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

NEG = -1.0e30  # "minus infinity" that keeps exp() and max() finite


@triton.jit
def _dot(a_ptr, b_ptr, b, pa, ma, pb, mb, C, HW, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """sum over the C channels of a[b, :, pa] * b[b, :, pb] (fp32), for BLOCK_P pixel pairs."""
    s = tl.zeros([BLOCK_P], tl.float32)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cm = c < C
        base = (b.to(tl.int64) * C + c[:, None]) * HW
        at = tl.load(a_ptr + base + pa[None, :], mask=cm[:, None] & ma[None, :], other=0.0).to(tl.float32)
        bt = tl.load(b_ptr + base + pb[None, :], mask=cm[:, None] & mb[None, :], other=0.0).to(tl.float32)
        s += tl.sum(at * bt, axis=0)
    return s


@triton.jit
def _la_fwd(q_ptr, k_ptr, v_ptr, out_ptr, lse_ptr, C, CV, H, W, scale,
            K: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_CV: tl.constexpr):
    b = tl.program_id(0)
    p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    cv = tl.program_id(2) * BLOCK_CV + tl.arange(0, BLOCK_CV)
    HW = H * W
    pm = p < HW
    cvm = cv < CV
    y = p // W
    x = p % W
    m_i = tl.full([BLOCK_P], NEG, tl.float32)
    l_i = tl.zeros([BLOCK_P], tl.float32)
    acc = tl.zeros([BLOCK_CV, BLOCK_P], tl.float32)
    vbase = (b.to(tl.int64) * CV + cv[:, None]) * HW
    for j in range(K * K):
        yy = y + (j // K - K // 2)
        xx = x + (j % K - K // 2)
        nm = pm & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
        n = yy * W + xx
        s = _dot(q_ptr, k_ptr, b, p, pm, n, nm, C, HW, BLOCK_C, BLOCK_P) * scale
        s = tl.where(nm, s, NEG)
        m_new = tl.maximum(m_i, s)
        alpha = tl.exp(m_i - m_new)
        pj = tl.where(nm, tl.exp(s - m_new), 0.0)
        l_i = l_i * alpha + pj
        vt = tl.load(v_ptr + vbase + n[None, :], mask=cvm[:, None] & nm[None, :], other=0.0).to(tl.float32)
        acc = acc * alpha[None, :] + vt * pj[None, :]
        m_i = m_new
    l_i = tl.where(pm, l_i, 1.0)  # lanes past the image end: keep the arithmetic finite
    out = acc / l_i[None, :]
    tl.store(out_ptr + vbase + p[None, :], out, mask=cvm[:, None] & pm[None, :])
    first = (p * 0 + tl.program_id(2)) == 0  # only the first value-channel block writes lse
    tl.store(lse_ptr + b.to(tl.int64) * HW + p, m_i + tl.log(l_i), mask=pm & first)


@triton.jit
def _la_bwd_pre(out_ptr, dout_ptr, d_ptr, CV, HW, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    b = tl.program_id(0)
    p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    pm = p < HW
    d = _dot(out_ptr, dout_ptr, b, p, pm, p, pm, CV, HW, BLOCK_C, BLOCK_P)
    tl.store(d_ptr + b.to(tl.int64) * HW + p, d, mask=pm)


@triton.jit
def _la_bwd_dq(q_ptr, k_ptr, v_ptr, dout_ptr, lse_ptr, d_ptr, dq_ptr, C, CV, H, W, scale,
               K: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    b = tl.program_id(0)
    p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    HW = H * W
    pm = p < HW
    cm = c < C
    y = p // W
    x = p % W
    lse = tl.load(lse_ptr + b.to(tl.int64) * HW + p, mask=pm, other=0.0)
    dd = tl.load(d_ptr + b.to(tl.int64) * HW + p, mask=pm, other=0.0)
    cbase = (b.to(tl.int64) * C + c[:, None]) * HW
    acc = tl.zeros([BLOCK_C, BLOCK_P], tl.float32)
    for j in range(K * K):
        yy = y + (j // K - K // 2)
        xx = x + (j % K - K // 2)
        nm = pm & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
        n = yy * W + xx
        s = _dot(q_ptr, k_ptr, b, p, pm, n, nm, C, HW, BLOCK_C, BLOCK_P) * scale
        dp = _dot(dout_ptr, v_ptr, b, p, pm, n, nm, CV, HW, BLOCK_C, BLOCK_P)
        pj = tl.where(nm, tl.exp(s - lse), 0.0)
        ds = pj * (dp - dd) * scale
        kt = tl.load(k_ptr + cbase + n[None, :], mask=cm[:, None] & nm[None, :], other=0.0).to(tl.float32)
        acc += kt * ds[None, :]
    tl.store(dq_ptr + cbase + p[None, :], acc, mask=cm[:, None] & pm[None, :])


@triton.jit
def _la_bwd_dkdv(q_ptr, k_ptr, v_ptr, dout_ptr, lse_ptr, d_ptr, dk_ptr, dv_ptr, C, CV, H, W, scale,
                 K: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    b = tl.program_id(0)
    t = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)  # the neighbour pixel receiving gradients
    c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    HW = H * W
    tm = t < HW
    ty = t // W
    tx = t % W
    dk = tl.zeros([BLOCK_C, BLOCK_P], tl.float32)
    dv = tl.zeros([BLOCK_C, BLOCK_P], tl.float32)
    for j in range(K * K):
        py = ty - (j // K - K // 2)  # the pixel whose j-th neighbour is t
        px = tx - (j % K - K // 2)
        pm = tm & (py >= 0) & (py < H) & (px >= 0) & (px < W)
        p = py * W + px
        s = _dot(q_ptr, k_ptr, b, p, pm, t, tm, C, HW, BLOCK_C, BLOCK_P) * scale
        dp = _dot(dout_ptr, v_ptr, b, p, pm, t, tm, CV, HW, BLOCK_C, BLOCK_P)
        lse = tl.load(lse_ptr + b.to(tl.int64) * HW + p, mask=pm, other=0.0)
        dd = tl.load(d_ptr + b.to(tl.int64) * HW + p, mask=pm, other=0.0)
        pj = tl.where(pm, tl.exp(s - lse), 0.0)
        ds = pj * (dp - dd) * scale
        qt = tl.load(q_ptr + (b.to(tl.int64) * C + c[:, None]) * HW + p[None, :],
                     mask=(c < C)[:, None] & pm[None, :], other=0.0).to(tl.float32)
        gt = tl.load(dout_ptr + (b.to(tl.int64) * CV + c[:, None]) * HW + p[None, :],
                     mask=(c < CV)[:, None] & pm[None, :], other=0.0).to(tl.float32)
        dk += qt * ds[None, :]
        dv += gt * pj[None, :]
    tl.store(dk_ptr + (b.to(tl.int64) * C + c[:, None]) * HW + t[None, :], dk, mask=(c < C)[:, None] & tm[None, :])
    tl.store(dv_ptr + (b.to(tl.int64) * CV + c[:, None]) * HW + t[None, :], dv, mask=(c < CV)[:, None] & tm[None, :])


def _blocks(hw: int, c: int) -> tuple[int, int]:
    return min(64, triton.next_power_of_2(hw)), min(32, triton.next_power_of_2(c))


class LocalAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, window: int, scale: float):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        B, C, H, W = q.shape
        CV = v.shape[1]
        out = torch.empty_like(v)
        lse = torch.empty(B, H, W, device=q.device, dtype=torch.float32)
        bp, bc = _blocks(H * W, max(C, CV))
        _la_fwd[(B, triton.cdiv(H * W, bp), triton.cdiv(CV, bc))](
            q, k, v, out, lse, C, CV, H, W, float(scale), K=window, BLOCK_P=bp, BLOCK_C=bc, BLOCK_CV=bc)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.window, ctx.scale = window, float(scale)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        dout = dout.contiguous()
        B, C, H, W = q.shape
        CV = v.shape[1]
        bp, bc = _blocks(H * W, max(C, CV))
        d = torch.empty(B, H, W, device=q.device, dtype=torch.float32)
        _la_bwd_pre[(B, triton.cdiv(H * W, bp))](out, dout, d, CV, H * W, BLOCK_P=bp, BLOCK_C=bc)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        _la_bwd_dq[(B, triton.cdiv(H * W, bp), triton.cdiv(C, bc))](
            q, k, v, dout, lse, d, dq, C, CV, H, W, ctx.scale, K=ctx.window, BLOCK_P=bp, BLOCK_C=bc)
        _la_bwd_dkdv[(B, triton.cdiv(H * W, bp), triton.cdiv(max(C, CV), bc))](
            q, k, v, dout, lse, d, dk, dv, C, CV, H, W, ctx.scale, K=ctx.window, BLOCK_P=bp, BLOCK_C=bc)
        return dq, dk, dv, None, None


def local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int = 7,
                    scale: float | None = None) -> torch.Tensor:
    """q, k (B, C, H, W), v (B, Cv, H, W) -> (B, Cv, H, W); scale None = 1 (no 1/sqrt(C))."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be odd and >= 1, got {window}")
    return LocalAttention.apply(q, k, v, window, 1.0 if scale is None else float(scale))
