"""W&B sweeps without a W&B server: `mvseg sweep local SWEEP.yaml --count N`.

The same sweep file `wandb sweep` takes (experiments/sweeps/*.yaml). Configurations come from
W&B's own open-source sweep engine (the `sweeps` package: grid, random and bayes search, the
code behind W&B's sweep server), each run's command line from wandb's own agent functions
(`create_sweep_command`, `create_sweep_command_args`), so a local run executes exactly what
`wandb agent` would. The metric goes back to the engine from a small JSON file each run writes
(`MetricsFile`, a Lightning callback added to the run's command line), as W&B's server would
get it from the run's history and summary.

Everything lives in OUT (default `sweeps/NAME`): `sweep.json` (every run: configuration, state,
exit status, history, summary, command), and one `run-NNNN/` per run (its
`trainer.default_root_dir`: checkpoints, `metrics.json`, `output.log`). Calling the command
again with the same OUT continues the sweep: the engine sees the finished runs, an interrupted
run resumes from its `last.ckpt`.

Not done locally: `early_terminate` (hyperband) stops nothing; runs go one after the other.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import yaml

STATE_FILE = "sweep.json"
METRICS_FILE = "metrics.json"


class SweepError(ValueError):
    """A sweep file that cannot be run, or an OUT folder that holds another sweep."""


def _plain(value):
    """A plain Python value (the sweep engine may hand numpy scalars), as the agent's str() sees it."""
    return value.tolist() if hasattr(value, "tolist") else value


def _write_json(path: Path, obj: Any) -> None:
    # whole or absent: a sweep killed while writing keeps the previous state
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


class MetricsFile(pl.Callback):
    """Writes every validation's scalar metrics to a JSON file: {"history": [...], "summary": {...}}.

    `history` has one row per validation (W&B's run history), `summary` the last value of each
    key (W&B's run summary). Rank 0 only; sanity checks are skipped. On a resumed fit the rows
    from the resumed epoch on are dropped first, so a row is never counted twice."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.history: list[dict[str, float]] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # on_train_start, not on_fit_start: Lightning restores a resumed fit's epoch in between
        if self.path.is_file():
            old = json.loads(self.path.read_text()).get("history", [])
            self.history = [r for r in old if r.get("epoch", 0) < trainer.current_epoch]

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        row = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
        row.update(epoch=trainer.current_epoch, step=trainer.global_step)
        self.history.append(row)
        summary: dict[str, float] = {}
        for r in self.history:
            summary.update(r)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _write_json(self.path, {"history": self.history, "summary": summary})


def _engine():
    import warnings

    try:
        with warnings.catch_warnings():  # sweeps 0.3's pydantic v1-style Config: a warning at import
            warnings.simplefilter("ignore", UserWarning)
            import sweeps
    except ImportError as e:
        raise SweepError(
            "mvseg sweep local needs W&B's sweep engine: pip install 'mvseg[sweep]' (the `sweeps` package)"
        ) from e
    return sweeps


def load_sweep(path: str | Path) -> dict:
    """The sweep file as a dict, checked against W&B's sweep schema (errors name the file)."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"{path}: no such sweep file")
    try:
        sweep = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SweepError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(sweep, dict):
        raise SweepError(f"{path}: a sweep file is a mapping (method, metric, parameters, command)")
    problems = _engine().schema_violations_from_proposed_config(sweep)
    if problems:
        raise SweepError(f"{path}: not a valid W&B sweep: " + "; ".join(problems))
    if "metric" not in sweep or "name" not in sweep["metric"]:
        raise SweepError(f"{path}: needs `metric: {{name: ..., goal: ...}}` (the value the search follows)")
    return sweep


def agent_command(sweep: dict, config: dict[str, dict]) -> list[str]:
    """The command line `wandb agent` runs for one configuration ({key: {"value": v}}).

    wandb.sdk.launch.sweeps.utils does the macro and `${args}` expansion; the final
    substitution loop is inline in wandb's agent (Agent._command_run) and repeated here."""
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    command = sweep.get("command") or ["${env}", "${interpreter}", "${program}", "${args}"]
    expanded = sweep_utils.create_sweep_command(list(command))
    macros = sweep_utils.create_sweep_command_args({"args": config})
    macros.update(interpreter=["python"], program=[str(sweep.get("program", ""))], env=["/usr/bin/env"])
    out: list[str] = []
    for c in map(str, expanded):
        out += (macros.get(c[2:-1]) or []) if c.startswith("${") and c.endswith("}") else [c]
    return out


def _seeded(seed: int, fn: Callable[[], Any]) -> Any:
    # The engine draws from the global `random` and numpy RNGs (random and bayes search, the
    # Gaussian process's restarts): seed both per suggestion, restore them afterwards.
    import numpy as np

    py, npy = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        return fn()
    finally:
        random.setstate(py)
        np.random.set_state(npy)


def _run_dir_args(run_dir: Path) -> list[str]:
    cb = json.dumps({"class_path": "mvseg.sweep.MetricsFile", "init_args": {"path": str(run_dir / METRICS_FILE)}})
    return [f"--trainer.default_root_dir={run_dir}", f"--trainer.callbacks+={cb}"]


def _run_one(rec: dict, resume: bool, out: Path, state: dict, metric: str, echo: Callable[[str], None]) -> None:
    """Run one run of a local sweep to its end, its record and the sweep state kept on disk."""
    state_path = out / STATE_FILE
    run_dir = out / rec["name"]
    run_dir.mkdir(parents=True, exist_ok=True)
    argv = [*rec["command"]]
    if resume and (run_dir / "checkpoints" / "last.ckpt").exists():
        argv += ["--ckpt_path", "last"]
    echo(f"[{rec['name']}] " + " ".join(f"{k.split('.')[-1]}={v['value']}" for k, v in rec["config"].items()))
    rec["state"], rec["started"] = "running", time.time()
    _write_json(state_path, state)  # a killed sweep knows which run to resume
    with open(run_dir / "output.log", "ab") as log:
        log.write(("$ " + shlex.join(argv) + "\n").encode())
        log.flush()
        rc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT).returncode
    rec["exitcode"], rec["seconds"] = rc, round(time.time() - rec.pop("started"), 1)
    metrics = run_dir / METRICS_FILE
    got = json.loads(metrics.read_text()) if metrics.is_file() else {"history": [], "summary": {}}
    rec["history"], rec["summary_metrics"] = got["history"], got["summary"]
    rec["state"] = "finished" if rc == 0 else "failed"
    value = rec["summary_metrics"].get(metric)
    if rc != 0:
        tail = (run_dir / "output.log").read_text(errors="replace").strip().splitlines()[-3:]
        echo(f"[{rec['name']}] failed (exit {rc}); {run_dir / 'output.log'}: " + " | ".join(tail))
    elif value is None:
        echo(f"[{rec['name']}] finished without {metric} (no validation ran?): the search counts it as failed")
    else:
        echo(f"[{rec['name']}] {metric} = {value:.4f} ({rec['seconds']:.0f} s)")
    _write_json(state_path, state)


def run_local_sweep(
    sweep_path: str | Path,
    count: int,
    out: str | Path | None = None,
    seed: int = 0,
    extra_args: Sequence[str] = (),
    echo: Callable[[str], None] = print,
) -> dict:
    """Run up to `count` runs of a W&B sweep here, one after the other; returns the sweep state.

    `extra_args` are appended to every run's command (after the agent's `--key=value`s), e.g.
    `--trainer.max_epochs 5` for a quick search. The state is saved after every run."""
    engine = _engine()
    sweep_path = Path(sweep_path)
    sweep = load_sweep(sweep_path)
    if count < 1:
        raise SweepError(f"--count must be at least 1, got {count}")
    out = Path(out) if out is not None else Path("sweeps") / sweep_path.stem
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / STATE_FILE
    if state_path.is_file():
        state = json.loads(state_path.read_text())
        if state.get("sweep") != sweep:
            raise SweepError(
                f"{out}: holds another sweep (its {STATE_FILE} was made from a different sweep file); "
                f"choose another --out"
            )
    else:
        state = {"sweep_file": str(sweep_path), "sweep": sweep, "seed": seed, "runs": []}
    if sweep.get("early_terminate"):
        echo("mvseg sweep local: early_terminate is not applied locally (runs are not stopped early)")
    metric = sweep["metric"]["name"]
    program = agent_command(sweep, {})[:2]
    if program and program[0] == "/usr/bin/env" and len(program) > 1 and shutil.which(program[1]) is None:
        raise SweepError(f"{sweep_path}: the command's program {program[1]!r} is not on PATH")

    def run_once(rec: dict, resume: bool) -> None:
        _run_one(rec, resume, out, state, metric, echo)

    for rec in state["runs"]:  # interrupted by a kill: resume it before anything new
        if rec["state"] == "running":
            rec.pop("started", None)
            run_once(rec, resume=True)

    started = 0
    while started < count:
        runs = [
            engine.SweepRun(
                name=r["name"],
                config=r["config"],
                state=r["state"],
                summary_metrics=r["summary_metrics"],
                history=r["history"],
            )
            for r in state["runs"]
        ]
        nxt = _seeded(state["seed"] * 100_003 + len(runs), partial(engine.next_run, sweep, runs, validate=True))
        if nxt is None:
            echo("mvseg sweep local: the search is exhausted (every grid point has run)")
            break
        # plain Python values (the engine may hand numpy scalars), as the agent's str() sees them
        config = {k: {"value": _plain(v["value"])} for k, v in nxt.config.items()}
        name = f"run-{len(state['runs']):04d}"
        rec = {
            "name": name,
            "config": config,
            "state": "pending",
            "exitcode": None,
            "history": [],
            "summary_metrics": {},
            "command": [*agent_command(sweep, config), *_run_dir_args(out / name), *extra_args],
        }
        state["runs"].append(rec)
        run_once(rec, resume=False)
        started += 1

    goal = sweep["metric"].get("goal", "minimize")
    scored = [r for r in state["runs"] if r["state"] == "finished" and metric in r["summary_metrics"]]
    best = (max if goal == "maximize" else min)(scored, key=lambda r: r["summary_metrics"][metric]) if scored else None
    state["best"] = best["name"] if best else None
    _write_json(state_path, state)
    return state


def sweep_table(state: dict) -> str:
    """The runs as a Markdown table: run, state, metric, each swept parameter."""
    metric = state["sweep"]["metric"]["name"]
    keys = list(state["sweep"]["parameters"])
    head = ["run", "state", metric, *(k.split(".")[-1] for k in keys)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    for r in state["runs"]:
        v = r["summary_metrics"].get(metric)
        cells = [
            r["name"] + (" (best)" if r["name"] == state.get("best") else ""),
            r["state"],
            "-" if v is None else f"{v:.4f}",
            *(fmt(r["config"].get(k, {}).get("value", "-")) for k in keys),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main_sweep_local(sweep: str, count: int, out: str | None, seed: int, extra: Sequence[str]) -> int:
    state = run_local_sweep(sweep, count, out, seed, extra, echo=lambda s: print(s, flush=True))
    print(sweep_table(state))
    out_dir = Path(out) if out else Path("sweeps") / Path(sweep).stem
    if state.get("best"):
        print(f"best: {state['best']} ({out_dir / state['best'] / 'checkpoints'}); state: {out_dir / STATE_FILE}")
    failed = [r for r in state["runs"] if r["state"] == "failed"]
    return 1 if failed and not state.get("best") else 0
