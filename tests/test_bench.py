"""`mvseg bench`: well-formed tables and JSON (figures are never asserted as timings)."""

from __future__ import annotations

import json

from mvseg.cli import main


def test_bench_video_writes_rows(pan_video, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "video", str(pan_video[0]), "--repeats", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    (row,) = data["rows"]
    assert row["frames"] == 20 and row["size"] == "128x96"
    assert row["fps_decode"] > 0 and row["fps_decode_mvs_offsets"] > 0
    # one repeat: the median ratio is the ratio of the single pair of runs
    assert abs(row["overhead_total_pct"] - 100 * (row["fps_decode"] / row["fps_decode_mvs_offsets"] - 1)) < 1e-6
    assert "| pan.mp4 | 128x96 | 20 |" in capsys.readouterr().out


def test_bench_kernels_rows_and_ratios(monkeypatch, tmp_path):
    from mvseg import bench

    monkeypatch.setattr(bench, "KERNEL_CASES", [
        ("tiny warp", "warp", {"feat": (1, 4, 8, 8), "off": (1, 2, 4, 4), "frame": (16, 16)}),
        ("tiny attention", "local_attention", {"qkv": (1, 4, 8, 8), "window": 3}),
    ])
    out = tmp_path / "k.json"
    assert main(["bench", "kernels", "--repeats", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    impls = {(r["case"], r["impl"]) for r in rows}
    assert impls == {("tiny warp", "reference"), ("tiny warp", "grid_sample+grid"),
                     ("tiny attention", "reference"), ("tiny attention", "unfold")}  # no Triton without a GPU
    for r in rows:
        assert r["fwd_ms"] > 0 and r["fwd_bwd_ms"] > 0 and r["peak_mb"] >= 0
        if r["impl"] != "reference":
            assert r["speedup_vs_reference"] > 0


def test_bench_kernels_skips_unfold_that_does_not_fit(monkeypatch):
    from mvseg import bench

    monkeypatch.setattr(bench, "KERNEL_CASES", [("huge", "sv_conv", {"feat": (1, 4096, 1024, 1024), "window": 9})])
    monkeypatch.setattr(bench, "_kernel_impls", lambda op: {"unfold": None})  # nothing of 16 GB is run
    rows = bench.bench_kernels(repeats=1, timeout=120)
    (unfold,) = [r for r in rows if r["impl"] == "unfold"]
    assert unfold["note"].startswith("skipped: the unfold needs 1296.0 GB") and "fwd_ms" not in unfold
