"""Faults: a fit SIGKILLed mid-epoch resumes to the same end; failed writes keep the last good files."""

from __future__ import annotations

import csv
import json
import os
import re
import resource
import signal
import subprocess
import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from mvseg.checkpoint_io import CheckpointWriteError, atomic_torch_save
from mvseg.cli import main
from mvseg.data.cache import CacheWriteError, VideoCache

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).parents[1]
PER_FRAME = ROOT / "experiments" / "per_frame.yaml"


def _fit_args(data: Path, run: Path, epochs: int = 3) -> list[str]:
    return [
        "fit",
        "--config",
        str(PER_FRAME),
        "--data.init_args.root",
        str(data),
        "--data.init_args.dataset",
        "folder",
        "--data.init_args.cache_dir",
        str(data / ".cache"),
        "--data.init_args.num_workers",
        "1",
        "--data.init_args.batch_size",
        "2",
        "--data.init_args.crop_size",
        "[64, 96]",
        "--data.init_args.eval_distances",
        "[0, 1]",
        "--trainer.default_root_dir",
        str(run),
        "--seed_everything",
        "3",
        "--trainer.deterministic",
        "true",
        "--trainer.logger",
        "lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.init_args.save_dir",
        str(run),
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.limit_train_batches",
        "3",
        "--trainer.check_val_every_n_epoch",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--model.init_args.net.dropout",
        "0.1",  # dropout draws from the RNG too
        "--trainer.callbacks+="
        + json.dumps({"class_path": "mvseg.sweep.MetricsFile", "init_args": {"path": str(run / "metrics.json")}}),
    ]


def _metrics(run: Path) -> dict[int, dict[str, float]]:
    """Validation metrics per epoch from every CSVLogger version in `run` (a resumed fit
    writes a new version)."""
    out: dict[int, dict[str, float]] = {}
    for f in sorted(run.glob("*/version_*/metrics.csv")):
        for row in csv.DictReader(f.open()):
            if row.get("val/mIoU"):
                out[int(row["epoch"])] = {k: float(v) for k, v in row.items() if k.startswith("val/") and v}
    return out


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def clean_run(tiny_dataset, tmp_path_factory) -> Path:
    """The uninterrupted fit every kill point is compared with (trained once for the module)."""
    clean = tmp_path_factory.mktemp("clean") / "clean"
    assert main(_fit_args(tiny_dataset, clean)) == 0
    return clean


@pytest.mark.parametrize("kill_at", [(1, 1), (2, 0)], ids=["epoch1-batch1", "epoch2-batch0"])
def test_sigkilled_fit_resumes_to_the_same_metrics(tiny_dataset, clean_run, tmp_path, kill_at, capsys):
    clean = clean_run

    # The same fit in its own process, SIGKILLed at a training batch (no handler runs).
    killed = tmp_path / "killed"
    cb = json.dumps({"class_path": "helpers.SigkillAt", "init_args": {"epoch": kill_at[0], "batch": kill_at[1]}})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "mvseg.cli", *_fit_args(tiny_dataset, killed), f"--trainer.callbacks+={cb}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == -9, proc.stderr[-3000:]
    last = killed / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == kill_at[0] - 1

    # Resume from last.ckpt: the same metrics per epoch and the same final weights.
    assert main([*_fit_args(tiny_dataset, killed), "--ckpt_path", "last"]) == 0
    want, got = _metrics(clean), _metrics(killed)
    assert sorted(want) == sorted(got) == [0, 1, 2]
    for epoch in want:
        assert got[epoch] == pytest.approx(want[epoch], abs=1e-6), epoch
    # metrics.json (mvseg.sweep.MetricsFile) keeps the rows from before the kill
    hist = {r: json.loads((r / "metrics.json").read_text())["history"] for r in (clean, killed)}
    assert [row["epoch"] for row in hist[killed]] == [row["epoch"] for row in hist[clean]] == [0, 1, 2]
    for a, b in zip(hist[clean], hist[killed]):
        assert b["val/mIoU"] == pytest.approx(a["val/mIoU"], abs=1e-6)
    a, b = _weights(clean / "checkpoints" / "last.ckpt"), _weights(killed / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)


def test_resume_last_without_a_checkpoint_starts_fresh(tiny_dataset, tmp_path, capsys):
    """A re-queued job that died before its first checkpoint: --ckpt_path last trains from scratch."""
    run = tmp_path / "run"
    assert main([*_fit_args(tiny_dataset, run, epochs=1), "--ckpt_path", "last"]) == 0
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["epoch"] == 0


@contextmanager
def file_size_limit(nbytes: int):
    """Writes past `nbytes` in any file fail part-way with EFBIG, as they would on a full disk
    (RLIMIT_FSIZE, with SIGXFSZ ignored: a real failed write() without needing root)."""
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, handler)


def test_failed_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "ckpts" / "last.ckpt"
    atomic_torch_save({"epoch": 0, "w": torch.arange(10.0)}, path)
    good = path.read_bytes()
    big = {"epoch": 1, "w": torch.zeros(1 << 20)}  # 4 MB: the write fails after 64 kB
    with (
        file_size_limit(64 << 10),
        pytest.raises(
            CheckpointWriteError,
            match=r"last.ckpt: could not write the "
            r"checkpoint \(File too large\); the previous checkpoint there is unchanged",
        ),
    ):
        atomic_torch_save(big, path)
    assert path.read_bytes() == good
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary file left
    assert torch.load(path, weights_only=True)["epoch"] == 0
    atomic_torch_save(big, path)  # space again: written
    assert torch.load(path, weights_only=True)["epoch"] == 1


class _FillDiskAt(Callback):
    """From the start of `epoch` on, no file may grow past `nbytes`."""

    def __init__(self, epoch: int, nbytes: int, stack: ExitStack):
        self.epoch, self.nbytes, self.stack = epoch, nbytes, stack

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            self.stack.enter_context(file_size_limit(self.nbytes))


def test_fit_with_a_full_disk_keeps_the_last_good_checkpoint(tiny_dataset, tmp_path, capsys, monkeypatch):
    from mvseg.cli import lightning as lightning_cli

    run = tmp_path / "run"
    with ExitStack() as stack:
        orig = lightning_cli.MVSegCLI.instantiate_trainer

        def with_fault(self, **kwargs):
            trainer = orig(self, **kwargs)
            trainer.callbacks.append(_FillDiskAt(1, 256 << 10, stack))
            return trainer

        monkeypatch.setattr(lightning_cli.MVSegCLI, "instantiate_trainer", with_fault)
        rc = main(_fit_args(tiny_dataset, run, epochs=2))
    assert rc == 1
    err = capsys.readouterr().err
    assert re.search(
        r"mvseg: error: \S+/checkpoints/\S+\.ckpt: could not write the checkpoint \(File too large\); "
        r"(the previous checkpoint there is unchanged|nothing was written)",
        err,
    ), err[-2000:]
    ckpts = run / "checkpoints"
    assert torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)["epoch"] == 0
    assert torch.load(ckpts / "best-epoch=0.ckpt", map_location="cpu", weights_only=True)["epoch"] == 0
    assert not [p for p in ckpts.iterdir() if ".tmp-" in p.name]
    # and the run resumes from it once there is space again
    monkeypatch.undo()
    assert main([*_fit_args(tiny_dataset, run, epochs=2), "--ckpt_path", "last"]) == 0
    assert torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)["epoch"] == 1


def test_failed_cache_write_leaves_the_other_entries_intact(pan_video, bframe_video, tmp_path):
    cache = VideoCache(tmp_path / "cache")
    first = cache.load(pan_video[0])
    before = {p: p.read_bytes() for p in cache.entry_dir(pan_video[0]).iterdir()}
    with (
        file_size_limit(64 << 10),
        pytest.raises(
            CacheWriteError,
            match=r"bframes.mp4: could not write its decode "
            r"cache to \S+ \(.+\); no entry was written",
        ),
    ):
        cache.load(bframe_video[0])
    assert sorted(p.name for p in cache.root.iterdir()) == [cache.entry_dir(pan_video[0]).name]  # nothing partial
    assert {p: p.read_bytes() for p in cache.entry_dir(pan_video[0]).iterdir()} == before
    again = cache.load(pan_video[0])  # still valid: reused, not rebuilt
    assert np.array_equal(np.asarray(again.frames), np.asarray(first.frames))
    assert len(cache.load(bframe_video[0])) == 24  # space again: built


@pytest.fixture(scope="module")
def four_clip_dataset(tmp_path_factory):
    """4 training clips (8 samples, 4 batches of 2): room for a stop inside an epoch."""
    from conftest import make_tiny_dataset

    return make_tiny_dataset(tmp_path_factory, train_clips=4, val_clips=1)


@pytest.fixture(scope="module")
def clean_four_clip_run(four_clip_dataset, tmp_path_factory):
    clean = tmp_path_factory.mktemp("clean4") / "clean"
    assert main(_fit_args(four_clip_dataset, clean)) == 0
    return clean


@pytest.mark.parametrize(
    "signum,at", [("SIGINT", (1, 1)), ("SIGTERM", (0, 2))], ids=["sigint-mid-epoch", "sigterm-last-batch"]
)
def test_interrupted_fit_saves_and_resumes_exactly(
    four_clip_dataset, clean_four_clip_run, tmp_path, signum, at, capsys
):
    """Ctrl-C (SIGINT) or SIGTERM during fit: the step in flight finishes, the checkpoint is saved
    (inside the epoch: with the epoch's position; at its last batch: after the epoch's validation),
    the process exits 128 + signal with one line; --ckpt_path last ends where an uninterrupted run does."""
    clean = clean_four_clip_run
    stopped = tmp_path / "stopped"
    cb = json.dumps(
        {"class_path": "helpers.SigkillAt", "init_args": {"epoch": at[0], "batch": at[1], "signum": signum}}
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "mvseg.cli", *_fit_args(four_clip_dataset, stopped), f"--trainer.callbacks+={cb}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 128 + getattr(signal, signum), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = stopped / "checkpoints" / "last.ckpt"
    line = [x for x in proc.stderr.splitlines() if x.startswith("mvseg: fit stopped")]
    assert line == [
        f"mvseg: fit stopped by {signum} in epoch {at[0]} after step {3 * at[0] + at[1] + 1}: "
        f"checkpoint saved: {last}; resume with --ckpt_path last"
    ]
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3 * at[0] + at[1] + 1  # limit_train_batches 3: the step in flight is kept
    assert ("train_epoch" in ckpt["CompressedVideoDataModule"]) == (at[1] < 2)  # mid-epoch: the epoch's position

    assert main([*_fit_args(four_clip_dataset, stopped), "--ckpt_path", "last"]) == 0
    want, got = _metrics(clean), _metrics(stopped)
    assert sorted(want) == sorted(got) == [0, 1, 2]
    for epoch in want:
        assert got[epoch] == pytest.approx(want[epoch], abs=1e-6), epoch
    a, b = _weights(clean / "checkpoints" / "last.ckpt"), _weights(last)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)


def test_latest_checkpoint_every_epoch_and_every_n_steps_without_validation(tiny_dataset, tmp_path, capsys):
    """last.ckpt after every epoch although validation runs every 10 epochs; with
    every_n_train_steps 3, after step 3 too (inside epoch 1), with the epoch's position."""
    import mvseg.resume

    seen: list[tuple[int, bool]] = []
    save = mvseg.resume.LatestCheckpoint.save_now

    def spy(self, trainer):
        save(self, trainer)
        ck = torch.load(Path(self.dirpath) / "last.ckpt", map_location="cpu", weights_only=True)
        seen.append((ck["global_step"], "train_epoch" in ck["CompressedVideoDataModule"]))

    run = tmp_path / "run"
    cfg = tmp_path / "steps.yaml"  # a user's config: the callbacks list replaced whole
    cfg.write_text(
        f"base: {PER_FRAME}\ntrainer:\n  callbacks:\n    - class_path: mvseg.resume.LatestCheckpoint\n"
        "      init_args:\n        every_n_train_steps: 3\n"
    )
    args = [
        *_fit_args(tiny_dataset, run),
        "--trainer.check_val_every_n_epoch",
        "10",
        "--trainer.limit_train_batches",
        "2",
    ]
    args[args.index(str(PER_FRAME))] = str(cfg)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mvseg.resume.LatestCheckpoint, "save_now", spy)
        assert main(args) == 0
    assert (run / "checkpoints" / "last.ckpt").resolve().name == "latest.ckpt"
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["epoch"] == 2
    assert seen == [(3, True)]  # the step checkpoint; the epoch ends save through Lightning's own path


def test_ctrl_c_in_data_prepare_leaves_whole_files_and_the_command_finishes(tmp_path):
    """Ctrl-C (to the whole process group, as a terminal sends it) once the first clip exists: one
    line, exit 130, no worker tracebacks, whole clips only (no .part, no dataset.json); the same
    command then finishes the dataset."""
    import time

    out = tmp_path / "syn"
    cmd = [
        sys.executable,
        "-m",
        "mvseg.cli",
        "data",
        "prepare",
        "synthetic",
        "--out",
        str(out),
        "--train-clips",
        "12",
        "--val-clips",
        "1",
        "--frames",
        "12",
        "--height",  # small clips: what is tested is the interruption, not the size
        "64",
        "--width",
        "128",
        "--annotated",
        "5",
        "--workers",
        "2",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(out.glob("videos/*/*.mp4")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the dataset was finished before Ctrl-C arrived")
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "mvseg data: interrupted: the files written so far are whole; the same command finishes the dataset"
    )
    kept = sorted(out.glob("videos/*/*.mp4"))
    assert kept and not list(out.glob("videos/*/*.part")) and not (out / "dataset.json").exists()
    assert subprocess.run(cmd, capture_output=True, text=True, timeout=300).returncode == 0
    assert len(list(out.glob("videos/*/*.mp4"))) == 13 and (out / "dataset.json").is_file()


def test_a_signal_in_the_last_epoch_lets_the_fit_end(four_clip_dataset, tmp_path, capsys):
    """SIGTERM at the last batch of the last epoch: nothing left to resume, the fit ends as usual
    (exit 0, its summary), and the process's own handlers are back."""
    run = tmp_path / "run"
    cb = json.dumps({"class_path": "helpers.SigkillAt", "init_args": {"epoch": 1, "batch": 2, "signum": "SIGTERM"}})
    before = signal.getsignal(signal.SIGTERM)
    assert main([*_fit_args(four_clip_dataset, run, epochs=2), f"--trainer.callbacks+={cb}"]) == 0
    out, err = capsys.readouterr()
    assert "SIGTERM received: stopping after the training step in flight" in err and "fit stopped" not in err
    assert "mvseg: run done (2 epochs, 6 steps)" in out
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["epoch"] == 1
    assert signal.getsignal(signal.SIGTERM) is before
