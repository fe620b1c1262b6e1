"""W&B sweeps: the command line wandb's agent builds for a sampled configuration runs.

The agent (wandb/wandb_agent.py, Agent._command_run) expands the sweep's `command:` with
wandb.sdk.launch.sweeps.utils.create_sweep_command (environment macros) and
create_sweep_command_args (the `${args}` forms: `--key=value`); its final loop, which puts
each macro's list in place, is inline there and repeated in `agent_command` below.
"""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

import pytest
import yaml
from helpers import folder_data_args
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
        extra += [
            a
            for key in ("init_from", "lr_init", "flow_init")
            if f"{key}:" in text
            for a in (f"--model.init_args.{key}", "null")
        ]
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
    argv = agent_command(
        sweep,
        {
            "data.init_args.hflip": {"value": False},
            "data.init_args.train_distances": {"value": None},
            "data.init_args.crop_size": {"value": [96, 160]},
        },
    )
    assert argv[5:] == [
        "--data.init_args.hflip=False",
        "--data.init_args.train_distances=None",
        "--data.init_args.crop_size=[96, 160]",
    ]


def test_agent_none_becomes_null():
    from mvseg.cli.lightning import sweep_agent_values

    assert sweep_agent_values(
        [
            "fit",
            "--data.init_args.train_distances=None",
            "--model.init_args.init_from",
            "None",
            "--trainer.max_epochs=3",
            "--data.init_args.root",
            "None-dir",
        ]
    ) == [
        "fit",
        "--data.init_args.train_distances=null",
        "--model.init_args.init_from",
        "null",
        "--trainer.max_epochs=3",
        "--data.init_args.root",
        "None-dir",
    ]


# ---------------------------------------------------------------- mvseg sweep local

FAKE_TRAIN = """
import json, sys
from pathlib import Path
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
run = Path(args["trainer.default_root_dir"])
run.mkdir(parents=True, exist_ok=True)
(run / "argv.json").write_text(json.dumps(sys.argv[1:]))
x = float(args["model.init_args.x"])
# what MetricsFile writes: one history row per validation, the summary = last values
rows = [{"val/score": -(x - 0.3) ** 2 - 0.1 * e, "epoch": e} for e in (1, 0)]
(run / "metrics.json").write_text(json.dumps({"history": rows, "summary": rows[-1]}))
sys.exit(3 if x > 0.9 else 0)
"""


def _fake_sweep(tmp_path: Path, method: str = "bayes", extra: dict | None = None) -> Path:
    (tmp_path / "fake_train.py").write_text(FAKE_TRAIN)
    sweep = {
        "program": "fake_train.py",
        "method": method,
        "metric": {"name": "val/score", "goal": "maximize"},
        "parameters": {"model.init_args.x": {"distribution": "uniform", "min": 0.0, "max": 1.0}},
        "command": ["${env}", sys.executable, str(tmp_path / "fake_train.py"), "${args}"],
        **(extra or {}),
    }
    path = tmp_path / "fake.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def test_sweep_local_feeds_each_runs_metric_back_to_the_engine(tmp_path, monkeypatch):
    """W&B's engine receives, for every earlier run, its state and the metric the run wrote
    (history and summary, as W&B's server would hand them over); a failed run counts as failed."""
    sweeps = pytest.importorskip("sweeps")
    from mvseg import sweep as sw

    seen: list[list] = []
    real = sweeps.next_run
    monkeypatch.setattr(
        sweeps, "next_run", lambda config, runs, **k: seen.append(list(runs)) or real(config, runs, **k)
    )
    state = sw.run_local_sweep(_fake_sweep(tmp_path), count=6, out=tmp_path / "out", echo=lambda s: None)
    assert len(state["runs"]) == 6 and [len(r) for r in seen] == [0, 1, 2, 3, 4, 5]
    for rec, engine_run in zip(state["runs"], seen[-1]):
        x = rec["config"]["model.init_args.x"]["value"]
        want = -((x - 0.3) ** 2)  # the summary (epoch 0 row, written last)
        assert engine_run.config == rec["config"]
        assert engine_run.state == ("failed" if x > 0.9 else "finished")
        assert engine_run.summary_metrics["val/score"] == pytest.approx(want)
        assert engine_run.metric_history("val/score") == pytest.approx([want - 0.1, want])
        argv = json.loads((tmp_path / "out" / rec["name"] / "argv.json").read_text())
        assert argv[0] == f"--model.init_args.x={x}"  # the agent's form, first
    finished = [r for r in state["runs"] if r["state"] == "finished"]
    assert state["best"] == max(finished, key=lambda r: r["summary_metrics"]["val/score"])["name"]
    assert json.loads((tmp_path / "out" / "sweep.json").read_text())["best"] == state["best"]


def test_sweep_local_is_seeded_and_continues_where_it_stopped(tmp_path):
    """The same seed gives the same configurations; a second call with the same OUT continues
    the sweep (the engine sees the earlier runs) instead of starting over."""
    pytest.importorskip("sweeps")
    from mvseg import sweep as sw

    path = _fake_sweep(tmp_path, method="random")
    a = sw.run_local_sweep(path, count=4, out=tmp_path / "a", seed=5, echo=lambda s: None)
    sw.run_local_sweep(path, count=2, out=tmp_path / "b", seed=5, echo=lambda s: None)
    b = sw.run_local_sweep(path, count=2, out=tmp_path / "b", seed=5, echo=lambda s: None)
    assert [r["config"] for r in a["runs"]] == [r["config"] for r in b["runs"]]
    assert [r["name"] for r in b["runs"]] == ["run-0000", "run-0001", "run-0002", "run-0003"]
    c = sw.run_local_sweep(path, count=4, out=tmp_path / "c", seed=6, echo=lambda s: None)
    assert [r["config"] for r in a["runs"]] != [r["config"] for r in c["runs"]]


def test_sweep_local_resumes_an_interrupted_run_from_its_last_checkpoint(tmp_path):
    """A sweep killed during a run: the next call reruns that run first, with --ckpt_path last
    when the run has a last.ckpt, before it asks the engine for new configurations."""
    pytest.importorskip("sweeps")
    from mvseg import sweep as sw

    path = _fake_sweep(tmp_path, method="random")
    out = tmp_path / "out"
    sw.run_local_sweep(path, count=1, out=out, echo=lambda s: None)
    state = json.loads((out / "sweep.json").read_text())
    state["runs"][0]["state"] = "running"  # as a kill during the run leaves it
    (out / "sweep.json").write_text(json.dumps(state))
    (out / "run-0000" / "checkpoints").mkdir()
    (out / "run-0000" / "checkpoints" / "last.ckpt").write_bytes(b"")
    again = sw.run_local_sweep(path, count=1, out=out, echo=lambda s: None)
    assert [r["name"] for r in again["runs"]] == ["run-0000", "run-0001"]
    assert json.loads((out / "run-0000" / "argv.json").read_text())[-2:] == ["--ckpt_path", "last"]
    assert "--ckpt_path" not in json.loads((out / "run-0001" / "argv.json").read_text())
    assert again["runs"][0]["state"] in ("finished", "failed")


def test_sweep_local_errors_name_the_file(tmp_path, capsys):
    pytest.importorskip("sweeps")
    assert main(["sweep", "local", str(tmp_path / "none.yaml"), "--count", "1"]) == 2
    assert f"{tmp_path / 'none.yaml'}: no such sweep file" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump({"method": "sideways", "metric": {"name": "val/mIoU"}, "parameters": {"a": {"values": [1]}}})
    )
    assert main(["sweep", "local", str(bad), "--count", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: not a valid W&B sweep" in err and "sideways" in err
    path = _fake_sweep(tmp_path)
    (tmp_path / "x").mkdir()
    other = _fake_sweep(tmp_path / "x", method="random")
    from mvseg import sweep as sw

    sw.run_local_sweep(path, count=1, out=tmp_path / "out", echo=lambda s: None)
    assert main(["sweep", "local", str(other), "--count", "1", "--out", str(tmp_path / "out")]) == 2
    assert "holds another sweep" in capsys.readouterr().err


def test_sweep_local_trains_with_mvseg_fit(tiny_dataset, tmp_path, monkeypatch, capsys):
    """A grid sweep of real `mvseg fit` runs: every run in its own directory with its own config,
    the metric the engine gets is what the run logged (its best equals the checkpoint's
    best_model_score), and the grid ends the sweep however large --count is."""
    pytest.importorskip("sweeps")
    import torch

    monkeypatch.chdir(ROOT)
    sweep = {
        "program": "mvseg",
        "method": "grid",
        "metric": {"name": "val/mIoU", "goal": "maximize"},
        "parameters": {"model.init_args.optim.lr": {"values": [0.001, 0.02]}},
        "command": ["${env}", "mvseg", "fit", "--config", "experiments/per_frame.yaml", "${args}"],
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(sweep))
    out = tmp_path / "out"
    extra = [
        *folder_data_args(tiny_dataset),
        "--data.init_args.crop_size",
        "[64, 96]",
        "--trainer.max_epochs",
        "2",
        "--trainer.check_val_every_n_epoch",
        "1",
        "--trainer.logger.init_args.save_dir",
        str(tmp_path / "wandb"),
        "--trainer.enable_progress_bar",
        "false",
    ]
    assert main(["sweep", "local", str(path), "--count", "5", "--out", str(out), "--", *extra]) == 0
    printed = capsys.readouterr().out
    assert "the search is exhausted" in printed and "| run-0001" in printed
    state = json.loads((out / "sweep.json").read_text())
    assert [r["state"] for r in state["runs"]] == ["finished", "finished"]
    for rec in state["runs"]:
        run = out / rec["name"]
        conf = yaml.safe_load((run / "config.yaml").read_text())
        assert conf["model"]["init_args"]["optim"]["lr"] == rec["config"]["model.init_args.optim.lr"]["value"]
        assert conf["trainer"]["default_root_dir"] == str(run)
        history = [h["val/mIoU"] for h in rec["history"]]
        assert len(history) == 2 and rec["summary_metrics"]["val/mIoU"] == history[-1]
        ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        best = [v["best_model_score"] for k, v in ckpt["callbacks"].items() if "val/mIoU" in k]
        assert float(best[0]) == pytest.approx(max(history), abs=1e-6)


def test_wandb_agent_runs_get_their_own_run_directory(tiny_data_args, tmp_path, monkeypatch):
    """`wandb agent` starts every run with WANDB_SWEEP_ID and WANDB_RUN_ID set: its checkpoints
    and config go to RUN_DIR/sweep-ID/RUN_ID, not over the previous run's."""
    import torch

    monkeypatch.setenv("WANDB_SWEEP_ID", "sw1")
    args = [
        "fit",
        "--config",
        str(ROOT / "experiments" / "per_frame.yaml"),
        *tiny_data_args,
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "1",
        "--trainer.limit_val_batches",
        "1",
    ]
    for run_id, lr in (("r1", 0.001), ("r2", 0.002)):
        monkeypatch.setenv("WANDB_RUN_ID", run_id)
        assert main([*args, f"--model.init_args.optim.lr={lr}"]) == 0
    for run_id, lr in (("r1", 0.001), ("r2", 0.002)):
        run = tmp_path / "run" / "sweep-sw1" / run_id
        assert yaml.safe_load((run / "config.yaml").read_text())["model"]["init_args"]["optim"]["lr"] == lr
        ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        assert ckpt["optimizer_states"][0]["param_groups"][0]["initial_lr"] == lr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_metrics_file_drops_rows_of_a_resumed_epoch(tmp_path):
    """A resumed fit rewrites the epochs from its checkpoint on: those rows are not kept twice."""
    from types import SimpleNamespace

    import torch

    from mvseg.sweep import MetricsFile

    path = tmp_path / "m.json"
    path.write_text(json.dumps({"history": [{"val/mIoU": 0.1, "epoch": 0}, {"val/mIoU": 0.2, "epoch": 1}]}))
    cb = MetricsFile(str(path))
    trainer = SimpleNamespace(
        current_epoch=1,
        global_step=7,
        sanity_checking=False,
        is_global_zero=True,
        callback_metrics={"val/mIoU": torch.tensor(0.25), "val/per_class": torch.ones(3)},
    )
    cb.on_train_start(trainer, None)
    cb.on_validation_end(trainer, None)
    got = json.loads(path.read_text())
    assert got["history"] == [{"val/mIoU": 0.1, "epoch": 0}, {"val/mIoU": 0.25, "epoch": 1, "step": 7}]
    assert got["summary"] == {"val/mIoU": 0.25, "epoch": 1, "step": 7}
    trainer.sanity_checking = True
    cb.on_validation_end(trainer, None)
    assert len(json.loads(path.read_text())["history"]) == 2
