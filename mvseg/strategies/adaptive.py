"""Adaptive keyframes with spatially-variant propagation and low-latency scheduling (Li et al.,
"Low-Latency Video Semantic Segmentation", CVPR 2018).

The image network is split into a cheap lower part S_l, run on every frame, and an expensive
higher part S_h, run on keyframes only (Sec. 3.1). From the low-level features F_l of the
current frame t and of the last keyframe k:
- a deviation predictor says how far t's segmentation has drifted from k's; above a threshold
  t becomes a keyframe (Sec. 3.2, the `adaptive` keyframe policy);
- otherwise a kernel predictor gives per-pixel HxH kernels and the keyframe's high-level
  features are propagated by spatially-variant convolution (Eq. 1, ops.sv_conv):
      F_h^t(l, i, j) = sum_{u,v} W_ij^(k,t)(u, v) F_h^k(l, i - u, j - v)
  then fused with F_l^t (AdaptNet) before the image network's classifier (Sec. 3.3).
- Low-latency schedule (Sec. 3.4): at a new keyframe the fast track (propagation) answers at
  once and becomes the cached keyframe feature; S_h runs in a background thread (on its own
  CUDA stream on a GPU) and replaces the cache when done, never blocking the main loop.

No motion vectors are used: this method reads pixels of every frame and nothing else.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mvseg import ops
from mvseg.models.adaptive import (
    AdaptNetFusion,
    DeviationPredictor,
    KernelPredictor,
    deviation_loss,
    deviation_target,
    resize_to,
)
from mvseg.models.segnet import SegNet, SegNetConfig
from mvseg.strategies.base import SegStrategy, as_config
from mvseg.strategies.loading import load_net_weights


@dataclass
class AdaptiveConfig:
    """Sizes of Li et al.'s small networks (the paper: 256-channel deviation predictor, H = 9)."""

    low_stage: str = "layer2"  # S_l ends after this backbone stage (the paper does not say where for ResNet-101)
    kernel_size: int = 9  # H, the spatially-variant kernels are H x H
    kernel_channels: int = 64  # kernel predictor width (not given in the paper)
    deviation_channels: int = 256  # deviation predictor width (the paper: 256)
    fuse_channels: int = 32  # AdaptNet: F_l^t projected to this many channels before fusion


class Adaptive(SegStrategy):
    """Li et al.'s framework as one strategy; `keyframe_policy: adaptive` with
    `deviation_threshold` picks keyframes by content, `low_latency` turns on the fast track."""

    reads_motion = False
    has_fast_track = True  # `low_latency`

    def __init__(
        self,
        num_classes: int,
        keyframe_interval: int = 5,
        net: SegNetConfig | None = None,
        adaptive: AdaptiveConfig | None = None,
        init_from: str | None = None,
        deviation_weight: float = 1.0,
        new_lr_mult: float = 10.0,
        deviation_threshold: float = 0.1,
        low_latency: bool = False,
        slow_track_threads: int | None = None,
        **kwargs,
    ):
        super().__init__(num_classes, keyframe_interval, deviation_threshold=deviation_threshold, **kwargs)
        self.save_hyperparameters(ignore=["init_from"])
        self.net = SegNet(as_config(SegNetConfig, net), num_classes)
        self.cfg = as_config(AdaptiveConfig, adaptive)
        self.net._check_stage(self.cfg.low_stage)
        if init_from:
            load_net_weights(self.net, init_from)
        low_ch = self.net.feat.backbone.channels[self.cfg.low_stage]
        self.deviation = DeviationPredictor(low_ch, self.cfg.deviation_channels)
        self.kernels = KernelPredictor(low_ch, self.cfg.kernel_size, self.cfg.kernel_channels)
        self.fusion = AdaptNetFusion(self.net.feature_dim, low_ch, self.cfg.fuse_channels)
        self.deviation_weight = deviation_weight
        self.new_lr_mult = new_lr_mult
        self.low_latency = low_latency
        # on a CPU the slow track's S_h and the main loop share the cores: None leaves the
        # worker torch's default (all cores), n gives it n intra-op threads of its own
        self.slow_track_threads = slow_track_threads
        self._executor: ThreadPoolExecutor | None = None
        self._stream_state()

    @property
    def has_deviation(self) -> bool:
        return True

    # -- the pieces (Fig. 1) -----------------------------------------------------------

    def low(self, x: Tensor) -> Tensor:
        """S_l: image (B, 3, H, W) -> F_l (B, C_l, H/8, W/8) for the default layer2."""
        return self.net.low_features(x, self.cfg.low_stage)

    def high(self, low: Tensor) -> Tensor:
        """S_h: F_l -> F_h (B, C_h, H/os, W/os), the image network's features at its split."""
        return self.net.high_features(low, self.cfg.low_stage)

    def propagate(self, high_key: Tensor, low_key: Tensor, low_cur: Tensor) -> Tensor:
        """Eq. 1: F_h^k (B, C_h, h, w) -> F_h^t by kernels predicted from (F_l^k, F_l^t).
        ops.sv_conv indexes taps by p + d where Eq. 1 writes p - (u, v): the same kernels, flipped."""
        kernels = self.kernels(resize_to(low_key, high_key), resize_to(low_cur, high_key))  # (B, H*H, h, w)
        return ops.sv_conv(high_key, kernels)

    def classify(self, high: Tensor, size: tuple[int, int], low_cur: Tensor | None = None) -> Tensor:
        """The image network's classifier on F_h (keyframes) or on AdaptNet's fusion of a
        propagated F_h with F_l^t (other frames) -> logits (B, K, H, W)."""
        feat = high if low_cur is None else self.fusion(high, low_cur)
        return ops.resize_bilinear(self.net.logits(feat), size)

    # -- training and the evaluation protocol ------------------------------------------

    def _forward_pair(self, batch: dict) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        size = tuple(batch["cur"].shape[-2:])
        low_k, low_t = self.low(batch["key"]), self.low(batch["cur"])
        high_k = self.high(low_k)
        prop = self.classify(self.propagate(high_k, low_k, low_t), size, low_t)
        key = self.classify(high_k, size)
        # distance 0: the frame is the keyframe and goes through S_h, as in the runtime
        d0 = (torch.as_tensor(batch["distance"], device=prop.device) == 0).view(-1, 1, 1, 1)
        return torch.where(d0, key, prop), low_k, low_t, high_k

    def predict_batch(self, batch: dict) -> Tensor:
        return self._forward_pair(batch)[0]

    def training_loss(self, batch: dict) -> dict[str, Tensor]:
        logits, low_k, low_t, high_k = self._forward_pair(batch)
        seg = F.cross_entropy(logits, batch["label"], ignore_index=self.ignore_index)
        with torch.no_grad():  # target: how much the full network's labels changed from k to t
            target = deviation_target(
                self.net.logits(high_k, dropout=False), self.net.logits(self.high(low_t), dropout=False)
            )
        # the predictor reads detached features: its regression must not reshape S_l
        logit = self.deviation.logit(low_k.detach(), low_t.detach())
        dev = deviation_loss(logit, target)
        return {
            "loss": seg + self.deviation_weight * dev,
            "seg": seg,
            "deviation": dev,
            "deviation_mae": (torch.sigmoid(logit) - target).abs().mean().detach(),
            "deviation_target": target.mean(),
        }

    def param_groups(self) -> list:
        # the paper is silent; new layers at 10x the fine-tuning rate, as PSPNet / DeepLab do
        new = [p for m in (self.deviation, self.kernels, self.fusion) for p in m.parameters()]
        return [
            {"params": list(self.net.parameters()), "lr": self.optim.lr},
            {"params": new, "lr": self.optim.lr * self.new_lr_mult},
        ]

    # -- streaming ---------------------------------------------------------------------

    def _stream_state(self) -> None:
        self._key_high: Tensor | None = None  # cached F_h of the keyframe (or its fast-track stand-in)
        self._key_low: Tensor | None = None  # F_l of the keyframe
        self._cur_low: tuple[Tensor, Tensor] | None = None  # (frame, F_l) from stream_deviation
        self._pending: Future | None = None  # the slow track's S_h, running in the background
        self._queued: Tensor | None = None  # F_l of a fast-tracked keyframe whose S_h has not started yet
        self.slow_tracks = 0  # S_h runs started in the background (this stream)
        self.deferred = 0  # keyframes the policy asked for while the slow track was still busy

    def stream_reset(self) -> None:
        super().stream_reset()
        self.stream_wait()
        self._stream_state()

    def _frame_low(self, frame: Tensor) -> Tensor:
        if self._cur_low is not None and self._cur_low[0] is frame:
            return self._cur_low[1]
        low = self.low(frame)
        self._cur_low = (frame, low)
        return low

    def stream_deviation(self, frame: Tensor, offset: Tensor | None = None, mask: Tensor | None = None) -> float | None:
        if self._key_low is None:  # Li et al.'s predictor reads no motion
            return None
        return float(self.deviation(self._key_low, self._frame_low(frame))[0])

    def stream_step(self, frame: Tensor, offset: Tensor | None, mask: Tensor | None, is_key: bool) -> Tensor:
        size = tuple(frame.shape[-2:])
        low = self._frame_low(frame)
        self._cur_low = None
        self._poll()
        if self._key_high is None or (is_key and not self.low_latency):  # the slow network, blocking
            self._key_high, self._key_low = self.high(low), low
            return self.classify(self._key_high, size)
        prop = self.propagate(self._key_high, self._key_low, low)  # (1, C_h, h, w)
        if is_key:  # fast track: propagation answers, S_h goes to the background
            if self._pending is not None:
                raise RuntimeError(
                    "a low-latency keyframe while the slow track is still busy: take the decision "
                    "with stream_decide (stream_push does)"
                )
            self._key_high, self._key_low = prop, low
            # S_h starts at stream_idle, once this frame's answer is out (the paper only says
            # "in the background"; started here it slowed the answer on a 2-core CPU)
            self._queued = low
        return self.classify(prop, size, low)

    def stream_decide(self, is_key: bool) -> bool:
        """The low-latency schedule defers a keyframe while the slow track is still busy with
        the last one (propagation carries on from the fast track's features)."""
        self._poll()
        if is_key and self.low_latency and self._key_high is not None and self._pending is not None:
            self.deferred += 1
            return False
        return is_key

    def stream_idle(self) -> None:
        if self._queued is not None:
            low, self._queued = self._queued, None
            self._start_slow_track(low)

    def _start_slow_track(self, low: Tensor) -> None:
        if self._executor is None:
            n = self.slow_track_threads
            self._executor = ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix="mvseg-slow-track",
                initializer=torch.set_num_threads if n else None,
                initargs=(n,) if n else (),
            )
        stream = None
        if low.is_cuda:  # its own CUDA stream, ordered after the work that produced `low`
            if getattr(self, "_cuda_stream", None) is None or self._cuda_stream.device != low.device:
                self._cuda_stream = torch.cuda.Stream(low.device)
            stream = self._cuda_stream
            stream.wait_stream(torch.cuda.current_stream(low.device))
            low.record_stream(stream)  # the allocator must not recycle it while the side stream reads it
        self.slow_tracks += 1
        self._pending = self._executor.submit(self._slow_track, low, stream)

    def _slow_track(self, low: Tensor, stream) -> Tensor:
        # grad mode is per thread: the worker needs its own inference mode
        with torch.inference_mode(), torch.cuda.stream(stream) if stream is not None else nullcontext():
            high = self.high(low)
            if stream is not None:
                stream.synchronize()  # done() must mean the features are really there
        return high

    def _poll(self) -> None:
        """Swap in the slow track's features if they are ready (never waits). A slow track still
        queued (a caller that never signalled stream_idle) starts now."""
        self.stream_idle()
        if self._pending is not None and self._pending.done():
            self._swap()

    def stream_wait(self) -> None:
        """Block until the slow track (if any) is done and its features are cached."""
        self.stream_idle()
        if self._pending is not None:
            self._swap()

    def _swap(self) -> None:
        high = self._pending.result()
        self._pending = None
        if high.is_cuda:  # allocated on the side stream, read on this one from now on
            high.record_stream(torch.cuda.current_stream(high.device))
        self._key_high = high

    def stream_flush(self) -> list[tuple[int, Tensor]]:
        self.stream_wait()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        return []
