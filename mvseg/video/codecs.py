"""The codecs mvseg knows and what FFmpeg exports of their motion: one row per codec (`CODECS`),
the raw MV record FFmpeg exports (`MV_DTYPE`) and the picture-type letters.

The mpegvideo family (MPEG-1/2/4, H.263 and its relatives) and H.264 export MVs; HEVC, VP8/9 and
AV1 decoders in FFmpeg export none. tests/video/test_codecs.py encodes each codec that has an
encoder and checks its row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CodecMotion:
    """What the FFmpeg that PyAV bundles exports of one codec's motion (tests/video/test_codecs.py
    encodes each codec that has an encoder and checks the row)."""

    codec: str  # FFmpeg's canonical codec name (what `VideoInfo.codec` says)
    exports: bool  # AV_FRAME_DATA_MOTION_VECTORS side data on inter frames
    b_frames: (
        str  # "approximate": exported, reference not named; "zero": exported all-zero (missing); "none": no B-frames
    )
    encoder: str | None  # FFmpeg encoder the tests make a file with (None: decode only, untested)
    note: str = ""


# One row per codec mvseg knows. The mpegvideo family (MPEG-1/2/4, H.263 and its relatives) and
# H.264 export MVs; HEVC, VP8/9 and AV1 decoders in FFmpeg export none.
CODECS: dict[str, CodecMotion] = {
    c.codec: c
    for c in (
        CodecMotion("h264", True, "approximate", "libx264"),
        CodecMotion(
            "mpeg4",
            True,
            "zero",
            "mpeg4",
            "MPEG-4 Part 2 (Xvid/DivX) B-frames: this FFmpeg exports their MVs as all zero (FFmpeg 5.1 "
            "exported them), so mvseg treats them as missing motion and gives each B-frame the next "
            "I/P frame's per-frame motion (constant velocity)",
        ),
        CodecMotion("mpeg2video", True, "approximate", "mpeg2video"),
        CodecMotion("mpeg1video", True, "approximate", "mpeg1video"),
        CodecMotion("h263", True, "none", "h263"),
        CodecMotion("h263p", True, "none", "h263p"),
        CodecMotion("h261", True, "none", "h261"),
        CodecMotion("flv1", True, "none", "flv", "Sorenson Spark (Flash video): H.263-based"),
        CodecMotion("wmv1", True, "none", "wmv1"),
        CodecMotion("wmv2", True, "none", "wmv2"),
        CodecMotion("msmpeg4v2", True, "none", "msmpeg4v2"),
        CodecMotion("msmpeg4v3", True, "none", "msmpeg4", "DivX 3"),
        CodecMotion("rv10", True, "none", "rv10", "RealVideo 1"),
        CodecMotion("rv20", True, "none", "rv20", "RealVideo 2"),
        CodecMotion("hevc", False, "none", None, "FFmpeg's HEVC decoder does not export motion vectors"),
        CodecMotion("vp8", False, "none", "libvpx", "FFmpeg's VP8 decoder does not export motion vectors"),
        CodecMotion("vp9", False, "none", "libvpx-vp9", "FFmpeg's VP9 decoder does not export motion vectors"),
        CodecMotion("av1", False, "none", None, "FFmpeg's AV1 decoders do not export motion vectors"),
        CodecMotion("mjpeg", False, "none", "mjpeg", "intra-only codec: every frame is a still picture, no motion"),
    )
}
MV_CODECS = frozenset(c.codec for c in CODECS.values() if c.exports)


def no_mvs_reason(codec: str) -> str:
    """Why a codec's video cannot give mvseg motion, in words (for the error a user sees)."""
    row = CODECS.get(codec)
    why = row.note if row is not None and row.note else f"FFmpeg exports none for '{codec}'"
    return f"codec '{codec}' carries no block motion vectors mvseg can use ({why})"


# The structured dtype of FFmpeg's AVMotionVector as PyAV returns it (used for empty arrays).
MV_DTYPE = np.dtype(
    {
        "names": [
            "source",
            "w",
            "h",
            "src_x",
            "src_y",
            "dst_x",
            "dst_y",
            "flags",
            "motion_x",
            "motion_y",
            "motion_scale",
        ],
        "formats": ["<i4", "u1", "u1", "<i2", "<i2", "<i2", "<i2", "<u8", "<i4", "<i4", "<u2"],
        "offsets": [0, 4, 5, 6, 8, 10, 12, 16, 24, 28, 32],
        "itemsize": 40,
        "aligned": True,
    }
)

# av_get_picture_type_char: AVPictureType enum value -> letter.
PICT_CHARS = {0: "?", 1: "I", 2: "P", 3: "B", 4: "S", 5: "i", 6: "p", 7: "b"}
