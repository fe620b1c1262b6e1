"""Backbones (torchvision-compatible dilated ResNets), heads, and the N_feat / N_task split."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mvseg.models import HEADS, ResNet, SegNet, SegNetConfig, load_pretrained


@pytest.mark.parametrize("depth,params", [("resnet18", 11_176_512), ("resnet50", 23_508_032)])
def test_parameter_names_and_counts_match_torchvision(depth, params):
    m = ResNet(depth, output_stride=8, width=1.0)
    # torchvision's resnet18 / resnet50 have 11,689,512 / 25,557,032 parameters incl. the fc layer
    assert sum(p.numel() for p in m.parameters()) == params
    sd = m.state_dict()
    assert sd["conv1.weight"].shape == (64, 3, 7, 7)
    assert "layer2.0.downsample.0.weight" in sd and "layer2.0.downsample.1.running_var" in sd
    last = "layer4.1.bn2.running_var" if depth == "resnet18" else "layer4.2.conv3.weight"
    assert last in sd


@pytest.mark.parametrize("os_", [8, 16, 32])
def test_output_stride(os_):
    m = ResNet("resnet18", output_stride=os_, width=0.25).eval()
    out = m(torch.randn(1, 3, 64, 96))
    assert out["layer4"].shape[-2:] == (64 // os_, 96 // os_)
    assert out["layer1"].shape[-2:] == (16, 24)


def test_load_pretrained_by_path(tmp_path):
    src = ResNet("resnet18", width=1.0)
    sd = dict(src.state_dict())
    sd["fc.weight"], sd["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    path = tmp_path / "resnet18.pth"
    torch.save(sd, path)
    dst = ResNet("resnet18", width=1.0)
    assert sorted(load_pretrained(dst, path)) == ["fc.bias", "fc.weight"]
    torch.testing.assert_close(dst.state_dict()["layer3.1.conv2.weight"], sd["layer3.1.conv2.weight"])
    with pytest.raises(ValueError, match="width must be 1.0"):
        load_pretrained(ResNet("resnet18", width=0.5), path)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_pretrained(dst, tmp_path / "nope.pth")


@pytest.mark.parametrize("head", sorted(HEADS))
def test_segnet_shapes_and_split(head):
    cfg = SegNetConfig(width=0.125, feat_dim=32, head=head, head_dim=16)
    net = SegNet(cfg, num_classes=5).eval()
    x = torch.randn(2, 3, 64, 96)
    feat = net.feat(x)  # N_feat
    assert feat.shape == (2, 32, 8, 12)
    logits = net.task(feat)  # N_task (psp_up decodes to 8x the feature grid)
    up = getattr(net.task.head, "upsampling", 1)
    assert logits.shape == (2, 5, 8 * up, 12 * up) and net.feature_size(64, 96) == (8 * up, 12 * up)
    assert net(x).shape == (2, 5, 64, 96)


def test_aspp_v2_head_and_classifier_are_deeplabv2s_sum_of_four_dilated_convs_to_the_classes():
    """DeepLabv2's ASPP: the class scores are a sum of four dilated 3x3 convs (rates 6..24) of
    the backbone feature; head + 1x1 classifier is exactly that (folded into one conv per rate)."""
    from mvseg.models.heads import ASPPv2Head

    torch.manual_seed(0)
    head, cls = ASPPv2Head(8, 6), torch.nn.Conv2d(6, 3, 1)
    x = torch.randn(2, 8, 30, 31)
    w_c, b_c = cls.weight[:, :, 0, 0], cls.bias  # (3, 6), (3,)
    expect = b_c.view(1, 3, 1, 1)
    for conv, r in zip(head.branches, (6, 12, 18, 24)):
        w = torch.einsum("kc,cihw->kihw", w_c, conv.weight)  # the branch folded into class scores
        expect = expect + F.conv2d(x, w, w_c @ conv.bias, padding=r, dilation=r)
    with torch.no_grad():
        torch.testing.assert_close(cls(head(x)), expect, rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.ReLU)) for m in head.modules())


@pytest.mark.parametrize("split,channels", [("head", 16), ("feat", 32)])
def test_split_features_then_logits_is_the_whole_network(split, channels):
    # propagation cuts the network at net.split; with no motion the two halves are the network
    net = SegNet(SegNetConfig(width=0.125, feat_dim=32, head="psp", head_dim=16, split=split), 5).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        feat = net.features(x)
        assert feat.shape == (2, channels, 8, 12) and net.feature_dim == channels
        logits = F.interpolate(net.logits(feat), (64, 96), mode="bilinear", align_corners=False)
        torch.testing.assert_close(logits, net(x))
    with pytest.raises(ValueError, match="net.split must be"):
        SegNet(SegNetConfig(width=0.125, split="backbone"), 5)


def test_unknown_backbone_and_head():
    with pytest.raises(ValueError, match="unknown backbone 'resnet7'"):
        SegNet(SegNetConfig(backbone="resnet7"), 3)
    with pytest.raises(ValueError, match="unknown head 'fpn'"):
        SegNet(SegNetConfig(head="fpn", width=0.125), 3)
