"""What every `mvseg bench` shares: tables and JSON, timing (best of, interleaved passes of the
streaming runtime), the process's memory (/proc), and generated videos.

Every bench prints a table and, with ``--json``, writes its figures for scripts; ratios are
measured side by side in one run. Nothing here is asserted in tests: the figures go to
docs/results.md.
"""

from __future__ import annotations

import ctypes
import gc
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np


def print_table(rows: list[dict], columns: list[str]) -> str:
    """A Markdown table of `rows` (also returned)."""
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    text = "\n".join(lines)
    print(text)
    return text


def write_json(path: str | Path | None, payload: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=1))


def best_of(fn: Callable[[], int], repeats: int) -> tuple[float, int]:
    best, n = float("inf"), 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        best = min(best, time.perf_counter() - t0)
    return best, n


def fastest_interleaved(passes: list[Callable[[], tuple[list, float]]], repeats: int) -> list[tuple[list, float]]:
    """Run every timed pass `repeats` times, interleaved (pass 1 of every row, then pass 2 of
    every row, ...), and keep each row's fastest (results, wall seconds): a drift of the
    machine's speed reaches every row alike, and other load only ever slows a pass down."""
    best: list[tuple[list, float] | None] = [None] * len(passes)
    for _ in range(max(repeats, 1)):
        for i, run in enumerate(passes):
            results, wall = run()
            if best[i] is None or wall < best[i][1]:
                best[i] = (results, wall)
    return best


def timed_pass(model, videos: list[Path], kw: dict, interval: int) -> tuple[list, float]:
    """One timed pass of the streaming runtime over `videos` (labels only, fixed keyframe
    interval): (results, wall seconds)."""
    from mvseg.runtime import run_stream
    from mvseg.strategies.policies import FixedInterval

    results, t0 = [], time.perf_counter()
    for v in videos:
        results += list(run_stream(model, v, policy=FixedInterval(interval), images=False, **kw))
    return results, time.perf_counter() - t0


def proc_kb(field: str) -> float:
    """A VmHWM (peak) / VmRSS line of /proc/self/status, in kB (NaN where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return float("nan")


def reset_peak_rss() -> None:
    """Return freed heap to the OS and reset the kernel's peak-RSS mark (Linux >= 4.0)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def panning_frames(n: int, height: int, width: int, seed: int = 0) -> Iterator[np.ndarray]:
    """n RGB frames (uint8) of a smooth random texture panning by (2, 1) px per frame, wrapping."""
    rng = np.random.default_rng(seed)
    ch, cw = 4 * height, 4 * width
    spec = np.fft.rfft2(rng.normal(size=(3, ch, cw)))
    ky, kx = np.fft.fftfreq(ch)[:, None], np.fft.rfftfreq(cw)[None, :]
    canvas = np.fft.irfft2(spec * np.exp(-(kx**2 + ky**2) / (2 * 0.03**2)), s=(ch, cw))
    canvas = ((canvas - canvas.min()) / np.ptp(canvas) * 220 + 20).astype(np.uint8).transpose(1, 2, 0)
    for t in range(n):
        yield np.roll(canvas, (-t % ch, -2 * t % cw), (0, 1))[:height, :width]
