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

from mvseg.video.raster_jit import HAVE_NUMBA, enabled



def _kernel(ref, cur, offset, mask, iy, ix, out):  # pragma: no cover - compiled
    """ref, cur (H, W, 3) uint8; offset (2, Hm, Wm) float32 in pixels; mask (Hm, Wm) float32; iy
    (H,) / ix (W,) int64: each pixel's cell; out (2,) float64 <- (warp SSE, copy SSE).
    A cell's offset is the same for its pixels: its whole and fractional parts and the four
    bilinear weights are computed once per cell, and a pixel whose four sources lie inside the
    frame (nearly all) needs no clamping."""
    h, w = cur.shape[0], cur.shape[1]
    rows = np.zeros((h, 2), np.float64)
    one = np.float32(1.0)
    for y in range(h):
        cy = iy[y]
        sw = 0.0
        sc = 0.0
        last = -1
        nan = False
        sx = 0
        sy = 0
        fx = np.float32(0.0)
        fy = np.float32(0.0)
        dx = np.float32(0.0)
        dy = np.float32(0.0)
        for x in range(w):
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
            for c in range(3):
                e = float(ref[y, x, c]) - float(cur[y, x, c])
                sc += e * e
            if nan:  # the reference reads zero there
                for c in range(3):
                    d = float(cur[y, x, c])
                    sw += d * d
                continue
            x0 = x + sx
            y0 = y + sy
            ax, ay = fx, fy
            if x0 < 0 or y0 < 0 or x0 >= w - 1 or y0 >= h - 1:  # near the border: clamp as the reference
                px = min(max(np.float32(x) + dx, np.float32(0.0)), np.float32(w - 1))
                py = min(max(np.float32(y) + dy, np.float32(0.0)), np.float32(h - 1))
                x0 = int(np.floor(px))
                y0 = int(np.floor(py))
                ax = px - np.float32(x0)
                ay = py - np.float32(y0)
            x1 = min(x0 + 1, w - 1)  # a neighbour past the edge has weight 0 there
            y1 = min(y0 + 1, h - 1)
            w00 = (one - ax) * (one - ay)
            w01 = ax * (one - ay)
            w10 = (one - ax) * ay
            w11 = ax * ay
            for c in range(3):
                v = (w00 * np.float32(ref[y0, x0, c]) + w01 * np.float32(ref[y0, x1, c])
                     + w10 * np.float32(ref[y1, x0, c]) + w11 * np.float32(ref[y1, x1, c]))
                d = float(v) - float(cur[y, x, c])
                sw += d * d
        rows[y, 0] = sw
        rows[y, 1] = sc
    out[0] = rows[:, 0].sum()
    out[1] = rows[:, 1].sum()


_compiled = None


def load():
    """The compiled kernel (compiled, or loaded from numba's cache, on the first call); None
    when the fast path is off."""
    global _compiled
    if not enabled():
        return None
    if _compiled is None:
        import numba

        try:
            kernel = numba.njit(cache=True, nogil=True)(_kernel)
        except RuntimeError:  # no writable place for numba's cache
            kernel = numba.njit(nogil=True)(_kernel)
        z = np.zeros((4, 4, 3), np.uint8)
        kernel(z, z, np.zeros((2, 1, 1), np.float32), np.ones((1, 1), np.float32), np.zeros(4, np.int64),
               np.zeros(4, np.int64), np.zeros(2))
        _compiled = kernel
    return _compiled


def pair_errors(ref: np.ndarray, cur: np.ndarray, offset: np.ndarray, mask: np.ndarray,
                iy: np.ndarray, ix: np.ndarray) -> tuple[float, float] | None:
    """(squared error of `ref` warped by the cell field against `cur`, that of `ref` copied),
    summed over pixels and channels; None when the fast path is off."""
    kernel = load()
    if kernel is None:
        return None
    out = np.zeros(2)
    kernel(np.ascontiguousarray(ref), np.ascontiguousarray(cur), np.ascontiguousarray(offset, np.float32),
           np.ascontiguousarray(mask, np.float32), iy, ix, out)
    return float(out[0]), float(out[1])


_pool: tuple[int, object] | None = None  # (pid, ThreadPoolExecutor): a forked child makes its own


def _threads():
    global _pool
    if _pool is None or _pool[0] != os.getpid():
        from concurrent.futures import ThreadPoolExecutor

        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        _pool = (os.getpid(), ThreadPoolExecutor(max_workers=max(n, 1), thread_name_prefix="mvseg-report"))
    return _pool[1]


def pair_errors_many(pairs: list[tuple], iy: np.ndarray, ix: np.ndarray) -> np.ndarray | None:
    """`pair_errors` of several (ref, cur, offset, mask) pairs at once, on the process's CPUs
    (the kernel releases the GIL); (n, 2) float64, or None when the fast path is off."""
    if load() is None:
        return None
    if len(pairs) == 1:
        return np.array([pair_errors(*pairs[0], iy, ix)])
    return np.array(list(_threads().map(lambda p: pair_errors(*p, iy, ix), pairs)))


__all__ = ["HAVE_NUMBA", "load", "pair_errors", "pair_errors_many"]
