"""Shifts over a KxK window: the building block of the memory-lean PyTorch references.

A "shift-and-accumulate" reference visits the K*K window offsets one at a time and never
materialises a [B, C*K*K, H, W] unfold of its input.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def window_offsets(k: int) -> list[tuple[int, int]]:
    """(dy, dx) of a KxK window in row-major order (the order of kernel index j)."""
    if k < 1 or k % 2 == 0:
        raise ValueError(f"window size must be odd and >= 1, got {k}")
    r = k // 2
    return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]


def shift(x: Tensor, dy: int, dx: int) -> Tensor:
    """result[..., y, x] = x[..., y + dy, x + dx], zero where that falls outside."""
    if dy == 0 and dx == 0:
        return x
    h, w = x.shape[-2:]
    p = F.pad(x, (max(-dx, 0), max(dx, 0), max(-dy, 0), max(dy, 0)))
    y0, x0 = max(dy, 0), max(dx, 0)
    return p[..., y0 : y0 + h, x0 : x0 + w]
