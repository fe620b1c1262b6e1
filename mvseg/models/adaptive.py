"""The small networks of Li et al.'s adaptive scheduler (Low-Latency Video Semantic Segmentation,
CVPR 2018), all reading the low-level features F_l = S_l(I) of two frames:

- DeviationPredictor (Sec. 3.2): how far frame t's segmentation has drifted from keyframe k's,
  from F_l^t - F_l^k: two 3x3 convs (256 channels in the paper), global pooling, one fully
  connected layer.
- KernelPredictor (Sec. 3.3): per-pixel HxH kernels W_ij^(k,t), softmax-normalised, that
  ops.sv_conv uses to propagate F_h^k to frame t (Eq. 1).
- AdaptNet fusion (Sec. 3.3): the current frame's F_l^t fused with the propagated F_h^t
  before the classifier, "to increase the robustness against scene changes".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: what the deviation predictor regresses: "labels" (Li et al., Sec. 3.2: how far t's labels drifted
#: from k's) or "gain" (ours: how much more of t a keyframe at t would get right, keyframe_gain_target)
DEVIATION_TARGETS = ("labels", "gain")
#: what it reads: "difference" (Li et al.: F_l^t - F_l^k) or "motion" (ours, prop-MV: F_l^t minus F_l^k
#: warped to t by the block motion, and the share of each cell the motion lost: what propagation cannot explain)
DEVIATION_INPUTS = ("difference", "motion")


def deviation_target(logits_key: Tensor, logits_cur: Tensor) -> Tensor:
    """What the deviation predictor regresses: the fraction of pixels whose predicted label
    differs between keyframe and current frame. logits (B, K, h, w) -> (B,) in [0, 1]."""
    return (logits_key.argmax(1) != logits_cur.argmax(1)).float().mean((1, 2))


def keyframe_gain_target(logits_prop: Tensor, logits_full: Tensor, label: Tensor, ignore_index: int) -> Tensor:
    """Ours, not Li et al.'s: what a keyframe at t would gain, the fraction of t's labelled pixels
    that t propagated from k gets wrong minus the fraction the full network on t gets wrong,
    floored at 0 (a keyframe never has to be worse). logits (B, K, H, W) at the label's size,
    label (B, H, W) -> (B,) in [0, 1]; a frame without labelled pixels gives 0.

    Li et al.'s deviation says how far t's labels have drifted since k, which is not where a
    keyframe pays: a frame mid-turn has drifted, yet a keyframe there is stale a few frames on.
    On uneven clips a threshold on this gain (with the labels known) takes 0.75-0.90 of the
    hindsight optimum's headroom where one on the true deviation takes 0.33-0.40 (docs/results.md,
    "What a keyframe would gain")."""
    valid = label != ignore_index
    wrong_prop = ((logits_prop.argmax(1) != label) & valid).sum((1, 2))
    wrong_full = ((logits_full.argmax(1) != label) & valid).sum((1, 2))
    return ((wrong_prop - wrong_full).float() / valid.sum((1, 2)).clamp(min=1)).clamp(0, 1)


class DeviationPredictor(nn.Module):
    """(F_l^t - F_l^k) (B, C_l, h, w) -> predicted deviation (B,) in (0, 1). extra_channels:
    maps read beside the difference (ours: prop-MV's `deviation_input: motion` passes where the
    block motion lost track of t, and F_l^k warped to t in place of F_l^k)."""

    def __init__(self, in_channels: int, channels: int = 256, extra_channels: int = 0):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels + extra_channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(channels, 1)

    def logit(self, low_key: Tensor, low_cur: Tensor, extra: Tensor | None = None) -> Tensor:
        """The deviation before the sigmoid (B,): what the training loss reads; extra (B, E, h, w)."""
        x = low_cur - low_key  # (B, C_l, h, w)
        h = self.convs(x if extra is None else torch.cat([x, extra.to(x.dtype)], 1)).mean((2, 3))  # (B, channels)
        return self.fc(h).squeeze(1)

    def forward(self, low_key: Tensor, low_cur: Tensor, extra: Tensor | None = None) -> Tensor:
        # a sigmoid keeps the prediction a fraction (the paper does not say how it bounds it),
        # so thresholds in [0, 1] are meaningful: 0 makes every frame a keyframe, 1 none
        return torch.sigmoid(self.logit(low_key, low_cur, extra))


def deviation_loss(logit: Tensor, target: Tensor) -> Tensor:
    """Regression of the deviation (a fraction) by binary cross-entropy with the soft target.
    The paper only says "regress"; MSE through the sigmoid has vanishing gradients once the
    output is near 0 (with it our predictor settled on a relation inverse to the target's)."""
    return F.binary_cross_entropy_with_logits(logit, target)


class KernelPredictor(nn.Module):
    """(F_l^k, F_l^t) (B, C_l, h, w) each -> kernels (B, H*H, h, w), softmax over the H*H taps.

    The paper gives no layer sizes: two 3x3 conv-ReLU layers on the concatenated features and
    a 1x1 conv to H*H logits. The last conv starts at zero weight with a bias on the centre
    tap, so a fresh predictor propagates almost unchanged features (the centre tap holds
    e^8 / (e^8 + H*H - 1) = 96 % of the weight for H = 9) instead of a 9x9 box blur.
    """

    def __init__(self, in_channels: int, kernel_size: int = 9, channels: int = 64):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
        self.kernel_size = kernel_size
        self.convs = nn.Sequential(
            nn.Conv2d(2 * in_channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.out = nn.Conv2d(channels, kernel_size * kernel_size, 1)
        nn.init.zeros_(self.out.weight)
        with torch.no_grad():
            self.out.bias.zero_()
            self.out.bias[kernel_size * kernel_size // 2] = 8.0

    def forward(self, low_key: Tensor, low_cur: Tensor) -> Tensor:
        return torch.softmax(self.out(self.convs(torch.cat([low_key, low_cur], 1))), 1)


class AdaptNetFusion(nn.Module):
    """F_h^t (B, C_h, h, w) propagated, F_l^t (B, C_l, h', w') -> fused (B, C_h, h, w).

    The paper fuses without saying how; here a residual: F_h^t + conv3x3([F_h^t, proj(F_l^t)]),
    the last conv zero-initialised so the fused feature starts as the propagated one and the
    classifier of the image network applies unchanged.
    """

    def __init__(self, high_channels: int, low_channels: int, channels: int = 32):
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(low_channels, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)
        )
        self.fuse = nn.Conv2d(high_channels + channels, high_channels, 3, padding=1)
        nn.init.zeros_(self.fuse.weight)
        nn.init.zeros_(self.fuse.bias)

    def forward(self, high: Tensor, low: Tensor) -> Tensor:
        low = self.proj(resize_to(low, high))
        return high + self.fuse(torch.cat([high, low], 1))


def resize_to(x: Tensor, ref: Tensor) -> Tensor:
    """x resampled to ref's grid (low-level features of a stride-4 stage meet stride-8 F_h)."""
    if x.shape[-2:] == ref.shape[-2:]:
        return x
    return F.interpolate(x, ref.shape[-2:], mode="bilinear", align_corners=False)
