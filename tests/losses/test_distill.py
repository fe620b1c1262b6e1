"""BDNet's distillation losses: pixel-wise KL and inner-relation distillation."""

from __future__ import annotations

import pytest
import torch

from mvseg.losses import inner_relation_loss, pairwise_similarity, pixelwise_kl


def test_pixelwise_kl_zero_for_identical_and_matches_definition():
    torch.manual_seed(0)
    s, t = torch.randn(2, 5, 4, 6), torch.randn(2, 5, 4, 6)
    assert pixelwise_kl(s, s).abs().item() < 1e-6
    ps, pt = s.softmax(1), t.softmax(1)
    expect = (ps * (ps.log() - pt.log())).sum(1).mean()  # KL(p^S || p^T), mean over pixels
    torch.testing.assert_close(pixelwise_kl(s, t), expect)
    assert pixelwise_kl(s, t) > 0
    # a teacher at another resolution is resized to the student's
    assert pixelwise_kl(s, torch.nn.functional.interpolate(s, scale_factor=2.0, mode="bilinear")).item() < 0.05


def test_inner_relation_zero_for_same_structure_positive_otherwise():
    torch.manual_seed(0)
    f = torch.randn(2, 8, 6, 10)
    phi = pairwise_similarity(f)
    assert phi.shape == (2, 60, 60)
    torch.testing.assert_close(phi.diagonal(dim1=1, dim2=2), torch.ones(2, 60))
    assert inner_relation_loss(f, f, pool=None).item() < 1e-10
    # only the pairwise angles count: a teacher with other (here: duplicated) channels but the
    # same angles gives zero loss, so student and teacher widths may differ
    teacher = torch.cat([f, f], 1)
    assert inner_relation_loss(f, teacher, pool=None).item() == pytest.approx(0.0, abs=1e-10)
    other = torch.randn(2, 16, 6, 10)
    loss = inner_relation_loss(f, other, pool=None)
    assert loss > 0.01
    # pooled to a grid first (the tractable size for large maps)
    assert pairwise_similarity(f, (3, 5)).shape == (2, 15, 15)
    assert inner_relation_loss(f, other, pool=(3, 5)) > 0
