"""Block motion vectors -> motion offset fields (the field algebra on top of them: mvseg.ops.fields).

Convention (docs/conventions.md): an offset field is float32 ``[2, ceil(H/4), ceil(W/4)]``
(x then y, in pixels of the full frame, one cell per 4x4 block), "backward": the content at
pixel p of the current frame came from p + offset(p) in the reference frame. In the bitstream
cells that no MV covers (intra blocks, I-frames) carry zero offset and mask 0; `iter_fields`
estimates both by default (the intra-block and I-frame rules, docs/methods.md).

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

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from mvseg.ops.fields import CELL, grid_size
from mvseg.video import raster_jit
from mvseg.video.decode import DecodedFrame, VideoReader, iter_frames


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


INTRA_RULES = ("fill", "none")
MB = 16  # macroblock side in pixels: intra coding is decided per macroblock (H.264, MPEG-1/2/4, H.263)


def rasterize_mvs(
    mvs: np.ndarray,
    height: int,
    width: int,
    past_distance: float = 1,
    future_distance: float = 1,
    intra: str = "none",
    radius: int = 2,
    max_share: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Raw AVMotionVector array of one frame -> (offset [2, Hc, Wc] float32, mask [Hc, Wc]).

    The offsets are per frame (to frame t-1): an MV to a reference `past_distance` frames back
    is divided by that distance, and one to a future reference is negated and divided by
    `future_distance` (constant velocity; both 1 for the streams mvseg encodes). Vectorised
    over MVs: every block (any H.264 partition 16x16 ... 4x4, or MPEG-4's 8x8) is painted on
    an index map of its cells, never in a Python loop over MVs. Block corners are multiples of
    the block's size, as both codecs place partitions (blocks of 8x8 and more are painted on an
    8x8 grid; a property test checks every cell against the blocks that cover it).

    ``intra="fill"``: the intra-block rule (docs/methods.md, "Intra blocks"). Cells no MV covers
    take the motion of their macroblock (the area-weighted mean of its MVs) or, for a macroblock
    with no MV (intra), the mean of its known 8-neighbour macroblocks, grown `radius` macroblocks
    into an intra region (one ring a step), and mask 1. A frame with more than `max_share` of
    its macroblocks without MVs is left as it is (a scene cut coded as a P-frame: new content).
    The reference (loops over macroblocks) is in tests/video/test_motion.py.

    With numba, frames of FFmpeg's 8/16-pixel blocks go through the compiled `raster_jit` kernel
    (the same result bit for bit, faster, without the GIL: `mvseg bench video`); this NumPy code is
    its reference.
    """
    hc, wc = grid_size(height, width)
    if mvs is not None and len(mvs):
        fast = raster_jit.rasterize(
            mvs, height, width, hc, wc, past_distance, future_distance, intra == "fill", radius, max_share
        )
        if fast is not None:  # the compiled path (mvseg.video.raster_jit): the same field, bit for bit
            return fast
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
    coarse = (w >= 8) & (h >= 8)
    directions = (~future, future) if future.any() else (~future,)
    base = None  # the 8x8-grid index map painting starts from: -1, or each macroblock's fill entry
    if intra == "fill":
        fill = _intra_fill(x0, y0, w, h, vx[:-1], vy[:-1], height, width, radius, max_share)
        if fill is not None:
            entry, fx, fy = fill  # per macroblock, its value's index in the extended vx, vy (-1: none)
            zero = np.zeros(1, np.float32)  # the "no MV" entry stays last: index -1 reads 0
            vx, vy = np.concatenate([vx[:-1], fx, zero]), np.concatenate([vy[:-1], fy, zero])
            base = np.repeat(np.repeat(entry, 2, 0), 2, 1)
    # Index maps (which MV covers each cell), one per direction; past MVs win over future ones.
    # Blocks of 8x8 and larger are painted on an 8x8 grid and up-sampled (4x fewer writes than
    # painting every 4x4 cell); smaller partitions are painted on the 4x4 grid afterwards.
    maps = []
    for i, direction in enumerate(directions):
        start = base if i == len(directions) - 1 else None  # the fill under the last map only
        idx8 = _paint(np.nonzero(direction & coarse)[0], x0, y0, w, h, 8, grid_size(height, width, 8), start)
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


@functools.lru_cache(maxsize=8)
def _mb_range(hm: int, wm: int) -> np.ndarray:
    """Row-major macroblock numbers, (hm, wm) int32 (one per frame size)."""
    return np.arange(hm * wm, dtype=np.int32).reshape(hm, wm)


def _intra_fill(x0, y0, w, h, vx, vy, height: int, width: int, radius: int, max_share: float):
    """Per-macroblock motion for `rasterize_mvs(intra="fill")`: (entry [hm, wm] int32, fx, fy), where
    entry indexes fx/fy placed after the n MVs (n + j for macroblock j) or is -1 where a macroblock
    stays unknown; None when every macroblock has MVs or the frame is left as it is. A block
    (corner x0, y0, size w x h, per-frame motion vx, vy) belongs to the macroblock holding its
    centre: the codecs' blocks are at most 16x16."""
    hm, wm = -(-height // MB), -(-width // MB)
    by = np.minimum(np.maximum((y0 + (h >> 1)) >> 4, 0), hm - 1)  # >> 4: MB = 16
    b = by * wm + np.minimum(np.maximum((x0 + (w >> 1)) >> 4, 0), wm - 1)
    area = (w * h).astype(np.float32)
    n = hm * wm
    acc = np.bincount(np.concatenate([b, b + n, b + 2 * n]), np.concatenate([area, area * vx, area * vy]), 3 * n)
    weight = acc[:n]
    known = weight > 0
    n_known = np.count_nonzero(known)
    if n_known == known.size or n_known < (1 - max_share) * known.size or n_known == 0:
        return None
    mean = (acc[n:].reshape(2, hm, wm) / np.maximum(weight, 1e-9).reshape(hm, wm)).astype(np.float32)  # 0 where unknown
    known = known.reshape(hm, wm)
    buf = np.zeros((3, hm + 2, wm + 2), np.float32)  # (known, known * mean), zero-padded by one
    for _ in range(radius):  # one ring a step: the mean of the known 8-neighbours
        if known.all():
            break
        buf[0, 1:-1, 1:-1] = known
        buf[1:, 1:-1, 1:-1] = mean
        rows = buf[:, :-2] + buf[:, 1:-1] + buf[:, 2:]  # 3x3 box sums in two separable passes
        box = rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:]
        grow = ~known & (box[0] > 0)
        if not grow.any():
            break
        mean = np.where(grow, box[1:] / np.maximum(box[0], 1), mean)
        known = known | grow
    entry = np.where(known, _mb_range(hm, wm) + len(vx), -1).astype(np.int32)
    return entry, mean[0].reshape(-1), mean[1].reshape(-1)


def _paint(sel, x0, y0, w, h, cell: int, shape: tuple[int, int], idx: np.ndarray | None = None) -> np.ndarray:
    """Index map of `cell`-pixel cells (at least `shape`, grown to hold every block) with the
    MV indices `sel` written over their blocks; where no MV, -1 or what `idx` (painted over) held."""
    cx, cy = x0[sel] // cell, y0[sel] // cell
    nx, ny = np.maximum(w[sel] // cell, 1), np.maximum(h[sel] // cell, 1)
    ok = (cx >= 0) & (cy >= 0)
    if not ok.all():  # corrupt MVs outside the coded picture are dropped
        sel, cx, cy, nx, ny = sel[ok], cx[ok], cy[ok], nx[ok], ny[ok]
    if len(sel):  # a coded picture is padded to whole macroblocks: grow the map to hold them
        shape = (max(shape[0], int((cy + ny).max())), max(shape[1], int((cx + nx).max())))
    if idx is not None:
        shape = (max(shape[0], idx.shape[0]), max(shape[1], idx.shape[1]))
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


IFRAME_RULES = ("extrapolate", "none")
FIELD_RULES = {"iframes": "extrapolate", "intra": "fill"}  # iter_fields' defaults: what caches and tables record


def iter_fields(
    path: str | Path | VideoReader,
    *,
    rgb: bool | Callable[[int, str], bool] = True,
    strict_mvs: bool = True,
    iframes: str = "extrapolate",
    intra: str = "fill",
    prefetch: int = 0,
) -> Iterator[tuple[DecodedFrame, np.ndarray, np.ndarray]]:
    """The one way from a video to motion: every decoded frame (display order, bounded memory)
    with its offset field to the previous frame, float32 (2, Hc, Wc), and mask (Hc, Wc), the
    B-frame rule applied (`reference_distances`, in the same pass: a B-frame is held until the
    next anchor is decoded, at most a B-run). What the runtime, the dataset cache, the oracle bench and the
    motion report all read; `rgb`, `strict_mvs` and `prefetch` as in `iter_frames` (with
    prefetch the MVs of the next frames are decoded while this rasterises the current one).

    The I-frame rule (docs/methods.md, "A chain that meets an I-frame"): an I-frame carries no
    MVs, so a chain through it (interp-MV's current frame -> next keyframe when that keyframe is
    an I-frame, or any chain across a GOP boundary) would be cut there. With
    ``iframes="extrapolate"`` (the default) an I-frame that follows a frame with motion takes
    that frame's field and mask (constant velocity over one frame, the rule B-frames already
    use); ``"none"`` leaves it zero with mask 0 (the bitstream as it is: the motion report).
    The first frame, and an I-frame after another I-frame, have nothing to extrapolate from.

    The intra-block rule (docs/methods.md, "Intra blocks"): with ``intra="fill"`` (the default)
    cells of an inter frame that no MV covers take the motion of the macroblocks around them
    (`rasterize_mvs`); ``"none"`` leaves them zero with mask 0 (the bitstream: the motion report).

    Frames whose MVs are not motion: a frame the decoder flags corrupt gets mask 0 (its MVs
    are error concealment); a frame whose codec's MVs are known to be missing (MPEG-4 Part 2
    B-frames, `CODECS`) takes the next anchor's per-frame field.
    """
    if iframes not in IFRAME_RULES:
        raise ValueError(f"iframes must be one of {IFRAME_RULES}, got {iframes!r}")
    if intra not in INTRA_RULES:
        raise ValueError(f"intra must be one of {INTRA_RULES}, got {intra!r}")
    h = w = 0  # the frame size, from the first frame (no second open of the file to probe it)
    prev = None  # the field of the frame yielded last (display order)
    held: list[DecodedFrame] = []  # B-frames, until the next anchor says how far ahead it is
    last_anchor = -1  # as `reference_distances`' sentinel: distance t + 1 before the first anchor

    def release(anchor: int, anchor_field: tuple[np.ndarray, np.ndarray] | None) -> Iterator:
        # The held B-frames, with the distances `reference_distances` gives (one pass: a B-frame's
        # future anchor is known once it is decoded, at most a B-run later).
        nonlocal prev
        for b in held:
            if b.corrupt:  # concealment MVs are not motion
                off, mask = rasterize_mvs(None, h, w)
            elif b.mvs_missing:
                # MVs known to be wrong (MPEG-4 B-frames): the later anchor's per-frame field (its
                # MVs over the anchor distance), the motion composed around the B-frame through
                # the anchors at constant velocity; before an I-frame, the earlier motion
                fill = anchor_field if anchor_field is not None else prev
                off, mask = (fill[0].copy(), fill[1].copy()) if fill is not None else rasterize_mvs(None, h, w)
            else:
                off, mask = rasterize_mvs(b.mvs, h, w, max(b.index - last_anchor, 1), max(anchor - b.index, 1), intra)
            prev = (off, mask)
            yield b, off, mask
        held.clear()

    n = 0
    for f in iter_frames(path, rgb=rgb, strict_mvs=strict_mvs, prefetch=prefetch):
        n, h, w = f.index + 1, f.height, f.width
        if f.pict_type in ("B", "b"):
            held.append(f)
            continue
        off, mask = rasterize_mvs(f.mvs, h, w, max(f.index - last_anchor, 1), 1, intra)
        is_i = f.pict_type in ("I", "i")
        yield from release(f.index, None if is_i or f.corrupt else (off, mask))
        if iframes == "extrapolate" and is_i and prev is not None:
            off, mask = prev[0].copy(), prev[1].copy()
        if f.corrupt:  # concealment MVs are not motion, nor is a damaged frame's extrapolated motion
            off, mask = rasterize_mvs(None, h, w)
        prev, last_anchor = (off, mask), f.index
        yield f, off, mask
    yield from release(n, None)
