"""The `mvseg` console script: LightningCLI for training plus the project's own commands.

    mvseg fit|validate|test --config experiments/per_frame.yaml [--key value ...] [--no-prerequisites]
    mvseg predict VIDEO --ckpt RUN/checkpoints/last.ckpt [--out overlay.mp4] [--labels-dir DIR]
    mvseg inspect VIDEO [--dump-mvs OUT.csv] [--motion-report [--max-distance N]] [--json OUT]
    mvseg fuzz [VIDEO ...] [--budget SECONDS] [--cases N] [--seed S] [--out DIR]
    mvseg data prepare synthetic --out DIR [...]
    mvseg data prepare cityscapes|camvid --root SRC --out DIR [--protocol gop|per-distance] [--interval L] [...]
    mvseg sweep local experiments/sweeps/arseg.yaml --count N [--out DIR] [-- --key value ...]
    mvseg bench video [PATH ...] [--json OUT.json]
    mvseg bench synthetic [--json OUT.json]
    mvseg bench kernels [--device cuda] [--dtype fp32 bf16] [--dry-run] [--json OUT.json]
    mvseg bench data [--data-root DIR] [--workers 0 1 2] [--json OUT.json]
    mvseg bench strategies --run NAME=CKPT ... [--intervals 1 5 10]
    mvseg bench fusion --ckpt RUN/checkpoints/last.ckpt [--data-root DIR] [--out-dir DIR]
    mvseg bench speed [--backbones psp18_camvid psp18] [--scales 1.0 0.5 0.3] [--device cuda] [--json OUT.json]

`main(args)` is callable from tests; it returns the process exit status.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence

OWN_COMMANDS = ("inspect", "data", "bench", "predict", "fuzz", "sweep")
LIGHTNING_COMMANDS = ("fit", "validate", "test")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mvseg",
        description="Fast semantic segmentation of compressed video with block motion vectors.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    for name, what in (("fit", "train a strategy"), ("validate", "evaluate on the validation split"),
                       ("test", "evaluate on the test split")):
        sub.add_parser(name, help=f"{what} (LightningCLI: mvseg {name} --config CONFIG.yaml; --help for all options)",
                       add_help=False)

    pr = sub.add_parser("predict", help="segment a video with a trained checkpoint (colour-overlay MP4)")
    pr.add_argument("video")
    pr.add_argument("--ckpt", required=True, help="checkpoint written by mvseg fit")
    pr.add_argument("--out", help="overlay MP4 (default: VIDEO stem + '.seg.mp4' beside the video)")
    pr.add_argument("--labels-dir", help="also write one label PNG per frame here")
    pr.add_argument("--policy", choices=["fixed", "iframes", "adaptive"], default=None,
                    help="keyframe policy (default: the model's; adaptive needs mvseg.strategies.Adaptive)")
    pr.add_argument("--interval", type=int, default=None, help="keyframe interval for the fixed policy")
    pr.add_argument("--threshold", type=float, default=None, help="deviation threshold of the adaptive policy")
    pr.add_argument("--low-latency", action=argparse.BooleanOptionalAction, default=None,
                    help="Adaptive: answer keyframes by the fast track, S_h in the background (default: the model's)")
    pr.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")

    ins = sub.add_parser("inspect", help="codec, size, picture types and MV statistics of a video")
    ins.add_argument("video")
    ins.add_argument("--dump-mvs", metavar="OUT.csv", help="write every MV (FFmpeg extract_mvs format)")
    ins.add_argument("--motion-report", action="store_true",
                     help="PSNR of MV-warped vs copied frames per keyframe distance")
    ins.add_argument("--max-distance", type=int, default=5)
    ins.add_argument("--json", metavar="OUT.json", help="write the report as JSON")

    fz = sub.add_parser("fuzz", help="mutated videos through mvseg inspect: no crash, no hang, errors that name the file")
    fz.add_argument("videos", nargs="*", help="seed videos (default: generated MP4, MKV, raw H.264, B-frames, odd size)")
    fz.add_argument("--budget", type=float, default=60.0, help="seconds to fuzz for")
    fz.add_argument("--cases", type=int, default=None, help="stop after this many cases")
    fz.add_argument("--seed", type=int, default=0)
    fz.add_argument("--timeout", type=float, default=10.0, help="seconds before a case counts as a hang")
    fz.add_argument("--no-motion-report", action="store_true", help="decode only (skip rasterising and warping)")
    fz.add_argument("--out", default="fuzz", help="work folder; findings are kept in OUT/findings")
    fz.add_argument("--json", metavar="OUT.json", help="also write the summary here")

    data = sub.add_parser("data", help="dataset preparation")
    dsub = data.add_subparsers(dest="data_command", required=True)
    prep = dsub.add_parser("prepare", help="prepare a dataset as compressed video")
    prep.add_argument("dataset", choices=["synthetic", "cityscapes", "camvid"])
    prep.add_argument("--out", required=True, help="output folder (mvseg folder layout); the same folder resumes")
    real = prep.add_argument_group("cityscapes and camvid")
    real.add_argument("--root", help="the dataset as distributed (see mvseg.data.cityscapes / mvseg.data.camvid)")
    real.add_argument("--protocol", choices=["gop", "per-distance"], default="gop",
                      help="gop: one clip per snippet, an I-frame every L frames; per-distance: AR-Seg's, one clip "
                           "per distance d = 0..L-1 with the labelled frame d frames after an I-frame")
    real.add_argument("--interval", type=int, default=12, help="keyframe interval L (the GOP)")
    real.add_argument("--size", default=None, help="output HxW (default: the source's, 1024x2048 / 720x960)")
    real.add_argument("--crf", type=float, default=18.0, help="x264 constant quality")
    real.add_argument("--splits", nargs="+", default=None, help="default: train val (cityscapes), train val test (camvid)")
    real.add_argument("--context", type=int, nargs=2, metavar=("BEFORE", "AFTER"), default=None,
                      help="frames kept before and after each labelled one (default: 19 10 cityscapes' snippet; "
                           "L-1 L camvid)")
    real.add_argument("--max-snippets", type=int, default=None, help="at most this many labelled frames per split")
    real.add_argument("--void-class", action="store_true", help="camvid: Void as a 12th class (AR-Seg) instead of ignored")
    real.add_argument("--frame-offset", action="append", default=[], metavar="SEQ=N",
                      help="camvid: label frame n is source frame n + N in sequence SEQ (default 0)")
    prep.add_argument("--train-clips", type=int, default=24)
    prep.add_argument("--val-clips", type=int, default=12)
    prep.add_argument("--height", type=int, default=128)
    prep.add_argument("--width", type=int, default=256)
    prep.add_argument("--frames", type=int, default=30)
    prep.add_argument("--gop", type=int, default=None, help="GOP length (default: the clip length)")
    prep.add_argument("--annotated", type=int, nargs="+", default=[9, 19], help="annotated frame indices")
    prep.add_argument("--speed-changes", type=int, default=0,
                      help="synthetic: stop-and-go camera, this many speed changes per clip (default 0: constant speed)")
    prep.add_argument("--seed", type=int, default=0)
    prep.add_argument("--workers", type=int, default=2, help="processes generating clips / encoding snippets")

    sw = sub.add_parser("sweep", help="W&B sweeps without a W&B server")
    swsub = sw.add_subparsers(dest="sweep_command", required=True)
    swl = swsub.add_parser("local", help="run a W&B sweep file here: W&B's sweep engine picks each run's "
                           "configuration, the run's val metric goes back to it (pip install 'mvseg[sweep]')",
                           epilog="Arguments after `--` are appended to every run's command line.")
    swl.add_argument("sweep", help="W&B sweep file (experiments/sweeps/*.yaml)")
    swl.add_argument("--count", type=int, required=True, help="runs to start in this call")
    swl.add_argument("--out", default=None, help="sweep folder (default: sweeps/NAME); the same folder continues a sweep")
    swl.add_argument("--seed", type=int, default=0, help="seed of the search's random draws")

    bench = sub.add_parser("bench", help="benchmarks (ratios measured side by side in one run)")
    bsub = bench.add_subparsers(dest="bench_command", required=True)
    bv = bsub.add_parser("video", help="decode vs decode + MV export + offset fields")
    bv.add_argument("paths", nargs="*", help="videos (default: a generated 640x360 clip)")
    bv.add_argument("--repeats", type=int, default=7)
    bv.add_argument("--json", metavar="OUT.json")
    bk = bsub.add_parser("kernels", help="warp / local attention / sv_conv: Triton vs PyTorch at paper sizes; logits resize: matmul vs interpolate")
    bk.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: cuda when a GPU is visible")
    bk.add_argument("--dtype", nargs="+", default=["fp32"], choices=["fp32", "fp16", "bf16"],
                    help="input dtypes (CUDA; the CPU rows are fp32)")
    bk.add_argument("--repeats", type=int, default=3, help="CPU: forward passes, the median counts")
    bk.add_argument("--dry-run", action="store_true", help="list the rows and the kernels' traffic, measure nothing")
    bk.add_argument("--json", metavar="OUT.json")
    bst = bsub.add_parser("strategies", help="mIoU, fps, latency and GFLOPs of trained strategies per keyframe interval")
    bst.add_argument("--run", action="append", required=True, metavar="NAME=CKPT", help="a method and its checkpoint")
    bst.add_argument("--intervals", type=int, nargs="+", default=list(range(1, 11)))
    bst.add_argument("--data-root", default="data/synthetic", help="mvseg folder dataset (its val split)")
    bst.add_argument("--cache-dir", default=None)
    bst.add_argument("--max-videos", type=int, default=None, help="videos for the speed measurement")
    bst.add_argument("--out-dir", default="bench/strategies", help="results.json, table.md, accuracy_vs_fps.png")
    bst.add_argument("--json", metavar="OUT.json")
    bst.add_argument("--no-wandb", action="store_true", help="do not log the table and plot to W&B")
    bst.add_argument("--repeats", type=int, default=3, help="speed passes per method and interval; the fastest counts")
    bst.add_argument("--view", choices=["protocol", "latency", "both", "oracle"], default="protocol",
                     help="protocol: mIoU per keyframe distance; latency: keyframe schedules over whole streams "
                          "(fixed L, adaptive thresholds, adaptive + low-latency; Li et al.'s Table 1); oracle: the "
                          "headroom of content-chosen keyframes (fixed L vs a perfect deviation predictor vs hindsight)")
    bst.add_argument("--thresholds", type=float, nargs="+", default=[0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2],
                     help="deviation thresholds of the adaptive schedules (latency and oracle views)")
    bst.add_argument("--pace-fps", type=float, default=0.0,
                     help="latency view: release frames at this rate, as a live camera (0: each video's own rate)")
    bst.add_argument("--slow-track-threads", type=int, default=None,
                     help="latency view: CPU threads of Adaptive's background slow track (default: the checkpoint's)")
    bst.add_argument("--offline", action="store_true",
                     help="latency view: process frames back to back instead (no idle time between frames)")
    bfu = bsub.add_parser("fusion", help="AR-Seg: mIoU per distance of CReFF vs its two inputs alone (LR, MV-warped HR) and their mean")
    bfu.add_argument("--ckpt", required=True, help="a stage-2 AR-Seg checkpoint")
    bfu.add_argument("--data-root", default="data/synthetic", help="mvseg folder dataset (its val split)")
    bfu.add_argument("--interval", type=int, default=None, help="keyframe interval L (default: the checkpoint's)")
    bfu.add_argument("--cache-dir", default=None)
    bfu.add_argument("--out-dir", default="bench/fusion", help="fusion.json, fusion.md")
    bfu.add_argument("--json", metavar="OUT.json")
    bsm = bsub.add_parser("stream", help="constant memory of the streaming runtime on a long generated video")
    bsm.add_argument("--frames", type=int, default=10_000)
    bsm.add_argument("--size", default="64x128", help="HxW of the generated frames")
    bsm.add_argument("--interval", type=int, default=10, help="keyframe interval (and GOP)")
    bsm.add_argument("--methods", nargs="+", default=["per_frame", "prop_mv", "interp_mv"],
                     choices=["per_frame", "prop_mv", "interp_mv"])
    bsm.add_argument("--json", metavar="OUT.json")
    bd = bsub.add_parser("data", help="DataModule samples/s with 0, 1, 2 workers, a sample's cost by part, vs a training step")
    bd.add_argument("--data-root", default="data/synthetic", help="mvseg folder dataset (its train split)")
    bd.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    bd.add_argument("--samples", type=int, default=200, help="samples timed part by part")
    bd.add_argument("--epochs", type=int, default=3, help="epochs per loader measurement")
    bd.add_argument("--json", metavar="OUT.json")
    bf = bsub.add_parser("flops", help="AR-Seg GFLOPs per frame (1.0x vs AR^s), a table like its Table 1")
    bf.add_argument("--backbones", nargs="+", default=["psp18"], help="psp18, bise18 (the paper's) | cpu (experiments/arseg.yaml)")
    bf.add_argument("--sizes", nargs="+", default=["1024x2048", "720x960"], help="HxW")
    bf.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.7, 0.6, 0.5])
    bf.add_argument("--interval", type=int, default=12, help="keyframe interval L")
    bf.add_argument("--json", metavar="OUT.json")
    bsp = bsub.add_parser("speed", help="AR-Seg streaming ms/frame, 1.0x vs AR^s at the paper's resolutions (its Table 5)")
    bsp.add_argument("--backbones", nargs="+", default=["psp18_camvid", "psp18"],
                     help="psp18_camvid (720x960), psp18 (1024x2048), bise18 (720x960) | cpu (experiments/arseg.yaml, 128x256)")
    bsp.add_argument("--sizes", nargs="+", default=None, help="HxW (default: each backbone's paper resolution)")
    bsp.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.5, 0.3], help="1.0 first: the baseline")
    bsp.add_argument("--interval", type=int, default=12, help="keyframe interval L (and the video's GOP)")
    bsp.add_argument("--frames", type=int, default=24, help="frames of the generated video")
    bsp.add_argument("--repeats", type=int, default=2, help="interleaved passes per row; the fastest counts")
    bsp.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the networks run (cuda: Triton kernels)")
    bsp.add_argument("--json", metavar="OUT.json")
    bs = bsub.add_parser("synthetic", help="per-pixel colour classifier vs a small CNN on the synthetic data")
    bs.add_argument("--steps", type=int, default=300)
    bs.add_argument("--json", metavar="OUT.json")
    return p


def _inspect(a: argparse.Namespace) -> int:
    from mvseg.video.report import motion_report, summarize

    s = summarize(a.video, dump_mvs=a.dump_mvs)
    per = s["motion_vectors"] / max(s["frames_with_mvs"], 1)
    print(f"video:        {s['path']}")
    print(f"codec:        {s['codec']}  {s['width']}x{s['height']}  {s['fps']:.3f} fps")
    print(f"frames:       {s['frames']} decoded ({s['frames_declared']} declared)")
    refs = s["max_ref_frames"]
    print(f"references:   {'unknown' if refs is None else refs}  B-frames: {'yes' if s['has_b_frames'] else 'no'}")
    print(f"pict types:   {s['pict_types']}")
    print(f"MVs:          {s['motion_vectors']} in {s['frames_with_mvs']} frames ({per:.1f} per frame)")
    print(f"block sizes:  {', '.join(f'{k}: {v}' for k, v in s['block_sizes'].items()) or '-'}")
    print(f"MV sources:   {', '.join(f'{k}: {v}' for k, v in s['mv_sources'].items()) or '-'}")
    if a.dump_mvs:
        print(f"MVs written to {a.dump_mvs}")
    out = {"summary": s}
    if a.motion_report:
        r = motion_report(a.video, a.max_distance)
        print("\nmotion report: PSNR (dB) of frame t-d warped by composed MVs vs copied, against frame t")
        print("| d | pairs | warp | copy | gain |\n|---|---|---|---|---|")
        for row in r["rows"]:
            if row["pairs"]:
                gain = row["psnr_warp"] - row["psnr_copy"]
                print(f"| {row['distance']} | {row['pairs']} | {row['psnr_warp']:.2f} | {row['psnr_copy']:.2f} | {gain:+.2f} |")
            else:
                print(f"| {row['distance']} | 0 | - | - | - |")
        out["motion_report"] = r
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


def _fuzz(a: argparse.Namespace) -> int:
    from mvseg.fuzz import run_fuzz

    s = run_fuzz(a.out, budget_s=a.budget, max_cases=a.cases, seed=a.seed, timeout_s=a.timeout, videos=a.videos,
                 motion_report=not a.no_motion_report, progress=True, entry=main)
    print(f"{s['cases']} cases in {s['seconds']:.0f} s (slowest {s['slowest_s']:.2f} s), seeds {', '.join(s['seeds'])}")
    print("outcomes:     " + ", ".join(f"{k} {v}" for k, v in s["by_status"].items()))
    print("errors seen:  " + "; ".join(f"{k} ({v})" for k, v in s["errors_seen"].items()))
    for f in s["findings"]:
        print(f"finding:      case {f['index']} ({f['mutator']} of {f['seed']}): {f['status']}: {f['message']}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(s, fh, indent=1)
    return 1 if s["findings"] else 0


def _data(a: argparse.Namespace) -> int:
    if a.dataset != "synthetic":
        return _prepare_real(a)
    from mvseg.data.synthetic import SyntheticConfig, make_synthetic_dataset

    if a.speed_changes < 0:
        raise SystemExit(f"mvseg data prepare synthetic: --speed-changes must be >= 0, got {a.speed_changes}")
    cfg = SyntheticConfig(height=a.height, width=a.width, frames=a.frames, speed_changes=a.speed_changes)
    meta = make_synthetic_dataset(
        a.out, train_clips=a.train_clips, val_clips=a.val_clips, seed=a.seed, config=cfg,
        gop=a.gop, annotated=tuple(a.annotated), workers=a.workers,
    )
    n = " + ".join(f"{len(v)} {k}" for k, v in meta["splits"].items())
    print(f"synthetic dataset in {a.out}: {n} clips of {a.frames} frames, {a.width}x{a.height}")
    return 0


def _prepare_real(a: argparse.Namespace) -> int:
    from mvseg.data.prepare import PrepareConfig, parse_size

    if not a.root:
        raise ValueError(f"mvseg data prepare {a.dataset} needs --root (the dataset as distributed)")
    cfg = PrepareConfig(protocol=a.protocol, interval=a.interval, size=parse_size(a.size), crf=a.crf)
    if a.dataset == "cityscapes":
        from mvseg.data.cityscapes import prepare_cityscapes

        before, after = a.context or (19, 10)
        meta = prepare_cityscapes(a.root, a.out, cfg, tuple(a.splits or ("train", "val")), before, after,
                                  a.max_snippets, workers=a.workers)
    else:
        from mvseg.data.camvid import prepare_camvid

        offsets = {}
        for item in a.frame_offset:
            seq, sep, n = item.partition("=")
            if not sep or not n.lstrip("-").isdigit():
                raise ValueError(f"--frame-offset expects SEQ=N, got {item!r}")
            offsets[seq] = int(n)
        before, after = a.context or (a.interval - 1, a.interval)
        meta = prepare_camvid(a.root, a.out, cfg, tuple(a.splits or ("train", "val", "test")), before, after,
                              a.void_class, offsets, a.max_snippets, workers=a.workers)
    counts = meta.pop("_counts")
    n = ", ".join(f"{len(v)} {k}" for k, v in meta["splits"].items())
    print(f"{a.dataset} in {a.out}: {n} clips ({a.protocol}, L = {a.interval}, {meta['size'][1]}x{meta['size'][0]}); "
          f"{counts['written']} encoded, {counts['kept']} kept from an earlier run")
    return 0


def _hxw(text: str, option: str) -> tuple[int, int]:
    h, sep, w = text.partition("x")
    if not (sep and h.isdigit() and w.isdigit()):
        raise SystemExit(f"mvseg bench {option} expects HxW, got {text!r}")
    return int(h), int(w)


def _bench(a: argparse.Namespace) -> int:
    from mvseg import bench

    if a.bench_command == "video":
        bench.run_bench_video(a.paths, a.json, repeats=a.repeats)
    elif a.bench_command == "strategies":
        from mvseg.bench_strategies import run_bench_strategies

        run_bench_strategies(a.run, a.intervals, a.data_root, a.out_dir, a.max_videos, a.json, a.cache_dir,
                             wandb=not a.no_wandb, repeats=a.repeats, view=a.view, thresholds=a.thresholds,
                             pace=None if a.offline else a.pace_fps, slow_track_threads=a.slow_track_threads)
    elif a.bench_command == "fusion":
        from mvseg.bench_fusion import run_bench_fusion

        run_bench_fusion(a.ckpt, a.data_root, a.out_dir, a.interval, a.json, a.cache_dir)
    elif a.bench_command == "flops":
        from mvseg.bench_flops import run_bench_flops

        run_bench_flops(a.backbones, [_hxw(t, "flops --sizes") for t in a.sizes], a.scales, a.interval, a.json)
    elif a.bench_command == "speed":
        from mvseg.bench_speed import run_bench_speed

        sizes = [_hxw(t, "speed --sizes") for t in a.sizes] if a.sizes else None
        run_bench_speed(a.backbones, sizes, a.scales, a.interval, a.frames, a.repeats, a.json, a.device)
    elif a.bench_command == "stream":
        from mvseg.bench_stream import run_bench_stream

        run_bench_stream(a.frames, _hxw(a.size, "stream --size"), a.interval, tuple(a.methods), a.json)
    elif a.bench_command == "data":
        from mvseg.bench_data import run_bench_data

        run_bench_data(a.data_root, tuple(a.workers), a.samples, a.epochs, json_out=a.json)
    elif a.bench_command == "kernels":
        from mvseg.bench_kernels import run_bench_kernels

        run_bench_kernels(a.json, a.device, tuple(a.dtype), a.repeats, a.dry_run)
    elif a.bench_command == "synthetic":
        bench.run_bench_synthetic(a.json, steps=a.steps)
    return 0


def _predict(a: argparse.Namespace) -> int:
    from mvseg.predict import predict_video

    out = predict_video(a.video, a.ckpt, out=a.out, labels_dir=a.labels_dir, policy=a.policy,
                        interval=a.interval, alpha=a.alpha, threshold=a.threshold, low_latency=a.low_latency)
    print(f"wrote {out}")
    return 0


def _sweep(a: argparse.Namespace) -> int:
    from mvseg.sweep import main_sweep_local

    return main_sweep_local(a.sweep, a.count, a.out, a.seed, a.extra)


def sweep_agent_values(argv: list[str]) -> list[str]:
    """A W&B sweep agent writes each value with Python's str(): True/False and lists parse as
    YAML, but None does not (YAML's null is `null`); `--key=None` and `--key None` become null."""
    out = []
    for i, a in enumerate(argv):
        if a.startswith("--") and a.endswith("=None") and "." in a:
            a = a[: -len("None")] + "null"
        elif a == "None" and i > 0 and argv[i - 1].startswith("--") and "=" not in argv[i - 1]:
            a = "null"
        out.append(a)
    return out


def _lightning(argv: list[str], from_sys_argv: bool) -> int:
    from mvseg.lightning_cli import run_lightning_cli

    fixed = sweep_agent_values(argv)
    if from_sys_argv and fixed != argv:
        sys.argv[1:] = fixed
    return run_lightning_cli(None if from_sys_argv else fixed)


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of the `mvseg` console script; returns the exit status. Heavy imports
    (torch, Lightning, PyAV) happen in the command that needs them: `mvseg --help` and
    `mvseg COMMAND --help` answer without them."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in LIGHTNING_COMMANDS:
        return _lightning(argv, from_sys_argv=args is None)
    extra: list[str] = []
    if argv and argv[0] == "sweep" and "--" in argv:  # arguments for every run of the sweep
        argv, extra = argv[: argv.index("--")], argv[argv.index("--") + 1:]
    a = _parser().parse_args(argv)
    a.extra = extra

    shown: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None):  # once, one line
        if str(message) not in shown:
            shown.add(str(message))
            print(f"mvseg {a.command}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        try:
            return {"inspect": _inspect, "data": _data, "bench": _bench, "predict": _predict, "fuzz": _fuzz,
                    "sweep": _sweep}[a.command](a)
        # a bad video, dataset, file or value: one line, no traceback (OSError: a missing file, a
        # full disk; mvseg's VideoError and DatasetError are ValueErrors: nothing to import for them)
        except (OSError, ValueError) as e:
            print(f"mvseg {a.command}: error: {e}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
