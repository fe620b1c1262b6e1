"""prop-MV (Jain & Gonzalez, "Fast Semantic Segmentation on Video Using Block Motion-Based
Feature Interpolation", ECCV 2018 workshops, Sec. 3.2): keyframe features N_feat(I_k) are
warped to frame t by the block motion vectors of the compressed stream, composed from k to t,
and N_task runs on the warped features:

    S_t = N_task(W(N_feat(I_k), M_{t->k}))

No network runs on the non-keyframe image: propagation costs one warp (ops.warp).

With `deviation_channels > 0` prop-MV also carries Li et al.'s deviation predictor (CVPR 2018,
Sec. 3.2) on its own network's low-level features (the backbone up to `deviation_stage`), so
`keyframe_policy: adaptive` can choose its keyframes by content; the non-keyframes' pixels
are then read and their low-level features computed (the cost of adaptivity).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mvseg import ops
from mvseg.models.adaptive import (
    DEVIATION_INPUTS,
    DEVIATION_TARGETS,
    DeviationPredictor,
    deviation_loss,
    deviation_target,
    keyframe_gain_target,
)
from mvseg.models.segnet import SegNetConfig
from mvseg.ops.fields import extend_chain
from mvseg.strategies.propagation import Propagation


class PropMV(Propagation):
    reads_nonkey_pixels = False  # non-keyframes: MVs only (unless a content policy reads them)

    def __init__(
        self,
        num_classes: int,
        keyframe_interval: int = 5,
        net: SegNetConfig | None = None,
        init_from: str | None = None,
        deviation_channels: int = 0,
        deviation_stage: str = "layer2",
        deviation_weight: float = 1.0,
        deviation_threshold: float = 0.1,
        deviation_target: str = "labels",
        deviation_input: str = "difference",
        **kwargs,
    ):
        """deviation_channels > 0: Li et al.'s deviation predictor on the backbone up to
        deviation_stage, regressing deviation_target ("labels": Li et al.'s label change since the
        keyframe; "gain": ours, what a keyframe would gain, models.adaptive.keyframe_gain_target)
        from deviation_input ("difference": Li et al.'s F_l^t - F_l^k; "motion": ours, F_l^t minus
        F_l^k warped to t by the composed block motion, and the share of each cell it lost)."""
        if deviation_channels < 0:
            raise ValueError(f"deviation_channels must be >= 0 (0: no deviation predictor), got {deviation_channels}")
        if deviation_target not in DEVIATION_TARGETS:
            raise ValueError(f"deviation_target must be one of {DEVIATION_TARGETS}, got {deviation_target!r}")
        if deviation_input not in DEVIATION_INPUTS:
            raise ValueError(f"deviation_input must be one of {DEVIATION_INPUTS}, got {deviation_input!r}")
        super().__init__(
            num_classes,
            keyframe_interval,
            net,
            init_from,
            deviation_threshold=deviation_threshold
            if deviation_channels or kwargs.get("keyframe_policy") == "coverage"
            else None,
            **kwargs,
        )
        self.deviation: DeviationPredictor | None = None
        if deviation_channels:
            self.net._check_stage(deviation_stage)
            self.deviation = DeviationPredictor(
                self.net.feat.backbone.channels[deviation_stage],
                deviation_channels,
                extra_channels=int(deviation_input == "motion"),
            )
        self.deviation_stage = deviation_stage
        self.deviation_weight = deviation_weight
        self.deviation_target = deviation_target
        self.deviation_input = deviation_input

    @property
    def has_deviation(self) -> bool:
        return self.deviation is not None

    def param_groups(self) -> list:
        if self.deviation is None:
            return super().param_groups()
        # the new predictor at 10x the fine-tuning rate, as Adaptive's new modules
        dev = set(self.deviation.parameters())
        return [
            {"params": [p for p in self.parameters() if p not in dev], "lr": self.optim.lr},
            {"params": list(dev), "lr": 10 * self.optim.lr},
        ]

    def training_loss(self, batch: dict) -> dict[str, Tensor]:
        if self.deviation is None:
            return super().training_loss(batch)
        size = tuple(batch["cur"].shape[-2:])
        feat = self.net.features(batch["key"])  # (B, C, H/os, W/os)
        warped = self.warp_features(feat, batch["offset_cur_to_key"], batch["mask_cur_to_key"], size)
        seg = F.cross_entropy(self.task(warped, size), batch["label"], ignore_index=self.ignore_index)
        with torch.no_grad():  # the target, on prop-MV's own network
            low_k, low_t = (self.net.low_features(batch[k], self.deviation_stage) for k in ("key", "cur"))
            high_t = self.net.high_features(low_t, self.deviation_stage)
            if self.deviation_target == "labels":  # Li et al.: the full network's label change k -> t
                target = deviation_target(
                    self.net.logits(self.net.high_features(low_k, self.deviation_stage), dropout=False),
                    self.net.logits(high_t, dropout=False),
                )
            else:  # ours: what a keyframe at t would gain over t propagated from k
                prop, full = (ops.resize_bilinear(self.net.logits(f, dropout=False), size) for f in (warped, high_t))
                target = keyframe_gain_target(prop, full, batch["label"], self.ignore_index)
        dev = deviation_loss(
            self.deviation.logit(
                *self._deviation_inputs(low_k, low_t, batch["offset_cur_to_key"], batch["mask_cur_to_key"], size)
            ),
            target,
        )
        return {"loss": seg + self.deviation_weight * dev, "deviation": dev, "deviation_target": target.mean()}

    def _deviation_inputs(
        self, low_k: Tensor, low_t: Tensor, offset: Tensor | None, mask: Tensor | None, size: tuple[int, int]
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """What the predictor reads: (F_l^k, F_l^t, None) as Li et al., or with deviation_input
        "motion" (F_l^k warped to t by the t -> k offsets, F_l^t, the share of each F_l cell whose
        motion is lost (B, 1, h, w)). At t = k (no motion yet) nothing is lost."""
        if self.deviation_input == "difference":
            return low_k, low_t, None
        if offset is None:  # the keyframe itself
            return low_k, low_t, low_t.new_zeros(low_t.shape[0], 1, *low_t.shape[-2:])
        lost = F.adaptive_avg_pool2d(1 - mask[:, None].to(low_t.dtype), low_t.shape[-2:])  # (B, 1, h, w)
        return ops.warp(low_k, offset, mask, size), low_t, lost

    def warp_features(self, feat: Tensor, offset: Tensor, mask: Tensor, frame_size: tuple[int, int]) -> Tensor:
        """Key features (B, C, h, w) warped by cur->key offsets (B, 2, Hc, Wc) -> (B, C, h, w)."""
        return ops.warp(feat, offset, mask, frame_size)  # positions in fp32 whatever feat's dtype

    def predict_batch(self, batch: dict) -> Tensor:
        size = tuple(batch["cur"].shape[-2:])  # the current image itself is never processed
        feat = self.net.features(batch["key"])  # (B, C, H/os, W/os)
        warped = self.warp_features(feat, batch["offset_cur_to_key"], batch["mask_cur_to_key"], size)
        return self.task(warped, size)

    def stream_reset(self) -> None:
        super().stream_reset()
        self._chain: tuple[Tensor, Tensor] | None = None  # composed offsets t -> k and mask
        self._key_low: Tensor | None = None  # low-level features of the keyframe (deviation predictor)
        self._cur_low: tuple[Tensor, Tensor] | None = None  # (frame, its low-level features)
        self._cur_chain: tuple[Tensor, tuple[Tensor, Tensor]] | None = None  # (frame, t -> k) from stream_deviation

    def stream_deviation(self, frame: Tensor, offset: Tensor | None = None, mask: Tensor | None = None) -> float | None:
        if self.deviation is None:
            return super().stream_deviation(frame, offset, mask)
        low = self.net.low_features(frame, self.deviation_stage)
        self._cur_low = (frame, low)  # a keyframe's S_h continues from it
        if self._key_low is None:
            return None
        chain = None
        if self.deviation_input == "motion":
            if offset is None:
                raise ValueError("deviation_input 'motion' needs the frame's motion field (offset, mask)")
            chain = extend_chain(self._chain, offset, mask)  # t -> k; kept for the step that follows
            self._cur_chain = (frame, chain)
        inputs = self._deviation_inputs(self._key_low, low, *(chain or (None, None)), tuple(frame.shape[-2:]))
        return float(self.deviation(*inputs)[0])

    def stream_step(self, frame: Tensor, offset: Tensor | None, mask: Tensor | None, is_key: bool) -> Tensor:
        size = tuple(frame.shape[-2:])
        low = self._cur_low[1] if self._cur_low is not None and self._cur_low[0] is frame else None
        chain = self._cur_chain[1] if self._cur_chain is not None and self._cur_chain[0] is frame else None
        self._cur_low = self._cur_chain = None
        if is_key or self._key_feat is None:
            if low is None and self.deviation is not None:  # keep S_l's output for the predictor
                low = self.net.low_features(frame, self.deviation_stage)
            if low is not None:  # S_h continues from it (the deviation predictor may have run S_l)
                self._key_feat, self._key_low = self.net.high_features(low, self.deviation_stage), low
            else:
                self._key_feat = self.net.features(frame)
            self._chain = None
            return self.task(self._key_feat, size)
        # t -> k = f_t o (t-1 -> k): one link per frame (O(1), not O(L)), exactly the offsets
        # the training samples compose (fields.compose folds the chain from the same end)
        self._chain = chain if chain is not None else extend_chain(self._chain, offset, mask)
        warped = self.warp_features(self._key_feat, *self._chain, size)
        return self.task(warped, size)
