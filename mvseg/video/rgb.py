"""Decoded frames to RGB arrays, one swscale context per stream."""

from __future__ import annotations

import av
import numpy as np


class RGBConverter:
    """Decoded frames -> (H, W, 3) uint8 RGB arrays, bit-exact to PyAV's ``to_ndarray(format="rgb24")``.

    PyAV's per-frame conversion makes a new swscale context per frame with automatic slice
    threads; the thread start-up dominates at common sizes. One context for the stream, one
    thread below ~0.75 MP, swscale's threads above (where they pay); `mvseg bench video` measures
    it (docs/results.md, "Decoding").
    """

    def __init__(self, width: int, height: int):
        from av.video.reformatter import VideoReformatter

        self.reformatter = VideoReformatter()
        self.threads = 1 if width * height < 750_000 else 0  # 0: swscale picks

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        return self.reformatter.reformat(frame, format="rgb24", threads=self.threads).to_ndarray()
