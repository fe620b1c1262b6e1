"""Motion offset fields and their algebra: the grid, composing chains of per-frame offsets,
extending a chain by one frame, inverting a field, resizing it to a feature grid.

Convention (docs/conventions.md): an offset field is float32 ``[2, ceil(H/4), ceil(W/4)]``
(x then y, in pixels of the full frame, one cell per 4x4 block), "backward": the content at
pixel p of the current frame came from p + offset(p) in the reference frame; a mask marks the
cells that motion covers. Fields are made from block MVs by mvseg.video.motion.rasterize_mvs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

CELL = 4  # one offset cell per 4x4 pixel block


def grid_size(height: int, width: int, cell: int = CELL) -> tuple[int, int]:
    """Offset-grid size for a frame; partial blocks at the border get a cell of their own."""
    return math.ceil(height / cell), math.ceil(width / cell)


def cell_index(n_out: int, n_cells: int, device=None) -> Tensor:
    """For each of n_out output pixels spanning the same extent as n_cells cells, the cell
    containing the output pixel's centre, floor((i + 0.5) * n_cells / n_out), in integers (the
    lookup the warp kernel does per pixel; exact where a centre lies on a cell boundary, as
    every one does with features at 1/8 and cells at 1/4 of the frame)."""
    i = torch.arange(n_out, device=device)
    return ((2 * i + 1) * n_cells).div(2 * n_out, rounding_mode="floor").clamp_(max=max(n_cells - 1, 0))


# ----------------------------------------------------------------------------- sampling


def cell_centres(hc: int, wc: int, device=None) -> tuple[Tensor, Tensor]:
    """Pixel coordinates (x, y) of the centre of every cell, each [Hc, Wc]."""
    ys = torch.arange(hc, device=device, dtype=torch.float32) * CELL + (CELL - 1) / 2
    xs = torch.arange(wc, device=device, dtype=torch.float32) * CELL + (CELL - 1) / 2
    return xs.expand(hc, wc), ys[:, None].expand(hc, wc)


def sample_field(field: Tensor, x: Tensor, y: Tensor, mode: str = "bilinear") -> Tensor:
    """Sample a cell field [B, C, Hc, Wc] at pixel positions x, y [B, Hq, Wq] -> [B, C, Hq, Wq].

    Cell i's value sits at pixel 4i + 1.5; outside the grid the border value is used.
    """
    hc, wc = field.shape[-2:]
    u = (x - (CELL - 1) / 2) / CELL  # continuous cell coordinates
    v = (y - (CELL - 1) / 2) / CELL
    gx = 2 * u / max(wc - 1, 1) - 1
    gy = 2 * v / max(hc - 1, 1) - 1
    grid = torch.stack((gx, gy), dim=-1)
    return F.grid_sample(field, grid, mode=mode, padding_mode="border", align_corners=True)


def _batched(t: Tensor, dims: int) -> tuple[Tensor, bool]:
    return (t.unsqueeze(0), True) if t.dim() == dims else (t, False)


def compose(offsets: Sequence[Tensor], masks: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Compose a chain of offset fields by sampling (docs/conventions.md, "Motion": never by summing).

    offsets[0] maps the current frame to the next frame of the chain, offsets[1] that frame
    to the one after, and so on. For keyframe k -> frame t pass [f_t, f_{t-1}, ..., f_{k+1}]
    where f_j maps frame j to frame j-1. Each field is [2, Hc, Wc] or [B, 2, Hc, Wc], masks
    [Hc, Wc] or [B, Hc, Wc]. A cell stays valid only if every link is valid and the path
    stays inside the frame.

    The chain is folded from its far end, f_t o (f_{t-1} o (... o f_{k+1})), one `prepend` per
    link, so that a stream extends the composed field t-1 -> k to t -> k in O(1) (prepend
    f_t) and gets exactly the offsets the training samples use.
    """
    if len(offsets) == 0 or len(offsets) != len(masks):
        raise ValueError("compose needs one mask per offset field and at least one field")
    total, squeeze = _batched(offsets[-1].float(), 3)
    valid, _ = _batched(masks[-1].float(), 2)
    hc, wc = total.shape[-2:]
    bx, by = cell_centres(hc, wc, total.device)
    valid = valid * _inside(bx + total[:, 0], by + total[:, 1], hc, wc)
    for f, m in zip(reversed(offsets[:-1]), reversed(masks[:-1])):
        total, valid = prepend(f, m, total, valid)
    return (total[0], valid[0]) if squeeze else (total, valid)


def prepend(offset: Tensor, mask: Tensor, total: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """One link in front of a composed chain: `offset` maps frame t to t-1 and `total` maps
    t-1 to k; returns t -> k, i.e. offset(p) + total(p + offset(p)), and its mask (the link
    valid, the landing cell valid, the landing point inside the frame). Shapes as `compose`;
    `valid` must already hold the tail's own inside-the-frame test (as `compose` returns)."""
    f, f_single = _batched(offset.float(), 3)
    m, _ = _batched(mask.float(), 2)
    total, t_single = _batched(total.float(), 3)
    valid, _ = _batched(valid.float(), 2)
    squeeze = f_single and t_single  # unbatched result only when neither input has a batch
    b = max(f.shape[0], total.shape[0])
    hc, wc = f.shape[-2:]
    bx, by = cell_centres(hc, wc, f.device)
    x, y = bx + f[:, 0], by + f[:, 1]  # (B, Hc, Wc) where each cell lands in frame t-1
    x, y = x.expand(b, -1, -1), y.expand(b, -1, -1)
    out = f + sample_field(total.expand(b, -1, -1, -1), x, y)
    v = m * sample_field(valid.expand(b, -1, -1)[:, None], x, y, mode="nearest")[:, 0] * _inside(x, y, hc, wc)
    return (out[0], v[0]) if squeeze else (out, v)


def extend_chain(chain: tuple[Tensor, Tensor] | None, offset: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """A stream's composed offsets (t-1 -> k, mask) extended by frame t's field (t -> t-1)
    to t -> k in one `prepend`; `None` starts the chain at the frame after the keyframe. The
    result equals `compose([f_t, ..., f_{k+1}], ...)`, i.e. what the training samples use."""
    return compose([offset], [mask]) if chain is None else prepend(offset, mask, *chain)


def _inside(x: Tensor, y: Tensor, hc: int, wc: int) -> Tensor:
    return ((x > -0.5) & (x < wc * CELL - 0.5) & (y > -0.5) & (y < hc * CELL - 0.5)).float()


def invert(offset: Tensor, mask: Tensor, iterations: int = 20) -> tuple[Tensor, Tensor]:
    """Invert a backward field f (frame t -> t-1) into g (frame t-1 -> t).

    Fixed point (docs/conventions.md, "Motion"): g(q) = -f(q + g(q)), iterated from g = -f(q). Used for offsets
    from a future keyframe. Cells whose preimage is invalid or leaves the frame get mask 0.
    """
    f, squeeze = _batched(offset.float(), 3)
    m, _ = _batched(mask.float(), 2)
    b, _, hc, wc = f.shape
    bx, by = cell_centres(hc, wc, f.device)
    g = -f
    for _ in range(iterations):
        g = -sample_field(f, bx + g[:, 0], by + g[:, 1])
    x, y = bx + g[:, 0], by + g[:, 1]
    valid = sample_field(m[:, None], x, y, mode="nearest")[:, 0] * _inside(x, y, hc, wc)
    return (g[0], valid[0]) if squeeze else (g, valid)


def compose_forward(offsets: Sequence[Tensor], masks: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Offsets from frame t forward to frame n > t, given the backward fields of frames
    t+1..n (f_j maps j -> j-1): each is inverted and the inverses composed t -> t+1 -> ... -> n."""
    inv = [invert(o, m) for o, m in zip(offsets, masks)]
    return compose([g for g, _ in inv], [m for _, m in inv])


def to_feature_grid(offset: Tensor, size: tuple[int, int], frame_size: tuple[int, int]) -> Tensor:
    """Dense offsets on a feature grid: [.., 2, Hc, Wc] (frame pixels) -> [.., 2, Hf, Wf] in
    feature pixels (each feature pixel takes its cell's offset, scaled by Hf/H and Wf/W)."""
    hf, wf = size
    h, w = frame_size
    iy = cell_index(hf, offset.shape[-2], offset.device)
    ix = cell_index(wf, offset.shape[-1], offset.device)
    dense = offset[..., iy, :][..., ix]
    scale = torch.tensor([wf / w, hf / h], dtype=dense.dtype, device=dense.device)
    return dense * scale.view(2, 1, 1)


def resize_field(
    offset: Tensor, mask: Tensor, old_size: tuple[int, int], new_size: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """The field of a frame resized from old_size (H, W) to new_size: each new cell takes the
    old cell under its centre (nearest, block MVs are piecewise constant) and the offsets
    are scaled into new-frame pixels."""
    (h0, w0), (h1, w1) = old_size, new_size
    hc, wc = grid_size(h1, w1)
    cx, cy = cell_centres(hc, wc, offset.device)
    ox = ((cx[0] + 0.5) * w0 / w1 - 0.5).div(CELL).floor().long().clamp(0, offset.shape[-1] - 1)
    oy = ((cy[:, 0] + 0.5) * h0 / h1 - 0.5).div(CELL).floor().long().clamp(0, offset.shape[-2] - 1)
    new = offset[..., oy, :][..., ox]
    scale = torch.tensor([w1 / w0, h1 / h0], dtype=new.dtype, device=new.device)
    return new * scale.view(2, 1, 1), mask[..., oy, :][..., ox]
