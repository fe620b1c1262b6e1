"""One LightningModule per method, on the shared SegStrategy base."""

from mvseg.strategies.base import OptimConfig, SegStrategy
from mvseg.strategies.per_frame import PerFrame
from mvseg.strategies.policies import FixedInterval, IFrames, KeyframePolicy, make_policy

__all__ = ["OptimConfig", "SegStrategy", "PerFrame", "FixedInterval", "IFrames", "KeyframePolicy", "make_policy"]
