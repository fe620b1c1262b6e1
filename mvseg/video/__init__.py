"""Compressed-video I/O over PyAV: decoding with block MVs, offset fields, H.264 encoding."""

from mvseg.video.decode import (
    MV_CODECS,
    DecodedFrame,
    DecodedVideo,
    NoMotionVectorsError,
    VideoError,
    VideoInfo,
    decode_video,
    iter_frames,
    probe,
)
from mvseg.video.encode import encode_video
from mvseg.video.motion import rasterize_mvs, reference_distances

__all__ = [
    "MV_CODECS", "DecodedFrame", "DecodedVideo", "NoMotionVectorsError", "VideoError", "VideoInfo",
    "decode_video", "iter_frames", "probe", "encode_video", "rasterize_mvs", "reference_distances",
]
