"""`mvseg bench strategies`: accuracy, speed and cost of trained strategies at several
keyframe intervals, measured in one run on the same videos (a table like Jain & Gonzalez's
Table 1 and a plot like their Fig. 2).

Per (method, interval L):
- miou_mean / miou_min: the evaluation protocol (mIoU per keyframe distance d = 0..L-1) on the
  dataset's validation split;
- fps, latency_mean_ms, latency_max_ms: the streaming runtime over every validation video, the
  fastest of `repeats` passes, interleaved over all rows so machine drift reaches them alike
  (decoding, MV rasterisation and the network included; frames/s over the whole run; labels
  only, as a deployment would: frames whose pixels a method does not read are not converted
  to RGB, see `run_stream(images=False)`);
- gflops_per_frame: torch.utils.flop_counter over one whole video in the runtime, divided by
  its frames (a multiply-add counts as 2 FLOPs, torch's convention); gflops_nonkey: the same
  for a non-keyframe alone ((total - keyframes x keyframe cost) / non-keyframes). The counter
  sees convolutions and matmuls only: a warp (grid_sample) counts 0, so cost is also timed:
- nonkey_ms: mean latency of the non-keyframes in the runtime, and propagation_ms: that minus
  the time of N_task on one frame (task_ms), i.e. the cost of moving keyframe features to the
  frame (DFF: the flow network and warp; prop-MV: composing MVs and the warp). For look-ahead
  methods (interp-MV) the non-keyframe latency includes the wait for the next keyframe.
"""

from __future__ import annotations

import functools
import itertools
import json
import time
from pathlib import Path

import lightning as L
import torch

from mvseg.bench.common import fastest_interleaved, print_table, timed_pass, write_json
from mvseg.data.datamodule import CompressedVideoDataModule
from mvseg.data.folder import load_folder_dataset
from mvseg.runtime import run_stream, stream_gflops, stream_stats
from mvseg.strategies.loading import load_strategy
from mvseg.strategies.policies import FixedInterval


def _load(ckpt: str, interval: int):
    model, data = load_strategy(ckpt)
    cls = type(model)
    model = cls.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True, keyframe_interval=interval)
    return model.eval(), data


def evaluate(model, root: str, interval: int, cache_dir: str | None = None, data: dict | None = None) -> dict:
    """Protocol mIoU (mean and minimum over distances) at keyframe interval `interval`; frames
    normalised as in training (`data`: the checkpoint's mvseg_data), as the runtime does."""
    norm = {k: (data or {}).get(k) for k in ("mean", "std")}
    dm = CompressedVideoDataModule(
        root,
        "folder",
        keyframe_interval=interval,
        with_next=model.needs_next,
        eval_distances=[0] if model.distance_invariant else None,
        batch_size=8,
        cache_dir=cache_dir,
        **norm,
    )
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    m = trainer.validate(model, dm, verbose=False)[0]
    return {
        "miou_mean": m["val/mIoU"],
        "miou_min": m["val/mIoU_min"],
        **{f"miou_d{d}": m[f"val/mIoU_d{d}"] for d in range(interval)},
    }


def task_ms(model, frame_size: tuple[int, int], repeats: int = 20) -> float:
    """Time of N_task (+ up-sampling) on one frame's features: the part of a non-keyframe that
    every propagation method shares."""
    net = getattr(model, "net", None)
    if net is None or not hasattr(model, "task"):
        return float("nan")
    with torch.inference_mode():
        feat = net.features(torch.zeros(1, 3, *frame_size))
        model.task(feat, frame_size)  # warm-up
        t0 = time.perf_counter()
        for _ in range(repeats):
            model.task(feat, frame_size)
    return 1e3 * (time.perf_counter() - t0) / repeats


def _warm_up(model, videos: list[Path], kw: dict, interval: int) -> None:
    # allocator, first-call dispatch, cached resize taps: a few frames, not timed
    for _ in itertools.islice(
        run_stream(model, videos[0], policy=FixedInterval(interval), images=False, **kw), 2 * interval + 1
    ):
        pass


def speeds(models: list[tuple], videos: list[Path], repeats: int = 3) -> list[dict]:
    """Runtime speed of each (model, data, interval) over `videos`, the fastest of `repeats`
    passes (as timeit takes the minimum: other load on the machine only ever slows a pass
    down). The passes are interleaved (pass 1 of every row, then pass 2 of every row, ...), so
    a drift of the machine's speed during the run reaches every row alike and the ratios
    between rows stay what they measure."""
    kws = [{k: data[k] for k in ("mean", "std") if k in data} for _, data, _ in models]
    for (model, _, interval), kw in zip(models, kws):
        _warm_up(model, videos, kw, interval)
    best = fastest_interleaved(
        [functools.partial(timed_pass, model, videos, kw, interval) for (model, _, interval), kw in zip(models, kws)],
        repeats,
    )
    return [_stats(model, videos, kw, interval, *b) for (model, _, interval), kw, b in zip(models, kws, best)]


def _stats(model, videos: list[Path], kw: dict, interval: int, results: list, wall: float) -> dict:
    stats = stream_stats(results, wall)
    nonkey = [r.latency_ms for r in results if not r.is_key]
    stats["nonkey_ms"] = sum(nonkey) / len(nonkey) if nonkey else float("nan")
    stats["task_ms"] = task_ms(model, results[0].label.shape)
    stats["propagation_ms"] = stats["nonkey_ms"] - stats["task_ms"]
    g = stream_gflops(model, videos[0], interval, **kw)  # per frame, a keyframe alone, a non-keyframe
    stats.update(gflops_per_frame=g["gflops_per_frame"], gflops_nonkey=g["gflops_nonkey"])
    return stats


def bench_strategies(
    runs: dict[str, str],
    intervals: list[int],
    root: str,
    max_videos: int | None = None,
    cache_dir: str | None = None,
    repeats: int = 3,
) -> list[dict]:
    ds = load_folder_dataset(root, splits=("val",))
    videos = [c.video for c in ds.clips["val"]][:max_videos]
    rows, models = [], []
    for name, ckpt in runs.items():
        streamed = None  # one model per method streams every interval (the runtime's policy sets L)
        for interval in intervals:
            model, data = _load(ckpt, interval)
            rows.append({"method": name, "interval": interval, **evaluate(model, root, interval, cache_dir, data)})
            streamed = streamed or (model, data)
            models.append((*streamed, interval))
            print(f"{name} L={interval}: mIoU {rows[-1]['miou_mean']:.3f} (min {rows[-1]['miou_min']:.3f})", flush=True)
    for row, stats in zip(rows, speeds(models, videos, repeats)):
        row.update(stats)
        print(
            f"{row['method']} L={row['interval']}: {row['fps']:.1f} fps, {row['gflops_per_frame']:.2f} GFLOPs/frame",
            flush=True,
        )
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
            ax.annotate(
                f"L={r['interval']}", (r["fps"], r["miou_mean"]), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
    ax.set_xlabel("frames per second (streaming runtime)")
    ax.set_ylabel("mean mIoU over keyframe distances")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


COLUMNS = [
    "method",
    "interval",
    "miou_mean",
    "miou_min",
    "fps",
    "latency_mean_ms",
    "latency_max_ms",
    "gflops_per_frame",
    "gflops_nonkey",
    "nonkey_ms",
    "propagation_ms",
]


def log_wandb(
    rows: list[dict], table: str, out: Path, project: str = "mvseg", image: str = "accuracy_vs_fps.png"
) -> str | None:
    """The rows as a W&B table, the plot as an image and the Markdown table as a file (offline
    without a login, as training runs). Returns the run's directory."""
    import wandb

    from mvseg.wandb_offline import ensure_wandb_never_blocks

    ensure_wandb_never_blocks()
    cols = sorted({k for r in rows for k in r}, key=lambda k: (COLUMNS + [k]).index(k))
    run = wandb.init(project=project, job_type="bench-strategies", dir=str(out), reinit="finish_previous")
    try:
        run.log(
            {
                "bench/strategies": wandb.Table(columns=cols, data=[[r.get(c) for c in cols] for r in rows]),
                f"bench/{Path(image).stem}": wandb.Image(str(out / image)),
            }
        )
        run.summary["bench/table_md"] = table
        return run.dir
    finally:
        run.finish()


def _write_view(
    out: Path, rows: list[dict], columns: list[str], json_name: str, md_name: str, png: str, plot_fn
) -> str:
    """One view's rows as JSON, its Markdown table (printed too, and returned) and its plot."""
    table = print_table(rows, columns)
    (out / json_name).write_text(json.dumps(rows, indent=1))
    (out / md_name).write_text(table + "\n")
    plot_fn(rows, out / png)
    return table


def run_bench_strategies(
    runs: list[str],
    intervals: list[int],
    root: str,
    out_dir: str,
    max_videos: int | None,
    json_out: str | None,
    cache_dir: str | None,
    wandb: bool,
    repeats: int,
    view: str,
    thresholds: list[float],
    pace: float | None,
    slow_track_threads: int | None,
    tables_dir: str | None = None,
    coverage: list[float] = (),
    iframes: bool = False,
    gain: list[float] = (),
) -> list[dict]:
    """view: "protocol" (mIoU per keyframe distance, speed, GFLOPs: results.json, table.md,
    accuracy_vs_fps.png), "latency" (keyframe schedules over whole streams, see
    mvseg.bench_schedule: schedules.json, latency.md, threshold_sweep.png), "both", or "oracle"
    (the headroom of content-chosen keyframes, see mvseg.bench_oracle: oracle.json, oracle.md,
    oracle.png; tables_dir: where the oracle view keeps its tables for reuse; iframes: the latency
    view also streams with the videos' own I-frames as keyframes)."""
    if view not in ("protocol", "latency", "both", "oracle"):
        raise ValueError(f"--view must be protocol, latency, both or oracle, got {view!r}")
    parsed = {}
    for r in runs:
        name, sep, ckpt = r.partition("=")
        if not sep or not ckpt:
            raise ValueError(f"--run expects NAME=CHECKPOINT, got {r!r}")
        parsed[name] = ckpt
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, payload, tables = [], {"bench": "strategies"}, []
    if view in ("protocol", "both"):
        rows = bench_strategies(parsed, intervals, root, max_videos, cache_dir, repeats)
        table = _write_view(out, rows, COLUMNS, "results.json", "table.md", "accuracy_vs_fps.png", plot)
        payload.update(rows=rows, table=table)
        tables.append((rows, table, "accuracy_vs_fps.png"))
    if view in ("latency", "both"):
        from mvseg.bench import latency

        ds = load_folder_dataset(root, splits=("val",))
        models = {name: load_strategy(ckpt) for name, ckpt in parsed.items()}
        for model, _ in models.values():
            if slow_track_threads and hasattr(model, "slow_track_threads"):
                model.slow_track_threads = slow_track_threads
        sched = latency.bench_schedules(
            models, ds, intervals, thresholds or [], max_videos, repeats, pace, coverage, iframes
        )
        table = _write_view(
            out, sched, latency.COLUMNS, "schedules.json", "latency.md", "threshold_sweep.png", latency.plot_sweep
        )
        payload.update(schedules=sched, latency_table=table)
        tables.append((sched, table, "threshold_sweep.png"))
    if view == "oracle":
        from mvseg.bench import latency, oracle

        ds = load_folder_dataset(root, splits=("val",))
        models = {name: load_strategy(ckpt) for name, ckpt in parsed.items()}
        sources = {}
        for name, ckpt in parsed.items():
            st = Path(ckpt).stat()
            sources[name] = f"{Path(ckpt).resolve()}:{st.st_size}:{st.st_mtime_ns}"
        orows = oracle.bench_oracle(
            models, ds, intervals, thresholds or [], max_videos, tables_dir, sources, coverage, gain
        )
        table = _write_view(out, orows, oracle.COLUMNS, "oracle.json", "oracle.md", "oracle.png", latency.plot_sweep)
        payload.update(oracle=orows, oracle_table=table)
        tables.append((orows, table, "oracle.png"))
    write_json(json_out, payload)
    if wandb:
        for r, t, png in tables:
            log_wandb(r, t, out, image=png)
    return rows
