"""`mvseg bench`: well-formed tables and JSON (figures are never asserted as timings)."""

from __future__ import annotations

import json
import math

import pytest
from helpers import one_step_trainer

from mvseg.cli import main

FAKE_PEER = """
import av, numpy as np
class VideoCap:  # motion-vector-extractor's interface, over PyAV (the real one brings its own FFmpeg)
    def open(self, path):
        self.c = av.open(path); self.st = self.c.streams.video[0]
        self.st.codec_context.options = {"flags2": "+export_mvs"}; self.it = self.c.decode(self.st); self.rgb = True
        return True
    def set_decode_frames(self, on):
        self.rgb = on
    def read(self):
        f = next(self.it, None)
        if f is None:
            return False, None, np.zeros((0, 10)), "?"
        sd = f.side_data.get("MOTION_VECTORS")
        mv = np.zeros((0, 10), np.int64) if sd is None else np.array(sd.to_ndarray().tolist())[:, :10]
        return True, f.to_ndarray(format="bgr24") if self.rgb else None, mv, "P"
    def release(self):
        self.c.close()
"""


def test_bench_video_side_by_side_in_fresh_processes(pan_video, tmp_path, capsys, monkeypatch):
    import sys

    (tmp_path / "mvextractor").mkdir()
    (tmp_path / "mvextractor" / "__init__.py").write_text("")
    (tmp_path / "mvextractor" / "videocap.py").write_text(FAKE_PEER)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the peer's interpreter finds the stand-in
    out = tmp_path / "bench.json"
    # (the variants that need no torch: a fresh process each, ~0.4 s instead of ~2.7 s)
    assert (
        main(
            [
                "bench",
                "video",
                str(pan_video[0]),
                "--repeats",
                "1",
                "--modes",
                "plain",
                "mvs",
                "rgb",
                "--peer",
                "--peer-python",
                sys.executable,
                "--json",
                str(out),
            ]
        )
        == 0
    )
    (row,) = json.loads(out.read_text())["rows"]
    assert row["frames"] == 20 and row["mvseg_mvs"] > 0 and "fields_ms" not in row
    # every mvseg mode (MVs without pixels: deblocking and IDCT skipped) exported the same MVs
    assert row["mvseg_digests"] == 1 and row["peer_digests"] == 1
    # one round: each ratio is the ratio of that round's two times
    assert row["mvs_over_plain"] == pytest.approx(row["mvs_ms"] / row["plain_ms"])
    assert row["mvs_over_plain_cpu"] == pytest.approx(row["mvs_cpu_ms"] / row["plain_cpu_ms"])  # CPU time too
    assert row["peer_over_mvseg_rgb"] == pytest.approx(row["peer_rgb_ms"] / row["rgb_ms"])
    assert "| pan.mp4 | 20 |" in capsys.readouterr().out
    # without the peer installed its rows are left out, said once
    monkeypatch.delenv("PYTHONPATH")
    monkeypatch.delenv("MVSEG_PEER_PYTHON", raising=False)
    from mvseg.bench.video import peer_python

    assert peer_python(None) is None


def test_bench_video_times_the_motion_report_on_request(pan_video, tmp_path):
    out = tmp_path / "report.json"
    assert (
        main(["bench", "video", str(pan_video[0]), "--repeats", "1", "--modes", "plain", "report", "--json", str(out)])
        == 0
    )
    (row,) = json.loads(out.read_text())["rows"]
    assert row["frames"] == 20 and "report_ref_ms" not in row
    assert row["report_over_plain"] == pytest.approx(row["report_ms"] / row["plain_ms"])


TINY_CASES = [
    ("tiny warp", "warp", {"feat": (1, 4, 8, 8), "off": (1, 2, 4, 4), "frame": (16, 16)}),
    ("tiny attention", "local_attention", {"qkv": (1, 4, 8, 8), "window": 3}),
    ("tiny resize", "resize", {"x": (1, 3, 4, 8), "size": (16, 32)}),
]


def test_bench_kernels_rows_and_ratios(monkeypatch, tmp_path):
    from mvseg.bench import kernels as bench_kernels

    monkeypatch.setattr(bench_kernels, "KERNEL_CASES", TINY_CASES)
    out = tmp_path / "k.json"
    assert main(["bench", "kernels", "--device", "cpu", "--repeats", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    impls = {(r["case"], r["impl"]) for r in rows}
    assert impls == {
        ("tiny warp", "reference"),
        ("tiny attention", "reference"),
        ("tiny attention", "unfold"),
        ("tiny attention", "blocked"),
        ("tiny resize", "reference"),
        ("tiny resize", "matmul"),
    }
    for r in rows:  # each row in its own process, checked against the reference at its size
        assert r["fwd_ms"] > 0 and r["peak_mb"] >= 0 and r["check"] == "ok", r
        assert (r["fwd_bwd_ms"] is None) == (r["impl"] == "blocked")  # the blocked form is inference only
        assert (r.get("err_grad") is None) == (r["impl"] == "blocked")
        if r["impl"] != "reference":
            assert r["speedup_fwd"] > 0 and r["err_out"] < 1e-5


def test_bench_kernels_in_process_with_triton_isolates_failures(monkeypatch):
    # the CUDA code path (one process, Triton rows, correctness, a failure is a row) run on a CPU
    # with the interpreter's kernels and a perf_counter timer
    from mvseg.bench import kernels as bench_kernels

    monkeypatch.setattr(bench_kernels, "KERNEL_CASES", TINY_CASES[:2])
    impls = bench_kernels.kernel_impls

    def with_broken(op, device, interpreter=False):
        out = impls(op, device, interpreter)
        out["broken"] = lambda *a: (_ for _ in ()).throw(RuntimeError("CUDA error: an illegal memory access"))
        if op == "warp":  # a fast path that computes another function is caught by the check
            out["wrong"] = lambda f, o, m, fr: out["reference"](f, o * 1.5, m, fr)
        return out

    monkeypatch.setattr(bench_kernels, "kernel_impls", with_broken)
    rows = bench_kernels.bench_kernels("cpu", ("fp32", "bf16"), repeats=1, in_process=True)
    by = {(r["case"], r["impl"], r["dtype"]): r for r in rows}
    for case in ("tiny warp", "tiny attention"):
        for dt in ("fp32", "bf16"):
            tri = by[(case, "triton", dt)]
            assert tri["check"] == "ok" and tri["fwd_ms"] > 0 and tri["fwd_bwd_ms"] > 0 and tri["min_mb"] > 0
            assert tri["speedup_fwd"] > 0 and tri["speedup_fwd_bwd"] > 0
            broken = by[(case, "broken", dt)]
            assert broken["error"] == "RuntimeError: CUDA error: an illegal memory access" and "fwd_ms" not in broken
    assert by[("tiny warp", "wrong", "fp32")]["check"].startswith("MISMATCH")
    assert by[("tiny attention", "unfold", "bf16")]["check"] == "ok"


def test_bench_kernels_skips_unfold_that_does_not_fit(monkeypatch):
    from mvseg.bench import kernels as bench_kernels

    monkeypatch.setattr(
        bench_kernels, "KERNEL_CASES", [("huge", "sv_conv", {"feat": (1, 4096, 1024, 1024), "window": 9})]
    )
    monkeypatch.setattr(
        bench_kernels, "kernel_impls", lambda op, device, interpreter=False: {"unfold": None}
    )  # nothing of 16 GB is run
    rows = bench_kernels.bench_kernels("cpu", repeats=1, timeout=120)
    (unfold,) = [r for r in rows if r["impl"] == "unfold"]
    assert unfold["note"].startswith("skipped: the unfold needs 1296.0 GB") and "fwd_ms" not in unfold


def test_bench_kernels_dry_run_lists_rows_and_traffic(tmp_path):
    out = tmp_path / "plan.json"
    assert (
        main(["bench", "kernels", "--device", "cuda", "--dtype", "fp32", "bf16", "--dry-run", "--json", str(out)]) == 0
    )
    data = json.loads(out.read_text())
    assert data["dry_run"] is True
    tri = [r for r in data["rows"] if r["impl"] == "triton"]
    assert len(tri) == 2 * 6 and all(r["min_mb"] > 0 for r in tri)
    (la512,) = [r for r in tri if r["case"].startswith("local attention C=512") and r["dtype"] == "fp32"]
    assert round(la512["min_mb"]) == round(4 * 4 * 512 * 128 * 256 / 1e6)  # q, k, v read and out written once


def test_bench_strategies_writes_results_table_and_plot(tiny_dataset, tmp_path, capsys):
    import lightning as L

    from mvseg.data.datamodule import CompressedVideoDataModule
    from mvseg.models.segnet import SegNetConfig
    from mvseg.strategies import PerFrame, PropMV

    net = SegNetConfig(width=0.125, feat_dim=16, head="plain", head_dim=16)
    dm = CompressedVideoDataModule(str(tiny_dataset), "folder", keyframe_interval=3, batch_size=2)
    ckpts = {"per_frame": tmp_path / "per_frame.ckpt", "prop_mv": tmp_path / "prop_mv.ckpt"}
    for name, steps in (("per_frame", 1), ("prop_mv", 0)):  # prop-MV: the per-frame weights, untrained
        model = (
            PerFrame(9, 3, net=net) if name == "per_frame" else PropMV(9, 3, net=net, init_from=str(ckpts["per_frame"]))
        )
        trainer = L.Trainer(
            accelerator="cpu",
            max_steps=steps,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp_path,
            limit_val_batches=0,
        )
        trainer.fit(model, dm)
        trainer.save_checkpoint(ckpts[name])
    out = tmp_path / "bench"
    rc = main(
        [
            "bench",
            "strategies",
            "--run",
            f"per_frame={ckpts['per_frame']}",
            "--run",
            f"prop_mv={ckpts['prop_mv']}",
            "--intervals",
            "1",
            "3",
            "--data-root",
            str(tiny_dataset),
            "--max-videos",
            "1",
            "--out-dir",
            str(out),
            "--repeats",
            "2",
        ]
    )
    assert rc == 0
    rows = json.loads((out / "results.json").read_text())
    assert [(r["method"], r["interval"]) for r in rows] == [
        ("per_frame", 1),
        ("per_frame", 3),
        ("prop_mv", 1),
        ("prop_mv", 3),
    ]
    for r in rows:
        assert (
            0 <= r["miou_min"] <= r["miou_mean"] + 1e-6
            and r["miou_mean"] <= 1
            and r["fps"] > 0
            and r["gflops_per_frame"] > 0
        )
        assert len([k for k in r if k.startswith("miou_d")]) == r["interval"]
    by = {(r["method"], r["interval"]): r for r in rows}
    # prop-MV at L=1 is the per-frame network on every frame; at L=3 it runs N_feat on a third
    assert by[("prop_mv", 1)]["miou_mean"] == by[("per_frame", 1)]["miou_mean"]
    assert by[("prop_mv", 3)]["gflops_per_frame"] < 0.6 * by[("prop_mv", 1)]["gflops_per_frame"]
    assert (out / "accuracy_vs_fps.png").stat().st_size > 1000
    assert "| prop_mv | 3 |" in (out / "table.md").read_text()
    # a non-keyframe of prop-MV runs N_task only: far cheaper than a keyframe (N_feat + N_task)
    assert by[("prop_mv", 3)]["gflops_nonkey"] < 0.5 * by[("prop_mv", 1)]["gflops_per_frame"]
    assert by[("per_frame", 3)]["gflops_nonkey"] == pytest.approx(by[("per_frame", 1)]["gflops_per_frame"])
    # logged to W&B (offline in tests): a run with the table
    assert list((out / "wandb").glob("offline-run-*"))


def test_bench_flops_arseg_table(tmp_path, capsys):
    out = tmp_path / "flops.json"
    rc = main(
        [
            "bench",
            "flops",
            "--backbones",
            "cpu",
            "--sizes",
            "64x128",
            "--scales",
            "1.0",
            "0.5",
            "--interval",
            "12",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["method"] for r in rows] == ["1.0x", "AR0.5"]
    assert rows[0]["ratio"] == 1.0 and 0.2 < rows[1]["ratio"] < 0.35  # the target (paper: 0.33x)
    assert rows[1]["gmacs"] == pytest.approx(rows[1]["gflops"] / 2)
    assert "| cpu | 64x128 | AR0.5 |" in capsys.readouterr().out


def test_psp18_cost_matches_the_papers_table_1():
    """The authors' Cityscapes PSPNet-18 at 1024x2048: 560.97 GMACs at 1.0x, 177.44 at AR0.5."""
    from mvseg.bench.flops import BACKBONES, arseg_flops

    full = arseg_flops(BACKBONES["psp18"], 1024, 2048, 1.0, 12)["per_frame"] / 2e9
    ar = arseg_flops(BACKBONES["psp18"], 1024, 2048, 0.5, 12)["per_frame"] / 2e9
    assert full == pytest.approx(560.97, rel=0.03) and ar == pytest.approx(177.44, rel=0.03)


def test_camvid_psp18_cost_matches_the_papers_table_1():
    """The authors' CamVid PSPNet-18 (64-channel decoder at full resolution) at 720x960: 309.02
    GMACs at 1.0x, 101.98 at AR0.5 (Table 1), CReFF on the full-resolution 64-channel feature."""
    from mvseg.bench.flops import BACKBONES, arseg_flops

    full = arseg_flops(BACKBONES["psp18_camvid"], 720, 960, 1.0, 12, num_classes=11)["per_frame"] / 2e9
    ar = arseg_flops(BACKBONES["psp18_camvid"], 720, 960, 0.5, 12, num_classes=11)["per_frame"] / 2e9
    assert full == pytest.approx(309.02, rel=0.02) and ar == pytest.approx(101.98, rel=0.02)


def test_bench_strategies_latency_view(tiny_dataset, tmp_path):
    """Schedules over whole streams: fixed L, adaptive thresholds (0: every frame a keyframe,
    above 1: only the first), and the low-latency variant; the stream mIoU of identical
    schedules agree, and the comparison at the same number of keyframes is filled in."""

    from mvseg.data.datamodule import CompressedVideoDataModule
    from mvseg.models.segnet import SegNetConfig
    from mvseg.strategies import Adaptive, AdaptiveConfig

    model = Adaptive(
        9,
        3,
        net=SegNetConfig(width=0.125, feat_dim=16, head="plain", head_dim=16),
        adaptive=AdaptiveConfig(kernel_size=3, kernel_channels=8, deviation_channels=8, fuse_channels=4),
    )
    dm = CompressedVideoDataModule(str(tiny_dataset), "folder", keyframe_interval=3, batch_size=2)
    trainer = one_step_trainer(tmp_path)
    trainer.fit(model, dm)
    ckpt = tmp_path / "adaptive.ckpt"
    trainer.save_checkpoint(ckpt)
    out = tmp_path / "bench"
    rc = main(
        [
            "bench",
            "strategies",
            "--run",
            f"adaptive={ckpt}",
            "--view",
            "latency",
            "--intervals",
            "1",
            "3",
            "--thresholds",
            "0",
            "1.01",
            "--data-root",
            str(tiny_dataset),
            "--max-videos",
            "1",
            "--out-dir",
            str(out),
            "--repeats",
            "2",
            "--offline",
            "--no-wandb",
        ]
    )
    assert rc == 0
    rows = json.loads((out / "schedules.json").read_text())
    by = {(r["schedule"], r["param"]): r for r in rows}
    assert set(by) == {
        ("fixed", 1),
        ("fixed", 3),
        ("adaptive", 0.0),
        ("adaptive", 1.01),
        ("adaptive+low-latency", 0.0),
        ("adaptive+low-latency", 1.01),
    }
    assert by[("fixed", 1)]["keyframes_per_100"] == 100 and by[("fixed", 3)]["keyframes_per_100"] == pytest.approx(
        100 / 3
    )
    assert by[("adaptive", 0.0)]["keyframes_per_100"] == 100
    assert by[("adaptive", 1.01)]["keyframes_per_100"] == pytest.approx(100 / 12)
    # identical schedules, identical labels: every frame a keyframe; only the first
    assert by[("adaptive", 0.0)]["miou_stream"] == by[("fixed", 1)]["miou_stream"]
    assert by[("adaptive", 0.0)]["gain_vs_fixed"] == 0
    assert by[("adaptive+low-latency", 1.01)]["miou_stream"] == by[("adaptive", 1.01)]["miou_stream"]
    assert by[("adaptive+low-latency", 1.01)]["slow_tracks"] == 0
    assert math.isnan(by[("adaptive", 1.01)]["gain_vs_fixed"])  # fewer keyframes than any fixed schedule
    for r in rows:
        assert 0 < r["miou_stream"] <= 1
        assert r["latency_max_ms"] >= r["latency_p99_ms"] >= r["latency_p95_ms"] >= r["latency_p50_ms"] > 0
        assert 0 < r["latency_max_robust_ms"] <= r["latency_max_ms"]
    assert by[("adaptive+low-latency", 1.01)]["max_latency_vs_propagation"] > 0
    assert "| adaptive | adaptive | 1.01 |" in (out / "latency.md").read_text()
    assert (out / "threshold_sweep.png").stat().st_size > 1000


def test_bench_data_rows_and_parts(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "data.json"
    assert (
        main(
            [
                "bench",
                "data",
                "--data-root",
                str(tiny_dataset),
                "--workers",
                "0",
                "1",
                "--samples",
                "12",
                "--epochs",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    r = json.loads(out.read_text())
    assert [row["workers"] for row in r["rows"]] == [0, 1]
    assert r["frame_size"] == [64, 128] and r["crop"] == [128, 192]
    parts = r["parts_ms"]
    assert set(parts) == {"frames", "offsets", "label", "augmentation"} and all(v > 0 for v in parts.values())
    assert sum(parts.values()) <= r["sample_ms"] + 1e-6  # the parts are inside the whole sample
    for row in r["rows"]:
        assert row["samples_per_s"] > 0
        assert row["loader_vs_step"] == pytest.approx(row["ms_per_sample"] / row["train_step_ms_per_sample"], rel=0.02)
    assert "one sample, in-process" in capsys.readouterr().out
