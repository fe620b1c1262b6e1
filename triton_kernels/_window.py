"""KxK-window building blocks shared by the local-attention and spatially-variant-convolution
kernels (Triton device functions).

Both ops, forward and backward, are made of three sums over a pixel p, the taps j of a KxK
window (offsets d_j, row-major, as mvseg.ops.window.window_offsets) and the channels c:

  correlate:  s[j, p] = sum_c a[c, p] * b[c, p + d_j]   attention scores and dP, sv_conv's dK
  aggregate:  o[c, p] = sum_j w[j, p] * x[c, n_j(p)]    attention output, dq, dk, dv; sv_conv, dF
              with n_j(p) = p + d_j (gather at the neighbours), or p - d_j with w read at
              (j, p - d_j) (the transpose, written as a gather: no atomics, deterministic)

A program holds one [KK_PAD, BLOCK_P] fp32 tile (every tap of a block of pixels; rows j >= K*K
and neighbours outside the image are masked off, so they move no memory) and walks the channels
one at a time. Each input element is then requested once per tap that reads it, which is the
gather's floor without shared-memory tiling (taps of neighbouring pixels hit in L1/L2), and no
result is recomputed per block of channels.

Indexing: a pixel index within one (H, W) plane is int32 (the launchers refuse planes of
2**31 pixels or more); everything that spans planes (batch, channel and tap strides) is added
to the pointers in int64 or by advancing a pointer one plane at a time, so it cannot overflow.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def neighbours(p, pm, H, W, K: tl.constexpr, KK_PAD: tl.constexpr, SIGN: tl.constexpr):
    """Flat indices of p + SIGN * d_j for pixels p [BLOCK_P] (mask pm), [KK_PAD, BLOCK_P], and
    where they are real taps inside the image."""
    j = tl.arange(0, KK_PAD)
    dy = j // K - K // 2
    dx = j % K - K // 2
    y = p // W
    x = p - y * W
    yy = y[None, :] + SIGN * dy[:, None]
    xx = x[None, :] + SIGN * dx[:, None]
    m = (j < K * K)[:, None] & pm[None, :] & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
    return yy * W + xx, m


@triton.jit
def program_pixels(H, W, K: tl.constexpr, KK_PAD: tl.constexpr, BLOCK_P: tl.constexpr, SIGN: tl.constexpr):
    """The prologue of every window kernel (grid: pixel blocks on axis 0, images on axis 1): this
    program's image b (int64), the plane size, its pixels p [BLOCK_P] and their mask, and their
    window taps p + SIGN * d_j with the taps' mask (`neighbours`)."""
    b = tl.program_id(1).to(tl.int64)
    HW = H * W
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    pm = p < HW
    n, nm = neighbours(p, pm, H, W, K, KK_PAD, SIGN)
    return b, HW, p, pm, n, nm


@triton.jit
def load_taps(t_ptr, n, nm, HW, KK_PAD: tl.constexpr):
    """t[j, n[j, p]] as fp32 from a (K*K, H, W) tensor at t_ptr, [KK_PAD, BLOCK_P]."""
    j = tl.arange(0, KK_PAD).to(tl.int64)
    return tl.load(t_ptr + j[:, None] * HW + n, mask=nm, other=0.0).to(tl.float32)


@triton.jit
def store_taps(t_ptr, val, p, pm, HW, K: tl.constexpr, KK_PAD: tl.constexpr):
    """t[j, p] = val[j, p] into a (K*K, H, W) tensor at t_ptr, in its dtype."""
    j = tl.arange(0, KK_PAD)
    m = (j < K * K)[:, None] & pm[None, :]
    tl.store(t_ptr + j.to(tl.int64)[:, None] * HW + p[None, :], val.to(t_ptr.dtype.element_ty), mask=m)


@triton.jit
def correlate(a_ptr, b_ptr, p, pm, n, nm, C, HW, KK_PAD: tl.constexpr, BLOCK_P: tl.constexpr):
    """s[j, p] = sum_c a[c, p] * b[c, n[j, p]] (fp32) over the C planes at a_ptr and b_ptr."""
    s = tl.zeros([KK_PAD, BLOCK_P], tl.float32)
    for _ in range(C):
        av = tl.load(a_ptr + p, mask=pm, other=0.0).to(tl.float32)  # a[c, p]: once per channel, not per tap
        bv = tl.load(b_ptr + n, mask=nm, other=0.0).to(tl.float32)
        s += bv * av[None, :]
        a_ptr += HW
        b_ptr += HW
    return s


@triton.jit
def aggregate(w, x_ptr, n, nm, o_ptr, p, pm, C, HW):
    """o[c, p] = sum_j w[j, p] * x[c, n[j, p]] for the C planes at x_ptr, stored at o_ptr in its
    dtype; w is a fp32 [KK_PAD, BLOCK_P] tile kept in registers for every channel."""
    for _ in range(C):
        xv = tl.load(x_ptr + n, mask=nm, other=0.0).to(tl.float32)
        tl.store(o_ptr + p, tl.sum(w * xv, axis=0).to(o_ptr.dtype.element_ty), mask=pm)
        x_ptr += HW
        o_ptr += HW
