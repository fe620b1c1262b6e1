"""PerFrame: trains (loss falls), round-trips through a checkpoint, streams."""

from __future__ import annotations

import lightning as L
import torch

from mvseg.data.datamodule import CompressedVideoDataModule
from mvseg.models.segnet import SegNetConfig
from mvseg.strategies import OptimConfig, PerFrame
from mvseg.strategies.loading import load_strategy

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
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
        limit_val_batches=1,
    )
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


def test_runtime_streams_a_video_without_mvs_for_the_per_frame_model(tmp_path):
    """The per-frame baseline reads no motion: the runtime neither exports nor rasterises MVs
    for it, so a VP9 video (no MVs) streams, with the same labels as the network on each frame."""
    import av
    import numpy as np

    from mvseg.runtime import run_stream
    from mvseg.video.decode import decode_video

    p = tmp_path / "clip.webm"
    rng = np.random.default_rng(0)
    with av.open(str(p), "w") as c:
        s = c.add_stream("libvpx-vp9", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for _ in range(4):
            img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    torch.manual_seed(0)
    model = PerFrame(5, 2, net=TINY_NET).eval()
    assert not model.reads_motion
    results = list(run_stream(model, p, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)))
    frames = decode_video(p, mvs=False).frames
    assert [r.index for r in results] == [0, 1, 2, 3]
    for r in results:
        x = (torch.from_numpy(frames[r.index]).permute(2, 0, 1)[None].float() / 255 - 0.5) / 0.25
        with torch.no_grad():
            np.testing.assert_array_equal(r.label, model.net(x).argmax(1)[0].numpy())
