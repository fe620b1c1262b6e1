"""`mvseg predict`: segment a video with a trained strategy, frame by frame, and write a
colour-overlay MP4 (and optionally one label PNG per frame).

Frames stream through mvseg.runtime (bounded memory): keyframes (the strategy's keyframe
policy) go through the full network, other frames through the method's propagation.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mvseg.data.synthetic import PALETTE
from mvseg.runtime import run_stream
from mvseg.strategies.base import SegStrategy, check_policy
from mvseg.strategies.loading import load_strategy
from mvseg.strategies.policies import KeyframePolicy, make_policy
from mvseg.video.decode import VideoError, VideoReader
from mvseg.video.encode import encode_video


def overlay(frame: np.ndarray, label: np.ndarray, palette: np.ndarray, alpha: float) -> np.ndarray:
    return (frame * (1 - alpha) + palette[label] * alpha).astype(np.uint8)


def legend(classes: list[str], palette: np.ndarray, height: int) -> np.ndarray:
    """A panel (height, W, 3) uint8 listing each class beside its colour, in as many columns as
    the height needs; W is even (H.264 4:2:0). Put beside the overlay, so no pixel is hidden."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    row = 12  # px per class: a 9 px swatch and the default bitmap font
    per_col = max((height - 4) // row, 1)
    cols = -(-len(classes) // per_col)
    name_w = max(int(font.getlength(c)) for c in classes) if classes else 0
    col_w = 4 + 9 + 4 + name_w + 6
    width = cols * col_w + 4
    img = Image.new("RGB", (width + width % 2, height), (24, 24, 24))
    draw = ImageDraw.Draw(img)
    for i, name in enumerate(classes):
        x, y = 4 + (i // per_col) * col_w, 2 + (i % per_col) * row
        draw.rectangle([x, y + 1, x + 8, y + 9], fill=tuple(int(v) for v in palette[i]))
        draw.text((x + 13, y), name, fill=(235, 235, 235), font=font)
    return np.asarray(img)


class PredictInterrupted(Exception):
    """Ctrl-C during `predict_video`: what was and was not written."""


def _policy(
    model: SegStrategy, ckpt: str | Path, policy: str | None, interval: int | None, threshold: float | None
) -> KeyframePolicy | None:
    """The keyframe policy the command line asks for (None: the model's own), checked against the model."""
    if not (policy or interval or threshold is not None):
        return None  # the model's own
    name = policy or ("adaptive" if threshold is not None else "fixed")
    try:
        check_policy(name, model)
    except ValueError as e:
        raise ValueError(f"{ckpt}: {e}") from None
    if name == "coverage" and threshold is None:
        raise ValueError(
            "--policy coverage needs --threshold (the share of the frame its block motion cannot "
            "bring from the keyframe, e.g. 0.2)"
        )
    return make_policy(
        name, interval or model.keyframe_interval, threshold if threshold is not None else model.deviation_threshold
    )


def _palette(data: dict, num_classes: int) -> np.ndarray:
    """The checkpoint's class colours (K, 3), with deterministic extra ones for classes it has none for."""
    palette = np.array(data.get("palette") or PALETTE, np.float32)
    if len(palette) < num_classes:  # more classes than colours: add deterministic ones
        extra = np.random.default_rng(0).integers(0, 255, (num_classes - len(palette), 3))
        palette = np.concatenate([palette, extra])
    return palette


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
    legend_panel: bool = True,
) -> Path:
    """Write the colour overlay of `video`'s segmentation to `out` (an MP4); returns its path.
    policy / interval / threshold override the model's keyframe policy (threshold: the adaptive
    policy's deviation threshold); low_latency the Adaptive strategy's schedule; legend_panel: the
    class names and colours beside each frame."""
    from PIL import Image

    model, data = load_strategy(ckpt)
    if not model.segments:
        raise ValueError(
            f"{ckpt}: a {type(model).__name__} checkpoint segments nothing (it trains a part of another "
            "method): give the checkpoint of a segmenting run"
        )
    pol = _policy(model, ckpt, policy, interval, threshold)
    if low_latency is not None:
        if not model.has_fast_track:
            raise ValueError(
                f"{ckpt}: {type(model).__name__} has no low-latency schedule (mvseg.strategies.Adaptive has)"
            )
        model.low_latency = low_latency
    palette = _palette(data, model.num_classes)
    if data.get("dataset") == "synthetic":  # said once (the CLI shows each warning once, one line)
        warnings.warn(
            f"{ckpt} was trained on mvseg's synthetic street scenes only: on real footage its classes "
            "will be wrong (train on your own labelled video: docs/datasets.md)",
            stacklevel=2,
        )
    classes = list(data.get("classes") or [f"class {k}" for k in range(model.num_classes)])
    out = Path(out) if out else Path(video).with_suffix(".seg.mp4")
    if Path(video).resolve() == out.resolve():
        raise ValueError(f"{out}: the output is the input video itself: predict never overwrites its input")
    reader = VideoReader(video, need_size=True)  # opened once: its header here, its frames in run_stream
    info = reader.info
    panel = legend(classes[: model.num_classes], palette, info.height) if legend_panel else None
    # label PNGs go to DIR.part while the video streams, into DIR when it is whole: an
    # interrupted run never leaves a labels folder that looks complete
    part = None
    if labels_dir:
        part = Path(labels_dir).with_name(Path(labels_dir).name + ".part")
        shutil.rmtree(part, ignore_errors=True)
        part.mkdir(parents=True)

    pad = ((0, info.height % 2), (0, info.width % 2), (0, 0))  # H.264 4:2:0 needs even sizes: edge-pad the overlay
    done = 0
    rotation = [0]

    def frames() -> Iterator[tuple[np.ndarray, float | None]]:
        nonlocal done
        kw = {k: data[k] for k in ("mean", "std") if k in data}
        stream = run_stream(model, reader, policy=pol, prefetch=4, **kw)  # decoding overlaps the network
        try:
            for r in tqdm(stream, total=info.num_frames or None, desc="predict"):
                if part is not None:  # labels at the source size, whatever the overlay's
                    Image.fromarray(r.label).save(part / f"{r.index:06d}.png")
                shown = overlay(r.image, r.label, palette, alpha)
                if panel is not None:  # the legend to the right
                    shown = np.concatenate([shown, panel], axis=1)
                rotation[0] = r.rotation
                done += 1
                yield (np.pad(shown, pad, mode="edge") if any(pad[0] + pad[1]) else shown), r.time
        except VideoError as e:
            if not done:
                raise
            # a truncated or damaged file: the frames decoded are the overlay, and the user is told where it stopped
            warnings.warn(f"{e}: the overlay {out} has frames 0-{done - 1}", stacklevel=2)

    # timestamps kept (variable frame rate stays variable), rotation kept as display metadata
    try:
        written = encode_video(
            frames(),
            out,
            gop=max(int(round(info.fps or 30)), 1),
            fps=info.fps or 30.0,
            crf=20,
            timed=True,
            rotation=lambda: rotation[0],  # the source's, known from its first frame
        )
    except KeyboardInterrupt:
        labels = f"; the label PNGs of frames 0-{done - 1} are in {part}" if part is not None and done else ""
        raise PredictInterrupted(f"interrupted after {done} frames: no overlay written to {out}{labels}") from None
    if part is not None:
        final = Path(labels_dir)
        final.mkdir(parents=True, exist_ok=True)
        for f in sorted(part.iterdir()):
            os.replace(f, final / f.name)
        part.rmdir()
    return written
