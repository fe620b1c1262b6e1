"""DFF and its flow-network pretraining: zero and known flow, training, runtime, weights."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from helpers import fit_batch, runtime_vs_protocol

from mvseg.data.datamodule import CompressedVideoDataModule
from mvseg.models.flownet import FlowNetConfig
from mvseg.models.segnet import SegNetConfig
from mvseg.strategies import DFF, FlowPretrain

NET = SegNetConfig(width=0.125, feat_dim=16, head="plain", head_dim=16, dropout=0.0)
FLOW = FlowNetConfig(width=0.125, levels=4)


def fixed_flow(model: DFF, flow_px: tuple[float, float]):
    """Make the flow network answer a constant flow (and scale 1)."""
    real = model.flownet.forward

    def forward(cur, key, all_scales=False):
        f, s = real(cur, key)
        f = torch.zeros_like(f)
        f[:, 0], f[:, 1] = flow_px
        return f, torch.ones_like(s)

    model.flownet.forward = forward


def batch_for(key, cur, d=1):
    return {"key": key, "cur": cur, "distance": torch.full((key.shape[0],), d)}


def test_zero_flow_reproduces_the_keyframe_prediction():
    torch.manual_seed(0)
    model = DFF(5, 3, net=NET, flownet=FLOW).eval()
    key = torch.randn(2, 3, 32, 48)
    fixed_flow(model, (0.0, 0.0))
    with torch.no_grad():
        torch.testing.assert_close(model.predict_batch(batch_for(key, torch.randn_like(key))), model.net(key))
        # distance 0 is the keyframe itself, whatever the flow network says
        fixed_flow(model, (8.0, 0.0))
        torch.testing.assert_close(model.predict_batch(batch_for(key, key, d=0)), model.net(key))


def test_known_flow_moves_the_prediction():
    torch.manual_seed(1)
    model = DFF(5, 3, net=NET, flownet=FLOW).eval()
    key = torch.randn(1, 3, 64, 96)
    fixed_flow(model, (-16.0, 0.0))  # content at p came from p - 16 px: it moved right
    with torch.no_grad():
        pred = model.predict_batch(batch_for(key, key)).argmax(1)
        ref = model.net(key).argmax(1)
    moved = (pred[0][16:-16, 32:-16] == ref[0][16:-16, 16:-32]).float().mean()
    assert moved > 0.97 and (pred[0][16:-16, 32:-16] == ref[0][16:-16, 32:-16]).float().mean() < moved


def test_scale_function_multiplies_the_warped_features():
    model = DFF(5, 3, net=NET, flownet=FLOW).eval()
    with torch.no_grad():
        model.flownet.scale.bias.fill_(2.0)
        model.flownet.predict_final.weight.zero_()
        model.flownet.predict_final.bias.zero_()
        feat = torch.randn(1, 16, 4, 6)
        img = torch.randn(1, 3, 32, 48)
        torch.testing.assert_close(model.propagate(feat, img, img), 2 * feat)


def test_dff_training_loss_falls(tiny_dataset):
    torch.manual_seed(0)
    dm = CompressedVideoDataModule(
        str(tiny_dataset), "folder", keyframe_interval=3, batch_size=4, hflip=False, train_distances=[2]
    )
    dm.prepare_data()
    dm.setup("fit")
    model = DFF(dm.num_classes, 3, net=NET, flownet=FLOW)
    losses = fit_batch(model, next(iter(dm.train_dataloader())))
    assert losses[-1] < 0.5 * losses[0]
    assert model.flownet.predict_final.weight.grad.abs().sum() > 0  # trained end to end, flow included
    # the scale function learns its weights; its bias stays 1 (DFF's lr_mult 0) and no optimiser holds it
    assert model.flownet.scale.weight.abs().sum() > 0
    assert torch.equal(model.flownet.scale.bias, torch.ones_like(model.flownet.scale.bias))
    assert not any(p is model.flownet.scale.bias for p in model.param_groups())


def test_runtime_equals_the_step_by_step_protocol(tiny_dataset):
    torch.manual_seed(0)
    model = DFF(9, 3, net=NET, flownet=FLOW).eval()
    with torch.no_grad():  # a non-trivial flow and scale, so propagation matters
        model.flownet.predict_final.bias.copy_(torch.tensor([0.1, -0.05]))
        model.flownet.scale.bias.uniform_(0.5, 1.5)
    _, agreement = runtime_vs_protocol(model, tiny_dataset, 3)
    assert len(agreement) == 2 and all(agree > 0.999 for _, _, agree in agreement)


def test_flow_pretraining_then_dff_from_its_checkpoint(tiny_dataset, tmp_path):
    """FlowPretrain lowers the endpoint error on ground-truth flow; DFF loads its flow network."""
    torch.manual_seed(0)
    dm = CompressedVideoDataModule(
        str(tiny_dataset),
        "folder",
        keyframe_interval=3,
        batch_size=4,
        hflip=False,
        with_gt_flow=True,
        train_distances=[2],
    )
    dm.prepare_data()
    dm.setup("fit")
    model = FlowPretrain(9, 3, flownet=FLOW)
    batch = next(iter(dm.train_dataloader()))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    first = model.training_loss(batch)
    for _ in range(30):
        loss = model.training_loss(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert model.training_loss(batch)["EPE"] < 0.7 * first["EPE"]

    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        limit_val_batches=2,
    )
    trainer.fit(model, dm)
    logged = trainer.callback_metrics
    assert {"val/EPE", "val/EPE_mv", "val/EPE_d0", "val/EPE_d2"} <= set(logged)
    trainer.save_checkpoint(tmp_path / "flow.ckpt")
    dff = DFF(9, 3, net=NET, flownet=FLOW, flow_init=str(tmp_path / "flow.ckpt"))
    torch.testing.assert_close(dff.flownet.predict_final.weight, model.flownet.predict_final.weight)
    torch.testing.assert_close(dff.flownet.scale.bias, torch.ones_like(dff.flownet.scale.bias))  # DFF's init
    with pytest.raises(ValueError, match="does not match flownet config"):
        DFF(9, 3, net=NET, flownet=FlowNetConfig(width=0.25, levels=4), flow_init=str(tmp_path / "flow.ckpt"))
    with pytest.raises(FileNotFoundError, match="nope.ckpt: flow_init checkpoint not found"):
        DFF(9, 3, net=NET, flownet=FLOW, flow_init=str(tmp_path / "nope.ckpt"))
    with pytest.raises(ValueError, match="with_gt_flow: true"):
        model.training_loss({k: v for k, v in batch.items() if k != "flow_cur_to_key"})
