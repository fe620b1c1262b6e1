"""Keyframe policies: which frames of a stream go through the full network."""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor


class KeyframePolicy(ABC):
    """Decides per frame, in stream order, whether it is a keyframe."""

    #: True when the decision reads the frame's content: the runtime then asks the strategy for
    #: the predicted deviation from the last keyframe (`SegStrategy.stream_deviation`) first.
    needs_deviation: bool = False
    #: True when the decision reads the frame's block motion: the runtime then decodes it for
    #: any strategy and calls `observe` with each frame's field before `is_key`.
    needs_motion: bool = False

    def reset(self) -> None:
        """Start of a new stream (stateless policies need nothing)."""

    def may_be_key(self, index: int, pict_type: str) -> bool:
        """Whether frame `index` may become a keyframe, known before it is decoded (pure: no
        state changes). The runtime converts only such frames' pixels for a strategy that reads
        none of a non-keyframe's; the decision itself is `is_key`'s. True unless the policy
        decides from the frame's place alone."""
        return True

    def observe(self, offset: Tensor | None, mask: Tensor | None) -> None:
        """The frame's offset field to the previous frame (1, 2, Hc, Wc) and its mask (1, Hc, Wc),
        given before `is_key` to policies that need motion (None for the first frame)."""

    def taken(self, index: int, is_key: bool) -> None:
        """The decision that stood for frame `index` (a strategy may override `is_key`'s, e.g.
        Adaptive's fast track while its slow track is busy)."""

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

    def may_be_key(self, index: int, pict_type: str) -> bool:
        return self.is_key(index, pict_type)


class IFrames(KeyframePolicy):
    """The stream's own I-frames are the keyframes (and the first frame, whatever its type)."""

    def is_key(self, index: int, pict_type: str, deviation: float | None = None) -> bool:
        return index == 0 or pict_type in ("I", "i")

    def may_be_key(self, index: int, pict_type: str) -> bool:
        return self.is_key(index, pict_type)


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


class MotionCoverage(KeyframePolicy):
    """A new keyframe when more than `threshold` of the frame cannot be brought from the last
    keyframe by its block motion: the share of MV cells whose chain back to the keyframe breaks
    (an intra region wider than the intra-block rule fills, a P-frame that is mostly intra, a
    vector that leaves the frame), from the bitstream alone.
    Our policy, not a paper's, with no network: Li et al.'s deviation also counts label changes
    that motion explains (a steady pan); new content (a scene cut, a sharp turn, a lorry entering)
    is what motion cannot bring. Measured on the uneven synthetic clips it takes less of the
    hindsight headroom than Li et al.'s predicted deviation (docs/results.md). `max_interval`
    caps the gap."""

    needs_motion = True

    def __init__(self, threshold: float, max_interval: int | None = None):
        if not 0 <= threshold <= 1:
            raise ValueError(f"motion coverage threshold must be in [0, 1], got {threshold}")
        if max_interval is not None and max_interval < 1:
            raise ValueError(f"max_interval must be >= 1, got {max_interval}")
        self.threshold, self.max_interval = threshold, max_interval
        self.reset()

    def reset(self) -> None:
        self._chain: tuple[Tensor, Tensor] | None = None  # t -> last keyframe, composed
        self._last: int | None = None  # the last keyframe's index (None: no keyframe yet)
        self.uncovered = 0.0

    def observe(self, offset: Tensor | None, mask: Tensor | None) -> None:
        from mvseg.ops.fields import extend_chain

        if offset is None or self._last is None:
            return
        self._chain = extend_chain(self._chain, offset, mask)
        self.uncovered = 1.0 - float(self._chain[1].float().mean())

    def is_key(self, index: int, pict_type: str, deviation: float | None = None) -> bool:
        if self._last is None:
            return True
        if self.max_interval is not None and index - self._last >= self.max_interval:
            return True
        return self.uncovered > self.threshold

    def taken(self, index: int, is_key: bool) -> None:
        if is_key:
            self._chain, self._last, self.uncovered = None, index, 0.0


#: the policies by their config name (`keyframe_policy`, `mvseg predict --policy`)
POLICY_CLASSES: dict[str, type[KeyframePolicy]] = {
    "fixed": FixedInterval,
    "iframes": IFrames,
    "adaptive": AdaptiveThreshold,
    "coverage": MotionCoverage,
}
POLICIES = tuple(POLICY_CLASSES)


def make_policy(name: str, interval: int, threshold: float | None = None) -> KeyframePolicy:
    """A policy by name; "adaptive" needs the deviation `threshold` (and a strategy with a
    deviation predictor), "coverage" the uncovered share `threshold` (MotionCoverage)."""
    if name == "fixed":
        return FixedInterval(interval)
    if name == "iframes":
        return IFrames()
    if name == "adaptive":
        if threshold is None:
            raise ValueError("the adaptive keyframe policy needs a deviation threshold")
        return AdaptiveThreshold(threshold)
    if name == "coverage":
        if threshold is None:
            raise ValueError(
                "the coverage keyframe policy needs a threshold (the share of the frame motion cannot bring)"
            )
        return MotionCoverage(threshold)
    raise ValueError(f"unknown keyframe policy {name!r}; choose one of {POLICIES}")
