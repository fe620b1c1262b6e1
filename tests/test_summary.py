"""The summary at the end of a fit (mvseg.summary): printed and saved beside the checkpoints."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mvseg.cli import main

ROOT = Path(__file__).parents[1] / "experiments"
NET = json.dumps({"width": 0.125, "feat_dim": 16, "head_dim": 16, "head": "plain"})


def _fit(config: str, run: Path, data: Path, *extra: str) -> list[str]:
    return ["fit", "--config", str(ROOT / f"{config}.yaml"), "--data.init_args.root", str(data),
            "--data.init_args.dataset", "folder", "--data.init_args.cache_dir", str(data / ".cache"),
            "--data.init_args.num_workers", "0", "--data.init_args.keyframe_interval", "3",
            "--trainer.default_root_dir", str(run), "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
            "--trainer.logger.init_args.save_dir", str(run), "--trainer.max_epochs", "1",
            "--trainer.limit_train_batches", "2", "--trainer.check_val_every_n_epoch", "1",
            "--trainer.enable_progress_bar", "false", "--model.init_args.net", NET, *extra]


def test_a_fit_ends_with_its_summary_and_the_runs_it_stands_on(tiny_dataset, tmp_path, capsys):
    image, prop = tmp_path / "per_frame", tmp_path / "prop_mv"
    assert main(_fit("per_frame", image, tiny_dataset, "--data.init_args.eval_distances", "[0]")) == 0
    assert main(_fit("prop_mv", prop, tiny_dataset, "--model.init_args.init_from",
                     str(image / "checkpoints" / "last.ckpt"))) == 0
    out = capsys.readouterr().out
    assert "mvseg: prop_mv done (1 epochs" in out and f"(saved as {prop / 'summary.md'})" in out
    s = json.loads((prop / "summary.json").read_text())
    # the figures are the run's last validation, as logged
    logged = [r for f in prop.glob("*/version_*/metrics.csv") for r in csv.DictReader(f.open()) if r.get("val/mIoU")]
    assert s["miou_mean"] == pytest.approx(float(logged[-1]["val/mIoU"]), abs=1e-6)
    assert s["miou_min"] == pytest.approx(float(logged[-1]["val/mIoU_min"]), abs=1e-6)
    assert sorted(s["miou_per_distance"]) == ["0", "1", "2"]
    # the per-frame model runs its whole network on every frame; prop-MV on one frame in 3
    base = json.loads((image / "summary.json").read_text())
    assert base["gflops_ratio"] == pytest.approx(1.0, rel=1e-6)
    assert 0.3 < s["gflops_ratio"] < 0.5 and s["gflops_key"] == pytest.approx(base["gflops_key"], rel=1e-6)
    # the reference row is the per-frame run's own summary; the difference is said in points
    assert [r["name"] for r in s["references"]] == ["per_frame"] and s["references"][0]["role"] == "image model (init_from)"
    d = 100 * (s["miou_mean"] - base["miou_mean"])
    assert f"prop_mv vs image model (init_from) per_frame: {d:+.1f} mIoU points" in out
    md = (prop / "summary.md").read_text()
    assert md.startswith("| run | method | mIoU mean |") and "| prop_mv | PropMV |" in md and "| per_frame | PerFrame |" in md
