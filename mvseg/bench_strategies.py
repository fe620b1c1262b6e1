"""`mvseg bench strategies`: accuracy, speed and cost of trained strategies at several
keyframe intervals, measured in one run on the same videos (a table like Jain & Gonzalez's
Table 1 and a plot like their Fig. 2).

Per (method, interval L):
- miou_mean / miou_min: the evaluation protocol (mIoU per keyframe distance d = 0..L-1) on the
  dataset's validation split;
- fps, latency_mean_ms, latency_max_ms: the streaming runtime over every validation video
  (decoding, MV rasterisation and the network included; frames/s over the whole run);
- gflops_per_frame: torch.utils.flop_counter over one whole video in the runtime, divided by
  its frames (a multiply-add counts as 2 FLOPs, torch's convention).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.flop_counter import FlopCounterMode

from mvseg.bench import print_table, write_json
from mvseg.data.datamodule import CompressedVideoDataModule
from mvseg.data.folder import load_folder_dataset
from mvseg.predict import load_strategy
from mvseg.runtime import run_stream, stream_stats
from mvseg.strategies.policies import FixedInterval


def _load(ckpt: str, interval: int):
    model, data = load_strategy(ckpt)
    cls = type(model)
    model = cls.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True, keyframe_interval=interval)
    return model.eval(), data


def evaluate(model, root: str, interval: int, cache_dir: str | None = None) -> dict:
    """Protocol mIoU (mean and minimum over distances) at keyframe interval `interval`."""
    dm = CompressedVideoDataModule(
        root, "folder", keyframe_interval=interval, with_next=model.needs_next,
        eval_distances=[0] if model.distance_invariant else None, batch_size=8, cache_dir=cache_dir,
    )
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    m = trainer.validate(model, dm, verbose=False)[0]
    return {"miou_mean": m["val/mIoU"], "miou_min": m["val/mIoU_min"],
            **{f"miou_d{d}": m[f"val/mIoU_d{d}"] for d in range(interval)}}


def speed(model, videos: list[Path], data: dict, interval: int) -> dict:
    kw = {k: data[k] for k in ("mean", "std") if k in data}
    results, t0 = [], time.perf_counter()
    for v in videos:
        results += list(run_stream(model, v, policy=FixedInterval(interval), **kw))
    stats = stream_stats(results, time.perf_counter() - t0)
    with FlopCounterMode(display=False) as fc:
        n = sum(1 for _ in run_stream(model, videos[0], policy=FixedInterval(interval), **kw))
    stats["gflops_per_frame"] = fc.get_total_flops() / n / 1e9
    return stats


def bench_strategies(runs: dict[str, str], intervals: list[int], root: str, max_videos: int | None = None,
                     cache_dir: str | None = None) -> list[dict]:
    ds = load_folder_dataset(root, splits=("val",))
    videos = [c.video for c in ds.clips["val"]][:max_videos]
    rows = []
    for name, ckpt in runs.items():
        for interval in intervals:
            model, data = _load(ckpt, interval)
            row = {"method": name, "interval": interval, **evaluate(model, root, interval, cache_dir)}
            row.update(speed(model, videos, data, interval))
            rows.append(row)
            print(f"{name} L={interval}: mIoU {row['miou_mean']:.3f} (min {row['miou_min']:.3f}), "
                  f"{row['fps']:.1f} fps, {row['gflops_per_frame']:.2f} GFLOPs/frame", flush=True)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == name]
        ax.plot([r["fps"] for r in rs], [r["miou_mean"] for r in rs], "o-", label=name)
        for r in rs:
            ax.annotate(f"L={r['interval']}", (r["fps"], r["miou_mean"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xlabel("frames per second (streaming runtime)")
    ax.set_ylabel("mean mIoU over keyframe distances")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_bench_strategies(runs: list[str], intervals: list[int], root: str, out_dir: str, max_videos: int | None,
                         json_out: str | None, cache_dir: str | None = None) -> list[dict]:
    parsed = {}
    for r in runs:
        name, sep, ckpt = r.partition("=")
        if not sep or not ckpt:
            raise ValueError(f"--run expects NAME=CHECKPOINT, got {r!r}")
        parsed[name] = ckpt
    rows = bench_strategies(parsed, intervals, root, max_videos, cache_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cols = ["method", "interval", "miou_mean", "miou_min", "fps", "latency_mean_ms", "latency_max_ms", "gflops_per_frame"]
    table = print_table(rows, cols)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    (out / "table.md").write_text(table + "\n")
    plot(rows, out / "accuracy_vs_fps.png")
    write_json(json_out, {"bench": "strategies", "rows": rows, "table": table})
    return rows
