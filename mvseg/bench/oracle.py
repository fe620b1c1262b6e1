"""The oracle view of `mvseg bench strategies` (`--view oracle`): how much could choosing
keyframes by content gain on these videos at all?

Li et al. (CVPR 2018, Sec. 3.2) place a keyframe when the predicted deviation (the fraction
of pixels whose label changed since the keyframe) passes a threshold. Whether that beats a
fixed interval depends on the videos as much as on the predictor: where the content changes
at a steady rate, evenly spaced keyframes are already where a threshold would put them. This
view measures the headroom without any predictor. For every validation clip and every pair
k <= t, frame t is segmented with k as its keyframe (the strategy's own streaming step, so
any causal method works) and scored against t's label: a (T, T, K, K) table of confusion
matrices, from which any schedule's stream mIoU is a sum. Schedules:

- fixed: a keyframe every L frames (the same numbers as the latency view's fixed rows);
- oracle-threshold: Li et al.'s policy fed the *true* deviation (labels of the full network
  on frames k and t), i.e. a perfect deviation predictor;
- hindsight: per clip, the K keyframes (the first at frame 0) that minimise the clip's pixel
  errors, found by dynamic programming with the labels known: no causal policy does better
  at K keyframes a clip (in pixel accuracy; mIoU follows closely).

Cost: T(T+1)/2 streaming steps a clip (465 for 30 frames).
"""

from __future__ import annotations

import numpy as np
import torch

from mvseg.bench.latency import clip_labels, interpolate_fixed
from mvseg.data.folder import Clip, FolderDataset
from mvseg.data.folder import IMAGENET_MEAN, IMAGENET_STD
from mvseg.runtime import frame_tensor
from mvseg.video.decode import iter_frames, probe
from mvseg.video.motion import iter_fields


def miou_from_confusion(conf: np.ndarray) -> float:
    """Macro IoU of a (K, K) confusion [target, prediction], classes absent from both left
    out: torchmetrics' MulticlassJaccardIndex(average="macro") on the same pixels."""
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    ok = union > 0
    return float((tp[ok] / union[ok]).mean()) if ok.any() else 0.0


def propagation_table(model, ds: FolderDataset, clip: Clip, data: dict) -> tuple[np.ndarray, np.ndarray]:
    """For every keyframe k and frame t >= k of `clip`: the confusion matrix of t segmented
    from k, (T, T, K, K) int64 (zero below the diagonal), and the true deviation, the fraction
    of pixels whose full-network label differs between k and t, (T, T) (NaN below)."""
    if model.needs_next:
        raise ValueError(f"{type(model).__name__} looks ahead to the next keyframe; the oracle view needs a "
                         "causal strategy (its output at t may depend only on frames up to t)")
    info = probe(clip.video)
    mean, std = data.get("mean", IMAGENET_MEAN), data.get("std", IMAGENET_STD)
    frames = []
    decoded = iter_fields(clip.video) if model.reads_motion else \
        ((f, None, None) for f in iter_frames(clip.video, mvs=False))
    for f, off, mask in decoded:
        if off is not None:
            off, mask = torch.from_numpy(off)[None], torch.from_numpy(mask)[None]
        frames.append((frame_tensor(f.image, mean, std), off, mask))  # (1, 3, H, W), (1, 2, Hc, Wc), (1, Hc, Wc)
    n, k_cls = len(frames), ds.num_classes
    labels = clip_labels(ds, clip, (info.height, info.width))
    conf = np.zeros((n, n, k_cls, k_cls), np.int64)
    full: list[torch.Tensor] = []  # each frame's label from the full network (it as its own keyframe)
    model.eval()
    if hasattr(model, "low_latency"):
        model.low_latency = False  # blocking: frame k's own keyframe features, whatever the timing
    with torch.inference_mode():
        for k in range(n):
            model.stream_reset()
            for t in range(k, n):
                x, off, mask = frames[t]
                (_, logits), = model.stream_push(x, off, mask, t == k)
                pred = logits.max(1).indices[0]  # (H, W)
                if t == k:
                    full.append(pred)
                if t in labels:
                    gt = torch.from_numpy(labels[t])
                    ok = gt != ds.ignore_index
                    conf[k, t] = np.bincount((gt[ok] * k_cls + pred[ok]).numpy(),
                                             minlength=k_cls * k_cls).reshape(k_cls, k_cls)
    dev = np.full((n, n), np.nan)
    for k in range(n):
        for t in range(k, n):
            dev[k, t] = float((full[k] != full[t]).float().mean())
    return conf, dev


def fixed_keys(n: int, interval: int) -> list[int]:
    return list(range(0, n, interval))


def threshold_keys(dev: np.ndarray, tau: float) -> list[int]:
    """Li et al.'s policy on the true deviation: a keyframe when deviation from the last one > tau."""
    keys = [0]
    for t in range(1, dev.shape[0]):
        if dev[keys[-1], t] > tau:
            keys.append(t)
    return keys


def hindsight_keys(conf: np.ndarray, count: int) -> list[int]:
    """The `count` keyframes (frame 0 first) minimising the clip's pixel errors, by dynamic
    programming over where each keyframe's stretch ends (O(count T^2))."""
    n = conf.shape[0]
    count = max(1, min(count, n))
    errors = conf.sum((2, 3)) - np.trace(conf, axis1=2, axis2=3)  # (T, T) wrong pixels of t from k
    seg = np.zeros((n, n + 1))  # seg[k, e]: errors of frames k..e-1 with keyframe k
    for k in range(n):
        seg[k, k + 1:] = np.cumsum(errors[k, k:])
    best = np.full((count + 1, n + 1), np.inf)  # best[j, e]: j keyframes covering frames 0..e-1
    arg = np.zeros((count + 1, n + 1), np.int64)
    best[1, 1:] = seg[0, 1:]
    for j in range(2, count + 1):
        for e in range(j, n + 1):
            cand = best[j - 1, 1:e] + seg[1:e, e]  # the j-th keyframe at k = 1..e-1
            k = int(np.argmin(cand))
            best[j, e], arg[j, e] = cand[k], k + 1
    keys, e = [], n
    for j in range(count, 1, -1):
        e = int(arg[j, e])
        keys.append(e)
    return sorted(keys + [0])


def score(tables: list[tuple[np.ndarray, np.ndarray]], keys_of) -> tuple[float, float]:
    """Stream mIoU and keyframes per 100 frames of a schedule: keys_of(conf, dev) -> keyframes."""
    total, n_key, n = 0, 0, 0
    for conf, dev in tables:
        keys = sorted(set(keys_of(conf, dev)))
        last = {t: max(k for k in keys if k <= t) for t in range(conf.shape[0])}
        total = total + sum(conf[last[t], t] for t in range(conf.shape[0]))
        n_key, n = n_key + len(keys), n + conf.shape[0]
    return miou_from_confusion(total), 100.0 * n_key / n


def bench_oracle(models: dict[str, tuple], ds: FolderDataset, intervals: list[int], thresholds: list[float],
                 max_videos: int | None = None) -> list[dict]:
    """models: name -> (strategy, data dict). Rows of fixed, oracle-threshold and hindsight
    schedules per model, each non-fixed row with the fixed schedules' mIoU interpolated at its
    keyframe rate and the gain over it."""
    clips = ds.clips["val"][:max_videos]
    rows = []
    for name, (model, data) in models.items():
        tables = [propagation_table(model, ds, c, data) for c in clips]
        mine = []
        for interval in intervals:
            mine.append({"schedule": "fixed", "param": interval,
                         **dict(zip(("miou_stream", "keyframes_per_100"),
                                    score(tables, lambda c, d, L=interval: fixed_keys(c.shape[0], L))))})
        for tau in thresholds:
            mine.append({"schedule": "oracle-threshold", "param": tau,
                         **dict(zip(("miou_stream", "keyframes_per_100"),
                                    score(tables, lambda c, d, tau=tau: threshold_keys(d, tau))))})
        for count in sorted({len(fixed_keys(c.shape[0], L)) for L in intervals for c, _ in tables}):
            mine.append({"schedule": "hindsight", "param": count,
                         **dict(zip(("miou_stream", "keyframes_per_100"),
                                    score(tables, lambda c, d, m=count: hindsight_keys(c, m))))})
        mine = [{"method": name, **r} for r in mine]
        for r in mine:
            if r["schedule"] != "fixed":
                r["fixed_miou_same_keyframes"] = interpolate_fixed(mine, name, r["keyframes_per_100"])
                r["gain_vs_fixed"] = r["miou_stream"] - r["fixed_miou_same_keyframes"]
            print(f"{name} {r['schedule']} {r['param']:g}: mIoU {r['miou_stream']:.4f} at "
                  f"{r['keyframes_per_100']:.1f} keyframes/100", flush=True)
        rows += mine
    return rows


COLUMNS = ["method", "schedule", "param", "keyframes_per_100", "miou_stream", "fixed_miou_same_keyframes",
           "gain_vs_fixed"]
