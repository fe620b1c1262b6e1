"""CReFF, the cross-resolution feature fusion of AR-Seg (Hu et al., "Efficient Semantic
Segmentation by Altering Resolutions for Compressed Videos", CVPR 2023, Sec. 3.2, Fig. 3).

Placed on the last feature before the final 1x1 classifier. The low-resolution (LR) frame's
feature is up-sampled to the high-resolution (HR) feature size; the HR keyframe's feature is
warped to the current frame by the MV offsets (W_MV); a 7x7 local attention (F_LA) lets each
LR position gather from the warped HR neighbourhood:

    F_up = Up(F_L)                                    (bilinear)
    F_P  = W(F_I, M_{t->k})                           (ops.warp)
    Q = DW_q(F_up),  K = DW_k(F_P),  V = DW_v(F_P)    (depthwise 3x3 convs, "DC" in Table 6)
    F_t = F_up + LA_7x7(Q, K, V)                      (no 1/sqrt(C) scaling, as the authors' code)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mvseg import ops


def depthwise3x3(channels: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, padding=1, groups=channels)


class CReFF(nn.Module):
    """(LR feature (B, C, h', w'), HR key feature (B, C, h, w), offsets (B, 2, Hc, Wc), mask,
    frame size) -> fused feature (B, C, h, w) at the HR feature size."""

    def __init__(self, channels: int, window: int = 7, warp: bool = True):
        super().__init__()
        if window < 1 or window % 2 == 0:
            raise ValueError(f"CReFF window must be odd and >= 1, got {window}")
        self.window = window
        self.warp = warp  # False: the "F_LA without W_MV" ablation of Table 6
        self.q = depthwise3x3(channels)
        self.k = depthwise3x3(channels)
        self.v = depthwise3x3(channels)
        for conv in (self.q, self.k, self.v):  # the authors' code: Kaiming normal (a=1), zero bias
            nn.init.kaiming_normal_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)

    def forward(
        self, lr_feat: Tensor, key_feat: Tensor, offset: Tensor | None, mask: Tensor | None, frame_size: tuple[int, int]
    ) -> Tensor:
        up = F.interpolate(lr_feat, key_feat.shape[-2:], mode="bilinear", align_corners=False)  # (B, C, h, w)
        # offsets stay fp32 under mixed precision: a bf16 position is off by up to 1 px at x = 256
        warped = ops.warp(key_feat, offset, mask, frame_size) if self.warp and offset is not None else key_feat
        if not up.is_cuda and not (torch.is_grad_enabled() and self.q.weight.requires_grad):
            # CPU inference: channels-last, where oneDNN's depthwise convs run faster and the
            # blocked local attention copies its inputs without a transpose; the same sums either way
            up, warped = (
                up.contiguous(memory_format=torch.channels_last),
                warped.contiguous(memory_format=torch.channels_last),
            )
        attended = ops.local_attention(self.q(up), self.k(warped), self.v(warped), self.window)  # scale None = 1
        return up + attended

    def attention_flops(self, channels: int, h: int, w: int) -> int:
        """FLOPs of the local attention (q.k and p.v: C*K^2 multiply-adds each per position, 2
        FLOPs per multiply-add): torch's FLOP counter does not see the elementwise ops it is made of."""
        return 2 * 2 * channels * self.window**2 * h * w
