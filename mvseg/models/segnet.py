"""The image segmentation network, split as Deep Feature Flow does (Zhu et al., CVPR 2017):

    backbone -> 1x1 feature conv (`feat`) -> context head (`task.head`) -> 1x1 classifier

Propagation strategies run N_feat on keyframes only, warp its output and run N_task on every
frame. Where the cut lies is `SegNetConfig.split`:
    "head" (default): N_feat = backbone + feature conv + context head, N_task = the classifier.
        DFF's N_task is one 1x1 conv (Sec. 4); Jain & Gonzalez call it "cheap, shallow".
    "feat": N_feat = backbone + feature conv, N_task = context head + classifier (the context
        is recomputed on every frame, at the cost of a PSP/ASPP head per frame).
The per-frame baseline runs the whole network on every frame, so the split does not change it,
and module names (checkpoint keys) are the same for both.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from mvseg.models.bisenet import BiSeNetFeatures
from mvseg.models.heads import HEADS, conv_bn_relu
from mvseg.models.resnet import STAGES, ResNet, load_pretrained
from mvseg.ops.resize import resize_bilinear


@dataclass
class SegNetConfig:
    """Architecture of the image network (defaults: a CPU-sized dilated ResNet-18 PSPNet)."""

    backbone: str = "resnet18"  # resnet18 | resnet34 | resnet50 | resnet101 | bisenet18 | pixel (1x1 convs)
    width: float = 0.25  # channel multiplier (1.0 = standard; ImageNet weights need 1.0)
    output_stride: int = 8
    feat_dim: int = 128  # N_feat output channels (DFF: 1024 for ResNet-101)
    head: str = "psp"  # psp | aspp (DeepLabv3) | aspp_v2 (DeepLabv2) | psp_up | plain | pixel (1x1, no context)
    head_dim: int = 64
    dropout: float = 0.1
    pretrained: str | None = None  # path to a torchvision ImageNet state dict (no download)
    split: str = "head"  # where propagation cuts N_feat | N_task: "head" (after the context head) | "feat"


class PixelBackbone(nn.Module):
    """A per-pixel colour classifier's trunk: 1x1 convs only, no spatial context (the
    "colour-only" baseline the synthetic dataset is designed to defeat)."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        c = max(int(64 * width), 8)
        self.body = nn.Sequential(conv_bn_relu(3, c), conv_bn_relu(c, c))
        self.channels = {"layer4": c}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"layer4": self.body(x)}


class FeatureNet(nn.Module):
    """N_feat: image (B, 3, H, W) -> features (B, feat_dim, H/os, W/os)."""

    def __init__(self, cfg: SegNetConfig):
        super().__init__()
        if cfg.backbone == "bisenet18":  # BiSeNet's own N_feat (spatial + context path + FFM), at 1/8
            self.bisenet = BiSeNetFeatures(cfg.width)
            if cfg.feat_dim != self.bisenet.channels:
                raise ValueError(
                    f"bisenet18: feat_dim must be its FFM's {self.bisenet.channels} channels "
                    f"(256 x width), got {cfg.feat_dim}"
                )
            if cfg.output_stride != 8:
                raise ValueError(f"bisenet18 has output stride 8, got output_stride {cfg.output_stride}")
            if cfg.pretrained:
                load_pretrained(self.bisenet.backbone, cfg.pretrained)
            return
        if cfg.backbone == "pixel":
            self.backbone = PixelBackbone(cfg.width)
        else:
            self.backbone = ResNet(cfg.backbone, cfg.output_stride, cfg.width)
            if cfg.pretrained:
                load_pretrained(self.backbone, cfg.pretrained)
        self.feat = conv_bn_relu(self.backbone.channels["layer4"], cfg.feat_dim)

    def forward(self, x: Tensor) -> Tensor:
        if hasattr(self, "bisenet"):
            return self.bisenet(x)
        return self.feat(self.backbone(x)["layer4"])


class TaskNet(nn.Module):
    """N_task: features (B, feat_dim, h, w) -> class logits (B, K, h, w)."""

    def __init__(self, cfg: SegNetConfig, num_classes: int):
        super().__init__()
        if cfg.head not in HEADS:
            raise ValueError(f"unknown head {cfg.head!r}; choose one of {sorted(HEADS)}")
        self.head = HEADS[cfg.head](cfg.feat_dim, cfg.head_dim)
        self.dropout = nn.Dropout2d(cfg.dropout)
        self.classifier = nn.Conv2d(cfg.head_dim, num_classes, 1)

    def forward(self, feat: Tensor) -> Tensor:
        return self.classifier(self.dropout(self.head(feat)))


class SegNet(nn.Module):
    """N_task(N_feat(image)), up-sampled to the input size."""

    def __init__(self, cfg: SegNetConfig, num_classes: int):
        super().__init__()
        if cfg.split not in ("head", "feat"):
            raise ValueError(f"net.split must be 'head' or 'feat', got {cfg.split!r}")
        self.cfg = cfg
        self.feat = FeatureNet(cfg)
        self.task = TaskNet(cfg, num_classes)

    @property
    def feature_dim(self) -> int:
        """Channels of the features propagation strategies warp."""
        return self.cfg.head_dim if self.cfg.split == "head" else self.cfg.feat_dim

    def features(self, x: Tensor, return_stages: bool = False) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """N_feat at `cfg.split`: image (B, 3, H, W) -> (B, feature_dim, H/os, W/os), and the
        backbone's stages too when asked (BDNet's boundary stream reads them)."""
        if hasattr(self.feat, "bisenet"):
            if return_stages:
                raise ValueError("bisenet18 exposes no backbone stages (BDNet's boundary stream needs a ResNet)")
            f, stages = self.feat(x), {}
        else:
            stages = self.feat.backbone(x)
            f = self.feat.feat(stages["layer4"])  # = self.feat(x)
        if self.cfg.split == "head":
            f = self.task.head(f)
        return (f, stages) if return_stages else f

    def low_features(self, x: Tensor, stage: str = "layer2") -> Tensor:
        """Li et al.'s lower part S_l: image (B, 3, H, W) -> the backbone's `stage` output."""
        self._check_stage(stage)
        return self.feat.backbone.lower(x, stage)

    def high_features(self, low: Tensor, stage: str = "layer2") -> Tensor:
        """Li et al.'s higher part S_h: `low_features(x, stage)` -> `features(x)` (equal to it)."""
        self._check_stage(stage)
        f = self.feat.feat(self.feat.backbone.upper(low, stage))
        return self.task.head(f) if self.cfg.split == "head" else f

    def _check_stage(self, stage: str) -> None:
        if not isinstance(getattr(self.feat, "backbone", None), ResNet):
            raise ValueError(f"S_l/S_h need a ResNet backbone, not {self.cfg.backbone!r}")
        if stage not in STAGES[:-1]:
            raise ValueError(f"low-level stage must be one of {STAGES[:-1]}, got {stage!r}")

    def feature_size(self, height: int, width: int) -> tuple[int, int]:
        """Spatial size of the feature before the classifier for a (height, width) input."""
        up = getattr(self.task.head, "upsampling", 1)
        return -(-height // self.cfg.output_stride) * up, -(-width // self.cfg.output_stride) * up

    def last_features(self, feat: Tensor) -> Tensor:
        """The rest of the context up to the classifier: N_feat's output -> the feature the 1x1
        classifier reads (identity when the head is already in N_feat)."""
        return feat if self.cfg.split == "head" else self.task.head(feat)

    def logits(self, feat: Tensor, dropout: bool = True) -> Tensor:
        """N_task at `cfg.split`: features (B, feature_dim, h, w) -> logits (B, K, h, w);
        dropout=False skips the dropout even in training mode (targets computed on the fly)."""
        feat = self.last_features(feat)
        return self.task.classifier(self.task.dropout(feat) if dropout else feat)

    def forward_aux(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The feature the 1x1 classifier reads (B, head_dim, h, w) and what the training-only
        auxiliary heads read (mvseg.models.aux): the backbone's `layer3` (ResNets) or BiSeNet's
        context outputs `cp8`, `cp16`."""
        if hasattr(self.feat, "bisenet"):
            f, aux = self.feat.bisenet(x, context=True)
        else:
            stages = self.feat.backbone(x)
            f, aux = self.feat.feat(stages["layer4"]), {"layer3": stages["layer3"]}
        return self.task.head(f), aux

    def aux_channels(self) -> dict[str, int]:
        """Channels of what `forward_aux` returns for the auxiliary heads."""
        if hasattr(self.feat, "bisenet"):
            c = self.feat.bisenet.head16[0].out_channels
            return {"cp8": c, "cp16": c}
        if not isinstance(getattr(self.feat, "backbone", None), ResNet):
            raise ValueError(f"auxiliary heads need a ResNet or BiSeNet backbone, not {self.cfg.backbone!r}")
        return {"layer3": self.feat.backbone.channels["layer3"]}

    def forward(self, x: Tensor) -> Tensor:
        logits = self.task(self.feat(x))  # (B, K, H/os, W/os)
        return resize_bilinear(logits, x.shape[-2:])  # (B, K, H, W)
