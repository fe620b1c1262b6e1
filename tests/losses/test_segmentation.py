"""OHEM cross-entropy and the class-presence BCE on hand-built cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mvseg.losses.segmentation import class_presence, class_presence_loss, ohem_cross_entropy


def logits_for(probs_true: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-class logits (1, 2, 1, N) whose probability of the true class 0 is each of `probs_true`."""
    p = torch.tensor(probs_true)
    logits = torch.stack([torch.log(p), torch.log(1 - p)])[None, :, None, :]  # (1, 2, 1, N)
    return logits, torch.zeros(1, 1, len(probs_true), dtype=torch.long)


def test_ohem_averages_only_the_pixels_the_model_gets_wrong_enough():
    logits, target = logits_for([0.9, 0.95, 0.5, 0.2] + [0.99] * 12)  # 2 pixels below p = 0.7
    assert ohem_cross_entropy(logits, target) == pytest.approx((-math.log(0.5) - math.log(0.2)) / 2, rel=1e-5)


def test_ohem_keeps_the_hardest_sixteenth_when_few_are_hard_and_skips_ignored_pixels():
    logits, target = logits_for([0.9] * 31 + [0.8])  # none below 0.7: the hardest 32 // 16 = 2 pixels
    assert ohem_cross_entropy(logits, target) == pytest.approx((-math.log(0.8) - math.log(0.9)) / 2, rel=1e-5)
    logits, target = logits_for([0.1, 0.5, 0.9, 0.9])
    target[0, 0, 0] = 255  # ignored: its loss is 0, never counted
    assert ohem_cross_entropy(logits, target) == pytest.approx(-math.log(0.5), rel=1e-5)
    assert torch.isfinite(ohem_cross_entropy(torch.zeros(1, 3, 2, 2), torch.full((1, 2, 2), 255)))


def test_class_presence_and_its_bce():
    label = torch.tensor([[[0, 0], [2, 255]], [[1, 1], [1, 1]]])
    assert class_presence(label, 3).tolist() == [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    logits = torch.tensor([[5.0, -5.0, 5.0], [0.0, 0.0, 0.0]])
    expect = F.binary_cross_entropy_with_logits(logits, torch.tensor([[1.0, 0, 1], [0, 1, 0]]))
    assert class_presence_loss(logits, label) == pytest.approx(float(expect))
