"""Li et al.'s deviation predictor, kernel predictor and AdaptNet fusion; S_l / S_h split."""

from __future__ import annotations

import math

import pytest
import torch

from mvseg import ops
from mvseg.models.adaptive import (
    AdaptNetFusion,
    DeviationPredictor,
    KernelPredictor,
    deviation_target,
    keyframe_gain_target,
)
from mvseg.models.segnet import SegNet, SegNetConfig


def test_deviation_target_on_a_hand_made_pair():
    """Key labels all 0; current labels: 0 on 12 of 16 pixels, 2 on 3, 1 on 1 -> 4/16 differ."""
    lab_k = torch.zeros(1, 4, 4, dtype=torch.long)
    lab_t = lab_k.clone()
    lab_t[0, 0, :3] = 2
    lab_t[0, 3, 3] = 1
    onehot = lambda lab: torch.nn.functional.one_hot(lab, 3).permute(0, 3, 1, 2).float()  # noqa: E731
    target = deviation_target(onehot(lab_k), onehot(lab_t))
    assert target.shape == (1,)
    assert target.item() == pytest.approx(4 / 16)
    two = deviation_target(onehot(torch.cat([lab_k, lab_k])), onehot(torch.cat([lab_k, lab_t])))
    torch.testing.assert_close(two, torch.tensor([0.0, 0.25]))


def test_keyframe_gain_target_on_a_hand_made_frame():
    """Label: 0 everywhere but 2 ignored pixels (14 labelled). The propagated labels are wrong on
    5 labelled pixels (and on one ignored), the full network's on 1: a keyframe gains 4/14. Where
    the full network is the worse one the gain is 0, and a frame with nothing labelled gives 0."""
    onehot = lambda lab: torch.nn.functional.one_hot(lab, 3).permute(0, 3, 1, 2).float()  # noqa: E731
    label = torch.zeros(1, 4, 4, dtype=torch.long)
    label[0, 3, 2:] = 255
    prop, full = label.clamp(max=2).clone(), label.clamp(max=2).clone()
    prop[0, 0, :] = 1
    prop[0, 1, 0] = 2
    prop[0, 3, 3] = 1  # an ignored pixel: not counted
    full[0, 2, 2] = 1
    gain = keyframe_gain_target(onehot(prop), onehot(full), label, 255)
    assert gain.shape == (1,) and gain.item() == pytest.approx(4 / 14)
    swapped = keyframe_gain_target(onehot(full), onehot(prop), label, 255)
    assert swapped.item() == 0.0
    nothing = keyframe_gain_target(onehot(prop), onehot(full), torch.full_like(label, 255), 255)
    assert nothing.item() == 0.0


def test_deviation_predictor_shape_and_range():
    torch.manual_seed(0)
    dev = DeviationPredictor(8, channels=16)
    a, b = torch.randn(3, 8, 6, 10), torch.randn(3, 8, 6, 10)
    out = dev(a, b)
    assert out.shape == (3,)
    assert ((out > 0) & (out < 1)).all()
    # it reads the difference only: the same difference gives the same deviation
    torch.testing.assert_close(dev(a + 1.0, b + 1.0), out)


def test_fresh_kernel_predictor_propagates_almost_unchanged_features():
    torch.manual_seed(0)
    kp = KernelPredictor(8, kernel_size=9, channels=16)
    low_k, low_t = torch.randn(2, 8, 6, 10), torch.randn(2, 8, 6, 10)
    k = kp(low_k, low_t)
    assert k.shape == (2, 81, 6, 10)
    torch.testing.assert_close(k.sum(1), torch.ones(2, 6, 10))  # softmax over the taps
    centre = math.exp(8) / (math.exp(8) + 80)
    torch.testing.assert_close(k[:, 40], torch.full((2, 6, 10), centre))


def test_sv_conv_with_a_one_hot_kernel_is_the_identity_or_a_shift():
    f = torch.randn(1, 5, 6, 7)
    centre = torch.zeros(1, 9, 6, 7)
    centre[:, 4] = 1
    torch.testing.assert_close(ops.sv_conv(f, centre), f)
    right = torch.zeros(1, 9, 6, 7)
    right[:, 5] = 1  # tap (dy, dx) = (0, +1): out[p] = f[p + (0, 1)]
    out = ops.sv_conv(f, right)
    torch.testing.assert_close(out[..., :-1], f[..., 1:])
    assert (out[..., -1] == 0).all()


def test_fusion_starts_as_the_propagated_feature_and_learns():
    torch.manual_seed(0)
    fusion = AdaptNetFusion(16, 8, channels=4)
    high, low = torch.randn(2, 16, 6, 10), torch.randn(2, 8, 12, 20)  # a stride-4 low stage is resized
    torch.testing.assert_close(fusion(high, low), high)
    fusion(high, low).pow(2).sum().backward()
    assert fusion.fuse.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("split", ["head", "feat"])
@pytest.mark.parametrize("stage", ["layer1", "layer2", "layer3"])
def test_low_then_high_is_the_whole_feature_network(split, stage):
    torch.manual_seed(0)
    net = SegNet(SegNetConfig(width=0.125, feat_dim=16, head_dim=16, split=split), 4).eval()
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(net.high_features(net.low_features(x, stage), stage), net.features(x))


def test_split_needs_a_resnet_and_a_known_stage():
    net = SegNet(SegNetConfig(width=0.125, feat_dim=16, head_dim=16), 4)
    with pytest.raises(ValueError, match="layer4"):
        net.low_features(torch.zeros(1, 3, 16, 16), "layer4")
    pix = SegNet(SegNetConfig(backbone="pixel", head="pixel"), 4)
    with pytest.raises(ValueError, match="ResNet"):
        pix.low_features(torch.zeros(1, 3, 16, 16))
