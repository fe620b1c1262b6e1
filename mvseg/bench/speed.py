"""`mvseg bench speed`: AR-Seg's streaming speed at the paper's resolutions, a table like its
Table 5 (Hu et al., CVPR 2023: running time of AR-PSP18, 1.0x vs AR^0.5 and AR^0.3).

For each backbone at its paper resolution (PSPNet-18 CamVid-style at 720x960, Cityscapes-style
at 1024x2048; or --sizes): a video of `frames` generated frames (a smooth texture panning by
(2, 1) px a frame, H.264 with GOP = L, so P-frames carry real MVs) is streamed by the runtime
(`run_stream`: decoding, MV reading, the network, labels out) with the HR image model on every
frame (1.0x) and with AR-Seg at each LR scale s (HR keyframe every L frames, LR + CReFF on the
others). The passes are interleaved over the rows and the fastest of `repeats` counts, as in
`bench strategies`. Networks are untrained (seeded): time does not depend on the weights.

Columns: ms_per_frame (wall clock over the stream / frames, the paper's "running time"),
key_ms / nonkey_ms (mean latency of keyframes / other frames), speedup (1.0x ms / row ms),
gflops_ratio (`bench flops`' count, for comparison) and the paper's Table 5 figures (GPU).
"""

from __future__ import annotations

import functools
import itertools
import tempfile
from pathlib import Path

import torch

from mvseg.bench.common import fastest_interleaved, panning_frames, print_table, timed_pass, write_json
from mvseg.bench.flops import BACKBONES, arseg_flops
from mvseg.runtime import run_stream
from mvseg.strategies import ARSeg, PerFrame
from mvseg.strategies.policies import FixedInterval

#: AR-Seg Table 5: ms per frame of AR-PSP18 (1.0x, AR^0.5, AR^0.3) on a GPU.
PAPER_MS = {
    ("psp18_camvid", (720, 960)): {1.0: 31.2, 0.5: 14.7, 0.3: 9.0},
    ("psp18", (1024, 2048)): {1.0: 95.4, 0.5: 30.7, 0.3: 19.9},
}
#: The resolution each backbone's paper rows use (bise18: CamVid's; --sizes for others).
PAPER_SIZE = {"psp18_camvid": (720, 960), "psp18": (1024, 2048), "bise18": (720, 960), "cpu": (128, 256)}


def _models(backbone: str, scales: list[float], interval: int, num_classes: int = 19, device: str = "cpu") -> list:
    cfg = BACKBONES[backbone]
    torch.manual_seed(0)
    return [
        (PerFrame(num_classes, interval, net=cfg) if s >= 1.0 else ARSeg(num_classes, interval, net=cfg, lr_scale=s))
        .eval()
        .to(device)
        for s in scales
    ]


def stream_speeds(models: list, video: Path, interval: int, repeats: int = 2) -> list[dict]:
    """Per model: ms per frame over the whole video (the fastest of `repeats` interleaved
    passes) and the mean latency of its keyframes and other frames in that pass."""
    for m in models:  # warm-up (allocator, first-call dispatch, cached resize taps): a keyframe and a non-keyframe
        for _ in itertools.islice(run_stream(m, video, policy=FixedInterval(interval), images=False), 2):
            pass
    best = fastest_interleaved([functools.partial(timed_pass, m, [video], {}, interval) for m in models], repeats)
    rows = []
    for results, wall in best:
        key = [r.latency_ms for r in results if r.is_key]
        nonkey = [r.latency_ms for r in results if not r.is_key]
        rows.append(
            {
                "frames": len(results),
                "keyframes": len(key),
                "ms_per_frame": 1e3 * wall / len(results),
                "fps": len(results) / wall,
                "key_ms": sum(key) / len(key),
                "nonkey_ms": sum(nonkey) / len(nonkey) if nonkey else float("nan"),
            }
        )
    return rows


def bench_speed(
    backbones: list[str],
    sizes: list[tuple[int, int]] | None,
    scales: list[float],
    interval: int,
    frames: int,
    repeats: int = 2,
    workdir: str | None = None,
    device: str = "cpu",
) -> list[dict]:
    if frames < 2:
        raise ValueError(f"--frames must be at least 2 (a keyframe and a non-keyframe), got {frames}")
    if not scales or scales[0] < 1.0:
        raise ValueError(
            f"--scales must start with 1.0 (the baseline every speed-up is measured against), got {scales}"
        )
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is visible to torch")
    unknown = [b for b in backbones if b not in BACKBONES]
    if unknown:
        raise ValueError(f"unknown backbone(s) {unknown}; choose from {sorted(BACKBONES)}")
    from mvseg.video.encode import encode_video

    rows = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for name in backbones:
            for h, w in sizes or [PAPER_SIZE[name]]:
                video = Path(tmp) / f"pan_{h}x{w}.mp4"
                if not video.exists():
                    encode_video(panning_frames(frames, h, w), video, gop=interval, crf=23, preset="veryfast")
                speeds = stream_speeds(_models(name, scales, interval, device=device), video, interval, repeats)
                flops = [arseg_flops(BACKBONES[name], h, w, s, interval)["per_frame"] for s in scales]
                paper = PAPER_MS.get((name, (h, w)), {})
                for s, sp, f in zip(scales, speeds, flops):
                    p = paper.get(s)
                    rows.append(
                        {
                            "backbone": name,
                            "size": f"{h}x{w}",
                            "method": "1.0x" if s >= 1.0 else f"AR{s:g}",
                            "interval": interval,
                            **sp,
                            "speedup": speeds[0]["ms_per_frame"] / sp["ms_per_frame"],
                            "gflops_ratio": f / flops[0],
                            "paper_ms": p,
                            "paper_speedup": paper[1.0] / p if p else None,
                        }
                    )
                    print(
                        f"{name} {h}x{w} {rows[-1]['method']}: {sp['ms_per_frame']:.0f} ms/frame "
                        f"(key {sp['key_ms']:.0f}, non-key {sp['nonkey_ms']:.0f}), "
                        f"{rows[-1]['speedup']:.2f}x",
                        flush=True,
                    )
    return rows


COLUMNS = [
    "backbone",
    "size",
    "method",
    "interval",
    "frames",
    "ms_per_frame",
    "key_ms",
    "nonkey_ms",
    "speedup",
    "gflops_ratio",
    "paper_ms",
    "paper_speedup",
]


def run_bench_speed(
    backbones: list[str],
    sizes: list[tuple[int, int]] | None,
    scales: list[float],
    interval: int,
    frames: int,
    repeats: int,
    json_out: str | None,
    device: str,
) -> list[dict]:
    rows = bench_speed(backbones, sizes, scales, interval, frames, repeats, device=device)
    table = print_table(rows, COLUMNS)
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    write_json(
        json_out, {"bench": "speed", "device": name, "threads": torch.get_num_threads(), "rows": rows, "table": table}
    )
    return rows
