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
from mvseg.video.motion import compose, grid_size, invert, rasterize_mvs, resize_field, to_feature_grid

__all__ = [
    "MV_CODECS", "DecodedFrame", "DecodedVideo", "NoMotionVectorsError", "VideoError", "VideoInfo",
    "decode_video", "iter_frames", "probe", "encode_video", "compose", "grid_size", "invert",
    "rasterize_mvs", "resize_field", "to_feature_grid",
]
