"""AR-Seg (Hu et al., "Efficient Semantic Segmentation by Altering Resolutions for Compressed
Videos", CVPR 2023): keyframes at high
resolution (HR) through the image model, every other frame down-sampled by `lr_scale`
through a low-resolution (LR) branch whose last feature is fused with the MV-warped HR
keyframe feature by CReFF, then decoded by the HR model's final 1x1 classifier:

    keyframe k:     F_I = Phi_HR(I_k),                     S_k = C_1x1(F_I)
    other frame t:  F_L = Phi_LR(down_s(I_t)),
                    F_t = CReFF(F_L, F_I, M_{t->k}),       S_t = C_1x1(F_t)

where Phi is the network up to the feature before the classifier (N_feat + the context
head). FST (feature similarity training, Sec. 3.3) trains the LR branch and CReFF with

    loss = CE(S_t, y_t) + fst_weight * MSE(F_t, Phi_HR(I_t)) [+ aux_weight * the auxiliary loss]

the HR network (and with it the shared C_1x1) frozen. Training pairs are at keyframe
distance L-1 (the authors' setting; data.init_args.train_distances). The optional first
stage (``stage: lr``) trains the LR branch alone, without CReFF: it is also the "LR image
model" baseline, and evaluates every frame at low resolution. As the authors' code, the LR
branch can also train with its image model's own losses: `loss: ohem` (BiSeNet) and the
training-only auxiliary heads (`aux: psp | presence | bisenet`, mvseg.models.aux).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mvseg import ops
from mvseg.models.aux import AuxHeads
from mvseg.models.creff import CReFF
from mvseg.models.segnet import SegNet, SegNetConfig
from mvseg.ops.fields import extend_chain
from mvseg.strategies.base import SegStrategy, as_config, segmentation_loss
from mvseg.strategies.loading import load_aux_weights, load_net_weights


def features(net: SegNet, x: Tensor) -> Tensor:
    """Phi: the last feature before the final 1x1 classifier (B, C, H/os, W/os)."""
    return net.task.head(net.feat(x))


class ARSeg(SegStrategy):
    def __init__(
        self,
        num_classes: int,
        keyframe_interval: int = 12,
        net: SegNetConfig | None = None,
        init_from: str | None = None,
        lr_init: str | None = None,
        lr_scale: float = 0.5,
        window: int = 7,
        fst_weight: float = 1.0,
        stage: str = "creff",
        train_lr: bool = True,
        loss: str = "ce",
        aux: str = "none",
        aux_weight: float = 0.4,
        **kwargs,
    ):
        super().__init__(num_classes, keyframe_interval, **kwargs)
        if not 0.1 <= lr_scale <= 1.0:
            raise ValueError(f"lr_scale must be in [0.1, 1.0] (the paper uses 0.3 to 1.0), got {lr_scale}")
        if stage not in ("lr", "creff"):
            raise ValueError(f"stage must be 'lr' (LR branch alone) or 'creff', got {stage!r}")
        self.save_hyperparameters(ignore=["init_from", "lr_init"])
        cfg = as_config(SegNetConfig, net)
        self.lr_scale, self.fst_weight, self.stage = lr_scale, fst_weight, stage
        self.distance_invariant = stage == "lr"  # the LR image model: every frame alike
        self.hr = SegNet(cfg, num_classes)
        if init_from:
            load_net_weights(self.hr, init_from)
        self.hr.requires_grad_(False).eval()  # frozen: the teacher of FST and the shared classifier
        self.lr = SegNet(cfg, num_classes)
        self.lr.load_state_dict(self.hr.state_dict())  # the LR branch starts as the HR model
        self.lr.task.classifier.requires_grad_(False)  # unused: the HR classifier is shared
        self.creff = CReFF(cfg.head_dim, window) if stage == "creff" else None
        if lr_init:
            load_net_weights(
                self.lr, lr_init, prefix="lr.", option="lr_init", hint="train the LR branch first: its arseg_lr config"
            )
        # train_lr=False (stage "creff" only; our option, the authors train both): the LR branch
        # from stage 1 stays fixed and only CReFF learns, so any gain must come from the HR feature
        if not train_lr and stage == "creff":
            self.lr.requires_grad_(False)
        self.train_lr = train_lr or stage == "lr"
        # the authors' losses for the LR branch: their image model's segmentation loss (OHEM CE for
        # BiSeNet) on the output and its auxiliary heads on the LR branch (mvseg.models.aux)
        self.seg_loss = segmentation_loss(loss, self.ignore_index)
        self.aux = AuxHeads(aux, self.lr.aux_channels(), num_classes) if aux != "none" else None
        self.aux_weight = aux_weight
        for ckpt in (init_from, lr_init):  # the heads continue from the HR model's, then stage 1b's
            if self.aux is not None and ckpt:
                load_aux_weights(self.aux, ckpt)
        self._key_feat: Tensor | None = None

    def train(self, mode: bool = True):
        super().train(mode)
        self.hr.eval()  # frozen, BatchNorm statistics included
        if not getattr(self, "train_lr", True):
            self.lr.eval()
        return self

    # -- the two paths -------------------------------------------------------------------

    def classify(self, feat: Tensor, size: tuple[int, int]) -> Tensor:
        """The shared (HR) 1x1 classifier, up-sampled to the frame -> (B, K, H, W)."""
        return ops.resize_bilinear(self.hr.task.classifier(feat), size)

    def downsample(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        size = (max(round(h * self.lr_scale), 8), max(round(w * self.lr_scale), 8))
        return F.interpolate(x, size, mode="bilinear", align_corners=False) if size != (h, w) else x

    def lr_feature(
        self, cur: Tensor, key_feat: Tensor | None, offset: Tensor | None, mask: Tensor | None, lr: Tensor | None = None
    ) -> Tensor:
        """F_t of a non-keyframe (B, C, h, w) at the HR feature size (`lr`: Phi_LR(down(cur)) if
        already computed)."""
        lr = features(self.lr, self.downsample(cur)) if lr is None else lr  # (B, C, h*s, w*s)
        size = tuple(cur.shape[-2:])
        if self.creff is None:  # stage "lr": the LR branch alone, up-sampled
            h, w = key_feat.shape[-2:] if key_feat is not None else self.hr.feature_size(*size)
            return ops.resize_bilinear(lr, (h, w))
        return self.creff(lr, key_feat, offset, mask, size)

    # -- training and evaluation ---------------------------------------------------------

    def _fuse(self, batch: dict, lr: Tensor | None = None) -> Tensor:
        key_feat = None
        if self.creff is not None:
            with torch.no_grad():
                key_feat = features(self.hr, batch["key"])  # (B, C, h, w)
        return self.lr_feature(batch["cur"], key_feat, batch["offset_cur_to_key"], batch["mask_cur_to_key"], lr)

    def training_loss(self, batch: dict) -> dict[str, Tensor]:
        size = tuple(batch["cur"].shape[-2:])
        label = batch["label"]
        lr, aux_in = self.lr.forward_aux(self.downsample(batch["cur"])) if self.aux is not None else (None, None)
        feat = self._fuse(batch, lr)
        ce = self.seg_loss(self.classify(feat, size), label)
        with torch.no_grad():
            target = features(self.hr, batch["cur"])  # the frozen HR feature of the current frame
        fst = F.mse_loss(feat, target)
        out = {"loss": ce + self.fst_weight * fst, "ce": ce, "fst_mse": fst}
        if self.aux is not None:  # on the LR branch's own features, as the authors' (their out_cls, out16, out32)
            out["aux"] = self.aux.loss(aux_in, label, self.ignore_index, self.seg_loss)
            out["loss"] = out["loss"] + self.aux_weight * out["aux"]
        return out

    def predict_batch(self, batch: dict) -> Tensor:
        size = tuple(batch["cur"].shape[-2:])
        out = self.classify(self._fuse(batch), size)
        if self.creff is None:
            return out  # the LR image model, every frame
        is_key = torch.as_tensor(batch["distance"], device=out.device) == 0
        if is_key.any():  # d = 0: the frame is the keyframe, through the HR model
            out = out.clone()
            out[is_key] = self.hr(batch["cur"][is_key])
        return out

    # -- streaming -----------------------------------------------------------------------

    def stream_reset(self) -> None:
        super().stream_reset()
        self._key_feat = None
        self._chain: tuple[Tensor, Tensor] | None = None  # composed offsets t -> k and mask

    def stream_step(self, frame: Tensor, offset: Tensor | None, mask: Tensor | None, is_key: bool) -> Tensor:
        size = tuple(frame.shape[-2:])
        if self.creff is None:
            return self.classify(self.lr_feature(frame, None, None, None), size)
        if is_key or self._key_feat is None:
            self._key_feat, self._chain = features(self.hr, frame), None
            return self.classify(self._key_feat, size)
        self._chain = extend_chain(self._chain, offset, mask)  # t -> k as in training, O(1) per frame
        return self.classify(self.lr_feature(frame, self._key_feat, *self._chain), size)
