"""The compiled fast path of the motion report's inner step (`mvseg.video.report.motion_report`;
numba, the raster_jit pattern: used when numba is installed, the PyTorch reference otherwise or
with ``MVSEG_JIT=0``).

For a pair (frame t-d, frame t) the report needs two numbers: the squared error of frame t-d
warped to t by the composed cell offsets (bilinear, border padding: `report.warp_image`, i.e.
`ops.warp.warp_reference`), and that of frame t-d copied. The reference builds a float image,
a sampling grid and a warped image per pair and reduces them; here one pass over the pixels of
the uint8 frames samples, differences and sums both errors in registers, without the GIL: a
frame's distances run on threads of their own (`pair_errors_many`; not numba's parallel
threading layer, which hangs in a process forked from one that has used OpenMP, as `mvseg
fuzz` forks its cases). The sampling is warp_reference's (pixel centre + cell offset, clamped to the
frame, bilinear); the sums are float64, so the PSNRs agree with the reference to ~1e-4 dB
(tests/video/test_report_jit.py).
"""

from __future__ import annotations

import os

import numpy as np

from mvseg.video.raster_jit import HAVE_NUMBA, lazy_kernel


def _kernel(ref, cur, h, w, offset, mask, iy, ix, y_start, y_stop, out):  # pragma: no cover - compiled
    """Rows y_start..y_stop-1 of a pair: ref, cur flat (H * W * 3,) uint8 (HWC); offset (2, Hm, Wm)
    float32 in pixels; mask (Hm, Wm) float32; iy (H,) / ix (W,) int64: each pixel's cell; out (2,)
    float64 <- (warp SSE, copy SSE). A cell's offset is the same for its pixels: its whole and
    fractional parts and the four bilinear weights are computed once per cell, and a pixel whose
    four sources lie inside the frame (nearly all) needs no clamping. A pixel's three channels
    are summed in float32 (the reference's precision), rows in float64."""
    one = np.float32(1.0)
    zero = np.float32(0.0)
    row = 3 * w
    warp_sse = 0.0
    copy_sse = 0
    for y in range(y_start, y_stop):
        cy = iy[y]
        sw = 0.0
        last = -1
        nan = False
        sx = 0
        sy = 0
        fx = zero
        fy = zero
        dx = zero
        dy = zero
        base = y * row
        for x in range(w):
            j = base + 3 * x
            c0, c1, c2 = np.int32(cur[j]), np.int32(cur[j + 1]), np.int32(cur[j + 2])
            e0, e1, e2 = np.int32(ref[j]) - c0, np.int32(ref[j + 1]) - c1, np.int32(ref[j + 2]) - c2
            copy_sse += e0 * e0 + e1 * e1 + e2 * e2
            cx = ix[x]
            if cx != last:  # a new cell: its shift and weights
                last = cx
                m = mask[cy, cx]
                dx = offset[0, cy, cx] * m
                dy = offset[1, cy, cx] * m
                nan = np.isnan(dx) or np.isnan(dy)
                if not nan:
                    gx = np.floor(dx)
                    gy = np.floor(dy)
                    sx, sy = int(gx), int(gy)
                    fx, fy = dx - gx, dy - gy
            if nan:  # the reference reads zero there
                sw += float(c0 * c0 + c1 * c1 + c2 * c2)
                continue
            x0 = x + sx
            y0 = y + sy
            ax, ay = fx, fy
            if x0 < 0 or y0 < 0 or x0 >= w - 1 or y0 >= h - 1:  # near the border: clamp as the reference
                px = min(max(np.float32(x) + dx, zero), np.float32(w - 1))
                py = min(max(np.float32(y) + dy, zero), np.float32(h - 1))
                x0 = int(np.floor(px))
                y0 = int(np.floor(py))
                ax = px - np.float32(x0)
                ay = py - np.float32(y0)
            i00 = y0 * row + 3 * x0
            i01 = i00 + (3 if x0 < w - 1 else 0)  # a neighbour past the edge has weight 0 there
            i10 = i00 + (row if y0 < h - 1 else 0)
            i11 = i10 + (i01 - i00)
            w00 = (one - ax) * (one - ay)
            w01 = ax * (one - ay)
            w10 = (one - ax) * ay
            w11 = ax * ay
            v0 = (
                w00 * np.float32(ref[i00])
                + w01 * np.float32(ref[i01])
                + w10 * np.float32(ref[i10])
                + w11 * np.float32(ref[i11])
            )
            v1 = (
                w00 * np.float32(ref[i00 + 1])
                + w01 * np.float32(ref[i01 + 1])
                + w10 * np.float32(ref[i10 + 1])
                + w11 * np.float32(ref[i11 + 1])
            )
            v2 = (
                w00 * np.float32(ref[i00 + 2])
                + w01 * np.float32(ref[i01 + 2])
                + w10 * np.float32(ref[i10 + 2])
                + w11 * np.float32(ref[i11 + 2])
            )
            d0, d1, d2 = v0 - np.float32(c0), v1 - np.float32(c1), v2 - np.float32(c2)
            sw += float(d0 * d0 + d1 * d1 + d2 * d2)
        warp_sse += sw
    out[0] = warp_sse
    out[1] = float(copy_sse)


def _warm(kernel) -> None:
    z = np.zeros(48, np.uint8)
    kernel(
        z,
        z,
        4,
        4,
        np.zeros((2, 1, 1), np.float32),
        np.ones((1, 1), np.float32),
        np.zeros(4, np.int64),
        np.zeros(4, np.int64),
        0,
        4,
        np.zeros(2),
    )


#: the compiled kernel (compiled, or loaded from numba's cache, on the first call); None when
#: the fast path is off
load = lazy_kernel(_kernel, _warm)


def pair_errors(
    ref: np.ndarray,
    cur: np.ndarray,
    offset: np.ndarray,
    mask: np.ndarray,
    iy: np.ndarray,
    ix: np.ndarray,
    rows: tuple[int, int] | None = None,
) -> tuple[float, float] | None:
    """(squared error of `ref` warped by the cell field against `cur`, that of `ref` copied),
    summed over pixels and channels (of `rows`, default all); None when the fast path is off."""
    kernel = load()
    if kernel is None:
        return None
    h, w = cur.shape[:2]
    y0, y1 = rows or (0, h)
    out = np.zeros(2)
    kernel(
        np.ascontiguousarray(ref).reshape(-1),
        np.ascontiguousarray(cur).reshape(-1),
        h,
        w,
        np.ascontiguousarray(offset, np.float32),
        np.ascontiguousarray(mask, np.float32),
        iy,
        ix,
        y0,
        y1,
        out,
    )
    return float(out[0]), float(out[1])


_pool: tuple | None = None  # (pid, ThreadPoolExecutor): a forked child makes its own


def _threads():
    global _pool
    if _pool is None or _pool[0] != os.getpid():
        from concurrent.futures import ThreadPoolExecutor

        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        _pool = (os.getpid(), ThreadPoolExecutor(max_workers=max(n, 1), thread_name_prefix="mvseg-report"), max(n, 1))
    return _pool[1], _pool[2]


def pair_errors_many(pairs: list[tuple], iy: np.ndarray, ix: np.ndarray) -> np.ndarray | None:
    """`pair_errors` of several (ref, cur, offset, mask) pairs at once, on the process's CPUs
    (the kernel releases the GIL); (n, 2) float64, or None when the fast path is off."""
    if load() is None:
        return None
    pool, n = _threads()
    h = pairs[0][1].shape[0]
    cuts = np.linspace(0, h, n + 1).astype(int)  # each pair in n bands of rows: every CPU busy
    tasks = [(p, (int(a), int(b))) for p in pairs for a, b in zip(cuts[:-1], cuts[1:]) if b > a]
    parts = (
        list(pool.map(lambda t: pair_errors(*t[0], iy, ix, rows=t[1]), tasks))
        if n > 1
        else [pair_errors(*t[0], iy, ix, rows=t[1]) for t in tasks]
    )
    per = len(tasks) // len(pairs)
    return np.array(parts).reshape(len(pairs), per, 2).sum(1)  # in a fixed order: the same sums every run


__all__ = ["HAVE_NUMBA", "load", "pair_errors", "pair_errors_many"]
