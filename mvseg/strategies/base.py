"""The strategy base: what every method shares (losses and modules are the method's own).

- Evaluation protocol (DFF, Jain & Gonzalez, AR-Seg; docs/conventions.md): every annotated
  frame is scored with its keyframe d frames before it, for each d in 0..L-1; mIoU per d
  (torchmetrics, ignore index 255), its mean (the headline) and its minimum. Metric names:
  ``val/mIoU``, ``val/mIoU_min``, ``val/mIoU_d{d}`` (``test/...`` likewise).
- Optimiser from config (SGD with momentum, or AdamW) with the poly learning-rate schedule.
- Example predictions logged as W&B image masks during validation.
- The streaming interface the runtime calls (mvseg.runtime.stream_frame): ``stream_reset()``,
  then per frame ``stream_decide`` + ``stream_push``, keyframes decided by a pluggable policy.

The contract of a strategy, in one table (docs/conventions.md, "Strategies", repeats it):

==========================  ========  ========================================================
member                      kind      what it is for
==========================  ========  ========================================================
training_loss(batch)        must      the losses of a training batch ("loss" is optimised)
predict_batch(batch)        must      logits of the batch's current frames (the eval protocol)
stream_step(frame, ...)     must      one frame of a stream -> logits (keyframe or propagated)
stream_reset()              hook      forget the previous stream (call super())
stream_decide(is_key)       hook      the keyframe decision that stands (Adaptive defers one)
stream_push(frame, ...)     hook      -> StreamOut: the decision and the answers now ready
                                      (look-ahead methods hold frames back: interp-MV)
stream_flush()              hook      the frames still held at the end of a stream
stream_idle()               hook      the frame's answer is out: start background work
stream_deviation(frame,...) hook      predicted deviation from the keyframe (content policies)
param_groups()              hook      what the optimiser trains (new layers at their own rate)
has_deviation               flag      stream_deviation works (property where config decides)
has_fast_track              flag      a `low_latency` schedule exists (Adaptive, Li et al.)
distance_invariant          flag      the answer ignores the keyframe distance (per-frame)
needs_next                  flag      samples carry the next keyframe (interp-MV)
reads_nonkey_pixels         flag      non-keyframes read pixels (False: the runtime skips RGB)
reads_motion                flag      the method reads MVs (False: none exported or rasterised)
segments                    flag      it segments (False: FlowPretrain, refused by predict)
==========================  ========  ========================================================

A new method: its module in mvseg/strategies/ (a subclass defining the three musts), its name in
mvseg/strategies/__init__.py, its config in experiments/, and a row in
mvseg.strategies.loading.CHECKPOINT_OPTIONS for each option that loads another run's checkpoint.
"""

from __future__ import annotations

import math
import random
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, is_dataclass
from functools import partial
from typing import Any, NamedTuple, TypeVar

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassJaccardIndex

from mvseg.strategies.policies import POLICY_CLASSES, KeyframePolicy, make_policy

C = TypeVar("C")


def as_config(cls: type[C], value: C | dict | None) -> C:
    """A dataclass config from itself, a dict (as stored in checkpoints) or None (defaults)."""
    if value is None:
        return cls()
    if isinstance(value, dict):
        return cls(**value)
    return value


@dataclass
class OptimConfig:
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9  # lr = base * (1 - step / total) ** power
    schedule: str = "poly"  # poly (DeepLab's) | cosine (lr = base * (1 + cos(pi * step / total)) / 2, AR-Seg's code)
    # linear warm-up from warmup_start x base over the first warmup_steps, then the schedule over
    # the rest (AR-Seg's code: GradualWarmupScheduler, 500 steps from 1e-5, when it starts from a snapshot)
    warmup_steps: int = 0
    warmup_start: float = 0.0


SEG_LOSSES = ("ce", "ohem")


def segmentation_loss(kind: str, ignore_index: int) -> Callable[[Tensor, Tensor], Tensor]:
    """The per-pixel training loss `loss(logits (B, K, H, W), label (B, H, W))`: "ce" (cross-
    entropy) or "ohem" (BiSeNet's online hard example mining, mvseg.losses.segmentation)."""
    from mvseg.losses.segmentation import ohem_cross_entropy

    if kind not in SEG_LOSSES:
        raise ValueError(f"loss must be one of {SEG_LOSSES}, got {kind!r}")
    return partial(F.cross_entropy if kind == "ce" else ohem_cross_entropy, ignore_index=ignore_index)


def lr_factor(schedule: str, total: int, power: float, step: int, warmup: int = 0, warmup_start: float = 0.0) -> float:
    """The learning rate at `step` of `total`, as a fraction of the base rate; the first
    `warmup` steps rise linearly from `warmup_start`, the schedule then runs over the rest."""
    if step < warmup:
        return warmup_start + (1.0 - warmup_start) * step / warmup
    step, total = step - warmup, max(total - warmup, 1)
    t = min(step / total, 1.0)
    if schedule == "poly":
        return (1 - t) ** power
    if schedule == "cosine":  # CosineAnnealingLR with T_max = total and eta_min = 0
        return 0.5 * (1 + math.cos(math.pi * t))
    raise ValueError(f"optim.schedule must be 'poly' or 'cosine', got {schedule!r}")


class StreamOut(NamedTuple):
    """What `SegStrategy.stream_push` gives back for one pushed frame."""

    is_key: bool  # the keyframe decision that stood for the pushed frame
    ready: list[tuple[int, Tensor]]  # (frame index, logits (1, K, H, W)) answered now, in order


class SegStrategy(L.LightningModule, ABC):
    """Base class of every method (the contract: the module docstring's table). Subclasses
    define `training_loss`, `predict_batch` and `stream_step` and own their modules."""

    #: True when the prediction does not depend on the keyframe distance (the per-frame
    #: baseline): distance 0 is evaluated and its mIoU reported for every d.
    distance_invariant: bool = False
    #: True when the method also needs the next keyframe (interp-MV): samples then carry
    #: next_key and the offsets to it (data.init_args.with_next).
    needs_next: bool = False
    #: False when non-keyframes are segmented from motion alone (prop-MV, interp-MV): the
    #: streaming runtime may then skip decoding their pixels to RGB.
    reads_nonkey_pixels: bool = True
    #: False when the method never uses motion (the per-frame baseline): the streaming runtime
    #: then neither exports nor rasterises MVs for it.
    reads_motion: bool = True
    #: False for a strategy that trains a part and segments nothing (FlowPretrain): `mvseg
    #: predict` refuses its checkpoints.
    segments: bool = True
    #: True when the strategy has a `low_latency` schedule (a fast track that answers a keyframe
    #: by propagation while the full network runs in the background: Adaptive, Li et al.).
    has_fast_track: bool = False

    def __init__(
        self,
        num_classes: int,
        keyframe_interval: int = 5,
        optim: OptimConfig | None = None,
        ignore_index: int = 255,
        log_masks: int = 4,
        keyframe_policy: str = "fixed",
        deviation_threshold: float | None = None,
    ):
        """The arguments every strategy takes (a method lists only its own and passes these on
        by keyword): num_classes; keyframe_interval L (the protocol's distances 0..L-1 and the
        fixed policy's interval); optim; ignore_index; log_masks (W&B example masks per
        validation); keyframe_policy (fixed | iframes | adaptive | coverage); deviation_threshold
        (the content policy's threshold: the adaptive policy's deviation, Li et al., given by
        methods with a deviation predictor; the coverage policy's uncovered share; else None)."""
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if keyframe_interval < 1:
            raise ValueError(f"keyframe_interval must be >= 1, got {keyframe_interval}")
        self.num_classes = num_classes
        self.keyframe_interval = keyframe_interval
        self.optim = as_config(OptimConfig, optim)
        if self.optim.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optim.optimizer must be 'sgd' or 'adamw', got {self.optim.optimizer!r}")
        lr_factor(self.optim.schedule, 1, self.optim.poly_power, 0)  # an unknown schedule fails here, not at fit
        if self.optim.warmup_steps < 0 or not 0 <= self.optim.warmup_start <= 1:
            raise ValueError(
                f"optim.warmup_steps must be >= 0 and optim.warmup_start in [0, 1], got "
                f"{self.optim.warmup_steps} and {self.optim.warmup_start}"
            )
        self.ignore_index = ignore_index
        self.log_masks = log_masks
        if deviation_threshold is not None and deviation_threshold < 0:
            raise ValueError(f"deviation_threshold must be >= 0, got {deviation_threshold}")
        # a threshold is only meaningful for a method that predicts deviations
        no_predictor = type(self).stream_deviation is SegStrategy.stream_deviation
        if keyframe_policy == "adaptive" and (deviation_threshold is None or no_predictor):
            raise no_deviation_error(self)
        self.deviation_threshold = deviation_threshold
        self.policy: KeyframePolicy = make_policy(keyframe_policy, keyframe_interval, deviation_threshold)
        self._stream_index = 0
        self.metrics = nn.ModuleDict(
            {
                stage: nn.ModuleList(
                    MulticlassJaccardIndex(num_classes, ignore_index=ignore_index, average="macro", validate_args=False)
                    for _ in range(keyframe_interval)
                )
                for stage in ("val", "test")
            }
        )
        self._seen: dict[str, set[int]] = {"val": set(), "test": set()}
        self._resume_rng: dict | None = None

    # -- what a method defines ---------------------------------------------------------

    @abstractmethod
    def training_loss(self, batch: dict) -> dict[str, Tensor]:
        """Losses of a training batch; "loss" is optimised, every entry is logged."""

    @abstractmethod
    def predict_batch(self, batch: dict) -> Tensor:
        """Logits (B, K, H, W) for the batch's current frames, the method's eval path."""

    @abstractmethod
    def stream_step(self, frame: Tensor, offset: Tensor | None, mask: Tensor | None, is_key: bool) -> Tensor:
        """One frame of a stream: frame (1, 3, H, W) normalised, offset (1, 2, Hc, Wc) of this
        frame to the previous one (None for the first), is_key from the policy -> logits."""

    @property
    def has_deviation(self) -> bool:
        """Whether `stream_deviation` works (content keyframe policies need it)."""
        return False

    def stream_deviation(self, frame: Tensor, offset: Tensor | None = None, mask: Tensor | None = None) -> float | None:
        """Predicted deviation of `frame`'s segmentation from the last keyframe's (content
        keyframe policies); None before the first keyframe. offset, mask: the frame's motion field,
        as `stream_step` gets it (for strategies that read motion). Strategies with a deviation
        predictor define it (and may keep what they computed for the `stream_step` that follows);
        without one it is a usage error, said as such."""
        raise no_deviation_error(self)

    def stream_reset(self) -> None:
        """Forget the state of the previous stream."""
        self.policy.reset()
        self._stream_index = 0

    def stream_decide(self, is_key: bool) -> bool:
        """The keyframe decision that stands for the next frame, given the policy's: the
        policy's own for most strategies; a strategy may override it (Adaptive's low-latency
        schedule defers a keyframe while its slow track is still busy with the last one)."""
        return is_key

    def stream_push(self, frame: Tensor, offset: Tensor | None, mask: Tensor | None, is_key: bool) -> StreamOut:
        """Feed the next frame with the policy's decision: the decision that stood
        (`stream_decide`) and the (frame index, logits) pairs that are ready. Causal methods
        answer every frame at once; methods that look ahead (interp-MV) hold frames back until
        the next keyframe arrives, and `stream_flush` releases the rest."""
        is_key = self.stream_decide(is_key)
        i = self._stream_index
        self._stream_index = i + 1
        return StreamOut(is_key, [(i, self.stream_step(frame, offset, mask, is_key))])

    def stream_flush(self) -> list[tuple[int, Tensor]]:
        """End of the stream: the frames still held back (none for causal methods)."""
        return []

    def stream_idle(self) -> None:
        """The runtime has handed out this frame's results and is about to wait for the next
        frame: the moment to start background work (Adaptive's slow track), so it does not
        compete with the frame's own answer. Nothing for most strategies."""

    # -- training ----------------------------------------------------------------------

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        losses = self.training_loss(batch)
        bs = batch["cur"].shape[0]
        for k, v in losses.items():
            self.log(f"train/{k}", v, prog_bar=k == "loss", batch_size=bs, sync_dist=False)
        return losses["loss"]

    def configure_optimizers(self) -> Any:
        o = self.optim
        params = self.param_groups()
        if o.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        else:
            opt = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, partial(lr_factor, o.schedule, total, o.poly_power, warmup=o.warmup_steps, warmup_start=o.warmup_start)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def param_groups(self) -> list:
        """What the optimiser trains: every parameter that requires grad (one group), or
        param groups with their own "lr" (a method's new layers at a higher rate)."""
        return [p for p in self.parameters() if p.requires_grad]

    # -- evaluation protocol -----------------------------------------------------------

    def _eval_step(self, batch: dict, batch_idx: int, stage: str) -> None:
        dist = torch.as_tensor(batch["distance"], device=batch["cur"].device)
        if self.distance_invariant:
            keep = (dist == 0).nonzero().flatten()
            if len(keep) == 0:  # still log (weight 0): under DDP every rank must sync the same keys
                self.log(f"{stage}/loss", torch.zeros((), device=dist.device), batch_size=0, sync_dist=True)
                return
            batch = select(batch, keep)
            dist = dist[keep]
        logits = self.predict_batch(batch)
        label = batch["label"]
        loss = F.cross_entropy(logits, label, ignore_index=self.ignore_index)
        self.log(f"{stage}/loss", loss, batch_size=len(label), sync_dist=True)
        pred = logits.argmax(1)
        for d in dist.unique().tolist():
            sel = dist == d
            self.metrics[stage][d].update(pred[sel], label[sel])
            self._seen[stage].add(d)
        if stage == "val" and batch_idx == 0:
            self._log_masks(batch, pred)

    def _eval_epoch_end(self, stage: str) -> None:
        metrics = self.metrics[stage]
        # Under DDP each rank saw its own shard's distances, and compute() is a collective: every
        # rank must compute the same metrics, the union of what any rank saw (else a deadlock).
        seen_mask = torch.zeros(self.keyframe_interval, device=self.device)
        seen_mask[sorted(self._seen[stage])] = 1.0
        if self._trainer is not None and self.trainer.world_size > 1:
            seen_mask = self.trainer.strategy.reduce(seen_mask, reduce_op="sum")
        seen = seen_mask.nonzero().flatten().tolist()
        if not seen:
            return
        with warnings.catch_warnings():  # a rank with no update for d still holds its (empty) share
            warnings.filterwarnings("ignore", message=".*compute.*before.*update.*")
            values = {d: metrics[d].compute() for d in seen}
        if self.distance_invariant and 0 in values:
            values = {d: values[0] for d in range(self.keyframe_interval)}
        for d, v in values.items():
            self.log(f"{stage}/mIoU_d{d}", v, sync_dist=False)
        stacked = torch.stack(list(values.values()))
        self.log(f"{stage}/mIoU", stacked.mean(), prog_bar=True, sync_dist=False)
        self.log(f"{stage}/mIoU_min", stacked.min(), sync_dist=False)
        for m in metrics:
            m.reset()
        self._seen[stage] = set()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def _log_masks(self, batch: dict, pred: Tensor) -> None:
        """A few validation frames with predicted and true masks (W&B image masks)."""
        from lightning.pytorch.loggers import WandbLogger

        logger = self.logger
        if self.log_masks <= 0 or not isinstance(logger, WandbLogger) or not self.trainer.is_global_zero:
            return
        import wandb

        dm = getattr(self.trainer, "datamodule", None)
        ds = getattr(dm, "ds", None)
        mean = torch.tensor(ds.mean if ds else (0.5,) * 3).view(3, 1, 1)
        std = torch.tensor(ds.std if ds else (0.25,) * 3).view(3, 1, 1)
        names = {i: n for i, n in enumerate(ds.classes)} if ds else {i: str(i) for i in range(self.num_classes)}
        images = []
        for i in range(min(self.log_masks, len(pred))):
            img = ((batch["cur"][i].detach().cpu() * std + mean).clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
            gt = batch["label"][i].cpu().numpy().copy()
            gt[gt == self.ignore_index] = self.num_classes  # W&B masks need an id for "ignore"
            images.append(
                wandb.Image(
                    img,
                    caption=f"{batch['clip'][i]} frame {int(batch['frame'][i])} d={int(batch['distance'][i])}",
                    masks={
                        "prediction": {"mask_data": pred[i].cpu().numpy(), "class_labels": names},
                        "ground_truth": {"mask_data": gt, "class_labels": {**names, self.num_classes: "ignore"}},
                    },
                )
            )
        logger.experiment.log({"val/examples": images, "trainer/global_step": self.global_step})

    # -- checkpoints -------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Plain dicts instead of dataclasses, so checkpoints load with weights_only=True.
        hp = checkpoint.get("hyper_parameters", {})
        checkpoint["hyper_parameters"] = {k: asdict(v) if is_dataclass(v) else v for k, v in hp.items()}
        checkpoint["mvseg_strategy"] = f"{type(self).__module__}.{type(self).__qualname__}"
        # a smoke test's model (a step or two): marked, so no real run starts from it unawares
        checkpoint["mvseg_smoke"] = bool(self._trainer is not None and self._trainer.fast_dev_run)
        ds = getattr(getattr(self._trainer, "datamodule", None), "ds", None) if self._trainer else None
        if ds is not None:  # what inference needs to read frames and draw classes
            checkpoint["mvseg_data"] = {
                "mean": list(ds.mean),
                "std": list(ds.std),
                "classes": list(ds.classes),
                "palette": ds.palette,
                "ignore_index": ds.ignore_index,
                "dataset": ds.name,
            }
        # Lightning does not store the global RNG streams (dropout; the data's own generator is
        # the DataModule's state): with them, a fit resumed from this checkpoint continues as an
        # uninterrupted one (checkpoints are written at the end of an epoch).
        checkpoint["mvseg_rng"] = rng_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._resume_rng = checkpoint.get("mvseg_rng")

    def on_train_epoch_start(self) -> None:
        # Restored here, not at load, where model initialisation and the sanity check follow.
        # Only when resuming a fit (not for weights loaded to fine-tune).
        if self._resume_rng is not None and self.trainer.ckpt_path:
            set_rng_state(self._resume_rng)
        self._resume_rng = None

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # a fit resumed inside an epoch (mvseg.resume) gets no on_train_epoch_start from Lightning
        self.on_train_epoch_start()


def rng_state() -> dict:
    """The global RNG states (torch, CUDA, NumPy, Python) as plain types and tensors, so a
    checkpoint holding them still loads with torch.load(weights_only=True)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    """Inverse of rng_state()."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    v, internal, g = state["python"]
    random.setstate((v, tuple(internal), g))


def check_policy(policy: KeyframePolicy | str, model: SegStrategy) -> None:
    """Refuse a keyframe policy (an instance, or its config name) that the strategy cannot serve:
    a content policy that reads the predicted deviation, on a strategy without a deviation
    predictor. (A strategy's own `keyframe_policy` is checked at construction, where the
    predictor does not exist yet: a deviation threshold is given only by methods with one.)"""
    needs = POLICY_CLASSES[policy].needs_deviation if isinstance(policy, str) else policy.needs_deviation
    if needs and not model.has_deviation:
        raise no_deviation_error(model)


def no_deviation_error(model: SegStrategy) -> ValueError:
    """The error for a content keyframe policy on a strategy without a deviation predictor."""
    return ValueError(
        f"{type(model).__name__} has no deviation predictor, so no adaptive keyframe policy "
        "(use mvseg.strategies.Adaptive, or PropMV with deviation_channels > 0)"
    )


def select(batch: dict, idx: Tensor) -> dict:
    """The items `idx` of a collated batch (tensors indexed, lists picked)."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] == len(batch["cur"]):
            out[k] = v[idx.to(v.device)]
        elif isinstance(v, (list, tuple)):
            out[k] = [v[i] for i in idx.tolist()]
        else:
            out[k] = v
    return out
