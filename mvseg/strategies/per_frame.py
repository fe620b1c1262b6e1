"""PerFrame: the full image network on every frame (the accuracy reference and speed baseline)."""

from __future__ import annotations

from torch import Tensor

from mvseg.models.aux import AuxHeads
from mvseg.models.segnet import SegNet, SegNetConfig
from mvseg.ops.resize import resize_bilinear
from mvseg.strategies.base import SegStrategy, as_config, segmentation_loss


class PerFrame(SegStrategy):
    """N_task(N_feat(I_t)) for every frame t; keyframes and MVs are not used."""

    distance_invariant = True
    reads_motion = False

    def __init__(
        self,
        num_classes: int,
        keyframe_interval: int = 5,
        net: SegNetConfig | None = None,
        loss: str = "ce",
        aux: str = "none",
        aux_weight: float = 0.4,
        **kwargs,
    ):
        """net: the image network; loss: "ce" or "ohem" (BiSeNet's); aux: the training-only
        auxiliary heads AR-Seg's code trains its image models with ("psp", "presence",
        "bisenet": mvseg.models.aux), weighted `aux_weight`; the shared arguments (optim, ...)
        are SegStrategy's."""
        super().__init__(num_classes, keyframe_interval, **kwargs)
        self.save_hyperparameters()
        self.net = SegNet(as_config(SegNetConfig, net), num_classes)
        self.seg_loss = segmentation_loss(loss, self.ignore_index)
        self.aux = AuxHeads(aux, self.net.aux_channels(), num_classes) if aux != "none" else None
        self.aux_weight = aux_weight

    def training_loss(self, batch: dict) -> dict[str, Tensor]:
        label = batch["label"]
        if self.aux is None:
            return {"loss": self.seg_loss(self.net(batch["cur"]), label)}  # (B, K, H, W) vs (B, H, W)
        feat, aux_in = self.net.forward_aux(batch["cur"])  # the feature before the classifier, the aux inputs
        logits = resize_bilinear(self.net.task.classifier(self.net.task.dropout(feat)), label.shape[-2:])
        seg, aux = self.seg_loss(logits, label), self.aux.loss(aux_in, label, self.ignore_index, self.seg_loss)
        return {"loss": seg + self.aux_weight * aux, "seg": seg, "aux": aux}

    def predict_batch(self, batch: dict) -> Tensor:
        return self.net(batch["cur"])

    def stream_step(self, frame: Tensor, offset: Tensor | None, mask: Tensor | None, is_key: bool) -> Tensor:
        return self.net(frame)
