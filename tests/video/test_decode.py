"""Decoding real H.264 with PyAV: frames, picture types, raw MVs, stream facts, bad input."""

from __future__ import annotations

import av
import numpy as np
import pytest
from helpers import translating_frames

from mvseg.video.decode import (
    MV_DTYPE,
    NoMotionVectorsError,
    VideoError,
    decode_video,
    h264_max_ref_frames,
    iter_frames,
    probe,
)
from mvseg.video.encode import encode_video, remux


def test_decode_frames_types_and_mvs(pan_video):
    path, frames = pan_video
    v = decode_video(path)
    assert v.frames.shape == (20, 96, 128, 3) and v.frames.dtype == np.uint8
    assert v.pict_types == "I" + "P" * 9 + "I" + "P" * 9  # GOP 10, no B-frames
    assert v.info.max_ref_frames == 1 and not v.info.has_b_frames
    assert v.info.codec == "h264" and (v.info.width, v.info.height) == (128, 96)
    # I-frames carry no MVs, P-frames carry the structured AVMotionVector array
    assert len(v.mvs[0]) == 0 and len(v.mvs[10]) == 0
    assert all(len(v.mvs[t]) > 0 for t in range(1, 20) if t != 10)
    assert v.mvs[3].dtype.names == MV_DTYPE.names
    # decoded frames are close to the sources but not identical (4:2:0 chroma, quantisation)
    err = np.abs(v.frames.astype(float) - frames.astype(float)).mean()
    assert 0 < err < 8


def test_pts_increase_and_streaming_matches_whole(pan_video):
    path, _ = pan_video
    whole = decode_video(path)
    streamed = list(iter_frames(path))
    assert [f.index for f in streamed] == list(range(20))
    assert all(b.pts > a.pts for a, b in zip(streamed, streamed[1:]))
    for f in streamed:
        np.testing.assert_array_equal(f.image, whole.frames[f.index])
        np.testing.assert_array_equal(f.mvs, whole.mvs[f.index])
    # rgb as a function of (index, picture type): only the I-frames' pixels, same MVs
    only_i = list(iter_frames(path, rgb=lambda i, t: t == "I"))
    assert [f.image is not None for f in only_i] == [f.pict_type == "I" for f in streamed]
    np.testing.assert_array_equal(only_i[10].image, whole.frames[10])
    np.testing.assert_array_equal(only_i[7].mvs, whole.mvs[7])


def test_mvs_deterministic_across_decodes(bframe_video):
    path, _ = bframe_video
    a, b = decode_video(path, rgb=False), decode_video(path, rgb=False)
    assert [len(m) for m in a.mvs] == [len(m) for m in b.mvs]
    for x, y in zip(a.mvs, b.mvs):
        np.testing.assert_array_equal(x, y)
    # without pixels the decoder skips deblocking and the inverse transform: the same MVs
    full = decode_video(path, rgb=True)
    for x, y in zip(a.mvs, full.mvs):
        np.testing.assert_array_equal(x, y)


def test_rgb_conversion_is_bit_exact_to_pyav(pan_video):
    from mvseg.video.decode import RGBConverter

    path, _ = pan_video
    ours = [f.image for f in iter_frames(path)]
    with av.open(str(path)) as c:
        theirs = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(ours) == len(theirs) == 20
    for x, y in zip(ours, theirs):
        np.testing.assert_array_equal(x, y)
    assert RGBConverter(1920, 1080).threads == 0 and RGBConverter(640, 360).threads == 1


def test_bframes_and_multiref_are_reported(bframe_video):
    path, _ = bframe_video
    with pytest.warns(UserWarning) as record:
        v = decode_video(path, rgb=False)
    said = [str(w.message) for w in record]
    assert any("bframes.mp4: stream allows up to 4 reference frames" in m for m in said)
    assert any("bframes.mp4: stream has B-frames (first: frame 1)" in m for m in said)  # seen, not guessed
    assert "B" in v.pict_types
    # parsed from the SPS: x264 raises ref=3 to 4 for its B-pyramid (DPB size)
    assert v.info.max_ref_frames == 4
    sources = np.unique(np.concatenate([m["source"] for m in v.mvs if len(m)]))
    assert set(sources) == {-1, 1}  # B-frames reference the future too


def test_sps_parser_on_constructed_sps():
    # profile 66 (baseline), constraint/level bytes, then ue(v) fields:
    # sps_id=0 '1', log2_max_frame_num_minus4=0 '1', poc_type=2 '011', max_num_ref_frames=4 '00101'
    bits = "1" + "1" + "011" + "00101" + "1"
    payload = int(bits.ljust(16, "0"), 2).to_bytes(2, "big")
    nal = bytes([0x67, 66, 0xC0, 30]) + payload
    assert h264_max_ref_frames(b"\x00\x00\x00\x01" + nal) == 4
    assert h264_max_ref_frames(b"") is None


@pytest.mark.reliability
def test_size_not_multiple_of_16(video_dir):
    from helpers import translating_frames

    from mvseg.video.motion import rasterize_mvs

    path = encode_video(translating_frames(5, 50, 70, 2.0, 0.0), video_dir / "odd.mp4", gop=5)
    v = decode_video(path)
    assert v.frames.shape == (5, 50, 70, 3)
    offset, mask = rasterize_mvs(v.mvs[2], 50, 70)
    assert offset.shape == (2, 13, 18)  # ceil(50/4) x ceil(70/4): partial blocks get a cell
    # The partial bottom row / right column of cells is painted by the macroblocks that cover it.
    # Which of those x264 codes as intra (no MV) depends on the frames' last bits (numpy's FFT /
    # exp differ by an ulp across CPUs), so the test checks each cell against its own MVs.
    assert mask[-1].any() and mask[:, -1].any()
    for t in range(1, 5):
        m = v.mvs[t]
        covers = (abs(m["dst_x"] - 69.5) <= m["w"] / 2) & (abs(m["dst_y"] - 49.5) <= m["h"] / 2)
        assert rasterize_mvs(m, 50, 70)[1][-1, -1] == float(covers.any()), t
    assert np.median(offset[0][mask > 0]) == pytest.approx(2.0, abs=0.25)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.reliability
def test_missing_file_names_it(tmp_path):
    with pytest.raises(VideoError, match="nope.mp4: no such file"):
        probe(tmp_path / "nope.mp4")


@pytest.mark.reliability
def test_directory_and_empty_file(tmp_path):
    with pytest.raises(VideoError, match="is a directory"):
        probe(tmp_path)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoError, match=r"empty.mp4: empty file"):
        probe(empty)


@pytest.mark.reliability
def test_not_a_video(tmp_path):
    p = tmp_path / "notes.mp4"
    p.write_text("this is not a video\n" * 50)
    with pytest.raises(VideoError, match="notes.mp4: not a readable video container"):
        decode_video(p)


@pytest.mark.reliability
def test_truncated_file(pan_video, tmp_path):
    path, _ = pan_video
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # MP4 index (moov) is at the end: gone
    with pytest.raises(VideoError, match="cut.mp4"):
        decode_video(cut)


@pytest.mark.reliability
def test_audio_only_file(tmp_path):
    p = tmp_path / "audio.m4a"
    with av.open(str(p), "w") as c:
        s = c.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for i in range(5):
            frame.pts = i * 1024
            for pkt in s.encode(frame):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    with pytest.raises(VideoError, match=r"audio.m4a: has no video stream \(streams: audio\)"):
        probe(p)


def encode_flat(path, codec: str, h: int, w: int, frames: int = 3):
    """`frames` flat grey frames encoded with a codec that has no exportable MVs."""
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=10)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            for pkt in s.encode(av.VideoFrame.from_ndarray(np.full((h, w, 3), 40 * i, np.uint8), format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


@pytest.mark.reliability
def test_vp9_has_no_mvs(tmp_path):
    p = encode_flat(tmp_path / "clip.webm", "libvpx-vp9", 48, 64)
    with pytest.raises(NoMotionVectorsError, match=r"clip.webm: codec 'vp9' carries no block motion vectors"):
        decode_video(p)
    # frames alone can still be decoded (mvs=False)
    assert decode_video(p, mvs=False).frames.shape == (3, 48, 64, 3)


@pytest.mark.reliability
def test_header_only_file(pan_video, tmp_path):
    """The container's index (moov first) but no frame data: a recording that never got its data."""
    path, _ = pan_video
    data = remux(path, tmp_path / "fast.mp4", options={"movflags": "faststart"}).read_bytes()
    header = tmp_path / "header.mp4"
    header.write_bytes(data[: data.index(b"mdat") + 4])
    assert probe(header).num_frames == 20  # the header alone looks like a video
    with pytest.raises(VideoError, match=r"header.mp4: no frame could be decoded \(truncated or corrupt stream\)"):
        decode_video(header)


@pytest.mark.reliability
def test_raw_stream_without_timestamps(pan_video, tmp_path):
    """An H.264 elementary stream has no timestamps: same frames and MVs, a warning, decoding order."""
    path, _ = pan_video
    raw = tmp_path / "pan.h264"
    remux(path, raw, "h264")
    with pytest.warns(UserWarning, match=r"pan.h264: frame 0 has no timestamp .* numbers frames in decoding order"):
        got = decode_video(raw)
    want = decode_video(path)
    assert got.pts == [None] * 20
    assert np.array_equal(got.frames, want.frames) and got.pict_types == want.pict_types
    assert all(np.array_equal(a, b) for a, b in zip(got.mvs, want.mvs))


@pytest.mark.reliability
def test_repeated_timestamps(pan_video, tmp_path):
    """A muxer bug that repeats a timestamp: frames are still numbered 0..T-1 in decoding order."""
    path, _ = pan_video
    dup = tmp_path / "dup.mkv"
    last = {}

    def repeat(k, pkt):
        if k == 4:
            pkt.pts, pkt.dts = last["pts"], last["dts"]
        last.update(pts=pkt.pts, dts=pkt.dts)

    remux(path, dup, "matroska", edit=repeat)
    with pytest.warns(UserWarning, match=r"dup.mkv: timestamps do not increase at frame 4 \((\d+) -> \1\)"):
        got = decode_video(dup)
    want = decode_video(path)
    assert got.pts[3] == got.pts[4]
    assert np.array_equal(got.frames, want.frames)
    assert all(np.array_equal(a, b) for a, b in zip(got.mvs, want.mvs))


@pytest.mark.reliability
def test_resolution_change_mid_stream(tmp_path):
    """Two elementary streams of different sizes back to back (a camera that switched mode)."""
    from helpers import translating_frames

    parts = []
    for i, (h, w) in enumerate([(48, 64), (64, 96)]):
        mp4 = encode_video(translating_frames(6, h, w, 1.0, 0.0, seed=i), tmp_path / f"part{i}.mp4", gop=6)
        remux(mp4, tmp_path / f"part{i}.h264", "h264")
        parts.append((tmp_path / f"part{i}.h264").read_bytes())
    joined = tmp_path / "switch.h264"
    joined.write_bytes(b"".join(parts))
    with (
        pytest.warns(UserWarning, match="no timestamp"),
        pytest.raises(
            VideoError,
            match=r"switch.h264: frame size changes mid-stream at frame 6 \(64x48 -> 96x64\); split the video",
        ),
    ):
        decode_video(joined)


@pytest.mark.reliability
def test_av1_has_no_mvs(tmp_path):
    p = encode_flat(tmp_path / "clip.mkv", "libsvtav1", 64, 64)
    with pytest.raises(NoMotionVectorsError, match=r"clip.mkv: codec 'av1' carries no block motion vectors"):
        decode_video(p)
    assert decode_video(p, mvs=False).frames.shape == (3, 64, 64, 3)


def _damage(data: bytes, at: float, n: int = 4096) -> bytes:
    """`n` random bytes (seeded) written over `data` at fraction `at` of its length."""
    b, m = bytearray(data), int(len(data) * at)
    b[m : m + n] = np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8).tobytes()
    return bytes(b)


@pytest.mark.reliability
def test_damaged_packets_are_skipped_and_corrupt_frames_masked(tmp_path):
    from mvseg.data.synthetic import SyntheticConfig, render_clip
    from mvseg.video.motion import iter_fields
    from mvseg.video.report import summarize

    good = encode_video(
        render_clip(7, SyntheticConfig(height=144, width=176, frames=40)).frames, tmp_path / "good.mp4", gop=20
    )
    remux(good, tmp_path / "good.ts", "mpegts")
    remux(good, tmp_path / "good.mkv", "matroska")
    # random bytes over the second I-frame of a transport stream: decoded, flagged corrupt
    ts = tmp_path / "bad.ts"
    ts.write_bytes(_damage((tmp_path / "good.ts").read_bytes(), 0.5))
    with pytest.warns(
        UserWarning, match=r"bad.ts: damaged stream: 1 frame\(s\) flagged corrupt by the decoder \(frames 20;"
    ):
        fields = list(iter_fields(ts, rgb=False))
    assert len(fields) == 40
    bad = [f.index for f, _, _ in fields if f.corrupt]
    assert bad == [20] and len(fields[20][0].mvs) > 0  # error concealment exported MVs ...
    assert fields[20][2].max() == 0  # ... which are not motion: masked
    assert summarize(ts)["corrupt_frames"] == [20]
    # in Matroska the same damage makes the decoder reject a packet: skipped, the rest decodes
    mkv = tmp_path / "bad.mkv"
    mkv.write_bytes(_damage((tmp_path / "good.mkv").read_bytes(), 0.5))
    with pytest.warns(
        UserWarning, match=r"bad.mkv: damaged stream: 1 damaged packet\(s\) skipped \(first after frame 20\)"
    ):
        n = sum(1 for _ in iter_frames(mkv, rgb=False))
    assert 30 < n < 40
    # a Matroska file cut short declares no frame count: its duration says it ends early
    cut = tmp_path / "cut.mkv"
    cut.write_bytes((tmp_path / "good.mkv").read_bytes()[: int(mkv.stat().st_size * 0.6)])
    with pytest.warns(UserWarning, match=r"cut.mkv: container says 1.33 s but the stream ends at 0.\d\d s"):
        assert 10 < sum(1 for _ in iter_frames(cut, rgb=False)) < 30


def test_rotation_and_variable_frame_rate_are_read(tmp_path):
    from mvseg.video.decode import display_rotation
    from mvseg.video.report import summarize

    frames = translating_frames(12, 96, 128, 2.0, 1.0)
    times = [0.1 * k if k < 6 else 0.5 + 0.25 * (k - 5) for k in range(12)]
    path = encode_video(zip(frames, times), tmp_path / "phone.mp4", timed=True, rotation=90)
    assert display_rotation(path) == 90
    got = [f.time for f in iter_frames(path, rgb=False)]
    np.testing.assert_allclose(got, times, atol=1e-4)
    s = summarize(path)
    assert s["rotation"] == 90 and s["variable_frame_rate"] is True
    assert summarize(encode_video(frames, tmp_path / "cfr.mp4"))["variable_frame_rate"] is False


def test_prefetch_decodes_the_same_frames_ahead_and_stops_cleanly(bframe_video, tmp_path):
    import threading

    from mvseg.video.motion import iter_fields

    path, _ = bframe_video
    alone = list(iter_fields(path))
    ahead = list(iter_fields(path, prefetch=3))
    assert len(ahead) == len(alone) == 24
    for (f, o, m), (g, p, n) in zip(alone, ahead):
        assert f.index == g.index and f.pict_type == g.pict_type
        np.testing.assert_array_equal(f.image, g.image)
        np.testing.assert_array_equal(f.mvs, g.mvs)
        np.testing.assert_array_equal(o, p)
        np.testing.assert_array_equal(m, n)
    decoding = lambda: [t for t in threading.enumerate() if t.name == "mvseg-decode"]  # noqa: E731
    it = iter_frames(path, prefetch=2)
    assert [next(it).index for _ in range(3)] == [0, 1, 2]
    it.close()  # a consumer that stops early: the thread closes the file and ends
    assert not decoding()
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video\n" * 20)
    with pytest.raises(VideoError, match="notes.mp4: not a readable video container"):
        list(iter_frames(bad, prefetch=2))  # raised in the thread, re-raised to the caller
    assert not decoding()


def _x264(path, frames: np.ndarray, params: str) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.height, s.width = frames.shape[1:3]
        s.pix_fmt, s.options = "yuv420p", {"x264-params": params}
        for img in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


@pytest.mark.parametrize(
    "params, chunks",
    [
        ("keyint=10:min-keyint=10:scenecut=0:bframes=2:ref=3", 4),
        ("keyint=10:min-keyint=10:scenecut=0:bframes=2:open-gop=1", 0),
    ],
)
def test_gop_parallel_mvs_equal_one_decoder(params, chunks, tmp_path, monkeypatch):
    # MVs only: cut at IDR frames, one decoder per chunk in worker threads; an open GOP (B-frames
    # shown before their I-frame) cannot be cut there: one decoder from the start instead
    import mvseg.video.gop as gop

    path = tmp_path / "clip.mp4"
    _x264(path, translating_frames(48, 64, 96, 2.0, 1.0), params)
    monkeypatch.setattr(gop, "GOP_CHUNK", (10, 40))
    calls = []
    real = gop.decode_chunk
    monkeypatch.setattr(gop, "decode_chunk", lambda *a: calls.append(len(a[2])) or real(*a))
    for rgb in (False, True):  # MVs only; MVs and every frame's pixels (converted in the workers)
        monkeypatch.setenv("MVSEG_DECODE_THREADS", "1")
        one = list(iter_frames(path, rgb=rgb))
        monkeypatch.setenv("MVSEG_DECODE_THREADS", "2")
        calls.clear()
        many = list(iter_frames(path, rgb=rgb))
        assert len(calls) >= chunks and (sum(calls) == 48 if chunks else True)
        assert [f.index for f in many] == list(range(48)) and [f.pict_type for f in many] == [f.pict_type for f in one]
        assert "B" in "".join(f.pict_type for f in one)
        for a, b in zip(one, many):
            assert a.pts == b.pts and a.time == b.time
            np.testing.assert_array_equal(a.mvs, b.mvs)
            assert (a.image is None and b.image is None) if not rgb else np.array_equal(a.image, b.image)


# ----------------------------------------------------------------------------- inspect says it plainly


@pytest.mark.reliability
def test_inspect_says_when_a_codec_exports_no_mvs_and_dump_mvs_fails(tmp_path, capsys):
    from helpers import encode_with, translating_frames

    from mvseg.cli import main

    src = encode_with(translating_frames(4, 64, 96, 2.0, 1.0), tmp_path / "vp9.webm", "libvpx-vp9")
    assert main(["inspect", str(src)]) == 0
    out = capsys.readouterr().out
    assert "MVs:          none: FFmpeg exports no block motion vectors for vp9" in out
    csv = tmp_path / "mvs.csv"
    assert main(["inspect", str(src), "--dump-mvs", str(csv)]) == 2
    assert (
        f"{src}: codec 'vp9' carries no block motion vectors that FFmpeg exports: nothing to dump"
        in capsys.readouterr().err
    )
    assert not csv.exists()


@pytest.mark.reliability
def test_inspect_warns_for_interlaced_video(tmp_path, capsys):
    from helpers import encode_with

    from mvseg.cli import main

    frames = np.stack([np.full((96, 128, 3), 40 * i, np.uint8) for i in range(4)])
    src = encode_with(
        frames, tmp_path / "tff.mp4", "libx264", options={"x264-params": "tff=1"}
    )  # interlaced, top field first
    assert main(["inspect", str(src)]) == 0
    err = capsys.readouterr().err
    assert f"mvseg inspect: warning: {src}: interlaced video (fields)" in err
    progressive = tmp_path / "p.mp4"
    encode_video(np.zeros((4, 96, 128, 3), np.uint8), progressive)
    assert main(["inspect", str(progressive)]) == 0
    assert "interlaced" not in capsys.readouterr().err


def test_motion_report_batched_equals_one_warp_at_a_time(tmp_path):
    """The report warps a frame's distances in one batch: the same PSNRs as warping each alone."""
    import torch
    from helpers import translating_frames

    from mvseg.video.report import _psnr, _psnr_batch, _warp_images, warp_image

    frames = torch.from_numpy(translating_frames(3, 64, 96, 2.0, 1.0)).permute(0, 3, 1, 2).float()
    off = torch.randn(3, 2, 16, 24) * 3
    mask = (torch.rand(3, 16, 24) > 0.2).float()
    batch = _warp_images(frames, off, mask)
    for k in range(3):
        torch.testing.assert_close(batch[k], warp_image(frames[k], off[k], mask[k]))
    np.testing.assert_allclose(_psnr_batch(batch, frames[0]), [_psnr(batch[k], frames[0]) for k in range(3)], rtol=1e-9)
