"""The oracle view of `mvseg bench strategies`: schedules scored from the (keyframe, frame)
confusion table agree with streaming them, the hindsight schedule is optimal, and the
oracle threshold behaves as Li et al.'s policy."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from mvseg.bench.oracle import (
    ClipTable,
    fixed_keys,
    hindsight_keys,
    miou_from_confusion,
    score_schedules,
    threshold_keys,
)
from mvseg.cli import main
from mvseg.video.decode import iter_frames


def _trained(model, tiny_dataset, tmp_path_factory, name: str):
    """`model` trained 3 steps on the tiny dataset (L = 3), saved as a checkpoint."""
    import lightning as L

    from mvseg.data.datamodule import CompressedVideoDataModule

    dm = CompressedVideoDataModule(str(tiny_dataset), "folder", keyframe_interval=3, batch_size=2)
    tmp = tmp_path_factory.mktemp(name)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=3,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp,
        limit_val_batches=0,
    )
    trainer.fit(model, dm)
    ckpt = tmp / f"{name}.ckpt"
    trainer.save_checkpoint(ckpt)
    return ckpt


@pytest.fixture(scope="module")
def prop_mv_ckpt(tiny_dataset, tmp_path_factory):
    from mvseg.models.segnet import SegNetConfig
    from mvseg.strategies import PropMV

    torch.manual_seed(0)
    model = PropMV(9, 3, net=SegNetConfig(width=0.125, feat_dim=16, head="plain", head_dim=16, split="head"))
    return _trained(model, tiny_dataset, tmp_path_factory, "prop_mv")


def test_oracle_view_agrees_with_streaming(prop_mv_ckpt, tiny_dataset, tmp_path):
    """The fixed schedules scored from the table equal the latency view's, which streams the
    runtime and scores with torchmetrics; threshold 0 keys every frame, above 1 only the first."""
    args = [
        "--run",
        f"prop_mv={prop_mv_ckpt}",
        "--intervals",
        "1",
        "3",
        "12",
        "--data-root",
        str(tiny_dataset),
        "--no-wandb",
        "--offline",
    ]
    assert (
        main(
            [
                "bench",
                "strategies",
                "--view",
                "oracle",
                "--thresholds",
                "0",
                "1.01",
                "--out-dir",
                str(tmp_path / "o"),
                *args,
            ]
        )
        == 0
    )
    assert (
        main(["bench", "strategies", "--view", "latency", "--repeats", "1", "--out-dir", str(tmp_path / "l"), *args])
        == 0
    )
    oracle = {(r["schedule"], r["param"]): r for r in json.loads((tmp_path / "o" / "oracle.json").read_text())}
    stream = {r["param"]: r for r in json.loads((tmp_path / "l" / "schedules.json").read_text())}
    for interval in (1, 3, 12):
        o, s = oracle[("fixed", interval)], stream[interval]
        assert o["miou_stream"] == pytest.approx(s["miou_stream"], abs=1e-6)
        assert o["keyframes_per_100"] == pytest.approx(s["keyframes_per_100"])
    assert oracle[("oracle-threshold", 0.0)]["miou_stream"] == oracle[("fixed", 1)]["miou_stream"]
    assert oracle[("oracle-threshold", 1.01)]["miou_stream"] == oracle[("fixed", 12)]["miou_stream"]
    # hindsight at the fixed schedules' keyframe counts (1, 4, 12 a clip): never below fixed
    for count, interval in ((1, 12), (4, 3), (12, 1)):
        h = oracle[("hindsight", count)]
        assert h["keyframes_per_100"] == oracle[("fixed", interval)]["keyframes_per_100"]
    assert oracle[("hindsight", 12)]["miou_stream"] == oracle[("fixed", 1)]["miou_stream"]
    assert "| prop_mv | hindsight | 4 |" in (tmp_path / "o" / "oracle.md").read_text()
    assert (tmp_path / "o" / "oracle.png").stat().st_size > 1000


def test_hindsight_is_the_optimum():
    """Against brute force over every keyframe set with frame 0 first, on random tables."""
    rng = np.random.default_rng(0)
    n, k = 7, 3
    for _ in range(5):
        conf = np.zeros((n, n, 2, 2), np.int64)
        for a in range(n):
            for t in range(a, n):
                wrong = rng.integers(0, 50)
                conf[a, t] = [[100 - wrong, wrong], [0, 0]]
        errors = conf[..., 0, 1]

        def cost(keys, errors=errors):
            return sum(errors[max(x for x in keys if x <= t), t] for t in range(n))

        for count in range(1, k + 1):
            keys = hindsight_keys(conf, count)
            assert keys[0] == 0 and len(keys) == count
            best = min(cost((0, *c)) for c in itertools.combinations(range(1, n), count - 1))
            assert cost(keys) == best
            assert cost(keys) <= cost(fixed_keys(n, -(-n // count)))


def test_threshold_keys_follow_the_deviation():
    dev = np.full((5, 5), np.nan)
    for k in range(5):
        for t in range(k, 5):
            dev[k, t] = 0.1 * (t - k)  # deviation grows 0.1 a frame from any keyframe
    assert threshold_keys(dev, 0.15) == [0, 2, 4]
    assert threshold_keys(dev, 0) == [0, 1, 2, 3, 4]
    assert threshold_keys(dev, 1.01) == [0]


def test_true_gain_is_what_a_keyframe_at_t_would_gain():
    """ClipTable.gain from the confusion table: the share of t's labelled pixels wrong from k minus
    the share wrong with t as its own keyframe; the oracle-gain schedule keys where it passes the
    threshold, and a frame without a label never does."""
    n = 4
    conf = np.zeros((n, n, 2, 2), np.int64)
    for k in range(n):
        for t in range(k, n):
            wrong = 1 + 2 * (t - k)  # of 10 labelled pixels: 1 wrong as a keyframe, 2 more a frame from k
            conf[k, t] = [[10 - wrong, wrong], [0, 0]]
    conf[:, 2] = 0  # frame 2 has no label
    nan = np.full((n, n), np.nan)
    tab = ClipTable(conf, nan, nan)
    gain = tab.gain()
    assert gain[0, 1] == pytest.approx(0.2) and gain[0, 3] == pytest.approx(0.6) and gain[1, 3] == pytest.approx(0.4)
    assert (np.diag(gain)[[0, 1, 3]] == 0).all() and np.isnan(gain[:, 2]).all() and np.isnan(gain[1, 0])
    assert threshold_keys(gain, 0.3) == [0, 3] and threshold_keys(gain, 0.1) == [0, 1, 3]
    rows = score_schedules("m", [tab], [1, 2], [], gain=[0.1, 0.3])
    assert {r["param"]: r["keyframes_per_100"] for r in rows if r["schedule"] == "oracle-gain"} == {
        0.1: 75.0,
        0.3: 50.0,
    }


def test_miou_from_confusion_matches_torchmetrics():
    g = torch.Generator().manual_seed(3)
    pred = torch.randint(0, 6, (2, 20, 30), generator=g)
    target = torch.randint(0, 5, (2, 20, 30), generator=g)  # class 5 never in the target
    target[0, :4] = 255
    metric = MulticlassJaccardIndex(7, ignore_index=255, average="macro", validate_args=False)  # class 6 nowhere
    metric.update(pred, target)
    ok = target != 255
    conf = np.bincount((target[ok] * 7 + pred[ok]).numpy(), minlength=49).reshape(7, 7)
    assert miou_from_confusion(conf) == pytest.approx(float(metric.compute()), abs=1e-6)


def test_oracle_view_refuses_look_ahead_methods(tiny_dataset):
    from mvseg.bench.oracle import propagation_table
    from mvseg.data.folder import load_folder_dataset
    from mvseg.models.segnet import SegNetConfig
    from mvseg.strategies import InterpMV

    ds = load_folder_dataset(str(tiny_dataset), splits=("val",))
    model = InterpMV(9, 3, net=SegNetConfig(width=0.125, feat_dim=16, head="plain", head_dim=16, split="head"))
    with pytest.raises(ValueError, match="InterpMV looks ahead.*causal"):
        propagation_table(model, ds, ds.clips["val"][0], {})


def test_x264_scene_cuts_are_found_where_the_scene_changes():
    """x264's scene-cut detection (scenecut=40) makes I-frames at the generator's hard cuts and
    nowhere on a clip without them."""
    from mvseg.bench.oracle import x264_scenecuts
    from mvseg.data.synthetic import SyntheticConfig, render_clip

    cut = next(
        c
        for c in (render_clip(s, SyntheticConfig(height=64, width=128, frames=24, cut_rate=6.0)) for s in range(8))
        if c.cuts
    )
    assert set(cut.cuts) <= set(x264_scenecuts(list(cut.frames)))
    assert x264_scenecuts(list(render_clip(0, SyntheticConfig(height=64, width=128, frames=24)).frames)) == []


def test_scenecut_keys_add_cuts_to_the_interval():
    from mvseg.bench.oracle import scenecut_keys

    assert scenecut_keys(20, [], 5) == [0, 5, 10, 15]
    # a cut restarts the count: the next periodic keyframe is L after it
    assert scenecut_keys(20, [7], 5) == [0, 5, 7, 12, 17]


@pytest.fixture(scope="module")
def adaptive_ckpt(tiny_dataset, tmp_path_factory):
    from mvseg.models.segnet import SegNetConfig
    from mvseg.strategies import Adaptive, AdaptiveConfig

    torch.manual_seed(0)
    model = Adaptive(
        9,
        3,
        net=SegNetConfig(width=0.125, feat_dim=16, head_dim=16),
        adaptive=AdaptiveConfig(kernel_size=3, kernel_channels=8, deviation_channels=8, fuse_channels=4),
    )
    return _trained(model, tiny_dataset, tmp_path_factory, "adaptive")


def test_predicted_threshold_agrees_with_streaming_and_tables_are_reused(adaptive_ckpt, tiny_dataset, tmp_path):
    """The predicted-threshold schedule scored from the table is the latency view's blocking
    adaptive schedule (the runtime asking the strategy for its deviation); the saved tables
    give the same rows again, and are recomputed for another checkpoint."""
    from mvseg.bench.oracle import load_tables

    pdev_thresholds = ["0.3", "0.5", "0.52", "0.55", "0.7"]
    args = [
        "--run",
        f"adaptive={adaptive_ckpt}",
        "--intervals",
        "1",
        "3",
        "12",
        "--thresholds",
        *pdev_thresholds,
        "--data-root",
        str(tiny_dataset),
        "--no-wandb",
        "--offline",
    ]
    tables = tmp_path / "tables"
    assert (
        main(
            [
                "bench",
                "strategies",
                "--view",
                "oracle",
                "--tables-dir",
                str(tables),
                "--out-dir",
                str(tmp_path / "o"),
                *args,
            ]
        )
        == 0
    )
    assert (
        main(["bench", "strategies", "--view", "latency", "--repeats", "1", "--out-dir", str(tmp_path / "l"), *args])
        == 0
    )
    oracle = json.loads((tmp_path / "o" / "oracle.json").read_text())
    stream = {
        r["param"]: r
        for r in json.loads((tmp_path / "l" / "schedules.json").read_text())
        if r["schedule"] == "adaptive"
    }
    predicted = {r["param"]: r for r in oracle if r["schedule"] == "predicted-threshold"}
    assert set(predicted) == set(stream) == {float(t) for t in pdev_thresholds}
    for tau, s in stream.items():
        assert predicted[tau]["keyframes_per_100"] == pytest.approx(s["keyframes_per_100"])
        assert predicted[tau]["miou_stream"] == pytest.approx(s["miou_stream"], abs=1e-6)
    assert len({r["keyframes_per_100"] for r in predicted.values()}) > 1  # the thresholds do choose differently
    # the tables: predicted deviations above the diagonal only, in (0, 1)
    tabs = load_tables(tables / "adaptive.npz")
    upper = np.triu_indices(12, 1)
    assert len(tabs) == 2 and all(((t.pdev[upper] > 0) & (t.pdev[upper] < 1)).all() for t in tabs)
    assert all(np.isnan(t.pdev[np.tril_indices(12)]).all() for t in tabs)
    for t in tabs:  # a keyframe is its own full-network label and loses no motion; the others in [0, 1]
        assert (np.diag(t.perr) == 0).all() and (np.diag(t.uncovered) == 0).all()
        assert ((t.perr[upper] >= 0) & (t.perr[upper] <= 1)).all() and (t.perr[upper] > 0).any()
        assert ((t.uncovered[upper] >= 0) & (t.uncovered[upper] <= 1)).all()
    # reused: the same rows without streaming (a changed checkpoint file is recomputed)
    mtime = (tables / "adaptive.npz").stat().st_mtime_ns
    assert (
        main(
            [
                "bench",
                "strategies",
                "--view",
                "oracle",
                "--tables-dir",
                str(tables),
                "--out-dir",
                str(tmp_path / "o2"),
                *args,
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "o2" / "oracle.json").read_text()) == oracle
    assert (tables / "adaptive.npz").stat().st_mtime_ns == mtime
    assert load_tables(tables / "adaptive.npz", source="another checkpoint") is None


def test_coverage_schedule_agrees_with_streaming(prop_mv_ckpt, tiny_dataset, tmp_path):
    """The motion-coverage policy streamed by the runtime (MotionCoverage: the runtime feeds it
    each frame's motion) keys the same frames as the oracle's threshold on the table's
    uncovered share, and scores the same."""
    taus = ["0.002", "0.01", "0.03", "0.2"]
    args = [
        "--run",
        f"prop_mv={prop_mv_ckpt}",
        "--intervals",
        "1",
        "3",
        "12",
        "--thresholds",
        "0.5",
        "--coverage-thresholds",
        *taus,
        "--data-root",
        str(tiny_dataset),
        "--no-wandb",
        "--offline",
    ]
    assert main(["bench", "strategies", "--view", "oracle", "--out-dir", str(tmp_path / "o"), *args]) == 0
    assert (
        main(
            [
                "bench",
                "strategies",
                "--view",
                "latency",
                "--repeats",
                "1",
                "--out-dir",
                str(tmp_path / "l"),
                "--iframe-schedule",
                *args,
            ]
        )
        == 0
    )
    oracle = {
        r["param"]: r for r in json.loads((tmp_path / "o" / "oracle.json").read_text()) if r["schedule"] == "coverage"
    }
    # --iframe-schedule: the streams' own I-frames are the keyframes (these clips: one GOP each)
    iframes = [r for r in json.loads((tmp_path / "l" / "schedules.json").read_text()) if r["schedule"] == "iframes"]
    videos = sorted((tiny_dataset / "videos" / "val").glob("*.mp4"))
    types = "".join(f.pict_type for v in videos for f in iter_frames(v, rgb=False))
    assert len(iframes) == 1 and iframes[0]["keyframes_per_100"] == pytest.approx(100 * types.count("I") / len(types))
    stream = {
        r["param"]: r
        for r in json.loads((tmp_path / "l" / "schedules.json").read_text())
        if r["schedule"] == "coverage"
    }
    assert set(oracle) == set(stream) == {float(t) for t in taus}
    for tau, s in stream.items():
        assert oracle[tau]["keyframes_per_100"] == pytest.approx(s["keyframes_per_100"])
        assert oracle[tau]["miou_stream"] == pytest.approx(s["miou_stream"], abs=1e-6)
    rates = [stream[float(t)]["keyframes_per_100"] for t in taus]
    assert rates == sorted(rates, reverse=True) and rates[0] > rates[-1]  # a lower threshold keys more often
