"""The result of a fit, said at its end: a short table printed to the terminal and saved beside
the checkpoints (RUN_DIR/summary.md and summary.json), so the user sees it without W&B.

Rows: this run (mIoU mean and min over the protocol's keyframe distances, GFLOPs per frame of
the streaming runtime at the run's keyframe interval and their ratio to the image model: the
`init_from` run's keyframe when the config stands on one, else its own keyframe; the fit's wall
time), then the runs it stands on (the checkpoints its config loads:
AR-Seg's HR model `init_from` and LR branch `lr_init`, ...) from their own summary.json, and
the differences in mIoU points to them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning.pytorch as pl

from mvseg.strategies.loading import CHECKPOINT_OPTIONS

SUMMARY_JSON, SUMMARY_MD = "summary.json", "summary.md"


def run_dir_of(ckpt: str | Path) -> Path:
    """RUN_DIR of a checkpoint written by mvseg fit (RUN_DIR/checkpoints/NAME.ckpt)."""
    return Path(ckpt).resolve().parent.parent


def read_summary(run_dir: str | Path) -> dict | None:
    try:
        return json.loads((Path(run_dir) / SUMMARY_JSON).read_text())
    except (OSError, ValueError):
        return None


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(rows: list[dict]) -> str:
    """The Markdown table of summary rows."""
    lines = [
        "| run | method | mIoU mean | mIoU min | GFLOPs/frame | x image model | wall |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        wall = r.get("wall_s")
        lines.append(
            f"| {r['name']} | {r.get('method', '-')} | {_fmt(r.get('miou_mean'), '.3f')} | "
            f"{_fmt(r.get('miou_min'), '.3f')} | {_fmt(r.get('gflops_per_frame'), '.3f')} | "
            f"{_fmt(r.get('gflops_ratio'), '.2f')} | "
            f"{'-' if wall is None else f'{int(wall) // 60} min {int(wall) % 60:02d} s'} |"
        )
    return "\n".join(lines)


def differences(row: dict, refs: list[dict]) -> list[str]:
    """One line per reference: this run's mIoU minus the reference's, in points."""
    out = []
    for ref in refs:
        if row.get("miou_mean") is not None and ref.get("miou_mean") is not None:
            d = 100 * (row["miou_mean"] - ref["miou_mean"])
            ratio = (
                f", at {row['gflops_per_frame'] / ref['gflops_per_frame']:.2f}x its GFLOPs"
                if row.get("gflops_per_frame") and ref.get("gflops_per_frame")
                else ""
            )
            out.append(f"{row['name']} vs {ref['role']} {ref['name']}: {d:+.1f} mIoU points{ratio}")
    return out


class RunSummary(pl.Callback):
    """At the end of a fit whose strategy has the evaluation protocol (val/mIoU): the summary
    table, printed and saved in RUN_DIR (rank 0). `references`: config key -> checkpoint."""

    def __init__(self, references: dict[str, str] | None = None) -> None:
        self.references = {k: v for k, v in (references or {}).items() if v}
        self._t0 = time.perf_counter()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from mvseg.threads import machine_load

        self._t0 = time.perf_counter()
        self._load0 = machine_load()["load_1min"]

    def row(self, trainer: pl.Trainer, model) -> dict | None:
        m = trainer.callback_metrics
        if "val/mIoU" not in m:
            return None  # no evaluation protocol (flow pretraining) or no validation ran
        run = Path(trainer.default_root_dir)
        row = {
            "name": run.name,
            "method": type(model).__name__,
            "run_dir": str(run.resolve()),
            "miou_mean": float(m["val/mIoU"]),
            "miou_min": float(m["val/mIoU_min"]) if "val/mIoU_min" in m else None,
            "miou_per_distance": {k.rsplit("_d", 1)[1]: float(v) for k, v in m.items() if k.startswith("val/mIoU_d")},
            "epochs": trainer.current_epoch,
            "steps": trainer.global_step,
            "wall_s": time.perf_counter() - self._t0,
            "cpu_threads": _threads(),
            "loader_workers": int(getattr(trainer.datamodule, "num_workers", 0) or 0),
            **_load(getattr(self, "_load0", None)),
        }
        ds = getattr(trainer.datamodule, "ds", None)
        if ds is not None and ds.clips.get("val"):
            from mvseg.runtime import stream_gflops

            kw = {"mean": ds.mean, "std": ds.std}
            g = stream_gflops(model, ds.clips["val"][0].video, model.keyframe_interval, **kw)
            row.update(g, gflops_ratio=g["gflops_per_frame"] / g["gflops_key"] if g["gflops_key"] else None)
        return row

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.fast_dev_run:  # a smoke test's step says nothing
            return
        row = self.row(trainer, pl_module)
        if row is None:  # said, not skipped: a user reads the end of every fit
            run = Path(trainer.default_root_dir)
            if any(k.startswith("val/") for k in trainer.callback_metrics):
                why = f"{type(pl_module).__name__} reports no val/mIoU (it has no segmentation protocol)"
            else:
                why = (
                    f"no validation ran (every {trainer.check_val_every_n_epoch} epochs: "
                    "trainer.check_val_every_n_epoch; or trainer.limit_val_batches 0)"
                )
            print(
                f"\nmvseg: {run.name} done ({trainer.current_epoch} epochs, {trainer.global_step} steps); "
                "no summary table: "
                f"{why}; evaluate it with mvseg validate --config {run / 'config.yaml'} --ckpt_path "
                f"{run / 'checkpoints' / 'last.ckpt'}",
                flush=True,
            )
            return
        refs, keys = [], []
        for key, ckpt in self.references.items():
            ref = read_summary(run_dir_of(ckpt))
            if ref is not None:
                refs.append({**ref, "role": CHECKPOINT_OPTIONS.get(key, key)})
                keys.append(key)
        image = next((r for k, r in zip(keys, refs) if k == "init_from" and r.get("gflops_key")), None)
        if image is not None and row.get("gflops_per_frame"):  # the image model this run stands on
            row["gflops_ratio"] = row["gflops_per_frame"] / image["gflops_key"]
        text = table([row, *refs])
        lines = differences(row, refs)
        if machine := machine_line(row):
            lines.append(machine)
        run = Path(trainer.default_root_dir)
        run.mkdir(parents=True, exist_ok=True)
        (run / SUMMARY_JSON).write_text(json.dumps({**row, "references": refs}, indent=1))
        (run / SUMMARY_MD).write_text(text + "\n" + "".join(f"\n{x}" for x in lines) + "\n")
        print(
            f"\nmvseg: {row['name']} done ({trainer.current_epoch} epochs, {trainer.global_step} steps); "
            f"val mIoU over keyframe distances, GFLOPs of the streaming runtime:\n{text}",
            flush=True,
        )
        for x in lines:
            print(x, flush=True)
        print(f"(saved as {run / SUMMARY_MD})", flush=True)


def _load(start: float | None) -> dict:
    """The CPUs, and the machine's 1-minute load average at the fit's start and end."""
    from mvseg.threads import machine_load

    now = machine_load()
    return {"cpus": now["cpus"], "load_1min_start": start, "load_1min_end": now["load_1min"]}


def machine_line(row: dict) -> str | None:
    """How the wall time was measured: threads, CPUs, load; says so when the machine was busy
    (a load above what this fit itself puts there, its torch threads and DataLoader workers or
    the CPUs, whichever is more: other work shared them, the time is not an idle one's)."""
    if row.get("cpus") is None:
        return None
    loads = [x for x in (row.get("load_1min_start"), row.get("load_1min_end")) if x is not None]
    text = (
        f"wall time with {row.get('cpu_threads')} torch threads on {row['cpus']} CPU(s), load average "
        f"{' -> '.join(f'{x:.1f}' for x in loads)}"
    )
    own = (row.get("cpu_threads") or 0) + (row.get("loader_workers") or 0)  # runnable threads the fit itself adds
    if loads and max(loads) > max(row["cpus"], own) + 0.5:
        text += " (the machine was busy: this is not an idle machine's time)"
    return text


def _threads() -> int:
    import torch

    return torch.get_num_threads()
