"""`mvseg bench video`: the cost of motion vectors over plain decoding (decode to RGB vs decode +
MV export vs decode + MV export + offset fields), interleaved on the same videos."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from mvseg.bench.common import best_of, print_table, write_json
from mvseg.video.decode import iter_frames, probe
from mvseg.video.motion import rasterize_mvs


def bench_video(paths: list[str | Path], repeats: int) -> list[dict]:
    """Frames/s of plain decoding (to RGB), decoding + MV export, and decoding + MV export +
    offset fields, on the same decoder settings (slice threading).

    The variants run interleaved `repeats` times on each video. Frames/s use the best time of
    each variant; the overheads are the median over repeats of the ratio of back-to-back runs,
    which is robust to load that changes during the benchmark.
    """
    rows = []
    for path in paths:
        info = probe(path)

        def plain() -> int:
            return sum(1 for _ in iter_frames(path, mvs=False))

        def export() -> int:
            return sum(1 for _ in iter_frames(path))

        def offsets() -> int:
            n = 0
            for f in iter_frames(path):
                rasterize_mvs(f.mvs, info.height, info.width)
                n += 1
            return n

        times: dict[str, list[float]] = {"plain": [], "export": [], "offsets": []}
        n = 0
        for _ in range(repeats):  # interleaved, so every variant sees the same machine state
            for name, fn in (("plain", plain), ("export", export), ("offsets", offsets)):
                t, n = best_of(fn, 1)
                times[name].append(t)
        best = {k: min(v) for k, v in times.items()}
        ratio = {k: float(np.median(np.array(times[k]) / np.array(times["plain"]))) for k in ("export", "offsets")}
        rows.append({
            "video": Path(path).name,
            "size": f"{info.width}x{info.height}",
            "frames": n,
            "fps_decode": n / best["plain"],
            "fps_decode_mvs": n / best["export"],
            "fps_decode_mvs_offsets": n / best["offsets"],
            "overhead_mvs_pct": 100 * (ratio["export"] - 1),
            "overhead_total_pct": 100 * (ratio["offsets"] - 1),
        })
    return rows


def make_bench_video(out_dir: str | Path, height: int = 360, width: int = 640, frames: int = 60) -> Path:
    """A synthetic street clip at 640x360 (the issue's benchmark size), H.264 GOP 12."""
    from mvseg.data.synthetic import SyntheticConfig, render_clip
    from mvseg.video.encode import encode_video

    clip = render_clip(1234, SyntheticConfig(height=height, width=width, frames=frames))
    return encode_video(clip.frames, Path(out_dir) / f"synthetic_{width}x{height}.mp4", gop=12, fps=30)


def run_bench_video(paths: list[str], json_out: str | None, repeats: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        if not paths:
            print("no video given: generating a 640x360 synthetic street clip (60 frames)")
            paths = [str(make_bench_video(tmp))]
        rows = bench_video(paths, repeats=repeats)
    table = print_table(rows, ["video", "size", "frames", "fps_decode", "fps_decode_mvs",
                               "fps_decode_mvs_offsets", "overhead_mvs_pct", "overhead_total_pct"])
    write_json(json_out, {"bench": "video", "rows": rows, "table": table})
    return rows
