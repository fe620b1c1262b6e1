"""Segmentation losses of the image models AR-Seg's code trains: OHEM cross-entropy (BiSeNet)
and the class-presence BCE (the CamVid PSPNet's classification branch)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def ohem_cross_entropy(
    logits: Tensor, target: Tensor, ignore_index: int = 255, thresh: float = 0.7, min_kept_fraction: float = 1 / 16
) -> Tensor:
    """Online hard example mining (BiSeNet's training loss, `OhemCELoss(0.7)` in the authors'
    code): the mean cross-entropy of the pixels whose loss exceeds -log(thresh) (predicted
    probability of the true class below `thresh`), or of the hardest `min_kept_fraction` of the
    labelled pixels when fewer are that hard. logits (B, K, H, W), target (B, H, W)."""
    loss = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none").flatten()  # (B*H*W,)
    n_min = max(int((target != ignore_index).sum() * min_kept_fraction), 1)
    hard = loss[loss > -math.log(thresh)]
    if hard.numel() < n_min:
        hard = loss.topk(min(n_min, loss.numel())).values
    return hard.mean()


def class_presence(target: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """(B, K) float: 1 where class k occurs in the sample's label (ignored pixels not counted)."""
    t = target.flatten(1)  # (B, H*W)
    valid = t != ignore_index
    onehot = torch.zeros(t.shape[0], num_classes + 1, device=t.device)
    onehot.scatter_(1, torch.where(valid, t, num_classes), 1.0)
    return onehot[:, :num_classes]


def class_presence_loss(class_logits: Tensor, target: Tensor, ignore_index: int = 255) -> Tensor:
    """BCE between per-image class logits (B, K) and which classes the label holds (Lextal's
    PSPNet, the authors' CamVid model: `BCEWithLogitsLoss(out_cls, y_cls)`)."""
    return F.binary_cross_entropy_with_logits(class_logits, class_presence(target, class_logits.shape[1], ignore_index))
