"""`mvseg predict VIDEO --ckpt CKPT`: segment a video with a trained checkpoint (a colour-overlay
MP4, optionally one label PNG per frame), streamed through the runtime.

Everything that can be checked without decoding is checked first, before torch is imported:
the files exist, the output is not the input and can be written, every number is in range.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def _number(kind: type, lo: float, hi: float | None = None):
    """An argparse type: `kind` in [lo, hi] (hi None: no upper bound), said at parse time."""

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(
                f"must be {f'in [{lo}, {hi}]' if hi is not None else f'>= {lo}'}, got {text}"
            )
        return v

    return parse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segment a video with a trained checkpoint (colour-overlay MP4)")
    p.add_argument("video")
    p.add_argument("--ckpt", required=True, help="checkpoint written by mvseg fit")
    p.add_argument(
        "--out",
        help="overlay MP4, or a folder to write VIDEO-stem.seg.mp4 in (default: VIDEO stem + "
        "'.seg.mp4' beside the video); never the input",
    )
    p.add_argument("--labels-dir", help="also write one label PNG per frame here (into DIR.part while running)")
    p.add_argument(
        "--policy",
        choices=["fixed", "iframes", "adaptive", "coverage"],
        default=None,
        help="keyframe policy (default: the model's; adaptive needs a deviation predictor; coverage: a "
        "keyframe when more than --threshold of the frame is new to the block motion)",
    )
    p.add_argument(
        "--interval", type=_number(int, 1), default=None, help="keyframe interval for the fixed policy (>= 1)"
    )
    p.add_argument(
        "--threshold",
        type=_number(float, 0.0),
        default=None,
        help="threshold of the content policy: adaptive's deviation, coverage's uncovered share",
    )
    p.add_argument(
        "--low-latency",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Adaptive: answer keyframes by the fast track, S_h in the background (default: the model's)",
    )
    p.add_argument(
        "--alpha", type=_number(float, 0.0, 1.0), default=0.5, help="overlay opacity, 0 (frame only) to 1 (labels only)"
    )
    p.add_argument("--no-legend", action="store_true", help="no panel of class names and colours beside the frames")


def _writable(path: Path, what: str) -> None:
    """`path` (a file or folder to be made) can be written: its nearest existing folder is."""
    if path.exists() and not os.access(path, os.W_OK):
        raise PermissionError(f"{path}: {what} exists and is not writable")
    parent = path.parent
    while not parent.exists() and not parent.is_symlink():
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(f"{path}: cannot write the {what}: {parent} is not a folder")
    import tempfile

    try:  # a real write (a read-only mount, a full disk, ACLs), not only the permission bits
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".mvseg-write-check-"):
            pass
    except OSError as e:
        raise PermissionError(f"{path}: cannot write the {what} in {parent} ({e.strerror or e})") from None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)  # a hard or symbolic link too
    except OSError:
        return False


def check_video_path(video: str | Path) -> None:
    """The checks `mvseg.video.decode` makes first, with its words, made before torch and PyAV
    load (seconds), so a mistyped path is said at once."""
    v = Path(video)
    if "://" in str(video):
        return
    if not v.exists():
        raise FileNotFoundError(f"{v}: no such file")
    if v.is_dir():
        raise IsADirectoryError(f"{v}: is a directory, not a video file")
    if v.stat().st_size == 0:
        raise ValueError(f"{v}: empty file (0 bytes)")


def resolve_paths(video: str, ckpt: str, out: str | None, labels_dir: str | None) -> tuple[Path, Path | None]:
    """Check the inputs and outputs before any work; returns the overlay path and labels folder."""
    v, c = Path(video), Path(ckpt)
    check_video_path(v)
    if not c.exists():
        raise FileNotFoundError(f"{c}: checkpoint not found")
    if c.is_dir():
        hint = next((p for p in (c / "checkpoints" / "last.ckpt", c / "last.ckpt") if p.is_file()), None)
        raise IsADirectoryError(
            f"{c}: is a folder, not a checkpoint file" + (f" (did you mean {hint}?)" if hint else "")
        )
    o = Path(out) if out else v.with_name(v.stem + ".seg.mp4")
    if out and (o.is_dir() or out.endswith(os.sep)):
        o = o / (v.stem + ".seg.mp4")  # a folder: the overlay is written in it
    if o.resolve() == v.resolve() or _same_file(o, v):
        raise ValueError(
            f"{o}: --out is the input video itself: predict never overwrites its input; choose another --out"
        )
    _writable(o, "overlay")
    lab = Path(labels_dir) if labels_dir else None
    if lab is not None:
        if lab.exists() and not lab.is_dir():
            raise NotADirectoryError(f"{lab}: --labels-dir is a file, not a folder")
        _writable(lab.with_name(lab.name + ".part"), "labels folder")
    return o, lab


def run(a: argparse.Namespace) -> int:
    import sys

    out, labels = resolve_paths(a.video, a.ckpt, a.out, a.labels_dir)  # before torch is imported
    from mvseg.predict import PredictInterrupted, predict_video

    try:
        out = predict_video(
            a.video,
            a.ckpt,
            out=out,
            labels_dir=labels,
            policy=a.policy,
            interval=a.interval,
            alpha=a.alpha,
            threshold=a.threshold,
            low_latency=a.low_latency,
            legend_panel=not a.no_legend,
        )
    except PredictInterrupted as e:
        print(f"\nmvseg predict: {e}", file=sys.stderr)
        return 130
    print(f"wrote {out}")
    return 0
