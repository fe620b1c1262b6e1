"""CPU threads from the cores this process may actually use, and the load it shares them with.

PyTorch sizes its intra-op pool from the machine's cores, not from what a container, a
cgroup quota (`docker --cpus`, Kubernetes limits, SLURM) or a CPU affinity mask lets the process
use; on a shared or limited machine the extra threads only contend. `configure_threads` caps
torch's pool at `available_cpus()` once per process, unless the user chose (`OMP_NUM_THREADS`,
`MKL_NUM_THREADS` or `MVSEG_THREADS` set). `machine_load` is what the run summary records next to
its wall time, so a timing taken on a busy machine says so.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
USER_SETTINGS = ("MVSEG_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs the cgroup quota allows (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`),
    None when there is no quota or no cgroup file to read."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def available_cpus(root: Path = CGROUP_ROOT) -> int:
    """The CPUs this process may run on: its affinity mask, capped by the cgroup quota (rounded up)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit(root)
    return max(1, min(n, math.ceil(limit))) if limit else max(1, n)


def configure_threads(root: Path = CGROUP_ROOT) -> str | None:
    """Cap torch's intra-op threads at the available CPUs (MVSEG_THREADS=N sets them exactly);
    returns a one-line notice when it changed them, else None."""
    import torch

    if os.environ.get("MVSEG_THREADS", "").isdigit() and int(os.environ["MVSEG_THREADS"]) > 0:
        torch.set_num_threads(int(os.environ["MVSEG_THREADS"]))
        return None
    if any(os.environ.get(k) for k in USER_SETTINGS):
        return None  # the user's own OpenMP/MKL setting stands
    n, before = available_cpus(root), torch.get_num_threads()
    if before <= n:
        return None
    torch.set_num_threads(n)
    return (
        f"mvseg: {n} CPU(s) available to this process (affinity / cgroup quota), not {before}: torch uses {n} threads"
    )


def machine_load() -> dict[str, float]:
    """The 1-minute load average beside the CPUs this process has (the load includes this run)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {"load_1min": round(load, 2), "cpus": available_cpus()}
