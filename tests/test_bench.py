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
