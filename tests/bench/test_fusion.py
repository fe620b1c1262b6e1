"""`mvseg bench fusion`: AR-Seg's CReFF against its two inputs alone, per keyframe distance."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch

from mvseg.bench.fusion import fusion_table
from mvseg.cli import main
from mvseg.data.datamodule import CompressedVideoDataModule
from mvseg.models.segnet import SegNetConfig
from mvseg.strategies import ARSeg

NET = SegNetConfig(width=0.125, feat_dim=16, head="plain", head_dim=16, dropout=0.0)


def trainer(tmp_path, **kw) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kw,
    )


def test_creff_row_is_the_protocol_and_best_of_is_the_best(tiny_dataset, tmp_path):
    torch.manual_seed(0)
    model = ARSeg(9, 3, net=NET).eval()
    rows = {r["fusion"]: r for r in fusion_table(model, str(tiny_dataset), 3, batch_size=5)}
    assert list(rows) == ["lr", "warp", "creff", "mean", "best_of"]
    dm = CompressedVideoDataModule(str(tiny_dataset), "folder", keyframe_interval=3, batch_size=4)
    m = trainer(tmp_path).validate(model, dm, verbose=False)[0]
    for d in range(3):  # the model's own prediction, whatever the batching
        assert rows["creff"][f"miou_d{d}"] == pytest.approx(m[f"val/mIoU_d{d}"], abs=1e-6)
        assert rows["best_of"][f"miou_d{d}"] == max(rows[c][f"miou_d{d}"] for c in ("lr", "warp", "creff", "mean"))
    assert len({rows[c]["miou_d0"] for c in rows}) == 1  # d = 0 is the HR model for every row
    assert rows["creff"]["miou_mean"] == pytest.approx(m["val/mIoU"], abs=1e-6)


def test_warp_row_is_the_hr_model_where_nothing_moves(tiny_dataset, tmp_path):
    """With the MVs zeroed (the key feature unwarped) and the keyframe equal to the frame, the
    warp row is exactly the HR model's prediction of the frame, and its feature error is 0."""
    from mvseg.bench.fusion import fusion_candidates

    torch.manual_seed(0)
    model = ARSeg(9, 3, net=NET).eval()
    cur = torch.randn(2, 3, 64, 128)
    batch = {
        "key": cur,
        "cur": cur,
        "offset_cur_to_key": torch.zeros(2, 2, 16, 32),
        "mask_cur_to_key": torch.ones(2, 16, 32),
    }
    feats, target = fusion_candidates(model, batch)
    torch.testing.assert_close(feats["warp"], target)
    torch.testing.assert_close(feats["mean"], (feats["lr"] + feats["warp"]) / 2)
    with torch.no_grad():
        torch.testing.assert_close(
            model.classify(feats["creff"], (64, 128)), model.predict_batch({**batch, "distance": torch.ones(2)})
        )


def test_cli_writes_the_table_and_refuses_stage_one(tiny_dataset, tmp_path, capsys):
    dm = CompressedVideoDataModule(str(tiny_dataset), "folder", keyframe_interval=3, batch_size=4, train_distances=[2])
    for stage in ("creff", "lr"):
        torch.manual_seed(0)
        t = trainer(tmp_path / stage, max_steps=1, limit_val_batches=0)
        t.fit(ARSeg(9, 3, net=NET, stage=stage), dm)
        t.save_checkpoint(tmp_path / f"{stage}.ckpt")
    out = tmp_path / "out"
    assert (
        main(
            [
                "bench",
                "fusion",
                "--ckpt",
                str(tmp_path / "creff.ckpt"),
                "--data-root",
                str(tiny_dataset),
                "--out-dir",
                str(out),
            ]
        )
        == 0
    )
    rows = json.loads((out / "fusion.json").read_text())
    assert [r["fusion"] for r in rows] == ["lr", "warp", "creff", "mean", "best_of"]
    assert all(0.0 <= r["miou_mean"] <= 1.0 for r in rows) and "| best_of |" in (out / "fusion.md").read_text()
    assert (
        main(
            [
                "bench",
                "fusion",
                "--ckpt",
                str(tmp_path / "lr.ckpt"),
                "--data-root",
                str(tiny_dataset),
                "--out-dir",
                str(out),
            ]
        )
        != 0
    )
    assert (
        f"{tmp_path / 'lr.ckpt'}: bench fusion needs a stage-2 AR-Seg checkpoint (with CReFF); this one is stage 'lr'"
        in capsys.readouterr().err
    )
