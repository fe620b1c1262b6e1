"""Test helpers: synthetic inputs with known answers."""

from __future__ import annotations

import os
import signal
from fractions import Fraction

import av
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


def runtime_vs_protocol(
    model, root, interval: int, with_next: bool = False, clip: str = "clip_0000", images: bool = True
):
    """Stream `clip` of the val split through the runtime (keyframes every `interval`) and
    evaluate the same frames on the DataModule's samples whose keyframe the runtime also used.
    Returns (runtime results, [(frame, distance, fraction of pixels that agree)])."""
    import torch

    from mvseg.data.datamodule import CompressedVideoDataModule
    from mvseg.runtime import run_stream
    from mvseg.strategies.policies import FixedInterval

    dm = CompressedVideoDataModule(str(root), "folder", keyframe_interval=interval, with_next=with_next)
    dm.setup("validate")
    results = list(
        run_stream(
            model,
            root / "videos" / "val" / f"{clip}.mp4",
            dm.ds.mean,
            dm.ds.std,
            FixedInterval(interval),
            images=images,
        )
    )
    agreement = []
    for s in (dm.val_set[i] for i in range(len(dm.val_set))):
        if s["clip"] != clip or (s["frame"] - s["distance"]) % interval:
            continue  # the runtime's keyframes are the multiples of L
        with torch.no_grad():
            b = {
                k: (v[None] if isinstance(v, torch.Tensor) else torch.tensor([v])) for k, v in s.items() if k != "clip"
            }
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
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        if length == 0 and kind == 0:  # zero padding at the end of a block
            pos += block - pos % block
            continue
        parts.append(data[pos + 7 : pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):  # full or last chunk: a record is complete
            rec = pb.Record()
            rec.ParseFromString(b"".join(parts))
            out.append(rec)
            parts = []
    return out


# ------------------------------------------------ real-dataset fixtures in their on-disk layouts

CITYSCAPES_IDS = (0, 7, 8, 11, 21, 23, 24, 26, 33)  # unlabeled, road, sidewalk, building, vegetation, sky,
#                                                   person, car, bicycle (official label ids)


def id_blocks(h: int, w: int, ids: tuple[int, ...], seed: int) -> np.ndarray:
    """A label image of 8x8 blocks, each one of `ids`."""
    rng = np.random.default_rng(seed)
    return np.kron(rng.choice(ids, size=(h // 8, w // 8)), np.ones((8, 8), int)).astype(np.uint8)


def closest_frames(decoded: np.ndarray, sources: np.ndarray) -> list[int]:
    """For each decoded frame (T, H, W, 3), the index of the closest source frame (mean squared
    difference): how the dataset tests check that decoded frame n is source frame n."""
    d = ((decoded[:, None].astype(np.float32) - sources[None].astype(np.float32)) ** 2).mean(axis=(2, 3, 4))
    return d.argmin(1).tolist()


def make_cityscapes_root(root, h: int = 64, w: int = 128) -> dict:
    """Cityscapes' layout: leftImg8bit_sequence (30-frame snippets, the 20th annotated) and
    gtFine labelIds, for 2 train snippets (two cities) and 1 val snippet; frames are a
    texture panning 2 px per frame, so each decoded frame can be matched to its source."""
    from pathlib import Path

    from PIL import Image

    root = Path(root)
    snippets = {"train": [("aachen", 0, 19), ("bochum", 3, 294)], "val": [("frankfurt", 1, 500)]}
    frames_of = {}
    for split, items in snippets.items():
        for k, (city, seq, f) in enumerate(items):
            frames = translating_frames(30, h, w, 2.0, 1.0, seed=10 + k + (5 if split == "val" else 0))
            for i, img in enumerate(frames):
                p = root / "leftImg8bit_sequence" / split / city / f"{city}_{seq:06d}_{f - 19 + i:06d}_leftImg8bit.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(p)
            lp = root / "gtFine" / split / city / f"{city}_{seq:06d}_{f:06d}_gtFine_labelIds.png"
            lp.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(id_blocks(h, w, CITYSCAPES_IDS, seed=f)).save(lp)
            frames_of[f"{city}_{seq:06d}_{f:06d}"] = frames
    return frames_of


CAMVID_COLOURS = """128 128 128\tSky
64 128 64\tAnimal
128 64 128\tRoad
64 0 128\tCar
0 0 0\tVoid
0 128 192\tBicyclist
128 0 0\tBuilding
"""


def make_camvid_root(root, h: int = 72, w: int = 96) -> dict:
    """CamVid's layout: label_colors.txt, LabeledApproved_full/*_L.png (RGB), one sequence as
    a video (videos/0001TP.mp4, 40 frames, labels at 15 and 30), one as extracted frames
    (frames/Seq05VD/, labels named f00012 and f00024), split lists (one SegNet-style)."""
    from pathlib import Path

    from PIL import Image

    from mvseg.video.encode import encode_video

    root = Path(root)
    (root / "label_colors.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "label_colors.txt").write_text(CAMVID_COLOURS)
    colours = np.array([[int(x) for x in line.split()[:3]] for line in CAMVID_COLOURS.splitlines()], np.uint8)
    video = translating_frames(40, h, w, 2.0, 1.0, seed=21)
    encode_video(video, root / "videos" / "0001TP.mp4", gop=40, crf=10, fps=30.0)
    seq = translating_frames(30, h, w, -2.0, 1.0, seed=22)
    for i, img in enumerate(seq):
        p = root / "frames" / "Seq05VD" / f"Seq05VD_{i:06d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(p)
    names = ["0001TP_000015", "0001TP_000030", "Seq05VD_f00012", "Seq05VD_f00024"]
    for k, name in enumerate(names):
        lab = colours[id_blocks(h, w, tuple(range(len(colours))), seed=k)]
        p = root / "LabeledApproved_full" / f"{name}_L.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(lab).save(p)
    (root / "splits").mkdir(exist_ok=True)
    (root / "splits" / "train.txt").write_text(
        "0001TP_000015\n/SegNet/CamVid/train/Seq05VD_f00012.png /SegNet/CamVid/trainannot/Seq05VD_f00012.png\n"
    )
    (root / "splits" / "val.txt").write_text("0001TP_000030\n")
    (root / "splits" / "test.txt").write_text("Seq05VD_f00024\n")
    return {"0001TP": video, "Seq05VD": seq}


# container per encoder: what FFmpeg can mux it into
CONTAINERS = {
    "libx264": "mp4",
    "flv": "flv",
    "rv10": "rm",
    "rv20": "rm",
    "libvpx": "webm",
    "libvpx-vp9": "webm",
    "mpeg1video": "mpeg",
    "mpeg2video": "mpeg",
}
PIX = {"mjpeg": "yuvj420p"}


def encode_with(
    frames: np.ndarray, path, encoder: str, bframes: int = 0, fixed_q: int | None = None, options: dict | None = None
):
    """`frames` through FFmpeg's `encoder` (GOP 12), at 25 fps; `options`: the encoder's own."""
    c = av.open(str(path), "w", format=CONTAINERS.get(encoder, "avi"))
    s = c.add_stream(encoder, rate=Fraction(25))
    s.height, s.width = frames.shape[1:3]
    s.pix_fmt = PIX.get(encoder, "yuv420p")
    s.codec_context.gop_size = 12
    if bframes:
        s.codec_context.max_b_frames = bframes
    opts = dict(options or {})
    if fixed_q:  # every picture type at one quantiser: B-frames as sharp as P-frames
        opts.update(qmin=str(fixed_q), qmax=str(fixed_q))
    if opts:
        s.options = opts
    for img in frames:
        for p in s.encode(
            av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24").reformat(format=s.pix_fmt)
        ):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return path


def folder_data_args(root) -> list[str]:
    """The CLI options that point a config at a prepared mvseg folder dataset `root` (its decode
    cache beside it, no loader workers)."""
    return [
        *("--data.init_args.root", str(root), "--data.init_args.dataset", "folder"),
        *("--data.init_args.cache_dir", str(root / ".cache"), "--data.init_args.num_workers", "0"),
    ]


def one_step_trainer(root):
    """A CPU Lightning Trainer that trains one step, validates nothing and logs nothing, writing
    under `root`: what a test needs to make a checkpoint whose plumbing it tests."""
    import lightning as L

    return L.Trainer(
        accelerator="cpu",
        max_steps=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        limit_val_batches=0,
    )
