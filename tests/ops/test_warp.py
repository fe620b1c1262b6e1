"""The PyTorch reference warp: block offsets on a coarser grid than the features."""

from __future__ import annotations

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
    ys, xs = torch.meshgrid(torch.arange(16.0, dtype=torch.float64), torch.arange(16.0, dtype=torch.float64), indexing="ij")
    grid = torch.stack(((xs + dense[0, 0]) / 7.5 - 1, (ys + dense[0, 1]) / 7.5 - 1), -1)[None]
    ref = torch.nn.functional.grid_sample(x, grid, align_corners=True)
    torch.testing.assert_close(out, ref)


def test_gradcheck_features_and_offsets():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    off = (torch.rand(1, 2, 3, 3, dtype=torch.float64) * 3 + 0.3).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: warp_reference(a, b, frame_size=(12, 12)), (x, off))
