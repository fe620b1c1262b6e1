"""MV rasterisation and the offset-field algebra (composition, inversion, resizing)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import translating_frames

from mvseg.ops.fields import (
    cell_index,
    compose,
    compose_forward,
    extend_chain,
    grid_size,
    invert,
    prepend,
    resize_field,
    sample_field,
    to_feature_grid,
)
from mvseg.video.decode import MV_DTYPE, decode_video, iter_frames
from mvseg.video.encode import encode_video
from mvseg.video.motion import iter_fields, rasterize_mvs, reference_distances


def mv(x, y, w, h, mx, my, source=-1, scale=4):
    """One AVMotionVector for the block with top-left (x, y): dst is the block centre."""
    a = np.zeros(1, MV_DTYPE)
    a["source"], a["w"], a["h"] = source, w, h
    a["dst_x"], a["dst_y"] = x + w // 2, y + h // 2
    a["src_x"], a["src_y"] = x + w // 2 + mx // scale, y + h // 2 + my // scale
    a["motion_x"], a["motion_y"], a["motion_scale"] = mx, my, scale
    return a


@pytest.mark.parametrize("w,h", [(16, 16), (16, 8), (8, 16), (8, 8), (8, 4), (4, 8), (4, 4)])
def test_every_partition_size_covers_its_cells(w, h):
    mvs = mv(16, 8, w, h, mx=6, my=-3)  # quarter-pel: (1.5, -0.75) px
    off, mask = rasterize_mvs(mvs, 32, 48)
    assert off.shape == (2, 8, 12) and mask.shape == (8, 12)
    expect = np.zeros((8, 12), np.float32)
    expect[2 : 2 + h // 4, 4 : 4 + w // 4] = 1
    np.testing.assert_array_equal(mask, expect)
    np.testing.assert_allclose(off[0][mask > 0], 1.5)
    np.testing.assert_allclose(off[1][mask > 0], -0.75)
    assert np.all(off[:, mask == 0] == 0)


def test_macroblock_mixture_and_mpeg4_scale():
    mvs = np.concatenate(
        [
            mv(0, 0, 16, 16, 4, 0),  # 1 px right
            mv(16, 0, 8, 8, 0, 8),  # 2 px down
            mv(24, 0, 8, 8, 2, 0, scale=2),  # MPEG-4 half-pel: 1 px
            mv(16, 8, 4, 4, -4, -4),  # sub-8x8 partition
        ]
    )
    off, mask = rasterize_mvs(mvs, 16, 32)
    assert mask[:, :4].all() and np.all(off[0, :, :4] == 1.0)
    assert mask[:2, 4:6].all() and np.all(off[1, :2, 4:6] == 2.0)
    assert np.all(off[0, :2, 6:8] == 1.0)
    assert off[0, 2, 4] == -1.0 and off[1, 2, 4] == -1.0
    assert mask.sum() == 16 + 4 + 4 + 1  # the rest of the bottom-right macroblock: intra


def test_bframe_rule_past_wins_and_future_is_negated():
    past = mv(0, 0, 16, 16, 8, 0, source=-1)
    fut_same = mv(0, 0, 16, 16, -8, 4, source=1)  # bi-predicted block: the past MV is used
    fut_only = mv(16, 0, 16, 16, -8, 4, source=1)  # future only: negated
    off, mask = rasterize_mvs(np.concatenate([fut_same, past, fut_only]), 16, 32)
    assert np.all(off[0, :, :4] == 2.0) and np.all(off[1, :, :4] == 0.0)
    assert np.all(off[0, :, 4:] == 2.0) and np.all(off[1, :, 4:] == -1.0)
    assert mask.all()


def test_no_mvs_gives_zero_invalid_field():
    off, mask = rasterize_mvs(np.zeros(0, MV_DTYPE), 20, 36)
    assert off.shape == (2, *grid_size(20, 36)) == (2, 5, 9)
    assert not off.any() and not mask.any()


def fill_reference(mvs, height, width, radius=2, max_share=0.5):
    """The intra-block rule written plainly (loops over macroblocks), for rasterize_mvs(intra="fill"):
    a macroblock's motion is the area-weighted mean of the per-frame MVs centred in it; unknown
    macroblocks take the mean of their known 8-neighbours, one ring a step; uncovered cells take
    their macroblock's motion. Only P-frame MVs (one direction, scale 4 or 2, distance 1)."""
    off, mask = rasterize_mvs(mvs, height, width)
    hm, wm = -(-height // 16), -(-width // 16)
    acc, wsum = np.zeros((2, hm, wm)), np.zeros((hm, wm))
    for m in mvs:
        by, bx = min(max(m["dst_y"] // 16, 0), hm - 1), min(max(m["dst_x"] // 16, 0), wm - 1)
        a = float(m["w"]) * float(m["h"])
        acc[:, by, bx] += (
            a * np.float32(m["motion_x"]) / m["motion_scale"],
            a * np.float32(m["motion_y"]) / m["motion_scale"],
        )
        wsum[by, bx] += a
    known = wsum > 0
    if known.all() or known.sum() < (1 - max_share) * known.size:
        return off, mask
    value = acc / np.maximum(wsum, 1e-9)
    for _ in range(radius):
        new_known, new_value = known.copy(), value.copy()
        for y in range(hm):
            for x in range(wm):
                if known[y, x]:
                    continue
                nb = [
                    (j, i)
                    for j in range(y - 1, y + 2)
                    for i in range(x - 1, x + 2)
                    if 0 <= j < hm and 0 <= i < wm and known[j, i]
                ]
                if nb:
                    new_known[y, x] = True
                    new_value[:, y, x] = np.mean([value[:, j, i] for j, i in nb], axis=0)
        known, value = new_known, new_value
    off, mask = off.copy(), mask.copy()
    for cy, cx in zip(*np.nonzero(mask == 0)):
        if known[cy // 4, cx // 4]:
            off[:, cy, cx], mask[cy, cx] = value[:, cy // 4, cx // 4], 1
    return off, mask


def h264_like_mvs(rng, height, width, p_intra):
    """A random P-frame: each macroblock intra (no MV) with probability p_intra, else one 16x16
    block or four 8x8 blocks (one of them split into 4x4s), quarter-pel motion."""
    blocks = []
    for y in range(0, height, 16):
        for x in range(0, width, 16):
            if rng.random() < p_intra:
                continue
            if rng.random() < 0.5:
                blocks.append(mv(x, y, 16, 16, *rng.integers(-40, 40, 2)))
                continue
            for j, (dy, dx) in enumerate(((0, 0), (0, 8), (8, 0), (8, 8))):
                size = 4 if j == 3 else 8
                for sy in range(0, 8, size):
                    for sx in range(0, 8, size):
                        blocks.append(mv(x + dx + sx, y + dy + sy, size, size, *rng.integers(-40, 40, 2)))
    return np.concatenate(blocks) if blocks else np.zeros(0, MV_DTYPE)


@pytest.mark.parametrize(
    "size,p_intra,seed",
    [((64, 96), 0.2, 0), ((50, 70), 0.3, 1), ((96, 160), 0.45, 2), ((64, 64), 0.7, 3), ((48, 80), 0.05, 4)],
)
def test_intra_fill_equals_the_reference(size, p_intra, seed):
    mvs = h264_like_mvs(np.random.default_rng(seed), *size, p_intra)
    off, mask = rasterize_mvs(mvs, *size, intra="fill")
    ref_off, ref_mask = fill_reference(mvs, *size)
    np.testing.assert_array_equal(mask, ref_mask)
    np.testing.assert_allclose(off, ref_off, atol=1e-5)
    raw_off, raw_mask = rasterize_mvs(mvs, *size)
    assert np.array_equal(off[:, raw_mask > 0], raw_off[:, raw_mask > 0])  # MV cells untouched
    if p_intra > 0.5:  # a frame that is mostly intra (a cut coded as a P-frame) is left as it is
        assert np.array_equal(mask, raw_mask)
    elif p_intra >= 0.2:
        assert mask.mean() > raw_mask.mean()


def test_intra_fill_borrows_the_surrounding_motion_and_stops_at_its_radius():
    """A pan of (1.5, -0.5) px: a lone intra macroblock gets exactly the pan and mask 1; in a 6x6
    macroblock intra region the radius-2 fill reaches two rings in and leaves the centre 2x2 out."""

    def pan(holes):
        return np.concatenate(
            [
                mv(x, y, 16, 16, 6, -2)
                for y in range(0, 160, 16)
                for x in range(0, 160, 16)
                if (y // 16, x // 16) not in holes
            ]
        )

    off, mask = rasterize_mvs(pan({(4, 4)}), 160, 160, intra="fill")
    assert mask.all() and np.all(off[0] == 1.5) and np.all(off[1] == -0.5)
    region = {(y, x) for y in range(2, 8) for x in range(2, 8)}
    off, mask = rasterize_mvs(pan(region), 160, 160, intra="fill")
    unfilled = np.ones((10, 10), bool)
    unfilled[4:6, 4:6] = False
    np.testing.assert_array_equal(mask, np.repeat(np.repeat(unfilled, 4, 0), 4, 1).astype(np.float32))
    assert np.all(off[0][mask > 0] == 1.5) and not off[:, mask == 0].any()
    with pytest.raises(ValueError, match="intra must be one of"):
        next(iter_fields("missing.mp4", intra="zero"))


def test_intra_fill_in_a_bframe_uses_the_negated_future_motion():
    fut = np.concatenate([mv(x, 0, 16, 16, -8, 4, source=1) for x in (0, 32)])  # future-only blocks
    off, mask = rasterize_mvs(fut, 16, 48, intra="fill")  # the middle macroblock: intra
    assert mask.all() and np.all(off[0] == 2.0) and np.all(off[1] == -1.0)


def test_real_video_mvs_recover_known_pan(pan_video):
    path, _ = pan_video
    v = decode_video(path)
    for t in (1, 5, 11):
        off, mask = rasterize_mvs(v.mvs[t], 96, 128)
        assert mask.mean() > 0.8
        assert np.median(off[0][mask > 0]) == pytest.approx(2.0, abs=0.25)
        assert np.median(off[1][mask > 0]) == pytest.approx(1.0, abs=0.25)


def test_iframe_takes_the_previous_frames_motion_so_a_chain_crosses_it(pan_video):
    """The I-frame rule: frame 10 (an I-frame, no MVs) takes frame 9's field and mask, so the
    forward chain 8 -> 12 across it recovers the pan; "none" leaves the bitstream's zero field,
    which cuts the chain (mask 0 everywhere, the hole interp-MV had)."""
    path, _ = pan_video
    ext = list(iter_fields(path, rgb=False))
    raw = list(iter_fields(path, rgb=False, iframes="none"))
    assert [f.pict_type for f, _, _ in ext].index("I", 1) == 10
    for t, ((_, o, m), (_, o_raw, m_raw)) in enumerate(zip(ext, raw)):
        if t in (0, 10):
            assert not m_raw.any() and not o_raw.any()
        else:  # P-frames are untouched
            assert np.array_equal(o, o_raw) and np.array_equal(m, m_raw)
    assert np.array_equal(ext[10][1], ext[9][1]) and np.array_equal(ext[10][2], ext[9][2])
    assert not ext[0][2].any()  # nothing before the first frame to extrapolate from

    def links(fields):
        return [torch.from_numpy(fields[j][1]) for j in range(9, 13)], [
            torch.from_numpy(fields[j][2]) for j in range(9, 13)
        ]

    off, valid = compose_forward(*links(ext))
    assert valid.mean() > 0.7
    assert off[0][valid > 0].median() == pytest.approx(-8.0, abs=0.5)  # 4 frames of (+2, +1), forward
    assert off[1][valid > 0].median() == pytest.approx(-4.0, abs=0.5)
    assert compose_forward(*links(raw))[1].sum() == 0
    with pytest.raises(ValueError, match="iframes must be one of"):
        next(iter_fields(path, iframes="zero"))


def test_quarter_pel_precision(tmp_path):
    frames = translating_frames(8, 64, 96, 0.75, -0.5, seed=3)
    v = decode_video(encode_video(frames, tmp_path / "qpel.mp4", gop=8, crf=12))
    off = np.concatenate([rasterize_mvs(v.mvs[t], 64, 96)[0].reshape(2, -1) for t in range(2, 8)], 1)
    assert np.median(off[0]) == pytest.approx(0.75, abs=0.13)
    assert np.median(off[1]) == pytest.approx(-0.5, abs=0.13)


# ----------------------------------------------------------------------------- algebra


def const_field(hc, wc, dx, dy):
    off = torch.zeros(2, hc, wc)
    off[0], off[1] = dx, dy
    return off, torch.ones(hc, wc)


def test_compose_translations_add_and_border_invalidates():
    a, ma = const_field(16, 16, 4.0, 0.0)
    b, mb = const_field(16, 16, 0.0, -2.0)
    c, mc = const_field(16, 16, 1.5, 1.0)
    off, valid = compose([a, b, c], [ma, mb, mc])
    torch.testing.assert_close(off[0], torch.full((16, 16), 5.5))
    torch.testing.assert_close(off[1], torch.full((16, 16), -1.0))
    # cells whose path leaves the 64x64 frame on the right are invalid, the rest valid
    assert valid[:, -1].sum() == 0 and valid[4:12, :10].all()


def test_compose_samples_the_next_field_at_the_displaced_position():
    # f1 moves everything 8 px right; f2 is 1 in the right half of the frame, 0 elsewhere:
    # cells in columns 4..7 land at columns 6..9, whose f2 is the right half's.
    f1, m1 = const_field(4, 16, 8.0, 0.0)
    f2 = torch.zeros(2, 4, 16)
    f2[0, :, 8:] = 1.0
    off, _ = compose([f1, f2], [m1, torch.ones(4, 16)])
    assert torch.all(off[0, :, :6] == 8.0) and torch.all(off[0, :, 6:] == 9.0)


def test_compose_mask_propagates_intra_cells():
    f, m = const_field(8, 8, 4.0, 0.0)  # one cell right
    m2 = torch.ones(8, 8)
    m2[:, 3] = 0  # intra column in the reference
    _, valid = compose([f, torch.zeros(2, 8, 8)], [m, m2])
    assert torch.all(valid[:, 2] == 0) and torch.all(valid[:, 1] == 1)


def test_invert_translation_and_round_trip_on_smooth_field():
    f, m = const_field(12, 12, 3.0, -1.0)
    g, gv = invert(f, m)
    torch.testing.assert_close(g, -f)
    # a smooth rotation-like field: compose(f, invert(f)) is near zero inside the frame
    y, x = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    f = torch.stack([torch.sin(y / 5) * 3, torch.cos(x / 6) * 2])
    m = torch.ones(16, 16)
    g, gv = invert(f, m)
    back, valid = compose([g, f], [gv, m])
    inner = valid[2:-2, 2:-2] > 0
    assert back[:, 2:-2, 2:-2][:, inner].abs().max() < 0.05


def test_sample_field_reads_cell_centres():
    f = torch.arange(12.0).view(1, 1, 3, 4)
    x = torch.tensor([[[1.5, 5.5, 3.5]]])
    y = torch.tensor([[[1.5, 1.5, 5.5]]])
    out = sample_field(f, x, y)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([0.0, 1.0, 4.5]))


def test_to_feature_grid_scales_offsets():
    off = torch.zeros(2, 4, 8)
    off[0, :, 4:] = 8.0  # right half moves 8 frame px
    dense = to_feature_grid(off, (2, 4), frame_size=(16, 32))  # stride 8
    assert dense.shape == (2, 2, 4)
    torch.testing.assert_close(dense[0], torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 2))
    assert cell_index(32, 8).tolist() == [i // 4 for i in range(32)]


def test_resize_field_halves_offsets_and_grid():
    off = torch.zeros(2, 8, 16)
    off[0] = 4.0
    off[1, 4:] = -2.0
    mask = torch.ones(8, 16)
    mask[:, 0] = 0
    new, nm = resize_field(off, mask, (32, 64), (16, 32))
    assert new.shape == (2, 4, 8)
    assert torch.all(new[0] == 2.0) and torch.all(new[1, 2:] == -1.0) and torch.all(new[1, :2] == 0)
    assert torch.all(nm[:, 0] == 0) and torch.all(nm[:, 1:] == 1)


def test_reference_distances_follow_anchors():
    assert reference_distances("IPPP") == [(1, 1)] * 4
    # IBBP: B-frames between anchors 0 and 3; P at 3 references the I at 0
    assert reference_distances("IBBPBBP") == [(1, 1), (1, 2), (2, 1), (3, 1), (1, 2), (2, 1), (3, 1)]


def test_one_pass_fields_use_the_anchor_distances(bframe_video):
    # iter_fields learns a B-frame's future anchor in the same pass (held until it is decoded):
    # the same fields as rasterising each frame with `reference_distances` of the whole stream
    path, _ = bframe_video
    frames = list(iter_frames(path, rgb=False))
    dists = reference_distances("".join(f.pict_type for f in frames))
    assert any(d != (1, 1) for d in dists)
    fields = list(iter_fields(path, rgb=False, iframes="none"))
    assert [f.index for f, _, _ in fields] == list(range(len(frames)))
    for (_, off, mask), d, g in zip(fields, dists, frames):
        want_off, want_mask = rasterize_mvs(g.mvs, 96, 128, *d)
        np.testing.assert_array_equal(off, want_off)
        np.testing.assert_array_equal(mask, want_mask)


def test_distance_scaling_gives_per_frame_offsets():
    mvs = np.concatenate([mv(0, 0, 16, 16, 12, 0, source=-1), mv(16, 0, 16, 16, -8, 0, source=1)])
    off, _ = rasterize_mvs(mvs, 16, 32, past_distance=3, future_distance=2)
    assert np.all(off[0, :, :4] == 1.0)  # 3 px over 3 frames
    assert np.all(off[0, :, 4:] == 1.0)  # -2 px to a frame 2 ahead: +1 px per frame backwards


def test_extend_chain_streams_the_same_offsets_as_compose():
    # a stream extends t-1 -> k to t -> k one frame at a time; the training samples compose the
    # whole chain [f_t, ..., f_{k+1}] at once: both must give the same field and mask
    g = torch.Generator().manual_seed(0)
    fields = [torch.randn(1, 2, 6, 9, generator=g) * 3 for _ in range(5)]
    masks = [(torch.rand(1, 6, 9, generator=g) > 0.1).float() for _ in range(5)]
    chain = None
    for t in range(5):
        chain = extend_chain(chain, fields[t], masks[t])
        off, valid = compose(fields[t::-1], masks[t::-1])
        torch.testing.assert_close(chain[0], off, rtol=0, atol=0)
        torch.testing.assert_close(chain[1], valid, rtol=0, atol=0)
    assert 0 < valid.mean() < 1  # the masks and the border did invalidate some cells


def test_prepend_keeps_the_batch_of_either_input():
    f, m = const_field(4, 6, 4.0, 0.0)  # one field for the whole batch
    chain = compose([torch.zeros(3, 2, 4, 6)], [torch.ones(3, 4, 6)])  # a batch of 3 chains
    off, valid = prepend(f, m, *chain)
    assert off.shape == (3, 2, 4, 6) and valid.shape == (3, 4, 6)
    assert prepend(f, m, f, m)[0].shape == (2, 4, 6)  # unbatched in, unbatched out
