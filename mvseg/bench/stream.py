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

from mvseg.bench.common import panning_frames, print_table, proc_kb, write_json


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
                row.update(
                    {
                        f"peak_rss_mb_{tag}": proc_kb("VmHWM") / 1024,
                        f"rss_mb_{tag}": proc_kb("VmRSS") / 1024,
                        f"state_kb_{tag}": stream_state_bytes(model) / 1024,
                    }
                )
    row.update(frames=n, fps=n / (time.perf_counter() - t0))
    row["peak_growth"] = row["peak_rss_mb_end"] / row["peak_rss_mb_1k"] - 1
    return row


def run_bench_stream(
    frames: int,
    size: tuple[int, int],
    interval: int,
    methods: tuple[str, ...],
    json_out: str | None = None,
    workdir: str | None = None,
) -> list[dict]:
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
            print(
                f"{m}: peak RSS {rows[-1]['peak_rss_mb_1k']:.0f} MB at 1k frames, {rows[-1]['peak_rss_mb_end']:.0f} MB "
                f"at {frames} ({100 * rows[-1]['peak_growth']:+.1f} %)",
                flush=True,
            )
    table = print_table(
        rows,
        [
            "method",
            "frames",
            "fps",
            "peak_rss_mb_1k",
            "peak_rss_mb_end",
            "peak_growth",
            "rss_mb_1k",
            "rss_mb_end",
            "state_kb_1k",
            "state_kb_end",
        ],
    )
    write_json(json_out, {"bench": "stream", "size": list(size), "interval": interval, "rows": rows, "table": table})
    return rows
