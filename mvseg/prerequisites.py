"""The stages a config stands on, trained first when their checkpoint is missing.

A config names them under `prerequisites`: the config key of each checkpoint it loads and the
config that writes that checkpoint (its `trainer.default_root_dir`/checkpoints/last.ckpt),
relative to the config's own folder:

    prerequisites:
      model.init_args.init_from: per_frame.yaml    # runs/per_frame/checkpoints/last.ckpt
      model.init_args.lr_init: arseg_lr.yaml       # runs/arseg_lr/checkpoints/last.ckpt

`mvseg fit` then trains a missing stage first (`mvseg fit --config STAGE`, which handles its own
prerequisites), with a one-line notice, and reuses it when present; `--no-prerequisites`
refuses instead, naming the config to run. A key set to another file than the stage writes is
the user's choice: it is left to the usual checks. Where the data live and where it trains
(`--data.init_args.root/dataset/cache_dir/num_workers`, `--trainer.accelerator/devices/
precision/strategy`) are passed on to the stages; the rest of each stage is its own config.

With `--trainer.fast_dev_run` the stages run as smoke tests too, each in a scratch folder, and
so does the run itself: a smoke test of any config works on a fresh clone and writes nothing
into `runs/` (a one-step checkpoint there would replace a trained model).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

# options of the command line that say where the data are and where training runs: the same
# for every stage of one job
PASSED_ON = (
    "--data.init_args.root",
    "--data.init_args.dataset",
    "--data.init_args.cache_dir",
    "--data.init_args.num_workers",
    "--trainer.accelerator",
    "--trainer.devices",
    "--trainer.precision",
    "--trainer.strategy",
)


class PrerequisiteError(ValueError):
    """A stage that is missing and may not, or could not, be trained."""


def stage_checkpoint(stage: Path) -> Path | None:
    """The checkpoint a stage's config writes: trainer.default_root_dir/checkpoints/last.ckpt."""
    root = (yaml.safe_load(stage.read_text()) or {}).get("trainer", {}).get("default_root_dir")
    return Path(root) / "checkpoints" / "last.ckpt" if root else None


def find_stage(name: str, config_files: Sequence[str | Path]) -> Path:
    """A stage's config, relative to the folder of one of the run's --config files."""
    for cfg in config_files:
        p = Path(cfg).parent / name
        if p.is_file():
            return p
    raise PrerequisiteError(f"prerequisites: {name} not found beside {', '.join(map(str, config_files))}")


def passed_on(args: Sequence[str]) -> list[str]:
    """The PASSED_ON options of a command line, as given (`--key value` or `--key=value`)."""
    out, i = [], 0
    while i < len(args):
        key = args[i].split("=", 1)[0]
        if key in PASSED_ON:
            out += [args[i]] if "=" in args[i] else list(args[i : i + 2])
            i += 1 if "=" in args[i] else 2
            continue
        i += 1
    return out


_SMOKE_STAGE = "MVSEG_SMOKE_STAGE"  # set for a stage of a smoke test: it writes where it is told
# a smoke test's scratch folder, for the DDP ranks Lightning starts later from the same command
# line: they find the stages there instead of smoke-testing them again (cleared after the run)
SMOKE_ROOT = "MVSEG_SMOKE_ROOT"


def fit_stage(stage: Path, extra: Sequence[str], smoke: bool = False) -> int:
    """`mvseg fit --config STAGE ...` in its own process (a clean W&B run, its own seed)."""
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_RUN_ID", "WANDB_SWEEP_ID", _SMOKE_STAGE, SMOKE_ROOT)}
    if smoke:
        env[_SMOKE_STAGE] = "1"
    return subprocess.run(
        [sys.executable, "-m", "mvseg.cli", "fit", "--config", str(stage), *extra], env=env
    ).returncode


def prepare(
    cfg,
    config_files: Sequence[str | Path],
    args: Sequence[str],
    allowed: bool = True,
    fit: Callable[..., int] = fit_stage,
    log: Callable[[str], None] | None = None,
) -> None:
    """Make every prerequisite of the parsed `fit` config `cfg` exist (train it, or, under
    fast_dev_run, smoke-test it in a scratch folder and point `cfg` there); see the module doc."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    smoke = cfg["trainer"].get("fast_dev_run")
    if smoke and os.environ.get(_SMOKE_STAGE):  # a stage of a smoke test: its own stages go beside it
        scratch = Path(cfg["trainer"]["default_root_dir"]).parent
    elif smoke:
        reuse = os.environ.get(SMOKE_ROOT)
        scratch = Path(reuse or tempfile.mkdtemp(prefix="mvseg-smoke-"))
        if not reuse:
            log(
                f"mvseg: fast_dev_run is a smoke test: it writes to {scratch}, "
                f"not {cfg['trainer'].get('default_root_dir')}"
            )
            os.environ[SMOKE_ROOT] = str(scratch)
        cfg["trainer"]["default_root_dir"] = str(scratch / "run")
    from mvseg.strategies.loading import checkpoint_option_keys

    known = checkpoint_option_keys()
    for key, name in (cfg.get("prerequisites") or {}).items():
        if key not in known:  # a stage must be loaded by an option that loads checkpoints
            raise PrerequisiteError(
                f"prerequisites: {key!r} loads no checkpoint; the options that do: {', '.join(known)}"
            )
        path = cfg.get(key)
        if not path:
            continue  # nothing to load
        stage = find_stage(name, config_files)
        if Path(path).resolve() != (stage_checkpoint(stage) or Path("/nonexistent")).resolve():
            continue  # the user points the key at another file: the usual checks apply
        if smoke:
            out = scratch / stage.stem
            if (out / "checkpoints" / "last.ckpt").is_file():  # another rank of this smoke test made it
                cfg[key] = str(out / "checkpoints" / "last.ckpt")
                continue
            rc = fit(
                stage,
                [*passed_on(args), "--trainer.fast_dev_run", str(smoke), "--trainer.default_root_dir", str(out)],
                smoke=True,
            )
            if rc:
                raise PrerequisiteError(f"{key}: the smoke test of {stage} failed (exit status {rc})")
            cfg[key] = str(out / "checkpoints" / "last.ckpt")
            continue
        if Path(path).is_file():
            continue
        if not allowed:
            raise PrerequisiteError(
                f"{key}: {path} not found; it is written by `mvseg fit --config {stage}` "
                "(run that first, or drop --no-prerequisites)"
            )
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise PrerequisiteError(
                f"{key}: {path} not found; a distributed launch does not train prerequisite stages: "
                f"run `mvseg fit --config {stage}` first"
            )
        log(f"mvseg: {key}: {path} does not exist yet: training {stage} first")
        rc = fit(stage, passed_on(args))
        if rc or not Path(path).is_file():
            raise PrerequisiteError(f"{key}: training {stage} did not write {path} (exit status {rc})")
        log(f"mvseg: {stage} done; back to the run that stands on it")
