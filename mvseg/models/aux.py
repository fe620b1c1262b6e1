"""Training-only auxiliary heads of AR-Seg's image models, as the authors' code trains them
(inference never runs them; they are not part of `net`, so no checkpoint loader sees them):

- ``psp``: PSPNet's auxiliary segmentation head on the backbone's layer3 (the authors'
  Cityscapes PSPNet-18, after semseg's PSPNet): 3x3 conv-BN-ReLU to 256 channels, dropout 0.1,
  1x1 to the classes; loss = CE, weighted 0.4 in their code.
- ``presence``: the CamVid PSPNet-18's classification branch (after Lextal's pspnet-pytorch):
  global max pool of layer3, Linear(C, 256), ReLU, Linear(256, K); loss = BCE against the classes
  present in the label (`alpha` x it, 1.0 their default).
- ``bisenet``: BiSeNet V1's two auxiliary heads on the context path's outputs at 1/8 and 1/16:
  3x3 conv-BN-ReLU to 64 channels, 1x1 to the classes; each trained like the main output
  (OHEM CE in the authors' code), weight 1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from mvseg.losses.segmentation import class_presence_loss
from mvseg.models.heads import conv_bn_relu

AUX_KINDS = ("none", "psp", "presence", "bisenet")


class AuxHeads(nn.Module):
    """The auxiliary heads of `kind` for inputs of `channels` (SegNet.aux_channels())."""

    def __init__(self, kind: str, channels: dict[str, int], num_classes: int):
        super().__init__()
        if kind not in AUX_KINDS[1:]:
            raise ValueError(f"aux must be one of {AUX_KINDS}, got {kind!r}")
        need = {"psp": "layer3", "presence": "layer3", "bisenet": "cp8"}[kind]
        if need not in channels:
            raise ValueError(
                f"aux: {kind} needs the network's {need} ({'BiSeNet' if kind == 'bisenet' else 'a ResNet'}), "
                f"this one has {sorted(channels)}"
            )
        self.kind = kind
        if kind == "psp":
            c = channels["layer3"]
            hidden = min(c, 256)
            self.heads = nn.ModuleDict(
                {
                    "layer3": nn.Sequential(
                        conv_bn_relu(c, hidden, 3), nn.Dropout2d(0.1), nn.Conv2d(hidden, num_classes, 1)
                    )
                }
            )
        elif kind == "presence":
            self.heads = nn.ModuleDict(
                {
                    "layer3": nn.Sequential(
                        nn.Linear(channels["layer3"], 256), nn.ReLU(inplace=True), nn.Linear(256, num_classes)
                    )
                }
            )
        else:
            self.heads = nn.ModuleDict(
                {
                    k: nn.Sequential(conv_bn_relu(channels[k], 64, 3), nn.Conv2d(64, num_classes, 1))
                    for k in ("cp8", "cp16")
                }
            )

    def loss(
        self, inputs: dict[str, Tensor], label: Tensor, ignore_index: int, seg_loss: Callable[[Tensor, Tensor], Tensor]
    ) -> Tensor:
        """The auxiliary loss (unweighted) of the auxiliary inputs against `label` (B, H, W);
        `seg_loss(logits, label)` is the strategy's segmentation loss (CE or OHEM)."""
        if self.kind == "presence":
            f = inputs["layer3"]
            return class_presence_loss(
                self.heads["layer3"](F.adaptive_max_pool2d(f, 1).flatten(1)), label, ignore_index
            )
        size = label.shape[-2:]
        return sum(
            seg_loss(F.interpolate(head(inputs[k]), size, mode="bilinear", align_corners=True), label)
            for k, head in self.heads.items()
        )
