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
- predicted-threshold: the same policy fed the strategy's own predicted deviation (methods
  with a deviation predictor): what streaming `keyframe_policy: adaptive` does, blocking; for a
  predictor trained on `deviation_target: gain`, the predicted gain of a keyframe;
- oracle-gain: the same policy fed the *true* gain of a keyframe at t (ours,
  mvseg.models.adaptive.keyframe_gain_target, from the table with t's label known): a perfect
  gain predictor;
- coverage: a keyframe when more than tau of the frame cannot be brought from the last
  keyframe by block motion (MotionCoverage, our policy; any strategy);
- scenecut+fixed: a keyframe where x264's scene-cut detection puts an I-frame (the clip's
  frames re-encoded with `scenecut=40`, its default, and no periodic I-frame) and every L
  frames after the last keyframe: the I-frame policy on a video encoded `keyint=L` with
  scene cuts on (our approximation: x264 decides cuts with its own GOP state, here without);
- hindsight: per clip, the K keyframes (the first at frame 0) that minimise the clip's pixel
  errors, found by dynamic programming with the labels known: no causal policy does better
  at K keyframes a clip (in pixel accuracy; mIoU follows closely).

Cost: T(T+1)/2 streaming steps a clip (465 for 30 frames).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mvseg.bench.latency import clip_labels, interpolate
from mvseg.data.folder import IMAGENET_MEAN, IMAGENET_STD, Clip, FolderDataset
from mvseg.ops.fields import extend_chain
from mvseg.runtime import frame_tensor, stream_frame
from mvseg.strategies.policies import KeyframePolicy
from mvseg.video.decode import iter_frames, probe
from mvseg.video.motion import FIELD_RULES, iter_fields


@dataclass
class ClipTable:
    """One clip's oracle table. conf (T, T, K, K) int64: the confusion matrix of frame t
    segmented from keyframe k (zero below the diagonal); dev (T, T): the true deviation, the
    fraction of pixels whose full-network label differs between k and t (NaN below); pdev
    (T, T): the strategy's predicted deviation of t from k (NaN below, and everywhere for a
    strategy without a predictor); scenecuts: the frames x264's scene-cut detection makes
    I-frames (frame 0 left out); uncovered (T, T): the fraction of t's MV cells whose motion
    chain back to k is broken (an intra block, an I-frame, a vector leaving the frame): the
    share of t that block motion cannot bring from k (NaN below); perr (T, T): the propagation
    error, the fraction of pixels where t segmented from k differs from t's full-network label
    (NaN below)."""

    conf: np.ndarray
    dev: np.ndarray
    pdev: np.ndarray
    scenecuts: list[int] = field(default_factory=list)
    uncovered: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    perr: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    def gain(self) -> np.ndarray:
        """(T, T) what a keyframe at t would gain over t propagated from k: the fraction of t's
        labelled pixels wrong from k minus the fraction wrong with t as its own keyframe (the
        training target of `deviation_target: gain`, not floored; NaN below the diagonal and
        where t has no label)."""
        total = self.conf.sum((2, 3)).astype(np.float64)
        err = np.where(total > 0, (total - np.trace(self.conf, axis1=2, axis2=3)) / np.maximum(total, 1), np.nan)
        out = err - np.diag(err)[None, :]
        out[np.tril_indices(len(out), -1)] = np.nan
        return out


def x264_scenecuts(images: list[np.ndarray], threshold: int = 40) -> list[int]:
    """The frames (after the first) where libx264's scene-cut detection puts an I-frame when
    `images` ((H, W, 3) uint8) are encoded with `scenecut=threshold`, no periodic I-frame and no
    B-frames (one thread: the decisions do not depend on thread timing)."""
    import tempfile

    from mvseg.video.encode import encode_video

    with tempfile.TemporaryDirectory() as tmp:
        path = encode_video(images, Path(tmp) / "scenecut.mp4", gop=len(images) + 1, scenecut=threshold, threads=1)
        types = [f.pict_type for f in iter_frames(path, mvs=False, rgb=False)]
    return [t for t, kind in enumerate(types) if t > 0 and kind == "I"]


def miou_from_confusion(conf: np.ndarray) -> float:
    """Macro IoU of a (K, K) confusion [target, prediction], classes absent from both left
    out: torchmetrics' MulticlassJaccardIndex(average="macro") on the same pixels."""
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    ok = union > 0
    return float((tp[ok] / union[ok]).mean()) if ok.any() else 0.0


class _KeyAt(KeyframePolicy):
    """The oracle's schedule: frame k is the keyframe, the frames after it are propagated; reads
    the predicted deviation when the strategy has a predictor (recorded for the table)."""

    def __init__(self, k: int, needs_deviation: bool):
        self.k, self.needs_deviation = k, needs_deviation

    def is_key(self, index: int, pict_type: str, deviation: float | None = None) -> bool:
        return index == self.k


def propagation_table(model, ds: FolderDataset, clip: Clip, data: dict, scenecut: int = 40) -> ClipTable:
    """For every keyframe k and frame t >= k of `clip`: t segmented from k with the strategy's
    streaming step, scored against t's label (see ClipTable); scenecut: x264's threshold for
    the scene-cut schedule (0: none)."""
    if model.needs_next:
        raise ValueError(
            f"{type(model).__name__} looks ahead to the next keyframe; the oracle view needs a "
            "causal strategy (its output at t may depend only on frames up to t)"
        )
    info = probe(clip.video)
    mean, std = data.get("mean", IMAGENET_MEAN), data.get("std", IMAGENET_STD)
    frames, images, types = [], [], []
    for f, off, mask in iter_fields(clip.video):  # motion for the coverage table whether the strategy reads it or not
        if off is not None:
            off, mask = torch.from_numpy(off)[None], torch.from_numpy(mask)[None]
        frames.append((frame_tensor(f.image, mean, std), off, mask))  # (1, 3, H, W), (1, 2, Hc, Wc), (1, Hc, Wc)
        images.append(f.image)
        types.append(f.pict_type)
    n, k_cls = len(frames), ds.num_classes
    labels = clip_labels(ds, clip, (info.height, info.width))
    conf = np.zeros((n, n, k_cls, k_cls), np.int64)
    pdev, perr = np.full((n, n), np.nan), np.full((n, n), np.nan)
    full: dict[int, torch.Tensor] = {}  # each frame's label from the full network (it as its own keyframe)
    model.eval()
    if model.has_fast_track:
        model.low_latency = False  # blocking: frame k's own keyframe features, whatever the timing
    with torch.inference_mode():
        for k in reversed(range(n)):  # last first: frame t's own full-network label is known when k < t
            model.stream_reset()
            policy = _KeyAt(k, needs_deviation=model.has_deviation)
            for t in range(k, n):
                x, off, mask = frames[t]
                # as the runtime drives a stream (the deviation read before the frame's step)
                out, deviation = stream_frame(model, policy, x, off, mask, t, types[t])
                ((_, logits),) = out.ready
                if t > k and model.has_deviation:
                    pdev[k, t] = deviation
                pred = logits.max(1).indices[0]  # (H, W)
                if t == k:
                    full[t] = pred
                perr[k, t] = float((pred != full[t]).float().mean())
                if t in labels:
                    gt = torch.from_numpy(labels[t])
                    ok = gt != ds.ignore_index
                    conf[k, t] = np.bincount((gt[ok] * k_cls + pred[ok]).numpy(), minlength=k_cls * k_cls).reshape(
                        k_cls, k_cls
                    )
    dev = np.full((n, n), np.nan)
    for k in range(n):
        for t in range(k, n):
            dev[k, t] = float((full[k] != full[t]).float().mean())
    uncovered = np.full((n, n), np.nan)
    for k in range(n):
        chain, uncovered[k, k] = None, 0.0
        for t in range(k + 1, n):
            chain = extend_chain(chain, frames[t][1], frames[t][2])
            uncovered[k, t] = 1.0 - float(chain[1].float().mean())
    return ClipTable(conf, dev, pdev, x264_scenecuts(images, scenecut) if scenecut else [], uncovered, perr)


def fixed_keys(n: int, interval: int) -> list[int]:
    return list(range(0, n, interval))


def threshold_keys(dev: np.ndarray, tau: float) -> list[int]:
    """Li et al.'s policy on the true deviation: a keyframe when deviation from the last one > tau
    (a NaN, a frame without a label for a true signal, never passes)."""
    keys = [0]
    for t in range(1, dev.shape[0]):
        if dev[keys[-1], t] > tau:
            keys.append(t)
    return keys


def scenecut_keys(n: int, cuts: list[int], interval: int) -> list[int]:
    """A keyframe at every scene cut and `interval` frames after the last keyframe."""
    keys, cuts = [0], set(cuts)
    for t in range(1, n):
        if t in cuts or t - keys[-1] >= interval:
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
        seg[k, k + 1 :] = np.cumsum(errors[k, k:])
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


def score(tables: list[ClipTable], keys_of) -> tuple[float, float]:
    """Stream mIoU and keyframes per 100 frames of a schedule: keys_of(ClipTable) -> keyframes."""
    total, n_key, n = 0, 0, 0
    for tab in tables:
        conf = tab.conf
        keys = sorted(set(keys_of(tab)))
        last = {t: max(k for k in keys if k <= t) for t in range(conf.shape[0])}
        total = total + sum(conf[last[t], t] for t in range(conf.shape[0]))
        n_key, n = n_key + len(keys), n + conf.shape[0]
    return miou_from_confusion(total), 100.0 * n_key / n


def save_tables(path: Path, tables: list[ClipTable], source: str = "") -> None:
    """One model's clip tables in one .npz (reloaded by load_tables to score other schedules);
    source: what they were computed from (checked on reuse)."""
    arrays = {"source": np.asarray(source)}
    for i, tab in enumerate(tables):
        arrays.update(
            {
                f"{i}_conf": tab.conf.astype(np.int32),
                f"{i}_dev": tab.dev,
                f"{i}_pdev": tab.pdev,
                f"{i}_scenecuts": np.asarray(tab.scenecuts, np.int64),
                f"{i}_uncovered": tab.uncovered,
                f"{i}_perr": tab.perr,
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def load_tables(path: Path, source: str | None = None) -> list[ClipTable] | None:
    """The tables save_tables wrote; None when `source` is given and differs from theirs."""
    with np.load(path) as z:
        if source is not None and str(z["source"]) != source:
            return None
        n = len({k.split("_")[0] for k in z.files if k != "source"})  # "{clip}_{array}"
        return [
            ClipTable(
                z[f"{i}_conf"].astype(np.int64),
                z[f"{i}_dev"],
                z[f"{i}_pdev"],
                z[f"{i}_scenecuts"].tolist(),
                z[f"{i}_uncovered"],
                z[f"{i}_perr"],
            )
            for i in range(n)
        ]


def schedules(
    tables: list[ClipTable],
    intervals: list[int],
    thresholds: list[float],
    coverage: list[float] = (),
    gain: list[float] = (),
) -> list[tuple]:
    """(schedule, param, keys_of) of every schedule the view scores; coverage: the thresholds of
    the motion-coverage policy (mvseg.strategies.policies.MotionCoverage); gain: those of the
    true-gain policy (oracle-gain)."""
    out = [("fixed", L, lambda tab, L=L: fixed_keys(tab.conf.shape[0], L)) for L in intervals]
    out += [("coverage", tau, lambda tab, tau=tau: threshold_keys(tab.uncovered, tau)) for tau in coverage]
    out += [("oracle-threshold", tau, lambda tab, tau=tau: threshold_keys(tab.dev, tau)) for tau in thresholds]
    out += [("oracle-gain", tau, lambda tab, tau=tau: threshold_keys(tab.gain(), tau)) for tau in gain]
    if all(np.isfinite(tab.pdev[np.triu_indices(len(tab.pdev), 1)]).all() for tab in tables):
        out += [("predicted-threshold", tau, lambda tab, tau=tau: threshold_keys(tab.pdev, tau)) for tau in thresholds]
    if any(tab.scenecuts for tab in tables):
        out += [
            ("scenecut+fixed", L, lambda tab, L=L: scenecut_keys(tab.conf.shape[0], tab.scenecuts, L))
            for L in intervals
        ]
    counts = sorted({len(fixed_keys(tab.conf.shape[0], L)) for L in intervals for tab in tables})
    out += [("hindsight", m, lambda tab, m=m: hindsight_keys(tab.conf, m)) for m in counts]
    return out


def score_schedules(
    name: str,
    tables: list[ClipTable],
    intervals: list[int],
    thresholds: list[float],
    coverage: list[float] = (),
    gain: list[float] = (),
) -> list[dict]:
    """Rows of every schedule for one model's tables; each non-fixed row with the fixed
    schedules' mIoU interpolated at its keyframe rate and the gain over it, and each causal one
    with its share of the hindsight headroom (the hindsight gain interpolated at its rate)."""
    rows = []
    for schedule, param, keys_of in schedules(tables, intervals, thresholds, coverage, gain):
        miou, rate = score(tables, keys_of)
        rows.append(
            {"method": name, "schedule": schedule, "param": param, "miou_stream": miou, "keyframes_per_100": rate}
        )
    for r in rows:
        if r["schedule"] != "fixed":
            r["fixed_miou_same_keyframes"] = interpolate(rows, name, r["keyframes_per_100"])
            r["gain_vs_fixed"] = r["miou_stream"] - r["fixed_miou_same_keyframes"]
    for r in rows:
        if r["schedule"] not in ("fixed", "hindsight"):
            headroom = interpolate(rows, name, r["keyframes_per_100"], "hindsight", "gain_vs_fixed")
            r["hindsight_gain_same_keyframes"] = headroom
            r["share_of_headroom"] = r["gain_vs_fixed"] / headroom if headroom > 0 else float("nan")
    for r in rows:
        print(
            f"{name} {r['schedule']} {r['param']:g}: mIoU {r['miou_stream']:.4f} at "
            f"{r['keyframes_per_100']:.1f} keyframes/100",
            flush=True,
        )
    return rows


def bench_oracle(
    models: dict[str, tuple],
    ds: FolderDataset,
    intervals: list[int],
    thresholds: list[float],
    max_videos: int | None = None,
    tables_dir: Path | None = None,
    sources: dict[str, str] | None = None,
    coverage: list[float] = (),
    gain: list[float] = (),
) -> list[dict]:
    """models: name -> (strategy, data dict). The rows of score_schedules per model.
    tables_dir: each model's tables are kept there (NAME.npz) and reused by a later run whose
    sources[name] (what identifies the checkpoint and the clips) is the same."""
    clips = ds.clips["val"][:max_videos]
    rows = []
    for name, (model, data) in models.items():
        source = "|".join(
            [
                (sources or {}).get(name, ""),
                str(ds.root.resolve()),
                json.dumps(FIELD_RULES, sort_keys=True),
                *(c.name for c in clips),
            ]
        )
        path = Path(tables_dir) / f"{name}.npz" if tables_dir is not None else None
        tables = load_tables(path, source) if path is not None and path.is_file() else None
        if tables is None:
            tables = [propagation_table(model, ds, c, data) for c in clips]
            if path is not None:
                save_tables(path, tables, source)
        else:
            print(f"{name}: oracle tables reused from {path}", flush=True)
        rows += score_schedules(name, tables, intervals, thresholds, coverage, gain)
    return rows


COLUMNS = [
    "method",
    "schedule",
    "param",
    "keyframes_per_100",
    "miou_stream",
    "fixed_miou_same_keyframes",
    "gain_vs_fixed",
    "hindsight_gain_same_keyframes",
    "share_of_headroom",
]
