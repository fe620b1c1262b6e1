"""`mvseg predict`: segment a video with a trained strategy, frame by frame, and write a
colour-overlay MP4 (and optionally one label PNG per frame).

Frames stream through mvseg.runtime (bounded memory): keyframes (the strategy's keyframe
policy) go through the full network, other frames through the method's propagation.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mvseg.data.synthetic import PALETTE
from mvseg.runtime import run_stream
from mvseg.strategies.base import no_deviation_error
from mvseg.strategies.loading import load_strategy
from mvseg.strategies.policies import make_policy
from mvseg.video.decode import probe
from mvseg.video.encode import encode_video


def overlay(frame: np.ndarray, label: np.ndarray, palette: np.ndarray, alpha: float) -> np.ndarray:
    return (frame * (1 - alpha) + palette[label] * alpha).astype(np.uint8)


def predict_video(
    video: str | Path,
    ckpt: str | Path,
    out: str | Path | None = None,
    labels_dir: str | Path | None = None,
    policy: str | None = None,
    interval: int | None = None,
    alpha: float = 0.5,
    threshold: float | None = None,
    low_latency: bool | None = None,
) -> Path:
    """Write the colour overlay of `video`'s segmentation to `out` (an MP4); returns its path.
    policy / interval / threshold override the model's keyframe policy (threshold: the adaptive
    policy's deviation threshold); low_latency the Adaptive strategy's schedule."""
    from PIL import Image

    model, data = load_strategy(ckpt)
    info = probe(video)
    pol = None
    if policy or interval or threshold is not None:
        name = policy or ("adaptive" if threshold is not None else "fixed")
        if name == "adaptive" and not model.has_deviation:
            raise ValueError(f"{ckpt}: {no_deviation_error(model)}")
        pol = make_policy(name, interval or model.keyframe_interval,
                          threshold if threshold is not None else model.deviation_threshold)
    if low_latency is not None:
        if not hasattr(model, "low_latency"):
            raise ValueError(f"{ckpt}: {type(model).__name__} has no low-latency schedule (mvseg.strategies.Adaptive has)")
        model.low_latency = low_latency
    palette = np.array(data.get("palette") or PALETTE, np.float32)
    if len(palette) < model.num_classes:  # more classes than colours: add deterministic ones
        extra = np.random.default_rng(0).integers(0, 255, (model.num_classes - len(palette), 3))
        palette = np.concatenate([palette, extra])
    out = Path(out) if out else Path(video).with_suffix(".seg.mp4")
    if labels_dir:
        Path(labels_dir).mkdir(parents=True, exist_ok=True)

    def frames() -> Iterator[np.ndarray]:
        kw = {k: data[k] for k in ("mean", "std") if k in data}
        stream = run_stream(model, video, policy=pol, **kw)
        for r in tqdm(stream, total=info.num_frames or None, desc="predict"):
            if labels_dir:
                Image.fromarray(r.label).save(Path(labels_dir) / f"{r.index:06d}.png")
            yield overlay(r.image, r.label, palette, alpha)

    h, w = info.height, info.width
    if h % 2 or w % 2:
        raise ValueError(f"{video}: odd frame size {w}x{h} cannot be written as H.264 4:2:0")
    return encode_video(frames(), out, gop=max(int(round(info.fps or 30)), 1), fps=info.fps or 30.0, crf=20)
