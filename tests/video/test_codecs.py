"""The per-codec MV table (`mvseg.video.decode.CODECS`) against files of each codec, encoded here
with PyAV's own FFmpeg: what the table says is exported is exported and usable; what it says is
not is refused with the table's reason; MPEG-4 B-frames' all-zero MVs are missing, never motion."""

from __future__ import annotations

import warnings

import av
import numpy as np
import pytest
from helpers import CONTAINERS, encode_with, translating_frames

from mvseg.video.decode import CODECS, NoMotionVectorsError, iter_frames, probe
from mvseg.video.motion import iter_fields
from mvseg.video.report import motion_report, summarize


@pytest.fixture(scope="module")
def pan_qcif():
    """A texture panning (+2, +1) px per frame at QCIF (176x144: the one size every codec here takes)."""
    return translating_frames(14, 144, 176, 2.0, 1.0)


ROWS = [r for r in CODECS.values() if r.encoder]


@pytest.mark.parametrize("row", ROWS, ids=[r.codec for r in ROWS])
def test_each_codec_does_what_the_table_says(row, pan_qcif, tmp_path):
    if row.encoder not in av.codecs_available:
        pytest.skip(f"this FFmpeg has no {row.encoder} encoder")
    path = encode_with(pan_qcif, tmp_path / f"clip.{CONTAINERS.get(row.encoder, 'avi')}", row.encoder)
    codec = probe(path).codec
    assert CODECS[codec].exports == row.exports  # (h263p in AVI reads back as h263: same row values)
    if not row.exports:
        with pytest.raises(NoMotionVectorsError, match=rf"clip\.\w+: codec '{codec}' carries no block motion vectors"):
            next(iter_frames(path))
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MPEG-1/2's reorder flag: no B-frames here, no warning needed
        frames = list(iter_fields(path, rgb=False))
        gain = motion_report(path, 1)["rows"][0]
    # (FFmpeg's MPEG-1/2 decoders output the last picture, at the flush, without its MVs)
    inter = [(f, m) for f, _, m in frames[:-1] if f.pict_type in ("P", "B")]
    assert len(inter) >= 10 and all(len(f.mvs) for f, _ in inter)
    assert np.mean([m.mean() for _, m in inter]) > 0.8  # most blocks carry usable motion
    # the exported motion is the pan: warping the previous frame beats copying it by far
    assert gain["psnr_warp"] - gain["psnr_copy"] > 3.0


def test_mpeg2_without_b_frames_is_not_reported_as_having_them(pan_qcif, tmp_path):
    path = encode_with(pan_qcif, tmp_path / "p.mpg", "mpeg2video")
    assert probe(path).has_b_frames  # the decoder's reorder flag: MPEG-1/2 always set it
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no B-frame warning for a stream that has none
        s = summarize(path)
    assert set(s["pict_types"]) == {"I", "P"} and s["has_b_frames"] is False


def test_mpeg4_b_frames_all_zero_mvs_are_missing_not_motion(pan_qcif, tmp_path):
    plain = encode_with(pan_qcif, tmp_path / "p.avi", "mpeg4", fixed_q=4)
    with_b = encode_with(pan_qcif, tmp_path / "b.avi", "mpeg4", bframes=2, fixed_q=4)
    with pytest.warns(
        UserWarning, match=r"b.avi: MPEG-4 Part 2 \(Xvid/DivX\) B-frames: this FFmpeg exports their MVs as all zero"
    ):
        fields = list(iter_fields(with_b, rgb=False))
    b = [(f, o, m) for f, o, m in fields if f.pict_type == "B"]
    assert b and all(f.mvs_missing and len(f.mvs) and not f.mvs["motion_x"].any() for f, _, _ in b)
    # each B-frame takes the next anchor's per-frame motion: the pan, not zero
    for _, o, m in b:
        assert m.mean() > 0.8
        np.testing.assert_allclose(np.median(o[:, m > 0], axis=1), [2.0, 1.0], atol=0.25)
    s = summarize(with_b)
    assert s["frames_mvs_missing"] == [f.index for f, _, _ in b] and "all zero" in s["mvs_missing_reason"]
    gain = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, path in (("plain", plain), ("b", with_b)):
            row = motion_report(path, 1)["rows"][0]
            gain[name] = row["psnr_warp"] - row["psnr_copy"]
    # as good as the same clip without B-frames (taken as zero motion it was ~0 dB over copying)
    assert gain["plain"] > 5 and abs(gain["b"] - gain["plain"]) < 1.0, gain
