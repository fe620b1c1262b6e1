"""BDNet: training streams (boundary, distillation) around prop-MV's main stream."""

from __future__ import annotations

import pytest
import torch
from helpers import fit_batch, one_step_trainer
from torch.utils.flop_counter import FlopCounterMode

from mvseg.data.datamodule import CompressedVideoDataModule
from mvseg.models.boundary import BoundaryConfig
from mvseg.models.segnet import SegNetConfig
from mvseg.strategies import BDNet, PerFrame, PropMV

NET = SegNetConfig(width=0.125, feat_dim=16, head="psp", head_dim=16, dropout=0.0, split="feat")
TEACHER_NET = SegNetConfig(width=0.25, feat_dim=32, head="psp", head_dim=32, dropout=0.0)


@pytest.fixture(scope="module")
def teacher_ckpt(tiny_dataset, tmp_path_factory):
    """A PerFrame checkpoint (one training step is enough: the tests need its plumbing)."""

    tmp = tmp_path_factory.mktemp("teacher")
    dm = CompressedVideoDataModule(str(tiny_dataset), "folder", keyframe_interval=3, batch_size=2)
    torch.manual_seed(0)
    trainer = one_step_trainer(tmp)
    trainer.fit(PerFrame(9, 3, net=TEACHER_NET), dm)
    trainer.save_checkpoint(tmp / "teacher.ckpt")
    return tmp / "teacher.ckpt"


@pytest.fixture(scope="module")
def train_batch(tiny_dataset):
    dm = CompressedVideoDataModule(
        str(tiny_dataset), "folder", keyframe_interval=3, batch_size=4, hflip=False, train_distances=[2]
    )
    dm.prepare_data()
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


def test_full_bdnet_loss_falls_and_logs_every_term(teacher_ckpt, train_batch):
    torch.manual_seed(0)
    model = BDNet(9, 3, net=NET, teacher=str(teacher_ckpt))
    parts = model.training_loss(train_batch)
    assert set(parts) == {"loss", "ce", "boundary", "distill_pw", "distill_inn"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in parts.values())
    torch.testing.assert_close(
        parts["loss"], parts["ce"] + parts["boundary"] + parts["distill_pw"] + parts["distill_inn"]
    )
    losses = fit_batch(model, train_batch, steps=30)
    after = model.training_loss(train_batch)
    assert losses[-1] < 0.7 * losses[0]
    # the main stream learns the labels, the boundary stream the silhouettes, and the student's
    # feature relations move to the teacher's (ce 2.27 -> 1.22, L_B 7.2 -> 4.5, l_inn 0.15 -> 0.05)
    assert after["ce"] < 0.65 * parts["ce"] and after["boundary"] < 0.75 * parts["boundary"]
    assert after["distill_inn"] < 0.5 * parts["distill_inn"]


def test_teacher_is_frozen_and_not_part_of_the_model(teacher_ckpt, train_batch):
    torch.manual_seed(0)
    model = BDNet(9, 3, net=NET, teacher=str(teacher_ckpt))
    before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    model.train()
    fit_batch(model, train_batch, steps=2)
    assert all(p.grad is None for p in model.teacher.parameters())  # no gradient reaches it
    for k, v in model.teacher.state_dict().items():  # BatchNorm statistics included
        torch.testing.assert_close(v, before[k])
    assert not model.teacher.training
    assert not any(k.startswith("teacher") or "_teacher" in k for k in model.state_dict())
    with pytest.raises(ValueError, match="teacher has 9 classes, the student 4"):
        BDNet(4, 3, net=NET, teacher=str(teacher_ckpt))
    with pytest.raises(FileNotFoundError, match="nope.ckpt: teacher checkpoint not found"):
        BDNet(9, 3, net=NET, teacher=str(teacher_ckpt.parent / "nope.ckpt"))
    with pytest.raises(ValueError, match="needs a teacher"):
        BDNet(9, 3, net=NET).on_fit_start()  # at the start of training, not when loading a trained model


def test_trained_bdnet_loads_and_predicts_without_its_teacher(teacher_ckpt, tiny_dataset, train_batch, tmp_path):

    from mvseg.strategies.loading import load_strategy

    torch.manual_seed(0)
    model = BDNet(9, 3, net=NET, teacher=str(teacher_ckpt))
    dm = CompressedVideoDataModule(str(tiny_dataset), "folder", keyframe_interval=3, batch_size=2)
    trainer = one_step_trainer(tmp_path)
    trainer.fit(model, dm)
    trainer.save_checkpoint(tmp_path / "bdnet.ckpt")
    teacher_ckpt.rename(teacher_ckpt.with_suffix(".away"))  # the teacher file is gone
    try:
        loaded, _ = load_strategy(tmp_path / "bdnet.ckpt")
    finally:
        teacher_ckpt.with_suffix(".away").rename(teacher_ckpt)
    assert isinstance(loaded, BDNet) and loaded.teacher is None
    b = {k: v for k, v in train_batch.items() if k != "label"}
    with torch.no_grad():
        torch.testing.assert_close(loaded.predict_batch(b), model.eval().predict_batch(b))


def test_ablation_switches_remove_streams(train_batch):
    torch.manual_seed(0)
    mv_only = BDNet(9, 3, net=NET, boundary_weight=0, distill_weight=0)  # the "+MV" row
    assert mv_only.boundary is None and mv_only.teacher is None
    parts = mv_only.training_loss(train_batch)
    assert set(parts) == {"loss", "ce"}
    # the same loss as prop-MV's on the same weights
    prop = PropMV(9, 3, net=NET)
    prop.load_state_dict(mv_only.state_dict())
    torch.testing.assert_close(parts["loss"], prop.training_loss(train_batch)["loss"])
    bas = BDNet(9, 3, net=NET, distill_weight=0, boundary=BoundaryConfig(levels=["layer2", "layer1"], bam="plain"))
    assert len(bas.boundary.bams) == 2 and set(bas.training_loss(train_batch)) == {"loss", "ce", "boundary"}
    with pytest.raises(ValueError, match="boundary.levels must name backbone stages"):
        BDNet(9, 3, net=NET, distill_weight=0, boundary=BoundaryConfig(levels=["layer9"]))


def test_inference_is_prop_mv_and_costs_the_same(teacher_ckpt, train_batch):
    """The training-only streams change nothing at inference: same output, same FLOPs."""
    torch.manual_seed(0)
    bd = BDNet(9, 3, net=NET, teacher=str(teacher_ckpt)).eval()
    prop = PropMV(9, 3, net=NET).eval()
    prop.net.load_state_dict(bd.net.state_dict())
    b = {k: v for k, v in train_batch.items() if k != "label"}
    with torch.no_grad():
        with FlopCounterMode(display=False) as f_bd:
            out_bd = bd.predict_batch(b)
        with FlopCounterMode(display=False) as f_prop:
            out_prop = prop.predict_batch(b)
    torch.testing.assert_close(out_bd, out_prop)
    assert f_bd.get_total_flops() == f_prop.get_total_flops() > 0
    # the streaming path too (keyframe, then a propagated frame)
    bd.stream_reset(), prop.stream_reset()
    x, off, m = b["key"][:1], b["offset_cur_to_key"][:1], b["mask_cur_to_key"][:1]
    with torch.no_grad():
        for key in (True, False):
            torch.testing.assert_close(bd.stream_step(x, off, m, key), prop.stream_step(x, off, m, key))
