"""H.264 decoded GOP by GOP in parallel: the stream cut at IDR frames, each chunk decoded by its own
decoder in a worker thread, the frames handed on in order: the same frames and MVs as one
decoder (FFmpeg releases the GIL while decoding). Used by `mvseg.video.decode.iter_frames` when
every frame's MVs are wanted; anything it cannot cut exactly falls back to one decoder."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import av
import numpy as np

from mvseg.video.h264 import has_idr
from mvseg.video.rgb import RGBConverter


class _Fallback(Exception):
    """The stream cannot be split at its keyframes exactly: decode it in one piece."""


class WorkerFrame:
    """What `mvseg.video.tally.Tally` reads of a frame decoded in a worker thread: MVs copied, the picture
    converted to RGB there (`image`) or dropped."""

    __slots__ = (
        *("width", "height", "pts", "pict_type", "side_data"),
        *("is_corrupt", "rotation", "image", "interlaced_frame"),
    )

    def __init__(self, f: av.VideoFrame, to_rgb: RGBConverter | None):
        self.width, self.height, self.pts, self.pict_type = f.width, f.height, f.pts, int(f.pict_type)
        sd = f.side_data.get("MOTION_VECTORS")
        self.side_data = {} if sd is None else {"MOTION_VECTORS": np.frombuffer(sd, dtype=np.uint8).copy()}
        self.is_corrupt, self.rotation = bool(f.is_corrupt), int(f.rotation or 0)
        self.interlaced_frame = bool(f.interlaced_frame)
        self.image = to_rgb(f) if to_rgb is not None else None


def cut_indexed(st, target: int) -> bool:
    """Whether the container's index of `st` shows a keyframe at least `target` packets after
    the start: a place `gop_parallel` could cut (short clips and single GOPs have none)."""
    for n, entry in enumerate(st.index_entries):
        if n >= target and entry.is_keyframe:
            return True
    return False


def decode_workers() -> int:
    """Threads for decoding a stream's GOPs in parallel: $MVSEG_DECODE_THREADS, else the CPUs
    this process may use (at most 4)."""
    if os.environ.get("MVSEG_DECODE_THREADS"):
        return max(1, int(os.environ["MVSEG_DECODE_THREADS"]))
    from mvseg.threads import available_cpus

    return min(available_cpus(), 4)


def decode_chunk(extradata: bytes | None, options: dict, packets: list[av.Packet], rgb: bool) -> list[WorkerFrame]:
    ctx = av.CodecContext.create("h264", "r")
    ctx.extradata = extradata
    ctx.thread_type = "SLICE"
    ctx.options = dict(options)
    to_rgb = None
    out = []
    for pk in [*packets, None]:
        for f in ctx.decode(pk):
            to_rgb = to_rgb or (RGBConverter(f.width, f.height) if rgb else None)
            out.append(WorkerFrame(f, to_rgb))
    return out


GOP_CHUNK = (32, 512)  # packets per parallel chunk: at least (a cut only at an IDR frame), at most
GOP_BUFFER = 256 << 20  # bytes of decoded RGB frames the chunks in flight may hold


def gop_parallel(
    container: av.container.InputContainer,
    st,
    options: dict,
    done: Callable[[], int],
    sequential: Callable[[], Iterator],
    rgb: bool,
) -> Iterator:
    """H.264, every frame's MVs, with every frame's RGB or none: the stream cut at IDR frames
    into chunks of `GOP_CHUNK` packets (RGB: at most `GOP_BUFFER` bytes in flight),
    each decoded by its own decoder in a worker thread (one slice-threaded decoder per chunk:
    deterministic; FFmpeg releases the GIL while decoding), frames handed on in order. Exact:
    decoding restarts at an IDR frame, and a cut is made only where no later packet shows
    before it (closed GOPs) and every packet gives one frame; anything else (open GOPs, a
    rejected packet, a corrupt frame, a stream without timestamps, GOPs longer than the largest
    chunk) falls back to `sequential`, from the start, skipping the `done()` frames already
    handed on. Bounded memory: MVs of at most workers + 1 chunks."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    workers = decode_workers()
    target, largest = GOP_CHUNK
    if rgb:
        largest = min(largest, GOP_BUFFER // ((workers + 1) * 3 * st.codec_context.width * st.codec_context.height))
    extradata = st.codec_context.extradata
    nal = (extradata[4] & 3) + 1 if extradata and extradata[0] == 1 and len(extradata) > 4 else 0
    # A decoder made from the codec alone does not see the container's display matrix: read the
    # rotation from the stream's own decoder (its first frame), then rewind
    rotation = 0
    try:
        for packet in container.demux(st):
            frames = st.decode(packet if packet.size else None)
            if frames:
                rotation = int(frames[0].rotation or 0)
                break
    except av.error.FFmpegError:
        pass  # damaged from the start: the chunks fail, and the fallback decodes it as usual
    container.seek(0)  # (flushes the decoder too)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="mvseg-gop")
    pending: deque = deque()  # (future, packets in the chunk)
    chunk: list[av.Packet] = []
    last_max: list[int] = []  # the previous chunk's last timestamp

    def submit() -> None:
        pts = [pk.pts for pk in chunk]
        if last_max and (min(pts) != pts[0] or pts[0] <= last_max[0]):
            raise _Fallback  # a packet shows before the chunk's IDR frame: an open GOP
        last_max[:] = [max(pts)]
        pending.append((pool.submit(decode_chunk, extradata, options, list(chunk), rgb), len(chunk)))
        chunk.clear()

    def take() -> list[WorkerFrame]:
        future, n = pending.popleft()
        frames = future.result()
        if len(frames) != n or any(f.is_corrupt for f in frames):
            raise _Fallback
        for f in frames:
            f.rotation = rotation
        return frames

    try:
        try:
            for packet in container.demux(st):
                if not packet.size:
                    continue
                if packet.pts is None:
                    raise _Fallback
                if chunk and len(chunk) >= target and packet.is_keyframe and has_idr(bytes(packet), nal):
                    submit()
                chunk.append(packet)
                if len(chunk) > largest:  # no IDR frame for too long (intra refresh, long GOPs)
                    raise _Fallback
                while len(pending) > workers:  # keep every worker busy, hand on the oldest
                    yield from take()
            if chunk:
                submit()
            while pending:
                yield from take()
        except (av.error.FFmpegError, _Fallback):
            for future, _ in pending:
                future.cancel()
            skip = done()
            container.seek(0)
            for k, frame in enumerate(sequential()):
                if k >= skip:
                    yield frame
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
