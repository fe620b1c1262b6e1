"""What keyframe-propagation methods share (DFF, prop-MV, interp-MV): the image network split
into N_feat (run on keyframes) and N_task (run on every frame), and initialisation from a
trained per-frame model, as DFF and Jain & Gonzalez fine-tune from their image network."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from mvseg import ops
from mvseg.models.segnet import SegNet, SegNetConfig
from mvseg.strategies.base import SegStrategy, as_config
from mvseg.strategies.loading import load_net_weights


class Propagation(SegStrategy):
    """Base of the propagation strategies: `self.net.features` is N_feat, `self.net.logits`
    N_task (cut where `net.split` says)."""

    def __init__(
        self,
        num_classes: int,
        keyframe_interval: int = 5,
        net: SegNetConfig | None = None,
        init_from: str | None = None,
        **kwargs,
    ):
        """net: the image network, split into N_feat and N_task; init_from: a PerFrame checkpoint
        whose network it starts from; the shared arguments (optim, ...) are SegStrategy's."""
        super().__init__(num_classes, keyframe_interval, **kwargs)
        # init_from is not a hyper-parameter: a trained checkpoint already holds the weights
        self.save_hyperparameters(ignore=["init_from"])
        self.net = SegNet(as_config(SegNetConfig, net), num_classes)
        if init_from:
            load_net_weights(self.net, init_from)
        self._key_feat: Tensor | None = None

    def task(self, feat: Tensor, size: tuple[int, int]) -> Tensor:
        """N_task on (warped) features, up-sampled to the frame size -> (B, K, H, W)."""
        return ops.resize_bilinear(self.net.logits(feat), size)

    def training_loss(self, batch: dict) -> dict[str, Tensor]:
        logits = self.predict_batch(batch)
        return {"loss": F.cross_entropy(logits, batch["label"], ignore_index=self.ignore_index)}

    def stream_reset(self) -> None:
        super().stream_reset()
        self._key_feat = None
