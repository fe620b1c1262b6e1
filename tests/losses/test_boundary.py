"""BDNet's boundary targets and the BCE + IoU + SSIM losses on known inputs."""

from __future__ import annotations

import pytest
import torch

from mvseg.losses import bce_loss, boundary_loss, boundary_map, iou_loss, ssim_loss


def test_boundary_map_of_a_hand_made_label():
    label = torch.zeros(1, 8, 10, dtype=torch.long)
    label[:, :, 5:] = 1  # a vertical edge between columns 4 and 5
    label[0, 0, 0] = 255  # an ignored pixel inside class 0
    edge, valid = boundary_map(label, thickness=1)
    assert edge.shape == valid.shape == (1, 1, 8, 10)
    expect = torch.zeros(8, 10)
    expect[:, 4:6] = 1  # thickness 1: one pixel on each side of the edge
    torch.testing.assert_close(edge[0, 0], expect)
    assert valid[0, 0, 0, 0] == 0 and valid.sum() == 79
    edge2, _ = boundary_map(label, thickness=2)
    assert edge2[0, 0].sum(1).tolist() == [4.0] * 8  # columns 3..6
    # ignored pixels neither are boundary nor make their neighbours boundary
    only_ignore = torch.zeros(1, 6, 6, dtype=torch.long)
    only_ignore[0, 2:4, 2:4] = 255
    assert boundary_map(only_ignore)[0].sum() == 0
    with pytest.raises(ValueError, match="thickness"):
        boundary_map(label, thickness=0)


def test_losses_on_identical_and_opposite_maps():
    torch.manual_seed(0)
    y = (torch.rand(2, 1, 24, 24) > 0.7).float()
    # identical prediction and target: IoU and SSIM losses vanish, BCE is at its minimum (0)
    assert bce_loss(y, y).item() < 1e-4
    assert iou_loss(y, y).item() < 1e-6
    assert abs(ssim_loss(y, y).item()) < 1e-5
    # any other prediction costs more under every loss
    x = (0.8 * y + 0.1).clamp(0, 1)
    assert bce_loss(x, y) > bce_loss(y, y) and iou_loss(x, y) > 0.05 and ssim_loss(x, y) > 0.001
    opposite = 1 - y
    assert iou_loss(opposite, y).item() == pytest.approx(1.0, abs=1e-6)
    assert ssim_loss(opposite, y) > ssim_loss(x, y)
    torch.testing.assert_close(boundary_loss(x, y), bce_loss(x, y) + iou_loss(x, y) + ssim_loss(x, y))


def test_iou_value_and_masked_pixels():
    y = torch.zeros(1, 1, 4, 4)
    y[..., :2, :] = 1  # 8 target pixels
    x = torch.zeros(1, 1, 4, 4)
    x[..., :1, :] = 1  # 4 predicted, all inside: IoU = 4/8
    assert iou_loss(x, y).item() == pytest.approx(0.5, abs=1e-5)
    valid = torch.ones_like(y)
    valid[..., 1, :] = 0  # the missed row is ignored: a perfect match on the rest
    assert iou_loss(x, y, valid).item() == pytest.approx(0.0, abs=1e-5)
    assert bce_loss(x, y, valid).item() < 1e-4
