"""BiSeNet (V1) with a ResNet-18 context path (Yu et al., ECCV 2018), as AR-Seg's "BiSeNet18".

N_feat of BiSeNet, up to the output head: image (B, 3, H, W) -> (B, 256, H/8, W/8).

    spatial path:  7x7/2 -> 3x3/2 -> 3x3/2 conv-BN-ReLU (64) -> 1x1 (128)           # 1/8
    context path:  ResNet-18 (output stride 32): layer3 (1/16, 256), layer4 (1/32, 512)
                   global pool of layer4 -> 1x1 (128), added to ARM(layer4) (128),
                   up x2 -> 3x3 (128), added to ARM(layer3) (128), up x2 -> 3x3 (128)  # 1/8
    FFM:           concat(spatial, context) (256) -> 1x1 (256) = f;
                   f * sigmoid(1x1(pool(f))) + f                                    # 1/8, 256

The output head (3x3 conv-BN-ReLU 256 -> 256, then the 1x1 classifier) is mvseg's PlainHead
and TaskNet classifier (`head: plain`, `head_dim: 256`), so AR-Seg's CReFF sits on the
feature before the final 1x1 classifier, as in the authors' code. The two auxiliary training
heads of BiSeNet (on the context path's outputs at 1/8 and 1/16, `forward(x, context=True)`)
are training-only modules of the strategies (`aux: bisenet`, mvseg.models.aux). The 1x1 convs on
globally pooled maps (ARM and FFM attention, the global context) have a bias instead of
BatchNorm: BatchNorm over a 1x1 map fails in training at one sample per device (a deviation;
no FLOPs change). The FFM attention is one 1x1 conv, as in the authors' code (the BiSeNet paper
draws two). `width` scales every channel count, as for the ResNets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mvseg.models.heads import conv_bn_relu
from mvseg.models.resnet import ResNet


def _c(ch: int, width: float) -> int:
    return max(int(round(ch * width)), 8)


class AttentionRefinement(nn.Module):
    """ARM: 3x3 conv-BN-ReLU, then channel attention from its global average (1x1 conv, BN, sigmoid)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = conv_bn_relu(cin, cout, 3)
        self.attention = nn.Sequential(nn.Conv2d(cout, cout, 1), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        f = self.conv(x)
        return f * self.attention(f.mean((2, 3), keepdim=True))


class FeatureFusion(nn.Module):
    """FFM: 1x1 conv-BN-ReLU over the concatenated paths, re-weighted by channel attention."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = conv_bn_relu(cin, cout)
        self.attention = nn.Sequential(nn.Conv2d(cout, cout, 1), nn.Sigmoid())

    def forward(self, spatial: Tensor, context: Tensor) -> Tensor:
        f = self.conv(torch.cat([spatial, context], 1))
        return f * self.attention(f.mean((2, 3), keepdim=True)) + f


class BiSeNetFeatures(nn.Module):
    """BiSeNet's N_feat: image (B, 3, H, W) -> fused features (B, 256 * width, H/8, W/8)."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        c64, c128, c256 = _c(64, width), _c(128, width), _c(256, width)
        self.spatial = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, c64, 7, 2, 3, bias=False), nn.BatchNorm2d(c64), nn.ReLU(inplace=True)),
            nn.Sequential(nn.Conv2d(c64, c64, 3, 2, 1, bias=False), nn.BatchNorm2d(c64), nn.ReLU(inplace=True)),
            nn.Sequential(nn.Conv2d(c64, c64, 3, 2, 1, bias=False), nn.BatchNorm2d(c64), nn.ReLU(inplace=True)),
            conv_bn_relu(c64, c128),
        )  # (B, 128, H/8, W/8)
        self.backbone = ResNet("resnet18", output_stride=32, width=width)  # the context path's trunk
        ch = self.backbone.channels
        self.arm16 = AttentionRefinement(ch["layer3"], c128)
        self.arm32 = AttentionRefinement(ch["layer4"], c128)
        self.global_context = nn.Sequential(nn.Conv2d(ch["layer4"], c128, 1), nn.ReLU(inplace=True))
        self.head32 = conv_bn_relu(c128, c128, 3)
        self.head16 = conv_bn_relu(c128, c128, 3)
        self.ffm = FeatureFusion(2 * c128, c256)
        self.channels = c256

    def forward(self, x: Tensor, context: bool = False) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """The fused features; with `context` also the context path's outputs at 1/8 (`cp8`) and
        1/16 (`cp16`), which BiSeNet's two auxiliary training heads read."""
        stages = self.backbone(x)
        f16, f32 = stages["layer3"], stages["layer4"]  # (B, 256, H/16, W/16), (B, 512, H/32, W/32)
        g = self.global_context(f32.mean((2, 3), keepdim=True))  # (B, 128, 1, 1)
        up32 = self.arm32(f32) + g
        up32 = self.head32(_up2(up32, f16.shape[-2:]))  # (B, 128, H/16, W/16)
        up16 = self.arm16(f16) + up32
        up16 = self.head16(_up2(up16, self.backbone_shape8(x)))  # (B, 128, H/8, W/8)
        sp = self.spatial(x)  # (B, 128, H/8, W/8)
        if sp.shape[-2:] != up16.shape[-2:]:
            sp = F.interpolate(sp, up16.shape[-2:], mode="bilinear", align_corners=True)
        f = self.ffm(sp, up16)  # (B, 256, H/8, W/8)
        return (f, {"cp8": up16, "cp16": up32}) if context else f

    @staticmethod
    def backbone_shape8(x: Tensor) -> tuple[int, int]:
        # the ResNet's 1/8 grid (conv 7x7/2, max-pool 3x3/2, layer2 /2), which the authors fuse on
        h, w = x.shape[-2:]
        for _ in range(3):
            h, w = (h + 1) // 2, (w + 1) // 2
        return h, w


def _up2(x: Tensor, size: tuple[int, ...]) -> Tensor:
    """Nearest x2, then bilinear (align_corners) to `size` when the grids differ (the authors')."""
    x = F.interpolate(x, scale_factor=2.0, mode="nearest")
    return x if x.shape[-2:] == tuple(size) else F.interpolate(x, size, mode="bilinear", align_corners=True)
