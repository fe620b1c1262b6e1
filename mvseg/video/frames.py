"""What decoding gives: a video's header facts (`VideoInfo`), its frames (`DecodedFrame`,
`DecodedVideo`) and the error that names a video that cannot be used (`VideoError`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mvseg.video.codecs import MV_CODECS


class VideoError(ValueError):
    """A video that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class NoMotionVectorsError(VideoError):
    """The video's codec does not carry block motion vectors that FFmpeg can export."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container and the codec say about a video stream."""

    path: str
    codec: str
    width: int
    height: int
    fps: float
    num_frames: int  # as declared by the container (0 if unknown)
    pix_fmt: str
    has_b_frames: bool  # the decoder's reorder delay: B-frames *may* occur (MPEG-1/2 always say so);
    # whether they do is a fact of the stream: `DecodedFrame.pict_type`
    max_ref_frames: int | None  # H.264 SPS max_num_ref_frames; None if not H.264/unknown

    @property
    def exports_mvs(self) -> bool:
        return self.codec in MV_CODECS


@dataclass
class DecodedFrame:
    """One decoded frame in output (display) order."""

    index: int  # 0-based position in the decoder's output order
    pict_type: str  # 'I', 'P', 'B', ...
    pts: int | None
    time: float | None
    image: np.ndarray | None  # (H, W, 3) uint8 RGB, or None when rgb=False
    mvs: np.ndarray  # structured MV_DTYPE array, empty when the frame has none (raw, as FFmpeg exports)
    corrupt: bool = False  # the decoder flagged the frame corrupt (concealed errors): its MVs are not motion
    mvs_missing: bool = False  # the codec's MVs for this frame are known to be wrong (CODECS' b_frames "zero")
    rotation: int = 0  # display rotation in degrees (the display matrix), counter-clockwise
    interlaced: bool = False  # coded as two fields: its MVs move fields, not whole frames
    height: int = 0  # the decoded picture's size (the stream's: a size change mid-stream is refused)
    width: int = 0


@dataclass
class DecodedVideo:
    """A whole decoded video (use `iter_frames` for long videos)."""

    info: VideoInfo
    frames: np.ndarray  # (T, H, W, 3) uint8
    pict_types: str  # e.g. "IPPPPIPPPP"
    pts: list[int | None]
    mvs: list[np.ndarray] = field(default_factory=list)  # one structured array per frame

    def __len__(self) -> int:
        return len(self.pict_types)
