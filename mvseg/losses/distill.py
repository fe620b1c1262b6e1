"""BDNet's distillation stream losses (Lu & Deng): pixel-wise KL between the student's and the
teacher's class distributions, and inner-relation distillation, which matches the pairwise
cosine similarities of feature vectors (the structured-knowledge distillation of Liu et al.,
CVPR 2019, whose code pools features to a small grid first).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def pixelwise_kl(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """l_pw = 1/N sum_i KL(p_i^S || p_i^T) over the N pixels (logits (B, K, h, w)).

    The direction is the paper's equation (student first); structured-KD code uses the
    teacher first. The teacher's map is resized to the student's when they differ."""
    if teacher_logits.shape[-2:] != student_logits.shape[-2:]:
        teacher_logits = F.interpolate(teacher_logits, student_logits.shape[-2:], mode="bilinear", align_corners=False)
    log_s = F.log_softmax(student_logits, dim=1)
    log_t = F.log_softmax(teacher_logits, dim=1)
    return (log_s.exp() * (log_s - log_t)).sum(1).mean()


def pairwise_similarity(feat: Tensor, pool: tuple[int, int] | None = None) -> Tensor:
    """phi_ij = v_i / |v_i| . v_j / |v_j| for every pair of positions of (B, C, h, w) features,
    average-pooled to `pool` cells first -> (B, n, n), n = cells."""
    if pool is not None:
        feat = F.adaptive_avg_pool2d(feat, pool)
    v = F.normalize(feat.flatten(2), dim=1, eps=1e-8)  # (B, C, n)
    return v.transpose(1, 2) @ v


def inner_relation_loss(student_feat: Tensor, teacher_feat: Tensor, pool: tuple[int, int] | None = (8, 16)) -> Tensor:
    """l_inn = 1/(h w)^2 sum_ij (phi_ij^S - phi_ij^T)^2. The paper prints phi^T on both sides
    (a typo: the loss would be 0) and a norm of the scalar difference; we follow the issue and
    structured KD: student vs teacher, squared difference. Channel counts may differ."""
    s, t = pairwise_similarity(student_feat, pool), pairwise_similarity(teacher_feat, pool)
    return ((s - t) ** 2).mean()
