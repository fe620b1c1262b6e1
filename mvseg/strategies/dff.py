"""Deep Feature Flow (Zhu et al., "Deep Feature Flow for Video Recognition", CVPR 2017), the
baseline the MV methods are measured against. Keyframe features are propagated to frame t by a
flow field that a network estimates from the two images (DFF Eq. 3-4):

    M_{t->k}, S_{t->k} = F(I_t, I_k)              (FlowNet-S on half-resolution frames)
    f_t = W(N_feat(I_k), M_{t->k}) * S_{t->k}      (bilinear warp, per-channel scale function)
    S_t = N_task(f_t)

Trained end to end on (keyframe, frame) pairs at distances 0..L-1 (DFF Sec. 4), starting from
the per-frame network (`init_from`) and a flow network pretrained on ground-truth flow
(`flow_init`, see FlowPretrain: no pretrained FlowNet can be downloaded here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mvseg import ops
from mvseg.models.flownet import FlowNetConfig, FlowNetS
from mvseg.models.segnet import SegNetConfig
from mvseg.strategies.base import as_config
from mvseg.strategies.loading import load_flownet_weights
from mvseg.strategies.propagation import Propagation


class DFF(Propagation):
    def __init__(
        self,
        num_classes: int,
        keyframe_interval: int = 5,
        net: SegNetConfig | None = None,
        flownet: FlowNetConfig | None = None,
        init_from: str | None = None,
        flow_init: str | None = None,
        **kwargs,
    ):
        super().__init__(num_classes, keyframe_interval, net, init_from, **kwargs)
        self.save_hyperparameters(ignore=["init_from", "flow_init"])
        self.flownet = FlowNetS(as_config(FlowNetConfig, flownet), scale_channels=self.net.feature_dim)
        if flow_init:
            load_flownet_weights(self.flownet, flow_init)
        self._key_image: Tensor | None = None

    def propagate(self, key_feat: Tensor, cur: Tensor, key: Tensor) -> Tensor:
        """Key features (B, C, h, w) -> features of `cur` (B, C, h, w), DFF Eq. 4."""
        flow, scale = self.flownet(cur, key)  # (B, 2, h', w') frame pixels, (B, C, h', w')
        size = key_feat.shape[-2:]
        if scale.shape[-2:] != size:  # odd frame sizes: the two strides round differently
            scale = F.interpolate(scale, size, mode="bilinear", align_corners=False)
        # One flow vector per feature cell (frame_size maps frame pixels to feature pixels).
        warped = ops.warp(key_feat, flow, None, tuple(cur.shape[-2:]))
        return warped * scale

    def predict_batch(self, batch: dict) -> Tensor:
        size = tuple(batch["cur"].shape[-2:])
        key_feat = self.net.features(batch["key"])  # (B, C, H/os, W/os)
        feat = self.propagate(key_feat, batch["cur"], batch["key"])
        # At distance 0 the frame is the keyframe: its own features, as in DFF's inference.
        is_key = torch.as_tensor(batch["distance"], device=feat.device).view(-1, 1, 1, 1) == 0
        return self.task(torch.where(is_key, key_feat, feat), size)

    def stream_reset(self) -> None:
        super().stream_reset()
        self._key_image = None

    def stream_step(self, frame: Tensor, offset: Tensor | None, mask: Tensor | None, is_key: bool) -> Tensor:
        size = tuple(frame.shape[-2:])
        if is_key or self._key_feat is None:
            self._key_feat, self._key_image = self.net.features(frame), frame
            return self.task(self._key_feat, size)
        return self.task(self.propagate(self._key_feat, frame, self._key_image), size)
