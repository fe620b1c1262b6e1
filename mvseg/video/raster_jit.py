"""The compiled fast path of `mvseg.video.motion.rasterize_mvs` (numba; the dinov2 pattern: used
when numba is installed, the NumPy path otherwise or with ``MVSEG_JIT=0``).

The NumPy path is vectorised over MVs but pays ~50 array calls a frame, a large share of what
FFmpeg needs to decode it (`mvseg bench video`; docs/results.md, "Decoding"). Here one loop
over the blocks and one over the cells give the same offset field and mask, cell for cell and
bit for bit (the same float32/float64 operations in the same order; tests/video/test_raster_jit.py
compares the two on random and real frames), several times faster (docs/results.md, "Decoding"),
and without the GIL. It takes the blocks FFmpeg exports
for H.264 and the MPEG family (8 or 16 pixels a side, inside the macroblock-padded picture);
anything else (sub-8x8 partitions, corrupt blocks outside the picture) returns None and the NumPy
path paints it.

Compiled on first use and cached beside this file (numba's ``cache=True``: seconds once per
install, a fraction of a second to load in a new process): `load` compiles or loads it.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

MB = 16
# numba is a dependency, but a platform without its wheels still works (the NumPy path); it is
# imported on the first frame (0.3 s), not with mvseg, so commands that rasterise nothing skip it
HAVE_NUMBA = importlib.util.find_spec("numba") is not None


def enabled() -> bool:
    """Whether the compiled path is used: numba installed and not switched off by
    ``MVSEG_JIT=0`` (which the tests use to run the NumPy reference)."""
    return HAVE_NUMBA and os.environ.get("MVSEG_JIT", "1") != "0"


def _kernel(
    mvs, height, width, past_distance, future_distance, fill, radius, max_share, offset, mask
):  # pragma: no cover - compiled
    """Fills `offset` (2, hc, wc) float32 and `mask` (hc, wc) float32 from `mvs` (MV_DTYPE records) as
    `rasterize_mvs` does; False (nothing written) when a block is not 8 or 16 pixels a side inside
    the picture. (One pass over the records; no integer division by a runtime value in the loops.)"""
    n = mvs.shape[0]
    hc, wc = mask.shape
    hm, wm = -(-height // MB), -(-width // MB)
    h8, w8 = 2 * hm, 2 * wm
    nmb = hm * wm
    none = n + nmb  # the entry that reads offset 0, mask 0
    first = np.empty(n, np.int64)  # the block's first 8x8 cell, flat
    right = np.empty(n, np.int64)  # 1 where the block is 16 wide (its stencil's dx = 1 moves right)
    down = np.empty(n, np.int64)  # w8 where it is 16 tall (dy = 1 moves a row down)
    future = np.empty(n, np.bool_)
    # Per-frame motion, one value per block, then one per macroblock (the fill), then `none`.
    vx = np.zeros(none + 1, np.float32)
    vy = np.zeros(none + 1, np.float32)
    hit = np.ones(none + 1, np.float32)
    hit[none] = 0.0
    ratio = np.float32(-past_distance / future_distance)
    past = np.float32(past_distance)
    acc = np.zeros(3 * nmb, np.float64)  # the fill's bincount: float64 sums, in the blocks' order
    n_future = 0
    last_scale, scale, inverse, exact = -1, 1.0, 1.0, True
    bad = False  # a block this kernel does not take: the NumPy path paints the frame
    for i in range(n):
        r = mvs[i]
        wi, hi = np.int64(r.w), np.int64(r.h)
        # (a flag, not a return in the loop: the early exit halves the loop's speed)
        bad |= (wi != 8 and wi != 16) or (hi != 8 and hi != 16)
        x0, y0 = np.int64(r.dst_x) - (wi >> 1), np.int64(r.dst_y) - (hi >> 1)
        cx, cy = x0 >> 3, y0 >> 3  # floor division, as the NumPy path
        bad |= cx < 0 or cy < 0 or cx + (wi >> 3) > w8 or cy + (hi >> 3) > h8
        first[i], right[i], down[i] = cy * w8 + cx, wi >> 4, (hi >> 4) * w8
        # motion / scale in float64, stored as float32: NumPy's divide(int32, float32, out=float32).
        # A power-of-two scale (H.264's 4 over 1, 2 or 4 frames) divides exactly as a product with
        # its reciprocal, which is several times cheaper than a division
        if r.motion_scale != last_scale:
            last_scale = r.motion_scale
            scale = np.float64(np.float32(max(np.int64(r.motion_scale), 1)) * past)
            inverse = 1.0 / scale
            exact = scale == 2.0 ** np.round(np.log2(scale))
        if exact:
            ax, ay = np.float32(np.float64(r.motion_x) * inverse), np.float32(np.float64(r.motion_y) * inverse)
        else:
            ax, ay = np.float32(np.float64(r.motion_x) / scale), np.float32(np.float64(r.motion_y) / scale)
        future[i] = r.source > 0
        if future[i]:  # constant velocity: a future MV, negated, stands for the past one
            ax, ay = np.float32(ax * ratio), np.float32(ay * ratio)
            n_future += 1
        vx[i], vy[i] = ax, ay
        if fill:  # the macroblock holding the block's centre
            b = min(max((y0 + (hi >> 1)) >> 4, 0), hm - 1) * wm + min(max((x0 + (wi >> 1)) >> 4, 0), wm - 1)
            area = np.float32(wi * hi)
            acc[b] += np.float64(area)
            acc[nmb + b] += np.float64(np.float32(area * ax))
            acc[2 * nmb + b] += np.float64(np.float32(area * ay))
    if bad:
        return False
    # The intra-block rule (`_intra_fill`, on the same float32/float64 steps in the same order):
    # entry[m] = n + m where macroblock m has a value, else `none`.
    entry = np.full(nmb, none, np.int64)
    if fill:
        known = np.zeros(nmb, np.bool_)
        n_known = 0
        for m in range(nmb):
            if acc[m] > 0:
                known[m] = True
                n_known += 1
        if not (n_known == nmb or n_known < (1 - max_share) * nmb or n_known == 0):
            mx = np.empty(nmb, np.float32)
            my = np.empty(nmb, np.float32)
            for m in range(nmb):
                wgt = max(acc[m], 1e-9)
                mx[m] = np.float32(acc[nmb + m] / wgt)
                my[m] = np.float32(acc[2 * nmb + m] / wgt)
            pw = wm + 2  # (known, mean) zero-padded by one macroblock, then the 3-row sums
            buf = np.zeros((3, (hm + 2) * pw), np.float32)
            rows = np.zeros((3, hm * pw), np.float32)
            grow = np.zeros(nmb, np.bool_)
            for _ in range(radius):  # one ring a step: the mean of the known 8-neighbours
                if n_known == nmb:
                    break
                for y in range(hm):
                    for x in range(wm):
                        m, q = y * wm + x, (y + 1) * pw + x + 1
                        buf[0, q] = np.float32(1.0) if known[m] else np.float32(0.0)
                        buf[1, q], buf[2, q] = mx[m], my[m]
                for c in range(3):
                    for q in range(hm * pw):
                        rows[c, q] = buf[c, q] + buf[c, q + pw] + buf[c, q + 2 * pw]
                grown = 0
                for y in range(hm):
                    for x in range(wm):
                        m, q = y * wm + x, y * pw + x
                        count = rows[0, q] + rows[0, q + 1] + rows[0, q + 2]
                        grow[m] = not known[m] and count > 0
                        if grow[m]:
                            grown += 1
                            d = max(count, np.float32(1.0))
                            mx[m] = (rows[1, q] + rows[1, q + 1] + rows[1, q + 2]) / d
                            my[m] = (rows[2, q] + rows[2, q + 1] + rows[2, q + 2]) / d
                if grown == 0:
                    break
                for m in range(nmb):
                    if grow[m]:
                        known[m] = True
                n_known += grown
            for m in range(nmb):
                if known[m]:
                    entry[m] = n + m
                    vx[n + m], vy[n + m] = mx[m], my[m]
    # Which block covers each 8x8 cell: the fill under everything, then future blocks, then past
    # ones (past MVs win), each direction in `_paint`'s stencil order (dy, dx), then block order.
    idx = np.empty(h8 * w8, np.int64)
    for y in range(h8):
        for x in range(w8):
            idx[y * w8 + x] = entry[(y >> 1) * wm + (x >> 1)]
    order = np.empty(n, np.int64)  # future blocks first, then past ones, each in block order
    j, k = 0, n_future
    for i in range(n):
        if future[i]:
            order[j] = i
            j += 1
        else:
            order[k] = i
            k += 1
    for part in range(2):
        start, stop = (0, n_future) if part == 0 else (n_future, n)
        for step in range(4):  # (dy, dx) = (0, 0), (0, 1), (1, 0), (1, 1), clamped to the block
            for j in range(start, stop):
                i = order[j]
                idx[first[i] + (step & 1) * right[i] + (step >> 1) * down[i]] = i
    for y in range(hc):  # each 4x4 cell reads its 8x8 cell (two cells a read)
        row = (y >> 1) * w8
        for x8 in range(wc >> 1):
            i = idx[row + x8]
            a, b, c = vx[i], vy[i], hit[i]
            offset[0, y, 2 * x8], offset[0, y, 2 * x8 + 1] = a, a
            offset[1, y, 2 * x8], offset[1, y, 2 * x8 + 1] = b, b
            mask[y, 2 * x8], mask[y, 2 * x8 + 1] = c, c
        if wc & 1:
            i = idx[row + (wc >> 1)]
            offset[0, y, wc - 1], offset[1, y, wc - 1], mask[y, wc - 1] = vx[i], vy[i], hit[i]
    return True


def lazy_kernel(fn, warm):
    """A loader of `fn` compiled by numba without the GIL and cached beside its module: compiled
    (once per install) or loaded on the loader's first call, then called once by `warm(kernel)`
    with the argument types it will get, so the first frame pays nothing; the loader returns None
    when the fast path is off (`enabled`)."""
    kernel = None

    def load():
        nonlocal kernel
        if not enabled():
            return None
        if kernel is None:
            import numba

            try:
                k = numba.njit(cache=True, nogil=True)(fn)
            except RuntimeError:  # no writable place for numba's cache: compile in every process
                k = numba.njit(nogil=True)(fn)
            warm(k)
            kernel = k
        return kernel

    return load


def _warm(kernel) -> None:  # MV_DTYPE records, as decode exports them
    from mvseg.video.decode import MV_DTYPE

    one = np.zeros(1, MV_DTYPE)
    one["w"] = one["h"] = one["dst_x"] = one["dst_y"] = 8
    kernel(one, 16, 16, 1.0, 1.0, True, 2, 0.5, np.empty((2, 4, 4), np.float32), np.empty((4, 4), np.float32))


#: the compiled kernel (compiled, or loaded from numba's cache, on the first call); None when
#: the fast path is off
load = lazy_kernel(_kernel, _warm)


def rasterize(
    mvs: np.ndarray,
    height: int,
    width: int,
    hc: int,
    wc: int,
    past_distance: float,
    future_distance: float,
    fill: bool,
    radius: int,
    max_share: float,
):
    """`rasterize_mvs` for a non-empty MV array: (offset, mask), or None when this path does not
    take the frame (numba missing or off, or blocks other than FFmpeg's 8/16-pixel ones)."""
    kernel = load()
    if kernel is None:
        return None
    offset = np.empty((2, hc, wc), np.float32)
    mask = np.empty((hc, wc), np.float32)
    done = kernel(
        mvs,
        int(height),
        int(width),
        float(past_distance),
        float(future_distance),
        bool(fill),
        int(radius),
        float(max_share),
        offset,
        mask,
    )
    return (offset, mask) if done else None
