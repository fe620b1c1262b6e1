"""CReFF (AR-Seg): reductions to known cases, against a hand computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mvseg.models.creff import CReFF
from mvseg.ops import local_attention_reference


def randomised(creff: CReFF) -> CReFF:
    """CReFF with random Q, K, V convs and biases (biases start at zero)."""
    with torch.no_grad():
        for conv in (creff.q, creff.k, creff.v):
            conv.weight.normal_(0, 0.5)
            conv.bias.normal_(0, 0.1)
    return creff


def test_window_one_and_zero_motion_is_upsampled_lr_plus_v():
    torch.manual_seed(0)
    creff = randomised(CReFF(8, window=1))
    lr, key = torch.randn(2, 8, 4, 6), torch.randn(2, 8, 8, 12)
    out = creff(lr, key, torch.zeros(2, 2, 16, 24), torch.ones(2, 16, 24), (64, 96))
    up = F.interpolate(lr, (8, 12), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, up + creff.v(key))  # one neighbour: softmax weight 1


def test_creff_matches_a_hand_computation_with_motion():
    """7x7 attention over the key feature shifted by the MVs (one feature cell = 8 px)."""
    torch.manual_seed(1)
    creff = randomised(CReFF(4, window=7))
    lr, key = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    off = torch.zeros(1, 2, 16, 16)
    off[:, 0] = 8.0  # content at p came from p + 8 px = one feature cell to the right
    out = creff(lr, key, off, torch.ones(1, 16, 16), (64, 64))
    warped = torch.zeros_like(key)
    warped[..., :-1] = key[..., 1:]
    expect = lr + local_attention_reference(creff.q(lr), creff.k(warped), creff.v(warped), 7)
    torch.testing.assert_close(out, expect)


def test_bad_window():
    with pytest.raises(ValueError, match="odd"):
        CReFF(8, window=4)
