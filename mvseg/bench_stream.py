"""`mvseg bench stream`: the streaming runtime on a long video runs in constant memory.

A video of `frames` small frames (a smooth texture panning with wrap-around, H.264 with the
keyframe interval as GOP) is generated, then each method streams it in a process of its own
(so one method's peak does not hide another's). Recorded at frame 1,000 and at the last
frame: the process's peak and current resident memory (VmHWM, VmRSS from /proc) and the
bytes of tensors the strategy holds between frames (`stream_state_bytes`). The target
(reliability issue): peak RSS at the end within 10 % of the peak after 1,000 frames.
Untrained networks are used: memory does not depend on the weights.
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from mvseg.bench import print_table, write_json


def _proc_kb(field: str) -> float:
    """A VmHWM / VmRSS line of /proc/self/status, in kB (NaN where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return float("nan")


def panning_frames(n: int, height: int, width: int, seed: int = 0):
    """n RGB frames (uint8) of a smooth random texture panning by (2, 1) px per frame, wrapping."""
    rng = np.random.default_rng(seed)
    ch, cw = 4 * height, 4 * width
    spec = np.fft.rfft2(rng.normal(size=(3, ch, cw)))
    ky, kx = np.fft.fftfreq(ch)[:, None], np.fft.rfftfreq(cw)[None, :]
    canvas = np.fft.irfft2(spec * np.exp(-(kx**2 + ky**2) / (2 * 0.03**2)), s=(ch, cw))
    canvas = ((canvas - canvas.min()) / np.ptp(canvas) * 220 + 20).astype(np.uint8).transpose(1, 2, 0)
    for t in range(n):
        yield np.roll(canvas, (-t % ch, -2 * t % cw), (0, 1))[:height, :width]


def _stream(method: str, video: str, interval: int, checkpoints: tuple[int, ...]) -> dict:
    """One method over the whole video (run in a fresh process)."""
    import torch

    from mvseg.models.segnet import SegNetConfig
    from mvseg.runtime import run_stream, stream_state_bytes
    from mvseg.strategies import InterpMV, PerFrame, PropMV
    from mvseg.strategies.policies import FixedInterval

    torch.manual_seed(0)
    cls = {"per_frame": PerFrame, "prop_mv": PropMV, "interp_mv": InterpMV}[method]
    model = cls(9, interval, net=SegNetConfig()).eval()
    row, t0, n = {"method": method}, time.perf_counter(), 0
    for n, _ in enumerate(run_stream(model, video, policy=FixedInterval(interval), images=False), 1):
        for tag, at in zip(("1k", "end"), checkpoints):
            if n == at:
                row.update({f"peak_rss_mb_{tag}": _proc_kb("VmHWM") / 1024, f"rss_mb_{tag}": _proc_kb("VmRSS") / 1024,
                            f"state_kb_{tag}": stream_state_bytes(model) / 1024})
    row.update(frames=n, fps=n / (time.perf_counter() - t0))
    row["peak_growth"] = row["peak_rss_mb_end"] / row["peak_rss_mb_1k"] - 1
    return row


def run_bench_stream(frames: int = 10_000, size: tuple[int, int] = (64, 128), interval: int = 10,
                     methods: tuple[str, ...] = ("per_frame", "prop_mv", "interp_mv"), json_out: str | None = None,
                     workdir: str | None = None) -> list[dict]:
    if frames < 1000:
        raise ValueError(f"--frames must be at least 1000 (memory is compared at frame 1000 and the end), got {frames}")
    from mvseg.video.encode import encode_video

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        video = Path(tmp) / "long.mp4"
        t0 = time.perf_counter()
        encode_video(panning_frames(frames, *size), video, gop=interval, crf=23, preset="veryfast")
        print(f"encoded {frames} frames of {size[1]}x{size[0]} in {time.perf_counter() - t0:.1f} s", flush=True)
        rows = []
        ctx = mp.get_context("spawn")
        for m in methods:
            with ProcessPoolExecutor(1, mp_context=ctx) as pool:
                rows.append(pool.submit(_stream, m, str(video), interval, (1000, frames)).result())
            print(f"{m}: peak RSS {rows[-1]['peak_rss_mb_1k']:.0f} MB at 1k frames, {rows[-1]['peak_rss_mb_end']:.0f} MB "
                  f"at {frames} ({100 * rows[-1]['peak_growth']:+.1f} %)", flush=True)
    table = print_table(rows, ["method", "frames", "fps", "peak_rss_mb_1k", "peak_rss_mb_end", "peak_growth",
                               "rss_mb_1k", "rss_mb_end", "state_kb_1k", "state_kb_end"])
    write_json(json_out, {"bench": "stream", "size": list(size), "interval": interval, "rows": rows, "table": table})
    return rows
