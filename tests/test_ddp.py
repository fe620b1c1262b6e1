"""DDP on CPU (gloo, 2 processes): metrics over the whole validation set, not a rank's shard."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import folder_data_args

from mvseg.cli import main

ROOT = Path(__file__).parents[1]


def _args(cmd: str, data: Path, run: Path) -> list[str]:
    return [
        cmd,
        "--config",
        str(ROOT / "experiments" / "per_frame.yaml"),
        *folder_data_args(data),
        "--data.init_args.batch_size",
        "2",
        "--data.init_args.crop_size",
        "[64, 96]",
        "--data.init_args.eval_distances",
        "[0, 1]",
        "--trainer.default_root_dir",
        str(run),
        "--trainer.logger",
        "lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.init_args.save_dir",
        str(run),
        "--trainer.enable_progress_bar",
        "false",
    ]


def _val_metrics(run: Path) -> dict[str, float]:
    (f,) = run.glob("*/version_*/metrics.csv")
    rows = [r for r in csv.DictReader(f.open()) if r.get("val/mIoU")]
    return {k: float(v) for k, v in rows[-1].items() if k.startswith("val/") and v}


def _extra(config: str) -> list[str]:
    return ["--model.init_args.init_from", "null"] if config == "prop_mv" else []


def _validate_args(config: str, data: Path, run: Path, ckpt: Path) -> list[str]:
    a = _args("validate", data, run)
    a[2] = str(ROOT / "experiments" / f"{config}.yaml")
    return [*a, *_extra(config), "--ckpt_path", str(ckpt)]


@pytest.fixture(scope="module")
def single_process(tiny_dataset, tmp_path_factory):
    """config -> (a checkpoint trained one epoch, its validation by one process): made once per config."""
    made: dict[str, tuple[Path, Path]] = {}

    def get(config: str) -> tuple[Path, Path]:
        if config not in made:
            root = tmp_path_factory.mktemp(config)
            fit = _args("fit", tiny_dataset, root / "train")
            fit[2] = str(ROOT / "experiments" / f"{config}.yaml")
            assert main([*fit, *_extra(config), "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0"]) == 0
            ckpt = root / "train" / "checkpoints" / "last.ckpt"
            assert main(_validate_args(config, tiny_dataset, root / "single", ckpt)) == 0
            made[config] = (ckpt, root / "single")
        return made[config]

    return get


@pytest.mark.parametrize(
    "config,launcher", [("per_frame", "lightning"), ("prop_mv", "lightning"), ("per_frame", "torchrun")]
)
def test_ddp_validation_equals_single_process(config, launcher, single_process, tiny_dataset, tmp_path, capsys):
    """The same checkpoint validated by 1 process and by 2 DDP ranks (each sees half of the
    samples; for the per-frame model one rank holds no distance-0 sample at all, which used to
    deadlock): the same mIoU per distance, mean, minimum and loss. The ranks are started by
    Lightning itself, or by torchrun (Lightning reads torchelastic's environment)."""
    ckpt, single_run = single_process(config)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    launch = [sys.executable, "-m", "mvseg.cli"]
    if launcher == "torchrun":
        launch = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "mvseg.cli",
        ]
    proc = subprocess.run(
        [*launch, *_validate_args(config, tiny_dataset, tmp_path / "ddp", ckpt), "--trainer.strategy", "ddp"]
        + ["--trainer.devices", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    single, ddp = _val_metrics(single_run), _val_metrics(tmp_path / "ddp")
    assert set(single) == set(ddp) and "val/mIoU_d1" in single
    assert ddp == pytest.approx(single, abs=1e-5)


@pytest.mark.reliability
def test_ddp_fit_killed_mid_epoch_resumes_to_the_same_metrics(tiny_dataset, tmp_path):
    """2 DDP ranks, both SIGKILLed at the first training batch of epoch 1 (a preempted job),
    resumed with --ckpt_path last: the same validation metrics at every epoch as an
    uninterrupted DDP run (data order and augmentation come from the checkpointed generator
    through Lightning's distributed sampler wrapper; dropout from the restored RNG)."""
    import json

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}

    def fit(run: Path, *extra: str) -> subprocess.CompletedProcess:
        a = [
            *_args("fit", tiny_dataset, run),
            "--seed_everything",
            "3",
            "--trainer.deterministic",
            "true",
            "--trainer.max_epochs",
            "3",
            "--trainer.check_val_every_n_epoch",
            "1",
            "--trainer.strategy",
            "ddp",
            "--trainer.devices",
            "2",
            *extra,
        ]
        return subprocess.run(
            [sys.executable, "-m", "mvseg.cli", *a], env=env, capture_output=True, text=True, timeout=300
        )

    clean = fit(tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr[-3000:]
    kill = json.dumps({"class_path": "helpers.SigkillAt", "init_args": {"epoch": 1, "batch": 0}})
    killed = fit(tmp_path / "killed", f"--trainer.callbacks+={kill}")
    assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = fit(tmp_path / "killed", "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    def per_epoch(run: Path) -> dict[int, dict[str, float]]:
        out = {}
        for f in sorted(run.glob("*/version_*/metrics.csv")):
            for r in csv.DictReader(f.open()):
                if r.get("val/mIoU"):
                    out[int(r["epoch"])] = {k: float(v) for k, v in r.items() if k.startswith("val/") and v}
        return out

    want, got = per_epoch(tmp_path / "clean"), per_epoch(tmp_path / "killed")
    assert sorted(want) == sorted(got) == [0, 1, 2]
    for epoch in want:
        assert got[epoch] == pytest.approx(want[epoch], abs=1e-6), epoch


def test_ddp_fit_makes_one_wandb_run(tiny_dataset, tmp_path):
    """2 DDP ranks with the config's WandbLogger (offline): one W&B run, not one per rank, holding
    the whole config, the model's hyper-parameters, val/mIoU of every validation (the value the
    checkpoint callback ranked by) and the validation masks."""
    import json

    import torch
    from helpers import wandb_records

    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
    }
    a = _args("fit", tiny_dataset, tmp_path / "run")
    a = a[: a.index("--trainer.logger")] + a[a.index("--trainer.enable_progress_bar") :]  # the config's WandbLogger
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mvseg.cli",
            *a,
            "--trainer.logger.init_args.save_dir",
            str(tmp_path / "run"),
            "--trainer.max_epochs",
            "2",
            "--trainer.check_val_every_n_epoch",
            "1",
            "--trainer.strategy",
            "ddp",
            "--trainer.devices",
            "2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "run" / "wandb").glob("offline-run-*")  # exactly one
    records = wandb_records(next(run_dir.glob("*.wandb")))
    kinds = [r.WhichOneof("record_type") for r in records]
    assert kinds.count("run") == 1
    config = {u.key for r in records if r.HasField("config") for u in r.config.update}
    assert {"cli", "num_classes", "net", "optim"} <= config
    history = [
        {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
        for r in records
        if r.HasField("history")
    ]
    miou = [h["val/mIoU"] for h in history if "val/mIoU" in h]
    assert len(miou) == 2
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    (best,) = [v["best_model_score"] for k, v in ckpt["callbacks"].items() if "val/mIoU" in k]
    assert max(miou) == pytest.approx(float(best), abs=1e-6)
    assert sum(h.get("val/examples/count", 0) for h in history) > 0
    assert list(run_dir.glob("files/media/images/mask/val/*.mask.png"))
