"""Local attention (CReFF, Hu et al. CVPR 2023, Sec. 3.2): for every pixel p, a softmax over
the KxK neighbours j of p of q(p)·k(j) (times `scale`; None = 1, no 1/sqrt(C), as AR-Seg's
code), and the weighted sum of v(j). Neighbours outside the image are excluded from the
softmax.

PyTorch reference: shift-and-accumulate over views of one padded copy, in a custom autograd
Function. Its memory is
O(B·C·H·W + B·K²·H·W): it keeps the attention weights (K² per pixel) but never builds the
K²·C unfold of k or v, in the forward or the backward pass.

CPU inference fast path (`local_attention_banded`, the same arithmetic): the reference is
memory-bound at the paper's sizes (every one of the K² offsets streams whole (C, H, W) tensors
through memory); the banded one works channels-last on bands of rows that stay in cache.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mvseg.ops.window import window_offsets


def _padded(x: Tensor, r: int) -> Tensor:
    return F.pad(x, (r, r, r, r))


def _view(p: Tensor, r: int, dy: int, dx: int, h: int, w: int) -> Tensor:
    """The window offset (dy, dx) of a tensor padded by r: view[..., y, x] = x[..., y+dy, x+dx]."""
    return p[..., r + dy : r + dy + h, r + dx : r + dx + w]


class _LocalAttentionTorch(torch.autograd.Function):
    # one padded copy of k and v, then views per window offset (no copy per offset) and
    # in-place accumulation: 3x faster than shifting per offset at CReFF's CPU size (64x16x32)
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, window: int, scale: float) -> Tensor:
        offs = window_offsets(window)
        r, (h, w) = window // 2, q.shape[-2:]
        kp, vp, onesp = _padded(k, r), _padded(v, r), _padded(torch.ones_like(q[:, :1]), r)
        s = torch.stack([torch.linalg.vecdot(q, _view(kp, r, dy, dx, h, w), dim=1) for dy, dx in offs], 1)
        valid = torch.cat([_view(onesp, r, dy, dx, h, w) for dy, dx in offs], 1) > 0  # (B, K*K, H, W)
        p = torch.softmax((s * scale).masked_fill_(~valid, float("-inf")), dim=1)  # (B, K*K, H, W)
        out = torch.zeros_like(v)
        for j, (dy, dx) in enumerate(offs):
            out.addcmul_(_view(vp, r, dy, dx, h, w), p[:, j : j + 1])
        ctx.save_for_backward(q, k, v, p)
        ctx.window, ctx.scale = window, scale
        return out

    @staticmethod
    def backward(ctx, dout: Tensor):
        q, k, v, p = ctx.saved_tensors
        offs = window_offsets(ctx.window)
        r, (h, w) = ctx.window // 2, q.shape[-2:]
        kp, vp = _padded(k, r), _padded(v, r)
        dp = torch.stack([torch.linalg.vecdot(dout, _view(vp, r, dy, dx, h, w), dim=1) for dy, dx in offs], 1)
        ds = p * (dp - (p * dp).sum(1, keepdim=True)) * ctx.scale  # softmax backward, (B, K*K, H, W)
        dq = torch.zeros_like(q)
        dkp, dvp = torch.zeros_like(kp), torch.zeros_like(vp)  # neighbour p + d receives from p
        for j, (dy, dx) in enumerate(offs):
            dq.addcmul_(_view(kp, r, dy, dx, h, w), ds[:, j : j + 1])
            _view(dkp, r, dy, dx, h, w).addcmul_(q, ds[:, j : j + 1])
            _view(dvp, r, dy, dx, h, w).addcmul_(dout, p[:, j : j + 1])
        crop = (..., slice(r, r + h), slice(r, r + w))
        return dq, dkp[crop].contiguous(), dvp[crop].contiguous(), None, None


def local_attention_reference(q: Tensor, k: Tensor, v: Tensor, window: int = 7, scale: float | None = None) -> Tensor:
    """q, k, v (B, C, H, W) -> (B, C, H, W)."""
    if q.shape != k.shape or k.shape[:1] + k.shape[2:] != v.shape[:1] + v.shape[2:]:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)} and v {tuple(v.shape)} must share B, H, W (and q, k C)")
    return _LocalAttentionTorch.apply(q, k, v, window, 1.0 if scale is None else float(scale))


def _band_rows(width: int, channels: int, itemsize: int, band_bytes: int = 1 << 20) -> int:
    # ~1 MiB per band tensor: measured best on 2 cores at (64, 720, 960) and (512, 128, 256)
    return max(1, band_bytes // max(1, width * channels * itemsize))


def local_attention_banded(q: Tensor, k: Tensor, v: Tensor, window: int = 7, scale: float | None = None,
                           rows: int | None = None) -> Tensor:
    """The reference's forward (q, k, v (B, C, H, W) -> (B, C, H, W), no autograd), computed
    channels-last in bands of `rows` rows (default: about 1 MiB of q per band) so that the K²
    views of k and v a band reads stay in cache: 2.5-4x faster than the reference on a CPU at
    CReFF's paper sizes (`mvseg bench kernels`). Used by `ops.local_attention` for CPU tensors
    when no gradient is needed (inference, the streaming runtime, validation)."""
    if q.shape != k.shape or k.shape[:1] + k.shape[2:] != v.shape[:1] + v.shape[2:]:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)} and v {tuple(v.shape)} must share B, H, W (and q, k C)")
    offs = window_offsets(window)
    b, c, h, w = q.shape
    r, sc = window // 2, 1.0 if scale is None else float(scale)
    rows = rows or _band_rows(w, c, q.element_size())
    ql = q.permute(0, 2, 3, 1).contiguous()  # (B, H, W, C)
    kp = _padded(k, r).permute(0, 2, 3, 1).contiguous()  # (B, H+2r, W+2r, C)
    vp = _padded(v, r).permute(0, 2, 3, 1).contiguous()
    out = v.new_empty(b, h, w, v.shape[1])  # (B, H, W, Cv)
    d = torch.arange(-r, r + 1, device=q.device)
    col_ok = ((torch.arange(w, device=q.device)[:, None] + d) >= 0) & ((torch.arange(w, device=q.device)[:, None] + d) < w)
    row_all = torch.arange(h, device=q.device)[:, None] + d
    row_ok = (row_all >= 0) & (row_all < h)  # (H, K): neighbour row inside the image
    for y0 in range(0, h, rows):
        y1 = min(h, y0 + rows)
        qb = ql[:, y0:y1]  # (B, R, W, C)

        def view(t: Tensor, dy: int, dx: int) -> Tensor:  # neighbour (dy, dx) of the band's pixels
            return t[:, r + dy + y0 : r + dy + y1, r + dx : r + dx + w]

        s = torch.stack([torch.linalg.vecdot(qb, view(kp, dy, dx)) for dy, dx in offs], -1)  # (B, R, W, K*K)
        valid = (row_ok[y0:y1, None, :, None] & col_ok[None, :, None, :]).flatten(-2)  # (R, W, K*K)
        p = torch.softmax(s.mul_(sc).masked_fill_(~valid, float("-inf")), dim=-1)
        ob = out[:, y0:y1].zero_()
        for j, (dy, dx) in enumerate(offs):
            ob.addcmul_(view(vp, dy, dx), p[..., j : j + 1])
    return out.permute(0, 3, 1, 2)  # (B, Cv, H, W), channels-last in memory


def local_attention_unfold(q: Tensor, k: Tensor, v: Tensor, window: int = 7, scale: float | None = None) -> Tensor:
    """The straightforward unfold implementation (B, C*K*K, H*W): the memory-hungry baseline
    the benchmark compares against. Same result as the reference."""
    b, c, h, w = q.shape
    pad = window // 2
    ku = F.unfold(k, window, padding=pad).view(b, c, window * window, h, w)
    vu = F.unfold(v, window, padding=pad).view(b, v.shape[1], window * window, h, w)
    valid = F.unfold(torch.ones_like(q[:, :1]), window, padding=pad).view(b, 1, window * window, h, w) > 0
    s = (q.unsqueeze(2) * ku).sum(1, keepdim=True) * (1.0 if scale is None else scale)
    p = torch.softmax(s.masked_fill(~valid, float("-inf")), dim=2)
    return (p * vu).sum(2)
