"""The image segmentation network, split as Deep Feature Flow does (Zhu et al., CVPR 2017):

    N_feat: backbone + a 1x1 feature conv       (expensive; keyframes only in DFF/prop-MV)
    N_task: context head + 1x1 classifier        (cheap; every frame)

so that propagation strategies warp the N_feat output and reuse the same N_task. The per-frame
baseline runs both on every frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from mvseg.models.heads import HEADS, conv_bn_relu
from mvseg.models.resnet import ResNet, load_pretrained


@dataclass
class SegNetConfig:
    """Architecture of the image network (defaults: a CPU-sized dilated ResNet-18 PSPNet)."""

    backbone: str = "resnet18"  # resnet18 | resnet34 | resnet50 | resnet101 | pixel (1x1 convs)
    width: float = 0.25  # channel multiplier (1.0 = standard; ImageNet weights need 1.0)
    output_stride: int = 8
    feat_dim: int = 128  # N_feat output channels (DFF: 1024 for ResNet-101)
    head: str = "psp"  # psp | aspp | plain | pixel (1x1, no context)
    head_dim: int = 64
    dropout: float = 0.1
    pretrained: str | None = None  # path to a torchvision ImageNet state dict (no download)


class PixelBackbone(nn.Module):
    """A per-pixel colour classifier's trunk: 1x1 convs only, no spatial context (the
    "colour-only" baseline the synthetic dataset is designed to defeat)."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        c = max(int(64 * width), 8)
        self.body = nn.Sequential(conv_bn_relu(3, c), conv_bn_relu(c, c))
        self.channels = {"layer4": c}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"layer4": self.body(x)}


class FeatureNet(nn.Module):
    """N_feat: image (B, 3, H, W) -> features (B, feat_dim, H/os, W/os)."""

    def __init__(self, cfg: SegNetConfig):
        super().__init__()
        if cfg.backbone == "pixel":
            self.backbone = PixelBackbone(cfg.width)
        else:
            self.backbone = ResNet(cfg.backbone, cfg.output_stride, cfg.width)
            if cfg.pretrained:
                load_pretrained(self.backbone, cfg.pretrained)
        self.feat = conv_bn_relu(self.backbone.channels["layer4"], cfg.feat_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.feat(self.backbone(x)["layer4"])


class TaskNet(nn.Module):
    """N_task: features (B, feat_dim, h, w) -> class logits (B, K, h, w)."""

    def __init__(self, cfg: SegNetConfig, num_classes: int):
        super().__init__()
        if cfg.head not in HEADS:
            raise ValueError(f"unknown head {cfg.head!r}; choose one of {sorted(HEADS)}")
        self.head = HEADS[cfg.head](cfg.feat_dim, cfg.head_dim)
        self.dropout = nn.Dropout2d(cfg.dropout)
        self.classifier = nn.Conv2d(cfg.head_dim, num_classes, 1)

    def forward(self, feat: Tensor) -> Tensor:
        return self.classifier(self.dropout(self.head(feat)))


class SegNet(nn.Module):
    """N_task(N_feat(image)), up-sampled to the input size."""

    def __init__(self, cfg: SegNetConfig, num_classes: int):
        super().__init__()
        self.cfg = cfg
        self.feat = FeatureNet(cfg)
        self.task = TaskNet(cfg, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.task(self.feat(x))  # (B, K, H/os, W/os)
        return F.interpolate(logits, x.shape[-2:], mode="bilinear", align_corners=False)  # (B, K, H, W)
