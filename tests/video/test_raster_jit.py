"""The compiled rasteriser (`mvseg.video.raster_jit`) against the NumPy path it stands in for:
the same offset field and mask, bit for bit, on random frames (every block shape FFmpeg exports,
past and future MVs, overlapping and intra blocks, any frame size, the intra rule on and off)
and on every frame of real H.264 and MPEG-4 files; what it does not take goes to the NumPy path."""

from __future__ import annotations

import os
import warnings
from unittest import mock

import numpy as np
import pytest
from helpers import encode_with
from hypothesis import given, settings
from hypothesis import strategies as st

from mvseg.video import raster_jit
from mvseg.video.decode import MV_DTYPE, iter_frames
from mvseg.video.motion import rasterize_mvs, reference_distances

needs_numba = pytest.mark.skipif(not raster_jit.HAVE_NUMBA, reason="numba is not installed")
SETTINGS = settings(derandomize=True, max_examples=120, deadline=None)


def numpy_path(*args, **kwargs):
    with mock.patch.dict(os.environ, {"MVSEG_JIT": "0"}):
        return rasterize_mvs(*args, **kwargs)


def assert_same(mvs, height, width, *args, **kwargs):
    fast = raster_jit.rasterize(mvs, height, width, -(-height // 4), -(-width // 4), *args)
    assert fast is not None, "the compiled path should take FFmpeg's 8/16-pixel blocks"
    ref = numpy_path(
        mvs, height, width, *args[:2], intra="fill" if args[2] else "none", radius=args[3], max_share=args[4]
    )
    np.testing.assert_array_equal(fast[0], ref[0])  # bit for bit: same float32 steps, same order
    np.testing.assert_array_equal(fast[1], ref[1])
    return fast


@st.composite
def ffmpeg_frames(draw):
    """A frame as FFmpeg exports it: blocks of 8 or 16 pixels a side on the macroblock-padded
    picture (corners mostly on the 8x8 grid, some not), past or future, possibly overlapping;
    some macroblocks without any (intra)."""
    height, width = draw(st.integers(16, 80)), draw(st.integers(16, 80))
    hm, wm = -(-height // 16), -(-width // 16)
    n = draw(st.integers(1, 40))
    a = np.zeros(n, MV_DTYPE)
    for i in range(n):
        w, h = draw(st.sampled_from([(16, 16), (16, 8), (8, 16), (8, 8)]))
        x0 = draw(st.integers(0, 16 * wm - w))
        y0 = draw(st.integers(0, 16 * hm - h))
        if draw(st.booleans()):
            x0, y0 = x0 - x0 % 8, y0 - y0 % 8
        a[i]["w"], a[i]["h"], a[i]["dst_x"], a[i]["dst_y"] = w, h, x0 + w // 2, y0 + h // 2
        a[i]["source"] = draw(st.sampled_from([-1, -1, 1, -2, 2]))
        a[i]["motion_x"], a[i]["motion_y"] = draw(st.integers(-2048, 2048)), draw(st.integers(-2048, 2048))
        a[i]["motion_scale"] = draw(st.sampled_from([4, 2, 1, 0]))
    rules = (
        draw(st.sampled_from([1, 2, 3])),
        draw(st.sampled_from([1, 2, 4])),
        draw(st.booleans()),
        draw(st.integers(0, 3)),
        draw(st.sampled_from([0.5, 0.9, 0.1])),
    )
    return a, height, width, rules


@needs_numba
@SETTINGS
@given(ffmpeg_frames())
def test_compiled_rasteriser_equals_the_numpy_path(case):
    a, height, width, rules = case
    assert_same(a, height, width, *rules)


@needs_numba
def test_fill_and_b_frame_rule_on_a_hand_made_frame():
    """A 48x48 B-frame 2 frames after its past anchor and 1 before its future one: a past 16x16
    block, a future-only one (negated, over the distances), a bi-predicted one (past wins) and an
    intra macroblock, which the fill gives the mean of its known neighbours."""
    rows = [(0, 0, 16, 16, -1, 8, 0), (16, 0, 16, 16, 1, -8, 4), (32, 0, 16, 16, 1, 0, 8), (32, 0, 16, 16, -1, 4, 4)]
    rows += [(x, y, 16, 16, -1, 8, 0) for y in (16, 32) for x in (0, 16, 32) if (x, y) != (16, 16)]
    a = np.zeros(len(rows), MV_DTYPE)
    for i, (x, y, w, h, src, mx, my) in enumerate(rows):
        a[i]["w"], a[i]["h"], a[i]["dst_x"], a[i]["dst_y"] = w, h, x + w // 2, y + h // 2
        a[i]["source"], a[i]["motion_x"], a[i]["motion_y"], a[i]["motion_scale"] = src, mx, my, 4
    off, mask = assert_same(a, 48, 48, 2, 1, True, 2, 0.5)
    assert mask.all()
    assert off[0, 0, 0] == 1.0  # past: 8 / 4 / distance 2
    assert (off[0, 0, 4], off[1, 0, 4]) == (2.0, -1.0)  # future only, negated: -(-8, 4) / 4 / 2 * 2 / 1
    assert (off[0, 0, 8], off[1, 0, 8]) == (0.5, 0.5)  # bi-predicted: the past MV
    # the intra macroblock (1, 1): the mean of its 8 neighbours' motion, x: 1, 2, (0 + 0.5) / 2
    # (macroblock (0, 2) holds both MVs of the bi-predicted block), then five 1s
    assert off[0, 4, 4] == (1 + 2 + 0.25 + 5) / 8


@needs_numba
def test_blocks_it_does_not_take_go_to_the_numpy_path():
    a = np.zeros(2, MV_DTYPE)
    a["w"], a["h"], a["dst_x"], a["dst_y"], a["source"], a["motion_x"], a["motion_scale"] = 16, 16, 8, 8, -1, 4, 4
    a[1]["w"] = a[1]["h"] = 4  # a sub-8x8 partition
    assert raster_jit.rasterize(a, 32, 32, 8, 8, 1, 1, False, 2, 0.5) is None
    a[1]["w"] = a[1]["h"] = 16
    a[1]["dst_x"] = -40  # a corrupt block left of the picture
    assert raster_jit.rasterize(a, 32, 32, 8, 8, 1, 1, False, 2, 0.5) is None
    off, mask = rasterize_mvs(a, 32, 32)  # the NumPy path drops it, as before
    assert mask[:4, :4].all() and mask.sum() == 16 and off[0, 0, 0] == 1.0


@needs_numba
@pytest.mark.parametrize("codec", ["h264", "mpeg4"])
def test_every_frame_of_a_real_file(codec, tmp_path):
    """x264 with B-frames and 3 references over a non-multiple-of-16 frame, and MPEG-4 Part 2
    (half-pel, 8x8 4MV blocks): every frame through both paths, both intra rules."""
    from mvseg.data.synthetic import SyntheticConfig, render_clip

    frames = render_clip(3, SyntheticConfig(height=72, width=120, frames=16)).frames
    if codec == "h264":
        from mvseg.video.encode import encode_video

        path = encode_video(frames, tmp_path / "clip.mp4", gop=16, crf=23, bframes=3, ref=3)
    else:
        path = encode_with(frames, tmp_path / "clip.avi", "mpeg4", bframes=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (B-frames and 3 references: composed offsets approximate)
        decoded = list(iter_frames(path, rgb=False))
    distances = reference_distances("".join(f.pict_type for f in decoded))
    taken = 0
    for f, (past, future) in zip(decoded, distances):
        if len(f.mvs) == 0:
            continue
        for fill in (True, False):
            assert_same(f.mvs, 72, 120, past, future, fill, 2, 0.5)
        taken += 1
    assert taken >= 10


@pytest.mark.parametrize("why", ["no numba", "MVSEG_JIT=0"])
def test_without_the_compiled_path_numpy_paints_the_same_frame(monkeypatch, why):
    """Where numba is missing (or switched off) `rasterize_mvs` is the NumPy path, with the same
    answer: a 16x16 past block moving (1, -0.5) px and a future-only 8x8 block, negated."""
    a = np.zeros(2, MV_DTYPE)
    a["w"], a["h"], a["dst_x"], a["dst_y"] = [16, 8], [16, 8], [8, 20], [8, 4]
    a["source"], a["motion_x"], a["motion_y"], a["motion_scale"] = [-1, 1], [4, 8], [-2, 0], 4
    if why == "no numba":
        monkeypatch.setattr(raster_jit, "HAVE_NUMBA", False)
    else:
        monkeypatch.setenv("MVSEG_JIT", "0")
    assert not raster_jit.enabled() and raster_jit.rasterize(a, 16, 32, 4, 8, 1, 1, False, 2, 0.5) is None
    off, mask = rasterize_mvs(a, 16, 32)
    assert mask[:, :4].all() and mask[:2, 4:6].all() and mask.sum() == 16 + 4
    assert (off[0, :, :4] == 1.0).all() and (off[1, :, :4] == -0.5).all()
    assert (off[0, :2, 4:6] == -2.0).all() and (off[1, :2, 4:6] == 0.0).all()
