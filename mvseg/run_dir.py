"""A run folder (trainer.default_root_dir) belongs to one fit at a time, and a trained run is
never mixed with a new one.

- `RunLock`: an exclusive `flock` on RUN/.mvseg.lock while a fit uses the folder (released by
  the kernel when the process dies, so a killed fit never leaves a stale lock); a second fit
  into the folder is refused in one line naming the holder's PID.
- `trained_run`: the checkpoints a folder already holds; `mvseg fit` refuses to start a new run
  over them unless it resumes (`--ckpt_path`) or is told to start over (`--overwrite`, which
  removes them first).
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path

LOCK_NAME = ".mvseg.lock"


class RunFolderError(ValueError):
    """A run folder that is in use or holds another run."""


def process_rank() -> int:
    """This process's rank from the launchers' variables (0 when launched by hand): a DDP
    rank > 0 runs in its rank-0 process's folder, which that process holds."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def trained_run(run: str | Path) -> list[Path]:
    """The checkpoints of an earlier run in `run` (its checkpoints/ and SLURM's hpc_ckpt_N.ckpt)."""
    run = Path(run)
    return sorted([*(run / "checkpoints").glob("*.ckpt"), *run.glob("hpc_ckpt_*.ckpt")])


def clear_run(run: str | Path) -> list[Path]:
    """Remove what an earlier run left in `run` that a new one would be mixed with: its
    checkpoints and its summary (config.yaml is rewritten when the new run starts). Logs stay."""
    from mvseg.summary import SUMMARY_JSON, SUMMARY_MD

    run = Path(run)
    gone = [p for p in [*trained_run(run), run / SUMMARY_MD, run / SUMMARY_JSON] if p.exists() or p.is_symlink()]
    for p in gone:
        p.unlink()
    return gone


class RunLock:
    """An exclusive lock on a run folder for this process (module docstring)."""

    def __init__(self, run: str | Path) -> None:
        self.run = Path(run)
        self.fd: int | None = None
        self.created: list[Path] = []

    def acquire(self) -> RunLock:
        self.created = []  # the folders made here, deepest first: removed again if the fit writes nothing
        p = self.run.absolute()
        while not p.exists():
            self.created.append(p)
            p = p.parent
        self.run.mkdir(parents=True, exist_ok=True)
        path = self.run / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunFolderError(
                f"{self.run}: in use by another mvseg fit ({holder}); wait for it to end or stop it, "
                "or train into another --trainer.default_root_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(
            fd,
            f"PID {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}: "
            f"mvseg {' '.join(sys.argv[1:])[:300]}\n".encode(),
            0,
        )
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None
        # a fit that stopped before writing anything leaves no folder behind
        if self.created and [p.name for p in self.run.iterdir()] == [LOCK_NAME]:
            (self.run / LOCK_NAME).unlink(missing_ok=True)
            for folder in self.created:
                try:
                    folder.rmdir()  # only while empty
                except OSError:
                    break
