"""A run folder belongs to one fit at a time; a trained run is never mixed with a new one; a fit
that fails at start-up leaves the folder's config as it was; a checkpoint of another method is
refused under a config (mvseg.run_dir, mvseg.cli.lightning)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import folder_data_args

from mvseg.cli import main
from mvseg.run_dir import LOCK_NAME, RunLock

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).parents[2]


def _fit(data: Path, run: Path, *extra: str) -> list[str]:
    return [
        "fit",
        "--config",
        str(ROOT / "experiments" / "per_frame.yaml"),
        *folder_data_args(data),
        "--data.init_args.batch_size",
        "2",
        "--data.init_args.crop_size",
        "[64, 96]",
        "--data.init_args.eval_distances",
        "[0]",
        "--trainer.default_root_dir",
        str(run),
        "--trainer.logger",
        "lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.init_args.save_dir",
        str(run),
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "1",
        "--trainer.check_val_every_n_epoch",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        *extra,
    ]


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(_fit(tiny_dataset, run)) == 0
    return run


def _snapshot(run: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file() and p.name != LOCK_NAME
    }


def test_a_second_fit_into_a_folder_in_use_is_refused_naming_the_holder(tiny_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    lock = RunLock(run).acquire()  # another fit holds the folder (flock: any other open file description)
    try:
        assert main(_fit(tiny_dataset, run)) == 2
    finally:
        lock.release()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"mvseg: error: {run}: in use by another mvseg fit (PID {os.getpid()},")
    assert not (run / "config.yaml").exists() and not (run / "checkpoints").exists()
    assert main(_fit(tiny_dataset, run)) == 0  # released: the folder is free again
    assert (run / "config.yaml").is_file() and (run / LOCK_NAME).is_file()


def test_a_new_run_over_a_trained_one_is_refused_unless_resumed_or_overwritten(trained, tiny_dataset, capsys):
    before = _snapshot(trained)
    assert main(_fit(tiny_dataset, trained)) == 2
    err = capsys.readouterr().err
    assert f"{trained} holds a trained run (3 checkpoints" in err and "--ckpt_path last" in err and "--overwrite" in err
    # a fit that fails at start-up in a trained run's folder: everything byte-identical
    assert main(_fit(tiny_dataset, trained, "--data.init_args.batch_size", "0", "--ckpt_path", "last")) == 2
    assert "data.batch_size must be >= 1, got 0" in capsys.readouterr().err
    assert _snapshot(trained) == before


def test_overwrite_starts_the_run_over(tiny_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_fit(tiny_dataset, run, "--trainer.max_epochs", "2")) == 0
    assert (run / "checkpoints" / "best-epoch=1.ckpt").exists() or (run / "checkpoints" / "best-epoch=0.ckpt").exists()
    assert main(_fit(tiny_dataset, run, "--overwrite")) == 0
    assert "mvseg: --overwrite: removed" in capsys.readouterr().err
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["best-epoch=0.ckpt", "last.ckpt", "latest.ckpt"]  # nothing left of the 2-epoch run


def test_a_checkpoint_of_another_method_is_refused_under_a_config(trained, tiny_dataset, tmp_path, capsys):
    ckpt = trained / "checkpoints" / "last.ckpt"
    args = [
        "--data.init_args.root",
        str(tiny_dataset),
        "--data.init_args.dataset",
        "folder",
        "--data.init_args.cache_dir",
        str(tiny_dataset / ".cache"),
        "--trainer.logger",
        "lightning.pytorch.loggers.CSVLogger",
        "--trainer.default_root_dir",
        str(tmp_path / "prop_mv"),
        "--ckpt_path",
        str(ckpt),
    ]
    for verb in ("validate", "test", "fit"):
        assert main([verb, "--config", str(ROOT / "experiments" / "prop_mv.yaml"), *args]) == 2
        err = capsys.readouterr().err
        assert (
            f"ckpt_path: {ckpt} holds a PerFrame (mvseg.strategies.per_frame.PerFrame) but the config's model is "
            "mvseg.strategies.prop_mv.PropMV"
        ) in err, verb
    assert not (tmp_path / "prop_mv").exists()
