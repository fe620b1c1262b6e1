"""AR-Seg: FST loss by hand, frozen HR network, training, protocol, runtime, stage 1."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import fit_batch, runtime_vs_protocol

from mvseg.data.datamodule import CompressedVideoDataModule
from mvseg.models.segnet import SegNetConfig
from mvseg.strategies import ARSeg, PerFrame
from mvseg.strategies.arseg import features

NET = SegNetConfig(width=0.125, feat_dim=16, head="plain", head_dim=16, dropout=0.0)


def batch_for(key, cur, label, d=1):
    b, _, h, w = key.shape
    return {
        "key": key,
        "cur": cur,
        "label": label,
        "offset_cur_to_key": torch.zeros(b, 2, h // 4, w // 4),
        "mask_cur_to_key": torch.ones(b, h // 4, w // 4),
        "distance": torch.full((b,), d),
    }


def test_fst_loss_by_hand_and_nothing_reaches_the_frozen_hr_network():
    torch.manual_seed(0)
    model = ARSeg(5, 12, net=NET, lr_scale=0.5, fst_weight=0.7).train()
    key, cur = torch.randn(2, 3, 32, 48), torch.randn(2, 3, 32, 48)
    label = torch.randint(0, 5, (2, 32, 48))
    losses = model.training_loss(batch_for(key, cur, label))
    # by hand: LR feature of the half-size frame, CReFF with the HR key feature, HR classifier
    with torch.no_grad():
        hr_key, hr_cur = features(model.hr, key), features(model.hr, cur)
        lr = features(model.lr, F.interpolate(cur, (16, 24), mode="bilinear", align_corners=False))
        fused = model.creff(lr, hr_key, torch.zeros(2, 2, 8, 12), torch.ones(2, 8, 12), (32, 48))
        logits = F.interpolate(model.hr.task.classifier(fused), (32, 48), mode="bilinear", align_corners=False)
        mse = ((fused - hr_cur) ** 2).mean()
        ce = F.cross_entropy(logits, label)
    torch.testing.assert_close(losses["fst_mse"], mse)
    torch.testing.assert_close(losses["loss"], ce + 0.7 * mse)
    losses["loss"].backward()
    assert all(p.grad is None for p in model.hr.parameters())  # HR network and shared classifier frozen
    assert model.lr.feat.feat[0].weight.grad.abs().sum() > 0 and model.creff.q.weight.grad.abs().sum() > 0
    assert not model.hr.training  # BatchNorm statistics frozen too


def test_train_lr_false_trains_creff_only():
    """Our option: stage 2 with the stage-1 LR branch fixed (weights and BatchNorm statistics);
    only CReFF's convs learn."""
    torch.manual_seed(0)
    model = ARSeg(5, 12, net=NET, train_lr=False).train()
    lr_before = {k: v.clone() for k, v in model.lr.state_dict().items()}
    key, cur = torch.randn(2, 3, 32, 48), torch.randn(2, 3, 32, 48)
    model.training_loss(batch_for(key, cur, torch.randint(0, 5, (2, 32, 48))))["loss"].backward()
    assert all(p.grad is None for p in model.lr.parameters()) and not model.lr.training
    assert model.creff.v.weight.grad.abs().sum() > 0
    for k, v in model.lr.state_dict().items():
        torch.testing.assert_close(v, lr_before[k])


def test_keyframes_go_through_the_hr_model():
    torch.manual_seed(0)
    model = ARSeg(5, 12, net=NET).eval()
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        out = model.predict_batch(batch_for(x, x, None, d=0))
        torch.testing.assert_close(out, model.hr(x))
        assert not torch.allclose(model.predict_batch(batch_for(x, x, None, d=3)), out)


def test_arseg_training_loss_falls_and_stage_one_feeds_stage_two(tiny_dataset, tmp_path):
    import lightning as L

    torch.manual_seed(0)
    dm = CompressedVideoDataModule(
        str(tiny_dataset), "folder", keyframe_interval=3, batch_size=4, hflip=False, train_distances=[2]
    )
    dm.prepare_data()
    dm.setup("fit")
    # the HR image model first (AR-Seg starts from a trained one: a frozen random classifier
    # would bound the loss), saved as a per-frame checkpoint
    pf = PerFrame(dm.num_classes, 3, net=NET)
    batch = next(iter(dm.train_dataloader()))
    fit_batch(pf, batch, steps=30)
    torch.save({"state_dict": {f"net.{k}": v for k, v in pf.net.state_dict().items()}}, tmp_path / "hr.ckpt")
    model = ARSeg(dm.num_classes, 3, net=NET, init_from=str(tmp_path / "hr.ckpt"))
    torch.testing.assert_close(model.lr.task.head.conv[0].weight, pf.net.task.head.conv[0].weight)  # LR starts as HR
    hr_before = {k: v.clone() for k, v in model.hr.state_dict().items()}
    losses = fit_batch(model, batch)
    assert losses[-1] < 0.5 * losses[0]
    for k, v in model.hr.state_dict().items():  # BN running stats included
        torch.testing.assert_close(v, hr_before[k])
    # stage 1 (LR branch alone) is distance-invariant; its LR weights initialise stage 2
    stage1 = ARSeg(dm.num_classes, 3, net=NET, stage="lr")
    assert stage1.distance_invariant and stage1.creff is None
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        limit_val_batches=1,
    )
    trainer.fit(stage1, dm)
    trainer.save_checkpoint(tmp_path / "lr.ckpt")
    stage2 = ARSeg(dm.num_classes, 3, net=NET, lr_init=str(tmp_path / "lr.ckpt"))
    torch.testing.assert_close(stage2.lr.feat.feat[0].weight, stage1.lr.feat.feat[0].weight)
    with pytest.raises(ValueError, match="lr_scale"):
        ARSeg(9, 3, net=NET, lr_scale=2.0)


def test_runtime_equals_the_step_by_step_protocol(tiny_dataset):
    torch.manual_seed(0)
    model = ARSeg(9, 3, net=NET).eval()
    _, agreement = runtime_vs_protocol(model, tiny_dataset, 3)
    assert len(agreement) == 2 and all(agree > 0.999 for _, _, agree in agreement)
