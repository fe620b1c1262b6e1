"""Training losses beyond cross-entropy: BDNet's boundary (BCE + IoU + SSIM) and distillation
(pixel-wise KL, inner relation) losses; the OHEM and class-presence losses of AR-Seg's image models."""

from mvseg.losses.boundary import bce_loss, boundary_loss, boundary_map, iou_loss, ssim_loss
from mvseg.losses.distill import inner_relation_loss, pairwise_similarity, pixelwise_kl
from mvseg.losses.segmentation import class_presence, class_presence_loss, ohem_cross_entropy

__all__ = [
    "bce_loss",
    "boundary_loss",
    "boundary_map",
    "iou_loss",
    "ssim_loss",
    "inner_relation_loss",
    "pairwise_similarity",
    "pixelwise_kl",
    "class_presence",
    "class_presence_loss",
    "ohem_cross_entropy",
]
