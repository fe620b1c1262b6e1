"""Local attention (CReFF, Hu et al. CVPR 2023, Sec. 3.2): for every pixel p, a softmax over
the KxK neighbours j of p of q(p)·k(j) (times `scale`; None = 1, no 1/sqrt(C), as AR-Seg's
code), and the weighted sum of v(j). Neighbours outside the image are excluded from the
softmax.

PyTorch reference: shift-and-accumulate over views of one padded copy, in a custom autograd
Function. Its memory is
O(B·C·H·W + B·K²·H·W): it keeps the attention weights (K² per pixel) but never builds the
K²·C unfold of k or v, in the forward or the backward pass.

CPU inference fast path (`local_attention_blocked`, the same sums): batched matrix products
over blocks of pixels; the reference is memory-bound at the paper's sizes (every one of the K²
offsets streams whole (C, H, W) tensors through memory).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mvseg.ops.window import window_offsets
from triton_kernels import validate


def _padded(x: Tensor, r: int) -> Tensor:
    return F.pad(x, (r, r, r, r))


def _view(p: Tensor, r: int, dy: int, dx: int, h: int, w: int) -> Tensor:
    """The window offset (dy, dx) of a tensor padded by r: view[..., y, x] = x[..., y+dy, x+dx]."""
    return p[..., r + dy : r + dy + h, r + dx : r + dx + w]


class _LocalAttentionTorch(torch.autograd.Function):
    # one padded copy of k and v, then views per window offset (no copy per offset) and
    # in-place accumulation: faster than shifting per offset at CReFF's CPU size (64x16x32;
    # `mvseg bench kernels`, docs/results.md "Why the code is as it is")
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, window: int, scale: float) -> Tensor:
        offs = window_offsets(window)
        r, (h, w) = window // 2, q.shape[-2:]
        kp, vp, onesp = _padded(k, r), _padded(v, r), _padded(q.new_ones(q.shape[0], 1, h, w), r)
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
    """q, k (B, C, H, W), v (B, Cv, H, W) -> (B, Cv, H, W), in the inputs' dtype (float64 too)."""
    validate.local_attention_args(q, k, v, window)
    return _LocalAttentionTorch.apply(q, k, v, window, 1.0 if scale is None else float(scale))


def _padded_channels_last(t: Tensor, top: int, left: int, height: int, width: int) -> Tensor:
    """t (B, C, H, W) -> (B, height, width, C), t at rows top.., columns left.., zeros around."""
    b, c, h, w = t.shape
    p = t.new_empty(b, height, width, c)
    p[:, :top].zero_()
    p[:, top + h :].zero_()
    p[:, top : top + h, :left].zero_()
    p[:, top : top + h, left + w :].zero_()
    p[:, top : top + h, left : left + w] = t.permute(0, 2, 3, 1)
    return p


def local_attention_blocked(
    q: Tensor, k: Tensor, v: Tensor, window: int = 7, scale: float | None = None, block: int = 8, rows: int = 32
) -> Tensor:
    """The reference's forward (q, k, v (B, C, H, W) -> (B, Cv, H, W), no autograd) as batched
    matrix products, for CPU inference: the reference streams whole (C, H, W) tensors through
    memory once per window offset and is memory-bound at CReFF's paper sizes.

    Channels-last, the queries of a row are cut into blocks of `block` pixels; for a window row
    dy, a block's keys are one contiguous run of block + K - 1 pixels of row y + dy, so every
    block of a band of `rows` rows is a strided view of the padded k (no copy: the padded width
    is a multiple of `block`, which makes the stride between blocks uniform across rows), and
    Q_blk (block, C) @ K_blk^T (C, block + K - 1) gives all K scores of the row for the block
    (the K diagonals of the product; the rest, (K - 1) / block of the work, is discarded).
    Softmax over the K² scores, then the same with the weights placed on the diagonals of a
    (block, block + K - 1) matrix times the block's V. Several times faster than the reference
    at paper sizes on a CPU (`mvseg bench kernels`; figures in docs/results.md); used by
    `ops.local_attention` for CPU tensors when no gradient is needed."""
    validate.local_attention_args(q, k, v, window)
    bsz, c, h, w = q.shape
    cv, r, kk = v.shape[1], window // 2, window
    kw = block + 2 * r  # keys of a block in one window row
    wq = -(-(w + 2 * r) // block) * block  # padded width: r zeros left, >= r right, a multiple of block
    nbq, top = wq // block, 1 + r  # one spare row above and below: the first and last views stay in memory
    kp = _padded_channels_last(k, top, r, h + 2 * top, wq)  # (B, H+2r+2, Wq, C)
    vp = _padded_channels_last(v, top, r, h + 2 * top, wq)
    qp = _padded_channels_last(q, 0, r, h, wq)  # (B, H, Wq, C): query x at column x + r, as its keys
    out = q.new_empty(bsz, h, wq, cv)
    d = torch.arange(-r, r + 1, device=q.device)
    xs = torch.arange(wq, device=q.device)[:, None] - r + d
    col_ok = ((xs >= 0) & (xs < w)).view(1, nbq, block, 1, kk)  # neighbour column inside the image
    ys = torch.arange(h, device=q.device)[:, None] + d
    row_ok = ((ys >= 0) & (ys < h)).view(h, 1, 1, kk, 1)
    sc = 1.0 if scale is None else float(scale)
    diag = lambda m, n: m.as_strided((n, block, kk), (block * kw, kw + 1, 1), m.storage_offset())  # noqa: E731

    def keys(t: Tensor, y: int, n: int) -> Tensor:  # (n, kw, C) views: every block's keys in padded row y
        ch = t.shape[-1]
        return t.as_strided((n, kw, ch), (block * ch, ch, 1), t.storage_offset() + (y * wq - r) * ch)

    for b in range(bsz):
        for y0 in range(0, h, rows):
            y1 = min(h, y0 + rows)
            n = (y1 - y0) * nbq
            qb = qp[b, y0:y1].view(n, block, c)  # (n, block, C)
            s = q.new_empty(n, block, kk, kk)  # scores (block, dy, dx)
            for i in range(kk):
                prod = torch.bmm(qb, keys(kp[b], top + y0 + i - r, n).transpose(1, 2))  # (n, block, kw)
                s[:, :, i] = diag(prod, n)
            s = s.view(y1 - y0, nbq, block, kk, kk).mul_(sc).masked_fill_(~(row_ok[y0:y1] & col_ok), float("-inf"))
            p = torch.softmax(s.view(n, block, kk * kk), dim=-1).view(n, block, kk, kk)
            ob = out[b, y0:y1].view(n, block, cv)
            pm = q.new_zeros(n, block, kw)  # weights on the diagonals, zeros elsewhere
            for i in range(kk):
                diag(pm, n).copy_(p[:, :, i])
                vb = keys(vp[b], top + y0 + i - r, n)  # (n, kw, Cv)
                if i == 0:
                    torch.bmm(pm, vb, out=ob)
                else:
                    ob.baddbmm_(pm, vb)
    return out[:, :, r : r + w].permute(0, 3, 1, 2)  # (B, Cv, H, W), channels-last in memory


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
