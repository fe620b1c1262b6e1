"""PerFrame: the full image network on every frame (the accuracy reference and speed baseline)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from mvseg.models.segnet import SegNet, SegNetConfig
from mvseg.strategies.base import SegStrategy, as_config


class PerFrame(SegStrategy):
    """N_task(N_feat(I_t)) for every frame t; keyframes and MVs are not used."""

    distance_invariant = True
    reads_motion = False

    def __init__(
        self,
        num_classes: int,
        keyframe_interval: int = 5,
        net: SegNetConfig | None = None,
        **kwargs,
    ):
        """net: the image network; the shared arguments (optim, ...) are SegStrategy's."""
        super().__init__(num_classes, keyframe_interval, **kwargs)
        self.save_hyperparameters()
        self.net = SegNet(as_config(SegNetConfig, net), num_classes)

    def training_loss(self, batch: dict) -> dict[str, Tensor]:
        logits = self.net(batch["cur"])  # (B, K, H, W)
        return {"loss": F.cross_entropy(logits, batch["label"], ignore_index=self.ignore_index)}

    def predict_batch(self, batch: dict) -> Tensor:
        return self.net(batch["cur"])

    def stream_step(self, frame: Tensor, offset: Tensor | None, mask: Tensor | None, is_key: bool) -> Tensor:
        return self.net(frame)
