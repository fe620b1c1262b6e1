"""BiSeNet-18 (AR-Seg's second backbone): structure, shapes, cost against the paper's Table 1."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import fit_batch

from mvseg.models.segnet import SegNet, SegNetConfig

TINY = SegNetConfig(backbone="bisenet18", width=0.125, feat_dim=32, head="plain", head_dim=32, dropout=0.0)


def test_bisenet_features_at_stride_8_and_the_classifier_on_top():
    """N_feat -> (B, 256 w, H/8, W/8), also for sizes that are not multiples of 32; the network
    is up-sampled(classifier(N_feat))."""
    torch.manual_seed(0)
    net = SegNet(TINY, 7).eval()
    for h, w in ((64, 128), (72, 100), (50, 66)):
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            f = net.features(x)
            assert f.shape == (2, 32, -(-h // 8), -(-w // 8))
            # split "head": N_feat includes the output head's 3x3 conv, N_task is the classifier
            want = F.interpolate(net.task.classifier(f), (h, w), mode="bilinear", align_corners=False)
            torch.testing.assert_close(net(x), want)
    # the context path reaches the 1/32 stage: a change far away in the image changes the feature
    x = torch.randn(1, 3, 64, 128)
    y = x.clone()
    y[..., :, 96:] += 3.0
    with torch.no_grad():
        assert not torch.allclose(net.features(x)[..., :2, :2], net.features(y)[..., :2, :2])


def test_bisenet_config_errors():
    with pytest.raises(ValueError, match="feat_dim must be its FFM's 32 channels"):
        SegNet(SegNetConfig(backbone="bisenet18", width=0.125, feat_dim=16, head="plain", head_dim=16), 5)
    with pytest.raises(ValueError, match="output stride 8"):
        SegNet(SegNetConfig(backbone="bisenet18", width=0.125, feat_dim=32, output_stride=16, head="plain"), 5)
    net = SegNet(TINY, 5)
    with pytest.raises(ValueError, match="no backbone stages"):
        net.features(torch.randn(1, 3, 32, 32), return_stages=True)
    with pytest.raises(ValueError, match="need a ResNet backbone"):
        net.low_features(torch.randn(1, 3, 32, 32))


def test_bise18_cost_and_ar_ratios_match_the_papers_table_1():
    """The authors' BiSeNet18 at 720x960: AR^s / 1.0x as their Table 1 (0.542, 0.420, 0.322);
    our 1.0x count of their architecture is 39.1 GMACs (their table says 58.83)."""
    from mvseg.bench.flops import BACKBONES, PAPER, arseg_flops

    full = arseg_flops(BACKBONES["bise18"], 720, 960, 1.0, 12, num_classes=11)["per_frame"]
    assert full / 2e9 == pytest.approx(39.1, rel=0.01)
    for s in (0.7, 0.6, 0.5):
        ratio = arseg_flops(BACKBONES["bise18"], 720, 960, s, 12, num_classes=11)["per_frame"] / full
        assert ratio == pytest.approx(PAPER["bise18"][(720, 960)][s] / 58.83, abs=0.01), s


def test_arseg_with_bisenet_trains():
    """AR-Seg on BiSeNet: CReFF on the output head's feature, the HR classifier shared."""
    from mvseg.strategies import ARSeg, PerFrame

    torch.manual_seed(0)
    # 8x8-pixel blocks of 5 colours (a stride-8 network can resolve them)
    label = torch.randint(0, 5, (4, 8, 12)).repeat_interleave(8, 1).repeat_interleave(8, 2)  # (4, 64, 96)
    x = torch.randn(5, 3)[label].permute(0, 3, 1, 2) + 0.3 * torch.randn(4, 3, 64, 96)
    batch = {
        "key": x,
        "cur": x + 0.05 * torch.randn_like(x),
        "label": label,
        "offset_cur_to_key": torch.zeros(4, 2, 16, 24),
        "mask_cur_to_key": torch.ones(4, 16, 24),
        "distance": torch.full((4,), 2),
    }
    hr = PerFrame(5, 3, net=TINY)  # a trained HR model first: a frozen random classifier bounds the loss
    fit_batch(hr, batch, steps=30)
    model = ARSeg(5, 3, net=TINY, lr_scale=0.5)
    model.hr.load_state_dict(hr.net.state_dict())
    model.lr.load_state_dict(hr.net.state_dict())
    losses = fit_batch(model, batch, steps=30)
    assert losses[-1] < 0.7 * losses[0]
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.hr.parameters())


def test_psp_up_head_decodes_to_full_resolution_and_arseg_uses_it():
    """The CamVid PSPNet decoder: features at 8x the trunk's resolution (the full frame at output
    stride 8); AR-Seg's LR-only stage up-samples its feature to that size."""
    from mvseg.strategies import ARSeg

    cfg = SegNetConfig(width=0.125, feat_dim=16, head="psp_up", head_dim=8, dropout=0.0)
    net = SegNet(cfg, 5).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert net.features(x).shape == (2, 8, 64, 96) and net.feature_size(64, 96) == (64, 96)
        assert net(x).shape == (2, 5, 64, 96)
    model = ARSeg(5, 3, net=cfg, stage="lr").eval()
    with torch.no_grad():
        assert model.lr_feature(x, None, None, None).shape == (2, 8, 64, 96)
