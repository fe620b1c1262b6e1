"""W&B that never blocks a run: offline with a one-line notice when there is no login or no
route to W&B (training and the benchmarks that log)."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path


def _wandb_reachable(timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection(("api.wandb.ai", 443), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_wandb_never_blocks() -> str | None:
    """With no W&B login, or no route to W&B, runs go offline with a one-line notice instead
    of prompting for a key or hanging on the network. Returns the notice (None if online)."""
    if os.environ.get("WANDB_MODE"):
        return None
    netrc = Path.home() / ".netrc"
    logged_in = bool(os.environ.get("WANDB_API_KEY")) or (
        netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")
    )
    if logged_in and _wandb_reachable():
        return None
    why = "no W&B login found" if not logged_in else "W&B is not reachable"
    os.environ["WANDB_MODE"] = "offline"
    notice = f"mvseg: {why}; W&B logs offline (upload later with `wandb sync`)"
    print(notice, file=sys.stderr)
    return notice
