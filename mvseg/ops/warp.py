"""Backward warping by block motion offsets: the PyTorch reference.

`warp(features, offsets)` samples ``features`` at p + offset(p) for every output pixel p
(bilinear, zeros outside). The offset grid may be coarser than the feature grid (block
MVs at 1/4 of the frame): each output pixel reads the offset of the cell containing its
centre, scaled from frame pixels to feature pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mvseg.video.motion import CELL, to_feature_grid


def warp_reference(
    features: Tensor,
    offsets: Tensor,
    mask: Tensor | None = None,
    frame_size: tuple[int, int] | None = None,
    padding_mode: str = "zeros",
) -> Tensor:
    """features [B, C, Hf, Wf], offsets [B, 2, Hm, Wm] in frame pixels, mask [B, Hm, Wm].

    frame_size: (H, W) of the frame the offsets are measured in; default (4*Hm, 4*Wm), the
    4x4-cell MV grid of DESIGN.md. Cells with mask 0 take zero offset. padding_mode "zeros"
    (the kernel contract) or "border" (used to warp whole images). Returns [B, C, Hf, Wf].
    """
    b, _, hf, wf = features.shape
    if frame_size is None:
        frame_size = (offsets.shape[-2] * CELL, offsets.shape[-1] * CELL)
    off = offsets if mask is None else offsets * mask.unsqueeze(1).to(offsets.dtype)
    dense = to_feature_grid(off.to(features.dtype), (hf, wf), frame_size)  # (B, 2, Hf, Wf)
    ys = torch.arange(hf, device=features.device, dtype=features.dtype)
    xs = torch.arange(wf, device=features.device, dtype=features.dtype)
    gx = (xs.view(1, 1, wf) + dense[:, 0]) * (2 / max(wf - 1, 1)) - 1
    gy = (ys.view(1, hf, 1) + dense[:, 1]) * (2 / max(hf - 1, 1)) - 1
    grid = torch.stack((gx, gy), dim=-1)  # (B, Hf, Wf, 2)
    return F.grid_sample(features, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)
