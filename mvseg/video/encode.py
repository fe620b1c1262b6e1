"""Encode image sequences to H.264 with libx264, with the GOP the methods need.

Datasets the project prepares use ``keyint=L:min-keyint=L:scenecut=0:bframes=0:ref=1``:
every L-th frame is an I-frame and every other MV points exactly one frame back, so the
composition of per-frame offsets (keyframe -> t) is exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def _frames_from(source: np.ndarray | Iterable[np.ndarray] | str | Path) -> Iterable[np.ndarray]:
    if isinstance(source, (str, Path)):
        from PIL import Image

        folder = Path(source)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: not a folder of images")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if not files:
            raise FileNotFoundError(f"{folder}: no PNG or JPEG images to encode")
        return (np.asarray(Image.open(f).convert("RGB")) for f in files)
    return source


def _h264_stream(
    container: av.container.OutputContainer,
    path: Path,
    h: int,
    w: int,
    fps: float,
    params: str,
    preset: str,
    crf: float | None,
    bitrate: int | None,
    tick: Fraction | None,
) -> av.video.stream.VideoStream:
    """The libx264 stream of `encode_video`, made when its first frame (h x w) arrives; `tick`:
    the time base of timed frames (None: frame-rate steps)."""
    if h % 2 or w % 2:
        raise ValueError(
            f"{path}: H.264 4:2:0 needs even frame sizes, got {w}x{h}; crop or pad "
            "the frames (and their labels) to an even size first"
        )
    stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
    if tick is not None:
        stream.codec_context.time_base = tick
    opts = {"x264-params": params, "preset": preset}
    if bitrate is not None:
        stream.bit_rate = int(bitrate)
    elif crf is not None:
        opts["crf"] = str(crf)
    stream.options = opts
    return stream


def encode_video(
    frames: np.ndarray | Iterable[np.ndarray] | str | Path,
    path: str | Path,
    *,
    gop: int = 12,
    fps: float = 30.0,
    crf: float | None = 18.0,
    bitrate: int | None = None,
    preset: str = "medium",
    bframes: int = 0,
    ref: int = 1,
    timed: bool = False,
    rotation: int | Callable[[], int] = 0,
    scenecut: int = 0,
    threads: int | None = None,
    sliced_threads: bool | None = None,
) -> Path:
    """Encode RGB frames ((T, H, W, 3) uint8, an iterable of them, or a folder of PNGs) to an
    H.264 MP4 with a fixed GOP of `gop` frames (I-frame every `gop` frames, no scene cuts).

    crf: constant quality (default 18); bitrate (bits/s) replaces it when given.
    timed: the items are (frame, seconds) pairs and each frame keeps its time (variable frame
    rate kept; a time that is missing or does not increase becomes the previous one + 1 / fps).
    rotation: display rotation in degrees, written as the stream's display matrix (a player
    shows the frames rotated; the pixels are stored as given); or a function giving it, asked when
    the first frame arrives (a source whose rotation its first decoded frame says).
    scenecut: x264's scene-cut threshold (0: off, the datasets' setting; 40 is x264's default):
    when on, an I-frame also where x264 detects a cut, `gop` is then the longest GOP.
    threads: x264's threads (None: its default; 1 makes scene-cut decisions independent of timing).
    sliced_threads: None keeps PyAV's encoder setting, slice threads: one slice per encoder thread,
    so the number of slices a frame is cut into follows the machine's cores (2 on a 2-core
    machine); False: x264's own default (frame threads, one slice a frame, as cameras and the x264
    CLI write); True: slices. Decoders can spread a frame's slices over threads, not one slice.
    The file is written to a temporary name and renamed, so a killed encode leaves no
    half-written video under `path`.
    """
    if gop < 1:
        raise ValueError(f"gop must be >= 1, got {gop}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    if scenecut < 0:
        raise ValueError(f"scenecut must be >= 0, got {scenecut}")
    min_keyint = 1 if scenecut else gop  # an I-frame at a cut however soon after the last one
    params = f"keyint={gop}:min-keyint={min_keyint}:scenecut={scenecut}:bframes={bframes}:ref={ref}"
    if threads is not None:
        params += f":threads={threads}"
    if sliced_threads is not None:
        params += f":sliced-threads={int(sliced_threads)}"
    container = av.open(str(tmp), mode="w", format="mp4")
    n = 0
    tick = Fraction(1, 90000)  # the MP4 video clock: any frame time to 11 us
    last_pts = None
    try:
        stream = None
        for item in _frames_from(frames):
            img, when = item if timed else (item, None)
            img = np.ascontiguousarray(img)
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"{path}: frames must be (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}")
            if stream is None:
                h, w = img.shape[:2]
                stream = _h264_stream(container, path, h, w, fps, params, preset, crf, bitrate, tick if timed else None)
                degrees = (rotation() if callable(rotation) else rotation) % 360
                if degrees:
                    stream.set_display_rotation(degrees)
                size = (h, w)
            elif img.shape[:2] != size:
                raise ValueError(f"{path}: frame {n} is {img.shape[:2]}, expected {size}")
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if timed:
                step = round(1 / (fps * tick)) if fps > 0 else 3000
                pts = round(when / tick) if when is not None and math.isfinite(when) else None
                if pts is None or (last_pts is not None and pts <= last_pts):
                    pts = 0 if last_pts is None else last_pts + step
                frame.pts, frame.time_base, last_pts = pts, tick, pts
            for packet in stream.encode(frame):
                container.mux(packet)
            n += 1
        if stream is None:
            raise ValueError(f"{path}: no frames to encode")
        for packet in stream.encode():
            container.mux(packet)
    except BaseException:
        container.close()
        tmp.unlink(missing_ok=True)
        raise
    container.close()
    tmp.replace(path)
    return path


def remux(
    src: str | Path,
    dst: str | Path,
    fmt: str | None = None,
    options: dict | None = None,
    edit: Callable[[int, av.Packet], None] | None = None,
    metadata: dict | None = None,
) -> Path:
    """Copy the video packets of `src` into the container `dst` (format `fmt`, muxer
    `options`, container tags `metadata`), without re-encoding; `edit(k, packet)` may change
    each packet first (tests and the fuzzer make raw streams, moved indexes and bad timestamps
    this way)."""
    with av.open(str(src)) as i, av.open(str(dst), "w", format=fmt, options=options or {}) as o:
        o.metadata.update(metadata or {})
        ist = i.streams.video[0]
        ost = o.add_stream_from_template(ist)
        for k, pkt in enumerate(i.demux(ist)):
            if pkt.dts is None:  # the demuxer's flush packet
                continue
            if edit is not None:
                edit(k, pkt)
            pkt.stream = ost
            o.mux(pkt)
    return Path(dst)
