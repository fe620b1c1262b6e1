"""One decoding pass's bookkeeping, beside `mvseg.video.decode`: the decoder opened for what the
pass wants (`decoder_options`), the codec checked (`check_motion`), the stream's own decoder fed
packet by packet (`sequential`), and `Tally`: per frame its size, timestamp, picture type, MVs and
damage, said once at the end of the pass."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np

from mvseg.video.codecs import CODECS, MV_DTYPE, PICT_CHARS, CodecMotion, no_mvs_reason
from mvseg.video.frames import DecodedFrame, NoMotionVectorsError, VideoError, VideoInfo


def check_motion(p: Path, info: VideoInfo, mvs: bool, strict_mvs: bool) -> None:
    """Refuse a codec without MVs when they are wanted; warn when MVs may point further back."""
    if mvs and not info.exports_mvs and strict_mvs:
        raise NoMotionVectorsError(
            p, f"{no_mvs_reason(info.codec)}; re-encode it to H.264, e.g. with mvseg.video.encode.encode_video"
        )
    refs = info.max_ref_frames or 1
    if mvs and info.exports_mvs and refs > 1:
        warnings.warn(
            f"{p}: stream allows up to {refs} reference frames; FFmpeg does not export which frame "
            "an MV points to, so mvseg assumes the nearest I/P frame before (or after) each frame and "
            "composed offsets are approximate. Re-encode with bframes=0:ref=1 "
            "(mvseg.video.encode.encode_video) for exact composition",
            stacklevel=3,
        )


def decoder_options(st, mvs: bool, rgb: bool | Callable) -> dict:
    """Open the stream's decoder for the pass: threads and what it exports or may skip."""
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
    return options


def sequential(container: av.container.InputContainer, st, tally: Tally) -> Iterator[av.VideoFrame]:
    """The stream's own decoder, one packet at a time (what container.decode does), so that a
    packet the decoder rejects costs that packet, not the rest of the video; a read error of
    the container ends the packets (said at the end), and the decoder is flushed."""

    def packets() -> Iterator[av.Packet | None]:
        try:
            for packet in container.demux(st):
                if packet.size:
                    yield packet
        except av.error.FFmpegError as e:
            tally.stopped = f"reading the file failed after frame {tally.index} ({e.strerror or e})"
        yield None  # flush the decoder: the frames it still holds

    for packet in packets():
        try:
            decoded = st.decode(packet)
        except av.error.FFmpegError:
            tally.rejected.append(tally.index)
            continue
        yield from decoded


_NO_MVS = np.zeros(0, dtype=MV_DTYPE)


class Tally:
    """What one pass over a stream notes frame by frame, and says once at its end: the frame
    size (a change is refused), timestamps, picture types (the first B-frame warned), MVs and
    damage. `frame` turns a decoded frame into its `DecodedFrame` (no pixels yet)."""

    def __init__(self, p: Path, info: VideoInfo, st, mvs: bool):
        self.p, self.info, self.mvs = p, info, mvs
        self.row: CodecMotion | None = CODECS.get(info.codec)
        self.tb = float(st.time_base) if st.time_base else None
        self.index = 0  # frames handed on so far (the next frame's index)
        self.frames_with_mvs = self.inter_frames = 0
        self.size: tuple[int, int] | None = None
        self.last_pts, self.bad_pts, self.seen_b = None, False, False
        self.last_time: float | None = None
        self.rotation: int | None = None
        self.corrupt: list[int] = []  # indices of frames the decoder flagged corrupt
        self.rejected: list[int] = []  # per packet the decoder rejected: how many frames had come out before it
        self.stopped: str | None = None  # why reading ended before the container's end
        self.zero_b = mvs and self.row is not None and self.row.b_frames == "zero"

    def frame(self, frame: av.VideoFrame) -> DecodedFrame:
        self._check_size(frame)
        when = self._timestamp(frame)
        ptype = PICT_CHARS.get(int(frame.pict_type), "?")
        is_b = ptype in ("B", "b")
        if is_b and not self.seen_b and self.mvs and self.info.exports_mvs:  # a fact of the stream, not of the header
            self.seen_b = True
            warnings.warn(
                f"{self.p}: stream has B-frames (first: frame {self.index}); FFmpeg does not export which "
                "frame an MV points to, so mvseg assumes the nearest I/P frame before (or after) "
                "each frame and composed offsets are approximate. Re-encode with bframes=0:ref=1 "
                "(mvseg.video.encode.encode_video) for exact composition",
                stacklevel=2,
            )
        arr = self._motion(frame, ptype) if self.mvs else _NO_MVS
        bad = bool(frame.is_corrupt)
        if bad:
            self.corrupt.append(self.index)
        # MPEG-4 Part 2 B-frames: every MV exported as zero (a property of this FFmpeg, not of the
        # video): missing, never zero motion
        missing = bool(self.zero_b and is_b and not (arr["motion_x"].any() or arr["motion_y"].any()))
        if missing and self.zero_b is True:
            self.zero_b = "warned"
            warnings.warn(f"{self.p}: {self.row.note}", stacklevel=2)
        if self.rotation is None:  # a property of the stream: read once
            self.rotation = int(frame.rotation or 0)
        return DecodedFrame(
            index=self.index,
            pict_type=ptype,
            pts=frame.pts,
            time=when,
            image=None,
            mvs=arr,
            corrupt=bad,
            mvs_missing=missing,
            rotation=self.rotation,
            interlaced=bool(frame.interlaced_frame),
            height=self.size[1],
            width=self.size[0],
        )

    def _check_size(self, frame: av.VideoFrame) -> None:
        if self.size is None:
            self.size = (frame.width, frame.height)
        elif (frame.width, frame.height) != self.size:
            raise VideoError(
                self.p,
                f"frame size changes mid-stream at frame {self.index} "
                f"({self.size[0]}x{self.size[1]} -> {frame.width}x{frame.height}); split the video at the change",
            )

    def _timestamp(self, frame: av.VideoFrame) -> float | None:
        # Frames are numbered in decoder output order (what labels and offsets refer to);
        # timestamps are informational, so missing or repeated ones only warn.
        if frame.pts is None:
            if not self.bad_pts:
                warnings.warn(
                    f"{self.p}: frame {self.index} has no timestamp (a raw stream?); mvseg numbers "
                    f"frames in decoding order and assumes {self.info.fps:g} fps",
                    stacklevel=3,
                )
            self.bad_pts = True
        elif self.last_pts is not None and frame.pts <= self.last_pts:
            if not self.bad_pts:
                warnings.warn(
                    f"{self.p}: timestamps do not increase at frame {self.index} ({self.last_pts} -> "
                    f"{frame.pts}); mvseg numbers frames in decoding order and ignores timestamps",
                    stacklevel=3,
                )
            self.bad_pts = True
        self.last_pts = frame.pts if frame.pts is not None else self.last_pts
        # from the stream's time base: PyAV's frame.time is NaN for frames out of the flush
        when = frame.pts * self.tb if frame.pts is not None and self.tb else None
        self.last_time = when if when is not None else self.last_time
        return when

    def _motion(self, frame: av.VideoFrame, ptype: str) -> np.ndarray:
        arr = _NO_MVS
        sd = frame.side_data.get("MOTION_VECTORS")
        if sd is not None:
            # A copy: a view would keep the side data, and through it the decoded frame and its
            # decoder buffers, alive as long as the MVs are kept. (a byte copy, then the view:
            # numpy copies a structured dtype field by field, far slower than the memcpy)
            arr = np.frombuffer(sd, dtype=np.uint8).copy().view(MV_DTYPE)
            self.frames_with_mvs += 1
            del sd
        if self.index % 4 == 3:  # at most 4 frames wait for it (see mvseg.video.decode._decode)
            gc.collect()
        if ptype not in ("I", "i"):
            self.inter_frames += 1
        return arr

    def finish(self, container: av.container.InputContainer, st) -> None:
        """The end of the pass: what was damaged or missing, said once (VideoError when the
        file stopped being readable, after every decodable frame was handed on)."""
        p, info, index = self.p, self.info, self.index
        if index == 0:
            why = f": {self.stopped}" if self.stopped else ""
            raise VideoError(p, f"no frame could be decoded (truncated or corrupt stream){why}")
        damage = []
        if self.rejected:
            damage.append(f"{len(self.rejected)} damaged packet(s) skipped (first after frame {self.rejected[0]})")
        if self.corrupt:
            shown = ", ".join(map(str, self.corrupt[:5])) + (", ..." if len(self.corrupt) > 5 else "")
            damage.append(
                f"{len(self.corrupt)} frame(s) flagged corrupt by the decoder (frames {shown}; their "
                "pixels are concealed and their MVs are masked)"
            )
        if damage:
            warnings.warn(f"{p}: damaged stream: {'; '.join(damage)}", stacklevel=3)
        if self.stopped:
            raise VideoError(p, f"{self.stopped}; the {index} frames before it were decoded")
        if info.num_frames and index < info.num_frames:
            warnings.warn(
                f"{p}: container declares {info.num_frames} frames but only {index} decoded (truncated file?)",
                stacklevel=3,
            )
        elif not info.num_frames and container.duration and self.last_time is not None and info.fps:
            # no frame count in the header (Matroska, MPEG-TS): its duration says where the stream should end
            declared = container.duration / 1e6 - float(st.start_time * st.time_base if st.start_time else 0)
            if self.last_time + 2.0 / info.fps < 0.95 * declared:
                warnings.warn(
                    f"{p}: container says {declared:.2f} s but the stream ends at {self.last_time:.2f} s "
                    f"(frame {index - 1}; truncated file?)",
                    stacklevel=3,
                )
        if self.mvs and info.exports_mvs and self.inter_frames > 0 and self.frames_with_mvs == 0:
            warnings.warn(
                f"{p}: {self.inter_frames} inter frames but no motion vectors exported; "
                "offsets will be zero (propagation degenerates to copying the keyframe)",
                stacklevel=3,
            )
