"""Backward warping by block motion offsets: the PyTorch reference.

`warp(features, offsets)` samples ``features`` at p + offset(p) for every output pixel p
(bilinear, zeros outside). The offset grid may be coarser than the feature grid (block
MVs at 1/4 of the frame): each output pixel reads the offset of the cell containing its
centre (`cell_index`, exact integer arithmetic), scaled from frame pixels to feature pixels.

The rules the Triton kernel follows too (triton_kernels.warp): sample positions are computed
in fp32 whatever the feature dtype (fp64 for fp64 features); a NaN position reads zero and
passes no gradient; positions are clamped to [-2, size + 1], where they are still outside.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mvseg.ops.fields import cell_index
from triton_kernels import validate


def warp_reference(
    features: Tensor,
    offsets: Tensor,
    mask: Tensor | None = None,
    frame_size: tuple[int, int] | None = None,
    padding_mode: str = "zeros",
) -> Tensor:
    """features [B, C, Hf, Wf], offsets [B, 2, Hm, Wm] in frame pixels, mask [B, Hm, Wm].

    frame_size: (H, W) of the frame the offsets are measured in; default (4*Hm, 4*Wm), the
    4x4-cell MV grid (docs/conventions.md, "Motion"). Cells with mask 0 take zero offset. padding_mode "zeros"
    (the kernel contract) or "border" (used to warp whole images). Returns [B, C, Hf, Wf].
    """
    h, w = validate.warp_args(features, offsets, mask, frame_size)
    b, c, hf, wf = features.shape
    pos_dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
    dev = features.device
    if features.numel() == 0:  # nothing to sample; keep both inputs in the graph (zero gradients)
        return features + offsets.sum().to(features.dtype) * 0
    sx, sy = wf / w, hf / h  # frame pixels -> feature pixels
    off = offsets.to(pos_dtype)
    if mask is not None:
        off = off * mask.unsqueeze(1).to(pos_dtype)
    iy, ix = cell_index(hf, off.shape[-2], dev), cell_index(wf, off.shape[-1], dev)
    cells = off[:, :, iy][:, :, :, ix]  # (B, 2, Hf, Wf): each pixel's cell offset, in frame pixels
    px = torch.arange(wf, device=dev, dtype=pos_dtype) + cells[:, 0] * sx  # (B, Hf, Wf) feature pixels
    py = torch.arange(hf, device=dev, dtype=pos_dtype).view(hf, 1) + cells[:, 1] * sy
    ok = ~(px.isnan() | py.isnan())
    px = torch.where(ok, px, -2.0).clamp(-2.0, wf + 1.0)
    py = torch.where(ok, py, -2.0).clamp(-2.0, hf + 1.0)
    # align_corners=False normalisation, (2x + 1) / W - 1: a size-1 axis still moves (with
    # align_corners=True, grid_sample maps every coordinate of a size-1 axis to pixel 0)
    grid = torch.stack(((2 * px + 1) / wf - 1, (2 * py + 1) / hf - 1), -1)  # (B, Hf, Wf, 2)
    src = features if features.dtype == pos_dtype else features.to(pos_dtype)  # fp16/bf16 sampled in fp32
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)
    if padding_mode != "zeros":  # with zeros, a NaN position (moved to -2) already reads zero
        out = out * ok.unsqueeze(1)
    return out.to(features.dtype)
