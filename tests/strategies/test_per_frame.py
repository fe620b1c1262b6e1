"""PerFrame: trains (loss falls), round-trips through a checkpoint, streams."""

from __future__ import annotations

import lightning as L
import torch

from mvseg.data.datamodule import CompressedVideoDataModule
from mvseg.models.segnet import SegNetConfig
from mvseg.predict import load_strategy
from mvseg.strategies import OptimConfig, PerFrame

TINY_NET = SegNetConfig(width=0.125, feat_dim=32, head="psp", head_dim=32, dropout=0.0)


def test_training_loss_falls(tiny_dataset):
    torch.manual_seed(0)
    dm = CompressedVideoDataModule(str(tiny_dataset), "folder", keyframe_interval=3, batch_size=4, hflip=False)
    dm.prepare_data()
    dm.setup("fit")
    model = PerFrame(dm.num_classes, 3, net=TINY_NET, optim=OptimConfig(optimizer="adamw", lr=3e-3))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = next(iter(dm.train_dataloader()))
    losses = []
    for _ in range(25):  # fit one batch: the loss must fall well below its start
        loss = model.training_loss(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_checkpoint_round_trip_without_pickle(tiny_dataset, tmp_path):
    dm = CompressedVideoDataModule(str(tiny_dataset), "folder", keyframe_interval=3, batch_size=2)
    model = PerFrame(dm.num_classes, 3, net=TINY_NET)
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0,
                        limit_val_batches=1)
    trainer.fit(model, dm)
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    loaded, data = load_strategy(ckpt)  # torch.load(weights_only=True) inside
    assert isinstance(loaded, PerFrame) and loaded.net.cfg == TINY_NET
    assert data["classes"][0] == "road" and len(data["mean"]) == 3
    model.eval()
    x = torch.randn(1, 3, 64, 128)
    torch.testing.assert_close(loaded.predict_batch({"cur": x}), model.predict_batch({"cur": x}))
    # streaming gives the per-frame prediction whatever the keyframe decision
    torch.testing.assert_close(loaded.stream_step(x, None, None, False), loaded.predict_batch({"cur": x}))
