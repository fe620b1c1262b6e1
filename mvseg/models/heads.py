"""Segmentation context heads with one constructor signature: (in_channels, channels).

- PSP: pyramid pooling module (Zhao et al., CVPR 2017): pooled context at bins 1, 2, 3, 6,
  concatenated with the input and fused by a 3x3 conv.
- ASPP: atrous spatial pyramid pooling (Chen et al., DeepLabv3): parallel 1x1 and dilated 3x3
  convs plus image pooling, fused by a 1x1 conv.
- Plain: a 3x3 conv (DFF's N_task before the classifier, for the smallest configs).
- Pixel: a 1x1 conv, no context at all (the colour-only baseline).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv_bn_relu(cin: int, cout: int, k: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class PSPHead(nn.Module):
    def __init__(self, in_channels: int, channels: int, bins: tuple[int, ...] = (1, 2, 3, 6)):
        super().__init__()
        red = max(in_channels // len(bins), 8)
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), conv_bn_relu(in_channels, red)) for b in bins
        )
        self.bottleneck = conv_bn_relu(in_channels + red * len(bins), channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        pooled = [F.interpolate(s(x), (h, w), mode="bilinear", align_corners=False) for s in self.stages]
        return self.bottleneck(torch.cat([x, *pooled], 1))


class _ImagePool(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        # no BatchNorm on the 1x1 pooled map: it breaks with batch size 1
        return F.interpolate(self.conv(x.mean((2, 3), keepdim=True)), x.shape[-2:], mode="nearest")


class ASPPHead(nn.Module):
    def __init__(self, in_channels: int, channels: int, rates: tuple[int, ...] = (6, 12, 18)):
        super().__init__()
        self.branches = nn.ModuleList(
            [conv_bn_relu(in_channels, channels)]
            + [conv_bn_relu(in_channels, channels, 3, r) for r in rates]
            + [_ImagePool(in_channels, channels)]
        )
        self.project = conv_bn_relu(channels * (len(rates) + 2), channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.project(torch.cat([b(x) for b in self.branches], 1))


class PlainHead(nn.Module):
    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.conv = conv_bn_relu(in_channels, channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class PixelHead(nn.Module):
    """A 1x1 conv: no spatial context (for the colour-only baseline)."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.conv = conv_bn_relu(in_channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


HEADS = {"psp": PSPHead, "aspp": ASPPHead, "plain": PlainHead, "pixel": PixelHead}
