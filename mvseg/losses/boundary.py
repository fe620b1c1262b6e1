"""BDNet's boundary-aware stream losses (Lu & Deng, "A Boundary-aware Distillation Network for
Compressed Video Semantic Segmentation"): boundary targets from the labels and

    L_B = sum_k  l_BCE^k + l_IOU^k + l_SSIM^k            (the paper's L_B)

as BASNet (Qin et al., CVPR 2019) defines the three: per-pixel BCE, a soft IoU over the
image, and SSIM over local windows. Every loss takes probabilities x in [0, 1] and binary
targets y of shape (B, 1, H, W), plus an optional validity mask (ignored label pixels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def boundary_map(label: Tensor, thickness: int = 2, ignore_index: int = 255) -> tuple[Tensor, Tensor]:
    """Object silhouettes of a label map (B, H, W) -> (boundary (B, 1, H, W) float in {0, 1},
    valid (B, 1, H, W)).

    A pixel is boundary when a pixel of another class lies within `thickness` pixels of it
    (Chebyshev distance), so a boundary is 2 * thickness pixels wide, half on each side: the
    silhouettes of foreground and background regions alike, as the paper's stream predicts
    both. Ignored pixels are not valid, and do not make their neighbours boundary.
    """
    if thickness < 1:
        raise ValueError(f"boundary thickness must be >= 1 pixel, got {thickness}")
    valid = (label != ignore_index)[:, None]  # (B, 1, H, W)
    lab = label[:, None].float()
    k = 2 * thickness + 1
    # the largest and smallest valid class id in each pixel's window: they differ iff the
    # window holds two classes (ignored pixels are pushed out of both extremes)
    big = torch.finfo(lab.dtype).max
    hi = F.max_pool2d(torch.where(valid, lab, -big), k, stride=1, padding=thickness)
    lo = -F.max_pool2d(torch.where(valid, -lab, -big), k, stride=1, padding=thickness)
    edge = (hi > lo) & valid
    return edge.float(), valid.float()


def bce_loss(x: Tensor, y: Tensor, valid: Tensor | None = None) -> Tensor:
    """l_BCE, averaged over valid pixels (the paper sums; a mean keeps the weight of L_B
    independent of the resolution)."""
    valid = torch.ones_like(y) if valid is None else valid
    per_pixel = F.binary_cross_entropy(x.clamp(1e-6, 1 - 1e-6), y, reduction="none")
    return (per_pixel * valid).sum() / valid.sum().clamp(min=1)


def iou_loss(x: Tensor, y: Tensor, valid: Tensor | None = None, eps: float = 1e-6) -> Tensor:
    """l_IOU = 1 - sum(x y) / sum(x + y - x y), per image, averaged over the batch."""
    if valid is not None:
        x, y = x * valid, y * valid
    inter = (x * y).sum(dim=(1, 2, 3))
    union = (x + y - x * y).sum(dim=(1, 2, 3))
    return (1 - (inter + eps) / (union + eps)).mean()


def _gaussian_window(size: int, sigma: float, device, dtype) -> Tensor:
    g = torch.exp(-((torch.arange(size, device=device, dtype=dtype) - size // 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]  # (1, 1, size, size)


def ssim_loss(
    x: Tensor,
    y: Tensor,
    valid: Tensor | None = None,
    window: int = 11,
    sigma: float = 1.5,
    c1: float = 0.01**2,
    c2: float = 0.03**2,
) -> Tensor:
    """l_SSIM = 1 - SSIM(x, y), with the local statistics over an 11x11 Gaussian window
    (sigma 1.5) as BASNet's SSIM does, averaged over (valid) pixels. The paper prints C1, C2
    as "0.012, 0.032": the standard 0.01^2 and 0.03^2 (Wang et al. 2004) with the exponents lost."""
    w = _gaussian_window(window, sigma, x.device, x.dtype)
    pad = window // 2

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t, w.expand(t.shape[1], 1, -1, -1), padding=pad, groups=t.shape[1])

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx**2  # sigma_x^2
    vy = blur(y * y) - my**2
    cov = blur(x * y) - mx * my  # sigma_xy
    ssim = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    loss = 1 - ssim
    if valid is None:
        return loss.mean()
    return (loss * valid).sum() / valid.sum().clamp(min=1)


def boundary_loss(prob: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """One level's l^k = l_BCE + l_IOU + l_SSIM (probabilities and target (B, 1, H, W))."""
    return bce_loss(prob, target, valid) + iou_loss(prob, target, valid) + ssim_loss(prob, target, valid)
