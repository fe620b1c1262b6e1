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

from mvseg.video.motion import CELL, cell_index


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
    hm, wm = offsets.shape[-2:]
    if frame_size is None:
        frame_size = (hm * CELL, wm * CELL)
    # Scale and normalise on the (small) cell grid, then gather straight into grid_sample's
    # (B, Hf, Wf, 2) layout: the dense grid is built with one gather and one add.
    ax, ay = 2 / max(wf - 1, 1), 2 / max(hf - 1, 1)  # feature pixels -> [-1, 1]
    sx, sy = wf / frame_size[1], hf / frame_size[0]  # frame pixels -> feature pixels
    off = offsets if mask is None else offsets * mask.unsqueeze(1).to(offsets.dtype)
    scale = torch.tensor([sx * ax, sy * ay], dtype=features.dtype, device=features.device)
    cells = off.to(features.dtype).permute(0, 2, 3, 1) * scale  # (B, Hm, Wm, 2)
    iy = cell_index(hf, hm, features.device)
    ix = cell_index(wf, wm, features.device)
    ys = torch.arange(hf, device=features.device, dtype=features.dtype) * ay - 1
    xs = torch.arange(wf, device=features.device, dtype=features.dtype) * ax - 1
    base = torch.stack(torch.broadcast_tensors(xs.view(1, wf), ys.view(hf, 1)), -1)  # (Hf, Wf, 2)
    grid = cells[:, iy][:, :, ix] + base  # (B, Hf, Wf, 2)
    return F.grid_sample(features, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)
