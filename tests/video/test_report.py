"""`mvseg inspect`: MV dumps that agree with FFmpeg's extract_mvs, and the motion report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mvseg.cli import main
from mvseg.video.decode import decode_video
from mvseg.video.report import CSV_HEADER, motion_report, summarize

EXAMPLE_SOURCES = [
    Path("/usr/share/doc/ffmpeg/examples/extract_mvs.c"),  # Debian/Ubuntu: ffmpeg-doc
    Path("/usr/share/doc/ffmpeg-doc/examples/extract_mvs.c"),
]


@pytest.fixture(scope="session")
def extract_mvs(tmp_path_factory):
    """FFmpeg's own doc/examples/extract_mvs, built from the system's FFmpeg examples."""
    if exe := os.environ.get("MVSEG_EXTRACT_MVS"):
        return exe
    src = next((p for p in EXAMPLE_SOURCES if p.exists()), None)
    if src is None or not shutil.which("gcc") or not shutil.which("pkg-config"):
        pytest.skip(
            "FFmpeg's extract_mvs.c example or a C toolchain is not installed (apt install ffmpeg-doc libavformat-dev)"
        )
    flags = subprocess.run(
        ["pkg-config", "--cflags", "--libs", "libavformat", "libavcodec", "libavutil"], capture_output=True, text=True
    )
    if flags.returncode:
        pytest.skip("FFmpeg development libraries not found by pkg-config")
    exe = tmp_path_factory.mktemp("ffmpeg") / "extract_mvs"
    subprocess.run(["gcc", "-O1", "-o", str(exe), str(src), *flags.stdout.split()], check=True)
    return str(exe)


@pytest.mark.parametrize("fixture", ["pan_video", "bframe_video"])
def test_dump_agrees_row_for_row_with_ffmpeg_extract_mvs(request, extract_mvs, fixture, tmp_path):
    path, _ = request.getfixturevalue(fixture)
    ours = tmp_path / "ours.csv"
    summarize(path, dump_mvs=ours)
    theirs = subprocess.run([extract_mvs, str(path)], capture_output=True, text=True, check=True).stdout
    theirs = theirs.strip().splitlines()
    mine = ours.read_text().strip().splitlines()
    assert mine[0] == CSV_HEADER
    ncol = theirs[0].count(",") + 1  # older FFmpeg examples print 9 columns, newer 12
    assert theirs[0] == ",".join(CSV_HEADER.split(",")[:ncol])
    assert len(mine) == len(theirs) > 100
    for a, b in zip(mine[1:], theirs[1:]):
        assert ",".join(a.split(",")[:ncol]) == b


def test_dump_rows_match_decoded_mvs(bframe_video, tmp_path):
    path, _ = bframe_video
    out = tmp_path / "mvs.csv"
    s = summarize(path, dump_mvs=out)
    rows = np.loadtxt(out, delimiter=",", skiprows=1, dtype=str)
    v = decode_video(path, rgb=False)
    assert len(rows) == s["motion_vectors"] == sum(len(m) for m in v.mvs)
    frame = rows[:, 0].astype(int)
    assert frame.min() >= 2  # 1-based, and frame 1 is the I-frame
    motion_x, scale = rows[:, 9].astype(int), rows[:, 11].astype(int)
    src_x, dst_x = rows[:, 4].astype(int), rows[:, 6].astype(int)
    assert np.all(np.abs(src_x - (dst_x + motion_x / scale)) < 1)  # src = dst + motion/scale
    assert set(rows[:, 1].astype(int)) == {-1, 1}
    assert rows[0, 8].startswith("0x")


def test_motion_report_warp_beats_copy(pan_video):
    path, _ = pan_video
    r = motion_report(path, max_distance=4)
    assert [row["distance"] for row in r["rows"]] == [1, 2, 3, 4]
    for row in r["rows"]:
        # chains never cross the I-frames at 0 and 10: pairs (t-d, t) inside each GOP
        assert row["pairs"] == 2 * (10 - row["distance"])
        assert row["psnr_warp"] > row["psnr_copy"] + 3


def test_motion_report_on_bframe_stream_beats_copy(bframe_video):
    path, _ = bframe_video
    with pytest.warns(UserWarning, match="approximate"):
        r = motion_report(path, max_distance=3)
    for row in r["rows"]:
        assert row["pairs"] > 0 and row["psnr_warp"] > row["psnr_copy"]


def test_inspect_cli_prints_and_writes_json(pan_video, tmp_path, capsys):
    path, _ = pan_video
    out_json, out_csv = tmp_path / "r.json", tmp_path / "mvs.csv"
    rc = main(
        [
            "inspect",
            str(path),
            "--dump-mvs",
            str(out_csv),
            "--motion-report",
            "--max-distance",
            "3",
            "--json",
            str(out_json),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "IPPPPPPPPPIPPPPPPPPP" in text and "h264  128x96" in text and "| 3 | 14 |" in text
    report = json.loads(out_json.read_text())
    assert report["summary"]["frames"] == 20 and len(report["motion_report"]["rows"]) == 3
    assert out_csv.read_text().startswith(CSV_HEADER)


def test_inspect_cli_bad_input_names_the_file(tmp_path, capsys):
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(os.urandom(4096))
    assert main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "garbage.mp4" in err and "not a readable video" in err
