"""W&B sweeps: the command line wandb's agent builds for a sampled configuration runs.

The agent (wandb/wandb_agent.py, Agent._command_run) expands the sweep's `command:` with
wandb.sdk.launch.sweeps.utils.create_sweep_command (environment macros) and
create_sweep_command_args (the `${args}` forms: `--key=value`); its final loop, which puts
each macro's list in place, is inline there and repeated in `agent_command` below.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import yaml
from wandb.sdk.launch.sweeps import utils as sweep_utils

from mvseg.cli import main

ROOT = Path(__file__).parents[1]
SWEEPS = sorted((ROOT / "experiments" / "sweeps").glob("*.yaml"))


def sample(parameters: dict, rng: random.Random, choice: dict[str, int] | None = None) -> dict:
    """One configuration of a sweep's parameters, as the agent receives it ({key: {"value": v}})."""
    out = {}
    for key, spec in parameters.items():
        if "values" in spec:
            v = spec["values"][(choice or {}).get(key, rng.randrange(len(spec["values"])))]
        elif spec.get("distribution") == "log_uniform_values":
            v = math.exp(rng.uniform(math.log(spec["min"]), math.log(spec["max"])))
        else:
            raise ValueError(f"{key}: distribution {spec.get('distribution')!r} not sampled by this test")
        out[key] = {"value": v}
    return out


def agent_command(sweep: dict, config: dict) -> list[str]:
    command = sweep_utils.create_sweep_command(list(sweep["command"]))
    sweep_vars = sweep_utils.create_sweep_command_args({"args": config})
    sweep_vars.update(interpreter=["python"], program=[sweep["program"]], env=["/usr/bin/env"])
    out = []
    for c in map(str, command):
        out += (sweep_vars.get(c[2:-1]) or []) if c.startswith("${") and c.endswith("}") else [c]
    return out


def test_sweep_configs_follow_the_convention():
    assert {p.stem for p in SWEEPS} >= {"arseg", "interp_mv"}
    for p in SWEEPS:
        s = yaml.safe_load(p.read_text())
        assert s["metric"] == {"name": "val/mIoU", "goal": "maximize"}
        assert s["command"][:4] == ["${env}", "mvseg", "fit", "--config"] and s["command"][-1] == "${args}"
        assert (ROOT / s["command"][4]).is_file()
        assert all(k.startswith(("model.init_args.", "data.init_args.", "trainer.")) for k in s["parameters"])


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_agent_command_runs(path, tiny_data_args, request, capsys, monkeypatch):
    """Every categorical value appears in some sampled configuration (booleans, None, lists);
    each command, as the agent would run it, parses and trains one step on the tiny data."""
    monkeypatch.chdir(ROOT)  # the sweep's --config path is relative to the repository
    sweep = yaml.safe_load(path.read_text())
    cats = {k: len(v["values"]) for k, v in sweep["parameters"].items() if "values" in v}
    rng = random.Random(0)
    n = max(cats.values())
    for i in range(n):
        config = sample(sweep["parameters"], rng, {k: i % m for k, m in cats.items()})
        argv = agent_command(sweep, config)
        assert argv[:3] == ["/usr/bin/env", "mvseg", "fit"]
        assert all(a.startswith("--") and "=" in a for a in argv[5:])  # the agent's --key=value form
        extra = []
        text = (ROOT / sweep["command"][4]).read_text()
        extra += [a for key in ("init_from", "lr_init", "flow_init") if f"{key}:" in text
                  for a in (f"--model.init_args.{key}", "null")]
        if "keyframe_interval: 12" in text:  # AR-Seg's L = 12 is longer than the tiny clips
            extra += ["--data.init_args.keyframe_interval", "3", "--data.init_args.train_distances", "[2]"]
        if "train_distances" in config:  # the sweep's own values are for L = 5
            extra += ["--data.init_args.keyframe_interval", "5"]
        rc = main([*argv[2:], *tiny_data_args, *extra, "--trainer.fast_dev_run", "1"])
        err = capsys.readouterr().err
        assert rc == 0, (argv, err[-2000:])


def test_agent_value_forms_parse():
    """The agent writes Python's str() of each value: True/False, None, [1, 2]."""
    sweep = {"program": "mvseg", "command": ["${env}", "mvseg", "fit", "--config", "c.yaml", "${args}"]}
    argv = agent_command(sweep, {"data.init_args.hflip": {"value": False}, "data.init_args.train_distances": {"value": None},
                                 "data.init_args.crop_size": {"value": [96, 160]}})
    assert argv[5:] == ["--data.init_args.hflip=False", "--data.init_args.train_distances=None",
                        "--data.init_args.crop_size=[96, 160]"]


def test_agent_none_becomes_null():
    from mvseg.cli import sweep_agent_values

    assert sweep_agent_values(["fit", "--data.init_args.train_distances=None", "--model.init_args.init_from", "None",
                               "--trainer.max_epochs=3", "--data.init_args.root", "None-dir"]) == [
        "fit", "--data.init_args.train_distances=null", "--model.init_args.init_from", "null",
        "--trainer.max_epochs=3", "--data.init_args.root", "None-dir"]
