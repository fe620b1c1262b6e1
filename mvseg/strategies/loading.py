"""Loading a trained strategy from its checkpoint (without executing code): what `mvseg
predict`, the benchmarks and BDNet's teacher share."""

from __future__ import annotations

import importlib
from pathlib import Path

from mvseg.checkpoint_io import safe_load
from mvseg.strategies.base import SegStrategy


def load_strategy(ckpt: str | Path) -> tuple[SegStrategy, dict]:
    """A strategy from an mvseg checkpoint, loaded without executing code (weights_only)."""
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt}: checkpoint not found")
    raw = safe_load(ckpt)
    name = raw.get("mvseg_strategy")
    if not name or not name.startswith("mvseg.strategies."):
        raise ValueError(f"{ckpt}: not an mvseg strategy checkpoint (no 'mvseg_strategy' entry)")
    module, _, cls_name = name.rpartition(".")
    cls = getattr(importlib.import_module(module), cls_name)
    model = cls.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    model.eval()
    return model, raw.get("mvseg_data", {})
