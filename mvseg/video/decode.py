"""Decode compressed video with PyAV: frames, picture types, timestamps and raw block MVs.

FFmpeg exports the encoder's motion vectors as `AV_FRAME_DATA_MOTION_VECTORS` side data
when the decoder is opened with ``flags2=+export_mvs`` (see docs/conventions.md for the
facts verified here). We read them as one structured array per frame
(``side_data.to_ndarray()``), never MV by MV in Python.

Threading: frame-threaded decoding makes exported MVs non-deterministic (frames lose their
MVs), so a decoder that exports MVs is opened with slice threading; parallelism comes instead
from whole GOPs decoded by separate decoders (`_gop_parallel`: the same MVs as one decoder).
Without MVs (a per-frame model) frame threads are used.

The codecs mvseg knows, and what their MVs are worth with the FFmpeg PyAV bundles: `CODECS`.
"""

from __future__ import annotations

import gc
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
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
_PICT_CHARS = {0: "?", 1: "I", 2: "P", 3: "B", 4: "S", 5: "i", 6: "p", 7: "b"}


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


# ----------------------------------------------------------------------------- H.264 SPS


class _BitReader:
    """Exp-Golomb bit reader over an RBSP (emulation-prevention bytes removed)."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def u(self, n: int) -> int:
        v = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3]
            v = (v << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return v

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("invalid exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _rbsp(nal: bytes) -> bytes:
    out = bytearray()
    zeros = 0
    for b in nal:
        if zeros >= 2 and b == 3:
            zeros = 0
            continue
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def _sps_nals(extradata: bytes) -> list[bytes]:
    """SPS NAL units from avcC (MP4) or Annex-B extradata."""
    if not extradata:
        return []
    if extradata[0] == 1 and len(extradata) > 7:  # avcC
        n_sps = extradata[5] & 0x1F
        pos, out = 6, []
        for _ in range(n_sps):
            size = int.from_bytes(extradata[pos : pos + 2], "big")
            out.append(extradata[pos + 2 : pos + 2 + size])
            pos += 2 + size
        return out
    parts = extradata.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01").split(b"\x00\x00\x01")
    return [p for p in parts if p and (p[0] & 0x1F) == 7]


def h264_max_ref_frames(extradata: bytes | None) -> int | None:
    """Parse `max_num_ref_frames` from the first H.264 SPS (ITU-T H.264 7.3.2.1.1)."""
    for nal in _sps_nals(extradata or b""):
        try:
            r = _BitReader(_rbsp(nal[1:]))
            profile_idc = r.u(8)
            r.u(16)  # constraint flags + level_idc
            r.ue()  # seq_parameter_set_id
            if profile_idc in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
                chroma_format_idc = r.ue()
                if chroma_format_idc == 3:
                    r.u(1)
                r.ue(), r.ue()  # bit depths
                r.u(1)  # qpprime_y_zero_transform_bypass_flag
                if r.u(1):  # seq_scaling_matrix_present_flag
                    for i in range(8 if chroma_format_idc != 3 else 12):
                        if r.u(1):
                            last, nxt = 8, 8
                            for _ in range(16 if i < 6 else 64):
                                if nxt != 0:
                                    nxt = (last + r.se() + 256) % 256
                                last = nxt or last
            r.ue()  # log2_max_frame_num_minus4
            poc_type = r.ue()
            if poc_type == 0:
                r.ue()
            elif poc_type == 1:
                r.u(1), r.se(), r.se()
                for _ in range(r.ue()):
                    r.se()
            return r.ue()
        except (IndexError, ValueError):
            continue
    return None


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


def probe(path: str | Path) -> VideoInfo:
    """Read the container and codec headers (no decoding)."""
    container, p = _open(path)
    try:
        info = _info(container, p)
    finally:
        container.close()
    if info.width <= 0 or info.height <= 0:
        raise VideoError(p, "video stream has no valid frame size (header-only or corrupt file)")
    return info


class RGBConverter:
    """Decoded frames -> (H, W, 3) uint8 RGB arrays, bit-exact to PyAV's ``to_ndarray(format="rgb24")``.

    PyAV's per-frame conversion makes a new swscale context per frame with automatic slice
    threads; the thread start-up dominates at common sizes (640x360: 0.40 ms of a frame's
    0.10 ms of work). One context for the stream, one thread below ~0.75 MP, swscale's threads
    above (where they pay: 1280x720 0.34 vs 0.41 ms); `mvseg bench video` measures it.
    """

    def __init__(self, width: int, height: int):
        from av.video.reformatter import VideoReformatter

        self.reformatter = VideoReformatter()
        self.threads = 1 if width * height < 750_000 else 0  # 0: swscale picks

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        return self.reformatter.reformat(frame, format="rgb24", threads=self.threads).to_ndarray()


def display_rotation(path: str | Path) -> int:
    """The display rotation of a video in degrees (its display matrix; 0 when it has none),
    read from the first decoded frame, where FFmpeg puts it."""
    for f in iter_frames(path, mvs=False, rgb=False):
        return f.rotation
    return 0


def iter_frames(
    path: str | Path,
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
    """
    frames = _decode(path, mvs, rgb, strict_mvs)
    if prefetch > 0:
        frames = _ahead(frames, prefetch)
    to_rgb = None
    for frame, picture in frames:
        if isinstance(picture, _Decoded):  # decoded and converted in a worker thread
            frame.image = picture.image
        elif picture is not None:
            to_rgb = to_rgb or RGBConverter(picture.width, picture.height)
            frame.image = to_rgb(picture)
        del picture
        yield frame


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


class _Fallback(Exception):
    """The stream cannot be split at its keyframes exactly: decode it in one piece."""


class _Decoded:
    """What `_decode` reads of a frame decoded in a worker thread: MVs copied, the picture
    converted to RGB there (`image`) or dropped."""

    __slots__ = ("width", "height", "pts", "pict_type", "side_data", "is_corrupt", "rotation", "image")

    def __init__(self, f: av.VideoFrame, to_rgb: RGBConverter | None):
        self.width, self.height, self.pts, self.pict_type = f.width, f.height, f.pts, int(f.pict_type)
        sd = f.side_data.get("MOTION_VECTORS")
        self.side_data = {} if sd is None else {"MOTION_VECTORS": np.frombuffer(sd, dtype=np.uint8).copy()}
        self.is_corrupt, self.rotation = bool(f.is_corrupt), int(f.rotation or 0)
        self.image = to_rgb(f) if to_rgb is not None else None


def _cut_indexed(st, target: int) -> bool:
    """Whether the container's index of `st` shows a keyframe at least `target` packets after
    the start: a place `_gop_parallel` could cut (short clips and single GOPs have none)."""
    for n, entry in enumerate(st.index_entries):
        if n >= target and entry.is_keyframe:
            return True
    return False


def _decode_workers() -> int:
    """Threads for decoding a stream's GOPs in parallel: $MVSEG_DECODE_THREADS, else the CPUs
    this process may use (at most 4)."""
    if os.environ.get("MVSEG_DECODE_THREADS"):
        return max(1, int(os.environ["MVSEG_DECODE_THREADS"]))
    from mvseg.threads import available_cpus

    return min(available_cpus(), 4)


def _has_idr(data: bytes, length_size: int) -> bool:
    """Whether an H.264 access unit (AVCC: NALs with `length_size`-byte sizes; 0: Annex B start
    codes) holds an IDR slice (nal_unit_type 5): a point where decoding restarts from nothing."""
    if length_size == 0:
        return any(part and part[0] & 0x1F == 5 for part in data.split(b"\x00\x00\x01")[1:])
    pos = 0
    while pos + length_size < len(data):
        size = int.from_bytes(data[pos : pos + length_size], "big")
        if data[pos + length_size] & 0x1F == 5:
            return True
        pos += length_size + size
    return False


def _decode_chunk(extradata: bytes | None, options: dict, packets: list[av.Packet], rgb: bool) -> list[_Decoded]:
    ctx = av.CodecContext.create("h264", "r")
    ctx.extradata = extradata
    ctx.thread_type = "SLICE"
    ctx.options = dict(options)
    to_rgb = None
    out = []
    for pk in [*packets, None]:
        for f in ctx.decode(pk):
            to_rgb = to_rgb or (RGBConverter(f.width, f.height) if rgb else None)
            out.append(_Decoded(f, to_rgb))
    return out


GOP_CHUNK = (32, 512)  # packets per parallel chunk: at least (a cut only at an IDR frame), at most
GOP_BUFFER = 256 << 20  # bytes of decoded RGB frames the chunks in flight may hold


def _gop_parallel(
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

    workers = _decode_workers()
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
        pending.append((pool.submit(_decode_chunk, extradata, options, list(chunk), rgb), len(chunk)))
        chunk.clear()

    def take() -> list[_Decoded]:
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
                if chunk and len(chunk) >= target and packet.is_keyframe and _has_idr(bytes(packet), nal):
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


def _decode(
    path: str | Path, mvs: bool, rgb: bool | Callable[[int, str], bool], strict_mvs: bool
) -> Iterator[tuple[DecodedFrame, av.VideoFrame | None]]:
    """`iter_frames`' decoding: each frame with its MVs, and its decoded picture when its
    pixels are wanted (converted to RGB by the caller)."""
    container, p = _open(path)
    try:
        info = _info(container, p)
        st = container.streams.video[0]
        if mvs and not info.exports_mvs and strict_mvs:
            raise NoMotionVectorsError(
                p, f"{no_mvs_reason(info.codec)}; re-encode it to H.264, e.g. with mvseg.video.encode.encode_video"
            )
        row = CODECS.get(info.codec)
        refs = info.max_ref_frames or 1
        if mvs and info.exports_mvs and refs > 1:
            warnings.warn(
                f"{p}: stream allows up to {refs} reference frames; FFmpeg does not export which frame "
                "an MV points to, so mvseg assumes the nearest I/P frame before (or after) each frame and "
                "composed offsets are approximate. Re-encode with bframes=0:ref=1 "
                "(mvseg.video.encode.encode_video) for exact composition",
                stacklevel=2,
            )
        # Never frame threading with MVs: it drops exported MVs (non-deterministically). Without
        # MVs (a per-frame model) frame threads decode the same pixels faster.
        st.thread_type = "SLICE" if mvs else "AUTO"
        options = {"flags2": "+export_mvs"} if mvs else {}
        if rgb is False and mvs:
            # No frame's pixels are wanted: skip the deblocking filter and the inverse transform.
            # MVs are parsed from the bitstream, never from pixels, so they are the same MVs
            # (tests/video/test_decode.py compares them) at less decoding time.
            options.update(skip_loop_filter="all", skip_idct="all")
        st.codec_context.options = options
        empty = np.zeros(0, dtype=MV_DTYPE)
        index, frames_with_mvs, inter_frames = 0, 0, 0
        size = None
        last_pts, bad_pts, seen_b = None, False, False
        last_time: float | None = None
        tb = float(st.time_base) if st.time_base else None
        rotation: int | None = None
        corrupt: list[int] = []  # indices of frames the decoder flagged corrupt
        rejected: list[int] = []  # per packet the decoder rejected: how many frames had come out before it
        stopped: str | None = None  # why reading ended before the container's end
        zero_b = mvs and row is not None and row.b_frames == "zero"

        def packets() -> Iterator[av.Packet | None]:
            nonlocal stopped
            try:
                for packet in container.demux(st):
                    if packet.size:
                        yield packet
            except av.error.FFmpegError as e:
                stopped = f"reading the file failed after frame {index} ({e.strerror or e})"
            yield None  # flush the decoder: the frames it still holds

        def sequential() -> Iterator[av.VideoFrame]:
            for packet in packets():
                try:
                    # one packet at a time (what container.decode does), so that a packet the
                    # decoder rejects costs that packet, not the rest of the video
                    decoded = st.decode(packet)
                except av.error.FFmpegError:
                    rejected.append(index)
                    continue
                yield from decoded

        try:
            # PyAV's frame <-> side-data container is a reference cycle: a frame whose side
            # data was read is freed only by the cyclic GC, and PyAV still holds the newest
            # frame whenever we could collect, so any collection moves it to an older
            # generation, where it stays until a full collection (1 frame in 8 piled up:
            # +51 MB over 10,000 64x128 frames, GBs at 1080p). A full collection costs
            # ~100 ms with torch loaded, but ~1 us over the objects created after a
            # gc.freeze(): freeze what exists now, collect fully after every 4th frame's side
            # data is read (the frames before it are garbage by then), unfreeze at the end.
            # (in both modes: the final collection below then stays cheap)
            gc.freeze()
            # every frame's MVs, and every frame's pixels or none: whole GOPs decoded in parallel
            # (a file whose index shows a place to cut: one GOP or a short clip has nothing to
            # share out, and the path rewinds to the start, which a raw stream cannot)
            parallel = (
                mvs
                and isinstance(rgb, bool)
                and info.codec == "h264"
                and _decode_workers() > 1
                and _cut_indexed(st, GOP_CHUNK[0])
            )
            source = _gop_parallel(container, st, options, lambda: index, sequential, rgb) if parallel else sequential()
            for frame in source:
                if size is None:
                    size = (frame.width, frame.height)
                elif (frame.width, frame.height) != size:
                    raise VideoError(
                        p,
                        f"frame size changes mid-stream at frame {index} "
                        f"({size[0]}x{size[1]} -> {frame.width}x{frame.height}); "
                        "split the video at the change",
                    )
                # Frames are numbered in decoder output order (what labels and offsets refer
                # to); timestamps are informational, so missing or repeated ones only warn.
                if frame.pts is None:
                    if not bad_pts:
                        warnings.warn(
                            f"{p}: frame {index} has no timestamp (a raw stream?); mvseg numbers "
                            f"frames in decoding order and assumes {info.fps:g} fps",
                            stacklevel=2,
                        )
                    bad_pts = True
                elif last_pts is not None and frame.pts <= last_pts:
                    if not bad_pts:
                        warnings.warn(
                            f"{p}: timestamps do not increase at frame {index} ({last_pts} -> "
                            f"{frame.pts}); mvseg numbers frames in decoding order and ignores "
                            "timestamps",
                            stacklevel=2,
                        )
                    bad_pts = True
                last_pts = frame.pts if frame.pts is not None else last_pts
                # from the stream's time base: PyAV's frame.time is NaN for frames out of the flush
                when = frame.pts * tb if frame.pts is not None and tb else None
                last_time = when if when is not None else last_time
                ptype = _PICT_CHARS.get(int(frame.pict_type), "?")
                is_b = ptype in ("B", "b")
                if is_b and not seen_b and mvs and info.exports_mvs:  # a fact of the stream, not of the header
                    seen_b = True
                    warnings.warn(
                        f"{p}: stream has B-frames (first: frame {index}); FFmpeg does not export which "
                        "frame an MV points to, so mvseg assumes the nearest I/P frame before (or after) "
                        "each frame and composed offsets are approximate. Re-encode with bframes=0:ref=1 "
                        "(mvseg.video.encode.encode_video) for exact composition",
                        stacklevel=2,
                    )
                arr = empty
                if mvs:
                    sd = frame.side_data.get("MOTION_VECTORS")
                    if sd is not None:
                        # A copy: a view would keep the side data, and through it the decoded
                        # frame and its decoder buffers, alive as long as the MVs are kept.
                        # (a byte copy, then the view: numpy copies a structured dtype field by
                        # field, 10x slower than the memcpy)
                        arr = np.frombuffer(sd, dtype=np.uint8).copy().view(MV_DTYPE)
                        frames_with_mvs += 1
                        del sd
                    if index % 4 == 3:  # at most 4 frames wait for it
                        gc.collect()
                    if ptype not in ("I", "i"):
                        inter_frames += 1
                bad = bool(frame.is_corrupt)
                if bad:
                    corrupt.append(index)
                # MPEG-4 Part 2 B-frames: every MV exported as zero (a property of this FFmpeg,
                # not of the video): missing, never zero motion
                missing = bool(zero_b and is_b and not (arr["motion_x"].any() or arr["motion_y"].any()))
                if missing and zero_b is True:
                    zero_b = "warned"
                    warnings.warn(f"{p}: {row.note}", stacklevel=2)
                out = DecodedFrame(
                    index=index,
                    pict_type=ptype,
                    pts=frame.pts,
                    time=when,
                    image=None,
                    mvs=arr,
                    corrupt=bad,
                    mvs_missing=missing,
                    rotation=rotation if rotation is not None else int(frame.rotation or 0),
                    height=size[1],
                    width=size[0],
                )
                rotation = out.rotation  # a property of the stream: read once
                picture = frame if (rgb(index, ptype) if callable(rgb) else rgb) else None
                del frame
                yield out, picture
                del picture
                index += 1
        except av.error.FFmpegError as e:  # not the decoder's per-packet errors (handled in sequential)
            stopped = f"decoding failed after frame {index} ({e.strerror or e})"
        if index == 0:
            why = f": {stopped}" if stopped else ""
            raise VideoError(p, f"no frame could be decoded (truncated or corrupt stream){why}")
        damage = []
        if rejected:
            damage.append(f"{len(rejected)} damaged packet(s) skipped (first after frame {rejected[0]})")
        if corrupt:
            shown = ", ".join(map(str, corrupt[:5])) + (", ..." if len(corrupt) > 5 else "")
            damage.append(
                f"{len(corrupt)} frame(s) flagged corrupt by the decoder (frames {shown}; their "
                "pixels are concealed and their MVs are masked)"
            )
        if damage:
            warnings.warn(f"{p}: damaged stream: {'; '.join(damage)}", stacklevel=2)
        if stopped:
            raise VideoError(p, f"{stopped}; the {index} frames before it were decoded")
        if info.num_frames and index < info.num_frames:
            warnings.warn(
                f"{p}: container declares {info.num_frames} frames but only {index} decoded (truncated file?)",
                stacklevel=2,
            )
        elif not info.num_frames and container.duration and last_time is not None and info.fps:
            # no frame count in the header (Matroska, MPEG-TS): its duration says where the stream should end
            declared = container.duration / 1e6 - float(st.start_time * st.time_base if st.start_time else 0)
            if last_time + 2.0 / info.fps < 0.95 * declared:
                warnings.warn(
                    f"{p}: container says {declared:.2f} s but the stream ends at {last_time:.2f} s "
                    f"(frame {index - 1}; truncated file?)",
                    stacklevel=2,
                )
        if mvs and info.exports_mvs and inter_frames > 0 and frames_with_mvs == 0:
            warnings.warn(
                f"{p}: {inter_frames} inter frames but no motion vectors exported; "
                "offsets will be zero (propagation degenerates to copying the keyframe)",
                stacklevel=2,
            )
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
