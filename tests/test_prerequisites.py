"""`prerequisites` in a config: the stages a run loads are trained first when missing, reused
when present, refused with --no-prerequisites, and smoke-tested in a scratch folder under
fast_dev_run (nothing written into the run directories)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import folder_data_args

from mvseg.cli import main
from mvseg.prerequisites import PrerequisiteError, find_stage, passed_on, prepare, stage_checkpoint

ROOT = Path(__file__).resolve().parents[1]
NET = {"backbone": "resnet18", "width": 0.125, "output_stride": 8, "feat_dim": 16, "head": "plain", "head_dim": 16}


def _merged(path: Path) -> dict:
    """An experiment with its chain of bases merged in (as `mvseg fit` reads it), to copy elsewhere."""
    from mvseg.cli.lightning import merged_config

    return merged_config(path)


def _config(base: str, run: Path, **model) -> dict:
    cfg = _merged(ROOT / "experiments" / base)
    cfg["trainer"].update(
        default_root_dir=str(run),
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=1,
        check_val_every_n_epoch=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger={"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(run)}},
    )
    cfg["model"]["init_args"].update(net=NET, **model)
    cfg.pop("prerequisites", None)
    return cfg


@pytest.fixture
def stages(tmp_path, tiny_dataset):
    """a.yaml (a per-frame model) and b.yaml (prop-MV from a's checkpoint, with a as its
    prerequisite), writing under tmp/runs; the data options every stage is given."""
    runs = tmp_path / "runs"
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(_config("per_frame.yaml", runs / "a")))
    b = _config("prop_mv.yaml", runs / "b", init_from=str(runs / "a" / "checkpoints" / "last.ckpt"))
    b["prerequisites"] = {"model.init_args.init_from": "a.yaml"}
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(b))
    data = [
        *folder_data_args(tiny_dataset),
    ]
    return tmp_path, runs, data


def test_a_missing_stage_is_trained_first_then_reused(stages, capfd):
    tmp, runs, data = stages
    assert main(["fit", "--config", str(tmp / "b.yaml"), *data]) == 0
    err = capfd.readouterr().err
    ckpt = runs / "a" / "checkpoints" / "last.ckpt"
    assert f"model.init_args.init_from: {ckpt} does not exist yet: training {tmp / 'a.yaml'} first" in err
    assert ckpt.is_file() and (runs / "b" / "checkpoints" / "last.ckpt").is_file()
    stamp = ckpt.stat().st_mtime_ns
    assert (
        main(["fit", "--config", str(tmp / "b.yaml"), *data, "--overwrite"]) == 0
    )  # b again from a (a run folder is one run: --overwrite)
    assert "first" not in capfd.readouterr().err and ckpt.stat().st_mtime_ns == stamp  # reused


def test_no_prerequisites_refuses_and_names_the_config(stages, capsys):
    tmp, runs, data = stages
    assert main(["fit", "--config", str(tmp / "b.yaml"), *data, "--no-prerequisites"]) == 2
    err = capsys.readouterr().err
    assert (
        f"mvseg: error: model.init_args.init_from: {runs / 'a' / 'checkpoints' / 'last.ckpt'} not found; "
        f"it is written by `mvseg fit --config {tmp / 'a.yaml'}`" in err
    )
    assert not runs.exists()


def test_fast_dev_run_smoke_tests_every_stage_and_writes_nothing_into_runs(stages, capfd):
    tmp, runs, data = stages
    assert main(["fit", "--config", str(tmp / "b.yaml"), *data, "--trainer.fast_dev_run", "1"]) == 0
    err = capfd.readouterr().err
    assert "mvseg: fast_dev_run is a smoke test: it writes to " in err
    assert not runs.exists()  # neither the stage's nor the run's own directory


@pytest.mark.reliability
def test_a_smoke_test_after_a_real_run_leaves_its_files_byte_identical(stages, capfd):
    tmp, runs, data = stages
    assert main(["fit", "--config", str(tmp / "b.yaml"), *data]) == 0
    before = {p: p.read_bytes() for p in runs.rglob("*") if p.is_file()}
    assert main(["fit", "--config", str(tmp / "b.yaml"), *data, "--trainer.fast_dev_run", "1"]) == 0
    assert {p: p.read_bytes() for p in runs.rglob("*") if p.is_file()} == before


def test_a_key_pointed_elsewhere_is_left_to_the_usual_checks(stages, capsys):
    tmp, runs, data = stages
    rc = main(["fit", "--config", str(tmp / "b.yaml"), *data, "--model.init_args.init_from", str(tmp / "mine.ckpt")])
    assert rc == 2 and "mine.ckpt" in capsys.readouterr().err and not runs.exists()


def test_a_prerequisite_under_a_key_that_loads_no_checkpoint_is_refused(tmp_path):
    # the keys come from one table (mvseg.strategies.loading.CHECKPOINT_OPTIONS)
    cfg = {"trainer": {}, "prerequisites": {"model.init_args.net": "a.yaml"}}
    with pytest.raises(PrerequisiteError, match=r"'model.init_args.net' loads no checkpoint.*init_args.init_from"):
        prepare(cfg, [str(tmp_path / "b.yaml")], [])


def test_passed_on_options():
    args = [
        "--config",
        "x.yaml",
        "--data.init_args.root",
        "d",
        "--trainer.max_epochs",
        "3",
        "--trainer.accelerator=gpu",
        "--data.init_args.batch_size",
        "2",
        "--trainer.devices",
        "2",
    ]
    assert passed_on(args) == ["--data.init_args.root", "d", "--trainer.accelerator=gpu", "--trainer.devices", "2"]


CONFIGS = [p for p in (ROOT / "experiments").rglob("*.yaml") if "prerequisites:" in p.read_text()]


@pytest.mark.parametrize("config", CONFIGS, ids=[str(p.relative_to(ROOT / "experiments")) for p in CONFIGS])
def test_each_prerequisite_is_the_stage_that_writes_the_checkpoint(config):
    cfg = yaml.safe_load(config.read_text())
    for key, name in cfg["prerequisites"].items():
        value = cfg
        for part in key.split("."):
            value = value[part]
        assert stage_checkpoint(find_stage(name, [config])) == Path(value), (key, name)


def test_the_main_job_stands_on_its_two_stages():
    assert {str(p.relative_to(ROOT)) for p in CONFIGS} >= {"experiments/arseg.yaml", "experiments/arseg_lr.yaml"}
    cfg = yaml.safe_load((ROOT / "experiments" / "arseg.yaml").read_text())
    assert cfg["prerequisites"] == {
        "model.init_args.init_from": "per_frame.yaml",
        "model.init_args.lr_init": "arseg_lr.yaml",
    }


def test_ddp_ranks_of_a_smoke_test_reuse_its_scratch(tmp_path, monkeypatch):
    # Lightning starts DDP ranks 1.. by running the same command line again: they must find the
    # stages rank 0 smoke-tested (same scratch folder), not run them again
    from mvseg import prerequisites

    monkeypatch.delenv(prerequisites.SMOKE_ROOT, raising=False)
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({"trainer": {"default_root_dir": "runs/a"}}))
    calls = []

    def fit(stage, extra, smoke=False):
        out = Path(extra[extra.index("--trainer.default_root_dir") + 1])
        (out / "checkpoints").mkdir(parents=True)
        (out / "checkpoints" / "last.ckpt").write_bytes(b"")
        calls.append(stage)
        return 0

    def cfg():
        return {
            "trainer": {"fast_dev_run": 1, "default_root_dir": "runs/b"},
            "prerequisites": {"model.init_args.init_from": "a.yaml"},
            "model.init_args.init_from": "runs/a/checkpoints/last.ckpt",
        }

    rank0, rank1 = cfg(), cfg()
    prerequisites.prepare(rank0, [tmp_path / "b.yaml"], [], fit=fit, log=lambda m: None)
    prerequisites.prepare(rank1, [tmp_path / "b.yaml"], [], fit=fit, log=lambda m: None)  # same env: a later rank
    assert len(calls) == 1 and rank0 == rank1
    assert (
        rank0["model.init_args.init_from"].endswith("a/checkpoints/last.ckpt")
        and "mvseg-smoke-" in rank0["trainer"]["default_root_dir"]
    )
