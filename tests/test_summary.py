"""The summary at the end of a fit (mvseg.summary): printed and saved beside the checkpoints."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from helpers import folder_data_args

from mvseg.cli import main

ROOT = Path(__file__).parents[1] / "experiments"
NET = json.dumps({"width": 0.125, "feat_dim": 16, "head_dim": 16, "head": "plain"})


def _fit(config: str, run: Path, data: Path, *extra: str) -> list[str]:
    return [
        "fit",
        "--config",
        str(ROOT / f"{config}.yaml"),
        *folder_data_args(data),
        "--data.init_args.keyframe_interval",
        "3",
        "--trainer.default_root_dir",
        str(run),
        "--trainer.logger",
        "lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.init_args.save_dir",
        str(run),
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "2",
        "--trainer.check_val_every_n_epoch",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--model.init_args.net",
        NET,
        *extra,
    ]


def test_a_fit_ends_with_its_summary_and_the_runs_it_stands_on(tiny_dataset, tmp_path, capsys):
    image, prop = tmp_path / "per_frame", tmp_path / "prop_mv"
    assert main(_fit("per_frame", image, tiny_dataset, "--data.init_args.eval_distances", "[0]")) == 0
    assert (
        main(
            _fit("prop_mv", prop, tiny_dataset, "--model.init_args.init_from", str(image / "checkpoints" / "last.ckpt"))
        )
        == 0
    )
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
    assert [r["name"] for r in s["references"]] == ["per_frame"] and s["references"][0][
        "role"
    ] == "image model (init_from)"
    d = 100 * (s["miou_mean"] - base["miou_mean"])
    assert f"prop_mv vs image model (init_from) per_frame: {d:+.1f} mIoU points" in out
    md = (prop / "summary.md").read_text()
    assert (
        md.startswith("| run | method | mIoU mean |")
        and "| prop_mv | PropMV |" in md
        and "| per_frame | PerFrame |" in md
    )
    # how the wall time was measured: threads, CPUs and the load at the fit's start and end
    assert s["cpus"] >= 1 and s["load_1min_start"] is not None and s["load_1min_end"] is not None
    assert f"wall time with {s['cpu_threads']} torch threads on {s['cpus']} CPU(s), load average" in md


def test_the_machine_line_says_when_a_timing_is_not_an_idle_machines():
    from mvseg.summary import machine_line

    idle = machine_line({"cpu_threads": 2, "cpus": 2, "load_1min_start": 0.1, "load_1min_end": 1.9})
    assert idle == "wall time with 2 torch threads on 2 CPU(s), load average 0.1 -> 1.9"
    busy = machine_line({"cpu_threads": 2, "cpus": 2, "load_1min_start": 0.3, "load_1min_end": 5.2})
    assert busy.endswith("(the machine was busy: this is not an idle machine's time)")
    # the fit's own 2 threads and 1 DataLoader worker load 2 CPUs to about 2.5 on an idle machine
    own = machine_line({"cpu_threads": 2, "loader_workers": 1, "cpus": 2, "load_1min_start": 0.2, "load_1min_end": 2.6})
    assert not own.endswith("busy: this is not an idle machine's time)")
    assert machine_line(
        {"cpu_threads": 2, "loader_workers": 1, "cpus": 2, "load_1min_start": 0.2, "load_1min_end": 4.1}
    ).endswith("(the machine was busy: this is not an idle machine's time)")
    assert machine_line({"cpu_threads": 2}) is None  # a summary written before these were recorded


def test_threads_follow_the_cpus_the_process_may_use(tmp_path, monkeypatch):
    """The affinity mask and the cgroup quota cap torch's threads; a user's OMP/MVSEG setting stands."""
    import os

    import torch

    from mvseg import threads

    before = torch.get_num_threads()
    try:
        (tmp_path / "cpu.max").write_text("150000 100000\n")  # docker --cpus 1.5
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
        assert threads.cgroup_cpu_limit(tmp_path) == 1.5 and threads.available_cpus(tmp_path) == 2
        (tmp_path / "cpu.max").write_text("max 100000\n")
        assert threads.cgroup_cpu_limit(tmp_path) is None and threads.available_cpus(tmp_path) == 4
        (tmp_path / "cpu.max").unlink()
        (tmp_path / "cpu").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000")  # cgroup v1: one CPU
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
        assert threads.available_cpus(tmp_path) == 1
        for k in threads.USER_SETTINGS:
            monkeypatch.delenv(k, raising=False)
        torch.set_num_threads(3)
        notice = threads.configure_threads(tmp_path)
        assert torch.get_num_threads() == 1 and "1 CPU(s) available to this process" in notice
        torch.set_num_threads(3)
        monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice stands
        assert threads.configure_threads(tmp_path) is None and torch.get_num_threads() == 3
        monkeypatch.setenv("MVSEG_THREADS", "2")
        assert threads.configure_threads(tmp_path) is None and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.reliability
def test_a_fit_without_validation_says_so_and_w_and_b_and_lightning_stay_quiet(tiny_dataset, tmp_path, capfd):
    """Every fit ends with a word of ours; W&B's anonymous / git-root notices and Lightning's tips
    are not printed (the default W&B logger, offline)."""
    run = tmp_path / "run"
    args = _fit("per_frame", run, tiny_dataset, "--trainer.check_val_every_n_epoch", "5")
    i = args.index("--trainer.logger")
    args[i + 1], args[i + 3] = "lightning.pytorch.loggers.WandbLogger", str(run / "w")  # save_dir not made yet
    assert main(args) == 0
    out, err = capfd.readouterr()
    assert (
        f"mvseg: run done (1 epochs, 1 steps); no summary table: no validation ran (every 5 epochs: "
        f"trainer.check_val_every_n_epoch; or trainer.limit_val_batches 0); evaluate it with mvseg validate "
        f"--config {run / 'config.yaml'} --ckpt_path {run / 'checkpoints' / 'last.ckpt'}"
    ) in out
    for noise in ("anonymous setting", "git root", "Tip:", "LeafSpec", "not resumable"):
        assert noise not in out + err, noise
    assert (run / "checkpoints" / "last.ckpt").is_file()  # saved although no validation ran
