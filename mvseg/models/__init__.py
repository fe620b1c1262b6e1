"""Plain nn.Modules: backbones, heads and the N_feat / N_task split."""

from mvseg.models.heads import HEADS, ASPPHead, PlainHead, PSPHead
from mvseg.models.resnet import ResNet, load_pretrained
from mvseg.models.segnet import FeatureNet, SegNet, SegNetConfig, TaskNet

__all__ = [
    "HEADS",
    "ASPPHead",
    "PlainHead",
    "PSPHead",
    "ResNet",
    "load_pretrained",
    "FeatureNet",
    "SegNet",
    "SegNetConfig",
    "TaskNet",
]
