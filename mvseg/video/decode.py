"""Decode compressed video with PyAV: frames, picture types, timestamps and raw block MVs.

FFmpeg exports the encoder's motion vectors as `AV_FRAME_DATA_MOTION_VECTORS` side data
when the decoder is opened with ``flags2=+export_mvs`` (see docs/conventions.md for the
facts verified here). We read them as one structured array per frame
(``side_data.to_ndarray()``), never MV by MV in Python.

Threading: frame-threaded decoding makes exported MVs non-deterministic (frames lose their
MVs), so a decoder that exports MVs is opened with slice threading; parallelism comes instead
from whole GOPs decoded by separate decoders (`mvseg.video.gop`: the same MVs as one decoder).
Without MVs (a per-frame model) frame threads are used.

The pieces by concept: the codec table (`mvseg.video.codecs`), H.264 bitstream facts
(`mvseg.video.h264`), GOP-parallel decoding (`mvseg.video.gop`), RGB conversion
(`mvseg.video.rgb`); here: opening a video once (`VideoReader`), the frame-by-frame pass and its
bookkeeping (`mvseg.video.tally`: sizes, timestamps, picture types, MVs, damage, said once at the end).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import av
import numpy as np

from mvseg.video import gop
from mvseg.video.codecs import CODECS, MV_CODECS, MV_DTYPE, CodecMotion, no_mvs_reason
from mvseg.video.frames import DecodedFrame, DecodedVideo, NoMotionVectorsError, VideoError, VideoInfo
from mvseg.video.gop import WorkerFrame, cut_indexed, decode_workers, gop_parallel
from mvseg.video.h264 import h264_max_ref_frames
from mvseg.video.rgb import RGBConverter
from mvseg.video.tally import Tally, check_motion, decoder_options, sequential

# the codec table and the converter are part of this module's interface (re-exported)
__all__ = [
    "CODECS",
    "MV_CODECS",
    "MV_DTYPE",
    "CodecMotion",
    "DecodedFrame",
    "DecodedVideo",
    "NoMotionVectorsError",
    "RGBConverter",
    "VideoError",
    "VideoInfo",
    "VideoReader",
    "decode_video",
    "display_rotation",
    "h264_max_ref_frames",
    "iter_frames",
    "no_mvs_reason",
    "probe",
]


# ----------------------------------------------------------------------------- opening


def _open(path: str | Path) -> tuple[av.container.InputContainer, Path]:
    p = Path(path)
    if not p.exists():
        raise VideoError(p, "no such file")
    if p.is_dir():
        raise VideoError(p, "is a directory, not a video file")
    if p.stat().st_size == 0:
        raise VideoError(p, "empty file (0 bytes)")
    try:
        # metadata_errors: a corrupt title or tag is not a reason to refuse the frames (found by
        # mvseg fuzz: bytes that are not UTF-8 in a tag raised UnicodeDecodeError)
        container = av.open(str(p), mode="r", metadata_errors="replace")
    except av.error.FFmpegError as e:
        raise VideoError(p, f"not a readable video container ({e.strerror or e})") from e
    if not container.streams.video:
        kinds = ", ".join(s.type for s in container.streams) or "none"
        container.close()
        raise VideoError(p, f"has no video stream (streams: {kinds})")
    if container.streams.video[0].codec_context is None:  # found by mvseg fuzz: a codec id with no decoder
        st = container.streams.video[0]
        name = getattr(getattr(st, "codec", None), "name", None) or "unknown"
        container.close()
        raise VideoError(p, f"video stream has a codec FFmpeg cannot decode ({name}; corrupt header?)")
    return container, p


def _info(container: av.container.InputContainer, p: Path) -> VideoInfo:
    st = container.streams.video[0]
    cc = st.codec_context
    rate = st.average_rate or st.guessed_rate or 0
    codec = cc.codec.canonical_name if cc.codec is not None else cc.name  # 'av1', not the decoder 'libdav1d'
    return VideoInfo(
        path=str(p),
        codec=codec,
        width=int(cc.width),
        height=int(cc.height),
        fps=float(rate) if rate else 0.0,
        num_frames=int(st.frames or 0),
        pix_fmt=str(cc.pix_fmt),
        has_b_frames=bool(getattr(cc, "has_b_frames", 0)),
        max_ref_frames=h264_max_ref_frames(cc.extradata) if codec == "h264" else None,
    )


class VideoReader:
    """One video opened once: `info` from its container and codec headers, then one pass over
    its frames (`frames`). `probe` and `iter_frames` open their own; a command that needs both
    (`mvseg predict`) opens one reader and hands it on. A context manager; the pass closes it.

    need_size: refuse a stream whose headers give no frame size (what `probe` promises)."""

    def __init__(self, path: str | Path, need_size: bool = False):
        self.container, self.path = _open(path)
        try:
            self.info = _info(self.container, self.path)
        except BaseException:
            self.container.close()
            raise
        if need_size and (self.info.width <= 0 or self.info.height <= 0):
            self.container.close()
            raise VideoError(self.path, "video stream has no valid frame size (header-only or corrupt file)")
        self._read = False

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def frames(
        self,
        *,
        mvs: bool = True,
        rgb: bool | Callable[[int, str], bool] = True,
        strict_mvs: bool = True,
        prefetch: int = 0,
    ) -> Iterator[DecodedFrame]:
        """The frames, as `iter_frames` describes (one pass: a reader is read once)."""
        if self._read:
            raise RuntimeError(f"{self.path}: a VideoReader is read once; open the video again")
        self._read = True
        frames = _decode(self, mvs, rgb, strict_mvs)
        if prefetch > 0:
            frames = _ahead(frames, prefetch)
        to_rgb = None
        for frame, picture in frames:
            if isinstance(picture, WorkerFrame):  # decoded and converted in a worker thread
                frame.image = picture.image
            elif picture is not None:
                to_rgb = to_rgb or RGBConverter(picture.width, picture.height)
                frame.image = to_rgb(picture)
            del picture
            yield frame


def probe(path: str | Path) -> VideoInfo:
    """Read the container and codec headers (no decoding)."""
    with VideoReader(path, need_size=True) as reader:
        return reader.info


def display_rotation(path: str | Path) -> int:
    """The display rotation of a video in degrees (its display matrix; 0 when it has none),
    read from the first decoded frame, where FFmpeg puts it."""
    for f in iter_frames(path, mvs=False, rgb=False):
        return f.rotation
    return 0


def iter_frames(
    path: str | Path | VideoReader,
    *,
    mvs: bool = True,
    rgb: bool | Callable[[int, str], bool] = True,
    strict_mvs: bool = True,
    prefetch: int = 0,
) -> Iterator[DecodedFrame]:
    """Decode a video frame by frame (bounded memory), in the decoder's output order.

    prefetch: decode up to this many frames ahead in a background thread (0: none), while the
    caller works on the current one (rasterises its MVs, runs a network) and this thread
    converts its pixels to RGB: FFmpeg's decoding and swscale release the GIL, so on two cores
    the decoding hides behind the caller's work (`mvseg bench video`). Same frames, same MVs.

    mvs: export block motion vectors (raises NoMotionVectorsError for codecs without them
    when strict_mvs). rgb: convert each frame to an (H, W, 3) uint8 RGB array; or a function
    of (index, picture type) saying which frames to convert (the YUV -> RGB conversion is
    about half of the decoding time: a stream that needs only some frames' pixels skips it).

    Damaged input loses only what is damaged: a packet the decoder rejects is skipped (the
    frames after it decode, concealed, until the next keyframe), a frame the decoder flags
    corrupt comes out with ``corrupt=True``, and a stream that ends early ends where it ends;
    one warning at the end says what happened and where. A read error of the container after
    some frames ends the stream with `VideoError` once every decodable frame has been yielded.

    path: a file, or a `VideoReader` already open on one (read once).
    """
    reader = path if isinstance(path, VideoReader) else VideoReader(path)
    yield from reader.frames(mvs=mvs, rgb=rgb, strict_mvs=strict_mvs, prefetch=prefetch)


def _ahead(items: Iterator, depth: int) -> Iterator:
    """`items`, produced `depth` ahead by a background thread (which owns the generator: it
    runs, and on an early stop closes, it); its exceptions re-raised here, in order."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def work() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.05)
                        break
                    except queue.Full:
                        continue
                del item
                if stop.is_set():
                    break
            else:
                q.put((end, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put((end, e))
        finally:
            items.close()

    thread = threading.Thread(target=work, name="mvseg-decode", daemon=True)
    thread.start()
    try:
        while True:
            item, error = q.get()
            if item is end:
                if error is not None:
                    raise error
                return
            yield item
            del item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a put, then wait for the thread to close the file
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


# ----------------------------------------------------------------------------- the pass


def _decode(
    reader: VideoReader, mvs: bool, rgb: bool | Callable[[int, str], bool], strict_mvs: bool
) -> Iterator[tuple[DecodedFrame, av.VideoFrame | WorkerFrame | None]]:
    """`iter_frames`' decoding: each frame with its MVs, and its decoded picture when its
    pixels are wanted (converted to RGB by the caller)."""
    container, p, info = reader.container, reader.path, reader.info
    try:
        st = container.streams.video[0]
        check_motion(p, info, mvs, strict_mvs)
        options = decoder_options(st, mvs, rgb)
        tally = Tally(p, info, st, mvs)
        try:
            # PyAV's frame <-> side-data container is a reference cycle: a frame whose side
            # data was read is freed only by the cyclic GC, and PyAV still holds the newest
            # frame whenever we could collect, so any collection moves it to an older
            # generation, where it stays until a full collection (1 frame in 8 piled up, GBs
            # over a long 1080p video). A full collection is slow with torch loaded, but cheap
            # over the objects created after a gc.freeze(): freeze what exists now, collect
            # fully after every 4th frame's side data is read (the frames before it are
            # garbage by then: Tally._motion), unfreeze at the end. (in both modes: the final
            # collection below then stays cheap)
            gc.freeze()
            # every frame's MVs, and every frame's pixels or none: whole GOPs decoded in parallel
            # (a file whose index shows a place to cut: one GOP or a short clip has nothing to
            # share out, and the path rewinds to the start, which a raw stream cannot)
            one_decoder = partial(sequential, container, st, tally)
            parallel = (
                mvs
                and isinstance(rgb, bool)
                and info.codec == "h264"
                and decode_workers() > 1
                and cut_indexed(st, gop.GOP_CHUNK[0])
            )
            if parallel:
                source = gop_parallel(container, st, options, lambda: tally.index, one_decoder, rgb)
            else:
                source = one_decoder()
            for frame in source:
                out = tally.frame(frame)
                picture = frame if (rgb(out.index, out.pict_type) if callable(rgb) else rgb) else None
                del frame
                yield out, picture
                del picture
                tally.index += 1
        except av.error.FFmpegError as e:  # not the decoder's per-packet errors (handled in tally.sequential)
            tally.stopped = f"decoding failed after frame {tally.index} ({e.strerror or e})"
        tally.finish(container, st)
    finally:
        container.close()
        # The last frames' cycles die here, in this process: left for a later collection,
        # one could run in a DataLoader worker forked meanwhile, where freeing a frame's
        # swscale context waits forever on the parent's slice threads (a deadlock we hit).
        gc.collect()
        gc.unfreeze()


def decode_video(path: str | Path, *, mvs: bool = True, rgb: bool = True) -> DecodedVideo:
    """Decode a whole video into memory (frames, picture types, pts and raw MVs)."""
    info = probe(path)
    frames, types, pts, mv_list = [], [], [], []
    for f in iter_frames(path, mvs=mvs, rgb=rgb):
        if rgb:
            frames.append(f.image)
        types.append(f.pict_type)
        pts.append(f.pts)
        mv_list.append(f.mvs)
    stack = np.stack(frames) if frames else np.zeros((0, info.height, info.width, 3), np.uint8)
    return DecodedVideo(info=info, frames=stack, pict_types="".join(types), pts=pts, mvs=mv_list)
