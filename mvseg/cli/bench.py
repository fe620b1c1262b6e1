"""`mvseg bench ...`: the benchmarks' command lines, every option's default stated here once
(the implementations in mvseg.bench take every value from here; they import torch and are
imported when a bench runs)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="benchmarks (ratios measured side by side in one run)")
    bsub = bench.add_subparsers(dest="bench_command", required=True)
    for add in (
        _add_video,
        _add_kernels,
        _add_strategies,
        _add_fusion,
        _add_stream,
        _add_data,
        _add_flops,
        _add_speed,
        _add_synthetic,
    ):
        add(bsub)


def _add_video(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "video",
        help="decode vs MV export, offset fields, RGB; side by side with "
        "motion-vector-extractor (--peer); every run a fresh process",
    )
    p.add_argument("paths", nargs="*", help="videos (default: two generated 640x360 clips, P-only and x264 defaults)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds (a fresh process per variant and round)")
    p.add_argument(
        "--peer", action="store_true", help="also motion-vector-extractor (optional; left out when not installed)"
    )
    p.add_argument(
        "--modes",
        nargs="+",
        default=None,
        choices=[
            "plain",
            "plain_rgb",
            "mvs",
            "fields",
            "fields_bitstream",
            "fields_ahead",
            "fields_full",
            "rgb",
            "rgb_no_mvs",
            "report",
            "report_ref",
        ],  # mvseg.bench.video.OWN + REPORT (not imported to parse)
        help="mvseg's variants to run (default: all but report / report_ref, the motion report at "
        "--max-distance 5, compiled and PyTorch reference)",
    )
    p.add_argument(
        "--peer-python",
        default=None,
        metavar="PYTHON",
        help="the interpreter that has motion-vector-extractor (default: $MVSEG_PEER_PYTHON, or this one)",
    )
    p.add_argument("--json", metavar="OUT.json")


def _add_kernels(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "kernels",
        help="warp / local attention / sv_conv: Triton vs PyTorch at paper sizes; logits resize: matmul vs interpolate",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: cuda when a GPU is visible")
    p.add_argument(
        "--dtype",
        nargs="+",
        default=["fp32"],
        choices=["fp32", "fp16", "bf16"],
        help="input dtypes (CUDA; the CPU rows are fp32)",
    )
    p.add_argument("--repeats", type=int, default=3, help="CPU: forward passes, the median counts")
    p.add_argument("--dry-run", action="store_true", help="list the rows and the kernels' traffic, measure nothing")
    p.add_argument("--json", metavar="OUT.json")


def _add_strategies(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("strategies", help="mIoU, fps, latency and GFLOPs of trained strategies per keyframe interval")
    p.add_argument("--run", action="append", required=True, metavar="NAME=CKPT", help="a method and its checkpoint")
    p.add_argument("--intervals", type=int, nargs="+", default=list(range(1, 11)))
    p.add_argument("--data-root", default="data/synthetic", help="mvseg folder dataset (its val split)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--max-videos", type=int, default=None, help="videos for the speed measurement")
    p.add_argument("--out-dir", default="bench/strategies", help="results.json, table.md, accuracy_vs_fps.png")
    p.add_argument("--json", metavar="OUT.json")
    p.add_argument("--no-wandb", action="store_true", help="do not log the table and plot to W&B")
    p.add_argument("--repeats", type=int, default=3, help="speed passes per method and interval; the fastest counts")
    p.add_argument(
        "--view",
        choices=["protocol", "latency", "both", "oracle"],
        default="protocol",
        help="protocol: mIoU per keyframe distance; latency: keyframe schedules over whole streams "
        "(fixed L, adaptive thresholds, adaptive + low-latency; Li et al.'s Table 1); oracle: the "
        "headroom of content-chosen keyframes (fixed L vs a perfect deviation predictor vs hindsight)",
    )
    p.add_argument(
        "--thresholds",
        type=float,
        nargs="+",
        default=[0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2],
        help="deviation thresholds of the adaptive schedules (latency and oracle views)",
    )
    p.add_argument(
        "--pace-fps",
        type=float,
        default=0.0,
        help="latency view: release frames at this rate, as a live camera (0: each video's own rate)",
    )
    p.add_argument(
        "--slow-track-threads",
        type=int,
        default=None,
        help="latency view: CPU threads of Adaptive's background slow track (default: the checkpoint's)",
    )
    p.add_argument(
        "--offline",
        action="store_true",
        help="latency view: process frames back to back instead (no idle time between frames)",
    )
    p.add_argument(
        "--coverage-thresholds",
        type=float,
        nargs="+",
        default=[],
        help="latency and oracle views: also the motion-coverage policy (a keyframe when more than this "
        "share of the frame is new to the block motion), for every run",
    )
    p.add_argument(
        "--gain-thresholds",
        type=float,
        nargs="+",
        default=[],
        help="oracle view: also Li et al.'s policy fed the true gain of a keyframe (a perfect predictor "
        "for `deviation_target: gain`) at these thresholds",
    )
    p.add_argument(
        "--iframe-schedule",
        action="store_true",
        help="latency view: also the videos' own I-frames as keyframes (e.g. clips encoded with x264's "
        "scene-cut detection: `mvseg data prepare synthetic --scenecut 40 --gop L`)",
    )
    p.add_argument(
        "--tables-dir",
        default=None,
        help="oracle view: keep each run's (keyframe, frame) tables here (NAME.npz) and reuse them "
        "when the checkpoint and clips are the same (rescoring other thresholds takes seconds)",
    )


def _add_fusion(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fusion", help="AR-Seg: mIoU per distance of CReFF vs its two inputs alone (LR, MV-warped HR) and their mean"
    )
    p.add_argument("--ckpt", required=True, help="a stage-2 AR-Seg checkpoint")
    p.add_argument("--data-root", default="data/synthetic", help="mvseg folder dataset (its val split)")
    p.add_argument("--interval", type=int, default=None, help="keyframe interval L (default: the checkpoint's)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--out-dir", default="bench/fusion", help="fusion.json, fusion.md")
    p.add_argument("--json", metavar="OUT.json")


def _add_stream(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stream", help="constant memory of the streaming runtime on a long generated video")
    p.add_argument("--frames", type=int, default=10_000)
    p.add_argument("--size", default="64x128", help="HxW of the generated frames")
    p.add_argument("--interval", type=int, default=10, help="keyframe interval (and GOP)")
    p.add_argument(
        "--methods",
        nargs="+",
        default=["per_frame", "prop_mv", "interp_mv"],
        choices=["per_frame", "prop_mv", "interp_mv"],
    )
    p.add_argument("--json", metavar="OUT.json")


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data", help="DataModule samples/s with 0, 1, 2 workers, a sample's cost by part, vs a training step"
    )
    p.add_argument("--data-root", default="data/synthetic", help="mvseg folder dataset (its train split)")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--samples", type=int, default=200, help="samples timed part by part")
    p.add_argument("--epochs", type=int, default=3, help="epochs per loader measurement")
    p.add_argument("--json", metavar="OUT.json")


def _add_flops(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("flops", help="AR-Seg GFLOPs per frame (1.0x vs AR^s), a table like its Table 1")
    p.add_argument(
        "--backbones", nargs="+", default=["psp18"], help="psp18, bise18 (the paper's) | cpu (experiments/arseg.yaml)"
    )
    p.add_argument("--sizes", nargs="+", default=["1024x2048", "720x960"], help="HxW")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.7, 0.6, 0.5])
    p.add_argument("--interval", type=int, default=12, help="keyframe interval L")
    p.add_argument("--json", metavar="OUT.json")


def _add_speed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("speed", help="AR-Seg streaming ms/frame, 1.0x vs AR^s at the paper's resolutions (its Table 5)")
    p.add_argument(
        "--backbones",
        nargs="+",
        default=["psp18_camvid", "psp18"],
        help="psp18_camvid (720x960), psp18 (1024x2048), bise18 (720x960) | cpu (experiments/arseg.yaml, 128x256)",
    )
    p.add_argument("--sizes", nargs="+", default=None, help="HxW (default: each backbone's paper resolution)")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.5, 0.3], help="1.0 first: the baseline")
    p.add_argument("--interval", type=int, default=12, help="keyframe interval L (and the video's GOP)")
    p.add_argument("--frames", type=int, default=24, help="frames of the generated video")
    p.add_argument("--repeats", type=int, default=2, help="interleaved passes per row; the fastest counts")
    p.add_argument(
        "--device", choices=["cpu", "cuda"], default="cpu", help="where the networks run (cuda: Triton kernels)"
    )
    p.add_argument("--json", metavar="OUT.json")


def _add_synthetic(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synthetic", help="per-pixel colour classifier vs a small CNN on the synthetic data")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--json", metavar="OUT.json")


def _hxw(text: str, option: str) -> tuple[int, int]:
    h, sep, w = text.partition("x")
    if not (sep and h.isdigit() and w.isdigit()):
        raise SystemExit(f"mvseg bench {option} expects HxW, got {text!r}")
    return int(h), int(w)


def run(a: argparse.Namespace) -> int:
    if a.bench_command == "video":
        from mvseg.bench.video import run_bench_video

        run_bench_video(a.paths, a.json, repeats=a.repeats, peer=a.peer, peer_python_path=a.peer_python, modes=a.modes)
    elif a.bench_command == "strategies":
        from mvseg.bench.strategies import run_bench_strategies

        run_bench_strategies(
            a.run,
            a.intervals,
            a.data_root,
            a.out_dir,
            a.max_videos,
            a.json,
            a.cache_dir,
            wandb=not a.no_wandb,
            repeats=a.repeats,
            view=a.view,
            thresholds=a.thresholds,
            pace=None if a.offline else a.pace_fps,
            slow_track_threads=a.slow_track_threads,
            tables_dir=a.tables_dir,
            coverage=a.coverage_thresholds,
            iframes=a.iframe_schedule,
            gain=a.gain_thresholds,
        )
    elif a.bench_command == "fusion":
        from mvseg.bench.fusion import run_bench_fusion

        run_bench_fusion(a.ckpt, a.data_root, a.out_dir, a.interval, a.json, a.cache_dir)
    elif a.bench_command == "flops":
        from mvseg.bench.flops import run_bench_flops

        run_bench_flops(a.backbones, [_hxw(t, "flops --sizes") for t in a.sizes], a.scales, a.interval, a.json)
    elif a.bench_command == "speed":
        from mvseg.bench.speed import run_bench_speed

        sizes = [_hxw(t, "speed --sizes") for t in a.sizes] if a.sizes else None
        run_bench_speed(a.backbones, sizes, a.scales, a.interval, a.frames, a.repeats, a.json, a.device)
    elif a.bench_command == "stream":
        from mvseg.bench.stream import run_bench_stream

        run_bench_stream(a.frames, _hxw(a.size, "stream --size"), a.interval, tuple(a.methods), a.json)
    elif a.bench_command == "data":
        from mvseg.bench.data import run_bench_data

        run_bench_data(a.data_root, tuple(a.workers), a.samples, a.epochs, json_out=a.json)
    elif a.bench_command == "kernels":
        from mvseg.bench.kernels import run_bench_kernels

        run_bench_kernels(a.json, a.device, tuple(a.dtype), a.repeats, a.dry_run)
    elif a.bench_command == "synthetic":
        from mvseg.bench.synthetic import run_bench_synthetic

        run_bench_synthetic(a.json, steps=a.steps)
    return 0
