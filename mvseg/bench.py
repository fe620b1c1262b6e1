"""`mvseg bench ...`: measurements reported as ratios taken side by side in one run.

Every bench prints a table and, with ``--json``, writes its figures for scripts. Nothing
here is asserted in tests: the figures go to docs/results.md.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mvseg.video.decode import iter_frames, probe
from mvseg.video.motion import rasterize_mvs


def print_table(rows: list[dict], columns: list[str]) -> str:
    """A Markdown table of `rows` (also returned)."""
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    text = "\n".join(lines)
    print(text)
    return text


def write_json(path: str | Path | None, payload: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=1))


def _best_of(fn: Callable[[], int], repeats: int) -> tuple[float, int]:
    best, n = float("inf"), 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        best = min(best, time.perf_counter() - t0)
    return best, n


def bench_video(paths: list[str | Path], repeats: int = 7) -> list[dict]:
    """Frames/s of plain decoding (to RGB), decoding + MV export, and decoding + MV export +
    offset fields, on the same decoder settings (slice threading).

    The variants run interleaved `repeats` times on each video. Frames/s use the best time of
    each variant; the overheads are the median over repeats of the ratio of back-to-back runs,
    which is robust to load that changes during the benchmark.
    """
    rows = []
    for path in paths:
        info = probe(path)

        def plain() -> int:
            return sum(1 for _ in iter_frames(path, mvs=False))

        def export() -> int:
            return sum(1 for _ in iter_frames(path))

        def offsets() -> int:
            n = 0
            for f in iter_frames(path):
                rasterize_mvs(f.mvs, info.height, info.width)
                n += 1
            return n

        times: dict[str, list[float]] = {"plain": [], "export": [], "offsets": []}
        n = 0
        for _ in range(repeats):  # interleaved, so every variant sees the same machine state
            for name, fn in (("plain", plain), ("export", export), ("offsets", offsets)):
                t, n = _best_of(fn, 1)
                times[name].append(t)
        best = {k: min(v) for k, v in times.items()}
        ratio = {k: float(np.median(np.array(times[k]) / np.array(times["plain"]))) for k in ("export", "offsets")}
        rows.append({
            "video": Path(path).name,
            "size": f"{info.width}x{info.height}",
            "frames": n,
            "fps_decode": n / best["plain"],
            "fps_decode_mvs": n / best["export"],
            "fps_decode_mvs_offsets": n / best["offsets"],
            "overhead_mvs_pct": 100 * (ratio["export"] - 1),
            "overhead_total_pct": 100 * (ratio["offsets"] - 1),
        })
    return rows


def make_bench_video(out_dir: str | Path, height: int = 360, width: int = 640, frames: int = 60) -> Path:
    """A synthetic street clip at 640x360 (the issue's benchmark size), H.264 GOP 12."""
    from mvseg.data.synthetic import SyntheticConfig, render_clip
    from mvseg.video.encode import encode_video

    clip = render_clip(1234, SyntheticConfig(height=height, width=width, frames=frames))
    return encode_video(clip.frames, Path(out_dir) / f"synthetic_{width}x{height}.mp4", gop=12, fps=30)


def run_bench_video(paths: list[str], json_out: str | None, repeats: int = 7) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        if not paths:
            print("no video given: generating a 640x360 synthetic street clip (60 frames)")
            paths = [str(make_bench_video(tmp))]
        rows = bench_video(paths, repeats=repeats)
    table = print_table(rows, ["video", "size", "frames", "fps_decode", "fps_decode_mvs",
                               "fps_decode_mvs_offsets", "overhead_mvs_pct", "overhead_total_pct"])
    write_json(json_out, {"bench": "video", "rows": rows, "table": table})
    return rows


# ----------------------------------------------------------------------------- synthetic


def colour_vs_cnn(
    train_clips: int = 16, val_clips: int = 6, frames: int = 6, size: tuple[int, int] = (64, 128),
    steps: int = 300, batch: int = 16, seed: int = 0,
) -> dict:
    """How much of the synthetic dataset a per-pixel colour classifier (1x1 convolutions)
    can solve, against a small dilated CNN trained the same way (Adam, cross-entropy, same
    steps and batches). The dataset is meant to need shape, texture and context."""
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torchmetrics.classification import MulticlassJaccardIndex

    from mvseg.data.synthetic import CLASSES, IGNORE_INDEX, SyntheticConfig, render_clip

    cfg = SyntheticConfig(height=size[0], width=size[1], frames=frames)

    def stack(seeds):
        clips = [render_clip(s, cfg) for s in seeds]
        x = torch.from_numpy(np.concatenate([c.frames for c in clips])).permute(0, 3, 1, 2).float() / 255
        y = torch.from_numpy(np.concatenate([c.labels for c in clips])).long()
        return x, y

    xt, yt = stack(range(seed, seed + train_clips))
    xv, yv = stack(range(seed + 10_000, seed + 10_000 + val_clips))
    k = len(CLASSES)

    def block(i: int, o: int, stride: int = 1, dilation: int = 1) -> nn.Module:
        return nn.Sequential(nn.Conv2d(i, o, 3, stride, dilation, dilation), nn.BatchNorm2d(o), nn.ReLU())

    class SmallCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(block(3, 32, 2), block(32, 64, 2), block(64, 64, 1, 2),
                                          block(64, 64, 1, 4), block(64, 64, 1, 8))
            self.classifier = nn.Conv2d(64, k, 1)

        def forward(self, x):
            return F.interpolate(self.classifier(self.features(x)), size=x.shape[-2:], mode="bilinear")

    torch.manual_seed(seed)
    models = {
        "colour_1x1": nn.Sequential(nn.Conv2d(3, 32, 1), nn.ReLU(), nn.Conv2d(32, 32, 1), nn.ReLU(), nn.Conv2d(32, k, 1)),
        "cnn": SmallCNN(),
    }
    out = {}
    for name, model in models.items():
        opt = torch.optim.Adam(model.parameters(), 3e-3)
        g = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            i = torch.randint(0, len(xt), (batch,), generator=g)
            loss = F.cross_entropy(model(xt[i]), yt[i], ignore_index=IGNORE_INDEX)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            pred = model(xv).argmax(1)
        miou = MulticlassJaccardIndex(k, ignore_index=IGNORE_INDEX, average="macro")(pred, yv).item()
        out[name] = {"val_mIoU": miou, "final_train_loss": loss.item()}
    return out


def run_bench_synthetic(json_out: str | None, steps: int = 300) -> dict:
    res = colour_vs_cnn(steps=steps)
    rows = [{"model": k, **v} for k, v in res.items()]
    table = print_table(rows, ["model", "val_mIoU", "final_train_loss"])
    write_json(json_out, {"bench": "synthetic", "rows": rows, "table": table})
    return res
