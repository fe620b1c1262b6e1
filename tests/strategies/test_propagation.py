"""prop-MV and interp-MV: zero motion, known motion, training, and the streaming runtime."""

from __future__ import annotations

import pytest
import torch
from helpers import fit_batch, one_step_trainer, runtime_vs_protocol

from mvseg.data.datamodule import CompressedVideoDataModule
from mvseg.models.segnet import SegNetConfig
from mvseg.runtime import stream_stats
from mvseg.strategies import InterpMV, PerFrame, PropMV

NET = SegNetConfig(width=0.125, feat_dim=16, head="plain", head_dim=16, dropout=0.0)


def batch_for(key, cur, off, nxt=None, d=1, nd=1):
    b = key.shape[0]
    hc, wc = off.shape[-2:]
    out = {
        "key": key,
        "cur": cur,
        "offset_cur_to_key": off,
        "mask_cur_to_key": torch.ones(b, hc, wc),
        "distance": torch.full((b,), d),
        "next_distance": torch.full((b,), nd),
    }
    if nxt is not None:
        out.update(next_key=nxt, offset_cur_to_next=-off, mask_cur_to_next=torch.ones(b, hc, wc))
    return out


@pytest.mark.parametrize("cls", [PropMV, InterpMV])
def test_zero_motion_reproduces_the_keyframe_prediction(cls):
    torch.manual_seed(0)
    model = cls(5, 3, net=NET).eval()
    key = torch.randn(2, 3, 32, 48)
    b = batch_for(key, torch.zeros_like(key), torch.zeros(2, 2, 8, 12), nxt=key)
    with torch.no_grad():
        torch.testing.assert_close(model.predict_batch(b), model.net(key))


def test_known_motion_moves_the_prediction():
    """Content that moved 16 px to the right: the propagated prediction moves with it."""
    torch.manual_seed(1)
    model = PropMV(5, 3, net=NET).eval()
    key = torch.randn(1, 3, 64, 96)
    off = torch.zeros(1, 2, 16, 24)
    off[:, 0] = -16.0  # content at p in cur came from p - 16 px in key: it moved right
    with torch.no_grad():
        pred = model.predict_batch(batch_for(key, key, off)).argmax(1)
        ref = model.net(key).argmax(1)
    inner = (slice(16, -16), slice(32, -16))  # away from borders (zero padding, context)
    moved = pred[0][inner] == ref[0][16:-16, 16:-32]
    assert moved.float().mean() > 0.97
    assert (pred[0][inner] == ref[0][inner]).float().mean() < moved.float().mean()


def test_linear_fusion_weights_by_distance():
    model = InterpMV(3, 5, net=NET, fusion="linear")
    a, b = torch.ones(2, 1, 1, 1), torch.zeros(2, 1, 1, 1)
    out = model.combine(a, b, torch.tensor([1, 4]), torch.tensor([4, 1]))
    torch.testing.assert_close(out.flatten(), torch.tensor([0.8, 0.2]))
    torch.testing.assert_close(model.combine(a, b, torch.tensor([0]), torch.tensor([0]))[0], a[0])  # keyframe


@pytest.mark.parametrize("cls,kw", [(PropMV, {}), (InterpMV, {"fusion": "learned"})])
def test_training_loss_falls(tiny_dataset, cls, kw):
    torch.manual_seed(0)
    dm = CompressedVideoDataModule(
        str(tiny_dataset), "folder", keyframe_interval=3, batch_size=4, hflip=False, with_next=True, train_distances=[2]
    )
    dm.prepare_data()
    dm.setup("fit")
    model = cls(dm.num_classes, 3, net=NET, **kw)
    losses = fit_batch(model, next(iter(dm.train_dataloader())))
    assert losses[-1] < 0.5 * losses[0]


def test_init_from_a_per_frame_checkpoint(tiny_dataset, tmp_path):

    dm = CompressedVideoDataModule(str(tiny_dataset), "folder", keyframe_interval=3, batch_size=2)
    pf = PerFrame(9, 3, net=NET)
    trainer = one_step_trainer(tmp_path)
    trainer.fit(pf, dm)
    trainer.save_checkpoint(tmp_path / "pf.ckpt")
    prop = PropMV(9, 3, net=NET, init_from=str(tmp_path / "pf.ckpt"))
    torch.testing.assert_close(
        prop.net.state_dict()["task.classifier.weight"], pf.net.state_dict()["task.classifier.weight"]
    )
    with pytest.raises(ValueError, match="shape mismatches"):
        PropMV(4, 3, net=NET, init_from=str(tmp_path / "pf.ckpt"))
    with pytest.raises(FileNotFoundError, match="nope.ckpt: init_from checkpoint not found"):
        PropMV(9, 3, net=NET, init_from=str(tmp_path / "nope.ckpt"))


@pytest.mark.parametrize("cls,kw", [(PropMV, {}), (InterpMV, {"fusion": "learned"}), (InterpMV, {"fusion": "linear"})])
def test_runtime_equals_the_step_by_step_protocol(tiny_dataset, cls, kw):
    """The streaming runtime's output on a video equals the strategy evaluated on the
    DataModule's samples (same keyframe, same composed offsets) for every annotated frame,
    also when the runtime skips the pixels of the non-keyframes (labels only, as bench runs)."""
    torch.manual_seed(0)
    L_ = 3
    model = cls(9, L_, net=NET, **kw).eval()
    assert not model.reads_nonkey_pixels
    results, agreement = runtime_vs_protocol(model, tiny_dataset, L_, with_next=True, images=False)
    assert all(r.image is None for r in results)
    assert [r.index for r in results] == list(range(12))  # every frame, in display order
    assert [r.is_key for r in results] == [i % L_ == 0 for i in range(12)]
    for frame, d, agree in agreement:
        assert agree > 0.999, (frame, d, agree)
    assert len(agreement) == 2  # frames 5 and 8
    stats = stream_stats(results, wall_s=1.0)
    assert stats["frames"] == 12 and stats["keyframes"] == 4 and stats["latency_max_ms"] >= stats["latency_mean_ms"]


@pytest.fixture(scope="module")
def gop_dataset(tmp_path_factory):
    """The tiny dataset's clips encoded with an I-frame every 3 frames (GOP = L): every next
    keyframe of interp-MV at L = 3 is an I-frame."""
    from mvseg.data.synthetic import SyntheticConfig, make_synthetic_dataset

    root = tmp_path_factory.mktemp("data") / "synthetic_gop3"
    make_synthetic_dataset(
        str(root),
        train_clips=1,
        val_clips=1,
        config=SyntheticConfig(height=64, width=128, frames=12),
        gop=3,
        annotated=(5, 8),
        workers=1,
        progress=False,
    )
    return root


@pytest.mark.parametrize("fusion", ["learned", "linear"])
def test_runtime_equals_the_protocol_when_the_next_keyframe_is_an_iframe(gop_dataset, fusion):
    """With an I-frame every L frames the chain to the next keyframe crosses its I-frame; the
    runtime and the DataModule read the same fields (the I-frame rule), so they agree, and the
    next keyframe is motion-compensated (its mask is not empty)."""
    from mvseg.data.datamodule import CompressedVideoDataModule as DM

    torch.manual_seed(0)
    model = InterpMV(9, 3, net=NET, fusion=fusion).eval()
    results, agreement = runtime_vs_protocol(model, gop_dataset, 3, with_next=True, images=False)
    assert len(agreement) == 2 and all(a > 0.999 for _, _, a in agreement), agreement
    dm = DM(str(gop_dataset), "folder", keyframe_interval=3, with_next=True)
    dm.setup("validate")
    for s in (dm.val_set[i] for i in range(len(dm.val_set))):
        assert s["mask_cur_to_next"].mean() > 0.5, (s["frame"], s["distance"])
