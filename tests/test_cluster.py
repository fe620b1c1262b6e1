"""SLURM: the sbatch template, pre-emption (SIGUSR1 -> hpc checkpoint + requeue) and the
re-queued job resuming in the same run directory; `--ckpt_path last` picks the newest."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch
from helpers import folder_data_args

from mvseg.cli.lightning import newest_resume_point

ROOT = Path(__file__).parents[1]
SLURM = ROOT / "experiments" / "cluster" / "slurm.sh"


def test_sbatch_template():
    text = SLURM.read_text()
    for needle in (
        "#SBATCH --signal=SIGUSR1@90",
        "#SBATCH --requeue",
        "#SBATCH --ntasks-per-node=",
        "#SBATCH --gres=gpu:",
        "srun mvseg fit",
        "--ckpt_path last",
        '--trainer.num_nodes "$SLURM_JOB_NUM_NODES"',
        '--trainer.devices "$SLURM_NTASKS_PER_NODE"',
    ):
        assert needle in text, needle
    assert subprocess.run(["bash", "-n", str(SLURM)]).returncode == 0  # parses


def test_newest_resume_point(tmp_path):
    assert newest_resume_point(tmp_path) == "last"  # nothing: Lightning's lookup (fresh start)
    (tmp_path / "checkpoints").mkdir()
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(b"x")
    assert newest_resume_point(tmp_path) == "last"
    hpc = tmp_path / "hpc_ckpt_1.ckpt"
    hpc.write_bytes(b"x")
    os.utime(last, ns=(time.time_ns() - 10**9,) * 2)
    assert newest_resume_point(tmp_path) == str(hpc)  # pre-empted mid-epoch after the last epoch end
    os.utime(last, ns=(time.time_ns() + 10**9,) * 2)
    assert newest_resume_point(tmp_path) == str(last)  # an old hpc checkpoint from an earlier requeue


def test_preempted_slurm_job_requeues_and_resumes(tiny_dataset, tmp_path):
    """A job under SLURM (its environment; `scontrol` is a stub that records its call) gets
    SIGUSR1 in epoch 1: Lightning writes RUN/hpc_ckpt_1.ckpt and requeues the job; SLURM then
    kills it. The re-queued job, the same command, resumes from that checkpoint and finishes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol.calls"
    stub = bin_dir / "scontrol"
    stub.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    stub.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "mvseg",
        "SLURM_NTASKS": "1",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_NODELIST": "localhost",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
    }
    run = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "mvseg.cli",
        "fit",
        "--config",
        str(ROOT / "experiments" / "per_frame.yaml"),
        *folder_data_args(tiny_dataset),
        "--data.init_args.batch_size",
        "2",
        "--data.init_args.crop_size",
        "[64, 96]",
        "--data.init_args.eval_distances",
        "[0]",
        "--trainer.default_root_dir",
        str(run),
        "--trainer.logger",
        "lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.init_args.save_dir",
        str(run),
        "--trainer.max_epochs",
        "3",
        "--trainer.check_val_every_n_epoch",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--ckpt_path",
        "last",
    ]
    warn = json.dumps({"class_path": "helpers.SigkillAt", "init_args": {"epoch": 1, "batch": 0, "signum": "SIGUSR1"}})
    kill = json.dumps({"class_path": "helpers.SigkillAt", "init_args": {"epoch": 1, "batch": 1}})
    first = subprocess.run(
        [*args, f"--trainer.callbacks+={warn}", f"--trainer.callbacks+={kill}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert first.returncode == -9, first.stderr[-3000:]
    assert calls.read_text().split() == ["requeue", "4242"]
    hpc = run / "hpc_ckpt_1.ckpt"
    assert torch.load(hpc, map_location="cpu", weights_only=True)["epoch"] == 1  # written mid-epoch 1
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["epoch"] == 0

    second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)  # the re-queued job
    assert second.returncode == 0, second.stderr[-3000:]
    assert re.search(r"Restored all states from the checkpoint at \S*hpc_ckpt_1\.ckpt", second.stdout + second.stderr)
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["epoch"] == 2
