"""One LightningModule per method, on the shared SegStrategy base."""

from mvseg.strategies.adaptive import Adaptive, AdaptiveConfig
from mvseg.strategies.arseg import ARSeg
from mvseg.strategies.base import OptimConfig, SegStrategy
from mvseg.strategies.bdnet import BDNet
from mvseg.strategies.dff import DFF
from mvseg.strategies.flow_pretrain import FlowPretrain
from mvseg.strategies.interp_mv import InterpMV
from mvseg.strategies.per_frame import PerFrame
from mvseg.strategies.policies import AdaptiveThreshold, FixedInterval, IFrames, KeyframePolicy, make_policy
from mvseg.strategies.prop_mv import PropMV

__all__ = [
    "OptimConfig",
    "SegStrategy",
    "PerFrame",
    "PropMV",
    "InterpMV",
    "DFF",
    "FlowPretrain",
    "ARSeg",
    "BDNet",
    "Adaptive",
    "AdaptiveConfig",
    "AdaptiveThreshold",
    "FixedInterval",
    "IFrames",
    "KeyframePolicy",
    "make_policy",
]
