"""Test helpers: synthetic inputs with known answers."""

from __future__ import annotations

import os
import signal

import numpy as np
from lightning.pytorch.callbacks import Callback


def smooth_texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A band-limited RGB texture (float, 0..255): sub-pixel shifts of it are well defined."""
    rng = np.random.default_rng(seed)
    f = np.fft.rfft2(rng.normal(size=(3, h, w)))
    ky = np.fft.fftfreq(h)[:, None]
    kx = np.fft.rfftfreq(w)[None, :]
    f *= np.exp(-((kx**2 + ky**2) / (2 * 0.06**2)))
    img = np.fft.irfft2(f, s=(h, w))
    img = (img - img.min()) / (img.max() - img.min())
    return (img * 220 + 20).transpose(1, 2, 0)


def translating_frames(n: int, h: int, w: int, vx: float, vy: float, seed: int = 0) -> np.ndarray:
    """Frames of a texture moving so that content at p in frame t came from p + (vx, vy) in
    frame t-1 (the camera pans right/down by (vx, vy) per frame)."""
    tex = smooth_texture(h + 16 + int(abs(vy) * n) + 8, w + 16 + int(abs(vx) * n) + 8, seed)
    out = []
    for t in range(n):
        x, y = 8 + vx * t + (abs(vx) * n if vx < 0 else 0), 8 + vy * t + (abs(vy) * n if vy < 0 else 0)
        ix, iy = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - ix, y - iy
        a = tex[iy : iy + h + 1, ix : ix + w + 1]
        top = a[:-1, :-1] * (1 - fx) + a[:-1, 1:] * fx
        bot = a[1:, :-1] * (1 - fx) + a[1:, 1:] * fx
        out.append(np.clip(top * (1 - fy) + bot * fy, 0, 255).astype(np.uint8))
    return np.stack(out)


def fit_batch(model, batch: dict, steps: int = 25, lr: float = 3e-3) -> list[float]:
    """AdamW on one batch of `model.training_loss` (trainable parameters only); the losses."""
    import torch

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = model.training_loss(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def runtime_vs_protocol(model, root, interval: int, with_next: bool = False, clip: str = "clip_0000",
                        images: bool = True):
    """Stream `clip` of the val split through the runtime (keyframes every `interval`) and
    evaluate the same frames on the DataModule's samples whose keyframe the runtime also used.
    Returns (runtime results, [(frame, distance, fraction of pixels that agree)])."""
    import torch

    from mvseg.data.datamodule import CompressedVideoDataModule
    from mvseg.runtime import run_stream
    from mvseg.strategies.policies import FixedInterval

    dm = CompressedVideoDataModule(str(root), "folder", keyframe_interval=interval, with_next=with_next)
    dm.setup("validate")
    results = list(run_stream(model, root / "videos" / "val" / f"{clip}.mp4", dm.ds.mean, dm.ds.std,
                              FixedInterval(interval), images=images))
    agreement = []
    for s in (dm.val_set[i] for i in range(len(dm.val_set))):
        if s["clip"] != clip or (s["frame"] - s["distance"]) % interval:
            continue  # the runtime's keyframes are the multiples of L
        with torch.no_grad():
            b = {k: (v[None] if isinstance(v, torch.Tensor) else torch.tensor([v])) for k, v in s.items() if k != "clip"}
            expect = model.predict_batch(b).argmax(1)[0].numpy()
        agreement.append((s["frame"], s["distance"], float((results[s["frame"]].label == expect).mean())))
    return results, agreement



class SigkillAt(Callback):
    """A Lightning callback that SIGKILLs its own process at a training batch (fault injection:
    no handler, no cleanup, as a scheduler's kill or the OOM killer); or sends another signal
    (`signum`: "SIGUSR1" is SLURM's warning before the time limit)."""

    def __init__(self, epoch: int, batch: int, signum: str = "SIGKILL"):
        self.epoch, self.batch, self.signum = epoch, batch, getattr(signal, signum)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), self.signum)


def wandb_records(path) -> list:
    """The protobuf records of an offline W&B run file (RUN/wandb/offline-run-*/run-ID.wandb).

    wandb 0.2x+ writes them from its Go core and ships no Python reader; the file is LevelDB's
    log format: a 7-byte file header (":W&B", magic, version), then 32 KiB blocks of chunks,
    each with a 7-byte header (CRC, little-endian length, type: full / first / middle / last)."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data = open(path, "rb").read()
    assert data[:4] == b":W&B", f"{path}: not a W&B run file"
    block, pos, out, parts = 32768, 7, [], []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # too little room left for a header: the block is padded
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4: pos + 7])
        if length == 0 and kind == 0:  # zero padding at the end of a block
            pos += block - pos % block
            continue
        parts.append(data[pos + 7: pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):  # full or last chunk: a record is complete
            rec = pb.Record()
            rec.ParseFromString(b"".join(parts))
            out.append(rec)
            parts = []
    return out
