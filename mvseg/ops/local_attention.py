"""Local attention (CReFF, Hu et al. CVPR 2023, Sec. 3.2): for every pixel p, a softmax over
the KxK neighbours j of p of q(p)·k(j) (times `scale`; None = 1, no 1/sqrt(C), as AR-Seg's
code), and the weighted sum of v(j). Neighbours outside the image are excluded from the
softmax.

PyTorch reference: shift-and-accumulate in a custom autograd Function. Its memory is
O(B·C·H·W + B·K²·H·W): it keeps the attention weights (K² per pixel) but never builds the
K²·C unfold of k or v, in the forward or the backward pass.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mvseg.ops.window import shift, window_offsets


class _LocalAttentionTorch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, window: int, scale: float) -> Tensor:
        offs = window_offsets(window)
        ones = torch.ones_like(q[:, :1])
        logits = []
        for dy, dx in offs:
            s = (q * shift(k, dy, dx)).sum(1) * scale  # (B, H, W)
            valid = shift(ones, dy, dx)[:, 0] > 0
            logits.append(s.masked_fill(~valid, float("-inf")))
        p = torch.softmax(torch.stack(logits, 1), dim=1)  # (B, K*K, H, W)
        out = torch.zeros_like(v)
        for j, (dy, dx) in enumerate(offs):
            out += p[:, j : j + 1] * shift(v, dy, dx)
        ctx.save_for_backward(q, k, v, p)
        ctx.window, ctx.scale = window, scale
        return out

    @staticmethod
    def backward(ctx, dout: Tensor):
        q, k, v, p = ctx.saved_tensors
        offs = window_offsets(ctx.window)
        dp = torch.stack([(dout * shift(v, dy, dx)).sum(1) for dy, dx in offs], 1)  # (B, K*K, H, W)
        ds = p * (dp - (p * dp).sum(1, keepdim=True)) * ctx.scale  # softmax backward
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        for j, (dy, dx) in enumerate(offs):
            dq += ds[:, j : j + 1] * shift(k, dy, dx)
            dk += shift(ds[:, j : j + 1] * q, -dy, -dx)  # neighbour p + d receives from p
            dv += shift(p[:, j : j + 1] * dout, -dy, -dx)
        return dq, dk, dv, None, None


def local_attention_reference(q: Tensor, k: Tensor, v: Tensor, window: int = 7, scale: float | None = None) -> Tensor:
    """q, k, v (B, C, H, W) -> (B, C, H, W)."""
    if q.shape != k.shape or k.shape[:1] + k.shape[2:] != v.shape[:1] + v.shape[2:]:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)} and v {tuple(v.shape)} must share B, H, W (and q, k C)")
    return _LocalAttentionTorch.apply(q, k, v, window, 1.0 if scale is None else float(scale))


def local_attention_unfold(q: Tensor, k: Tensor, v: Tensor, window: int = 7, scale: float | None = None) -> Tensor:
    """The straightforward unfold implementation (B, C*K*K, H*W): the memory-hungry baseline
    the benchmark compares against. Same result as the reference."""
    import torch.nn.functional as F

    b, c, h, w = q.shape
    pad = window // 2
    ku = F.unfold(k, window, padding=pad).view(b, c, window * window, h, w)
    vu = F.unfold(v, window, padding=pad).view(b, v.shape[1], window * window, h, w)
    valid = F.unfold(torch.ones_like(q[:, :1]), window, padding=pad).view(b, 1, window * window, h, w) > 0
    s = (q.unsqueeze(2) * ku).sum(1, keepdim=True) * (1.0 if scale is None else scale)
    p = torch.softmax(s.masked_fill(~valid, float("-inf")), dim=2)
    return (p * vu).sum(2)
