"""Keyframe policies: which frames of a stream go through the full network."""

from __future__ import annotations

from abc import ABC, abstractmethod


class KeyframePolicy(ABC):
    """Decides per frame, in stream order, whether it is a keyframe."""

    def reset(self) -> None:
        """Start of a new stream (stateless policies need nothing)."""

    @abstractmethod
    def is_key(self, index: int, pict_type: str) -> bool:
        """Whether frame `index` (0-based in the stream) of picture type `pict_type` is a keyframe."""


class FixedInterval(KeyframePolicy):
    """Every L-th frame (0, L, 2L, ...) is a keyframe (DFF, Jain & Gonzalez, AR-Seg)."""

    def __init__(self, interval: int):
        if interval < 1:
            raise ValueError(f"keyframe interval must be >= 1, got {interval}")
        self.interval = interval

    def is_key(self, index: int, pict_type: str) -> bool:
        return index % self.interval == 0


class IFrames(KeyframePolicy):
    """The stream's own I-frames are the keyframes (and the first frame, whatever its type)."""

    def is_key(self, index: int, pict_type: str) -> bool:
        return index == 0 or pict_type in ("I", "i")


def make_policy(name: str, interval: int) -> KeyframePolicy:
    if name == "fixed":
        return FixedInterval(interval)
    if name == "iframes":
        return IFrames()
    raise ValueError(f"unknown keyframe policy {name!r}; choose 'fixed' or 'iframes'")
