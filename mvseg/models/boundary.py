"""BDNet's boundary-aware stream (Lu & Deng, Fig. 3a and 3b): an encoder-decoder that shares the
backbone with the main stream. Its top-down decoder starts from the main stream's propagated
feature; at each of K levels the keyframe's intermediate backbone feature (lateral) is warped
to the current frame by the MV offsets, concatenated with the up-sampled higher-level
decoder feature, and fed to a boundary-aware module (BAM) that predicts the silhouettes.

Used in training only: the main stream's inference never runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mvseg.models.heads import conv_bn_relu


@dataclass
class BoundaryConfig:
    """The boundary-aware stream (the paper fixes neither BAM nor K: our choices)."""

    levels: list[str] = field(default_factory=lambda: ["layer3", "layer2", "layer1"])  # laterals, top-down
    channels: int = 32  # decoder width
    bam: str = "attention"  # attention | plain
    thickness: int = 2  # boundary half-width in pixels of the full-resolution label


class BAM(nn.Module):
    """Boundary-aware module. The paper shows it only as a figure; our design: two 3x3
    conv-BN-ReLU layers, a 1x1 conv predicting the boundary logit, and ("attention") the
    features re-weighted by (1 + sigmoid(boundary)) so the decoder emphasises the silhouettes
    it predicts ("plain": no re-weighting)."""

    def __init__(self, in_channels: int, channels: int, mode: str = "attention"):
        super().__init__()
        if mode not in ("attention", "plain"):
            raise ValueError(f"boundary.bam must be 'attention' or 'plain', got {mode!r}")
        self.mode = mode
        self.body = nn.Sequential(conv_bn_relu(in_channels, channels, 3), conv_bn_relu(channels, channels, 3))
        self.edge = nn.Conv2d(channels, 1, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, Cin, h, w) -> (features (B, C, h, w), boundary logit (B, 1, h, w))."""
        y = self.body(x)
        logit = self.edge(y)
        if self.mode == "attention":
            y = y * (1 + torch.sigmoid(logit))
        return y, logit


class BoundaryStream(nn.Module):
    """Top-down decoder with warped lateral connections and one BAM per level."""

    def __init__(self, cfg: BoundaryConfig, top_channels: int, lateral_channels: dict[str, int]):
        super().__init__()
        unknown = [lv for lv in cfg.levels if lv not in lateral_channels]
        if not cfg.levels or unknown:
            raise ValueError(f"boundary.levels must name backbone stages {sorted(lateral_channels)}, got {cfg.levels}")
        self.cfg = cfg
        self.top = conv_bn_relu(top_channels, cfg.channels)
        self.bams = nn.ModuleList(BAM(lateral_channels[lv] + cfg.channels, cfg.channels, cfg.bam) for lv in cfg.levels)

    def forward(self, top: Tensor, laterals: dict[str, Tensor], warp) -> list[Tensor]:
        """top: the propagated main-stream feature (B, Ct, h, w), already at the current frame;
        laterals: keyframe backbone stages; warp(t) moves a keyframe tensor to the current
        frame. Returns one boundary logit map per level, coarse to fine."""
        x = self.top(top)
        out = []
        for lv, bam in zip(self.cfg.levels, self.bams):
            lat = warp(laterals[lv])  # (B, C_l, h_l, w_l) at the current frame
            x = F.interpolate(x, lat.shape[-2:], mode="bilinear", align_corners=False)
            x, logit = bam(torch.cat([lat, x], 1))
            out.append(logit)
        return out
