"""Real datasets as compressed video: annotated snippets -> H.264 clips in mvseg's folder layout.

A dataset module (mvseg.data.cityscapes, mvseg.data.camvid) finds its annotated frames and
the frames around them (a `Window`); `write_dataset` encodes them with one of two protocols:

- ``gop`` (GOP-aligned): the whole window is one clip, encoded with an I-frame every L
  frames (keyframe = I-frame); the labelled frame keeps its place in the window.
- ``per-distance`` (AR-Seg's protocol): for every distance d in 0..L-1 a separate clip that
  starts d frames before the labelled frame, so the labelled frame sits at GOP position d
  behind a real I-frame; the clip is evaluated at that distance only (``distances`` in
  dataset.json). AR-Seg re-encoded with HEVC through a patched decoder; we use H.264
  (FFmpeg exports no HEVC MVs), a deviation docs/datasets.md states.

Networks see decoded frames; decoded frame n of a clip is window frame n (tested). Output:
``ROOT/videos/{split}/{clip}.mp4``, ``ROOT/labels/{split}/{clip}/{frame:06d}.png``,
``ROOT/dataset.json`` (written last). Resumable: a clip whose video and label exist is kept
(both are written whole or not at all), so a killed prepare continues where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from mvseg.data.folder import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetError,
    clip_written,
    label_path,
    write_clip,
    write_dataset_json,
)

PROTOCOLS = ("gop", "per-distance")


@dataclass
class Window:
    """One annotated frame and the source frames around it.

    frames() -> (T, H, W, 3) uint8 RGB at source size; label() -> (H, W) uint8 class ids
    (255 = ignore) at source size. Both are called only for clips that still have to be
    written (resuming skips the rest). `source` names the label file in errors."""

    split: str
    name: str
    length: int
    label_index: int
    frames: Callable[[], np.ndarray]
    label: Callable[[], np.ndarray]
    source: str
    first_frame: int = 0  # source frame number of window frame 0 (recorded per clip in dataset.json)
    extra: dict = field(default_factory=dict)  # also recorded (e.g. the source sequence)


@dataclass
class PrepareConfig:
    protocol: str = "gop"
    interval: int = 12  # L: the GOP of the gop protocol; distances 0..L-1 of the per-distance one
    size: tuple[int, int] | None = None  # (H, W) of the output; None: the source size
    crf: float = 18.0
    fps: float = 30.0

    def check(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.interval < 1:
            raise ValueError(f"interval must be >= 1, got {self.interval}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 16 or any(s % 2 for s in self.size)):
            raise ValueError(f"size must be even H, W of at least 16, got {self.size}")


def resize_frames(frames: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, h, w, 3): PIL's bilinear filter with antialiasing (an
    area-like filter when shrinking, as the papers' down-sampled inputs)."""
    from PIL import Image

    if size is None or tuple(frames.shape[1:3]) == tuple(size):
        return frames
    h, w = size
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR)) for f in frames])


def resize_label(label: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Nearest neighbour (class ids are not averaged)."""
    from PIL import Image

    if size is None or tuple(label.shape) == tuple(size):
        return label
    h, w = size
    return np.asarray(Image.fromarray(label).resize((w, h), Image.NEAREST))


def _clips_of(win: Window, cfg: PrepareConfig) -> list[tuple[str, int, int, int, list[int] | None]]:
    """(clip name, first window frame, end, annotated index in the clip, distances) per clip."""
    if cfg.protocol == "gop":
        return [(win.name, 0, win.length, win.label_index, None)]
    t = win.label_index
    if t < cfg.interval - 1:  # e.g. CamVid's Seq05VD_f00000, the first frame of its video
        import warnings

        warnings.warn(f"{win.source}: only {t} frames before it: per-distance clips for d <= {t} only", stacklevel=2)
    return [(f"{win.name}_d{d:02d}", t - d, t + 1, d, [d]) for d in range(min(cfg.interval, t + 1))]


def _clip_specs(win: Window, cfg: PrepareConfig) -> list[tuple[str, str, dict]]:
    """(split, clip, its dataset.json entry) of each clip a window makes."""
    out = []
    for name, a, b, t, dist in _clips_of(win, cfg):
        # source frame numbers of the clip's first and last frame: decoded frame n is source
        # frame source_frames[0] + n
        spec = {
            "frames": b - a,
            "annotated": [t],
            "source_frames": [win.first_frame + a, win.first_frame + b - 1],
            **win.extra,
        }
        if dist is not None:
            spec["distances"] = dist
        out.append((win.split, name, spec))
    return out


def _write_window(win: Window, out: Path, cfg: PrepareConfig) -> tuple[int, int, list[int] | None]:
    """Encode the clips of one window that are not on disk yet: (written, kept, frame size)."""
    clips = _clips_of(win, cfg)
    todo = [c for c in clips if not clip_written(out, win.split, c[0], [c[3]])]
    if not todo:
        return 0, len(clips), None
    frames = win.frames()
    label = win.label()
    if frames.ndim != 4 or frames.shape[0] != win.length or frames.shape[-1] != 3:
        raise DatasetError(f"{win.source}: expected {win.length} RGB frames around it, got {frames.shape}")
    if label.shape != frames.shape[1:3]:
        raise DatasetError(
            f"{win.source}: label is {label.shape[1]}x{label.shape[0]} but its frames are "
            f"{frames.shape[2]}x{frames.shape[1]}"
        )
    frames, label = resize_frames(frames, cfg.size), resize_label(label, cfg.size)
    for name, a, b, t, _ in todo:
        write_clip(out, win.split, name, frames[a:b], {t: label}, gop=cfg.interval, fps=cfg.fps, crf=cfg.crf)
    return len(todo), len(clips) - len(todo), list(frames.shape[1:3])


def in_workers(job: Callable, items: Iterable, workers: int) -> Iterator:
    """job(item) for each item in `workers` spawned processes, results in order, at most
    2 x workers items in flight (CamVid windows carry their frames). A worker that dies (killed,
    out of memory) raises BrokenProcessPool here instead of hanging, as multiprocessing.Pool would."""
    import signal
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    # "spawn": forking a process whose torch/OpenMP thread pools run can deadlock the children.
    # Workers ignore Ctrl-C: the parent stops (one line) and its pool lets the items in flight end
    # whole, instead of each worker printing a KeyboardInterrupt traceback.
    with ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN)
    ) as pool:
        pending: deque = deque()
        try:
            for item in items:
                pending.append(pool.submit(job, item))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()


def write_dataset(
    windows: Iterable[Window],
    out: str | Path,
    cfg: PrepareConfig,
    info: dict,
    total: int | None = None,
    progress: bool = True,
    desc: str = "clips",
    workers: int = 1,
) -> dict:
    """Encode every window as clips of `cfg.protocol` under `out`; returns dataset.json's content.

    info: "name", "classes", "palette", "ignore_index" (and anything else to record).
    workers > 1: windows are encoded in that many processes (their frames and labels are loaded
    there; x264 uses several threads of its own too)."""
    from tqdm import tqdm

    cfg.check()
    out = Path(out)
    meta_path = out / "dataset.json"
    settings = {
        "protocol": cfg.protocol,
        "interval": cfg.interval,
        "size": list(cfg.size) if cfg.size else None,
        "crf": cfg.crf,
        **{k: v for k, v in info.items() if k.startswith("prepare_")},
    }
    if meta_path.is_file():
        old = json.loads(meta_path.read_text()).get("prepared")
        if old != settings:
            raise DatasetError(
                f"{meta_path}: this folder holds a dataset prepared with other settings "
                f"({old}); choose another --out or delete it"
            )
    marker = out / ".prepare.json"  # the settings of an unfinished prepare, checked on resume
    out.mkdir(parents=True, exist_ok=True)
    if marker.is_file() and json.loads(marker.read_text()) != settings:
        raise DatasetError(
            f"{out}: an unfinished prepare with other settings is here "
            f"({json.loads(marker.read_text())}); choose another --out or delete it"
        )
    marker.write_text(json.dumps(settings))
    splits: dict[str, dict] = {}
    size = None
    written = kept = 0
    specs = []

    def windows_seen():  # the parent records each window's clips (no frames needed for that)
        for win in windows:
            specs.append(_clip_specs(win, cfg))
            yield win

    job = partial(_write_window, out=out, cfg=cfg)
    results = in_workers(job, windows_seen(), workers) if workers > 1 else map(job, windows_seen())
    try:
        for n_written, n_kept, got in tqdm(results, total=total, desc=desc, disable=not progress, unit="snippet"):
            written, kept, size = written + n_written, kept + n_kept, size or got
    except BrokenProcessPool:
        raise OSError(
            f"{out}: a worker process died while encoding (killed, or out of memory); the clips "
            "written are kept: run the same command again to resume (--workers 1 uses less memory)"
        ) from None
    for split, name, spec in (x for clips in specs for x in clips):
        splits.setdefault(split, {})[name] = spec
    if not splits:
        raise DatasetError(f"{out}: no annotated frames found to prepare")
    if size is None:  # everything was kept: read the size back from one label
        from PIL import Image

        split, clips = next(iter(splits.items()))
        name, spec = next(iter(clips.items()))
        size = list(np.asarray(Image.open(label_path(out, split, name, spec["annotated"][0]))).shape)
    meta = {
        "name": info["name"],
        "classes": list(info["classes"]),
        "palette": info.get("palette"),
        "ignore_index": int(info.get("ignore_index", 255)),
        "size": size,
        "fps": cfg.fps,
        "mean": list(info.get("mean", IMAGENET_MEAN)),
        "std": list(info.get("std", IMAGENET_STD)),
        "splits": splits,
        "prepared": settings,
    }
    meta = write_dataset_json(out, meta)
    marker.unlink(missing_ok=True)
    meta["_counts"] = {"written": written, "kept": kept}
    return meta


def read_rgb(path: Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB; errors name the file."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: unreadable image ({e})") from None


def read_frames(paths: tuple[Path, ...]) -> np.ndarray:
    """Image files as (T, H, W, 3) uint8 RGB."""
    return np.stack([read_rgb(p) for p in paths])


def read_ids(path: Path) -> np.ndarray:
    """A single-channel id image as (H, W) uint8; errors name the file."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            a = np.asarray(im)
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: unreadable label image ({e})") from None
    if a.ndim != 2:
        raise DatasetError(f"{path}: expected a single-channel id image, got shape {a.shape}")
    return a


def parse_size(text: str | None) -> tuple[int, int] | None:
    if text in (None, "", "source"):
        return None
    h, sep, w = text.partition("x")
    if not (sep and h.isdigit() and w.isdigit()):
        raise ValueError(f"--size expects HxW (e.g. 512x1024) or 'source', got {text!r}")
    return int(h), int(w)
