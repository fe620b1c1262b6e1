"""Block motion vectors -> motion offset fields, and the field algebra on top of them.

Convention (docs/conventions.md): an offset field is float32 ``[2, ceil(H/4), ceil(W/4)]``
(x then y, in pixels of the full frame, one cell per 4x4 block), "backward": the content at
pixel p of the current frame came from p + offset(p) in the reference frame. Cells that no
MV covers (intra blocks, I-frames) carry zero offset and mask 0.

From FFmpeg's AVMotionVector, ``offset = (motion_x, motion_y) / motion_scale`` (src = dst +
motion/scale); src_x - dst_x is never used because it is truncated to whole pixels.

Rules for streams that are not encoded the way mvseg prepares its datasets
(``bframes=0:ref=1``):
- FFmpeg does not export the reference index. MVs are taken to reference the nearest anchor
  (I/P frame) before the frame (``source < 0``) or after it (``source > 0``), see
  `reference_distances`, and are divided by that distance to give per-frame offsets
  (constant velocity). Without B-frames that anchor is the previous frame.
- B-frames: where a block has a past MV it is used; a block with only a future MV takes it
  negated (constant velocity again).
- Multiple references: an MV to an older frame than the assumed anchor is over-scaled.
  `mvseg.video.decode` warns when the SPS allows more than one reference frame or the
  stream has B-frames: composed offsets are then approximate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mvseg.ops.warp import cell_index  # the warp's own cell lookup (re-exported here)

CELL = 4  # one offset cell per 4x4 pixel block


def grid_size(height: int, width: int, cell: int = CELL) -> tuple[int, int]:
    """Offset-grid size for a frame; partial blocks at the border get a cell of their own."""
    return math.ceil(height / cell), math.ceil(width / cell)


def reference_distances(pict_types: str) -> list[tuple[int, int]]:
    """Per frame (display order), the distance in frames to the anchor (I/P frame) that its
    past and its future MVs are assumed to reference: the nearest anchor before it and the
    nearest after it. Without B-frames every distance is 1. With B-frames, P-frames reference
    the previous anchor (e.g. 3 back in IBBP) and B-frames the anchors around them; this is
    an assumption (FFmpeg does not export the reference index), exact for IBBP without
    B-pyramid references and ref=1."""
    is_b = np.array([c in ("B", "b") for c in pict_types], bool)
    t = np.arange(len(is_b))
    anchors = np.concatenate([[-1], t[~is_b], [len(is_b)]])  # sentinels: distance 1 at the ends
    before = anchors[np.searchsorted(anchors, t, side="left") - 1]
    after = anchors[np.searchsorted(anchors, t, side="right")]
    past = np.maximum(t - before, 1)
    future = np.where(is_b, np.maximum(after - t, 1), 1)
    return list(zip(past.tolist(), future.tolist()))


def rasterize_mvs(
    mvs: np.ndarray, height: int, width: int, past_distance: float = 1, future_distance: float = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Raw AVMotionVector array of one frame -> (offset [2, Hc, Wc] float32, mask [Hc, Wc]).

    The offsets are per frame (to frame t-1): an MV to a reference `past_distance` frames back
    is divided by that distance, and one to a future reference is negated and divided by
    `future_distance` (constant velocity; both 1 for the streams mvseg encodes). Vectorised
    over MVs: every block (any H.264 partition 16x16 ... 4x4, or MPEG-4's 8x8) is painted on
    an index map of its cells, never in a Python loop over MVs. Block corners are multiples of
    the block's size, as both codecs place partitions (blocks of 8x8 and more are painted on an
    8x8 grid; a property test checks every cell against the blocks that cover it).
    """
    hc, wc = grid_size(height, width)
    offset = np.zeros((2, hc, wc), np.float32)
    mask = np.zeros((hc, wc), np.float32)
    if mvs is None or len(mvs) == 0:
        return offset, mask
    scale = np.maximum(mvs["motion_scale"], 1).astype(np.float32) * np.float32(past_distance)
    future = mvs["source"] > 0
    # Per-MV values with a trailing "no MV" entry, so an index of -1 reads offset 0, mask 0.
    vx = np.empty(len(mvs) + 1, np.float32)
    vy = np.empty(len(mvs) + 1, np.float32)
    np.divide(mvs["motion_x"], scale, out=vx[:-1])
    np.divide(mvs["motion_y"], scale, out=vy[:-1])
    vx[-1] = vy[-1] = 0.0
    if future.any():  # constant-velocity rule: a future MV, negated, stands for the past one
        ratio = np.float32(-past_distance / future_distance)
        vx[:-1][future] *= ratio
        vy[:-1][future] *= ratio
    w, h = mvs["w"].astype(np.int32), mvs["h"].astype(np.int32)
    x0 = mvs["dst_x"] - w // 2  # block corner in pixels (dst is the centre)
    y0 = mvs["dst_y"] - h // 2
    # Index maps (which MV covers each cell), one per direction; past MVs win over future ones.
    # Blocks of 8x8 and larger are painted on an 8x8 grid and up-sampled (4x fewer writes than
    # painting every 4x4 cell); smaller partitions are painted on the 4x4 grid afterwards.
    coarse = (w >= 8) & (h >= 8)
    maps = []
    for direction in (~future, future) if future.any() else (~future,):
        idx8 = _paint(np.nonzero(direction & coarse)[0], x0, y0, w, h, 8, grid_size(height, width, 8))
        idx = np.repeat(np.repeat(idx8, 2, 0), 2, 1)
        small = np.nonzero(direction & ~coarse)[0]
        if len(small):
            idx = _paint(small, x0, y0, w, h, CELL, idx.shape, idx)
        maps.append(idx[:hc, :wc])
    idx = maps[0] if len(maps) == 1 else np.where(maps[0] >= 0, maps[0], maps[1])
    np.take(vx, idx, out=offset[0])
    np.take(vy, idx, out=offset[1])
    np.greater_equal(idx, 0, out=mask, casting="unsafe")
    return offset, mask


def _paint(sel, x0, y0, w, h, cell: int, shape: tuple[int, int], idx: np.ndarray | None = None) -> np.ndarray:
    """Index map of `cell`-pixel cells (at least `shape`, grown to hold every block) with the
    MV indices `sel` written over their blocks; -1 where no MV."""
    cx, cy = x0[sel] // cell, y0[sel] // cell
    nx, ny = np.maximum(w[sel] // cell, 1), np.maximum(h[sel] // cell, 1)
    ok = (cx >= 0) & (cy >= 0)
    if not ok.all():  # corrupt MVs outside the coded picture are dropped
        sel, cx, cy, nx, ny = sel[ok], cx[ok], cy[ok], nx[ok], ny[ok]
    if len(sel):  # a coded picture is padded to whole macroblocks: grow the map to hold them
        shape = (max(shape[0], int((cy + ny).max())), max(shape[1], int((cx + nx).max())))
    if idx is None:
        idx = np.full(shape, -1, np.int32)
    elif idx.shape != shape:
        grown = np.full(shape, -1, np.int32)
        grown[: idx.shape[0], : idx.shape[1]] = idx
        idx = grown
    if len(sel):
        # Write every block's k x k stencil; stencil cells past a block's own span are clamped
        # onto its last row/column (a harmless rewrite of the same index), so no masks needed.
        stride = idx.shape[1]
        flat, base = idx.reshape(-1), cy * stride + cx
        ly, lx = ny - 1, nx - 1
        for dy in range(int(ny.max())):
            row = base + np.minimum(ly, dy) * stride if dy else base
            for dx in range(int(nx.max())):
                flat[row + np.minimum(lx, dx) if dx else row] = sel
    return idx


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
    """Compose a chain of offset fields by sampling (DESIGN.md: never by summing).

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

    Fixed point (DESIGN.md): g(q) = -f(q + g(q)), iterated from g = -f(q). Used for offsets
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
