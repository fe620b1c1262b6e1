"""`mvseg predict VIDEO --ckpt CKPT`: segment a video with a trained checkpoint (a colour-overlay
MP4, optionally one label PNG per frame), streamed through the runtime."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segment a video with a trained checkpoint (colour-overlay MP4)")
    p.add_argument("video")
    p.add_argument("--ckpt", required=True, help="checkpoint written by mvseg fit")
    p.add_argument("--out", help="overlay MP4 (default: VIDEO stem + '.seg.mp4' beside the video)")
    p.add_argument("--labels-dir", help="also write one label PNG per frame here")
    p.add_argument("--policy", choices=["fixed", "iframes", "adaptive", "coverage"], default=None,
                   help="keyframe policy (default: the model's; adaptive needs a deviation predictor; coverage: a "
                        "keyframe when more than --threshold of the frame is new to the block motion)")
    p.add_argument("--interval", type=int, default=None, help="keyframe interval for the fixed policy")
    p.add_argument("--threshold", type=float, default=None, help="threshold of the content policy: adaptive's deviation, coverage's uncovered share")
    p.add_argument("--low-latency", action=argparse.BooleanOptionalAction, default=None,
                   help="Adaptive: answer keyframes by the fast track, S_h in the background (default: the model's)")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    p.add_argument("--no-legend", action="store_true", help="no panel of class names and colours beside the frames")


def run(a: argparse.Namespace) -> int:
    from mvseg.predict import predict_video

    out = predict_video(a.video, a.ckpt, out=a.out, labels_dir=a.labels_dir, policy=a.policy,
                        interval=a.interval, alpha=a.alpha, threshold=a.threshold, low_latency=a.low_latency, legend_panel=not a.no_legend)
    print(f"wrote {out}")
    return 0
