"""`.ci/gpu --dry-run`: the CPU-side part of the prepared GPU check, as CI runs it. Every kernel
is compiled for sm_80/sm_90, the CUDA tests are collected, the kernel benchmark writes its plan,
the speed benchmark and the AR-Seg fit run their real code paths on a CPU at a tiny size."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run(tmp_path):
    out = tmp_path / "gpu"
    res = subprocess.run(
        ["bash", str(ROOT / ".ci/gpu"), "--dry-run", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "WANDB_MODE": "offline"},
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "== gpu check: 0 step(s) failed" in res.stdout
    compiled = json.loads((out / "compile.json").read_text())
    assert compiled["problems"] == [] and {r["target"] for r in compiled["kernels"]} == {"sm_80", "sm_90"}
    plan = json.loads((out / "kernels.json").read_text())
    assert plan["dry_run"] and {r["dtype"] for r in plan["rows"] if r["impl"] == "triton"} == {"fp32", "bf16"}
    speed = json.loads((out / "speed.json").read_text())["rows"]
    assert [r["method"] for r in speed] == ["1.0x", "AR0.5"] and all(r["ms_per_frame"] > 0 for r in speed)
    (metrics,) = (out / "ddp").rglob("metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    assert any(r["train/loss"] for r in rows) and any(r["val/mIoU"] for r in rows)
