"""`mvseg bench data`: can the DataModule feed the model? Samples per second of the training
loader with 0, 1 and 2 workers, the cost of one sample split into its parts, and the ratio to
the per-frame model's training step at the same resolution (measured side by side, one run).

A sample's parts (the real code path, timed by wrapping the functions it calls):
- frames: two frames read from the memory-mapped decode cache and normalised;
- offsets: the MV offset chain from the current frame to its keyframe, composed;
- label: the label PNG read and checked;
- augmentation: random scale, crop and flip of frames, offsets and label together.
The cache is built once per video (decode + MV export + rasterisation), reported apart.
Workers map the same cache files (np.load mmap_mode="r"): the frames are shared through the
page cache, not copied into each worker.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import torch

from mvseg.bench.common import print_table, write_json

PARTS = {
    "frames": "KeyframeSamples._image",
    "offsets": "chain_offsets",
    "label": "read_label",
    "augmentation": "augment_sample",
}


def _timed_parts(ds, n: int) -> tuple[dict[str, float], float]:
    """Mean ms per sample of each part and of the whole __getitem__, over `n` samples (in
    this process, the functions wrapped with timers for the duration)."""
    from mvseg.data import samples

    spent: dict[str, float] = defaultdict(float)
    originals = {}

    def wrap(owner, name, key):
        fn = getattr(owner, name)
        originals[(owner, name)] = fn

        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[key] += time.perf_counter() - t

        setattr(owner, name, timed)

    wrap(samples.KeyframeSamples, "_image", "frames")
    wrap(samples, "chain_offsets", "offsets")
    wrap(samples, "read_label", "label")
    wrap(samples, "augment_sample", "augmentation")
    gen = torch.Generator().manual_seed(0)
    try:
        t0 = time.perf_counter()
        for i in range(n):
            ds[(i % len(ds), int(torch.randint(2**62, (1,), generator=gen)))]
        total = time.perf_counter() - t0
    finally:
        for (owner, name), fn in originals.items():
            setattr(owner, name, fn)
    return {k: 1000 * spent[k] / n for k in PARTS}, 1000 * total / n


def _loader_rate(dm, workers: int, epochs: int) -> float:
    """Samples per second of the training loader over `epochs` epochs, after a warm-up epoch
    (worker start-up is not the steady state; persistent workers stay)."""
    dm.num_workers = workers
    dl = dm.train_dataloader()
    for _ in dl:
        pass
    n, t0 = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in dl:
            n += len(batch["label"])
    return n / (time.perf_counter() - t0)


def _train_step_ms(batch: int, crop: tuple[int, int], repeats: int = 5) -> float:
    """One training step (forward, backward, SGD) of experiments/per_frame.yaml's network on a
    batch at the training crop, ms (fastest of `repeats`)."""
    import torch.nn.functional as F

    from mvseg.models.segnet import SegNet, SegNetConfig

    net = SegNet(SegNetConfig(), num_classes=9).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, *crop)
    y = torch.randint(0, 9, (batch, *crop))
    best = float("inf")
    for i in range(repeats + 1):
        t = time.perf_counter()
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:  # the first is warm-up
            best = min(best, time.perf_counter() - t)
    return 1000 * best


def run_bench_data(
    root: str,
    workers: tuple[int, ...],
    samples: int,
    epochs: int,
    batch_size: int = 8,
    crop: tuple[int, int] = (128, 192),
    json_out: str | None = None,
) -> dict:
    from mvseg.data.cache import VideoCache
    from mvseg.data.datamodule import CompressedVideoDataModule

    dm = CompressedVideoDataModule(
        root=root,
        dataset="folder",
        keyframe_interval=5,
        batch_size=batch_size,
        crop_size=crop,
        scale_range=(0.75, 1.25),
        hflip=True,
        num_workers=0,
    )
    dm.prepare_data()
    dm.setup("fit")
    ds = dm.train_set
    video = ds.clips[0].video
    t = time.perf_counter()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        VideoCache(tmp).load(video)  # decode + MV export + offsets, once per video
    build_ms = 1000 * (time.perf_counter() - t)
    h, w = ds.video(0).frames.shape[1:3]
    parts, sample_ms = _timed_parts(ds, samples)
    rates = {wk: _loader_rate(dm, wk, epochs) for wk in workers}
    step_ms = _train_step_ms(batch_size, crop)
    per_sample_step_ms = step_ms / batch_size
    rows = [
        {
            "workers": wk,
            "samples_per_s": round(r, 1),
            "ms_per_sample": round(1000 / r, 2),
            "train_step_ms_per_sample": round(per_sample_step_ms, 2),
            "loader_vs_step": round((1000 / r) / per_sample_step_ms, 3),
        }
        for wk, r in rates.items()
    ]
    table = print_table(
        rows, ["workers", "samples_per_s", "ms_per_sample", "train_step_ms_per_sample", "loader_vs_step"]
    )
    split = {k: round(v, 3) for k, v in parts.items()}
    print(
        f"one sample, in-process: {sample_ms:.2f} ms = "
        + " + ".join(f"{k} {v:.2f}" for k, v in split.items())
        + f" + other {sample_ms - sum(parts.values()):.2f} (ms)"
    )
    print(f"cache build (decode + MVs + offsets), once per {len(ds.video(0))}-frame {w}x{h} video: {build_ms:.0f} ms")
    print(
        f"per-frame training step: {step_ms:.1f} ms per batch of {batch_size} at {crop[1]}x{crop[0]} "
        f"({per_sample_step_ms:.2f} ms per sample)"
    )
    out = {
        "bench": "data",
        "root": str(Path(root)),
        "batch_size": batch_size,
        "crop": list(crop),
        "frame_size": [h, w],
        "sample_ms": round(sample_ms, 3),
        "parts_ms": split,
        "other_ms": round(sample_ms - sum(parts.values()), 3),
        "cache_build_ms_per_video": round(build_ms, 1),
        "train_step_ms": round(step_ms, 2),
        "rows": rows,
        "table": table,
    }
    write_json(json_out, out)
    return out
