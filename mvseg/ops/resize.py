"""Bilinear resizing of logits as two small matrix products: the CPU fast path of
``F.interpolate(x, size, mode="bilinear", align_corners=False)``.

Bilinear interpolation is separable: resizing (H, W) -> (H', W') is ``R_y @ x @ R_x^T`` with
R_y (H', H) and R_x (W', W) holding the two taps of each output row / column. Up-sampling a
segmentation head's 1/8-resolution logits to the frame is the last step of every method, and
on a CPU torch's interpolate kernel costs several times the two matmuls at the synthetic recipes'
sizes (the resize cases of `mvseg bench kernels`; figures in docs/results.md): a large share of a
prop-MV non-keyframe. The dense matmul does h MACs per output instead of 2, so it only pays for
small inputs: `resize_bilinear` takes it on CPU tensors up to MATMUL_MAX_INPUT rows and
columns and calls F.interpolate otherwise (and on GPUs, where that kernel is already fast).
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

MATMUL_MAX_INPUT = 64  # beyond this the dense matmul costs about what F.interpolate does (measured at 128 -> 1024)


@lru_cache(maxsize=64)
def _taps(n_in: int, n_out: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(n_out, n_in) matrix of align_corners=False bilinear taps, as torch's CPU/CUDA kernels
    compute them: source = (dst + 0.5) * n_in / n_out - 0.5, clamped below at 0, two taps."""
    # cached for every later call: never an inference tensor, which autograd would refuse to
    # save for backward in a training step after a streaming run
    with torch.inference_mode(False):
        dst = torch.arange(n_out, dtype=torch.float64)
        src = ((dst + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
        i0 = src.floor().long().clamp(max=n_in - 1)
        i1 = (i0 + 1).clamp(max=n_in - 1)
        w1 = src - i0
        r = torch.zeros(n_out, n_in, dtype=torch.float64)
        rows = torch.arange(n_out)
        r.index_put_((rows, i0), 1 - w1, accumulate=True)
        r.index_put_((rows, i1), w1, accumulate=True)  # i0 == i1 at the last row: the taps add to 1
        return r.to(dtype=dtype, device=device)


def resize_bilinear_matmul(x: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, C, H, W) -> (B, C, H', W') by R_y @ x @ R_x^T; equals F.interpolate(bilinear,
    align_corners=False, antialias=False) up to float rounding, gradients included."""
    h, w = x.shape[-2:]
    ry = _taps(h, size[0], x.dtype, x.device)  # (H', H)
    rx = _taps(w, size[1], x.dtype, x.device)  # (W', W)
    return ry @ (x @ rx.T)  # (B, C, H, W') then (B, C, H', W')


def resize_bilinear(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize (align_corners=False) of (B, C, H, W) to `size`: the matmul form on a
    CPU for inputs up to MATMUL_MAX_INPUT on a side, F.interpolate otherwise."""
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    if x.device.type == "cpu" and x.is_floating_point() and max(x.shape[-2:]) <= MATMUL_MAX_INPUT:
        return resize_bilinear_matmul(x, size)
    return F.interpolate(x, size, mode="bilinear", align_corners=False)
