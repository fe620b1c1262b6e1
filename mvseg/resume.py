"""The resume point of a fit: RUN/checkpoints/latest.ckpt (and its `last.ckpt` link), written at
every epoch end whether or not validation runs, every N training steps if asked, and when the
fit is told to stop (Ctrl-C, SIGTERM), so that `--ckpt_path last` loses nothing but the step in
flight and resumes exactly (the training data's position inside the epoch is in the checkpoint:
mvseg.data.samples.SeededSampler).

Lightning's own handling of Ctrl-C stops wherever the signal lands (between an optimiser step and
its bookkeeping, inside a logger) and saves nothing; SIGTERM is only handled for SLURM. Here the
first SIGINT / SIGTERM sets a flag, the training step in flight finishes, the checkpoint is
written (atomically, through the trainer's CheckpointIO) and the fit ends with `FitInterrupted`;
a second signal stops at once, as before.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

#: the signals that stop a fit with a checkpoint; 128 + the number is the exit status
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class FitInterrupted(Exception):
    """A fit stopped by SIGINT / SIGTERM after saving its resume point."""

    def __init__(self, signum: int, ckpt: str | None, epoch: int, step: int) -> None:
        self.signum, self.ckpt, self.epoch, self.step = signum, ckpt, epoch, step
        name = signal.Signals(signum).name
        kept = f"checkpoint saved: {ckpt}; resume with --ckpt_path last" if ckpt else "no checkpoint could be saved"
        super().__init__(f"fit stopped by {name} in epoch {epoch} after step {step}: {kept}")

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum)


class LatestCheckpoint(ModelCheckpoint):
    """RUN/checkpoints/latest.ckpt (one file, overwritten) with a `last.ckpt` link to it: written
    at the end of every training epoch (validation or not), every `every_n_train_steps` steps
    when > 0, and on SIGINT / SIGTERM after the step in flight (single-process fits; under DDP
    the ranks keep Lightning's handling and resume from the last epoch or step checkpoint)."""

    def __init__(
        self,
        dirpath: str | None = None,
        filename: str = "latest",
        every_n_train_steps: int = 0,
        stop_on_signal: bool = True,
    ) -> None:
        if every_n_train_steps < 0:
            raise ValueError(f"every_n_train_steps must be >= 0, got {every_n_train_steps}")
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            save_last="link",
            save_top_k=1,
            enable_version_counter=False,
            save_on_train_epoch_end=True,
        )
        self.step_interval = every_n_train_steps
        self.stop_on_signal = stop_on_signal
        self._signal: int | None = None
        self._previous: dict[int, object] = {}

    # -- saving -----------------------------------------------------------------------------
    def save_now(self, trainer: pl.Trainer) -> None:
        """Write latest.ckpt (and the last.ckpt link) for the trainer's state now."""
        candidates = self._monitor_candidates(trainer)
        self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        # the epoch's last step is saved at the epoch end (after validation), not twice
        last = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if self._signal is not None and not last:
            if not self._should_skip_saving_checkpoint(trainer):  # not saved at this step already
                self.save_now(trainer)
            self._stop(trainer)
        if (
            self.step_interval
            and not last
            and trainer.global_step % self.step_interval == 0
            and not self._should_skip_saving_checkpoint(trainer)
        ):
            self.save_now(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)  # the epoch's checkpoint
        last_epoch = trainer.max_epochs is not None and 0 <= trainer.max_epochs <= trainer.current_epoch + 1
        if self._signal is not None and not last_epoch:  # in the last epoch the fit simply ends (and says so)
            self._stop(trainer)

    # -- signals ----------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        if (
            not self.stop_on_signal
            or trainer.world_size > 1
            or threading.current_thread() is not threading.main_thread()
        ):
            return
        for s in STOP_SIGNALS:
            self._previous[s] = signal.signal(s, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        if self._signal is not None:  # the second one: stop at once (KeyboardInterrupt, Lightning's path)
            self._restore()
            raise KeyboardInterrupt
        self._signal = signum
        print(
            f"\nmvseg fit: {signal.Signals(signum).name} received: stopping after the training step in flight "
            "with a checkpoint (send it again to stop at once, losing that step)",
            file=sys.stderr,
            flush=True,
        )

    def _restore(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}

    def _stop(self, trainer: pl.Trainer) -> None:
        self._restore()
        signum, self._signal = self._signal, None
        ckpt = self.last_model_path or self.best_model_path or None
        raise FitInterrupted(signum, str(Path(ckpt)) if ckpt else None, trainer.current_epoch, trainer.global_step)

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore()
        super().on_train_end(trainer, pl_module)  # last.ckpt even when no epoch ended (a smoke test's step)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore()
        super().on_exception(trainer, pl_module, exception)
