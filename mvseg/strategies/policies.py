"""Keyframe policies: which frames of a stream go through the full network."""

from __future__ import annotations

from abc import ABC, abstractmethod


class KeyframePolicy(ABC):
    """Decides per frame, in stream order, whether it is a keyframe."""

    #: True when the decision reads the frame's content: the runtime then asks the strategy for
    #: the predicted deviation from the last keyframe (`SegStrategy.stream_deviation`) first.
    needs_deviation: bool = False

    def reset(self) -> None:
        """Start of a new stream (stateless policies need nothing)."""

    @abstractmethod
    def is_key(self, index: int, pict_type: str, deviation: float | None = None) -> bool:
        """Whether frame `index` (0-based in the stream) of picture type `pict_type` is a
        keyframe; `deviation` is given to content policies (None: no keyframe yet)."""


class FixedInterval(KeyframePolicy):
    """Every L-th frame (0, L, 2L, ...) is a keyframe (DFF, Jain & Gonzalez, AR-Seg)."""

    def __init__(self, interval: int):
        if interval < 1:
            raise ValueError(f"keyframe interval must be >= 1, got {interval}")
        self.interval = interval

    def is_key(self, index: int, pict_type: str, deviation: float | None = None) -> bool:
        return index % self.interval == 0


class IFrames(KeyframePolicy):
    """The stream's own I-frames are the keyframes (and the first frame, whatever its type)."""

    def is_key(self, index: int, pict_type: str, deviation: float | None = None) -> bool:
        return index == 0 or pict_type in ("I", "i")


class AdaptiveThreshold(KeyframePolicy):
    """Li et al. (CVPR 2018, Sec. 3.2): a new keyframe when the predicted deviation of the
    frame's segmentation from the last keyframe's exceeds `threshold`. Deviations lie in
    (0, 1): a threshold of 0 makes every frame a keyframe, one of 1 or more none after the first."""

    needs_deviation = True

    def __init__(self, threshold: float):
        if not threshold >= 0:
            raise ValueError(f"deviation threshold must be >= 0, got {threshold}")
        self.threshold = threshold

    def is_key(self, index: int, pict_type: str, deviation: float | None = None) -> bool:
        return deviation is None or deviation > self.threshold


POLICIES = ("fixed", "iframes", "adaptive")


def make_policy(name: str, interval: int, threshold: float | None = None) -> KeyframePolicy:
    """A policy by name; "adaptive" needs the deviation `threshold` (and a strategy with a
    deviation predictor)."""
    if name == "fixed":
        return FixedInterval(interval)
    if name == "iframes":
        return IFrames()
    if name == "adaptive":
        if threshold is None:
            raise ValueError("the adaptive keyframe policy needs a deviation threshold")
        return AdaptiveThreshold(threshold)
    raise ValueError(f"unknown keyframe policy {name!r}; choose one of {POLICIES}")
