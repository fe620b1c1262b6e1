"""Segmentation context heads with one constructor signature: (in_channels, channels).

- PSP: pyramid pooling module (Zhao et al., CVPR 2017): pooled context at bins 1, 2, 3, 6,
  concatenated with the input and fused by a 3x3 conv.
- ASPP: atrous spatial pyramid pooling (Chen et al., DeepLabv3): parallel 1x1 and dilated 3x3
  convs plus image pooling, fused by a 1x1 conv.
- ASPP-v2: DeepLabv2's ASPP (Chen et al., TPAMI 2018, Sec. 3.3, ASPP-L: rates 6, 12, 18, 24):
  four parallel dilated 3x3 convs, summed; no BatchNorm, no ReLU, no image pooling.
- Plain: a 3x3 conv (DFF's N_task before the classifier, for the smallest configs).
- Pixel: a 1x1 conv, no context at all (the colour-only baseline).
- PSP-up: AR-Seg's CamVid PSPNet decoder (the authors' code, after Lextal's pspnet-pytorch): a
  pyramid pooling module to 16 x channels, then three x2 up-sampling blocks (bilinear, 3x3
  conv, BN, PReLU) to 4 x channels, channels, channels: features at 8x the input's resolution
  (the full frame from an output-stride-8 backbone).
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


class ASPPv2Head(nn.Module):
    """DeepLabv2's ASPP: the sum of four dilated 3x3 convs (rates 6, 12, 18, 24 at output stride 8).

    DeepLabv2's branches end in class scores and are summed; here they end in `channels` and the
    SegNet's 1x1 classifier follows. Both are linear, so head + classifier is exactly a sum of
    four dilated 3x3 convs to the classes (the same function class; the summed `channels`-wide map
    is the feature BDNet's inner relation and the propagation see)."""

    def __init__(self, in_channels: int, channels: int, rates: tuple[int, ...] = (6, 12, 18, 24)):
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv2d(in_channels, channels, 3, padding=r, dilation=r) for r in rates)

    def forward(self, x: Tensor) -> Tensor:
        out = self.branches[0](x)
        for b in self.branches[1:]:
            out = out + b(x)
        return out


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


class _UpBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.PReLU())

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))


class PSPUpHead(nn.Module):
    """The authors' CamVid PSPNet-18 decoder (channels = 64 there: PSP to 1024, up to 256, 64, 64)."""

    def __init__(self, in_channels: int, channels: int, bins: tuple[int, ...] = (1, 2, 3, 6)):
        super().__init__()
        # pooled branches keep the input width, 1x1 convs without BN; a biased 1x1 bottleneck + ReLU
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(in_channels, in_channels, 1, bias=False)) for b in bins
        )
        self.bottleneck = nn.Sequential(
            nn.Conv2d(in_channels * (len(bins) + 1), 16 * channels, 1), nn.ReLU(inplace=True)
        )
        self.up = nn.Sequential(
            _UpBlock(16 * channels, 4 * channels), _UpBlock(4 * channels, channels), _UpBlock(channels, channels)
        )
        self.upsampling = 8  # the output is 8x the input's resolution

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        pooled = [F.interpolate(s(x), (h, w), mode="bilinear", align_corners=False) for s in self.stages]
        return self.up(self.bottleneck(torch.cat([*pooled, x], 1)))  # (B, channels, 8h, 8w)


HEADS = {
    "psp": PSPHead,
    "aspp": ASPPHead,
    "aspp_v2": ASPPv2Head,
    "plain": PlainHead,
    "pixel": PixelHead,
    "psp_up": PSPUpHead,
}
