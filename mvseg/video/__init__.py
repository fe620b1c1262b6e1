"""Compressed-video I/O over PyAV: decoding with block MVs, offset fields, H.264 encoding.

Names are imported on first use (PEP 562): `mvseg.video.decode` needs only PyAV and NumPy,
so a process that only decodes (a DataLoader worker, `mvseg bench video`'s fresh processes)
does not pay for importing torch, which the offset fields need."""

from __future__ import annotations

import importlib

_WHERE = {
    **dict.fromkeys(
        [
            "CODECS",
            "MV_CODECS",
            "DecodedFrame",
            "DecodedVideo",
            "NoMotionVectorsError",
            "VideoError",
            "VideoInfo",
            "decode_video",
            "iter_frames",
            "probe",
        ],
        "mvseg.video.decode",
    ),
    "encode_video": "mvseg.video.encode",
    **dict.fromkeys(["rasterize_mvs", "reference_distances", "iter_fields"], "mvseg.video.motion"),
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'mvseg.video' has no attribute {name!r}")
