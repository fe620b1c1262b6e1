"""Training losses beyond cross-entropy: BDNet's boundary (BCE + IoU + SSIM) and distillation
(pixel-wise KL, inner relation) losses."""

from mvseg.losses.boundary import bce_loss, boundary_loss, boundary_map, iou_loss, ssim_loss
from mvseg.losses.distill import inner_relation_loss, pairwise_similarity, pixelwise_kl

__all__ = ["bce_loss", "boundary_loss", "boundary_map", "iou_loss", "ssim_loss", "inner_relation_loss",
           "pairwise_similarity", "pixelwise_kl"]
