"""The streaming runtime: any strategy over a video, frame by frame in display order, with
bounded memory, and per-frame timings.

Keyframes (chosen by the keyframe policy) go through the full network, other frames through
the method's propagation. A frame's latency runs from the moment it is decoded (its MVs
rasterised) to the moment its segmentation is ready; methods that look ahead (interp-MV)
hold frames until the next keyframe, and that wait is part of their latency.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mvseg.data.folder import IMAGENET_MEAN, IMAGENET_STD
from mvseg.strategies.base import SegStrategy, StreamOut, check_policy
from mvseg.strategies.policies import FixedInterval, KeyframePolicy
from mvseg.video.decode import VideoError, VideoReader, iter_frames
from mvseg.video.motion import iter_fields


@dataclass
class FrameResult:
    index: int
    image: np.ndarray | None  # (H, W, 3) uint8, the decoded frame (None when run with images=False)
    label: np.ndarray  # (H, W) uint8 prediction
    is_key: bool
    latency_ms: float
    time: float | None = None  # the frame's timestamp in the video, seconds (None: the stream has none)
    rotation: int = 0  # the video's display rotation, degrees counter-clockwise (its display matrix)


def frame_tensor(
    image: np.ndarray, mean: Sequence[float], std: Sequence[float], device: torch.device | str = "cpu"
) -> Tensor:
    """A decoded RGB frame (H, W, 3) uint8 as a network input (1, 3, H, W): (x / 255 - mean) / std."""
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return (torch.from_numpy(image).to(device).permute(2, 0, 1)[None].float() / 255 - m) / s


def run_stream(
    model: SegStrategy,
    video: str | Path | VideoReader,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    policy: KeyframePolicy | None = None,
    images: bool = True,
    pace_fps: float | None = None,
    prefetch: int = 0,
) -> Iterator[FrameResult]:
    """Segment `video` frame by frame; yields results in display order as they are ready.

    images=False: results carry no image (`FrameResult.image` is None), and frames whose pixels
    the strategy does not read (non-keyframes of prop-MV and interp-MV) are never converted to
    RGB nor normalised, only their MVs are read: what a deployment that needs labels only does.

    pace_fps: a live camera. Frame i is released at i / pace_fps seconds after the first; the
    runtime waits for it (idle time a background track can use) and its latency runs from its
    release, so a frame that waits behind a slow one counts the wait (queueing). None: frames
    are processed back to back, each latency from the moment it is decoded.

    prefetch: frames decoded ahead in a background thread while the network runs (throughput,
    as `mvseg predict` uses it; 0 for latency measurements, where a frame is decoded when due).

    video: a file, or a `VideoReader` open on one (a caller that read its header: opened once).
    """
    dev = model.device  # frames, motion and state live where the model does; labels come back to the CPU
    policy = policy or model.policy
    check_policy(policy, model)
    policy.reset()
    model.eval()
    model.stream_reset()
    waiting: dict[int, tuple[np.ndarray | None, float, float | None, int]] = {}  # decoded, answer not yet out

    def wants_pixels(index: int, pict_type: str) -> bool:
        # asked on the decode thread before the frame is converted to RGB: only the policy's pure
        # `may_be_key`; the decision itself is taken in the loop below (stream_frame)
        return images or model.reads_nonkey_pixels or policy.may_be_key(index, pict_type)

    # stands in for the pixels of a frame the strategy does not read: the right shape, no cost,
    # and NaN should anything read it after all
    nan = torch.full((1, 3, 1, 1), float("nan"), device=dev)
    is_key: dict[int, bool] = {}  # the decision that stood, per frame not yet answered

    def emit(ready):
        if dev.type == "cuda":  # the answer exists when the GPU has computed it
            torch.cuda.synchronize(dev)
        now = time.perf_counter()
        for idx, logits in ready:
            image, t0, when, rotation = waiting.pop(idx)
            # max(1).indices, not argmax(1): same result (first maximum), but torch's CPU argmax
            # over the channel dim of NCHW logits is several times slower (`mvseg bench stream`)
            label = logits.max(1).indices[0].to(torch.uint8).cpu().numpy()
            yield FrameResult(idx, image, label, is_key.pop(idx), 1e3 * (now - t0), when, rotation)

    def push_all(frames) -> Iterator[FrameResult]:
        start = None
        for f, off, mask in frames:
            if off is not None:
                off, mask = torch.from_numpy(off)[None].to(dev), torch.from_numpy(mask)[None].to(dev)
            t0 = time.perf_counter()
            if pace_fps:
                if start is None:
                    start = t0
                release = start + f.index / pace_fps
                if release > t0:
                    time.sleep(release - t0)
                t0 = release
            x = nan.expand(1, 3, f.height, f.width) if f.image is None else frame_tensor(f.image, mean, std, dev)
            waiting[f.index] = (f.image if images else None, t0, f.time, f.rotation)
            # the predicted deviation (or the motion's coverage) is part of the frame's latency
            out, _ = stream_frame(model, policy, x, off, mask, f.index, f.pict_type)
            is_key[f.index] = out.is_key
            yield from emit(out.ready)
            model.stream_idle()  # background work starts once the frame's answer is out

    with torch.inference_mode():
        if model.reads_motion or policy.needs_motion:
            frames = iter_fields(video, rgb=wants_pixels, prefetch=prefetch)
        else:
            frames = ((f, None, None) for f in iter_frames(video, rgb=wants_pixels, mvs=False, prefetch=prefetch))
        try:
            yield from push_all(frames)
        except VideoError:  # the file stops early (truncated, unreadable): the frames decoded so far are answered
            yield from emit(model.stream_flush())
            raise
        yield from emit(model.stream_flush())


def stream_frame(
    model: SegStrategy,
    policy: KeyframePolicy,
    frame: Tensor,
    offset: Tensor | None,
    mask: Tensor | None,
    index: int,
    pict_type: str,
) -> tuple[StreamOut, float | None]:
    """One frame of a stream through a strategy, the one place the stream protocol is driven
    (the runtime and the oracle view): the policy observes the frame's motion and reads the
    predicted deviation when it needs them, decides; the strategy pushes the frame under that
    decision (or overrides it: `stream_decide`), and the decision that stood goes back to the
    policy. frame (1, 3, H, W) normalised; offset (1, 2, Hc, Wc) and mask (1, Hc, Wc) to the
    previous frame (None for the first). Returns the strategy's StreamOut and the deviation
    (None when the policy reads none)."""
    if policy.needs_motion:
        policy.observe(offset, mask)
    deviation = model.stream_deviation(frame, offset, mask) if policy.needs_deviation else None
    key = policy.is_key(index, pict_type, deviation)
    out = model.stream_push(frame, *((offset, mask) if model.reads_motion else (None, None)), key)
    policy.taken(index, out.is_key)  # the decision that stood (a coverage chain restarts there)
    return out, deviation


def stream_stats(results: list[FrameResult], wall_s: float) -> dict:
    lat = np.array([r.latency_ms for r in results])
    return {
        "frames": len(results),
        "fps": len(results) / wall_s,
        "latency_mean_ms": float(lat.mean()),
        "latency_max_ms": float(lat.max()),
        "keyframes": int(sum(r.is_key for r in results)),
    }


def stream_gflops(model: SegStrategy, video: str | Path, interval: int, **kw) -> dict[str, float]:
    """GFLOPs of streaming `video` with a keyframe every `interval` frames (torch's FLOP counter,
    2 per multiply-add): per frame over the whole video, of a keyframe alone (the image model),
    and of a non-keyframe."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        results = list(run_stream(model, video, policy=FixedInterval(interval), images=False, **kw))
    with FlopCounterMode(display=False) as fk:  # a keyframe alone: the image model's cost
        if model.needs_next:  # look-ahead methods emit the first frame late: step it directly
            model.eval()
            model.stream_reset()
            with torch.inference_mode():
                model.stream_step(torch.zeros(1, 3, *results[0].label.shape, device=model.device), None, None, True)
        else:
            next(run_stream(model, video, policy=FixedInterval(interval), images=False, **kw))
    n, n_key = len(results), sum(r.is_key for r in results)
    total, key = fc.get_total_flops(), fk.get_total_flops()
    return {
        "gflops_per_frame": total / n / 1e9,
        "gflops_key": key / 1e9,
        "gflops_nonkey": (total - n_key * key) / (n - n_key) / 1e9 if n > n_key else float("nan"),
    }


def stream_state_bytes(model: SegStrategy) -> int:
    """Bytes of the tensors a strategy holds between frames (cached keyframe features, composed
    offsets, held frames, ...): its plain attributes, walked through lists, tuples and dicts;
    parameters, buffers and submodules are not state. Bounded by the keyframe interval in a
    correct strategy, whatever the length of the stream."""
    seen: set[int] = set()

    def walk(v) -> int:
        if isinstance(v, torch.Tensor):
            if id(v) in seen:
                return 0
            seen.add(id(v))
            return v.numel() * v.element_size()
        if isinstance(v, (list, tuple)):
            return sum(walk(x) for x in v)
        if isinstance(v, dict):
            return sum(walk(x) for x in v.values())
        return 0

    skip = {"_parameters", "_buffers", "_modules"}
    return sum(walk(v) for k, v in vars(model).items() if k not in skip)
