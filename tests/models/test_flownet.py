"""FlowNet-S (DFF's flow network): shapes, the scale function's init, its losses, learning."""

from __future__ import annotations

import pytest
import torch
from helpers import translating_frames

from mvseg.models.flownet import DIV_FLOW, FlowNetConfig, FlowNetS, endpoint_error, multiscale_epe

SMALL = FlowNetConfig(width=0.125, levels=4)


@pytest.mark.parametrize("size", [(64, 128), (72, 100), (128, 256)])
def test_flow_on_the_feature_grid(size):
    """Half-resolution input, finest flow at 1/4 of it: 1/8 of the frame (ceil for odd sizes)."""
    net = FlowNetS(FlowNetConfig(width=0.125), scale_channels=16)
    flows, scale = net(torch.randn(2, 3, *size), torch.randn(2, 3, *size), all_scales=True)
    h, w = -(-size[0] // 8), -(-size[1] // 8)
    assert flows[-1].shape == (2, 2, h, w) and scale.shape == (2, 16, h, w)
    assert [f.shape[-1] for f in flows] == sorted(f.shape[-1] for f in flows)  # coarse -> fine
    torch.testing.assert_close(scale, torch.ones_like(scale))  # DFF: weight 0, bias 1


def test_losses_on_known_cases():
    target = torch.zeros(1, 2, 16, 16)
    target[:, 0] = 3.0
    exact = [torch.nn.functional.adaptive_avg_pool2d(target, s) for s in (2, 4, 8)]
    assert multiscale_epe(exact, target) == 0
    off = [f + torch.tensor([0.0, 4.0]).view(1, 2, 1, 1) for f in exact]  # 4 px wrong everywhere
    assert multiscale_epe(off, target).item() == pytest.approx((0.32 + 0.08 + 0.02) * 4 / DIV_FLOW)
    valid = torch.zeros(1, 16, 16, dtype=torch.bool)
    valid[:, :8] = True
    bad = target.clone()
    bad[:, :, 8:] = 100.0  # errors only where invalid
    assert endpoint_error(bad, target, valid) == 0
    assert endpoint_error(off[-1], target).item() == pytest.approx(4.0)


def test_flownet_learns_a_translation():
    """Trained on random textures moved by random shifts, the EPE falls clearly below the zero flow's."""
    torch.manual_seed(0)
    net = FlowNetS(SMALL)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)

    def pair(dx, dy, seed):
        f = translating_frames(2, 64, 64, dx, dy, seed=seed)  # content at p in frame 1 is at p + (dx, dy) in 0
        img = torch.from_numpy(f).permute(0, 3, 1, 2).float() / 127.5 - 1
        return img[1:], img[:1], torch.tensor([dx, dy]).view(1, 2, 1, 1).expand(1, 2, 16, 16)

    def batch(seed):
        g = torch.Generator().manual_seed(seed)
        shifts = (torch.rand(4, 2, generator=g) * 8 - 4).tolist()
        cur, key, tgt = zip(*(pair(dx, dy, seed * 10 + i) for i, (dx, dy) in enumerate(shifts)))
        return torch.cat(cur), torch.cat(key), torch.cat(tgt)

    test = batch(999)
    with torch.no_grad():
        before = endpoint_error(net(test[0], test[1])[0], test[2])
    for step in range(120):
        cur, key, tgt = batch(step % 12)
        flows, _ = net(cur, key, all_scales=True)
        loss = multiscale_epe(flows, tgt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = endpoint_error(net(test[0], test[1])[0], test[2])
    zero = test[2].norm(dim=1).mean()
    assert after < 0.7 * zero and after < 0.7 * before
