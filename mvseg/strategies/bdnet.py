"""BDNet (Lu & Deng, "A Boundary-aware Distillation Network for Compressed Video Semantic
Segmentation"): prop-MV's main stream trained with two streams that exist in training only.

- Main stream (Fig. 3a, middle): N_feat on the keyframe, features warped to the current
  frame by the block MVs, N_task (the paper: an ASPP decoder) and N_out (up-sampling) — the
  same network and inference as prop-MV, so BDNet costs exactly what prop-MV costs.
- Boundary-aware stream (top): a top-down decoder over the shared backbone whose warped
  keyframe laterals feed a boundary-aware module per level (mvseg.models.boundary), each
  supervised by the labels' silhouettes with L_B = sum_k BCE + IoU + SSIM.
- Distillation stream (bottom): a frozen per-frame teacher on the current frame; pixel-wise
  KL (l_pw) and inner-relation (l_inn) distillation, L_D = w_pw l_pw + w_inn l_inn.

    L = L_S + lambda L_B + beta L_D        (the paper's total loss)

The ablation rows of the paper's Table 2 are the same class with parts switched off
(boundary_weight 0, distill_weight 0, pw_weight / inn_weight 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mvseg import ops
from mvseg.losses import boundary_loss, boundary_map, inner_relation_loss, pixelwise_kl
from mvseg.models.boundary import BoundaryConfig, BoundaryStream
from mvseg.models.segnet import SegNet, SegNetConfig
from mvseg.strategies.base import as_config
from mvseg.strategies.loading import load_teacher
from mvseg.strategies.prop_mv import PropMV


class BDNet(PropMV):
    def __init__(
        self,
        num_classes: int,
        keyframe_interval: int = 5,
        net: SegNetConfig | None = None,
        init_from: str | None = None,
        boundary: BoundaryConfig | None = None,
        boundary_weight: float = 1.0,
        teacher: str | None = None,
        distill_weight: float = 1.0,
        pw_weight: float = 1.0,
        inn_weight: float = 1.0,
        inner_pool: tuple[int, int] | None = (8, 16),
        **kwargs,
    ):
        """boundary_weight: lambda (0 switches the boundary-aware stream off); teacher: a
        PerFrame checkpoint; distill_weight: beta (0, or no teacher, switches distillation off);
        pw_weight, inn_weight: the two distillation terms inside L_D; inner_pool: the grid both
        feature maps are average-pooled to before l_inn's (h w)^2 similarities, or None for every
        pair of feature pixels (the paper's; a (B, hw, hw) matrix per network)."""
        super().__init__(num_classes, keyframe_interval, net, init_from, **kwargs)
        # the teacher is not part of the model: a trained BDNet loads and runs without it
        self.save_hyperparameters(ignore=["init_from", "teacher"])
        for name, w in (
            ("boundary_weight", boundary_weight),
            ("distill_weight", distill_weight),
            ("pw_weight", pw_weight),
            ("inn_weight", inn_weight),
        ):
            if w < 0:
                raise ValueError(f"{name} must be >= 0, got {w}")
        self.boundary_cfg = as_config(BoundaryConfig, boundary)
        self.boundary_weight, self.distill_weight = boundary_weight, distill_weight
        self.pw_weight, self.inn_weight, self.inner_pool = (
            pw_weight,
            inn_weight,
            tuple(inner_pool) if inner_pool else None,
        )
        backbone = self.net.feat.backbone
        self.boundary = (
            BoundaryStream(self.boundary_cfg, self.net.feature_dim, backbone.channels) if boundary_weight > 0 else None
        )
        # not registered as a submodule: no teacher weights in BDNet's checkpoints or optimiser,
        # and Lightning's train() never switches its BatchNorm back to training mode
        self._teacher: list[SegNet] = [load_teacher(teacher, num_classes)] if teacher and distill_weight > 0 else []

    @property
    def teacher(self) -> SegNet | None:
        return self._teacher[0] if self._teacher else None

    def on_fit_start(self) -> None:
        # checked here, not in __init__: a trained BDNet is loaded for inference without its teacher
        if self.distill_weight > 0 and self.teacher is None:
            raise ValueError(
                "distill_weight > 0 needs a teacher checkpoint (model.init_args.teacher), or set distill_weight: 0"
            )
        if self.teacher is not None:
            self.teacher.to(self.device)

    def training_loss(self, batch: dict) -> dict[str, Tensor]:
        size = tuple(batch["cur"].shape[-2:])
        net = self.net
        # N_feat on the keyframe (B, C, H/os, W/os), and its backbone stages, shared by both streams
        feat, stages = net.features(batch["key"], return_stages=True)

        def warp(t: Tensor) -> Tensor:  # keyframe tensor -> current frame, by the composed MVs
            return ops.warp(t, batch["offset_cur_to_key"], batch["mask_cur_to_key"], size)

        warped = warp(feat)
        last = net.last_features(warped)  # the feature before the classifier
        logits = net.task.classifier(net.task.dropout(last))  # (B, K, H/os, W/os)
        ce = F.cross_entropy(ops.resize_bilinear(logits, size), batch["label"], ignore_index=self.ignore_index)
        out = {"ce": ce}
        loss = ce
        if self.boundary is not None:
            edge, valid = boundary_map(batch["label"], self.boundary_cfg.thickness, self.ignore_index)
            levels = self.boundary(warped, stages, warp)
            # every level is supervised at the label's resolution, as BASNet's side outputs are
            l_b = sum(boundary_loss(torch.sigmoid(ops.resize_bilinear(lg, size)), edge, valid) for lg in levels)
            out["boundary"] = l_b
            loss = loss + self.boundary_weight * l_b
        if self.teacher is not None:
            with torch.no_grad():
                t_last = self.teacher.task.head(self.teacher.feat(batch["cur"]))  # teacher sees the current frame
                t_logits = self.teacher.task.classifier(t_last)
            l_pw = pixelwise_kl(logits, t_logits)
            l_inn = inner_relation_loss(last, t_last, self.inner_pool)
            out["distill_pw"], out["distill_inn"] = l_pw, l_inn
            loss = loss + self.distill_weight * (self.pw_weight * l_pw + self.inn_weight * l_inn)
        out["loss"] = loss
        return out
