"""The PyTorch reference warp: block offsets on a coarser grid than the features."""

from __future__ import annotations

import math

import pytest
import torch

from mvseg.ops.warp import warp_reference


def test_zero_offsets_are_identity():
    x = torch.randn(2, 5, 12, 16)
    out = warp_reference(x, torch.zeros(2, 2, 3, 4), frame_size=(12, 16))
    torch.testing.assert_close(out, x)


def test_integer_shift_on_feature_grid_and_zero_padding():
    x = torch.randn(1, 3, 8, 8)
    off = torch.zeros(1, 2, 2, 2)
    off[:, 0] = 8.0  # 8 frame px at stride 2 (frame 16x16) = 4 feature px
    out = warp_reference(x, off, frame_size=(16, 16))
    torch.testing.assert_close(out[..., :4], x[..., 4:])
    assert torch.all(out[..., 4:] == 0)


def test_mask_zero_cells_do_not_move():
    x = torch.randn(1, 2, 8, 8)
    off = torch.full((1, 2, 2, 2), 2.0)
    mask = torch.zeros(1, 2, 2)
    torch.testing.assert_close(warp_reference(x, off, mask, frame_size=(8, 8)), x)


def test_matches_grid_sample_with_dense_flow():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 16, 16, dtype=torch.float64)
    off = torch.randn(1, 2, 4, 4, dtype=torch.float64) * 3
    out = warp_reference(x, off)  # frame 16x16 = features: stride 1, a cell is 4x4 pixels
    dense = off.repeat_interleave(4, 2).repeat_interleave(4, 3)
    ys, xs = torch.meshgrid(
        torch.arange(16.0, dtype=torch.float64), torch.arange(16.0, dtype=torch.float64), indexing="ij"
    )
    grid = torch.stack(((xs + dense[0, 0]) / 7.5 - 1, (ys + dense[0, 1]) / 7.5 - 1), -1)[None]
    ref = torch.nn.functional.grid_sample(x, grid, align_corners=True)
    torch.testing.assert_close(out, ref)


def test_gradcheck_features_and_offsets():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    off = (torch.rand(1, 2, 3, 3, dtype=torch.float64) * 3 + 0.3).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: warp_reference(a, b, frame_size=(12, 12)), (x, off))


def naive_warp(x, off, frame):
    """Bilinear backward warp written out pixel by pixel in float64 (zeros outside): each output
    pixel (y, x) reads the offset of the cell under its centre, in frame pixels."""
    b, c, hf, wf = x.shape
    hm, wm = off.shape[-2:]
    out = torch.zeros(b, c, hf, wf, dtype=torch.float64)
    for n in range(b):
        for y in range(hf):
            for xx in range(wf):
                cy, cx = min(int((y + 0.5) * hm / hf), hm - 1), min(int((xx + 0.5) * wm / wf), wm - 1)
                px = xx + float(off[n, 0, cy, cx]) * wf / frame[1]
                py = y + float(off[n, 1, cy, cx]) * hf / frame[0]
                x0, y0 = math.floor(px), math.floor(py)
                for yy, xc, wgt in [
                    (y0, x0, (1 - (px - x0)) * (1 - (py - y0))),
                    (y0, x0 + 1, (px - x0) * (1 - (py - y0))),
                    (y0 + 1, x0, (1 - (px - x0)) * (py - y0)),
                    (y0 + 1, x0 + 1, (px - x0) * (py - y0)),
                ]:
                    if 0 <= yy < hf and 0 <= xc < wf:
                        out[n, :, y, xx] += wgt * x[n, :, yy, xc].double()
    return out


@pytest.mark.parametrize("hf,wf,hm,wm", [(1, 6, 1, 3), (5, 1, 3, 1), (1, 1, 1, 1), (4, 6, 2, 3)])
def test_size_one_axes_move_like_a_plain_bilinear_sampler(hf, wf, hm, wm):
    # an axis of size 1 still moves: an offset of 0.6 px along it leaves 0.4 of the value
    torch.manual_seed(hf * 7 + wf)
    x = torch.randn(2, 3, hf, wf, dtype=torch.float64)
    off = torch.randn(2, 2, hm, wm, dtype=torch.float64) * 1.5
    frame = (4 * hm, 4 * wm)
    torch.testing.assert_close(warp_reference(x, off, frame_size=frame), naive_warp(x, off, frame))


def test_sampling_positions_are_fp32_for_bf16_features():
    # one bright column at x=200 of a W=256 bf16 map, everything moved by 0.25 px: positions in
    # fp32 give the bilinear weights 0.75 / 0.25 exactly (bf16 holds them); positions in bf16
    # (8 bits of mantissa, about 1 px at x=200) smeared the column into other pixels
    x = torch.zeros(1, 1, 2, 256, dtype=torch.bfloat16)
    x[..., 200] = 1
    off = torch.full((1, 2, 1, 64), 0.25)
    off[:, 1] = 0
    out = warp_reference(x, off, frame_size=(4, 256))
    expect = torch.zeros(1, 1, 2, 256, dtype=torch.bfloat16)
    expect[..., 199], expect[..., 200] = 0.25, 0.75
    torch.testing.assert_close(out, expect, atol=0, rtol=0)


def test_nan_offset_reads_zero_in_both_padding_modes():
    x = torch.randn(1, 2, 8, 8) + 5
    off = torch.zeros(1, 2, 2, 2)
    off[0, 0, 0, 0] = float("nan")
    for mode in ("zeros", "border"):
        out = warp_reference(x, off, frame_size=(8, 8), padding_mode=mode)
        assert out[..., :4, :4].eq(0).all() and torch.equal(out[..., 4:, 4:], x[..., 4:, 4:])
