"""`mvseg bench ...`: measurements reported as ratios taken side by side in one run.

Every bench prints a table and, with ``--json``, writes its figures for scripts. Nothing
here is asserted in tests: the figures go to the README.
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


# ----------------------------------------------------------------------------- kernels

# Paper sizes (issue 4): (name, op, shapes, window)
KERNEL_CASES = [
    ("warp C=256 1/8 of 1024x2048", "warp", {"feat": (1, 256, 128, 256), "off": (1, 2, 256, 512), "frame": (1024, 2048)}),
    ("warp C=256 1/4 of 720x960", "warp", {"feat": (1, 256, 180, 240), "off": (1, 2, 180, 240), "frame": (720, 960)}),
    ("local attention C=64 720x960 K=7", "local_attention", {"qkv": (1, 64, 720, 960), "window": 7}),
    ("local attention C=512 128x256 K=7", "local_attention", {"qkv": (1, 512, 128, 256), "window": 7}),
    ("sv_conv C=256 9x9 1/8 of 1024x2048", "sv_conv", {"feat": (1, 256, 128, 256), "window": 9}),
    # the last step of every method: logits up-sampled to the frame (ops.resize_bilinear)
    ("resize K=9 16x32 -> 128x256 (CPU configs)", "resize", {"x": (1, 9, 16, 32), "size": (128, 256)}),
    ("resize K=9 8x batch 16x24 -> 128x192 (training)", "resize", {"x": (8, 9, 16, 24), "size": (128, 192)}),
    ("resize K=19 64x128 -> 512x1024", "resize", {"x": (1, 19, 64, 128), "size": (512, 1024)}),
]


def _kernel_inputs(op: str, shapes: dict, device: str, grad: bool):
    import torch

    g = torch.Generator(device="cpu").manual_seed(0)

    def rnd(*s, scale=1.0):
        return (torch.randn(*s, generator=g) * scale).to(device).requires_grad_(grad)

    if op == "warp":
        h, w = shapes["frame"]
        return (rnd(*shapes["feat"]), rnd(*shapes["off"], scale=8.0), None, (h, w))
    if op == "local_attention":
        s = shapes["qkv"]
        return (rnd(*s), rnd(*s), rnd(*s), shapes["window"])
    if op == "resize":
        return (rnd(*shapes["x"]), shapes["size"])
    k = shapes["window"]
    f = shapes["feat"]
    return (rnd(*f), rnd(f[0], k * k, *f[2:]))


def _kernel_impls(op: str) -> dict:
    """name -> callable, for an op: the reference, the naive baseline, and Triton."""
    import torch
    import torch.nn.functional as F

    from mvseg.ops import (local_attention_blocked, local_attention_reference, local_attention_unfold, sv_conv_reference,
                           sv_conv_unfold)
    from mvseg.ops.resize import resize_bilinear_matmul
    from mvseg.ops.warp import warp_reference

    def warp_grid_sample(feat, off, mask, frame):  # dense flow + normalised grid + grid_sample
        b, _, hf, wf = feat.shape
        flow = F.interpolate(off, size=(hf, wf), mode="nearest") * torch.tensor([wf / frame[1], hf / frame[0]],
                                                                               device=off.device).view(1, 2, 1, 1)
        ys, xs = torch.meshgrid(torch.arange(hf, device=feat.device, dtype=feat.dtype),
                                torch.arange(wf, device=feat.device, dtype=feat.dtype), indexing="ij")
        grid = torch.stack(((xs + flow[:, 0]) / (wf - 1) * 2 - 1, (ys + flow[:, 1]) / (hf - 1) * 2 - 1), -1)
        return F.grid_sample(feat, grid, align_corners=True)

    impls = {
        "warp": {"reference": warp_reference, "grid_sample+grid": warp_grid_sample},
        # blocked: the CPU inference path of ops.local_attention (forward only, no backward)
        "local_attention": {"reference": local_attention_reference, "unfold": local_attention_unfold,
                            "blocked": local_attention_blocked},
        "sv_conv": {"reference": sv_conv_reference, "unfold": sv_conv_unfold},
        "resize": {"reference": lambda x, size: F.interpolate(x, size, mode="bilinear", align_corners=False),
                   "matmul": resize_bilinear_matmul},
    }[op]
    if op == "resize":  # no Triton kernel: on a GPU torch's interpolate is the fast path
        return impls
    try:
        import triton_kernels as tk

        impls["triton"] = {"warp": tk.warp, "local_attention": tk.local_attention, "sv_conv": tk.sv_conv}[op]
    except Exception:  # no triton on this platform
        pass
    return impls


FORWARD_ONLY = {"blocked"}  # inference paths: no backward to time


def _unfold_bytes(op: str, shapes: dict) -> int:
    if op == "local_attention":
        b, c, h, w = shapes["qkv"]
        return 2 * b * c * shapes["window"] ** 2 * h * w * 4  # unfolded k and v
    if op == "sv_conv":
        b, c, h, w = shapes["feat"]
        return b * c * shapes["window"] ** 2 * h * w * 4
    return 0


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak_rss() -> None:
    """Return freed heap to the OS and reset the kernel's peak-RSS mark (Linux >= 4.0)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _cpu_measure(conn, op: str, shapes: dict, impl: str, repeats: int) -> None:
    """In a child process: peak RSS above the inputs during one forward pass (the kernel's
    high-water mark, reset after the inputs exist), then forward and forward+backward times
    (median of `repeats`)."""
    import torch

    fn = _kernel_impls(op)[impl]
    args = _kernel_inputs(op, shapes, "cpu", grad=False)
    _reset_peak_rss()
    base = _rss_kb("VmRSS")
    with torch.no_grad():
        t0 = time.perf_counter()
        out = fn(*args)
        first = time.perf_counter() - t0
    peak = _rss_kb("VmHWM")
    del out
    fwd = [first]
    # sub-millisecond ops (resize) are timed over enough calls to last ~20 ms a measurement
    inner = 1 if first > 0.02 else max(1, min(1000, int(0.02 / max(first, 1e-6))))
    with torch.no_grad():
        for _ in range(repeats - 1 if inner == 1 else repeats):
            t0 = time.perf_counter()
            for _ in range(inner):
                fn(*args)
            fwd.append((time.perf_counter() - t0) / inner)
    if inner > 1:
        fwd = fwd[1:]  # the first call (caches, allocator) is not what a stream pays per frame
    bwd = None
    if impl not in FORWARD_ONLY:
        gargs = _kernel_inputs(op, shapes, "cpu", grad=True)
        t0 = time.perf_counter()
        fn(*gargs).sum().backward()
        bwd = 1e3 * (time.perf_counter() - t0)
    conn.send({"fwd_ms": 1e3 * float(np.median(fwd)), "fwd_bwd_ms": bwd, "peak_mb": (peak - base) / 1024})


def bench_kernels(repeats: int = 3, max_unfold_gb: float = 8.0, timeout: float = 1800) -> list[dict]:
    """Time and peak memory of each op at paper sizes. On CUDA: Triton vs the reference and
    the naive baseline with triton.testing.do_bench and torch.cuda.max_memory_allocated. On a
    CPU: the reference vs the naive baseline (each measured in its own process)."""
    import multiprocessing as mp

    import torch

    rows = []
    cuda = torch.cuda.is_available()
    for name, op, shapes in KERNEL_CASES:
        for impl in _kernel_impls(op):
            if (impl == "triton" and not cuda) or (impl in FORWARD_ONLY and cuda):
                continue  # Triton needs a GPU; the blocked form is a CPU path
            row = {"case": name, "impl": impl, "device": "cuda" if cuda else "cpu"}
            if impl == "unfold" and _unfold_bytes(op, shapes) > max_unfold_gb * 2**30:
                row["note"] = f"skipped: the unfold needs {_unfold_bytes(op, shapes) / 2**30:.1f} GB"
                rows.append(row)
                continue
            if cuda:
                from triton.testing import do_bench

                fn = _kernel_impls(op)[impl]
                args = _kernel_inputs(op, shapes, "cuda", grad=False)
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                with torch.no_grad():
                    fn(*args)
                torch.cuda.synchronize()
                row["peak_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
                with torch.no_grad():
                    row["fwd_ms"] = do_bench(lambda: fn(*args))
                gargs = _kernel_inputs(op, shapes, "cuda", grad=True)
                row["fwd_bwd_ms"] = do_bench(lambda: fn(*gargs).sum().backward())
            else:
                # a fresh process per case ("spawn": forking a process whose torch thread pools
                # are running can deadlock), so each peak-memory figure is the case's own
                ctx = mp.get_context("spawn")
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_cpu_measure, args=(child, op, shapes, impl, repeats))
                proc.start()
                row.update(parent.recv() if parent.poll(timeout) else {"note": f"timed out after {timeout} s"})
                proc.join(5)
                if proc.is_alive():
                    proc.kill()
            rows.append(row)
    # ratios against the reference, within one run
    ref = {r["case"]: r for r in rows if r["impl"] == "reference" and "fwd_ms" in r}
    for r in rows:
        base = ref.get(r["case"])
        if base and "fwd_ms" in r and r is not base:
            r["speedup_vs_reference"] = base["fwd_ms"] / r["fwd_ms"]
            r["memory_vs_reference"] = r["peak_mb"] / max(base["peak_mb"], 1e-3)
    return rows


def run_bench_kernels(json_out: str | None, repeats: int = 3) -> list[dict]:
    rows = bench_kernels(repeats=repeats)
    table = print_table(rows, ["case", "impl", "device", "fwd_ms", "fwd_bwd_ms", "peak_mb", "speedup_vs_reference",
                               "memory_vs_reference", "note"])
    write_json(json_out, {"bench": "kernels", "rows": rows, "table": table})
    return rows
