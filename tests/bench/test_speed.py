"""`mvseg bench speed`: AR-Seg's streaming time, 1.0x vs AR^s, side by side in one run."""

from __future__ import annotations

import json

import pytest

from mvseg.bench import speed as bench_speed
from mvseg.bench.flops import BACKBONES, arseg_flops
from mvseg.cli import main


def test_bench_speed_rows_from_a_real_stream(tmp_path):
    out = tmp_path / "speed.json"
    assert (
        main(
            [
                "bench",
                "speed",
                "--backbones",
                "cpu",
                "--sizes",
                "32x64",
                "--scales",
                "1.0",
                "0.5",
                "--interval",
                "3",
                "--frames",
                "7",
                "--repeats",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    payload = json.loads(out.read_text())
    base, ar = payload["rows"]
    assert (base["method"], ar["method"]) == ("1.0x", "AR0.5")
    for r in (base, ar):  # every frame of the video streamed; keyframes 0, 3, 6
        assert r["frames"] == 7 and r["keyframes"] == 3 and r["size"] == "32x64"
        assert r["ms_per_frame"] > 0 and r["key_ms"] > 0 and r["nonkey_ms"] > 0
        assert r["fps"] == pytest.approx(1e3 / r["ms_per_frame"])
    assert base["speedup"] == 1.0 and ar["speedup"] == pytest.approx(base["ms_per_frame"] / ar["ms_per_frame"])
    f = [arseg_flops(BACKBONES["cpu"], 32, 64, s, 3)["per_frame"] for s in (1.0, 0.5)]
    assert ar["gflops_ratio"] == pytest.approx(f[1] / f[0]) and ar["gflops_ratio"] < 0.6
    assert base["paper_ms"] is None and "| cpu | 32x64 | AR0.5 |" in payload["table"]


def test_bench_speed_paper_columns(monkeypatch, tmp_path):
    # the table's assembly at the paper's sizes, without streaming 1024x2048 frames in a test
    monkeypatch.setattr(bench_speed, "_models", lambda name, scales, interval, device: [None] * len(scales))
    monkeypatch.setattr(
        bench_speed,
        "stream_speeds",
        lambda models, video, interval, repeats: [
            {"ms_per_frame": ms, "frames": 2, "keyframes": 1, "fps": 1e3 / ms, "key_ms": ms, "nonkey_ms": ms}
            for ms in (100.0, 40.0, 25.0)
        ],
    )
    monkeypatch.setattr("mvseg.video.encode.encode_video", lambda *a, **k: None)
    rows = bench_speed.bench_speed(["psp18"], None, [1.0, 0.5, 0.3], 12, frames=2, workdir=str(tmp_path))
    assert [r["size"] for r in rows] == ["1024x2048"] * 3  # the backbone's paper resolution
    assert [r["speedup"] for r in rows] == [1.0, 2.5, 4.0]
    assert rows[1]["paper_ms"] == 30.7 and rows[1]["paper_speedup"] == pytest.approx(95.4 / 30.7)
    assert rows[2]["paper_speedup"] == pytest.approx(95.4 / 19.9)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--scales", "0.5", "1.0"], "must start with 1.0"),
        (["--backbones", "resnet9"], "unknown backbone"),
        (["--frames", "1"], "at least 2"),
        (["--device", "cuda"], "no CUDA device is visible"),
    ],
)
def test_bench_speed_bad_arguments(args, message, capsys):
    assert main(["bench", "speed", "--backbones", "cpu", "--sizes", "32x64", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mvseg bench: error: ") and message in err


def test_bench_speed_bad_size():
    with pytest.raises(SystemExit, match="speed --sizes expects HxW, got '32by64'"):
        main(["bench", "speed", "--sizes", "32by64"])
